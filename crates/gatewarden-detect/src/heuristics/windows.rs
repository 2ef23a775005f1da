//! The sliding windows the detectors count in, shared by several of them:
//! [`CountWindow`] (packets over time, for the flood rates) and
//! [`AttemptWindow`] (new connection attempts with distinct-count indexes and
//! unanswered shares per host and per port, for scans, sweeps, connection-rate
//! brute force and the flood rule's scan check).

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

    /// Time of the oldest slot still held.
    pub(super) fn oldest(&self) -> Option<u64> {
        self.events.front().map(|e| e.0)
    }

    /// Drops the slots that began before `ts` (another window cut to its newest
    /// slots: this one then covers no more time than it does).
    pub(super) fn drop_before(&mut self, ts: u64) {
        while let Some(&(t, n)) = self.events.front() {
            if t >= ts {
                break;
            }
            self.events.pop_front();
            self.total -= n;
        }
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
/// maps of tallies, per host and per port. Nested maps (a map of ports per
/// destination, and one of destinations per port) made every port of a vertical
/// scan its own one-entry map, ~200 bytes with the allocation; a pair costs ~30.
///
/// Each attempt carries whether its flow went unanswered. A finding's
/// unanswered share is over the targets it is about — the ports of the scanned
/// host, the hosts of the swept port — counting a target answered once any
/// attempt to it was: answered flows elsewhere cannot dilute it (a red team
/// padded a scan with quick answered connections to another host), nor can
/// repeated answered connections to one open port of the scanned host (the
/// share of attempts could be pushed below the policy's bar that way), nor do
/// a scanner's retries count twice. An attempt takes its mark with it when it
/// leaves (aged, cut or pushed out), so a share is always that of the
/// attempts still in the window.
#[derive(Debug, Default)]
pub(super) struct AttemptWindow {
    /// Oldest first; the attempt numbered `first` comes first.
    events: VecDeque<Attempt>,
    /// The number of the oldest attempt: attempts are numbered as they are pushed
    /// (wrapping), so a flow finds its own to mark it (see [`AttemptWindow::mark`]).
    first: u32,
    /// (destination, port, protocol) → its attempts.
    pairs: HashMap<(IpAddr, u16, Proto), PairCount>,
    /// (destination, protocol) → its attempts; `distinct`: ports tried.
    per_host: HashMap<(IpAddr, Proto), Tally>,
    /// (port, protocol) → its attempts; `distinct`: destinations tried.
    per_port: HashMap<(u16, Proto), Tally>,
    /// protocol → its attempts; `distinct`: (destination, port) pairs tried.
    per_proto: HashMap<Proto, Tally>,
}

/// One new connection attempt (32 bytes, as before its mark).
#[derive(Debug, Clone, Copy)]
struct Attempt {
    /// Capture time of the flow's first packet.
    ts: u64,
    dst: IpAddr,
    port: u16,
    proto: Proto,
    /// Its flow went unanswered, as of the flow's latest snapshot.
    unanswered: bool,
}

/// Attempts to one (destination, port, protocol) in the window.
#[derive(Debug, Default, Clone, Copy)]
struct PairCount {
    attempts: u32,
    /// Of them, those whose flow was answered.
    answered: u32,
    /// The host answered the source on this port within the day (the detector
    /// stage's long memory), as any of these attempts found when it was made.
    known: bool,
}

/// Attempts to one host, or on one port, in the window. An entry lives as long as
/// it has attempts, as the distinct count alone did, so it costs no more entries.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    /// Distinct ports (of a host) or hosts (on a port) tried.
    distinct: u32,
    attempts: u32,
    /// Of the `distinct` targets, those with at least one answered attempt.
    answered: u32,
    /// Of the `distinct` targets, those known to have answered within the day
    /// ([`PairCount::known`]; kept for the per-port tally only).
    known: u32,
}

impl Tally {
    /// The share of the targets tried that never answered, in percent.
    fn unanswered_pct(&self) -> f64 {
        if self.distinct == 0 {
            0.0
        } else {
            100.0 * (self.distinct - self.answered) as f64 / self.distinct as f64
        }
    }
}

