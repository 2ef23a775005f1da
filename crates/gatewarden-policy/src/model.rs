//! The words of a group policy: groups of devices (by address, CIDR or MAC)
//! and `GroupRelationship` rules between them, parsed and validated from text
//! so the CLI, the HTTP API and the config file share one set of errors.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use gatewarden_core::net::Cidr;
use gatewarden_proto::messages::{GroupRule, PolicyAction, Proto};

/// Most groups a policy may hold: each becomes two nftables sets, and the
/// traffic matrix is at most groups² pairs.
pub const MAX_GROUPS: usize = 64;
/// Most members one group may list.
pub const MAX_MEMBERS: usize = 4096;
/// Most rules a policy may hold (each is one or two nftables rules).
pub const MAX_RULES: usize = 1024;

/// One member of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Member {
    /// An address or network.
    Net(Cidr),
    /// A link-layer address, resolved to IPs through the router's neighbour table.
    Mac([u8; 6]),
}

pub use gatewarden_core::net::{mac_text as format_mac, parse_mac};

impl FromStr for Member {
    type Err = String;
    fn from_str(s: &str) -> Result<Member, String> {
        let s = s.trim();
        if let Some(mac) = parse_mac(s) {
            return Ok(Member::Mac(mac));
        }
        s.parse::<Cidr>().map(Member::Net).map_err(|_| {
            format!(
                "member {s:?} is not an address, CIDR or MAC: write e.g. 192.0.2.10, 192.0.2.0/24, 2001:db8::/64 or aa:bb:cc:dd:ee:ff"
            )
        })
    }
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Member::Net(c) => write!(f, "{c}"),
            Member::Mac(m) => f.write_str(&format_mac(m)),
        }
    }
}

impl Member {
    /// Whether the two members can stand for the same device. MACs are
    /// compared with each other only: a MAC's addresses are known on the
    /// router, not here, so MAC-vs-network overlap is not claimed.
    pub fn overlaps(&self, other: &Member) -> bool {
        match (self, other) {
            (Member::Net(a), Member::Net(b)) => a.overlaps(b),
            (Member::Mac(a), Member::Mac(b)) => a == b,
            _ => false,
        }
    }

    /// Whether `addr` belongs to this member, given MAC → address resolutions.
    pub fn contains(&self, addr: &IpAddr, neighbours: &[(IpAddr, [u8; 6])]) -> bool {
        match self {
            Member::Net(c) => c.contains(addr),
            Member::Mac(m) => neighbours.iter().any(|(a, mac)| a == addr && mac == m),
        }
    }
}

/// Checks a group or rule name: 1–24 of `A-Z a-z 0-9 _ -` (it becomes part of an nftables set name).
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 24 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(format!(
            "group name {name:?}: use 1 to 24 characters of A-Z, a-z, 0-9, '_' or '-' (it becomes the nftables set grp_<name>4/6)"
        ));
    }
    Ok(())
}

/// A named set of devices. A device may be in several groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// Name, also the nftables set name `grp_<name>4/6`.
    pub name: String,
    /// Addresses, CIDRs or MACs, as text (kept as written).
    pub members: Vec<String>,
    /// Free text for the operator.
    #[serde(default)]
    pub description: String,
}

impl Group {
    /// Parses and validates; errors name the group and the bad member.
    pub fn parsed_members(&self) -> Result<Vec<Member>, String> {
        check_name(&self.name)?;
        if self.members.is_empty() {
            return Err(format!("group {}: give at least one member (address, CIDR or MAC)", self.name));
        }
        if self.members.len() > MAX_MEMBERS {
            return Err(format!("group {}: {} members, at most {MAX_MEMBERS}", self.name, self.members.len()));
        }
        self.members.iter().map(|m| m.parse::<Member>().map_err(|e| format!("group {}: {e}", self.name))).collect()
    }
}

/// `tcp | udp | icmp | any`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP (ICMPv6 for IPv6 traffic).
    Icmp,
    /// Every protocol.
    Any,
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Protocol, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            "icmp" | "icmpv6" | "ipv6-icmp" => Ok(Protocol::Icmp),
            "any" | "*" | "all" => Ok(Protocol::Any),
            other => Err(format!("protocol {other:?}: use tcp, udp, icmp or any")),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
            Protocol::Any => "any",
        })
    }
}

