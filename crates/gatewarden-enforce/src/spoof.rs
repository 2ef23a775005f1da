//! Which LAN frames carry a forged source, and which verdict sources are real.
//!
//! The router captures its LAN interface, so it sees every frame's source
//! MAC next to its source IP. A frame is **spoofed** when its source IP is
//! not a plausible LAN source at all (outside the LAN prefixes, broadcast,
//! multicast, `0.0.0.0` outside a DHCP client's discover/request, `::`
//! outside ICMPv6), when it is one of the router's own addresses, or when
//! the IP is bound to another MAC.
//!
//! Bindings IP → MAC come from three places, trusted in this order:
//!
//! 1. a DHCP lease (`enforce.dhcp_leases`, dnsmasq format): the DHCP server
//!    gave that address to that MAC;
//! 2. the kernel's neighbour table (ARP, NDP) for the LAN interface;
//! 3. the first frame the capture saw from the address.
//!
//! An attacker can send gratuitous ARP as easily as forged IP packets, so a
//! neighbour entry that flips to another MAC while the bound MAC is still
//! sending (within [`ACTIVE_WINDOW_NS`]) does not move the binding: it marks
//! it *disputed* and is counted. A flip after the bound MAC fell silent is a
//! device replaced or an address handed on, or another MAC claiming the
//! address (an ARP request to the router rewrites its entry for the
//! sender): when the capture can send, the LAN is asked first (below), and
//! the silent device answering for its address keeps it (disputed, and
//! active again); otherwise the binding follows. A lease that moves an
//! address someone holds (a lease or neighbour binding, or a first sighting
//! of an active MAC) to another MAC is asked about the same way, whether the
//! holder is active or not: DHCP release and request are unauthenticated,
//! so a forged release with the holder's MAC and the attacker's request
//! move the lease; a holder that answered lately keeps its address while
//! the lease names the other MAC. A lease for an address nobody held binds
//! at once, as does any lease when the capture cannot send. Only a lease
//! or neighbour binding whose MAC is active accuses another MAC: a first
//! sighting never does (the attacker may have spoken first), and a silent
//! device's binding never does (its address may have been handed on, and a
//! MAC-NAT repeater sends its clients' leased addresses with its own MAC:
//! accusing it would cut off everyone behind it).
//! But a silent device's binding stops vouching for its address once another
//! MAC has sent with it (for the forged-address memory, an hour): the
//! verdict gate then wants proof the source is real, so a flood forged with
//! an idle plug's address does not get the plug blocked. The plug's next
//! frame makes it active again, and the other MAC's next frame is forged.
//!
//! A MAC sending with an address an active device holds is either forging
//! it or the same device seen through another MAC: a phone roaming from
//! the main access point to a MAC-NAT extender arrives with the extender's
//! MAC (and everyone behind the extender would be cut off with it), one
//! roaming back arrives with its own. So a conflict is not judged on the
//! frame alone: when the capture can send ([`SpoofGuard::enable_probing`]),
//! the router asks the LAN who has the address now (an ARP request, an IPv6
//! neighbour solicitation, [`NeighbourProbe`]) and watches the answers for
//! [`PROBE_WAIT_NS`]. The holder answering or still sending with it proves
//! the newcomer forges it (contained at once); only the newcomer answering
//! is a handover (the binding moves, nobody is contained); nobody answering
//! is a forgery too, since a real user of an address answers for it. A
//! third MAC answering proves nothing (anyone can send an ARP reply, and an
//! attacker answering from a third MAC must not get a roaming device
//! contained): nobody is contained and the address needs proof for a block. While
//! the probe runs the address vouches for nobody. A MAC already proven to
//! forge, a second newcomer, and conflicts beyond [`MAX_PROBES`] at once are
//! judged on the frame, as without probing.
//!
//! The router's own frames are captured too (it forwards WAN sources to the
//! LAN) and are not checked, but it never sends a frame to itself: a frame
//! from one of its MACs *to* one of its MACs came in from the LAN with a
//! forged Ethernet source and is checked like any other.
//!
//! A report contains the frame's source MAC, but an Ethernet source is as
//! easy to forge as an IP one: one frame with a device's MAC and a WAN
//! source is reported against the device. So a containment drops only
//! frames whose source is not bound to the MAC ([`SpoofGuard::bound_sources`]:
//! lease and neighbour bindings, `0.0.0.0` for a DHCP client with an IPv4
//! binding, and the networks routed through a LAN next hop): the device keeps
//! its own traffic, the forged traffic under its MAC is dropped, and a MAC
//! nothing binds (an attacker's made-up one) is dropped whole.
//!
//! Everything is bounded: bindings, MACs tracked as spoofers, addresses
//! listed per MAC and forged addresses remembered; a cap that is hit evicts
//! the oldest entry and counts it. The per-frame cost is one hash lookup
//! (docs/PERFORMANCE.md).

use std::collections::HashMap;
use std::net::IpAddr;

use super::feeds::{self, Cidr};
use gatewarden_core::metrics::{Counter, Gauge, Registry};

pub use gatewarden_core::net::Mac;

/// A frame's source MAC that has been silent this long no longer vouches
/// for its address (its neighbour entry may follow another MAC).
pub const ACTIVE_WINDOW_NS: u64 = 60_000_000_000;
/// A MAC that keeps forging is reported again this often, so its
/// containment is refreshed while it goes on.
pub const REPORT_REFRESH_NS: u64 = 60_000_000_000;
/// How long a conflict's probe waits for answers before it is judged: a
/// LAN device answers ARP in milliseconds, and the containment of a forger
/// nobody answers for must still come within a second.
pub const PROBE_WAIT_NS: u64 = 400_000_000;
/// Most conflicts probed at once. A flood forging many active devices'
/// addresses is judged frame by frame beyond this, as without probing.
pub const MAX_PROBES: usize = 64;

/// A question the router puts to its LAN: who has `target` now? The
/// capture thread sends it as a frame ([`NeighbourProbe::frame`]) on the
/// interface it captures, where the answers come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighbourProbe {
    /// The address in conflict.
    pub target: IpAddr,
    /// The router's LAN MAC (the frame's source, the one answers go to).
    pub from_mac: Mac,
    /// The router's LAN address of the target's family; `None` sends an
    /// RFC 5227 probe (`0.0.0.0`) or a DAD-style solicitation (`::`).
    pub from_ip: Option<IpAddr>,
}

impl NeighbourProbe {
    /// The Ethernet frame: a broadcast ARP request, or a neighbour
    /// solicitation to the target's solicited-node group, so every MAC that
    /// claims the address hears it.
    pub fn frame(&self) -> Vec<u8> {
        let mut f = Vec::with_capacity(86);
        match self.target {
            IpAddr::V4(t) => {
                f.extend_from_slice(&[0xff; 6]);
                f.extend_from_slice(&self.from_mac);
                f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
                f.extend_from_slice(&self.from_mac);
                let spa = match self.from_ip {
                    Some(IpAddr::V4(a)) => a.octets(),
                    _ => [0; 4],
                };
                f.extend_from_slice(&spa);
                f.extend_from_slice(&[0; 6]);
                f.extend_from_slice(&t.octets());
                f.resize(60, 0);
            }
            IpAddr::V6(t) => {
                let to = t.octets();
                let group: [u8; 16] = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, to[13], to[14], to[15]];
                let src = match self.from_ip {
                    Some(IpAddr::V6(a)) => a.octets(),
                    _ => [0; 16],
                };
                // A solicitation from `::` carries no source link-layer option (RFC 4861 4.3).
                let with_option = src != [0; 16];
                let len: u16 = if with_option { 32 } else { 24 };
                f.extend_from_slice(&[0x33, 0x33, 0xff, to[13], to[14], to[15]]);
                f.extend_from_slice(&self.from_mac);
                f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
                f.extend_from_slice(&len.to_be_bytes());
                f.extend_from_slice(&[58, 255]);
                f.extend_from_slice(&src);
                f.extend_from_slice(&group);
                let icmp_at = f.len();
                f.extend_from_slice(&[135, 0, 0, 0, 0, 0, 0, 0]);
                f.extend_from_slice(&to);
                if with_option {
                    f.extend_from_slice(&[1, 1]);
                    f.extend_from_slice(&self.from_mac);
                }
                let sum = icmpv6_checksum(&src, &group, &f[icmp_at..]);
                f[icmp_at + 2..icmp_at + 4].copy_from_slice(&sum.to_be_bytes());
            }
        }
        f
    }
}

/// The ICMPv6 checksum over the IPv6 pseudo-header and `body` (its checksum field zero).
fn icmpv6_checksum(src: &[u8; 16], dst: &[u8; 16], body: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
        }
    };
    add(src);
    add(dst);
    add(&(body.len() as u32).to_be_bytes());
    add(&[0, 0, 0, 58]);
    add(body);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A conflict being probed: `claimant` sent with an address `holder` is using.
#[derive(Debug, Clone, Copy)]
struct Conflict {
    claimant: Mac,
    holder: Mac,
    started_ns: u64,
    claimant_answered: bool,
    /// The holder answered for the address or sent with it again.
    holder_answered: bool,
    /// A third MAC answered for it.
    other_answered: bool,
    /// Not a frame but a refresh, with the trust the binding takes if it
    /// follows: a silent holder's neighbour entry, or a held address's
    /// lease, now names `claimant` (a handover, or ARP/NA or a forged DHCP
    /// release claiming the address). Judged without accusing anyone: the
    /// holder answering keeps its binding.
    flip: Option<Trust>,
}

impl Conflict {
    /// What the answers say once the conflict is judged.
    fn outcome(&self) -> ConflictOutcome {
        if self.holder_answered {
            ConflictOutcome::HolderAnswered
        } else if self.other_answered {
            // Anyone can send an ARP reply: no proof either way.
            ConflictOutcome::Inconclusive
        } else if self.claimant_answered {
            ConflictOutcome::Handover
        } else {
            ConflictOutcome::Unanswered
        }
    }
}

/// How a conflict was judged; the order of [`CONFLICT_LABELS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConflictOutcome {
    HolderAnswered,
    Unanswered,
    Handover,
    NotProbed,
    Inconclusive,
}

/// Metric labels of [`ConflictOutcome`], in its order.
const CONFLICT_LABELS: [&str; 5] = ["holder_answered", "unanswered", "handover", "not_probed", "inconclusive"];

pub use gatewarden_core::net::{mac_text, parse_mac};

/// Prefix of a containment's element comment; the forged addresses follow it.
pub use gatewarden_proto::messages::CONTAIN_REASON_PREFIX;

/// Longest containment comment written (the kernel keeps a comment of at
/// most 120 bytes, see `ruleset::comment_udata`): the list of forged
/// addresses is cut to fit and ends with `+N more`.
pub const MAX_CONTAIN_REASON: usize = 120;

