//! Slow HTTP (slowloris): a source holding many requests to one web server
//! port ([`WEB_PORTS`]) open without a response, so the server's connection
//! slots run out. Two rules over one table of waiting requests:
//! - early, while the tool opens its connections: `slow_http_concurrent`
//!   requests unanswered at once, each waiting ≥ `slow_http_concurrent_wait_ms`
//!   for a first byte and none longer than a request head ([`unanswered_requests`];
//!   the facade's tick re-runs it when a paused tool sends no record);
//! - late, the classic count: `slow_http_connections` connections waiting
//!   ≥ `slow_http_min_age_s`, each sending less than [`SLOW_HTTP_MAX_BPS`].

use std::net::IpAddr;

use gatewarden_flow::ConnState;
use gatewarden_proto::messages::{AttackKind, Proto};

use super::detection::{Detection, Observed};
use super::services::{header_bytes, WEB_PORTS};
use super::windows::{shrink, HashMap, MAX_LOGINS};
use crate::config::DetectorConfig;

/// Slow-HTTP connections must send less than this, IP bytes per second on
/// average; an upload in progress also waits for its response, but sends.
pub const SLOW_HTTP_MAX_BPS: f64 = 1000.0;
/// A waiting connection not updated for this long is forgotten (the router's
/// default `flow.idle_timeout_s`: it has been exported and dropped there too).
const SLOW_HTTP_STALE_NS: u64 = 60_000_000_000;
/// The slow-HTTP count is redone at most this often per source (capture time),
/// so a source with thousands of open connections costs O(1) per record on average.
const SLOW_HTTP_CHECK_NS: u64 = 250_000_000;
/// The count of unanswered requests (`slow_http_concurrent`) is redone at most this often per
/// source: about once per flow batch (100 ms by default), so the finding is not held back.
const SLOW_HTTP_CONCURRENT_CHECK_NS: u64 = 50_000_000;
/// Most request payload, in bytes, a connection may have sent and still count as one waiting
/// request head for `slow_http_concurrent`: Apache and nginx refuse a longer head (with an
/// answer, 400/431), and an upload waiting for its response sends far more.
pub const SLOW_HTTP_HEAD_BYTES: u64 = 8192;

/// A connection to a web server that has sent (part of) a request and got no reply yet.
#[derive(Debug, Clone, Copy)]
struct Waiting {
    dst: IpAddr,
    port: u16,
    first_ns: u64,
    /// Capture time of the first snapshot that showed the request unanswered: the wait
    /// counts from here (the request was sent by then), not from the handshake.
    since_ns: u64,
    last_ns: u64,
    fwd_bytes: u64,
    /// Request bytes sent (IP bytes less the most a header can take), a lower bound.
    fwd_payload: u64,
}

/// One source's established connections to a web port still waiting for a response.
#[derive(Debug, Default)]
pub(super) struct WaitingRequests {
    /// By flow id, at most [`MAX_LOGINS`].
    waiting: HashMap<u64, Waiting>,
    /// When the slow-HTTP count last ran for this source.
    waiting_checked_ns: u64,
    /// When the count of unanswered requests last ran for this source.
    concurrent_checked_ns: u64,
}

impl WaitingRequests {
    /// Forgets every request, keeping the allocation (a recycled source state).
    pub(super) fn clear(&mut self) {
        let WaitingRequests { waiting, waiting_checked_ns, concurrent_checked_ns } = self;
        waiting.clear();
        *waiting_checked_ns = 0;
        *concurrent_checked_ns = 0;
    }

    /// Entries it has room for.
    pub(super) fn capacity(&self) -> usize {
        self.waiting.capacity()
    }

    /// Requests waiting (stale ones included until the next count drops them).
    pub(super) fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Drops the requests whose connection went quiet too long ago to still be open, and
    /// the room that frees (a quiet source, see `SourceState::age` in the facade).
    pub(super) fn trim(&mut self, now: u64) {
        self.waiting.retain(|_, w| w.last_ns.saturating_add(SLOW_HTTP_STALE_NS) >= now);
        let waiting = &mut self.waiting;
        shrink(waiting.len(), waiting.capacity(), |n| waiting.shrink_to(n));
    }

