//! `gatewarden alerts [filters]`: the monitor's alert store queried from a
//! shell. It reads the EVE files (`alerts.json.N` … `alerts.json`) read-only,
//! so it runs beside a live monitor without touching its files: a line the
//! monitor is writing right now (no newline yet) is skipped, never cut off.
//!
//! `alerts` is a command group whose default action is the query, so
//! `gatewarden alerts --kind port_scan` and `gatewarden alerts list --kind
//! port_scan` are the same; other actions on stored alerts sit beside `list`.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::config::Config;
use crate::exit::{EXIT_BAD_INPUT, EXIT_FAILURE};
use crate::monitor::alerts::{alert_from_eve, parse_kind, parse_severity, ALERT_FILE};
use crate::output::{fail, json_mode};
use gatewarden_proto::messages::{Alert, AlertAction, AttackKind, Severity};

/// `gatewarden alerts` and its options.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AlertsArgs {
    /// Another action on the store; without one, the query below.
    #[command(subcommand)]
    pub command: Option<AlertsCommand>,
    /// The query's filters (the group's default action).
    #[command(flatten)]
    pub query: QueryArgs,
}

/// What `gatewarden alerts` can do besides the default query.
#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// Query the store (what `gatewarden alerts [filters]` does).
    List(QueryArgs),
    /// Download the packets behind an alert (its evidence pcap) from a running monitor.
    #[command(long_about = "Download an alert's evidence pcap from a running monitor (GET /api/alerts/ID/pcap): \
the first packets of the flows its source started, kept by the router that saw them (evidence.packets_per_flow, \
evidence.snap_bytes, at most evidence.max_alert_bytes). Only alerts that came with a verdict have one. It opens \
in tcpdump -r and Wireshark.\n\n\
The monitor is the config's http.listen unless --monitor says otherwise. The token is --token, GATEWARDEN_TOKEN, \
or (on the monitor node) a five-minute viewer token signed with the key its config names.\n\n\
Examples:\n  gatewarden alerts pcap 1733367000123 -o scan.pcap\n  \
gatewarden alerts pcap 42 --monitor 192.0.2.1:8080 --token \"$TOKEN\" | tcpdump -nr -")]
    Pcap(AlertPcapArgs),
}

/// `gatewarden alerts pcap ID`: an alert's evidence pcap from a running monitor.
#[derive(Debug, Args)]
pub struct AlertPcapArgs {
    /// The alert's id (the API's and EVE's `gatewarden.id`).
    pub id: u64,
    /// Where to write it; `-` is stdout (default: stdout when it is not a terminal, else alert-ID.pcap).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The monitor's HTTP address, host:port or http://host:port (default: config http.listen).
    #[arg(long, value_name = "ADDR")]
    pub monitor: Option<String>,
    /// Access token (viewer or admin) for the monitor's API.
    #[arg(long, env = "GATEWARDEN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// How long to wait for the monitor (30s, 1m, … or seconds).
    #[arg(long, default_value = "10s", value_parser = gatewarden_core::duration::parse_duration)]
    pub timeout: std::time::Duration,
    /// Config file (default: /etc/gatewarden/gatewarden.toml, else the appliance's running /run/gatewarden/gatewarden.toml, if one exists).
    #[arg(long, short = 'c', env = "GATEWARDEN_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Filters for the alert query; every one is optional.
#[derive(Debug, Clone, Args)]
pub struct QueryArgs {
    /// Only alerts from the last DURATION (30s, 10m, 1h30m, 7d or seconds).
    #[arg(long, value_name = "DURATION", value_parser = gatewarden_core::duration::parse_duration)]
    pub since: Option<Duration>,
    /// Only this kind (port_scan, syn_flood, brute_force, …).
    #[arg(long, value_parser = parse_kind_arg)]
    pub kind: Option<AttackKind>,
    /// Only alerts at least this severe: high, medium, low (or 1, 2, 3).
    #[arg(long, value_parser = parse_severity_arg)]
    pub severity: Option<Severity>,
    /// Only alerts whose source is this address.
    #[arg(long, value_name = "ADDR")]
    pub src: Option<IpAddr>,
    /// Only alerts raised by this node.
    #[arg(long)]
    pub node: Option<String>,
    /// Only alerts with this action.
    #[arg(long, value_parser = ["blocked", "allowed"])]
    pub action: Option<String>,
    /// At most this many (the newest), printed oldest first like `tail`.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// The monitor's data directory holding alerts.json (default: the config's monitor.data_dir).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Config file naming monitor.data_dir (default: /etc/gatewarden/gatewarden.toml, else the appliance's running /run/gatewarden/gatewarden.toml, if one exists).
    #[arg(long, short = 'c', env = "GATEWARDEN_CONFIG")]
    pub config: Option<PathBuf>,
}

fn parse_kind_arg(s: &str) -> Result<AttackKind, String> {
    parse_kind(s).ok_or_else(|| {
        let names: Vec<&str> = crate::monitor::alerts::ALL_KINDS.iter().map(|k| k.as_str()).collect();
        format!("{s:?} is not an alert kind; one of: {}", names.join(", "))
    })
}

fn parse_severity_arg(s: &str) -> Result<Severity, String> {
    parse_severity(s).ok_or_else(|| format!("{s:?} is not a severity: high, medium, low (or 1, 2, 3)"))
}

impl QueryArgs {
    fn matches(&self, a: &Alert, since_ns: Option<u64>) -> bool {
        since_ns.is_none_or(|t| a.ts_ns >= t)
            && self.kind.is_none_or(|k| a.kind == k)
            && self.severity.is_none_or(|s| a.severity <= s)
            && self.src.is_none_or(|s| a.src == Some(s))
            && self.node.as_deref().is_none_or(|n| a.node == n)
            && self.action.as_deref().is_none_or(|want| action_name(a.action) == want)
    }
}

fn action_name(a: AlertAction) -> &'static str {
    match a {
        AlertAction::Blocked => "blocked",
        _ => "allowed",
    }
}

