//! A complete policy (groups + relationships): validation, conflict
//! detection, `explain`, and compilation to the router's [`PolicyUpdate`].

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;

use super::model::{Action, Group, Member, PortRange, Protocol, Relationship, MAX_GROUPS, MAX_RULES};
use gatewarden_proto::messages::PolicyUpdate;

/// Groups and rules, checked as a whole.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    /// Groups by name.
    pub groups: BTreeMap<String, Group>,
    /// Relationships in insertion order (evaluation sorts by priority).
    pub rules: Vec<Relationship>,
}

/// One endpoint of an `explain` question: a group name or an address.
#[derive(Debug, Clone, PartialEq)]
pub enum Endpoint {
    /// Everything in this group.
    Group(String),
    /// One device.
    Addr(IpAddr),
}

/// The answer of `explain`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    /// The rule that decides, if any.
    pub decided_by: Option<Relationship>,
    /// `allow` or `deny`; with no rule, traffic passes (the forward chain's policy is accept).
    pub action: Action,
    /// Other matching rules it outranks, highest first.
    pub outranked: Vec<Relationship>,
    /// A sentence for the operator.
    pub why: String,
}

impl Policy {
    /// Parsed members of a group (the group must exist and be valid).
    pub fn members(&self, group: &str) -> Vec<Member> {
        self.groups.get(group).and_then(|g| g.parsed_members().ok()).unwrap_or_default()
    }

    /// Whether two groups can contain the same device.
    pub fn groups_intersect(&self, a: &str, b: &str) -> bool {
        if a == b {
            return true;
        }
        let (ma, mb) = (self.members(a), self.members(b));
        ma.iter().any(|x| mb.iter().any(|y| x.overlaps(y)))
    }

    /// Whether two rules can match the same packet.
    pub fn rules_overlap(&self, a: &Relationship, b: &Relationship) -> bool {
        a.protocol.overlaps(b.protocol)
            && a.port_range.overlaps(&b.port_range)
            && self.groups_intersect(&a.source_group, &b.source_group)
            && self.groups_intersect(&a.destination_group, &b.destination_group)
    }

    /// Checks one group against the policy's limits.
    pub fn check_group(&self, g: &Group) -> Result<(), String> {
        g.parsed_members()?;
        if !self.groups.contains_key(&g.name) && self.groups.len() >= MAX_GROUPS {
            return Err(format!("at most {MAX_GROUPS} groups; remove one first (gatewarden policy group remove NAME)"));
        }
        Ok(())
    }

    /// Checks `r` against the policy as if it were added (or replaced, same id):
    /// groups exist, and no rule at the same priority overlaps it with the other action.
    pub fn check_rule(&self, r: &Relationship) -> Result<(), String> {
        r.validate_shape()?;
        for g in [&r.source_group, &r.destination_group] {
            if !self.groups.contains_key(g.as_str()) {
                let known: Vec<&str> = self.groups.keys().map(String::as_str).collect();
                return Err(format!(
                    "group {g:?} does not exist (known: {}); create it first: gatewarden policy group add {g} --member ADDRESS",
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                ));
            }
        }
        if !self.rules.iter().any(|o| o.id == r.id) && self.rules.len() >= MAX_RULES {
            return Err(format!("at most {MAX_RULES} rules; delete one first"));
        }
        if let Some(c) = self.conflict_with(r) {
            return Err(format!(
                "conflict: {} overlaps {} at the same priority with the opposite action; give one of them a different priority \
or narrow its groups, protocol or ports",
                describe_new(r),
                c.describe()
            ));
        }
        Ok(())
    }

    /// The first existing rule that conflicts with `r` (same priority, overlapping, other action).
    pub fn conflict_with(&self, r: &Relationship) -> Option<&Relationship> {
        self.rules
            .iter()
            .filter(|o| o.id != r.id)
            .find(|o| o.priority == r.priority && o.action != r.action && self.rules_overlap(o, r))
    }

    /// Whether `group` may be removed: no rule refers to it.
    pub fn rules_using(&self, group: &str) -> Vec<&Relationship> {
        self.rules.iter().filter(|r| r.source_group == group || r.destination_group == group).collect()
    }

    /// Rules in evaluation order: priority high to low, then id.
    pub fn ordered(&self) -> Vec<&Relationship> {
        let mut v: Vec<&Relationship> = self.rules.iter().collect();
        v.sort_by_key(|r| (std::cmp::Reverse(r.priority), r.id));
        v
    }

