//! What the operator sees: recent alerts, counters over time, and the status
//! page with its JSON API ([`http`]).
//!
//! gatewarden-monitor depends on gatewarden-core, gatewarden-proto,
//! gatewarden-policy and gatewarden-detect; it reaches routers only through
//! messages and hooks the node hands it. [`config`] is `[http]`, `[link]`, `[monitor]`.
#![forbid(unsafe_code)]

pub mod alerts;
pub mod assets;
pub mod auth;
pub mod config;
pub mod confirm;
pub mod eve;
pub mod events;
pub mod evidence;
pub mod http;
pub mod link;
pub mod policy_api;
pub mod reply;
pub mod settings;
pub mod system;
pub mod talkers;
pub mod timeline;
pub mod training;

use gatewarden_core::clock::{rfc3339, unix_now, unix_now_ns};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{json, Value};

use alerts::{AlertQuery, AlertState, AlertStore, StoreOptions};
use gatewarden_core::metrics::{Gauge, Registry};
use gatewarden_proto::messages::{Alert, FlowBatch, Verdict};
use gatewarden_proto::role::{Role, RoleSource};

/// Most alerts kept in memory for the page and `/api/alerts`.
pub const RECENT_ALERTS: usize = 1000;
/// Most attackers the incident list shows.
pub const MAX_INCIDENTS: usize = 200;
/// Seconds of history kept for the charts.
pub const HISTORY_SECONDS: usize = 600;

/// One point of the charts.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct HistoryPoint {
    /// Unix time, seconds.
    pub t: u64,
    /// Packets counted so far.
    pub packets: f64,
    /// Alerts so far.
    pub alerts: u64,
    /// Flows in the table.
    pub flows: f64,
}

/// Most nodes whose health (and block tables) the monitor tracks.
///
/// Past it a new node is refused and counted
/// (`gatewarden_monitor_nodes_refused_total`), never stored: evicting the
/// longest silent instead would let a flood of new names push real nodes out.
/// The bus already drops messages that name another node than their
/// sender's certificate, so only certified nodes get this far.
pub const MAX_NODES: usize = 256;

/// What the monitor knows about one node of the fleet.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct NodeHealth {
    /// Its role, from its heartbeats.
    pub role: Option<Role>,
    /// Its version.
    pub version: String,
    /// Its uptime in its last heartbeat.
    pub uptime_s: u64,
    /// When we last heard a heartbeat, Unix seconds.
    pub last_seen: u64,
    /// One-way heartbeat delay in ms (needs synchronised clocks).
    pub latency_ms: f64,
    /// Its retained status (`online`/`offline` or its last will), if known.
    pub online: Option<bool>,
    /// Alerts about its traffic.
    pub alerts: u64,
    /// Of those, alerts whose source was blocked (a verdict went to this gateway's router).
    pub blocked: u64,
}

/// An alert as a Suricata EVE JSON object that validates against
/// Suricata's `etc/schema.json` (see [`eve`]): gatewarden's own fields
/// (id, kind, confidence, reason, exact time, the response policy's rule,
/// why it was not blocked) are string arrays in `alert.metadata`.
pub fn eve_json(a: &Alert) -> Value {
    eve::to_eve(a)
}

/// Most current blocks the monitor lists (the router's table is the truth; this is the view).
pub const MAX_BLOCKS: usize = 4096;

/// How long a router's block table counts as current (routers send one every 5 s).
pub const BLOCK_TABLE_FRESH_S: u64 = 20;

/// How long a verdict waits for its router's answer before it is dropped
/// from the monitor's view (routers answer within milliseconds).
pub const VERDICT_CONFIRM_WAIT_S: u64 = 30;

/// A block the monitor knows of: from a router's block table (what the
/// kernel holds), or from a verdict its router confirmed that no table lists
/// yet. A verdict the router refused (an unproven or forged source, the
/// allowlist) is never listed: "current blocks" is what the kernel drops.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BlockView {
    /// The blocked address (or, for imported feeds, network or range; for a
    /// contained LAN MAC, the MAC).
    pub ip: String,
    /// Why: the verdict's kind, or the block set (`detector`, `admin`, `feed`,
    /// `contain` for a MAC caught forging source addresses).
    pub kind: String,
    /// The verdict's reason, or the element's comment.
    pub reason: String,
    /// When the monitor saw it, Unix seconds.
    pub since: u64,
    /// When it runs out, Unix seconds.
    pub until: u64,
    /// The router that holds it ("" for a verdict not confirmed by a table).
    pub node: String,
    /// `router table`, `verdict` (confirmed by its router) or `replay` (not enforced).
    pub source: &'static str,
    /// For a contained MAC: the addresses it forged (bounded by the router's element comment).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub forged: Vec<String>,
    /// Packets the router's element counter dropped for this entry, and
    /// since when; absent when no counter reached this monitor (a verdict
    /// row, a replay, a contained MAC). Travels in the router's block table,
    /// so a monitor on another node shows it too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped: Option<gatewarden_proto::messages::Dropped>,
    /// For a detector block: the node ids of the detectors whose verdicts
    /// asked for it (the router's table, checked on decode: at most two
    /// node ids; a confirmed verdict's row: the detector that sent it), so
    /// an operator deciding whether to revoke a detector's certificate sees
    /// which blocks it asked for. Absent when none is known.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub senders: Vec<String>,
}

/// A verdict as a block row, from `now` for its TTL.
fn verdict_view(v: &Verdict, now: u64, source: &'static str) -> BlockView {
    BlockView {
        ip: v.source.to_string(),
        kind: v.kind.as_str().to_string(),
        reason: v.reason.clone(),
        since: now,
        until: now + v.ttl_s as u64,
        node: String::new(),
        source,
        forged: Vec::new(),
        dropped: None,
        // The bus fills the sender from the verdict's topic and signature;
        // anything else (a replay's, an unset one) names no one.
        senders: if gatewarden_core::identity::valid_node_id(&v.sender) { vec![v.sender.clone()] } else { Vec::new() },
    }
}

/// Adds a row to the bounded block list, evicting the one closest to expiry when full.
fn insert_block(blocks: &mut BTreeMap<std::net::IpAddr, BlockView>, ip: std::net::IpAddr, view: BlockView) {
    if !blocks.contains_key(&ip) && blocks.len() >= MAX_BLOCKS {
        if let Some(k) = blocks.iter().min_by_key(|(_, b)| b.until).map(|(k, _)| *k) {
            blocks.remove(&k);
        }
    }
    blocks.insert(ip, view);
}

/// Suricata's severity words, for metric labels.
fn severity_name(s: gatewarden_proto::messages::Severity) -> &'static str {
    match s {
        gatewarden_proto::messages::Severity::High => "high",
        gatewarden_proto::messages::Severity::Medium => "medium",
        gatewarden_proto::messages::Severity::Low => "low",
    }
}

/// `gatewarden_alerts_total{kind,severity}`.
fn alerts_counter(
    r: &Registry,
    kind: gatewarden_proto::attack::AttackKind,
    severity: gatewarden_proto::messages::Severity,
) -> gatewarden_core::metrics::Counter {
    r.counter(
        "gatewarden_alerts_total",
        "Alerts stored, by kind and severity.",
        &[("kind", kind.as_str()), ("severity", severity_name(severity))],
    )
}

