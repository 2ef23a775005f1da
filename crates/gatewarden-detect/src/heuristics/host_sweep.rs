//! Host sweep (horizontal scan): one source trying one port on many hosts,
//! not counting hosts that answered it on that port before (a hub polling its
//! devices re-polls peers, it does not sweep them).

use std::collections::VecDeque;
use std::net::IpAddr;

use gatewarden_proto::messages::{AttackKind, Proto};

use super::detection::{Detection, Observed};
use super::windows::AttemptWindow;
use crate::config::DetectorConfig;

/// Most answered peers remembered per source (≈ 1.5 KiB at the cap; only
/// answered traffic, which a forged source cannot produce, adds one).
const MAX_PEERS: usize = 64;

/// (host, port, protocol) a source exchanged answered traffic with, most recent
/// last, at most [`MAX_PEERS`]: re-polling hosts that answered it before is not
/// sweeping them, even when they go quiet for a while.
#[derive(Debug, Default)]
pub(super) struct Peers(VecDeque<(IpAddr, u16, Proto)>);

impl Peers {
    /// Forgets every peer, keeping the allocation (a recycled source state).
    pub(super) fn clear(&mut self) {
        self.0.clear();
    }

    /// Entries it has room for.
    pub(super) fn capacity(&self) -> usize {
        self.0.capacity()
    }

    /// Remembers (or refreshes) a peer that answered.
    pub(super) fn answered(&mut self, peer: (IpAddr, u16, Proto)) {
        if let Some(i) = self.0.iter().position(|p| *p == peer) {
            self.0.remove(i);
        } else if self.0.len() >= MAX_PEERS {
            self.0.pop_front();
        }
        self.0.push_back(peer);
    }
}

/// A sweep finding when this new attempt brings the hosts its source tried on one
/// port, less its known peers there (its [`Peers`], and hosts the detector stage's
/// day of answered services knows: `AttemptWindow::known_hosts`), to
/// `sweep_distinct_hosts`; its unanswered share is that of the source's attempts on
/// the port (over the protocol).
///
/// A sweep is reported once per window, and once more when it widens to twice
/// `sweep_distinct_hosts` (its own report, [`is_wide`]): the response policy alerts on a
/// narrow sweep whose hosts partly answered (a client with some peers gone) and blocks
/// a wide one, which must not wait for the next window.
pub(super) fn check(cfg: &DetectorConfig, o: &Observed, attempts: &AttemptWindow, peers: &Peers) -> Option<Detection> {
    if !o.new_attempt() || o.reported_lately_apart(AttackKind::HostSweep) {
        return None;
    }
    let narrow_taken = o.reported_lately(AttackKind::HostSweep);
    let r = o.r;
    let span = attempts.span_s();
    let unanswered = attempts.unanswered_pct_on(r.dport, r.proto);
    // The peer scan runs only once the raw count could make a sweep (not per flow).
    let mut hosts = attempts.hosts(r.dport, r.proto);
    if hosts >= cfg.sweep_distinct_hosts as usize {
        let (port, proto) = (r.dport, r.proto);
        // Less the hosts the longer memory knows answered the source there (counted
        // as the attempts came in: O(1) here, whatever the window holds), and the
        // short list's peers tried on the port that it does not know.
        hosts = hosts.saturating_sub(attempts.known_hosts(port, proto));
        hosts = hosts.saturating_sub(
            peers
                .0
                .iter()
                .filter(|(d, p, pr)| {
                    *p == port && *pr == proto && attempts.tried(*d, port, proto) && !attempts.known(*d, port, proto)
                })
                .count(),
        );
    }
    if hosts < cfg.sweep_distinct_hosts as usize || (narrow_taken && hosts < 2 * cfg.sweep_distinct_hosts as usize) {
        return None;
    }
    Some(Detection {
        target: None,
        port: r.dport,
        proto: Some(r.proto),
        confidence: (0.6 + 0.4 * (hosts as f32 / (2.0 * cfg.sweep_distinct_hosts as f32)).min(1.0)).min(0.99),
        reason: format!(
            "{} → {hosts} hosts on {}/{} in {span:.1} s, {unanswered:.0} % unanswered",
            r.src,
            r.proto.name(),
            r.dport
        ),
        evidence: vec![
            ("distinct_hosts".into(), hosts as f64),
            ("seconds".into(), span),
            ("unanswered_pct".into(), unanswered),
            ("sweep_min_hosts".into(), f64::from(cfg.sweep_distinct_hosts)),
            ("source_unanswered_pct".into(), attempts.unanswered_pct_over(r.proto)),
        ],
        ..Detection::from_record(r, AttackKind::HostSweep)
    })
}

