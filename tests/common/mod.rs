//! Helpers shared by the integration tests: the built binary, free ports,
//! a tiny HTTP client, and a pcap writer for hand-made captures.
#![allow(dead_code)]

pub mod mosquitto;
pub mod netns;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The gatewarden binary cargo built for this test run.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gatewarden"))
}

/// The gateway binary the traffic lab and the fleet test run as nodes:
/// `GATEWARDEN_LAB_BIN`, which `tools/test.sh` points at the release build,
/// so they judge the appliance at the speed it ships at. A debug build costs ~12× more per
/// packet; on a loaded 2-core machine its capture fell behind the soak's
/// 10 MB/s downloads and raised a (true) overload alert about a build nobody
/// ships. Outside CI the test's own debug binary stands in; in CI a missing
/// release binary is an error, never a silent fallback.
#[allow(dead_code)] // each test binary compiles common/; only the lab and the fleet use this
pub fn shipped_bin() -> PathBuf {
    match std::env::var_os("GATEWARDEN_LAB_BIN").filter(|v| !v.is_empty()) {
        Some(p) => {
            let p = PathBuf::from(p);
            assert!(p.is_file(), "GATEWARDEN_LAB_BIN={} does not exist: cargo build --release first", p.display());
            p
        }
        None => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI runs the lab and the fleet on the release binary: set GATEWARDEN_LAB_BIN=target/release/gatewarden \
                 after cargo build --release (tools/test.sh does both)"
            );
            eprintln!("lab: GATEWARDEN_LAB_BIN unset, running the debug binary (slower than shipped)");
            bin()
        }
    }
}

/// Suricata's own EVE schema (crates/gatewarden-monitor/schema, with the
/// commit it came from), compiled: every alert line the store writes must pass it.
pub fn eve_validator() -> jsonschema::Validator {
    let path = root().join("crates/gatewarden-monitor/schema/suricata-eve-schema.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let schema: serde_json::Value = serde_json::from_str(&text).expect("the schema is JSON");
    jsonschema::validator_for(&schema).expect("the schema compiles")
}

/// Every way `line` fails the EVE schema, one per line ("" when it validates).
pub fn eve_errors(v: &jsonschema::Validator, line: &serde_json::Value) -> String {
    v.iter_errors(line).map(|e| format!("  {} at {}\n", e, e.instance_path())).collect()
}

/// One of gatewarden's fields of a stored EVE line (`alert.metadata`, Suricata's string arrays).
pub fn eve_meta<'a>(line: &'a serde_json::Value, key: &str) -> &'a str {
    line["alert"]["metadata"][key][0].as_str().unwrap_or_default()
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A loopback port that is free now and that no other test of this process
/// will be given. It lies below the kernel's ephemeral range, so neither a
/// parallel test's `bind(0)` nor an outgoing connection's local port can take
/// it in the seconds before the daemon under test binds it (a plain `bind(0)`
/// port could be, while chromedriver or a broker starts first).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    const LOW: u32 = 10_000;
    if ephemeral_low < LOW + 1_000 {
        // No room below the ephemeral range: fall back to the kernel's choice.
        return TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    }
    let span = ephemeral_low - LOW;
    // Each test binary starts at its own offset, so one run's lingering
    // sockets do not meet the next binary's first ports.
    let offset = std::process::id().wrapping_mul(7919);
    for _ in 0..span {
        let port = (LOW + offset.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {LOW} and {ephemeral_low}");
}

/// A minimal HTTP/1.0 request; returns (status, headers, body).
pub fn http(method: &str, addr: &str, path: &str) -> std::io::Result<(u16, String, String)> {
    request(method, addr, path, None, None)
}

/// An HTTP/1.0 request with an optional bearer token and JSON body; returns (status, headers, body).
pub fn request(
    method: &str,
    addr: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> std::io::Result<(u16, String, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let body = body.unwrap_or("");
    let ctype = if body.is_empty() { "" } else { "Content-Type: application/json\r\n" };
    write!(s, "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}{ctype}Content-Length: {}\r\n\r\n{body}", body.len())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, head.to_string(), body.to_string()))
}

/// Polls `GET path` until it answers 200 or `timeout` passes.
pub fn wait_http_ok(addr: &str, path: &str, timeout: Duration) -> bool {
    wait_until_every(timeout, Duration::from_millis(50), || matches!(http("GET", addr, path), Ok((200, _, _))))
}

/// Polls `f` every 100 ms until it holds (true) or `timeout` passes (false).
pub fn wait_until(timeout: Duration, f: impl FnMut() -> bool) -> bool {
    wait_until_every(timeout, Duration::from_millis(100), f)
}

/// [`wait_until`], panicking with `what` on timeout.
pub fn wait_for(what: &str, timeout: Duration, f: impl FnMut() -> bool) {
    assert!(wait_until(timeout, f), "timed out after {timeout:?} waiting for {what}");
}

fn wait_until_every(timeout: Duration, every: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(every);
    }
    false
}

/// A child process that is killed when dropped, so failed tests leave nothing behind.
pub struct Guard(pub Option<Child>);

impl Guard {
    pub fn spawn(cmd: &mut Command) -> Guard {
        Guard(Some(cmd.stdin(Stdio::null()).spawn().expect("spawn gatewarden")))
    }
    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().unwrap()
    }
    pub fn signal(&self, sig: &str) {
        let pid = self.0.as_ref().unwrap().id().to_string();
        let ok = Command::new("kill").args([&format!("-{sig}"), &pid]).status().unwrap().success();
        assert!(ok, "kill -{sig} {pid} failed");
    }
    /// Waits up to `timeout` for exit; returns the exit code (None if still running).
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(status) = self.child().try_wait().unwrap() {
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Builds a little-endian microsecond pcap (Ethernet) from (time, frame) pairs.
pub fn pcap(records: &[(f64, Vec<u8>)]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend(0xa1b2c3d4u32.to_le_bytes());
    v.extend(2u16.to_le_bytes());
    v.extend(4u16.to_le_bytes());
    v.extend([0u8; 8]);
    v.extend(65535u32.to_le_bytes());
    v.extend(1u32.to_le_bytes());
    for (t, frame) in records {
        let sec = t.floor() as u32;
        let usec = ((t - t.floor()) * 1e6).round() as u32;
        v.extend(sec.to_le_bytes());
        v.extend(usec.min(999_999).to_le_bytes());
        v.extend((frame.len() as u32).to_le_bytes());
        v.extend((frame.len() as u32).to_le_bytes());
        v.extend(frame);
    }
    v
}

/// An Ethernet + IPv4 + TCP frame with the given flags (no payload).
pub fn tcp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0];
    ip.extend(src);
    ip.extend(dst);
    f.extend(ip);
    f.extend(sport.to_be_bytes());
    f.extend(dport.to_be_bytes());
    f.extend([0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    f
}
