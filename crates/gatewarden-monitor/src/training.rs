//! The dashboard's training page: an administrator uploads a `.tflite` and
//! its model card; the monitor checks them exactly as a detector would —
//! the card's schema here, then the `.tflite` in the validator's child
//! process ([`gatewarden_detect::validator`]: shapes, batch bound, the card's
//! reference outputs, under memory and time limits, so a crafted file cannot
//! crash the monitor) — refuses a bad one with the reason (422), and
//! sends an accepted model to the detectors (in process, or sealed over
//! MQTT as a `model_update`). Each detector checks it again, hot-swaps it
//! between two batches and answers with a system alert; those answers are
//! the per-detector results the page shows. Every upload is answered: a
//! detector refuses one not newer than the upload it runs (with the reason),
//! and an upload no detector answers within [`Training::answer_timeout`] is
//! shown as timed out, so neither the page nor the API waits forever.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64ct::{Base64, Encoding};
use serde_json::{json, Value};

use gatewarden_detect::model::{check_card, parse_card, ModelCard};
use gatewarden_detect::validator::{self, Limits, Rejected};
use gatewarden_proto::messages::{Alert, ModelUpdate, MAX_MODEL_BYTES};
use gatewarden_proto::signatures::{MODEL_LOADED as SIG_MODEL_LOADED, MODEL_REFUSED as SIG_MODEL_REFUSED};

/// Sends an accepted upload towards the detectors; false if it could not be queued.
pub type ModelSender = Arc<dyn Fn(ModelUpdate) -> bool + Send + Sync>;

pub use crate::config::MAX_UPLOAD_BODY;

/// Why an upload was not accepted: HTTP status and a sentence for the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 400 (bad request), 413 (too large), 422 (invalid model), 503 (no detector reachable).
    pub status: u16,
    /// What is wrong and what to do.
    pub reason: String,
}

fn refuse(status: u16, reason: impl Into<String>) -> Refusal {
    Refusal { status, reason: reason.into() }
}

#[derive(Debug, Clone)]
struct Upload {
    version: u64,
    name: String,
    by: String,
    bytes: usize,
    card: Value,
    /// When it was sent (monotonic: the timeout holds whatever the wall clock does).
    sent: Instant,
    /// Detector node → its answer.
    results: BTreeMap<String, Value>,
}

/// Time a detector has to answer beyond its validator's own limit
/// (`detector.model_check_timeout_s`): the trip over the bus and the load.
pub const ANSWER_SLACK: Duration = Duration::from_secs(40);

/// Uploads and what the detectors made of them.
#[derive(Default)]
pub struct Training {
    sender: OnceLock<ModelSender>,
    /// The validator's limits (`[detector]` of this node's config; defaults until set).
    limits: OnceLock<Limits>,
    last: Mutex<Option<Upload>>,
}

impl std::fmt::Debug for Training {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Training").field("can_send", &self.sender.get().is_some()).finish_non_exhaustive()
    }
}

impl Training {
    /// Connects uploads to the detectors (set once by the monitor role).
    pub fn set_sender(&self, sender: ModelSender) {
        let _ = self.sender.set(sender);
    }

    /// The validator's limits for uploads (set once by the monitor role).
    pub fn set_limits(&self, limits: Limits) {
        let _ = self.limits.set(limits);
    }

