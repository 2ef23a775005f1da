//! The model card as a person meets it (issue #15): `gatewarden model` shows
//! the calibration (ECE before/after, temperature, held-out sessions) and the
//! OOD ranges, `--json` carries them, and a card from an older train.py is
//! refused with what to do.

mod common;

use std::process::Command;

use common::*;

#[test]
fn model_command_prints_calibration_error_held_out_sessions_and_ood_ranges() {
    let out = Command::new(bin()).arg("model").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    let card: serde_json::Value = serde_json::from_str(gatewarden::detect::model::DEFAULT_CARD).unwrap();
    let cal = &card["calibration"];
    // The numbers of the card, as printed.
    let line = text.lines().find(|l| l.trim_start().starts_with("calibration")).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("expected calibration error"), "{line}");
    assert!(line.contains(&format!("{:.4} before", cal["ece_before"].as_f64().unwrap())), "{line}");
    assert!(line.contains(&format!("{:.4} after", cal["ece_after"].as_f64().unwrap())), "{line}");
    assert!(line.contains(&format!("T = {:.3}", cal["temperature"].as_f64().unwrap())), "{line}");
    let held: Vec<String> = serde_json::from_value(cal["held_out_sessions"].clone()).unwrap();
    assert!(!held.is_empty());
    for s in &held {
        assert!(text.contains(s.as_str()), "held-out session {s} not shown:\n{text}");
    }
    assert!(text.contains("precision") && text.contains("held-out sessions"), "{text}");
    // One row per input with its range.
    for f in card["ood"]["features"].as_array().unwrap() {
        let col = f["column"].as_str().unwrap();
        let row = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(col))
            .unwrap_or_else(|| panic!("no OOD row for {col}:\n{text}"));
        assert_eq!(row.split_whitespace().count(), 5, "{row}");
    }
    assert!(text.contains("abstains"), "{text}");
    assert!(text.contains("\"flood\" only at host_pkt_rate_w1"), "{text}");

    let out = Command::new(bin()).args(["model", "--json"]).output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The card's fields (f32 fields round-trip through f32).
    for k in ["ece_before", "ece_after", "held_out_sessions", "bins", "rows"] {
        assert_eq!(v["calibration"][k], cal[k], "{k}");
    }
    let close = |a: &serde_json::Value, b: &serde_json::Value| {
        let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
        (a - b).abs() <= 1e-6 * a.abs().max(1.0)
    };
    assert!(close(&v["calibration"]["temperature"], &cal["temperature"]));
    let (got, want) = (v["ood"]["features"].as_array().unwrap(), card["ood"]["features"].as_array().unwrap());
    assert_eq!(got.len(), v["feature_schema"]["columns"].as_array().unwrap().len());
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g["column"], w["column"]);
        for k in ["min", "max", "p0_5", "p99_5"] {
            assert!(close(&g[k], &w[k]), "{k}: {g} vs {w}");
        }
    }
}

#[test]
fn model_command_refuses_a_card_without_calibration_saying_to_re_export() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("old.tflite");
    std::fs::write(&model, gatewarden::detect::model::DEFAULT_TFLITE).unwrap();
    let mut card: serde_json::Value = serde_json::from_str(gatewarden::detect::model::DEFAULT_CARD).unwrap();
    let obj = card.as_object_mut().unwrap();
    obj.remove("calibration");
    obj.remove("ood");
    std::fs::write(dir.path().join("old.card.json"), card.to_string()).unwrap();
    let out = Command::new(bin()).arg("model").arg(&model).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("\"calibration\"") && err.contains("re-export it with the current tools/train/train.py"),
        "{err}"
    );
}

// ---- "flood" only at flood rates, on replayed captures (issue #15) ----

use gatewarden::capture::{CaptureFile, PacketSource};
use gatewarden::config::Config;
use gatewarden::monitor::MonitorState;
use gatewarden::replay::Pipeline;
use gatewarden_core::metrics::Registry;
use gatewarden_proto::role::{Role, RoleSource};

