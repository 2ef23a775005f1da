//! The sliding windows the detectors count in, shared by several of them:
//! [`CountWindow`] (packets over time, for the flood rates) and
//! [`AttemptWindow`] (new connection attempts with distinct-count indexes, for
//! scans, sweeps, connection-rate brute force and the flood rule's scan check).

use std::collections::VecDeque;
use std::net::IpAddr;

use gatewarden_proto::messages::Proto;

use super::services::AUTH_PORTS;

/// Hash maps keyed by attacker-controlled data use a per-process random seed.
pub(super) type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// Hash sets keyed by attacker-controlled data use a per-process random seed.
pub(super) type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// Most events one window keeps; beyond it the oldest go first.
const MAX_EVENTS: usize = 65_536;
/// Most login connections remembered per source; also bounds the web sessions
/// and the waiting requests kept per source.
pub(super) const MAX_LOGINS: usize = 4096;
/// Slots a packet-count window is cut into: counts within one slot (39 ms of the
/// default 10 s window) add up in one entry, so a flood of any rate costs at most
/// this many entries a window, not one per record (65 536 at 16 bytes each, per
/// source, for a SYN flood before). Trimming a slot at its first count's time
/// drops at most a slot's counts early: an undercount of 1/256, never an overcount.
const COUNT_SLOTS: u64 = 256;
/// A table with room for more than this many entries, and four times more than
/// it holds, is shrunk (see [`shrink`]); smaller ones keep their room.
const SHRINK_ABOVE: usize = 64;

/// Gives back most of a table's room once it holds a quarter or less of it: capacity
/// kept after a burst was most of what a spoofed scan cost (20 MB a source, never
/// freed). Amortised O(1): the entries that left paid for the copy.
pub(super) fn shrink<T>(len: usize, capacity: usize, shrink_to: impl FnOnce(usize) -> T) {
    if capacity > SHRINK_ABOVE && capacity > 4 * len {
        shrink_to(2 * len);
    }
}

/// A running packet total over a sliding time window, bounded in entries.
#[derive(Debug, Default)]
pub(super) struct CountWindow {
    /// (time of the slot's first count, counts in the slot), oldest first.
    events: VecDeque<(u64, u64)>,
    /// Sum of the counts in the window.
    pub(super) total: u64,
}

impl CountWindow {
    /// Empties the window, keeping the allocation (a recycled source state).
    pub(super) fn clear(&mut self) {
        let CountWindow { events, total } = self;
        events.clear();
        *total = 0;
    }

    /// Entries it has room for.
    pub(super) fn capacity(&self) -> usize {
        self.events.capacity()
    }

    /// Entries it holds.
    pub(super) fn len(&self) -> usize {
        self.events.len()
    }

    /// Counts `n` at capture time `ts`, in the slot of a window of `window_ns`.
    pub(super) fn push(&mut self, ts: u64, n: u32, window_ns: u64) {
        self.total += n as u64;
        let slot_ns = (window_ns / COUNT_SLOTS).max(1);
        if let Some(last) = self.events.back_mut().filter(|(t, _)| ts < t + slot_ns) {
            last.1 += n as u64;
            return;
        }
        if self.events.len() >= MAX_EVENTS {
            if let Some((_, old)) = self.events.pop_front() {
                self.total -= old;
            }
        }
        self.events.push_back((ts, n as u64));
    }
    /// Events per second: over the time the events actually span (at least
    /// one second, at most the window), so a 2-second flood is not averaged
    /// over a 10-second window.
    pub(super) fn rate(&self, now: u64, window_ns: u64) -> f64 {
        let first = self.events.front().map_or(now, |e| e.0);
        let span_ns = now.saturating_sub(first).clamp(1_000_000_000, window_ns.max(1_000_000_000));
        self.total as f64 / (span_ns as f64 / 1e9)
    }

    /// Drops what is older than the window.
    pub(super) fn trim(&mut self, now: u64, window_ns: u64) {
        while let Some(&(ts, n)) = self.events.front() {
            if ts + window_ns >= now {
                break;
            }
            self.events.pop_front();
            self.total -= n;
        }
        shrink(self.events.len(), self.events.capacity(), |n| self.events.shrink_to(n));
    }

    /// Keeps the newest `keep` slots and only the room they need (the shared budget, see
    /// `Heuristics::reclaim`): the rate over what is left is still the rate, or less.
    pub(super) fn keep_newest(&mut self, keep: usize) {
        while self.events.len() > keep {
            if let Some((_, n)) = self.events.pop_front() {
                self.total -= n;
            }
        }
        self.events.shrink_to_fit();
    }
}

/// New connection attempts in a sliding window, with distinct-count indexes
/// kept incrementally so each update is O(1).
///
/// The indexes are flat: a map of (destination, port, protocol) pairs and two
/// maps of distinct counts. Nested maps (a map of ports per destination, and one
/// of destinations per port) made every port of a vertical scan its own
/// one-entry map, ~200 bytes with the allocation; a pair costs ~30.
#[derive(Debug, Default)]
pub(super) struct AttemptWindow {
    /// (time, destination, port, protocol), oldest first.
    events: VecDeque<(u64, IpAddr, u16, Proto)>,
    /// (destination, port, protocol) → attempts.
    pairs: HashMap<(IpAddr, u16, Proto), u32>,
    /// (destination, protocol) → distinct ports tried.
    ports_of: HashMap<(IpAddr, Proto), u32>,
    /// (port, protocol) → distinct destinations tried.
    dsts_of: HashMap<(u16, Proto), u32>,
}