/// `gatewarden_verdict_outcomes_total{result}`.
fn outcomes_counter(r: &Registry, blocked: bool) -> gatewarden_core::metrics::Counter {
    r.counter(
        "gatewarden_verdict_outcomes_total",
        "Routers' answers to verdicts: blocked (in the kernel) or refused.",
        &[("result", if blocked { "blocked" } else { "refused" })],
    )
}

/// The monitor's labelled counters at zero for every known label value, so
/// a dashboard shows 0 (not "no data") before the first alert of a kind.
fn preregister_monitor_series(r: &Registry) {
    use gatewarden_proto::messages::Severity;
    for kind in gatewarden_proto::attack::AttackKind::ALL {
        for severity in [Severity::High, Severity::Medium, Severity::Low] {
            alerts_counter(r, kind, severity);
        }
    }
    for blocked in [true, false] {
        outcomes_counter(r, blocked);
    }
}

/// Asks the router's enforcement to lift a block; set where enforcement runs in this process.
pub type UnblockHook = Arc<dyn Fn(std::net::IpAddr) -> anyhow::Result<String> + Send + Sync>;

/// Asks the router's enforcement in this process to lift a MAC's containment.
pub type UnblockMacHook = Arc<dyn Fn([u8; 6]) -> anyhow::Result<String> + Send + Sync>;

/// Sends an unblock request to one router over the node bus (sealed for it);
/// false if the bus dropped it.
pub type RemoteUnblock = Arc<dyn Fn(&str, gatewarden_proto::messages::UnblockRequest) -> bool + Send + Sync>;

/// What the dashboard's "unblock" did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unblocked {
    /// Lifted in this process (enforcement runs here), or only a remembered verdict was dropped.
    Done(String),
    /// Asked the routers whose block tables list it; each answers with a system alert.
    Asked(String),
}

#[derive(Debug)]
struct Inner {
    store: AlertStore,
    nodes: BTreeMap<String, NodeHealth>,
    history: VecDeque<HistoryPoint>,
    replay: Option<Value>,
    /// A replay's capture-time chart series (`None` when live).
    timeline: Option<timeline::Timeline>,
    blocks: BTreeMap<std::net::IpAddr, BlockView>,
    /// Verdicts waiting for their router's answer: (verdict id, source) → (received, Unix seconds; the view).
    unconfirmed: BTreeMap<(u64, std::net::IpAddr), (u64, BlockView)>,
    /// Router → (received, Unix seconds; its table).
    router_blocks: BTreeMap<String, (u64, gatewarden_proto::messages::BlockTable)>,
    verdicts_by_kind: BTreeMap<&'static str, u64>,
    model: Option<Value>,
    links: Value,
}

/// Shared state behind the status page.
pub struct MonitorState {
    /// The role this process runs.
    pub role: Role,
    /// Where the role came from.
    pub role_source: RoleSource,
    /// This node's id.
    pub node: String,
    /// The metrics registry.
    pub registry: Arc<Registry>,
    /// Live events for the page (Server-Sent Events).
    pub events: events::Broadcaster,
    started: Instant,
    uptime: Gauge,
    nodes_refused: gatewarden_core::metrics::Counter,
    inner: Mutex<Inner>,
    unblock: Mutex<Option<UnblockHook>>,
    unblock_mac: Mutex<Option<UnblockMacHook>>,
    remote_unblock: Mutex<Option<RemoteUnblock>>,
    proc_sampler: Mutex<system::ProcSampler>,
    /// Its own lock: the router path counts every batch here without holding up the API.
    talkers: Mutex<talkers::TopTalkers>,
    /// Per-node CPU, memory and network series from every node's samples.
    pub node_metrics: system::NodeMetrics,
    /// Group policies (#9), set once when the monitor role starts them.
    pub policy: std::sync::OnceLock<Arc<gatewarden_policy::service::PolicyService>>,
    /// Model uploads from the training page and the detectors' answers.
    pub training: training::Training,
    /// The settings page's store, set once by the monitor role (or a replay).
    pub settings: std::sync::OnceLock<settings::SettingsStore>,
    /// Alerts waiting for a router to confirm their block (see [`confirm`]).
    confirmations: Mutex<confirm::Confirmations>,
    /// A copy of every stored alert for the MQTT JSON mirror ([`MonitorState::tap_alerts`]), when it runs.
    alert_tap: std::sync::OnceLock<(async_channel::Sender<Alert>, gatewarden_core::metrics::Counter)>,
    /// Held while a query scans the alert files (one scan at a time).
    file_scan: Mutex<()>,
    /// Per-alert evidence pcaps (in memory until [`MonitorState::open_evidence`]).
    evidence: Mutex<Arc<evidence::EvidenceStore>>,
    /// Routers' evidence (by verdict id) joined to stored alerts (by store id).
    evidence_links: Mutex<evidence::Linker>,
    evidence_stored: gatewarden_core::metrics::Counter,
    evidence_refused: gatewarden_core::metrics::Counter,
    /// Evidence waiting for its alert: (pieces, bytes), so the bound is visible.
    evidence_held: (gatewarden_core::metrics::Gauge, gatewarden_core::metrics::Gauge),
}

impl std::fmt::Debug for MonitorState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MonitorState").field("role", &self.role).field("node", &self.node).finish_non_exhaustive()
    }
}

/// An alert as the API and page show it: the EVE object plus a
/// `gatewarden{}` object with its fields as JSON values and its state (the
/// EVE file and the MQTT mirror carry the EVE object alone).
pub fn alert_view(a: &Alert, state: AlertState) -> Value {
    let mut v = eve_json(a);
    let mut gw = json!({
        "id": a.id,
        "kind": a.kind.as_str(),
        "confidence": a.confidence,
        "reason": a.reason,
        "node": a.node,
        "ts_ns": a.ts_ns,
        "state": state.as_str(),
    });
    if let Some(rule) = gatewarden_detect::response::rule_in_reason(&a.reason) {
        gw["rule"] = json!(rule);
    }
    if let (gatewarden_proto::messages::AlertAction::Allowed, Some(n)) = (a.action, a.not_blocked) {
        gw["not_blocked"] = json!(n.as_str());
    }
    v["gatewarden"] = gw;
    v
}

