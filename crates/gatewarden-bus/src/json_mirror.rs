//! The JSON mirror for integrations: what a monitor with `[mqtt] json_mirror
//! = true` publishes next to the node bus, in JSON any MQTT client reads
//! (the node bus's own frames are postcard, and partly sealed).
//!
//! | topic | QoS | retained | payload |
//! |---|---|---|---|
//! | `gatewarden/v1/<node>/json/alert` | 1 | no | each stored alert as a Suricata EVE object |
//! | `gatewarden/v1/<node>/json/metrics` | 1 | no | [`MirrorMetrics`], every `json_interval_s` |
//! | `gatewarden/v1/<node>/json/state` | 1 | yes | [`MirrorState`], every `json_interval_s` |
//! | `homeassistant/sensor/gatewarden_<node>/<object>/config` | 1 | yes | Home Assistant discovery ([`discovery_configs`]) |
//!
//! The discovery configs' availability is the node's retained
//! `gatewarden/v1/<node>/status` (`online`, or `offline` from the broker's
//! last will), so Home Assistant greys the sensors out when the node dies.
//! The broker ACL (`pki mosquitto-conf`, [`gatewarden_proto::kinds::json_acl`])
//! lets an `integration` certificate read exactly these and `+/status`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

pub use gatewarden_proto::kinds::{ha_node_id, json_topic, HA_DISCOVERY_PREFIX, JSON_ALERT, JSON_METRICS, JSON_STATE};

/// The retained `json/state` document; Home Assistant's sensors read its fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MirrorState {
    /// The node publishing it.
    pub node: String,
    /// gatewarden's version on that node.
    pub version: String,
    /// Nodes heard from in the last 30 s and not known to be offline (this one included).
    pub nodes_online: u64,
    /// Sources blocked now, on every router the monitor hears from.
    pub blocked_sources: u64,
    /// Alerts stored in the last 60 s (since start, in the first minute).
    pub alerts_per_min: u64,
    /// Alerts stored in all.
    pub alerts_total: u64,
    /// When this document was made (RFC 3339).
    pub updated: String,
}

/// The `json/metrics` document: the node's key numbers, named as on `/metrics`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MirrorMetrics {
    /// The node publishing it.
    pub node: String,
    /// When it was taken (RFC 3339).
    pub timestamp: String,
    /// Seconds since the process started.
    pub uptime_s: f64,
    /// The state numbers again, so one message has everything.
    pub alerts_total: u64,
    /// Alerts stored in the last 60 s.
    pub alerts_per_min: u64,
    /// Sources blocked now.
    pub blocked_sources: u64,
    /// Nodes online.
    pub nodes_online: u64,
    /// Selected counters and gauges of this process (`gatewarden_packets_total`, …); absent ones are 0.
    pub counters: serde_json::Map<String, Value>,
}

/// Counters and gauges copied into `json/metrics` (absent ones are written as 0).
pub const METRIC_NAMES: [&str; 8] = [
    "gatewarden_packets_total",
    "gatewarden_flows_active",
    "gatewarden_verdicts_received_total",
    "gatewarden_bus_dropped_total{kind=alert}",
    "gatewarden_mqtt_connected",
    "gatewarden_mqtt_published_total{kind=alert}",
    "gatewarden_mqtt_json_published_total",
    "gatewarden_mqtt_json_dropped_total",
];

/// One Home Assistant sensor made from a field of [`MirrorState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sensor {
    /// The discovery topic's `<object_id>` and the field of `json/state` it shows.
    pub field: &'static str,
    /// The entity's name in Home Assistant.
    pub name: &'static str,
    /// Its unit.
    pub unit: &'static str,
    /// A Material Design icon.
    pub icon: &'static str,
}

/// The gateway's key sensors.
pub const SENSORS: [Sensor; 3] = [
    Sensor { field: "alerts_per_min", name: "Alerts per minute", unit: "alerts/min", icon: "mdi:shield-alert" },
    Sensor { field: "blocked_sources", name: "Blocked sources", unit: "sources", icon: "mdi:shield-lock" },
    Sensor { field: "nodes_online", name: "Nodes online", unit: "nodes", icon: "mdi:server-network" },
];

/// `homeassistant/sensor/gatewarden_<node>/<object>/config`.
pub fn discovery_topic(node: &str, object: &str) -> String {
    format!("{HA_DISCOVERY_PREFIX}/sensor/{}/{object}/config", ha_node_id(node))
}

