//! The TensorFlow Lite classifier, run with tract (pure Rust: no C library,
//! so the binary stays static on aarch64-musl).
//!
//! A model is a float32 `.tflite` plus its *model card* (JSON): the feature
//! schema it was trained on (name, version, column order), how inputs are
//! prepared (`log1p`, then standardised with the card's means and standard
//! deviations), the class names, the training data and the validation
//! metrics. The default model (`models/host-mlp.*`, made by
//! `tools/train/train.py`) is embedded in the binary; `detector.model` in the
//! config names another `.tflite` whose card sits beside it
//! (`NAME.tflite` → `NAME.card.json`). Any model but the embedded one is
//! first checked in a child process ([`crate::validator`]): tract can
//! panic on a malformed file.
//!
//! The model classifies a *source host* from the schema's host columns (the
//! damped per-host statistics the router sends with every flow batch), so
//! the detector needs no per-packet data. A card whose schema name, version
//! or columns differ from this binary's is refused ([`ModelError::Schema`]):
//! the detector then runs on heuristics and the baseline and raises a
//! `system` alert.
//!
//! The card also says how far to trust the model (issue #15): a temperature
//! fitted on held-out sessions (applied to every output), each input's
//! training range (outside it, widened by the card's margin, the model
//! abstains for that host: [`HostModel::judge`] returns
//! [`Judgement::Abstain`] naming the input), and class floors (`flood` only at
//! flood packet rates). A card without the calibration and range sections is
//! refused ([`parse_card`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tract_tflite::prelude::*;

use gatewarden_flow::features::schema::{self, HOST_STATS, SCHEMA_NAME, SCHEMA_VERSION, WINDOWS_S, WINDOW_SUFFIX};

/// The embedded default model.
pub const DEFAULT_TFLITE: &[u8] = include_bytes!("../../../models/host-mlp.tflite");
/// The embedded default model's card.
pub const DEFAULT_CARD: &str = include_str!("../../../models/host-mlp.card.json");

/// Which schema a model was trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CardSchema {
    /// Schema name (`gatewarden-flow-host`).
    pub name: String,
    /// Schema version.
    pub version: u32,
    /// The model's input columns, in input order (a subset of the schema's host columns).
    pub columns: Vec<String>,
}

/// How raw features become model inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    /// Apply `ln(1 + max(x, 0))` first (rates span six orders of magnitude).
    pub log1p: bool,
    /// Per-input mean subtracted after `log1p`.
    pub mean: Vec<f32>,
    /// Per-input standard deviation divided by after the mean.
    pub std: Vec<f32>,
}

/// A model card: what the model is, what it expects, how good it was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// Model name.
    pub name: String,
    /// When it was trained (ISO 8601).
    pub created: String,
    /// The feature schema and input column order.
    pub feature_schema: CardSchema,
    /// Input preparation.
    pub preprocess: Preprocess,
    /// Output class names, in output order; `benign` must be one of them.
    pub classes: Vec<String>,
    /// Layers, for people.
    #[serde(default)]
    pub architecture: String,
    /// Where the training data came from and how it was split.
    #[serde(default)]
    pub training_data: serde_json::Value,
    /// Metrics on the held-out scenarios.
    #[serde(default)]
    pub validation_metrics: serde_json::Value,
    /// SHA-256 (hex) of the exact `.tflite` this card describes; the validator
    /// refuses a file that differs (corrupted, or paired with another card).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tflite_sha256: Option<String>,
    /// Reference rows and what the TFLite interpreter gave for them: a
    /// candidate model must reproduce them before it is stored or swapped in
    /// (the validator's proof that the `.tflite` is the model the card describes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<Reference>,
    /// Temperature scaling fitted on held-out sessions and the calibration
    /// error it left (issue #15: the first model said p = 1.00 about benign
    /// downloads). Required: a card without it was made by an older train.py.
    pub calibration: Calibration,
    /// Training statistics of every input column: outside them the model
    /// abstains instead of guessing. Required, like `calibration`.
    pub ood: OodGuard,
    /// Classes the model may only give above a rate (a "flood" at camera or
    /// download rates is not a flood); below the floor the class's
    /// probability goes to `benign`.
    #[serde(default)]
    pub class_floors: Vec<ClassFloor>,
}

/// How the model's probabilities were calibrated (`tools/train/train.py`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// `temperature`: probabilities become `softmax(ln p / T)`, which for a
    /// softmax output equals dividing its logits by `T`.
    pub method: String,
    /// The fitted temperature `T` (above 1: the raw model was overconfident).
    pub temperature: f32,
    /// Expected calibration error on the held-out sessions before scaling (10 bins of the top probability).
    pub ece_before: f64,
    /// The same after scaling with `temperature`.
    pub ece_after: f64,
    /// Number of equal-width confidence bins of the ECE.
    pub bins: u32,
    /// Held-out rows the temperature and the ECE were computed on.
    pub rows: u64,
    /// The sessions (captures) held out from training: the temperature and every
    /// validation metric come from them only.
    pub held_out_sessions: Vec<String>,
}

/// One input column's training statistics (raw values, before `preprocess`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureRange {
    /// The input column (same order as `feature_schema.columns`).
    pub column: String,
    /// Smallest training value.
    pub min: f32,
    /// Largest training value.
    pub max: f32,
    /// 0.5th percentile, for people (the guard uses min/max and the margin).
    pub p0_5: f32,
    /// 99.5th percentile, for people.
    pub p99_5: f32,
}

