//! Suggested relationships and learning from the administrator's answers.
//!
//! A suggestion's confidence combines two numbers (see docs/POLICY.md):
//! - **evidence** `e` ∈ [0.01, 0.99] from the traffic itself (how many flows,
//!   how many answered, in how many time buckets; or scan/brute-force signs);
//! - **feedback** `m`, the mean of a Beta(α, β) posterior for the
//!   suggestion's *context* (kind × protocol class × direction × volume),
//!   starting from Beta(1, 1): `m = α / (α + β)`; accept adds 1 to α,
//!   reject adds 1 to β.
//!
//! `confidence = e·m / (e·m + (1−e)(1−m))` — the odds of the evidence times
//! the odds of the feedback. With no feedback (m = ½) confidence equals the
//! evidence; each accept of similar suggestions raises it, each reject lowers it.
//!
//! A deny is for a whole group, so its reason says how many distinct member
//! addresses did what it cites; when that is one address, its evidence is
//! weighted by [`ONE_MEMBER_WEIGHT`] and the reason names the device to look
//! at (a rule here is always group to group: a group of its own denies it alone).
//! Only scan and brute-force alerts about a source proven real (`proof.rs`)
//! count towards a deny, or name a member: anyone on the LAN can forge an
//! alert's source address. The others are shown, and said not to count.
//!
//! Every suggestion also names the routers its evidence came from (the
//! flows, the alerts, and the neighbour tables that made an address a MAC
//! member's): the matrix is fleet-wide and an accepted rule applies to every
//! router, while each report is one router's word, and a router with a
//! stolen certificate can report anything, proofs included (the flows that
//! prove an alert's source may come from the router that sent the alert).
//! When the evidence is one router's while others report too, the reason
//! says so ("evidence from router-3 only"). It is said, not weighted: in a
//! fleet of several sites each router sees its own site's members, so
//! another router's silence proves nothing, and a weight for it would let a
//! stolen certificate halve every honest router's suggestion with one flow
//! (found by review). Evidence counted before routers were recorded is
//! never put down to the router that reported after it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::matrix::{Cell, CellKey, Membership, Routers, Sources, TrafficMatrix};
use super::model::{Action, PortRange, Protocol, Relationship};
use super::proof::Claim;
use super::rules::Policy;
use gatewarden_proto::messages::{Alert, AttackKind};

/// Default number of suggestions shown.
pub const DEFAULT_TOP_N: usize = 10;
/// Priority given to suggested allow rules (above suggested denies, so an
/// accepted deny for a scan never cuts a service the pair already uses).
pub const ALLOW_PRIORITY: i32 = 100;
/// Priority given to suggested deny rules for one port (brute force).
pub const PORT_DENY_PRIORITY: i32 = 50;
/// Priority given to suggested deny rules for a whole protocol (scans).
pub const SCAN_DENY_PRIORITY: i32 = 10;
/// Remembered rejected suggestions (not proposed again).
pub const MAX_REJECTED: usize = 1024;
/// Remembered alert tallies per group pair.
pub const MAX_ALERT_PAIRS: usize = 4096;
/// Flows after which an allow pattern counts as well established (evidence scale).
pub const ALLOW_FLOW_SCALE: f64 = 10.0;
/// Distinct buckets after which a pattern counts as recurring.
pub const RECURRENCE_BUCKETS: f64 = 3.0;
/// Fewest flows before an allow is proposed.
pub const MIN_ALLOW_FLOWS: u64 = 3;
/// Ports that attract password guessing.
pub const AUTH_PORTS: [u16; 6] = [21, 22, 23, 2323, 3389, 5900];
/// Fewest completed connections to a login port (without a brute-force
/// alert) before a password-guessing deny is proposed.
pub const MIN_GUESSING_FLOWS: u64 = 10;
/// Weight of the evidence for a deny of a whole group when one member
/// address did all of it: that is a sign about one device, not its group,
/// and the deny stays well below an even chance (unless the administrator
/// keeps accepting such denies).
pub const ONE_MEMBER_WEIGHT: f64 = 0.3;

/// Beta(α, β) counts for one context.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BetaCounts {
    /// 1 + accepts.
    pub alpha: f64,
    /// 1 + rejects.
    pub beta: f64,
}

impl Default for BetaCounts {
    fn default() -> Self {
        BetaCounts { alpha: 1.0, beta: 1.0 }
    }
}