/// The element comment of a containment: the addresses `mac` forged, as many
/// as fit in [`MAX_CONTAIN_REASON`] bytes, then `+N more`. Kept in the kernel
/// element (and so in the state file), so `gatewarden blocks`, the control
/// socket and the dashboard can say what a contained MAC forged, across
/// restarts and from another process.
pub fn contain_reason(forged: &[IpAddr], more: u64) -> String {
    let mut out = CONTAIN_REASON_PREFIX.to_string();
    let total = forged.len() as u64 + more;
    let mut listed = 0u64;
    for (i, a) in forged.iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        let piece = format!("{sep}{a}");
        let rest = total - listed - 1;
        // Room for this address and, if any remain after it, a " +N more" tail.
        let tail = if rest > 0 { format!(" +{rest} more").len() } else { 0 };
        if out.len() + piece.len() + tail > MAX_CONTAIN_REASON {
            break;
        }
        out.push_str(&piece);
        listed += 1;
    }
    if total > listed {
        out.push_str(&format!(" +{} more", total - listed));
    }
    out
}

pub use gatewarden_proto::messages::forged_in_reason;

/// One contained MAC as `gatewarden blocks`, the control socket and the
/// dashboard show it: an operator must see who is cut off, why and for how
/// long, to lift a wrong containment (`gatewarden unblock MAC`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ContainedMac {
    /// The MAC, as nft prints it.
    pub mac: String,
    /// Addresses it forged (at most what fits in the element comment).
    pub forged: Vec<String>,
    /// When it was contained (or last re-contained), Unix seconds.
    pub since: u64,
    /// Seconds left.
    pub remaining_s: u64,
    /// The containment's timeout, seconds (`enforce.contain_ttl_s` when made).
    pub timeout_s: u64,
    /// The element comment.
    pub reason: String,
}

/// What the spoof check reads of a LAN frame: its time, source address and
/// transport. The router fills it from the parsed headers (gatewarden-flow's
/// `PacketInfo`); enforcement does not parse packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceFrame {
    /// Capture time, ns since the epoch.
    pub ts_ns: u64,
    /// The source address the frame claims.
    pub src: IpAddr,
    /// IP protocol number.
    pub proto: u8,
    /// Source port (0 without one).
    pub sport: u16,
    /// Destination port (0 without one).
    pub dport: u16,
    /// The frame's destination MAC; `[0; 6]` when not known.
    pub dst_mac: Mac,
}

/// Where a binding comes from; higher is trusted more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Trust {
    /// The first frame the capture saw from the address.
    FirstSeen,
    /// The kernel's neighbour table (ARP/NDP) on the LAN interface.
    Neighbour,
    /// A DHCP lease.
    Lease,
}

impl Trust {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Trust::FirstSeen => "first_seen",
            Trust::Neighbour => "neighbour",
            Trust::Lease => "lease",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Binding {
    mac: Mac,
    trust: Trust,
    /// Last frame from `mac` with this source address (capture time, ns); 0 = never.
    last_seen_ns: u64,
    /// The neighbour table named another MAC while this one was active.
    disputed: bool,
    /// Refresh generation that last confirmed it (leases and neighbours).
    generation: u64,
    /// Last frame with this address from another MAC that was not accused
    /// (the bound one silent: a handover or a forgery, nobody can tell yet);
    /// 0 = never. While recent the binding vouches for nobody.
    rival_seen_ns: u64,
}

impl Binding {
    /// An undisputed binding nobody else has used the address against.
    fn new(mac: Mac, trust: Trust, last_seen_ns: u64, generation: u64) -> Binding {
        Binding { mac, trust, last_seen_ns, disputed: false, generation, rival_seen_ns: 0 }
    }
}

/// Why a frame's source is forged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Forgery {
    /// The address belongs to another MAC (lease or active neighbour entry).
    OtherMac(Mac),
    /// Not in any LAN prefix (a WAN address, another site's).
    OutsideLan,
    /// 255.255.255.255 or a LAN prefix's broadcast address.
    Broadcast,
    /// A multicast address (never a source).
    Multicast,
    /// 0.0.0.0 / :: outside DHCP discovery and IPv6 duplicate address detection.
    Unspecified,
}

impl Forgery {
    /// Every reason's metric label.
    pub const LABELS: [&'static str; 5] = ["other_mac", "outside_lan", "broadcast", "multicast", "unspecified"];

    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Forgery::OtherMac(_) => "other_mac",
            Forgery::OutsideLan => "outside_lan",
            Forgery::Broadcast => "broadcast",
            Forgery::Multicast => "multicast",
            Forgery::Unspecified => "unspecified",
        }
    }

    /// Words for alerts and logs.
    pub fn describe(self) -> String {
        match self {
            Forgery::OtherMac(m) => format!("bound to {}", mac_text(&m)),
            Forgery::OutsideLan => "not a LAN address".into(),
            Forgery::Broadcast => "broadcast".into(),
            Forgery::Multicast => "multicast".into(),
            Forgery::Unspecified => "unspecified".into(),
        }
    }
}

/// What the enforcement thread is told about a spoofing MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoofReport {
    /// The sender.
    pub mac: Mac,
    /// The address it forged in this frame.
    pub forged: IpAddr,
    /// Why that is forged.
    pub forgery: Forgery,
    /// Every address this MAC forged so far (at most `max_forged_per_mac`).
    pub all_forged: Vec<IpAddr>,
    /// Addresses it forged beyond that list.
    pub more: u64,
}

/// The sources a contained MAC may still send from: what the router binds
/// to it, so that a containment caused by a frame forged with a device's
/// MAC drops the forgery and not the device (the `mac_bound` and
/// `mac_routed` sets, see `ruleset`). Sorted, without duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BoundSources {
    /// (MAC, address) from a DHCP lease or the neighbour table, and
    /// (MAC, `0.0.0.0`) for each MAC with an IPv4 binding: a device that
    /// reconnects asks for its lease again from `0.0.0.0` (DHCP request or
    /// discover), and must not lose its address to someone else's forgery.
    pub addrs: Vec<(Mac, IpAddr)>,
    /// (next hop's MAC, network routed out of the LAN): a downstream router
    /// forwards its subnet's traffic with its hosts' addresses.
    pub routed: Vec<(Mac, Cidr)>,
}

/// Most (next hop, routed network) pairs in [`BoundSources::routed`].
pub const MAX_ROUTED_SOURCES: usize = 4096;

/// What the verdict gate knows about a source address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceClass {
    /// A LAN MAC forged it recently: never block it.
    Forged(Mac),
    /// A LAN address whose MAC binding is a lease or an undisputed neighbour entry.
    LanVerified(Mac),
    /// In a LAN prefix, but nothing vouches for who sends from it.
    LanUnverified,
    /// Not a LAN address.
    Wan,
}

/// The caps, from `[enforce]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most IP → MAC bindings (and most forged addresses remembered).
    pub max_bindings: usize,
    /// Most MACs tracked as spoofers.
    pub max_spoofers: usize,
    /// Most forged addresses listed per MAC (alerts, reports).
    pub max_forged_per_mac: usize,
    /// How long a forged address stays protected, ns.
    pub forged_memory_ns: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_bindings: 16_384, max_spoofers: 1024, max_forged_per_mac: 16, forged_memory_ns: 3_600_000_000_000 }
    }
}

#[derive(Debug)]
struct Spoofer {
    forged: Vec<IpAddr>,
    more: u64,
    last_report_ns: u64,
}

#[derive(Debug, Clone)]
struct Metrics {
    spoofed: [Counter; 5],
    caps: [Counter; 4],
    flips: Counter,
    bindings: [Gauge; 3],
    probes: [Counter; 5],
}

const CAP_LABELS: [&str; 4] = ["bindings", "spoofers", "forged_per_mac", "forged"];

/// The LAN's bindings and the spoofers seen; shared by the capture thread
/// (one lookup per frame) and the enforcement thread (refreshes, verdicts).
#[derive(Debug)]
pub struct SpoofGuard {
    limits: Limits,
    /// Prefixes of the LAN interface's own addresses (learned).
    lan: Vec<Cidr>,
    /// `enforce.lan_prefixes`: networks behind the LAN (configured).
    extra_lan: Vec<Cidr>,
    /// Networks routed out of the LAN through a next hop (not the LAN's own).
    routed: Vec<Cidr>,
    /// The router's next hops (any interface; those on the LAN have bindings).
    next_hops: Vec<IpAddr>,
    own_macs: Vec<Mac>,
    own_addrs: Vec<IpAddr>,
    lan_mac: Mac,
    bindings: HashMap<IpAddr, Binding>,
    spoofers: HashMap<Mac, Spoofer>,
    /// Forged address → (the MAC that forged it, when, capture ns).
    forged: HashMap<IpAddr, (Mac, u64)>,
    /// Conflicts being probed, by address (at most [`MAX_PROBES`]).
    conflicts: HashMap<IpAddr, Conflict>,
    /// Probes for the capture thread to send.
    probes_out: Vec<NeighbourProbe>,
    probing: bool,
    generation: u64,
    metrics: Option<Metrics>,
}

impl SpoofGuard {
    /// An empty guard; `extra_lan` are networks that reach the router through the LAN.
    pub fn new(limits: Limits, extra_lan: Vec<Cidr>, registry: Option<&std::sync::Arc<Registry>>) -> SpoofGuard {
        let metrics = registry.map(|r| Metrics {
            spoofed: Forgery::LABELS.map(|l| {
                r.counter(
                    "gatewarden_spoofed_frames_total",
                    "LAN frames with a forged source address, by reason.",
                    &[("reason", l)],
                )
            }),
            caps: CAP_LABELS.map(|l| {
                r.counter(
                    "gatewarden_spoof_cap_hits_total",
                    "Entries evicted because a spoof-check table was full, by table.",
                    &[("cap", l)],
                )
            }),
            flips: r.counter(
                "gatewarden_spoof_binding_flips_total",
                "Neighbour entries or DHCP leases that named another MAC while the bound one still answered (kept, disputed).",
                &[],
            ),
            bindings: [Trust::FirstSeen, Trust::Neighbour, Trust::Lease].map(|t| {
                r.gauge("gatewarden_spoof_bindings", "IP to MAC bindings known, by source.", &[("source", t.as_str())])
            }),
            probes: CONFLICT_LABELS.map(|l| {
                r.counter(
                    "gatewarden_spoof_conflicts_total",
                    "Frames from another MAC with an active device's address, by how the conflict was judged \
                     (holder_answered and unanswered: forged; handover: the address moved; not_probed: judged on the frame; \
                     inconclusive: a third MAC answered, nobody contained).",
                    &[("outcome", l)],
                )
            }),
        });
        SpoofGuard {
            limits,
            lan: Vec::new(),
            extra_lan,
            routed: Vec::new(),
            next_hops: Vec::new(),
            own_macs: Vec::new(),
            own_addrs: Vec::new(),
            lan_mac: [0; 6],
            bindings: HashMap::new(),
            spoofers: HashMap::new(),
            forged: HashMap::new(),
            conflicts: HashMap::new(),
            probes_out: Vec::new(),
            probing: false,
            generation: 0,
            metrics,
        }
    }

    /// The capture can send on the LAN: conflicts are probed before they
    /// are judged (module doc). Without it a conflict is judged on the frame.
    pub fn enable_probing(&mut self) {
        self.probing = true;
    }

    /// Probes to send now; the capture thread takes them after each frame.
    pub fn take_probes(&mut self) -> Vec<NeighbourProbe> {
        std::mem::take(&mut self.probes_out)
    }

