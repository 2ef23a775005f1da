//! The response policy: what a finding does — block its source, raise an
//! alert, or nothing — decided between detection and enforcement
//! (`[response]` in the config, the Settings page).
//!
//! A block needs hard evidence: an explainable rule whose numbers an attack
//! makes and ordinary devices do not (a scan whose probes mostly go
//! unanswered, a flood above its rate, repeated short sessions to a login,
//! many idle connections to a web server), or two independent detectors
//! agreeing. The model alone or the baseline alone raises an alert and blocks
//! nothing: each is wrong about some ordinary device somewhere (issue #15: a
//! firmware download and a camera stream were blocked as floods). Every
//! decision names its [`Rule`], which the alert's reason and
//! `gatewarden_response_total{kind,action,rule}` carry.

use serde::{Deserialize, Serialize};

use crate::heuristics::Detection;
use gatewarden_proto::attack::Origin;
use gatewarden_proto::messages::AttackKind;

/// What the gateway does about one kind of finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Block the source when the evidence rule for its kind holds; an alert otherwise.
    Block,
    /// Raise an alert; never block.
    Alert,
    /// Neither block nor alert; only counted in `/metrics`.
    Ignore,
}

impl Action {
    /// The lower-case name used in the config, metrics and reasons.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Block => "block",
            Action::Alert => "alert",
            Action::Ignore => "ignore",
        }
    }

    /// Parses the config spelling (`block`, `alert`, `ignore`).
    pub fn parse(s: &str) -> Option<Action> {
        match s.trim() {
            "block" => Some(Action::Block),
            "alert" => Some(Action::Alert),
            "ignore" => Some(Action::Ignore),
            _ => None,
        }
    }
}

/// `[response]`: per attack kind, what a finding does, and the evidence a block needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResponseConfig {
    /// Vertical port scans (`block`, `alert` or `ignore`).
    pub port_scan: Action,
    /// Horizontal sweeps of one port across many hosts.
    pub host_sweep: Action,
    /// SYN floods from one source.
    pub syn_flood: Action,
    /// TCP floods outside any connection (ACK, RST, FIN…) from one source.
    pub tcp_flood: Action,
    /// UDP floods from one source.
    pub udp_flood: Action,
    /// ICMP floods from one source.
    pub icmp_flood: Action,
    /// Password guessing against a login service.
    pub brute_force: Action,
    /// Slow HTTP (slowloris).
    pub slow_http: Action,
    /// Behaviour far outside a device's baseline (the baseline and the model find these).
    pub anomaly: Action,
    /// Slow scans (one source, many ports or hosts over minutes): blocks like a scan when its
    /// probes were mostly unanswered (`scan_min_unanswered_pct`).
    pub slow_scan: Action,
    /// Distributed scans (many sources, one target): `alert` by default; `block` blocks only
    /// the participants proven real (they acknowledged what they were sent), never the rest.
    pub distributed_scan: Action,
    /// Slow password guessing over the hour: `alert` by default, because a flow record cannot
    /// tell a rejected login from a short scripted one (`ssh host cmd`); `block` blocks the source.
    pub slow_guessing: Action,
    /// What a finding of the model by itself does: `alert` (default) or
    /// `ignore`; `block` lets the classifier block on its own (replaces
    /// `detector.model_alone_blocks`).
    pub model_alone: Action,
    /// What a finding of the per-device baseline by itself does: `alert`
    /// (default), `ignore`, or `block`. It covers uploads to a host the
    /// device never used (exfiltration to a new server).
    pub baseline_alone: Action,
    /// What the baseline's *upload surge to hosts the device already uses*
    /// does by itself: `ignore` by default (counted in /metrics). Backups, speed
    /// tests and cloud uploads look exactly like that, and volume alone cannot
    /// tell them from exfiltration to a known host: the 60-minute soak of the
    /// benign corpus alerted on a NAS backup and a TV's speed test this way.
    /// With the model agreeing it still blocks (`two_detectors_agree`).
    pub baseline_surge_alone: Action,
    /// What a `udp_flood` finding does whose own numbers say media stream
    /// (rule `udp_stream_full_packets`): full-size packets (mean ≥
    /// [`UDP_STREAM_MIN_MEAN_BYTES`]) to fewer than [`UDP_FLOOD_MIN_PORTS`] ports of
    /// one target, below [`UDP_FLOOD_RATE_FACTOR`] × `detector.udp_flood_pps`.
    /// `ignore` by default (counted in /metrics): a camera streaming video at
    /// 7–8 Mbit/s crosses the 1000 packets/s flood rate at every stream start
    /// (benign corpus seeds 27 and 33), and each alert would be a false one.
    /// `alert` shows them; `block` restores the rate-only rule. The model
    /// agreeing does not turn it into a block (it called a camera stream a flood).
    /// The same key decides a `udp_flood` finding that is the acknowledgements of
    /// UDP downloads (rule `udp_download_acks`): the other side of a stream.
    pub udp_stream: Action,
    /// Share of a scan's or sweep's probes, in percent, that must have gone
    /// unanswered for it to block: a device talking to many services of a
    /// host that answers them is not scanning.
    pub scan_min_unanswered_pct: f64,
    /// Share of a *narrow* sweep's hosts, in percent, that must never have answered
    /// for it to block: a sweep of fewer than twice the hosts that make one (the
    /// finding's `sweep_min_hosts`: `detector.sweep_distinct_hosts`, or
    /// `slow_scan_distinct_hosts` for a slow scan over hosts). Below it, such a sweep
    /// alerts (rule `narrow_sweep_partly_answered`) and blocks when it widens. A real
    /// sweep probes mostly empty addresses (a home /24, random internet hosts: ≥ 95 %
    /// silent) and is blocked at once; a client whose peers are partly gone (a Tailscale
    /// node pinging candidate endpoints, a laptop waking to half-dead servers) sends about
    /// twenty silent probes at 50–80 % and no more.
    pub narrow_sweep_min_unanswered_pct: f64,
}

