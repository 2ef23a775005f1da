//! Who may read and change what: JSON Web Tokens signed with ES384 (ECDSA
//! P-384 + SHA-384, pure-Rust `p384`), verified against the JWKS the monitor
//! serves at `/.well-known/jwks.json`, with two roles — `viewer` reads,
//! `admin` also writes — and token-bucket rate limits per client, per checked
//! token and for signature checks ([`Allowance`]).
//!
//! Tokens are made with `gatewarden token issue --role admin --ttl 1h`, which
//! signs with the same key file the monitor uses (`http.jwt_key`, default
//! `<monitor.data_dir>/jwt-es384.pem`).
//!
//! Time claims are honest (issue #14): a token issued in the future (`iat`),
//! not yet valid (`nbf`) — both beyond [`CLOCK_SKEW_S`] — or living longer than
//! `http.max_token_ttl_s` is refused, so a key that signed with a wrong clock
//! or a stolen key cannot mint a token that stays good for a century.

use gatewarden_core::token_bucket::TokenBucket;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use base64ct::{Base64UrlUnpadded, Encoding};
use p384::ecdsa::signature::{Signer as _, Verifier as _};
use p384::ecdsa::{Signature, SigningKey, VerifyingKey};
use p384::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Digest;

/// The key file's name inside `monitor.data_dir`.
pub const KEY_FILE: &str = "jwt-es384.pem";
/// The `iss` claim of tokens this node issues.
pub const ISSUER: &str = "gatewarden";
/// The ceiling for `http.max_token_ttl_s` and `token issue --ttl` (a year):
/// no configuration makes a token live longer.
pub const MAX_TTL_S: u64 = 366 * 86_400;
pub use crate::config::DEFAULT_MAX_TOKEN_TTL_S;
/// How far `iat` and `nbf` may lie ahead of this node's clock (clocks of the
/// issuing and verifying machines drift; NTP on a fresh board may lag).
pub const CLOCK_SKEW_S: u64 = 60;
/// Largest token accepted (anything longer is refused before decoding).
pub const MAX_TOKEN_BYTES: usize = 4096;

/// What a token lets its bearer do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessRole {
    /// Read the dashboard and API.
    Viewer,
    /// Read and change: acknowledge and resolve alerts, unblock.
    Admin,
}

impl AccessRole {
    /// Parses the claim value (`viewer`, `admin`).
    pub fn parse(s: &str) -> Option<AccessRole> {
        match s {
            "viewer" => Some(AccessRole::Viewer),
            "admin" => Some(AccessRole::Admin),
            _ => None,
        }
    }

    /// The claim value.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessRole::Viewer => "viewer",
            AccessRole::Admin => "admin",
        }
    }
}

/// The claims gatewarden puts in and requires of a token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Who the token is for (shown in alert-state changes).
    pub sub: String,
    /// Viewer or admin.
    pub role: AccessRole,
    /// Issued at, Unix seconds; gatewarden always sets it. Without it the
    /// lifetime cap counts from now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Not valid before, Unix seconds (optional; `token issue` does not set it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Expires at, Unix seconds.
    pub exp: u64,
}

