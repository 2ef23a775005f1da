//! LAN mapping: one device asking the LAN for many addresses of its subnet
//! that mostly do not exist (issue #17).
//!
//! `nmap -sn` of the local /24 and `arp-scan --localnet` send an ARP request
//! for every address of the prefix (IPv6 tools a neighbour solicitation);
//! the router's capture sees those requests (broadcast and multicast reach
//! every bridge port) and reports them as [`LanProbe`]s keyed by the
//! asker's MAC. What tells a sweep from ordinary address resolution:
//!
//! - **Breadth.** A device resolves the addresses it talks to: the gateway,
//!   a hub its few dozen devices, a PC its printer and NAS. A sweep asks
//!   for the whole prefix: 254 addresses for a /24, in seconds.
//! - **Emptiness.** Devices ask for addresses that exist (they are about to
//!   send there); a sweep asks for every address, and a home /24 holds at
//!   most a few dozen devices, so most of its requests go unanswered.
//!
//! So a finding needs ≥ `detector.lan_mapping_targets` (64: a quarter of a
//! /24, twice the devices a busy home hub polls) distinct addresses from one
//! MAC within `lan_mapping_window_s` (300 s: a sweep is over in seconds,
//! and this still catches one slowed to a request every 4 s), of which at
//! least `lan_mapping_unanswered_pct` (50 %) were not seen alive. What is
//! not counted: gratuitous ARP (its own address; the router drops it),
//! ARP probes and IPv6 duplicate address detection (one address, the
//! device's own: a handful of requests for one target), a reconnect storm
//! (every device asks for the gateway: one target each), cache refreshes
//! (addresses that answer).
//!
//! The sender *address* of an ARP request is whatever the asker wrote
//! (0.0.0.0 in a probe): the finding is about the MAC, and the response is
//! an alert (the address named may be another device's).
//!
//! Memory: at most [`MAX_MACS`] MACs with at most [`MAX_TARGETS_PER_MAC`]
//! addresses each (≈ 11 MB at worst: 262 144 entries of ~40 bytes), least recently seen MACs dropped an
//! eighth at a time. A forged flood from random MACs holds one or two
//! addresses per MAC and churns the table; a real sweep comes from one MAC
//! and fills its own entry within a second.

use std::collections::HashMap;
use std::net::IpAddr;

use gatewarden_core::net::{mac_text, Mac};
use gatewarden_proto::messages::{AttackKind, LanProbe, Proto};

use crate::config::DetectorConfig;
use crate::heuristics::Detection;

/// Most MACs followed at once.
pub const MAX_MACS: usize = 1024;
/// Most distinct addresses kept per MAC (the threshold may not exceed it).
pub const MAX_TARGETS_PER_MAC: usize = 256;
/// A MAC is reported again at most this often while it goes on (fusion's
/// refresh limits it further).
const REPORT_AGAIN_NS: u64 = 60_000_000_000;

#[derive(Debug, Clone, Copy)]
struct Target {
    first_ns: u64,
    answered: bool,
}

#[derive(Debug, Default)]
struct Asker {
    targets: HashMap<IpAddr, Target, foldhash::fast::RandomState>,
    sender: Option<IpAddr>,
    last_ns: u64,
    pruned_ns: u64,
    reported_ns: u64,
}

/// The LAN-mapping detector: LAN probes in, findings out.
pub struct LanMapping {
    min_targets: usize,
    min_unanswered_pct: f64,
    window_ns: u64,
    askers: HashMap<Mac, Asker, foldhash::fast::RandomState>,
}

impl LanMapping {
    /// With the thresholds of `cfg`.
    pub fn new(cfg: &DetectorConfig) -> LanMapping {
        let mut m = LanMapping { min_targets: 0, min_unanswered_pct: 0.0, window_ns: 0, askers: HashMap::default() };
        m.set_config(cfg);
        m
    }

    /// New thresholds (the Settings page); what was seen is kept.
    pub fn set_config(&mut self, cfg: &DetectorConfig) {
        self.min_targets = (cfg.lan_mapping_targets as usize).min(MAX_TARGETS_PER_MAC);
        self.min_unanswered_pct = cfg.lan_mapping_unanswered_pct;
        self.window_ns = cfg.lan_mapping_window_s.saturating_mul(1_000_000_000);
    }

    /// MACs followed now (never above [`MAX_MACS`]).
    pub fn len(&self) -> usize {
        self.askers.len()
    }

    /// Whether no MAC is followed.
    pub fn is_empty(&self) -> bool {
        self.askers.is_empty()
    }

