//! Long-horizon per-source history (issue #17): what each source did over the
//! last 1, 15 and 60 minutes, in fixed memory per source, for the detectors of
//! slow scans, distributed scans and slow password guessing.
//!
//! Per source it keeps
//! - **probes and unanswered probes**: one bucket per minute for the last 16
//!   minutes (the 1- and 15-minute windows) and one per quarter hour for the
//!   last five quarters (the hour), saturating `u16` counts;
//! - **distinct destination ports** (per protocol) and **distinct destination
//!   hosts of its unanswered probes** (answered probes do not spread a source: a
//!   scanner padding its probes with answered ones to many resolvers or to many
//!   ports of its own server would otherwise look like a P2P client): up to [`EXACT_ITEMS`] items each are kept exactly, with the minute
//!   each was last seen; a source with more (or with unanswered probes, see
//!   below) is *protected* and gets a sketch of [`SKETCH_CELLS`] cells per
//!   dimension, each holding the minute it was last hit ("timestamped linear
//!   counting": a window's estimate is `b·ln(b/V)` over the `V` cells not hit
//!   in that window, so expiry is exact to the minute and needs no per-bucket
//!   copies). Its standard error at `n` items is `sqrt(b(e^t − t − 1))/n` with
//!   `t = n/b`: 1.7 % at 1 000 items, 2.9 % at 4 000; above ~[`SKETCH_SATURATION`]
//!   the estimate is a lower bound;
//! - **login sessions** (all and failed, per quarter hour) for the hour.
//!
//! A window of `w` minutes covers the current minute and the `w` before it (so
//! at least `w` full minutes); the hour's probe and login counts use quarter
//! hours and cover between 60 and 75 minutes.
//!
//! # Eviction an attacker cannot use to hide
//! The table holds at most `max_sources` sources in two segments:
//! - **probation**: every new source. When the table is full, the victim is
//!   the *oldest source of the lowest evidence level* (level = probes in the
//!   hour, remembered ones included, capped at 3): a flood of spoofed
//!   one-probe sources evicts only one-probe sources.
//! - **protected** (at most `max_protected`): sources with evidence, i.e.
//!   `promote_unanswered` unanswered probes in the hour or more than
//!   [`EXACT_ITEMS`] distinct unanswered ports or hosts. A newcomer with evidence takes the
//!   place of the protected source with the *least* evidence (unanswered probes
//!   in the hour + distinct ports + distinct hosts), only if it has strictly more.
//!   Probation sources never push out protected ones.
//!
//! A source evicted before it showed evidence is not forgotten entirely: a
//! count-min sketch (two rows of [`MEMORY_CELLS`] saturating `u8` counters,
//! conservative update, halved every 30 minutes) remembers unanswered probes per
//! source address. A returning source starts with that count (never less than
//! the truth), so a slow scanner whose first probes were flushed out by a flood
//! still reaches its level and its promotion.
//!
//! Hashes of attacker-chosen values (addresses, ports) are keyed by a
//! per-process random seed, so nobody can aim probes at one sketch cell.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::net::IpAddr;

use foldhash::fast::{FixedState, RandomState};
use gatewarden_proto::messages::Proto;

/// Items per dimension (ports, hosts) kept exactly before a source needs a sketch.
pub const EXACT_ITEMS: usize = 6;
/// Cells per dimension in a protected source's sketch (a power of two).
pub const SKETCH_CELLS: usize = 2048;
/// Distinct items above which a sketch's estimate is only a lower bound.
pub const SKETCH_SATURATION: u32 = 10_000;
/// Counters per row of the count-min sketch of evicted sources' unanswered probes.
pub const MEMORY_CELLS: usize = 1 << 20;
/// Evidence levels of probation (probes in the hour, capped).
const LEVELS: usize = 4;
/// Minute buckets (current + 15 before).
const MINUTES: usize = 16;
/// Quarter-hour buckets (current + 4 before).
const QUARTERS: usize = 5;
/// Longest window, minutes.
const HOUR: u32 = 60;
const MINUTE_NS: u64 = 60_000_000_000;
/// The count-min sketch is halved this often, minutes.
const MEMORY_HALF_LIFE_MIN: u32 = 30;
const NO_HEAVY: u32 = u32::MAX;

/// Sizes and thresholds of a [`SourceHistory`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceHistoryConfig {
    /// Most sources tracked at once. Each costs ~240 bytes (entry + index; docs/PERFORMANCE.md).
    pub max_sources: usize,
    /// Most protected sources (with evidence; each also holds a 4 KiB sketch). Must be below `max_sources`.
    pub max_protected: usize,
    /// Unanswered probes in the hour that protect a source.
    pub promote_unanswered: u32,
}

impl Default for SourceHistoryConfig {
    /// 100 000 sources, 1 024 of them protected: 31 MB in all (docs/PERFORMANCE.md).
    fn default() -> Self {
        Self { max_sources: 100_000, max_protected: 1024, promote_unanswered: 3 }
    }
}

impl SourceHistoryConfig {
    /// Checks the sizes; the error says which to change.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_sources < 2 || self.max_sources > u32::MAX as usize / 2 {
            return Err(format!("max_sources = {} must be between 2 and 2^31", self.max_sources));
        }
        if self.max_protected == 0 || self.max_protected >= self.max_sources {
            return Err(format!(
                "max_protected = {} must be at least 1 and below max_sources = {}",
                self.max_protected, self.max_sources
            ));
        }
        if self.promote_unanswered == 0 {
            return Err("promote_unanswered must be at least 1".into());
        }
        Ok(())
    }
}