impl BetaCounts {
    /// Posterior mean α/(α+β).
    pub fn mean(&self) -> f64 {
        self.alpha / (self.alpha + self.beta)
    }
    /// Accepts so far.
    pub fn accepted(&self) -> u64 {
        (self.alpha - 1.0).max(0.0).round() as u64
    }
    /// Answers so far.
    pub fn answered(&self) -> u64 {
        ((self.alpha + self.beta) - 2.0).max(0.0).round() as u64
    }
}

/// Combines traffic evidence with the feedback posterior mean (odds product).
pub fn combine(evidence: f64, feedback_mean: f64) -> f64 {
    let e = evidence.clamp(0.01, 0.99);
    let m = feedback_mean.clamp(0.001, 0.999);
    e * m / (e * m + (1.0 - e) * (1.0 - m))
}

/// A rule the engine proposes, with the numbers behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Suggestion {
    /// Stable id (same pattern → same id), used by accept/reject.
    pub id: String,
    /// The rule that accepting creates.
    pub rule: Relationship,
    /// 0–1, see the module docs.
    pub confidence: f64,
    /// Evidence from the traffic alone, 0–1.
    pub evidence: f64,
    /// The feedback context (`allow/tcp/cross/mid`).
    pub context: String,
    /// Accepts in this context.
    pub accepted_similar: u64,
    /// Answers in this context.
    pub answered_similar: u64,
    /// One sentence with the numbers.
    pub justification: String,
}

/// Alerts between groups, tallied by kind: all of them (shown), and apart
/// the ones about a source proven real, the only ones a deny may rest on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertTally {
    /// Alerts per kind name, proven or not.
    pub by_kind: BTreeMap<String, u64>,
    /// Destination ports named by brute-force alerts, proven or not (such a
    /// port is never suggested as allowed: holding back an allow cuts nothing).
    pub ports: BTreeMap<u16, u64>,
    /// Last alert, Unix seconds.
    pub last: u64,
    /// Sources of the scan and sweep alerts, proven or not (bounded).
    #[serde(default)]
    pub scan_sources: Sources,
    /// Sources of the brute-force alerts naming a port, proven or not (bounded).
    #[serde(default)]
    pub guess_sources: Sources,
    /// The alerts above whose source was proven real, when they arrived or
    /// later (`proof.rs`). Absent from a file written before it, so older
    /// tallies count as unproven.
    #[serde(default)]
    pub proven: ProvenAlerts,
    /// Routers the alerts are filed under, proven or not (bounded): whether
    /// other routers than a deny's lone one report these groups.
    #[serde(default)]
    pub routers: Routers,
    /// Routers whose neighbour tables made an alert's source or destination
    /// a member through a MAC member (bounded).
    #[serde(default)]
    pub resolved_by: Routers,
}

/// Scan and brute-force alerts whose source was proven real (`proof.rs`):
/// what a group-wide deny may count, and whose sources it names as members.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProvenAlerts {
    /// Scan and sweep alerts.
    pub scans: u64,
    /// Brute-force alerts per destination port named.
    pub ports: BTreeMap<u16, u64>,
    /// Sources of those scan and sweep alerts (bounded).
    pub scan_sources: Sources,
    /// Sources of those brute-force alerts per port (bounded): a port's deny
    /// names only the guessers of that port.
    pub guess_ports: BTreeMap<u16, Sources>,
    /// Routers those scan and sweep alerts are filed under (bounded).
    pub scan_routers: Routers,
    /// Routers those brute-force alerts are filed under, per port (bounded;
    /// as many ports as [`AlertTally::ports`], at most 64).
    pub guess_routers: BTreeMap<u16, Routers>,
}

impl ProvenAlerts {
    /// A tally from before sources were kept per port (it had one list for
    /// every port, and proved a brute-force alert by the one connection it
    /// named, which forged SYNs can arrange): its brute-force alerts count
    /// as unproven. Its scans stay proven (the same proof as now).
    fn forget_unattributed_guesses(&mut self) {
        let ProvenAlerts { ports, guess_ports, .. } = self;
        ports.retain(|p, _| guess_ports.contains_key(p));
    }

    fn count_guess(&mut self, port: u16, src: IpAddr, router: &str) {
        *self.ports.entry(port).or_default() += 1;
        self.guess_ports.entry(port).or_default().note(src);
        self.guess_routers.entry(port).or_default().note(router);
    }

    fn count_scan(&mut self, src: IpAddr, router: &str) {
        self.scans += 1;
        self.scan_sources.note(src);
        self.scan_routers.note(router);
    }
}

