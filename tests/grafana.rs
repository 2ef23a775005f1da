//! The Grafana dashboard against a real Prometheus: Debian's `prometheus`
//! scrapes a 3-node fleet (router, detector, monitor: three `gatewarden run`
//! processes over a real Mosquitto with mutual TLS), the router replays the
//! bundled demo capture with enforcement on, and every panel's query from
//! contrib/grafana/gatewarden.json is evaluated through Prometheus' HTTP API
//! and must return data. Each node's /metrics must also pass
//! `promtool check metrics`.
//!
//! The fleet runs inside a fresh network namespace (the router writes real
//! nftables block sets there): the test re-executes itself inside it, like
//! tests/bus_enforce.rs. Needs root; without root, Mosquitto or Prometheus it
//! prints SKIPPED, and under `CI` it fails instead.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::mosquitto::{mosquitto_or_skip, Broker};
use common::{bin, free_port, wait_for, wait_http_ok, Guard};
use serde_json::Value;

const INNER: &str = "GATEWARDEN_TEST_INSIDE_NETNS";

/// The window `$__rate_interval` stands for: Grafana makes it at least four
/// scrape intervals; the test scrapes every second.
const RATE_INTERVAL: &str = "15s";

fn dashboard() -> Value {
    let path = common::root().join("contrib/grafana/gatewarden.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every (panel title, expression) of the dashboard.
fn queries(dash: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().into_iter().flatten() {
            out.push((panel["title"].as_str().unwrap_or("?").to_string(), t["expr"].as_str().unwrap().to_string()));
        }
    }
    out
}

/// The labels an expression groups by (`sum by (a, b) (...)`).
fn grouped_by(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in expr.match_indices("by (") {
        let rest = &expr[i + 4..];
        let inner = &rest[..rest.find(')').unwrap()];
        out.extend(inner.split(',').map(|l| l.trim().to_string()).filter(|l| !l.is_empty() && l != "le"));
    }
    out
}

#[test]
fn the_dashboard_has_job_and_instance_variables_rate_intervals_and_descriptions() {
    let dash = dashboard();
    let vars: Vec<&str> =
        dash["templating"]["list"].as_array().unwrap().iter().filter_map(|v| v["name"].as_str()).collect();
    assert!(vars.contains(&"job") && vars.contains(&"instance"), "template variables: {vars:?}");
    for panel in dash["panels"].as_array().unwrap() {
        let d = panel["description"].as_str().unwrap_or("");
        assert!(d.len() > 20, "panel {:?} has no description", panel["title"]);
    }
    let qs = queries(&dash);
    assert!(qs.len() >= 25, "only {} queries", qs.len());
    // The latency histograms each have a panel.
    for h in
        ["gatewarden_verdict_latency_seconds", "gatewarden_block_latency_seconds", "gatewarden_detector_batch_seconds"]
    {
        let q = "histogram_quantile(0.95, sum by (le";
        assert!(qs.iter().any(|(_, e)| e.contains(q) && e.contains(&format!("{h}_bucket"))), "no p95 panel for {h}");
    }
    for (title, expr) in &qs {
        // Every range is Grafana's: no fixed [1m]/[5m] that breaks with the scrape interval.
        for (i, _) in expr.match_indices('[') {
            let range = &expr[i..=i + expr[i..].find(']').unwrap()];
            assert!(range == "[$__rate_interval]" || range == "[$__range]", "{title}: fixed range {range} in {expr}");
        }
        // Every metric is narrowed to the chosen job and instances.
        for (i, _) in expr.match_indices("gatewarden_") {
            let rest = &expr[i..];
            let name_end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            assert!(
                rest[name_end..].starts_with("{job=~\"$job\",instance=~\"$instance\"}"),
                "{title}: {} is not narrowed to $job/$instance in {expr}",
                &rest[..name_end]
            );
        }
    }
}

/// True when running inside the namespace; otherwise runs `test` there
/// (asserting it passed) and returns false.
fn inside_netns(test: &str) -> bool {
    if std::env::var_os(INNER).is_some() {
        return true;
    }
    if !common::netns::require_root(test) {
        return false;
    }
    let ns = common::netns::Netns::new("graf");
    let exe = std::env::current_exe().unwrap();
    let out = ns
        .command(exe.to_str().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(INNER, "1")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{text}");
    assert!(out.status.success(), "inside namespace {}: {text}", ns.name);
    assert!(text.contains("1 passed"), "the test ran inside the namespace: {text}");
    false
}

/// Debian's `prometheus` and `promtool`, or why the test cannot run.
fn prometheus_or_skip() -> Option<(PathBuf, PathBuf)> {
    let find = |name: &str| ["/usr/bin", "/usr/local/bin"].iter().map(|d| Path::new(d).join(name)).find(|p| p.exists());
    if let (Some(p), Some(t)) = (find("prometheus"), find("promtool")) {
        return Some((p, t));
    }
    let msg = "prometheus/promtool are not installed (apt-get install prometheus; tools/test.sh does this as root)";
    if std::env::var_os("CI").is_some() {
        panic!("{msg}. CI must run the dashboard against a real Prometheus");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

/// Sends the frames of an Ethernet pcap out of `iface` (AF_PACKET, from
/// Python, which the suite already needs), `speedup` times faster than
/// recorded: live traffic for the router's capture, with live timestamps.
fn send_pcap(pcap: &Path, iface: &str, speedup: f64) {
    const SENDER: &str = r#"
import socket, struct, sys, time
path, iface, speedup = sys.argv[1], sys.argv[2], float(sys.argv[3])
data = open(path, 'rb').read()
assert data[:4] == b'\xd4\xc3\xb2\xa1' and struct.unpack('<I', data[20:24])[0] == 1, 'little-endian Ethernet pcap'
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((iface, 0))
off, first, t0, sent = 24, None, time.time(), 0
while off + 16 <= len(data):
    sec, usec, caplen, _ = struct.unpack('<IIII', data[off:off + 16])
    frame = data[off + 16:off + 16 + caplen]
    off += 16 + caplen
    t = sec + usec / 1e6
    first = t if first is None else first
    wait = (t - first) / speedup - (time.time() - t0)
    if wait > 0:
        time.sleep(wait)
    s.send(frame)
    sent += 1
print(sent, 'frames sent')
"#;
    let out = Command::new("python3")
        .args(["-c", SENDER])
        .arg(pcap)
        .args([iface, &speedup.to_string()])
        .output()
        .expect("python3 (tools/test.sh installs it)");
    assert!(
        out.status.success(),
        "sending {}: {}{}",
        pcap.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|c| match c {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (c as char).to_string(),
            _ => format!("%{c:02X}"),
        })
        .collect()
}

/// `GET /api/v1/<path>?<params>` on Prometheus; the `data` of a success.
fn prom(addr: &str, path: &str, params: &[(&str, &str)]) -> Value {
    let q: Vec<String> = params.iter().map(|(k, v)| format!("{k}={}", url_encode(v))).collect();
    let (code, _, body) = common::http("GET", addr, &format!("/api/v1/{path}?{}", q.join("&"))).unwrap();
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("prometheus {path} ({e}): {body}"));
    assert!(code == 200 && v["status"] == "success", "prometheus {path} {params:?}: {code} {body}");
    v["data"].clone()
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

fn counter(port: u16, name: &str) -> f64 {
    let (_, _, body) = common::http("GET", &format!("127.0.0.1:{port}"), "/api/status").unwrap_or_default();
    let v: Value = serde_json::from_str(&body).unwrap_or_default();
    v["counters"][name].as_f64().unwrap_or(0.0)
}

fn run_node(cfg: &Path, role: &str, extra: &[&str]) -> Guard {
    let mut c = Command::new(bin());
    c.args(["run", "--role", role, "--config", cfg.to_str().unwrap()]).args(extra).env("RUST_LOG", "warn");
    Guard::spawn(&mut c)
}

#[test]
fn every_panel_returns_data_from_prometheus_scraping_a_three_node_fleet() {
    if !inside_netns("every_panel_returns_data_from_prometheus_scraping_a_three_node_fleet") {
        return;
    }
    let Some(exe) = mosquitto_or_skip() else { return };
    let Some((prometheus, promtool)) = prometheus_or_skip() else { return };
    // A veth pair with both ends in this namespace (nothing reaches the host):
    // the test sends the attack into gw-a, the router captures it on gw-b.
    common::netns::run(&["ip", "link", "add", "gw-a", "type", "veth", "peer", "name", "gw-b"]);
    common::netns::run(&["ip", "link", "set", "gw-a", "up"]);
    common::netns::run(&["ip", "link", "set", "gw-b", "up"]);
    let broker = Broker::start(exe, &[("router-1", "router"), ("det-1", "detector"), ("mon-1", "monitor")]);
    let (pm, pd, pr) = (free_port(), free_port(), free_port());
    // Every node echoes the monitor's link probes; the monitor probes the other two.
    let (lm, ld, lr) = (free_port(), free_port(), free_port());
    let link = |port: u16| format!("[link]\nlisten = \"127.0.0.1:{port}\"\n");
    let mon_cfg = broker.node_config(
        "mon-1",
        pm,
        &format!(
            "[monitor]\ndata_dir = \"{}\"\n{}peers = [\"router-1=127.0.0.1:{lr}\", \"det-1=127.0.0.1:{ld}\"]\nprobe_interval_ms = 200\n",
            broker.pki().join("data-mon-1").display(),
            link(lm)
        ),
    );
    let _mon = run_node(&mon_cfg, "monitor", &[]);
    let _det = run_node(&broker.node_config("det-1", pd, &link(ld)), "detector", &[]);
    for p in [pm, pd] {
        assert!(wait_http_ok(&format!("127.0.0.1:{p}"), "/healthz", Duration::from_secs(15)));
        wait_for("monitor and detector on the bus", Duration::from_secs(20), || {
            counter(p, "gatewarden_mqtt_connected") == 1.0
        });
    }

    // Prometheus scrapes every node each second, from before the attack.
    let dir = broker.pki().to_path_buf();
    let targets: Vec<String> = [pr, pd, pm].iter().map(|p| format!("'127.0.0.1:{p}'")).collect();
    let prom_port = free_port();
    let prom_addr = format!("127.0.0.1:{prom_port}");
    let yml = dir.join("prometheus.yml");
    std::fs::write(
        &yml,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: gatewarden\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let _prom = Guard::spawn(
        Command::new(&prometheus)
            .arg(format!("--config.file={}", yml.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address={prom_addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log),
    );
    assert!(
        wait_http_ok(&prom_addr, "/-/ready", Duration::from_secs(30)),
        "prometheus did not start: {}",
        std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
    );

    // The router captures live on gw-b, with enforcement on.
    let router_cfg = broker.node_config(
        "router-1",
        pr,
        // The capture's hosts are on the LAN side (so the spoof check does not take them for forgers).
        &format!(
            "[capture]\ninterface = \"gw-b\"\n[enforce]\nenabled = true\nlan_prefixes = [\"192.0.2.0/24\", \"198.51.100.0/24\"]\n{}",
            link(lr)
        ),
    );
    let _router = run_node(&router_cfg, "router", &[]);
    assert!(wait_http_ok(&format!("127.0.0.1:{pr}"), "/healthz", Duration::from_secs(15)));
    wait_for("the router on the bus", Duration::from_secs(20), || counter(pr, "gatewarden_mqtt_connected") == 1.0);
    // Every node scraped a few times before the attack: a rate needs a sample from before it.
    wait_for("three scrapes of every node", Duration::from_secs(30), || {
        let r =
            prom(&prom_addr, "query", &[("query", "count_over_time(up{job=\"gatewarden\"}[30s]) >= 3 and up == 1")]);
        r["result"].as_array().unwrap().len() == 3
    });
    let before: Vec<(&str, String)> = [("router", pr), ("detector", pd), ("monitor", pm)]
        .iter()
        .map(|(role, port)| (*role, common::http("GET", &format!("127.0.0.1:{port}"), "/metrics").unwrap().2))
        .collect();
    let start = unix_now();
    // The demo capture (scan, SYN flood, brute force, ICMP and UDP floods), ten times faster than recorded.
    send_pcap(&common::root().join("samples/demo.pcap"), "gw-a", 10.0);
    wait_for("a verdict blocked in the router's nftables", Duration::from_secs(60), || {
        counter(pr, "gatewarden_enforce_blocks_total{origin=detector}") > 0.0
    });
    wait_for("every node scraped, after the blocks", Duration::from_secs(30), || {
        let r = prom(&prom_addr, "query", &[("query", "gatewarden_block_latency_seconds_count > 0")]);
        let up = prom(&prom_addr, "query", &[("query", "sum(up{job=\"gatewarden\"})")]);
        !r["result"].as_array().unwrap().is_empty() && up["result"][0]["value"][1] == "3"
    });
    // A few more scrapes, so every rate has two samples after the attack.
    std::thread::sleep(Duration::from_secs(3));
    let end = unix_now();

    // Every role's /metrics is valid exposition text.
    for (role, port) in [("router", pr), ("detector", pd), ("monitor", pm)] {
        let (code, _, text) = common::http("GET", &format!("127.0.0.1:{port}"), "/metrics").unwrap();
        assert_eq!(code, 200, "{role}");
        let mut child = Command::new(&promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
            "promtool check metrics on the {role}'s /metrics:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Every family the attack made a node export was there, at zero, before it.
    let families = |text: &str| -> std::collections::BTreeSet<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap().to_string())
            .collect()
    };
    for ((role, port), (_, start_text)) in [("router", pr), ("detector", pd), ("monitor", pm)].iter().zip(&before) {
        let now = common::http("GET", &format!("127.0.0.1:{port}"), "/metrics").unwrap().2;
        let late: Vec<String> = families(&now)
            .difference(&families(start_text))
            // Labelled by attack kind × action × the deciding rule: 768 series at zero would be noise.
            .filter(|f| *f != "gatewarden_response_total")
            .cloned()
            .collect();
        assert!(late.is_empty(), "{role}: series that appeared only after the attack (not registered at 0): {late:?}");
    }

    // Every panel's query, as Grafana would send it, returns data over the run.
    let instances = [pr, pd, pm].map(|p| format!("127.0.0.1:{p}")).join("|");
    let range = format!("{}s", (end - start).ceil() as u64 + 5);
    let mut empty = Vec::new();
    let dash = dashboard();
    for (title, expr) in queries(&dash) {
        let q = expr
            .replace("$job", "gatewarden")
            .replace("$instance", &instances.replace('.', "\\\\."))
            .replace("$__rate_interval", RATE_INTERVAL)
            .replace("$__range", &range);
        let data = prom(
            &prom_addr,
            "query_range",
            &[("query", &q), ("start", &format!("{start:.3}")), ("end", &format!("{end:.3}")), ("step", "1")],
        );
        let series = data["result"].as_array().unwrap();
        let has_value = |s: &Value| {
            s["values"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v[1].as_str().is_some_and(|x| x.parse::<f64>().is_ok_and(|f| f.is_finite())))
        };
        if !series.iter().any(has_value) {
            let got = data["result"].to_string();
            empty.push(format!("{title}: {q}\n    got {}", &got[..got.len().min(400)]));
            continue;
        }
        // A legend grouped by a label the metric does not have is one blank line.
        for label in grouped_by(&expr) {
            for s in series {
                let v = s["metric"][&label].as_str().unwrap_or("");
                assert!(!v.is_empty(), "{title}: grouped by {label}, which the series lack: {q}\n{s}");
            }
        }
    }
    assert!(empty.is_empty(), "panels without data:\n{}", empty.join("\n"));
    // The numbers, for the record (docs/ARCHITECTURE.md, "Metrics").
    for h in
        ["gatewarden_verdict_latency_seconds", "gatewarden_block_latency_seconds", "gatewarden_detector_batch_seconds"]
    {
        let q = format!("histogram_quantile(0.95, sum by (le) (increase({h}_bucket[{range}])))");
        let v = prom(&prom_addr, "query", &[("query", &q), ("time", &format!("{end:.3}"))]);
        let n = prom(
            &prom_addr,
            "query",
            &[("query", &format!("sum(increase({h}_count[{range}]))")), ("time", &format!("{end:.3}"))],
        );
        println!("{h}: p95 {} s over {} observations", v["result"][0]["value"][1], n["result"][0]["value"][1]);
    }
}
