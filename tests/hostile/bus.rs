//! Hostile input: the node bus (issue #14). A fleet node with a stolen (or
//! its own) certificate against a real Mosquitto over TLS: claiming another
//! node's state, flooding the monitor with forged metrics, acknowledging
//! another node's queue; and a revoked or re-issued certificate at the broker
//! and at peers.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::mosquitto::{gw, mosquitto_or_skip, pump_until, Broker};
use crate::common::{bin, free_port, wait_for, wait_http_ok, Guard};
use gatewarden::bus::mqtt::{topic, AckBatch, Frame, FrameBody, MqttBus, MqttSettings};
use gatewarden::bus::{LocalBus, Publisher};
use gatewarden::config::Config;
use gatewarden::pki::{CaVerifier, Identity, PkiDir};
use gatewarden::secure::{envelope, PayloadKind, SecureChannel, SecureConfig};
use gatewarden_core::metrics::Registry;
use gatewarden_core::shutdown::Shutdown;
use gatewarden_proto::messages::{Alert, AttackKind, Heartbeat, Message, MetricsSample, Severity, Verdict};
use gatewarden_proto::role::Role;
use rumqttc::QoS;

fn status(port: u16) -> serde_json::Value {
    let (code, _, body) = crate::common::http("GET", &format!("127.0.0.1:{port}"), "/api/status").unwrap();
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn counter(v: &serde_json::Value, name: &str) -> f64 {
    v["counters"][name].as_f64().unwrap_or(0.0)
}

fn run_node(cfg: &Path, role: &str) -> Guard {
    let mut c = Command::new(bin());
    c.args(["run", "--role", role, "--config", cfg.to_str().unwrap()]).env("RUST_LOG", "error");
    Guard::spawn(&mut c)
}

/// A monitor process on its own node, connected to the broker; returns it and its HTTP port.
fn start_monitor(broker: &Broker) -> (Guard, u16) {
    let pm = free_port();
    let data = format!("[monitor]\ndata_dir = \"{}\"\n", broker.pki().join("data-mon-1").display());
    let mon = run_node(&broker.node_config("mon-1", pm, &data), "monitor");
    assert!(wait_http_ok(&format!("127.0.0.1:{pm}"), "/healthz", Duration::from_secs(15)));
    wait_for("monitor connected", Duration::from_secs(20), || counter(&status(pm), "gatewarden_mqtt_connected") == 1.0);
    (mon, pm)
}

/// A raw MQTT client over TLS with a certificate and key from files.
fn raw_client_with(broker: &Broker, client_id: &str, crt: &Path, key: &Path) -> (rumqttc::Client, rumqttc::Connection) {
    let tls = gatewarden::bus::mqtt::tls_config(&broker.pki().join("ca.crt"), crt, key).unwrap();
    let mut o = rumqttc::MqttOptions::new(client_id, "127.0.0.1", broker.port);
    o.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(Arc::new(tls))));
    o.set_keep_alive(Duration::from_secs(5));
    o.set_max_packet_size(8 << 20, 8 << 20);
    rumqttc::Client::new(o, 256)
}

/// A raw client with the certificate `pki issue` wrote for `id`.
fn raw_client(broker: &Broker, client_id: &str, id: &str) -> (rumqttc::Client, rumqttc::Connection) {
    let p = PkiDir(broker.pki().to_path_buf());
    raw_client_with(broker, client_id, &p.node_cert(id), &p.node_key(id))
}

/// A [`pump_until`] condition: `n` QoS 1 publishes acknowledged by the broker.
fn pubacks(n: u32) -> impl FnMut(&rumqttc::Packet) -> bool {
    let mut acks = 0;
    move |p| {
        acks += matches!(p, rumqttc::Packet::PubAck(_)) as u32;
        acks == n
    }
}

fn plain(id: u64, msg: &Message) -> Vec<u8> {
    envelope::encode(&Frame { id, body: FrameBody::Plain(msg.encode()) })
}

fn heartbeat(node: &str, role: Role) -> Message {
    Message::Heartbeat(Heartbeat {
        node: node.into(),
        role,
        version: "forged".into(),
        uptime_s: 1,
        sent_ns: gatewarden_core::clock::unix_now_ns(),
    })
}

fn system_alert(node: &str, signature_id: u32, reason: &str) -> Message {
    Message::Alert(Alert::about_system(
        node,
        AttackKind::System,
        Severity::Low,
        signature_id,
        "settings",
        reason.into(),
    ))
}

fn settings(broker: &Broker, id: &str, role: Role) -> MqttSettings {
    let cfg = Config::load(&broker.node_config(id, free_port(), "")).unwrap();
    MqttSettings::from_config(&cfg.node_id, &cfg.mqtt, &cfg.bus, role)
}

fn rss_bytes(pid: u32) -> u64 {
    proc_status_bytes(pid, "VmRSS:")
}

/// A `/proc/<pid>/status` field in bytes (`VmRSS:` now, `VmHWM:` the peak).
fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = text
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

fn verdict(i: u64) -> Message {
    Message::Verdict(Verdict {
        id: i,
        source: "198.51.100.7".parse().unwrap(),
        kind: AttackKind::PortScan,
        confidence: 1.0,
        reason: "test".into(),
        evidence: vec![],
        ttl_s: 60,
        issued_ns: 0,
        source_proof: gatewarden_proto::messages::SourceProof::Unproven,
        sender: String::new(),
    })
}

