//! End-to-end secure channel ("SecureComm"): every verdict, policy update and
//! control command is signed with the sender's ECDSA P-384 identity key and
//! encrypted with AES-256-GCM under a key from HKDF-SHA256 over an ephemeral
//! ECDH P-384 exchange. The broker (or anyone on the TCP path) sees headers only
//! and can neither read, alter nor replay what it carries.
//!
//! # Handshake: signed ephemeral keys, announced per node
//!
//! Every node holds an ephemeral P-384 key pair and announces its public half
//! in an [`Announce`] signed by its identity key (the key of its fleet
//! certificate, which the announcement carries). On MQTT the announcement is
//! retained on `gatewarden/v1/<node>/key`; on a `ctl` TCP connection the two
//! sides send theirs first. A receiver accepts an announcement only if the
//! certificate chains to the fleet CA, its CN is the announced node, and the
//! signature verifies. A byte-identical copy of an announcement whose key it
//! holds (the retained one, redelivered on every reconnect, or a replay) is
//! known by its SHA-256 before any of that, and reported as no new key
//! ([`Announced::new_key`]), so a replay costs a hash, not two P-384
//! verifications and a resend of the outbox.
//!
//! Any other announcement is checked against its node's budget before any
//! cryptography ([`announce_limit`]): `announce_burst` at once, then one per
//! `announce_refill` (5, then one per 5 s, by default). A stolen certificate
//! can mint a fresh key per message, and each one cost every receiver two
//! P-384 verifications and a resend of its outbox to that node; over the
//! budget an announcement is refused unverified as `key_flood`, and the
//! newest refused one is kept and tried again when the budget allows
//! ([`SecureChannel::retry_deferred`]), so a node that really restarted
//! several times in a row is learned late rather than never. The budget is
//! the announcement's node, which must be `claimed` (on MQTT the topic's
//! node level, tied to the publisher's certificate by the broker's ACL), so
//! one certificate cannot spend another node's budget, and a flood changes
//! no other node's keys (each node's keys are its own).
//!
//! To seal for recipient R, sender S combines its own current ephemeral
//! secret with R's announced ephemeral public key:
//! `K = HKDF-SHA256(salt = ek_S ‖ ek_R, ikm = ECDH(eph_S, eph_R), info = "gatewarden/v1 aes-256-gcm" ‖ S ‖ 0 ‖ R)`.
//! The direction is in `info`, so S→R and R→S use different keys; the
//! AES-GCM nonce is the sender's sequence number, unique per sender key. The
//! ciphertext and header are then signed with S's identity key, so every
//! sealed message is attributable to its sender (not merely to "one of the
//! two key holders", as AEAD alone would be).
//!
//! Both halves of the exchange are ephemeral, so recorded traffic stays
//! unreadable once both nodes have rotated (every `rekey_interval`, default
//! 10 min; the previous key is kept for one more interval for messages in
//! flight, then dropped and zeroised). This costs no round trip per
//! message, which suits publish/subscribe where the receiver may be offline;
//! ECIES with a per-message ephemeral key would need a static recipient key
//! and so lose forward secrecy against that key.
//!
//! # Replay and rejection
//!
//! `open` checks, cheapest first: format, known sender, our key id, timestamp
//! within `max_skew`, sequence number against a 1024-wide window per sender
//! key, AES-GCM tag, then the ECDSA signature; only then is the sequence
//! recorded. Every rejection is counted in
//! `gatewarden_secure_rejected_total{reason}` and returned with a reason the
//! bus turns into a `ChannelAbuse` alert.
#![forbid(unsafe_code)]

pub mod announce_limit;
pub mod anomaly;
pub mod envelope;
pub mod replay;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use p384::ecdh::EphemeralSecret;
use p384::elliptic_curve::sec1::ToEncodedPoint;
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};

pub use envelope::{Announce, Envelope, EnvelopeHeader, PayloadKind};

pub mod certs;

use announce_limit::{AnnounceLimiter, Limited};
use certs::{CaVerifier, CertRole, Identity, PeerCert};
use gatewarden_core::metrics::{Counter, Registry};
use replay::{ReplayVerdict, ReplayWindow};

