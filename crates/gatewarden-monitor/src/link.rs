//! Link health between nodes: the monitor sends small UDP probes to every
//! peer's echo responder (`[link] listen` on each node), measures round trips
//! and loss, keeps an EWMA baseline and p50/p95/p99 per link, and raises
//! `link_health` alerts on latency spikes, loss bursts and data-rate drops
//! (with the numbers in the reason).
//!
//! UDP rather than the MQTT bus: a probe must see the network path itself,
//! not the broker's queues and TCP retransmissions (which turn loss into
//! latency).

use gatewarden_core::ewma::Ewma;
use std::collections::{BTreeMap, VecDeque};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};

use gatewarden_core::metrics::{Counter, Gauge, Registry};
use gatewarden_proto::messages::{Alert, AlertAction, AttackKind, Severity};

/// First bytes of every probe and echo.
pub const MAGIC: &[u8; 4] = b"GWLP";
/// Probe size: magic, sequence, send time.
pub const PROBE_LEN: usize = 20;
/// Most peers one monitor probes.
pub const MAX_PEERS: usize = 64;
/// Round trips kept per link for the percentiles (a minute at 10 probes/s).
pub const RTT_WINDOW: usize = 600;
/// Probes whose outcome makes up the loss window (2 s at 10 probes/s).
pub const LOSS_WINDOW: usize = 20;
/// Weight of a new round trip in the EWMA baseline.
pub const EWMA_ALPHA: f64 = 0.05;
/// Latency spike: the last second's median is this many times the baseline…
pub const SPIKE_FACTOR: f64 = 3.0;
/// …and at least this much above it (tiny loopback RTTs jitter by multiples).
pub const SPIKE_MIN_S: f64 = 0.020;
/// Loss burst: at least this share of the loss window lost…
pub const LOSS_BURST: f64 = 0.2;
/// …and at least this many probes.
pub const LOSS_MIN: usize = 3;
/// Rate drop: the data rate fell below this share of its baseline…
pub const RATE_DROP: f64 = 0.2;
/// …while the baseline was at least this many bytes/s.
pub const RATE_MIN_BASELINE: f64 = 10_000.0;
/// One alert per link and problem per this long.
pub const ALERT_COOLDOWN: Duration = Duration::from_secs(10);

/// Echoes probes back to the monitor; runs on every node with `[link] listen`.
pub struct LinkResponder {
    /// The bound address.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Echoes one address may have answered a second: twice what the fastest
/// monitor sends (`link.probe_interval_ms` = 10).
pub const ECHOES_PER_SOURCE: u32 = 200;
/// Echoes a second in all.
pub const ECHOES_TOTAL: u32 = 2000;
/// Addresses given their own budget each second; more share one.
pub const ECHO_SOURCES: usize = 1024;

/// Which probes the responder answers this second. One budget for everyone
/// let any LAN host sending 2000 probes a second use it up: the monitor's
/// real probes went unanswered, and every link looked lost (false
/// `link_health` alerts, nodes shown down). Each address now has its own
/// share, and addresses past [`ECHO_SOURCES`] share one.
#[derive(Debug)]
pub struct EchoBudget {
    window: Instant,
    total: u32,
    per_source: std::collections::HashMap<std::net::IpAddr, u32>,
    others: u32,
}

impl EchoBudget {
    /// A budget whose first second starts at `now`.
    pub fn new(now: Instant) -> EchoBudget {
        EchoBudget { window: now, total: 0, per_source: std::collections::HashMap::new(), others: 0 }
    }

    /// Whether to answer a probe from `from` arriving at `now`.
    pub fn allow(&mut self, from: std::net::IpAddr, now: Instant) -> bool {
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            self.window = now;
            self.total = 0;
            self.others = 0;
            self.per_source.clear();
        }
        if self.total >= ECHOES_TOTAL {
            return false;
        }
        let full = self.per_source.len() >= ECHO_SOURCES;
        let n = match self.per_source.get_mut(&from) {
            Some(n) => n,
            None if full => &mut self.others,
            None => self.per_source.entry(from).or_insert(0),
        };
        if *n >= ECHOES_PER_SOURCE {
            return false;
        }
        *n += 1;
        self.total += 1;
        true
    }
}

