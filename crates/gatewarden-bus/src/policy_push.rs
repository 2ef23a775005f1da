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
//! so a resend is harmless.
//!
//! In one process (`--role all`) the publisher is the in-process bus and the
//! local router receives the update once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::transport::Publisher;
use gatewarden_core::metrics::{Counter, Registry};
use gatewarden_proto::messages::{Heartbeat, Message, PolicyUpdate};

/// Most routers remembered; past it the least recently heard is forgotten
/// (it gets the policy again on its next heartbeat, harmlessly).
pub const MAX_ROUTERS: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Seen {
    uptime_s: u64,
    order: u64,
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
    /// the current policy. Returns whether it was sent.
    pub fn heartbeat(&self, hb: &Heartbeat) -> bool {
        if !hb.role.runs_router() || hb.node.is_empty() {
            return false;
        }
        let resend = {
            let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            g.tick += 1;
            let tick = g.tick;
            let fresh = match g.routers.get(&hb.node) {
                None => true,
                Some(s) => hb.uptime_s < s.uptime_s,
            };
            if !g.routers.contains_key(&hb.node) && g.routers.len() >= MAX_ROUTERS {
                if let Some(old) = g.routers.iter().min_by_key(|(_, s)| s.order).map(|(k, _)| k.clone()) {
                    g.routers.remove(&old);
                }
            }
            g.routers.insert(hb.node.clone(), Seen { uptime_s: hb.uptime_s, order: tick });
            if fresh {
                g.current.clone()
            } else {
                None
            }
        };
        match resend {
            Some(p) => {
                self.send(&hb.node, &p);
                true
            }
            None => false,
        }
    }

    /// Feeds an online/offline change (MQTT `…/status`): a known router that
    /// (re)connects gets the current policy, since a restarted router starts
    /// with an empty ruleset and its first heartbeats may show a larger uptime
    /// than the last one seen from its previous run. Returns whether it was sent.
    pub fn node_online(&self, node: &str, online: bool) -> bool {
        if !online {
            return false;
        }
        let current = {
            let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            if !g.routers.contains_key(node) {
                return false;
            }
            g.current.clone()
        };
        match current {
            Some(p) => {
                self.send(node, &p);
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
        assert!(!p.heartbeat(&hb("router-1", Role::Router, 5)), "nothing to send yet");
        assert!(!p.heartbeat(&hb("det-1", Role::Detector, 5)), "detectors get no policy");
        assert_eq!(p.publish(policy(1)).unwrap(), 1);
        assert!(!p.heartbeat(&hb("router-1", Role::Router, 6)), "same run: already has it");
        assert!(p.heartbeat(&hb("router-2", Role::Router, 1)), "a new router gets the current policy");
        assert!(p.heartbeat(&hb("router-1", Role::Router, 0)), "a restarted router gets it again");
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
        assert!(p.node_online("router-2", true), "a router back online gets it");
        assert!(!p.node_online("router-2", false) && !p.node_online("det-1", true));
        assert_eq!(rec.0.lock().unwrap().last().unwrap(), &("router-2".to_string(), 2));
        assert_eq!(p.routers(), vec!["router-1", "router-2"]);
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
