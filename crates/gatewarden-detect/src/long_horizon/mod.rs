//! Detection over minutes and hours, and across many sources (issue #17):
//! slow scans ([`slow_scan`]), distributed scans ([`distributed_scan`]) and
//! slow password guessing ([`slow_guessing`]), all fed from one
//! [`SourceHistory`].
//!
//! # From flow records to probes
//! Flow records are cumulative snapshots, re-sent each batch in which the flow
//! changed (see [`crate::heuristics`]). [`LongHorizon`] turns them into
//! *probes* — one per flow, counted once — and decides whether each was
//! answered:
//! - **answered**: TCP with a SYN-ACK (the handshake completed or was aborted
//!   after it: an open port), UDP or ICMP echo with any reply;
//! - **unanswered**: TCP refused (RST to the SYN, `REJ`) or given up (`RSTOS0`,
//!   `SH`), or still without a reply [`ANSWER_WAIT_NS`] after its first packet
//!   (the router does not re-send a flow that does not change, so [`LongHorizon::tick`]
//!   settles those). A SYN-ACK in the next batch is within that wait.
//! - A probe to a service (source, host, port, protocol) that answered this
//!   source within the day ([`ANSWERED_MEMORY_MIN`]) counts as answered even
//!   when this one was not: a device reconnecting after a WAN outage, retrying
//!   a known server or polling a device switched off for the night is not
//!   probing (a 2 MiB keyed table of 16-bit minute stamps, which wrap after 45
//!   days; a collision can only make a probe count as answered; each source adds
//!   at most [`ANSWERED_STAMPS_PER_HOUR`] services to it an hour).
//! - ICMP is no probe, echo requests included: a ping has no port, so a
//!   monitor pinging devices that are off would be a sweep of hosts by the
//!   repetition test (the records carry the opening ICMP type as `sport`).
//!
//! Multicast, broadcast and unspecified destinations are not probes (mDNS,
//! SSDP, DHCP), nor are ICMP messages other than echo requests, nor TCP flows
//! whose SYN was not seen (midstream after a restart, asymmetric routes).
//!
//! State is bounded: at most [`MAX_PENDING`] flows wait for their answer (when
//! full, the oldest is settled as unanswered early), flow ids already counted
//! are kept in a direct-mapped table of [`COUNTED_CELLS`] ids (a collision can
//! only count a re-sent flow again).

pub mod distributed_scan;
pub mod slow_guessing;
pub mod slow_scan;

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::net::IpAddr;

use foldhash::fast::{FixedState, RandomState};
use gatewarden_core::lru::LruMap;
use gatewarden_flow::ConnState;
use gatewarden_proto::messages::{FlowRecord, Proto};

use crate::config::DetectorConfig;
use crate::heuristics::Detection;
use crate::source_history::{SourceHistory, SourceHistoryConfig, Window};

type HashMap<K, V> = std::collections::HashMap<K, V, RandomState>;

/// How long a probe may wait for its answer before it counts as unanswered, ns:
/// a SYN-ACK or a UDP reply takes a round trip (milliseconds); nmap itself gives
/// up on a probe after about a second at -T2 and below.
pub const ANSWER_WAIT_NS: u64 = 3_000_000_000;
/// Most flows waiting for their answer at once: 5 400 new unanswered flows a second for the
/// 3 s wait (a flood beyond that has its oldest settled early, as unanswered). ~1.3 MB.
pub const MAX_PENDING: usize = 16_384;
/// Cells of the table of flow ids already counted (a power of two).
pub const COUNTED_CELLS: usize = 1 << 16;
/// Cells of the table of services that answered a source (a power of two; 2 bytes each).
const PEER_CELLS: usize = 1 << 20;
/// How long a service that answered a source keeps its sweeps of that service's port
/// from counting it ([`LongHorizon::answered_within_day`]), minutes: a day, so a monitor
/// keeps knowing the devices that are switched off for the night.
pub const ANSWERED_MEMORY_MIN: u32 = 24 * 60;

/// First bytes of a saved table of answered services ([`LongHorizon::save_answered`]).
const ANSWERED_MAGIC: &[u8; 8] = b"GWANS01\n";
/// Size of a saved table: the magic, the seed, the cells.
pub const ANSWERED_FILE_BYTES: usize = 8 + 8 + 2 * PEER_CELLS;

/// Services one source (an IPv4 address, or an IPv6 /64: its privacy addresses are one
/// device) may add to the table of services that answered, per hour. The table is shared
/// by every source and has no fingerprint (a collision only makes a probe count as
/// answered), so one source filling it would make unanswered probes look answered for
/// everyone: a scan missed. At this budget one source holds at most 24 × 4 096 ≈ 98 000 of
/// the 2^20 cells over the day (9 %); a BitTorrent DHT node meets ~10 000 peers an hour,
/// so the rest of its peers are simply not remembered (their retries count as probes).
pub const ANSWERED_STAMPS_PER_HOUR: u32 = 4096;
/// Sources whose hourly budget is tracked (least recently stamping forgotten first: it
/// then starts a fresh budget, which needs more real, answered sources than this).
const STAMP_BUDGET_SOURCES: usize = 4096;