/// Most revoked node ids a channel remembers (to name the reason of their envelopes).
const MAX_REVOKED_REMEMBERED: usize = 1024;

/// Timing and size limits of a channel.
#[derive(Debug, Clone)]
pub struct SecureConfig {
    /// Largest accepted difference between a seal time and now.
    pub max_skew: Duration,
    /// How often the ephemeral key is replaced.
    pub rekey_interval: Duration,
    /// Most peers remembered; the least recently heard is forgotten first.
    /// Also the most nodes whose announcement budget is tracked ([`announce_limit`]).
    pub max_peers: usize,
    /// New key announcements taken from one node at once, before
    /// `announce_refill` applies. A node announces a new key when it starts
    /// and at every rotation; 5 lets a node restart a few times in a row
    /// unhindered.
    pub announce_burst: u32,
    /// One more new key announcement per node per this long, once the burst
    /// is spent (zero: no limit). 5 s is twice the fastest legitimate rate
    /// (`mqtt.rekey_interval_s` is at least 10 s), while a stolen certificate
    /// flooding keys costs each receiver at most 12 verifications and 12
    /// outbox resends a minute instead of thousands a second.
    pub announce_refill: Duration,
}

impl Default for SecureConfig {
    fn default() -> Self {
        SecureConfig {
            max_skew: Duration::from_secs(30),
            rekey_interval: Duration::from_secs(600),
            max_peers: 1024,
            announce_burst: 5,
            announce_refill: Duration::from_secs(5),
        }
    }
}

/// Why a message or announcement was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reject {
    /// Not a decodable envelope/announcement.
    Malformed,
    /// The certificate does not chain to the fleet CA, or names another node.
    BadCertificate,
    /// The identity-key signature does not verify.
    BadSignature,
    /// No announcement from this sender (not a fleet member, or its key is unknown).
    UnknownSender,
    /// Sealed to a key of ours we no longer (or never) had, or with a sender key we do not know.
    UnknownSession,
    /// Sealed for another node.
    NotForUs,
    /// Timestamp outside the allowed skew.
    Stale,
    /// Sequence number seen before or older than the window.
    Replay,
    /// The AES-GCM tag does not verify: altered in transit.
    Tampered,
    /// The sender's role may not send this (e.g. a router sending a verdict).
    Unauthorized,
    /// The sender's certificate is on the fleet CA's revocation list (`pki revoke`).
    Revoked,
    /// More new key announcements from this node than its budget
    /// (`announce_burst`, then one per `announce_refill`): refused before
    /// verifying, the newest kept to try again ([`SecureChannel::retry_deferred`]).
    KeyFlood,
}

impl Reject {
    /// Every reason, for pre-registering counters.
    pub const ALL: [Reject; 12] = [
        Reject::Malformed,
        Reject::BadCertificate,
        Reject::BadSignature,
        Reject::UnknownSender,
        Reject::UnknownSession,
        Reject::NotForUs,
        Reject::Stale,
        Reject::Replay,
        Reject::Tampered,
        Reject::Unauthorized,
        Reject::Revoked,
        Reject::KeyFlood,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::Malformed => "malformed",
            Reject::BadCertificate => "bad_certificate",
            Reject::BadSignature => "bad_signature",
            Reject::UnknownSender => "unknown_sender",
            Reject::UnknownSession => "unknown_session",
            Reject::NotForUs => "not_for_us",
            Reject::Stale => "stale",
            Reject::Replay => "replay",
            Reject::Tampered => "tampered",
            Reject::Unauthorized => "unauthorized",
            Reject::Revoked => "revoked",
            Reject::KeyFlood => "key_flood",
        }
    }
}

/// A refused message: why, who it claimed to be from, and the detail for the alert.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} from {}: {detail}", reason.as_str(), claimed.as_deref().unwrap_or("?"))]
pub struct Rejection {
    /// The reason (counter label).
    pub reason: Reject,
    /// The sender it claimed, if it got that far.
    pub claimed: Option<String>,
    /// What exactly was wrong.
    pub detail: String,
}