/// Scan and brute-force alerts per (source group, destination group); bounded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertEvidence {
    /// Tallies per "src>dst".
    pub pairs: BTreeMap<String, AlertTally>,
}

impl AlertEvidence {
    /// Makes a tally read from `matrix.json` consistent with this version
    /// (see [`ProvenAlerts::forget_unattributed_guesses`]).
    pub fn loaded(mut self) -> AlertEvidence {
        for t in self.pairs.values_mut() {
            t.proven.forget_unattributed_guesses();
            t.routers.trim();
            t.resolved_by.trim();
            t.proven.scan_routers.trim();
            t.proven.guess_routers.retain(|p, _| t.ports.contains_key(p));
            t.proven.guess_routers.values_mut().for_each(Routers::trim);
        }
        self
    }

    /// Counts as proven an alert [`AlertEvidence::record`] counted as
    /// unproven, once a later flow proved its source (`proof.rs`); never
    /// more proven alerts than alerts.
    pub fn prove_later(&mut self, c: &Claim, sg: &[String], dg: &[String]) {
        for s in sg {
            for d in dg {
                let Some(t) = self.pairs.get_mut(&format!("{s}>{d}")) else { continue };
                if c.kind == AttackKind::BruteForce {
                    let all = t.ports.get(&c.dport).copied().unwrap_or(0);
                    if t.proven.ports.get(&c.dport).copied().unwrap_or(0) < all {
                        t.proven.count_guess(c.dport, c.src, &c.node);
                    }
                } else {
                    let all = t.by_kind.get("port_scan").copied().unwrap_or(0)
                        + t.by_kind.get("host_sweep").copied().unwrap_or(0);
                    if t.proven.scans < all {
                        t.proven.count_scan(c.src, &c.node);
                    }
                }
            }
        }
    }

    /// Records an alert whose source is in `sg` and destination in `dg`;
    /// `proven`: its source is proven real, so it may count towards a deny.
    /// The tally names the router it is filed under (`a.node`) and the
    /// routers whose neighbour tables placed its ends.
    pub fn record(&mut self, a: &Alert, sg: &[Membership<'_>], dg: &[Membership<'_>], proven: bool) {
        if !matches!(a.kind, AttackKind::PortScan | AttackKind::HostSweep | AttackKind::BruteForce) {
            return;
        }
        for sm in sg {
            for dm in dg {
                let (s, d) = (sm.group, dm.group);
                let key = format!("{s}>{d}");
                if !self.pairs.contains_key(&key) && self.pairs.len() >= MAX_ALERT_PAIRS {
                    if let Some(oldest) = self.pairs.iter().min_by_key(|(_, t)| t.last).map(|(k, _)| k.clone()) {
                        self.pairs.remove(&oldest);
                    }
                }
                let t = self.pairs.entry(key).or_default();
                *t.by_kind.entry(a.kind.as_str().to_string()).or_default() += 1;
                t.routers.note(&a.node);
                for r in sm.via.iter().chain(dm.via.iter().filter(|r| !sm.via.contains(r))) {
                    t.resolved_by.note(r);
                }
                if a.kind == AttackKind::BruteForce && a.dport != 0 && t.ports.len() < 64 {
                    *t.ports.entry(a.dport).or_default() += 1;
                    if let Some(src) = a.src {
                        t.guess_sources.note(src);
                    }
                    if let (true, Some(src)) = (proven, a.src) {
                        t.proven.count_guess(a.dport, src, &a.node);
                    }
                } else if a.kind != AttackKind::BruteForce {
                    if let Some(src) = a.src {
                        t.scan_sources.note(src);
                    }
                    if let (true, Some(src)) = (proven, a.src) {
                        t.proven.count_scan(src, &a.node);
                    }
                }
                t.last = t.last.max(a.ts_ns / 1_000_000_000);
            }
        }
    }
}

/// Feedback: Beta counts per context, plus rejected suggestion ids.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Feedback {
    /// Context → counts.
    pub contexts: BTreeMap<String, BetaCounts>,
    /// Ids of rejected suggestions, oldest first (bounded).
    pub rejected: Vec<String>,
}

impl Feedback {
    /// Counts for a context (Beta(1,1) if never answered).
    pub fn counts(&self, context: &str) -> BetaCounts {
        self.contexts.get(context).copied().unwrap_or_default()
    }

    /// Records an answer.
    pub fn record(&mut self, context: &str, accepted: bool, id: &str) {
        let c = self.contexts.entry(context.to_string()).or_default();
        if accepted {
            c.alpha += 1.0;
        } else {
            c.beta += 1.0;
            if !self.rejected.iter().any(|r| r == id) {
                if self.rejected.len() >= MAX_REJECTED {
                    self.rejected.remove(0);
                }
                self.rejected.push(id.to_string());
            }
        }
    }
}