/// The thresholds the long-horizon detectors use, from `[detector]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LongHorizonConfig {
    /// `detector.slow_scan_distinct_ports` (0: off).
    pub slow_scan_ports: u32,
    /// `detector.slow_scan_distinct_hosts` (0: off).
    pub slow_scan_hosts: u32,
    /// `detector.window_s` in ns: scans found within it are the fast detector's.
    pub fast_window_ns: u64,
    /// `detector.scan_distinct_ports`: the fast port-scan rule's count in `fast_window_ns`.
    pub fast_ports: u32,
    /// `detector.sweep_distinct_hosts`: the fast sweep rule's count in `fast_window_ns`.
    pub fast_hosts: u32,
    /// `detector.distributed_scan_sources` (0: off).
    pub distributed_sources: u32,
    /// `detector.slow_guess_sessions` (0: off).
    pub slow_guess_sessions: u32,
    /// How long a fast finding that blocks keeps the slow rules off its source, ns: half
    /// `detector.block_ttl_s` (the block of a finding under 0.9 confidence), at least a
    /// minute. Once its block is gone, the same attack gone slow is theirs again.
    pub block_cover_ns: u64,
}

impl From<&DetectorConfig> for LongHorizonConfig {
    fn from(d: &DetectorConfig) -> Self {
        LongHorizonConfig {
            slow_scan_ports: d.slow_scan_distinct_ports,
            slow_scan_hosts: d.slow_scan_distinct_hosts,
            fast_window_ns: d.window_s.saturating_mul(1_000_000_000),
            fast_ports: d.scan_distinct_ports,
            fast_hosts: d.sweep_distinct_hosts,
            distributed_sources: d.distributed_scan_sources,
            slow_guess_sessions: d.slow_guess_sessions,
            block_cover_ns: (d.block_ttl_s / 2).max(60).saturating_mul(1_000_000_000),
        }
    }
}

/// One probe, settled: a flow counted once, answered or not.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Probe {
    /// Who sent it.
    pub src: IpAddr,
    /// Where to.
    pub dst: IpAddr,
    /// Destination port (0 for ICMP echo).
    pub dport: u16,
    /// Protocol.
    pub proto: Proto,
    /// Capture time of its first packet, ns.
    pub ts_ns: u64,
    /// The flow.
    pub flow_id: u64,
    /// Whether a service answered (see the module documentation).
    pub answered: bool,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    src: IpAddr,
    dst: IpAddr,
    dport: u16,
    proto: Proto,
    first_ns: u64,
}

/// The long-horizon detectors and the history they share.
pub struct LongHorizon {
    cfg: LongHorizonConfig,
    history: SourceHistory,
    pending: HashMap<u64, Pending>,
    /// (deadline, flow id), oldest first; entries of flows settled since are skipped.
    queue: VecDeque<(u64, u64)>,
    /// Flow ids (plus one) already counted as probes, direct-mapped.
    counted: Box<[u64]>,
    /// Flow ids (plus one) whose login session was already recorded, direct-mapped.
    logins_done: Box<[u64]>,
    /// Minute stamps of services that answered a source.
    peers: Box<[u16]>,
    /// Seed of `peer_hasher`, saved with `peers` ([`LongHorizon::save_answered`]): the cells
    /// mean nothing under another seed.
    peer_seed: u64,
    /// Keys the cells of `peers` (random per table, so nobody can aim at one cell).
    peer_hasher: FixedState,
    /// Per source key (IPv4 address, IPv6 /64): the hour and the services it added to `peers` in it.
    stamp_budget: LruMap<IpAddr, (u32, u32)>,
    /// Answered services not remembered because their source had used its hour's budget.
    answered_refused: u64,
    hasher: RandomState,
    now_ns: u64,
    slow_scan: slow_scan::SlowScan,
    distributed: distributed_scan::DistributedScan,
    guessing: slow_guessing::SlowGuessing,
}

impl std::fmt::Debug for LongHorizon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LongHorizon")
            .field("cfg", &self.cfg)
            .field("sources", &self.history.len())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

/// Minute of `ts_ns` as a nonzero 16-bit stamp (0 = empty); wraps after 65 535 minutes.
fn minute_stamp(ts_ns: u64) -> u16 {
    ((ts_ns / 60_000_000_000) % 65_535) as u16 + 1
}

fn stamp_age(now: u16, s: u16) -> u32 {
    if s == 0 {
        u32::MAX
    } else {
        (u32::from(now) + 65_535 - u32::from(s)) % 65_535
    }
}

/// Whether `dst` can be probed at all (unicast, specified).
fn probeable(dst: IpAddr) -> bool {
    match dst {
        IpAddr::V4(a) => !(a.is_multicast() || a.is_broadcast() || a.is_unspecified() || a.octets()[3] == 255),
        IpAddr::V6(a) => !(a.is_multicast() || a.is_unspecified()),
    }
}

impl LongHorizon {
    /// The detectors with their thresholds from `[detector]` and the default history size
    /// (100 000 sources in ~31 MB, docs/PERFORMANCE.md).
    pub fn new(d: &DetectorConfig) -> LongHorizon {
        let history = SourceHistory::new(SourceHistoryConfig::default()).expect("the default history size is valid");
        Self::with_history(d, history)
    }