impl Claims {
    /// Checks the time claims at `now`: `iat` and `nbf` at most [`CLOCK_SKEW_S`]
    /// ahead, not expired, and a lifetime (`exp - iat`, or `exp - now` without
    /// `iat`) of at most `max_ttl_s`. Each refusal says what to do.
    pub fn check_times(&self, now: u64, max_ttl_s: u64) -> Result<(), AuthError> {
        use gatewarden_core::duration::format_duration as dur;
        let horizon = now.saturating_add(CLOCK_SKEW_S);
        if let Some(iat) = self.iat.filter(|&t| t > horizon) {
            return Err(AuthError::Invalid(format!(
                "it was issued {} in the future (iat {iat}; this node's clock says {now}): check this node's \
                 clock (and the issuing machine's), or issue a new token with `gatewarden token issue`",
                dur(iat - now)
            )));
        }
        if let Some(nbf) = self.nbf.filter(|&t| t > horizon) {
            return Err(AuthError::Invalid(format!(
                "it is not valid for another {} (nbf {nbf}; this node's clock says {now}): wait, check this \
                 node's clock, or issue a token without a start time with `gatewarden token issue`",
                dur(nbf - now)
            )));
        }
        if self.exp <= now {
            return Err(AuthError::Expired(now - self.exp));
        }
        let lifetime = self.exp.saturating_sub(self.iat.unwrap_or(now));
        if lifetime > max_ttl_s {
            return Err(AuthError::Invalid(format!(
                "it lives {} but this monitor accepts at most {} (http.max_token_ttl_s): issue a shorter one, \
                 e.g. `gatewarden token issue --ttl 30d`",
                dur(lifetime),
                dur(max_ttl_s)
            )));
        }
        Ok(())
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token where one is needed (401).
    #[error("a token is needed: send `Authorization: Bearer <token>` (make one with `gatewarden token issue --role viewer`)")]
    Missing,
    /// Malformed, wrongly signed or unknown-key token (401).
    #[error("the token is not valid: {0}")]
    Invalid(String),
    /// Past its `exp` (401).
    #[error("the token expired {0} s ago: issue a new one with `gatewarden token issue`")]
    Expired(u64),
    /// Valid token, not enough rights (403).
    #[error("this needs the {needed} role; the token has {had}")]
    Forbidden {
        /// The role needed.
        needed: &'static str,
        /// The token's role.
        had: &'static str,
    },
}

impl AuthError {
    /// The HTTP status for this refusal.
    pub fn status(&self) -> u16 {
        match self {
            AuthError::Forbidden { .. } => 403,
            _ => 401,
        }
    }
}

fn b64(data: &[u8]) -> String {
    Base64UrlUnpadded::encode_string(data)
}

fn unb64(s: &str, what: &str) -> Result<Vec<u8>, AuthError> {
    Base64UrlUnpadded::decode_vec(s).map_err(|_| AuthError::Invalid(format!("{what} is not base64url")))
}

/// The public half of a key as a JWK (RFC 7517) with its RFC 7638 thumbprint as `kid`.
pub fn jwk(key: &VerifyingKey) -> Value {
    let point = key.to_encoded_point(false);
    let x = b64(point.x().expect("uncompressed point has x"));
    let y = b64(point.y().expect("uncompressed point has y"));
    // RFC 7638: members in lexicographic order, no spaces.
    let thumb = format!(r#"{{"crv":"P-384","kty":"EC","x":"{x}","y":"{y}"}}"#);
    let kid = b64(&sha2::Sha256::digest(thumb.as_bytes()));
    json!({"kty": "EC", "crv": "P-384", "x": x, "y": y, "kid": kid, "alg": "ES384", "use": "sig"})
}

/// Signs tokens; owns the private key.
pub struct TokenSigner {
    key: SigningKey,
    kid: String,
    /// Where the key lives, or `None` for a key that dies with the process.
    pub path: Option<PathBuf>,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner").field("kid", &self.kid).field("path", &self.path).finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// A fresh key held in memory only: tokens stop working when the process ends.
    pub fn ephemeral() -> TokenSigner {
        TokenSigner::from_key(SigningKey::random(&mut rand_core::OsRng), None)
    }

    fn from_key(key: SigningKey, path: Option<PathBuf>) -> TokenSigner {
        let kid = jwk(key.verifying_key())["kid"].as_str().unwrap_or_default().to_string();
        TokenSigner { key, kid, path }
    }

    /// Loads the PKCS#8 PEM key at `path`, creating it (mode 0600) if it does not exist.
    pub fn load_or_create(path: &Path) -> anyhow::Result<TokenSigner> {
        // Three tries: a key another process links in between our read and our link is read next round.
        for _ in 0..3 {
            match std::fs::read_to_string(path) {
                Ok(pem) => {
                    let key = SigningKey::from_pkcs8_pem(&pem).map_err(|e| {
                        anyhow::anyhow!(
                            "{} is not a PKCS#8 P-384 private key ({e}); delete it to have a new one made (old tokens stop working)",
                            path.display()
                        )
                    })?;
                    return Ok(TokenSigner::from_key(key, Some(path.to_path_buf())));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if let Some(signer) = TokenSigner::create(path)? {
                        return Ok(signer);
                    }
                }
                Err(e) => return Err(e).with_context(|| format!("reading the token signing key {}", path.display())),
            }
        }
        anyhow::bail!(
            "{} exists but cannot be read (a dangling symbolic link?); remove it so a new key is made",
            path.display()
        )
    }

    /// Writes a new key to `path` unless a file (or link) of that name appeared
    /// meanwhile (`None`: read that one instead).
    fn create(path: &Path) -> anyhow::Result<Option<TokenSigner>> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let key = SigningKey::random(&mut rand_core::OsRng);
        let pem = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| anyhow::anyhow!("encoding the key: {e}"))?;
        let tmp = path.with_extension(format!(
            "tmp{}-{:x}",
            std::process::id(),
            rand_core::RngCore::next_u64(&mut rand_core::OsRng)
        ));
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .with_context(|| format!("creating {}", tmp.display()))?;
            f.write_all(pem.as_bytes()).and_then(|_| f.sync_all())?;
        }
        // A hard link fails if the name exists, so when another process (the
        // daemon and `token issue` starting together) made one meanwhile, exactly
        // one key wins and the loser reads it; a check-then-rename let both win.
        let linked = match std::fs::hard_link(&tmp, path) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            // A filesystem without hard links (vfat): rename, as before.
            Err(_) => std::fs::rename(&tmp, path).map(|_| true),
            Ok(()) => Ok(true),
        };
        let _ = std::fs::remove_file(&tmp);
        if !linked.with_context(|| format!("writing {}", path.display()))? {
            return Ok(None);
        }
        tracing::info!(path = %path.display(), "created the token signing key");
        Ok(Some(TokenSigner::from_key(key, Some(path.to_path_buf()))))
    }

    /// The key file the config names: `http.jwt_key`, else `<monitor.data_dir>/jwt-es384.pem`.
    pub fn configured_path(
        http: &crate::config::HttpConfig,
        monitor: &crate::config::MonitorConfig,
    ) -> Option<PathBuf> {
        if !http.jwt_key.as_os_str().is_empty() {
            Some(http.jwt_key.clone())
        } else if !monitor.data_dir.as_os_str().is_empty() {
            Some(monitor.data_dir.join(KEY_FILE))
        } else {
            None
        }
    }

    /// The configured key, or an ephemeral one (with a warning) when the config names none.
    pub fn from_config(
        http: &crate::config::HttpConfig,
        monitor: &crate::config::MonitorConfig,
    ) -> anyhow::Result<TokenSigner> {
        match TokenSigner::configured_path(http, monitor) {
            Some(p) => TokenSigner::load_or_create(&p),
            None => Ok(TokenSigner::ephemeral()),
        }
    }

    /// The JWKS document with this key.
    pub fn jwks(&self) -> Value {
        json!({"keys": [jwk(self.key.verifying_key())]})
    }

    /// The key of the checked-token store's hashes ([`TokenVerifier::with_store`]), derived
    /// from this signing key: a line nobody holding the key wrote matches no token, and a
    /// new signing key voids every line.
    pub fn store_key(&self) -> [u8; 32] {
        let (prk, _) = hkdf::Hkdf::<sha2::Sha256>::extract(Some(b"gatewarden checked-tokens v1"), &self.key.to_bytes());
        prk.into()
    }

    /// A token for `sub` with `role`, valid `ttl_s` seconds from `now`.
    pub fn issue(&self, sub: &str, role: AccessRole, ttl_s: u64, now: u64) -> String {
        self.sign(&Claims {
            iss: ISSUER.into(),
            sub: sub.into(),
            role,
            iat: Some(now),
            nbf: None,
            exp: now.saturating_add(ttl_s),
        })
    }

    /// A viewer token for a command run on the monitor's node (`gatewarden
    /// alerts pcap`), good for 4 to 5 minutes: `iat` is rounded down to the
    /// minute, so (signing being deterministic, RFC 6979) the calls of one
    /// minute send one token and cost the monitor one signature check, not one
    /// of the client's few ([`CHECK_BURST`]) each.
    pub fn issue_local(&self, sub: &str, now: u64) -> String {
        self.issue(sub, AccessRole::Viewer, 300, now - now % 60)
    }

    /// A token with exactly these claims (what [`TokenSigner::issue`] builds on;
    /// tests use it to sign tokens a careless or hostile issuer would make).
    pub fn sign(&self, claims: &Claims) -> String {
        let header = json!({"alg": "ES384", "typ": "JWT", "kid": self.kid});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(serde_json::to_string(claims).expect("claims serialise").as_bytes())
        );
        let sig: Signature = self.key.sign(input.as_bytes());
        format!("{input}.{}", b64(&sig.to_bytes()))
    }
}

/// Checks tokens against the keys of a JWKS.
#[derive(Debug, Clone)]
pub struct TokenVerifier {
    keys: Vec<(String, VerifyingKey)>,
    /// Tokens whose signature already checked out, by their full text (so a
    /// changed byte is a miss). A P-384 verification costs ~2 ms in pure Rust,
    /// which was most of an `/api/status` request; the time claims are checked
    /// on every use, so an expired token is remembered too (and refused
    /// without a new check). Only authentic tokens get in, at most [`MAX_VERIFIED`].
    verified: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Claims>>>,
    /// Longest lifetime accepted (`http.max_token_ttl_s`).
    max_ttl_s: u64,
    /// Signature checks made (each is the ~1–3 ms an unknown token costs).
    checks: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Authentic tokens remembered across restarts: SHA-256 of the token → its `exp`.
    checked: std::sync::Arc<std::sync::Mutex<HashMap<[u8; 32], u64>>>,
    /// Where `checked` is kept (`<monitor.data_dir>/checked-tokens`), and the key of its
    /// hashes ([`TokenSigner::store_key`]); none: memory only.
    store: Option<std::sync::Arc<(PathBuf, [u8; 32])>>,
    /// Held while the store is rewritten: one writer at a time, each writing a snapshot
    /// taken after it got the turn (racing rewrites lost lines).
    writing: std::sync::Arc<std::sync::Mutex<()>>,
}

/// Most verified tokens remembered; past it the memory starts over.
pub const MAX_VERIFIED: usize = 1024;

