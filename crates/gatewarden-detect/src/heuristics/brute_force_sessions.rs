//! Brute force by login sessions: `bruteforce_sessions` new connections from
//! one source to one interactive login service ([`LOGIN_PORTS`]: SSH, telnet,
//! FTP, RDP, VNC, POP3) within `bruteforce_window_s`. A person opens one
//! session; hydra holds each connection for several tries, so it opens few,
//! over a longer window than the connection-rate rule sees.

use std::collections::VecDeque;
use std::net::IpAddr;

use gatewarden_proto::messages::{AttackKind, Proto};

use super::detection::{Detection, Observed};
use super::services::{service_name, LOGIN_PORTS};
use super::windows::{shrink, MAX_LOGINS};
use crate::config::DetectorConfig;

/// New connections of one source to login services over `bruteforce_window_s`:
/// (first packet, server, port), oldest first, at most [`MAX_LOGINS`].
#[derive(Debug, Default)]
pub(super) struct Logins(VecDeque<(u64, IpAddr, u16)>);

impl Logins {
    /// Forgets every session, keeping the allocation (a recycled source state).
    pub(super) fn clear(&mut self) {
        self.0.clear();
    }

    /// Entries it has room for.
    pub(super) fn capacity(&self) -> usize {
        self.0.capacity()
    }

    /// Sessions it holds.
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    /// Drops the sessions older than `window_ns` at `now`, and the room that frees.
    pub(super) fn trim(&mut self, now: u64, window_ns: u64) {
        let logins = &mut self.0;
        while logins.front().is_some_and(|&(t, ..)| t + window_ns < now) {
            logins.pop_front();
        }
        shrink(logins.len(), logins.capacity(), |n| logins.shrink_to(n));
    }

    /// Keeps the newest `keep` sessions and only the room they need (the shared budget).
    pub(super) fn keep_newest(&mut self, keep: usize) {
        let drop = self.0.len().saturating_sub(keep);
        self.0.drain(..drop);
        self.0.shrink_to_fit();
    }
}

/// Counts a new login connection, ages out the old ones, and returns a finding when
/// this connection brings its source's sessions to the server to the limit.
pub(super) fn observe(cfg: &DetectorConfig, o: &Observed, logins: &mut Logins) -> Option<Detection> {
    let r = o.r;
    let logins = &mut logins.0;
    let login_window_ns = cfg.bruteforce_window_s * 1_000_000_000;
    let new_login = o.is_new && r.proto == Proto::Tcp && LOGIN_PORTS.contains(&r.dport);
    if new_login {
        logins.push_back((r.first_ns, r.dst, r.dport));
        if logins.len() > MAX_LOGINS {
            logins.pop_front();
        }
    }
    while logins.front().is_some_and(|&(t, ..)| t + login_window_ns < o.now) {
        logins.pop_front();
    }
    shrink(logins.len(), logins.capacity(), |n| logins.shrink_to(n));
    if !new_login {
        return None;
    }
    let same: Vec<u64> = logins.iter().filter(|(_, d, p)| *d == r.dst && *p == r.dport).map(|(t, ..)| *t).collect();
    let n = same.len();
    if n < cfg.bruteforce_sessions as usize {
        return None;
    }
    let span = (same[n - 1].saturating_sub(same[0]) as f64 / 1e9).max(0.001);
    Some(Detection {
        target: Some(r.dst),
        port: r.dport,
        proto: Some(Proto::Tcp),
        confidence: (0.7 + 0.25 * (n as f32 / (2.0 * cfg.bruteforce_sessions as f32)).min(1.0)).min(0.95),
        reason: format!(
            "{} → {n} sessions to {}:{} ({}) in {span:.1} s (a person opens 1; limit {} in {} s)",
            r.src,
            r.dst,
            r.dport,
            service_name(r.dport),
            cfg.bruteforce_sessions,
            cfg.bruteforce_window_s
        ),
        evidence: vec![("sessions".into(), n as f64), ("seconds".into(), span)],
        ..Detection::from_record(r, AttackKind::BruteForce)
    })
}