impl MonitorState {
    /// State for a process running `role`, with alerts in memory only (see [`MonitorState::attach_store`]).
    pub fn new(role: Role, role_source: RoleSource, node: String, registry: Arc<Registry>) -> Arc<MonitorState> {
        registry
            .gauge(
                "gatewarden_build_info",
                "Always 1; labels carry the version and role.",
                &[("version", env!("CARGO_PKG_VERSION")), ("role", role.as_str())],
            )
            .set(1.0);
        let uptime = registry.gauge("gatewarden_uptime_seconds", "Seconds since the process started.", &[]);
        if role.runs_monitor() {
            preregister_monitor_series(&registry);
        }
        let store = AlertStore::open(StoreOptions::in_memory(RECENT_ALERTS)).expect("an in-memory store cannot fail");
        Arc::new(MonitorState {
            role,
            role_source,
            node,
            events: events::Broadcaster::new(&registry),
            registry: registry.clone(),
            started: Instant::now(),
            uptime,
            nodes_refused: registry.counter(
                "gatewarden_monitor_nodes_refused_total",
                "Heartbeats, statuses, alerts and block tables of a node the monitor did not start tracking: more than MAX_NODES (256) nodes, or a name that is not a node id.",
                &[],
            ),
            inner: Mutex::new(Inner {
                store,
                nodes: BTreeMap::new(),
                history: VecDeque::new(),
                replay: None,
                timeline: None,
                blocks: BTreeMap::new(),
                unconfirmed: BTreeMap::new(),
                router_blocks: BTreeMap::new(),
                verdicts_by_kind: BTreeMap::new(),
                model: None,
                links: json!({}),
            }),
            unblock: Mutex::new(None),
            unblock_mac: Mutex::new(None),
            remote_unblock: Mutex::new(None),
            confirmations: Mutex::new(confirm::Confirmations::new()),
            proc_sampler: Mutex::new(system::ProcSampler::new()),
            talkers: Mutex::new(talkers::TopTalkers::new(talkers::MAX_TRACKED)),
            node_metrics: system::NodeMetrics::new(&registry),
            policy: std::sync::OnceLock::new(),
            training: training::Training::default(),
            settings: std::sync::OnceLock::new(),
            evidence: Mutex::new(Arc::new(evidence::EvidenceStore::default())),
            evidence_links: Mutex::new(evidence::Linker::default()),
            evidence_stored: registry.counter(
                "gatewarden_evidence_stored_total",
                "Evidence pcaps stored (one per alert; the oldest are deleted past evidence.store_bytes).",
                &[],
            ),
            evidence_refused: registry.counter(
                "gatewarden_evidence_refused_total",
                "Evidence not stored: the alert had a pcap already, it was larger than the store, writing failed, or it waited for an alert that never came (aged out, or pushed out past the held bounds).",
                &[],
            ),
            evidence_held: (
                registry.gauge(
                    "gatewarden_evidence_held",
                    "Evidence pcaps waiting for their alert to be stored (at most 256; the router holding the most gives up its oldest).",
                    &[],
                ),
                registry.gauge(
                    "gatewarden_evidence_held_bytes",
                    "Bytes of evidence pcaps waiting for their alert to be stored (at most 16 MiB).",
                    &[],
                ),
            ),
            alert_tap: std::sync::OnceLock::new(),
            file_scan: Mutex::new(()),
        })
    }

    /// A queue of `capacity` that gets a copy of every alert once it is
    /// stored (with its final action), for the MQTT JSON mirror. When full,
    /// copies are dropped and counted in `gatewarden_mqtt_json_dropped_total`:
    /// the mirror never holds up the store. One tap per process (`None` after the first).
    pub fn tap_alerts(&self, capacity: usize) -> Option<async_channel::Receiver<Alert>> {
        let (tx, rx) = async_channel::bounded(capacity.max(1));
        let dropped = self.registry.counter(
            "gatewarden_mqtt_json_dropped_total",
            "JSON mirror messages not published: its queue was full or the broker unreachable.",
            &[],
        );
        self.alert_tap.set((tx, dropped)).ok().map(|_| rx)
    }

    /// Keeps evidence pcaps in `dir` (`<monitor.data_dir>/evidence`), or in
    /// memory without one, at most `max_bytes` in all.
    pub fn open_evidence(&self, dir: Option<&std::path::Path>, max_bytes: u64) -> anyhow::Result<()> {
        let store = match dir {
            Some(d) => evidence::EvidenceStore::open(d, max_bytes)?,
            None => evidence::EvidenceStore::in_memory(max_bytes),
        };
        // Evidence for ids the alert store has not issued (its lines were
        // lost) would be shown with the next alerts to get those ids.
        let next = self.lock().store.next_id();
        let orphans = store.forget_from(next);
        if orphans > 0 {
            tracing::warn!(
                orphans,
                first_unissued = next,
                "deleted evidence pcaps of alerts the alert store does not hold (lost alert lines)"
            );
        }
        *self.evidence.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(store);
        Ok(())
    }

    /// The evidence store.
    pub fn evidence(&self) -> Arc<evidence::EvidenceStore> {
        self.evidence.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A router's evidence for its verdict `verdict_id`: filed under the
    /// alert that verdict came with once that alert is stored (held until
    /// then, bounded); the first pcap of an alert stays.
    pub fn record_evidence(&self, verdict_id: u64, node: &str, pcap: Vec<u8>) {
        let key = (node.to_string(), verdict_id);
        let linked = {
            let mut links = self.evidence_links.lock().unwrap_or_else(|e| e.into_inner());
            let before = links.given_up();
            let linked = links.evidence(key, pcap, Instant::now());
            self.evidence_refused.add(links.given_up() - before);
            self.show_held(&links);
            linked
        };
        match linked {
            evidence::Linked::Now(id, pcap) => self.put_evidence(id, node, &pcap),
            evidence::Linked::Held => tracing::debug!(verdict_id, node, "evidence held until its alert is stored"),
            evidence::Linked::Dropped => {
                self.evidence_refused.inc();
                tracing::debug!(
                    verdict_id,
                    node,
                    "evidence dropped: too large to hold, or one is held for that verdict"
                );
            }
        }
    }

    fn show_held(&self, links: &evidence::Linker) {
        let (n, bytes) = links.held();
        self.evidence_held.0.set(n as f64);
        self.evidence_held.1.set(bytes as f64);
    }

    /// Stores `pcap` as stored alert `id`'s evidence.
    fn put_evidence(&self, id: u64, node: &str, pcap: &[u8]) {
        match self.evidence().put(id, pcap) {
            Ok(evidence::Put::Stored { deleted }) => {
                self.evidence_stored.inc();
                tracing::debug!(alert_id = id, node, bytes = pcap.len(), deleted, "evidence pcap stored");
            }
            Ok(other) => {
                self.evidence_refused.inc();
                tracing::debug!(alert_id = id, node, bytes = pcap.len(), result = ?other, "evidence pcap not stored");
            }
            Err(e) => {
                self.evidence_refused.inc();
                tracing::warn!(alert_id = id, node, error = %format!("{e:#}"), "evidence pcap not stored");
            }
        }
    }

    /// Replaces the in-memory alert store with `store` (opened on the data directory).
    pub fn attach_store(&self, store: AlertStore) {
        self.lock().store = store;
    }

    /// Opens the alert store `cfg` describes and attaches it.
    pub fn open_store(&self, cfg: &crate::config::MonitorConfig) -> anyhow::Result<()> {
        let store = AlertStore::open(StoreOptions::from_config(cfg))?;
        self.attach_store(store);
        Ok(())
    }

    /// Lets the page's "unblock" reach the router's enforcement in this process.
    pub fn set_unblock_hook(&self, hook: UnblockHook) {
        *self.unblock.lock().unwrap_or_else(|e| e.into_inner()) = Some(hook);
    }

    /// Lets the page's "unblock" of a contained MAC reach the router's enforcement in this process.
    pub fn set_unblock_mac_hook(&self, hook: UnblockMacHook) {
        *self.unblock_mac.lock().unwrap_or_else(|e| e.into_inner()) = Some(hook);
    }

    /// Lifts a contained MAC: through enforcement if it runs in this process;
    /// otherwise says which router holds it and the command that lifts it
    /// there (the node bus's unblock request carries addresses only).
    pub fn unblock_mac(&self, mac: [u8; 6], by: &str) -> anyhow::Result<String> {
        let text = gatewarden_core::net::mac_text(&mac);
        let hook = self.unblock_mac.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let done = match hook {
            Some(h) => h(mac)?,
            None => {
                let now = unix_now();
                let inner = self.lock();
                let routers: Vec<&str> = inner
                    .router_blocks
                    .iter()
                    .filter(|(_, (at, t))| {
                        *at + BLOCK_TABLE_FRESH_S >= now
                            && t.entries.iter().any(|e| {
                                e.origin == gatewarden_proto::messages::block_origin::CONTAIN && e.target == text
                            })
                    })
                    .map(|(n, _)| n.as_str())
                    .collect();
                anyhow::ensure!(
                    !routers.is_empty(),
                    "{text} is not contained on any router whose block table the monitor has seen in the last {BLOCK_TABLE_FRESH_S} s"
                );
                anyhow::bail!(
                    "{text} is contained on {}; the dashboard lifts containments only where the router runs in this process: \
                     run `gatewarden ctl --node ROUTER unblock {text}` (or `gatewarden unblock {text}` on the router)",
                    routers.join(", ")
                )
            }
        };
        tracing::info!(mac = %text, by, "containment lifted from the dashboard");
        self.events.send("blocks", &json!({"blocks": self.blocks()}));
        Ok(done)
    }

    /// Lets the page's "unblock" reach routers on other nodes (over the node bus).
    pub fn set_remote_unblock(&self, send: RemoteUnblock) {
        *self.remote_unblock.lock().unwrap_or_else(|e| e.into_inner()) = Some(send);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes an alert: one that asks a router for a block waits for the
    /// router's answer ([`confirm`]), so its action is what happened; any
    /// other is stored (on disk when a store is attached) and shown at once.
    pub fn record_alert(&self, alert: Alert) {
        if !confirm::awaits_router(&alert) {
            return self.store_alert(alert);
        }
        let ready = self.confirmations.lock().unwrap_or_else(|e| e.into_inner()).hold(alert, Instant::now());
        for a in ready {
            self.store_alert(a);
        }
    }

    /// A router's answer to a verdict: settles the alert waiting for it.
    pub fn record_outcome(&self, o: gatewarden_proto::messages::VerdictOutcome) {
        outcomes_counter(&self.registry, o.blocked).inc();
        self.confirm_block(&o);
        let settled = self.confirmations.lock().unwrap_or_else(|e| e.into_inner()).answer(o, Instant::now());
        if let Some(a) = settled {
            self.store_alert(a);
        }
    }

    /// Stores the alerts whose routers did not answer in time (called every second).
    pub fn settle_overdue(&self) {
        let overdue = self.confirmations.lock().unwrap_or_else(|e| e.into_inner()).overdue(Instant::now());
        for a in overdue {
            self.store_alert(a);
        }
    }

    /// Stores an alert (on disk when a store is attached) and tells the page.
    fn store_alert(&self, alert: Alert) {
        if let Some(card) = self.training.observe_alert(&alert) {
            self.set_model(card);
        }
        if let Some(s) = self.settings.get() {
            s.observe_alert(&alert);
        }
        let mut inner = self.lock();
        if let Some(n) = self.node_entry(&mut inner.nodes, &alert.node) {
            n.alerts += 1;
            if alert.action == gatewarden_proto::messages::AlertAction::Blocked {
                n.blocked += 1;
            }
        }
        alerts_counter(&self.registry, alert.kind, alert.severity).inc();
        // A verdict's alert: (router, verdict id), which its router's evidence names.
        let link = alert.src.map(|_| (alert.node.clone(), alert.id));
        let stored = match inner.store.append(alert) {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "alert store write failed; the alert is kept in memory only");
                match inner.store.recent(1).next() {
                    Some(a) => a.clone(),
                    None => return,
                }
            }
        };
        drop(inner);
        if let Some((tap, dropped)) = self.alert_tap.get() {
            if tap.try_send(stored.clone()).is_err() {
                dropped.inc();
            }
        }
        if let Some(key) = link {
            let early = {
                let mut links = self.evidence_links.lock().unwrap_or_else(|e| e.into_inner());
                let early = links.alert_stored(key, stored.id);
                self.show_held(&links);
                early
            };
            if let Some(pcap) = early {
                self.put_evidence(stored.id, &stored.node, &pcap);
            }
        }
        self.events.send("alert", &alert_view(&stored, AlertState::New));
    }

