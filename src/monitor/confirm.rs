//! `alert.action` says what happened, not what was asked (issue #15).
//!
//! A detector's alert that asks for a block waits here until a router answers
//! its verdict ([`VerdictOutcome`]): `blocked` once one router confirms the
//! element is in the kernel; `allowed`, with the routers' reasons, once every
//! router the monitor knows has refused (an unproven WAN source, a forged or
//! protected address, enforcement off) or when [`CONFIRM_WAIT`] passes with
//! no confirmation (no router reachable). Only then is the alert stored,
//! written to the EVE log and shown: the log is append-only, so a line must
//! not claim a block that never happened.
//!
//! Bounded: at most [`MAX_WAITING`] alerts wait (beyond it the oldest is
//! settled at once as unconfirmed) and [`MAX_EARLY`] answers that came before
//! their alert are kept for [`EARLY_KEEP`].

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::bus::messages::{Alert, AlertAction, AttackKind, VerdictOutcome};

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
        refuse(&mut a, why);
    }
    a
}

fn refuse(a: &mut Alert, why: &str) {
    a.action = AlertAction::Allowed;
    // The detector's sentence says the policy asked for a block; it was not made.
    a.reason = a.reason.replacen("; blocked: policy rule", "; block asked by policy rule", 1);
    a.reason = format!("{}; not blocked: {why}", a.reason);
}

struct Waiting {
    alert: Alert,
    since: Instant,
    refusals: Vec<String>,
}

/// Alerts waiting for their router's answer, and answers waiting for their alert.
#[derive(Default)]
pub struct Confirmations {
    waiting: HashMap<u64, Waiting>,
    order: VecDeque<u64>,
    early: HashMap<u64, (Vec<VerdictOutcome>, Instant)>,
    early_order: VecDeque<u64>,
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

    /// Takes an alert that [`awaits_router`]; returns what can be stored now:
    /// the alert itself when answers for it came first, and the oldest waiting
    /// alert (settled as unconfirmed) when the set is full.
    pub fn hold(&mut self, alert: Alert, routers: usize, now: Instant) -> Vec<Alert> {
        let id = alert.id;
        let mut out = Vec::new();
        if self.waiting.contains_key(&id) {
            // A second alert with the same id (a retry): it goes out as it is.
            out.push(alert);
            return out;
        }
        if self.waiting.len() >= MAX_WAITING {
            while let Some(old) = self.order.pop_front() {
                if let Some(w) = self.waiting.remove(&old) {
                    out.push(settle_unconfirmed(w, "too many alerts were waiting for their routers' answers"));
                    break;
                }
            }
        }
        self.waiting.insert(id, Waiting { alert, since: now, refusals: Vec::new() });
        self.order.push_back(id);
        if let Some((answers, _)) = self.early.remove(&id) {
            for o in answers {
                out.extend(self.answer(o, routers, now));
            }
        }
        out
    }

    /// A router's answer; returns the alert it settles, if any. `routers` is
    /// how many routers the monitor knows (at least one is assumed).
    pub fn answer(&mut self, o: VerdictOutcome, routers: usize, now: Instant) -> Option<Alert> {
        let Some(w) = self.waiting.get_mut(&o.verdict_id) else {
            self.keep_early(o, now);
            return None;
        };
        if o.blocked {
            let mut w = self.waiting.remove(&o.verdict_id)?;
            w.alert.reason = format!("{}; confirmed by router {}: {}", w.alert.reason, o.node, o.why);
            return Some(w.alert);
        }
        w.refusals.push(format!("{}: {}", o.node, o.why));
        if w.refusals.len() >= routers.max(1) {
            let w = self.waiting.remove(&o.verdict_id)?;
            return Some(settle_refused(w));
        }
        None
    }

    /// Settles every alert that has waited [`CONFIRM_WAIT`] and forgets old early answers.
    pub fn overdue(&mut self, now: Instant) -> Vec<Alert> {
        let mut out = Vec::new();
        while let Some(&id) = self.order.front() {
            match self.waiting.get(&id) {
                Some(w) if now.duration_since(w.since) < CONFIRM_WAIT => break,
                Some(_) => {
                    self.order.pop_front();
                    let w = self.waiting.remove(&id).expect("present");
                    out.push(if w.refusals.is_empty() {
                        settle_unconfirmed(
                            w,
                            &format!(
                                "no router confirmed the block within {} s (enforcement off, or no router reachable)",
                                CONFIRM_WAIT.as_secs()
                            ),
                        )
                    } else {
                        settle_refused(w)
                    });
                }
                // Settled earlier by an answer.
                None => {
                    self.order.pop_front();
                }
            }
        }
        while let Some(&id) = self.early_order.front() {
            match self.early.get(&id) {
                Some((_, at)) if now.duration_since(*at) < EARLY_KEEP => break,
                _ => {
                    self.early_order.pop_front();
                    self.early.remove(&id);
                }
            }
        }
        out
    }

