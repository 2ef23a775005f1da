//! Who a node is: its id (the certificate CN, the MQTT user and a topic
//! level, so a strict character set) and what its certificate lets it do.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Checks a node id the way `config.node_id` is checked (it becomes an MQTT topic level and an ACL user).
pub fn valid_node_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// What a certificate allows its holder to do; stored in the subject's OU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertRole {
    /// Publishes flow batches and alerts; receives verdicts and policy.
    Router,
    /// Receives flow batches; publishes verdicts and alerts.
    Detector,
    /// Receives everything; publishes policy updates.
    Monitor,
    /// A person with `gatewarden ctl`: may send control commands, nothing on MQTT but status.
    Operator,
    /// The Mosquitto server certificate.
    Broker,
    /// Home Assistant, Node-RED or another integration: may only read the
    /// JSON mirror (`gatewarden/v1/+/json/#`), Home Assistant discovery
    /// (`homeassistant/#`) and nodes' online status; publishes nothing.
    Integration,
}

impl CertRole {
    /// The OU string.
    pub fn as_str(self) -> &'static str {
        match self {
            CertRole::Router => "router",
            CertRole::Detector => "detector",
            CertRole::Monitor => "monitor",
            CertRole::Operator => "operator",
            CertRole::Broker => "broker",
            CertRole::Integration => "integration",
        }
    }

    /// Parses an OU string.
    pub fn parse(s: &str) -> Option<CertRole> {
        Some(match s {
            "router" => CertRole::Router,
            "detector" => CertRole::Detector,
            "monitor" => CertRole::Monitor,
            "operator" => CertRole::Operator,
            "broker" => CertRole::Broker,
            "integration" => CertRole::Integration,
            _ => return None,
        })
    }
}

impl fmt::Display for CertRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
