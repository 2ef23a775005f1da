//! Operator control (`gatewarden ctl`) and group policy (monitor → router
//! over the node bus) against real nftables: the test re-executes itself
//! inside a fresh network namespace, where it runs a real Mosquitto with
//! TLS, a real router process with enforcement on, and the monitor's side of
//! the bus; it reads the kernel's ruleset with `nft`.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::mosquitto::{mosquitto_or_skip, Broker};
use common::{bin, free_port, wait_for, wait_http_ok, Guard};
use gatewarden::bus::mqtt::{MqttBus, MqttSettings};
use gatewarden::bus::policy_push::PolicyPush;
use gatewarden::bus::LocalBus;
use gatewarden::config::Config;
use gatewarden_core::metrics::Registry;
use gatewarden_core::shutdown::Shutdown;
use gatewarden_proto::messages::{GroupRule, PolicyAction, PolicyUpdate, Proto};
use gatewarden_proto::role::Role;

const INNER: &str = "GATEWARDEN_TEST_INSIDE_NETNS";

/// True when running inside the namespace; otherwise runs `test` there
/// (asserting it passed) and returns false.
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
    let ns = common::netns::Netns::new("bus");
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

fn nft(args: &[&str]) -> String {
    let out = Command::new("nft").args(args).output().unwrap();
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn ctl(broker: &Broker, node: &str, id: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(bin())
        .args(["ctl", "--node", node, "--pki", broker.pki().to_str().unwrap(), "--id", id])
        .args(args)
        .output()
        .unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn start_router(cfg: &std::path::Path) -> Guard {
    let mut c = Command::new(bin());
    c.args(["run", "--role", "router", "--config", cfg.to_str().unwrap()]).env("RUST_LOG", "warn");
    Guard::spawn(&mut c)
}

#[test]
fn ctl_blocks_and_unblocks_in_the_routers_nftables_sets() {
    if !inside_netns("ctl_blocks_and_unblocks_in_the_routers_nftables_sets") {
        return;
    }
    let Some(exe) = mosquitto_or_skip() else { return };
    let broker = Broker::start(
        exe,
        &[("router-1", "router"), ("alice", "operator"), ("det-1", "detector"), ("mon-1", "monitor")],
    );
    let (http, ctl_port, mon_http) = (free_port(), free_port(), free_port());
    // A monitor on its own node: its "current blocks" are the router's kernel sets.
    let mut c = Command::new(bin());
    // Its token key lives in data_dir (the dashboard's unblock below needs an admin token).
    let mon_cfg = broker.node_config(
        "mon-1",
        mon_http,
        &format!("[monitor]\ndata_dir = \"{}\"\n", broker.pki().join("data-mon-1").display()),
    );
    c.args(["run", "--role", "monitor", "--config", mon_cfg.to_str().unwrap()]).env("RUST_LOG", "warn");
    let _monitor = Guard::spawn(&mut c);
    let monitor_blocks = || -> Vec<serde_json::Value> {
        let (_, _, b) = common::http("GET", &format!("127.0.0.1:{mon_http}"), "/api/blocks").unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&b).unwrap_or_default();
        v["blocks"].as_array().cloned().unwrap_or_default()
    };
    let cfg = broker.node_config(
        "router-1",
        http,
        &format!(
            "[enforce]\nenabled = true\nallowlist = [\"203.0.113.0/24\"]\n[ctl]\nlisten = \"127.0.0.1:{ctl_port}\"\n"
        ),
    );
    let _router = start_router(&cfg);
    assert!(wait_http_ok(&format!("127.0.0.1:{http}"), "/healthz", Duration::from_secs(15)));
    let node = format!("127.0.0.1:{ctl_port}");
    wait_for("the ctl endpoint", Duration::from_secs(10), || std::net::TcpStream::connect(&node).is_ok());

    // Block an IPv4 and an IPv6 address: they land in the admin sets.
    let (ok, out) = ctl(&broker, &node, "alice", &["block", "198.51.100.7", "--ttl", "600"]);
    assert!(ok && out.contains("blocked 198.51.100.7 for 10m"), "{out}");
    let (ok, out) = ctl(&broker, &node, "alice", &["block", "2001:db8:66::7", "--ttl", "120"]);
    assert!(ok, "{out}");
    let v4 = nft(&["list", "set", "inet", "gatewarden", "block4_admin"]);
    assert!(v4.contains("198.51.100.7"), "kernel set: {v4}");
    assert!(v4.contains("ctl operator:alice"), "the element says who blocked it: {v4}");
    let v6 = nft(&["list", "set", "inet", "gatewarden", "block6_admin"]);
    assert!(v6.contains("2001:db8:66::7"), "kernel set: {v6}");

    // Issue #18: N pings from the blocked address, out of a namespace linked
    // to the router's, are dropped by its element, which counts them.
    let src = common::netns::Netns::new("src");
    let veth = format!("gwc{}", std::process::id() % 100_000);
    common::netns::run(&["ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &src.name]);
    common::netns::run(&["ip", "addr", "add", "198.51.100.1/24", "dev", &veth]);
    common::netns::run(&["ip", "link", "set", &veth, "up"]);
    src.exec(&["ip", "addr", "add", "198.51.100.7/24", "dev", "eth0"]);
    src.exec(&["ip", "link", "set", "eth0", "up"]);
    const N: u64 = 5;
    let ping = src
        .command("ping")
        .args(["-c", &N.to_string(), "-i", "0.2", "-W", "1", "-I", "198.51.100.7", "198.51.100.1"])
        .output()
        .unwrap();
    assert!(!ping.status.success(), "every ping from the blocked address is dropped");
    let el = nft(&["list", "set", "inet", "gatewarden", "block4_admin"]);
    assert!(el.contains("198.51.100.7") && el.contains("counter packets"), "per-element counters: {el}");

    // `blocks` reads the kernel sets back, with each element's count.
    let (ok, out) = ctl(&broker, &node, "alice", &["blocks"]);
    assert!(ok, "{out}");
    assert!(out.lines().next().is_some_and(|h| h.contains("DROPPED")), "{out}");
    let line = out.lines().find(|l| l.starts_with("198.51.100.7")).unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("admin") && line.contains("operator:alice"), "{line}");
    // Time left in the one duration style (`9m58s`), as `gatewarden blocks` prints it.
    let left = gatewarden_core::duration::parse_duration(line.split_whitespace().nth(1).unwrap()).unwrap();
    assert!(left.as_secs() > 500 && left.as_secs() <= 600, "about 600 s left: {line}");
    let dropped: u64 = line.split_whitespace().nth(2).unwrap().parse().unwrap_or_else(|e| panic!("{e}: {line}"));
    assert!(dropped >= N, "the router's count for it over ctl: {line}");
    let line6 = out.lines().find(|l| l.starts_with("2001:db8:66::7")).unwrap_or_else(|| panic!("{out}"));
    assert_eq!(line6.split_whitespace().nth(2), Some("0"), "the silent address dropped nothing: {line6}");
    assert!(out.lines().any(|l| l.starts_with("2001:db8:66::7")), "{out}");
    let mut seen = Vec::new();
    let listed = common::wait_until(Duration::from_secs(15), || {
        seen = monitor_blocks();
        ["198.51.100.7", "2001:db8:66::7"]
            .iter()
            .all(|ip| seen.iter().any(|b| b["ip"] == *ip && b["node"] == "router-1" && b["source"] == "router table"))
    });
    assert!(listed, "the monitor lists the router's kernel blocks: {seen:?}");
    // The router publishes its table every 5 s: wait for one written after the pings.
    let counted = common::wait_until(Duration::from_secs(15), || {
        seen = monitor_blocks();
        seen.iter().any(|b| b["ip"] == "198.51.100.7" && b["dropped"]["packets"].as_u64() >= Some(N))
    });
    let row = seen.iter().find(|b| b["ip"] == "198.51.100.7").unwrap();
    assert_eq!(row["kind"], "admin", "{row}");
    assert!(row["reason"].as_str().unwrap().contains("operator:alice"), "{row}");
    // The monitor is another process on another node id: the count came in
    // the router's block table over Mosquitto.
    assert!(counted, "the router's count on the monitor: {row}");
    let silent = seen.iter().find(|b| b["ip"] == "2001:db8:66::7").unwrap();
    assert_eq!(silent["dropped"]["packets"], 0, "counted, and nothing dropped: {silent}");
    let since = row["dropped"]["since_unix_s"].as_u64().unwrap_or_default();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(since <= now && now - since < 120, "counted since the block: {row}");
    let token = |role: &str| {
        let out = Command::new(bin())
            .args(["token", "issue", "--role", role, "--sub", &format!("{role}-bob"), "-c"])
            .arg(&mon_cfg)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let (admin, viewer) = (token("admin"), token("viewer"));
    let mon = format!("127.0.0.1:{mon_http}");
    let (code, _, body) = common::request("GET", &mon, "/api/incidents/198.51.100.7", Some(&viewer), None).unwrap();
    assert_eq!(code, 200, "{body}");
    let inc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(inc["dropped"]["packets"].as_u64() >= Some(N), "the incident view on the monitor: {inc}");

    // Unblock removes it from the kernel; a second unblock says so.
    let (ok, out) = ctl(&broker, &node, "alice", &["unblock", "198.51.100.7"]);
    assert!(ok && out.contains("unblocked 198.51.100.7"), "{out}");
    assert!(!nft(&["list", "set", "inet", "gatewarden", "block4_admin"]).contains("198.51.100.7"));
    let (ok, out) = ctl(&broker, &node, "alice", &["unblock", "198.51.100.7"]);
    assert!(ok && out.contains("was not blocked"), "{out}");
    let gone = common::wait_until(Duration::from_secs(15), || {
        seen = monitor_blocks();
        !seen.iter().any(|b| b["ip"] == "198.51.100.7") && seen.iter().any(|b| b["ip"] == "2001:db8:66::7")
    });
    assert!(gone, "the unblocked address leaves the monitor's list: {seen:?}");

    // The dashboard on the monitor's node unblocks the IPv6 one: no enforcement
    // runs there, so the request travels sealed to the router whose table lists it.
    // Percent-encoded, as the page sends it.
    let path = "/api/unblock/2001%3Adb8%3A66%3A%3A7";
    let (code, _, body) = common::request("POST", &mon, path, Some(&viewer), None).unwrap();
    assert_eq!(code, 403, "a viewer may not unblock: {body}");
    assert!(nft(&["list", "set", "inet", "gatewarden", "block6_admin"]).contains("2001:db8:66::7"));
    let (code, _, body) = common::request("POST", &mon, path, Some(&admin), None).unwrap();
    assert_eq!(code, 202, "{body}");
    assert!(body.contains("router-1"), "says which router was asked: {body}");
    wait_for("the router to lift the block the dashboard asked for", Duration::from_secs(15), || {
        !nft(&["list", "set", "inet", "gatewarden", "block6_admin"]).contains("2001:db8:66::7")
    });
    let mut answer = serde_json::Value::Null;
    let answered = common::wait_until(Duration::from_secs(15), || {
        seen = monitor_blocks();
        let (_, _, a) = common::http("GET", &mon, "/api/alerts?kind=system").unwrap_or_default();
        let a: serde_json::Value = serde_json::from_str(&a).unwrap_or_default();
        if let Some(x) = a["alerts"].as_array().and_then(|v| {
            v.iter()
                .find(|x| x["gatewarden"]["reason"].as_str().is_some_and(|r| r.contains("2001:db8:66::7 unblocked")))
        }) {
            answer = x.clone();
        }
        !answer.is_null() && !seen.iter().any(|b| b["ip"] == "2001:db8:66::7")
    });
    assert!(answered, "the router's answer and its fresh table reach the monitor: {answer} {seen:?}");
    assert_eq!(answer["gatewarden"]["node"], "router-1", "{answer}");
    assert_eq!(answer["src_ip"], "2001:db8:66::7", "{answer}");
    assert!(answer["gatewarden"]["reason"].as_str().unwrap().contains("at the request of admin-bob"), "{answer}");
    // An address no router lists: refused, with what to do instead.
    let (code, _, body) = common::request("POST", &mon, "/api/unblock/198.51.100.99", Some(&admin), None).unwrap();
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("ctl unblock"), "{body}");
    let (code, _, body) = common::request("POST", &mon, "/api/unblock/not-an-ip", Some(&admin), None).unwrap();
    assert_eq!(code, 400, "{body}");
    // A blocklist feed's entry is not the dashboard's to lift: it says where it comes from.
    let feed = broker.pki().join("feed.txt");
    std::fs::write(&feed, "198.51.100.77\n").unwrap();
    let out = Command::new(bin()).args(["blocklist", "import"]).arg(&feed).arg("-c").arg(&cfg).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let fed = common::wait_until(Duration::from_secs(15), || {
        seen = monitor_blocks();
        seen.iter().any(|b| b["ip"] == "198.51.100.77" && b["kind"] == "feed")
    });
    assert!(fed, "the feed entry in the monitor's list: {seen:?}");
    let (code, _, body) = common::request("POST", &mon, "/api/unblock/198.51.100.77", Some(&admin), None).unwrap();
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("blocklist feed on router-1"), "{body}");
    assert!(nft(&["list", "set", "inet", "gatewarden", "block4_feed"]).contains("198.51.100.77"));

    // The allowlist holds (configured and the node's own addresses), and silly TTLs are refused.
    for ip in ["203.0.113.9", "127.0.0.1"] {
        let (ok, out) = ctl(&broker, &node, "alice", &["block", ip]);
        assert!(!ok && out.contains("allowlist"), "{ip}: {out}");
        assert!(!nft(&["list", "set", "inet", "gatewarden", "block4_admin"]).contains(ip));
    }
    let (ok, out) = ctl(&broker, &node, "alice", &["block", "198.51.100.8", "--ttl", "0"]);
    assert!(!ok && out.contains("--ttl"), "{out}");

    // A detector certificate may not drive the router.
    let (ok, out) = ctl(&broker, &node, "det-1", &["block", "198.51.100.9"]);
    assert!(!ok && out.contains("operator"), "{out}");
    assert!(!nft(&["list", "set", "inet", "gatewarden", "block4_admin"]).contains("198.51.100.9"));
    let (_, _, status) = common::http("GET", &format!("127.0.0.1:{http}"), "/api/status").unwrap();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["counters"]["gatewarden_secure_rejected_total{reason=unauthorized}"], 1.0, "{status}");
}

