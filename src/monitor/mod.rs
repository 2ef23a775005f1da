//! What the operator sees: recent alerts, counters over time, and the status
//! page with its JSON API ([`http`]).

pub mod http;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::bus::messages::Alert;
use crate::metrics::{Gauge, Registry};
use crate::role::{Role, RoleSource};

/// Most alerts kept in memory for the page and `/api/alerts`.
pub const RECENT_ALERTS: usize = 1000;
/// Seconds of history kept for the charts.
pub const HISTORY_SECONDS: usize = 600;

/// One point of the charts.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct HistoryPoint {
    /// Unix time, seconds.
    pub t: u64,
    /// Packets counted so far.
    pub packets: f64,
    /// Alerts so far.
    pub alerts: u64,
    /// Flows in the table.
    pub flows: f64,
}

/// Most nodes whose health the monitor tracks (a fleet larger than this forgets the longest silent).
pub const MAX_NODES: usize = 1024;

/// What the monitor knows about one node of the fleet.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct NodeHealth {
    /// Its role, from its heartbeats.
    pub role: Option<Role>,
    /// Its version.
    pub version: String,
    /// Its uptime in its last heartbeat.
    pub uptime_s: u64,
    /// When we last heard a heartbeat, Unix seconds.
    pub last_seen: u64,
    /// One-way heartbeat delay in ms (needs synchronised clocks).
    pub latency_ms: f64,
    /// Its retained status (`online`/`offline` or its last will), if known.
    pub online: Option<bool>,
    /// Alerts about its traffic.
    pub alerts: u64,
    /// Of those, alerts whose source was blocked (a verdict went to this gateway's router).
    pub blocked: u64,
}

#[derive(Debug, Default)]
struct Inner {
    alerts: VecDeque<Alert>,
    alerts_total: u64,
    by_kind: BTreeMap<String, u64>,
    nodes: BTreeMap<String, NodeHealth>,
    history: VecDeque<HistoryPoint>,
    replay: Option<Value>,
}

/// Shared state behind the status page.
#[derive(Debug)]
pub struct MonitorState {
    /// The role this process runs.
    pub role: Role,
    /// Where the role came from.
    pub role_source: RoleSource,
    /// This node's id.
    pub node: String,
    /// The metrics registry.
    pub registry: Arc<Registry>,
    started: Instant,
    uptime: Gauge,
    inner: Mutex<Inner>,
}

/// Unix time now in seconds.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Unix time now in nanoseconds.
pub fn unix_now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// Formats nanoseconds since the epoch as RFC 3339 with microseconds, UTC
/// (Suricata's timestamp shape).
pub fn rfc3339(ns: u64) -> String {
    let secs = (ns / 1_000_000_000) as i64;
    let micros = (ns % 1_000_000_000) / 1000;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}+0000", rem / 3600, (rem % 3600) / 60, rem % 60)
}

/// An alert as a Suricata EVE JSON object plus gatewarden's own fields.
pub fn eve_json(a: &Alert) -> Value {
    json!({
        "timestamp": rfc3339(a.ts_ns),
        "flow_id": a.flow_id,
        "event_type": "alert",
        "src_ip": a.src.map(|s| s.to_string()),
        "src_port": a.sport,
        "dest_ip": a.dst.map(|s| s.to_string()),
        "dest_port": a.dport,
        "proto": a.proto.map(|p| p.name().to_uppercase()),
        "alert": {
            "action": match a.action { crate::bus::messages::AlertAction::Blocked => "blocked", _ => "allowed" },
            "gid": 1,
            "signature_id": a.signature_id,
            "rev": 1,
            "signature": a.signature,
            "category": a.kind.as_str(),
            "severity": a.severity as u8,
        },
        "gatewarden": {
            "id": a.id,
            "kind": a.kind.as_str(),
            "confidence": a.confidence,
            "reason": a.reason,
            "node": a.node,
        }
    })
}