impl Protocol {
    /// Whether two protocol choices can match the same packet.
    pub fn overlaps(self, other: Protocol) -> bool {
        self == Protocol::Any || other == Protocol::Any || self == other
    }

    /// Whether this choice covers `p` (a flow's protocol).
    pub fn covers(self, p: Protocol) -> bool {
        self == Protocol::Any || self == p
    }

    /// The protocol class of a flow.
    pub fn of(p: Proto) -> Protocol {
        match p {
            Proto::Tcp => Protocol::Tcp,
            Proto::Udp => Protocol::Udp,
            Proto::Icmp | Proto::Icmpv6 => Protocol::Icmp,
            Proto::Other(_) => Protocol::Any,
        }
    }

    /// Whether rules for this protocol can name ports.
    pub fn has_ports(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::Udp)
    }
}

/// `"22"`, `"80-8080"` or `"any"`; inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    /// First port.
    pub lo: u16,
    /// Last port.
    pub hi: u16,
}

impl PortRange {
    /// Every port.
    pub const ANY: PortRange = PortRange { lo: 0, hi: 65535 };

    /// One port.
    pub fn one(p: u16) -> PortRange {
        PortRange { lo: p, hi: p }
    }

    /// Whether this is every port.
    pub fn is_any(&self) -> bool {
        *self == PortRange::ANY
    }

    /// Whether the ranges share a port.
    pub fn overlaps(&self, o: &PortRange) -> bool {
        self.lo <= o.hi && o.lo <= self.hi
    }

    /// Whether `p` is inside.
    pub fn contains(&self, p: u16) -> bool {
        self.lo <= p && p <= self.hi
    }
}

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<PortRange, String> {
        let s = s.trim();
        let bad = || format!("port range {s:?}: write one port (22), a range (80-8080) or any");
        if s.eq_ignore_ascii_case("any") || s == "*" {
            return Ok(PortRange::ANY);
        }
        let (lo, hi) = match s.split_once('-') {
            Some((a, b)) => (a.trim().parse::<u16>().map_err(|_| bad())?, b.trim().parse::<u16>().map_err(|_| bad())?),
            None => {
                let p = s.parse::<u16>().map_err(|_| bad())?;
                (p, p)
            }
        };
        if lo > hi {
            return Err(format!("port range {s:?}: the first port is larger than the last; write {hi}-{lo}"));
        }
        Ok(PortRange { lo, hi })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_any() {
            f.write_str("any")
        } else if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

impl Serialize for PortRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<PortRange, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `allow | deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Let matching new connections through (and stop looking at lower rules).
    Allow,
    /// Drop matching new connections.
    Deny,
}

impl FromStr for Action {
    type Err = String;
    fn from_str(s: &str) -> Result<Action, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "allow" | "accept" => Ok(Action::Allow),
            "deny" | "drop" | "block" => Ok(Action::Deny),
            other => Err(format!("action {other:?}: use allow or deny")),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        })
    }
}

/// Most extreme priority accepted (keeps arithmetic and display simple).
pub const MAX_PRIORITY: i32 = 1_000_000;

/// `GroupRelationship`: what traffic from one group to another may do.
/// Matches new connections (`ct state new`) from a member of
/// `source_group` to a member of `destination_group`; higher priority wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relationship {
    /// Stable id, assigned on create.
    pub id: u32,
    /// Source group name.
    pub source_group: String,
    /// Destination group name.
    pub destination_group: String,
    /// Protocol.
    pub protocol: Protocol,
    /// Destination ports (TCP/UDP only; `any` otherwise).
    pub port_range: PortRange,
    /// Allow or deny.
    pub action: Action,
    /// Higher wins; equal priorities must not overlap with different actions.
    pub priority: i32,
    /// Free text (accepted suggestions carry their justification here).
    #[serde(default)]
    pub comment: String,
}

impl Relationship {
    /// `#3 cameras -> sensors tcp/22 deny (priority 100)`.
    pub fn describe(&self) -> String {
        format!(
            "rule #{} {} -> {} {}/{} {} (priority {})",
            self.id,
            self.source_group,
            self.destination_group,
            self.protocol,
            self.port_range,
            self.action,
            self.priority
        )
    }

    /// Checks fields that do not depend on other rules.
    pub fn validate_shape(&self) -> Result<(), String> {
        check_name(&self.source_group)?;
        check_name(&self.destination_group)?;
        if !self.protocol.has_ports() && !self.port_range.is_any() {
            return Err(format!(
                "port range {} given for protocol {}: ports exist for tcp and udp only; use --ports any",
                self.port_range, self.protocol
            ));
        }
        if self.priority.abs() > MAX_PRIORITY {
            return Err(format!("priority {}: use a number between -{MAX_PRIORITY} and {MAX_PRIORITY}", self.priority));
        }
        Ok(())
    }

    /// The router's form of this rule.
    pub fn to_group_rule(&self) -> GroupRule {
        GroupRule {
            source_group: self.source_group.clone(),
            destination_group: self.destination_group.clone(),
            protocol: match self.protocol {
                Protocol::Tcp => Some(Proto::Tcp),
                Protocol::Udp => Some(Proto::Udp),
                Protocol::Icmp => Some(Proto::Icmp),
                Protocol::Any => None,
            },
            ports: if self.protocol.has_ports() && !self.port_range.is_any() {
                Some((self.port_range.lo, self.port_range.hi))
            } else {
                None
            },
            action: match self.action {
                Action::Allow => PolicyAction::Allow,
                Action::Deny => PolicyAction::Deny,
            },
            priority: self.priority,
        }
    }
}

