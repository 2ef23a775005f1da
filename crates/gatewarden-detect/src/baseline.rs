//! Per-device baseline: each source learns what it normally does and is
//! flagged when it suddenly does something else.
//!
//! Online and bounded: per source a damped mean and variance of its upload
//! rate (1 s bins, half-life [`BaselineConfig::half_life_s`]), and a small
//! set of destinations it has talked to. After a warm-up
//! (`detector.baseline_warmup_s` since the source was first seen) two
//! findings are possible, each with the numbers:
//!
//! * **new host at high volume**: a destination never seen before (or first
//!   contacted less than [`NEW_HOST_PROBATION_S`] ago) receives
//!   at least `baseline_min_bps` and at least `baseline_factor` × the
//!   device's usual upload within one second (a sensor exfiltrating to a new
//!   server);
//! * **upload surge**: the device's upload in a second is at least
//!   `baseline_factor` × its damped mean, `baseline_z` standard deviations
//!   above it, and at least `baseline_min_bps` (a camera whose upload
//!   triples).
//!
//! Memory: at most [`MAX_DEVICES`] devices (evicted in batches: devices
//! still in warm-up first, devices that proved their address last, the
//! least recently seen first within each), [`MAX_DESTS_PER_DEVICE`]
//! destinations and [`MAX_FLOWS_PER_DEVICE`] flow counters per device, and
//! [`MAX_PENDING_PER_DEVICE`] destinations on probation: about 3.5 KiB per
//! device at the caps.

use gatewarden_core::ewma::Ewma;
use gatewarden_core::net::Cidr;
use std::net::IpAddr;

use crate::heuristics::Detection;
use gatewarden_proto::messages::{AttackKind, FlowRecord, Proto};

type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Most devices with a baseline.
pub const MAX_DEVICES: usize = 16_384;
/// Most remembered destinations per device (least recently used replaced).
pub const MAX_DESTS_PER_DEVICE: usize = 64;
/// Most flows whose byte counts a device keeps (for deltas).
pub const MAX_FLOWS_PER_DEVICE: usize = 256;

const BIN_NS: u64 = 1_000_000_000;

/// Baseline thresholds (from `[detector]`).
#[derive(Debug, Clone, PartialEq)]
pub struct BaselineConfig {
    /// Seconds after a device is first seen before it can be flagged.
    pub warmup_s: u64,
    /// Half-life of the damped upload statistics, seconds.
    pub half_life_s: f64,
    /// How many times the usual upload makes a surge.
    pub factor: f64,
    /// Standard deviations above the mean that make a surge.
    pub z: f64,
    /// Bytes per second below which nothing is flagged.
    pub min_bps: f64,
    /// Only sources in these networks are devices with a baseline (empty: every source).
    pub home_net: Vec<Cidr>,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        BaselineConfig {
            warmup_s: 60,
            half_life_s: 60.0,
            factor: 3.0,
            z: 4.0,
            min_bps: 125_000.0,
            home_net: Vec::new(),
        }
    }
}

#[derive(Debug, Default)]
struct Device {
    first_ns: u64,
    last_ns: u64,
    /// Start of the current 1 s bin and the bytes uploaded in it.
    bin_start: u64,
    bin_bytes: f64,
    /// Bytes per destination in the current bin.
    bin_dst: Vec<(IpAddr, f64)>,
    /// Damped statistics of upload bytes per second (over completed bins).
    upload: Ewma,
    bins: u64,
    /// Known destinations → last seen (ns); learned during warm-up and from
    /// traffic that was not flagged.
    dests: Vec<(IpAddr, u64)>,
    /// Flow id → forward bytes already counted.
    flows: HashMap<u64, u64>,
    /// Destinations first contacted after warm-up → first closed second (ns):
    /// still judged as new hosts until [`NEW_HOST_PROBATION_S`] have passed, at
    /// most [`MAX_PENDING_PER_DEVICE`] (more simply wait their turn, staying new).
    pending: Vec<(IpAddr, u64)>,
    /// Destinations flagged as new hosts (never learned while their report holds), at most [`MAX_FLAGGED_PER_DEVICE`].
    flagged: Vec<(IpAddr, u64)>,
    /// Last report per finding, for hysteresis.
    reported_new_host: u64,
    reported_surge: u64,
    /// Consecutive closed seconds whose upload to known hosts was a surge.
    surge_streak: u32,
    /// A flow of this source acknowledged what it was sent (`src_answered`):
    /// it receives at its address, which no forger of the address does.
    proven: bool,
}

