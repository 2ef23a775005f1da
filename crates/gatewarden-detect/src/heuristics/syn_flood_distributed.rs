//! Distributed (spoofed) SYN flood: one victim receiving unanswered SYNs at
//! `syn_flood_pps` or more from more than 16 sources, none sending half of
//! them. Reported without a source (the addresses are likely forged, so the
//! SYN meter rate-limits rather than blocks); a lone flooder is
//! [`floods`](super::floods)' business and gets blocked there.

use std::net::IpAddr;

use gatewarden_proto::messages::{AttackKind, Proto};

use super::detection::{Detection, Observed};
use super::windows::{CountWindow, HashMap};
use crate::config::DetectorConfig;

/// Most destinations tracked for distributed floods.
pub const MAX_DESTS: usize = 16_384;

#[derive(Debug, Default)]
struct DestState {
    last_ns: u64,
    syn: CountWindow,
    /// Source → (last seen, SYN packets), bounded at 4096 entries.
    sources: HashMap<IpAddr, (u64, u64)>,
    reported_ns: u64,
}

/// Victims of unanswered SYNs, at most [`MAX_DESTS`] (least recently hit go first).
#[derive(Debug, Default)]
pub(super) struct Victims(HashMap<IpAddr, DestState>);

impl Victims {
    /// Counts the SYNs a half-open snapshot adds against its destination and returns a
    /// finding when the destination is flooded by many sources (once per window).
    pub(super) fn observe(&mut self, cfg: &DetectorConfig, o: &Observed) -> Option<Detection> {
        let (r, window_ns, syn_delta) = (o.r, o.window_ns, o.syn_delta);
        if !(o.half_open && syn_delta > 0) {
            return None;
        }
        let dests = &mut self.0;
        if !dests.contains_key(&r.dst) && dests.len() >= MAX_DESTS {
            if let Some(old) = dests.iter().min_by_key(|(_, d)| d.last_ns).map(|(k, _)| *k) {
                dests.remove(&old);
            }
        }
        let d = dests.entry(r.dst).or_default();
        d.last_ns = d.last_ns.max(r.last_ns);
        d.syn.push(r.last_ns, syn_delta);
        d.syn.trim(d.last_ns, window_ns);
        if d.sources.len() < 4096 || d.sources.contains_key(&r.src) {
            let e = d.sources.entry(r.src).or_insert((0, 0));
            *e = (r.last_ns, e.1 + syn_delta as u64);
        }
        let cutoff = d.last_ns.saturating_sub(window_ns);
        let pps = d.syn.rate(d.last_ns, window_ns);
        let due = pps >= cfg.syn_flood_pps as f64 && (d.reported_ns == 0 || r.last_ns >= d.reported_ns + window_ns);
        if due && d.sources.len() >= 4096 {
            d.sources.retain(|_, (t, _)| *t >= cutoff);
        }
        // Distributed means no single source dominates; a lone flooder is the
        // per-source detector's business (and gets blocked there).
        let (n_sources, top_share) = if due {
            let live: Vec<u64> = d.sources.values().filter(|(t, _)| *t >= cutoff).map(|(_, n)| *n).collect();
            let total: u64 = live.iter().sum();
            let top = live.iter().copied().max().unwrap_or(0);
            (live.len(), top as f64 / total.max(1) as f64)
        } else {
            (0, 1.0)
        };
        if !(due && n_sources > 16 && top_share < 0.5) {
            return None;
        }
        d.reported_ns = r.last_ns;
        let more = if n_sources >= 4096 { "at least " } else { "" };
        Some(Detection {
            source: None,
            target: Some(r.dst),
            port: r.dport,
            proto: Some(Proto::Tcp),
            kind: AttackKind::SynFlood,
            confidence: 0.9,
            reason: format!(
                "{} receives {} unanswered SYNs ({pps:.0}/s) from {more}{n_sources} sources: likely spoofed, so rate-limited by the SYN meter rather than blocked",
                r.dst, d.syn.total
            ),
            evidence: vec![("syn_pps".into(), pps), ("sources".into(), n_sources as f64)],
            ts_ns: r.last_ns,
            flow_id: r.flow_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::DetectorConfig;
    use crate::heuristics::testing::rec;
    use crate::heuristics::Heuristics;
    use gatewarden_proto::messages::{AttackKind, Proto};

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
}