    /// Checks an upload request (`{"tflite_base64": "...", "card": {...} | "..."}`)
    /// and sends the model to the detectors. `by` is the admin's token subject.
    pub fn upload(&self, body: &[u8], by: &str) -> Result<Value, Refusal> {
        if body.len() as u64 > MAX_UPLOAD_BODY {
            return Err(refuse(
                413,
                format!("upload of {} bytes exceeds the {MAX_UPLOAD_BODY}-byte limit", body.len()),
            ));
        }
        let req: Value = serde_json::from_slice(body).map_err(|e| {
            refuse(400, format!("the body is not JSON ({e}); send {{\"tflite_base64\": \"…\", \"card\": {{…}}}}"))
        })?;
        let b64 = req["tflite_base64"]
            .as_str()
            .ok_or_else(|| refuse(400, "missing \"tflite_base64\": the .tflite file, base64-encoded"))?;
        let tflite =
            Base64::decode_vec(b64.trim()).map_err(|e| refuse(400, format!("\"tflite_base64\" is not base64: {e}")))?;
        let card = match &req["card"] {
            Value::String(s) => s.clone(),
            Value::Object(_) => req["card"].to_string(),
            _ => return Err(refuse(400, "missing \"card\": the model card (JSON object or its text)")),
        };
        if tflite.len() + card.len() > MAX_MODEL_BYTES {
            return Err(refuse(
                413,
                format!(
                    "model and card are {} bytes; the bus carries at most {MAX_MODEL_BYTES}",
                    tflite.len() + card.len()
                ),
            ));
        }
        // The same checks a detector runs: a refusal here names the problem before anything is sent.
        // The card is plain JSON (checked here); the .tflite reaches tract only in the validator's child.
        let parsed: ModelCard = parse_card(&card, "uploaded model").map_err(|e| refuse(422, e.to_string()))?;
        check_card(&parsed, "uploaded model").map_err(|e| refuse(422, e.to_string()))?;
        let Some(send) = self.sender.get() else {
            return Err(refuse(503, "no detector is connected to this monitor (run a detector, or --role all)"));
        };
        let default_limits = Limits::default();
        let limits = self.limits.get().unwrap_or(&default_limits);
        let report = validator::validate(&tflite, &card, limits).map_err(|e| match e {
            Rejected::Invalid(r) => refuse(422, format!("uploaded model refused: {r}")),
            Rejected::Unavailable(r) => refuse(503, r),
        })?;
        tracing::info!(name = %report.name, batch = report.batch, max_err = report.max_err, "uploaded model passed the validator");
        let name = parsed.name.clone();
        let card_value = serde_json::to_value(&parsed).unwrap_or(Value::Null);
        let bytes = tflite.len();
        // Recorded before sending: an in-process detector answers at once, and
        // its answer must find the upload it answers.
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        // Detectors refuse an upload not newer than the one they run: this monitor's
        // uploads stay in order even if its clock steps back while it runs.
        let version = gatewarden_core::clock::unix_now_ns().max(last.as_ref().map_or(0, |u| u.version) + 1);
        let previous = last.replace(Upload {
            version,
            name: name.clone(),
            by: by.to_string(),
            bytes,
            card: card_value,
            sent: Instant::now(),
            results: BTreeMap::new(),
        });
        drop(last);
        if !send(ModelUpdate { version, tflite, card, by: by.to_string() }) {
            *self.last.lock().unwrap_or_else(|e| e.into_inner()) = previous;
            return Err(refuse(
                503,
                "no detector took the model: its queue is full, or no detector runs any more (a finished replay has none; `gatewarden run` keeps one running)",
            ));
        }
        tracing::info!(%name, %by, version, "model upload accepted and sent to the detectors");
        Ok(json!({
            "version": version,
            "name": name,
            "bytes": bytes,
            "status": "sent to the detectors; each answers with a system alert",
            "timeout_s": self.answer_timeout().as_secs(),
        }))
    }

    /// How long an upload waits for the detectors' answers before the page
    /// shows it as timed out (a late answer is still shown when it comes).
    pub fn answer_timeout(&self) -> Duration {
        let default_limits = Limits::default();
        let limits = self.limits.get().unwrap_or(&default_limits);
        Duration::from_secs(limits.timeout_s) + ANSWER_SLACK
    }

    /// Notes a detector's answer to an upload (a `model loaded` / `model refused`
    /// system alert). Returns the card when a detector now runs the upload, so
    /// the model page shows it even on a monitor without a detector in process.
    pub fn observe_alert(&self, a: &Alert) -> Option<Value> {
        if a.signature_id != SIG_MODEL_LOADED && a.signature_id != SIG_MODEL_REFUSED {
            return None;
        }
        let version: u64 = a.reason.strip_prefix("upload ")?.split(':').next()?.parse().ok()?;
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let up = last.as_mut().filter(|u| u.version == version)?;
        let ok = a.signature_id == SIG_MODEL_LOADED;
        up.results.insert(
            a.node.clone(),
            json!({"ok": ok, "reason": a.reason, "ts": gatewarden_core::clock::rfc3339(a.ts_ns)}),
        );
        ok.then(|| up.card.clone())
    }

    /// The last upload and the detectors' answers, for the training page.
    /// `state`: `pending` (no answer yet), `loaded` (every answer), `refused`
    /// (every answer), `partly_refused`, or `timed_out` (no answer within
    /// [`Training::answer_timeout`]); `error` says why when not loaded.
    pub fn json(&self) -> Value {
        self.json_at(Instant::now())
    }

