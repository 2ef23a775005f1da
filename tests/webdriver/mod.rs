//! A small W3C WebDriver client for headless Chromium (Debian's `chromium` and
//! `chromium-driver`), shared by the browser tests (`tests/browser.rs`,
//! `tests/policy.rs`): plain HTTP/JSON, so no async stack comes with it.
//!
//! It can also watch a page for Content Security Policy violations from the
//! first byte on: [`WebDriver::watch_csp`] installs a `securitypolicyviolation`
//! listener through the DevTools protocol before any page script runs.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{free_port, Guard};
use serde_json::{json, Value};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Records CSP violations in `window.__csp` (see [`WebDriver::watch_csp`]).
const CSP_WATCH: &str = "window.__csp = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__csp.push(e.effectiveDirective + ' refused ' + (e.blockedURI || 'inline') + ' at ' + (e.sourceFile || '?') + ':' + e.lineNumber + ' ' + (e.sample || ''));
}, true);";

/// One W3C WebDriver session on a local chromedriver.
pub struct WebDriver {
    addr: String,
    session: String,
}

pub fn wd_http(addr: &str, method: &str, path: &str, body: Option<&Value>) -> Value {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("chromedriver at {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // Read by Content-Length: chromedriver may keep the connection open.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        let n = s.read(&mut chunk).unwrap();
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap()));
            if let Some(len) = len {
                if buf.len() >= end + 4 + len {
                    buf.truncate(end + 4 + len);
                    break;
                }
            }
        }
        if n == 0 {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let (_, body) = text.split_once("\r\n\r\n").unwrap_or(("", &text));
    serde_json::from_str(body).unwrap_or_else(|e| panic!("chromedriver said non-JSON ({e}): {text}"))
}

impl WebDriver {
    pub fn new(addr: &str, profile: &Path) -> WebDriver {
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         "--disable-dev-shm-usage", "--window-size=1280,1000",
                         format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let v = wd_http(addr, "POST", "/session", Some(&caps));
        let session =
            v["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no WebDriver session: {v}")).to_string();
        WebDriver { addr: addr.to_string(), session }
    }
    pub fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let v = wd_http(&self.addr, method, &format!("/session/{}{path}", self.session), body.as_ref());
        if let Some(err) = v["value"].get("error") {
            panic!("WebDriver {method} {path}: {err}: {}", v["value"]["message"]);
        }
        v["value"].clone()
    }
    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({"url": url})));
    }
    pub fn js(&self, script: &str) -> Value {
        self.cmd("POST", "/execute/sync", Some(json!({"script": script, "args": []})))
    }
    /// Async script: the last argument is the callback.
    pub fn js_async(&self, script: &str) -> Value {
        self.cmd("POST", "/execute/async", Some(json!({"script": script, "args": []})))
    }
    pub fn wait_js(&self, what: &str, script: &str, timeout: Duration) -> Value {
        let start = Instant::now();
        loop {
            let v = self.js(script);
            if !v.is_null() && v != json!(false) {
                return v;
            }
            assert!(start.elapsed() < timeout, "waited {timeout:?} for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    /// Console entries of level SEVERE since the last call.
    pub fn console_errors(&self) -> Vec<String> {
        let v = self.cmd("POST", "/se/log", Some(json!({"type": "browser"})));
        v.as_array()
            .unwrap_or(&vec![])
            .iter()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }
    pub fn screenshot(&self, path: &Path) {
        use base64ct::{Base64, Encoding};
        let b64 = self.cmd("GET", "/screenshot", None);
        let png = Base64::decode_vec(b64.as_str().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
    /// A PNG of the viewport scaled by `scale` (through the DevTools
    /// protocol), small enough to keep in the repository (docs/screenshots/).
    pub fn screenshot_scaled(&self, path: &Path, scale: f64) {
        use base64ct::{Base64, Encoding};
        // The clip is in page coordinates: the part of the page in view.
        let v = self.js("return [window.scrollX, window.scrollY, window.innerWidth, window.innerHeight]");
        let v = self.cdp(
            "Page.captureScreenshot",
            json!({"format": "png", "clip": {"x": v[0], "y": v[1], "width": v[2], "height": v[3], "scale": scale}}),
        );
        let png = Base64::decode_vec(v["data"].as_str().expect("a screenshot")).unwrap();
        std::fs::write(path, png).unwrap();
    }
    /// Chooses `path` in the file input `css`, as a user picking a file would.
    pub fn choose_file(&self, css: &str, path: &Path) {
        let el = self.cmd("POST", "/element", Some(json!({"using": "css selector", "value": css})));
        let id =
            el.as_object().and_then(|o| o.values().next()).and_then(Value::as_str).expect("element id").to_string();
        self.cmd("POST", &format!("/element/{id}/value"), Some(json!({"text": path.to_str().unwrap()})));
    }
    pub fn set_window(&self, w: u32, h: u32) {
        self.cmd("POST", "/window/rect", Some(json!({"width": w, "height": h})));
    }
    /// A DevTools protocol command (chromedriver's `goog/cdp/execute`).
    pub fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.cmd("POST", "/goog/cdp/execute", Some(json!({"cmd": cmd, "params": params})))
    }
    /// From the next page load on, records every CSP violation in `window.__csp`:
    /// the listener is installed before any of the page's own scripts runs, so a
    /// violation while the page loads is seen too.
    pub fn watch_csp(&self) {
        self.cdp("Page.addScriptToEvaluateOnNewDocument", json!({"source": CSP_WATCH}));
    }
    /// The CSP violations since the page loaded. Panics when the watcher is not
    /// on the page: a test must not pass because nothing was watching.
    pub fn csp_violations(&self) -> Vec<String> {
        let v = self.js("return window.__csp === undefined ? null : window.__csp");
        let list = v.as_array().unwrap_or_else(|| panic!("no CSP watcher on this page: call watch_csp before goto"));
        list.iter().map(|x| x.as_str().unwrap_or_default().to_string()).collect()
    }
    /// Shows the page enforces a CSP without inline code: an inline script and a
    /// style attribute injected now do nothing, and the watcher reports both.
    /// Clears the record and the browser console of them afterwards.
    pub fn assert_inline_refused(&self) {
        self.js(
            "window.__csp = []; window.__inlineRan = false;
             const s = document.createElement('script'); s.textContent = 'window.__inlineRan = true'; document.body.append(s);
             const d = document.createElement('div'); d.setAttribute('style', 'color: rgb(255, 0, 0)'); document.body.append(d);
             window.__styled = getComputedStyle(d).color; d.remove(); s.remove(); return true",
        );
        self.wait_js("the two violations to be reported", "return window.__csp.length >= 2", Duration::from_secs(5));
        assert_eq!(self.js("return window.__inlineRan"), json!(false), "an injected inline script ran");
        assert_ne!(self.js("return window.__styled"), json!("rgb(255, 0, 0)"), "an injected style attribute applied");
        let seen = self.csp_violations().join("\n");
        assert!(seen.contains("script-src") && seen.contains("style-src"), "{seen}");
        self.js("window.__csp = []; return true");
        for e in self.console_errors() {
            assert!(e.contains("Content Security Policy"), "an unexpected console error: {e}");
        }
    }
}

impl Drop for WebDriver {
    fn drop(&mut self) {
        let _ = TcpStream::connect(&self.addr).map(|mut s| {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = write!(
                s,
                "DELETE /session/{} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.session
            );
            let _ = s.read_to_end(&mut Vec::new());
        });
    }
}

/// chromedriver and everything in its process group (the Chromium it started).
pub struct Driver(Guard);

impl Driver {
    /// chromedriver's process id, which is also its process group's.
    pub fn pgid(&self) -> u32 {
        self.0 .0.as_ref().map_or(0, |c| c.id())
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let pgid = self.pgid();
        if pgid > 1 {
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pgid}")]).status();
        }
        // Guard's own drop reaps chromedriver.
    }
}

/// Whether chromium and chromedriver are installed; under CI their absence fails the test.
pub fn browser_available() -> bool {
    let ok = Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists();
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}): tools/test.sh installs them"
        );
        eprintln!("SKIPPED: install chromium and chromium-driver to run the browser test");
    }
    ok
}

