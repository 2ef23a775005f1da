//! A router's side of the dashboard's "unblock" when the monitor runs on
//! another node: the sealed [`UnblockRequest`] lifts the address from this
//! router's detector and admin sets through the enforcement thread (as
//! `gatewarden ctl unblock` does, so escalation starts over), and the router
//! answers with a system alert naming who asked.

use crate::ctl::BlockControl;
use gatewarden_proto::messages::{Alert, AttackKind, Severity, UnblockRequest};

pub use gatewarden_proto::signatures::{UNBLOCKED as SIG_UNBLOCKED, UNBLOCK_FAILED as SIG_UNBLOCK_FAILED};

pub use gatewarden_proto::messages::MAX_UNBLOCK_REQUEST_AGE_S as MAX_REQUEST_AGE_S;

/// Why a request is too old to carry out at `now_ns`, if it is.
pub fn expired(req: &UnblockRequest, now_ns: u64) -> Option<String> {
    let age_s = now_ns.saturating_sub(req.version) / 1_000_000_000;
    (age_s > MAX_REQUEST_AGE_S).then(|| {
        format!("the request is {age_s} s old (more than {MAX_REQUEST_AGE_S} s: the router was away); unblock again on the dashboard if it is still wanted")
    })
}

/// Lifts the block `req` names on `control` (unless the request is stale at
/// `now_ns`) and says how it went, as the alert the monitor shows.
pub fn apply(control: &dyn BlockControl, node: &str, req: &UnblockRequest, now_ns: u64) -> Alert {
    let outcome = match expired(req, now_ns) {
        Some(why) => Err(why),
        None => control.unblock(req.ip),
    };
    let (sig, severity, reason) = match outcome {
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
    fn requests_delivered_late_are_refused() {
        let req = UnblockRequest { version: 1_000 * 1_000_000_000, ip: "192.0.2.7".parse().unwrap(), by: "ops".into() };
        assert_eq!(expired(&req, req.version), None);
        assert_eq!(expired(&req, req.version + MAX_REQUEST_AGE_S * 1_000_000_000), None);
        // A clock a little behind the monitor's is not "old".
        assert_eq!(expired(&req, req.version - 5_000_000_000), None);
        let why = expired(&req, req.version + 3600 * 1_000_000_000).unwrap();
        assert!(why.contains("3600 s old") && why.contains("unblock again"), "{why}");
    }
}
