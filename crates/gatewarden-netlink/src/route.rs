//! rtnetlink queries the router needs: its routes' next hops, its own
//! addresses, the neighbour table (ARP/NDP) and the LAN interface's view
//! (which MAC owns which address is how forged sources are recognised).
//!
//! The messages are rust-netlink's (`netlink-packet-route`): each request is
//! its typed message (`RouteMessage`, `AddressMessage`, `LinkMessage`,
//! `NeighbourMessage`) and each reply is parsed by that type's parser, so no
//! byte offset or attribute number is written here. Only these four parsers
//! are called, not `RouteNetlinkMessage`'s dispatch over every rtnetlink
//! message (traffic control, rules, stats…): what the linker cannot reach
//! does not grow the static binary. The socket and the dump loop (`dump`)
//! stay ours: blocking, no async runtime, and every reply that does not
//! parse is an error naming the query, never a skipped entry or a panic.

use std::net::IpAddr;

use gatewarden_core::net::{network, Cidr, Mac};
use netlink_packet_core::{
    parse_string, DecodeError, Emitable, ErrorContext, NetlinkBuffer, NetlinkHeader, NlasIterator, Parseable,
    NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::{
    address::{AddressAttribute, AddressHeader, AddressMessage},
    link::LinkHeader,
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourHeader, NeighbourMessage},
    route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType, RouteVia},
    AddressFamily,
};

use crate::{Netlink, NlError};

type Result<T> = std::result::Result<T, NlError>;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

/// Next hops of this namespace's routes (rtnetlink `RTM_GETROUTE`, any
/// table): `RTA_GATEWAY`, `RTA_VIA` (an IPv4 route through an IPv6 next
/// hop) and every next hop of a multipath route.
pub fn route_gateways() -> Result<Vec<IpAddr>> {
    let mut nl = Netlink::open_protocol(netlink_sys::protocols::NETLINK_ROUTE)?;
    Ok(gateways(&routes(&mut nl)?))
}

/// Every IPv4 and IPv6 route of every table (`RTM_GETROUTE` dumps).
fn routes(nl: &mut Netlink) -> Result<Vec<RouteMessage>> {
    let mut out = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let req = RouteHeader { address_family: family, ..RouteHeader::default() };
        out.extend(dump::<RouteMessage>(nl, &req, "read the routing table (RTM_GETROUTE)")?);
    }
    Ok(out)
}

/// The addresses configured on this namespace's interfaces (rtnetlink `RTM_GETADDR`).
pub fn local_addresses() -> Result<Vec<IpAddr>> {
    let mut nl = Netlink::open_protocol(netlink_sys::protocols::NETLINK_ROUTE)?;
    let replies: Vec<AddressMessage> =
        dump(&mut nl, &AddressHeader::default(), "read the interface addresses (RTM_GETADDR)")?;
    Ok(addresses(&replies))
}

/// This namespace's neighbour table (rtnetlink `RTM_GETNEIGH`): IPv4 (ARP)
/// and IPv6 (NDP) addresses with their link-layer address. Incomplete and
/// failed entries carry no link-layer address and are left out.
pub fn neighbours() -> Result<Vec<(IpAddr, [u8; 6])>> {
    Ok(neighbour_entries()?.into_iter().map(|n| (n.ip, n.mac)).collect())
}

/// One neighbour entry with how fresh it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighbourEntry {
    /// The neighbour's address.
    pub ip: IpAddr,
    /// Its link-layer address.
    pub mac: [u8; 6],
    /// Milliseconds since the kernel last confirmed it (`NDA_CACHEINFO`
    /// `ndm_confirmed`; `u32::MAX` when the kernel did not say).
    pub confirmed_ago_ms: u32,
}

