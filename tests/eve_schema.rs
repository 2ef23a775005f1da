//! Issue #18, "EVE that validates": every alert line the monitor's store
//! writes validates against Suricata's own `etc/schema.json` (kept in
//! `crates/gatewarden-monitor/schema/`, with the Suricata commit it came
//! from), for every kind and every shape an alert takes (with and without
//! addresses, IPv4 and IPv6, TCP, UDP, ICMP, ICMPv6, a protocol Suricata
//! names and one it does not, blocked and each reason it was not); and a
//! real replay's lines do too, with only `allowed` actions, each saying why.
//!
//! The validator is the `jsonschema` crate (the schema names no draft; it
//! uses only keywords every draft has). The pre-#18 line shape (a root
//! `gatewarden{}` object, `null`s) is checked to fail, so the test is not
//! vacuous.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use gatewarden::monitor::alerts::{AlertStore, StoreOptions, ALERT_FILE};
use gatewarden_proto::conn_state::ConnState;
use gatewarden_proto::messages::{Alert, AlertAction, AlertFlow, AttackKind, NotBlocked, Proto, Severity};
use gatewarden_proto::signatures::{signature, signature_id, KINDS};
use serde_json::Value;

use common::{eve_errors as errors, eve_validator as schema};

fn flow(sport: u16, dport: u16, state: ConnState) -> AlertFlow {
    AlertFlow {
        sport,
        dport,
        pkts_toserver: 12,
        pkts_toclient: 3,
        bytes_toserver: 720,
        bytes_toclient: 180,
        start_ns: 1_764_496_799_500_000_001,
        state,
    }
}

/// A detector's traffic alert of `kind` in one of several shapes.
fn traffic(kind: AttackKind, shape: usize) -> Alert {
    let mut a = Alert {
        id: 0,
        ts_ns: 1_764_496_800_000_000_000 + shape as u64,
        node: "router-1".into(),
        flow_id: 0x7_1234_5678_9abc,
        kind,
        severity: Severity::Medium,
        src: Some("203.0.113.66".parse().unwrap()),
        dst: Some("192.0.2.10".parse().unwrap()),
        sport: 40_000,
        dport: 22,
        proto: Some(Proto::Tcp),
        action: AlertAction::Blocked,
        signature_id: signature_id(kind),
        signature: signature(kind).into(),
        confidence: 0.93,
        reason: format!("{} from 203.0.113.66; blocked: policy rule {}", kind.as_str(), kind.as_str()),
        flow: Some(flow(40_000, 22, ConnState::REJ)),
        not_blocked: None,
        in_iface: "lan0".into(),
    };
    match shape {
        0 => {}
        1 => {
            // IPv6 UDP, allowed by policy.
            a.src = Some("2001:db8::66".parse().unwrap());
            a.dst = Some("2001:db8::10".parse().unwrap());
            (a.sport, a.dport, a.proto) = (5353, 53, Some(Proto::Udp));
            a.flow = Some(flow(5353, 53, ConnState::SF));
            a.action = AlertAction::Allowed;
            a.not_blocked = Some(NotBlocked::PolicyAlert);
        }
        2 => {
            // ICMP: type and code, no ports.
            (a.sport, a.dport, a.proto) = (0, 0, Some(Proto::Icmp));
            a.flow = Some(flow(8, 0, ConnState::S0));
        }
        3 => {
            a.src = Some("2001:db8::66".parse().unwrap());
            a.dst = None;
            (a.sport, a.dport, a.proto) = (0, 0, Some(Proto::Icmpv6));
            a.flow = Some(flow(128, 0, ConnState::S0));
            a.action = AlertAction::Allowed;
            a.not_blocked = Some(NotBlocked::Unproven);
        }
        4 => {
            // Many (spoofed) sources, no flow left, no interface known.
            (a.src, a.dst, a.flow, a.flow_id, a.in_iface) = (None, None, None, 0, String::new());
            (a.sport, a.dport, a.proto) = (0, 0, None);
            a.action = AlertAction::Allowed;
            a.not_blocked = Some(NotBlocked::NoSource);
        }
        5 => {
            // A protocol Suricata names (GRE), and one it writes as a number.
            (a.sport, a.dport, a.proto, a.flow) = (0, 0, Some(Proto::Other(47)), None);
            a.action = AlertAction::Allowed;
            a.not_blocked = Some(NotBlocked::Allowlisted);
        }
        _ => {
            (a.sport, a.dport, a.proto, a.flow) = (0, 0, Some(Proto::Other(200)), None);
            a.action = AlertAction::Allowed;
            a.not_blocked = Some(NotBlocked::ALL[shape % NotBlocked::ALL.len()]);
        }
    }
    a
}

