//! Hostile input: the `gatewarden ctl` port before authentication (issue #14).
//!
//! A real node (`gatewarden run --role all`) with a real fleet PKI made by
//! `gatewarden pki`, its ctl port on loopback. The attacker is anyone on the
//! LAN: garbage, oversized frames, forged names with control characters,
//! certificates of another CA, bad signatures, idle and trickling
//! connections from many addresses (127.0.0.0/8 gives each its own). The
//! operator is `gatewarden ctl … status`, run as a process.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gatewarden::pki::{CaVerifier, Identity};
use gatewarden::secure::{envelope, Announce, SecureChannel, SecureConfig};

use crate::common::mosquitto::gw;
use crate::common::{bin, free_port, wait_for, wait_http_ok, Guard};

/// A forged name: a newline that would start a fake log line, then an
/// escape sequence that would recolour the operator's terminal.
const EVIL_NAME: &str = "mallory\n2026-12-04T00:00:00Z INFO forged line\x1b[31m";

struct Node {
    proc: Guard,
    dir: tempfile::TempDir,
    http: String,
    ctl: SocketAddr,
}

impl Node {
    /// A node with the operator `alice` and the detector `det-1` issued by its fleet CA.
    fn start(ctl_extra: &str) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        gw(&["pki", "init", "--dir", d]);
        for (id, role) in [("gw-1", "router"), ("alice", "operator"), ("det-1", "detector")] {
            gw(&["pki", "issue", id, "--role", role, "--dir", d]);
        }
        let (http_port, ctl_port) = (free_port(), free_port());
        let p = dir.path();
        let cfg = p.join("gw-1.toml");
        std::fs::write(
            &cfg,
            format!(
                "node_id = \"gw-1\"\n[http]\nlisten = \"127.0.0.1:{http_port}\"\npublic_status = true\n\
                 [mqtt]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\nspool_dir = \"{}\"\n\
                 [ctl]\nlisten = \"127.0.0.1:{ctl_port}\"\n{ctl_extra}",
                p.join("ca.crt").display(),
                p.join("nodes/gw-1.crt").display(),
                p.join("nodes/gw-1.key").display(),
                p.join("spool").display(),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(p.join("gw.log")).unwrap();
        let proc = Guard::spawn(
            Command::new(bin())
                .args(["run", "--role", "all", "--config", cfg.to_str().unwrap()])
                .env("RUST_LOG", "info")
                .env_remove("NO_COLOR")
                .stdout(Stdio::null())
                .stderr(log),
        );
        let http = format!("127.0.0.1:{http_port}");
        assert!(wait_http_ok(&http, "/healthz", Duration::from_secs(30)), "the node did not start: {}", log_of(p));
        let ctl = SocketAddr::from(([127, 0, 0, 1], ctl_port));
        wait_for("the ctl port", Duration::from_secs(10), || TcpStream::connect(ctl).is_ok());
        Node { proc, dir, http, ctl }
    }

    fn pki(&self) -> &Path {
        self.dir.path()
    }

    fn identity(&self, id: &str) -> Identity {
        identity_in(self.pki(), id)
    }

    fn log(&self) -> String {
        log_of(self.dir.path())
    }

    fn alive(&mut self) -> bool {
        self.proc.child().try_wait().unwrap().is_none()
    }

    /// `gatewarden ctl status` as the operator; (answered, output, how long it took).
    fn operator_status(&self) -> (bool, String, Duration) {
        let t = Instant::now();
        let out = Command::new(bin())
            .args(["ctl", "--node", &self.ctl.to_string(), "--pki", self.pki().to_str().unwrap(), "--id", "alice"])
            .args(["--timeout", "20", "status"])
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success() && text.contains("gw-1"), text, t.elapsed())
    }