    /// Keeps the `keep` requests seen most recently and only the room they need (the shared
    /// budget): fewer waiting requests can only make a slow-HTTP finding less likely.
    pub(super) fn keep_newest(&mut self, keep: usize) {
        if self.waiting.len() > keep {
            let mut seen: Vec<u64> = self.waiting.values().map(|w| w.last_ns).collect();
            let cut = seen.len() - keep;
            let (_, &mut cutoff, _) = seen.select_nth_unstable(cut.saturating_sub(1));
            let mut over = self.waiting.len() - keep;
            // The oldest go; of those seen at the cut-off time, only as many as needed.
            self.waiting.retain(|_, w| {
                let gone = over > 0 && w.last_ns <= cutoff;
                over -= usize::from(gone);
                !gone
            });
        }
        self.waiting.shrink_to_fit();
    }
}

/// What one record told the slow-HTTP rules.
#[derive(Debug, Default)]
pub(super) struct SlowHttpFindings {
    /// The classic count's finding.
    pub(super) slowloris: Option<Detection>,
    /// The early finding ([`unanswered_requests`]).
    pub(super) unanswered: Option<Detection>,
    /// The source holds at least `slow_http_concurrent` waiting requests: the facade's
    /// tick keeps re-counting it.
    pub(super) many_waiting: bool,
}

/// Requests to one server port counted by [`unanswered_requests`].
#[derive(Debug, Default)]
struct Unanswered {
    n: usize,
    /// Shortest and longest wait for a first byte, ns.
    shortest: u64,
    longest: u64,
    /// Most IP bytes one of them sent.
    most_sent: u64,
    /// The lowest flow id among them (deterministic in replays).
    flow_id: u64,
}

/// Slow HTTP found while it opens its connections: `src` holds at least
/// `slow_http_concurrent` requests to one web server port unanswered at once, each
/// waiting at least `slow_http_concurrent_wait_ms` for a first byte and none longer than a
/// request head. That is more than any client keeps waiting on one server (browsers 6,
/// HTTP libraries 2–10 per host by default), and the wait is past a round trip and a
/// server's time to first byte, so requests in flight (a page's assets, a download
/// manager's segments) are answered before they count; slowloris requests never are.
/// `only`: the server port a new record is about; `None` (a tick) looks at every one.
/// Runs at most every [`SLOW_HTTP_CONCURRENT_CHECK_NS`] per source; O(waiting).
pub(super) fn unanswered_requests(
    cfg: &DetectorConfig,
    src: IpAddr,
    s: &mut WaitingRequests,
    now: u64,
    only: Option<(IpAddr, u16)>,
) -> Option<Detection> {
    let limit = cfg.slow_http_concurrent as usize;
    if limit == 0
        || s.waiting.len() < limit
        || now < s.concurrent_checked_ns.saturating_add(SLOW_HTTP_CONCURRENT_CHECK_NS)
    {
        return None;
    }
    s.concurrent_checked_ns = now;
    s.trim(now);
    let wait_ns = cfg.slow_http_concurrent_wait_ms * 1_000_000;
    let mut groups: HashMap<(IpAddr, u16), Unanswered> = HashMap::default();
    for (&id, w) in &s.waiting {
        let waited = now.saturating_sub(w.since_ns);
        if only.is_none_or(|o| o == (w.dst, w.port)) && waited >= wait_ns && w.fwd_payload <= SLOW_HTTP_HEAD_BYTES {
            let g = groups.entry((w.dst, w.port)).or_insert(Unanswered {
                shortest: u64::MAX,
                flow_id: id,
                ..Default::default()
            });
            g.n += 1;
            g.shortest = g.shortest.min(waited);
            g.longest = g.longest.max(waited);
            g.most_sent = g.most_sent.max(w.fwd_bytes);
            g.flow_id = g.flow_id.min(id);
        }
    }
    let (&(dst, port), g) = groups.iter().filter(|(_, g)| g.n >= limit).max_by_key(|(k, g)| (g.n, *k))?;
    let (n, shortest, longest, most_sent, flow_id) = (g.n, g.shortest, g.longest, g.most_sent, g.flow_id);
    let (shortest_s, longest_s) = (shortest as f64 / 1e9, longest as f64 / 1e9);
    Some(Detection {
        source: Some(src),
        target: Some(dst),
        port,
        proto: Some(Proto::Tcp),
        kind: AttackKind::SlowHttp,
        confidence: (0.7 + 0.25 * (n as f32 / (2.0 * limit as f32)).min(1.0)).min(0.95),
        reason: format!(
            "slow HTTP (slowloris): {src} holds {n} requests to {dst}:{port} unanswered at once, \
             waiting {shortest_s:.2}–{longest_s:.2} s for a first byte with at most {most_sent} IP bytes \
             sent each: more than any client keeps waiting on one server (a browser: 6), the server's \
             connection slots are being held (limit {limit} unanswered ≥ {} ms)",
            cfg.slow_http_concurrent_wait_ms
        ),
        evidence: vec![
            ("unanswered_requests".into(), n as f64),
            ("shortest_wait_s".into(), shortest_s),
            ("longest_wait_s".into(), longest_s),
            ("most_bytes_sent".into(), most_sent as f64),
        ],
        ts_ns: now,
        flow_id,
    })
}

