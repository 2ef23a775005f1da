//! The dashboard's settings page: detector thresholds and TTLs, the response
//! policy (`[response]`: per attack kind block / alert / ignore), and the
//! routers' allowlist, changed at run time by an administrator.
//!
//! The monitor is the source of truth: it validates a change exactly as
//! `gatewarden config check` would, keeps it in `monitor.data_dir/settings.json`
//! (so it survives restarts), and sends it to every detector and router
//! (sealed `settings_update`, or in process); it sends it again every 30 s so
//! a node that restarted catches up. Each node checks it again against its
//! own config, applies it in place and answers with a system alert; those
//! answers are the per-node results the page shows. Until an administrator
//! saves once, nodes run their own config files and nothing is sent.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::training::Refusal;
use gatewarden_detect::config::DetectorConfig;
use gatewarden_detect::response::{Action, ResponseConfig};
use gatewarden_proto::messages::{Alert, SettingsUpdate};
use gatewarden_proto::signatures::{
    SETTINGS_APPLIED as SIG_SETTINGS_APPLIED, SETTINGS_REFUSED as SIG_SETTINGS_REFUSED,
};

/// `[detector]` keys set per node in its config file, never from the page:
/// what validating an uploaded model may cost a node (gatewarden-detect's
/// validator), and `home_net`, a fact of each site's network like its
/// interfaces.
pub const NODE_ONLY: &[&str] =
    &["model_check_memory_mb", "model_check_timeout_s", "model_max_batch", "home_net", "state_dir"];

/// Sends settings towards the detectors and routers; false if they could not be queued.
pub type SettingsSender = Arc<dyn Fn(SettingsUpdate) -> bool + Send + Sync>;

/// How often saved settings are sent again (nodes ignore a version they run).
pub const RESEND: Duration = Duration::from_secs(30);

/// Largest settings request body.
pub const MAX_SETTINGS_BODY: u64 = 64 * 1024;

/// What `settings.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Saved {
    version: u64,
    by: String,
    detector: DetectorConfig,
    allowlist: Vec<String>,
    /// `[response]`; absent in files saved before it existed (then: this monitor's config).
    #[serde(default)]
    response: Option<ResponseConfig>,
}

/// What the settings page starts from: this monitor's own `[detector]`,
/// `[response]` and allowlist, where to keep saved settings, and how a change
/// is checked before it is sent (the node's own config validation, which the
/// binary composes; every node checks again on receipt).
pub struct SettingsBase {
    /// `[detector]` of this monitor's config.
    pub detector: DetectorConfig,
    /// `[response]` of this monitor's config.
    pub response: ResponseConfig,
    /// `[enforce] allowlist` of this monitor's config.
    pub allowlist: Vec<String>,
    /// `monitor.data_dir` (empty: settings are not kept across restarts).
    pub data_dir: PathBuf,
    /// Checks an update as if written into this monitor's config; `Err` says why not.
    pub check: SettingsCheck,
}

/// See [`SettingsBase::check`].
pub type SettingsCheck = Arc<dyn Fn(&SettingsUpdate) -> Result<(), String> + Send + Sync>;

/// The settings and what each node made of the last change.
pub struct SettingsStore {
    base_response: ResponseConfig,
    check: SettingsCheck,
    path: Option<PathBuf>,
    current: Mutex<Saved>,
    results: Mutex<BTreeMap<String, Value>>,
    /// Node → when it answered the current version (Unix seconds).
    answered: Mutex<BTreeMap<String, u64>>,
    sender: OnceLock<SettingsSender>,
    last_sent: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for SettingsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SettingsStore").field("path", &self.path).finish_non_exhaustive()
    }
}

fn refuse(status: u16, reason: impl Into<String>) -> Refusal {
    Refusal { status, reason: reason.into() }
}

