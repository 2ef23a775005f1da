//! Issue #16: "replay uses the same services". `gatewarden replay` drives
//! the detector service's state and the monitor service's recording in
//! lockstep; `gatewarden run --role all --replay` runs the same capture
//! through the node's tasks and bus. Both real binaries, one capture: the
//! page must hold the same alerts, field for field, but for the router's own
//! sentence of why nothing was blocked.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{bin, free_port, wait_http_ok, wait_until, Guard};
use serde_json::Value;

fn get(addr: &str, path: &str) -> Value {
    common::http("GET", addr, path).ok().and_then(|(_, _, b)| serde_json::from_str(&b).ok()).unwrap_or(Value::Null)
}

/// The stored alerts, oldest first.
fn alerts(addr: &str) -> Vec<Value> {
    let mut v = get(addr, "/api/alerts?limit=1000")["alerts"].as_array().cloned().unwrap_or_default();
    v.sort_by_key(|a| (a["gatewarden"]["ts_ns"].as_u64(), a["gatewarden"]["id"].as_u64()));
    v
}

/// Where the router's answer starts in an alert's reason: the router that
/// answered, then its own sentence (which says why it enforces nothing).
const ANSWER: &str = "; not blocked: gw: ";

#[test]
fn a_replay_and_a_node_replaying_the_same_capture_store_the_same_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let demo = common::root().join("samples/demo.pcap");
    let config = |name: &str, port: u16| {
        let p = dir.path().join(format!("{name}.toml"));
        // Nothing enforces in either: the node's router answers every verdict "not blocked".
        std::fs::write(
            &p,
            format!("node_id = \"gw\"\n[http]\nlisten = \"127.0.0.1:{port}\"\npublic_status = true\n[enforce]\nenabled = false\n"),
        )
        .unwrap();
        p
    };
    let (pr, pn) = (free_port(), free_port());
    let (ar, an) = (format!("127.0.0.1:{pr}"), format!("127.0.0.1:{pn}"));
    let _replay = Guard::spawn(
        Command::new(bin())
            .args(["replay", "--serve", &ar, "-c"])
            .arg(config("replay", pr))
            .arg(&demo)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let _node = Guard::spawn(
        Command::new(bin())
            .args(["run", "--role", "all", "--replay"])
            .arg(&demo)
            .arg("-c")
            .arg(config("node", pn))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    assert!(wait_http_ok(&ar, "/healthz", Duration::from_secs(20)));
    assert!(wait_http_ok(&an, "/healthz", Duration::from_secs(20)));
    // Generous: both run a debug build's whole pipeline on a shared 2-core machine.
    assert!(
        wait_until(Duration::from_secs(120), || get(&ar, "/api/status")["replay"]["state"] == "finished"),
        "the replay never finished: {}",
        get(&ar, "/api/status")["replay"]
    );
    let from_replay = alerts(&ar);
    assert!(from_replay.len() >= 5, "the demo capture raises scans, floods and brute force: {from_replay:?}");
    // The node files an alert once its router answered the verdict; wait for all of them.
    let settled = wait_until(Duration::from_secs(120), || alerts(&an).len() >= from_replay.len());
    let from_node = alerts(&an);
    assert!(settled, "the node stored {} of the replay's {} alerts: {from_node:?}", from_node.len(), from_replay.len());
    // Nothing more arrives at the node than the replay stored.
    std::thread::sleep(Duration::from_secs(2));
    let from_node = alerts(&an);
    assert_eq!(from_node.len(), from_replay.len(), "{from_node:#?}\n{from_replay:#?}");

    let mut blocks_asked = 0;
    for (r, n) in from_replay.iter().zip(&from_node) {
        let (mut r, mut n) = (r.clone(), n.clone());
        for a in [&mut r, &mut n] {
            let reason = a["gatewarden"]["reason"].as_str().unwrap().to_string();
            // An alert that asked for a block carries its router's answer,
            // naming the router (as every node's does) …
            if let Some((asked, why)) = reason.split_once(ANSWER) {
                blocks_asked += 1;
                assert!(!why.is_empty(), "{reason}");
                // … and the router's own sentence, which alone may differ.
                a["gatewarden"]["reason"] = Value::String(format!("{asked}{ANSWER}<router's why>"));
                a["alert"]["metadata"]["reason"] = Value::Array(vec![a["gatewarden"]["reason"].clone()]);
            }
        }
        assert_eq!(r, n, "replay and node stored this alert differently");
        assert_eq!(r["alert"]["action"], "allowed", "nothing enforced, so nothing claims a block: {r}");
    }
    assert_eq!(blocks_asked, 2 * from_replay.len(), "every demo alert asked for a block and got an answer");
    let why = |a: &Value| a["gatewarden"]["reason"].as_str().unwrap().split_once(ANSWER).unwrap().1.to_string();
    assert_eq!(why(&from_replay[0]), "a replay enforces nothing");
    assert!(why(&from_node[0]).contains("enforcement is off"), "{}", why(&from_node[0]));
}