/// A pcap with headers-only frames (snap length) and their real wire lengths.
fn snapped_pcap(records: &mut [(u64, Vec<u8>, usize)]) -> Vec<u8> {
    records.sort_by_key(|r| r.0);
    let mut v = Vec::new();
    for x in [0xa1b2c3d4u32.to_le_bytes().as_slice(), &2u16.to_le_bytes(), &4u16.to_le_bytes(), &[0u8; 8]] {
        v.extend(x);
    }
    v.extend(128u32.to_le_bytes());
    v.extend(1u32.to_le_bytes());
    for (t_us, frame, wire) in records.iter() {
        v.extend(((t_us / 1_000_000) as u32).to_le_bytes());
        v.extend(((t_us % 1_000_000) as u32).to_le_bytes());
        v.extend((frame.len() as u32).to_le_bytes());
        v.extend((*wire as u32).to_le_bytes());
        v.extend(frame);
    }
    v
}

fn ip4_frame(src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8], payload: usize) -> (Vec<u8>, usize) {
    let mut f = vec![2, 0, dst[0], dst[1], dst[2], dst[3], 2, 0, src[0], src[1], src[2], src[3], 0x08, 0x00];
    let total = (20 + l4.len() + payload) as u16;
    f.extend([0x45, 0]);
    f.extend(total.to_be_bytes());
    f.extend([0, 0, 0x40, 0, 64, proto, 0, 0]);
    f.extend(src);
    f.extend(dst);
    f.extend(l4);
    let wire = 14 + total as usize;
    (f, wire)
}

fn tcp_hdr(sport: u16, dport: u16, flags: u8, seq: u32, ack: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(20);
    h.extend(sport.to_be_bytes());
    h.extend(dport.to_be_bytes());
    h.extend(seq.to_be_bytes());
    h.extend(ack.to_be_bytes());
    h.extend([0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    h
}

/// A camera streaming UDP at 8 Mbit/s (1 400-byte datagrams) for 12 s, and a plug
/// downloading firmware over HTTP at 10 MB/s for 6 s (the plug ACKs every second segment).
fn camera_and_download() -> Vec<u8> {
    let (cam, nvr, plug, srv) = ([192, 0, 2, 11], [198, 51, 100, 20], [192, 0, 2, 31], [198, 51, 100, 30]);
    let t0 = 1_790_000_000_000_000u64;
    let mut recs = Vec::new();
    let mut push = |t: u64, (f, w): (Vec<u8>, usize)| recs.push((t, f, w));
    let gap = 1_400u64 * 8 * 1_000_000 / 8_000_000; // µs between datagrams at 8 Mbit/s
    let mut t = t0;
    while t < t0 + 12_000_000 {
        let udp = [0x9c, 0x40, 0x13, 0x8c, 0x05, 0x7c, 0, 0]; // 40000 -> 5004
        push(t, ip4_frame(cam, nvr, 17, &udp, 1_400 - 42));
        t += gap;
    }
    // Handshake, request, then 10 MB/s of 1 448-byte segments.
    let t1 = t0 + 2_000_000;
    push(t1, ip4_frame(plug, srv, 6, &tcp_hdr(50000, 80, 0x02, 0, 0), 0));
    push(t1 + 5_000, ip4_frame(srv, plug, 6, &tcp_hdr(80, 50000, 0x12, 0, 1), 0));
    push(t1 + 10_000, ip4_frame(plug, srv, 6, &tcp_hdr(50000, 80, 0x10, 1, 1), 0));
    push(t1 + 10_100, ip4_frame(plug, srv, 6, &tcp_hdr(50000, 80, 0x18, 1, 1), 200));
    let seg_gap = 1_448 * 1_000_000 / 10_000_000u64;
    let (mut t, mut seq, mut i) = (t1 + 15_000, 1u32, 0u32);
    while t < t1 + 6_000_000 {
        push(t, ip4_frame(srv, plug, 6, &tcp_hdr(80, 50000, 0x10, seq, 201), 1_448));
        seq = seq.wrapping_add(1_448);
        i += 1;
        if i % 2 == 0 {
            push(t + 300, ip4_frame(plug, srv, 6, &tcp_hdr(50000, 80, 0x10, 201, seq), 0));
        }
        t += seg_gap;
    }
    push(t, ip4_frame(plug, srv, 6, &tcp_hdr(50000, 80, 0x11, 201, seq), 0));
    push(t + 5_000, ip4_frame(srv, plug, 6, &tcp_hdr(80, 50000, 0x11, seq, 202), 0));
    snapped_pcap(&mut recs)
}

/// The model's opinions over one replay with the shipped defaults: (flood opinions, all
/// opinions, abstentions), from the detector's own counters.
fn model_counts(pcap: &std::path::Path, cfg: &Config) -> (f64, f64, f64) {
    let registry = Registry::new();
    let state = MonitorState::new(Role::All, RoleSource::Flag, "t".into(), registry.clone());
    let mut pipeline = Pipeline::new(cfg, &state);
    let mut source = CaptureFile::open(pcap).unwrap();
    while let Some(frame) = source.next_frame().unwrap() {
        pipeline.on_frame(&frame);
    }
    pipeline.finish(pcap);
    let snap = registry.snapshot();
    let sum =
        |prefix: &str| snap.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, v)| *v).fold(0.0, |a, b| a + b);
    (
        sum("gatewarden_model_classifications_total{class=flood}"),
        sum("gatewarden_model_classifications_total"),
        sum("gatewarden_model_abstentions_total"),
    )
}

