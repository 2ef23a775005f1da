//! rtnetlink queries the router needs: its routes' next hops, its own
//! addresses, the neighbour table (ARP/NDP) and the LAN interface's view
//! (which MAC owns which address is how forged sources are recognised).
//!
//! The messages are rust-netlink's (`netlink-packet-route`): each request is
//! a typed `RouteNetlinkMessage` and each reply is parsed by its
//! deserializer, so no byte offset or attribute number is written here. The
//! socket and the dump loop ([`dump`]) stay ours: blocking, no async runtime,
//! and every reply that does not parse is an error naming the query, never
//! a skipped entry or a panic.

use std::net::IpAddr;

use gatewarden_core::net::{network, Cidr, Mac};
use netlink_packet_core::{NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_route::{
    address::{AddressAttribute, AddressMessage},
    link::{LinkAttribute, LinkMessage},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage},
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteVia},
    AddressFamily, RouteNetlinkMessage,
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
    let mut out = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut req = RouteMessage::default();
        req.header.address_family = family;
        let replies = dump(&mut nl, RouteNetlinkMessage::GetRoute(req), "read the routing table (RTM_GETROUTE)")?;
        out.extend(gateways(&replies));
    }
    Ok(out)
}

/// The addresses configured on this namespace's interfaces (rtnetlink `RTM_GETADDR`).
pub fn local_addresses() -> Result<Vec<IpAddr>> {
    let mut nl = Netlink::open_protocol(netlink_sys::protocols::NETLINK_ROUTE)?;
    let replies = dump(
        &mut nl,
        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        "read the interface addresses (RTM_GETADDR)",
    )?;
    Ok(addresses(&replies))
}

/// This namespace's neighbour table (rtnetlink `RTM_GETNEIGH`): IPv4 (ARP)
/// and IPv6 (NDP) addresses with their link-layer address. Incomplete and
/// failed entries carry no link-layer address and are left out.
pub fn neighbours() -> Result<Vec<(IpAddr, [u8; 6])>> {
    let mut nl = Netlink::open_protocol(netlink_sys::protocols::NETLINK_ROUTE)?;
    let replies = dump(
        &mut nl,
        RouteNetlinkMessage::GetNeighbour(NeighbourMessage::default()),
        "read the neighbour table (RTM_GETNEIGH)",
    )?;
    Ok(neighbour_entries(&replies, None).filter(|(_, m)| *m != [0; 6]).collect())
}

/// What the LAN interface looks like now: its index, MAC, networks and neighbours.
#[derive(Debug, Clone, Default)]
pub struct LanView {
    /// The router's MACs (every interface).
    pub own_macs: Vec<Mac>,
    /// The LAN interface's MAC.
    pub lan_mac: Option<Mac>,
    /// The router's addresses (every interface), sorted.
    pub own_addrs: Vec<IpAddr>,
    /// Networks of the LAN interface's addresses.
    pub prefixes: Vec<Cidr>,
    /// Neighbour entries on the LAN interface with a link-layer address.
    pub neighbours: Vec<(IpAddr, Mac)>,
}