/// Updates the source's waiting requests with a snapshot of a connection to a web
/// port and runs both rules on the server port it is about.
pub(super) fn observe(cfg: &DetectorConfig, o: &Observed, s: &mut WaitingRequests) -> SlowHttpFindings {
    let r = o.r;
    let mut out = SlowHttpFindings::default();
    if r.proto != Proto::Tcp || !WEB_PORTS.contains(&r.dport) {
        return out;
    }
    let now = o.now;
    let hdr = header_bytes(r.dst);
    let answered = r.rev_bytes > hdr * r.rev_packets as u64;
    let sent = r.fwd_bytes > hdr * r.fwd_packets as u64;
    // Established, part of a request sent, no response yet.
    if r.conn_state == ConnState::S1 && sent && !answered {
        if s.waiting.len() < MAX_LOGINS || s.waiting.contains_key(&r.flow_id) {
            let since_ns = s.waiting.get(&r.flow_id).map_or(r.last_ns, |w| w.since_ns);
            s.waiting.insert(
                r.flow_id,
                Waiting {
                    dst: r.dst,
                    port: r.dport,
                    first_ns: r.first_ns,
                    since_ns,
                    last_ns: r.last_ns,
                    fwd_bytes: r.fwd_bytes,
                    fwd_payload: r.fwd_bytes.saturating_sub(hdr * r.fwd_packets as u64),
                },
            );
        }
    } else {
        s.waiting.remove(&r.flow_id);
    }
    // Slow HTTP found early (see `unanswered_requests`).
    out.unanswered = unanswered_requests(cfg, r.src, s, now, Some((r.dst, r.dport)));
    out.many_waiting = cfg.slow_http_concurrent > 0 && s.waiting.len() >= cfg.slow_http_concurrent as usize;
    let min_age_ns = cfg.slow_http_min_age_s * 1_000_000_000;
    if s.waiting.len() < cfg.slow_http_connections as usize || now < s.waiting_checked_ns + SLOW_HTTP_CHECK_NS {
        return out;
    }
    s.waiting_checked_ns = now;
    s.trim(now);
    let (mut n, mut bytes, mut secs, mut oldest, mut youngest) = (0usize, 0u64, 0f64, 0u64, u64::MAX);
    for w in s.waiting.values() {
        let age = now.saturating_sub(w.first_ns);
        let age_s = age as f64 / 1e9;
        if w.dst == r.dst && w.port == r.dport && age >= min_age_ns && (w.fwd_bytes as f64) < SLOW_HTTP_MAX_BPS * age_s
        {
            n += 1;
            bytes += w.fwd_bytes;
            secs += age_s;
            oldest = oldest.max(age);
            youngest = youngest.min(age);
        }
    }
    if n < cfg.slow_http_connections as usize {
        return out;
    }
    let bps = bytes as f64 / secs.max(1e-9);
    let oldest_s = oldest as f64 / 1e9;
    let youngest_s = youngest as f64 / 1e9;
    out.slowloris = Some(Detection {
        target: Some(r.dst),
        port: r.dport,
        proto: Some(Proto::Tcp),
        confidence: (0.7 + 0.25 * (n as f32 / (2.0 * cfg.slow_http_connections as f32)).min(1.0)).min(0.95),
        reason: format!(
            "slow HTTP (slowloris): {} holds {n} connections open to {}:{} with no response, \
             waiting {youngest_s:.1}–{oldest_s:.1} s, each sending {bps:.0} B/s on average: ties up the server's \
             connection slots (limit {n_lim} waiting ≥ {} s)",
            r.src,
            r.dst,
            r.dport,
            cfg.slow_http_min_age_s,
            n_lim = cfg.slow_http_connections
        ),
        evidence: vec![
            ("waiting_connections".into(), n as f64),
            ("youngest_s".into(), youngest_s),
            ("oldest_s".into(), oldest_s),
            ("bytes_per_s".into(), bps),
        ],
        ..Detection::from_record(r, AttackKind::SlowHttp)
    });
    out
}

