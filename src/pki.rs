//! The fleet's own certificate authority: a P-384 CA, node certificates whose
//! subject says who a node is (CN = node id) and what it may do (OU = role),
//! and the Mosquitto config + ACL that enforce it.
//!
//! One key per node serves both layers: rustls presents it to Mosquitto
//! (mutual TLS, `use_identity_as_username`), and [`crate::secure`] signs
//! envelopes with it, so a peer is trusted end to end exactly when its
//! certificate chains to this CA.
//!
//! Layout of a PKI directory:
//! `ca.crt`, `ca.key` (0600), `nodes/<id>.crt`, `nodes/<id>.key` (0600),
//! `mosquitto/` (written by `pki mosquitto-conf`).

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use p384::ecdsa::{Signature, SigningKey, VerifyingKey};
use p384::pkcs8::DecodePrivateKey;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P384_SHA384,
};
use serde::{Deserialize, Serialize};

/// Common name of the CA certificate.
pub const CA_NAME: &str = "gatewarden fleet CA";
/// Node id (CN) of the broker's server certificate.
pub const BROKER_ID: &str = "gatewarden-broker";

/// What a certificate allows its holder to do; stored in the subject's OU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CertRole {
    /// Publishes flow batches and alerts; receives verdicts and policy.
    Router,
    /// Receives flow batches; publishes verdicts and alerts.
    Detector,
    /// Receives everything; publishes policy updates.
    Monitor,
    /// A person with `gatewarden ctl`: may send control commands, nothing on MQTT but status.
    Operator,
    /// The Mosquitto server certificate.
    Broker,
}

impl CertRole {
    /// The OU string.
    pub fn as_str(self) -> &'static str {
        match self {
            CertRole::Router => "router",
            CertRole::Detector => "detector",
            CertRole::Monitor => "monitor",
            CertRole::Operator => "operator",
            CertRole::Broker => "broker",
        }
    }

    /// Parses an OU string.
    pub fn parse(s: &str) -> Option<CertRole> {
        Some(match s {
            "router" => CertRole::Router,
            "detector" => CertRole::Detector,
            "monitor" => CertRole::Monitor,
            "operator" => CertRole::Operator,
            "broker" => CertRole::Broker,
            _ => return None,
        })
    }

    /// The certificate role a process running `role` needs (`all` uses the monitor's rights).
    pub fn for_role(role: crate::role::Role) -> CertRole {
        match role {
            crate::role::Role::Router => CertRole::Router,
            crate::role::Role::Detector => CertRole::Detector,
            crate::role::Role::Monitor => CertRole::Monitor,
            // An all-in-one gateway joins a fleet as a gateway: it publishes
            // alerts and status and takes policy updates, like a router.
            crate::role::Role::All => CertRole::Router,
        }
    }
}

impl fmt::Display for CertRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Checks a node id the way `config.node_id` is checked (it becomes an MQTT topic level and an ACL user).
pub fn valid_node_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Paths inside a PKI directory.
#[derive(Debug, Clone)]
pub struct PkiDir(pub PathBuf);

impl PkiDir {
    /// The CA certificate.
    pub fn ca_cert(&self) -> PathBuf {
        self.0.join("ca.crt")
    }
    /// The CA private key.
    pub fn ca_key(&self) -> PathBuf {
        self.0.join("ca.key")
    }
    /// A node's certificate.
    pub fn node_cert(&self, id: &str) -> PathBuf {
        self.0.join("nodes").join(format!("{id}.crt"))
    }
    /// A node's private key.
    pub fn node_key(&self, id: &str) -> PathBuf {
        self.0.join("nodes").join(format!("{id}.key"))
    }
}

fn write_file(path: &Path, text: &str, secret: bool) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days as i64);
}

