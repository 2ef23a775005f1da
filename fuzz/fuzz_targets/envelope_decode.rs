//! Bytes from the bus or a ctl connection must be refused or accepted by the
//! secure channel, never panic: envelope, announcement and frame decoding,
//! then the whole `open` / `accept_announce` path (certificate parsing and
//! checks included) of a real channel. Whatever decodes re-encodes identically.
#![no_main]

use std::sync::{Mutex, OnceLock};

use gatewarden::bus::mqtt::{AckBatch, Frame};
use gatewarden_core::metrics::Registry;
use gatewarden::pki::{self, CaVerifier, CertRole, Identity};
use gatewarden::secure::envelope::{decode, encode};
use gatewarden::secure::{Announce, Envelope, SecureChannel, SecureConfig};
use libfuzzer_sys::fuzz_target;

fn channel() -> &'static Mutex<SecureChannel> {
    static C: OnceLock<Mutex<SecureChannel>> = OnceLock::new();
    C.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("gatewarden-fuzz-pki-{}", std::process::id()));
        pki::init(&dir, 30, true).expect("pki init");
        let (c, k) = pki::issue(&dir, "router-1", CertRole::Router, &[], 30).expect("issue");
        let ca = CaVerifier::load(&pki::PkiDir(dir.clone()).ca_cert()).expect("ca");
        let id = Identity::load(&c, &k, &ca).expect("identity");
        // No announcement budget: a fuzzer's inputs would otherwise be refused
        // as `key_flood` after the first few and never reach certificate parsing.
        let cfg = SecureConfig { announce_refill: std::time::Duration::ZERO, ..SecureConfig::default() };
        Mutex::new(SecureChannel::new(id, ca, cfg, &Registry::new()))
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = decode::<Envelope>(data) {
        assert_eq!(decode::<Envelope>(&encode(&e)).as_ref(), Ok(&e));
    }
    if let Ok(a) = decode::<Announce>(data) {
        assert_eq!(decode::<Announce>(&encode(&a)).as_ref(), Ok(&a));
    }
    if let Ok(f) = decode::<Frame>(data) {
        assert_eq!(decode::<Frame>(&encode(&f)).as_ref(), Ok(&f));
    }
    let _ = postcard::from_bytes::<AckBatch>(data);
    let mut c = channel().lock().unwrap_or_else(|e| e.into_inner());
    let _ = c.open(data, gatewarden::secure::now_ns());
    let _ = c.accept_announce(data, None);
});
