//! One CLI style, against the real binary: `--json` on every command that
//! lists or reports, errors as one JSON object on stderr with the same exit
//! codes, and one duration syntax for every duration-taking flag.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::*;

fn gw(dir: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .current_dir(dir)
        .env_remove("GATEWARDEN_CONFIG")
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `args` and returns stdout parsed as one JSON value; fails with both streams otherwise.
fn json_of(dir: &Path, args: &[&str]) -> serde_json::Value {
    let out = gw(dir, args);
    assert!(out.status.success(), "{args:?}: exit {:?}\nstderr: {}", out.status.code(), text(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: stdout is not one JSON value ({e}):\n{}", text(&out.stdout)))
}

/// The subcommand paths `gatewarden --help` and each group's help list (leaves only).
fn command_tree(prefix: &[String]) -> Vec<Vec<String>> {
    let out = Command::new(bin()).args(prefix).arg("--help").output().unwrap();
    assert!(out.status.success(), "{prefix:?} --help");
    let help = text(&out.stdout);
    let mut names = Vec::new();
    let mut in_commands = false;
    for line in help.lines() {
        if line.starts_with("Commands:") {
            in_commands = true;
            continue;
        }
        if in_commands {
            if line.trim().is_empty() || !line.starts_with("  ") {
                in_commands = false;
                continue;
            }
            // A command line is "  name  description"; a wrapped description is indented further.
            if line.starts_with("   ") {
                continue;
            }
            let name = line.split_whitespace().next().unwrap().to_string();
            if name != "help" {
                names.push(name);
            }
        }
    }
    if names.is_empty() {
        return vec![prefix.to_vec()];
    }
    names
        .into_iter()
        .flat_map(|n| {
            let mut p = prefix.to_vec();
            p.push(n);
            command_tree(&p)
        })
        .collect()
}

#[test]
fn every_command_in_the_help_takes_json() {
    let leaves = command_tree(&[]);
    assert!(leaves.len() >= 30, "the help tree shrank: {leaves:?}");
    for must in [&["alerts"][..], &["config", "check"], &["pki", "list"], &["token", "issue"], &["ctl", "status"]] {
        let must: Vec<String> = must.iter().map(|s| s.to_string()).collect();
        assert!(leaves.iter().any(|l| l.starts_with(&must)), "{must:?} missing from {leaves:?}");
    }
    for leaf in &leaves {
        let out = Command::new(bin()).args(leaf).arg("--help").output().unwrap();
        let help = text(&out.stdout);
        assert!(help.contains("--json"), "`gatewarden {} --help` has no --json:\n{help}", leaf.join(" "));
    }
}

#[test]
fn reporting_commands_print_one_json_value() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let pki = dir.join("pki");
    let pki = pki.to_str().unwrap();
    let v = json_of(dir, &["pki", "init", "--dir", pki, "--json"]);
    assert!(v["ca_cert"].as_str().unwrap().ends_with("ca.crt"), "{v}");
    let v = json_of(dir, &["pki", "issue", "r1", "--role", "router", "--dir", pki, "--json"]);
    assert_eq!((v["node"].as_str(), v["role"].as_str()), (Some("r1"), Some("router")), "{v}");
    json_of(dir, &["pki", "issue", "m1", "--role", "monitor", "--dir", pki, "--json"]);
    let v = json_of(dir, &["--json", "pki", "list", "--dir", pki]);
    assert_eq!(v.as_array().unwrap().len(), 2, "{v}");
    let v = json_of(dir, &["pki", "mosquitto-conf", "--dir", pki, "--json"]);
    assert!(v["config"].as_str().unwrap().ends_with("mosquitto.conf"), "{v}");
    let v = json_of(dir, &["pki", "bundle", "r1", "--broker", "192.0.2.3:8883", "--dir", pki, "--out", "b", "--json"]);
    assert!(!v["files"].as_array().unwrap().is_empty(), "{v}");
    let v = json_of(dir, &["pki", "revoke", "r1", "--dir", pki, "--json"]);
    assert_eq!(v["revoked"][0]["node"], "r1", "{v}");

    std::fs::write(dir.join("gw.toml"), "[detector]\nmodel_threshold = 0.9\n").unwrap();
    let v = json_of(dir, &["config", "check", "gw.toml", "--json"]);
    assert_eq!(v["ok"], true, "{v}");
    let v = json_of(dir, &["config", "show", "-c", "gw.toml", "--json"]);
    assert_eq!(v["detector"]["model_threshold"].to_string(), "0.9", "a float as written");

    let v = json_of(dir, &["token", "issue", "--role", "viewer", "--ttl", "1h30m", "--key", "k.pem", "--json"]);
    assert_eq!(v["token"].as_str().unwrap().matches('.').count(), 2, "{v}");
    let v = json_of(dir, &["token", "jwks", "--key", "k.pem", "--json"]);
    assert!(v["keys"].is_array(), "{v}");

    let v = json_of(dir, &["model", "--json"]);
    assert!(v["classes"].is_array(), "{v}");
    let demo = root().join("samples/demo.pcap");
    let demo = demo.to_str().unwrap();
    let v = json_of(dir, &["features", demo, "-o", "f.csv", "--json"]);
    assert!(v["rows"].as_u64().unwrap() > 100, "{v}");

    let st = ["--state-dir", "pol"];
    let v =
        json_of(dir, &[&["policy", "group", "add", "cams", "--member", "192.0.2.0/28", "--json"][..], &st].concat());
    assert_eq!(v["done"], "group cams saved", "{v}");
    json_of(dir, &[&["policy", "group", "add", "sens", "--member", "198.51.100.0/28", "--json"][..], &st].concat());
    let v = json_of(
        dir,
        &[&["policy", "rule", "create", "--from", "cams", "--to", "sens", "--action", "deny", "--json"][..], &st]
            .concat(),
    );
    assert_eq!(v["rule"]["source_group"], "cams", "{v}");
    for sub in [
        &["group", "list"][..],
        &["rule", "list"],
        &["suggest"],
        &["matrix"],
        &["explain", "cams", "sens", "tcp", "22"],
    ] {
        json_of(dir, &[&["policy"][..], sub, &st, &["--json"]].concat());
    }
}

/// (arguments, exit code): each fails; the same code with and without --json.
const FAILURES: &[(&[&str], i32)] = &[
    (&["no-such-command"], 2),
    (&["token", "issue", "--role", "viewer", "--ttl", "5 parsecs", "--key", "k.pem"], 2),
    (&["token", "issue", "--role", "viewer", "--ttl", "91d", "--key", "k.pem"], 2),
    (&["config", "check", "missing.toml"], 2),
    (&["config", "check", "bad.toml"], 2),
    (&["config", "show", "-c", "bad.toml"], 2),
    (&["replay", "bad.toml"], 2),
    (&["model", "missing.tflite"], 2),
    (&["pki", "issue", "r9", "--role", "router", "--dir", "no-ca-here"], 1),
    (&["policy", "--state-dir", "pol", "rule", "delete", "99"], 2),
    (&["ctl", "--node", "127.0.0.1:9", "status"], 2),
    (&["alerts", "--dir", "no-store", "--since", "soon"], 2),
];

#[test]
fn errors_are_one_json_object_on_stderr_with_the_same_exit_code() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    std::fs::write(dir.join("bad.toml"), "[detector]\nmodel_threshold = 1.5\n").unwrap();
    for (args, code) in FAILURES {
        let plain = gw(dir, args);
        assert_eq!(plain.status.code(), Some(*code), "{args:?}: {}", text(&plain.stderr));
        assert!(text(&plain.stderr).contains("error"), "{args:?}: {}", text(&plain.stderr));
        let with = gw(dir, &[*args, &["--json"]].concat());
        assert_eq!(with.status.code(), Some(*code), "{args:?} --json: {}", text(&with.stderr));
        let err = text(&with.stderr);
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{args:?} --json: one line on stderr, got:\n{err}");
        let v: serde_json::Value = serde_json::from_str(lines[0])
            .unwrap_or_else(|e| panic!("{args:?} --json: stderr is not JSON ({e}): {err}"));
        assert!(v["error"].as_str().is_some_and(|s| !s.is_empty()), "{args:?}: {v}");
        assert_eq!(v["exit_code"], *code, "{args:?}: {v}");
        assert!(with.stdout.is_empty(), "{args:?} --json: nothing on stdout on failure: {}", text(&with.stdout));
    }
    // The invalid value is named as a problem a script can read.
    let out = gw(dir, &["config", "check", "bad.toml", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(v["problems"][0]["key"], "detector.model_threshold", "{v}");
}

/// A store with the demo capture's five alerts (port scan, SYN, brute force, ICMP, UDP floods).
fn demo_store(dir: &Path) -> std::path::PathBuf {
    let store = dir.join("store");
    std::fs::write(dir.join("st.toml"), format!("[monitor]\ndata_dir = {:?}\n", store.to_str().unwrap())).unwrap();
    let demo = root().join("samples/demo.pcap");
    let out = gw(dir, &["replay", demo.to_str().unwrap(), "-c", "st.toml", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    store
}

fn eve_lines(dir: &Path, args: &[&str]) -> Vec<serde_json::Value> {
    let out = gw(dir, &[&["alerts"][..], args, &["--json"]].concat());
    assert!(out.status.success(), "alerts {args:?}: {}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("alerts {args:?}: not an EVE line ({e}): {l}")))
        .collect()
}

#[test]
fn alerts_queries_the_store_with_filters_without_touching_it() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let store = demo_store(dir);
    let s = store.to_str().unwrap();
    let all = eve_lines(dir, &["--dir", s]);
    assert_eq!(all.len(), 5, "{all:?}");
    assert!(all.iter().all(|v| v["event_type"] == "alert"));
    let ids: Vec<u64> = all.iter().map(|v| v["gatewarden"]["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [1, 2, 3, 4, 5], "oldest first, like tail");
    // The config's monitor.data_dir is the default store; `list` is the same query.
    assert_eq!(eve_lines(dir, &["-c", "st.toml"]), all);
    assert_eq!(eve_lines(dir, &["list", "--dir", s]), all);
    let kinds = |args: &[&str]| -> Vec<String> {
        eve_lines(dir, &[&["--dir", s][..], args].concat())
            .iter()
            .map(|v| v["gatewarden"]["kind"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(kinds(&["--kind", "syn_flood"]), ["syn_flood"]);
    assert_eq!(kinds(&["--src", "192.0.2.66", "--limit", "2"]), ["icmp_flood", "udp_flood"], "the newest two");
    assert_eq!(kinds(&["--src", "192.0.2.67"]).len(), 0);
    assert_eq!(kinds(&["--severity", "medium"]).len(), 5);
    assert_eq!(kinds(&["--severity", "high"]).len(), 4);
    assert_eq!(kinds(&["--action", "allowed"]).len(), 5, "a replay blocks nothing");
    assert_eq!(kinds(&["--action", "blocked"]).len(), 0);
    let node = all[0]["gatewarden"]["node"].as_str().unwrap().to_string();
    assert_eq!(kinds(&["--node", &node]).len(), 5);
    assert_eq!(kinds(&["--node", "not-a-node"]).len(), 0);
    // The capture is from its own (past) time: a window reaching back to it holds all, a minute none.
    assert_eq!(kinds(&["--since", "3650d"]).len(), 5);
    assert_eq!(kinds(&["--since", "1m"]).len(), 0);
    assert_eq!(eve_lines(dir, &["list", "--dir", s, "--since", "1h30m"]).len(), 0);

    // A line the monitor is writing (no newline yet) is skipped and left as it is.
    let file = store.join("alerts.json");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.extend_from_slice(br#"{"event_type":"alert","half"#);
    std::fs::write(&file, &bytes).unwrap();
    assert_eq!(eve_lines(dir, &["--dir", s]).len(), 5);
    assert_eq!(std::fs::read(&file).unwrap(), bytes, "the query wrote to the store");

    // The table: a header, one row per alert, a count.
    let out = gw(dir, &["alerts", "--dir", s, "--kind", "port_scan"]);
    let t = text(&out.stdout);
    assert!(
        out.status.success() && t.contains("port_scan") && t.contains("192.0.2.66") && t.ends_with("1 alert(s)\n"),
        "{t}"
    );
    // No store named: what to do.
    let out = gw(dir, &["alerts"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--dir"), "{}", text(&out.stderr));
}

/// Every flag that takes a duration, with a command line around it (`D` is replaced).
/// Each may fail for other reasons here (no nftables table, no such interface,
/// no certificates), but never because of how the duration is written.
const DURATION_FLAGS: &[(&str, &[&str])] = &[
    ("block --ttl", &["block", "192.0.2.44", "--ttl", "D"]),
    ("blocklist import --ttl", &["blocklist", "import", "list.txt", "--ttl", "D"]),
    ("token issue --ttl", &["token", "issue", "--role", "viewer", "--key", "k.pem", "--ttl", "D"]),
    ("watch --duration", &["watch", "-i", "no-such-if0", "--duration", "D"]),
    ("alerts --since", &["alerts", "--dir", ".", "--since", "D"]),
    ("alerts list --since", &["alerts", "list", "--dir", ".", "--since", "D"]),
    (
        "ctl --timeout",
        &["ctl", "--node", "127.0.0.1:9", "--ca", "x", "--cert", "y", "--key", "z", "--timeout", "D", "status"],
    ),
    (
        "ctl block --ttl",
        &["ctl", "--node", "127.0.0.1:9", "--ca", "x", "--cert", "y", "--key", "z", "block", "192.0.2.1", "--ttl", "D"],
    ),
];

#[test]
fn every_duration_flag_takes_1h30m_and_refuses_nonsense_the_same_way() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    std::fs::write(dir.join("list.txt"), "198.51.100.0/24\n").unwrap();
    let with = |args: &[&str], v: &str| -> Vec<String> {
        args.iter().map(|a| if *a == "D" { v.to_string() } else { a.to_string() }).collect()
    };
    // As root, in a network namespace of its own: `block` must not reach the host's nftables.
    let isolated = |args: &[String]| -> Output {
        let mut c = if is_root() {
            let mut c = Command::new("unshare");
            c.arg("-n").arg(bin());
            c
        } else {
            Command::new(bin())
        };
        c.args(args).current_dir(dir).env_remove("GATEWARDEN_CONFIG").output().unwrap()
    };
    for (name, args) in DURATION_FLAGS {
        let flag = name.rsplit(' ').next().unwrap();
        let ok = isolated(&with(args, "1h30m"));
        let err = text(&ok.stderr);
        assert!(!err.contains("invalid value") && !err.contains("not a duration"), "{name} 1h30m: {err}");
        let bad = isolated(&with(args, "5 parsecs"));
        let err = text(&bad.stderr);
        assert_eq!(bad.status.code(), Some(2), "{name} '5 parsecs': {err}");
        assert!(err.contains(&format!("invalid value '5 parsecs' for '{flag}")), "{name}: {err}");
        assert!(err.contains("30s, 10m, 1h, 1h30m, 7d"), "{name}: one parser, one message: {err}");
    }
    // 1h30m really is 90 minutes where the result shows it.
    let v = json_of(dir, &["token", "issue", "--role", "viewer", "--key", "k.pem", "--ttl", "1h30m", "--json"]);
    let claims = v["token"].as_str().unwrap().split('.').nth(1).unwrap().to_string();
    let claims = base64_url(&claims);
    let c: serde_json::Value = serde_json::from_slice(&claims).unwrap();
    assert_eq!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(), 5400, "{c}");

    // No duration flag is left out of the list above.
    let listed: Vec<&str> = DURATION_FLAGS.iter().map(|(n, _)| *n).collect();
    for leaf in command_tree(&[]) {
        let out = Command::new(bin()).args(&leaf).arg("--help").output().unwrap();
        for line in text(&out.stdout).lines() {
            let t = line.trim_start();
            let Some(flag) = t.strip_prefix("--").map(|r| r.split([' ', '=']).next().unwrap()) else { continue };
            if ["ttl", "timeout", "duration", "since", "until", "interval", "window", "age"]
                .iter()
                .any(|w| flag.contains(w))
            {
                let name = format!("{} --{flag}", leaf.join(" "));
                assert!(listed.contains(&name.as_str()), "{name} takes a duration but is not tested here");
            }
        }
    }
}

/// Decodes unpadded base64url (a JWT part).
fn base64_url(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        _ => 63,
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes() {
        acc = (acc << 6) | u32::from(val(c));
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// Whether this process runs as root (the effective uid in /proc/self/status).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

#[test]
fn floats_print_as_written_in_config_show_and_the_settings_json() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let show = |body: &str| -> String {
        std::fs::write(dir.join("f.toml"), body).unwrap();
        let out = gw(dir, &["config", "show", "-c", "f.toml"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    assert!(show("").contains("model_threshold = 0.9\n"), "the default as written:\n{}", show(""));
    let t = show("[detector]\nmodel_threshold = 0.85\n");
    assert!(t.contains("model_threshold = 0.85\n"), "{t}");
    // What `show` prints reads back to the same value.
    std::fs::write(dir.join("again.toml"), &t).unwrap();
    let again = gatewarden::config::Config::load(&dir.join("again.toml")).unwrap();
    assert_eq!(again.detector.model_threshold, 0.85f32);
    // The settings API and page build their JSON through serde_json::Value (f64 only).
    let v = serde_json::to_value(&again.detector).unwrap();
    assert_eq!(v["model_threshold"].to_string(), "0.85");
    let v = json_of(dir, &["config", "show", "-c", "again.toml", "--json"]);
    assert_eq!(v["detector"]["model_threshold"].to_string(), "0.85");
}

#[test]
fn config_check_checks_the_model_and_its_card() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let check = |model: &str| -> Output {
        std::fs::write(dir.join("gw.toml"), format!("[detector]\nmodel = {model:?}\n")).unwrap();
        gw(dir, &["config", "check", "gw.toml"])
    };
    let model = dir.join("m.tflite");
    let m = model.to_str().unwrap();
    std::fs::write(&model, gatewarden::detect::model::DEFAULT_TFLITE).unwrap();

    // A model with no card beside it.
    let out = check(m);
    assert_eq!(out.status.code(), Some(2), "a model without a card passed: {}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(err.contains("m.card.json") && err.contains("detector.model") && err.contains("no model card"), "{err}");

    // A card whose feature schema is not this binary's.
    let mut card: serde_json::Value = serde_json::from_str(gatewarden::detect::model::DEFAULT_CARD).unwrap();
    card["feature_schema"]["name"] = serde_json::json!("someone-elses-features");
    std::fs::write(dir.join("m.card.json"), card.to_string()).unwrap();
    let out = check(m);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("someone-elses-features") && err.contains("m.card.json") && err.contains("Retrain"), "{err}");

    // An unreadable model.
    let out = check(dir.join("missing.tflite").to_str().unwrap());
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("missing.tflite") && err.contains("detector.model"), "{err}");

    // The real card: ok, and the check says which model it loaded.
    std::fs::write(dir.join("m.card.json"), gatewarden::detect::model::DEFAULT_CARD).unwrap();
    let out = check(m);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("m.tflite"), "{}", text(&out.stdout));
    let v = json_of(dir, &["config", "check", "gw.toml", "--json"]);
    assert_eq!(v["model"]["path"], m, "{v}");
    // No model at all, and the embedded one, are fine.
    assert!(check("off").status.success());
    assert!(check("").status.success());
}

#[test]
fn sighup_reopens_the_log_file_for_logrotate() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let log = dir.join("logs").join("gatewarden.log");
    let addr = format!("127.0.0.1:{}", free_port());
    std::fs::write(
        dir.join("gw.toml"),
        format!(
            "node_id = \"hup\"\n[http]\nlisten = \"{addr}\"\n[log]\nlevel = \"info\"\nfile = {:?}\n",
            log.to_str().unwrap()
        ),
    )
    .unwrap();
    let mut guard = Guard::spawn(
        Command::new(bin())
            .args(["run", "--role", "monitor", "-c"])
            .arg(dir.join("gw.toml"))
            .env_remove("GATEWARDEN_ROLE"),
    );
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    wait_for("the first log lines in log.file", Duration::from_secs(20), || read(&log).contains("monitor"));
    // logrotate: rename, then HUP.
    let rotated = dir.join("logs").join("gatewarden.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    let before = read(&rotated);
    guard.signal("HUP");
    wait_for("a new file at log.file after SIGHUP", Duration::from_secs(10), || read(&log).contains("reopened"));
    assert!(guard.child().try_wait().unwrap().is_none(), "SIGHUP stopped the process");
    guard.signal("TERM");
    assert_eq!(guard.wait_timeout(Duration::from_secs(10)), Some(0));
    let new = read(&log);
    assert!(new.contains("stopped cleanly"), "the last lines land in the new file:\n{new}");
    assert!(!read(&rotated).contains("stopped cleanly"), "the rotated file got lines after the reopen");
    assert!(read(&rotated).starts_with(&before) && !before.is_empty());
    assert!(!new.contains('\x1b'), "no colour codes in a file: {new:?}");
}

/// The config keys that count time (`*_s`, `*_ms`) in `config show --json`, as (section, key).
fn duration_keys(v: &serde_json::Value, section: &str, out: &mut Vec<(String, String)>) {
    let Some(o) = v.as_object() else { return };
    for (k, val) in o {
        let path = if section.is_empty() { k.clone() } else { format!("{section}.{k}") };
        if val.is_object() {
            duration_keys(val, &path, out);
        } else if val.is_u64() && (k.ends_with("_s") || k.ends_with("_ms")) && !k.ends_with("per_s") {
            out.push((section.to_string(), k.clone()));
        }
    }
}

#[test]
fn every_duration_config_key_takes_the_duration_syntax() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let defaults = json_of(dir, &["config", "show", "-c", "/dev/null", "--json"]);
    let mut keys = Vec::new();
    duration_keys(&defaults, "", &mut keys);
    assert!(keys.len() >= 30, "{keys:?}");
    for (section, key) in &keys {
        let body = if section.is_empty() {
            format!("{key} = \"1h30m\"\n")
        } else {
            format!("[{section}]\n{key} = \"1h30m\"\n")
        };
        std::fs::write(dir.join("k.toml"), &body).unwrap();
        let out = gw(dir, &["config", "check", "k.toml", "--json"]);
        if out.status.success() {
            continue;
        }
        // A value out of the key's range is fine (5400 s may be too long for it); a type error is not.
        let v: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
        assert!(v["problems"].is_array(), "{section}.{key} = \"1h30m\" did not parse: {}", v["error"]);
        let named = v["problems"].as_array().unwrap().iter().any(|p| {
            let m = p["message"].as_str().unwrap_or_default();
            m.contains("5400") || m.contains(key.as_str())
        });
        assert!(named, "{section}.{key}: {v}");
    }
    // The values as read: seconds for *_s, milliseconds for *_ms.
    std::fs::write(
        dir.join("v.toml"),
        "[flow]\nidle_timeout_s = \"1m30s\"\nactive_timeout_s = \"10m\"\nbatch_interval_ms = \"250ms\"\n",
    )
    .unwrap();
    let v = json_of(dir, &["config", "show", "-c", "v.toml", "--json"]);
    assert_eq!((v["flow"]["idle_timeout_s"].as_u64(), v["flow"]["batch_interval_ms"].as_u64()), (Some(90), Some(250)));
    assert_eq!(v["flow"]["active_timeout_s"], 600);
    // The text form prints what was read, as the unit the key names: it loads back unchanged.
    let shown = gw(dir, &["config", "show", "-c", "v.toml"]);
    assert!(shown.status.success(), "{}", text(&shown.stderr));
    let shown = text(&shown.stdout);
    assert!(shown.contains("idle_timeout_s = 90\n") && shown.contains("batch_interval_ms = 250\n"), "{shown}");
    std::fs::write(dir.join("shown.toml"), &shown).unwrap();
    assert_eq!(json_of(dir, &["config", "show", "-c", "shown.toml", "--json"]), v);
    // Nonsense is refused with the parser's message, and a fraction of a second by a seconds key.
    for (bad, says) in [
        ("\"5 parsecs\"", "30s, 10m, 1h, 1h30m, 7d"),
        ("\"1500ms\"", "whole number of seconds"),
        ("\"1.5h\"", "fractions are not accepted, write smaller units instead (1h30m for 1.5h"),
        ("1.5", "1.5 is not a whole number"),
        ("-5", "a duration cannot be negative"),
    ] {
        std::fs::write(dir.join("b.toml"), format!("[flow]\nidle_timeout_s = {bad}\n")).unwrap();
        let out = gw(dir, &["config", "check", "b.toml"]);
        assert_eq!(out.status.code(), Some(2));
        assert!(text(&out.stderr).contains(says), "{bad}: {}", text(&out.stderr));
    }
}

/// README commands a user runs as written: `pki init` where the default (/etc/gatewarden/pki)
/// or the given directory cannot be created says to pass `--dir`; `watch --serve` on an
/// interface it cannot open prints the error alone, no login link to a page that is gone.
#[test]
fn readme_commands_that_cannot_proceed_say_what_to_do_and_nothing_else() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    std::fs::write(dir.join("file"), "").unwrap();
    let out = gw(dir, &["pki", "init", "--dir", "file/pki"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("creating file/pki") && err.contains("pass --dir DIR"), "{err}");

    let out = gw(dir, &["watch", "-i", "gw-no-such0", "--duration", "2s", "--serve", "127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("gw-no-such0"), "{err}");
    assert!(
        !err.contains("status page:") && !err.contains("#token="),
        "a login link to a page that never served: {err}"
    );
    // Where the capture opens (root, on loopback), the link is printed.
    if netns::require_root("watch --serve on lo") {
        let out = gw(dir, &["watch", "-i", "lo", "--duration", "1s", "--serve", "127.0.0.1:0"]);
        let err = text(&out.stderr);
        assert!(out.status.success() && err.contains("status page: http://127.0.0.1:"), "{err}");
    }
}
