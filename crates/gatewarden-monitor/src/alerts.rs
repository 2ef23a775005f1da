//! The alert store: every alert as one Suricata EVE JSON line in
//! `alerts.json` (rotated by size, `alerts.json.1` … `.N`), so any SIEM that
//! reads Suricata reads us; the operator's decisions about alerts
//! (acknowledged, resolved) in a separate append-only `alert-state.json`, so
//! the EVE lines are never rewritten.
//!
//! A crash can leave at most the last line half-written. Opening the store
//! reads every complete line, reports the partial one (with its file, offset
//! and first bytes) and cuts it off, so the next alert starts on a fresh line.
//! Lines that are not valid alerts are counted and skipped, never fatal.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use gatewarden_core::logfile::RotatingLog;
use gatewarden_proto::messages::{Alert, AttackKind, Severity};

/// The EVE file's name inside the data directory.
pub const ALERT_FILE: &str = "alerts.json";
/// The alert-state file's name inside the data directory.
pub const STATE_FILE: &str = "alert-state.json";

/// Every kind, for parsing names back (the catalogue's list).
pub use gatewarden_proto::signatures::KINDS as ALL_KINDS;

/// Parses a kind's snake_case name (`port_scan`, …).
pub fn parse_kind(s: &str) -> Option<AttackKind> {
    ALL_KINDS.iter().copied().find(|k| k.as_str() == s)
}

/// Parses a severity: `high`/`medium`/`low` or Suricata's 1/2/3.
pub fn parse_severity(s: &str) -> Option<Severity> {
    match s.to_ascii_lowercase().as_str() {
        "high" | "1" => Some(Severity::High),
        "medium" | "2" => Some(Severity::Medium),
        "low" | "3" => Some(Severity::Low),
        _ => None,
    }
}

/// What the operator has done about an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// Nobody has looked at it yet.
    #[default]
    New,
    /// Someone has seen it.
    Acknowledged,
    /// Dealt with.
    Resolved,
}

impl AlertState {
    /// The lower-case name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::New => "new",
            AlertState::Acknowledged => "acknowledged",
            AlertState::Resolved => "resolved",
        }
    }
    /// Parses `new`, `acknowledged` (or `ack`), `resolved`.
    pub fn parse(s: &str) -> Option<AlertState> {
        match s {
            "new" => Some(AlertState::New),
            "acknowledged" | "ack" => Some(AlertState::Acknowledged),
            "resolved" => Some(AlertState::Resolved),
            _ => None,
        }
    }
}

/// One change of an alert's state, as stored in `alert-state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateChange {
    /// The alert's store id.
    pub id: u64,
    /// Its new state.
    pub state: AlertState,
    /// Who changed it (the token's subject).
    pub by: String,
    /// When, Unix nanoseconds.
    pub ts_ns: u64,
}

/// A half-written line found when the store was opened.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartialLine {
    /// The file it was in.
    pub file: PathBuf,
    /// Byte offset where it starts (the file was cut back to here).
    pub offset: u64,
    /// Its length.
    pub bytes: u64,
    /// Its first bytes, lossily decoded, for the log.
    pub preview: String,
}

/// What opening the store found; shown in `/api/status` and logged.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Recovery {
    /// Complete alert lines read back.
    pub alerts_read: u64,
    /// Lines that were complete but not a valid alert (skipped).
    pub bad_lines: u64,
    /// State changes read back.
    pub states_read: u64,
    /// Half-written lines that were cut off (at most one per file).
    pub partial: Vec<PartialLine>,
}

/// A filter over stored alerts; every field is optional.
#[derive(Debug, Clone, Default)]
pub struct AlertQuery {
    /// Only alerts at or after this time (event time, Unix ns).
    pub since_ns: Option<u64>,
    /// Only alerts before this time.
    pub until_ns: Option<u64>,
    /// Only alerts at least this severe (`High` is the most severe).
    pub min_severity: Option<Severity>,
    /// Only this kind.
    pub kind: Option<AttackKind>,
    /// Only alerts whose source is this address.
    pub source: Option<IpAddr>,
    /// Only alerts in this state.
    pub state: Option<AlertState>,
    /// Most alerts returned (newest first); 0 means 100.
    pub limit: usize,
}

impl AlertQuery {
    fn matches(&self, a: &Alert, state: AlertState) -> bool {
        self.since_ns.is_none_or(|t| a.ts_ns >= t)
            && self.until_ns.is_none_or(|t| a.ts_ns < t)
            && self.min_severity.is_none_or(|s| a.severity <= s)
            && self.kind.is_none_or(|k| a.kind == k)
            && self.source.is_none_or(|s| a.src == Some(s))
            && self.state.is_none_or(|s| s == state)
    }
}

