//! `[capture]`: where the router captures and how much of each packet it
//! keeps. The binary composes it into its TOML file (same keys).

use serde::{Deserialize, Serialize};

/// Live capture on the router.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    /// Interface to capture on (the LAN side); empty means no live capture.
    pub interface: String,
    /// Bytes kept of each packet; headers only need 128.
    pub snap_len: u32,
    /// Put the interface in promiscuous mode.
    pub promiscuous: bool,
    /// `run --replay FILE` only: play the file at its recorded pace and stamp
    /// each packet with the wall clock, as a live capture would (a fleet of
    /// routers fed from files, end-to-end latency measured against real time).
    /// Off: the file is read as fast as possible with its recorded times.
    pub replay_live: bool,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig { interface: String::new(), snap_len: 128, promiscuous: false, replay_live: false }
    }
}