fn policy(version: u64, action: PolicyAction, cams: &[&str]) -> PolicyUpdate {
    PolicyUpdate {
        version,
        groups: vec![
            ("cams".into(), cams.iter().map(|s| s.to_string()).collect()),
            ("nas".into(), vec!["192.0.2.50".into(), "2001:db8:1::50".into()]),
        ],
        rules: vec![GroupRule {
            source_group: "cams".into(),
            destination_group: "nas".into(),
            protocol: Some(Proto::Tcp),
            ports: Some((445, 445)),
            action,
            priority: 10,
        }],
    }
}

#[test]
fn a_monitors_policy_update_reaches_the_routers_nftables_and_survives_a_router_restart() {
    if !inside_netns("a_monitors_policy_update_reaches_the_routers_nftables_and_survives_a_router_restart") {
        return;
    }
    let Some(exe) = mosquitto_or_skip() else { return };
    let broker = Broker::start(exe, &[("router-1", "router"), ("mon-1", "monitor")]);
    let cfg = broker.node_config("router-1", free_port(), "[enforce]\nenabled = true\n");
    let mut router = Some(start_router(&cfg));

    // The monitor's side: its bus connection and the policy distributor.
    let sd = Shutdown::new();
    let reg = Registry::new();
    let inbound = LocalBus::new(1024, &reg);
    let mcfg = Config::load(&broker.node_config("mon-1", free_port(), "")).unwrap();
    let mon = Arc::new(
        MqttBus::start(
            &MqttSettings::from_config(&mcfg.node_id, &mcfg.mqtt, &mcfg.bus, Role::Monitor),
            inbound.clone(),
            &reg,
            sd.clone(),
        )
        .unwrap(),
    );
    let push = PolicyPush::new(mon.clone(), &reg);
    // What the monitor role's tasks do (src/node/): heartbeats and online status feed the distributor.
    let hb = inbound.heartbeats.receiver();
    let online = mon.status_receiver();
    let pump = |push: &PolicyPush| {
        while let Ok(h) = hb.try_recv() {
            push.heartbeat(&h);
        }
        while let Ok(s) = online.try_recv() {
            push.node_online(&s.node, s.online);
        }
    };
    wait_for("the router's heartbeat at the monitor", Duration::from_secs(20), || {
        pump(&push);
        push.routers().contains(&"router-1".to_string())
    });

    assert_eq!(push.publish(policy(1, PolicyAction::Deny, &["192.0.2.16/28", "2001:db8:1::/120"])).unwrap(), 1);
    let groups = || nft(&["list", "chain", "inet", "gatewarden", "groups"]);
    wait_for("the group rule in the router's kernel", Duration::from_secs(20), || {
        let g = groups();
        g.contains("@grp_cams4") && g.contains("@grp_nas4") && g.contains("dport 445") && g.contains("drop")
    });
    let g = groups();
    assert!(g.contains("@grp_cams6") && g.contains("@grp_nas6"), "IPv6 rule too: {g}");
    let set = nft(&["list", "set", "inet", "gatewarden", "grp_cams4"]);
    assert!(set.contains("192.0.2.16/28"), "{set}");

    // A newer version replaces the rules atomically.
    push.publish(policy(2, PolicyAction::Allow, &["192.0.2.32/28"])).unwrap();
    wait_for("version 2 in the kernel", Duration::from_secs(20), || {
        let g = groups();
        g.contains("accept")
            && !g.contains("drop")
            && nft(&["list", "set", "inet", "gatewarden", "grp_cams4"]).contains("192.0.2.32/28")
    });
    assert!(!groups().contains("@grp_cams6"), "no IPv6 cameras in version 2, so no IPv6 rule: {}", groups());

    // The router crashes and comes back with a fresh table: the monitor sees
    // its uptime restart and sends the current policy again.
    let handle = || {
        let t = nft(&["-a", "list", "table", "inet", "gatewarden"]);
        t.lines().next().and_then(|l| l.split("# handle ").nth(1)).map(|h| h.trim().to_string())
    };
    let before = handle().expect("the router's table");
    router.take(); // SIGKILL: the old table, with its rules, stays behind
    let again = start_router(&cfg);
    wait_for("the policy re-applied to the restarted router's new table", Duration::from_secs(30), || {
        pump(&push);
        let g = groups();
        handle().is_some_and(|h| h != before)
            && g.contains("@grp_cams4")
            && g.contains("accept")
            && reg.snapshot()["gatewarden_policy_updates_sent_total"] >= 3.0
    });
    // The ack travels router → broker → monitor after the rules are in the kernel.
    wait_for("every router to ack its copy (spool empty)", Duration::from_secs(15), || {
        pump(&push);
        mon.spooled() == 0
    });
    drop(again);
    sd.trigger();
    mon.stop();
}

