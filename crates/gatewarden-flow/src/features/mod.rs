//! Features: the numbers the detector and the model look at, defined once in
//! [`schema`] and computed from flows ([`flow_vector`]) and from per-host
//! damped statistics ([`host::HostTracker`]).

pub mod extract;
pub mod host;
pub mod labels;
pub mod schema;

pub use host::HostTracker;
pub use schema::{FeatureVector, N_FEATURES};

use crate::{ConnState, Flow};
use schema::{FLOW_COLUMNS, HOST_STATS, PAIR_STATS, WINDOWS_S};

/// The full feature vector of a flow, with its source's host and pair statistics at `now`.
pub fn flow_vector(f: &Flow, tracker: &HostTracker, now: u64) -> FeatureVector {
    let mut v = [0.0f32; N_FEATURES];
    let packets = f.packets().max(1) as f64;
    let bytes = (f.fwd_bytes + f.rev_bytes) as f64;
    let mean = bytes / packets;
    let var = (f.len_sq_sum as f64 / packets - mean * mean).max(0.0);
    let gaps = (f.packets().saturating_sub(1)).max(1) as f64;
    let duration_us = f.last_ns.saturating_sub(f.first_ns) as f64 / 1000.0;
    let iat_mean_us = if f.packets() > 1 { duration_us / gaps } else { 0.0 };
    let iat_var = if f.packets() > 1 { (f.iat_sq_sum_us / gaps - iat_mean_us * iat_mean_us).max(0.0) } else { 0.0 };
    let proto = f.key.proto;
    let flow_part: [f64; 22] = [
        duration_us / 1e6,
        f.fwd_packets as f64,
        f.rev_packets as f64,
        f.fwd_bytes as f64,
        f.rev_bytes as f64,
        mean,
        var.sqrt(),
        if f.packets() > 0 { f.len_min as f64 } else { 0.0 },
        f.len_max as f64,
        iat_mean_us / 1000.0,
        iat_var.sqrt() / 1000.0,
        f.iat_max_us as f64 / 1000.0,
        f.flag_counts[0] as f64,
        f.flag_counts[1] as f64,
        f.flag_counts[2] as f64,
        f.flag_counts[3] as f64,
        f.flag_counts[4] as f64,
        f.flag_counts[5] as f64,
        (proto == 6) as u8 as f64,
        (proto == 17) as u8 as f64,
        (proto == 1 || proto == 58) as u8 as f64,
        ((proto == 6 || proto == 17) && f.dport() < 1024) as u8 as f64,
    ];
    for (i, x) in flow_part.iter().enumerate() {
        v[i] = *x as f32;
    }
    let state = f.conn_state();
    let idx = ConnState::ALL.iter().position(|s| *s == state).unwrap_or(ConnState::ALL.len() - 1);
    v[flow_part.len() + idx] = 1.0;
    let mut at = FLOW_COLUMNS.len();
    let hf = tracker.host_features(f.src(), now);
    v[at..at + hf.len()].copy_from_slice(&hf);
    at += WINDOWS_S.len() * HOST_STATS.len();
    let pf = tracker.pair_features(f.src(), f.dst(), now);
    v[at..at + pf.len()].copy_from_slice(&pf);
    debug_assert_eq!(at + WINDOWS_S.len() * PAIR_STATS.len(), N_FEATURES);
    v
}