/// Builds an [`Alert`] back from one of our EVE lines, written before
/// issue #18 (root `gatewarden{}`) or after (`alert.metadata`); see [`crate::eve`].
pub fn alert_from_eve(v: &Value) -> anyhow::Result<Alert> {
    crate::eve::from_eve(v)
}

/// Where and how the store keeps its files.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Data directory; `None` keeps everything in memory.
    pub dir: Option<PathBuf>,
    /// Size at which `alerts.json` rotates.
    pub max_bytes: u64,
    /// Rotated files kept.
    pub keep: usize,
    /// Alerts held in memory.
    pub memory: usize,
}

impl StoreOptions {
    /// From the `[monitor]` config section.
    pub fn from_config(c: &crate::config::MonitorConfig) -> StoreOptions {
        StoreOptions {
            dir: (!c.data_dir.as_os_str().is_empty()).then(|| c.data_dir.clone()),
            max_bytes: c.alert_log_max_bytes,
            keep: c.alert_log_keep,
            memory: c.alerts_in_memory,
        }
    }
    /// Memory only, holding `memory` alerts.
    pub fn in_memory(memory: usize) -> StoreOptions {
        StoreOptions { dir: None, max_bytes: 16 << 20, keep: 4, memory }
    }
}

/// Most state entries remembered; beyond it the oldest ids are forgotten (they are long rotated away).
pub const MAX_STATES: usize = 1 << 20;

/// The alert store. Not thread-safe by itself; [`super::MonitorState`] wraps it in its lock.
#[derive(Debug)]
pub struct AlertStore {
    opts: StoreOptions,
    log: Option<RotatingLog>,
    state_file: Option<File>,
    state_lines: usize,
    recent: VecDeque<Alert>,
    /// Whether `recent` holds every alert in the files (nothing older to scan).
    complete: bool,
    /// The newest time of any alert pushed out of `recent`: memory answers a
    /// query from a later time. Not the oldest alert still held: alerts are
    /// kept in arrival order, and one a node stamped 0 at the front made
    /// memory look as if it reached back to 1970, so a `since` query left
    /// out alerts already pushed out to the files.
    pushed_out_newest_ns: u64,
    states: HashMap<u64, StateChange>,
    next_id: u64,
    total: u64,
    by_kind: BTreeMap<String, u64>,
    recovery: Recovery,
    torn_write: Option<std::time::Duration>,
}

/// Debug builds only: write each alert line in two halves with this many
/// milliseconds between them, so the crash test can kill -9 mid-line.
pub const TORN_WRITE_ENV: &str = "GATEWARDEN_TEST_TORN_WRITE_MS";

/// Reads `path` line by line; calls `f` for every complete line. If the file
/// does not end in a newline, the tail is returned as a partial line and the
/// file is cut back to the last newline (when `truncate`).
/// How [`AlertStore::query`] answers a query.
#[derive(Debug)]
pub enum QueryPlan {
    /// From memory: the answer.
    Answered(Vec<(Alert, AlertState)>),
    /// From these alert files, oldest first ([`scan_files`]).
    ScanFiles(Vec<PathBuf>),
}

/// The alerts in `files` (oldest first) matching `q`, newest first, at most
/// `q.limit`; `state_of` gives each alert's state. Needs no store, so it
/// runs without the lock a caller keeps the store under.
pub fn scan_files(
    files: &[PathBuf],
    q: &AlertQuery,
    state_of: impl Fn(u64) -> AlertState,
) -> anyhow::Result<Vec<(Alert, AlertState)>> {
    let limit = if q.limit == 0 { 100 } else { q.limit };
    let mut out: VecDeque<(Alert, AlertState)> = VecDeque::new();
    for path in files {
        read_lines(path, false, |line| {
            if let Ok(a) =
                serde_json::from_str::<Value>(line).map_err(anyhow::Error::from).and_then(|v| alert_from_eve(&v))
            {
                let st = state_of(a.id);
                if q.matches(&a, st) {
                    out.push_back((a, st));
                    if out.len() > limit {
                        out.pop_front();
                    }
                }
            }
        })?;
    }
    Ok(out.into_iter().rev().collect())
}

fn read_lines(path: &Path, truncate: bool, mut f: impl FnMut(&str)) -> anyhow::Result<Option<PartialLine>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut buf = Vec::with_capacity(1024);
    let mut offset = 0u64;
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            return Ok(None);
        }
        if buf.last() != Some(&b'\n') {
            let partial = PartialLine {
                file: path.to_path_buf(),
                offset,
                bytes: n as u64,
                preview: String::from_utf8_lossy(&buf[..buf.len().min(120)]).into_owned(),
            };
            if truncate {
                OpenOptions::new()
                    .write(true)
                    .open(path)
                    .and_then(|f| f.set_len(offset).and_then(|_| f.sync_all()))
                    .with_context(|| format!("cutting the partial line off {}", path.display()))?;
            }
            return Ok(Some(partial));
        }
        offset += n as u64;
        match std::str::from_utf8(&buf[..n - 1]) {
            Ok(line) if !line.trim().is_empty() => f(line),
            Ok(_) => {}
            Err(_) => f("\u{0}invalid utf-8"),
        }
    }
}