    /// One request (or the answer to one); a finding when its MAC crosses the thresholds.
    pub fn observe(&mut self, p: &LanProbe) -> Option<Detection> {
        if self.min_targets == 0 || p.target == p.sender || p.target.is_unspecified() {
            return None;
        }
        if !self.askers.contains_key(&p.mac) && self.askers.len() >= MAX_MACS {
            gatewarden_core::lru::evict_oldest(&mut self.askers, MAX_MACS / 8, |a| a.last_ns);
        }
        let window = self.window_ns;
        let a = self.askers.entry(p.mac).or_default();
        a.last_ns = a.last_ns.max(p.ts_ns);
        if !p.sender.is_unspecified() {
            a.sender = Some(p.sender);
        }
        let full = a.targets.len() >= MAX_TARGETS_PER_MAC;
        if full || p.ts_ns.saturating_sub(a.pruned_ns) >= 1_000_000_000 {
            let now = p.ts_ns;
            a.targets.retain(|_, t| now.saturating_sub(t.first_ns) < window);
            a.pruned_ns = now;
        }
        let room = a.targets.len() < MAX_TARGETS_PER_MAC;
        match a.targets.get_mut(&p.target) {
            Some(t) => t.answered |= p.answered,
            None if room => {
                a.targets.insert(p.target, Target { first_ns: p.ts_ns, answered: p.answered });
            }
            None => {}
        }
        let distinct = a.targets.len();
        if distinct < self.min_targets || (a.reported_ns != 0 && p.ts_ns < a.reported_ns + REPORT_AGAIN_NS) {
            return None;
        }
        let unanswered = a.targets.values().filter(|t| !t.answered).count();
        let pct = 100.0 * unanswered as f64 / distinct as f64;
        if pct < self.min_unanswered_pct {
            return None;
        }
        a.reported_ns = p.ts_ns;
        let first = a.targets.values().map(|t| t.first_ns).min().unwrap_or(p.ts_ns);
        let span_s = p.ts_ns.saturating_sub(first) as f64 / 1e9;
        let v6 = a.targets.keys().filter(|t| t.is_ipv6()).count();
        let how = match (v6, distinct - v6) {
            (0, _) => "ARP requests",
            (_, 0) => "IPv6 neighbour solicitations",
            _ => "ARP requests and IPv6 neighbour solicitations",
        };
        let claimed = match a.sender {
            Some(s) => format!(" (claiming {s})"),
            None => " (from no address: ARP probes / DAD form)".to_string(),
        };
        let reason = format!(
            "LAN mapping: MAC {}{claimed} asked for {distinct} distinct LAN addresses in {span_s:.1} s with {how}; \
             {unanswered} of them ({pct:.0}%) never answered and never seen alive (≥ {} addresses, ≥ {:.0}% \
             unanswered within {} s make a subnet sweep such as nmap -sn or arp-scan); the MAC is what the \
             switch carried, the sender address only what the frames claim",
            mac_text(&p.mac),
            self.min_targets,
            self.min_unanswered_pct,
            self.window_ns / 1_000_000_000,
        );
        Some(Detection {
            source: a.sender,
            target: None,
            port: 0,
            proto: (v6 == distinct).then_some(Proto::Icmpv6),
            kind: AttackKind::LanMapping,
            confidence: (0.7 + 0.3 * (pct / 100.0) as f32).min(0.99),
            reason,
            evidence: vec![
                ("distinct_targets".into(), distinct as f64),
                ("unanswered_pct".into(), pct),
                ("span_s".into(), span_s),
                ("mac".into(), mac_number(&p.mac)),
            ],
            ts_ns: p.ts_ns,
            flow_id: 0,
        })
    }
}

