//! gatewarden-proto: what the nodes say to each other, and nothing about how
//! they compute or carry it.
//!
//! [`messages`] holds every wire type with its codec and the checks a
//! decoded message must pass; [`role`] the node roles; [`conn_state`] the
//! connection states flows and features share; [`signatures`] the one
//! catalogue of alert signature ids (a SIEM keys on them, so no two events may
//! share one); [`kinds`] the one table of message kinds from which topics, the
//! broker ACL and the decoder's checks derive.
//!
//! Depends on gatewarden-core only.
#![forbid(unsafe_code)]

pub mod attack;
pub mod conn_state;
pub mod kinds;
pub mod messages;
pub mod role;
pub mod signatures;