/// [`neighbours`] with each entry's age, so a caller that must keep only
/// some (a bounded message) can keep the freshest.
pub fn neighbour_entries() -> Result<Vec<NeighbourEntry>> {
    // nda_cacheinfo times are in USER_HZ ticks, 100 per second on Linux.
    const MS_PER_TICK: u32 = 10;
    let mut nl = Netlink::open_protocol(netlink_sys::protocols::NETLINK_ROUTE)?;
    let replies: Vec<NeighbourMessage> =
        dump(&mut nl, &NeighbourHeader::default(), "read the neighbour table (RTM_GETNEIGH)")?;
    Ok(replies
        .iter()
        .filter_map(|n| {
            let (ip, mac) = neighbour_pair(n, None)?;
            if mac == [0; 6] {
                return None;
            }
            let confirmed_ago_ms = n
                .attributes
                .iter()
                .find_map(|a| match a {
                    NeighbourAttribute::CacheInfo(c) => Some(c.confirmed.saturating_mul(MS_PER_TICK)),
                    _ => None,
                })
                .unwrap_or(u32::MAX);
            Some(NeighbourEntry { ip, mac, confirmed_ago_ms })
        })
        .collect())
}

/// What the LAN interface looks like now: its index, MAC, networks and neighbours.
#[derive(Debug, Clone, Default)]
pub struct LanView {
    /// The router's MACs (every interface).
    pub own_macs: Vec<Mac>,
    /// The LAN interface's MAC.
    pub lan_mac: Option<Mac>,
    /// The router's addresses (every interface), sorted: one per address,
    /// this end of a point-to-point link and not its peer.
    pub own_addrs: Vec<IpAddr>,
    /// Networks of the LAN interface's addresses.
    pub prefixes: Vec<Cidr>,
    /// Networks the kernel routes out of the LAN interface (unicast routes of
    /// any table, a default route included): a downstream router's subnets
    /// reach the router through the LAN, as strict reverse-path filtering
    /// would accept them there.
    pub routed: Vec<Cidr>,
    /// Neighbour entries on the LAN interface with a link-layer address.
    pub neighbours: Vec<(IpAddr, Mac)>,
}

/// Reads the LAN interface's view from rtnetlink (`RTM_GETLINK`,
/// `RTM_GETADDR`, `RTM_GETNEIGH`). An interface that does not exist (yet)
/// gives an empty view.
pub fn lan_view(interface: &str) -> Result<LanView> {
    let mut nl = Netlink::open_protocol(netlink_sys::protocols::NETLINK_ROUTE)?;
    let links: Vec<Link> = dump(&mut nl, &LinkHeader::default(), "read the interfaces (RTM_GETLINK)")?;
    let mut view = LanView::default();
    let mut index = None;
    for link in &links {
        let mac = link.address.as_deref().and_then(|v| <[u8; 6]>::try_from(v).ok());
        view.own_macs.extend(mac);
        if link.name.as_deref() == Some(interface) {
            index = Some(link.index);
            view.lan_mac = mac;
        }
    }
    view.own_macs.sort();
    view.own_macs.dedup();
    let Some(index) = index else { return Ok(view) };

    let addrs: Vec<AddressMessage> =
        dump(&mut nl, &AddressHeader::default(), "read the interface addresses (RTM_GETADDR)")?;
    view.own_addrs = addresses(&addrs);
    for a in addrs.iter().filter(|a| a.header.index == index) {
        for attr in &a.attributes {
            if let AddressAttribute::Address(ip) = attr {
                view.prefixes.push(network(*ip, a.header.prefix_len));
            }
        }
    }
    view.own_addrs.sort();
    view.own_addrs.dedup();

    view.routed = routed_out_of(&routes(&mut nl)?, index).collect();
    view.routed.sort();
    view.routed.dedup();

    let neigh: Vec<NeighbourMessage> =
        dump(&mut nl, &NeighbourHeader::default(), "read the neighbour table (RTM_GETNEIGH)")?;
    view.neighbours = neighbour_pairs(&neigh, Some(index)).collect();
    Ok(view)
}