/// The alerts the other producers raise, through their own constructors.
fn system_alerts() -> Vec<Alert> {
    use gatewarden::monitor::link::{link_alert, Finding};
    let mut out = vec![
        Alert::about_system("det-1", AttackKind::System, Severity::High, 9_100_001, "GATEWARDEN SYSTEM x", "x".into()),
        Alert::channel_abuse("monitor-1", 1_764_496_800_000_000_000, "forged envelope from router-9".into()),
        Alert::settings_result("router-1", 7, Ok("detector thresholds")),
        Alert::settings_result("router-1", 8, Err("scan_distinct_ports must be at least 2")),
        link_alert(
            "monitor-1",
            "router-1",
            "192.0.2.1:7878".parse().unwrap(),
            &[
                Finding::LatencySpike { recent_p50: 0.2, baseline: 0.001, sigma: 0.0002 },
                Finding::LossBurst { lost: 9, of: 20 },
            ],
            1_764_496_800_000_000_000,
        ),
    ];
    // A router's MAC containment (`spoofing`) and a full block set: what a router did, `blocked`.
    for (kind, sig) in [(AttackKind::Spoofing, signature_id(AttackKind::Spoofing)), (AttackKind::System, 9_100_020)] {
        out.push(Alert {
            action: AlertAction::Blocked,
            not_blocked: None,
            src: Some("192.0.2.77".parse().unwrap()),
            ..Alert::about_system("router-1", kind, Severity::High, sig, "GATEWARDEN contained", "forged".into())
        });
    }
    // A verdict's alert that nothing enforced (a replay).
    out.push(gatewarden::monitor::confirm::unenforced(traffic(AttackKind::PortScan, 0), "a replay enforces nothing"));
    out
}

/// Writes the alerts through the store and returns the file's lines.
fn stored_lines(dir: &Path, alerts: Vec<Alert>) -> Vec<Value> {
    let mut store =
        AlertStore::open(StoreOptions { dir: Some(dir.to_path_buf()), max_bytes: 64 << 20, keep: 2, memory: 10 })
            .expect("store opens");
    for a in alerts {
        store.append(a).expect("append");
    }
    drop(store);
    read_lines(&dir.join(ALERT_FILE))
}

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn assert_all_valid(v: &jsonschema::Validator, lines: &[Value]) {
    let bad: Vec<String> = lines
        .iter()
        .filter_map(|l| Some(errors(v, l)).filter(|e| !e.is_empty()).map(|e| format!("{l}\n{e}")))
        .collect();
    assert!(bad.is_empty(), "{} of {} lines fail Suricata's schema:\n{}", bad.len(), lines.len(), bad.join("\n"));
}

fn meta<'a>(line: &'a Value, key: &str) -> Option<&'a str> {
    line["alert"]["metadata"][key][0].as_str()
}

#[test]
fn the_pre_issue_18_line_fails_the_schema() {
    let v = schema();
    let old: Value = serde_json::from_str(
        r#"{"timestamp":"2026-11-30T10:00:01.000000+0000","flow_id":0,"event_type":"alert","src_ip":null,"src_port":0,"dest_ip":null,"dest_port":0,"proto":null,"alert":{"action":"allowed","gid":1,"signature_id":9100001,"rev":1,"signature":"GATEWARDEN SYSTEM model loaded","category":"system","severity":3},"gatewarden":{"id":2,"kind":"system","confidence":1.0,"reason":"model loaded","node":"det1","ts_ns":1764496801000000000}}"#,
    )
    .unwrap();
    let e = errors(&v, &old);
    assert!(e.contains("gatewarden") && e.contains("null"), "the validator must refuse the old shape: {e}");
}

