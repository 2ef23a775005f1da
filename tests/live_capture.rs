//! Live capture in a real kernel: real ping/curl/nmap traffic through a
//! router namespace; gatewarden's AF_PACKET ring must count exactly what
//! tcpdump counts on the same interface, with no kernel drops.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::netns::{require_root, Site};
use common::{bin, Guard};

/// Spawns `cmd`, forwarding its stderr lines to a channel.
fn spawn_with_stderr(cmd: &mut Command) -> (Guard, mpsc::Receiver<String>) {
    let mut child: Child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let err = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (Guard(Some(child)), rx)
}

fn wait_for(rx: &mpsc::Receiver<String>, needle: &str, what: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => {
                let hit = line.contains(needle);
                seen.push(line);
                if hit {
                    return seen;
                }
            }
            Err(_) => panic!("{what} never printed {needle:?}; it printed: {seen:?}"),
        }
    }
}

fn tool(name: &str) -> bool {
    let found =
        Command::new("sh").args(["-c", &format!("command -v {name}")]).output().is_ok_and(|o| o.status.success());
    if !found && std::env::var_os("CI").is_some() {
        panic!("{name} is missing: tools/test.sh installs it");
    }
    found
}

/// `gatewarden run --role all` in the router namespace, capturing lan0, its
/// page on the namespace's 127.0.0.1:8080; `extra` is appended to the config.
/// Returns once it captures (the tempdir holds the config).
fn run_role_all_on_lan0(site: &Site, extra: &str) -> (tempfile::TempDir, Guard) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gw.toml");
    let base = "node_id = \"rtr\"\n[http]\nlisten = \"127.0.0.1:8080\"\npublic_status = true\n[capture]\ninterface = \"lan0\"\n";
    std::fs::write(&cfg, format!("{base}{extra}")).unwrap();
    let (gw, gw_err) = spawn_with_stderr(site.router.command(bin().to_str().unwrap()).args([
        "run",
        "--role",
        "all",
        "--config",
        cfg.to_str().unwrap(),
    ]));
    wait_for(&gw_err, "capturing", "gatewarden run");
    (dir, gw)
}

