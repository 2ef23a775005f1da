//! How a group policy gets from the monitor to every router.
//!
//! The monitor's policy engine calls [`PolicyPush::publish`] with a complete
//! [`PolicyUpdate`]; this sends it to each router it knows (one sealed,
//! spooled message per router over MQTT — [`Publisher::publish_to`] — so
//! every router acks its own copy and a router that is offline gets it when
//! it is back). Routers are learnt from their heartbeats
//! ([`PolicyPush::heartbeat`]): a router seen for the first time, one whose
//! uptime went backwards, or one that says `online` again on its status topic
//! ([`PolicyPush::node_online`]; it restarted and lost its ruleset, or
//! reconnected) gets the current policy again. The router applies it with
//! `Blocker::replace_group_rules`, which ignores versions it already has,
//! so a resend is harmless to the router.
//!
//! It is not free for the monitor: each copy is sealed (ECDSA) and written
//! to the outbox, and those signals come from the router, so a compromised
//! one could order copies at will (uptime 5, 4, 5, 4, …). Hence a router's
//! own signals bring it at most one copy per [`RESEND_EVERY`]; one that
//! comes sooner is owed and sent with the first heartbeat after the interval,
//! so a router that really restarted twice still ends up with the policy.
//! A lower uptime that started before the last copy went out asks for
//! nothing (that copy reached the new run). The outbox keeps only the newest
//! policy copy per router (`spool::LATEST_ONLY`), and a publish of a new
//! version always goes at once.
//!
//! In one process (`--role all`) the publisher is the in-process bus and the
//! local router receives the update once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::transport::Publisher;
use gatewarden_core::metrics::{Counter, Registry};
use gatewarden_proto::messages::{Heartbeat, Message, PolicyUpdate};

/// Most routers remembered; past it the least recently heard is forgotten
/// (it gets the policy again on its next heartbeat, harmlessly).
pub const MAX_ROUTERS: usize = 4096;

/// Least time between two copies of the policy that a router's own signals
/// (a lower uptime, `online`) bring it. Heartbeats come every few seconds, so
/// an owed copy goes soon after.
pub const RESEND_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy)]
struct Seen {
    uptime_s: u64,
    order: u64,
    /// When a copy last went to it (publishes included).
    sent_at: Option<Instant>,
    /// When its own signals last brought it a copy (the one that is rate-limited).
    resent_at: Option<Instant>,
    /// It asked for a copy within [`RESEND_EVERY`] of the last: send when that has passed.
    owed: bool,
}

#[derive(Debug, Default)]
struct Inner {
    current: Option<PolicyUpdate>,
    routers: HashMap<String, Seen>,
    tick: u64,
}

/// The monitor's side of group policy distribution.
pub struct PolicyPush {
    out: Arc<dyn Publisher>,
    inner: Mutex<Inner>,
    sent: Counter,
    held: Counter,
}

impl std::fmt::Debug for PolicyPush {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyPush").finish_non_exhaustive()
    }
}

impl PolicyPush {
    /// Distributes through `out` (the node bus or the in-process bus).
    pub fn new(out: Arc<dyn Publisher>, registry: &Arc<Registry>) -> PolicyPush {
        PolicyPush {
            out,
            inner: Mutex::new(Inner::default()),
            sent: registry.counter(
                "gatewarden_policy_updates_sent_total",
                "Group policy updates handed to the bus, one per router.",
                &[],
            ),
            held: registry.counter(
                "gatewarden_policy_resends_held_total",
                "Policy copies a router's heartbeats or status asked for within 30 s of its last one, held back (one is sent once the 30 s have passed). Many: a router restarting in a loop, or lying.",
                &[],
            ),
        }
    }

    /// Makes `update` the current policy and sends it to every known router;
    /// returns how many routers it was sent to. Refuses a version that is not
    /// newer than the current one (routers would ignore it).
    pub fn publish(&self, update: PolicyUpdate) -> Result<usize, String> {
        let routers: Vec<String> = {
            let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(cur) = &g.current {
                if update.version <= cur.version {
                    return Err(format!(
                        "policy version {} is not newer than the current {}: routers keep the newer one; bump the version",
                        update.version, cur.version
                    ));
                }
            }
            g.current = Some(update.clone());
            let now = Instant::now();
            for seen in g.routers.values_mut() {
                // This copy is the newest: nothing older is owed any more.
                seen.owed = false;
                seen.sent_at = Some(now);
            }
            let mut v: Vec<String> = g.routers.keys().cloned().collect();
            v.sort();
            v
        };
        for r in &routers {
            self.send(r, &update);
        }
        Ok(routers.len())
    }