/// Creates a P-384 CA in `dir`; refuses to overwrite one unless `force`.
pub fn init(dir: &Path, days: u32, force: bool) -> anyhow::Result<PkiDir> {
    let pki = PkiDir(dir.to_path_buf());
    if pki.ca_key().exists() && !force {
        bail!(
            "{} already exists: a new CA would orphan every issued certificate. Pass --force to replace it",
            pki.ca_key().display()
        );
    }
    let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).context("generating the CA key")?;
    let mut params = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    validity(&mut params, days);
    let cert = params.self_signed(&key).context("self-signing the CA")?;
    write_file(&pki.ca_key(), &key.serialize_pem(), true)?;
    write_file(&pki.ca_cert(), &cert.pem(), false)?;
    Ok(pki)
}

/// Issues a certificate + key for `node_id` with `role`, signed by the CA in `dir`.
///
/// `names` become DNS/IP subject alternative names (the broker needs its host names).
pub fn issue(
    dir: &Path,
    node_id: &str,
    role: CertRole,
    names: &[String],
    days: u32,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    if !valid_node_id(node_id) {
        bail!("node id {node_id:?} is not 1 to 64 characters of A-Z, a-z, 0-9, '-' or '_'");
    }
    let pki = PkiDir(dir.to_path_buf());
    let ca_key_pem = std::fs::read_to_string(pki.ca_key()).with_context(|| {
        format!("reading {}: run `gatewarden pki init --dir {}` first", pki.ca_key().display(), dir.display())
    })?;
    let ca_pem =
        std::fs::read_to_string(pki.ca_cert()).with_context(|| format!("reading {}", pki.ca_cert().display()))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).context("parsing the CA key")?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).context("parsing the CA certificate")?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).context("generating the node key")?;
    let mut params = CertificateParams::new(names.to_vec()).context("certificate names")?;
    params.distinguished_name.push(DnType::CommonName, node_id);
    params.distinguished_name.push(DnType::OrganizationalUnitName, role.as_str());
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyAgreement];
    params.extended_key_usages = if role == CertRole::Broker {
        vec![ExtendedKeyUsagePurpose::ServerAuth]
    } else {
        vec![ExtendedKeyUsagePurpose::ClientAuth]
    };
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, days);
    let cert = params.signed_by(&key, &issuer).context("signing the node certificate")?;
    let (c, k) = (pki.node_cert(node_id), pki.node_key(node_id));
    write_file(&k, &key.serialize_pem(), true)?;
    write_file(&c, &cert.pem(), false)?;
    Ok((c, k))
}

/// Reads the first certificate of a PEM file as DER.
pub fn read_cert_der(path: &Path) -> anyhow::Result<Vec<u8>> {
    use rustls_pki_types::pem::PemObject;
    let c = rustls_pki_types::CertificateDer::from_pem_file(path)
        .with_context(|| format!("reading certificate {} (PEM)", path.display()))?;
    Ok(c.to_vec())
}

/// Who a certificate says its holder is, after it was checked against the CA.
#[derive(Debug, Clone)]
pub struct PeerCert {
    /// The subject CN.
    pub node: String,
    /// The subject OU.
    pub role: CertRole,
    /// The key that signs this peer's envelopes.
    pub key: VerifyingKey,
    /// The same key as an uncompressed SEC1 point, for [`verify_p384`] (ring).
    pub key_sec1: Vec<u8>,
}

/// Checks an ECDSA P-384/SHA-384 signature (`r‖s`, 96 bytes) with `ring`.
///
/// Why ring and not the `p384` crate: ring's constant-time P-384 verifies
/// several times faster (measured in `benches/secure.rs`, docs/PERFORMANCE.md),
/// and every verdict pays one verify on the router. Both produce and accept
/// standard ECDSA signatures, so either side may use either library.
pub fn verify_p384(public_sec1: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    use ring::signature::{UnparsedPublicKey, ECDSA_P384_SHA384_FIXED};
    UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, public_sec1).verify(msg, sig).is_ok()
}

/// Checks certificates against the fleet CA without any TLS stack, for the envelope layer.
#[derive(Debug, Clone)]
pub struct CaVerifier {
    key_sec1: Vec<u8>,
    subject: Vec<u8>,
}

fn parse_cert(der: &[u8]) -> anyhow::Result<x509_parser::certificate::X509Certificate<'_>> {
    use x509_parser::prelude::FromDer;
    let (rest, cert) = x509_parser::certificate::X509Certificate::from_der(der)
        .map_err(|e| anyhow::anyhow!("not a certificate: {e}"))?;
    if !rest.is_empty() {
        bail!("{} bytes after the certificate", rest.len());
    }
    Ok(cert)
}