#[test]
fn live_capture_counts_exactly_what_tcpdump_counts() {
    if !require_root("live_capture_counts_exactly_what_tcpdump_counts") {
        return;
    }
    for t in ["tcpdump", "nmap", "curl", "ping", "python3"] {
        if !tool(t) {
            eprintln!("SKIPPED: {t} not installed");
            return;
        }
    }
    let site = Site::new();
    // A web server on the WAN side.
    let _web = Guard::spawn(
        site.wan
            .command("python3")
            .args(["-m", "http.server", "8080", "--bind", "::"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    // Let link-up chatter settle so both captures see the same quiet start.
    std::thread::sleep(Duration::from_millis(1500));

    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("ref.pcap");
    let (mut tcpdump, tcpdump_err) = spawn_with_stderr(site.router.command("tcpdump").args([
        "-i",
        "lan0",
        "-s",
        "128",
        "-U",
        "-n",
        "-w",
        pcap.to_str().unwrap(),
    ]));
    wait_for(&tcpdump_err, "listening on", "tcpdump");
    let (mut gw, gw_err) = spawn_with_stderr(site.router.command(bin().to_str().unwrap()).args([
        "watch",
        "-i",
        "lan0",
        "--json",
        "--duration",
        "120s",
    ]));
    wait_for(&gw_err, "capturing on lan0", "gatewarden watch");

    // Real traffic: ICMP both families, HTTP over both, and an nmap SYN scan.
    site.iot.exec(&["ping", "-c", "5", "-i", "0.2", "198.51.100.10"]);
    site.iot.exec(&["ping", "-6", "-c", "5", "-i", "0.2", "2001:db8:20::10"]);
    for url in ["http://198.51.100.10:8080/", "http://[2001:db8:20::10]:8080/"] {
        let mut ok = false;
        for _ in 0..20 {
            let out = site
                .iot
                .command("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", url])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&out.stdout) == "200" {
                ok = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(ok, "curl {url} never got 200");
    }
    site.iot.exec(&["nmap", "-n", "-Pn", "-sS", "-T4", "--top-ports", "200", "198.51.100.10"]);
    std::thread::sleep(Duration::from_millis(500));

    gw.signal("INT");
    assert_eq!(gw.wait_timeout(Duration::from_secs(5)), Some(0), "gatewarden watch exits cleanly on Ctrl-C");
    let mut out = String::new();
    std::io::Read::read_to_string(gw.child().stdout.as_mut().unwrap(), &mut out).unwrap();
    let summary: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));

    tcpdump.signal("INT");
    assert!(tcpdump.wait_timeout(Duration::from_secs(5)).is_some());
    // tcpdump's own "N packets dropped by kernel" lines, for the failure message.
    std::thread::sleep(Duration::from_millis(100));
    let tcpdump_stats: Vec<String> = tcpdump_err.try_iter().filter(|l| l.contains("packets")).collect();
    // Compare over the span gatewarden captured: a stray packet (ARP, ND) that
    // arrives between the two processes' start or stop is not a disagreement.
    // The two sockets do not always share one timestamp: a frame leaving
    // lan0 (the transmit path, e.g. a reply the router forwards to the
    // scanner) is stamped for each packet socket in turn, microseconds apart
    // (more on a loaded VM). One CI run lost the last frame that way
    // (tcpdump's stamp fell past gatewarden's last_ts). Hence a slack at both
    // edges, far shorter than any gap in which a stray frame could slip in
    // unseen.
    const EDGE_SLACK_US: u64 = 5_000;
    let counted = Command::new("tcpdump").args(["-n", "-tt", "-r", pcap.to_str().unwrap()]).output().unwrap();
    let us = |v: &serde_json::Value| (v.as_f64().unwrap() * 1e6).round() as u64;
    let (first, last) = (us(&summary["first_ts"]) - EDGE_SLACK_US, us(&summary["last_ts"]) + EDGE_SLACK_US);
    // "1795476296.975237 IP …" → microseconds as an integer, no float rounding at the edges.
    let all: Vec<u64> = String::from_utf8_lossy(&counted.stdout)
        .lines()
        .filter_map(|l| {
            let (sec, frac) = l.split_whitespace().next()?.split_once('.')?;
            Some(sec.parse::<u64>().ok()? * 1_000_000 + frac.parse::<u64>().ok()?)
        })
        .collect();
    let tcpdump_packets = all.iter().filter(|t| (first..=last).contains(*t)).count() as u64;
    assert!(
        all.len() as u64 - tcpdump_packets <= 3,
        "only stray packets fall outside: {} of {}",
        all.len(),
        tcpdump_packets
    );

    let ours = summary["packets"].as_u64().unwrap();
    assert!(tcpdump_packets > 400, "the scan alone sends 200+ probes; tcpdump saw {tcpdump_packets}");
    assert_eq!(
        ours,
        tcpdump_packets,
        "gatewarden counted {ours}, tcpdump {tcpdump_packets} (of {} in its file; {tcpdump_stats:?}): {summary}",
        all.len()
    );
    assert_eq!(summary["kernel_drops"], 0, "{summary}");
    assert_eq!(summary["skipped"]["ip_malformed"], 0);
    assert!(summary["flows"].as_u64().unwrap() >= 200, "{summary}");
    assert!(summary["alerts"]["port_scan"].as_u64().unwrap_or(0) >= 1, "the nmap scan is detected live: {summary}");
}

#[test]
fn run_role_all_on_a_live_interface_raises_an_alert_for_a_real_scan() {
    if !require_root("run_role_all_on_a_live_interface_raises_an_alert_for_a_real_scan") {
        return;
    }
    if !tool("nmap") || !tool("curl") {
        eprintln!("SKIPPED: nmap/curl not installed");
        return;
    }
    let site = Site::new();
    let (_dir, mut gw) = run_role_all_on_lan0(&site, "");
    site.iot.exec(&["nmap", "-n", "-Pn", "-sS", "-T4", "-p", "1-300", "198.51.100.10"]);
    let mut alerts = serde_json::Value::Null;
    for _ in 0..50 {
        let out = site.router.command("curl").args(["-s", "http://127.0.0.1:8080/api/alerts"]).output().unwrap();
        alerts = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        if alerts["alerts"].as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let list = alerts["alerts"].as_array().unwrap_or_else(|| panic!("no alerts: {alerts}"));
    let scan = list.iter().find(|a| a["gatewarden"]["kind"] == "port_scan").unwrap_or_else(|| panic!("{alerts}"));
    assert_eq!(scan["src_ip"], "192.0.2.10");
    assert_eq!(scan["dest_ip"], "198.51.100.10");
    let metrics = site.router.command("curl").args(["-s", "http://127.0.0.1:8080/metrics"]).output().unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    assert!(metrics.contains("gatewarden_capture_kernel_drops_total{interface=\"lan0\"} 0"), "{metrics}");
    gw.signal("TERM");
    assert_eq!(gw.wait_timeout(Duration::from_secs(3)), Some(0));
}

/// The whole product in one kernel: a real nmap scan from an IoT address is
/// captured, detected, turned into a verdict and written into nftables; the
/// scanner's next packets are dropped while other devices keep working.
#[test]
fn a_live_scan_is_detected_and_blocked_in_the_kernel() {
    if !require_root("a_live_scan_is_detected_and_blocked_in_the_kernel") {
        return;
    }
    if !tool("nmap") || !tool("curl") || !tool("nft") {
        eprintln!("SKIPPED: nmap/curl/nft not installed");
        return;
    }
    let site = Site::new();
    // A second, innocent device on the LAN.
    let other = common::netns::Netns::new("iot2");
    common::netns::link(&other, "eth0", &["203.0.113.20/24"], &site.router, "lan1", &["203.0.113.1/24"]);
    other.exec(&["ip", "route", "add", "default", "via", "203.0.113.1"]);
    let _web = Guard::spawn(
        site.wan
            .command("python3")
            .args(["-m", "http.server", "8080", "--bind", "0.0.0.0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let (_dir, mut gw) = run_role_all_on_lan0(&site, "[enforce]\nenabled = true\n");
    assert!(site.iot.command("ping").args(["-c", "1", "-W", "2", "198.51.100.10"]).status().unwrap().success());

    let started = std::time::Instant::now();
    // Once blocked, nmap's probes go unanswered and it slows down: run it in the
    // background, bounded, and watch the kernel's set meanwhile.
    let _scan = Guard::spawn(
        site.iot
            .command("timeout")
            .args(["30", "nmap", "-n", "-Pn", "-sS", "-T4", "-p", "1-1000", "198.51.100.10"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let mut blocked_after = None;
    // Latency is measured by the lab's scoring run (docs/DETECTION.md); here
    // only "blocked at all, within seconds" on a loaded CI machine.
    for _ in 0..300 {
        if scanner_blocked(&site) {
            blocked_after = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let blocked_after = blocked_after.expect("the scanner's address never reached block4_detector");
    eprintln!("scan start → block element in the kernel: {blocked_after:?}");
    assert!(blocked_after < Duration::from_secs(15), "blocked within seconds of the scan's start: {blocked_after:?}");
    assert!(
        !site.iot.command("ping").args(["-c", "1", "-W", "1", "198.51.100.10"]).status().unwrap().success(),
        "the scanner is blocked"
    );
    let mut last = String::new();
    let innocent_ok = common::wait_until(Duration::from_secs(10), || {
        let out = other
            .command("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "3", "http://198.51.100.10:8080/"])
            .output()
            .unwrap();
        last = String::from_utf8_lossy(&out.stdout).to_string();
        last == "200"
    });
    assert!(innocent_ok, "an innocent device still reaches the WAN (last answer {last:?})");
    let metrics = site.router.command("curl").args(["-s", "http://127.0.0.1:8080/metrics"]).output().unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout).to_string();
    // Registered at 0 from the start: the scan must have counted.
    assert!(
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("gatewarden_verdicts_total{kind=\"port_scan\"} "))
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|v| v > 0.0),
        "{metrics}"
    );
    gw.signal("TERM");
    assert_eq!(gw.wait_timeout(Duration::from_secs(5)), Some(0));
    let gone = site.router.command("nft").args(["list", "table", "inet", "gatewarden"]).output().unwrap();
    assert!(!gone.status.success(), "a clean exit removes the table");
}

/// Whether the site's device (192.0.2.10) is in the router's detector block set.
fn scanner_blocked(site: &Site) -> bool {
    let out = site
        .router
        .command("nft")
        .args(["-j", "list", "set", "inet", "gatewarden", "block4_detector"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains("192.0.2.10")
}

/// One counter from the router's `/metrics` (the site's 127.0.0.1:8080).
fn router_metric(site: &Site, name: &str) -> f64 {
    let out = site.router.command("curl").args(["-s", "http://127.0.0.1:8080/metrics"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// Runs the fragmenting scanner `scan` (a command line, bounded by 30 s)
/// from the site's device against 198.51.100.10 under `gatewarden run`
/// with enforcement on, and asserts the scanner lands in `block4_detector`
/// with a port_scan verdict, its fragments counted and nearly all mapped.
fn assert_fragmented_scan_blocked(site: &Site, scan: &[&str]) {
    let before = router_metric(site, "gatewarden_fragments_total");
    assert!(site.iot.command("ping").args(["-c", "1", "-W", "2", "198.51.100.10"]).status().unwrap().success());
    let _scan =
        Guard::spawn(site.iot.command("timeout").arg("30").args(scan).stdout(Stdio::null()).stderr(Stdio::null()));
    let blocked = common::wait_until(Duration::from_secs(20), || scanner_blocked(site));
    let fragments = router_metric(site, "gatewarden_fragments_total") - before;
    let unmapped = router_metric(site, "gatewarden_fragments_unmapped_total");
    eprintln!("{scan:?}: {fragments} fragments counted, {unmapped} without their ports");
    assert!(blocked, "{scan:?} never put 192.0.2.10 in block4_detector ({fragments} fragments)");
    assert!(fragments >= 30.0, "the scan's fragments were counted as fragments: {fragments}");
    assert!(unmapped <= fragments / 10.0, "nearly every fragment found its probe: {unmapped} of {fragments}");
    assert!(router_metric(site, "gatewarden_verdicts_total{kind=\"port_scan\"}") > 0.0, "a port_scan verdict");
}

/// `nmap -f` cuts each probe's TCP header into 8-byte IP fragments, the
/// flags in the second: a first fragment used to be skipped as a malformed
/// transport and the rest counted as port-less packets, so the scan went
/// unseen. Each fragment now counts in its probe's flow
/// (crates/gatewarden-flow/src/fragments.rs) and the scan is blocked as an
/// unfragmented one is. nmap cannot fragment IPv6, so the IPv6 fragment
/// header is shown on the kernel's own fragments (3 000-byte pings).
#[test]
fn a_fragmented_scan_is_detected_and_blocked_like_an_unfragmented_one() {
    if !require_root("a_fragmented_scan_is_detected_and_blocked_like_an_unfragmented_one") {
        return;
    }
    if !tool("nmap") || !tool("curl") || !tool("nft") {
        eprintln!("SKIPPED: nmap/curl/nft not installed");
        return;
    }
    let site = Site::new();
    let (_dir, mut gw) = run_role_all_on_lan0(&site, "[enforce]\nenabled = true\n");
    // IPv6 first, before the scanner is blocked: three echo requests of 3 000
    // bytes leave the device in three fragments each, and so do the replies.
    let pinged = site
        .iot
        .command("ping")
        .args(["-6", "-c", "3", "-i", "0.2", "-s", "3000", "-W", "2", "2001:db8:20::10"])
        .status();
    assert!(pinged.unwrap().success(), "3 000-byte pings over IPv6 get their answers");
    let counted =
        common::wait_until(Duration::from_secs(5), || router_metric(&site, "gatewarden_fragments_total") >= 18.0);
    assert!(counted, "18 IPv6 fragments counted: {}", router_metric(&site, "gatewarden_fragments_total"));
    let unmapped = router_metric(&site, "gatewarden_fragments_unmapped_total");
    assert_eq!(unmapped, 0.0, "every IPv6 fragment found its datagram");
    assert_fragmented_scan_blocked(&site, &["nmap", "-n", "-Pn", "-sS", "-T4", "-f", "-p", "1-1000", "198.51.100.10"]);
    gw.signal("TERM");
    assert_eq!(gw.wait_timeout(Duration::from_secs(5)), Some(0));
}

/// `hping3 -f -N 42` fragments every probe with the same IP id, which the
/// fragment table must not take for duplicates of the first datagram (the
/// unit test `a_scan_reusing_one_ip_id_is_still_one_syn_per_port` holds
/// that per probe). Live, with a real hping3: blocked, every fragment
/// mapped. (hping3 also moves its source port per probe, so its answers
/// alone would give it away; this run checks the whole path, not the rule.)
#[test]
fn a_fragmented_scan_reusing_one_ip_id_is_blocked_too() {
    if !require_root("a_fragmented_scan_reusing_one_ip_id_is_blocked_too") {
        return;
    }
    if !tool("hping3") || !tool("curl") || !tool("nft") {
        eprintln!("SKIPPED: hping3/curl/nft not installed");
        return;
    }
    let site = Site::new();
    let (_dir, mut gw) = run_role_all_on_lan0(&site, "[enforce]\nenabled = true\n");
    let scan = ["hping3", "-S", "-f", "-N", "42", "-p", "++1", "-i", "u2000", "-c", "1000", "198.51.100.10"];
    assert_fragmented_scan_blocked(&site, &scan);
    gw.signal("TERM");
    assert_eq!(gw.wait_timeout(Duration::from_secs(5)), Some(0));
}

/// A TCP SYN scanner over IPv6 that puts an 80-byte Destination Options
/// header in front of every probe (`python3 -c SCAN DST FIRST_PORT COUNT`):
/// a raw IPPROTO_TCP socket, the header as an IPV6_DSTOPTS ancillary
/// message, the checksum left to the kernel (IPV6_CHECKSUM at offset 16).
/// The header holds one unknown option whose type says "skip me" (0x1e,
/// RFC 4727's experiment value): Linux accepts that and answers the probe,
/// whereas 76 bytes of PadN it drops (more than 7 bytes of padding).
const DSTOPTS_SYN_SCAN: &str = r#"
import socket, struct, sys, time
dst, first, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_TCP)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_CHECKSUM, 16)
opts = bytes([0, 9, 0x1e, 76]) + bytes(76)  # (9 + 1) * 8 = 80 bytes
for i in range(count):
    syn = struct.pack("!HHIIBBHHH", 40000, first + i, 1000 + i, 0, 5 << 4, 0x02, 64240, 0, 0)
    s.sendmsg([syn], [(socket.IPPROTO_IPV6, socket.IPV6_DSTOPTS, opts)], 0, (dst, 0))
    time.sleep(0.002)
"#;

/// Whether the site's device (2001:db8:10::10) is in the router's IPv6 detector block set.
fn scanner6_blocked(site: &Site) -> bool {
    let out = site
        .router
        .command("nft")
        .args(["-j", "list", "set", "inet", "gatewarden", "block6_detector"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains("2001:db8:10::10")
}

/// 80 bytes of IPv6 Destination Options put each probe's TCP header at
/// byte 134 of its frame, past the default 128-byte snap: the capture used
/// to cut every probe inside its extension chain, the parser took them for
/// port-less protocol-60 packets (one flow for the whole scan) and the scan
/// went unseen. The capture filter now keeps each IPv6 frame up to its
/// transport header (crates/gatewarden-capture/src/afpacket.rs), and the
/// scan is blocked as a plain one is; no frame is left with its headers
/// beyond the snap.
#[test]
fn an_ipv6_scan_behind_80_bytes_of_destination_options_is_blocked_like_a_plain_one() {
    if !require_root("an_ipv6_scan_behind_80_bytes_of_destination_options_is_blocked_like_a_plain_one") {
        return;
    }
    if !tool("python3") || !tool("curl") || !tool("nft") || !tool("ping") {
        eprintln!("SKIPPED: python3/curl/nft/ping not installed");
        return;
    }
    let site = Site::new();
    let (_dir, mut gw) = run_role_all_on_lan0(&site, "[enforce]\nenabled = true\n");
    let path = site.iot.command("ping").args(["-6", "-c", "1", "-W", "2", "2001:db8:20::10"]).status();
    assert!(path.unwrap().success(), "the device reaches the WAN host over IPv6");
    let _scan = Guard::spawn(
        site.iot
            .command("timeout")
            .args(["30", "python3", "-c", DSTOPTS_SYN_SCAN, "2001:db8:20::10", "1", "200"])
            .stdout(Stdio::null()),
    );
    let blocked = common::wait_until(Duration::from_secs(20), || scanner6_blocked(&site));
    let packets = router_metric(&site, "gatewarden_packets_total");
    let flows = router_metric(&site, "gatewarden_flows_created_total");
    assert!(
        blocked,
        "200 SYNs behind Destination Options never put 2001:db8:10::10 in block6_detector \
         ({packets} packets, {flows} flows)"
    );
    assert!(flows >= 50.0, "the probes are flows of their own: {flows}");
    assert!(router_metric(&site, "gatewarden_verdicts_total{kind=\"port_scan\"}") > 0.0, "a port_scan verdict");
    let beyond = router_metric(&site, "gatewarden_packets_skipped_total{reason=\"headers_beyond_snap\"}");
    assert_eq!(beyond, 0.0, "every probe's headers were captured");
    gw.signal("TERM");
    assert_eq!(gw.wait_timeout(Duration::from_secs(5)), Some(0));
}

/// The appliance starts its router before networking (docs/PERFORMANCE.md,
/// boot to first rule), so the capture interface (a VLAN on the CM4) may
/// appear only later: gatewarden waits for it, then captures what crosses it.
#[test]
fn a_router_started_before_its_capture_interface_exists_captures_once_it_appears() {
    if !require_root("a_router_started_before_its_capture_interface_exists_captures_once_it_appears") {
        return;
    }
    let rtr = common::netns::Netns::new("late-rtr");
    let dev = common::netns::Netns::new("late-dev");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gw.toml");
    std::fs::write(
        &cfg,
        "node_id = \"rtr\"\n[http]\nlisten = \"127.0.0.1:8080\"\npublic_status = true\n[capture]\ninterface = \"late0\"\n",
    )
    .unwrap();
    let (mut gw, gw_err) =
        spawn_with_stderr(rtr.command(bin().to_str().unwrap()).args(["run", "--role", "all", "--config"]).arg(&cfg));
    wait_for(&gw_err, "does not exist yet; waiting", "gatewarden run without its interface");
    common::netns::link(
        &rtr,
        "late0",
        &["192.0.2.1/24", "2001:db8:10::1/64"],
        &dev,
        "eth0",
        &["192.0.2.10/24", "2001:db8:10::10/64"],
    );
    wait_for(&gw_err, "capturing", "gatewarden once late0 exists");
    dev.exec(&["ping", "-c", "5", "-i", "0.2", "192.0.2.1"]);
    dev.exec(&["ping", "-6", "-c", "5", "-i", "0.2", "2001:db8:10::1"]);
    let mut packets = 0.0;
    for _ in 0..50 {
        let out = rtr.command("curl").args(["-s", "http://127.0.0.1:8080/api/status"]).output().unwrap();
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        packets = s["counters"]["gatewarden_packets_total"].as_f64().unwrap_or(0.0);
        if packets >= 20.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(packets >= 20.0, "20 echo requests and replies (v4 and v6) captured on late0, saw {packets}");
    gw.signal("TERM");
    assert_eq!(gw.wait_timeout(Duration::from_secs(3)), Some(0));
}
