//! gatewarden-flow: where a packet becomes a flow.
//!
//! [`packet`] reads a frame's headers (Ethernet, VLAN, IPv4/IPv6, TCP/UDP/ICMP)
//! without touching the payload; [`fragments`] gives an IP fragment its
//! datagram's ports (from the first fragments' transport header); [`table`] is the bounded, bidirectional
//! 5-tuple flow table with Zeek-style connection states; [`features`] turns
//! flows and per-host damped statistics into the numbers the detector and the
//! model read, defined once in [`features::schema`]; [`lan`] follows ARP and
//! neighbour discovery for LAN-mapping detection; [`evidence`] keeps the
//! first packets of each source's flows for per-alert evidence pcaps. [`config`] is `[flow]`.
//!
//! Depends on gatewarden-core, gatewarden-proto (the wire's flow records and
//! connection states) and gatewarden-capture (frames).
#![forbid(unsafe_code)]

pub mod config;
pub mod evidence;
pub mod features;
pub mod fragments;
pub mod lan;
pub mod packet;
pub mod table;

pub use gatewarden_proto::conn_state::{self, ConnState};
pub use table::{Flow, FlowKey, FlowRuns, FlowTable, FlowTableStats, Uncounted};
