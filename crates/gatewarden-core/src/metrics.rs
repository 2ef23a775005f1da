//! Named counters and gauges shared by every role, rendered as Prometheus
//! text on `/metrics` and as JSON on `/api/status`.
//!
//! A series is an `Arc<AtomicU64>` handed out once; the hot path only does a
//! relaxed atomic add. The registry lock is taken when a series is created
//! and when rendering.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A monotonically increasing count.
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    /// Raises the counter to `total` if it is below (for counts kept elsewhere).
    pub fn set_total(&self, total: u64) {
        self.0.fetch_max(total, Ordering::Relaxed);
    }
}

/// A value that goes up and down, stored as f64 bits.
#[derive(Debug, Clone, Default)]
pub struct Gauge(Arc<AtomicU64>);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

#[derive(Debug)]
struct Family {
    help: &'static str,
    kind: Kind,
    series: BTreeMap<Vec<(String, String)>, Arc<AtomicU64>>,
}

/// The process-wide metrics registry.
#[derive(Debug, Default)]
pub struct Registry {
    families: Mutex<BTreeMap<&'static str, Family>>,
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Arc<Registry> {
        Arc::new(Registry::default())
    }

    fn series(&self, name: &'static str, help: &'static str, kind: Kind, labels: &[(&str, &str)]) -> Arc<AtomicU64> {
        assert!(valid_name(name), "invalid metric name {name}");
        let mut families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        let family = families.entry(name).or_insert_with(|| Family { help, kind, series: BTreeMap::new() });
        assert_eq!(family.kind, kind, "metric {name} registered as two kinds");
        let key: Vec<(String, String)> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let init = if kind == Kind::Gauge { 0f64.to_bits() } else { 0 };
        family.series.entry(key).or_insert_with(|| Arc::new(AtomicU64::new(init))).clone()
    }

    /// The counter `name{labels}`, created at zero if new.
    pub fn counter(&self, name: &'static str, help: &'static str, labels: &[(&str, &str)]) -> Counter {
        Counter(self.series(name, help, Kind::Counter, labels))
    }

    /// The gauge `name{labels}`, created at zero if new.
    pub fn gauge(&self, name: &'static str, help: &'static str, labels: &[(&str, &str)]) -> Gauge {
        Gauge(self.series(name, help, Kind::Gauge, labels))
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render_prometheus(&self) -> String {
        let families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        for (name, f) in families.iter() {
            let _ = writeln!(out, "# HELP {name} {}", escape_help(f.help));
            let _ = writeln!(out, "# TYPE {name} {}", if f.kind == Kind::Counter { "counter" } else { "gauge" });
            for (labels, v) in &f.series {
                let raw = v.load(Ordering::Relaxed);
                let value = match f.kind {
                    Kind::Counter => raw.to_string(),
                    Kind::Gauge => format_float(f64::from_bits(raw)),
                };
                if labels.is_empty() {
                    let _ = writeln!(out, "{name} {value}");
                } else {
                    let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape_label(v))).collect();
                    let _ = writeln!(out, "{name}{{{}}} {value}", l.join(","));
                }
            }
        }
        out
    }

    /// Every series as `name{labels}` → value, for JSON status and tests.
    pub fn snapshot(&self) -> BTreeMap<String, f64> {
        let families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = BTreeMap::new();
        for (name, f) in families.iter() {
            for (labels, v) in &f.series {
                let raw = v.load(Ordering::Relaxed);
                let value = match f.kind {
                    Kind::Counter => raw as f64,
                    Kind::Gauge => f64::from_bits(raw),
                };
                let key = if labels.is_empty() {
                    name.to_string()
                } else {
                    let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    format!("{name}{{{}}}", l.join(","))
                };
                out.insert(key, value);
            }
        }
        out
    }
}

fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{v}")
    }
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_gauges_with_labels() {
        let r = Registry::new();
        let c = r.counter("gatewarden_packets_total", "Packets seen.", &[]);
        c.add(5);
        r.counter("gatewarden_skipped_total", "Skipped.", &[("reason", "not_ip")]).inc();
        r.gauge("gatewarden_uptime_seconds", "Uptime.", &[]).set(1.5);
        let text = r.render_prometheus();
        assert!(text.contains("# TYPE gatewarden_packets_total counter\ngatewarden_packets_total 5\n"), "{text}");
        assert!(text.contains("gatewarden_skipped_total{reason=\"not_ip\"} 1\n"), "{text}");
        assert!(text.contains("gatewarden_uptime_seconds 1.5\n"), "{text}");
    }

    #[test]
    fn same_series_is_shared() {
        let r = Registry::new();
        r.counter("x_total", "x", &[("a", "1")]).inc();
        r.counter("x_total", "x", &[("a", "1")]).inc();
        assert_eq!(r.snapshot()["x_total{a=1}"], 2.0);
    }

    #[test]
    fn label_values_are_escaped() {
        let r = Registry::new();
        r.counter("y_total", "y", &[("v", "a\"b\\c\nd")]).inc();
        assert!(r.render_prometheus().contains(r#"y_total{v="a\"b\\c\nd"} 1"#));
    }

    #[test]
    #[should_panic(expected = "invalid metric name")]
    fn bad_names_are_caught_in_development() {
        Registry::new().counter("bad-name", "", &[]);
    }
}