impl AlertStore {
    /// Opens (or creates) the store, reading back what is on disk.
    pub fn open(opts: StoreOptions) -> anyhow::Result<AlertStore> {
        let mut store = AlertStore {
            opts: StoreOptions { memory: opts.memory.max(1), ..opts },
            log: None,
            state_file: None,
            state_lines: 0,
            recent: VecDeque::new(),
            complete: true,
            pushed_out_newest_ns: 0,
            states: HashMap::new(),
            next_id: 1,
            total: 0,
            by_kind: BTreeMap::new(),
            recovery: Recovery::default(),
            torn_write: if cfg!(debug_assertions) {
                std::env::var(TORN_WRITE_ENV).ok().and_then(|v| v.parse().ok()).map(std::time::Duration::from_millis)
            } else {
                None
            },
        };
        let Some(dir) = store.opts.dir.clone() else { return Ok(store) };
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating the alert directory {} (monitor.data_dir)", dir.display()))?;
        // Oldest first: alerts.json.N … alerts.json.1, alerts.json.
        let mut files: Vec<PathBuf> = (1..=store.opts.keep).rev().map(|n| store.rotated(&dir, n)).collect();
        files.push(dir.join(ALERT_FILE));
        let mut max_id = 0u64;
        for path in &files {
            let current = path == files.last().expect("at least the current file");
            let mut bad = 0u64;
            let partial = read_lines(path, current, |line| {
                match serde_json::from_str::<Value>(line).map_err(anyhow::Error::from).and_then(|v| alert_from_eve(&v))
                {
                    Ok(a) => {
                        max_id = max_id.max(a.id);
                        store.recovery.alerts_read += 1;
                        store.remember(a);
                    }
                    Err(_) => bad += 1,
                }
            })?;
            store.recovery.bad_lines += bad;
            if let Some(p) = partial {
                tracing::warn!(file = %p.file.display(), offset = p.offset, bytes = p.bytes, preview = %p.preview,
                    "alert store: cut off a half-written line (the process stopped mid-write); every complete line was kept");
                store.recovery.partial.push(p);
            }
        }
        let state_path = dir.join(STATE_FILE);
        let mut changes = Vec::new();
        let partial = read_lines(&state_path, true, |line| {
            if let Ok(c) = serde_json::from_str::<StateChange>(line) {
                changes.push(c);
            }
        })?;
        if let Some(p) = partial {
            tracing::warn!(file = %p.file.display(), offset = p.offset, "alert store: cut off a half-written state line");
            store.recovery.partial.push(p);
        }
        store.state_lines = changes.len();
        store.recovery.states_read = changes.len() as u64;
        for c in changes {
            max_id = max_id.max(c.id);
            store.states.insert(c.id, c);
        }
        store.next_id = max_id.saturating_add(1);
        store.log = Some(RotatingLog::open(&dir.join(ALERT_FILE), store.opts.max_bytes, store.opts.keep)?);
        if store.state_lines > 2 * store.states.len() + 1024 {
            store.compact_states()?;
        }
        store.state_file = Some(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&state_path)
                .with_context(|| format!("opening {}", state_path.display()))?,
        );
        if store.recovery.alerts_read > 0 || !store.recovery.partial.is_empty() {
            tracing::info!(alerts = store.recovery.alerts_read, bad_lines = store.recovery.bad_lines,
                states = store.recovery.states_read, partial = store.recovery.partial.len(), dir = %dir.display(),
                "alert store read back");
        }
        Ok(store)
    }

    fn rotated(&self, dir: &Path, n: usize) -> PathBuf {
        dir.join(format!("{ALERT_FILE}.{n}"))
    }

    fn remember(&mut self, a: Alert) {
        self.total += 1;
        *self.by_kind.entry(a.kind.as_str().to_string()).or_insert(0) += 1;
        self.recent.push_back(a);
        if self.recent.len() > self.opts.memory {
            if let Some(old) = self.recent.pop_front() {
                self.pushed_out_newest_ns = self.pushed_out_newest_ns.max(old.ts_ns);
            }
            self.complete = false;
        }
    }

    /// Stores an alert under a new store id (detector ids restart with the
    /// process; store ids never repeat). Returns the stored alert.
    pub fn append(&mut self, mut a: Alert) -> anyhow::Result<Alert> {
        a.id = self.next_id;
        self.next_id += 1;
        let result = match &mut self.log {
            Some(log) => match self.torn_write {
                Some(pause) => log.line_in_two_writes(&super::eve_json(&a).to_string(), pause),
                None => log.line(&super::eve_json(&a).to_string()),
            },
            None => Ok(()),
        };
        // Kept in memory even when the disk write failed: the page still shows it.
        self.remember(a.clone());
        result.map(|_| a)
    }

    /// The state of alert `id`.
    pub fn state_of(&self, id: u64) -> AlertState {
        self.states.get(&id).map(|c| c.state).unwrap_or_default()
    }

    /// Who last changed alert `id`'s state, and when.
    pub fn state_change(&self, id: u64) -> Option<&StateChange> {
        self.states.get(&id)
    }

    /// The id the next alert gets: every id below it was issued.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Whether `id` names an alert this store has issued.
    pub fn exists(&self, id: u64) -> bool {
        id >= 1 && id < self.next_id
    }

    /// Sets alert `id`'s state (persisted with fsync before returning).
    pub fn set_state(&mut self, id: u64, state: AlertState, by: &str) -> anyhow::Result<StateChange> {
        if !self.exists(id) {
            anyhow::bail!("no alert with id {id}");
        }
        let change = StateChange { id, state, by: by.to_string(), ts_ns: gatewarden_core::clock::unix_now_ns() };
        if let Some(f) = &mut self.state_file {
            let mut line = serde_json::to_string(&change).context("encoding a state change")?;
            line.push('\n');
            let before = f.metadata().map(|m| m.len()).ok();
            if let Err(e) = f.write_all(line.as_bytes()).and_then(|_| f.sync_data()) {
                // Part of the line may be on disk (disk full): cut it, or the next
                // change would be glued to it and lost at the next start.
                if let Some(len) = before {
                    let _ = f.set_len(len);
                }
                return Err(e).context("writing alert-state.json");
            }
            self.state_lines += 1;
        }
        self.states.insert(id, change.clone());
        if self.states.len() > MAX_STATES {
            let mut ids: Vec<u64> = self.states.keys().copied().collect();
            ids.sort_unstable();
            for id in &ids[..ids.len() - MAX_STATES] {
                self.states.remove(id);
            }
        }
        if self.state_lines > 2 * self.states.len() + 1024 {
            self.compact_states()?;
        }
        Ok(change)
    }

    /// Rewrites `alert-state.json` with one line per alert (temporary file + rename).
    fn compact_states(&mut self) -> anyhow::Result<()> {
        let Some(dir) = self.opts.dir.clone() else { return Ok(()) };
        let path = dir.join(STATE_FILE);
        let tmp = dir.join(format!("{STATE_FILE}.tmp"));
        let mut changes: Vec<&StateChange> = self.states.values().collect();
        changes.sort_by_key(|c| c.id);
        let mut out = String::new();
        for c in changes {
            out.push_str(&serde_json::to_string(c).context("encoding a state change")?);
            out.push('\n');
        }
        let mut f = File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(out.as_bytes()).and_then(|_| f.sync_all()).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("replacing {}", path.display()))?;
        self.state_lines = self.states.len();
        self.state_file =
            Some(OpenOptions::new().append(true).open(&path).with_context(|| format!("reopening {}", path.display()))?);
        Ok(())
    }

    /// Alerts matching `q`, newest first, with their state. Answers from
    /// memory when it covers the range, otherwise reads the files.
    pub fn query(&self, q: &AlertQuery) -> anyhow::Result<Vec<(Alert, AlertState)>> {
        match self.plan(q) {
            QueryPlan::Answered(v) => Ok(v),
            QueryPlan::ScanFiles(files) => scan_files(&files, q, |id| self.state_of(id)),
        }
    }

    /// What answering `q` takes: the alerts in memory, or a scan of the
    /// files. The scan ([`scan_files`]) needs no `&self`, so a caller
    /// holding this store under a lock (the monitor) can run it unlocked:
    /// parsing up to 80 MiB of alert files under the monitor's lock stalled
    /// alert intake, heartbeats and every page for as long as any viewer
    /// asked for old alerts.
    pub fn plan(&self, q: &AlertQuery) -> QueryPlan {
        let limit = if q.limit == 0 { 100 } else { q.limit };
        let covered = self.complete || q.since_ns.is_some_and(|t| t > self.pushed_out_newest_ns);
        let Some(dir) = self.opts.dir.as_ref().filter(|_| !covered) else {
            return QueryPlan::Answered(
                self.recent
                    .iter()
                    .rev()
                    .filter(|a| q.matches(a, self.state_of(a.id)))
                    .take(limit)
                    .map(|a| (a.clone(), self.state_of(a.id)))
                    .collect(),
            );
        };
        let mut files: Vec<PathBuf> = (1..=self.opts.keep).rev().map(|n| self.rotated(dir, n)).collect();
        files.push(dir.join(ALERT_FILE));
        QueryPlan::ScanFiles(files)
    }

    /// Whether the alerts in memory answer every query (none was pushed out yet).
    pub fn complete(&self) -> bool {
        self.complete
    }

    /// The `n` newest alerts in memory, newest first.
    pub fn recent(&self, n: usize) -> impl Iterator<Item = &Alert> {
        self.recent.iter().rev().take(n)
    }

    /// Alerts stored (read back plus appended).
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Alerts by kind name.
    pub fn by_kind(&self) -> &BTreeMap<String, u64> {
        &self.by_kind
    }

    /// Count of alerts per state among those in memory.
    pub fn state_counts(&self) -> BTreeMap<&'static str, u64> {
        let mut m = BTreeMap::from([("new", 0), ("acknowledged", 0), ("resolved", 0)]);
        for a in &self.recent {
            *m.entry(self.state_of(a.id).as_str()).or_insert(0) += 1;
        }
        m
    }

    /// What opening the store found.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// Whether alerts are written to disk.
    pub fn persistent(&self) -> bool {
        self.opts.dir.is_some()
    }
}