/// The fields of a rule as a user gives them (create and update).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleSpec {
    /// Source group.
    pub source_group: String,
    /// Destination group.
    pub destination_group: String,
    /// `tcp`, `udp`, `icmp` or `any`.
    #[serde(default = "any_text")]
    pub protocol: String,
    /// `22`, `80-8080` or `any`.
    #[serde(default = "any_text")]
    pub port_range: String,
    /// `allow` or `deny`.
    pub action: String,
    /// Higher wins.
    #[serde(default)]
    pub priority: i32,
    /// Free text.
    #[serde(default)]
    pub comment: String,
}

fn any_text() -> String {
    "any".into()
}

impl RuleSpec {
    /// Parses into a relationship with the given id; every error names the field and a fix.
    pub fn parse(&self, id: u32) -> Result<Relationship, String> {
        let r = Relationship {
            id,
            source_group: self.source_group.trim().to_string(),
            destination_group: self.destination_group.trim().to_string(),
            protocol: self.protocol.parse()?,
            port_range: self.port_range.parse()?,
            action: self.action.parse()?,
            priority: self.priority,
            comment: self.comment.clone(),
        };
        r.validate_shape()?;
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_parse_addresses_cidrs_and_macs_and_say_what_is_wrong() {
        assert_eq!("192.0.2.10".parse::<Member>().unwrap().to_string(), "192.0.2.10");
        assert!(matches!("2001:db8::/64".parse::<Member>().unwrap(), Member::Net(_)));
        assert_eq!("AA-BB-cc-dd-ee-0f".parse::<Member>().unwrap(), Member::Mac([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x0f]));
        let e = "camera-1".parse::<Member>().unwrap_err();
        assert!(e.contains("aa:bb:cc:dd:ee:ff"), "{e}");
    }

    #[test]
    fn ports_protocols_and_actions_parse_with_clear_errors() {
        assert_eq!("22".parse::<PortRange>().unwrap(), PortRange::one(22));
        assert_eq!("80-8080".parse::<PortRange>().unwrap(), PortRange { lo: 80, hi: 8080 });
        assert!("any".parse::<PortRange>().unwrap().is_any());
        assert!("9000-80".parse::<PortRange>().unwrap_err().contains("80-9000"));
        assert!("70000".parse::<PortRange>().is_err());
        assert!("sctp".parse::<Protocol>().unwrap_err().contains("tcp, udp, icmp or any"));
        assert!("maybe".parse::<Action>().is_err());
        let spec = RuleSpec {
            source_group: "a".into(),
            destination_group: "b".into(),
            protocol: "icmp".into(),
            port_range: "22".into(),
            action: "deny".into(),
            priority: 1,
            comment: String::new(),
        };
        assert!(spec.parse(1).unwrap_err().contains("tcp and udp only"));
        let bad_name = RuleSpec { source_group: "no spaces".into(), ..spec };
        assert!(bad_name.parse(1).unwrap_err().contains("1 to 24 characters"));
    }
}