    /// Records a verdict handed to the router: counted by kind, and listed
    /// under current blocks only once the router confirms it
    /// ([`MonitorState::confirm_block`]); a refused one never is.
    pub fn record_verdict(&self, v: &Verdict) {
        let now = unix_now();
        let mut inner = self.lock();
        *inner.verdicts_by_kind.entry(v.kind.as_str()).or_insert(0) += 1;
        inner.unconfirmed.retain(|_, (at, _)| *at + VERDICT_CONFIRM_WAIT_S >= now);
        let key = (v.id, v.source);
        if !inner.unconfirmed.contains_key(&key) && inner.unconfirmed.len() >= MAX_BLOCKS {
            if let Some(k) = inner.unconfirmed.iter().min_by_key(|(_, (at, _))| *at).map(|(k, _)| *k) {
                inner.unconfirmed.remove(&k);
            }
        }
        inner.unconfirmed.insert(key, (now, verdict_view(v, now, "verdict")));
    }

    /// Records a verdict of a replay (`gatewarden replay --serve`): nothing
    /// enforces it, so no router will confirm it; listed at once as `replay`
    /// so the page shows what the detector would have blocked.
    pub fn record_replayed_verdict(&self, v: &Verdict) {
        let now = unix_now();
        let mut inner = self.lock();
        *inner.verdicts_by_kind.entry(v.kind.as_str()).or_insert(0) += 1;
        insert_block(&mut inner.blocks, v.source, verdict_view(v, now, "replay"));
    }

    /// A router's answer to a verdict: a confirmed block joins current
    /// blocks (under that router) until the router's table lists it; a
    /// refused one is dropped. Called for every [`gatewarden_proto::messages::VerdictOutcome`].
    pub fn confirm_block(&self, o: &gatewarden_proto::messages::VerdictOutcome) {
        let mut inner = self.lock();
        let Some((_, mut view)) = inner.unconfirmed.remove(&(o.verdict_id, o.source)) else { return };
        if o.blocked {
            view.node = o.node.clone();
            insert_block(&mut inner.blocks, o.source, view);
        }
    }

    /// Stores a router's block table (the kernel's block sets, every 5 s).
    pub fn record_block_table(&self, mut t: gatewarden_proto::messages::BlockTable) {
        let now = unix_now();
        // A count cannot have started after now: a router whose clock runs
        // ahead of this node's is shown as counting since now.
        for e in &mut t.entries {
            e.dropped = e.dropped.map(|d| d.started_by(now).0);
        }
        let mut inner = self.lock();
        if !inner.router_blocks.contains_key(&t.node)
            && (inner.router_blocks.len() >= MAX_NODES || !gatewarden_core::identity::valid_node_id(&t.node))
        {
            self.nodes_refused.inc();
            return;
        }
        inner.router_blocks.insert(t.node.clone(), (now, t));
    }

    /// Current blocks, soonest to expire last: every fresh router table's
    /// entries (the kernel's truth), plus verdicts no table lists yet.
    pub fn blocks(&self) -> Vec<BlockView> {
        let now = unix_now();
        let mut inner = self.lock();
        inner.blocks.retain(|_, b| b.until > now);
        inner.router_blocks.retain(|_, (at, _)| *at + BLOCK_TABLE_FRESH_S >= now);
        let mut v: Vec<BlockView> = Vec::new();
        for (node, (at, t)) in &inner.router_blocks {
            for e in &t.entries {
                v.push(BlockView {
                    ip: e.target.clone(),
                    kind: e.origin.clone(),
                    reason: e.reason.clone(),
                    since: *at,
                    // No timeout (an imported feed): shown as a year.
                    until: at + u64::from(e.expires_in_s.unwrap_or(365 * 86_400)),
                    node: node.clone(),
                    source: "router table",
                    forged: if e.origin == gatewarden_proto::messages::block_origin::CONTAIN {
                        gatewarden_proto::messages::forged_in_reason(&e.reason)
                    } else {
                        Vec::new()
                    },
                    dropped: e.dropped,
                    senders: e.senders.clone(),
                });
            }
        }
        let listed: std::collections::HashSet<String> = v.iter().map(|b| b.ip.clone()).collect();
        v.extend(inner.blocks.values().filter(|b| !listed.contains(&b.ip)).cloned());
        v.sort_by_key(|b| std::cmp::Reverse(b.until));
        v.truncate(MAX_BLOCKS);
        v
    }