impl CaVerifier {
    /// From the CA certificate (DER).
    pub fn from_der(der: &[u8]) -> anyhow::Result<CaVerifier> {
        let cert = parse_cert(der)?;
        let key = VerifyingKey::from_sec1_bytes(&cert.public_key().subject_public_key.data)
            .map_err(|_| anyhow::anyhow!("the CA key is not a P-384 key: make the CA with `gatewarden pki init`"))?;
        let key_sec1 = key.to_encoded_point(false).as_bytes().to_vec();
        Ok(CaVerifier { key_sec1, subject: cert.subject().as_raw().to_vec() })
    }

    /// From the CA certificate file (PEM).
    pub fn load(path: &Path) -> anyhow::Result<CaVerifier> {
        CaVerifier::from_der(&read_cert_der(path)?)
    }

    /// Checks issuer, signature (ECDSA P-384 / SHA-384) and validity period; returns the subject.
    pub fn verify(&self, der: &[u8]) -> anyhow::Result<PeerCert> {
        let cert = parse_cert(der)?;
        if cert.issuer().as_raw() != self.subject.as_slice() {
            bail!("issued by {}, not by this fleet's CA", cert.issuer());
        }
        if cert.signature_algorithm.algorithm != x509_parser::oid_registry::OID_SIG_ECDSA_WITH_SHA384 {
            bail!("signature algorithm is not ecdsa-with-SHA384");
        }
        // DER-encoded ECDSA signature, checked with ring (see [`verify_p384`] for why).
        let ca_key =
            ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P384_SHA384_ASN1, &self.key_sec1[..]);
        ca_key
            .verify(cert.tbs_certificate.as_ref(), &cert.signature_value.data)
            .map_err(|_| anyhow::anyhow!("signature does not verify against the CA (or is malformed)"))?;
        if !cert.validity().is_valid() {
            bail!("outside its validity period ({} to {})", cert.validity().not_before, cert.validity().not_after);
        }
        let node = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .filter(|s| valid_node_id(s))
            .ok_or_else(|| anyhow::anyhow!("subject has no valid CN (node id)"))?
            .to_string();
        let role = cert
            .subject()
            .iter_organizational_unit()
            .next()
            .and_then(|a| a.as_str().ok())
            .and_then(CertRole::parse)
            .ok_or_else(|| anyhow::anyhow!("subject has no OU naming a gatewarden role"))?;
        let key = VerifyingKey::from_sec1_bytes(&cert.public_key().subject_public_key.data)
            .map_err(|_| anyhow::anyhow!("the certificate key is not a P-384 key"))?;
        let key_sec1 = key.to_encoded_point(false).as_bytes().to_vec();
        Ok(PeerCert { node, role, key, key_sec1 })
    }
}

/// This node's own certificate and key, loaded once at start.
#[derive(Clone)]
pub struct Identity {
    /// Subject CN.
    pub node: String,
    /// Subject OU.
    pub role: CertRole,
    /// The certificate, DER, sent to peers in announcements.
    pub cert_der: Vec<u8>,
    /// The signing key (the same key TLS uses).
    pub key: SigningKey,
    /// The same key in ring, which signs several times faster (see [`Identity::sign`]).
    signer: std::sync::Arc<ring::signature::EcdsaKeyPair>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity").field("node", &self.node).field("role", &self.role).finish_non_exhaustive()
    }
}

impl Identity {
    /// Loads `cert` and `key` (PEM) and checks the certificate against `ca` and that the key matches it.
    pub fn load(cert: &Path, key: &Path, ca: &CaVerifier) -> anyhow::Result<Identity> {
        let cert_der = read_cert_der(cert)?;
        let key_pem = std::fs::read_to_string(key).with_context(|| format!("reading key {}", key.display()))?;
        let secret = p384::SecretKey::from_pkcs8_pem(&key_pem).map_err(|e| {
            anyhow::anyhow!("{}: not a P-384 PKCS#8 key ({e}); issue one with `gatewarden pki issue`", key.display())
        })?;
        Identity::from_parts(cert_der, SigningKey::from(secret), ca)
            .with_context(|| format!("certificate {}", cert.display()))
    }