    /// Whether conflicts are being probed (so [`SpoofGuard::judge_probes`] has work).
    pub fn probing_now(&self) -> bool {
        !self.conflicts.is_empty()
    }

    /// An ARP reply, neighbour advertisement or gratuitous announcement
    /// from `mac` for `addr`: an answer if a probe asked about `addr`.
    pub fn saw_answer(&mut self, mac: Mac, addr: IpAddr) {
        if let Some(c) = self.conflicts.get_mut(&addr) {
            if mac == c.claimant {
                c.claimant_answered = true;
            } else if mac == c.holder {
                c.holder_answered = true;
            } else if !self.own_macs.contains(&mac) {
                c.other_answered = true;
            }
        }
    }

    /// Judges the probed conflicts that are decided at `now`: a forgery is
    /// reported (to contain its MAC), a handover moves the binding.
    pub fn judge_probes(&mut self, now: u64) -> Vec<SpoofReport> {
        let decided: Vec<(IpAddr, Conflict)> = self
            .conflicts
            .iter()
            .filter(|(_, c)| c.holder_answered || now.saturating_sub(c.started_ns) >= PROBE_WAIT_NS)
            .map(|(ip, c)| (*ip, *c))
            .collect();
        let mut reports = Vec::new();
        for (ip, c) in decided {
            self.conflicts.remove(&ip);
            let outcome = c.outcome();
            if let Some(trust) = c.flip {
                self.judge_flip(ip, &c, outcome, trust, now);
                continue;
            }
            self.count_conflict(outcome);
            match outcome {
                ConflictOutcome::Inconclusive => {
                    // Nobody contained, and the address vouches for nobody
                    // (its rival mark stays) until the LAN settles.
                    tracing::warn!(%ip, holder = %mac_text(&c.holder), newcomer = %mac_text(&c.claimant),
                        "a third MAC answered the router's probe for an address two MACs used: nobody contained, the address needs proof for a block");
                }
                ConflictOutcome::Handover => {
                    tracing::info!(%ip, from = %mac_text(&c.holder), to = %mac_text(&c.claimant),
                        "address moved to another MAC (it alone answered the router's probe): a roam or a handover, not a forgery");
                    if let Some(b) = self.bindings.get_mut(&ip) {
                        *b = Binding { mac: c.claimant, last_seen_ns: now, disputed: false, rival_seen_ns: 0, ..*b };
                    }
                }
                _ => reports.extend(self.forged_by(c.claimant, ip, Forgery::OtherMac(c.holder), now)),
            }
        }
        reports
    }

    /// A silent holder's neighbour entry, or a held address's lease, named
    /// another MAC and the LAN was asked: the holder answering keeps its
    /// binding (the claim was ARP, NA or a forged DHCP release, not a
    /// handover), as does a third MAC answering (proof of nothing);
    /// otherwise the binding follows the entry or lease (`trust`), as a
    /// handover. Nobody is reported either way: the entry may name any MAC.
    fn judge_flip(&mut self, ip: IpAddr, c: &Conflict, outcome: ConflictOutcome, trust: Trust, now: u64) {
        let Some(b) = self.bindings.get_mut(&ip).filter(|b| b.mac == c.holder) else { return };
        match outcome {
            ConflictOutcome::HolderAnswered => {
                // Alive: it accuses the claimant's frames with the address from now on.
                b.last_seen_ns = b.last_seen_ns.max(now);
                b.disputed = true;
                if let Some(m) = &self.metrics {
                    m.flips.inc();
                }
                tracing::warn!(%ip, bound = %mac_text(&c.holder), claimed = %mac_text(&c.claimant), source = trust.as_str(),
                    "neighbour entry or lease moved to another MAC, but the bound one answered for the address: kept the binding, marked disputed");
            }
            ConflictOutcome::Inconclusive => b.rival_seen_ns = now,
            _ => {
                tracing::info!(%ip, from = %mac_text(&c.holder), to = %mac_text(&c.claimant),
                    "an address moved to another MAC (its old MAC did not answer the router's probe)");
                *b = Binding::new(c.claimant, trust, 0, b.generation);
            }
        }
    }

    fn count_conflict(&self, outcome: ConflictOutcome) {
        if let Some(m) = &self.metrics {
            m.probes[outcome as usize].inc();
        }
    }

    /// The probe for a conflict over `ip`, if the router can ask: its LAN MAC is known.
    fn probe_for(&self, ip: IpAddr) -> Option<NeighbourProbe> {
        if !self.probing || self.lan_mac == [0; 6] {
            return None;
        }
        let from_ip = match ip {
            IpAddr::V4(_) => self.own_addrs.iter().find(|a| a.is_ipv4() && self.in_lan(a)).copied(),
            IpAddr::V6(_) => self.own_addrs.iter().find(|a| a.is_ipv6() && is_link_local(a)).copied(),
        };
        Some(NeighbourProbe { target: ip, from_mac: self.lan_mac, from_ip })
    }

    /// The router's own MACs: frames it sends are not checked.
    pub fn set_own_macs(&mut self, macs: Vec<Mac>) {
        self.own_macs = macs;
    }

    /// The router's own addresses (sorted) and its LAN MAC: a LAN frame from
    /// another MAC with one of them as source is forged.
    pub fn set_own_addrs(&mut self, addrs: Vec<IpAddr>, lan_mac: Option<Mac>) {
        self.own_addrs = addrs;
        self.lan_mac = lan_mac.unwrap_or([0; 6]);
    }

    /// The LAN: its interface's networks and those routed out of it (a downstream router's subnets).
    pub fn set_lan_prefixes(&mut self, lan: Vec<Cidr>) {
        self.lan = lan;
    }

    /// The networks the kernel routes out of the LAN through a next hop
    /// (a downstream router's subnets, not the LAN's own networks), and the
    /// router's next hops: the bound sources of a next hop's MAC include them.
    /// Networks inside another routed one are left out: the kernel's
    /// concatenated-range set refuses overlapping elements (and with them the
    /// whole write of the binding sets).
    pub fn set_routes(&mut self, mut routed: Vec<Cidr>, next_hops: Vec<IpAddr>) {
        routed.sort_unstable();
        routed.dedup();
        let all = routed.clone();
        routed.retain(|c| !all.iter().any(|o| o.prefix < c.prefix && o.contains(&c.addr)));
        self.routed = routed;
        self.next_hops = next_hops;
    }

    fn in_lan(&self, ip: &IpAddr) -> bool {
        self.lan.iter().chain(&self.extra_lan).any(|c| c.contains(ip))
    }

    /// Whether the LAN has a routable network of `src`'s family, so that a
    /// source outside every LAN network is known to be forged. A link-local
    /// network proves nothing: the LAN interface has one from the moment it
    /// is up, before its address is added, and an IPv4-only LAN says nothing
    /// about the ULA or SLAAC addresses other routers give its IPv6 devices.
    fn lan_known_for(&self, src: &IpAddr) -> bool {
        let fam = super::ruleset::fam_of(src);
        self.lan.iter().chain(&self.extra_lan).any(|c| c.fam() == fam && !is_link_local_net(c))
    }

    /// Why `src` cannot be a LAN host's source address at all, if it cannot.
    fn implausible(&self, p: &SourceFrame) -> Option<Forgery> {
        match p.src {
            IpAddr::V4(a) => {
                if a.is_unspecified() {
                    // A DHCP client's discover/request: 0.0.0.0:68 → :67.
                    return (!(p.proto == 17 && p.sport == 68 && p.dport == 67)).then_some(Forgery::Unspecified);
                }
                if a.is_broadcast() {
                    return Some(Forgery::Broadcast);
                }
                if a.is_multicast() {
                    return Some(Forgery::Multicast);
                }
                if a.is_link_local() {
                    // Self-assigned (no DHCP answer): a real device, never blockable anyway.
                    return None;
                }
                let directed = self.lan.iter().chain(&self.extra_lan).any(|c| {
                    c.prefix < 31 && c.fam() == super::expr::Fam::V4 && feeds::addr_u128(&p.src) == c.range().1
                });
                if directed {
                    return Some(Forgery::Broadcast);
                }
            }
            IpAddr::V6(a) => {
                if a.is_unspecified() {
                    // Duplicate address detection and MLD reports come from `::`.
                    return (p.proto != 58).then_some(Forgery::Unspecified);
                }
                if a.is_multicast() {
                    return Some(Forgery::Multicast);
                }
                if is_link_local(&p.src) {
                    return None;
                }
            }
        }
        (self.lan_known_for(&p.src) && !self.in_lan(&p.src)).then_some(Forgery::OutsideLan)
    }

    /// Checks one LAN frame from `mac`. Returns a report when the
    /// enforcement thread must act: a MAC forging an address it was not
    /// yet reported for, or one still forging after [`REPORT_REFRESH_NS`].
    pub fn check(&mut self, mac: Mac, p: &SourceFrame) -> Option<SpoofReport> {
        // Frames the router sends itself are not checked (it forwards WAN
        // sources to the LAN). A multicast or zero source MAC is no excuse.
        if self.own_macs.contains(&mac) && !self.came_in_under_own_mac(p) {
            return None;
        }
        let now = p.ts_ns;
        let forgery = match self.implausible(p) {
            Some(f) => Some(f),
            None if p.src.is_unspecified() => None,
            // The router's own address from a LAN device: always forged.
            None if self.own_addrs.binary_search(&p.src).is_ok() => Some(Forgery::OtherMac(self.lan_mac)),
            None => self.observe_binding(mac, p.src, now),
        };
        self.forged_by(mac, p.src, forgery?, now)
    }

    /// Whether a frame with one of the router's MACs as source came in from
    /// the LAN with that source forged: the router never sends a frame to
    /// itself, nor a broadcast or multicast from a LAN address other than
    /// its own (it forwards no LAN traffic back into the LAN to a group; a
    /// forwarded group stream from the WAN has a WAN source).
    fn came_in_under_own_mac(&self, p: &SourceFrame) -> bool {
        let to_router = p.dst_mac != [0; 6] && self.own_macs.contains(&p.dst_mac);
        let to_group = p.dst_mac[0] & 1 == 1;
        to_router
            || (to_group
                && !p.src.is_unspecified()
                && self.in_lan(&p.src)
                && self.own_addrs.binary_search(&p.src).is_err())
    }

    /// `mac` forged `ip`: counted, remembered (the verdict gate never blocks
    /// it), and reported when [`SpoofGuard::spoofer_report`] says so. A frame
    /// judged at once and a probed conflict judged later both end here.
    fn forged_by(&mut self, mac: Mac, ip: IpAddr, forgery: Forgery, now: u64) -> Option<SpoofReport> {
        if let Some(m) = &self.metrics {
            m.spoofed[Forgery::LABELS.iter().position(|l| *l == forgery.as_str()).unwrap_or(0)].inc();
        }
        self.remember_forged(ip, mac, now);
        self.spoofer_report(mac, ip, forgery, now)
    }

