//! The fleet's own certificate authority: a P-384 CA, node certificates whose
//! subject says who a node is (CN = node id) and what it may do (OU = role),
//! and the Mosquitto config + ACL that enforce it.
//!
//! One key per node serves both layers: rustls presents it to Mosquitto
//! (mutual TLS, `use_subject_as_username`), and [`crate::secure`] signs
//! envelopes with it, so a peer is trusted end to end exactly when its
//! certificate chains to this CA.
//!
//! Layout of a PKI directory:
//! `ca.crt`, `ca.key` (0600), `ca.crl` (the revocation list, signed by the CA),
//! `revoked.json` (what `ca.crl` lists, readable), `nodes/<id>.crt`,
//! `nodes/<id>.key` (0600), `nodes/superseded/` (certificates replaced by a
//! later `pki issue` of the same id, kept so `pki revoke` can list them),
//! `revoked/` (revoked certificates), `mosquitto/` (written by `pki mosquitto-conf`).
//!
//! # Revocation
//!
//! `pki revoke ID` adds every certificate ever issued to ID to `ca.crl`. The
//! broker refuses them in the TLS handshake (`crlfile` in the config
//! `pki mosquitto-conf` writes), and every node refuses their envelopes and
//! `ctl` handshakes: [`CaVerifier::load`] reads `ca.crl` beside the CA
//! certificate (nodes get it in their bundle) and [`CaVerifier::verify`]
//! fails with [`CertRevoked`].
//!
//! # Identity at the broker
//!
//! Mosquitto takes the whole certificate subject as the MQTT user
//! (`use_subject_as_username`, rendered `OU=<role>,CN=<id>`), and the ACL
//! grants topics to that user: a certificate's rights follow its CN **and**
//! its role, so re-issuing an id with another role leaves the old
//! certificate with no topics at all (see [`broker_username`]).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason, RevokedCertParams, SerialNumber,
    PKCS_ECDSA_P384_SHA384,
};
use serde::{Deserialize, Serialize};

/// Common name of the CA certificate.
pub const CA_NAME: &str = "gatewarden fleet CA";
/// Node id (CN) of the broker's server certificate.
pub const BROKER_ID: &str = "gatewarden-broker";

/// Default lifetime of node (and broker) certificates, in days.
///
/// 397 days (the Web PKI's ceiling) rather than the 825 it used to be: a
/// stolen key whose revocation has not reached every node yet (`ca.crl` is
/// copied to nodes by hand or by `pki bundle`) stops working within about a year, and a yearly
/// `pki issue` + `pki bundle` is a rhythm an operator keeps.
pub const NODE_CERT_DAYS: u32 = 397;

/// How long a CRL written by [`revoke`] counts as current.
///
/// Mosquitto (OpenSSL) refuses *every* client once the CRL's nextUpdate has
/// passed, and nothing republishes it on its own, so it is as long as the
/// CA's default lifetime: the list is replaced whenever something is revoked.
pub const CRL_DAYS: u32 = 3650;

pub use gatewarden_proto::role::CertRole;

pub use gatewarden_core::identity::valid_node_id;

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
    /// The certificate revocation list (PEM), signed by the CA.
    pub fn crl(&self) -> PathBuf {
        self.0.join("ca.crl")
    }
    /// The readable ledger of revoked certificates (what `ca.crl` lists).
    pub fn revoked_ledger(&self) -> PathBuf {
        self.0.join("revoked.json")
    }
    /// Certificates replaced by a later `pki issue` of the same id.
    pub fn superseded_dir(&self) -> PathBuf {
        self.0.join("nodes").join("superseded")
    }
    /// Revoked certificates, moved out of `nodes/`.
    pub fn revoked_dir(&self) -> PathBuf {
        self.0.join("revoked")
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
    // The default (/etc/gatewarden/pki) is root's: say how a user gets a CA of their own.
    std::fs::create_dir_all(dir).with_context(|| {
        format!("creating {}: pass --dir DIR for a directory you can write, or run as root", dir.display())
    })?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).context("generating the CA key")?;
    let mut params = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    validity(&mut params, days);
    let cert = params.self_signed(&key).context("self-signing the CA")?;
    write_file(&pki.ca_key(), &key.serialize_pem(), true)?;
    write_file(&pki.ca_cert(), &cert.pem(), false)?;
    // A fresh CA starts with an empty list (a stale one from a replaced CA would not verify).
    let _ = std::fs::remove_file(pki.revoked_ledger());
    write_crl(dir, &[])?;
    Ok(pki)
}