impl Default for ResponseConfig {
    fn default() -> Self {
        ResponseConfig {
            port_scan: Action::Block,
            host_sweep: Action::Block,
            syn_flood: Action::Block,
            tcp_flood: Action::Block,
            udp_flood: Action::Block,
            icmp_flood: Action::Block,
            brute_force: Action::Block,
            slow_http: Action::Block,
            anomaly: Action::Block,
            slow_scan: Action::Block,
            distributed_scan: Action::Alert,
            slow_guessing: Action::Alert,
            model_alone: Action::Alert,
            baseline_alone: Action::Alert,
            baseline_surge_alone: Action::Ignore,
            udp_stream: Action::Ignore,
            scan_min_unanswered_pct: 50.0,
            narrow_sweep_min_unanswered_pct: 90.0,
        }
    }
}

/// The kinds `[response]` has a key for, in the order the Settings page lists them.
pub const KINDS: [AttackKind; 12] = [
    AttackKind::PortScan,
    AttackKind::HostSweep,
    AttackKind::SynFlood,
    AttackKind::TcpFlood,
    AttackKind::UdpFlood,
    AttackKind::IcmpFlood,
    AttackKind::BruteForce,
    AttackKind::SlowHttp,
    AttackKind::Anomaly,
    AttackKind::SlowScan,
    AttackKind::DistributedScan,
    AttackKind::SlowGuessing,
];

impl ResponseConfig {
    /// The configured action for `kind`; kinds without a key (system events) alert.
    pub fn action(&self, kind: AttackKind) -> Action {
        match kind {
            AttackKind::PortScan => self.port_scan,
            AttackKind::HostSweep => self.host_sweep,
            AttackKind::SynFlood => self.syn_flood,
            AttackKind::TcpFlood => self.tcp_flood,
            AttackKind::UdpFlood => self.udp_flood,
            AttackKind::IcmpFlood => self.icmp_flood,
            AttackKind::BruteForce => self.brute_force,
            AttackKind::SlowHttp => self.slow_http,
            AttackKind::Anomaly => self.anomaly,
            AttackKind::SlowScan => self.slow_scan,
            AttackKind::DistributedScan => self.distributed_scan,
            AttackKind::SlowGuessing => self.slow_guessing,
            _ => Action::Alert,
        }
    }

    /// Sets the action for `kind` (the Settings page); false for a kind without a key.
    pub fn set_action(&mut self, kind: AttackKind, action: Action) -> bool {
        let slot = match kind {
            AttackKind::PortScan => &mut self.port_scan,
            AttackKind::HostSweep => &mut self.host_sweep,
            AttackKind::SynFlood => &mut self.syn_flood,
            AttackKind::TcpFlood => &mut self.tcp_flood,
            AttackKind::UdpFlood => &mut self.udp_flood,
            AttackKind::IcmpFlood => &mut self.icmp_flood,
            AttackKind::BruteForce => &mut self.brute_force,
            AttackKind::SlowHttp => &mut self.slow_http,
            AttackKind::Anomaly => &mut self.anomaly,
            AttackKind::SlowScan => &mut self.slow_scan,
            AttackKind::DistributedScan => &mut self.distributed_scan,
            AttackKind::SlowGuessing => &mut self.slow_guessing,
            _ => return false,
        };
        *slot = action;
        true
    }

    /// Whether `d` is a sweep over hosts (`host_sweep`, or `slow_scan` spread over hosts:
    /// the finding carries `sweep_min_hosts`) narrower than twice the hosts that make one,
    /// whose hosts were not almost all silent (`narrow_sweep_min_unanswered_pct`), on the
    /// swept port or among all the source's attempts over the protocol, from a source
    /// that reached fewer than twice that many silent hosts in the hour. A finding
    /// without those numbers (an older detector, no long-horizon history) is not. Such a finding alerts (rule
    /// `narrow_sweep_partly_answered`) and must not keep the slow rules off its source.
    pub fn narrow_partly_answered_sweep(&self, d: &Detection) -> bool {
        if !matches!(d.kind, AttackKind::HostSweep | AttackKind::SlowScan) {
            return false;
        }
        // The share among everything the source did over the protocol too, when the finding
        // has it: a VPN node's silent candidate endpoints are on one port, the answers from
        // its peers' public endpoints on others.
        let source = d.evidence_value("source_unanswered_pct").unwrap_or(100.0);
        // Both shares can be padded with answered traffic the source controls; what cannot
        // be is the silent hosts it reached over the hour (`silent_hosts_hour`, from the
        // long-horizon history, on every port): a client re-pinging its few dead peers stays
        // narrow, a padded sweep paced under the window's count does not for long. Without
        // that number a sweep is not narrow.
        let hour = d.evidence_value("silent_hosts_hour");
        match (
            d.evidence_value("sweep_min_hosts"),
            d.evidence_value("distinct_hosts"),
            d.evidence_value("unanswered_pct"),
            hour,
        ) {
            (Some(min), Some(hosts), Some(unanswered), Some(hour)) => {
                hosts < 2.0 * min && hour < 2.0 * min && unanswered.min(source) < self.narrow_sweep_min_unanswered_pct
            }
            _ => false,
        }
    }