    /// [`Training::json`] with the clock given.
    pub fn json_at(&self, now: Instant) -> Value {
        let timeout = self.answer_timeout();
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let Some(u) = &*last else { return Value::Null };
        let refusals: Vec<&str> =
            u.results.values().filter(|r| r["ok"] != true).map(|r| r["reason"].as_str().unwrap_or("refused")).collect();
        let (state, error) = if u.results.is_empty() {
            if now.saturating_duration_since(u.sent) < timeout {
                ("pending", None)
            } else {
                let why = format!(
                    "no detector answered within {} s; the detectors keep the model they run. Check on the Nodes \
                     page that a detector is online and reaches the broker, then upload again (a late answer still shows here)",
                    timeout.as_secs()
                );
                ("timed_out", Some(why))
            }
        } else if refusals.is_empty() {
            ("loaded", None)
        } else if refusals.len() == u.results.len() {
            ("refused", Some(refusals.join("; ")))
        } else {
            ("partly_refused", Some(refusals.join("; ")))
        };
        let mut v = json!({
            "version": u.version,
            "name": u.name,
            "by": u.by,
            "bytes": u.bytes,
            "at": gatewarden_core::clock::rfc3339(u.version),
            "state": state,
            "timeout_s": timeout.as_secs(),
            "results": u.results,
        });
        if let Some(e) = error {
            v["error"] = Value::from(e);
        }
        v
    }

    /// Whether uploads can reach a detector.
    pub fn can_send(&self) -> bool {
        self.sender.get().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatewarden_proto::messages::{AttackKind, Severity};

    /// A training page with upload `version` sent and not answered yet.
    fn pending(version: u64) -> Training {
        let t = Training::default();
        *t.last.lock().unwrap() = Some(Upload {
            version,
            name: "host-mlp-old".into(),
            by: "admin".into(),
            bytes: 10,
            card: json!({"name": "host-mlp-old"}),
            sent: Instant::now(),
            results: BTreeMap::new(),
        });
        t
    }

    fn answer(node: &str, sig: u32, reason: String) -> Alert {
        Alert::about_system(node, AttackKind::System, Severity::High, sig, "GATEWARDEN SYSTEM model refused", reason)
    }

    #[test]
    fn a_refused_upload_is_shown_refused_with_the_detectors_reason_not_pending() {
        let t = pending(3);
        assert_eq!(t.json()["state"], "pending", "{}", t.json());
        let reason = "upload 3: refused on det-1, the previous model keeps running: version 3 is not newer than the installed version 5";
        assert!(t.observe_alert(&answer("det-1", SIG_MODEL_REFUSED, reason.into())).is_none());
        let j = t.json();
        assert_eq!(j["state"], "refused", "{j}");
        assert_eq!(j["results"]["det-1"]["ok"], false, "{j}");
        assert!(j["error"].as_str().unwrap_or_default().contains("is not newer than the installed version 5"), "{j}");
        // An answer to another upload is not this one's.
        let t = pending(4);
        t.observe_alert(&answer("det-1", SIG_MODEL_REFUSED, reason.into()));
        assert_eq!(t.json()["state"], "pending", "{}", t.json());
    }

    #[test]
    fn an_upload_no_detector_answers_is_shown_timed_out_and_a_late_answer_still_counts() {
        let t = pending(7);
        let sent = t.last.lock().unwrap().as_ref().unwrap().sent;
        let timeout = t.answer_timeout();
        assert_eq!(timeout, Duration::from_secs(20) + ANSWER_SLACK, "the validator's default limit and the slack");
        assert_eq!(t.json_at(sent + timeout - Duration::from_secs(1))["state"], "pending");
        let j = t.json_at(sent + timeout);
        assert_eq!(j["state"], "timed_out", "{j}");
        assert_eq!(j["timeout_s"], timeout.as_secs());
        let e = j["error"].as_str().unwrap();
        assert!(e.contains("no detector answered within 60 s") && e.contains("upload again"), "{e}");
        // A detector that answers late is still heard.
        let ok = "upload 7: model host-mlp-old (2 classes: benign, flood; schema s v1) is running on det-1".to_string();
        assert!(t.observe_alert(&answer("det-1", SIG_MODEL_LOADED, ok)).is_some());
        let j = t.json_at(sent + timeout * 2);
        assert_eq!(j["state"], "loaded", "{j}");
        assert!(j.get("error").is_none(), "{j}");
        // One detector refusing and another loading: partly refused, with the reason.
        t.observe_alert(&answer("det-2", SIG_MODEL_REFUSED, "upload 7: refused on det-2: schema".into()));
        let j = t.json();
        assert_eq!(j["state"], "partly_refused", "{j}");
        assert_eq!(j["error"], "upload 7: refused on det-2: schema", "{j}");
    }
}