/// `low` (< 10 flows), `mid` (< 100) or `high`.
pub fn volume_bucket(flows: u64) -> &'static str {
    match flows {
        0..=9 => "low",
        10..=99 => "mid",
        _ => "high",
    }
}

/// The feedback context of a suggestion.
pub fn context(action: Action, proto: Protocol, src: &str, dst: &str, flows: u64) -> String {
    let dir = if src == dst { "same" } else { "cross" };
    format!("{action}/{proto}/{dir}/{}", volume_bucket(flows))
}

/// A short stable id for a suggested rule.
pub fn suggestion_id(r: &Relationship) -> String {
    // FNV-1a over the rule's identity: stable across restarts and versions.
    let text = format!("{}|{}|{}|{}|{}", r.action, r.source_group, r.destination_group, r.protocol, r.port_range);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("s{:08x}", (h >> 32) as u32 ^ h as u32)
}

fn draft(src: &str, dst: &str, proto: Protocol, ports: PortRange, action: Action, priority: i32) -> Relationship {
    Relationship {
        id: 0,
        source_group: src.into(),
        destination_group: dst.into(),
        protocol: proto,
        port_range: ports,
        action,
        priority,
        comment: String::new(),
    }
}

fn allow_evidence(c: &Cell) -> f64 {
    let success = c.answered as f64 / c.flows.max(1) as f64;
    let volume = 1.0 - (-(c.flows as f64) / ALLOW_FLOW_SCALE).exp();
    let recurrence = (f64::from(c.buckets) / RECURRENCE_BUCKETS).min(1.0);
    success * volume * recurrence
}

/// Whose word a suggestion rests on: the routers that reported its flows
/// and filed its alerts, and those whose neighbour tables made its
/// addresses members through a MAC member.
#[derive(Default)]
struct Witnesses {
    /// Routers of the flows the evidence counts.
    flows: Routers,
    /// Routers of the proven alerts the evidence counts.
    alerts: Routers,
    /// Routers whose neighbour tables placed an endpoint in its group.
    resolved_by: Routers,
    /// Flows counted before routers were recorded (a `matrix.json` from
    /// before): nobody's word can be said to be all of it.
    unrecorded: u64,
}

impl Witnesses {
    /// Adds a cell's `count` flows and the routers that reported them; what
    /// no router accounts for was counted before routers were recorded.
    fn add_flows(&mut self, routers: &Routers, count: u64) {
        self.flows.merge(routers);
        let named: u64 = routers.reports.iter().map(|r| r.n).sum::<u64>().saturating_add(routers.other);
        self.unrecorded = self.unrecorded.saturating_add(count.saturating_sub(named));
    }

    /// `12 flows, 1 alerts`: what `node` reported.
    fn counts(&self, node: &str) -> String {
        let counts: Vec<String> = [(self.flows.of(node), "flows"), (self.alerts.of(node), "alerts")]
            .iter()
            .filter(|(c, _)| *c > 0)
            .map(|(c, unit)| format!("{c} {unit}"))
            .collect();
        counts.join(", ")
    }

    /// `router-1 (12 flows, 1 alerts), router-3 (2 flows)`, and the reports of routers not named.
    fn describe(&self) -> String {
        let mut names: Vec<&str> = self.flows.names().collect();
        names.extend(self.alerts.names().filter(|n| !self.flows.names().any(|f| f == *n)));
        let mut parts: Vec<String> = names.iter().map(|n| format!("{n} ({})", self.counts(n))).collect();
        let more: Vec<String> = [(self.flows.other, "flows"), (self.alerts.other, "alerts")]
            .iter()
            .filter(|(c, _)| *c > 0)
            .map(|(c, unit)| format!("{c} more {unit}"))
            .collect();
        if !more.is_empty() {
            let more = format!("{} from other routers", more.join(" and "));
            match parts.pop() {
                Some(last) => parts.push(format!("{last} and {more}")),
                None => parts.push(more),
            }
        }
        parts.join(", ")
    }

