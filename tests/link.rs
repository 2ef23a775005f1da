//! Link health in network namespaces: a monitor probes a detector node over
//! a veth pair (IPv4 and IPv6); the link is then degraded and the monitor
//! must raise a latency-spike alert and a loss alert, each within 10 s.
//!
//! Degrading uses `tc netem` where the kernel has it. This machine's kernel
//! has no `sch_netem` (`modprobe sch_netem`: not found), so the test then
//! builds the same faults from what the kernel has: latency from congestion
//! (a `tbf` shaper at 200 kbit/s filled by a flood ping, so replies queue for
//! up to 400 ms), and loss from an nftables rule dropping 50 % at random.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::netns::{link, require_root, Netns};
use common::{bin, Guard};

fn alerts(mon: &Netns) -> Vec<serde_json::Value> {
    let out = mon
        .command("curl")
        .args(["-s", "--max-time", "2", "http://127.0.0.1:8080/api/alerts?kind=link_health&limit=100"])
        .output()
        .unwrap();
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v["alerts"].as_array().cloned())
        .unwrap_or_default()
}

fn status(mon: &Netns) -> serde_json::Value {
    let out = mon.command("curl").args(["-s", "--max-time", "2", "http://127.0.0.1:8080/api/status"]).output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// Waits for a link alert whose signature contains `what`; returns it and the time it took.
fn wait_alert(mon: &Netns, what: &str, seen: usize, since: Instant) -> (serde_json::Value, Duration) {
    loop {
        let list = alerts(mon);
        if let Some(a) = list
            .iter()
            .take(list.len().saturating_sub(seen))
            .find(|a| a["alert"]["signature"].as_str().unwrap_or("").contains(what))
        {
            return (a.clone(), since.elapsed());
        }
        assert!(since.elapsed() < Duration::from_secs(15), "no {what} alert 15 s after degrading the link: {list:#?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn latency_spike_and_loss_raise_link_alerts_within_10_s() {
    if !require_root("latency_spike_and_loss_raise_link_alerts_within_10_s") {
        return;
    }
    let mon = Netns::new("lmon");
    let node = Netns::new("lnode");
    link(&mon, "eth0", &["192.0.2.1/24", "2001:db8:30::1/64"], &node, "eth0", &["192.0.2.2/24", "2001:db8:30::2/64"]);
    let dir = tempfile::tempdir().unwrap();
    let node_cfg = dir.path().join("node.toml");
    std::fs::write(
        &node_cfg,
        "node_id = \"det\"\n[http]\nlisten = \"127.0.0.1:8080\"\n[link]\nlisten = \"[::]:7946\"\n",
    )
    .unwrap();
    let mon_cfg = dir.path().join("mon.toml");
    std::fs::write(
        &mon_cfg,
        "node_id = \"mon\"\n[http]\nlisten = \"127.0.0.1:8080\"\npublic_status = true\n\
         [link]\npeers = [\"det=192.0.2.2:7946\", \"det6=[2001:db8:30::2]:7946\"]\n",
    )
    .unwrap();
    let b = bin();
    let b = b.to_str().unwrap();
    let _node =
        Guard::spawn(node.command(b).args(["run", "--role", "detector", "-c"]).arg(&node_cfg).stderr(Stdio::null()));
    let _mon =
        Guard::spawn(mon.command(b).args(["run", "--role", "monitor", "-c"]).arg(&mon_cfg).stderr(Stdio::null()));

    // A baseline: both links up and answering.
    let start = Instant::now();
    loop {
        let s = status(&mon);
        let up = |n: &str| s["links"][n]["up"] == true && s["links"][n]["answered"].as_u64().unwrap_or(0) >= 30;
        if up("det") && up("det6") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "links never came up: {s}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(alerts(&mon).is_empty(), "a healthy link raised alerts: {:#?}", alerts(&mon));
    let metrics = mon.command("curl").args(["-s", "http://127.0.0.1:8080/metrics"]).output().unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout).to_string();
    assert!(metrics.contains("gatewarden_link_rtt_p99_seconds{peer=\"det6\"}"), "{metrics}");
    assert!(metrics.contains("gatewarden_link_up{peer=\"det\"} 1"), "{metrics}");

    // 1. Latency.
    let netem = node
        .command("tc")
        .args(["qdisc", "add", "dev", "eth0", "root", "netem", "delay", "200ms"])
        .output()
        .unwrap()
        .status
        .success();
    let mut flood = None;
    if netem {
        eprintln!("degrading with tc netem delay 200ms");
    } else {
        eprintln!("no sch_netem in this kernel: congestion instead (tbf 200 kbit/s + flood ping)");
        node.exec(&[
            "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "200kbit", "burst", "4kb", "latency", "400ms",
        ]);
        flood = Some(Guard::spawn(
            node.command("ping")
                .args(["-q", "-i", "0.002", "-s", "1000", "192.0.2.1"])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        ));
    }
    let t = Instant::now();
    let (a, took) = wait_alert(&mon, "latency spike", 0, t);
    eprintln!("latency alert after {took:?}: {}", a["gatewarden"]["reason"]);
    assert!(took <= Duration::from_secs(10), "latency alert took {took:?}");
    assert!(a["gatewarden"]["reason"].as_str().unwrap().contains(" ms"), "numbers in the reason: {a}");
    drop(flood);
    node.exec(&["tc", "qdisc", "del", "dev", "eth0", "root"]);
    std::thread::sleep(Duration::from_secs(2));

    // 2. Loss.
    let seen = alerts(&mon).len();
    let netem = node
        .command("tc")
        .args(["qdisc", "add", "dev", "eth0", "root", "netem", "loss", "50%"])
        .output()
        .unwrap()
        .status
        .success();
    if !netem {
        node.exec(&["nft", "add", "table", "inet", "lossy"]);
        node.exec(&["nft", "add", "chain", "inet", "lossy", "out", "{ type filter hook output priority 0; }"]);
        node.exec(&[
            "nft", "add", "rule", "inet", "lossy", "out", "udp", "sport", "7946", "numgen", "random", "mod", "100",
            "<", "50", "drop",
        ]);
    }
    let t = Instant::now();
    let (a, took) = wait_alert(&mon, "loss burst", seen, t);
    eprintln!("loss alert after {took:?}: {}", a["gatewarden"]["reason"]);
    assert!(took <= Duration::from_secs(10), "loss alert took {took:?}");
    assert!(a["gatewarden"]["reason"].as_str().unwrap().contains("probes lost"), "{a}");
    assert_eq!(a["gatewarden"]["kind"], "link_health");
}
