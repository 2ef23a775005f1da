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
    /// Set on an IP fragment whose transport header this packet does not
    /// carry whole: its ports (if known) come from the datagram's first
    /// fragments ([`crate::fragments::FragmentHeads`]), and it adds nothing to
    /// TCP state. `None` for every unfragmented packet.
    pub fragment: Option<Fragment>,
}

/// Where an IP fragment sits in its datagram (IPv4 header, or an IPv6
/// fragment extension header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    /// The datagram's identification (16 bits in IPv4, 32 in IPv6).
    pub id: u32,
    /// Offset of this fragment's data in the datagram's payload, in bytes.
    pub offset: u32,
    /// More fragments follow.
    pub more: bool,
    /// IPv6, first fragment only: the extension headers between the fragment
    /// header and the transport header, in bytes. A datagram's offsets count
    /// from the fragment header, so its transport starts this far in; later
    /// fragments learn it from the first ([`crate::fragments::FragmentHeads`]).
    /// 0 for IPv4 and for later fragments.
    pub headers: u16,
}

impl PacketInfo {
    /// The IP layer's fields, no transport yet: both parsers start here.
    pub(crate) fn ip_only(
        ts_ns: u64,
        src: IpAddr,
        dst: IpAddr,
        proto: u8,
        ip_len: u32,
        payload_len: u32,
    ) -> PacketInfo {
        PacketInfo {
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
            payload_len,
            fragment: None,
        }
    }

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
    /// An IPv6 extension-header chain the capture cut short: the transport
    /// (ports, flags) lies past the bytes kept. Counted, not taken for a
    /// port-less packet of the header's protocol, which let a scan hide
    /// behind 80 bytes of Destination Options (one "protocol 60" flow for
    /// 300 probes). The live capture keeps such chains whole up to 9 KiB
    /// (`gatewarden_capture::afpacket::snap_filter`), so a count here means
    /// a longer chain or a file captured with a short snap. A chain cut by
    /// the packet's own length is [`SkipReason::IpMalformed`].
    HeadersBeyondSnap,
}

impl SkipReason {
    /// Every reason, for exporting zero counters too.
    pub const ALL: [SkipReason; 5] = [
        SkipReason::LinkTruncated,
        SkipReason::NotIp,
        SkipReason::IpMalformed,
        SkipReason::TransportMalformed,
        SkipReason::HeadersBeyondSnap,
    ];

    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::LinkTruncated => "link_truncated",
            SkipReason::NotIp => "not_ip",
            SkipReason::IpMalformed => "ip_malformed",
            SkipReason::TransportMalformed => "transport_malformed",
            SkipReason::HeadersBeyondSnap => "headers_beyond_snap",
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

/// The destination MAC of an Ethernet frame; `None` as for [`source_mac`].
pub fn dest_mac(frame: &Frame<'_>) -> Option<[u8; 6]> {
    match frame.link {
        LinkType::Ethernet => frame.data.get(0..6)?.try_into().ok(),
        _ => None,
    }
}

/// Parses one frame: the common shapes by hand, everything else (and every
/// frame that will be skipped) by etherparse, with the same result either
/// way: the tests and the `packet_parse` fuzz target hold the two to that.
pub fn parse(frame: &Frame<'_>) -> Result<PacketInfo, SkipReason> {
    match parse_common(frame) {
        Some(info) => Ok(info),
        None => parse_with_etherparse(frame),
    }
}

/// The reference parser: etherparse's lax slicing of any link, IP and
/// transport shape. [`parse`] must agree with it on every frame; public so
/// the fuzz target can check that.
pub fn parse_with_etherparse(frame: &Frame<'_>) -> Result<PacketInfo, SkipReason> {
    from_sliced(frame, &slice(frame)?)
}

/// etherparse's lax slicing of a frame of any link type.
fn slice<'a>(frame: &Frame<'a>) -> Result<LaxSlicedPacket<'a>, SkipReason> {
    Ok(match frame.link {
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
    })
}

/// The data a fragment carries, as far as it was captured: what follows
/// its IPv4 header, or its IPv6 fragment header (so a first fragment's data
/// starts with the extension headers [`Fragment::headers`] counts, and a
/// later fragment's is never read as headers). Where a datagram's first
/// fragments hold its transport header. Read only for frames [`parse`]
/// marked as fragments, so the common path never slices twice.
pub fn fragment_data<'a>(frame: &Frame<'a>) -> Option<&'a [u8]> {
    match slice(frame).ok()?.net? {
        LaxNetSlice::Ipv4(v4) => Some(v4.payload().payload),
        LaxNetSlice::Ipv6(v6) => {
            // The extensions and the payload lie back to back in the frame;
            // etherparse may have read a later fragment's data as more
            // extension headers, so cut the frame after the fragment header.
            let ext = v6.extensions().slice();
            let payload = v6.payload().payload;
            let (_, after, _) = ipv6_fragment(v6.header().next_header().0, ext)?;
            let start = offset_within(frame.data, ext)? + after;
            let end = offset_within(frame.data, payload)? + payload.len();
            frame.data.get(start..end)
        }
    }
}

/// Where `inner`, a subslice of `outer`, starts in it (`None` if it is not one).
fn offset_within(outer: &[u8], inner: &[u8]) -> Option<usize> {
    let at = (inner.as_ptr() as usize).checked_sub(outer.as_ptr() as usize)?;
    (at + inner.len() <= outer.len()).then_some(at)
}