#[test]
fn every_line_the_store_writes_validates_against_suricatas_schema() {
    let v = schema();
    let dir = tempfile::tempdir().unwrap();
    let mut alerts: Vec<Alert> = KINDS.iter().flat_map(|&k| (0..8).map(move |s| traffic(k, s))).collect();
    alerts.extend(system_alerts());
    let lines = stored_lines(dir.path(), alerts);
    assert_all_valid(&v, &lines);
    // Every kind was written, the long-horizon and router ones included.
    let kinds: BTreeSet<&str> = lines.iter().filter_map(|l| meta(l, "kind")).collect();
    for k in KINDS {
        assert!(kinds.contains(k.as_str()), "no line of kind {}", k.as_str());
    }
    for k in ["system", "link_health", "spoofing", "lan_mapping", "slow_scan", "slow_guessing", "distributed_scan"] {
        assert!(kinds.contains(k), "no line of kind {k}");
    }
    // Shapes: Suricata's spellings, ICMP type/code, no nulls, every `allowed` says why.
    let protos: BTreeSet<&str> = lines.iter().filter_map(|l| l["proto"].as_str()).collect();
    assert_eq!(protos, ["200", "GRE", "ICMP", "IPv6-ICMP", "TCP", "UDP"].into_iter().collect());
    assert!(lines.iter().any(|l| l["proto"] == "ICMP" && l["icmp_type"] == 8 && l.get("src_port").is_none()));
    for l in &lines {
        let text = l.to_string();
        assert!(!text.contains("null"), "absent values are omitted: {text}");
        if l["alert"]["action"] == "allowed" {
            assert!(meta(l, "not_blocked").is_some(), "an `allowed` without its reason: {text}");
        }
        assert!(l["host"].is_string(), "the node is the host: {text}");
    }
    // The store reads back what it wrote.
    let store = AlertStore::open(StoreOptions {
        dir: Some(dir.path().to_path_buf()),
        max_bytes: 64 << 20,
        keep: 2,
        memory: 10,
    })
    .unwrap();
    assert_eq!((store.recovery().alerts_read, store.recovery().bad_lines), (lines.len() as u64, 0));
}

/// Replays `capture` with the store in a fresh data directory; returns its lines.
fn replay(capture: &Path) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gw.toml");
    std::fs::write(
        &cfg,
        format!("node_id = \"gw\"\n[monitor]\ndata_dir = \"{}\"\n", dir.path().join("data").display()),
    )
    .unwrap();
    let out = Command::new(common::bin()).arg("replay").arg("-c").arg(&cfg).arg(capture).output().unwrap();
    assert!(out.status.success(), "replay failed: {}", String::from_utf8_lossy(&out.stderr));
    read_lines(&dir.path().join("data").join(ALERT_FILE))
}

