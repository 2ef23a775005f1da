//! LAN mapping (issue #17): a LAN device sweeping its subnet with ARP or
//! IPv6 neighbour solicitations, replayed from real-tool captures through the
//! real binary, and the held-out benign corpus, which must stay quiet.
//!
//! `samples/lan_mapping/*.pcap` are lab sessions (`tests/lab.rs` `lab_record`,
//! `GATEWARDEN_LAB_ONLY=nmap_sn_lan_arp,arp_scan_localnet,nmap6_sn_ns_sweep`,
//! 2026-12-04) cut to their ARP and ICMPv6 frames with
//! `tcpdump -r S.pcap -w S.small.pcap 'arp or icmp6'`: the sweep, the benign
//! devices' own ARP for the gateway and the router's answers. The attacker is
//! 192.0.2.66 / 2001:db8:10::66 with MAC 86:12:1e:46:e2:3f.
//!
//! In a fleet the probes travel as their own message kind (`lan_probes`)
//! from router to detector through Mosquitto: the last test runs that.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::mosquitto::{mosquitto_or_skip, Broker};
use common::*;
use gatewarden::capture::{CaptureFile, PacketSource};
use gatewarden::config::Config;
use gatewarden::monitor::MonitorState;
use gatewarden::replay::Pipeline;
use gatewarden_core::metrics::Registry;
use gatewarden_proto::messages::{Alert, AlertAction, AttackKind};
use gatewarden_proto::role::{Role, RoleSource};

const SWEEPS: [(&str, &str); 3] =
    [("nmap_sn_lan_arp", "192.0.2.66"), ("arp_scan_localnet", "192.0.2.66"), ("nmap6_sn_ns_sweep", "2001:db8:10::66")];
const ATTACKER_MAC: &str = "86:12:1e:46:e2:3f";

fn sample(name: &str) -> PathBuf {
    root().join(format!("samples/lan_mapping/{name}.pcap"))
}

