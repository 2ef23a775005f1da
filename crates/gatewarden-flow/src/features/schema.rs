//! The feature schema: one named, versioned list of columns with units,
//! shared by `gatewarden features` (training data) and the detector
//! (inference). A model records the schema name and version it was trained
//! on; the detector refuses a model whose schema differs.

/// Name of the schema.
pub const SCHEMA_NAME: &str = "gatewarden-flow-host";
/// Bump when columns change meaning, order or count.
pub const SCHEMA_VERSION: u32 = 1;

/// One column of the feature vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Column {
    /// Column name (CSV header and model card).
    pub name: &'static str,
    /// Unit, for people reading the CSV.
    pub unit: &'static str,
}

const fn c(name: &'static str, unit: &'static str) -> Column {
    Column { name, unit }
}

/// Half-lives, in seconds, of the damped windows (Kitsune/AfterImage style).
pub const WINDOWS_S: [f32; 3] = [1.0, 10.0, 60.0];
/// Suffixes naming each window in column names.
pub const WINDOW_SUFFIX: [&str; 3] = ["w1", "w10", "w60"];

/// Per-flow columns.
pub const FLOW_COLUMNS: [Column; 35] = [
    c("flow_duration_s", "s"),
    c("flow_fwd_packets", "packets"),
    c("flow_rev_packets", "packets"),
    c("flow_fwd_bytes", "bytes"),
    c("flow_rev_bytes", "bytes"),
    c("flow_pkt_len_mean", "bytes"),
    c("flow_pkt_len_std", "bytes"),
    c("flow_pkt_len_min", "bytes"),
    c("flow_pkt_len_max", "bytes"),
    c("flow_iat_mean_ms", "ms"),
    c("flow_iat_std_ms", "ms"),
    c("flow_iat_max_ms", "ms"),
    c("flow_syn_count", "packets"),
    c("flow_fin_count", "packets"),
    c("flow_rst_count", "packets"),
    c("flow_psh_count", "packets"),
    c("flow_ack_count", "packets"),
    c("flow_urg_count", "packets"),
    c("flow_proto_tcp", "0/1"),
    c("flow_proto_udp", "0/1"),
    c("flow_proto_icmp", "0/1"),
    c("flow_dport_wellknown", "0/1"),
    c("flow_state_S0", "0/1"),
    c("flow_state_S1", "0/1"),
    c("flow_state_SF", "0/1"),
    c("flow_state_REJ", "0/1"),
    c("flow_state_S2", "0/1"),
    c("flow_state_S3", "0/1"),
    c("flow_state_RSTO", "0/1"),
    c("flow_state_RSTR", "0/1"),
    c("flow_state_RSTOS0", "0/1"),
    c("flow_state_RSTRH", "0/1"),
    c("flow_state_SH", "0/1"),
    c("flow_state_SHR", "0/1"),
    c("flow_state_OTH", "0/1"),
];

/// Per-source-host statistics, each computed for every window in [`WINDOWS_S`].
pub const HOST_STATS: [Column; 10] = [
    c("host_pkt_rate", "packets/s"),
    c("host_byte_rate", "bytes/s"),
    c("host_distinct_dports", "ports opened by new flows in the window (saturates at 32)"),
    c("host_distinct_dsts", "hosts contacted by new flows in the window (saturates at 32)"),
    c("host_syn_ratio", "SYNs sent / packets sent"),
    c("host_synack_ratio", "SYN-ACKs received / SYNs sent"),
    c("host_rst_ratio", "RSTs received / packets sent"),
    c("host_unreach_ratio", "ICMP unreachables received / packets sent"),
    c("host_failed_share", "failed flows / finished flows"),
    c("host_new_dst_rate", "new destinations/s"),
];

/// Per-(source, destination) statistics, each computed for every window.
pub const PAIR_STATS: [Column; 5] = [
    c("pair_pkt_rate", "packets/s"),
    c("pair_byte_rate", "bytes/s"),
    c("pair_distinct_dports", "ports opened by new flows in the window (saturates at 16)"),
    c("pair_syn_ratio", "SYNs / packets"),
    c("pair_rev_ratio", "packets back / packets out"),
];

/// Total number of features.
pub const N_FEATURES: usize = FLOW_COLUMNS.len() + WINDOWS_S.len() * (HOST_STATS.len() + PAIR_STATS.len());

/// One feature vector in schema order.
pub type FeatureVector = [f32; N_FEATURES];

/// Every column name with its unit, in order.
pub fn columns() -> Vec<(String, &'static str)> {
    let mut out: Vec<(String, &'static str)> = FLOW_COLUMNS.iter().map(|c| (c.name.to_string(), c.unit)).collect();
    for suffix in WINDOW_SUFFIX {
        for c in HOST_STATS {
            out.push((format!("{}_{suffix}", c.name), c.unit));
        }
    }
    for suffix in WINDOW_SUFFIX {
        for c in PAIR_STATS {
            out.push((format!("{}_{suffix}", c.name), c.unit));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_count_matches() {
        let cols = columns();
        assert_eq!(cols.len(), N_FEATURES);
        assert_eq!(N_FEATURES, 80);
        let mut names: Vec<_> = cols.iter().map(|c| c.0.clone()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), N_FEATURES);
    }

    #[test]
    fn conn_state_columns_follow_conn_state_order() {
        for (i, s) in crate::ConnState::ALL.iter().enumerate() {
            assert_eq!(FLOW_COLUMNS[22 + i].name, format!("flow_state_{}", s.as_str()));
        }
    }
}
