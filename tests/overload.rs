//! Explicit overload (issue #19) in a real kernel: a LAN bridge holding a
//! real device and an attacker, a router namespace running `gatewarden run
//! --role all` with enforcement on and default capture settings, a WAN host.
//!
//! The attacker floods spoofed SYNs (`hping3 --flood --rand-source`, a new
//! source and so a new flow per packet) far faster than a router pipeline
//! can take them, while the real device SYN-scans the WAN host with nmap.
//! The router must shed (counted in /metrics), say so in exactly one system
//! alert that is valid EVE, keep its peak memory bounded, and still block
//! the real scanner in the kernel while the flood goes on.
//!
//! Needs root, `ip netns`, nft, hping3, nmap, curl and python3. Without them
//! the test says why and returns; with `CI` set it fails instead.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{bin, free_port, wait_until, Guard};

const DEVICE: &str = "192.0.2.10";
const WAN_HOST: &str = "198.51.100.2";

/// The peak resident memory the router may reach under the flood: the
/// project's memory goal (issue #19, docs/PERFORMANCE.md) at default caps.
/// Every structure traffic grows is capped (flow table 262144 flows, 16384
/// hosts, 65536 pairs, export queue 4 batches, the 4 MiB ring), so the peak
/// is set by the caps, not by how long the flood lasts.
const RSS_BOUND_KIB: u64 = 200 * 1024;