impl MonitorState {
    /// State for a process running `role`.
    pub fn new(role: Role, role_source: RoleSource, node: String, registry: Arc<Registry>) -> Arc<MonitorState> {
        registry
            .gauge(
                "gatewarden_build_info",
                "Always 1; labels carry the version and role.",
                &[("version", env!("CARGO_PKG_VERSION")), ("role", role.as_str())],
            )
            .set(1.0);
        let uptime = registry.gauge("gatewarden_uptime_seconds", "Seconds since the process started.", &[]);
        Arc::new(MonitorState {
            role,
            role_source,
            node,
            registry,
            started: Instant::now(),
            uptime,
            inner: Mutex::new(Inner::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores an alert (the oldest in memory go first past [`RECENT_ALERTS`]).
    pub fn record_alert(&self, alert: Alert) {
        let mut inner = self.lock();
        inner.alerts_total += 1;
        *inner.by_kind.entry(alert.kind.as_str().to_string()).or_insert(0) += 1;
        let n = Self::node_entry(&mut inner.nodes, &alert.node);
        n.alerts += 1;
        if alert.action == crate::bus::messages::AlertAction::Blocked {
            n.blocked += 1;
        }
        inner.alerts.push_back(alert);
        while inner.alerts.len() > RECENT_ALERTS {
            inner.alerts.pop_front();
        }
    }

    fn node_entry<'a>(nodes: &'a mut BTreeMap<String, NodeHealth>, node: &str) -> &'a mut NodeHealth {
        if !nodes.contains_key(node) && nodes.len() >= MAX_NODES {
            if let Some(k) = nodes.iter().min_by_key(|(_, h)| h.last_seen).map(|(k, _)| k.clone()) {
                nodes.remove(&k);
            }
        }
        nodes.entry(node.to_string()).or_default()
    }

    /// Records a heartbeat: the node is alive, with its role, version and delay.
    pub fn record_heartbeat(&self, hb: &crate::bus::messages::Heartbeat) {
        let now_ns = unix_now_ns();
        let mut inner = self.lock();
        let h = Self::node_entry(&mut inner.nodes, &hb.node);
        h.role = Some(hb.role);
        h.version = hb.version.clone();
        h.uptime_s = hb.uptime_s;
        h.last_seen = now_ns / 1_000_000_000;
        h.latency_ms = now_ns.saturating_sub(hb.sent_ns) as f64 / 1e6;
    }

    /// Records a node's retained online/offline status.
    pub fn set_node_online(&self, node: &str, online: bool) {
        let mut inner = self.lock();
        Self::node_entry(&mut inner.nodes, node).online = Some(online);
    }

    /// Health of every known node, by node id.
    pub fn nodes(&self) -> BTreeMap<String, NodeHealth> {
        self.lock().nodes.clone()
    }

    /// Stored alerts (newest last), for tests and exports.
    pub fn alerts(&self) -> Vec<Alert> {
        self.lock().alerts.iter().cloned().collect()
    }

    /// Alerts stored since start (including those rotated out of memory).
    pub fn alerts_total(&self) -> u64 {
        self.lock().alerts_total
    }

    /// Alert counts by kind.
    pub fn alerts_by_kind(&self) -> BTreeMap<String, u64> {
        self.lock().by_kind.clone()
    }

    /// Recent alerts, newest first, as EVE JSON.
    pub fn recent_alerts_json(&self, limit: usize) -> Vec<Value> {
        self.lock().alerts.iter().rev().take(limit).map(eve_json).collect()
    }

    /// Records replay progress shown on the page.
    pub fn set_replay(&self, progress: Value) {
        self.lock().replay = Some(progress);
    }

    /// Takes a chart sample; called once a second.
    pub fn sample(&self) {
        self.uptime.set(self.started.elapsed().as_secs_f64());
        let snap = self.registry.snapshot();
        let point = HistoryPoint {
            t: unix_now(),
            packets: snap.get("gatewarden_packets_total").copied().unwrap_or(0.0),
            alerts: 0,
            flows: snap.get("gatewarden_flows_active").copied().unwrap_or(0.0),
        };
        let mut inner = self.lock();
        let point = HistoryPoint { alerts: inner.alerts_total, ..point };
        inner.history.push_back(point);
        while inner.history.len() > HISTORY_SECONDS {
            inner.history.pop_front();
        }
    }

    /// Seconds since start.
    pub fn uptime_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// The `/api/status` document.
    pub fn status_json(&self) -> Value {
        self.uptime.set(self.uptime_s());
        let counters = self.registry.snapshot();
        let inner = self.lock();
        json!({
            "node": self.node,
            "role": self.role.as_str(),
            "role_source": self.role_source,
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_s": self.uptime_s(),
            "alerts_total": inner.alerts_total,
            "alerts_by_kind": inner.by_kind,
            "nodes": inner.nodes,
            "counters": counters,
            "history": inner.history,
            "replay": inner.replay,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000+0000");
        assert_eq!(rfc3339(1_700_000_000_123_456_789), "2023-11-14T22:13:20.123456+0000");
        assert_eq!(rfc3339(951_782_400_000_000_000), "2000-02-29T00:00:00.000000+0000");
    }
}
