//! Fusion: heuristics, the model and the per-device baseline become one
//! stream of verdicts.
//!
//! * **Corroboration.** A heuristic or baseline finding about a source the
//!   model also calls an attack gets a higher confidence
//!   (`1 − (1 − c)(1 − p/2)`) and the model's numbers in its reason; at or
//!   above `detector.model_threshold` the model counts as a second detector
//!   that agrees (the response policy's `two_detectors_agree`).
//! * **Response.** The [`ResponsePolicy`] decides each finding: block,
//!   alert, or ignore, and names the rule that decided.
//! * **Model alone.** The model raises a finding by itself only when its
//!   attack probability stays at or above `detector.model_threshold` for
//!   `detector.model_batches` consecutive batches, and nothing else has
//!   already reported the source; its confidence is discounted (× 0.9).
//! * **One attack, one verdict stream.** Findings are grouped into
//!   *incidents* keyed by (source, kind) — or (victim, kind) for spoofed
//!   floods. An open incident swallows repeats (counted as de-duplicated)
//!   and re-issues its verdict only every `refresh_s` while the attack goes
//!   on, so the router's block is refreshed rather than re-added a thousand
//!   times. An incident closes `close_s` after its last evidence. A source
//!   with an open incident of any kind gets no model-only finding.
//! * **Rate limit.** A token bucket on capture time (`max_verdicts_per_s`,
//!   burst `verdict_burst`) caps new incidents; the rest are counted and
//!   dropped, so a storm of findings cannot flood the bus or the block set.
//! * **Suggested TTL.** `block_ttl_s`, halved below 0.9 confidence, and a
//!   quarter for baseline-only anomalies (an unusual upload is worth a short
//!   block and a look, not ten minutes of outage); at least 60 s.

use gatewarden_core::token_bucket::TokenBucket;
use std::net::IpAddr;

use crate::heuristics::Detection;
use crate::response::{Action, Decision, ResponsePolicy};
use gatewarden_proto::messages::AttackKind;

type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Most open incidents; beyond it the least recently active close first.
pub const MAX_INCIDENTS: usize = 65_536;

pub use gatewarden_proto::attack::Origin;

/// The model's view of one source in one batch.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelOpinion {
    /// 1 − P(benign).
    pub attack_p: f32,
    /// The most likely attack class name.
    pub class: String,
    /// The attack kind that class maps to for this source.
    pub kind: AttackKind,
    /// A sentence with the host statistics behind it.
    pub numbers: String,
    /// Named numbers.
    pub evidence: Vec<(String, f64)>,
    /// Snapshot time.
    pub ts_ns: u64,
    /// A target, port and flow of the source in this batch.
    pub target: Option<IpAddr>,
    /// Port of that flow.
    pub port: u16,
    /// Its flow id.
    pub flow_id: u64,
    /// Its protocol.
    pub proto: Option<gatewarden_proto::messages::Proto>,
    /// Busy enough for the model to flag it alone (see `roles::detector::MODEL_ALONE_MIN_PPS`).
    pub alone_ok: bool,
}

/// Fusion thresholds (from `[detector]`).
#[derive(Debug, Clone, PartialEq)]
pub struct FusionConfig {
    /// Model attack probability that counts by itself.
    pub model_threshold: f32,
    /// Consecutive batches at or above it.
    pub model_batches: u32,
    /// Seconds between verdict refreshes of an open incident.
    pub refresh_s: u64,
    /// Seconds without evidence after which an incident closes.
    pub close_s: u64,
    /// New incidents per second (capture time).
    pub max_verdicts_per_s: f64,
    /// Burst allowance of the rate limit.
    pub verdict_burst: f64,
    /// Base block TTL, seconds.
    pub block_ttl_s: u64,
    /// What each finding does (`[response]`). A classifier trained on a few
    /// labs' traffic, or a baseline, is wrong about some ordinary device
    /// somewhere; by default blocking needs an explainable rule or a second
    /// detector that agrees (issue #15).
    pub policy: ResponsePolicy,
}

impl Default for FusionConfig {
    fn default() -> Self {
        FusionConfig {
            model_threshold: 0.9,
            model_batches: 2,
            refresh_s: 300,
            close_s: 120,
            max_verdicts_per_s: 20.0,
            verdict_burst: 50.0,
            block_ttl_s: 600,
            policy: ResponsePolicy::default(),
        }
    }
}