    /// Channel-abuse alerts in `/api/alerts`.
    fn abuse_alerts(&self) -> Vec<serde_json::Value> {
        let (_, _, body) =
            crate::common::http("GET", &self.http, "/api/alerts?kind=channel_abuse&limit=10000").unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v["alerts"].as_array().cloned().unwrap_or_default()
    }

    /// Sum of every series of `family` in `/metrics` whose labels contain `label` ("" for all).
    fn metric(&self, family: &str, label: &str) -> f64 {
        let (_, _, body) = crate::common::http("GET", &self.http, "/metrics").unwrap_or_default();
        body.lines()
            .filter(|l| l.starts_with(family) && l[family.len()..].starts_with(['{', ' ']) && l.contains(label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("gw.log")).unwrap_or_default()
}

fn identity_in(pki: &Path, id: &str) -> Identity {
    let ca = CaVerifier::load(&pki.join("ca.crt")).unwrap();
    Identity::load(&pki.join(format!("nodes/{id}.crt")), &pki.join(format!("nodes/{id}.key")), &ca).unwrap()
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

/// A hello carrying `node` as its name, with a real certificate but no valid signature.
fn named_hello(cert_der: &[u8], node: String) -> Vec<u8> {
    let a = Announce {
        node,
        cert_der: cert_der.to_vec(),
        ek_id: 7,
        ek_pub: vec![4; 97],
        issued_ns: 1,
        signature: vec![0; 96],
    };
    frame(&envelope::encode(&a))
}

/// Connects, sends `bytes` and waits until the node hangs up, which it must
/// do well within its handshake deadline (5 s): a forged hello is refused at once.
fn send_and_wait_for_close(node: SocketAddr, bytes: &[u8]) {
    let Ok(mut s) = connect_from(node, None) else { return };
    let _ = s.set_read_timeout(Some(Duration::from_secs(8)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(8)));
    let _ = s.write_all(bytes);
    let mut sink = [0u8; 4096];
    loop {
        match s.read(&mut sink) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                panic!("the node kept a forged handshake open for 8 s ({} bytes sent)", bytes.len())
            }
            Err(_) => return,
        }
    }
}

fn connect_from(node: SocketAddr, from: Option<Ipv4Addr>) -> std::io::Result<TcpStream> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    if let Some(ip) = from {
        sock.bind(&SocketAddr::V4(SocketAddrV4::new(ip, 0)).into())?;
    }
    sock.connect_timeout(&node.into(), Duration::from_secs(10))?;
    Ok(sock.into())
}