impl LinkResponder {
    /// Binds `listen` and echoes probes ([`EchoBudget`]: at most
    /// [`ECHOES_PER_SOURCE`] a second to one address, [`ECHOES_TOTAL`] in all).
    pub fn start(listen: &str) -> anyhow::Result<LinkResponder> {
        let sock = UdpSocket::bind(listen)
            .with_context(|| format!("cannot bind the link probe responder to {listen} (link.listen)"))?;
        sock.set_read_timeout(Some(Duration::from_millis(200)))?;
        let addr = sock.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("link-echo".into())
            .spawn(move || {
                let mut buf = [0u8; 64];
                let mut budget = EchoBudget::new(Instant::now());
                while !stop2.load(Ordering::Relaxed) {
                    let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
                    if n != PROBE_LEN || &buf[..4] != MAGIC {
                        continue;
                    }
                    if budget.allow(from.ip(), Instant::now()) {
                        let _ = sock.send_to(&buf[..n], from);
                    }
                }
            })
            .context("spawning the link responder")?;
        tracing::info!(%addr, "link probe responder listening");
        Ok(LinkResponder { addr, stop, thread: Some(thread) })
    }

    /// Stops echoing.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Parses `name=host:port` (or just `host:port`, named after itself).
pub fn parse_peer(s: &str) -> anyhow::Result<(String, SocketAddr)> {
    let (name, addr) = s.split_once('=').unwrap_or((s, s));
    let addr: SocketAddr = addr.trim().parse().map_err(|_| {
        anyhow::anyhow!("link peer {s:?}: give name=address:port, e.g. router=192.0.2.1:7946 or det=[2001:db8::2]:7946")
    })?;
    Ok((name.trim().to_string(), addr))
}

/// Percentile of a sorted slice (nearest rank).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// What one link's numbers say right now.
#[derive(Debug, Clone, PartialEq)]
pub enum Finding {
    /// Round trips far above the baseline.
    LatencySpike {
        /// Median of the last second, seconds.
        recent_p50: f64,
        /// Baseline mean, seconds.
        baseline: f64,
        /// Baseline deviation, seconds.
        sigma: f64,
    },
    /// Many probes lost.
    LossBurst {
        /// Probes lost in the window.
        lost: usize,
        /// Probes in the window.
        of: usize,
    },
    /// Data rate far below its baseline.
    RateDrop {
        /// Bytes/s now.
        rate: f64,
        /// Baseline bytes/s.
        baseline: f64,
    },
}

/// The statistics of one link: EWMA baseline, percentiles, loss, rate.
#[derive(Debug, Default)]
pub struct LinkModel {
    rtts: VecDeque<f64>,
    recent: VecDeque<(Instant, f64)>,
    outcomes: VecDeque<bool>,
    rtt: Option<Ewma>,
    rate_mean: Option<f64>,
    last_rate: Option<f64>,
    /// Probes answered.
    pub answered: u64,
    /// Probes lost.
    pub lost: u64,
    last_reply: Option<Instant>,
}

impl LinkModel {
    /// Records an answered probe's round trip (seconds) at `now`. The
    /// baseline only learns from normal round trips, so a long spike does not
    /// become the new normal.
    pub fn on_rtt(&mut self, rtt: f64, now: Instant) {
        self.answered += 1;
        self.last_reply = Some(now);
        self.rtts.push_back(rtt);
        if self.rtts.len() > RTT_WINDOW {
            self.rtts.pop_front();
        }
        self.recent.push_back((now, rtt));
        self.push_outcome(true);
        match self.rtt {
            None => self.rtt = Some(Ewma::starting_at(rtt)),
            Some(mut e) => {
                if !self.is_spike(rtt, e.mean) {
                    e.update(EWMA_ALPHA, rtt);
                    self.rtt = Some(e);
                }
            }
        }
    }

    /// Records a probe that got no answer in time.
    pub fn on_lost(&mut self) {
        self.lost += 1;
        self.push_outcome(false);
    }

    fn push_outcome(&mut self, ok: bool) {
        self.outcomes.push_back(ok);
        if self.outcomes.len() > LOSS_WINDOW {
            self.outcomes.pop_front();
        }
    }

