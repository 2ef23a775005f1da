//! Distributed (spoofed) SYN flood: one victim receiving unanswered SYNs at
//! `syn_flood_pps` or more from more than 16 sources, none sending half of
//! them (each source's SYNs counted over the same sliding window as the
//! victim's, [`SourceSyns`]). Reported without a source (the addresses are likely forged, so the
//! SYN meter rate-limits rather than blocks); a lone flooder is
//! [`floods`](super::floods)' business and gets blocked there.

use std::net::IpAddr;

use gatewarden_proto::messages::{AttackKind, Proto, ShedCount};

use super::detection::{Detection, Observed};
use super::windows::{CountWindow, HashMap};
use crate::config::DetectorConfig;

/// Most destinations tracked for distributed floods.
pub const MAX_DESTS: usize = 16_384;

#[derive(Debug, Default)]
struct DestState {
    last_ns: u64,
    syn: CountWindow,
    /// SYNs the router shed under overload (their sources were never seen
    /// before and are not named): counted in `syn`, and here as as many
    /// sources, since each opened no flow and came from an unseen address.
    shed: CountWindow,
    /// Source → its SYNs in the window, bounded at 4096 entries.
    sources: HashMap<IpAddr, SourceSyns>,
    /// SYNs from sources the full `sources` table could not admit: they
    /// still count against the top source's share, or a lone flooder with
    /// more SYNs than 4096 one-SYN sources add up to would hide a spoofed
    /// flood beside it.
    untracked: CountWindow,
    reported_ns: u64,
    /// When the sources were last counted: while one source dominates (so
    /// nothing is reported) they are counted again at most every
    /// [`RECOUNT_NS`], not on every SYN record.
    counted_ns: u64,
}

/// One source's SYNs towards a victim over the sliding window, as the
/// victim's total is kept: this window's count and the last one's, the
/// last scaled by how much of it is still inside. A lifetime count let a
/// flooder of half a minute ago, still trickling, outweigh a spoofed flood
/// happening now; a count that just restarted would make a steady flooder
/// look light for a moment. 24 bytes, not a [`CountWindow`] of every event:
/// a victim tracks up to 4 096 sources.
#[derive(Debug, Clone, Copy)]
struct SourceSyns {
    last_ns: u64,
    start_ns: u64,
    cur: u32,
    prev: u32,
}

impl SourceSyns {
    fn new(now: u64) -> SourceSyns {
        SourceSyns { last_ns: now, start_ns: now, cur: 0, prev: 0 }
    }

    fn add(&mut self, now: u64, n: u32, window_ns: u64) {
        let age = now.saturating_sub(self.start_ns);
        if age >= window_ns {
            self.prev = if age < 2 * window_ns { self.cur } else { 0 };
            self.cur = 0;
            self.start_ns = now;
        }
        self.cur = self.cur.saturating_add(n);
        self.last_ns = self.last_ns.max(now);
    }

    /// The SYNs sent within `window_ns` before `now` (estimated for the
    /// part of the last window still inside it).
    fn within(&self, now: u64, window_ns: u64) -> f64 {
        let (w, age) = (window_ns.max(1) as f64, now.saturating_sub(self.start_ns) as f64);
        if age >= 2.0 * w {
            0.0
        } else if age >= w {
            f64::from(self.cur) * (2.0 * w - age) / w
        } else {
            f64::from(self.cur) + f64::from(self.prev) * (w - age) / w
        }
    }
}

/// A due destination dominated by one source is counted again after this
/// long (capture time): a lone flooder sends thousands of records a second,
/// and counting its victim's sources on each costs a pass over up to 4096.
/// A distributed flood starting beside it is reported at most this late.
const RECOUNT_NS: u64 = 100_000_000;

/// One batch's SYNs towards a destination: from a flow snapshot (with its
/// source) or from the router's count of shed frames (without).
struct Syns {
    dst: IpAddr,
    dport: u16,
    flow_id: u64,
    last_ns: u64,
    count: u32,
    src: Option<IpAddr>,
}

/// Victims of unanswered SYNs, at most [`MAX_DESTS`] (least recently hit go first).
#[derive(Debug, Default)]
pub(super) struct Victims(HashMap<IpAddr, DestState>);

