//! Benign home and office behaviours the lab's benign corpus never generated
//! (BitTorrent/DHT, VoIP, QUIC, a VPN, a game console, LAN monitoring, a
//! laptop resuming from sleep, a browser's connection burst with Happy
//! Eyeballs, printer/NAS/Chromecast discovery), written by
//! `tools/make_benign_extra_pcap.py` and replayed with the **shipped
//! defaults**: none may be blocked. A gateway that blocks innocent devices is
//! switched off, and these are what real homes run.
//!
//! `GATEWARDEN_BENIGN_EXTRA_SEEDS=1,2,3` replays other seeds (default: the
//! seeds below); `--nocapture` prints every alert.
//!
//! `resume_cold` (a laptop waking with none of its earlier sessions in view, about
//! half of the 40-odd servers it retries on 443 gone) and `tailscale` (a node pinging
//! its peers' candidate endpoints, two of three silent) send about twenty silent
//! probes to one port at 50-80 % unanswered: a narrow sweep, alerted and not blocked
//! since session 29 (docs/DETECTION.md, "Benign behaviours beyond the lab corpus").
//! Seeds 34 and 36 of `resume_cold` were blocked before; they are tested below.

use std::path::{Path, PathBuf};
use std::process::Command;

use gatewarden::capture::{CaptureFile, Frame, PacketSource};
use gatewarden::config::Config;
use gatewarden::roles::detector::DetectorStage;
use gatewarden::roles::router::RouterStage;
use gatewarden_core::metrics::Registry;
use gatewarden_proto::messages::{Alert, AlertAction, Verdict};

const BEHAVIOURS: [&str; 15] = [
    "browser",
    "console",
    "console_host",
    "dht",
    "monitor",
    "monitor_large",
    "office",
    "quic",
    "resume",
    "resume_cold",
    "smokeping",
    "tailscale",
    "torrent_quit",
    "voip",
    "vpn",
];

#[derive(Default)]
struct Out {
    verdicts: Vec<Verdict>,
    alerts: Vec<Alert>,
}

fn make(dir: &Path, behaviour: &str, seed: u32) -> PathBuf {
    let path = dir.join(format!("{behaviour}-{seed}.pcap"));
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let ok = Command::new("python3")
        .arg(root.join("tools/make_benign_extra_pcap.py"))
        .args([behaviour, path.to_str().unwrap(), "--seed", &seed.to_string()])
        .status()
        .expect("python3 runs tools/make_benign_extra_pcap.py");
    assert!(ok.success(), "make_benign_extra_pcap.py {behaviour} --seed {seed}");
    path
}

/// The capture through the router and detector stages exactly as `gatewarden replay` runs them.
fn replay(pcap: &Path) -> Out {
    let cfg = Config { node_id: "lab".into(), ..Config::default() };
    let registry = Registry::new();
    let mut router = RouterStage::new(&cfg, &registry);
    let mut detector = DetectorStage::new(&cfg, &registry);
    let mut out = Out::default();
    let mut analyse = |b, out: &mut Out| {
        let f = detector.on_batch(&b);
        out.verdicts.extend(f.verdicts);
        out.alerts.extend(f.alerts);
    };
    let mut source = CaptureFile::open(pcap).unwrap();
    while let Some(frame) = source.next_frame().unwrap() {
        let frame: &Frame<'_> = &frame;
        if let Some(b) = router.on_frame(frame) {
            analyse(b, &mut out);
        }
    }
    let mut rest = Vec::new();
    router.finish(|b| rest.push(b));
    for b in rest {
        analyse(b, &mut out);
    }
    out
}

fn show(out: &Out) -> String {
    let mut s = String::new();
    for v in &out.verdicts {
        s += &format!("verdict {} {}: {}\n", v.source, v.kind.as_str(), v.reason);
    }
    for a in &out.alerts {
        s += &format!("alert {:?} {} {:?}: {}\n", a.src, a.kind.as_str(), a.action, a.reason);
    }
    s
}

fn seeds(default: &[u32]) -> Vec<u32> {
    match std::env::var("GATEWARDEN_BENIGN_EXTRA_SEEDS") {
        Ok(list) => list.split(',').map(|s| s.trim().parse().expect("a seed number")).collect(),
        Err(_) => default.to_vec(),
    }
}

/// Replays each behaviour for each seed; returns the failures, printing every alert.
fn blocked(behaviours: &[&str], seeds: &[u32]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for &b in behaviours {
        for &seed in seeds {
            let out = replay(&make(dir.path(), b, seed));
            println!("{b} seed {seed}: {} alerts, {} verdicts\n{}", out.alerts.len(), out.verdicts.len(), show(&out));
            let any_block = !out.verdicts.is_empty() || out.alerts.iter().any(|a| a.action != AlertAction::Allowed);
            if any_block {
                failures.push(format!("{b} seed {seed}:\n{}", show(&out)));
            }
        }
    }
    failures
}

#[test]
fn benign_behaviours_outside_the_lab_corpus_are_never_blocked() {
    let failures = blocked(&BEHAVIOURS, &seeds(&[101]));
    assert!(failures.is_empty(), "blocked benign traffic:\n{}", failures.join("\n"));
}

/// The seeds of 1-40 at which `resume_cold` was blocked as a `host_sweep` (20 silent
/// hosts at 46 % and 50 %) until narrow sweeps whose hosts partly answered were alerted.
#[test]
fn a_laptop_waking_to_half_dead_servers_is_not_blocked() {
    let failures = blocked(&["resume_cold"], &[34, 36]);
    assert!(failures.is_empty(), "blocked benign traffic:\n{}", failures.join("\n"));
}