/// The per-device baselines.
pub struct Baseline {
    cfg: BaselineConfig,
    devices: HashMap<IpAddr, Device>,
}

impl Baseline {
    /// New sensitivity (settings page); the learned baselines are kept.
    pub fn set_config(&mut self, cfg: BaselineConfig) {
        self.cfg = cfg;
    }

    /// Empty baselines.
    pub fn new(cfg: BaselineConfig) -> Baseline {
        Baseline { cfg, devices: HashMap::default() }
    }

    /// Whether `a` is one of the protected devices (`detector.home_net`).
    fn is_device(&self, a: IpAddr) -> bool {
        self.cfg.home_net.is_empty() || self.cfg.home_net.iter().any(|c| c.contains(&a))
    }

    /// Devices currently tracked (bounded by [`MAX_DEVICES`]).
    pub fn tracked(&self) -> usize {
        self.devices.len()
    }

    /// Makes room: devices that proved their address go last, then devices
    /// past their warm-up, and within each the least recently seen first. A
    /// flood of forged addresses (each new, none proven) thus evicts its own
    /// kind, not the baseline of a device it wants to reset: a device that
    /// starts over learns every destination during its warm-up.
    fn evict(&mut self) {
        let eighth = (self.devices.len() / 8).max(1);
        let warmup_ns = self.cfg.warmup_s.saturating_mul(1_000_000_000);
        gatewarden_core::lru::evict_oldest(&mut self.devices, eighth, |d| {
            let established = d.bins >= 2 && d.last_ns.saturating_sub(d.first_ns) >= warmup_ns;
            let tier = u64::from(d.proven) << 1 | u64::from(established);
            // Milliseconds fit in 56 bits for two million years.
            tier << 56 | (d.last_ns / 1_000_000) & ((1 << 56) - 1)
        });
    }