/// The out-of-distribution guard: per-column training ranges and the margin
/// around them inside which the model still gives an opinion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OodGuard {
    /// Slack on each side, as a fraction of the column's training range
    /// (`max - min`); a column that never varied accepts only its value
    /// (within [`OOD_ABS_SLACK`]). 0.25: a value a quarter of the range beyond
    /// anything seen is out of distribution.
    pub margin: f32,
    /// One entry per input column, in input order.
    pub features: Vec<FeatureRange>,
}

/// Absolute slack added to every column's accepted range (float noise in ratios).
pub const OOD_ABS_SLACK: f32 = 1e-3;
/// Largest OOD margin a card may ask for (wider would disable the guard).
pub const MAX_OOD_MARGIN: f32 = 10.0;

/// A rate below which the model may not give `class`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassFloor {
    /// The class (e.g. `flood`).
    pub class: String,
    /// The host column holding the rate (e.g. `host_pkt_rate_w1`).
    pub column: String,
    /// Lowest value at which `class` may be given.
    pub min: f32,
    /// Why this floor, for people (train.py says how it was derived).
    #[serde(default)]
    pub note: String,
}

/// The model's answer for one host.
#[derive(Debug, Clone, PartialEq)]
pub enum Judgement {
    /// Calibrated class probabilities (card order), after the class floors.
    Opinion(Vec<f32>),
    /// The input lies outside the training data: no opinion.
    Abstain(Abstention),
}

/// Why the model abstained: the first input outside its training range.
#[derive(Debug, Clone, PartialEq)]
pub struct Abstention {
    /// The input column.
    pub feature: String,
    /// Its value.
    pub value: f32,
    /// The training range (without the margin).
    pub min: f32,
    /// The training range (without the margin).
    pub max: f32,
}

impl std::fmt::Display for Abstention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "model abstains: {} = {} outside training range {}–{}",
            self.feature,
            short(self.value),
            short(self.min),
            short(self.max)
        )
    }
}

/// A number for a sentence: integers without decimals, others with up to 3 significant digits after the point.
fn short(x: f32) -> String {
    if (x.fract() == 0.0 && x.abs() < 1e9) || x.abs() >= 100.0 {
        format!("{x:.0}")
    } else {
        let s = format!("{x:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Probabilities scaled by temperature `t`: `softmax(ln p / t)` (a softmax
/// output's logits divided by `t`). Zeros are floored at 1e-30 first.
pub fn temperature_scale(p: &[f32], t: f32) -> Vec<f32> {
    if !(t.is_finite() && t > 0.0) || (t - 1.0).abs() < f32::EPSILON {
        return p.to_vec();
    }
    // One vector, rewritten in place (this runs for every host snapshot the model judges).
    let mut v: Vec<f32> = p.iter().map(|x| x.max(1e-30).ln() / t).collect();
    let m = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for l in v.iter_mut() {
        *l = (*l - m).exp();
    }
    let s: f32 = v.iter().sum();
    for x in v.iter_mut() {
        *x /= s;
    }
    v
}

/// A card's reference inputs and outputs (`tools/train/train.py` writes them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    /// Raw rows of the card's input columns, in card order (before `preprocess`).
    pub inputs: Vec<Vec<f32>>,
    /// The interpreter's class probabilities for each row.
    pub outputs: Vec<Vec<f32>>,
    /// Largest accepted absolute difference per probability.
    #[serde(default = "default_tolerance")]
    pub tolerance: f32,
}

fn default_tolerance() -> f32 {
    1e-4
}

/// Most reference rows a card may carry (each is one inference row in the validator).
pub const MAX_REFERENCE_ROWS: usize = 1024;
/// Most output classes a card may name.
pub const MAX_CLASSES: usize = 64;
/// Loosest reference tolerance accepted: looser would let a different model pass.
pub const MAX_TOLERANCE: f32 = 0.05;
/// Default bound on a model's batch dimension (`detector.model_max_batch`).
pub const DEFAULT_MAX_BATCH: usize = 4096;

/// Why a model could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read.
    #[error("reading {path}: {source}. Check detector.model in the config")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The card is not valid JSON or misses fields.
    #[error("model card {0}: {1}. Re-export the model with tools/train/train.py")]
    Card(String, String),
    /// The model was trained on different features than this binary computes.
    #[error("model card {card}: {detail}. Retrain with tools/train/train.py on CSVs from this binary's `gatewarden features`")]
    Schema {
        /// The card.
        card: String,
        /// What differs.
        detail: String,
    },
    /// tract could not load or run the `.tflite`.
    #[error("model {0}: {1}. Export a float32 .tflite (int8 is not supported) with tools/train/train.py")]
    Tflite(String, String),
    /// The validator (a child process) refused the model.
    #[error("model {0} refused by the validator: {1}")]
    Refused(String, String),
    /// The validator could not run, so the model was not checked (and not used).
    #[error("model {0} could not be checked: {1}")]
    Unchecked(String, String),
    /// The model does not reproduce its card's reference outputs.
    #[error("model {0} does not match its card: {1}. Upload the .tflite together with the card train.py wrote for it")]
    Reference(String, String),
}

type Plan = std::sync::Arc<TypedRunnableModel>;

/// `GATEWARDEN_MODEL_PLAN=padded` plans every model for its file's fixed
/// batch, the way a graph that hard-codes its batch is planned: to compare the
/// two plans, and to test that the validator's memory limit holds for a
/// padded plan of a huge batch (tests/hostile/model.rs). Inherited by the
/// validator's child.
pub const PLAN_ENV: &str = "GATEWARDEN_MODEL_PLAN";

/// The model planned with a symbolic row count in place of the file's fixed
/// batch: the input's first axis becomes `rows`, every op's output is derived
/// again from it, and the output must come out `[rows, classes]`. A graph
/// that hard-codes its batch (a reshape to 64 rows, say) fails here, and the
/// caller keeps the fixed plan.
fn plan_rows_as_needed(mut model: TypedModel, inputs: usize, classes: usize) -> TractResult<Plan> {
    let rows = model.sym("rows");
    let fact = f32::fact([rows.to_dim(), inputs.to_dim()]);
    let source = model.input_outlets()?[0].node;
    model.nodes[source].op = Box::new(tract_tflite::internal::tract_core::ops::source::TypedSource::new(fact.clone()));
    model.set_input_fact(0, fact)?;
    model.refresh_output_facts()?;
    let out = model.output_fact(0)?.shape.to_tvec();
    if out.as_slice() != [rows.to_dim(), classes.to_dim()] {
        return Err(TractError::msg(format!("output shape {out:?} does not follow the row count")));
    }
    model.into_optimized()?.into_runnable()
}

/// A loaded, checked model ready to classify hosts.
pub struct HostModel {
    card: ModelCard,
    plan: Plan,
    /// Rows per call at most (the `.tflite`'s fixed batch dimension).
    batch: usize,
    /// Whether `plan` takes any row count up to `batch` (no padding).
    rows_as_needed: bool,
    /// Index of each input column in a [`gatewarden_proto::messages::HostSnapshot`]'s features.
    gather: Vec<usize>,
    /// `class_floors` resolved: (class index, host feature index, lowest value).
    floors: Vec<(usize, usize, f32)>,
    benign: usize,
    origin: String,
    /// The plan's run state, kept between calls: spawning one per call
    /// (tract's `SimplePlan::run`) allocated every node's state again for
    /// each batch. Taken while a call runs; a call finding it taken (another
    /// thread) or failing spawns or drops its own.
    spare_state: std::sync::Mutex<Option<TypedSimpleState>>,
}

impl std::fmt::Debug for HostModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostModel").field("name", &self.card.name).field("origin", &self.origin).finish()
    }
}

