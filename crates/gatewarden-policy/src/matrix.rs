//! The traffic matrix: per (source group, destination group, protocol, port)
//! the flows, bytes, first and last seen, how many got an answer, and in how
//! many distinct time buckets they occurred, which member addresses
//! originated them (a few, then only "more"), and which routers reported
//! them (a few by name, then a count). Bounded (cells without an
//! answered flow go first, then the least recently seen) and serialisable, so it survives restarts.
//!
//! The routers are kept because the matrix is fleet-wide and an accepted
//! rule applies to every router, while each flow is one router's word: a
//! router with a stolen certificate can report any flows. A suggestion
//! names whose word it rests on ([`Routers`]).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use gatewarden_core::identity::valid_node_id;

use serde::{Deserialize, Serialize};

use super::model::Protocol;
use gatewarden_proto::messages::{FlowRecord, Proto};

/// Default number of cells kept.
pub const DEFAULT_MAX_CELLS: usize = 4096;
/// Flows remembered for de-duplication of flow updates (each flow is counted once).
pub const FLOW_MEMORY: usize = 65_536;
/// Most group combinations one flow is counted under (a device in many groups).
pub const MAX_COMBINATIONS: usize = 16;
/// Distinct originator addresses a [`Sources`] remembers; past them it only
/// knows "more", so a flood of forged sources costs no memory.
pub const MAX_SOURCES: usize = 4;

/// Distinct originator addresses, the first [`MAX_SOURCES`] of them, and
/// whether there were more: enough to tell one member from several, and to
/// name a lone one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sources {
    /// The first distinct addresses seen.
    pub addrs: Vec<IpAddr>,
    /// More distinct addresses were seen than `addrs` holds.
    pub more: bool,
}

impl Sources {
    /// Counts `a` (once).
    pub fn note(&mut self, a: IpAddr) {
        if self.addrs.contains(&a) {
            return;
        }
        if self.addrs.len() < MAX_SOURCES {
            self.addrs.push(a);
        } else {
            self.more = true;
        }
    }

    /// Adds every address of `o`.
    pub fn merge(&mut self, o: &Sources) {
        for a in &o.addrs {
            self.note(*a);
        }
        self.more |= o.more;
    }

    /// The one address, when exactly one was seen.
    pub fn only(&self) -> Option<IpAddr> {
        match self.addrs.as_slice() {
            [a] if !self.more => Some(*a),
            _ => None,
        }
    }

    /// `1 member address (192.0.2.4)`, `3 member addresses (…)`, `more than 4 member addresses`.
    pub fn describe(&self) -> String {
        let list = self.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ");
        match (self.addrs.len(), self.more) {
            (0, false) => "no recorded member address".into(),
            (_, true) => format!("more than {MAX_SOURCES} member addresses ({list}, ...)"),
            (1, false) => format!("1 member address ({list})"),
            (n, false) => format!("{n} member addresses ({list})"),
        }
    }

    /// Drops what a file written by hand or by a larger limit holds beyond the bound.
    fn trim(&mut self) {
        if self.addrs.len() > MAX_SOURCES {
            self.addrs.truncate(MAX_SOURCES);
            self.more = true;
        }
    }
}

/// Distinct routers a [`Routers`] names; past them it only counts reports,
/// so a flood of forged node names (or a big fleet) costs no memory. A
/// node id is at most 64 bytes, so a cell's three lists hold at most about
/// 1.2 KiB (4096 cells: under 5 MiB; with ordinary names a tenth of that).
pub const MAX_ROUTERS_NAMED: usize = 4;

/// How many reports one router sent, as a [`Routers`] keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterReports {
    /// The router's node id (its certificate's name).
    pub node: String,
    /// Its reports (flows, alerts or batches, as the holder counts).
    pub n: u64,
}

