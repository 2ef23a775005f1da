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
//! * **Rate limit, fairly shared.** A token bucket on capture time
//!   (`max_verdicts_per_s`, burst `verdict_burst`) caps new incidents, so a
//!   storm of findings cannot flood the bus or the block set. A finding the
//!   bucket cannot pay for now is *held*, not dropped: the heuristics report
//!   a source once per window, so a dropped finding stayed unreported for
//!   that window as if it had been. When tokens come back, held findings
//!   take turns: the kind served least recently first, within it the
//!   source network (/24, /48) served least recently, within that the
//!   oldest. A hundred forged sources a second (a red-team decoy flood:
//!   647 host-sweep alerts and no alert for the real scan running
//!   alongside) then cannot starve a finding of another kind or from
//!   another network. Held findings are bounded ([`MAX_HELD`]; the kind and
//!   network holding the most lose their oldest) and wait at most
//!   `close_s`; what is dropped is counted (`rate_limited`) and said in a
//!   summary alert at most every [`SUMMARY_INTERVAL_NS`].
//! * **Suggested TTL.** `block_ttl_s`, halved below 0.9 confidence, and a
//!   quarter for baseline-only anomalies (an unusual upload is worth a short
//!   block and a look, not ten minutes of outage); at least 60 s.

use gatewarden_core::token_bucket::TokenBucket;
use std::net::IpAddr;

use crate::heuristics::Detection;
use crate::response::{Action, Decision, ResponsePolicy, Rule};
use gatewarden_proto::messages::AttackKind;

type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Most open incidents; beyond it the least recently active close first.
pub const MAX_INCIDENTS: usize = 65_536;

/// Most findings held for the rate limit: 51 s of tokens at the default 20/s, and
/// well under 1 MB (a finding with its reason and evidence is a few hundred bytes).
/// Beyond it one is dropped, and counted, from the kind holding the most and,
/// within it, the network holding the most: a flood's decoys push out each
/// other, not a lone finding from elsewhere.
pub const MAX_HELD: usize = 1024;

/// Source networks whose last turn is remembered for the fair share (32 bytes
/// each); beyond it the eighth served longest ago are forgotten, which only
/// makes them look new.
const MAX_TURNS: usize = 4096;

/// Capture time between two summary alerts of dropped findings: one alert per
/// 10 s says what a flood cost without becoming a flood of its own.
pub const SUMMARY_INTERVAL_NS: u64 = 10_000_000_000;

/// Most distinct networks a summary counts (it says "at least" beyond).
const MAX_SUMMARY_NETS: usize = 4096;

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
    /// The strongest action decided for it so far: a later finding decided more strongly
    /// is emitted at once, not folded in (an ignored or alert-only finding must not shield
    /// a blocking one of the same source and kind until the refresh).
    action: crate::response::Action,
}

/// A new incident waiting for a token of the rate limit.
#[derive(Debug)]
struct Held {
    detection: Detection,
    origins: Vec<Origin>,
    /// Arrival order: output order, and the oldest first within a network.
    seq: u64,
    /// The finding's source network (or its victim's, for a finding without a source).
    net: IpAddr,
    /// Capture time of the latest repeat, for the incident it opens.
    last_seen_ns: u64,
    /// Capture time at which it was held.
    held_ns: u64,
    /// Its source is proven real (it acknowledged what it was sent): served
    /// before the unproven when tokens are short, so decoys with forged
    /// addresses cannot queue a real attacker's finding out of its turn.
    proven: bool,
}

/// The /24 (IPv4) or /48 (IPv6) of an address: what one site or hosting customer
/// holds, so many addresses of one network share one turn.
fn network(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V4(v) => IpAddr::V4(std::net::Ipv4Addr::from(u32::from(v) & 0xffff_ff00)),
        IpAddr::V6(v) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v) & !((1u128 << 80) - 1))),
    }
}

/// Counts one fewer of `k`, forgetting it at zero.
fn decrement<K: std::hash::Hash + Eq>(m: &mut HashMap<K, usize>, k: K) {
    if let std::collections::hash_map::Entry::Occupied(mut e) = m.entry(k) {
        *e.get_mut() -= 1;
        if *e.get() == 0 {
            e.remove();
        }
    }
}

/// What the rate limit dropped since the last summary alert.
#[derive(Debug, Default)]
struct Dropped {
    by_kind: std::collections::BTreeMap<AttackKind, u64>,
    nets: HashSet<IpAddr>,
    first_ns: u64,
}