fn rejection(reason: Reject, claimed: Option<&str>, detail: impl Into<String>) -> Rejection {
    Rejection { reason, claimed: claimed.map(str::to_string), detail: detail.into() }
}

/// A message that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// Sender node id (from its certificate).
    pub sender: String,
    /// Sender role (from its certificate).
    pub sender_role: CertRole,
    /// De-duplication id.
    pub msg_id: u64,
    /// What the plaintext is.
    pub kind: PayloadKind,
    /// The plaintext.
    pub plaintext: Vec<u8>,
}

/// An announcement that passed: whose it is and whether it changed anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announced {
    /// The announcing node (its certificate's CN).
    pub node: String,
    /// Whether it brought a key this channel did not hold: only then may
    /// messages sealed to that node's old key (or waiting for one) go again.
    /// A repeat (a retained announcement redelivered on every reconnect, or
    /// one replayed on purpose) and an older key change nothing.
    pub new_key: bool,
}

/// Sealing failed: we have no key for that recipient yet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no announced key from {0} yet: it is offline or not a fleet member (check its certificate and `gatewarden/v1/{0}/key`)")]
pub struct NoPeerKey(pub String);

struct OwnKey {
    id: u64,
    secret: EphemeralSecret,
    announce: Announce,
}

#[derive(Clone)]
struct PeerKey {
    id: u64,
    public: p384::PublicKey,
    issued_ns: u64,
    /// SHA-256 of the announcement that brought this key: the same bytes
    /// again are a repeat, known without verifying anything (a peer holds at
    /// most two keys, so this is the whole, bounded, cache).
    announce_hash: [u8; 32],
}

struct Peer {
    cert: PeerCert,
    keys: VecDeque<PeerKey>,
    windows: HashMap<u64, ReplayWindow>,
    sessions: HashMap<(u64, u64, bool), Aes256Gcm>,
    last_heard: Instant,
}

/// One node's end of the secure channel to every peer.
pub struct SecureChannel {
    id: Identity,
    ca: CaVerifier,
    cfg: SecureConfig,
    current: OwnKey,
    previous: Option<OwnKey>,
    rotated_at: Instant,
    seq: u64,
    peers: HashMap<String, Peer>,
    /// Nodes whose announced certificate was revoked: their envelopes are
    /// refused as `revoked` rather than `unknown_sender` (bounded, oldest out).
    revoked: VecDeque<String>,
    /// Each node's budget of announcements that need verifying.
    limiter: AnnounceLimiter,
    rejected: HashMap<Reject, Counter>,
    opened: Counter,
    sealed: Counter,
    rekeys: Counter,
    /// `gatewarden_secure_announcements_total{outcome}`: see [`AnnounceOutcome`].
    announcements: [Counter; 3],
}

/// What became of an announcement that passed (labels of
/// `gatewarden_secure_announcements_total`).
#[derive(Clone, Copy)]
enum AnnounceOutcome {
    /// Verified (certificate and signature) and stored: a key not held before.
    NewKey,
    /// Verified, but the key was held already or is older than the one held.
    Known,
    /// Byte for byte an announcement whose key is held: recognised before any cryptography.
    Repeat,
}

impl std::fmt::Debug for SecureChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureChannel").field("node", &self.id.node).field("peers", &self.peers.len()).finish()
    }
}

fn new_key(id: &Identity, now_ns: u64) -> OwnKey {
    let secret = EphemeralSecret::random(&mut OsRng);
    let ek_pub = secret.public_key().to_encoded_point(false).as_bytes().to_vec();
    let mut announce = Announce {
        node: id.node.clone(),
        cert_der: id.cert_der.clone(),
        ek_id: OsRng.next_u64(),
        ek_pub,
        issued_ns: now_ns,
        signature: Vec::new(),
    };
    announce.signature = id.sign(&announce.signed_bytes());
    OwnKey { id: announce.ek_id, secret, announce }
}