/// One line of the checked-token store: 64 hex digits of SHA-256, a space, the expiry.
fn parse_checked_line(line: &str) -> Option<([u8; 32], u64)> {
    let (hex, exp) = line.split_once(' ')?;
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut hash = [0u8; 32];
    for (i, b) in hash.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some((hash, exp.trim().parse().ok()?))
}

/// Keeps the store at [`MAX_VERIFIED`] tokens, the soonest to expire going first.
fn trim_checked(checked: &mut HashMap<[u8; 32], u64>) {
    if checked.len() <= MAX_VERIFIED {
        return;
    }
    let mut exps: Vec<u64> = checked.values().copied().collect();
    let k = checked.len() - MAX_VERIFIED;
    let (_, &mut cutoff, _) = exps.select_nth_unstable(k - 1);
    checked.retain(|_, exp| *exp > cutoff);
}

impl TokenVerifier {
    /// The P-384 signing keys of a JWKS document; other keys are ignored.
    pub fn from_jwks(jwks: &Value) -> anyhow::Result<TokenVerifier> {
        let mut keys = Vec::new();
        for k in jwks.get("keys").and_then(Value::as_array).context("a JWKS needs a `keys` array")? {
            if k.get("kty").and_then(Value::as_str) != Some("EC")
                || k.get("crv").and_then(Value::as_str) != Some("P-384")
            {
                continue;
            }
            let coord = |n: &str| -> anyhow::Result<Vec<u8>> {
                let s = k.get(n).and_then(Value::as_str).with_context(|| format!("JWK without `{n}`"))?;
                Base64UrlUnpadded::decode_vec(s).map_err(|_| anyhow::anyhow!("JWK `{n}` is not base64url"))
            };
            let (x, y) = (coord("x")?, coord("y")?);
            anyhow::ensure!(x.len() == 48 && y.len() == 48, "P-384 JWK coordinates must be 48 bytes");
            let mut sec1 = vec![4u8];
            sec1.extend_from_slice(&x);
            sec1.extend_from_slice(&y);
            let key =
                VerifyingKey::from_sec1_bytes(&sec1).map_err(|_| anyhow::anyhow!("JWK is not a point on P-384"))?;
            let kid = k.get("kid").and_then(Value::as_str).unwrap_or_default().to_string();
            keys.push((kid, key));
        }
        anyhow::ensure!(!keys.is_empty(), "the JWKS has no P-384 key");
        Ok(TokenVerifier {
            keys,
            verified: Default::default(),
            max_ttl_s: DEFAULT_MAX_TOKEN_TTL_S,
            checks: Default::default(),
            checked: Default::default(),
            store: None,
            writing: Default::default(),
        })
    }

    /// Remembers authentic tokens in `path` across restarts (as of `now`, Unix
    /// seconds, what has expired is not loaded). After a restart an operator's
    /// token would otherwise need a signature check again, drawn from its
    /// client's small allowance, which a device of the same /64 sending forged
    /// tokens keeps empty. The file holds an HMAC-SHA-256 of each token under
    /// `key` ([`TokenSigner::store_key`], derived from the signing key) and its
    /// expiry, never a token: a line written without the key (a restored backup,
    /// another service sharing the directory) matches no token, and a new signing
    /// key voids them all. A remembered token is still parsed and its time claims
    /// checked on every use. A damaged file is read as far as it goes (logged), a
    /// missing one is empty.
    pub fn with_store(mut self, path: &Path, now: u64, key: [u8; 32]) -> TokenVerifier {
        let mut checked = HashMap::new();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let mut bad = 0usize;
                for line in text.lines() {
                    match parse_checked_line(line) {
                        Some((hash, exp)) if exp > now => {
                            checked.insert(hash, exp);
                        }
                        Some(_) => {}
                        None => bad += 1,
                    }
                }
                if bad > 0 {
                    tracing::warn!(
                        "{}: {bad} damaged line(s) skipped; the tokens they named are checked again on first use",
                        path.display()
                    );
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("{}: {e}; checked tokens are checked again on first use", path.display()),
        }
        trim_checked(&mut checked);
        self.checked = std::sync::Arc::new(std::sync::Mutex::new(checked));
        self.store = Some(std::sync::Arc::new((path.to_path_buf(), key)));
        self
    }

    /// The store's keyed hash of `token`.
    fn store_hash(key: &[u8; 32], token: &str) -> [u8; 32] {
        let (prk, _) = hkdf::Hkdf::<sha2::Sha256>::extract(Some(key), token.as_bytes());
        prk.into()
    }