    /// The evidence, and the words naming the routers it came from: `pair`
    /// holds the routers reporting traffic or alerts between the rule's
    /// groups, `fleet` every router heard from. Said, never weighted (see
    /// the module docs).
    fn weigh(&self, evidence: f64, s: &str, d: &str, pair: &Routers, fleet: &Routers) -> (f64, String) {
        let mut all = self.flows.clone();
        all.merge(&self.alerts);
        let mut why = match all.only() {
            _ if all.is_empty() => "; its evidence names no router (counted before routers were recorded)".to_string(),
            _ if self.unrecorded > 0 => format!(
                "; evidence from {} and {} flows counted before routers were recorded",
                self.describe(),
                self.unrecorded
            ),
            Some(r) if fleet.several() && pair.besides(r) => {
                let mut others: Vec<&str> = pair.names().filter(|n| *n != r).collect();
                let verb = if others.len() == 1 && pair.other == 0 { "reports" } else { "report" };
                if pair.other > 0 {
                    others.push("other routers");
                }
                format!(
                    "; evidence from {r} only ({}); {} also {verb} {s} -> {d} traffic, other flows (at another site, or none of this): one router's word, and an accepted rule applies to every router",
                    self.counts(r),
                    others.join(", ")
                )
            }
            Some(r) if fleet.several() => format!(
                "; evidence from {r} only ({}), the one router reporting {s} -> {d} traffic: one router's word, and an accepted rule applies to every router",
                self.counts(r)
            ),
            _ => format!("; evidence from {}", self.describe()),
        };
        let e = evidence;
        if !self.resolved_by.is_empty() {
            match self.resolved_by.only() {
                Some(r) if fleet.several() => why.push_str(&format!(
                    "; MAC members resolved to these addresses by {r}'s neighbour table only ({} reports): a router's table can make any address a member",
                    self.resolved_by.of(r)
                )),
                _ => why.push_str(&format!(
                    "; MAC members resolved to these addresses by the neighbour tables of {}",
                    self.resolved_by.describe("reports")
                )),
            }
        }
        (e, why)
    }
}

/// What points at password guessing on one login port between two groups.
#[derive(Default)]
struct Guessing {
    /// Brute-force alerts naming the port whose source was proven real (by its own completed connections).
    alerts: u64,
    /// Brute-force alerts naming the port about sources nothing proved: shown, not counted.
    unproven: u64,
    /// Connections the originator completed (acknowledged the responder).
    completed: u64,
    /// Connections that never completed (forged, half-open, refused): not counted.
    not_completed: u64,
    /// Sources of the completed connections and of the alerts.
    who: Sources,
    /// Routers of the completed connections and of the alerts.
    routers: Witnesses,
}

/// A group-wide deny's evidence and the words on who did it: one member
/// address alone weighs [`ONE_MEMBER_WEIGHT`] and is named as the device to look at.
fn by_members(evidence: f64, who: &Sources) -> (f64, String) {
    let e = evidence.clamp(0.01, 0.99);
    if who.only().is_none() {
        return (e, format!(", from {}", who.describe()));
    }
    let why = format!(
        ", all from {}: look at that device before denying its whole group (a group of its own denies it \
alone); one member's evidence {e:.2} × {ONE_MEMBER_WEIGHT}",
        who.describe()
    );
    (e * ONE_MEMBER_WEIGHT, why)
}

/// ` (N more about unproven sources do not count: ...)`, or nothing.
fn not_counted(unproven: u64) -> String {
    match unproven {
        0 => String::new(),
        n => format!(" ({n} more about unproven sources do not count: anyone on the LAN can forge an address)"),
    }
}

/// Picks a priority near `want` at which `r` conflicts with nothing; None if none within 10.
fn free_priority(policy: &Policy, r: &mut Relationship, want: i32) -> bool {
    for step in 0..=10 {
        r.priority = want - step;
        if policy.conflict_with(r).is_none() {
            return true;
        }
    }
    false
}