fn derive(
    secret: &EphemeralSecret,
    public: &p384::PublicKey,
    sender: &str,
    recipient: &str,
    s_ek: u64,
    r_ek: u64,
) -> Aes256Gcm {
    let shared = secret.diffie_hellman(public);
    let mut salt = [0u8; 16];
    salt[..8].copy_from_slice(&s_ek.to_be_bytes());
    salt[8..].copy_from_slice(&r_ek.to_be_bytes());
    let hk = Hkdf::<Sha256>::new(Some(&salt), shared.raw_secret_bytes());
    let mut info = b"gatewarden/v1 aes-256-gcm".to_vec();
    info.extend_from_slice(sender.as_bytes());
    info.push(0);
    info.extend_from_slice(recipient.as_bytes());
    let mut key = [0u8; 32];
    hk.expand(&info, &mut key).expect("32 bytes is a valid HKDF-SHA256 output length");
    let cipher = Aes256Gcm::new_from_slice(&key).expect("32-byte key");
    key.iter_mut().for_each(|b| *b = 0);
    cipher
}

fn nonce(seq: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&seq.to_be_bytes());
    n
}

/// Unix time now, ns.
pub fn now_ns() -> u64 {
    gatewarden_core::clock::unix_now_ns()
}

impl SecureChannel {
    /// A channel for `id`, trusting peers whose certificates chain to `ca`.
    pub fn new(id: Identity, ca: CaVerifier, cfg: SecureConfig, registry: &Arc<Registry>) -> SecureChannel {
        let rejected = Reject::ALL
            .iter()
            .map(|r| {
                (
                    *r,
                    registry.counter(
                        "gatewarden_secure_rejected_total",
                        "Envelopes and key announcements refused by the secure channel, by reason.",
                        &[("reason", r.as_str())],
                    ),
                )
            })
            .collect();
        let current = new_key(&id, now_ns());
        SecureChannel {
            current,
            previous: None,
            rotated_at: Instant::now(),
            seq: 0,
            peers: HashMap::new(),
            revoked: VecDeque::new(),
            limiter: AnnounceLimiter::new(cfg.announce_burst, cfg.announce_refill, cfg.max_peers, Instant::now()),
            rejected,
            opened: registry.counter("gatewarden_secure_opened_total", "Envelopes that passed every check.", &[]),
            sealed: registry.counter("gatewarden_secure_sealed_total", "Envelopes sealed for a peer.", &[]),
            rekeys: registry.counter("gatewarden_secure_rekeys_total", "Ephemeral key rotations.", &[]),
            announcements: ["new_key", "known", "repeat"].map(|o| {
                registry.counter(
                    "gatewarden_secure_announcements_total",
                    "Key announcements accepted: new_key and known were verified (two P-384 signature checks each), repeat was recognised as one already held without any.",
                    &[("outcome", o)],
                )
            }),
            id,
            ca,
            cfg,
        }
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.id.node
    }

    /// The current announcement, encoded, to publish (retained) or send first on a connection.
    pub fn announce(&self) -> Vec<u8> {
        envelope::encode(&self.current.announce)
    }

    /// Replaces the ephemeral key; the previous one stays usable for receiving until the next rotation.
    pub fn rotate(&mut self) {
        let fresh = new_key(&self.id, now_ns());
        let old = std::mem::replace(&mut self.current, fresh);
        self.previous = Some(old);
        self.seq = 0;
        self.rotated_at = Instant::now();
        self.rekeys.inc();
        let keep = [self.current.id, self.previous.as_ref().map_or(0, |k| k.id)];
        for p in self.peers.values_mut() {
            p.sessions.retain(|(mine, _, _), _| keep.contains(mine));
        }
    }

    /// Rotates if `rekey_interval` has passed; returns whether it did (then publish [`Self::announce`] again).
    pub fn rotate_if_due(&mut self) -> bool {
        if self.rotated_at.elapsed() >= self.cfg.rekey_interval {
            self.rotate();
            true
        } else {
            false
        }
    }

    fn count(&self, r: Rejection) -> Rejection {
        if let Some(c) = self.rejected.get(&r.reason) {
            c.inc();
        }
        r
    }

