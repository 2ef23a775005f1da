//! Any frame on the wire, on any link type, must parse or be skipped with a reason.
#![no_main]

use gatewarden::capture::{Frame, LinkType};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let link = match data[0] % 4 {
        0 => LinkType::Ethernet,
        1 => LinkType::RawIp,
        2 => LinkType::LinuxSll,
        _ => LinkType::Null,
    };
    let frame = Frame { ts_ns: 1, link, data: &data[1..], orig_len: data.len() as u32 };
    if let Ok(p) = gatewarden::packet::parse(&frame) {
        assert!(p.payload_len <= p.ip_len.max(65535));
    }
});