    /// The policy routers get now.
    pub fn current(&self) -> Option<PolicyUpdate> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).current.clone()
    }

    /// Routers known from heartbeats.
    pub fn routers(&self) -> Vec<String> {
        let mut v: Vec<String> = self.inner.lock().unwrap_or_else(|e| e.into_inner()).routers.keys().cloned().collect();
        v.sort();
        v
    }

    /// Feeds a heartbeat; a router heard for the first time or restarted gets
    /// the current policy (at most one copy per [`RESEND_EVERY`], see the
    /// module). Returns whether it was sent.
    pub fn heartbeat(&self, hb: &Heartbeat) -> bool {
        self.heartbeat_at(hb, Instant::now())
    }

    fn heartbeat_at(&self, hb: &Heartbeat, now: Instant) -> bool {
        if !hb.role.runs_router() || hb.node.is_empty() {
            return false;
        }
        let resend = {
            let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            g.tick += 1;
            let tick = g.tick;
            let seen = match g.routers.get(&hb.node) {
                Some(s) => *s,
                None => {
                    if g.routers.len() >= MAX_ROUTERS {
                        if let Some(old) = g.routers.iter().min_by_key(|(_, s)| s.order).map(|(k, _)| k.clone()) {
                            g.routers.remove(&old);
                        }
                    }
                    // First heard: it asks for the policy (`uptime_s: u64::MAX` reads as a restart).
                    Seen { uptime_s: u64::MAX, order: tick, sent_at: None, resent_at: None, owed: false }
                }
            };
            // A restart since the last copy went out (a run older than that copy has it).
            let restarted = hb.uptime_s < seen.uptime_s
                && seen.sent_at.is_none_or(|t| Duration::from_secs(hb.uptime_s) < now.saturating_duration_since(t));
            let seen = Seen { uptime_s: hb.uptime_s, order: tick, ..seen };
            self.ask(&mut g, &hb.node, seen, restarted, now)
        };
        self.send_if(&hb.node, resend)
    }

    /// Feeds an online/offline change (MQTT `…/status`): a known router that
    /// (re)connects gets the current policy, since a restarted router starts
    /// with an empty ruleset and its first heartbeats may show a larger uptime
    /// than the last one seen from its previous run (at most one copy per
    /// [`RESEND_EVERY`], see the module). Returns whether it was sent.
    pub fn node_online(&self, node: &str, online: bool) -> bool {
        self.node_online_at(node, online, Instant::now())
    }

    fn node_online_at(&self, node: &str, online: bool, now: Instant) -> bool {
        if !online {
            return false;
        }
        let resend = {
            let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let Some(seen) = g.routers.get(node).copied() else { return false };
            self.ask(&mut g, node, seen, true, now)
        };
        self.send_if(node, resend)
    }

    /// Records `seen` for `node` and decides whether a copy goes now: when it
    /// `asks` for one or is owed one, and its last copy on its own signals is
    /// at least [`RESEND_EVERY`] old; else one is owed.
    fn ask(&self, g: &mut Inner, node: &str, mut seen: Seen, asks: bool, now: Instant) -> Option<PolicyUpdate> {
        if (asks || seen.owed) && g.current.is_some() {
            if seen.resent_at.is_none_or(|t| now.saturating_duration_since(t) >= RESEND_EVERY) {
                seen.resent_at = Some(now);
                seen.sent_at = Some(now);
                seen.owed = false;
                g.routers.insert(node.to_string(), seen);
                return g.current.clone();
            }
            if asks {
                self.held.inc();
            }
            seen.owed = true;
        }
        g.routers.insert(node.to_string(), seen);
        None
    }

    fn send_if(&self, router: &str, update: Option<PolicyUpdate>) -> bool {
        match update {
            Some(p) => {
                self.send(router, &p);
                true
            }
            None => false,
        }
    }

    fn send(&self, router: &str, update: &PolicyUpdate) {
        if self.out.publish_to(router, Message::PolicyUpdate(update.clone())) {
            self.sent.inc();
        } else {
            tracing::warn!(router, version = update.version, "policy update not queued (bus full or spool error); it is sent again when the router restarts or the next version is published");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatewarden_proto::messages::{GroupRule, PolicyAction};
    use gatewarden_proto::role::Role;

    #[derive(Default)]
    struct Record(Mutex<Vec<(String, u64)>>);
    impl Publisher for Record {
        fn publish(&self, _msg: Message) -> bool {
            panic!("policy goes to named routers only");
        }
        fn publish_to(&self, to: &str, msg: Message) -> bool {
            let Message::PolicyUpdate(p) = msg else { panic!("{msg:?}") };
            self.0.lock().unwrap().push((to.to_string(), p.version));
            true
        }
    }

    fn policy(version: u64) -> PolicyUpdate {
        PolicyUpdate {
            version,
            groups: vec![("cams".into(), vec!["192.0.2.0/28".into()]), ("nas".into(), vec!["192.0.2.50".into()])],
            rules: vec![GroupRule {
                source_group: "cams".into(),
                destination_group: "nas".into(),
                protocol: None,
                ports: None,
                action: PolicyAction::Deny,
                priority: 1,
            }],
        }
    }

    fn hb(node: &str, role: Role, uptime_s: u64) -> Heartbeat {
        Heartbeat { node: node.into(), role, version: "t".into(), uptime_s, sent_ns: 0 }
    }

    #[test]
    fn each_router_gets_the_policy_on_publish_join_and_restart_only() {
        let rec = Arc::new(Record::default());
        let reg = Registry::new();
        let p = PolicyPush::new(rec.clone(), &reg);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(!p.heartbeat_at(&hb("router-1", Role::Router, 5), at(0)), "nothing to send yet");
        assert!(!p.heartbeat_at(&hb("det-1", Role::Detector, 5), at(0)), "detectors get no policy");
        assert_eq!(p.publish(policy(1)).unwrap(), 1);
        assert!(!p.heartbeat_at(&hb("router-1", Role::Router, 6), at(1)), "same run: already has it");
        assert!(p.heartbeat_at(&hb("router-2", Role::Router, 1), at(1)), "a new router gets the current policy");
        assert!(p.heartbeat_at(&hb("router-1", Role::Router, 0), at(2)), "a restarted router gets it again");
        assert!(p.publish(policy(1)).is_err(), "same version refused");
        assert_eq!(p.publish(policy(2)).unwrap(), 2);
        assert_eq!(
            *rec.0.lock().unwrap(),
            vec![
                ("router-1".to_string(), 1),
                ("router-2".to_string(), 1),
                ("router-1".to_string(), 1),
                ("router-1".to_string(), 2),
                ("router-2".to_string(), 2)
            ]
        );
        assert_eq!(reg.snapshot()["gatewarden_policy_updates_sent_total"], 5.0);
        assert!(p.node_online_at("router-2", true, at(40)), "a router back online gets it");
        assert!(!p.node_online_at("router-2", false, at(80)) && !p.node_online_at("det-1", true, at(80)));
        assert_eq!(rec.0.lock().unwrap().last().unwrap(), &("router-2".to_string(), 2));
        assert_eq!(p.routers(), vec!["router-1", "router-2"]);
    }

    /// Red-team finding: a compromised router whose heartbeats say uptime
    /// 5, 4, 5, 4, … (or whose status says `online` again and again) made the
    /// monitor seal and spool a new copy of the policy for it each time,
    /// until the full outbox dropped other nodes' messages.
    #[test]
    fn a_flapping_router_cannot_make_the_monitor_resend_without_limit() {
        let rec = Arc::new(Record::default());
        let p = PolicyPush::new(rec.clone(), &Registry::new());
        p.publish(policy(1)).unwrap();
        for i in 0..1000 {
            p.heartbeat(&hb("router-1", Role::Router, if i % 2 == 0 { 5 } else { 4 }));
            p.node_online("router-1", true);
        }
        let sent = rec.0.lock().unwrap().len();
        assert!(sent <= 2, "{sent} policy copies for 1000 heartbeats and 1000 `online`s");
    }

    /// The limit holds over time (one copy per [`RESEND_EVERY`]), and a copy
    /// held back is not lost: a router that really restarted twice gets it.
    #[test]
    fn a_held_back_copy_goes_once_the_interval_has_passed() {
        let rec = Arc::new(Record::default());
        let reg = Registry::new();
        let p = PolicyPush::new(rec.clone(), &reg);
        p.publish(policy(1)).unwrap();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let sent = || rec.0.lock().unwrap().len();
        assert!(p.heartbeat_at(&hb("router-1", Role::Router, 100), at(0)), "joined");
        // It restarts 5 s later: within the interval, so the copy is owed …
        assert!(!p.heartbeat_at(&hb("router-1", Role::Router, 1), at(5)));
        assert!(!p.heartbeat_at(&hb("router-1", Role::Router, 6), at(10)));
        // … and goes with the first heartbeat after it.
        assert!(p.heartbeat_at(&hb("router-1", Role::Router, 36), at(40)), "the owed copy");
        assert!(!p.heartbeat_at(&hb("router-1", Role::Router, 41), at(45)), "owed no more");
        assert_eq!(sent(), 2);
        // Its status says `online` as it restarts, then its first heartbeat shows the
        // new run: that run started before the copy went, so it asks for nothing more.
        assert!(p.node_online_at("router-1", true, at(100)));
        assert!(!p.heartbeat_at(&hb("router-1", Role::Router, 3), at(102)));
        assert!(!p.heartbeat_at(&hb("router-1", Role::Router, 8), at(140)), "nothing owed");
        assert_eq!(sent(), 3);
        // Flapping for 1000 s, a heartbeat a second and `online` with each: one copy per interval.
        for i in 0..1000 {
            p.heartbeat_at(&hb("router-1", Role::Router, 5 - i % 2), at(200 + i));
            p.node_online_at("router-1", true, at(200 + i));
        }
        let flapped = sent() - 3;
        assert!(flapped <= 1000 / RESEND_EVERY.as_secs() as usize + 1, "{flapped} copies in 1000 s");
        assert!(reg.snapshot()["gatewarden_policy_resends_held_total"] > 1000.0);
    }

    #[test]
    fn the_router_list_is_bounded() {
        let p = PolicyPush::new(Arc::new(Record::default()), &Registry::new());
        for i in 0..(MAX_ROUTERS + 10) {
            p.heartbeat(&hb(&format!("r{i}"), Role::Router, 1));
        }
        assert_eq!(p.routers().len(), MAX_ROUTERS);
    }
}
