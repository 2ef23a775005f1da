//! `alert.action` says what happened, not what was asked (issue #15).
//!
//! A detector's alert that asks for a block waits here until the router it is
//! filed under answers its verdict ([`VerdictOutcome`]; a verdict goes only to
//! the router whose traffic caused it, and ids are per detector stage, so an
//! answer is matched on (router, id)): `blocked` once the router confirms the
//! element is in the kernel; `allowed`, with the router's reason, when it
//! refuses (an unproven WAN source, a forged or protected address,
//! enforcement off) or when [`CONFIRM_WAIT`] passes with no answer (no router
//! reachable). Only then is the alert stored,
//! written to the EVE log and shown: the log is append-only, so a line must
//! not claim a block that never happened.
//!
//! Bounded: at most [`MAX_WAITING`] alerts wait (beyond it the oldest is
//! settled at once as unconfirmed) and [`MAX_EARLY`] answers that came before
//! their alert are kept for [`EARLY_KEEP`].

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use gatewarden_proto::messages::{Alert, AlertAction, AttackKind, NotBlocked, VerdictOutcome};

/// How long an alert waits for a router to confirm its block.
pub const CONFIRM_WAIT: Duration = Duration::from_secs(3);
/// Most alerts waiting at once.
pub const MAX_WAITING: usize = 4096;
/// Most answers kept that arrived before their alert.
pub const MAX_EARLY: usize = 4096;
/// How long such an answer is kept.
pub const EARLY_KEEP: Duration = Duration::from_secs(30);

/// Whether an alert asks a router for a block (a detector's traffic alert)
/// rather than reporting one a router already made (a full block set, a
/// contained MAC) or a system event.
pub fn awaits_router(a: &Alert) -> bool {
    a.action == AlertAction::Blocked
        && a.src.is_some()
        && !matches!(
            a.kind,
            AttackKind::System | AttackKind::Spoofing | AttackKind::ChannelAbuse | AttackKind::LinkHealth
        )
}

/// The alert of a verdict nothing will enforce (a replay), settled at once.
pub fn unenforced(mut a: Alert, why: &str) -> Alert {
    if awaits_router(&a) {
        refuse(&mut a, why, NotBlocked::EnforcementOff);
    }
    a
}

fn refuse(a: &mut Alert, why: &str, code: NotBlocked) {
    a.action = AlertAction::Allowed;
    a.not_blocked = Some(code);
    // The detector's sentence says the policy asked for a block; it was not made.
    a.reason = a.reason.replacen("; blocked: policy rule", "; block asked by policy rule", 1);
    a.reason = format!("{}; not blocked: {why}", a.reason);
}

struct Waiting {
    alert: Alert,
    since: Instant,
}

/// (router node, verdict id): what an answer and its alert share.
type Key = (String, u64);

/// Alerts waiting for their router's answer, and answers waiting for their alert.
#[derive(Default)]
pub struct Confirmations {
    waiting: HashMap<Key, Waiting>,
    order: VecDeque<Key>,
    early: HashMap<Key, (VerdictOutcome, Instant)>,
    early_order: VecDeque<Key>,
    duplicates: u64,
}

impl Confirmations {
    /// An empty set.
    pub fn new() -> Confirmations {
        Confirmations::default()
    }

    /// Alerts waiting now.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Alerts dropped because one with the same router and id was already waiting
    /// (a resend over the bus).
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Takes an alert that [`awaits_router`]; returns what can be stored now:
    /// the alert itself when its answer came first, and the oldest waiting
    /// alert (settled as unconfirmed) when the set is full.
    pub fn hold(&mut self, alert: Alert, now: Instant) -> Vec<Alert> {
        let key = (alert.node.clone(), alert.id);
        let mut out = Vec::new();
        if self.waiting.contains_key(&key) {
            // The same alert again (a resend): the waiting copy is the one stored.
            self.duplicates += 1;
            return out;
        }
        if let Some((o, _)) = self.early.remove(&key) {
            out.push(settle(Waiting { alert, since: now }, &o));
            return out;
        }
        if self.waiting.len() >= MAX_WAITING {
            while let Some(old) = self.order.pop_front() {
                if let Some(w) = self.waiting.remove(&old) {
                    out.push(settle_unconfirmed(
                        w,
                        "too many alerts were waiting for their routers' answers",
                        NotBlocked::RouterUnreachable,
                    ));
                    break;
                }
            }
        }
        self.waiting.insert(key.clone(), Waiting { alert, since: now });
        self.order.push_back(key);
        out
    }

