//! The flow table: bidirectional 5-tuple flows, bounded by a hard cap.
//!
//! Layout: flows live in a slab (`Vec<Flow>`) threaded on an intrusive
//! least-recently-seen list; a `hashbrown::HashTable<u32>` maps keys to slab
//! indices, so the index costs ~5 bytes a flow on top of the
//! [`Flow`] itself (see [`FlowTable::bytes_per_flow`]).
//!
//! Eviction policy: when the table is full, the least recently seen flow is
//! exported (reason `Evicted`) and its slot reused. Under a spoofed flood the
//! one-packet flows churn through the tail while active conversations keep
//! moving to the head and survive. The hasher is seeded per process so an
//! attacker cannot aim collisions at the table.

use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hashbrown::HashTable;

use crate::conn_state::{history, ConnState};
use crate::packet::{tcp_flags, PacketInfo};
use gatewarden_core::recency::{Linked, RecencyList, NIL};
use gatewarden_proto::messages::{FlowRecord, Proto};

/// Direction-independent identity of a flow: the two endpoints in sorted order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// The lower endpoint's address (IPv4 mapped into the last 4 bytes).
    pub lo_addr: [u8; 16],
    /// The higher endpoint's address.
    pub hi_addr: [u8; 16],
    /// The lower endpoint's port.
    pub lo_port: u16,
    /// The higher endpoint's port.
    pub hi_port: u16,
    /// IP protocol number.
    pub proto: u8,
    /// Whether the addresses are IPv6.
    pub v6: bool,
}

/// Bits of a flow id: 51, as Suricata's `flow_id`, because JavaScript and
/// many JSON readers lose integers past 2^53.
pub const FLOW_ID_BITS: u32 = 51;

impl FlowKey {
    /// The flow's id: a fixed (unseeded) hash of its direction-independent
    /// 5-tuple and its first packet's time, so every node, a restarted
    /// process and a replay of the same capture name the same flow the same
    /// way (a counter repeated across restarts and routers), and a flow the
    /// active timeout cuts, or a later reuse of the 5-tuple, gets a new id.
    /// Never 0 (that means "no flow" in an alert). Computed once per new
    /// flow; unlike the table's own hasher it need not resist chosen
    /// collisions, since nothing is indexed by it here.
    pub fn stable_id(&self, first_ns: u64) -> u64 {
        let word = |b: &[u8]| {
            let mut w = [0u8; 8];
            w.copy_from_slice(b);
            u64::from_le_bytes(w)
        };
        let words = [
            word(&self.lo_addr[..8]),
            word(&self.lo_addr[8..]),
            word(&self.hi_addr[..8]),
            word(&self.hi_addr[8..]),
            u64::from(self.lo_port)
                | u64::from(self.hi_port) << 16
                | u64::from(self.proto) << 32
                | u64::from(self.v6) << 40,
            first_ns,
        ];
        let mut h: u64 = 0x9e37_79b9_7f4a_7c15;
        for w in words {
            // splitmix64's finaliser over the running state.
            let mut x = h ^ w;
            x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            h = x ^ (x >> 31);
        }
        (h & ((1 << FLOW_ID_BITS) - 1)).max(1)
    }
}

/// An address as the integer whose big-endian bytes are its key bytes (IPv4
/// in the last four): integers compare as the bytes do, in one instruction
/// pair instead of a byte-slice comparison.
pub(crate) fn addr_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn bytes_addr(b: [u8; 16], v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(b))
    } else {
        IpAddr::V4(Ipv4Addr::new(b[12], b[13], b[14], b[15]))
    }
}

impl FlowKey {
    /// The key of a packet and whether the packet's source is the key's `lo` end.
    pub fn of(p: &PacketInfo) -> (FlowKey, bool) {
        let (s, d) = (addr_u128(p.src), addr_u128(p.dst));
        let v6 = p.src.is_ipv6();
        let (sb, db) = (s.to_be_bytes(), d.to_be_bytes());
        if (s, p.sport) <= (d, p.dport) {
            (FlowKey { lo_addr: sb, hi_addr: db, lo_port: p.sport, hi_port: p.dport, proto: p.proto, v6 }, true)
        } else {
            (FlowKey { lo_addr: db, hi_addr: sb, lo_port: p.dport, hi_port: p.sport, proto: p.proto, v6 }, false)
        }
    }
}

/// Packets and bytes a flow's two ends sent that the host statistics have
/// not counted yet: one run per direction (0: the originator's). Most
/// packets of a flow add only packets and bytes to their sender's
/// statistics, and the router adds those here, in the flow it already
/// looked up, instead of looking the sender up in the host statistics
/// every packet; each batch cut credits the runs
/// (`features::HostTracker::settle`): one host lookup per flow and batch
/// (issue #19's per-packet state).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Uncounted {
    /// The runs' first packet's time in whole milliseconds past the flow's
    /// first packet (meaningless while both are empty): 4 bytes where the
    /// absolute time took 8, as `Flow`'s size is the memory budget (1 M flows
    /// in 200 MB, issue #3). See [`FlowRuns`].
    base_ms: u32,
    packets: [u16; 2],
    bytes: [u32; 2],
    /// Each run's packets' times past the base, summed, in µs: their mean
    /// is when the run is credited.
    offsets_us: [u32; 2],
}

/// One direction's run taken out of [`Uncounted`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UncountedRun {
    /// Packets in the run.
    pub packets: u32,
    /// Their IP bytes.
    pub bytes: u32,
    /// Their mean time, ns.
    pub mean_ns: u64,
}

/// The longest a run may span, either way from its first packet's
/// millisecond. Crediting a run at its mean time is exact to second order
/// for packets only while the run is short (the batch interval may be set to
/// a minute), and a host whose packets all wait in runs is not touched in the
/// host table's recency order until its run is credited: a spoofed flood must
/// bring more new sources within this span than the host table holds (16 384
/// by default, 330 000 a second) to push a busy host out.
pub const MAX_RUN_SPAN_NS: u64 = 50_000_000;

impl Uncounted {
    /// Whether both runs are empty.
    pub fn is_empty(&self) -> bool {
        self.packets == [0, 0]
    }
}

/// A flow's [`Uncounted`] runs with the time their base counts from (the
/// flow's first packet): what adds to them and takes them out.
#[derive(Debug)]
pub struct FlowRuns<'a> {
    runs: &'a mut Uncounted,
    first_ns: u64,
}