    /// The binding side of [`SpoofGuard::check`]: learns first sightings,
    /// keeps activity, and says whether `mac` forges `ip`.
    fn observe_binding(&mut self, mac: Mac, ip: IpAddr, now: u64) -> Option<Forgery> {
        if let Some(b) = self.bindings.get_mut(&ip) {
            if b.mac == mac {
                b.last_seen_ns = now;
                if let Some(c) = self.conflicts.get_mut(&ip) {
                    // The holder still uses the address while the newcomer does: no roam.
                    c.holder_answered = true;
                }
                return None;
            }
            // Only a holder that is talking accuses: a silent one's address may
            // have been handed on, or be sent for it by a MAC-NAT repeater.
            let accuses = b.trust >= Trust::Neighbour
                && b.last_seen_ns != 0
                && now.saturating_sub(b.last_seen_ns) <= ACTIVE_WINDOW_NS;
            if !accuses {
                b.rival_seen_ns = now;
                return None;
            }
            let holder = b.mac;
            return self.conflict(mac, holder, ip, now);
        }
        if !self.in_lan(&ip) && self.lan_known_for(&ip) {
            return None;
        }
        self.make_room_for_binding();
        self.bindings.insert(ip, Binding::new(mac, Trust::FirstSeen, now, 0));
        None
    }

    /// `mac` sent with `ip`, which the active `holder` uses: a roam or a
    /// forgery. Asks the LAN before judging when it can (module doc);
    /// otherwise, or for a MAC already proven to forge, it is forged now.
    fn conflict(&mut self, mac: Mac, holder: Mac, ip: IpAddr, now: u64) -> Option<Forgery> {
        let probe = match self.conflicts.get(&ip) {
            Some(c) if c.claimant == mac => None,
            None if !self.spoofers.contains_key(&mac) && self.conflicts.len() < MAX_PROBES => self.probe_for(ip),
            _ => {
                if self.probing {
                    self.count_conflict(ConflictOutcome::NotProbed);
                }
                return Some(Forgery::OtherMac(holder));
            }
        };
        match probe {
            Some(p) => {
                self.conflicts.insert(
                    ip,
                    Conflict {
                        claimant: mac,
                        holder,
                        started_ns: now,
                        claimant_answered: false,
                        holder_answered: false,
                        other_answered: false,
                        flip: None,
                    },
                );
                self.probes_out.push(p);
            }
            None if self.conflicts.contains_key(&ip) => {}
            None => return Some(Forgery::OtherMac(holder)),
        }
        // Being probed: the address vouches for nobody meanwhile.
        if let Some(b) = self.bindings.get_mut(&ip) {
            b.rival_seen_ns = now;
        }
        None
    }

    fn make_room_for_binding(&mut self) {
        if self.bindings.len() < self.limits.max_bindings.max(1) {
            return;
        }
        // Evict the least recently seen eighth, lowest trust first.
        let mut by_age: Vec<(Trust, u64, IpAddr)> =
            self.bindings.iter().map(|(ip, b)| (b.trust, b.last_seen_ns, *ip)).collect();
        by_age.sort_unstable();
        let n = (self.limits.max_bindings / 8).max(1);
        for (_, _, ip) in by_age.into_iter().take(n) {
            self.bindings.remove(&ip);
        }
        self.cap_hit(0, n as u64);
    }

    fn cap_hit(&self, which: usize, n: u64) {
        if let Some(m) = &self.metrics {
            m.caps[which].add(n);
        }
    }

    fn remember_forged(&mut self, ip: IpAddr, mac: Mac, now: u64) {
        if !self.forged.contains_key(&ip) && self.forged.len() >= self.limits.max_bindings.max(1) {
            let mut by_age: Vec<(u64, IpAddr)> = self.forged.iter().map(|(a, (_, t))| (*t, *a)).collect();
            by_age.sort_unstable();
            let n = (self.limits.max_bindings / 8).max(1);
            for (_, a) in by_age.into_iter().take(n) {
                self.forged.remove(&a);
            }
            self.cap_hit(3, n as u64);
        }
        self.forged.insert(ip, (mac, now));
    }

    fn spoofer_report(&mut self, mac: Mac, ip: IpAddr, forgery: Forgery, now: u64) -> Option<SpoofReport> {
        if !self.spoofers.contains_key(&mac) && self.spoofers.len() >= self.limits.max_spoofers.max(1) {
            // Forget the one reported longest ago; if it forges again it is reported (and contained) again.
            if let Some(old) = self.spoofers.iter().min_by_key(|(_, s)| s.last_report_ns).map(|(m, _)| *m) {
                self.spoofers.remove(&old);
                self.cap_hit(1, 1);
            }
        }
        let max = self.limits.max_forged_per_mac.max(1);
        let s = self.spoofers.entry(mac).or_insert(Spoofer { forged: Vec::new(), more: 0, last_report_ns: 0 });
        let new_addr = !s.forged.contains(&ip);
        let mut listed = false;
        if new_addr {
            if s.forged.len() < max {
                s.forged.push(ip);
                listed = true;
            } else {
                s.more += 1;
            }
        }
        let due = s.last_report_ns == 0 || now.saturating_sub(s.last_report_ns) >= REPORT_REFRESH_NS;
        if !(listed || due) {
            if new_addr && !listed {
                self.cap_hit(2, 1);
            }
            return None;
        }
        s.last_report_ns = now.max(1);
        Some(SpoofReport { mac, forged: ip, forgery, all_forged: s.forged.clone(), more: s.more })
    }

    /// Replaces the neighbour-table and lease bindings (a refresh): leases
    /// win, then neighbour entries; a neighbour entry naming another MAC
    /// while the bound one is active is kept out and counted, and one naming
    /// another MAC while it is silent, or a lease moving a held address to
    /// another MAC, is asked about before the binding follows (see the module
    /// doc). A neighbour entry overrides any first sighting, a lease one of
    /// a silent MAC.
    pub fn refresh(&mut self, neighbours: &[(IpAddr, Mac)], leases: &[(IpAddr, Mac)], now_ns: u64) {
        self.generation += 1;
        let g = self.generation;
        let can_probe = self.probing && self.lan_mac != [0; 6];
        // Silent holders' entries and held addresses' leases that name another MAC, to ask the LAN
        // about: (address, claimant, holder, the binding's trust if it follows).
        let mut flips: Vec<(IpAddr, Mac, Mac, Trust)> = Vec::new();
        for (trust, list) in [(Trust::Lease, leases), (Trust::Neighbour, neighbours)] {
            for (ip, mac) in list {
                if mac[0] & 1 == 1 || *mac == [0; 6] {
                    continue;
                }
                match self.bindings.get_mut(ip) {
                    Some(b) if b.mac == *mac => {
                        // Leases come first in a refresh: a neighbour entry agreeing with one keeps it a lease.
                        if b.generation == g {
                            b.trust = b.trust.max(trust);
                        } else {
                            b.trust = trust;
                            b.disputed = false;
                        }
                        b.generation = g;
                    }
                    Some(b) if b.generation == g => {
                        // A lease already settled this address in this refresh: the neighbour entry disagrees.
                        if trust == Trust::Neighbour {
                            b.disputed = true;
                        }
                    }
                    Some(b) => {
                        let active = b.last_seen_ns != 0 && now_ns.saturating_sub(b.last_seen_ns) <= ACTIVE_WINDOW_NS;
                        if trust == Trust::Neighbour && b.trust >= Trust::Neighbour && active {
                            // Gratuitous ARP while the bound device is talking: keep it, mark it.
                            if !b.disputed {
                                if let Some(m) = &self.metrics {
                                    m.flips.inc();
                                }
                                tracing::warn!(ip = %ip, bound = %mac_text(&b.mac), claimed = %mac_text(mac), "neighbour entry flipped to another MAC while the bound one is active: kept the binding, marked disputed");
                            }
                            b.disputed = true;
                            b.generation = g;
                        } else if trust == Trust::Neighbour && b.trust >= Trust::Neighbour && can_probe {
                            // The holder is silent: a handover, or ARP/NA claiming its address
                            // (a device between two reports answers for it all the same). Asked
                            // before the binding follows; meanwhile it vouches for nobody.
                            b.disputed = true;
                            b.generation = g;
                            flips.push((*ip, *mac, b.mac, trust));
                        } else if trust == Trust::Lease && can_probe && (b.trust >= Trust::Neighbour || active) {
                            // The lease moved off a held address: a handover, or a forged DHCP release
                            // (the victim's MAC as chaddr) and the attacker's request. Asked like a
                            // flipped entry, whether the holder is active or not; one that answered
                            // lately (active and disputed) keeps it without being asked again.
                            if !(b.disputed && active) {
                                flips.push((*ip, *mac, b.mac, trust));
                            }
                            b.disputed = true;
                            b.generation = g;
                        } else {
                            *b = Binding::new(*mac, trust, 0, g);
                        }
                    }
                    None => {
                        self.make_room_for_binding();
                        self.bindings.insert(*ip, Binding::new(*mac, trust, 0, g));
                    }
                }
            }
        }
        for (ip, claimant, holder, trust) in flips {
            // One question per address at a time; beyond MAX_PROBES the binding waits (disputed) for the next refresh.
            if self.conflicts.contains_key(&ip) || self.conflicts.len() >= MAX_PROBES {
                continue;
            }
            if let Some(p) = self.probe_for(ip) {
                self.conflicts.insert(
                    ip,
                    Conflict {
                        claimant,
                        holder,
                        started_ns: now_ns,
                        claimant_answered: false,
                        holder_answered: false,
                        other_answered: false,
                        flip: Some(trust),
                    },
                );
                self.probes_out.push(p);
            }
        }
        // Leases and neighbour entries that are gone fall back to first sightings.
        for b in self.bindings.values_mut() {
            if b.trust > Trust::FirstSeen && b.generation != g {
                b.trust = Trust::FirstSeen;
                b.disputed = false;
            }
        }
        // Forged addresses are forgotten after their memory.
        let keep = self.limits.forged_memory_ns;
        self.forged.retain(|_, (_, t)| now_ns.saturating_sub(*t) <= keep);
        if let Some(m) = &self.metrics {
            let mut n = [0usize; 3];
            for b in self.bindings.values() {
                n[b.trust as usize] += 1;
            }
            for (g, v) in m.bindings.iter().zip(n) {
                g.set(v as f64);
            }
        }
    }

    /// What the verdict gate knows about `ip` at `now_ns`.
    pub fn classify(&self, ip: &IpAddr, now_ns: u64) -> SourceClass {
        if let Some((mac, t)) = self.forged.get(ip) {
            if now_ns.saturating_sub(*t) <= self.limits.forged_memory_ns {
                return SourceClass::Forged(*mac);
            }
        }
        match self.bindings.get(ip) {
            Some(b)
                if b.trust >= Trust::Neighbour
                    && !b.disputed
                    && (b.rival_seen_ns == 0
                        || now_ns.saturating_sub(b.rival_seen_ns) > self.limits.forged_memory_ns) =>
            {
                SourceClass::LanVerified(b.mac)
            }
            Some(_) => SourceClass::LanUnverified,
            None if self.in_lan(ip) => SourceClass::LanUnverified,
            None => SourceClass::Wan,
        }
    }

    /// Bindings known (all sources).
    pub fn bindings(&self) -> usize {
        self.bindings.len()
    }

