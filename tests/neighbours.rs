//! Issue #16: the monitor reaches a router only through messages, and a
//! neighbour query is a message too. A router's neighbour table (IP ↔ MAC)
//! travels as `neighbour_table` over real Mosquitto with mutual TLS, so a
//! MAC member of a policy group defined at a monitor on another node
//! resolves to the address the router's kernel has for it — and only
//! routers may send one, and a forged, garbage or oversized one changes
//! nothing.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::mosquitto::{mosquitto_or_skip, pump_until, Broker};
use common::netns::{link, require_root, Netns};
use common::{bin, free_port, wait_for, wait_http_ok, wait_until, Guard};
use gatewarden::bus::mqtt::{topic, Frame, FrameBody};
use gatewarden::secure::envelope;
use gatewarden_proto::messages::{Heartbeat, Message, Neighbour, NeighbourTable, MAX_NEIGHBOUR_ROWS};
use gatewarden_proto::role::Role;

const DOORCAM_MAC: &str = "02:00:00:00:be:ef";

/// A monitor config part: a group whose only member is a MAC, a group of
/// sensors and a rule between them, so `explain` tells whether an address
/// resolved to the MAC.
fn policy_toml(state_dir: &Path, mac: &str) -> String {
    format!(
        "[policy]\nstate_dir = \"{}\"\n\
[[policy.groups]]\nname = \"doorcam\"\nmembers = [\"{mac}\"]\n\
[[policy.groups]]\nname = \"sensors\"\nmembers = [\"198.51.100.0/25\"]\n\
[[policy.rules]]\nsource_group = \"doorcam\"\ndestination_group = \"sensors\"\nprotocol = \"tcp\"\nport_range = \"22\"\naction = \"deny\"\npriority = 100\n",
        state_dir.display()
    )
}

/// Whether `explain` says `src` → a sensor on tcp/22 is denied by the doorcam rule.
fn denied(explain: &serde_json::Value) -> bool {
    explain["action"] == "deny" && explain["decided_by"]["source_group"] == "doorcam"
}

