//! Per-host and per-(source, destination) damped statistics of every packet
//! (Kitsune's AfterImage idea): a weight decays by half every window
//! half-life, so `weight × ln 2 / half-life` is a rate and ratios of weights
//! are recent shares. The router adds most packets to their flow's
//! uncounted runs and credits them here in runs of at most 50 ms
//! ([`HostTracker::observe_in_flow`], [`HostTracker::settle`]).
//!
//! Memory is bounded by [`HostTracker::new`]'s caps; least recently seen
//! hosts and pairs are forgotten first.

use std::net::IpAddr;

use super::schema::{HOST_STATS, PAIR_STATS, WINDOWS_S};
use crate::packet::{tcp_flags, PacketInfo};
use crate::table::{FlowRuns, UncountedRun};
use gatewarden_core::lru::LruMap;

const W: usize = WINDOWS_S.len();
const HOST_SET: usize = 32;
const PAIR_SET: usize = 16;

/// Indexes of the damped weights kept per host.
mod h {
    pub const PKTS: usize = 0;
    pub const BYTES: usize = 1;
    pub const SYN: usize = 2;
    pub const SYNACK_RX: usize = 3;
    pub const RST_RX: usize = 4;
    pub const UNREACH_RX: usize = 5;
    pub const FLOWS: usize = 6;
    pub const FAILED: usize = 7;
    pub const NEW_DST: usize = 8;
    pub const N: usize = 9;
}

mod p {
    pub const PKTS: usize = 0;
    pub const BYTES: usize = 1;
    pub const SYN: usize = 2;
    pub const N: usize = 3;
}

/// Time in 10 ms ticks, wrapping; enough to tell "within 60 s".
fn tick(ns: u64) -> u32 {
    (ns / 10_000_000) as u32
}

/// A small set of recently seen values with their last-seen tick, kept in
/// two arrays so a lookup is one tight scan.
#[derive(Debug, Clone)]
struct RecentSet<T: Copy + Eq, const N: usize> {
    vals: [T; N],
    ticks: [u32; N],
    len: u8,
}

impl<T: Copy + Eq + Default, const N: usize> RecentSet<T, N> {
    fn new() -> Self {
        RecentSet { vals: [T::default(); N], ticks: [0; N], len: 0 }
    }

    /// Records `v` at `now`; returns true if it was not in the set.
    fn touch(&mut self, v: T, now: u32) -> bool {
        let len = self.len as usize;
        if let Some(i) = self.vals[..len].iter().position(|x| *x == v) {
            self.ticks[i] = now;
            return false;
        }
        let slot = if len < N {
            self.len += 1;
            len
        } else {
            // Replace the entry seen longest ago.
            (0..N).max_by_key(|&i| now.wrapping_sub(self.ticks[i])).unwrap_or(0)
        };
        self.vals[slot] = v;
        self.ticks[slot] = now;
        true
    }

    /// Distinct values seen within `window_ticks` before `now`.
    fn count_within(&self, now: u32, window_ticks: u32) -> usize {
        self.ticks[..self.len as usize].iter().filter(|t| now.wrapping_sub(**t) <= window_ticks).count()
    }
}

/// 2^x to about 1e-4 relative error: integer part by exponent bits,
/// fraction by a cubic. Decay factors need no more, and this is several
/// times faster than `f32::exp2` on the per-packet path.
#[inline]
fn fast_exp2(x: f32) -> f32 {
    if x < -126.0 {
        return 0.0;
    }
    if x >= 127.0 {
        return f32::MAX;
    }
    // floor(x) without a libm call (it was 2 % of the replay's instructions):
    // truncation rounds towards zero, so a negative fraction needs one less.
    let t = x as i32;
    let fl = if (t as f32) > x { t - 1 } else { t };
    exp2_split(fl, x - fl as f32)
}

/// 2^(fl + f) for an integer part `fl` in [-126, 127) and a fraction `f` in
/// [0, 1): the exponent bits times a cubic. Shared by [`fast_exp2`] and the
/// per-packet [`Clock::at`], which finds `fl` without the range tests.
#[inline]
fn exp2_split(fl: i32, f: f32) -> f32 {
    let poly = 1.0 + f * (0.695_976_1 + f * (0.224_940_4 + f * 0.079_083_5));
    f32::from_bits(((fl + 127) as u32) << 23) * poly
}

/// Landmark epochs: weights are stored scaled by `2^((t - L) / half-life)`
/// with `L` the start of the record's epoch, so adding at time `t` is one
/// multiply-add per weight touched and nothing decays on the hot path. A
/// record moves to the current epoch (one rescale) at most once per epoch.
const EPOCH_NS: u64 = 32_000_000_000;

/// Each window's factor `2^(seconds / half-life)`: the scale of a weight
/// `seconds` after its landmark (negative: decay over that time).
fn scale_over(seconds: f32) -> [f32; W] {
    let mut g = [0.0f32; W];
    for (gk, half) in g.iter_mut().zip(WINDOWS_S) {
        *gk = fast_exp2(seconds / half);
    }
    g
}

/// Per-packet scale factors, computed once and shared by every record the packet touches.
#[derive(Debug, Clone, Copy)]
struct Clock {
    now: u64,
    epoch: u64,
    g: [f32; W],
}

impl Clock {
    fn at(now: u64) -> Clock {
        let epoch = now / EPOCH_NS;
        let into = (now % EPOCH_NS) as f32 / 1e9;
        // `into` is in [0, 32 s): every exponent is in [0, 32), where the
        // general [`fast_exp2`]'s range tests and negative-floor fix never
        // apply, so truncation is the floor (the same bits), as it runs on
        // every packet.
        let mut g = [0.0f32; W];
        for (gk, half) in g.iter_mut().zip(WINDOWS_S) {
            let x = into / half;
            let fl = x as i32;
            *gk = exp2_split(fl, x - fl as f32);
        }
        Clock { now, epoch, g }
    }
}

/// Weights stored stat-major (`w[stat][window]`): a packet adds to a few
/// stats in every window, so each add is one contiguous run of `W` lanes.
#[derive(Debug, Clone)]
struct Damped<const N: usize> {
    epoch: u64,
    w: [[f32; W]; N],
}