fn load_issuer(dir: &Path) -> anyhow::Result<Issuer<'static, KeyPair>> {
    let pki = PkiDir(dir.to_path_buf());
    let ca_key_pem = std::fs::read_to_string(pki.ca_key()).with_context(|| {
        format!("reading {}: run `gatewarden pki init --dir {}` first", pki.ca_key().display(), dir.display())
    })?;
    let ca_pem =
        std::fs::read_to_string(pki.ca_cert()).with_context(|| format!("reading {}", pki.ca_cert().display()))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).context("parsing the CA key")?;
    Issuer::from_ca_cert_pem(&ca_pem, ca_key).context("parsing the CA certificate")
}

/// A random positive 128-bit serial (first byte never 0, top bit clear), so serials are unique per certificate.
fn random_serial() -> Vec<u8> {
    let mut b = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    b[0] = (b[0] & 0x7f).max(1);
    b.to_vec()
}

pub use gatewarden_secure::certs::serial_hex;

fn hex_bytes(hex: &str) -> anyhow::Result<Vec<u8>> {
    if hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("serial {hex:?} is not hex");
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).context("hex")).collect()
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
    let issuer = load_issuer(dir)?;
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
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
    validity(&mut params, days);
    let cert = params.signed_by(&key, &issuer).context("signing the node certificate")?;
    let (c, k) = (pki.node_cert(node_id), pki.node_key(node_id));
    // The certificate this one replaces still chains to the CA: keep it, so
    // `pki revoke` can list it (its rights at the broker follow its own role).
    if let Some(old) = read_cert_der(&c).ok().filter(|_| role != CertRole::Broker) {
        if let Ok(cert) = parse_cert(&old) {
            let dest = pki.superseded_dir().join(format!("{node_id}-{}.crt", serial_hex(cert.raw_serial())));
            std::fs::create_dir_all(pki.superseded_dir())
                .with_context(|| format!("creating {}", pki.superseded_dir().display()))?;
            std::fs::rename(&c, &dest).with_context(|| format!("moving {} to {}", c.display(), dest.display()))?;
        }
    }
    write_file(&k, &key.serialize_pem(), true)?;
    write_file(&c, &cert.pem(), false)?;
    Ok((c, k))
}

use gatewarden_secure::certs::parse_cert;
pub use gatewarden_secure::certs::{read_cert_der, verify_p384, CaVerifier, CertRevoked, Identity, PeerCert};

/// Topic permissions of one role: (publish, subscribe) topic filters; `{id}` is the node's own id.
pub fn acl_for(role: CertRole) -> (Vec<&'static str>, Vec<String>) {
    gatewarden_proto::kinds::acl_for(role)
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
    write_mosquitto_conf(dir, opts, false)
}

/// [`mosquitto_conf`] for a broker started on this machine (`gatewarden pki mosquitto-conf`):
/// run as root without `run_as`, the files Mosquitto reads after dropping root go to its
/// `mosquitto` user and the config says `user mosquitto` (or an error says why it cannot).
pub fn mosquitto_conf_here(dir: &Path, opts: &MosquittoOptions) -> anyhow::Result<PathBuf> {
    write_mosquitto_conf(dir, opts, true)
}