fn sh(args: &[&str]) -> Output {
    Command::new(args[0]).args(&args[1..]).stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn must(args: &[&str]) {
    let out = sh(args);
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

fn unavailable() -> Option<String> {
    common::netns::missing_root_or_tools(&["ip", "nft", "curl", "hping3", "nmap", "python3"])
}

/// dev, atk ─ lan0 (bridge) ─ router ─ wan. Removed on drop.
struct Site {
    dev: String,
    atk: String,
    rtr: String,
    wan: String,
    dir: tempfile::TempDir,
    daemon: Option<Guard>,
    http: Option<Guard>,
    port: u16,
}

impl Site {
    fn new() -> Option<Site> {
        if let Some(why) = unavailable() {
            if std::env::var_os("CI").is_some() {
                panic!("the overload test needs root and network namespaces, and CI is set: {why}");
            }
            eprintln!("SKIPPED: overload lab unavailable ({why})");
            return None;
        }
        let id = std::process::id();
        let s = Site {
            dev: format!("god{id}"),
            atk: format!("goa{id}"),
            rtr: format!("gor{id}"),
            wan: format!("gow{id}"),
            dir: tempfile::tempdir().unwrap(),
            daemon: None,
            http: None,
            port: free_port(),
        };
        for ns in [&s.dev, &s.atk, &s.rtr, &s.wan] {
            must(&["ip", "netns", "add", ns]);
            must(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        let r = s.rtr.as_str();
        common::netns::wire_lan_site(r, &s.dev, &s.atk, &s.wan, "02:00:00:00:0b:10", "02:00:00:00:0b:66");
        Some(s)
    }

    fn exec(&self, ns: &str, args: &[&str]) -> Output {
        let mut v = vec!["ip", "netns", "exec", ns];
        v.extend_from_slice(args);
        sh(&v)
    }

    fn cmd(&self, ns: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        c
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gatewarden.log")).unwrap_or_default()
    }

    /// `gatewarden run --role all`: enforcement on, capturing the LAN bridge, otherwise defaults.
    fn start(&mut self) {
        let cfg = self.dir.path().join("gatewarden.toml");
        std::fs::write(
            &cfg,
            format!(
                "[http]\nlisten = \"127.0.0.1:{}\"\n[monitor]\ndata_dir = \"{}\"\n[capture]\ninterface = \"lan0\"\n\
                 [enforce]\nenabled = true\n",
                self.port,
                self.dir.path().join("data").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(self.dir.path().join("gatewarden.log")).unwrap();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.rtr])
            .arg(bin())
            .args(["run", "--role", "all", "--config"])
            .arg(&cfg)
            .env("NO_COLOR", "1")
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.daemon = Some(Guard::spawn(&mut cmd));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.log().contains("capturing") || !self.get("/healthz").0 {
            if let Some(code) = self.daemon.as_mut().unwrap().child().try_wait().unwrap() {
                panic!("gatewarden exited with {code}: {}", self.log());
            }
            assert!(Instant::now() < deadline, "gatewarden did not come up: {}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `ip netns exec` replaces itself with gatewarden: the child's pid is the router's.
    fn router_pid(&mut self) -> u32 {
        self.daemon.as_mut().unwrap().child().id()
    }

    fn get(&self, path: &str) -> (bool, String) {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let out = self.exec(&self.rtr, &["curl", "-s", "-w", "\n%{http_code}", "--max-time", "5", &url]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
        (out.status.success() && code == "200", body.to_string())
    }

    /// The sum of every series of `name` (with `{` for one labelled series).
    fn metric(&self, name: &str) -> Option<f64> {
        let (ok, text) = self.get("/metrics");
        if !ok {
            return None;
        }
        let vals: Vec<f64> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with([' ', '{'])))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .collect();
        (!vals.is_empty()).then(|| vals.iter().sum())
    }

    fn blocked(&self, addr: &str) -> bool {
        let out = self.exec(&self.rtr, &["nft", "-j", "list", "set", "inet", "gatewarden", "block4_detector"]);
        String::from_utf8_lossy(&out.stdout).contains(&format!("\"{addr}\""))
    }

    fn eve(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("data").join("alerts.json"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn overload_alerts(&self) -> Vec<serde_json::Value> {
        self.eve().into_iter().filter(|a| a["alert"]["signature_id"] == 9_000_109).collect()
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.daemon.take();
        self.http.take();
        for ns in [&self.dev, &self.atk, &self.rtr, &self.wan] {
            let _ = sh(&["ip", "netns", "del", ns]);
        }
    }
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status"))
}

#[test]
fn a_spoofed_flood_is_shed_with_one_alert_bounded_memory_and_a_real_scan_still_blocked() {
    let Some(mut site) = Site::new() else { return };
    site.start();
    let pid = site.router_pid();
    let mut http = site.cmd(&site.wan, &["python3", "-m", "http.server", "8080", "--bind", WAN_HOST]);
    site.http = Some(Guard::spawn(http.current_dir(site.dir.path())));
    // The device is a working LAN host first: the router resolves it (neighbour table).
    let url = format!("http://{WAN_HOST}:8080/");
    assert!(
        wait_until(Duration::from_secs(15), || site
            .exec(&site.dev, &["curl", "-s", "-o", "/dev/null", "--max-time", "2", &url])
            .status
            .success()),
        "the device cannot reach the WAN host"
    );
    assert!(
        wait_until(Duration::from_secs(10), || site
            .metric("gatewarden_spoof_bindings{source=\"neighbour\"}")
            .is_some_and(|v| v >= 1.0)),
        "the router never learned the device's neighbour binding: {:?}",
        site.get("/metrics")
    );
    for (m, v) in [
        ("gatewarden_capture_shed_total", 0.0),
        ("gatewarden_capture_overloaded", 0.0),
        ("gatewarden_capture_shed_one_in", 1.0),
        ("gatewarden_capture_kernel_drops_total", 0.0),
    ] {
        assert_eq!(site.metric(m), Some(v), "{m} is registered at {v} before any overload");
    }

    // The flood: two senders of spoofed SYNs, as fast as hping3 goes.
    let floods: Vec<Guard> = (0..2)
        .map(|_| {
            Guard::spawn(
                &mut site.cmd(&site.atk, &["hping3", "--flood", "--rand-source", "-q", "-S", "-p", "80", WAN_HOST]),
            )
        })
        .collect();
    let flood_start = Instant::now();
    let overloaded =
        wait_until(Duration::from_secs(15), || site.metric("gatewarden_capture_shed_total").is_some_and(|v| v > 0.0));
    assert!(overloaded, "the router never shed: {:?}\n{}", site.get("/metrics").1, site.log());
    eprintln!("shedding {:.1} s after the flood started", flood_start.elapsed().as_secs_f64());

    // The real device scans during the flood.
    let _scan = Guard::spawn(
        &mut site.cmd(&site.dev, &["timeout", "60", "nmap", "-n", "-Pn", "-sS", "-T4", "-p", "1-1000", WAN_HOST]),
    );
    let scan_start = Instant::now();
    let blocked = wait_until(Duration::from_secs(45), || site.blocked(DEVICE));
    let flood_alive = floods.len();
    let mut floods = floods;
    for f in &mut floods {
        assert!(f.child().try_wait().unwrap().is_none(), "a flood sender stopped early");
    }
    let shed_during = site.metric("gatewarden_capture_shed_total").unwrap_or(0.0);
    let overloaded_during = site.metric("gatewarden_capture_overloaded").unwrap_or(0.0);
    let drops = site.metric("gatewarden_capture_kernel_drops_total").unwrap_or(0.0);
    let one_in = site.metric("gatewarden_capture_shed_one_in").unwrap_or(0.0);
    // The flood itself is still detected although the router sampled it
    // (its shed counts travel with the batches): a syn_flood alert on the
    // victim that blames no (forged) source.
    let floods_seen: Vec<_> = site
        .eve()
        .into_iter()
        .filter(|a| common::eve_meta(a, "kind") == "syn_flood" && a["dest_ip"] == WAN_HOST)
        .collect();
    assert!(!floods_seen.is_empty(), "the shed flood on {WAN_HOST} was never alerted on: {:#?}", site.eve());
    for a in &floods_seen {
        eprintln!("flood alert: {}", common::eve_meta(a, "reason"));
        assert!(a.get("src_ip").is_none(), "a spoofed flood blames no source: {a:#}");
    }

    let hwm = vm_hwm_kib(pid);
    eprintln!(
        "during a {flood_alive}-sender flood: scanner blocked {:?} after the scan started; shed {shed_during}, \
         overloaded {overloaded_during}, admitting 1 in {one_in}, kernel drops {drops}, router VmHWM {} MiB",
        scan_start.elapsed(),
        hwm / 1024
    );
    assert!(blocked, "the real scanner {DEVICE} never reached block4_detector during the flood:\n{}", site.log());
    assert!(shed_during > 0.0);
    drop(floods);
    let flood_secs = flood_start.elapsed().as_secs_f64();

    // One system alert for the episode, valid EVE, saying what was shed and why.
    assert!(
        wait_until(Duration::from_secs(10), || !site.overload_alerts().is_empty()),
        "no overload alert: {:?}\n{}",
        site.eve(),
        site.log()
    );
    std::thread::sleep(Duration::from_secs(3));
    let alerts = site.overload_alerts();
    assert_eq!(alerts.len(), 1, "exactly one overload alert per episode: {alerts:#?}");
    let a = &alerts[0];
    assert_eq!(common::eve_errors(&common::eve_validator(), a), "", "Suricata's EVE schema: {a:#}");
    let reason = common::eve_meta(a, "reason");
    eprintln!("overload alert: {reason}");
    assert!(reason.contains("lan0") && reason.contains("shed ") && reason.contains("never seen"), "{reason}");
    assert_eq!(common::eve_meta(a, "kind"), "system", "{a:#}");

    let hwm = vm_hwm_kib(pid);
    eprintln!("router peak RSS after {flood_secs:.0} s of flood: {} MiB", hwm / 1024);
    assert!(hwm <= RSS_BOUND_KIB, "router peak RSS {hwm} KiB > {RSS_BOUND_KIB} KiB");
    assert!(site.daemon.as_mut().unwrap().child().try_wait().unwrap().is_none(), "the router died: {}", site.log());
}