/// chromedriver and a headless Chromium session (the guard stops the driver).
pub fn start_browser(dir: &Path) -> (Driver, WebDriver) {
    use std::os::unix::process::CommandExt;
    let wd_port = free_port();
    // Its own process group, which the Chromium it starts inherits: dropping
    // the driver kills the group, so no browser outlives its test (killing
    // chromedriver alone left its Chromium running, reparented to init, when
    // the session's DELETE did not finish; each CI run left two behind).
    let driver = Driver(Guard::spawn(
        Command::new(CHROMEDRIVER)
            .arg(format!("--port={wd_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0),
    ));
    let wd_addr = format!("127.0.0.1:{wd_port}");
    let start = Instant::now();
    while TcpStream::connect(&wd_addr).is_err() || wd_http(&wd_addr, "GET", "/status", None)["value"]["ready"] != true {
        assert!(start.elapsed() < Duration::from_secs(20), "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let wd = WebDriver::new(&wd_addr, &dir.join("profile"));
    (driver, wd)
}

/// A response header's value (first of that name), lower-cased name match.
fn header_value(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

/// What every page must carry (issue #14): a CSP without inline code that
/// forbids framing, no MIME sniffing, no referrer; and its files labelled right.
pub fn assert_page_headers(addr: &str, page: &str, files: &[(&str, &str)]) {
    let (code, head, body) = crate::common::http("GET", addr, page).unwrap();
    assert_eq!(code, 200, "{page}: {head}");
    let csp = header_value(&head, "Content-Security-Policy").unwrap_or_else(|| panic!("{page}: no CSP: {head}"));
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{page}: {csp}");
    let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
    for d in ["script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "base-uri 'none'"] {
        assert!(directives.contains(&d), "{page}: {d} missing from {csp}");
    }
    assert_eq!(header_value(&head, "X-Content-Type-Options").as_deref(), Some("nosniff"), "{page}");
    assert_eq!(header_value(&head, "Referrer-Policy").as_deref(), Some("no-referrer"), "{page}");
    for (file, ctype) in files {
        assert!(body.contains(&format!("\"{file}\"")), "{page} does not load {file}");
        let (code, head, _) = crate::common::http("GET", addr, file).unwrap();
        assert_eq!(code, 200, "{file}: {head}");
        assert!(header_value(&head, "Content-Type").unwrap_or_default().starts_with(ctype), "{file}: {head}");
        assert_eq!(header_value(&head, "X-Content-Type-Options").as_deref(), Some("nosniff"), "{file}");
    }
    assert_eq!(crate::common::http("GET", addr, "/static/nope.js").unwrap().0, 404);
}