/// Destinations of the unicast routes that leave through interface `index`
/// (its only output interface or one hop of a multipath route).
fn routed_out_of(replies: &[RouteMessage], index: u32) -> impl Iterator<Item = Cidr> + '_ {
    replies.iter().filter_map(move |r| {
        if r.header.kind != RouteType::Unicast {
            return None;
        }
        let leaves_here = r.attributes.iter().any(|a| match a {
            RouteAttribute::Oif(i) => *i == index,
            RouteAttribute::MultiPath(hops) => hops.iter().any(|h| h.interface_index == index),
            _ => false,
        });
        if !leaves_here {
            return None;
        }
        let dest = r.attributes.iter().find_map(|a| match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(IpAddr::from(*ip)),
            RouteAttribute::Destination(RouteAddress::Inet6(ip)) => Some(IpAddr::from(*ip)),
            _ => None,
        });
        // A default route has no destination attribute.
        let dest = dest.or(match r.header.address_family {
            AddressFamily::Inet => Some(IpAddr::from([0u8; 4])),
            AddressFamily::Inet6 => Some(IpAddr::from([0u8; 16])),
            _ => None,
        })?;
        Some(network(dest, r.header.destination_prefix_length))
    })
}

/// Next hops in `RTM_NEWROUTE` replies.
fn gateways(replies: &[RouteMessage]) -> Vec<IpAddr> {
    fn collect(attrs: &[RouteAttribute], out: &mut Vec<IpAddr>) {
        for a in attrs {
            match a {
                RouteAttribute::Gateway(RouteAddress::Inet(ip)) => out.push((*ip).into()),
                RouteAttribute::Gateway(RouteAddress::Inet6(ip)) => out.push((*ip).into()),
                RouteAttribute::Via(RouteVia::Inet(ip)) => out.push((*ip).into()),
                RouteAttribute::Via(RouteVia::Inet6(ip)) => out.push((*ip).into()),
                RouteAttribute::MultiPath(hops) => {
                    for hop in hops {
                        collect(&hop.attributes, out);
                    }
                }
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    for r in replies {
        collect(&r.attributes, &mut out);
    }
    out
}

/// One address per `RTM_NEWADDR` reply: `IFA_LOCAL` (this end of a
/// point-to-point link), else `IFA_ADDRESS`.
fn addresses(replies: &[AddressMessage]) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for a in replies {
        let (mut local, mut address) = (None, None);
        for attr in &a.attributes {
            match attr {
                AddressAttribute::Local(ip) => local = Some(*ip),
                AddressAttribute::Address(ip) => address = Some(*ip),
                _ => {}
            }
        }
        out.extend(local.or(address));
    }
    out
}

/// `NUD_INCOMPLETE`, `NUD_FAILED`: entries whose link-layer address is not usable.
const NUD_UNUSABLE: u16 = 0x01 | 0x20;

/// (address, MAC) of `RTM_NEWNEIGH` replies with a 6-byte link-layer
/// address. With `on_interface`, only that interface's entries in a usable
/// state (not `NUD_NONE`, incomplete or failed).
fn neighbour_pairs(
    replies: &[NeighbourMessage],
    on_interface: Option<u32>,
) -> impl Iterator<Item = (IpAddr, [u8; 6])> + '_ {
    replies.iter().filter_map(move |n| neighbour_pair(n, on_interface))
}

/// One reply's address and link-layer address (on `on_interface` and usable, if given).
fn neighbour_pair(n: &NeighbourMessage, on_interface: Option<u32>) -> Option<(IpAddr, [u8; 6])> {
    {
        if let Some(index) = on_interface {
            let state = u16::from(n.header.state);
            if n.header.ifindex != index || state == 0 || state & NUD_UNUSABLE != 0 {
                return None;
            }
        }
        let (mut dst, mut mac) = (None, None);
        for a in &n.attributes {
            match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => dst = Some(IpAddr::from(*ip)),
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => dst = Some(IpAddr::from(*ip)),
                NeighbourAttribute::LinkLayerAddress(v) => mac = <[u8; 6]>::try_from(v.as_slice()).ok(),
                _ => {}
            }
        }
        Some((dst?, mac?))
    }
}

