//! The four rtnetlink queries against a real kernel: a fresh network
//! namespace (root, iproute2) with known links, addresses, routes and
//! neighbours, and each query's exact answer for IPv4 and IPv6.
//!
//! Locally without root the test says why and skips; in CI (env `CI` set)
//! a missing prerequisite fails it.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::process::Command;

use gatewarden_core::net::Cidr;
use gatewarden_netlink::route::{lan_view, local_addresses, neighbours, route_gateways, LanView};

fn require_root(test: &str) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    let ip = Command::new("ip").arg("-V").output().map(|o| o.status.success()).unwrap_or(false);
    if root && ip {
        return true;
    }
    let why = if !root { "needs root" } else { "needs iproute2 (`ip`)" };
    if std::env::var_os("CI").is_some() {
        panic!("{test} {why}, and CI must run it: run the suite as root with iproute2 installed");
    }
    eprintln!("SKIPPED {test}: {why}");
    false
}

/// A network namespace of its own, deleted on drop (also on panic).
struct Ns(String);

impl Ns {
    fn new() -> Ns {
        let ns = Ns(format!("gwrtnl{}", std::process::id()));
        let _ = Command::new("ip").args(["netns", "del", &ns.0]).output();
        ns.ip(&["netns", "add", &ns.0]);
        ns
    }

