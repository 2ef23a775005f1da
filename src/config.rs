//! The one TOML config file: every key has a default, unknown keys are
//! errors, and validation names the key, the bad value and what is allowed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use gatewarden_proto::role::Role;

/// Where the appliance images put the config file.
pub const DEFAULT_PATH: &str = "/etc/gatewarden/gatewarden.toml";
/// The config an appliance composed for its role at boot (`S50gatewarden`),
/// read when [`DEFAULT_PATH`] does not exist: an operator's command on the
/// board then knows the LAN, the allowlist and the broker the running
/// router protects, instead of built-in defaults that know none of them.
pub const RUNNING_PATH: &str = "/run/gatewarden/gatewarden.toml";

/// The whole effective configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The role, when neither flag, environment nor kernel command line set one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// This node's name on the bus and in alerts.
    pub node_id: String,
    /// The status page and JSON API.
    pub http: HttpConfig,
    /// Log level and format.
    pub log: LogConfig,
    /// In-process and inter-node message passing.
    pub bus: BusConfig,
    /// The MQTT node bus (mutual TLS to Mosquitto) and its secure channel; off while `broker` is empty.
    pub mqtt: MqttConfig,
    /// The `gatewarden ctl` operator endpoint.
    pub ctl: CtlConfig,
    /// Live packet capture on the router.
    pub capture: CaptureConfig,
    /// The flow table.
    pub flow: FlowConfig,
    /// Detector thresholds.
    pub detector: DetectorConfig,
    /// The response policy: per attack kind block, alert or ignore, and the
    /// evidence a block needs (owned by `detect::response`).
    pub response: crate::detect::response::ResponseConfig,
    /// nftables enforcement on the router.
    pub enforce: EnforceConfig,
    /// Group policies: state directory, fixed groups and rules, suggestion limits.
    pub policy: crate::policy::PolicyConfig,
    /// The monitor's alert store.
    pub monitor: MonitorConfig,
    /// Link-health probes between nodes.
    pub link: LinkConfig,
    /// Per-alert evidence pcaps: what the router keeps of each flow, what the monitor stores.
    pub evidence: crate::flow::evidence::EvidenceConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            role: None,
            node_id: default_node_id(),
            http: HttpConfig::default(),
            log: LogConfig::default(),
            bus: BusConfig::default(),
            mqtt: MqttConfig::default(),
            ctl: CtlConfig::default(),
            capture: CaptureConfig::default(),
            flow: FlowConfig::default(),
            detector: DetectorConfig::default(),
            response: crate::detect::response::ResponseConfig::default(),
            enforce: EnforceConfig::default(),
            policy: crate::policy::PolicyConfig::default(),
            monitor: MonitorConfig::default(),
            link: LinkConfig::default(),
            evidence: crate::flow::evidence::EvidenceConfig::default(),
        }
    }
}

fn default_node_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "gatewarden".to_string())
}

pub use gatewarden_monitor::config::{HttpConfig, LinkConfig, MonitorConfig};

/// How logs are written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A level, or levels per target (`RUST_LOG` syntax without span and
    /// field directives), e.g. `info` or `gatewarden=debug,warn`.
    pub level: String,
    /// `human` for people, `json` for log shippers.
    pub format: LogFormat,
    /// Write log lines to this file (appended, created with its directory) instead of
    /// stderr; `gatewarden run` reopens it on SIGHUP, so logrotate can rename it and send
    /// `kill -HUP`. Empty: stderr (syslog on the appliance).
    pub file: PathBuf,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: "info".into(), format: LogFormat::Human, file: PathBuf::new() }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Coloured, aligned lines for a terminal.
    Human,
    /// One JSON object per line.
    Json,
}

pub use gatewarden_bus::config::{BusConfig, MqttConfig};

/// The operator endpoint for `gatewarden ctl` (TCP, same handshake and envelope as the bus).
///
/// Anyone on the LAN can connect before proving who they are, so connections
/// still in the handshake ("pre-auth") are bounded separately from operator
/// sessions: the whole handshake has a deadline, pre-auth connections have a
/// total and a per-address cap (when the total is reached the oldest is
/// dropped for the newcomer, so held connections cannot lock operators out),
/// and failed handshakes become one alert per address per `alert_interval_s`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CtlConfig {
    /// `addr:port` to listen on; empty disables it. Needs `[mqtt]` ca/cert/key.
    pub listen: String,
    /// The whole handshake (hello, our answer, the first request) must finish
    /// within this time, however slowly the bytes trickle in.
    #[serde(deserialize_with = "gatewarden_core::duration::millis")]
    pub handshake_timeout_ms: u64,
    /// Most connections in the handshake at once; a new one beyond it
    /// replaces the oldest (an operator's handshake takes milliseconds).
    pub max_preauth: usize,
    /// Most connections in the handshake from one address (an IPv6 /64 counts as one);
    /// beyond it the address's oldest is dropped for the newcomer.
    pub max_preauth_per_address: usize,
    /// Most authenticated operator sessions at once (never taken by pre-auth connections).
    pub max_sessions: usize,
    /// An operator session with no request for this long is closed.
    #[serde(deserialize_with = "gatewarden_core::duration::secs")]
    pub session_idle_timeout_s: u64,
    /// At most one failed-handshake alert per address in this time (the
    /// first at once, then one carrying the count).
    #[serde(deserialize_with = "gatewarden_core::duration::secs")]
    pub alert_interval_s: u64,
    /// Most addresses whose failed handshakes are counted separately; beyond
    /// it they share one "other addresses" count (bounded memory).
    pub max_alert_addresses: usize,
}

impl Default for CtlConfig {
    fn default() -> Self {
        CtlConfig {
            listen: String::new(),
            handshake_timeout_ms: 5_000,
            max_preauth: 64,
            max_preauth_per_address: 4,
            max_sessions: 8,
            session_idle_timeout_s: 30,
            alert_interval_s: 60,
            max_alert_addresses: 1024,
        }
    }
}

pub use gatewarden_capture::config::CaptureConfig;

pub use gatewarden_flow::config::FlowConfig;

pub use gatewarden_detect::config::{DetectorConfig, DEFAULT_HOME_NET};

pub use gatewarden_enforce::config::EnforceConfig;

/// "2^31 addresses (half of IPv4)": how much of an address space `covered` is.
fn describe_share(covered: u128, bits: u32) -> String {
    let log2 = 127 - covered.max(1).leading_zeros();
    let share = covered as f64 / 2f64.powi(bits as i32);
    format!("about 2^{log2} addresses ({:.3} % of the {}-bit space)", share * 100.0, bits)
}

fn valid_host_port(s: &str) -> bool {
    if s.parse::<SocketAddr>().is_ok() {
        return true;
    }
    match s.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && port.parse::<u16>().is_ok_and(|p| p > 0)
                && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        }
        None => false,
    }
}

/// One invalid value, with what would have been accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{key}` = {value}: {allowed}")]
pub struct InvalidValue {
    /// Dotted key path, e.g. `flow.max_flows`.
    pub key: String,
    /// The value as written.
    pub value: String,
    /// What is allowed instead.
    pub allowed: String,
}