impl<'a> FlowRuns<'a> {
    /// The runs `runs` of a flow whose first packet came at `first_ns`.
    pub(crate) fn new(runs: &'a mut Uncounted, first_ns: u64) -> FlowRuns<'a> {
        FlowRuns { runs, first_ns }
    }

    fn base_ns(&self) -> u64 {
        self.first_ns.saturating_add(u64::from(self.runs.base_ms) * 1_000_000)
    }

    /// Adds a packet of `len` bytes at `ts_ns` to direction `dir`'s run;
    /// false, with nothing added, when a counter would overflow, or the packet
    /// is more than [`MAX_RUN_SPAN_NS`] from the runs' first millisecond, or
    /// 49 days past the flow's first packet (the caller credits the runs
    /// first, or counts the packet itself).
    #[inline]
    pub fn add(&mut self, dir: usize, ts_ns: u64, len: u32) -> bool {
        if self.runs.is_empty() {
            // A packet stamped before the flow's first counts from it.
            let Ok(ms) = u32::try_from(ts_ns.saturating_sub(self.first_ns) / 1_000_000) else { return false };
            self.runs.base_ms = ms;
        }
        let base_ns = self.base_ns();
        if ts_ns.abs_diff(base_ns) > MAX_RUN_SPAN_NS {
            return false;
        }
        // Within the span: an offset of at most 50 000 µs, 0 for a packet stamped before the base.
        let off = (ts_ns.saturating_sub(base_ns) / 1_000) as u32;
        let u = &mut *self.runs;
        let (Some(p), Some(b), Some(o)) =
            (u.packets[dir].checked_add(1), u.bytes[dir].checked_add(len), u.offsets_us[dir].checked_add(off))
        else {
            return false;
        };
        (u.packets[dir], u.bytes[dir], u.offsets_us[dir]) = (p, b, o);
        true
    }

    /// Whether both runs are empty.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Direction `dir`'s run, emptied; None if it holds no packet.
    pub fn take(&mut self, dir: usize) -> Option<UncountedRun> {
        let base_ns = self.base_ns();
        let u = &mut *self.runs;
        let packets = u32::from(std::mem::take(&mut u.packets[dir]));
        let bytes = std::mem::take(&mut u.bytes[dir]);
        let offsets = u64::from(std::mem::take(&mut u.offsets_us[dir]));
        (packets > 0).then(|| UncountedRun { packets, bytes, mean_ns: base_ns + offsets * 1_000 / u64::from(packets) })
    }
}

/// A flow mark: it changed since the last update batch.
const DIRTY: u8 = 1;
/// A flow mark: an update of it was ever taken ([`FlowTable::take_updates`]).
const REPORTED: u8 = 2;
/// A flow mark: its slot index is in the table's update list (at most once).
const QUEUED: u8 = 4;
/// A flow mark: its slot index is in the table's crediting list (at most
/// once): its uncounted runs were handed out since the last update batch.
const CREDIT_LISTED: u8 = 8;

/// One bidirectional flow. Its size is part of the memory budget: keep it small.
#[derive(Debug, Clone)]
pub struct Flow {
    /// Identity.
    pub key: FlowKey,
    /// Unique id (a counter, so replays are deterministic).
    pub flow_id: u64,
    /// First packet time, ns.
    pub first_ns: u64,
    /// Last packet time, ns.
    pub last_ns: u64,
    /// Bytes originator → responder (IP length).
    pub fwd_bytes: u64,
    /// Bytes responder → originator.
    pub rev_bytes: u64,
    /// Sum of squared packet lengths, both directions.
    pub len_sq_sum: u64,
    /// Sum of squared inter-arrival times in microseconds.
    pub iat_sq_sum_us: f64,
    /// Packets originator → responder.
    pub fwd_packets: u32,
    /// Packets responder → originator.
    pub rev_packets: u32,
    /// Largest inter-arrival time, µs (saturating).
    pub iat_max_us: u32,
    /// Smallest packet length.
    pub len_min: u16,
    /// Largest packet length.
    pub len_max: u16,
    /// SYN, FIN, RST, PSH, ACK, URG counts (saturating).
    pub flag_counts: [u16; 6],
    /// TCP history bits ([`history`]).
    pub history: u16,
    /// The responder's first sequence number seen (its SYN-ACK's ISN, or the
    /// first segment of a flow picked up midstream); valid with `RESP_SEQ`.
    pub resp_seq_lo: u32,
    /// One past the last sequence number the responder has sent; an
    /// originator acknowledging a number in `resp_seq_lo + 1 ..= resp_seq_next`
    /// has received the responder's segments (see [`history::ORIG_ANSWERED`]).
    pub resp_seq_next: u32,
    /// Whether the originator is the key's `lo` end.
    pub orig_is_lo: bool,
    /// [`DIRTY`], [`REPORTED`], [`QUEUED`]: one byte, not three (`Flow`'s
    /// size is the memory budget).
    marks: u8,
    /// ICMP: the type and code of the packet that opened it (the record's "ports").
    icmp: (u8, u8),
    /// What its packets added to its ends' host statistics and the router
    /// has not credited yet (see [`Uncounted`], [`Flow::runs`]).
    uncounted: Uncounted,
    prev: u32,
    next: u32,
}

impl Linked for Flow {
    fn links(&self) -> (u32, u32) {
        (self.prev, self.next)
    }
    fn set_prev(&mut self, prev: u32) {
        self.prev = prev;
    }
    fn set_next(&mut self, next: u32) {
        self.next = next;
    }
}

impl Flow {
    /// Whether an exported flow's final record equals the update already
    /// taken of it: no packet since. Its end then tells a consumer of
    /// cumulative records nothing new (a spoofed flood's flows are all like
    /// this: one SYN, reported once, evicted later).
    pub fn unchanged_since_reported(&self) -> bool {
        self.is(REPORTED) && !self.is(DIRTY)
    }

    fn is(&self, mark: u8) -> bool {
        self.marks & mark != 0
    }

    fn set(&mut self, mark: u8, on: bool) {
        if on {
            self.marks |= mark;
        } else {
            self.marks &= !mark;
        }
    }

    /// Its uncounted runs, to add to or credit.
    pub fn runs(&mut self) -> FlowRuns<'_> {
        FlowRuns::new(&mut self.uncounted, self.first_ns)
    }

    /// Whether packets of it wait in its runs, not yet credited.
    pub fn has_uncounted(&self) -> bool {
        !self.uncounted.is_empty()
    }

    /// The originator's address.
    pub fn src(&self) -> IpAddr {
        bytes_addr(if self.orig_is_lo { self.key.lo_addr } else { self.key.hi_addr }, self.key.v6)
    }

    /// The responder's address.
    pub fn dst(&self) -> IpAddr {
        bytes_addr(if self.orig_is_lo { self.key.hi_addr } else { self.key.lo_addr }, self.key.v6)
    }

