//! Brute force against a web login: `http_bruteforce_sessions` finished HTTP
//! sessions from one source to one web port ([`WEB_PORTS`]) within
//! `http_bruteforce_window_s`, each sending a request and answered with a small
//! reply (a 401, a "login failed" page). A poller makes few such sessions, a
//! guesser many; page loads and downloads get large replies.

use std::collections::VecDeque;
use std::net::IpAddr;

use gatewarden_flow::ConnState;
use gatewarden_proto::messages::{AttackKind, Proto};

use super::detection::{Detection, Observed};
use super::services::{header_bytes, WEB_PORTS};
use super::windows::{shrink, HashSet, MAX_LOGINS};
use crate::config::DetectorConfig;

/// Most IP bytes from the server that still count as a small reply (a 401, a
/// "login failed" page, a status document), not a page with content or a download.
pub const HTTP_SMALL_REPLY_BYTES: u64 = 4096;

/// One source's finished HTTP sessions with a small reply over `http_bruteforce_window_s`.
#[derive(Debug, Default)]
pub(super) struct WebSessions {
    /// (end, server, port, server's IP bytes, flow id), oldest first, at most [`MAX_LOGINS`].
    web: VecDeque<(u64, IpAddr, u16, u64, u64)>,
    /// Flow ids in `web`, so a flow re-sent after it ended counts once.
    web_ids: HashSet<u64>,
}

impl WebSessions {
    /// Forgets every session, keeping the allocations (a recycled source state).
    pub(super) fn clear(&mut self) {
        let WebSessions { web, web_ids } = self;
        web.clear();
        web_ids.clear();
    }

    /// Entries it has room for.
    pub(super) fn capacity(&self) -> usize {
        self.web.capacity() + self.web_ids.capacity()
    }

    /// Sessions it holds.
    pub(super) fn len(&self) -> usize {
        self.web.len()
    }

    /// Drops the sessions older than `window_ns` at `now`, and the room that frees.
    pub(super) fn trim(&mut self, now: u64, window_ns: u64) {
        while let Some(&(t, .., id)) = self.web.front() {
            if t + window_ns >= now {
                break;
            }
            self.web.pop_front();
            self.web_ids.remove(&id);
        }
        let WebSessions { web, web_ids } = self;
        shrink(web.len(), web.capacity(), |n| web.shrink_to(n));
        shrink(web_ids.len(), web_ids.capacity(), |n| web_ids.shrink_to(n));
    }

    /// Keeps the newest `keep` sessions and only the room they need (the shared budget).
    pub(super) fn keep_newest(&mut self, keep: usize) {
        while self.web.len() > keep {
            if let Some((.., id)) = self.web.pop_front() {
                self.web_ids.remove(&id);
            }
        }
        self.web.shrink_to_fit();
        self.web_ids.shrink_to_fit();
    }
}

/// Counts a finished web session with a small reply and returns a finding when it
/// brings its source's sessions to that server port to the limit.
pub(super) fn observe(cfg: &DetectorConfig, o: &Observed, s: &mut WebSessions) -> Option<Detection> {
    let r = o.r;
    if r.proto != Proto::Tcp || !WEB_PORTS.contains(&r.dport) {
        return None;
    }
    let now = o.now;
    let hdr = header_bytes(r.dst);
    let answered = r.rev_bytes > hdr * r.rev_packets as u64;
    let sent = r.fwd_bytes > hdr * r.fwd_packets as u64;
    let ended =
        matches!(r.conn_state, ConnState::SF | ConnState::RSTO | ConnState::RSTR | ConnState::S2 | ConnState::S3);
    // Web-login guessing: each guess is a short session answered with a
    // small page (401, "login failed"); a poller makes few, a guesser many.
    let http_window_ns = cfg.http_bruteforce_window_s * 1_000_000_000;
    if !(ended && sent && answered && r.rev_bytes <= HTTP_SMALL_REPLY_BYTES && !s.web_ids.contains(&r.flow_id)) {
        return None;
    }
    s.web.push_back((r.last_ns, r.dst, r.dport, r.rev_bytes, r.flow_id));
    s.web_ids.insert(r.flow_id);
    if s.web.len() > MAX_LOGINS {
        if let Some((.., id)) = s.web.pop_front() {
            s.web_ids.remove(&id);
        }
    }
    s.trim(now, http_window_ns);
    let mut replies: Vec<u64> = s.web.iter().filter(|e| e.1 == r.dst && e.2 == r.dport).map(|e| e.3).collect();
    let n = replies.len();
    if n < cfg.http_bruteforce_sessions as usize {
        return None;
    }
    let first = s.web.iter().find(|e| e.1 == r.dst && e.2 == r.dport).map_or(now, |e| e.0);
    let span = (now.saturating_sub(first) as f64 / 1e9).max(0.001);
    replies.sort_unstable();
    let median = replies[n / 2];
    let largest = replies[n - 1];
    Some(Detection {
        target: Some(r.dst),
        port: r.dport,
        proto: Some(Proto::Tcp),
        confidence: (0.7 + 0.25 * (n as f32 / (2.0 * cfg.http_bruteforce_sessions as f32)).min(1.0)).min(0.95),
        reason: format!(
            "{} → {n} short HTTP sessions to {}:{} in {span:.1} s, each answered with a small reply \
             (median {median} B, largest {largest} B from the server): password guessing against a \
             web login (limit {} in {} s)",
            r.src, r.dst, r.dport, cfg.http_bruteforce_sessions, cfg.http_bruteforce_window_s
        ),
        evidence: vec![
            ("sessions".into(), n as f64),
            ("seconds".into(), span),
            ("median_reply_bytes".into(), median as f64),
        ],
        ..Detection::from_record(r, AttackKind::BruteForce)
    })
}

