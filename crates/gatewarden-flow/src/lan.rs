//! Who on the LAN asks for which address: the router's side of LAN-mapping
//! detection (issue #17).
//!
//! A router on a bridge sees every ARP request and neighbour solicitation
//! (broadcast and multicast are flooded) but, like any port of a switch,
//! not always the unicast answers one device sends another (a promiscuous
//! bridge interface does pass them up). So "was it answered" is judged by
//! what the router does see: an answer addressed to the asker, or the
//! target address sending from a *different* MAC (a live device; a MAC
//! cannot vouch for the addresses it asks about itself).
//!
//! Both tables are bounded least-recently-used maps: a flood of forged ARP
//! with random addresses and MACs churns their tails and costs no memory.
//! Each request for a new (asker MAC, target) pair is reported once per
//! [`REPORT_AGAIN_NS`]; an answer seen later is reported again as answered.

use std::net::IpAddr;

use gatewarden_core::lru::LruMap;
use gatewarden_proto::messages::{LanProbe, MAX_LAN_PROBES};

use crate::packet::{Neighbour, NeighbourOp};

/// Addresses remembered as alive on the LAN (with the MAC they were last seen from).
pub const MAX_LIVE: usize = 8192;
/// (asker MAC, target) pairs remembered.
pub const MAX_ASKS: usize = 8192;
/// A pair asked again after this long is reported again (the detector's window forgets).
pub const REPORT_AGAIN_NS: u64 = 60_000_000_000;

#[derive(Debug, Clone, Copy)]
struct Ask {
    sender: IpAddr,
    reported_ns: u64,
    answered: bool,
}

/// The router's bounded view of address resolution on the LAN.
pub struct LanWatch {
    /// Address → (MAC it last sent from).
    live: LruMap<IpAddr, [u8; 6]>,
    asks: LruMap<([u8; 6], IpAddr), Ask>,
    out: Vec<LanProbe>,
    dropped: u64,
    /// The capture interface's own MAC: the router resolving addresses for
    /// traffic it forwards (a WAN scan of a routed LAN makes it ask for
    /// every address) is not a LAN device mapping the LAN.
    own: Option<[u8; 6]>,
    /// The last (address, MAC) written to or confirmed in `live`: `live`
    /// changes only in [`LanWatch::saw_sender`], which sets this on every
    /// change, so while it matches the frame's sender the entry is already
    /// right and the lookup can be skipped (a run of one sender's frames is
    /// the common case: issue #19).
    last_sender: Option<(IpAddr, [u8; 6])>,
}

impl Default for LanWatch {
    fn default() -> Self {
        LanWatch::new()
    }
}

impl LanWatch {
    /// Empty tables of [`MAX_LIVE`] and [`MAX_ASKS`] entries.
    pub fn new() -> LanWatch {
        LanWatch {
            live: LruMap::new(MAX_LIVE),
            asks: LruMap::new(MAX_ASKS),
            out: Vec::new(),
            dropped: 0,
            own: None,
            last_sender: None,
        }
    }

    /// The router's own MAC on the capture interface: its requests are not reported.
    pub fn set_own_mac(&mut self, mac: Option<[u8; 6]>) {
        self.own = mac;
    }

    /// An IP packet from `mac` with source `addr`: that address is alive on the LAN.
    #[inline]
    pub fn saw_sender(&mut self, addr: IpAddr, mac: [u8; 6]) {
        if self.last_sender == Some((addr, mac)) || addr.is_unspecified() || addr.is_multicast() {
            return;
        }
        match self.live.peek(&addr) {
            Some(m) if *m == mac => {}
            _ => *self.live.get_or_insert_with(addr, || mac) = mac,
        }
        self.last_sender = Some((addr, mac));
    }