fn write_mosquitto_conf(dir: &Path, opts: &MosquittoOptions, for_this_machine: bool) -> anyhow::Result<PathBuf> {
    let pki = PkiDir(dir.to_path_buf());
    let ca = CaVerifier::load(&pki.ca_cert())
        .with_context(|| format!("run `gatewarden pki init --dir {}` first", dir.display()))?;
    let mut names = opts.names.clone();
    if names.is_empty() {
        names = vec!["localhost".into(), "127.0.0.1".into()];
    }
    issue(dir, BROKER_ID, CertRole::Broker, &names, NODE_CERT_DAYS)?;
    std::fs::create_dir_all(&opts.out).with_context(|| format!("creating {}", opts.out.display()))?;
    let abs = |p: PathBuf| std::fs::canonicalize(&p).unwrap_or(p);
    let broker_crt = opts.out.join("broker.crt");
    let broker_key = opts.out.join("broker.key");
    std::fs::copy(pki.node_cert(BROKER_ID), &broker_crt).context("copying the broker certificate")?;
    std::fs::copy(pki.node_key(BROKER_ID), &broker_key).context("copying the broker key")?;
    let acl_path = opts.out.join("acl");
    let mut acl = String::from(
        "# Written by `gatewarden pki mosquitto-conf`; one block per issued certificate\n\
         # (user = the certificate subject, so rights follow the node id *and* its role).\n",
    );
    // The broker reads the revocation list from its own directory.
    let crl_path = opts.out.join("ca.crl");
    if !pki.crl().exists() {
        // A CA made before revocation existed: start its (empty) list now.
        write_crl(dir, &read_ledger(dir)?)?;
    }
    std::fs::copy(pki.crl(), &crl_path).context("copying the revocation list")?;
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
        // The JSON mirror and Home Assistant discovery (full topics): an
        // integration reads them, the monitor or all-in-one node writes its own.
        let (json_write, json_read) = gatewarden_proto::kinds::json_acl(peer.role, &peer.node);
        if publish.is_empty() && subscribe.is_empty() && json_write.is_empty() && json_read.is_empty() {
            continue;
        }
        acl.push_str(&format!("\n# {} ({})\nuser {}\n", peer.node, peer.role, broker_username(&peer.node, peer.role)));
        for kind in publish {
            acl.push_str(&format!("topic write {}/{}/{kind}\n", gatewarden_proto::kinds::TOPIC_PREFIX, peer.node));
        }
        for filter in subscribe {
            acl.push_str(&format!("topic read {}/{filter}\n", gatewarden_proto::kinds::TOPIC_PREFIX));
        }
        for t in json_write {
            acl.push_str(&format!("topic write {t}\n"));
        }
        for t in json_read {
            acl.push_str(&format!("topic read {t}\n"));
        }
    }
    write_file(&acl_path, &acl, false)?;
    let files = BrokerFiles {
        acl: abs(acl_path),
        ca: abs(pki.ca_cert()),
        crl: abs(crl_path),
        crt: abs(broker_crt),
        key: abs(broker_key),
    };
    let mut opts = opts.clone();
    if for_this_machine && opts.run_as.is_none() && effective_uid() == Some(0) {
        opts.run_as = Some(hand_to_mosquitto_user(&opts, &files)?);
    }
    let opts = &opts;
    let conf = render_mosquitto_conf(opts, &files)?;
    let conf_path = opts.out.join("mosquitto.conf");
    write_file(&conf_path, &conf, false)?;
    Ok(conf_path)
}

/// This process's effective uid (from /proc/self/status), if it can be read.
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find(|l| l.starts_with("Uid:"))?.split_whitespace().nth(2)?.parse().ok()
}

/// The user Mosquitto drops root to when its config has no `user` line.
pub const MOSQUITTO_USER: &str = "mosquitto";

/// `pki mosquitto-conf` run as root without `--user`: Mosquitto started as root drops to
/// its own user before it reads the TLS files, and the broker key is 0600. So the key (and the
/// log file and persistence directory, which it writes) is given to that user, and every file
/// is checked to be reachable by it; otherwise an error says what to do instead of a config
/// Mosquitto cannot start with. Returns the user for the config's `user` line.
fn hand_to_mosquitto_user(opts: &MosquittoOptions, f: &BrokerFiles) -> anyhow::Result<String> {
    let user = MOSQUITTO_USER;
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let Some((uid, gid)) = passwd.lines().find_map(|l| {
        let mut it = l.split(':');
        (it.next() == Some(user)).then(|| Some((it.nth(1)?.parse::<u32>().ok()?, it.next()?.parse::<u32>().ok()?)))?
    }) else {
        anyhow::bail!(
            "run as root, Mosquitto drops to the user `{user}`, and this machine has none: pass --user NAME \
(the account Mosquitto should run as; --user root keeps it root)"
        );
    };
    let give = |p: &Path| {
        std::os::unix::fs::chown(p, Some(uid), Some(gid))
            .with_context(|| format!("giving {} to the user {user} (Mosquitto runs as it)", p.display()))
    };
    give(&f.key)?;
    if let Some(l) = &opts.log {
        let l = std::path::absolute(l).unwrap_or_else(|_| l.clone());
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&l)
            .with_context(|| format!("creating {}", l.display()))?;
        give(&l)?;
    }
    if let Some(p) = &opts.persistence_dir {
        std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
        give(p)?;
    }
    for file in [&f.acl, &f.ca, &f.crl, &f.crt, &f.key] {
        if let Some(blocker) = unreachable_for(file, uid, gid) {
            anyhow::bail!(
                "run as root, Mosquitto drops to the user `{user}`, which cannot read {} ({blocker}). Write the \
config where it can (--out DIR, e.g. /etc/mosquitto/gatewarden), or pass --user root to keep Mosquitto root",
                file.display()
            );
        }
    }
    Ok(user.to_string())
}