fn explain_path(src: &str) -> String {
    format!("/api/policy/explain?src={src}&dst=198.51.100.10&proto=tcp&port=22")
}

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn a_mac_member_at_a_monitor_on_another_node_resolves_through_the_routers_neighbour_table() {
    if !require_root("neighbour table over MQTT") {
        return;
    }
    let Some(mosq) = mosquitto_or_skip() else { return };
    for tool in ["curl", "ping"] {
        if Command::new(tool).arg("-V").output().is_err() {
            assert!(std::env::var_os("CI").is_none(), "{tool} is missing, and CI must run this test");
            eprintln!("SKIPPED: {tool} is not installed");
            return;
        }
    }
    // Three namespaces: the monitor with the broker, the router, and a device
    // on the router's LAN. The monitor's own neighbour table knows only the
    // router's uplink; the device's MAC is in the router's kernel alone.
    let mon = Netns::new("nmon");
    let rtr = Netns::new("nrtr");
    let dev = Netns::new("ndev");
    link(&mon, "up0", &["203.0.113.1/24"], &rtr, "up0", &["203.0.113.2/24"]);
    link(&rtr, "lan0", &["192.0.2.1/24"], &dev, "eth0", &["192.0.2.10/24"]);
    dev.exec(&["ip", "link", "set", "eth0", "address", DOORCAM_MAC]);

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_string();
    let gw = |args: &[&str]| {
        let o = Command::new(bin()).args(args).output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", text(&o));
    };
    gw(&["pki", "init", "--dir", &d]);
    gw(&["pki", "issue", "router-1", "--role", "router", "--dir", &d]);
    gw(&["pki", "issue", "mon-1", "--role", "monitor", "--dir", &d]);
    gw(&[
        "pki",
        "mosquitto-conf",
        "--dir",
        &d,
        "--port",
        "8883",
        "--bind",
        "203.0.113.1",
        "--name",
        "203.0.113.1",
        "--user",
        "root",
    ]);
    let mut c = mon.command(mosq.to_str().unwrap());
    c.args(["-c", &format!("{d}/mosquitto/mosquitto.conf")]).stdout(Stdio::null()).stderr(Stdio::null());
    let _broker = Guard::spawn(&mut c);
    let node = |id: &str, extra: &str| {
        let path = dir.path().join(format!("{id}.toml"));
        std::fs::write(
            &path,
            format!(
                "node_id = \"{id}\"\n[http]\nlisten = \"127.0.0.1:8080\"\npublic_status = true\n[mqtt]\nbroker = \"203.0.113.1:8883\"\nca = \"{d}/ca.crt\"\n\
cert = \"{d}/nodes/{id}.crt\"\nkey = \"{d}/nodes/{id}.key\"\nspool_dir = \"{d}/spool-{id}\"\nresend_after_ms = 500\n{extra}"
            ),
        )
        .unwrap();
        path
    };
    let mon_cfg = node("mon-1", &policy_toml(&dir.path().join("policy"), DOORCAM_MAC));
    let rtr_cfg = node("router-1", "");
    let start = |ns: &Netns, cfg: &Path, role: &str, log: &str| {
        let mut c = ns.command(bin().to_str().unwrap());
        c.args(["run", "--role", role, "--config", cfg.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join(log)).unwrap());
        Guard::spawn(&mut c)
    };
    let _mon = start(&mon, &mon_cfg, "monitor", "mon.log");
    let _rtr = start(&rtr, &rtr_cfg, "router", "rtr.log");
    let logs = || {
        format!(
            "monitor:\n{}\nrouter:\n{}",
            std::fs::read_to_string(dir.path().join("mon.log")).unwrap_or_default(),
            std::fs::read_to_string(dir.path().join("rtr.log")).unwrap_or_default()
        )
    };
    let get = |path: &str| -> serde_json::Value {
        let o = mon.command("curl").args(["-s", &format!("http://127.0.0.1:8080{path}")]).output().unwrap();
        serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null)
    };
    assert!(
        wait_until(Duration::from_secs(60), || get("/api/status")["counters"]["gatewarden_mqtt_connected"] == 1.0),
        "the monitor never joined the bus\n{}",
        logs()
    );
    // Before the device talks, the router's kernel has no entry for it: the MAC resolves to nothing.
    let before = get(&explain_path("192.0.2.10"));
    assert!(before["why"].is_string() && !denied(&before), "{before}");
    // The device talks to its gateway: the router's kernel learns its MAC by ARP.
    dev.exec(&["ping", "-c", "1", "-W", "2", "192.0.2.1"]);
    let neigh = String::from_utf8_lossy(&rtr.exec(&["ip", "neigh", "show", "192.0.2.10"]).stdout).to_string();
    assert!(neigh.contains(DOORCAM_MAC), "the router's kernel knows the device: {neigh}");
    // The monitor's own table does not (it is another node), so only the message can resolve it.
    let own = String::from_utf8_lossy(&mon.exec(&["ip", "neigh", "show"]).stdout).to_string();
    assert!(!own.contains(DOORCAM_MAC), "{own}");
    // The router sends its table on change; the policy engine picks it up within its 10 s refresh.
    assert!(
        wait_until(Duration::from_secs(40), || denied(&get(&explain_path("192.0.2.10")))),
        "the MAC member never resolved to the router's neighbour: {}\n{}",
        get(&explain_path("192.0.2.10")),
        logs()
    );
    let e = get(&explain_path("192.0.2.10"));
    assert!(e["why"].as_str().unwrap_or("").contains("doorcam"), "{e}");
    // An address the router has no entry for stays outside the group.
    assert!(!denied(&get(&explain_path("192.0.2.11"))));
    // The monitor received it as a message, over MQTT.
    let st = get("/api/status");
    assert!(st["counters"]["gatewarden_mqtt_received_total"].as_f64().unwrap_or(0.0) > 0.0, "{}", st["counters"]);
    let rst = {
        let o = rtr.command("curl").args(["-s", "http://127.0.0.1:8080/api/status"]).output().unwrap();
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap_or_default()
    };
    assert!(
        rst["counters"]["gatewarden_mqtt_published_total{kind=neighbour_table}"].as_f64().unwrap_or(0.0) >= 1.0,
        "{}",
        rst["counters"]
    );
}

