//! The messages every role exchanges, in process or between nodes.
//!
//! On the wire a message is one format-version byte followed by the postcard
//! encoding of [`Message`]. Decoding checks the version, rejects trailing
//! bytes and never panics on garbage (see the property test and
//! `fuzz/fuzz_targets/message_decode.rs`).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::conn_state::ConnState;
use crate::role::Role;

/// The wire format version; bump it when a change is not backward compatible.
pub const WIRE_VERSION: u8 = 1;

/// Largest message accepted from the wire; larger input is refused before decoding.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Transport protocol of a flow, as the IP protocol number's common names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Proto {
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// ICMP (1).
    Icmp,
    /// ICMPv6 (58).
    Icmpv6,
    /// Anything else, with its protocol number.
    Other(u8),
}

impl Proto {
    /// Maps an IP protocol number to a `Proto`.
    pub fn from_number(n: u8) -> Proto {
        match n {
            6 => Proto::Tcp,
            17 => Proto::Udp,
            1 => Proto::Icmp,
            58 => Proto::Icmpv6,
            n => Proto::Other(n),
        }
    }

    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Icmp => 1,
            Proto::Icmpv6 => 58,
            Proto::Other(n) => n,
        }
    }

    /// The lower-case name used in EVE JSON and the UI.
    pub fn name(self) -> String {
        match self {
            Proto::Tcp => "tcp".into(),
            Proto::Udp => "udp".into(),
            Proto::Icmp => "icmp".into(),
            Proto::Icmpv6 => "ipv6-icmp".into(),
            Proto::Other(n) => format!("proto-{n}"),
        }
    }
}

/// One finished or updated flow as the router reports it to the detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowRecord {
    /// Stable id of the flow, shared by alerts about it.
    pub flow_id: u64,
    /// Originator (the sender of the first packet seen).
    pub src: IpAddr,
    /// Responder.
    pub dst: IpAddr,
    /// Originator's port (ICMP: type).
    pub sport: u16,
    /// Responder's port (ICMP: code).
    pub dport: u16,
    /// Transport protocol.
    pub proto: Proto,
    /// First packet, nanoseconds since the Unix epoch.
    pub first_ns: u64,
    /// Last packet, nanoseconds since the Unix epoch.
    pub last_ns: u64,
    /// Packets originator → responder.
    pub fwd_packets: u32,
    /// Packets responder → originator.
    pub rev_packets: u32,
    /// IP bytes originator → responder.
    pub fwd_bytes: u64,
    /// IP bytes responder → originator.
    pub rev_bytes: u64,
    /// Zeek-style connection state (`S0`, `SF`, `REJ`, …).
    pub conn_state: ConnState,
    /// TCP: the originator acknowledged a sequence number the responder sent
    /// it (completed the handshake, reset a SYN-ACK with the right
    /// acknowledgement, or carried the session on), so it receives traffic at
    /// its address and is not forged. Always false for UDP and ICMP, and for a
    /// SYN scan's bare RST (its sequence number is the scanner's own).
    pub src_answered: bool,
}

/// A batch of flow records, emitted by the router at a fixed cadence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowBatch {
    /// The router that observed the flows.
    pub node: String,
    /// Increases by one per batch, so a receiver can count gaps.
    pub seq: u64,
    /// The flows.
    pub flows: Vec<FlowRecord>,
    /// Damped statistics of the sources in `flows` that the detector will
    /// judge (see `gatewarden_core::seen_before::Admission`: not a newcomer's
    /// one packet), in feature-schema order (the schema's host columns), taken
    /// when the batch was cut.
    pub hosts: Vec<HostSnapshot>,
    /// The interface the router captured these flows on (EVE `in_iface`);
    /// empty when no interface can honestly be named (a replayed file).
    /// Appended for issue #18: at most [`MAX_IFACE_NAME`] bytes on the wire.
    pub in_iface: String,
    /// Frames the router shed under overload since the last batch, by where
    /// they went (issue #19): a shed frame opens no flow, so without these
    /// counts a spoofed flood big enough to force shedding would hide from
    /// the per-victim detectors behind its own sampling. At most
    /// [`MAX_SHED_DESTS`] entries. Appended after `in_iface`.
    pub shed: Vec<ShedCount>,
}

impl FlowRecord {
    /// The originator's packets that count towards its admission
    /// (`gatewarden_core::seen_before::Admission`): TCP, UDP and ICMP only, the
    /// protocols the detector keeps per-source counts of. The router and the
    /// detector both count with this, so they admit alike.
    pub fn admission_packets(&self) -> u64 {
        match self.proto {
            Proto::Tcp | Proto::Udp | Proto::Icmp | Proto::Icmpv6 => u64::from(self.fwd_packets),
            Proto::Other(_) => 0,
        }
    }
}

impl FlowBatch {
    /// The latest capture time the batch tells of, ns: its snapshots' cut, its
    /// flows' and its shed counts' last packets (a batch of a spoofed flood's
    /// newcomers has no snapshot). 0 for an empty batch.
    pub fn capture_ns(&self) -> u64 {
        let flows = self.flows.iter().map(|r| r.last_ns).max().unwrap_or(0);
        let hosts = self.hosts.iter().map(|h| h.ts_ns).max().unwrap_or(0);
        let shed = self.shed.iter().map(|c| c.last_ns).max().unwrap_or(0);
        flows.max(hosts).max(shed)
    }
}

/// Most destinations one [`FlowBatch::shed`] may name (the router counts
/// the rest only in its metrics).
pub const MAX_SHED_DESTS: usize = 256;

/// Frames shed towards one destination port since the last batch: each
/// would have opened a flow from a source the router had never seen (so no
/// source is named: under a spoofed flood they are forged).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShedCount {
    /// Where the frames went.
    pub dst: IpAddr,
    /// Their destination port (ICMP: code).
    pub dport: u16,
    /// Their transport protocol.
    pub proto: Proto,
    /// How many were shed.
    pub frames: u32,
    /// How many of them were TCP SYNs without ACK (half-open attempts).
    pub syns: u32,
    /// Capture time of the last one, ns since the Unix epoch.
    pub last_ns: u64,
}

/// Most probes one [`LanProbes`] message may carry (the router cuts at this).
pub const MAX_LAN_PROBES: usize = 4096;

/// One LAN device asking the LAN who has an address: an ARP request or an
/// IPv6 neighbour solicitation, as the router's capture saw it. Address
/// resolution is not a flow (no IP conversation; the ARP sender address is
/// whatever the asker wrote, 0.0.0.0 in an RFC 5227 probe), so it travels
/// on its own, keyed by what the bridge really saw: the asker's MAC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LanProbe {
    /// The asker's MAC (Ethernet source, the ARP sender hardware address).
    pub mac: [u8; 6],
    /// The address the asker claims (ARP sender, IPv6 source): `0.0.0.0` /
    /// `::` for address probes (RFC 5227, IPv6 DAD).
    pub sender: IpAddr,
    /// The address asked for (ARP target, the NS target field: not the
    /// solicited-node multicast destination).
    pub target: IpAddr,
    /// Capture time of the (first) request, ns.
    pub ts_ns: u64,
    /// The target is alive on the LAN: the router saw an answer to this
    /// asker, or saw the target address send from another MAC. A switch
    /// delivers answers only to the asker, so the second is how a router
    /// on a bridge knows most answers.
    pub answered: bool,
}

/// The address-resolution requests a router saw since its last one (sent
/// at the flow-batch cadence, only when there are some).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LanProbes {
    /// The router that saw them.
    pub node: String,
    /// The requests (at most [`MAX_LAN_PROBES`]).
    pub probes: Vec<LanProbe>,
}

/// One host's damped statistics at a moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostSnapshot {
    /// The host.
    pub addr: IpAddr,
    /// Capture time of the snapshot, ns.
    pub ts_ns: u64,
    /// The schema's host columns, window-major.
    pub features: Vec<f32>,
}

pub use crate::attack::AttackKind;

/// The detector's decision about one source, sent to the router to enforce.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Unique id, for de-duplication across retries.
    pub id: u64,
    /// The offending source address.
    pub source: IpAddr,
    /// What it did.
    pub kind: AttackKind,
    /// 0 to 1.
    pub confidence: f32,
    /// A sentence with the numbers behind the decision.
    pub reason: String,
    /// Named counters that support the reason.
    pub evidence: Vec<(String, f64)>,
    /// How long to block, in seconds.
    pub ttl_s: u32,
    /// When the verdict was issued (capture time), nanoseconds since the epoch.
    pub issued_ns: u64,
    /// Whether anything the source sent proves it receives traffic at its
    /// address. A forged source cannot answer; the router blocks a WAN source
    /// only with proof, and never escalates an unproven one (issue #15).
    pub source_proof: SourceProof,
    /// The detector that sent it: its node id as the receiving bus proved
    /// it (the topic's node, which the broker's ACL binds to the
    /// certificate, and the envelope's signature), or the issuing node's
    /// own id in process. Never on the wire (a sender's claim about itself
    /// proves nothing, and older nodes' verdicts decode unchanged): the MQTT
    /// transport writes it on receipt. The router keeps each detector's
    /// blocks in that detector's share of a full set, so a stolen
    /// detector certificate cannot evict another detector's blocks. Empty:
    /// unknown.
    #[serde(skip)]
    pub sender: String,
}

/// What shows that a verdict's source address is really the sender's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SourceProof {
    /// Nothing: every packet it sent could have been forged (SYNs, UDP, ICMP
    /// requests). The router leaves such a source to its meters unless the
    /// source is on the LAN and its MAC vouches for it.
    #[default]
    Unproven,
    /// It answered traffic sent to its address: completed a TCP handshake,
    /// reset a SYN-ACK, or carried on a session — only a host that receives
    /// at that address can.
    Answered,
}

