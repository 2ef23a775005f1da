//! `[detector]`: the heuristics' thresholds, the model's settings, the
//! baseline's sensitivity and the verdict limits. The binary composes this
//! into its TOML file (same keys) and validates it with the rest.

use serde::{Deserialize, Serialize};

/// `detector.home_net` by default: the ranges home and office devices live in.
pub const DEFAULT_HOME_NET: [&str; 6] =
    ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7", "fe80::/10"];

/// Heuristic thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorConfig {
    /// Sliding window over which per-source counts are kept.
    #[serde(deserialize_with = "gatewarden_core::duration::secs")]
    pub window_s: u64,
    /// Distinct destination ports on one host in the window that make a port scan.
    pub scan_distinct_ports: u32,
    /// The same for UDP, when most of the probes go unanswered. Lower than for
    /// TCP: a UDP scan is slowed by the target's ICMP rate limit (nmap -sU -T4
    /// reaches 50 ports only after ~1.3 s), and devices seldom send UDP to many
    /// ports of one host without answers. IP protocols other than TCP, UDP and ICMP
    /// (`nmap -sO`) use it too: closed ones are answered by the same rate-limited ICMP.
    pub udp_scan_distinct_ports: u32,
    /// Distinct destination hosts on one port in the window that make a sweep.
    pub sweep_distinct_hosts: u32,
    /// Unanswered SYNs per second from one source that make a SYN flood.
    pub syn_flood_pps: u32,
    /// TCP packets per second from one source outside any connection (no SYN
    /// seen, never answered, no payload: ACK, RST or FIN floods) that make a
    /// TCP flood. A connection picked up midstream after a restart carries
    /// payload or gets answered, so it is never counted.
    pub tcp_flood_pps: u32,
    /// UDP packets per second from one source to one host that make a UDP flood.
    pub udp_flood_pps: u32,
    /// ICMP echo requests per second from one source that make an ICMP flood.
    pub icmp_flood_pps: u32,
    /// Failed connection attempts to an auth port (22, 23, 1883, 80…) in the window that make brute force.
    pub bruteforce_attempts: u32,
    /// How long a block lasts, in seconds; a router holds every detector
    /// block to its own `[enforce] max_ttl_s` (7 days by default) and logs
    /// when it cuts one.
    #[serde(deserialize_with = "gatewarden_core::duration::secs")]
    pub block_ttl_s: u64,
    /// Connections from one source to one interactive login service (SSH, telnet, FTP, RDP, VNC, POP3)
    /// within `bruteforce_window_s` that make brute force (hydra keeps each connection for several
    /// tries, so it opens few).
    pub bruteforce_sessions: u32,
    /// Window for `bruteforce_sessions`, seconds.
    #[serde(deserialize_with = "gatewarden_core::duration::secs")]
    pub bruteforce_window_s: u64,
    /// Finished HTTP sessions with a small reply (≤ 4 KiB from the server: a 401, a "login
    /// failed" page) from one source to one web server port (80, 81, 8000, 8008, 8080, 8888)
    /// within `http_bruteforce_window_s` that make web-login brute force. A flow record cannot
    /// see the status code, so this is a rate: hydra's `http-get`/`http-post-form` make dozens a
    /// second, a device polling a status page one every few seconds.
    pub http_bruteforce_sessions: u32,
    /// Window for `http_bruteforce_sessions`, seconds.
    #[serde(deserialize_with = "gatewarden_core::duration::secs")]
    pub http_bruteforce_window_s: u64,
    /// Connections one source holds open at once to one web server port, each established at
    /// least `slow_http_min_age_s` with no response yet and sending under 1 kB/s, that make a
    /// slow-HTTP (slowloris) attack: it ties up the server's connection slots by sending a
    /// request a few bytes at a time. Browsers open at most 6 per server.
    pub slow_http_connections: u32,
    /// How long a connection must have waited without a response to count for
    /// `slow_http_connections`, seconds. A web server answers a whole request in well under a
    /// second; the detector only sees an idle connection again when it sends, so a slowloris
    /// tool is found at its first follow-up after this age (slowhttptest `-i`, 10 s by default).
    #[serde(deserialize_with = "gatewarden_core::duration::secs")]
    pub slow_http_min_age_s: u64,
    /// Requests one source holds unanswered at once to one plain-HTTP server port, each waiting
    /// at least `slow_http_concurrent_wait_ms` for its first response byte, that make a slow-HTTP
    /// attack *without* waiting `slow_http_min_age_s` (the attack is found while the connections
    /// are still opening). Clients hold at most a few such requests: browsers 6 per server, HTTP
    /// libraries 2–10 per host by default; a small device's web server (ESP-IDF httpd: 7 sockets,
    /// lwIP: 5 TCP slots) is already full at this count. `0` turns this rule off (the
    /// `slow_http_connections` rule still runs). See docs/DETECTION.md, "Slow attacks under 1 s".
    pub slow_http_concurrent: u32,
    /// How long a request must have gone unanswered, in milliseconds, to count for
    /// `slow_http_concurrent`: longer than a round trip plus a server's time to first byte,
    /// so a burst of requests still in flight (a download manager's 16 segments, a page's 6
    /// assets) is not counted; slowloris requests are never answered.
    #[serde(deserialize_with = "gatewarden_core::duration::millis")]
    pub slow_http_concurrent_wait_ms: u64,
    /// The TFLite model (`.tflite`, with `NAME.card.json` beside it); empty: the embedded model;
    /// `off`: heuristics and baseline only.
    pub model: String,
    /// Directory where a model uploaded on the dashboard's training page is
    /// kept (`uploaded.tflite` + `uploaded.card.json`, and its version in
    /// `uploaded.version`, so an older upload is refused after a restart too);
    /// it replaces `model` from then on, across restarts. Empty: uploads last
    /// until restart.
    pub model_store: String,
    /// Directory where each gateway's memory of the services that answered its devices
    /// (the day-long table behind `host_sweep` and `slow_scan`'s "a retry is no probe") is
    /// kept across restarts, as `answered-<gateway>.bin` (2 MiB each), saved every 30
    /// minutes and at a clean stop. Without it, after a restart at night a monitoring
    /// server polling devices that are switched off looks like a sweep of them. Empty:
    /// the memory starts empty at each start.
    pub state_dir: String,
    /// Address space, in MiB, of the child process that validates an uploaded or
    /// stored model before it is used (a crafted `.tflite` can make tract allocate
    /// without bound; past this it is refused instead of taking the gateway down).
    pub model_check_memory_mb: u64,
    /// Seconds (wall clock, and CPU) the model validator may take before it is
    /// stopped and the model refused.
    #[serde(deserialize_with = "gatewarden_core::duration::secs")]
    pub model_check_timeout_s: u64,
    /// Largest batch dimension a model may declare (rows per inference call); a
    /// model declaring more (say 2^26) is refused before tract plans it.
    pub model_max_batch: usize,
    /// Model attack probability (1 − P(benign)) that raises a finding by itself.
    /// Serialised as written (`0.9`, not the f32's `0.8999999761581421`).
    #[serde(serialize_with = "gatewarden_core::floats::f32_as_written")]
    pub model_threshold: f32,
    /// Consecutive batches the model must stay at or above `model_threshold`.
    pub model_batches: u32,
    /// Superseded by `[response] model_alone = "block"`; still honoured:
    /// `true` lets a finding of the model alone block its source (logged at
    /// start as the old spelling). Off: it raises an alert and blocks nothing.
    pub model_alone_blocks: bool,
    /// Networks whose hosts are your devices (Suricata's `HOME_NET`): only
    /// they get a per-device baseline. A server outside them sending to a
    /// device is that device's download, not the server's upload (a firmware
    /// server was flagged as an "anomaly" for serving downloads before this).
    /// Default: the private ranges (RFC 1918, RFC 6598, IPv6 ULA and
    /// link-local); add your public LAN prefixes. Empty: every source.
    pub home_net: Vec<String>,
    /// Seconds after a device is first seen before its baseline can flag it.
    #[serde(deserialize_with = "gatewarden_core::duration::secs")]
    pub baseline_warmup_s: u64,
    /// How many times its usual upload makes a device's upload (or a new host's share) unusual.
    pub baseline_factor: f64,
    /// Standard deviations above the usual upload that make a surge.
    pub baseline_z: f64,
    /// Upload, in bytes per second, below which the baseline flags nothing.
    pub baseline_min_bps: f64,
    /// New incidents (verdicts) per second at most; the rest are counted and dropped.
    pub max_verdicts_per_s: f64,
    /// Burst allowance for `max_verdicts_per_s`.
    pub verdict_burst: f64,
    /// Seconds between verdict refreshes while one attack goes on.
    #[serde(deserialize_with = "gatewarden_core::duration::secs")]
    pub refresh_s: u64,
    /// Seconds without evidence after which an attack counts as over.
    #[serde(deserialize_with = "gatewarden_core::duration::secs")]
    pub incident_close_s: u64,
    /// Slow scans (kind `slow_scan`): distinct destination ports one source probed, with at
    /// least as many unanswered probes and ≥ 50 % of its probes unanswered, within 1, 15 or 60
    /// minutes. Devices use under 10 service ports and their services answer; nmap -T2 reaches
    /// 20 in 8 s, -T1 in 5 minutes. `0` turns the port rule off. (docs/DETECTION.md, "Slow scans")
    pub slow_scan_distinct_ports: u32,
    /// The same over distinct destination hosts (slow sweeps, `--scan-delay`, randomised
    /// host order). A hub polling 30 devices is answered. `0` turns the host rule off.
    pub slow_scan_distinct_hosts: u32,
    /// Distributed scans (kind `distributed_scan`): sources, each with ≥ 2 unanswered probes to
    /// one host (or /24, /64) within 15 minutes, over ≥ 10 of its ports (or hosts), that make one
    /// finding for that target. `0` turns the rule off.
    pub distributed_scan_sources: u32,
    /// Slow password guessing (kind `slow_guessing`): short failed sessions (answered, ended
    /// within 30 s, ≤ 16 KiB) from one source to login services (SSH, telnet, FTP, RDP, VNC,
    /// POP3, MQTT) within the hour, with at most one lasting session per 5 of them. hydra
    /// `-t 1 -W 30` reaches 10 in 5 minutes. `0` turns the rule off.
    pub slow_guess_sessions: u32,
    /// Distinct LAN addresses one MAC must ask for (ARP requests, IPv6 neighbour solicitations)
    /// within `lan_mapping_window_s`, mostly unanswered, to be mapping the LAN (`nmap -sn`,
    /// `arp-scan`): a sweep asks for its whole prefix (254 for a /24), a device for the few dozen
    /// it talks to. At most 256; `0` turns the check off. See docs/DETECTION.md, "LAN mapping".
    pub lan_mapping_targets: u32,
    /// Share of those addresses, in percent, that must have gone unanswered (never seen alive on
    /// the LAN): a /24 in a home holds a few dozen devices, so a sweep's requests mostly are.
    pub lan_mapping_unanswered_pct: f64,
    /// Window for `lan_mapping_targets`, seconds: a sweep is over in seconds; 300 still catches
    /// one slowed to a request every 4 s.
    #[serde(deserialize_with = "gatewarden_core::duration::secs")]
    pub lan_mapping_window_s: u64,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            window_s: 10,
            scan_distinct_ports: 50,
            sweep_distinct_hosts: 20,
            udp_scan_distinct_ports: 20,
            syn_flood_pps: 500,
            tcp_flood_pps: 500,
            udp_flood_pps: 1000,
            icmp_flood_pps: 200,
            bruteforce_attempts: 20,
            block_ttl_s: 600,
            bruteforce_sessions: 5,
            bruteforce_window_s: 60,
            http_bruteforce_sessions: 30,
            http_bruteforce_window_s: 10,
            slow_http_connections: 50,
            slow_http_min_age_s: 3,
            slow_http_concurrent: 16,
            slow_http_concurrent_wait_ms: 250,
            model: String::new(),
            model_store: String::new(),
            state_dir: String::new(),
            model_check_memory_mb: 512,
            model_check_timeout_s: 20,
            model_max_batch: crate::model::DEFAULT_MAX_BATCH,
            model_threshold: 0.9,
            model_batches: 2,
            model_alone_blocks: false,
            home_net: DEFAULT_HOME_NET.iter().map(|s| s.to_string()).collect(),
            baseline_warmup_s: 60,
            baseline_factor: 3.0,
            baseline_z: 4.0,
            baseline_min_bps: 125_000.0,
            max_verdicts_per_s: 20.0,
            verdict_burst: 50.0,
            refresh_s: 300,
            incident_close_s: 120,
            slow_scan_distinct_ports: 20,
            slow_scan_distinct_hosts: 20,
            distributed_scan_sources: 50,
            slow_guess_sessions: 10,
            lan_mapping_targets: 64,
            lan_mapping_unanswered_pct: 50.0,
            lan_mapping_window_s: 300,
        }
    }
}
