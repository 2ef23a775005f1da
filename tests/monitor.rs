//! The monitor from outside, through the real binary: the alert store across
//! a kill -9 in the middle of a line, and the API's access control (JWT ES384
//! against the served JWKS, roles, expiry, rate limit).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{bin, free_port, pcap, tcp4, wait_http_ok, Guard};
use serde_json::Value;

/// A capture where `n` sources each scan 300 ports of 192.0.2.10 (one port-scan alert each).
fn scans(dir: &Path, n: u8) -> PathBuf {
    let mut recs = Vec::new();
    for s in 0..n {
        let t0 = 100.0 + s as f64 * 2.0;
        for i in 0..300u16 {
            let t = t0 + i as f64 * 0.003;
            recs.push((t, tcp4([203, 0, 113, 1 + s], [192, 0, 2, 10], 50000, 1 + i, 0x02)));
            recs.push((t + 0.0001, tcp4([192, 0, 2, 10], [203, 0, 113, 1 + s], 1 + i, 50000, 0x14)));
        }
    }
    let p = dir.join("scans.pcap");
    std::fs::write(&p, pcap(&recs)).unwrap();
    p
}

/// HTTP/1.0 with an optional bearer token; returns (status, head, body).
fn req(method: &str, addr: &str, path: &str, token: Option<&str>) -> (u16, String, String) {
    common::request(method, addr, path, token, None).unwrap()
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn token(cfg: &Path, role: &str, ttl: &str) -> String {
    let out = Command::new(bin())
        .args(["token", "issue", "--role", role, "--ttl", ttl, "--sub", role, "-c"])
        .arg(cfg)
        .output()
        .unwrap();
    assert!(out.status.success(), "token issue: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn config(dir: &Path, addr: &str, extra: &str) -> PathBuf {
    let p = dir.join("gatewarden.toml");
    std::fs::write(
        &p,
        format!(
            "node_id = \"mon\"\n[http]\nlisten = \"{addr}\"\n{extra}\n[monitor]\ndata_dir = \"{}\"\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    p
}

#[test]
fn alert_store_survives_kill_9_mid_line() {
    let dir = tempfile::tempdir().unwrap();
    let capture = scans(dir.path(), 12);
    let addr = format!("127.0.0.1:{}", free_port());
    let cfg = config(dir.path(), &addr, "");
    let file = dir.path().join("data/alerts.json");
    // The writer pauses 400 ms in the middle of every line (debug-build fault injection).
    let mut child = Guard::spawn(
        Command::new(bin())
            .args(["replay", "--speed", "max", "-c"])
            .arg(&cfg)
            .arg(&capture)
            .env("GATEWARDEN_TEST_TORN_WRITE_MS", "400")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    let start = Instant::now();
    loop {
        let text = std::fs::read(&file).unwrap_or_default();
        let lines = text.iter().filter(|b| **b == b'\n').count();
        if lines >= 3 && text.last() != Some(&b'\n') {
            child.signal("KILL");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "never caught a half-written line");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(child.wait_timeout(Duration::from_secs(5)).is_some());
    // Counted after the kill: a slow kill may land in a later line's pause.
    let before = std::fs::read(&file).unwrap();
    let complete = before.iter().filter(|b| **b == b'\n').count();
    assert_ne!(before.last(), Some(&b'\n'), "the kill left a partial line on disk");
    let partial_len = before.len() - before.iter().rposition(|b| *b == b'\n').unwrap() - 1;

    // Restart as a monitor on the same directory.
    let viewer = token(&cfg, "viewer", "10m");
    let _mon = Guard::spawn(
        Command::new(bin()).args(["run", "--role", "monitor", "-c"]).arg(&cfg).env_remove("GATEWARDEN_ROLE"),
    );
    assert!(wait_http_ok(&addr, "/healthz", Duration::from_secs(10)));
    let (code, _, body) = req("GET", &addr, "/api/status", Some(&viewer));
    assert_eq!(code, 200, "{body}");
    let status = json(&body);
    let rec = &status["alert_store"]["recovery"];
    assert_eq!(rec["alerts_read"], complete as u64, "every complete line read back: {rec}");
    assert_eq!(rec["bad_lines"], 0);
    assert_eq!(rec["partial"].as_array().unwrap().len(), 1, "{rec}");
    assert_eq!(rec["partial"][0]["bytes"], partial_len as u64);
    assert_eq!(status["alerts_total"], complete as u64);
    let (_, _, body) = req("GET", &addr, "/api/alerts?kind=port_scan&limit=100", Some(&viewer));
    let alerts = json(&body)["alerts"].as_array().unwrap().clone();
    assert_eq!(alerts.len(), complete);
    for a in &alerts {
        assert_eq!(a["event_type"], "alert");
        assert!(a["src_ip"].as_str().unwrap().starts_with("203.0.113."));
        assert_eq!(a["gatewarden"]["state"], "new");
    }
    // The half line was cut off: the file is clean JSON lines again.
    let after = std::fs::read_to_string(&file).unwrap();
    assert!(after.ends_with('\n'));
    assert!(after.lines().all(|l| serde_json::from_str::<Value>(l).is_ok()));
}

#[test]
fn api_needs_tokens_roles_and_keeps_a_rate_limit() {
    let dir = tempfile::tempdir().unwrap();
    let capture = scans(dir.path(), 3);
    let addr = format!("127.0.0.1:{}", free_port());
    let cfg = config(dir.path(), &addr, "rate_limit_per_s = 5\nrate_limit_burst = 60");
    let _srv = Guard::spawn(
        Command::new(bin())
            .args(["replay", "--serve", &addr, "-c"])
            .arg(&cfg)
            .arg(&capture)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    assert!(wait_http_ok(&addr, "/healthz", Duration::from_secs(10)));
    let admin = token(&cfg, "admin", "1h");
    let viewer = token(&cfg, "viewer", "1h");

    // The JWKS verifies the CLI's tokens.
    let (code, _, jwks) = req("GET", &addr, "/.well-known/jwks.json", None);
    assert_eq!(code, 200);
    let verifier = gatewarden::monitor::auth::TokenVerifier::from_jwks(&json(&jwks)).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(verifier.verify(&admin, now).unwrap().role, gatewarden::monitor::auth::AccessRole::Admin);

    // No token: identity only on /api/status, 401 elsewhere.
    let (code, head, body) = req("GET", &addr, "/api/alerts", None);
    assert_eq!(code, 401, "{body}");
    // Header names are case-insensitive (hyper writes `Www-Authenticate`).
    assert!(head.to_ascii_lowercase().contains("www-authenticate: bearer"), "{head}");
    assert!(body.contains("token issue"), "says what to do: {body}");
    let (code, _, body) = req("GET", &addr, "/api/status", None);
    assert_eq!(code, 200);
    let v = json(&body);
    assert_eq!(v["role"], "all");
    assert!(v.get("counters").is_none() && v.get("nodes").is_none(), "{v}");
    // Garbage, foreign-key and expired tokens: 401.
    assert_eq!(req("GET", &addr, "/api/alerts", Some("not.a.token")).0, 401);
    let foreign = gatewarden::monitor::auth::TokenSigner::ephemeral().issue(
        "eve",
        gatewarden::monitor::auth::AccessRole::Admin,
        600,
        now,
    );
    assert_eq!(req("GET", &addr, "/api/alerts", Some(&foreign)).0, 401);
    let short = token(&cfg, "admin", "1s");
    std::thread::sleep(Duration::from_millis(2100));
    let (code, _, body) = req("GET", &addr, "/api/alerts", Some(&short));
    assert_eq!(code, 401);
    assert!(body.contains("expired"), "{body}");

    // Wait for the replay's alerts.
    let start = Instant::now();
    let id = loop {
        let (code, _, body) = req("GET", &addr, "/api/alerts", Some(&viewer));
        assert_eq!(code, 200, "{body}");
        if let Some(a) = json(&body)["alerts"].as_array().unwrap().first() {
            break a["gatewarden"]["id"].as_u64().unwrap();
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no alerts");
        std::thread::sleep(Duration::from_millis(100));
    };
    // Viewer reads but cannot write: 403. Admin writes; the state is in the API and on disk.
    let (code, _, body) = req("POST", &addr, &format!("/api/alerts/{id}/acknowledge"), Some(&viewer));
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("admin"), "{body}");
    assert_eq!(req("POST", &addr, &format!("/api/alerts/{id}/acknowledge"), None).0, 401);
    let (code, _, body) = req("POST", &addr, &format!("/api/alerts/{id}/acknowledge"), Some(&admin));
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["by"], "admin");
    let (_, _, body) = req("GET", &addr, "/api/alerts?state=acknowledged", Some(&viewer));
    let acked = json(&body)["alerts"].as_array().unwrap().clone();
    assert_eq!(acked.len(), 1);
    assert_eq!(acked[0]["gatewarden"]["id"], id);
    let state_file = std::fs::read_to_string(dir.path().join("data/alert-state.json")).unwrap();
    assert!(state_file.contains("\"acknowledged\""), "{state_file}");
    assert_eq!(req("POST", &addr, "/api/alerts/999999/resolve", Some(&admin)).0, 404);
    assert_eq!(req("GET", &addr, "/api/alerts?kind=nonsense", Some(&viewer)).0, 400);

    // Rate limit: a burst of 60 (some already spent above), then 429 with Retry-After.
    let mut limited = None;
    for i in 0..200 {
        let (code, head, _) = req("GET", &addr, "/api/whoami", Some(&viewer));
        if code == 429 {
            limited = Some((i, head));
            break;
        }
    }
    let (i, head) = limited.expect("no 429 within 200 quick requests");
    assert!(i >= 10, "the burst allows most of 60 first, got 429 after {i}");
    assert!(head.contains("Retry-After: 1"), "{head}");
    // Public endpoints are not limited.
    assert_eq!(req("GET", &addr, "/healthz", None).0, 200);
}

#[test]
fn token_issue_without_a_key_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("g.toml");
    std::fs::write(&cfg, "[http]\nlisten = \"127.0.0.1:1\"\n").unwrap();
    let out = Command::new(bin()).args(["token", "issue", "--role", "admin", "-c"]).arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("data_dir") && err.contains("--key"), "{err}");
    let out = Command::new(bin()).args(["token", "issue", "--role", "root"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(bin()).args(["token", "issue", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Examples:") && help.contains("--ttl 1h"), "{help}");
}

#[test]
fn metrics_cover_nodes_alerts_and_pass_promtool() {
    let dir = tempfile::tempdir().unwrap();
    let capture = scans(dir.path(), 2);
    let addr = format!("127.0.0.1:{}", free_port());
    let cfg = config(dir.path(), &addr, "");
    let _srv = Guard::spawn(
        Command::new(bin())
            .args(["replay", "--serve", &addr, "-c"])
            .arg(&cfg)
            .arg(&capture)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    assert!(wait_http_ok(&addr, "/healthz", Duration::from_secs(10)));
    let start = Instant::now();
    let text = loop {
        let (code, _, text) = req("GET", &addr, "/metrics", None);
        assert_eq!(code, 200);
        // Two samples a CPU ratio needs, and the replay's alerts.
        if text.contains("gatewarden_node_cpu_ratio{")
            && text.contains("gatewarden_alerts_total{kind=\"port_scan\",severity=\"medium\"} 2")
        {
            break text;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "series missing:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    };
    for want in [
        "gatewarden_node_cpu_ratio{node=\"mon\"}",
        "gatewarden_node_memory_used_bytes{node=\"mon\"}",
        "gatewarden_node_memory_total_bytes{node=\"mon\"}",
        "gatewarden_process_resident_bytes{node=\"mon\"}",
        "gatewarden_bus_latency_seconds{node=\"mon\"}",
        "gatewarden_alerts_total{kind=\"port_scan\",severity=\"medium\"} 2",
        "gatewarden_packets_total",
        "gatewarden_flows_active",
        "gatewarden_verdicts_total",
    ] {
        assert!(text.contains(want), "{want} missing from /metrics:\n{text}");
    }
    let cpu: f64 = text
        .lines()
        .find(|l| l.starts_with("gatewarden_node_cpu_ratio{"))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!((0.0..=1.0).contains(&cpu), "cpu ratio {cpu}");
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; tools/test.sh installs it)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn grafana_dashboard_uses_only_metrics_gatewarden_exports() {
    let root = common::root();
    let dash: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("contrib/grafana/gatewarden.json")).unwrap()).unwrap();
    let mut src = String::new();
    let mut stack = vec![root.join("src"), root.join("crates")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                src.push_str(&std::fs::read_to_string(p).unwrap());
            }
        }
    }
    let mut checked = 0;
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap();
            for (i, _) in expr.match_indices("gatewarden_") {
                let name: String = expr[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                // A histogram is registered by its base name; queries read its `_bucket` series.
                let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(&name);
                assert!(
                    src.contains(&format!("\"{name}\"")) || src.contains(&format!("\"{base}\"")),
                    "the dashboard uses {name}, which nothing exports"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "only {checked} metric references");
}

/// POST with a JSON body and a bearer token; returns (status, body).
fn post_json(addr: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let (code, _, body) = common::request("POST", addr, path, token, Some(body)).unwrap();
    (code, body)
}

/// The bundled model renamed, as an upload body (`tamper` edits the card first).
fn upload_body(name: &str, tflite: &[u8], tamper: impl FnOnce(&mut Value)) -> String {
    use base64ct::Encoding;
    let root = common::root();
    let mut card: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("models/host-mlp.card.json")).unwrap()).unwrap();
    card["name"] = Value::from(name);
    tamper(&mut card);
    serde_json::json!({"tflite_base64": base64ct::Base64::encode_string(tflite), "card": card}).to_string()
}

#[test]
fn an_uploaded_model_is_checked_hot_reloaded_kept_and_a_mismatch_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let store = dir.path().join("models");
    let cfg = config(dir.path(), &addr, &format!("[detector]\nmodel_store = \"{}\"", store.display()));
    let start = || {
        Guard::spawn(
            Command::new(bin())
                .args(["run", "--role", "all", "-c"])
                .arg(&cfg)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null()),
        )
    };
    let mut gw = start();
    assert!(wait_http_ok(&addr, "/healthz", Duration::from_secs(10)));
    let admin = token(&cfg, "admin", "1h");
    let viewer = token(&cfg, "viewer", "1h");
    let tflite = std::fs::read(common::root().join("models/host-mlp.tflite")).unwrap();
    let (_, _, body) = req("GET", &addr, "/api/model", Some(&viewer));
    assert_eq!(json(&body)["model"]["name"], "gatewarden-host-mlp", "the embedded model runs first: {body}");
    assert_eq!(json(&body)["uploads_possible"], true);

    let good = upload_body("host-mlp-uploaded", &tflite, |_| {});
    // Writes need an admin.
    assert_eq!(post_json(&addr, "/api/model", None, &good).0, 401);
    assert_eq!(post_json(&addr, "/api/model", Some(&viewer), &good).0, 403);
    // Bad requests and bad models: refused with the reason, nothing changes.
    let (code, body) = post_json(&addr, "/api/model", Some(&admin), "{\"tflite_base64\": 3");
    assert_eq!(code, 400, "{body}");
    assert!(json(&body)["error"].as_str().unwrap().contains("not JSON"), "{body}");
    let (code, body) = post_json(&addr, "/api/model", Some(&admin), "{\"tflite_base64\": \"@@@\", \"card\": {}}");
    assert_eq!(code, 400, "{body}");
    let wrong_schema = upload_body("host-mlp-v99", &tflite, |c| c["feature_schema"]["version"] = Value::from(99));
    let (code, body) = post_json(&addr, "/api/model", Some(&admin), &wrong_schema);
    assert_eq!(code, 422, "{body}");
    let reason = json(&body)["error"].as_str().unwrap().to_string();
    assert!(reason.contains("schema") && reason.contains("99"), "the reason names the schema mismatch: {reason}");
    let garbage = upload_body("host-mlp-garbage", &tflite[..tflite.len() / 2], |_| {});
    let (code, body) = post_json(&addr, "/api/model", Some(&admin), &garbage);
    assert_eq!(code, 422, "a truncated .tflite: {body}");
    let (_, _, body) = req("GET", &addr, "/api/model", Some(&viewer));
    assert_eq!(json(&body)["model"]["name"], "gatewarden-host-mlp", "refusals change nothing: {body}");
    assert!(!store.join("uploaded.tflite").exists());

    // A good model: accepted, loaded by the detector (its answer is a system alert), kept.
    let (code, body) = post_json(&addr, "/api/model", Some(&admin), &good);
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["name"], "host-mlp-uploaded");
    assert_eq!(json(&body)["timeout_s"], 60, "how long the page waits for answers at most: {body}");
    let mut last = Value::Null;
    let loaded = common::wait_until(Duration::from_secs(10), || {
        last = json(&req("GET", &addr, "/api/model", Some(&viewer)).2);
        last["model"]["name"] == "host-mlp-uploaded" && last["upload"]["results"]["mon"]["ok"] == true
    });
    assert!(loaded, "the detector loads the upload: {last}");
    assert_eq!(last["upload"]["by"], "admin");
    assert_eq!(last["upload"]["state"], "loaded", "{last}");
    let (_, _, alerts) = req("GET", &addr, "/api/alerts?kind=system", Some(&viewer));
    assert!(alerts.contains("model host-mlp-uploaded") && alerts.contains("is running on mon"), "{alerts}");
    let (_, _, metrics) = req("GET", &addr, "/metrics", None);
    assert!(metrics.contains("gatewarden_model_info{name=\"host-mlp-uploaded\""), "{metrics}");
    assert_eq!(std::fs::read(store.join("uploaded.tflite")).unwrap(), tflite);

    // After a restart the detector still runs the uploaded model.
    drop(gw);
    gw = start();
    assert!(wait_http_ok(&addr, "/healthz", Duration::from_secs(10)));
    let (_, _, body) = req("GET", &addr, "/api/model", Some(&viewer));
    assert_eq!(json(&body)["model"]["name"], "host-mlp-uploaded", "{body}");
    drop(gw);
}
