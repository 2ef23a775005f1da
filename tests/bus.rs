//! The node bus against a real Mosquitto with TLS: three roles in three
//! processes, a fleet of two routers, a broker crash with alerts in flight,
//! and every kind of forged or misdirected message refused and counted.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::mosquitto::{mosquitto_or_skip, pump_until, Broker};
use common::{bin, free_port, wait_for, wait_http_ok, wait_until, Guard};
use gatewarden::bus::mqtt::{topic, Frame, FrameBody, MqttBus, MqttSettings};
use gatewarden::bus::{LocalBus, Publisher};
use gatewarden::config::Config;
use gatewarden::pki::{CaVerifier, CertRole, Identity, PkiDir};
use gatewarden::secure::{envelope, PayloadKind, SecureChannel, SecureConfig};
use gatewarden_core::metrics::Registry;
use gatewarden_core::shutdown::Shutdown;
use gatewarden_proto::messages::{Alert, AlertAction, AttackKind, Message, Severity, Verdict};
use gatewarden_proto::role::Role;

fn status(port: u16) -> serde_json::Value {
    let (code, _, body) = common::http("GET", &format!("127.0.0.1:{port}"), "/api/status").unwrap();
    assert_eq!(code, 200);
    serde_json::from_str(&body).unwrap()
}

fn counter(v: &serde_json::Value, name: &str) -> f64 {
    v["counters"][name].as_f64().unwrap_or(0.0)
}

fn run_node(cfg: &std::path::Path, role: &str, extra: &[&str]) -> Guard {
    let mut c = std::process::Command::new(bin());
    c.args(["run", "--role", role, "--config", cfg.to_str().unwrap()]).args(extra).env("RUST_LOG", "warn");
    Guard::spawn(&mut c)
}