    /// Builds an identity from a DER certificate and its key, checked against `ca`.
    pub fn from_parts(cert_der: Vec<u8>, key: SigningKey, ca: &CaVerifier) -> anyhow::Result<Identity> {
        let peer = ca.verify(&cert_der)?;
        if peer.key != *key.verifying_key() {
            bail!("the private key does not belong to this certificate");
        }
        let rng = ring::rand::SystemRandom::new();
        let signer = ring::signature::EcdsaKeyPair::from_private_key_and_public_key(
            &ring::signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            &key.to_bytes(),
            key.verifying_key().to_encoded_point(false).as_bytes(),
            &rng,
        )
        .map_err(|e| anyhow::anyhow!("the private key is not usable for ECDSA P-384 signing: {e}"))?;
        Ok(Identity { node: peer.node, role: peer.role, cert_der, key, signer: std::sync::Arc::new(signer) })
    }

    /// Signs `msg` with ECDSA P-384/SHA-384 (random nonce from the OS),
    /// returning `r‖s` (96 bytes), as [`verify_p384`] checks it.
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        let rng = ring::rand::SystemRandom::new();
        match self.signer.sign(&rng, msg) {
            Ok(sig) => sig.as_ref().to_vec(),
            // Only a failing OS random source gets here; fall back to the
            // deterministic (RFC 6979) signer, which needs no randomness.
            Err(_) => {
                use p384::ecdsa::signature::Signer;
                let sig: Signature = self.key.sign(msg);
                sig.to_bytes().to_vec()
            }
        }
    }
}

/// Topic permissions of one role: (publish, subscribe) topic filters; `{id}` is the node's own id.
pub fn acl_for(role: CertRole) -> (&'static [&'static str], &'static [&'static str]) {
    match role {
        CertRole::Router => (
            &["flow_batch", "alert", "heartbeat", "metrics", "status", "key", "ack", "block_table"],
            &["+/verdict", "+/policy_update", "+/settings_update", "+/unblock", "+/key", "+/ack"],
        ),
        CertRole::Detector => (
            &["verdict", "alert", "heartbeat", "metrics", "status", "key", "ack"],
            &["+/flow_batch", "+/model_update", "+/settings_update", "+/key", "+/ack"],
        ),
        CertRole::Monitor => (
            &[
                "policy_update",
                "model_update",
                "settings_update",
                "unblock",
                "alert",
                "heartbeat",
                "metrics",
                "status",
                "key",
                "ack",
            ],
            &["#"],
        ),
        CertRole::Operator => (&[], &["+/status", "+/heartbeat"]),
        CertRole::Broker => (&[], &[]),
    }
}

/// Options for `pki mosquitto-conf`.
#[derive(Debug, Clone)]
pub struct MosquittoOptions {
    /// Where to write `mosquitto.conf`, `acl` and the broker's certificate.
    pub out: PathBuf,
    /// Listener port.
    pub port: u16,
    /// Listener address.
    pub bind: String,
    /// Host names / addresses clients use to reach the broker (certificate SANs).
    pub names: Vec<String>,
    /// `user` line; Mosquitto drops root to this user and must still read the key.
    pub run_as: Option<String>,
    /// Where Mosquitto keeps its persistence database.
    pub persistence_dir: Option<PathBuf>,
    /// Mosquitto's log file, with debug logging so ACL denials appear in it;
    /// point the monitor's `[mqtt] broker_log` at it.
    pub log: Option<PathBuf>,
}