/// Counts one attempt more in `k`'s tally: `new_pair` if it is the first to its
/// pair, `newly_answered` if its pair had no answered attempt before it.
fn tally_in<K: std::hash::Hash + Eq>(m: &mut HashMap<K, Tally>, k: K, new_pair: bool, newly_answered: bool) {
    let t = m.entry(k).or_default();
    t.distinct += u32::from(new_pair);
    t.attempts += 1;
    t.answered += u32::from(newly_answered);
}

/// Counts one attempt fewer in `k`'s tally: `last_of_pair` if it was its pair's
/// last, `lost_answer` if it was its pair's last answered one.
fn tally_out<K: std::hash::Hash + Eq>(m: &mut HashMap<K, Tally>, k: K, last_of_pair: bool, lost_answer: bool) {
    if let std::collections::hash_map::Entry::Occupied(mut e) = m.entry(k) {
        let t = e.get_mut();
        t.distinct -= u32::from(last_of_pair);
        t.attempts -= 1;
        t.answered -= u32::from(lost_answer);
        if t.attempts == 0 {
            e.remove();
        }
    }
}

/// Counts one of `k`'s targets answered (`answered`) or no longer so.
fn tally_answered<K: std::hash::Hash + Eq>(m: &mut HashMap<K, Tally>, k: &K, answered: bool) {
    if let Some(t) = m.get_mut(k) {
        if answered {
            t.answered += 1;
        } else {
            t.answered -= 1;
        }
    }
}

impl AttemptWindow {
    /// Empties the window and its indexes, keeping the outer allocations (a recycled source
    /// state, whose flows, and the attempt numbers they hold, are emptied with it).
    pub(super) fn clear(&mut self) {
        let AttemptWindow { events, first, pairs, per_host, per_port, per_proto } = self;
        events.clear();
        *first = 0;
        pairs.clear();
        per_host.clear();
        per_port.clear();
        per_proto.clear();
    }

    /// Entries it and its indexes have room for.
    pub(super) fn capacity(&self) -> usize {
        self.events.capacity()
            + self.pairs.capacity()
            + self.per_host.capacity()
            + self.per_port.capacity()
            + self.per_proto.capacity()
    }

    /// Attempts in the window.
    pub(super) fn len(&self) -> usize {
        self.events.len()
    }

    /// Distinct ports of `dst` tried over `proto` in the window.
    pub(super) fn ports(&self, dst: IpAddr, proto: Proto) -> usize {
        self.per_host.get(&(dst, proto)).map_or(0, |t| t.distinct as usize)
    }

    /// Distinct destinations tried on `port` over `proto` in the window.
    pub(super) fn hosts(&self, port: u16, proto: Proto) -> usize {
        self.per_port.get(&(port, proto)).map_or(0, |t| t.distinct as usize)
    }

    /// The share of the ports of `dst` tried over `proto` in the window that
    /// never answered, in percent (a port scan's probes).
    pub(super) fn unanswered_pct_to(&self, dst: IpAddr, proto: Proto) -> f64 {
        self.per_host.get(&(dst, proto)).map_or(0.0, Tally::unanswered_pct)
    }

    /// The share of the hosts tried on `port` over `proto` in the window that
    /// never answered, in percent (a sweep's probes).
    pub(super) fn unanswered_pct_on(&self, port: u16, proto: Proto) -> f64 {
        self.per_port.get(&(port, proto)).map_or(0.0, Tally::unanswered_pct)
    }

    /// The share of the (host, port) pairs the source tried over `proto` in the window
    /// that never answered, in percent: a sweep's share among everything the source
    /// did. A VPN or P2P node pinging its peers' candidate endpoints from one socket gets
    /// answers from the peers' other endpoints, on other ports.
    pub(super) fn unanswered_pct_over(&self, proto: Proto) -> f64 {
        self.per_proto.get(&proto).map_or(0.0, Tally::unanswered_pct)
    }

    /// Of the hosts tried on `port` over `proto` in the window, those known to have
    /// answered the source there within the day ([`AttemptWindow::push_known`]).
    pub(super) fn known_hosts(&self, port: u16, proto: Proto) -> usize {
        self.per_port.get(&(port, proto)).map_or(0, |t| t.known as usize)
    }

    /// Whether `dst` on `port` over `proto` is in the window and known to have answered
    /// the source there within the day.
    pub(super) fn known(&self, dst: IpAddr, port: u16, proto: Proto) -> bool {
        self.pairs.get(&(dst, port, proto)).is_some_and(|p| p.known)
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
        self.pairs.get(&(dst, port, Proto::Tcp)).map_or(0, |p| p.attempts)
    }

