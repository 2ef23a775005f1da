//! Explainable detectors over flow records: each finding carries a sentence
//! with the numbers that triggered it.
//!
//! Flow records arrive as cumulative snapshots (the router re-sends a flow
//! each batch it changed in), so the detector keeps the last counts per flow
//! and works on deltas. All state is bounded: at most `MAX_SOURCES` sources
//! and `MAX_DESTS` victims are tracked (least recently seen go first), and
//! each keeps bounded sets.
//!
//! **Memory.** The per-source caps alone allowed ~20 MB a source (65 536
//! attempts and their indexes, 16 384 flows), kept after the source went
//! quiet: a red team's spoofed sources, each 65 536 SYNs in 5 s, took the
//! detector to 384 MB at 16 sources. So the room in all per-source tables,
//! beyond a small allowance each, is one shared budget
//! ([`MAX_WINDOW_ENTRIES`]): each source's share is counted as its tables
//! grow; past the budget the windows are aged to the present, then the
//! sources holding the most are cut, oldest entries first, to one common
//! level (the rest keep all theirs), then whole sources are evicted if
//! that was not enough. Tables give back room once a trim leaves them a
//! quarter full, and every window's length of capture time the windows of
//! quiet sources are aged too (idle expiry). What a cut drops can only
//! lower a count: a finding is missed sooner than made up.
//!
//! This file is the facade, [`Heuristics`]: the per-source bookkeeping the
//! detectors share (flow deltas, unanswered flows, the attempt window, one
//! finding per kind per window) and the dispatch to one file per detector, in
//! the order their findings are reported:
//!
//! | finds | file |
//! |---|---|
//! | port scans (TCP, UDP) | `port_scan.rs` |
//! | host sweeps | `host_sweep.rs` |
//! | brute force: connection rate to an auth port (SSH … MQTT) | `brute_force_connections.rs` |
//! | brute force: sessions to an interactive login (SSH, telnet …) | `brute_force_sessions.rs` |
//! | brute force: web-login guessing over HTTP | `brute_force_http.rs` |
//! | slow HTTP (slowloris), both rules | `slow_http.rs` |
//! | SYN, UDP and ICMP floods from one source | `floods.rs` |
//! | SYN floods from many (spoofed) sources | `syn_flood_distributed.rs` |
//!
//! Shared types: [`Detection`] and the per-record facts in `detection.rs`,
//! the sliding windows in `windows.rs`, the service ports in `services.rs`.
//! Detector files import only those, never this facade.

mod brute_force_connections;
mod brute_force_http;
mod brute_force_sessions;
mod detection;
mod floods;
mod host_sweep;
mod port_scan;
mod services;
mod slow_http;
mod syn_flood_distributed;
mod windows;

use std::net::IpAddr;

use gatewarden_flow::ConnState;
use gatewarden_proto::messages::{AttackKind, FlowRecord, Proto};

pub use self::brute_force_http::HTTP_SMALL_REPLY_BYTES;
pub use self::detection::Detection;
pub use self::floods::{
    looks_like_media_stream, outside_connection, UDP_FLOOD_MIN_PORTS, UDP_FLOOD_RATE_FACTOR, UDP_STREAM_MIN_MEAN_BYTES,
};
pub use self::services::{service_name, AUTH_PORTS, LOGIN_PORTS, WEB_PORTS};
pub use self::slow_http::{SLOW_HTTP_HEAD_BYTES, SLOW_HTTP_MAX_BPS};
pub use self::syn_flood_distributed::MAX_DESTS;

use self::brute_force_http::WebSessions;
use self::brute_force_sessions::Logins;
use self::detection::Observed;
use self::floods::Rates;
use self::host_sweep::Peers;
use self::slow_http::WaitingRequests;
use self::syn_flood_distributed::Victims;
use self::windows::{AttemptWindow, HashMap, HashSet};
use crate::config::DetectorConfig;

/// Most sources tracked at once.
pub const MAX_SOURCES: usize = 16_384;
/// Most flows remembered (for deltas) per source.
const MAX_FLOWS_PER_SOURCE: usize = 16_384;

/// What the detectors keep about one flow (16 bytes, as the counts alone took).
#[derive(Debug, Clone, Copy)]
struct FlowSeen {
    /// Packets sent when last seen.
    packets: u32,
    /// The number of its attempt in the window, to mark it answered or not
    /// ([`AttemptWindow::mark`]); [`AttemptWindow::no_attempt`] if it made none.
    attempt: u32,
    /// IP bytes sent when last seen.
    bytes: u64,
}

