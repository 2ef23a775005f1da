//! Network namespaces for tests that need a real kernel: created with
//! `ip netns`, linked by veth pairs, torn down on drop (also on panic).
//! Names carry the test process id so parallel runs never collide.
#![allow(dead_code)]

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Whether this process can create namespaces; in CI a missing
/// prerequisite is a failure, locally the test prints why and skips.
pub fn require_root(test: &str) -> bool {
    // SAFETY-free check: uid 0 owns /proc/self/status "Uid:\t0".
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
    eprintln!("SKIPPED {test}: {why} (run tools/test.sh as root to include it)");
    false
}

/// Why a root namespace test cannot run here: not root, or one of `tools`
/// missing (None when all is there). The caller decides: fail in CI, skip
/// elsewhere.
pub fn missing_root_or_tools(tools: &[&str]) -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if !status.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")) {
        return Some("not root".into());
    }
    for tool in tools {
        let found = Command::new("sh").args(["-c", &format!("command -v {tool}")]).output();
        if found.map_or(true, |o| o.stdout.is_empty()) {
            return Some(format!("{tool} is not installed (tools/test.sh installs it)"));
        }
    }
    None
}

/// Runs a command, panicking with its output if it fails.
pub fn run(args: &[&str]) -> Output {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The LAN site the spoofing and overload tests share: in router namespace
/// `rtr` a bridge `lan0` (192.0.2.1/24) with a device `dev` (192.0.2.10,
/// `dev_mac`) and an attacker `atk` (192.0.2.66, `atk_mac`) on veth ports,
/// and a WAN veth `wan` (198.51.100.1/24) to `wan_ns` (198.51.100.2);
/// default routes via the router, IPv4 forwarding on. The four namespaces
/// must exist (with `lo` up). The veths are made inside the router
/// namespace, never in the root one.
pub fn wire_lan_site(rtr: &str, dev: &str, atk: &str, wan_ns: &str, dev_mac: &str, atk_mac: &str) {
    let r = rtr;
    run(&["ip", "-n", r, "link", "add", "lan0", "type", "bridge"]);
    for (port, ns, mac) in [("pdev", dev, dev_mac), ("patk", atk, atk_mac)] {
        run(&["ip", "-n", r, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns]);
        run(&["ip", "-n", ns, "link", "set", "eth0", "address", mac]);
        run(&["ip", "-n", r, "link", "set", port, "master", "lan0"]);
        run(&["ip", "-n", r, "link", "set", port, "up"]);
    }
    run(&["ip", "-n", r, "link", "add", "wan", "type", "veth", "peer", "name", "eth0", "netns", wan_ns]);
    for (ns, ifname, addr) in [
        (r, "lan0", "192.0.2.1/24"),
        (r, "wan", "198.51.100.1/24"),
        (dev, "eth0", "192.0.2.10/24"),
        (atk, "eth0", "192.0.2.66/24"),
        (wan_ns, "eth0", "198.51.100.2/24"),
    ] {
        run(&["ip", "-n", ns, "addr", "add", addr, "dev", ifname]);
        run(&["ip", "-n", ns, "link", "set", ifname, "up"]);
    }
    for ns in [dev, atk] {
        run(&["ip", "-n", ns, "route", "add", "default", "via", "192.0.2.1"]);
    }
    run(&["ip", "-n", wan_ns, "route", "add", "default", "via", "198.51.100.1"]);
    run(&["ip", "netns", "exec", r, "sysctl", "-qw", "net.ipv4.ip_forward=1"]);
}

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates `gw<pid>-<n>-<role>` with loopback up and IPv6 chatter (DAD,
    /// router solicitations) off, so packet counts are exact.
    pub fn new(role: &str) -> Netns {
        let name = format!("gw{}-{}-{role}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
        run(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        for key in ["accept_dad=0", "router_solicitations=0", "accept_ra=0"] {
            for scope in ["all", "default"] {
                ns.exec(&["sysctl", "-qw", &format!("net.ipv6.conf.{scope}.{key}")]);
            }
        }
        ns
    }

    /// `ip netns exec NAME args…`, checked.
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        run(&full)
    }

    /// A `Command` that runs inside this namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Kill anything still running inside, then delete.
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &self.name]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// Links `a` and `b` with a veth pair named `ifa`/`ifb`, addresses given as CIDR lists.
pub fn link(a: &Netns, ifa: &str, addrs_a: &[&str], b: &Netns, ifb: &str, addrs_b: &[&str]) {
    let tmp_a = format!("v{}a{}", std::process::id() % 100_000, SEQ.fetch_add(1, Ordering::Relaxed));
    let tmp_b = format!("v{}b{}", std::process::id() % 100_000, SEQ.fetch_add(1, Ordering::Relaxed));
    run(&["ip", "link", "add", &tmp_a, "netns", &a.name, "type", "veth", "peer", "name", &tmp_b, "netns", &b.name]);
    for (ns, tmp, name, addrs) in [(a, &tmp_a, ifa, addrs_a), (b, &tmp_b, ifb, addrs_b)] {
        ns.exec(&["ip", "link", "set", tmp, "name", name]);
        for addr in addrs {
            if addr.contains(':') {
                ns.exec(&["ip", "-6", "addr", "add", addr, "dev", name, "nodad"]);
            } else {
                ns.exec(&["ip", "addr", "add", addr, "dev", name]);
            }
        }
        ns.exec(&["ip", "link", "set", name, "up"]);
    }
}

/// Plugs `dev` into the Linux bridge `bridge` inside `host` with a veth pair:
/// `ifname` (with `addrs`) in `dev`, the other end enslaved to the bridge.
pub fn link_to_bridge(dev: &Netns, ifname: &str, addrs: &[&str], host: &Netns, bridge: &str) {
    let port = format!("p{}x{}", std::process::id() % 100_000, SEQ.fetch_add(1, Ordering::Relaxed));
    link(dev, ifname, addrs, host, &port, &[]);
    host.exec(&["ip", "link", "set", &port, "master", bridge]);
}

/// iot ↔ router ↔ wan, forwarding on in the router, TEST-NET addresses:
/// iot 192.0.2.10 / 2001:db8:10::10, router lan 192.0.2.1 / 2001:db8:10::1,
/// router wan 198.51.100.1 / 2001:db8:20::1, wan 198.51.100.10 / 2001:db8:20::10.
pub struct Site {
    pub iot: Netns,
    pub router: Netns,
    pub wan: Netns,
}

impl Site {
    pub fn new() -> Site {
        let iot = Netns::new("iot");
        let router = Netns::new("rtr");
        let wan = Netns::new("wan");
        link(
            &iot,
            "eth0",
            &["192.0.2.10/24", "2001:db8:10::10/64"],
            &router,
            "lan0",
            &["192.0.2.1/24", "2001:db8:10::1/64"],
        );
        link(
            &router,
            "wan0",
            &["198.51.100.1/24", "2001:db8:20::1/64"],
            &wan,
            "eth0",
            &["198.51.100.10/24", "2001:db8:20::10/64"],
        );
        router.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        router.exec(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
        iot.exec(&["ip", "route", "add", "default", "via", "192.0.2.1"]);
        iot.exec(&["ip", "-6", "route", "add", "default", "via", "2001:db8:10::1"]);
        wan.exec(&["ip", "route", "add", "default", "via", "198.51.100.1"]);
        wan.exec(&["ip", "-6", "route", "add", "default", "via", "2001:db8:20::1"]);
        Site { iot, router, wan }
    }
}

/// Moves the calling thread into network namespace `name` (`ip netns`), for
/// good: sockets it opens afterwards (netlink, nftables) live there.
pub fn enter(name: &str) {
    use std::os::fd::AsRawFd;
    let ns = std::fs::File::open(format!("/var/run/netns/{name}")).unwrap();
    // SAFETY: setns(2) with a valid namespace fd that `ns` keeps open for the call; it
    // changes this thread's network namespace only (and that of threads it starts).
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns into {name}: {}", std::io::Error::last_os_error());
}

/// Runs `f` on a thread of its own inside namespace `name` and returns what it returns.
pub fn run_in<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let name = name.to_string();
    std::thread::spawn(move || {
        enter(&name);
        f()
    })
    .join()
    .unwrap()
}