    /// The claims of `token` if the store remembers it as authentic (parsed, not checked).
    fn remembered_claims(&self, token: &str) -> Option<Claims> {
        let store = self.store.as_ref()?;
        let hash = Self::store_hash(&store.1, token);
        if !self.checked.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&hash) {
            return None;
        }
        self.parse(token).ok().map(|(_, _, _, claims)| claims)
    }

    /// Adds an authentic, unexpired token to the store and rewrites it (new tokens are
    /// rare: one per operator login or `token issue`), outside the lock requests take.
    fn remember(&self, token: &str, claims: &Claims) {
        let Some(store) = &self.store else { return };
        let hash = Self::store_hash(&store.1, token);
        {
            let mut checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
            if checked.insert(hash, claims.exp).is_some() {
                return;
            }
            trim_checked(&mut checked);
        }
        // One rewrite at a time, each of a snapshot taken once it has the turn, so the
        // last one written holds every token remembered before it.
        let _turn = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        let text = {
            let checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
            let mut text = String::with_capacity(checked.len() * 80);
            for (h, exp) in checked.iter() {
                text += &format!("{} {exp}\n", h.iter().map(|b| format!("{b:02x}")).collect::<String>());
            }
            text
        };
        if let Err(e) = gatewarden_core::atomic_file::write_atomic(&store.0, text.as_bytes()) {
            tracing::warn!("{}: {e:#}; checked tokens are remembered in memory only", store.0.display());
        }
    }

    /// Refuses tokens that live longer than `max_ttl_s` (`http.max_token_ttl_s`;
    /// default [`DEFAULT_MAX_TOKEN_TTL_S`]).
    pub fn with_max_ttl_s(mut self, max_ttl_s: u64) -> TokenVerifier {
        self.max_ttl_s = max_ttl_s;
        self
    }

    /// Signature checks made so far (what forged tokens cost).
    pub fn signature_checks(&self) -> u64 {
        self.checks.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Verifies signature, algorithm, issuer and time claims at `now`; returns the claims.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, AuthError> {
        let known = self.verified.lock().unwrap_or_else(|e| e.into_inner()).get(token).cloned();
        let claims = match known {
            Some(claims) => claims,
            None => {
                let claims = match self.remembered_claims(token) {
                    Some(claims) => claims,
                    None => {
                        let claims = self.check_signature(token)?;
                        if claims.check_times(now, self.max_ttl_s).is_ok() {
                            self.remember(token, &claims);
                        }
                        claims
                    }
                };
                let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
                if verified.len() >= MAX_VERIFIED {
                    verified.clear();
                }
                verified.insert(token.to_string(), claims.clone());
                claims
            }
        };
        // Cheap, and the time claims are the part that changes with `now`.
        claims.check_times(now, self.max_ttl_s)?;
        Ok(claims)
    }

    /// Which allowance a request with `token` draws from: a token remembered
    /// as authentic its own, a well-formed one not seen before a signature
    /// check, anything else (none, malformed, another key's) the client's.
    /// Cheap: no signature is checked.
    pub fn allowance(&self, token: Option<&str>) -> Allowance {
        let Some(token) = token else { return Allowance::Client };
        if self.verified.lock().unwrap_or_else(|e| e.into_inner()).contains_key(token)
            || self.remembered_claims(token).is_some()
        {
            Allowance::Token
        } else if self.parse(token).is_ok() {
            Allowance::Check
        } else {
            Allowance::Client
        }
    }

    /// Everything short of the signature: size, form, algorithm, a key this
    /// monitor has, claims and issuer. What fails here costs no signature check.
    fn parse<'t>(&self, token: &'t str) -> Result<(&'t str, Signature, Option<String>, Claims), AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Invalid("longer than 4096 bytes".into()));
        }
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(AuthError::Invalid("a JWT has three dot-separated parts".into()));
        };
        let header: Value = serde_json::from_slice(&unb64(h, "the header")?)
            .map_err(|_| AuthError::Invalid("the header is not JSON".into()))?;
        // Only ES384: no `none`, no HMAC with the public key as secret.
        if header.get("alg").and_then(Value::as_str) != Some("ES384") {
            return Err(AuthError::Invalid("alg must be ES384".into()));
        }
        let kid = header.get("kid").and_then(Value::as_str).map(str::to_string);
        if kid.as_ref().is_some_and(|kid| !self.keys.iter().any(|(k, _)| k == kid)) {
            return Err(AuthError::Invalid(
                "it was signed by a key this monitor does not have (its kid is not in /.well-known/jwks.json): \
                 issue a new one with `gatewarden token issue`"
                    .into(),
            ));
        }
        let sig = Signature::from_slice(&unb64(s, "the signature")?)
            .map_err(|_| AuthError::Invalid("the signature is not 96 bytes of r||s".into()))?;
        let claims: Claims =
            serde_json::from_slice(&unb64(c, "the claims")?).map_err(|e| AuthError::Invalid(format!("claims: {e}")))?;
        if claims.iss != ISSUER {
            return Err(AuthError::Invalid(format!("issuer {:?} is not {ISSUER:?}", claims.iss)));
        }
        Ok((&token[..h.len() + 1 + c.len()], sig, kid, claims))
    }

    /// [`TokenVerifier::parse`], then the signature against the JWKS: the
    /// claims of an authentic token (its time claims are the caller's to check).
    fn check_signature(&self, token: &str) -> Result<Claims, AuthError> {
        let (input, sig, kid, claims) = self.parse(token)?;
        self.checks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ok = self
            .keys
            .iter()
            .filter(|(k, _)| kid.as_ref().is_none_or(|kid| kid == k))
            .any(|(_, key)| key.verify(input.as_bytes(), &sig).is_ok());
        if !ok {
            return Err(AuthError::Invalid("signature does not match any key in the JWKS".into()));
        }
        Ok(claims)
    }

    /// Checks that `token` (if any) allows `needed`. `Ok(None)` means anonymous access was allowed.
    pub fn authorize(
        &self,
        token: Option<&str>,
        needed: AccessRole,
        anonymous_ok: bool,
        now: u64,
    ) -> Result<Option<Claims>, AuthError> {
        let Some(token) = token else {
            return if anonymous_ok { Ok(None) } else { Err(AuthError::Missing) };
        };
        let claims = self.verify(token, now)?;
        if claims.role < needed {
            return Err(AuthError::Forbidden { needed: needed.as_str(), had: claims.role.as_str() });
        }
        Ok(Some(claims))
    }
}

/// Most clients (and, apart, checked tokens) whose buckets are kept; past it
/// idle ones (full buckets) are forgotten, and while none is idle new ones
/// share one bucket.
pub const MAX_CLIENTS: usize = 4096;

/// The client a request, a connection or a live stream is counted against:
/// an IPv4 address (also when written IPv4-mapped, `::ffff:192.0.2.1`), or
/// an IPv6 address's /64. A device may use any address of its /64 (SLAAC
/// privacy addresses), so keying by the whole address gave it 2^64 allowances.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        v4 => v4,
    }
}

/// Signature checks one client ([`client_key`]) may have at once. A token
/// the monitor has not seen costs one (~1.1 ms of a core on an x86 server,
/// 2–3 ms on the board): forged tokens draw from this small allowance, not
/// from the client's requests, so they cannot keep a core busy.
pub const CHECK_BURST: u32 = 10;
/// Signature checks a second one client may have once [`CHECK_BURST`] is spent.
pub const CHECKS_PER_S: u32 = 1;

/// Which allowance a request draws from ([`TokenVerifier::allowance`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowance {
    /// The client's ([`client_key`]): no token, or one refused without a signature check.
    Client,
    /// The token's own, wherever it comes from: a token whose signature this
    /// monitor has checked, so a device sharing the admin's /64 cannot drain it,
    /// and an address gives no allowance (rotating through a /64 buys nothing).
    Token,
    /// The client's signature checks ([`CHECK_BURST`], [`CHECKS_PER_S`]): a
    /// well-formed token not seen before. Only tokens that look right spend it.
    Check,
}

/// Token buckets by key, at most [`MAX_CLIENTS`] of them.
#[derive(Debug)]
struct Buckets<K> {
    rate: f64,
    burst: f64,
    buckets: HashMap<K, TokenBucket>,
    /// Shared by new keys while [`MAX_CLIENTS`] are kept and none is idle.
    overflow: TokenBucket,
}

impl<K: std::hash::Hash + Eq> Buckets<K> {
    fn new(rate: u32, burst: u32) -> Buckets<K> {
        let burst = burst.max(1) as f64;
        Buckets { rate: rate.max(1) as f64, burst, buckets: HashMap::new(), overflow: TokenBucket::full(burst) }
    }

    fn take(&mut self, key: K, now_ns: u64) -> Result<(), f64> {
        let (rate, burst) = (self.rate, self.burst);
        if self.buckets.len() >= MAX_CLIENTS && !self.buckets.contains_key(&key) {
            // Only a full bucket may be forgotten: it is what a new one would be.
            self.buckets.retain(|_, b| !b.full_at(now_ns, rate, burst));
            if self.buckets.len() >= MAX_CLIENTS {
                // Every client kept is being limited; forgetting any would refill
                // it (clearing them all let an attacker with MAX_CLIENTS
                // addresses reset its own bucket at will).
                return self.overflow.take(now_ns, rate, burst);
            }
        }
        self.buckets.entry(key).or_insert_with(|| TokenBucket::full(burst)).take(now_ns, rate, burst)
    }
}

/// The API's rate limits: a token bucket per client ([`client_key`]), per
/// checked token, and for signature checks per client ([`Allowance`]).
#[derive(Debug)]
pub struct RateLimiter {
    origin: Instant,
    clients: Buckets<IpAddr>,
    /// By the SHA-256 of the signed part, so the two encodings of one ECDSA
    /// signature (`s` and `n - s`) are one token.
    tokens: Buckets<[u8; 32]>,
    checks: Buckets<IpAddr>,
}