    /// A router's answer; returns the alert it settles, if that alert is here.
    pub fn answer(&mut self, o: VerdictOutcome, now: Instant) -> Option<Alert> {
        let key = (o.node.clone(), o.verdict_id);
        match self.waiting.remove(&key) {
            Some(w) => Some(settle(w, &o)),
            None => {
                self.keep_early(key, o, now);
                None
            }
        }
    }

    /// Settles every alert that has waited [`CONFIRM_WAIT`] and forgets old early answers.
    pub fn overdue(&mut self, now: Instant) -> Vec<Alert> {
        let mut out = Vec::new();
        while let Some(key) = self.order.front() {
            match self.waiting.get(key) {
                Some(w) if now.duration_since(w.since) < CONFIRM_WAIT => break,
                Some(_) => {
                    let key = self.order.pop_front().expect("front");
                    let w = self.waiting.remove(&key).expect("present");
                    out.push(settle_unconfirmed(
                        w,
                        &format!(
                            "no router confirmed the block within {} s (enforcement off, or no router reachable)",
                            CONFIRM_WAIT.as_secs()
                        ),
                        NotBlocked::RouterUnreachable,
                    ));
                }
                // Settled earlier by an answer.
                None => {
                    self.order.pop_front();
                }
            }
        }
        while let Some(key) = self.early_order.front() {
            match self.early.get(key) {
                Some((_, at)) if now.duration_since(*at) < EARLY_KEEP => break,
                _ => {
                    let key = self.early_order.pop_front().expect("front");
                    self.early.remove(&key);
                }
            }
        }
        out
    }

    fn keep_early(&mut self, key: Key, o: VerdictOutcome, now: Instant) {
        if self.early.contains_key(&key) {
            return;
        }
        if self.early.len() >= MAX_EARLY {
            while let Some(old) = self.early_order.pop_front() {
                if self.early.remove(&old).is_some() {
                    break;
                }
            }
        }
        self.early_order.push_back(key.clone());
        self.early.insert(key, (o, now));
    }
}

/// The alert as its router answered.
fn settle(mut w: Waiting, o: &VerdictOutcome) -> Alert {
    if o.blocked {
        w.alert.reason = format!("{}; confirmed by router {}: {}", w.alert.reason, o.node, o.why);
        w.alert.not_blocked = None;
        w.alert
    } else {
        // A router that predates the code only said why in words.
        let code = o.not_blocked.unwrap_or(NotBlocked::RouterError);
        settle_unconfirmed(w, &format!("{}: {}", o.node, o.why), code)
    }
}

