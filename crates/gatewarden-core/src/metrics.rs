//! Named counters, gauges and histograms shared by every role, rendered as
//! Prometheus text on `/metrics` and as JSON on `/api/status`.
//!
//! A series is an `Arc<AtomicU64>` (or a histogram's few atomics) handed out
//! once; the hot path only does relaxed atomic adds. The registry lock is
//! taken when a series is created and when rendering.
//!
//! Hand-written rather than `prometheus-client` (docs/ARCHITECTURE.md,
//! "Metrics"): the text format is small, and this keeps the binary free of
//! the crate's extra dependencies.

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

/// A count kept by one thread in a plain integer and added to its shared
/// [`Counter`] on [`LocalCounter::publish`]: a relaxed atomic add is a
/// locked instruction (tens of cycles, a full barrier on x86), too dear on
/// the per-packet path, where the owner publishes at its batch cadence.
#[derive(Debug)]
pub struct LocalCounter {
    shared: Counter,
    pending: u64,
}

impl LocalCounter {
    /// Counts into `shared` from now on.
    pub fn new(shared: Counter) -> LocalCounter {
        LocalCounter { shared, pending: 0 }
    }
    /// Adds one, locally.
    #[inline]
    pub fn inc(&mut self) {
        self.pending += 1;
    }
    /// Adds `n`, locally.
    #[inline]
    pub fn add(&mut self, n: u64) {
        self.pending += n;
    }
    /// Adds what was counted since the last call to the shared counter.
    pub fn publish(&mut self) {
        if self.pending > 0 {
            self.shared.add(std::mem::take(&mut self.pending));
        }
    }
}

impl Drop for LocalCounter {
    /// Nothing counted is lost when the owner goes away without a last publish.
    fn drop(&mut self) {
        self.publish();
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

/// Bucket upper bounds (seconds) for latencies of a millisecond or so: from
/// 0.1 ms (a netlink ack takes a few hundred µs), three steps per decade, to
/// 10 s (anything slower is an outage).
pub const LATENCY_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Debug)]
struct HistogramInner {
    /// Upper bounds, increasing; `+Inf` is implied.
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); one more than `bounds` (`+Inf`).
    buckets: Vec<AtomicU64>,
    /// Sum of observations, f64 bits.
    sum: AtomicU64,
}

