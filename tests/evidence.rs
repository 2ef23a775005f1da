//! Per-alert evidence pcaps (issue #18), against the real binary: a replayed
//! attack capture's alerts each have a pcap that tcpdump reads and whose
//! packets are the attacker's; the route needs a token like the other alert
//! routes; `gatewarden alerts pcap` fetches it from a running node; and in a
//! fleet (router, detector and monitor as three processes through a real
//! Mosquitto) the router's packets reach the monitor's `evidence/` directory.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::mosquitto::{mosquitto_or_skip, Broker};
use common::{bin, free_port, request, root, wait_for, wait_http_ok, Guard};

/// The lab recording: nmap, hping3 and hydra from 192.0.2.66 among benign IoT traffic.
const ATTACKER: &str = "192.0.2.66";

fn tcpdump() -> PathBuf {
    for p in ["/usr/bin/tcpdump", "/usr/sbin/tcpdump"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("tcpdump is not installed (apt-get install tcpdump; tools/test.sh does this as root)");
}

/// `tcpdump -nr FILE`: its lines (one per packet); panics unless it reads the whole file.
fn tcpdump_lines(file: &Path) -> Vec<String> {
    let out = Command::new(tcpdump()).args(["-nn", "-r"]).arg(file).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tcpdump -r {} failed: {err}", file.display());
    assert!(!err.contains("truncated") && !err.contains("bogus"), "{err}");
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
}

/// Whether a tcpdump line's packet is from or to `ip` (`IP a.b.c.d.port > e.f.g.h.port:`).
fn involves(line: &str, ip: &str) -> bool {
    let mut w = line.split_whitespace();
    let (Some(_), Some(_), Some(src), Some(_), Some(dst)) = (w.next(), w.next(), w.next(), w.next(), w.next()) else {
        return false;
    };
    let host = |a: &str| a.trim_end_matches(':').split('.').take(4).collect::<Vec<_>>().join(".");
    host(src) == ip || host(dst) == ip
}

/// GET with an optional token, the body as bytes.
fn get_bytes(addr: &str, path: &str, token: Option<&str>) -> (u16, String, Vec<u8>) {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n").unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head");
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, head, buf[end + 4..].to_vec())
}

/// The operator token `replay --serve` prints on stderr (`…/#token=T`).
fn token_from(stderr: &mut impl Read) -> String {
    let mut text = String::new();
    let mut byte = [0u8; 1];
    while let Ok(1) = stderr.read(&mut byte) {
        text.push(byte[0] as char);
        if let Some(i) = text.find("#token=") {
            if text[i..].ends_with('\n') {
                return text[i + 7..].trim().to_string();
            }
        }
        assert!(text.len() < 1 << 20, "no token line in {text}");
    }
    panic!("replay --serve printed no token: {text}");
}

fn alerts(addr: &str, token: &str) -> Vec<serde_json::Value> {
    let (code, _, body) = request("GET", addr, "/api/alerts", Some(token), None).unwrap();
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["alerts"].as_array().cloned().unwrap_or_default()
}