/// Why the user `uid`/`gid` cannot read `file` (a directory on the way it may not enter, or
/// the file's own mode), or `None` when it can. Supplementary groups are not counted.
fn unreachable_for(file: &Path, uid: u32, gid: u32) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let allowed = |m: &std::fs::Metadata, bits: u32| {
        let mode = m.mode();
        (m.uid() == uid && mode & (bits << 6) != 0) || (m.gid() == gid && mode & (bits << 3) != 0) || mode & bits != 0
    };
    let file = std::fs::canonicalize(file).ok()?;
    for dir in file.ancestors().skip(1) {
        let m = std::fs::metadata(dir).ok()?;
        if !allowed(&m, 0o1) {
            return Some(format!("{} is mode {:o}, owner uid {}", dir.display(), m.mode() & 0o7777, m.uid()));
        }
    }
    let m = std::fs::metadata(&file).ok()?;
    (!allowed(&m, 0o4)).then(|| format!("it is mode {:o}, owner uid {}", m.mode() & 0o7777, m.uid()))
}

/// The files a broker config names, as the broker will see them.
struct BrokerFiles {
    acl: PathBuf,
    ca: PathBuf,
    crl: PathBuf,
    crt: PathBuf,
    key: PathBuf,
}

/// The MQTT user Mosquitto derives from a certificate `pki issue` wrote
/// (`use_subject_as_username`: the subject in RFC 2253 order, last RDN first).
///
/// Checked against Mosquitto 2.0.11, which logs `u'OU=router,CN=r1'`. The ACL
/// keys on it, so the rights of a certificate follow its CN and its role.
pub fn broker_username(node: &str, role: CertRole) -> String {
    format!("OU={role},CN={node}")
}

/// The text of a TLS-only Mosquitto config naming these files (as the broker will see them).
fn render_mosquitto_conf(opts: &MosquittoOptions, f: &BrokerFiles) -> anyhow::Result<String> {
    let mut conf = format!(
        "# Written by `gatewarden pki mosquitto-conf`: TLS only, client certificates required and\n\
         # checked against the fleet's revocation list (crlfile: after `gatewarden pki revoke`, re-run\n\
         # mosquitto-conf and restart Mosquitto), the certificate subject (CN and role) is the MQTT\n\
         # user, and the ACL gives each role only its own topics.\n\
         # Listener-scoped settings must follow the `listener` line, or Mosquitto opens\n\
         # an unencrypted default listener on 1883 for them.\n\
         per_listener_settings false\n\
         allow_anonymous false\n\
         acl_file {acl}\n\
         listener {port} {bind}\n\
         protocol mqtt\n\
         use_subject_as_username true\n\
         # The client id is the certificate subject too, not what the client says: otherwise\n\
         # any certificate could connect as another node's id and the broker would drop that\n\
         # node to hand the session over (a stolen router could keep the detector off the bus).\n\
         use_username_as_clientid true\n\
         cafile {ca}\n\
         crlfile {crl}\n\
         certfile {crt}\n\
         keyfile {key}\n\
         require_certificate true\n\
         tls_version tlsv1.2\n\
         max_queued_messages 100000\n\
         # A session nobody resumes for a week goes, with what it queued: a retired node's, or\n\
         # one kept under a client id from before use_username_as_clientid. A node back later\n\
         # subscribes again on connecting, and its peers resend what it did not acknowledge.\n\
         persistent_client_expiration 7d\n\
         max_inflight_messages 64\n\
         # Verdicts are small: send them now, not after Nagle's delay.\n\
         set_tcp_nodelay true\n",
        acl = f.acl.display(),
        port = opts.port,
        bind = opts.bind,
        ca = f.ca.display(),
        crl = f.crl.display(),
        crt = f.crt.display(),
        key = f.key.display(),
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

/// Why a certificate was revoked (the CRL's reason code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum RevokeReason {
    /// The node's key was stolen or may have been (the default: when in doubt, assume the worst).
    KeyCompromise,
    /// The node left the fleet for good.
    CessationOfOperation,
    /// Replaced by a new certificate (e.g. the node got another role).
    Superseded,
    /// The holder's role or owner changed.
    AffiliationChanged,
    /// No reason given.
    Unspecified,
}

impl RevokeReason {
    fn code(self) -> RevocationReason {
        match self {
            RevokeReason::KeyCompromise => RevocationReason::KeyCompromise,
            RevokeReason::CessationOfOperation => RevocationReason::CessationOfOperation,
            RevokeReason::Superseded => RevocationReason::Superseded,
            RevokeReason::AffiliationChanged => RevocationReason::AffiliationChanged,
            RevokeReason::Unspecified => RevocationReason::Unspecified,
        }
    }
}

/// One revoked certificate, as `revoked.json` (and `pki list`) shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedCert {
    /// The certificate's CN.
    pub node: String,
    /// Its role (OU).
    pub role: String,
    /// Its serial, hex.
    pub serial: String,
    /// Why.
    pub reason: RevokeReason,
    /// When, Unix seconds.
    pub revoked_at: u64,
}