impl SourceProof {
    /// The snake_case name for evidence, metrics and reasons.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceProof::Unproven => "unproven",
            SourceProof::Answered => "answered",
        }
    }
}

/// How bad an alert is; 1 is the most severe, as in Suricata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Needs attention now.
    High = 1,
    /// Worth a look.
    Medium = 2,
    /// For the record.
    Low = 3,
}

/// Whether the gateway stopped the traffic an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertAction {
    /// A block was requested.
    Blocked,
    /// Only reported.
    Allowed,
}

/// Something the operator should see, shaped after Suricata's EVE alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Unique id.
    pub id: u64,
    /// Event time, nanoseconds since the epoch.
    pub ts_ns: u64,
    /// The node that raised it.
    pub node: String,
    /// Flow it is about, or 0.
    pub flow_id: u64,
    /// What happened.
    pub kind: AttackKind,
    /// How bad.
    pub severity: Severity,
    /// Source address, if any.
    pub src: Option<IpAddr>,
    /// Destination address, if any.
    pub dst: Option<IpAddr>,
    /// Source port, or 0.
    pub sport: u16,
    /// Destination port, or 0.
    pub dport: u16,
    /// Transport protocol, if any.
    pub proto: Option<Proto>,
    /// Blocked or only reported.
    pub action: AlertAction,
    /// Numeric signature id (stable per detector rule).
    pub signature_id: u32,
    /// Short signature name.
    pub signature: String,
    /// 0 to 1.
    pub confidence: f32,
    /// A sentence with the numbers.
    pub reason: String,
    /// The flow `flow_id` names, as the router last counted it, when the
    /// detector still held its record (appended: issue #18's EVE `flow{}`).
    pub flow: Option<AlertFlow>,
    /// Why `action` is `allowed` (the EVE `alert.metadata.not_blocked`);
    /// `None` when blocked.
    pub not_blocked: Option<NotBlocked>,
    /// The interface the traffic was captured on, when known (EVE `in_iface`).
    pub in_iface: String,
}

/// The flow an alert is about, in the numbers Suricata's EVE `flow{}` carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertFlow {
    /// The originator's port (ICMP, ICMPv6: the type).
    pub sport: u16,
    /// The responder's port (ICMP, ICMPv6: the code).
    pub dport: u16,
    /// Packets originator → responder.
    pub pkts_toserver: u32,
    /// Packets responder → originator.
    pub pkts_toclient: u32,
    /// IP bytes originator → responder.
    pub bytes_toserver: u64,
    /// IP bytes responder → originator.
    pub bytes_toclient: u64,
    /// First packet, nanoseconds since the Unix epoch.
    pub start_ns: u64,
    /// Zeek connection state when the record was cut.
    pub state: ConnState,
}

impl AlertFlow {
    /// The flow numbers of a router's record.
    pub fn of(r: &FlowRecord) -> AlertFlow {
        AlertFlow {
            sport: r.sport,
            dport: r.dport,
            pkts_toserver: r.fwd_packets,
            pkts_toclient: r.rev_packets,
            bytes_toserver: r.fwd_bytes,
            bytes_toclient: r.rev_bytes,
            start_ns: r.first_ns,
            state: r.conn_state,
        }
    }
}

/// Why an alert's source was not blocked: the operator (and a SIEM reading
/// `alert.metadata.not_blocked`) sees that `allowed` was a decision or a
/// failure, never a silent lie (issue #18, honest actions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotBlocked {
    /// The response policy said alert only.
    PolicyAlert,
    /// Nothing to block: a system event, or an attack without one source.
    NoSource,
    /// The router's allowlist, one of its own addresses, its next hop or
    /// resolver, or a bogon from `enforce.never_block`.
    Allowlisted,
    /// Nothing proves the source is real (it could be forged); left to the meters.
    Unproven,
    /// A LAN device forged the address recently (its MAC is contained instead).
    Forged,
    /// Nothing enforces here (a replay, enforcement disabled).
    EnforcementOff,
    /// No router answered in time (none reachable, or enforcement off on it).
    RouterUnreachable,
    /// The router tried and the kernel refused the write.
    RouterError,
}

impl NotBlocked {
    /// Every reason, in declaration order.
    pub const ALL: [NotBlocked; 8] = [
        NotBlocked::PolicyAlert,
        NotBlocked::NoSource,
        NotBlocked::Allowlisted,
        NotBlocked::Unproven,
        NotBlocked::Forged,
        NotBlocked::EnforcementOff,
        NotBlocked::RouterUnreachable,
        NotBlocked::RouterError,
    ];

    /// The snake_case code written to EVE metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            NotBlocked::PolicyAlert => "policy_alert",
            NotBlocked::NoSource => "no_source",
            NotBlocked::Allowlisted => "allowlisted",
            NotBlocked::Unproven => "unproven",
            NotBlocked::Forged => "forged",
            NotBlocked::EnforcementOff => "enforcement_off",
            NotBlocked::RouterUnreachable => "router_unreachable",
            NotBlocked::RouterError => "router_error",
        }
    }

    /// Parses [`NotBlocked::as_str`].
    pub fn parse(s: &str) -> Option<NotBlocked> {
        NotBlocked::ALL.into_iter().find(|n| n.as_str() == s)
    }
}

impl Alert {
    /// An alert about the system itself (no flow, no addresses, nothing
    /// blocked): a model or settings change, a full block set, a lost link.
    pub fn about_system(
        node: &str,
        kind: AttackKind,
        severity: Severity,
        signature_id: u32,
        signature: &str,
        reason: String,
    ) -> Alert {
        let now = gatewarden_core::clock::unix_now_ns();
        Alert {
            // Unique enough for system events: time in ns mixed with the signature.
            id: now ^ u64::from(signature_id),
            ts_ns: now,
            node: node.to_string(),
            flow_id: 0,
            kind,
            severity,
            src: None,
            dst: None,
            sport: 0,
            dport: 0,
            proto: None,
            action: AlertAction::Allowed,
            signature_id,
            signature: signature.to_string(),
            confidence: 1.0,
            reason,
            flow: None,
            not_blocked: Some(NotBlocked::NoSource),
            in_iface: String::new(),
        }
    }
}

/// Periodic numbers from one node (CPU, memory, counters).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsSample {
    /// Reporting node.
    pub node: String,
    /// Sample time, nanoseconds since the epoch.
    pub ts_ns: u64,
    /// Named values.
    pub values: Vec<(String, f64)>,
}

/// "I am alive", sent by every node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Sending node.
    pub node: String,
    /// Its role.
    pub role: Role,
    /// Its version string.
    pub version: String,
    /// Seconds since it started.
    pub uptime_s: u64,
    /// Send time, nanoseconds since the epoch, for link latency.
    pub sent_ns: u64,
}

/// Allow or deny, for group rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyAction {
    /// Let matching traffic through.
    Allow,
    /// Drop matching traffic.
    Deny,
}

/// One group-to-group rule as the router enforces it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupRule {
    /// Source group name.
    pub source_group: String,
    /// Destination group name.
    pub destination_group: String,
    /// Protocol, or `None` for any.
    pub protocol: Option<Proto>,
    /// Inclusive port range, or `None` for any.
    pub ports: Option<(u16, u16)>,
    /// What to do.
    pub action: PolicyAction,
    /// Higher wins.
    pub priority: i32,
}

/// A complete replacement of the group policy, applied atomically.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyUpdate {
    /// Monotonic policy version; older versions are ignored.
    pub version: u64,
    /// Group name → member addresses or CIDRs as text.
    pub groups: Vec<(String, Vec<String>)>,
    /// Rules in priority order.
    pub rules: Vec<GroupRule>,
}

/// A detector model uploaded on the dashboard's training page: the
/// `.tflite` and its card, validated again by every detector that gets it
/// (never trusted because the monitor checked it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelUpdate {
    /// Upload time, ns since the epoch; a detector refuses (and answers) an
    /// upload not newer than the one it runs.
    pub version: u64,
    /// The `.tflite` file (float32, see DESIGN.md §3).
    pub tflite: Vec<u8>,
    /// The model card (JSON text).
    pub card: String,
    /// Who uploaded it (the token's subject), for the audit trail.
    pub by: String,
}

/// Runtime settings from the dashboard's settings page, sent to every
/// detector (thresholds, TTLs) and router (allowlist). The monitor keeps
/// them and sends them again every 30 s, so a restarted node catches up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettingsUpdate {
    /// Save time, ns since the epoch; a node applies only newer versions.
    pub version: u64,
    /// The whole `[detector]` table as JSON (validated by the monitor and again by each detector).
    pub detector: String,
    /// `[enforce] allowlist`: networks never blocked.
    pub allowlist: Vec<String>,
    /// Who saved them (the token's subject).
    pub by: String,
    /// The whole `[response]` table as JSON (the response policy); empty: the
    /// node keeps its own.
    pub response: String,
}

/// What a router's nftables block sets hold now (every 5 s), so the
/// dashboard's "current blocks" are the kernel's, not a guess from verdicts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockTable {
    /// The router.
    pub node: String,
    /// Entries in its block sets (the list may hold fewer: [`MAX_BLOCK_ROWS`]).
    pub total: u32,
    /// The entries with the longest time left first.
    pub entries: Vec<BlockEntry>,
}