    fn rtt_sigma(&self) -> f64 {
        self.rtt.map_or(0.0, |e| e.std_dev())
    }

    fn is_spike(&self, rtt: f64, mean: f64) -> bool {
        rtt > mean * SPIKE_FACTOR && rtt > mean + SPIKE_MIN_S && rtt > mean + 4.0 * self.rtt_sigma()
    }

    /// Records the link's data rate (bytes/s) for the rate-drop check.
    pub fn on_rate(&mut self, rate: f64) {
        self.last_rate = Some(rate);
        match self.rate_mean {
            None => self.rate_mean = Some(rate),
            Some(m) if rate >= m * RATE_DROP => self.rate_mean = Some(m + 0.1 * (rate - m)),
            Some(_) => {}
        }
    }

    /// (p50, p95, p99) of the kept round trips, seconds.
    pub fn percentiles(&self) -> (f64, f64, f64) {
        let mut v: Vec<f64> = self.rtts.iter().copied().collect();
        v.sort_by(f64::total_cmp);
        (percentile(&v, 0.5), percentile(&v, 0.95), percentile(&v, 0.99))
    }

    /// Share of the loss window lost.
    pub fn loss_ratio(&self) -> f64 {
        if self.outcomes.is_empty() {
            return 0.0;
        }
        self.outcomes.iter().filter(|ok| !**ok).count() as f64 / self.outcomes.len() as f64
    }

    /// Whether a probe was answered in the last 3 s.
    pub fn up(&self, now: Instant) -> bool {
        self.last_reply.is_some_and(|t| now.duration_since(t) < Duration::from_secs(3))
    }

    /// Baseline round trip and its deviation, seconds.
    pub fn baseline(&self) -> (f64, f64) {
        (self.rtt.map_or(0.0, |e| e.mean), self.rtt_sigma())
    }

    /// What is wrong now (round trips of the last second, the loss window, the last rate).
    pub fn findings(&mut self, now: Instant) -> Vec<Finding> {
        while self.recent.front().is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_secs(1)) {
            self.recent.pop_front();
        }
        let mut out = Vec::new();
        if let Some(mean) = self.rtt.map(|e| e.mean) {
            let mut recent: Vec<f64> = self.recent.iter().map(|(_, r)| *r).collect();
            recent.sort_by(f64::total_cmp);
            // Needs a baseline (20 normal round trips) and 3 recent ones.
            if self.answered >= 20 && recent.len() >= 3 {
                let p50 = percentile(&recent, 0.5);
                if self.is_spike(p50, mean) {
                    out.push(Finding::LatencySpike { recent_p50: p50, baseline: mean, sigma: self.rtt_sigma() });
                }
            }
        }
        let lost = self.outcomes.iter().filter(|ok| !**ok).count();
        if self.outcomes.len() >= LOSS_WINDOW / 2
            && lost >= LOSS_MIN
            && lost as f64 >= LOSS_BURST * self.outcomes.len() as f64
        {
            out.push(Finding::LossBurst { lost, of: self.outcomes.len() });
        }
        if let (Some(rate), Some(base)) = (self.last_rate, self.rate_mean) {
            if base >= RATE_MIN_BASELINE && rate < base * RATE_DROP {
                out.push(Finding::RateDrop { rate, baseline: base });
            }
        }
        out
    }
}