/// A router's certificate (router-1) publishes, on its own topics (the ACL
/// allows them), a heartbeat, metrics and a "settings applied" answer that
/// claim det-1: the monitor drops and counts each, and shows nothing of
/// det-1. The same kinds claiming router-1 itself do arrive (the path works).
#[test]
fn a_router_certificate_cannot_show_another_nodes_state_at_the_monitor() {
    let Some(exe) = mosquitto_or_skip() else { return };
    let broker = Broker::start(exe, &[("router-1", "router"), ("det-1", "detector"), ("mon-1", "monitor")]);
    let (_mon, pm) = start_monitor(&broker);
    let version = {
        let (_, _, b) = crate::common::http("GET", &format!("127.0.0.1:{pm}"), "/api/settings").unwrap();
        serde_json::from_str::<serde_json::Value>(&b).ok().and_then(|v| v["version"].as_u64()).unwrap_or(1)
    };
    let (rogue, mut conn) = raw_client(&broker, "rogue-router", "router-1");
    // Its key announcement tells every node its certificate role (router).
    let pki = PkiDir(broker.pki().to_path_buf());
    let ca = CaVerifier::load(&pki.ca_cert()).unwrap();
    let id = Identity::load(&pki.node_cert("router-1"), &pki.node_key("router-1"), &ca).unwrap();
    let sc = SecureChannel::new(id, ca, SecureConfig::default(), &Registry::new());
    rogue.publish(topic("router-1", "key"), QoS::AtLeastOnce, true, sc.announce()).unwrap();
    let forged = [
        ("heartbeat", heartbeat("det-1", Role::Detector)),
        (
            "metrics",
            Message::Metrics(MetricsSample {
                node: "det-1".into(),
                ts_ns: gatewarden_core::clock::unix_now_ns(),
                values: vec![("cpu_ratio".into(), 0.99), ("net_rx_bytes:eth0".into(), 1.0)],
            }),
        ),
        ("alert", system_alert("det-1", 9_000_103, &format!("settings {version}: applied on det-1"))),
        // A router claiming a detector's role under its own name.
        ("heartbeat", heartbeat("router-1", Role::Detector)),
    ];
    for (i, (kind, msg)) in forged.iter().enumerate() {
        rogue.publish(topic("router-1", kind), QoS::AtLeastOnce, false, plain(100 + i as u64, msg)).unwrap();
    }
    // The router's own, honest heartbeat: it must arrive.
    rogue
        .publish(
            topic("router-1", "heartbeat"),
            QoS::AtLeastOnce,
            false,
            plain(1, &heartbeat("router-1", Role::Router)),
        )
        .unwrap();
    assert!(pump_until(&mut conn, Duration::from_secs(10), pubacks(6)).0);
    wait_for("the forgeries counted at the monitor", Duration::from_secs(15), || {
        let s = status(pm);
        counter(&s, "gatewarden_bus_identity_mismatch_total{kind=heartbeat}") >= 2.0
            && counter(&s, "gatewarden_bus_identity_mismatch_total{kind=metrics}") >= 1.0
            && counter(&s, "gatewarden_bus_identity_mismatch_total{kind=alert}") >= 1.0
            && s["nodes"]["router-1"]["role"] == "router"
    });
    let s = status(pm);
    assert!(s["nodes"]["det-1"].is_null(), "nothing of det-1 at the monitor: {}", s["nodes"]);
    let metrics = crate::common::http("GET", &format!("127.0.0.1:{pm}"), "/metrics").unwrap().2;
    assert!(!metrics.contains("node=\"det-1\""), "no det-1 series: {metrics}");
    let (_, _, alerts) = crate::common::http("GET", &format!("127.0.0.1:{pm}"), "/api/alerts").unwrap();
    assert!(!alerts.contains("applied on det-1"), "the forged settings answer is not stored: {alerts}");
    assert!(alerts.contains("identity_mismatch"), "a ChannelAbuse alert names the forgery: {alerts}");
    let (_, _, st) = crate::common::http("GET", &format!("127.0.0.1:{pm}"), "/api/settings").unwrap();
    assert!(!st.contains("det-1"), "no settings answer from det-1: {st}");
}

