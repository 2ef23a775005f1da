//! The secure channel (gatewarden-secure) end to end with real certificates
//! from `gatewarden pki`: sealing, opening, forgery, replay, revocation, and
//! what each refusal counts. (They were unit tests before the crate split;
//! issuing certificates lives in the binary, so they run from here.)

use std::sync::Arc;

use gatewarden::pki::{self, CertRole};
use gatewarden_core::metrics::Registry;
use gatewarden_secure::certs::{CaVerifier, Identity};
use gatewarden_secure::*;

struct Fleet {
    pub dir: tempfile::TempDir,
    pub ca: CaVerifier,
}

impl Fleet {
    fn new() -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        pki::init(dir.path(), 30, false).unwrap();
        let ca = CaVerifier::load(&pki::PkiDir(dir.path().into()).ca_cert()).unwrap();
        Fleet { dir, ca }
    }
    fn identity(&self, node: &str, role: CertRole) -> Identity {
        let (c, k) = pki::issue(self.dir.path(), node, role, &[], 30).unwrap();
        Identity::load(&c, &k, &self.ca).unwrap()
    }
    fn channel(&self, node: &str, role: CertRole, reg: &Arc<Registry>) -> SecureChannel {
        SecureChannel::new(self.identity(node, role), self.ca.clone(), SecureConfig::default(), reg)
    }
}

fn pair() -> (SecureChannel, SecureChannel, Arc<Registry>) {
    let f = Fleet::new();
    let reg = Registry::new();
    let mut d = f.channel("det-1", CertRole::Detector, &Registry::new());
    let mut r = f.channel("router-1", CertRole::Router, &reg);
    d.accept_announce(&r.announce(), Some("router-1")).unwrap();
    r.accept_announce(&d.announce(), Some("det-1")).unwrap();
    (d, r, reg)
}

fn rejected(reg: &Registry, reason: &str) -> f64 {
    reg.snapshot()[&format!("gatewarden_secure_rejected_total{{reason={reason}}}")]
}

#[test]
fn a_revoked_senders_key_and_envelopes_are_refused_as_revoked() {
    let f = Fleet::new();
    let mut d = f.channel("det-1", CertRole::Detector, &Registry::new());
    pki::revoke(f.dir.path(), "det-1", pki::RevokeReason::KeyCompromise).unwrap();
    let ca = CaVerifier::load(&pki::PkiDir(f.dir.path().into()).ca_cert()).unwrap();
    let reg = Registry::new();
    let (c, k) = pki::issue(f.dir.path(), "router-1", CertRole::Router, &[], 30).unwrap();
    let mut r = SecureChannel::new(Identity::load(&c, &k, &ca).unwrap(), ca, SecureConfig::default(), &reg);
    d.accept_announce(&r.announce(), Some("router-1")).unwrap();
    let e = r.accept_announce(&d.announce(), Some("det-1")).unwrap_err();
    assert_eq!(e.reason, Reject::Revoked, "{e}");
    let env = d.seal("router-1", 1, PayloadKind::Message, b"block").unwrap();
    assert_eq!(r.open(&env, now_ns()).unwrap_err().reason, Reject::Revoked);
    assert_eq!(rejected(&reg, "revoked"), 2.0);
}

#[test]
fn a_new_revocation_list_drops_a_known_peer_at_once() {
    let reg = Registry::new();
    let f = Fleet::new();
    let mut d2 = f.channel("det-1", CertRole::Detector, &Registry::new());
    let mut r2 = f.channel("router-1", CertRole::Router, &reg);
    d2.accept_announce(&r2.announce(), Some("router-1")).unwrap();
    r2.accept_announce(&d2.announce(), Some("det-1")).unwrap();
    let env = d2.seal("router-1", 1, PayloadKind::Message, b"one").unwrap();
    assert!(r2.open(&env, now_ns()).is_ok(), "trusted before the new list");
    pki::revoke(f.dir.path(), "det-1", pki::RevokeReason::KeyCompromise).unwrap();
    let ca = CaVerifier::load(&pki::PkiDir(f.dir.path().into()).ca_cert()).unwrap();
    assert_eq!(r2.set_ca(ca), vec!["det-1".to_string()]);
    let env = d2.seal("router-1", 2, PayloadKind::Message, b"two").unwrap();
    assert_eq!(r2.open(&env, now_ns()).unwrap_err().reason, Reject::Revoked);
}

#[test]
fn sealed_message_opens_once_with_sender_and_role() {
    let (mut d, mut r, reg) = pair();
    let env = d.seal("router-1", 77, PayloadKind::Message, b"block 198.51.100.7").unwrap();
    assert!(!env.windows(18).any(|w| w == b"block 198.51.100.7"), "plaintext must not appear on the wire");
    let o = r.open(&env, now_ns()).unwrap();
    assert_eq!((o.sender.as_str(), o.sender_role, o.msg_id), ("det-1", CertRole::Detector, 77));
    assert_eq!(o.plaintext, b"block 198.51.100.7");
    let e = r.open(&env, now_ns()).unwrap_err();
    assert_eq!(e.reason, Reject::Replay);
    assert_eq!(rejected(&reg, "replay"), 1.0);
}