/// The dashboard's "unblock" for an address a router's block table lists,
/// from a monitor that does not run that router's enforcement: sealed to
/// that router, which lifts the block as `gatewarden unblock` would and
/// answers with a system alert (and a fresh block table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnblockRequest {
    /// Request time, ns since the epoch; the answer quotes it.
    pub version: u64,
    /// The address to lift from the detector and admin block sets.
    pub ip: IpAddr,
    /// Who asked (the token's subject), for the audit trail.
    pub by: String,
}

/// Most rows a block table carries.
pub const MAX_BLOCK_ROWS: usize = 500;

/// A router's answer to one verdict: its block is in the kernel, or why not.
/// The monitor writes a verdict's alert with `action: blocked` only once a
/// router confirms it, so the action is what happened, not what was asked
/// (issue #15); a refusal (an unproven WAN source, a forged or protected
/// address, enforcement off) makes it `allowed` with this reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerdictOutcome {
    /// The router that answers.
    pub node: String,
    /// [`Verdict::id`], which is also the id of the alert it came with.
    pub verdict_id: u64,
    /// The verdict's source.
    pub source: IpAddr,
    /// Whether the source is now in a kernel block set.
    pub blocked: bool,
    /// Why not (or how, when blocked), in a sentence.
    pub why: String,
    /// Why not, as a code (`None` when blocked); appended for issue #18.
    pub not_blocked: Option<NotBlocked>,
}

/// One row of a router's neighbour table: an address and the link-layer
/// address the kernel has for it (ARP for IPv4, NDP for IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Neighbour {
    /// The neighbour's address.
    pub ip: IpAddr,
    /// Its MAC.
    pub mac: [u8; 6],
    /// Seconds since the kernel last confirmed the entry (saturating).
    pub age_s: u32,
}

/// A router's neighbour table (every interface, as its own enforcement reads
/// it to resolve MAC group members), so a monitor on another node resolves
/// the same MACs to the same addresses: a monitor's own ARP table says
/// nothing about the router's LAN. Sent when it changes (read every 2 s) and
/// every 15 s; the monitor forgets a table a minute after its router went silent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NeighbourTable {
    /// The router.
    pub node: String,
    /// When the router read the table, ns since the epoch (its clock).
    pub taken_ns: u64,
    /// Entries the kernel had; above [`MAX_NEIGHBOUR_ROWS`] the list keeps
    /// the most recently confirmed ones and `total - entries.len()` were left out.
    pub total: u32,
    /// The entries, most recently confirmed first.
    pub entries: Vec<Neighbour>,
}

/// Most rows a neighbour table carries: twice the kernel's default cap per
/// family (`gc_thresh3` = 1024 for ARP and for NDP). About 50 KiB encoded.
pub const MAX_NEIGHBOUR_ROWS: usize = 2048;

/// Longest interface name ([`Alert::in_iface`], [`FlowBatch::in_iface`])
/// accepted from the wire: Linux's `IFNAMSIZ` (16) less its NUL, so a
/// hostile peer cannot make every alert it causes carry a long string.
pub const MAX_IFACE_NAME: usize = 15;

/// Longest [`VerdictOutcome::why`] accepted from the wire.
pub const MAX_OUTCOME_WHY: usize = 1024;

/// Longest sentence ([`Alert::reason`], [`Verdict::reason`]) kept from the
/// wire. The monitor keeps thousands of alerts, and a peer with a stolen
/// certificate could otherwise make each one a megabyte: a longer reason is
/// cut here, marked, and the message kept (an honest reason is a sentence).
pub const MAX_REASON_BYTES: usize = 4096;

/// Longest [`BlockEntry::reason`] kept from the wire: the nftables element
/// comment it comes from holds at most 256 bytes.
pub const MAX_BLOCK_REASON_BYTES: usize = 256;

/// Longest short label accepted from the wire: node ids, signature names,
/// versions, block targets and origins, metric and evidence names. Longer
/// is refused: no honest node writes one (node ids are certificate names).
pub const MAX_LABEL_BYTES: usize = 128;

/// Most named values one [`MetricsSample`] or [`Verdict::evidence`] carries
/// (a node sends about a dozen /proc numbers; a verdict a few counters).
pub const MAX_NAMED_VALUES: usize = 256;

/// Largest model (`.tflite` + card) the bus carries; the sealed envelope
/// holds at most 1 MiB.
pub const MAX_MODEL_BYTES: usize = 900 * 1024;

/// Most packets one [`Evidence`] message carries.
pub const MAX_EVIDENCE_PACKETS: usize = 4096;
/// Most captured bytes (all packets together) one [`Evidence`] message
/// carries: the ceiling of the `evidence.max_alert_bytes` knob. 896 KiB, not
/// 1 MiB: with [`MAX_EVIDENCE_PACKETS`] packets' times and lengths (~70 KB)
/// the message must still fit in one bus frame (1 MiB + 4 KiB), or every
/// receiver refuses it (test `the_largest_evidence_a_router_may_send_fits_in_one_frame`).
pub const MAX_EVIDENCE_BYTES: usize = 896 * 1024;
/// Link types (libpcap DLT numbers) an [`Evidence`] message may name: the
/// ones the capture crate reads (Null, Ethernet, raw IP, Linux cooked).
pub const EVIDENCE_LINK_TYPES: [u32; 8] = [0, 1, 12, 14, 101, 113, 228, 229];

/// One captured packet kept as evidence (cut at the evidence snap length).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvidencePacket {
    /// Capture time, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// Length of the packet on the wire (at least `data.len()`).
    pub orig_len: u32,
    /// The bytes kept, from the link-layer header on.
    pub data: Vec<u8>,
}

/// The first packets of the flows a source started, sent by the router that
/// saw them when a verdict about the source reaches it: the monitor keeps
/// them as `evidence/<alert_id>.pcap`, so an operator can open what raised
/// an alert in Wireshark (issue #18). Bounded: [`MAX_EVIDENCE_PACKETS`],
/// [`MAX_EVIDENCE_BYTES`], checked on decode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// The router that captured the packets.
    pub node: String,
    /// The alert (and verdict) id the packets belong to.
    pub alert_id: u64,
    /// The source whose flows they are.
    pub source: IpAddr,
    /// libpcap link type (DLT) of every packet, one of [`EVIDENCE_LINK_TYPES`].
    pub link_type: u32,
    /// The packets, oldest first.
    pub packets: Vec<EvidencePacket>,
    /// Packets of the source the router no longer held or left out at the per-alert bound.
    pub left_out: u32,
}

impl Evidence {
    /// Captured bytes of all packets together.
    pub fn captured_bytes(&self) -> usize {
        self.packets.iter().map(|p| p.data.len()).sum()
    }

    /// The checks [`Message::decode`] makes: counts, sizes and link type
    /// within bounds, no packet claiming to be shorter than what was kept.
    pub fn check(&self) -> Result<(), String> {
        if self.packets.len() > MAX_EVIDENCE_PACKETS {
            return Err(format!("{} evidence packets (at most {MAX_EVIDENCE_PACKETS})", self.packets.len()));
        }
        let bytes = self.captured_bytes();
        if bytes > MAX_EVIDENCE_BYTES {
            return Err(format!("{bytes} bytes of evidence packets (at most {MAX_EVIDENCE_BYTES})"));
        }
        if !EVIDENCE_LINK_TYPES.contains(&self.link_type) {
            return Err(format!("evidence link type {} is not one gatewarden captures", self.link_type));
        }
        if self.node.len() > 64 {
            return Err(format!("evidence node name of {} bytes (at most 64)", self.node.len()));
        }
        match self.packets.iter().find(|p| (p.orig_len as usize) < p.data.len() || p.data.is_empty()) {
            Some(p) => Err(format!("an evidence packet keeps {} bytes of a {}-byte packet", p.data.len(), p.orig_len)),
            None => Ok(()),
        }
    }
}

/// Everything that travels on the bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// Router → detector.
    FlowBatch(FlowBatch),
    /// Detector → router.
    Verdict(Verdict),
    /// Any → monitor.
    Alert(Alert),
    /// Any → monitor.
    Metrics(MetricsSample),
    /// Any → any.
    Heartbeat(Heartbeat),
    /// Monitor → router.
    PolicyUpdate(PolicyUpdate),
    /// Monitor → detector.
    ModelUpdate(ModelUpdate),
    /// Monitor → detector and router.
    SettingsUpdate(SettingsUpdate),
    /// Router → monitor.
    BlockTable(BlockTable),
    /// Monitor → one router.
    Unblock(UnblockRequest),
    /// Router → monitor: what became of one verdict.
    VerdictOutcome(VerdictOutcome),
    /// Router → monitor: which MAC has which address on its links.
    NeighbourTable(NeighbourTable),
    /// Router → detector: ARP/neighbour-discovery requests (appended last:
    /// a decoder without it refuses only this kind, never a flow batch).
    LanProbes(LanProbes),
    /// Router → monitor: the first packets of the flows behind an alert
    /// (appended last, like [`Message::LanProbes`]).
    Evidence(Evidence),
}

