//! What every detector returns ([`Detection`]), the facts about one flow
//! snapshot the facade works out once for all of them ([`Observed`]), and the
//! one-finding-per-window rule.

use std::net::IpAddr;

use gatewarden_proto::messages::{AttackKind, FlowRecord, Proto};

use super::windows::HashMap;

/// One finding, before fusion turns it into a verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// The offending source; `None` when the attack has many (spoofed) sources.
    pub source: Option<IpAddr>,
    /// The target, if one stands out.
    pub target: Option<IpAddr>,
    /// Target port, if one stands out.
    pub port: u16,
    /// Protocol, if one stands out.
    pub proto: Option<Proto>,
    /// What it is.
    pub kind: AttackKind,
    /// 0 to 1.
    pub confidence: f32,
    /// A sentence with the numbers.
    pub reason: String,
    /// The numbers, named.
    pub evidence: Vec<(String, f64)>,
    /// Capture time of the record that completed the finding.
    pub ts_ns: u64,
    /// A flow it was seen in.
    pub flow_id: u64,
}

impl Detection {
    /// The value of the evidence item `name`, if the finding carries it.
    pub fn evidence_value(&self, name: &str) -> Option<f64> {
        self.evidence.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    /// A finding of `kind` against `r`'s source, completed by `r`: the detector fills in
    /// target, port, protocol, confidence, reason and evidence.
    pub(super) fn from_record(r: &FlowRecord, kind: AttackKind) -> Detection {
        Detection {
            source: Some(r.src),
            target: None,
            port: 0,
            proto: None,
            kind,
            confidence: 0.0,
            reason: String::new(),
            evidence: Vec::new(),
            ts_ns: r.last_ns,
            flow_id: r.flow_id,
        }
    }
}

/// One flow snapshot as the facade has worked it out for the detectors: the
/// deltas since the flow's last snapshot and how its handshake went.
#[derive(Debug)]
pub(super) struct Observed<'a> {
    /// The snapshot.
    pub(super) r: &'a FlowRecord,
    /// Capture time of the newest record from this source.
    pub(super) now: u64,
    /// `detector.window_s` in ns.
    pub(super) window_ns: u64,
    /// The first snapshot of this flow.
    pub(super) is_new: bool,
    /// Packets sent since the flow's last snapshot.
    pub(super) delta: u32,
    /// IP bytes sent since the flow's last snapshot.
    pub(super) delta_bytes: u32,
    /// A TCP handshake that failed or that the originator aborted.
    pub(super) half_open: bool,
    /// A handshake the originator aborted (SYN, SYN-ACK, RST).
    pub(super) aborted: bool,
    /// SYNs this snapshot adds (an aborted handshake counts one, once).
    pub(super) syn_delta: u32,
    /// When the source's findings were last reported, by kind (none for a
    /// newcomer without state): see [`Observed::reported_lately`].
    pub(super) reported: Option<&'a HashMap<(AttackKind, bool), u64>>,
}

/// The protocol number that stands for "any other IP protocol" in the attempt window:
/// 0 (IPv6 hop-by-hop options, an extension header the parser walks past, never a
/// flow's own protocol).
const IP_PROTOCOLS_NUMBER: u8 = 0;
/// The attempt window's pseudo-protocol for flows of IP protocols other than TCP, UDP and
/// ICMP, each attempt's port its protocol number: a host tried on `udp_scan_distinct_ports`
/// (20) of them, mostly unanswered, is an IP protocol scan (`port_scan`), which nothing
/// benign sends (a VPN uses one or two: GRE, ESP).
pub(super) const IP_PROTOCOLS: Proto = Proto::Other(IP_PROTOCOLS_NUMBER);

/// Whether a flow's protocol is one of those tallied under [`IP_PROTOCOLS`].
pub(super) fn is_other_protocol(proto: Proto) -> bool {
    matches!(proto, Proto::Other(n) if n != IP_PROTOCOLS_NUMBER)
}

impl Observed<'_> {
    /// A new TCP or UDP flow: a connection attempt for the attempt window.
    pub(super) fn new_attempt(&self) -> bool {
        self.is_new && matches!(self.r.proto, Proto::Tcp | Proto::Udp)
    }

    /// A new flow of an IP protocol other than TCP, UDP and ICMP: an attempt tallied under
    /// [`IP_PROTOCOLS`] with its protocol number as the port (`nmap -sO` tries them all).
    pub(super) fn new_other_protocol(&self) -> bool {
        self.is_new && is_other_protocol(self.r.proto)
    }

    /// Whether a finding of `kind` completed by this record would be dropped
    /// by `first_in_window` (one was reported in this window): a detector
    /// whose check changes nothing returns early instead of writing a reason
    /// nobody reads (an ongoing scan completes its finding on every probe).
    pub(super) fn reported_lately(&self, kind: AttackKind) -> bool {
        self.reported_lately_keyed((kind, false))
    }

    /// The same for the findings with a report of their own in the window (see
    /// `first_in_window`): a UDP flood finding that looks like a media stream
    /// ([`super::floods::looks_like_media_stream`]), a wide sweep ([`super::host_sweep::is_wide`]).
    pub(super) fn reported_lately_apart(&self, kind: AttackKind) -> bool {
        self.reported_lately_keyed((kind, true))
    }

    fn reported_lately_keyed(&self, key: (AttackKind, bool)) -> bool {
        let last = self.reported.and_then(|m| m.get(&key)).copied().unwrap_or(0);
        last != 0 && self.r.last_ns < last + self.window_ns
    }
}