    /// Feeds one flow snapshot; returns findings it completes.
    pub fn observe(&mut self, r: &FlowRecord) -> Vec<Detection> {
        let mut out = Vec::new();
        if !matches!(r.proto, Proto::Tcp | Proto::Udp) || !self.is_device(r.src) {
            return out;
        }
        if !self.devices.contains_key(&r.src) && self.devices.len() >= MAX_DEVICES {
            self.evict();
        }
        let cfg = self.cfg.clone();
        let d = self.devices.entry(r.src).or_insert_with(|| Device {
            first_ns: r.first_ns,
            bin_start: r.last_ns - r.last_ns % BIN_NS,
            ..Default::default()
        });
        d.first_ns = d.first_ns.min(r.first_ns);
        d.last_ns = d.last_ns.max(r.last_ns);
        d.proven |= r.src_answered;
        // Close finished bins (idle seconds count as zero upload).
        let now_bin = r.last_ns - r.last_ns % BIN_NS;
        if now_bin > d.bin_start {
            let idle = ((now_bin - d.bin_start) / BIN_NS).saturating_sub(1).min(3600);
            let closing = known_bytes(d);
            d.surge_streak = if idle == 0 && is_surge(d, &cfg, closing) { d.surge_streak + 1 } else { 0 };
            close_bin(d, &cfg, d.bin_bytes);
            for _ in 0..idle {
                close_bin(d, &cfg, 0.0);
            }
            // Destinations of the closed second become known unless flagged.
            let hold = 60 * 1_000_000_000;
            d.flagged.retain(|(_, t)| *t + hold >= r.last_ns);
            let closed = d.bin_start;
            d.pending.retain(|(_, first)| *first + PENDING_FORGET_NS >= closed);
            let seen: Vec<IpAddr> = d.bin_dst.iter().map(|(a, _)| *a).collect();
            for a in seen {
                if d.flagged.iter().any(|(f, _)| *f == a) {
                    continue;
                }
                if d.dests.iter().any(|(k, _)| *k == a) {
                    learn(d, a, closed);
                    continue;
                }
                // A new host becomes usual only after a probation without a finding,
                // so a small handshake cannot vouch for the upload that follows it.
                match d.pending.iter().position(|(p, _)| *p == a) {
                    Some(i) if d.pending[i].1 + NEW_HOST_PROBATION_S * BIN_NS <= closed => {
                        d.pending.swap_remove(i);
                        learn(d, a, closed);
                    }
                    Some(_) => {}
                    None if d.pending.len() < MAX_PENDING_PER_DEVICE => d.pending.push((a, closed)),
                    None => {}
                }
            }
            d.bin_start = now_bin;
            d.bin_bytes = 0.0;
            d.bin_dst.clear();
        }
        if d.flows.len() >= MAX_FLOWS_PER_DEVICE && !d.flows.contains_key(&r.flow_id) {
            // Forget the flows; their next snapshots count from zero again,
            // which under-counts (never over-counts) one bin.
            d.flows.clear();
        }
        let prev = d.flows.insert(r.flow_id, r.fwd_bytes);
        let delta = r.fwd_bytes.saturating_sub(prev.unwrap_or(0)) as f64;
        d.bin_bytes += delta;
        let dst_bytes = match d.bin_dst.iter_mut().find(|(a, _)| *a == r.dst) {
            Some((_, b)) => {
                *b += delta;
                *b
            }
            None => {
                if d.bin_dst.len() < MAX_DESTS_PER_DEVICE {
                    d.bin_dst.push((r.dst, delta));
                }
                delta
            }
        };
        let warm = r.last_ns.saturating_sub(d.first_ns) >= cfg.warmup_s * 1_000_000_000 && d.bins >= 2;
        let known = d.dests.iter().position(|(a, _)| *a == r.dst);
        let usual = d.upload.mean.max(1.0);
        let sd = d.upload.std_dev();
        let hold_ns = 60 * 1_000_000_000;
        if warm && known.is_none() && dst_bytes >= cfg.min_bps && dst_bytes >= cfg.factor * usual {
            // Flagged even while the report is held back: a second exfiltration
            // host must not pass its probation during the first one's quiet minute.
            match d.flagged.iter().position(|(f, _)| *f == r.dst) {
                Some(i) => d.flagged[i].1 = r.last_ns,
                None if d.flagged.len() < MAX_FLAGGED_PER_DEVICE => d.flagged.push((r.dst, r.last_ns)),
                None => {}
            }
            if r.last_ns >= d.reported_new_host + hold_ns || d.reported_new_host == 0 {
                d.reported_new_host = r.last_ns;
                // The surge that comes with it is the same event.
                d.reported_surge = r.last_ns;
                let ratio = dst_bytes / usual;
                out.push(Detection {
                    source: Some(r.src),
                    target: Some(r.dst),
                    port: r.dport,
                    proto: Some(r.proto),
                    kind: AttackKind::Anomaly,
                    confidence: (0.6 + 0.1 * (ratio / cfg.factor).log2().max(0.0) as f32).min(0.9),
                    reason: format!(
                        "{} sent {:.0} kB to {} (never seen in {:.0} s of baseline) within 1 s: {ratio:.1}× its usual {:.1} kB/s upload",
                        r.src,
                        dst_bytes / 1e3,
                        r.dst,
                        r.last_ns.saturating_sub(d.first_ns) as f64 / 1e9,
                        d.upload.mean / 1e3
                    ),
                    evidence: vec![
                        ("bytes_to_new_host_1s".into(), dst_bytes),
                        ("usual_upload_bps".into(), d.upload.mean),
                        ("ratio".into(), ratio),
                    ],
                    ts_ns: r.last_ns,
                    flow_id: r.flow_id,
                });
            }
        } else if warm
            // Traffic to new hosts is judged by the rule above (its reason says more).
            && known.is_some()
            // Sustained: this second and the SURGE_SECONDS − 1 before it. A
            // one-second burst (a paced sender catching up after a stall; the
            // 10-minute benign lab run had both cameras do it) is not a surge.
            && d.surge_streak + 1 >= SURGE_SECONDS
            && is_surge(d, &cfg, known_bytes(d))
            && (r.last_ns >= d.reported_surge + hold_ns || d.reported_surge == 0)
        {
            d.reported_surge = r.last_ns;
            let up = known_bytes(d);
            let z = (up - d.upload.mean) / sd.max(0.1 * d.upload.mean).max(1.0);
            out.push(Detection {
                source: Some(r.src),
                target: None,
                port: 0,
                proto: None,
                kind: AttackKind::Anomaly,
                confidence: 0.6,
                reason: format!(
                    "{} uploaded {:.0} kB in 1 s to hosts it knows, the 3rd surged second in a row: {:.1}× its usual {:.1} kB/s (z = {z:.1})",
                    r.src,
                    up / 1e3,
                    up / usual,
                    d.upload.mean / 1e3
                ),
                evidence: vec![("upload_bytes_1s".into(), up), ("usual_upload_bps".into(), d.upload.mean), ("z".into(), z)],
                ts_ns: r.last_ns,
                flow_id: r.flow_id,
            });
        }
        // During warm-up everything is learned at once; later, destinations
        // are learned when their second closes unflagged (see above), so an
        // exfiltration target never becomes "usual" on its first packets.
        if !warm {
            learn(d, r.dst, r.last_ns);
        } else if let Some(i) = known {
            d.dests[i].1 = r.last_ns;
        }
        out
    }
}