    /// The same over a given history (tests and benchmarks pass a seeded one).
    pub fn with_history(d: &DetectorConfig, history: SourceHistory) -> LongHorizon {
        let peer_seed = RandomState::default().hash_one(0x9ee5_u64);
        LongHorizon {
            cfg: LongHorizonConfig::from(d),
            history,
            pending: HashMap::default(),
            queue: VecDeque::new(),
            counted: vec![0; COUNTED_CELLS].into_boxed_slice(),
            logins_done: vec![0; COUNTED_CELLS].into_boxed_slice(),
            peers: vec![0; PEER_CELLS].into_boxed_slice(),
            peer_seed,
            peer_hasher: FixedState::with_seed(peer_seed),
            stamp_budget: LruMap::new(STAMP_BUDGET_SOURCES),
            answered_refused: 0,
            hasher: RandomState::default(),
            now_ns: 0,
            slow_scan: slow_scan::SlowScan::default(),
            distributed: distributed_scan::DistributedScan::default(),
            guessing: slow_guessing::SlowGuessing::default(),
        }
    }

    /// New thresholds from the settings page; nothing learned is lost.
    pub fn set_config(&mut self, d: &DetectorConfig) {
        self.cfg = LongHorizonConfig::from(d);
    }

    /// The shared history (for tests, benchmarks and the dashboard).
    pub fn history(&self) -> &SourceHistory {
        &self.history
    }

    /// Bytes held beyond the history's own (pending flows, the id and peer tables, the detectors).
    pub fn memory_bytes(&self) -> usize {
        self.history.memory_bytes()
            + self.pending.capacity() * (std::mem::size_of::<(u64, Pending)>() + 1)
            + self.queue.capacity() * 16
            + (self.counted.len() + self.logins_done.len()) * 8
            + self.peers.len() * 2
            + self.stamp_budget.len() * LruMap::<IpAddr, (u32, u32)>::bytes_per_entry()
            + self.distributed.memory_bytes()
            + self.slow_scan.memory_bytes()
    }

    /// Distinct hosts `src`'s unanswered probes reached over the hour as of `now_ns`, on
    /// every port: what a narrow sweep's exemption is bounded by
    /// (`ResponseConfig::narrow_partly_answered_sweep`). 0 when it is not tracked (yet: a
    /// probe is counted once its answer wait is over); None when the count is only a lower
    /// bound (a source kept out of the protected segment has exact lists of a few hosts),
    /// which must not pass for a small one.
    pub fn silent_hosts_hour(&self, src: IpAddr, now_ns: u64) -> Option<u32> {
        match self.history.stats(src, Window::Hour, now_ns) {
            Some(s) if s.lower_bound => None,
            s => Some(s.map_or(0, |s| s.distinct_hosts)),
        }
    }

    /// A finding of the fast detectors (heuristics): the slow detectors leave
    /// that source alone for the hour rather than report the same attack twice;
    /// `narrow`: a narrow sweep alerted for its answered hosts, which leaves the
    /// slow scan rule free to report the sweep once it is wide (see
    /// [`slow_scan::SlowScan::note_finding`]).
    pub fn note_finding(&mut self, d: &Detection, narrow: bool) {
        self.slow_scan.note_finding(d, narrow, self.cfg.block_cover_ns);
        self.guessing.note_finding(d);
    }

    /// The sources that took part in the distributed scan of `target`, as last reported
    /// (every tracked participant, not only the ones its reason names).
    pub fn participants(&self, target: IpAddr) -> Vec<IpAddr> {
        self.distributed.participants(target)
    }

    /// Whether `dst`'s `dport` (over `proto`) answered `src` within [`ANSWERED_MEMORY_MIN`]
    /// of `now_ns`: for `host_sweep`, whose own list of a source's answered peers holds 64
    /// (a monitor checking 70 devices on two services went round it every minute, and the
    /// devices switched off at night became a sweep). From its table of 2²⁰ keyed minute
    /// stamps; a collision can only make a host count as known, never a known one unknown.
    pub fn answered_within_day(&self, src: IpAddr, dst: IpAddr, dport: u16, proto: Proto, now_ns: u64) -> bool {
        self.answered_lately(self.peer_cell(src, dst, dport, proto), minute_stamp(now_ns.max(self.now_ns)))
    }

    /// Whether cell `pc` was stamped within [`ANSWERED_MEMORY_MIN`] of minute stamp `now_stamp`.
    fn answered_lately(&self, pc: usize, now_stamp: u16) -> bool {
        stamp_age(now_stamp, self.peers[pc]) <= ANSWERED_MEMORY_MIN
    }

    /// Answered services not remembered so far because their source had added
    /// [`ANSWERED_STAMPS_PER_HOUR`] already (for the metrics: a steady count is a source
    /// trying to fill the table, or a very busy peer-to-peer client).
    pub fn answered_refused(&self) -> u64 {
        self.answered_refused
    }

    /// Records that `src` answered at `pc`, within its hour's budget of new cells: a cell
    /// already stamped within the day is refreshed (it adds nothing an attacker could use).
    fn remember_answered(&mut self, src: IpAddr, pc: usize, now_stamp: u16, now_ns: u64) {
        if self.answered_lately(pc, now_stamp) {
            self.peers[pc] = now_stamp;
            return;
        }
        let key = match src {
            IpAddr::V4(_) => src,
            IpAddr::V6(_) => gatewarden_core::net::network(src, 64).addr,
        };
        let hour = (now_ns / 3_600_000_000_000) as u32;
        let b = self.stamp_budget.get_or_insert_with(key, || (hour, 0));
        if b.0 != hour {
            *b = (hour, 0);
        }
        if b.1 >= ANSWERED_STAMPS_PER_HOUR {
            self.answered_refused += 1;
            return;
        }
        b.1 += 1;
        self.peers[pc] = now_stamp;
    }