/// What the detectors keep about one source.
#[derive(Debug, Default)]
struct SourceState {
    last_ns: u64,
    /// Flow id → what it had sent when last seen, and its attempt.
    flows: HashMap<u64, FlowSeen>,
    /// When `flows` was last emptied (full, or its room given back): a flow that began
    /// before then and is not in `flows` may have been counted already, so it counts as
    /// going on, not new, and adds nothing until its next snapshot. Without it, a long
    /// flow's whole count arrived again as one delta: a made-up flood.
    forgot_ns: u64,
    /// New connection attempts (scans, sweeps, connection-rate brute force, floods' scan check).
    attempts: AttemptWindow,
    /// Flows that went unanswered (half-open TCP, one-way UDP), to count an aborted
    /// handshake's SYN once; the unanswered shares are counted in `attempts`.
    failed: HashSet<u64>,
    /// (Kind, a media stream look-alike) → capture time of its last finding (one per
    /// kind per window; a UDP flood's stream look-alikes apart, see [`floods::looks_like_media_stream`]).
    reported: HashMap<(AttackKind, bool), u64>,
    /// Hosts that answered this source ([`host_sweep`]).
    peers: Peers,
    /// Sessions to login services ([`brute_force_sessions`]).
    logins: Logins,
    /// Finished web sessions with a small reply ([`brute_force_http`]).
    web: WebSessions,
    /// Requests to web ports waiting for a response ([`slow_http`]).
    waiting: WaitingRequests,
    /// SYN, UDP and ICMP packet counts ([`floods`]).
    rates: Rates,
}

impl SourceState {
    /// Empties the state, keeping its allocations: a flood's sources come and go by the
    /// thousand, and allocating (then freeing) a dozen small tables for each was most of what
    /// a one-packet source cost.
    fn clear(&mut self) {
        let SourceState { last_ns, flows, forgot_ns, attempts, failed, reported, peers, logins, web, waiting, rates } =
            self;
        *last_ns = 0;
        *forgot_ns = 0;
        flows.clear();
        attempts.clear();
        failed.clear();
        reported.clear();
        peers.clear();
        logins.clear();
        web.clear();
        waiting.clear();
        rates.clear();
    }

    /// Entries its tables have room for.
    fn capacity(&self) -> usize {
        self.flows.capacity()
            + self.attempts.capacity()
            + self.failed.capacity()
            + self.reported.capacity()
            + self.peers.capacity()
            + self.logins.capacity()
            + self.web.capacity()
            + self.waiting.capacity()
            + self.rates.capacity()
    }

    /// Room it takes from the shared budget: beyond the allowance every state keeps.
    fn charged(&self) -> usize {
        self.capacity().saturating_sub(MAX_SPARE_CAPACITY)
    }

    /// Forgets the flows' counts and gives their room back, at capture time `now` (see `forgot_ns`).
    fn forget_flows(&mut self, now: u64) {
        self.forgot_ns = self.forgot_ns.max(now);
        self.flows = HashMap::default();
        self.failed = HashSet::default();
    }

    /// Drops what each window has aged out of at `now` and the room that frees, as the
    /// source's next record would; a source quiet for a whole window also forgets its
    /// flows, if they take more than the allowance (they go on safely, see `forgot_ns`).
    fn age(&mut self, cfg: &DetectorConfig, now: u64, window_ns: u64) {
        self.attempts.trim(now, window_ns);
        self.rates.trim(now, window_ns);
        self.logins.trim(now, cfg.bruteforce_window_s * 1_000_000_000);
        self.web.trim(now, cfg.http_bruteforce_window_s * 1_000_000_000);
        self.waiting.trim(now);
        if self.last_ns + window_ns < now && self.flows.capacity() + self.failed.capacity() > MAX_SPARE_CAPACITY {
            self.forget_flows(now);
        }
    }

    /// Cuts the state to room for about `room` entries (never more): each time-ordered
    /// table keeps the same share of its newest entries (the attempts with their marks,
    /// answered or not, so the unanswered shares are those of the attempts kept), the
    /// unanswered flows the same share of theirs, and the flows' counts are forgotten.
    fn cut_to(&mut self, room: usize, now: u64) {
        let capacity = self.capacity();
        if capacity <= room {
            return;
        }
        // A table shrunk to fit `n` entries has room for at most 2n (hash tables round up).
        let share = room as f64 / (2.0 * capacity as f64);
        let keep = |n: usize| (n as f64 * share) as usize;
        self.attempts.keep_newest(keep(self.attempts.len()));
        self.rates.keep_newest(share);
        self.logins.keep_newest(keep(self.logins.len()));
        self.web.keep_newest(keep(self.web.len()));
        self.waiting.keep_newest(keep(self.waiting.len()));
        let mut left = keep(self.failed.len());
        self.failed.retain(|_| {
            let kept = left > 0;
            left = left.saturating_sub(1);
            kept
        });
        let failed = std::mem::take(&mut self.failed);
        self.forget_flows(now);
        self.failed = failed;
        self.failed.shrink_to_fit();
    }
}

/// A state whose tables have room for more entries than this is freed when its source is
/// evicted, not kept for the next one: free slots stay small (a few kB each at most).
const MAX_SPARE_CAPACITY: usize = 64;

/// Room in the per-source tables (entries: attempts and their index entries,
/// flows, packet-count slots, sessions, requests), summed over all sources,
/// beyond the first [`MAX_SPARE_CAPACITY`] of each: about 8 MB at ≤ 32 bytes an
/// entry (see docs/PERFORMANCE.md, "Memory"). One source alone may use all of it
/// (a 65 536-port scan fits in a quarter of it, less than its per-source caps); a
/// scan or flood needs a few hundred entries to be found (50 ports, 500 SYNs/s in
/// 256 slots), so detection holds until ~1 000 sources hold big windows at once.
pub const MAX_WINDOW_ENTRIES: usize = 262_144;

