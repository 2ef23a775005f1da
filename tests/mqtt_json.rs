//! The MQTT JSON mirror for integrations (#18) against a real Mosquitto with
//! mutual TLS and the ACL `gatewarden pki mosquitto-conf` writes: an
//! all-in-one gateway replays a port scan; `mosquitto_sub` holding an
//! `integration` certificate reads the alert as EVE JSON, the retained state
//! and Home Assistant discovery configs (checked against HA's own schema
//! keys); the same certificate reads no control topic and publishes
//! nothing; with the mirror off nothing appears below `json/`.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::mosquitto::{mosquitto_or_skip, Broker};
use common::{bin, free_port, wait_for, wait_http_ok, Guard};
use serde_json::Value;

/// `mosquitto_sub` and `mosquitto_pub` (Debian's mosquitto-clients), or why the test cannot run.
fn clients_or_skip() -> bool {
    for c in ["mosquitto_sub", "mosquitto_pub"] {
        if Command::new("sh").args(["-c", &format!("command -v {c}")]).output().is_ok_and(|o| o.status.success()) {
            continue;
        }
        let msg = format!("{c} is not installed (apt-get install mosquitto-clients; tools/test.sh does this as root)");
        if std::env::var_os("CI").is_some() {
            panic!("{msg}. CI must run the JSON mirror tests with the real clients");
        }
        eprintln!("SKIPPED: {msg}");
        return false;
    }
    true
}