    /// An ARP or NDP frame.
    pub fn observe(&mut self, n: &Neighbour) {
        // Whoever sends from an address owns it for now (requests and replies alike).
        if !n.sender.is_unspecified() && !n.sender.is_multicast() {
            self.saw_sender(n.sender, n.src_mac);
        }
        match n.op {
            NeighbourOp::Reply => {
                // An advertisement names its own address as the target.
                self.saw_sender(n.target, n.src_mac);
                let key = (n.dst_mac, n.target);
                if let Some(a) = self.asks.peek(&key).copied() {
                    if !a.answered {
                        *self.asks.get_or_insert_with(key, || a) = Ask { answered: true, ..a };
                        self.push(LanProbe {
                            mac: n.dst_mac,
                            sender: a.sender,
                            target: n.target,
                            ts_ns: n.ts_ns,
                            answered: true,
                        });
                    }
                }
            }
            NeighbourOp::Request => {
                if n.sender == n.target || self.own == Some(n.src_mac) {
                    // Gratuitous ARP: an announcement, not a question; or the router itself.
                    return;
                }
                let known = self.live.peek(&n.target).is_some_and(|m| *m != n.src_mac);
                let key = (n.src_mac, n.target);
                let fresh = Ask { sender: n.sender, reported_ns: n.ts_ns, answered: known };
                let (report, answered) = match self.asks.peek(&key).copied() {
                    None => (true, known),
                    Some(a) if n.ts_ns.saturating_sub(a.reported_ns) >= REPORT_AGAIN_NS => (true, known || a.answered),
                    Some(a) if known && !a.answered => (true, true),
                    Some(_) => (false, false),
                };
                if report {
                    *self.asks.get_or_insert_with(key, || fresh) = Ask { answered, ..fresh };
                    self.push(LanProbe {
                        mac: n.src_mac,
                        sender: n.sender,
                        target: n.target,
                        ts_ns: n.ts_ns,
                        answered,
                    });
                }
            }
        }
    }

    fn push(&mut self, p: LanProbe) {
        if self.out.len() < MAX_LAN_PROBES {
            self.out.push(p);
        } else {
            self.dropped += 1;
        }
    }

    /// The requests to report since the last call (at most [`MAX_LAN_PROBES`]).
    pub fn take(&mut self) -> Vec<LanProbe> {
        std::mem::take(&mut self.out)
    }

    /// Requests not reported because one batch's worth was already waiting (a flood).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Entries held (live addresses, asks): never above the caps.
    pub fn len(&self) -> (usize, usize) {
        (self.live.len(), self.asks.len())
    }