/// Reads the last `n` bytes of a file (for diagnostics in tests and logs).
pub fn tail_bytes(path: &Path, n: u64) -> std::io::Result<Vec<u8>> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(n)))?;
    let mut v = Vec::new();
    f.read_to_end(&mut v)?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatewarden_proto::messages::{AlertAction, AlertFlow, NotBlocked, Proto};

    pub(crate) fn alert(i: u64, kind: AttackKind, sev: Severity, src: &str) -> Alert {
        Alert {
            id: 999,
            ts_ns: 1_700_000_000_000_000_000 + i * 1_000_000_000,
            node: "gw1".into(),
            flow_id: i,
            kind,
            severity: sev,
            src: Some(src.parse().unwrap()),
            dst: Some("192.0.2.10".parse().unwrap()),
            sport: 40000,
            dport: 22,
            proto: Some(Proto::Tcp),
            action: AlertAction::Blocked,
            signature_id: 9_000_001,
            signature: "GATEWARDEN port scan".into(),
            confidence: 0.9,
            reason: format!("alert number {i}"),
            flow: None,
            not_blocked: None,
            in_iface: String::new(),
        }
    }

    fn opts(dir: &Path, max_bytes: u64, memory: usize) -> StoreOptions {
        StoreOptions { dir: Some(dir.to_path_buf()), max_bytes, keep: 3, memory }
    }

    /// A node's alert stamped 0 (a skewed or compromised clock) sat at the
    /// front of memory, which then looked as if it reached back to 1970: a
    /// `since` query was answered from memory and left out alerts already
    /// pushed out to the files.
    #[test]
    fn an_alert_stamped_at_zero_does_not_hide_alerts_pushed_out_to_the_files() {
        let d = tempfile::tempdir().unwrap();
        let mut s = AlertStore::open(opts(d.path(), 1 << 20, 3)).unwrap();
        let t0 = 1_700_000_000_000_000_000u64;
        for i in 0..2 {
            s.append(alert(i, AttackKind::PortScan, Severity::High, "203.0.113.9")).unwrap();
        }
        let mut zero = alert(2, AttackKind::PortScan, Severity::High, "203.0.113.9");
        zero.ts_ns = 0;
        s.append(zero).unwrap();
        for i in 3..5 {
            s.append(alert(i, AttackKind::PortScan, Severity::High, "203.0.113.9")).unwrap();
        }
        let got: Vec<u64> = s
            .query(&AlertQuery { since_ns: Some(t0 + 500_000_000), limit: 100, ..Default::default() })
            .unwrap()
            .into_iter()
            .map(|(a, _)| a.id)
            .collect();
        assert_eq!(got, [5, 4, 2], "alerts since t0 + 0.5 s, newest first (store ids)");
    }

    /// Red-team finding: a query older than what memory holds parsed every
    /// alert file inside the monitor's lock. The store now only plans it
    /// under the lock; the scan needs no store and gives the same answer.
    #[test]
    fn an_old_query_is_planned_as_a_file_scan_that_needs_no_store() {
        let d = tempfile::tempdir().unwrap();
        let mut s = AlertStore::open(opts(d.path(), 1 << 20, 10)).unwrap();
        for i in 0..50 {
            s.append(alert(i, AttackKind::PortScan, Severity::Medium, "192.0.2.66")).unwrap();
        }
        s.set_state(3, AlertState::Acknowledged, "op").unwrap();
        let q = AlertQuery { limit: 40, ..Default::default() };
        let QueryPlan::ScanFiles(files) = s.plan(&q) else { panic!("50 alerts, 10 in memory: the files answer") };
        let states: std::collections::HashMap<u64, AlertState> = (1..=50).map(|id| (id, s.state_of(id))).collect();
        drop(s);
        let scanned = scan_files(&files, &q, |id| states[&id]).unwrap();
        assert_eq!(scanned.len(), 40);
        assert_eq!(scanned[0].0.id, 50, "newest first");
        assert_eq!(scanned.iter().find(|(a, _)| a.id == 3).map(|(_, st)| *st), None, "beyond the limit");
        let all = scan_files(&files, &AlertQuery { limit: 100, ..Default::default() }, |id| states[&id]).unwrap();
        assert_eq!(all.iter().find(|(a, _)| a.id == 3).map(|(_, st)| *st), Some(AlertState::Acknowledged));
    }

    #[test]
    fn eve_round_trips_including_ipv6_and_other_protocols() {
        let mut a = alert(1, AttackKind::SynFlood, Severity::Medium, "2001:db8::66");
        a.proto = Some(Proto::Other(47));
        a.dst = None;
        // GRE has no ports (Suricata writes them for TCP, UDP and SCTP only).
        let with_ports = super::super::eve_json(&a);
        assert!(with_ports.get("src_port").is_none() && with_ports.get("dest_port").is_none(), "{with_ports}");
        (a.sport, a.dport) = (0, 0);
        let v = super::super::eve_json(&a);
        assert_eq!(v["event_type"], "alert");
        assert_eq!(v["alert"]["action"], "blocked");
        assert_eq!(v["src_ip"], "2001:db8::66");
        assert_eq!(v["proto"], "GRE", "Suricata's name");
        assert!(v.get("src_port").is_none() && v.get("dest_ip").is_none(), "absent, not null: {v}");
        assert_eq!(alert_from_eve(&v).unwrap(), a);
        a.proto = Some(Proto::Other(200));
        assert_eq!(super::super::eve_json(&a)["proto"], "200", "a number Suricata has no name for");
        assert_eq!(alert_from_eve(&super::super::eve_json(&a)).unwrap(), a);
        // ICMPv6 with its type and code from the flow; no ports.
        a.proto = Some(Proto::Icmpv6);
        a.sport = 0;
        a.dport = 0;
        a.action = AlertAction::Allowed;
        a.not_blocked = Some(NotBlocked::Unproven);
        a.in_iface = "lan0".into();
        a.flow = Some(AlertFlow {
            sport: 128,
            dport: 0,
            pkts_toserver: 900,
            pkts_toclient: 0,
            bytes_toserver: 93_600,
            bytes_toclient: 0,
            start_ns: 1_700_000_000_123_456_789,
            state: gatewarden_proto::conn_state::ConnState::S0,
        });
        let v = super::super::eve_json(&a);
        assert_eq!(
            (v["proto"].as_str(), v["icmp_type"].as_u64(), v["icmp_code"].as_u64()),
            (Some("IPv6-ICMP"), Some(128), Some(0))
        );
        assert_eq!(v["flow"]["pkts_toserver"], 900);
        assert_eq!(v["flow"]["state"], "new");
        assert_eq!(v["alert"]["metadata"]["not_blocked"], serde_json::json!(["unproven"]));
        assert_eq!((v["host"].as_str(), v["in_iface"].as_str()), (Some("gw1"), Some("lan0")));
        assert_eq!(alert_from_eve(&v).unwrap(), a);
        // TCP: both ports, the flow's own ports kept.
        a.proto = Some(Proto::Tcp);
        a.sport = 40000;
        a.dport = 22;
        a.flow = a.flow.map(|f| AlertFlow {
            sport: 40000,
            dport: 22,
            state: gatewarden_proto::conn_state::ConnState::REJ,
            ..f
        });
        let v = super::super::eve_json(&a);
        assert_eq!((v["src_port"].as_u64(), v["dest_port"].as_u64()), (Some(40000), Some(22)));
        assert_eq!(v["flow"]["state"], "closed");
        assert_eq!(alert_from_eve(&v).unwrap(), a);
    }

    /// Lines written before issue #18 (a root `gatewarden{}` object, `null`s,
    /// the old protocol spellings) still load next to new ones.
    #[test]
    fn reads_lines_written_before_issue_18_and_new_ones() {
        let d = tempfile::tempdir().unwrap();
        let old = [
            r#"{"timestamp":"2026-11-30T10:00:00.000000+0000","flow_id":17,"event_type":"alert","src_ip":"203.0.113.9","src_port":0,"dest_ip":"192.0.2.10","dest_port":22,"proto":"TCP","alert":{"action":"blocked","gid":1,"signature_id":9000003,"rev":1,"signature":"GATEWARDEN brute force","category":"brute_force","severity":1},"gatewarden":{"id":1,"kind":"brute_force","confidence":0.95,"reason":"12 failed logins; blocked: policy rule brute_force","node":"gw1","ts_ns":1764496800000000000,"rule":"brute_force"}}"#,
            r#"{"timestamp":"2026-11-30T10:00:01.000000+0000","flow_id":0,"event_type":"alert","src_ip":null,"src_port":0,"dest_ip":null,"dest_port":0,"proto":null,"alert":{"action":"allowed","gid":1,"signature_id":9100001,"rev":1,"signature":"GATEWARDEN SYSTEM model loaded","category":"system","severity":3},"gatewarden":{"id":2,"kind":"system","confidence":1.0,"reason":"model loaded","node":"det1","ts_ns":1764496801000000000}}"#,
            r#"{"timestamp":"2026-11-30T10:00:02.000000+0000","flow_id":9,"event_type":"alert","src_ip":"2001:db8::66","src_port":0,"dest_ip":"2001:db8::1","dest_port":0,"proto":"IPV6-ICMP","alert":{"action":"blocked","gid":1,"signature_id":9000005,"rev":1,"signature":"GATEWARDEN ICMP flood","category":"icmp_flood","severity":1},"gatewarden":{"id":3,"kind":"icmp_flood","confidence":0.9,"reason":"flood","node":"gw1","ts_ns":1764496802000000000}}"#,
            r#"{"timestamp":"2026-11-30T10:00:03.000000+0000","flow_id":10,"event_type":"alert","src_ip":"198.51.100.4","src_port":0,"dest_ip":null,"dest_port":0,"proto":"PROTO-47","alert":{"action":"allowed","gid":1,"signature_id":9000009,"rev":1,"signature":"GATEWARDEN anomaly","category":"anomaly","severity":2},"gatewarden":{"id":4,"kind":"anomaly","confidence":0.7,"reason":"odd","node":"gw1","ts_ns":1764496803000000000}}"#,
        ];
        std::fs::write(d.path().join(ALERT_FILE), old.join("\n") + "\n").unwrap();
        let mut s = AlertStore::open(opts(d.path(), 1 << 20, 100)).unwrap();
        assert_eq!((s.recovery().alerts_read, s.recovery().bad_lines), (4, 0));
        let all = s.query(&AlertQuery { limit: 10, ..Default::default() }).unwrap();
        let by_id = |id: u64| all.iter().find(|(a, _)| a.id == id).map(|(a, _)| a.clone()).unwrap();
        let a = by_id(1);
        assert_eq!(
            (a.kind, a.action, a.dport, a.proto, a.node.as_str()),
            (AttackKind::BruteForce, AlertAction::Blocked, 22, Some(Proto::Tcp), "gw1")
        );
        assert_eq!((a.confidence, a.ts_ns), (0.95, 1_764_496_800_000_000_000));
        let sys = by_id(2);
        assert_eq!((sys.src, sys.proto, sys.kind), (None, None, AttackKind::System));
        assert_eq!(by_id(3).proto, Some(Proto::Icmpv6));
        assert_eq!(by_id(4).proto, Some(Proto::Other(47)));
        // A new line after the old ones; both kinds load again.
        let mut new = alert(5, AttackKind::PortScan, Severity::Medium, "203.0.113.77");
        new.not_blocked = Some(NotBlocked::PolicyAlert);
        new.action = AlertAction::Allowed;
        let id = s.append(new).unwrap().id;
        drop(s);
        let text = std::fs::read_to_string(d.path().join(ALERT_FILE)).unwrap();
        assert!(!text.lines().last().unwrap().contains("\"gatewarden\""), "new lines have no root gatewarden{{}}");
        let s = AlertStore::open(opts(d.path(), 1 << 20, 100)).unwrap();
        assert_eq!((s.recovery().alerts_read, s.recovery().bad_lines), (5, 0));
        let all = s.query(&AlertQuery { limit: 10, ..Default::default() }).unwrap();
        let back = all.iter().find(|(a, _)| a.id == id).unwrap();
        assert_eq!(
            (back.0.not_blocked, back.0.src),
            (Some(NotBlocked::PolicyAlert), Some("203.0.113.77".parse().unwrap()))
        );
    }

    #[test]
    fn survives_restart_with_ids_states_and_queries() {
        let d = tempfile::tempdir().unwrap();
        let mut s = AlertStore::open(opts(d.path(), 1 << 20, 100)).unwrap();
        for i in 0..10 {
            let (k, sev, src) = if i % 2 == 0 {
                (AttackKind::PortScan, Severity::High, "203.0.113.9")
            } else {
                (AttackKind::BruteForce, Severity::Low, "2001:db8::7")
            };
            s.append(alert(i, k, sev, src)).unwrap();
        }
        s.set_state(3, AlertState::Acknowledged, "alice").unwrap();
        s.set_state(4, AlertState::Resolved, "bob").unwrap();
        assert!(s.set_state(99, AlertState::Resolved, "bob").is_err());
        drop(s);
        let mut s = AlertStore::open(opts(d.path(), 1 << 20, 100)).unwrap();
        assert_eq!(s.total(), 10);
        assert_eq!(s.recovery().alerts_read, 10);
        assert!(s.recovery().partial.is_empty());
        assert_eq!(s.state_of(3), AlertState::Acknowledged);
        assert_eq!(s.state_change(4).unwrap().by, "bob");
        // Ids keep increasing across restarts.
        assert_eq!(s.append(alert(10, AttackKind::System, Severity::Low, "192.0.2.1")).unwrap().id, 11);
        let q = |q: AlertQuery| s.query(&q).unwrap().into_iter().map(|(a, _)| a.id).collect::<Vec<_>>();
        assert_eq!(q(AlertQuery { kind: Some(AttackKind::PortScan), ..Default::default() }), [9, 7, 5, 3, 1]);
        assert_eq!(
            q(AlertQuery { source: Some("2001:db8::7".parse().unwrap()), limit: 2, ..Default::default() }),
            [10, 8]
        );
        assert_eq!(q(AlertQuery { min_severity: Some(Severity::Medium), ..Default::default() }), [9, 7, 5, 3, 1]);
        let t0 = 1_700_000_000_000_000_000u64;
        assert_eq!(
            q(AlertQuery {
                since_ns: Some(t0 + 2_000_000_000),
                until_ns: Some(t0 + 5_000_000_000),
                ..Default::default()
            }),
            [5, 4, 3]
        );
        assert_eq!(q(AlertQuery { state: Some(AlertState::Resolved), ..Default::default() }), [4]);
    }

    #[test]
    fn rotates_and_queries_beyond_memory_from_the_files() {
        let d = tempfile::tempdir().unwrap();
        let mut s = AlertStore::open(opts(d.path(), 8192, 5)).unwrap();
        for i in 0..60 {
            s.append(alert(i, AttackKind::PortScan, Severity::High, "203.0.113.9")).unwrap();
        }
        assert!(d.path().join("alerts.json.1").exists());
        for n in 0..=3 {
            let p = if n == 0 { d.path().join(ALERT_FILE) } else { d.path().join(format!("{ALERT_FILE}.{n}")) };
            if p.exists() {
                assert!(std::fs::metadata(&p).unwrap().len() <= 8192);
            }
        }
        assert!(!d.path().join("alerts.json.4").exists(), "keeps 3 rotated files");
        // Memory holds 5; the oldest in the files are older than that.
        let res = s.query(&AlertQuery { limit: 1000, ..Default::default() }).unwrap();
        assert!(res.len() > 5, "answered from the files: {}", res.len());
        assert_eq!(res[0].0.id, 60);
        let newest_first: Vec<u64> = res.iter().map(|(a, _)| a.id).collect();
        assert!(newest_first.windows(2).all(|w| w[0] == w[1] + 1));
    }

    #[test]
    fn partial_and_bad_lines_are_reported_not_fatal() {
        let d = tempfile::tempdir().unwrap();
        let mut s = AlertStore::open(opts(d.path(), 1 << 20, 100)).unwrap();
        for i in 0..3 {
            s.append(alert(i, AttackKind::PortScan, Severity::High, "203.0.113.9")).unwrap();
        }
        drop(s);
        let p = d.path().join(ALERT_FILE);
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"not json at all\n{\"timestamp\":\"2026-11-").unwrap();
        drop(f);
        let mut s = AlertStore::open(opts(d.path(), 1 << 20, 100)).unwrap();
        assert_eq!(s.recovery().alerts_read, 3);
        assert_eq!(s.recovery().bad_lines, 1);
        assert_eq!(s.recovery().partial.len(), 1);
        assert_eq!(s.recovery().partial[0].bytes, 22);
        s.append(alert(4, AttackKind::PortScan, Severity::High, "203.0.113.9")).unwrap();
        drop(s);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.ends_with("}\n"));
        assert_eq!(text.lines().count(), 5);
        let s = AlertStore::open(opts(d.path(), 1 << 20, 100)).unwrap();
        assert!(s.recovery().partial.is_empty());
        assert_eq!(s.total(), 4);
    }

    #[test]
    fn state_file_is_compacted() {
        let d = tempfile::tempdir().unwrap();
        let mut s = AlertStore::open(opts(d.path(), 1 << 20, 100)).unwrap();
        s.append(alert(0, AttackKind::PortScan, Severity::High, "203.0.113.9")).unwrap();
        for i in 0..1100 {
            let st = if i % 2 == 0 { AlertState::Acknowledged } else { AlertState::New };
            s.set_state(1, st, "x").unwrap();
        }
        let lines = std::fs::read_to_string(d.path().join(STATE_FILE)).unwrap().lines().count();
        assert!(lines <= 1026, "{lines}");
        drop(s);
        let s = AlertStore::open(opts(d.path(), 1 << 20, 100)).unwrap();
        assert_eq!(s.state_of(1), AlertState::New);
    }
}
