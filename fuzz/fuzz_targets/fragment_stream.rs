//! A stream of raw IP frames through one fragment table and one small flow
//! table, as the router feeds them: fragments of many datagrams, reused
//! ids, out of order, overlapping, stale and evicting each other. Nothing
//! may panic, the tables stay within their bounds, and a fragment counted
//! without ports is one the table saw.
//!
//! Input: records of [time step (1 byte, in 100 ms)][length (1 byte)][frame bytes].
#![no_main]

use gatewarden::capture::{Frame, LinkType};
use gatewarden::flow::fragments::FragmentHeads;
use gatewarden::flow::FlowTable;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut heads = FragmentHeads::new();
    let mut table = FlowTable::new(64, 60, 300);
    let (mut rest, mut ts) = (data, 1u64);
    while rest.len() >= 2 {
        ts += u64::from(rest[0]) * 100_000_000;
        let len = usize::from(rest[1]).min(rest.len() - 2);
        let bytes = &rest[2..2 + len];
        rest = &rest[2 + len..];
        let frame = Frame { ts_ns: ts, link: LinkType::RawIp, data: bytes, orig_len: bytes.len() as u32 };
        let Ok(mut p) = gatewarden::packet::parse(&frame) else { continue };
        let was_fragment = p.fragment.is_some();
        if was_fragment {
            heads.resolve(&mut p, gatewarden::packet::fragment_data(&frame).expect("a fragment has its data"));
        }
        assert!(p.fragment.is_none() || was_fragment, "only a fragment stays marked");
        assert!(p.payload_len <= p.ip_len.max(65535));
        table.observe(&p);
        assert!(table.len() <= 64);
        assert!(heads.unmapped <= heads.fragments);
        let _ = table.take_exports();
    }
});