impl Victims {
    /// Counts the SYNs a half-open snapshot adds against its destination and returns a
    /// finding when the destination is flooded by many sources (once per window).
    pub(super) fn observe(&mut self, cfg: &DetectorConfig, o: &Observed) -> Option<Detection> {
        let (r, syn_delta) = (o.r, o.syn_delta);
        if !(o.half_open && syn_delta > 0) {
            return None;
        }
        let syns = Syns {
            dst: r.dst,
            dport: r.dport,
            flow_id: r.flow_id,
            last_ns: r.last_ns,
            count: syn_delta,
            src: Some(r.src),
        };
        self.count(cfg, o.window_ns, syns)
    }

    /// Counts SYNs the router shed under overload towards `c.dst` (no flow,
    /// no source: see `FlowBatch::shed`); a flood that forced the router to
    /// sample it is still seen at its full rate.
    pub(super) fn observe_shed(&mut self, cfg: &DetectorConfig, window_ns: u64, c: &ShedCount) -> Option<Detection> {
        if c.proto != Proto::Tcp || c.syns == 0 {
            return None;
        }
        let syns = Syns { dst: c.dst, dport: c.dport, flow_id: 0, last_ns: c.last_ns, count: c.syns, src: None };
        self.count(cfg, window_ns, syns)
    }