/// A window the history answers for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The current minute and the one before.
    Minute,
    /// The current minute and the 15 before.
    Quarter,
    /// The current minute and the 60 before (probe counts: current quarter hour and the 4 before).
    Hour,
}

impl Window {
    fn minutes(self) -> u32 {
        match self {
            Window::Minute => 1,
            Window::Quarter => 15,
            Window::Hour => HOUR,
        }
    }
}

/// What one source did in one window.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct WindowStats {
    /// Probes (new flows / connection attempts) seen.
    pub probes: u32,
    /// Of those, unanswered.
    pub unanswered: u32,
    /// Distinct (protocol, destination port) pairs of the unanswered probes, estimated.
    pub distinct_ports: u32,
    /// Distinct destination hosts of the unanswered probes, estimated.
    pub distinct_hosts: u32,
    /// True when the distinct counts may miss items (the source overflowed its exact
    /// lists without a sketch, was demoted, or saturated its sketch in this window).
    pub lower_bound: bool,
}

impl WindowStats {
    /// Unanswered share of the probes (None without probes).
    pub fn unanswered_share(&self) -> Option<f64> {
        (self.probes > 0).then(|| f64::from(self.unanswered) / f64::from(self.probes))
    }
}

/// Login sessions of one source over the hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoginStats {
    /// Short sessions to login services.
    pub sessions: u32,
    /// Of those, failed.
    pub failed: u32,
}

/// Minute `m` as a nonzero one-byte stamp (0 = empty). Ages below 255 minutes are
/// unambiguous; [`Entry::touch`] sweeps often enough to keep them so.
fn stamp(m: u32) -> u8 {
    (m % 255) as u8 + 1
}