#[test]
fn an_all_in_one_node_resolves_mac_members_through_the_same_message_on_its_in_process_bus() {
    if !require_root("neighbour table in process") {
        return;
    }
    for tool in ["curl", "ping"] {
        if Command::new(tool).arg("-V").output().is_err() {
            assert!(std::env::var_os("CI").is_none(), "{tool} is missing, and CI must run this test");
            eprintln!("SKIPPED: {tool} is not installed");
            return;
        }
    }
    // No broker: router and monitor share one process, and the table still
    // travels as a `neighbour_table` message, on the in-process bus.
    let gw = Netns::new("nall");
    let dev = Netns::new("ndv2");
    link(&gw, "lan0", &["192.0.2.1/24"], &dev, "eth0", &["192.0.2.10/24"]);
    dev.exec(&["ip", "link", "set", "eth0", "address", DOORCAM_MAC]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("all.toml");
    std::fs::write(
        &cfg,
        format!(
            "node_id = \"gw\"\n[http]\nlisten = \"127.0.0.1:8080\"\npublic_status = true\n{}",
            policy_toml(&dir.path().join("policy"), DOORCAM_MAC)
        ),
    )
    .unwrap();
    let mut c = gw.command(bin().to_str().unwrap());
    c.args(["run", "--role", "all", "--config", cfg.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("all.log")).unwrap());
    let _node = Guard::spawn(&mut c);
    let get = |path: &str| -> serde_json::Value {
        let o = gw.command("curl").args(["-s", &format!("http://127.0.0.1:8080{path}")]).output().unwrap();
        serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null)
    };
    let log = || std::fs::read_to_string(dir.path().join("all.log")).unwrap_or_default();
    assert!(wait_until(Duration::from_secs(60), || get("/api/policy")["groups"].is_array()), "{}", log());
    dev.exec(&["ping", "-c", "1", "-W", "2", "192.0.2.1"]);
    assert!(
        wait_until(Duration::from_secs(40), || denied(&get(&explain_path("192.0.2.10")))),
        "{}\n{}",
        get(&explain_path("192.0.2.10")),
        log()
    );
    let counters = get("/api/status")["counters"].clone();
    assert!(counters["gatewarden_bus_sent_total{kind=neighbour_table}"].as_f64().unwrap_or(0.0) >= 1.0, "{counters}");
}

fn raw_client(broker: &Broker, client_id: &str, identity: &str) -> (rumqttc::Client, rumqttc::Connection) {
    let p = broker.pki();
    let tls = gatewarden::bus::mqtt::tls_config(
        &p.join("ca.crt"),
        &p.join(format!("nodes/{identity}.crt")),
        &p.join(format!("nodes/{identity}.key")),
    )
    .unwrap();
    let mut o = rumqttc::MqttOptions::new(client_id, "127.0.0.1", broker.port);
    o.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(Arc::new(tls))));
    o.set_keep_alive(Duration::from_secs(5));
    // Room for the oversized table (rumqttc's default is 10 KiB).
    o.set_max_packet_size(1 << 20, 1 << 20);
    rumqttc::Client::new(o, 64)
}

fn pubacks(n: u32) -> impl FnMut(&rumqttc::Packet) -> bool {
    let mut acks = 0;
    move |p| {
        acks += matches!(p, rumqttc::Packet::PubAck(_)) as u32;
        acks == n
    }
}

fn table(node: &str, rows: &[(&str, [u8; 6])]) -> NeighbourTable {
    NeighbourTable {
        node: node.into(),
        taken_ns: gatewarden_core::clock::unix_now_ns(),
        total: rows.len() as u32,
        entries: rows.iter().map(|(ip, mac)| Neighbour { ip: ip.parse().unwrap(), mac: *mac, age_s: 0 }).collect(),
    }
}

fn plain(id: u64, m: &Message) -> Vec<u8> {
    envelope::encode(&Frame { id, body: FrameBody::Plain(m.encode()) })
}

