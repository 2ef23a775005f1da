//! The one record of a source not admitted yet, held until the source comes
//! back.
//!
//! A source whose batch shows one packet, met in no earlier batch, is a
//! *newcomer* (`gatewarden_core::seen_before::Admission`). Under a spoofed
//! flood every source is one, and the long-horizon detectors and the baseline
//! gave each the per-source state a real source gets: a history entry, a
//! pending probe, a place in the distributed-scan lists, a device. That was
//! 2 600 of the 8 800 instructions a flood packet cost (docs/PERFORMANCE.md),
//! for sources that never send again.
//!
//! None of those detectors can find anything in one packet: a slow scan needs
//! two unanswered probes of a source, a distributed-scan participant two, a
//! login guess a finished session, the baseline a warm-up. So the detector
//! holds a newcomer's record here instead, and gives it to them when the
//! source is admitted (its next packet, in a later batch), before the
//! source's new records: what they find is what they would have found, from
//! the second packet on, as before.
//!
//! Direct-mapped, fixed memory: a newcomer's record takes its cell from
//! whatever record held it. Under a flood a real source's first record is soon
//! overwritten, and the detectors count that source from its second packet:
//! one probe fewer, never one more (a missed alert rather than a false one).
//! A record is given back only within [`MAX_HELD_NS`] of its last packet: the
//! detectors count a late one at the time it is given, and a probe four hours
//! old counted now next to a new one made a source that probed once in each
//! of two quarter hours a distributed-scan participant. Overwritten and
//! expired records are counted ([`NewcomerRecords::overwritten`],
//! [`NewcomerRecords::expired`]).
//!
//! IPv4 only: a scanner taking a new IPv6 address of its /64 for every probe
//! never sends a second packet from any of them, and the slow-scan rule counts
//! its /64 as one source from the first (`long_horizon::slow_scan`), so IPv6
//! newcomers still go to the detectors at once.

use std::hash::BuildHasher;
use std::net::IpAddr;

use foldhash::fast::FixedState;
use gatewarden_proto::messages::{FlowRecord, Proto};

/// How long a held record stays worth giving back, ns: a minute, well inside
/// the shortest window that counts probes together (the distributed-scan
/// rule's 15 minutes); a source that comes back later is counted from its
/// second packet.
pub const MAX_HELD_NS: u64 = 60_000_000_000;

/// Cells: about 0.9 MB of records (`FlowRecord` is 104 bytes in an `Option`).
pub const NEWCOMER_RECORD_CELLS: usize = 8192;

/// Fixed seed: replays hold and lose the same records on every run. A sender
/// who aims at a cell only erases a newcomer's first packet, which delays the
/// detectors by one packet of that source.
const SEED: u64 = 0x0ec0_3e55_f125_7001;

/// Newcomers' records by source, one per cell.
#[derive(Debug, Clone)]
pub struct NewcomerRecords {
    cells: Box<[Option<FlowRecord>]>,
    hasher: FixedState,
    overwritten: u64,
    expired: u64,
}

impl Default for NewcomerRecords {
    fn default() -> Self {
        NewcomerRecords::with_cells(NEWCOMER_RECORD_CELLS)
    }
}

impl NewcomerRecords {
    /// A table of `cells` (rounded up to a power of two, at least 1).
    pub fn with_cells(cells: usize) -> NewcomerRecords {
        let n = cells.max(1).next_power_of_two();
        NewcomerRecords {
            cells: vec![None; n].into_boxed_slice(),
            hasher: FixedState::with_seed(SEED),
            overwritten: 0,
            expired: 0,
        }
    }

    /// Whether a newcomer's record waits here rather than going to the
    /// long-horizon detectors and the baseline now: IPv4 TCP and UDP (the
    /// only records those read; see the module documentation for IPv6).
    pub fn holds(r: &FlowRecord) -> bool {
        r.src.is_ipv4() && matches!(r.proto, Proto::Tcp | Proto::Udp)
    }

    fn cell(&self, src: IpAddr) -> usize {
        let key = gatewarden_core::seen_before::address_key(src);
        (self.hasher.hash_one(key) as usize) & (self.cells.len() - 1)
    }

    /// Holds `r`, the record of a source not admitted yet, in its source's
    /// cell; the record there before, another source's or an older one of
    /// the same source, is dropped and counted.
    pub fn hold(&mut self, r: &FlowRecord) {
        let c = self.cell(r.src);
        if self.cells[c].replace(r.clone()).is_some() {
            self.overwritten += 1;
        }
    }