/// Builds the alert for a link's findings (several at once become one, more severe, alert).
pub fn link_alert(monitor: &str, peer: &str, addr: SocketAddr, findings: &[Finding], ts_ns: u64) -> Alert {
    let mut parts = Vec::new();
    let mut names = Vec::new();
    for f in findings {
        match f {
            Finding::LatencySpike { recent_p50, baseline, sigma } => {
                names.push("latency spike");
                parts.push(format!(
                    "round trip p50 {:.1} ms over the last second vs baseline {:.2} ms (σ {:.2} ms), {:.0}× normal",
                    recent_p50 * 1e3,
                    baseline * 1e3,
                    sigma * 1e3,
                    recent_p50 / baseline.max(1e-9)
                ));
            }
            Finding::LossBurst { lost, of } => {
                names.push("loss burst");
                parts.push(format!(
                    "{lost} of the last {of} probes lost ({:.0} %)",
                    100.0 * *lost as f64 / (*of).max(1) as f64
                ));
            }
            Finding::RateDrop { rate, baseline } => {
                names.push("data-rate drop");
                parts.push(format!(
                    "data rate {:.1} kB/s vs baseline {:.1} kB/s ({:.0} % of normal)",
                    rate / 1e3,
                    baseline / 1e3,
                    100.0 * rate / baseline.max(1e-9)
                ));
            }
        }
    }
    let severity = if findings.len() > 1 { Severity::High } else { Severity::Medium };
    Alert {
        id: 0,
        ts_ns,
        node: monitor.to_string(),
        flow_id: 0,
        kind: AttackKind::LinkHealth,
        severity,
        src: None,
        dst: Some(addr.ip()),
        sport: 0,
        dport: addr.port(),
        proto: Some(gatewarden_proto::messages::Proto::Udp),
        action: AlertAction::Allowed,
        signature_id: gatewarden_proto::signatures::LINK_HEALTH_BASE + findings.iter().map(finding_bit).sum::<u32>(),
        signature: format!("GATEWARDEN link {} to {peer}", names.join(" + ")),
        confidence: 0.9,
        reason: format!("link {monitor} → {peer} ({addr}): {}", parts.join("; ")),
        flow: None,
        not_blocked: Some(gatewarden_proto::messages::NotBlocked::NoSource),
        in_iface: String::new(),
    }
}

fn finding_bit(f: &Finding) -> u32 {
    match f {
        Finding::LatencySpike { .. } => 1,
        Finding::LossBurst { .. } => 2,
        Finding::RateDrop { .. } => 4,
    }
}

struct Peer {
    name: String,
    addr: SocketAddr,
    sock: UdpSocket,
    model: LinkModel,
    outstanding: VecDeque<(u64, Instant)>,
    last_alert: BTreeMap<u32, Instant>,
    sent: Counter,
    lost: Counter,
    gauges: [Gauge; 7],
}

