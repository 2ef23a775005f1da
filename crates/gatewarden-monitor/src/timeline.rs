//! A capture's own timeline for the dashboard's charts after `replay --serve`
//! (issue #18): packets per bucket of capture time, so the traffic and alert
//! charts plot when things happened in the capture, not the wall-clock minutes
//! the replay took (a fast replay is over in a second; its alerts carry the
//! capture's timestamps).
//!
//! Memory is bounded whatever the capture's span: at most [`MAX_BUCKETS`]
//! buckets; when a packet falls past the last one, the bucket width doubles
//! and neighbouring buckets merge.

use serde_json::{json, Value};

/// Most buckets a timeline holds (and a chart draws).
pub const MAX_BUCKETS: usize = 240;

/// Packets per bucket of capture time, starting at the capture's first packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeline {
    /// The first packet's time, ns since the epoch (the first bucket's start).
    start_ns: u64,
    /// The last packet's time.
    last_ns: u64,
    /// Bucket width in ns (1 s, doubling as the capture grows).
    width_ns: u64,
    packets: Vec<u64>,
}

impl Timeline {
    /// A timeline whose first packet is at `first_ns`.
    pub fn new(first_ns: u64) -> Timeline {
        Timeline { start_ns: first_ns, last_ns: first_ns, width_ns: 1_000_000_000, packets: vec![0] }
    }

    /// Counts one packet at `ts_ns`. A packet stamped before the first one
    /// (captures are not always in order) counts in the first bucket.
    pub fn add(&mut self, ts_ns: u64) {
        let off = ts_ns.saturating_sub(self.start_ns);
        let mut i = off / self.width_ns;
        while i >= MAX_BUCKETS as u64 {
            self.widen();
            i = off / self.width_ns;
        }
        let i = i as usize;
        if self.packets.len() <= i {
            self.packets.resize(i + 1, 0);
        }
        self.packets[i] += 1;
        self.last_ns = self.last_ns.max(ts_ns);
    }

    /// Doubles the bucket width, merging pairs.
    fn widen(&mut self) {
        self.width_ns = self.width_ns.saturating_mul(2);
        self.packets = self.packets.chunks(2).map(|c| c.iter().sum()).collect();
    }

    /// Buckets of `width_ns` from the first packet.
    pub fn packets(&self) -> &[u64] {
        &self.packets
    }

    /// The chart document: the time range to plot (`from`/`to`, Unix seconds
    /// of the capture's first and last packet), the bucket width, packets/s per
    /// bucket, and the alerts at `alert_ts_ns` counted in the same buckets
    /// (alerts outside the range are left out).
    pub fn to_json(&self, alert_ts_ns: impl Iterator<Item = u64>) -> Value {
        let n = self.packets.len();
        let mut alerts = vec![0u64; n];
        let end = self.start_ns.saturating_add(self.width_ns.saturating_mul(n as u64));
        for t in alert_ts_ns {
            if t >= self.start_ns && t < end {
                alerts[((t - self.start_ns) / self.width_ns) as usize] += 1;
            }
        }
        let width_s = self.width_ns as f64 / 1e9;
        json!({
            "clock": "capture",
            "from": self.start_ns as f64 / 1e9,
            "to": self.last_ns as f64 / 1e9,
            "bucket_s": width_s,
            "pps": self.packets.iter().map(|&p| p as f64 / width_s).collect::<Vec<f64>>(),
            "alerts": alerts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn packets_land_in_their_second_of_capture_time() {
        let mut t = Timeline::new(100 * S);
        for ts in [100 * S, 100 * S + 5, 103 * S, 103 * S + S / 2] {
            t.add(ts);
        }
        assert_eq!(t.packets(), &[2, 0, 0, 2]);
        let v = t.to_json([99 * S, 101 * S, 103 * S + 1, 200 * S].into_iter());
        assert_eq!(v["from"], 100.0);
        assert_eq!(v["to"], 103.5);
        assert_eq!(v["bucket_s"], 1.0);
        assert_eq!(v["alerts"], json!([0, 1, 0, 1]), "alerts outside the capture are left out");
        assert_eq!(v["pps"], json!([2.0, 0.0, 0.0, 2.0]));
    }

    #[test]
    fn a_long_capture_stays_within_the_bucket_bound_and_keeps_every_packet() {
        let mut t = Timeline::new(0);
        for s in 0..10_000u64 {
            t.add(s * S);
        }
        t.add(0); // out of order: the first bucket
        assert!(t.packets().len() <= MAX_BUCKETS, "{}", t.packets().len());
        assert_eq!(t.packets().iter().sum::<u64>(), 10_001);
        let v = t.to_json(std::iter::once(9_999 * S));
        assert_eq!(v["alerts"].as_array().unwrap().iter().map(|a| a.as_u64().unwrap()).sum::<u64>(), 1);
        assert_eq!(v["bucket_s"], 64.0);
    }

    #[test]
    fn a_far_future_packet_cannot_make_it_grow_or_loop_forever() {
        let mut t = Timeline::new(1);
        t.add(u64::MAX);
        assert!(t.packets().len() <= MAX_BUCKETS);
        assert_eq!(t.packets().iter().sum::<u64>(), 1);
    }
}