/// Which routers reported something: the first [`MAX_ROUTERS_NAMED`]
/// distinct node ids with how many reports each, and how many reports came
/// from routers past them (or under a name that is not a node id). Enough
/// to tell one router's word from several routers' and to name a lone one:
/// a suggestion for the whole fleet resting on one router is what a stolen
/// router certificate can make.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Routers {
    /// The first distinct routers, in the order they were first seen.
    pub reports: Vec<RouterReports>,
    /// Reports from routers not named.
    pub other: u64,
}

impl Routers {
    /// Counts one report from `node`.
    pub fn note(&mut self, node: &str) {
        self.add(node, 1);
    }

    /// Counts `n` reports from `node`. A name that is not a node id (no
    /// honest router has one) is counted, never kept.
    pub fn add(&mut self, node: &str, n: u64) {
        if n == 0 {
            return;
        }
        if let Some(r) = self.reports.iter_mut().find(|r| r.node == node) {
            r.n = r.n.saturating_add(n);
        } else if self.reports.len() < MAX_ROUTERS_NAMED && valid_node_id(node) {
            self.reports.push(RouterReports { node: node.to_string(), n });
        } else {
            self.other = self.other.saturating_add(n);
        }
    }

    /// Adds every report of `o`.
    pub fn merge(&mut self, o: &Routers) {
        for r in &o.reports {
            self.add(&r.node, r.n);
        }
        self.other = self.other.saturating_add(o.other);
    }

    /// The one router, when every report came from it.
    pub fn only(&self) -> Option<&str> {
        match self.reports.as_slice() {
            [r] if self.other == 0 => Some(&r.node),
            _ => None,
        }
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.reports.is_empty() && self.other == 0
    }

    /// Whether more than one router reported (or one not named).
    pub fn several(&self) -> bool {
        !self.is_empty() && self.only().is_none()
    }

    /// Whether a router other than `node` reported.
    pub fn besides(&self, node: &str) -> bool {
        self.other > 0 || self.reports.iter().any(|r| r.node != node)
    }

    /// Reports of `node` (0 for a router not named).
    pub fn of(&self, node: &str) -> u64 {
        self.reports.iter().find(|r| r.node == node).map_or(0, |r| r.n)
    }

    /// The named routers.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.reports.iter().map(|r| r.node.as_str())
    }

    /// `router-1 (12 flows), router-3 (2 flows) and 5 more flows from other routers`.
    pub fn describe(&self, unit: &str) -> String {
        let mut parts: Vec<String> = self.reports.iter().map(|r| format!("{} ({} {unit})", r.node, r.n)).collect();
        if self.other > 0 {
            let more = format!("{} more {unit} from other routers", self.other);
            if parts.is_empty() {
                return more;
            }
            let last = parts.pop().unwrap_or_default();
            parts.push(format!("{last} and {more}"));
        }
        parts.join(", ")
    }

    /// Drops what a file written by hand or by a larger limit holds beyond the bound.
    pub(crate) fn trim(&mut self) {
        if self.reports.len() > MAX_ROUTERS_NAMED || self.reports.iter().any(|r| !valid_node_id(&r.node)) {
            let all = std::mem::take(&mut self.reports);
            for r in all {
                self.add(&r.node, r.n);
            }
        }
    }
}

/// One endpoint's place in a group, for [`TrafficMatrix::observe_from`]:
/// the group, and the routers whose neighbour tables alone put the address
/// there (through a MAC member); empty when an address or network member
/// holds it (the policy's own word).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership<'a> {
    /// The group.
    pub group: &'a str,
    /// Routers whose neighbour tables resolved a MAC member of the group to this address.
    pub via: Vec<&'a str>,
}

impl<'a> Membership<'a> {
    /// A member by address or network.
    pub fn direct(group: &'a str) -> Membership<'a> {
        Membership { group, via: Vec::new() }
    }
}

/// Which traffic a cell counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CellKey {
    /// Source group.
    pub src: String,
    /// Destination group.
    pub dst: String,
    /// Protocol class.
    pub proto: Protocol,
    /// Destination port (0 for ICMP and other protocols).
    pub port: u16,
}