    /// Checks and stores a peer's announcement; returns the peer's node id.
    ///
    /// `claimed` is who the transport says sent it (the topic's node level);
    /// it must match the certificate. It is also whose budget of new keys
    /// the announcement spends ([`Reject::KeyFlood`]), so pass it whenever
    /// the transport ties it to the sender: with `None` the budget is the
    /// node the announcement names, which anyone can write before it is
    /// verified (`ctl` passes `None`, but uses one channel per connection).
    pub fn accept_announce(&mut self, bytes: &[u8], claimed: Option<&str>) -> Result<String, Rejection> {
        self.accept_announce_key(bytes, claimed).map(|a| a.node)
    }

    /// [`Self::accept_announce`], also saying whether the key is new (see [`Announced::new_key`]).
    ///
    /// An announcement over its node's budget is refused as
    /// [`Reject::KeyFlood`] without being verified; the newest such one per
    /// node is kept for [`Self::retry_deferred`].
    pub fn accept_announce_key(&mut self, bytes: &[u8], claimed: Option<&str>) -> Result<Announced, Rejection> {
        match self.check_announce(bytes, claimed) {
            Ok((a, outcome)) => {
                self.announcements[outcome as usize].inc();
                Ok(a)
            }
            Err(e) => Err(self.count(e)),
        }
    }

    /// Tries again the announcements refused as [`Reject::KeyFlood`] whose
    /// node's budget allows one now (the newest per node), as
    /// [`Self::accept_announce_key`] would; returns each node with what became
    /// of it. Call it every so often (the MQTT bus does, every 100 ms): a
    /// node announces a key once (retained), and the broker redelivers it
    /// only when this node reconnects, so a key refused during a burst of
    /// restarts would otherwise stay unknown until its next rotation.
    pub fn retry_deferred(&mut self) -> Vec<(String, Result<Announced, Rejection>)> {
        let due = self.limiter.due(Instant::now());
        due.into_iter()
            .map(|(node, bytes)| {
                let r = self.accept_announce_key(&bytes, Some(&node));
                (node, r)
            })
            .collect()
    }

    /// How many nodes' announcement budgets are tracked (at most `max_peers`).
    pub fn announce_budgets(&self) -> usize {
        self.limiter.len()
    }

    /// Spends one of `node`'s budget of announcements to verify, or refuses
    /// `bytes` as a key flood (keeping them to try again if there is room).
    fn spend_budget(&mut self, node: &str, bytes: &[u8]) -> Result<(), Rejection> {
        let peers = &self.peers;
        let member = |n: &str| peers.get(n).is_some_and(|p| !p.keys.is_empty());
        let Err(Limited { retry_in, refused, shared }) = self.limiter.admit(node, Instant::now(), member) else {
            return Ok(());
        };
        let (burst, refill) = (self.cfg.announce_burst.max(1), self.cfg.announce_refill);
        let detail = if shared {
            format!(
                "more than {} nodes are over their key announcement budget at once: {node} shares the overflow \
                 budget, which is spent; refused unverified and not kept (its next announcement is checked)",
                self.cfg.max_peers
            )
        } else {
            let fate = if self.limiter.defer(node, bytes) {
                format!("the newest is kept and tried again in {:.1} s", retry_in.as_secs_f64())
            } else {
                format!("not kept ({} bytes is more than an announcement needs)", bytes.len())
            };
            format!(
                "{refused} key announcement(s) in a row over this node's budget ({burst} at once, then one per {:.1} s): \
                 refused unverified, {fate}. A node announcing keys this often restarts in a loop or its certificate \
                 is stolen (`gatewarden pki revoke {node}`)",
                refill.as_secs_f64()
            )
        };
        Err(rejection(Reject::KeyFlood, Some(node), detail))
    }