impl RateLimiter {
    /// `rate` requests per second sustained, `burst` at once, per client and
    /// per checked token; signature checks per [`CHECKS_PER_S`] and [`CHECK_BURST`].
    pub fn new(rate: u32, burst: u32) -> RateLimiter {
        RateLimiter {
            origin: Instant::now(),
            clients: Buckets::new(rate, burst),
            tokens: Buckets::new(rate, burst),
            checks: Buckets::new(CHECKS_PER_S, CHECK_BURST),
        }
    }

    /// Takes one token for `ip`'s client; `Err(seconds)` until the next token when the bucket is empty.
    pub fn check(&mut self, ip: IpAddr, now: Instant) -> Result<(), f64> {
        self.take(Allowance::Client, ip, "", now)
    }

    /// Takes one from `allowance` ([`TokenVerifier::allowance`] of `token`)
    /// for a request from `ip`; `Err(seconds)` until the next when it is spent.
    pub fn take(&mut self, allowance: Allowance, ip: IpAddr, token: &str, now: Instant) -> Result<(), f64> {
        let now_ns = now.saturating_duration_since(self.origin).as_nanos() as u64;
        match allowance {
            Allowance::Client => self.clients.take(client_key(ip), now_ns),
            Allowance::Check => self.checks.take(client_key(ip), now_ns),
            Allowance::Token => {
                let signed = token.rsplit_once('.').map_or(token, |(signed, _)| signed);
                self.tokens.take(sha2::Sha256::digest(signed.as_bytes()).into(), now_ns)
            }
        }
    }

    /// The 429's message: what is limited (the address, or the IPv6 /64 its
    /// devices share), at what rate, and what to do.
    pub fn refusal(&self, allowance: Allowance, ip: IpAddr, wait: f64) -> String {
        let who = match client_key(ip) {
            IpAddr::V6(net) => format!("the IPv6 network {net}/64 (its devices share one allowance)"),
            v4 => v4.to_string(),
        };
        let (rate, burst) = (self.clients.rate, self.clients.burst);
        match allowance {
            Allowance::Client => format!(
                "too many requests from {who}: {rate} a second and {burst} at once per client \
                 (http.rate_limit_per_s, http.rate_limit_burst); retry in {wait:.2} s. Requests with a token this \
                 monitor has checked count against the token, not the address"
            ),
            Allowance::Token => format!(
                "too many requests with this token: {rate} a second and {burst} at once per token, from any address \
                 (http.rate_limit_per_s, http.rate_limit_burst); retry in {wait:.2} s, or give each dashboard or \
                 script its own token (`gatewarden token issue`)"
            ),
            Allowance::Check => format!(
                "too many tokens this monitor has not seen from {who}: each costs a signature check, and a client \
                 gets {CHECK_BURST} at once and {CHECKS_PER_S} a second; retry in {wait:.2} s. Tokens that do not \
                 verify spend them too: if this persists, a device sharing this allowance is sending such tokens \
                 (gatewarden_http_refused_total{{reason=\"token_checks\"}} counts the refusals) — find it, and \
                 meanwhile reach the API over IPv4 or on the monitor's own node. A token once checked has its own \
                 allowance, across restarts when the monitor has a data_dir"
            ),
        }
    }
}