/// A MAC as one number, for the evidence list (which holds numbers).
fn mac_number(mac: &Mac) -> f64 {
    mac.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b)) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCANNER: Mac = [2, 0, 0, 0, 0, 0x66];

    fn probe(mac: Mac, sender: IpAddr, target: IpAddr, ts_ns: u64, answered: bool) -> LanProbe {
        LanProbe { mac, sender, target, ts_ns, answered }
    }

    fn v4(c: u8, d: u8) -> IpAddr {
        IpAddr::from([192, 0, c, d])
    }

    fn lan() -> LanMapping {
        LanMapping::new(&DetectorConfig::default())
    }

    /// `nmap -sn 192.0.2.0/24` on a LAN of 20 devices: 254 requests in
    /// about 2.5 s, 20 answered.
    #[test]
    fn a_subnet_sweep_is_found_with_its_numbers() {
        let mut m = lan();
        let mut found = Vec::new();
        for d in 1..=254u8 {
            let ts = 1_000_000_000 + d as u64 * 10_000_000;
            found.extend(m.observe(&probe(SCANNER, v4(2, 66), v4(2, d), ts, d <= 20)));
        }
        assert_eq!(found.len(), 1, "one finding per sweep: {found:?}");
        let f = &found[0];
        assert_eq!(f.kind, AttackKind::LanMapping);
        assert_eq!(f.source, Some(v4(2, 66)));
        let ev = |k: &str| f.evidence.iter().find(|(n, _)| n == k).map(|(_, v)| *v).unwrap();
        assert_eq!(ev("distinct_targets"), 64.0, "found at the 64th address");
        assert!((ev("unanswered_pct") - 100.0 * 44.0 / 64.0).abs() < 0.01);
        assert!(f.reason.contains("02:00:00:00:00:66") && f.reason.contains("44 of them (69%)"), "{}", f.reason);
    }

    #[test]
    fn a_sweep_from_no_address_and_an_ipv6_sweep_are_found_too() {
        let mut m = lan();
        let zero: IpAddr = "0.0.0.0".parse().unwrap();
        let found = (1..=100u8).filter_map(|d| m.observe(&probe(SCANNER, zero, v4(2, d), d as u64, false))).count();
        assert_eq!(found, 1, "arp-scan --arpspa=0.0.0.0 is still a sweep");
        let mut m = lan();
        let me: IpAddr = "fe80::66".parse().unwrap();
        let f = (1..=100u16)
            .filter_map(|i| {
                let t = IpAddr::from(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i));
                m.observe(&probe(SCANNER, me, t, i as u64, false))
            })
            .next()
            .expect("an NS sweep");
        assert_eq!(f.proto, Some(Proto::Icmpv6));
        assert!(f.reason.contains("neighbour solicitations"), "{}", f.reason);
    }

    /// A home-automation hub polling its 30 devices, every 10 s for an
    /// hour: they all answer (30 < 64 anyway; with 100 answering devices
    /// the answered share keeps it quiet too).
    #[test]
    fn a_hub_polling_devices_that_answer_is_quiet() {
        let mut m = lan();
        let hub: Mac = [2, 0, 0, 0, 0, 0x10];
        for round in 0..360u64 {
            for d in 1..=100u8 {
                let found = m.observe(&probe(hub, v4(2, 200), v4(2, d), round * 10_000_000_000 + d as u64, d <= 90));
                assert!(found.is_none(), "round {round} device {d}");
            }
        }
    }

    /// DHCP clients' ARP probes (RFC 5227: three for the offered address),
    /// gratuitous ARP, IPv6 DAD: one address each, the device's own.
    #[test]
    fn probes_announcements_and_dad_are_quiet() {
        let mut m = lan();
        let zero: IpAddr = "0.0.0.0".parse().unwrap();
        let unspecified: IpAddr = "::".parse().unwrap();
        for dev in 0..200u8 {
            let mac = [2, 0, 0, 0, 1, dev];
            for k in 0..3u64 {
                assert!(m.observe(&probe(mac, zero, v4(2, dev), k, false)).is_none());
            }
            assert!(m.observe(&probe(mac, v4(2, dev), v4(2, dev), 5, false)).is_none());
            let own = IpAddr::from([0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, dev]);
            assert!(m.observe(&probe(mac, unspecified, own, 6, false)).is_none());
        }
    }

    /// The WAN comes back: every one of 500 devices asks for the gateway
    /// (and its DNS server) at once, several times.
    #[test]
    fn a_reconnect_storm_is_quiet() {
        let mut m = lan();
        for k in 0..5u64 {
            for dev in 0..500u32 {
                let b = dev.to_be_bytes();
                let mac = [2, 0, 0, 1, b[2], b[3]];
                for gw in [v4(2, 1), v4(2, 53)] {
                    assert!(m.observe(&probe(mac, v4(3, b[3]), gw, k * 1_000_000 + dev as u64, false)).is_none());
                }
            }
        }
    }

    /// A router or PC refreshing its neighbour cache of 120 devices every
    /// 30 s: all alive, so most are answered even with a few gone.
    #[test]
    fn a_cache_refresh_is_quiet() {
        let mut m = lan();
        let router: Mac = [2, 0, 0, 0, 0, 1];
        for round in 0..20u64 {
            for d in 2..122u8 {
                let gone = d % 10 == 0;
                let f = m.observe(&probe(router, v4(2, 1), v4(2, d), round * 30_000_000_000 + d as u64, !gone));
                assert!(f.is_none());
            }
        }
    }

    #[test]
    fn answers_arriving_later_count_and_zero_turns_it_off() {
        let mut m = lan();
        for d in 1..=63u8 {
            assert!(m.observe(&probe(SCANNER, v4(2, 66), v4(2, d), d as u64, false)).is_none());
            assert!(m.observe(&probe(SCANNER, v4(2, 66), v4(2, d), d as u64, true)).is_none());
        }
        assert!(m.observe(&probe(SCANNER, v4(2, 66), v4(2, 64), 70, false)).is_none(), "63 of 64 answered");
        let mut off = LanMapping::new(&DetectorConfig { lan_mapping_targets: 0, ..DetectorConfig::default() });
        assert!((1..=254u8).all(|d| off.observe(&probe(SCANNER, v4(2, 66), v4(2, d), d as u64, false)).is_none()));
    }

    #[test]
    fn slow_requests_outside_the_window_do_not_add_up() {
        let mut m = lan();
        // One request every 5 s: 60 per 300 s window, never 64 at once.
        for d in 1..=254u8 {
            assert!(m.observe(&probe(SCANNER, v4(2, 66), v4(2, d), d as u64 * 5_000_000_000, false)).is_none());
        }
    }

    #[test]
    fn a_flood_from_random_macs_stays_bounded() {
        let mut m = lan();
        for i in 0..100_000u32 {
            let b = i.to_be_bytes();
            m.observe(&probe([2, 1, b[0], b[1], b[2], b[3]], v4(2, 9), v4(b[2], b[3]), i as u64, false));
        }
        assert!(m.len() <= MAX_MACS, "{}", m.len());
    }
}