#[test]
fn flood_only_at_flood_rates_on_replayed_captures() {
    let dir = tempfile::tempdir().unwrap();
    let stream = dir.path().join("camera_and_download.pcap");
    std::fs::write(&stream, camera_and_download()).unwrap();
    let lab = root().join("datasets/lab");
    let cfg = Config::default();
    // The same network without the guard: temperature 1, no floor, every input "inside".
    let mut card: serde_json::Value = serde_json::from_str(gatewarden::detect::model::DEFAULT_CARD).unwrap();
    card["calibration"]["temperature"] = serde_json::json!(1.0);
    card["class_floors"] = serde_json::json!([]);
    for f in card["ood"]["features"].as_array_mut().unwrap() {
        f["min"] = serde_json::json!(-1e30);
        f["max"] = serde_json::json!(1e30);
    }
    let raw_model = dir.path().join("raw.tflite");
    std::fs::write(&raw_model, gatewarden::detect::model::DEFAULT_TFLITE).unwrap();
    std::fs::write(dir.path().join("raw.card.json"), card.to_string()).unwrap();
    let mut raw_cfg = Config::default();
    raw_cfg.detector.model = raw_model.display().to_string();
    // To compare another model (e.g. an older one, its card given permissive calibration/ood
    // sections): GATEWARDEN_COMPARE_MODEL=/path/old.tflite ... -- --nocapture
    if let Some(m) = std::env::var_os("GATEWARDEN_COMPARE_MODEL") {
        raw_cfg.detector.model = m.to_string_lossy().into_owned();
    }

    let mut report = Vec::new();
    let mut flood_at = std::collections::BTreeMap::new();
    for (name, pcap) in [
        ("camera 8 Mbit/s + download 10 MB/s", stream.clone()),
        ("datasets/lab/benign.pcap", lab.join("benign.pcap")),
        ("datasets/lab/hping3_syn_flood.pcap", lab.join("hping3_syn_flood.pcap")),
        ("datasets/lab/hping3_udp_flood.pcap", lab.join("hping3_udp_flood.pcap")),
        ("datasets/lab/hping3_icmp_flood.pcap", lab.join("hping3_icmp_flood.pcap")),
        ("datasets/lab/nmap_syn_T4.pcap", lab.join("nmap_syn_T4.pcap")),
    ] {
        let (flood, all, abstained) = model_counts(&pcap, &cfg);
        let (raw_flood, raw_all, _) = model_counts(&pcap, &raw_cfg);
        report.push(format!(
            "{name}: shipped model {flood}/{all} host opinions \"flood\", {abstained} abstentions; compared model (default: this one without the guard) {raw_flood}/{raw_all}"
        ));
        flood_at.insert(name, flood);
    }
    let report = report.join("\n");
    eprintln!("{report}");
    assert_eq!(flood_at["camera 8 Mbit/s + download 10 MB/s"], 0.0, "{report}");
    assert_eq!(flood_at["datasets/lab/benign.pcap"], 0.0, "{report}");
    // Floods at flood rates are still floods to the model.
    assert!(flood_at["datasets/lab/hping3_syn_flood.pcap"] > 0.0, "{report}");
    assert!(flood_at["datasets/lab/hping3_udp_flood.pcap"] > 0.0, "{report}");
}