/// Connection and identity arguments of a Mosquitto client holding `id`'s certificate.
fn tls(b: &Broker, id: &str) -> Vec<String> {
    let p = b.pki();
    [
        "-h",
        "127.0.0.1",
        "-p",
        &b.port.to_string(),
        "--cafile",
        p.join("ca.crt").to_str().unwrap(),
        "--cert",
        p.join(format!("nodes/{id}.crt")).to_str().unwrap(),
        "--key",
        p.join(format!("nodes/{id}.key")).to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec()
}

/// `mosquitto_sub -v` as `id` on `topics` until `count` messages (if given) or `secs` seconds; the (topic, payload) lines.
fn sub(b: &Broker, id: &str, topics: &[&str], count: Option<usize>, secs: u64) -> (Vec<(String, String)>, Output) {
    let mut c = Command::new("mosquitto_sub");
    c.args(tls(b, id)).args(["-v", "-W", &secs.to_string()]);
    if let Some(n) = count {
        c.args(["-C", &n.to_string()]);
    }
    for t in topics {
        c.args(["-t", t]);
    }
    let out = c.stdin(Stdio::null()).output().expect("run mosquitto_sub");
    (lines(&String::from_utf8_lossy(&out.stdout)), out)
}

fn lines(text: &str) -> Vec<(String, String)> {
    text.lines().filter_map(|l| l.split_once(' ')).map(|(t, p)| (t.to_string(), p.to_string())).collect()
}

/// A `mosquitto_sub -v` left running as `id`, writing to `out`; killed on drop.
fn sub_in_background(b: &Broker, id: &str, topic: &str, out: &Path) -> Guard {
    let f = std::fs::File::create(out).unwrap();
    let mut c = Command::new("mosquitto_sub");
    c.args(tls(b, id)).args(["-v", "-t", topic]).stdout(f).stderr(Stdio::null());
    let g = Guard::spawn(&mut c);
    // Subscribed once the broker logs the subscription (log_type all): a
    // non-retained alert published before that would be missed.
    wait_for("the integration's subscription at the broker", Duration::from_secs(20), || {
        std::fs::read_to_string(&b.log).unwrap_or_default().contains(&format!("{topic} (QoS"))
    });
    g
}

fn status(port: u16) -> Value {
    let (code, _, body) = common::http("GET", &format!("127.0.0.1:{port}"), "/api/status").unwrap();
    assert_eq!(code, 200);
    serde_json::from_str(&body).unwrap()
}

fn counter(s: &Value, name: &str) -> f64 {
    s["counters"][name].as_f64().unwrap_or(0.0)
}

/// `gatewarden run --role all` replaying the demo capture (a port scan).
fn gateway(b: &Broker, id: &str, http: u16, mqtt_extra: &str) -> Guard {
    let cfg = b.node_config(id, http, mqtt_extra);
    let demo = common::root().join("samples/demo.pcap");
    let mut c = Command::new(bin());
    c.args(["run", "--role", "all", "--config", cfg.to_str().unwrap(), "--replay", demo.to_str().unwrap()])
        .env("RUST_LOG", "warn");
    let g = Guard::spawn(&mut c);
    assert!(wait_http_ok(&format!("127.0.0.1:{http}"), "/healthz", Duration::from_secs(20)));
    g
}

/// The keys Home Assistant accepts in an MQTT sensor's discovery config,
/// from home-assistant/core `homeassistant/components/mqtt/`:
/// - `schemas.py` @ c6ca7f5f416326437e8e652a5623aa5eff7b3d00: `MQTT_AVAILABILITY_SCHEMA`
///   (availability_topic, availability_template, payload_available,
///   payload_not_available, availability_mode, availability) and
///   `MQTT_ENTITY_COMMON_SCHEMA` (device, origin, enabled_by_default,
///   entity_category, icon, json_attributes_topic, json_attributes_template,
///   object_id, unique_id);
/// - `config.py` @ a5c8209270205b905bb35a9082c39708b0d5f52f: `MQTT_RO_SCHEMA`
///   (qos, encoding, state_topic (required), value_template);
/// - `sensor.py` @ 17309b787222b2ff5a7496ce85391c3c067138fe: `PLATFORM_SCHEMA`
///   (device_class, expire_after, force_update, last_reset_topic,
///   last_reset_value_template, name, state_class, unit_of_measurement).
const HA_SENSOR_KEYS: &[&str] = &[
    "availability_topic",
    "availability_template",
    "payload_available",
    "payload_not_available",
    "availability_mode",
    "availability",
    "device",
    "origin",
    "enabled_by_default",
    "entity_category",
    "icon",
    "json_attributes_topic",
    "json_attributes_template",
    "object_id",
    "unique_id",
    "qos",
    "encoding",
    "state_topic",
    "value_template",
    "device_class",
    "expire_after",
    "force_update",
    "last_reset_topic",
    "last_reset_value_template",
    "name",
    "state_class",
    "unit_of_measurement",
];
/// `schemas.py` (same commit): one entry of the `availability` list.
const HA_AVAILABILITY_KEYS: &[&str] = &["topic", "payload_available", "payload_not_available", "value_template"];
/// `schemas.py` (same commit): `MQTT_ENTITY_DEVICE_INFO_SCHEMA`; at least one of identifiers/connections.
const HA_DEVICE_KEYS: &[&str] = &[
    "identifiers",
    "connections",
    "manufacturer",
    "model",
    "model_id",
    "name",
    "hw_version",
    "serial_number",
    "sw_version",
    "via_device",
    "suggested_area",
    "configuration_url",
];
/// `schemas.py` (same commit): `MQTT_ORIGIN_INFO_SCHEMA`; `name` required.
const HA_ORIGIN_KEYS: &[&str] = &["name", "sw_version", "support_url"];

/// `discovery.py`'s TOPIC_MATCHER: `<prefix>/<component>/[<node_id>/]<object_id>/config`,
/// ids of `[a-zA-Z0-9_-]+`.
fn valid_discovery_topic(t: &str) -> bool {
    let ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let parts: Vec<&str> = t.split('/').collect();
    parts.len() == 5
        && parts[0] == "homeassistant"
        && parts[1] == "sensor"
        && ok(parts[2])
        && ok(parts[3])
        && parts[4] == "config"
}

/// Why a sensor discovery config would not pass Home Assistant's schema, if it would not.
fn ha_sensor_problems(cfg: &Value, node: &str) -> Vec<String> {
    let mut bad = Vec::new();
    let Some(obj) = cfg.as_object() else { return vec!["not an object".into()] };
    let undocumented = |keys: &serde_json::Map<String, Value>, allowed: &[&str], what: &str, bad: &mut Vec<String>| {
        for k in keys.keys() {
            if !allowed.contains(&k.as_str()) {
                bad.push(format!("{what} key {k:?} is not in Home Assistant's schema"));
            }
        }
    };
    undocumented(obj, HA_SENSOR_KEYS, "sensor", &mut bad);
    // What gatewarden needs HA to have, beyond HA's own required state_topic.
    for k in ["state_topic", "unique_id", "name", "value_template", "unit_of_measurement", "device", "availability"] {
        if !obj.contains_key(k) {
            bad.push(format!("required key {k} missing"));
        }
    }
    if obj.contains_key("availability") && obj.contains_key("availability_topic") {
        bad.push("availability and availability_topic are exclusive".into());
    }
    for a in cfg["availability"].as_array().into_iter().flatten() {
        match a.as_object() {
            Some(a) => {
                undocumented(a, HA_AVAILABILITY_KEYS, "availability", &mut bad);
                if a.get("topic").and_then(Value::as_str) != Some(&format!("gatewarden/v1/{node}/status")) {
                    bad.push(format!("availability topic {:?} is not the node's retained status", a.get("topic")));
                }
            }
            None => bad.push("availability entry not an object".into()),
        }
    }
    match cfg["device"].as_object() {
        Some(d) => {
            undocumented(d, HA_DEVICE_KEYS, "device", &mut bad);
            if d.get("identifiers").and_then(Value::as_array).is_none_or(|v| v.is_empty()) {
                bad.push("device without identifiers".into());
            }
        }
        None => bad.push("device is not an object".into()),
    }
    if let Some(o) = cfg.get("origin") {
        match o.as_object() {
            Some(o) => {
                undocumented(o, HA_ORIGIN_KEYS, "origin", &mut bad);
                if !o.contains_key("name") {
                    bad.push("origin without name".into());
                }
            }
            None => bad.push("origin is not an object".into()),
        }
    }
    for k in ["name", "unique_id", "state_topic", "value_template", "unit_of_measurement", "icon", "state_class"] {
        if cfg.get(k).is_some_and(|v| !v.is_string()) {
            bad.push(format!("{k} is not a string"));
        }
    }
    if cfg["state_topic"] != format!("gatewarden/v1/{node}/json/state") {
        bad.push(format!("state_topic {} is not the retained json/state", cfg["state_topic"]));
    }
    bad
}

/// The EVE keys every alert line carries (Suricata's `alert` event), and sane values.
fn eve_problems(v: &Value) -> Vec<String> {
    let mut bad = Vec::new();
    if v["event_type"] != "alert" {
        bad.push(format!("event_type {}", v["event_type"]));
    }
    if !v["timestamp"].as_str().is_some_and(|t| t.len() >= 20 && t.as_bytes()[10] == b'T') {
        bad.push(format!("timestamp {}", v["timestamp"]));
    }
    let a = &v["alert"];
    if a["signature"].as_str().is_none_or(|s| s.is_empty()) {
        bad.push(format!("alert.signature {}", a["signature"]));
    }
    if !a["signature_id"].is_u64() || !a["severity"].is_u64() || !a["category"].is_string() {
        bad.push(format!("alert ids/severity/category {a}"));
    }
    if !matches!(a["action"].as_str(), Some("allowed" | "blocked")) {
        bad.push(format!("alert.action {}", a["action"]));
    }
    bad
}

#[test]
fn an_integration_certificate_reads_eve_alerts_state_and_ha_discovery_and_nothing_else() {
    let Some(exe) = mosquitto_or_skip() else { return };
    if !clients_or_skip() {
        return;
    }
    // An all-in-one gateway joins with a router certificate; Home Assistant with an integration one;
    // a monitor certificate stands in for the fleet's monitor sending a (retained) control message.
    // Each reader has its own certificate: the broker gives a certificate one
    // connection (its subject is the client id), so two readers sharing one
    // would drop each other; ha-2 stands in for a second integration.
    let b = Broker::start(
        exe,
        &[("gw", "router"), ("ha", "integration"), ("ha-2", "integration"), ("mon", "monitor"), ("alice", "operator")],
    );
    let acl = std::fs::read_to_string(b.pki().join("mosquitto/acl")).unwrap();
    assert!(acl.contains("user OU=integration,CN=ha\n"), "{acl}");

    // A control message the integration must not read: retained, so any reader allowed to would get it.
    let secret = "sealed-unblock-for-gw";
    let o = Command::new("mosquitto_pub")
        .args(tls(&b, "mon"))
        .args(["-t", "gatewarden/v1/mon/unblock", "-m", secret, "-r", "-q", "1"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let dir = tempfile::tempdir().unwrap();
    let alerts_out = dir.path().join("alerts.txt");
    let _alerts = sub_in_background(&b, "ha-2", "gatewarden/v1/+/json/alert", &alerts_out);

    let (http, ctl_port) = (free_port(), free_port());
    let _gw = gateway(
        &b,
        "gw",
        http,
        &format!("json_mirror = true\njson_interval_s = 1\n[ctl]\nlisten = \"127.0.0.1:{ctl_port}\"\n"),
    );
    wait_for("the replayed port scan alerted at the gateway", Duration::from_secs(60), || {
        status(http)["alerts_by_kind"]["port_scan"].as_u64().unwrap_or(0) > 0
    });

    // 1. mosquitto_sub with the integration certificate reads the alerts, as EVE JSON.
    let mut eve: Vec<Value> = Vec::new();
    wait_for("a port-scan alert as EVE JSON on json/alert", Duration::from_secs(30), || {
        eve = lines(&std::fs::read_to_string(&alerts_out).unwrap_or_default())
            .into_iter()
            .inspect(|(t, _)| assert_eq!(t, "gatewarden/v1/gw/json/alert"))
            .map(|(_, p)| serde_json::from_str::<Value>(&p).unwrap_or_else(|e| panic!("not JSON ({e}): {p}")))
            .collect();
        eve.iter().any(|v| v["src_ip"].is_string())
    });
    for v in &eve {
        let bad = eve_problems(v);
        assert!(bad.is_empty(), "{bad:?} in {v}");
    }
    let scan = eve.iter().find(|v| v["src_ip"].is_string()).unwrap();
    for k in ["src_ip", "dest_ip"] {
        assert!(scan[k].as_str().unwrap().parse::<std::net::IpAddr>().is_ok(), "{k} in {scan}");
    }

    // 2. The retained state and Home Assistant's discovery configs, read as HA would: on connecting.
    // Retained and refreshed every json_interval_s (1 s here): wait for one made after the alert.
    let mut st = Value::Null;
    wait_for("a retained json/state counting the alert", Duration::from_secs(30), || {
        let (state, _) = sub(&b, "ha", &["gatewarden/v1/gw/json/state"], Some(1), 10);
        assert_eq!(state.len(), 1, "the retained json/state");
        st = serde_json::from_str(&state[0].1).unwrap();
        st["alerts_total"].as_u64().unwrap() >= 1
    });
    assert_eq!(st["node"], "gw");
    assert_eq!(st["version"], env!("CARGO_PKG_VERSION"));
    assert!(st["nodes_online"].as_u64().unwrap() >= 1, "{st}");
    assert!(st["alerts_total"].as_u64().unwrap() >= 1, "{st}");
    for k in ["blocked_sources", "alerts_per_min"] {
        assert!(st[k].is_u64(), "{k} in {st}");
    }
    let (metrics, _) = sub(&b, "ha", &["gatewarden/v1/gw/json/metrics"], Some(1), 30);
    assert_eq!(metrics.len(), 1, "json/metrics every json_interval_s");
    let m: Value = serde_json::from_str(&metrics[0].1).unwrap();
    assert!(m["counters"]["gatewarden_mqtt_json_published_total"].as_f64().unwrap() >= 1.0, "{m}");

    let (disc, _) = sub(&b, "ha", &["homeassistant/#"], Some(3), 30);
    assert_eq!(disc.len(), 3, "three retained sensor configs: {disc:?}");
    let mut fields = Vec::new();
    for (topic, payload) in &disc {
        assert!(valid_discovery_topic(topic), "{topic}");
        let cfg: Value = serde_json::from_str(payload).unwrap();
        let bad = ha_sensor_problems(&cfg, "gw");
        assert!(bad.is_empty(), "{topic}: {bad:?} in {cfg}");
        // Each sensor's template names a field the state document has.
        let tpl = cfg["value_template"].as_str().unwrap();
        let field = tpl.trim_start_matches("{{ value_json.").trim_end_matches(" }}");
        assert!(st[field].is_u64(), "{tpl} reads {field}, not in {st}");
        fields.push(field.to_string());
    }
    fields.sort();
    assert_eq!(fields, ["alerts_per_min", "blocked_sources", "nodes_online"]);
    // The availability topic the configs name is readable by the integration and says online.
    let (avail, _) = sub(&b, "ha", &["gatewarden/v1/gw/status"], Some(1), 20);
    assert_eq!(avail, [("gatewarden/v1/gw/status".to_string(), "online".to_string())]);

    // 3. Nothing else. Mosquitto 2.0 grants the SUBACK (QoS 0) for a filter
    // its ACL does not allow and then delivers nothing through it, so the
    // proof is what arrives: the retained control message reaches a monitor
    // certificate but not the integration, whichever filter it asks for.
    let (mon_sees, _) = sub(&b, "mon", &["gatewarden/v1/+/unblock"], Some(1), 20);
    assert_eq!(mon_sees.len(), 1, "the control message is there for a monitor");
    // What the subscriber is told: Mosquitto 2.0.11 grants QoS 0 (a broker
    // answering 0x80, 128, would be as good); either way nothing is delivered.
    let o = Command::new("mosquitto_sub")
        .args(tls(&b, "ha"))
        .args(["-d", "-v", "-W", "3", "-t", "gatewarden/v1/+/unblock"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("Subscribed (mid: 1): 0") || text.contains("Subscribed (mid: 1): 128"), "{text}");
    assert!(!text.contains(secret), "{text}");
    let allowed = |t: &str| {
        t.starts_with("homeassistant/")
            || t.strip_prefix("gatewarden/v1/")
                .and_then(|r| r.split_once('/'))
                .is_some_and(|(_, rest)| rest == "status" || rest.starts_with("json/"))
    };
    for filter in ["gatewarden/v1/+/unblock", "gatewarden/v1/+/key", "gatewarden/v1/+/alert", "gatewarden/v1/#", "#"] {
        let (got, out) = sub(&b, "ha", &[filter], None, 3);
        assert_eq!(out.status.code(), Some(27), "mosquitto_sub ended by its -W timeout, not refused: {out:?}");
        for (t, p) in &got {
            assert!(allowed(t) && !p.contains(secret), "the integration read {t} through {filter}");
        }
        if filter.ends_with("/unblock") || filter.ends_with("/key") {
            assert!(got.is_empty(), "{filter}: {got:?}");
        }
    }

    // 4. It publishes nothing: MQTT 5 says so (PUBACK 0x87 "Not authorized"), and neither
    // a forged alert, a forged discovery config nor a control message gets through.
    let marker = "forged-by-the-integration-7f3a";
    let forged = format!(r#"{{"event_type":"alert","signature":"{marker}"}}"#);
    for (topic, retain) in [
        ("gatewarden/v1/gw/json/alert", false),
        ("homeassistant/sensor/gatewarden_gw/forged/config", true),
        ("gatewarden/v1/ha/unblock", false),
        ("gatewarden/v1/gw/unblock", true),
    ] {
        let mut c = Command::new("mosquitto_pub");
        c.args(tls(&b, "ha")).args(["-V", "mqttv5", "-q", "1", "-t", topic, "-m", &forged]);
        if retain {
            c.arg("-r");
        }
        let o = c.output().unwrap();
        assert!(String::from_utf8_lossy(&o.stderr).contains("Not authorized"), "{topic}: {o:?}");
        let log = std::fs::read_to_string(&b.log).unwrap();
        assert!(
            log.lines().any(|l| l.contains("Denied PUBLISH") && l.contains(&format!("'{topic}'"))),
            "{topic} denied in the broker log"
        );
    }
    // The monitor reads control topics, the integration discovery: neither finds the forgery retained.
    let (mut after, _) = sub(&b, "mon", &["gatewarden/v1/+/unblock"], None, 3);
    after.extend(sub(&b, "ha", &["homeassistant/#"], None, 3).0);
    assert!(!after.iter().any(|(_, p)| p.contains(marker)), "{after:?}");
    let read = std::fs::read_to_string(&alerts_out).unwrap();
    assert!(!read.contains(marker), "{read}");
    assert_eq!(after.iter().filter(|(t, _)| t.starts_with("homeassistant/")).count(), 3, "{after:?}");
    let s = status(http);
    assert!(counter(&s, "gatewarden_mqtt_json_published_total") >= 5.0, "{}", s["counters"]);

    // 5. Control stays sealed: the node's ctl endpoint takes an operator, not an integration.
    let ctl = |id: &str| {
        let o = Command::new(bin())
            .args(["ctl", "--node", &format!("127.0.0.1:{ctl_port}"), "--pki", b.pki().to_str().unwrap(), "--id", id])
            .arg("status")
            .output()
            .unwrap();
        (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
    };
    let (ok, text) = ctl("alice");
    assert!(ok, "an operator's ctl status works: {text}");
    // Refused before it connects (the node refuses any non-operator sender too, src/ctl.rs).
    let (ok, text) = ctl("ha");
    assert!(!ok && text.contains("only operator certificates"), "{text}");
}

#[test]
fn with_the_mirror_off_nothing_is_published_below_json_or_homeassistant() {
    let Some(exe) = mosquitto_or_skip() else { return };
    if !clients_or_skip() {
        return;
    }
    let b = Broker::start(exe, &[("gw", "router"), ("ha", "integration")]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("json.txt");
    let _sub = sub_in_background(&b, "ha", "gatewarden/v1/+/json/#", &out);
    let http = free_port();
    // The default: no json_mirror key.
    let _gw = gateway(&b, "gw", http, "");
    wait_for("the replayed port scan alerted and reached the broker", Duration::from_secs(60), || {
        let s = status(http);
        s["alerts_by_kind"]["port_scan"].as_u64().unwrap_or(0) > 0
            && counter(&s, "gatewarden_mqtt_published_total{kind=alert}") > 0.0
    });
    // The gateway is connected and publishing on the node bus; give a mirror
    // (json_interval_s defaults to 10) longer than its period to show up.
    let (disc, _) = sub(&b, "ha", &["homeassistant/#", "gatewarden/v1/+/json/#"], None, 12);
    assert!(disc.is_empty(), "{disc:?}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "", "nothing on json/#");
    let s = status(http);
    assert_eq!(counter(&s, "gatewarden_mqtt_json_published_total"), 0.0);
}