/// The heuristic detectors with their per-source state.
pub struct Heuristics {
    cfg: DetectorConfig,
    /// Source → its slot in `slab`. The states live in the slab, not in this map: a spoofed
    /// flood evicts and inserts sources without end, the tombstones that leaves make the
    /// map double now and then (to 64 Ki buckets for 16 Ki sources), and a 632-byte state
    /// per bucket made that 43 MB (plus the old table while it moved); a 24-byte bucket
    /// makes it 1.5 MB.
    sources: HashMap<IpAddr, u32>,
    /// The per-source states, at most [`MAX_SOURCES`]; slots of evicted sources are emptied
    /// (keeping their small allocations) and listed in `free` for the next new sources.
    slab: Vec<SourceState>,
    /// Slots of `slab` no source uses.
    free: Vec<u32>,
    /// Per-victim SYN counts ([`syn_flood_distributed`]).
    victims: Victims,
    window_ns: u64,
    /// Room the states take from the shared budget (sum of [`SourceState::charged`]),
    /// at most [`MAX_WINDOW_ENTRIES`] between records.
    charged: usize,
    /// The newest capture time seen.
    now: u64,
    /// When the windows of all sources were last aged.
    aged_ns: u64,
    /// Sources holding at least `slow_http_concurrent` waiting requests: [`Heuristics::tick`]
    /// re-counts them as time passes, since a slowloris tool that pauses sends no record
    /// that would. A subset of `sources` (so bounded by [`MAX_SOURCES`]).
    many_waiting: HashSet<IpAddr>,
}

impl Heuristics {
    /// Detectors with thresholds from config.
    pub fn new(cfg: DetectorConfig) -> Heuristics {
        let window_ns = cfg.window_s * 1_000_000_000;
        Heuristics {
            cfg,
            sources: HashMap::default(),
            slab: Vec::new(),
            free: Vec::new(),
            victims: Victims::default(),
            window_ns,
            charged: 0,
            now: 0,
            aged_ns: 0,
            many_waiting: HashSet::default(),
        }
    }

    /// Recounts [`Heuristics::charged`] over the tracked states.
    fn recount(&mut self) {
        let slab = &self.slab;
        self.charged = self.sources.values().map(|&i| slab[i as usize].charged()).sum();
    }

    /// Ages every tracked source's windows to `now` (idle expiry: a quiet source's
    /// windows are not trimmed by records it does not send).
    fn age_all(&mut self, now: u64) {
        self.aged_ns = now;
        let (cfg, window_ns, slab) = (&self.cfg, self.window_ns, &mut self.slab);
        for &i in self.sources.values() {
            let s = &mut slab[i as usize];
            if s.capacity() > MAX_SPARE_CAPACITY {
                s.age(cfg, now, window_ns);
            }
        }
        self.recount();
    }

    /// Brings the room the states take back to three quarters of the budget, so the next
    /// reclaim is a quarter of the budget away (amortised O(1) a record): first by ageing
    /// the windows; then by cutting the sources that hold the most, oldest entries first,
    /// to the level at which the rest fits (max-min fair: a source under it keeps all it
    /// has); last, should rounding leave too much, by evicting the least recently seen.
    fn reclaim(&mut self, now: u64) {
        let target = MAX_WINDOW_ENTRIES / 4 * 3;
        self.age_all(now);
        if self.charged > target {
            let mut held: Vec<usize> =
                self.sources.values().map(|&i| self.slab[i as usize].charged()).filter(|&c| c > 0).collect();
            held.sort_unstable_by(|a, b| b.cmp(a));
            // The level L with Σ min(c, L) ≤ target: the k biggest are cut to L, the rest fit.
            let (mut rest, mut level) = (self.charged, 0);
            for (k, &c) in held.iter().enumerate() {
                rest -= c;
                let l = (target.saturating_sub(rest)) / (k + 1);
                if l >= held.get(k + 1).copied().unwrap_or(0) {
                    level = l.min(c);
                    break;
                }
            }
            let slab = &mut self.slab;
            for &i in self.sources.values() {
                let s = &mut slab[i as usize];
                if s.charged() > level {
                    s.cut_to(level + MAX_SPARE_CAPACITY, now);
                }
            }
            self.recount();
        }
        while self.charged > target {
            let tracked = self.sources.len();
            self.evict_oldest_sources();
            if self.sources.len() == tracked {
                break;
            }
        }
    }

