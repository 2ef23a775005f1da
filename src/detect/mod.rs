//! The detector: flow records in, verdicts and alerts out.
//!
//! Today this is the explainable heuristics in [`heuristics`]; the
//! TensorFlow Lite model and the per-device baseline join them here.

pub mod heuristics;

pub use heuristics::{Detection, Heuristics};
