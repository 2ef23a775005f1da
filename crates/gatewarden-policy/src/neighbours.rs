//! The monitor's copy of its routers' neighbour tables (IP ↔ MAC), the
//! source of the policy service's [`crate::service::Neighbours`]: MAC group
//! members resolve to the addresses the *routers* see, whether a router
//! runs in this process (its table comes over the in-process bus) or on
//! another node (over MQTT). The monitor's own ARP table says nothing about
//! a router's LAN, so it is never read.
//!
//! Bounded: at most [`MAX_ROUTERS`] tables (a router past it is refused,
//! never evicting a known one), each of at most [`MAX_NEIGHBOUR_ROWS`]
//! entries (the wire decoder refuses more; the store truncates again),
//! so the union holds at most 131 072 pairs (about 3 MiB). A table is
//! forgotten [`STALE_AFTER`] after it arrived, so a router that goes silent
//! stops resolving MACs within a minute.
//!
//! A router's table is trusted as far as its certificate: the broker lets
//! only router certificates publish one and the bus drops one naming another
//! node, but a compromised router can still claim any pairs. They only shape
//! what the monitor shows (traffic matrix, suggestions, `explain`): each
//! router resolves the MACs of the rules it enforces from its own kernel.
//! So that a suggestion can say whose table made an address a member,
//! [`NeighbourStore::resolutions`] keeps which routers reported each pair
//! (a bit per router: [`MAX_ROUTERS`] fits a `u64`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gatewarden_core::net::Mac;
use gatewarden_proto::messages::{NeighbourTable, MAX_NEIGHBOUR_ROWS};

/// Most routers whose tables are kept (the detector's per-gateway bound).
pub const MAX_ROUTERS: usize = 64;
const _: () = assert!(MAX_ROUTERS <= 64, "Resolutions keeps a router per bit of a u64");

/// The union of the fresh tables, with which routers reported each pair.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolutions {
    /// The routers, by name; bit `i` of a pair's mask is `routers[i]`.
    pub routers: Vec<String>,
    /// Every pair once, sorted, with the mask of the routers that reported it.
    pub pairs: Vec<(IpAddr, Mac, u64)>,
}

impl Resolutions {
    /// The routers of `mask`, by name.
    pub fn names(&self, mask: u64) -> impl Iterator<Item = &str> {
        self.routers.iter().enumerate().filter(move |(i, _)| mask >> i & 1 == 1).map(|(_, n)| n.as_str())
    }
}

/// A table older than this (by arrival at the monitor, not the router's
/// clock) no longer resolves anything: four of the router's 15 s refreshes.
pub const STALE_AFTER: Duration = Duration::from_secs(60);

/// Why a table was not kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// [`MAX_ROUTERS`] other routers' tables are fresh.
    #[error("neighbour tables of {MAX_ROUTERS} routers are kept already; {0:?} is refused")]
    TooManyRouters(String),
    /// The sender's name is not a node id.
    #[error("neighbour table from {0:?}, which is not a node id")]
    BadNode(String),
}

struct Kept {
    at: Instant,
    taken_ns: u64,
    total: u32,
    pairs: Vec<(IpAddr, Mac)>,
}

/// The last table of each router, and their union.
#[derive(Default)]
pub struct NeighbourStore {
    tables: Mutex<HashMap<String, Kept>>,
}

impl std::fmt::Debug for NeighbourStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NeighbourStore").finish_non_exhaustive()
    }
}

/// What the store holds about one router (for status pages and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterTable {
    /// The router.
    pub node: String,
    /// When the router read it (its clock), ns since the epoch.
    pub taken_ns: u64,
    /// Entries the router had.
    pub total: u32,
    /// Entries kept.
    pub kept: usize,
}