/// Reads the LAN interface's view from rtnetlink (`RTM_GETLINK`,
/// `RTM_GETADDR`, `RTM_GETNEIGH`). An interface that does not exist (yet)
/// gives an empty view.
pub fn lan_view(interface: &str) -> Result<LanView> {
    let mut nl = Netlink::open_protocol(netlink_sys::protocols::NETLINK_ROUTE)?;
    let links =
        dump(&mut nl, RouteNetlinkMessage::GetLink(LinkMessage::default()), "read the interfaces (RTM_GETLINK)")?;
    let mut view = LanView::default();
    let mut index = None;
    for link in links.iter().filter_map(|m| match m {
        RouteNetlinkMessage::NewLink(l) => Some(l),
        _ => None,
    }) {
        let (mut mac, mut is_lan) = (None, false);
        for a in &link.attributes {
            match a {
                LinkAttribute::Address(v) => mac = <[u8; 6]>::try_from(v.as_slice()).ok(),
                LinkAttribute::IfName(name) => is_lan = name == interface,
                _ => {}
            }
        }
        view.own_macs.extend(mac);
        if is_lan {
            index = Some(link.header.index);
            view.lan_mac = mac;
        }
    }
    view.own_macs.sort();
    view.own_macs.dedup();
    let Some(index) = index else { return Ok(view) };

    let addrs = dump(
        &mut nl,
        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        "read the interface addresses (RTM_GETADDR)",
    )?;
    view.own_addrs = addresses(&addrs);
    for a in addrs.iter().filter_map(|m| match m {
        RouteNetlinkMessage::NewAddress(a) if a.header.index == index => Some(a),
        _ => None,
    }) {
        for attr in &a.attributes {
            if let AddressAttribute::Address(ip) = attr {
                view.prefixes.push(network(*ip, a.header.prefix_len));
            }
        }
    }
    view.own_addrs.sort();
    view.own_addrs.dedup();

    let neigh = dump(
        &mut nl,
        RouteNetlinkMessage::GetNeighbour(NeighbourMessage::default()),
        "read the neighbour table (RTM_GETNEIGH)",
    )?;
    view.neighbours = neighbour_entries(&neigh, Some(index)).collect();
    Ok(view)
}

/// Next hops in `RTM_NEWROUTE` replies.
fn gateways(replies: &[RouteNetlinkMessage]) -> Vec<IpAddr> {
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
    for m in replies {
        if let RouteNetlinkMessage::NewRoute(r) = m {
            collect(&r.attributes, &mut out);
        }
    }
    out
}

/// One address per `RTM_NEWADDR` reply: `IFA_LOCAL` (this end of a
/// point-to-point link), else `IFA_ADDRESS`.
fn addresses(replies: &[RouteNetlinkMessage]) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for m in replies {
        let RouteNetlinkMessage::NewAddress(a) = m else { continue };
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
fn neighbour_entries(
    replies: &[RouteNetlinkMessage],
    on_interface: Option<u32>,
) -> impl Iterator<Item = (IpAddr, [u8; 6])> + '_ {
    replies.iter().filter_map(move |m| {
        let RouteNetlinkMessage::NewNeighbour(n) = m else { return None };
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
    })
}

/// Sends `request` as a dump (`NLM_F_REQUEST | NLM_F_DUMP`) on `nl` and
/// returns every reply until `NLMSG_DONE`. `what` names the query in errors.
fn dump(nl: &mut Netlink, request: RouteNetlinkMessage, what: &str) -> Result<Vec<RouteNetlinkMessage>> {
    let seq = nl.take_seq();
    nl.sock.send(&encode_dump(request, seq), 0)?;
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
fn encode_dump(request: RouteNetlinkMessage, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = seq;
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(request));
    msg.finalize();
    let mut bytes = vec![0; msg.buffer_len()];
    msg.serialize(&mut bytes);
    bytes
}

