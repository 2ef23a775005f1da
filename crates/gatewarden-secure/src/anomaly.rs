//! Anomaly detection on the channel itself, per peer: message size,
//! inter-arrival time and messages per second.
//!
//! An isolation forest needs a stored training sample per peer and a refit
//! schedule; on a bus whose normal traffic is a handful of steady streams,
//! exponentially weighted mean/variance per feature (z-scores) finds the same
//! outliers (floods, odd sizes, bursts of replays) with 100 bytes per peer, no
//! training phase beyond a warm-up of [`WARMUP`] messages, and alerts whose
//! reason states the numbers. Peers are capped at `max_peers`; the least
//! recently seen is forgotten first.

use gatewarden_core::ewma::Ewma;
use std::collections::HashMap;

/// Messages from a peer before its baseline is trusted.
pub const WARMUP: u32 = 32;
/// Weight of a new observation in the moving averages.
const ALPHA: f64 = 0.05;
/// A size this many standard deviations from the mean (and over 4 times the mean plus 1 KiB) is odd.
const SIZE_Z: f64 = 6.0;
/// Messages in one second above which a peer floods, regardless of its baseline.
pub const FLOOD_HARD_PER_S: u32 = 2000;
/// Rate multiple over the peer's own baseline that is a flood (and at least `FLOOD_MIN_PER_S`).
const FLOOD_FACTOR: f64 = 10.0;
/// Below this many messages per second nothing is called a flood.
const FLOOD_MIN_PER_S: u32 = 100;
/// Replays (or other rejections) per second that are an attack, not a glitch.
const REJECT_BURST_PER_S: u32 = 5;
/// Seconds between two anomaly alerts of one kind about one peer.
const COOLDOWN_NS: u64 = 10_000_000_000;

/// What looked wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelAnomaly {
    /// The peer.
    pub peer: String,
    /// `flood`, `odd_size` or `rejections`.
    pub what: &'static str,
    /// A sentence with the numbers.
    pub reason: String,
}

/// Folds `x` in; the first observation only sets the mean.
fn learn(e: &mut Ewma, x: f64, first: bool) {
    if first {
        *e = Ewma::starting_at(x);
    } else {
        e.update(ALPHA, x);
    }
}

#[derive(Debug, Clone, Default)]
struct PeerStats {
    n: u32,
    size: Ewma,
    gap_ms: Ewma,
    rate: Ewma,
    last_ns: u64,
    window_start_ns: u64,
    window_count: u32,
    window_rejects: u32,
    last_alert_ns: [u64; 3],
}

/// Per-peer baselines, bounded.
#[derive(Debug)]
pub struct ChannelWatch {
    peers: HashMap<String, PeerStats>,
    max_peers: usize,
}

impl ChannelWatch {
    /// Keeps at most `max_peers` baselines.
    pub fn new(max_peers: usize) -> ChannelWatch {
        ChannelWatch { peers: HashMap::new(), max_peers: max_peers.max(1) }
    }

