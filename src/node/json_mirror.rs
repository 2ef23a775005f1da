//! The MQTT JSON mirror for integrations (`[mqtt] json_mirror = true`, on a
//! node running the monitor): every stored alert as EVE JSON, the node's key
//! numbers, a retained state document and Home Assistant discovery configs
//! (topics and payloads in `bus/json_mirror.rs`). Best effort: a message
//! that cannot go now (broker away, client queue full) is dropped and
//! counted, never queued against the pipeline; the alert store is the record.

use std::sync::Arc;
use std::time::{Duration, Instant};

use smol::future::FutureExt;

use super::{next_or_shutdown, Context, Service, Wiring};
use crate::bus::json_mirror::{
    discovery_configs, json_topic, AlertRate, MirrorMetrics, MirrorState, JSON_ALERT, JSON_METRICS, JSON_STATE,
    METRIC_NAMES,
};
use crate::bus::mqtt::MqttBus;
use crate::bus::Publisher;
use crate::monitor::MonitorState;
use gatewarden_core::metrics::{Counter, Registry};

/// Alerts waiting for the mirror before copies are dropped (and counted).
pub const ALERT_QUEUE: usize = 1024;

/// Starts the mirror's two tasks: alerts as they are stored, and the periodic documents.
pub struct JsonMirror;

impl Service for JsonMirror {
    fn name(&self) -> &'static str {
        "json-mirror"
    }

    fn start(&mut self, cx: &Context<'_>, w: &mut Wiring) -> anyhow::Result<()> {
        let Some(mqtt) = w.mqtt.clone() else {
            // Config validation demands a broker; nothing to publish to without one.
            return Ok(());
        };
        let Some(alerts) = cx.state.tap_alerts(ALERT_QUEUE) else {
            anyhow::bail!("the JSON mirror started twice");
        };
        let out = Out::new(mqtt, &cx.registry);
        let node = cx.cfg.node_id.clone();
        tracing::info!(topics = %json_topic(&node, "#"), "MQTT JSON mirror on (mqtt.json_mirror)");
        {
            let (out, sd, node) = (out.clone(), cx.shutdown.clone(), node.clone());
            w.spawn(async move {
                let topic = json_topic(&node, JSON_ALERT);
                loop {
                    let Some(a) = next_or_shutdown(&alerts, &sd).await else { break };
                    out.send(&topic, &crate::monitor::eve_json(&a), false);
                }
            });
        }
        let (st, sd) = (cx.state.clone(), cx.shutdown.clone());
        let every = Duration::from_secs(cx.cfg.mqtt.json_interval_s.max(1));
        w.spawn(async move {
            let mut rate = AlertRate::new(st.alerts_total(), Instant::now());
            let mut was_connected = false;
            let mut last: Option<Instant> = None;
            loop {
                let connected = out.mqtt.connected();
                let per_min = rate.observe(st.alerts_total(), Instant::now());
                if connected && !was_connected {
                    // Retained: Home Assistant (re)reads them whenever it connects; sent again on every reconnect.
                    for (topic, cfg) in discovery_configs(&node, env!("CARGO_PKG_VERSION")) {
                        out.send(&topic, &cfg, true);
                    }
                    last = None;
                }
                was_connected = connected;
                if connected && last.is_none_or(|t| t.elapsed() >= every) {
                    last = Some(Instant::now());
                    let state = state_doc(&st, &node, per_min);
                    out.send(&json_topic(&node, JSON_STATE), &state, true);
                    out.send(&json_topic(&node, JSON_METRICS), &metrics_doc(&st, &state), false);
                }
                let stop = async {
                    smol::Timer::after(Duration::from_secs(1)).await;
                    false
                }
                .or(async {
                    sd.wait().await;
                    true
                })
                .await;
                if stop {
                    break;
                }
            }
        });
        Ok(())
    }
}