/// The schema's host columns in snapshot order (window-major).
pub fn host_columns() -> Vec<String> {
    let mut out = Vec::with_capacity(WINDOWS_S.len() * HOST_STATS.len());
    for suffix in WINDOW_SUFFIX {
        for c in HOST_STATS {
            out.push(format!("{}_{suffix}", c.name));
        }
    }
    out
}

/// Checks a card against this binary's feature schema; returns the gather
/// indexes into a host snapshot.
pub fn check_card(card: &ModelCard, origin: &str) -> Result<Vec<usize>, ModelError> {
    let schema_err = |detail: String| ModelError::Schema { card: origin.to_string(), detail };
    let s = &card.feature_schema;
    if s.name != SCHEMA_NAME || s.version != SCHEMA_VERSION {
        return Err(schema_err(format!(
            "trained on feature schema {} v{}, this binary computes {SCHEMA_NAME} v{SCHEMA_VERSION}",
            s.name, s.version
        )));
    }
    let all: Vec<String> = schema::columns().into_iter().map(|c| c.0).collect();
    let host = host_columns();
    let mut gather = Vec::with_capacity(s.columns.len());
    for c in &s.columns {
        match host.iter().position(|h| h == c) {
            Some(i) => gather.push(i),
            None if all.contains(c) => {
                return Err(schema_err(format!(
                    "input column {c} is not a host column; the detector only has host statistics"
                )))
            }
            None => return Err(schema_err(format!("input column {c} is not in this binary's schema"))),
        }
    }
    if gather.is_empty() {
        return Err(schema_err("no input columns".into()));
    }
    let n = gather.len();
    let p = &card.preprocess;
    if p.mean.len() != n || p.std.len() != n {
        return Err(ModelError::Card(
            origin.into(),
            format!("preprocess has {} means and {} stds for {n} inputs", p.mean.len(), p.std.len()),
        ));
    }
    if p.mean.iter().chain(&p.std).any(|x| !x.is_finite()) || p.std.iter().any(|x| *x <= 0.0) {
        return Err(ModelError::Card(origin.into(), "preprocess values must be finite, stds > 0".into()));
    }
    if !card.classes.iter().any(|c| c == "benign") || card.classes.len() < 2 {
        return Err(ModelError::Card(origin.into(), "classes must include \"benign\" and one more".into()));
    }
    if card.classes.len() > MAX_CLASSES {
        return Err(ModelError::Card(origin.into(), format!("{} classes; at most {MAX_CLASSES}", card.classes.len())));
    }
    check_calibration(card, origin)?;
    if let Some(r) = &card.reference {
        let bad = |detail: String| Err(ModelError::Card(origin.into(), format!("reference: {detail}")));
        if r.inputs.is_empty() || r.inputs.len() > MAX_REFERENCE_ROWS || r.inputs.len() != r.outputs.len() {
            return bad(format!(
                "{} input rows and {} output rows; want 1 to {MAX_REFERENCE_ROWS} of each, as many outputs as inputs",
                r.inputs.len(),
                r.outputs.len()
            ));
        }
        if let Some(i) = r.inputs.iter().position(|row| row.len() != n) {
            return bad(format!("input row {i} has {} values for {n} input columns", r.inputs[i].len()));
        }
        if let Some(i) = r.outputs.iter().position(|row| row.len() != card.classes.len()) {
            return bad(format!("output row {i} has {} values for {} classes", r.outputs[i].len(), card.classes.len()));
        }
        if r.inputs.iter().chain(&r.outputs).flatten().any(|x| !x.is_finite()) {
            return bad("values must be finite".into());
        }
        if !(r.tolerance > 0.0 && r.tolerance <= MAX_TOLERANCE) {
            return bad(format!("tolerance {} must be above 0 and at most {MAX_TOLERANCE}", r.tolerance));
        }
    }
    Ok(gather)
}

