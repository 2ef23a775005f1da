//! gatewarden: an IoT security gateway in one binary.
//!
//! The layers are the workspace's crates (crates/, docs/ARCHITECTURE.md),
//! and Cargo enforces their direction: [`capture`] (where packets come from)
//! → [`flow`] (where a packet becomes a flow) → [`detect`] (verdicts and
//! alerts) → [`enforce`] (where a block rule is written) and [`monitor`]
//! (alerts, metrics, status page); [`bus`] carries messages between roles,
//! sealed by [`secure`]; all of them speak gatewarden-proto over
//! gatewarden-core. This crate is the top: config composition ([`config`]),
//! node start-up ([`node`]: a list of services per role; [`roles`]: the stages they run), replay, the CLI and PKI administration. The
//! re-exports below keep `gatewarden::flow::…` paths working for tests,
//! benches and fuzz targets.
#![deny(unsafe_code)]

/// Message passing between roles: in process and over MQTT (the gatewarden-bus crate).
pub use gatewarden_bus as bus;
/// Where packets come from (the gatewarden-capture crate).
pub use gatewarden_capture as capture;
pub mod alerts_cli;
pub mod cli;
pub mod config;
pub mod ctl;
pub mod exit;
/// The detector: heuristics, model, baseline, fusion, response policy (the gatewarden-detect crate).
pub use gatewarden_detect as detect;
/// Where a block rule is written (the gatewarden-enforce crate).
pub use gatewarden_enforce as enforce;
/// Where a packet becomes a flow (the gatewarden-flow crate).
pub use gatewarden_flow as flow;
/// Flow features (in the gatewarden-flow crate).
pub use gatewarden_flow::features;
pub mod log_filter;
pub mod logging;
pub mod node;
pub mod output;
/// Header parsing (in the gatewarden-flow crate).
pub use gatewarden_flow::packet;
/// Alerts, metrics, status page and API (the gatewarden-monitor crate).
pub use gatewarden_monitor as monitor;
pub mod pki;
/// Group policy: groups, rules, traffic matrix, suggestions (the gatewarden-policy crate).
pub use gatewarden_policy as policy;
pub mod policy_cli;
pub mod replay;
pub mod roles;
/// The end-to-end secure channel and certificate checks (the gatewarden-secure crate).
pub use gatewarden_secure as secure;