/// What a cell counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// Flows (connections) seen.
    pub flows: u64,
    /// Flows that were answered (TCP: the originator acknowledged the
    /// responder, see `answered`; UDP/ICMP: with a reply).
    pub answered: u64,
    /// IP bytes, both directions.
    pub bytes: u64,
    /// First flow, Unix seconds.
    pub first_seen: u64,
    /// Last flow, Unix seconds.
    pub last_seen: u64,
    /// Distinct time buckets with at least one new flow (recurrence).
    pub buckets: u32,
    /// The last bucket counted.
    pub last_bucket: u64,
    /// Originators of the flows (bounded).
    #[serde(default)]
    pub sources: Sources,
    /// Originators of the answered flows (bounded): TCP ones proved their
    /// address by acknowledging the responder.
    #[serde(default)]
    pub answered_sources: Sources,
    /// Routers whose batches brought the flows, flows each (bounded).
    #[serde(default)]
    pub routers: Routers,
    /// Routers whose batches brought the answers, answered flows each
    /// (bounded): what an allow and a guessing deny rest on. A router
    /// reporting an answer to a flow another router brought is named here.
    #[serde(default)]
    pub answered_routers: Routers,
    /// Routers whose neighbour tables put an endpoint of a flow into its
    /// group through a MAC member (and no address member did), flows each
    /// (bounded): a router's table can make any address a member.
    #[serde(default)]
    pub resolved_by: Routers,
}

impl Cell {
    /// Flows that got no answer (scan probes, refused or unanswered connections).
    pub fn unanswered(&self) -> u64 {
        self.flows.saturating_sub(self.answered)
    }
}

#[derive(Debug, Clone)]
struct Seen {
    keys: Vec<CellKey>,
    bytes: u64,
    answered: bool,
}

/// The matrix. Not thread-safe by itself; the engine holds it under a lock.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrafficMatrix {
    #[serde(with = "cells_as_list")]
    cells: HashMap<CellKey, Cell>,
    /// Cells the matrix may hold.
    pub max_cells: usize,
    /// Bucket length in seconds for the recurrence count.
    pub bucket_s: u64,
    /// Cells dropped because the matrix was full.
    pub evicted: u64,
    /// Routers heard from (batches and alerts between groups): whether a
    /// suggestion resting on one router rests on one router *of several*.
    #[serde(default)]
    pub reporters: Routers,
    #[serde(skip)]
    seen: HashMap<u64, Seen>,
    #[serde(skip)]
    seen_order: VecDeque<u64>,
}

impl PartialEq for TrafficMatrix {
    fn eq(&self, o: &TrafficMatrix) -> bool {
        self.cells == o.cells && self.max_cells == o.max_cells && self.bucket_s == o.bucket_s
    }
}

/// JSON maps need string keys: cells are stored as a list of `{key, cell}`.
mod cells_as_list {
    use std::collections::HashMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{Cell, CellKey};

    #[derive(Serialize, Deserialize)]
    struct Entry {
        key: CellKey,
        cell: Cell,
    }

    pub fn serialize<S: Serializer>(m: &HashMap<CellKey, Cell>, s: S) -> Result<S::Ok, S::Error> {
        let mut v: Vec<Entry> = m.iter().map(|(k, c)| Entry { key: k.clone(), cell: c.clone() }).collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<HashMap<CellKey, Cell>, D::Error> {
        Ok(Vec::<Entry>::deserialize(d)?.into_iter().map(|e| (e.key, e.cell)).collect())
    }
}

/// Whether a flow was a connection the originator really had. TCP: only
/// when the originator acknowledged the responder's sequence numbers
/// (`src_answered`): a SYN-ACK alone (`S1`, or `RSTO` when the real owner
/// of a forged address resets it, or a SYN scan's open port) is what a
/// forger or a scanner gets too, and read as "answered" it made a stable
/// allow of a port nobody used. UDP and ICMP: any reply.
fn answered(f: &FlowRecord) -> bool {
    match f.proto {
        Proto::Tcp => f.src_answered,
        _ => f.rev_packets > 0,
    }
}

impl TrafficMatrix {
    /// An empty matrix holding at most `max_cells`, counting recurrence in `bucket_s` buckets.
    pub fn new(max_cells: usize, bucket_s: u64) -> TrafficMatrix {
        TrafficMatrix {
            cells: HashMap::new(),
            max_cells: max_cells.max(1),
            bucket_s: bucket_s.max(1),
            evicted: 0,
            reporters: Routers::default(),
            seen: HashMap::new(),
            seen_order: VecDeque::new(),
        }
    }