#[test]
fn a_replayed_attack_s_alerts_each_have_a_pcap_of_the_attacker_s_packets() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gatewarden.toml");
    // A data directory: the pcaps go to disk beside the alert store.
    std::fs::write(&cfg, format!("[monitor]\ndata_dir = \"{}\"\n", dir.path().join("data").display())).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let demo = root().join("samples/demo.pcap");
    // A first replay into the same store: the second one's alerts get store
    // ids 6-10 while its verdicts are 1-5 again, so evidence must find its
    // alert by (router, verdict), not by a number that happens to match.
    let out =
        Command::new(bin()).args(["replay", demo.to_str().unwrap(), "-c", cfg.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut guard = Guard::spawn(
        Command::new(bin())
            .args(["replay", demo.to_str().unwrap(), "--serve", &addr, "-c", cfg.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let mut stderr = guard.child().stderr.take().unwrap();
    let token = token_from(&mut stderr);
    // Keep the pipe drained so the server never blocks on a full stderr.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    assert!(wait_http_ok(&addr, "/healthz", Duration::from_secs(20)));
    wait_for("both replays' five attack alerts", Duration::from_secs(60), || alerts(&addr, &token).len() >= 10);
    let list = alerts(&addr, &token);
    assert_eq!(list.len(), 10);
    for a in &list {
        let id = a["gatewarden"]["id"].as_u64().unwrap();
        let kind = a["gatewarden"]["kind"].as_str().unwrap().to_string();
        assert_eq!(a["src_ip"], ATTACKER, "{a}");
        let path = format!("/api/alerts/{id}/pcap");
        // Auth like the other alert routes.
        let (code, _, body) = get_bytes(&addr, &path, None);
        assert_eq!(code, 401, "{kind}: {}", String::from_utf8_lossy(&body));
        let (code, head, pcap) = get_bytes(&addr, &path, Some(&token));
        assert_eq!(code, 200, "{kind}: {}", String::from_utf8_lossy(&pcap));
        assert!(head.contains("Content-Type: application/vnd.tcpdump.pcap"), "{head}");
        assert!(head.contains(&format!("filename=\"alert-{id}.pcap\"")), "{head}");
        assert!(pcap.len() <= 24 + 64 * 1024 + 16 * 4096, "{kind}: {} bytes past evidence.max_alert_bytes", pcap.len());
        let file = dir.path().join(format!("{id}.pcap"));
        std::fs::write(&file, &pcap).unwrap();
        let lines = tcpdump_lines(&file);
        assert!(lines.len() >= 8, "{kind}: only {} packets", lines.len());
        let strays: Vec<&String> = lines.iter().filter(|l| !involves(l, ATTACKER)).collect();
        assert!(strays.is_empty(), "{kind}: packets not of the attacker's flows: {:?}", &strays[..strays.len().min(3)]);
        // Beside the alert store, under the alert's id.
        assert_eq!(std::fs::read(dir.path().join(format!("data/evidence/{id}.pcap"))).unwrap(), pcap);
        // Each kind's own packets are there: the flood's ICMP, the brute force's SSH.
        let want = match kind.as_str() {
            "icmp_flood" => Some("ICMP echo request"),
            "brute_force" => Some(".22:"),
            "udp_flood" => Some("UDP"),
            _ => None,
        };
        if let Some(w) = want {
            assert!(lines.iter().any(|l| l.contains(w)), "{kind}: no {w:?} among {} packets", lines.len());
        }
    }
    // No pcap: a JSON error that says why, not an empty file.
    let (code, head, body) = get_bytes(&addr, "/api/alerts/424242/pcap", Some(&token));
    assert_eq!(code, 404);
    assert!(head.contains("application/json"), "{head}");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(v["error"].as_str().unwrap().contains("no evidence pcap for alert 424242"), "{v}");
    let (code, _, _) = get_bytes(&addr, "/api/alerts/nope/pcap", Some(&token));
    assert_eq!(code, 400);

    // The CLI against the running node: to a file, and to a pipe (stdout not a terminal).
    let id = list[0]["gatewarden"]["id"].as_u64().unwrap().to_string();
    let (_, _, want) = get_bytes(&addr, &format!("/api/alerts/{id}/pcap"), Some(&token));
    let out_file = dir.path().join("cli.pcap");
    let out = Command::new(bin())
        .args(["alerts", "pcap", &id, "--monitor", &addr, "--token", &token, "-o"])
        .arg(&out_file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(&out_file).unwrap(), want);
    let out = Command::new(bin())
        .args(["alerts", "pcap", &id, "--monitor", &format!("http://{addr}")])
        .env("GATEWARDEN_TOKEN", &token)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, want, "stdout is a pipe here: the pcap goes there");
    // Without a token, and for an alert without evidence: exit 1 with what to do.
    let out = Command::new(bin())
        .args(["alerts", "pcap", &id, "--monitor", &addr])
        .env_remove("GATEWARDEN_TOKEN")
        .env_remove("GATEWARDEN_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("401") && err.contains("--token"), "{err}");
    let out =
        Command::new(bin()).args(["alerts", "pcap", "424242", "--monitor", &addr, "--token", &token]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no evidence pcap"), "{:?}", out);
    guard.signal("INT");
    assert_eq!(guard.wait_timeout(Duration::from_secs(5)), Some(0));
}

/// The fleet: the router keeps the packets, the detector's verdict reaches
/// it over the broker, it sends the evidence to the monitor on another
/// process, which writes it beside its alert store and serves it; the CLI
/// on the monitor's node signs its own token from the monitor's config.
#[test]
fn in_a_fleet_the_router_s_packets_reach_the_monitor_s_evidence_directory() {
    let Some(exe) = mosquitto_or_skip() else { return };
    let broker = Broker::start(exe, &[("router-1", "router"), ("det-1", "detector"), ("mon-1", "monitor")]);
    let (pm, pd, pr) = (free_port(), free_port(), free_port());
    let data = broker.pki().join("data-mon-1");
    // Not public: the CLI must bring a token.
    let mon_cfg = broker.node_config("mon-1", pm, &format!("[monitor]\ndata_dir = \"{}\"\n", data.display()));
    let text = std::fs::read_to_string(&mon_cfg).unwrap().replace("public_status = true", "public_status = false");
    std::fs::write(&mon_cfg, text).unwrap();
    let run = |cfg: &Path, role: &str, extra: &[&str]| {
        let mut c = Command::new(bin());
        c.args(["run", "--role", role, "--config", cfg.to_str().unwrap()]).args(extra).env("RUST_LOG", "warn");
        Guard::spawn(&mut c)
    };
    let _mon = run(&mon_cfg, "monitor", &[]);
    let _det = run(&broker.node_config("det-1", pd, ""), "detector", &[]);
    for p in [pm, pd] {
        assert!(wait_http_ok(&format!("127.0.0.1:{p}"), "/healthz", Duration::from_secs(15)));
    }
    let demo = root().join("samples/demo.pcap");
    let _router = run(&broker.node_config("router-1", pr, ""), "router", &["--replay", demo.to_str().unwrap()]);
    let evidence = data.join("evidence");
    let pcaps = || -> Vec<PathBuf> {
        std::fs::read_dir(&evidence)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "pcap"))
                    .collect()
            })
            .unwrap_or_default()
    };
    wait_for("evidence pcaps in the monitor's data directory", Duration::from_secs(90), || pcaps().len() >= 5);
    for p in pcaps() {
        let lines = tcpdump_lines(&p);
        assert!(!lines.is_empty() && lines.iter().all(|l| involves(l, ATTACKER)), "{}: {lines:?}", p.display());
    }
    // Each pcap is filed under the id the API lists its alert by.
    let out = Command::new(bin())
        .args(["token", "issue", "--role", "viewer", "-c", mon_cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let listed = alerts(&format!("127.0.0.1:{pm}"), &token);
    for p in pcaps() {
        let id: u64 = p.file_stem().unwrap().to_str().unwrap().parse().unwrap();
        let a = listed.iter().find(|a| a["gatewarden"]["id"] == id);
        assert!(
            a.is_some_and(|a| a["src_ip"] == ATTACKER),
            "{}: no alert {id} from {ATTACKER} in {listed:?}",
            p.display()
        );
    }
    // The CLI on the monitor's node: its config names the token key.
    let first = pcaps()[0].clone();
    let id = first.file_stem().unwrap().to_str().unwrap().to_string();
    let out = Command::new(bin())
        .args(["alerts", "pcap", &id, "-c", mon_cfg.to_str().unwrap(), "-o", "-"])
        .env_remove("GATEWARDEN_TOKEN")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, std::fs::read(&first).unwrap());
}

/// A raw MQTT client over TLS with the certificate `pki issue` wrote for `id`.
fn raw_client(broker: &Broker, client_id: &str, id: &str) -> (rumqttc::Client, rumqttc::Connection) {
    let p = gatewarden::pki::PkiDir(broker.pki().to_path_buf());
    let tls =
        gatewarden::bus::mqtt::tls_config(&broker.pki().join("ca.crt"), &p.node_cert(id), &p.node_key(id)).unwrap();
    let mut o = rumqttc::MqttOptions::new(client_id, "127.0.0.1", broker.port);
    o.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(std::sync::Arc::new(tls))));
    o.set_keep_alive(Duration::from_secs(5));
    o.set_max_packet_size(8 << 20, 8 << 20);
    rumqttc::Client::new(o, 256)
}

