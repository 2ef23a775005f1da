//! Port scan (vertical): one source trying many ports of one host, mostly
//! unanswered. TCP at `scan_distinct_ports`; UDP at the lower
//! `udp_scan_distinct_ports` (as IP protocols: other IP protocols count as ports of one
//! pseudo-protocol), but only when at least half of the probes went
//! unanswered (a device talking UDP to many ports of a server gets answers).
//! The unanswered share is that of the probes to that host: answered traffic
//! elsewhere (padding) does not dilute it.

use gatewarden_proto::messages::{AttackKind, Proto};

use super::detection::{Detection, Observed, IP_PROTOCOLS};
use super::windows::AttemptWindow;
use crate::config::DetectorConfig;

/// A port-scan finding when this new attempt brings the ports its source tried on
/// its target to the limit; its unanswered share is that of the source's attempts
/// to the target (over the protocol), whatever else the source sends.
///
/// Flows of other IP protocols count as one more protocol whose ports are their protocol
/// numbers ([`IP_PROTOCOLS`]): `nmap -sO` tries 256 of them on one host.
pub(super) fn check(cfg: &DetectorConfig, o: &Observed, attempts: &AttemptWindow) -> Option<Detection> {
    let tallied = if o.new_attempt() {
        o.r.proto
    } else if o.new_other_protocol() {
        IP_PROTOCOLS
    } else {
        return None;
    };
    let r = o.r;
    let span = attempts.span_s();
    let unanswered = attempts.unanswered_pct_to(r.dst, tallied);
    let ports = attempts.ports(r.dst, tallied);
    // UDP: a lower bar, but only for probes that mostly go unanswered. The same for IP
    // protocols: both are answered, when closed, by ICMP errors the target rate-limits
    // (1 a second on Linux), so nmap slows down (`-sO -T4`: 50 protocols took 11.6 s).
    let icmp_paced = tallied == Proto::Udp || tallied == IP_PROTOCOLS;
    let udp_scan = icmp_paced && ports >= cfg.udp_scan_distinct_ports as usize && unanswered >= 50.0;
    if ports < cfg.scan_distinct_ports as usize && !udp_scan {
        return None;
    }
    if o.reported_lately(AttackKind::PortScan) {
        return None;
    }
    let limit = if udp_scan { cfg.udp_scan_distinct_ports } else { cfg.scan_distinct_ports };
    Some(Detection {
        target: Some(r.dst),
        port: 0,
        proto: Some(r.proto),
        confidence: (0.6 + 0.4 * (ports as f32 / (2.0 * limit as f32)).min(1.0)).min(0.99),
        reason: if tallied == IP_PROTOCOLS {
            format!(
                "{} → {ports} distinct IP protocols on {} in {span:.1} s, {unanswered:.0} % unanswered",
                r.src, r.dst
            )
        } else {
            format!(
                "{} → {ports} distinct {} ports on {} in {span:.1} s, {unanswered:.0} % unanswered",
                r.src,
                r.proto.name(),
                r.dst
            )
        },
        evidence: vec![
            ("distinct_ports".into(), ports as f64),
            ("seconds".into(), span),
            ("unanswered_pct".into(), unanswered),
        ],
        ..Detection::from_record(r, AttackKind::PortScan)
    })
}

#[cfg(test)]
mod tests {
    use crate::config::DetectorConfig;
    use crate::fusion::Origin;
    use crate::heuristics::testing::rec;
    use crate::heuristics::{Detection, Heuristics};
    use crate::response::{Action, ResponsePolicy, Rule};
    use gatewarden_proto::messages::{AttackKind, Proto};

    fn unanswered_pct(d: &Detection) -> f64 {
        d.evidence.iter().find(|(k, _)| k == "unanswered_pct").map(|e| e.1).expect("unanswered_pct")
    }

