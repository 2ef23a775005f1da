//! Any bytes a client can send, as one connection, through the real server:
//! hyper's parser with the configured limits, the Host check, the route
//! table, token and body checks, and the handlers reachable without a token
//! (public reads on). The answer must come without a panic, and every answer
//! must be a well-formed HTTP/1.1 response carrying the security headers.
#![no_main]

use std::sync::{Arc, OnceLock};

use gatewarden::monitor::http::Harness;
use gatewarden::monitor::MonitorState;
use gatewarden_proto::role::{Role, RoleSource};
use libfuzzer_sys::fuzz_target;

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let state =
            MonitorState::new(Role::Monitor, RoleSource::Flag, "mon".into(), gatewarden_core::metrics::Registry::new());
        Harness::new(Arc::clone(&state)).expect("harness")
    })
}

fuzz_target!(|data: &[u8]| {
    let out = harness().exchange(data);
    if !out.is_empty() {
        // HTTP/1.0 requests are answered as HTTP/1.0.
        assert!(
            out.starts_with(b"HTTP/1.1 ") || out.starts_with(b"HTTP/1.0 "),
            "not a response: {:?}",
            String::from_utf8_lossy(&out[..out.len().min(200)])
        );
    }
});