/// A reply rtnetlink dumps: the request is a `GET` carrying a
/// [`Dumped::Request`] header, each reply a `NEW` parsed as `Self`.
///
/// Requests are the bare headers, not whole messages: a message's encoder
/// includes every attribute kind it could carry (hundreds of kB of the
/// static binary for link and route messages), a dump request carries none.
pub(crate) trait Dumped: Parseable<[u8]> {
    /// The request's fixed header (its family selects what is dumped).
    type Request: Emitable;
    /// `RTM_GET*`.
    const GET: u16;
    /// `RTM_NEW*`.
    const NEW: u16;
}

impl Dumped for RouteMessage {
    type Request = RouteHeader;
    const GET: u16 = libc::RTM_GETROUTE;
    const NEW: u16 = libc::RTM_NEWROUTE;
}

impl Dumped for AddressMessage {
    type Request = AddressHeader;
    const GET: u16 = libc::RTM_GETADDR;
    const NEW: u16 = libc::RTM_NEWADDR;
}

impl Dumped for NeighbourMessage {
    type Request = NeighbourHeader;
    const GET: u16 = libc::RTM_GETNEIGH;
    const NEW: u16 = libc::RTM_NEWNEIGH;
}

/// The two attributes of an `RTM_NEWLINK` reply the LAN view needs.
///
/// Not `LinkMessage`'s parser: it decodes every link attribute (link kinds,
/// VF, XDP, statistics, per-family data), which with its encoder measured
/// ≈ 290 kB of the static binary for two fields, and it would fail the
/// whole view on one exotic interface. The header and the attribute walk are still
/// netlink-packet-route's and netlink-packet-core's checked parsers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Link {
    /// `ifi_index`.
    index: u32,
    /// `IFLA_ADDRESS`: the link-layer address (6 bytes on Ethernet).
    address: Option<Vec<u8>>,
    /// `IFLA_IFNAME`.
    name: Option<String>,
}

impl Parseable<[u8]> for Link {
    fn parse(buf: &[u8]) -> std::result::Result<Link, DecodeError> {
        let header = LinkHeader::parse(buf).context("link message header")?;
        let mut link = Link { index: header.index, ..Link::default() };
        for nla in NlasIterator::new(buf.get(header.buffer_len()..).unwrap_or_default()) {
            let nla = nla.context("link attribute")?;
            match nla.kind() {
                libc::IFLA_ADDRESS => link.address = Some(nla.value().to_vec()),
                libc::IFLA_IFNAME => link.name = Some(parse_string(nla.value()).context("IFLA_IFNAME")?),
                _ => {}
            }
        }
        Ok(link)
    }
}

impl Dumped for Link {
    type Request = LinkHeader;
    const GET: u16 = libc::RTM_GETLINK;
    const NEW: u16 = libc::RTM_NEWLINK;
}

/// Sends `request` as a dump (`NLM_F_REQUEST | NLM_F_DUMP`) on `nl` and
/// returns every reply until `NLMSG_DONE`. `what` names the query in errors.
fn dump<M: Dumped>(nl: &mut Netlink, request: &M::Request, what: &str) -> Result<Vec<M>> {
    let seq = nl.take_seq();
    nl.sock.send(&encode_dump::<M>(request, seq), 0)?;
    let mut out = Vec::new();
    loop {
        nl.buf.clear();
        nl.buf.reserve(1 << 16);
        nl.sock.recv(&mut nl.buf, 0)?;
        if parse_replies(&nl.buf, seq, what, &mut out)? {
            return Ok(out);
        }
    }
}