impl<const N: usize> Damped<N> {
    fn new(c: &Clock) -> Self {
        Damped { epoch: c.epoch, w: [[0.0; W]; N] }
    }

    /// Adds `add[i]` (value `a` at time `c.now`) to every window's weight `i`.
    fn update(&mut self, c: &Clock, add: &[(usize, f32)]) {
        let g = if c.epoch == self.epoch {
            c.g
        } else if c.epoch > self.epoch {
            // Move to the current landmark: scale down by the epochs that passed.
            let gap_s = ((c.epoch - self.epoch) * (EPOCH_NS / 1_000_000_000)) as f32;
            let f = scale_over(-gap_s);
            for stat in &mut self.w {
                for (v, fk) in stat.iter_mut().zip(f) {
                    *v *= fk;
                }
            }
            self.epoch = c.epoch;
            c.g
        } else {
            // A late packet from an earlier epoch: scale it relative to this record's landmark.
            let back_s = (self.epoch * EPOCH_NS - c.now.min(self.epoch * EPOCH_NS)) as f32 / 1e9;
            scale_over(-back_s)
        };
        for &(i, a) in add {
            for (v, gk) in self.w[i].iter_mut().zip(g) {
                *v += a * gk;
            }
        }
    }

    /// The weights as they are at `now` (window-major: `[window][stat]`),
    /// without changing state.
    fn at(&self, now: u64) -> [[f32; N]; W] {
        let landmark = self.epoch * EPOCH_NS;
        let dt = if now >= landmark { (now - landmark) as f32 / 1e9 } else { -((landmark - now) as f32 / 1e9) };
        let mut out = [[0.0f32; N]; W];
        for (k, f) in scale_over(-dt).into_iter().enumerate() {
            for (i, stat) in self.w.iter().enumerate() {
                out[k][i] = stat[k] * f;
            }
        }
        out
    }
}

#[derive(Debug, Clone)]
struct HostStats {
    d: Damped<{ h::N }>,
    ports: RecentSet<u16, HOST_SET>,
    dsts: RecentSet<u32, HOST_SET>,
}

impl HostStats {
    /// A host first seen at `c`.
    fn new(c: &Clock) -> HostStats {
        HostStats { d: Damped::new(c), ports: RecentSet::new(), dsts: RecentSet::new() }
    }
}

#[derive(Debug, Clone)]
struct PairStats {
    d: Damped<{ p::N }>,
    ports: RecentSet<u16, PAIR_SET>,
}

/// A 32-bit tag of an address for the distinct-destination set (IPv6
/// folded; a rare collision only undercounts by one).
fn addr_tag(a: IpAddr) -> u32 {
    match a {
        IpAddr::V4(v4) => u32::from(v4),
        IpAddr::V6(v6) => {
            let o = u128::from(v6);
            (o as u32) ^ ((o >> 32) as u32).rotate_left(7) ^ ((o >> 64) as u32).rotate_left(13) ^ ((o >> 96) as u32)
        }
    }
}

/// The per-host and per-pair statistics of a network.
pub struct HostTracker {
    hosts: LruMap<u128, HostStats>,
    /// None for a tracker that keeps host statistics only (the router's).
    pairs: Option<LruMap<(u128, u128), PairStats>>,
    /// The router's tracker only: the one packet a host met for the first
    /// time has sent, held here instead of a host entry (see [`FirstPackets`]).
    first: Option<FirstPackets>,
}

/// Cells of the router's first-packet table (48 bytes each: 768 KiB).
pub const FIRST_PACKET_CELLS: usize = 1 << 14;

/// Fixed seed of the first-packet cells: replays hold and drop the same
/// packets on every run.
const FIRST_PACKET_SEED: u64 = 0x0f12_57ba_c4e7_0001;

/// What one sent packet adds to its sender's statistics.
#[derive(Debug, Clone, Copy)]
struct Sent {
    ts_ns: u64,
    len: u32,
    dst_tag: u32,
    dport: u16,
    syn: bool,
    new_flow: bool,
    has_ports: bool,
}

impl Sent {
    fn of(pkt: &PacketInfo, new_flow: bool) -> Sent {
        Sent {
            ts_ns: pkt.ts_ns,
            len: pkt.ip_len,
            dst_tag: addr_tag(pkt.dst),
            dport: pkt.dport,
            syn: is_bare_syn(pkt),
            new_flow,
            has_ports: pkt.proto == 6 || pkt.proto == 17,
        }
    }

    /// Adds it to `s`, the sender's statistics; `clock` is at its time.
    fn count(&self, s: &mut HostStats, clock: &Clock) {
        let t = tick(self.ts_ns);
        let new_dst = self.new_flow && s.dsts.touch(self.dst_tag, t);
        if self.new_flow && self.has_ports {
            s.ports.touch(self.dport, t);
        }
        // Only what this packet adds: most packets are neither a SYN nor
        // a new destination, and adding zeros cost half the update.
        let mut add = [(h::PKTS, 1.0), (h::BYTES, self.len as f32), (0, 0.0), (0, 0.0)];
        let mut n = 2;
        if self.syn {
            add[n] = (h::SYN, 1.0);
            n += 1;
        }
        if new_dst {
            add[n] = (h::NEW_DST, 1.0);
            n += 1;
        }
        s.d.update(clock, &add[..n]);
    }

    /// The statistics of a host whose only packet this is.
    fn alone(&self) -> HostStats {
        let clock = Clock::at(self.ts_ns);
        let mut s = HostStats::new(&clock);
        self.count(&mut s, &clock);
        s
    }
}

/// The first packet of each host the router's tracker met once, in place of
/// a host entry: under a spoofed flood every source is one, and each took a
/// 618-byte entry (and pushed a real host's out of the table) for a packet
/// nothing reads. A host's second packet, an answer it receives, its credited
/// runs or its finished flow make its entry, starting with this packet at its
/// own time, so the statistics are those of counting it at once; its snapshot
/// before then is computed from it. Direct-mapped: a newer first packet takes
/// an older one's cell, and that host then starts from its second packet
/// (counted in [`HostTracker::first_packets_dropped`]).
struct FirstPackets {
    cells: Box<[Option<(u128, Sent)>]>,
    hasher: foldhash::fast::FixedState,
    dropped: u64,
}

