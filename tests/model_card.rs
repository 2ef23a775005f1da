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
