//! Where an IP fragment finds its flow: the transport header of a
//! fragmented datagram is in its first fragments (all of it in the first,
//! for any sane sender; split over several for `nmap -f`, whose 8-byte
//! fragments put a TCP header's flags in the second). This keeps the first
//! 20 bytes of each recent datagram's transport, gathered from whichever
//! fragments carry them, so every fragment counts in the datagram's flow
//! (ports, and the TCP flags on the fragment that completes them) instead
//! of a port-less one, and a fragmented scan is seen as the scan it is.
//!
//! No payload is reassembled and nothing is buffered: a fragment is counted
//! when it arrives, with what is known by then. Memory is a fixed table
//! (direct-mapped by a keyed hash of source, destination, IPv4's protocol
//! and identification: IPv6 reassembles without the protocol, which only
//! its first fragment's header chain names, with how many bytes of
//! extension headers precede the transport); a newer datagram takes an
//! older one's slot, and a datagram whose header never completes (lost
//! pieces, a slot taken, a later fragment first) leaves its fragments
//! port-less, as before.

use std::hash::BuildHasher;

use crate::packet::{Fragment, PacketInfo};
use crate::table::addr_u128;

/// Slots in the table: 4 096 × 48 B = 192 KiB, fixed. A datagram's
/// fragments arrive within microseconds of each other, so a slot is needed
/// only that long. The table is shared: a fragment flood can take slots from
/// other datagrams, whose later fragments then count port-less, as every
/// fragment did before this table existed.
pub const SLOTS: usize = 4096;

/// A slot older than this no longer speaks for a datagram (IPv4
/// identifications repeat; reassembly timeouts are 30-60 s, fragments of
/// one datagram arrive far faster than this).
const MAX_AGE_NS: u64 = 2_000_000_000;

/// Bytes of transport header kept: a TCP header without options.
const HEAD: usize = 20;

#[derive(Clone, Copy, Default)]
struct Slot {
    /// A tag of (source, destination, IPv4's protocol, id); 0 for an empty slot.
    tag: u64,
    ts_ns: u64,
    head: [u8; HEAD],
    /// Bit i set: byte i of `head` is known.
    have: u32,
    /// Where the transport starts in the datagram's payload: IPv6 extension
    /// headers after the fragment header (from the first fragment), else 0.
    skip: u16,
    /// The datagram's transport protocol.
    proto: u8,
    /// The datagram's first fragment (offset 0) was seen.
    first_seen: bool,
}

/// What a datagram's transport needs known before its fragments get ports,
/// and before its header fields are read (TCP: through the flags byte).
fn needed(proto: u8) -> (u32, u32) {
    let bits = |n: u32| (1u32 << n) - 1;
    match proto {
        6 => (bits(4), bits(14)),
        17 => (bits(4), bits(8)),
        1 | 58 => (bits(2), bits(2)),
        _ => (0, 0),
    }
}

/// Recent fragmented datagrams' transport headers (see the module doc).
pub struct FragmentHeads {
    slots: Vec<Slot>,
    hasher: foldhash::fast::RandomState,
    /// Fragments seen.
    pub fragments: u64,
    /// Fragments counted without their datagram's ports (header not known).
    pub unmapped: u64,
}

impl Default for FragmentHeads {
    fn default() -> Self {
        FragmentHeads::new()
    }
}

impl FragmentHeads {
    /// An empty table of [`SLOTS`] slots.
    pub fn new() -> FragmentHeads {
        FragmentHeads {
            slots: vec![Slot::default(); SLOTS],
            hasher: foldhash::fast::RandomState::default(),
            fragments: 0,
            unmapped: 0,
        }
    }

