//! Flow snapshots for the detectors' unit tests.

use gatewarden_flow::ConnState;
use gatewarden_proto::messages::{FlowRecord, Proto};

/// A flow snapshot from `src` at `t` seconds, 60 IP bytes a packet.
#[allow(clippy::too_many_arguments)]
pub(super) fn rec(
    id: u64,
    src: &str,
    dst: &str,
    dport: u16,
    proto: Proto,
    t: f64,
    fwd: u32,
    rev: u32,
    state: &str,
) -> FlowRecord {
    FlowRecord {
        flow_id: id,
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        sport: 40000,
        dport,
        proto,
        first_ns: (t * 1e9) as u64,
        last_ns: (t * 1e9) as u64,
        fwd_packets: fwd,
        rev_packets: rev,
        fwd_bytes: 60 * fwd as u64,
        rev_bytes: 60 * rev as u64,
        conn_state: ConnState::parse(state).unwrap(),
        src_answered: false,
    }
}

/// A TCP flow snapshot with exact times (ms) and IP byte counts.
#[allow(clippy::too_many_arguments)]
pub(super) fn tcp(
    id: u64,
    src: &str,
    dport: u16,
    first_ms: u64,
    last_ms: u64,
    fwd: (u32, u64),
    rev: (u32, u64),
    state: &str,
) -> FlowRecord {
    FlowRecord {
        flow_id: id,
        src: src.parse().unwrap(),
        dst: "198.51.100.10".parse().unwrap(),
        sport: 40000 + (id % 20000) as u16,
        dport,
        proto: Proto::Tcp,
        first_ns: first_ms * 1_000_000,
        last_ns: last_ms * 1_000_000,
        fwd_packets: fwd.0,
        rev_packets: rev.0,
        fwd_bytes: fwd.1,
        rev_bytes: rev.1,
        conn_state: ConnState::parse(state).unwrap(),
        src_answered: false,
    }
}
