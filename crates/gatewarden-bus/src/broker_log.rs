//! Refusals only the broker sees, made visible: Mosquitto decides who may
//! connect (TLS with a client certificate) and who may publish what (the
//! ACL), and a refused client never reaches gatewarden. On the node that
//! hosts the broker (the monitor), this watcher follows Mosquitto's log file
//! (`[mqtt] broker_log`), counts each refusal in
//! `gatewarden_broker_refusals_total{reason}` and raises a `ChannelAbuse`
//! alert (one per client, reason and topic per 10 s).
//!
//! | reason | Mosquitto log line |
//! |---|---|
//! | `acl_publish` | `Denied PUBLISH from <client> (…, '<topic>', …)` (e.g. a router certificate publishing a verdict) |
//! | `no_certificate` | `OpenSSL Error…: peer did not return a certificate` |
//! | `bad_certificate` | `OpenSSL Error…: certificate verify failed` (another CA, expired) |
//! | `not_authorised` | `Client <id> disconnected, not authorised.` |
//!
//! Mosquitto 2.0 logs ACL denials at `debug` level, so the config written by
//! `gatewarden pki mosquitto-conf --log FILE` turns debug logging on for that
//! file. Debug logs every packet; to keep the disk from filling, the watcher
//! truncates the file once it has read past [`MAX_LOG_BYTES`] (Mosquitto
//! appends, so it continues at the new end). Only lines written between the
//! last read and the truncation (≤ 250 ms) can be missed.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::transport::Publisher;
use gatewarden_core::metrics::{Counter, Registry};
use gatewarden_core::shutdown::Shutdown;
use gatewarden_proto::messages::Message;

/// The log file is truncated after it has been read past this size.
pub const MAX_LOG_BYTES: u64 = 8 << 20;
/// Most bytes read per pass.
const MAX_READ: usize = 4 << 20;
/// Longest log line kept; longer ones are cut.
const MAX_LINE: usize = 4096;

/// Every reason, for pre-registered counters.
pub const REASONS: [&str; 4] = ["acl_publish", "no_certificate", "bad_certificate", "not_authorised"];

/// One refusal found in a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// One of [`REASONS`].
    pub reason: &'static str,
    /// The MQTT client id if the line names one: the certificate subject
    /// (`OU=<role>,CN=<id>`) under the config `pki mosquitto-conf` writes
    /// (`use_username_as_clientid`), not a name the client chose.
    pub client: Option<String>,
    /// The topic, for ACL denials.
    pub topic: Option<String>,
}

/// Classifies one Mosquitto log line; `None` for everything that is not a refusal.
pub fn parse_line(line: &str) -> Option<Refusal> {
    if let Some(rest) = line.split_once("Denied PUBLISH from ").map(|(_, r)| r) {
        let client = rest.split_whitespace().next().map(str::to_string);
        let topic = rest.split_once('\'').and_then(|(_, t)| t.split_once('\'')).map(|(t, _)| t.to_string());
        return Some(Refusal { reason: "acl_publish", client, topic });
    }
    if line.contains("peer did not return a certificate") {
        return Some(Refusal { reason: "no_certificate", client: None, topic: None });
    }
    if line.contains("certificate verify failed") {
        return Some(Refusal { reason: "bad_certificate", client: None, topic: None });
    }
    if let Some(rest) = line.split_once("Client ").map(|(_, r)| r) {
        if let Some((client, _)) = rest.split_once(" disconnected, not authorised") {
            return Some(Refusal { reason: "not_authorised", client: Some(client.to_string()), topic: None });
        }
    }
    None
}

/// Follows a Mosquitto log file on its own thread.
pub struct BrokerLogWatch {
    thread: std::thread::JoinHandle<()>,
}

impl std::fmt::Debug for BrokerLogWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerLogWatch").finish_non_exhaustive()
    }
}

struct Follower {
    path: PathBuf,
    node: String,
    offset: u64,
    partial: Vec<u8>,
    counters: HashMap<&'static str, Counter>,
    alerts: Arc<dyn Publisher>,
    last_alert: HashMap<(&'static str, String), Instant>,
    warned: bool,
}

impl BrokerLogWatch {
    /// Starts following `path` from its current end (older lines were
    /// reported by the previous run); alerts go to `alerts`, filed under `node`.
    pub fn start(
        path: &Path,
        node: &str,
        alerts: Arc<dyn Publisher>,
        registry: &Arc<Registry>,
        shutdown: Shutdown,
    ) -> anyhow::Result<BrokerLogWatch> {
        use anyhow::Context;
        let counters = REASONS
            .iter()
            .map(|r| {
                (
                    *r,
                    registry.counter(
                        "gatewarden_broker_refusals_total",
                        "Connections and publishes the MQTT broker refused (from its log), by reason.",
                        &[("reason", r)],
                    ),
                )
            })
            .collect();
        let offset = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let mut f = Follower {
            path: path.to_path_buf(),
            node: node.to_string(),
            offset,
            partial: Vec::new(),
            counters,
            alerts,
            last_alert: HashMap::new(),
            warned: false,
        };
        let thread = std::thread::Builder::new()
            .name("broker-log".into())
            .spawn(move || {
                while !shutdown.is_triggered() {
                    f.pass();
                    std::thread::sleep(Duration::from_millis(250));
                }
                f.pass();
            })
            .context("starting the broker log watcher")?;
        Ok(BrokerLogWatch { thread })
    }