impl NeighbourStore {
    /// An empty store.
    pub fn new() -> NeighbourStore {
        NeighbourStore::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Kept>> {
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `t` as its router's current table (replacing the previous one).
    /// Entries with a zero, broadcast or multicast MAC, or an unspecified or
    /// multicast address, are no device and are dropped; duplicates are kept once.
    pub fn record(&self, t: NeighbourTable, now: Instant) -> Result<usize, Refused> {
        if !gatewarden_core::identity::valid_node_id(&t.node) {
            return Err(Refused::BadNode(t.node.chars().take(64).collect()));
        }
        let mut tables = self.lock();
        tables.retain(|_, k| now.saturating_duration_since(k.at) < STALE_AFTER);
        if !tables.contains_key(&t.node) && tables.len() >= MAX_ROUTERS {
            return Err(Refused::TooManyRouters(t.node));
        }
        let mut pairs: Vec<(IpAddr, Mac)> = t
            .entries
            .iter()
            .take(MAX_NEIGHBOUR_ROWS)
            .filter(|n| n.mac != [0; 6] && n.mac[0] & 1 == 0)
            .filter(|n| !n.ip.is_unspecified() && !n.ip.is_multicast())
            .map(|n| (n.ip, n.mac))
            .collect();
        pairs.sort_unstable();
        pairs.dedup();
        let kept = pairs.len();
        let total = t.total.max(t.entries.len() as u32);
        tables.insert(t.node, Kept { at: now, taken_ns: t.taken_ns, total, pairs });
        Ok(kept)
    }

    /// Every fresh router's pairs, sorted, each pair once. Two routers may
    /// report one address with different MACs (overlapping LANs): both stay.
    pub fn union(&self, now: Instant) -> Vec<(IpAddr, Mac)> {
        self.resolutions(now).pairs.into_iter().map(|(a, m, _)| (a, m)).collect()
    }

    /// [`NeighbourStore::union`] with which routers reported each pair:
    /// the policy names the router whose table alone made an address a
    /// member of a group (a compromised router can claim any pairs).
    pub fn resolutions(&self, now: Instant) -> Resolutions {
        let mut tables = self.lock();
        tables.retain(|_, k| now.saturating_duration_since(k.at) < STALE_AFTER);
        let mut routers: Vec<&String> = tables.keys().collect();
        routers.sort();
        let mut all: Vec<(IpAddr, Mac, u64)> = routers
            .iter()
            .enumerate()
            .take(MAX_ROUTERS)
            .flat_map(|(i, r)| tables[*r].pairs.iter().map(move |(a, m)| (*a, *m, 1u64 << i)))
            .collect();
        all.sort_unstable();
        all.dedup_by(|b, a| {
            if (a.0, a.1) == (b.0, b.1) {
                a.2 |= b.2;
                true
            } else {
                false
            }
        });
        Resolutions { routers: routers.into_iter().map(|r| r.to_string()).collect(), pairs: all }
    }

    /// The fresh tables, by router name.
    pub fn routers(&self, now: Instant) -> Vec<RouterTable> {
        let mut tables = self.lock();
        tables.retain(|_, k| now.saturating_duration_since(k.at) < STALE_AFTER);
        let mut v: Vec<RouterTable> = tables
            .iter()
            .map(|(node, k)| RouterTable {
                node: node.clone(),
                taken_ns: k.taken_ns,
                total: k.total,
                kept: k.pairs.len(),
            })
            .collect();
        v.sort_by(|a, b| a.node.cmp(&b.node));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatewarden_proto::messages::Neighbour;

    fn table(node: &str, rows: &[(&str, u8)]) -> NeighbourTable {
        NeighbourTable {
            node: node.into(),
            taken_ns: 7,
            total: rows.len() as u32,
            entries: rows
                .iter()
                .map(|(ip, m)| Neighbour { ip: ip.parse().unwrap(), mac: [2, 0, 0, 0, 0, *m], age_s: 0 })
                .collect(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_union_holds_every_fresh_routers_latest_table() {
        let s = NeighbourStore::new();
        let t0 = Instant::now();
        s.record(table("router-1", &[("192.0.2.10", 1), ("192.0.2.11", 2)]), t0).unwrap();
        s.record(table("router-2", &[("198.51.100.5", 3), ("192.0.2.10", 1)]), t0).unwrap();
        assert_eq!(
            s.union(t0),
            vec![
                (ip("192.0.2.10"), [2, 0, 0, 0, 0, 1]),
                (ip("192.0.2.11"), [2, 0, 0, 0, 0, 2]),
                (ip("198.51.100.5"), [2, 0, 0, 0, 0, 3])
            ]
        );
        // A router's new table replaces its old one: 192.0.2.11 left router-1's LAN.
        s.record(table("router-1", &[("192.0.2.10", 1)]), t0 + Duration::from_secs(1)).unwrap();
        assert!(!s.union(t0 + Duration::from_secs(1)).contains(&(ip("192.0.2.11"), [2, 0, 0, 0, 0, 2])));
        // Overlapping LANs: one address with two MACs at two routers, both kept.
        s.record(table("router-2", &[("192.0.2.10", 9)]), t0 + Duration::from_secs(1)).unwrap();
        let u = s.union(t0 + Duration::from_secs(1));
        assert!(
            u.contains(&(ip("192.0.2.10"), [2, 0, 0, 0, 0, 1])) && u.contains(&(ip("192.0.2.10"), [2, 0, 0, 0, 0, 9]))
        );
    }

    #[test]
    fn resolutions_say_which_routers_reported_each_pair() {
        let s = NeighbourStore::new();
        let t0 = Instant::now();
        s.record(table("router-1", &[("192.0.2.10", 1), ("192.0.2.11", 2)]), t0).unwrap();
        s.record(table("router-3", &[("192.0.2.10", 1), ("192.0.2.99", 1)]), t0).unwrap();
        let r = s.resolutions(t0);
        assert_eq!(r.routers, ["router-1", "router-3"]);
        let by = |ip: &str, m: u8| {
            let (_, _, mask) =
                r.pairs.iter().find(|p| (p.0, p.1) == (ip.parse().unwrap(), [2, 0, 0, 0, 0, m])).unwrap();
            r.names(*mask).collect::<Vec<_>>()
        };
        assert_eq!(by("192.0.2.10", 1), ["router-1", "router-3"]);
        assert_eq!(by("192.0.2.11", 2), ["router-1"]);
        assert_eq!(by("192.0.2.99", 1), ["router-3"], "router-3 alone puts the MAC at .99");
        let pairs: Vec<_> = r.pairs.iter().map(|p| (p.0, p.1)).collect();
        assert_eq!(pairs, s.union(t0), "the same pairs as the union");
    }

    #[test]
    fn a_silent_routers_table_ages_out() {
        let s = NeighbourStore::new();
        let t0 = Instant::now();
        s.record(table("router-1", &[("192.0.2.10", 1)]), t0).unwrap();
        s.record(table("router-2", &[("192.0.2.20", 2)]), t0 + Duration::from_secs(30)).unwrap();
        assert_eq!(s.union(t0 + STALE_AFTER - Duration::from_millis(1)).len(), 2);
        let later = t0 + STALE_AFTER;
        assert_eq!(s.union(later), vec![(ip("192.0.2.20"), [2, 0, 0, 0, 0, 2])], "router-1 went silent");
        assert_eq!(s.routers(later).iter().map(|r| r.node.as_str()).collect::<Vec<_>>(), ["router-2"]);
        assert!(s.union(t0 + Duration::from_secs(30) + STALE_AFTER).is_empty());
    }

    #[test]
    fn routers_past_the_bound_are_refused_without_evicting_known_ones_until_those_go_stale() {
        let s = NeighbourStore::new();
        let t0 = Instant::now();
        for i in 0..MAX_ROUTERS {
            s.record(table(&format!("r{i}"), &[("192.0.2.1", 1)]), t0).unwrap();
        }
        assert_eq!(s.record(table("late", &[("192.0.2.2", 2)]), t0), Err(Refused::TooManyRouters("late".into())));
        // A known router still updates its table.
        assert!(s.record(table("r0", &[("192.0.2.3", 3)]), t0).is_ok());
        assert_eq!(s.routers(t0).len(), MAX_ROUTERS);
        // Once the others are stale there is room again.
        assert!(s.record(table("late", &[("192.0.2.2", 2)]), t0 + STALE_AFTER).is_ok());
        assert_eq!(s.routers(t0 + STALE_AFTER).len(), 1);
    }

    #[test]
    fn hostile_tables_are_bounded_and_cleaned() {
        let s = NeighbourStore::new();
        let now = Instant::now();
        assert!(matches!(s.record(table("bad name/with slash", &[]), now), Err(Refused::BadNode(_))));
        assert!(matches!(s.record(table(&"x".repeat(10_000), &[]), now), Err(Refused::BadNode(_))));
        // Too many rows (a table built in process, never decoded) and rows that are no device.
        let mut t = table("router-1", &[]);
        for i in 0..(MAX_NEIGHBOUR_ROWS as u32 + 500) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0xc000_0200 + i));
            t.entries.push(Neighbour { ip, mac: [2, 0, 0, 0, (i >> 8) as u8, i as u8], age_s: 0 });
        }
        t.entries.insert(0, Neighbour { ip: ip("192.0.2.1"), mac: [0; 6], age_s: 0 });
        t.entries.insert(0, Neighbour { ip: ip("192.0.2.1"), mac: [0xff; 6], age_s: 0 });
        t.entries.insert(0, Neighbour { ip: ip("192.0.2.1"), mac: [0x01, 0, 0x5e, 0, 0, 1], age_s: 0 });
        t.entries.insert(0, Neighbour { ip: ip("0.0.0.0"), mac: [2, 0, 0, 0, 0, 1], age_s: 0 });
        t.entries.insert(0, Neighbour { ip: ip("224.0.0.1"), mac: [2, 0, 0, 0, 0, 1], age_s: 0 });
        t.entries.insert(0, Neighbour { ip: ip("2001:db8::c8"), mac: [2, 0, 0, 0, 0x10, 0xc8], age_s: 0 });
        t.entries.insert(0, Neighbour { ip: ip("2001:db8::c8"), mac: [2, 0, 0, 0, 0x10, 0xc8], age_s: 0 });
        t.total = 3;
        let kept = s.record(t, now).unwrap();
        assert_eq!(kept, MAX_NEIGHBOUR_ROWS - 6, "bounded; the no-device rows and the duplicate are gone");
        let u = s.union(now);
        assert_eq!(u.len(), kept);
        assert!(u.iter().all(|(a, m)| !a.is_unspecified() && !a.is_multicast() && m[0] & 1 == 0 && *m != [0; 6]));
        assert_eq!(s.routers(now)[0].total as usize, MAX_NEIGHBOUR_ROWS + 507, "total never below the rows sent");
    }
}