    /// Lifts a block: through enforcement if it runs in this process, else by
    /// asking every router whose fresh block table lists the address.
    pub fn unblock(&self, ip: std::net::IpAddr, by: &str) -> anyhow::Result<Unblocked> {
        let hook = self.unblock.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let remote = self.remote_unblock.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let text = ip.to_string();
        // Routers on other nodes whose fresh table lists it: in a set the
        // dashboard may lift (detector, admin), or only in a blocklist feed.
        // Also drops a remembered verdict for it (`known`).
        let (routers, feed_only, known) = {
            use gatewarden_proto::messages::block_origin;
            let liftable = [block_origin::DETECTOR, block_origin::ADMIN];
            let now = unix_now();
            let mut inner = self.lock();
            let mut routers = Vec::new();
            let mut feed_only = Vec::new();
            for (node, (at, t)) in &inner.router_blocks {
                if *node == self.node || *at + BLOCK_TABLE_FRESH_S < now {
                    continue;
                }
                let origins: Vec<&str> =
                    t.entries.iter().filter(|e| e.target == text).map(|e| e.origin.as_str()).collect();
                if origins.iter().any(|o| liftable.contains(o)) {
                    routers.push(node.clone());
                } else if !origins.is_empty() {
                    feed_only.push(node.clone());
                }
            }
            (routers, feed_only, inner.blocks.remove(&ip).is_some())
        };
        let done = match (hook, remote) {
            (Some(h), _) => Unblocked::Done(h(ip)?),
            (None, Some(send)) if !routers.is_empty() => {
                let req = gatewarden_proto::messages::UnblockRequest { version: unix_now_ns(), ip, by: by.to_string() };
                let sent: Vec<&str> =
                    routers.iter().filter(|r| send(r, req.clone())).map(|r| r.as_str()).collect();
                anyhow::ensure!(
                    !sent.is_empty(),
                    "the node bus dropped the request (queue full or broker unreachable); try again, or run `gatewarden ctl unblock {ip}` against the router"
                );
                tracing::info!(%ip, by, routers = ?sent, "unblock sent to routers");
                Unblocked::Asked(format!(
                    "asked {} to unblock {ip} (sealed; a router that is away gets it when it returns, within {} s); each answers in the alerts",
                    sent.join(", "),
                    gatewarden_proto::messages::MAX_UNBLOCK_REQUEST_AGE_S
                ))
            }
            (None, _) if !feed_only.is_empty() => anyhow::bail!(
                "{ip} is blocked only by a blocklist feed on {}; the dashboard lifts detector and admin blocks: remove it from the feed file and import it again (`gatewarden blocklist import`)",
                feed_only.join(", ")
            ),
            _ if known => {
                Unblocked::Done(format!("{ip} removed from the monitor's list (no enforcement runs in this process)"))
            }
            _ => anyhow::bail!(
                "{ip} is not in any router's block table the monitor has seen in the last {BLOCK_TABLE_FRESH_S} s; if a router still drops it, run `gatewarden ctl unblock {ip}` against that router"
            ),
        };
        self.events.send("blocks", &json!({"blocks": self.blocks()}));
        Ok(done)
    }

    /// Counts a flow batch's traffic for the top-talkers table.
    pub fn observe_batch(&self, batch: &FlowBatch) {
        self.talkers.lock().unwrap_or_else(|e| e.into_inner()).observe(batch);
    }

    /// Replaces the link-health table (from the link prober, once a second).
    pub fn set_links(&self, links: Value) {
        self.lock().links = links;
    }

    /// A node's interface data rate in bytes/s, from its metrics samples.
    pub fn node_rate(&self, node: &str) -> Option<f64> {
        self.node_metrics.rate(node)
    }

    /// Sets the model card the model page shows (filled by the detector's model loader).
    pub fn set_model(&self, card: Value) {
        self.lock().model = Some(card);
    }

    /// The model page's document: the card (if a model is loaded) and live verdict counts.
    pub fn model_json(&self) -> Value {
        let counters = self.registry.snapshot();
        let inner = self.lock();
        let detector: BTreeMap<&String, &f64> = counters
            .iter()
            .filter(|(k, _)| k.starts_with("gatewarden_detector") || k.starts_with("gatewarden_model"))
            .collect();
        json!({
            "model": inner.model,
            "verdicts_by_kind": inner.verdicts_by_kind,
            "alerts_by_kind": inner.store.by_kind(),
            "detector_counters": detector,
            "upload": self.training.json(),
            "uploads_possible": self.training.can_send(),
        })
    }

    /// Changes an alert's state (persisted) and tells the page.
    pub fn set_alert_state(&self, id: u64, state: AlertState, by: &str) -> anyhow::Result<Value> {
        let change = self.lock().store.set_state(id, state, by)?;
        let v = json!({"id": change.id, "state": change.state.as_str(), "by": change.by, "ts_ns": change.ts_ns});
        self.events.send("alert_state", &v);
        Ok(v)
    }

    /// Alerts matching `q`, newest first, as EVE JSON with their state.
    pub fn query_alerts(&self, q: &AlertQuery) -> anyhow::Result<Vec<Value>> {
        Ok(self.query_store(q)?.iter().map(|(a, s)| alert_view(a, *s)).collect())
    }