    /// Peers tracked now.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether no peer is tracked.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    fn peer(&mut self, peer: &str) -> &mut PeerStats {
        if !self.peers.contains_key(peer) && self.peers.len() >= self.max_peers {
            if let Some(oldest) = self.peers.iter().min_by_key(|(_, s)| s.last_ns).map(|(k, _)| k.clone()) {
                self.peers.remove(&oldest);
            }
        }
        self.peers.entry(peer.to_string()).or_default()
    }

    fn roll_window(s: &mut PeerStats, now_ns: u64) {
        if now_ns.saturating_sub(s.window_start_ns) >= 1_000_000_000 {
            if s.window_start_ns != 0 {
                let first = s.n <= 1;
                learn(&mut s.rate, s.window_count as f64, first);
            }
            s.window_start_ns = now_ns;
            s.window_count = 0;
            s.window_rejects = 0;
        }
    }

    fn alert(s: &mut PeerStats, slot: usize, now_ns: u64) -> bool {
        if now_ns.saturating_sub(s.last_alert_ns[slot]) >= COOLDOWN_NS || s.last_alert_ns[slot] == 0 {
            s.last_alert_ns[slot] = now_ns;
            true
        } else {
            false
        }
    }

    /// Observes one message of `size` bytes from `peer` at `now_ns`; returns what is anomalous.
    pub fn observe(&mut self, peer: &str, size: usize, now_ns: u64) -> Vec<ChannelAnomaly> {
        self.observe_with(peer, size, now_ns, true)
    }

    /// [`Self::observe`], optionally without the size check (for streams whose size follows the traffic,
    /// like flow batches, where a big one means an attack on the network, not on the channel).
    pub fn observe_with(&mut self, peer: &str, size: usize, now_ns: u64, check_size: bool) -> Vec<ChannelAnomaly> {
        let s = self.peer(peer);
        Self::roll_window(s, now_ns);
        s.window_count += 1;
        let size = size as f64;
        let gap_ms = if s.last_ns == 0 { 0.0 } else { now_ns.saturating_sub(s.last_ns) as f64 / 1e6 };
        let mut out = Vec::new();
        let warmed = s.n >= WARMUP;
        let base_rate = s.rate.mean.max(1.0);
        let flood_limit = if warmed {
            ((base_rate * FLOOD_FACTOR) as u32).clamp(FLOOD_MIN_PER_S, FLOOD_HARD_PER_S)
        } else {
            FLOOD_HARD_PER_S
        };
        if s.window_count == flood_limit + 1 && Self::alert(s, 0, now_ns) {
            out.push(ChannelAnomaly {
                peer: peer.to_string(),
                what: "flood",
                reason: format!(
                    "more than {flood_limit} messages in one second from {peer} (its usual rate is {:.1}/s)",
                    s.rate.mean
                ),
            });
        }
        if warmed && check_size {
            let z = s.size.z(size, 1.0);
            if z > SIZE_Z && size > 4.0 * s.size.mean + 1024.0 && Self::alert(s, 1, now_ns) {
                out.push(ChannelAnomaly {
                    peer: peer.to_string(),
                    what: "odd_size",
                    reason: format!(
                        "a {size:.0}-byte message from {peer}, {z:.1} standard deviations from its usual {:.0} bytes",
                        s.size.mean
                    ),
                });
            }
        }
        let first = s.n == 0;
        learn(&mut s.size, size, first);
        if !first {
            learn(&mut s.gap_ms, gap_ms, s.n == 1);
        }
        s.n = s.n.saturating_add(1);
        s.last_ns = now_ns;
        out
    }

    /// Observes one rejected message (replay, forgery…) from `peer`; a burst is an anomaly.
    pub fn observe_rejection(&mut self, peer: &str, now_ns: u64) -> Option<ChannelAnomaly> {
        let s = self.peer(peer);
        Self::roll_window(s, now_ns);
        s.window_rejects += 1;
        s.last_ns = s.last_ns.max(now_ns);
        if s.window_rejects == REJECT_BURST_PER_S && Self::alert(s, 2, now_ns) {
            return Some(ChannelAnomaly {
                peer: peer.to_string(),
                what: "rejections",
                reason: format!("{REJECT_BURST_PER_S} rejected messages in one second claiming to be from {peer}"),
            });
        }
        None
    }

    /// The learned mean size and inter-arrival time (ms) of a peer, for status pages and tests.
    pub fn baseline(&self, peer: &str) -> Option<(f64, f64)> {
        self.peers.get(peer).map(|s| (s.size.mean, s.gap_ms.mean))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn steady(w: &mut ChannelWatch, peer: &str, n: u64, start: u64) -> u64 {
        let mut t = start;
        for i in 0..n {
            t += 100 * MS;
            assert!(w.observe(peer, 300 + (i % 7) as usize, t).is_empty(), "steady traffic is normal");
        }
        t
    }

    #[test]
    fn steady_traffic_is_quiet_and_learned() {
        let mut w = ChannelWatch::new(8);
        steady(&mut w, "d1", 200, 1_000 * MS);
        let (size, gap) = w.baseline("d1").unwrap();
        assert!((size - 303.0).abs() < 5.0, "{size}");
        assert!((gap - 100.0).abs() < 5.0, "{gap}");
    }

    #[test]
    fn a_flood_and_an_odd_size_are_reported_once_each() {
        let mut w = ChannelWatch::new(8);
        let t = steady(&mut w, "d1", 100, 1_000 * MS);
        let odd = w.observe("d1", 60_000, t + 100 * MS);
        assert_eq!(odd.len(), 1);
        assert_eq!(odd[0].what, "odd_size");
        let mut floods = 0;
        for i in 0..1000 {
            floods += w.observe("d1", 300, t + 2_000 * MS + i * 100_000).iter().filter(|a| a.what == "flood").count();
        }
        assert_eq!(floods, 1, "one alert per cooldown, not one per message");
    }

    #[test]
    fn a_burst_of_rejections_is_reported() {
        let mut w = ChannelWatch::new(8);
        let hits: Vec<_> = (0..20).filter_map(|i| w.observe_rejection("x", 5_000 * MS + i * MS)).collect();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].what, "rejections");
    }

    #[test]
    fn memory_is_bounded_by_max_peers() {
        let mut w = ChannelWatch::new(16);
        for i in 0..1000u64 {
            w.observe(&format!("p{i}"), 100, (i + 1) * MS);
        }
        assert_eq!(w.len(), 16);
        assert!(w.baseline("p999").is_some() && w.baseline("p0").is_none(), "oldest forgotten first");
    }
}