/// Home Assistant MQTT discovery configs (topic, payload) for `node`'s
/// sensors. Only keys Home Assistant documents for an MQTT sensor
/// (tests/mqtt_json.rs checks them against HA's schema).
pub fn discovery_configs(node: &str, version: &str) -> Vec<(String, Value)> {
    let device = json!({
        "identifiers": [ha_node_id(node)],
        "name": format!("gatewarden {node}"),
        "manufacturer": "gatewarden",
        "model": "IoT security gateway",
        "sw_version": version,
    });
    SENSORS
        .iter()
        .map(|s| {
            let cfg = json!({
                "name": s.name,
                "unique_id": format!("{}_{}", ha_node_id(node), s.field),
                "state_topic": json_topic(node, JSON_STATE),
                "value_template": format!("{{{{ value_json.{} }}}}", s.field),
                "unit_of_measurement": s.unit,
                "state_class": "measurement",
                "icon": s.icon,
                "availability": [{
                    "topic": format!("{}/{node}/status", gatewarden_proto::kinds::TOPIC_PREFIX),
                    "payload_available": "online",
                    "payload_not_available": "offline",
                }],
                "device": device,
                "origin": {"name": "gatewarden", "sw_version": version},
            });
            (discovery_topic(node, s.field), cfg)
        })
        .collect()
}

/// Alerts in the last minute, from the store's running total sampled now
/// and then: bounded (one sample per second at most is kept for 60 s).
#[derive(Debug)]
pub struct AlertRate {
    samples: VecDeque<(Instant, u64)>,
}

/// The window of [`AlertRate`].
pub const RATE_WINDOW: Duration = Duration::from_secs(60);

impl AlertRate {
    /// Starts counting from `total` alerts at `now`.
    pub fn new(total: u64, now: Instant) -> AlertRate {
        AlertRate { samples: VecDeque::from([(now, total)]) }
    }

    /// Records `total` at `now`; returns the alerts stored in the last minute
    /// (since the first sample while that is younger than a minute).
    pub fn observe(&mut self, total: u64, now: Instant) -> u64 {
        // The newest sample at or before now - 60 s is the baseline; older ones go.
        while self.samples.len() >= 2 && now.duration_since(self.samples[1].0) >= RATE_WINDOW {
            self.samples.pop_front();
        }
        let base = self.samples.front().map_or(total, |s| s.1);
        if self.samples.back().is_none_or(|s| now.duration_since(s.0) >= Duration::from_secs(1)) {
            self.samples.push_back((now, total));
        }
        while self.samples.len() > 2 * RATE_WINDOW.as_secs() as usize {
            self.samples.pop_front();
        }
        total.saturating_sub(base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sensor_reads_a_field_of_the_state_document() {
        let st = MirrorState {
            node: "gw".into(),
            version: "1".into(),
            nodes_online: 1,
            blocked_sources: 2,
            alerts_per_min: 3,
            alerts_total: 4,
            updated: "t".into(),
        };
        let v = serde_json::to_value(&st).unwrap();
        let configs = discovery_configs("gw", "1.2.3");
        assert_eq!(configs.len(), SENSORS.len());
        for ((topic, cfg), s) in configs.iter().zip(SENSORS) {
            assert!(v.get(s.field).is_some_and(Value::is_u64), "{}", s.field);
            assert_eq!(topic, &format!("homeassistant/sensor/gatewarden_gw/{}/config", s.field));
            assert_eq!(cfg["state_topic"], "gatewarden/v1/gw/json/state");
            assert_eq!(cfg["value_template"], format!("{{{{ value_json.{} }}}}", s.field));
            assert_eq!(cfg["availability"][0]["topic"], "gatewarden/v1/gw/status");
        }
        let ids: std::collections::HashSet<_> = configs.iter().map(|(_, c)| c["unique_id"].clone()).collect();
        assert_eq!(ids.len(), SENSORS.len(), "unique ids are unique");
    }

    #[test]
    fn the_alert_rate_counts_the_last_minute_and_stays_bounded() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut r = AlertRate::new(100, t0);
        assert_eq!(r.observe(100, at(1)), 0);
        assert_eq!(r.observe(110, at(10)), 10);
        assert_eq!(r.observe(130, at(59)), 30, "first minute: since start");
        assert_eq!(r.observe(130, at(75)), 20, "the 10 alerts of second 10 are older than a minute by second 70");
        assert_eq!(r.observe(130, at(200)), 0);
        for s in 200..5000 {
            r.observe(130 + s, at(s));
        }
        assert!(r.samples.len() <= 121);
        assert_eq!(r.observe(5130, at(5000)), 60);
    }
}