    /// Problems as (key, value, what it may be); empty when the section is usable.
    pub fn problems(&self) -> Vec<(&'static str, String, String)> {
        let mut out = Vec::new();
        for (key, p) in [
            ("response.scan_min_unanswered_pct", self.scan_min_unanswered_pct),
            ("response.narrow_sweep_min_unanswered_pct", self.narrow_sweep_min_unanswered_pct),
        ] {
            if !(0.0..=100.0).contains(&p) {
                out.push((key, p.to_string(), "a percentage from 0 to 100".to_string()));
            }
        }
        out
    }
}

/// Defined beside the flood rule, which also reads them (`heuristics::floods`: its
/// one report per window keeps stream look-alikes apart from floods).
pub use crate::heuristics::{
    looks_like_media_stream, UDP_FLOOD_MIN_PORTS, UDP_FLOOD_RATE_FACTOR, UDP_STREAM_MIN_MEAN_BYTES,
};

/// A rule of the policy: the name alerts, metrics and docs use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// A port scan or sweep whose probes mostly went unanswered.
    ScanUnanswered,
    /// A vertical scan whose probes were mostly answered: not enough to block.
    ScanAnswered,
    /// A sweep of few hosts (under twice the count that makes one) some of which
    /// answered: what a client whose peers are partly gone sends; alerted, blocked
    /// once it widens or its hosts are almost all silent.
    NarrowSweepPartlyAnswered,
    /// A sweep of one port across hosts that mostly answered: what a hub
    /// polling its devices or a PC browsing does; counted, not alerted.
    SweepAnswered,
    /// One source above a flood rate (for SYN floods: unanswered handshakes).
    FloodRate,
    /// A UDP flood finding that looks like one media stream: full-size packets to
    /// few ports of one target at a rate one stream reaches (see [`ResponseConfig::udp_stream`]).
    UdpStreamFullPackets,
    /// A UDP flood finding whose rate comes from acknowledging downloads: without the
    /// packets of flows whose targets send the source full-size data (QUIC, WireGuard,
    /// uTP), the source is below `detector.udp_flood_pps` (see [`ResponseConfig::udp_stream`]).
    UdpDownloadAcks,
    /// Repeated short sessions (or failed attempts) to one login service.
    RepeatedSessions,
    /// Many idle, unanswered connections held open to one web server.
    IdleConnections,
    /// More requests held unanswered at once to one web server than any client holds
    /// (`detector.slow_http_concurrent`): slowloris found while it opens its connections.
    UnansweredRequests,
    /// Two independent detectors found the same source.
    DetectorsAgree,
    /// The model by itself.
    ModelAlone,
    /// The per-device baseline by itself.
    BaselineAlone,
    /// The baseline's upload surge to hosts the device already uses, by itself.
    BaselineSurgeAlone,
    /// An attack with many (likely forged) sources: no one source to block; the meters act.
    NoSingleSource,
    /// `[response]` says `alert` for this kind.
    KindAlerts,
    /// `[response]` says `ignore` for this kind.
    KindIgnored,
    /// A distributed scan: many sources, each a few probes; with `block`, only those proven real.
    ProvenParticipants,
    /// Fusion's summary of new findings the verdict rate limit dropped (`detector.max_verdicts_per_s`).
    VerdictBudget,
    /// A scan by the addresses of one IPv6 /64 counted as one source (a device taking a fresh
    /// address for every probe): no one address to block, and the LAN's devices share the /64.
    Ipv6PrefixAlerts,
}

impl Rule {
    /// The name in alerts, `/metrics` and docs/DETECTION.md.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::ScanUnanswered => "scan_mostly_unanswered",
            Rule::ScanAnswered => "scan_mostly_answered",
            Rule::NarrowSweepPartlyAnswered => "narrow_sweep_partly_answered",
            Rule::SweepAnswered => "sweep_mostly_answered",
            Rule::FloodRate => "flood_above_rate",
            Rule::UdpStreamFullPackets => "udp_stream_full_packets",
            Rule::UdpDownloadAcks => "udp_download_acks",
            Rule::RepeatedSessions => "repeated_login_sessions",
            Rule::IdleConnections => "many_idle_connections",
            Rule::UnansweredRequests => "many_unanswered_requests",
            Rule::DetectorsAgree => "two_detectors_agree",
            Rule::ModelAlone => "model_alone",
            Rule::BaselineAlone => "baseline_alone",
            Rule::BaselineSurgeAlone => "baseline_surge_alone",
            Rule::NoSingleSource => "no_single_source",
            Rule::KindAlerts => "kind_set_to_alert",
            Rule::KindIgnored => "kind_set_to_ignore",
            Rule::ProvenParticipants => "proven_participants_only",
            Rule::VerdictBudget => "verdict_budget_exceeded",
            Rule::Ipv6PrefixAlerts => "ipv6_prefix_alerts",
        }
    }

    /// What the rule means, for the alert's reason.
    pub fn explain(self) -> &'static str {
        match self {
            Rule::ScanUnanswered => "a scan whose probes mostly went unanswered",
            Rule::ScanAnswered => "the probes were mostly answered, which ordinary clients also do",
            Rule::NarrowSweepPartlyAnswered => {
                "few hosts, some of which answered: what a client with some of its peers gone sends \
                 (a VPN node's candidate endpoints, a laptop waking); blocked once it widens to twice \
                 the hosts or its hosts are almost all silent"
            }
            Rule::SweepAnswered => {
                "one port on many hosts that mostly answered: a hub polling its devices or a browser, not a sweep"
            }
            Rule::FloodRate => "one source above its flood rate",
            Rule::UdpStreamFullPackets => {
                "full-size UDP packets to few ports of one target at a rate one media stream reaches: \
                 what a camera's video does; a UDP flood blocks on small packets, many ports or 10× its rate"
            }
            Rule::UdpDownloadAcks => {
                "the packets acknowledge downloads: their targets send the source full-size data, \
                 and without them the source is below its UDP flood rate (a QUIC, VPN or uTP download)"
            }
            Rule::RepeatedSessions => "repeated short sessions to one login service",
            Rule::IdleConnections => "many idle connections held open to one web server",
            Rule::UnansweredRequests => {
                "more requests held unanswered at once to one web server than any client holds"
            }
            Rule::DetectorsAgree => "two independent detectors agree",
            Rule::ModelAlone => "the model alone raises an alert and blocks nothing",
            Rule::BaselineAlone => "the baseline alone raises an alert and blocks nothing",
            Rule::BaselineSurgeAlone => {
                "an upload surge to hosts the device already uses, found by the baseline alone: what backups and speed tests do"
            }
            Rule::NoSingleSource => "many forged sources: the SYN meter limits them, no one is blocked",
            Rule::KindAlerts => "[response] says alert for this kind",
            Rule::KindIgnored => "[response] says ignore for this kind",
            Rule::ProvenParticipants => {
                "many sources, each a few probes: only those proven real (they acknowledged what they were sent) may be blocked"
            }
            Rule::VerdictBudget => {
                "more new findings than the verdict budget lets through: they were dropped and counted \
                 (gatewarden_verdicts_rate_limited_total), nobody is blocked for them"
            }
            Rule::Ipv6PrefixAlerts => {
                "probes from many addresses of one IPv6 /64, counted as one source: no one address to block \
                 (the LAN's devices share the /64), so it is alerted"
            }
        }
    }
}