impl SettingsStore {
    /// Settings from `monitor.data_dir/settings.json` when an administrator
    /// saved some, else this monitor's own config (not sent until saved).
    pub fn open(base: SettingsBase) -> SettingsStore {
        let dir = &base.data_dir;
        let path = (!dir.as_os_str().is_empty()).then(|| dir.join("settings.json"));
        let from_config = Saved {
            version: 0,
            by: String::new(),
            detector: base.detector.clone(),
            allowlist: base.allowlist.clone(),
            response: Some(base.response.clone()),
        };
        let mut current = match path.as_ref().filter(|p| p.exists()) {
            Some(p) => match std::fs::read_to_string(p)
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::from_str::<Saved>(&t).map_err(|e| e.to_string()))
            {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(path = %p.display(), error = %e, "saved settings unreadable; using the config file's (save them again on the settings page)");
                    from_config
                }
            },
            None => from_config,
        };
        current.response.get_or_insert_with(|| base.response.clone());
        SettingsStore {
            base_response: base.response,
            check: base.check,
            path,
            current: Mutex::new(current),
            results: Mutex::new(BTreeMap::new()),
            answered: Mutex::new(BTreeMap::new()),
            sender: OnceLock::new(),
            last_sent: Mutex::new(None),
        }
    }

    /// Connects the store to the nodes (set once by the monitor role).
    pub fn set_sender(&self, sender: SettingsSender) {
        let _ = self.sender.set(sender);
    }

    fn update(&self, s: &Saved) -> SettingsUpdate {
        SettingsUpdate {
            version: s.version,
            detector: serde_json::to_string(&s.detector).unwrap_or_default(),
            allowlist: s.allowlist.clone(),
            by: s.by.clone(),
            response: s.response.as_ref().and_then(|r| serde_json::to_string(r).ok()).unwrap_or_default(),
        }
    }

    /// Applies a change (`{"detector": {key: value, …}, "response": {kind:
    /// "block" | "alert" | "ignore", …}, "allowlist": […]}`, each optional)
    /// from an administrator, validated, kept and sent.
    pub fn save(&self, body: &[u8], by: &str) -> Result<Value, Refusal> {
        let req: Value = serde_json::from_slice(body).map_err(|e| {
            refuse(
                400,
                format!("the body is not JSON ({e}); send {{\"detector\": {{…}}, \"allowlist\": [\"192.0.2.0/24\"]}}"),
            )
        })?;
        let Some(obj) = req.as_object() else { return Err(refuse(400, "send a JSON object")) };
        if let Some(k) = obj.keys().find(|k| !["detector", "allowlist", "response"].contains(&k.as_str())) {
            return Err(refuse(
                422,
                format!("unknown setting {k:?}: the page changes \"detector\", \"response\" and \"allowlist\""),
            ));
        }
        let Some(send) = self.sender.get() else {
            return Err(refuse(503, "no detector or router is connected to this monitor"));
        };
        let mut next = self.current.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(d) = obj.get("detector") {
            let Some(changes) = d.as_object() else {
                return Err(refuse(400, "\"detector\" must be an object of key: value"));
            };
            let mut all = serde_json::to_value(&next.detector).unwrap_or_default();
            for (k, v) in changes {
                if k == "model" || k == "model_store" {
                    return Err(refuse(422, format!("detector.{k} is per node; upload models on the training page")));
                }
                if k == "model_alone_blocks" {
                    return Err(refuse(
                        422,
                        "detector.model_alone_blocks is now response.model_alone (\"block\", \"alert\" or \"ignore\")",
                    ));
                }
                if NODE_ONLY.contains(&k.as_str()) {
                    return Err(refuse(
                        422,
                        format!("detector.{k} is set in each node's config file, not on this page"),
                    ));
                }
                if all.get(k).is_none() {
                    return Err(refuse(422, format!("unknown setting detector.{k}")));
                }
                all[k] = v.clone();
            }
            next.detector = serde_json::from_value(all).map_err(|e| refuse(422, format!("[detector]: {e}")))?;
        }
        if let Some(r) = obj.get("response") {
            let Some(changes) = r.as_object() else {
                return Err(refuse(400, "\"response\" must be an object of key: value"));
            };
            let current = next.response.clone().unwrap_or_else(|| self.base_response.clone());
            let mut all = serde_json::to_value(&current).unwrap_or_default();
            for (k, v) in changes {
                let Some(was) = all.get(k) else {
                    return Err(refuse(422, format!("unknown setting response.{k}")));
                };
                // An action key takes only the three words, and says so by name.
                if was.is_string() && v.as_str().and_then(Action::parse).is_none() {
                    return Err(refuse(422, format!("response.{k} = {v}: must be \"block\", \"alert\" or \"ignore\"")));
                }
                all[k] = v.clone();
            }
            next.response = Some(serde_json::from_value(all).map_err(|e| refuse(422, format!("[response]: {e}")))?);
        }
        if let Some(a) = obj.get("allowlist") {
            next.allowlist = serde_json::from_value(a.clone())
                .map_err(|e| refuse(422, format!("\"allowlist\" must be a list of networks as text: {e}")))?;
        }
        next.version = gatewarden_core::clock::unix_now_ns();
        next.by = by.to_string();
        let update = self.update(&next);
        (self.check)(&update).map_err(|e| refuse(422, e))?;
        if let Some(p) = &self.path {
            let text = serde_json::to_string_pretty(&next).unwrap_or_default();
            gatewarden_core::atomic_file::write_atomic(p, text.as_bytes())
                .map_err(|e| refuse(500, format!("settings not saved ({e:#}); check monitor.data_dir")))?;
        }
        // Current before sending: an in-process node answers at once, and its
        // answer must find the version it answers.
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = next.clone();
        self.results.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.answered.lock().unwrap_or_else(|e| e.into_inner()).clear();
        *self.last_sent.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        if !send(update) {
            return Err(refuse(
                503,
                "the settings were saved but could not be queued for the nodes; they go out with the next resend",
            ));
        }
        tracing::info!(by, version = next.version, "settings saved and sent to the detectors and routers");
        Ok(json!({"version": next.version, "status": "saved and sent; each node answers with a system alert"}))
    }

    /// Sends the saved settings again when [`RESEND`] has passed and some
    /// node still needs them (called once a second). `nodes` are the online
    /// detectors and routers with the Unix second they booted: a node that has
    /// not answered this version, or restarted since it did, needs them. A
    /// node away for a day therefore costs nothing: resends only go out while
    /// someone is there to take them (they are spooled until acked).
    pub fn resend_if_due(&self, nodes: &[(String, u64)]) {
        self.resend_if_due_at(nodes, Instant::now());
    }

    /// [`SettingsStore::resend_if_due`] with the clock given.
    pub fn resend_if_due_at(&self, nodes: &[(String, u64)], now: Instant) {
        let Some(send) = self.sender.get() else { return };
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if current.version == 0 {
            return;
        }
        let needed = {
            let answered = self.answered.lock().unwrap_or_else(|e| e.into_inner());
            // 5 s of slack: the answer's time is the node's clock, the boot time the monitor's.
            nodes.iter().any(|(n, booted)| answered.get(n).is_none_or(|at| at + 5 < *booted))
        };
        let mut last = self.last_sent.lock().unwrap_or_else(|e| e.into_inner());
        if needed && last.is_none_or(|t| now.saturating_duration_since(t) >= RESEND) {
            *last = Some(now);
            send(self.update(&current));
        }
    }

    /// Notes a node's answer (a settings applied / refused system alert).
    pub fn observe_alert(&self, a: &Alert) {
        if a.signature_id != SIG_SETTINGS_APPLIED && a.signature_id != SIG_SETTINGS_REFUSED {
            return;
        }
        let Some(version) =
            a.reason.strip_prefix("settings ").and_then(|r| r.split(':').next()).and_then(|v| v.parse::<u64>().ok())
        else {
            return;
        };
        if version != self.current.lock().unwrap_or_else(|e| e.into_inner()).version {
            return;
        }
        self.answered.lock().unwrap_or_else(|e| e.into_inner()).insert(a.node.clone(), a.ts_ns / 1_000_000_000);
        self.results.lock().unwrap_or_else(|e| e.into_inner()).insert(
            a.node.clone(),
            json!({"ok": a.signature_id == SIG_SETTINGS_APPLIED, "reason": a.reason, "ts": gatewarden_core::clock::rfc3339(a.ts_ns)}),
        );
    }

    /// The settings page's document.
    pub fn json(&self) -> Value {
        let c = self.current.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut detector = serde_json::to_value(&c.detector).unwrap_or_default();
        if let Some(o) = detector.as_object_mut() {
            o.remove("model");
            o.remove("model_store");
            // Shown as response.model_alone (the response policy's section).
            o.remove("model_alone_blocks");
            for k in NODE_ONLY {
                o.remove(*k);
            }
        }
        json!({
            "version": c.version,
            "saved": c.version > 0,
            "by": c.by,
            "at": (c.version > 0).then(|| gatewarden_core::clock::rfc3339(c.version)),
            "detector": detector,
            "response": c.response.as_ref().unwrap_or(&self.base_response),
            "allowlist": c.allowlist,
            "results": *self.results.lock().unwrap_or_else(|e| e.into_inner()),
            "can_send": self.sender.get().is_some(),
        })
    }
}