fn replay_json(pcap: &std::path::Path) -> serde_json::Value {
    let out = Command::new(bin()).arg("replay").arg(pcap).arg("--json").output().unwrap();
    assert!(out.status.success(), "{}: {}", pcap.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

/// The alerts of an in-process replay with the shipped defaults (for the reasons).
fn alerts(pcap: &std::path::Path) -> Vec<Alert> {
    let registry = Registry::new();
    let state = MonitorState::new(Role::All, RoleSource::Flag, "lab".into(), registry);
    let mut pipeline = Pipeline::new(&Config::default(), &state);
    let mut source = CaptureFile::open(pcap).unwrap();
    while let Some(frame) = source.next_frame().unwrap() {
        pipeline.on_frame(&frame);
    }
    pipeline.finish(pcap);
    state.alerts()
}

/// Each real tool's sweep is one `lan_mapping` alert through `gatewarden
/// replay`, and nothing else: ARP was skipped as "not IP" before, and an NS
/// sweep was ICMPv6 flows to solicited-node groups (an `icmp_flood` in the lab).
#[test]
fn real_tool_sweeps_replayed_through_the_binary_are_one_lan_mapping_alert_each() {
    for (name, _) in SWEEPS {
        let v = replay_json(&sample(name));
        assert_eq!(v["alerts"], serde_json::json!({"lan_mapping": 1}), "{name}: {v}");
        assert_eq!(v["verdicts"], 0, "{name}: alert only, nothing to block: {v}");
    }
}

/// The alert names the MAC, the address the frames claimed, the count of
/// addresses and the unanswered share, and blocks nothing (the sender
/// address of ARP is forgeable).
#[test]
fn the_alert_explains_itself_with_the_mac_and_the_numbers() {
    for (name, src) in SWEEPS {
        let all = alerts(&sample(name));
        let a: Vec<&Alert> = all.iter().filter(|a| a.kind == AttackKind::LanMapping).collect();
        assert_eq!(a.len(), 1, "{name}: {all:#?}");
        let a = a[0];
        println!("{name}: {}", a.reason);
        assert_eq!(a.src, Some(src.parse().unwrap()), "{name}");
        assert_eq!((a.action, a.signature_id), (AlertAction::Allowed, 9_000_013), "{name}");
        for needle in [ATTACKER_MAC, "64 distinct LAN addresses", "never answered and never seen alive", "alert only"] {
            assert!(a.reason.contains(needle), "{name}: {needle:?} not in {}", a.reason);
        }
    }
}

/// The held-out benign seeds (100-104: 13 devices, DHCP, a 30 s WAN outage
/// with its reconnect storm; 38-92 ARP frames each, the busiest asker the
/// router's DHCP server checking 8-11 addresses) raise no `lan_mapping`.
#[test]
fn held_out_benign_seeds_raise_no_lan_mapping() {
    let tmp = tempfile::tempdir().unwrap();
    for n in 100..=104 {
        let xz = root().join(format!("datasets/benign/seed-{n}/benign.pcap.xz"));
        let out = Command::new("xz").arg("-dc").arg(&xz).output().expect("xz (xz-utils) unpacks the benign corpus");
        assert!(out.status.success(), "xz -dc {}: {}", xz.display(), String::from_utf8_lossy(&out.stderr));
        let pcap = tmp.path().join(format!("seed-{n}.pcap"));
        std::fs::write(&pcap, out.stdout).unwrap();
        let v = replay_json(&pcap);
        assert!(v["skipped"]["not_ip"].as_u64().unwrap() > 0, "seed {n} has ARP frames: {v}");
        assert!(v["alerts"].get("lan_mapping").is_none(), "seed {n}: {v}");
    }
}

fn status(port: u16) -> serde_json::Value {
    let (code, _, body) = common::http("GET", &format!("127.0.0.1:{port}"), "/api/status").unwrap();
    assert_eq!(code, 200);
    serde_json::from_str(&body).unwrap()
}

fn run_node(cfg: &std::path::Path, role: &str, extra: &[&str]) -> Guard {
    let mut c = Command::new(bin());
    c.args(["run", "--role", role, "--config", cfg.to_str().unwrap()]).args(extra).env("RUST_LOG", "warn");
    Guard::spawn(&mut c)
}

/// Router, detector and monitor as three processes on a real Mosquitto
/// with TLS and the ACL `pki mosquitto-conf` writes: the router's LAN
/// probes reach the detector (its subscription, the broker's ACL, the
/// claim check) and the sweep is a `lan_mapping` alert at the monitor,
/// filed under the router that saw it.
#[test]
fn lan_probes_travel_router_to_detector_through_mosquitto() {
    let Some(exe) = mosquitto_or_skip() else { return };
    let broker = Broker::start(exe, &[("router-1", "router"), ("det-1", "detector"), ("mon-1", "monitor")]);
    let (pm, pd, pr) = (free_port(), free_port(), free_port());
    let monitor = format!("[monitor]\ndata_dir = \"{}\"\n", broker.pki().join("data-mon-1").display());
    let _mon = run_node(&broker.node_config("mon-1", pm, &monitor), "monitor", &[]);
    let _det = run_node(&broker.node_config("det-1", pd, ""), "detector", &[]);
    for p in [pm, pd] {
        assert!(wait_http_ok(&format!("127.0.0.1:{p}"), "/healthz", Duration::from_secs(10)));
        wait_for("monitor and detector connected", Duration::from_secs(15), || {
            status(p)["counters"]["gatewarden_mqtt_connected"].as_f64() == Some(1.0)
        });
    }
    let sweep = sample("nmap_sn_lan_arp");
    let _r = run_node(&broker.node_config("router-1", pr, ""), "router", &["--replay", sweep.to_str().unwrap()]);
    wait_for("a lan_mapping alert for router-1 at the monitor", Duration::from_secs(40), || {
        let s = status(pm);
        s["alerts_by_kind"]["lan_mapping"].as_u64().unwrap_or(0) > 0
            && s["nodes"]["router-1"]["alerts"].as_u64().unwrap_or(0) > 0
    });
}