    /// The sources each MAC may still send from while contained: its lease
    /// and neighbour bindings (the same the verdict gate trusts, so a
    /// gratuitous ARP that flipped the kernel's entry while the bound device
    /// talks gives the flipper nothing), `0.0.0.0` for a MAC with an IPv4
    /// binding (DHCP; the kernel routes no other traffic from it), and the
    /// networks routed through a LAN next hop for that hop's MAC. A first
    /// sighting binds nothing: the attacker may have spoken first. Sources
    /// that are never a LAN host's own (outside the LAN, broadcast,
    /// multicast, the router's addresses) are left out whatever the
    /// neighbour table says, so no entry an attacker plants lets a forgery
    /// through. As bounded as the bindings (`enforce.max_bindings`), the
    /// routed pairs by [`MAX_ROUTED_SOURCES`].
    pub fn bound_sources(&self) -> BoundSources {
        let trusted = |b: &Binding| {
            b.trust >= Trust::Neighbour && !self.own_macs.contains(&b.mac) && b.mac[0] & 1 == 0 && b.mac != [0; 6]
        };
        let mut addrs = Vec::with_capacity(self.bindings.len() + 16);
        let mut dhcp = Vec::new();
        for (ip, b) in &self.bindings {
            if !trusted(b) || ip.is_unspecified() || self.own_addrs.binary_search(ip).is_ok() {
                continue;
            }
            let frame = SourceFrame { ts_ns: 0, src: *ip, proto: 0, sport: 0, dport: 0, dst_mac: [0; 6] };
            if self.implausible(&frame).is_some() {
                continue;
            }
            addrs.push((b.mac, *ip));
            if ip.is_ipv4() {
                dhcp.push(b.mac);
            }
        }
        dhcp.sort_unstable();
        dhcp.dedup();
        addrs.extend(dhcp.into_iter().map(|m| (m, IpAddr::from([0u8; 4]))));
        addrs.sort_unstable();
        addrs.dedup();
        let mut hops: Vec<Mac> = self
            .next_hops
            .iter()
            .filter_map(|hop| self.bindings.get(hop).filter(|b| trusted(b)).map(|b| b.mac))
            .collect();
        hops.sort_unstable();
        hops.dedup();
        let mut routed: Vec<(Mac, Cidr)> =
            hops.iter().flat_map(|m| self.routed.iter().map(move |c| (*m, *c))).take(MAX_ROUTED_SOURCES).collect();
        routed.sort_unstable();
        routed.dedup();
        BoundSources { addrs, routed }
    }
}

/// A dnsmasq lease file's active leases: `expiry mac ip hostname client-id`
/// per line (expiry 0 = infinite). Lines that do not parse are skipped.
pub fn parse_leases(text: &str, now_unix_s: u64) -> Vec<(IpAddr, Mac)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let expiry: u64 = f.next()?.parse().ok()?;
            let mac = parse_mac(f.next()?)?;
            let ip: IpAddr = f.next()?.parse().ok()?;
            (expiry == 0 || expiry > now_unix_s).then_some((ip, mac))
        })
        .collect()
}

