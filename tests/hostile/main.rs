//! Hostile input against the real binary (issue #14): every test plays an
//! attacker on the LAN, or a fleet node with a stolen certificate, and then
//! checks that the gateway still answers, stays small and recovers.
//!
//! One module per surface: the HTTP server, the ctl port, the node bus, model
//! uploads. `docs/SECURITY.md` maps each threat to the test that shows it.

#[path = "../common/mod.rs"]
mod common;

mod bus;
mod ctl;
mod http;
mod model;