/// Seconds a destination first contacted after warm-up stays "never seen" (judged by
/// the new-host rule) before it can become usual.
pub const NEW_HOST_PROBATION_S: u64 = 30;
/// Most destinations flagged as new hosts per device (beyond it they stay
/// unlearned only through their probation).
pub const MAX_FLAGGED_PER_DEVICE: usize = 16;
/// Most destinations on probation per device.
pub const MAX_PENDING_PER_DEVICE: usize = 16;
/// A probation not completed within this long starts over (one contact, then silence).
const PENDING_FORGET_NS: u64 = 4 * NEW_HOST_PROBATION_S * BIN_NS;

/// Seconds in a row the upload must stay surged.
pub const SURGE_SECONDS: u32 = 3;

/// Upload of one second far above the device's usual (factor, z, floor).
fn is_surge(d: &Device, cfg: &BaselineConfig, bytes: f64) -> bool {
    let usual = d.upload.mean.max(1.0);
    let sd = d.upload.std_dev();
    bytes >= cfg.min_bps && bytes >= cfg.factor * usual && bytes >= d.upload.mean + cfg.z * sd.max(0.1 * d.upload.mean)
}

/// Bytes uploaded in the current second to destinations the device knows.
fn known_bytes(d: &Device) -> f64 {
    d.bin_dst.iter().filter(|(a, _)| d.dests.iter().any(|(k, _)| k == a)).map(|(_, b)| *b).sum()
}

/// Remembers a destination (least recently seen replaced at the cap).
fn learn(d: &mut Device, dst: IpAddr, ts: u64) {
    match d.dests.iter().position(|(a, _)| *a == dst) {
        Some(i) => d.dests[i].1 = d.dests[i].1.max(ts),
        None if d.dests.len() < MAX_DESTS_PER_DEVICE => d.dests.push((dst, ts)),
        None => {
            if let Some(oldest) = d.dests.iter_mut().min_by_key(|(_, t)| *t) {
                *oldest = (dst, ts);
            }
        }
    }
}