/// Whether an address is link-local (169.254.0.0/16, fe80::/10).
fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_link_local(),
        IpAddr::V6(a) => (a.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// Whether a LAN network lies inside the link-local range.
fn is_link_local_net(c: &Cidr) -> bool {
    let range_prefix = if c.addr.is_ipv4() { 16 } else { 10 };
    c.prefix >= range_prefix && is_link_local(&c.addr)
}

pub use gatewarden_netlink::route::{lan_view, LanView};

pub use gatewarden_core::net::network;

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: Mac = [2, 0, 0, 0, 0x0a, 0x10];
    const ATK: Mac = [2, 0, 0, 0, 0x0a, 0x66];
    const S: u64 = 1_000_000_000;

    fn pkt(src: &str, ts: u64) -> SourceFrame {
        SourceFrame {
            ts_ns: ts,
            src: src.parse().unwrap(),
            proto: 6,
            sport: 40000,
            dport: 80,
            dst_mac: [2, 0, 0, 0, 0, 1],
        }
    }

    fn guard() -> SpoofGuard {
        let mut g = SpoofGuard::new(Limits::default(), Vec::new(), None);
        g.set_lan_prefixes(vec!["192.0.2.0/24".parse().unwrap(), "2001:db8:1::/64".parse().unwrap()]);
        g.set_own_macs(vec![[2, 0, 0, 0, 0, 1]]);
        g
    }

    #[test]
    fn implausible_sources_are_forged_and_dhcp_and_dad_are_not() {
        let mut g = guard();
        for (src, why) in [
            ("255.255.255.255", Forgery::Broadcast),
            ("192.0.2.255", Forgery::Broadcast),
            ("224.0.0.251", Forgery::Multicast),
            ("0.0.0.0", Forgery::Unspecified),
            ("198.51.100.7", Forgery::OutsideLan),
            ("ff02::1", Forgery::Multicast),
            ("::", Forgery::Unspecified),
            ("2001:db8:2::9", Forgery::OutsideLan),
        ] {
            let r = g.check(ATK, &pkt(src, S)).unwrap_or_else(|| panic!("{src} passed"));
            assert_eq!(r.forgery, why, "{src}");
            assert_eq!(g.classify(&src.parse().unwrap(), S), SourceClass::Forged(ATK));
        }
        let mut dhcp = pkt("0.0.0.0", S);
        (dhcp.proto, dhcp.sport, dhcp.dport) = (17, 68, 67);
        assert_eq!(g.check(DEV, &dhcp), None, "a DHCP client's discover");
        let mut dad = pkt("::", S);
        dad.proto = 58;
        assert_eq!(g.check(DEV, &dad), None, "duplicate address detection");
        for ok in ["192.0.2.10", "169.254.3.4", "fe80::1", "2001:db8:1::10"] {
            assert_eq!(g.check(DEV, &pkt(ok, S)), None, "{ok}");
        }
        // The router's own frames (forwarded replies from WAN addresses, to LAN devices) are not checked.
        let mut out = pkt("198.51.100.2", S);
        out.dst_mac = DEV;
        assert_eq!(g.check([2, 0, 0, 0, 0, 1], &out), None);
        // A LAN device claiming the router's own address forges it.
        g.set_own_addrs(vec!["192.0.2.1".parse().unwrap()], Some([2, 0, 0, 0, 0, 1]));
        let r = g.check(ATK, &pkt("192.0.2.1", S)).expect("the gateway's address, forged");
        assert_eq!(r.forgery, Forgery::OtherMac([2, 0, 0, 0, 0, 1]));
    }

    /// The QEMU cluster's router contained the monitor's MAC: its LAN view was
    /// read between `ip link set eth1 up` (a link-local address at once) and
    /// `ip addr add 192.0.2.1/24`, so every IPv4 source looked "outside the LAN"
    /// for the second until the next refresh. A family with no routable LAN
    /// network says nothing about its sources; neither does a link-local one.
    #[test]
    fn a_lan_with_only_a_link_local_network_of_a_family_accuses_no_source_of_that_family() {
        let mut g = SpoofGuard::new(Limits::default(), Vec::new(), None);
        g.set_lan_prefixes(vec!["fe80::/64".parse().unwrap()]);
        for src in ["192.0.2.3", "10.0.2.15", "2001:db8:1::10", "fd12:3456::7"] {
            assert_eq!(g.check(DEV, &pkt(src, S)), None, "{src}: the LAN interface is still being configured");
        }
        // An IPv4-only LAN: IPv6 devices' ULA (a Thread border router's) or
        // another router's SLAAC prefix are not the router's to judge.
        let mut g = SpoofGuard::new(Limits::default(), Vec::new(), None);
        g.set_lan_prefixes(vec!["192.0.2.0/24".parse().unwrap(), "fe80::/64".parse().unwrap()]);
        assert_eq!(g.check(DEV, &pkt("fd12:3456::7", S)), None);
        assert_eq!(g.check(DEV, &pkt("2001:db8:9::7", S)), None);
        let r = g.check(ATK, &pkt("198.51.100.7", S)).expect("an IPv4 source outside an IPv4 LAN");
        assert_eq!(r.forgery, Forgery::OutsideLan);
        // `lan_prefixes` from the config count as the family's LAN too.
        let mut g = SpoofGuard::new(Limits::default(), vec!["2001:db8:1::/64".parse().unwrap()], None);
        g.set_lan_prefixes(vec!["fe80::/64".parse().unwrap()]);
        assert_eq!(g.check(DEV, &pkt("2001:db8:1::10", S)), None);
        assert_eq!(g.check(DEV, &pkt("192.0.2.3", S)), None);
        let r = g.check(ATK, &pkt("2001:db8:2::9", S)).expect("an IPv6 source outside a configured IPv6 LAN");
        assert_eq!(r.forgery, Forgery::OutsideLan);
    }

    #[test]
    fn an_active_neighbour_binding_accuses_another_mac_a_first_sighting_never_does() {
        let mut g = guard();
        // First sighting by the attacker: no accusation of the device that speaks next.
        assert_eq!(g.check(ATK, &pkt("192.0.2.20", S)), None);
        assert_eq!(g.check(DEV, &pkt("192.0.2.20", 2 * S)), None);
        assert_eq!(g.classify(&"192.0.2.20".parse().unwrap(), 2 * S), SourceClass::LanUnverified);
        // The neighbour table knows the device; the device is talking.
        let dev: IpAddr = "192.0.2.10".parse().unwrap();
        g.refresh(&[(dev, DEV)], &[], S);
        assert_eq!(g.check(DEV, &pkt("192.0.2.10", 2 * S)), None);
        assert_eq!(g.classify(&dev, 2 * S), SourceClass::LanVerified(DEV));
        let r = g.check(ATK, &pkt("192.0.2.10", 3 * S)).expect("forged device address");
        assert_eq!(r.forgery, Forgery::OtherMac(DEV));
        assert_eq!(g.classify(&dev, 3 * S), SourceClass::Forged(ATK), "never block the forged address");
        // Gratuitous ARP from the attacker flips the kernel's entry: the binding stays, disputed.
        g.refresh(&[(dev, ATK)], &[], 4 * S);
        assert_eq!(g.bindings[&dev].mac, DEV);
        assert!(g.bindings[&dev].disputed);
        // A device silent past the active window no longer accuses: its address may be handed on.
        let mut g = guard();
        g.refresh(&[(dev, DEV)], &[], S);
        assert_eq!(g.check(ATK, &pkt("192.0.2.10", 2 * S)), None, "the bound MAC never spoke");
        g.refresh(&[(dev, ATK)], &[], 3 * S);
        assert_eq!(
            g.classify(&dev, 3 * S),
            SourceClass::LanVerified(ATK),
            "a silent device's entry follows the new MAC"
        );
    }

    /// The red team's finding, at the guard: one frame with a device's MAC
    /// and a WAN source is reported against that MAC (the containment and
    /// the alert name it and the forgery), and the containment used to drop
    /// every frame of the MAC. What it may still send from is what the
    /// router binds to it: its lease and neighbour addresses (with `0.0.0.0`
    /// for DHCP) and, for a next hop, the networks routed through it; never
    /// the forged source, a first sighting, or an entry an attacker planted.
    #[test]
    fn a_frame_forged_with_a_devices_mac_is_reported_and_its_own_sources_stay_bound() {
        let ip = |a: &str| -> IpAddr { a.parse().unwrap() };
        let mut g = guard();
        g.set_own_addrs(vec![ip("192.0.2.1")], Some([2, 0, 0, 0, 0, 1]));
        let (dev4, dev6, link) = (ip("192.0.2.10"), ip("2001:db8:1::10"), ip("fe80::10"));
        g.refresh(&[(dev4, DEV), (dev6, DEV), (link, DEV)], &[], S);
        let r = g.check(DEV, &pkt("198.51.100.7", 2 * S)).expect("a WAN source from the LAN is forged");
        assert_eq!((r.mac, r.forged, r.forgery), (DEV, ip("198.51.100.7"), Forgery::OutsideLan));
        assert_eq!(r.all_forged, vec![ip("198.51.100.7")]);
        let dhcp = ip("0.0.0.0");
        assert_eq!(g.bound_sources().addrs, vec![(DEV, dhcp), (DEV, dev4), (DEV, dev6), (DEV, link)]);

        // A first sighting binds nothing: a made-up MAC stays contained whole.
        assert_eq!(g.check(ATK, &pkt("192.0.2.66", 3 * S)), None);
        assert!(!g.bound_sources().addrs.iter().any(|(m, _)| *m == ATK));
        // Neighbour entries an attacker can plant bind nothing either: a flip of
        // the active device's entry, a WAN address, a broadcast, the router's own.
        assert_eq!(g.check(DEV, &pkt("192.0.2.10", 4 * S)), None);
        let planted = [(dev4, ATK), (ip("198.51.100.7"), ATK), (ip("192.0.2.255"), ATK), (ip("192.0.2.1"), ATK)];
        let neighbours: Vec<(IpAddr, Mac)> = planted.into_iter().chain([(dev6, DEV), (link, DEV)]).collect();
        g.refresh(&neighbours, &[(ip("192.0.2.30"), ATK)], 5 * S);
        let bound = g.bound_sources();
        assert!(bound.addrs.contains(&(DEV, dev4)), "the device keeps its disputed address: {bound:?}");
        assert_eq!(
            bound.addrs.iter().filter(|(m, _)| *m == ATK).collect::<Vec<_>>(),
            vec![&(ATK, dhcp), &(ATK, ip("192.0.2.30"))],
            "a lease binds its own address (and DHCP), nothing planted does"
        );
        // A LAN next hop's MAC also sends from the networks routed through it;
        // next hops elsewhere (the WAN gateway) bind nothing.
        let behind: Cidr = "10.9.0.0/16".parse().unwrap();
        let inside: Cidr = "10.9.1.0/24".parse().unwrap();
        g.set_routes(vec![inside, behind, inside], vec![dev4, ip("198.51.100.1")]);
        assert_eq!(g.bound_sources().routed, vec![(DEV, behind)], "no overlapping ranges (the kernel refuses them)");
    }

    /// Red team: the router's frames are captured too, so the check skipped
    /// every frame from an own MAC, and a LAN device that wrote the router's
    /// MAC (or the zero MAC, loopback's) as its Ethernet source was never
    /// checked: a WAN source went out uncontained, and a scan forged with a
    /// device's address under it had the device blocked (its address
    /// verified). The router never sends a frame to itself: from an own MAC
    /// to an own MAC is a LAN device's frame.
    #[test]
    fn a_frame_from_an_own_mac_to_the_router_is_checked_like_any_other() {
        let router: Mac = [2, 0, 0, 0, 0, 1];
        let dev: IpAddr = "192.0.2.10".parse().unwrap();
        for me in [router, [0; 6]] {
            let mut g = guard();
            g.set_own_macs(vec![[0; 6], router]);
            let (plug, plug_ip): (Mac, IpAddr) = ([2, 0, 0, 0, 0x0a, 0x11], "192.0.2.11".parse().unwrap());
            g.refresh(&[(dev, DEV), (plug_ip, plug)], &[], S);
            assert_eq!(g.check(DEV, &pkt("192.0.2.10", S)), None);
            assert_eq!(g.check(plug, &pkt("192.0.2.11", S)), None);
            let r = g.check(me, &pkt("198.51.100.7", 2 * S)).expect("a WAN source under an own MAC, to the router");
            assert_eq!((r.mac, r.forgery), (me, Forgery::OutsideLan));
            let r = g.check(me, &pkt("192.0.2.10", 2 * S)).expect("the active device's address under an own MAC");
            assert_eq!(r.forgery, Forgery::OtherMac(DEV));
            assert_eq!(g.classify(&dev, 2 * S), SourceClass::Forged(me), "never block the device for it");
            // A broadcast from a LAN address under an own MAC came in too: the router sends from its own.
            let mut f = pkt("192.0.2.11", 3 * S);
            f.dst_mac = [0xff; 6];
            let r = g.check(me, &f).expect("a LAN device's address broadcast under an own MAC");
            assert_eq!(r.forgery, Forgery::OtherMac(plug));
            // What the router sends is its own: to a LAN device, a frame whose destination is not
            // known, a group from its own or a WAN address (a forwarded stream).
            g.set_own_addrs(vec!["192.0.2.1".parse().unwrap()], Some(router));
            for (src, to) in [
                ("198.51.100.8", DEV),
                ("192.0.2.33", DEV),
                ("198.51.100.8", [0; 6]),
                ("198.51.100.8", [0xff; 6]),
                ("198.51.100.8", [0x01, 0, 0x5e, 0, 0, 0xfb]),
                ("192.0.2.1", [0xff; 6]),
            ] {
                let mut f = pkt(src, 3 * S);
                f.dst_mac = to;
                assert_eq!(g.check(router, &f), None, "{src} to {}", mac_text(&to));
            }
            // An own MAC never binds a source a containment lets through.
            assert!(!g.bound_sources().addrs.iter().any(|(m, _)| *m == me));
        }
    }

    /// Red team: an idle device's neighbour entry flipped by another MAC's
    /// ARP or NA claiming its address (an ARP request to the router
    /// overwrites the entry). The binding followed the flip, since the
    /// device was silent: the address vouched for the attacker (a scan from
    /// it blocked the device's address without proof), and the device's
    /// next frames were the newcomer's, so the attacker answering the probe
    /// got the device contained and cut off. A silent holder's flip is now
    /// asked about first: the device answers for its address and keeps it.
    #[test]
    fn a_silent_devices_entry_flipped_to_another_mac_is_probed_before_the_binding_follows() {
        // IPv4 (ARP) and IPv6 (an unsolicited NA with the override flag) alike.
        for addr in ["192.0.2.10", "2001:db8:1::10"] {
            let dev: IpAddr = addr.parse().unwrap();
            let mut g = probing_guard();
            g.refresh(&[(dev, DEV)], &[], S);
            assert_eq!(g.classify(&dev, S), SourceClass::LanVerified(DEV));
            // The device is silent; the attacker's claim flips the kernel's entry.
            g.refresh(&[(dev, ATK)], &[], 2 * S);
            assert_eq!(
                g.classify(&dev, 2 * S),
                SourceClass::LanUnverified,
                "a flip nobody confirmed vouches for the claimant (a verdict on it blocks the device)"
            );
            let probes = g.take_probes();
            assert_eq!(
                probes.iter().map(|p| p.target).collect::<Vec<_>>(),
                vec![dev],
                "{addr}: the LAN is asked who has it"
            );
            // The attacker uses the address meanwhile: the holder is silent, nobody is accused.
            assert_eq!(g.check(ATK, &pkt(addr, 2 * S + 1000)), None);
            // Both answer: the device is alive and keeps its binding; a flip reports nobody.
            g.saw_answer(ATK, dev);
            g.saw_answer(DEV, dev);
            assert!(g.judge_probes(2 * S + 2000).is_empty(), "a flip is never a report against anyone");
            assert_eq!(g.bindings[&dev].mac, DEV);
            assert_eq!(g.classify(&dev, 3 * S), SourceClass::LanUnverified, "disputed");
            // The entry still names the attacker; the device answered a moment ago: kept, not asked again.
            g.refresh(&[(dev, ATK)], &[], 3 * S);
            assert!(g.take_probes().is_empty());
            assert_eq!(g.bindings[&dev].mac, DEV);
            // The attacker keeps using the address: now the newcomer, and the device answers: forged.
            assert_eq!(g.check(ATK, &pkt(addr, 4 * S)), None);
            assert_eq!(g.take_probes().len(), 1);
            g.saw_answer(ATK, dev);
            g.saw_answer(DEV, dev);
            let r = g.judge_probes(4 * S + 1000);
            assert_eq!(r.iter().map(|r| (r.mac, r.forgery)).collect::<Vec<_>>(), vec![(ATK, Forgery::OtherMac(DEV))]);
            // The device's frames are its own, and a containment lets its address through, not the attacker's.
            assert_eq!(g.check(DEV, &pkt(addr, 5 * S)), None);
            let bound = g.bound_sources().addrs;
            assert!(bound.contains(&(DEV, dev)) && !bound.contains(&(ATK, dev)), "{bound:?}");

            // A handover: the old device is gone and does not answer; the binding follows after the wait.
            let mut g = probing_guard();
            g.refresh(&[(dev, DEV)], &[], S);
            g.refresh(&[(dev, ATK)], &[], 2 * S);
            assert_eq!(g.take_probes().len(), 1);
            g.saw_answer(ATK, dev);
            assert!(g.judge_probes(2 * S + PROBE_WAIT_NS - 1).is_empty());
            assert_eq!(g.bindings[&dev].mac, DEV, "judged only after the wait");
            assert!(g.judge_probes(2 * S + PROBE_WAIT_NS).is_empty());
            assert_eq!(g.classify(&dev, 3 * S), SourceClass::LanVerified(ATK), "the address was handed on");
            // A third MAC answering proves nothing: the binding stays and vouches for nobody.
            let mut g = probing_guard();
            g.refresh(&[(dev, DEV)], &[], S);
            g.refresh(&[(dev, ATK)], &[], 2 * S);
            g.saw_answer([2, 0, 0, 0, 0x0b, 0x0b], dev);
            assert!(g.judge_probes(2 * S + PROBE_WAIT_NS).is_empty());
            assert_eq!(g.bindings[&dev].mac, DEV);
            assert_eq!(g.classify(&dev, 3 * S), SourceClass::LanUnverified);
        }
    }

    fn probing_guard() -> SpoofGuard {
        let mut g = guard();
        g.set_own_addrs(vec!["192.0.2.1".parse().unwrap(), "fe80::1".parse().unwrap()], Some([2, 0, 0, 0, 0, 1]));
        g.enable_probing();
        g
    }

    /// A phone roaming from the main access point to a MAC-NAT extender
    /// arrives with the extender's MAC while its own MAC was active seconds
    /// ago. Judged on the frame, the extender (and everyone behind it) was
    /// contained; the router now asks who has the address, and only the
    /// extender answers.
    #[test]
    fn a_conflict_is_probed_and_only_the_newcomer_answering_is_a_handover() {
        let ext: Mac = [2, 0, 0, 0, 0x0e, 0x0e];
        for (phone, net) in [("192.0.2.10", "v4"), ("2001:db8:1::10", "v6")] {
            let ip: IpAddr = phone.parse().unwrap();
            let mut g = probing_guard();
            g.refresh(&[(ip, DEV)], &[], S);
            assert_eq!(g.check(DEV, &pkt(phone, S)), None);
            // The extender's first frame with the phone's address: no accusation, a probe.
            assert_eq!(g.check(ext, &pkt(phone, 2 * S)), None, "{net}: judged before asking");
            let probes = g.take_probes();
            assert_eq!(probes.len(), 1, "{net}");
            assert_eq!(probes[0].target, ip);
            assert_eq!(probes[0].from_mac, [2, 0, 0, 0, 0, 1]);
            assert_eq!(g.classify(&ip, 2 * S), SourceClass::LanUnverified, "{net}: vouches for nobody while probed");
            // More frames while the probe runs: no second probe, no accusation.
            assert_eq!(g.check(ext, &pkt(phone, 2 * S + 1000)), None);
            assert!(g.take_probes().is_empty());
            g.saw_answer(ext, ip);
            assert!(g.judge_probes(2 * S + 1000).is_empty(), "{net}: judged before its wait");
            assert!(g.judge_probes(2 * S + PROBE_WAIT_NS).is_empty(), "{net}: a handover contains nobody");
            assert_eq!(g.classify(&ip, 3 * S), SourceClass::LanVerified(ext), "{net}: the binding moved");
            assert_eq!(g.check(ext, &pkt(phone, 3 * S)), None);
            // The phone's own MAC again (it roamed back) is the newcomer now, and is probed in turn.
            assert_eq!(g.check(DEV, &pkt(phone, 4 * S)), None);
            assert_eq!(g.take_probes().len(), 1);
        }
    }

    #[test]
    fn a_conflict_the_holder_answers_or_nobody_answers_is_a_forgery() {
        let dev: IpAddr = "192.0.2.10".parse().unwrap();
        let setup = || {
            let mut g = probing_guard();
            g.refresh(&[(dev, DEV)], &[], S);
            assert_eq!(g.check(DEV, &pkt("192.0.2.10", S)), None);
            assert_eq!(g.check(ATK, &pkt("192.0.2.10", 2 * S)), None);
            assert_eq!(g.take_probes().len(), 1);
            g
        };
        // The holder answers: forged at once, without waiting; the attacker's answer changes nothing.
        let mut g = setup();
        g.saw_answer(ATK, dev);
        g.saw_answer(DEV, dev);
        let r = g.judge_probes(2 * S + 1000);
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].mac, r[0].forgery), (ATK, Forgery::OtherMac(DEV)));
        assert_eq!(g.classify(&dev, 2 * S + 1000), SourceClass::Forged(ATK));
        // Now a proven forger: its next conflict is judged on the frame.
        g.refresh(&[(dev, DEV), ("192.0.2.11".parse().unwrap(), DEV)], &[], 3 * S);
        assert_eq!(g.check(DEV, &pkt("192.0.2.11", 3 * S)), None);
        assert!(g.check(ATK, &pkt("192.0.2.11", 3 * S)).is_some(), "a proven forger is not probed again");
        // The holder keeps sending with its address while the attacker does: forged.
        let mut g = setup();
        assert_eq!(g.check(DEV, &pkt("192.0.2.10", 2 * S + 10)), None);
        assert_eq!(g.judge_probes(2 * S + 20).len(), 1);
        // Nobody answers (a forger does not answer for the address it forges): forged after the wait.
        let mut g = setup();
        assert!(g.judge_probes(2 * S + PROBE_WAIT_NS - 1).is_empty());
        let r = g.judge_probes(2 * S + PROBE_WAIT_NS);
        assert_eq!(r.len(), 1, "unanswered");
        assert_eq!(g.classify(&dev, 3 * S), SourceClass::Forged(ATK));
        // A third MAC answering proves nothing: nobody contained, no handover, the address unverified.
        let mut g = setup();
        g.saw_answer(ATK, dev);
        g.saw_answer([2, 0, 0, 0, 0x0b, 0x0b], dev);
        assert!(g.judge_probes(2 * S + PROBE_WAIT_NS).is_empty(), "an attacker's third-MAC answer contains nobody");
        assert_eq!(g.classify(&dev, 3 * S), SourceClass::LanUnverified);
        assert_eq!(g.bindings[&dev].mac, DEV, "and moves nothing");
        // Without a probe to send (the capture cannot send), a conflict is judged on the frame, as before.
        let mut g = guard();
        g.refresh(&[(dev, DEV)], &[], S);
        assert_eq!(g.check(DEV, &pkt("192.0.2.10", S)), None);
        assert!(g.check(ATK, &pkt("192.0.2.10", 2 * S)).is_some());
    }

    #[test]
    fn at_most_max_probes_conflicts_are_probed_at_once() {
        let mut g = probing_guard();
        g.set_lan_prefixes(vec!["10.0.0.0/8".parse().unwrap()]);
        let n = MAX_PROBES as u32 + 10;
        let ips: Vec<IpAddr> = (0..n).map(|i| IpAddr::from((0x0a00_0100 + i).to_be_bytes())).collect();
        let bound: Vec<(IpAddr, Mac)> = ips.iter().map(|ip| (*ip, DEV)).collect();
        g.refresh(&bound, &[], S);
        let mut forged_now = 0;
        for (i, ip) in ips.iter().enumerate() {
            let mut p = pkt("10.0.0.1", S);
            p.src = *ip;
            assert_eq!(g.check(DEV, &p), None);
            p.ts_ns = 2 * S;
            // A different attacker MAC each, so none is a proven forger yet.
            forged_now += g.check([2, 1, 0, 0, 0, i as u8], &p).is_some() as usize;
        }
        assert_eq!(g.take_probes().len(), MAX_PROBES);
        assert_eq!(forged_now, n as usize - MAX_PROBES, "beyond the cap, judged on the frame");
        assert_eq!(g.judge_probes(2 * S + PROBE_WAIT_NS).len(), MAX_PROBES);
        assert!(!g.probing_now());
    }

    #[test]
    fn probe_frames_are_an_arp_request_and_a_checksummed_neighbour_solicitation() {
        let me: Mac = [2, 0, 0, 0, 0, 1];
        let arp = NeighbourProbe {
            target: "192.0.2.10".parse().unwrap(),
            from_mac: me,
            from_ip: Some("192.0.2.1".parse().unwrap()),
        }
        .frame();
        assert_eq!(arp.len(), 60);
        assert_eq!(&arp[0..6], &[0xff; 6]);
        assert_eq!(&arp[6..12], &me);
        assert_eq!(&arp[12..22], &[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1], "ethertype and an ARP request header");
        assert_eq!(&arp[22..28], &me);
        assert_eq!(&arp[28..32], &[192, 0, 2, 1]);
        assert_eq!(&arp[38..42], &[192, 0, 2, 10]);
        let probe = NeighbourProbe { target: "192.0.2.10".parse().unwrap(), from_mac: me, from_ip: None }.frame();
        assert_eq!(&probe[28..32], &[0; 4], "RFC 5227 probe without a LAN address");
        for from in ["fe80::1", "::"] {
            let from_ip: Option<IpAddr> = (from != "::").then(|| from.parse().unwrap());
            let ns = NeighbourProbe { target: "2001:db8:1::1:2:3".parse().unwrap(), from_mac: me, from_ip }.frame();
            assert_eq!(&ns[0..6], &[0x33, 0x33, 0xff, 0x02, 0x00, 0x03], "{from}: solicited-node group MAC");
            assert_eq!(&ns[12..14], &[0x86, 0xdd]);
            let payload = u16::from_be_bytes([ns[18], ns[19]]) as usize;
            assert_eq!(ns.len(), 54 + payload, "{from}");
            assert_eq!((ns[20], ns[21]), (58, 255), "ICMPv6, hop limit 255");
            assert_eq!(&ns[38..54], &"ff02::1:ff02:3".parse::<std::net::Ipv6Addr>().unwrap().octets());
            assert_eq!(ns[54], 135);
            assert_eq!(&ns[62..78], &"2001:db8:1::1:2:3".parse::<std::net::Ipv6Addr>().unwrap().octets());
            let src: [u8; 16] = ns[22..38].try_into().unwrap();
            let dst: [u8; 16] = ns[38..54].try_into().unwrap();
            assert_eq!(icmpv6_checksum(&src, &dst, &ns[54..]), 0, "{from}: the checksum verifies");
            assert_eq!(payload, if from == "::" { 24 } else { 32 }, "a source link-layer option only with a source");
        }
    }

    /// A smart plug reports every few minutes; between reports the attacker
    /// floods UDP with the plug's address. The plug is silent, so nothing
    /// proves the attacker is not the plug's new owner and it is not accused,
    /// but the plug's binding must not vouch for traffic another MAC sent:
    /// a verdict against that address needs proof, or the plug is blocked
    /// for the attacker's flood.
    #[test]
    fn another_macs_frames_with_a_silent_devices_address_take_its_vouching_away() {
        let mut g = guard();
        let plug: IpAddr = "192.0.2.10".parse().unwrap();
        g.refresh(&[(plug, DEV)], &[], S);
        assert_eq!(g.classify(&plug, S), SourceClass::LanVerified(DEV));
        let mut udp = pkt("192.0.2.10", 2 * S);
        udp.proto = 17;
        assert_eq!(g.check(ATK, &udp), None, "a silent holder's address: no accusation");
        assert_eq!(g.classify(&plug, 2 * S), SourceClass::LanUnverified, "the binding no longer vouches");
        // The neighbour table still names the plug a second later: that does not vouch either.
        g.refresh(&[(plug, DEV)], &[], 3 * S);
        assert_eq!(g.classify(&plug, 3 * S), SourceClass::LanUnverified);
        // The plug reports: now both MACs use the address, and the attacker's next frame is forged.
        assert_eq!(g.check(DEV, &pkt("192.0.2.10", 4 * S)), None);
        let r = g.check(ATK, &pkt("192.0.2.10", 5 * S)).expect("forged while the plug is active");
        assert_eq!(r.forgery, Forgery::OtherMac(DEV));
        assert_eq!(g.classify(&plug, 5 * S), SourceClass::Forged(ATK));
        // Long after the rival went quiet the plug's binding vouches again.
        let later = 5 * S + Limits::default().forged_memory_ns + S;
        g.refresh(&[(plug, DEV)], &[], later);
        assert_eq!(g.classify(&plug, later), SourceClass::LanVerified(DEV));
        // A handover (the address now the new device's in the neighbour table) binds the new MAC, vouched for.
        let mut g = guard();
        g.refresh(&[(plug, DEV)], &[], S);
        assert_eq!(g.check(ATK, &pkt("192.0.2.10", 2 * S)), None);
        g.refresh(&[(plug, ATK)], &[], 3 * S);
        assert_eq!(g.classify(&plug, 3 * S), SourceClass::LanVerified(ATK), "the address was handed on");
    }

    /// Red team: DHCP RELEASE and REQUEST are unauthenticated. An attacker
    /// sends a DHCPRELEASE with an active device's MAC as chaddr, then asks
    /// for the device's address with its own MAC, and dnsmasq moves the
    /// lease. The binding followed the lease file at once: the address
    /// vouched for the attacker, the device's own frames with it were the
    /// newcomer's, and the attacker answering the router's probe as holder
    /// got the device contained (its traffic dropped, the address bound to
    /// the attacker). A lease that moves a held address is now asked about
    /// like a flipped neighbour entry: the device answers and keeps it.
    #[test]
    fn a_lease_moved_to_another_mac_by_a_forged_release_neither_contains_nor_cuts_off_the_device() {
        for addr in ["192.0.2.10", "2001:db8:1::10"] {
            let dev: IpAddr = addr.parse().unwrap();
            // The release may be seen on its own first (the lease gone), with or without the device's neighbour entry.
            for (case, released) in
                [("moved", None), ("released, entry kept", Some(true)), ("released, no entry", Some(false))]
            {
                let what = format!("{addr}, {case}");
                let mut g = probing_guard();
                g.refresh(&[], &[(dev, DEV)], S);
                assert_eq!(g.check(DEV, &pkt(addr, S + 1000)), None);
                assert_eq!(g.classify(&dev, S), SourceClass::LanVerified(DEV));
                if let Some(entry) = released {
                    let n: Vec<(IpAddr, Mac)> = if entry { vec![(dev, DEV)] } else { Vec::new() };
                    g.refresh(&n, &[], S + S / 2);
                    assert_eq!(g.check(DEV, &pkt(addr, S + S / 2 + 1000)), None, "{what}");
                }
                // The lease file now gives the device's address to the attacker.
                g.refresh(&[], &[(dev, ATK)], 2 * S);
                assert_ne!(
                    g.classify(&dev, 2 * S),
                    SourceClass::LanVerified(ATK),
                    "{what}: a lease moved off an active device vouched for the attacker"
                );
                // Both send with the address; the router asks who has it; both answer.
                assert_eq!(g.check(ATK, &pkt(addr, 2 * S + 1000)), None, "{what}");
                assert_eq!(g.check(DEV, &pkt(addr, 2 * S + 2000)), None, "{what}: the device's own frame");
                assert_eq!(g.take_probes().iter().map(|p| p.target).collect::<Vec<_>>(), vec![dev], "{what}");
                g.saw_answer(ATK, dev);
                g.saw_answer(DEV, dev);
                let r = g.judge_probes(2 * S + PROBE_WAIT_NS);
                assert!(
                    !r.iter().any(|r| r.mac == DEV),
                    "{what}: the device was contained for its own address: {:?}",
                    r.iter().map(|r| (mac_text(&r.mac), r.forgery)).collect::<Vec<_>>()
                );
                assert!(r.is_empty(), "{what}: the lease's move reports nobody");
                assert_eq!(g.bindings[&dev].mac, DEV, "{what}: the device answered and keeps its address");
                assert_ne!(g.classify(&dev, 3 * S), SourceClass::LanVerified(ATK), "{what}");
                // The device's frames stay its own; the lease still names the attacker: kept, not asked again.
                assert_eq!(g.check(DEV, &pkt(addr, 3 * S)), None, "{what}");
                g.refresh(&[], &[(dev, ATK)], 3 * S + 1000);
                assert!(g.take_probes().is_empty(), "{what}");
                assert_eq!(g.bindings[&dev].mac, DEV, "{what}");
                if released != Some(false) {
                    let bound = g.bound_sources().addrs;
                    assert!(bound.contains(&(DEV, dev)) && !bound.contains(&(ATK, dev)), "{what}: {bound:?}");
                    // The attacker keeps using the address: now a newcomer against an active holder, forged.
                    assert_eq!(g.check(ATK, &pkt(addr, 4 * S)), None);
                    assert_eq!(g.take_probes().len(), 1);
                    g.saw_answer(ATK, dev);
                    g.saw_answer(DEV, dev);
                    let r = g.judge_probes(4 * S + 1000);
                    assert_eq!(
                        r.iter().map(|r| (r.mac, r.forgery)).collect::<Vec<_>>(),
                        vec![(ATK, Forgery::OtherMac(DEV))],
                        "{what}"
                    );
                }
            }

            // A real handover: the old device is gone and does not answer; the lease is followed after the wait.
            let mut g = probing_guard();
            g.refresh(&[], &[(dev, DEV)], S);
            assert_eq!(g.check(DEV, &pkt(addr, S)), None);
            g.refresh(&[], &[(dev, ATK)], 2 * S);
            assert_eq!(g.take_probes().len(), 1);
            g.saw_answer(ATK, dev);
            assert!(g.judge_probes(2 * S + PROBE_WAIT_NS - 1).is_empty());
            assert_eq!(g.bindings[&dev].mac, DEV, "judged only after the wait");
            assert!(g.judge_probes(2 * S + PROBE_WAIT_NS).is_empty());
            assert_eq!(g.classify(&dev, 3 * S), SourceClass::LanVerified(ATK), "{addr}: the address was handed on");
            assert_eq!(g.bindings[&dev].trust, Trust::Lease);
            g.refresh(&[], &[(dev, ATK)], 3 * S);
            assert!(g.take_probes().is_empty());
            assert_eq!(g.classify(&dev, 3 * S), SourceClass::LanVerified(ATK));
            // A lease for an address nobody held binds at once.
            let mut g = probing_guard();
            g.refresh(&[], &[(dev, ATK)], S);
            assert!(g.take_probes().is_empty());
            assert_eq!(g.classify(&dev, S), SourceClass::LanVerified(ATK));
        }
    }

    #[test]
    fn a_lease_outranks_the_neighbour_table() {
        let mut g = guard();
        let ip: IpAddr = "192.0.2.30".parse().unwrap();
        g.refresh(&[(ip, ATK)], &[(ip, DEV)], S);
        assert_eq!(g.classify(&ip, S), SourceClass::LanUnverified, "the kernel disagrees with the lease: disputed");
        // A MAC-NAT repeater sends its clients' frames with its own MAC, so a
        // leased address from another MAC while the holder is silent is not
        // accused (it would cut off everyone behind the repeater); it vouches
        // for nobody. Once the holder speaks, the other MAC is forged.
        assert_eq!(g.check(ATK, &pkt("192.0.2.30", 2 * S)), None, "a silent lease holder accuses nobody");
        assert_eq!(g.classify(&ip, 2 * S), SourceClass::LanUnverified);
        g.refresh(&[(ip, DEV)], &[(ip, DEV)], 3 * S);
        assert_eq!(g.classify(&ip, 3 * S), SourceClass::LanUnverified, "another MAC sent with it lately");
        assert_eq!(g.check(DEV, &pkt("192.0.2.30", 4 * S)), None);
        let r = g.check(ATK, &pkt("192.0.2.30", 5 * S)).expect("an active lease holder's rival is forged");
        assert_eq!(r.forgery, Forgery::OtherMac(DEV));
        let leases = parse_leases(
            "1700000000 02:00:00:00:0a:10 192.0.2.30 plug *\n0 02:00:00:00:0a:11 192.0.2.31 cam 01:02\nbad line\n100 02:00:00:00:0a:12 192.0.2.32 old *\n",
            1_000,
        );
        assert_eq!(leases, vec![(ip, DEV), ("192.0.2.31".parse().unwrap(), [2, 0, 0, 0, 0x0a, 0x11])]);
    }

    #[test]
    fn every_table_is_bounded_and_reports_come_once_per_new_address() {
        let limits = Limits { max_bindings: 64, max_spoofers: 4, max_forged_per_mac: 3, forged_memory_ns: 10 * S };
        let mut g = SpoofGuard::new(limits, Vec::new(), None);
        g.set_lan_prefixes(vec!["10.0.0.0/8".parse().unwrap()]);
        for i in 0..1000u32 {
            let ip = IpAddr::from((0x0a00_0000 + i).to_be_bytes());
            let mut p = pkt("10.0.0.1", S + i as u64);
            p.src = ip;
            g.check([2, 0, 0, 0, (i >> 8) as u8, i as u8], &p);
            assert!(g.bindings.len() <= 64);
        }
        let mut reports = 0;
        for i in 0..100u32 {
            let mac = [2, 1, 0, 0, 0, (i % 10) as u8];
            let mut p = pkt("198.51.100.1", 2 * S);
            p.src = IpAddr::from((0xc633_6400 + i).to_be_bytes());
            reports += g.check(mac, &p).is_some() as u32;
            assert!(g.spoofers.len() <= 4 && g.spoofers.values().all(|s| s.forged.len() <= 3));
            assert!(g.forged.len() <= 64);
        }
        assert!((10..=100).contains(&reports), "{reports}");
        // The same address again is not reported again within the refresh interval.
        let mut g = guard();
        assert!(g.check(ATK, &pkt("224.0.0.251", S)).is_some());
        assert!(g.check(ATK, &pkt("224.0.0.251", 2 * S)).is_none());
        let again = g.check(ATK, &pkt("224.0.0.251", S + REPORT_REFRESH_NS)).expect("refresh");
        assert_eq!(again.all_forged, vec!["224.0.0.251".parse::<IpAddr>().unwrap()]);
        // Forged addresses are forgotten after their memory.
        g.refresh(&[], &[], S + Limits::default().forged_memory_ns + REPORT_REFRESH_NS + 1);
        assert!(g.forged.is_empty());
    }

    #[test]
    fn a_containment_reason_lists_what_fits_and_reads_back() {
        let few: Vec<IpAddr> =
            ["192.0.2.10", "255.255.255.255", "0.0.0.0"].iter().map(|a| a.parse().unwrap()).collect();
        let r = contain_reason(&few, 0);
        assert_eq!(r, "spoofing: forged 192.0.2.10, 255.255.255.255, 0.0.0.0");
        assert_eq!(forged_in_reason(&r), vec!["192.0.2.10", "255.255.255.255", "0.0.0.0"]);
        let many: Vec<IpAddr> = (0..16u16).map(|i| IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0xffff, i])).collect();
        let r = contain_reason(&many, 40);
        assert!(r.len() <= MAX_CONTAIN_REASON, "{} bytes: {r}", r.len());
        let listed = forged_in_reason(&r);
        assert!(!listed.is_empty() && listed.len() < 16, "{r}");
        assert!(r.ends_with(&format!(" +{} more", 56 - listed.len())), "{r}");
        assert!(forged_in_reason("blocked by admin").is_empty());
    }

    #[test]
    fn macs_and_networks_parse() {
        assert_eq!(parse_mac("02:00:00:00:0a:66"), Some(ATK));
        assert_eq!(parse_mac("02-00-00-00-0A-66"), Some(ATK));
        assert_eq!(parse_mac("02:00:00:00:0a"), None);
        assert_eq!(parse_mac("02:00:00:00:0a:66:01"), None);
        assert_eq!(mac_text(&ATK), "02:00:00:00:0a:66");
        assert_eq!(network("192.0.2.77".parse().unwrap(), 24).to_string(), "192.0.2.0/24");
        assert_eq!(network("2001:db8:1::9".parse().unwrap(), 64).to_string(), "2001:db8:1::/64");
        assert_eq!(network("10.1.2.3".parse().unwrap(), 0).to_string(), "0.0.0.0/0");
    }
}