/// Why a config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}. Create it, or pass --config with another path")]
    Read {
        /// The path tried.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed, has an unknown key, or a value of the wrong type.
    #[error("config file {path}: {message}Run `gatewarden config show` to see every key with its default.")]
    Parse {
        /// The path read.
        path: PathBuf,
        /// toml's message, which names the line and key.
        message: String,
    },
    /// Values that parsed but are out of range.
    #[error("config file {path} has {} invalid value(s):\n{}", .errors.len(), list(.errors))]
    Invalid {
        /// The path read.
        path: PathBuf,
        /// Each invalid value.
        errors: Vec<InvalidValue>,
    },
}

fn list(errors: &[InvalidValue]) -> String {
    errors.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n")
}

impl Config {
    /// Parses TOML text; `path` is only used in messages.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
        let errors = config.validate();
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid { path: path.to_path_buf(), errors })
        }
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Config::from_toml(&text, path)
    }

    /// Loads `path` if given; otherwise the default path if it exists, else the defaults.
    ///
    /// An explicitly named file that is missing is an error: the operator
    /// asked for it. The default path being absent is normal on a laptop.
    pub fn load_or_default(path: Option<&Path>) -> Result<(Config, Option<PathBuf>), ConfigError> {
        match path {
            Some(p) => Ok((Config::load(p)?, Some(p.to_path_buf()))),
            None => Config::load_first_existing(&[Path::new(DEFAULT_PATH), Path::new(RUNNING_PATH)]),
        }
    }

    /// The first of `paths` that exists, loaded; built-in defaults when none does.
    fn load_first_existing(paths: &[&Path]) -> Result<(Config, Option<PathBuf>), ConfigError> {
        match paths.iter().find(|p| p.exists()) {
            Some(p) => Ok((Config::load(p)?, Some(p.to_path_buf()))),
            None => Ok((Config::default(), None)),
        }
    }

    /// Every value that is out of range, each with what is allowed.
    pub fn validate(&self) -> Vec<InvalidValue> {
        let mut errors = Vec::new();
        let mut bad = |key: &str, value: String, allowed: &str| {
            errors.push(InvalidValue { key: key.into(), value, allowed: allowed.into() });
        };
        if self.node_id.is_empty()
            || self.node_id.len() > 64
            || !self.node_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bad(
                "node_id",
                format!("{:?}", self.node_id),
                "1 to 64 characters of A-Z, a-z, 0-9, '-' or '_' (it becomes part of MQTT topics)",
            );
        }
        if self.http.listen.parse::<SocketAddr>().is_err() {
            bad(
                "http.listen",
                format!("{:?}", self.http.listen),
                "an address and port such as \"127.0.0.1:8080\" or \"[::1]:8080\"",
            );
        }
        if self.http.rate_limit_per_s == 0 || self.http.rate_limit_burst == 0 {
            bad(
                "http.rate_limit_per_s/rate_limit_burst",
                format!("{}/{}", self.http.rate_limit_per_s, self.http.rate_limit_burst),
                "at least 1 request per second and a burst of at least 1",
            );
        }
        if !(60..=crate::monitor::auth::MAX_TTL_S).contains(&self.http.max_token_ttl_s) {
            bad("http.max_token_ttl_s", self.http.max_token_ttl_s.to_string(), "60 (a minute) to 31622400 (366 days)");
        }
        let h = &self.http;
        for host in &h.allowed_hosts {
            if host.is_empty()
                || host.len() > 253
                || !host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-_:[]".contains(&b))
            {
                bad(
                    "http.allowed_hosts",
                    format!("{host:?}"),
                    "host names or IP addresses, e.g. [\"gateway.lan\", \"192.0.2.1\"]",
                );
            }
        }
        if !(4096..=1 << 20).contains(&h.max_header_bytes) || !(8..=1000).contains(&h.max_headers) {
            bad(
                "http.max_header_bytes/max_headers",
                format!("{}/{}", h.max_header_bytes, h.max_headers),
                "4096 to 1048576 bytes of request head and 8 to 1000 header fields",
            );
        }
        if !(1024..=1 << 20).contains(&h.max_body_bytes) {
            bad("http.max_body_bytes", h.max_body_bytes.to_string(), "1024 to 1048576 bytes");
        }
        if !(1024..=64 << 20).contains(&h.max_upload_bytes) {
            bad("http.max_upload_bytes", h.max_upload_bytes.to_string(), "1024 bytes to 64 MiB");
        }
        for (key, ms) in [
            ("http.header_timeout_ms", h.header_timeout_ms),
            ("http.idle_timeout_ms", h.idle_timeout_ms),
            ("http.body_timeout_ms", h.body_timeout_ms),
            ("http.send_timeout_ms", h.send_timeout_ms),
        ] {
            if !(100..=600_000).contains(&ms) {
                bad(key, ms.to_string(), "100 to 600000 ms");
            }
        }
        if !(1..=100_000).contains(&h.max_connections)
            || !(1..=100_000).contains(&h.max_connections_per_client)
            || h.max_connections_per_client > h.max_connections
        {
            bad(
                "http.max_connections/max_connections_per_client",
                format!("{}/{}", h.max_connections, h.max_connections_per_client),
                "1 to 100000 connections, and per client no more than in total",
            );
        }
        if !self.link.listen.is_empty() && self.link.listen.parse::<SocketAddr>().is_err() {
            bad("link.listen", format!("{:?}", self.link.listen), "a UDP address and port such as \"0.0.0.0:7946\"");
        }
        for p in &self.link.peers {
            if crate::monitor::link::parse_peer(p).is_err() {
                bad("link.peers", format!("{p:?}"), "name=address:port, e.g. \"router=192.0.2.1:7946\"");
            }
        }
        if !(10..=10_000).contains(&self.link.probe_interval_ms) || !(50..=60_000).contains(&self.link.timeout_ms) {
            bad(
                "link.probe_interval_ms/timeout_ms",
                format!("{}/{}", self.link.probe_interval_ms, self.link.timeout_ms),
                "probe every 10 to 10000 ms, time out after 50 to 60000 ms",
            );
        }
        if self.monitor.alert_log_max_bytes < 4096 {
            bad("monitor.alert_log_max_bytes", self.monitor.alert_log_max_bytes.to_string(), "at least 4096 bytes");
        }
        if !(1..=1_000_000).contains(&self.monitor.alerts_in_memory) {
            bad("monitor.alerts_in_memory", self.monitor.alerts_in_memory.to_string(), "1 to 1000000 alerts");
        }
        for (key, value, allowed) in self.evidence.problems() {
            bad(key, value, &allowed);
        }
        if let Err(e) = crate::log_filter::parse_filter(&self.log.level) {
            bad(
                "log.level",
                format!("{:?}", self.log.level),
                &format!(
                    "a level (error, warn, info, debug, trace, off) or levels per target such as \"gatewarden=debug,warn\": {e}"
                ),
            );
        }
        // Each of the bus's seven channels allocates every slot at start (up to
        // 216 bytes each): a million took ~0.7 GB of a 1-2 GB board before
        // the first packet.
        if !(1..=65_536).contains(&self.bus.channel_capacity) {
            bad(
                "bus.channel_capacity",
                self.bus.channel_capacity.to_string(),
                "1 to 65536 messages (each channel allocates all of them at start)",
            );
        }
        let m = &self.mqtt;
        if !m.broker.is_empty() && !valid_host_port(&m.broker) {
            bad(
                "mqtt.broker",
                format!("{:?}", m.broker),
                "host:port such as \"monitor.lan:8883\" or \"127.0.0.1:8883\", or \"\" for none",
            );
        }
        for (key, p) in
            [("mqtt.ca", &m.ca), ("mqtt.cert", &m.cert), ("mqtt.key", &m.key), ("mqtt.spool_dir", &m.spool_dir)]
        {
            if p.as_os_str().is_empty() {
                bad(key, "\"\"".into(), "a file path");
            }
        }
        if !(1..=10_000_000).contains(&m.spool_max_messages) {
            bad("mqtt.spool_max_messages", m.spool_max_messages.to_string(), "1 to 10000000 messages");
        }
        if !(65_536..=(16usize << 30)).contains(&m.spool_max_bytes) {
            bad("mqtt.spool_max_bytes", m.spool_max_bytes.to_string(), "64 KiB (65536) to 16 GiB");
        }
        if !m.shared_group_valid() {
            bad(
                "mqtt.shared_group",
                format!("{:?}", m.shared_group),
                "letters, digits, - and _ (at most 64), or \"\" for none",
            );
        }
        if !(100..=600_000).contains(&m.resend_after_ms) {
            bad("mqtt.resend_after_ms", m.resend_after_ms.to_string(), "100 to 600000 milliseconds");
        }
        if !(10..=86_400).contains(&m.rekey_interval_s) {
            bad("mqtt.rekey_interval_s", m.rekey_interval_s.to_string(), "10 to 86400 seconds");
        }
        if !(1..=3_600).contains(&m.max_clock_skew_s) {
            bad(
                "mqtt.max_clock_skew_s",
                m.max_clock_skew_s.to_string(),
                "1 to 3600 seconds (keep node clocks in sync with NTP)",
            );
        }
        if !(5..=3_600).contains(&m.keepalive_s) {
            bad("mqtt.keepalive_s", m.keepalive_s.to_string(), "5 to 3600 seconds");
        }
        if !(4096..=(1u64 << 30)).contains(&m.audit_log_max_bytes) {
            bad("mqtt.audit_log_max_bytes", m.audit_log_max_bytes.to_string(), "4096 to 1073741824 bytes");
        }
        if m.audit_log_keep > 100 {
            bad("mqtt.audit_log_keep", m.audit_log_keep.to_string(), "0 to 100 rotated files");
        }
        if m.json_mirror && m.broker.is_empty() {
            bad("mqtt.json_mirror", "true".into(), "false, or set mqtt.broker: the mirror is published to the broker");
        }
        if !(1..=3_600).contains(&m.json_interval_s) {
            bad("mqtt.json_interval_s", m.json_interval_s.to_string(), "1 to 3600 seconds");
        }
        if !self.ctl.listen.is_empty() && self.ctl.listen.parse::<SocketAddr>().is_err() {
            bad(
                "ctl.listen",
                format!("{:?}", self.ctl.listen),
                "an address and port such as \"0.0.0.0:7443\", or \"\" for off",
            );
        }
        let c = &self.ctl;
        if !(200..=120_000).contains(&c.handshake_timeout_ms) {
            bad(
                "ctl.handshake_timeout_ms",
                c.handshake_timeout_ms.to_string(),
                "200 to 120000 milliseconds (an operator's handshake takes well under a second)",
            );
        }
        if !(1..=4096).contains(&c.max_preauth) {
            bad("ctl.max_preauth", c.max_preauth.to_string(), "1 to 4096 connections");
        }
        if c.max_preauth_per_address == 0 || c.max_preauth_per_address > c.max_preauth {
            bad(
                "ctl.max_preauth_per_address",
                c.max_preauth_per_address.to_string(),
                "1 to ctl.max_preauth connections",
            );
        }
        if !(1..=1024).contains(&c.max_sessions) {
            bad("ctl.max_sessions", c.max_sessions.to_string(), "1 to 1024 sessions");
        }
        if !(1..=3_600).contains(&c.session_idle_timeout_s) {
            bad("ctl.session_idle_timeout_s", c.session_idle_timeout_s.to_string(), "1 to 3600 seconds");
        }
        if !(1..=86_400).contains(&c.alert_interval_s) {
            bad("ctl.alert_interval_s", c.alert_interval_s.to_string(), "1 to 86400 seconds");
        }
        if !(1..=65_536).contains(&c.max_alert_addresses) {
            bad("ctl.max_alert_addresses", c.max_alert_addresses.to_string(), "1 to 65536 addresses");
        }
        if self.capture.interface.len() > 15 || self.capture.interface.contains(['/', ' ']) {
            bad(
                "capture.interface",
                format!("{:?}", self.capture.interface),
                "a Linux interface name (at most 15 characters, no '/' or spaces), or \"\" for none",
            );
        }
        if !(128..=65_535).contains(&self.capture.snap_len) {
            bad("capture.snap_len", self.capture.snap_len.to_string(), "128 to 65535 bytes");
        }
        if !(2..=1024).contains(&self.capture.ring_blocks) {
            bad("capture.ring_blocks", self.capture.ring_blocks.to_string(), "2 to 1024 blocks");
        }
        let kib = self.capture.ring_block_kib;
        if !(4..=65_536).contains(&kib) || !kib.is_power_of_two() {
            bad("capture.ring_block_kib", kib.to_string(), "a power of two from 4 to 65536 KiB");
        }
        if u64::from(self.capture.ring_blocks) * u64::from(kib) > 262_144 {
            bad(
                "capture.ring_blocks",
                format!("{} × {kib} KiB", self.capture.ring_blocks),
                "at most 256 MiB of ring in all (it is locked in memory)",
            );
        }
        if !(1_000..=16_777_216).contains(&self.flow.max_flows) {
            bad("flow.max_flows", self.flow.max_flows.to_string(), "1000 to 16777216 flows");
        }
        if !(1..=86_400).contains(&self.flow.idle_timeout_s) {
            bad("flow.idle_timeout_s", self.flow.idle_timeout_s.to_string(), "1 to 86400 seconds");
        }
        if self.flow.active_timeout_s < self.flow.idle_timeout_s || self.flow.active_timeout_s > 86_400 {
            bad(
                "flow.active_timeout_s",
                self.flow.active_timeout_s.to_string(),
                "at least flow.idle_timeout_s and at most 86400 seconds",
            );
        }
        if !(10..=60_000).contains(&self.flow.batch_interval_ms) {
            bad("flow.batch_interval_ms", self.flow.batch_interval_ms.to_string(), "10 to 60000 milliseconds");
        }
        if !(1..=65_536).contains(&self.flow.max_batch_flows) {
            bad("flow.max_batch_flows", self.flow.max_batch_flows.to_string(), "1 to 65536 flow records");
        }
        if !(16..=4_194_304).contains(&self.flow.max_hosts) {
            bad("flow.max_hosts", self.flow.max_hosts.to_string(), "16 to 4194304 hosts");
        }
        if !(16..=16_777_216).contains(&self.flow.max_pairs) {
            bad("flow.max_pairs", self.flow.max_pairs.to_string(), "16 to 16777216 pairs");
        }
        let d = &self.detector;
        if !(1..=3_600).contains(&d.window_s) {
            bad("detector.window_s", d.window_s.to_string(), "1 to 3600 seconds");
        }
        for (key, v) in [
            ("detector.scan_distinct_ports", d.scan_distinct_ports),
            ("detector.udp_scan_distinct_ports", d.udp_scan_distinct_ports),
            ("detector.sweep_distinct_hosts", d.sweep_distinct_hosts),
            ("detector.syn_flood_pps", d.syn_flood_pps),
            ("detector.tcp_flood_pps", d.tcp_flood_pps),
            ("detector.udp_flood_pps", d.udp_flood_pps),
            ("detector.icmp_flood_pps", d.icmp_flood_pps),
            ("detector.bruteforce_attempts", d.bruteforce_attempts),
        ] {
            if !(2..=10_000_000).contains(&v) {
                bad(key, v.to_string(), "2 to 10000000 (lower values flag normal traffic)");
            }
        }
        if !(1..=30 * 86_400).contains(&d.block_ttl_s) {
            bad("detector.block_ttl_s", d.block_ttl_s.to_string(), "1 second to 30 days (2592000)");
        }
        if !(2..=10_000).contains(&d.bruteforce_sessions) {
            bad("detector.bruteforce_sessions", d.bruteforce_sessions.to_string(), "2 to 10000 connections");
        }
        if !(1..=3_600).contains(&d.bruteforce_window_s) {
            bad("detector.bruteforce_window_s", d.bruteforce_window_s.to_string(), "1 to 3600 seconds");
        }
        if !(5..=100_000).contains(&d.http_bruteforce_sessions) {
            bad(
                "detector.http_bruteforce_sessions",
                d.http_bruteforce_sessions.to_string(),
                "5 to 100000 sessions (lower values flag a device polling a web page)",
            );
        }
        if !(1..=3_600).contains(&d.http_bruteforce_window_s) {
            bad("detector.http_bruteforce_window_s", d.http_bruteforce_window_s.to_string(), "1 to 3600 seconds");
        }
        if !(8..=4_096).contains(&d.slow_http_connections) {
            bad(
                "detector.slow_http_connections",
                d.slow_http_connections.to_string(),
                "8 to 4096 connections (a browser opens up to 6 per server; 4096 are tracked per source)",
            );
        }
        if !(1..=3_600).contains(&d.slow_http_min_age_s) {
            bad("detector.slow_http_min_age_s", d.slow_http_min_age_s.to_string(), "1 to 3600 seconds");
        }
        if d.slow_http_concurrent != 0 && !(8..=4_096).contains(&d.slow_http_concurrent) {
            bad(
                "detector.slow_http_concurrent",
                d.slow_http_concurrent.to_string(),
                "0 (off) or 8 to 4096 unanswered requests (a browser holds up to 6 per server; 4096 are tracked per source)",
            );
        }
        if !(100..=60_000).contains(&d.slow_http_concurrent_wait_ms) {
            bad(
                "detector.slow_http_concurrent_wait_ms",
                d.slow_http_concurrent_wait_ms.to_string(),
                "100 to 60000 milliseconds (longer than a round trip plus a server's time to first byte)",
            );
        }
        for (key, v) in [
            ("detector.slow_scan_distinct_ports", d.slow_scan_distinct_ports),
            ("detector.slow_scan_distinct_hosts", d.slow_scan_distinct_hosts),
        ] {
            if v != 0 && !(10..=10_000).contains(&v) {
                bad(
                    key,
                    v.to_string(),
                    "0 (off) or 10 to 10000 (devices reach ~10 answered services; the sketch counts up to 10000)",
                );
            }
        }
        let most = crate::detect::long_horizon::distributed_scan::MAX_SOURCES_PER_TARGET as u32;
        if d.distributed_scan_sources != 0 && !(10..=most).contains(&d.distributed_scan_sources) {
            bad(
                "detector.distributed_scan_sources",
                d.distributed_scan_sources.to_string(),
                &format!("0 (off) or 10 to {most} sources ({most} are tracked per target)"),
            );
        }
        if d.slow_guess_sessions != 0 && !(5..=10_000).contains(&d.slow_guess_sessions) {
            bad(
                "detector.slow_guess_sessions",
                d.slow_guess_sessions.to_string(),
                "0 (off) or 5 to 10000 failed sessions in the hour (a person mistypes 1-3 times)",
            );
        }
        if d.lan_mapping_targets != 0 && !(16..=256).contains(&d.lan_mapping_targets) {
            bad(
                "detector.lan_mapping_targets",
                d.lan_mapping_targets.to_string(),
                "0 (off) or 16 to 256 addresses (a /24 sweep asks for 254; a busy hub for a few dozen; 256 are kept per MAC)",
            );
        }
        if !(d.lan_mapping_unanswered_pct.is_finite() && (0.0..=100.0).contains(&d.lan_mapping_unanswered_pct)) {
            bad(
                "detector.lan_mapping_unanswered_pct",
                d.lan_mapping_unanswered_pct.to_string(),
                "a percentage from 0 to 100 (50: most of a sweep's requests find no device)",
            );
        }
        if !(10..=3_600).contains(&d.lan_mapping_window_s) {
            bad("detector.lan_mapping_window_s", d.lan_mapping_window_s.to_string(), "10 to 3600 seconds");
        }
        if !(64..=65_536).contains(&d.model_check_memory_mb) {
            bad(
                "detector.model_check_memory_mb",
                d.model_check_memory_mb.to_string(),
                "64 to 65536 MiB (the model validator's address space; 512 fits the shipped model with room)",
            );
        }
        if !(1..=600).contains(&d.model_check_timeout_s) {
            bad("detector.model_check_timeout_s", d.model_check_timeout_s.to_string(), "1 to 600 seconds");
        }
        if !(1..=1_048_576).contains(&d.model_max_batch) {
            bad("detector.model_max_batch", d.model_max_batch.to_string(), "1 to 1048576 rows");
        }
        if !(d.model_threshold > 0.0 && d.model_threshold <= 1.0) {
            bad("detector.model_threshold", d.model_threshold.to_string(), "above 0, at most 1");
        }
        if !(1..=1_000).contains(&d.model_batches) {
            bad("detector.model_batches", d.model_batches.to_string(), "1 to 1000 batches");
        }
        for (i, entry) in d.home_net.iter().enumerate() {
            if let Err(why) = entry.parse::<gatewarden_core::net::Cidr>() {
                bad(&format!("detector.home_net[{i}]"), entry.clone(), &format!("an address or network: {why}"));
            }
        }
        if d.baseline_warmup_s > 30 * 86_400 {
            bad("detector.baseline_warmup_s", d.baseline_warmup_s.to_string(), "0 to 30 days (2592000)");
        }
        if !(d.baseline_factor >= 1.0 && d.baseline_factor <= 1e6) {
            bad("detector.baseline_factor", d.baseline_factor.to_string(), "1 to 1000000");
        }
        if !(d.baseline_z >= 0.0 && d.baseline_z <= 1e6) {
            bad("detector.baseline_z", d.baseline_z.to_string(), "0 to 1000000");
        }
        if !(d.baseline_min_bps >= 0.0 && d.baseline_min_bps <= 1e12) {
            bad("detector.baseline_min_bps", d.baseline_min_bps.to_string(), "0 to 1e12 bytes per second");
        }
        if !(d.max_verdicts_per_s > 0.0 && d.max_verdicts_per_s <= 1e6) {
            bad("detector.max_verdicts_per_s", d.max_verdicts_per_s.to_string(), "above 0, at most 1000000");
        }
        if !(d.verdict_burst >= 1.0 && d.verdict_burst <= 1e6) {
            bad("detector.verdict_burst", d.verdict_burst.to_string(), "1 to 1000000");
        }
        if !(1..=30 * 86_400).contains(&d.refresh_s) {
            bad("detector.refresh_s", d.refresh_s.to_string(), "1 second to 30 days (2592000)");
        }
        if !(1..=30 * 86_400).contains(&d.incident_close_s) {
            bad("detector.incident_close_s", d.incident_close_s.to_string(), "1 second to 30 days (2592000)");
        }
        for (key, value, allowed) in self.response.problems() {
            bad(key, value, &allowed);
        }
        let e = &self.enforce;
        if !(1..=16_777_216).contains(&e.max_block_elements) {
            bad("enforce.max_block_elements", e.max_block_elements.to_string(), "1 to 16777216 addresses per set");
        }
        for (key, v) in [
            ("enforce.syn_meter_pps", e.syn_meter_pps),
            ("enforce.syn_meter_burst", e.syn_meter_burst),
            ("enforce.syn_meter_dst_pps", e.syn_meter_dst_pps),
        ] {
            if !(1..=10_000_000).contains(&v) {
                bad(key, v.to_string(), "1 to 10000000 packets per second");
            }
        }
        if !(16..=16_777_216).contains(&e.meter_size) {
            bad("enforce.meter_size", e.meter_size.to_string(), "16 to 16777216 tracked addresses");
        }
        if e.escalation_window_s > 365 * 86_400 {
            bad(
                "enforce.escalation_window_s",
                e.escalation_window_s.to_string(),
                "0 (off) to 31536000 seconds (a year)",
            );
        }
        if !(1..=365 * 86_400).contains(&e.max_ttl_s) {
            bad("enforce.max_ttl_s", e.max_ttl_s.to_string(), "1 to 31536000 seconds (a year)");
        }
        for (i, entry) in e.allowlist.iter().enumerate() {
            match entry.parse::<crate::enforce::feeds::Cidr>() {
                Ok(c) if c.prefix == 0 => bad(
                    &format!("enforce.allowlist[{i}]"),
                    format!("{entry:?}"),
                    "a network smaller than the whole address space (a /0 would disable blocking)",
                ),
                Ok(_) => {}
                Err(why) => bad(
                    &format!("enforce.allowlist[{i}]"),
                    format!("{entry:?}"),
                    &format!("an address or CIDR such as \"192.0.2.0/24\" or \"2001:db8::/32\" ({why})"),
                ),
            }
        }
        for (i, entry) in e.never_block.iter().enumerate() {
            if let Err(why) = entry.parse::<crate::enforce::feeds::Cidr>() {
                bad(
                    &format!("enforce.never_block[{i}]"),
                    format!("{entry:?}"),
                    &format!("an address or CIDR such as \"224.0.0.0/4\" or \"fe80::/10\" ({why})"),
                );
            }
        }
        if !e.state_file.is_empty()
            && (e.state_file.ends_with('/') || std::path::Path::new(&e.state_file).file_name().is_none())
        {
            bad(
                "enforce.state_file",
                format!("{:?}", e.state_file),
                "a file path such as \"/var/lib/gatewarden/enforce-state.json\" (or \"\" to keep no state)",
            );
        }
        if !(1..=32).contains(&e.allowlist_limit_v4) {
            bad("enforce.allowlist_limit_v4", e.allowlist_limit_v4.to_string(), "a prefix length from 1 to 32");
        }
        if !(1..=128).contains(&e.allowlist_limit_v6) {
            bad("enforce.allowlist_limit_v6", e.allowlist_limit_v6.to_string(), "a prefix length from 1 to 128");
        }
        if !e.allowlist_force {
            use crate::enforce::expr::Fam;
            let nets: Vec<crate::enforce::feeds::Cidr> = e
                .allowlist
                .iter()
                .filter_map(|s| s.parse().ok())
                .filter(|c: &crate::enforce::feeds::Cidr| c.prefix > 0)
                .collect();
            for (fam, bits, limit, name) in
                [(Fam::V4, 32u32, e.allowlist_limit_v4, "IPv4"), (Fam::V6, 128, e.allowlist_limit_v6, "IPv6")]
            {
                let covered = crate::enforce::feeds::union_size(&nets, fam);
                let allowed = 1u128.checked_shl(bits.saturating_sub(u32::from(limit))).unwrap_or(u128::MAX);
                if covered > allowed {
                    bad(
                        "enforce.allowlist",
                        format!("{} entries covering {}", nets.len(), describe_share(covered, bits)),
                        &format!(
                            "networks that together cover at most one /{limit} of {name} (never-blocked addresses that wide \
                             would switch blocking off); narrow the list, or raise enforce.allowlist_limit_{} or set \
                             enforce.allowlist_force = true in the config file if that is really meant",
                            if fam == Fam::V4 { "v4" } else { "v6" }
                        ),
                    );
                }
            }
        }
        if !(1..=3_600).contains(&e.detector_timeout_s) {
            bad("enforce.detector_timeout_s", e.detector_timeout_s.to_string(), "1 to 3600 seconds");
        }
        for (i, entry) in e.lan_prefixes.iter().enumerate() {
            if let Err(why) = entry.parse::<crate::enforce::feeds::Cidr>() {
                bad(
                    &format!("enforce.lan_prefixes[{i}]"),
                    format!("{entry:?}"),
                    &format!("a network such as \"10.20.0.0/16\" or \"2001:db8:20::/48\" ({why})"),
                );
            }
        }
        if !(60..=30 * 86_400).contains(&e.contain_ttl_s) {
            bad("enforce.contain_ttl_s", e.contain_ttl_s.to_string(), "60 seconds to 30 days (2592000)");
        }
        if !(1..=65_536).contains(&e.max_contained_macs) {
            bad("enforce.max_contained_macs", e.max_contained_macs.to_string(), "1 to 65536 MACs");
        }
        if !(16..=1_048_576).contains(&e.max_bindings) {
            bad("enforce.max_bindings", e.max_bindings.to_string(), "16 to 1048576 bindings");
        }
        if !(1..=1024).contains(&e.max_forged_per_mac) {
            bad("enforce.max_forged_per_mac", e.max_forged_per_mac.to_string(), "1 to 1024 addresses");
        }
        if e.dhcp_leases.ends_with('/') {
            bad(
                "enforce.dhcp_leases",
                format!("{:?}", e.dhcp_leases),
                "a lease file such as \"/var/lib/misc/dnsmasq.leases\" (or \"\" for none)",
            );
        }
        for (key, value, allowed) in self.policy.problems() {
            bad(&key, value, &allowed);
        }
        errors
    }

    /// The effective config as TOML, defaults filled in.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config is always serialisable")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Red-team note: on an appliance the running config is the one composed
    /// at boot in /run; a command run without `-c` loaded built-in defaults,
    /// and `blocklist import` then knew no LAN and no broker to refuse.
    #[test]
    fn without_the_etc_config_the_appliances_running_config_is_read() {
        let d = tempfile::tempdir().unwrap();
        let (etc, run) = (d.path().join("etc.toml"), d.path().join("run.toml"));
        std::fs::write(&run, "node_id = \"router-7\"\n").unwrap();
        let (cfg, from) = Config::load_first_existing(&[&etc, &run]).unwrap();
        assert_eq!((cfg.node_id.as_str(), from.as_deref()), ("router-7", Some(run.as_path())));
        std::fs::write(&etc, "node_id = \"router-8\"\n").unwrap();
        assert_eq!(Config::load_first_existing(&[&etc, &run]).unwrap().0.node_id, "router-8", "/etc wins");
        std::fs::remove_file(&etc).unwrap();
        std::fs::remove_file(&run).unwrap();
        assert_eq!(Config::load_first_existing(&[&etc, &run]).unwrap().1, None, "neither: built-in defaults");
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("test.toml"))
    }

    fn invalid_keys(text: &str) -> Vec<String> {
        match parse(text) {
            Err(ConfigError::Invalid { errors, .. }) => errors.into_iter().map(|e| e.key).collect(),
            other => panic!("expected invalid values, got {other:?}"),
        }
    }

    #[test]
    fn a_response_action_that_is_not_block_alert_or_ignore_is_refused_by_name() {
        let err = parse("[response]\nudp_flood = \"drop\"").unwrap_err().to_string();
        assert!(err.contains("udp_flood") && err.contains("`block`, `alert`, `ignore`"), "{err}");
        let c = parse("[response]\nanomaly = \"ignore\"\nport_scan = \"alert\"").unwrap();
        use crate::detect::response::Action;
        assert_eq!((c.response.anomaly, c.response.port_scan), (Action::Ignore, Action::Alert));
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c, Config { node_id: c.node_id.clone(), ..Config::default() });
        assert_eq!(c.http.listen, "127.0.0.1:8080");
        assert_eq!(c.role, None);
    }

    #[test]
    fn defaults_are_valid() {
        assert!(Config::default().validate().is_empty());
    }

    #[test]
    fn show_output_round_trips() {
        let mut c = Config { role: Some(Role::Router), ..Config::default() };
        c.flow.max_flows = 5000;
        let again = parse(&c.to_toml()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn role_is_read() {
        assert_eq!(parse("role = \"detector\"").unwrap().role, Some(Role::Detector));
    }

    #[test]
    fn bad_role_is_a_parse_error_naming_the_value() {
        let err = parse("role = \"toaster\"").unwrap_err().to_string();
        assert!(err.contains("toaster"), "{err}");
        assert!(err.contains("router"), "{err}");
    }

    #[test]
    fn unknown_top_level_key_is_an_error() {
        let err = parse("colour = \"blue\"").unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }));
        let text = err.to_string();
        assert!(text.contains("colour"), "{text}");
        assert!(text.contains("config show"), "{text}");
    }

    #[test]
    fn unknown_nested_key_is_an_error() {
        let text = parse("[flow]\nmax_flow = 10\n").unwrap_err().to_string();
        assert!(text.contains("max_flow"), "{text}");
        assert!(text.contains("max_flows"), "should list the expected keys: {text}");
    }

    #[test]
    fn wrong_type_is_an_error() {
        let text = parse("[flow]\nmax_flows = \"lots\"\n").unwrap_err().to_string();
        assert!(text.contains("max_flows") || text.contains("lots"), "{text}");
    }

    #[test]
    fn malformed_toml_is_an_error() {
        assert!(matches!(parse("[flow\n"), Err(ConfigError::Parse { .. })));
    }

    #[test]
    fn invalid_values_are_all_reported_with_key_value_and_allowed() {
        let err = parse("node_id = \"bad id\"\n[http]\nlisten = \"localhost\"\n[flow]\nmax_flows = 3\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("3 invalid value(s)"), "{text}");
        assert!(text.contains("`http.listen` = \"localhost\""), "{text}");
        assert!(text.contains("`flow.max_flows` = 3: 1000 to 16777216 flows"), "{text}");
        assert!(text.contains("`node_id`"), "{text}");
    }

    #[test]
    fn every_validation_branch() {
        let cases: &[(&str, &str)] = &[
            ("node_id = \"\"", "node_id"),
            ("node_id = \"x/y\"", "node_id"),
            ("[http]\nlisten = \"1.2.3.4\"", "http.listen"),
            ("[http]\nmax_header_bytes = 100", "http.max_header_bytes/max_headers"),
            ("[http]\nmax_headers = 0", "http.max_header_bytes/max_headers"),
            ("[http]\nmax_body_bytes = 0", "http.max_body_bytes"),
            ("[http]\nmax_upload_bytes = 99999999999", "http.max_upload_bytes"),
            ("[http]\nheader_timeout_ms = 0", "http.header_timeout_ms"),
            ("[http]\nidle_timeout_ms = 99999999", "http.idle_timeout_ms"),
            ("[http]\nbody_timeout_ms = 1", "http.body_timeout_ms"),
            ("[http]\nsend_timeout_ms = 1", "http.send_timeout_ms"),
            ("[http]\nmax_connections = 0", "http.max_connections/max_connections_per_client"),
            (
                "[http]\nmax_connections = 10\nmax_connections_per_client = 20",
                "http.max_connections/max_connections_per_client",
            ),
            ("[http]\nallowed_hosts = [\"evil example\"]", "http.allowed_hosts"),
            ("[log]\nlevel = \"gatewarden=verbose\"", "log.level"),
            ("[bus]\nchannel_capacity = 0", "bus.channel_capacity"),
            ("[bus]\nchannel_capacity = 1048576", "bus.channel_capacity"),
            ("[mqtt]\nbroker = \"nohost\"", "mqtt.broker"),
            ("[mqtt]\nbroker = \"a b:1\"", "mqtt.broker"),
            ("[mqtt]\nca = \"\"", "mqtt.ca"),
            ("[mqtt]\ncert = \"\"", "mqtt.cert"),
            ("[mqtt]\nkey = \"\"", "mqtt.key"),
            ("[mqtt]\nspool_dir = \"\"", "mqtt.spool_dir"),
            ("[mqtt]\nspool_max_messages = 0", "mqtt.spool_max_messages"),
            ("[mqtt]\nspool_max_bytes = 10", "mqtt.spool_max_bytes"),
            ("[mqtt]\nresend_after_ms = 5", "mqtt.resend_after_ms"),
            ("[mqtt]\nshared_group = \"a/b\"", "mqtt.shared_group"),
            ("[mqtt]\nrekey_interval_s = 1", "mqtt.rekey_interval_s"),
            ("[mqtt]\nmax_clock_skew_s = 0", "mqtt.max_clock_skew_s"),
            ("[mqtt]\nkeepalive_s = 1", "mqtt.keepalive_s"),
            ("[mqtt]\naudit_log_max_bytes = 10", "mqtt.audit_log_max_bytes"),
            ("[mqtt]\naudit_log_keep = 1000", "mqtt.audit_log_keep"),
            ("[mqtt]\njson_mirror = true", "mqtt.json_mirror"),
            ("[mqtt]\njson_interval_s = 0", "mqtt.json_interval_s"),
            ("[ctl]\nlisten = \"nope\"", "ctl.listen"),
            ("[ctl]\nhandshake_timeout_ms = 0", "ctl.handshake_timeout_ms"),
            ("[ctl]\nmax_preauth = 5000", "ctl.max_preauth"),
            ("[ctl]\nmax_preauth = 4\nmax_preauth_per_address = 5", "ctl.max_preauth_per_address"),
            ("[ctl]\nmax_sessions = 0", "ctl.max_sessions"),
            ("[ctl]\nsession_idle_timeout_s = 0", "ctl.session_idle_timeout_s"),
            ("[ctl]\nalert_interval_s = 0", "ctl.alert_interval_s"),
            ("[ctl]\nmax_alert_addresses = 0", "ctl.max_alert_addresses"),
            ("[capture]\ninterface = \"a/b\"", "capture.interface"),
            ("[capture]\ninterface = \"abcdefghijklmnop\"", "capture.interface"),
            ("[capture]\nsnap_len = 64", "capture.snap_len"),
            ("[capture]\nring_blocks = 1", "capture.ring_blocks"),
            ("[capture]\nring_block_kib = 48", "capture.ring_block_kib"),
            ("[flow]\nmax_flows = 999", "flow.max_flows"),
            ("[flow]\nidle_timeout_s = 0", "flow.idle_timeout_s"),
            ("[flow]\nidle_timeout_s = 100\nactive_timeout_s = 50", "flow.active_timeout_s"),
            ("[flow]\nbatch_interval_ms = 5", "flow.batch_interval_ms"),
            ("[flow]\nmax_batch_flows = 0", "flow.max_batch_flows"),
            ("[flow]\nmax_hosts = 1", "flow.max_hosts"),
            ("[flow]\nmax_pairs = 1", "flow.max_pairs"),
            ("[detector]\nwindow_s = 0", "detector.window_s"),
            ("[detector]\nmodel_check_memory_mb = 1", "detector.model_check_memory_mb"),
            ("[detector]\nmodel_check_timeout_s = 0", "detector.model_check_timeout_s"),
            ("[detector]\nmodel_max_batch = 67108864", "detector.model_max_batch"),
            ("[detector]\nscan_distinct_ports = 1", "detector.scan_distinct_ports"),
            ("[detector]\nsweep_distinct_hosts = 1", "detector.sweep_distinct_hosts"),
            ("[detector]\nsyn_flood_pps = 0", "detector.syn_flood_pps"),
            ("[detector]\ntcp_flood_pps = 1", "detector.tcp_flood_pps"),
            ("[detector]\nudp_flood_pps = 1", "detector.udp_flood_pps"),
            ("[detector]\nicmp_flood_pps = 1", "detector.icmp_flood_pps"),
            ("[detector]\nbruteforce_attempts = 1", "detector.bruteforce_attempts"),
            ("[detector]\nblock_ttl_s = 0", "detector.block_ttl_s"),
            ("[detector]\nbruteforce_sessions = 1", "detector.bruteforce_sessions"),
            ("[detector]\nhttp_bruteforce_sessions = 4", "detector.http_bruteforce_sessions"),
            ("[detector]\nhttp_bruteforce_window_s = 0", "detector.http_bruteforce_window_s"),
            ("[detector]\nslow_http_connections = 6", "detector.slow_http_connections"),
            ("[detector]\nslow_http_connections = 5000", "detector.slow_http_connections"),
            ("[detector]\nslow_http_min_age_s = 0", "detector.slow_http_min_age_s"),
            ("[detector]\nslow_http_concurrent = 6", "detector.slow_http_concurrent"),
            ("[detector]\nslow_http_concurrent_wait_ms = 10", "detector.slow_http_concurrent_wait_ms"),
            ("[detector]\nslow_scan_distinct_ports = 3", "detector.slow_scan_distinct_ports"),
            ("[detector]\nslow_scan_distinct_hosts = 20000", "detector.slow_scan_distinct_hosts"),
            ("[detector]\ndistributed_scan_sources = 1000", "detector.distributed_scan_sources"),
            ("[detector]\nslow_guess_sessions = 2", "detector.slow_guess_sessions"),
            ("[detector]\nlan_mapping_targets = 4", "detector.lan_mapping_targets"),
            ("[detector]\nlan_mapping_targets = 300", "detector.lan_mapping_targets"),
            ("[detector]\nlan_mapping_unanswered_pct = 101", "detector.lan_mapping_unanswered_pct"),
            ("[detector]\nlan_mapping_window_s = 0", "detector.lan_mapping_window_s"),
            ("[detector]\nmodel_threshold = 1.5", "detector.model_threshold"),
            ("[detector]\nbaseline_factor = 0.5", "detector.baseline_factor"),
            ("[detector]\nmax_verdicts_per_s = 0.0", "detector.max_verdicts_per_s"),
            ("[response]\nscan_min_unanswered_pct = 101", "response.scan_min_unanswered_pct"),
            ("[enforce]\nmax_block_elements = 0", "enforce.max_block_elements"),
            ("[enforce]\nsyn_meter_pps = 0", "enforce.syn_meter_pps"),
            ("[enforce]\nsyn_meter_burst = 0", "enforce.syn_meter_burst"),
            ("[enforce]\nsyn_meter_dst_pps = 20000000", "enforce.syn_meter_dst_pps"),
            ("[enforce]\nmeter_size = 8", "enforce.meter_size"),
            ("[enforce]\nescalation_window_s = 40000000", "enforce.escalation_window_s"),
            ("[enforce]\nmax_ttl_s = 0", "enforce.max_ttl_s"),
            ("[enforce]\nallowlist = [\"192.0.2.1/24\"]", "enforce.allowlist[0]"),
            ("[enforce]\nallowlist = [\"10.0.0.0/8\", \"::/0\"]", "enforce.allowlist[1]"),
            ("[enforce]\nallowlist = [\"gateway\"]", "enforce.allowlist[0]"),
            ("[enforce]\ndetector_timeout_s = 0", "enforce.detector_timeout_s"),
            ("[enforce]\nallowlist = [\"0.0.0.0/1\", \"128.0.0.0/1\"]", "enforce.allowlist"),
            ("[enforce]\nallowlist = [\"10.0.0.0/8\", \"11.0.0.0/8\"]", "enforce.allowlist"),
            ("[enforce]\nallowlist = [\"::/1\", \"8000::/1\"]", "enforce.allowlist"),
            ("[enforce]\nallowlist = [\"2001:db8::/31\"]", "enforce.allowlist"),
            ("[enforce]\nallowlist_limit_v4 = 0", "enforce.allowlist_limit_v4"),
            ("[enforce]\nnever_block = [\"multicast\"]", "enforce.never_block[0]"),
            ("[enforce]\nstate_file = \"/var/lib/\"", "enforce.state_file"),
            ("[enforce]\nallowlist_limit_v6 = 129", "enforce.allowlist_limit_v6"),
            ("[enforce]\nlan_prefixes = [\"lan\"]", "enforce.lan_prefixes[0]"),
            ("[detector]\nhome_net = [\"192.0.2.0/24\", \"192.0.2.1/24\"]", "detector.home_net[1]"),
            ("[enforce]\ncontain_ttl_s = 5", "enforce.contain_ttl_s"),
            ("[enforce]\nmax_contained_macs = 0", "enforce.max_contained_macs"),
            ("[enforce]\nmax_bindings = 1", "enforce.max_bindings"),
            ("[enforce]\nmax_forged_per_mac = 0", "enforce.max_forged_per_mac"),
            ("[enforce]\ndhcp_leases = \"/var/lib/\"", "enforce.dhcp_leases"),
        ];
        for (text, key) in cases {
            assert_eq!(invalid_keys(text), vec![key.to_string()], "for {text:?}");
        }
    }

    #[test]
    fn a_wide_allowlist_needs_force_and_says_how() {
        // At the limit: fine.
        assert!(parse("[enforce]\nallowlist = [\"10.0.0.0/8\", \"10.0.0.0/9\", \"2001:db8::/32\"]").is_ok());
        // Over it: refused, naming the share and both ways out.
        let text = parse("[enforce]\nallowlist = [\"0.0.0.0/1\", \"128.0.0.0/1\"]").unwrap_err().to_string();
        assert!(text.contains("100.000 %"), "{text}");
        assert!(text.contains("enforce.allowlist_force = true"), "{text}");
        assert!(text.contains("enforce.allowlist_limit_v4"), "{text}");
        // Forced or with a raised limit: accepted; a /0 stays refused even forced.
        assert!(parse("[enforce]\nallowlist_force = true\nallowlist = [\"0.0.0.0/1\", \"128.0.0.0/1\"]").is_ok());
        assert!(parse("[enforce]\nallowlist_limit_v4 = 7\nallowlist = [\"10.0.0.0/8\", \"11.0.0.0/8\"]").is_ok());
        assert!(parse("[enforce]\nallowlist_force = true\nallowlist = [\"::/0\"]").is_err());
    }

    #[test]
    fn enforce_section_is_read_and_becomes_blocker_settings() {
        let c = parse(
            "[enforce]\nenabled = true\nfail_closed = true\nallowlist = [\"192.0.2.0/24\", \"2001:db8::1\"]\nsyn_meter_pps = 50\n",
        )
        .unwrap();
        assert!(c.enforce.enabled && c.enforce.fail_closed && !c.enforce.keep_table_on_exit);
        let s = c.enforce.settings();
        assert_eq!(s.allowlist.len(), 2);
        assert_eq!(s.layout.syn_meter_pps, 50);
        assert_eq!(s.max_ttl, std::time::Duration::from_secs(7 * 86_400));
        assert!(
            !Config::default().enforce.enabled,
            "enforcement must be opt-in so tests never touch the host firewall"
        );
    }

    #[test]
    fn bad_allowlist_entry_says_what_a_cidr_looks_like() {
        let text = parse("[enforce]\nallowlist = [\"192.0.2.1/24\"]").unwrap_err().to_string();
        assert!(text.contains("`enforce.allowlist[0]` = \"192.0.2.1/24\""), "{text}");
        assert!(text.contains("did you mean 192.0.2.0/24"), "{text}");
    }

    #[test]
    fn mqtt_is_off_by_default_and_reads_a_broker() {
        assert!(!Config::default().mqtt.enabled());
        let c = parse("[mqtt]\nbroker = \"monitor.lan:8883\"\n[ctl]\nlisten = \"0.0.0.0:7443\"").unwrap();
        assert!(c.mqtt.enabled());
        assert_eq!(c.ctl.listen, "0.0.0.0:7443");
        assert!(parse("[mqtt]\nbroker = \"127.0.0.1:8883\"").is_ok());
        let text = parse("[mqtt]\nbrokr = \"x:1\"").unwrap_err().to_string();
        assert!(text.contains("brokr"), "{text}");
    }

    #[test]
    fn ipv6_listen_is_accepted() {
        assert_eq!(parse("[http]\nlisten = \"[::1]:9000\"").unwrap().http.listen, "[::1]:9000");
    }

    #[test]
    fn json_log_format_is_read() {
        assert_eq!(parse("[log]\nformat = \"json\"").unwrap().log.format, LogFormat::Json);
        assert!(parse("[log]\nformat = \"xml\"").is_err());
    }

    #[test]
    fn missing_explicit_file_is_an_error_that_says_what_to_do() {
        let err = Config::load_or_default(Some(Path::new("/nonexistent/gw.toml"))).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("/nonexistent/gw.toml") && text.contains("--config"), "{text}");
    }
    #[test]
    fn config_groups_and_rules_are_read_validated_and_fixed() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[policy]\nstate_dir = \"{}\"\n\
[[policy.groups]]\nname = \"cameras\"\nmembers = [\"192.0.2.0/28\", \"aa:bb:cc:dd:ee:01\"]\n\
[[policy.groups]]\nname = \"sensors\"\nmembers = [\"198.51.100.0/28\"]\n\
[[policy.rules]]\nsource_group = \"cameras\"\ndestination_group = \"sensors\"\nprotocol = \"tcp\"\nport_range = \"22\"\naction = \"deny\"\npriority = 100\n",
            dir.path().display()
        );
        let cfg = Config::from_toml(&text, std::path::Path::new("t.toml")).unwrap();
        let mut e = crate::policy::PolicyEngine::open(&cfg.policy).unwrap();
        let rules = e.rules();
        assert_eq!((rules[0].item.id, rules[0].origin), (crate::policy::CONFIG_RULE_BASE, "config"));
        assert!(e.delete_rule(crate::policy::CONFIG_RULE_BASE).unwrap_err().to_string().contains("config file"));
        assert!(e.remove_group("cameras").unwrap_err().to_string().contains("config file"));
        assert!(e.uses_macs());
        // A conflicting pair in the config is a config error naming both.
        let bad = format!(
            "{text}[[policy.rules]]\nsource_group = \"cameras\"\ndestination_group = \"sensors\"\naction = \"allow\"\npriority = 100\n"
        );
        let err = Config::from_toml(&bad, std::path::Path::new("t.toml")).unwrap_err().to_string();
        assert!(err.contains("conflict") && err.contains("rule #1000000"), "{err}");
    }
}
