//! Wire types of the secure channel: the signed key announcement and the
//! sealed envelope. Decoding checks a version byte, a size limit and trailing
//! bytes, and never panics (`fuzz/fuzz_targets/envelope_decode.rs`).

use serde::{Deserialize, Serialize};

/// Format version of announcements and envelopes.
pub const SECURE_VERSION: u8 = 1;

/// Largest announcement or envelope accepted; bigger input is refused before decoding.
pub const MAX_SECURE_BYTES: usize = 1024 * 1024 + 4096;

/// Domain separation for what an identity key signs.
pub const ANNOUNCE_DOMAIN: &[u8] = b"gatewarden/v1/announce\0";
/// Domain separation for envelope signatures.
pub const ENVELOPE_DOMAIN: &[u8] = b"gatewarden/v1/envelope\0";

/// "My current ephemeral key is this", signed with the node's identity key and
/// carrying the certificate that vouches for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announce {
    /// Sender node id (must equal the certificate's CN).
    pub node: String,
    /// The sender's certificate, DER, checked against the fleet CA.
    pub cert_der: Vec<u8>,
    /// Random id of the ephemeral key, referenced by envelopes.
    pub ek_id: u64,
    /// Ephemeral P-384 public key, SEC1 uncompressed (97 bytes).
    pub ek_pub: Vec<u8>,
    /// When the key was made, ns since the epoch; a peer keeps the newest.
    pub issued_ns: u64,
    /// ECDSA P-384/SHA-384 over [`ANNOUNCE_DOMAIN`] and the fields above, r‖s (96 bytes).
    pub signature: Vec<u8>,
}

impl Announce {
    /// The bytes the signature covers.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut out = ANNOUNCE_DOMAIN.to_vec();
        let fields = (&self.node, &self.cert_der, self.ek_id, &self.ek_pub, self.issued_ns);
        out.extend(postcard::to_allocvec(&fields).expect("announce fields are encodable"));
        out
    }
}

/// What the sealed plaintext is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PayloadKind {
    /// A [`gatewarden_proto::messages::Message`] (version byte + postcard).
    Message,
    /// A `gatewarden ctl` request.
    ControlRequest,
    /// The node's answer to a control request.
    ControlResponse,
}

/// The authenticated, unencrypted part of an envelope (AES-GCM associated data).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeHeader {
    /// Sending node id.
    pub sender: String,
    /// Node id the envelope is sealed to.
    pub recipient: String,
    /// The sender's ephemeral key id.
    pub sender_ek: u64,
    /// The recipient's ephemeral key id.
    pub recipient_ek: u64,
    /// Per sender-key sequence number; also the AES-GCM nonce.
    pub seq: u64,
    /// Seal time, ns since the epoch (replay window).
    pub ts_ns: u64,
    /// Message id for de-duplication across retries (stays the same when re-sealed).
    pub msg_id: u64,
    /// What the plaintext is.
    pub kind: PayloadKind,
}

/// A signed and encrypted message for one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Routing, keys, replay data.
    pub header: EnvelopeHeader,
    /// AES-256-GCM ciphertext with its 16-byte tag.
    pub ciphertext: Vec<u8>,
    /// ECDSA P-384/SHA-384 by the sender's identity key over [`ENVELOPE_DOMAIN`], header and ciphertext, r‖s.
    pub signature: Vec<u8>,
}

impl Envelope {
    /// The associated data: version byte + postcard header.
    pub fn aad(header: &EnvelopeHeader) -> Vec<u8> {
        let mut out = vec![SECURE_VERSION];
        out.extend(postcard::to_allocvec(header).expect("headers are encodable"));
        out
    }

    /// The bytes the signature covers.
    pub fn signed_bytes(header: &EnvelopeHeader, ciphertext: &[u8]) -> Vec<u8> {
        let mut out = ENVELOPE_DOMAIN.to_vec();
        out.extend(Envelope::aad(header));
        out.extend_from_slice(&(ciphertext.len() as u64).to_be_bytes());
        out.extend_from_slice(ciphertext);
        out
    }
}

/// Why bytes are not an announcement or envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecureDecodeError {
    /// Zero bytes.
    #[error("empty")]
    Empty,
    /// Over [`MAX_SECURE_BYTES`].
    #[error("{0} bytes exceed the {MAX_SECURE_BYTES}-byte limit")]
    TooLarge(usize),
    /// Another version.
    #[error("secure format version {0}, this build speaks {SECURE_VERSION}: upgrade the older node")]
    Version(u8),
    /// Not valid postcard.
    #[error("malformed: {0}")]
    Malformed(String),
    /// Junk after the value.
    #[error("{0} unexpected trailing bytes")]
    Trailing(usize),
}

/// Encodes with the version byte.
pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = vec![SECURE_VERSION];
    out.extend(postcard::to_allocvec(v).expect("secure types are encodable"));
    out
}

/// Decodes with every check; never panics.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, SecureDecodeError> {
    if bytes.len() > MAX_SECURE_BYTES {
        return Err(SecureDecodeError::TooLarge(bytes.len()));
    }
    let (&v, body) = bytes.split_first().ok_or(SecureDecodeError::Empty)?;
    if v != SECURE_VERSION {
        return Err(SecureDecodeError::Version(v));
    }
    let (value, rest) =
        postcard::take_from_bytes::<T>(body).map_err(|e| SecureDecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(SecureDecodeError::Trailing(rest.len()));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Envelope {
        Envelope {
            header: EnvelopeHeader {
                sender: "d".into(),
                recipient: "r".into(),
                sender_ek: 1,
                recipient_ek: 2,
                seq: 3,
                ts_ns: 4,
                msg_id: 5,
                kind: PayloadKind::Message,
            },
            ciphertext: vec![1; 40],
            signature: vec![2; 96],
        }
    }

    #[test]
    fn round_trips_and_rejects_truncation_and_trailing_bytes() {
        let bytes = encode(&sample());
        assert_eq!(decode::<Envelope>(&bytes).unwrap(), sample());
        for cut in 0..bytes.len() {
            assert!(decode::<Envelope>(&bytes[..cut]).is_err());
        }
        let mut more = bytes.clone();
        more.push(0);
        assert_eq!(decode::<Envelope>(&more), Err(SecureDecodeError::Trailing(1)));
        let mut v2 = bytes;
        v2[0] = 9;
        assert_eq!(decode::<Envelope>(&v2), Err(SecureDecodeError::Version(9)));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode::<Envelope>(&bytes);
            let _ = decode::<Announce>(&bytes);
        }
    }
}