fn settle_unconfirmed(mut w: Waiting, why: &str, code: NotBlocked) -> Alert {
    refuse(&mut w.alert, why, code);
    w.alert
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatewarden_proto::messages::Severity;

    fn alert(id: u64) -> Alert {
        Alert {
            id,
            ts_ns: 1,
            node: "gw".into(),
            flow_id: 7,
            kind: AttackKind::PortScan,
            severity: Severity::Medium,
            src: Some("203.0.113.166".parse().unwrap()),
            dst: Some("192.0.2.11".parse().unwrap()),
            sport: 0,
            dport: 80,
            proto: None,
            action: AlertAction::Blocked,
            signature_id: 9_000_001,
            signature: "scan".into(),
            confidence: 0.9,
            reason: "203.0.113.166 → 50 ports; blocked: policy rule scan_mostly_unanswered (a scan)".into(),
            flow: None,
            not_blocked: None,
            in_iface: String::new(),
        }
    }

    fn outcome(id: u64, node: &str, blocked: bool, why: &str) -> VerdictOutcome {
        VerdictOutcome {
            node: node.into(),
            verdict_id: id,
            source: "203.0.113.166".parse().unwrap(),
            blocked,
            why: why.into(),
            not_blocked: (!blocked).then_some(NotBlocked::Unproven),
        }
    }

    #[test]
    fn a_confirmed_block_stays_blocked_and_says_who_confirmed_it() {
        let mut c = Confirmations::new();
        let t = Instant::now();
        assert!(c.hold(alert(1), t).is_empty(), "waits for the router");
        let a = c.answer(outcome(1, "gw", true, "in the detector block set for 600 s"), t).unwrap();
        assert_eq!((a.action, a.not_blocked), (AlertAction::Blocked, None));
        assert!(a.reason.ends_with("confirmed by router gw: in the detector block set for 600 s"), "{}", a.reason);
        assert_eq!(c.waiting(), 0);
    }

    #[test]
    fn a_refused_block_is_allowed_with_the_routers_reason_and_keeps_the_rule() {
        let mut c = Confirmations::new();
        let t = Instant::now();
        c.hold(alert(2), t);
        let a = c.answer(outcome(2, "gw", false, "router refused the block: no proof"), t).unwrap();
        assert_eq!(a.action, AlertAction::Allowed);
        assert!(a.reason.contains("block asked by policy rule scan_mostly_unanswered"), "{}", a.reason);
        assert!(!a.reason.contains("; blocked:"), "{}", a.reason);
        assert!(a.reason.ends_with("not blocked: gw: router refused the block: no proof"), "{}", a.reason);
        // The EVE line's rule is still read from the reason; the router's code is in the metadata.
        let eve = crate::eve_json(&a);
        assert_eq!(eve["alert"]["metadata"]["rule"][0], "scan_mostly_unanswered");
        assert_eq!(eve["alert"]["metadata"]["not_blocked"][0], "unproven", "{eve}");
        assert_eq!(a.not_blocked, Some(NotBlocked::Unproven));
    }

    #[test]
    fn answers_match_on_router_and_id_and_a_resend_is_not_stored_twice() {
        // Each detector stage numbers its own alerts: two routers' alerts share ids.
        let mut c = Confirmations::new();
        let t = Instant::now();
        let mut other = alert(3);
        other.node = "gw2".into();
        c.hold(alert(3), t);
        c.hold(other, t);
        assert!(c.hold(alert(3), t).is_empty(), "a resend waits with the first copy");
        assert_eq!((c.waiting(), c.duplicates()), (2, 1));
        let a = c.answer(outcome(3, "gw2", false, "enforcement is off"), t).unwrap();
        assert_eq!((a.node.as_str(), a.action), ("gw2", AlertAction::Allowed));
        let a = c.answer(outcome(3, "gw", true, "in the block set"), t).unwrap();
        assert_eq!((a.node.as_str(), a.action), ("gw", AlertAction::Blocked));
        assert_eq!(c.waiting(), 0);
    }

    #[test]
    fn no_answer_in_time_is_allowed_and_says_so() {
        let mut c = Confirmations::new();
        let t = Instant::now();
        c.hold(alert(5), t);
        assert!(c.overdue(t + Duration::from_secs(1)).is_empty());
        let out = c.overdue(t + CONFIRM_WAIT);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].action, AlertAction::Allowed);
        assert!(out[0].reason.contains("no router confirmed the block within 3 s"), "{}", out[0].reason);
        assert_eq!(out[0].not_blocked, Some(NotBlocked::RouterUnreachable));
        // A late answer settles nothing (the line is written).
        assert!(c.answer(outcome(5, "gw", true, "late"), t + CONFIRM_WAIT).is_none());
    }

    #[test]
    fn an_answer_before_its_alert_settles_it_on_arrival() {
        let mut c = Confirmations::new();
        let t = Instant::now();
        assert!(c.answer(outcome(6, "gw", true, "in the block set"), t).is_none());
        let out = c.hold(alert(6), t);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].action, AlertAction::Blocked);
        assert_eq!(c.waiting(), 0);
    }

    #[test]
    fn memory_is_bounded_and_the_oldest_is_settled_first() {
        let mut c = Confirmations::new();
        let t = Instant::now();
        let mut settled = Vec::new();
        for id in 0..(MAX_WAITING as u64 + 10) {
            settled.extend(c.hold(alert(id), t));
        }
        assert_eq!(c.waiting(), MAX_WAITING);
        assert_eq!(settled.len(), 10);
        assert_eq!(settled[0].id, 0);
        assert!(settled.iter().all(|a| a.action == AlertAction::Allowed));
        for id in 0..(MAX_EARLY as u64 * 2) {
            c.answer(outcome(1_000_000 + id, "gw", true, "x"), t);
        }
        assert!(c.early.len() <= MAX_EARLY);
        c.overdue(t + EARLY_KEEP + CONFIRM_WAIT);
        assert!(c.early.is_empty() && c.waiting() == 0);
    }

    #[test]
    fn only_a_detectors_block_request_waits() {
        let mut a = alert(7);
        assert!(awaits_router(&a));
        a.kind = AttackKind::Spoofing;
        assert!(!awaits_router(&a), "a router's containment is already what happened");
        let mut a = alert(8);
        a.action = AlertAction::Allowed;
        assert!(!awaits_router(&a));
        let a = unenforced(alert(9), "a replay enforces nothing");
        assert_eq!(a.action, AlertAction::Allowed);
        assert!(a.reason.ends_with("not blocked: a replay enforces nothing"));
        assert_eq!(a.not_blocked, Some(NotBlocked::EnforcementOff));
    }
}