    /// Groups an address belongs to (MACs through `neighbours`).
    pub fn groups_of(&self, addr: &IpAddr, neighbours: &[(IpAddr, [u8; 6])]) -> Vec<String> {
        self.groups
            .values()
            .filter(|g| g.parsed_members().map(|m| m.iter().any(|m| m.contains(addr, neighbours))).unwrap_or(false))
            .map(|g| g.name.clone())
            .collect()
    }

    fn endpoint_groups(&self, e: &Endpoint, neighbours: &[(IpAddr, [u8; 6])]) -> Vec<String> {
        match e {
            Endpoint::Group(g) => vec![g.clone()],
            Endpoint::Addr(a) => self.groups_of(a, neighbours),
        }
    }

    /// Which rule decides traffic from `src` to `dst` with `proto`/`port`, and why.
    /// For group endpoints a rule matches when it names that group.
    pub fn explain(
        &self,
        src: &Endpoint,
        dst: &Endpoint,
        proto: Protocol,
        port: Option<u16>,
        neighbours: &[(IpAddr, [u8; 6])],
    ) -> Result<Explanation, String> {
        for e in [src, dst] {
            if let Endpoint::Group(g) = e {
                if !self.groups.contains_key(g) {
                    return Err(format!("group {g:?} does not exist; list groups with: gatewarden policy group list"));
                }
            }
        }
        let sg = self.endpoint_groups(src, neighbours);
        let dg = self.endpoint_groups(dst, neighbours);
        let matching: Vec<Relationship> = self
            .ordered()
            .into_iter()
            .filter(|r| {
                sg.contains(&r.source_group)
                    && dg.contains(&r.destination_group)
                    && r.protocol.covers(proto)
                    && match port {
                        Some(p) if r.protocol.has_ports() => r.port_range.contains(p),
                        _ => true,
                    }
            })
            .cloned()
            .collect();
        let what = format!(
            "{} -> {} {}{}",
            endpoint_text(src),
            endpoint_text(dst),
            proto,
            port.map(|p| format!("/{p}")).unwrap_or_default()
        );
        let Some(first) = matching.first().cloned() else {
            let why = format!(
                "no rule matches {what} (source groups: {}; destination groups: {}): the packet is accepted by the forward chain's default",
                list_or_none(&sg),
                list_or_none(&dg)
            );
            return Ok(Explanation { decided_by: None, action: Action::Allow, outranked: vec![], why });
        };
        let outranked: Vec<Relationship> = matching[1..].to_vec();
        let mut why = format!(
            "{what} is {} by {}: it is the highest-priority matching rule",
            if first.action == Action::Allow { "allowed" } else { "denied" },
            first.describe()
        );
        if outranked.is_empty() {
            why.push_str(" and the only one");
        } else {
            let others: Vec<String> = outranked.iter().map(|r| r.describe()).collect();
            why.push_str(&format!("; it outranks {}", others.join(", ")));
        }
        Ok(Explanation { action: first.action, decided_by: Some(first), outranked, why })
    }

    /// The router's form: group sets and rules, ordered by priority.
    pub fn compile(&self, version: u64) -> PolicyUpdate {
        PolicyUpdate {
            version,
            groups: self
                .groups
                .values()
                .map(|g| {
                    let members = g.parsed_members().unwrap_or_default().iter().map(|m| m.to_string()).collect();
                    (g.name.clone(), members)
                })
                .collect(),
            rules: self.ordered().into_iter().map(|r| r.to_group_rule()).collect(),
        }
    }

    /// Whether an existing rule already decides every packet of (`src`,`dst`,`proto`,`ports`).
    pub fn decided(&self, src: &str, dst: &str, proto: Protocol, ports: PortRange) -> Option<&Relationship> {
        self.ordered().into_iter().find(|r| {
            r.source_group == src
                && r.destination_group == dst
                && r.protocol.covers(proto)
                && (r.port_range.lo <= ports.lo && ports.hi <= r.port_range.hi)
        })
    }
}

fn describe_new(r: &Relationship) -> String {
    if r.id == 0 {
        format!(
            "the new rule {} -> {} {}/{} {} (priority {})",
            r.source_group, r.destination_group, r.protocol, r.port_range, r.action, r.priority
        )
    } else {
        r.describe()
    }
}

fn endpoint_text(e: &Endpoint) -> String {
    match e {
        Endpoint::Group(g) => format!("group {g}"),
        Endpoint::Addr(a) => a.to_string(),
    }
}

fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

