//! `[bus]` and `[mqtt]`: the in-process channels and the MQTT node bus
//! (broker, this node's certificate, the store-and-forward spool). The binary
//! composes them into its TOML file (same keys) and validates them with the rest.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Message passing between roles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    /// Capacity of each in-process channel; when full, messages are dropped and counted.
    pub channel_capacity: usize,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig { channel_capacity: 1024 }
    }
}

/// The MQTT node bus: broker, this node's certificate, and the store-and-forward spool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Broker `host:port` (Mosquitto's TLS listener); empty keeps every role on in-process channels.
    pub broker: String,
    /// The fleet CA certificate (PEM) from `gatewarden pki init`.
    pub ca: PathBuf,
    /// This node's certificate (PEM) from `gatewarden pki issue`; its CN must equal `node_id`.
    pub cert: PathBuf,
    /// This node's private key (PEM, PKCS#8).
    pub key: PathBuf,
    /// Directory of the outbox spool and the channel audit log.
    pub spool_dir: PathBuf,
    /// Most unacknowledged messages kept; beyond it the oldest are dropped and counted.
    pub spool_max_messages: usize,
    /// Most bytes of unacknowledged messages kept.
    pub spool_max_bytes: usize,
    /// An unacknowledged message is sent again after this long.
    #[serde(deserialize_with = "gatewarden_core::duration::millis")]
    pub resend_after_ms: u64,
    /// How often the secure channel replaces its ephemeral ECDH key.
    #[serde(deserialize_with = "gatewarden_core::duration::secs")]
    pub rekey_interval_s: u64,
    /// Largest clock difference accepted on a sealed message.
    #[serde(deserialize_with = "gatewarden_core::duration::secs")]
    pub max_clock_skew_s: u64,
    /// MQTT keep-alive; the broker publishes the last will after 1.5 times this.
    #[serde(deserialize_with = "gatewarden_core::duration::secs")]
    pub keepalive_s: u64,
    /// Size at which the channel audit log rotates.
    pub audit_log_max_bytes: u64,
    /// Rotated audit logs kept.
    pub audit_log_keep: usize,
    /// Mosquitto's log file, on the node hosting the broker (monitor or all):
    /// refusals only the broker sees (no certificate, ACL denials) are counted
    /// and alerted (`bus/broker_log.rs`). Empty: not watched.
    pub broker_log: PathBuf,
    /// Also publish alerts (Suricata EVE), key numbers and a retained state
    /// as plain JSON under `gatewarden/v1/<node>/json/`, and Home Assistant
    /// discovery configs under `homeassistant/` (`bus/json_mirror.rs`), for
    /// integrations holding an `integration` certificate (`gatewarden pki
    /// issue NAME --role integration`), which may read only these. Off by
    /// default; takes effect on a node running the monitor (monitor or all).
    pub json_mirror: bool,
    /// How often the JSON mirror publishes `json/metrics` and `json/state`.
    #[serde(deserialize_with = "gatewarden_core::duration::secs")]
    pub json_interval_s: u64,
    /// Detector only: take flow batches through the MQTT shared subscription
    /// `$share/<group>/gatewarden/v1/+/flow_batch`, so several detectors with
    /// the same group split the fleet's batches instead of each analysing all
    /// of them (Mosquitto >= 1.6; RabbitMQ 3.x's MQTT plugin has no shared
    /// subscriptions). Empty (default): every detector takes every batch.
    pub shared_group: String,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            broker: String::new(),
            ca: PathBuf::from("/etc/gatewarden/pki/ca.crt"),
            cert: PathBuf::from("/etc/gatewarden/pki/node.crt"),
            key: PathBuf::from("/etc/gatewarden/pki/node.key"),
            spool_dir: PathBuf::from("/var/lib/gatewarden/spool"),
            spool_max_messages: 100_000,
            spool_max_bytes: 64 << 20,
            resend_after_ms: 2000,
            rekey_interval_s: 600,
            max_clock_skew_s: 30,
            keepalive_s: 10,
            audit_log_max_bytes: 1 << 20,
            audit_log_keep: 5,
            broker_log: PathBuf::new(),
            json_mirror: false,
            json_interval_s: 10,
            shared_group: String::new(),
        }
    }
}

impl MqttConfig {
    /// Whether the node bus is configured.
    pub fn enabled(&self) -> bool {
        !self.broker.is_empty()
    }

    /// Whether `shared_group` is usable as one MQTT topic level (empty is: off).
    pub fn shared_group_valid(&self) -> bool {
        let g = &self.shared_group;
        g.len() <= 64 && g.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    }
}
