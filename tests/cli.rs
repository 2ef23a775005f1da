//! The binary as a user meets it: replay, run, config, help, exit codes.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn demo() -> std::path::PathBuf {
    root().join("samples/demo.pcap")
}

fn run_replay(args: &[&str]) -> std::process::Output {
    Command::new(bin()).arg("replay").args(args).output().unwrap()
}

#[test]
fn replay_json_reports_packets_flows_alerts_and_speed() {
    let out = run_replay(&[demo().to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON object");
    for key in ["packets", "flows", "alerts", "elapsed_s", "pps"] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    // samples/demo.pcap is a lab recording (tests/lab/record.sh): real nmap,
    // hping3 and hydra against the lab's WAN server among benign IoT traffic.
    assert_eq!(v["packets"], 24461);
    assert_eq!(v["flows"], 5417);
    assert!(v["pps"].as_f64().unwrap() > 0.0);
    let alerts = v["alerts"].as_object().unwrap();
    assert!(alerts.len() >= 3, "the README promises at least three kinds of alert: {v}");
    for kind in ["port_scan", "syn_flood", "icmp_flood", "udp_flood"] {
        assert_eq!(alerts.get(kind).and_then(|n| n.as_u64()), Some(1), "one {kind} alert in {v}");
    }
}

#[test]
fn replay_human_summary_lists_alert_kinds() {
    let out = run_replay(&[demo().to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in ["packets", "flows", "alerts", "port_scan", "packets/s"] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
}

#[test]
fn replaying_a_capture_with_full_payloads_reads_headers_and_finds_the_same() {
    // The lab recordings keep headers only; a capture from tcpdump -s 0 keeps
    // whole packets, which a replay seeks past instead of copying. Every record
    // of the demo capture gains 3000 bytes of payload after its headers.
    let bytes = std::fs::read(demo()).unwrap();
    assert_eq!(bytes[..4], [0xd4, 0xc3, 0xb2, 0xa1], "little-endian microsecond pcap");
    let mut padded = bytes[..24].to_vec();
    padded[16..20].copy_from_slice(&65_535u32.to_le_bytes());
    let mut at = 24;
    while at < bytes.len() {
        let incl = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        let orig = u32::from_le_bytes(bytes[at + 12..at + 16].try_into().unwrap());
        padded.extend_from_slice(&bytes[at..at + 8]);
        padded.extend_from_slice(&(incl as u32 + 3000).to_le_bytes());
        padded.extend_from_slice(&(orig.max(incl as u32) + 3000).to_le_bytes());
        padded.extend_from_slice(&bytes[at + 16..at + 16 + incl]);
        padded.extend(std::iter::repeat_n(0xab, 3000));
        at += 16 + incl;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("full.pcap");
    std::fs::write(&path, &padded).unwrap();
    // Evidence keeping 64 KiB of each packet makes the replay read every byte.
    let whole = dir.path().join("whole.toml");
    std::fs::write(&whole, "[evidence]\nsnap_bytes = 65535\n").unwrap();
    let summary = |args: &[&str]| {
        let out = run_replay(args);
        assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        ["packets", "flows", "skipped", "alerts", "verdicts", "batches", "batches_digest"].map(|k| v[k].clone())
    };
    let cut = summary(&[path.to_str().unwrap(), "--json"]);
    let read_whole = summary(&[path.to_str().unwrap(), "--json", "--config", whole.to_str().unwrap()]);
    assert_eq!(cut, read_whole);
    assert_eq!(cut[0], 24461);
}

fn one_line_error(out: &std::process::Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(err.trim_end().lines().count(), 1, "expected one line, got:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn truncated_capture_is_a_one_line_error_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.pcap");
    let bytes = std::fs::read(demo()).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let out = run_replay(&[path.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(2));
    let err = one_line_error(&out);
    assert!(err.contains("cut.pcap") && err.contains("byte offset"), "{err}");
    assert!(out.stdout.is_empty(), "no JSON for a failed replay");
}

#[test]
fn corrupt_record_is_a_one_line_error_with_the_exact_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.pcap");
    let frame = tcp4([192, 0, 2, 1], [192, 0, 2, 2], 1000, 80, 0x02);
    let mut bytes = pcap(&[(1.0, frame.clone()), (1.1, frame)]);
    // Second record header starts at 24 + 16 + 54; give it an absurd length.
    let off = 24 + 16 + 54;
    bytes[off + 8..off + 12].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let out = run_replay(&[path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = one_line_error(&out);
    assert!(err.contains(&format!("byte offset {off}")), "{err}");
    assert!(err.contains("bad.pcap"), "{err}");
}

#[test]
fn a_file_that_is_not_a_capture_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "these are not packets\n").unwrap();
    let out = run_replay(&[path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = one_line_error(&out);
    assert!(err.contains("not a pcap or pcapng"), "{err}");
    let missing = run_replay(&["/nonexistent/x.pcap"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(one_line_error(&missing).contains("/nonexistent/x.pcap"));
}

#[test]
fn realtime_and_max_speed_give_the_same_result() {
    // A 1.5-second capture: a fast scan (RST answers) plus a few normal sessions.
    let mut recs = Vec::new();
    for i in 0..300u16 {
        let t = 100.0 + i as f64 * 0.005;
        recs.push((t, tcp4([203, 0, 113, 9], [192, 0, 2, 10], 50000, 1 + i, 0x02)));
        recs.push((t + 0.0001, tcp4([192, 0, 2, 10], [203, 0, 113, 9], 1 + i, 50000, 0x14)));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scan.pcap");
    std::fs::write(&path, pcap(&recs)).unwrap();
    let strip = |out: std::process::Output| {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let mut v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let o = v.as_object_mut().unwrap();
        o.remove("elapsed_s");
        o.remove("pps");
        o.remove("peak_rss_mb");
        v
    };
    let started = Instant::now();
    let real = strip(run_replay(&[path.to_str().unwrap(), "--json", "--speed", "realtime"]));
    assert!(started.elapsed() >= Duration::from_millis(1400), "realtime replay keeps the recorded pace");
    let max = strip(run_replay(&[path.to_str().unwrap(), "--json", "--speed", "max"]));
    assert_eq!(real, max);
    assert_eq!(max["alerts"]["port_scan"], 1);
}

/// A realtime replay of `recs` (a pcap) with stdout and stderr kept; killed when dropped.
fn spawn_realtime(dir: &std::path::Path, recs: &[(f64, Vec<u8>)]) -> Guard {
    let path = dir.join("far-future.pcap");
    std::fs::write(&path, pcap(recs)).unwrap();
    Guard::spawn(
        Command::new(bin())
            .args(["replay", path.to_str().unwrap(), "--json", "--speed", "realtime"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped()),
    )
}

/// What `guard`'s finished child wrote: (stdout, stderr).
fn outputs(guard: &mut Guard) -> (String, String) {
    let (mut out, mut err) = (String::new(), String::new());
    std::io::Read::read_to_string(guard.child().stdout.as_mut().unwrap(), &mut out).unwrap();
    std::io::Read::read_to_string(guard.child().stderr.as_mut().unwrap(), &mut err).unwrap();
    (out, err)
}

/// 2100-01-01T00:00:00Z, a timestamp a corrupt or crafted capture may carry.
const YEAR_2100: f64 = 4_102_444_800.0;

#[test]
fn a_realtime_replay_shortens_a_far_future_pause_says_so_and_loses_no_frame() {
    let syn = |i: u16| tcp4([192, 0, 2, 20], [198, 51, 100, 80], 40000 + i, 443, 0x02);
    // Then a frame stamped in 2100, then back to the capture's own time.
    let recs = [(100.0, syn(0)), (100.1, syn(1)), (YEAR_2100, syn(2)), (100.2, syn(3)), (100.3, syn(4))];
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut guard = spawn_realtime(dir.path(), &recs);
    let code = guard.wait_timeout(Duration::from_secs(60));
    let took = started.elapsed();
    assert_eq!(code, Some(0), "a realtime replay still waiting for 2100 after {took:?}");
    let (out, err) = outputs(&mut guard);
    let v: serde_json::Value = serde_json::from_str(&out).expect("stdout is one JSON object");
    assert_eq!(v["packets"], 5, "{v}");
    assert!(took >= Duration::from_secs(10), "the pause is shortened to 10 s, not skipped: {took:?}");
    assert!(took < Duration::from_secs(40), "{took:?}");
    // One warning, naming the frame and how much of the pause was cut.
    let warnings: Vec<_> = err.lines().filter(|l| l.contains("shortened")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    let w = warnings[0];
    assert!(w.contains("frame 3") && w.contains("4102444800.000000"), "{w}");
    assert!(w.contains("waits at most 10 s"), "{w}");
    // 2100 less 100.1 s of capture time (less what time passed), less the 10 s waited.
    let by: f64 = w.split("shortened by ").nth(1).and_then(|t| t.trim_end_matches(" s").parse().ok()).unwrap();
    assert!((4_102_444_689.0..=4_102_444_690.0).contains(&by), "{w}");
}

#[test]
fn ctrl_c_stops_a_realtime_replay_waiting_for_a_far_future_frame() {
    let syn = |i: u16| tcp4([192, 0, 2, 20], [198, 51, 100, 80], 40000 + i, 443, 0x02);
    let dir = tempfile::tempdir().unwrap();
    let mut guard = spawn_realtime(dir.path(), &[(100.0, syn(0)), (YEAR_2100, syn(1))]);
    // Started, and into its wait for the second frame.
    std::thread::sleep(Duration::from_secs(2));
    assert!(guard.child().try_wait().unwrap().is_none(), "still waiting for the second frame");
    let stopped = Instant::now();
    guard.signal("INT");
    let code = guard.wait_timeout(Duration::from_secs(2));
    assert_eq!(code, Some(0), "exit code {code:?} {:?} after SIGINT", stopped.elapsed());
    let (out, _) = outputs(&mut guard);
    let v: serde_json::Value = serde_json::from_str(&out).expect("a summary of what was replayed");
    assert_eq!(v["packets"], 1, "{v}");
}

/// A little-endian pcapng block of `kind` around `body` (padded to 4 bytes).
fn ng_block(kind: u32, body: &[u8]) -> Vec<u8> {
    let padded = body.len().div_ceil(4) * 4;
    let len = (12 + padded) as u32;
    let mut v = kind.to_le_bytes().to_vec();
    v.extend(len.to_le_bytes());
    v.extend(body);
    v.resize(8 + padded, 0);
    v.extend(len.to_le_bytes());
    v
}

#[test]
fn a_pcapng_with_obsolete_simple_and_unknown_blocks_replays_every_packet_and_names_what_it_skipped() {
    let frame = |i: u16| tcp4([192, 0, 2, 20], [198, 51, 100, 80], 40000 + i, 443, 0x02);
    let mut section = vec![0x4d, 0x3c, 0x2b, 0x1a, 1, 0, 0, 0];
    section.extend((-1i64).to_le_bytes());
    // Ethernet, snap length 0 (no limit).
    let interface = [1, 0, 0, 0, 0, 0, 0, 0];
    let mut obsolete = vec![0, 0, 0, 0]; // interface 0, no drops
    obsolete.extend(0u32.to_le_bytes());
    obsolete.extend(1_000_000u32.to_le_bytes()); // 1 s in microseconds
    obsolete.extend((frame(0).len() as u32).to_le_bytes());
    obsolete.extend((frame(0).len() as u32).to_le_bytes());
    obsolete.extend(frame(0));
    obsolete.resize(obsolete.len().div_ceil(4) * 4, 0);
    // A 54-byte frame: two bytes of padding follow it.
    let mut simple = (frame(1).len() as u32).to_le_bytes().to_vec();
    simple.extend(frame(1));
    let head = [ng_block(0x0a0d_0d0a, &section), ng_block(1, &interface), ng_block(2, &obsolete)].concat();
    let unknown_at = head.len();
    let bytes = [head, ng_block(0x0000_1234, b"who knows"), ng_block(3, &simple)].concat();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old-writer.pcapng");
    std::fs::write(&path, bytes).unwrap();
    let out = run_replay(&[path.to_str().unwrap(), "--json"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["packets"], 2, "the obsolete and the simple packet: {v}");
    assert_eq!(v["blocks_skipped"], 1, "the unknown block is counted in the summary too: {v}");
    assert_eq!(v["skipped"].as_object().unwrap().values().filter_map(|n| n.as_u64()).sum::<u64>(), 0, "{v}");
    let warning = err.lines().find(|l| l.contains("skipped 1 pcapng block")).unwrap_or_else(|| panic!("{err}"));
    assert!(warning.contains(&format!("type 0x1234 at byte offset {unknown_at}")), "{warning}");
}

fn write_config(dir: &std::path::Path, body: &str) -> std::path::PathBuf {
    let p = dir.join("gatewarden.toml");
    std::fs::write(&p, body).unwrap();
    p
}

fn start_all(dir: &std::path::Path) -> (Guard, String) {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let cfg =
        write_config(dir, &format!("node_id = \"test-node\"\n[http]\nlisten = \"{addr}\"\npublic_status = true\n"));
    let guard = Guard::spawn(
        Command::new(bin()).args(["run", "--role", "all", "--config"]).arg(&cfg).env_remove("GATEWARDEN_ROLE"),
    );
    assert!(wait_http_ok(&addr, "/healthz", Duration::from_secs(10)), "/healthz never answered 200");
    (guard, addr)
}

fn promtool() -> std::path::PathBuf {
    for p in ["/usr/bin/promtool", "/usr/local/bin/promtool"] {
        if std::path::Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("promtool not found: install Debian's `prometheus` package (.ci/run does)");
}

#[test]
fn run_all_serves_healthz_metrics_status_and_page() {
    let dir = tempfile::tempdir().unwrap();
    let (_guard, addr) = start_all(dir.path());
    let (code, head, body) = http("GET", &addr, "/healthz").unwrap();
    assert_eq!(code, 200);
    assert!(head.to_lowercase().contains("application/json"));
    assert!(body.contains("\"ok\""));

    let (code, head, metrics) = http("GET", &addr, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    assert!(metrics.contains("gatewarden_uptime_seconds"), "{metrics}");
    assert!(metrics.contains("gatewarden_bus_dropped_total{kind=\"flow_batch\"} 0"), "{metrics}");
    let file = dir.path().join("metrics.txt");
    std::fs::write(&file, &metrics).unwrap();
    let check = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "promtool rejected /metrics:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    let (code, _, status) = http("GET", &addr, "/api/status").unwrap();
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["role"], "all");
    assert_eq!(v["role_source"], "flag");
    assert_eq!(v["node"], "test-node");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["uptime_s"].as_f64().unwrap() >= 0.0);

    let (code, head, page) = http("GET", &addr, "/").unwrap();
    assert_eq!(code, 200);
    assert!(head.contains("text/html"));
    assert!(page.contains("<title>gatewarden</title>") && page.contains("/api/status"));
    assert!(!page.contains("http://") && !page.contains("https://"), "the page must not fetch from elsewhere");
}

#[test]
fn bad_paths_are_404_json_and_bad_methods_405() {
    let dir = tempfile::tempdir().unwrap();
    let (_guard, addr) = start_all(dir.path());
    let (code, head, body) = http("GET", &addr, "/nope").unwrap();
    assert_eq!(code, 404);
    assert!(head.to_lowercase().contains("application/json"));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"], "not found");
    let (code, head, body) = http("POST", &addr, "/metrics").unwrap();
    assert_eq!(code, 405);
    assert!(head.contains("Allow: GET, HEAD"), "{head}");
    assert!(body.contains("method not allowed"));
    let (code, _, _) = http("DELETE", &addr, "/api/status").unwrap();
    assert_eq!(code, 405);
}

#[test]
fn sigterm_and_sigint_stop_cleanly_within_two_seconds() {
    for sig in ["TERM", "INT"] {
        let dir = tempfile::tempdir().unwrap();
        let (mut guard, _addr) = start_all(dir.path());
        let start = Instant::now();
        guard.signal(sig);
        let code = guard.wait_timeout(Duration::from_secs(2));
        assert_eq!(code, Some(0), "SIG{sig}: exit code {code:?} after {:?}", start.elapsed());
    }
}

#[test]
fn replay_serve_keeps_serving_until_ctrl_c() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "[http]\npublic_status = true\n");
    let mut guard = Guard::spawn(
        Command::new(bin())
            .args(["replay", demo().to_str().unwrap(), "--serve", &addr, "-c", cfg.to_str().unwrap()])
            .stdout(std::process::Stdio::null()),
    );
    assert!(wait_http_ok(&addr, "/healthz", Duration::from_secs(10)));
    // The replay is finished once alerts show up; the server must still be there.
    let start = Instant::now();
    loop {
        let (_, _, body) = http("GET", &addr, "/api/alerts").unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if v["alerts"].as_array().unwrap().len() >= 4 {
            assert!(v["alerts"][0]["event_type"] == "alert");
            assert!(v["alerts"][0]["gatewarden"]["reason"].as_str().unwrap().chars().any(|c| c.is_ascii_digit()));
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "alerts never appeared: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The model page's document carries the embedded model's card and the live verdict counts.
    let (code, _, body) = http("GET", &addr, "/api/model").unwrap();
    assert_eq!(code, 200, "{body}");
    let m: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(m["model"]["feature_schema"]["name"], "gatewarden-flow-host", "{m}");
    assert!(m["model"]["classes"].as_array().is_some_and(|c| c.len() >= 2), "{m}");
    assert!(m["verdicts_by_kind"].as_object().is_some_and(|k| !k.is_empty()), "{m}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(guard.child().try_wait().unwrap().is_none(), "still serving after the replay");
    guard.signal("INT");
    assert_eq!(guard.wait_timeout(Duration::from_secs(2)), Some(0));
}

#[test]
fn no_role_anywhere_is_an_error_listing_roles_and_places() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "[http]\nlisten = \"127.0.0.1:0\"\n");
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    assert!(!cmdline.contains("gatewarden.role="), "this test needs a host without gatewarden.role= on its cmdline");
    let out = Command::new(bin()).args(["run", "--config"]).arg(&cfg).env_remove("GATEWARDEN_ROLE").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in
        ["router", "detector", "monitor", "all", "--role", "GATEWARDEN_ROLE", "gatewarden.role=", "config file"]
    {
        assert!(err.contains(needle), "missing {needle} in {err}");
    }
}

#[test]
fn role_from_environment_and_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let cfg = write_config(dir.path(), &format!("role = \"monitor\"\n[http]\nlisten = \"{addr}\"\n"));
    for (env, want, source) in [(Some("detector"), "detector", "environment"), (None, "monitor", "config_file")] {
        let mut cmd = Command::new(bin());
        cmd.args(["run", "--config"]).arg(&cfg);
        match env {
            Some(r) => cmd.env("GATEWARDEN_ROLE", r),
            None => cmd.env_remove("GATEWARDEN_ROLE"),
        };
        let mut guard = Guard::spawn(&mut cmd);
        assert!(wait_http_ok(&addr, "/healthz", Duration::from_secs(10)));
        let (_, _, body) = http("GET", &addr, "/api/status").unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["role"], want);
        assert_eq!(v["role_source"], source);
        guard.signal("TERM");
        assert_eq!(guard.wait_timeout(Duration::from_secs(2)), Some(0));
    }
    let bad =
        Command::new(bin()).args(["run", "--config"]).arg(&cfg).env("GATEWARDEN_ROLE", "toaster").output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("toaster"));
}

#[test]
fn busy_port_is_a_clear_error() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &format!("[http]\nlisten = \"{addr}\"\n"));
    let out = Command::new(bin()).args(["run", "--role", "all", "--config"]).arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&addr) && err.contains("http.listen"), "{err}");
}

#[test]
fn config_check_and_show() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_config(dir.path(), "role = \"router\"\n[flow]\nmax_flows = 5000\n");
    let out = Command::new(bin()).args(["config", "check"]).arg(&good).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[flow]\nmax_flows = 3\nidle_timeout_s = 0\n").unwrap();
    let out = Command::new(bin()).args(["config", "check"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("flow.max_flows") && err.contains("flow.idle_timeout_s"), "{err}");

    let unknown = dir.path().join("unknown.toml");
    std::fs::write(&unknown, "[http]\nlisen = \"x\"\n").unwrap();
    let out = Command::new(bin()).args(["config", "check"]).arg(&unknown).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("lisen"));

    let out = Command::new(bin()).args(["config", "show", "--config"]).arg(&good).output().unwrap();
    assert!(out.status.success());
    let shown = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(shown.contains("max_flows = 5000") && shown.contains("listen = \"127.0.0.1:8080\""), "{shown}");
    // What `show` prints is itself a valid config.
    let again = dir.path().join("again.toml");
    std::fs::write(&again, &shown).unwrap();
    assert!(Command::new(bin()).args(["config", "check"]).arg(&again).status().unwrap().success());
}

/// A node whose certificate is missing, for another node or for another role
/// used to pass `config check` and then fail at `run`: the check now loads
/// the bus identity as the start will, with the same messages.
#[test]
fn config_check_loads_the_bus_certificates_run_will_need() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let gw = |args: &[&str]| Command::new(bin()).args(args).arg("--dir").arg(&pki).output().unwrap();
    assert!(gw(&["pki", "init"]).status.success());
    assert!(gw(&["pki", "issue", "r1", "--role", "router"]).status.success());
    let node = |id: &str, role: &str, cert: &str| {
        let path = dir.path().join(format!("{id}-{role}-{cert}.toml"));
        std::fs::write(
            &path,
            format!(
                "node_id = \"{id}\"\nrole = \"{role}\"\n[mqtt]\nbroker = \"127.0.0.1:8883\"\nca = \"{ca}\"\ncert = \"{dir}/nodes/{cert}.crt\"\nkey = \"{dir}/nodes/{cert}.key\"\n",
                ca = pki.join("ca.crt").display(),
                dir = pki.display(),
            ),
        )
        .unwrap();
        Command::new(bin()).args(["config", "check"]).arg(&path).output().unwrap()
    };
    let ok = node("r1", "router", "r1");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let said = String::from_utf8_lossy(&ok.stdout);
    assert!(said.contains("broker 127.0.0.1:8883 as node \"r1\""), "{said}");
    for (id, role, cert, needle) in [
        ("r2", "router", "r2", "mqtt.cert/mqtt.key"),
        ("r2", "router", "r1", "is for node \"r1\" but node_id is \"r2\""),
        ("r1", "detector", "r1", "is for role router but this process runs detector"),
    ] {
        let out = node(id, role, cert);
        assert_eq!(out.status.code(), Some(2), "{id} {role} {cert}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{id} {role} {cert}: {err}");
    }
}

#[test]
fn version_and_help_teach() {
    let out = Command::new(bin()).arg("--version").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("gatewarden {}", env!("CARGO_PKG_VERSION")));
    for (args, needles) in [
        (vec!["--help"], vec!["run", "replay", "config", "GATEWARDEN_ROLE"]),
        (vec!["run", "--help"], vec!["--role", "--config", "router", "detector", "monitor", "all"]),
        (vec!["replay", "--help"], vec!["--speed", "--serve", "--json", "realtime", "Examples"]),
        (vec!["config", "check", "--help"], vec!["Validate"]),
        (vec!["config", "show", "--help"], vec!["default"]),
    ] {
        let out = Command::new(bin()).args(&args).output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        for n in needles {
            assert!(text.contains(n), "`gatewarden {}` lacks {n}:\n{text}", args.join(" "));
        }
    }
    let out = Command::new(bin()).arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn log_format_json_writes_one_json_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let cfg = write_config(dir.path(), &format!("[http]\nlisten = \"{addr}\"\n"));
    let mut guard = Guard::spawn(
        Command::new(bin())
            .args(["--log-format", "json", "run", "--role", "all", "--config"])
            .arg(&cfg)
            .stderr(std::process::Stdio::piped()),
    );
    assert!(wait_http_ok(&addr, "/healthz", Duration::from_secs(10)));
    guard.signal("TERM");
    assert_eq!(guard.wait_timeout(Duration::from_secs(2)), Some(0));
    let mut err = String::new();
    std::io::Read::read_to_string(guard.child().stderr.as_mut().unwrap(), &mut err).unwrap();
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 2, "{err}");
    for l in lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v.get("level").is_some() && v.get("timestamp").is_some(), "{l}");
    }
    assert!(err.contains("stopped cleanly"));
}

#[test]
fn model_command_checks_the_embedded_model_and_refuses_a_foreign_schema() {
    let out = Command::new(bin()).arg("model").output().unwrap();
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("embedded model: ok") && text.contains("gatewarden-flow-host v1"), "{text}");
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.tflite");
    std::fs::write(&model, gatewarden::detect::model::DEFAULT_TFLITE).unwrap();
    let mut card: serde_json::Value = serde_json::from_str(gatewarden::detect::model::DEFAULT_CARD).unwrap();
    card["feature_schema"]["name"] = serde_json::json!("someone-elses-features");
    std::fs::write(dir.path().join("m.card.json"), card.to_string()).unwrap();
    let out = Command::new(bin()).arg("model").arg(&model).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("someone-elses-features") && err.contains("Retrain"), "{err}");
    let out = Command::new(bin()).args(["model", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("Examples:"));
}
