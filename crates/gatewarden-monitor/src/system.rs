//! This node's CPU, memory and network throughput from `/proc`, sampled once
//! a second, published to the monitor as a [`MetricsSample`] and turned into
//! Prometheus series labelled by node (so one monitor exports a whole fleet).

use std::collections::BTreeMap;
use std::sync::Arc;

use gatewarden_core::metrics::Registry;
use gatewarden_proto::messages::MetricsSample;

/// Most interfaces reported per node (a router with many VLANs stays bounded).
pub const MAX_INTERFACES: usize = 32;

/// Reads `/proc` and keeps what a rate needs (the previous CPU counters).
#[derive(Debug, Default)]
pub struct ProcSampler {
    prev_cpu: Option<(u64, u64)>,
}

/// Parses the first `cpu` line of `/proc/stat`: (busy, total) jiffies.
pub fn parse_stat(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    if v.len() < 4 {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest is inside user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Parses `/proc/meminfo`: (total, available) bytes.
pub fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|k| k.parse::<u64>().ok())
            .map(|k| k * 1024)
    };
    Some((field("MemTotal:")?, field("MemAvailable:")?))
}

/// Parses `/proc/net/dev`: interface → (rx bytes, tx bytes), loopback left out.
pub fn parse_net_dev(text: &str) -> BTreeMap<String, (u64, u64)> {
    let mut m = BTreeMap::new();
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else { continue };
        let name = name.trim();
        if name == "lo" || name.is_empty() || m.len() >= MAX_INTERFACES {
            continue;
        }
        let v: Vec<u64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        if v.len() >= 9 {
            m.insert(name.to_string(), (v[0], v[8]));
        }
    }
    m
}

/// Resident memory of this process from `/proc/self/status`, bytes.
pub fn parse_rss(text: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<u64>().ok())
        .map(|k| k * 1024)
}

impl ProcSampler {
    /// A sampler; the first CPU ratio is reported from the second sample on.
    pub fn new() -> ProcSampler {
        ProcSampler::default()
    }

    /// Reads `/proc` now. Files that cannot be read are left out (e.g. on a
    /// system without `/proc/net/dev`), never an error.
    pub fn sample(&mut self, node: &str, ts_ns: u64) -> MetricsSample {
        let mut values = Vec::new();
        if let Some((busy, total)) = std::fs::read_to_string("/proc/stat").ok().as_deref().and_then(parse_stat) {
            if let Some((pb, pt)) = self.prev_cpu {
                if total > pt {
                    values.push(("cpu_ratio".to_string(), (busy.saturating_sub(pb)) as f64 / (total - pt) as f64));
                }
            }
            self.prev_cpu = Some((busy, total));
        }
        if let Some((total, avail)) = std::fs::read_to_string("/proc/meminfo").ok().as_deref().and_then(parse_meminfo) {
            values.push(("memory_total_bytes".into(), total as f64));
            values.push(("memory_used_bytes".into(), total.saturating_sub(avail) as f64));
        }
        if let Some(rss) = std::fs::read_to_string("/proc/self/status").ok().as_deref().and_then(parse_rss) {
            values.push(("process_resident_bytes".into(), rss as f64));
        }
        if let Ok(text) = std::fs::read_to_string("/proc/net/dev") {
            for (iface, (rx, tx)) in parse_net_dev(&text) {
                values.push((format!("net_rx_bytes:{iface}"), rx as f64));
                values.push((format!("net_tx_bytes:{iface}"), tx as f64));
            }
        }
        MetricsSample { node: node.to_string(), ts_ns, values }
    }
}

/// Most nodes whose samples become series (a fleet larger than this is cut, and counted).
pub const MAX_NODES: usize = 256;

/// Longest interface name taken into a series label (Linux allows 15 bytes).
pub const MAX_INTERFACE_NAME: usize = 32;

/// Whether `name` can be an interface label: short, and only the characters
/// Linux interface names use in practice (no quotes or newlines for `/metrics`).
fn valid_interface(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_INTERFACE_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'@'))
}

/// Bytes through a node's interfaces, when that was sampled (ns), and the rate since the sample before.
type RateState = (u64, u64, Option<f64>);

/// Turns samples from any node into `gatewarden_node_*` series.
pub struct NodeMetrics {
    registry: Arc<Registry>,
    /// node → (bytes through its interfaces, sample time ns, bytes/s).
    rates: std::sync::Mutex<BTreeMap<String, RateState>>,
    /// node → interfaces that have series; at most [`MAX_INTERFACES`] each.
    nodes: std::sync::Mutex<BTreeMap<String, std::collections::BTreeSet<String>>>,
    refused: gatewarden_core::metrics::Counter,
    series_refused: gatewarden_core::metrics::Counter,
}

/// How far ahead of the monitor's clock a node's sample may be stamped:
/// well past the skew NTP leaves, short of a clock set wrong.
pub const MAX_AHEAD_NS: u64 = 300_000_000_000;