#[test]
fn every_flipped_bit_is_refused() {
    let (mut d, mut r, reg) = pair();
    let env = d.seal("router-1", 1, PayloadKind::Message, b"verdict").unwrap();
    let decoded: Envelope = envelope::decode(&env).unwrap();
    let ct_at = env.len() - 1 - decoded.signature.len() - decoded.ciphertext.len();
    for i in 0..env.len() {
        let mut bad = env.clone();
        bad[i] ^= 0x01;
        assert!(r.open(&bad, now_ns()).is_err(), "byte {i} flipped was accepted");
    }
    let mut bad = env.clone();
    bad[ct_at + 2] ^= 0x80;
    assert_eq!(r.open(&bad, now_ns()).unwrap_err().reason, Reject::Tampered);
    assert!(rejected(&reg, "tampered") >= 1.0);
    assert!(r.open(&env, now_ns()).is_ok(), "the original still opens after the forgeries");
}

#[test]
fn a_key_from_another_ca_is_refused_and_its_envelopes_are_unknown() {
    let f = Fleet::new();
    let reg = Registry::new();
    let mut r = f.channel("router-1", CertRole::Router, &reg);
    let other = Fleet::new();
    // The intruder trusts our CA (so it can read the router's announcement) but holds a key our CA never signed.
    for claimed in ["det-1", "det-9"] {
        let mut intruder = SecureChannel::new(
            other.identity(claimed, CertRole::Detector),
            f.ca.clone(),
            SecureConfig::default(),
            &Registry::new(),
        );
        let e = r.accept_announce(&intruder.announce(), Some(claimed)).unwrap_err();
        assert_eq!(e.reason, Reject::BadCertificate, "{e}");
        intruder.accept_announce(&r.announce(), Some("router-1")).unwrap();
        let env = intruder.seal("router-1", 1, PayloadKind::Message, b"unblock everything").unwrap();
        assert_eq!(r.open(&env, now_ns()).unwrap_err().reason, Reject::UnknownSender);
    }
    assert_eq!(rejected(&reg, "bad_certificate"), 2.0);
    assert_eq!(rejected(&reg, "unknown_sender"), 2.0);
    // The real det-1 still gets through afterwards.
    let mut d = f.channel("det-1", CertRole::Detector, &Registry::new());
    r.accept_announce(&d.announce(), Some("det-1")).unwrap();
    d.accept_announce(&r.announce(), None).unwrap();
    assert!(r.open(&d.seal("router-1", 2, PayloadKind::Message, b"ok").unwrap(), now_ns()).is_ok());
}

#[test]
fn an_announcement_on_another_nodes_topic_is_refused() {
    let f = Fleet::new();
    let mut r = f.channel("router-1", CertRole::Router, &Registry::new());
    let d = f.channel("det-1", CertRole::Detector, &Registry::new());
    assert_eq!(r.accept_announce(&d.announce(), Some("det-2")).unwrap_err().reason, Reject::BadCertificate);
}

#[test]
fn a_forged_signature_with_the_right_session_is_refused() {
    use p384::ecdsa::signature::Signer;
    use p384::ecdsa::Signature;
    let (mut d, mut r, reg) = pair();
    let env = d.seal("router-1", 1, PayloadKind::Message, b"x").unwrap();
    let mut e: Envelope = envelope::decode(&env).unwrap();
    let stranger = p384::ecdsa::SigningKey::random(&mut rand_core::OsRng);
    let sig: Signature = stranger.sign(&Envelope::signed_bytes(&e.header, &e.ciphertext));
    e.signature = sig.to_bytes().to_vec();
    let err = r.open(&envelope::encode(&e), now_ns()).unwrap_err();
    assert_eq!(err.reason, Reject::BadSignature);
    assert_eq!(rejected(&reg, "bad_signature"), 1.0);
}

#[test]
fn stale_and_misaddressed_envelopes_are_refused() {
    let (mut d, mut r, reg) = pair();
    let env = d.seal("router-1", 1, PayloadKind::Message, b"x").unwrap();
    assert_eq!(r.open(&env, now_ns() + 120_000_000_000).unwrap_err().reason, Reject::Stale);
    assert_eq!(d.open(&env, now_ns()).unwrap_err().reason, Reject::NotForUs);
    assert_eq!(rejected(&reg, "stale"), 1.0);
    assert!(r.open(&env, now_ns()).is_ok());
}

#[test]
fn rekey_keeps_one_previous_key_then_forgets_it() {
    let (mut d, mut r, _) = pair();
    let old = d.seal("router-1", 1, PayloadKind::Message, b"in flight").unwrap();
    r.rotate();
    d.accept_announce(&r.announce(), None).unwrap();
    assert!(r.open(&old, now_ns()).is_ok(), "previous key still opens messages in flight");
    let newer = d.seal("router-1", 2, PayloadKind::Message, b"new key").unwrap();
    assert!(r.open(&newer, now_ns()).is_ok());
    let replay_later = d.seal("router-1", 3, PayloadKind::Message, b"x").unwrap();
    r.rotate();
    r.rotate();
    assert_eq!(r.open(&replay_later, now_ns()).unwrap_err().reason, Reject::UnknownSession, "forward secrecy");
}

#[test]
fn directions_use_different_keys() {
    let (mut d, mut r, _) = pair();
    let a = d.seal("router-1", 1, PayloadKind::Message, &[0u8; 32]).unwrap();
    let b = r.seal("det-1", 1, PayloadKind::Message, &[0u8; 32]).unwrap();
    let (ea, eb): (Envelope, Envelope) = (envelope::decode(&a).unwrap(), envelope::decode(&b).unwrap());
    assert_ne!(ea.ciphertext, eb.ciphertext, "same seq and plaintext, different direction → different key");
    assert!(d.open(&b, now_ns()).is_ok() && r.open(&a, now_ns()).is_ok());
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