/// 2 000 forged handshakes of every kind → a handful of alerts, a living
/// process, an operator still served, and logs with no forged line.
#[test]
fn forged_handshakes_raise_a_handful_of_alerts_and_the_node_lives() {
    let mut node = Node::start("");
    let alice = node.identity("alice");
    // Another fleet's operator: a real certificate from the wrong CA.
    let foreign = tempfile::tempdir().unwrap();
    let fd = foreign.path().to_str().unwrap();
    gw(&["pki", "init", "--dir", fd]);
    gw(&["pki", "issue", "alice", "--role", "operator", "--dir", fd]);
    let mallory = identity_in(foreign.path(), "alice");
    let registry = gatewarden_core::metrics::Registry::new();
    let foreign_hello = frame(
        &SecureChannel::new(
            mallory.clone(),
            CaVerifier::load(&foreign.path().join("ca.crt")).unwrap(),
            SecureConfig::default(),
            &registry,
        )
        .announce(),
    );
    // Alice's own hello with the signature bit-flipped, and one claiming to be "bob".
    let ca = CaVerifier::load(&node.pki().join("ca.crt")).unwrap();
    let alice_hello = SecureChannel::new(alice.clone(), ca.clone(), SecureConfig::default(), &registry).announce();
    let mut a: Announce = envelope::decode(&alice_hello).unwrap();
    a.signature[10] ^= 1;
    let bad_signature = frame(&envelope::encode(&a));
    a.node = "bob".into();
    let wrong_name = frame(&envelope::encode(&a));
    // A valid hello followed by a garbage "request": passes the hello, fails the first envelope.
    let mut valid_then_garbage = frame(&alice_hello);
    valid_then_garbage.extend(frame(&[0xAB; 300]));
    let huge_name = named_hello(&alice.cert_der, "A".repeat(1 << 20));
    let long_name = named_hello(&alice.cert_der, "B".repeat(6000));
    let evil_name = named_hello(&alice.cert_der, EVIL_NAME.to_string());

    let mut attacks: Vec<Vec<u8>> = Vec::new();
    for i in 0..2000usize {
        attacks.push(match i % 10 {
            0 => frame(&vec![(i % 251) as u8; 1 + i % 2000]),
            1 => vec![0, 0x10, 0, 0, 1, 2, 3],
            2 if i < 50 => huge_name.clone(),
            2 => long_name.clone(),
            3 => evil_name.clone(),
            4 | 5 => foreign_hello.clone(),
            6 => bad_signature.clone(),
            7 => wrong_name.clone(),
            8 if i % 100 == 8 => valid_then_garbage.clone(),
            _ => frame(b"\x01garbage that is no announcement"),
        });
    }
    // The forged name goes first, so the first alert carries it.
    attacks.swap(0, 3);
    let started = Instant::now();
    send_and_wait_for_close(node.ctl, &attacks[0]);
    let rest: Vec<Vec<u8>> = attacks.split_off(1);
    let ctl = node.ctl;
    std::thread::scope(|s| {
        for chunk in rest.chunks(rest.len().div_ceil(3)) {
            s.spawn(move || chunk.iter().for_each(|b| send_and_wait_for_close(ctl, b)));
        }
    });
    eprintln!("2000 forged handshakes sent in {:?}", started.elapsed());

    assert!(node.alive(), "the node died: {}", node.log());
    let (ok, out, took) = node.operator_status();
    assert!(ok, "the operator is served after the attack: {out}");
    eprintln!("operator status after the attack: {took:?}");
    let failures = node.metric("gatewarden_ctl_handshake_failures_total", "");
    assert!(failures >= 1990.0, "every forged handshake is counted: {failures}");
    let alerts = node.abuse_alerts();
    assert!(!alerts.is_empty(), "the attack is reported");
    assert!(alerts.len() <= 5, "{} alerts for one attacker: {alerts:#?}", alerts.len());
    assert!(node.metric("gatewarden_ctl_failure_alerts_total", "") <= 5.0);
    // Peer text reaches the alert escaped and the log never gets a forged line.
    let text = serde_json::to_string(&alerts).unwrap();
    assert!(text.contains("127.0.0.1"), "{text}");
    assert!(text.contains("mallory\\\\n2026-12-04T00:00:00Z INFO forged line\\\\x1b[31m"), "{text}");
    let log = node.log();
    assert!(!log.contains('\x1b'), "raw escape in the log: {log}");
    assert!(!log.lines().any(|l| l.starts_with("2026-12-04T00:00:00Z")), "a forged log line: {log}");
    assert!(log.contains("forged line"), "the alert is logged (escaped): {log}");
    assert!(log.len() < 200_000, "{} bytes of log for 2000 forged handshakes", log.len());
}

