//! Fleet scale on one machine (#19): N routers, each its own `gatewarden run
//! --role router` process with its own certificate from `gatewarden pki`
//! (real mutual TLS), two detectors sharing the work, one monitor and one
//! broker. The routers need no interfaces or root: each plays a capture with
//! `capture.replay_live` (recorded pace, wall-clock stamps, as a live ring).
//!
//! Every router's capture holds background traffic and one port scan from
//! its own source; the test waits until the monitor holds the scan alert of
//! every router and the router got its verdict, then prints what the fleet
//! cost: the monitor's CPU and peak RSS, the broker's and detectors' CPU,
//! alert end-to-end latency (packet time → alert at the monitor) p50/p99,
//! verdict latency (packet time → verdict at the router) p99, the detectors'
//! backlog, and which of those ran out first.
//!
//! `cargo test --test fleet` runs 10 routers against Mosquitto (detectors on
//! a shared subscription) and against a two-node RabbitMQ cluster with its
//! MQTT plugin (mutual TLS, certificate CN as user, topic permissions as the
//! ACL). `FLEET_ROUTERS=100 cargo test --test fleet -- --ignored` runs the
//! 100-router figure of docs/PERFORMANCE.md (≤ 10 minutes).

mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, free_port, pcap, shipped_bin, tcp4, wait_for, wait_http_ok, Guard};
use serde_json::Value;

/// How long each router's capture lasts (background traffic throughout):
/// longer than it takes to start the whole fleet, so every router streams
/// at once when the scans come.
fn capture_s(routers: usize) -> f64 {
    12.0 + 0.4 * routers as f64
}

/// The scan starts this long before the capture ends.
const SCAN_BEFORE_END_S: f64 = 8.0;
/// Shared-subscription group of the two detectors on Mosquitto.
const GROUP: &str = "detectors";

