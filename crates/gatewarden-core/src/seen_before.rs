//! "Have I seen this key in an earlier round?" in fixed memory: a
//! direct-mapped table of 32-bit tags, one per cell.
//!
//! The detector asks it before spending per-source work (the model) on a
//! source whose batch shows one packet: under a spoofed flood every source
//! is new and sends one packet, and a one-packet host is not behaviour the
//! model can judge anyway. A real source is admitted from its second
//! appearance on.
//!
//! Errors are one-sided in what they cost: a key whose cell another key
//! took since is "new" again (it waits one more round; under a flood that
//! happens more often, never for a source that sends two packets at once);
//! two keys with the same cell and tag (one in 2³² per pair) make the second
//! "seen" early. The hash has a fixed seed so replays are deterministic; a
//! sender who crafts collisions only delays its own admission or hastens
//! another's, and admission grants no trust.

use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;

use foldhash::fast::FixedState;

/// Fixed seed of the cell hash (any value; fixed for reproducible replays).
const SEED: u64 = 0x5ee7_bef0_4e5e_ed01;

/// A direct-mapped set of tags: O(1), no allocation after construction.
#[derive(Debug, Clone)]
pub struct SeenBefore {
    tags: Box<[u32]>,
    hasher: FixedState,
}

impl SeenBefore {
    /// A table of `cells` (rounded up to a power of two, at least 1) × 4 bytes.
    pub fn new(cells: usize) -> SeenBefore {
        let n = cells.max(1).next_power_of_two();
        SeenBefore { tags: vec![0; n].into_boxed_slice(), hasher: FixedState::with_seed(SEED) }
    }

    /// Whether `key` was noted before (as far as its cell still says), and
    /// notes it now.
    pub fn check_and_note<K: Hash>(&mut self, key: &K) -> bool {
        let h = self.hasher.hash_one(key);
        let cell = (h as usize) & (self.tags.len() - 1);
        // Tag 0 marks an empty cell, so a tag is never 0.
        let tag = ((h >> 32) as u32) | 1;
        let seen = self.tags[cell] == tag;
        self.tags[cell] = tag;
        seen
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.tags.len() * 4
    }
}

/// The key to hash for an address: fixed-width integers only, so builds for
/// different machines (`IpAddr`'s derived hash feeds its variant as a
/// `usize`) still agree cell for cell.
pub fn address_key(a: IpAddr) -> (u8, u128) {
    match a {
        IpAddr::V4(a) => (4, u128::from(u32::from(a))),
        IpAddr::V6(a) => (6, u128::from(a)),
    }
}

/// Cells of an [`Admission`] table (4 bytes each: 1 MiB).
pub const ADMISSION_CELLS: usize = 1 << 18;

/// Which sources of a flow batch are worth per-source work: the detector's
/// model judgement and per-source heuristic state, and so the router's host
/// snapshot. One packet is not behaviour: under a spoofed flood every source
/// sends one and is never seen again. A source with two packets in a batch,
/// or one packet in each of two batches, is *admitted*.
///
/// The router and the detector each keep one and ask it the same questions in
/// the same order (every distinct source of a batch once, in record order), so
/// with one router per detector their answers agree exactly and the router
/// sends a snapshot for every source the detector will judge, and no other.
/// With several routers per detector the detector's table hears more sources:
/// a source a router meets for the first time may be one the detector met
/// through another router, and its one-packet record then goes unjudged for
/// lack of a snapshot (it is judged from its next packet on).
#[derive(Debug, Clone)]
pub struct Admission {
    met: SeenBefore,
}

impl Default for Admission {
    fn default() -> Self {
        Admission { met: SeenBefore::new(ADMISSION_CELLS) }
    }
}

impl Admission {
    /// Whether `source`, with `packets` in this batch, is admitted. Call it once
    /// per distinct source and batch, in record order: it notes the source as met.
    pub fn admit(&mut self, source: IpAddr, packets: u64) -> bool {
        // Noted first, always: the next batch must know it met the source.
        self.met.check_and_note(&Self::key(source)) || packets >= 2
    }

    fn key(source: IpAddr) -> (u8, u128) {
        address_key(source)
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.met.bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PINNED_V4: u64 = 0x8e57_caf5_5e89_d2c2;
    const PINNED_V6: u64 = 0x47fb_12c2_37e3_0b78;
    use std::net::{IpAddr, Ipv4Addr};

    #[test]
    fn a_key_is_new_once_and_seen_after() {
        let mut s = SeenBefore::new(1024);
        let a = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
        assert!(!s.check_and_note(&a));
        assert!(s.check_and_note(&a));
        assert!(s.check_and_note(&a));
        assert!(!s.check_and_note(&IpAddr::V4(Ipv4Addr::new(192, 0, 2, 11))));
    }

    #[test]
    fn a_flood_of_new_keys_stays_in_its_table_and_rarely_passes_as_seen() {
        let mut s = SeenBefore::new(1 << 16);
        assert_eq!(s.bytes(), 1 << 18);
        let seen = (0u32..1_000_000).filter(|i| s.check_and_note(&IpAddr::V4(Ipv4Addr::from(*i)))).count();
        // Distinct keys: only a cell-and-tag collision (about 2^-32 per pair in a cell) says "seen".
        assert!(seen < 10, "{seen} of a million new keys passed as seen");
        assert_eq!(s.bytes(), 1 << 18, "no growth");
    }

    #[test]
    fn a_key_whose_cell_was_taken_is_new_again_then_seen() {
        let mut s = SeenBefore::new(1);
        let (a, b) = (1u64, 2u64);
        assert!(!s.check_and_note(&a));
        assert!(!s.check_and_note(&b), "one cell: b takes it");
        assert!(!s.check_and_note(&a), "a lost its cell: new again");
        assert!(s.check_and_note(&a));
    }

    #[test]
    fn a_source_is_admitted_by_two_packets_in_a_batch_or_one_in_each_of_two() {
        let mut adm = Admission::default();
        let [a, b, c]: [IpAddr; 3] = ["192.0.2.1", "2001:db8::2", "192.0.2.3"].map(|s| s.parse().unwrap());
        assert!(!adm.admit(a, 1), "one packet from a stranger: not admitted");
        assert!(adm.admit(b, 2), "two packets in one batch: admitted");
        assert!(adm.admit(a, 1), "met in an earlier batch: admitted");
        assert!(!adm.admit(c, 0), "no packet of its own (an answered flow): not admitted");
        assert!(adm.admit(c, 0), "but met now");
        assert_eq!(adm.bytes(), ADMISSION_CELLS * 4);
    }

    /// A router and a detector must pick the same cell and tag for a source
    /// even when built for different machines or with another foldhash: the
    /// hash of a fixed address is pinned here, so a change that moves it
    /// (which would make a mixed fleet's tables disagree) fails a test.
    #[test]
    fn an_admission_key_hashes_the_same_on_every_build() {
        let h = |a: &str| FixedState::with_seed(SEED).hash_one(Admission::key(a.parse().unwrap()));
        assert_eq!(h("192.0.2.1"), PINNED_V4, "{:#x}", h("192.0.2.1"));
        assert_eq!(h("2001:db8::1"), PINNED_V6, "{:#x}", h("2001:db8::1"));
    }
}
