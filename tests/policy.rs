//! Group policies (#9).
//!
//! - CLI tests (no root): conflicts refused naming both rules, `explain`
//!   naming the deciding rule, validation errors, feedback that moves
//!   confidence exactly as the Beta update predicts and survives a restart.
//! - Lab tests (root, network namespaces, real sshd / Mosquitto / nmap):
//!   camera and sensor namespaces routed through a router namespace where
//!   `gatewarden run --role all` captures, detects and enforces.

mod common;
mod webdriver;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::netns::{link, require_root, Netns};
use common::{bin, free_port, wait_until, Guard};
use gatewarden::flow::ConnState;
use gatewarden::policy::suggest::{combine, context};
use gatewarden::policy::{Action, Group, PolicyConfig, PolicyEngine, Protocol};
use gatewarden_proto::messages::{FlowBatch, FlowRecord, Proto};
use serde_json::json;

fn gw(state: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .args(["policy", "--state-dir", state.to_str().unwrap()])
        .args(args)
        .env("GATEWARDEN_CONFIG", "/dev/null")
        .stdin(Stdio::null())
        .output()
        .expect("run gatewarden")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn ok(state: &Path, args: &[&str]) -> String {
    let o = gw(state, args);
    assert!(o.status.success(), "gatewarden policy {args:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The README's `gatewarden policy group add ...` run by a user who cannot write the default
/// state directory (/var/lib/gatewarden/policy): the error says the two ways out.
#[test]
fn an_unwritable_state_dir_says_how_to_choose_another() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("not-a-dir");
    std::fs::write(&file, "").unwrap();
    let o = gw(&file.join("policy"), &["group", "add", "cameras", "--member", "192.0.2.0/28"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = text(&o);
    assert!(
        err.contains("not-a-dir/policy") && err.contains("[policy] state_dir") && err.contains("--state-dir DIR"),
        "{err}"
    );
    // The way out works.
    let out = ok(&d.path().join("policy"), &["group", "add", "cameras", "--member", "192.0.2.0/28"]);
    assert!(out.contains("group cameras saved"), "{out}");
}

#[test]
fn conflicting_rules_are_refused_naming_both_and_explain_names_the_deciding_rule() {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path();
    ok(s, &["group", "add", "cameras", "-m", "192.0.2.0/28", "-m", "2001:db8:1::/64"]);
    ok(s, &["group", "add", "lobby", "-m", "192.0.2.8/30"]);
    ok(s, &["group", "add", "sensors", "-m", "198.51.100.0/28"]);
    let out = ok(
        s,
        &[
            "rule",
            "create",
            "--from",
            "cameras",
            "--to",
            "sensors",
            "--proto",
            "tcp",
            "--ports",
            "22",
            "--action",
            "deny",
            "--priority",
            "100",
        ],
    );
    assert!(out.contains("created rule #1"), "{out}");
    // lobby ⊂ cameras, any ⊇ tcp/22, same priority, opposite action: refused, both named.
    let o = gw(
        s,
        &[
            "rule",
            "create",
            "--from",
            "lobby",
            "--to",
            "sensors",
            "--proto",
            "any",
            "--action",
            "allow",
            "--priority",
            "100",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = text(&o);
    assert!(err.contains("conflict"), "{err}");
    assert!(err.contains("the new rule lobby -> sensors any/any allow (priority 100)"), "{err}");
    assert!(err.contains("rule #1 cameras -> sensors tcp/22 deny (priority 100)"), "{err}");
    assert!(!ok(s, &["rule", "list"]).contains("lobby"), "the refused rule was not saved");
    // At another priority it is fine, and the higher one decides.
    ok(
        s,
        &[
            "rule",
            "create",
            "--from",
            "lobby",
            "--to",
            "sensors",
            "--proto",
            "any",
            "--action",
            "allow",
            "--priority",
            "200",
        ],
    );
    let why = ok(s, &["explain", "192.0.2.9", "198.51.100.3", "tcp", "22"]);
    assert!(why.contains("allowed by rule #2 lobby -> sensors any/any allow (priority 200)"), "{why}");
    assert!(why.contains("outranks rule #1 cameras -> sensors tcp/22 deny (priority 100)"), "{why}");
    let why = ok(s, &["explain", "192.0.2.1", "sensors", "tcp", "22"]);
    assert!(why.contains("denied by rule #1"), "{why}");
    let why = ok(s, &["explain", "cameras", "sensors", "udp", "53"]);
    assert!(why.contains("no rule matches"), "{why}");
    let j: serde_json::Value =
        serde_json::from_str(&ok(s, &["--json", "explain", "cameras", "sensors", "tcp", "22"])).unwrap();
    assert_eq!(j["decided_by"]["id"], 1);
    assert_eq!(j["action"], "deny");
    // Updating into a conflict is refused too; bad input says what to write.
    let o = gw(s, &["rule", "update", "2", "--priority", "100"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("rule #1"), "{}", text(&o));
    for (args, hint) in [
        (
            vec!["rule", "create", "--from", "cameras", "--to", "sensors", "--proto", "sctp", "--action", "deny"],
            "tcp, udp, icmp or any",
        ),
        (vec!["rule", "create", "--from", "cameras", "--to", "sensors", "--ports", "9-1", "--action", "deny"], "1-9"),
        (vec!["rule", "create", "--from", "cameras", "--to", "nowhere", "--action", "deny"], "create it first"),
        (vec!["group", "add", "x", "-m", "cam-1"], "aa:bb:cc:dd:ee:ff"),
        (vec!["group", "remove", "sensors"], "delete those rules first"),
        (vec!["rule", "delete", "99"], "no rule #99"),
        (vec!["accept", "s00000000"], "gatewarden policy suggest"),
    ] {
        let o = gw(s, &args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(hint), "{args:?}: {}", text(&o));
    }
    let help = Command::new(bin()).args(["policy", "rule", "create", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("Examples:"));
    ok(s, &["rule", "delete", "1"]);
    assert!(ok(s, &["explain", "192.0.2.1", "sensors", "tcp", "22"]).contains("no rule matches"));
}

fn record(id: u64, dport: u16, t: u64, state: ConnState) -> FlowRecord {
    FlowRecord {
        flow_id: id,
        src: "192.0.2.5".parse().unwrap(),
        dst: "198.51.100.5".parse().unwrap(),
        sport: 40000 + (id % 20000) as u16,
        dport,
        proto: Proto::Tcp,
        first_ns: t * 1_000_000_000,
        last_ns: t * 1_000_000_000 + 5_000_000,
        fwd_packets: 6,
        rev_packets: 5,
        fwd_bytes: 400,
        rev_bytes: 300,
        conn_state: state,
        // As the router reports it: a completed handshake proves the originator.
        src_answered: state == ConnState::SF,
    }
}

fn engine(dir: &Path) -> PolicyEngine {
    let cfg = PolicyConfig { state_dir: dir.to_path_buf(), bucket_s: 10, ..PolicyConfig::default() };
    PolicyEngine::open(&cfg).unwrap()
}

/// The confidence the Beta update predicts for a pattern with `flows`
/// flows (all answered) in 3 buckets after `acc` accepts and `rej` rejects.
fn predicted(flows: u64, acc: u32, rej: u32) -> f64 {
    let evidence = (1.0 - (-(flows as f64) / 10.0).exp()).clamp(0.01, 0.99);
    let mean = (1.0 + f64::from(acc)) / (2.0 + f64::from(acc) + f64::from(rej));
    evidence * mean / (evidence * mean + (1.0 - evidence) * (1.0 - mean))
}

#[test]
fn feedback_moves_confidence_exactly_as_the_beta_update_predicts_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = engine(dir.path());
    for (name, member) in [("cameras", "192.0.2.0/28"), ("sensors", "198.51.100.0/28")] {
        e.add_group(Group { name: name.into(), members: vec![member.into()], description: String::new() }, false)
            .unwrap();
    }
    // Five allow patterns in one context (tcp, cross-group, low volume): 6 flows each over 3 buckets.
    let ports = [80u16, 443, 1883, 5683, 8080];
    let mut id = 0;
    let mut flows = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        for n in 0..6u64 {
            id += 1;
            flows.push(record(id, *port, 1_000 + (n % 3) * 10 + i as u64, ConnState::SF));
        }
    }
    e.observe_batch(&FlowBatch {
        node: "r".into(),
        seq: 1,
        flows,
        hosts: vec![],
        in_iface: String::new(),
        shed: Vec::new(),
    });
    let ctx = context(Action::Allow, Protocol::Tcp, "cameras", "sensors", 6);
    assert_eq!(ctx, "allow/tcp/cross/low");
    let check = |e: &PolicyEngine, acc: u32, rej: u32, remaining: usize| {
        let s = e.suggestions(None);
        assert_eq!(s.len(), remaining, "{s:#?}");
        for s in &s {
            assert_eq!(s.context, ctx);
            assert!(
                (s.confidence - predicted(6, acc, rej)).abs() < 1e-12,
                "{} vs {}",
                s.confidence,
                predicted(6, acc, rej)
            );
            assert!(s.justification.contains("6 flows cameras -> sensors"), "{}", s.justification);
            assert!(s.justification.contains(&format!("accepted {acc} of {}", acc + rej)), "{}", s.justification);
        }
        let c = e.feedback().counts(&ctx);
        assert_eq!((c.alpha, c.beta), (1.0 + f64::from(acc), 1.0 + f64::from(rej)));
        s
    };
    // No answers yet: Beta(1,1), mean ½, confidence = evidence = 1 − e^(−0.6).
    let s = check(&e, 0, 0, 5);
    assert!((s[0].confidence - (1.0 - (-0.6f64).exp())).abs() < 1e-12);
    let by_port = |e: &PolicyEngine, p: u16| {
        e.suggestions(None).into_iter().find(|s| s.rule.port_range.lo == p).map(|s| s.id).unwrap()
    };
    // Scripted answers: accept, accept, reject (checked after each).
    let a = by_port(&e, 1883);
    let rule = e.accept(&a).unwrap();
    assert_eq!((rule.protocol, rule.port_range.lo, rule.action), (Protocol::Tcp, 1883, Action::Allow));
    check(&e, 1, 0, 4);
    let b = by_port(&e, 8080);
    e.accept(&b).unwrap();
    check(&e, 2, 0, 3);
    let r = by_port(&e, 80);
    e.reject(&r).unwrap();
    let before = check(&e, 2, 1, 2);
    // 3/5 = 0.6 posterior mean: confidence = e·0.6 / (e·0.6 + (1−e)·0.4).
    let ev = 1.0 - (-0.6f64).exp();
    assert!((before[0].confidence - combine(ev, 0.6)).abs() < 1e-12);
    // What the monitor does on exit (and every policy.save_interval_s).
    e.save_matrix().unwrap();
    drop(e);

    // Restart: same counts, same confidences, the rejected one stays away, accepted rules stay.
    let e = engine(dir.path());
    let after = check(&e, 2, 1, 2);
    assert_eq!(before, after);
    assert!(after.iter().all(|s| s.id != r && s.id != a && s.id != b));
    let rules = e.rules();
    assert_eq!(rules.len(), 2);
    assert!(rules.iter().all(|r| r.item.comment.contains("flows cameras -> sensors")));
}

/// One flow as router `node` reports it: `src` (a camera) to the sensor on `dport`.
fn reported(node: &str, id: u64, src: &str, dport: u16, t: u64, state: ConnState) -> FlowBatch {
    let mut f = record(id, dport, t, state);
    f.src = src.parse().unwrap();
    FlowBatch { node: node.into(), seq: id, flows: vec![f], hosts: vec![], in_iface: String::new(), shed: Vec::new() }
}

/// Engine with the cameras and sensors groups, fed `batches`.
fn fed(dir: &Path, batches: &[FlowBatch]) -> PolicyEngine {
    let mut e = engine(dir);
    for (name, member) in [("cameras", "192.0.2.0/28"), ("sensors", "198.51.100.0/28")] {
        e.add_group(Group { name: name.into(), members: vec![member.into()], description: String::new() }, false)
            .unwrap();
    }
    for b in batches {
        e.observe_batch(b);
    }
    e
}

/// A fleet router with a stolen certificate (router-3) sends flow batches
/// no other router could contradict: 12 completed SSH sessions from one
/// camera to a sensor (a password-guessing deny for every camera) and
/// answered, recurring connections to tcp/8443 (an allow for every camera,
/// at priority 100, above every suggested deny). router-1 and router-3 both
/// report the cameras' real MQTT. An accepted rule applies to every router,
/// and the justifications never said whose word they rested on. Each now
/// names the routers its evidence came from; the fabricated ones say
/// "evidence from router-3 only", and weigh less than the same flows from
/// a fleet of one router (other routers report cameras -> sensors traffic
/// and saw none of it). The MQTT allow names both.
#[test]
fn a_suggestion_that_rests_on_one_router_of_several_names_it_as_the_only_source() {
    let mut honest = Vec::new();
    for n in 0..6u64 {
        honest.push(reported("router-1", 100 + n, "192.0.2.5", 1883, 1_000 + n * 5, ConnState::SF));
        honest.push(reported("router-3", 200 + n, "192.0.2.6", 1883, 1_001 + n * 5, ConnState::SF));
    }
    let mut forged = Vec::new();
    for n in 0..12u64 {
        forged.push(reported("router-3", 300 + n, "192.0.2.7", 22, 1_040 + n * 2, ConnState::SF));
    }
    for n in 0..6u64 {
        forged.push(reported("router-3", 400 + n, "192.0.2.8", 8443, 1_000 + n * 6, ConnState::SF));
    }
    let dir = tempfile::tempdir().unwrap();
    let e = fed(dir.path(), &[honest.clone(), forged.clone()].concat());
    let s = e.suggestions(None);
    let find = |s: &[gatewarden::policy::Suggestion], action: Action, port: u16| {
        s.iter()
            .find(|x| x.rule.action == action && x.rule.port_range.lo == port && x.rule.port_range.hi == port)
            .cloned()
            .unwrap_or_else(|| panic!("no {action} tcp/{port} suggestion: {s:#?}"))
    };
    let (deny, allow) = (find(&s, Action::Deny, 22), find(&s, Action::Allow, 8443));
    for x in [&deny, &allow] {
        let why = &x.justification;
        assert!(why.contains("evidence from router-3 only"), "{} {why}", x.rule.describe());
        assert!(why.contains("router-1 also reports cameras -> sensors"), "{} {why}", x.rule.describe());
    }
    let mqtt = find(&s, Action::Allow, 1883).justification;
    assert!(mqtt.contains("router-1 (6 flows)") && mqtt.contains("router-3 (6 flows)"), "{mqtt}");
    assert!(!mqtt.contains(" only"), "{mqtt}");

    // The same flows from a fleet of one router: router-3's word is all there is, and says so less loudly.
    let all_r3: Vec<FlowBatch> =
        [honest, forged].concat().into_iter().map(|b| FlowBatch { node: "router-3".into(), ..b }).collect();
    let alone_dir = tempfile::tempdir().unwrap();
    let alone = fed(alone_dir.path(), &all_r3).suggestions(None);
    for (x, y) in [(&deny, find(&alone, Action::Deny, 22)), (&allow, find(&alone, Action::Allow, 8443))] {
        assert!(
            y.justification.contains("evidence from router-3 (") && !y.justification.contains(" only"),
            "{}",
            y.justification
        );
        // Said, not weighted: in a fleet of several sites another router's
        // silence proves nothing, and a weight would let one forged flow
        // halve an honest router's suggestion.
        assert!(
            (x.confidence - y.confidence).abs() < 1e-9,
            "{}: {} with router-1 reporting too, {} in a one-router fleet ({})",
            x.rule.describe(),
            x.confidence,
            y.confidence,
            x.justification
        );
    }
}

/// A review found the one-router weight turned on honest routers: router-2
/// at another site reports one camera's RTSP, and router-1's allow for the
/// cameras' MQTT (0.93) was halved and said router-2 "sent none of it".
#[test]
fn another_sites_router_neither_halves_nor_blames_a_suggestion() {
    let mut site1 = Vec::new();
    for n in 0..6u64 {
        site1.push(reported("router-1", 100 + n, "192.0.2.5", 1883, 1_000 + n * 6, ConnState::SF));
    }
    let site2 = vec![reported("router-2", 500, "192.0.2.6", 554, 1_000, ConnState::SF)];
    let dir = tempfile::tempdir().unwrap();
    let two = fed(dir.path(), &[site1.clone(), site2].concat()).suggestions(None);
    let alone_dir = tempfile::tempdir().unwrap();
    let one = fed(alone_dir.path(), &site1).suggestions(None);
    let allow = |s: &[gatewarden::policy::Suggestion]| {
        s.iter()
            .find(|x| x.rule.action == Action::Allow && x.rule.port_range.lo == 1883)
            .cloned()
            .unwrap_or_else(|| panic!("no allow tcp/1883: {s:#?}"))
    };
    let (a2, a1) = (allow(&two), allow(&one));
    assert!(
        (a2.confidence - a1.confidence).abs() < 1e-9,
        "{} vs {}: {}",
        a2.confidence,
        a1.confidence,
        a2.justification
    );
    assert!(!a2.justification.contains("none of it"), "{}", a2.justification);
}

// ---------------------------------------------------------------- lab

const CAM: &str = "192.0.2.10";
const CAM6: &str = "2001:db8:1::10";
const SEN: &str = "198.51.100.20";
const SEN6: &str = "2001:db8:2::20";

struct Lab {
    cam: Netns,
    sen: Netns,
    rtr: Netns,
    dir: tempfile::TempDir,
    port: u16,
    services: Vec<Guard>,
    daemon: Option<Guard>,
}

fn tools_or_skip(test: &str, tools: &[&str]) -> bool {
    if !require_root(test) {
        return false;
    }
    for t in tools {
        let found = Command::new("sh").args(["-c", &format!("command -v {t} || test -x /usr/sbin/{t}")]).output();
        if !found.map(|o| o.status.success()).unwrap_or(false) {
            let msg = format!("{test} needs {t} (tools/test.sh installs it)");
            if std::env::var_os("CI").is_some() {
                panic!("{msg}");
            }
            eprintln!("SKIPPED {msg}");
            return false;
        }
    }
    true
}

impl Lab {
    /// camera (192.0.2.10, 2001:db8:1::10) ─ router ─ sensor (198.51.100.20, 2001:db8:2::20);
    /// the sensor runs sshd and Mosquitto.
    fn new() -> Lab {
        let cam = Netns::new("cam");
        let sen = Netns::new("sen");
        let rtr = Netns::new("prt");
        link(
            &cam,
            "eth0",
            &[&format!("{CAM}/25"), &format!("{CAM6}/64")],
            &rtr,
            "cam",
            &["192.0.2.1/25", "2001:db8:1::1/64"],
        );
        link(
            &sen,
            "eth0",
            &[&format!("{SEN}/25"), &format!("{SEN6}/64")],
            &rtr,
            "sen",
            &["198.51.100.1/25", "2001:db8:2::1/64"],
        );
        rtr.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        rtr.exec(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
        cam.exec(&["ip", "route", "add", "default", "via", "192.0.2.1"]);
        cam.exec(&["ip", "-6", "route", "add", "default", "via", "2001:db8:1::1"]);
        sen.exec(&["ip", "route", "add", "default", "via", "198.51.100.1"]);
        sen.exec(&["ip", "-6", "route", "add", "default", "via", "2001:db8:2::1"]);
        let mut lab =
            Lab { cam, sen, rtr, dir: tempfile::tempdir().unwrap(), port: free_port(), services: vec![], daemon: None };
        lab.start_services();
        lab
    }

    fn path(&self, n: &str) -> PathBuf {
        self.dir.path().join(n)
    }

    fn start_services(&mut self) {
        let base = self.dir.path().to_path_buf();
        let p = |n: &str| base.join(n).to_str().unwrap().to_string();
        let out =
            Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f", &p("host")]).output().unwrap();
        assert!(out.status.success(), "ssh-keygen: {}", String::from_utf8_lossy(&out.stderr));
        std::fs::write(
            self.path("sshd_config"),
            format!("ListenAddress 0.0.0.0:22\nListenAddress [::]:22\nHostKey {}\nPidFile none\nUsePAM no\nMaxStartups 100\n", p("host")),
        )
        .unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        std::fs::write(self.path("mosquitto.conf"), "listener 1883\nallow_anonymous true\n").unwrap();
        let sshd = if Path::new("/usr/sbin/sshd").exists() { "/usr/sbin/sshd" } else { "sshd" };
        let mosq = if Path::new("/usr/sbin/mosquitto").exists() { "/usr/sbin/mosquitto" } else { "mosquitto" };
        let mut c = self.sen.command(sshd);
        c.args(["-D", "-e", "-f", &p("sshd_config")]).stdout(Stdio::null()).stderr(Stdio::null());
        self.services.push(Guard::spawn(&mut c));
        let mut c = self.sen.command(mosq);
        c.args(["-c", &p("mosquitto.conf")]).stdout(Stdio::null()).stderr(Stdio::null());
        self.services.push(Guard::spawn(&mut c));
        assert!(
            wait_until(Duration::from_secs(20), || self.ssh(SEN) && self.mqtt(SEN)),
            "sshd/mosquitto did not come up"
        );
    }

    /// A real SSH handshake start from the camera: ssh-keyscan gets the sensor's host key.
    fn ssh(&self, to: &str) -> bool {
        let o = self
            .cam
            .command("ssh-keyscan")
            .args(["-T", "2", "-t", "ed25519", to])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).contains("ssh-ed25519")
    }

    /// Camera publishes to the sensor's broker; a subscriber on the sensor receives it.
    fn mqtt(&self, to: &str) -> bool {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let (topic, msg) = (format!("cam/status/{nanos}"), format!("frame-{nanos}"));
        // Retained, on a topic of its own: the subscriber gets it whenever it
        // connects, so its start-up cannot race the publish.
        let pubr = self.cam.command("mosquitto_pub").args(["-h", to, "-t", &topic, "-m", &msg, "-r"]).output().unwrap();
        if !pubr.status.success() {
            return false;
        }
        let out = self
            .sen
            .command("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-t", &topic, "-C", "1", "-W", "5"])
            .stderr(Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains(&msg)
    }

    /// A positive check, retried for 10 s: a loaded machine can be slow to
    /// answer once, and a working path must not fail the test for that.
    /// (Negative checks stay single: a retry would prove nothing more.)
    fn eventually(&self, check: impl FnMut() -> bool) -> bool {
        wait_until(Duration::from_secs(10), check)
    }

    fn start_gatewarden(&mut self, detector: &str) {
        let cfg = format!(
            "node_id = \"policy-lab\"\n[http]\nlisten = \"127.0.0.1:{}\"\njwt_key = \"{}\"\n[capture]\ninterface = \"cam\"\n[enforce]\nenabled = true\n\
[policy]\nstate_dir = \"{}\"\nbucket_s = 1\nsave_interval_s = 1\n[detector]\n{detector}\n",
            self.port,
            self.path("jwt.pem").display(),
            self.path("state").display()
        );
        std::fs::write(self.path("gw.toml"), cfg).unwrap();
        let log = std::fs::File::create(self.path("gw.log")).unwrap();
        let mut c = self.rtr.command(bin().to_str().unwrap());
        c.args(["run", "--role", "all", "--config", self.path("gw.toml").to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(log);
        self.daemon = Some(Guard::spawn(&mut c));
        let up = wait_until(Duration::from_secs(15), || self.api("GET", "/api/policy", None).0 == 200);
        assert!(up, "gatewarden did not start: {}", std::fs::read_to_string(self.path("gw.log")).unwrap_or_default());
    }

    /// curl inside the router namespace; returns (status, JSON body).
    fn api(&self, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let auth = format!("Authorization: Bearer {}", admin_token(&self.path("jwt.pem")));
        let mut args = vec!["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "-X", method, &url, "-H", &auth];
        if let Some(b) = body {
            args.extend(["-H", "Content-Type: application/json", "--data", b]);
        }
        let o = self.rtr.command(args[0]).args(&args[1..]).output().unwrap();
        let t = String::from_utf8_lossy(&o.stdout).to_string();
        let (body, code) = t.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), serde_json::from_str(body).unwrap_or(serde_json::Value::Null))
    }

    /// `gatewarden policy ...` inside the router namespace, on the daemon's state.
    fn cli(&self, args: &[&str]) -> Output {
        let mut c = self.rtr.command(bin().to_str().unwrap());
        c.args(["policy", "--config", self.path("gw.toml").to_str().unwrap()]).args(args);
        c.stdin(Stdio::null()).output().unwrap()
    }

    fn groups_chain(&self) -> String {
        let o = self.rtr.command("nft").args(["list", "chain", "inet", "gatewarden", "groups"]).output().unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("gw.log")).unwrap_or_default()
    }
}

#[test]
fn deny_cameras_to_sensors_tcp22_blocks_ssh_while_mqtt_flows_and_removing_it_restores_ssh() {
    if !tools_or_skip(
        "policy lab",
        &["nft", "sshd", "ssh-keyscan", "mosquitto", "mosquitto_pub", "mosquitto_sub", "curl"],
    ) {
        return;
    }
    let mut lab = Lab::new();
    // A high brute-force threshold: the handful of blocked SSH attempts must not get the camera blocked.
    lab.start_gatewarden("bruteforce_attempts = 1000");
    assert!(lab.eventually(|| lab.ssh(SEN) && lab.ssh(SEN6)), "ssh works before any rule");

    for (args, what) in [
        (vec!["group", "add", "cameras", "-m", "192.0.2.0/25", "-m", "2001:db8:1::/64"], "group cameras saved"),
        (vec!["group", "add", "sensors", "-m", "198.51.100.0/25", "-m", "2001:db8:2::/64"], "group sensors saved"),
        (
            vec![
                "rule",
                "create",
                "--from",
                "cameras",
                "--to",
                "sensors",
                "--proto",
                "tcp",
                "--ports",
                "22",
                "--action",
                "deny",
                "--priority",
                "100",
            ],
            "created rule #1",
        ),
    ] {
        let o = lab.cli(&args);
        assert!(o.status.success() && text(&o).contains(what), "{args:?}: {}", text(&o));
        assert!(text(&o).contains("applied to nftables"), "{}", text(&o));
    }
    let chain = lab.groups_chain();
    assert!(chain.contains("@grp_cameras4") && chain.contains("tcp dport 22") && chain.contains("drop"), "{chain}");

    assert!(!lab.ssh(SEN), "ssh camera → sensor is denied (IPv4)");
    assert!(!lab.ssh(SEN6), "… and over IPv6");
    assert!(lab.eventually(|| lab.mqtt(SEN)), "MQTT camera → sensor still flows through the router");
    assert!(lab.eventually(|| lab.mqtt(SEN6)), "… over IPv6 too");
    let o = lab.cli(&["explain", CAM, SEN, "tcp", "22"]);
    assert!(text(&o).contains("denied by rule #1 cameras -> sensors tcp/22 deny (priority 100)"), "{}", text(&o));
    let (code, e) = lab.api("GET", &format!("/api/policy/explain?src={CAM}&dst={SEN}&proto=tcp&port=1883"), None);
    assert_eq!(code, 200);
    assert!(e["decided_by"].is_null(), "{e}");

    // Removing the rule through the monitor's API: the monitor publishes, the router applies.
    let (code, body) = lab.api("DELETE", "/api/policy/rules/1", None);
    assert_eq!(code, 200, "{body}");
    assert!(wait_until(Duration::from_secs(10), || lab.ssh(SEN)), "ssh is back once the rule is gone: {}", lab.log());
    assert!(lab.eventually(|| lab.ssh(SEN6)));
    assert!(!lab.groups_chain().contains("dport 22"), "{}", lab.groups_chain());
    assert!(lab.eventually(|| lab.mqtt(SEN)));
    // The API refuses a conflicting rule, naming both.
    let deny = r#"{"source_group":"cameras","destination_group":"sensors","protocol":"tcp","port_range":"1883","action":"deny","priority":7}"#;
    assert_eq!(lab.api("POST", "/api/policy/rules", Some(deny)).0, 201);
    let allow = r#"{"source_group":"cameras","destination_group":"sensors","protocol":"any","port_range":"any","action":"allow","priority":7}"#;
    let (code, body) = lab.api("POST", "/api/policy/rules", Some(allow));
    assert_eq!(code, 409, "{body}");
    let msg = body["error"].as_str().unwrap_or_default();
    assert!(
        msg.contains("the new rule cameras -> sensors any/any allow (priority 7)") && msg.contains("rule #2"),
        "{msg}"
    );
}

#[test]
fn mqtt_traffic_gives_an_allow_suggestion_with_flow_counts_and_an_nmap_scan_gives_a_deny_suggestion() {
    if !tools_or_skip(
        "policy lab",
        &["nft", "sshd", "ssh-keyscan", "mosquitto", "mosquitto_pub", "mosquitto_sub", "curl", "nmap"],
    ) {
        return;
    }
    let mut lab = Lab::new();
    lab.start_gatewarden("");
    for g in [
        r#"{"name":"cameras","members":["192.0.2.0/25","2001:db8:1::/64"]}"#,
        r#"{"name":"sensors","members":["198.51.100.0/25","2001:db8:2::/64"]}"#,
    ] {
        let (code, body) = lab.api("POST", "/api/policy/groups", Some(g));
        assert_eq!(code, 201, "{body}");
    }
    // Benign: the camera publishes its status every ~0.7 s (one MQTT connection each).
    for i in 0..8 {
        let o = lab
            .cam
            .command("mosquitto_pub")
            .args(["-h", SEN, "-t", "cam/status", "-m", &format!("ok {i}")])
            .output()
            .unwrap();
        assert!(o.status.success());
        std::thread::sleep(Duration::from_millis(700));
    }
    let mut allow = serde_json::Value::Null;
    let found = wait_until(Duration::from_secs(15), || {
        let (_, s) = lab.api("GET", "/api/policy/suggestions", None);
        if let Some(x) = s["suggestions"].as_array().and_then(|v| {
            v.iter()
                .find(|x| {
                    x["rule"]["action"] == "allow"
                        && x["rule"]["port_range"] == "1883"
                        && x["rule"]["protocol"] == "tcp"
                })
                .cloned()
        }) {
            allow = x;
            return true;
        }
        false
    });
    assert!(found, "no allow suggestion for MQTT: {}\n{}", lab.api("GET", "/api/policy/matrix", None).1, lab.log());
    // The justification cites the flow count the matrix holds (read both after the traffic settled).
    std::thread::sleep(Duration::from_millis(1500));
    let (_, m) = lab.api("GET", "/api/policy/matrix", None);
    let cell = m["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["src"] == "cameras" && c["dst"] == "sensors" && c["port"] == 1883)
        .cloned()
        .unwrap();
    let flows = cell["cell"]["flows"].as_u64().unwrap();
    assert!(flows >= 8, "{cell}");
    let (_, s) = lab.api("GET", "/api/policy/suggestions", None);
    allow = s["suggestions"].as_array().unwrap().iter().find(|x| x["id"] == allow["id"]).cloned().unwrap();
    let why = allow["justification"].as_str().unwrap();
    assert!(why.starts_with(&format!("{flows} flows cameras -> sensors on tcp/1883")), "{why}");
    assert!(why.contains(&format!("{} answered", cell["cell"]["answered"])), "{why}");
    let c = allow["confidence"].as_f64().unwrap();
    assert!(c > 0.0 && c < 1.0, "{allow}");
    eprintln!("allow suggestion: {allow}");

    // Accepting applies it: the rule is created, published and in nftables.
    let id = allow["id"].as_str().unwrap().to_string();
    let (code, body) = lab.api("POST", &format!("/api/policy/suggestions/{id}/accept"), Some("{}"));
    assert_eq!(code, 200, "{body}");
    assert!(
        wait_until(Duration::from_secs(10), || lab.groups_chain().contains("dport 1883")),
        "accepted rule not in nftables: {}",
        lab.groups_chain()
    );
    assert!(lab.eventually(|| lab.mqtt(SEN)));

    // A scan between the groups: real nmap SYN scan of 1000 ports.
    let o = lab
        .cam
        .command("nmap")
        .args(["-sS", "-Pn", "-n", "-T4", "--max-retries", "0", "-p", "1-1000", SEN])
        .output()
        .unwrap();
    assert!(o.status.success(), "nmap: {}", text(&o));
    let mut deny = serde_json::Value::Null;
    let found = wait_until(Duration::from_secs(20), || {
        let (_, s) = lab.api("GET", "/api/policy/suggestions", None);
        if let Some(x) = s["suggestions"].as_array().and_then(|v| {
            v.iter()
                .find(|x| {
                    x["rule"]["action"] == "deny"
                        && x["rule"]["source_group"] == "cameras"
                        && x["rule"]["destination_group"] == "sensors"
                })
                .cloned()
        }) {
            deny = x;
            return true;
        }
        false
    });
    assert!(
        found,
        "no deny suggestion after the scan: {}\n{}",
        lab.api("GET", "/api/policy/matrix", None).1,
        lab.log()
    );
    eprintln!("deny suggestion: {deny}");
    let why = deny["justification"].as_str().unwrap();
    assert!(why.contains("TCP ports probed"), "{why}");
    // It ranks below the accepted allow (priority), so MQTT would keep flowing if it were accepted.
    assert!(deny["rule"]["priority"].as_i64().unwrap() < 100, "{deny}");
    // None of the suggestions conflicts with the current rules.
    let (_, s) = lab.api("GET", "/api/policy/suggestions", None);
    assert!(s["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .all(|x| x["rule"]["port_range"] != "1883" || x["rule"]["action"] != "allow"));
}

/// An admin token signed with the key at `key` (created if missing); the
/// test's config names the same file as `[http] jwt_key`, so the API accepts it.
fn admin_token(key: &std::path::Path) -> String {
    let out = Command::new(bin())
        .args(["token", "issue", "--role", "admin", "--ttl", "1h", "--key", key.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "token issue: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

// ---------------------------------------------------------------- API and page

fn request(addr: &str, token: &str, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
    let (code, _, body) = common::request(method, addr, path, Some(token), body).unwrap();
    (code, serde_json::from_str(&body).unwrap_or(serde_json::Value::Null))
}

#[test]
fn the_api_creates_lists_updates_and_deletes_and_the_page_renders_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let cfg = dir.path().join("gw.toml");
    std::fs::write(
        &cfg,
        format!(
            "node_id = \"mon\"\n[http]\nlisten = \"{addr}\"\njwt_key = \"{}\"\n[policy]\nstate_dir = \"{}\"\n\
[[policy.groups]]\nname = \"internet\"\nmembers = [\"0.0.0.0/0\", \"::/0\"]\n",
            dir.path().join("jwt.pem").display(),
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let mut c = Command::new(bin());
    c.args(["run", "--role", "monitor", "--config", cfg.to_str().unwrap()]).stdout(Stdio::null()).stderr(Stdio::null());
    let _daemon = Guard::spawn(&mut c);
    let token = admin_token(&dir.path().join("jwt.pem"));
    assert!(common::wait_http_ok(&addr, "/healthz", Duration::from_secs(10)), "monitor did not start");

    // Create.
    for g in [
        r#"{"name":"cameras","members":["192.0.2.0/28","2001:db8:1::/64"],"description":"door cams"}"#,
        r#"{"name":"sensors","members":["198.51.100.0/28","02:00:00:00:00:07"]}"#,
    ] {
        let (code, body) = request(&addr, &token, "POST", "/api/policy/groups", Some(g));
        assert_eq!(code, 201, "{body}");
    }
    let (code, _) =
        request(&addr, &token, "POST", "/api/policy/groups", Some(r#"{"name":"cameras","members":["192.0.2.1"]}"#));
    assert_eq!(code, 409, "an existing group is not silently replaced");
    let (code, body) =
        request(&addr, &token, "POST", "/api/policy/groups", Some(r#"{"name":"bad name","members":["x"]}"#));
    assert_eq!(code, 400);
    assert!(body["error"].as_str().unwrap().contains("1 to 24 characters"), "{body}");
    let rule = r#"{"source_group":"cameras","destination_group":"sensors","protocol":"tcp","port_range":"22","action":"deny","priority":100}"#;
    let (code, body) = request(&addr, &token, "POST", "/api/policy/rules", Some(rule));
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["rule"]["id"], 1);
    let rule2 = r#"{"source_group":"cameras","destination_group":"internet","protocol":"any","port_range":"any","action":"deny","priority":5}"#;
    assert_eq!(request(&addr, &token, "POST", "/api/policy/rules", Some(rule2)).0, 201);
    // Writes without JSON are refused.
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    {
        use std::io::{Read, Write};
        write!(s, "POST /api/policy/rules HTTP/1.0\r\nAuthorization: Bearer {token}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 3\r\n\r\na=b").unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).unwrap();
        assert!(buf.starts_with("HTTP/1.1 415") || buf.starts_with("HTTP/1.0 415"), "{buf}");
    }
    // The dashboard's access control guards the policy API: no token 401, a viewer may read but not write.
    assert_eq!(request(&addr, "", "POST", "/api/policy/rules", Some(rule2)).0, 401);
    let viewer = Command::new(bin())
        .args(["token", "issue", "--role", "viewer", "--key", dir.path().join("jwt.pem").to_str().unwrap()])
        .output()
        .unwrap();
    let viewer = String::from_utf8(viewer.stdout).unwrap().trim().to_string();
    assert_eq!(request(&addr, &viewer, "DELETE", "/api/policy/rules/1", None).0, 403);
    assert_eq!(request(&addr, &viewer, "GET", "/api/policy", None).0, 200);
    // List.
    let (code, body) = request(&addr, &token, "GET", "/api/policy", None);
    assert_eq!(code, 200);
    let rules = body["rules"].as_array().unwrap();
    assert_eq!(rules.iter().map(|r| r["id"].as_u64().unwrap()).collect::<Vec<_>>(), vec![1, 2], "priority order");
    let groups = body["groups"].as_array().unwrap();
    assert_eq!(groups.iter().find(|g| g["name"] == "internet").unwrap()["origin"], "config");
    // Update.
    let upd = r#"{"source_group":"cameras","destination_group":"sensors","protocol":"tcp","port_range":"22-23","action":"deny","priority":150}"#;
    let (code, body) = request(&addr, &token, "PUT", "/api/policy/rules/1", Some(upd));
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["rule"]["port_range"], "22-23");
    let (code, body) =
        request(&addr, &token, "GET", "/api/policy/explain?src=192.0.2.3&dst=sensors&proto=tcp&port=23", None);
    assert_eq!(code, 200);
    assert_eq!(body["decided_by"]["id"], 1, "{body}");
    assert!(
        body["why"].as_str().unwrap().contains("rule #1 cameras -> sensors tcp/22-23 deny (priority 150)"),
        "{body}"
    );
    // A group in use cannot go; config groups cannot be removed here.
    assert_eq!(request(&addr, &token, "DELETE", "/api/policy/groups/sensors", None).0, 409);
    assert_eq!(request(&addr, &token, "DELETE", "/api/policy/groups/internet", None).0, 409);

    // The page in headless Chromium at phone width, under its strict CSP: it
    // renders, its form works (handlers bound from /static/policy.js), and
    // Chromium reports no CSP violation.
    webdriver::assert_page_headers(
        &addr,
        "/policy",
        &[("/static/policy.js", "text/javascript"), ("/static/policy.css", "text/css")],
    );
    if webdriver::browser_available() {
        let (_driver, wd) = webdriver::start_browser(dir.path());
        wd.watch_csp();
        wd.set_window(390, 1400);
        wd.goto(&format!("http://{addr}/policy#token={token}"));
        wd.wait_js(
            "the rules table",
            "return document.getElementById('rules').textContent.includes('cameras → sensors')",
            Duration::from_secs(10),
        );
        let rules = wd.js("return document.getElementById('rules').textContent");
        assert!(rules.as_str().unwrap().contains("tcp/22-23"), "{rules}");
        wd.wait_js(
            "a 3×3 heat map of the groups",
            "return document.querySelectorAll('#matrix rect').length === 9",
            Duration::from_secs(5),
        );
        assert!(wd
            .js("return document.getElementById('suggestions').textContent")
            .as_str()
            .unwrap()
            .contains("No suggestions yet"));
        // A suggestion's confidence bar (width through the CSSOM), drawn by the page's own code;
        // checked in the same turn, before the next refresh redraws the empty list.
        let bar = wd.js("drawSuggestions([{id: 's1', confidence: 0.73, accepted_similar: 2, answered_similar: 3,
               justification: 'seen 40 flows', rule: {action: 'allow', source_group: 'cameras',
               destination_group: 'sensors', protocol: 'tcp', port_range: '1883', priority: 100}}]);
             const i = document.querySelector('#suggestions .bar i');
             return [i.style.width, document.querySelectorAll('#suggestions button').length]");
        assert_eq!(bar, json!(["73%", 2]), "the suggestion card with its bar and two buttons");
        // The narrow inputs keep their width from the stylesheet, not a style attribute.
        assert_eq!(wd.js("return getComputedStyle(document.querySelector('input[name=port]')).flexGrow"), json!("0"));
        // The name pattern is a valid regular expression (Chromium compiles it with the `v` flag),
        // so the form refuses what the API would refuse.
        assert_eq!(
            wd.js("const n = document.querySelector('#group-form input[name=name]'); n.value = 'bad name';
                   const bad = n.checkValidity(); n.value = 'lights'; return [bad, n.checkValidity()]"),
            json!([false, true])
        );
        // The group form, as an operator would use it.
        wd.js("const f = document.getElementById('group-form'); f.elements.name.value = 'lights';
               f.elements.members.value = '203.0.113.16/29'; f.querySelector('button').click(); return true");
        wd.wait_js(
            "the new group in the table",
            "return document.getElementById('groups').textContent.includes('203.0.113.16/29')",
            Duration::from_secs(10),
        );
        assert_eq!(wd.js("return document.getElementById('msg').textContent"), json!("group saved"));
        let (code, body) = request(&addr, &token, "GET", "/api/policy/groups", None);
        assert_eq!(code, 200);
        assert!(body["groups"].as_array().unwrap().iter().any(|g| g["name"] == "lights"), "{body}");
        let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("policy-page.png");
        wd.screenshot(&shot);
        assert_eq!(wd.csp_violations(), Vec::<String>::new(), "CSP violations on the policy page");
        assert_eq!(wd.console_errors(), Vec::<String>::new(), "console errors on the policy page");
        wd.assert_inline_refused();
        // The page's own remove button (a handler bound with addEventListener).
        wd.js("document.querySelector('#groups button[aria-label=\"remove group lights\"]').click(); return true");
        wd.wait_js(
            "the group to go",
            "return !document.getElementById('groups').textContent.includes('lights')",
            Duration::from_secs(10),
        );
        assert_eq!(wd.csp_violations(), Vec::<String>::new(), "CSP violations while removing a group");
    }

    // Delete.
    let (code, body) = request(&addr, &token, "DELETE", "/api/policy/rules/1", None);
    assert_eq!(code, 200, "{body}");
    assert_eq!(request(&addr, &token, "DELETE", "/api/policy/rules/1", None).0, 404);
    assert_eq!(request(&addr, &token, "DELETE", "/api/policy/rules/2", None).0, 200);
    assert_eq!(request(&addr, &token, "DELETE", "/api/policy/groups/sensors", None).0, 200);
    let (_, body) = request(&addr, &token, "GET", "/api/policy/rules", None);
    assert!(body["rules"].as_array().unwrap().is_empty());
}

#[test]
fn a_mac_member_is_resolved_through_the_routers_neighbour_table_and_follows_a_new_address() {
    if !tools_or_skip(
        "policy lab",
        &["nft", "sshd", "ssh-keyscan", "mosquitto", "mosquitto_pub", "mosquitto_sub", "curl"],
    ) {
        return;
    }
    let mut lab = Lab::new();
    lab.start_gatewarden("bruteforce_attempts = 1000");
    // The camera talks over both families, so the router has ARP and NDP entries for it.
    assert!(lab.eventually(|| lab.ssh(SEN) && lab.ssh(SEN6)));
    let link = String::from_utf8_lossy(&lab.cam.exec(&["ip", "-o", "link", "show", "eth0"]).stdout).to_string();
    let mac = link.split_whitespace().skip_while(|w| *w != "link/ether").nth(1).unwrap().to_string();
    for args in [
        vec!["group", "add", "doorcam", "-m", &mac],
        vec!["group", "add", "sensors", "-m", "198.51.100.0/25", "-m", "2001:db8:2::/64"],
        vec![
            "rule",
            "create",
            "--from",
            "doorcam",
            "--to",
            "sensors",
            "--proto",
            "tcp",
            "--ports",
            "22",
            "--action",
            "deny",
            "--priority",
            "100",
        ],
    ] {
        let o = lab.cli(&args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
    }
    let set = |fam: &str| {
        let o = lab
            .rtr
            .command("nft")
            .args(["list", "set", "inet", "gatewarden", &format!("grp_doorcam{fam}")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert!(set("4").contains(CAM), "{}", set("4"));
    assert!(set("6").contains(CAM6), "{}", set("6"));
    assert!(!lab.ssh(SEN) && !lab.ssh(SEN6), "ssh from the MAC's addresses is denied");
    assert!(lab.eventually(|| lab.mqtt(SEN)), "MQTT still flows");
    let o = lab.cli(&["explain", CAM, SEN, "tcp", "22"]);
    assert!(text(&o).contains("denied by rule #1 doorcam -> sensors"), "{}", text(&o));

    // The camera takes a second address and uses it: the router's enforcement
    // thread sees the new neighbour entry and re-applies within seconds.
    // Adjacent addresses merge into one interval (192.0.2.10/31): ask the kernel about the element.
    let has_11 = || {
        lab.rtr
            .command("nft")
            .args(["get", "element", "inet", "gatewarden", "grp_doorcam4", "{ 192.0.2.11 }"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    assert!(!has_11(), "not a member before the camera uses it");
    lab.cam.exec(&["ip", "addr", "add", "192.0.2.11/25", "dev", "eth0"]);
    let new_addr_in_set = wait_until(Duration::from_secs(15), || {
        let _ = lab.cam.command("ping").args(["-c", "1", "-W", "1", "-I", "192.0.2.11", "198.51.100.1"]).output();
        has_11()
    });
    assert!(new_addr_in_set, "{}\n{}", set("4"), lab.log());
}

#[test]
fn a_policy_made_at_the_monitor_reaches_a_router_on_another_node_sealed_over_mqtt() {
    if !tools_or_skip("policy fleet", &["nft", "mosquitto", "curl"]) {
        return;
    }
    // One namespace holds the broker, a monitor node and a router node, so the
    // router's nftables are not the host's. Only the router programs nftables:
    // a rule in its table must have come over MQTT.
    let ns = Netns::new("flt");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_string();
    let gwc = |args: &[&str]| {
        let o = Command::new(bin()).args(args).output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", text(&o));
    };
    gwc(&["pki", "init", "--dir", &d]);
    gwc(&["pki", "issue", "router-1", "--role", "router", "--dir", &d]);
    gwc(&["pki", "issue", "mon-1", "--role", "monitor", "--dir", &d]);
    gwc(&["pki", "mosquitto-conf", "--dir", &d, "--port", "8883", "--bind", "127.0.0.1", "--user", "root"]);
    let mosq = if Path::new("/usr/sbin/mosquitto").exists() { "/usr/sbin/mosquitto" } else { "mosquitto" };
    let mut c = ns.command(mosq);
    c.args(["-c", &format!("{d}/mosquitto/mosquitto.conf")]).stdout(Stdio::null()).stderr(Stdio::null());
    let _broker = Guard::spawn(&mut c);
    let node = |id: &str, port: u16, extra: &str| {
        let path = dir.path().join(format!("{id}.toml"));
        std::fs::write(
            &path,
            format!(
                "node_id = \"{id}\"\n[http]\nlisten = \"127.0.0.1:{port}\"\njwt_key = \"{d}/jwt.pem\"\n[mqtt]\nbroker = \"127.0.0.1:8883\"\nca = \"{d}/ca.crt\"\n\
cert = \"{d}/nodes/{id}.crt\"\nkey = \"{d}/nodes/{id}.key\"\nspool_dir = \"{d}/spool-{id}\"\nresend_after_ms = 500\n{extra}"
            ),
        )
        .unwrap();
        path
    };
    let mon_cfg = node("mon-1", 8080, &format!("[policy]\nstate_dir = \"{d}/policy\"\n"));
    let rtr_cfg = node("router-1", 8081, "[enforce]\nenabled = true\n");
    let start = |cfg: &Path, role: &str, log: &str| {
        let mut c = ns.command(bin().to_str().unwrap());
        c.args(["run", "--role", role, "--config", cfg.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join(log)).unwrap());
        Guard::spawn(&mut c)
    };
    let _mon = start(&mon_cfg, "monitor", "mon.log");
    let _rtr = start(&rtr_cfg, "router", "rtr.log");
    let auth = format!("Authorization: Bearer {}", admin_token(&std::path::Path::new(&d).join("jwt.pem")));
    let curl = |method: &str, url: &str, body: Option<&str>| -> (u16, serde_json::Value) {
        let mut args = vec!["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method, url, "-H", &auth];
        if let Some(b) = body {
            args.extend(["-H", "Content-Type: application/json", "--data", b]);
        }
        let o = ns.command("curl").args(&args).output().unwrap();
        let t = String::from_utf8_lossy(&o.stdout).to_string();
        let (body, code) = t.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), serde_json::from_str(body).unwrap_or(serde_json::Value::Null))
    };
    let logs = || {
        format!(
            "monitor:\n{}\nrouter:\n{}",
            std::fs::read_to_string(dir.path().join("mon.log")).unwrap_or_default(),
            std::fs::read_to_string(dir.path().join("rtr.log")).unwrap_or_default()
        )
    };
    assert!(
        // Generous: both daemons start while the rest of the suite loads the machine (a 20 s wait once ran out).
        wait_until(Duration::from_secs(60), || curl("GET", "http://127.0.0.1:8080/api/policy", None).0 == 200
            && curl("GET", "http://127.0.0.1:8081/healthz", None).0 == 200),
        "{}",
        logs()
    );
    for g in [
        r#"{"name":"cameras","members":["192.0.2.0/28","2001:db8:1::/64"]}"#,
        r#"{"name":"sensors","members":["198.51.100.0/28"]}"#,
    ] {
        assert_eq!(curl("POST", "http://127.0.0.1:8080/api/policy/groups", Some(g)).0, 201);
    }
    let rule = r#"{"source_group":"cameras","destination_group":"sensors","protocol":"tcp","port_range":"22","action":"deny","priority":100}"#;
    assert_eq!(curl("POST", "http://127.0.0.1:8080/api/policy/rules", Some(rule)).0, 201);
    let chain = || {
        let o = ns.command("nft").args(["list", "chain", "inet", "gatewarden", "groups"]).output().unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert!(
        wait_until(Duration::from_secs(30), || chain().contains("tcp dport 22") && chain().contains("@grp_cameras4")),
        "the router never applied the policy: {}\n{}",
        chain(),
        logs()
    );
    // It arrived sealed: the router opened envelopes and refused none.
    let (_, st) = curl("GET", "http://127.0.0.1:8081/api/status", None);
    let counters = st["counters"].as_object().cloned().unwrap_or_default();
    let opened: f64 = counters
        .iter()
        .filter(|(k, _)| k.starts_with("gatewarden_secure_opened_total"))
        .map(|(_, v)| v.as_f64().unwrap())
        .sum();
    assert!(opened >= 1.0, "{counters:?}");
}

/// The policy judges brute-force alerts by how many attempts their source
/// completed (`policy::proof`), against bars copied from the detector's
/// defaults: the policy crate sits below the detector and cannot read them.
/// This pins the copies, so a changed default cannot silently leave the bar
/// where a forger's SYNs (or a real guesser) would be judged wrongly.
#[test]
fn the_policys_brute_force_bars_follow_the_detectors_defaults() {
    use gatewarden::detect::config::DetectorConfig;
    use gatewarden::detect::heuristics::LOGIN_PORTS;
    use gatewarden::policy::proof;
    let d = DetectorConfig::default();
    assert_eq!(
        proof::GUESS_COMPLETED as u32,
        d.bruteforce_attempts.div_ceil(2),
        "half the attempts that make an alert"
    );
    assert_eq!(proof::GUESS_WINDOW_NS, d.window_s * 1_000_000_000, "in the detector's window");
    assert_eq!(proof::LOGIN_WINDOW_NS, d.bruteforce_window_s * 1_000_000_000, "the login-session rule's window");
    assert!(
        proof::LOGIN_COMPLETED as u32 <= d.bruteforce_sessions && proof::LOGIN_COMPLETED >= 2,
        "a login-session guesser that made an alert completed at least {} sessions",
        proof::LOGIN_COMPLETED
    );
    assert_eq!(proof::LOGIN_PORTS, LOGIN_PORTS, "the same login services");
}