/// 10 000 forged metrics messages from one router certificate: 9 000 claim
/// distinct fake nodes with 40 interfaces each, 1 000 are the router's own
/// with 40 fresh interface names each, and 5 carry 100 000 values of 4 MiB.
/// The monitor's RSS stays within 64 MB of idle and `/metrics` stays small.
#[test]
fn ten_thousand_forged_metrics_leave_the_monitor_small() {
    let Some(exe) = mosquitto_or_skip() else { return };
    let broker = Broker::start(exe, &[("router-1", "router"), ("mon-1", "monitor")]);
    let (mon, pm) = start_monitor(&broker);
    let pid = mon.0.as_ref().unwrap().id();
    std::thread::sleep(Duration::from_secs(2));
    let idle_rss = rss_bytes(pid);
    let idle_metrics = crate::common::http("GET", &format!("127.0.0.1:{pm}"), "/metrics").unwrap().2.len();

    let (rogue, mut conn) = raw_client(&broker, "rogue-router", "router-1");
    let n_fake = 9_000u32;
    let n_own = 1_000u32;
    let n_huge = 5u32;
    let total = n_fake + n_own + n_huge;
    let pumper = std::thread::spawn(move || pump_until(&mut conn, Duration::from_secs(300), pubacks(total)));
    let ifaces = |seed: u32, n: u32| -> Vec<(String, f64)> {
        (0..n)
            .flat_map(|j| [(format!("net_rx_bytes:if{seed}x{j}"), 1.0), (format!("net_tx_bytes:if{seed}x{j}"), 1.0)])
            .collect()
    };
    let started = Instant::now();
    for i in 0..total {
        let (node, values) = if i < n_fake {
            (format!("fake-{i}"), ifaces(i, 40))
        } else if i < n_fake + n_own {
            ("router-1".to_string(), ifaces(i, 40))
        } else {
            // The shape: few messages, each as large as a message may be.
            let vals = (0..100_000u32).map(|j| (format!("net_rx_bytes:{}{j}", "x".repeat(8)), 1.0)).collect();
            ("router-1".to_string(), vals)
        };
        let m = Message::Metrics(MetricsSample { node, ts_ns: gatewarden_core::clock::unix_now_ns(), values });
        rogue.publish(topic("router-1", "metrics"), QoS::AtLeastOnce, false, plain(i as u64, &m)).unwrap();
    }
    assert!(pumper.join().unwrap().0, "the broker took every publish");
    let sent_s = started.elapsed().as_secs_f64();
    wait_for("every forged node counted", Duration::from_secs(120), || {
        counter(&status(pm), "gatewarden_bus_identity_mismatch_total{kind=metrics}") >= n_fake as f64
    });
    // The router's own samples: wait until the last (huge) ones were taken or dropped.
    wait_for("the router's own samples processed", Duration::from_secs(120), || {
        let s = status(pm);
        counter(&s, "gatewarden_node_series_refused_total") + counter(&s, "gatewarden_mqtt_inbound_dropped_total") > 0.0
            && s["counters"].as_object().unwrap().keys().any(|k| k.contains("node=router-1"))
    });
    std::thread::sleep(Duration::from_secs(2));
    let rss = rss_bytes(pid);
    let peak = proc_status_bytes(pid, "VmHWM:");
    let metrics = crate::common::http("GET", &format!("127.0.0.1:{pm}"), "/metrics").unwrap().2;
    let grown = rss.saturating_sub(idle_rss);
    eprintln!(
        "MEASURED: {total} forged metrics messages in {sent_s:.1} s; monitor RSS idle {:.1} MB, after {:.1} MB (+{:.1} MB, peak {:.1} MB); /metrics {} -> {} bytes",
        idle_rss as f64 / 1e6,
        rss as f64 / 1e6,
        grown as f64 / 1e6,
        peak as f64 / 1e6,
        idle_metrics,
        metrics.len()
    );
    assert!(grown < 64 << 20, "RSS grew by {} MB", grown >> 20);
    assert!(peak < idle_rss + (64 << 20), "peak RSS {} MB (idle {} MB)", peak >> 20, idle_rss >> 20);
    assert!(metrics.len() < idle_metrics + 32 * 1024, "/metrics grew from {idle_metrics} to {} bytes", metrics.len());
    assert!(!metrics.contains("fake-"), "no series for forged nodes");
    let router_ifaces = metrics
        .lines()
        .filter(|l| l.starts_with("gatewarden_node_network_receive_bytes_total{node=\"router-1\""))
        .count();
    assert!(router_ifaces <= 32, "at most 32 interfaces per node, got {router_ifaces}");
    let s = status(pm);
    assert!(s["nodes"].as_object().unwrap().len() <= 3, "{}", s["nodes"]);
    assert!(wait_http_ok(&format!("127.0.0.1:{pm}"), "/healthz", Duration::from_secs(1)), "still answers");
}