#[cfg(test)]
mod tests {
    use crate::config::DetectorConfig;
    use crate::heuristics::testing::tcp;
    use crate::heuristics::Heuristics;
    use gatewarden_proto::messages::AttackKind;

    #[test]
    fn hydra_style_http_login_guessing_is_found_with_numbers() {
        // hydra http-get against a Basic-auth page: one short session per guess,
        // each answered by a 401 of about 570 IP bytes (measured: 60 in 1.5 s).
        let mut h = Heuristics::new(DetectorConfig::default());
        let mut found = Vec::new();
        for i in 0..40u64 {
            let t = 5000 + i * 25;
            // The router may report a session first while open, then when it ended.
            found.extend(h.observe(&tcp(i, "192.0.2.66", 80, t, t + 1, (4, 380), (3, 300), "S1")));
            let reply = 560 + (i % 3) * 10;
            found.extend(h.observe(&tcp(i, "192.0.2.66", 80, t, t + 3, (7, 512), (6, reply), "SF")));
        }
        let d: Vec<_> = found.iter().filter(|d| d.kind == AttackKind::BruteForce).collect();
        assert_eq!(d.len(), 1, "{found:?}");
        assert!(
            d[0].reason.contains(
                "192.0.2.66 → 30 short HTTP sessions to 198.51.100.10:80 in 0.7 s, each answered with a small reply \
                 (median 570 B, largest 580 B from the server)"
            ),
            "{}",
            d[0].reason
        );
        assert!(d[0].reason.contains("(limit 30 in 10 s)"), "{}", d[0].reason);
        assert_eq!(d[0].port, 80);
    }

    #[test]
    fn polling_downloads_and_page_loads_are_not_http_brute_force() {
        let mut h = Heuristics::new(DetectorConfig::default());
        let mut found = Vec::new();
        // A device polling /status.json every 3 s for 10 minutes (measured: 460 B out, 524 B back).
        for i in 0..200u64 {
            let t = i * 3000;
            found.extend(h.observe(&tcp(i, "192.0.2.31", 80, t, t + 1, (7, 460), (6, 524), "SF")));
        }
        // A browser loading an admin page with 40 images of 20 kB at once: large replies.
        for i in 0..40u64 {
            let t = 1000 + i * 5;
            found.extend(h.observe(&tcp(1000 + i, "192.0.2.40", 80, t, t + 30, (12, 900), (20, 21_000), "SF")));
        }
        // Every session of a busy poller re-sent in three batches counts once: 25 sessions, not 75.
        for i in 0..25u64 {
            let t = 2000 + i * 100;
            for _ in 0..3 {
                found.extend(h.observe(&tcp(2000 + i, "192.0.2.11", 80, t, t + 2, (7, 460), (6, 524), "SF")));
            }
        }
        // A SYN flood against the web server: handshakes without requests or replies.
        for i in 0..100u64 {
            let t = 3000 + i;
            found.extend(h.observe(&tcp(3000 + i, "192.0.2.12", 80, t, t, (2, 112), (1, 60), "RSTO")));
        }
        let bf: Vec<_> = found.iter().filter(|d| d.kind == AttackKind::BruteForce).collect();
        assert!(bf.is_empty(), "{bf:?}");
    }
}