fn read_ledger(dir: &Path) -> anyhow::Result<Vec<RevokedCert>> {
    let path = PkiDir(dir.to_path_buf()).revoked_ledger();
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("{} is not a revocation ledger; restore it from a backup", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Signs and writes `ca.crl` listing `revoked` (and `revoked.json`).
fn write_crl(dir: &Path, revoked: &[RevokedCert]) -> anyhow::Result<()> {
    let pki = PkiDir(dir.to_path_buf());
    let issuer = load_issuer(dir)?;
    let now = time::OffsetDateTime::now_utc();
    let revoked_certs = revoked
        .iter()
        .map(|r| {
            Ok(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&hex_bytes(&r.serial)?),
                revocation_time: time::OffsetDateTime::from_unix_timestamp(r.revoked_at as i64).unwrap_or(now),
                reason_code: Some(r.reason.code()),
                invalidity_date: None,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let params = CertificateRevocationListParams {
        this_update: now - time::Duration::hours(1),
        next_update: now + time::Duration::days(CRL_DAYS as i64),
        // Increases with every list this CA writes.
        crl_number: SerialNumber::from(now.unix_timestamp().max(1) as u64),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let crl = params.signed_by(&issuer).context("signing the revocation list")?;
    write_file(&pki.revoked_ledger(), &(serde_json::to_string_pretty(revoked)? + "\n"), false)?;
    write_file(&pki.crl(), &crl.pem().context("encoding the revocation list")?, false)
}

fn cert_files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "crt")
                && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    v.sort();
    v
}

/// Revokes every certificate issued to `node_id` (the current one and any it
/// superseded): they go into `ca.crl` and move to `revoked/`, the node's key
/// is deleted. Returns what was revoked.
///
/// Then re-run `pki mosquitto-conf` and restart Mosquitto (the broker refuses
/// them in the TLS handshake), and give nodes the new `ca.crl` (`pki bundle`,
/// read at start) so they refuse the holder's envelopes and `ctl` handshakes.
pub fn revoke(dir: &Path, node_id: &str, reason: RevokeReason) -> anyhow::Result<Vec<RevokedCert>> {
    let pki = PkiDir(dir.to_path_buf());
    let ca = CaVerifier::from_der(
        &read_cert_der(&pki.ca_cert())
            .with_context(|| format!("run `gatewarden pki init --dir {}` first", dir.display()))?,
    )?;
    if !valid_node_id(node_id) {
        bail!("{node_id:?} is not a node id (1 to 64 characters of A-Z, a-z, 0-9, '-' or '_')");
    }
    if node_id == BROKER_ID {
        bail!("{BROKER_ID} is the broker's own certificate: re-run `gatewarden pki mosquitto-conf` to replace it");
    }
    let mut files: Vec<PathBuf> = cert_files(&pki.superseded_dir(), &format!("{node_id}-"));
    if pki.node_cert(node_id).exists() {
        files.push(pki.node_cert(node_id));
    }
    let mut ledger = read_ledger(dir)?;
    if files.is_empty() {
        if ledger.iter().any(|r| r.node == node_id) {
            bail!("every certificate of {node_id} is already revoked (`gatewarden pki list --dir {}`)", dir.display());
        }
        bail!(
            "no certificate was issued to {node_id:?} in {}; `gatewarden pki list --dir {}` shows the node ids",
            dir.join("nodes").display(),
            dir.display()
        );
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut added = Vec::new();
    for f in &files {
        let der = read_cert_der(f)?;
        let cert = parse_cert(&der).with_context(|| f.display().to_string())?;
        if cert.issuer().as_raw() != ca.subject() {
            tracing::warn!(path = %f.display(), "not issued by this CA; left alone");
            continue;
        }
        let serial = serial_hex(cert.raw_serial());
        let role =
            cert.subject().iter_organizational_unit().next().and_then(|a| a.as_str().ok()).unwrap_or("?").to_string();
        if !ledger.iter().any(|r| r.serial == serial) {
            let r = RevokedCert { node: node_id.to_string(), role, serial: serial.clone(), reason, revoked_at: now };
            ledger.push(r.clone());
            added.push(r);
        }
    }
    write_crl(dir, &ledger)?;
    std::fs::create_dir_all(pki.revoked_dir()).with_context(|| format!("creating {}", pki.revoked_dir().display()))?;
    for f in &files {
        let der = read_cert_der(f)?;
        let serial = parse_cert(&der).map(|c| serial_hex(c.raw_serial())).unwrap_or_default();
        let dest = pki.revoked_dir().join(format!("{node_id}-{serial}.crt"));
        std::fs::rename(f, &dest).with_context(|| format!("moving {} to {}", f.display(), dest.display()))?;
    }
    let _ = std::fs::remove_file(pki.node_key(node_id));
    Ok(added)
}

/// One certificate in [`list`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertListing {
    /// CN.
    pub node: String,
    /// OU.
    pub role: String,
    /// Serial, hex.
    pub serial: String,
    /// Last day of validity (RFC 2822-ish, as x509-parser prints it).
    pub not_after: String,
    /// `valid`, `superseded` (a later certificate has this id; still valid until revoked or expired), `expired` or `revoked`.
    pub state: &'static str,
}

/// Every certificate the CA directory knows: issued, superseded, revoked.
pub fn list(dir: &Path) -> anyhow::Result<Vec<CertListing>> {
    let pki = PkiDir(dir.to_path_buf());
    let ledger = read_ledger(dir)?;
    let mut out = Vec::new();
    for (d, state) in
        [(dir.join("nodes"), "valid"), (pki.superseded_dir(), "superseded"), (pki.revoked_dir(), "revoked")]
    {
        for f in cert_files(&d, "") {
            let Ok(der) = read_cert_der(&f) else { continue };
            let Ok(cert) = parse_cert(&der) else { continue };
            let field = |it: Option<&x509_parser::x509::AttributeTypeAndValue<'_>>| {
                it.and_then(|a| a.as_str().ok()).unwrap_or("?").to_string()
            };
            let node = field(cert.subject().iter_common_name().next());
            if node == BROKER_ID {
                continue;
            }
            let serial = serial_hex(cert.raw_serial());
            let state = if ledger.iter().any(|r| r.serial == serial) {
                "revoked"
            } else if !cert.validity().is_valid() {
                "expired"
            } else {
                state
            };
            out.push(CertListing {
                node,
                role: field(cert.subject().iter_organizational_unit().next()),
                serial,
                not_after: cert.validity().not_after.to_string(),
                state,
            });
        }
    }
    out.sort_by(|a, b| (&a.node, a.state).cmp(&(&b.node, b.state)));
    Ok(out)
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
    // Read by CaVerifier::load beside ca.crt: the node refuses revoked peers.
    if pki.crl().exists() {
        put("gatewarden/pki/ca.crl", &read(&pki.crl())?, false)?;
    }
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
        let files = BrokerFiles {
            acl: on_node.join("acl"),
            ca: on_node.join("ca.crt"),
            crl: on_node.join("ca.crl"),
            crt: on_node.join("broker.crt"),
            key: on_node.join("broker.key"),
        };
        let mut conf = render_mosquitto_conf(&mopts, &files)?;
        conf.push_str("log_dest syslog\nlog_type error\nlog_type warning\nlog_type notice\n");
        put("mosquitto/mosquitto.conf", &conf, false)?;
        written.extend(["acl", "ca.crl", "broker.crt", "broker.key"].iter().map(|f| tls.join(f)));
    }
    Ok(written)
}

/// A throwaway fleet CA for unit tests of the control socket and the bus.
#[cfg(test)]
pub(crate) mod test_fleet {
    use super::{CaVerifier, CertRole, Identity};

    pub(crate) struct Fleet {
        pub dir: tempfile::TempDir,
        pub ca: CaVerifier,
    }

    impl Fleet {
        pub(crate) fn new() -> Fleet {
            let dir = tempfile::tempdir().unwrap();
            super::init(dir.path(), 30, false).unwrap();
            let ca = CaVerifier::load(&super::PkiDir(dir.path().into()).ca_cert()).unwrap();
            Fleet { dir, ca }
        }
        pub(crate) fn identity(&self, node: &str, role: CertRole) -> Identity {
            let (c, k) = super::issue(self.dir.path(), node, role, &[], 30).unwrap();
            Identity::load(&c, &k, &self.ca).unwrap()
        }
    }
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
        assert!(std::fs::read_to_string(m.join("tls/acl")).unwrap().contains("user OU=router,CN=gw-router"));
        assert!(conf.contains("crlfile /etc/mosquitto/tls/ca.crl") && m.join("tls/ca.crl").exists(), "{conf}");
        assert!(etc.join("gatewarden/pki/ca.crl").exists(), "nodes get the revocation list");
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

    /// Broker options with nothing but the output folder set.
    fn plain_options(out: PathBuf) -> MosquittoOptions {
        MosquittoOptions {
            out,
            port: 8883,
            bind: "0.0.0.0".into(),
            names: vec![],
            run_as: None,
            persistence_dir: None,
            log: None,
        }
    }

    #[test]
    fn mosquitto_acl_gives_each_role_only_its_topics() {
        let d = tempfile::tempdir().unwrap();
        init(d.path(), 30, false).unwrap();
        issue(d.path(), "r1", CertRole::Router, &[], 30).unwrap();
        issue(d.path(), "d1", CertRole::Detector, &[], 30).unwrap();
        let out = d.path().join("mq");
        let opts = plain_options(out.clone());
        let conf = std::fs::read_to_string(mosquitto_conf(d.path(), &opts).unwrap()).unwrap();
        for line in [
            "require_certificate true",
            "use_subject_as_username true",
            "use_username_as_clientid true",
            "persistent_client_expiration 7d",
            "allow_anonymous false",
            "listener 8883",
            "crlfile /",
        ] {
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
            let role = if user.starts_with('r') { CertRole::Router } else { CertRole::Detector };
            let start = acl.find(&format!("user {}\n", broker_username(user, role))).unwrap();
            let rest = &acl[start..];
            rest[..rest[1..].find("\n#").map(|i| i + 1).unwrap_or(rest.len())].to_string()
        };
        assert!(block("r1").contains("topic write gatewarden/v1/r1/flow_batch"));
        let r1 = block("r1");
        // A router answers verdicts (`verdict_outcome`) but never issues one.
        assert!(!r1.lines().any(|l| l.starts_with("topic write") && l.ends_with("/verdict")), "{r1}");
        assert!(r1.contains("topic write gatewarden/v1/r1/verdict_outcome"), "{r1}");
        assert!(r1.contains("topic read gatewarden/v1/+/verdict"), "{r1}");
        assert!(block("d1").contains("topic write gatewarden/v1/d1/verdict"));
        assert!(!acl.contains("CN=gatewarden-broker"), "the broker gets no topics");
    }

    #[test]
    fn an_integration_certificate_reads_only_the_json_mirror_discovery_and_status() {
        let d = tempfile::tempdir().unwrap();
        init(d.path(), 30, false).unwrap();
        issue(d.path(), "ha", CertRole::Integration, &[], 30).unwrap();
        issue(d.path(), "gw", CertRole::Router, &[], 30).unwrap();
        let out = d.path().join("mq");
        mosquitto_conf(d.path(), &plain_options(out.clone())).unwrap();
        let acl = std::fs::read_to_string(out.join("acl")).unwrap();
        let start = acl.find("user OU=integration,CN=ha\n").expect("an integration block");
        let rest = &acl[start..];
        let block: Vec<&str> = rest[..rest[1..].find("\n#").map(|i| i + 1).unwrap_or(rest.len())]
            .lines()
            .filter(|l| l.starts_with("topic"))
            .collect();
        assert_eq!(
            block,
            ["topic read gatewarden/v1/+/status", "topic read gatewarden/v1/+/json/#", "topic read homeassistant/#"],
            "{acl}"
        );
        // The all-in-one gateway (router certificate) writes its own mirror and discovery configs only.
        assert!(acl.contains("topic write gatewarden/v1/gw/json/alert\n"), "{acl}");
        assert!(acl.contains("topic write homeassistant/sensor/gatewarden_gw/+/config\n"), "{acl}");
        assert!(!acl.contains("topic write gatewarden/v1/+/json"), "{acl}");
    }

    #[test]
    fn a_revoked_certificate_fails_verification_and_leaves_the_acl() {
        let d = tempfile::tempdir().unwrap();
        let pki = PkiDir(d.path().into());
        init(d.path(), 30, false).unwrap();
        issue(d.path(), "r1", CertRole::Router, &[], 30).unwrap();
        issue(d.path(), "r2", CertRole::Router, &[], 30).unwrap();
        let r1 = read_cert_der(&pki.node_cert("r1")).unwrap();
        // Re-issued with another role: the first certificate is superseded, not gone.
        issue(d.path(), "r1", CertRole::Detector, &[], 30).unwrap();
        let r1b = read_cert_der(&pki.node_cert("r1")).unwrap();
        let states: Vec<_> = list(d.path()).unwrap().into_iter().map(|c| (c.node, c.role, c.state)).collect();
        assert!(states.contains(&("r1".into(), "router".into(), "superseded")), "{states:?}");
        assert_eq!(CaVerifier::load(&pki.ca_cert()).unwrap().revoked_count(), 0, "init writes an empty list");

        let done = revoke(d.path(), "r1", RevokeReason::KeyCompromise).unwrap();
        assert_eq!(done.len(), 2, "every certificate of r1: {done:?}");
        let ca = CaVerifier::load(&pki.ca_cert()).unwrap();
        for der in [&r1, &r1b] {
            let e = ca.verify(der).unwrap_err();
            let r = e.downcast_ref::<CertRevoked>().expect("a CertRevoked error");
            assert_eq!(r.node, "r1");
        }
        assert!(ca.verify(&read_cert_der(&pki.node_cert("r2")).unwrap()).is_ok(), "others unaffected");
        assert!(!pki.node_key("r1").exists() && !pki.node_cert("r1").exists());
        let e = format!("{:#}", revoke(d.path(), "r1", RevokeReason::KeyCompromise).unwrap_err());
        assert!(e.contains("already revoked"), "{e}");
        let e = format!("{:#}", revoke(d.path(), "nobody", RevokeReason::KeyCompromise).unwrap_err());
        assert!(e.contains("pki list"), "{e}");

        let out = d.path().join("mq");
        let opts = plain_options(out.clone());
        mosquitto_conf(d.path(), &opts).unwrap();
        let acl = std::fs::read_to_string(out.join("acl")).unwrap();
        assert!(!acl.contains("CN=r1") && acl.contains("user OU=router,CN=r2"), "{acl}");
        assert_eq!(std::fs::read(out.join("ca.crl")).unwrap(), std::fs::read(pki.crl()).unwrap());

        // A list signed by another CA is refused loudly, not ignored.
        let other = tempfile::tempdir().unwrap();
        init(other.path(), 30, false).unwrap();
        std::fs::copy(PkiDir(other.path().into()).crl(), pki.crl()).unwrap();
        let e = format!("{:#}", CaVerifier::load(&pki.ca_cert()).unwrap_err());
        assert!(e.contains("does not verify against the CA") && e.contains("pki revoke"), "{e}");
    }
}