/// det-1 sends sealed verdicts to router-1 (away). router-2, which reads the
/// shared verdict topic and so sees their frame ids, acknowledges them to
/// det-1: refused and counted, det-1 keeps them queued and resends. router-1's
/// own acknowledgement empties the queue.
#[test]
fn a_node_cannot_acknowledge_another_nodes_queue() {
    let Some(exe) = mosquitto_or_skip() else { return };
    let broker = Broker::start(exe, &[("router-1", "router"), ("router-2", "router"), ("det-1", "detector")]);
    let pki = PkiDir(broker.pki().to_path_buf());
    let ca = CaVerifier::load(&pki.ca_cert()).unwrap();
    // router-1's key is announced (retained), then it goes away.
    let r1_id = Identity::load(&pki.node_cert("router-1"), &pki.node_key("router-1"), &ca).unwrap();
    let r1_sc = SecureChannel::new(r1_id, ca.clone(), SecureConfig::default(), &Registry::new());
    let (r1, mut r1_conn) = raw_client(&broker, "router-1", "router-1");
    r1.publish(topic("router-1", "key"), QoS::AtLeastOnce, true, r1_sc.announce()).unwrap();
    assert!(pump_until(&mut r1_conn, Duration::from_secs(10), pubacks(1)).0);
    // router-2 listens to the verdict topic (its ACL allows +/verdict).
    let (r2, mut r2_conn) = raw_client(&broker, "router-2", "router-2");
    r2.subscribe("gatewarden/v1/det-1/verdict", QoS::AtLeastOnce).unwrap();
    assert!(pump_until(&mut r2_conn, Duration::from_secs(10), |p| matches!(p, rumqttc::Packet::SubAck(_))).0);
    // router-2 announces a key too: det-1 then knows its certificate role (a router).
    let r2_id = Identity::load(&pki.node_cert("router-2"), &pki.node_key("router-2"), &ca).unwrap();
    let r2_sc = SecureChannel::new(r2_id, ca.clone(), SecureConfig::default(), &Registry::new());
    r2.publish(topic("router-2", "key"), QoS::AtLeastOnce, true, r2_sc.announce()).unwrap();

    let sd = Shutdown::new();
    let dreg = Registry::new();
    let det = MqttBus::start(&settings(&broker, "det-1", Role::Detector), LocalBus::new(64, &dreg), &dreg, sd.clone())
        .unwrap();
    assert!(det.wait_connected(Duration::from_secs(10)));
    let n = 5u64;
    for i in 0..n {
        assert!(det.publish_to("router-1", verdict(i)));
    }
    let mut ids = std::collections::BTreeSet::new();
    let start = Instant::now();
    while ids.len() < n as usize && start.elapsed() < Duration::from_secs(20) {
        let (_, seen) = pump_until(&mut r2_conn, Duration::from_millis(500), |_| false);
        for (_, payload) in seen {
            if let Ok(f) = envelope::decode::<Frame>(&payload) {
                ids.insert(f.id);
            }
        }
    }
    assert_eq!(ids.len(), n as usize, "router-2 saw the frames for router-1");
    let ack = |ids: &std::collections::BTreeSet<u64>| {
        postcard::to_allocvec(&AckBatch { to: "det-1".into(), ids: ids.iter().copied().collect() }).unwrap()
    };
    r2.publish(topic("router-2", "ack"), QoS::AtLeastOnce, false, ack(&ids)).unwrap();
    let _ = pump_until(&mut r2_conn, Duration::from_secs(5), |p| matches!(p, rumqttc::Packet::PubAck(_)));
    wait_for("router-2's ack refused at det-1", Duration::from_secs(15), || {
        dreg.snapshot()["gatewarden_bus_identity_mismatch_total{kind=ack}"] >= n as f64
    });
    let resent = dreg.snapshot()["gatewarden_mqtt_resent_total"];
    wait_for("det-1 resends what router-2 acknowledged", Duration::from_secs(15), || {
        dreg.snapshot()["gatewarden_mqtt_resent_total"] >= resent + n as f64
    });
    // Still queued for router-1 (besides det-1's own ChannelAbuse alert about the refusal, for a monitor).
    let queued = det.spooled();
    assert!(queued > n as usize, "the verdicts and the abuse alert wait: {queued}");
    // router-1's own ack is taken.
    r1.publish(topic("router-1", "ack"), QoS::AtLeastOnce, false, ack(&ids)).unwrap();
    let _ = pump_until(&mut r1_conn, Duration::from_secs(5), |p| matches!(p, rumqttc::Packet::PubAck(_)));
    wait_for("router-1's ack takes the verdicts off the queue", Duration::from_secs(15), || {
        det.spooled() == queued - n as usize
    });
    sd.trigger();
    det.stop();
}

/// Re-runs `pki mosquitto-conf` as the harness first did and restarts the broker.
fn reconfigure_broker(broker: &mut Broker) {
    let d = broker.pki().to_str().unwrap().to_string();
    gw(&[
        "pki",
        "mosquitto-conf",
        "--dir",
        &d,
        "--port",
        &broker.port.to_string(),
        "--bind",
        "127.0.0.1",
        "--user",
        "root",
    ]);
    let mut text = std::fs::read_to_string(&broker.conf).unwrap();
    text.push_str("log_type all\n");
    std::fs::write(&broker.conf, text).unwrap();
    broker.kill();
    broker.restart();
}