    /// `nmap -sO`: one probe of each IP protocol to one host, the unsupported ones answered
    /// by ICMP protocol-unreachable (which is no answer in the flow). It was only an
    /// `anomaly` alert: flows of other protocols were no attempts. Now each protocol is a
    /// "port" of one pseudo-protocol, and 20 of them mostly unanswered are a scan (UDP's
    /// bar: closed protocols are answered by rate-limited ICMP errors, as closed UDP ports
    /// are), blocked.
    #[test]
    fn an_ip_protocol_scan_is_a_port_scan_and_blocked() {
        let mut h = Heuristics::new(DetectorConfig::default());
        let mut found: Vec<Detection> = Vec::new();
        for n in 2..=120u8 {
            let (dport, proto) = (0, Proto::Other(n));
            let t = 1.0 + f64::from(n) * 0.01;
            found.extend(h.observe(&rec(u64::from(n), "192.0.2.66", "198.51.100.10", dport, proto, t, 1, 0, "OTH")));
        }
        let d = found.iter().find(|d| d.kind == AttackKind::PortScan).expect("a port scan finding");
        assert!(d.reason.contains("20 distinct IP protocols on 198.51.100.10"), "{}", d.reason);
        let x = ResponsePolicy::default().decide(d, &[Origin::Heuristics]);
        assert_eq!((x.action, x.rule), (Action::Block, Rule::ScanUnanswered), "{}", d.reason);
        // A VPN client's GRE and ESP to its concentrator, answered: nothing.
        let mut h = Heuristics::new(DetectorConfig::default());
        let mut found = Vec::new();
        for (i, n) in [47u8, 50, 51].into_iter().cycle().take(300).enumerate() {
            let t = 1.0 + i as f64 * 0.01;
            found.extend(h.observe(&rec(
                i as u64 + 1,
                "192.0.2.5",
                "198.51.100.20",
                0,
                Proto::Other(n),
                t,
                5,
                5,
                "OTH",
            )));
        }
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn vertical_scan_is_found_once_with_numbers() {
        let mut h = Heuristics::new(DetectorConfig::default());
        let mut all = Vec::new();
        for p in 1..=200u16 {
            all.extend(h.observe(&rec(
                p as u64,
                "198.51.100.7",
                "192.0.2.10",
                p,
                Proto::Tcp,
                p as f64 * 0.01,
                1,
                1,
                "REJ",
            )));
        }
        let scans: Vec<_> = all.iter().filter(|d| d.kind == AttackKind::PortScan).collect();
        assert_eq!(scans.len(), 1, "{all:?}");
        let d = scans[0];
        assert!(d.reason.contains("198.51.100.7 → 50 distinct tcp ports on 192.0.2.10"), "{}", d.reason);
        assert!(d.reason.contains("100 % unanswered"), "{}", d.reason);
        assert_eq!(d.source, Some("198.51.100.7".parse().unwrap()));
    }

    #[test]
    fn an_unanswered_udp_scan_is_found_at_twenty_ports_and_answered_udp_is_not() {
        // nmap -sU: probes to many ports, the target's ICMP rate limit leaves most unanswered.
        let mut h = Heuristics::new(DetectorConfig::default());
        let mut all = Vec::new();
        for p in 1..=30u16 {
            all.extend(h.observe(&rec(
                p as u64,
                "198.51.100.7",
                "192.0.2.10",
                p,
                Proto::Udp,
                p as f64 * 0.02,
                1,
                0,
                "S0",
            )));
        }
        let scans: Vec<_> = all.iter().filter(|d| d.kind == AttackKind::PortScan).collect();
        assert_eq!(scans.len(), 1, "{all:?}");
        assert!(
            scans[0].reason.contains("198.51.100.7 → 20 distinct udp ports on 192.0.2.10 in 0.4 s, 100 % unanswered"),
            "{}",
            scans[0].reason
        );
        // A device talking UDP to 30 ports of one server, each answered (media, discovery): not a scan.
        let mut h = Heuristics::new(DetectorConfig::default());
        for p in 1..=30u16 {
            let found = h.observe(&rec(
                p as u64,
                "192.0.2.20",
                "198.51.100.1",
                5000 + p,
                Proto::Udp,
                p as f64 * 0.02,
                3,
                3,
                "SF",
            ));
            assert!(found.iter().all(|d| d.kind != AttackKind::PortScan), "{found:?}");
        }
    }

    /// Probes from `src` to ports 1..=`ports` of 192.0.2.10, unanswered, with two quick
    /// answered flows to `pad` between probes; the port-scan finding, if any.
    fn padded_scan(proto: Proto, pad: (&str, u16), ports: u16) -> Option<Detection> {
        let mut h = Heuristics::new(DetectorConfig::default());
        let mut found = Vec::new();
        let mut id = 0;
        for p in 1..=ports {
            let t = p as f64 * 0.01;
            for _ in 0..2 {
                id += 1;
                found.extend(h.observe(&rec(id, "198.51.100.7", pad.0, pad.1, proto, t, 6, 5, "SF")));
            }
            id += 1;
            found.extend(h.observe(&rec(id, "198.51.100.7", "192.0.2.10", p, proto, t + 0.005, 1, 0, "S0")));
        }
        found.into_iter().find(|d| d.kind == AttackKind::PortScan)
    }

    /// The red team's padding (review of the unanswered share): a SYN scan into silence with
    /// two quick answered HTTPS flows to another host between probes. Counted over all the
    /// source's attempts the share was 33 %, and the scan was only alerted
    /// (`scan_mostly_answered`); counted over the probes to the scanned host it is theirs.
    #[test]
    fn a_tcp_scan_padded_with_answered_flows_to_another_host_keeps_its_own_unanswered_share() {
        let d = padded_scan(Proto::Tcp, ("192.0.2.80", 443), 60).expect("a scan finding");
        assert_eq!(unanswered_pct(&d), 100.0, "{}", d.reason);
        assert!(d.reason.contains("50 distinct tcp ports on 192.0.2.10 in 0.5 s, 100 % unanswered"), "{}", d.reason);
        let decision = ResponsePolicy::default().decide(&d, &[Origin::Heuristics]);
        assert_eq!((decision.action, decision.rule), (Action::Block, Rule::ScanUnanswered), "{}", d.reason);
    }

    /// Padding aimed at the scanned host itself: two answered connections to
    /// its open 443 between probes. Counted over attempts the share was 33 %
    /// again (alert only); counted over the ports tried, one answered port
    /// among 50 is 98 %. A scanner's retries would not count twice either.
    #[test]
    fn a_scan_padded_with_answered_connections_to_the_scanned_hosts_open_port_is_still_blocked() {
        let d = padded_scan(Proto::Tcp, ("192.0.2.10", 443), 60).expect("a scan finding");
        assert_eq!(unanswered_pct(&d), 98.0, "{}", d.reason);
        let decision = ResponsePolicy::default().decide(&d, &[Origin::Heuristics]);
        assert_eq!((decision.action, decision.rule), (Action::Block, Rule::ScanUnanswered), "{}", d.reason);
    }

    /// The same padding with answered DNS queries hid a UDP scan altogether: 33 % is below
    /// the 50 % a UDP scan needs to be found at `udp_scan_distinct_ports`.
    #[test]
    fn a_udp_scan_padded_with_answered_dns_queries_is_still_found() {
        let d = padded_scan(Proto::Udp, ("192.0.2.53", 53), 30).expect("a UDP scan finding");
        assert_eq!(unanswered_pct(&d), 100.0, "{}", d.reason);
        assert!(d.reason.contains("20 distinct udp ports on 192.0.2.10 in 0.2 s, 100 % unanswered"), "{}", d.reason);
        let decision = ResponsePolicy::default().decide(&d, &[Origin::Heuristics]);
        assert_eq!((decision.action, decision.rule), (Action::Block, Rule::ScanUnanswered), "{}", d.reason);
    }

    /// The other way round: a device using 60 answered services of one server (a NAS, a
    /// media box) shows a low share, however much unanswered traffic it sends elsewhere
    /// (one-way UDP to a collector). Counted over all its attempts the share was 67 %:
    /// blocked.
    #[test]
    fn many_answered_services_of_one_server_show_a_low_share_beside_unanswered_traffic_elsewhere() {
        let policy = ResponsePolicy::default();
        for one_way_between in [0, 2] {
            let mut h = Heuristics::new(DetectorConfig::default());
            let mut found = Vec::new();
            let mut id = 0;
            for p in 1..=60u16 {
                let t = p as f64 * 0.01;
                for _ in 0..one_way_between {
                    id += 1;
                    found.extend(h.observe(&rec(id, "192.0.2.20", "192.0.2.99", 514, Proto::Udp, t, 1, 0, "S0")));
                }
                id += 1;
                found.extend(h.observe(&rec(id, "192.0.2.20", "198.51.100.1", 8000 + p, Proto::Tcp, t, 6, 5, "SF")));
            }
            let d = found.iter().find(|d| d.kind == AttackKind::PortScan).expect("a scan finding (60 ports)");
            assert_eq!(unanswered_pct(d), 0.0, "{}", d.reason);
            let decision = policy.decide(d, &[Origin::Heuristics]);
            assert_eq!((decision.action, decision.rule), (Action::Alert, Rule::ScanAnswered), "{}", d.reason);
        }
    }

    /// A flow's answer can come in a later snapshot, and a SYN scan's answered probe can be
    /// aborted in a later one (SYN-ACK, then the scanner's RST): the share follows each flow
    /// to its latest snapshot.
    #[test]
    fn the_share_follows_a_probe_answered_or_aborted_in_a_later_snapshot() {
        // Connections each first seen with their SYN only, then answered and closed: when the
        // 50th port's SYN completes the finding, only it is unanswered.
        let mut h = Heuristics::new(DetectorConfig::default());
        let mut found = Vec::new();
        for p in 1..=60u16 {
            let t = p as f64 * 0.01;
            found.extend(h.observe(&rec(p as u64, "192.0.2.20", "198.51.100.1", 8000 + p, Proto::Tcp, t, 1, 0, "S0")));
            found.extend(h.observe(&rec(p as u64, "192.0.2.20", "198.51.100.1", 8000 + p, Proto::Tcp, t, 6, 5, "SF")));
        }
        let d = found.iter().find(|d| d.kind == AttackKind::PortScan).expect("a scan finding");
        assert_eq!(unanswered_pct(d), 2.0, "{}", d.reason);
        // nmap -sS against open ports: the SYN-ACK seen first, then the scanner's RST: when the
        // 50th port's SYN-ACK completes the finding, only it is not yet aborted.
        let mut h = Heuristics::new(DetectorConfig::default());
        let mut found = Vec::new();
        for p in 1..=60u16 {
            let t = p as f64 * 0.01;
            found.extend(h.observe(&rec(p as u64, "198.51.100.7", "192.0.2.10", p, Proto::Tcp, t, 1, 1, "S1")));
            found.extend(h.observe(&rec(p as u64, "198.51.100.7", "192.0.2.10", p, Proto::Tcp, t, 2, 1, "RSTO")));
        }
        let d = found.iter().find(|d| d.kind == AttackKind::PortScan).expect("a scan finding");
        assert_eq!(unanswered_pct(d), 98.0, "{}", d.reason);
    }
}
