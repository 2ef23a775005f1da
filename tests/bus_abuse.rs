//! Red-team findings against the node bus, each as the attack it was: a key
//! announcement replayed to make every node verify it again and resend its
//! outbox. (Certificates come from `gatewarden pki`, which lives in the
//! binary, so these run from here; the bus's own halves of the fixes are
//! unit tests in `crates/gatewarden-bus`.)

use std::sync::Arc;

use gatewarden::pki::{self, CertRole};
use gatewarden_core::metrics::Registry;
use gatewarden_secure::certs::{CaVerifier, Identity};
use gatewarden_secure::*;

struct Fleet {
    dir: tempfile::TempDir,
    ca: CaVerifier,
}

impl Fleet {
    fn new() -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        pki::init(dir.path(), 30, false).unwrap();
        let ca = CaVerifier::load(&pki::PkiDir(dir.path().into()).ca_cert()).unwrap();
        Fleet { dir, ca }
    }
    fn channel(&self, node: &str, role: CertRole, reg: &Arc<Registry>) -> SecureChannel {
        let (c, k) = pki::issue(self.dir.path(), node, role, &[], 30).unwrap();
        let id = Identity::load(&c, &k, &self.ca).unwrap();
        SecureChannel::new(id, self.ca.clone(), SecureConfig::default(), reg)
    }
}

fn announcements(reg: &Registry, outcome: &str) -> f64 {
    reg.snapshot()[&format!("gatewarden_secure_announcements_total{{outcome={outcome}}}")]
}

/// A node's retained key announcement comes back on every reconnect, and a
/// compromised node can publish its own again and again: each copy cost
/// every receiver a certificate and a signature check (two P-384
/// verifications) and, being "accepted", a resend of its whole outbox. A
/// byte-identical copy of an announcement whose key is held is now known
/// before any cryptography, and reported as no new key.
#[test]
fn a_replayed_key_announcement_is_known_without_verifying_it_again() {
    let f = Fleet::new();
    let reg = Registry::new();
    let mut det = f.channel("det-1", CertRole::Detector, &reg);
    let mut router = f.channel("router-1", CertRole::Router, &Registry::new());
    let first = router.announce();
    let accepted = det.accept_announce_key(&first, Some("router-1")).unwrap();
    assert_eq!(accepted, Announced { node: "router-1".into(), new_key: true });
    for i in 0..100 {
        let again = det.accept_announce_key(&first, Some("router-1")).unwrap();
        assert!(!again.new_key, "replay {i} reported as a new key");
    }
    assert_eq!(announcements(&reg, "new_key"), 1.0);
    assert_eq!(announcements(&reg, "known"), 0.0, "a replay was verified again");
    assert_eq!(announcements(&reg, "repeat"), 100.0);

    // The same bytes on another node's topic are still refused, not taken for a repeat.
    let e = det.accept_announce_key(&first, Some("router-2")).unwrap_err();
    assert_eq!(e.reason, Reject::BadCertificate, "{e}");
    // Altered bytes are checked in full.
    let mut forged = first.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    assert!(det.accept_announce_key(&forged, Some("router-1")).is_err());

    // A rotation is a new key; the previous announcement is still a repeat (its key is kept for one interval).
    router.rotate();
    assert!(det.accept_announce_key(&router.announce(), Some("router-1")).unwrap().new_key);
    assert!(!det.accept_announce_key(&first, Some("router-1")).unwrap().new_key);
    assert_eq!(announcements(&reg, "new_key"), 2.0);
    assert_eq!(announcements(&reg, "known"), 0.0);

    // And the channel still works: sealed to the new key, opened by the router.
    router.accept_announce(&det.announce(), Some("det-1")).unwrap();
    let env = det.seal("router-1", 1, PayloadKind::Message, b"block").unwrap();
    assert_eq!(router.open(&env, now_ns()).unwrap().plaintext, b"block");
}