impl NodeMetrics {
    /// Series go into `registry`.
    pub fn new(registry: &Arc<Registry>) -> NodeMetrics {
        NodeMetrics {
            registry: registry.clone(),
            rates: Default::default(),
            nodes: Default::default(),
            refused: registry.counter(
                "gatewarden_node_samples_refused_total",
                "Metrics samples ignored: too many nodes, or a sample stamped more than 5 minutes ahead of the monitor's clock.",
                &[],
            ),
            series_refused: registry.counter(
                "gatewarden_node_series_refused_total",
                "Values of metrics samples that would have made a new series past a node's limit (32 interfaces) or with a label that is not an interface name.",
                &[],
            ),
        }
    }

    /// Records one sample; `now_ns` gives the bus delay (sample time to arrival).
    pub fn record(&self, s: &MetricsSample, now_ns: u64) {
        // A sample from the future (a skewed or compromised clock) would
        // skew the node's bus delay and data rate: counted, not recorded.
        if s.ts_ns > now_ns.saturating_add(MAX_AHEAD_NS) {
            self.refused.inc();
            return;
        }
        // The interfaces whose values become series: known ones, plus new
        // ones while the node has room. Everything else is counted, not stored.
        let allowed: std::collections::BTreeSet<String> = {
            let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
            if !nodes.contains_key(&s.node) {
                if nodes.len() >= MAX_NODES || !gatewarden_core::identity::valid_node_id(&s.node) {
                    self.refused.inc();
                    return;
                }
                nodes.insert(s.node.clone(), Default::default());
            }
            let ifaces = nodes.get_mut(&s.node).expect("inserted above");
            let mut refused = 0u64;
            for (name, _) in &s.values {
                let Some((_, iface)) = name.split_once(':') else { continue };
                if ifaces.contains(iface) {
                    continue;
                }
                if ifaces.len() < MAX_INTERFACES && valid_interface(iface) {
                    ifaces.insert(iface.to_string());
                } else {
                    refused += 1;
                }
            }
            if refused > 0 {
                self.series_refused.add(refused);
            }
            ifaces.clone()
        };
        let r = &self.registry;
        let node = s.node.as_str();
        let delay = now_ns.saturating_sub(s.ts_ns) as f64 / 1e9;
        r.gauge(
            "gatewarden_bus_latency_seconds",
            "Delay from a node's metrics sample to the monitor (one way; needs synchronised clocks).",
            &[("node", node)],
        )
        .set(delay);
        let through: u64 = s
            .values
            .iter()
            .filter(|(k, _)| k.starts_with("net_rx_bytes:") || k.starts_with("net_tx_bytes:"))
            .filter(|(k, _)| k.split_once(':').is_some_and(|(_, i)| allowed.contains(i)))
            .map(|(_, v)| *v as u64)
            .fold(0u64, u64::saturating_add);
        {
            let mut rates = self.rates.lock().unwrap_or_else(|e| e.into_inner());
            let e = rates.entry(s.node.clone()).or_insert((through, s.ts_ns, None));
            if s.ts_ns < e.1 {
                // Time went back (a restarted node, or a sample stamped far
                // ahead before): start again from this one rather than wait
                // for the node's clock to pass the bad stamp.
                *e = (through, s.ts_ns, None);
            } else if s.ts_ns > e.1.saturating_add(100_000_000) {
                let rate = through.saturating_sub(e.0) as f64 / ((s.ts_ns - e.1) as f64 / 1e9);
                *e = (through, s.ts_ns, Some(rate));
            }
        }
        for (name, v) in &s.values {
            let (key, iface) = name.split_once(':').map(|(k, i)| (k, Some(i))).unwrap_or((name.as_str(), None));
            if iface.is_some_and(|i| !allowed.contains(i)) {
                continue;
            }
            match (key, iface) {
                ("cpu_ratio", None) => r
                    .gauge(
                        "gatewarden_node_cpu_ratio",
                        "Share of CPU time busy over the last second (0-1).",
                        &[("node", node)],
                    )
                    .set(*v),
                ("memory_total_bytes", None) => {
                    r.gauge("gatewarden_node_memory_total_bytes", "Memory of the node.", &[("node", node)]).set(*v)
                }
                ("memory_used_bytes", None) => r
                    .gauge(
                        "gatewarden_node_memory_used_bytes",
                        "Memory in use (total minus available).",
                        &[("node", node)],
                    )
                    .set(*v),
                ("process_resident_bytes", None) => r
                    .gauge(
                        "gatewarden_process_resident_bytes",
                        "Resident memory of the gatewarden process.",
                        &[("node", node)],
                    )
                    .set(*v),
                ("net_rx_bytes", Some(i)) => r
                    .counter(
                        "gatewarden_node_network_receive_bytes_total",
                        "Bytes received per interface (from /proc/net/dev).",
                        &[("node", node), ("interface", i)],
                    )
                    .set_total(*v as u64),
                ("net_tx_bytes", Some(i)) => r
                    .counter(
                        "gatewarden_node_network_transmit_bytes_total",
                        "Bytes sent per interface (from /proc/net/dev).",
                        &[("node", node), ("interface", i)],
                    )
                    .set_total(*v as u64),
                _ => {}
            }
        }
    }
}