/// Writes a TLS-only Mosquitto config and an ACL with one block per issued certificate.
///
/// Re-run after issuing a node: the ACL lists users by certificate CN.
pub fn mosquitto_conf(dir: &Path, opts: &MosquittoOptions) -> anyhow::Result<PathBuf> {
    let pki = PkiDir(dir.to_path_buf());
    let ca = CaVerifier::load(&pki.ca_cert())
        .with_context(|| format!("run `gatewarden pki init --dir {}` first", dir.display()))?;
    let mut names = opts.names.clone();
    if names.is_empty() {
        names = vec!["localhost".into(), "127.0.0.1".into()];
    }
    issue(dir, BROKER_ID, CertRole::Broker, &names, 825)?;
    std::fs::create_dir_all(&opts.out).with_context(|| format!("creating {}", opts.out.display()))?;
    let abs = |p: PathBuf| std::fs::canonicalize(&p).unwrap_or(p);
    let broker_crt = opts.out.join("broker.crt");
    let broker_key = opts.out.join("broker.key");
    std::fs::copy(pki.node_cert(BROKER_ID), &broker_crt).context("copying the broker certificate")?;
    std::fs::copy(pki.node_key(BROKER_ID), &broker_key).context("copying the broker key")?;
    let acl_path = opts.out.join("acl");
    let mut acl =
        String::from("# Written by `gatewarden pki mosquitto-conf`; one block per issued certificate (user = CN).\n");
    let mut entries: Vec<_> = std::fs::read_dir(dir.join("nodes"))
        .with_context(|| format!("listing {}", dir.join("nodes").display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "crt"))
        .collect();
    entries.sort();
    for path in entries {
        let der = read_cert_der(&path)?;
        let peer = match ca.verify(&der) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "skipping certificate not usable with this CA");
                continue;
            }
        };
        let (publish, subscribe) = acl_for(peer.role);
        if publish.is_empty() && subscribe.is_empty() {
            continue;
        }
        acl.push_str(&format!("\n# {} ({})\nuser {}\n", peer.node, peer.role, peer.node));
        for kind in publish {
            acl.push_str(&format!("topic write gatewarden/v1/{}/{kind}\n", peer.node));
        }
        for filter in subscribe {
            acl.push_str(&format!("topic read gatewarden/v1/{filter}\n"));
        }
    }
    write_file(&acl_path, &acl, false)?;
    let conf = render_mosquitto_conf(opts, &abs(acl_path), &abs(pki.ca_cert()), &abs(broker_crt), &abs(broker_key))?;
    let conf_path = opts.out.join("mosquitto.conf");
    write_file(&conf_path, &conf, false)?;
    Ok(conf_path)
}

/// The text of a TLS-only Mosquitto config naming these files (as the broker will see them).
fn render_mosquitto_conf(
    opts: &MosquittoOptions,
    acl: &Path,
    ca: &Path,
    crt: &Path,
    key: &Path,
) -> anyhow::Result<String> {
    let mut conf = format!(
        "# Written by `gatewarden pki mosquitto-conf`: TLS only, client certificates required,\n\
         # the certificate CN is the MQTT user, and the ACL gives each role only its own topics.\n\
         # Listener-scoped settings must follow the `listener` line, or Mosquitto opens\n\
         # an unencrypted default listener on 1883 for them.\n\
         per_listener_settings false\n\
         allow_anonymous false\n\
         acl_file {acl}\n\
         listener {port} {bind}\n\
         protocol mqtt\n\
         use_identity_as_username true\n\
         cafile {ca}\n\
         certfile {crt}\n\
         keyfile {key}\n\
         require_certificate true\n\
         tls_version tlsv1.2\n\
         max_queued_messages 100000\n\
         max_inflight_messages 64\n\
         # Verdicts are small: send them now, not after Nagle's delay.\n\
         set_tcp_nodelay true\n",
        acl = acl.display(),
        port = opts.port,
        bind = opts.bind,
        ca = ca.display(),
        crt = crt.display(),
        key = key.display(),
    );
    if let Some(p) = &opts.persistence_dir {
        std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
        let p = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
        conf.push_str(&format!("persistence true\npersistence_location {}/\nautosave_interval 30\n", p.display()));
    }
    if let Some(l) = &opts.log {
        // Mosquitto 2.0 logs ACL denials at debug level only; gatewarden's
        // broker-log watcher (bus/broker_log.rs) reads them and keeps the file small.
        conf.push_str(&format!(
            "log_dest file {}\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\nlog_type debug\nlog_timestamp true\n",
            std::path::absolute(l).unwrap_or_else(|_| l.clone()).display()
        ));
    }
    if let Some(u) = &opts.run_as {
        conf.push_str(&format!("user {u}\n"));
    }
    Ok(conf)
}