    fn keep_early(&mut self, o: VerdictOutcome, now: Instant) {
        if let Some((list, _)) = self.early.get_mut(&o.verdict_id) {
            if list.len() < 16 {
                list.push(o);
            }
            return;
        }
        if self.early.len() >= MAX_EARLY {
            while let Some(old) = self.early_order.pop_front() {
                if self.early.remove(&old).is_some() {
                    break;
                }
            }
        }
        self.early_order.push_back(o.verdict_id);
        self.early.insert(o.verdict_id, (vec![o], now));
    }
}

fn settle_refused(mut w: Waiting) -> Alert {
    let why = w.refusals.join("; ");
    refuse(&mut w.alert, &why);
    w.alert
}

fn settle_unconfirmed(mut w: Waiting, why: &str) -> Alert {
    refuse(&mut w.alert, why);
    w.alert
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::messages::Severity;

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
        }
    }

    fn outcome(id: u64, node: &str, blocked: bool, why: &str) -> VerdictOutcome {
        VerdictOutcome {
            node: node.into(),
            verdict_id: id,
            source: "203.0.113.166".parse().unwrap(),
            blocked,
            why: why.into(),
        }
    }

    #[test]
    fn a_confirmed_block_stays_blocked_and_says_who_confirmed_it() {
        let mut c = Confirmations::new();
        let t = Instant::now();
        assert!(c.hold(alert(1), 1, t).is_empty(), "waits for the router");
        let a = c.answer(outcome(1, "r1", true, "in the detector block set for 600 s"), 1, t).unwrap();
        assert_eq!(a.action, AlertAction::Blocked);
        assert!(a.reason.ends_with("confirmed by router r1: in the detector block set for 600 s"), "{}", a.reason);
        assert_eq!(c.waiting(), 0);
    }

    #[test]
    fn a_refused_block_is_allowed_with_the_routers_reason_and_keeps_the_rule() {
        let mut c = Confirmations::new();
        let t = Instant::now();
        c.hold(alert(2), 1, t);
        let a = c.answer(outcome(2, "r1", false, "router refused the block: no proof"), 1, t).unwrap();
        assert_eq!(a.action, AlertAction::Allowed);
        assert!(a.reason.contains("block asked by policy rule scan_mostly_unanswered"), "{}", a.reason);
        assert!(!a.reason.contains("; blocked:"), "{}", a.reason);
        assert!(a.reason.ends_with("not blocked: r1: router refused the block: no proof"), "{}", a.reason);
        // The EVE line's rule is still read from the reason.
        assert_eq!(crate::monitor::eve_json(&a)["gatewarden"]["rule"], "scan_mostly_unanswered");
    }

    #[test]
    fn with_two_routers_one_refusal_waits_for_the_other_and_a_confirmation_wins() {
        let mut c = Confirmations::new();
        let t = Instant::now();
        c.hold(alert(3), 2, t);
        assert!(c.answer(outcome(3, "wan-side", false, "unproven"), 2, t).is_none());
        let a = c.answer(outcome(3, "lan-side", true, "in the block set"), 2, t).unwrap();
        assert_eq!(a.action, AlertAction::Blocked);
        // Both refuse: settled when the second answers.
        c.hold(alert(4), 2, t);
        assert!(c.answer(outcome(4, "a", false, "x"), 2, t).is_none());
        let a = c.answer(outcome(4, "b", false, "y"), 2, t).unwrap();
        assert!(a.reason.ends_with("not blocked: a: x; b: y"), "{}", a.reason);
    }

    #[test]
    fn no_answer_in_time_is_allowed_and_says_so() {
        let mut c = Confirmations::new();
        let t = Instant::now();
        c.hold(alert(5), 1, t);
        assert!(c.overdue(t + Duration::from_secs(1)).is_empty());
        let out = c.overdue(t + CONFIRM_WAIT);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].action, AlertAction::Allowed);
        assert!(out[0].reason.contains("no router confirmed the block within 3 s"), "{}", out[0].reason);
        // A late answer settles nothing (the line is written).
        assert!(c.answer(outcome(5, "r1", true, "late"), 1, t + CONFIRM_WAIT).is_none());
    }

    #[test]
    fn an_answer_before_its_alert_settles_it_on_arrival() {
        let mut c = Confirmations::new();
        let t = Instant::now();
        assert!(c.answer(outcome(6, "r1", true, "in the block set"), 1, t).is_none());
        let out = c.hold(alert(6), 1, t);
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
            settled.extend(c.hold(alert(id), 1, t));
        }
        assert_eq!(c.waiting(), MAX_WAITING);
        assert_eq!(settled.len(), 10);
        assert_eq!(settled[0].id, 0);
        assert!(settled.iter().all(|a| a.action == AlertAction::Allowed));
        for id in 0..(MAX_EARLY as u64 * 2) {
            c.answer(outcome(1_000_000 + id, "r", true, "x"), 1, t);
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
    }
}