    /// [`MonitorState::query_alerts`] as `/api/alerts` answers it
    /// (`{"alerts":[…]}`), written alert by alert into pieces of about
    /// `piece` bytes: a JSON tree of the whole list took about five times its
    /// text (~50 MB for 10 000 alerts), and pieces let the sender free what
    /// it has sent.
    pub fn query_alerts_json(&self, q: &AlertQuery, piece: usize) -> anyhow::Result<Vec<Vec<u8>>> {
        let found = self.query_store(q)?;
        let mut pieces = Vec::new();
        let mut out = Vec::with_capacity(piece + piece / 4);
        out.extend_from_slice(b"{\"alerts\":[");
        for (i, (a, s)) in found.into_iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut out, &alert_view(&a, s))?;
            if out.len() >= piece {
                pieces.push(std::mem::replace(&mut out, Vec::with_capacity(piece + piece / 4)));
            }
        }
        out.extend_from_slice(b"]}");
        pieces.push(out);
        Ok(pieces)
    }

    /// [`AlertStore::query`] with the monitor's lock held only to plan it and
    /// to look up states: a scan of the alert files runs unlocked, one at a
    /// time (a viewer asking again and again queues behind itself, not in
    /// front of alert intake and heartbeats).
    fn query_store(&self, q: &AlertQuery) -> anyhow::Result<Vec<(Alert, AlertState)>> {
        let files = match self.lock().store.plan(q) {
            alerts::QueryPlan::Answered(v) => return Ok(v),
            alerts::QueryPlan::ScanFiles(files) => files,
        };
        let _one_scan = self.file_scan.lock().unwrap_or_else(|e| e.into_inner());
        alerts::scan_files(&files, q, |id| self.lock().store.state_of(id))
    }

    /// The attackers the recent alerts name (issue #18's incident list): one
    /// row per source address, most recent first, at most [`MAX_INCIDENTS`].
    pub fn incidents_json(&self) -> Value {
        /// One attacker's row while the alerts are counted.
        #[derive(Default)]
        struct Row {
            first: u64,
            last: u64,
            alerts: u64,
            severity: u8,
            blocked: bool,
            kinds: std::collections::BTreeSet<&'static str>,
        }
        let inner = self.lock();
        let mut by_src: BTreeMap<std::net::IpAddr, Row> = BTreeMap::new();
        for a in inner.store.recent(RECENT_ALERTS) {
            let Some(src) = a.src else { continue };
            let e = by_src.entry(src).or_insert(Row { first: u64::MAX, severity: u8::MAX, ..Row::default() });
            e.first = e.first.min(a.ts_ns);
            e.last = e.last.max(a.ts_ns);
            e.alerts += 1;
            e.severity = e.severity.min(a.severity as u8);
            e.blocked |= a.action == gatewarden_proto::messages::AlertAction::Blocked;
            e.kinds.insert(a.kind.as_str());
        }
        let mut rows: Vec<_> = by_src.into_iter().collect();
        rows.sort_by_key(|(ip, e)| (std::cmp::Reverse(e.last), *ip));
        rows.truncate(MAX_INCIDENTS);
        let rows: Vec<Value> = rows
            .into_iter()
            .map(|(ip, e)| {
                json!({"ip": ip, "first_alert": rfc3339(e.first), "last_alert": rfc3339(e.last), "alerts": e.alerts,
                       "severity": e.severity, "blocked": e.blocked, "kinds": e.kinds})
            })
            .collect();
        json!({"incidents": rows})
    }

    /// One attacker's incident (issue #18): its first packet (the earliest
    /// flow the monitor counted for it, in packet time), the alert that first
    /// detected it, the alert whose block a router confirmed, the block the
    /// kernel holds now, every alert about it (newest first, at most 100) with
    /// its reason and response rule, and where each alert's evidence pcap is.
    pub fn incident_json(&self, ip: std::net::IpAddr) -> anyhow::Result<Value> {
        let q = AlertQuery { source: Some(ip), limit: 1000, ..AlertQuery::default() };
        let alerts = self.query_store(&q)?;
        let talker = self.talkers.lock().unwrap_or_else(|e| e.into_inner()).get(&ip);
        let block = self.blocks().into_iter().find(|b| b.ip == ip.to_string());
        let blocked = alerts.iter().rev().find(|(a, _)| a.action == gatewarden_proto::messages::AlertAction::Blocked);
        // Where enforcement runs in this process, its drop counters (per nftables counter, all addresses together).
        let set_drops: BTreeMap<String, f64> = self
            .registry
            .snapshot()
            .into_iter()
            .filter_map(|(k, v)| {
                let labels = k.strip_prefix("gatewarden_nft_dropped_packets_total{")?.strip_suffix('}')?;
                Some((labels.to_string(), v))
            })
            .collect();
        let view = |(a, s): &(Alert, AlertState)| {
            let mut v = alert_view(a, *s);
            v["evidence"] = json!(format!("/api/alerts/{}/pcap", a.id));
            v
        };
        Ok(json!({
            "ip": ip,
            "first_packet": talker.map(|t| json!({"timestamp": rfc3339(t.first_ns), "ts_ns": t.first_ns,
                "packets": t.packets, "bytes": t.bytes, "flows": t.flows})),
            "detected": alerts.last().map(view),
            "blocked": blocked.map(view),
            "block": block,
            "dropped": match block.as_ref().and_then(|b| b.dropped) {
                Some(d) => json!({"packets": d.packets, "bytes": d.bytes,
                    "since": rfc3339(d.since_unix_s.saturating_mul(1_000_000_000)), "since_unix_s": d.since_unix_s,
                    "why": "this address's own element counter in the router's block set", "per_set": set_drops}),
                None => json!({"packets": null, "why": match block.as_ref().map(|b| b.source) {
                        Some("replay") => "a replay enforces nothing: no router dropped anything for it",
                        Some("verdict") => "its router confirmed the block; its block table has not listed it yet",
                        Some(_) => "the router holding this block reported no per-address counter for it (a contained MAC, or a block set without element counters)",
                        None => "not blocked now: no element counts for it",
                    }, "per_set": set_drops}),
            },
            "alerts_total": alerts.len(),
            "alerts": alerts.iter().take(100).map(view).collect::<Vec<Value>>(),
        }))
    }

    /// A node's entry, created if there is room and `node` is a node id
    /// (this node always has one); `None` (counted) otherwise.
    fn node_entry<'a>(&self, nodes: &'a mut BTreeMap<String, NodeHealth>, node: &str) -> Option<&'a mut NodeHealth> {
        if !nodes.contains_key(node)
            && node != self.node
            && (nodes.len() >= MAX_NODES || !gatewarden_core::identity::valid_node_id(node))
        {
            self.nodes_refused.inc();
            return None;
        }
        Some(nodes.entry(node.to_string()).or_default())
    }

    /// Records a heartbeat: the node is alive, with its role, version and delay.
    pub fn record_heartbeat(&self, hb: &gatewarden_proto::messages::Heartbeat) {
        let now_ns = unix_now_ns();
        let mut inner = self.lock();
        let Some(h) = self.node_entry(&mut inner.nodes, &hb.node) else { return };
        h.role = Some(hb.role);
        h.version = hb.version.clone();
        h.uptime_s = hb.uptime_s;
        h.last_seen = now_ns / 1_000_000_000;
        h.latency_ms = now_ns.saturating_sub(hb.sent_ns) as f64 / 1e6;
    }

    /// Records a node's retained online/offline status.
    pub fn set_node_online(&self, node: &str, online: bool) {
        let mut inner = self.lock();
        if let Some(n) = self.node_entry(&mut inner.nodes, node) {
            n.online = Some(online);
        }
    }

    /// Health of every known node, by node id.
    pub fn nodes(&self) -> BTreeMap<String, NodeHealth> {
        self.lock().nodes.clone()
    }

    /// Detectors and routers heard from in the last 30 s and not known to be
    /// offline, with the Unix second each booted (from its uptime).
    pub fn live_workers(&self) -> Vec<(String, u64)> {
        let now = unix_now();
        self.lock()
            .nodes
            .iter()
            .filter(|(_, n)| n.role.is_some_and(|r| r.runs_detector() || r.runs_router()))
            .filter(|(_, n)| n.online != Some(false) && n.last_seen + 30 >= now)
            .map(|(name, n)| (name.clone(), n.last_seen.saturating_sub(n.uptime_s)))
            .collect()
    }

    /// Alerts in memory (newest last), for tests and exports.
    pub fn alerts(&self) -> Vec<Alert> {
        let inner = self.lock();
        let mut v: Vec<Alert> = inner.store.recent(usize::MAX).cloned().collect();
        v.reverse();
        v
    }

    /// Alerts stored (including those read back from disk and those no longer in memory).
    pub fn alerts_total(&self) -> u64 {
        self.lock().store.total()
    }

    /// Alert counts by kind.
    pub fn alerts_by_kind(&self) -> BTreeMap<String, u64> {
        self.lock().store.by_kind().clone()
    }

    /// Recent alerts, newest first, as EVE JSON with their state.
    pub fn recent_alerts_json(&self, limit: usize) -> Vec<Value> {
        let inner = self.lock();
        inner.store.recent(limit).map(|a| alert_view(a, inner.store.state_of(a.id))).collect()
    }

    /// Records replay progress shown on the page.
    pub fn set_replay(&self, progress: Value) {
        self.lock().replay = Some(progress);
    }

    /// Sets a replay's capture-time timeline: from then on the page's charts
    /// plot the capture's own time range (`timeline` in `/api/status` and in
    /// each tick) instead of the last minutes of wall-clock time.
    pub fn set_timeline(&self, t: timeline::Timeline) {
        self.lock().timeline = Some(t);
    }

    /// The `timeline` member of `/api/status`: null when live.
    fn timeline_json(inner: &Inner) -> Value {
        match &inner.timeline {
            Some(t) => t.to_json(inner.store.recent(RECENT_ALERTS).map(|a| a.ts_ns)),
            None => Value::Null,
        }
    }

    /// Takes a chart sample, reads this node's `/proc` numbers and sends the
    /// page its update; called once a second. Returns the node's metrics
    /// sample, for nodes that send it to a monitor elsewhere.
    pub fn sample(&self) -> gatewarden_proto::messages::MetricsSample {
        self.uptime.set(self.started.elapsed().as_secs_f64());
        let now_ns = unix_now_ns();
        let proc_sample = self.proc_sampler.lock().unwrap_or_else(|e| e.into_inner()).sample(&self.node, now_ns);
        self.node_metrics.record(&proc_sample, now_ns);
        let snap = self.registry.snapshot();
        let point = HistoryPoint {
            t: unix_now(),
            packets: snap.get("gatewarden_packets_total").copied().unwrap_or(0.0),
            alerts: 0,
            flows: snap.get("gatewarden_flows_active").copied().unwrap_or(0.0),
        };
        let mut inner = self.lock();
        let point = HistoryPoint { alerts: inner.store.total(), ..point };
        // This process is a node too, alive as long as it samples.
        if let Some(me) = self.node_entry(&mut inner.nodes, &self.node) {
            me.role = Some(self.role);
            me.version = env!("CARGO_PKG_VERSION").into();
            me.uptime_s = self.started.elapsed().as_secs();
            me.last_seen = point.t;
            me.online.get_or_insert(true);
        }
        inner.history.push_back(point);
        while inner.history.len() > HISTORY_SECONDS {
            inner.history.pop_front();
        }
        drop(inner);
        if self.events.has_subscribers() {
            self.events.send("tick", &self.tick_json(point));
        }
        proc_sample
    }

    fn tick_json(&self, point: HistoryPoint) -> Value {
        let blocks = self.blocks();
        let top = self.talkers.lock().unwrap_or_else(|e| e.into_inner()).top(10);
        let inner = self.lock();
        json!({
            "point": point,
            "uptime_s": self.uptime_s(),
            "alerts_total": inner.store.total(),
            "alerts_by_kind": inner.store.by_kind(),
            "alert_states": inner.store.state_counts(),
            "nodes": inner.nodes,
            "top_talkers": top,
            "blocks": blocks,
            "verdicts_by_kind": inner.verdicts_by_kind,
            "links": inner.links,
            "replay": inner.replay,
            "timeline": Self::timeline_json(&inner),
        })
    }

    /// Seconds since start.
    pub fn uptime_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// The part of `/api/status` anyone may read: who this node is.
    pub fn identity_json(&self) -> Value {
        json!({
            "node": self.node,
            "role": self.role.as_str(),
            "role_source": self.role_source,
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_s": self.uptime_s(),
        })
    }

    /// The `/api/status` document.
    pub fn status_json(&self) -> Value {
        self.uptime.set(self.uptime_s());
        let counters = self.registry.snapshot();
        let blocks = self.blocks();
        let top = self.talkers.lock().unwrap_or_else(|e| e.into_inner()).top(10);
        let inner = self.lock();
        json!({
            "node": self.node,
            "role": self.role.as_str(),
            "role_source": self.role_source,
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_s": self.uptime_s(),
            "alerts_total": inner.store.total(),
            "alerts_by_kind": inner.store.by_kind(),
            "alert_states": inner.store.state_counts(),
            "alert_store": {"persistent": inner.store.persistent(), "recovery": inner.store.recovery()},
            "nodes": inner.nodes,
            "top_talkers": top,
            "blocks": blocks,
            "verdicts_by_kind": inner.verdicts_by_kind,
            "links": inner.links,
            "counters": counters,
            "history": inner.history,
            "replay": inner.replay,
            "timeline": Self::timeline_json(&inner),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_table_is_bounded_and_refuses_rather_than_evicts() {
        let reg = Registry::new();
        let st = MonitorState::new(Role::Monitor, RoleSource::Flag, "mon".into(), reg.clone());
        let hb = |n: String| gatewarden_proto::messages::Heartbeat {
            node: n,
            role: Role::Router,
            version: "v".into(),
            uptime_s: 1,
            sent_ns: 0,
        };
        st.record_heartbeat(&hb("first".into()));
        for i in 0..MAX_NODES + 50 {
            st.record_heartbeat(&hb(format!("n{i}")));
        }
        st.record_heartbeat(&hb("bad name\n".into()));
        let nodes = st.nodes();
        assert_eq!(nodes.len(), MAX_NODES);
        assert!(nodes.contains_key("first"), "an early node is not pushed out");
        assert_eq!(reg.snapshot()["gatewarden_monitor_nodes_refused_total"], 52.0);
        st.sample();
        assert!(st.nodes().contains_key("mon"), "this node always has its entry");
    }

    #[test]
    fn incidents_name_each_attacker_and_trace_first_packet_detection_and_evidence() {
        use gatewarden_proto::messages::{AlertAction, AttackKind, FlowRecord, Proto, Severity};
        let st = MonitorState::new(Role::All, RoleSource::Flag, "gw".into(), Registry::new());
        let t0 = 1_700_000_000_000_000_000u64;
        let at = |i: u64, src: &str, id: u64| Alert {
            id,
            ts_ns: t0 + i * 1_000_000_000,
            node: "gw".into(),
            flow_id: i,
            kind: AttackKind::PortScan,
            severity: Severity::Medium,
            src: Some(src.parse().unwrap()),
            dst: Some("192.0.2.10".parse().unwrap()),
            sport: 40000,
            dport: 22,
            proto: Some(Proto::Tcp),
            action: AlertAction::Allowed,
            signature_id: 9_000_001,
            signature: "GATEWARDEN port scan".into(),
            confidence: 0.9,
            reason: format!("alert number {i}"),
            flow: None,
            not_blocked: Some(gatewarden_proto::messages::NotBlocked::EnforcementOff),
            in_iface: String::new(),
        };
        st.record_alert(at(5, "192.0.2.66", 2));
        st.record_alert(at(1, "192.0.2.66", 1));
        st.record_alert(at(9, "2001:db8::9", 3));
        let flow = FlowRecord {
            flow_id: 7,
            src: "192.0.2.66".parse().unwrap(),
            dst: "192.0.2.10".parse().unwrap(),
            sport: 1,
            dport: 2,
            proto: Proto::Tcp,
            first_ns: t0 + 500_000_000,
            last_ns: t0 + 600_000_000,
            fwd_packets: 3,
            rev_packets: 1,
            fwd_bytes: 180,
            rev_bytes: 60,
            conn_state: gatewarden_proto::conn_state::ConnState::S0,
            src_answered: false,
        };
        st.observe_batch(&FlowBatch {
            node: "gw".into(),
            seq: 0,
            flows: vec![flow],
            hosts: vec![],
            in_iface: String::new(),
            shed: Vec::new(),
        });

        let list = st.incidents_json();
        let rows = list["incidents"].as_array().unwrap();
        assert_eq!(rows.len(), 2, "{list}");
        assert_eq!(rows[0]["ip"], "2001:db8::9", "the latest attacker first: {list}");
        assert_eq!(rows[1]["alerts"], 2);
        assert_eq!(rows[1]["kinds"], json!(["port_scan"]));

        let inc = st.incident_json("192.0.2.66".parse().unwrap()).unwrap();
        assert_eq!(inc["first_packet"]["ts_ns"], t0 + 500_000_000, "{inc}");
        assert_eq!(inc["first_packet"]["packets"], 4);
        assert_eq!(inc["detected"]["gatewarden"]["id"], 1, "the earliest alert detected it: {inc}");
        assert_eq!(inc["detected"]["evidence"], "/api/alerts/1/pcap");
        assert_eq!(inc["alerts_total"], 2);
        assert_eq!(inc["blocked"], Value::Null, "no alert was confirmed blocked");
        assert_eq!(inc["dropped"]["packets"], Value::Null, "not counted per address: said, not invented");
        assert_eq!(inc["dropped"]["per_set"], json!({}), "no enforcement in this process");
        st.registry
            .counter("gatewarden_nft_dropped_packets_total", "drops", &[("counter", "drop_detector4")])
            .set_total(42);
        let inc = st.incident_json("192.0.2.66".parse().unwrap()).unwrap();
        assert_eq!(inc["dropped"]["per_set"], json!({"counter=drop_detector4": 42.0}), "{inc}");
        // A router's table with the address's own element counter: the incident says how many and since when.
        let entry = |target: &str, dropped| gatewarden_proto::messages::BlockEntry {
            target: target.into(),
            expires_in_s: Some(600),
            origin: "detector".into(),
            reason: "port scan".into(),
            dropped,
            senders: Vec::new(),
        };
        let counted = gatewarden_proto::messages::Dropped { packets: 17, bytes: 1428, since_unix_s: 1_700_000_040 };
        st.record_block_table(gatewarden_proto::messages::BlockTable {
            node: "gw".into(),
            total: 2,
            entries: vec![
                entry("192.0.2.66", Some(counted)),
                entry("2001:db8::9", None),
                // A router whose clock runs ahead: its count is shown as starting now, not in 2099.
                entry(
                    "192.0.2.67",
                    Some(gatewarden_proto::messages::Dropped { since_unix_s: 4_070_908_800, ..counted }),
                ),
            ],
        });
        let ahead = st.incident_json("192.0.2.67".parse().unwrap()).unwrap();
        assert!(ahead["dropped"]["since_unix_s"].as_u64() <= Some(unix_now()), "{ahead}");
        assert_eq!(ahead["dropped"]["packets"], 17, "{ahead}");
        let inc = st.incident_json("192.0.2.66".parse().unwrap()).unwrap();
        assert_eq!(inc["dropped"]["packets"], 17, "{inc}");
        assert_eq!(
            (&inc["dropped"]["bytes"], &inc["dropped"]["since"]),
            (&json!(1428), &json!("2023-11-14T22:14:00.000000+0000"))
        );
        assert_eq!(inc["block"]["dropped"]["packets"], 17, "the Blocks table row carries it too");
        let uncounted = st.incident_json("2001:db8::9".parse().unwrap()).unwrap();
        assert_eq!(uncounted["dropped"]["packets"], Value::Null, "no counter reached the monitor: not a zero");
        let none = st.incident_json("198.51.100.1".parse().unwrap()).unwrap();
        assert_eq!((none["alerts_total"].as_u64(), &none["detected"]), (Some(0), &Value::Null));

        // A replay's timeline: the alerts land in the capture's own buckets.
        assert_eq!(st.status_json()["timeline"], Value::Null, "live: no capture timeline");
        let mut tl = timeline::Timeline::new(t0);
        tl.add(t0 + 9_500_000_000);
        st.set_timeline(tl);
        let v = st.status_json()["timeline"].clone();
        assert_eq!(v["alerts"].as_array().unwrap().iter().filter_map(Value::as_u64).sum::<u64>(), 3, "{v}");
        assert_eq!(v["alerts"][1], 1, "{v}");
    }

    fn verdict(id: u64, source: &str) -> Verdict {
        Verdict {
            id,
            source: source.parse().unwrap(),
            kind: gatewarden_proto::messages::AttackKind::PortScan,
            confidence: 1.0,
            reason: "scan".into(),
            evidence: Vec::new(),
            ttl_s: 600,
            issued_ns: 0,
            source_proof: gatewarden_proto::messages::SourceProof::Answered,
            sender: String::new(),
        }
    }

    fn outcome(id: u64, source: &str, blocked: bool) -> gatewarden_proto::messages::VerdictOutcome {
        gatewarden_proto::messages::VerdictOutcome {
            node: "gw".into(),
            verdict_id: id,
            source: source.parse().unwrap(),
            blocked,
            why: if blocked { "in the detector block set".into() } else { "router refused the block".into() },
            not_blocked: (!blocked).then_some(gatewarden_proto::messages::NotBlocked::Unproven),
        }
    }

    #[test]
    fn current_blocks_list_a_verdict_only_once_its_router_confirms_it() {
        let st = MonitorState::new(Role::All, RoleSource::Flag, "gw".into(), Registry::new());
        let listed = |st: &MonitorState| st.blocks().into_iter().map(|b| b.ip).collect::<Vec<_>>();
        st.record_verdict(&verdict(1, "203.0.113.5"));
        st.record_verdict(&verdict(2, "192.0.2.10"));
        assert!(listed(&st).is_empty(), "a verdict is not a block until its router says so: {:?}", listed(&st));
        st.record_outcome(outcome(2, "192.0.2.10", false));
        st.record_outcome(outcome(1, "203.0.113.5", true));
        assert_eq!(listed(&st), vec!["203.0.113.5"]);
        let b = &st.blocks()[0];
        assert_eq!((b.node.as_str(), b.source), ("gw", "verdict"));
        // A late "blocked" for the refused one (another id) does not list it either.
        st.record_outcome(outcome(9, "192.0.2.10", true));
        assert_eq!(listed(&st), vec!["203.0.113.5"]);
        // A router's table lists a contained MAC with what it forged.
        st.record_block_table(gatewarden_proto::messages::BlockTable {
            node: "gw".into(),
            total: 1,
            entries: vec![gatewarden_proto::messages::BlockEntry {
                target: "02:00:00:00:0a:66".into(),
                expires_in_s: Some(3000),
                origin: "contain".into(),
                reason: "spoofing: forged 192.0.2.10, 255.255.255.255".into(),
                dropped: None,
                senders: Vec::new(),
            }],
        });
        let mac = st.blocks().into_iter().find(|b| b.kind == "contain").expect("the contained MAC");
        assert_eq!(mac.forged, vec!["192.0.2.10", "255.255.255.255"]);
        assert_eq!(serde_json::to_value(&mac).unwrap()["ip"], "02:00:00:00:0a:66");
    }
}