#[test]
fn an_upload_far_beyond_the_training_data_gets_no_opinion_and_is_counted_in_metrics() {
    // 50 MB/s for 2.5 s: more than three times the fastest host in the training data.
    let (nas, srv) = ([192, 0, 2, 50], [198, 51, 100, 40]);
    let t0 = 1_790_000_000_000_000u64;
    let mut recs = Vec::new();
    let mut push = |t: u64, (f, w): (Vec<u8>, usize)| recs.push((t, f, w));
    push(t0, ip4_frame(nas, srv, 6, &tcp_hdr(50001, 443, 0x02, 0, 0), 0));
    push(t0 + 2_000, ip4_frame(srv, nas, 6, &tcp_hdr(443, 50001, 0x12, 0, 1), 0));
    push(t0 + 4_000, ip4_frame(nas, srv, 6, &tcp_hdr(50001, 443, 0x10, 1, 1), 0));
    let gap_ns = 1_448u64 * 1_000_000_000 / 50_000_000;
    let (mut t_ns, mut seq, mut i) = ((t0 + 5_000) * 1_000, 1u32, 0u32);
    while t_ns < (t0 + 2_505_000) * 1_000 {
        push(t_ns / 1_000, ip4_frame(nas, srv, 6, &tcp_hdr(50001, 443, 0x10, seq, 1), 1_448));
        seq = seq.wrapping_add(1_448);
        i += 1;
        if i % 8 == 0 {
            push(t_ns / 1_000 + 200, ip4_frame(srv, nas, 6, &tcp_hdr(443, 50001, 0x10, 1, seq), 0));
        }
        t_ns += gap_ns;
    }
    let t = t_ns / 1_000;
    push(t, ip4_frame(nas, srv, 6, &tcp_hdr(50001, 443, 0x11, seq, 1), 0));
    push(t + 2_000, ip4_frame(srv, nas, 6, &tcp_hdr(443, 50001, 0x11, 1, seq.wrapping_add(1)), 0));
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("upload.pcap");
    std::fs::write(&pcap, snapped_pcap(&mut recs)).unwrap();

    let registry = Registry::new();
    let state = MonitorState::new(Role::All, RoleSource::Flag, "t".into(), registry.clone());
    let mut pipeline = Pipeline::new(&Config::default(), &state);
    let mut source = CaptureFile::open(&pcap).unwrap();
    while let Some(frame) = source.next_frame().unwrap() {
        pipeline.on_frame(&frame);
    }
    pipeline.finish(&pcap);
    let snap = registry.snapshot();
    let abstained: Vec<(&String, &f64)> =
        snap.iter().filter(|(k, v)| k.starts_with("gatewarden_model_abstentions_total{") && **v > 0.0).collect();
    assert!(
        abstained
            .iter()
            .any(|(k, _)| k.contains("feature=host_pkt_rate_w1") || k.contains("feature=host_byte_rate_w1")),
        "no abstention counted: {:?}",
        snap.iter().filter(|(k, _)| k.starts_with("gatewarden_model")).collect::<Vec<_>>()
    );
    // And /metrics shows it.
    let text = registry.render_prometheus();
    assert!(text.contains("gatewarden_model_abstentions_total{feature=\"host_"), "{text}");
}