/// One fused finding, ready to become an alert (and a verdict if it has a source).
#[derive(Debug, Clone, PartialEq)]
pub struct Fused {
    /// The finding with fused confidence, reason and evidence.
    pub detection: Detection,
    /// The detectors that agree on it.
    pub origins: Vec<Origin>,
    /// Suggested block TTL, seconds.
    pub ttl_s: u32,
    /// A refresh of an open incident rather than a new one.
    pub refresh: bool,
    /// What the response policy decided (block, alert, ignore) and by which rule.
    pub decision: Decision,
}

impl Fused {
    /// Whether the policy asks for a block.
    pub fn blocks(&self) -> bool {
        self.decision.action == Action::Block
    }
}

#[derive(Debug, Clone, Copy)]
struct Incident {
    opened_ns: u64,
    last_emit_ns: u64,
    last_seen_ns: u64,
}

/// What fusion dropped, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FusionStats {
    /// Findings folded into an open incident.
    pub deduplicated: u64,
    /// New incidents dropped by the rate limit.
    pub rate_limited: u64,
}

/// The fusion state.
pub struct Fusion {
    cfg: FusionConfig,
    incidents: HashMap<(IpAddr, AttackKind), Incident>,
    streaks: HashMap<IpAddr, (u32, u64)>,
    verdicts: TokenBucket,
    stats: FusionStats,
}

impl Fusion {
    /// New thresholds and limits (settings page); open incidents stay open.
    pub fn set_config(&mut self, cfg: FusionConfig) {
        self.verdicts.cap(cfg.verdict_burst);
        self.cfg = cfg;
    }

    /// Empty fusion state.
    pub fn new(cfg: FusionConfig) -> Fusion {
        let verdicts = TokenBucket::full(cfg.verdict_burst);
        Fusion {
            cfg,
            incidents: HashMap::default(),
            streaks: HashMap::default(),
            verdicts,
            stats: FusionStats::default(),
        }
    }

    /// Counters of what was folded or dropped.
    pub fn stats(&self) -> FusionStats {
        self.stats
    }

    /// Whether an opinion can raise an alert by itself, so its `numbers` and
    /// `evidence` are ever read: building them for every host of a spoofed
    /// flood cost more than the model run.
    pub fn model_alone_may_use(&self, attack_p: f32, alone_ok: bool) -> bool {
        attack_p >= self.cfg.model_threshold && alone_ok
    }

    /// Open incidents (bounded by [`MAX_INCIDENTS`]).
    pub fn open_incidents(&self) -> usize {
        self.incidents.len()
    }

    fn take_token(&mut self, now: u64) -> bool {
        self.verdicts.take(now, self.cfg.max_verdicts_per_s, self.cfg.verdict_burst).is_ok()
    }

    fn ttl(&self, confidence: f32, origins: &[Origin]) -> u32 {
        let base = self.cfg.block_ttl_s as f64;
        let mut ttl = if confidence >= 0.9 { base } else { base / 2.0 };
        if origins == [Origin::Baseline] {
            ttl = base / 4.0;
        }
        ttl.max(60.0).min(u32::MAX as f64) as u32
    }

    fn expire(&mut self, now: u64) {
        let close = self.cfg.close_s * 1_000_000_000;
        if self.incidents.len() >= MAX_INCIDENTS {
            self.incidents.retain(|_, i| i.last_seen_ns + close >= now);
            if self.incidents.len() >= MAX_INCIDENTS {
                let mut ages: Vec<u64> = self.incidents.values().map(|i| i.last_seen_ns).collect();
                let k = ages.len() / 8;
                let (_, &mut cutoff, _) = ages.select_nth_unstable(k);
                self.incidents.retain(|_, i| i.last_seen_ns > cutoff);
            }
        }
        if self.streaks.len() >= MAX_INCIDENTS {
            self.streaks.retain(|_, (_, t)| *t + close >= now);
            if self.streaks.len() >= MAX_INCIDENTS {
                self.streaks.clear();
            }
        }
    }

