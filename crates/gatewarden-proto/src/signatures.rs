//! The one catalogue of alert signature ids. A SIEM keys rules and
//! dashboards on `alert.signature_id`, so every event gets its own id and the
//! ids never move: detections 9000001-9000099 (one per [`AttackKind`]),
//! system events 9000100-9099999, link health 9100000 plus a bit per finding.

use crate::attack::AttackKind;

/// Detections are this plus a small number per kind.
pub const DETECTION_BASE: u32 = 9_000_000;
/// Link-health alerts are this plus one bit per finding (latency, loss, down…).
pub const LINK_HEALTH_BASE: u32 = 9_100_000;

/// The router's block set is full: a verdict could not be enforced.
pub const BLOCK_SET_FULL: u32 = 9_000_101;
/// The detector refused an uploaded model.
pub const MODEL_REFUSED: u32 = 9_000_102;
/// Settings from the status page were applied.
pub const SETTINGS_APPLIED: u32 = 9_000_103;
/// Settings from the status page were refused.
pub const SETTINGS_REFUSED: u32 = 9_000_104;
/// The detector loaded an uploaded model.
pub const MODEL_LOADED: u32 = 9_000_105;
/// A block was lifted (or was already gone) at the dashboard's request.
pub const UNBLOCKED: u32 = 9_000_106;
/// The router could not lift a block.
pub const UNBLOCK_FAILED: u32 = 9_000_107;
/// A stored model failed validation at start; the detector fell back to the
/// shipped one. (It shared 9000106 with [`UNBLOCKED`] before the catalogue.)
pub const MODEL_FALLBACK: u32 = 9_000_108;
/// The router's capture fell behind and it shed new flows from unseen
/// sources (one alert per overload episode).
pub const CAPTURE_OVERLOAD: u32 = 9_000_109;

/// Every system event: id and signature text.
pub const SYSTEM: [(u32, &str); 9] = [
    (BLOCK_SET_FULL, "GATEWARDEN SYSTEM block set full"),
    (MODEL_REFUSED, "GATEWARDEN SYSTEM model refused"),
    (SETTINGS_APPLIED, "GATEWARDEN SYSTEM settings applied"),
    (SETTINGS_REFUSED, "GATEWARDEN SYSTEM settings refused"),
    (MODEL_LOADED, "GATEWARDEN SYSTEM model loaded"),
    (UNBLOCKED, "GATEWARDEN SYSTEM block lifted"),
    (UNBLOCK_FAILED, "GATEWARDEN SYSTEM unblock failed"),
    (MODEL_FALLBACK, "GATEWARDEN SYSTEM stored model refused at start"),
    (CAPTURE_OVERLOAD, "GATEWARDEN SYSTEM capture overloaded, load shed"),
];

/// Every attack kind, in signature-id order (the same list as [`AttackKind::ALL`], kept once).
pub const KINDS: [AttackKind; 17] = AttackKind::ALL;

/// The signature id of a detection of `kind`.
pub fn signature_id(kind: AttackKind) -> u32 {
    DETECTION_BASE
        + match kind {
            AttackKind::PortScan => 1,
            AttackKind::HostSweep => 2,
            AttackKind::SynFlood => 3,
            AttackKind::UdpFlood => 4,
            AttackKind::IcmpFlood => 5,
            AttackKind::BruteForce => 6,
            AttackKind::Anomaly => 7,
            AttackKind::ChannelAbuse => 8,
            AttackKind::LinkHealth => 9,
            AttackKind::System => 10,
            AttackKind::SlowHttp => 11,
            AttackKind::Spoofing => 12,
            AttackKind::LanMapping => 13,
            AttackKind::SlowScan => 14,
            AttackKind::DistributedScan => 15,
            AttackKind::SlowGuessing => 16,
            AttackKind::TcpFlood => 17,
        }
}

/// The signature text of a detection of `kind`.
pub fn signature(kind: AttackKind) -> &'static str {
    match kind {
        AttackKind::PortScan => "GATEWARDEN SCAN vertical port scan",
        AttackKind::HostSweep => "GATEWARDEN SCAN horizontal host sweep",
        AttackKind::SynFlood => "GATEWARDEN DOS TCP SYN flood",
        AttackKind::UdpFlood => "GATEWARDEN DOS UDP flood",
        AttackKind::IcmpFlood => "GATEWARDEN DOS ICMP flood",
        AttackKind::BruteForce => "GATEWARDEN AUTH brute force",
        AttackKind::Anomaly => "GATEWARDEN ANOMALY device behaviour",
        AttackKind::ChannelAbuse => "GATEWARDEN BUS channel abuse",
        AttackKind::LinkHealth => "GATEWARDEN LINK health",
        AttackKind::System => "GATEWARDEN SYSTEM event",
        AttackKind::SlowHttp => "GATEWARDEN DOS slow HTTP (slowloris)",
        AttackKind::Spoofing => "GATEWARDEN SPOOF forged source address",
        AttackKind::LanMapping => "GATEWARDEN SCAN LAN mapping (ARP/neighbour discovery sweep)",
        AttackKind::SlowScan => "GATEWARDEN SCAN slow scan (minutes to hours)",
        AttackKind::DistributedScan => "GATEWARDEN SCAN distributed scan (many sources, one target)",
        AttackKind::SlowGuessing => "GATEWARDEN AUTH slow password guessing",
        AttackKind::TcpFlood => "GATEWARDEN DOS TCP flood outside any connection (ACK/RST/FIN)",
    }
}

/// The signature text of a system event id, if it is one.
pub fn system_signature(id: u32) -> Option<&'static str> {
    SYSTEM.iter().find(|(i, _)| *i == id).map(|(_, s)| *s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_two_events_share_an_id_and_each_stays_in_its_range() {
        let mut ids: Vec<u32> = KINDS.iter().map(|k| signature_id(*k)).collect();
        assert!(ids.iter().all(|i| (DETECTION_BASE + 1..DETECTION_BASE + 100).contains(i)), "{ids:?}");
        assert!(SYSTEM.iter().all(|(i, _)| (DETECTION_BASE + 100..LINK_HEALTH_BASE).contains(i)));
        ids.extend(SYSTEM.iter().map(|(i, _)| *i));
        let n = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), n, "a signature id is used twice");
        let mut names: Vec<&str> = KINDS.iter().map(|k| signature(*k)).chain(SYSTEM.iter().map(|(_, s)| *s)).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n, "a signature text is used twice");
    }

    #[test]
    fn every_kind_is_in_the_catalogue() {
        // A kind added to AttackKind but not to KINDS fails to compile in signature_id's match;
        // this catches one added to the match but not to KINDS.
        for k in KINDS {
            assert_eq!(KINDS.iter().filter(|x| **x == k).count(), 1, "{k:?}");
        }
        assert_eq!(signature_id(AttackKind::Spoofing), 9_000_012);
        assert_eq!(signature_id(AttackKind::LanMapping), 9_000_013);
        assert_eq!(signature_id(AttackKind::SlowScan), 9_000_014);
        assert_eq!(signature_id(AttackKind::DistributedScan), 9_000_015);
        assert_eq!(signature_id(AttackKind::SlowGuessing), 9_000_016);
    }
}
