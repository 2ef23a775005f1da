//! The dashboard in a real browser: Debian's headless Chromium driven over
//! the W3C WebDriver protocol by `chromedriver` (a ~100-line client below,
//! plain HTTP/JSON, so no async stack comes with it).
//!
//! A realtime replay starts with quiet traffic and scans after a few seconds,
//! so the page is open before the alert exists: the alert must arrive over
//! Server-Sent Events without a reload. An admin acknowledges it from the
//! page; a viewer's page offers no button and the server answers 403.
//! Screenshots go to `$CARGO_TARGET_TMPDIR/browser/`.
//!
//! Both run under the page's strict Content Security Policy (no inline script
//! or style, issue #14): Chromium must report no violation while the pages
//! load and work, and must refuse inline code injected into them.
//!
//! Every page (issue #18) at 1 400 and 390 px after a replay: nothing
//! scrolls sideways, no console error, the charts plot the capture's own
//! timeline with its alerts, the Model page shows the card's numbers as text,
//! an attacker's incident runs from first packet to block; with
//! `UPDATE_SCREENSHOTS=1` the screenshots go to `docs/screenshots/`.
//!
//! Needs `chromium` and `chromium-driver` (tools/test.sh installs them);
//! missing, the test fails under CI and says SKIPPED elsewhere.

mod common;
mod webdriver;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, free_port, pcap, tcp4, wait_http_ok, Guard};
use serde_json::{json, Value};
use webdriver::{assert_page_headers, browser_available, start_browser};

/// Quiet traffic for the first 20 s of capture time, then two sources scan
/// 300 ports each. The quiet lead-in is the page's time to open before the
/// scan: Chromium, the page and WebDriver share 2 vCPUs with the other browser
/// test in CI.
const QUIET_S: f64 = 20.0;

fn capture(dir: &Path) -> PathBuf {
    let p = dir.join("scan-later.pcap");
    std::fs::write(&p, pcap(&records())).unwrap();
    p
}

/// [`capture`]'s packets.
fn records() -> Vec<(f64, Vec<u8>)> {
    let mut recs = Vec::new();
    for i in 0..(QUIET_S * 10.0) as u16 {
        let t = 100.0 + i as f64 * 0.1;
        recs.push((t, tcp4([192, 0, 2, 20], [198, 51, 100, 80], 40000 + i, 443, 0x02)));
        recs.push((t + 0.01, tcp4([198, 51, 100, 80], [192, 0, 2, 20], 443, 40000 + i, 0x12)));
    }
    for (k, src) in [[203, 0, 113, 66], [203, 0, 113, 67]].into_iter().enumerate() {
        for i in 0..300u16 {
            let t = 100.0 + QUIET_S + 0.5 + k as f64 * 0.5 + i as f64 * 0.001;
            recs.push((t, tcp4(src, [192, 0, 2, 10], 50000, 1 + i, 0x02)));
            recs.push((t + 0.0001, tcp4([192, 0, 2, 10], src, 1 + i, 50000, 0x14)));
        }
    }
    recs.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Keep the capture going a little so the scan's batch is cut.
    for i in 0..20u16 {
        let t = 100.0 + QUIET_S + 2.0 + i as f64 * 0.1;
        recs.push((t, tcp4([192, 0, 2, 20], [198, 51, 100, 80], 41000 + i, 443, 0x02)));
    }
    recs
}

