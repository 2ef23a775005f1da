//! `[flow]`: the flow table's caps and timeouts and the batches it emits.
//! The binary composes this into its TOML file (same keys).

use serde::{Deserialize, Serialize};

/// The flow table and the batches it emits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowConfig {
    /// Hard cap on concurrent flows; beyond it the least recently seen flow is evicted.
    pub max_flows: usize,
    /// A flow with no packets for this long is finished.
    #[serde(deserialize_with = "gatewarden_core::duration::secs")]
    pub idle_timeout_s: u64,
    /// A flow older than this is exported and restarted, so long flows are seen.
    #[serde(deserialize_with = "gatewarden_core::duration::secs")]
    pub active_timeout_s: u64,
    /// How often the router emits a FlowBatch.
    #[serde(deserialize_with = "gatewarden_core::duration::millis")]
    pub batch_interval_ms: u64,
    /// Most flow records in one FlowBatch.
    pub max_batch_flows: usize,
    /// Most hosts whose damped statistics are kept (least recently seen forgotten first).
    pub max_hosts: usize,
    /// Most (source, destination) pairs whose statistics are kept by dataset
    /// extraction (`gatewarden features`), whose rows carry pair columns. The
    /// router keeps none: the model reads host features only.
    pub max_pairs: usize,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            max_flows: 262_144,
            idle_timeout_s: 60,
            active_timeout_s: 300,
            batch_interval_ms: 100,
            max_batch_flows: 4096,
            max_hosts: 16_384,
            max_pairs: 65_536,
        }
    }
}