/// A stolen detector certificate, revoked with `pki revoke`: a router that
/// starts with the new `ca.crl` refuses its key announcement and its sealed
/// verdict (`revoked`); once the broker has the new config, Mosquitto refuses
/// the certificate in the TLS handshake, while other nodes still get in.
#[test]
fn a_revoked_node_is_refused_by_mosquitto_and_its_envelopes_by_peers() {
    let Some(exe) = mosquitto_or_skip() else { return };
    let broker = Broker::start(exe, &[("router-1", "router"), ("det-1", "detector"), ("det-2", "detector")]);
    let pki = PkiDir(broker.pki().to_path_buf());
    // The thief's copy, taken before the revocation.
    let stolen = tempfile::tempdir().unwrap();
    let (crt, key) = (stolen.path().join("det-1.crt"), stolen.path().join("det-1.key"));
    std::fs::copy(pki.node_cert("det-1"), &crt).unwrap();
    std::fs::copy(pki.node_key("det-1"), &key).unwrap();
    let ca_before = CaVerifier::from_der(&gatewarden::pki::read_cert_der(&pki.ca_cert()).unwrap()).unwrap();
    let det_id = Identity::load(&crt, &key, &ca_before).unwrap();

    let out = gw(&["pki", "revoke", "det-1", "--dir", broker.pki().to_str().unwrap()]);
    assert!(out.contains("revoked det-1"), "{out}");
    assert!(CaVerifier::load(&pki.ca_cert()).unwrap().revoked_count() == 1);

    // A router started after the revocation reads ca.crl beside ca.crt.
    let sd = Shutdown::new();
    let rreg = Registry::new();
    let inbound = LocalBus::new(64, &rreg);
    let router =
        MqttBus::start(&settings(&broker, "router-1", Role::Router), inbound.clone(), &rreg, sd.clone()).unwrap();
    assert!(router.wait_connected(Duration::from_secs(10)));
    // The broker still runs the old config: the thief gets in and speaks.
    let (thief, mut tconn) = raw_client_with(&broker, "det-1", &crt, &key);
    thief.subscribe("gatewarden/v1/router-1/key", QoS::AtLeastOnce).unwrap();
    let key_seen = |p: &rumqttc::Packet| matches!(p, rumqttc::Packet::Publish(x) if x.topic.ends_with("router-1/key"));
    let (_, seen) = pump_until(&mut tconn, Duration::from_secs(10), key_seen);
    let (_, router_key) = seen.iter().find(|(t, _)| t.ends_with("/key")).expect("router-1's retained key");
    let mut det = SecureChannel::new(det_id, ca_before, SecureConfig::default(), &Registry::new());
    det.accept_announce(router_key, Some("router-1")).unwrap();
    thief.publish(topic("det-1", "key"), QoS::AtLeastOnce, true, det.announce()).unwrap();
    let env = det.seal("router-1", 7, PayloadKind::Message, &verdict(7).encode()).unwrap();
    let frame = envelope::encode(&Frame { id: 7, body: FrameBody::Sealed(env) });
    thief.publish(topic("det-1", "verdict"), QoS::AtLeastOnce, false, frame).unwrap();
    let _ = pump_until(&mut tconn, Duration::from_secs(10), pubacks(2));
    wait_for("the revoked key and verdict refused at the router", Duration::from_secs(15), || {
        rreg.snapshot()["gatewarden_secure_rejected_total{reason=revoked}"] >= 2.0
    });
    assert_eq!(inbound.verdicts.len(), 0, "nothing from the revoked detector reaches the router's stage");
    assert_eq!(rreg.snapshot()["gatewarden_secure_opened_total"], 0.0);
    let audit = std::fs::read_to_string(broker.pki().join("spool-router-1/channel-audit.log")).unwrap();
    assert!(audit.contains("revoked"), "{audit}");
    drop(thief);
    drop(tconn);
    sd.trigger();
    router.stop();

    // The broker re-reads the CRL on SIGHUP (for new connections; `pki revoke
    // --help` says to restart, which also drops a connected holder): the
    // stolen certificate never gets a CONNACK again.
    let d = broker.pki().to_str().unwrap().to_string();
    gw(&[
        "pki",
        "mosquitto-conf",
        "--dir",
        &d,
        "--port",
        &broker.port.to_string(),
        "--bind",
        "127.0.0.1",
        "--user",
        "root",
    ]);
    let conf = std::fs::read_to_string(&broker.conf).unwrap();
    assert!(conf.contains("crlfile "), "{conf}");
    broker.proc.signal("HUP");
    let connects = |client_id: &str| {
        let (_t, mut tconn) = raw_client_with(&broker, client_id, &crt, &key);
        pump_until(&mut tconn, Duration::from_secs(3), |p| matches!(p, rumqttc::Packet::ConnAck(_))).0
    };
    let mut attempt = 0;
    wait_for("Mosquitto refuses the revoked certificate after SIGHUP", Duration::from_secs(20), || {
        attempt += 1;
        !connects(&format!("det-1-again-{attempt}"))
    });
    // Not a passing moment: every later attempt is refused too.
    assert!(!connects("det-1-last"), "revoked certificate refused");
    let (_ok, mut oconn) = raw_client(&broker, "det-2", "det-2");
    assert!(
        pump_until(&mut oconn, Duration::from_secs(10), |p| matches!(p, rumqttc::Packet::ConnAck(_))).0,
        "det-2 still gets in"
    );
    let log = std::fs::read_to_string(&broker.log).unwrap_or_default();
    // Mosquitto 2.0 logs the refusal without naming the CRL.
    assert!(log.contains("certificate verify failed"), "Mosquitto logs the refused certificate: {log}");
}