/// Runs the gatewarden CLI and asserts success.
fn gw(args: &[&str]) -> String {
    let out = Command::new(bin()).args(args).output().expect("run gatewarden");
    assert!(out.status.success(), "gatewarden {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// How often each router's device opens a connection (`FLEET_CONN_INTERVAL_MS`,
/// default 500 ms): with the default 100 ms batch interval, about two flow
/// batches a second per router.
fn conn_interval_s() -> f64 {
    std::env::var("FLEET_CONN_INTERVAL_MS").ok().and_then(|v| v.parse::<f64>().ok()).unwrap_or(500.0) / 1000.0
}

/// Router `i`'s capture of `length_s`: a device opening a connection to a
/// server every [`conn_interval_s`] (background batches all along) and,
/// [`SCAN_BEFORE_END_S`] before the end, a SYN scan of 300 ports from a
/// source of its own, each answered with a RST.
fn capture(dir: &Path, i: usize, length_s: f64) -> PathBuf {
    let scanner = [203, 0, 113, 1 + (i % 250) as u8];
    let mut recs = Vec::new();
    let mut t = 0.0;
    let mut n = 0u16;
    while t < length_s {
        let sport = 40000 + (n % 2000);
        recs.push((t, tcp4([192, 0, 2, 20], [192, 0, 2, 1], sport, 443, 0x02)));
        recs.push((t + 0.001, tcp4([192, 0, 2, 1], [192, 0, 2, 20], 443, sport, 0x12)));
        recs.push((t + 0.002, tcp4([192, 0, 2, 20], [192, 0, 2, 1], sport, 443, 0x10)));
        t += conn_interval_s();
        n += 1;
    }
    for p in 0..300u16 {
        let t = length_s - SCAN_BEFORE_END_S + p as f64 * 0.003;
        recs.push((t, tcp4(scanner, [192, 0, 2, 10], 50000, 1 + p, 0x02)));
        recs.push((t + 0.0001, tcp4([192, 0, 2, 10], scanner, 1 + p, 50000, 0x14)));
    }
    recs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let base = 1_700_000_000.0;
    let recs: Vec<(f64, Vec<u8>)> = recs.into_iter().map(|(t, b)| (base + t, b)).collect();
    let p = dir.join(format!("router-{i}.pcap"));
    std::fs::write(&p, pcap(&recs)).unwrap();
    p
}

/// A process whose stderr goes to a file (JSON log lines, parsed at the end).
struct Node {
    proc: Guard,
    log: PathBuf,
    http: u16,
}

impl Node {
    fn pid(&mut self) -> u32 {
        self.proc.child().id()
    }
}

fn spawn_node(dir: &Path, cfg: &Path, role: &str, http: u16, rust_log: &str, extra: &[&str]) -> Node {
    let log = dir.join(format!("{}.log", cfg.file_stem().unwrap().to_str().unwrap()));
    let f = std::fs::File::create(&log).unwrap();
    let proc = Guard::spawn(
        Command::new(shipped_bin())
            .args(["--log-format", "json", "run", "--role", role, "--config", cfg.to_str().unwrap()])
            .args(extra)
            .env("RUST_LOG", rust_log)
            .env_remove("GATEWARDEN_ROLE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(f),
    );
    Node { proc, log, http }
}

/// A node's config: its certificate, the broker, a status port.
fn node_config(pki: &Path, broker: &str, id: &str, http: u16, extra: &str) -> PathBuf {
    let text = format!(
        "node_id = \"{id}\"\n[http]\nlisten = \"127.0.0.1:{http}\"\npublic_status = true\n[mqtt]\nbroker = \"{broker}\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\nspool_dir = \"{}\"\nresend_after_ms = 1000\n{extra}",
        pki.join("ca.crt").display(),
        pki.join(format!("nodes/{id}.crt")).display(),
        pki.join(format!("nodes/{id}.key")).display(),
        pki.join(format!("spool-{id}")).display(),
    );
    let path = pki.join(format!("{id}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// `pki init` and one certificate per node.
fn make_pki(dir: &Path, routers: usize) -> Vec<(String, &'static str)> {
    let d = dir.to_str().unwrap();
    gw(&["pki", "init", "--dir", d]);
    let mut nodes: Vec<(String, &'static str)> = (0..routers).map(|i| (format!("router-{i}"), "router")).collect();
    nodes.extend([("det-1".into(), "detector"), ("det-2".into(), "detector"), ("mon-1".into(), "monitor")]);
    for (id, role) in &nodes {
        gw(&["pki", "issue", id, "--role", role, "--dir", d]);
    }
    nodes
}

/// CPU seconds (user + system) a process used so far, from `/proc/<pid>/stat`.
fn cpu_s(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = text.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// A `/proc/<pid>/status` field in MB (`VmHWM:` is the peak RSS).
fn status_mb(pid: u32, field: &str) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: f64 = text
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

/// Nanoseconds since the epoch of an RFC 3339 UTC time such as
/// `2026-12-05T02:30:00.123456Z` (the JSON log's `timestamp`).
fn rfc3339_ns(s: &str) -> Option<u64> {
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|v| v.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    // `Z`, or a `+0000` offset (the EVE timestamp): both UTC here.
    let time = time.trim_end_matches('Z');
    let time = time.split(['+']).next()?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|v| v.parse::<i64>());
    let (hh, mm, ss) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let digits: String = frac.chars().take_while(|c| c.is_ascii_digit()).take(9).collect();
    let frac_ns = digits.parse::<u64>().ok()? * 10u64.pow(9 - digits.len() as u32);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(secs as u64 * 1_000_000_000 + frac_ns)
}

/// The JSON log lines of `stage` in a node's log.
fn stage_lines(log: &Path, stage: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter(|l| l.contains(stage))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["stage"] == stage)
        .collect()
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn http_json(port: u16, path: &str) -> Option<Value> {
    let (code, _, body) = common::http("GET", &format!("127.0.0.1:{port}"), path).ok()?;
    (code == 200).then(|| serde_json::from_str(&body).ok()).flatten()
}

/// Sum of a metric's samples in a node's `/metrics`: every label set of
/// `name`, or the one sample `name{labels}` when `name` has them.
fn metric(port: u16, name: &str) -> f64 {
    let Ok((200, _, body)) = common::http("GET", &format!("127.0.0.1:{port}"), "/metrics") else { return 0.0 };
    body.lines()
        .filter(|l| l.starts_with(name) && (name.ends_with('}') || l[name.len()..].starts_with([' ', '{'])))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A field of a stored alert wherever the EVE record keeps gatewarden's
/// own fields (`gatewarden.*`, or Suricata's `alert.metadata` whose values
/// are lists of strings), as text.
fn alert_field(a: &Value, name: &str) -> Option<String> {
    let v = [&a["gatewarden"][name], &a["alert"]["metadata"][name], &a[name]].into_iter().find(|v| !v.is_null())?;
    let v = if let Some(list) = v.as_array() { list.first()? } else { v };
    Some(match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

/// Traffic alerts at the monitor: (id, router, event time in ns, source).
fn monitor_alerts(port: u16) -> Vec<(u64, String, u64, String)> {
    let Some(v) = http_json(port, "/api/alerts?limit=10000") else { return Vec::new() };
    let list = v.as_array().cloned().or_else(|| v["alerts"].as_array().cloned()).unwrap_or_default();
    list.iter()
        .filter(|a| alert_field(a, "kind").as_deref() == Some("port_scan") || a["alert"]["category"] == "port_scan")
        .filter_map(|a| {
            let ts = alert_field(a, "ts_ns")
                .and_then(|t| t.parse().ok())
                .or_else(|| rfc3339_ns(a["timestamp"].as_str()?))?;
            let src = a["src_ip"].as_str().map(str::to_string).or_else(|| alert_field(a, "src"))?;
            Some((alert_field(a, "id")?.parse().ok()?, alert_field(a, "node")?, ts, src))
        })
        .collect()
}

/// Where the broker runs, for the CPU figure.
enum BrokerKind {
    Mosquitto,
    Rabbit,
}

/// The whole fleet against a broker at `broker` (already running, `pids` its processes).
/// The whole fleet against the broker (or cluster nodes) at `brokers`,
/// already running as `broker_pids`. The monitor and det-1 use the first
/// address; det-2 and every other router the second, if there is one.
fn run_fleet(kind: BrokerKind, dir: &Path, brokers: &[String], broker_pids: &[u32], routers: usize, budget: Duration) {
    let t_start = Instant::now();
    let at = |i: usize| brokers[i % brokers.len()].as_str();
    let (shared, mqtt_extra) = match kind {
        BrokerKind::Mosquitto => (format!("shared_group = \"{GROUP}\"\n"), String::new()),
        // RabbitMQ 3.x's MQTT plugin has no shared subscriptions: both detectors take every batch.
        // It hands retained messages only to exact-topic subscriptions (ours is `+/key`), from
        // the node that took them, so a node learns a peer's key when the peer announces it
        // live: a router joining after the detectors, at their next rekey. Keep that short.
        BrokerKind::Rabbit => (String::new(), "rekey_interval_s = 10\n".to_string()),
    };
    let (pm, pd1, pd2) = (free_port(), free_port(), free_port());
    let mon_cfg = node_config(
        dir,
        at(0),
        "mon-1",
        pm,
        &format!("{mqtt_extra}[monitor]\ndata_dir = \"{}\"\n", dir.join("data-mon-1").display()),
    );
    let mut mon = spawn_node(dir, &mon_cfg, "monitor", pm, "warn,timing=debug", &[]);
    let mut dets: Vec<Node> = ["det-1", "det-2"]
        .iter()
        .zip([pd1, pd2])
        .enumerate()
        .map(|(i, (id, p))| {
            let cfg = node_config(dir, at(i), id, p, &format!("{shared}{mqtt_extra}"));
            spawn_node(dir, &cfg, "detector", p, "warn,timing=debug", &[])
        })
        .collect();
    for p in [pm, pd1, pd2] {
        assert!(wait_http_ok(&format!("127.0.0.1:{p}"), "/healthz", Duration::from_secs(60)), "node on {p} up");
        wait_for("monitor and detectors connected", Duration::from_secs(60), || {
            metric(p, "gatewarden_mqtt_connected") == 1.0
        });
    }
    let cpu0: Vec<f64> = broker_pids.iter().map(|p| cpu_s(*p)).collect();
    let (mon_cpu0, det_cpu0) = (cpu_s(mon.pid()), dets.iter_mut().map(|d| cpu_s(d.pid())).collect::<Vec<f64>>());
    let t0 = Instant::now();
    let mut rs = Vec::new();
    for i in 0..routers {
        let id = format!("router-{i}");
        let p = free_port();
        let cfg = node_config(dir, at(i), &id, p, &format!("{mqtt_extra}[capture]\nreplay_live = true\n"));
        let cap = capture(dir, i, capture_s(routers));
        rs.push(spawn_node(dir, &cfg, "router", p, "warn,timing=debug", &["--replay", cap.to_str().unwrap()]));
    }
    let spawned = t0.elapsed();
    eprintln!("fleet: {routers} routers started in {:.1} s", spawned.as_secs_f64());
    // Every router's scan becomes an alert at the monitor and a verdict at the router.
    let want: HashSet<String> = (0..routers).map(|i| format!("router-{i}")).collect();
    let left = budget.saturating_sub(t_start.elapsed());
    let done = common::wait_until(left, || {
        let got: HashSet<String> = monitor_alerts(pm).into_iter().map(|a| a.1).collect();
        want.is_subset(&got)
    });
    let wall = t0.elapsed().as_secs_f64();
    // The cost figures cover the whole fleet streaming: until the last router's capture is over.
    let streamed = spawned + Duration::from_secs_f64(capture_s(routers) + 1.0);
    while t0.elapsed() < streamed && t_start.elapsed() < budget {
        std::thread::sleep(Duration::from_millis(200));
    }
    let alerts = monitor_alerts(pm);
    let got: HashSet<&String> = alerts.iter().map(|a| &a.1).collect();
    let missing: Vec<&String> = want.iter().filter(|r| !got.contains(r)).collect();
    assert!(done, "scan alerts of {} routers never reached the monitor: {missing:?}", missing.len());
    wait_for("a verdict at every router", Duration::from_secs(60), || {
        rs.iter().all(|r| metric(r.http, "gatewarden_verdicts_received_total") > 0.0)
    });
    let wall_all = t0.elapsed().as_secs_f64();
    let mon_cpu = cpu_s(mon.pid()) - mon_cpu0;
    let det_cpus: Vec<f64> = dets.iter_mut().zip(&det_cpu0).map(|(d, c0)| cpu_s(d.pid()) - c0).collect();
    let det_cpu: f64 = det_cpus.iter().sum();
    let broker_cpu: f64 = broker_pids.iter().zip(&cpu0).map(|(p, c)| cpu_s(*p) - c).sum();
    let mon_hwm = status_mb(mon.pid(), "VmHWM:");
    let routers_cpu: f64 = rs.iter_mut().map(|r| cpu_s(r.pid())).sum();
    let router_hwm = rs.iter_mut().map(|r| status_mb(r.pid(), "VmHWM:")).fold(0.0, f64::max);
    // Both detectors took work (a shared subscription splits the batches; without one each takes all).
    let batches: Vec<f64> = [pd1, pd2].iter().map(|p| metric(*p, "gatewarden_flow_batches_total")).collect();
    let det_dropped: f64 =
        [pd1, pd2].iter().map(|p| metric(*p, "gatewarden_bus_dropped_total{kind=\"flow_batch\"}")).sum();
    // Detector backlog: batches waiting in a detector's queue when one was taken (timing lines).
    let peak_backlog = dets
        .iter()
        .flat_map(|d| ["verdict_decided", "batch_analysed"].into_iter().flat_map(|s| stage_lines(&d.log, s)))
        .filter_map(|l| l["queued"].as_u64())
        .max()
        .unwrap_or(0);
    assert!(batches.iter().all(|b| *b > 0.0), "both detectors analysed batches: {batches:?}");
    if matches!(kind, BrokerKind::Mosquitto) {
        // Shared: each batch went to one detector, so together they saw about what the routers sent.
        let sent: f64 = rs.iter().map(|r| metric(r.http, "gatewarden_mqtt_published_total{kind=\"flow_batch\"}")).sum();
        let total: f64 = batches.iter().sum();
        assert!(sent > 0.0, "the routers published flow batches");
        assert!(
            total <= sent * 1.05 + 2.0,
            "a shared subscription hands each batch to one detector: {total} analysed of {sent} sent"
        );
    }

    // Alert end-to-end, per router (each scans from its own source): the
    // scan's first alert's event time (a packet's wall-clock stamp at the
    // router) → the first alert about that source at the monitor. The
    // monitor numbers alerts anew, so the source is the key, not the id.
    let mut first_ts: HashMap<String, u64> = HashMap::new();
    for a in &alerts {
        let e = first_ts.entry(a.3.clone()).or_insert(a.2);
        *e = (*e).min(a.2);
    }
    let mut first_at: HashMap<String, u64> = HashMap::new();
    for l in stage_lines(&mon.log, "alert_received") {
        if let (Some(src), Some(at)) = (l["source"].as_str(), l["timestamp"].as_str().and_then(rfc3339_ns)) {
            if l["kind"] == "port_scan" {
                let e = first_at.entry(src.to_string()).or_insert(at);
                *e = (*e).min(at);
            }
        }
    }
    let mut alert_ms: Vec<f64> =
        first_ts.iter().filter_map(|(src, ts)| Some(first_at.get(src)?.saturating_sub(*ts) as f64 / 1e6)).collect();
    // Verdict: capture time of the batch it came from → verdict at the router.
    let mut capture_of: HashMap<(u64, String), u64> = HashMap::new();
    for d in &dets {
        for l in stage_lines(&d.log, "verdict_decided") {
            if let (Some(id), Some(src), Some(c)) =
                (l["verdict_id"].as_u64(), l["source"].as_str(), l["batch_capture_ns"].as_u64())
            {
                capture_of.insert((id, src.to_string()), c);
            }
        }
    }
    let mut verdict_ms: Vec<f64> = rs
        .iter()
        .flat_map(|r| stage_lines(&r.log, "verdict_forwarded"))
        .filter_map(|l| {
            let c = *capture_of.get(&(l["verdict_id"].as_u64()?, l["source"].as_str()?.to_string()))?;
            Some(rfc3339_ns(l["timestamp"].as_str()?)?.saturating_sub(c) as f64 / 1e6)
        })
        .collect();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let (mon_pct, det_pct, broker_pct) =
        (mon_cpu / wall_all * 100.0, det_cpu / wall_all * 100.0, broker_cpu / wall_all * 100.0);
    // How close each shared stage came to its limit: a core for the broker
    // process(es), the monitor and each detector (one executor thread each),
    // and the detector's inbound queue (bus.channel_capacity, 1024 batches).
    let busiest_det = det_cpus.iter().fold(0.0f64, |a, c| a.max(*c)) / wall_all * 100.0;
    let mut stages = [
        ("broker CPU", broker_pct / broker_pids.len() as f64),
        ("monitor CPU", mon_pct),
        ("busiest detector CPU", busiest_det),
        ("detector backlog", peak_backlog as f64 / 1024.0 * 100.0),
    ];
    stages.sort_by(|a, b| b.1.total_cmp(&a.1));
    let saturated = stages[0];
    let stages: Vec<String> = stages.iter().map(|(n, p)| format!("{n} {p:.0} %")).collect();
    eprintln!(
        "FLEET {} routers={routers} wall_to_all_alerts_s={wall:.1} wall_s={wall_all:.1} alerts={} \
         monitor_cpu_pct={mon_pct:.1} monitor_peak_rss_mb={mon_hwm:.1} broker_cpu_pct={broker_pct:.1} \
         detectors_cpu_pct={det_pct:.1} routers_cpu_pct={:.1} router_peak_rss_mb={router_hwm:.1} detector_batches={batches:?} detector_peak_backlog={peak_backlog} detector_dropped_batches={det_dropped} \
         alert_e2e_ms_p50={:.0} alert_e2e_ms_p99={:.0} (n={}) verdict_ms_p99={:.0} (n={}) \
         nearest_limit={} ({:.0} %; {}) setup_s={:.1} loadavg={}",
        match kind {
            BrokerKind::Mosquitto => "mosquitto",
            BrokerKind::Rabbit => "rabbitmq-cluster",
        },
        alerts.len(),
        routers_cpu / wall_all * 100.0,
        percentile(&mut alert_ms, 0.5),
        percentile(&mut alert_ms, 0.99),
        alert_ms.len(),
        percentile(&mut verdict_ms, 0.99),
        verdict_ms.len(),
        saturated.0,
        saturated.1,
        stages.join(", "),
        t0.duration_since(t_start).as_secs_f64(),
        load.trim(),
    );
    assert_eq!(alert_ms.len(), routers, "alert latency measured for every router's scan");
    // capture.replay_live stamps packets with the wall clock: the recorded times (2023) would be years off.
    assert!(
        alert_ms.iter().all(|ms| *ms < 300_000.0),
        "alerts carry the wall-clock time of their packets: {alert_ms:?}"
    );
    assert!(!verdict_ms.is_empty(), "verdict latency measured");
}

/// Mosquitto from `gatewarden pki mosquitto-conf`, without debug logging
/// (the broker's cost is one of the figures).
fn start_mosquitto(dir: &Path) -> Option<(Guard, u16)> {
    let exe = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"].into_iter().map(PathBuf::from).find(|p| p.exists());
    let Some(exe) = exe else {
        let msg = "mosquitto is not installed (apt-get install mosquitto; tools/test.sh does this as root)";
        if std::env::var_os("CI").is_some() {
            panic!("{msg}. CI must run the fleet test against a real broker");
        }
        eprintln!("SKIPPED: {msg}");
        return None;
    };
    let port = free_port();
    let d = dir.to_str().unwrap();
    let p = port.to_string();
    gw(&["pki", "mosquitto-conf", "--dir", d, "--port", &p, "--bind", "127.0.0.1", "--user", "root"]);
    let conf = dir.join("mosquitto/mosquitto.conf");
    let log = std::fs::File::create(dir.join("mosquitto.log")).unwrap();
    let g = Guard::spawn(
        Command::new(exe)
            .args(["-c", conf.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log),
    );
    wait_for("mosquitto listening", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    Some((g, port))
}

fn fleet_on_mosquitto(routers: usize, budget: Duration) {
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    make_pki(dir.path(), routers);
    eprintln!("fleet: PKI for {routers} routers in {:.1} s", t.elapsed().as_secs_f64());
    let Some((mut broker, port)) = start_mosquitto(dir.path()) else { return };
    let pid = broker.child().id();
    run_fleet(BrokerKind::Mosquitto, dir.path(), &[format!("127.0.0.1:{port}")], &[pid], routers, budget);
}

#[test]
fn ten_routers_two_detectors_one_monitor_through_mosquitto() {
    fleet_on_mosquitto(10, Duration::from_secs(240));
}

/// The figure of docs/PERFORMANCE.md: `FLEET_ROUTERS` routers (default 100) in at most 10 minutes.
#[test]
#[ignore = "100 router processes: minutes of both cores; run by hand for docs/PERFORMANCE.md"]
fn a_hundred_routers_through_mosquitto_within_ten_minutes() {
    let n = std::env::var("FLEET_ROUTERS").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let t = Instant::now();
    fleet_on_mosquitto(n, Duration::from_secs(570));
    assert!(t.elapsed() <= Duration::from_secs(600), "the fleet test took {:?}", t.elapsed());
}

/// Where Debian's `rabbitmq-server` keeps its scripts.
const RABBIT_BIN: &str = "/usr/lib/rabbitmq/bin";

/// RabbitMQ's scripts, or why the test cannot run.
fn rabbitmq_or_skip() -> Option<PathBuf> {
    let dir = PathBuf::from(RABBIT_BIN);
    if dir.join("rabbitmq-server").exists() && dir.join("rabbitmqctl").exists() {
        return Some(dir);
    }
    let msg = "rabbitmq-server is not installed (apt-get install rabbitmq-server; tools/test.sh does this as root)";
    if std::env::var_os("CI").is_some() {
        panic!("{msg}. CI must run the fleet test against a RabbitMQ cluster");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

/// A Mosquitto ACL filter (`gatewarden/v1/+/flow_batch`) as a RabbitMQ
/// topic-permission regex over routing keys (`gatewarden.v1.*.flow_batch`:
/// the MQTT plugin maps `/` to `.`, `+` to `*` and `#` to `#`).
fn filter_regex(filter: &str) -> String {
    let levels: Vec<String> = filter
        .split('/')
        .map(|l| match l {
            "+" => "[^.]+".to_string(),
            "#" => ".*".to_string(),
            l => l.replace('.', "\\.").replace('-', "\\-"),
        })
        .collect();
    levels.join("\\.").replace("\\..*", "(\\..*)?")
}

/// RabbitMQ definitions (users, permissions, topic permissions) from the
/// ACL `gatewarden pki mosquitto-conf` wrote: one user per certificate CN
/// (no password: only its certificate logs it in), its own MQTT queues, and
/// on `amq.topic` the topics its Mosquitto block lets it write and read.
fn rabbit_definitions(acl: &str) -> Value {
    let mut users: Vec<(String, Vec<String>, Vec<String>)> = Vec::new();
    for line in acl.lines() {
        if let Some(subject) = line.strip_prefix("user ") {
            let cn = subject.split(',').find_map(|p| p.strip_prefix("CN=")).unwrap_or(subject);
            users.push((cn.to_string(), Vec::new(), Vec::new()));
        } else if let (Some(u), Some(rest)) = (users.last_mut(), line.strip_prefix("topic ")) {
            match rest.split_once(' ') {
                Some(("write", f)) => u.1.push(filter_regex(f)),
                Some(("read", f)) => u.2.push(filter_regex(f)),
                Some(("readwrite", f)) => {
                    u.1.push(filter_regex(f));
                    u.2.push(filter_regex(f));
                }
                _ => {}
            }
        }
    }
    let any = |v: &[String]| if v.is_empty() { "^$".to_string() } else { format!("^({})$", v.join("|")) };
    let queues = |u: &str| format!("^mqtt-subscription-{}qos[01]$", u.replace('-', "\\-"));
    serde_json::json!({
        "vhosts": [{"name": "/"}],
        "users": users.iter().map(|(u, _, _)| serde_json::json!({
            "name": u, "password_hash": "", "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ""
        })).collect::<Vec<_>>(),
        "permissions": users.iter().map(|(u, _, _)| serde_json::json!({
            "user": u, "vhost": "/", "configure": queues(u),
            "write": format!("^(amq\\.topic|{})$", &queues(u)[1..queues(u).len() - 1]),
            "read": format!("^(amq\\.topic|{})$", &queues(u)[1..queues(u).len() - 1]),
        })).collect::<Vec<_>>(),
        "topic_permissions": users.iter().map(|(u, w, r)| serde_json::json!({
            "user": u, "vhost": "/", "exchange": "amq.topic", "write": any(w), "read": any(r)
        })).collect::<Vec<_>>(),
    })
}

/// A two-node RabbitMQ cluster on this machine with the MQTT plugin on a
/// mutual-TLS listener per node: its own epmd port, node names, ports,
/// database and log directories in the test's temporary directory, one
/// Erlang cookie. Dropping it kills both nodes and its epmd.
struct RabbitCluster {
    bin: PathBuf,
    home: PathBuf,
    epmd: u16,
    nodes: Vec<(String, PathBuf, Guard)>,
    mqtt: Vec<u16>,
}

impl RabbitCluster {
    fn ctl(&self, node: &str, args: &[&str]) -> std::process::Output {
        Command::new(self.bin.join("rabbitmqctl"))
            .args(["-n", node])
            .args(args)
            .env("HOME", &self.home)
            .env("ERL_EPMD_PORT", self.epmd.to_string())
            .stdin(Stdio::null())
            .output()
            .expect("run rabbitmqctl")
    }

    fn await_startup(&self, node: &str, dir: &Path) {
        let start = Instant::now();
        loop {
            let out = self.ctl(node, &["await_startup", "--timeout", "60"]);
            if out.status.success() {
                return;
            }
            let log = std::fs::read_to_string(dir.join(format!("log/{node}.log"))).unwrap_or_default();
            assert!(
                start.elapsed() < Duration::from_secs(150),
                "RabbitMQ node {node} did not start: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                log.lines().rev().take(30).collect::<Vec<_>>().join("\n")
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Starts node a (with the definitions) and node b, which joins a at
    /// first boot (classic peer discovery), and waits until both run in one cluster.
    fn start(bin: PathBuf, dir: &Path, pki: &Path) -> RabbitCluster {
        let home = dir.join("home");
        std::fs::create_dir_all(&home).unwrap();
        let cookie = home.join(".erlang.cookie");
        std::fs::write(&cookie, format!("gatewardenfleet{}", std::process::id())).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cookie, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(dir.join("enabled_plugins"), "[rabbitmq_mqtt].\n").unwrap();
        let acl = std::fs::read_to_string(pki.join("mosquitto/acl")).unwrap();
        let defs = dir.join("definitions.json");
        std::fs::write(&defs, rabbit_definitions(&acl).to_string()).unwrap();
        let mut c = RabbitCluster { bin, home, epmd: free_port(), nodes: Vec::new(), mqtt: Vec::new() };
        let names = ["fleet-a@localhost", "fleet-b@localhost"];
        for (i, name) in names.iter().enumerate() {
            let nd = dir.join(&name[..7]);
            std::fs::create_dir_all(&nd).unwrap();
            let (amqp, dist, mqtt) = (free_port(), free_port(), free_port());
            let mut conf = format!(
                "listeners.tcp.default = 127.0.0.1:{amqp}\n\
                 mqtt.listeners.tcp = none\n\
                 mqtt.listeners.ssl.default = 127.0.0.1:{mqtt}\n\
                 mqtt.allow_anonymous = false\n\
                 mqtt.ssl_cert_login = true\n\
                 ssl_cert_login_from = common_name\n\
                 mqtt.vhost = /\n\
                 mqtt.exchange = amq.topic\n\
                 ssl_options.cacertfile = {ca}\n\
                 ssl_options.certfile = {crt}\n\
                 ssl_options.keyfile = {key}\n\
                 ssl_options.verify = verify_peer\n\
                 ssl_options.fail_if_no_peer_cert = true\n\
                 log.file.level = warning\n\
                 log.console = false\n",
                ca = pki.join("ca.crt").display(),
                crt = pki.join("mosquitto/broker.crt").display(),
                key = pki.join("mosquitto/broker.key").display(),
            );
            if i == 0 {
                conf.push_str(&format!("load_definitions = {}\n", defs.display()));
            } else {
                conf.push_str(&format!(
                    "cluster_formation.peer_discovery_backend = classic_config\n\
                     cluster_formation.classic_config.nodes.1 = {}\n",
                    names[0]
                ));
            }
            std::fs::write(nd.join("rabbitmq.conf"), conf).unwrap();
            let out = std::fs::File::create(nd.join("out.log")).unwrap();
            let proc = Guard::spawn(
                Command::new(c.bin.join("rabbitmq-server"))
                    .env("HOME", &c.home)
                    .env("ERL_EPMD_PORT", c.epmd.to_string())
                    .env("RABBITMQ_NODENAME", name)
                    .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
                    .env("RABBITMQ_DIST_PORT", dist.to_string())
                    .env("RABBITMQ_CONFIG_FILE", nd.join("rabbitmq.conf"))
                    .env("RABBITMQ_MNESIA_BASE", nd.join("mnesia"))
                    .env("RABBITMQ_LOG_BASE", nd.join("log"))
                    .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
                    .env("RABBITMQ_PLUGINS_EXPAND_DIR", nd.join("plugins-expand"))
                    .env("RABBITMQ_PID_FILE", nd.join("pid"))
                    .stdin(Stdio::null())
                    .stdout(out.try_clone().unwrap())
                    .stderr(out),
            );
            c.nodes.push((name.to_string(), nd.clone(), proc));
            c.mqtt.push(mqtt);
            c.await_startup(name, &nd);
        }
        let status = c.ctl(names[0], &["cluster_status", "--formatter", "json"]);
        let v: Value = serde_json::from_slice(&status.stdout).unwrap_or(Value::Null);
        let running = v["running_nodes"].as_array().map(|a| a.len()).unwrap_or(0);
        assert_eq!(running, 2, "both RabbitMQ nodes run in one cluster: {}", String::from_utf8_lossy(&status.stdout));
        c
    }

    /// The Erlang VM of node `i` (the script's child), for the CPU figure.
    fn beam_pid(&self, i: usize) -> u32 {
        std::fs::read_to_string(self.nodes[i].1.join("pid")).unwrap().trim().parse().unwrap()
    }
}

impl Drop for RabbitCluster {
    fn drop(&mut self) {
        let beams: Vec<String> = (0..self.nodes.len())
            .filter_map(|i| std::fs::read_to_string(self.nodes[i].1.join("pid")).ok())
            .map(|p| p.trim().to_string())
            .collect();
        for pid in &beams {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
        self.nodes.clear();
        // epmd refuses to stop while it lists a node: wait for the VMs to be gone.
        let start = Instant::now();
        while beams.iter().any(|p| Path::new(&format!("/proc/{p}")).exists())
            && start.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        for _ in 0..20 {
            let out = Command::new("epmd")
                .args(["-port", &self.epmd.to_string(), "-kill"])
                .env("ERL_EPMD_PORT", self.epmd.to_string())
                .output();
            // "Killed" once it stopped; "cannot connect" once it is gone.
            match out {
                Ok(o) if String::from_utf8_lossy(&o.stdout).contains("Killing not allowed") => {
                    std::thread::sleep(Duration::from_millis(250))
                }
                _ => break,
            }
        }
    }
}

/// `mosquitto_pub` (QoS 1, so it waits for the broker's answer) on node `port`.
fn rabbit_pub(pki: &Path, port: u16, cert: Option<&str>, client: &str, topic: &str) -> bool {
    let mut c = Command::new("mosquitto_pub");
    c.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-V",
        "mqttv311",
        "-q",
        "1",
        "-i",
        client,
        "-t",
        topic,
        "-m",
        "x",
    ])
    .arg("--cafile")
    .arg(pki.join("ca.crt"));
    if let Some(id) = cert {
        c.arg("--cert").arg(pki.join(format!("nodes/{id}.crt"))).arg("--key").arg(pki.join(format!("nodes/{id}.key")));
    }
    let out = c.stdin(Stdio::null()).output().expect("run mosquitto_pub (apt-get install mosquitto-clients)");
    out.status.success()
}

/// Both cluster nodes take a router's certificate for its own topic, and
/// refuse a client without a certificate and a router writing under a
/// detector's name (the topic permissions made from the Mosquitto ACL).
fn rabbit_refuses_strangers_and_forgers(pki: &Path, cluster: &RabbitCluster) {
    for &port in &cluster.mqtt {
        assert!(
            rabbit_pub(pki, port, Some("router-0"), "router-0", "gatewarden/v1/router-0/heartbeat"),
            "router-0 may publish its own heartbeat on node port {port}"
        );
        assert!(
            !rabbit_pub(pki, port, None, "stranger", "gatewarden/v1/router-0/heartbeat"),
            "a client without a certificate is refused on node port {port}"
        );
        assert!(
            !rabbit_pub(pki, port, Some("router-0"), "router-0", "gatewarden/v1/det-1/verdict"),
            "router-0 may not publish as det-1 on node port {port}"
        );
    }
}

/// The 10-router fleet against a two-node RabbitMQ cluster: half the
/// routers, one detector and the monitor on node a, the rest on node b, so
/// flow batches, verdicts and alerts cross the cluster.
#[test]
fn ten_routers_through_a_two_node_rabbitmq_cluster_with_mutual_tls() {
    let Some(bin) = rabbitmq_or_skip() else { return };
    let routers = 10;
    let dir = tempfile::tempdir().unwrap();
    make_pki(dir.path(), routers);
    gw(&[
        "pki",
        "mosquitto-conf",
        "--dir",
        dir.path().to_str().unwrap(),
        "--port",
        "8883",
        "--bind",
        "127.0.0.1",
        "--user",
        "root",
    ]);
    let t = Instant::now();
    let cluster = RabbitCluster::start(bin, &dir.path().join("rabbit"), dir.path());
    eprintln!("fleet: the two-node RabbitMQ cluster started in {:.1} s", t.elapsed().as_secs_f64());
    rabbit_refuses_strangers_and_forgers(dir.path(), &cluster);
    let brokers: Vec<String> = cluster.mqtt.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let pids = [cluster.beam_pid(0), cluster.beam_pid(1)];
    run_fleet(BrokerKind::Rabbit, dir.path(), &brokers, &pids, routers, Duration::from_secs(200));
}