impl Message {
    /// The short name used in topics and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::FlowBatch(_) => crate::kinds::FLOW_BATCH,
            Message::Verdict(_) => crate::kinds::VERDICT,
            Message::Alert(_) => crate::kinds::ALERT,
            Message::Metrics(_) => crate::kinds::METRICS,
            Message::Heartbeat(_) => crate::kinds::HEARTBEAT,
            Message::PolicyUpdate(_) => crate::kinds::POLICY_UPDATE,
            Message::ModelUpdate(_) => crate::kinds::MODEL_UPDATE,
            Message::SettingsUpdate(_) => crate::kinds::SETTINGS_UPDATE,
            Message::BlockTable(_) => crate::kinds::BLOCK_TABLE,
            Message::Unblock(_) => crate::kinds::UNBLOCK,
            Message::VerdictOutcome(_) => crate::kinds::VERDICT_OUTCOME,
            Message::NeighbourTable(_) => crate::kinds::NEIGHBOUR_TABLE,
            Message::LanProbes(_) => crate::kinds::LAN_PROBES,
            Message::Evidence(_) => crate::kinds::EVIDENCE,
        }
    }

    /// Encodes as version byte + postcard.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![WIRE_VERSION];
        // postcard cannot fail for these types (no maps with non-string keys, no unsized data).
        let body = postcard::to_allocvec(self).expect("message types are always encodable");
        out.extend_from_slice(&body);
        out
    }

    /// Decodes bytes from the wire; every failure is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(DecodeError::TooLarge { len: bytes.len() });
        }
        let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
        if version != WIRE_VERSION {
            return Err(DecodeError::Version { got: version, expected: WIRE_VERSION });
        }
        let (message, rest) =
            postcard::take_from_bytes::<Message>(body).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(DecodeError::TrailingBytes { extra: rest.len() });
        }
        let mut message = message;
        message.cut_long_sentences();
        message.check_values()?;
        Ok(message)
    }

    /// Cuts free-text sentences at their limits ([`MAX_REASON_BYTES`],
    /// [`MAX_BLOCK_REASON_BYTES`]) with a mark saying how long they were:
    /// the message is kept, its memory is bounded.
    fn cut_long_sentences(&mut self) {
        match self {
            Message::Alert(a) => cut_sentence(&mut a.reason, MAX_REASON_BYTES),
            Message::Verdict(v) => cut_sentence(&mut v.reason, MAX_REASON_BYTES),
            Message::BlockTable(t) => {
                t.entries.iter_mut().for_each(|e| cut_sentence(&mut e.reason, MAX_BLOCK_REASON_BYTES))
            }
            _ => {}
        }
    }

    /// Rejects values no honest sender produces: a confidence outside 0–1 or
    /// any non-finite number (NaN would also make two equal messages compare
    /// unequal, as fuzzing found).
    fn check_values(&self) -> Result<(), DecodeError> {
        let confidence = |c: f32, what: &str| {
            if c.is_finite() && (0.0..=1.0).contains(&c) {
                Ok(())
            } else {
                Err(DecodeError::Invalid(format!("{what} confidence {c} is not between 0 and 1")))
            }
        };
        let finite = |v: f64, what: &str| {
            if v.is_finite() {
                Ok(())
            } else {
                Err(DecodeError::Invalid(format!("{what} value {v} is not a finite number")))
            }
        };
        self.check_labels()?;
        match self {
            Message::Verdict(v) => {
                confidence(v.confidence, "verdict")?;
                v.evidence.iter().try_for_each(|(_, x)| finite(*x, "verdict evidence"))
            }
            Message::Alert(a) if a.in_iface.len() > MAX_IFACE_NAME => Err(DecodeError::Invalid(format!(
                "alert interface name of {} bytes (at most {MAX_IFACE_NAME}, Linux's IFNAMSIZ less its NUL)",
                a.in_iface.len()
            ))),
            Message::FlowBatch(b) if b.in_iface.len() > MAX_IFACE_NAME => Err(DecodeError::Invalid(format!(
                "flow batch capture interface name of {} bytes (at most {MAX_IFACE_NAME}, Linux's IFNAMSIZ less its NUL)",
                b.in_iface.len()
            ))),
            Message::FlowBatch(b) if b.shed.len() > MAX_SHED_DESTS => Err(DecodeError::Invalid(format!(
                "flow batch with shed counts for {} destinations (at most {MAX_SHED_DESTS})",
                b.shed.len()
            ))),
            Message::FlowBatch(b) if b.shed.iter().any(|c| c.syns > c.frames) => {
                Err(DecodeError::Invalid("flow batch shed count with more SYNs than frames".into()))
            }
            Message::Alert(a) => confidence(a.confidence, "alert"),
            Message::Metrics(m) => m.values.iter().try_for_each(|(_, x)| finite(*x, "metrics")),
            Message::FlowBatch(b) => {
                b.hosts.iter().flat_map(|h| h.features.iter()).try_for_each(|x| finite(*x as f64, "host feature"))
            }
            Message::ModelUpdate(m) if m.tflite.len() + m.card.len() > MAX_MODEL_BYTES => Err(DecodeError::Invalid(
                format!("model of {} bytes exceeds the {MAX_MODEL_BYTES}-byte limit", m.tflite.len() + m.card.len()),
            )),
            Message::Unblock(u) if u.by.len() > 256 => {
                Err(DecodeError::Invalid(format!("unblock requester name of {} bytes (at most 256)", u.by.len())))
            }
            Message::VerdictOutcome(o) if o.why.len() > MAX_OUTCOME_WHY => Err(DecodeError::Invalid(format!(
                "verdict outcome reason of {} bytes (at most {MAX_OUTCOME_WHY})",
                o.why.len()
            ))),
            Message::BlockTable(t) if t.entries.len() > MAX_BLOCK_ROWS => {
                Err(DecodeError::Invalid(format!("block table of {} rows (at most {MAX_BLOCK_ROWS})", t.entries.len())))
            }
            Message::BlockTable(t) => t
                .entries
                .iter()
                .try_for_each(|e| e.check().map_err(|e| DecodeError::Invalid(format!("block table: {e}")))),
            Message::NeighbourTable(t) if t.entries.len() > MAX_NEIGHBOUR_ROWS => Err(DecodeError::Invalid(format!(
                "neighbour table of {} rows (at most {MAX_NEIGHBOUR_ROWS})",
                t.entries.len()
            ))),
            Message::NeighbourTable(t) if (t.total as usize) < t.entries.len() => Err(DecodeError::Invalid(format!(
                "neighbour table lists {} rows but says the router had {}",
                t.entries.len(),
                t.total
            ))),
            Message::LanProbes(p) if p.probes.len() > MAX_LAN_PROBES => Err(DecodeError::Invalid(format!(
                "{} LAN probes in one message (at most {MAX_LAN_PROBES})",
                p.probes.len()
            ))),
            Message::Evidence(e) => e.check().map_err(DecodeError::Invalid),
            Message::Heartbeat(_)
            | Message::LanProbes(_)
            | Message::PolicyUpdate(_)
            | Message::ModelUpdate(_)
            | Message::SettingsUpdate(_)
            | Message::VerdictOutcome(_)
            | Message::NeighbourTable(_)
            | Message::Unblock(_) => Ok(()),
        }
    }
}

impl Message {
    /// Refuses a label longer than [`MAX_LABEL_BYTES`] or more named values
    /// than [`MAX_NAMED_VALUES`]: what a peer could otherwise make every
    /// stored alert, node row or metric carry.
    fn check_labels(&self) -> Result<(), DecodeError> {
        let label = |s: &str, what: &str| {
            if s.len() <= MAX_LABEL_BYTES {
                Ok(())
            } else {
                Err(DecodeError::Invalid(format!("{what} of {} bytes (at most {MAX_LABEL_BYTES})", s.len())))
            }
        };
        let named = |values: &[(String, f64)], what: &str| {
            if values.len() > MAX_NAMED_VALUES {
                return Err(DecodeError::Invalid(format!(
                    "{} {what} values (at most {MAX_NAMED_VALUES})",
                    values.len()
                )));
            }
            values.iter().try_for_each(|(name, _)| label(name, &format!("{what} name")))
        };
        match self {
            Message::FlowBatch(b) => label(&b.node, "flow batch node id"),
            Message::LanProbes(p) => label(&p.node, "LAN probes node id"),
            Message::Verdict(v) => named(&v.evidence, "verdict evidence"),
            Message::Alert(a) => {
                label(&a.node, "alert node id")?;
                label(&a.signature, "alert signature name")
            }
            Message::Metrics(m) => {
                label(&m.node, "metrics node id")?;
                named(&m.values, "metrics")
            }
            Message::Heartbeat(h) => {
                label(&h.node, "heartbeat node id")?;
                label(&h.version, "heartbeat version")
            }
            Message::BlockTable(t) => {
                label(&t.node, "block table node id")?;
                t.entries.iter().try_for_each(|e| {
                    label(&e.target, "block entry target")?;
                    label(&e.origin, "block entry origin")
                })
            }
            Message::VerdictOutcome(o) => label(&o.node, "verdict outcome node id"),
            Message::NeighbourTable(t) => label(&t.node, "neighbour table node id"),
            Message::Evidence(e) => label(&e.node, "evidence node id"),
            Message::Unblock(_) | Message::PolicyUpdate(_) | Message::ModelUpdate(_) | Message::SettingsUpdate(_) => {
                Ok(())
            }
        }
    }
}

/// Cuts `s` to at most `max` bytes (at a character boundary) and says so.
fn cut_sentence(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let was = s.len();
    let mark = format!(" … [cut: {was} bytes]");
    let mut end = max.saturating_sub(mark.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str(&mark);
}

/// Why bytes from the wire are not a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Zero bytes.
    #[error("empty message")]
    Empty,
    /// Larger than [`MAX_MESSAGE_BYTES`].
    #[error("message of {len} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")]
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// Another format version; the sender runs an incompatible gatewarden.
    #[error("wire format version {got}, this build speaks {expected}: upgrade the older node")]
    Version {
        /// Version byte received.
        got: u8,
        /// Version this build speaks.
        expected: u8,
    },
    /// Not a valid postcard encoding of a message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Well-formed, but carrying a value no honest sender produces.
    #[error("invalid message: {0}")]
    Invalid(String),
    /// A valid message followed by junk.
    #[error("{extra} unexpected bytes after the message")]
    TrailingBytes {
        /// Count of extra bytes.
        extra: usize,
    },
}