/// router-1's certificate is re-issued as a detector's. The old (router)
/// certificate is still valid (not revoked), but the ACL keys on CN and
/// role: it publishes neither a detector's verdict nor even its old
/// heartbeat, while the new certificate's verdict goes through.
#[test]
fn reissuing_an_id_with_another_role_gives_the_old_certificate_no_new_rights() {
    let Some(exe) = mosquitto_or_skip() else { return };
    let mut broker = Broker::start(exe, &[("node-1", "router"), ("mon-1", "monitor")]);
    let pki = PkiDir(broker.pki().to_path_buf());
    let old = tempfile::tempdir().unwrap();
    let (crt, key) = (old.path().join("node-1.crt"), old.path().join("node-1.key"));
    std::fs::copy(pki.node_cert("node-1"), &crt).unwrap();
    std::fs::copy(pki.node_key("node-1"), &key).unwrap();
    gw(&["pki", "issue", "node-1", "--role", "detector", "--dir", broker.pki().to_str().unwrap()]);
    reconfigure_broker(&mut broker);
    let acl = std::fs::read_to_string(broker.pki().join("mosquitto/acl")).unwrap();
    assert!(acl.contains("user OU=detector,CN=node-1") && !acl.contains("user OU=router,CN=node-1"), "{acl}");

    let (spy, mut spy_conn) = raw_client(&broker, "spy", "mon-1");
    spy.subscribe("gatewarden/v1/#", QoS::AtLeastOnce).unwrap();
    assert!(pump_until(&mut spy_conn, Duration::from_secs(10), |p| matches!(p, rumqttc::Packet::SubAck(_))).0);
    let (stale, mut stale_conn) = raw_client_with(&broker, "old-node-1", &crt, &key);
    stale.publish(topic("node-1", "verdict"), QoS::AtLeastOnce, false, b"old-verdict".to_vec()).unwrap();
    stale.publish(topic("node-1", "heartbeat"), QoS::AtLeastOnce, false, b"old-heartbeat".to_vec()).unwrap();
    assert!(
        pump_until(&mut stale_conn, Duration::from_secs(10), pubacks(2)).0,
        "the old certificate still connects (not revoked)"
    );
    let (fresh, mut fresh_conn) = raw_client(&broker, "new-node-1", "node-1");
    fresh.publish(topic("node-1", "verdict"), QoS::AtLeastOnce, false, b"new-verdict".to_vec()).unwrap();
    assert!(pump_until(&mut fresh_conn, Duration::from_secs(10), pubacks(1)).0);
    // The new verdict was published after the old messages: once it is here, they would be too.
    let newest = |p: &rumqttc::Packet| matches!(p, rumqttc::Packet::Publish(x) if x.payload.as_ref() == b"new-verdict");
    let (_, seen) = pump_until(&mut spy_conn, Duration::from_secs(10), newest);
    assert!(seen.iter().any(|(_, p)| p == b"new-verdict"), "the detector certificate publishes verdicts: {seen:?}");
    assert!(!seen.iter().any(|(_, p)| p.starts_with(b"old-")), "the old router certificate has no rights: {seen:?}");
}

/// The CLI: `pki revoke --help` says what to do next; an unknown id is an
/// error naming `pki list`; `pki list` shows the revoked certificate.
#[test]
fn pki_revoke_teaches_refuses_unknown_ids_and_lists_revoked_ones() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_str().unwrap();
    gw(&["pki", "init", "--dir", dir]);
    gw(&["pki", "issue", "r1", "--role", "router", "--dir", dir]);
    let help = gw(&["pki", "revoke", "--help"]);
    for want in ["mosquitto-conf", "ca.crl", "--reason", "key-compromise"] {
        assert!(help.contains(want), "{want} in {help}");
    }
    let out = Command::new(bin()).args(["pki", "revoke", "nobody", "--dir", dir]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nobody") && err.contains("pki list"), "{err}");
    gw(&["pki", "revoke", "r1", "--reason", "cessation-of-operation", "--dir", dir]);
    let list = gw(&["pki", "list", "--dir", dir]);
    assert!(list.lines().any(|l| l.starts_with("r1") && l.contains("revoked")), "{list}");
    let again = Command::new(bin()).args(["pki", "revoke", "r1", "--dir", dir]).output().unwrap();
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("already revoked"));
}