    /// `ip args…`, checked (`-n NS` is added for everything but `netns`).
    fn ip(&self, args: &[&str]) {
        let mut c = Command::new("ip");
        if args[0] != "netns" {
            c.args(["-n", &self.0]);
        }
        let out = c.args(args).output().unwrap_or_else(|e| panic!("ip {args:?}: {e}"));
        assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Runs `f` on a thread that entered this namespace (its sockets open there).
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.0);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: setns(2) with a namespace fd that stays open for the call;
            // it moves only this thread into the namespace.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("query thread panicked")
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn mac(last: u8) -> [u8; 6] {
    [2, 0, 0, 0, 0, last]
}

/// lan0 (02:..:01) and wan0 (02:..:02), a veth pair inside the namespace
/// (nothing reaches the host), no link-local addresses (`addrgenmode none`)
/// so every address is one we set.
fn site() -> Ns {
    let ns = Ns::new();
    ns.ip(&["link", "set", "lo", "up"]);
    ns.ip(&["link", "add", "lan0", "type", "veth", "peer", "name", "wan0"]);
    ns.ip(&["link", "set", "lan0", "address", "02:00:00:00:00:01", "addrgenmode", "none"]);
    ns.ip(&["link", "set", "wan0", "address", "02:00:00:00:00:02", "addrgenmode", "none"]);
    ns.ip(&["addr", "add", "192.0.2.1/24", "dev", "lan0"]);
    ns.ip(&["addr", "add", "2001:db8:10::1/64", "dev", "lan0", "nodad"]);
    ns.ip(&["addr", "add", "198.51.100.1/24", "dev", "wan0"]);
    ns.ip(&["addr", "add", "2001:db8:20::1/64", "dev", "wan0", "nodad"]);
    // Point-to-point: IFA_LOCAL is ours (203.0.113.1), IFA_ADDRESS the peer's.
    ns.ip(&["addr", "add", "203.0.113.1", "peer", "203.0.113.2", "dev", "wan0"]);
    ns.ip(&["link", "set", "lan0", "up"]);
    ns.ip(&["link", "set", "wan0", "up"]);
    // Next hops: plain (RTA_GATEWAY), multipath (RTA_MULTIPATH) for both
    // families, another table, and an IPv4 route through an IPv6 next hop (RTA_VIA).
    ns.ip(&["route", "add", "203.0.113.64/26", "via", "192.0.2.254"]);
    ns.ip(&["-6", "route", "add", "2001:db8:30::/64", "via", "2001:db8:10::fe"]);
    ns.ip(&["route", "add", "10.9.0.0/16", "nexthop", "via", "192.0.2.253", "nexthop", "via", "198.51.100.254"]);
    ns.ip(&[
        "-6",
        "route",
        "add",
        "2001:db8:40::/64",
        "nexthop",
        "via",
        "2001:db8:10::fc",
        "nexthop",
        "via",
        "2001:db8:20::fc",
    ]);
    ns.ip(&["route", "add", "default", "via", "198.51.100.253", "table", "100"]);
    ns.ip(&["route", "add", "203.0.113.128/25", "via", "inet6", "2001:db8:10::fd", "dev", "lan0"]);
    // Neighbours: usable entries on both links, and two without a link-layer address.
    ns.ip(&["neigh", "add", "192.0.2.20", "lladdr", "02:00:00:00:00:20", "dev", "lan0", "nud", "permanent"]);
    ns.ip(&["neigh", "add", "2001:db8:10::20", "lladdr", "02:00:00:00:00:21", "dev", "lan0", "nud", "stale"]);
    ns.ip(&["neigh", "add", "198.51.100.20", "lladdr", "02:00:00:00:00:30", "dev", "wan0", "nud", "permanent"]);
    ns.ip(&["-6", "neigh", "add", "2001:db8:20::30", "lladdr", "02:00:00:00:00:31", "dev", "wan0", "nud", "permanent"]);
    ns.ip(&["neigh", "add", "192.0.2.22", "dev", "lan0", "nud", "incomplete"]);
    ns.ip(&["neigh", "add", "192.0.2.23", "dev", "lan0", "nud", "failed"]);
    ns
}

/// Neighbour entries the kernel makes by itself for multicast groups it
/// reports (IGMP/MLD, `NUD_NOARP`) depend on timing; the test's own are unicast.
fn unicast(v: Vec<(IpAddr, [u8; 6])>) -> BTreeSet<(IpAddr, [u8; 6])> {
    v.into_iter().filter(|(a, _)| !a.is_multicast()).collect()
}

#[test]
fn each_query_reads_exactly_what_the_namespace_holds() {
    if !require_root("each_query_reads_exactly_what_the_namespace_holds") {
        return;
    }
    let ns = site();
    let (gateways, locals, neigh, lan, absent): (Vec<IpAddr>, Vec<IpAddr>, _, LanView, LanView) = ns.run(|| {
        (
            route_gateways().expect("route_gateways"),
            local_addresses().expect("local_addresses"),
            neighbours().expect("neighbours"),
            lan_view("lan0").expect("lan_view lan0"),
            lan_view("absent0").expect("lan_view absent0"),
        )
    });

    let gateways: BTreeSet<IpAddr> = gateways.into_iter().collect();
    let want: BTreeSet<IpAddr> = [
        "192.0.2.254",
        "192.0.2.253",
        "198.51.100.254",
        "198.51.100.253",
        "2001:db8:10::fd",
        "2001:db8:10::fe",
        "2001:db8:10::fc",
        "2001:db8:20::fc",
    ]
    .into_iter()
    .map(ip)
    .collect();
    assert_eq!(gateways, want, "route_gateways");

    let own: Vec<IpAddr> =
        ["127.0.0.1", "192.0.2.1", "198.51.100.1", "203.0.113.1", "::1", "2001:db8:10::1", "2001:db8:20::1"]
            .into_iter()
            .map(ip)
            .collect();
    let mut locals = locals;
    locals.sort();
    assert_eq!(locals, own, "local_addresses: one per address, this end of a point-to-point link");

    let want: BTreeSet<(IpAddr, [u8; 6])> = [
        (ip("192.0.2.20"), mac(0x20)),
        (ip("2001:db8:10::20"), mac(0x21)),
        (ip("198.51.100.20"), mac(0x30)),
        (ip("2001:db8:20::30"), mac(0x31)),
    ]
    .into_iter()
    .collect();
    assert_eq!(unicast(neigh), want, "neighbours: both links, entries without a link-layer address left out");

    assert_eq!(lan.own_macs, vec![[0; 6], mac(1), mac(2)], "own_macs: lo, lan0, wan0, sorted");
    assert_eq!(lan.lan_mac, Some(mac(1)));
    assert_eq!(lan.own_addrs, own, "own_addrs: sorted, the peer of a point-to-point link is not ours");
    let prefixes: Vec<Cidr> = lan.prefixes.clone();
    let want_prefixes: Vec<Cidr> = ["192.0.2.0/24", "2001:db8:10::/64"].iter().map(|c| c.parse().unwrap()).collect();
    assert_eq!(prefixes, want_prefixes, "prefixes of lan0 only");
    // Routed out of lan0: its connected networks, a route via a LAN next hop,
    // multipath routes with one hop on lan0 and an IPv4 route through an IPv6
    // next hop; not wan0's networks, its table-100 default or local routes.
    let routed: Vec<Cidr> = lan.routed.iter().filter(|c| !c.to_string().starts_with("fe80:")).copied().collect();
    let want_routed: Vec<Cidr> = [
        "10.9.0.0/16",
        "192.0.2.0/24",
        "203.0.113.64/26",
        "203.0.113.128/25",
        "2001:db8:10::/64",
        "2001:db8:30::/64",
        "2001:db8:40::/64",
    ]
    .iter()
    .map(|c| c.parse().unwrap())
    .collect();
    assert_eq!(routed, want_routed, "routed: unicast routes leaving through lan0, sorted");
    let want: BTreeSet<(IpAddr, [u8; 6])> =
        [(ip("192.0.2.20"), mac(0x20)), (ip("2001:db8:10::20"), mac(0x21))].into_iter().collect();
    assert_eq!(unicast(lan.neighbours), want, "lan_view neighbours: lan0 only, usable states only");

    assert_eq!(absent.own_macs, vec![[0; 6], mac(1), mac(2)]);
    assert_eq!(absent.lan_mac, None);
    assert!(
        absent.own_addrs.is_empty()
            && absent.prefixes.is_empty()
            && absent.routed.is_empty()
            && absent.neighbours.is_empty(),
        "{absent:?}"
    );
}