/// Parses one datagram of a dump's replies into `out`; messages of other
/// sequence numbers (a late answer to an earlier query) are skipped.
/// Returns whether the dump is complete (`NLMSG_DONE`). A truncated or
/// unparsable message, or the kernel's error, is an error naming `what`.
fn parse_replies(mut buf: &[u8], seq: u32, what: &str, out: &mut Vec<RouteNetlinkMessage>) -> Result<bool> {
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
        let bytes = &buf[..len];
        if msg_seq == seq {
            match ty {
                NLMSG_DONE => return Ok(true),
                NLMSG_ERROR => {
                    let raw = crate::RawMsg { ty, flags, seq: msg_seq, payload: &bytes[16..] };
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
                _ => match NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes) {
                    Ok(NetlinkMessage { payload: NetlinkPayload::InnerMessage(m), .. }) => out.push(m),
                    Ok(_) => {}
                    Err(e) => return Err(malformed(&e)),
                },
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
    use proptest::prelude::*;

    const SEQ: u32 = 77;

    /// The bytes of one kernel reply carrying `m`.
    fn reply(m: RouteNetlinkMessage, seq: u32) -> Vec<u8> {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_MULTIPART;
        header.sequence_number = seq;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(m));
        msg.finalize();
        let mut bytes = vec![0; msg.buffer_len()];
        msg.serialize(&mut bytes);
        bytes
    }

    fn neighbour(ip: IpAddr, mac: [u8; 6]) -> RouteNetlinkMessage {
        let mut n = NeighbourMessage::default();
        n.header.family = if ip.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
        n.header.ifindex = 3;
        n.header.state = netlink_packet_route::neighbour::NeighbourState::Reachable;
        let dst = match ip {
            IpAddr::V4(a) => NeighbourAddress::Inet(a),
            IpAddr::V6(a) => NeighbourAddress::Inet6(a),
        };
        n.attributes = vec![NeighbourAttribute::Destination(dst), NeighbourAttribute::LinkLayerAddress(mac.to_vec())];
        RouteNetlinkMessage::NewNeighbour(n)
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
        let mut buf = reply(neighbour("192.0.2.20".parse().unwrap(), [2, 0, 0, 0, 0, 0x20]), SEQ);
        buf.extend(reply(neighbour("2001:db8::20".parse().unwrap(), [2, 0, 0, 0, 0, 0x21]), SEQ));
        buf.extend(done(SEQ));
        buf
    }

    #[test]
    fn a_dump_is_parsed_until_done_and_other_queries_replies_are_skipped() {
        let mut buf = reply(neighbour("198.51.100.9".parse().unwrap(), [2, 0, 0, 0, 0, 9]), SEQ - 1);
        buf.extend(datagram());
        let mut out = Vec::new();
        assert!(parse_replies(&buf, SEQ, "read the neighbour table", &mut out).unwrap());
        let got: Vec<_> = neighbour_entries(&out, None).collect();
        assert_eq!(
            got,
            vec![
                ("192.0.2.20".parse().unwrap(), [2, 0, 0, 0, 0, 0x20]),
                ("2001:db8::20".parse().unwrap(), [2, 0, 0, 0, 0, 0x21])
            ]
        );
        // Without DONE the dump goes on in the next datagram.
        let mut out = Vec::new();
        let first = reply(neighbour("192.0.2.20".parse().unwrap(), [2, 0, 0, 0, 0, 0x20]), SEQ);
        assert!(!parse_replies(&first, SEQ, "read the neighbour table", &mut out).unwrap());
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn a_truncated_reply_is_an_error_naming_the_query() {
        let buf = datagram();
        let cut = &buf[..buf.len() - 30];
        let e = parse_replies(cut, SEQ, "read the neighbour table (RTM_GETNEIGH)", &mut Vec::new()).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, NlError::Protocol(_)), "{text}");
        assert!(text.contains("read the neighbour table (RTM_GETNEIGH)") && text.contains("message 1"), "{text}");
    }

    #[test]
    fn an_attribute_of_the_wrong_size_is_an_error_not_a_skipped_entry() {
        let mut buf = reply(neighbour("192.0.2.20".parse().unwrap(), [2, 0, 0, 0, 0, 0x20]), SEQ);
        // ndmsg is 12 bytes after the 16-byte header; the first attribute is
        // NDA_DST (8 bytes: len 8, type 1, 4 address bytes). Claim 5 bytes
        // of address: an IPv4 neighbour with a 5-byte address.
        assert_eq!(u16::from_ne_bytes([buf[30], buf[31]]), 1, "NDA_DST first");
        buf[28..30].copy_from_slice(&9u16.to_ne_bytes());
        let e = parse_replies(&buf, SEQ, "read the neighbour table", &mut Vec::new()).unwrap_err();
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
        let e = parse_replies(&b, SEQ, "read the routing table", &mut Vec::new()).unwrap_err();
        assert_eq!(e.errno(), Some(libc::EPERM));
        assert!(e.to_string().starts_with("read the routing table: "), "{e}");
    }

    /// Raw datagrams of a dump in this process's namespace (reading needs
    /// no privilege), as the kernel sent them.
    fn raw_dump(request: RouteNetlinkMessage) -> Vec<Vec<u8>> {
        let mut nl = Netlink::open_protocol(netlink_sys::protocols::NETLINK_ROUTE).unwrap();
        let seq = nl.take_seq();
        nl.sock.send(&encode_dump(request, seq), 0).unwrap();
        let mut datagrams = Vec::new();
        loop {
            nl.buf.clear();
            nl.buf.reserve(1 << 16);
            nl.sock.recv(&mut nl.buf, 0).unwrap();
            let done = parse_replies(&nl.buf, seq, "dump", &mut Vec::new()).unwrap();
            let mut d = nl.buf.clone();
            // Renumber to SEQ so the corrupted copies are parsed as our answer.
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

    /// Real link, address, route and neighbour replies of this machine
    /// (veths, bridges, tunnels, whatever it has), each corrupted thousands
    /// of times: the parsers answer or refuse, they never panic.
    #[test]
    fn this_machines_real_replies_corrupted_never_panic() {
        let mut route4 = RouteMessage::default();
        route4.header.address_family = AddressFamily::Inet;
        let mut route6 = RouteMessage::default();
        route6.header.address_family = AddressFamily::Inet6;
        let requests = [
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            RouteNetlinkMessage::GetNeighbour(NeighbourMessage::default()),
            RouteNetlinkMessage::GetRoute(route4),
            RouteNetlinkMessage::GetRoute(route6),
        ];
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut parsed = 0;
        for request in requests {
            for d in raw_dump(request) {
                let mut out = Vec::new();
                let _ = parse_replies(&d, SEQ, "dump", &mut out);
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
                    let _ = parse_replies(&c, SEQ, "dump", &mut Vec::new());
                }
            }
        }
        assert!(parsed >= 2, "this namespace has at least lo's link and address");
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
            let _ = parse_replies(&buf, SEQ, "read the neighbour table", &mut Vec::new());
        }

        /// The same for links, addresses and routes, whose parsers are larger.
        #[test]
        fn corrupted_link_address_and_route_replies_never_panic(
            kind in 0usize..3,
            flips in proptest::collection::vec((0usize..400, any::<u8>()), 1..8),
        ) {
            let m = match kind {
                0 => {
                    let mut l = LinkMessage::default();
                    l.header.index = 3;
                    l.attributes = vec![LinkAttribute::IfName("lan0".into()), LinkAttribute::Address(vec![2, 0, 0, 0, 0, 1])];
                    RouteNetlinkMessage::NewLink(l)
                }
                1 => {
                    let mut a = AddressMessage::default();
                    a.header.family = AddressFamily::Inet6;
                    a.header.prefix_len = 64;
                    a.attributes = vec![AddressAttribute::Address("2001:db8::1".parse().unwrap())];
                    RouteNetlinkMessage::NewAddress(a)
                }
                _ => {
                    let mut r = RouteMessage::default();
                    r.header.address_family = AddressFamily::Inet;
                    r.attributes = vec![
                        RouteAttribute::Gateway(RouteAddress::Inet("192.0.2.254".parse().unwrap())),
                        RouteAttribute::Oif(3),
                    ];
                    RouteNetlinkMessage::NewRoute(r)
                }
            };
            let mut buf = reply(m, SEQ);
            for (at, v) in flips {
                let n = buf.len();
                buf[at % n] = v;
            }
            let _ = parse_replies(&buf, SEQ, "dump", &mut Vec::new());
        }
    }
}