/// Probes every peer from the monitor and reports into its state.
pub struct LinkProber {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LinkProber {
    /// Starts probing `peers` every `interval`; a probe unanswered after `timeout` is lost.
    pub fn start(
        peers: &[String],
        interval: Duration,
        timeout: Duration,
        state: Arc<super::MonitorState>,
    ) -> anyhow::Result<LinkProber> {
        anyhow::ensure!(peers.len() <= MAX_PEERS, "at most {MAX_PEERS} link peers");
        let reg: &Registry = &state.registry;
        let mut list = Vec::new();
        for p in peers {
            let (name, addr) = parse_peer(p)?;
            let bind = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
            let sock = UdpSocket::bind(bind).context("binding a link probe socket")?;
            sock.connect(addr).with_context(|| format!("link peer {name} at {addr}"))?;
            sock.set_nonblocking(true)?;
            let l = [("peer", name.as_str())];
            let g = |n: &'static str, h: &'static str| reg.gauge(n, h, &l);
            list.push(Peer {
                gauges: [
                    g("gatewarden_link_rtt_p50_seconds", "Median probe round trip over the last minute."),
                    g("gatewarden_link_rtt_p95_seconds", "95th percentile probe round trip over the last minute."),
                    g("gatewarden_link_rtt_p99_seconds", "99th percentile probe round trip over the last minute."),
                    g("gatewarden_link_rtt_baseline_seconds", "EWMA baseline of the probe round trip."),
                    g("gatewarden_link_loss_ratio", "Share of the last 20 probes lost."),
                    g("gatewarden_link_up", "1 when the peer answered a probe in the last 3 s."),
                    g("gatewarden_link_rate_bytes_per_second", "The peer's interface data rate (from its metrics)."),
                ],
                sent: reg.counter("gatewarden_link_probes_sent_total", "Link probes sent.", &l),
                lost: reg.counter("gatewarden_link_probes_lost_total", "Link probes never answered.", &l),
                name,
                addr,
                sock,
                model: LinkModel::default(),
                outstanding: VecDeque::new(),
                last_alert: BTreeMap::new(),
            });
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("link-probe".into())
            .spawn(move || probe_loop(list, interval, timeout, state, stop2))
            .context("spawning the link prober")?;
        Ok(LinkProber { stop, thread: Some(thread) })
    }

    /// Stops probing.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn probe_loop(
    mut peers: Vec<Peer>,
    interval: Duration,
    timeout: Duration,
    state: Arc<super::MonitorState>,
    stop: Arc<AtomicBool>,
) {
    let epoch = Instant::now();
    let mut seq = 0u64;
    let mut next_probe = Instant::now();
    let mut next_eval = Instant::now() + Duration::from_secs(1);
    let mut buf = [0u8; 64];
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= next_probe {
            next_probe += interval;
            if next_probe < now {
                next_probe = now + interval;
            }
            seq += 1;
            for p in &mut peers {
                let mut pkt = [0u8; PROBE_LEN];
                pkt[..4].copy_from_slice(MAGIC);
                pkt[4..12].copy_from_slice(&seq.to_be_bytes());
                pkt[12..20].copy_from_slice(&(now.duration_since(epoch).as_nanos() as u64).to_be_bytes());
                // A send error (no route, peer down) is a lost probe, found by the timeout.
                let _ = p.sock.send(&pkt);
                p.sent.inc();
                p.outstanding.push_back((seq, now));
                if p.outstanding.len() > 1024 {
                    p.outstanding.pop_front();
                }
            }
        }
        for p in &mut peers {
            while let Ok(n) = p.sock.recv(&mut buf) {
                if n != PROBE_LEN || &buf[..4] != MAGIC {
                    continue;
                }
                let s = u64::from_be_bytes(buf[4..12].try_into().expect("8 bytes"));
                if let Some(i) = p.outstanding.iter().position(|(q, _)| *q == s) {
                    let (_, sent) = p.outstanding.remove(i).expect("index found");
                    p.model.on_rtt(Instant::now().duration_since(sent).as_secs_f64(), Instant::now());
                }
            }
            while p.outstanding.front().is_some_and(|(_, t)| now.duration_since(*t) > timeout) {
                p.outstanding.pop_front();
                p.model.on_lost();
                p.lost.inc();
            }
        }
        if now >= next_eval {
            next_eval += Duration::from_secs(1);
            evaluate(&mut peers, &state, now);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn evaluate(peers: &mut [Peer], state: &super::MonitorState, now: Instant) {
    let mut links = BTreeMap::new();
    for p in peers.iter_mut() {
        if let Some(rate) = state.node_rate(&p.name) {
            p.model.on_rate(rate);
            p.gauges[6].set(rate);
        }
        let (p50, p95, p99) = p.model.percentiles();
        let (base, sigma) = p.model.baseline();
        let loss = p.model.loss_ratio();
        let up = p.model.up(now);
        for (g, v) in p.gauges.iter().zip([p50, p95, p99, base, loss, if up { 1.0 } else { 0.0 }]) {
            g.set(v);
        }
        let findings = p.model.findings(now);
        let key: u32 = findings.iter().map(finding_bit).sum();
        if key != 0 {
            // One alert per combination per cooldown; a new combination (e.g. loss joins latency) alerts at once.
            let due = p.last_alert.get(&key).is_none_or(|t| now.duration_since(*t) >= ALERT_COOLDOWN);
            if due {
                p.last_alert.insert(key, now);
                let a = link_alert(&state.node, &p.name, p.addr, &findings, gatewarden_core::clock::unix_now_ns());
                tracing::warn!(peer = %p.name, reason = %a.reason, "link health");
                state.record_alert(a);
            }
        }
        links.insert(
            p.name.clone(),
            json!({
                "addr": p.addr.to_string(), "up": up,
                "rtt_p50_ms": p50 * 1e3, "rtt_p95_ms": p95 * 1e3, "rtt_p99_ms": p99 * 1e3,
                "baseline_ms": base * 1e3, "sigma_ms": sigma * 1e3, "loss_ratio": loss,
                "answered": p.model.answered, "lost": p.model.lost,
                "problems": findings.iter().map(|f| match f { Finding::LatencySpike{..} => "latency_spike", Finding::LossBurst{..} => "loss_burst", Finding::RateDrop{..} => "rate_drop" }).collect::<Vec<_>>(),
            }),
        );
    }
    state.set_links(Value::Object(links.into_iter().collect()));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Red-team finding: one budget of 2 000 echoes a second for everyone; a
    /// LAN host sending more used it up and the monitor's probes went
    /// unanswered (false loss bursts, nodes shown down). A flood from one
    /// address, and from a thousand more, leaves the monitor's probes
    /// (100 a second, the fastest `probe_interval_ms`) all answered.
    #[test]
    fn a_flooding_host_cannot_use_up_the_monitors_echoes() {
        let monitor: std::net::IpAddr = "192.0.2.5".parse().unwrap();
        let flooder: std::net::IpAddr = "192.0.2.66".parse().unwrap();
        let t0 = Instant::now();
        let mut b = EchoBudget::new(t0);
        let mut answered = 0;
        for ms in 0..3000u64 {
            let now = t0 + Duration::from_millis(ms);
            for _ in 0..10 {
                b.allow(flooder, now);
            }
            // Spoofed sources, each a few probes, past the table's size.
            for i in 0..2u32 {
                let spoofed = std::net::IpAddr::from([10, 9, (ms % 250) as u8, (i * 100 + (ms / 250) as u32) as u8]);
                b.allow(spoofed, now);
            }
            if ms % 10 == 0 {
                answered += usize::from(b.allow(monitor, now));
            }
        }
        assert_eq!(answered, 300, "every monitor probe of 3 s answered");
    }

    #[test]
    fn baseline_percentiles_and_spike() {
        let mut m = LinkModel::default();
        let t0 = Instant::now();
        for i in 0..100 {
            m.on_rtt(0.001 + (i % 5) as f64 * 0.0001, t0 + Duration::from_millis(i * 10));
        }
        let now = t0 + Duration::from_millis(1000);
        assert!(m.findings(now).is_empty());
        let (p50, _, p99) = m.percentiles();
        assert!((p50 - 0.0012).abs() < 1e-9 && (p99 - 0.0014).abs() < 1e-9, "{p50} {p99}");
        for i in 0..10 {
            m.on_rtt(0.2, now + Duration::from_millis(i * 100));
        }
        let later = now + Duration::from_millis(1000);
        let f = m.findings(later);
        assert!(matches!(f[..], [Finding::LatencySpike { .. }]), "{f:?}");
        assert!(m.baseline().0 < 0.002, "the spike did not move the baseline");
        let a = link_alert("mon", "router", "192.0.2.1:7946".parse().unwrap(), &f, 1);
        assert!(a.reason.contains("200.0 ms") && a.reason.contains("baseline 1.2"), "{}", a.reason);
    }

    #[test]
    fn loss_burst_and_rate_drop_together_are_one_high_alert() {
        let mut m = LinkModel::default();
        for _ in 0..12 {
            m.on_rtt(0.001, Instant::now());
        }
        for _ in 0..8 {
            m.on_lost();
        }
        for _ in 0..20 {
            m.on_rate(100_000.0);
        }
        m.on_rate(5_000.0);
        let f = m.findings(Instant::now());
        assert_eq!(f.len(), 2, "{f:?}");
        let a = link_alert("mon", "det", "[2001:db8::2]:7946".parse().unwrap(), &f, 1);
        assert_eq!(a.severity, Severity::High);
        assert!(a.reason.contains("8 of the last 20 probes lost (40 %)"), "{}", a.reason);
        assert!(a.reason.contains("5.0 kB/s vs baseline 100.0 kB/s"), "{}", a.reason);
    }

    #[test]
    fn peers_parse_with_names_and_ipv6() {
        assert_eq!(parse_peer("router=192.0.2.1:7946").unwrap().0, "router");
        assert_eq!(parse_peer("[2001:db8::2]:7946").unwrap().1.port(), 7946);
        assert!(parse_peer("router=somewhere").is_err());
    }

    #[test]
    fn probes_round_trip_over_loopback() {
        let r = LinkResponder::start("127.0.0.1:0").unwrap();
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut pkt = [0u8; PROBE_LEN];
        pkt[..4].copy_from_slice(MAGIC);
        s.send_to(&pkt, r.addr).unwrap();
        s.send_to(b"junk", r.addr).unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = s.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], &pkt);
        r.stop();
    }
}
