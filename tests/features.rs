//! `gatewarden features`: schema header, labels, determinism, bad input.

mod common;

use std::process::Command;

use common::*;

fn features(args: &[&str]) -> std::process::Output {
    Command::new(bin()).arg("features").args(args).output().unwrap()
}

#[test]
fn writes_one_labelled_row_per_flow_with_the_schema_columns() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo.csv");
    let demo = root().join("samples/synthetic.pcap");
    let labels = root().join("samples/synthetic.labels.csv");
    let o = features(&[demo.to_str().unwrap(), "--labels", labels.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&out).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let schema = gatewarden::features::schema::columns();
    assert_eq!(header.len(), 8 + schema.len() + 1);
    for (i, (name, _)) in schema.iter().enumerate() {
        assert_eq!(header[8 + i], name);
    }
    assert_eq!(*header.last().unwrap(), "label");
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert!(rows.iter().all(|r| r.len() == header.len()));
    // The replay of the same capture creates the same number of flows.
    let replay = Command::new(bin()).args(["replay", demo.to_str().unwrap(), "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&replay.stdout).unwrap();
    assert_eq!(rows.len() as u64, v["flows"].as_u64().unwrap());
    let count = |label: &str| rows.iter().filter(|r| *r.last().unwrap() == label).count();
    assert_eq!(count("port_scan"), 1000, "one flow per scanned port");
    assert_eq!(count("syn_flood"), 10000);
    assert!(count("benign") > 100);
    // Scan rows show the scanner's host statistics: many ports, mostly RST answers.
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let scan_row = rows.iter().rev().find(|r| *r.last().unwrap() == "port_scan").unwrap();
    assert_eq!(scan_row[col("flow_state_REJ")], "1");
    let ports: f64 = scan_row[col("host_distinct_dports_w60")].parse().unwrap();
    assert_eq!(ports, 32.0, "saturates at 32");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("rows") && stderr.contains("port_scan 1000"), "{stderr}");
}

#[test]
fn output_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let demo = root().join("samples/synthetic.pcap");
    let a = dir.path().join("a.csv");
    let b = dir.path().join("b.csv");
    assert!(features(&[demo.to_str().unwrap(), "-o", a.to_str().unwrap()]).status.success());
    assert!(features(&[demo.to_str().unwrap(), "-o", b.to_str().unwrap()]).status.success());
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
}

#[test]
fn bad_labels_and_bad_captures_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let demo = root().join("samples/synthetic.pcap");
    let labels = dir.path().join("l.csv");
    std::fs::write(&labels, "src,start,end,label\n203.0.113.1,1,2,ok\n203.0.113.1,x,2,bad\n").unwrap();
    let out = dir.path().join("o.csv");
    let o = features(&[demo.to_str().unwrap(), "--labels", labels.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("l.csv:3") && err.contains("not a time"), "{err}");
    assert!(!out.exists());

    let cut = dir.path().join("cut.pcap");
    let bytes = std::fs::read(&demo).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let o = features(&[cut.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("byte offset") && err.contains("partial"), "{err}");
    assert!(!out.exists(), "an incomplete CSV never takes the final name");
    assert!(dir.path().join("o.csv.partial").exists(), "rows so far are kept");
}