    /// The originator's port.
    pub fn sport(&self) -> u16 {
        if self.orig_is_lo {
            self.key.lo_port
        } else {
            self.key.hi_port
        }
    }

    /// The responder's port.
    pub fn dport(&self) -> u16 {
        if self.orig_is_lo {
            self.key.hi_port
        } else {
            self.key.lo_port
        }
    }

    /// Zeek connection state.
    pub fn conn_state(&self) -> ConnState {
        if self.key.proto == 6 {
            ConnState::from_tcp_history(self.history)
        } else {
            ConnState::from_reply(self.rev_packets > 0)
        }
    }

    /// Total packets both ways.
    pub fn packets(&self) -> u64 {
        self.fwd_packets as u64 + self.rev_packets as u64
    }

    /// Whether a TCP flow has ended (RST, or FIN both ways).
    pub fn is_closed(&self) -> bool {
        use history::*;
        self.history & (ORIG_RST | RESP_RST) != 0 || self.history & (ORIG_FIN | RESP_FIN) == (ORIG_FIN | RESP_FIN)
    }

    /// The record sent to the detector.
    pub fn record(&self) -> FlowRecord {
        FlowRecord {
            flow_id: self.flow_id,
            src: self.src(),
            dst: self.dst(),
            // ICMP has no ports: its record carries the opening type and code there (Zeek's
            // convention), so an echo request (8, or 128 over IPv6) can be told from an error.
            sport: if matches!(self.key.proto, 1 | 58) { u16::from(self.icmp.0) } else { self.sport() },
            dport: if matches!(self.key.proto, 1 | 58) { u16::from(self.icmp.1) } else { self.dport() },
            proto: Proto::from_number(self.key.proto),
            first_ns: self.first_ns,
            last_ns: self.last_ns,
            fwd_packets: self.fwd_packets,
            rev_packets: self.rev_packets,
            fwd_bytes: self.fwd_bytes,
            rev_bytes: self.rev_bytes,
            conn_state: self.conn_state(),
            src_answered: self.history & history::ORIG_ANSWERED != 0,
        }
    }
}

/// Why a flow left the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportReason {
    /// No packet for `idle_timeout`.
    Idle,
    /// Older than `active_timeout`; a fresh flow continues it.
    Active,
    /// The table was full.
    Evicted,
    /// The table was drained at the end of a capture or on shutdown.
    Flushed,
}

/// Counters the table keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowTableStats {
    /// Flows currently held.
    pub active: u64,
    /// Flows ever created.
    pub created: u64,
    /// Flows evicted because the table was full.
    pub evicted: u64,
    /// Flows ended by the idle timeout.
    pub expired_idle: u64,
    /// Flows cut by the active timeout.
    pub expired_active: u64,
    /// Packets counted.
    pub packets: u64,
    /// Updates not sent because a batch was full (sent later).
    pub updates_deferred: u64,
}

/// The bounded flow table.
pub struct FlowTable {
    index: HashTable<u32>,
    slab: Vec<Flow>,
    free: Vec<u32>,
    lru: RecencyList,
    cap: usize,
    idle_ns: u64,
    active_ns: u64,
    hasher: foldhash::fast::RandomState,
    dirty: Vec<u32>,
    /// Flows marked [`DIRTY`] (all in `dirty`), so a batch cut knows how many
    /// it leaves for the next without walking them.
    dirty_count: usize,
    /// Slots whose uncounted runs were handed out since the last update batch
    /// ([`FlowTable::uncounted`]): the flows a cut must credit beyond the ones
    /// it takes, found without walking the whole update list (under a flood
    /// the list is a backlog of thousands, walked again at every cut).
    crediting: Vec<u32>,
    exports: Vec<(ExportReason, Flow)>,
    stats: FlowTableStats,
    /// The slot of the last packet's flow (NIL once it is removed): a flow's
    /// packets, both directions, tend to come in runs, and a hit skips
    /// hashing and probing (issue #19).
    last: u32,
}

/// What `observe` did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    /// Slab index of the flow.
    pub index: u32,
    /// Whether the packet started a new flow.
    pub new_flow: bool,
    /// Whether the packet went originator → responder.
    pub from_originator: bool,
}

impl FlowTable {
    /// A table holding at most `cap` flows.
    pub fn new(cap: usize, idle_timeout_s: u64, active_timeout_s: u64) -> FlowTable {
        let cap = cap.clamp(1, u32::MAX as usize - 1);
        FlowTable {
            index: HashTable::with_capacity(cap.min(1 << 16)),
            slab: Vec::with_capacity(cap.min(1 << 16)),
            free: Vec::new(),
            lru: RecencyList::default(),
            cap,
            idle_ns: idle_timeout_s.saturating_mul(1_000_000_000),
            active_ns: active_timeout_s.saturating_mul(1_000_000_000),
            hasher: foldhash::fast::RandomState::default(),
            dirty: Vec::new(),
            dirty_count: 0,
            crediting: Vec::new(),
            exports: Vec::new(),
            stats: FlowTableStats::default(),
            last: NIL,
        }
    }

    /// Memory a flow costs: the slab entry plus the hash index's share.
    pub fn bytes_per_flow() -> usize {
        // hashbrown stores the u32 plus one control byte per bucket at a load
        // factor of at most 7/8; growth doubles, so budget for half-full.
        std::mem::size_of::<Flow>() + 2 * (std::mem::size_of::<u32>() + 1)
    }

    /// Counters so far.
    pub fn stats(&self) -> FlowTableStats {
        FlowTableStats { active: self.index.len() as u64, ..self.stats }
    }

    /// Flows currently held.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the table holds no flows.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The flow at a slab index returned by `observe`.
    pub fn get(&self, index: u32) -> &Flow {
        &self.slab[index as usize]
    }