#[cfg(test)]
mod tests {
    use crate::config::DetectorConfig;
    use crate::heuristics::testing::tcp;
    use crate::heuristics::Heuristics;
    use gatewarden_proto::messages::AttackKind;

    #[test]
    fn slowloris_is_found_with_numbers() {
        // slowhttptest -H -c 60 -r 100 -i 6: 60 connections in 0.6 s, each sends a partial
        // request (3 packets, 450 IP bytes), the server only ACKs (112 B); 6 s later the
        // first follow-up header line arrives. (The count of unanswered requests is off here:
        // it would find this at the 16th connection, see the next test.)
        let mut h = Heuristics::new(DetectorConfig { slow_http_concurrent: 0, ..DetectorConfig::default() });
        let mut found = Vec::new();
        for i in 0..60u64 {
            let t = 1000 + i * 10;
            found.extend(h.observe(&tcp(i, "192.0.2.66", 80, t, t, (3, 450), (2, 112), "S1")));
        }
        assert!(found.is_empty(), "young connections are not slow HTTP yet: {found:?}");
        found.extend(h.observe(&tcp(0, "192.0.2.66", 80, 1000, 7000, (4, 530), (3, 164), "S1")));
        let d: Vec<_> = found.iter().filter(|d| d.kind == AttackKind::SlowHttp).collect();
        assert_eq!(d.len(), 1, "{found:?}");
        assert!(
            d[0].reason.starts_with(
                "slow HTTP (slowloris): 192.0.2.66 holds 60 connections open to 198.51.100.10:80 with no response, \
                 waiting 5.4–6.0 s, each sending 79 B/s on average"
            ),
            "{}",
            d[0].reason
        );
        assert!(d[0].reason.contains("(limit 50 waiting ≥ 3 s)"), "{}", d[0].reason);
        assert_eq!((d[0].source, d[0].port), (Some("192.0.2.66".parse().unwrap()), 80));
    }

