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

/// An announcement of a fresh ephemeral key from `id` (a stolen certificate
/// and its key): validly signed, a key id never seen, a later issue time.
fn minted(id: &Identity, ek_pub: &[u8], ek_id: u64, issued_ns: u64) -> Vec<u8> {
    let mut a = Announce {
        node: id.node.clone(),
        cert_der: id.cert_der.clone(),
        ek_id,
        ek_pub: ek_pub.to_vec(),
        issued_ns,
        signature: Vec::new(),
    };
    a.signature = id.sign(&a.signed_bytes());
    envelope::encode(&a)
}

/// Red-team finding: a node with a stolen certificate can mint a new
/// ephemeral key per message and announce each one. Every receiver paid a
/// CA check and a signature check (P-384) for each, and each new key
/// re-queued that node's unsent outbox (`Announced::new_key`). New keys are
/// now limited per node before any verification; the flood is refused and
/// counted as `key_flood`, and nobody else's key or budget is touched.
#[test]
fn a_flood_of_new_keys_from_one_certificate_is_limited_before_verifying() {
    const FLOOD: usize = 1000;
    let f = Fleet::new();
    let reg = Registry::new();
    let mut det = f.channel("det-1", CertRole::Detector, &reg);
    let mut router = f.channel("router-1", CertRole::Router, &Registry::new());
    assert!(det.accept_announce_key(&router.announce(), Some("router-1")).unwrap().new_key);
    router.accept_announce(&det.announce(), Some("det-1")).unwrap();
    let before = announcements(&reg, "new_key") + announcements(&reg, "known");

    // det-2's certificate and key are stolen: a thousand distinct, valid, new keys in a burst.
    let stolen = f.identity("det-2", CertRole::Detector);
    let points: Vec<Vec<u8>> = (0..4)
        .map(|_| {
            let k = p384::SecretKey::random(&mut rand_core::OsRng).public_key();
            p384::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&k, false).as_bytes().to_vec()
        })
        .collect();
    let start = std::time::Instant::now();
    let t0 = now_ns();
    let mut new_keys = 0;
    for i in 0..FLOOD {
        let a = minted(&stolen, &points[i % points.len()], 0x5eed_0000 + i as u64, t0 + i as u64);
        if let Ok(a) = det.accept_announce_key(&a, Some("det-2")) {
            new_keys += usize::from(a.new_key);
        }
    }
    // The default budget: 5 at once, then one per 5 s.
    let cfg = SecureConfig::default();
    let allowed = cfg.announce_burst as usize
        + (start.elapsed().as_secs_f64() / cfg.announce_refill.as_secs_f64()).ceil() as usize;
    let verified = (announcements(&reg, "new_key") + announcements(&reg, "known") - before) as usize;
    assert!(
        new_keys <= allowed && verified <= allowed,
        "{FLOOD} minted keys: {new_keys} taken as new (each re-queues the outbox), {verified} verified; at most {allowed} may be"
    );
    assert_eq!(rejected(&reg, "key_flood") as usize, FLOOD - verified, "every refused key is counted");

    // The legitimate peer's working key was not evicted: both directions still open.
    let env = det.seal("router-1", 1, PayloadKind::Message, b"block").unwrap();
    assert_eq!(router.open(&env, now_ns()).unwrap().plaintext, b"block");
    let env = router.seal("det-1", 1, PayloadKind::Message, b"outcome").unwrap();
    assert_eq!(det.open(&env, now_ns()).unwrap().plaintext, b"outcome");
    // And it restarts (one new key) during the flood: accepted at once, its budget is its own.
    let mut restarted = f.channel("router-1", CertRole::Router, &Registry::new());
    let a = det.accept_announce_key(&restarted.announce(), Some("router-1")).unwrap();
    assert!(a.new_key, "router-1's restart was refused during det-2's flood");
    restarted.accept_announce(&det.announce(), Some("det-1")).unwrap();
    let env = det.seal("router-1", 2, PayloadKind::Message, b"again").unwrap();
    assert_eq!(restarted.open(&env, now_ns()).unwrap().plaintext, b"again");
    let e = det.accept_announce_key(&minted(&stolen, &points[0], 1, now_ns()), Some("det-2")).unwrap_err();
    assert_eq!(e.reason, Reject::KeyFlood, "{e}");
    assert!(e.detail.contains("gatewarden pki revoke det-2"), "the alert says what to do: {e}");
}

/// Red-team finding: a stolen certificate announced one key dated far in the
/// future (`issued_ns` near `u64::MAX`). Older announcements are kept out, so
/// every genuine key the node announced afterwards was ignored until the
/// certificate was revoked and the node re-issued. A key dated beyond the
/// clock skew is now refused as `stale`, and the node's real key still lands.
#[test]
fn a_key_announced_from_the_future_is_refused_and_does_not_shadow_the_real_one() {
    let f = Fleet::new();
    let reg = Registry::new();
    let mut det = f.channel("det-1", CertRole::Detector, &reg);
    let stolen = f.identity("router-1", CertRole::Router);
    let k = p384::SecretKey::random(&mut rand_core::OsRng).public_key();
    let point = p384::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&k, false).as_bytes().to_vec();
    let future = minted(&stolen, &point, 0xf00d, u64::MAX - 1);
    let e = det.accept_announce_key(&future, Some("router-1")).unwrap_err();
    assert_eq!(e.reason, Reject::Stale, "{e}");
    assert!(e.detail.contains("in the future"), "{e}");
    // The genuine router starts afterwards: its key is taken and traffic opens.
    let mut router = f.channel("router-1", CertRole::Router, &Registry::new());
    assert!(det.accept_announce_key(&router.announce(), Some("router-1")).unwrap().new_key);
    router.accept_announce(&det.announce(), Some("det-1")).unwrap();
    let env = det.seal("router-1", 1, PayloadKind::Message, b"block").unwrap();
    assert_eq!(router.open(&env, now_ns()).unwrap().plaintext, b"block");
    // Within the skew (a clock a few seconds ahead) is still fine.
    let ahead = minted(&stolen, &point, 0xf00e, now_ns() + 5_000_000_000);
    assert!(det.accept_announce_key(&ahead, Some("router-1")).is_ok());
}

