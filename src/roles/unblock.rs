//! A router's side of the dashboard's "unblock" when the monitor runs on
//! another node: the sealed [`UnblockRequest`] lifts the address from this
//! router's detector and admin sets through the enforcement thread (as
//! `gatewarden ctl unblock` does, so escalation starts over), and the router
//! answers with a system alert naming who asked.

use crate::bus::messages::{Alert, AttackKind, Severity, UnblockRequest};
use crate::ctl::BlockControl;

/// Signature id of "a block was lifted (or was already gone) at the dashboard's request".
pub const SIG_UNBLOCKED: u32 = 9_000_106;
/// Signature id of "the router could not lift the block".
pub const SIG_UNBLOCK_FAILED: u32 = 9_000_107;

/// Every system-alert signature id, one list so that no two events share one
/// (a SIEM keys on them). Detections use 9000000-9000099, link health 9100000+.
pub const SYSTEM_SIGNATURES: [u32; 7] = [
    crate::enforce::service::SIG_BLOCK_SET_FULL,
    crate::roles::detector::SIG_MODEL_REFUSED,
    crate::roles::settings::SIG_SETTINGS_APPLIED,
    crate::roles::settings::SIG_SETTINGS_REFUSED,
    crate::roles::detector::SIG_MODEL_LOADED,
    SIG_UNBLOCKED,
    SIG_UNBLOCK_FAILED,
];

/// Lifts the block `req` names on `control` and says how it went, as the alert the monitor shows.
pub fn apply(control: &dyn BlockControl, node: &str, req: &UnblockRequest) -> Alert {
    let (sig, severity, reason) = match control.unblock(req.ip) {
        Ok(true) => (
            SIG_UNBLOCKED,
            Severity::Low,
            format!("unblock {}: {} unblocked on {node} at the request of {} (dashboard)", req.version, req.ip, req.by),
        ),
        Ok(false) => (
            SIG_UNBLOCKED,
            Severity::Low,
            format!(
                "unblock {}: {} was not blocked on {node} (expired or already lifted); asked by {}",
                req.version, req.ip, req.by
            ),
        ),
        Err(e) => (
            SIG_UNBLOCK_FAILED,
            Severity::Medium,
            format!("unblock {}: {} could not be unblocked on {node}: {e}; asked by {}", req.version, req.ip, req.by),
        ),
    };
    let mut a =
        Alert::about_system(node, AttackKind::System, severity, sig, "GATEWARDEN SYSTEM dashboard unblock", reason);
    // Filtering the alerts by source finds the block's whole story.
    a.src = Some(req.ip);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_signatures_are_distinct_and_apart_from_detections() {
        let mut seen = std::collections::HashSet::new();
        for s in SYSTEM_SIGNATURES {
            assert!(seen.insert(s), "signature {s} is used twice");
            assert!((9_000_100..9_100_000).contains(&s), "{s} overlaps detections or link health");
        }
    }
}