    /// Gives the fragment `p` (with the bytes `data` it carries, from
    /// [`crate::packet::fragment_data`]) its datagram's ports, and, on the
    /// fragment that completes the header, its header fields, as an
    /// unfragmented packet would have them: that fragment loses its
    /// `fragment` mark, so TCP state counts it once. A packet that is not a
    /// fragment is left alone.
    pub fn resolve(&mut self, p: &mut PacketInfo, data: &[u8]) {
        let Some(Fragment { id, offset, headers, .. }) = p.fragment else { return };
        self.fragments += 1;
        let v6 = p.src.is_ipv6();
        let first = offset == 0;
        // IPv4 reassembles by (source, destination, protocol, id), IPv6 by
        // (source, destination, id): a later IPv6 fragment does not say
        // its transport, only the first fragment's header chain does.
        let key_proto = if v6 { 0 } else { p.proto };
        let tag = self.hasher.hash_one((addr_u128(p.src), addr_u128(p.dst), key_proto, id)) | 1;
        let slot = &mut self.slots[(tag >> 52) as usize % SLOTS];
        let fresh = slot.tag == tag && p.ts_ns.abs_diff(slot.ts_ns) <= MAX_AGE_NS;
        // The datagram's transport and where it starts in the payload.
        let (proto, skip) = if first {
            (p.proto, headers)
        } else if fresh {
            (slot.proto, slot.skip)
        } else if !v6 || matches!(p.proto, 6 | 17 | 58) {
            // IPv4, or an IPv6 fragment header naming the transport itself:
            // no extension header lies between, the transport starts at 0.
            (p.proto, 0)
        } else {
            // A later IPv6 fragment before its first, behind extension
            // headers of a length only the first fragment tells.
            self.unmapped += 1;
            return;
        };
        let (ports, fields) = needed(proto);
        if ports == 0 {
            // No transport header to find (GRE, ESP, …): nothing to map.
            return;
        }
        p.proto = proto;
        // This fragment's data in the transport's own offsets: `lead`
        // bytes of extension headers, then transport from `start` on.
        let pos = i64::from(offset) - i64::from(skip);
        let lead = usize::try_from(-pos).unwrap_or(0).min(data.len());
        let start = usize::try_from(pos).unwrap_or(0);
        let data = &data[lead..];
        if !first {
            p.payload_len = p.payload_len.saturating_sub(lead as u32);
        }
        // A fragment starting the datagram again is a new datagram reusing
        // the id (`hping3 -N 42 -f` gives every probe the same one): it must
        // not be taken for a duplicate of the first, or a whole scan
        // collapses into one probe. So the first copy of a byte wins within
        // a datagram, and a second first fragment starts another. So does a
        // first fragment whose header chain says otherwise than the later
        // fragment that opened the slot.
        let restart = first && (slot.first_seen || slot.proto != proto || slot.skip != skip);
        if !fresh && start >= HEAD {
            // Nothing of the header here: do not take another datagram's slot.
            self.unmapped += 1;
            return;
        }
        if !fresh || restart {
            *slot = Slot { tag, ts_ns: p.ts_ns, skip, proto, ..Slot::default() };
        }
        slot.first_seen |= first;
        let before = slot.have;
        if start < HEAD {
            for (i, b) in data.iter().take(HEAD - start).enumerate() {
                if slot.have & (1 << (start + i)) == 0 {
                    slot.head[start + i] = *b;
                    slot.have |= 1 << (start + i);
                }
            }
        }
        // The bytes of the transport header this fragment carried are no
        // payload (an `nmap -f` SYN carries none).
        let header_len = match proto {
            6 if slot.have & (1 << 12) != 0 => usize::from(slot.head[12] >> 4) * 4,
            6 => HEAD,
            _ => 8,
        };
        let carried = header_len.saturating_sub(start).min(data.len());
        p.payload_len = p.payload_len.saturating_sub(carried as u32);
        let h = slot.head;
        if slot.have & ports != ports {
            self.unmapped += 1;
            return;
        }
        match proto {
            6 | 17 => {
                p.sport = u16::from_be_bytes([h[0], h[1]]);
                p.dport = u16::from_be_bytes([h[2], h[3]]);
            }
            _ => {}
        }
        if slot.have & fields == fields && before & fields != fields {
            // This fragment completed the header: it stands for the
            // datagram's header, as the unfragmented packet would.
            p.fragment = None;
            match proto {
                6 => {
                    p.tcp_seq = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
                    p.tcp_ack = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
                    p.tcp_flags = h[13] & 0x3f;
                }
                1 | 58 => {
                    p.icmp_type = h[0];
                    p.icmp_code = h[1];
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::tcp_flags::SYN;

    fn frag(ts_ns: u64, src: &str, proto: u8, id: u32, offset: u32, more: bool) -> PacketInfo {
        let (src, dst) = (src.parse().unwrap(), "198.51.100.10".parse().unwrap());
        PacketInfo {
            fragment: Some(Fragment { id, offset, more, headers: 0 }),
            ..PacketInfo::ip_only(ts_ns, src, dst, proto, 28, 8)
        }
    }

    /// A TCP SYN header to port `dport`, seq 0x01020304.
    fn syn_header(dport: u16) -> [u8; 20] {
        let mut h = [0u8; 20];
        h[0..2].copy_from_slice(&40000u16.to_be_bytes());
        h[2..4].copy_from_slice(&dport.to_be_bytes());
        h[4..8].copy_from_slice(&[1, 2, 3, 4]);
        h[12] = 5 << 4;
        h[13] = SYN;
        h
    }

    #[test]
    fn an_nmap_f_probe_in_three_8_byte_fragments_is_one_syn_to_its_port() {
        let mut t = FragmentHeads::new();
        let h = syn_header(443);
        let mut a = frag(1_000, "192.0.2.10", 6, 7, 0, true);
        t.resolve(&mut a, &h[0..8]);
        assert_eq!((a.sport, a.dport, a.tcp_flags), (40000, 443, 0), "ports from the first fragment, no flags yet");
        assert!(a.fragment.is_some(), "it adds nothing to TCP state");
        let mut b = frag(1_010, "192.0.2.10", 6, 7, 8, true);
        t.resolve(&mut b, &h[8..16]);
        assert_eq!((b.sport, b.dport, b.tcp_flags, b.tcp_seq), (40000, 443, SYN, 0x01020304));
        assert_eq!(b.fragment, None, "the fragment completing the flags stands for the header");
        let mut c = frag(1_020, "192.0.2.10", 6, 7, 16, false);
        t.resolve(&mut c, &h[16..20]);
        assert_eq!((c.sport, c.dport, c.tcp_flags), (40000, 443, 0));
        assert!(c.fragment.is_some());
        assert_eq!((t.fragments, t.unmapped), (3, 0));
    }

    #[test]
    fn a_whole_header_in_the_first_fragment_reads_as_the_unfragmented_packet() {
        let mut t = FragmentHeads::new();
        let mut udp = [0u8; 24];
        udp[0..2].copy_from_slice(&5353u16.to_be_bytes());
        udp[2..4].copy_from_slice(&53u16.to_be_bytes());
        let mut a = frag(0, "192.0.2.10", 17, 99, 0, true);
        t.resolve(&mut a, &udp);
        assert_eq!((a.sport, a.dport, a.fragment), (5353, 53, None));
        let mut b = frag(5, "192.0.2.10", 17, 99, 1480, false);
        t.resolve(&mut b, &[0xaa; 100]);
        assert_eq!((b.sport, b.dport), (5353, 53), "a later fragment counts in the same flow");
        assert!(b.fragment.is_some());
        // An echo request in pieces keeps its type on the first.
        let mut e = frag(10, "192.0.2.10", 1, 100, 0, true);
        t.resolve(&mut e, &[8, 0, 0, 0, 0, 1, 0, 1]);
        assert_eq!((e.icmp_type, e.fragment), (8, None));
    }

    #[test]
    fn without_the_first_fragment_there_are_no_ports_and_ids_do_not_mix() {
        let mut t = FragmentHeads::new();
        let h = syn_header(22);
        // A later fragment first: nothing known yet.
        let mut late = frag(0, "192.0.2.10", 6, 1, 8, false);
        t.resolve(&mut late, &h[8..16]);
        assert_eq!((late.sport, late.dport, late.tcp_flags), (0, 0, 0));
        assert_eq!(t.unmapped, 1);
        // Another source with the same id, and the same source with another id.
        let mut first = frag(1, "192.0.2.10", 6, 2, 0, true);
        t.resolve(&mut first, &h[0..8]);
        let mut other_src = frag(2, "192.0.2.99", 6, 2, 8, false);
        t.resolve(&mut other_src, &h[8..16]);
        assert_eq!(other_src.dport, 0, "another source's fragment is not this datagram's");
        let mut other_id = frag(3, "192.0.2.10", 6, 3, 8, false);
        t.resolve(&mut other_id, &h[8..16]);
        assert_eq!(other_id.dport, 0);
        // A slot too old no longer speaks for the datagram.
        let mut stale = frag(1 + 3 * MAX_AGE_NS, "192.0.2.10", 6, 2, 8, false);
        t.resolve(&mut stale, &h[8..16]);
        assert_eq!(stale.dport, 0);
    }

    #[test]
    fn a_repeated_first_fragment_is_another_datagram_and_overlaps_cannot_rewrite_a_header() {
        let mut t = FragmentHeads::new();
        let h = syn_header(80);
        let mut a = frag(0, "192.0.2.10", 6, 5, 0, true);
        t.resolve(&mut a, &h[0..16]);
        assert_eq!((a.tcp_flags, a.fragment), (SYN, None));
        // The same id again from its start: a new datagram (or a duplicate,
        // counted as an unfragmented duplicate would be).
        let mut again = frag(1, "192.0.2.10", 6, 5, 0, true);
        t.resolve(&mut again, &h[0..16]);
        assert_eq!((again.dport, again.tcp_flags, again.fragment), (80, SYN, None));
        // A later fragment overlapping the header with other bytes changes nothing.
        let mut other = syn_header(22);
        other[13] = 0;
        let mut overlap = frag(2, "192.0.2.10", 6, 5, 8, true);
        t.resolve(&mut overlap, &other[8..16]);
        assert_eq!((overlap.dport, overlap.tcp_flags), (80, 0));
        assert!(overlap.fragment.is_some());
    }

    /// `hping3 -S -f -N 42 -p ++1`: every probe in 8-byte fragments, all with
    /// IP id 42. Each probe must count, to its own port.
    #[test]
    fn a_scan_reusing_one_ip_id_is_still_one_syn_per_port() {
        let mut t = FragmentHeads::new();
        let mut syns = Vec::new();
        for port in 1..=100u16 {
            let h = syn_header(port);
            let ts = u64::from(port) * 1_000_000;
            for (k, part) in [&h[0..8], &h[8..16], &h[16..20]].into_iter().enumerate() {
                let mut p = frag(ts + k as u64, "192.0.2.10", 6, 42, 8 * k as u32, k < 2);
                t.resolve(&mut p, part);
                assert_eq!(p.dport, port, "fragment {k} of the probe to {port}");
                assert_eq!(p.payload_len, if k == 2 { 4 } else { 0 }, "header bytes are no payload");
                if p.tcp_flags == SYN {
                    syns.push(p.dport);
                }
            }
        }
        assert_eq!(syns, (1..=100).collect::<Vec<u16>>());
        assert_eq!(t.unmapped, 0);
    }

    #[test]
    fn a_spoofed_fragment_flood_stays_in_its_fixed_table() {
        let mut t = FragmentHeads::new();
        let h = syn_header(80);
        for i in 0..200_000u32 {
            let src = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
            let mut p = frag(i as u64, &src, 6, i, 0, true);
            t.resolve(&mut p, &h[0..8]);
            assert_eq!(p.dport, 80);
        }
        assert_eq!(t.slots.len(), SLOTS);
        assert_eq!(t.slots.capacity(), SLOTS);
    }

    #[test]
    fn packets_that_are_not_fragments_are_left_alone() {
        let mut t = FragmentHeads::new();
        let mut p = frag(0, "192.0.2.10", 6, 1, 0, false);
        p.fragment = None;
        p.dport = 8080;
        let before = p;
        t.resolve(&mut p, &[0; 20]);
        assert_eq!(p, before);
        assert_eq!(t.fragments, 0);
    }
}