    /// Findings that only the passing of time completes, at capture time `now` (the
    /// detector calls it once per flow batch): requests that have now waited long enough
    /// for `slow_http_concurrent`, from a source that sent nothing since (a slowloris tool
    /// that pauses between connections, or has opened all it wants).
    pub fn tick(&mut self, now: u64) -> Vec<Detection> {
        let mut out = Vec::new();
        let window_ns = self.window_ns;
        let limit = self.cfg.slow_http_concurrent as usize;
        let cfg = &self.cfg;
        let (sources, slab, charged) = (&self.sources, &mut self.slab, &mut self.charged);
        self.many_waiting.retain(|src| {
            let Some(&i) = sources.get(src) else { return false };
            let s = &mut slab[i as usize];
            if limit == 0 || s.waiting.len() < limit {
                return false;
            }
            let before = s.charged();
            if let Some(d) = slow_http::unanswered_requests(cfg, *src, &mut s.waiting, now, None) {
                if first_in_window(&mut s.reported, &d, window_ns) {
                    out.push(d);
                }
            }
            *charged = *charged - before + s.charged();
            true
        });
        self.now = self.now.max(now);
        if now >= self.aged_ns.saturating_add(window_ns) {
            self.age_all(now);
        }
        out
    }

    /// New thresholds from the dashboard's settings page; what was learned
    /// about sources so far is kept (windows shorter than before just age out).
    pub fn set_config(&mut self, cfg: DetectorConfig) {
        self.window_ns = cfg.window_s * 1_000_000_000;
        self.cfg = cfg;
    }

    /// Sources currently tracked (bounded by [`MAX_SOURCES`]).
    pub fn tracked_sources(&self) -> usize {
        self.sources.len()
    }

    /// Room the per-source tables take from the shared budget (at most [`MAX_WINDOW_ENTRIES`]).
    pub fn window_entries_charged(&self) -> usize {
        self.charged
    }

    /// Drops the least recently seen eighth of the sources: O(n) once per
    /// n/8 new sources, so a spoofed flood costs a few operations a record.
    /// The evicted states are emptied in their slots, which the next new sources reuse.
    fn evict_oldest_sources(&mut self) {
        let n = self.sources.len() / 8;
        if n == 0 {
            return;
        }
        // The same choice as `gatewarden_core::lru::evict_oldest`: the n oldest, ties in map order.
        let (slab, free) = (&mut self.slab, &mut self.free);
        let mut ages: Vec<u64> = self.sources.values().map(|&i| slab[i as usize].last_ns).collect();
        let (_, &mut cutoff, _) = ages.select_nth_unstable(n - 1);
        let mut removed = 0;
        self.sources.retain(|_, &mut i| {
            let s = &mut slab[i as usize];
            if removed < n && s.last_ns <= cutoff {
                removed += 1;
                if s.capacity() <= MAX_SPARE_CAPACITY {
                    s.clear();
                } else {
                    *s = SourceState::default();
                }
                free.push(i);
                false
            } else {
                true
            }
        });
        self.recount();
    }

    /// The slot of `src`'s state, taking a free or new one for a source not tracked yet.
    fn slot(&mut self, src: IpAddr) -> usize {
        let (slab, free) = (&mut self.slab, &mut self.free);
        let i = *self.sources.entry(src).or_insert_with(|| {
            free.pop().unwrap_or_else(|| {
                slab.push(SourceState::default());
                (slab.len() - 1) as u32
            })
        });
        i as usize
    }

    /// Bytes the per-source table takes beside the states' own small tables: the slab by
    /// capacity plus the index by capacity. Bounded by [`MAX_SOURCES`] states however many
    /// sources come and go (see the test `source_table_stays_small_under_churn`).
    pub fn source_table_bytes(&self) -> usize {
        self.slab.capacity() * std::mem::size_of::<SourceState>()
            + self.sources.capacity() * std::mem::size_of::<(IpAddr, u32)>()
    }

    /// Entries the per-source tables have room for, summed over every state (free slots too).
    pub fn window_capacity(&self) -> usize {
        self.slab.iter().map(SourceState::capacity).sum()
    }

    /// Looks at what the router shed under overload towards one destination
    /// (`FlowBatch::shed`): only the distributed SYN flood counts it, as
    /// SYNs from sources never seen before; returns its finding if complete.
    pub fn observe_shed(&mut self, c: &gatewarden_proto::messages::ShedCount) -> Option<Detection> {
        self.victims.observe_shed(&self.cfg, self.window_ns, c)
    }

    /// A one-packet record from a source the detector has not met before (the
    /// detector's admission, `DetectorStage`): one packet completes no
    /// per-source pattern, and a spoofed flood is nothing but such records, so
    /// no per-source state is made for it; the per-victim detector still
    /// counts it. A source that already has state is observed in full. A
    /// newcomer's later records are cumulative, so a flow that goes on is
    /// counted whole when its source is admitted; only a one-packet flow (a
    /// probe) of a newcomer is left out of its per-source counts.
    pub fn observe_newcomer(&mut self, r: &FlowRecord) -> Vec<Detection> {
        if self.sources.contains_key(&r.src) {
            return self.observe(r);
        }
        let (aborted, half_open) = handshake(r);
        let o = Observed {
            r,
            now: r.last_ns,
            window_ns: self.window_ns,
            is_new: true,
            delta: r.fwd_packets,
            delta_bytes: r.fwd_bytes.min(u32::MAX as u64) as u32,
            half_open,
            aborted,
            syn_delta: if aborted { 1 } else { r.fwd_packets },
            reported: None,
        };
        self.victims.observe(&self.cfg, &o).into_iter().collect()
    }