    /// Whether nothing was seen yet.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty() && self.asks.is_empty()
    }

    /// Bytes the two tables hold at most.
    pub fn max_bytes() -> usize {
        MAX_LIVE * LruMap::<IpAddr, [u8; 6]>::bytes_per_entry()
            + MAX_ASKS * LruMap::<([u8; 6], IpAddr), Ask>::bytes_per_entry()
            + MAX_LAN_PROBES * std::mem::size_of::<LanProbe>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: [u8; 6] = [2, 0, 0, 0, 0, 1];

    fn v4(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    fn req(mac: [u8; 6], sender: IpAddr, target: IpAddr, ts_ns: u64) -> Neighbour {
        Neighbour { ts_ns, op: NeighbourOp::Request, src_mac: mac, dst_mac: [0; 6], sender, target }
    }

    #[test]
    fn a_request_is_reported_once_and_its_answer_when_seen() {
        let mut w = LanWatch::new();
        w.observe(&req(ME, v4(66), v4(7), 1));
        w.observe(&req(ME, v4(66), v4(7), 2));
        let p = w.take();
        assert_eq!(p.len(), 1, "a repeated request is one probe");
        assert!(!p[0].answered);
        let peer = [2, 0, 0, 0, 0, 7];
        w.observe(&Neighbour {
            ts_ns: 3,
            op: NeighbourOp::Reply,
            src_mac: peer,
            dst_mac: ME,
            sender: v4(7),
            target: v4(7),
        });
        let p = w.take();
        assert_eq!((p.len(), p[0].answered, p[0].target), (1, true, v4(7)));
        // Asked again a minute later: reported again, known alive now.
        w.observe(&req(ME, v4(66), v4(7), 3 + REPORT_AGAIN_NS));
        assert!(w.take()[0].answered);
    }

    /// A request and its reply as the parser reads them off the wire.
    #[test]
    fn an_arp_reply_on_the_wire_answers_the_request() {
        use gatewarden_capture::{Frame, LinkType};
        let arp = |op: u8, eth_dst: [u8; 6], sha: [u8; 6], spa: [u8; 4], tha: [u8; 6], tpa: [u8; 4]| {
            let mut f = eth_dst.to_vec();
            f.extend(sha);
            f.extend([0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, op]);
            f.extend(sha);
            f.extend(spa);
            f.extend(tha);
            f.extend(tpa);
            f
        };
        let peer = [2, 0, 0, 0, 0, 7];
        let read =
            |d: &[u8]| crate::packet::neighbour(&Frame { ts_ns: 1, link: LinkType::Ethernet, data: d, orig_len: 42 });
        let mut w = LanWatch::new();
        w.observe(&read(&arp(1, [0xff; 6], ME, [192, 0, 2, 66], [0; 6], [192, 0, 2, 7])).unwrap());
        assert!(!w.take()[0].answered);
        w.observe(&read(&arp(2, ME, peer, [192, 0, 2, 7], ME, [192, 0, 2, 66])).unwrap());
        let p = w.take();
        assert_eq!((p.len(), p[0].target, p[0].answered), (1, v4(7), true), "{p:?}");
    }

    #[test]
    fn a_target_seen_sending_from_another_mac_counts_as_answered_but_not_from_the_asker() {
        let mut w = LanWatch::new();
        w.saw_sender(v4(8), [2, 0, 0, 0, 0, 8]);
        w.saw_sender(v4(9), ME); // the asker sends from .9 itself: no proof .9 exists
        w.observe(&req(ME, v4(66), v4(8), 1));
        w.observe(&req(ME, v4(66), v4(9), 1));
        let p = w.take();
        assert_eq!(p.iter().map(|p| p.answered).collect::<Vec<_>>(), [true, false]);
    }

    #[test]
    fn an_address_that_moves_to_another_mac_is_seen_from_the_new_one_at_once() {
        // Runs of one sender skip the lookup; a change of MAC must not.
        let other = [2, 0, 0, 0, 0, 8];
        let mut w = LanWatch::new();
        for mac in [other, other, ME, ME] {
            w.saw_sender(v4(8), mac);
        }
        w.observe(&req(ME, v4(66), v4(8), 1));
        assert!(!w.take()[0].answered, ".8 now sends from the asker's own MAC");
        for mac in [ME, other] {
            w.saw_sender(v4(7), mac);
        }
        w.observe(&req(ME, v4(66), v4(7), 1));
        assert!(w.take()[0].answered, ".7 now sends from another MAC");
    }

    #[test]
    fn gratuitous_arp_and_the_routers_own_requests_are_not_reported() {
        let mut w = LanWatch::new();
        w.observe(&req(ME, v4(66), v4(66), 1));
        assert!(w.take().is_empty());
        let router = [2, 0, 0, 0, 0, 0xfe];
        w.set_own_mac(Some(router));
        w.observe(&req(router, v4(1), v4(9), 2));
        assert!(w.take().is_empty());
        // Its address is still alive for others' requests.
        w.observe(&req(ME, v4(66), v4(1), 3));
        assert!(w.take()[0].answered);
    }

    #[test]
    fn a_forged_flood_stays_within_the_caps() {
        let mut w = LanWatch::new();
        for i in 0..200_000u32 {
            let b = i.to_be_bytes();
            let mac = [2, 0, b[0], b[1], b[2], b[3]];
            w.observe(&req(mac, IpAddr::from([10, b[1], b[2], b[3]]), IpAddr::from([172, 16, b[3], b[2]]), i as u64));
        }
        let (live, asks) = w.len();
        assert!(live <= MAX_LIVE && asks <= MAX_ASKS, "{live} {asks}");
        assert_eq!(w.take().len(), MAX_LAN_PROBES);
        assert_eq!(w.dropped(), 200_000 - MAX_LAN_PROBES as u64);
        println!("LanWatch::max_bytes() = {}", LanWatch::max_bytes());
        assert!(LanWatch::max_bytes() < 2 << 20, "{} bytes", LanWatch::max_bytes());
    }
}