/// Folds one second of upload into the damped mean and variance.
fn close_bin(d: &mut Device, cfg: &BaselineConfig, bytes: f64) {
    d.bins += 1;
    // Early bins learn fast (a plain running mean), later ones at the half-life.
    let alpha = (1.0 - 0.5f64.powf(1.0 / cfg.half_life_s.max(1.0))).max(1.0 / d.bins as f64);
    d.upload.update(alpha, bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatewarden_flow::ConnState;

    fn rec(id: u64, src: &str, dst: &str, t: f64, fwd_bytes: u64) -> FlowRecord {
        FlowRecord {
            flow_id: id,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            sport: 40000,
            dport: 5201,
            proto: Proto::Udp,
            first_ns: 0,
            last_ns: (t * 1e9) as u64,
            fwd_packets: (fwd_bytes / 1000) as u32,
            rev_packets: 0,
            fwd_bytes,
            rev_bytes: 0,
            conn_state: ConnState::S0,
            src_answered: false,
        }
    }

    fn cfg() -> BaselineConfig {
        BaselineConfig { warmup_s: 30, ..Default::default() }
    }

    /// A camera streaming 50 kB/s to its server for `secs`, in 100 ms snapshots.
    fn stream(b: &mut Baseline, secs: f64, from: f64) -> Vec<Detection> {
        let mut out = Vec::new();
        let mut t = from;
        while t < from + secs {
            out.extend(b.observe(&rec(1, "192.0.2.11", "198.51.100.10", t, (t * 50_000.0) as u64)));
            t += 0.1;
        }
        out
    }

    /// The soak of issue #15 (seed 13297) raised two "anomaly" alerts for the
    /// lab's firmware server: 198.51.100.10 "sent 1925 kB to 192.0.2.23 (never
    /// seen)". A flow picked up mid-download names the server as its source;
    /// what it sends is the device's download. Outside `home_net` it is no device.
    #[test]
    fn a_server_outside_home_net_serving_a_download_is_no_device() {
        let home =
            |nets: &[&str]| BaselineConfig { home_net: nets.iter().map(|n| n.parse().unwrap()).collect(), ..cfg() };
        let serve = |b: &mut Baseline| {
            let mut found = Vec::new();
            for i in 0..400 {
                let t = i as f64 * 0.1;
                // 60 s of a quiet keep-alive to one device, then 2 MB/s to another it never served.
                found.extend(b.observe(&rec(1, "198.51.100.10", "192.0.2.21", t, (t * 100.0) as u64)));
                if t >= 35.0 {
                    found.extend(b.observe(&rec(2, "198.51.100.10", "192.0.2.23", t, ((t - 35.0) * 2e6) as u64)));
                }
            }
            found
        };
        let mut b = Baseline::new(home(&["192.0.2.0/24"]));
        assert!(serve(&mut b).is_empty(), "a server outside home_net got a baseline");
        assert_eq!(b.tracked(), 0);
        // The same traffic from a host inside home_net is a device's upload to a new host.
        let mut b = Baseline::new(home(&["198.51.100.0/24"]));
        assert!(!serve(&mut b).is_empty(), "a device inside home_net must still be watched");
    }

    #[test]
    fn steady_device_is_quiet() {
        let mut b = Baseline::new(cfg());
        assert!(stream(&mut b, 300.0, 0.0).is_empty());
    }

    #[test]
    fn new_external_host_at_high_volume_is_flagged_with_numbers() {
        let mut b = Baseline::new(cfg());
        assert!(stream(&mut b, 40.0, 0.0).is_empty());
        let mut found = Vec::new();
        for i in 0..30 {
            let t = 40.0 + i as f64 * 0.1;
            found.extend(b.observe(&rec(1, "192.0.2.11", "198.51.100.10", t, (t * 50_000.0) as u64)));
            found.extend(b.observe(&rec(2, "192.0.2.11", "203.0.113.50", t, (i + 1) as u64 * 125_000)));
        }
        assert_eq!(found.len(), 1, "{found:?}");
        let d = &found[0];
        assert_eq!(d.kind, AttackKind::Anomaly);
        assert_eq!(d.target, Some("203.0.113.50".parse().unwrap()));
        assert!(d.reason.contains("never seen") && d.reason.contains("kB"), "{}", d.reason);
    }

    #[test]
    fn a_handshake_a_second_before_the_upload_does_not_make_the_new_host_usual() {
        // iperf3 (and any uploader) opens a small control connection first; when the
        // second boundary fell between it and the first data snapshot, the host was
        // learned from the handshake and the upload went unflagged (lab flake).
        let mut b = Baseline::new(cfg());
        assert!(stream(&mut b, 40.0, 0.0).is_empty());
        let mut found = b.observe(&rec(3, "192.0.2.11", "203.0.113.50", 40.95, 300));
        found.extend(stream(&mut b, 2.0, 40.0));
        for i in 0..30 {
            let t = 42.0 + i as f64 * 0.1;
            found.extend(b.observe(&rec(1, "192.0.2.11", "198.51.100.10", t, (t * 50_000.0) as u64)));
            found.extend(b.observe(&rec(2, "192.0.2.11", "203.0.113.50", t, (i + 1) as u64 * 125_000)));
        }
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].reason.contains("never seen"), "{}", found[0].reason);
    }

    #[test]
    fn a_second_exfiltration_host_during_the_quiet_minute_does_not_pass_probation() {
        let mut b = Baseline::new(cfg());
        assert!(stream(&mut b, 40.0, 0.0).is_empty());
        let (cam, srv) = ("192.0.2.11", "198.51.100.10");
        let mut found = Vec::new();
        let mut sent_b = 0u64;
        let mut t = 40.0;
        while t < 104.0 {
            found.extend(b.observe(&rec(1, cam, srv, t, (t * 50_000.0) as u64)));
            if t < 43.0 {
                found.extend(b.observe(&rec(2, cam, "203.0.113.50", t, ((t - 39.9) * 1_250_000.0) as u64)));
            }
            // Host B: a burst while the first report is held, a trickle past its probation, a burst again.
            sent_b += if (45.0..48.0).contains(&t) || t >= 101.0 { 125_000 } else { 100 };
            found.extend(b.observe(&rec(3, cam, "203.0.113.51", t, sent_b)));
            t += 0.1;
        }
        let targets: Vec<String> = found.iter().map(|d| d.target.unwrap().to_string()).collect();
        assert_eq!(targets, ["203.0.113.50", "203.0.113.51"], "{found:?}");
        assert!(found[1].reason.contains("never seen"), "{}", found[1].reason);
    }

    #[test]
    fn a_new_host_talked_to_quietly_for_the_probation_becomes_usual() {
        let mut b = Baseline::new(cfg());
        assert!(stream(&mut b, 40.0, 0.0).is_empty());
        // A small poll to a new host every second for the probation and a bit.
        let mut found = Vec::new();
        for s in 0..(NEW_HOST_PROBATION_S + 3) {
            let t = 40.0 + s as f64;
            found.extend(b.observe(&rec(1, "192.0.2.11", "198.51.100.10", t, (t * 50_000.0) as u64)));
            found.extend(b.observe(&rec(4, "192.0.2.11", "203.0.113.60", t, (s + 1) * 500)));
        }
        assert!(found.is_empty(), "{found:?}");
        let dev = &b.devices[&"192.0.2.11".parse().unwrap()];
        assert!(dev.dests.iter().any(|(a, _)| *a == "203.0.113.60".parse::<IpAddr>().unwrap()));
        assert!(dev.pending.is_empty(), "{:?}", dev.pending);
    }

    #[test]
    fn upload_tripling_is_flagged_but_not_during_warm_up() {
        let mut b = Baseline::new(cfg());
        // A burst during warm-up is learned, not flagged.
        assert!(stream(&mut b, 40.0, 0.0).is_empty());
        let mut found = Vec::new();
        let base = (40.0 * 50_000.0) as u64;
        for i in 1..=30 {
            // 200 kB/s to the usual server: four times the usual 50 kB/s.
            let t = 40.0 + i as f64 * 0.1;
            found.extend(b.observe(&rec(1, "192.0.2.11", "198.51.100.10", t, base + i * 20_000)));
        }
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].reason.contains("× its usual"), "{}", found[0].reason);
    }

    #[test]
    fn a_one_second_catch_up_burst_is_not_a_surge() {
        let mut b = Baseline::new(cfg());
        assert!(stream(&mut b, 40.0, 0.0).is_empty());
        let base = (40.0 * 50_000.0) as u64;
        let mut found = Vec::new();
        // One second at 4×, then back to normal.
        for i in 1..=10u64 {
            found.extend(b.observe(&rec(1, "192.0.2.11", "198.51.100.10", 40.0 + i as f64 * 0.1, base + i * 20_000)));
        }
        assert!(stream(&mut b, 20.0, 41.05).is_empty() && found.is_empty(), "{found:?}");
    }

    #[test]
    fn devices_are_bounded() {
        let mut b = Baseline::new(cfg());
        for i in 0..(MAX_DEVICES as u32 + 3000) {
            let mut r = rec(i as u64, "10.0.0.1", "198.51.100.10", i as f64 * 1e-3, 100);
            r.src = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            b.observe(&r);
            assert!(b.tracked() <= MAX_DEVICES);
        }
    }

    /// The camera's exfiltration to a host it never used, on a new flow
    /// starting at `from`: 1.25 MB/s beside its usual 50 kB/s stream.
    fn exfiltrate(b: &mut Baseline, from: f64, proven: bool) -> Vec<Detection> {
        let mut found = Vec::new();
        for i in 0..30u64 {
            let t = from + i as f64 * 0.1;
            let mut usual = rec(1, "192.0.2.11", "198.51.100.10", t, (t * 50_000.0) as u64);
            let mut exfil = rec(2, "192.0.2.11", "203.0.113.50", t, (i + 1) * 125_000);
            exfil.first_ns = (from * 1e9) as u64;
            if proven {
                for r in [&mut usual, &mut exfil] {
                    (r.proto, r.conn_state, r.src_answered) = (Proto::Tcp, ConnState::S1, true);
                }
            }
            found.extend(b.observe(&usual));
            found.extend(b.observe(&exfil));
        }
        found
    }

    /// One record from each of the `n` addresses from 10.0.0.0 + `first`
    /// (forged: one UDP packet each), between `from` and `to`.
    fn forged(b: &mut Baseline, first: u32, n: u32, from: f64, to: f64) {
        for i in first..first + n {
            let t = from + (to - from) * f64::from(i - first) / f64::from(n);
            let mut r = rec(1_000_000 + u64::from(i), "10.0.0.1", "198.51.100.99", t, 100);
            r.src = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            r.first_ns = r.last_ns;
            assert!(b.observe(&r).is_empty());
        }
    }

    /// A LAN host forging addresses inside `home_net` (or a camera doing it
    /// itself, between two uploads) fills the device table in half a second:
    /// the least recently seen went first, and that was the camera, whose
    /// baseline then started over; a new device learns every destination
    /// during its warm-up, so the exfiltration that followed was "usual".
    #[test]
    fn a_flood_of_forged_sources_cannot_reset_an_established_devices_baseline() {
        let mut b = Baseline::new(cfg());
        assert!(stream(&mut b, 40.0, 0.0).is_empty());
        forged(&mut b, 0, MAX_DEVICES as u32 + 1_000, 40.0, 40.5);
        assert!(b.tracked() <= MAX_DEVICES);
        let found = exfiltrate(&mut b, 40.6, false);
        assert_eq!(found.len(), 1, "the camera's baseline was flushed by forged sources: {found:?}");
        assert!(found[0].reason.contains("never seen"), "{}", found[0].reason);
    }

    /// The same flood kept up long enough for every forged address to be
    /// past its warm-up: a device that proved its address (it acknowledged
    /// what it was sent, which no forger can) still keeps its baseline.
    #[test]
    fn forged_sources_past_their_warm_up_cannot_push_out_a_device_that_proved_its_address() {
        let mut b = Baseline::new(cfg());
        let camera = |b: &mut Baseline, from: f64, to: f64| {
            let mut t = from;
            while t < to {
                let mut r = rec(1, "192.0.2.11", "198.51.100.10", t, (t * 50_000.0) as u64);
                (r.proto, r.conn_state, r.src_answered) = (Proto::Tcp, ConnState::S1, true);
                assert!(b.observe(&r).is_empty());
                t += 0.1;
            }
        };
        // The table filled with forged addresses, each seen again 34 s after its
        // first packet (past the warm-up, and more recently than the camera),
        // then new ones that need room.
        let n = MAX_DEVICES as u32 - 1;
        camera(&mut b, 0.0, 4.0);
        forged(&mut b, 0, n, 4.0, 5.0);
        camera(&mut b, 5.0, 38.0);
        forged(&mut b, 0, n, 38.5, 39.5);
        forged(&mut b, n, 1_000, 39.5, 39.9);
        assert!(b.tracked() <= MAX_DEVICES);
        let found = exfiltrate(&mut b, 40.0, true);
        assert_eq!(found.len(), 1, "the camera's baseline was flushed by forged sources: {found:?}");
    }

    #[test]
    fn ipv6_devices_work_too() {
        let mut b = Baseline::new(cfg());
        let mut t = 0.0;
        while t < 40.0 {
            b.observe(&rec(1, "2001:db8::11", "2001:db8:1::10", t, (t * 50_000.0) as u64));
            t += 0.1;
        }
        let mut found = Vec::new();
        for i in 0..30 {
            found.extend(b.observe(&rec(
                2,
                "2001:db8::11",
                "2001:db8:2::50",
                40.0 + i as f64 * 0.1,
                (i + 1) * 125_000,
            )));
        }
        assert_eq!(found.len(), 1, "{found:?}");
    }
}