#[test]
fn three_processes_and_a_fleet_of_two_routers_through_mosquitto() {
    let Some(exe) = mosquitto_or_skip() else { return };
    let broker = Broker::start(
        exe,
        &[
            ("router-1", "router"),
            ("router-2", "router"),
            ("router-3", "router"),
            ("det-1", "detector"),
            ("mon-1", "monitor"),
        ],
    );
    let (pm, pd, pr1, pr2, pr3) = (free_port(), free_port(), free_port(), free_port(), free_port());
    // The monitor groups every address, so its traffic matrix shows whatever the routers see.
    // The monitor keeps its token key in data_dir (writes below need an admin token).
    let policy = format!(
        "[monitor]\ndata_dir = \"{}\"\n[policy]\nstate_dir = \"{}\"\nbucket_s = 1\n[[policy.groups]]\nname = \"everyone\"\nmembers = [\"0.0.0.0/0\", \"::/0\"]\n",
        broker.pki().join("data-mon-1").display(),
        broker.pki().join("policy-mon-1").display()
    );
    let mon_cfg = broker.node_config("mon-1", pm, &policy);
    let _mon = run_node(&mon_cfg, "monitor", &[]);
    let _det = run_node(&broker.node_config("det-1", pd, ""), "detector", &[]);
    for p in [pm, pd] {
        assert!(wait_http_ok(&format!("127.0.0.1:{p}"), "/healthz", Duration::from_secs(10)));
        wait_for("monitor and detector connected", Duration::from_secs(15), || {
            counter(&status(p), "gatewarden_mqtt_connected") == 1.0
        });
    }
    let demo = common::root().join("samples/demo.pcap");
    let demo = demo.to_str().unwrap();
    let _r1 = run_node(&broker.node_config("router-1", pr1, ""), "router", &["--replay", demo]);
    let _r2 = run_node(&broker.node_config("router-2", pr2, ""), "router", &["--replay", demo]);
    // A third gateway with no traffic: healthy, but nothing of the others' alerts or blocks may land on it.
    let _r3 = run_node(&broker.node_config("router-3", pr3, ""), "router", &[]);
    // A replayed scan becomes a verdict at each router (sealed, routed to the router that saw it) …
    for p in [pr1, pr2] {
        assert!(wait_http_ok(&format!("127.0.0.1:{p}"), "/healthz", Duration::from_secs(10)));
        wait_for("verdicts at the router", Duration::from_secs(40), || {
            counter(&status(p), "gatewarden_verdicts_received_total") > 0.0
        });
        assert!(counter(&status(p), "gatewarden_secure_opened_total") > 0.0);
    }
    // … and alerts at the monitor, kept apart per gateway, with each node's health.
    wait_for("scan alerts for both routers at the monitor", Duration::from_secs(40), || {
        let s = status(pm);
        s["alerts_by_kind"]["port_scan"].as_u64().unwrap_or(0) > 0
            && s["nodes"]["router-1"]["alerts"].as_u64().unwrap_or(0) > 0
            && s["nodes"]["router-2"]["alerts"].as_u64().unwrap_or(0) > 0
    });
    wait_for("heartbeats and online status of every node", Duration::from_secs(15), || {
        let s = status(pm);
        ["router-1", "router-2", "router-3", "det-1"]
            .iter()
            .all(|n| s["nodes"][n]["online"] == serde_json::json!(true) && s["nodes"][n]["role"].is_string())
    });
    // These routers do not enforce: each answers its verdicts so, and the monitor
    // files their alerts as `allowed`, not as blocks that never happened.
    wait_for("the routers' answers to their verdicts at the monitor", Duration::from_secs(15), || {
        counter(&status(pm), "gatewarden_verdict_outcomes_total{result=refused}") > 0.0
    });
    let s = status(pm);
    for r in ["router-1", "router-2"] {
        assert_eq!(s["nodes"][r]["blocked"], 0, "no block is claimed under {r}: {}", s["nodes"]);
    }
    assert_eq!(s["nodes"]["router-3"]["alerts"], 0, "{}", s["nodes"]);
    assert_eq!(s["nodes"]["router-3"]["blocked"], 0, "{}", s["nodes"]);
    assert_eq!(
        counter(&status(pr3), "gatewarden_verdicts_received_total"),
        0.0,
        "verdicts go only to the router whose traffic caused them"
    );
    // The monitor runs on its own node, yet the routers' flows reach it: the
    // top talkers and the group-policy traffic matrix are filled from them.
    let talkers = s["top_talkers"].as_array().map(|a| a.len()).unwrap_or(0);
    assert!(talkers > 0, "top talkers at a monitor on its own node: {}", s["top_talkers"]);
    let (code, _, matrix) = common::http("GET", &format!("127.0.0.1:{pm}"), "/api/policy/matrix").unwrap();
    assert_eq!(code, 200, "{matrix}");
    let matrix: serde_json::Value = serde_json::from_str(&matrix).unwrap();
    let flows: u64 = matrix["cells"].as_array().unwrap().iter().map(|c| c["cell"]["flows"].as_u64().unwrap_or(0)).sum();
    assert!(flows > 0, "traffic matrix at a monitor on its own node: {matrix}");
    assert_eq!(s["nodes"]["router-1"]["role"], "router");
    assert_eq!(s["nodes"]["det-1"]["role"], "detector");
    // Every node's /proc sample reaches the monitor over MQTT: its /metrics has them per node.
    let mut metrics = String::new();
    let per_node = wait_until(Duration::from_secs(10), || {
        metrics = common::http("GET", &format!("127.0.0.1:{pm}"), "/metrics").unwrap().2;
        ["router-1", "router-2", "router-3", "det-1"].iter().all(|n| {
            ["gatewarden_node_cpu_ratio", "gatewarden_node_memory_used_bytes", "gatewarden_bus_latency_seconds"]
                .iter()
                .all(|m| metrics.contains(&format!("{m}{{node=\"{n}\"}}")))
        })
    });
    assert!(per_node, "node metrics over MQTT at the monitor:\n{metrics}");

    // A model uploaded on the monitor's training page travels sealed to the
    // detector node, which checks and loads it and answers with an alert.
    let admin = std::process::Command::new(bin())
        .args(["token", "issue", "--role", "admin", "--sub", "ops", "-c", mon_cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(admin.status.success(), "{}", String::from_utf8_lossy(&admin.stderr));
    let admin = String::from_utf8(admin.stdout).unwrap().trim().to_string();
    let mut card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(common::root().join("models/host-mlp.card.json")).unwrap())
            .unwrap();
    card["name"] = "host-mlp-over-mqtt".into();
    let tflite = std::fs::read(common::root().join("models/host-mlp.tflite")).unwrap();
    use base64ct::Encoding;
    let body = serde_json::json!({"tflite_base64": base64ct::Base64::encode_string(&tflite), "card": card}).to_string();
    let mon_addr = format!("127.0.0.1:{pm}");
    let (code, _, answer) = common::request("POST", &mon_addr, "/api/model", Some(&admin), Some(&body)).unwrap();
    assert_eq!(code, 200, "{answer}");
    let mut model = serde_json::Value::Null;
    let loaded = common::wait_until(Duration::from_secs(20), || {
        let (_, _, b) = common::http("GET", &mon_addr, "/api/model").unwrap();
        model = serde_json::from_str(&b).unwrap_or_default();
        model["upload"]["results"]["det-1"]["ok"] == true
    });
    assert!(loaded, "the detector node answers the upload: {model}");
    assert_eq!(model["model"]["name"], "host-mlp-over-mqtt", "{model}");
    let det_metrics = common::http("GET", &format!("127.0.0.1:{pd}"), "/metrics").unwrap().2;
    assert!(det_metrics.contains("gatewarden_model_info{name=\"host-mlp-over-mqtt\""), "{det_metrics}");
    let (_, _, alerts) = common::http("GET", &format!("127.0.0.1:{pm}"), "/api/alerts").unwrap();
    let alerts: serde_json::Value = serde_json::from_str(&alerts).unwrap();
    let alerts = alerts.as_array().or_else(|| alerts["alerts"].as_array()).expect("alert list").clone();
    let traffic: Vec<&serde_json::Value> = alerts
        .iter()
        .filter(|a| !["channel_abuse", "system"].contains(&a["alert"]["category"].as_str().unwrap()))
        .collect();
    assert!(!traffic.is_empty());
    for a in &traffic {
        let node = a["gatewarden"]["node"].as_str().unwrap();
        assert!(node == "router-1" || node == "router-2", "traffic alerts are filed under the gateway: {a}");
    }
    // Nothing was refused on a clean run.
    for p in [pm, pd, pr1, pr2, pr3] {
        let st = status(p);
        let refused: f64 = st["counters"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with("gatewarden_secure_rejected_total"))
            .map(|(_, v)| v.as_f64().unwrap())
            .sum();
        assert_eq!(refused, 0.0, "port {p}: {}", st["counters"]);
    }
}

fn settings(broker: &Broker, id: &str, role: Role) -> MqttSettings {
    let cfg = Config::load(&broker.node_config(id, free_port(), "")).unwrap();
    MqttSettings::from_config(&cfg.node_id, &cfg.mqtt, &cfg.bus, role)
}

/// An alert det-1 raises under its own name (a detector may file a traffic
/// alert under a router only when the receiver knows that node's certificate
/// says router, and no router runs in the test that uses this).
fn alert(i: u64) -> Alert {
    Alert {
        id: i,
        ts_ns: i,
        node: "det-1".into(),
        flow_id: i,
        kind: AttackKind::PortScan,
        severity: Severity::Medium,
        src: Some("198.51.100.7".parse().unwrap()),
        dst: None,
        sport: 0,
        dport: 0,
        proto: None,
        action: AlertAction::Blocked,
        signature_id: 1,
        signature: "s".into(),
        confidence: 1.0,
        reason: format!("alert {i}"),
        flow: None,
        not_blocked: None,
        in_iface: String::new(),
    }
}

#[test]
fn a_broker_crash_with_1000_alerts_in_flight_loses_and_duplicates_nothing() {
    let Some(exe) = mosquitto_or_skip() else { return };
    let mut broker = Broker::start(exe, &[("det-1", "detector"), ("mon-1", "monitor")]);
    let sd = Shutdown::new();
    let (mreg, dreg) = (Registry::new(), Registry::new());
    let inbound = LocalBus::new(4096, &mreg);
    let mon = MqttBus::start(&settings(&broker, "mon-1", Role::Monitor), inbound.clone(), &mreg, sd.clone()).unwrap();
    let det = MqttBus::start(&settings(&broker, "det-1", Role::Detector), LocalBus::new(64, &dreg), &dreg, sd.clone())
        .unwrap();
    assert!(mon.wait_connected(Duration::from_secs(10)) && det.wait_connected(Duration::from_secs(10)));
    std::thread::sleep(Duration::from_millis(300)); // subscriptions settle
    let rx = inbound.alerts.receiver();
    let mut got: Vec<u64> = Vec::new();
    // The monitor also files its own ChannelAbuse alerts (1000 alerts in a burst is a flood); count only ours.
    let drain = |got: &mut Vec<u64>| {
        while let Ok(a) = rx.try_recv() {
            if a.kind != AttackKind::ChannelAbuse {
                got.push(a.id);
            }
        }
    };
    for i in 0..1000u64 {
        assert!(det.publish(Message::Alert(alert(i))));
        if i == 300 {
            broker.kill();
        }
        if i == 700 {
            wait_for("the detector to notice the broker is gone", Duration::from_secs(10), || !det.connected());
            assert!(det.spooled() > 0, "alerts wait in the spool while the broker is down");
            broker.restart();
        }
    }
    wait_for("1000 alerts at the monitor", Duration::from_secs(60), || {
        drain(&mut got);
        got.len() >= 1000
    });
    // Resends still in flight must not add duplicates.
    std::thread::sleep(Duration::from_secs(3));
    drain(&mut got);
    let distinct: std::collections::HashSet<u64> = got.iter().copied().collect();
    assert_eq!(got.len(), 1000, "exactly 1000 stored");
    assert_eq!(distinct.len(), 1000, "no duplicates");
    wait_for("outbox empty after acks", Duration::from_secs(10), || det.spooled() == 0);
    let d = dreg.snapshot();
    assert!(d["gatewarden_mqtt_connection_errors_total"] >= 1.0);
    sd.trigger();
    det.stop();
    mon.stop();
}

fn raw_client(broker: &Broker, client_id: &str, identity: Option<&str>) -> (rumqttc::Client, rumqttc::Connection) {
    let p = broker.pki();
    let tls = match identity {
        Some(id) => gatewarden::bus::mqtt::tls_config(
            &p.join("ca.crt"),
            &p.join(format!("nodes/{id}.crt")),
            &p.join(format!("nodes/{id}.key")),
        )
        .unwrap(),
        None => {
            use rustls_pki_types::pem::PemObject;
            let mut roots = rustls::RootCertStore::empty();
            roots.add(rustls_pki_types::CertificateDer::from_pem_file(p.join("ca.crt")).unwrap()).unwrap();
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth()
        }
    };
    let mut o = rumqttc::MqttOptions::new(client_id, "127.0.0.1", broker.port);
    o.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(Arc::new(tls))));
    o.set_keep_alive(Duration::from_secs(5));
    rumqttc::Client::new(o, 64)
}