    #[test]
    fn slowloris_is_found_within_its_first_second() {
        // Measured (slowhttptest -H -c 100 -r 50 -i 5, the lab's capture): after one probe
        // request, a connection every ~22 ms; each sends a partial request at once (3 packets,
        // ~460 IP bytes) and the server only ACKs it (2 packets, 112 B) until the client gives up.
        let mut h = Heuristics::new(DetectorConfig::default());
        let mut found = Vec::new();
        for k in 0..40u64 {
            let t = 17 + k * 22;
            found.extend(h.observe(&tcp(k, "192.0.2.66", 80, t, t, (3, 460), (2, 112), "S1")));
        }
        let d: Vec<_> = found.iter().filter(|d| d.kind == AttackKind::SlowHttp).collect();
        assert_eq!(d.len(), 1, "{found:?}");
        // The 16th request (sent at 0.347 s) has waited 250 ms at 0.597 s; the next record
        // of this source (0.611 s) completes the finding.
        assert!(d[0].ts_ns <= 650_000_000, "found at {} ms", d[0].ts_ns / 1_000_000);
        assert!(
            d[0].reason.starts_with(
                "slow HTTP (slowloris): 192.0.2.66 holds 16 requests to 198.51.100.10:80 unanswered at once, \
                 waiting 0.26–0.59 s for a first byte with at most 460 IP bytes sent each"
            ),
            "{}",
            d[0].reason
        );
        assert!(d[0].reason.contains("(limit 16 unanswered ≥ 250 ms)"), "{}", d[0].reason);
        assert_eq!(d[0].evidence[0], ("unanswered_requests".to_string(), 16.0));
        assert_eq!((d[0].source, d[0].port), (Some("192.0.2.66".parse().unwrap()), 80));
    }