/// Every element of the router's `set`, as `nft list set` prints it.
fn set_text(set: &str) -> String {
    nft(&["list", "set", "inet", "gatewarden", set])
}

/// A detector's verdict for a WAN host that answered (so the router blocks it).
fn scan_verdict(id: u64, source: &str, ttl_s: u32) -> gatewarden_proto::messages::Message {
    use gatewarden_proto::messages::{AttackKind, Message, SourceProof, Verdict};
    Message::Verdict(Verdict {
        id,
        source: source.parse().unwrap(),
        kind: AttackKind::PortScan,
        confidence: 1.0,
        reason: "port scan".into(),
        evidence: Vec::new(),
        ttl_s,
        issued_ns: 0,
        source_proof: SourceProof::Answered,
        sender: String::new(),
    })
}

/// A compromised detector (det-2, a stolen certificate) floods the router
/// with maximum-TTL verdicts for made-up addresses, more than the detector
/// block set holds. The honest detector (det-1) had blocked a real
/// attacker for two minutes; a full set used to evict the entries closest
/// to expiry, so the real attacker was the first to go and came back.
/// Each detector now has a share: a full set evicts from the sender holding
/// the most blocks, so det-2's flood pushes out only det-2's own. Admin
/// blocks and the feed live in sets of their own and are never touched.
#[test]
fn a_compromised_detectors_flood_cannot_evict_another_detectors_blocks() {
    if !inside_netns("a_compromised_detectors_flood_cannot_evict_another_detectors_blocks") {
        return;
    }
    use gatewarden::bus::Publisher;
    let Some(exe) = mosquitto_or_skip() else { return };
    let broker = Broker::start(
        exe,
        &[("router-1", "router"), ("det-1", "detector"), ("det-2", "detector"), ("mon-1", "monitor")],
    );
    // A monitor on its own node: the operator's view of whose blocks these are.
    let mon_http = free_port();
    let mon_cfg = broker.node_config("mon-1", mon_http, "");
    let mut c = Command::new(bin());
    c.args(["run", "--role", "monitor", "--config", mon_cfg.to_str().unwrap()]).env("RUST_LOG", "warn");
    let _monitor = Guard::spawn(&mut c);
    const CAP: u32 = 32;
    let http = free_port();
    let cfg = broker.node_config("router-1", http, &format!("[enforce]\nenabled = true\nmax_block_elements = {CAP}\n"));
    let _router = start_router(&cfg);
    // Enforcement is up before the HTTP server: the table is in once it answers.
    assert!(wait_http_ok(&format!("127.0.0.1:{http}"), "/healthz", Duration::from_secs(15)));
    // An admin block and a feed entry that end sooner than any verdict's block.
    let out = Command::new(bin()).args(["block", "198.51.100.200", "--ttl", "90s", "-c"]).arg(&cfg).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let feed = broker.pki().join("feed.txt");
    std::fs::write(&feed, "198.51.100.201\n").unwrap();
    let out = Command::new(bin())
        .args(["blocklist", "import", "--ttl", "90s"])
        .arg(&feed)
        .arg("-c")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let sd = Shutdown::new();
    let detector = |id: &str| {
        let reg = Registry::new();
        let dcfg = Config::load(&broker.node_config(id, free_port(), "")).unwrap();
        let bus = MqttBus::start(
            &MqttSettings::from_config(&dcfg.node_id, &dcfg.mqtt, &dcfg.bus, Role::Detector),
            LocalBus::new(64, &reg),
            &reg,
            sd.clone(),
        )
        .unwrap();
        assert!(bus.wait_connected(Duration::from_secs(15)), "{id} connected");
        bus
    };
    let (honest, stolen) = (detector("det-1"), detector("det-2"));
    // The honest detector blocks a real attacker for two minutes.
    const ATTACKER: &str = "203.0.113.66";
    assert!(honest.publish(scan_verdict(1, ATTACKER, 120)));
    wait_for("det-1's block of the attacker", Duration::from_secs(30), || {
        set_text("block4_detector").contains(ATTACKER)
    });
    // The stolen certificate: half as many again as the set holds, each for as long as it may ask.
    let flood: Vec<String> = (0..CAP + CAP / 2).map(|i| format!("198.18.{}.{}", i / 200, 1 + i % 200)).collect();
    for (i, a) in flood.iter().enumerate() {
        assert!(stolen.publish(scan_verdict(1000 + i as u64, a, u32::MAX)));
    }
    let last = flood.last().unwrap().clone();
    wait_for("det-2's last verdict in the kernel", Duration::from_secs(60), || {
        set_text("block4_detector").contains(&format!("{last} "))
    });
    let det = set_text("block4_detector");
    let held = flood.iter().filter(|a| det.contains(&format!("{a} "))).count();
    assert!(held <= CAP as usize, "{held} of det-2's blocks in a set of {CAP}: {det}");
    assert!(det.contains(ATTACKER), "det-2's flood evicted det-1's block of the real attacker {ATTACKER}: {det}");
    assert!(set_text("block4_admin").contains("198.51.100.200"), "a verdict flood evicted an admin block");
    assert!(set_text("block4_feed").contains("198.51.100.201"), "a verdict flood evicted a feed entry");
    // A new block of det-1's still goes in, at det-2's expense.
    assert!(honest.publish(scan_verdict(2, "203.0.113.67", 120)));
    wait_for("det-1's second block", Duration::from_secs(30), || set_text("block4_detector").contains("203.0.113.67"));
    let det = set_text("block4_detector");
    assert!(det.contains(ATTACKER), "det-1's new block evicted its own older one: {det}");

    // The operator sees which detector asked for which block, to know
    // whose certificate to revoke: `gatewarden blocks` on the router...
    let out = Command::new(bin()).args(["blocks", "--json", "-c"]).arg(&cfg).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let senders_of = |rows: &serde_json::Value, key: &str, target: &str| {
        rows.as_array().and_then(|r| r.iter().find(|b| b[key] == target)).map(|b| b["senders"].clone())
    };
    assert_eq!(senders_of(&v["blocks"], "target", ATTACKER), Some(serde_json::json!(["det-1"])), "{v}");
    assert_eq!(senders_of(&v["blocks"], "target", &last), Some(serde_json::json!(["det-2"])), "{v}");
    assert_eq!(senders_of(&v["blocks"], "target", "198.51.100.200"), Some(serde_json::json!([])), "{v}");
    // ...and the dashboard's block list, from the router's table over the bus.
    let mut api = serde_json::Value::Null;
    let listed = common::wait_until(Duration::from_secs(30), || {
        let (_, _, b) = common::http("GET", &format!("127.0.0.1:{mon_http}"), "/api/blocks").unwrap_or_default();
        api = serde_json::from_str(&b).unwrap_or_default();
        senders_of(&api["blocks"], "ip", ATTACKER) == Some(serde_json::json!(["det-1"]))
    });
    assert!(listed, "/api/blocks does not name det-1 for {ATTACKER}: {api}");
    assert_eq!(senders_of(&api["blocks"], "ip", &last), Some(serde_json::json!(["det-2"])), "{api}");
    sd.trigger();
    honest.stop();
    stolen.stop();
}