/// One blocked address (or, for imported feeds, network or range), or one
/// contained LAN MAC (origin `contain`, the MAC as target, the addresses it
/// forged in the reason).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockEntry {
    /// The address, CIDR or range, as the router's block set holds it (a MAC for `contain`).
    pub target: String,
    /// Seconds until the kernel drops the block, if it has a timeout.
    pub expires_in_s: Option<u32>,
    /// Which block set holds it (`detector`, `admin`, `feed`, or `contain` for `contain_mac`).
    pub origin: String,
    /// Why (the element's comment: the verdict reason, or which operator asked).
    pub reason: String,
    /// What the block rules dropped for this entry (its own nftables element
    /// counter), when the router that lists it counts per element (`None`:
    /// a contained MAC, or a set without per-element counters).
    ///
    /// Appended for issue #18, so a monitor on another node and `ctl blocks`
    /// see the router's count. postcard is positional: block tables and
    /// `ctl blocks` answers between an older and a newer node are refused as
    /// malformed (upgrade the fleet together). Checked on decode
    /// ([`Dropped::check`]).
    pub dropped: Option<Dropped>,
    /// For a detector block: the node ids of the detectors whose verdicts
    /// asked for it (the router keeps them with the element, and a full
    /// set evicts by their shares). Shown so an operator deciding whether
    /// to revoke a detector's certificate sees which blocks it asked for.
    /// Empty: not a verdict's block (admin, feed, contain), or its sender
    /// is unknown (restored from a version that did not keep senders).
    ///
    /// Appended after `dropped`, with the same consequence (postcard is
    /// positional: upgrade the fleet together). Checked on decode: at most
    /// [`MAX_BLOCK_SENDERS`], each a node id
    /// (`gatewarden_core::identity::valid_node_id`), so a hostile router
    /// cannot make the page or a terminal show arbitrary names or text.
    pub senders: Vec<String>,
}

/// Most [`BlockEntry::senders`] accepted from the wire: a router keeps at
/// most two per element (the first detector that blocked it and one more).
pub const MAX_BLOCK_SENDERS: usize = 2;

impl BlockEntry {
    /// Refuses an entry no honest router lists (see [`Dropped::check`]; more
    /// than [`MAX_BLOCK_SENDERS`] senders, or one that is not a node id),
    /// naming it; the bus decoder and the `ctl` client both call it.
    pub fn check(&self) -> Result<(), String> {
        if self.senders.len() > MAX_BLOCK_SENDERS {
            return Err(format!(
                "block entry {:.64}: {} senders (at most {MAX_BLOCK_SENDERS})",
                self.target,
                self.senders.len()
            ));
        }
        if let Some(bad) = self.senders.iter().find(|s| !gatewarden_core::identity::valid_node_id(s)) {
            // Quoted and cut: the name is the peer's, not ours to print as it came.
            let shown: String = bad.chars().take(64).flat_map(char::escape_default).collect();
            return Err(format!("block entry {:.64}: sender \"{shown}\" is not a node id", self.target));
        }
        match &self.dropped {
            Some(d) => d.check().map_err(|e| format!("block entry {:.64}: {e}", self.target)),
            None => Ok(()),
        }
    }
}

/// Largest packet or byte count a [`Dropped`] carries: 2^53 − 1, the largest
/// integer every JSON reader (JavaScript's numbers) holds exactly, and small
/// enough that a table's [`MAX_BLOCK_ROWS`] counts sum without overflow. A
/// router saturates at it ([`Dropped::saturating`]: 9 PB dropped for one
/// address, 83 days at 10 Gbit/s); the decoder refuses more.
pub const MAX_DROP_COUNT: u64 = (1 << 53) - 1;

/// Latest [`Dropped::since_unix_s`] accepted from the wire: 2100-01-01. A
/// later start is a broken or hostile clock. No earlier bound: a router
/// without a real-time clock counts from 1970 until NTP sets it, and that is
/// what its element says.
pub const MAX_DROP_SINCE_UNIX_S: u64 = 4_102_444_800;

/// Packets an nftables element counter dropped for one blocked entry, and
/// since when (the element was written then: a block, a refresh, a restart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dropped {
    /// Packets dropped (at most [`MAX_DROP_COUNT`]).
    pub packets: u64,
    /// Their bytes, IP header and up (at most [`MAX_DROP_COUNT`]).
    pub bytes: u64,
    /// When counting began, seconds since the epoch, by the router's clock
    /// (at most [`MAX_DROP_SINCE_UNIX_S`]).
    pub since_unix_s: u64,
}

impl Dropped {
    /// A router's kernel counter as sent: counts saturate at
    /// [`MAX_DROP_COUNT`] (so the decoder's bound never refuses an honest
    /// table), the start at [`MAX_DROP_SINCE_UNIX_S`].
    pub fn saturating(packets: u64, bytes: u64, since_unix_s: u64) -> Dropped {
        Dropped {
            packets: packets.min(MAX_DROP_COUNT),
            bytes: bytes.min(MAX_DROP_COUNT),
            since_unix_s: since_unix_s.min(MAX_DROP_SINCE_UNIX_S),
        }
    }

    /// Refuses counts no kernel counter produces: past [`MAX_DROP_COUNT`],
    /// or more packets than bytes (every dropped packet has an IP header),
    /// and a start past [`MAX_DROP_SINCE_UNIX_S`].
    pub fn check(&self) -> Result<(), String> {
        if self.packets > MAX_DROP_COUNT || self.bytes > MAX_DROP_COUNT {
            return Err(format!(
                "drop count of {} packets / {} bytes past the bound {MAX_DROP_COUNT} (2^53 - 1)",
                self.packets, self.bytes
            ));
        }
        if self.packets > self.bytes {
            return Err(format!(
                "{} packets dropped in {} bytes (a dropped packet has at least an IP header)",
                self.packets, self.bytes
            ));
        }
        if self.since_unix_s > MAX_DROP_SINCE_UNIX_S {
            return Err(format!(
                "drops counted since {} s after the epoch, past 2100-01-01 ({MAX_DROP_SINCE_UNIX_S}): a broken clock",
                self.since_unix_s
            ));
        }
        Ok(())
    }

    /// The count as a node with clock `now_unix_s` shows it: a start after
    /// `now` (the router's clock ahead of this node's) is clamped to `now`,
    /// since no count began in the future; the bool says it was clamped.
    pub fn started_by(self, now_unix_s: u64) -> (Dropped, bool) {
        if self.since_unix_s > now_unix_s {
            (Dropped { since_unix_s: now_unix_s, ..self }, true)
        } else {
            (self, false)
        }
    }
}

impl Alert {
    /// The alert every refusal on the channel raises (forged, replayed,
    /// unknown sender, operator denied…): one shape for the bus and the ctl endpoint.
    pub fn channel_abuse(node: &str, now_ns: u64, reason: String) -> Alert {
        let kind = AttackKind::ChannelAbuse;
        Alert {
            id: now_ns,
            ts_ns: now_ns,
            ..Alert::about_system(
                node,
                kind,
                Severity::High,
                crate::signatures::signature_id(kind),
                crate::signatures::signature(kind),
                reason,
            )
        }
    }
}

/// [`BlockEntry::origin`] values: which block set holds the entry.
pub mod block_origin {
    /// A detector verdict.
    pub const DETECTOR: &str = "detector";
    /// An operator (`gatewarden block`, the dashboard).
    pub const ADMIN: &str = "admin";
    /// An imported blocklist.
    pub const FEED: &str = "feed";
    /// A LAN MAC contained for forging source addresses (the MAC is the target).
    pub const CONTAIN: &str = "contain";
}

/// How a `contain` entry's reason starts; the forged addresses follow.
pub const CONTAIN_REASON_PREFIX: &str = "spoofing: forged ";

/// The forged addresses a containment's comment names (see [`contain_reason`]);
/// empty for a comment written otherwise.
pub fn forged_in_reason(reason: &str) -> Vec<String> {
    let Some(list) = reason.strip_prefix(CONTAIN_REASON_PREFIX) else { return Vec::new() };
    let list = list.split(" +").next().unwrap_or_default();
    list.split(", ")
        .filter_map(|t| t.split_whitespace().next())
        .filter(|t| t.parse::<IpAddr>().is_ok())
        .map(str::to_owned)
        .collect()
}

/// A dashboard unblock request older than this is not carried out (the
/// router was away; the operator may no longer want it).
pub const MAX_UNBLOCK_REQUEST_AGE_S: u64 = 120;

