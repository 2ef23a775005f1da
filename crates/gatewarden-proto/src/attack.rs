//! What an alert or verdict is about: the attack kinds, their names and
//! categories (the signature ids are in [`crate::signatures`]).

use serde::{Deserialize, Serialize};

/// What kind of attack or anomaly a verdict or alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttackKind {
    /// Many ports on one host.
    PortScan,
    /// One port on many hosts.
    HostSweep,
    /// Unanswered SYNs at a high rate.
    SynFlood,
    /// UDP at a high rate.
    UdpFlood,
    /// ICMP echo at a high rate.
    IcmpFlood,
    /// Repeated connection attempts to an authentication service.
    BruteForce,
    /// Traffic far outside the device's own baseline.
    Anomaly,
    /// Problems on the bus itself (forged, replayed or flooding messages).
    ChannelAbuse,
    /// Link health between nodes (latency, loss, rate drop).
    LinkHealth,
    /// Operational events (model refused, block set full, …).
    System,
    /// Many slow, nearly idle connections held open to a web server (slowloris).
    SlowHttp,
    /// A LAN frame whose source address does not belong to its source MAC
    /// (forged sources): the MAC is contained, the forged addresses never blocked.
    Spoofing,
    /// A LAN device asking (ARP requests, IPv6 neighbour solicitations) for
    /// many addresses of its subnet that mostly do not exist: mapping the
    /// LAN (`nmap -sn`, `arp-scan`), which the router's capture sees as
    /// frames, not flows.
    LanMapping,
    /// One source probing many ports or hosts too slowly for `PortScan`/`HostSweep`
    /// (over 1, 15 or 60 minutes: nmap -T1/-T2, `--scan-delay`).
    SlowScan,
    /// Many sources, each a few unanswered probes, to one host or subnet.
    DistributedScan,
    /// Repeated short failed sessions to login services over an hour (one try a minute).
    SlowGuessing,
    /// TCP packets outside any connection at a high rate: ACK, RST, FIN or
    /// other-flag floods (`hping3 -A/-R/-F`) that never send a SYN, so the
    /// SYN-flood rule never counts them. Last, so the bus numbering of the
    /// older kinds is unchanged.
    TcpFlood,
}

impl AttackKind {
    /// The snake_case name used in JSON and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            AttackKind::PortScan => "port_scan",
            AttackKind::HostSweep => "host_sweep",
            AttackKind::SynFlood => "syn_flood",
            AttackKind::UdpFlood => "udp_flood",
            AttackKind::IcmpFlood => "icmp_flood",
            AttackKind::BruteForce => "brute_force",
            AttackKind::Anomaly => "anomaly",
            AttackKind::SlowHttp => "slow_http",
            AttackKind::Spoofing => "spoofing",
            AttackKind::LanMapping => "lan_mapping",
            AttackKind::SlowScan => "slow_scan",
            AttackKind::DistributedScan => "distributed_scan",
            AttackKind::SlowGuessing => "slow_guessing",
            AttackKind::TcpFlood => "tcp_flood",
            AttackKind::ChannelAbuse => "channel_abuse",
            AttackKind::LinkHealth => "link_health",
            AttackKind::System => "system",
        }
    }
}

/// Which detector produced a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Origin {
    /// The explainable thresholds in `heuristics/`.
    Heuristics,
    /// The TFLite classifier.
    Model,
    /// The per-device baseline.
    Baseline,
}

impl Origin {
    /// Lower-case name for metrics labels and reasons.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Heuristics => "heuristics",
            Origin::Model => "model",
            Origin::Baseline => "baseline",
        }
    }
}

impl AttackKind {
    /// Every kind, so metrics can be registered at zero for each before the
    /// first alert (a dashboard shows 0, not "no data").
    pub const ALL: [AttackKind; 17] = [
        AttackKind::PortScan,
        AttackKind::HostSweep,
        AttackKind::SynFlood,
        AttackKind::UdpFlood,
        AttackKind::IcmpFlood,
        AttackKind::BruteForce,
        AttackKind::Anomaly,
        AttackKind::ChannelAbuse,
        AttackKind::LinkHealth,
        AttackKind::System,
        AttackKind::SlowHttp,
        AttackKind::Spoofing,
        AttackKind::LanMapping,
        AttackKind::SlowScan,
        AttackKind::DistributedScan,
        AttackKind::SlowGuessing,
        AttackKind::TcpFlood,
    ];
}

impl Origin {
    /// Every detector origin (metrics are registered at zero for each).
    pub const ALL: [Origin; 3] = [Origin::Heuristics, Origin::Model, Origin::Baseline];
}

#[cfg(test)]
mod all_tests {
    use super::*;

    /// A new kind must join [`AttackKind::ALL`]: this match stops compiling
    /// without a number for it, and then ALL misses that number.
    fn number(k: AttackKind) -> usize {
        match k {
            AttackKind::PortScan => 0,
            AttackKind::HostSweep => 1,
            AttackKind::SynFlood => 2,
            AttackKind::UdpFlood => 3,
            AttackKind::IcmpFlood => 4,
            AttackKind::BruteForce => 5,
            AttackKind::Anomaly => 6,
            AttackKind::ChannelAbuse => 7,
            AttackKind::LinkHealth => 8,
            AttackKind::System => 9,
            AttackKind::SlowHttp => 10,
            AttackKind::Spoofing => 11,
            AttackKind::LanMapping => 12,
            AttackKind::SlowScan => 13,
            AttackKind::DistributedScan => 14,
            AttackKind::SlowGuessing => 15,
            AttackKind::TcpFlood => 16,
        }
    }

    #[test]
    fn all_lists_every_kind_once() {
        let seen: std::collections::BTreeSet<usize> = AttackKind::ALL.iter().map(|k| number(*k)).collect();
        assert_eq!(seen, (0..17).collect(), "AttackKind::ALL must list every kind once");
    }
}