/// Where a node bundle puts the broker's files on the monitor (see [`bundle`]).
pub const NODE_BROKER_DIR: &str = "/etc/mosquitto/tls";

/// What [`bundle`] needs besides the PKI directory.
#[derive(Debug, Clone)]
pub struct BundleOptions {
    /// The node id: `DIR/nodes/<id>.{crt,key}` must exist (`pki issue`).
    pub node_id: String,
    /// `host:port` of the broker's TLS listener, as this node reaches it.
    pub broker: String,
    /// Host names / addresses nodes use for the broker (SANs), for a monitor's bundle.
    pub broker_names: Vec<String>,
    /// The root of the tree to write (an image overlay, or `/` on a running node).
    pub out: PathBuf,
}

/// Writes the files one node needs to join the fleet as a tree rooted at
/// `opts.out`, laid out as on the node, so image assembly can copy it in:
/// `etc/gatewarden/pki/{ca.crt,node.crt,node.key}`, `etc/gatewarden/node.toml`
/// (node id + `[mqtt] broker`, which the image's start script puts in front of
/// the role's default config), and for a monitor `etc/mosquitto/mosquitto.conf`
/// with the broker certificate, key and ACL under [`NODE_BROKER_DIR`].
///
/// The CA key never leaves `dir`. Returns the files written.
pub fn bundle(dir: &Path, opts: &BundleOptions) -> anyhow::Result<Vec<PathBuf>> {
    let pki = PkiDir(dir.to_path_buf());
    let ca = CaVerifier::load(&pki.ca_cert())
        .with_context(|| format!("run `gatewarden pki init --dir {}` first", dir.display()))?;
    let id = &opts.node_id;
    let cert_path = pki.node_cert(id);
    let der = read_cert_der(&cert_path).with_context(|| {
        format!("no certificate for {id}: run `gatewarden pki issue {id} --role ROLE --dir {}` first", dir.display())
    })?;
    let peer = ca.verify(&der).with_context(|| format!("{} does not chain to this CA", cert_path.display()))?;
    if !opts.broker.contains(':') {
        bail!("--broker {:?}: give host:port of the broker's TLS listener, e.g. 192.0.2.3:8883", opts.broker);
    }
    let read = |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    let etc = opts.out.join("etc");
    let mut written = Vec::new();
    let mut put = |rel: &str, text: &str, secret: bool| -> anyhow::Result<()> {
        let path = etc.join(rel);
        write_file(&path, text, secret)?;
        written.push(path);
        Ok(())
    };
    put("gatewarden/pki/ca.crt", &read(&pki.ca_cert())?, false)?;
    put("gatewarden/pki/node.crt", &read(&cert_path)?, false)?;
    put("gatewarden/pki/node.key", &read(&pki.node_key(id))?, true)?;
    put(
        "gatewarden/node.toml",
        &format!(
            "# Written by `gatewarden pki bundle {id}`: who this node is and where its broker listens.\n\
             # /etc/init.d/S50gatewarden puts it in front of the role's default config.\n\
             node_id = \"{id}\"\n\n[mqtt]\nbroker = \"{}\"\n",
            opts.broker
        ),
        false,
    )?;
    if peer.role == CertRole::Monitor {
        let port = opts
            .broker
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .with_context(|| format!("--broker {:?}: the port after ':' must be a number", opts.broker))?;
        let tls = etc.join("mosquitto/tls");
        let mut names = opts.broker_names.clone();
        if names.is_empty() {
            names.push(
                opts.broker.rsplit_once(':').map(|(h, _)| h.trim_matches(['[', ']']).to_string()).unwrap_or_default(),
            );
        }
        let mopts = MosquittoOptions {
            out: tls.clone(),
            port,
            bind: "0.0.0.0".into(),
            names,
            run_as: None,
            persistence_dir: None,
            log: None,
        };
        mosquitto_conf(dir, &mopts)?;
        // The staging copy names staging paths; the node's copy names the node's.
        std::fs::remove_file(tls.join("mosquitto.conf")).context("removing the staging mosquitto.conf")?;
        put("mosquitto/tls/ca.crt", &read(&pki.ca_cert())?, false)?;
        let on_node = Path::new(NODE_BROKER_DIR);
        let mut conf = render_mosquitto_conf(
            &mopts,
            &on_node.join("acl"),
            &on_node.join("ca.crt"),
            &on_node.join("broker.crt"),
            &on_node.join("broker.key"),
        )?;
        conf.push_str("log_dest syslog\nlog_type error\nlog_type warning\nlog_type notice\n");
        put("mosquitto/mosquitto.conf", &conf, false)?;
        written.extend(["acl", "broker.crt", "broker.key"].iter().map(|f| tls.join(f)));
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_verify_and_carry_id_and_role() {
        let d = tempfile::tempdir().unwrap();
        init(d.path(), 30, false).unwrap();
        assert!(init(d.path(), 30, false).unwrap_err().to_string().contains("--force"));
        let (c, k) = issue(d.path(), "router-1", CertRole::Router, &[], 30).unwrap();
        let ca = CaVerifier::load(&PkiDir(d.path().into()).ca_cert()).unwrap();
        let id = Identity::load(&c, &k, &ca).unwrap();
        assert_eq!((id.node.as_str(), id.role), ("router-1", CertRole::Router));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&k).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_bundle_holds_what_one_node_needs_and_names_paths_as_on_the_node() {
        let d = tempfile::tempdir().unwrap();
        init(d.path(), 30, false).unwrap();
        issue(d.path(), "gw-router", CertRole::Router, &[], 30).unwrap();
        issue(d.path(), "gw-monitor", CertRole::Monitor, &[], 30).unwrap();
        let out = d.path().join("tree");
        let opts = |id: &str, broker: &str| BundleOptions {
            node_id: id.into(),
            broker: broker.into(),
            broker_names: vec![],
            out: out.join(id),
        };
        bundle(d.path(), &opts("gw-router", "192.0.2.3:8883")).unwrap();
        let etc = out.join("gw-router/etc");
        let node: crate::config::Config =
            toml::from_str(&std::fs::read_to_string(etc.join("gatewarden/node.toml")).unwrap()).unwrap();
        assert_eq!((node.node_id.as_str(), node.mqtt.broker.as_str()), ("gw-router", "192.0.2.3:8883"));
        use std::os::unix::fs::PermissionsExt;
        let key = etc.join("gatewarden/pki/node.key");
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
        let ca = CaVerifier::load(&etc.join("gatewarden/pki/ca.crt")).unwrap();
        let id = Identity::load(&etc.join("gatewarden/pki/node.crt"), &key, &ca).unwrap();
        assert_eq!(id.node, "gw-router");
        assert!(!etc.join("mosquitto").exists(), "only the monitor carries the broker");
        assert!(!out.join("gw-router").join("ca.key").exists());

        // The monitor's tree has the broker: config paths as on the node, ACL naming the router.
        bundle(d.path(), &opts("gw-monitor", "192.0.2.3:8883")).unwrap();
        let m = out.join("gw-monitor/etc/mosquitto");
        let conf = std::fs::read_to_string(m.join("mosquitto.conf")).unwrap();
        for line in ["listener 8883 0.0.0.0", "certfile /etc/mosquitto/tls/broker.crt", "require_certificate true"] {
            assert!(conf.contains(line), "{line}: {conf}");
        }
        assert!(!conf.contains(d.path().to_str().unwrap()), "no build-machine path leaks into the node's config");
        assert!(std::fs::read_to_string(m.join("tls/acl")).unwrap().contains("user gw-router"));
        let broker = read_cert_der(&m.join("tls/broker.crt")).unwrap();
        assert_eq!(ca.verify(&broker).unwrap().role, CertRole::Broker);

        // Clear errors: an unknown node, a broker without a port.
        let e = bundle(d.path(), &opts("gw-nobody", "192.0.2.3:8883")).unwrap_err();
        assert!(format!("{e:#}").contains("pki issue gw-nobody"), "{e:#}");
        let e = bundle(d.path(), &opts("gw-router", "192.0.2.3")).unwrap_err();
        assert!(format!("{e:#}").contains("host:port"), "{e:#}");
    }

    #[test]
    fn a_certificate_from_another_ca_is_refused() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        init(a.path(), 30, false).unwrap();
        init(b.path(), 30, false).unwrap();
        let (c, _) = issue(b.path(), "intruder", CertRole::Detector, &[], 30).unwrap();
        let ca = CaVerifier::load(&PkiDir(a.path().into()).ca_cert()).unwrap();
        let err = ca.verify(&read_cert_der(&c).unwrap()).unwrap_err().to_string();
        assert!(err.contains("CA"), "{err}");
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused() {
        let d = tempfile::tempdir().unwrap();
        init(d.path(), 30, false).unwrap();
        let (c1, _) = issue(d.path(), "a", CertRole::Router, &[], 30).unwrap();
        let (_, k2) = issue(d.path(), "b", CertRole::Router, &[], 30).unwrap();
        let ca = CaVerifier::load(&PkiDir(d.path().into()).ca_cert()).unwrap();
        let err = format!("{:#}", Identity::load(&c1, &k2, &ca).unwrap_err());
        assert!(err.contains("does not belong"), "{err}");
    }

    #[test]
    fn bad_node_ids_are_refused() {
        let d = tempfile::tempdir().unwrap();
        init(d.path(), 30, false).unwrap();
        assert!(issue(d.path(), "a/b", CertRole::Router, &[], 30).is_err());
        assert!(issue(d.path(), "#", CertRole::Router, &[], 30).is_err());
    }

    #[test]
    fn mosquitto_acl_gives_each_role_only_its_topics() {
        let d = tempfile::tempdir().unwrap();
        init(d.path(), 30, false).unwrap();
        issue(d.path(), "r1", CertRole::Router, &[], 30).unwrap();
        issue(d.path(), "d1", CertRole::Detector, &[], 30).unwrap();
        let out = d.path().join("mq");
        let opts = MosquittoOptions {
            out: out.clone(),
            port: 8883,
            bind: "0.0.0.0".into(),
            names: vec![],
            run_as: None,
            persistence_dir: None,
            log: None,
        };
        let conf = std::fs::read_to_string(mosquitto_conf(d.path(), &opts).unwrap()).unwrap();
        for line in
            ["require_certificate true", "use_identity_as_username true", "allow_anonymous false", "listener 8883"]
        {
            assert!(conf.contains(line), "{line} in {conf}");
        }
        assert!(!conf.contains("listener 1883"));
        assert!(conf.contains("set_tcp_nodelay true") && !conf.contains("log_dest"), "{conf}");
        let logged = MosquittoOptions { log: Some(d.path().join("mosquitto.log")), ..opts.clone() };
        let conf2 = std::fs::read_to_string(mosquitto_conf(d.path(), &logged).unwrap()).unwrap();
        assert!(conf2.contains("log_dest file /") && conf2.contains("log_type debug"), "{conf2}");
        std::fs::write(out.join("mosquitto.conf"), &conf).unwrap();
        let acl = std::fs::read_to_string(out.join("acl")).unwrap();
        let block = |user: &str| -> String {
            let start = acl.find(&format!("user {user}\n")).unwrap();
            let rest = &acl[start..];
            rest[..rest[1..].find("\n#").map(|i| i + 1).unwrap_or(rest.len())].to_string()
        };
        assert!(block("r1").contains("topic write gatewarden/v1/r1/flow_batch"));
        let r1 = block("r1");
        assert!(!r1.lines().any(|l| l.starts_with("topic write") && l.contains("verdict")), "{r1}");
        assert!(r1.contains("topic read gatewarden/v1/+/verdict"), "{r1}");
        assert!(block("d1").contains("topic write gatewarden/v1/d1/verdict"));
        assert!(!acl.contains("user gatewarden-broker"), "the broker gets no topics");
    }
}