    /// Looks at one flow snapshot; returns findings it completes.
    pub fn observe(&mut self, r: &FlowRecord) -> Vec<Detection> {
        self.observe_known(r, &|_, _, _, _| false)
    }

    /// [`Heuristics::observe`], with `known(src, host, port, proto)` saying whether the
    /// host answered the source on that port before, beyond the source's own short list
    /// of answered peers: the sweep rule does not count such hosts (the detector stage
    /// passes its day-long memory of answered services).
    pub fn observe_known(
        &mut self,
        r: &FlowRecord,
        known: &dyn Fn(IpAddr, IpAddr, u16, Proto) -> bool,
    ) -> Vec<Detection> {
        if !self.sources.contains_key(&r.src) && self.sources.len() >= MAX_SOURCES {
            self.evict_oldest_sources();
        }
        let slot = self.slot(r.src);
        let window_ns = self.window_ns;
        let cfg = &self.cfg;
        self.now = self.now.max(r.last_ns);
        let s = &mut self.slab[slot];
        let charged_before = s.charged();
        s.last_ns = s.last_ns.max(r.last_ns);
        let now = s.last_ns;
        let prev = s.flows.get(&r.flow_id).copied();
        // A flow begun before its source's flows were forgotten goes on; it is not new.
        let forgotten = prev.is_none() && r.first_ns < s.forgot_ns;
        let is_new = prev.is_none() && !forgotten;
        if s.flows.len() >= MAX_FLOWS_PER_SOURCE && prev.is_none() {
            s.flows.clear();
            s.failed.clear();
            s.forgot_ns = now;
        }
        let base = match prev {
            Some(p) => (p.packets, p.bytes),
            None if forgotten => (r.fwd_packets, r.fwd_bytes),
            None => (0, 0),
        };
        let delta = r.fwd_packets.saturating_sub(base.0);
        // Bytes sent since the last snapshot; one record's share fits u32 at any real rate.
        let delta_bytes = r.fwd_bytes.saturating_sub(base.1).min(u32::MAX as u64) as u32;
        let (aborted, half_open) = handshake(r);
        let unanswered = half_open || (r.proto == Proto::Udp && r.rev_packets == 0);
        // The flow's attempt, marked as this snapshot has it: counted unanswered while
        // it is, answered once it is (a flow that made none marks nothing).
        // A flow of another IP protocol (an attempt under `detection::IP_PROTOCOLS`) is
        // unanswered until the target sends anything back in it.
        let other_protocol = detection::is_other_protocol(r.proto);
        let attempt_unanswered = unanswered || (other_protocol && r.rev_packets == 0);
        let attempt = match prev {
            Some(p) => {
                s.attempts.mark(p.attempt, attempt_unanswered);
                p.attempt
            }
            None if is_new && matches!(r.proto, Proto::Tcp | Proto::Udp) => s.attempts.push_known(
                r.first_ns,
                r.dst,
                r.dport,
                r.proto,
                unanswered,
                known(r.src, r.dst, r.dport, r.proto),
            ),
            // Any other IP protocol: tallied together, the protocol number as the port (an
            // IP protocol scan); answered when the target sent anything back in it.
            None if is_new && other_protocol => {
                let Proto::Other(n) = r.proto else { unreachable!("other_protocol is Proto::Other") };
                s.attempts.push_known(
                    r.first_ns,
                    r.dst,
                    u16::from(n),
                    detection::IP_PROTOCOLS,
                    attempt_unanswered,
                    false,
                )
            }
            None => s.attempts.no_attempt(),
        };
        s.flows.insert(r.flow_id, FlowSeen { packets: r.fwd_packets, attempt, bytes: r.fwd_bytes });
        let was_failed = s.failed.contains(&r.flow_id);
        if unanswered {
            s.failed.insert(r.flow_id);
        } else {
            s.failed.remove(&r.flow_id);
        }
        let answered = match r.proto {
            Proto::Tcp => !half_open && r.rev_packets > 0,
            Proto::Udp => r.rev_packets > 0,
            _ => false,
        };
        if answered {
            s.peers.answered((r.dst, r.dport, r.proto));
        }
        // An aborted handshake counts one SYN, unless its SYN was already
        // counted while the flow was unanswered.
        let syn_delta = if forgotten {
            0
        } else if aborted {
            u32::from(!was_failed)
        } else {
            delta
        };
        s.attempts.trim(now, window_ns);
        let o = Observed {
            r,
            now,
            window_ns,
            is_new,
            delta,
            delta_bytes,
            half_open,
            aborted,
            syn_delta,
            reported: Some(&s.reported),
        };

        // Each detector in turn; the order is the order of the findings.
        let mut out = Vec::new();
        out.extend(port_scan::check(cfg, &o, &s.attempts));
        out.extend(host_sweep::check(cfg, &o, &s.attempts, &s.peers));
        out.extend(brute_force_connections::check(cfg, &o, &s.attempts));
        out.extend(brute_force_sessions::observe(cfg, &o, &mut s.logins));
        out.extend(brute_force_http::observe(cfg, &o, &mut s.web));
        let slow = slow_http::observe(cfg, &o, &mut s.waiting);
        out.extend(slow.slowloris);
        out.extend(floods::observe(cfg, &o, &mut s.rates, &s.attempts));
        out.extend(slow.unanswered);
        // Distributed SYN flood: many sources, one victim (its own once-per-window
        // rule); reported after this source's findings.
        let distributed = self.victims.observe(cfg, &o);
        // Hysteresis: one finding per (source, kind) per window.
        out.retain(|d| first_in_window(&mut s.reported, d, window_ns));
        self.charged = self.charged - charged_before + s.charged();
        if slow.many_waiting {
            self.many_waiting.insert(r.src);
        }
        out.extend(distributed);
        if self.charged > MAX_WINDOW_ENTRIES {
            self.reclaim(self.now);
        }
        out
    }
}