/// Runs `gatewarden alerts ...`; returns the exit code.
pub fn run(args: AlertsArgs) -> i32 {
    match args.command {
        Some(AlertsCommand::List(q)) => list(&q),
        Some(AlertsCommand::Pcap(a)) => cmd_alert_pcap(a),
        None => list(&args.query),
    }
}

/// The matching lines, oldest first: at most `q.limit` of the newest.
fn query(dir: &Path, q: &QueryArgs, now_ns: u64) -> anyhow::Result<(Vec<(String, Alert)>, u64)> {
    use anyhow::Context;
    let since_ns = q.since.map(|d| now_ns.saturating_sub(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)));
    // alerts.json.N … alerts.json.1, then alerts.json: oldest first, whatever `keep` the monitor uses.
    let mut rotated: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .with_context(|| format!("reading the alert store {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.strip_prefix(ALERT_FILE)?.strip_prefix('.')?.parse::<u64>().ok()?;
            Some((n, e.path()))
        })
        .collect();
    rotated.sort_by_key(|r| std::cmp::Reverse(r.0));
    let mut files: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    files.push(dir.join(ALERT_FILE));
    let limit = q.limit.max(1);
    let mut out: VecDeque<(String, Alert)> = VecDeque::with_capacity(limit.min(4096));
    let mut bad = 0u64;
    for path in &files {
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
        };
        let mut reader = BufReader::with_capacity(1 << 16, file);
        let mut buf = Vec::with_capacity(1024);
        loop {
            buf.clear();
            let n = reader.read_until(b'\n', &mut buf).with_context(|| format!("reading {}", path.display()))?;
            // End of file, or a line still being written: stop at the last complete line.
            if n == 0 || buf.last() != Some(&b'\n') {
                break;
            }
            let Ok(line) = std::str::from_utf8(&buf[..n - 1]) else {
                bad += 1;
                continue;
            };
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<serde_json::Value>(line)
                .map_err(anyhow::Error::from)
                .and_then(|v| alert_from_eve(&v))
            {
                Ok(a) if q.matches(&a, since_ns) => {
                    if out.len() == limit {
                        out.pop_front();
                    }
                    out.push_back((line.to_string(), a));
                }
                Ok(_) => {}
                Err(_) => bad += 1,
            }
        }
    }
    Ok((out.into(), bad))
}

fn list(q: &QueryArgs) -> i32 {
    let dir = match &q.dir {
        Some(d) => d.clone(),
        None => {
            let cfg = match Config::load_or_default(q.config.as_deref()) {
                Ok((c, _)) => c,
                Err(e) => return crate::output::config_fail(e),
            };
            if cfg.monitor.data_dir.as_os_str().is_empty() {
                return fail(
                    EXIT_BAD_INPUT,
                    "no alert store: the config sets no monitor.data_dir (the monitor keeps alerts in memory only); \
pass --dir DIR, or -c with the monitor's config",
                );
            }
            cfg.monitor.data_dir
        }
    };
    if !dir.is_dir() {
        return fail(
            EXIT_BAD_INPUT,
            format!(
                "{} is not a directory: give the monitor's data directory (monitor.data_dir, where alerts.json is)",
                dir.display()
            ),
        );
    }
    let (found, bad) = match query(&dir, q, gatewarden_core::clock::unix_now_ns()) {
        Ok(r) => r,
        Err(e) => return fail(EXIT_FAILURE, format!("{e:#}")),
    };
    if bad > 0 {
        crate::output::warn(format!("{bad} line(s) in {} are not alerts (skipped)", dir.display()));
    }
    if json_mode() {
        // The stored EVE lines as they are: JSON Lines, one alert per line.
        for (line, _) in &found {
            println!("{line}");
        }
        return 0;
    }
    println!(
        "{:<27} {:>6} {:<6} {:<20} {:<39} {:<39} {:<7} {:<12} REASON",
        "TIME", "ID", "SEV", "KIND", "SOURCE", "DESTINATION", "ACTION", "NODE"
    );
    for (_, a) in &found {
        let addr = |ip: Option<IpAddr>, port: u16| match (ip, port) {
            (None, _) => "-".to_string(),
            (Some(IpAddr::V6(ip)), p) if p != 0 => format!("[{ip}]:{p}"),
            (Some(ip), p) if p != 0 => format!("{ip}:{p}"),
            (Some(ip), _) => ip.to_string(),
        };
        let sev = match a.severity {
            Severity::High => "high",
            Severity::Medium => "medium",
            Severity::Low => "low",
        };
        println!(
            "{:<27} {:>6} {:<6} {:<20} {:<39} {:<39} {:<7} {:<12} {}",
            gatewarden_core::clock::rfc3339(a.ts_ns),
            a.id,
            sev,
            a.kind.as_str(),
            addr(a.src, a.sport),
            addr(a.dst, a.dport),
            action_name(a.action),
            crate::logging::sanitize(&a.node, 32),
            crate::logging::sanitize(&a.reason, 200),
        );
    }
    println!("{} alert(s)", found.len());
    0
}