/// A replay through the real binary: its lines validate, it writes only
/// `allowed` (nothing enforces), each with its reason, and TCP alerts carry
/// the evidence flow's real source port and `flow{}`; flow ids are stable
/// hashes, so a second run (a restart) names the same flows the same way.
#[test]
fn a_replay_writes_valid_lines_and_only_allowed_with_the_reason() {
    let v = schema();
    let demo = common::root().join("samples/demo.pcap");
    let lines = replay(&demo);
    let lan = replay(&common::root().join("samples/lan_mapping/arp_scan_localnet.pcap"));
    assert!(lines.len() >= 5, "the demo raises scans, floods and brute force: {lines:#?}");
    assert!(lan.iter().any(|l| meta(l, "kind") == Some("lan_mapping")), "{lan:#?}");
    assert_all_valid(&v, &lines);
    assert_all_valid(&v, &lan);
    for l in lines.iter().chain(&lan) {
        assert_eq!(l["alert"]["action"], "allowed", "a replay blocks nothing: {l}");
        assert!(l.get("in_iface").is_none(), "a file names no capture interface, none is invented: {l}");
        let why = meta(l, "not_blocked").unwrap_or_else(|| panic!("no reason: {l}"));
        assert!(["enforcement_off", "policy_alert", "no_source"].contains(&why), "{why}: {l}");
    }
    assert!(lines.iter().any(|l| meta(l, "not_blocked") == Some("enforcement_off")), "the demo's blocks were asked");
    let tcp: Vec<&Value> = lines.iter().filter(|l| l["proto"] == "TCP" && l.get("flow").is_some()).collect();
    assert!(!tcp.is_empty(), "TCP alerts name their flow: {lines:#?}");
    for l in &tcp {
        let sport = l["src_port"].as_u64().unwrap_or(0);
        assert!(sport > 0, "the source port is the evidence flow's, not 0: {l}");
        assert!(l["flow"]["pkts_toserver"].as_u64().unwrap_or(0) > 0, "{l}");
        assert!(l["flow_id"].as_u64().is_some_and(|id| id > 0 && id < 1 << 51), "{l}");
    }
    let ids = |ls: &[Value]| ls.iter().map(|l| l["flow_id"].as_u64()).collect::<Vec<_>>();
    assert_eq!(ids(&replay(&demo)), ids(&lines), "the same flows get the same ids after a restart");
}

const INNER: &str = "GATEWARDEN_TEST_INSIDE_NETNS";