    /// Counts a new flow's first packet at capture time `ts`, `unanswered` as of this
    /// snapshot; returns the attempt's number, for [`AttemptWindow::mark`].
    #[cfg(test)]
    pub(super) fn push(&mut self, ts: u64, dst: IpAddr, port: u16, proto: Proto, unanswered: bool) -> u32 {
        self.push_known(ts, dst, port, proto, unanswered, false)
    }

    /// [`AttemptWindow::push`]; `known`: the host answered the source on this port
    /// within the day (the detector stage's long memory). Counted once per host and
    /// port while any attempt to it is in the window, so the sweep rule asks
    /// [`AttemptWindow::known_hosts`] in O(1) instead of the memory for every host.
    pub(super) fn push_known(
        &mut self,
        ts: u64,
        dst: IpAddr,
        port: u16,
        proto: Proto,
        unanswered: bool,
        known: bool,
    ) -> u32 {
        // Room is made first, so the queue never grows past the cap to double its allocation.
        if self.events.len() >= MAX_EVENTS {
            self.pop();
        }
        let number = self.first.wrapping_add(self.events.len() as u32);
        self.events.push_back(Attempt { ts, dst, port, proto, unanswered });
        let pair = self.pairs.entry((dst, port, proto)).or_default();
        pair.attempts += 1;
        pair.answered += u32::from(!unanswered);
        let new_pair = pair.attempts == 1;
        let newly_answered = !unanswered && pair.answered == 1;
        let newly_known = known && !pair.known;
        pair.known |= known;
        tally_in(&mut self.per_host, (dst, proto), new_pair, newly_answered);
        tally_in(&mut self.per_port, (port, proto), new_pair, newly_answered);
        tally_in(&mut self.per_proto, proto, new_pair, newly_answered);
        if newly_known {
            if let Some(t) = self.per_port.get_mut(&(port, proto)) {
                t.known += 1;
            }
        }
        number
    }

    /// A number no attempt in the window has, nor will have while a flow holds it (for a
    /// flow that made no attempt): that of the last attempt to have left. A number is
    /// only reused 2³² attempts later, and a source forgets its flows, and the numbers
    /// they hold, every 16 384 new flows at most (`MAX_FLOWS_PER_SOURCE` in the facade);
    /// an attempt's own number, once it has left, is out of the window just the same.
    pub(super) fn no_attempt(&self) -> u32 {
        self.first.wrapping_sub(1)
    }

    /// Marks attempt `number` as its flow's latest snapshot has it, `unanswered` or not (an
    /// answer seen in a later snapshot; a handshake its originator then aborted). O(1); an
    /// attempt no longer in the window is left as it went.
    pub(super) fn mark(&mut self, number: u32, unanswered: bool) {
        let Some(a) = self.events.get_mut(number.wrapping_sub(self.first) as usize) else { return };
        if a.unanswered == unanswered {
            return;
        }
        a.unanswered = unanswered;
        let a = *a;
        let Some(pair) = self.pairs.get_mut(&(a.dst, a.port, a.proto)) else { return };
        // The target changes side only with its first answer, or its last.
        let flips = if unanswered {
            pair.answered -= 1;
            pair.answered == 0
        } else {
            pair.answered += 1;
            pair.answered == 1
        };
        if flips {
            tally_answered(&mut self.per_host, &(a.dst, a.proto), !unanswered);
            tally_answered(&mut self.per_port, &(a.port, a.proto), !unanswered);
            tally_answered(&mut self.per_proto, &a.proto, !unanswered);
        }
    }

    fn pop(&mut self) {
        if let Some(a) = self.events.pop_front() {
            self.first = self.first.wrapping_add(1);
            let (mut last, mut lost_answer, mut lost_known) = (false, false, false);
            if let std::collections::hash_map::Entry::Occupied(mut e) = self.pairs.entry((a.dst, a.port, a.proto)) {
                let pair = e.get_mut();
                pair.attempts -= 1;
                if !a.unanswered {
                    pair.answered -= 1;
                    lost_answer = pair.answered == 0;
                }
                if pair.attempts == 0 {
                    lost_known = pair.known;
                    e.remove();
                    last = true;
                }
            }
            if lost_known {
                if let Some(t) = self.per_port.get_mut(&(a.port, a.proto)) {
                    t.known -= 1;
                }
            }
            tally_out(&mut self.per_host, (a.dst, a.proto), last, lost_answer);
            tally_out(&mut self.per_port, (a.port, a.proto), last, lost_answer);
            tally_out(&mut self.per_proto, a.proto, last, lost_answer);
        }
    }
    /// Drops what is older than the window, and the room that frees.
    pub(super) fn trim(&mut self, now: u64, window_ns: u64) {
        let before = self.events.len();
        while let Some(a) = self.events.front() {
            if a.ts + window_ns >= now {
                break;
            }
            self.pop();
        }
        if self.events.len() < before {
            self.shrink();
        }
    }