type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// What fusion dropped, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FusionStats {
    /// Findings folded into an open (or held) incident.
    pub deduplicated: u64,
    /// New incidents the rate limit dropped: held longer than `close_s`, or
    /// pushed out of the held findings ([`MAX_HELD`]).
    pub rate_limited: u64,
    /// Summary alerts of dropped findings.
    pub summaries: u64,
}

/// The fusion state.
pub struct Fusion {
    cfg: FusionConfig,
    incidents: HashMap<(IpAddr, AttackKind), Incident>,
    streaks: HashMap<IpAddr, (u32, u64)>,
    verdicts: TokenBucket,
    stats: FusionStats,
    /// New incidents waiting for a token, by incident key (at most [`MAX_HELD`]).
    held: HashMap<(IpAddr, AttackKind), Held>,
    /// Held findings per kind and per (kind, network): who loses one when full.
    held_kinds: HashMap<AttackKind, usize>,
    held_nets: HashMap<(AttackKind, IpAddr), usize>,
    next_seq: u64,
    /// Turns served so far; a kind's or network's last turn orders the next.
    turn: u64,
    kind_turns: HashMap<AttackKind, u64>,
    net_turns: HashMap<IpAddr, u64>,
    /// Dropped since the last summary alert.
    dropped: Dropped,
    last_summary_ns: Option<u64>,
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
            held: HashMap::default(),
            held_kinds: HashMap::default(),
            held_nets: HashMap::default(),
            next_seq: 0,
            turn: 0,
            kind_turns: HashMap::default(),
            net_turns: HashMap::default(),
            dropped: Dropped::default(),
            last_summary_ns: None,
        }
    }

    /// The response policy in force: what a finding would be decided alone.
    pub fn policy(&self) -> &ResponsePolicy {
        &self.cfg.policy
    }

    /// New incidents waiting for the rate limit (bounded by [`MAX_HELD`]).
    pub fn held(&self) -> usize {
        self.held.len()
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
        // A held finding whose attack stopped `close_s` ago would open an incident that is
        // already over.
        let stale: Vec<_> = self.held.iter().filter(|(_, h)| h.last_seen_ns + close < now).map(|(k, _)| *k).collect();
        for key in stale {
            self.drop_held(key, now);
        }
    }

    /// Holds a new incident until the rate limit has a token for it; when full, the
    /// oldest finding of the biggest network of the biggest kind goes (counted).
    fn hold(&mut self, key: (IpAddr, AttackKind), detection: Detection, origins: Vec<Origin>, now: u64, proven: bool) {
        let net = network(key.0);
        let seq = self.next_seq;
        self.next_seq += 1;
        let last_seen_ns = detection.ts_ns.max(1);
        self.held.insert(key, Held { detection, origins, seq, net, last_seen_ns, held_ns: now, proven });
        *self.held_kinds.entry(key.1).or_default() += 1;
        *self.held_nets.entry((key.1, net)).or_default() += 1;
        if self.held.len() > MAX_HELD {
            let kind = self.held_kinds.iter().max_by_key(|(k, n)| (**n, std::cmp::Reverse(**k))).map(|(k, _)| *k);
            let class = self
                .held_nets
                .iter()
                .filter(|((k, _), _)| Some(*k) == kind)
                .max_by_key(|((_, a), n)| (**n, std::cmp::Reverse(*a)))
                .map(|(c, _)| *c);
            // An unproven finding goes before a proven one: of the crowded class, else
            // of the crowded kind, else any (a lone proven finding is a class of its own).
            // One pass: the lowest (tier, arrival) wins; proven ones outside the class never.
            let tier = |k: &(IpAddr, AttackKind), h: &Held| {
                let in_class = Some((k.1, h.net)) == class;
                match (h.proven, in_class, Some(k.1) == kind) {
                    (false, true, _) => Some(0),
                    (false, false, true) => Some(1),
                    (false, false, false) => Some(2),
                    (true, true, _) => Some(3),
                    (true, false, _) => None,
                }
            };
            let victim = self.held.iter().filter_map(|(k, h)| Some((tier(k, h)?, h.seq, *k))).min().map(|(_, _, k)| k);
            if let Some(victim) = victim {
                self.drop_held(victim, now);
            }
        }
    }

    /// Takes `key` out of the held findings.
    fn unhold(&mut self, key: (IpAddr, AttackKind)) -> Option<Held> {
        let h = self.held.remove(&key)?;
        decrement(&mut self.held_kinds, key.1);
        decrement(&mut self.held_nets, (key.1, h.net));
        Some(h)
    }

    /// Drops a held finding: counted, and said in the next summary alert.
    fn drop_held(&mut self, key: (IpAddr, AttackKind), now: u64) {
        let Some(h) = self.unhold(key) else { return };
        self.stats.rate_limited += 1;
        let d = &mut self.dropped;
        if d.by_kind.is_empty() {
            d.first_ns = now;
        }
        *d.by_kind.entry(key.1).or_default() += 1;
        if d.nets.len() < MAX_SUMMARY_NETS {
            d.nets.insert(h.net);
        }
    }

    /// Marks a turn served to `kind` and `net`.
    fn served(&mut self, kind: AttackKind, net: IpAddr) {
        self.turn += 1;
        self.kind_turns.insert(kind, self.turn);
        if self.net_turns.len() >= MAX_TURNS && !self.net_turns.contains_key(&net) {
            let mut turns: Vec<u64> = self.net_turns.values().copied().collect();
            let (_, &mut cutoff, _) = turns.select_nth_unstable(MAX_TURNS / 8);
            self.net_turns.retain(|_, t| *t > cutoff);
        }
        self.net_turns.insert(net, self.turn);
    }

    /// Opens the held incidents the rate limit has tokens for: all of them, in arrival
    /// order, when there are enough; otherwise those from proven sources first, then
    /// one turn at a time to the kind served least recently, within it to the network
    /// served least recently, within that to the oldest finding.
    fn release(&mut self, now: u64) -> Vec<(u64, Fused)> {
        let (rate, burst) = (self.cfg.max_verdicts_per_s, self.cfg.verdict_burst);
        self.verdicts.refill(now, rate, burst);
        let tokens = self.verdicts.tokens().max(0.0).floor() as usize;
        // Enough tokens for all: no turns to take (the usual case, and arrival order stays).
        let fair = self.held.len() > tokens;
        let mut all: Vec<(IpAddr, AttackKind)> = if fair { Vec::new() } else { self.held.keys().copied().collect() };
        let mut out = Vec::with_capacity(tokens.min(self.held.len()));
        while !self.held.is_empty() {
            let key = if !fair {
                let Some(key) = all.pop() else { break };
                key
            } else {
                let (kinds, nets) = (&self.kind_turns, &self.net_turns);
                let turn = |k: &(IpAddr, AttackKind), h: &Held| {
                    (!h.proven, kinds.get(&k.1).copied().unwrap_or(0), nets.get(&h.net).copied().unwrap_or(0), h.seq)
                };
                let Some((&key, _)) = self.held.iter().min_by_key(|(k, h)| turn(k, h)) else { break };
                key
            };
            if self.verdicts.take(now, rate, burst).is_err() {
                break;
            }
            let Some(h) = self.unhold(key) else { continue };
            self.served(key.1, h.net);
            let Held { detection: mut d, origins, seq, last_seen_ns, held_ns, .. } = h;
            let ts = d.ts_ns.max(1);
            if now > held_ns {
                let waited = (now - held_ns) as f64 / 1e9;
                d.reason = format!("{} (held {waited:.1} s by the verdict rate limit)", d.reason);
            }
            let ttl_s = self.ttl(d.confidence, &origins);
            let decision = self.cfg.policy.decide(&d, &origins);
            self.incidents
                .insert(key, Incident { opened_ns: ts, last_emit_ns: ts, last_seen_ns, action: decision.action });
            out.push((seq, Fused { detection: d, origins, ttl_s, refresh: false, decision }));
        }
        out
    }

    /// One alert about what the rate limit dropped since the last one, at most every
    /// [`SUMMARY_INTERVAL_NS`]: no finding goes unsaid, and the operator sees that
    /// many sources at once (what forged decoys look like) hit the budget.
    fn summary(&mut self, now: u64) -> Option<Fused> {
        if self.dropped.by_kind.is_empty() || self.last_summary_ns.is_some_and(|t| now < t + SUMMARY_INTERVAL_NS) {
            return None;
        }
        let Dropped { by_kind, nets, first_ns } = std::mem::take(&mut self.dropped);
        self.last_summary_ns = Some(now);
        self.stats.summaries += 1;
        let total: u64 = by_kind.values().sum();
        let kinds: Vec<String> = by_kind.iter().map(|(k, n)| format!("{} {n}", k.as_str())).collect();
        let at_least = if nets.len() >= MAX_SUMMARY_NETS { "at least " } else { "" };
        let reason = format!(
            "verdict rate limit: {total} new findings dropped in {:.1} s ({}) from {at_least}{} networks (/24, /48), \
             each held up to {} s for a token; the budget is {} new incidents/s, burst {} \
             (detector.max_verdicts_per_s, verdict_burst), shared in turns by kind and source network; \
             many sources at once is what forged decoys look like",
            now.saturating_sub(first_ns) as f64 / 1e9,
            kinds.join(", "),
            nets.len(),
            self.cfg.close_s,
            self.cfg.max_verdicts_per_s,
            self.cfg.verdict_burst,
        );
        let mut evidence = vec![("dropped".to_string(), total as f64), ("networks".to_string(), nets.len() as f64)];
        evidence.extend(by_kind.iter().map(|(k, n)| (format!("dropped_{}", k.as_str()), *n as f64)));
        let detection = Detection {
            source: None,
            target: None,
            port: 0,
            proto: None,
            kind: AttackKind::System,
            confidence: 1.0,
            reason,
            evidence,
            ts_ns: now,
            flow_id: 0,
        };
        let decision = Decision { action: Action::Alert, rule: Rule::VerdictBudget };
        Some(Fused { detection, origins: Vec::new(), ttl_s: 0, refresh: false, decision })
    }

    /// The end of the input (a replay's last batch): nothing later will
    /// release what is still held, so it is dropped, counted, and said in a
    /// last summary alert at once, never lost without a word.
    pub fn finish(&mut self, now_ns: u64) -> Option<Fused> {
        let keys: Vec<_> = self.held.keys().copied().collect();
        for key in keys {
            self.drop_held(key, now_ns);
        }
        self.last_summary_ns = None;
        self.summary(now_ns)
    }

    /// Fuses one batch's findings with the model's opinions (per source),
    /// knowing no source to be proven real (see [`Fusion::fuse_knowing`]).
    pub fn fuse(
        &mut self,
        findings: Vec<(Detection, Origin)>,
        opinions: &[(IpAddr, ModelOpinion)],
        now_ns: u64,
    ) -> Vec<Fused> {
        self.fuse_knowing(findings, opinions, now_ns, |_| false)
    }

    /// Fuses one batch's findings with the model's opinions (per source).
    /// `proven` says which sources are proven real (they acknowledged what
    /// they were sent): when the verdict rate limit is short of tokens their
    /// findings are opened first, so a flood of findings about forged
    /// addresses (decoys, each its own network) cannot hold a real
    /// attacker's back until it expires.
    pub fn fuse_knowing(
        &mut self,
        findings: Vec<(Detection, Origin)>,
        opinions: &[(IpAddr, ModelOpinion)],
        now_ns: u64,
        proven: impl Fn(IpAddr) -> bool,
    ) -> Vec<Fused> {
        self.expire(now_ns);
        let close = self.cfg.close_s * 1_000_000_000;
        let refresh = self.cfg.refresh_s * 1_000_000_000;
        let opinion = |src: Option<IpAddr>| src.and_then(|s| opinions.iter().find(|(a, _)| *a == s).map(|(_, o)| o));
        // (arrival order, finding): refreshes now, new incidents when the rate limit releases them.
        let mut out: Vec<(u64, Fused)> = Vec::new();
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
            // Several findings about one incident waiting for the rate limit: keep the first,
            // unless a later one is decided more strongly by a heuristic rule of its own (a
            // sweep's narrow report, alerted, and its wide one, blocked, in one batch: keeping
            // the first opened the incident as an alert and the block waited a window).
            let key = (d.source.or(d.target).unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)), d.kind);
            let ts = d.ts_ns.max(1);
            if let Some(h) = self.held.get_mut(&key) {
                h.last_seen_ns = h.last_seen_ns.max(ts);
                self.stats.deduplicated += 1;
                let policy = &self.cfg.policy;
                let stronger = origins.first() == Some(&Origin::Heuristics) && {
                    let (new, old) = (policy.decide(&d, &origins), policy.decide(&h.detection, &h.origins));
                    new.action < old.action && new.rule != Rule::DetectorsAgree
                };
                if stronger {
                    (h.detection, h.origins) = (d, origins);
                }
                continue;
            }
            let mut is_refresh = false;
            if let Some(inc) = self.incidents.get_mut(&key) {
                if ts <= inc.last_seen_ns + close {
                    inc.last_seen_ns = inc.last_seen_ns.max(ts);
                    if ts < inc.last_emit_ns + refresh {
                        let decision = self.cfg.policy.decide(&d, &origins);
                        // Stronger than anything decided for it yet, by a heuristic rule of its
                        // own (not a model agreeing for one batch): at once, at most twice an
                        // incident (ignore → alert → block); a block pays a verdict token like a
                        // new incident, so many incidents escalating at once keep the rate limit.
                        let escalate = decision.action < inc.action
                            && origins.first() == Some(&Origin::Heuristics)
                            && decision.rule != Rule::DetectorsAgree
                            && (decision.action != crate::response::Action::Block
                                || self
                                    .verdicts
                                    .take(now_ns, self.cfg.max_verdicts_per_s, self.cfg.verdict_burst)
                                    .is_ok());
                        if escalate {
                            let (was, verb) = (
                                inc.action,
                                if decision.action == crate::response::Action::Block { "blocks" } else { "alerts" },
                            );
                            inc.action = decision.action;
                            inc.last_emit_ns = ts;
                            let open_s = (ts - inc.opened_ns) as f64 / 1e9;
                            d.reason = format!(
                                "{} (ongoing for {open_s:.0} s; this finding now {verb}: the incident was decided \
                                 `{}` until now)",
                                d.reason,
                                was.as_str()
                            );
                            let ttl_s = self.ttl(d.confidence, &origins);
                            let seq = self.next_seq;
                            self.next_seq += 1;
                            out.push((seq, Fused { detection: d, origins, ttl_s, refresh: true, decision }));
                            continue;
                        }
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
                let proven = d.source.is_some_and(&proven);
                self.hold(key, d, origins, now_ns, proven);
                continue;
            }
            let ttl_s = self.ttl(d.confidence, &origins);
            let decision = self.cfg.policy.decide(&d, &origins);
            if let Some(inc) = self.incidents.get_mut(&key) {
                inc.action = inc.action.min(decision.action);
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            out.push((seq, Fused { detection: d, origins, ttl_s, refresh: true, decision }));
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
                || self.held.keys().any(|(a, _)| a == src);
            if open {
                // Keep the source's incidents alive while the model still sees the attack.
                for ((a, _), i) in self.incidents.iter_mut() {
                    if a == src {
                        i.last_seen_ns = i.last_seen_ns.max(ts);
                    }
                }
                continue;
            }
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
            self.hold((*src, o.kind), d, vec![Origin::Model], now_ns, proven(*src));
        }
        out.extend(self.release(now_ns));
        out.sort_unstable_by_key(|(seq, _)| *seq);
        let mut out: Vec<Fused> = out.into_iter().map(|(_, f)| f).collect();
        out.extend(self.summary(now_ns));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    /// The bucket caps new incidents; the rest wait their turn rather than vanish.
    #[test]
    fn the_rate_limit_caps_new_incidents_and_holds_the_rest() {
        let cfg = FusionConfig { max_verdicts_per_s: 10.0, verdict_burst: 10.0, ..Default::default() };
        let mut f = Fusion::new(cfg);
        let scans = |from: u32, t: f64| {
            (from..from + 100)
                .map(|i| {
                    let ip = std::net::Ipv4Addr::from(0xc000_0200 + i).to_string();
                    (det(&ip, AttackKind::PortScan, t), Origin::Heuristics)
                })
                .collect::<Vec<_>>()
        };
        let out = f.fuse(scans(0, 1.0), &[], 1_000_000_000);
        assert_eq!(out.len(), 10);
        assert_eq!((f.held(), f.stats().rate_limited), (90, 0));
        // A second later, ten more tokens: for the oldest held (one network, one kind: in order).
        let out = f.fuse(scans(100, 2.0), &[], 2_000_000_000);
        let firsts: Vec<String> = out.iter().map(|o| o.detection.source.unwrap().to_string()).collect();
        assert_eq!(
            firsts,
            (10..20).map(|i| std::net::Ipv4Addr::from(0xc000_0200u32 + i).to_string()).collect::<Vec<_>>()
        );
        assert!(
            out[0].detection.reason.ends_with("(held 1.0 s by the verdict rate limit)"),
            "{}",
            out[0].detection.reason
        );
        assert_eq!(f.held(), 180);
    }

    /// Decoys with forged addresses, each of its own network, arriving faster than the
    /// verdict budget: a real scanner's finding among them waited its network's turn
    /// behind every decoy network and expired unopened. Proven sources go first.
    #[test]
    fn a_proven_sources_finding_is_opened_before_decoys_from_forged_networks() {
        let cfg = FusionConfig { max_verdicts_per_s: 10.0, verdict_burst: 10.0, close_s: 5, ..Default::default() };
        let real: IpAddr = "203.0.113.7".parse().unwrap();
        // 100 new decoy networks every 100 ms (223.x.y.0/24, above the real one's, which
        // the crowding rule then picked to drop first), 1 000 findings a second.
        let decoys = |step: u32, t: f64| {
            (0..100u32)
                .map(|i| {
                    let ip = std::net::Ipv4Addr::from(0xdf00_0000 + ((step * 100 + i) << 8));
                    (det(&ip.to_string(), AttackKind::PortScan, t), Origin::Heuristics)
                })
                .collect::<Vec<_>>()
        };
        let opened_after = |knows_proof: bool| -> Option<f64> {
            let mut f = Fusion::new(cfg.clone());
            for step in 0..100u32 {
                let t = 1.0 + step as f64 * 0.1;
                let mut findings = decoys(step, t);
                if step == 5 {
                    findings.push((det("203.0.113.7", AttackKind::PortScan, t), Origin::Heuristics));
                }
                let out = f.fuse_knowing(findings, &[], (t * 1e9) as u64, |a| knows_proof && a == real);
                if out.iter().any(|o| o.detection.source == Some(real)) {
                    return Some(t - 1.5);
                }
            }
            None
        };
        // Not knowing which source is real (what fusion did before), the finding waits
        // behind hundreds of decoy networks and is dropped when its incident closes.
        assert_eq!(opened_after(false), None);
        // Knowing, it is opened with the next token (10 a second).
        let waited = opened_after(true).expect("the proven scanner's finding is opened");
        assert!(waited <= 0.15, "opened {waited:.2} s after it arrived");
    }

    /// What the rate limit cannot let through is bounded, and what it drops is counted and
    /// said: at most one summary alert per interval, no source, nobody blocked.
    #[test]
    fn held_findings_are_bounded_and_what_is_dropped_is_counted_and_said() {
        let mut f = Fusion::new(FusionConfig::default());
        let (mut offered, mut emitted, mut summaries) = (0u64, 0u64, Vec::new());
        // 2000 decoys a second for 20 s, each from its own address of 10.0.0.0/8.
        for b in 0..200u32 {
            let t = b as f64 * 0.1;
            let findings: Vec<_> = (200 * b..200 * (b + 1))
                .map(|i| {
                    (
                        det(&std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string(), AttackKind::HostSweep, t),
                        Origin::Heuristics,
                    )
                })
                .collect();
            offered += findings.len() as u64;
            for o in f.fuse(findings, &[], (t * 1e9) as u64) {
                if o.detection.kind == AttackKind::System {
                    summaries.push((t, o));
                } else {
                    emitted += 1;
                }
            }
            assert!(f.held() <= MAX_HELD);
        }
        let st = f.stats();
        // Nothing lost silently: every finding came out, waits, or was counted as dropped.
        assert_eq!(emitted + f.held() as u64 + st.rate_limited, offered);
        assert!(emitted <= 50 + 20 * 20, "{emitted}");
        assert!(st.rate_limited > 30_000, "{st:?}");
        assert_eq!(st.summaries, summaries.len() as u64);
        // One summary at the first drop, then one per interval.
        assert_eq!(summaries.iter().map(|(t, _)| (*t * 10.0).round() as u32).collect::<Vec<_>>(), vec![5, 105]);
        let s = &summaries[0].1;
        assert!(s.detection.source.is_none() && !s.blocks() && s.decision.rule == Rule::VerdictBudget, "{s:?}");
        assert!(s.detection.reason.contains("host_sweep"), "{}", s.detection.reason);
        let dropped: f64 = summaries.iter().map(|(_, s)| s.detection.evidence[0].1).sum();
        assert!(dropped > 0.0 && dropped <= st.rate_limited as f64);
    }

    /// A held finding whose attack stopped `close_s` ago is dropped (counted), not opened late.
    #[test]
    fn held_findings_expire_with_their_incident() {
        let cfg = FusionConfig { max_verdicts_per_s: 0.001, verdict_burst: 1.0, ..Default::default() };
        let mut f = Fusion::new(cfg);
        let two = vec![
            (det("192.0.2.1", AttackKind::PortScan, 1.0), Origin::Heuristics),
            (det("198.51.100.2", AttackKind::PortScan, 1.0), Origin::Heuristics),
        ];
        assert_eq!(f.fuse(two, &[], 1_000_000_000).len(), 1);
        assert_eq!(f.held(), 1);
        assert!(f.fuse(vec![], &[], 100_000_000_000).is_empty());
        let out = f.fuse(vec![], &[], 122_000_000_000);
        assert_eq!((f.held(), f.stats().rate_limited), (0, 1));
        assert_eq!(out.len(), 1, "the summary");
        assert_eq!(out[0].detection.kind, AttackKind::System);
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

    /// An incident opened by a finding the policy ignores or only alerts on used to fold
    /// every later finding of the same source and kind into itself until its refresh (300 s):
    /// a source that first swept hosts that answered (`sweep_mostly_answered`: ignored) or
    /// port-scanned its own server (`scan_mostly_answered`: alert) then swept or scanned for
    /// real, unblocked, for five minutes. A later finding the policy decides more strongly
    /// is emitted at once (and at most twice an incident: to alert, to block).
    #[test]
    fn a_weaker_incident_does_not_swallow_a_later_finding_that_blocks() {
        use crate::response::Action;
        for (kind, weak) in [(AttackKind::HostSweep, Action::Ignore), (AttackKind::PortScan, Action::Alert)] {
            let mut f = Fusion::new(FusionConfig::default());
            let at = |t: f64, pct: f64| {
                let mut d = det("192.0.2.66", kind, t);
                d.evidence = vec![("unanswered_pct".into(), pct)];
                vec![(d, Origin::Heuristics)]
            };
            let first = f.fuse(at(1.0, 10.0), &[], 1_000_000_000);
            assert_eq!(first.iter().map(|o| o.decision.action).collect::<Vec<_>>(), vec![weak], "{kind:?}");
            let mut later = Vec::new();
            for i in 0..20 {
                let t = 11.0 + f64::from(i) * 0.5;
                later.extend(f.fuse(at(t, 95.0), &[], (t * 1e9) as u64));
            }
            let actions: Vec<_> = later.iter().map(|o| o.decision.action).collect();
            assert_eq!(actions, vec![Action::Block], "{kind:?}: {later:?}");
            assert!(later[0].detection.reason.contains("now blocks"), "{}", later[0].detection.reason);
        }
    }

    /// 2 500 sources whose sweeps were answered (ignored) open incidents through the rate
    /// limit over 110 s; then all of them sweep unanswered hosts in one batch. An escalation
    /// to block pays a verdict token like a new incident: before, 2 230 blocks went out in
    /// that one batch (burst 50, 20/s; third review of session 28).
    #[test]
    fn escalations_to_block_pay_the_verdict_rate_limit() {
        use crate::response::Action;
        let mut f = Fusion::new(FusionConfig::default());
        let src = |i: u32| format!("10.{}.{}.1", i / 256, i % 256);
        let at = |i: u32, t: f64, pct: f64| {
            let mut d = det(&src(i), AttackKind::HostSweep, t);
            d.evidence = vec![("unanswered_pct".into(), pct)];
            (d, Origin::Heuristics)
        };
        for s in 1..=110u32 {
            let t = f64::from(s);
            f.fuse((0..2500).map(|i| at(i, t, 10.0)).collect(), &[], (t * 1e9) as u64);
        }
        let out = f.fuse((0..2500).map(|i| at(i, 111.0, 95.0)).collect(), &[], 111_000_000_000);
        let blocks = out.iter().filter(|o| o.decision.action == Action::Block).count();
        assert!(blocks <= f.cfg.verdict_burst as usize, "{blocks} blocks in one batch");
        assert!(blocks > 0);
    }

    /// A NAS backup (a baseline surge, ignored alone) every 10 s for five minutes, and the
    /// model agreeing at p = 0.95 on one batch only: the ignored incident is not escalated on
    /// one batch's agreement of two statistical detectors (third review of session 28: it
    /// was blocked at 61 s). Escalation is for a finding whose own rule blocks.
    #[test]
    fn one_batch_of_model_agreement_does_not_escalate_an_ignored_surge() {
        use crate::response::Action;
        let mut f = Fusion::new(FusionConfig::default());
        let mut got = Vec::new();
        for k in 0..30u32 {
            let t = 1.0 + f64::from(k) * 10.0;
            let mut d = det("192.168.1.20", AttackKind::Anomaly, t);
            d.evidence = vec![("bytes_1s".into(), 5e7)];
            let ops = if k == 6 { vec![("192.168.1.20".parse().unwrap(), opinion(0.95, t))] } else { vec![] };
            for o in f.fuse(vec![(d, Origin::Baseline)], &ops, (t * 1e9) as u64) {
                got.push((t, o.decision.action, o.decision.rule.as_str()));
            }
        }
        assert!(got.iter().all(|(_, a, _)| *a != Action::Block), "{got:?}");
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

    /// The red team's decoy flood (`tools/make_traffic_pcap.py decoys`), fused as the detector would: from
    /// 0 s to 30 s, 100 spoofed sources a second, each a host sweep of port 23, in batches of
    /// 100 ms; at 10.5 s one finding from a real scanner. The heuristics report a source's
    /// finding once per window, so that one finding is all fusion gets. Returns what was
    /// emitted, with the batch time it came out at.
    fn decoy_flood(decoy: impl Fn(u32) -> IpAddr, real: Detection) -> (Fusion, Vec<(f64, Fused)>) {
        let mut f = Fusion::new(FusionConfig::default());
        let mut emitted = Vec::new();
        for b in 0..300u32 {
            let t = b as f64 * 0.1;
            let mut findings = Vec::new();
            for k in 10 * b..10 * (b + 1) {
                let mut d = det("192.0.2.1", AttackKind::HostSweep, t);
                (d.source, d.target, d.port) = (Some(decoy(k)), None, 23);
                findings.push((d, Origin::Heuristics));
            }
            if b == 105 {
                findings.push((real.clone(), Origin::Heuristics));
            }
            emitted.extend(f.fuse(findings, &[], (t * 1e9) as u64).into_iter().map(|o| (t, o)));
        }
        (f, emitted)
    }

    /// When the real finding came out, and how many findings came out in all.
    fn real_out(emitted: &[(f64, Fused)], real: &Detection) -> (Option<f64>, usize) {
        let at = emitted.iter().find(|(_, o)| o.detection.source == real.source && o.detection.kind == real.kind);
        (at.map(|(t, _)| *t), emitted.len())
    }

    /// Defect: 647 decoy alerts, the real scan dropped (and then muted by the heuristics'
    /// once-per-window rule). The decoys are spread over 12 /24s of 100.64.0.0/10, the
    /// scan is another kind.
    #[test]
    fn a_flood_of_decoy_findings_does_not_starve_a_real_scan() {
        let decoy =
            |k: u32| IpAddr::V4(std::net::Ipv4Addr::new(100, 64 + ((k >> 16) & 63) as u8, (k >> 8) as u8, k as u8));
        let real = det("198.51.100.66", AttackKind::PortScan, 10.5);
        let (_, emitted) = decoy_flood(decoy, real.clone());
        let (at, n) = real_out(&emitted, &real);
        assert!(at.is_some_and(|t| t <= 11.5), "the real scan came out at {at:?}; {n} findings did");
        // Still bounded: the burst plus the rate over 30 s, and a summary now and then.
        assert!(n <= 50 + 20 * 30 + 3 + 1, "{n}");
    }

    /// The same, with decoys of the real finding's own kind: the other network still gets its turn.
    #[test]
    fn decoys_of_the_same_kind_do_not_starve_another_network() {
        let decoy = |k: u32| IpAddr::V4(std::net::Ipv4Addr::new(100, 64, (k >> 8) as u8, k as u8));
        let mut real = det("198.51.100.66", AttackKind::HostSweep, 10.5);
        (real.target, real.port) = (None, 23);
        let (_, emitted) = decoy_flood(decoy, real.clone());
        let (at, n) = real_out(&emitted, &real);
        assert!(at.is_some_and(|t| t <= 11.5), "the real sweep came out at {at:?}; {n} findings did");
    }

    /// Decoys each from a /24 of their own (no network fairness can tell them apart) still
    /// cannot starve a finding of another kind.
    #[test]
    fn decoys_from_every_network_do_not_starve_another_kind() {
        let decoy = |k: u32| IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0001 + (k << 8)));
        let real = det("198.51.100.66", AttackKind::PortScan, 10.5);
        let (_, emitted) = decoy_flood(decoy, real.clone());
        let (at, n) = real_out(&emitted, &real);
        assert!(at.is_some_and(|t| t <= 11.5), "the real scan came out at {at:?}; {n} findings did");
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

    /// A replay ends with findings still waiting for the budget: they are
    /// counted and said in one summary alert, not silently forgotten.
    #[test]
    fn findings_still_held_when_the_input_ends_are_counted_and_said() {
        let mut f = Fusion::new(FusionConfig::default());
        let findings: Vec<_> = (0..200u32)
            .map(|i| (det(&format!("10.{}.{}.1", i / 250, i % 250), AttackKind::PortScan, 1.0), Origin::Heuristics))
            .collect();
        let out = f.fuse(findings, &[], 1_000_000_000);
        let held = f.held();
        assert!(held > 0, "more findings than the burst are held ({} out)", out.len());
        let summary = f.finish(1_100_000_000).expect("a last summary");
        assert_eq!(summary.detection.kind, AttackKind::System);
        assert!(
            summary.detection.reason.contains(&format!("{held} new findings dropped")),
            "{}",
            summary.detection.reason
        );
        assert_eq!((f.held(), f.stats().rate_limited), (0, held as u64));
        assert!(f.finish(1_200_000_000).is_none(), "nothing more to say");
    }
}