/// A [`pump_until`] condition: `n` QoS 1 publishes acknowledged by the broker.
fn pubacks(n: u32) -> impl FnMut(&rumqttc::Packet) -> bool {
    let mut acks = 0;
    move |p| {
        acks += matches!(p, rumqttc::Packet::PubAck(_)) as u32;
        acks == n
    }
}

/// Polls a raw connection for `timeout`; returns whether it got a CONNACK and every publish seen.
fn pump(conn: &mut rumqttc::Connection, timeout: Duration) -> (bool, Vec<(String, Vec<u8>)>) {
    pump_until(conn, timeout, |_| false)
}

#[test]
fn forged_misdirected_and_replayed_messages_are_refused_and_counted() {
    let Some(exe) = mosquitto_or_skip() else { return };
    let broker = Broker::start(exe, &[("router-1", "router"), ("det-1", "detector"), ("mon-1", "monitor")]);

    // 1. No client certificate: the TLS handshake is refused, no CONNACK ever.
    let (_c, mut conn) = raw_client(&broker, "anonymous", None);
    let (connected, _) = pump(&mut conn, Duration::from_secs(5));
    assert!(!connected, "a client without a certificate must not get in");

    // 2. A router certificate publishing verdicts: the broker's ACL drops them.
    let (spy, mut spy_conn) = raw_client(&broker, "spy", Some("mon-1"));
    spy.subscribe("gatewarden/v1/#", rumqttc::QoS::AtLeastOnce).unwrap();
    let subscribed = |p: &rumqttc::Packet| matches!(p, rumqttc::Packet::SubAck(_));
    assert!(pump_until(&mut spy_conn, Duration::from_secs(10), subscribed).0);
    let (rogue, mut rogue_conn) = raw_client(&broker, "rogue-router", Some("router-1"));
    for t in ["gatewarden/v1/router-1/verdict", "gatewarden/v1/det-1/verdict"] {
        rogue.publish(t, rumqttc::QoS::AtLeastOnce, false, b"forged".to_vec()).unwrap();
    }
    rogue.publish("gatewarden/v1/router-1/heartbeat", rumqttc::QoS::AtLeastOnce, false, b"allowed".to_vec()).unwrap();
    let rogue_t = std::thread::spawn(move || pump_until(&mut rogue_conn, Duration::from_secs(10), pubacks(3)));
    // The heartbeat was published after the verdicts on the same connection:
    // once it is here, the verdicts would have been too, had the broker let them.
    let heartbeat = |p: &rumqttc::Packet| matches!(p, rumqttc::Packet::Publish(x) if x.topic.ends_with("/heartbeat"));
    let (_, seen) = pump_until(&mut spy_conn, Duration::from_secs(10), heartbeat);
    rogue_t.join().unwrap();
    assert!(seen.iter().any(|(t, _)| t == "gatewarden/v1/router-1/heartbeat"), "the spy does receive permitted topics");
    assert!(!seen.iter().any(|(t, _)| t.ends_with("/verdict")), "a router's verdicts never reach anyone: {seen:?}");
    let log = std::fs::read_to_string(&broker.log).unwrap_or_default();
    // The client id is the certificate's subject (`use_username_as_clientid`), not "rogue-router".
    assert!(log.contains("Denied PUBLISH from OU=router,CN=router-1"), "the broker logs the denial: {log}");
    assert!(!log.contains("port 1883"), "TLS only: no plain listener: {log}");
    assert!(log.contains("peer did not return a certificate"), "the broker logs the certificate-less client: {log}");

    // 3–5. Envelopes at a real router: tampered, replayed, one signed by an unknown key that
    // names its own node (det-x) on det-1's topic, and one signed by an unknown key that names det-1.
    let sd = Shutdown::new();
    let rreg = Registry::new();
    let inbound = LocalBus::new(64, &rreg);
    let router =
        MqttBus::start(&settings(&broker, "router-1", Role::Router), inbound.clone(), &rreg, sd.clone()).unwrap();
    assert!(router.wait_connected(Duration::from_secs(10)));
    let pki = PkiDir(broker.pki().to_path_buf());
    let ca = CaVerifier::load(&pki.ca_cert()).unwrap();
    let det_id = Identity::load(&pki.node_cert("det-1"), &pki.node_key("det-1"), &ca).unwrap();
    let mut det = SecureChannel::new(det_id, ca.clone(), SecureConfig::default(), &Registry::new());
    let (dc, mut dconn) = raw_client(&broker, "det-1", Some("det-1"));
    dc.subscribe("gatewarden/v1/router-1/key", rumqttc::QoS::AtLeastOnce).unwrap();
    dc.publish(topic("det-1", "key"), rumqttc::QoS::AtLeastOnce, true, det.announce()).unwrap();
    let key = |p: &rumqttc::Packet| matches!(p, rumqttc::Packet::Publish(x) if x.topic.ends_with("router-1/key"));
    let (_, seen) = pump_until(&mut dconn, Duration::from_secs(10), key);
    let (_, router_key) = seen.iter().find(|(t, _)| t.ends_with("/key")).expect("router's retained key");
    det.accept_announce(router_key, Some("router-1")).unwrap();
    let verdict = Message::Verdict(Verdict {
        id: 1,
        source: "198.51.100.7".parse().unwrap(),
        kind: AttackKind::PortScan,
        confidence: 1.0,
        reason: "test".into(),
        evidence: vec![],
        ttl_s: 60,
        issued_ns: 0,
        source_proof: gatewarden_proto::messages::SourceProof::Unproven,
        sender: String::new(),
    });
    let frame = |id: u64, env: Vec<u8>| envelope::encode(&Frame { id, body: FrameBody::Sealed(env) });
    let good = det.seal("router-1", 11, PayloadKind::Message, &verdict.encode()).unwrap();
    let mut tampered = det.seal("router-1", 12, PayloadKind::Message, &verdict.encode()).unwrap();
    let n = tampered.len();
    tampered[n - 120] ^= 0x40; // inside the ciphertext (the signature is the last 97 bytes)
    let other = tempfile::tempdir().unwrap();
    gatewarden::pki::init(other.path(), 30, false).unwrap();
    let (oc, ok) = gatewarden::pki::issue(other.path(), "det-x", CertRole::Detector, &[], 30).unwrap();
    let other_ca = CaVerifier::load(&PkiDir(other.path().into()).ca_cert()).unwrap();
    let mut stranger = SecureChannel::new(
        Identity::load(&oc, &ok, &other_ca).unwrap(),
        ca.clone(),
        SecureConfig::default(),
        &Registry::new(),
    );
    stranger.accept_announce(router_key, Some("router-1")).unwrap();
    let forged = stranger.seal("router-1", 13, PayloadKind::Message, &verdict.encode()).unwrap();
    // Another CA's "det-1": its envelope names the topic's node, so it is
    // opened, and refused: its sender key was never announced (and could not
    // be: the announcement's certificate would not verify).
    let (ic, ik) = gatewarden::pki::issue(other.path(), "det-1", CertRole::Detector, &[], 30).unwrap();
    let mut impostor = SecureChannel::new(
        Identity::load(&ic, &ik, &other_ca).unwrap(),
        ca.clone(),
        SecureConfig::default(),
        &Registry::new(),
    );
    impostor.accept_announce(router_key, Some("router-1")).unwrap();
    let unknown_key = impostor.seal("router-1", 14, PayloadKind::Message, &verdict.encode()).unwrap();
    let t = topic("det-1", "verdict");
    for (id, env) in [(11, good.clone()), (11, good), (12, tampered), (13, forged), (14, unknown_key)] {
        dc.publish(t.clone(), rumqttc::QoS::AtLeastOnce, false, frame(id, env)).unwrap();
    }
    let _ = pump_until(&mut dconn, Duration::from_secs(10), pubacks(5));
    wait_for("rejections counted at the router", Duration::from_secs(10), || {
        let s = rreg.snapshot();
        s["gatewarden_secure_rejected_total{reason=replay}"] >= 1.0
            && s["gatewarden_secure_rejected_total{reason=tampered}"] >= 1.0
            // The stranger's envelope names det-x on det-1's topic: refused
            // unopened, charged to det-1 (the topic's certificate).
            && s["gatewarden_secure_rejected_total{reason=unauthorized}"] >= 1.0
            && s["gatewarden_secure_rejected_total{reason=unknown_session}"] >= 1.0
    });
    let s = rreg.snapshot();
    assert_eq!(s["gatewarden_secure_opened_total"], 1.0, "only the genuine verdict opened");
    assert_eq!(inbound.verdicts.len(), 1, "and only it reached the router's stage");
    // Its sender is the topic's node, which the envelope proved (never on the wire):
    // the router keeps each detector's blocks in that detector's share of a full set.
    assert_eq!(inbound.verdicts.receiver().try_recv().unwrap().sender, "det-1");
    assert!(s["gatewarden_channel_abuse_alerts_total"] >= 3.0, "each refusal raised a ChannelAbuse alert: {s:?}");
    let audit = std::fs::read_to_string(broker.pki().join("spool-router-1/channel-audit.log")).unwrap();
    assert!(["replay", "tampered", "unauthorized", "unknown_session"].iter().all(|r| audit.contains(r)), "{audit}");
    sd.trigger();
    router.stop();
}