    /// The uncounted runs of the flow at a slab index returned by `observe`.
    pub fn uncounted(&mut self, index: u32) -> FlowRuns<'_> {
        let f = &mut self.slab[index as usize];
        if !f.is(CREDIT_LISTED) {
            f.set(CREDIT_LISTED, true);
            self.crediting.push(index);
        }
        f.runs()
    }

    fn remove(&mut self, i: u32, reason: ExportReason) {
        if self.last == i {
            self.last = NIL;
        }
        self.lru.unlink(&mut self.slab, i);
        let key = self.slab[i as usize].key;
        let hash = self.hasher.hash_one(key);
        let slab = &self.slab;
        if let Ok(entry) = self.index.find_entry(hash, |&j| slab[j as usize].key == key) {
            entry.remove();
        }
        let f = &mut self.slab[i as usize];
        // The final record goes out as an export (with its `DIRTY` mark, for
        // `Flow::unchanged_since_reported`); `QUEUED` stays so the slot is
        // never listed twice for updates.
        self.exports.push((reason, f.clone()));
        if f.is(DIRTY) {
            self.dirty_count -= 1;
        }
        f.set(DIRTY, false);
        self.free.push(i);
        match reason {
            ExportReason::Idle => self.stats.expired_idle += 1,
            ExportReason::Evicted => self.stats.evicted += 1,
            ExportReason::Active => self.stats.expired_active += 1,
            ExportReason::Flushed => {}
        }
    }

    fn fresh_flow(&mut self, key: FlowKey, orig_is_lo: bool, ts: u64) -> Flow {
        let id = key.stable_id(ts);
        self.stats.created += 1;
        Flow {
            key,
            flow_id: id,
            first_ns: ts,
            last_ns: ts,
            fwd_bytes: 0,
            rev_bytes: 0,
            len_sq_sum: 0,
            iat_sq_sum_us: 0.0,
            fwd_packets: 0,
            rev_packets: 0,
            iat_max_us: 0,
            len_min: u16::MAX,
            len_max: 0,
            flag_counts: [0; 6],
            history: 0,
            resp_seq_lo: 0,
            resp_seq_next: 0,
            orig_is_lo,
            marks: 0,
            icmp: (0, 0),
            uncounted: Uncounted::default(),
            prev: NIL,
            next: NIL,
        }
    }

    /// Whether the packet belongs to a flow already in the table (a lookup
    /// only: nothing is counted). Under overload, frames of known flows keep
    /// full processing.
    pub fn contains(&self, p: &PacketInfo) -> bool {
        let (key, _) = FlowKey::of(p);
        let hash = self.hasher.hash_one(key);
        self.index.find(hash, |&j| self.slab[j as usize].key == key).is_some()
    }

    /// Counts one packet into its flow, creating (and if need be evicting) as required.
    pub fn observe(&mut self, p: &PacketInfo) -> Observed {
        self.stats.packets += 1;
        let (key, src_is_lo) = FlowKey::of(p);
        let (found, hash) = if self.last != NIL && self.slab[self.last as usize].key == key {
            (Some(self.last), None)
        } else {
            let hash = self.hasher.hash_one(key);
            let slab = &self.slab;
            (self.index.find(hash, |&j| slab[j as usize].key == key).copied(), Some(hash))
        };
        let (i, new_flow) = match found {
            Some(i) => {
                let f = &self.slab[i as usize];
                if p.ts_ns.saturating_sub(f.first_ns) >= self.active_ns {
                    // Cut long flows so they are reported; the continuation keeps the
                    // original direction.
                    let orig_is_lo = f.orig_is_lo;
                    self.remove(i, ExportReason::Active);
                    let hash = hash.unwrap_or_else(|| self.hasher.hash_one(key));
                    (self.insert(key, hash, orig_is_lo, p.ts_ns), true)
                } else {
                    // A stream's next packet finds its flow already the most recent.
                    if self.lru.head != i {
                        self.lru.unlink(&mut self.slab, i);
                        self.lru.push_front(&mut self.slab, i);
                    }
                    (i, false)
                }
            }
            None => {
                let hash = hash.unwrap_or_else(|| self.hasher.hash_one(key));
                (self.insert(key, hash, src_is_lo, p.ts_ns), true)
            }
        };
        self.last = i;
        let f = &mut self.slab[i as usize];
        let from_originator = f.orig_is_lo == src_is_lo;
        if new_flow && matches!(p.proto, 1 | 58) {
            f.icmp = (p.icmp_type, p.icmp_code);
        }
        update_flow(f, p, from_originator);
        if !f.is(DIRTY) {
            self.dirty_count += 1;
            f.set(DIRTY, true);
        }
        if !f.is(QUEUED) {
            f.set(QUEUED, true);
            self.dirty.push(i);
        }
        Observed { index: i, new_flow, from_originator }
    }

    fn insert(&mut self, key: FlowKey, hash: u64, orig_is_lo: bool, ts: u64) -> u32 {
        if self.index.len() >= self.cap && self.lru.tail != NIL {
            self.remove(self.lru.tail, ExportReason::Evicted);
        }
        let mut flow = self.fresh_flow(key, orig_is_lo, ts);
        let i = match self.free.pop() {
            Some(i) => {
                let old = &self.slab[i as usize];
                flow.set(QUEUED, old.is(QUEUED));
                flow.set(CREDIT_LISTED, old.is(CREDIT_LISTED));
                self.slab[i as usize] = flow;
                i
            }
            None => {
                self.slab.push(flow);
                (self.slab.len() - 1) as u32
            }
        };
        let slab = &self.slab;
        self.index.insert_unique(hash, i, |&j| self.hasher.hash_one(slab[j as usize].key));
        self.lru.push_front(&mut self.slab, i);
        i
    }

    /// Ends flows idle since before `now_ns - idle_timeout`.
    pub fn expire(&mut self, now_ns: u64) {
        while self.lru.tail != NIL {
            let f = &self.slab[self.lru.tail as usize];
            if f.last_ns.saturating_add(self.idle_ns) > now_ns {
                break;
            }
            self.remove(self.lru.tail, ExportReason::Idle);
        }
    }

    /// Ends every flow (end of capture, shutdown).
    pub fn flush(&mut self) {
        self.flush_some(usize::MAX);
    }

    /// Ends up to `n` flows, least recently seen first, so a large table can be
    /// drained in bounded steps; returns how many were ended.
    pub fn flush_some(&mut self, n: usize) -> usize {
        let mut done = 0;
        while self.lru.tail != NIL && done < n {
            self.remove(self.lru.tail, ExportReason::Flushed);
            done += 1;
        }
        done
    }

    /// Flows that left the table since the last call, in full.
    pub fn take_exports(&mut self) -> Vec<(ExportReason, Flow)> {
        std::mem::take(&mut self.exports)
    }

    /// Whether flows left the table since the last take or drain: the
    /// router asks after every packet, and nearly always none did.
    #[inline]
    pub fn has_exports(&self) -> bool {
        !self.exports.is_empty()
    }

    /// The same, drained in place: the buffer keeps its allocation, so a caller
    /// that drains after every packet keeps it at one packet's worth instead of
    /// letting a spoofed flood's evictions pile up as full flows between takes.
    pub fn drain_exports(&mut self) -> std::vec::Drain<'_, (ExportReason, Flow)> {
        self.exports.drain(..)
    }

    /// Snapshots of at most `max` flows that changed since they were last
    /// reported; the rest stay pending for the next call (and are counted).
    /// Uncounted runs stay in their flows (credited when the flow leaves):
    /// a table whose host statistics defer packets takes its updates with
    /// [`FlowTable::take_updates_crediting`].
    pub fn take_updates(&mut self, max: usize) -> Vec<FlowRecord> {
        self.take_updates_crediting(max, &mut |_, _, _| {})
    }

    /// [`FlowTable::take_updates`], calling `credit(originator, responder,
    /// runs)` first for every changed flow with uncounted packets, those
    /// past `max` too (only a changed flow can hold any): a batch cut credits
    /// them before it reads host statistics, in the same pass over the
    /// changed flows (a second pass cost a spoofed flood one more cache miss
    /// per flow).
    pub fn take_updates_crediting(
        &mut self,
        max: usize,
        // Not generic: one copy of the loop, compiled here (a copy inlined
        // into the router cost a spoofed flood 150 instructions a flow).
        credit: &mut dyn FnMut(IpAddr, IpAddr, &mut FlowRuns<'_>),
    ) -> Vec<FlowRecord> {
        let mut out = Vec::with_capacity(self.dirty_count.min(max));
        // From the front of the list, until `max` are taken; the rest stay
        // listed, unwalked (a flood's backlog was walked at every cut).
        let mut taken = 0;
        while taken < self.dirty.len() && out.len() < max {
            let i = self.dirty[taken];
            taken += 1;
            let f = &mut self.slab[i as usize];
            if !f.is(DIRTY) {
                f.set(QUEUED, false);
                continue;
            }
            if f.has_uncounted() {
                let (src, dst) = (f.src(), f.dst());
                credit(src, dst, &mut f.runs());
            }
            f.set(DIRTY, false);
            f.set(REPORTED, true);
            f.set(QUEUED, false);
            out.push(f.record());
        }
        self.dirty.drain(..taken);
        self.dirty_count -= out.len();
        // The flows left for the next batch that hold uncounted packets
        // (only one handed its runs out since the last cut can).
        for i in std::mem::take(&mut self.crediting) {
            let f = &mut self.slab[i as usize];
            f.set(CREDIT_LISTED, false);
            // A live flow with uncounted packets is changed (`DIRTY`); a slot
            // whose flow left since keeps its runs in the export, which the
            // router credits from there (crediting them here too counted a
            // flow expired before the cut twice).
            if f.is(DIRTY) && f.has_uncounted() {
                let (src, dst) = (f.src(), f.dst());
                credit(src, dst, &mut f.runs());
            }
        }
        self.stats.updates_deferred += self.dirty_count as u64;
        out
    }
}