    fn shrink(&mut self) {
        let AttemptWindow { events, pairs, per_host, per_port, per_proto, .. } = self;
        shrink(events.len(), events.capacity(), |n| events.shrink_to(n));
        shrink(per_proto.len(), per_proto.capacity(), |n| per_proto.shrink_to(n));
        shrink(pairs.len(), pairs.capacity(), |n| pairs.shrink_to(n));
        shrink(per_host.len(), per_host.capacity(), |n| per_host.shrink_to(n));
        shrink(per_port.len(), per_port.capacity(), |n| per_port.shrink_to(n));
    }

    /// Keeps the newest `keep` attempts and only the room they need (the shared budget);
    /// their marks go with them, so the unanswered shares are those of the newest attempts.
    pub(super) fn keep_newest(&mut self, keep: usize) {
        while self.events.len() > keep {
            self.pop();
        }
        let AttemptWindow { events, pairs, per_host, per_port, per_proto, .. } = self;
        per_proto.shrink_to_fit();
        events.shrink_to_fit();
        pairs.shrink_to_fit();
        per_host.shrink_to_fit();
        per_port.shrink_to_fit();
    }

    /// Seconds between the oldest and the newest attempt (at least 1 ms).
    pub(super) fn span_s(&self) -> f64 {
        match (self.events.front(), self.events.back()) {
            (Some(a), Some(b)) => (b.ts.saturating_sub(a.ts) as f64 / 1e9).max(0.001),
            _ => 0.001,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tallies, worked out again from the attempts themselves: one line per host
    /// and per port, (distinct, attempts, targets answered), sorted.
    fn recount(w: &AttemptWindow) -> Vec<String> {
        let mut host: HashMap<(IpAddr, Proto), (u32, u32, u32, u32)> = HashMap::default();
        let mut port: HashMap<(u16, Proto), (u32, u32, u32, u32)> = HashMap::default();
        let mut proto: HashMap<Proto, (u32, u32, u32, u32)> = HashMap::default();
        let mut pairs: HashSet<(IpAddr, u16, Proto)> = HashSet::default();
        let mut answered: HashSet<(IpAddr, u16, Proto)> = HashSet::default();
        for a in &w.events {
            let new_pair = u32::from(pairs.insert((a.dst, a.port, a.proto)));
            let newly_answered = u32::from(!a.unanswered && answered.insert((a.dst, a.port, a.proto)));
            for t in [
                host.entry((a.dst, a.proto)).or_default(),
                port.entry((a.port, a.proto)).or_default(),
                proto.entry(a.proto).or_default(),
            ] {
                *t = (t.0 + new_pair, t.1 + 1, t.2 + newly_answered, t.3);
            }
            // Known hosts are counted per port only (the test's pairs are known by port).
            port.entry((a.port, a.proto)).or_default().3 += new_pair * u32::from(known_in_test(a.port));
        }
        let mut lines: Vec<String> = host.iter().map(|(k, v)| format!("host {k:?}: {v:?}")).collect();
        lines.extend(port.iter().map(|(k, v)| format!("port {k:?}: {v:?}")));
        lines.extend(proto.iter().map(|(k, v)| format!("proto {k:?}: {v:?}")));
        lines.sort();
        lines
    }

    /// Whether the day memory knows a pair, in [`the_tallies_are_those_of_the_attempts_left`]:
    /// by port, so every attempt to a pair says the same.
    fn known_in_test(port: u16) -> bool {
        port % 3 == 0
    }

    /// The window's own tallies, as [`recount`] has them.
    fn tallies(w: &AttemptWindow) -> Vec<String> {
        let t = |t: &Tally| (t.distinct, t.attempts, t.answered, t.known);
        let mut lines: Vec<String> = w.per_host.iter().map(|(k, v)| format!("host {k:?}: {:?}", t(v))).collect();
        lines.extend(w.per_port.iter().map(|(k, v)| format!("port {k:?}: {:?}", t(v))));
        lines.extend(w.per_proto.iter().map(|(k, v)| format!("proto {k:?}: {:?}", t(v))));
        lines.sort();
        lines
    }

    /// Whatever is pushed, marked, aged out or cut, in whatever order, each tally is
    /// that of the attempts left: a trim or a cut keeps every share honest.
    #[test]
    fn the_tallies_are_those_of_the_attempts_left() {
        let mut w = AttemptWindow::default();
        let mut numbers = Vec::new();
        let mut marked = 0;
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let window_ns = 1_000_000;
        for step in 0..20_000u64 {
            let r = next();
            let ts = step * 1000;
            match r % 8 {
                0..=3 => {
                    let dst = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, (r >> 8) as u8 % 6));
                    let proto = if r >> 16 & 1 == 0 { Proto::Tcp } else { Proto::Udp };
                    let port = (r >> 20) as u16 % 40;
                    numbers.push(w.push_known(ts, dst, port, proto, r >> 32 & 1 == 0, known_in_test(port)));
                }
                4 | 5 => {
                    // Marks attempts mostly in the window, some long gone, and flows that made none.
                    let back = (r >> 8) as usize % 1200;
                    let number = match numbers.len().checked_sub(1 + back) {
                        Some(i) if back < 1100 => numbers[i],
                        _ => w.no_attempt(),
                    };
                    let before: Vec<bool> = w.events.iter().map(|a| a.unanswered).collect();
                    w.mark(number, r >> 32 & 1 == 0);
                    marked += u32::from(w.events.iter().map(|a| a.unanswered).ne(before));
                }
                6 => w.trim(ts, window_ns),
                _ if r >> 8 & 63 == 0 => w.keep_newest(w.len() / 2),
                _ => {}
            }
            if step % 97 == 0 {
                assert_eq!(tallies(&w), recount(&w), "step {step}");
            }
        }
        assert!(marked > 500, "{marked} marks changed an attempt");
        assert_eq!(tallies(&w), recount(&w));
        while w.len() > 0 {
            w.pop();
        }
        assert!(w.pairs.is_empty() && w.per_host.is_empty() && w.per_port.is_empty() && w.per_proto.is_empty());
    }