fn bump<K: std::hash::Hash + Eq>(m: &mut HashMap<K, u32>, k: K) {
    *m.entry(k).or_insert(0) += 1;
}

/// Counts one fewer of `k`; true when that was its last.
fn unbump<K: std::hash::Hash + Eq>(m: &mut HashMap<K, u32>, k: K) -> bool {
    if let std::collections::hash_map::Entry::Occupied(mut e) = m.entry(k) {
        *e.get_mut() -= 1;
        if *e.get() == 0 {
            e.remove();
            return true;
        }
    }
    false
}

impl AttemptWindow {
    /// Empties the window and its indexes, keeping the outer allocations (a recycled source state).
    pub(super) fn clear(&mut self) {
        let AttemptWindow { events, pairs, ports_of, dsts_of } = self;
        events.clear();
        pairs.clear();
        ports_of.clear();
        dsts_of.clear();
    }

    /// Entries it and its indexes have room for.
    pub(super) fn capacity(&self) -> usize {
        self.events.capacity() + self.pairs.capacity() + self.ports_of.capacity() + self.dsts_of.capacity()
    }

    /// Attempts in the window.
    pub(super) fn len(&self) -> usize {
        self.events.len()
    }

    /// Distinct ports of `dst` tried over `proto` in the window.
    pub(super) fn ports(&self, dst: IpAddr, proto: Proto) -> usize {
        self.ports_of.get(&(dst, proto)).map_or(0, |&n| n as usize)
    }

    /// Distinct destinations tried on `port` over `proto` in the window.
    pub(super) fn hosts(&self, port: u16, proto: Proto) -> usize {
        self.dsts_of.get(&(port, proto)).map_or(0, |&n| n as usize)
    }

    /// Whether `dst`'s `port` was tried over `proto` in the window.
    pub(super) fn tried(&self, dst: IpAddr, port: u16, proto: Proto) -> bool {
        self.pairs.contains_key(&(dst, port, proto))
    }

    /// TCP attempts to `dst`'s `port` in the window, if it is an auth port (else 0).
    pub(super) fn auth_attempts(&self, dst: IpAddr, port: u16) -> u32 {
        if !AUTH_PORTS.contains(&port) {
            return 0;
        }
        self.pairs.get(&(dst, port, Proto::Tcp)).copied().unwrap_or(0)
    }

    /// Counts a new flow's first packet at capture time `ts`.
    pub(super) fn push(&mut self, ts: u64, dst: IpAddr, port: u16, proto: Proto) {
        // Room is made first, so the queue never grows past the cap to double its allocation.
        if self.events.len() >= MAX_EVENTS {
            self.pop();
        }
        self.events.push_back((ts, dst, port, proto));
        let n = self.pairs.entry((dst, port, proto)).or_insert(0);
        *n += 1;
        if *n == 1 {
            bump(&mut self.ports_of, (dst, proto));
            bump(&mut self.dsts_of, (port, proto));
        }
    }
    fn pop(&mut self) {
        if let Some((_, dst, port, proto)) = self.events.pop_front() {
            if unbump(&mut self.pairs, (dst, port, proto)) {
                unbump(&mut self.ports_of, (dst, proto));
                unbump(&mut self.dsts_of, (port, proto));
            }
        }
    }
    /// Drops what is older than the window, and the room that frees.
    pub(super) fn trim(&mut self, now: u64, window_ns: u64) {
        let before = self.events.len();
        while let Some(&(ts, ..)) = self.events.front() {
            if ts + window_ns >= now {
                break;
            }
            self.pop();
        }
        if self.events.len() < before {
            self.shrink();
        }
    }

    fn shrink(&mut self) {
        let AttemptWindow { events, pairs, ports_of, dsts_of } = self;
        shrink(events.len(), events.capacity(), |n| events.shrink_to(n));
        shrink(pairs.len(), pairs.capacity(), |n| pairs.shrink_to(n));
        shrink(ports_of.len(), ports_of.capacity(), |n| ports_of.shrink_to(n));
        shrink(dsts_of.len(), dsts_of.capacity(), |n| dsts_of.shrink_to(n));
    }

    /// Keeps the newest `keep` attempts and only the room they need (the shared budget).
    pub(super) fn keep_newest(&mut self, keep: usize) {
        while self.events.len() > keep {
            self.pop();
        }
        let AttemptWindow { events, pairs, ports_of, dsts_of } = self;
        events.shrink_to_fit();
        pairs.shrink_to_fit();
        ports_of.shrink_to_fit();
        dsts_of.shrink_to_fit();
    }

    /// Seconds between the oldest and the newest attempt (at least 1 ms).
    pub(super) fn span_s(&self) -> f64 {
        match (self.events.front(), self.events.back()) {
            (Some(a), Some(b)) => (b.0.saturating_sub(a.0) as f64 / 1e9).max(0.001),
            _ => 0.001,
        }
    }
    /// The share of the attempts in the window that went unanswered, in percent,
    /// given the source's `failed` (unanswered) flows.
    pub(super) fn unanswered_pct(&self, failed: usize) -> f64 {
        let attempts = self.events.len();
        let a = failed.min(attempts);
        if attempts == 0 {
            0.0
        } else {
            100.0 * a as f64 / attempts as f64
        }
    }
}