    /// Fuses one batch's findings with the model's opinions (per source).
    pub fn fuse(
        &mut self,
        findings: Vec<(Detection, Origin)>,
        opinions: &[(IpAddr, ModelOpinion)],
        now_ns: u64,
    ) -> Vec<Fused> {
        self.expire(now_ns);
        let close = self.cfg.close_s * 1_000_000_000;
        let refresh = self.cfg.refresh_s * 1_000_000_000;
        let opinion = |src: Option<IpAddr>| src.and_then(|s| opinions.iter().find(|(a, _)| *a == s).map(|(_, o)| o));
        let mut out: Vec<Fused> = Vec::new();
        for (mut d, origin) in findings {
            let mut origins = vec![origin];
            if let Some(o) = opinion(d.source) {
                if o.attack_p >= 0.5 {
                    let p = o.attack_p;
                    d.confidence = (1.0 - (1.0 - d.confidence) * (1.0 - 0.5 * p)).min(0.999);
                    d.reason = format!("{}; model agrees: {p:.2} {}", d.reason, o.class);
                    d.evidence.push(("model_attack_p".into(), p as f64));
                    // Only a confident model counts as a second, independent detector.
                    if p >= self.cfg.model_threshold {
                        origins.push(Origin::Model);
                    }
                }
            }
            // Several findings of one batch about the same incident: keep the first.
            let key = (d.source.or(d.target).unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)), d.kind);
            if out.iter().any(|f| (f.detection.source.or(f.detection.target), f.detection.kind) == (Some(key.0), key.1))
            {
                self.stats.deduplicated += 1;
                continue;
            }
            let ts = d.ts_ns.max(1);
            let mut is_refresh = false;
            if let Some(inc) = self.incidents.get_mut(&key) {
                if ts <= inc.last_seen_ns + close {
                    inc.last_seen_ns = inc.last_seen_ns.max(ts);
                    if ts < inc.last_emit_ns + refresh {
                        self.stats.deduplicated += 1;
                        continue;
                    }
                    inc.last_emit_ns = ts;
                    is_refresh = true;
                    let open_s = (ts - inc.opened_ns) as f64 / 1e9;
                    d.reason = format!("{} (ongoing for {open_s:.0} s)", d.reason);
                }
            }
            if !is_refresh {
                if !self.take_token(now_ns.max(ts)) {
                    self.stats.rate_limited += 1;
                    continue;
                }
                self.incidents.insert(key, Incident { opened_ns: ts, last_emit_ns: ts, last_seen_ns: ts });
            }
            let ttl_s = self.ttl(d.confidence, &origins);
            let decision = self.cfg.policy.decide(&d, &origins);
            out.push(Fused { detection: d, origins, ttl_s, refresh: is_refresh, decision });
        }
        // The model by itself, with hysteresis.
        for (src, o) in opinions {
            if !self.model_alone_may_use(o.attack_p, o.alone_ok) {
                // A streak of 0 is no entry: a flood of new sources adds none.
                self.streaks.remove(src);
                continue;
            }
            let streak = self.streaks.entry(*src).or_insert((0, 0));
            streak.0 += 1;
            streak.1 = o.ts_ns;
            let batches = streak.0;
            if batches < self.cfg.model_batches {
                continue;
            }
            let ts = o.ts_ns.max(1);
            let open = self.incidents.iter().any(|((a, _), i)| a == src && ts <= i.last_seen_ns + close)
                || out.iter().any(|f| f.detection.source == Some(*src));
            if open {
                // Keep the source's incidents alive while the model still sees the attack.
                for ((a, _), i) in self.incidents.iter_mut() {
                    if a == src {
                        i.last_seen_ns = i.last_seen_ns.max(ts);
                    }
                }
                continue;
            }
            if !self.take_token(now_ns.max(ts)) {
                self.stats.rate_limited += 1;
                continue;
            }
            self.incidents.insert((*src, o.kind), Incident { opened_ns: ts, last_emit_ns: ts, last_seen_ns: ts });
            let confidence = (o.attack_p * 0.9).min(0.99);
            let mut evidence = o.evidence.clone();
            evidence.push(("model_attack_p".into(), o.attack_p as f64));
            evidence.push(("batches".into(), batches as f64));
            let d = Detection {
                source: Some(*src),
                target: o.target,
                port: o.port,
                proto: o.proto,
                kind: o.kind,
                confidence,
                reason: format!(
                    "{src}: model says {} with p = {:.2} for {} batches; {}",
                    o.class, o.attack_p, batches, o.numbers
                ),
                evidence,
                ts_ns: ts,
                flow_id: o.flow_id,
            };
            let ttl_s = self.ttl(confidence, &[Origin::Model]);
            let decision = self.cfg.policy.decide(&d, &[Origin::Model]);
            out.push(Fused { detection: d, origins: vec![Origin::Model], ttl_s, refresh: false, decision });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::response::Rule;
    use gatewarden_proto::messages::Proto;

    fn det(src: &str, kind: AttackKind, t: f64) -> Detection {
        Detection {
            source: Some(src.parse().unwrap()),
            target: Some("198.51.100.10".parse().unwrap()),
            port: 22,
            proto: Some(Proto::Tcp),
            kind,
            confidence: 0.8,
            reason: format!("{src} → 5 connections to 198.51.100.10:22 (SSH) in 0.3 s"),
            evidence: vec![("connections".into(), 5.0)],
            ts_ns: (t * 1e9) as u64,
            flow_id: 1,
        }
    }

    fn opinion(p: f32, t: f64) -> ModelOpinion {
        ModelOpinion {
            attack_p: p,
            class: "scan".into(),
            kind: AttackKind::PortScan,
            numbers: "10 s window: 32 ports, 1 hosts, 300 packets/s".into(),
            evidence: vec![("ports_w10".into(), 32.0)],
            ts_ns: (t * 1e9) as u64,
            target: None,
            port: 0,
            flow_id: 9,
            proto: Some(Proto::Tcp),
            alone_ok: true,
        }
    }

    #[test]
    fn one_attack_gives_one_verdict_stream() {
        let mut f = Fusion::new(FusionConfig::default());
        let mut emitted = 0;
        // A finding every 100 ms for 10 minutes.
        for i in 0..6000 {
            let t = 1.0 + i as f64 * 0.1;
            emitted += f
                .fuse(vec![(det("192.0.2.66", AttackKind::BruteForce, t), Origin::Heuristics)], &[], (t * 1e9) as u64)
                .len();
        }
        // The first plus one refresh per 300 s.
        assert_eq!(emitted, 2);
        assert_eq!(f.stats().deduplicated, 5998);
    }

    #[test]
    fn the_model_corroborates_and_raises_confidence() {
        let mut f = Fusion::new(FusionConfig::default());
        let src: IpAddr = "192.0.2.66".parse().unwrap();
        let out = f.fuse(
            vec![(det("192.0.2.66", AttackKind::PortScan, 1.0), Origin::Heuristics)],
            &[(src, opinion(0.98, 1.0))],
            1_000_000_000,
        );
        assert_eq!(out.len(), 1);
        assert!(out[0].detection.confidence > 0.8);
        assert_eq!(out[0].origins, vec![Origin::Heuristics, Origin::Model]);
        assert!(out[0].detection.reason.contains("model agrees: 0.98 scan"), "{}", out[0].detection.reason);
    }

    #[test]
    fn the_model_alone_needs_consecutive_batches() {
        let mut f = Fusion::new(FusionConfig::default());
        let src: IpAddr = "192.0.2.77".parse().unwrap();
        assert!(f.fuse(vec![], &[(src, opinion(0.95, 1.0))], 1_000_000_000).is_empty());
        assert!(f.fuse(vec![], &[(src, opinion(0.5, 1.1))], 1_100_000_000).is_empty());
        assert!(f.fuse(vec![], &[(src, opinion(0.95, 1.2))], 1_200_000_000).is_empty());
        // A quiet host is never flagged by the model alone, however sure it is.
        let quiet = ModelOpinion { alone_ok: false, ..opinion(0.99, 1.25) };
        let other: IpAddr = "192.0.2.78".parse().unwrap();
        for i in 0..5 {
            assert!(f.fuse(vec![], &[(other, quiet.clone())], 1_250_000_000 + i).is_empty());
        }
        let out = f.fuse(vec![], &[(src, opinion(0.97, 1.3))], 1_300_000_000);
        assert_eq!(out.len(), 1);
        let d = &out[0].detection;
        assert!(d.reason.contains("p = 0.97") && d.reason.contains("32 ports"), "{}", d.reason);
        // Model alone at 0.97 × 0.9 < 0.9 confidence: half the base TTL.
        assert_eq!(out[0].ttl_s, 300);
        // And then it stays quiet while the incident is open.
        assert!(f.fuse(vec![], &[(src, opinion(0.99, 1.4))], 1_400_000_000).is_empty());
        // By default the model alone only alerts, and says which rule decided.
        assert!(!out[0].blocks() && out[0].decision.rule == Rule::ModelAlone, "{:?}", out[0]);
    }

    #[test]
    fn blocking_needs_evidence_or_agreement_unless_the_operator_lets_the_model_block() {
        let src: IpAddr = "192.0.2.79".parse().unwrap();
        let alone = |cfg: FusionConfig| {
            let mut f = Fusion::new(cfg);
            f.fuse(vec![], &[(src, opinion(0.99, 1.0))], 1_000_000_000);
            f.fuse(vec![], &[(src, opinion(0.99, 1.1))], 1_100_000_000).pop().unwrap()
        };
        assert!(!alone(FusionConfig::default()).blocks());
        let policy = ResponsePolicy::new(Default::default(), true);
        let forced = alone(FusionConfig { policy, ..Default::default() });
        assert!(forced.blocks() && forced.decision.rule == Rule::ModelAlone);
        // A heuristic finding blocks, alone or with the model agreeing.
        let mut f = Fusion::new(FusionConfig::default());
        let out = f.fuse(
            vec![(det("192.0.2.80", AttackKind::PortScan, 1.0), Origin::Heuristics)],
            &[("192.0.2.80".parse().unwrap(), opinion(0.98, 1.0))],
            1_000_000_000,
        );
        assert!(out[0].blocks() && out[0].decision.rule == Rule::DetectorsAgree, "{:?}", out[0]);
    }

    #[test]
    fn the_rate_limit_caps_new_incidents() {
        let cfg = FusionConfig { max_verdicts_per_s: 10.0, verdict_burst: 10.0, ..Default::default() };
        let mut f = Fusion::new(cfg);
        let mut findings = Vec::new();
        for i in 0..100u32 {
            let ip = std::net::Ipv4Addr::from(0xc000_0200 + i).to_string();
            findings.push((det(&ip, AttackKind::PortScan, 1.0), Origin::Heuristics));
        }
        let out = f.fuse(findings, &[], 1_000_000_000);
        assert_eq!(out.len(), 10);
        assert_eq!(f.stats().rate_limited, 90);
        // A second later, ten more tokens.
        let mut findings = Vec::new();
        for i in 100..200u32 {
            let ip = std::net::Ipv4Addr::from(0xc000_0200 + i).to_string();
            findings.push((det(&ip, AttackKind::PortScan, 2.0), Origin::Heuristics));
        }
        assert_eq!(f.fuse(findings, &[], 2_000_000_000).len(), 10);
    }

    #[test]
    fn baseline_only_findings_get_a_short_ttl() {
        let mut f = Fusion::new(FusionConfig::default());
        let mut d = det("192.0.2.11", AttackKind::Anomaly, 1.0);
        d.confidence = 0.7;
        let out = f.fuse(vec![(d, Origin::Baseline)], &[], 1_000_000_000);
        assert_eq!(out[0].ttl_s, 150);
    }

    #[test]
    fn the_baseline_alone_alerts_and_agreeing_with_the_model_blocks() {
        let src: IpAddr = "192.0.2.11".parse().unwrap();
        // An upload to a host the device never used (the baseline's new-host rule).
        let anomaly = || {
            let mut d = det("192.0.2.11", AttackKind::Anomaly, 1.0);
            d.confidence = 0.7;
            d.evidence = vec![("bytes_to_new_host_1s".into(), 263_000.0)];
            d
        };
        // The baseline alone: an alert that says which rule decided, no block.
        let mut f = Fusion::new(FusionConfig::default());
        let out = f.fuse(vec![(anomaly(), Origin::Baseline)], &[], 1_000_000_000);
        assert!(!out[0].blocks() && out[0].decision.rule == Rule::BaselineAlone, "{:?}", out[0]);
        // A model that leans towards attack but is not confident does not make two detectors.
        let mut f = Fusion::new(FusionConfig::default());
        let out = f.fuse(vec![(anomaly(), Origin::Baseline)], &[(src, opinion(0.6, 1.0))], 1_000_000_000);
        assert!(!out[0].blocks() && out[0].decision.rule == Rule::BaselineAlone, "{:?}", out[0]);
        // The baseline and a confident model agreeing: a block.
        let mut f = Fusion::new(FusionConfig::default());
        let out = f.fuse(vec![(anomaly(), Origin::Baseline)], &[(src, opinion(0.95, 1.0))], 1_000_000_000);
        assert!(out[0].blocks() && out[0].decision.rule == Rule::DetectorsAgree, "{:?}", out[0]);
        assert_eq!(out[0].origins, vec![Origin::Baseline, Origin::Model]);
    }

    #[test]
    fn an_ignored_kind_is_decided_as_ignore() {
        use crate::response::{Action, ResponseConfig};
        let cfg = ResponseConfig { brute_force: Action::Ignore, ..Default::default() };
        let mut f = Fusion::new(FusionConfig { policy: ResponsePolicy::new(cfg, false), ..Default::default() });
        let out =
            f.fuse(vec![(det("192.0.2.66", AttackKind::BruteForce, 1.0), Origin::Heuristics)], &[], 1_000_000_000);
        assert_eq!(out[0].decision.action, Action::Ignore);
        assert_eq!(out[0].decision.rule, Rule::KindIgnored);
    }

    #[test]
    fn incidents_are_bounded() {
        let mut f = Fusion::new(FusionConfig { max_verdicts_per_s: 1e9, verdict_burst: 1e9, ..Default::default() });
        for i in 0..(MAX_INCIDENTS as u32 + 5000) {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string();
            f.fuse(vec![(det(&ip, AttackKind::PortScan, 1.0), Origin::Heuristics)], &[], 1_000_000_000);
            assert!(f.open_incidents() <= MAX_INCIDENTS);
        }
    }
}