/// Whether a sweep finding (`host_sweep`, or `slow_scan` over hosts) reached twice the
/// hosts that make one (its `sweep_min_hosts`): a wide sweep, with a report of its own in
/// the window (`first_in_window`) and blocked by the response policy whatever its hosts
/// answered.
pub fn is_wide(d: &Detection) -> bool {
    matches!((d.evidence_value("sweep_min_hosts"), d.evidence_value("distinct_hosts")), (Some(min), Some(hosts)) if hosts >= 2.0 * min)
}

#[cfg(test)]
mod tests {
    use crate::config::DetectorConfig;
    use crate::heuristics::testing::rec;
    use crate::heuristics::Heuristics;
    use gatewarden_proto::messages::{AttackKind, Proto};

    #[test]
    fn a_sweep_says_how_many_probes_went_unanswered() {
        use crate::fusion::Origin;
        use crate::response::{Action, ResponsePolicy, Rule};
        let policy = ResponsePolicy::default();
        // A home-automation hub polling 30 devices' web pages: answered, neither blocked nor alerted.
        let mut h = Heuristics::new(DetectorConfig::default());
        let mut found = Vec::new();
        for i in 0..30u64 {
            let dst = format!("192.0.2.{}", 100 + i);
            found.extend(h.observe(&rec(i + 1, "192.0.2.5", &dst, 80, Proto::Tcp, 1.0 + i as f64 * 0.1, 6, 5, "SF")));
        }
        // Hosts that answered are peers, not sweep targets: no finding at all.
        assert!(found.iter().all(|d| d.kind != AttackKind::HostSweep), "{found:?}");
        // Half of a sweep's hosts answering (the rest silent): counted, not alerted.
        let mut h = Heuristics::new(DetectorConfig::default());
        let mut found = Vec::new();
        for i in 0..60u64 {
            let dst = format!("192.0.2.{}", 100 + i);
            let (rev, state) = if i % 3 == 0 { (0, "S0") } else { (5, "SF") };
            found.extend(h.observe(&rec(
                i + 1,
                "192.0.2.5",
                &dst,
                80,
                Proto::Tcp,
                1.0 + i as f64 * 0.1,
                6,
                rev,
                state,
            )));
        }
        let d = found.iter().find(|d| d.kind == AttackKind::HostSweep).expect("a sweep finding");
        let decision = policy.decide(d, &[Origin::Heuristics]);
        assert_eq!((decision.action, decision.rule), (Action::Ignore, Rule::SweepAnswered), "{}", d.reason);
        // A telnet sweep into silence: blocked.
        let mut h = Heuristics::new(DetectorConfig::default());
        let mut found = Vec::new();
        for i in 0..30u64 {
            let dst = format!("192.0.2.{}", 100 + i);
            found.extend(h.observe(&rec(i + 1, "192.0.2.66", &dst, 23, Proto::Tcp, 1.0 + i as f64 * 0.01, 1, 0, "S0")));
        }
        let d = found.iter().find(|d| d.kind == AttackKind::HostSweep).expect("a sweep finding");
        let decision = policy.decide(d, &[Origin::Heuristics]);
        assert_eq!((decision.action, decision.rule), (Action::Block, Rule::ScanUnanswered), "{}", d.reason);
    }