fn from_sliced(frame: &Frame<'_>, p: &LaxSlicedPacket<'_>) -> Result<PacketInfo, SkipReason> {
    let ts_ns = frame.ts_ns;
    // `ip_payload` is the transport's length on the wire, from the IP header,
    // which stays right when the capture cut the packet short.
    let (src, dst, proto, ip_len, ip_payload, fragment) = match &p.net {
        Some(LaxNetSlice::Ipv4(v4)) => {
            let h = v4.header();
            let total = h.total_len() as u32;
            let offset = u32::from(h.fragments_offset().value()) * 8;
            let fragment = (h.more_fragments() || offset != 0).then_some(Fragment {
                id: u32::from(h.identification()),
                offset,
                more: h.more_fragments(),
                headers: 0,
            });
            (
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                v4.payload().ip_number.0,
                total,
                total.saturating_sub(h.slice().len() as u32),
                fragment,
            )
        }
        Some(LaxNetSlice::Ipv6(v6)) => {
            let h = v6.header();
            let ext = v6.extensions().slice();
            let mut proto = v6.payload().ip_number.0;
            let mut skipped = ext.len() as u32;
            let fragment = match ipv6_fragment(h.next_header().0, ext) {
                // The first fragment holds the datagram's header chain: the
                // transport is what etherparse found at the end of it.
                Some((mut f, after, _)) if f.offset == 0 => {
                    f.headers = u16::try_from(ext.len() - after).unwrap_or(u16::MAX);
                    Some(f)
                }
                // A later one holds data only: whatever follows its fragment
                // header is no extension header, whatever its bytes say.
                Some((f, after, next)) => {
                    proto = next;
                    skipped = after as u32;
                    Some(f)
                }
                // Not a fragment: a chain cut short hides the transport.
                None => match ipv6_chain_cut(frame, p) {
                    Some(reason) => return Err(reason),
                    None => None,
                },
            };
            (
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                proto,
                h.payload_length() as u32 + 40,
                (h.payload_length() as u32).saturating_sub(skipped),
                fragment,
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
    if fragment.is_some() {
        // A fragment, first or later: etherparse leaves its transport unread,
        // and the ports are the datagram's business (`fragments::FragmentHeads`,
        // fed with `fragment_data`). It is counted, never skipped: a first
        // fragment skipped as malformed let `nmap -f` scan unseen.
        let mut info = PacketInfo::ip_only(ts_ns, src, dst, proto, ip_len, ip_payload);
        info.fragment = fragment;
        return Ok(info);
    }
    let mut info = PacketInfo::ip_only(ts_ns, src, dst, proto, ip_len, ip_payload);
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
            // A transport we parse whose header did not fit is malformed;
            // another protocol (GRE, ESP, …) simply has no ports.
            if matches!(proto, 6 | 17 | 1 | 58) {
                return Err(SkipReason::TransportMalformed);
            }
        }
    }
    Ok(info)
}

/// Why an IPv6 packet whose extension chain etherparse stopped inside,
/// for want of bytes, is skipped; `None` when it was not. The capture cut
/// it ([`SkipReason::HeadersBeyondSnap`]) when the bytes ran out before the
/// packet did: the captured bytes, not the IPv6 payload length, ended the
/// chain, and the frame was longer on the wire. Otherwise the packet itself
/// ends inside its headers, which no receiver accepts
/// ([`SkipReason::IpMalformed`]). Malformed content (a hop-by-hop header
/// not first) is still read as before, as a packet of that header's
/// protocol: Linux drops those, so they hide nothing.
fn ipv6_chain_cut(frame: &Frame<'_>, p: &LaxSlicedPacket<'_>) -> Option<SkipReason> {
    use etherparse::err::{packet::SliceError, Layer};
    use etherparse::LenSource;
    let Some((SliceError::Len(e), layer)) = &p.stop_err else { return None };
    let in_chain = matches!(
        layer,
        Layer::Ipv6ExtHeader
            | Layer::Ipv6HopByHopHeader
            | Layer::Ipv6DestOptionsHeader
            | Layer::Ipv6RouteHeader
            | Layer::Ipv6FragHeader
            | Layer::IpAuthHeader
    );
    if !in_chain {
        return None;
    }
    let snapped = (frame.data.len() as u64) < u64::from(frame.orig_len);
    Some(if e.len_source == LenSource::Slice && snapped {
        SkipReason::HeadersBeyondSnap
    } else {
        SkipReason::IpMalformed
    })
}

/// The fragment header among IPv6 extension headers `ext` (the chain
/// starting with next header `first`), if the packet is a fragment, with
/// where in `ext` the fragment header ends and the next header it names.
/// Walked by hand: etherparse 0.16's extension iterator panics on a chain
/// its lax parser cut short.
fn ipv6_fragment(first: u8, ext: &[u8]) -> Option<(Fragment, usize, u8)> {
    let (mut next, mut at) = (first, 0usize);
    loop {
        let rest = ext.get(at..)?;
        let len = match next {
            44 => {
                let b = rest.get(..8)?;
                let offset_more = u16::from_be_bytes([b[2], b[3]]);
                let (offset, more) = (u32::from(offset_more >> 3) * 8, offset_more & 1 != 0);
                let id = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
                if more || offset != 0 {
                    return Some((Fragment { id, offset, more, headers: 0 }, at + 8, b[0]));
                }
                // An atomic fragment header (the whole datagram): a real one
                // may still follow, which etherparse counts as fragmenting.
                8
            }
            0 | 43 | 60 => (usize::from(*rest.get(1)?) + 1) * 8,
            51 => (usize::from(*rest.get(1)?) + 2) * 4,
            _ => return None,
        };
        next = *rest.first()?;
        at += len;
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The shapes nearly every frame has, read field by field in one pass (a
/// third of etherparse's instructions on the real-tool capture: issue #19):
/// Ethernet with at most one VLAN tag, raw IP, Linux SLL or BSD null; IPv4
/// without fragmentation or an authentication header, IPv6 without extension
/// headers; a whole TCP, UDP or ICMP header. `None` for anything else (other
/// shapes, and every frame that is to be skipped), which etherparse then
/// reads. The rules below are etherparse 0.16's lax ones, field for field.
fn parse_common(frame: &Frame<'_>) -> Option<PacketInfo> {
    const IPV4: u16 = 0x0800;
    const IPV6: u16 = 0x86dd;
    let d = frame.data;
    let ip = match frame.link {
        LinkType::Ethernet => match be16(d, 12)? {
            IPV4 | IPV6 => &d[14..],
            // One 802.1Q / 802.1ad / old QinQ tag; two tags go the long way.
            0x8100 | 0x88a8 | 0x9100 => match be16(d, 16)? {
                IPV4 | IPV6 => &d[18..],
                _ => return None,
            },
            _ => return None,
        },
        LinkType::RawIp => d,
        LinkType::LinuxSll => match be16(d, 14)? {
            IPV4 | IPV6 => &d[16..],
            _ => return None,
        },
        LinkType::Null => d.get(4..)?,
    };
    // etherparse reads the version from the header, not the link's type.
    let (src, dst, proto, ip_len, ip_payload, transport) = match ip.first()? >> 4 {
        4 => {
            let header_len = usize::from(ip[0] & 0x0f) * 4;
            if header_len < 20 || ip.len() < header_len {
                return None;
            }
            let total = usize::from(be16(ip, 2)?);
            // Lax: a total length shorter than the header or longer than the
            // capture falls back to what was captured.
            let payload =
                if total < header_len || ip.len() < total { &ip[header_len..] } else { &ip[header_len..total] };
            let proto = ip[9];
            // More fragments, or an offset: etherparse leaves the transport unread.
            let fragmenting = be16(ip, 6)? & 0x3fff != 0;
            // 51: an authentication header; 58: ICMPv6 read over IPv4.
            if fragmenting || proto == 51 || proto == 58 {
                return None;
            }
            let src = IpAddr::from(<[u8; 4]>::try_from(&ip[12..16]).ok()?);
            let dst = IpAddr::from(<[u8; 4]>::try_from(&ip[16..20]).ok()?);
            (src, dst, proto, total as u32, (total as u32).saturating_sub(header_len as u32), payload)
        }
        6 => {
            if ip.len() < 40 {
                return None;
            }
            let declared = usize::from(be16(ip, 4)?);
            let rest = &ip[40..];
            // Lax: 0 (a jumbogram or segmentation offload) or more than was
            // captured falls back to what was captured.
            let payload =
                if (declared == 0 && !rest.is_empty()) || rest.len() < declared { rest } else { &rest[..declared] };
            let proto = ip[6];
            // Only transports: an extension header, or anything etherparse
            // might take for one, goes the long way.
            if !matches!(proto, 6 | 17 | 58) {
                return None;
            }
            let src = IpAddr::from(<[u8; 16]>::try_from(&ip[8..24]).ok()?);
            let dst = IpAddr::from(<[u8; 16]>::try_from(&ip[24..40]).ok()?);
            (src, dst, proto, declared as u32 + 40, declared as u32, payload)
        }
        _ => return None,
    };
    let mut info = PacketInfo::ip_only(frame.ts_ns, src, dst, proto, ip_len, ip_payload);
    let t = transport;
    match proto {
        6 => {
            let header_len = usize::from(t.get(12)? & 0xf0) >> 2;
            if header_len < 20 || t.len() < header_len {
                return None;
            }
            info.sport = be16(t, 0)?;
            info.dport = be16(t, 2)?;
            info.tcp_seq = be32(t, 4);
            info.tcp_ack = be32(t, 8);
            info.tcp_flags = t[13] & 0x3f;
            info.payload_len = ip_payload.saturating_sub(header_len as u32);
        }
        17 => {
            if t.len() < 8 {
                return None;
            }
            info.sport = be16(t, 0)?;
            info.dport = be16(t, 2)?;
            info.payload_len = ip_payload.saturating_sub(8);
        }
        // ICMP over IPv4 and ICMPv6 over IPv6 (the other pairings returned
        // above); timestamps (13, 14) have their own header length.
        1 | 58 => {
            if t.len() < 8 || (proto == 1 && matches!(t[0], 13 | 14)) {
                return None;
            }
            info.icmp_type = t[0];
            info.icmp_code = t[1];
            info.payload_len = ip_payload.saturating_sub(8);
        }
        // IPv4 carrying something without ports (IGMP, GRE, ESP, …).
        _ => {}
    }
    Some(info)
}

/// Whether an address-resolution frame asks or answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeighbourOp {
    /// ARP request (opcode 1) or IPv6 neighbour solicitation (ICMPv6 135).
    Request,
    /// ARP reply (opcode 2) or IPv6 neighbour advertisement (ICMPv6 136).
    Reply,
}

/// An ARP request/reply or an IPv6 neighbour solicitation/advertisement:
/// the frames a LAN device maps its subnet with. The addresses are the
/// ones the frame claims; only the MACs are what the bridge really carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbour {
    /// Capture time, ns.
    pub ts_ns: u64,
    /// Request or reply.
    pub op: NeighbourOp,
    /// Ethernet source (ARP over SLL: the sender hardware address).
    pub src_mac: [u8; 6],
    /// Who a reply is for: the ARP target hardware address; for an
    /// advertisement the Ethernet destination. Requests: zero.
    pub dst_mac: [u8; 6],
    /// The sender protocol address (ARP), the IPv6 source (NDP): `0.0.0.0`
    /// in an RFC 5227 probe, `::` in duplicate address detection.
    pub sender: IpAddr,
    /// The address asked about (requests: the ARP target protocol address,
    /// the NS target field, not the solicited-node multicast destination)
    /// or answered for (replies: the ARP sender protocol address, the NA
    /// target field), so a request and its answer name the same address.
    pub target: IpAddr,
}

impl Neighbour {
    /// A request for the sender's own address (gratuitous ARP) or from no
    /// address at all (RFC 5227 probe, IPv6 DAD): a device announcing or
    /// checking its own address, not asking who another one is.
    pub fn is_self_check(&self) -> bool {
        self.sender == self.target || self.sender.is_unspecified()
    }
}

/// ICMPv6 neighbour solicitation and advertisement types (RFC 4861).
const ND_SOLICIT: u8 = 135;
const ND_ADVERT: u8 = 136;

/// Reads an ARP (Ethernet/IPv4, opcode 1 or 2) or NDP (NS/NA) frame;
/// `None` for anything else or anything malformed (wrong hardware or
/// protocol type or lengths, cut short). Ethernet with up to two VLAN
/// tags, and Linux SLL, as [`parse`] reads them.
pub fn neighbour(frame: &Frame<'_>) -> Option<Neighbour> {
    let d = frame.data;
    let (ethertype, payload, src_mac, dst_mac) = match frame.link {
        LinkType::Ethernet => {
            let dst: [u8; 6] = d.get(0..6)?.try_into().ok()?;
            let src: [u8; 6] = d.get(6..12)?.try_into().ok()?;
            let mut at = 12;
            let mut et = be16(d, at)?;
            for _ in 0..2 {
                if et == 0x8100 || et == 0x88a8 {
                    at += 4;
                    et = be16(d, at)?;
                }
            }
            (et, d.get(at + 2..)?, Some(src), Some(dst))
        }
        LinkType::LinuxSll => {
            let et = be16(d, 14)?;
            (et, d.get(16..)?, None, None)
        }
        _ => return None,
    };
    match ethertype {
        0x0806 => arp(frame.ts_ns, payload, src_mac),
        0x86dd => {
            let (src, dst) = (src_mac?, dst_mac?);
            ndp(frame.ts_ns, payload, src, dst)
        }
        _ => None,
    }
}

fn ipv4_at(b: &[u8], at: usize) -> Option<IpAddr> {
    let o: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(IpAddr::from(o))
}

fn mac_at(b: &[u8], at: usize) -> Option<[u8; 6]> {
    b.get(at..at + 6)?.try_into().ok()
}

/// ARP for IPv4 over Ethernet: htype 1, ptype 0x0800, hlen 6, plen 4, 28 bytes.
fn arp(ts_ns: u64, a: &[u8], eth_src: Option<[u8; 6]>) -> Option<Neighbour> {
    if a.len() < 28 || a[0..2] != [0, 1] || a[2..4] != [0x08, 0x00] || a[4] != 6 || a[5] != 4 {
        return None;
    }
    let op = match u16::from_be_bytes([a[6], a[7]]) {
        1 => NeighbourOp::Request,
        2 => NeighbourOp::Reply,
        _ => return None,
    };
    let sha = mac_at(a, 8)?;
    let tha = mac_at(a, 18)?;
    let spa = ipv4_at(a, 14)?;
    let (dst_mac, target) = match op {
        NeighbourOp::Request => ([0; 6], ipv4_at(a, 24)?),
        // A reply resolves its sender's address for the target hardware address.
        NeighbourOp::Reply => (tha, spa),
    };
    Some(Neighbour { ts_ns, op, src_mac: eth_src.unwrap_or(sha), dst_mac, sender: spa, target })
}

/// An IPv6 packet carrying a neighbour solicitation or advertisement: hop
/// limit 255 (RFC 4861 7.1.1: anything else did not come from the link),
/// ICMPv6 directly after the fixed header, the target after the 8-byte
/// ICMPv6 header.
fn ndp(ts_ns: u64, ip: &[u8], src_mac: [u8; 6], dst_mac: [u8; 6]) -> Option<Neighbour> {
    if ip.len() < 40 + 24 || ip[0] >> 4 != 6 || ip[6] != 58 || ip[7] != 255 {
        return None;
    }
    // Only what the IPv6 header says is payload (found by fuzzing: bytes
    // past a short payload length were read as a target).
    let payload_len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    if payload_len < 24 {
        return None;
    }
    let icmp = &ip[40..];
    let op = match (icmp[0], icmp[1]) {
        (ND_SOLICIT, 0) => NeighbourOp::Request,
        (ND_ADVERT, 0) => NeighbourOp::Reply,
        _ => return None,
    };
    let v6 = |b: &[u8]| -> Option<IpAddr> {
        let o: [u8; 16] = b.try_into().ok()?;
        Some(IpAddr::from(o))
    };
    let target = v6(icmp.get(8..24)?)?;
    if target.is_multicast() {
        return None;
    }
    Some(Neighbour {
        ts_ns,
        op,
        src_mac,
        dst_mac: if op == NeighbourOp::Reply { dst_mac } else { [0; 6] },
        sender: v6(ip.get(8..24)?)?,
        target,
    })
}

/// Whether a parsed packet is a neighbour solicitation or advertisement,
/// worth reading again with [`neighbour`] for its target.
pub fn is_neighbour_discovery(p: &PacketInfo) -> bool {
    p.proto == 58 && (p.icmp_type == ND_SOLICIT || p.icmp_type == ND_ADVERT)
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

    /// A frame of a random shape: the link, VLAN tags, IP version and
    /// header fields, the transport and its length each picked from the
    /// values where the parsers' rules change, then cut and one byte changed.
    #[allow(clippy::too_many_arguments)]
    fn shaped_frame(
        link: u8,
        ethertypes: (u16, u16, u16),
        version: u8,
        ihl: u8,
        len_field: (u8, u16),
        frag: u16,
        proto: u8,
        l4: &[u8],
        cut: Option<usize>,
        flip: Option<(usize, u8)>,
    ) -> (LinkType, Vec<u8>) {
        let mut ip = Vec::new();
        match version {
            4 => {
                let header_len = usize::from(ihl) * 4;
                let total = match len_field.0 % 4 {
                    0 => (header_len.max(20) + l4.len()) as u16,
                    1 => 0,
                    _ => len_field.1,
                };
                ip.push(0x40 | ihl);
                ip.push(0);
                ip.extend(total.to_be_bytes());
                ip.extend([0, 1]);
                ip.extend(frag.to_be_bytes());
                ip.extend([64, proto, 0, 0, 192, 0, 2, 1, 198, 51, 100, 7]);
                ip.resize(ip.len().max(header_len), 1);
            }
            6 => {
                let declared = match len_field.0 % 4 {
                    0 => l4.len() as u16,
                    1 => 0,
                    _ => len_field.1,
                };
                ip.extend([0x60, 0, 0, 0]);
                ip.extend(declared.to_be_bytes());
                ip.extend([proto, 64]);
                ip.extend([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
                ip.extend([0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
            }
            v => ip.extend([v << 4 | 5, 0, 0, 20]),
        }
        ip.extend(l4);
        let (outer, inner, innermost) = ethertypes;
        let (link, mut data) = match link % 4 {
            0 => {
                let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
                f.extend(outer.to_be_bytes());
                if matches!(outer, 0x8100 | 0x88a8 | 0x9100) {
                    f.extend([0, 7]);
                    f.extend(inner.to_be_bytes());
                    if matches!(inner, 0x8100 | 0x88a8 | 0x9100) {
                        f.extend([0, 8]);
                        f.extend(innermost.to_be_bytes());
                    }
                }
                (LinkType::Ethernet, f)
            }
            1 => (LinkType::RawIp, Vec::new()),
            2 => {
                let mut f = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0];
                f.extend(outer.to_be_bytes());
                (LinkType::LinuxSll, f)
            }
            _ => (LinkType::Null, vec![2, 0, 0, 0]),
        };
        data.extend(ip);
        if let Some(cut) = cut {
            data.truncate(cut);
        }
        if let Some((at, byte)) = flip {
            if !data.is_empty() {
                let at = at % data.len();
                data[at] = byte;
            }
        }
        (link, data)
    }

    fn ethertype() -> impl proptest::strategy::Strategy<Value = u16> {
        use proptest::prelude::*;
        prop_oneof![
            4 => Just(0x0800u16),
            4 => Just(0x86dd),
            1 => Just(0x8100),
            1 => Just(0x88a8),
            1 => Just(0x9100),
            1 => Just(0x0806),
            1 => any::<u16>(),
        ]
    }

    fn transport_bytes() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        // An ICMP-looking start (the types whose lengths differ, code 0) or
        // a TCP-looking header (data offset 0–15 in the 13th byte), then
        // anything, at any length.
        let icmp_type = proptest::sample::select(vec![0u8, 3, 8, 11, 13, 14, 128, 129, 135, 136]);
        (proptest::collection::vec(any::<u8>(), 0..72), icmp_type, 0u8..16, 0u8..3).prop_map(
            |(mut b, icmp_type, offset, shape)| {
                match shape {
                    0 if b.len() > 1 => b[..2].copy_from_slice(&[icmp_type, 0]),
                    1 if b.len() > 12 => b[12] = offset << 4,
                    _ => {}
                }
                b
            },
        )
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(20_000))]
        #[test]
        fn the_hand_parser_gives_what_etherparse_gives_for_any_frame(
            link in 0u8..4,
            ethertypes in (ethertype(), ethertype(), ethertype()),
            version in proptest::prop_oneof![4 => proptest::strategy::Just(4u8), 4 => proptest::strategy::Just(6u8), 1 => 0u8..16],
            ihl in proptest::prop_oneof![6 => proptest::strategy::Just(5u8), 1 => 0u8..16],
            len_field in (proptest::prelude::any::<u8>(), proptest::prelude::any::<u16>()),
            frag in proptest::prop_oneof![4 => proptest::strategy::Just(0u16), 2 => proptest::strategy::Just(0x4000u16), 1 => proptest::strategy::Just(0x2000u16), 1 => proptest::prelude::any::<u16>()],
            proto in proptest::sample::select(vec![1u8, 2, 6, 6, 17, 17, 0, 43, 44, 47, 50, 51, 58, 58, 59, 60, 135, 253]),
            l4 in transport_bytes(),
            cut in proptest::option::weighted(0.3, 0usize..160),
            flip in proptest::option::weighted(0.3, (0usize..160, proptest::prelude::any::<u8>())),
        ) {
            let (link, data) = shaped_frame(link, ethertypes, version, ihl, len_field, frag, proto, &l4, cut, flip);
            let f = frame(&data, link);
            proptest::prop_assert_eq!(parse(&f), parse_with_etherparse(&f), "frame {:02x?} on {:?}", data, link);
        }
    }

    #[test]
    fn the_hand_parser_reads_nearly_every_frame_of_the_bundled_captures_as_etherparse_does() {
        use gatewarden_capture::{file::CaptureFile, PacketSource};
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut paths = vec![root.join("samples/demo.pcap"), root.join("samples/synthetic.pcap")];
        let mut lab: Vec<_> = std::fs::read_dir(root.join("datasets/lab"))
            .expect("datasets/lab is in the repository")
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "pcap"))
            .collect();
        lab.sort();
        paths.extend(lab);
        let (mut frames, mut by_hand) = (0usize, 0usize);
        for path in &paths {
            let mut capture = CaptureFile::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            while let Some(f) = capture.next_frame().unwrap() {
                let reference = parse_with_etherparse(&f);
                assert_eq!(parse(&f), reference, "{}: frame {:02x?}", path.display(), f.data);
                frames += 1;
                if let Some(info) = parse_common(&f) {
                    assert_eq!(Ok(info), reference);
                    by_hand += 1;
                }
            }
        }
        assert!(frames > 50_000, "only {frames} frames in {} captures", paths.len());
        // The point of the hand parser: the common shapes never reach etherparse.
        assert!(by_hand * 100 >= frames * 99, "{by_hand} of {frames} frames read by hand");
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
        assert_eq!(dest_mac(&frame(&data, LinkType::Ethernet)), data[0..6].try_into().ok());
        assert_eq!(dest_mac(&frame(&data[..5], LinkType::Ethernet)), None);
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

    fn arp_body(op: u16, sha: [u8; 6], spa: [u8; 4], tha: [u8; 6], tpa: [u8; 4]) -> Vec<u8> {
        let mut a = vec![0, 1, 0x08, 0x00, 6, 4];
        a.extend(op.to_be_bytes());
        a.extend(sha);
        a.extend(spa);
        a.extend(tha);
        a.extend(tpa);
        a
    }

    fn nd(kind: u8, hop_limit: u8, src: [u8; 16], target: [u8; 16]) -> Vec<u8> {
        let mut icmp = vec![kind, 0, 0, 0, 0, 0, 0, 0];
        icmp.extend(target);
        icmp.extend([1, 1, 2, 0, 0, 0, 0, 1]); // source link-layer address option
        let mut v = vec![0x60, 0, 0, 0];
        v.extend((icmp.len() as u16).to_be_bytes());
        v.extend([58, hop_limit]);
        v.extend(src);
        v.extend([0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 0x42]); // solicited-node multicast
        v.extend(icmp);
        v
    }

    const ASKER: [u8; 6] = [2, 0, 0, 0, 0, 1];

    #[test]
    fn arp_requests_and_replies_are_read_through_vlan_tags() {
        let req = arp_body(1, ASKER, [192, 0, 2, 66], [0; 6], [192, 0, 2, 7]);
        let data = eth(0x0806, Some(20), &req);
        let f = frame(&data, LinkType::Ethernet);
        assert_eq!(parse(&f), Err(SkipReason::NotIp), "ARP is still no flow");
        let n = neighbour(&f).unwrap();
        assert_eq!(n.op, NeighbourOp::Request);
        assert_eq!(
            (n.src_mac, n.sender.to_string(), n.target.to_string()),
            (ASKER, "192.0.2.66".into(), "192.0.2.7".into())
        );
        assert!(!n.is_self_check());
        let rep = arp_body(2, [2, 0, 0, 0, 0, 7], [192, 0, 2, 7], ASKER, [192, 0, 2, 66]);
        let data = eth(0x0806, None, &rep);
        let n = neighbour(&frame(&data, LinkType::Ethernet)).unwrap();
        assert_eq!((n.op, n.dst_mac, n.sender.to_string()), (NeighbourOp::Reply, ASKER, "192.0.2.7".into()));
        assert_eq!(n.target.to_string(), "192.0.2.7", "a reply names the address it resolves, as the request did");
        // Over Linux SLL the sender hardware address stands for the Ethernet source.
        let mut sll = vec![0u8; 14];
        sll.extend(0x0806u16.to_be_bytes());
        sll.extend(&req);
        assert_eq!(neighbour(&frame(&sll, LinkType::LinuxSll)).unwrap().src_mac, ASKER);
    }

    #[test]
    fn gratuitous_arp_and_probes_are_self_checks() {
        let garp = arp_body(1, ASKER, [192, 0, 2, 66], [0; 6], [192, 0, 2, 66]);
        let data = eth(0x0806, None, &garp);
        assert!(neighbour(&frame(&data, LinkType::Ethernet)).unwrap().is_self_check());
        let probe = arp_body(1, ASKER, [0; 4], [0; 6], [192, 0, 2, 99]);
        let data = eth(0x0806, None, &probe);
        assert!(neighbour(&frame(&data, LinkType::Ethernet)).unwrap().is_self_check());
    }

    #[test]
    fn malformed_arp_is_none_never_a_panic() {
        let good = arp_body(1, ASKER, [192, 0, 2, 66], [0; 6], [192, 0, 2, 7]);
        let mut bad = Vec::new();
        for (at, v) in [(1usize, 6u8), (3, 0xdd), (4, 8), (5, 16), (7, 3)] {
            let mut b = good.clone();
            b[at] = v;
            bad.push(b);
        }
        for b in bad {
            assert_eq!(neighbour(&frame(&eth(0x0806, None, &b), LinkType::Ethernet)), None, "{b:02x?}");
        }
        let full = eth(0x0806, Some(5), &good);
        for cut in 0..full.len() {
            assert_eq!(neighbour(&frame(&full[..cut], LinkType::Ethernet)), None, "cut at {cut}");
        }
        assert!(neighbour(&frame(&full, LinkType::RawIp)).is_none());
    }

    #[test]
    fn neighbour_solicitations_give_the_target_not_the_multicast_destination() {
        let src = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let target = [0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x42];
        let data = eth(0x86dd, None, &nd(135, 255, src, target));
        let f = frame(&data, LinkType::Ethernet);
        let p = parse(&f).unwrap();
        assert!(is_neighbour_discovery(&p));
        assert_eq!(p.dst.to_string(), "ff02::1:ff00:42");
        let n = neighbour(&f).unwrap();
        assert_eq!(
            (n.op, n.sender.to_string(), n.target.to_string()),
            (NeighbourOp::Request, "fe80::1".into(), "2001:db8::42".into())
        );
        // Duplicate address detection: from ::, for its own tentative address.
        let data = eth(0x86dd, None, &nd(135, 255, [0; 16], target));
        assert!(neighbour(&frame(&data, LinkType::Ethernet)).unwrap().is_self_check());
        let data = eth(0x86dd, None, &nd(136, 255, target, target));
        let n = neighbour(&frame(&data, LinkType::Ethernet)).unwrap();
        assert_eq!((n.op, n.dst_mac), (NeighbourOp::Reply, [2, 0, 0, 0, 0, 2]));
        // Not from the link (hop limit below 255): RFC 4861 says drop it.
        let data = eth(0x86dd, None, &nd(135, 64, src, target));
        assert_eq!(neighbour(&frame(&data, LinkType::Ethernet)), None);
        // A payload length too short for the target (the frame has the bytes anyway).
        let mut short = nd(135, 255, src, target);
        short[4..6].copy_from_slice(&4u16.to_be_bytes());
        let data = eth(0x86dd, None, &short);
        assert_eq!(parse(&frame(&data, LinkType::Ethernet)), Err(SkipReason::TransportMalformed));
        assert_eq!(neighbour(&frame(&data, LinkType::Ethernet)), None);
        let full = eth(0x86dd, None, &nd(135, 255, src, target));
        for cut in 0..full.len() - 8 {
            assert_eq!(neighbour(&frame(&full[..cut], LinkType::Ethernet)), None, "cut at {cut}");
        }
    }

    /// `nmap -f`'s probe: a TCP SYN header cut in 8-byte IPv4 fragments.
    fn nmap_f_fragments(id: u16, dport: u16) -> Vec<Vec<u8>> {
        let header = tcp(40000, dport, tcp_flags::SYN);
        (0..3)
            .map(|k| {
                let part = &header[k * 8..(k * 8 + 8).min(20)];
                let mut ip = ipv4(6, 20 + part.len() as u16, part);
                ip[4..6].copy_from_slice(&id.to_be_bytes());
                let more = if k < 2 { 0x2000 } else { 0 };
                ip[6..8].copy_from_slice(&(more | k as u16).to_be_bytes());
                ip
            })
            .collect()
    }

    #[test]
    fn a_first_fragment_is_counted_as_a_fragment_not_skipped_as_malformed() {
        let parts = nmap_f_fragments(0x1234, 443);
        for (k, ip) in parts.iter().enumerate() {
            let p = parse(&frame(ip, LinkType::RawIp)).unwrap_or_else(|e| panic!("fragment {k}: {e:?}"));
            assert_eq!((p.proto, p.sport, p.dport, p.tcp_flags), (6, 0, 0, 0));
            let f = p.fragment.expect("marked as a fragment");
            assert_eq!((f.id, f.offset, f.more), (0x1234, 8 * k as u32, k < 2));
            assert_eq!(fragment_data(&frame(ip, LinkType::RawIp)).unwrap(), &ip[20..]);
        }
        // An unfragmented packet is not marked, by either parser.
        let whole = ipv4(6, 40, &tcp(40000, 443, tcp_flags::SYN));
        assert_eq!(parse(&frame(&whole, LinkType::RawIp)).unwrap().fragment, None);
        assert_eq!(parse_with_etherparse(&frame(&whole, LinkType::RawIp)).unwrap().fragment, None);
    }

    #[test]
    fn an_ipv6_fragment_header_marks_the_fragment_behind_other_extensions() {
        let header = tcp(40000, 22, tcp_flags::SYN);
        // Destination options (8 bytes), then a fragment header: offset 0, more, id 0xdeadbeef.
        let mut ext = vec![44, 0, 1, 4, 0, 0, 0, 0];
        ext.extend([6, 0, 0x00, 0x01, 0xde, 0xad, 0xbe, 0xef]);
        ext.extend(&header[..8]);
        let ip = ipv6(60, ext.len() as u16, &ext);
        let p = parse(&frame(&ip, LinkType::RawIp)).unwrap();
        assert_eq!((p.proto, p.dport), (6, 0));
        assert_eq!(p.fragment, Some(Fragment { id: 0xdead_beef, offset: 0, more: true, headers: 0 }));
        assert_eq!(fragment_data(&frame(&ip, LinkType::RawIp)).unwrap(), &header[..8]);
        // A fragment header saying "whole datagram" (offset 0, no more) is no fragment.
        let mut atomic = vec![6, 0, 0, 0, 0, 0, 0, 9];
        atomic.extend(&header);
        let ip = ipv6(44, atomic.len() as u16, &atomic);
        let p = parse(&frame(&ip, LinkType::RawIp)).unwrap();
        assert_eq!((p.fragment, p.dport, p.tcp_flags), (None, 22, tcp_flags::SYN));
        // An atomic fragment header in front of a real one hides nothing.
        let mut two = vec![44, 0, 0, 0, 0, 0, 0, 9];
        two.extend([6, 0, 0x00, 0x01, 0, 0, 0, 10]);
        two.extend(&header[..8]);
        let ip2 = ipv6(44, two.len() as u16, &two);
        let p = parse(&frame(&ip2, LinkType::RawIp)).unwrap();
        assert_eq!(p.fragment, Some(Fragment { id: 10, offset: 0, more: true, headers: 0 }));
        // A chain cut short is not a panic.
        for cut in 40..ip.len() {
            let _ = parse(&frame(&ip[..cut], LinkType::RawIp));
        }
    }

    #[test]
    fn an_nmap_f_probe_becomes_one_syn_flow_to_its_port() {
        let mut heads = crate::fragments::FragmentHeads::new();
        let mut table = crate::table::FlowTable::new(100, 60, 300);
        let mut index = 0;
        for (k, ip) in nmap_f_fragments(7, 8080).iter().enumerate() {
            let f = Frame { ts_ns: 1_000 + k as u64, link: LinkType::RawIp, data: ip, orig_len: ip.len() as u32 };
            let mut p = parse(&f).unwrap();
            heads.resolve(&mut p, fragment_data(&f).unwrap());
            index = table.observe(&p).index;
        }
        assert_eq!(table.len(), 1, "three fragments, one flow");
        let flow = table.get(index);
        assert_eq!((flow.dport(), flow.fwd_packets, flow.flag_counts[0]), (8080, 3, 1), "one SYN in three packets");
    }

    /// An IPv6 TCP SYN to port 22 with 100 bytes of data and a Destination
    /// Options header after its fragment header (so in the fragmentable
    /// part: offsets count from its start), cut at `cuts` (multiples of 8).
    /// Each later fragment's data starts with bytes etherparse would read
    /// as more extension headers (the ACK field's 0: a hop-by-hop header).
    fn ipv6_options_then_syn_fragments(id: u32, cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut body = vec![6, 0, 1, 4, 0, 0, 0, 0];
        body.extend(tcp(40000, 22, tcp_flags::SYN));
        body.extend([0xab; 100]);
        let mut bounds = vec![0];
        bounds.extend(cuts);
        bounds.push(body.len());
        bounds
            .windows(2)
            .map(|w| {
                let more = u16::from(w[1] < body.len());
                let mut ext = vec![60, 0];
                ext.extend((w[0] as u16 | more).to_be_bytes());
                ext.extend(id.to_be_bytes());
                ext.extend(&body[w[0]..w[1]]);
                ipv6(44, ext.len() as u16, &ext)
            })
            .collect()
    }

    /// What [`through_the_table`] saw: the tables, and per packet its
    /// flow's index and its transport payload length.
    struct Counted {
        table: crate::table::FlowTable,
        heads: crate::fragments::FragmentHeads,
        flows: Vec<u32>,
        payloads: Vec<u32>,
    }

    /// Parses, resolves and counts `frames` in order, as the router does.
    fn through_the_table(frames: &[Vec<u8>]) -> Counted {
        let mut c = Counted {
            table: crate::table::FlowTable::new(100, 60, 300),
            heads: crate::fragments::FragmentHeads::new(),
            flows: Vec::new(),
            payloads: Vec::new(),
        };
        for (k, ip) in frames.iter().enumerate() {
            let f = Frame { ts_ns: 1_000 + k as u64, link: LinkType::RawIp, data: ip, orig_len: ip.len() as u32 };
            let mut p = parse(&f).unwrap_or_else(|e| panic!("fragment {k}: {e:?}"));
            c.heads.resolve(&mut p, fragment_data(&f).unwrap());
            c.payloads.push(p.payload_len);
            c.flows.push(c.table.observe(&p).index);
        }
        c
    }

    #[test]
    fn ipv6_options_after_the_fragment_header_neither_hide_a_syn_nor_lose_its_later_fragments() {
        // The whole chain and header in the first fragment (RFC 8200), and
        // the header split after its ports (nmap -f style).
        for cuts in [&[32][..], &[16, 24]] {
            let frames = ipv6_options_then_syn_fragments(0x0bad_cafe, cuts);
            let c = through_the_table(&frames);
            assert_eq!(c.table.len(), 1, "cuts {cuts:?}: every fragment in the SYN's flow");
            let flow = c.table.get(c.flows[0]);
            assert_eq!((flow.key.proto, flow.dport()), (6, 22), "cuts {cuts:?}");
            assert_eq!((flow.fwd_packets, flow.flag_counts[0]), (frames.len() as u32, 1), "cuts {cuts:?}: one SYN");
            assert_eq!(c.heads.unmapped, 0, "cuts {cuts:?}");
            assert_eq!(c.payloads.iter().sum::<u32>(), 100, "cuts {cuts:?}: options and header are no payload");
        }
        // The options alone first: that fragment is counted before any port
        // is known (port-less, as any fragment ahead of its ports), the
        // rest make the SYN.
        let frames = ipv6_options_then_syn_fragments(9, &[8, 16, 24]);
        let c = through_the_table(&frames);
        assert_eq!(c.heads.unmapped, 1);
        let syn = c.table.get(c.flows[3]);
        assert_eq!((syn.key.proto, syn.dport(), syn.fwd_packets, syn.flag_counts[0]), (6, 22, 3, 1));
        assert_eq!(c.payloads.iter().sum::<u32>(), 100);
        // A later fragment ahead of its first cannot know where the
        // transport starts behind the options: it stays port-less, and the
        // first fragment, which holds the whole header (as Linux requires
        // of an IPv6 first fragment), still makes the SYN.
        let mut frames = ipv6_options_then_syn_fragments(7, &[32]);
        frames.swap(0, 1);
        let c = through_the_table(&frames);
        assert_eq!(c.heads.unmapped, 1);
        let syn = c.table.get(c.flows[1]);
        assert_eq!((syn.key.proto, syn.dport(), syn.flag_counts[0]), (6, 22, 1));
    }

    /// An IPv6 SYN to port 22 behind an 80-byte Destination Options header
    /// (one unknown option Linux skips), as the red-team scan sent it: the
    /// TCP header starts at byte 134 of the frame (138 behind a tag).
    fn syn_behind_destination_options(vlan: Option<u16>) -> Vec<u8> {
        let mut ext = vec![6, 9, 0x1e, 76];
        ext.resize(80, 0);
        ext.extend(tcp(40000, 22, tcp_flags::SYN));
        eth(0x86dd, vlan, &ipv6(60, ext.len() as u16, &ext))
    }

    /// Both parsers' answer for `data` as captured from a frame of `wire` bytes.
    fn parse_captured(data: &[u8], wire: usize) -> Result<PacketInfo, SkipReason> {
        let f = Frame { ts_ns: 7, link: LinkType::Ethernet, data, orig_len: wire as u32 };
        let got = parse(&f);
        assert_eq!(got, parse_with_etherparse(&f), "the parsers agree on {data:02x?}");
        got
    }

    #[test]
    fn an_ipv6_chain_cut_by_the_capture_is_skipped_not_taken_for_a_portless_packet() {
        for vlan in [None, Some(20)] {
            let full = syn_behind_destination_options(vlan);
            let tcp_at = full.len() - 20;
            let p = parse_captured(&full, full.len()).unwrap();
            assert_eq!((p.proto, p.dport, p.tcp_flags), (6, 22, tcp_flags::SYN), "whole, it is a SYN");
            // Cut by a 128-byte snap (and anywhere else inside the chain):
            // the protocol-60 packet with no ports it used to become is gone.
            assert_eq!(parse_captured(&full[..128], full.len()), Err(SkipReason::HeadersBeyondSnap));
            for cut in tcp_at - 80 + 1..tcp_at {
                assert_eq!(parse_captured(&full[..cut], full.len()), Err(SkipReason::HeadersBeyondSnap), "cut {cut}");
            }
            // Cut after the chain, inside the TCP header: as before.
            assert_eq!(parse_captured(&full[..tcp_at + 10], full.len()), Err(SkipReason::TransportMalformed));
            // A frame that is itself that short (not cut by the capture),
            // or whose payload length ends inside its chain, is malformed.
            assert_eq!(parse_captured(&full[..128], 128), Err(SkipReason::IpMalformed));
            let mut short = full.clone();
            let at = if vlan.is_some() { 18 } else { 14 };
            short[at + 4..at + 6].copy_from_slice(&40u16.to_be_bytes());
            assert_eq!(parse_captured(&short, short.len()), Err(SkipReason::IpMalformed));
            assert_eq!(parse_captured(&short[..128], short.len()), Err(SkipReason::IpMalformed));
        }
        assert_eq!(SkipReason::ALL[SkipReason::HeadersBeyondSnap.index()], SkipReason::HeadersBeyondSnap);
        assert_eq!(SkipReason::HeadersBeyondSnap.as_str(), "headers_beyond_snap");
    }

    #[test]
    fn a_fragment_behind_a_cut_chain_is_still_counted_as_a_fragment() {
        // Destination options, then a first fragment header, then options cut by the capture.
        let mut ext = vec![44, 0, 1, 4, 0, 0, 0, 0];
        ext.extend([60, 0, 0x00, 0x01, 0, 0, 0, 5]);
        let mut opts = vec![6, 9, 0x1e, 76];
        opts.resize(80, 0);
        ext.extend(opts);
        ext.extend(tcp(40000, 22, tcp_flags::SYN));
        let full = eth(0x86dd, None, &ipv6(60, ext.len() as u16, &ext));
        let p = parse_captured(&full[..128], full.len()).unwrap();
        assert_eq!(p.fragment.map(|f| (f.id, f.offset, f.more)), Some((5, 0, true)));
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
