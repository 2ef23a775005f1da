//! A spoofed-source SYN flood (a random source per packet, as
//! `hping3 --rand-source` sends) must keep the flow table at its cap, keep
//! memory flat once every bounded table is full (doubling the flood after that
//! point must not grow the peak), and never blame a spoofed address.

mod common;

use std::process::Command;

use common::*;

fn make_flood(dir: &std::path::Path, packets: u32) -> std::path::PathBuf {
    let path = dir.join(format!("flood{packets}.pcap"));
    let ok = Command::new("python3")
        .arg(root().join("tools/make_traffic_pcap.py"))
        .args(["flood", path.to_str().unwrap(), "--packets", &packets.to_string()])
        .status()
        .expect("python3 is installed");
    assert!(ok.success());
    path
}

fn replay(capture: &std::path::Path, cfg: &std::path::Path) -> serde_json::Value {
    let out = Command::new(bin())
        .args(["replay", capture.to_str().unwrap(), "--json", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn spoofed_flood_keeps_the_table_at_its_cap_and_memory_flat() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gw.toml");
    std::fs::write(&cfg, "[flow]\nmax_flows = 20000\nmax_hosts = 4096\nmax_pairs = 8192\n").unwrap();
    let large = replay(&make_flood(dir.path(), 600_000), &cfg);
    let small = replay(&make_flood(dir.path(), 300_000), &cfg);
    for (v, n) in [(&small, 300_000u64), (&large, 600_000)] {
        assert_eq!(v["packets"], n);
        assert_eq!(v["flows"], n, "every spoofed packet is a new flow");
        assert_eq!(v["flows_evicted"], n - 20_000, "the table held exactly its cap: {v}");
        assert_eq!(v["verdicts"], 0, "no spoofed source is blamed: {v}");
        assert!(v["alerts"]["syn_flood"].as_u64().unwrap_or(0) >= 1, "the flood is reported per victim: {v}");
    }
    let (a, b) = (small["peak_rss_mb"].as_f64().unwrap(), large["peak_rss_mb"].as_f64().unwrap());
    assert!(a > 0.0);
    assert!(b <= a * 1.10 + 4.0, "memory grew with the flood: {a:.1} MiB for 300k packets, {b:.1} MiB for 600k");
}