/// Reads a card, refusing one without the calibration and OOD fields with a
/// message that says how to get a current one.
pub fn parse_card(text: &str, origin: &str) -> Result<ModelCard, ModelError> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| ModelError::Card(origin.into(), e.to_string()))?;
    let missing: Vec<&str> = ["calibration", "ood"].into_iter().filter(|k| v.get(k).is_none()).collect();
    if v.is_object() && !missing.is_empty() {
        return Err(ModelError::Card(
            origin.into(),
            format!(
                "no {} (the card was made by an older train.py: the model's probabilities are uncalibrated and it cannot tell unfamiliar input); re-export it with the current tools/train/train.py (tools/train/train.sh)",
                missing.iter().map(|k| format!("\"{k}\"")).collect::<Vec<_>>().join(" or ")
            ),
        ));
    }
    serde_json::from_value(v).map_err(|e| ModelError::Card(origin.into(), e.to_string()))
}

/// The calibration, OOD and class-floor sections: consistent with the card's inputs and classes.
fn check_calibration(card: &ModelCard, origin: &str) -> Result<(), ModelError> {
    let bad = |detail: String| Err(ModelError::Card(origin.into(), detail));
    let c = &card.calibration;
    if !(c.temperature.is_finite() && (0.01..=100.0).contains(&c.temperature)) {
        return bad(format!("calibration.temperature {} must be between 0.01 and 100", c.temperature));
    }
    if !(c.ece_before.is_finite() && c.ece_after.is_finite()) || c.bins == 0 {
        return bad("calibration: ece_before/ece_after must be finite and bins above 0".into());
    }
    let o = &card.ood;
    if !(o.margin.is_finite() && (0.0..=MAX_OOD_MARGIN).contains(&o.margin)) {
        return bad(format!("ood.margin {} must be between 0 and {MAX_OOD_MARGIN}", o.margin));
    }
    let cols = &card.feature_schema.columns;
    if o.features.len() != cols.len() {
        return bad(format!("ood has {} feature ranges for {} input columns", o.features.len(), cols.len()));
    }
    for (r, c) in o.features.iter().zip(cols) {
        if &r.column != c {
            return bad(format!("ood range for {} where input column {c} was expected (same order)", r.column));
        }
        if ![r.min, r.max, r.p0_5, r.p99_5].iter().all(|x| x.is_finite()) || r.min > r.max {
            return bad(format!("ood range of {c}: values must be finite and min ≤ max"));
        }
    }
    let host = host_columns();
    for f in &card.class_floors {
        if !card.classes.contains(&f.class) || f.class == "benign" {
            return bad(format!("class_floors: {} is not one of the card's attack classes", f.class));
        }
        if !host.contains(&f.column) {
            return bad(format!("class_floors: {} is not a host column of this binary", f.column));
        }
        if !f.min.is_finite() || f.min < 0.0 {
            return bad(format!("class_floors: {} floor {} must be finite and ≥ 0", f.class, f.min));
        }
    }
    Ok(())
}

impl HostModel {
    /// The embedded default model.
    pub fn embedded() -> Result<HostModel, ModelError> {
        HostModel::from_parts(DEFAULT_TFLITE, DEFAULT_CARD, "embedded model")
    }

    /// The card path for a model path: `x.tflite` → `x.card.json`.
    pub fn card_path(model: &Path) -> PathBuf {
        model.with_extension("card.json")
    }

    /// A model from its bytes and card text. Runs tract on `tflite`, which can
    /// panic or exhaust memory on crafted input: bytes from the network go to
    /// [`crate::validator`] (a child process) first.
    pub fn from_parts(tflite: &[u8], card: &str, origin: &str) -> Result<HostModel, ModelError> {
        HostModel::from_parts_bounded(tflite, card, origin, DEFAULT_MAX_BATCH)
    }

    /// [`HostModel::from_parts`] with a bound on the batch dimension, checked
    /// before tract plans (and allocates for) the model.
    pub fn from_parts_bounded(
        tflite: &[u8],
        card: &str,
        origin: &str,
        max_batch: usize,
    ) -> Result<HostModel, ModelError> {
        let card = parse_card(card, origin)?;
        let gather = check_card(&card, origin)?;
        let host = host_columns();
        let floors = card
            .class_floors
            .iter()
            .filter_map(|f| {
                let class = card.classes.iter().position(|c| c == &f.class)?;
                Some((class, host.iter().position(|h| h == &f.column)?, f.min))
            })
            .collect();
        let terr = |e: TractError| ModelError::Tflite(origin.into(), format!("{e:#}"));
        let model = tract_tflite::tflite().model_for_read(&mut std::io::Cursor::new(tflite)).map_err(terr)?;
        let input = model.input_fact(0).map_err(terr)?.clone();
        let shape = input.shape.as_concrete().map(|s| s.to_vec()).unwrap_or_default();
        if input.datum_type != f32::datum_type() || shape.len() != 2 || shape[1] != gather.len() || shape[0] == 0 {
            return Err(ModelError::Tflite(
                origin.into(),
                format!(
                    "input is {:?} {:?}, the card wants f32 [batch, {}]",
                    input.datum_type,
                    input.shape,
                    gather.len()
                ),
            ));
        }
        if shape[0] > max_batch {
            return Err(ModelError::Tflite(
                origin.into(),
                format!(
                    "batch dimension {} exceeds the limit of {max_batch} rows (detector.model_max_batch)",
                    shape[0]
                ),
            ));
        }
        if model.inputs.len() != 1 || model.outputs.len() != 1 {
            return Err(ModelError::Tflite(
                origin.into(),
                format!(
                    "{} inputs and {} outputs; the detector wants one of each",
                    model.inputs.len(),
                    model.outputs.len()
                ),
            ));
        }
        let output = model.output_fact(0).map_err(terr)?.clone();
        let oshape = output.shape.as_concrete().map(|s| s.to_vec()).unwrap_or_default();
        if oshape != [shape[0], card.classes.len()] {
            return Err(ModelError::Tflite(
                origin.into(),
                format!("output is {:?}, the card names {} classes", output.shape, card.classes.len()),
            ));
        }
        // A batch of three hosts should cost three rows, not the file's 64:
        // plan for any row count up to the batch when the graph allows it
        // (an MLP does), else for the file's fixed batch, padded per call.
        let padded_only = std::env::var_os(PLAN_ENV).is_some_and(|v| v == "padded");
        let symbolic = if padded_only {
            Err(TractError::msg(format!("{PLAN_ENV}=padded")))
        } else {
            plan_rows_as_needed(model.clone(), gather.len(), card.classes.len())
        };
        let (plan, rows_as_needed) = match symbolic {
            Ok(plan) => (plan, true),
            Err(e) => {
                tracing::debug!(origin, error = %format!("{e:#}"), "model runs padded to its fixed batch");
                (model.into_optimized().and_then(|m| m.into_runnable()).map_err(terr)?, false)
            }
        };
        let benign = card.classes.iter().position(|c| c == "benign").unwrap_or(0);
        Ok(HostModel {
            card,
            plan,
            batch: shape[0],
            rows_as_needed,
            gather,
            floors,
            benign,
            origin: origin.into(),
            spare_state: std::sync::Mutex::new(None),
        })
    }