/// The `ctl` endpoint uses the same certificate checks: a node started after
/// `pki revoke op-1` refuses the stolen operator certificate's handshake
/// (counted as `revoked`), even from a thief whose own copy of the CA has no
/// revocation list; another operator still gets in.
#[test]
fn a_revoked_operator_is_refused_by_the_ctl_endpoint() {
    let Some(exe) = mosquitto_or_skip() else { return };
    let broker = Broker::start(exe, &[("mon-1", "monitor"), ("op-1", "operator"), ("op-2", "operator")]);
    let pki = PkiDir(broker.pki().to_path_buf());
    let stolen = tempfile::tempdir().unwrap();
    for (from, to) in
        [(pki.ca_cert(), "ca.crt"), (pki.node_cert("op-1"), "op-1.crt"), (pki.node_key("op-1"), "op-1.key")]
    {
        std::fs::copy(from, stolen.path().join(to)).unwrap();
    }
    gw(&["pki", "revoke", "op-1", "--dir", broker.pki().to_str().unwrap()]);
    let (pm, pc) = (free_port(), free_port());
    let extra = format!("[ctl]\nlisten = \"127.0.0.1:{pc}\"\n");
    let _mon = run_node(&broker.node_config("mon-1", pm, &extra), "monitor");
    assert!(wait_http_ok(&format!("127.0.0.1:{pm}"), "/healthz", Duration::from_secs(15)));
    wait_for("ctl listening", Duration::from_secs(15), || std::net::TcpStream::connect(("127.0.0.1", pc)).is_ok());
    let node = format!("127.0.0.1:{pc}");
    let s = |f: &str| stolen.path().join(f).to_str().unwrap().to_string();
    let out = Command::new(bin())
        .args([
            "ctl",
            "--node",
            &node,
            "--ca",
            &s("ca.crt"),
            "--cert",
            &s("op-1.crt"),
            "--key",
            &s("op-1.key"),
            "status",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "revoked operator got in: {}", String::from_utf8_lossy(&out.stdout));
    wait_for("the revoked handshake counted", Duration::from_secs(10), || {
        counter(&status(pm), "gatewarden_secure_rejected_total{reason=revoked}") >= 1.0
    });
    let ok = Command::new(bin())
        .args(["ctl", "--node", &node, "--pki", broker.pki().to_str().unwrap(), "--id", "op-2", "status"])
        .output()
        .unwrap();
    assert!(ok.status.success(), "op-2: {}", String::from_utf8_lossy(&ok.stderr));
}

/// A router already running when det-1 is revoked: its verdicts open before;
/// within the 10 s check of `ca.crl` the router drops det-1's key and refuses
/// its next verdict as `revoked`, without a restart.
#[test]
fn a_running_router_takes_a_new_revocation_list_without_a_restart() {
    let Some(exe) = mosquitto_or_skip() else { return };
    let broker = Broker::start(exe, &[("router-1", "router"), ("det-1", "detector")]);
    let pki = PkiDir(broker.pki().to_path_buf());
    let ca = CaVerifier::load(&pki.ca_cert()).unwrap();
    let det_id = Identity::load(&pki.node_cert("det-1"), &pki.node_key("det-1"), &ca).unwrap();
    let (thief, mut tconn) = raw_client(&broker, "det-1", "det-1");
    let sd = Shutdown::new();
    let rreg = Registry::new();
    let inbound = LocalBus::new(64, &rreg);
    let router =
        MqttBus::start(&settings(&broker, "router-1", Role::Router), inbound.clone(), &rreg, sd.clone()).unwrap();
    assert!(router.wait_connected(Duration::from_secs(10)));
    thief.subscribe("gatewarden/v1/router-1/key", QoS::AtLeastOnce).unwrap();
    let key_seen = |p: &rumqttc::Packet| matches!(p, rumqttc::Packet::Publish(x) if x.topic.ends_with("router-1/key"));
    let (_, seen) = pump_until(&mut tconn, Duration::from_secs(10), key_seen);
    let (_, router_key) = seen.iter().find(|(t, _)| t.ends_with("/key")).expect("router-1's retained key");
    let mut det = SecureChannel::new(det_id, ca, SecureConfig::default(), &Registry::new());
    det.accept_announce(router_key, Some("router-1")).unwrap();
    thief.publish(topic("det-1", "key"), QoS::AtLeastOnce, true, det.announce()).unwrap();
    // Publishes one sealed verdict and drives the raw connection until the
    // broker has acked every publish so far (the key announcement first), so
    // nothing is left waiting in the client.
    let mut unacked = 1u32;
    let mut send = |id: u64| {
        let env = det.seal("router-1", id, PayloadKind::Message, &verdict(id).encode()).unwrap();
        let frame = envelope::encode(&Frame { id, body: FrameBody::Sealed(env) });
        thief.publish(topic("det-1", "verdict"), QoS::AtLeastOnce, false, frame).unwrap();
        unacked += 1;
        // (The first call also sees the CONNACK; later ones only PUBACKs.)
        let _ = pump_until(&mut tconn, Duration::from_secs(10), pubacks(unacked));
        unacked = 0;
    };
    send(1);
    wait_for("det-1's verdict opens before the revocation", Duration::from_secs(15), || inbound.verdicts.len() == 1);
    gw(&["pki", "revoke", "det-1", "--dir", broker.pki().to_str().unwrap()]);
    let mut id = 1;
    let revoked = || rreg.snapshot()["gatewarden_secure_rejected_total{reason=revoked}"];
    let start = Instant::now();
    while revoked() < 1.0 {
        assert!(start.elapsed() < Duration::from_secs(40), "the running router never took the new ca.crl");
        id += 1;
        send(id);
        std::thread::sleep(Duration::from_millis(500));
    }
    // Verdicts sent before the router's next look at ca.crl still opened; none after.
    let opened = rreg.snapshot()["gatewarden_secure_opened_total"];
    send(id + 1);
    let refused = crate::common::wait_until(Duration::from_secs(10), || revoked() >= 2.0);
    assert!(refused, "the later verdict refused too: {:?}", rreg.snapshot());
    assert_eq!(rreg.snapshot()["gatewarden_secure_opened_total"], opened, "nothing opens after the reload");
    sd.trigger();
    router.stop();
}

/// router-1's stolen certificate connects with det-1's MQTT client id, and
/// again each time the broker drops it. The broker used to take the client
/// id at its word: every CONNECT "took over" det-1's session, closed det-1's
/// connection and handed its subscriptions to the thief, so one router
/// certificate could keep the fleet's detector (or monitor) off the bus.
/// Each certificate now connects under its own subject as client id
/// (`use_username_as_clientid`), so det-1 is never dropped.
#[test]
fn a_stolen_certificate_cannot_knock_another_node_off_the_broker_with_its_client_id() {
    let Some(exe) = mosquitto_or_skip() else { return };
    let broker = Broker::start(exe, &[("router-1", "router"), ("det-1", "detector")]);
    let sd = Shutdown::new();
    let dreg = Registry::new();
    let det = MqttBus::start(&settings(&broker, "det-1", Role::Detector), LocalBus::new(64, &dreg), &dreg, sd.clone())
        .unwrap();
    assert!(det.wait_connected(Duration::from_secs(10)));
    let errors = || dreg.snapshot()["gatewarden_mqtt_connection_errors_total"];
    let before = errors();
    let (_thief, mut conn) = raw_client(&broker, "det-1", "router-1");
    let (mut thief_connects, start) = (0, Instant::now());
    while start.elapsed() < Duration::from_secs(5) {
        match conn.recv_timeout(Duration::from_millis(100)) {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)))) => thief_connects += 1,
            Ok(Err(_)) => std::thread::sleep(Duration::from_millis(50)),
            _ => {}
        }
    }
    assert!(thief_connects >= 1, "the router's certificate gets in (under its own identity)");
    let log = std::fs::read_to_string(&broker.log).unwrap_or_default();
    let takeovers: Vec<&str> = log.lines().filter(|l| l.contains("already connected")).collect();
    assert_eq!(
        errors(),
        before,
        "det-1 was dropped {} time(s) while router-1's certificate connected as client id det-1: {takeovers:?}",
        errors() - before
    );
    assert!(takeovers.is_empty(), "{takeovers:?}");
    assert!(det.connected(), "det-1 is still on the bus");
    sd.trigger();
    det.stop();
}

