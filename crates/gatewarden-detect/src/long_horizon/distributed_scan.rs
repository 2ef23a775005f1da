//! Distributed scans: many sources, each sending a few probes that go
//! unanswered, to one target host (spread over its ports) or one subnet
//! (spread over its hosts) — a botnet dividing a scan so that no source
//! crosses any per-source threshold.
//!
//! # The rule
//! Over the last [`WINDOW_NS`] (15 minutes), per target host and per target
//! subnet (/24, IPv6 /64): a *participant* is a source with at least
//! [`MIN_PROBES_PER_SOURCE`] unanswered probes to it. The finding is
//! `detector.distributed_scan_sources` (50) participants **and** the probes
//! spread over at least [`MIN_SPREAD`] distinct ports of the host (or hosts of
//! the subnet). The spread tells a scan from an outage: when a service is down,
//! all its clients fail on *one* port (and those that it answered before count
//! as answered anyway, see [`super`]).
//!
//! The finding has no single source (`source: None`): it lists up to
//! [`MAX_LISTED`] participants and the count. What is done about them is the
//! response policy's: `response.distributed_scan` is `alert` by default; with
//! `block`, only participants proven real (a flow in which they acknowledged
//! what they were sent) are blocked — the others' SYNs may be forged.
//!
//! Bounded: at most [`MAX_TARGETS`] targets, each with at most
//! [`MAX_SOURCES_PER_TARGET`] sources (a one-probe source makes room for a new
//! one; beyond that new sources are only counted) and [`MAX_ITEMS`] ports or hosts.
//! When the target table is full, the targets with the fewest participants go first.

use std::collections::VecDeque;
use std::net::IpAddr;

use gatewarden_proto::messages::AttackKind;

use super::{LongHorizonConfig, Probe};
use crate::heuristics::Detection;

type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// The window, ns.
pub const WINDOW_NS: u64 = 15 * 60_000_000_000;
/// Unanswered probes that make a source a participant.
pub const MIN_PROBES_PER_SOURCE: u16 = 2;
/// Distinct ports (of a host) or hosts (of a subnet) the probes must cover.
pub const MIN_SPREAD: usize = 10;
/// Most targets tracked.
pub const MAX_TARGETS: usize = 256;
/// Most sources tracked per target.
pub const MAX_SOURCES_PER_TARGET: usize = 256;
/// Most participants named in a finding's reason (all tracked ones are kept for the response).
pub const MAX_LISTED: usize = 16;
/// Most ports or hosts kept per target.
pub const MAX_ITEMS: usize = 64;
/// One target is reported again at most this often, ns.
const REPORT_EVERY_NS: u64 = 300_000_000_000;
/// Stale sources and items are dropped at most this often per target, ns.
const PRUNE_EVERY_NS: u64 = 60_000_000_000;

/// A target: one host, or one subnet (network address, prefix length).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Host(IpAddr),
    Net(IpAddr, u8),
}

