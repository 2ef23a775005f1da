//! A real Mosquitto broker with TLS for the bus tests: a fresh PKI, the
//! config written by `gatewarden pki mosquitto-conf`, a free loopback port.
//! Missing `mosquitto` fails the test under `CI` and prints SKIPPED otherwise.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{bin, free_port, Guard};

/// Finds the mosquitto binary, or says why the test cannot run.
pub fn mosquitto_or_skip() -> Option<PathBuf> {
    for p in ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"] {
        if Path::new(p).exists() {
            return Some(PathBuf::from(p));
        }
    }
    let msg = "mosquitto is not installed (apt-get install mosquitto; tools/test.sh does this as root)";
    if std::env::var_os("CI").is_some() {
        panic!("{msg}. CI must run the bus tests against a real broker");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

/// A PKI directory plus a running broker.
pub struct Broker {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub conf: PathBuf,
    pub exe: PathBuf,
    pub log: PathBuf,
    pub proc: Guard,
}

/// Runs the gatewarden CLI and asserts success.
pub fn gw(args: &[&str]) -> String {
    let out = Command::new(bin()).args(args).output().expect("run gatewarden");
    assert!(out.status.success(), "gatewarden {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Broker {
    /// `pki init`, `pki issue` for each (id, role), `pki mosquitto-conf`, then starts mosquitto.
    pub fn start(exe: PathBuf, nodes: &[(&str, &str)]) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap().to_string();
        gw(&["pki", "init", "--dir", &d]);
        for (id, role) in nodes {
            gw(&["pki", "issue", id, "--role", role, "--dir", &d]);
        }
        let port = free_port();
        gw(&[
            "pki",
            "mosquitto-conf",
            "--dir",
            &d,
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--user",
            "root",
        ]);
        let conf = dir.path().join("mosquitto/mosquitto.conf");
        // Debug logging, so tests can see the ACL denials Mosquitto logs at that level.
        let mut text = std::fs::read_to_string(&conf).unwrap();
        text.push_str("log_type all\n");
        std::fs::write(&conf, text).unwrap();
        let log = dir.path().join("mosquitto.log");
        let proc = Self::spawn(&exe, &conf, &log);
        let b = Broker { dir, port, conf, exe, log, proc };
        b.wait_listening();
        b
    }

    fn spawn(exe: &Path, conf: &Path, log: &Path) -> Guard {
        let f = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        Guard(Some(
            Command::new(exe)
                .args(["-c", conf.to_str().unwrap()])
                .stdin(Stdio::null())
                .stdout(f.try_clone().unwrap())
                .stderr(f)
                .spawn()
                .expect("start mosquitto"),
        ))
    }

    pub fn wait_listening(&self) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("mosquitto did not listen: {}", std::fs::read_to_string(&self.log).unwrap_or_default());
    }

    /// SIGKILL, like a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.proc.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the broker again with the same config.
    pub fn restart(&mut self) {
        self.proc = Self::spawn(&self.exe, &self.conf, &self.log);
        self.wait_listening();
    }

    pub fn pki(&self) -> &Path {
        self.dir.path()
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A config file for one node.
    pub fn node_config(&self, id: &str, http_port: u16, extra: &str) -> PathBuf {
        let p = self.pki();
        let text = format!(
            "node_id = \"{id}\"\n[http]\nlisten = \"127.0.0.1:{http_port}\"\npublic_status = true\n[mqtt]\nbroker = \"{}\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\nspool_dir = \"{}\"\nresend_after_ms = 500\n{extra}",
            self.addr(),
            p.join("ca.crt").display(),
            p.join(format!("nodes/{id}.crt")).display(),
            p.join(format!("nodes/{id}.key")).display(),
            p.join(format!("spool-{id}")).display(),
        );
        let path = p.join(format!("{id}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// Polls a raw MQTT connection until `done` accepts an incoming packet or
/// `timeout`; returns whether it got a CONNACK and every publish seen.
/// Waiting for the awaited event, not a fixed time, keeps a loaded machine
/// from failing the test.
pub fn pump_until(
    conn: &mut rumqttc::Connection,
    timeout: Duration,
    mut done: impl FnMut(&rumqttc::Packet) -> bool,
) -> (bool, Vec<(String, Vec<u8>)>) {
    let start = Instant::now();
    let mut connected = false;
    let mut seen = Vec::new();
    while start.elapsed() < timeout {
        match conn.recv_timeout(Duration::from_millis(100)) {
            Ok(Ok(rumqttc::Event::Incoming(packet))) => {
                match &packet {
                    rumqttc::Packet::ConnAck(_) => connected = true,
                    rumqttc::Packet::Publish(p) => seen.push((p.topic.clone(), p.payload.to_vec())),
                    _ => {}
                }
                if done(&packet) {
                    break;
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(_)) => {
                if !connected {
                    return (false, seen);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(_) => {}
        }
    }
    (connected, seen)
}