    #[test]
    fn slowloris_that_pauses_is_found_by_the_tick() {
        // Measured in a lab capture: slowhttptest opened 25 connections in 0.6 s, then sent
        // nothing for 0.58 s (a loaded machine). No record of it arrives meanwhile; the
        // detector's per-batch tick sees the requests age.
        let mut h = Heuristics::new(DetectorConfig::default());
        let mut found = Vec::new();
        for k in 0..25u64 {
            let t = 17 + k * 24;
            found.extend(h.observe(&tcp(k, "192.0.2.66", 80, t, t, (3, 460), (2, 112), "S1")));
        }
        assert!(found.is_empty(), "{found:?}");
        assert!(h.tick(600_000_000).is_empty(), "at 0.60 s only 14 requests have waited 250 ms");
        let d = h.tick(700_000_000);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].kind, AttackKind::SlowHttp);
        assert_eq!(d[0].ts_ns, 700_000_000);
        assert!(
            d[0].reason.contains("192.0.2.66 holds 19 requests to 198.51.100.10:80 unanswered at once"),
            "{}",
            d[0].reason
        );
        // One finding per window, and a quiet source is dropped from the tick's list once answered.
        assert!(h.tick(900_000_000).is_empty());
        for k in 0..25u64 {
            let t = 1000 + k;
            h.observe(&tcp(k, "192.0.2.66", 80, 17 + k * 24, t, (4, 520), (4, 1_600), "S1"));
        }
        assert!(h.tick(20_000_000_000).is_empty());
        assert!(h.many_waiting.is_empty());
    }

    #[test]
    fn browsers_download_managers_and_reconnect_storms_are_not_slow_http() {
        let mut h = Heuristics::new(DetectorConfig::default());
        let mut found = Vec::new();
        let mut id = 0u64;
        let mut next = || {
            id += 1;
            id
        };
        // Three browsers on one PC load a page at once: 16 requests to one server, each
        // answered 80 ms later, the connections kept alive (HTTP/1.1) for 10 s.
        let page: Vec<u64> = (0..16).map(|_| next()).collect();
        for &i in &page {
            found.extend(h.observe(&tcp(i, "192.0.2.40", 80, 1000, 1010, (4, 700), (2, 112), "S1")));
        }
        for &i in &page {
            found.extend(h.observe(&tcp(i, "192.0.2.40", 80, 1000, 1090, (5, 752), (8, 9_000), "S1")));
        }
        // A download manager fetches 16 segments of one file at once from a far mirror:
        // requests in flight for 200 ms (round trip and time to first byte), then data.
        let segs: Vec<u64> = (0..16).map(|_| next()).collect();
        for &i in &segs {
            found.extend(h.observe(&tcp(i, "192.0.2.41", 8080, 2000, 2020, (4, 520), (2, 112), "S1")));
        }
        // Other flows of the same device go on meanwhile (the detector re-checks on every record).
        for k in 0..10u64 {
            let t = 2030 + k * 20;
            found.extend(h.observe(&tcp(next(), "192.0.2.41", 443, t, t + 5, (6, 900), (5, 4_000), "SF")));
        }
        for &i in &segs {
            found.extend(h.observe(&tcp(i, "192.0.2.41", 8080, 2000, 2220, (30, 2_100), (60, 86_000), "S1")));
        }
        // Two browsers hold 6 long polls each (12 requests waiting 30 s for an event).
        for k in 0..12u64 {
            found.extend(h.observe(&tcp(next(), "192.0.2.42", 80, 3000 + k, 3010 + k, (4, 600), (2, 112), "S1")));
        }
        found.extend(h.observe(&tcp(next(), "192.0.2.42", 443, 33_000, 33_000, (6, 900), (5, 4_000), "SF")));
        // A reconnect storm after a 30 s WAN outage: a hub's 40 connection attempts go unanswered
        // during the outage (SYNs only), then all reconnect at once, are answered within 50 ms
        // and stay open.
        for k in 0..40u64 {
            found.extend(h.observe(&tcp(
                next(),
                "192.0.2.50",
                80,
                40_000 + k * 500,
                40_000 + k * 500,
                (3, 180),
                (0, 0),
                "S0",
            )));
        }
        let storm: Vec<u64> = (0..40).map(|_| next()).collect();
        for &i in &storm {
            found.extend(h.observe(&tcp(i, "192.0.2.50", 80, 70_000, 70_005, (4, 520), (2, 112), "S1")));
        }
        for &i in &storm {
            found.extend(h.observe(&tcp(i, "192.0.2.50", 80, 70_000, 70_050, (6, 624), (4, 1_600), "S1")));
        }
        found.extend(h.observe(&tcp(next(), "192.0.2.50", 443, 71_000, 71_000, (6, 900), (5, 4_000), "SF")));
        // Twenty uploads of camera clips waiting for the server's answer: they send.
        for k in 0..20u64 {
            found.extend(h.observe(&tcp(next(), "192.0.2.11", 80, 80_000 + k, 80_100, (12, 14_000), (4, 220), "S1")));
        }
        found.extend(h.observe(&tcp(next(), "192.0.2.11", 443, 81_000, 81_000, (6, 900), (5, 4_000), "SF")));
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn long_polls_uploads_and_answered_requests_are_not_slow_http() {
        let mut h = Heuristics::new(DetectorConfig::default());
        let mut found = Vec::new();
        // A browser's 6 long-poll requests, each waiting 30 s for an event.
        for i in 0..6u64 {
            found.extend(h.observe(&tcp(i, "192.0.2.40", 80, 0, 100, (4, 600), (2, 112), "S1")));
        }
        // A camera uploading 60 clips at once at 50 kB/s each, waiting for the server's answer.
        for i in 0..60u64 {
            found.extend(h.observe(&tcp(100 + i, "192.0.2.40", 80, 0, 200, (10, 10_000), (5, 260), "S1")));
        }
        // 60 requests answered at once and kept alive (HTTP/1.1) for 10 s.
        for i in 0..60u64 {
            found.extend(h.observe(&tcp(200 + i, "192.0.2.40", 80, 0, 300, (4, 600), (4, 1_500), "S1")));
        }
        // Time passes; every connection reports again.
        for i in 0..60u64 {
            let t = 10_000 + i;
            found.extend(h.observe(&tcp(100 + i, "192.0.2.40", 80, 0, t, (400, 500_000), (60, 3_200), "S1")));
            found.extend(h.observe(&tcp(200 + i, "192.0.2.40", 80, 0, t, (5, 652), (5, 1_552), "S1")));
        }
        for i in 0..6u64 {
            found.extend(h.observe(&tcp(i, "192.0.2.40", 80, 0, 30_000, (5, 652), (3, 164), "S1")));
        }
        assert!(found.is_empty(), "{found:?}");
    }
}
