//! Turns a captured frame into the few header fields the flow table needs.
//!
//! Parsing is lax about payloads (a headers-only capture cuts every packet
//! at the snap length) but strict about headers: a frame whose IP or
//! transport header is missing or malformed is skipped and counted by
//! reason, never a panic.

use std::net::IpAddr;

use etherparse::{EtherType, LaxNetSlice, LaxSlicedPacket, TransportSlice};

use gatewarden_capture::{Frame, LinkType};

/// TCP flag bits as they appear in the header.
pub mod tcp_flags {
    /// FIN
    pub const FIN: u8 = 0x01;
    /// SYN
    pub const SYN: u8 = 0x02;
    /// RST
    pub const RST: u8 = 0x04;
    /// PSH
    pub const PSH: u8 = 0x08;
    /// ACK
    pub const ACK: u8 = 0x10;
    /// URG
    pub const URG: u8 = 0x20;
}

/// The fields of one packet that flows and features are built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketInfo {
    /// Capture time, nanoseconds since the epoch.
    pub ts_ns: u64,
    /// IP source.
    pub src: IpAddr,
    /// IP destination.
    pub dst: IpAddr,
    /// IP protocol number of the transport.
    pub proto: u8,
    /// Source port (0 without ports; ICMP: 0).
    pub sport: u16,
    /// Destination port (0 without ports; ICMP: 0).
    pub dport: u16,
    /// TCP flags, 0 for other protocols.
    pub tcp_flags: u8,
    /// TCP sequence number, 0 for other protocols. The flow table keeps what
    /// the responder sent so an originator's acknowledgement can prove it
    /// received that (a forged source cannot: issue #15).
    pub tcp_seq: u32,
    /// TCP acknowledgement number (meaningful with the ACK flag), 0 otherwise.
    pub tcp_ack: u32,
    /// ICMP/ICMPv6 type, 0 otherwise.
    pub icmp_type: u8,
    /// ICMP/ICMPv6 code, 0 otherwise.
    pub icmp_code: u8,
    /// IP length on the wire (header + payload), from the IP header.
    pub ip_len: u32,
    /// Transport payload length on the wire.
    pub payload_len: u32,
}

impl PacketInfo {
    /// Whether this is an ICMP echo request (v4 type 8, v6 type 128).
    pub fn is_icmp_echo_request(&self) -> bool {
        (self.proto == 1 && self.icmp_type == 8) || (self.proto == 58 && self.icmp_type == 128)
    }

    /// Whether this is ICMP destination unreachable (v4 type 3, v6 type 1).
    pub fn is_icmp_unreachable(&self) -> bool {
        (self.proto == 1 && self.icmp_type == 3) || (self.proto == 58 && self.icmp_type == 1)
    }
}

/// Why a frame was skipped; each reason has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SkipReason {
    /// Shorter than its link-layer header.
    LinkTruncated,
    /// Not IP (ARP, LLDP, …): normal, but not our business.
    NotIp,
    /// IP header missing, cut short or malformed.
    IpMalformed,
    /// The transport header is cut short or malformed.
    TransportMalformed,
}

impl SkipReason {
    /// Every reason, for exporting zero counters too.
    pub const ALL: [SkipReason; 4] =
        [SkipReason::LinkTruncated, SkipReason::NotIp, SkipReason::IpMalformed, SkipReason::TransportMalformed];

    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::LinkTruncated => "link_truncated",
            SkipReason::NotIp => "not_ip",
            SkipReason::IpMalformed => "ip_malformed",
            SkipReason::TransportMalformed => "transport_malformed",
        }
    }

    /// Index into a counter array.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The source MAC of an Ethernet frame (the router's LAN capture); `None`
/// for other link types or a frame shorter than its MAC header.
pub fn source_mac(frame: &Frame<'_>) -> Option<[u8; 6]> {
    match frame.link {
        LinkType::Ethernet => frame.data.get(6..12)?.try_into().ok(),
        _ => None,
    }
}