fn subnet(a: IpAddr) -> Key {
    match a {
        IpAddr::V4(v) => {
            let o = v.octets();
            Key::Net(IpAddr::from([o[0], o[1], o[2], 0]), 24)
        }
        IpAddr::V6(v) => {
            let n = u128::from(v) & !((1u128 << 64) - 1);
            Key::Net(IpAddr::V6(n.into()), 64)
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Part {
    src: IpAddr,
    probes: u16,
    last_ns: u64,
}

#[derive(Debug, Default)]
struct Target {
    parts: Vec<Part>,
    /// Where each source of `parts` is (a flood's new source per probe found without a scan).
    index: HashMap<IpAddr, u16>,
    /// The one-probe sources of `parts` as (last probe, position), oldest first (among
    /// equals, the first to come): who makes room when the list is full, without a scan.
    /// A queue, not a sorted set: probes come in time order, so a new single goes at the
    /// back and the oldest leaves from the front (a spoofed flood, a new source per probe,
    /// paid two B-tree operations per probe and target for this).
    singles: VecDeque<(u64, u16)>,
    /// Sources seen that the list had no room for (since the last prune).
    unlisted: u32,
    /// Ports (host targets) or hosts (subnet targets), as keys, with when last probed.
    items: Vec<(IpAddr, u16, u64)>,
    participants: u32,
    last_ns: u64,
    pruned_ns: u64,
    reported_ns: Option<u64>,
    /// The participants named in the last finding.
    listed: Vec<IpAddr>,
}

impl Target {
    fn prune(&mut self, now: u64) {
        let cutoff = now.saturating_sub(WINDOW_NS);
        self.parts.retain(|p| p.last_ns >= cutoff);
        self.items.retain(|i| i.2 >= cutoff);
        self.unlisted = 0;
        self.participants = self.parts.iter().filter(|p| p.probes >= MIN_PROBES_PER_SOURCE).count() as u32;
        self.pruned_ns = now;
        self.index.clear();
        let mut singles: Vec<(u64, u16)> = Vec::with_capacity(self.parts.len());
        for (i, p) in self.parts.iter().enumerate() {
            self.index.insert(p.src, i as u16);
            if p.probes < MIN_PROBES_PER_SOURCE {
                singles.push((p.last_ns, i as u16));
            }
        }
        singles.sort_unstable();
        self.singles = singles.into();
    }

    /// Queues a one-probe source in time order: at the back, unless a probe came with an
    /// earlier time than the last one queued.
    fn queue_single(&mut self, now: u64, i: u16) {
        if self.singles.back().is_none_or(|&(t, _)| t <= now) {
            self.singles.push_back((now, i));
        } else {
            let at = self.singles.partition_point(|&(t, _)| t <= now);
            self.singles.insert(at, (now, i));
        }
    }

    fn add(&mut self, src: IpAddr, item: (IpAddr, u16), now: u64) {
        self.last_ns = now;
        if now >= self.pruned_ns.saturating_add(PRUNE_EVERY_NS) {
            self.prune(now);
        }
        let full = self.parts.len() >= MAX_SOURCES_PER_TARGET;
        match self.index.get(&src) {
            Some(&i) => {
                let p = &mut self.parts[usize::from(i)];
                if p.probes < MIN_PROBES_PER_SOURCE {
                    // A second probe: no longer a single (a scan of at most 256, once per participant).
                    if let Some(at) = self.singles.iter().position(|&s| s == (p.last_ns, i)) {
                        self.singles.remove(at);
                    }
                }
                p.probes = p.probes.saturating_add(1);
                p.last_ns = now;
                if p.probes == MIN_PROBES_PER_SOURCE {
                    self.participants += 1;
                }
            }
            None if !full => {
                let i = self.parts.len() as u16;
                self.parts.push(Part { src, probes: 1, last_ns: now });
                self.index.insert(src, i);
                self.queue_single(now, i);
            }
            None => {
                // Full: the oldest one-probe source (the first to come among equals) makes
                // room (spoofed one-shot sources cannot push out participants); otherwise the
                // source is only counted.
                match self.singles.pop_front() {
                    Some((_, i)) => {
                        let old =
                            std::mem::replace(&mut self.parts[usize::from(i)], Part { src, probes: 1, last_ns: now });
                        self.index.remove(&old.src);
                        self.index.insert(src, i);
                        self.queue_single(now, i);
                    }
                    None => self.unlisted = self.unlisted.saturating_add(1),
                }
            }
        }
        let room = self.items.len() < MAX_ITEMS;
        match self.items.iter_mut().find(|i| (i.0, i.1) == item) {
            Some(i) => i.2 = now,
            None if room => self.items.push((item.0, item.1, now)),
            None => {}
        }
    }
}

/// The distributed-scan detector.
#[derive(Debug, Default)]
pub struct DistributedScan {
    targets: HashMap<Key, Target>,
    swept_ns: u64,
}

impl DistributedScan {
    /// Bytes held.
    pub fn memory_bytes(&self) -> usize {
        self.targets.capacity() * (std::mem::size_of::<(Key, Target)>() + 1)
            + self
                .targets
                .values()
                .map(|t| {
                    t.parts.capacity() * std::mem::size_of::<Part>()
                        + t.index.capacity() * (std::mem::size_of::<(IpAddr, u16)>() + 1)
                        + t.singles.len() * std::mem::size_of::<(u64, u16)>() * 2
                        + t.items.capacity() * std::mem::size_of::<(IpAddr, u16, u64)>()
                        + t.listed.capacity() * std::mem::size_of::<IpAddr>()
                })
                .sum::<usize>()
    }

    /// The participants (all that are tracked, most probes first) when `target` (a host or a
    /// subnet's network address) was last reported.
    pub fn participants(&self, target: IpAddr) -> Vec<IpAddr> {
        self.targets
            .iter()
            .find(|(k, _)| matches!(k, Key::Host(a) | Key::Net(a, _) if *a == target))
            .map(|(_, t)| t.listed.clone())
            .unwrap_or_default()
    }

    /// Drops targets idle for the whole window (once a minute).
    pub fn tick(&mut self, now: u64) {
        if now < self.swept_ns.saturating_add(PRUNE_EVERY_NS) {
            return;
        }
        self.swept_ns = now;
        let cutoff = now.saturating_sub(WINDOW_NS);
        self.targets.retain(|_, t| t.last_ns >= cutoff);
    }

    /// An unanswered probe: counts it for its host and its subnet; a finding when either crossed the rule.
    pub fn on_unanswered(&mut self, cfg: &LongHorizonConfig, p: &Probe, now: u64) -> Option<Detection> {
        let need = cfg.distributed_sources;
        if need == 0 {
            return None;
        }
        let mut found = None;
        for key in [Key::Host(p.dst), subnet(p.dst)] {
            if !self.targets.contains_key(&key) && self.targets.len() >= MAX_TARGETS {
                // Evidence decides who stays: participants first, then recency.
                gatewarden_core::lru::evict_oldest(&mut self.targets, MAX_TARGETS / 8, |t| {
                    (u64::from(t.participants.min(0xffff)) << 48) | ((t.last_ns / 1_000_000_000) & 0xffff_ffff_ffff)
                });
            }
            let t = self.targets.entry(key).or_default();
            let item = match key {
                Key::Host(_) => (IpAddr::from([0u8, 0, 0, 0]), p.dport),
                Key::Net(..) => (p.dst, 0),
            };
            t.add(p.src, item, now);
            if t.participants < need
                || t.items.len() < MIN_SPREAD
                || t.reported_ns.is_some_and(|r| now < r.saturating_add(REPORT_EVERY_NS))
            {
                continue;
            }
            t.reported_ns = Some(now);
            let mut parts: Vec<&Part> = t.parts.iter().filter(|p| p.probes >= MIN_PROBES_PER_SOURCE).collect();
            parts.sort_by_key(|p| std::cmp::Reverse(p.probes));
            t.listed = parts.iter().map(|p| p.src).collect();
            let probes: u64 = parts.iter().map(|p| u64::from(p.probes)).sum();
            let names: Vec<String> = t.listed.iter().take(MAX_LISTED).map(|a| a.to_string()).collect();
            let more = parts.len().saturating_sub(MAX_LISTED) as u64 + u64::from(t.unlisted);
            let more = if more > 0 { format!(" and {more} more") } else { String::new() };
            let (target, spread, what) = match key {
                Key::Host(a) => (a.to_string(), t.items.len(), "ports"),
                Key::Net(a, len) => (format!("{a}/{len}"), t.items.len(), "hosts"),
            };
            let at_least = if t.items.len() >= MAX_ITEMS { "at least " } else { "" };
            let reason = format!(
                "distributed scan of {target}: {} sources sent {MIN_PROBES_PER_SOURCE} or more unanswered probes each \
                 ({probes} in all) to {at_least}{spread} distinct {what} in the last {} minutes (limit {need} sources, \
                 {MIN_SPREAD} {what}): {}{more}",
                t.participants,
                WINDOW_NS / 60_000_000_000,
                names.join(", "),
            );
            found = Some(Detection {
                source: None,
                target: Some(match key {
                    Key::Host(a) | Key::Net(a, _) => a,
                }),
                port: 0,
                proto: Some(p.proto),
                kind: AttackKind::DistributedScan,
                confidence: (0.6 + 0.3 * (f64::from(t.participants) / (2.0 * f64::from(need))).min(1.0)) as f32,
                reason,
                evidence: vec![
                    ("sources".into(), f64::from(t.participants)),
                    (format!("distinct_{what}"), spread as f64),
                    ("probes".into(), probes as f64),
                    ("window_minutes".into(), (WINDOW_NS / 60_000_000_000) as f64),
                ],
                ts_ns: now,
                flow_id: p.flow_id,
            });
            if matches!(key, Key::Host(_)) {
                // One finding per probe; the subnet's comes with a later one.
                break;
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{horizon, rec, SEC, T0};
    use super::*;
    use gatewarden_proto::messages::Proto;

    fn attacker(i: u32) -> String {
        format!("203.0.113.{}", i % 250 + 1)
    }

    #[test]
    fn fifty_sources_three_probes_each_to_closed_ports_are_one_finding_per_target() {
        let mut h = horizon();
        let mut found = Vec::new();
        let mut id = 0u64;
        let mut t = T0;
        for round in 0..3u32 {
            for s in 0..60u32 {
                id += 1;
                let port = 1000 + (s * 3 + round) as u16;
                found.extend(h.observe(&rec(
                    id,
                    &attacker(s),
                    "192.0.2.16",
                    port,
                    Proto::Tcp,
                    t,
                    t,
                    (1, 60),
                    (1, 40),
                    "REJ",
                )));
                found.extend(h.tick(t));
                t += SEC / 2;
            }
        }
        let d: Vec<&Detection> = found.iter().filter(|d| d.kind == AttackKind::DistributedScan).collect();
        assert_eq!(d.len(), 1, "{found:?}");
        let d = d[0];
        assert_eq!((d.source, d.target), (None, Some("192.0.2.16".parse().unwrap())));
        assert!(
            d.reason.starts_with("distributed scan of 192.0.2.16: 50 sources sent 2 or more unanswered probes each"),
            "{}",
            d.reason
        );
        assert!(d.reason.contains("and 34 more"), "{}", d.reason);
        assert_eq!(h.participants("192.0.2.16".parse().unwrap()).len(), 50);
        // No source crossed a per-source rule.
        assert!(found.iter().all(|d| d.kind == AttackKind::DistributedScan), "{found:?}");
    }

    #[test]
    fn a_subnet_swept_by_many_ipv6_sources_is_found() {
        let mut h = horizon();
        let mut found = Vec::new();
        let mut id = 0u64;
        for round in 0..2u64 {
            for s in 0..55u64 {
                id += 1;
                let t = T0 + id * SEC;
                let src = format!("2001:db8:bad::{:x}", s + 1);
                let dst = format!("2001:db8:1::{:x}", (s * 2 + round) % 100 + 1);
                found.extend(h.observe(&rec(id, &src, &dst, 22, Proto::Tcp, t, t, (1, 80), (0, 0), "S0")));
                found.extend(h.tick(t));
            }
        }
        let d = found.iter().find(|d| d.kind == AttackKind::DistributedScan).expect("not found");
        assert!(d.reason.starts_with("distributed scan of 2001:db8:1::/64: 50 sources"), "{}", d.reason);
    }

    /// A full list: the oldest one-probe source (the first to come among equals) makes room,
    /// participants are never pushed out, and the index follows every replacement and prune.
    #[test]
    fn a_full_list_replaces_the_oldest_one_probe_source() {
        let src = |i: u32| IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
        let mut t = Target::default();
        let item = (IpAddr::from([0u8, 0, 0, 0]), 80);
        // Two participants, then singles filling the list, all at the same time but the first.
        t.add(src(0), item, T0);
        t.add(src(0), item, T0);
        t.add(src(1), item, T0);
        t.add(src(1), item, T0);
        for i in 2..MAX_SOURCES_PER_TARGET as u32 {
            t.add(src(i), item, T0 + if i == 2 { 0 } else { SEC });
        }
        assert_eq!(t.parts.len(), MAX_SOURCES_PER_TARGET);
        // src(2) is the oldest single; then src(3), the first to come among the rest.
        t.add(src(1000), item, T0 + 2 * SEC);
        t.add(src(1001), item, T0 + 2 * SEC);
        let listed: Vec<IpAddr> = t.parts.iter().map(|p| p.src).collect();
        assert_eq!(&listed[..5], &[src(0), src(1), src(1000), src(1001), src(4)]);
        assert_eq!(t.participants, 2);
        // A replaced source comes back as a new single; a kept one becomes a participant.
        t.add(src(5), item, T0 + 3 * SEC);
        assert_eq!(t.participants, 3);
        t.add(src(2), item, T0 + 3 * SEC);
        assert_eq!(t.parts[4].src, src(2), "src(4) was the oldest single left");
        assert_eq!(t.participants, 3);
        for (i, p) in t.parts.iter().enumerate() {
            assert_eq!(t.index[&p.src], i as u16);
        }
        // A prune keeps what was probed at T0 + 3 s or later (src(5), a participant, and
        // src(2)); the index and the singles are rebuilt around them.
        let later = T0 + WINDOW_NS + 3 * SEC;
        t.add(src(7), item, later);
        let listed: Vec<IpAddr> = t.parts.iter().map(|p| p.src).collect();
        assert_eq!(listed, [src(2), src(5), src(7)]);
        assert_eq!((t.index.len(), t.singles.len(), t.participants), (3, 2, 1));
        t.add(src(2), item, later);
        assert_eq!((t.index.len(), t.singles.len(), t.participants), (3, 1, 2));
    }

    /// The one-probe queue stays in time order whatever order probes come in, holds each
    /// single once, and never outgrows the list under a flood of new sources.
    #[test]
    fn the_one_probe_queue_stays_oldest_first_and_bounded() {
        let src = |i: u32| IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
        let mut t = Target::default();
        let item = (IpAddr::from([0u8, 0, 0, 0]), 80);
        // A probe stamped earlier than the last one queued goes where its time puts it.
        t.add(src(0), item, T0 + 5 * SEC);
        t.add(src(1), item, T0 + 2 * SEC);
        t.add(src(2), item, T0 + 9 * SEC);
        assert_eq!(
            t.singles.iter().copied().collect::<Vec<_>>(),
            [(T0 + 2 * SEC, 1), (T0 + 5 * SEC, 0), (T0 + 9 * SEC, 2)]
        );
        // 100 000 spoofed one-shot sources: the queue holds each listed single once.
        for i in 10..100_010u32 {
            t.add(src(i), item, T0 + 10 * SEC + u64::from(i));
            assert!(t.singles.len() <= MAX_SOURCES_PER_TARGET);
        }
        assert_eq!(t.singles.len(), t.parts.len());
        assert!(t.singles.iter().zip(t.singles.iter().skip(1)).all(|(a, b)| a.0 <= b.0), "oldest first");
        for &(ts, i) in &t.singles {
            assert_eq!(t.parts[usize::from(i)].last_ns, ts);
        }
    }

    #[test]
    fn many_clients_of_a_service_that_went_down_are_not_a_scan() {
        // 80 devices each retry a dead server's MQTT port 5 times: one port, never answered.
        let mut h = horizon();
        let mut found = Vec::new();
        let mut id = 0;
        for _ in 0..5u64 {
            for d in 0..80u32 {
                id += 1;
                let t = T0 + id * SEC / 5;
                let src = format!("192.0.2.{}", d + 100);
                found.extend(h.observe(&rec(id, &src, "198.51.100.30", 8883, Proto::Tcp, t, t, (1, 60), (0, 0), "S0")));
                found.extend(h.tick(t));
            }
        }
        found.extend(h.tick(T0 + 3600 * SEC));
        assert!(found.is_empty(), "{found:?}");
    }
}