/// A distribution of observed values (Prometheus histogram): counts per
/// bucket, the sum and the count, so `histogram_quantile` works across nodes.
#[derive(Debug, Clone)]
pub struct Histogram(Arc<HistogramInner>);

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram(Arc::new(HistogramInner {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
        }))
    }

    /// Records one value (NaN is ignored: it would poison the sum).
    pub fn observe(&self, v: f64) {
        if v.is_nan() {
            return;
        }
        let i = self.0.bounds.iter().position(|b| v <= *b).unwrap_or(self.0.bounds.len());
        self.0.buckets[i].fetch_add(1, Ordering::Relaxed);
        let mut cur = self.0.sum.load(Ordering::Relaxed);
        loop {
            let next = (f64::from_bits(cur) + v).to_bits();
            match self.0.sum.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => break,
                Err(c) => cur = c,
            }
        }
    }

    /// Records a duration in seconds.
    pub fn observe_duration(&self, d: std::time::Duration) {
        self.observe(d.as_secs_f64());
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.0.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// Sum of the observations so far.
    pub fn sum(&self) -> f64 {
        f64::from_bits(self.0.sum.load(Ordering::Relaxed))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

#[derive(Debug, Clone)]
enum Series {
    Scalar(Arc<AtomicU64>),
    Histogram(Histogram),
}

#[derive(Debug)]
struct Family {
    help: &'static str,
    kind: Kind,
    series: BTreeMap<Vec<(String, String)>, Series>,
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

    fn series(
        &self,
        name: &'static str,
        help: &'static str,
        kind: Kind,
        labels: &[(&str, &str)],
        make: impl FnOnce() -> Series,
    ) -> Series {
        assert!(valid_name(name), "invalid metric name {name}");
        let mut families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        let family = families.entry(name).or_insert_with(|| Family { help, kind, series: BTreeMap::new() });
        assert_eq!(family.kind, kind, "metric {name} registered as two kinds");
        let key: Vec<(String, String)> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        family.series.entry(key).or_insert_with(make).clone()
    }

    fn scalar(&self, name: &'static str, help: &'static str, kind: Kind, labels: &[(&str, &str)]) -> Arc<AtomicU64> {
        let init = if kind == Kind::Gauge { 0f64.to_bits() } else { 0 };
        match self.series(name, help, kind, labels, || Series::Scalar(Arc::new(AtomicU64::new(init)))) {
            Series::Scalar(a) => a,
            Series::Histogram(_) => unreachable!("kinds are checked in series()"),
        }
    }

    /// The counter `name{labels}`, created at zero if new.
    pub fn counter(&self, name: &'static str, help: &'static str, labels: &[(&str, &str)]) -> Counter {
        Counter(self.scalar(name, help, Kind::Counter, labels))
    }

    /// The gauge `name{labels}`, created at zero if new.
    pub fn gauge(&self, name: &'static str, help: &'static str, labels: &[(&str, &str)]) -> Gauge {
        Gauge(self.scalar(name, help, Kind::Gauge, labels))
    }

    /// The histogram `name{labels}` with bucket upper bounds `buckets`
    /// (increasing), created empty if new. `name` is the base name: the text
    /// has `name_bucket`, `name_sum` and `name_count`.
    pub fn histogram(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        buckets: &'static [f64],
    ) -> Histogram {
        assert!(buckets.windows(2).all(|w| w[0] < w[1]), "buckets of {name} must increase");
        assert!(labels.iter().all(|(k, _)| *k != "le"), "{name}: `le` is the bucket label");
        match self.series(name, help, Kind::Histogram, labels, || Series::Histogram(Histogram::new(buckets))) {
            Series::Histogram(h) => h,
            Series::Scalar(_) => unreachable!("kinds are checked in series()"),
        }
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render_prometheus(&self) -> String {
        let families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        for (name, f) in families.iter() {
            let kind = match f.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Histogram => "histogram",
            };
            let _ = writeln!(out, "# HELP {name} {}", escape_help(f.help));
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, series) in &f.series {
                let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape_label(v))).collect();
                match series {
                    Series::Scalar(v) => {
                        let raw = v.load(Ordering::Relaxed);
                        let value = match f.kind {
                            Kind::Gauge => format_float(f64::from_bits(raw)),
                            _ => raw.to_string(),
                        };
                        let _ = writeln!(out, "{name}{} {value}", braces(&l));
                    }
                    Series::Histogram(h) => {
                        // Buckets are read once, so `+Inf` and `_count` agree with the buckets.
                        let counts: Vec<u64> = h.0.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
                        let mut cumulative = 0;
                        for (i, c) in counts.iter().enumerate() {
                            cumulative += c;
                            let le = h.0.bounds.get(i).map_or("+Inf".to_string(), |b| format_float(*b));
                            let mut with_le = l.clone();
                            with_le.push(format!("le=\"{le}\""));
                            let _ = writeln!(out, "{name}_bucket{} {cumulative}", braces(&with_le));
                        }
                        let _ = writeln!(out, "{name}_sum{} {}", braces(&l), format_float(h.sum()));
                        let _ = writeln!(out, "{name}_count{} {cumulative}", braces(&l));
                    }
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
            for (labels, series) in &f.series {
                let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                match series {
                    Series::Scalar(v) => {
                        let raw = v.load(Ordering::Relaxed);
                        let value = match f.kind {
                            Kind::Gauge => f64::from_bits(raw),
                            _ => raw as f64,
                        };
                        out.insert(format!("{name}{}", braces(&l)), value);
                    }
                    Series::Histogram(h) => {
                        out.insert(format!("{name}_count{}", braces(&l)), h.count() as f64);
                        out.insert(format!("{name}_sum{}", braces(&l)), h.sum());
                    }
                }
            }
        }
        out
    }
}

/// `{a="1",b="2"}`, or nothing without labels.
fn braces(labels: &[String]) -> String {
    if labels.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", labels.join(","))
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
    fn a_local_counter_shows_in_the_shared_one_once_published_and_when_dropped() {
        let r = Registry::default();
        let shared = r.counter("gatewarden_local_total", "Counted locally.", &[]);
        let mut local = LocalCounter::new(shared.clone());
        local.inc();
        local.add(4);
        assert_eq!(shared.get(), 0, "nothing shared before publishing");
        local.publish();
        assert_eq!(shared.get(), 5);
        local.publish();
        assert_eq!(shared.get(), 5, "a second publish adds nothing");
        local.add(2);
        drop(local);
        assert_eq!(shared.get(), 7, "a drop publishes what is left");
    }

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
    fn histograms_render_cumulative_buckets_sum_and_count() {
        let r = Registry::new();
        let h = r.histogram("lat_seconds", "Latency.", &[("origin", "detector")], LATENCY_BUCKETS);
        r.histogram("idle_seconds", "Never observed.", &[], LATENCY_BUCKETS);
        h.observe(0.0007);
        h.observe(0.003);
        h.observe(0.003);
        h.observe(60.0);
        h.observe(f64::NAN);
        let text = r.render_prometheus();
        assert!(text.contains("# TYPE lat_seconds histogram\n"), "{text}");
        assert!(text.contains("lat_seconds_bucket{origin=\"detector\",le=\"0.0005\"} 0\n"), "{text}");
        assert!(text.contains("lat_seconds_bucket{origin=\"detector\",le=\"0.001\"} 1\n"), "{text}");
        assert!(text.contains("lat_seconds_bucket{origin=\"detector\",le=\"0.005\"} 3\n"), "{text}");
        assert!(text.contains("lat_seconds_bucket{origin=\"detector\",le=\"10\"} 3\n"), "{text}");
        assert!(text.contains("lat_seconds_bucket{origin=\"detector\",le=\"+Inf\"} 4\n"), "{text}");
        assert!(text.contains("lat_seconds_count{origin=\"detector\"} 4\n"), "{text}");
        assert!(text.contains("lat_seconds_sum{origin=\"detector\"} 60.0067"), "{text}");
        // Present from the start, empty.
        assert!(
            text.contains("idle_seconds_bucket{le=\"+Inf\"} 0\nidle_seconds_sum 0\nidle_seconds_count 0\n"),
            "{text}"
        );
        assert_eq!(r.snapshot()["lat_seconds_count{origin=detector}"], 4.0);
    }

    #[test]
    #[should_panic(expected = "registered as two kinds")]
    fn a_name_is_one_kind() {
        let r = Registry::new();
        r.counter("z_total", "z", &[]);
        r.histogram("z_total", "z", &[], LATENCY_BUCKETS);
    }

    #[test]
    #[should_panic(expected = "invalid metric name")]
    fn bad_names_are_caught_in_development() {
        Registry::new().counter("bad-name", "", &[]);
    }
}
