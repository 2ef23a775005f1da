//! gatewarden: an IoT security gateway in one binary.
//!
//! Data moves one way through the modules: [`capture`] (where packets come
//! from) → [`packet`] (header fields) → [`flow`] (where a packet becomes a
//! flow) → [`detect`] (verdicts and alerts) → [`enforce`] (where a block rule
//! is written) and [`monitor`] (alerts, metrics, status page). [`bus`]
//! carries messages between the roles; [`roles`] wires them up.

/// Message passing between roles: in process and over MQTT (the gatewarden-bus crate).
pub use gatewarden_bus as bus;
/// Where packets come from (the gatewarden-capture crate).
pub use gatewarden_capture as capture;
pub mod cli;
pub mod config;
pub mod ctl;
/// The detector: heuristics, model, baseline, fusion, response policy (the gatewarden-detect crate).
pub use gatewarden_detect as detect;
/// Where a block rule is written (the gatewarden-enforce crate).
pub use gatewarden_enforce as enforce;
/// Where a packet becomes a flow (the gatewarden-flow crate).
pub use gatewarden_flow as flow;
/// Flow features (in the gatewarden-flow crate).
pub use gatewarden_flow::features;
pub mod logging;
pub mod monitor;
/// Header parsing (in the gatewarden-flow crate).
pub use gatewarden_flow::packet;
pub mod pki;
/// Group policy: groups, rules, traffic matrix, suggestions (the gatewarden-policy crate).
pub use gatewarden_policy as policy;
pub mod policy_cli;
pub mod replay;
pub mod roles;
/// The end-to-end secure channel and certificate checks (the gatewarden-secure crate).
pub use gatewarden_secure as secure;