impl FirstPackets {
    fn new() -> FirstPackets {
        FirstPackets {
            cells: vec![None; FIRST_PACKET_CELLS].into_boxed_slice(),
            hasher: foldhash::fast::FixedState::with_seed(FIRST_PACKET_SEED),
            dropped: 0,
        }
    }

    fn cell(&self, k: u128) -> usize {
        use std::hash::BuildHasher;
        (self.hasher.hash_one(k) as usize) & (self.cells.len() - 1)
    }

    fn get(&self, k: u128) -> Option<&Sent> {
        match &self.cells[self.cell(k)] {
            Some((key, sent)) if *key == k => Some(sent),
            _ => None,
        }
    }

    fn take(&mut self, k: u128) -> Option<Sent> {
        let c = self.cell(k);
        match self.cells[c] {
            Some((key, sent)) if key == k => {
                self.cells[c] = None;
                Some(sent)
            }
            _ => None,
        }
    }

    fn hold(&mut self, k: u128, sent: Sent) {
        let c = self.cell(k);
        if self.cells[c].replace((k, sent)).is_some() {
            self.dropped += 1;
        }
    }
}

/// A TCP SYN without ACK: an attempt, counted in its sender's SYN share.
#[inline]
fn is_bare_syn(pkt: &PacketInfo) -> bool {
    pkt.proto == 6 && pkt.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN
}

/// What a packet's destination receives that tells about its own attempts:
/// the weight it adds to, if any.
#[inline]
fn received_answer(pkt: &PacketInfo) -> Option<usize> {
    if pkt.proto == 6 && pkt.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == (tcp_flags::SYN | tcp_flags::ACK) {
        Some(h::SYNACK_RX)
    } else if pkt.proto == 6 && pkt.tcp_flags & tcp_flags::RST != 0 {
        Some(h::RST_RX)
    } else if pkt.is_icmp_unreachable() {
        Some(h::UNREACH_RX)
    } else {
        None
    }
}