/// The rogue's own packets: Ethernet, IPv4 UDP from `ROGUE` (tcpdump names it in every line).
const ROGUE: &str = "203.0.113.99";

fn rogue_packet(len: usize) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    let ip_len = (len - 14) as u16;
    f.extend_from_slice(&[0x45, 0, (ip_len >> 8) as u8, ip_len as u8, 0, 1, 0, 0, 64, 17, 0, 0]);
    f.extend_from_slice(&[203, 0, 113, 99, 192, 0, 2, 1]);
    let udp_len = ip_len - 20;
    f.extend_from_slice(&[0x11, 0x5c, 0x27, 0x0f, (udp_len >> 8) as u8, udp_len as u8, 0, 0]);
    f.resize(len, 0xee);
    f
}

/// An evidence message of `packets` rogue packets of `len` bytes, naming `node`.
fn rogue_evidence(node: &str, alert_id: u64, packets: usize, len: usize) -> Vec<u8> {
    use gatewarden::bus::mqtt::{Frame, FrameBody};
    use gatewarden_proto::messages::{Evidence, EvidencePacket, Message};
    let now = gatewarden_core::clock::unix_now_ns();
    let e = Evidence {
        node: node.into(),
        alert_id,
        source: ROGUE.parse().unwrap(),
        link_type: 1,
        packets: (0..packets)
            .map(|i| EvidencePacket { ts_ns: now + i as u64, orig_len: len as u32, data: rogue_packet(len) })
            .collect(),
        left_out: 0,
    };
    gatewarden::secure::envelope::encode(&Frame { id: alert_id, body: FrameBody::Plain(Message::Evidence(e).encode()) })
}