    /// The model card.
    pub fn card(&self) -> &ModelCard {
        &self.card
    }

    /// Where the model came from (path or "embedded model").
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Rows per inference call.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Index of the `benign` class.
    pub fn benign_class(&self) -> usize {
        self.benign
    }

    /// Number of model inputs.
    pub fn n_inputs(&self) -> usize {
        self.gather.len()
    }

    /// Model inputs from a host snapshot's features (schema host columns, window-major).
    pub fn prepare(&self, host_features: &[f32], out: &mut [f32]) {
        for (i, (&g, o)) in self.gather.iter().zip(out.iter_mut()).enumerate() {
            *o = self.prepare_one(i, host_features.get(g).copied().unwrap_or(0.0));
        }
    }

    /// Input `i` from its raw value: `log1p`, then standardised.
    fn prepare_one(&self, i: usize, mut x: f32) -> f32 {
        let p = &self.card.preprocess;
        if !x.is_finite() {
            x = 0.0;
        }
        if p.log1p {
            // ln_1p(0) is 0: most of a one-packet host's inputs are zero, and the call is
            // most of what preparing a row costs.
            x = if x > 0.0 { x.ln_1p() } else { 0.0 };
        }
        (x - p.mean[i]) / p.std[i]
    }

    /// Runs the card's reference inputs and compares with its reference
    /// outputs; returns the largest difference. A card without a reference,
    /// a difference above its tolerance or a non-finite output is an error.
    pub fn check_reference(&self) -> Result<f32, ModelError> {
        let Some(r) = &self.card.reference else {
            return Err(ModelError::Card(
                self.origin.clone(),
                "no \"reference\" inputs and outputs to check the model against; re-export it with tools/train/train.py, which writes them".into(),
            ));
        };
        let n = self.gather.len();
        let mut inputs = vec![0.0f32; r.inputs.len() * n];
        for (row, out) in r.inputs.iter().zip(inputs.chunks_mut(n)) {
            for (i, (x, o)) in row.iter().zip(out.iter_mut()).enumerate() {
                *o = self.prepare_one(i, *x);
            }
        }
        let got = self.run_prepared(&inputs)?;
        let want: Vec<f32> = r.outputs.iter().flatten().copied().collect();
        if got.len() != want.len() {
            return Err(ModelError::Tflite(
                self.origin.clone(),
                format!("{} outputs for {} reference values", got.len(), want.len()),
            ));
        }
        let mut max_err = 0.0f32;
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let err = (g - w).abs();
            if !err.is_finite() || err > r.tolerance {
                let k = self.card.classes.len();
                return Err(ModelError::Reference(
                    self.origin.clone(),
                    format!(
                        "reference row {} class {}: the model gives {g}, the card says {w} (tolerance {})",
                        i / k,
                        self.card.classes[i % k],
                        r.tolerance
                    ),
                ));
            }
            max_err = max_err.max(err);
        }
        Ok(max_err)
    }

    /// Class probabilities for prepared inputs (`rows × n_inputs`, row-major);
    /// returns `rows × classes`. Runs in chunks of [`HostModel::batch`] rows.
    pub fn run_prepared(&self, inputs: &[f32]) -> Result<Vec<f32>, ModelError> {
        let n = self.gather.len();
        let k = self.card.classes.len();
        let rows = inputs.len() / n;
        let mut out = Vec::with_capacity(rows * k);
        let spare = self.spare_state.try_lock().ok().and_then(|mut s| s.take());
        let mut state = match spare {
            Some(s) => s,
            None => self.plan.spawn().map_err(|e| ModelError::Tflite(self.origin.clone(), format!("{e:#}")))?,
        };
        for chunk in inputs[..rows * n].chunks(self.batch * n) {
            let used = chunk.len() / n;
            let t = if self.rows_as_needed {
                tract_ndarray::Array2::from_shape_vec((used, n), chunk.to_vec())
            } else {
                let mut buf = vec![0.0f32; self.batch * n];
                buf[..chunk.len()].copy_from_slice(chunk);
                tract_ndarray::Array2::from_shape_vec((self.batch, n), buf)
            }
            .map_err(|e| ModelError::Tflite(self.origin.clone(), e.to_string()))?;
            let res = state
                .run(tvec!(Tensor::from(t).into()))
                .map_err(|e| ModelError::Tflite(self.origin.clone(), format!("{e:#}")))?;
            let view = res[0]
                .to_plain_array_view::<f32>()
                .map_err(|e| ModelError::Tflite(self.origin.clone(), format!("{e:#}")))?;
            out.extend(view.iter().take(used * k));
        }
        if let Ok(mut spare) = self.spare_state.try_lock() {
            *spare = Some(state);
        }
        Ok(out)
    }

    /// The first input of a host row outside the card's training range
    /// (widened by the margin), if any: the model has no opinion on it.
    pub fn out_of_range(&self, host_features: &[f32]) -> Option<Abstention> {
        let o = &self.card.ood;
        for (&g, r) in self.gather.iter().zip(&o.features) {
            let x = host_features.get(g).copied().unwrap_or(0.0);
            let slack = o.margin * (r.max - r.min) + OOD_ABS_SLACK;
            if !x.is_finite() || x < r.min - slack || x > r.max + slack {
                return Some(Abstention { feature: r.column.clone(), value: x, min: r.min, max: r.max });
            }
        }
        None
    }

    /// The model's answer for each host row: abstain when an input is outside
    /// the training data, else calibrated probabilities (temperature scaling)
    /// with each class below its rate floor moved to `benign`. The detector
    /// uses this; [`HostModel::classify`] gives the raw interpreter outputs.
    pub fn judge(&self, hosts: &[&[f32]]) -> Result<Vec<Judgement>, ModelError> {
        let inside: Vec<&[f32]> = hosts.iter().copied().filter(|h| self.out_of_range(h).is_none()).collect();
        let mut probs = if inside.is_empty() { Vec::new() } else { self.classify(&inside)? }.into_iter();
        let t = self.card.calibration.temperature;
        Ok(hosts
            .iter()
            .map(|h| match self.out_of_range(h) {
                Some(a) => Judgement::Abstain(a),
                None => {
                    let mut p = temperature_scale(&probs.next().unwrap_or_default(), t);
                    for &(class, col, min) in &self.floors {
                        if h.get(col).copied().unwrap_or(0.0) < min && class < p.len() && self.benign < p.len() {
                            p[self.benign] += p[class];
                            p[class] = 0.0;
                        }
                    }
                    Judgement::Opinion(p)
                }
            })
            .collect())
    }

    /// Class probabilities for raw host feature rows (each the schema's host columns).
    pub fn classify(&self, hosts: &[&[f32]]) -> Result<Vec<Vec<f32>>, ModelError> {
        let n = self.gather.len();
        let mut inputs = vec![0.0f32; hosts.len() * n];
        for (h, row) in hosts.iter().zip(inputs.chunks_mut(n)) {
            self.prepare(h, row);
        }
        let k = self.card.classes.len();
        Ok(self.run_prepared(&inputs)?.chunks(k).map(|c| c.to_vec()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_model_loads_and_matches_this_binarys_schema() {
        // Fails when a feature change was not followed by retraining.
        let m = HostModel::embedded().expect("embedded model matches the binary's feature schema");
        assert_eq!(m.card().feature_schema.name, SCHEMA_NAME);
        assert_eq!(m.card().feature_schema.version, SCHEMA_VERSION);
        let host = host_columns();
        for c in &m.card().feature_schema.columns {
            assert!(host.contains(c), "{c}");
        }
    }

    #[test]
    fn a_card_from_another_schema_is_refused_with_a_clear_error() {
        let mut card: ModelCard = serde_json::from_str(DEFAULT_CARD).unwrap();
        card.feature_schema.version = SCHEMA_VERSION + 1;
        let text = serde_json::to_string(&card).unwrap();
        let e = HostModel::from_parts(DEFAULT_TFLITE, &text, "test.tflite").unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, ModelError::Schema { .. }), "{msg}");
        assert!(msg.contains("Retrain"), "{msg}");
        let mut card: ModelCard = serde_json::from_str(DEFAULT_CARD).unwrap();
        card.feature_schema.columns[0] = "no_such_column".into();
        let e = HostModel::from_parts(DEFAULT_TFLITE, &serde_json::to_string(&card).unwrap(), "x").unwrap_err();
        assert!(e.to_string().contains("no_such_column"), "{e}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(HostModel::from_parts(b"not a flatbuffer", DEFAULT_CARD, "x").is_err());
        assert!(HostModel::from_parts(DEFAULT_TFLITE, "{", "x").is_err());
        let limits = crate::validator::Limits::default();
        assert!(crate::validator::load_checked(Path::new("/nonexistent/model.tflite"), &limits)
            .unwrap_err()
            .to_string()
            .contains("detector.model"));
    }

    #[test]
    fn tract_matches_the_tflite_interpreter_on_the_reference_inputs() {
        // models/host-mlp.reference.json: raw host rows and what TensorFlow
        // Lite's own interpreter gave for them (tools/train/train.py).
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/host-mlp.reference.json");
        let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let inputs: Vec<Vec<f32>> = serde_json::from_value(r["inputs"].clone()).unwrap();
        let expected: Vec<Vec<f32>> = serde_json::from_value(r["outputs"].clone()).unwrap();
        assert!(inputs.len() >= 64 && inputs.len() == expected.len());
        let m = HostModel::embedded().unwrap();
        // Reference rows hold the card's input columns in card order.
        let host = host_columns();
        let rows: Vec<Vec<f32>> = inputs
            .iter()
            .map(|row| {
                let mut full = vec![0.0f32; host.len()];
                for (c, x) in m.card().feature_schema.columns.iter().zip(row) {
                    full[host.iter().position(|h| h == c).unwrap()] = *x;
                }
                full
            })
            .collect();
        let refs: Vec<&[f32]> = rows.iter().map(|r| r.as_slice()).collect();
        let got = m.classify(&refs).unwrap();
        let mut max_err = 0.0f32;
        for (g, e) in got.iter().zip(&expected) {
            assert_eq!(g.len(), e.len());
            for (a, b) in g.iter().zip(e) {
                max_err = max_err.max((a - b).abs());
            }
        }
        assert!(max_err <= 1e-5, "tract differs from the TFLite interpreter by {max_err}");
    }

    /// The embedded card with every OOD range set to `lo..=hi` (margin 0.25), temperature `t`.
    fn card_with(lo: f32, hi: f32, t: f32) -> serde_json::Value {
        let mut card: serde_json::Value = serde_json::from_str(DEFAULT_CARD).unwrap();
        let cols: Vec<String> = serde_json::from_value(card["feature_schema"]["columns"].clone()).unwrap();
        card["ood"] = serde_json::json!({
            "margin": 0.25,
            "features": cols.iter().map(|c| serde_json::json!({"column": c, "min": lo, "max": hi, "p0_5": lo, "p99_5": hi})).collect::<Vec<_>>(),
        });
        card["calibration"]["temperature"] = serde_json::json!(t);
        card
    }

    fn model_from(card: &serde_json::Value) -> HostModel {
        HostModel::from_parts(DEFAULT_TFLITE, &card.to_string(), "test card").unwrap()
    }

    fn col(name: &str) -> usize {
        host_columns().iter().position(|c| c == name).unwrap()
    }

    #[test]
    fn ood_guard_gives_an_opinion_inside_and_abstains_outside_naming_the_feature() {
        let m = model_from(&card_with(0.0, 240.0, 1.0));
        let inside = vec![1.0f32; host_columns().len()];
        let mut edge = inside.clone();
        edge[col("host_pkt_rate_w10")] = 290.0; // within the 25 % margin (240 + 60)
        let mut outside = inside.clone();
        outside[col("host_pkt_rate_w10")] = 812.0;
        let mut nan = inside.clone();
        nan[col("host_syn_ratio_w1")] = f32::NAN;
        let j = m.judge(&[&inside, &outside, &edge, &nan]).unwrap();
        assert!(matches!(&j[0], Judgement::Opinion(p) if p.len() == 3), "{j:?}");
        assert!(matches!(&j[2], Judgement::Opinion(_)), "{j:?}");
        let Judgement::Abstain(a) = &j[1] else { panic!("812 packets/s is outside 0–240: {j:?}") };
        assert_eq!(a.feature, "host_pkt_rate_w10");
        assert_eq!(a.to_string(), "model abstains: host_pkt_rate_w10 = 812 outside training range 0–240");
        let Judgement::Abstain(a) = &j[3] else { panic!("NaN is no opinion: {j:?}") };
        assert_eq!(a.feature, "host_syn_ratio_w1");
        // Below the range too.
        let mut below = inside.clone();
        below[col("host_byte_rate_w60")] = -100.0;
        assert!(matches!(&m.judge(&[&below]).unwrap()[0], Judgement::Abstain(a) if a.feature == "host_byte_rate_w60"));
        // The opinion for an inside row is the interpreter's (temperature 1, no floor hit).
        let raw = m.classify(&[&inside]).unwrap();
        assert_eq!(j[0], Judgement::Opinion(raw[0].clone()));
    }

    #[test]
    fn temperature_scaling_softens_overconfident_probabilities() {
        // softmax(ln p / 2): [0.9, 0.1] -> [0.75, 0.25] (sqrt(9) : sqrt(1) = 3 : 1).
        let p = temperature_scale(&[0.9, 0.1], 2.0);
        assert!((p[0] - 0.75).abs() < 1e-6 && (p[1] - 0.25).abs() < 1e-6, "{p:?}");
        assert_eq!(temperature_scale(&[0.9, 0.1], 1.0), vec![0.9, 0.1]);
        // A saturated output is still a distribution, and less certain.
        let p = temperature_scale(&[1.0, 0.0, 0.0], 20.0);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5 && p[0] < 0.99 && p[0] > 0.9, "{p:?}");
        // The card's temperature reaches the detector's opinion.
        let m = model_from(&card_with(-1e9, 1e9, 3.0));
        let row = vec![1.0f32; host_columns().len()];
        let raw = &m.classify(&[&row]).unwrap()[0];
        let Judgement::Opinion(p) = &m.judge(&[&row]).unwrap()[0] else { panic!() };
        let want = temperature_scale(raw, 3.0);
        for (a, b) in p.iter().zip(&want) {
            assert!((a - b).abs() < 1e-6, "{p:?} vs {want:?}");
        }
        let top = |v: &[f32]| v.iter().copied().fold(0.0f32, f32::max);
        assert!(top(p) <= top(raw) + 1e-6, "{p:?} vs raw {raw:?}");
    }

    #[test]
    fn a_flood_below_the_cards_rate_floor_is_benign() {
        let mut card = card_with(-1e9, 1e9, 1.0);
        card["class_floors"] = serde_json::json!([{"class": "flood", "column": "host_pkt_rate_w1", "min": 150.0}]);
        let m = model_from(&card);
        // A UDP flood row of datasets/lab/hping3_udp_flood.pcap (host columns, window-major),
        // slowed to 100 packets/s over 1 s: the raw model still calls it a flood.
        let mut row = vec![
            315.8552, 8843.9375, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0029, 1.0, 0.1534, 119.5836, 3348.3413, 1.0, 1.0, 0.0, 0.0,
            0.0, 0.003, 1.0, 0.0596, 22.5391, 631.0922, 1.0, 1.0, 0.0, 0.0, 0.0, 0.003, 1.0, 0.0113,
        ];
        row[col("host_pkt_rate_w1")] = 100.0;
        let raw = &m.classify(&[&row]).unwrap()[0];
        assert!(raw[2] > 0.5, "the raw model calls it a flood: {raw:?}");
        assert!(row[col("host_pkt_rate_w1")] < 150.0, "the reference flood row is below the floor");
        let Judgement::Opinion(p) = &m.judge(&[&row]).unwrap()[0] else { panic!() };
        assert_eq!(p[2], 0.0, "{p:?}");
        assert!(p[0] > 0.9, "the flood's probability went to benign: {p:?}");
        row[col("host_pkt_rate_w1")] = 400.0;
        let Judgement::Opinion(p) = &m.judge(&[&row]).unwrap()[0] else { panic!() };
        assert!(p[2] > 0.0, "at flood rates the class stays: {p:?}");
    }

    #[test]
    fn a_card_without_calibration_or_ood_statistics_is_refused_with_what_to_do() {
        for key in ["calibration", "ood"] {
            let mut card: serde_json::Value = serde_json::from_str(DEFAULT_CARD).unwrap();
            card.as_object_mut().unwrap().remove(key);
            let e = HostModel::from_parts(DEFAULT_TFLITE, &card.to_string(), "old.tflite").unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, ModelError::Card(..)), "{msg}");
            assert!(msg.contains(key) && msg.contains("re-export it with the current tools/train/train.py"), "{msg}");
        }
        // Ranges out of order with the inputs, or a silly margin, are refused too.
        let mut card = card_with(0.0, 1.0, 1.0);
        card["ood"]["features"].as_array_mut().unwrap().swap(0, 1);
        let e = HostModel::from_parts(DEFAULT_TFLITE, &card.to_string(), "x").unwrap_err();
        assert!(e.to_string().contains("same order"), "{e}");
        let mut card = card_with(0.0, 1.0, 1.0);
        card["ood"]["margin"] = serde_json::json!(1e9);
        assert!(HostModel::from_parts(DEFAULT_TFLITE, &card.to_string(), "x")
            .unwrap_err()
            .to_string()
            .contains("ood.margin"));
        let mut card = card_with(0.0, 1.0, 0.0);
        card["calibration"]["temperature"] = serde_json::json!(0.0);
        assert!(HostModel::from_parts(DEFAULT_TFLITE, &card.to_string(), "x")
            .unwrap_err()
            .to_string()
            .contains("temperature"));
        let mut card = card_with(0.0, 1.0, 1.0);
        card["class_floors"] = serde_json::json!([{"class": "nope", "column": "host_pkt_rate_w1", "min": 1.0}]);
        assert!(HostModel::from_parts(DEFAULT_TFLITE, &card.to_string(), "x")
            .unwrap_err()
            .to_string()
            .contains("class_floors"));
    }

    #[test]
    fn the_shipped_card_carries_calibration_ood_ranges_and_a_flood_floor() {
        let m = HostModel::embedded().unwrap();
        let c = m.card();
        assert_eq!(c.ood.features.len(), c.feature_schema.columns.len());
        assert!(!c.calibration.held_out_sessions.is_empty());
        assert!(c.calibration.ece_after <= c.calibration.ece_before + 1e-9, "{:?}", c.calibration);
        assert!(c.class_floors.iter().any(|f| f.class == "flood" && f.min >= 100.0), "{:?}", c.class_floors);
    }

    #[test]
    fn the_embedded_model_runs_the_rows_it_is_given_with_the_answers_of_a_full_batch() {
        let m = HostModel::embedded().unwrap();
        assert!(m.rows_as_needed, "the shipped MLP must not be padded to its batch of {}", m.batch());
        let r = m.card().reference.clone().unwrap();
        let n = m.n_inputs();
        let mut prepared = vec![0.0f32; r.inputs.len() * n];
        for (row, out) in r.inputs.iter().zip(prepared.chunks_mut(n)) {
            for (i, (x, o)) in row.iter().zip(out.iter_mut()).enumerate() {
                *o = m.prepare_one(i, *x);
            }
        }
        // 128 rows: two full calls of 64, the reference's own shape.
        let whole = m.run_prepared(&prepared).unwrap();
        let k = m.card().classes.len();
        assert_eq!(whole.len(), r.inputs.len() * k);
        // The same rows one at a time, and in uneven runs (1, 3, 65 rows).
        for take in [1usize, 3, 65] {
            let mut got = Vec::new();
            for chunk in prepared.chunks(take * n) {
                got.extend(m.run_prepared(chunk).unwrap());
            }
            let worst = got.iter().zip(&whole).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(worst <= 1e-6, "runs of {take} rows differ from full batches by {worst}");
        }
    }

    #[test]
    fn classify_returns_probabilities() {
        let m = HostModel::embedded().unwrap();
        let zero = vec![0.0f32; host_columns().len()];
        let rows: Vec<&[f32]> = (0..(m.batch() + 3)).map(|_| zero.as_slice()).collect();
        let p = m.classify(&rows).unwrap();
        assert_eq!(p.len(), rows.len());
        for r in p {
            let s: f32 = r.iter().sum();
            assert!((s - 1.0).abs() < 1e-4, "{r:?}");
        }
    }
}