/// An address as one integer (IPv4 mapped into IPv6): cheaper to hash than `IpAddr`.
fn key(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// Host features: [`HOST_STATS`] for each window, window-major.
pub type HostFeatures = [f32; W * HOST_STATS.len()];
/// Pair features: [`PAIR_STATS`] for each window, window-major.
pub type PairFeatures = [f32; W * PAIR_STATS.len()];

fn ratio(a: f32, b: f32) -> f32 {
    if b <= 1e-6 {
        0.0
    } else {
        (a / b).min(1e6)
    }
}

impl HostTracker {
    /// A tracker remembering at most `max_hosts` hosts and `max_pairs` pairs:
    /// what dataset extraction needs, since its rows carry the pair columns.
    pub fn new(max_hosts: usize, max_pairs: usize) -> HostTracker {
        HostTracker { hosts: LruMap::new(max_hosts), pairs: Some(LruMap::new(max_pairs)), first: None }
    }

    /// A tracker of host statistics alone, for the router: its batches
    /// carry host snapshots and nothing reads pair features live, so a pair
    /// lookup and update per packet (and a new pair per spoofed packet) would
    /// be work and memory for nothing. [`HostTracker::pair_features`] gives zeros.
    pub fn hosts_only(max_hosts: usize) -> HostTracker {
        HostTracker { hosts: LruMap::new(max_hosts), pairs: None, first: Some(FirstPackets::new()) }
    }

    /// First packets dropped for another host's before their host sent again
    /// (that host's statistics start from its second packet): a steady rise
    /// is a flood of one-packet sources.
    pub fn first_packets_dropped(&self) -> u64 {
        self.first.as_ref().map_or(0, |f| f.dropped)
    }

    /// The entry of the host `k`, made if absent: from its held first packet
    /// if there is one, else fresh at `clock`.
    fn host_mut(&mut self, k: u128, clock: &Clock) -> &mut HostStats {
        if let Some(first) = self.first.as_mut().and_then(|f| f.take(k)) {
            let at = Clock::at(first.ts_ns);
            let s = self.hosts.get_or_insert_with(k, || HostStats::new(&at));
            first.count(s, &at);
            return s;
        }
        self.hosts.get_or_insert_with(k, || HostStats::new(clock))
    }

    /// Hosts currently remembered with an entry (not those of one packet held
    /// as their first).
    pub fn hosts(&self) -> usize {
        self.hosts.len()
    }

    /// Pairs currently remembered.
    pub fn pairs(&self) -> usize {
        self.pairs.as_ref().map_or(0, LruMap::len)
    }

    /// Bytes per remembered host and per pair, for the memory budget.
    pub fn bytes_per_host_and_pair() -> (usize, usize) {
        (LruMap::<u128, HostStats>::bytes_per_entry(), LruMap::<(u128, u128), PairStats>::bytes_per_entry())
    }

    /// Whether the tracker holds statistics for `addr`: a source the router
    /// has seen open flows before. Under overload such sources keep full
    /// processing while never-seen ones are sampled.
    pub fn knows(&self, addr: IpAddr) -> bool {
        let k = key(addr);
        self.hosts.peek(&k).is_some() || self.first.as_ref().is_some_and(|f| f.get(k).is_some())
    }

    /// Counts one packet. `new_flow` says the packet opened a flow (its
    /// source is the originator); only then can the source's set of
    /// destinations and ports change, so the sets are touched only then.
    pub fn observe(&mut self, pkt: &PacketInfo, new_flow: bool) {
        let now = pkt.ts_ns;
        let clock = Clock::at(now);
        let t = tick(now);
        let len = pkt.ip_len as f32;
        let syn = is_bare_syn(pkt);
        let has_ports = pkt.proto == 6 || pkt.proto == 17;
        let (ks, kd) = (key(pkt.src), key(pkt.dst));
        let sent = Sent::of(pkt, new_flow);
        match self.hosts.get(ks) {
            Some(s) => sent.count(s, &clock),
            None => match self.first.as_mut() {
                // Met for the first time: its packet waits (see `FirstPackets`).
                Some(first) if first.get(ks).is_none() => first.hold(ks, sent),
                _ => sent.count(self.host_mut(ks, &clock), &clock),
            },
        }
        if let Some(i) = received_answer(pkt) {
            let dst = self.host_mut(kd, &clock);
            dst.d.update(&clock, &[(i, 1.0)]);
        }
        let Some(pairs) = &mut self.pairs else { return };
        let pair = pairs.get_or_insert_with((ks, kd), || PairStats { d: Damped::new(&clock), ports: RecentSet::new() });
        if new_flow && has_ports {
            pair.ports.touch(pkt.dport, t);
        }
        pair.d.update(&clock, &[(p::PKTS, 1.0), (p::BYTES, len), (p::SYN, if syn { 1.0 } else { 0.0 })]);
    }

    /// Counts one packet of a flow, as [`HostTracker::observe`] does, but a
    /// packet that adds only packets and bytes to its sender (not the
    /// flow's first, not a bare SYN, not an answer that tells about the
    /// other end) goes into the flow's `uncounted` run for its direction
    /// instead of the host statistics: [`HostTracker::settle`] credits the
    /// run before the statistics are read. A tracker that keeps pairs
    /// (dataset extraction) counts every packet at once.
    #[inline]
    pub fn observe_in_flow(&mut self, pkt: &PacketInfo, new_flow: bool, from_originator: bool, mut runs: FlowRuns<'_>) {
        if !new_flow && self.pairs.is_none() && !is_bare_syn(pkt) && received_answer(pkt).is_none() {
            let dir = usize::from(!from_originator);
            if runs.add(dir, pkt.ts_ns, pkt.ip_len) {
                return;
            }
            // A counter would overflow, or the runs span too long: credit
            // both (their shared start moves on), then start anew.
            let (originator, responder) = if from_originator { (pkt.src, pkt.dst) } else { (pkt.dst, pkt.src) };
            self.settle(originator, responder, &mut runs);
            if runs.add(dir, pkt.ts_ns, pkt.ip_len) {
                return;
            }
        }
        self.observe(pkt, new_flow);
    }

    /// Credits a flow's uncounted runs to its originator and responder and
    /// empties them: each run's packets and bytes as if they had all come at
    /// the run's mean time. A damped weight is convex in time, so for packets
    /// that is exact to second order (a run spans at most 50 ms,
    /// [`crate::table::MAX_RUN_SPAN_NS`]: off by at most 6 parts in 10 000 in
    /// the 1 s window, for packets bunched at both ends); bytes are credited
    /// at the packets' mean time, off at first order only when packet sizes
    /// move with time within the run (at most ln 2 × 50 ms ÷ the half-life,
    /// 3.5 % in the 1 s window).
    pub fn settle(&mut self, originator: IpAddr, responder: IpAddr, runs: &mut FlowRuns<'_>) {
        self.credit(originator, runs.take(0));
        self.credit(responder, runs.take(1));
    }

    fn credit(&mut self, addr: IpAddr, run: Option<UncountedRun>) {
        let Some(run) = run else { return };
        let clock = Clock::at(run.mean_ns);
        let s = self.host_mut(key(addr), &clock);
        s.d.update(&clock, &[(h::PKTS, run.packets as f32), (h::BYTES, run.bytes as f32)]);
    }

    /// Counts a finished flow of `src` (for the failed-flow share).
    pub fn flow_finished(&mut self, src: IpAddr, failed: bool, now: u64) {
        let clock = Clock::at(now);
        let s = self.host_mut(key(src), &clock);
        s.d.update(&clock, &[(h::FLOWS, 1.0), (h::FAILED, if failed { 1.0 } else { 0.0 })]);
    }

    /// The host features of `addr` at `now` (zeros if unknown).
    pub fn host_features(&self, addr: IpAddr, now: u64) -> HostFeatures {
        let mut out = [0.0; W * HOST_STATS.len()];
        let k = key(addr);
        let alone;
        let s = match self.hosts.peek(&k) {
            Some(s) => s,
            None => match self.first.as_ref().and_then(|f| f.get(k)) {
                // One packet held: the statistics of a host that sent only it.
                Some(first) => {
                    alone = first.alone();
                    &alone
                }
                None => return out,
            },
        };
        let w = s.d.at(now);
        let t = tick(now);
        for k in 0..W {
            let half = WINDOWS_S[k];
            let rate = std::f32::consts::LN_2 / half;
            let win_ticks = (half * 100.0) as u32;
            let v = &w[k];
            let o = &mut out[k * HOST_STATS.len()..(k + 1) * HOST_STATS.len()];
            o[0] = v[h::PKTS] * rate;
            o[1] = v[h::BYTES] * rate;
            o[2] = s.ports.count_within(t, win_ticks) as f32;
            o[3] = s.dsts.count_within(t, win_ticks) as f32;
            o[4] = ratio(v[h::SYN], v[h::PKTS]);
            o[5] = ratio(v[h::SYNACK_RX], v[h::SYN]);
            o[6] = ratio(v[h::RST_RX], v[h::PKTS]);
            o[7] = ratio(v[h::UNREACH_RX], v[h::PKTS]);
            o[8] = ratio(v[h::FAILED], v[h::FLOWS]);
            o[9] = v[h::NEW_DST] * rate;
        }
        out
    }

    /// The pair features of `src → dst` at `now` (zeros if unknown, or if
    /// this tracker keeps hosts only).
    pub fn pair_features(&self, src: IpAddr, dst: IpAddr, now: u64) -> PairFeatures {
        let mut out = [0.0; W * PAIR_STATS.len()];
        let Some(pairs) = &self.pairs else { return out };
        let Some(s) = pairs.peek(&(key(src), key(dst))) else { return out };
        let w = s.d.at(now);
        let back = pairs.peek(&(key(dst), key(src))).map(|b| b.d.at(now));
        let t = tick(now);
        for k in 0..W {
            let half = WINDOWS_S[k];
            let rate = std::f32::consts::LN_2 / half;
            let v = &w[k];
            let o = &mut out[k * PAIR_STATS.len()..(k + 1) * PAIR_STATS.len()];
            o[0] = v[p::PKTS] * rate;
            o[1] = v[p::BYTES] * rate;
            o[2] = s.ports.count_within(t, (half * 100.0) as u32) as f32;
            o[3] = ratio(v[p::SYN], v[p::PKTS]);
            o[4] = back.map_or(0.0, |b| ratio(b[k][p::PKTS], v[p::PKTS]));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(t: f64, src: &str, dst: &str, dport: u16, proto: u8, flags: u8) -> PacketInfo {
        PacketInfo {
            ts_ns: (t * 1e9) as u64,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto,
            sport: 40000,
            dport,
            tcp_flags: flags,
            tcp_seq: 0,
            tcp_ack: 0,
            icmp_type: 0,
            icmp_code: 0,
            ip_len: 100,
            payload_len: 60,
            fragment: None,
        }
    }

    #[test]
    fn steady_rate_converges_to_the_true_rate() {
        let mut t = HostTracker::new(100, 100);
        // 50 packets/s for 300 s.
        for i in 0..15_000 {
            t.observe(&pkt(i as f64 * 0.02, "192.0.2.1", "198.51.100.1", 1883, 6, 0x18), i % 500 == 0);
        }
        let f = t.host_features("192.0.2.1".parse().unwrap(), (300.0 * 1e9) as u64);
        for k in 0..3 {
            let rate = f[k * HOST_STATS.len()];
            assert!((rate - 50.0).abs() < 2.0, "window {k}: rate {rate}");
            assert!((f[k * HOST_STATS.len() + 1] - 5000.0).abs() < 200.0);
        }
        assert_eq!(f[3 + HOST_STATS.len()], 1.0, "one distinct destination in the 10 s window");
    }

    /// Feeds `pkts` through a flow table into two host-only trackers, one
    /// counting every packet ([`HostTracker::observe`]), one deferring into
    /// the flows as the router does, settled at every 100 ms cut; returns
    /// both trackers' features of every address at every cut.
    fn exact_and_deferred(pkts: &[PacketInfo]) -> Vec<(IpAddr, HostFeatures, HostFeatures)> {
        exact_and_deferred_cut(pkts, 100_000_000, 100, usize::MAX)
    }

    /// [`exact_and_deferred`] with cuts every `cut_ns`, trackers of `hosts`
    /// hosts, and at most `max` updates taken per cut.
    fn exact_and_deferred_cut(
        pkts: &[PacketInfo],
        cut_ns: u64,
        hosts: usize,
        max: usize,
    ) -> Vec<(IpAddr, HostFeatures, HostFeatures)> {
        let mut table = crate::table::FlowTable::new(64, 30, 120);
        let (mut exact, mut deferred) = (HostTracker::hosts_only(hosts), HostTracker::hosts_only(hosts));
        let mut out = Vec::new();
        let mut next_cut = pkts.first().map_or(0, |p| p.ts_ns) + cut_ns;
        let cut = |table: &mut crate::table::FlowTable,
                   exact: &HostTracker,
                   deferred: &mut HostTracker,
                   now,
                   out: &mut Vec<_>| {
            for (_, mut f) in table.take_exports() {
                deferred.settle(f.src(), f.dst(), &mut f.runs());
            }
            table.take_updates_crediting(max, &mut |o, r, u| deferred.settle(o, r, u));
            let addrs: std::collections::BTreeSet<IpAddr> =
                pkts.iter().flat_map(|p| [p.src, p.dst]).filter(|a| !a.to_string().starts_with("10.")).collect();
            for a in addrs {
                out.push((a, exact.host_features(a, now), deferred.host_features(a, now)));
            }
        };
        for p in pkts {
            while p.ts_ns >= next_cut {
                cut(&mut table, &exact, &mut deferred, next_cut, &mut out);
                next_cut += cut_ns;
            }
            let o = table.observe(p);
            exact.observe(p, o.new_flow);
            deferred.observe_in_flow(p, o.new_flow, o.from_originator, table.uncounted(o.index));
        }
        cut(&mut table, &exact, &mut deferred, next_cut, &mut out);
        out
    }

    /// Whether two feature vectors agree: every column within `tol` of the
    /// larger (rates, shares) and the distinct counts exactly.
    fn agree(a: &HostFeatures, b: &HostFeatures, tol: f32) -> bool {
        a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol * x.abs().max(y.abs()) + 1e-6)
    }

    #[test]
    fn packets_deferred_into_their_flows_give_the_host_features_of_counting_each() {
        // A download (data one way, acknowledgements the other), a UDP
        // stream with steady sizes, a scan with answers: the deferred
        // tracker must give what counting every packet gives, to the
        // second-order error of crediting a run at its mean time.
        let mut pkts = Vec::new();
        for i in 0..3000u32 {
            let ts = f64::from(i) * 0.001;
            let mut data = pkt(ts, "198.51.100.1", "192.0.2.10", 40000, 6, 0x10);
            data.sport = 443;
            data.ip_len = 1500;
            pkts.push(data);
            if i % 2 == 0 {
                pkts.push(pkt(ts + 0.0002, "192.0.2.10", "198.51.100.1", 443, 6, 0x10));
            }
            pkts.push(pkt(ts + 0.0004, "192.0.2.20", "198.51.100.2", 5000, 17, 0));
            if i % 10 == 0 {
                let port = (i / 10) as u16 + 1;
                pkts.push(pkt(ts + 0.0006, "203.0.113.9", "192.0.2.10", port, 6, 0x02));
                let mut rst = pkt(ts + 0.0008, "192.0.2.10", "203.0.113.9", 40000, 6, 0x14);
                rst.sport = port;
                pkts.push(rst);
            }
        }
        let rows = exact_and_deferred(&pkts);
        assert!(rows.len() > 100);
        for (a, exact, deferred) in &rows {
            assert!(agree(exact, deferred, 1e-3), "{a}: exact {exact:?}\ndeferred {deferred:?}");
        }
        // And it did defer: the stream's and the download's packets.
        assert!(rows.iter().any(|(_, e, _)| e[0] > 100.0));
    }

    /// A spoofed flood, a new source per SYN, through the router's tracker
    /// of 100 hosts: the real hosts keep their entries and their features
    /// (each forged source's one packet is held, not given an entry that
    /// pushes a real host out), a forged source's snapshot is that of its one
    /// packet, and a forged source that sends again starts from both.
    #[test]
    fn a_spoofed_flood_takes_no_host_entry_and_pushes_no_real_host_out() {
        let mut router = HostTracker::hosts_only(100);
        let mut exact = HostTracker::new(100, 100);
        let mut real = Vec::new();
        for i in 0..50u32 {
            let src = format!("192.0.2.{}", i + 1);
            for j in 0..5u32 {
                let p = pkt(f64::from(i * 5 + j) * 0.001, &src, "198.51.100.1", 443, 6, 0x10);
                router.observe(&p, j == 0);
                exact.observe(&p, j == 0);
            }
            real.push(src.parse::<IpAddr>().unwrap());
        }
        let now = 2_000_000_000;
        let before: Vec<_> = real.iter().map(|&a| router.host_features(a, now)).collect();
        for i in 0..100_000u32 {
            let forged = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let mut p = pkt(0.5, "10.0.0.1", "198.51.100.1", 80, 6, 0x02);
            p.src = forged;
            router.observe(&p, true);
        }
        assert_eq!(router.hosts(), 50, "the 50 real hosts, no forged one");
        for (a, b) in real.iter().zip(&before) {
            assert!(router.knows(*a));
            assert_eq!(&router.host_features(*a, now), b, "{a}");
        }
        assert!(router.first_packets_dropped() >= 100_000 - FIRST_PACKET_CELLS as u64);
        // The last forged source's one packet, as the exact tracker counts it.
        let last = pkt(0.5, "10.1.134.159", "198.51.100.1", 80, 6, 0x02);
        assert_eq!(last.src, IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + 99_999)));
        exact.observe(&last, true);
        assert!(router.knows(last.src));
        assert_eq!(router.host_features(last.src, now), exact.host_features(last.src, now));
        // It sends again: its entry starts from its first packet.
        let again = pkt(0.6, "10.1.134.159", "198.51.100.2", 80, 6, 0x02);
        router.observe(&again, true);
        exact.observe(&again, true);
        assert_eq!(router.host_features(last.src, now), exact.host_features(last.src, now));
        assert_eq!(router.hosts(), 51);
    }

    /// A cut that takes fewer updates than flows changed (a flood's backlog,
    /// `flow.max_batch_flows`) still credits every changed flow's uncounted
    /// packets before host features are read, those it leaves listed too:
    /// the features are those of counting each packet.
    #[test]
    fn a_cut_that_leaves_updates_for_the_next_still_credits_every_flow() {
        let mut pkts = Vec::new();
        for i in 0..2000u32 {
            let ts = f64::from(i) * 0.001;
            // Twenty streams, each a run of packets within every cut.
            let n = (i % 20) as u16;
            pkts.push(pkt(ts, "192.0.2.20", "198.51.100.2", 5000 + n, 17, 0));
            let mut back = pkt(ts + 0.0003, "198.51.100.2", "192.0.2.20", 53, 17, 0);
            back.dport = 5000 + n;
            pkts.push(back);
        }
        let rows = exact_and_deferred_cut(&pkts, 100_000_000, 100, 3);
        assert!(rows.len() > 20);
        for (a, exact, deferred) in &rows {
            assert!(agree(exact, deferred, 1e-3), "{a}: exact {exact:?}\ndeferred {deferred:?}");
        }
        assert!(rows.iter().any(|(_, e, _)| e[0] > 100.0), "the streams' packets were deferred and counted");
    }

    /// The batch interval may be a minute: runs still span at most 50 ms,
    /// so a stream whose packets grow in size reads as when counting each.
    #[test]
    fn a_long_batch_interval_credits_runs_as_often_as_a_short_one() {
        let pkts: Vec<PacketInfo> = (0..20_000u32)
            .map(|i| {
                let mut p = pkt(1.0 + f64::from(i) * 0.001, "192.0.2.20", "198.51.100.2", 5000, 17, 0);
                p.ip_len = 60 + (i % 1000);
                p
            })
            .collect();
        let rows = exact_and_deferred_cut(&pkts, 10_000_000_000, 100, usize::MAX);
        assert_eq!(rows.len(), 2 * 2, "two cuts, two hosts");
        for (a, exact, deferred) in &rows {
            for (c, (x, y)) in exact.iter().zip(deferred).enumerate() {
                // Bytes at the 50 ms span's bound (ln 2 × 0.05 s ÷ 1 s), packets to 10⁻³.
                let tol = if c % HOST_STATS.len() == 1 { 0.035 } else { 1e-3 };
                assert!((x - y).abs() <= tol * x.abs().max(y.abs()) + 1e-4, "{a} column {c}: {x} against {y}");
            }
        }
    }

    /// A host whose packets all wait in runs is touched in the host table at
    /// least every 50 ms: a stream of new sources that a full table of 100
    /// takes in 1 s, but not in 50 ms, does not push it out (with runs
    /// credited only at the 1 s cut it was forgotten, its rates restarting).
    #[test]
    fn a_busy_host_in_runs_is_not_pushed_out_of_the_host_table_by_new_sources() {
        let mut pkts = Vec::new();
        for i in 0..4000u32 {
            let ts = 1.0 + f64::from(i) * 0.000_5;
            pkts.push(pkt(ts, "192.0.2.20", "198.51.100.2", 5000, 17, 0));
            if i % 2 == 0 {
                // 1 000 new sources a second, 50 in any 50 ms.
                let s = format!("10.{}.{}.1", i / 512, (i / 2) % 256);
                pkts.push(pkt(ts + 0.000_1, &s, "198.51.100.9", 80, 6, 0x02));
            }
        }
        let rows = exact_and_deferred_cut(&pkts, 1_000_000_000, 100, usize::MAX);
        let busy: IpAddr = "192.0.2.20".parse().unwrap();
        let (_, exact, deferred) = rows.iter().rfind(|(a, _, _)| *a == busy).unwrap();
        for k in 0..W {
            let (x, y) = (exact[k * HOST_STATS.len()], deferred[k * HOST_STATS.len()]);
            assert!(x > 0.0 && (x - y).abs() <= 1e-3 * x, "window {k}: packet rate {y} against {x}");
        }
    }

    proptest::proptest! {
        /// Random packets of a few hosts and flows, any flags and sizes:
        /// packet counts, shares and distinct sets agree to 1e-3, bytes
        /// within the first-order bound of crediting a run (at most 50 ms)
        /// at its packets' mean time: ln 2 × 0.05 s ÷ the 1 s half-life,
        /// 3.5 % (the test allows 7 %).
        #[test]
        fn deferred_host_statistics_agree_with_counting_every_packet(
            steps in proptest::collection::vec((0u8..4, 0u8..4, 0u16..3, 0u8..6, 40u32..1500, 0u32..40_000, proptest::bool::ANY), 1..400),
        ) {
            let mut ts = 1_000_000_000u64;
            let flags = [0x02, 0x12, 0x10, 0x14, 0x18, 0x11];
            let pkts: Vec<PacketInfo> = steps
                .into_iter()
                .map(|(s, d, port, fl, len, gap_us, back)| {
                    ts += u64::from(gap_us) * 1_000;
                    let (a, b) = (format!("192.0.2.{}", s + 1), format!("198.51.100.{}", d + 1));
                    let mut p = pkt(0.0, &a, &b, 80 + port, 6, flags[fl as usize]);
                    if back {
                        // The other end answering, in the same flow.
                        p = PacketInfo { src: p.dst, dst: p.src, sport: p.dport, dport: p.sport, ..p };
                    }
                    p.ts_ns = ts;
                    p.ip_len = len;
                    if fl == 4 && s == 3 {
                        p.proto = 17;
                        p.tcp_flags = 0;
                    }
                    p
                })
                .collect();
            for (a, exact, deferred) in exact_and_deferred(&pkts) {
                for k in 0..W {
                    let row = |v: &HostFeatures| {
                        let mut r = [0.0f32; HOST_STATS.len()];
                        r.copy_from_slice(&v[k * HOST_STATS.len()..(k + 1) * HOST_STATS.len()]);
                        r
                    };
                    let (e, d) = (row(&exact), row(&deferred));
                    for (c, (x, y)) in e.iter().zip(d.iter()).enumerate() {
                        let tol = if c == 1 { 0.07 } else { 1e-3 };
                        proptest::prop_assert!((x - y).abs() <= tol * x.abs().max(y.abs()) + 1e-4, "{} window {} column {}: {} against {}", a, k, c, x, y);
                    }
                }
            }
        }
    }

    #[test]
    fn a_run_too_long_for_its_counters_is_credited_and_nothing_is_lost() {
        // 200 000 packets of one flow in one run: the 16-bit packet count
        // and the 32-bit offset sum overflow, and each overflow credits the
        // run so far instead of dropping a packet.
        let mut table = crate::table::FlowTable::new(4, 30, 3600);
        let mut t = HostTracker::hosts_only(10);
        let n = 200_000u32;
        for i in 0..n {
            let mut p = pkt(1.0 + f64::from(i) * 0.000_01, "192.0.2.20", "198.51.100.2", 5000, 17, 0);
            p.ip_len = 60_000;
            let o = table.observe(&p);
            t.observe_in_flow(&p, o.new_flow, o.from_originator, table.uncounted(o.index));
        }
        table.take_updates_crediting(usize::MAX, &mut |o, r, u| t.settle(o, r, u));
        let now = 3_000_000_000;
        let a: IpAddr = "192.0.2.20".parse().unwrap();
        let s = t.hosts.peek(&key(a)).unwrap();
        // The 60 s window's weight, brought back to the last packet: 2 s of
        // sending at 100 000 packets/s, half-life 60 s, decays by at most 3 %.
        let w = s.d.at(now)[2];
        assert!(w[h::PKTS] > 0.96 * n as f32 && w[h::PKTS] <= n as f32, "{}", w[h::PKTS]);
        assert!(w[h::BYTES] > 0.96 * n as f32 * 60_000.0, "{}", w[h::BYTES]);
    }

    #[test]
    fn a_hosts_only_tracker_gives_the_same_host_features_and_keeps_no_pairs() {
        let (mut full, mut hosts) = (HostTracker::new(100, 100), HostTracker::hosts_only(100));
        // A scan with answers and some ordinary traffic, both directions.
        for i in 0..400u16 {
            let ts = i as f64 * 0.01;
            for p in [
                pkt(ts, "203.0.113.9", "192.0.2.10", i + 1, 6, 0x02),
                pkt(ts + 0.001, "192.0.2.10", "203.0.113.9", 40000, 6, 0x14),
                pkt(ts + 0.002, "192.0.2.20", "198.51.100.1", 1883, 6, 0x18),
            ] {
                let new_flow = p.tcp_flags == 0x02 || i % 50 == 0;
                full.observe(&p, new_flow);
                hosts.observe(&p, new_flow);
            }
        }
        full.flow_finished("203.0.113.9".parse().unwrap(), true, 4_000_000_000);
        hosts.flow_finished("203.0.113.9".parse().unwrap(), true, 4_000_000_000);
        for a in ["203.0.113.9", "192.0.2.10", "192.0.2.20", "198.51.100.1"] {
            let a = a.parse().unwrap();
            assert_eq!(full.host_features(a, 4_100_000_000), hosts.host_features(a, 4_100_000_000), "{a}");
        }
        assert!(full.pairs() >= 3);
        assert_eq!(hosts.pairs(), 0);
        let (s, d) = ("203.0.113.9".parse().unwrap(), "192.0.2.10".parse().unwrap());
        assert!(full.pair_features(s, d, 4_100_000_000).iter().any(|x| *x > 0.0));
        assert!(hosts.pair_features(s, d, 4_100_000_000).iter().all(|x| *x == 0.0));
    }

    #[test]
    fn scan_shows_many_ports_high_syn_ratio_and_rst_replies() {
        let mut t = HostTracker::new(100, 100);
        for port in 1..=200u16 {
            let ts = port as f64 * 0.002;
            t.observe(&pkt(ts, "203.0.113.9", "192.0.2.10", port, 6, 0x02), true);
            t.observe(&pkt(ts + 0.0001, "192.0.2.10", "203.0.113.9", 40000, 6, 0x14), false);
        }
        let f = t.host_features("203.0.113.9".parse().unwrap(), 400_000_000);
        assert_eq!(f[2], 32.0, "distinct ports saturate at 32");
        assert!(f[4] > 0.99, "syn ratio {}", f[4]);
        assert!(f[6] > 0.9, "rst ratio {}", f[6]);
        assert_eq!(f[5], 0.0, "no SYN-ACKs");
        let pf = t.pair_features("203.0.113.9".parse().unwrap(), "192.0.2.10".parse().unwrap(), 400_000_000);
        assert_eq!(pf[2], 16.0);
        assert!((pf[4] - 1.0).abs() < 0.05, "one reply per probe: {}", pf[4]);
    }

    #[test]
    fn decay_halves_per_half_life() {
        let mut t = HostTracker::new(10, 10);
        t.observe(&pkt(0.0, "192.0.2.1", "192.0.2.2", 80, 17, 0), true);
        let a = t.host_features("192.0.2.1".parse().unwrap(), 0);
        let b = t.host_features("192.0.2.1".parse().unwrap(), 10_000_000_000);
        let r = b[HOST_STATS.len()] / a[HOST_STATS.len()];
        assert!((r - 0.5).abs() < 1e-3, "10 s window halves in 10 s: {r}");
        assert_eq!(b[3 + HOST_STATS.len()], 1.0, "destination still within 10 s");
        let c = t.host_features("192.0.2.1".parse().unwrap(), 70_000_000_000);
        assert_eq!(c[3 + 2 * HOST_STATS.len()], 0.0, "destination older than 60 s no longer counts");
    }

    #[test]
    fn fast_exp2_is_accurate_enough() {
        let mut x = 40.0f32;
        while x > -30.0 {
            let (a, b) = (fast_exp2(x), x.exp2());
            assert!(((a - b) / b).abs() < 2e-4, "2^{x}: {a} vs {b}");
            x -= 0.013;
        }
        assert_eq!(fast_exp2(0.0), 1.0);
        assert_eq!(fast_exp2(-1000.0), 0.0);
        // The integer floor gives what `f32::floor` gave, bit for bit, on
        // whole numbers, just either side of them, and fractions of both signs.
        let with_libm_floor = |x: f32| {
            let fl = x.floor();
            let f = x - fl;
            let poly = 1.0 + f * (0.695_976_1 + f * (0.224_940_4 + f * 0.079_083_5));
            f32::from_bits(((fl as i32 + 127) as u32) << 23) * poly
        };
        for whole in -125..127 {
            let w = whole as f32;
            for x in [w, w.next_up(), w.next_down(), w + 0.25, w - 0.25, w + 0.999] {
                if (-126.0..127.0).contains(&x) {
                    assert_eq!(fast_exp2(x).to_bits(), with_libm_floor(x).to_bits(), "2^{x}");
                }
            }
        }
    }

    #[test]
    fn a_packets_clock_scales_exactly_as_the_general_exp2_does() {
        // Every stamp within an epoch, densely at its ends: the per-packet
        // shortcut must give the general path's bits, so features do not move.
        let mut stamps: Vec<u64> = (0..20_000u64).map(|i| i * 1_600_000 + i % 7).collect();
        stamps.extend((0..2_000u64).map(|i| EPOCH_NS - 1 - i * 997));
        stamps.extend((0..2_000u64).map(|i| 5 * EPOCH_NS + i * 13));
        for now in stamps {
            let into = (now % EPOCH_NS) as f32 / 1e9;
            let (got, want) = (Clock::at(now).g, scale_over(into));
            assert_eq!(got.map(f32::to_bits), want.map(f32::to_bits), "at {now} ns ({into} s into the epoch)");
        }
    }

    #[test]
    fn weights_carry_across_epochs_and_late_packets() {
        let mut t = HostTracker::new(10, 10);
        // One packet a second for 100 s crosses three 32-second landmarks.
        for i in 0..100 {
            t.observe(&pkt(i as f64, "192.0.2.1", "192.0.2.2", 80, 17, 0), i == 0);
        }
        let f = t.host_features("192.0.2.1".parse().unwrap(), 99_000_000_000);
        let rate60 = f[2 * HOST_STATS.len()];
        // Steady 1 packet/s: the 60 s window has converged to within its own lag.
        assert!((rate60 - 0.68).abs() < 0.1, "60 s window rate {rate60}");
        let rate1 = f[0];
        assert!((rate1 - 1.0).abs() < 0.4, "1 s window rate {rate1}");
        // A late packet from 40 s ago still counts, decayed.
        t.observe(&pkt(59.0, "192.0.2.1", "192.0.2.2", 80, 17, 0), false);
        let g = t.host_features("192.0.2.1".parse().unwrap(), 99_000_000_000);
        let added = g[2 * HOST_STATS.len()] - rate60;
        let want = std::f32::consts::LN_2 / 60.0 * (-40.0f32 / 60.0).exp2();
        assert!((added - want).abs() < 1e-3, "late packet adds {added}, expected {want}");
    }

    #[test]
    fn memory_is_bounded_under_spoofed_sources() {
        let mut t = HostTracker::new(1000, 2000);
        for i in 0..100_000u32 {
            let mut p = pkt(i as f64 * 1e-5, "10.0.0.1", "192.0.2.10", 80, 6, 0x02);
            p.src = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            t.observe(&p, true);
        }
        assert_eq!(t.hosts(), 1000);
        assert_eq!(t.pairs(), 2000);
    }
}
