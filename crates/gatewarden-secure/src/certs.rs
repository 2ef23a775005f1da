//! Certificate checks without a TLS stack: who a peer's certificate says it
//! is (checked against the fleet CA and its revocation list), this node's
//! own identity (certificate + signing key), and ECDSA P-384 verification.
//! Issuing certificates is fleet administration and lives in the binary
//! (`gatewarden pki`).

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use p384::ecdsa::{Signature, SigningKey, VerifyingKey};
use p384::pkcs8::DecodePrivateKey;

use gatewarden_core::identity::valid_node_id;

pub use gatewarden_core::identity::CertRole;

/// A serial as lowercase hex without leading zero bytes (how the ledger and messages name it).
pub fn serial_hex(raw: &[u8]) -> String {
    let start = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
    let hex: String = raw[start..].iter().map(|b| format!("{b:02x}")).collect();
    if hex.is_empty() {
        "00".into()
    } else {
        hex
    }
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
    /// The certificate's serial (hex, [`serial_hex`]), to drop it when a new revocation list names it.
    pub serial: String,
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
    /// Serials (hex, [`serial_hex`]) the CA's revocation list names.
    revoked: Arc<HashSet<String>>,
}

/// [`CaVerifier::verify`]'s error for a certificate the CA revoked
/// (`pki revoke`); the secure channel counts it as `revoked`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("certificate of {node} (serial {serial}) is revoked by the fleet CA (ca.crl); issue a new one with `gatewarden pki issue`")]
pub struct CertRevoked {
    /// The certificate's CN.
    pub node: String,
    /// Its serial, hex.
    pub serial: String,
}

/// Parses one DER certificate (nothing may follow it).
pub fn parse_cert(der: &[u8]) -> anyhow::Result<x509_parser::certificate::X509Certificate<'_>> {
    use x509_parser::prelude::FromDer;
    let (rest, cert) = x509_parser::certificate::X509Certificate::from_der(der)
        .map_err(|e| anyhow::anyhow!("not a certificate: {e}"))?;
    if !rest.is_empty() {
        bail!("{} bytes after the certificate", rest.len());
    }
    Ok(cert)
}

impl CaVerifier {
    /// The CA's subject (DER), which every certificate it issued names as issuer.
    pub fn subject(&self) -> &[u8] {
        &self.subject
    }

    /// From the CA certificate (DER).
    pub fn from_der(der: &[u8]) -> anyhow::Result<CaVerifier> {
        let cert = parse_cert(der)?;
        let key = VerifyingKey::from_sec1_bytes(&cert.public_key().subject_public_key.data)
            .map_err(|_| anyhow::anyhow!("the CA key is not a P-384 key: make the CA with `gatewarden pki init`"))?;
        let key_sec1 = key.to_encoded_point(false).as_bytes().to_vec();
        Ok(CaVerifier { key_sec1, subject: cert.subject().as_raw().to_vec(), revoked: Arc::default() })
    }

    /// From the CA certificate file (PEM), plus the revocation list `ca.crl`
    /// beside it if there is one (a node's bundle carries it).
    ///
    /// A `ca.crl` that is not the CA's own is an error, not ignored: a node
    /// that silently trusted revoked certificates would be worse than one that
    /// does not start and says why.
    pub fn load(path: &Path) -> anyhow::Result<CaVerifier> {
        let ca = CaVerifier::from_der(&read_cert_der(path)?)?;
        let crl = path.with_file_name("ca.crl");
        if !crl.exists() {
            return Ok(ca);
        }
        ca.with_crl_file(&crl)
    }

    /// Adds the serials a CRL file (PEM) lists, after checking it is signed by this CA.
    pub fn with_crl_file(self, path: &Path) -> anyhow::Result<CaVerifier> {
        use rustls_pki_types::pem::PemObject;
        let der = rustls_pki_types::CertificateRevocationListDer::from_pem_file(path)
            .with_context(|| format!("reading the revocation list {} (PEM)", path.display()))?;
        self.with_crl_der(&der).with_context(|| {
            format!("{}: re-create it with `gatewarden pki revoke` on the CA's directory, or remove it", path.display())
        })
    }

    /// Adds the serials a CRL (DER) lists, after checking it is signed by this CA.
    pub fn with_crl_der(mut self, der: &[u8]) -> anyhow::Result<CaVerifier> {
        use x509_parser::prelude::FromDer;
        let (rest, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(der)
            .map_err(|e| anyhow::anyhow!("not a revocation list: {e}"))?;
        if !rest.is_empty() {
            bail!("{} bytes after the revocation list", rest.len());
        }
        if crl.issuer().as_raw() != self.subject.as_slice() {
            bail!("revocation list issued by {}, not by this fleet's CA", crl.issuer());
        }
        let ca_key =
            ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P384_SHA384_ASN1, &self.key_sec1[..]);
        ca_key
            .verify(crl.tbs_cert_list.as_ref(), &crl.signature_value.data)
            .map_err(|_| anyhow::anyhow!("revocation list signature does not verify against the CA"))?;
        let mut set = (*self.revoked).clone();
        set.extend(crl.iter_revoked_certificates().map(|r| serial_hex(r.raw_serial())));
        self.revoked = Arc::new(set);
        Ok(self)
    }

    /// Whether the loaded revocation list names `serial` (hex, [`serial_hex`]).
    pub fn is_revoked(&self, serial: &str) -> bool {
        self.revoked.contains(serial)
    }

    /// How many serials the loaded revocation list names.
    pub fn revoked_count(&self) -> usize {
        self.revoked.len()
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
        let serial = serial_hex(cert.raw_serial());
        if self.revoked.contains(&serial) {
            let node = cert.subject().iter_common_name().next().and_then(|a| a.as_str().ok()).unwrap_or("?");
            // Names only what the CA signed; the caller prints it, so keep it short and printable.
            let node: String = node.chars().take(64).filter(|c| !c.is_control()).collect();
            return Err(CertRevoked { node, serial }.into());
        }
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
        Ok(PeerCert { node, role, key, key_sec1, serial })
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