/// Whether a TCP record's handshake was aborted by its originator (SYN,
/// SYN-ACK, RST: what a SYN flood or a SYN scan against an open port looks
/// like), and whether it is half-open: failed or aborted, as much a half-open
/// attempt as an unanswered SYN.
fn handshake(r: &FlowRecord) -> (bool, bool) {
    let aborted = r.proto == Proto::Tcp && r.conn_state == ConnState::RSTO && r.fwd_packets <= 2;
    let half_open = r.proto == Proto::Tcp && (r.conn_state.is_failed_attempt() || aborted);
    (aborted, half_open)
}

/// Keeps a finding if it is the first of its kind from its source in this window
/// (hysteresis: one finding per (source, kind) per window). A UDP flood finding that
/// looks like a media stream counts apart: a stream to one host, ignored by the
/// policy, must not use up the window's report of a small-packet flood of another.
/// So does a wide sweep: a narrow one's alert must not hold back its block.
fn first_in_window(reported: &mut HashMap<(AttackKind, bool), u64>, d: &Detection, window_ns: u64) -> bool {
    let second_report = match d.kind {
        AttackKind::UdpFlood => floods::looks_like_media_stream(d),
        AttackKind::HostSweep => host_sweep::is_wide(d),
        _ => false,
    };
    let key = (d.kind, second_report);
    let last = reported.get(&key).copied().unwrap_or(0);
    if last == 0 || d.ts_ns >= last + window_ns {
        reported.insert(key, d.ts_ns);
        true
    } else {
        false
    }
}

#[cfg(test)]
mod testing;

#[cfg(test)]
mod tests {
    use super::testing::rec;
    use super::*;

    #[test]
    fn benign_few_ports_is_quiet() {
        let mut h = Heuristics::new(DetectorConfig::default());
        for i in 0..500u64 {
            let port = [80, 443, 53, 1883][i as usize % 4];
            let proto = if port == 53 { Proto::Udp } else { Proto::Tcp };
            assert!(h.observe(&rec(i, "192.0.2.20", "198.51.100.1", port, proto, i as f64, 5, 5, "SF")).is_empty());
        }
    }

    /// An attack that goes on is reported once per window and again in the
    /// next (detectors skip writing findings that the window would drop).
    #[test]
    fn an_ongoing_flood_and_scan_are_reported_once_a_window_and_again_after_it() {
        let mut h = Heuristics::new(DetectorConfig::default());
        let window_ns = h.window_ns;
        let mut found = Vec::new();
        // 25 s: a SYN flood at 1000/s to one port, and a scan of a new port every 10 ms.
        for i in 0..25_000u64 {
            let t = i as f64 * 0.001;
            found.extend(h.observe(&rec(i, "203.0.113.5", "192.0.2.10", 80, Proto::Tcp, t, 1, 0, "S0")));
            if i % 10 == 0 {
                let port = 1000 + (i / 10) as u16;
                found.extend(h.observe(&rec(
                    1 << 40 | i,
                    "203.0.113.6",
                    "192.0.2.11",
                    port,
                    Proto::Tcp,
                    t,
                    1,
                    0,
                    "S0",
                )));
            }
        }
        for kind in [AttackKind::SynFlood, AttackKind::PortScan] {
            let times: Vec<u64> = found.iter().filter(|d| d.kind == kind).map(|d| d.ts_ns).collect();
            assert_eq!(times.len(), 3, "{kind:?} at {times:?}");
            assert!(
                times.windows(2).all(|w| w[1] >= w[0] + window_ns && w[1] < w[0] + window_ns + 50_000_000),
                "{kind:?} at {times:?}"
            );
        }
    }