impl NodeMetrics {
    /// A node's interface data rate (bytes/s in and out) between its last two samples.
    pub fn rate(&self, node: &str) -> Option<f64> {
        self.rates.lock().unwrap_or_else(|e| e.into_inner()).get(node).and_then(|e| e.2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat = "cpu  100 5 50 800 20 1 2 3 0 0\ncpu0 1 2 3 4\n";
        assert_eq!(parse_stat(stat), Some((161, 981)));
        assert_eq!(parse_stat("garbage"), None);
        let mem = "MemTotal:       2048 kB\nMemFree:  10 kB\nMemAvailable:   1024 kB\n";
        assert_eq!(parse_meminfo(mem), Some((2048 * 1024, 1024 * 1024)));
        let dev = "Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes\n    lo: 10 1 0 0 0 0 0 0 10 1 0 0 0 0 0 0\n  eth0: 1234 5 0 0 0 0 0 0 5678 6 0 0 0 0 0 0\n";
        let m = parse_net_dev(dev);
        assert_eq!(m.len(), 1);
        assert_eq!(m["eth0"], (1234, 5678));
        assert_eq!(parse_rss("Name: x\nVmRSS:\t  512 kB\n"), Some(512 * 1024));
    }

    #[test]
    fn series_per_node_are_bounded() {
        let r = Registry::new();
        let nm = NodeMetrics::new(&r);
        for i in 0..10u32 {
            let values = (0..100).map(|j| (format!("net_rx_bytes:if{i}x{j}"), 1.0)).collect();
            nm.record(&MetricsSample { node: "n1".into(), ts_ns: 1, values }, 1);
        }
        let bad = vec![("net_rx_bytes:a\"b".to_string(), 1.0), (format!("net_rx_bytes:{}", "x".repeat(40)), 1.0)];
        nm.record(&MetricsSample { node: "n2".into(), ts_ns: 1, values: bad }, 1);
        nm.record(&MetricsSample { node: "no such\nnode".into(), ts_ns: 1, values: vec![] }, 1);
        let text = r.render_prometheus();
        let series = text.lines().filter(|l| l.starts_with("gatewarden_node_network_receive_bytes_total{")).count();
        assert_eq!(series, MAX_INTERFACES, "{text}");
        let s = r.snapshot();
        assert_eq!(s["gatewarden_node_series_refused_total"], (1000 - MAX_INTERFACES + 2) as f64);
        assert_eq!(s["gatewarden_node_samples_refused_total"], 1.0);
    }

    /// A node's metrics sample stamped near the end of time (a skewed or
    /// compromised clock) overflowed the rate's time check (a panic in a
    /// debug build) and, wrapped, froze the node's data rate for good; such
    /// samples are now refused and counted, and huge counters saturate.
    #[test]
    fn a_sample_stamped_far_ahead_neither_panics_nor_freezes_the_rate() {
        let nm = NodeMetrics::new(&Registry::new());
        let at = |ts_ns: u64, bytes: f64| MetricsSample {
            node: "r1".into(),
            ts_ns,
            values: vec![("net_rx_bytes:eth0".into(), bytes)],
        };
        let now = 2_000_000_000;
        nm.record(&at(1_000_000_000, 1_000.0), now);
        nm.record(&at(u64::MAX - 1, 0.0), now);
        nm.record(&at(u64::MAX, 0.0), now);
        nm.record(&at(2_000_000_000, 3_000.0), now);
        assert_eq!(nm.rate("r1"), Some(2_000.0), "the rate follows the node's real samples");
        // Counters near the end of the range overflowed their sum (a panic in debug builds).
        let huge = MetricsSample {
            node: "r1".into(),
            ts_ns: 3_000_000_000,
            values: vec![("net_rx_bytes:eth0".into(), 1e20), ("net_tx_bytes:eth0".into(), 1e20)],
        };
        nm.record(&huge, 3_000_000_000);
        let s = nm.registry.snapshot();
        assert_eq!(s["gatewarden_node_samples_refused_total"], 2.0, "the two samples from the future");
        // Time going back (a node restarted with its clock behind) starts the rate again.
        nm.record(&at(500_000_000, 0.0), now);
        nm.record(&at(1_500_000_000, 500.0), now);
        assert_eq!(nm.rate("r1"), Some(500.0));
    }

    #[test]
    fn samples_this_machine_and_renders_series() {
        let mut s = ProcSampler::new();
        let _ = s.sample("n1", 1);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let sample = s.sample("n1", 2);
        let names: Vec<&str> = sample.values.iter().map(|(k, _)| k.as_str()).collect();
        assert!(names.contains(&"memory_used_bytes") && names.contains(&"process_resident_bytes"), "{names:?}");
        let r = Registry::new();
        let nm = NodeMetrics::new(&r);
        nm.record(&sample, 1_000_000_002);
        let text = r.render_prometheus();
        assert!(text.contains("gatewarden_node_memory_used_bytes{node=\"n1\"}"), "{text}");
        assert!(text.contains("gatewarden_bus_latency_seconds{node=\"n1\"} 1"), "{text}");
    }
}
