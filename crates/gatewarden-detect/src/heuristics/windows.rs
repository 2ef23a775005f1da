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

/// A running packet total over a sliding time window, bounded in entries.
#[derive(Debug, Default)]
pub(super) struct CountWindow {
    events: VecDeque<(u64, u32)>,
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

    /// Counts `n` at capture time `ts`.
    pub(super) fn push(&mut self, ts: u64, n: u32) {
        self.events.push_back((ts, n));
        self.total += n as u64;
        if self.events.len() > MAX_EVENTS {
            if let Some((_, old)) = self.events.pop_front() {
                self.total -= old as u64;
            }
        }
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
            self.total -= n as u64;
        }
    }
}

/// New connection attempts in a sliding window, with distinct-count indexes
/// kept incrementally so each update is O(1).
#[derive(Debug, Default)]
pub(super) struct AttemptWindow {
    /// (time, destination, port, protocol, to an auth port over TCP), oldest first.
    pub(super) events: VecDeque<(u64, IpAddr, u16, Proto, bool)>,
    /// (destination, protocol) → port → attempts.
    pub(super) ports_by_dst: HashMap<(IpAddr, Proto), HashMap<u16, u32>>,
    /// (port, protocol) → destination → attempts.
    pub(super) dsts_by_port: HashMap<(u16, Proto), HashMap<IpAddr, u32>>,
    /// (destination, auth port) → TCP attempts.
    pub(super) auth: HashMap<(IpAddr, u16), u32>,
}

fn bump<K: std::hash::Hash + Eq>(m: &mut HashMap<K, u32>, k: K) {
    *m.entry(k).or_insert(0) += 1;
}

fn unbump<K: std::hash::Hash + Eq>(m: &mut HashMap<K, u32>, k: K) {
    if let std::collections::hash_map::Entry::Occupied(mut e) = m.entry(k) {
        *e.get_mut() -= 1;
        if *e.get() == 0 {
            e.remove();
        }
    }
}

impl AttemptWindow {
    /// Empties the window and its indexes, keeping the outer allocations (a recycled source state).
    pub(super) fn clear(&mut self) {
        let AttemptWindow { events, ports_by_dst, dsts_by_port, auth } = self;
        events.clear();
        ports_by_dst.clear();
        dsts_by_port.clear();
        auth.clear();
    }

    /// Entries it and its indexes have room for.
    pub(super) fn capacity(&self) -> usize {
        self.events.capacity() + self.ports_by_dst.capacity() + self.dsts_by_port.capacity() + self.auth.capacity()
    }

    /// Counts a new flow's first packet at capture time `ts`.
    pub(super) fn push(&mut self, ts: u64, dst: IpAddr, port: u16, proto: Proto) {
        let auth = proto == Proto::Tcp && AUTH_PORTS.contains(&port);
        self.events.push_back((ts, dst, port, proto, auth));
        bump(self.ports_by_dst.entry((dst, proto)).or_default(), port);
        bump(self.dsts_by_port.entry((port, proto)).or_default(), dst);
        if auth {
            bump(&mut self.auth, (dst, port));
        }
        if self.events.len() > MAX_EVENTS {
            self.pop();
        }
    }
    fn pop(&mut self) {
        if let Some((_, dst, port, proto, auth)) = self.events.pop_front() {
            if let Some(m) = self.ports_by_dst.get_mut(&(dst, proto)) {
                unbump(m, port);
                if m.is_empty() {
                    self.ports_by_dst.remove(&(dst, proto));
                }
            }
            if let Some(m) = self.dsts_by_port.get_mut(&(port, proto)) {
                unbump(m, dst);
                if m.is_empty() {
                    self.dsts_by_port.remove(&(port, proto));
                }
            }
            if auth {
                unbump(&mut self.auth, (dst, port));
            }
        }
    }
    /// Drops what is older than the window.
    pub(super) fn trim(&mut self, now: u64, window_ns: u64) {
        while let Some(&(ts, ..)) = self.events.front() {
            if ts + window_ns >= now {
                break;
            }
            self.pop();
        }
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