    fn count(&mut self, cfg: &DetectorConfig, window_ns: u64, s: Syns) -> Option<Detection> {
        let dests = &mut self.0;
        if !dests.contains_key(&s.dst) && dests.len() >= MAX_DESTS {
            if let Some(old) = dests.iter().min_by_key(|(_, d)| d.last_ns).map(|(k, _)| *k) {
                dests.remove(&old);
            }
        }
        let d = dests.entry(s.dst).or_default();
        d.last_ns = d.last_ns.max(s.last_ns);
        d.syn.push(s.last_ns, s.count, window_ns);
        d.syn.trim(d.last_ns, window_ns);
        d.shed.trim(d.last_ns, window_ns);
        d.untracked.trim(d.last_ns, window_ns);
        match s.src {
            Some(src) if d.sources.len() < 4096 || d.sources.contains_key(&src) => {
                d.sources.entry(src).or_insert_with(|| SourceSyns::new(s.last_ns)).add(s.last_ns, s.count, window_ns);
            }
            Some(_) => d.untracked.push(s.last_ns, s.count, window_ns),
            None => d.shed.push(s.last_ns, s.count, window_ns),
        }
        let cutoff = d.last_ns.saturating_sub(window_ns);
        let pps = d.syn.rate(d.last_ns, window_ns);
        let due = pps >= cfg.syn_flood_pps as f64
            && (d.reported_ns == 0 || s.last_ns >= d.reported_ns + window_ns)
            && (d.counted_ns == 0 || s.last_ns >= d.counted_ns + RECOUNT_NS);
        if due && d.sources.len() >= 4096 {
            d.sources.retain(|_, e| e.last_ns >= cutoff);
        }
        // Distributed means no single source dominates; a lone flooder is the
        // per-source detector's business (and gets blocked there). Each shed
        // SYN came from an address never seen before: one source each.
        let shed = d.shed.total;
        let (n_sources, top_share) = if due {
            // One pass, no allocation: while a lone flooder keeps the
            // destination due (it is never reported here) this runs every RECOUNT_NS.
            let untracked = d.untracked.total;
            let (mut live, mut total, mut top) = (0u64, (shed + untracked) as f64, f64::from(u8::from(shed > 0)));
            for e in d.sources.values().filter(|e| e.last_ns >= cutoff) {
                let n = e.within(d.last_ns, window_ns);
                live += 1;
                total += n;
                top = top.max(n);
            }
            (live + shed + u64::from(untracked > 0), top / total.max(1.0))
        } else {
            (0, 1.0)
        };
        if due {
            d.counted_ns = s.last_ns.max(1);
        }
        if !(due && n_sources > 16 && top_share < 0.5) {
            return None;
        }
        d.reported_ns = s.last_ns;
        let more = if n_sources >= 4096 { "at least " } else { "" };
        let sampled = if shed > 0 {
            format!(" ({shed} of them shed by the router under overload, each from an address never seen before)")
        } else {
            String::new()
        };
        Some(Detection {
            source: None,
            target: Some(s.dst),
            port: s.dport,
            proto: Some(Proto::Tcp),
            kind: AttackKind::SynFlood,
            confidence: 0.9,
            reason: format!(
                "{} receives {} unanswered SYNs ({pps:.0}/s) from {more}{n_sources} sources{sampled}: likely spoofed, so rate-limited by the SYN meter rather than blocked",
                s.dst, d.syn.total
            ),
            evidence: vec![("syn_pps".into(), pps), ("sources".into(), n_sources as f64)],
            ts_ns: s.last_ns,
            flow_id: s.flow_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::DetectorConfig;
    use crate::heuristics::testing::rec;
    use crate::heuristics::Heuristics;
    use gatewarden_proto::messages::{AttackKind, Proto, ShedCount};

    #[test]
    fn spoofed_syn_flood_is_reported_without_a_source() {
        let mut h = Heuristics::new(DetectorConfig::default());
        let mut found = Vec::new();
        for i in 0..8000u64 {
            let src = format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
            found.extend(h.observe(&rec(i, &src, "192.0.2.10", 80, Proto::Tcp, i as f64 * 0.0005, 1, 0, "S0")));
        }
        let d = found.iter().find(|d| d.kind == AttackKind::SynFlood).expect("flood found");
        assert_eq!(d.source, None);
        assert!(d.reason.contains("sources"), "{}", d.reason);
        assert!(!found.iter().any(|d| d.source.is_some()), "no innocent (spoofed) address is blamed");
    }

    /// The detector hands a newcomer's one-packet records to `observe_newcomer`:
    /// the flood is found the same, and no per-source state is made for any
    /// spoofed source; a source that has state is still observed in full.
    #[test]
    fn a_spoofed_flood_of_newcomers_is_found_without_per_source_state() {
        let mut h = Heuristics::new(DetectorConfig::default());
        let mut found = Vec::new();
        for i in 0..8000u64 {
            let src = format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
            found.extend(h.observe_newcomer(&rec(
                i,
                &src,
                "192.0.2.10",
                80,
                Proto::Tcp,
                i as f64 * 0.0005,
                1,
                0,
                "S0",
            )));
        }
        let d = found.iter().find(|d| d.kind == AttackKind::SynFlood).expect("flood found");
        assert_eq!(d.source, None);
        assert_eq!(h.sources.len(), 0, "no per-source state for one-packet newcomers");
        // A source with state (two packets before) is observed in full.
        h.observe(&rec(90_000, "198.51.100.7", "192.0.2.10", 22, Proto::Tcp, 5.0, 2, 0, "S0"));
        h.observe_newcomer(&rec(90_001, "198.51.100.7", "192.0.2.10", 23, Proto::Tcp, 5.1, 1, 0, "S0"));
        assert_eq!(h.sources.len(), 1);
        let slot = h.sources[&"198.51.100.7".parse().unwrap()];
        assert_eq!(h.slab[slot as usize].flows.len(), 2, "its newcomer-path record joined its state");
    }

    /// `n` SYN records of one flooder (198.51.100.9) to `victim`, 2000 a
    /// second from time 0; what they raised.
    fn lone_flood(h: &mut Heuristics, id: &mut u64, victim: &str, n: u64) -> Vec<crate::heuristics::Detection> {
        let mut found = Vec::new();
        for i in 0..n {
            *id += 1;
            found.extend(h.observe(&rec(*id, "198.51.100.9", victim, 80, Proto::Tcp, i as f64 * 0.0005, 1, 0, "S0")));
        }
        found
    }

    /// While one flooder dominates a victim, its sources are re-counted at
    /// most every `RECOUNT_NS` rather than on each record; a distributed
    /// flood joining it is still reported, and no later than that after it
    /// outnumbers the flooder.
    #[test]
    fn a_distributed_flood_joining_a_lone_flooder_is_reported_within_the_recount_interval() {
        let mut h = Heuristics::new(DetectorConfig::default());
        let (mut found, mut id) = (Vec::new(), 0u64);
        let victim = "192.0.2.10";
        // A second of a lone flooder at 2000 SYNs/s: never "distributed".
        found.extend(lone_flood(&mut h, &mut id, victim, 2000));
        assert!(!found.iter().any(|d| d.kind == AttackKind::SynFlood && d.source.is_none()));
        // Then 4000 spoofed sources join it at 8000 a second (fewer than the
        // 4096 tracked per victim); track when the flooder's share drops below half.
        let (mut lone, mut others, mut outnumbered_at) = (2000u64, 0u64, None);
        for i in 0..5000u64 {
            let t = 1.0 + i as f64 * 0.0001;
            id += 1;
            let r = if i % 5 == 0 {
                lone += 1;
                rec(id, "198.51.100.9", victim, 80, Proto::Tcp, t, 1, 0, "S0")
            } else {
                others += 1;
                let src = format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
                rec(id, &src, victim, 80, Proto::Tcp, t, 1, 0, "S0")
            };
            if outnumbered_at.is_none() && (lone as f64) < 0.5 * (lone + others) as f64 {
                outnumbered_at = Some(t);
            }
            found.extend(h.observe(&r));
        }
        let at = outnumbered_at.expect("the spoofed sources outnumber the flooder");
        let d = found.iter().find(|d| d.kind == AttackKind::SynFlood && d.source.is_none()).expect("reported");
        let reported = d.ts_ns as f64 / 1e9;
        assert!(
            reported >= at - 1e-6 && reported <= at + super::RECOUNT_NS as f64 / 1e9 + 0.001,
            "outnumbered at {at:.4} s, reported at {reported:.4} s"
        );
    }

    /// A lone flooder that has already sent more SYNs than the 4096 sources
    /// tracked per victim can add up to must not hide a spoofed flood that
    /// joins it: the SYNs of sources the full table could not admit still
    /// count against the flooder's share.
    #[test]
    fn a_lone_flooder_with_more_syns_than_the_source_table_holds_does_not_mask_a_spoofed_flood() {
        let mut h = Heuristics::new(DetectorConfig::default());
        let (mut found, mut id) = (Vec::new(), 0u64);
        let victim = "192.0.2.10";
        // Five seconds of a lone flooder at 2000 SYNs/s: 10 000 SYNs, never "distributed".
        found.extend(lone_flood(&mut h, &mut id, victim, 10_000));
        assert!(!found.iter().any(|d| d.kind == AttackKind::SynFlood && d.source.is_none()));
        // Then 40 000 spoofed sources in two seconds, one SYN each, beside it.
        let mut lone = 10_000u64;
        for i in 0..40_000u64 {
            let t = 5.0 + i as f64 * 0.00005;
            id += 1;
            if i % 10 == 0 {
                lone += 1;
                found.extend(h.observe(&rec(id, "198.51.100.9", victim, 80, Proto::Tcp, t, 1, 0, "S0")));
            }
            let src = format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
            found.extend(h.observe(&rec(id, &src, victim, 80, Proto::Tcp, t, 1, 0, "S0")));
        }
        assert!(lone < 20_000, "the spoofed SYNs outnumber the flooder's");
        let d = found.iter().find(|d| d.kind == AttackKind::SynFlood && d.source.is_none());
        let d = d.expect("the spoofed flood is reported although the source table is full");
        assert!(d.reason.contains("at least"), "{}", d.reason);
    }

    /// A source's share is of the SYNs it sent within the window, as the
    /// victim's total is: a flooder that sent 60 000 SYNs half a minute ago
    /// and still trickles must not, by its lifetime count, hide a spoofed
    /// flood from 3 000 sources now (it did: counts only ever grew).
    #[test]
    fn an_old_flooder_still_trickling_does_not_mask_a_spoofed_flood_by_its_lifetime_count() {
        let mut h = Heuristics::new(DetectorConfig::default());
        let (mut found, mut id) = (Vec::new(), 0u64);
        let victim = "192.0.2.10";
        // 30 s at 2000 SYNs/s, then 20/s until the end.
        found.extend(lone_flood(&mut h, &mut id, victim, 60_000));
        let mut syn = |h: &mut Heuristics, src: &str, t: f64, found: &mut Vec<_>| {
            id += 1;
            found.extend(h.observe(&rec(id, src, victim, 80, Proto::Tcp, t, 1, 0, "S0")));
        };
        for k in 0..300u64 {
            syn(&mut h, "198.51.100.9", 30.0 + k as f64 * 0.05, &mut found);
        }
        assert!(!found.iter().any(|d| d.kind == AttackKind::SynFlood && d.source.is_none()), "nothing distributed yet");
        // From 45 s: 3 000 spoofed sources, two SYNs each, 6 000 in 3 s.
        for i in 0..6000u64 {
            let t = 45.0 + i as f64 * 0.0005;
            let j = i % 3000;
            syn(&mut h, &format!("10.0.{}.{}", j >> 8, j & 255), t, &mut found);
        }
        let d = found.iter().find(|d| d.kind == AttackKind::SynFlood && d.source.is_none());
        let d = d.expect("the spoofed flood is reported beside the old flooder's trickle");
        assert!(d.reason.contains("sources"), "{}", d.reason);
    }

    /// A steady lone flooder stays one dominant source window after window:
    /// its share does not dip when its count moves on to a new window.
    #[test]
    fn a_steady_lone_flooder_beside_a_few_others_is_never_called_distributed() {
        let mut h = Heuristics::new(DetectorConfig::default());
        let (mut found, mut id) = (Vec::new(), 0u64);
        let victim = "192.0.2.10";
        for i in 0..100_000u64 {
            let t = i as f64 * 0.0005;
            id += 1;
            found.extend(h.observe(&rec(id, "198.51.100.9", victim, 80, Proto::Tcp, t, 1, 0, "S0")));
            if i % 50 == 0 {
                id += 1;
                let j = (i / 50) % 40;
                let src = format!("203.0.113.{j}");
                found.extend(h.observe(&rec(id, &src, victim, 80, Proto::Tcp, t, 1, 0, "S0")));
            }
        }
        assert!(
            !found.iter().any(|d| d.kind == AttackKind::SynFlood && d.source.is_none()),
            "50 s of one flooder beside 40 light sources is not distributed: {:?}",
            found.iter().filter(|d| d.source.is_none()).map(|d| &d.reason).collect::<Vec<_>>()
        );
    }

    /// A flood big enough to make the router shed (admitting one in 4096
    /// unseen sources) reaches the detector as a trickle of flows plus shed
    /// counts; the counts keep its real rate visible. Without them the same
    /// trickle is below every threshold.
    #[test]
    fn a_flood_the_router_shed_is_still_seen_through_its_shed_counts() {
        let victim: std::net::IpAddr = "192.0.2.10".parse().unwrap();
        let trickle = |h: &mut Heuristics| {
            let mut found = Vec::new();
            for i in 0..20u64 {
                let src = format!("10.9.{}.{}", i >> 8, i & 255);
                found.extend(h.observe(&rec(i, &src, "192.0.2.10", 80, Proto::Tcp, i as f64 * 0.1, 1, 0, "S0")));
            }
            found
        };
        let mut without = Heuristics::new(DetectorConfig::default());
        assert!(trickle(&mut without).is_empty(), "20 sampled SYNs in 2 s are no flood");

        let mut h = Heuristics::new(DetectorConfig::default());
        let mut found = trickle(&mut h);
        for s in 0..4u64 {
            let c = ShedCount {
                dst: victim,
                dport: 80,
                proto: Proto::Tcp,
                frames: 40_000,
                syns: 40_000,
                last_ns: 1_000_000_000 + s * 500_000_000,
            };
            found.extend(h.observe_shed(&c));
        }
        let d = found.iter().find(|d| d.kind == AttackKind::SynFlood).expect("the shed flood is found");
        assert_eq!((d.source, d.target), (None, Some(victim)));
        assert!(d.reason.contains("shed by the router under overload"), "{}", d.reason);
        assert_eq!(found.len(), 1, "once per window: {found:?}");
        // Shed counts of other kinds (a UDP flood's frames, or no SYNs) are not SYNs.
        let mut udp = Heuristics::new(DetectorConfig::default());
        let c = ShedCount { dst: victim, dport: 53, proto: Proto::Udp, frames: 90_000, syns: 0, last_ns: 1 };
        assert!(udp.observe_shed(&c).is_none());
    }
}