    fn check_announce(
        &mut self,
        bytes: &[u8],
        claimed: Option<&str>,
    ) -> Result<(Announced, AnnounceOutcome), Rejection> {
        let a: Announce =
            envelope::decode(bytes).map_err(|e| rejection(Reject::Malformed, claimed, format!("announcement: {e}")))?;
        // A repeat first, before any cryptography: a retained announcement
        // comes back on every reconnect and anyone who saw one can replay it,
        // so verifying each copy (two P-384 checks) was work an attacker could
        // order at will. The same bytes were verified when the key was stored,
        // and a revoked peer is forgotten (`set_ca`), so nothing is skipped
        // that could fail now, other than a certificate expiring, which
        // sealed traffic does not re-check either.
        let hash: [u8; 32] = Sha256::digest(bytes).into();
        if claimed.is_none_or(|c| c == a.node) {
            if let Some(peer) = self.peers.get_mut(&a.node) {
                if peer.keys.iter().any(|k| k.announce_hash == hash) {
                    peer.last_heard = Instant::now();
                    return Ok((Announced { node: a.node, new_key: false }, AnnounceOutcome::Repeat));
                }
            }
        }
        // What needs no cryptography to refuse, then the node's budget, then the cryptography.
        if !gatewarden_core::identity::valid_node_id(&a.node) {
            return Err(rejection(
                Reject::Malformed,
                claimed,
                format!(
                    "announcement names {:?} ({} bytes), not a node id (1 to 64 of A-Z a-z 0-9 - _)",
                    a.node.chars().take(64).collect::<String>(),
                    a.node.len()
                ),
            ));
        }
        if let Some(c) = claimed.filter(|c| *c != a.node) {
            return Err(rejection(
                Reject::BadCertificate,
                Some(&a.node),
                format!("announcement for {:?} arrived as {c:?}'s (its topic): refused unverified", a.node),
            ));
        }
        self.spend_budget(&a.node, bytes)?;
        let cert = match self.ca.verify(&a.cert_der) {
            Ok(c) => c,
            Err(e) => {
                if let Some(r) = e.downcast_ref::<certs::CertRevoked>() {
                    // Only the CA's own signature got us here, so the CN is the holder's:
                    // forget any key it announced before and remember it as revoked.
                    let node = r.node.clone();
                    self.peers.remove(&node);
                    if !self.revoked.contains(&node) {
                        self.revoked.push_back(node.clone());
                        while self.revoked.len() > MAX_REVOKED_REMEMBERED {
                            self.revoked.pop_front();
                        }
                    }
                    return Err(rejection(Reject::Revoked, Some(&node), format!("{e:#}")));
                }
                return Err(rejection(Reject::BadCertificate, Some(&a.node), format!("certificate: {e:#}")));
            }
        };
        if cert.node == a.node {
            // A re-issued certificate for a node revoked before.
            self.revoked.retain(|n| n != &a.node);
        }
        if cert.node != a.node {
            return Err(rejection(
                Reject::BadCertificate,
                Some(&a.node),
                format!("certificate is for {:?}, announcement claims {:?}", cert.node, a.node),
            ));
        }
        if a.signature.len() != 96 {
            return Err(rejection(Reject::BadSignature, Some(&a.node), "announcement signature is not 96 bytes"));
        }
        if !certs::verify_p384(&cert.key_sec1, &a.signed_bytes(), &a.signature) {
            return Err(rejection(Reject::BadSignature, Some(&a.node), "announcement signature does not verify"));
        }
        let public = p384::PublicKey::from_sec1_bytes(&a.ek_pub)
            .map_err(|_| rejection(Reject::Malformed, Some(&a.node), "ephemeral key is not a P-384 point"))?;
        // A key dated ahead of the clock would outrank every later genuine
        // key of its node (older announcements are kept out below) until the
        // certificate is revoked: refuse it. Past dates are normal (retained).
        let skew = self.cfg.max_skew.as_nanos() as u64;
        let now = now_ns();
        if a.issued_ns > now.saturating_add(skew) {
            return Err(rejection(
                Reject::Stale,
                Some(&a.node),
                format!(
                    "key announced {:.1} s in the future (limit {} s): refused, or it would outrank the node's real keys",
                    (a.issued_ns - now) as f64 / 1e9,
                    skew / 1_000_000_000
                ),
            ));
        }
        // Verified: anything kept from this node while it was over budget is older news.
        self.limiter.settled(&a.node);
        let known = |node: String| Ok((Announced { node, new_key: false }, AnnounceOutcome::Known));
        if a.node == self.id.node {
            return known(a.node);
        }
        if !self.peers.contains_key(&a.node) && self.peers.len() >= self.cfg.max_peers {
            if let Some(oldest) = self.peers.iter().min_by_key(|(_, p)| p.last_heard).map(|(k, _)| k.clone()) {
                self.peers.remove(&oldest);
            }
        }
        let peer = self.peers.entry(a.node.clone()).or_insert_with(|| Peer {
            cert: cert.clone(),
            keys: VecDeque::new(),
            windows: HashMap::new(),
            sessions: HashMap::new(),
            last_heard: Instant::now(),
        });
        peer.cert = cert;
        peer.last_heard = Instant::now();
        if peer.keys.iter().any(|k| k.id == a.ek_id) {
            return known(a.node);
        }
        if peer.keys.front().is_some_and(|k| k.issued_ns > a.issued_ns) {
            // An older announcement (e.g. replayed): keep the newer key.
            return known(a.node);
        }
        peer.keys.push_front(PeerKey { id: a.ek_id, public, issued_ns: a.issued_ns, announce_hash: hash });
        peer.keys.truncate(2);
        let ids: Vec<u64> = peer.keys.iter().map(|k| k.id).collect();
        peer.windows.retain(|k, _| ids.contains(k));
        peer.sessions.retain(|(_, theirs, _), _| ids.contains(theirs));
        Ok((Announced { node: a.node, new_key: true }, AnnounceOutcome::NewKey))
    }

