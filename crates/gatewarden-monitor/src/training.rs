//! The dashboard's training page: an administrator uploads a `.tflite` and
//! its model card; the monitor checks them exactly as a detector would —
//! the card's schema here, then the `.tflite` in the validator's child
//! process ([`gatewarden_detect::validator`]: shapes, batch bound, the card's
//! reference outputs, under memory and time limits, so a crafted file cannot
//! crash the monitor) — refuses a bad one with the reason (422), and
//! sends an accepted model to the detectors (in process, or sealed over
//! MQTT as a `model_update`). Each detector checks it again, hot-swaps it
//! between two batches and answers with a system alert; those answers are
//! the per-detector results the page shows.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

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
    /// Detector node → its answer.
    results: BTreeMap<String, Value>,
}

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
        let version = gatewarden_core::clock::unix_now_ns();
        let name = parsed.name.clone();
        let card_value = serde_json::to_value(&parsed).unwrap_or(Value::Null);
        let bytes = tflite.len();
        // Recorded before sending: an in-process detector answers at once, and
        // its answer must find the upload it answers.
        let previous = self.last.lock().unwrap_or_else(|e| e.into_inner()).replace(Upload {
            version,
            name: name.clone(),
            by: by.to_string(),
            bytes,
            card: card_value,
            results: BTreeMap::new(),
        });
        if !send(ModelUpdate { version, tflite, card, by: by.to_string() }) {
            *self.last.lock().unwrap_or_else(|e| e.into_inner()) = previous;
            return Err(refuse(
                503,
                "no detector took the model: its queue is full, or no detector runs any more (a finished replay has none; `gatewarden run` keeps one running)",
            ));
        }
        tracing::info!(%name, %by, version, "model upload accepted and sent to the detectors");
        Ok(
            json!({"version": version, "name": name, "bytes": bytes, "status": "sent to the detectors; each answers with a system alert"}),
        )
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
    pub fn json(&self) -> Value {
        match &*self.last.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(u) => json!({
                "version": u.version,
                "name": u.name,
                "by": u.by,
                "bytes": u.bytes,
                "at": gatewarden_core::clock::rfc3339(u.version),
                "results": u.results,
            }),
            None => Value::Null,
        }
    }

    /// Whether uploads can reach a detector.
    pub fn can_send(&self) -> bool {
        self.sender.get().is_some()
    }
}