    fn cell(&self, table_len: usize, id: u64) -> usize {
        self.hasher.hash_one(id) as usize & (table_len - 1)
    }

    fn peer_cell(&self, src: IpAddr, dst: IpAddr, dport: u16, proto: Proto) -> usize {
        self.peer_hasher.hash_one((src, dst, dport, proto)) as usize & (PEER_CELLS - 1)
    }

    /// The table of services that answered, with its seed, as bytes to keep across a
    /// restart: without it, after a restart at night a monitor polling devices that are
    /// off was a sweep (`host_sweep`) and a slow scan, since none of them had answered
    /// within the day *of this process*. [`ANSWERED_FILE_BYTES`] bytes.
    pub fn save_answered(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ANSWERED_FILE_BYTES);
        out.extend_from_slice(ANSWERED_MAGIC);
        out.extend_from_slice(&self.peer_seed.to_le_bytes());
        for c in self.peers.iter() {
            out.extend_from_slice(&c.to_le_bytes());
        }
        out
    }

    /// Takes back a table [`LongHorizon::save_answered`] wrote. Anything else (another
    /// size, another format) is refused with the reason and changes nothing. A damaged
    /// cell can only make a service count as answered (a missed probe, never a block).
    pub fn restore_answered(&mut self, bytes: &[u8]) -> Result<(), String> {
        if bytes.len() != ANSWERED_FILE_BYTES || !bytes.starts_with(ANSWERED_MAGIC) {
            return Err(format!(
                "not a table of answered services ({} bytes; this version writes {ANSWERED_FILE_BYTES} starting with {:?})",
                bytes.len(),
                String::from_utf8_lossy(ANSWERED_MAGIC)
            ));
        }
        let (seed, cells) = bytes[ANSWERED_MAGIC.len()..].split_at(8);
        self.peer_seed = u64::from_le_bytes(seed.try_into().expect("8 bytes"));
        self.peer_hasher = FixedState::with_seed(self.peer_seed);
        for (c, b) in self.peers.iter_mut().zip(cells.chunks_exact(2)) {
            *c = u16::from_le_bytes([b[0], b[1]]);
        }
        Ok(())
    }

    /// Looks at one flow snapshot; returns findings it completes.
    pub fn observe(&mut self, r: &FlowRecord) -> Vec<Detection> {
        let mut out = Vec::new();
        self.now_ns = self.now_ns.max(r.last_ns);
        self.login(r, &mut out);
        // ICMP is no probe, echo requests included (their records carry the type since
        // session 28): a ping has no port, so the repetition test of `slow_scan` always
        // passes, and a monitor pinging devices that are off (after a restart, whose memory
        // of answered services is gone, or over a weekend) became a slow scan of hosts.
        if !matches!(r.proto, Proto::Tcp | Proto::Udp) || !probeable(r.dst) {
            return out;
        }
        // TCP without the originator's SYN (midstream, or only the responder seen) is no attempt.
        if r.proto == Proto::Tcp && matches!(r.conn_state, ConnState::OTH | ConnState::RSTRH | ConnState::SHR) {
            return out;
        }
        let c = self.cell(COUNTED_CELLS, r.flow_id);
        if self.counted[c] == r.flow_id.wrapping_add(1) {
            return out;
        }
        let answered = match r.proto {
            Proto::Tcp => r.rev_packets > 0 && !r.conn_state.is_failed_attempt(),
            _ => r.rev_packets > 0,
        };
        let refused = r.proto == Proto::Tcp
            && matches!(r.conn_state, ConnState::REJ | ConnState::RSTOS0 | ConnState::SH)
            && !answered;
        if answered || refused || r.last_ns >= r.first_ns.saturating_add(ANSWER_WAIT_NS) {
            self.pending.remove(&r.flow_id);
            let p = Probe {
                src: r.src,
                dst: r.dst,
                dport: r.dport,
                proto: r.proto,
                ts_ns: r.first_ns,
                flow_id: r.flow_id,
                answered,
            };
            self.settle(p, &mut out);
            return out;
        }
        if !self.pending.contains_key(&r.flow_id) {
            if self.pending.len() >= MAX_PENDING {
                // Full: settle the oldest now, as unanswered (a flood; its answer would be late anyway).
                while let Some((_, id)) = self.queue.pop_front() {
                    if let Some(p) = self.pending.remove(&id) {
                        self.settle_pending(id, p, &mut out);
                        break;
                    }
                }
            }
            let dport = r.dport;
            self.pending
                .insert(r.flow_id, Pending { src: r.src, dst: r.dst, dport, proto: r.proto, first_ns: r.first_ns });
            // In deadline order: a newcomer's record held until its source came back
            // (`crate::newcomer_records`) is older than the probes queued since.
            let deadline = r.first_ns.saturating_add(ANSWER_WAIT_NS);
            if self.queue.back().is_none_or(|&(d, _)| d <= deadline) {
                self.queue.push_back((deadline, r.flow_id));
            } else {
                let at = self.queue.partition_point(|&(d, _)| d <= deadline);
                self.queue.insert(at, (deadline, r.flow_id));
            }
        }
        out
    }

    /// Settles probes whose answer did not come in time and reports what the
    /// passing of time completes (a slow-scan candidate that lasted past the fast window).
    pub fn tick(&mut self, now: u64) -> Vec<Detection> {
        let mut out = Vec::new();
        self.now_ns = self.now_ns.max(now);
        let now = self.now_ns;
        while let Some(&(deadline, id)) = self.queue.front() {
            if deadline > now {
                break;
            }
            self.queue.pop_front();
            if let Some(p) = self.pending.remove(&id) {
                self.settle_pending(id, p, &mut out);
            }
        }
        // Stale queue records (flows settled by a later snapshot) are dropped as they reach
        // the front; compact when they pile up behind a far deadline.
        if self.queue.len() > 2 * MAX_PENDING {
            let pending = &self.pending;
            self.queue.retain(|(_, id)| pending.contains_key(id));
        }
        out.extend(self.slow_scan.tick(&self.history, &self.cfg, now));
        self.distributed.tick(now);
        out
    }

    fn settle_pending(&mut self, id: u64, p: Pending, out: &mut Vec<Detection>) {
        let probe = Probe {
            src: p.src,
            dst: p.dst,
            dport: p.dport,
            proto: p.proto,
            ts_ns: p.first_ns,
            flow_id: id,
            answered: false,
        };
        self.settle(probe, out);
    }

    /// Counts one probe once, in the history and the detectors.
    fn settle(&mut self, mut p: Probe, out: &mut Vec<Detection>) {
        let c = self.cell(COUNTED_CELLS, p.flow_id);
        self.counted[c] = p.flow_id.wrapping_add(1);
        let pc = self.peer_cell(p.src, p.dst, p.dport, p.proto);
        let now_stamp = minute_stamp(self.now_ns.max(p.ts_ns));
        if p.answered {
            self.remember_answered(p.src, pc, now_stamp, self.now_ns.max(p.ts_ns));
        } else if self.answered_lately(pc, now_stamp) {
            // A service that answered this source within the day: a retry, not a probe (within
            // the hour only, a monitor polling devices switched off for the night became a slow
            // scan of hosts an hour after they went quiet).
            p.answered = true;
        }
        self.history.observe(p.src, p.dst, p.dport, p.proto, p.answered, p.ts_ns);
        if !p.answered {
            self.slow_scan.on_unanswered(&self.history, &self.cfg, &p, self.now_ns);
            if let Some(d) = self.distributed.on_unanswered(&self.cfg, &p, self.now_ns) {
                out.push(d);
            }
        }
        // An IPv6 source's /64 is one more source for the slow-scan rule: a scanner taking a
        // fresh address of its /64 for every probe is seen by no per-address count.
        if let Some(key) = self.slow_scan.prefix_key(p.src) {
            self.history.observe(key, p.dst, p.dport, p.proto, p.answered, p.ts_ns);
            if !p.answered {
                let q = Probe { src: key, ..p };
                self.slow_scan.on_unanswered(&self.history, &self.cfg, &q, self.now_ns);
            }
        }
    }

    /// Records the end (or the lasting) of a session to a login service.
    fn login(&mut self, r: &FlowRecord, out: &mut Vec<Detection>) {
        let Some(outcome) = slow_guessing::session_outcome(r) else {
            return;
        };
        let c = self.cell(COUNTED_CELLS, r.flow_id);
        if self.logins_done[c] == r.flow_id.wrapping_add(1) {
            return;
        }
        self.logins_done[c] = r.flow_id.wrapping_add(1);
        let failed = outcome == slow_guessing::Outcome::Failed;
        self.history.login_session(r.src, failed, r.last_ns);
        if let Some(d) = self.guessing.on_session(&self.history, &self.cfg, r, failed) {
            out.push(d);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use gatewarden_proto::messages::{AttackKind, FlowRecord};

    pub(crate) const T0: u64 = 1_796_000_000 * 1_000_000_000;
    pub(crate) const SEC: u64 = 1_000_000_000;

    pub(crate) fn horizon() -> LongHorizon {
        let h = SourceHistory::with_seed(SourceHistoryConfig::default(), 7).unwrap();
        LongHorizon::with_history(&DetectorConfig::default(), h)
    }

    /// A flow snapshot: `rev` packets back, in `state`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn rec(
        id: u64,
        src: &str,
        dst: &str,
        dport: u16,
        proto: Proto,
        first_ns: u64,
        last_ns: u64,
        fwd: (u32, u64),
        rev: (u32, u64),
        state: &str,
    ) -> FlowRecord {
        FlowRecord {
            flow_id: id,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            sport: 40000 + (id % 20000) as u16,
            dport,
            proto,
            first_ns,
            last_ns,
            fwd_packets: fwd.0,
            rev_packets: rev.0,
            fwd_bytes: fwd.1,
            rev_bytes: rev.1,
            conn_state: ConnState::parse(state).unwrap(),
            src_answered: false,
        }
    }

    /// Each flow counts once however often it is re-sent, and a SYN whose SYN-ACK shows up in
    /// the next snapshot is answered; one still without a reply after the wait is not.
    #[test]
    fn each_flow_is_one_probe_answered_or_not() {
        let mut h = horizon();
        let src = "192.0.2.7";
        // Answered in the second snapshot.
        h.observe(&rec(1, src, "198.51.100.10", 443, Proto::Tcp, T0, T0, (1, 60), (0, 0), "S0"));
        h.observe(&rec(1, src, "198.51.100.10", 443, Proto::Tcp, T0, T0 + SEC / 10, (2, 112), (1, 60), "S1"));
        // Never answered: settled by tick after the wait.
        h.observe(&rec(2, src, "198.51.100.11", 8080, Proto::Tcp, T0, T0, (1, 60), (0, 0), "S0"));
        h.tick(T0 + 2 * SEC);
        let ip: IpAddr = src.parse().unwrap();
        assert_eq!(h.history.hour_probes(ip, T0 + 2 * SEC), Some((1, 0)));
        h.tick(T0 + 4 * SEC);
        // Refused at once (RST).
        h.observe(&rec(3, src, "198.51.100.12", 23, Proto::Tcp, T0 + 4 * SEC, T0 + 4 * SEC, (1, 60), (1, 40), "REJ"));
        h.observe(&rec(3, src, "198.51.100.12", 23, Proto::Tcp, T0 + 4 * SEC, T0 + 4 * SEC, (1, 60), (1, 40), "REJ"));
        // A retransmitted SYN re-sends flow 2: still one probe.
        h.observe(&rec(2, src, "198.51.100.11", 8080, Proto::Tcp, T0, T0 + 4 * SEC, (2, 120), (0, 0), "S0"));
        // The answered flow's last snapshot: no second probe.
        h.observe(&rec(1, src, "198.51.100.10", 443, Proto::Tcp, T0, T0 + 5 * SEC, (20, 3000), (30, 40_000), "SF"));
        // Multicast is no probe, nor is a TCP flow seen midstream (one way, no SYN).
        h.observe(&rec(4, src, "224.0.0.251", 5353, Proto::Udp, T0, T0 + 4 * SEC, (1, 80), (0, 0), "S0"));
        h.observe(&rec(5, src, "198.51.100.13", 443, Proto::Tcp, T0, T0 + 4 * SEC, (9, 900), (0, 0), "OTH"));
        h.tick(T0 + 9 * SEC);
        assert_eq!(h.history.hour_probes(ip, T0 + 9 * SEC), Some((3, 2)));
    }

    /// A device retrying a server that answered it before (a WAN outage) is not probing.
    #[test]
    fn retries_to_a_service_that_answered_are_answered() {
        let mut h = horizon();
        let src = "192.0.2.50";
        h.observe(&rec(1, src, "198.51.100.10", 1883, Proto::Tcp, T0, T0 + SEC, (5, 400), (4, 300), "SF"));
        for i in 0..40u64 {
            let t = T0 + 30 * SEC + i * SEC;
            h.observe(&rec(100 + i, src, "198.51.100.10", 1883, Proto::Tcp, t, t, (1, 60), (0, 0), "S0"));
            h.tick(t);
        }
        h.tick(T0 + 200 * SEC);
        let ip: IpAddr = src.parse().unwrap();
        assert_eq!(h.history.hour_probes(ip, T0 + 200 * SEC), Some((41, 0)));
    }

    /// One source filling the shared table of services that answered: a LAN device opening
    /// answered connections to 1.2 M services (its own WAN server answering on every port of
    /// many addresses) stamped most of the 2^20 cells, after which most never-contacted
    /// services counted as answered *for every source*: another source's slow sweep of 40
    /// hosts lost most of its unanswered probes and was missed, and `host_sweep`'s day
    /// memory said "answered" of hosts that never were. A source (an IPv4 address, an IPv6
    /// /64) now adds at most [`ANSWERED_STAMPS_PER_HOUR`] services an hour.
    #[test]
    fn one_source_cannot_fill_the_table_of_answered_services_for_everyone() {
        let mut h = horizon();
        let mut out = Vec::new();
        let filler: IpAddr = "192.0.2.99".parse().unwrap();
        let filler6: IpAddr = "2001:db8:1:2::99".parse().unwrap();
        for i in 0..1_200_000u64 {
            let t = T0 + i * 2_000_000; // 500 a second, 40 minutes
                                        // The IPv6 half rotates through its /64 (privacy addresses): one budget all the same.
            let (src, dst) = if i % 2 == 0 {
                (filler, IpAddr::from([198, 18, (i >> 16) as u8 & 0x1, (i >> 8) as u8]))
            } else {
                let IpAddr::V6(f6) = filler6 else { unreachable!() };
                let a = std::net::Ipv6Addr::from(u128::from(f6) | u128::from(i as u16));
                let d = std::net::Ipv6Addr::from(0x2001_0db8_00ff_0000_0000_0000_0000_0000u128 | u128::from(i >> 8));
                (IpAddr::V6(a), IpAddr::V6(d))
            };
            let p = Probe {
                src,
                dst,
                dport: 1 + (i % 60_000) as u16,
                proto: Proto::Tcp,
                ts_ns: t,
                flow_id: i + 1,
                answered: true,
            };
            h.now_ns = t;
            h.settle(p, &mut out);
        }
        let t = T0 + 2_400 * SEC;
        // How much of the table now answers for services nobody ever contacted?
        let known = (0..10_000u32)
            .filter(|&i| {
                let dst = IpAddr::from([203, 0, 113, (i % 250) as u8]);
                h.answered_within_day("192.0.2.5".parse().unwrap(), dst, (i / 250) as u16 + 2000, Proto::Tcp, t)
            })
            .count();
        assert!(known < 500, "{known} of 10 000 never-contacted services count as answered");
        assert!(h.answered_refused() > 1_000_000, "refused {}", h.answered_refused());
        // And another source's slow sweep is found.
        let mut found = Vec::new();
        for i in 0..40u64 {
            let ts = t + i * 5 * SEC;
            let dst = format!("198.51.100.{}", 20 + i);
            found.extend(h.observe(&rec(
                2_000_000 + i,
                "192.0.2.66",
                &dst,
                23,
                Proto::Tcp,
                ts,
                ts,
                (1, 60),
                (0, 0),
                "S0",
            )));
            found.extend(h.tick(ts));
        }
        found.extend(h.tick(t + 400 * SEC));
        assert!(found.iter().any(|d| d.kind == AttackKind::SlowScan), "the slow sweep was missed: {found:?}");
    }

    /// A LAN device scanning from a fresh IPv6 address of its /64 for every probe (SLAAC lets
    /// it use any): each address sends one probe, so no per-source rule ever counted more than
    /// one, and distributed_scan needs two per participant. The /64 is now one more source in
    /// the history: the scan is found, named by its prefix, and alerted (no one address to block).
    /// A sweeper kept out of the protected segment (here 2 slots, held by two sources with
    /// more evidence; 1 024 by default) keeps exact lists of only a few hosts: its hour
    /// said 6 silent hosts whatever it swept, and a narrow sweep's hour bound passed it
    /// (second review of session 29). A count that is only a lower bound is no count.
    #[test]
    fn an_unprotected_sweepers_silent_hosts_are_no_bound() {
        let cfg = SourceHistoryConfig { max_sources: 64, max_protected: 2, promote_unanswered: 3 };
        let mut h = LongHorizon::with_history(&DetectorConfig::default(), SourceHistory::with_seed(cfg, 7).unwrap());
        let mut id = 0;
        for d in ["198.18.0.1", "198.18.0.2"] {
            for k in 0..300u64 {
                id += 1;
                let dst = format!("203.0.113.{}", k % 250);
                h.observe(&rec(id, d, &dst, 1000 + k as u16, Proto::Tcp, T0, T0, (1, 60), (1, 40), "REJ"));
            }
        }
        let src: IpAddr = "192.0.2.66".parse().unwrap();
        for k in 0..200u64 {
            id += 1;
            let t = T0 + k * SEC / 2;
            let dst = format!("10.0.{}.{}", k / 250, k % 250 + 1);
            h.observe(&rec(id, "192.0.2.66", &dst, 23, Proto::Tcp, t, t, (1, 60), (1, 40), "REJ"));
        }
        let now = T0 + 100 * SEC;
        assert!(!h.history().is_protected(src), "the test's premise");
        assert_eq!(h.silent_hosts_hour(src, now), None);
        // A protected source's count is one.
        assert!(h.silent_hosts_hour("198.18.0.1".parse().unwrap(), now).is_some_and(|n| n >= 200));
    }

    #[test]
    fn a_scan_from_a_fresh_ipv6_address_per_probe_is_found_as_its_64() {
        let mut h = horizon();
        let mut found = Vec::new();
        let mut t = T0;
        for i in 0..60u64 {
            let src =
                format!("2001:db8:1:2:{:x}:{:x}:{:x}:{:x}", 0x1000 + i, i * 7919 % 65536, i * 104_729 % 65536, 1 + i);
            let r = rec(i + 1, &src, "2001:db8:99::10", 2000 + i as u16, Proto::Tcp, t, t, (1, 80), (1, 60), "REJ");
            found.extend(h.observe(&r));
            found.extend(h.tick(t));
            t += 2 * SEC;
        }
        found.extend(h.tick(t + 20 * SEC));
        let d = found.first().expect("the rotating scan was not found");
        assert_eq!(d.kind, AttackKind::SlowScan);
        assert_eq!(d.source, Some("2001:db8:1:2::".parse().unwrap()), "{}", d.reason);
        assert!(d.reason.contains("2001:db8:1:2::/64"), "{}", d.reason);
        assert!(d.evidence.iter().any(|(k, v)| k == "ipv6_prefix_len" && *v == 64.0), "{:?}", d.evidence);
        let decision = crate::response::ResponsePolicy::default().decide(d, &[crate::fusion::Origin::Heuristics]);
        assert_eq!(decision.action, crate::response::Action::Alert, "{decision:?}");
        assert_eq!(decision.rule.as_str(), "ipv6_prefix_alerts");
        // Reported again each minute while it lasts, always as the /64.
        assert!(found.iter().all(|f| f.source == d.source), "{found:?}");
    }

    /// The same scan from one IPv6 address is found under that address (blocked as before);
    /// its /64 may be alerted beside it, never blocked.
    #[test]
    fn a_scan_from_one_ipv6_address_is_blocked_under_that_address_and_its_64_only_alerted() {
        let mut h = horizon();
        let mut found = Vec::new();
        let mut t = T0;
        for i in 0..60u64 {
            let r = rec(
                i + 1,
                "2001:db8:1:2::66",
                "2001:db8:99::10",
                2000 + i as u16,
                Proto::Tcp,
                t,
                t,
                (1, 80),
                (1, 60),
                "REJ",
            );
            found.extend(h.observe(&r));
            found.extend(h.tick(t));
            t += 2 * SEC;
        }
        for k in 0..70u64 {
            found.extend(h.tick(t + k * SEC));
        }
        let policy = crate::response::ResponsePolicy::default();
        let addr: IpAddr = "2001:db8:1:2::66".parse().unwrap();
        assert!(found.iter().any(|d| d.source == Some(addr)), "{found:?}");
        for d in &found {
            let action = policy.decide(d, &[crate::fusion::Origin::Heuristics]).action;
            let want =
                if d.source == Some(addr) { crate::response::Action::Block } else { crate::response::Action::Alert };
            assert_eq!(action, want, "{d:?}");
            assert!(d.source == Some(addr) || d.source == Some("2001:db8:1:2::".parse().unwrap()), "{d:?}");
        }
    }

    /// A finding for one address of a /64 (even an alert-only one, which an attacker can
    /// provoke on purpose) does not hide a rotating scan of that /64 (review of session 28:
    /// covering the /64 for the hour did).
    #[test]
    fn a_finding_for_one_address_does_not_hide_the_rotating_scan_of_its_64() {
        let mut h = horizon();
        h.note_finding(
            &Detection {
                source: Some("2001:db8:1:2::77".parse().unwrap()),
                target: None,
                port: 0,
                proto: Some(Proto::Tcp),
                kind: AttackKind::PortScan,
                confidence: 0.7,
                reason: String::new(),
                evidence: vec![("unanswered_pct".into(), 10.0)],
                ts_ns: T0,
                flow_id: 1,
            },
            false,
        );
        let mut found = Vec::new();
        let mut t = T0 + SEC;
        for i in 0..60u64 {
            let src = format!("2001:db8:1:2:{:x}::{:x}", 0x1000 + i, 1 + i);
            let r = rec(i + 1, &src, "2001:db8:99::10", 2000 + i as u16, Proto::Tcp, t, t, (1, 80), (1, 60), "REJ");
            found.extend(h.observe(&r));
            found.extend(h.tick(t));
            t += 2 * SEC;
        }
        found.extend(h.tick(t + 20 * SEC));
        assert!(found.iter().any(|d| d.source == Some("2001:db8:1:2::".parse().unwrap())), "{found:?}");
    }

    /// Twenty IPv6 devices of one /64 browsing for an hour (5 % of connections failing) add up
    /// to no scan of the /64.
    #[test]
    fn devices_sharing_a_64_browsing_are_not_a_scan_of_it() {
        let mut h = horizon();
        let mut found = Vec::new();
        let mut id = 0u64;
        for s in 0..360u64 {
            let t = T0 + s * 10 * SEC;
            for dev in 0..20u64 {
                let src = format!("2001:db8:1:2::{:x}", 0x100 + dev);
                for k in 0..4u64 {
                    id += 1;
                    let host = format!("2001:db8:{:x}::{:x}", 0x200 + (s * 4 + k + dev) % 300, 1 + dev);
                    let fail = id % 20 == 0;
                    let (rev, st) = if fail { ((0, 0), "S0") } else { ((20, 30_000), "SF") };
                    let port = if k % 2 == 0 { 443 } else { 80 };
                    found.extend(h.observe(&rec(id, &src, &host, port, Proto::Tcp, t, t + SEC, (12, 1500), rev, st)));
                }
            }
            for k in 0..10u64 {
                found.extend(h.tick(t + k * SEC));
            }
        }
        assert!(found.is_empty(), "{found:?}");
    }

    /// The table of answered services survives a restart: a monitor's devices that answered
    /// before it are still known after it; a file of another size or format is refused.
    #[test]
    fn the_answered_services_survive_a_restart_and_a_damaged_file_is_refused() {
        let mut h = horizon();
        let nms = "192.168.1.10";
        for d in 0..70u64 {
            let t = T0 + d * SEC;
            h.observe(&rec(
                d + 1,
                nms,
                &format!("192.168.1.{}", 100 + d),
                161,
                Proto::Udp,
                t,
                t,
                (1, 80),
                (1, 200),
                "SF",
            ));
        }
        let saved = h.save_answered();
        assert_eq!(saved.len(), ANSWERED_FILE_BYTES);
        let later = T0 + 20 * 3_600 * SEC;
        let mut fresh = horizon();
        let known = |h: &LongHorizon| {
            (0..70u64)
                .filter(|d| {
                    let dst: IpAddr = format!("192.168.1.{}", 100 + d).parse().unwrap();
                    h.answered_within_day(nms.parse().unwrap(), dst, 161, Proto::Udp, later)
                })
                .count()
        };
        assert_eq!(known(&fresh), 0, "a new process knows nothing");
        fresh.restore_answered(&saved).unwrap();
        assert_eq!(known(&fresh), 70);
        let mut other = horizon();
        assert!(other.restore_answered(&saved[..saved.len() - 1]).unwrap_err().contains("not a table"));
        let mut wrong = saved.clone();
        wrong[0] = b'X';
        assert!(other.restore_answered(&wrong).is_err());
        assert_eq!(known(&other), 0, "a refused file changes nothing");
    }

    /// Pending flows are capped: a flood of unanswered SYNs settles the oldest early.
    #[test]
    fn pending_flows_are_bounded() {
        let mut h = horizon();
        for i in 0..(MAX_PENDING as u64 + 1000) {
            let src = IpAddr::from([100, 64, (i >> 8) as u8, i as u8]);
            let mut r = rec(i, "192.0.2.1", "198.51.100.10", 80, Proto::Tcp, T0, T0, (1, 60), (0, 0), "S0");
            r.src = src;
            h.observe(&r);
        }
        assert_eq!(h.pending.len(), MAX_PENDING);
        h.tick(T0 + 10 * SEC);
        assert!(h.pending.is_empty());
        let (all, history) = (h.memory_bytes(), h.history().memory_bytes());
        eprintln!("long horizon: {all} bytes, of which the source history {history}, the rest {}", all - history);
        assert!(all - history < 6_000_000, "{all} - {history}");
    }
}