/// router-1's stolen certificate publishes, on its own alert topic (the ACL
/// allows it), envelopes for the monitor whose header names det-1 as the
/// sender. They cannot open, but the monitor charged each refusal to the name
/// in the header: its audit log and `ChannelAbuse` alerts said det-1 sent
/// envelopes it could not open, so a stolen router could get an innocent
/// detector revoked while it stayed unnamed. The topic's node is the one the
/// broker vouches for (the ACL ties it to the certificate): an envelope
/// claiming another sender is refused unopened and charged to router-1.
#[test]
fn a_stolen_certificate_cannot_get_another_node_blamed_for_its_forged_envelopes() {
    let Some(exe) = mosquitto_or_skip() else { return };
    let broker = Broker::start(exe, &[("router-1", "router"), ("det-1", "detector"), ("mon-1", "monitor")]);
    let sd = Shutdown::new();
    let (mreg, dreg) = (Registry::new(), Registry::new());
    let mon = MqttBus::start(&settings(&broker, "mon-1", Role::Monitor), LocalBus::new(64, &mreg), &mreg, sd.clone())
        .unwrap();
    let det = MqttBus::start(&settings(&broker, "det-1", Role::Detector), LocalBus::new(64, &dreg), &dreg, sd.clone())
        .unwrap();
    assert!(mon.wait_connected(Duration::from_secs(10)) && det.wait_connected(Duration::from_secs(10)));
    // The thief learns the monitor's key as every router does (+/key).
    let pki = PkiDir(broker.pki().to_path_buf());
    let ca = CaVerifier::load(&pki.ca_cert()).unwrap();
    let id = Identity::load(&pki.node_cert("router-1"), &pki.node_key("router-1"), &ca).unwrap();
    let mut sc = SecureChannel::new(id, ca, SecureConfig::default(), &Registry::new());
    let (thief, mut conn) = raw_client(&broker, "router-1", "router-1");
    thief.subscribe(topic("mon-1", "key"), QoS::AtLeastOnce).unwrap();
    let key_seen = |p: &rumqttc::Packet| matches!(p, rumqttc::Packet::Publish(x) if x.topic.ends_with("mon-1/key"));
    let (_, seen) = pump_until(&mut conn, Duration::from_secs(10), key_seen);
    let (_, mon_key) = seen.iter().find(|(t, _)| t.ends_with("/key")).expect("mon-1's retained key");
    sc.accept_announce(mon_key, Some("mon-1")).unwrap();
    let alert = system_alert("router-1", 9_000_103, "forged");
    for i in 0..3u64 {
        let sealed = sc.seal("mon-1", 500 + i, PayloadKind::Message, &alert.encode()).unwrap();
        let mut env: gatewarden::secure::Envelope = envelope::decode(&sealed).unwrap();
        env.header.sender = "det-1".into();
        let frame = envelope::encode(&Frame { id: 500 + i, body: FrameBody::Sealed(envelope::encode(&env)) });
        thief.publish(topic("router-1", "alert"), QoS::AtLeastOnce, false, frame).unwrap();
    }
    let _ = pump_until(&mut conn, Duration::from_secs(10), pubacks(3));
    let rejected = || -> f64 {
        mreg.snapshot().iter().filter(|(k, _)| k.starts_with("gatewarden_secure_rejected_total")).map(|(_, v)| *v).sum()
    };
    wait_for("the forged envelopes refused at the monitor", Duration::from_secs(15), || rejected() >= 3.0);
    let audit = std::fs::read_to_string(broker.pki().join("spool-mon-1/channel-audit.log")).unwrap();
    let peers: Vec<String> = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| v["peer"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(!peers.iter().any(|p| p == "det-1"), "the monitor blamed det-1 for router-1's envelopes: {audit}");
    assert!(peers.iter().any(|p| p == "router-1"), "the refusals name router-1: {audit}");
    sd.trigger();
    mon.stop();
    det.stop();
}