/// What the policy decided about one finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Block (with an alert), alert, or nothing.
    pub action: Action,
    /// The rule that decided.
    pub rule: Rule,
}

impl Decision {
    /// The sentence appended to the alert's reason: the action and the rule, by name.
    pub fn sentence(&self) -> String {
        let what = match self.action {
            Action::Block => "blocked",
            Action::Alert => "alert only",
            Action::Ignore => "ignored",
        };
        format!("{what}: policy rule {} ({})", self.rule.as_str(), self.rule.explain())
    }
}

/// The rule an alert's reason names ("… policy rule NAME (…)"), for the
/// EVE writer's structured `gatewarden.rule`; only names of [`Rule`] count.
pub fn rule_in_reason(reason: &str) -> Option<&'static str> {
    let name = reason.rsplit_once("policy rule ")?.1.split([' ', ';', ')']).next()?;
    ALL_RULES.iter().map(|r| r.as_str()).find(|r| *r == name)
}

/// Every rule, for docs, metrics and parsing.
pub const ALL_RULES: [Rule; 20] = [
    Rule::ScanUnanswered,
    Rule::ScanAnswered,
    Rule::NarrowSweepPartlyAnswered,
    Rule::SweepAnswered,
    Rule::FloodRate,
    Rule::UdpStreamFullPackets,
    Rule::UdpDownloadAcks,
    Rule::RepeatedSessions,
    Rule::IdleConnections,
    Rule::UnansweredRequests,
    Rule::DetectorsAgree,
    Rule::ModelAlone,
    Rule::BaselineAlone,
    Rule::BaselineSurgeAlone,
    Rule::NoSingleSource,
    Rule::KindAlerts,
    Rule::KindIgnored,
    Rule::ProvenParticipants,
    Rule::VerdictBudget,
    Rule::Ipv6PrefixAlerts,
];

/// Whether a heuristic `udp_flood` finding's rate comes from acknowledging downloads:
/// without the packets of flows whose targets send the source full-size data, it is
/// below its threshold. A finding without the numbers (an older detector) counts as a flood.
fn acknowledges_downloads(d: &Detection) -> bool {
    let rest_below = match (d.evidence_value("pps_without_download_acks"), d.evidence_value("threshold_pps")) {
        (Some(rest), Some(t)) => rest < t,
        _ => false,
    };
    d.kind == AttackKind::UdpFlood && rest_below
}

/// The policy in force: `[response]` plus the legacy `detector.model_alone_blocks`.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponsePolicy {
    cfg: ResponseConfig,
}

impl Default for ResponsePolicy {
    fn default() -> Self {
        ResponsePolicy::new(ResponseConfig::default(), false)
    }
}

impl ResponsePolicy {
    /// The policy from `[response]`; `model_alone_blocks` (the old
    /// `detector.model_alone_blocks = true`) still means `model_alone = "block"`.
    pub fn new(mut cfg: ResponseConfig, model_alone_blocks: bool) -> ResponsePolicy {
        if model_alone_blocks {
            cfg.model_alone = Action::Block;
        }
        ResponsePolicy { cfg }
    }

    /// The configuration in force.
    pub fn config(&self) -> &ResponseConfig {
        &self.cfg
    }

