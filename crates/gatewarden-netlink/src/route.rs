//! rtnetlink queries the router needs: its routes' next hops, its own
//! addresses, the neighbour table (ARP/NDP) and the LAN interface's view
//! (which MAC owns which address is how forged sources are recognised).

use std::net::IpAddr;

use gatewarden_core::net::{network, Cidr, Mac};

use crate::{Netlink, NlError};

type Result<T> = std::result::Result<T, NlError>;

/// Next hops of this namespace's routes (rtnetlink `RTM_GETROUTE`, any table).
pub fn route_gateways() -> Result<Vec<IpAddr>> {
    const RTM_GETROUTE: u16 = 26;
    const RTA_GATEWAY: u16 = 5;
    let mut nl = Netlink::open_protocol(netlink_sys::protocols::NETLINK_ROUTE)?;
    let mut out = Vec::new();
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        let seq = nl.take_seq();
        // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags (12 bytes).
        let mut rtmsg = [0u8; 12];
        rtmsg[0] = family;
        let req = crate::raw_request(RTM_GETROUTE, crate::DUMP, seq, &rtmsg);
        for payload in nl.dump_raw(&req, seq, 12)? {
            for (ty, v) in crate::parse_attrs(&payload) {
                if ty == RTA_GATEWAY {
                    match v.len() {
                        4 => out.extend(<[u8; 4]>::try_from(v).ok().map(IpAddr::from)),
                        16 => out.extend(<[u8; 16]>::try_from(v).ok().map(IpAddr::from)),
                        _ => {}
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The addresses configured on this namespace's interfaces (rtnetlink `RTM_GETADDR`).
pub fn local_addresses() -> Result<Vec<IpAddr>> {
    const RTM_GETADDR: u16 = 22;
    let mut nl = Netlink::open_protocol(netlink_sys::protocols::NETLINK_ROUTE)?;
    let seq = nl.take_seq();
    let req = crate::raw_request(RTM_GETADDR, crate::DUMP, seq, &[0u8; 8]);
    let mut out = Vec::new();
    for payload in nl.dump_raw(&req, seq, 8)? {
        let mut local = None;
        let mut address = None;
        for (ty, v) in crate::parse_attrs(&payload) {
            let a = match v.len() {
                4 => <[u8; 4]>::try_from(v).ok().map(IpAddr::from),
                16 => <[u8; 16]>::try_from(v).ok().map(IpAddr::from),
                _ => None,
            };
            match ty {
                1 => address = a,
                2 => local = a,
                _ => {}
            }
        }
        if let Some(a) = local.or(address) {
            out.push(a);
        }
    }
    Ok(out)
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
    const RTM_GETNEIGH: u16 = 30;
    const NDA_DST: u16 = 1;
    const NDA_LLADDR: u16 = 2;
    const NDA_CACHEINFO: u16 = 3;
    // nda_cacheinfo times are in USER_HZ ticks, 100 per second on Linux.
    const MS_PER_TICK: u32 = 10;
    let mut nl = Netlink::open_protocol(netlink_sys::protocols::NETLINK_ROUTE)?;
    let seq = nl.take_seq();
    // struct ndmsg: family, pad, pad, ifindex, state, flags, type (12 bytes).
    let req = crate::raw_request(RTM_GETNEIGH, crate::DUMP, seq, &[0u8; 12]);
    let mut out = Vec::new();
    for payload in nl.dump_raw(&req, seq, 12)? {
        let mut dst = None;
        let mut mac = None;
        let mut confirmed_ago_ms = u32::MAX;
        for (ty, v) in crate::parse_attrs(&payload) {
            match (ty, v.len()) {
                (NDA_DST, 4) => dst = <[u8; 4]>::try_from(v).ok().map(IpAddr::from),
                (NDA_DST, 16) => dst = <[u8; 16]>::try_from(v).ok().map(IpAddr::from),
                (NDA_LLADDR, 6) => mac = <[u8; 6]>::try_from(v).ok(),
                // struct nda_cacheinfo { confirmed, used, updated, refcnt: u32 }, native endian.
                (NDA_CACHEINFO, 16) => {
                    if let Ok(b) = <[u8; 4]>::try_from(&v[..4]) {
                        confirmed_ago_ms = u32::from_ne_bytes(b).saturating_mul(MS_PER_TICK);
                    }
                }
                _ => {}
            }
        }
        if let (Some(ip), Some(mac)) = (dst, mac) {
            if mac != [0; 6] {
                out.push(NeighbourEntry { ip, mac, confirmed_ago_ms });
            }
        }
    }
    Ok(out)
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
    use crate::{parse_attrs, raw_request, Netlink, DUMP};
    const RTM_GETLINK: u16 = 18;
    const RTM_GETADDR: u16 = 22;
    const RTM_GETNEIGH: u16 = 30;
    let mut nl = Netlink::open_protocol(netlink_sys::protocols::NETLINK_ROUTE)?;
    let mut view = LanView::default();
    let mut index = None;
    let seq = nl.take_seq();
    for p in nl.dump_raw(&raw_request(RTM_GETLINK, DUMP, seq, &[0u8; 16]), seq, 0)? {
        let Some(ix) = p.get(4..8).map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]])) else { continue };
        let (mut mac, mut is_lan) = (None, false);
        for (ty, v) in parse_attrs(p.get(16..).unwrap_or_default()) {
            match ty {
                // IFLA_ADDRESS
                1 if v.len() == 6 => mac = <[u8; 6]>::try_from(v).ok(),
                // IFLA_IFNAME
                3 if crate::c_str(v) == interface => is_lan = true,
                _ => {}
            }
        }
        view.own_macs.extend(mac);
        if is_lan {
            index = Some(ix);
            view.lan_mac = mac;
        }
    }
    view.own_macs.sort();
    view.own_macs.dedup();
    let Some(index) = index else { return Ok(view) };
    let seq = nl.take_seq();
    for p in nl.dump_raw(&raw_request(RTM_GETADDR, DUMP, seq, &[0u8; 8]), seq, 0)? {
        if p.len() < 8 {
            continue;
        }
        let on_lan = i32::from_ne_bytes([p[4], p[5], p[6], p[7]]) == index;
        let prefix = p[1];
        for (ty, v) in parse_attrs(&p[8..]) {
            // IFA_ADDRESS, IFA_LOCAL
            if ty == 1 || ty == 2 {
                let a = match v.len() {
                    4 => <[u8; 4]>::try_from(v).ok().map(IpAddr::from),
                    16 => <[u8; 16]>::try_from(v).ok().map(IpAddr::from),
                    _ => None,
                };
                if let Some(a) = a {
                    view.own_addrs.push(a);
                    if on_lan && ty == 1 {
                        view.prefixes.push(network(a, prefix));
                    }
                }
            }
        }
    }
    view.own_addrs.sort();
    view.own_addrs.dedup();
    let seq = nl.take_seq();
    for p in nl.dump_raw(&raw_request(RTM_GETNEIGH, DUMP, seq, &[0u8; 12]), seq, 0)? {
        if p.len() < 12 || i32::from_ne_bytes([p[4], p[5], p[6], p[7]]) != index {
            continue;
        }
        let state = u16::from_ne_bytes([p[8], p[9]]);
        // NUD_INCOMPLETE 0x01, NUD_FAILED 0x20, NUD_NONE 0: no usable link-layer address.
        if state == 0 || state & (0x01 | 0x20) != 0 {
            continue;
        }
        let (mut dst, mut mac) = (None, None);
        for (ty, v) in parse_attrs(&p[12..]) {
            match (ty, v.len()) {
                (1, 4) => dst = <[u8; 4]>::try_from(v).ok().map(IpAddr::from),
                (1, 16) => dst = <[u8; 16]>::try_from(v).ok().map(IpAddr::from),
                (2, 6) => mac = <[u8; 6]>::try_from(v).ok(),
                _ => {}
            }
        }
        if let (Some(a), Some(m)) = (dst, mac) {
            view.neighbours.push((a, m));
        }
    }
    Ok(view)
}