fn status(port: u16) -> serde_json::Value {
    let (code, _, body) = common::http("GET", &format!("127.0.0.1:{port}"), "/api/status").unwrap();
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn counter(v: &serde_json::Value, name: &str) -> f64 {
    v["counters"][name].as_f64().unwrap_or(0.0)
}

/// A `/proc/<pid>/status` field in bytes (`VmRSS:` now, `VmHWM:` the peak).
fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 =
        text.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)).unwrap().parse().unwrap();
    kb * 1024
}

/// A stolen router certificate (router-2) against a fleet whose router-1
/// replays the lab attack: evidence naming router-1 is refused at the bus;
/// evidence under its own name for router-1's verdict ids (sent before and
/// all through router-1's run), 40 of the largest messages (896 KiB), and a flood of small
/// ones never reach router-1's alerts, never become a file, and leave the
/// monitor's memory within the bound the other bus floods are held to.
/// Every one of router-1's attack alerts still gets its own pcap.
#[test]
fn a_stolen_router_certificate_cannot_attach_evidence_to_another_router_s_alerts_nor_fill_the_monitor() {
    let Some(exe) = mosquitto_or_skip() else { return };
    let broker = Broker::start(
        exe,
        &[("router-1", "router"), ("router-2", "router"), ("det-1", "detector"), ("mon-1", "monitor")],
    );
    let (pm, pd, pr) = (free_port(), free_port(), free_port());
    let data = broker.pki().join("data-mon-1");
    let mon_cfg = broker.node_config("mon-1", pm, &format!("[monitor]\ndata_dir = \"{}\"\n", data.display()));
    let run = |cfg: &Path, role: &str, extra: &[&str]| {
        let mut c = Command::new(bin());
        c.args(["run", "--role", role, "--config", cfg.to_str().unwrap()]).args(extra).env("RUST_LOG", "warn");
        Guard::spawn(&mut c)
    };
    let mon = run(&mon_cfg, "monitor", &[]);
    let _det = run(&broker.node_config("det-1", pd, ""), "detector", &[]);
    for p in [pm, pd] {
        assert!(wait_http_ok(&format!("127.0.0.1:{p}"), "/healthz", Duration::from_secs(15)));
    }
    wait_for("monitor connected", Duration::from_secs(20), || counter(&status(pm), "gatewarden_mqtt_connected") == 1.0);
    let pid = mon.0.as_ref().unwrap().id();
    std::thread::sleep(Duration::from_secs(2));
    let idle = proc_status_bytes(pid, "VmRSS:");

    let (rogue, mut conn) = raw_client(&broker, "rogue-router", "router-2");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pump = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = conn.recv_timeout(Duration::from_millis(100));
            }
        })
    };
    let topic = gatewarden::bus::mqtt::topic("router-2", "evidence");
    let send = |payload: Vec<u8>| rogue.publish(&topic, rumqttc::QoS::AtLeastOnce, false, payload).unwrap();
    // Before router-1 runs: its verdict ids (they count from 1), under its name and under the rogue's own.
    let forged = 20u64;
    for id in 1..=forged {
        send(rogue_evidence("router-1", id, 4, 120));
        send(rogue_evidence("router-2", id, 4, 120));
    }
    // The largest a message may be (4 096 packets, 896 KiB), 40 times: more than the monitor holds for alerts not seen yet.
    for id in 0..40u64 {
        send(rogue_evidence("router-2", 1_000 + id, 4096, 224));
    }
    send(rogue_evidence("router-1", 999, 1, 120));
    wait_for("the forged names refused at the monitor", Duration::from_secs(120), || {
        counter(&status(pm), "gatewarden_bus_identity_mismatch_total{kind=evidence}") >= (forged + 1) as f64
    });
    // The monitor holds them for alerts that never come, within its bound (16 MiB).
    let held =
        |s: &serde_json::Value| (counter(s, "gatewarden_evidence_held"), counter(s, "gatewarden_evidence_held_bytes"));
    wait_for("the rogue's large pieces held", Duration::from_secs(60), || held(&status(pm)).1 > (8 << 20) as f64);
    std::thread::sleep(Duration::from_secs(1));
    let (n_big, bytes_big) = held(&status(pm));
    assert!(n_big <= 256.0 && bytes_big <= (16 << 20) as f64, "held {n_big} pieces, {bytes_big} bytes");
    // All through router-1's run: a stream of small ones for ids its verdicts will have.
    let flood = {
        let (rogue, stop, topic) = (rogue.clone(), stop.clone(), topic.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let payload = rogue_evidence("router-2", 1 + n % 64, 2, 100);
                rogue.publish(&topic, rumqttc::QoS::AtMostOnce, false, payload).unwrap();
                n += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            n
        })
    };
    let demo = root().join("samples/demo.pcap");
    let _router = run(&broker.node_config("router-1", pr, ""), "router", &["--replay", demo.to_str().unwrap()]);
    let evidence = data.join("evidence");
    let pcaps = || -> Vec<PathBuf> {
        std::fs::read_dir(&evidence).map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect()).unwrap_or_default()
    };
    let token = {
        let out = Command::new(bin())
            .args(["token", "issue", "--role", "viewer", "-c", mon_cfg.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let attacks = || -> Vec<u64> {
        let listed = alerts(&format!("127.0.0.1:{pm}"), &token);
        listed.iter().filter(|a| a["src_ip"] == ATTACKER).map(|a| a["gatewarden"]["id"].as_u64().unwrap()).collect()
    };
    wait_for("router-1's five attack alerts, each with a pcap", Duration::from_secs(120), || {
        let ids = attacks();
        ids.len() >= 5 && ids.iter().all(|id| evidence.join(format!("{id}.pcap")).exists())
    });
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let flooded = flood.join().unwrap();
    pump.join().unwrap();
    let peak = proc_status_bytes(pid, "VmHWM:");
    let ids = attacks();
    let files = pcaps();
    let stored: u64 = files.iter().map(|p| std::fs::metadata(p).unwrap().len()).sum();
    eprintln!(
        "MEASURED: rogue sent {} forged + {} own + 40 x 896 KiB + {flooded} flood evidence messages; monitor RSS idle {:.1} MB, peak {:.1} MB; held {:?} after the large ones; {} pcaps ({stored} bytes) for {} attack alerts",
        forged + 1,
        forged,
        idle as f64 / 1e6,
        peak as f64 / 1e6,
        (n_big, bytes_big),
        files.len(),
        ids.len()
    );
    // Files only for router-1's alerts, each of the attacker's packets only.
    assert_eq!(files.len(), ids.len(), "{files:?} for alerts {ids:?}");
    for p in &files {
        let id: u64 = p.file_stem().unwrap().to_str().unwrap().parse().unwrap();
        assert!(ids.contains(&id), "{}: not one of router-1's attack alerts {ids:?}", p.display());
        let lines = tcpdump_lines(p);
        assert!(!lines.is_empty() && lines.iter().all(|l| involves(l, ATTACKER)), "{}: {lines:?}", p.display());
        assert!(!lines.iter().any(|l| involves(l, ROGUE)), "{}: the rogue's packets: {lines:?}", p.display());
    }
    let end = status(pm);
    let (n, bytes) = held(&end);
    assert!(n <= 256.0 && bytes <= (16 << 20) as f64, "held {n} pieces, {bytes} bytes");
    // What was pushed out is counted, not silently lost.
    assert!(counter(&end, "gatewarden_evidence_refused_total") >= 1.0, "{}", end["counters"]);
    assert!(peak < idle + (64 << 20), "peak RSS {} MB (idle {} MB)", peak >> 20, idle >> 20);
    assert!(wait_http_ok(&format!("127.0.0.1:{pm}"), "/healthz", Duration::from_secs(1)), "still answers");
}
