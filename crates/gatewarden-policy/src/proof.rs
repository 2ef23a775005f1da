//! Which alerts are about a source proven real, judged from the flows the
//! policy already counts: an alert says nothing of the sort (and cannot
//! without a wire change every node must take together), and a deny for a
//! whole group must not rest on addresses anyone on the LAN can forge.
//!
//! - A **brute-force** alert counts when its own connection (`flow_id`) was
//!   completed by its originator (`src_answered`): a guesser has to, to send a
//!   password; a SYN forged with a member's address never is, even when that
//!   member really uses the port (so forging a real user's address gains nothing).
//! - A **scan** alert counts when its source acknowledged what the target sent
//!   it within [`PROOF_WINDOW_NS`] of the alert, on any port (a scan's probes
//!   prove nothing themselves), as the detector's "source proven" says.
//!
//! A proof the monitor missed (a dropped batch) only makes an alert count as
//! unproven: shown, never the ground for a deny.

use std::collections::HashMap;
use std::net::IpAddr;

use gatewarden_core::lru::evict_oldest;
use gatewarden_proto::messages::{Alert, AttackKind, FlowRecord};

/// How long a source's acknowledgement proves it towards a target: the detector's window.
pub const PROOF_WINDOW_NS: u64 = 120_000_000_000;
/// Most entries per table; only real sources can add one (a forger never
/// acknowledges), and at the limit the oldest eighth goes.
pub const MAX_PROOFS: usize = 16_384;

/// Recent proofs that member addresses receive at their address.
#[derive(Debug, Default)]
pub struct Proofs {
    /// (source, destination) → last time, ns, the source acknowledged what the destination sent it.
    towards: HashMap<(IpAddr, IpAddr), u64>,
    /// (flow id, source) of connections their originator completed → when, ns.
    flows: HashMap<(u64, IpAddr), u64>,
}

fn note<K: std::hash::Hash + Eq>(map: &mut HashMap<K, u64>, key: K, ts_ns: u64) {
    if !map.contains_key(&key) && map.len() >= MAX_PROOFS {
        evict_oldest(map, MAX_PROOFS / 8, |t| *t);
    }
    let t = map.entry(key).or_default();
    *t = (*t).max(ts_ns);
}

impl Proofs {
    /// Remembers `f` if its originator acknowledged what it was sent.
    pub fn note(&mut self, f: &FlowRecord) {
        if !f.src_answered {
            return;
        }
        note(&mut self.towards, (f.src, f.dst), f.last_ns);
        note(&mut self.flows, (f.flow_id, f.src), f.last_ns);
    }

    /// Whether `a`'s source is proven real (see the module docs); alerts of other kinds never are.
    pub fn proven(&self, a: &Alert) -> bool {
        let (Some(src), Some(dst)) = (a.src, a.dst) else { return false };
        match a.kind {
            AttackKind::BruteForce => a.flow_id != 0 && self.flows.contains_key(&(a.flow_id, src)),
            AttackKind::PortScan | AttackKind::HostSweep => {
                self.towards.get(&(src, dst)).is_some_and(|t| t.saturating_add(PROOF_WINDOW_NS) >= a.ts_ns)
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatewarden_proto::conn_state::ConnState;
    use gatewarden_proto::messages::{AlertAction, Proto, Severity};

    fn flow(id: u64, src: &str, t_s: u64, answered: bool) -> FlowRecord {
        FlowRecord {
            flow_id: id,
            src: src.parse().unwrap(),
            dst: "198.51.100.5".parse().unwrap(),
            sport: 40000,
            dport: 22,
            proto: Proto::Tcp,
            first_ns: t_s * 1_000_000_000,
            last_ns: t_s * 1_000_000_000,
            fwd_packets: 3,
            rev_packets: 2,
            fwd_bytes: 180,
            rev_bytes: 120,
            conn_state: if answered { ConnState::SF } else { ConnState::S0 },
            src_answered: answered,
        }
    }

    fn alert(kind: AttackKind, src: &str, flow_id: u64, t_s: u64) -> Alert {
        Alert {
            flow_id,
            kind,
            src: Some(src.parse().unwrap()),
            dst: Some("198.51.100.5".parse().unwrap()),
            ts_ns: t_s * 1_000_000_000,
            action: AlertAction::Allowed,
            ..Alert::about_system("d", kind, Severity::High, 1, "x", String::new())
        }
    }

    #[test]
    fn a_guess_counts_only_by_its_own_completed_connection_and_a_scan_by_a_recent_acknowledgement() {
        let mut p = Proofs::default();
        p.note(&flow(1, "192.0.2.5", 1_000, true));
        p.note(&flow(2, "192.0.2.5", 1_001, false));
        assert!(p.proven(&alert(AttackKind::BruteForce, "192.0.2.5", 1, 1_002)));
        assert!(
            !p.proven(&alert(AttackKind::BruteForce, "192.0.2.5", 2, 1_002)),
            "a forged SYN with a real user's address"
        );
        assert!(!p.proven(&alert(AttackKind::BruteForce, "192.0.2.6", 1, 1_002)), "another source, same flow id");
        assert!(p.proven(&alert(AttackKind::PortScan, "192.0.2.5", 0, 1_120)));
        assert!(!p.proven(&alert(AttackKind::PortScan, "192.0.2.5", 0, 1_121)), "older than the window");
        assert!(!p.proven(&alert(AttackKind::PortScan, "192.0.2.6", 0, 1_010)));
        assert!(!p.proven(&alert(AttackKind::Anomaly, "192.0.2.5", 1, 1_002)));
    }

    #[test]
    fn the_tables_stay_bounded() {
        let mut p = Proofs::default();
        for i in 0..(MAX_PROOFS as u64 + 100) {
            let src = std::net::Ipv4Addr::from(0x0a00_0000 + i as u32).to_string();
            p.note(&flow(i + 1, &src, 1_000 + i, true));
        }
        assert!(p.towards.len() <= MAX_PROOFS && p.flows.len() <= MAX_PROOFS);
        // The newest is kept.
        let last = std::net::Ipv4Addr::from(0x0a00_0000 + MAX_PROOFS as u32 + 99).to_string();
        assert!(p.proven(&alert(AttackKind::BruteForce, &last, MAX_PROOFS as u64 + 100, 1_000)));
    }
}