    /// Runs `records` (one per 50 ms) through the heuristics and fusion as the detector
    /// stage does; returns fusion's host-sweep decisions with their capture time in seconds.
    fn sweep_decisions(
        records: &[gatewarden_proto::messages::FlowRecord],
    ) -> Vec<(crate::response::Action, &'static str, f64)> {
        use crate::fusion::{Fusion, FusionConfig, Origin};
        let mut h = Heuristics::new(DetectorConfig::default());
        let mut f = Fusion::new(FusionConfig::default());
        let mut out = Vec::new();
        for r in records {
            // As the detector stage does: the hour's silent hosts, here no more than the window's
            // (the long-horizon history is not part of this test).
            let with_hour = |mut d: crate::heuristics::Detection| {
                let window = d.evidence_value("distinct_hosts").unwrap_or(0.0);
                d.evidence.push(("silent_hosts_hour".into(), window));
                d
            };
            let found: Vec<_> = h.observe(r).into_iter().map(|d| (with_hour(d), Origin::Heuristics)).collect();
            for x in f.fuse(found, &[], r.last_ns) {
                if x.detection.kind == AttackKind::HostSweep {
                    out.push((x.decision.action, x.decision.rule.as_str(), r.last_ns as f64 / 1e9));
                }
            }
        }
        out
    }

    /// A Tailscale node setting up paths to 10 peers pings each peer's candidate endpoints
    /// from UDP 41641: two private addresses of the peer's own sites that never answer from
    /// here, and its public one, which does (tools/make_benign_extra_pcap.py `tailscale`:
    /// blocked as "20 hosts on udp/41641 in 1.3 s, 77 % unanswered"). A narrow sweep whose
    /// hosts partly answered is alerted, not blocked. When the peers' public endpoints are
    /// on other ports (NAT-mapped), nothing answers on 41641 itself (seed 12: "91 %
    /// unanswered"); the answers come to the same socket from the other ports, and the
    /// share among all the source's UDP attempts says so.
    #[test]
    fn a_vpn_node_pinging_its_peers_candidate_endpoints_is_alerted_not_blocked() {
        for public_port in [41641u16, 0] {
            let mut records = Vec::new();
            for k in 0..10u64 {
                let t = 1.0 + k as f64 * 0.15;
                let endpoints = [
                    (format!("10.{k}.7.9"), 41641),
                    (format!("192.168.{}.4", 10 + k), 41641),
                    (
                        format!("198.51.100.{}", 10 + k),
                        if public_port == 0 { 20_000 + k as u16 * 7 } else { public_port },
                    ),
                ];
                for (j, (dst, port)) in endpoints.iter().enumerate() {
                    let answered = j == 2;
                    let (rev, state) = if answered { (1, "SF") } else { (0, "S0") };
                    let mut r = rec(k * 3 + j as u64 + 1, "192.168.1.30", dst, *port, Proto::Udp, t, 1, rev, state);
                    r.sport = 41641;
                    records.push(r);
                }
            }
            let d = sweep_decisions(&records);
            assert!(!d.is_empty(), "20 silent hosts on one port are still a finding");
            assert!(
                d.iter().all(|(a, rule, _)| *a == crate::response::Action::Alert && *rule == "narrow_sweep_partly_answered"),
                "public endpoints on port {public_port}: {d:?}"
            );
        }
    }

    /// The attack the rule above must not spare: a sweep of tcp/80 at 20 hosts a second
    /// where one host in four answers (a dense subnet's web servers). It is alerted at its
    /// 20th silent host and blocked when it reaches 40, in the same window: the narrow
    /// report must not hold back the wide one until the next window.
    #[test]
    fn a_partly_answered_sweep_is_blocked_as_soon_as_it_widens() {
        let records: Vec<_> = (0..80u64)
            .map(|i| {
                let dst = format!("203.0.113.{}", 10 + i);
                let (rev, state) = if i % 4 == 0 { (1, "SF") } else { (0, "S0") };
                rec(i + 1, "192.0.2.66", &dst, 80, Proto::Tcp, 1.0 + i as f64 * 0.05, 1, rev, state)
            })
            .collect();
        let d = sweep_decisions(&records);
        assert_eq!(d.first().map(|x| x.1), Some("narrow_sweep_partly_answered"), "{d:?}");
        let block = d.iter().find(|x| x.0 == crate::response::Action::Block).expect("blocked once wide");
        assert_eq!(block.1, "scan_mostly_unanswered", "{d:?}");
        // The 40th silent host is the 54th probe, 2.65 s after the first (three in four silent).
        assert!(block.2 < 1.0 + 2.7, "blocked at {} s: {d:?}", block.2);
    }

