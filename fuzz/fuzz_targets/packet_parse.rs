//! Any frame on the wire, on any link type, must parse or be skipped with a
//! reason, the same result from the hand parser as from etherparse; a
//! fragment's bytes must go through the fragment table without a panic; an ARP or neighbour-discovery frame must be read or refused
//! (truncated, wrong hardware/protocol lengths, probes, gratuitous ARP, DAD)
//! and fed to the router's bounded LAN watch without a panic.
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
    let parsed = gatewarden::packet::parse(&frame);
    assert_eq!(parsed, gatewarden::packet::parse_with_etherparse(&frame), "the hand parser and etherparse disagree");
    if let Ok(p) = &parsed {
        assert!(p.payload_len <= p.ip_len.max(65535));
        if let Some(f) = p.fragment {
            // A fragment's bytes go to the fragment table, twice (a
            // duplicate): ports or none, never a panic, and a later
            // fragment's copy stays marked unless it completed the header
            // (a second first fragment starts a new datagram).
            let data = gatewarden::packet::fragment_data(&frame).expect("a fragment has its data");
            let mut heads = gatewarden::flow::fragments::FragmentHeads::new();
            let (mut a, mut b) = (*p, *p);
            heads.resolve(&mut a, data);
            heads.resolve(&mut b, data);
            if f.offset != 0 {
                assert!(b.fragment.is_some() || a.fragment.is_some(), "a header completes once");
            }
            assert!(a.payload_len <= p.payload_len && b.payload_len <= p.payload_len);
        }
    }
    if let Some(n) = gatewarden::packet::neighbour(&frame) {
        // Only ARP (not IP) and NS/NA (ICMPv6 135/136) are neighbour frames.
        match parsed {
            Err(gatewarden::packet::SkipReason::NotIp) => assert!(n.sender.is_ipv4() && n.target.is_ipv4()),
            Ok(p) => assert!(gatewarden::packet::is_neighbour_discovery(&p) && n.target.is_ipv6()),
            Err(other) => panic!("neighbour frame skipped as {other:?}"),
        }
        let mut watch = gatewarden::flow::lan::LanWatch::new();
        watch.observe(&n);
        watch.observe(&n);
        assert!(watch.take().len() <= 1);
    }
});