/// A token lifetime in seconds, in the syntax of `gatewarden block --ttl`
/// (`30s`, `10m`, `1h30m`, `7d`, plain seconds), from 1 s to [`MAX_TTL_S`].
/// The configured cap (`http.max_token_ttl_s`) is checked where the config is known.
pub fn parse_ttl(s: &str) -> Result<u64, String> {
    Ok(gatewarden_core::duration::parse_within(s, MAX_TTL_S, "a token's lifetime")?.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dangling_link_in_place_of_the_key_is_an_error_not_a_loop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwt.pem");
        std::os::unix::fs::symlink(dir.path().join("gone.pem"), &path).unwrap();
        let Err(e) = TokenSigner::load_or_create(&path) else { panic!("a dangling link was taken for a key") };
        assert!(format!("{e:#}").contains("cannot be read"), "{e:#}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary files left");
    }

    #[test]
    fn processes_creating_the_key_at_once_all_end_up_with_the_same_one() {
        // The monitor and `gatewarden token issue` may both find no key and make one; before
        // the exclusive link, both renames succeeded and one side's tokens never verified.
        for round in 0..10 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("keys").join("jwt.pem");
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
            let kids: Vec<String> = (0..8)
                .map(|_| {
                    let (p, b) = (path.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        b.wait();
                        TokenSigner::load_or_create(&p).unwrap().kid
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect();
            let on_disk = TokenSigner::load_or_create(&path).unwrap().kid;
            assert!(kids.iter().all(|k| *k == on_disk), "round {round}: {kids:?} vs {on_disk}");
            let left: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
            assert_eq!(left.len(), 1, "temporary files left behind");
        }
    }

    #[test]
    fn issue_verify_roles_expiry_and_forgeries() {
        let signer = TokenSigner::ephemeral();
        let v = TokenVerifier::from_jwks(&signer.jwks()).unwrap();
        let now = 1_800_000_000;
        let admin = signer.issue("alice", AccessRole::Admin, 3600, now);
        let viewer = signer.issue("bob", AccessRole::Viewer, 60, now);
        assert_eq!(v.verify(&admin, now + 10).unwrap().sub, "alice");
        assert!(v.authorize(Some(&admin), AccessRole::Admin, false, now).is_ok());
        assert!(v.authorize(Some(&viewer), AccessRole::Viewer, false, now).is_ok());
        let e = v.authorize(Some(&viewer), AccessRole::Admin, false, now).unwrap_err();
        assert_eq!(e.status(), 403);
        assert_eq!(v.authorize(None, AccessRole::Viewer, false, now).unwrap_err().status(), 401);
        assert_eq!(v.authorize(None, AccessRole::Viewer, true, now).unwrap(), None);
        assert_eq!(v.verify(&viewer, now + 61).unwrap_err(), AuthError::Expired(1));
        // A different key's token, a changed claim, alg none, garbage.
        let other = TokenSigner::ephemeral().issue("eve", AccessRole::Admin, 3600, now);
        assert!(matches!(v.verify(&other, now), Err(AuthError::Invalid(_))));
        let parts: Vec<&str> = viewer.split('.').collect();
        let forged_claims = b64(serde_json::to_string(&Claims {
            iss: ISSUER.into(),
            sub: "bob".into(),
            role: AccessRole::Admin,
            iat: Some(now),
            nbf: None,
            exp: now + 60,
        })
        .unwrap()
        .as_bytes());
        assert!(v.verify(&format!("{}.{forged_claims}.{}", parts[0], parts[2]), now).is_err());
        let none = format!("{}.{}.", b64(br#"{"alg":"none"}"#), parts[1]);
        assert!(v.verify(&none, now).is_err());
        for junk in ["", "a.b", "a.b.c.d", "!!.??.##", &"x".repeat(5000)] {
            assert_eq!(v.verify(junk, now).unwrap_err().status(), 401);
        }
    }

    /// After a monitor restart every token needed a signature check again, drawn from its
    /// client's small allowance: a device of the admin's /64 sending forged tokens held the
    /// admin's real one off (429) until it stopped. Checked tokens are now remembered in
    /// `<data_dir>/checked-tokens` (SHA-256 of the token and its expiry, never the token).
    #[test]
    fn a_checked_token_is_remembered_across_a_restart_and_only_while_its_key_and_lifetime_last() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("checked-tokens");
        let signer = TokenSigner::ephemeral();
        let now = 1_800_000_000;
        let admin = signer.issue("admin", AccessRole::Admin, 3600, now);
        let short = signer.issue("kiosk", AccessRole::Viewer, 60, now);
        let forged = {
            let mut t = signer.issue("eve", AccessRole::Admin, 3600, now);
            let last = t.pop().unwrap();
            t.push(if last == 'A' { 'B' } else { 'A' });
            t
        };
        let first = TokenVerifier::from_jwks(&signer.jwks()).unwrap().with_store(&store, now, signer.store_key());
        assert!(first.verify(&admin, now).is_ok());
        assert!(first.verify(&short, now).is_ok());
        assert!(first.verify(&forged, now).is_err());
        assert_eq!(first.signature_checks(), 3);
        let text = std::fs::read_to_string(&store).unwrap();
        assert!(!text.contains(&admin) && !text.contains("admin"), "the store holds no token: {text}");
        // The restart: the admin's token draws from its own allowance and needs no check.
        let again = TokenVerifier::from_jwks(&signer.jwks()).unwrap().with_store(&store, now + 120, signer.store_key());
        assert_eq!(again.allowance(Some(&admin)), Allowance::Token);
        assert_eq!(again.verify(&admin, now + 120).unwrap().sub, "admin");
        assert_eq!(again.allowance(Some(&forged)), Allowance::Check, "a forged token was never remembered");
        assert_eq!(again.allowance(Some(&short)), Allowance::Check, "an expired token is not loaded");
        assert_eq!(again.signature_checks(), 0);
        // A new signing key: what the old one signed is not taken on the store's word.
        let other = TokenSigner::ephemeral();
        let rotated = TokenVerifier::from_jwks(&other.jwks()).unwrap().with_store(&store, now + 120, other.store_key());
        assert!(rotated.verify(&admin, now + 120).is_err());
        assert_ne!(rotated.allowance(Some(&admin)), Allowance::Token);
        // A line written without the key (a restored backup, another service sharing the
        // directory): a token signed by another key with this key's id, its plain SHA-256 in
        // the store, is still checked, and refused (review: it was admin without a check).
        let mallory = {
            let other = TokenSigner::ephemeral().issue("mallory", AccessRole::Admin, 3600, now);
            let mut parts: Vec<&str> = other.split('.').collect();
            let own: Vec<&str> = admin.split('.').collect();
            parts[0] = own[0];
            parts.join(".")
        };
        let plain: String = sha2::Sha256::digest(mallory.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(&store, format!("{text}{plain} {}\n", now + 3600)).unwrap();
        let planted =
            TokenVerifier::from_jwks(&signer.jwks()).unwrap().with_store(&store, now + 120, signer.store_key());
        assert_eq!(planted.allowance(Some(&mallory)), Allowance::Check);
        assert!(planted.verify(&mallory, now + 120).is_err());
        assert_eq!(planted.signature_checks(), 1);
        // A damaged store is read as far as it goes and never stops the monitor.
        std::fs::write(&store, format!("not a line\n{text}zz 12\n")).unwrap();
        let damaged =
            TokenVerifier::from_jwks(&signer.jwks()).unwrap().with_store(&store, now + 120, signer.store_key());
        assert_eq!(damaged.allowance(Some(&admin)), Allowance::Token);
    }

    /// Sixteen authentic tokens checked at once on sixteen threads are all in the store for
    /// the next restart (third review of session 28: rewrites racing on one file lost lines,
    /// "15 of 16").
    #[test]
    fn tokens_checked_at_once_are_all_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("checked-tokens");
        let signer = TokenSigner::ephemeral();
        let now = 1_800_000_000;
        for round in 0..5u64 {
            let _ = std::fs::remove_file(&store);
            let v = TokenVerifier::from_jwks(&signer.jwks()).unwrap().with_store(&store, now, signer.store_key());
            let tokens: Vec<String> =
                (0..16).map(|i| signer.issue(&format!("u{round}-{i}"), AccessRole::Viewer, 3600, now)).collect();
            let barrier = std::sync::Barrier::new(16);
            std::thread::scope(|sc| {
                for t in &tokens {
                    let (v, b) = (&v, &barrier);
                    sc.spawn(move || {
                        b.wait();
                        v.verify(t, now).unwrap();
                    });
                }
            });
            let lines = std::fs::read_to_string(&store).unwrap().lines().count();
            assert_eq!(lines, 16, "round {round}");
        }
    }

    #[test]
    fn remembered_tokens_still_expire_changed_ones_are_checked_and_memory_is_bounded() {
        let signer = TokenSigner::ephemeral();
        let v = TokenVerifier::from_jwks(&signer.jwks()).unwrap();
        let now = 1_800_000_000;
        let t = signer.issue("alice", AccessRole::Viewer, 60, now);
        assert!(v.verify(&t, now).is_ok());
        assert!(v.verify(&t, now + 1).is_ok(), "remembered");
        assert_eq!(v.verify(&t, now + 60).unwrap_err(), AuthError::Expired(0), "still expires");
        // The same token with its last signature character changed is not the remembered one.
        let mut bad = t.clone();
        let last = bad.pop().unwrap();
        bad.push(if last == 'A' { 'B' } else { 'A' });
        assert!(matches!(v.verify(&bad, now), Err(AuthError::Invalid(_))));
        // Full memory: it starts over rather than grow.
        let claims = v.verify(&t, now).unwrap();
        v.verified.lock().unwrap().extend((0..MAX_VERIFIED).map(|i| (format!("t{i}"), claims.clone())));
        let fresh = signer.issue("bob", AccessRole::Viewer, 60, now);
        assert!(v.verify(&fresh, now).is_ok());
        assert_eq!(v.verified.lock().unwrap().len(), 1);
    }

    #[test]
    fn key_file_is_created_once_and_reused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k").join(KEY_FILE);
        let a = TokenSigner::load_or_create(&p).unwrap();
        let b = TokenSigner::load_or_create(&p).unwrap();
        assert_eq!(a.jwks(), b.jwks());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        let t = a.issue("x", AccessRole::Viewer, 10, 100);
        assert!(TokenVerifier::from_jwks(&b.jwks()).unwrap().verify(&t, 105).is_ok());
        std::fs::write(&p, "junk").unwrap();
        assert!(format!("{:#}", TokenSigner::load_or_create(&p).unwrap_err()).contains("delete it"));
    }

    #[test]
    fn jwk_thumbprint_matches_rfc7638_shape() {
        let s = TokenSigner::ephemeral();
        let k = &s.jwks()["keys"][0];
        assert_eq!(k["alg"], "ES384");
        assert_eq!(k["x"].as_str().unwrap().len(), 64);
        assert_eq!(k["kid"].as_str().unwrap().len(), 43);
    }

    #[test]
    fn rate_limit_refills() {
        let mut r = RateLimiter::new(10, 3);
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let t = Instant::now();
        assert!(r.check(ip, t).is_ok() && r.check(ip, t).is_ok() && r.check(ip, t).is_ok());
        let wait = r.check(ip, t).unwrap_err();
        assert!((wait - 0.1).abs() < 1e-9);
        assert!(r.check(ip, t + std::time::Duration::from_millis(110)).is_ok());
        assert!(r.check("192.0.2.1".parse().unwrap(), t).is_ok(), "per client");
    }

    /// Red-team finding: a LAN device holds its whole IPv6 /64 (SLAAC privacy
    /// addresses) and got a fresh bucket per address by rotating through it.
    #[test]
    fn the_addresses_of_one_ipv6_64_share_one_bucket() {
        let mut r = RateLimiter::new(10, 3);
        let t = Instant::now();
        let in_64 = |i: u32| -> IpAddr { format!("2001:db8:1:2:{:x}::{:x}", i >> 16, i & 0xffff).parse().unwrap() };
        let allowed = (0..1000).filter(|&i| r.check(in_64(i), t).is_ok()).count();
        assert_eq!(allowed, 3, "1 000 addresses of 2001:db8:1:2::/64 at once, burst 3");
        assert!(r.check("2001:db8:1:3::1".parse().unwrap(), t).is_ok(), "the next /64 is another client");
        for _ in 0..3 {
            assert!(r.check("192.0.2.1".parse().unwrap(), t).is_ok());
        }
        assert!(r.check("::ffff:192.0.2.1".parse().unwrap(), t).is_err(), "IPv4-mapped IPv6 is the IPv4 client");
        assert!(r.check("192.0.2.2".parse().unwrap(), t).is_ok(), "IPv4 clients are keyed by the address");
    }

    /// Red-team finding: with [`MAX_CLIENTS`] buckets kept and none full, a new
    /// client cleared them all, so an attacker with that many addresses (or
    /// /64s) reset its own bucket, and everyone's, whenever it liked.
    #[test]
    fn a_table_full_of_exhausted_buckets_resets_nobody() {
        let mut r = RateLimiter::new(1, 2);
        let t = Instant::now();
        let client = |i: usize| -> IpAddr { format!("2001:db8:{:x}:{:x}::1", i >> 16, i & 0xffff).parse().unwrap() };
        let attacker = client(0);
        assert!(r.check(attacker, t).is_ok() && r.check(attacker, t).is_ok() && r.check(attacker, t).is_err());
        let admin: IpAddr = "192.0.2.10".parse().unwrap();
        assert!(r.check(admin, t).is_ok(), "the admin, one token left");
        for i in 1..MAX_CLIENTS - 1 {
            while r.check(client(i), t).is_ok() {}
        }
        // The table is full; a new client (or the attacker's next /64) comes.
        let _ = r.check(client(MAX_CLIENTS), t);
        assert!(r.check(attacker, t).is_err(), "the first attacker is still limited after a new client came");
        assert!(r.check(admin, t).is_ok() && r.check(admin, t).is_err(), "the admin's bucket is kept as it was");
        // Idle clients' buckets fill again and make room: new clients get their own.
        let later = t + std::time::Duration::from_secs(3);
        for i in 0..5 {
            let newcomer = client(MAX_CLIENTS + 1 + i);
            assert!(r.check(newcomer, later).is_ok() && r.check(newcomer, later).is_ok(), "newcomer {i}");
        }
    }

    /// Red-team finding: a forged token cost a signature check on every
    /// request. Which allowance pays is now decided without one, and a token
    /// once found authentic (expired ones too) is never checked again.
    #[test]
    fn the_allowance_is_chosen_without_a_signature_check_and_authentic_tokens_are_checked_once() {
        let signer = TokenSigner::ephemeral();
        let v = TokenVerifier::from_jwks(&signer.jwks()).unwrap();
        let now = real_now();
        let good = signer.issue("alice", AccessRole::Admin, 60, now);
        let foreign = TokenSigner::ephemeral().issue("eve", AccessRole::Admin, 60, now);
        let (signed, sig) = good.rsplit_once('.').unwrap();
        let (h, _) = signed.split_once('.').unwrap();
        let claims = |sub: &str| {
            b64(serde_json::json!({"iss": ISSUER, "sub": sub, "role": "admin", "iat": now, "exp": now + 60})
                .to_string()
                .as_bytes())
        };
        let forged = format!("{h}.{}.{sig}", claims("eve"));
        let other_issuer =
            format!("{h}.{}.{sig}", b64(br#"{"iss":"elsewhere","sub":"eve","role":"admin","exp":99999999999}"#));
        assert_eq!(v.allowance(None), Allowance::Client);
        for cheap in ["", "x", "a.b.c", &foreign, &other_issuer, &"x".repeat(5000)] {
            assert_eq!(v.allowance(Some(cheap)), Allowance::Client, "{cheap:.40}");
            assert!(v.verify(cheap, now).is_err());
        }
        assert_eq!(v.signature_checks(), 0, "refused without a check: malformed, another key's, another issuer's");
        assert_eq!(v.allowance(Some(&forged)), Allowance::Check);
        assert_eq!(v.allowance(Some(&good)), Allowance::Check, "not seen yet");
        assert_eq!(v.signature_checks(), 0, "choosing the allowance checks nothing");
        assert!(v.verify(&forged, now).is_err() && v.verify(&good, now).is_ok());
        assert_eq!(v.signature_checks(), 2);
        assert_eq!(v.allowance(Some(&good)), Allowance::Token);
        assert_eq!(v.allowance(Some(&forged)), Allowance::Check, "a forged token is not remembered");
        assert_eq!(v.verify(&good, now + 60).unwrap_err(), AuthError::Expired(0));
        // An expired token never seen: one check, then refused from memory.
        let old = signer.issue("bob", AccessRole::Viewer, 60, now - 3600);
        for _ in 0..5 {
            assert!(matches!(v.verify(&old, now), Err(AuthError::Expired(_))));
        }
        assert_eq!(v.signature_checks(), 3);
        assert_eq!(v.allowance(Some(&old)), Allowance::Token);
    }

    /// Red-team finding: on an IPv6 listener the admin's requests came out of
    /// the bucket of the LAN's /64, which any device of it could drain.
    #[test]
    fn a_checked_token_has_its_own_bucket_and_new_tokens_share_the_clients_checks() {
        let signer = TokenSigner::ephemeral();
        let now = real_now();
        let admin = signer.issue("op", AccessRole::Admin, 600, now);
        let other = signer.issue("viewer", AccessRole::Viewer, 600, now);
        let mut r = RateLimiter::new(10, 3);
        let t = Instant::now();
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let (noisy, admin_at, elsewhere) = (ip("2001:db8:1:2::bad"), ip("2001:db8:1:2::1"), ip("192.0.2.1"));
        while r.check(noisy, t).is_ok() {}
        assert!(r.check(admin_at, t).is_err(), "the /64's bucket is empty");
        let token = |r: &mut RateLimiter, at: IpAddr, tok: &str| r.take(Allowance::Token, at, tok, t);
        for _ in 0..3 {
            assert!(token(&mut r, admin_at, &admin).is_ok(), "the admin's token has its own bucket");
        }
        assert!(token(&mut r, elsewhere, &admin).is_err(), "a token's bucket is the same from every address");
        assert!(token(&mut r, admin_at, &other).is_ok(), "another token, another bucket");
        // The same signature written as (r, n - s) verifies too: the same bucket.
        let (signed, sig) = admin.rsplit_once('.').unwrap();
        let sig = Signature::from_slice(&unb64(sig, "sig").unwrap()).unwrap();
        let (sr, ss) = sig.split_scalars();
        let twin = Signature::from_scalars(sr.to_bytes(), (-*ss).to_bytes()).unwrap();
        let twin = format!("{signed}.{}", b64(&twin.to_bytes()));
        assert_ne!(twin, admin);
        let v = TokenVerifier::from_jwks(&signer.jwks()).unwrap();
        assert!(v.verify(&twin, now).is_ok(), "ECDSA: both encodings verify");
        assert!(token(&mut r, elsewhere, &twin).is_err(), "the twin shares the token's bucket");
        // Signature checks: CHECK_BURST per client, addresses of one /64 together, apart from its requests.
        let checks = (0..100)
            .filter(|i| r.take(Allowance::Check, ip(&format!("2001:db8:1:2::{:x}", i + 1)), "", t).is_ok())
            .count();
        assert_eq!(checks, CHECK_BURST as usize, "100 addresses of one /64 at once");
        assert!(r.take(Allowance::Check, ip("2001:db8:1:3::1"), "", t).is_ok(), "the next /64");
        let later = t + std::time::Duration::from_millis(1100);
        assert!(r.take(Allowance::Check, noisy, "", later).is_ok(), "{CHECKS_PER_S} a second");
        assert!(r.take(Allowance::Check, noisy, "", later).is_err());
    }

    #[test]
    fn local_commands_of_one_minute_send_one_token() {
        let signer = TokenSigner::ephemeral();
        let v = TokenVerifier::from_jwks(&signer.jwks()).unwrap();
        let minute = real_now() / 60 * 60;
        let t = signer.issue_local("gatewarden-cli", minute);
        assert_eq!(signer.issue_local("gatewarden-cli", minute + 59), t);
        assert_ne!(signer.issue_local("gatewarden-cli", minute + 60), t);
        assert_eq!(v.verify(&t, minute + 59 + 240).unwrap().role, AccessRole::Viewer, "4 minutes left at worst");
    }

    #[test]
    fn ttl_parsing() {
        assert_eq!(parse_ttl("1h"), Ok(3600));
        assert_eq!(parse_ttl("90"), Ok(90));
        assert_eq!(parse_ttl("7d"), Ok(7 * 86_400));
        assert_eq!(parse_ttl("1h30m"), Ok(5400), "the syntax of `gatewarden block --ttl`");
        assert!(parse_ttl("0s").is_err() && parse_ttl("soon").is_err() && parse_ttl("400d").is_err());
    }

    /// A real signer's token, verified at the real clock (the time checks run against `now`).
    fn real_now() -> u64 {
        gatewarden_core::clock::unix_now()
    }

    #[test]
    fn a_token_issued_in_2100_is_refused_saying_to_check_the_clock() {
        let signer = TokenSigner::ephemeral();
        let v = TokenVerifier::from_jwks(&signer.jwks()).unwrap();
        let year_2100 = 4_102_444_800;
        let t = signer.issue("time-traveller", AccessRole::Admin, 3600, year_2100);
        let e = v.verify(&t, real_now()).unwrap_err();
        assert_eq!(e.status(), 401);
        let msg = e.to_string();
        assert!(msg.contains("issued") && msg.contains("in the future") && msg.contains("clock"), "{msg}");
        // Within the skew it is fine (the issuing machine's clock ran a little ahead).
        let now = real_now();
        let t = signer.issue("ahead", AccessRole::Viewer, 3600, now + CLOCK_SKEW_S);
        assert!(v.verify(&t, now).is_ok());
        let t = signer.issue("too-far-ahead", AccessRole::Viewer, 3600, now + CLOCK_SKEW_S + 1);
        assert!(v.verify(&t, now).is_err());
    }

    #[test]
    fn a_token_before_its_nbf_is_refused_and_accepted_once_it_is_reached() {
        let signer = TokenSigner::ephemeral();
        let v = TokenVerifier::from_jwks(&signer.jwks()).unwrap();
        let now = real_now();
        let claims = |nbf: u64| Claims {
            iss: ISSUER.into(),
            sub: "later".into(),
            role: AccessRole::Viewer,
            iat: Some(now),
            nbf: Some(nbf),
            exp: now + 7200,
        };
        let t = signer.sign(&claims(now + 3600));
        let e = v.verify(&t, now).unwrap_err();
        assert_eq!(e.status(), 401);
        assert!(e.to_string().contains("not valid for another 1h"), "{e}");
        // Remembered as authentic, not as valid: still refused, then accepted when its time comes.
        assert!(v.verify(&t, now + 10).is_err());
        assert_eq!(v.verify(&t, now + 3600).unwrap().sub, "later");
        assert!(v.verify(&signer.sign(&claims(now + CLOCK_SKEW_S)), now).is_ok(), "within the skew");
    }

    #[test]
    fn a_token_living_longer_than_the_cap_is_refused_with_or_without_iat() {
        let signer = TokenSigner::ephemeral();
        let v = TokenVerifier::from_jwks(&signer.jwks()).unwrap();
        let now = real_now();
        let t = signer.issue("wallboard", AccessRole::Viewer, DEFAULT_MAX_TOKEN_TTL_S + 1, now);
        let e = v.verify(&t, now).unwrap_err();
        assert_eq!(e.status(), 401);
        assert!(e.to_string().contains("lives 90d1s but this monitor accepts at most 90d"), "{e}");
        assert!(e.to_string().contains("http.max_token_ttl_s"), "{e}");
        assert!(v.verify(&signer.issue("ok", AccessRole::Viewer, DEFAULT_MAX_TOKEN_TTL_S, now), now).is_ok());
        // A century-long token issued long ago is still a century-long token.
        let old = signer.issue("old", AccessRole::Admin, 100 * 365 * 86_400, now - 86_400);
        assert!(v.verify(&old, now).is_err());
        // No iat: the lifetime counts from now.
        let no_iat = |exp: u64| {
            signer.sign(&Claims {
                iss: ISSUER.into(),
                sub: "no-iat".into(),
                role: AccessRole::Viewer,
                iat: None,
                nbf: None,
                exp,
            })
        };
        assert!(v
            .verify(&no_iat(now + DEFAULT_MAX_TOKEN_TTL_S + 3600), now)
            .unwrap_err()
            .to_string()
            .contains("lives"));
        assert!(v.verify(&no_iat(now + 3600), now).is_ok());
        // The configured cap.
        let strict = TokenVerifier::from_jwks(&signer.jwks()).unwrap().with_max_ttl_s(3600);
        assert!(strict.verify(&signer.issue("a", AccessRole::Viewer, 3600, now), now).is_ok());
        let e = strict.verify(&signer.issue("b", AccessRole::Viewer, 3601, now), now).unwrap_err();
        assert!(e.to_string().contains("at most 1h"), "{e}");
    }
}