    /// A recycled state is as empty as a new one: every field, scalar or table, is reset.
    #[test]
    fn a_recycled_source_state_is_empty() {
        let mut h = Heuristics::new(DetectorConfig::default());
        // One source with something in every table: answered and unanswered flows, logins,
        // web sessions, floods.
        let src = "192.0.2.30";
        let mut recs = Vec::new();
        for i in 0..40u64 {
            let (port, proto, state) = match i % 5 {
                0 => (22, Proto::Tcp, "SF"),
                1 => (80, Proto::Tcp, "S1"),
                2 => (80, Proto::Tcp, "SF"),
                3 => (53, Proto::Udp, "S0"),
                _ => (1000 + i as u16, Proto::Tcp, "S0"),
            };
            recs.push(rec(i, src, "198.51.100.1", port, proto, i as f64 * 0.01, 3, 2, state));
        }
        for r in &recs {
            h.observe(r);
        }
        let ip: IpAddr = src.parse().unwrap();
        let i = h.sources.remove(&ip).unwrap();
        let mut s = std::mem::take(&mut h.slab[i as usize]);
        assert!(s.capacity() > 0);
        s.clear();
        assert_eq!(format!("{s:?}"), format!("{:?}", SourceState::default()));
    }

    /// Evicted states are reused for new sources, and findings do not depend on it.
    #[test]
    fn evicted_states_are_reused_and_change_nothing() {
        let mut h = Heuristics::new(DetectorConfig::default());
        for i in 0..(MAX_SOURCES as u64 + 10) {
            let mut r = rec(i, "10.0.0.1", "192.0.2.10", 80, Proto::Tcp, i as f64 * 1e-6, 1, 0, "S0");
            r.src = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000u32 + i as u32));
            h.observe(&r);
        }
        assert_eq!(h.free.len(), MAX_SOURCES / 8 - 10);
        assert_eq!(h.slab.len(), MAX_SOURCES);
        // A port scan from a source given a recycled state is found as from a new one.
        let mut fresh = Heuristics::new(DetectorConfig::default());
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for i in 0..200u64 {
            let r = rec(
                1_000_000 + i,
                "203.0.113.9",
                "192.0.2.10",
                1 + i as u16,
                Proto::Tcp,
                1.0 + i as f64 * 0.01,
                1,
                0,
                "S0",
            );
            a.extend(h.observe(&r));
            b.extend(fresh.observe(&r));
        }
        assert!(!a.is_empty());
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
    }

    /// A spoofed flood churns through the per-source table without end; it must stay at
    /// its cap of states however many sources came and went. (With the states stored in the
    /// map itself, eviction's tombstones made it double to 57 344 entries of 656 bytes,
    /// 37.6 MB, by ~350 000 sources.)
    #[test]
    fn source_table_stays_small_under_churn() {
        let mut h = Heuristics::new(DetectorConfig::default());
        let bound =
            MAX_SOURCES * std::mem::size_of::<SourceState>() + 4 * MAX_SOURCES * std::mem::size_of::<(IpAddr, u32)>();
        for i in 0..600_000u64 {
            let mut r = rec(i, "10.0.0.1", "192.0.2.10", 80, Proto::Tcp, i as f64 * 1e-6, 1, 0, "S0");
            r.src = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000u32 + i as u32));
            h.observe(&r);
            if i % 1024 == 0 {
                assert!(h.source_table_bytes() <= bound, "{} > {bound} after {i} sources", h.source_table_bytes());
            }
        }
        assert!(h.slab.capacity() <= MAX_SOURCES, "{}", h.slab.capacity());
        assert!(h.slab.len() == h.sources.len() + h.free.len());
    }

    /// The most the per-source tables may have room for in all: the shared budget, plus
    /// the small allowance every state (tracked or free) keeps.
    fn window_bound(h: &Heuristics) -> usize {
        MAX_WINDOW_ENTRIES + h.slab.len() * MAX_SPARE_CAPACITY
    }

    /// The red team's memory attack (`tools/make_traffic_pcap.py scanners`): spoofed sources one after another, 6 s
    /// apart, each sending 65 536 SYNs to every port of one host within 5 s. Each took
    /// ~20 MB that was never freed (148 MB peak RSS at 4 sources, 384 MB at 16). Now the
    /// tables' summed room stays under the shared budget, and every scan is still found.
    #[test]
    fn sources_scanning_every_port_one_after_another_stay_within_the_budget() {
        let mut h = Heuristics::new(DetectorConfig::default());
        let mut scans = 0;
        for s in 0..8u32 {
            let src = IpAddr::V4(std::net::Ipv4Addr::from(0x6440_0000 + s));
            for i in 0..65_536u64 {
                let t = 1000.0 + s as f64 * 6.0 + i as f64 * (5.0 / 65_536.0);
                let port = 1 + (i % 65_535) as u16;
                let mut r = rec(u64::from(s) << 32 | i, "10.0.0.1", "192.0.2.10", port, Proto::Tcp, t, 1, 0, "S0");
                r.src = src;
                scans += h.observe(&r).iter().filter(|d| d.kind == AttackKind::PortScan).count();
                if i % 4096 == 4095 {
                    let (cap, bound) = (h.window_capacity(), window_bound(&h));
                    assert!(cap <= bound, "room for {cap} entries > {bound} at source {s}, record {i}");
                }
            }
        }
        assert_eq!(scans, 8, "one scan per source and window");
    }

    /// Many sources at once, each many one-packet flows: the tables' room stays under the
    /// budget however the sources interleave, and a real scan and a real SYN flood from
    /// two other sources at the same time are still found.
    #[test]
    fn many_concurrent_sources_stay_within_the_budget_and_a_real_scan_and_flood_are_found() {
        let mut h = Heuristics::new(DetectorConfig::default());
        let mut found = Vec::new();
        for i in 0..(48 * 4096u64) {
            let t = 1.0 + i as f64 * 20e-6;
            let s = (i % 48) as u32;
            let mut r = rec(i, "10.0.0.1", "192.0.2.10", 1 + (i / 48) as u16, Proto::Tcp, t, 1, 0, "S0");
            r.src = IpAddr::V4(std::net::Ipv4Addr::from(0x6440_0000 + s));
            h.observe(&r);
            if i % 64 == 0 {
                // A real scan: a port every 1.3 ms.
                let port = 1 + ((i / 64) % 60_000) as u16;
                found.extend(h.observe(&rec(
                    1 << 40 | i,
                    "198.51.100.66",
                    "192.0.2.50",
                    port,
                    Proto::Tcp,
                    t,
                    1,
                    0,
                    "S0",
                )));
            }
            if i % 32 == 0 {
                // A real SYN flood: 1 600 a second to one port (the rate limit is 500/s).
                found.extend(h.observe(&rec(
                    1 << 41 | i,
                    "198.51.100.77",
                    "192.0.2.51",
                    80,
                    Proto::Tcp,
                    t,
                    1,
                    0,
                    "S0",
                )));
            }
            if i % 4096 == 0 {
                let (cap, bound) = (h.window_capacity(), window_bound(&h));
                assert!(cap <= bound, "room for {cap} entries > {bound} after {i} records");
            }
        }
        let src = |d: &Detection| d.source.map(|s| s.to_string()).unwrap_or_default();
        assert!(found.iter().any(|d| d.kind == AttackKind::PortScan && src(d) == "198.51.100.66"), "{found:?}");
        assert!(found.iter().any(|d| d.kind == AttackKind::SynFlood && src(d) == "198.51.100.77"), "{found:?}");
    }

    /// A source quiet for a window gives back its flows' room; a long flow of it that then
    /// goes on must not count its whole past again (that read as a UDP flood of 3 100
    /// packets in one snapshot), nor count as a new attempt.
    #[test]
    fn a_forgotten_flow_goes_on_without_counting_its_past_again() {
        let mut h = Heuristics::new(DetectorConfig::default());
        let src = "192.0.2.40";
        // 100 short answered flows, then one UDP stream at 300 packets/s (under the flood rate).
        for i in 0..100u64 {
            h.observe(&rec(i, src, "198.51.100.1", 443, Proto::Tcp, 1.0 + i as f64 * 0.01, 5, 5, "SF"));
        }
        for k in 1..=10u32 {
            let mut r = rec(1000, src, "198.51.100.2", 5004, Proto::Udp, 1.0, 300 * k, 0, "S0");
            r.last_ns = (1.0 + k as f64) as u64 * 1_000_000_000;
            assert!(h.observe(&r).is_empty());
        }
        // Quiet for 15 s: its windows age and its flows are forgotten.
        h.tick(26_000_000_000);
        let ip: IpAddr = src.parse().unwrap();
        let s = &h.slab[h.sources[&ip] as usize];
        assert!(s.flows.is_empty() && s.forgot_ns == 26_000_000_000, "{:?}", s.flows.len());
        let mut r = rec(1000, src, "198.51.100.2", 5004, Proto::Udp, 1.0, 3100, 0, "S0");
        r.last_ns = 27_000_000_000;
        assert!(h.observe(&r).is_empty(), "its past counted again");
        let s = &h.slab[h.sources[&ip] as usize];
        assert_eq!((s.attempts.len(), s.flows.get(&1000).map(|f| (f.packets, f.bytes))), (0, Some((3100, 3100 * 60))));
        // From there on it counts as before: 2 000 packets in the next 0.5 s are a flood.
        r.fwd_packets = 5100;
        r.last_ns = 27_500_000_000;
        let found = h.observe(&r);
        assert!(
            found.iter().any(|d| d.kind == AttackKind::UdpFlood && d.reason.contains(" 2000 UDP packets")),
            "{found:?}"
        );
    }

    /// A flow's memory of its attempt costs nothing: it fits where the counts' padding was.
    #[test]
    fn a_remembered_flow_is_16_bytes() {
        assert_eq!(std::mem::size_of::<FlowSeen>(), std::mem::size_of::<(u32, u64)>());
    }

    #[test]
    fn source_state_is_bounded() {
        let mut h = Heuristics::new(DetectorConfig::default());
        for i in 0..(MAX_SOURCES as u64 + 5000) {
            let src = std::net::Ipv4Addr::from(0x0a00_0000u32 + i as u32);
            let mut r = rec(i, "10.0.0.1", "192.0.2.10", 80, Proto::Tcp, i as f64 * 1e-6, 1, 0, "S0");
            r.src = IpAddr::V4(src);
            h.observe(&r);
            assert!(h.tracked_sources() <= MAX_SOURCES);
        }
    }
}