/// Parses one frame.
pub fn parse(frame: &Frame<'_>) -> Result<PacketInfo, SkipReason> {
    let sliced = match frame.link {
        LinkType::Ethernet => LaxSlicedPacket::from_ethernet(frame.data).map_err(|_| SkipReason::LinkTruncated)?,
        LinkType::RawIp => LaxSlicedPacket::from_ip(frame.data).map_err(|_| SkipReason::IpMalformed)?,
        LinkType::LinuxSll => {
            if frame.data.len() < 16 {
                return Err(SkipReason::LinkTruncated);
            }
            let proto = u16::from_be_bytes([frame.data[14], frame.data[15]]);
            LaxSlicedPacket::from_ether_type(EtherType(proto), &frame.data[16..])
        }
        LinkType::Null => {
            if frame.data.len() < 4 {
                return Err(SkipReason::LinkTruncated);
            }
            LaxSlicedPacket::from_ip(&frame.data[4..]).map_err(|_| SkipReason::NotIp)?
        }
    };
    from_sliced(frame.ts_ns, &sliced)
}

fn from_sliced(ts_ns: u64, p: &LaxSlicedPacket<'_>) -> Result<PacketInfo, SkipReason> {
    // `ip_payload` is the transport's length on the wire, from the IP header,
    // which stays right when the capture cut the packet short.
    let (src, dst, proto, ip_len, ip_payload, fragmented_tail) = match &p.net {
        Some(LaxNetSlice::Ipv4(v4)) => {
            let h = v4.header();
            let total = h.total_len() as u32;
            (
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                v4.payload().ip_number.0,
                total,
                total.saturating_sub(h.slice().len() as u32),
                h.fragments_offset().value() != 0,
            )
        }
        Some(LaxNetSlice::Ipv6(v6)) => {
            let h = v6.header();
            let ext = v6.extensions().slice().len() as u32;
            (
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                v6.payload().ip_number.0,
                h.payload_length() as u32 + 40,
                (h.payload_length() as u32).saturating_sub(ext),
                v6.is_payload_fragmented() && v6.payload().payload.is_empty(),
            )
        }
        None => {
            return Err(match p.stop_err {
                Some((_, layer)) if is_ip_layer(layer) => SkipReason::IpMalformed,
                Some((_, etherparse::err::Layer::Ethernet2Header | etherparse::err::Layer::VlanHeader)) => {
                    SkipReason::LinkTruncated
                }
                _ => SkipReason::NotIp,
            })
        }
    };
    let mut info = PacketInfo {
        ts_ns,
        src,
        dst,
        proto,
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        tcp_seq: 0,
        tcp_ack: 0,
        icmp_type: 0,
        icmp_code: 0,
        ip_len,
        payload_len: ip_payload,
    };
    match &p.transport {
        Some(TransportSlice::Tcp(tcp)) => {
            info.sport = tcp.source_port();
            info.dport = tcp.destination_port();
            info.tcp_flags = tcp.slice()[13] & 0x3f;
            info.tcp_seq = tcp.sequence_number();
            info.tcp_ack = tcp.acknowledgment_number();
            info.payload_len = ip_payload.saturating_sub(tcp.header_len() as u32);
        }
        Some(TransportSlice::Udp(udp)) => {
            info.sport = udp.source_port();
            info.dport = udp.destination_port();
            info.payload_len = ip_payload.saturating_sub(8);
        }
        Some(TransportSlice::Icmpv4(icmp)) => {
            info.icmp_type = icmp.type_u8();
            info.icmp_code = icmp.code_u8();
            info.payload_len = ip_payload.saturating_sub(icmp.header_len() as u32);
        }
        Some(TransportSlice::Icmpv6(icmp)) => {
            info.icmp_type = icmp.type_u8();
            info.icmp_code = icmp.code_u8();
            info.payload_len = ip_payload.saturating_sub(icmp.header_len() as u32);
        }
        None => {
            // A transport we parse whose header did not fit is malformed; a later
            // fragment or another protocol (GRE, ESP, …) simply has no ports.
            let parsed_proto = matches!(proto, 6 | 17 | 1 | 58);
            if parsed_proto && !fragmented_tail {
                return Err(SkipReason::TransportMalformed);
            }
        }
    }
    Ok(info)
}