/// True when running inside a fresh network namespace; otherwise runs
/// `test` there (asserting it passed) and returns false (the pattern of
/// `tests/bus_enforce.rs`).
fn inside_netns(test: &str) -> bool {
    if std::env::var_os(INNER).is_some() {
        return true;
    }
    if !common::netns::require_root(test) {
        return false;
    }
    let nft = Command::new("nft").arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
    if !nft {
        let msg = format!("{test} needs nft (apt-get install nftables) to read the kernel's ruleset");
        if std::env::var_os("CI").is_some() {
            panic!("{msg}");
        }
        eprintln!("SKIPPED: {msg}");
        return false;
    }
    let ns = common::netns::Netns::new("eve");
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

/// Issue #18's acceptance: "a live run writes `blocked` only for addresses
/// that `nft list` shows". A real node (`run --role all`, enforcement on, in
/// its own network namespace) is fed the demo capture; every `blocked` line
/// of its EVE file names a source the kernel's detector block set holds,
/// every `allowed` says why, and every line validates.
#[test]
fn a_live_run_writes_blocked_only_for_addresses_nft_lists() {
    if !inside_netns("a_live_run_writes_blocked_only_for_addresses_nft_lists") {
        return;
    }
    let v = schema();
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let data = dir.path().join("data");
    let cfg = dir.path().join("gw.toml");
    std::fs::write(
        &cfg,
        format!(
            "node_id = \"gw\"\n[http]\nlisten = \"127.0.0.1:{port}\"\npublic_status = true\n\
             [monitor]\ndata_dir = \"{}\"\n[enforce]\nenabled = true\n",
            data.display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("node.log")).unwrap();
    let _node = common::Guard::spawn(
        Command::new(common::bin())
            .args(["run", "--role", "all", "--replay"])
            .arg(common::root().join("samples/demo.pcap"))
            .arg("-c")
            .arg(&cfg)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log),
    );
    let addr = format!("127.0.0.1:{port}");
    assert!(common::wait_http_ok(&addr, "/healthz", Duration::from_secs(30)), "the node never served");
    let path = data.join(ALERT_FILE);
    let lines = || -> Vec<Value> {
        std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    // Generous: a debug build's whole pipeline on a shared 2-core machine;
    // then the confirmation window (3 s) for the last alerts.
    let mut seen = Vec::new();
    let settled = common::wait_until(Duration::from_secs(120), || {
        seen = lines();
        seen.len() >= 5
    });
    let node_log = || std::fs::read_to_string(dir.path().join("node.log")).unwrap_or_default();
    assert!(settled, "the demo's alerts never reached the EVE file: {seen:#?}\n{}", node_log());
    std::thread::sleep(Duration::from_secs(5));
    let seen = lines();
    // What the kernel's detector block sets hold.
    let ruleset: String = ["block4_detector", "block6_detector"]
        .iter()
        .map(|set| {
            let out = Command::new("nft").args(["list", "set", "inet", "gatewarden", set]).output().unwrap();
            String::from_utf8_lossy(&out.stdout).to_string()
        })
        .collect();
    assert_all_valid(&v, &seen);
    // `--replay`: the frames come from a file, so no line names an interface.
    assert!(seen.iter().all(|l| l.get("in_iface").is_none()), "no interface is invented: {seen:#?}");
    let mut blocked = 0;
    for l in &seen {
        match l["alert"]["action"].as_str() {
            Some("blocked") => {
                blocked += 1;
                let src = l["src_ip"].as_str().unwrap_or_else(|| panic!("a block of nobody: {l}"));
                assert!(ruleset.contains(src), "`blocked` for {src}, which nft does not list:\n{ruleset}\n{l}");
            }
            _ => assert!(meta(l, "not_blocked").is_some(), "an `allowed` without its reason: {l}"),
        }
    }
    eprintln!(
        "{} alerts, {blocked} blocked; reasons not blocked: {:?}",
        seen.len(),
        seen.iter().filter_map(|l| meta(l, "not_blocked")).collect::<BTreeSet<_>>()
    );
    assert!(blocked > 0, "the demo's brute force (a proven source) is blocked: {seen:#?}\n{ruleset}\n{}", node_log());
}

/// Issue #18's `in_iface`: a router capturing live on `lan0` (in a namespace
/// site: IoT device — router — WAN) names that interface in every flow
/// batch, so the EVE line of the alert about a real nmap scan carries
/// `"in_iface": "lan0"`, and still validates.
#[test]
fn a_live_capture_names_its_interface_in_the_eve_line() {
    if !common::netns::require_root("a_live_capture_names_its_interface_in_the_eve_line") {
        return;
    }
    let nmap = Command::new("sh").args(["-c", "command -v nmap"]).output().is_ok_and(|o| o.status.success());
    if !nmap {
        assert!(std::env::var_os("CI").is_none(), "nmap is missing: tools/test.sh installs it");
        eprintln!("SKIPPED: nmap not installed");
        return;
    }
    let v = schema();
    let site = common::netns::Site::new();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("gw.toml");
    std::fs::write(
        &cfg,
        format!(
            "node_id = \"rtr\"\n[http]\nlisten = \"127.0.0.1:8080\"\n[capture]\ninterface = \"lan0\"\n\
             [monitor]\ndata_dir = \"{}\"\n",
            data.display()
        ),
    )
    .unwrap();
    let log_path = dir.path().join("node.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut node = common::Guard::spawn(
        site.router
            .command(common::bin().to_str().unwrap())
            .args(["run", "--role", "all", "-c"])
            .arg(&cfg)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log),
    );
    let node_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        common::wait_until(Duration::from_secs(30), || node_log().contains("capturing")),
        "the router never captured lan0:\n{}",
        node_log()
    );
    site.iot.exec(&["nmap", "-n", "-Pn", "-sS", "-T4", "-p", "1-300", "198.51.100.10"]);
    let path = data.join(ALERT_FILE);
    let mut lines = Vec::new();
    let found = common::wait_until(Duration::from_secs(60), || {
        lines = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect();
        lines.iter().any(|l| meta(l, "kind") == Some("port_scan"))
    });
    assert!(found, "the live scan's alert never reached the EVE file: {lines:#?}\n{}", node_log());
    assert_all_valid(&v, &lines);
    let scan = lines.iter().find(|l| meta(l, "kind") == Some("port_scan")).unwrap();
    assert_eq!(scan["src_ip"], "192.0.2.10", "{scan}");
    assert_eq!(scan["in_iface"], "lan0", "the router's capture interface: {scan}");
    node.signal("TERM");
    assert_eq!(node.wait_timeout(Duration::from_secs(5)), Some(0), "{}", node_log());
}