/// A node that really restarts several times in a row goes over its budget
/// too, and its key is announced once (retained): the newest refused
/// announcement is kept and taken once the budget allows, so the node is
/// learned late, not at its next rotation or our next reconnect.
#[test]
fn a_key_refused_during_a_burst_of_restarts_is_learned_once_the_budget_allows() {
    let f = Fleet::new();
    let reg = Registry::new();
    let cfg = SecureConfig {
        announce_burst: 2,
        announce_refill: std::time::Duration::from_millis(300),
        ..Default::default()
    };
    let mut router = SecureChannel::new(f.identity("router-1", CertRole::Router), f.ca.clone(), cfg, &reg);
    let det = f.identity("det-1", CertRole::Detector);
    let mut restarts: Vec<SecureChannel> = (0..5)
        .map(|_| SecureChannel::new(det.clone(), f.ca.clone(), SecureConfig::default(), &Registry::new()))
        .collect();
    let outcomes: Vec<Result<bool, Reject>> = restarts
        .iter()
        .map(|d| router.accept_announce_key(&d.announce(), Some("det-1")).map(|a| a.new_key).map_err(|e| e.reason))
        .collect();
    assert_eq!(outcomes, [Ok(true), Ok(true), Err(Reject::KeyFlood), Err(Reject::KeyFlood), Err(Reject::KeyFlood)]);
    assert_eq!(rejected(&reg, "key_flood"), 3.0);
    assert!(router.retry_deferred().is_empty(), "not before the budget allows");

    std::thread::sleep(std::time::Duration::from_millis(350));
    let retried = router.retry_deferred();
    assert_eq!(retried, vec![("det-1".to_string(), Ok(Announced { node: "det-1".into(), new_key: true }))]);
    assert!(router.retry_deferred().is_empty(), "taken once");
    // It was the newest (the running det-1's): its verdicts open; one refused and replaced by it does not.
    let live = restarts.last_mut().unwrap();
    live.accept_announce(&router.announce(), Some("router-1")).unwrap();
    let env = live.seal("router-1", 1, PayloadKind::Message, b"block").unwrap();
    assert_eq!(router.open(&env, now_ns()).unwrap().plaintext, b"block");
    let gone = &mut restarts[2];
    gone.accept_announce(&router.announce(), Some("router-1")).unwrap();
    let env = gone.seal("router-1", 1, PayloadKind::Message, b"old").unwrap();
    assert_eq!(router.open(&env, now_ns()).unwrap_err().reason, Reject::UnknownSession);
    assert_eq!(announcements(&reg, "new_key"), 3.0);
}

/// With the topic tied to the certificate (the broker's ACL), an
/// announcement naming another node than its topic is refused before any
/// check, and every named node has a budget of its own. Made-up names (on a
/// transport that does not vouch for the sender) must not grow the budgets
/// past `max_peers` nor buy verifications past them, nor cost a known peer
/// its budget.
#[test]
fn made_up_node_names_keep_the_budgets_bounded_and_known_peers_theirs() {
    let f = Fleet::new();
    let reg = Registry::new();
    let cfg = SecureConfig { max_peers: 64, ..Default::default() };
    let mut det = SecureChannel::new(f.identity("det-1", CertRole::Detector), f.ca.clone(), cfg.clone(), &reg);
    det.accept_announce(&f.channel("router-1", CertRole::Router, &Registry::new()).announce(), Some("router-1"))
        .unwrap();
    let stolen = f.identity("det-2", CertRole::Detector);
    let ghost = |node: String| {
        envelope::encode(&Announce {
            node,
            cert_der: stolen.cert_der.clone(),
            ek_id: 7,
            ek_pub: vec![4; 97],
            issued_ns: now_ns(),
            signature: vec![0; 96],
        })
    };
    // On another node's topic: refused unverified, spending nobody's budget.
    for _ in 0..100 {
        let e = det.accept_announce_key(&ghost("det-2".into()), Some("router-1")).unwrap_err();
        assert_eq!(e.reason, Reject::BadCertificate, "{e}");
    }
    assert_eq!(det.announce_budgets(), 1, "only router-1's");

    const NAMES: usize = 3000;
    for i in 0..NAMES {
        let node = format!("ghost-{i}");
        let e = det.accept_announce_key(&ghost(node.clone()), Some(&node)).unwrap_err();
        assert!(matches!(e.reason, Reject::BadCertificate | Reject::KeyFlood), "{e}");
    }
    let verified = rejected(&reg, "bad_certificate") as usize - 100;
    assert!(det.announce_budgets() <= cfg.max_peers, "{} budgets", det.announce_budgets());
    assert!(
        verified <= cfg.max_peers + cfg.announce_burst as usize,
        "{verified} of {NAMES} made-up names were verified"
    );
    assert_eq!(rejected(&reg, "key_flood") as usize, NAMES - verified);

    // router-1, a known peer, restarts: accepted at once.
    let a = det
        .accept_announce_key(&f.channel("router-1", CertRole::Router, &Registry::new()).announce(), Some("router-1"));
    assert!(a.unwrap().new_key);
}
