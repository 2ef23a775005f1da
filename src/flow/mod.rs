//! Where packets become flows: a bounded, bidirectional 5-tuple table with
//! Zeek-style TCP connection states.

pub use gatewarden_proto::conn_state;
pub mod table;

pub use conn_state::ConnState;
pub use table::{Flow, FlowKey, FlowTable, FlowTableStats};