/// The broker connection plus the mirror's counters.
#[derive(Clone)]
struct Out {
    mqtt: Arc<MqttBus>,
    published: Counter,
    dropped: Counter,
}

impl Out {
    fn new(mqtt: Arc<MqttBus>, registry: &Registry) -> Out {
        Out {
            mqtt,
            published: registry.counter(
                "gatewarden_mqtt_json_published_total",
                "JSON mirror messages (alerts, metrics, state, Home Assistant discovery) handed to the MQTT client.",
                &[],
            ),
            dropped: registry.counter(
                "gatewarden_mqtt_json_dropped_total",
                "JSON mirror messages not published: its queue was full or the broker unreachable.",
                &[],
            ),
        }
    }

    fn send(&self, topic: &str, doc: &impl serde::Serialize, retain: bool) {
        let bytes = match serde_json::to_vec(doc) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, topic, "JSON mirror document not serializable");
                self.dropped.inc();
                return;
            }
        };
        if self.mqtt.publish_raw(topic, bytes, retain) {
            self.published.inc();
        } else {
            self.dropped.inc();
        }
    }
}

/// Nodes heard from in the last 30 s and not known to be offline, this one
/// always (it is publishing; its own entry appears with its first sample).
fn nodes_online(st: &MonitorState) -> u64 {
    let now = gatewarden_core::clock::unix_now_ns() / 1_000_000_000;
    let others = st
        .nodes()
        .iter()
        .filter(|(name, n)| **name != st.node && n.online != Some(false) && n.last_seen + 30 >= now)
        .count();
    others as u64 + 1
}

fn state_doc(st: &MonitorState, node: &str, alerts_per_min: u64) -> MirrorState {
    MirrorState {
        node: node.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        nodes_online: nodes_online(st),
        blocked_sources: st.blocks().len() as u64,
        alerts_per_min,
        alerts_total: st.alerts_total(),
        updated: gatewarden_core::clock::rfc3339(gatewarden_core::clock::unix_now_ns()),
    }
}

fn metrics_doc(st: &MonitorState, s: &MirrorState) -> MirrorMetrics {
    let snap = st.registry.snapshot();
    let counters =
        METRIC_NAMES.iter().map(|n| (n.to_string(), serde_json::json!(snap.get(*n).copied().unwrap_or(0.0)))).collect();
    MirrorMetrics {
        node: s.node.clone(),
        timestamp: s.updated.clone(),
        uptime_s: st.uptime_s(),
        alerts_total: s.alerts_total,
        alerts_per_min: s.alerts_per_min,
        blocked_sources: s.blocked_sources,
        nodes_online: s.nodes_online,
        counters,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatewarden_proto::messages::{Alert, AttackKind, Severity};
    use gatewarden_proto::role::{Role, RoleSource};

    #[test]
    fn the_tap_gets_stored_alerts_and_drops_and_counts_rather_than_wait() {
        let reg = Registry::new();
        let st = MonitorState::new(Role::All, RoleSource::Flag, "gw".into(), reg.clone());
        let rx = st.tap_alerts(2).unwrap();
        assert!(st.tap_alerts(2).is_none(), "one tap per process");
        for i in 0..3 {
            st.record_alert(Alert::about_system("gw", AttackKind::System, Severity::Low, i, "s", "r".into()));
        }
        assert_eq!(rx.len(), 2);
        assert_eq!(reg.snapshot()["gatewarden_mqtt_json_dropped_total"], 1.0);
        assert_eq!(st.alerts_total(), 3, "the store is not held up by the mirror");
        let doc = state_doc(&st, "gw", 3);
        assert_eq!((doc.nodes_online, doc.alerts_total, doc.alerts_per_min), (1, 3, 3), "this node counts as online");
        let m = metrics_doc(&st, &doc);
        assert_eq!(m.counters.len(), METRIC_NAMES.len());
        assert_eq!(m.counters["gatewarden_mqtt_json_dropped_total"], 1.0);
    }
}