    /// A sweep into almost all silence (a home /24, random internet hosts) blocks at its
    /// first report, narrow or not.
    #[test]
    fn a_sweep_into_silence_blocks_at_its_first_report() {
        let records: Vec<_> = (0..25u64)
            .map(|i| {
                let dst = format!("203.0.113.{}", 10 + i);
                let (rev, state) = if i == 3 { (1, "SF") } else { (0, "S0") };
                rec(i + 1, "192.0.2.66", &dst, 23, Proto::Tcp, 1.0 + i as f64 * 0.01, 1, rev, state)
            })
            .collect();
        let d = sweep_decisions(&records);
        assert_eq!(
            d.first().map(|x| (x.0, x.1)),
            Some((crate::response::Action::Block, "scan_mostly_unanswered")),
            "{d:?}"
        );
    }

    #[test]
    fn a_hub_re_polling_devices_that_answered_before_is_not_a_sweep_when_they_go_quiet() {
        // Seen in the 60-minute soak: a hub polling 30 devices every 10-30 s; under
        // load most polls of one cycle went unanswered and it was blocked as a sweep.
        let mut h = Heuristics::new(DetectorConfig::default());
        let mut id = 0;
        let mut found = Vec::new();
        for cycle in 0..3u64 {
            for i in 0..30u64 {
                id += 1;
                let dst = format!("192.0.2.{}", 130 + i);
                let t = 1.0 + cycle as f64 * 20.0 + i as f64 * 0.15;
                // Cycle 0: every device answers. Later cycles: 25 of 30 are silent.
                let (rev, state) = if cycle == 0 || i < 5 { (5, "SF") } else { (0, "S0") };
                found.extend(h.observe(&rec(id, "192.0.2.50", &dst, 80, Proto::Tcp, t, 1, rev, state)));
            }
        }
        assert!(found.iter().all(|d| d.kind != AttackKind::HostSweep), "{found:?}");
        // The same silence from a source that never talked to those hosts is a sweep.
        let mut h = Heuristics::new(DetectorConfig::default());
        let mut found = Vec::new();
        for i in 0..30u64 {
            let dst = format!("192.0.2.{}", 130 + i);
            found.extend(h.observe(&rec(i + 1, "192.0.2.66", &dst, 80, Proto::Tcp, 1.0 + i as f64 * 0.15, 1, 0, "S0")));
        }
        assert!(found.iter().any(|d| d.kind == AttackKind::HostSweep), "{found:?}");
    }

    /// A monitor checking 70 devices on two services goes round the 64 peers its source
    /// state remembers every cycle (tests/benign_extra.rs `monitor_large`: blocked as a
    /// udp/161 sweep when the evening switched 40 of them off). Hosts the longer memory
    /// knows answered it do not count; those it does not know are still a sweep.
    #[test]
    fn a_monitor_beyond_the_short_peer_list_is_not_a_sweep_of_devices_it_knows() {
        let cycle = |h: &mut Heuristics,
                     c: u64,
                     known: &dyn Fn(std::net::IpAddr, std::net::IpAddr, u16, Proto) -> bool| {
            let mut found = Vec::new();
            for i in 0..70u64 {
                let dst = format!("192.168.1.{}", 100 + i);
                let t = 1.0 + c as f64 * 60.0 + i as f64 * 0.05;
                let off = c > 0 && i % 7 < 4;
                let (rev, state) = if off { (0, "S0") } else { (1, "SF") };
                let id = c * 1000 + 2 * i;
                found.extend(h.observe_known(&rec(id, "192.168.1.10", &dst, 161, Proto::Udp, t, 1, rev, state), known));
                found.extend(
                    h.observe_known(&rec(id + 1, "192.168.1.10", &dst, 80, Proto::Tcp, t, 3, rev * 3, state), known),
                );
            }
            found
        };
        let everyone = |_, _, _, _| true;
        let nobody = |_, _, _, _| false;
        let mut h = Heuristics::new(DetectorConfig::default());
        let mut found = cycle(&mut h, 0, &everyone);
        found.extend(cycle(&mut h, 1, &everyone));
        assert!(found.iter().all(|d| d.kind != AttackKind::HostSweep), "{found:?}");
        let mut h = Heuristics::new(DetectorConfig::default());
        let mut found = cycle(&mut h, 0, &nobody);
        found.extend(cycle(&mut h, 1, &nobody));
        assert!(found.iter().any(|d| d.kind == AttackKind::HostSweep), "{found:?}");
    }