    /// Replaces the CA check (a new revocation list): peers whose
    /// certificate it revokes are forgotten at once, and their envelopes are
    /// refused as `revoked` from now on. Returns the nodes dropped.
    pub fn set_ca(&mut self, ca: CaVerifier) -> Vec<String> {
        let dropped: Vec<String> =
            self.peers.iter().filter(|(_, p)| ca.is_revoked(&p.cert.serial)).map(|(n, _)| n.clone()).collect();
        for n in &dropped {
            self.peers.remove(n);
            if !self.revoked.contains(n) {
                self.revoked.push_back(n.clone());
            }
        }
        while self.revoked.len() > MAX_REVOKED_REMEMBERED {
            self.revoked.pop_front();
        }
        self.ca = ca;
        dropped
    }

    /// Whether `node` has announced a usable key.
    pub fn knows(&self, node: &str) -> bool {
        self.peers.get(node).is_some_and(|p| !p.keys.is_empty())
    }

    /// Known peers with `role`.
    pub fn peers_with_role(&self, role: CertRole) -> Vec<String> {
        let mut v: Vec<String> =
            self.peers.iter().filter(|(_, p)| p.cert.role == role).map(|(k, _)| k.clone()).collect();
        v.sort();
        v
    }

    /// The role of a known peer.
    pub fn peer_role(&self, node: &str) -> Option<CertRole> {
        self.peers.get(node).map(|p| p.cert.role)
    }

    /// Seals `plaintext` for `to`: encrypted, signed, numbered.
    pub fn seal(&mut self, to: &str, msg_id: u64, kind: PayloadKind, plaintext: &[u8]) -> Result<Vec<u8>, NoPeerKey> {
        let peer = self.peers.get_mut(to).ok_or_else(|| NoPeerKey(to.to_string()))?;
        let theirs = peer.keys.front().cloned().ok_or_else(|| NoPeerKey(to.to_string()))?;
        let mine = &self.current;
        let cipher = peer
            .sessions
            .entry((mine.id, theirs.id, true))
            .or_insert_with(|| derive(&mine.secret, &theirs.public, &self.id.node, to, mine.id, theirs.id));
        self.seq += 1;
        let header = EnvelopeHeader {
            sender: self.id.node.clone(),
            recipient: to.to_string(),
            sender_ek: mine.id,
            recipient_ek: theirs.id,
            seq: self.seq,
            ts_ns: now_ns(),
            msg_id,
            kind,
        };
        let aad = Envelope::aad(&header);
        let ciphertext = cipher
            .encrypt(&Nonce::from(nonce(self.seq)), Payload { msg: plaintext, aad: &aad })
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let signature = self.id.sign(&Envelope::signed_bytes(&header, &ciphertext));
        self.sealed.inc();
        Ok(envelope::encode(&Envelope { header, ciphertext, signature }))
    }