/// 50 idle pre-auth connections from 50 addresses (some from the
/// operator's own), 10 tricklers and 30 more on top of the cap: the operator
/// is answered at once while they are held, and the tricklers lose their
/// slot at the handshake deadline however often they send a byte.
#[test]
fn idle_and_trickling_preauth_connections_do_not_lock_out_the_operator() {
    let mut node = Node::start("");
    let ctl = node.ctl;
    let mut held = Vec::new();
    // 10 from the operator's own address (127.0.0.1), 40 from 127.0.0.2..=41.
    for i in 0..50u8 {
        let from = if i < 10 { Ipv4Addr::LOCALHOST } else { Ipv4Addr::new(127, 0, 0, i - 8) };
        held.push(connect_from(ctl, Some(from)).expect("connect"));
    }
    // Tricklers: one byte of a hello every second, well inside any per-read timeout.
    let (tx, rx) = std::sync::mpsc::channel();
    for i in 0..10u8 {
        let tx = tx.clone();
        let mut s = connect_from(ctl, Some(Ipv4Addr::new(127, 0, 0, 42 + i))).expect("connect");
        std::thread::spawn(move || {
            let t = Instant::now();
            let _ = s.set_read_timeout(Some(Duration::from_millis(1000)));
            let mut buf = [0u8; 64];
            let hello = frame(&[0x01; 2000]);
            for b in hello.iter().cycle() {
                if s.write_all(&[*b]).is_err() || matches!(s.read(&mut buf), Ok(0)) {
                    break;
                }
                if t.elapsed() > Duration::from_secs(40) {
                    break;
                }
            }
            let _ = tx.send(t.elapsed());
        });
    }
    drop(tx);
    // 30 more from 127.0.0.52..=81: over ctl.max_preauth (64), the oldest make room.
    for i in 0..30u8 {
        held.push(connect_from(ctl, Some(Ipv4Addr::new(127, 0, 0, 52 + i))).expect("connect"));
    }
    let (ok, out, took) = node.operator_status();
    assert!(ok, "the operator is locked out by held connections: {out}");
    assert!(took < Duration::from_secs(4), "the operator waited {took:?}");
    eprintln!("operator status with 90 pre-auth connections held: {took:?}");
    for _ in 0..3 {
        let (ok, out, took) = node.operator_status();
        assert!(ok && took < Duration::from_secs(4), "{took:?}: {out}");
    }
    // Every trickler is cut at the whole-handshake deadline (5 s by default).
    let cut: Vec<Duration> = rx.iter().collect();
    assert_eq!(cut.len(), 10);
    assert!(cut.iter().all(|d| *d < Duration::from_secs(12)), "tricklers kept their slots: {cut:?}");
    wait_for("the timeouts in /metrics", Duration::from_secs(15), || {
        node.metric("gatewarden_ctl_handshake_failures_total", "reason=\"timeout\"") >= 10.0
    });
    assert!(node.metric("gatewarden_ctl_preauth_dropped_total", "reason=\"per_address\"") >= 6.0);
    assert!(node.metric("gatewarden_ctl_preauth_dropped_total", "reason=\"capacity\"") >= 1.0);
    // The held connections are all closed by the deadline too.
    for mut s in held {
        let _ = s.set_read_timeout(Some(Duration::from_secs(15)));
        assert!(matches!(s.read(&mut [0u8; 16]), Ok(0) | Err(_)));
    }
    assert!(node.alive(), "{}", node.log());
}

/// The aggregation in the real binary: after the first alert, the next one
/// carries the count of everything since.
#[test]
fn failed_handshakes_are_reported_with_a_count_once_per_interval() {
    let mut node = Node::start("alert_interval_s = 2\n");
    for _ in 0..30 {
        send_and_wait_for_close(node.ctl, &frame(b"garbage"));
    }
    // The first alert at once; every later one carries a count, and the counts add up.
    // One reason per alert: the API's alert also carries its EVE line, whose
    // alert.metadata repeats the reason, so the whole JSON text would count twice.
    let counted = |alerts: &[serde_json::Value]| -> u64 {
        alerts
            .iter()
            .filter_map(|a| a["gatewarden"]["reason"].as_str())
            .filter_map(|r| r.split_once(" failed handshakes from 127.0.0.1 since "))
            .filter_map(|(before, _)| before.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    wait_for("the counted alerts", Duration::from_secs(20), || counted(&node.abuse_alerts()) == 29);
    let alerts = node.abuse_alerts();
    assert!((2..=15).contains(&alerts.len()), "{alerts:#?}");
    assert!(node.alive());
}