fn is_ip_layer(layer: etherparse::err::Layer) -> bool {
    use etherparse::err::Layer::*;
    matches!(
        layer,
        IpHeader
            | Ipv4Header
            | Ipv4Packet
            | IpAuthHeader
            | Ipv6Header
            | Ipv6Packet
            | Ipv6ExtHeader
            | Ipv6HopByHopHeader
            | Ipv6DestOptionsHeader
            | Ipv6RouteHeader
            | Ipv6FragHeader
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth(ethertype: u16, vlan: Option<u16>, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
        if let Some(id) = vlan {
            f.extend(0x8100u16.to_be_bytes());
            f.extend(id.to_be_bytes());
        }
        f.extend(ethertype.to_be_bytes());
        f.extend(payload);
        f
    }

    fn ipv4(proto: u8, total_len: u16, l4: &[u8]) -> Vec<u8> {
        let mut v = vec![0x45, 0];
        v.extend(total_len.to_be_bytes());
        v.extend([0, 0, 0, 0, 64, proto, 0, 0, 192, 0, 2, 1, 198, 51, 100, 7]);
        v.extend(l4);
        v
    }

    fn ipv6(next: u8, payload_len: u16, l4: &[u8]) -> Vec<u8> {
        let mut v = vec![0x60, 0, 0, 0];
        v.extend(payload_len.to_be_bytes());
        v.extend([next, 64]);
        v.extend([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        v.extend([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        v.extend(l4);
        v
    }

    fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
        let mut t = Vec::new();
        t.extend(sport.to_be_bytes());
        t.extend(dport.to_be_bytes());
        t.extend([0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        t
    }

    fn frame(data: &[u8], link: LinkType) -> Frame<'_> {
        Frame { ts_ns: 7, link, data, orig_len: data.len() as u32 }
    }

    #[test]
    fn ipv4_tcp_with_snapped_payload() {
        // Total length says 1040 bytes; the capture kept only the headers.
        let data = eth(0x0800, None, &ipv4(6, 1040, &tcp(40000, 443, 0x18)));
        let p = parse(&frame(&data, LinkType::Ethernet)).unwrap();
        assert_eq!((p.src.to_string().as_str(), p.dst.to_string().as_str()), ("192.0.2.1", "198.51.100.7"));
        assert_eq!((p.proto, p.sport, p.dport, p.tcp_flags), (6, 40000, 443, 0x18));
        assert_eq!(p.ip_len, 1040);
        assert_eq!(p.payload_len, 1000, "payload length comes from the header, not the snap");
    }

    #[test]
    fn vlan_tagged_frames_parse() {
        let data = eth(0x0800, Some(20), &ipv4(17, 36, &[0x13, 0x88, 0x00, 0x35, 0, 16, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]));
        let p = parse(&frame(&data, LinkType::Ethernet)).unwrap();
        assert_eq!((p.proto, p.sport, p.dport, p.payload_len), (17, 5000, 53, 8));
    }

    #[test]
    fn ipv6_tcp_and_icmpv6() {
        let data = eth(0x86dd, None, &ipv6(6, 20, &tcp(1, 22, 0x02)));
        let p = parse(&frame(&data, LinkType::Ethernet)).unwrap();
        assert_eq!(p.src.to_string(), "2001:db8::1");
        assert_eq!((p.dport, p.tcp_flags, p.ip_len), (22, 0x02, 60));
        let echo = [128u8, 0, 0, 0, 0, 1, 0, 1];
        let data = eth(0x86dd, None, &ipv6(58, 8, &echo));
        let p = parse(&frame(&data, LinkType::Ethernet)).unwrap();
        assert!(p.is_icmp_echo_request());
        let unreach = [1u8, 4, 0, 0, 0, 0, 0, 0];
        let data = eth(0x86dd, None, &ipv6(58, 8, &unreach));
        assert!(parse(&frame(&data, LinkType::Ethernet)).unwrap().is_icmp_unreachable());
    }

    #[test]
    fn icmpv4_echo_and_unreachable() {
        let data = eth(0x0800, None, &ipv4(1, 28, &[8, 0, 0, 0, 0, 1, 0, 1]));
        assert!(parse(&frame(&data, LinkType::Ethernet)).unwrap().is_icmp_echo_request());
        let data = eth(0x0800, None, &ipv4(1, 28, &[3, 3, 0, 0, 0, 0, 0, 0]));
        assert!(parse(&frame(&data, LinkType::Ethernet)).unwrap().is_icmp_unreachable());
    }

    #[test]
    fn source_mac_is_read_from_ethernet_frames_only() {
        let data = eth(0x0800, None, &ipv4(6, 40, &tcp(1, 2, 0x02)));
        assert_eq!(source_mac(&frame(&data, LinkType::Ethernet)), Some([2, 0, 0, 0, 0, 1]));
        assert_eq!(source_mac(&frame(&data[..10], LinkType::Ethernet)), None);
        assert_eq!(source_mac(&frame(&data, LinkType::RawIp)), None);
    }

    #[test]
    fn raw_ip_sll_and_null_link_types() {
        let ip = ipv4(6, 40, &tcp(1, 2, 0x02));
        assert_eq!(parse(&frame(&ip, LinkType::RawIp)).unwrap().dport, 2);
        let mut sll = vec![0u8; 14];
        sll.extend(0x0800u16.to_be_bytes());
        sll.extend(&ip);
        assert_eq!(parse(&frame(&sll, LinkType::LinuxSll)).unwrap().dport, 2);
        let mut null = 2u32.to_le_bytes().to_vec();
        null.extend(&ip);
        assert_eq!(parse(&frame(&null, LinkType::Null)).unwrap().dport, 2);
    }

    #[test]
    fn every_skip_reason() {
        let cases: Vec<(Vec<u8>, LinkType, SkipReason)> = vec![
            (vec![1, 2, 3], LinkType::Ethernet, SkipReason::LinkTruncated),
            (vec![1, 2, 3], LinkType::LinuxSll, SkipReason::LinkTruncated),
            (eth(0x0806, None, &[0; 28]), LinkType::Ethernet, SkipReason::NotIp),
            (eth(0x0800, None, &[0x45, 0, 0]), LinkType::Ethernet, SkipReason::IpMalformed),
            (eth(0x0800, None, &ipv4(6, 40, &[0, 1, 0])), LinkType::Ethernet, SkipReason::TransportMalformed),
            (eth(0x86dd, None, &ipv6(17, 8, &[0, 1])), LinkType::Ethernet, SkipReason::TransportMalformed),
            (vec![0x99; 30], LinkType::RawIp, SkipReason::IpMalformed),
        ];
        for (data, link, want) in cases {
            assert_eq!(parse(&frame(&data, link)), Err(want), "{data:02x?}");
        }
    }

    #[test]
    fn later_fragments_have_no_ports_but_are_counted() {
        let mut ip = ipv4(17, 60, &[0xde, 0xad, 0xbe, 0xef]);
        ip[6] = 0x00;
        ip[7] = 0x10; // fragment offset 16 * 8 bytes
        let p = parse(&frame(&ip, LinkType::RawIp)).unwrap();
        assert_eq!((p.proto, p.sport, p.dport), (17, 0, 0));
    }
}