    /// Opens an envelope addressed to this node, or says why not (and counts it).
    pub fn open(&mut self, bytes: &[u8], now_ns: u64) -> Result<Opened, Rejection> {
        let r = self.check_open(bytes, now_ns);
        match r {
            Ok(o) => {
                self.opened.inc();
                Ok(o)
            }
            Err(e) => Err(self.count(e)),
        }
    }

    fn check_open(&mut self, bytes: &[u8], now_ns: u64) -> Result<Opened, Rejection> {
        let env: Envelope = envelope::decode(bytes).map_err(|e| rejection(Reject::Malformed, None, e.to_string()))?;
        let h = &env.header;
        let from = Some(h.sender.as_str());
        if h.recipient != self.id.node {
            return Err(rejection(Reject::NotForUs, from, format!("sealed for {:?}", h.recipient)));
        }
        let mine = if h.recipient_ek == self.current.id {
            &self.current
        } else {
            match &self.previous {
                Some(p) if p.id == h.recipient_ek => p,
                _ => {
                    return Err(rejection(
                        Reject::UnknownSession,
                        from,
                        "sealed to an ephemeral key of ours that is gone (rotated out) or never existed",
                    ))
                }
            }
        };
        if !self.peers.contains_key(&h.sender) && self.revoked.contains(&h.sender) {
            return Err(rejection(Reject::Revoked, from, "the sender's certificate is revoked (ca.crl)"));
        }
        let peer = self.peers.get_mut(&h.sender).ok_or_else(|| {
            rejection(Reject::UnknownSender, from, "no valid announcement from this sender: not a fleet member")
        })?;
        let theirs = peer.keys.iter().find(|k| k.id == h.sender_ek).cloned().ok_or_else(|| {
            rejection(Reject::UnknownSession, from, "sender ephemeral key unknown (not announced or rotated out)")
        })?;
        let skew = self.cfg.max_skew.as_nanos() as u64;
        if h.ts_ns.abs_diff(now_ns) > skew {
            return Err(rejection(
                Reject::Stale,
                from,
                format!(
                    "sealed {:.1} s away from now (limit {} s)",
                    (h.ts_ns as f64 - now_ns as f64) / 1e9,
                    skew / 1_000_000_000
                ),
            ));
        }
        let window = peer.windows.entry(h.sender_ek).or_default();
        match window.check(h.seq) {
            ReplayVerdict::Fresh => {}
            ReplayVerdict::Duplicate => {
                return Err(rejection(Reject::Replay, from, format!("sequence {} seen before", h.seq)))
            }
            ReplayVerdict::TooOld => {
                return Err(rejection(Reject::Replay, from, format!("sequence {} older than the replay window", h.seq)))
            }
        }
        let cipher = peer
            .sessions
            .entry((mine.id, theirs.id, false))
            .or_insert_with(|| derive(&mine.secret, &theirs.public, &h.sender, &h.recipient, theirs.id, mine.id));
        let aad = Envelope::aad(h);
        let plaintext = cipher
            .decrypt(&Nonce::from(nonce(h.seq)), Payload { msg: &env.ciphertext, aad: &aad })
            .map_err(|_| rejection(Reject::Tampered, from, "AES-GCM tag does not verify: altered in transit"))?;
        if env.signature.len() != 96 {
            return Err(rejection(Reject::BadSignature, from, "signature is not 96 bytes"));
        }
        if !certs::verify_p384(&peer.cert.key_sec1, &Envelope::signed_bytes(h, &env.ciphertext), &env.signature) {
            return Err(rejection(Reject::BadSignature, from, "not signed by the sender's certified key"));
        }
        peer.windows.entry(h.sender_ek).or_default().commit(h.seq);
        peer.last_heard = Instant::now();
        Ok(Opened { sender: h.sender.clone(), sender_role: peer.cert.role, msg_id: h.msg_id, kind: h.kind, plaintext })
    }

    /// Counts an authorization failure decided by the caller (the role may not send that kind).
    pub fn reject_unauthorized(&self, sender: &str, detail: impl Into<String>) -> Rejection {
        self.count(rejection(Reject::Unauthorized, Some(sender), detail))
    }
}