/// The bytes of a dump request for `request` with sequence number `seq`.
fn encode_dump<M: Dumped>(request: &M::Request, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.length = (header.buffer_len() + request.buffer_len()) as u32;
    header.message_type = M::GET;
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = seq;
    let mut bytes = vec![0; header.length as usize];
    header.emit(&mut bytes);
    request.emit(&mut bytes[header.buffer_len()..]);
    bytes
}

/// Parses one datagram of a dump's replies into `out`; messages of other
/// sequence numbers (a late answer to an earlier query) are skipped.
/// Returns whether the dump is complete (`NLMSG_DONE`). A truncated or
/// unparsable message, or the kernel's error, is an error naming `what`.
fn parse_replies<M: Dumped>(mut buf: &[u8], seq: u32, what: &str, out: &mut Vec<M>) -> Result<bool> {
    let mut index = 0usize;
    while !buf.is_empty() {
        let malformed = |e: &dyn std::fmt::Display| {
            NlError::Protocol(format!(
                "{what}: reply message {index} cannot be parsed ({e}); this kernel's rtnetlink format \
                 is not understood, please report it with `uname -r`"
            ))
        };
        let header = NetlinkBuffer::new_checked(buf).map_err(|e| malformed(&e))?;
        let len = header.length() as usize;
        let (ty, msg_seq, flags) = (header.message_type(), header.sequence_number(), header.flags());
        let payload = header.payload();
        if msg_seq == seq {
            match ty {
                NLMSG_DONE => return Ok(true),
                NLMSG_ERROR => {
                    let raw = crate::RawMsg { ty, flags, seq: msg_seq, payload };
                    let (errno, ext, _) = crate::parse_error(&raw);
                    if errno == 0 {
                        return Ok(true);
                    }
                    return Err(NlError::Kernel {
                        what: what.to_string(),
                        source: std::io::Error::from_raw_os_error(errno),
                        ext,
                        hint: crate::hint_for(errno),
                    });
                }
                t if t == M::NEW => out.push(M::parse(payload).map_err(|e| malformed(&e))?),
                _ => {}
            }
        }
        index += 1;
        buf = buf.get(((len + 3) & !3)..).unwrap_or_default();
    }
    Ok(false)
}
#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::NLM_F_MULTIPART;
    use netlink_packet_route::link::{LinkAttribute, LinkMessage};
    use proptest::prelude::*;

    const SEQ: u32 = 77;

    /// The bytes of one kernel reply (`RTM_NEW*`) carrying `m`.
    fn reply<M: Dumped>(m: &impl Emitable, seq: u32) -> Vec<u8> {
        let mut header = NetlinkHeader::default();
        header.length = (header.buffer_len() + m.buffer_len()) as u32;
        header.message_type = M::NEW;
        header.flags = NLM_F_MULTIPART;
        header.sequence_number = seq;
        let mut bytes = vec![0; header.length as usize];
        header.emit(&mut bytes);
        m.emit(&mut bytes[header.buffer_len()..]);
        bytes
    }

    fn neighbour(ip: IpAddr, mac: [u8; 6]) -> NeighbourMessage {
        let mut n = NeighbourMessage::default();
        n.header.family = if ip.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
        n.header.ifindex = 3;
        n.header.state = netlink_packet_route::neighbour::NeighbourState::Reachable;
        let dst = match ip {
            IpAddr::V4(a) => NeighbourAddress::Inet(a),
            IpAddr::V6(a) => NeighbourAddress::Inet6(a),
        };
        n.attributes = vec![NeighbourAttribute::Destination(dst), NeighbourAttribute::LinkLayerAddress(mac.to_vec())];
        n
    }

    /// NLMSG_DONE for `seq` (4-byte payload: 0).
    fn done(seq: u32) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&20u32.to_ne_bytes());
        b.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
        b.extend_from_slice(&NLM_F_MULTIPART.to_ne_bytes());
        b.extend_from_slice(&seq.to_ne_bytes());
        b.extend_from_slice(&[0; 8]);
        b
    }

    fn datagram() -> Vec<u8> {
        let mut buf = reply::<NeighbourMessage>(&neighbour("192.0.2.20".parse().unwrap(), [2, 0, 0, 0, 0, 0x20]), SEQ);
        buf.extend(reply::<NeighbourMessage>(&neighbour("2001:db8::20".parse().unwrap(), [2, 0, 0, 0, 0, 0x21]), SEQ));
        buf.extend(done(SEQ));
        buf
    }

    #[test]
    fn requests_are_the_kernels_dump_messages() {
        let r = RouteHeader { address_family: AddressFamily::Inet6, ..RouteHeader::default() };
        let bytes = encode_dump::<RouteMessage>(&r, 9);
        // nlmsghdr (16) + struct rtmsg (12): RTM_GETROUTE, REQUEST|DUMP, seq 9, AF_INET6.
        assert_eq!(bytes.len(), 28);
        assert_eq!(u32::from_ne_bytes(bytes[0..4].try_into().unwrap()), 28);
        assert_eq!(u16::from_ne_bytes([bytes[4], bytes[5]]), 26);
        assert_eq!(u16::from_ne_bytes([bytes[6], bytes[7]]), 0x301);
        assert_eq!(u32::from_ne_bytes(bytes[8..12].try_into().unwrap()), 9);
        assert_eq!(bytes[16], libc::AF_INET6 as u8);
        // struct ifinfomsg is 16 bytes, ifaddrmsg 8, ndmsg 12.
        assert_eq!(encode_dump::<Link>(&LinkHeader::default(), 1).len(), 32);
        assert_eq!(encode_dump::<AddressMessage>(&AddressHeader::default(), 1).len(), 24);
        assert_eq!(encode_dump::<NeighbourMessage>(&NeighbourHeader::default(), 1).len(), 28);
    }

    #[test]
    fn a_link_reply_gives_its_index_name_and_address_and_ignores_the_rest() {
        let mut l = LinkMessage::default();
        l.header.index = 7;
        l.attributes = vec![
            LinkAttribute::Mtu(1500),
            LinkAttribute::IfName("lan0".into()),
            LinkAttribute::Address(vec![2, 0, 0, 0, 0, 1]),
            LinkAttribute::Broadcast(vec![0xff; 6]),
        ];
        let mut buf = reply::<Link>(&l, SEQ);
        buf.extend(done(SEQ));
        let mut out: Vec<Link> = Vec::new();
        assert!(parse_replies(&buf, SEQ, "read the interfaces", &mut out).unwrap());
        assert_eq!(out, vec![Link { index: 7, address: Some(vec![2, 0, 0, 0, 0, 1]), name: Some("lan0".into()) }]);
        // An attribute running past the message is an error, not a shorter list.
        let mut bad = reply::<Link>(&l, SEQ);
        let n = bad.len();
        bad[32..34].copy_from_slice(&(n as u16).to_ne_bytes());
        assert!(parse_replies::<Link>(&bad, SEQ, "read the interfaces", &mut Vec::new()).is_err());
    }

    #[test]
    fn a_dump_is_parsed_until_done_and_other_queries_replies_are_skipped() {
        let mut buf =
            reply::<NeighbourMessage>(&neighbour("198.51.100.9".parse().unwrap(), [2, 0, 0, 0, 0, 9]), SEQ - 1);
        buf.extend(datagram());
        let mut out: Vec<NeighbourMessage> = Vec::new();
        assert!(parse_replies(&buf, SEQ, "read the neighbour table", &mut out).unwrap());
        let got: Vec<_> = neighbour_pairs(&out, None).collect();
        assert_eq!(
            got,
            vec![
                ("192.0.2.20".parse().unwrap(), [2, 0, 0, 0, 0, 0x20]),
                ("2001:db8::20".parse().unwrap(), [2, 0, 0, 0, 0, 0x21])
            ]
        );
        // Without DONE the dump goes on in the next datagram.
        let mut out: Vec<NeighbourMessage> = Vec::new();
        let first = reply::<NeighbourMessage>(&neighbour("192.0.2.20".parse().unwrap(), [2, 0, 0, 0, 0, 0x20]), SEQ);
        assert!(!parse_replies(&first, SEQ, "read the neighbour table", &mut out).unwrap());
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn a_truncated_reply_is_an_error_naming_the_query() {
        let buf = datagram();
        let cut = &buf[..buf.len() - 30];
        let e = parse_replies::<NeighbourMessage>(cut, SEQ, "read the neighbour table (RTM_GETNEIGH)", &mut Vec::new())
            .unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, NlError::Protocol(_)), "{text}");
        assert!(text.contains("read the neighbour table (RTM_GETNEIGH)") && text.contains("message 1"), "{text}");
    }

    #[test]
    fn an_attribute_of_the_wrong_size_is_an_error_not_a_skipped_entry() {
        let mut buf = reply::<NeighbourMessage>(&neighbour("192.0.2.20".parse().unwrap(), [2, 0, 0, 0, 0, 0x20]), SEQ);
        // ndmsg is 12 bytes after the 16-byte header; the first attribute is
        // NDA_DST (8 bytes: len 8, type 1, 4 address bytes). Claim 5 bytes
        // of address: an IPv4 neighbour with a 5-byte address.
        assert_eq!(u16::from_ne_bytes([buf[30], buf[31]]), 1, "NDA_DST first");
        buf[28..30].copy_from_slice(&9u16.to_ne_bytes());
        let e = parse_replies::<NeighbourMessage>(&buf, SEQ, "read the neighbour table", &mut Vec::new()).unwrap_err();
        assert!(matches!(e, NlError::Protocol(_)), "{e}");
    }

    #[test]
    fn the_kernels_refusal_is_a_kernel_error_with_its_errno() {
        let mut b = Vec::new();
        b.extend_from_slice(&36u32.to_ne_bytes());
        b.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        b.extend_from_slice(&0u16.to_ne_bytes());
        b.extend_from_slice(&SEQ.to_ne_bytes());
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(&(-libc::EPERM).to_ne_bytes());
        b.extend_from_slice(&[0; 16]); // the refused request's header
        let e = parse_replies::<RouteMessage>(&b, SEQ, "read the routing table", &mut Vec::new()).unwrap_err();
        assert_eq!(e.errno(), Some(libc::EPERM));
        assert!(e.to_string().starts_with("read the routing table: "), "{e}");
    }

    /// Raw datagrams of a dump in this process's namespace (reading needs
    /// no privilege), as the kernel sent them, renumbered to `SEQ`.
    fn raw_dump<M: Dumped>(request: &M::Request) -> Vec<Vec<u8>> {
        let mut nl = Netlink::open_protocol(netlink_sys::protocols::NETLINK_ROUTE).unwrap();
        let seq = nl.take_seq();
        nl.sock.send(&encode_dump::<M>(request, seq), 0).unwrap();
        let mut datagrams = Vec::new();
        loop {
            nl.buf.clear();
            nl.buf.reserve(1 << 16);
            nl.sock.recv(&mut nl.buf, 0).unwrap();
            let done = parse_replies::<M>(&nl.buf, seq, "dump", &mut Vec::new()).unwrap();
            let mut d = nl.buf.clone();
            let mut at = 0;
            while at + 16 <= d.len() {
                let len = u32::from_ne_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]]) as usize;
                d[at + 8..at + 12].copy_from_slice(&SEQ.to_ne_bytes());
                at += (len.max(16) + 3) & !3;
            }
            datagrams.push(d);
            if done {
                return datagrams;
            }
        }
    }

    /// Parses `request`'s real replies, then 2000 corrupted copies of each
    /// datagram (1–4 bytes changed, a quarter also cut short). Returns how
    /// many messages the uncorrupted replies held.
    fn corrupt_and_parse<M: Dumped>(request: &M::Request, next: &mut impl FnMut() -> u64) -> usize {
        let mut parsed = 0;
        for d in raw_dump::<M>(request) {
            let mut out: Vec<M> = Vec::new();
            parse_replies(&d, SEQ, "dump", &mut out).expect("the kernel's own replies parse");
            parsed += out.len();
            for _ in 0..2000 {
                let mut c = d.clone();
                for _ in 0..1 + next() % 4 {
                    let at = (next() as usize) % c.len();
                    c[at] = next() as u8;
                }
                if next() % 4 == 0 {
                    c.truncate(1 + (next() as usize) % c.len());
                }
                let _ = parse_replies::<M>(&c, SEQ, "dump", &mut Vec::new());
            }
        }
        parsed
    }

    /// Real link, address, route and neighbour replies of this machine
    /// (veths, bridges, tunnels, whatever it has), each corrupted thousands
    /// of times: the parsers answer or refuse, they never panic.
    #[test]
    fn this_machines_real_replies_corrupted_never_panic() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let links = corrupt_and_parse::<Link>(&LinkHeader::default(), &mut next);
        let addrs = corrupt_and_parse::<AddressMessage>(&AddressHeader::default(), &mut next);
        corrupt_and_parse::<NeighbourMessage>(&NeighbourHeader::default(), &mut next);
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let r = RouteHeader { address_family: family, ..RouteHeader::default() };
            corrupt_and_parse::<RouteMessage>(&r, &mut next);
        }
        assert!(links >= 1 && addrs >= 1, "this namespace has at least lo's link and address");
    }

    proptest! {
        /// Any corruption of a reply (bytes flipped, cut short) is an
        /// answer or an error, never a panic: release builds abort on one.
        #[test]
        fn corrupted_replies_never_panic(
            flips in proptest::collection::vec((0usize..200, any::<u8>()), 1..8),
            cut in 0usize..200,
        ) {
            let mut buf = datagram();
            for (at, v) in flips {
                let n = buf.len();
                buf[at % n] = v;
            }
            buf.truncate(cut.max(1).min(buf.len()));
            let _ = parse_replies::<NeighbourMessage>(&buf, SEQ, "read the neighbour table", &mut Vec::new());
        }

        /// The same for links, addresses and routes, whose parsers are larger.
        #[test]
        fn corrupted_link_address_and_route_replies_never_panic(
            kind in 0usize..3,
            flips in proptest::collection::vec((0usize..400, any::<u8>()), 1..8),
        ) {
            let flip = |mut buf: Vec<u8>| {
                for (at, v) in &flips {
                    let n = buf.len();
                    buf[at % n] = *v;
                }
                buf
            };
            match kind {
                0 => {
                    let mut l = LinkMessage::default();
                    l.header.index = 3;
                    l.attributes = vec![LinkAttribute::IfName("lan0".into()), LinkAttribute::Address(vec![2, 0, 0, 0, 0, 1])];
                    let _ = parse_replies::<Link>(&flip(reply::<Link>(&l, SEQ)), SEQ, "dump", &mut Vec::new());
                }
                1 => {
                    let mut a = AddressMessage::default();
                    a.header.family = AddressFamily::Inet6;
                    a.header.prefix_len = 64;
                    a.attributes = vec![AddressAttribute::Address("2001:db8::1".parse().unwrap())];
                    let _ = parse_replies::<AddressMessage>(&flip(reply::<AddressMessage>(&a, SEQ)), SEQ, "dump", &mut Vec::new());
                }
                _ => {
                    let mut r = RouteMessage::default();
                    r.header.address_family = AddressFamily::Inet;
                    r.attributes = vec![
                        RouteAttribute::Gateway(RouteAddress::Inet("192.0.2.254".parse().unwrap())),
                        RouteAttribute::Oif(3),
                    ];
                    let _ = parse_replies::<RouteMessage>(&flip(reply::<RouteMessage>(&r, SEQ)), SEQ, "dump", &mut Vec::new());
                }
            }
        }
    }
}