    /// Waits for the thread (after shutdown).
    pub fn join(self) {
        let _ = self.thread.join();
    }
}

impl Follower {
    fn pass(&mut self) {
        let mut file = match std::fs::OpenOptions::new().read(true).write(true).open(&self.path) {
            Ok(f) => f,
            Err(e) => {
                if !self.warned {
                    self.warned = true;
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot read the broker log ([mqtt] broker_log); broker refusals are not counted until it exists");
                }
                return;
            }
        };
        self.warned = false;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if len < self.offset {
            // Rotated or truncated by someone else: start over.
            self.offset = 0;
            self.partial.clear();
        }
        if len == self.offset {
            return;
        }
        let mut buf = Vec::new();
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let n = match (&mut file).take(MAX_READ as u64).read_to_end(&mut buf) {
            Ok(n) => n,
            Err(_) => return,
        };
        self.offset += n as u64;
        self.partial.extend_from_slice(&buf);
        let mut start = 0;
        while let Some(i) = self.partial[start..].iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&self.partial[start..start + i]).into_owned();
            start += i + 1;
            if let Some(r) = parse_line(&line) {
                self.report(r);
            }
        }
        self.partial.drain(..start);
        if self.partial.len() > MAX_LINE {
            self.partial.clear();
        }
        if self.offset >= MAX_LOG_BYTES && self.offset == len {
            if let Err(e) = file.set_len(0) {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot truncate the broker log; rotate it with logrotate");
            } else {
                self.offset = 0;
                self.partial.clear();
            }
        }
    }

    fn report(&mut self, r: Refusal) {
        if let Some(c) = self.counters.get(r.reason) {
            c.inc();
        }
        let who = r.client.clone().unwrap_or_else(|| "an unidentified client".into());
        let detail = match (&r.topic, r.reason) {
            (Some(t), _) => format!("broker refused: {who} may not publish {t} (ACL)"),
            (None, "no_certificate") => "broker refused a TLS client without a certificate".to_string(),
            (None, "bad_certificate") => {
                "broker refused a client certificate (not from the fleet CA, or expired)".to_string()
            }
            (None, _) => format!("broker refused {who}: not authorised"),
        };
        tracing::warn!(reason = r.reason, client = %who, "{detail}");
        let key = (r.reason, detail.clone());
        if self.last_alert.get(&key).is_some_and(|t| t.elapsed() < Duration::from_secs(10)) {
            return;
        }
        if self.last_alert.len() >= 4096 {
            self.last_alert.clear();
        }
        self.last_alert.insert(key, Instant::now());
        let now = gatewarden_core::clock::unix_now_ns();
        self.alerts.publish(Message::Alert(gatewarden_proto::messages::Alert::channel_abuse(&self.node, now, detail)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mosquitto_refusal_lines_are_recognised() {
        let r = parse_line("1763950000: Denied PUBLISH from rogue-router (d0, q1, r0, m1, 'gatewarden/v1/det-1/verdict', ... (6 bytes))").unwrap();
        assert_eq!(
            r,
            Refusal {
                reason: "acl_publish",
                client: Some("rogue-router".into()),
                topic: Some("gatewarden/v1/det-1/verdict".into())
            }
        );
        assert_eq!(
            parse_line("1763950000: OpenSSL Error[0]: error:0A0000C7:SSL routines::peer did not return a certificate")
                .unwrap()
                .reason,
            "no_certificate"
        );
        assert_eq!(
            parse_line("1: OpenSSL Error[0]: error:0A000086:SSL routines::certificate verify failed").unwrap().reason,
            "bad_certificate"
        );
        assert_eq!(
            parse_line("1: Client mallory disconnected, not authorised.").unwrap().client.as_deref(),
            Some("mallory")
        );
        assert_eq!(
            parse_line(
                "1: Received PUBLISH from det-1 (d0, q1, r0, m3, 'gatewarden/v1/det-1/verdict', ... (310 bytes))"
            ),
            None
        );
        assert_eq!(parse_line(""), None);
    }

    #[test]
    fn the_follower_counts_new_lines_across_partial_writes_and_truncation() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("m.log");
        std::fs::write(&p, "old: Denied PUBLISH from x (d0, q0, r0, m0, 't', ... (1 bytes))\n").unwrap();
        let reg = Registry::new();
        let bus = crate::LocalBus::new(64, &reg);
        let sd = Shutdown::new();
        let w = BrokerLogWatch::start(&p, "mon-1", Arc::new(bus.clone()), &reg, sd.clone()).unwrap();
        let append = |s: &str| {
            use std::io::Write;
            std::fs::OpenOptions::new().append(true).open(&p).unwrap().write_all(s.as_bytes()).unwrap();
        };
        append("2: Denied PUBLISH from rogue (d0, q1, r0, m1, 'gatewarden/v1/r/ver");
        std::thread::sleep(Duration::from_millis(400));
        append("dict', ... (6 bytes))\n3: OpenSSL Error[0]: x::peer did not return a certificate\n");
        let start = Instant::now();
        while reg.snapshot()["gatewarden_broker_refusals_total{reason=no_certificate}"] < 1.0 {
            assert!(start.elapsed() < Duration::from_secs(5), "{:?}", reg.snapshot());
            std::thread::sleep(Duration::from_millis(50));
        }
        std::fs::write(&p, "").unwrap();
        append("4: OpenSSL Error[0]: x::peer did not return a certificate\n");
        while reg.snapshot()["gatewarden_broker_refusals_total{reason=no_certificate}"] < 2.0 {
            assert!(start.elapsed() < Duration::from_secs(5), "{:?}", reg.snapshot());
            std::thread::sleep(Duration::from_millis(50));
        }
        sd.trigger();
        w.join();
        let s = reg.snapshot();
        assert_eq!(s["gatewarden_broker_refusals_total{reason=acl_publish}"], 1.0, "the old line is not counted again");
        let a = bus.alerts.receiver().try_recv().unwrap();
        assert!(a.reason.contains("rogue") && a.reason.contains("gatewarden/v1/r/verdict"), "{}", a.reason);
    }
}