    /// The share is per host and per port: padding elsewhere does not move it, and a cut
    /// to the newest attempts leaves the share of those.
    #[test]
    fn shares_are_per_host_and_per_port_and_a_cut_keeps_the_newest_ones() {
        let mut w = AttemptWindow::default();
        let (scanned, padded): (IpAddr, IpAddr) = ("192.0.2.10".parse().unwrap(), "192.0.2.80".parse().unwrap());
        // 10 answered probes to the scanned host first, then 10 unanswered ones, each
        // between two answered flows to another host's 443.
        for i in 0..20u16 {
            w.push(u64::from(i) * 10, padded, 443, Proto::Tcp, false);
            w.push(u64::from(i) * 10 + 1, padded, 443, Proto::Tcp, false);
            w.push(u64::from(i) * 10 + 2, scanned, 1 + i, Proto::Tcp, i >= 10);
        }
        assert_eq!(w.unanswered_pct_to(scanned, Proto::Tcp), 50.0);
        assert_eq!(w.unanswered_pct_to(padded, Proto::Tcp), 0.0);
        assert_eq!(w.unanswered_pct_to(scanned, Proto::Udp), 0.0);
        assert_eq!(w.unanswered_pct_on(5, Proto::Tcp), 0.0);
        assert_eq!(w.unanswered_pct_on(15, Proto::Tcp), 100.0);
        // The newest 15 attempts: the last 5 probes, all unanswered.
        w.keep_newest(15);
        assert_eq!((w.ports(scanned, Proto::Tcp), w.unanswered_pct_to(scanned, Proto::Tcp)), (5, 100.0));
    }

    /// An attempt costs no more than before its mark.
    #[test]
    fn an_attempt_is_32_bytes() {
        assert!(std::mem::size_of::<Attempt>() <= 32, "{}", std::mem::size_of::<Attempt>());
    }
}
