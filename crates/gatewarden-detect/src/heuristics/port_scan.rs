//! Port scan (vertical): one source trying many ports of one host, mostly
//! unanswered. TCP at `scan_distinct_ports`; UDP at the lower
//! `udp_scan_distinct_ports`, but only when at least half of the probes went
//! unanswered (a device talking UDP to many ports of a server gets answers).

use gatewarden_proto::messages::{AttackKind, Proto};

use super::detection::{Detection, Observed};
use super::windows::AttemptWindow;
use crate::config::DetectorConfig;

/// A port-scan finding when this new attempt brings the ports its source tried on
/// its target to the limit. `failed`: the source's flows that went unanswered.
pub(super) fn check(cfg: &DetectorConfig, o: &Observed, attempts: &AttemptWindow, failed: usize) -> Option<Detection> {
    if !o.new_attempt() {
        return None;
    }
    let r = o.r;
    let span = attempts.span_s();
    let unanswered = attempts.unanswered_pct(failed);
    let ports = attempts.ports(r.dst, r.proto);
    // UDP: a lower bar, but only for probes that mostly go unanswered.
    let udp_scan = r.proto == Proto::Udp && ports >= cfg.udp_scan_distinct_ports as usize && unanswered >= 50.0;
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
        reason: format!(
            "{} → {ports} distinct {} ports on {} in {span:.1} s, {unanswered:.0} % unanswered",
            r.src,
            r.proto.name(),
            r.dst
        ),
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
    use crate::heuristics::testing::rec;
    use crate::heuristics::Heuristics;
    use gatewarden_proto::messages::{AttackKind, Proto};

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
}