#[test]
fn broker_refusals_show_in_gatewarden_counters_and_alerts() {
    let Some(exe) = mosquitto_or_skip() else { return };
    let broker = Broker::start(exe, &[("router-1", "router"), ("det-1", "detector"), ("mon-1", "monitor")]);
    // The monitor hosts the broker in the appliance, so it follows Mosquitto's log.
    let pm = free_port();
    let extra = format!("broker_log = \"{}\"\n", broker.log.display());
    let _mon = run_node(&broker.node_config("mon-1", pm, &extra), "monitor", &[]);
    assert!(wait_http_ok(&format!("127.0.0.1:{pm}"), "/healthz", Duration::from_secs(10)));
    wait_for("monitor connected", Duration::from_secs(15), || counter(&status(pm), "gatewarden_mqtt_connected") == 1.0);

    // A client without a certificate.
    let (_c, mut conn) = raw_client(&broker, "anonymous", None);
    assert!(!pump(&mut conn, Duration::from_secs(3)).0);
    // A router certificate publishing verdicts (its own topic and another node's).
    let (rogue, mut rogue_conn) = raw_client(&broker, "rogue-router", Some("router-1"));
    for t in ["gatewarden/v1/router-1/verdict", "gatewarden/v1/det-1/verdict"] {
        rogue.publish(t, rumqttc::QoS::AtLeastOnce, false, b"forged".to_vec()).unwrap();
    }
    assert!(pump_until(&mut rogue_conn, Duration::from_secs(10), pubacks(2)).0);
    // A gatewarden node whose certificate comes from another CA: it trusts the
    // broker (the fleet CA is in its bundle) but the broker refuses it.
    let other = tempfile::tempdir().unwrap();
    gatewarden::pki::init(other.path(), 30, false).unwrap();
    let (oc, ok) = gatewarden::pki::issue(other.path(), "det-1", CertRole::Detector, &[], 30).unwrap();
    let bundle = other.path().join("bundle.crt");
    let mut pem = std::fs::read_to_string(other.path().join("ca.crt")).unwrap();
    pem.push_str(&std::fs::read_to_string(broker.pki().join("ca.crt")).unwrap());
    std::fs::write(&bundle, pem).unwrap();
    let mut s = settings(&broker, "det-1", Role::Detector);
    (s.ca, s.cert, s.key, s.spool_dir) = (bundle, oc, ok, other.path().join("spool"));
    let sd = Shutdown::new();
    let oreg = Registry::new();
    let outsider = MqttBus::start(&s, LocalBus::new(64, &oreg), &oreg, sd.clone()).unwrap();
    let start = Instant::now();
    while oreg.snapshot()["gatewarden_mqtt_refused_total{reason=tls}"] < 1.0 {
        assert!(start.elapsed() < Duration::from_secs(15), "no refusal counted: {:?}", oreg.snapshot());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!outsider.connected());
    assert!(
        oreg.snapshot()["gatewarden_channel_abuse_alerts_total"] >= 1.0,
        "and raises an alert (spooled until it gets in)"
    );
    assert!(outsider.spooled() >= 1);
    sd.trigger();
    outsider.stop();

    // The monitor saw every refusal in the broker's log.
    wait_for("broker refusals counted at the monitor", Duration::from_secs(10), || {
        let st = status(pm);
        counter(&st, "gatewarden_broker_refusals_total{reason=no_certificate}") >= 1.0
            && counter(&st, "gatewarden_broker_refusals_total{reason=acl_publish}") >= 2.0
            && counter(&st, "gatewarden_broker_refusals_total{reason=bad_certificate}") >= 1.0
    });
    let (_, _, alerts) = common::http("GET", &format!("127.0.0.1:{pm}"), "/api/alerts").unwrap();
    // The alert names the certificate, not the client id the rogue chose ("rogue-router").
    assert!(alerts.contains("OU=router,CN=router-1 may not publish gatewarden/v1/det-1/verdict"), "{alerts}");
    assert!(alerts.contains("without a certificate"), "{alerts}");
}