/// Proposes up to `top_n` rules, ranked by confidence, none conflicting with
/// or already decided by `policy`, none previously rejected.
pub fn suggest(
    policy: &Policy,
    matrix: &TrafficMatrix,
    alerts: &AlertEvidence,
    feedback: &Feedback,
    top_n: usize,
) -> Vec<Suggestion> {
    let mut out: Vec<Suggestion> = Vec::new();
    let mut push = |mut rule: Relationship, evidence: f64, flows: u64, why: String, want: i32| {
        if !policy.groups.contains_key(&rule.source_group) || !policy.groups.contains_key(&rule.destination_group) {
            return;
        }
        if policy.decided(&rule.source_group, &rule.destination_group, rule.protocol, rule.port_range).is_some() {
            return;
        }
        if !free_priority(policy, &mut rule, want) {
            return;
        }
        let id = suggestion_id(&rule);
        if feedback.rejected.contains(&id) {
            return;
        }
        let ctx = context(rule.action, rule.protocol, &rule.source_group, &rule.destination_group, flows);
        let counts = feedback.counts(&ctx);
        let confidence = combine(evidence, counts.mean());
        let justification = format!(
            "{why}; accepted {} of {} similar suggestions ({ctx}), so confidence {:.2} from evidence {:.2}.",
            counts.accepted(),
            counts.answered(),
            confidence,
            evidence.clamp(0.01, 0.99)
        );
        rule.comment = format!("suggested {id}: {why}");
        out.push(Suggestion {
            id,
            rule,
            confidence,
            evidence: evidence.clamp(0.01, 0.99),
            context: ctx,
            accepted_similar: counts.accepted(),
            answered_similar: counts.answered(),
            justification,
        });
    };

    // Allow: stable, recurring, answered patterns.
    let mut cells: Vec<(&CellKey, &Cell)> = matrix.cells().collect();
    cells.sort_by(|a, b| a.0.cmp(b.0));
    let pairs = matrix.pairs();
    // Routers reporting traffic or alerts between two groups.
    let pair_routers = |s: &str, d: &str| {
        let mut r = pairs.get(&(s.to_string(), d.to_string())).map(|t| t.routers.clone()).unwrap_or_default();
        if let Some(t) = alerts.pairs.get(&format!("{s}>{d}")) {
            r.merge(&t.routers);
        }
        r
    };
    for (k, c) in &cells {
        if c.flows < MIN_ALLOW_FLOWS || c.answered * 10 < c.flows * 8 || c.buckets < 2 {
            continue;
        }
        // A password guesser's sessions are completed and recur too: a port the
        // detector named in brute-force alerts for this pair is never suggested
        // as allowed (the allow would outrank the guessing deny).
        let guessed = k.proto == Protocol::Tcp
            && alerts.pairs.get(&format!("{}>{}", k.src, k.dst)).is_some_and(|t| t.ports.contains_key(&k.port));
        if guessed {
            continue;
        }
        let ports = if k.proto.has_ports() { PortRange::one(k.port) } else { PortRange::ANY };
        let why = format!(
            "{} flows {} -> {} on {}/{} over {} buckets of {} s, {} answered ({:.0}%) from {}, {} bytes, first seen {} s before the last",
            c.flows,
            k.src,
            k.dst,
            k.proto,
            ports,
            c.buckets,
            matrix.bucket_s,
            c.answered,
            100.0 * c.answered as f64 / c.flows.max(1) as f64,
            c.answered_sources.describe(),
            c.bytes,
            c.last_seen.saturating_sub(c.first_seen)
        );
        // An allow rests on the answered flows.
        let mut w = Witnesses { resolved_by: c.resolved_by.clone(), ..Witnesses::default() };
        w.add_flows(&c.answered_routers, c.answered);
        let (evidence, routers) =
            w.weigh(allow_evidence(c), &k.src, &k.dst, &pair_routers(&k.src, &k.dst), &matrix.reporters);
        push(
            draft(&k.src, &k.dst, k.proto, ports, Action::Allow, ALLOW_PRIORITY),
            evidence,
            c.flows,
            why + &routers,
            ALLOW_PRIORITY,
        );
    }

    // Deny: scans (many unanswered ports, or scan alerts) and password guessing.
    let mut pair_keys: BTreeSet<(String, String)> = pairs.keys().cloned().collect();
    for key in alerts.pairs.keys() {
        if let Some((s, d)) = key.split_once('>') {
            pair_keys.insert((s.to_string(), d.to_string()));
        }
    }
    for (s, d) in pair_keys {
        let t = pairs.get(&(s.clone(), d.clone())).cloned().unwrap_or_default();
        let tally = alerts.pairs.get(&format!("{s}>{d}")).cloned().unwrap_or_default();
        // Only alerts about a source proven real count; the others are named, not counted.
        let scans = tally.proven.scans;
        let unproven_scans = (tally.by_kind.get("port_scan").copied().unwrap_or(0)
            + tally.by_kind.get("host_sweep").copied().unwrap_or(0))
        .saturating_sub(scans);
        let alert_ev = 1.0 - 0.5f64.powf(scans as f64);
        let unanswered_share = t.tcp_unanswered as f64 / t.flows.max(1) as f64;
        let matrix_ev = unanswered_share * (t.tcp_ports_unanswered as f64 / 20.0).min(1.0);
        let evidence = 1.0 - (1.0 - alert_ev) * (1.0 - matrix_ev);
        // A deny of the whole protocol also takes the ports the pair really
        // uses (connections the originators completed): one scanner — or one
        // host forging a member's address — would cut every member's
        // service. It waits until a rule above it keeps each such port.
        let in_use = cells.iter().any(|(k, c)| {
            k.src == s
                && k.dst == d
                && k.proto == Protocol::Tcp
                && c.answered > 0
                && !policy
                    .decided(&s, &d, Protocol::Tcp, PortRange::one(k.port))
                    .is_some_and(|r| r.action == Action::Allow && r.priority > SCAN_DENY_PRIORITY)
        });
        if (scans > 0 || t.tcp_ports_unanswered >= 10) && !in_use {
            // Who probed: the originators of the ports nobody answered, and the alerts' sources;
            // and which routers said so.
            let mut who = tally.proven.scan_sources.clone();
            let mut w = Witnesses { alerts: tally.proven.scan_routers.clone(), ..Witnesses::default() };
            if scans > 0 {
                w.resolved_by.merge(&tally.resolved_by);
            }
            for (k, c) in &cells {
                if k.src == s && k.dst == d && k.proto == Protocol::Tcp && c.answered == 0 {
                    who.merge(&c.sources);
                    w.add_flows(&c.routers, c.flows);
                    w.resolved_by.merge(&c.resolved_by);
                }
            }
            let (evidence, members) = by_members(evidence, &who);
            let (evidence, routers) = w.weigh(evidence, &s, &d, &pair_routers(&s, &d), &matrix.reporters);
            let why = format!(
                "{} -> {}: {} TCP ports probed, {} of them never answered, {} of {} flows unanswered, {} scan alerts from the detector whose source was proven{}{}",
                s,
                d,
                t.tcp_ports,
                t.tcp_ports_unanswered,
                t.tcp_unanswered,
                t.flows,
                scans,
                not_counted(unproven_scans),
                members
            ) + &routers;
            push(
                draft(&s, &d, Protocol::Tcp, PortRange::ANY, Action::Deny, SCAN_DENY_PRIORITY),
                evidence,
                t.flows,
                why,
                SCAN_DENY_PRIORITY,
            );
        }
        // Password guessing: brute-force alerts naming a port, or many
        // connections to a login port that their originator completed
        // (`answered`: it acknowledged the responder). A guesser has to
        // complete one to send a password; SYNs forged with a member's
        // address, or half-open ones, complete nothing and do not count.
        let mut guessed: BTreeMap<u16, Guessing> = BTreeMap::new();
        for (p, n) in &tally.proven.ports {
            let g = guessed.entry(*p).or_default();
            g.alerts += n;
            if let Some(who) = tally.proven.guess_ports.get(p) {
                g.who.merge(who);
            }
            if let Some(r) = tally.proven.guess_routers.get(p) {
                g.routers.alerts.merge(r);
            }
            g.routers.resolved_by.merge(&tally.resolved_by);
        }
        for (p, n) in &tally.ports {
            let proven = tally.proven.ports.get(p).copied().unwrap_or(0);
            if n > &proven {
                guessed.entry(*p).or_default().unproven += n - proven;
            }
        }
        for (k, c) in &cells {
            if k.src == s && k.dst == d && k.proto == Protocol::Tcp && AUTH_PORTS.contains(&k.port) {
                let g = guessed.entry(k.port).or_default();
                g.completed += c.answered;
                g.not_completed += c.unanswered();
                g.who.merge(&c.answered_sources);
                g.routers.add_flows(&c.answered_routers, c.answered);
                if c.answered > 0 {
                    g.routers.resolved_by.merge(&c.resolved_by);
                }
            }
        }
        for (port, g) in guessed {
            if g.alerts == 0 && g.completed < MIN_GUESSING_FLOWS {
                continue;
            }
            let ev = 1.0 - 0.5f64.powf(g.alerts as f64) * (-(g.completed as f64) / 50.0).exp();
            let (ev, members) = by_members(ev, &g.who);
            let (ev, routers) = g.routers.weigh(ev, &s, &d, &pair_routers(&s, &d), &matrix.reporters);
            let uncounted = match g.not_completed {
                0 => String::new(),
                n => format!(" ({n} more never completed and do not count: forged or half-open SYNs send no password)"),
            };
            let why = format!(
                "{s} -> {d} tcp/{port}: {} completed connections to a login port{uncounted}, {} brute-force alerts whose source completed its attempts{}{members}{routers}",
                g.completed,
                g.alerts,
                not_counted(g.unproven)
            );
            push(
                draft(&s, &d, Protocol::Tcp, PortRange::one(port), Action::Deny, PORT_DENY_PRIORITY),
                ev,
                g.completed,
                why,
                PORT_DENY_PRIORITY,
            );
        }
    }
    out.sort_by(|a, b| b.confidence.total_cmp(&a.confidence).then_with(|| a.id.cmp(&b.id)));
    out.dedup_by(|a, b| a.id == b.id);
    out.truncate(top_n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After an upgrade, a cell of 101 flows counted before routers were
    /// recorded, then one from router-1: the suggestion said "evidence from
    /// router-1 only (1 flows)" (found by review).
    #[test]
    fn evidence_counted_before_routers_were_recorded_is_not_put_down_to_the_next_router() {
        let mut cell_routers = Routers::default();
        cell_routers.note("router-1");
        let mut w = Witnesses::default();
        w.add_flows(&cell_routers, 102);
        let mut fleet = Routers::default();
        fleet.note("router-1");
        fleet.note("router-2");
        let (_, why) = w.weigh(0.9, "cameras", "sensors", &fleet, &fleet);
        assert!(!why.contains(" only"), "{why}");
        assert!(why.contains("router-1 (1 flows) and 101 flows counted before routers were recorded"), "{why}");
    }

    #[test]
    fn no_feedback_means_confidence_equals_evidence_and_answers_move_it() {
        assert!((combine(0.7, 0.5) - 0.7).abs() < 1e-12);
        let mut f = Feedback::default();
        f.record("allow/tcp/cross/mid", true, "s1");
        f.record("allow/tcp/cross/mid", true, "s2");
        f.record("allow/tcp/cross/mid", false, "s3");
        let c = f.counts("allow/tcp/cross/mid");
        assert_eq!((c.alpha, c.beta), (3.0, 2.0));
        assert!((c.mean() - 0.6).abs() < 1e-12);
        // 0.7·0.6 / (0.7·0.6 + 0.3·0.4) = 0.42 / 0.54
        assert!((combine(0.7, c.mean()) - 0.42 / 0.54).abs() < 1e-12);
        assert_eq!(f.rejected, vec!["s3".to_string()]);
        assert_eq!((c.accepted(), c.answered()), (2, 3));
    }

    /// A `matrix.json` written before alerts were told apart by proof still
    /// loads, and its alerts count as unproven (they were counted blind).
    #[test]
    fn an_older_tally_loads_and_counts_as_unproven() {
        let old = r#"{"by_kind":{"brute_force":5},"ports":{"22":5},"last":9,"guess_sources":{"addrs":["192.0.2.4"],"more":false}}"#;
        let t: AlertTally = serde_json::from_str(old).unwrap();
        assert_eq!((t.by_kind["brute_force"], t.proven.clone()), (5, ProvenAlerts::default()));
    }

    /// A `matrix.json` from the first version with proof kept one list of
    /// proven guessers for every port, and had proven brute-force alerts
    /// by the one connection they named (which SYNs forged with a member's
    /// address can make a real reconnect): it loads, those alerts count as
    /// unproven, its proven scans stay.
    #[test]
    fn a_tally_with_one_list_of_proven_guessers_loads_and_its_guesses_count_as_unproven() {
        let old = r#"{"pairs":{"cameras>sensors":{"by_kind":{"brute_force":2,"port_scan":1},"ports":{"1883":2},"last":9,
            "scan_sources":{"addrs":["192.0.2.4"],"more":false},"guess_sources":{"addrs":["192.0.2.5","192.0.2.6"],"more":false},
            "proven":{"scans":1,"ports":{"1883":2},"scan_sources":{"addrs":["192.0.2.4"],"more":false},
            "guess_sources":{"addrs":["192.0.2.5","192.0.2.6"],"more":false}}}}}"#;
        let e: AlertEvidence = serde_json::from_str(old).unwrap();
        let t = &e.loaded().pairs["cameras>sensors"];
        assert_eq!((t.ports[&1883], t.proven.ports.get(&1883)), (2, None));
        assert_eq!((t.proven.scans, t.proven.scan_sources.only()), (1, Some("192.0.2.4".parse().unwrap())));
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        let a = draft("a", "b", Protocol::Tcp, PortRange::one(22), Action::Deny, 1);
        let mut b = a.clone();
        b.priority = 99;
        assert_eq!(suggestion_id(&a), suggestion_id(&b));
        b.port_range = PortRange::one(23);
        assert_ne!(suggestion_id(&a), suggestion_id(&b));
    }
}