/// Minutes since stamp `s` at minute `now`.
fn age(now: u32, s: u8) -> u32 {
    if s == 0 {
        u32::MAX
    } else {
        (now % 255 + 255 - (u32::from(s) - 1)) % 255
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    probes: u16,
    unanswered: u16,
}

#[derive(Debug, Clone, Copy, Default)]
struct QuarterCounts {
    probes: u16,
    unanswered: u16,
    sessions: u16,
    failed: u16,
}

/// Up to [`EXACT_ITEMS`] keys with the minute each was last seen.
#[derive(Debug, Clone, Copy, Default)]
struct Exact {
    keys: [u32; EXACT_ITEMS],
    stamps: [u8; EXACT_ITEMS],
}

impl Exact {
    /// Records `key`; false when the list is full of keys still in the hour.
    fn insert(&mut self, key: u32, now: u32) -> bool {
        let mut free = None;
        for i in 0..EXACT_ITEMS {
            if self.stamps[i] != 0 && self.keys[i] == key {
                self.stamps[i] = stamp(now);
                return true;
            }
            if free.is_none() && age(now, self.stamps[i]) > HOUR {
                free = Some(i);
            }
        }
        match free {
            Some(i) => {
                self.keys[i] = key;
                self.stamps[i] = stamp(now);
                true
            }
            None => false,
        }
    }
    fn count(&self, now: u32, w: u32) -> u32 {
        self.stamps.iter().filter(|&&s| age(now, s) <= w).count() as u32
    }
    fn sweep(&mut self, now: u32) {
        for s in &mut self.stamps {
            if age(now, *s) > HOUR {
                *s = 0;
            }
        }
    }
}

/// Timestamped linear counting over `cells`: the estimate of distinct items hit within `w` minutes.
fn sketch_estimate(cells: &[u8], now: u32, w: u32) -> (u32, bool) {
    let b = cells.len() as f64;
    let empty = cells.iter().filter(|&&s| age(now, s) > w).count();
    if empty == 0 {
        return (SKETCH_SATURATION, true);
    }
    let n = (b * (b / empty as f64).ln()).round();
    if n >= f64::from(SKETCH_SATURATION) {
        (SKETCH_SATURATION, true)
    } else {
        (n as u32, false)
    }
}

fn sketch_sweep(cells: &mut [u8], now: u32) {
    for s in cells {
        if age(now, *s) > HOUR {
            *s = 0;
        }
    }
}

/// One tracked source.
#[derive(Debug, Clone)]
struct Entry {
    src: IpAddr,
    /// Minute of the last observation.
    last_min: u32,
    /// Minute of the last sweep of stale stamps.
    sweep_min: u32,
    /// Bumped whenever the entry is queued anew (older queue records are stale).
    gen: u32,
    /// Index of its sketch in the heavy pool (protected sources), or NO_HEAVY.
    heavy: u32,
    minutes: [Counts; MINUTES],
    quarters: [QuarterCounts; QUARTERS],
    ports: Exact,
    hosts: Exact,
    /// Unanswered probes remembered (count-min) when the source was admitted.
    prior: u8,
    /// Stamp of the last minute distinct items were lost (0 = never).
    lost: u8,
    /// Probation evidence level (index of its queue).
    level: u8,
    /// Stamp of the minute it last competed for the protected segment.
    tried: u8,
    protected: bool,
}

impl Entry {
    fn new(src: IpAddr, now: u32, prior: u8) -> Self {
        Entry {
            src,
            last_min: now,
            sweep_min: now,
            gen: 0,
            heavy: NO_HEAVY,
            minutes: [Counts::default(); MINUTES],
            quarters: [QuarterCounts::default(); QUARTERS],
            ports: Exact::default(),
            hosts: Exact::default(),
            prior,
            lost: 0,
            level: 0,
            tried: 0,
            protected: false,
        }
    }

    /// Moves the buckets to minute `now` (clamped to never go back) and drops
    /// stale stamps; returns the minute to record at.
    fn touch(&mut self, now: u32, heavy: Option<&mut [u8]>) -> u32 {
        let now = now.max(self.last_min);
        let idle = now - self.last_min;
        for m in (self.last_min + 1..=now).take(MINUTES) {
            self.minutes[m as usize % MINUTES] = Counts::default();
        }
        for q in (self.last_min / 15 + 1..=now / 15).take(QUARTERS) {
            self.quarters[q as usize % QUARTERS] = QuarterCounts::default();
        }
        if idle > HOUR {
            // Everything distinct is out of every window: start afresh.
            self.ports = Exact::default();
            self.hosts = Exact::default();
            self.lost = 0;
            if let Some(cells) = heavy {
                cells.fill(0);
            }
            self.sweep_min = now;
        } else if now - self.sweep_min >= 64 {
            // Keeps every stamp younger than 255 minutes (see `stamp`).
            self.ports.sweep(now);
            self.hosts.sweep(now);
            if age(now, self.lost) > HOUR {
                self.lost = 0;
            }
            if let Some(cells) = heavy {
                sketch_sweep(cells, now);
            }
            self.sweep_min = now;
        }
        self.last_min = now;
        now
    }

    fn hour_counts(&self, now: u32) -> QuarterCounts {
        let mut sum = QuarterCounts::default();
        if now / 15 >= self.last_min / 15 + QUARTERS as u32 || now < self.last_min {
            return sum;
        }
        let cur = now / 15;
        for q in cur.saturating_sub(QUARTERS as u32 - 1)..=cur {
            if q > self.last_min / 15 {
                continue;
            }
            let b = self.quarters[q as usize % QUARTERS];
            sum.probes = sum.probes.saturating_add(b.probes);
            sum.unanswered = sum.unanswered.saturating_add(b.unanswered);
            sum.sessions = sum.sessions.saturating_add(b.sessions);
            sum.failed = sum.failed.saturating_add(b.failed);
        }
        sum
    }

    fn minute_counts(&self, now: u32, w: u32) -> (u32, u32) {
        let (mut p, mut u) = (0u32, 0u32);
        for m in now.saturating_sub(w)..=now {
            if m > self.last_min || self.last_min - m >= MINUTES as u32 {
                continue;
            }
            let b = self.minutes[m as usize % MINUTES];
            p += u32::from(b.probes);
            u += u32::from(b.unanswered);
        }
        (p, u)
    }

    /// Evidence that ranks protected sources: probes in the hour, unanswered ones counted twice,
    /// plus the unanswered ones remembered from before admission. O(1): the segment is scanned
    /// for its weakest member on each promotion attempt.
    fn score(&self, now: u32) -> u64 {
        let h = self.hour_counts(now);
        u64::from(h.probes) + u64::from(h.unanswered) + u64::from(self.prior)
    }

    fn distinct(&self, now: u32, w: u32, heavy: Option<&[u8]>) -> ((u32, bool), (u32, bool)) {
        if now.saturating_sub(self.last_min) > HOUR {
            return ((0, false), (0, false));
        }
        match heavy {
            Some(cells) => {
                let (p, h) = cells.split_at(SKETCH_CELLS);
                (sketch_estimate(p, now, w), sketch_estimate(h, now, w))
            }
            None => ((self.ports.count(now, w), false), (self.hosts.count(now, w), false)),
        }
    }
}

/// Count-min sketch of unanswered probes per source address, for sources no longer in the table.
#[derive(Debug)]
struct Remembered {
    rows: Vec<u8>,
    /// Half-life epoch last applied.
    epoch: u32,
}

impl Remembered {
    fn cells(h: u64) -> (usize, usize) {
        let mask = MEMORY_CELLS as u64 - 1;
        ((h & mask) as usize, MEMORY_CELLS + ((h >> 32) & mask) as usize)
    }
    fn estimate(&self, h: u64) -> u8 {
        let (a, b) = Self::cells(h);
        self.rows[a].min(self.rows[b])
    }
    /// Conservative update: only counters at the minimum grow, so the estimate never falls below the truth.
    fn add(&mut self, h: u64) {
        let (a, b) = Self::cells(h);
        let new = self.rows[a].min(self.rows[b]).saturating_add(1);
        self.rows[a] = self.rows[a].max(new);
        self.rows[b] = self.rows[b].max(new);
    }
    fn decay(&mut self, now: u32) {
        let epoch = now / MEMORY_HALF_LIFE_MIN;
        if epoch > self.epoch {
            let halvings = (epoch - self.epoch).min(8);
            for c in &mut self.rows {
                *c = c.checked_shr(halvings).unwrap_or(0);
            }
            self.epoch = epoch;
        }
    }
}

/// Open-addressing index from source to slot: 4 bytes per cell, at most half full, linear
/// probing with backward-shift deletion (no tombstones, so churn never grows it). Positions come
/// from the keyed hash of the address.
#[derive(Debug)]
struct Index {
    slots: Vec<u32>,
    mask: usize,
}

const EMPTY: u32 = u32::MAX;

impl Index {
    fn new(max: usize) -> Self {
        let n = (max * 2).next_power_of_two();
        Index { slots: vec![EMPTY; n], mask: n - 1 }
    }
    fn home(&self, h: u64) -> usize {
        (h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize & self.mask
    }
    fn find(&self, entries: &[Entry], src: IpAddr, h: u64) -> Option<u32> {
        let mut i = self.home(h);
        loop {
            let s = self.slots[i];
            if s == EMPTY {
                return None;
            }
            if entries[s as usize].src == src {
                return Some(s);
            }
            i = (i + 1) & self.mask;
        }
    }
    fn insert(&mut self, slot: u32, h: u64) {
        let mut i = self.home(h);
        while self.slots[i] != EMPTY {
            i = (i + 1) & self.mask;
        }
        self.slots[i] = slot;
    }
    /// Removes `slot` (whose address hashes to `h`); later cells of its run shift back.
    fn remove(&mut self, entries: &[Entry], slot: u32, h: u64, hasher: &FixedState) {
        let mut i = self.home(h);
        while self.slots[i] != slot {
            if self.slots[i] == EMPTY {
                return;
            }
            i = (i + 1) & self.mask;
        }
        let mut j = i;
        loop {
            j = (j + 1) & self.mask;
            let s = self.slots[j];
            if s == EMPTY {
                break;
            }
            let k = self.home(hasher.hash_one(entries[s as usize].src));
            // Move s into the hole at i unless its home lies cyclically in (i, j].
            let stays = if i <= j { i < k && k <= j } else { i < k || k <= j };
            if !stays {
                self.slots[i] = s;
                i = j;
            }
        }
        self.slots[i] = EMPTY;
    }
}

/// Long-horizon per-source history with fixed memory (see the module documentation).
#[derive(Debug)]
pub struct SourceHistory {
    cfg: SourceHistoryConfig,
    /// Source → slot in `entries`.
    index: Index,
    entries: Vec<Entry>,
    /// Protected sources' sketches: `max_protected` × 2 × SKETCH_CELLS stamps.
    heavy: Vec<u8>,
    free_heavy: Vec<u32>,
    /// Slots of protected sources.
    protected: Vec<u32>,
    /// Probation queues per level, oldest first: (slot, gen); stale records are skipped.
    queues: [VecDeque<(u32, u32)>; LEVELS],
    remembered: Remembered,
    /// Keys the sketches' and the count-min's hashes.
    hasher: FixedState,
    /// Sources evicted so far (from probation) and protected sources displaced.
    evicted: u64,
    displaced: u64,
}

impl SourceHistory {
    /// An empty history with a random hash seed.
    pub fn new(cfg: SourceHistoryConfig) -> Result<Self, String> {
        let seed = RandomState::default().hash_one(0x5eed_u64);
        Self::with_seed(cfg, seed)
    }

    /// An empty history with a fixed hash seed (tests and benchmarks: reproducible estimates).
    pub fn with_seed(cfg: SourceHistoryConfig, seed: u64) -> Result<Self, String> {
        cfg.validate()?;
        let index = Index::new(cfg.max_sources);
        let queue_cap = cfg.max_sources / LEVELS + 1;
        Ok(SourceHistory {
            cfg,
            index,
            entries: Vec::with_capacity(cfg.max_sources),
            heavy: vec![0; cfg.max_protected * 2 * SKETCH_CELLS],
            free_heavy: (0..cfg.max_protected as u32).rev().collect(),
            protected: Vec::with_capacity(cfg.max_protected),
            queues: std::array::from_fn(|_| VecDeque::with_capacity(queue_cap)),
            remembered: Remembered { rows: vec![0; 2 * MEMORY_CELLS], epoch: 0 },
            hasher: FixedState::with_seed(seed),
            evicted: 0,
            displaced: 0,
        })
    }

    /// Sources tracked now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no source is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sources pushed out of probation so far, and protected sources displaced by stronger evidence.
    pub fn evictions(&self) -> (u64, u64) {
        (self.evicted, self.displaced)
    }

    /// Whether `src` is tracked in the protected segment.
    pub fn is_protected(&self, src: IpAddr) -> bool {
        self.find(src).is_some_and(|s| self.entries[s as usize].protected)
    }

    /// Bytes the table holds (its own allocations, by capacity), for the memory cap.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.index.slots.capacity() * 4
            + self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.heavy.capacity()
            + self.free_heavy.capacity() * 4
            + self.protected.capacity() * 4
            + self.queues.iter().map(|q| q.capacity() * std::mem::size_of::<(u32, u32)>()).sum::<usize>()
            + self.remembered.rows.capacity()
    }

    fn find(&self, src: IpAddr) -> Option<u32> {
        self.index.find(&self.entries, src, self.hasher.hash_one(src))
    }

    fn minute(ts_ns: u64) -> u32 {
        (ts_ns / MINUTE_NS).min(u64::from(u32::MAX)) as u32
    }

    fn heavy_cells(heavy: &[u8], h: u32) -> &[u8] {
        let at = h as usize * 2 * SKETCH_CELLS;
        &heavy[at..at + 2 * SKETCH_CELLS]
    }

    fn heavy_of(&self, e: &Entry) -> Option<&[u8]> {
        (e.heavy != NO_HEAVY).then(|| Self::heavy_cells(&self.heavy, e.heavy))
    }

    /// One probe (a new flow or connection attempt) from `src` to `dst:dport` over `proto`;
    /// `answered` when the destination replied. `ts_ns` is capture time.
    pub fn observe(&mut self, src: IpAddr, dst: IpAddr, dport: u16, proto: Proto, answered: bool, ts_ns: u64) {
        let now = Self::minute(ts_ns);
        self.remembered.decay(now);
        let src_hash = self.hasher.hash_one(src);
        let slot = self.slot_for(src, src_hash, now);
        if !answered {
            self.remembered.add(src_hash);
        }
        let port_key = (proto_code(proto) << 16) | u32::from(dport);
        let host_key = self.hasher.hash_one(dst) as u32;
        let now = self.touch(slot, now);
        {
            let e = &mut self.entries[slot as usize];
            let m = &mut e.minutes[now as usize % MINUTES];
            m.probes = m.probes.saturating_add(1);
            let q = &mut e.quarters[(now / 15) as usize % QUARTERS];
            q.probes = q.probes.saturating_add(1);
            if !answered {
                m.unanswered = m.unanswered.saturating_add(1);
                q.unanswered = q.unanswered.saturating_add(1);
            }
        }
        let e = &mut self.entries[slot as usize];
        // Only unanswered probes spread a source over ports and hosts: answered ones to many
        // resolvers or to many ports of the attacker's own server would otherwise pad a scan
        // into looking like a P2P client (slow_scan's repetition test).
        let overflow = if answered {
            false
        } else if e.heavy == NO_HEAVY {
            let p = e.ports.insert(port_key, now);
            let h = e.hosts.insert(host_key, now);
            !(p && h)
        } else {
            false
        };
        // Unanswered probes promote only when at least two were seen since admission: a spoofed
        // one-probe source whose remembered count is inflated by count-min collisions stays out.
        let seen = u32::from(e.hour_counts(now).unanswered);
        let promote = self.cfg.promote_unanswered;
        if !e.protected
            && (overflow || (seen >= promote.min(2) && seen + u32::from(e.prior) >= promote))
            && (!self.free_heavy.is_empty() || e.tried != stamp(now))
        {
            // With the segment full, a source competes at most once a minute (each attempt scans it).
            e.tried = stamp(now);
            self.try_promote(slot, now);
        }
        let e = &mut self.entries[slot as usize];
        if answered {
            // Counted above; nothing distinct to record.
        } else if e.heavy != NO_HEAVY {
            let at = e.heavy as usize * 2 * SKETCH_CELLS;
            let cells = &mut self.heavy[at..at + 2 * SKETCH_CELLS];
            let s = stamp(now);
            cells[self.hasher.hash_one(port_key) as usize % SKETCH_CELLS] = s;
            cells[SKETCH_CELLS + self.hasher.hash_one(host_key) as usize % SKETCH_CELLS] = s;
        } else if overflow {
            e.lost = stamp(now);
        }
        if !e.protected {
            self.requeue(slot, now);
        }
    }

    /// One short session from `src` to a login service (SSH, telnet, MQTT…) that ended;
    /// `failed` when it ended without a lasting session (a rejected login).
    pub fn login_session(&mut self, src: IpAddr, failed: bool, ts_ns: u64) {
        let now = Self::minute(ts_ns);
        let src_hash = self.hasher.hash_one(src);
        let slot = self.slot_for(src, src_hash, now);
        let now = self.touch(slot, now);
        let e = &mut self.entries[slot as usize];
        let q = &mut e.quarters[(now / 15) as usize % QUARTERS];
        q.sessions = q.sessions.saturating_add(1);
        if failed {
            q.failed = q.failed.saturating_add(1);
        }
        if !e.protected {
            self.requeue(slot, now);
        }
    }

    /// What `src` did in `window` as of `ts_ns`; None when it is not tracked.
    pub fn stats(&self, src: IpAddr, window: Window, ts_ns: u64) -> Option<WindowStats> {
        let e = &self.entries[self.find(src)? as usize];
        let now = Self::minute(ts_ns).max(e.last_min);
        let w = window.minutes();
        let (probes, unanswered) = if window == Window::Hour {
            let h = e.hour_counts(now);
            (u32::from(h.probes), u32::from(h.unanswered))
        } else {
            e.minute_counts(now, w)
        };
        let ((ports, sat_p), (hosts, sat_h)) = e.distinct(now, w, self.heavy_of(e));
        Some(WindowStats {
            probes,
            unanswered,
            distinct_ports: ports,
            distinct_hosts: hosts,
            lower_bound: sat_p || sat_h || age(now, e.lost) <= w,
        })
    }

    /// Probes and unanswered probes of `src` over the hour as of `ts_ns`, without the distinct
    /// counts (O(1): detectors check this before asking for [`SourceHistory::stats`]).
    pub fn hour_probes(&self, src: IpAddr, ts_ns: u64) -> Option<(u32, u32)> {
        let e = &self.entries[self.find(src)? as usize];
        let h = e.hour_counts(Self::minute(ts_ns).max(e.last_min));
        Some((u32::from(h.probes), u32::from(h.unanswered)))
    }

    /// Login sessions of `src` over the hour as of `ts_ns`; None when it is not tracked.
    pub fn logins(&self, src: IpAddr, ts_ns: u64) -> Option<LoginStats> {
        let e = &self.entries[self.find(src)? as usize];
        let h = e.hour_counts(Self::minute(ts_ns).max(e.last_min));
        Some(LoginStats { sessions: u32::from(h.sessions), failed: u32::from(h.failed) })
    }

    fn touch(&mut self, slot: u32, now: u32) -> u32 {
        let e = &mut self.entries[slot as usize];
        let heavy = if e.heavy == NO_HEAVY {
            None
        } else {
            let at = e.heavy as usize * 2 * SKETCH_CELLS;
            Some(&mut self.heavy[at..at + 2 * SKETCH_CELLS])
        };
        e.touch(now, heavy)
    }

    /// The slot of `src`, admitting it (and evicting from probation) if new.
    fn slot_for(&mut self, src: IpAddr, src_hash: u64, now: u32) -> u32 {
        if let Some(s) = self.index.find(&self.entries, src, src_hash) {
            return s;
        }
        let prior = self.remembered.estimate(src_hash);
        let entry = Entry::new(src, now, prior);
        let slot = if self.entries.len() < self.cfg.max_sources {
            self.entries.push(entry);
            (self.entries.len() - 1) as u32
        } else {
            let victim = self.probation_victim();
            let old_hash = self.hasher.hash_one(self.entries[victim as usize].src);
            self.index.remove(&self.entries, victim, old_hash, &self.hasher);
            let old = std::mem::replace(&mut self.entries[victim as usize], entry);
            self.evicted += 1;
            self.entries[victim as usize].gen = old.gen.wrapping_add(1);
            victim
        };
        self.index.insert(slot, src_hash);
        let e = &mut self.entries[slot as usize];
        e.level = (e.prior as usize).min(LEVELS - 1) as u8;
        let (gen, level) = (e.gen, e.level as usize);
        self.queues[level].push_back((slot, gen));
        slot
    }

    /// The oldest probation source of the lowest level. Protected sources are never in the queues.
    fn probation_victim(&mut self) -> u32 {
        for level in 0..LEVELS {
            while let Some((slot, gen)) = self.queues[level].pop_front() {
                let e = &self.entries[slot as usize];
                if e.gen == gen && !e.protected && e.level as usize == level {
                    return slot;
                }
            }
        }
        // Unreachable while max_protected < max_sources: every probation entry has a live record.
        // Fall back to the first probation slot rather than panic.
        self.entries.iter().position(|e| !e.protected).unwrap_or(0) as u32
    }

    /// Queues `slot` anew when its level changed (each level is ordered by when its sources
    /// reached it), compacting the queues when stale records pile up.
    fn requeue(&mut self, slot: u32, now: u32) {
        let e = &mut self.entries[slot as usize];
        let h = e.hour_counts(now);
        let level = ((u32::from(h.probes) + u32::from(h.sessions) + u32::from(e.prior)).saturating_sub(1) as usize)
            .min(LEVELS - 1) as u8;
        if level == e.level {
            return;
        }
        e.level = level;
        e.gen = e.gen.wrapping_add(1);
        let gen = e.gen;
        self.queues[level as usize].push_back((slot, gen));
        let total: usize = self.queues.iter().map(VecDeque::len).sum();
        // Live records are at most one per probation source, so after compaction the queues hold
        // at most `max_sources`; shrinking keeps their capacity (counted in the cap) bounded too.
        if total > self.cfg.max_sources + self.cfg.max_sources / 2 {
            let entries = &self.entries;
            for (l, q) in self.queues.iter_mut().enumerate() {
                q.retain(|&(s, g)| {
                    let e = &entries[s as usize];
                    e.gen == g && !e.protected && e.level as usize == l
                });
                q.shrink_to(q.len().max(self.cfg.max_sources / LEVELS + 1));
            }
        }
    }

    /// Moves `slot` into the protected segment if there is room or it has more evidence than
    /// the weakest protected source (which goes back to probation without its sketch).
    fn try_promote(&mut self, slot: u32, now: u32) {
        let heavy = match self.free_heavy.pop() {
            Some(h) => h,
            None => {
                let cand = self.entries[slot as usize].score(now);
                let Some((pos, weakest, score)) = self
                    .protected
                    .iter()
                    .enumerate()
                    .map(|(i, &s)| (i, s, self.entries[s as usize].score(now)))
                    .min_by_key(|&(_, _, score)| score)
                else {
                    return;
                };
                if cand <= score {
                    return;
                }
                self.protected.swap_remove(pos);
                self.displaced += 1;
                let e = &mut self.entries[weakest as usize];
                let h = e.heavy;
                e.heavy = NO_HEAVY;
                e.protected = false;
                e.ports = Exact::default();
                e.hosts = Exact::default();
                e.lost = stamp(now.max(e.last_min));
                e.level = (LEVELS - 1) as u8;
                e.gen = e.gen.wrapping_add(1);
                let gen = e.gen;
                self.queues[LEVELS - 1].push_back((weakest, gen));
                h
            }
        };
        let at = heavy as usize * 2 * SKETCH_CELLS;
        let cells = &mut self.heavy[at..at + 2 * SKETCH_CELLS];
        cells.fill(0);
        let e = &mut self.entries[slot as usize];
        for i in 0..EXACT_ITEMS {
            if e.ports.stamps[i] != 0 {
                cells[self.hasher.hash_one(e.ports.keys[i]) as usize % SKETCH_CELLS] = e.ports.stamps[i];
            }
            if e.hosts.stamps[i] != 0 {
                cells[SKETCH_CELLS + self.hasher.hash_one(e.hosts.keys[i]) as usize % SKETCH_CELLS] = e.hosts.stamps[i];
            }
        }
        e.heavy = heavy;
        e.protected = true;
        e.gen = e.gen.wrapping_add(1);
        self.protected.push(slot);
    }
}

fn proto_code(p: Proto) -> u32 {
    match p {
        Proto::Tcp => 6,
        Proto::Udp => 17,
        Proto::Icmp => 1,
        Proto::Icmpv6 => 58,
        #[allow(unreachable_patterns)]
        _ => 255,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const T0: u64 = 1_796_000_000 * 1_000_000_000; // a Unix time in ns
    const MIN: u64 = MINUTE_NS;
    const SEC: u64 = 1_000_000_000;

    fn v4(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(n))
    }
    fn scanner() -> IpAddr {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x5ca))
    }
    fn target() -> IpAddr {
        v4(0xc000_0210) // 192.0.2.16
    }
    fn history(seed: u64) -> SourceHistory {
        SourceHistory::with_seed(SourceHistoryConfig::default(), seed).unwrap()
    }

    #[test]
    fn thousand_ports_and_hosts_within_five_percent() {
        // Standard error at 1 000 items over 2 048 cells: 1.7 %; 5 % is ~3 σ. Eight seeds, all must hold.
        for seed in 0..8 {
            let mut h = history(seed);
            for i in 0..1000u32 {
                h.observe(
                    scanner(),
                    v4(0xc633_6400 + i),
                    1000 + i as u16,
                    Proto::Tcp,
                    false,
                    T0 + u64::from(i) * SEC / 10,
                );
            }
            let s = h.stats(scanner(), Window::Quarter, T0 + 100 * SEC).unwrap();
            for (what, n) in [("ports", s.distinct_ports), ("hosts", s.distinct_hosts)] {
                assert!((950..=1050).contains(&n), "seed {seed}: {n} distinct {what} for 1000");
            }
            assert_eq!((s.probes, s.unanswered, s.lower_bound), (1000, 1000, false));
            assert_eq!(s.unanswered_share(), Some(1.0));
            assert!(h.is_protected(scanner()));
        }
    }

    #[test]
    fn small_counts_are_exact_and_per_protocol() {
        let mut h = history(1);
        h.observe(scanner(), target(), 53, Proto::Udp, false, T0);
        h.observe(scanner(), target(), 53, Proto::Tcp, false, T0 + SEC);
        h.observe(scanner(), target(), 53, Proto::Tcp, true, T0 + 2 * SEC);
        // Answered probes count as probes, never as spread: another host, another port.
        h.observe(scanner(), v4(0xc000_0211), 443, Proto::Tcp, true, T0 + 2 * SEC);
        let s = h.stats(scanner(), Window::Minute, T0 + 2 * SEC).unwrap();
        assert_eq!((s.distinct_ports, s.distinct_hosts, s.probes, s.unanswered), (2, 1, 4, 2));
        assert!(!h.is_protected(scanner()));
        assert_eq!(h.stats(v4(1), Window::Minute, T0), None);
    }

    /// A port seen 16 minutes ago has left the 15-minute window but not the hour; after 61 minutes
    /// it has left the hour. Checked for a probation source (exact lists) and a protected one (sketch).
    #[test]
    fn windows_expire_by_the_minute() {
        for protected in [false, true] {
            let mut h = history(2);
            let extra = if protected { 20 } else { 0 };
            for i in 0..=extra {
                h.observe(scanner(), target(), 22 + i as u16, Proto::Tcp, false, T0);
            }
            assert_eq!(h.is_protected(scanner()), protected);
            let later = T0 + 16 * MIN;
            h.observe(scanner(), v4(0xc000_0211), 8080, Proto::Tcp, false, later);
            let q = h.stats(scanner(), Window::Quarter, later).unwrap();
            let hr = h.stats(scanner(), Window::Hour, later).unwrap();
            let m = h.stats(scanner(), Window::Minute, later).unwrap();
            assert_eq!((q.distinct_ports, q.distinct_hosts, q.probes, q.unanswered), (1, 1, 1, 1), "{protected}");
            assert_eq!((m.distinct_ports, m.probes), (1, 1));
            assert_eq!((hr.distinct_ports, hr.distinct_hosts), (2 + extra, 2), "{protected}");
            assert_eq!((hr.probes, hr.unanswered), (2 + extra, 2 + extra));
            // 61 minutes after the first probes only the later one is in the hour.
            let hr = h.stats(scanner(), Window::Hour, T0 + 61 * MIN).unwrap();
            assert_eq!((hr.distinct_ports, hr.distinct_hosts), (1, 1), "{protected}");
            // The hour's counts use quarter hours: gone once their quarter is 5 quarters old.
            let gone = h.stats(scanner(), Window::Hour, later + 76 * MIN).unwrap();
            assert_eq!((gone.distinct_ports, gone.probes, gone.unanswered), (0, 0, 0), "{protected}");
        }
    }

    #[test]
    fn logins_per_hour() {
        let mut h = history(3);
        for i in 0..10u64 {
            h.login_session(scanner(), i % 5 != 0, T0 + i * MIN);
        }
        assert_eq!(h.logins(scanner(), T0 + 10 * MIN), Some(LoginStats { sessions: 10, failed: 8 }));
        assert_eq!(h.logins(scanner(), T0 + 90 * MIN), Some(LoginStats::default()));
    }

    /// The default table at 100 000 sources stays within 32 MB by its own byte count, also after a
    /// flood that churns the probation queues and with every protected slot in use.
    #[test]
    fn memory_is_capped_at_100k_sources() {
        let mut h = history(4);
        let cfg = SourceHistoryConfig::default();
        for i in 0..cfg.max_sources as u32 {
            let src = if i % 2 == 0 {
                v4(0x6440_0000 + i)
            } else {
                IpAddr::V6(Ipv6Addr::from(0xfd00_u128 << 112 | u128::from(i)))
            };
            h.observe(src, target(), 80, Proto::Tcp, true, T0);
        }
        for i in 0..cfg.max_protected as u32 + 10 {
            for p in 0..10u16 {
                h.observe(v4(0x0a00_0000 + i), target(), p, Proto::Tcp, false, T0 + SEC);
            }
        }
        for i in 0..300_000u32 {
            h.observe(v4(0x2000_0000 + i), target(), 80, Proto::Tcp, i % 3 == 0, T0 + 2 * SEC);
        }
        assert_eq!(h.len(), cfg.max_sources);
        let bytes = h.memory_bytes();
        eprintln!(
            "entry {} B, index {} B, total {} B = {:.1} MB for {} sources",
            std::mem::size_of::<Entry>(),
            h.index.slots.len() * 4,
            bytes,
            bytes as f64 / 1e6,
            h.len()
        );
        assert!(bytes <= 32_000_000, "{bytes} bytes");
    }

    /// The eviction attack: a scanner that has shown evidence keeps its whole state while
    /// 1 000 000 spoofed one-probe sources arrive between two of its probes.
    #[test]
    fn protected_scanner_survives_a_million_spoofed_sources() {
        let mut h = history(5);
        let mut t = T0;
        for p in 0..5u16 {
            h.observe(scanner(), target(), 20 + p, Proto::Tcp, false, t);
            t += 15 * SEC;
        }
        assert!(h.is_protected(scanner()));
        for i in 0..1_000_000u32 {
            h.observe(v4(0x6440_0000 + i), target(), 80, Proto::Tcp, false, t + u64::from(i) * 15);
        }
        t += 15 * SEC;
        h.observe(scanner(), target(), 25, Proto::Tcp, false, t);
        let s = h.stats(scanner(), Window::Quarter, t).expect("the scanner was evicted");
        assert_eq!((s.distinct_ports, s.probes, s.unanswered, s.lower_bound), (6, 6, 6, false));
        assert!(h.evictions().0 >= 900_000);
    }

    /// The harder case: the flood starts before the scanner has shown anything, 200 000 spoofed
    /// sources (twice the table) between every two probes, 15 s apart (nmap -T1). Each probe's
    /// entry is flushed out before the next, but the count-min memory of unanswered probes carries
    /// its count over, so it reaches protection and keeps everything from then on.
    #[test]
    fn slow_scanner_gains_protection_through_a_flood() {
        let mut h = history(6);
        let mut t = T0;
        let mut spoofed = 0u32;
        for p in 0..8u16 {
            h.observe(scanner(), target(), 20 + p, Proto::Tcp, false, t);
            for _ in 0..200_000 {
                h.observe(
                    v4(0x6440_0000 + spoofed),
                    target(),
                    80,
                    Proto::Tcp,
                    false,
                    t + u64::from(spoofed % 200_000) * 70,
                );
                spoofed += 1;
            }
            t += 15 * SEC;
        }
        assert!(h.is_protected(scanner()), "the slow scanner never reached protection");
        let s = h.stats(scanner(), Window::Quarter, t).unwrap();
        // Protected at its 3rd or 4th probe (its first ones live on only in the count-min memory).
        assert!(s.distinct_ports >= 5 && s.probes >= 5, "{s:?}");
        // The flood itself was not protected.
        assert_eq!(h.protected.len(), 1, "spoofed sources were protected");
    }

    #[test]
    fn config_is_validated() {
        let bad = SourceHistoryConfig { max_protected: 100_000, ..Default::default() };
        assert!(bad.validate().unwrap_err().contains("max_protected"));
        assert!(SourceHistoryConfig { promote_unanswered: 0, ..Default::default() }.validate().is_err());
        assert!(SourceHistory::new(SourceHistoryConfig { max_sources: 1, max_protected: 1, promote_unanswered: 1 })
            .is_err());
    }
}
