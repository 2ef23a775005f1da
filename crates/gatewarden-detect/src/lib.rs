//! The detector: flow records in, verdicts and alerts out.
//!
//! Three detectors look at the same batches — explainable thresholds
//! ([`heuristics`]), a TensorFlow Lite classifier over per-host statistics
//! ([`model`]) and a per-device baseline ([`baseline`]) — and [`fusion`]
//! combines their findings into verdicts with confidence, reason and TTL;
//! the [`response`] policy decides whether each one blocks, alerts or is
//! only counted. [`config`] is `[detector]`. [`source_history`] keeps what each
//! source did over the last minute, quarter hour and hour in fixed memory, for
//! the slow and distributed detectors of [`long_horizon`] (issue #17). [`lan_mapping`] finds a
//! LAN device sweeping its subnet with ARP or neighbour solicitations.
//! [`newcomer_records`] holds a one-packet source's record until the source
//! comes back, so a spoofed flood's sources cost those detectors nothing.
//!
//! Depends on gatewarden-core, gatewarden-proto and gatewarden-flow.
#![forbid(unsafe_code)]

pub mod baseline;
pub mod config;
pub mod fusion;
pub mod heuristics;
pub mod lan_mapping;
pub mod long_horizon;
pub mod model;
pub mod newcomer_records;
pub mod response;
pub mod source_history;
pub mod validator;

pub use heuristics::{Detection, Heuristics};