    /// A busy client (or a bot that first got answers from thousands of web servers)
    /// opening connections to 2 000 hosts it knows on 443: the day memory is asked once
    /// per new attempt, not once per host in the window for every attempt (that was
    /// 2 000 × 2 000 questions, a per-source cost any LAN device could raise at will).
    #[test]
    fn the_day_memory_is_asked_once_per_attempt_not_per_host_in_the_window() {
        let asked = std::cell::Cell::new(0u64);
        let known = |_, _, _, _| {
            asked.set(asked.get() + 1);
            true
        };
        let mut h = Heuristics::new(DetectorConfig::default());
        let mut found = Vec::new();
        for i in 0..2000u64 {
            let dst = format!("198.51.{}.{}", 100 + i / 250, 1 + i % 250);
            let t = 1.0 + i as f64 * 0.001;
            found.extend(h.observe_known(&rec(i + 1, "192.168.1.10", &dst, 443, Proto::Tcp, t, 1, 0, "S0"), &known));
        }
        assert!(found.iter().all(|d| d.kind != AttackKind::HostSweep), "{found:?}");
        assert!(asked.get() <= 2000, "the day memory was asked {} times for 2 000 attempts", asked.get());
    }

    /// A telnet sweep of 30 hosts into silence from 192.0.2.66, with two quick
    /// answered flows to 198.51.100.1 on `pad_port` between probes: the sweep
    /// finding, and what the shipped response policy does with it.
    fn padded_sweep(pad_port: u16) -> (crate::heuristics::Detection, crate::response::Decision) {
        let mut h = Heuristics::new(DetectorConfig::default());
        let mut found = Vec::new();
        let mut id = 0;
        for i in 0..30u64 {
            let t = 1.0 + i as f64 * 0.01;
            for _ in 0..2 {
                id += 1;
                found.extend(h.observe(&rec(id, "192.0.2.66", "198.51.100.1", pad_port, Proto::Tcp, t, 6, 5, "SF")));
            }
            id += 1;
            let dst = format!("192.0.2.{}", 100 + i);
            found.extend(h.observe(&rec(id, "192.0.2.66", &dst, 23, Proto::Tcp, t + 0.005, 1, 0, "S0")));
        }
        let d = found.into_iter().find(|d| d.kind == AttackKind::HostSweep).expect("a sweep finding");
        let decision = crate::response::ResponsePolicy::default().decide(&d, &[crate::fusion::Origin::Heuristics]);
        (d, decision)
    }

    /// The red team's padding against a sweep: a telnet sweep into silence with two quick
    /// answered HTTPS flows to one server between probes. Counted over all the source's
    /// attempts the share was 33 %, and the sweep was only counted (`sweep_mostly_answered`);
    /// counted over the probes to tcp/23 it is 100 %: blocked.
    #[test]
    fn a_sweep_padded_with_answered_flows_on_another_port_keeps_its_own_unanswered_share() {
        use crate::response::{Action, Rule};
        let (d, decision) = padded_sweep(443);
        assert!(d.reason.contains("100 % unanswered"), "{}", d.reason);
        assert_eq!((decision.action, decision.rule), (Action::Block, Rule::ScanUnanswered), "{}", d.reason);
    }

    /// The padding aimed at the swept port itself: two answered telnet
    /// sessions to one host between probes. Over attempts the share was 33 %
    /// (`sweep_mostly_answered`: not even alerted); over the hosts tried, one
    /// answered among 21 is 95 %.
    #[test]
    fn a_sweep_padded_with_answered_sessions_on_the_swept_port_is_still_blocked() {
        use crate::response::{Action, Rule};
        let (d, decision) = padded_sweep(23);
        let pct = d.evidence.iter().find(|e| e.0 == "unanswered_pct").unwrap().1;
        assert!(pct >= 90.0, "{pct}: {}", d.reason);
        assert_eq!((decision.action, decision.rule), (Action::Block, Rule::ScanUnanswered), "{}", d.reason);
    }
}