fn update_flow(f: &mut Flow, p: &PacketInfo, from_originator: bool) {
    let len = p.ip_len.min(u16::MAX as u32) as u16;
    if f.packets() > 0 {
        let iat_us = p.ts_ns.saturating_sub(f.last_ns) / 1000;
        f.iat_sq_sum_us += (iat_us as f64) * (iat_us as f64);
        f.iat_max_us = f.iat_max_us.max(iat_us.min(u32::MAX as u64) as u32);
    }
    f.last_ns = f.last_ns.max(p.ts_ns);
    f.len_min = f.len_min.min(len);
    f.len_max = f.len_max.max(len);
    f.len_sq_sum = f.len_sq_sum.saturating_add(len as u64 * len as u64);
    if from_originator {
        f.fwd_packets = f.fwd_packets.saturating_add(1);
        f.fwd_bytes += p.ip_len as u64;
    } else {
        f.rev_packets = f.rev_packets.saturating_add(1);
        f.rev_bytes += p.ip_len as u64;
    }
    // A fragment without the datagram's TCP header has no flags or numbers
    // of its own (`fragments::FragmentHeads` gave the header's to the
    // fragment that completed it): it counts as a packet, not in TCP state.
    if p.proto == 6 && p.fragment.is_none() {
        let fl = p.tcp_flags;
        for (bit, slot) in [
            (tcp_flags::SYN, 0),
            (tcp_flags::FIN, 1),
            (tcp_flags::RST, 2),
            (tcp_flags::PSH, 3),
            (tcp_flags::ACK, 4),
            (tcp_flags::URG, 5),
        ] {
            if fl & bit != 0 {
                f.flag_counts[slot] = f.flag_counts[slot].saturating_add(1);
            }
        }
        use history::*;
        let syn = fl & tcp_flags::SYN != 0;
        let ack = fl & tcp_flags::ACK != 0;
        let rst = fl & tcp_flags::RST != 0;
        if from_originator {
            // Proof of a real source: it acknowledges a number only the responder's
            // segments carried. The range is what the responder sent (one number after
            // a bare SYN-ACK), so a blind forger's chance is that range over 2^32.
            if ack && f.history & RESP_SEQ != 0 {
                let off = p.tcp_ack.wrapping_sub(f.resp_seq_lo);
                if off >= 1 && off <= f.resp_seq_next.wrapping_sub(f.resp_seq_lo) {
                    f.history |= ORIG_ANSWERED;
                }
            }
        } else if !rst {
            // A responder's RST is left out: its sequence number is the one the
            // originator put in its own acknowledgement, so the originator knows it.
            let end = p
                .tcp_seq
                .wrapping_add(p.payload_len)
                .wrapping_add(u32::from(syn))
                .wrapping_add(u32::from(fl & tcp_flags::FIN != 0));
            if f.history & RESP_SEQ == 0 || (syn && ack && f.history & RESP_SYNACK == 0) {
                f.resp_seq_lo = p.tcp_seq;
                f.resp_seq_next = end;
                f.history |= RESP_SEQ;
            } else if (end.wrapping_sub(f.resp_seq_next) as i32) > 0 {
                f.resp_seq_next = end;
            }
        }
        let h = &mut f.history;
        if from_originator {
            if syn && !ack {
                *h |= ORIG_SYN;
            }
            if ack && !syn && *h & RESP_SYNACK != 0 {
                *h |= ORIG_ACK;
            }
            if fl & tcp_flags::FIN != 0 {
                *h |= ORIG_FIN;
            }
            if fl & tcp_flags::RST != 0 {
                *h |= ORIG_RST;
            }
            if p.payload_len > 0 {
                *h |= ORIG_DATA;
            }
        } else {
            if syn && ack {
                *h |= RESP_SYNACK;
            } else if syn {
                *h |= RESP_SYN;
            }
            if fl & tcp_flags::FIN != 0 {
                *h |= RESP_FIN;
            }
            if fl & tcp_flags::RST != 0 {
                *h |= RESP_RST;
            }
            if p.payload_len > 0 {
                *h |= RESP_DATA;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::tcp_flags::*;

    fn pkt(ts_s: f64, src: &str, sport: u16, dst: &str, dport: u16, proto: u8, flags: u8) -> PacketInfo {
        PacketInfo {
            ts_ns: (ts_s * 1e9) as u64,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto,
            sport,
            dport,
            tcp_flags: flags,
            tcp_seq: 0,
            tcp_ack: 0,
            icmp_type: 0,
            icmp_code: 0,
            ip_len: 60,
            payload_len: 0,
            fragment: None,
        }
    }

    /// An ICMP flow's record carries the originator's first ICMP type and code where a TCP
    /// or UDP record has its ports (Zeek's convention, and what the detector's long horizon
    /// and the EVE output read): before, both were 0, so an echo request was never taken
    /// for a probe and EVE said `icmp_type: 0` of every ping.
    #[test]
    fn an_icmp_records_ports_are_the_originators_type_and_code() {
        let mut t = FlowTable::new(16, 60, 300);
        for (ts, src, dst, ty, proto) in [
            (1.0, "192.0.2.1", "198.51.100.1", 8, 1),
            (1.01, "198.51.100.1", "192.0.2.1", 0, 1),
            (1.0, "2001:db8::1", "2001:db8:1::1", 128, 58),
            (1.01, "2001:db8:1::1", "2001:db8::1", 129, 58),
            (2.0, "203.0.113.9", "192.0.2.1", 3, 1),
        ] {
            let mut p = pkt(ts, src, 0, dst, 0, proto, 0);
            p.icmp_type = ty;
            p.icmp_code = if ty == 3 { 1 } else { 0 };
            t.observe(&p);
        }
        let mut recs: Vec<_> =
            t.take_updates(16).into_iter().map(|f| (f.src.to_string(), f.sport, f.dport, f.rev_packets)).collect();
        recs.sort();
        assert_eq!(
            recs,
            vec![("192.0.2.1".into(), 8, 0, 1), ("2001:db8::1".into(), 128, 0, 1), ("203.0.113.9".into(), 3, 1, 0),]
        );
    }

    proptest::proptest! {
        /// The key orders the two ends by their address bytes, then port,
        /// as it did with byte arrays: integers must not change which end is
        /// `lo` (that would rename every flow's direction and id).
        #[test]
        fn a_key_orders_its_ends_as_their_address_bytes_and_ports_do(
            v6 in proptest::bool::ANY,
            a in proptest::num::u128::ANY,
            b in proptest::num::u128::ANY,
            same in proptest::bool::ANY,
            sport in proptest::num::u16::ANY,
            dport in proptest::num::u16::ANY,
        ) {
            let addr = |x: u128| -> IpAddr {
                if v6 { IpAddr::V6(Ipv6Addr::from(x)) } else { IpAddr::V4(Ipv4Addr::from(x as u32)) }
            };
            let bytes = |a: IpAddr| -> [u8; 16] {
                match a {
                    IpAddr::V4(v4) => {
                        let mut b = [0u8; 16];
                        b[12..].copy_from_slice(&v4.octets());
                        b
                    }
                    IpAddr::V6(v6) => v6.octets(),
                }
            };
            let mut p = pkt(1.0, "192.0.2.1", sport, "192.0.2.2", dport, 6, SYN);
            p.src = addr(a);
            p.dst = if same { p.src } else { addr(b) };
            let (key, src_is_lo) = FlowKey::of(&p);
            let (s, d) = (bytes(p.src), bytes(p.dst));
            let want_lo = (s, p.sport) <= (d, p.dport);
            proptest::prop_assert_eq!(src_is_lo, want_lo);
            let (lo, hi) = if want_lo { (s, d) } else { (d, s) };
            proptest::prop_assert_eq!((key.lo_addr, key.hi_addr), (lo, hi));
        }
    }

    #[test]
    fn both_directions_are_one_flow_and_first_packet_sets_direction() {
        let mut t = FlowTable::new(1000, 60, 300);
        let a = t.observe(&pkt(1.0, "192.0.2.20", 40000, "192.0.2.10", 22, 6, SYN));
        let b = t.observe(&pkt(1.1, "192.0.2.10", 22, "192.0.2.20", 40000, 6, SYN | ACK));
        assert_eq!(a.index, b.index);
        assert!(a.new_flow && !b.new_flow);
        assert!(a.from_originator && !b.from_originator);
        let f = t.get(a.index);
        assert_eq!(f.src().to_string(), "192.0.2.20");
        assert_eq!(f.dport(), 22);
        assert_eq!((f.fwd_packets, f.rev_packets), (1, 1));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn full_handshake_and_close_is_sf() {
        let mut t = FlowTable::new(1000, 60, 300);
        let c = "2001:db8::1";
        let s = "2001:db8::2";
        let i = t.observe(&pkt(0.0, c, 5000, s, 80, 6, SYN)).index;
        t.observe(&pkt(0.1, s, 80, c, 5000, 6, SYN | ACK));
        t.observe(&pkt(0.2, c, 5000, s, 80, 6, ACK));
        assert_eq!(t.get(i).conn_state(), ConnState::S1);
        t.observe(&pkt(0.3, c, 5000, s, 80, 6, FIN | ACK));
        t.observe(&pkt(0.4, s, 80, c, 5000, 6, FIN | ACK));
        assert_eq!(t.get(i).conn_state(), ConnState::SF);
        assert!(t.get(i).is_closed());
        assert_eq!(t.get(i).flag_counts[0], 2);
    }

    #[test]
    fn syn_answered_by_rst_is_rej() {
        let mut t = FlowTable::new(1000, 60, 300);
        let i = t.observe(&pkt(0.0, "192.0.2.66", 4444, "192.0.2.10", 23, 6, SYN)).index;
        t.observe(&pkt(0.0, "192.0.2.10", 23, "192.0.2.66", 4444, 6, RST | ACK));
        assert_eq!(t.get(i).conn_state(), ConnState::REJ);
        assert_eq!(t.get(i).record().conn_state, ConnState::REJ);
    }

    #[test]
    fn udp_without_reply_is_s0_and_with_reply_sf() {
        let mut t = FlowTable::new(1000, 60, 300);
        let i = t.observe(&pkt(0.0, "192.0.2.5", 5353, "198.51.100.1", 53, 17, 0)).index;
        assert_eq!(t.get(i).conn_state(), ConnState::S0);
        t.observe(&pkt(0.01, "198.51.100.1", 53, "192.0.2.5", 5353, 17, 0));
        assert_eq!(t.get(i).conn_state(), ConnState::SF);
    }

    #[test]
    fn cap_is_never_exceeded_and_least_recent_is_evicted() {
        let mut t = FlowTable::new(3, 60, 300);
        let keep = t.observe(&pkt(0.0, "192.0.2.1", 1, "192.0.2.9", 80, 6, SYN)).index;
        for n in 0..100u16 {
            t.observe(&pkt(0.001 * n as f64, "192.0.2.1", 1, "192.0.2.9", 80, 6, ACK)); // keeps flow hot
            t.observe(&pkt(0.001 * n as f64, "203.0.113.7", 1000 + n, "192.0.2.9", 80, 6, SYN));
            assert!(t.len() <= 3);
        }
        assert_eq!(t.get(keep).sport(), 1, "the active flow survived the churn");
        assert_eq!(t.stats().evicted, 98);
        let exports = t.take_exports();
        assert_eq!(exports.len(), 98);
        assert!(exports.iter().all(|(r, _)| *r == ExportReason::Evicted));
    }

    #[test]
    fn a_packet_after_its_flow_ended_opens_a_new_flow_however_recently_the_old_one_was_seen() {
        // The last flow's slot is remembered to skip the lookup: once that flow
        // ends (idle, flushed, evicted, cut) the slot must not be found again.
        let mut t = FlowTable::new(2, 10, 300);
        let a = pkt(0.0, "192.0.2.1", 1, "192.0.2.9", 53, 17, 0);
        assert!(t.observe(&a).new_flow);
        assert!(!t.observe(&a).new_flow, "the same flow, found through the remembered slot");
        t.flush();
        let again = t.observe(&a);
        assert!(again.new_flow, "a flushed flow is gone");
        assert_eq!((t.len(), t.get(again.index).packets()), (1, 1));
        t.expire(20e9 as u64);
        assert!(t.observe(&pkt(21.0, "192.0.2.1", 1, "192.0.2.9", 53, 17, 0)).new_flow, "an expired flow is gone");
        // Evicted by two newer flows while it was the last one seen.
        t.observe(&pkt(22.0, "192.0.2.2", 1, "192.0.2.9", 53, 17, 0));
        t.observe(&pkt(22.0, "192.0.2.3", 1, "192.0.2.9", 53, 17, 0));
        assert!(t.observe(&pkt(22.5, "192.0.2.1", 1, "192.0.2.9", 53, 17, 0)).new_flow, "an evicted flow is gone");
        assert_eq!(t.len(), 2);
        assert_eq!(t.stats().created, 6);
    }

    #[test]
    fn idle_flows_expire_in_order() {
        let mut t = FlowTable::new(100, 10, 300);
        t.observe(&pkt(0.0, "192.0.2.1", 1, "192.0.2.9", 53, 17, 0));
        t.observe(&pkt(5.0, "192.0.2.2", 1, "192.0.2.9", 53, 17, 0));
        t.expire(10.5e9 as u64);
        assert_eq!(t.len(), 1);
        assert_eq!(t.stats().expired_idle, 1);
        t.expire(16e9 as u64);
        assert!(t.is_empty());
    }

    #[test]
    fn active_timeout_cuts_long_flows_keeping_direction() {
        let mut t = FlowTable::new(100, 60, 100);
        let a = t.observe(&pkt(0.0, "192.0.2.1", 1, "192.0.2.9", 80, 6, SYN));
        for s in 1..=150 {
            t.observe(&pkt(s as f64, "192.0.2.9", 80, "192.0.2.1", 1, 6, ACK));
        }
        assert_eq!(t.stats().expired_active, 1);
        let first = pkt(0.0, "192.0.2.1", 1, "192.0.2.9", 80, 6, SYN);
        let first_id = FlowKey::of(&first).0.stable_id(first.ts_ns);
        let b = t.observe(&pkt(151.0, "192.0.2.9", 80, "192.0.2.1", 1, 6, ACK));
        assert_ne!(t.get(b.index).flow_id, first_id, "a cut flow is a new flow");
        assert_eq!(t.get(b.index).src().to_string(), "192.0.2.1");
        assert!(a.new_flow);
    }

    /// Issue #18: the id is the same for the same flow in another table (a
    /// restarted process, another node replaying the capture), whichever
    /// direction its first packet went, and fits 51 bits.
    #[test]
    fn flow_ids_are_stable_hashes_not_counters() {
        let p = pkt(5.0, "198.51.100.7", 40000, "192.0.2.9", 443, 6, SYN);
        let mut one = FlowTable::new(100, 60, 100);
        let mut two = FlowTable::new(100, 60, 100);
        two.observe(&pkt(1.0, "192.0.2.50", 1, "192.0.2.51", 2, 17, 0));
        let (ia, ib) = (one.observe(&p).index, two.observe(&p).index);
        let (a, b) = (one.get(ia).flow_id, two.get(ib).flow_id);
        assert_eq!(a, b, "same flow, same id, whatever came before");
        assert_ne!(a, 1);
        assert!(a < 1 << FLOW_ID_BITS);
        let (key, _) = FlowKey::of(&p);
        let (rev, _) = FlowKey::of(&pkt(5.0, "192.0.2.9", 443, "198.51.100.7", 40000, 6, SYN));
        assert_eq!(key.stable_id(p.ts_ns), rev.stable_id(p.ts_ns));
        // A pinned value: the hash must not change between builds or machines.
        assert_eq!(key.stable_id(p.ts_ns), 946_305_876_873_098);
        assert_ne!(key.stable_id(p.ts_ns), key.stable_id(p.ts_ns + 1));
    }

    #[test]
    fn updates_are_bounded_and_deferred_not_lost() {
        let mut t = FlowTable::new(1000, 60, 300);
        for n in 0..10u16 {
            t.observe(&pkt(0.0, "192.0.2.1", n, "192.0.2.9", 80, 6, SYN));
        }
        assert_eq!(t.take_updates(4).len(), 4);
        assert_eq!(t.stats().updates_deferred, 6);
        assert_eq!(t.take_updates(100).len(), 6);
        assert!(t.take_updates(100).is_empty());
    }

    /// A flow with uncounted packets that leaves the table before the cut
    /// (idle expiry) is credited once, from its export: the cut does not
    /// credit its freed slot's runs again.
    #[test]
    fn a_flow_that_left_before_the_cut_is_credited_only_from_its_export() {
        let mut t = FlowTable::new(100, 60, 300);
        let a = t.observe(&pkt(0.0, "192.0.2.1", 40000, "192.0.2.9", 53, 17, 0));
        t.take_updates(100);
        let b = t.observe(&pkt(0.1, "192.0.2.1", 40000, "192.0.2.9", 53, 17, 0));
        assert_eq!(a.index, b.index);
        assert!(t.uncounted(b.index).add(0, 100_000_000, 60), "the second packet waits in a run");
        t.expire(200_000_000_000);
        let exports = t.take_exports();
        assert_eq!(exports.len(), 1);
        assert!(exports[0].1.has_uncounted(), "the export carries the run");
        let mut credited = 0;
        t.take_updates_crediting(100, &mut |_, _, runs| {
            credited += 1;
            runs.take(0);
        });
        assert_eq!(credited, 0, "the freed slot is not credited again");
    }

    #[test]
    fn update_list_never_outgrows_the_table_under_churn() {
        let mut t = FlowTable::new(100, 60, 300);
        for round in 0..50u32 {
            for n in 0..1000u32 {
                let src = std::net::Ipv4Addr::from(0x0a00_0000 + round * 1000 + n).to_string();
                t.observe(&pkt(round as f64 + n as f64 * 1e-4, &src, 1, "192.0.2.9", 80, 6, SYN));
            }
            t.take_updates(10);
            t.take_exports();
            assert!(t.dirty.len() <= 100, "round {round}: {} queued", t.dirty.len());
        }
    }

    /// One TCP segment with sequence and acknowledgement numbers.
    #[allow(clippy::too_many_arguments)]
    fn seg(
        t: f64,
        src: &str,
        sport: u16,
        dst: &str,
        dport: u16,
        flags: u8,
        seq: u32,
        ack: u32,
        len: u32,
    ) -> PacketInfo {
        PacketInfo { tcp_seq: seq, tcp_ack: ack, payload_len: len, ..pkt(t, src, sport, dst, dport, 6, flags) }
    }

    fn answered(packets: &[PacketInfo]) -> bool {
        let mut t = FlowTable::new(16, 60, 3600);
        for p in packets {
            t.observe(p);
        }
        let r = t.take_updates(16);
        assert_eq!(r.len(), 1, "{r:?}");
        r[0].src_answered
    }

    #[test]
    fn only_an_acknowledgement_of_the_responders_numbers_proves_the_source() {
        let (c, s) = ("192.0.2.66", "198.51.100.10");
        let syn = seg(1.0, c, 40000, s, 22, SYN, 1000, 0, 0);
        // Sequence numbers near the wrap, so the range check must wrap too.
        let synack = seg(1.001, s, 22, c, 40000, SYN | ACK, u32::MAX - 1, 1001, 0);
        // A completed handshake: the ACK names the SYN-ACK's ISN + 1.
        assert!(answered(&[syn, synack, seg(1.002, c, 40000, s, 22, ACK, 1001, u32::MAX, 0)]));
        // A forged "handshake": the forger never saw the SYN-ACK and guesses.
        assert!(!answered(&[syn, synack, seg(1.002, c, 40000, s, 22, ACK, 1001, 12345, 0)]));
        // A reset that acknowledges the SYN-ACK correctly proves it too.
        assert!(answered(&[syn, synack, seg(1.002, c, 40000, s, 22, RST | ACK, 1001, u32::MAX, 0)]));
        // nmap's (and the kernel's) bare RST to a SYN-ACK carries only the scanner's own
        // number: a blind forger can send the same, so it proves nothing.
        assert!(!answered(&[syn, synack, seg(1.002, c, 40000, s, 22, RST, 1001, 0, 0)]));
        // A SYN the responder refused: its RST's sequence number is the originator's choice.
        let rst = seg(1.001, s, 22, c, 40000, RST | ACK, 0, 1001, 0);
        assert!(!answered(&[syn, rst, seg(1.002, c, 40000, s, 22, ACK, 1001, 1, 0)]));
        // A session picked up midstream: acknowledging the server's data proves it.
        let data = seg(1.0, s, 22, c, 40000, ACK | PSH, 5000, 77, 100);
        let c_first = seg(0.999, c, 40000, s, 22, ACK, 77, 5000, 0);
        assert!(!answered(&[c_first, data]));
        assert!(answered(&[c_first, data, seg(1.001, c, 40000, s, 22, ACK, 77, 5100, 0)]));
        // Acknowledging beyond what the server sent is a guess.
        assert!(!answered(&[c_first, data, seg(1.001, c, 40000, s, 22, ACK, 77, 5101, 0)]));
        // A UDP exchange proves nothing at this layer.
        let q = pkt(1.0, c, 5353, s, 53, 17, 0);
        let a = pkt(1.001, s, 53, c, 5353, 17, 0);
        assert!(!answered(&[q, a]));
    }

    /// Runs are based in whole milliseconds past the flow's first packet; their
    /// mean times stay exact to the microsecond, a packet more than 50 ms past
    /// the base is refused (the caller credits the runs first), and one stamped
    /// before the flow's first packet counts from it.
    #[test]
    fn runs_based_in_milliseconds_keep_their_mean_times() {
        let first = 1_700_000_000_123_456_789u64;
        let mut u = Uncounted::default();
        let mut r = FlowRuns::new(&mut u, first);
        assert!(r.add(0, first + 1_900_000, 60));
        assert!(!r.add(0, first + 51_500_000, 60), "50.5 ms past the base's millisecond");
        let run = r.take(0).unwrap();
        assert_eq!((run.packets, run.bytes), (1, 60));
        assert!(run.mean_ns.abs_diff(first + 1_900_000) < 1_000, "{}", run.mean_ns - first);
        assert!(r.is_empty());
        assert!(r.add(0, first + 51_500_000, 60) && r.add(0, first + 52_500_000, 40));
        let run = r.take(0).unwrap();
        assert_eq!((run.packets, run.bytes), (2, 100));
        assert!(run.mean_ns.abs_diff(first + 52_000_000) < 1_000, "{}", run.mean_ns - first);
        // Stamped 10 ms before the flow's first packet: counted from it.
        assert!(r.add(1, first - 10_000_000, 60));
        assert_eq!(r.take(1).unwrap().mean_ns, first);
        // 49 days past the first packet: refused, so the caller counts it itself.
        assert!(!r.add(0, first + 50 * 86_400 * 1_000_000_000, 60));
    }

    #[test]
    fn flow_memory_is_small() {
        // 1 M concurrent flows within 200 MB (issue #3): 168 B a flow is
        // 160 MiB of slab, the index ~10 MiB, the host table 10 MiB
        // (`cargo bench --bench memory` measures the whole).
        assert!(std::mem::size_of::<Flow>() <= 168, "Flow {} bytes", std::mem::size_of::<Flow>());
        assert!(FlowTable::bytes_per_flow() <= 178, "{} bytes", FlowTable::bytes_per_flow());
    }
}