impl std::str::FromStr for Endpoint {
    type Err = String;
    fn from_str(s: &str) -> Result<Endpoint, String> {
        match s.parse::<IpAddr>() {
            Ok(a) => Ok(Endpoint::Addr(a)),
            Err(_) => super::model::check_name(s).map(|_| Endpoint::Group(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(name: &str, members: &[&str]) -> Group {
        Group {
            name: name.into(),
            members: members.iter().map(|s| s.to_string()).collect(),
            description: String::new(),
        }
    }

    fn rule(id: u32, s: &str, d: &str, p: Protocol, ports: &str, a: Action, prio: i32) -> Relationship {
        Relationship {
            id,
            source_group: s.into(),
            destination_group: d.into(),
            protocol: p,
            port_range: ports.parse().unwrap(),
            action: a,
            priority: prio,
            comment: String::new(),
        }
    }

    fn policy() -> Policy {
        let mut p = Policy::default();
        for g in [
            group("cameras", &["192.0.2.0/28", "2001:db8:1::/64"]),
            group("sensors", &["198.51.100.0/28"]),
            group("lobby", &["192.0.2.8/30"]),
        ] {
            p.groups.insert(g.name.clone(), g);
        }
        p
    }

    #[test]
    fn same_priority_overlap_with_other_action_is_refused_naming_both() {
        let mut p = policy();
        let deny = rule(1, "cameras", "sensors", Protocol::Tcp, "22", Action::Deny, 100);
        p.check_rule(&deny).unwrap();
        p.rules.push(deny);
        // lobby ⊂ cameras, any protocol covers tcp, 1-1024 covers 22.
        let allow = rule(2, "lobby", "sensors", Protocol::Any, "any", Action::Allow, 100);
        let e = p.check_rule(&allow).unwrap_err();
        assert!(e.contains("rule #2 lobby -> sensors any/any allow (priority 100)"), "{e}");
        assert!(e.contains("rule #1 cameras -> sensors tcp/22 deny (priority 100)"), "{e}");
        // Other priority, other port or same action: fine.
        p.check_rule(&rule(2, "lobby", "sensors", Protocol::Any, "any", Action::Allow, 101)).unwrap();
        p.check_rule(&rule(2, "cameras", "sensors", Protocol::Tcp, "1883", Action::Allow, 100)).unwrap();
        p.check_rule(&rule(2, "lobby", "sensors", Protocol::Tcp, "any", Action::Deny, 100)).unwrap();
        assert!(p
            .check_rule(&rule(2, "cameras", "nowhere", Protocol::Tcp, "any", Action::Deny, 1))
            .unwrap_err()
            .contains("does not exist"));
    }

    #[test]
    fn explain_names_the_deciding_rule_and_what_it_outranks() {
        let mut p = policy();
        p.rules.push(rule(1, "cameras", "sensors", Protocol::Tcp, "any", Action::Deny, 10));
        p.rules.push(rule(2, "cameras", "sensors", Protocol::Tcp, "1883", Action::Allow, 100));
        let a: Endpoint = "192.0.2.3".parse().unwrap();
        let b: Endpoint = "sensors".parse().unwrap();
        let e = p.explain(&a, &b, Protocol::Tcp, Some(1883), &[]).unwrap();
        assert_eq!(e.decided_by.as_ref().unwrap().id, 2);
        assert_eq!(e.action, Action::Allow);
        assert!(e.why.contains("outranks rule #1"), "{}", e.why);
        let e = p.explain(&a, &b, Protocol::Tcp, Some(22), &[]).unwrap();
        assert_eq!(e.decided_by.unwrap().id, 1);
        assert_eq!(e.action, Action::Deny);
        let e = p.explain(&a, &b, Protocol::Udp, Some(53), &[]).unwrap();
        assert!(e.decided_by.is_none() && e.why.contains("no rule matches"), "{}", e.why);
        // MAC members resolve through the neighbour table.
        p.groups.insert("plug".into(), group("plug", &["02:00:00:00:00:07"]));
        p.rules.push(rule(3, "plug", "sensors", Protocol::Any, "any", Action::Deny, 5));
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let e = p.explain(&Endpoint::Addr(ip), &b, Protocol::Udp, None, &[(ip, [2, 0, 0, 0, 0, 7])]).unwrap();
        assert_eq!(e.decided_by.unwrap().id, 3);
    }

    #[test]
    fn compile_orders_by_priority_and_maps_any() {
        let mut p = policy();
        p.rules.push(rule(1, "cameras", "sensors", Protocol::Any, "any", Action::Deny, 10));
        p.rules.push(rule(2, "cameras", "sensors", Protocol::Tcp, "1883", Action::Allow, 100));
        let u = p.compile(7);
        assert_eq!(u.version, 7);
        assert_eq!(u.rules[0].ports, Some((1883, 1883)));
        assert_eq!(u.rules[1].protocol, None);
        assert_eq!(u.rules[1].ports, None);
        assert_eq!(u.groups.len(), 3);
    }
}