#[cfg(test)]
mod tests {
    use crate::config::DetectorConfig;
    use crate::heuristics::testing::{rec, tcp};
    use crate::heuristics::Heuristics;
    use gatewarden_proto::messages::{AttackKind, Proto};

    #[test]
    fn hydra_style_ssh_guessing_is_found_from_few_long_sessions() {
        // hydra -t 4: five connections within 0.4 s, each held ~30 s for several tries.
        let mut h = Heuristics::new(DetectorConfig::default());
        let mut found = Vec::new();
        for i in 0..5u64 {
            found.extend(h.observe(&rec(
                i,
                "192.0.2.66",
                "198.51.100.10",
                22,
                Proto::Tcp,
                3.0 + i as f64 * 0.08,
                3,
                2,
                "S1",
            )));
        }
        let d = found.iter().find(|d| d.kind == AttackKind::BruteForce).expect("brute force found");
        assert!(d.reason.contains("5 sessions to 198.51.100.10:22 (SSH) in 0.3 s"), "{}", d.reason);
        assert_eq!(d.source, Some("192.0.2.66".parse().unwrap()));
    }

    #[test]
    fn one_admin_session_and_mqtt_telemetry_are_not_brute_force() {
        let mut h = Heuristics::new(DetectorConfig::default());
        let mut found = h.observe(&rec(1, "192.0.2.40", "198.51.100.10", 22, Proto::Tcp, 0.5, 40, 38, "S1"));
        // A sensor publishing over a fresh MQTT connection every 2 s for 10 minutes.
        for i in 0..300u64 {
            found.extend(h.observe(&rec(
                100 + i,
                "192.0.2.21",
                "198.51.100.10",
                1883,
                Proto::Tcp,
                i as f64 * 2.0,
                6,
                5,
                "SF",
            )));
        }
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn hydra_style_telnet_guessing_is_found_with_numbers() {
        // hydra -t 4 telnet:// against the lab's busybox telnetd (1 s delay per refused
        // password): four connections at once, three tries each, so the fifth opens when
        // the first has used its tries, 4.0 s later.
        let mut h = Heuristics::new(DetectorConfig::default());
        let mut found = Vec::new();
        for i in 0..4u64 {
            found.extend(h.observe(&tcp(i, "192.0.2.66", 23, 3000, 3000, (4, 250), (3, 200), "S1")));
        }
        assert!(found.is_empty(), "four connections are not yet brute force: {found:?}");
        found.extend(h.observe(&tcp(9, "192.0.2.66", 23, 7020, 7020, (3, 180), (2, 120), "S1")));
        let d = found.iter().find(|d| d.kind == AttackKind::BruteForce).expect("brute force found");
        assert!(
            d.reason.contains(
                "192.0.2.66 → 5 sessions to 198.51.100.10:23 (telnet) in 4.0 s (a person opens 1; limit 5 in 60 s)"
            ),
            "{}",
            d.reason
        );
        assert_eq!((d.port, d.source), (23, Some("192.0.2.66".parse().unwrap())));
    }

    #[test]
    fn an_operator_logging_in_by_telnet_now_and_then_is_not_brute_force() {
        // Four telnet logins in 10 minutes, each a long interactive session.
        let mut h = Heuristics::new(DetectorConfig::default());
        for i in 0..4u64 {
            let t = i * 150_000;
            let mut found = h.observe(&tcp(i, "192.0.2.40", 23, t, t, (4, 250), (3, 200), "S1"));
            found.extend(h.observe(&tcp(i, "192.0.2.40", 23, t, t + 60_000, (300, 16_000), (280, 90_000), "SF")));
            assert!(found.is_empty(), "login {i}: {found:?}");
        }
    }
}