#[test]
fn only_routers_may_publish_a_neighbour_table_and_forged_garbage_or_oversized_ones_change_nothing() {
    let Some(exe) = mosquitto_or_skip() else { return };
    let broker = Broker::start(
        exe,
        // The spy and the rogue monitor have certificates of their own: the
        // broker gives a certificate one connection (its subject is the client
        // id), so sharing mon-1's would drop the monitor under test.
        &[
            ("router-1", "router"),
            ("router-2", "router"),
            ("det-1", "detector"),
            ("mon-1", "monitor"),
            ("mon-2", "monitor"),
            ("spy-1", "monitor"),
        ],
    );
    let pm = free_port();
    let mac = gatewarden_core::net::parse_mac(DOORCAM_MAC).unwrap();
    let mon_cfg = broker.node_config("mon-1", pm, &policy_toml(&broker.pki().join("policy-mon-1"), DOORCAM_MAC));
    let mut c = Command::new(bin());
    c.args(["run", "--role", "monitor", "--config", mon_cfg.to_str().unwrap()]).env("RUST_LOG", "warn");
    let _mon = Guard::spawn(&mut c);
    let addr = format!("127.0.0.1:{pm}");
    assert!(wait_http_ok(&addr, "/healthz", Duration::from_secs(20)));
    let status = || -> serde_json::Value {
        serde_json::from_str(&common::http("GET", &addr, "/api/status").unwrap().2).unwrap_or_default()
    };
    let counter = |name: &str| status()["counters"][name].as_f64().unwrap_or(0.0);
    wait_for("monitor connected", Duration::from_secs(20), || counter("gatewarden_mqtt_connected") == 1.0);
    let explain = |src: &str| -> serde_json::Value {
        serde_json::from_str(&common::http("GET", &addr, &explain_path(src)).unwrap().2).unwrap_or_default()
    };

    // 1. The broker's ACL: a detector's or a monitor's table never reaches anyone.
    let (spy, mut spy_conn) = raw_client(&broker, "spy", "spy-1");
    spy.subscribe("gatewarden/v1/#", rumqttc::QoS::AtLeastOnce).unwrap();
    assert!(pump_until(&mut spy_conn, Duration::from_secs(10), |p| matches!(p, rumqttc::Packet::SubAck(_))).0);
    // Each rogue sends a table, then a well-formed heartbeat the ACL allows.
    let heartbeat = |node: &str, role: Role, id: u64| {
        plain(
            id,
            &Message::Heartbeat(Heartbeat { node: node.into(), role, version: "test".into(), uptime_s: 1, sent_ns: 1 }),
        )
    };
    let (det_hb, mon_hb) = (heartbeat("det-1", Role::Detector, 9001), heartbeat("mon-2", Role::Monitor, 9002));
    let (det, mut det_conn) = raw_client(&broker, "rogue-detector", "det-1");
    let forged = Message::NeighbourTable(table("det-1", &[("192.0.2.66", mac)]));
    det.publish(topic("det-1", "neighbour_table"), rumqttc::QoS::AtLeastOnce, false, plain(1, &forged)).unwrap();
    det.publish(topic("det-1", "heartbeat"), rumqttc::QoS::AtLeastOnce, false, det_hb.clone()).unwrap();
    let det_t = std::thread::spawn(move || pump_until(&mut det_conn, Duration::from_secs(10), pubacks(2)));
    let (mon_pub, mut mon_pub_conn) = raw_client(&broker, "rogue-monitor", "mon-2");
    let forged = Message::NeighbourTable(table("mon-2", &[("192.0.2.67", mac)]));
    mon_pub.publish(topic("mon-2", "neighbour_table"), rumqttc::QoS::AtLeastOnce, false, plain(2, &forged)).unwrap();
    mon_pub.publish(topic("mon-2", "heartbeat"), rumqttc::QoS::AtLeastOnce, false, mon_hb.clone()).unwrap();
    let mon_t = std::thread::spawn(move || pump_until(&mut mon_pub_conn, Duration::from_secs(10), pubacks(2)));
    let mut seen = Vec::new();
    let mut ours = 0;
    let got_both = |p: &rumqttc::Packet| {
        ours += matches!(p, rumqttc::Packet::Publish(x) if x.payload[..] == det_hb[..] || x.payload[..] == mon_hb[..])
            as u32;
        ours == 2
    };
    seen.extend(pump_until(&mut spy_conn, Duration::from_secs(10), got_both).1);
    det_t.join().unwrap();
    mon_t.join().unwrap();
    // Each heartbeat was published after its table on the same connection: had
    // the broker let the tables through, they would be here first.
    assert!(seen.iter().any(|(_, p)| *p == det_hb) && seen.iter().any(|(_, p)| *p == mon_hb), "{seen:?}");
    assert!(!seen.iter().any(|(t, _)| t.ends_with("/neighbour_table")), "only routers publish tables: {seen:?}");
    let log = std::fs::read_to_string(&broker.log).unwrap_or_default();
    // The broker names each certificate (its subject is the client id), not the id the client chose.
    assert!(log.contains("Denied PUBLISH from OU=detector,CN=det-1"), "{log}");
    assert!(log.contains("Denied PUBLISH from OU=monitor,CN=mon-2"), "{log}");

    // 2. A router's certificate: garbage, a table past the bound and a table
    //    naming another router are refused; then its own table is taken.
    let malformed_before = counter("gatewarden_mqtt_malformed_total");
    let (r1, mut r1_conn) = raw_client(&broker, "router-1", "router-1");
    let t = topic("router-1", "neighbour_table");
    r1.publish(&t, rumqttc::QoS::AtLeastOnce, false, b"\x00garbage".to_vec()).unwrap();
    let garbage_message =
        envelope::encode(&Frame { id: 3, body: FrameBody::Plain(vec![1, 11, 0xff, 0xff, 0xff, 0xff]) });
    r1.publish(&t, rumqttc::QoS::AtLeastOnce, false, garbage_message).unwrap();
    let mut huge = table("router-1", &[]);
    huge.entries = (0..MAX_NEIGHBOUR_ROWS as u32 + 1)
        .map(|i| Neighbour { ip: std::net::Ipv4Addr::from(0xc000_0200 + i).into(), mac, age_s: 0 })
        .collect();
    huge.total = huge.entries.len() as u32;
    r1.publish(&t, rumqttc::QoS::AtLeastOnce, false, plain(4, &Message::NeighbourTable(huge))).unwrap();
    let other = Message::NeighbourTable(table("router-2", &[("192.0.2.77", mac)]));
    r1.publish(&t, rumqttc::QoS::AtLeastOnce, false, plain(5, &other)).unwrap();
    let mut acked = 0;
    pump_until(&mut r1_conn, Duration::from_secs(10), |p| {
        acked += matches!(p, rumqttc::Packet::PubAck(_)) as u32;
        acked == 4
    });
    assert_eq!(acked, 4, "the broker took all four (it is the monitor that must refuse them)");
    let counted = wait_until(Duration::from_secs(15), || {
        counter("gatewarden_mqtt_malformed_total") >= malformed_before + 3.0
            && counter("gatewarden_bus_identity_mismatch_total{kind=neighbour_table}") >= 1.0
    });
    assert!(counted, "the forged and malformed tables counted at the monitor: {}", status()["counters"]);
    // Nothing of them resolved: wait past the engine's 10 s refresh first.
    std::thread::sleep(Duration::from_secs(11));
    for src in ["192.0.2.2", "192.0.2.66", "192.0.2.67", "192.0.2.77"] {
        assert!(!denied(&explain(src)), "{src}: {}", explain(src));
    }
    // The router's own table is taken, and the MAC resolves at the monitor.
    let own = Message::NeighbourTable(table("router-1", &[("192.0.2.10", mac), ("192.0.2.20", [2, 0, 0, 0, 0, 0x20])]));
    // A fresh connection: the first one was not polled while the test slept.
    drop((r1, r1_conn));
    let (r1, mut r1_conn) = raw_client(&broker, "router-1-again", "router-1");
    r1.publish(&t, rumqttc::QoS::AtLeastOnce, false, plain(6, &own)).unwrap();
    let mut acked = false;
    pump_until(&mut r1_conn, Duration::from_secs(10), |p| {
        acked = matches!(p, rumqttc::Packet::PubAck(_));
        acked
    });
    assert!(acked, "the router's own table reached the broker");
    wait_for("the router's table resolves the MAC member", Duration::from_secs(30), || denied(&explain("192.0.2.10")));
    assert!(!denied(&explain("192.0.2.20")), "another MAC's address stays outside the group");
    // The monitor is still the same process: no input above made it abort.
    assert!(wait_http_ok(&addr, "/healthz", Duration::from_secs(5)));
}