/// `gatewarden alerts pcap ID`.
fn cmd_alert_pcap(args: AlertPcapArgs) -> i32 {
    let cfg = match Config::load_or_default(args.config.as_deref()) {
        Ok((c, _)) => c,
        Err(e) => return crate::output::config_fail(e),
    };
    let addr = args.monitor.clone().unwrap_or_else(|| cfg.http.listen.clone());
    let addr = addr.trim_start_matches("http://").trim_end_matches('/').to_string();
    // No token given: on the monitor node, a short-lived viewer token from the key its config names (never a new key),
    // the same for every call of a minute (the monitor checks few new tokens per client: auth::CHECK_BURST, then 1 a second).
    let token = args.token.clone().or_else(|| {
        use crate::monitor::auth::TokenSigner;
        let path = TokenSigner::configured_path(&cfg.http, &cfg.monitor).filter(|p| p.exists())?;
        let signer = TokenSigner::load_or_create(&path).ok()?;
        Some(signer.issue_local("gatewarden-cli", gatewarden_core::clock::unix_now()))
    });
    let path = format!("/api/alerts/{}/pcap", args.id);
    let limit = 2 * gatewarden_proto::messages::MAX_EVIDENCE_BYTES + (1 << 20);
    let timeout = args.timeout.max(std::time::Duration::from_secs(1));
    let (status, body) = match http_get(&addr, &path, token.as_deref(), timeout, limit) {
        Ok(r) => r,
        Err(e) => {
            return fail(
                EXIT_FAILURE,
                format!("fetching {path} from {addr}: {e:#} (is the monitor running? --monitor ADDR)"),
            )
        }
    };
    if status != 200 {
        let msg = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
        let hint = if status == 401 || status == 403 {
            ": give --token (or GATEWARDEN_TOKEN); `gatewarden token issue --role viewer` on the monitor makes one"
        } else {
            ""
        };
        return fail(EXIT_FAILURE, format!("the monitor at {addr} answered {status}: {msg}{hint}"));
    }
    let to_stdout = match &args.output {
        Some(p) => p.as_os_str() == "-",
        None => !std::io::IsTerminal::is_terminal(&std::io::stdout()),
    };
    if to_stdout {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        return match out.write_all(&body).and_then(|_| out.flush()) {
            Ok(()) => 0,
            Err(e) => fail(EXIT_FAILURE, format!("writing the pcap to stdout: {e}")),
        };
    }
    let file = args.output.unwrap_or_else(|| PathBuf::from(format!("alert-{}.pcap", args.id)));
    match gatewarden_core::atomic_file::write_atomic(&file, &body) {
        Ok(()) => {
            eprintln!("wrote {} ({} bytes)", file.display(), body.len());
            0
        }
        Err(e) => fail(EXIT_FAILURE, format!("{e:#}")),
    }
}

/// One HTTP/1.1 GET (`Connection: close`): the status and at most `limit` body bytes.
fn http_get(
    addr: &str,
    path: &str,
    token: Option<&str>,
    timeout: std::time::Duration,
    limit: usize,
) -> anyhow::Result<(u16, Vec<u8>)> {
    use anyhow::Context as _;
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let sock = addr.to_socket_addrs().with_context(|| format!("resolving {addr}"))?.next().context("no address")?;
    let mut s = std::net::TcpStream::connect_timeout(&sock, timeout).context("connecting")?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    s.take(limit as u64 + 1).read_to_end(&mut raw).context("reading the answer")?;
    anyhow::ensure!(raw.len() <= limit, "the answer is larger than {limit} bytes");
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").context("the answer has no complete head")?;
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let status: u16 = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).context("no status line")?;
    let mut body = raw.split_off(end + 4);
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim()))
    };
    anyhow::ensure!(header("transfer-encoding").is_none(), "unexpected chunked answer");
    if let Some(n) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        anyhow::ensure!(body.len() >= n, "the answer was cut short ({} of {n} bytes)", body.len());
        body.truncate(n);
    }
    Ok((status, body))
}
