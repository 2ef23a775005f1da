//! `[http]`, `[link]` and `[monitor]`: the status page and API, link-health
//! probes, where alerts are kept. The binary composes them into its TOML file
//! (same keys) and validates them with the rest.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Default for `http.max_token_ttl_s`: 90 days, long enough for a wallboard,
/// short enough that a leaked token does not outlive a season.
pub const DEFAULT_MAX_TOKEN_TTL_S: u64 = 90 * 86_400;
/// Largest upload request body (base64 grows the files by a third).
pub const MAX_UPLOAD_BODY: u64 = (gatewarden_proto::messages::MAX_MODEL_BYTES as u64) * 4 / 3 + 8 * 1024;

/// The status page and JSON API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address and port to listen on; loopback by default so a fresh box exposes nothing.
    pub listen: String,
    /// Let anyone read the JSON API without a token (writes always need an admin token).
    pub public_status: bool,
    /// PEM (PKCS#8) P-384 key that signs access tokens; empty: `<monitor.data_dir>/jwt-es384.pem`,
    /// created on first use. Without either, tokens live only as long as the process.
    pub jwt_key: PathBuf,
    /// Requests per second each client may make to the API (token bucket).
    pub rate_limit_per_s: u32,
    /// Requests a client may burst above the rate.
    pub rate_limit_burst: u32,
    /// Longest lifetime (`exp - iat`) of an accepted access token, in seconds; longer ones are
    /// refused, and `gatewarden token issue --ttl` will not make them. A leaked token dies with it.
    #[serde(deserialize_with = "gatewarden_core::duration::secs")]
    pub max_token_ttl_s: u64,
    /// Host names (or addresses) the pages and API answer to, besides the
    /// address a client connected to, `localhost`, the node id and the listen
    /// address; any other `Host` gets 421. This is what stops DNS rebinding:
    /// a hostile page whose name resolves to this node still sends its own
    /// name as `Host`. `/healthz` and `/metrics` answer any `Host`.
    pub allowed_hosts: Vec<String>,
    /// Largest request head (request line plus headers); larger gets 431.
    pub max_header_bytes: usize,
    /// Most header fields in one request; more gets 431.
    pub max_headers: usize,
    /// Largest JSON body of an API write (policy, settings, alert actions); larger gets 413,
    /// decided from `Content-Length` before anything is read.
    pub max_body_bytes: u64,
    /// Largest model upload (`POST /api/model`, base64 JSON), also checked before reading.
    pub max_upload_bytes: u64,
    /// The whole request head must arrive within this, counted from when the
    /// server starts waiting for it (slowloris).
    #[serde(deserialize_with = "gatewarden_core::duration::millis")]
    pub header_timeout_ms: u64,
    /// A connection with no request in progress that sends nothing for this long is closed.
    #[serde(deserialize_with = "gatewarden_core::duration::millis")]
    pub idle_timeout_ms: u64,
    /// A request body must arrive completely within this (slow bodies get 408).
    #[serde(deserialize_with = "gatewarden_core::duration::millis")]
    pub body_timeout_ms: u64,
    /// A response (or live event) that the client does not read for this long closes the connection.
    #[serde(deserialize_with = "gatewarden_core::duration::millis")]
    pub send_timeout_ms: u64,
    /// Most open connections; over it a new one gets 503 and is closed at once
    /// (also capped below the process's open-file limit).
    pub max_connections: usize,
    /// Most open connections from one client address; over it: 503 and closed at once.
    pub max_connections_per_client: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8080".into(),
            public_status: false,
            jwt_key: PathBuf::new(),
            rate_limit_per_s: 50,
            rate_limit_burst: 100,
            max_token_ttl_s: DEFAULT_MAX_TOKEN_TTL_S,
            allowed_hosts: Vec::new(),
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            max_body_bytes: 64 * 1024,
            max_upload_bytes: MAX_UPLOAD_BODY,
            header_timeout_ms: 10_000,
            idle_timeout_ms: 5_000,
            body_timeout_ms: 30_000,
            send_timeout_ms: 30_000,
            max_connections: 512,
            max_connections_per_client: 32,
        }
    }
}

/// Link-health probes: every node can echo, the monitor probes its peers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinkConfig {
    /// UDP `addr:port` where this node echoes the monitor's probes; empty: off.
    pub listen: String,
    /// Monitor only: peers to probe, `name=addr:port` (name = the node id, so its data rate is matched).
    pub peers: Vec<String>,
    /// Time between probes to each peer.
    #[serde(deserialize_with = "gatewarden_core::duration::millis")]
    pub probe_interval_ms: u64,
    /// A probe not answered within this is lost.
    #[serde(deserialize_with = "gatewarden_core::duration::millis")]
    pub timeout_ms: u64,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig { listen: String::new(), peers: Vec::new(), probe_interval_ms: 100, timeout_ms: 1000 }
    }
}

/// Where the monitor keeps alerts and their state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorConfig {
    /// Directory of `alerts.json` (EVE JSON lines), its rotations and `alert-state.json`;
    /// empty keeps alerts in memory only (lost on restart).
    pub data_dir: PathBuf,
    /// Size at which `alerts.json` rotates.
    pub alert_log_max_bytes: u64,
    /// Rotated alert files kept (`alerts.json.1` … `.N`).
    pub alert_log_keep: usize,
    /// Most recent alerts held in memory for the page and quick queries.
    pub alerts_in_memory: usize,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            data_dir: PathBuf::new(),
            alert_log_max_bytes: 16 << 20,
            alert_log_keep: 4,
            alerts_in_memory: 10_000,
        }
    }
}