impl Alert {
    /// A node's answer to a `settings_update`: applied (with what) or refused (with why).
    pub fn settings_result(node: &str, version: u64, result: Result<&str, &str>) -> Alert {
        use crate::signatures::{SETTINGS_APPLIED, SETTINGS_REFUSED};
        match result {
            Ok(what) => Alert::about_system(
                node,
                AttackKind::System,
                Severity::Low,
                SETTINGS_APPLIED,
                "GATEWARDEN SYSTEM settings applied",
                format!("settings {version}: applied on {node} ({what})"),
            ),
            Err(why) => Alert::about_system(
                node,
                AttackKind::System,
                Severity::High,
                SETTINGS_REFUSED,
                "GATEWARDEN SYSTEM settings refused",
                format!("settings {version}: refused on {node}, the previous settings stay: {why}"),
            ),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn samples() -> Vec<Message> {
        let src: IpAddr = "198.51.100.7".parse().unwrap();
        let dst: IpAddr = "2001:db8::10".parse().unwrap();
        vec![
            Message::FlowBatch(FlowBatch {
                node: "router-1".into(),
                seq: 7,
                flows: vec![FlowRecord {
                    flow_id: 1,
                    src,
                    dst,
                    sport: 40000,
                    dport: 22,
                    proto: Proto::Tcp,
                    first_ns: 1,
                    last_ns: 2,
                    fwd_packets: 3,
                    rev_packets: 1,
                    fwd_bytes: 180,
                    rev_bytes: 60,
                    conn_state: ConnState::REJ,
                    src_answered: false,
                }],
                hosts: vec![HostSnapshot { addr: src, ts_ns: 2, features: vec![1.0, 0.5] }],
                in_iface: "lan0".into(),
                shed: vec![ShedCount { dst, dport: 443, proto: Proto::Tcp, frames: 4096, syns: 4000, last_ns: 3 }],
            }),
            Message::Verdict(Verdict {
                id: 9,
                source: src,
                kind: AttackKind::PortScan,
                confidence: 0.97,
                reason: "312 ports".into(),
                evidence: vec![("distinct_ports".into(), 312.0)],
                ttl_s: 600,
                issued_ns: 5,
                source_proof: SourceProof::Answered,
                sender: String::new(),
            }),
            Message::Alert(Alert {
                id: 1,
                ts_ns: 2,
                node: "gw".into(),
                flow_id: 0,
                kind: AttackKind::SynFlood,
                severity: Severity::High,
                src: Some(src),
                dst: None,
                sport: 0,
                dport: 80,
                proto: Some(Proto::Other(132)),
                action: AlertAction::Blocked,
                signature_id: 1000003,
                signature: "SYN flood".into(),
                confidence: 1.0,
                reason: "x".into(),
                flow: Some(AlertFlow {
                    sport: 40000,
                    dport: 80,
                    pkts_toserver: 3,
                    pkts_toclient: 1,
                    bytes_toserver: 180,
                    bytes_toclient: 60,
                    start_ns: 1,
                    state: ConnState::REJ,
                }),
                not_blocked: None,
                in_iface: "lan0".into(),
            }),
            Message::Metrics(MetricsSample { node: "n".into(), ts_ns: 1, values: vec![("cpu".into(), 0.5)] }),
            Message::Heartbeat(Heartbeat {
                node: "n".into(),
                role: Role::Detector,
                version: "0.1.0".into(),
                uptime_s: 3,
                sent_ns: 4,
            }),
            Message::PolicyUpdate(PolicyUpdate {
                version: 2,
                groups: vec![("cameras".into(), vec!["192.0.2.0/28".into()])],
                rules: vec![GroupRule {
                    source_group: "cameras".into(),
                    destination_group: "sensors".into(),
                    protocol: Some(Proto::Tcp),
                    ports: Some((22, 22)),
                    action: PolicyAction::Deny,
                    priority: 10,
                }],
            }),
            Message::ModelUpdate(ModelUpdate {
                version: 5,
                tflite: vec![0x1c, 0, 0, 0, b'T', b'F', b'L', b'3'],
                card: "{}".into(),
                by: "admin".into(),
            }),
            Message::BlockTable(BlockTable {
                node: "router-1".into(),
                total: 1,
                entries: vec![BlockEntry {
                    target: "198.51.100.7".into(),
                    expires_in_s: Some(300),
                    origin: "detector".into(),
                    reason: "scan".into(),
                    dropped: Some(Dropped { packets: 12, bytes: 1008, since_unix_s: 1_700_000_000 }),
                    senders: vec!["detector-1".into()],
                }],
            }),
            Message::SettingsUpdate(SettingsUpdate {
                version: 6,
                detector: "{\"scan_distinct_ports\":30}".into(),
                allowlist: vec!["192.0.2.200/32".into()],
                by: "admin".into(),
                response: "{\"port_scan\":\"alert\"}".into(),
            }),
            Message::Unblock(UnblockRequest { version: 7, ip: "2001:db8::7".parse().unwrap(), by: "admin".into() }),
            Message::NeighbourTable(NeighbourTable {
                node: "router-1".into(),
                taken_ns: 8,
                total: 3,
                entries: vec![
                    Neighbour { ip: "192.0.2.10".parse().unwrap(), mac: [2, 0, 0, 0, 0, 0x0a], age_s: 1 },
                    Neighbour { ip: "2001:db8::10".parse().unwrap(), mac: [2, 0, 0, 0, 0, 0x0a], age_s: 4 },
                ],
            }),
            Message::LanProbes(LanProbes {
                node: "router-1".into(),
                probes: vec![LanProbe {
                    mac: [2, 0, 0, 0, 0, 9],
                    sender: "0.0.0.0".parse().unwrap(),
                    target: "192.0.2.77".parse().unwrap(),
                    ts_ns: 3,
                    answered: false,
                }],
            }),
            Message::Evidence(evidence_sample()),
        ]
    }

    fn evidence_sample() -> Evidence {
        Evidence {
            node: "router-1".into(),
            alert_id: 9,
            source: "198.51.100.7".parse().unwrap(),
            link_type: 1,
            packets: vec![EvidencePacket { ts_ns: 5, orig_len: 60, data: vec![0xaa; 54] }],
            left_out: 0,
        }
    }

    /// Evidence is the last variant (older kinds keep their discriminants)
    /// and every bound is checked on decode: a hostile router cannot make
    /// the monitor write a huge or unreadable pcap.
    #[test]
    fn evidence_is_the_last_variant_and_bounded_on_decode() {
        let e = evidence_sample();
        let wire = Message::Evidence(e.clone()).encode();
        assert_eq!(wire[1], 13, "after LAN probes (12)");
        assert_eq!(Message::decode(&wire), Ok(Message::Evidence(e.clone())));
        // The fuzz seed is this message, byte for byte.
        let seed = include_bytes!("../../../fuzz/corpus/message_decode/evidence");
        assert_eq!(wire, seed);
        for cut in 0..wire.len() {
            assert!(Message::decode(&wire[..cut]).is_err(), "truncated at {cut} decoded");
        }
        let refused = |e: Evidence, what: &str| {
            let err = Message::decode(&Message::Evidence(e).encode()).unwrap_err();
            assert!(matches!(&err, DecodeError::Invalid(m) if m.contains(what)), "{what}: {err}");
        };
        let pkt = |n: usize| EvidencePacket { ts_ns: 1, orig_len: n as u32, data: vec![1; n] };
        refused(Evidence { packets: vec![pkt(60); MAX_EVIDENCE_PACKETS + 1], ..e.clone() }, "evidence packets");
        refused(Evidence { packets: vec![pkt(65_535); 17], ..e.clone() }, "bytes of evidence");
        refused(Evidence { link_type: 147, ..e.clone() }, "link type 147");
        refused(
            Evidence { packets: vec![EvidencePacket { ts_ns: 1, orig_len: 10, data: vec![1; 54] }], ..e.clone() },
            "keeps 54 bytes of a 10-byte",
        );
        refused(Evidence { node: "n".repeat(65), ..e.clone() }, "node name");
        // A length prefix promising more packets than the bytes hold is malformed, not an allocation.
        let mut bytes = Message::Evidence(Evidence { packets: vec![], ..e }).encode();
        let last = bytes.pop();
        assert_eq!(last, Some(0), "left_out is last");
        assert_eq!(bytes.pop(), Some(0), "the packet count before it");
        bytes.extend([0xff, 0xff, 0xff, 0x7f, 0]);
        assert!(matches!(Message::decode(&bytes), Err(DecodeError::Malformed(_))));
    }

    /// LAN probes were appended as the last variant: every older kind keeps
    /// its postcard discriminant, so a decoder built before them still reads
    /// every other message and refuses only this kind (which it never
    /// subscribes to anyway).
    #[test]
    fn lan_probes_are_the_last_variant_and_bounded() {
        let s = samples();
        assert_eq!(s[0].encode()[1], 0, "flow batch keeps discriminant 0");
        let probes = s.iter().find(|m| m.kind() == crate::kinds::LAN_PROBES).unwrap();
        assert_eq!(probes.encode()[1], 12, "after the neighbour table (11)");
        // The wire layout, byte by byte (also fuzz/corpus/message_decode/lan_probes).
        let wire = [1, 12, 2, b'r', b'1', 1, 2, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 192, 0, 2, 77, 3, 0];
        let Message::LanProbes(mut p) = probes.clone() else { unreachable!() };
        p.node = "r1".into();
        assert_eq!(Message::decode(&wire), Ok(Message::LanProbes(p.clone())));
        p.probes = vec![p.probes[0].clone(); MAX_LAN_PROBES + 1];
        let err = Message::decode(&Message::LanProbes(p).encode()).unwrap_err();
        assert!(matches!(err, DecodeError::Invalid(_)), "{err}");
    }

    /// The named fuzz seeds of the kinds issue #18 extended (`alert`: flow,
    /// reason not blocked, interface; `verdict_outcome`: its code;
    /// `flow_batch`: its capture interface) are these
    /// samples' bytes, so fuzzing starts from today's layout.
    /// `GATEWARDEN_WRITE_SEEDS=1 cargo test -p gatewarden-proto seeds` rewrites them.
    #[test]
    fn named_fuzz_seeds_are_current() {
        let outcome = Message::VerdictOutcome(VerdictOutcome {
            node: "router-1".into(),
            verdict_id: 9,
            source: "203.0.113.7".parse().unwrap(),
            blocked: false,
            why: "allowlisted".into(),
            not_blocked: Some(NotBlocked::Allowlisted),
        });
        let alert = samples().into_iter().find(|m| m.kind() == crate::kinds::ALERT).unwrap();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/message_decode");
        let batch = samples().into_iter().find(|m| m.kind() == crate::kinds::FLOW_BATCH).unwrap();
        for (name, m) in [("alert", alert), ("verdict_outcome", outcome), ("flow_batch", batch)] {
            let path = dir.join(name);
            if std::env::var_os("GATEWARDEN_WRITE_SEEDS").is_some() {
                std::fs::write(&path, m.encode()).unwrap();
            }
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(Message::decode(&bytes), Ok(m), "{name}");
        }
    }

    #[test]
    fn an_alert_naming_an_overlong_interface_is_refused() {
        let Some(Message::Alert(mut a)) = samples().into_iter().find(|m| m.kind() == crate::kinds::ALERT) else {
            unreachable!()
        };
        a.in_iface = "x".repeat(MAX_IFACE_NAME + 1);
        assert!(matches!(Message::decode(&Message::Alert(a).encode()), Err(DecodeError::Invalid(_))));
    }

    fn sample(kind: &str) -> Message {
        samples().into_iter().find(|m| m.kind() == kind).expect("a sample of every kind")
    }

    /// A peer with a stolen certificate sends alerts with a megabyte reason
    /// (10 000 of them would be 10 GiB in the monitor's store): the alert is
    /// kept, its reason cut to the limit with a mark, at a character boundary.
    #[test]
    fn a_megabyte_reason_is_cut_to_its_limit_and_the_alert_kept() {
        let Message::Alert(mut a) = sample(crate::kinds::ALERT) else { unreachable!() };
        a.reason = "\u{1}".repeat(1 << 20);
        let Ok(Message::Alert(got)) = Message::decode(&Message::Alert(a.clone()).encode()) else {
            panic!("the alert is kept")
        };
        assert!(got.reason.len() <= MAX_REASON_BYTES, "{} bytes", got.reason.len());
        assert!(got.reason.ends_with("[cut: 1048576 bytes]"), "{:?}", &got.reason[got.reason.len() - 40..]);
        assert_eq!((got.id, got.kind, got.src), (a.id, a.kind, a.src), "the rest is untouched");
        // Multi-byte characters are cut whole; a reason at the limit is left alone.
        a.reason = "é".repeat(MAX_REASON_BYTES);
        let Ok(Message::Alert(got)) = Message::decode(&Message::Alert(a.clone()).encode()) else { panic!() };
        assert!(got.reason.len() <= MAX_REASON_BYTES && got.reason.starts_with("éé"));
        a.reason = "x".repeat(MAX_REASON_BYTES);
        assert_eq!(Message::decode(&Message::Alert(a.clone()).encode()), Ok(Message::Alert(a)));
        let Message::Verdict(mut v) = sample(crate::kinds::VERDICT) else { unreachable!() };
        v.reason = "y".repeat(100_000);
        let Ok(Message::Verdict(got)) = Message::decode(&Message::Verdict(v).encode()) else { panic!() };
        assert!(got.reason.len() <= MAX_REASON_BYTES);
    }

    /// Labels that every stored alert, node row or metric would carry are
    /// refused beyond their limit, naming the field; at the limit they pass.
    #[test]
    fn overlong_labels_and_too_many_named_values_are_refused() {
        let refused = |m: Message, what: &str| {
            let err = Message::decode(&m.encode()).unwrap_err();
            assert!(err.to_string().contains(what), "{err}");
        };
        let Message::Heartbeat(mut h) = sample(crate::kinds::HEARTBEAT) else { unreachable!() };
        h.version = "v".repeat(MAX_LABEL_BYTES);
        assert_eq!(Message::decode(&Message::Heartbeat(h.clone()).encode()), Ok(Message::Heartbeat(h.clone())));
        h.version = "v".repeat(1 << 20);
        refused(Message::Heartbeat(h), "heartbeat version of 1048576 bytes (at most 128)");
        let Message::Alert(mut a) = sample(crate::kinds::ALERT) else { unreachable!() };
        a.signature = "s".repeat(MAX_LABEL_BYTES + 1);
        refused(Message::Alert(a), "alert signature name of 129 bytes");
        let Message::Metrics(mut m) = sample(crate::kinds::METRICS) else { unreachable!() };
        m.values = (0..=MAX_NAMED_VALUES).map(|i| (format!("m{i}"), 1.0)).collect();
        refused(Message::Metrics(m.clone()), "257 metrics values (at most 256)");
        m.values = vec![("n".repeat(MAX_LABEL_BYTES + 1), 1.0)];
        refused(Message::Metrics(m), "metrics name of 129 bytes");
        let Message::BlockTable(mut t) = sample(crate::kinds::BLOCK_TABLE) else { unreachable!() };
        let mut e = t.entries[0].clone();
        e.target = "1".repeat(MAX_LABEL_BYTES + 1);
        t.entries.push(e);
        refused(Message::BlockTable(t.clone()), "block entry target of 129 bytes");
        t.entries.pop();
        t.entries[0].reason = "r".repeat(10_000);
        let Ok(Message::BlockTable(got)) = Message::decode(&Message::BlockTable(t).encode()) else { panic!() };
        assert!(got.entries[0].reason.len() <= MAX_BLOCK_REASON_BYTES);
    }

    /// A peer naming a capture interface longer than Linux allows is refused
    /// with the reason (the batch never reaches the detector's memory);
    /// the longest real name and an unknown (empty) one pass.
    #[test]
    fn a_flow_batch_naming_an_overlong_interface_is_refused() {
        let Some(Message::FlowBatch(mut b)) = samples().into_iter().find(|m| m.kind() == crate::kinds::FLOW_BATCH)
        else {
            unreachable!()
        };
        for ok in ["", "x".repeat(MAX_IFACE_NAME).as_str()] {
            b.in_iface = ok.into();
            let m = Message::FlowBatch(b.clone());
            assert_eq!(Message::decode(&m.encode()), Ok(m), "{ok:?}");
        }
        b.in_iface = "x".repeat(MAX_IFACE_NAME + 1);
        let err = Message::decode(&Message::FlowBatch(b).encode()).unwrap_err();
        assert!(matches!(err, DecodeError::Invalid(_)), "{err}");
        assert!(err.to_string().contains("capture interface name of 16 bytes (at most 15"), "{err}");
    }

    /// Shed counts travel with the batch; a peer naming more destinations
    /// than a router ever sends, or more SYNs than frames, is refused.
    #[test]
    fn a_flow_batch_with_too_many_or_impossible_shed_counts_is_refused() {
        let Some(Message::FlowBatch(mut b)) = samples().into_iter().find(|m| m.kind() == crate::kinds::FLOW_BATCH)
        else {
            unreachable!()
        };
        let one = b.shed[0].clone();
        b.shed = vec![one.clone(); MAX_SHED_DESTS];
        let m = Message::FlowBatch(b.clone());
        assert_eq!(Message::decode(&m.encode()), Ok(m));
        b.shed.push(one.clone());
        let err = Message::decode(&Message::FlowBatch(b.clone()).encode()).unwrap_err();
        assert!(err.to_string().contains("shed counts for 257 destinations (at most 256)"), "{err}");
        b.shed = vec![ShedCount { syns: one.frames + 1, ..one }];
        let err = Message::decode(&Message::FlowBatch(b).encode()).unwrap_err();
        assert!(err.to_string().contains("more SYNs than frames"), "{err}");
    }

    /// Issue #18 put each entry's drop count on the wire, appended to
    /// `BlockEntry`: this pins the new layout byte by byte (an older peer
    /// refuses it as malformed, as it does a newer alert: the fleet is
    /// upgraded together) and that it is what `fuzz/corpus/message_decode/
    /// block_table` holds, so fuzzing starts from today's layout
    /// (`GATEWARDEN_WRITE_SEEDS=1 cargo test -p gatewarden-proto block_table`
    /// rewrites the seed). An entry without a count (a contained MAC) is a
    /// single 0 byte longer than before, and decodes as "not counted", not 0.
    /// The detectors that asked for a block follow the count (appended
    /// after it the same way): a row without senders ends in one 0 byte.
    #[test]
    fn block_table_wire_carries_each_entrys_drop_count() {
        let entry = |dropped| BlockEntry {
            target: "192.0.2.7".into(),
            expires_in_s: Some(60),
            origin: "admin".into(),
            reason: "x".into(),
            dropped,
            senders: Vec::new(),
        };
        let counted = Dropped { packets: 5, bytes: 420, since_unix_s: 1_700_000_000 };
        let table = Message::BlockTable(BlockTable {
            node: "r".into(),
            total: 2,
            entries: vec![BlockEntry { senders: vec!["d-1".into()], ..entry(Some(counted)) }, entry(None)],
        });
        let mut row = vec![9];
        row.extend_from_slice(b"192.0.2.7");
        row.extend_from_slice(&[1, 60, 5, b'a', b'd', b'm', b'i', b'n', 1, b'x']);
        let mut wire = vec![1, 8, 1, b'r', 2, 2];
        wire.extend_from_slice(&row);
        // Some, 5 packets, 420 bytes (varint a4 03), since 1 700 000 000 (varint).
        wire.extend_from_slice(&[1, 5, 0xa4, 0x03, 0x80, 0xe2, 0xcf, 0xaa, 0x06]);
        // One sender, "d-1".
        wire.extend_from_slice(&[1, 3, b'd', b'-', b'1']);
        wire.extend_from_slice(&row);
        // No count, no senders.
        wire.extend_from_slice(&[0, 0]);
        assert_eq!(table.encode(), wire);
        assert_eq!(Message::decode(&wire), Ok(table.clone()));
        let seed =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/message_decode/block_table");
        if std::env::var_os("GATEWARDEN_WRITE_SEEDS").is_some() {
            std::fs::write(&seed, &wire).unwrap();
        }
        let bytes = std::fs::read(&seed).unwrap_or_else(|e| panic!("{}: {e}", seed.display()));
        assert_eq!(bytes, wire, "{} is today's layout", seed.display());
        // The layout before issue #18 (no count at the end of each row) no longer decodes.
        let mut old = vec![1, 8, 1, b'r', 1, 1];
        old.extend_from_slice(&row);
        assert!(matches!(Message::decode(&old), Err(DecodeError::Malformed(_))), "{:?}", Message::decode(&old));
        // Nor does the layout before the senders (a count, then the table's end).
        old.push(0);
        assert!(matches!(Message::decode(&old), Err(DecodeError::Malformed(_))), "{:?}", Message::decode(&old));
    }

    /// A detector block's senders reach the monitor's page and the operator's
    /// terminal: a hostile router must not put arbitrary text or an
    /// unbounded list there. Two node ids pass; a third sender, or a name
    /// that is no node id (escape sequences, a comma-joined pair, too long,
    /// empty), refuses the table with the entry named.
    #[test]
    fn a_block_entrys_senders_are_at_most_two_node_ids() {
        let table = |senders: Vec<String>| {
            Message::BlockTable(BlockTable {
                node: "r".into(),
                total: 1,
                entries: vec![BlockEntry {
                    target: "192.0.2.7".into(),
                    expires_in_s: Some(60),
                    origin: "detector".into(),
                    reason: "scan".into(),
                    dropped: None,
                    senders,
                }],
            })
        };
        let ids = |n: usize| (1..=n).map(|i| format!("det-{i}")).collect::<Vec<_>>();
        for ok in [ids(0), ids(1), ids(MAX_BLOCK_SENDERS), vec!["d".repeat(64)]] {
            assert_eq!(Message::decode(&table(ok.clone()).encode()), Ok(table(ok.clone())), "{ok:?}");
        }
        let refused = |senders: Vec<String>, why: &str| {
            let err = Message::decode(&table(senders.clone()).encode()).unwrap_err();
            assert!(
                matches!(&err, DecodeError::Invalid(m) if m.contains("block entry 192.0.2.7") && m.contains(why)),
                "{senders:?}: {err}"
            );
            err.to_string()
        };
        refused(ids(MAX_BLOCK_SENDERS + 1), "3 senders (at most 2)");
        refused(ids(10_000), "10000 senders (at most 2)");
        let err = refused(vec!["det-1\u{1b}[2J\n".into()], "is not a node id");
        assert!(!err.chars().any(char::is_control), "the refusal quotes the name inert: {err:?}");
        for bad in ["det-1,det-2", "", "det 1", &"d".repeat(65), "d\u{202e}"] {
            refused(vec!["det-0".into(), bad.to_string()], "is not a node id");
        }
    }

    /// A hostile router's counts are refused with the reason, the whole
    /// table with them (nothing half-trusted reaches the page); the largest
    /// honest values pass, and a router saturates rather than send more.
    #[test]
    fn impossible_drop_counts_are_refused_on_decode() {
        let table = |d: Dropped| {
            Message::BlockTable(BlockTable {
                node: "r".into(),
                total: 1,
                entries: vec![BlockEntry {
                    target: "192.0.2.7".into(),
                    expires_in_s: None,
                    origin: "admin".into(),
                    reason: String::new(),
                    dropped: Some(d),
                    senders: Vec::new(),
                }],
            })
        };
        let max = Dropped { packets: MAX_DROP_COUNT, bytes: MAX_DROP_COUNT, since_unix_s: MAX_DROP_SINCE_UNIX_S };
        let zero = Dropped { packets: 0, bytes: 0, since_unix_s: 0 };
        for ok in [max, zero] {
            assert_eq!(Message::decode(&table(ok).encode()), Ok(table(ok)), "{ok:?}");
        }
        for (bad, why) in [
            (Dropped { packets: u64::MAX, bytes: u64::MAX, ..max }, "past the bound 9007199254740991"),
            (Dropped { bytes: MAX_DROP_COUNT + 1, ..zero }, "past the bound"),
            (Dropped { packets: 7, bytes: 6, ..zero }, "7 packets dropped in 6 bytes"),
            (Dropped { since_unix_s: MAX_DROP_SINCE_UNIX_S + 1, ..zero }, "past 2100-01-01"),
            (Dropped { since_unix_s: u64::MAX, ..zero }, "a broken clock"),
        ] {
            let err = Message::decode(&table(bad).encode()).unwrap_err();
            assert!(
                matches!(&err, DecodeError::Invalid(m) if m.contains("block entry 192.0.2.7") && m.contains(why)),
                "{bad:?}: {err}"
            );
        }
        let sent = Dropped::saturating(u64::MAX, u64::MAX, u64::MAX);
        assert_eq!(sent, max, "a router sends what the decoder accepts");
        // A start after the receiver's clock (the router's clock ahead) is shown as now.
        let ahead = Dropped { since_unix_s: 1_700_000_100, ..zero };
        assert_eq!(ahead.started_by(1_700_000_000), (Dropped { since_unix_s: 1_700_000_000, ..zero }, true));
        assert_eq!(ahead.started_by(1_700_000_100), (ahead, false));
    }

    #[test]
    fn every_message_round_trips() {
        for m in samples() {
            let bytes = m.encode();
            assert_eq!(bytes[0], WIRE_VERSION);
            assert_eq!(Message::decode(&bytes).unwrap(), m, "{}", m.kind());
        }
    }

    #[test]
    fn empty_input_is_an_error() {
        assert_eq!(Message::decode(&[]), Err(DecodeError::Empty));
    }

    #[test]
    fn wrong_version_is_an_error() {
        let mut bytes = samples()[1].encode();
        bytes[0] = 2;
        assert_eq!(Message::decode(&bytes), Err(DecodeError::Version { got: 2, expected: 1 }));
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut bytes = samples()[4].encode();
        bytes.push(0);
        assert_eq!(Message::decode(&bytes), Err(DecodeError::TrailingBytes { extra: 1 }));
    }

    #[test]
    fn every_truncation_is_an_error() {
        for m in samples() {
            let bytes = m.encode();
            for cut in 0..bytes.len() {
                assert!(Message::decode(&bytes[..cut]).is_err(), "{} cut at {cut}", m.kind());
            }
        }
    }

    #[test]
    fn nan_and_out_of_range_values_are_refused() {
        // Found by fuzzing: a Verdict with confidence NaN decoded, and then did not equal itself.
        let mut v = match samples()[1].clone() {
            Message::Verdict(v) => v,
            _ => unreachable!(),
        };
        for bad in [f32::NAN, f32::INFINITY, -0.5, 1.5] {
            v.confidence = bad;
            let err = Message::decode(&Message::Verdict(v.clone()).encode()).unwrap_err();
            assert!(matches!(err, DecodeError::Invalid(_)), "{bad}: {err}");
        }
        v.confidence = 0.5;
        v.evidence = vec![("x".into(), f64::NAN)];
        assert!(matches!(Message::decode(&Message::Verdict(v).encode()), Err(DecodeError::Invalid(_))));
        let m =
            Message::Metrics(MetricsSample { node: "n".into(), ts_ns: 0, values: vec![("cpu".into(), f64::INFINITY)] });
        assert!(matches!(Message::decode(&m.encode()), Err(DecodeError::Invalid(_))));
    }

    #[test]
    fn a_neighbour_table_past_its_bound_or_claiming_fewer_rows_than_it_lists_is_refused() {
        let row = Neighbour { ip: "192.0.2.1".parse().unwrap(), mac: [2, 0, 0, 0, 0, 1], age_s: 0 };
        let table = |n: usize, total: u32| {
            Message::NeighbourTable(NeighbourTable { node: "r".into(), taken_ns: 0, total, entries: vec![row; n] })
        };
        let full = table(MAX_NEIGHBOUR_ROWS, u32::MAX);
        assert!(full.encode().len() < 64 * 1024, "the bound keeps a table small: {} bytes", full.encode().len());
        assert_eq!(Message::decode(&full.encode()).unwrap(), full);
        let err = Message::decode(&table(MAX_NEIGHBOUR_ROWS + 1, u32::MAX).encode()).unwrap_err();
        assert!(matches!(&err, DecodeError::Invalid(m) if m.contains("2049 rows")), "{err}");
        let err = Message::decode(&table(3, 2).encode()).unwrap_err();
        assert!(matches!(&err, DecodeError::Invalid(m) if m.contains("lists 3 rows")), "{err}");
        // A length prefix promising millions of rows is refused without allocating them.
        let mut bytes = table(0, 1).encode();
        assert_eq!(bytes.pop(), Some(0), "the row count is last");
        bytes.extend([0xff, 0xff, 0xff, 0x7f]);
        assert!(matches!(Message::decode(&bytes), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn oversized_input_is_refused_before_decoding() {
        let bytes = vec![WIRE_VERSION; MAX_MESSAGE_BYTES + 1];
        assert!(matches!(Message::decode(&bytes), Err(DecodeError::TooLarge { .. })));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Message::decode(&bytes);
        }

        #[test]
        fn versioned_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut v = vec![WIRE_VERSION];
            v.extend(bytes);
            let _ = Message::decode(&v);
        }

        #[test]
        fn flipped_bytes_never_panic(idx in 0usize..4096, val in any::<u8>(), which in 0usize..11) {
            let mut bytes = samples()[which].encode();
            let i = idx % bytes.len();
            bytes[i] = val;
            let _ = Message::decode(&bytes);
        }
    }
}