    /// Counts one flow record (a snapshot; a flow reported again adds only its new bytes).
    /// `src_groups`/`dst_groups`: the groups of its originator and responder.
    /// No router is named: see [`TrafficMatrix::observe_from`].
    pub fn observe(&mut self, f: &FlowRecord, src_groups: &[String], dst_groups: &[String]) {
        fn direct(g: &[String]) -> Vec<Membership<'_>> {
            g.iter().map(|g| Membership::direct(g)).collect()
        }
        self.observe_from(f, None, &direct(src_groups), &direct(dst_groups));
    }

    /// Counts one router's heard-from report (a flow batch, an alert).
    pub fn note_reporter(&mut self, node: &str) {
        self.reporters.note(node);
    }

    /// [`TrafficMatrix::observe`] for a flow `router` reported, its
    /// originator and responder in `src_groups`/`dst_groups`: the cells name
    /// the router (and the routers whose neighbour tables made an endpoint a
    /// member). A flow is one flow whichever routers report it (its id is a
    /// hash of the flow), so a router that reports only an answer to another
    /// router's flow is named for the answer, not for the flow.
    pub fn observe_from(
        &mut self,
        f: &FlowRecord,
        router: Option<&str>,
        src_groups: &[Membership<'_>],
        dst_groups: &[Membership<'_>],
    ) {
        if src_groups.is_empty() || dst_groups.is_empty() {
            return;
        }
        let proto = Protocol::of(f.proto);
        let port = if proto.has_ports() { f.dport } else { 0 };
        let now = f.last_ns / 1_000_000_000;
        let first = f.first_ns / 1_000_000_000;
        let bytes = f.fwd_bytes.saturating_add(f.rev_bytes);
        let ans = answered(f);
        // Per new cell: the routers whose neighbour tables placed its endpoints.
        let mut via: Vec<Vec<&str>> = Vec::new();
        let (new, delta_bytes, newly_answered, keys) = match self.seen.get_mut(&f.flow_id) {
            Some(s) => {
                let d = bytes.saturating_sub(s.bytes);
                s.bytes = s.bytes.max(bytes);
                let na = ans && !s.answered;
                s.answered |= ans;
                (false, d, na, s.keys.clone())
            }
            None => {
                let mut keys = Vec::new();
                'outer: for sg in src_groups {
                    for dg in dst_groups {
                        if keys.len() >= MAX_COMBINATIONS {
                            break 'outer;
                        }
                        keys.push(CellKey { src: sg.group.to_string(), dst: dg.group.to_string(), proto, port });
                        let mut v = sg.via.clone();
                        v.extend(dg.via.iter().filter(|r| !sg.via.contains(r)));
                        via.push(v);
                    }
                }
                if self.seen_order.len() >= FLOW_MEMORY {
                    if let Some(old) = self.seen_order.pop_front() {
                        self.seen.remove(&old);
                    }
                }
                self.seen.insert(f.flow_id, Seen { keys: keys.clone(), bytes, answered: ans });
                self.seen_order.push_back(f.flow_id);
                (true, bytes, ans, keys)
            }
        };
        let bucket = now / self.bucket_s;
        for (i, k) in keys.into_iter().enumerate() {
            if !self.cells.contains_key(&k) {
                if !new {
                    continue; // the cell was evicted since; do not resurrect it with partial numbers
                }
                self.make_room();
                self.cells.insert(k.clone(), Cell { first_seen: first, ..Cell::default() });
            }
            let c = self.cells.get_mut(&k).expect("inserted above");
            if new {
                c.flows += 1;
                if c.buckets == 0 || bucket != c.last_bucket {
                    c.buckets = c.buckets.saturating_add(1);
                    c.last_bucket = bucket;
                }
                c.first_seen = c.first_seen.min(first);
                c.sources.note(f.src);
                if let Some(r) = router {
                    c.routers.note(r);
                }
                for r in via.get(i).into_iter().flatten() {
                    c.resolved_by.note(r);
                }
            }
            if newly_answered {
                c.answered += 1;
                c.answered_sources.note(f.src);
                if let Some(r) = router {
                    c.answered_routers.note(r);
                }
            }
            c.bytes = c.bytes.saturating_add(delta_bytes);
            c.last_seen = c.last_seen.max(now);
        }
    }

    /// Drops cells in eviction order until at most `max_cells` remain
    /// (after loading a file written with a larger limit).
    pub fn trim(&mut self) {
        for c in self.cells.values_mut() {
            c.sources.trim();
            c.answered_sources.trim();
            c.routers.trim();
            c.answered_routers.trim();
            c.resolved_by.trim();
        }
        self.reporters.trim();
        if self.cells.len() <= self.max_cells {
            return;
        }
        let by_age = self.eviction_order();
        let excess = self.cells.len() - self.max_cells;
        for (_, k) in by_age.into_iter().take(excess) {
            self.cells.remove(&k);
            self.evicted += 1;
        }
    }

    fn make_room(&mut self) {
        if self.cells.len() < self.max_cells {
            return;
        }
        // Drop an eighth in one go.
        for (_, k) in self.eviction_order().into_iter().take((self.max_cells / 8).max(1)) {
            self.cells.remove(&k);
            self.evicted += 1;
        }
    }

    /// Cells in the order they are dropped: those no flow was answered in
    /// first, then the least recently seen. Probes to ports nobody serves
    /// (a scan, or a host forging a member's address) come and go in the
    /// thousands; they must not push out the record of a service the pair
    /// uses, which keeps a suggested deny from cutting it.
    fn eviction_order(&self) -> Vec<((bool, u64), CellKey)> {
        let mut by_age: Vec<((bool, u64), CellKey)> =
            self.cells.iter().map(|(k, c)| ((c.answered > 0, c.last_seen), k.clone())).collect();
        by_age.sort_unstable();
        by_age
    }

    /// Every cell.
    pub fn cells(&self) -> impl Iterator<Item = (&CellKey, &Cell)> {
        self.cells.iter()
    }

    /// Number of cells.
    pub fn len(&self) -> usize {
        self.cells.len()
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    /// Totals per (source group, destination group): flows, answered, bytes, distinct ports.
    pub fn pairs(&self) -> std::collections::BTreeMap<(String, String), PairTotals> {
        let mut out: std::collections::BTreeMap<(String, String), PairTotals> = Default::default();
        for (k, c) in &self.cells {
            let t = out.entry((k.src.clone(), k.dst.clone())).or_default();
            t.flows += c.flows;
            t.answered += c.answered;
            t.bytes += c.bytes;
            t.cells += 1;
            if k.proto == Protocol::Tcp {
                t.tcp_ports += 1;
                t.tcp_unanswered += c.unanswered();
                if c.answered == 0 {
                    t.tcp_ports_unanswered += 1;
                }
            }
            t.last_seen = t.last_seen.max(c.last_seen);
            t.routers.merge(&c.routers);
        }
        out
    }

    /// Removes cells of a group that no longer exists.
    pub fn forget_group(&mut self, name: &str) {
        self.cells.retain(|k, _| k.src != name && k.dst != name);
    }
}

/// Sums over one group pair.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PairTotals {
    /// Flows.
    pub flows: u64,
    /// Answered flows.
    pub answered: u64,
    /// Bytes.
    pub bytes: u64,
    /// Cells (protocol × port combinations).
    pub cells: u64,
    /// Distinct TCP ports.
    pub tcp_ports: u64,
    /// Distinct TCP ports none of whose flows were answered.
    pub tcp_ports_unanswered: u64,
    /// Unanswered TCP flows.
    pub tcp_unanswered: u64,
    /// Last flow, Unix seconds.
    pub last_seen: u64,
    /// Routers whose batches brought the pair's flows (bounded): whether
    /// other routers than a suggestion's lone one see these groups too.
    pub routers: Routers,
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatewarden_proto::conn_state::ConnState;

    pub(crate) fn flow(id: u64, dport: u16, t: u64, state: ConnState, bytes: u64) -> FlowRecord {
        FlowRecord {
            flow_id: id,
            src: "192.0.2.5".parse().unwrap(),
            dst: "198.51.100.5".parse().unwrap(),
            sport: 40000,
            dport,
            proto: Proto::Tcp,
            first_ns: t * 1_000_000_000,
            last_ns: t * 1_000_000_000,
            fwd_packets: 3,
            rev_packets: 2,
            fwd_bytes: bytes,
            rev_bytes: 0,
            conn_state: state,
            // As the router reports it: a completed handshake proves the originator.
            src_answered: state == ConnState::SF,
        }
    }

    #[test]
    fn a_flow_is_counted_once_and_its_bytes_by_delta() {
        let mut m = TrafficMatrix::new(16, 60);
        let (s, d) = (vec!["cam".to_string()], vec!["sen".to_string()]);
        m.observe(&flow(1, 1883, 100, ConnState::S0, 60), &s, &d);
        m.observe(&flow(1, 1883, 101, ConnState::SF, 500), &s, &d);
        m.observe(&flow(2, 1883, 200, ConnState::SF, 100), &s, &d);
        let (_, c) = m.cells().next().unwrap();
        assert_eq!((c.flows, c.answered, c.bytes, c.buckets), (2, 2, 600, 2));
        assert_eq!((c.first_seen, c.last_seen), (100, 200));
        // Ungrouped endpoints are not counted.
        m.observe(&flow(3, 80, 300, ConnState::SF, 1), &s, &[]);
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn the_matrix_is_bounded() {
        let mut m = TrafficMatrix::new(64, 60);
        let (s, d) = (vec!["cam".to_string()], vec!["sen".to_string()]);
        for p in 0..1000u16 {
            m.observe(&flow(u64::from(p), p, u64::from(p), ConnState::REJ, 40), &s, &d);
        }
        assert!(m.len() <= 64, "{}", m.len());
        assert!(m.evicted > 900);
        // The newest cells survive.
        assert!(m.cells().any(|(k, _)| k.port == 999));
    }

    #[test]
    fn a_flood_of_forged_sources_keeps_a_cells_member_count_bounded() {
        let mut m = TrafficMatrix::new(16, 60);
        let (s, d) = (vec!["cam".to_string()], vec!["sen".to_string()]);
        for i in 0..10_000u64 {
            let mut f = flow(i, 22, 100, ConnState::S0, 60);
            f.src = IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
            m.observe(&f, &s, &d);
        }
        let (_, c) = m.cells().next().unwrap();
        assert_eq!((c.flows, c.sources.addrs.len(), c.sources.more), (10_000, MAX_SOURCES, true));
        assert!(c.sources.describe().starts_with("more than 4 member addresses (10.0.0.0, "), "{:?}", c.sources);
        // Nothing was answered: no originator proved its address.
        assert_eq!(c.answered_sources, Sources::default());
        // An answer counts its originator once, when it comes.
        m.observe(&flow(20_000, 22, 101, ConnState::S0, 60), &s, &d);
        m.observe(&flow(20_000, 22, 102, ConnState::SF, 600), &s, &d);
        let (_, c) = m.cells().next().unwrap();
        assert_eq!(c.answered_sources.only(), Some("192.0.2.5".parse().unwrap()));
        // A file holding more than the bound is cut to it on load.
        let mut m: TrafficMatrix = serde_json::from_str(&serde_json::to_string(&m).unwrap().replace(
            r#""answered_sources":{"addrs":["192.0.2.5"]"#,
            r#""answered_sources":{"addrs":["192.0.2.5","192.0.2.6","192.0.2.7","192.0.2.8","192.0.2.9"]"#,
        ))
        .unwrap();
        m.trim();
        let (_, c) = m.cells().next().unwrap();
        assert_eq!((c.answered_sources.addrs.len(), c.answered_sources.more), (MAX_SOURCES, true));
    }

    /// A router with a stolen certificate sends flows under a thousand
    /// made-up router names (and some that are no node id): a cell keeps
    /// the first few by name and only counts the rest.
    #[test]
    fn a_cell_names_a_few_routers_and_counts_the_rest() {
        let mut m = TrafficMatrix::new(16, 60);
        let (s, d) = (vec![Membership::direct("cam")], vec![Membership::direct("sen")]);
        m.observe_from(&flow(1, 22, 100, ConnState::SF, 60), Some("router-1"), &s, &d);
        for i in 0..1_000u64 {
            m.observe_from(&flow(10 + i, 22, 100, ConnState::SF, 60), Some(&format!("forged-{i}")), &s, &d);
        }
        m.observe_from(&flow(5_000, 22, 100, ConnState::SF, 60), Some("bad name\u{1b}[2J"), &s, &d);
        m.observe_from(&flow(5_001, 22, 100, ConnState::SF, 60), Some(&"x".repeat(10_000)), &s, &d);
        let (_, c) = m.cells().next().unwrap();
        assert_eq!(c.routers.reports.len(), MAX_ROUTERS_NAMED);
        assert_eq!((c.routers.of("router-1"), c.routers.of("forged-2"), c.routers.other), (1, 1, 999));
        assert_eq!(c.routers.only(), None);
        assert!(c.routers.describe("flows").ends_with("forged-2 (1 flows) and 999 more flows from other routers"));
        assert_eq!(c.answered_routers, c.routers, "every flow was answered by the router that reported it");
        // A router reporting only the answer to another router's flow is named for the answer.
        m.observe_from(&flow(7_000, 23, 100, ConnState::S0, 60), Some("router-1"), &s, &d);
        m.observe_from(&flow(7_000, 23, 101, ConnState::SF, 60), Some("router-3"), &s, &d);
        let c = m.cells().find(|(k, _)| k.port == 23).unwrap().1;
        assert_eq!((c.routers.only(), c.answered_routers.only()), (Some("router-1"), Some("router-3")));
        // A file holding more than the bound (or a name that is no node id) is cut to it on load.
        let text = serde_json::to_string(&m).unwrap().replace(
            r#""answered_routers":{"reports":[{"node":"router-3","n":1}]"#,
            r#""answered_routers":{"reports":[{"node":"a","n":1},{"node":"b","n":1},{"node":"c","n":1},{"node":"d\n","n":1},{"node":"e","n":1},{"node":"f","n":2}]"#,
        );
        let mut m: TrafficMatrix = serde_json::from_str(&text).unwrap();
        m.trim();
        let c = m.cells().find(|(k, _)| k.port == 23).unwrap().1;
        assert_eq!(c.answered_routers.names().collect::<Vec<_>>(), ["a", "b", "c", "e"]);
        assert_eq!(c.answered_routers.other, 3);
        // A matrix written before routers were kept loads, naming none.
        let mut old: serde_json::Value = serde_json::from_str(&text).unwrap();
        old.as_object_mut().unwrap().remove("reporters");
        for e in old["cells"].as_array_mut().unwrap() {
            let cell = e["cell"].as_object_mut().unwrap();
            for k in ["routers", "answered_routers", "resolved_by"] {
                cell.remove(k);
            }
        }
        let old: TrafficMatrix = serde_json::from_value(old).unwrap();
        assert!(old.cells().all(|(_, c)| c.routers.is_empty() && c.answered_routers.is_empty()));
    }
}