#[test]
fn an_all_in_one_gateway_keeps_its_pipeline_local_and_reports_to_the_fleet_monitor() {
    let Some(exe) = mosquitto_or_skip() else { return };
    // An all-in-one gateway joins the fleet with a router certificate.
    let broker = Broker::start(exe, &[("gw-all", "router"), ("mon-1", "monitor")]);
    let (pm, pa) = (free_port(), free_port());
    // The monitor groups every address, so its traffic matrix shows whatever the routers see.
    let policy = format!(
        "[policy]\nstate_dir = \"{}\"\nbucket_s = 1\n[[policy.groups]]\nname = \"everyone\"\nmembers = [\"0.0.0.0/0\", \"::/0\"]\n",
        broker.pki().join("policy-mon-1").display()
    );
    let _mon = run_node(&broker.node_config("mon-1", pm, &policy), "monitor", &[]);
    assert!(wait_http_ok(&format!("127.0.0.1:{pm}"), "/healthz", Duration::from_secs(10)));
    wait_for("monitor connected", Duration::from_secs(15), || counter(&status(pm), "gatewarden_mqtt_connected") == 1.0);
    let demo = common::root().join("samples/demo.pcap");
    let _all = run_node(&broker.node_config("gw-all", pa, ""), "all", &["--replay", demo.to_str().unwrap()]);
    assert!(wait_http_ok(&format!("127.0.0.1:{pa}"), "/healthz", Duration::from_secs(10)));
    // Its own detector, router and monitor work in process …
    wait_for("local verdicts and alerts", Duration::from_secs(40), || {
        let s = status(pa);
        counter(&s, "gatewarden_verdicts_received_total") > 0.0
            && s["alerts_by_kind"]["port_scan"].as_u64().unwrap_or(0) > 0
    });
    let s = status(pa);
    assert_eq!(counter(&s, "gatewarden_mqtt_connected"), 1.0, "{}", s["counters"]);
    assert_eq!(counter(&s, "gatewarden_mqtt_published_total{kind=verdict}"), 0.0, "verdicts stay local");
    assert_eq!(counter(&s, "gatewarden_mqtt_published_total{kind=flow_batch}"), 0.0, "flow batches stay local");
    // … and the fleet's monitor gets its alerts, heartbeats and online status.
    wait_for("the gateway's alerts and health at the fleet monitor", Duration::from_secs(30), || {
        let m = status(pm);
        m["nodes"]["gw-all"]["alerts"].as_u64().unwrap_or(0) > 0
            && m["nodes"]["gw-all"]["online"] == serde_json::json!(true)
            && m["nodes"]["gw-all"]["role"] == "all"
    });
    let local = status(pa)["alerts_by_kind"]["port_scan"].as_u64().unwrap();
    let m = status(pm);
    assert!(m["alerts_by_kind"]["port_scan"].as_u64().unwrap_or(0) > 0, "{}", m["alerts_by_kind"]);
    assert!(m["alerts_by_kind"]["port_scan"].as_u64().unwrap() <= local);
}