    /// Decides about one fused finding found by `origins` (first: the detector
    /// that raised it; later ones: detectors that agreed).
    pub fn decide(&self, d: &Detection, origins: &[Origin]) -> Decision {
        let kind_action = self.cfg.action(d.kind);
        if kind_action == Action::Ignore {
            return Decision { action: Action::Ignore, rule: Rule::KindIgnored };
        }
        let cap = |rule: Rule, wanted: Action| -> Decision {
            // The kind's action is a ceiling: `alert` never blocks.
            if kind_action == Action::Alert && wanted == Action::Block {
                Decision { action: Action::Alert, rule: Rule::KindAlerts }
            } else {
                Decision { action: wanted, rule }
            }
        };
        if d.source.is_none() && d.kind == AttackKind::DistributedScan {
            // The stage blocks the proven participants when this says block (see DetectorStage).
            return Decision { action: kind_action, rule: Rule::ProvenParticipants };
        }
        if d.source.is_none() {
            return cap(Rule::NoSingleSource, Action::Alert);
        }
        if d.evidence_value("ipv6_prefix_len").is_some() {
            return cap(Rule::Ipv6PrefixAlerts, Action::Alert);
        }
        let mut distinct: Vec<Origin> = origins.to_vec();
        distinct.sort();
        distinct.dedup();
        // A scan or sweep's own numbers outrank agreement: probes that were
        // mostly answered are what ordinary clients send, whatever the model says.
        let answered_probes = matches!(d.kind, AttackKind::PortScan | AttackKind::HostSweep | AttackKind::SlowScan)
            && distinct.contains(&Origin::Heuristics)
            && d.evidence_value("unanswered_pct").is_some_and(|u| u < self.cfg.scan_min_unanswered_pct);
        if answered_probes {
            return if d.kind == AttackKind::HostSweep {
                Decision { action: Action::Ignore, rule: Rule::SweepAnswered }
            } else {
                cap(Rule::ScanAnswered, Action::Alert)
            };
        }
        // And a narrow sweep's: a few dozen hosts with some answering is what a client whose
        // peers are partly gone sends, whatever else agrees; it blocks once it widens.
        if distinct.contains(&Origin::Heuristics) && self.cfg.narrow_partly_answered_sweep(d) {
            return cap(Rule::NarrowSweepPartlyAnswered, Action::Alert);
        }
        // Likewise a UDP flood's: full-size packets to few ports at a stream's rate
        // are a media stream, whatever the model says (it called a camera a flood).
        if distinct.contains(&Origin::Heuristics) && looks_like_media_stream(d) {
            return cap(Rule::UdpStreamFullPackets, self.cfg.udp_stream);
        }
        // And the other side of a stream: a receiver's acknowledgements, clocked by the
        // data its targets send it, which no flood victim sends its flooder. Since session 27
        // the heuristics make no such finding at all (floods.rs returns None below the
        // threshold without them); this stays as the backstop should a finding carry it.
        if distinct.contains(&Origin::Heuristics) && acknowledges_downloads(d) {
            return cap(Rule::UdpDownloadAcks, self.cfg.udp_stream);
        }
        if distinct.len() >= 2 {
            return cap(Rule::DetectorsAgree, Action::Block);
        }
        match distinct.first() {
            Some(Origin::Model) => cap(Rule::ModelAlone, self.cfg.model_alone),
            // A surge to known hosts carries no new-host evidence (see detect/baseline.rs).
            Some(Origin::Baseline) if d.evidence_value("bytes_to_new_host_1s").is_none() => {
                cap(Rule::BaselineSurgeAlone, self.cfg.baseline_surge_alone)
            }
            Some(Origin::Baseline) => cap(Rule::BaselineAlone, self.cfg.baseline_alone),
            Some(Origin::Heuristics) | None => match d.kind {
                AttackKind::PortScan | AttackKind::HostSweep | AttackKind::SlowScan => {
                    // A finding without the number (an older detector) counts as unanswered.
                    let unanswered = d.evidence_value("unanswered_pct").unwrap_or(100.0);
                    if unanswered >= self.cfg.scan_min_unanswered_pct {
                        cap(Rule::ScanUnanswered, Action::Block)
                    } else {
                        cap(Rule::ScanAnswered, Action::Alert)
                    }
                }
                AttackKind::SynFlood | AttackKind::TcpFlood | AttackKind::UdpFlood | AttackKind::IcmpFlood => {
                    cap(Rule::FloodRate, Action::Block)
                }
                AttackKind::BruteForce | AttackKind::SlowGuessing => cap(Rule::RepeatedSessions, Action::Block),
                // Found early, from the count of unanswered requests, or late, from their age.
                AttackKind::SlowHttp if d.evidence_value("unanswered_requests").is_some() => {
                    cap(Rule::UnansweredRequests, Action::Block)
                }
                AttackKind::SlowHttp => cap(Rule::IdleConnections, Action::Block),
                // No heuristic raises other kinds; if one ever does, it alerts.
                _ => cap(Rule::KindAlerts, Action::Alert),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every rule's name is found in a reason (the EVE writer's `gatewarden.rule`);
    /// `sweep_mostly_answered` and `baseline_surge_alone` were missing from the list.
    #[test]
    fn every_rule_is_named_in_reasons() {
        for r in ALL_RULES {
            assert_eq!(rule_in_reason(&format!("… ; alert only: policy rule {} (why)", r.as_str())), Some(r.as_str()));
        }
        for name in ["sweep_mostly_answered", "baseline_surge_alone", "udp_stream_full_packets", "udp_download_acks"] {
            assert!(ALL_RULES.iter().any(|r| r.as_str() == name), "{name}");
        }
    }
    use gatewarden_proto::messages::Proto;

    fn det(kind: AttackKind, evidence: &[(&str, f64)]) -> Detection {
        Detection {
            source: Some("192.0.2.66".parse().unwrap()),
            target: Some("198.51.100.10".parse().unwrap()),
            port: 22,
            proto: Some(Proto::Tcp),
            kind,
            confidence: 0.9,
            reason: "x".into(),
            evidence: evidence.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
            ts_ns: 1,
            flow_id: 1,
        }
    }

    fn decide(p: &ResponsePolicy, kind: AttackKind, ev: &[(&str, f64)], origins: &[Origin]) -> (Action, &'static str) {
        let d = p.decide(&det(kind, ev), origins);
        (d.action, d.rule.as_str())
    }

    /// The long-horizon kinds (issue #17): a slow scan blocks like a scan on its unanswered share,
    /// slow guessing alerts (a flow cannot tell a failed login from a short scripted one), a
    /// distributed scan alerts, and with `block` names the rule that blocks proven participants only.
    #[test]
    fn long_horizon_defaults() {
        let p = ResponsePolicy::default();
        let h = [Origin::Heuristics];
        use Action::*;
        assert_eq!(
            decide(&p, AttackKind::SlowScan, &[("unanswered_pct", 100.0)], &h),
            (Block, "scan_mostly_unanswered")
        );
        assert_eq!(decide(&p, AttackKind::SlowScan, &[("unanswered_pct", 30.0)], &h), (Alert, "scan_mostly_answered"));
        assert_eq!(decide(&p, AttackKind::SlowGuessing, &[], &h), (Alert, "kind_set_to_alert"));
        let mut d = det(AttackKind::DistributedScan, &[("sources", 50.0)]);
        d.source = None;
        let got = p.decide(&d, &h);
        assert_eq!((got.action, got.rule.as_str()), (Alert, "proven_participants_only"));
        let mut cfg = ResponseConfig::default();
        assert!(cfg.set_action(AttackKind::DistributedScan, Block));
        assert!(cfg.set_action(AttackKind::SlowGuessing, Block));
        let p = ResponsePolicy::new(cfg, false);
        let got = p.decide(&d, &h);
        assert_eq!((got.action, got.rule.as_str()), (Block, "proven_participants_only"));
        assert_eq!(decide(&p, AttackKind::SlowGuessing, &[], &h), (Block, "repeated_login_sessions"));
    }

    #[test]
    fn each_default_rule() {
        let p = ResponsePolicy::default();
        let h = [Origin::Heuristics];
        use Action::*;
        assert_eq!(
            decide(&p, AttackKind::PortScan, &[("unanswered_pct", 98.0)], &h),
            (Block, "scan_mostly_unanswered")
        );
        assert_eq!(
            decide(&p, AttackKind::HostSweep, &[("unanswered_pct", 60.0)], &h),
            (Block, "scan_mostly_unanswered")
        );
        assert_eq!(decide(&p, AttackKind::PortScan, &[("unanswered_pct", 10.0)], &h), (Alert, "scan_mostly_answered"));
        // A sweep whose hosts answer (a hub polling 30 devices, a PC browsing) is
        // not alerted, and the model agreeing does not turn it into a block.
        assert_eq!(
            decide(&p, AttackKind::HostSweep, &[("unanswered_pct", 20.0)], &h),
            (Ignore, "sweep_mostly_answered")
        );
        assert_eq!(
            decide(&p, AttackKind::HostSweep, &[("unanswered_pct", 20.0)], &[Origin::Heuristics, Origin::Model]),
            (Ignore, "sweep_mostly_answered")
        );
        assert_eq!(
            decide(&p, AttackKind::PortScan, &[("unanswered_pct", 10.0)], &[Origin::Heuristics, Origin::Model]),
            (Alert, "scan_mostly_answered")
        );
        for k in [AttackKind::SynFlood, AttackKind::TcpFlood, AttackKind::UdpFlood, AttackKind::IcmpFlood] {
            assert_eq!(decide(&p, k, &[("pps", 900.0)], &h), (Block, "flood_above_rate"));
        }
        assert_eq!(decide(&p, AttackKind::BruteForce, &[("sessions", 9.0)], &h), (Block, "repeated_login_sessions"));
        assert_eq!(decide(&p, AttackKind::SlowHttp, &[], &h), (Block, "many_idle_connections"));
        assert_eq!(
            decide(&p, AttackKind::SlowHttp, &[("unanswered_requests", 16.0)], &h),
            (Block, "many_unanswered_requests")
        );
        assert_eq!(
            rule_in_reason("…; blocked: policy rule many_unanswered_requests (…)"),
            Some("many_unanswered_requests")
        );
        // The model alone and the baseline alone alert.
        assert_eq!(decide(&p, AttackKind::SynFlood, &[], &[Origin::Model]), (Alert, "model_alone"));
        let new_host = [("bytes_to_new_host_1s", 263_000.0)];
        assert_eq!(decide(&p, AttackKind::Anomaly, &new_host, &[Origin::Baseline]), (Alert, "baseline_alone"));
        // An upload surge to hosts the device already uses (a backup, a speed test): counted only.
        assert_eq!(
            decide(&p, AttackKind::Anomaly, &[("upload_bytes_1s", 3_800_000.0)], &[Origin::Baseline]),
            (Ignore, "baseline_surge_alone")
        );
        assert_eq!(
            decide(&p, AttackKind::Anomaly, &[("upload_bytes_1s", 3_800_000.0)], &[Origin::Baseline, Origin::Model]),
            (Block, "two_detectors_agree")
        );
        // Two detectors agreeing block, even on a kind no rule covers by itself.
        assert_eq!(
            decide(&p, AttackKind::Anomaly, &[], &[Origin::Baseline, Origin::Model]),
            (Block, "two_detectors_agree")
        );
        // The same detector twice is not agreement.
        assert_eq!(
            decide(&p, AttackKind::Anomaly, &new_host, &[Origin::Baseline, Origin::Baseline]),
            (Alert, "baseline_alone")
        );
        // A flood with no single source: nobody to block.
        let mut d = det(AttackKind::SynFlood, &[]);
        d.source = None;
        assert_eq!(p.decide(&d, &h).rule, Rule::NoSingleSource);
        assert_eq!(p.decide(&d, &h).action, Alert);
    }

    #[test]
    fn a_udp_flood_blocks_on_small_packets_many_ports_or_ten_times_its_rate_not_on_a_media_stream() {
        let p = ResponsePolicy::default();
        let h = [Origin::Heuristics];
        let flood = |pps: f64, mean: f64, ports: f64| {
            [
                ("pps", pps),
                ("packets", 7299.0),
                ("mean_ip_bytes", mean),
                ("udp_ports", ports),
                ("threshold_pps", 1000.0),
            ]
        };
        use Action::*;
        // cam3 at 7 Mbit/s (seed 27): 1107/s of 1228-byte packets to 2 ports.
        let cam = flood(1107.0, 1228.0, 2.0);
        assert_eq!(decide(&p, AttackKind::UdpFlood, &cam, &h), (Ignore, "udp_stream_full_packets"));
        // The model agreeing does not make the stream a flood.
        assert_eq!(
            decide(&p, AttackKind::UdpFlood, &cam, &[Origin::Heuristics, Origin::Model]),
            (Ignore, "udp_stream_full_packets")
        );
        let alerting = ResponsePolicy::new(ResponseConfig { udp_stream: Alert, ..Default::default() }, false);
        assert_eq!(decide(&alerting, AttackKind::UdpFlood, &cam, &h), (Alert, "udp_stream_full_packets"));
        // `udp_flood = "alert"` still caps, and `udp_stream = "block"` is the rate-only rule.
        let capped = ResponseConfig { udp_flood: Alert, udp_stream: Block, ..Default::default() };
        assert_eq!(
            decide(&ResponsePolicy::new(capped, false), AttackKind::UdpFlood, &cam, &h),
            (Alert, "kind_set_to_alert")
        );
        let rate_only = ResponsePolicy::new(ResponseConfig { udp_stream: Block, ..Default::default() }, false);
        assert_eq!(decide(&rate_only, AttackKind::UdpFlood, &cam, &h), (Block, "udp_stream_full_packets"));
        // hping3 --udp (lab): 28-byte packets to one port.
        assert_eq!(decide(&p, AttackKind::UdpFlood, &flood(1990.0, 28.0, 1.0), &h), (Block, "flood_above_rate"));
        // Just below the 576-byte bound; full packets over 8 ports; full packets at 10× the rate.
        assert_eq!(decide(&p, AttackKind::UdpFlood, &flood(1107.0, 575.0, 1.0), &h), (Block, "flood_above_rate"));
        assert_eq!(decide(&p, AttackKind::UdpFlood, &flood(1107.0, 1228.0, 8.0), &h), (Block, "flood_above_rate"));
        assert_eq!(decide(&p, AttackKind::UdpFlood, &flood(10_000.0, 1228.0, 1.0), &h), (Block, "flood_above_rate"));
        assert_eq!(
            decide(&p, AttackKind::UdpFlood, &flood(9_999.0, 1228.0, 1.0), &h),
            (Ignore, "udp_stream_full_packets")
        );
        // A finding without the numbers blocks as before; other floods ignore them.
        assert_eq!(decide(&p, AttackKind::UdpFlood, &[("pps", 1107.0)], &h), (Block, "flood_above_rate"));
        assert_eq!(decide(&p, AttackKind::IcmpFlood, &cam, &h), (Block, "flood_above_rate"));
        assert_eq!(
            rule_in_reason("…; alert only: policy rule udp_stream_full_packets (…)"),
            Some("udp_stream_full_packets")
        );
    }

    /// A QUIC client acknowledging a 100 Mbit/s download sends ~4 500 small packets a
    /// second (seed 101 of tests/benign_extra.rs: 1020/s of 96 bytes): the acknowledgements
    /// are not a flood; what is left without them must reach the rate by itself.
    #[test]
    fn a_udp_flood_made_of_download_acknowledgements_is_not_blocked() {
        let p = ResponsePolicy::default();
        let h = [Origin::Heuristics];
        let f = |pps: f64, rest: f64| {
            [
                ("pps", pps),
                ("mean_ip_bytes", 96.0),
                ("udp_ports", 1.0),
                ("threshold_pps", 1000.0),
                ("pps_without_download_acks", rest),
            ]
        };
        use Action::*;
        assert_eq!(decide(&p, AttackKind::UdpFlood, &f(4500.0, 0.0), &h), (Ignore, "udp_download_acks"));
        assert_eq!(
            decide(&p, AttackKind::UdpFlood, &f(4500.0, 999.0), &[Origin::Heuristics, Origin::Model]),
            (Ignore, "udp_download_acks")
        );
        // A flood hidden among acknowledgements still blocks on its own rate.
        assert_eq!(decide(&p, AttackKind::UdpFlood, &f(4500.0, 1000.0), &h), (Block, "flood_above_rate"));
        let alerting = ResponsePolicy::new(ResponseConfig { udp_stream: Alert, ..Default::default() }, false);
        assert_eq!(decide(&alerting, AttackKind::UdpFlood, &f(4500.0, 0.0), &h), (Alert, "udp_download_acks"));
        // `udp_flood = "alert"` caps it like the stream rule.
        let capped = ResponseConfig { udp_flood: Alert, udp_stream: Block, ..Default::default() };
        assert_eq!(
            decide(&ResponsePolicy::new(capped, false), AttackKind::UdpFlood, &f(4500.0, 0.0), &h),
            (Alert, "kind_set_to_alert")
        );
    }

    /// A sweep over hosts narrower than twice its rule's count, with some hosts answering,
    /// alerts (a client with some peers gone); wide, or into near silence, it blocks. Its
    /// numbers outrank agreement, as an answered sweep's do; a port scan is not a sweep.
    #[test]
    fn a_narrow_partly_answered_sweep_alerts_and_a_wide_one_blocks() {
        use Action::{Alert, Block};
        let p = ResponsePolicy::default();
        let h = [Origin::Heuristics];
        let sweep = |hosts: f64, unanswered: f64| {
            [
                ("distinct_hosts", hosts),
                ("unanswered_pct", unanswered),
                ("sweep_min_hosts", 20.0),
                ("silent_hosts_hour", hosts),
            ]
        };
        for kind in [AttackKind::HostSweep, AttackKind::SlowScan] {
            assert_eq!(decide(&p, kind, &sweep(20.0, 77.0), &h), (Alert, "narrow_sweep_partly_answered"), "{kind:?}");
            assert_eq!(
                decide(&p, kind, &sweep(20.0, 77.0), &[Origin::Heuristics, Origin::Model]),
                (Alert, "narrow_sweep_partly_answered"),
                "{kind:?}"
            );
            assert_eq!(decide(&p, kind, &sweep(39.0, 89.0), &h), (Alert, "narrow_sweep_partly_answered"), "{kind:?}");
            assert_eq!(decide(&p, kind, &sweep(40.0, 77.0), &h), (Block, "scan_mostly_unanswered"), "{kind:?}");
            assert_eq!(decide(&p, kind, &sweep(20.0, 90.0), &h), (Block, "scan_mostly_unanswered"), "{kind:?}");
        }
        // Silent on the swept port, answered elsewhere: the share over all the source did decides.
        let mut elsewhere = sweep(20.0, 100.0).to_vec();
        elsewhere.push(("source_unanswered_pct", 67.0));
        assert_eq!(decide(&p, AttackKind::HostSweep, &elsewhere, &h), (Alert, "narrow_sweep_partly_answered"));
        elsewhere[4].1 = 99.0;
        assert_eq!(decide(&p, AttackKind::HostSweep, &elsewhere, &h), (Block, "scan_mostly_unanswered"));
        // Narrow in its window, but the source reached 40 silent hosts in the hour: a padded
        // sweep paced under the window's count, blocked. Without the hour's number, blocked.
        let mut paced = sweep(20.0, 77.0);
        paced[3].1 = 40.0;
        assert_eq!(decide(&p, AttackKind::HostSweep, &paced, &h), (Block, "scan_mostly_unanswered"));
        assert_eq!(decide(&p, AttackKind::HostSweep, &paced[..3], &h), (Block, "scan_mostly_unanswered"));
        // Without the sweep's own count (a port scan, an older detector): as before.
        let no_min = [("distinct_hosts", 20.0), ("unanswered_pct", 77.0)];
        assert_eq!(decide(&p, AttackKind::HostSweep, &no_min, &h), (Block, "scan_mostly_unanswered"));
        assert_eq!(decide(&p, AttackKind::PortScan, &sweep(1.0, 77.0), &h), (Block, "scan_mostly_unanswered"));
        // The share is a setting: at 70 % the node above blocks.
        let cfg = ResponseConfig { narrow_sweep_min_unanswered_pct: 70.0, ..ResponseConfig::default() };
        let p70 = ResponsePolicy::new(cfg, false);
        assert_eq!(decide(&p70, AttackKind::HostSweep, &sweep(20.0, 77.0), &h), (Block, "scan_mostly_unanswered"));
    }

    #[test]
    fn kind_actions_cap_and_ignore() {
        let cfg = ResponseConfig { port_scan: Action::Alert, anomaly: Action::Ignore, ..Default::default() };
        let p = ResponsePolicy::new(cfg, false);
        assert_eq!(
            decide(&p, AttackKind::PortScan, &[("unanswered_pct", 98.0)], &[Origin::Heuristics]),
            (Action::Alert, "kind_set_to_alert")
        );
        assert_eq!(
            decide(&p, AttackKind::Anomaly, &[], &[Origin::Baseline, Origin::Model]),
            (Action::Ignore, "kind_set_to_ignore")
        );
        // Brute force keeps its default.
        assert_eq!(decide(&p, AttackKind::BruteForce, &[], &[Origin::Heuristics]).0, Action::Block);
    }

    #[test]
    fn the_old_model_alone_key_still_lets_the_model_block() {
        let p = ResponsePolicy::new(ResponseConfig::default(), true);
        assert_eq!(decide(&p, AttackKind::SynFlood, &[], &[Origin::Model]), (Action::Block, "model_alone"));
        let cfg = ResponseConfig { baseline_alone: Action::Ignore, ..Default::default() };
        let p = ResponsePolicy::new(cfg, false);
        assert_eq!(
            decide(&p, AttackKind::Anomaly, &[("bytes_to_new_host_1s", 1e6)], &[Origin::Baseline]),
            (Action::Ignore, "baseline_alone")
        );
    }

    #[test]
    fn config_round_trips_and_bad_values_name_the_key() {
        let cfg: ResponseConfig = toml::from_str("port_scan = \"alert\"\nanomaly = \"ignore\"").unwrap();
        assert_eq!((cfg.port_scan, cfg.anomaly, cfg.syn_flood), (Action::Alert, Action::Ignore, Action::Block));
        let err = toml::from_str::<ResponseConfig>("udp_flood = \"drop\"").unwrap_err().to_string();
        assert!(err.contains("udp_flood") && err.contains("block") && err.contains("ignore"), "{err}");
        let bad = ResponseConfig { scan_min_unanswered_pct: 150.0, ..Default::default() };
        assert_eq!(bad.problems()[0].0, "response.scan_min_unanswered_pct");
        let bad = ResponseConfig { narrow_sweep_min_unanswered_pct: -1.0, ..Default::default() };
        assert_eq!(
            (bad.problems()[0].0, bad.problems()[0].1.as_str()),
            ("response.narrow_sweep_min_unanswered_pct", "-1")
        );
        assert!(ResponseConfig::default().problems().is_empty());
    }
}