    /// The record held for `src`, now (`now_ns`) that it is admitted, if its
    /// cell still has it and its last packet is within [`MAX_HELD_NS`].
    pub fn take(&mut self, src: IpAddr, now_ns: u64) -> Option<FlowRecord> {
        let c = self.cell(src);
        match &self.cells[c] {
            Some(r) if r.src == src => {
                let r = self.cells[c].take()?;
                if r.last_ns.saturating_add(MAX_HELD_NS) < now_ns {
                    self.expired += 1;
                    return None;
                }
                Some(r)
            }
            _ => None,
        }
    }

    /// Records whose source came back too late for them to count.
    pub fn expired(&self) -> u64 {
        self.expired
    }

    /// Records dropped for another before their source came back (a steady
    /// rise is a flood of one-packet sources).
    pub fn overwritten(&self) -> u64 {
        self.overwritten
    }

    /// Bytes held.
    pub fn memory_bytes(&self) -> usize {
        self.cells.len() * std::mem::size_of::<Option<FlowRecord>>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatewarden_flow::ConnState;

    fn rec(src: &str, id: u64, proto: Proto) -> FlowRecord {
        FlowRecord {
            flow_id: id,
            src: src.parse().unwrap(),
            dst: "10.0.0.1".parse().unwrap(),
            sport: 40000,
            dport: 22,
            proto,
            first_ns: id,
            last_ns: id,
            fwd_packets: 1,
            rev_packets: 0,
            fwd_bytes: 60,
            rev_bytes: 0,
            conn_state: ConnState::S0,
            src_answered: false,
        }
    }

    #[test]
    fn a_held_record_is_given_back_once_and_only_to_its_source() {
        let mut t = NewcomerRecords::default();
        t.hold(&rec("203.0.113.7", 1, Proto::Tcp));
        assert_eq!(t.take("203.0.113.8".parse().unwrap(), 1), None);
        assert_eq!(t.take("203.0.113.7".parse().unwrap(), 1).map(|r| r.flow_id), Some(1));
        assert_eq!(t.take("203.0.113.7".parse().unwrap(), 1), None, "given back once");
    }

    #[test]
    fn a_flood_overwrites_in_fixed_memory_and_counts_what_it_dropped() {
        let mut t = NewcomerRecords::with_cells(64);
        let bytes = t.memory_bytes();
        for i in 0..10_000u32 {
            t.hold(&rec(&std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string(), u64::from(i), Proto::Udp));
        }
        assert_eq!(t.memory_bytes(), bytes);
        let kept = (0..10_000u32)
            .filter(|&i| t.take(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)), 0).is_some())
            .count() as u64;
        assert!(kept <= 64, "{kept}");
        assert_eq!(t.overwritten() + kept, 10_000);
    }

    #[test]
    fn a_record_older_than_a_minute_is_not_given_back_and_is_counted() {
        let mut t = NewcomerRecords::default();
        t.hold(&rec("203.0.113.7", 1_000, Proto::Tcp));
        assert_eq!(t.take("203.0.113.7".parse().unwrap(), 1_000 + MAX_HELD_NS + 1), None);
        assert_eq!(t.expired(), 1);
        t.hold(&rec("203.0.113.7", 2_000, Proto::Tcp));
        assert!(t.take("203.0.113.7".parse().unwrap(), 2_000 + MAX_HELD_NS).is_some(), "a minute is still in time");
    }

    #[test]
    fn only_ipv4_tcp_and_udp_records_wait() {
        assert!(NewcomerRecords::holds(&rec("203.0.113.7", 1, Proto::Tcp)));
        assert!(NewcomerRecords::holds(&rec("203.0.113.7", 1, Proto::Udp)));
        assert!(!NewcomerRecords::holds(&rec("203.0.113.7", 1, Proto::Icmp)));
        assert!(!NewcomerRecords::holds(&rec("2001:db8::7", 1, Proto::Tcp)));
    }

    #[test]
    fn a_cell_is_a_hundred_bytes_or_so() {
        assert!(std::mem::size_of::<Option<FlowRecord>>() <= 112, "{}", std::mem::size_of::<Option<FlowRecord>>());
    }
}