/// An Ethernet + IPv6 + TCP frame with the given flags (no payload).
fn tcp6(src: std::net::Ipv6Addr, dst: std::net::Ipv6Addr, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd];
    f.extend([0x60, 0, 0, 0, 0, 20, 6, 64]);
    f.extend(src.octets());
    f.extend(dst.octets());
    f.extend(sport.to_be_bytes());
    f.extend(dport.to_be_bytes());
    f.extend([0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    f
}

/// A long IPv6 address: the widest thing a table cell holds.
const SCANNER6: &str = "2001:db8:ffff:ffff:ffff:ffff:ffff:66";

/// [`capture`] plus a third scanner with a long IPv6 address.
fn capture_with_v6(dir: &Path) -> PathBuf {
    let mut recs = records();
    let (src, dst): (std::net::Ipv6Addr, std::net::Ipv6Addr) =
        (SCANNER6.parse().unwrap(), "2001:db8::10".parse().unwrap());
    for i in 0..300u16 {
        let t = 100.0 + QUIET_S + 1.5 + i as f64 * 0.001;
        recs.push((t, tcp6(src, dst, 50000, 1 + i, 0x02)));
        recs.push((t + 0.0001, tcp6(dst, src, 1 + i, 50000, 0x14)));
    }
    recs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let p = dir.join("scan-v6.pcap");
    std::fs::write(&p, pcap(&recs)).unwrap();
    p
}

fn token(cfg: &Path, role: &str) -> String {
    let out = Command::new(bin())
        .args(["token", "issue", "--role", role, "--ttl", "10m", "--sub", &format!("{role}-user"), "-c"])
        .arg(cfg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A monitor config on a free port with a data directory (its token key), and
/// where screenshots go.
struct Page {
    dir: tempfile::TempDir,
    out: PathBuf,
    addr: String,
    cfg: PathBuf,
}

fn page_setup() -> Page {
    let dir = tempfile::tempdir().unwrap();
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&out).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let cfg = dir.path().join("gatewarden.toml");
    std::fs::write(
        &cfg,
        format!(
            "node_id = \"gw-test\"\n[http]\nlisten = \"{addr}\"\n[monitor]\ndata_dir = \"{}\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    Page { dir, out, addr, cfg }
}

fn api(addr: &str, method: &str, path: &str, token: &str) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "{method} {path} HTTP/1.0\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n").unwrap();
    // Bytes, not text: an evidence pcap is binary.
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let buf = String::from_utf8_lossy(&raw);
    let (head, body) = buf.split_once("\r\n\r\n").unwrap();
    (head.split_whitespace().nth(1).unwrap().parse().unwrap(), serde_json::from_str(body).unwrap_or(Value::Null))
}

/// No browser outlives its test, even when its WebDriver session is never
/// closed (a test that panics mid-command, a DELETE that times out): the
/// driver's process group goes with it. Each CI run used to leave two
/// Chromium process trees running for the rest of the suite.
#[test]
fn a_dropped_driver_leaves_no_chromium_behind() {
    if !browser_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (driver, wd) = start_browser(dir.path());
    let pgid = driver.pgid().to_string();
    let in_group = || {
        let out = Command::new("pgrep").args(["-g", &pgid, "-l"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert!(in_group().contains("chrom"), "the session's Chromium runs in the driver's group: {}", in_group());
    // The session is never deleted, as when a test dies mid-command.
    std::mem::forget(wd);
    drop(driver);
    let start = Instant::now();
    while !in_group().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "left running after the driver was dropped:\n{}",
            in_group()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn dashboard_shows_a_live_alert_admin_acknowledges_viewer_cannot() {
    if !browser_available() {
        return;
    }
    let Page { dir, out, addr, cfg } = page_setup();
    let admin = token(&cfg, "admin");
    let viewer = token(&cfg, "viewer");

    // The browser first (it takes a moment), then the replay.
    let (_driver, wd) = start_browser(dir.path());
    wd.watch_csp();

    let _gw = Guard::spawn(
        Command::new(bin())
            .args(["replay", "--speed", "realtime", "--serve", &addr, "-c"])
            .arg(&cfg)
            .arg(capture(dir.path()))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    assert!(wait_http_ok(&addr, "/healthz", Duration::from_secs(10)));
    assert_page_headers(&addr, "/", &[("/static/status.js", "text/javascript"), ("/static/status.css", "text/css")]);
    let opened = Instant::now();
    wd.goto(&format!("http://{addr}/#token={admin}"));
    wd.wait_js(
        "the live stream",
        "return document.getElementById('conn').textContent === 'live'",
        Duration::from_secs(10),
    );
    assert_eq!(wd.js("return document.getElementById('who').textContent"), json!("admin-user (admin)"));
    assert_eq!(wd.csp_violations(), Vec::<String>::new(), "CSP violations on load");
    let errors = wd.console_errors();
    assert!(errors.is_empty(), "console errors on load: {errors:?}");
    assert_eq!(
        wd.js("return document.querySelectorAll('#alerts tr[data-alert-id]').length"),
        json!(0),
        "the page must be open before the scan (it was {:?} after opening)",
        opened.elapsed()
    );
    // A marker that a reload would wipe.
    wd.js("window.__noReload = 42; location.hash = '#alerts'; return true");
    let id = wd.wait_js(
        "the scan's alert to appear without a reload",
        "const r = document.querySelector('#alerts tr[data-alert-id]'); return r && r.textContent.includes('203.0.113.66') ? r.dataset.alertId : null",
        Duration::from_secs(QUIET_S as u64 + 20),
    );
    let id = id.as_str().unwrap().to_string();
    assert_eq!(wd.js("return window.__noReload"), json!(42), "the page was reloaded");
    assert!(wd.js("return document.getElementById('v-alerts').classList.contains('on')").as_bool().unwrap());
    wd.screenshot(&out.join("alerts-admin.png"));

    // The admin acknowledges it from the page.
    wd.js(&format!("document.querySelector('#alerts tr[data-alert-id=\"{id}\"] button[data-act=acknowledge]').click(); return true"));
    wd.wait_js(
        "the row to show acknowledged",
        &format!("const r = document.querySelector('#alerts tr[data-alert-id=\"{id}\"]'); return r && r.dataset.state === 'acknowledged'"),
        Duration::from_secs(5),
    );
    let (code, v) = api(&addr, "GET", "/api/alerts?state=acknowledged", &viewer);
    assert_eq!(code, 200);
    assert_eq!(v["alerts"][0]["gatewarden"]["id"].to_string(), id);
    assert_eq!(wd.console_errors(), Vec::<String>::new(), "console errors while acknowledging");
    // The model view's bars: widths set through the CSSOM, the cell's through the stylesheet.
    wd.js("location.hash = '#model'; return true");
    let widths = wd.wait_js(
        "the alerts-by-kind bars",
        "const b = document.querySelector('#bykind td.half .bar'); if (!b) return null;
         const td = b.parentElement, table = td.closest('table');
         return [b.style.width, Math.round(100 * td.getBoundingClientRect().width / table.getBoundingClientRect().width)]",
        Duration::from_secs(10),
    );
    assert_eq!(widths[0], json!("100%"), "the biggest kind's bar is full width: {widths}");
    assert!((45..=55).contains(&widths[1].as_i64().unwrap()), "the bar cell is half the table: {widths}");
    wd.js("location.hash = '#overview'; return true");
    wd.wait_js(
        "the traffic chart to have data",
        "return document.getElementById('t-packets').textContent !== '0'",
        Duration::from_secs(5),
    );
    std::thread::sleep(Duration::from_millis(1200));
    wd.screenshot(&out.join("overview-admin.png"));
    // The scanner is in "current blocks"; the admin's unblock button lifts it
    // (no enforcement runs in a replay, so only the monitor's list changes).
    wd.wait_js(
        "the scanner in current blocks",
        "return !!document.querySelector('#blocks tr[data-block=\"203.0.113.66\"] button')",
        Duration::from_secs(5),
    );
    wd.js("document.querySelector('#blocks tr[data-block=\"203.0.113.66\"] button').click(); return true");
    let said = wd.wait_js(
        "the unblock's answer",
        "const t = document.getElementById('msg').textContent; return t.includes('203.0.113.66') ? t : null",
        Duration::from_secs(5),
    );
    assert!(said.as_str().unwrap().contains("removed from the monitor's list"), "{said}");
    wd.wait_js(
        "the row to leave current blocks",
        "return !document.querySelector('#blocks tr[data-block=\"203.0.113.66\"]')",
        Duration::from_secs(5),
    );
    assert_eq!(wd.console_errors(), Vec::<String>::new(), "console errors while unblocking");
    assert_eq!(wd.csp_violations(), Vec::<String>::new(), "CSP violations while the admin worked");

    // The viewer: read-only buttons, and the server refuses the write anyway.
    let (code, v) = api(&addr, "GET", "/api/alerts?state=new", &viewer);
    assert_eq!(code, 200);
    let new_id = v["alerts"][0]["gatewarden"]["id"].as_u64().expect("another alert still new");
    wd.goto(&format!("http://{addr}/#token={viewer}"));
    wd.wait_js(
        "the viewer's live stream",
        "return document.getElementById('conn').textContent === 'live'",
        Duration::from_secs(10),
    );
    assert_eq!(wd.js("return document.getElementById('who').textContent"), json!("viewer-user (viewer)"));
    wd.js("location.hash = '#alerts'; return true");
    wd.wait_js(
        "the alert list for the viewer",
        &format!("return !!document.querySelector('#alerts tr[data-alert-id=\"{new_id}\"]')"),
        Duration::from_secs(5),
    );
    assert_eq!(
        wd.js(&format!("return document.querySelector('#alerts tr[data-alert-id=\"{new_id}\"] button[data-act=acknowledge]').disabled")),
        json!(true),
        "a viewer gets no working acknowledge button"
    );
    assert!(wd
        .js("return document.getElementById('alerts-note').textContent")
        .as_str()
        .unwrap()
        .contains("admin token"));
    wd.screenshot(&out.join("alerts-viewer.png"));
    assert_eq!(wd.csp_violations(), Vec::<String>::new(), "CSP violations on the viewer's page");
    assert_eq!(wd.console_errors(), Vec::<String>::new(), "console errors on the viewer's page");
    let status = wd.js_async(&format!(
        "const done = arguments[arguments.length - 1];
         fetch('/api/alerts/{new_id}/acknowledge', {{method: 'POST', headers: {{Authorization: 'Bearer ' + localStorage.getItem('gw_token')}}}})
           .then(r => done(r.status), e => done(String(e)));"
    ));
    assert_eq!(status, json!(403), "the server refuses a viewer's write");
    let (_, v) = api(&addr, "GET", "/api/alerts?state=new&limit=1000", &viewer);
    assert!(v["alerts"].as_array().unwrap().iter().any(|a| a["gatewarden"]["id"] == new_id), "still new");

    // Phone width: no horizontal scrolling of the page itself.
    wd.set_window(390, 844);
    wd.js("location.hash = '#overview'; return true");
    std::thread::sleep(Duration::from_millis(500));
    let overflow = wd.js("return document.documentElement.scrollWidth - document.documentElement.clientWidth");
    assert!(overflow.as_i64().unwrap() <= 0, "the page scrolls sideways at phone width by {overflow} px");
    wd.screenshot(&out.join("overview-phone.png"));
    assert_eq!(wd.csp_violations(), Vec::<String>::new(), "CSP violations at phone width");
    // The browser logs the refused write (403) itself; nothing else may go wrong.
    let errors: Vec<String> = wd.console_errors().into_iter().filter(|e| !e.contains("status of 403")).collect();
    assert_eq!(errors, Vec::<String>::new(), "console errors at phone width");
    // And the policy holds: inline code injected into the page is refused.
    wd.assert_inline_refused();
    eprintln!("screenshots in {}", out.display());
}

#[test]
fn training_page_uploads_a_model_and_settings_page_applies_thresholds_in_a_real_browser() {
    if !browser_available() {
        return;
    }
    let Page { dir, out, addr, cfg } = page_setup();
    let admin = token(&cfg, "admin");
    // The model and a card renamed, as an operator would pick them from tools/train/'s output.
    let mut card: Value =
        serde_json::from_str(&std::fs::read_to_string(common::root().join("models/host-mlp.card.json")).unwrap())
            .unwrap();
    card["name"] = json!("host-mlp-from-the-browser");
    let card_path = dir.path().join("new.card.json");
    std::fs::write(&card_path, card.to_string()).unwrap();
    let (_driver, wd) = start_browser(dir.path());
    wd.watch_csp();
    let _gw = Guard::spawn(
        Command::new(bin()).args(["run", "--role", "all", "-c"]).arg(&cfg).stdout(Stdio::null()).stderr(Stdio::null()),
    );
    assert!(wait_http_ok(&addr, "/healthz", Duration::from_secs(10)));
    wd.goto(&format!("http://{addr}/#token={admin}"));
    wd.wait_js(
        "the live stream",
        "return document.getElementById('conn').textContent === 'live'",
        Duration::from_secs(10),
    );

    wd.js("location.hash = '#training'; return true");
    wd.wait_js(
        "the running model",
        "return document.getElementById('tr-current').textContent.includes('gatewarden-host-mlp')",
        Duration::from_secs(5),
    );
    wd.choose_file("#tr-tflite", &common::root().join("models/host-mlp.tflite"));
    wd.choose_file("#tr-card", &card_path);
    wd.js("document.getElementById('tr-send').click(); return true");
    wd.wait_js(
        "the detector's answer on the page",
        "return document.getElementById('tr-results').textContent.includes('loaded')",
        Duration::from_secs(15),
    );
    // The page stops waiting once every answer is in, and says how it ended.
    wd.wait_js(
        "the upload's outcome",
        "return document.getElementById('tr-result').textContent.includes('host-mlp-from-the-browser loaded by the detectors')",
        Duration::from_secs(5),
    );
    assert!(wd
        .js("return document.getElementById('tr-current').textContent")
        .as_str()
        .unwrap()
        .contains("host-mlp-from-the-browser"));
    wd.screenshot(&out.join("training-admin.png"));

    wd.js("location.hash = '#settings'; return true");
    wd.wait_js(
        "the settings form",
        "return !!document.querySelector('#set-detector input[name=block_ttl_s]')",
        Duration::from_secs(5),
    );
    // An out-of-range value is refused with the reason, shown on the page.
    wd.js("document.querySelector('#set-detector input[name=model_threshold]').value = '3'; document.getElementById('set-save').click(); return true");
    wd.wait_js(
        "the refusal",
        "return document.getElementById('set-result').textContent.includes('detector.model_threshold')",
        Duration::from_secs(5),
    );
    wd.js("document.querySelector('#set-detector input[name=model_threshold]').value = '0.9'; document.querySelector('#set-detector input[name=block_ttl_s]').value = '1234'; document.getElementById('set-allow').value = '192.0.2.200/32, 2001:db8:ff::/64'; document.getElementById('set-save').click(); return true");
    wd.wait_js(
        "the node's answer",
        "return document.getElementById('set-results').textContent.includes('verdict TTL 1234 s')",
        Duration::from_secs(15),
    );
    // The browser logs the refused save (422) itself; nothing else may go wrong.
    let errors: Vec<String> = wd.console_errors().into_iter().filter(|e| !e.contains("status of 422")).collect();
    assert_eq!(errors, Vec::<String>::new(), "console errors on the training and settings pages");
    assert_eq!(wd.csp_violations(), Vec::<String>::new(), "CSP violations on the training and settings pages");
    wd.screenshot(&out.join("settings-admin.png"));
    let (code, s) = api(&addr, "GET", "/api/settings", &admin);
    assert_eq!(code, 200);
    assert_eq!(s["detector"]["block_ttl_s"], 1234, "{s}");
    assert_eq!(s["allowlist"], json!(["192.0.2.200/32", "2001:db8:ff::/64"]), "{s}");
}

/// `{:.4}` without trailing zeros, as the page's `Number(x.toFixed(4))` prints it.
fn js_fixed4(x: f64) -> String {
    let s = format!("{x:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[test]
fn model_page_shows_calibration_and_input_ranges_as_a_summary_and_tables_at_1400px() {
    if !browser_available() {
        return;
    }
    let Page { dir, out, addr, cfg } = page_setup();
    let viewer = token(&cfg, "viewer");
    let card: Value = serde_json::from_str(gatewarden::detect::model::DEFAULT_CARD).unwrap();
    let (_driver, wd) = start_browser(dir.path());
    wd.watch_csp();
    wd.set_window(1400, 900);
    let _gw = Guard::spawn(
        Command::new(bin()).args(["run", "--role", "all", "-c"]).arg(&cfg).stdout(Stdio::null()).stderr(Stdio::null()),
    );
    assert!(wait_http_ok(&addr, "/healthz", Duration::from_secs(10)));
    assert_page_headers(&addr, "/", &[("/static/model.js", "text/javascript"), ("/static/model.css", "text/css")]);
    wd.goto(&format!("http://{addr}/#token={viewer}"));
    wd.wait_js("the page to load", "return !!document.getElementById('card')", Duration::from_secs(10));
    wd.js("location.hash = '#model'; return true");
    let n_inputs = card["ood"]["features"].as_array().unwrap().len();
    wd.wait_js(
        "the OOD table",
        &format!("return document.querySelectorAll('#card table.mc-ood tbody tr').length === {n_inputs}"),
        Duration::from_secs(10),
    );
    let text = wd.js("return document.getElementById('card').innerText").as_str().unwrap().to_string();
    // A summary a person reads, not a JSON dump.
    assert!(!text.contains("{\"") && !text.contains("\":"), "JSON on the page:\n{text}");
    assert!(text.contains("expected calibration error"), "{text}");
    let cal = &card["calibration"];
    let ece = wd.js("return document.querySelector('#card .mc-ece').textContent").as_str().unwrap().to_string();
    assert_eq!(
        ece,
        format!(
            "{} → {}",
            js_fixed4(cal["ece_before"].as_f64().unwrap()),
            js_fixed4(cal["ece_after"].as_f64().unwrap())
        )
    );
    assert!(text.contains("abstains"), "{text}");
    for s in cal["held_out_sessions"].as_array().unwrap() {
        assert!(text.contains(s.as_str().unwrap()), "held-out session {s} not on the page");
    }
    // One row per input, in the card's order, with its range.
    let first = wd.js(
        "return [...document.querySelectorAll('#card table.mc-ood tbody tr:first-child td')].map(td => td.textContent)",
    );
    assert_eq!(first[0], card["ood"]["features"][0]["column"], "{first}");
    assert_eq!(first.as_array().unwrap().len(), 5, "{first}");
    // Held-out precision per class.
    let classes = wd.js("return document.querySelectorAll('#card table.mc-classes tbody tr').length");
    assert_eq!(classes, json!(card["classes"].as_array().unwrap().len()));
    // No horizontal scrolling at 1 400 px: not the page, not the card.
    let widths = wd.js("const c = document.getElementById('card'), d = document.documentElement;
         return [d.scrollWidth, d.clientWidth, c.scrollWidth, c.clientWidth, window.innerWidth]");
    let w: Vec<i64> = widths.as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    assert!(w[4] >= 1380 && w[4] <= 1400, "window {widths}");
    assert!(w[0] <= w[1] && w[2] <= w[3], "horizontal scrolling at 1400 px: {widths}");
    wd.screenshot(&out.join("model-viewer.png"));
    assert_eq!(wd.console_errors(), Vec::<String>::new(), "console errors on the model page");
    assert_eq!(wd.csp_violations(), Vec::<String>::new());
}

/// `1234567` as the page's `toLocaleString("en")` prints it: `1,234,567`.
fn en_int(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A share as the Model page prints it (`(100 * x).toFixed(1) + " %"`).
fn pct(x: f64) -> String {
    format!("{:.1} %", 100.0 * x)
}

/// Where the screenshots go: `docs/screenshots/` when `UPDATE_SCREENSHOTS=1`
/// (how the README's and docs' pictures are made), else the test's own dir.
fn screenshot_dir(out: &Path) -> PathBuf {
    if std::env::var_os("UPDATE_SCREENSHOTS").is_some_and(|v| v == "1") {
        let d = common::root().join("docs/screenshots");
        std::fs::create_dir_all(&d).unwrap();
        d
    } else {
        out.to_path_buf()
    }
}

/// The views of the dashboard, each with a script that returns true once it has drawn its data.
const VIEWS: &[(&str, &str)] = &[
    ("overview", "return document.getElementById('c-alerts').dataset.clock === 'capture' && !!document.querySelector('#latest tr[data-latest]')"),
    ("alerts", "return !!document.querySelector('#alerts tr[data-alert-id]')"),
    ("incidents&ip=203.0.113.66", "return document.querySelectorAll('#incident .steps li').length >= 4 && !!document.querySelector('#incidents tr[data-incident]')"),
    ("model", "return !!document.querySelector('#card table.mc-ood tbody tr') && !!document.querySelector('#bykind td')"),
    ("training", "return !document.getElementById('tr-current').classList.contains('muted') || document.getElementById('tr-current').textContent !== 'loading…'"),
    ("settings", "return !!document.querySelector('#set-detector input')"),
    ("nodes", "return !!document.querySelector('#nodes tr td')"),
];

/// What scrolls sideways: the page (scrollWidth over innerWidth) and, inside
/// it, every panel, table box and the model card.
const OVERFLOW: &str = "const d = document.documentElement;
  const inner = [...document.querySelectorAll('section, .scroll, #card, table')]
    .filter(e => e.offsetParent !== null && e.scrollWidth > e.clientWidth + 1)
    .map(e => (e.id || e.className || e.tagName) + ' ' + e.scrollWidth + '>' + e.clientWidth);
  return {page: d.scrollWidth, inner_width: window.innerWidth, inner: inner};";

#[test]
fn every_page_fits_at_1400_and_390_px_and_shows_the_replay_timeline_model_card_and_incident() {
    if !browser_available() {
        return;
    }
    let Page { dir, out, addr, cfg } = page_setup();
    let shots = screenshot_dir(&out);
    let admin = token(&cfg, "admin");
    let card: Value =
        serde_json::from_str(&std::fs::read_to_string(common::root().join("models/host-mlp.card.json")).unwrap())
            .unwrap();
    let (_driver, wd) = start_browser(dir.path());
    wd.watch_csp();
    let _gw = Guard::spawn(
        Command::new(bin())
            .args(["replay", "--serve", &addr, "-c"])
            .arg(&cfg)
            .arg(capture_with_v6(dir.path()))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    assert!(wait_http_ok(&addr, "/healthz", Duration::from_secs(10)));
    let started = Instant::now();
    let status = loop {
        let (code, s) = api(&addr, "GET", "/api/status", &admin);
        assert_eq!(code, 200, "{s}");
        if s["replay"]["state"] == "finished" {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the replay did not finish: {s}");
        std::thread::sleep(Duration::from_millis(200));
    };
    // The API says which time range to plot: the capture's own (100 s .. 123.9 s after the epoch).
    let tl = &status["timeline"];
    assert_eq!(tl["clock"], "capture", "{tl}");
    assert_eq!(tl["from"], 100.0, "{tl}");
    assert!((tl["to"].as_f64().unwrap() - 123.9).abs() < 0.01, "{tl}");
    let alerts_total = status["alerts_total"].as_u64().unwrap();
    assert!(alerts_total >= 3, "the three scanners raise alerts: {status}");
    let blocks = status["blocks"].to_string();
    assert!(blocks.contains(SCANNER6), "the IPv6 scanner is in the tables whose width is checked: {blocks}");
    let plotted: u64 = tl["alerts"].as_array().unwrap().iter().map(|a| a.as_u64().unwrap()).sum();
    assert_eq!(plotted, alerts_total, "every alert of the capture is in its timeline: {tl}");

    wd.set_window(1400, 900);
    wd.goto(&format!("http://{addr}/#token={admin}"));
    wd.wait_js(
        "the live stream",
        "return document.getElementById('conn').textContent === 'live'",
        Duration::from_secs(10),
    );

    // Overview: the charts plot the capture's time range and its alerts.
    wd.js("location.hash = '#overview'; return true");
    wd.wait_js("the capture timeline on the charts", VIEWS[0].1, Duration::from_secs(10));
    let chart = wd.js("const c = document.getElementById('c-alerts'), t = document.getElementById('c-traffic');
         const g = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
         let red = 0; for (let i = 0; i < g.length; i += 4) if (g[i] > 200 && g[i + 1] < 120 && g[i + 2] < 120) red++;
         return {from: Number(c.dataset.from), to: Number(c.dataset.to), sum: Number(c.dataset.sum), red: red,
                 yticks: c.dataset.yticks, xticks: c.dataset.xticks, traffic_sum: Number(t.dataset.sum),
                 traffic_clock: t.dataset.clock, traffic_yticks: t.dataset.yticks,
                 heading: document.getElementById('h-alerts').textContent}");
    assert_eq!(chart["from"], 100.0, "{chart}");
    assert!(chart["to"].as_f64().unwrap() >= 122.0, "{chart}");
    assert_eq!(chart["sum"].as_u64(), Some(alerts_total), "the alerts chart plots every alert: {chart}");
    assert!(chart["red"].as_u64().unwrap() > 20, "alert bars drawn on the canvas: {chart}");
    assert_eq!(chart["traffic_clock"], "capture", "{chart}");
    assert!(chart["traffic_sum"].as_f64().unwrap() > 0.0, "{chart}");
    assert!(chart["heading"].as_str().unwrap().contains("capture time"), "{chart}");
    for key in ["yticks", "traffic_yticks"] {
        let ticks: Vec<f64> =
            chart[key].as_str().unwrap().split(' ').map(|t| t.parse().unwrap_or_else(|_| panic!("{chart}"))).collect();
        assert!(ticks.len() >= 2 && ticks[0] == 0.0, "{key}: {chart}");
        assert!(ticks.windows(2).all(|w| w[1] > w[0]), "{key}: distinct, rising ticks (not \"1, 1, 0\"): {chart}");
    }
    let xticks = chart["xticks"].as_str().unwrap();
    assert!(xticks.starts_with("00:01:") && xticks.split(' ').count() >= 2, "capture-time (UTC) time axis: {chart}");

    // Model page: the card's numbers as text.
    wd.js("location.hash = '#model'; return true");
    wd.wait_js("the model card", VIEWS[3].1, Duration::from_secs(10));
    let text = wd.js("return document.getElementById('card').innerText").as_str().unwrap().to_string();
    assert!(!text.contains("{\"") && !text.contains("\":"), "JSON on the page:\n{text}");
    let vm = &card["validation_metrics"];
    let mut want: Vec<String> =
        vec![card["architecture"].as_str().unwrap().to_string(), pct(vm["row_accuracy"].as_f64().unwrap())];
    for (k, p) in vm["per_class"].as_object().unwrap() {
        want.push(k.clone());
        want.push(en_int(p["support"].as_u64().unwrap()));
        want.push(pct(p["recall"].as_f64().unwrap()));
        if let Some(x) = p["precision"].as_f64() {
            want.push(pct(x));
        }
    }
    for (k, n) in card["training_data"]["train_rows"].as_object().unwrap() {
        want.push(format!("{} {k}", en_int(n.as_u64().unwrap())));
    }
    for (_, g) in vm["held_out_groups"].as_object().unwrap() {
        want.push(js_fixed4(g["ece_after"].as_f64().unwrap()));
        want.push(en_int(g["rows"].as_u64().unwrap()));
    }
    for (k, s) in vm["lab_scenarios"].as_object().unwrap() {
        want.push(k.clone());
        want.push(en_int(s["attack_rows"].as_u64().unwrap()));
    }
    for f in card["feature_schema"]["columns"].as_array().unwrap() {
        want.push(f.as_str().unwrap().to_string());
    }
    want.push(format!("{} of {}", en_int(245), en_int(vm["guarded"]["rows"].as_u64().unwrap())));
    want.push(format!("T = {}", (card["calibration"]["temperature"].as_f64().unwrap() * 1000.0).round() / 1000.0));
    want.push(card["tflite_sha256"].as_str().unwrap().to_string());
    let missing: Vec<&String> = want.iter().filter(|w| !text.contains(w.as_str())).collect();
    assert!(missing.is_empty(), "the card's numbers missing from the Model page: {missing:?}\n{text}");
    // The derived confusion counts: scan rows called right = recall × rows.
    let scan = &vm["per_class"]["scan"];
    let right = (scan["recall"].as_f64().unwrap() * scan["support"].as_f64().unwrap()).round() as u64;
    let row = wd.js("return [...document.querySelectorAll('#card table.mc-confusion tbody tr')].map(r => r.innerText)");
    assert!(row.to_string().contains(&en_int(right)), "scan's correct rows {right} in {row}");
    // Bars: precision/recall widths are the numbers.
    let bar =
        wd.js("return document.querySelector('#card table.mc-classes tbody tr:first-child .mc-bar.mc-r').style.width");
    assert_eq!(bar, json!(format!("{}%", vm["per_class"]["benign"]["recall"].as_f64().unwrap() * 100.0)));

    wd.js("document.querySelector('#card table.mc-classes').scrollIntoView(); return true");
    std::thread::sleep(Duration::from_millis(200));
    wd.screenshot_scaled(&shots.join("model-charts-1400.png"), 0.75);
    wd.js("window.scrollTo(0, 0); return true");

    // Incident view of a scanner: first packet → detection → block, evidence link.
    wd.js("location.hash = '#incidents&ip=203.0.113.66'; return true");
    wd.wait_js("the incident", VIEWS[2].1, Duration::from_secs(10));
    let steps = wd.js("return [...document.querySelectorAll('#incident .steps li')].map(li => li.innerText)");
    let steps: Vec<String> = steps.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
    assert!(steps[0].starts_with("First packet") && steps[0].contains("1970-01-01 00:02:00 UTC"), "{steps:?}");
    assert!(steps[1].starts_with("Detected") && steps[1].contains("port_scan"), "{steps:?}");
    assert!(steps[2].contains("not enforced (a replay)"), "{steps:?}");
    assert!(steps[3].starts_with("Dropped") && steps[3].contains("a replay enforces nothing"), "{steps:?}");
    let (_, inc) = api(&addr, "GET", "/api/incidents/203.0.113.66", &admin);
    let first_id = inc["detected"]["gatewarden"]["id"].as_u64().unwrap();
    let href = wd.js(&format!(
        "return document.querySelector('#incident a[data-evidence=\"{first_id}\"]').getAttribute('href')"
    ));
    assert_eq!(href, json!(format!("/api/alerts/{first_id}/pcap")));
    wd.js(&format!("document.querySelector('#incident a[data-evidence=\"{first_id}\"]').click(); return true"));
    let said = wd.wait_js(
        "the evidence answer",
        "const t = document.getElementById('msg').textContent; return t.includes('evidence') ? t : null",
        Duration::from_secs(5),
    );
    // Without evidence for the alert (or a monitor that keeps none: 405), the page says so.
    let (code, _) = api(&addr, "GET", &format!("/api/alerts/{first_id}/pcap"), &admin);
    if code == 404 || code == 405 {
        assert!(said.as_str().unwrap().starts_with(&format!("no evidence kept for alert {first_id}")), "{said}");
    } else {
        assert_eq!(code, 200, "{said}");
        assert!(said.as_str().unwrap().starts_with(&format!("evidence pcap of alert {first_id} saved")), "{said}");
    }
    wd.js("document.getElementById('msg').textContent = ''; return true");
    let errors: Vec<String> = wd
        .console_errors()
        .into_iter()
        .filter(|e| !(e.contains("/pcap") && (e.contains("status of 404") || e.contains("status of 405"))))
        .collect();
    assert_eq!(errors, Vec::<String>::new(), "console errors on the way");

    // Every page at both widths: no sideways scrolling, no console errors, no CSP violation.
    for (w, h, scale) in [(1400u32, 900u32, 0.75), (390, 844, 1.0)] {
        wd.set_window(w, h);
        for (view, ready) in VIEWS {
            wd.js(&format!("location.hash = '#{view}'; window.scrollTo(0, 0); return true"));
            wd.wait_js(&format!("{view} at {w} px"), ready, Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(300));
            let o = wd.js(OVERFLOW);
            assert!(o["page"].as_i64() <= o["inner_width"].as_i64(), "{view} scrolls sideways at {w} px: {o}");
            assert_eq!(o["inner"], json!([]), "{view}: a panel scrolls sideways at {w} px");
            let name = view.split('&').next().unwrap();
            wd.screenshot_scaled(&shots.join(format!("{name}-{w}.png")), scale);
        }
        assert_eq!(wd.csp_violations(), Vec::<String>::new(), "CSP violations at {w} px");
        let errors = wd.console_errors();
        assert_eq!(errors, Vec::<String>::new(), "console errors at {w} px");
    }

    // The policy page needs the policy engine, which a replay does not run: a
    // node running every role, as an operator would start it.
    // (Leave the dashboard first: its live stream would log the replay's end as an error.)
    wd.goto("about:blank");
    drop(_gw);
    let pol = page_setup();
    let pol_admin = token(&pol.cfg, "admin");
    let _node = Guard::spawn(
        Command::new(bin())
            .args(["run", "--role", "all", "-c"])
            .arg(&pol.cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    assert!(wait_http_ok(&pol.addr, "/healthz", Duration::from_secs(10)));
    for (w, h, scale) in [(1400u32, 900u32, 0.75), (390, 844, 1.0)] {
        wd.set_window(w, h);
        wd.goto(&format!("http://{}/policy#token={pol_admin}", pol.addr));
        wd.wait_js(
            "the policy page",
            "return document.getElementById('matrix').childElementCount > 0",
            Duration::from_secs(10),
        );
        std::thread::sleep(Duration::from_millis(300));
        let o = wd.js(OVERFLOW);
        assert!(o["page"].as_i64() <= o["inner_width"].as_i64(), "policy scrolls sideways at {w} px: {o}");
        assert_eq!(o["inner"], json!([]), "policy: a panel scrolls sideways at {w} px");
        wd.screenshot_scaled(&shots.join(format!("policy-{w}.png")), scale);
        assert_eq!(wd.csp_violations(), Vec::<String>::new(), "CSP violations on the policy page at {w} px");
        assert_eq!(wd.console_errors(), Vec::<String>::new(), "console errors on the policy page at {w} px");
    }
    eprintln!("screenshots in {}", shots.display());
}
