//! `[evidence]` and the router's evidence ring: the first packets of every
//! flow, per source, kept in a fixed number of bytes, so that when a verdict
//! about a source arrives the router can hand the monitor the packets that
//! raised it (issue #18).
//!
//! Bounds (a spoofed flood, one packet per forged source, must not grow it):
//! only the first `packets_per_flow` packets of a flow are kept, each cut at
//! `snap_bytes`; one source holds at most `max_alert_bytes` (its oldest
//! packets go first); the whole ring holds at most `ring_bytes`, counting
//! each packet's and each source's bookkeeping, and forgets the source
//! touched longest ago first.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use gatewarden_capture::Frame;
use gatewarden_proto::messages::{Evidence, EvidencePacket, MAX_EVIDENCE_BYTES, MAX_EVIDENCE_PACKETS};

/// What the router keeps as evidence and what the monitor stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvidenceConfig {
    /// Keep packets at all (router) and store evidence pcaps (monitor).
    pub enabled: bool,
    /// Packets kept of each flow (its first ones, both directions).
    pub packets_per_flow: u32,
    /// Bytes kept of each packet (from the link-layer header; also capped by `capture.snap_len`).
    pub snap_bytes: u32,
    /// Captured bytes kept per source on the router and sent per alert (at most 896 KiB, `MAX_EVIDENCE_BYTES`).
    pub max_alert_bytes: usize,
    /// Memory the router's ring may use in all, bookkeeping included; the
    /// source touched longest ago is forgotten first.
    pub ring_bytes: usize,
    /// Disk the monitor's `evidence/` directory may use; the oldest pcaps are deleted first.
    pub store_bytes: u64,
}

impl Default for EvidenceConfig {
    fn default() -> Self {
        EvidenceConfig {
            enabled: true,
            packets_per_flow: 8,
            snap_bytes: 256,
            max_alert_bytes: 64 * 1024,
            ring_bytes: 4 << 20,
            store_bytes: 64 << 20,
        }
    }
}

impl EvidenceConfig {
    /// Every out-of-range knob as (key, value, what is allowed).
    pub fn problems(&self) -> Vec<(&'static str, String, String)> {
        let mut out = Vec::new();
        if !(1..=1024).contains(&self.packets_per_flow) {
            out.push(("evidence.packets_per_flow", self.packets_per_flow.to_string(), "1 to 1024".into()));
        }
        if !(64..=65_535).contains(&self.snap_bytes) {
            out.push(("evidence.snap_bytes", self.snap_bytes.to_string(), "64 to 65535 bytes".into()));
        }
        if !(1024..=MAX_EVIDENCE_BYTES).contains(&self.max_alert_bytes) {
            out.push((
                "evidence.max_alert_bytes",
                self.max_alert_bytes.to_string(),
                format!("1024 to {MAX_EVIDENCE_BYTES} bytes (one bus message carries it)"),
            ));
        }
        let least = self.max_alert_bytes.saturating_mul(2);
        if self.ring_bytes < least || self.ring_bytes > 1 << 30 {
            out.push((
                "evidence.ring_bytes",
                self.ring_bytes.to_string(),
                format!("at least twice evidence.max_alert_bytes ({least}) and at most 1 GiB"),
            ));
        }
        if self.store_bytes < self.max_alert_bytes as u64 {
            out.push((
                "evidence.store_bytes",
                self.store_bytes.to_string(),
                format!("at least evidence.max_alert_bytes ({})", self.max_alert_bytes),
            ));
        }
        out
    }
}

/// Takes a forgotten packet's buffer for reuse, if `spares` has room and it is small.
fn recycle(spares: &mut Vec<Vec<u8>>, k: Kept) {
    if spares.len() < SPARE_BUFFERS && k.data.capacity() <= SPARE_BUFFER_BYTES {
        spares.push(k.data);
    }
}

/// The ring as the capture thread and the verdict task share it.
pub type SharedRing = std::sync::Arc<std::sync::Mutex<EvidenceRing>>;

/// A new shared ring with `cfg`'s bounds.
pub fn shared(cfg: &EvidenceConfig) -> SharedRing {
    std::sync::Arc::new(std::sync::Mutex::new(EvidenceRing::new(cfg)))
}

/// One kept packet.
struct Kept {
    ts_ns: u64,
    orig_len: u32,
    dlt: u32,
    /// Its bytes, in a buffer that may be a forgotten packet's (charged by capacity).
    data: Vec<u8>,
}

impl Kept {
    /// What it is charged: its buffer and its bookkeeping.
    fn cost(&self) -> usize {
        self.data.capacity() + PACKET_OVERHEAD
    }
}

/// One source's kept packets.
struct Source {
    /// The ring's stamp when a packet of it was last kept.
    touched: u64,
    packets: VecDeque<Kept>,
    /// Captured bytes in `packets`.
    bytes: usize,
    /// Packets it lost to its own bound.
    left_out: u32,
}

/// What a kept packet costs besides its buffer: the record, the allocator's
/// header of its buffer.
pub const PACKET_OVERHEAD: usize = std::mem::size_of::<Kept>() + 16;
/// Buffers of forgotten packets kept for the next ones, at most, and the
/// largest kept (so spares hold at most 32 KiB besides the ring). A spoofed
/// flood forgets a source per new one: its packet's buffer and its queue are
/// the new source's, not two frees and two allocations per forged address.
const SPARE_BUFFERS: usize = 64;
const SPARE_BUFFER_BYTES: usize = 512;
/// Emptied packet queues kept for new sources, at most, and their largest
/// capacity (a queue's first allocation, which `SOURCE_OVERHEAD` charges).
const SPARE_QUEUES: usize = 16;
const SPARE_QUEUE_PACKETS: usize = 4;
/// What a source costs besides its packets: the map slot, its record, two
/// recency entries, the deque's first allocation.
pub const SOURCE_OVERHEAD: usize = std::mem::size_of::<(IpAddr, Source)>()
    + 2 * std::mem::size_of::<(IpAddr, u64)>()
    + 4 * std::mem::size_of::<Kept>()
    + 32;

/// The router's evidence ring (see the module doc for its bounds).
pub struct EvidenceRing {
    cfg: EvidenceConfig,
    sources: HashMap<IpAddr, Source, foldhash::fast::RandomState>,
    /// (source, stamp) in the order sources were touched; an entry whose
    /// stamp is not its source's `touched` is stale and skipped.
    order: VecDeque<(IpAddr, u64)>,
    stamp: u64,
    /// Bytes charged: packets' buffers and overheads, sources' overheads.
    charged: usize,
    forgotten_sources: u64,
    /// Buffers and queues of forgotten packets and sources, for reuse.
    spare_buffers: Vec<Vec<u8>>,
    spare_queues: Vec<VecDeque<Kept>>,
}

impl EvidenceRing {
    /// An empty ring with `cfg`'s bounds.
    pub fn new(cfg: &EvidenceConfig) -> EvidenceRing {
        EvidenceRing {
            cfg: cfg.clone(),
            sources: HashMap::default(),
            order: VecDeque::new(),
            stamp: 0,
            charged: 0,
            forgotten_sources: 0,
            spare_buffers: Vec::new(),
            spare_queues: Vec::new(),
        }
    }

    /// Keeps `frame` as evidence about `source` when it is among the first
    /// `packets_per_flow` of its flow (`packet_in_flow` counts from 1).
    pub fn keep(&mut self, source: IpAddr, frame: &Frame<'_>, packet_in_flow: u64) {
        if !self.cfg.enabled || packet_in_flow > self.cfg.packets_per_flow as u64 || frame.data.is_empty() {
            return;
        }
        let n = frame.data.len().min(self.cfg.snap_bytes as usize).min(self.cfg.max_alert_bytes);
        // A spare only of about this size: it is charged by capacity, and a
        // large one kept for small packets would shrink what the ring holds.
        let mut data = match self.spare_buffers.pop() {
            Some(b) if b.capacity() >= n && b.capacity() <= 2 * n.max(32) => b,
            _ => Vec::with_capacity(n),
        };
        data.clear();
        data.extend_from_slice(&frame.data[..n]);
        let kept = Kept { ts_ns: frame.ts_ns, orig_len: frame.orig_len.max(n as u32), dlt: frame.link.dlt(), data };
        self.charged += kept.cost();
        self.stamp += 1;
        let stamp = self.stamp;
        let s = self.sources.entry(source).or_insert_with(|| {
            self.charged += SOURCE_OVERHEAD;
            let packets = self.spare_queues.pop().unwrap_or_default();
            Source { touched: 0, packets, bytes: 0, left_out: 0 }
        });
        s.touched = stamp;
        s.bytes += n;
        s.packets.push_back(kept);
        while s.bytes > self.cfg.max_alert_bytes || s.packets.len() > MAX_EVIDENCE_PACKETS {
            let Some(old) = s.packets.pop_front() else { break };
            s.bytes -= old.data.len();
            s.left_out = s.left_out.saturating_add(1);
            self.charged -= old.cost();
            recycle(&mut self.spare_buffers, old);
        }
        self.order.push_back((source, stamp));
        while self.charged > self.cfg.ring_bytes && self.forget_oldest(source) {}
        if self.order.len() > 2 * self.sources.len() + 64 {
            let sources = &self.sources;
            self.order.retain(|(ip, st)| sources.get(ip).is_some_and(|s| s.touched == *st));
        }
    }

    /// Forgets the source touched longest ago (never `keep`); false if none is left to forget.
    fn forget_oldest(&mut self, keep: IpAddr) -> bool {
        while let Some((ip, stamp)) = self.order.pop_front() {
            if ip == keep {
                // Its current entry is at the back; this one is stale either way.
                continue;
            }
            if self.sources.get(&ip).is_some_and(|s| s.touched == stamp) {
                if let Some(mut s) = self.sources.remove(&ip) {
                    self.charged -= SOURCE_OVERHEAD;
                    self.forgotten_sources += 1;
                    for k in s.packets.drain(..) {
                        self.charged -= k.cost();
                        recycle(&mut self.spare_buffers, k);
                    }
                    if self.spare_queues.len() < SPARE_QUEUES && s.packets.capacity() <= SPARE_QUEUE_PACKETS {
                        self.spare_queues.push(s.packets);
                    }
                }
                return true;
            }
        }
        // Only `keep` is left: its own bound applies.
        self.order.push_back((keep, self.stamp));
        false
    }

    /// The evidence about `source` for alert `alert_id`, filed under `node`:
    /// its kept packets of one link type (the most recent packet's), oldest
    /// first; `None` when the ring holds nothing of it. The ring keeps them
    /// (several alerts may name one source).
    pub fn evidence(&self, node: &str, alert_id: u64, source: IpAddr) -> Option<Evidence> {
        let s = self.sources.get(&source)?;
        let dlt = s.packets.back()?.dlt;
        let packets: Vec<EvidencePacket> = s
            .packets
            .iter()
            .filter(|k| k.dlt == dlt)
            .map(|k| EvidencePacket { ts_ns: k.ts_ns, orig_len: k.orig_len, data: k.data.to_vec() })
            .collect();
        let other = s.packets.len() - packets.len();
        Some(Evidence {
            node: node.to_string(),
            alert_id,
            source,
            link_type: dlt,
            packets,
            left_out: s.left_out.saturating_add(other as u32),
        })
    }

    /// Bytes charged now (packets, their bookkeeping, sources'): never above `ring_bytes`
    /// once more than one source is held.
    pub fn charged_bytes(&self) -> usize {
        self.charged
    }

    /// Sources held.
    pub fn sources(&self) -> usize {
        self.sources.len()
    }

    /// Recency entries held (live and stale): bounded by twice the sources plus 64.
    pub fn order_len(&self) -> usize {
        self.order.len()
    }

    /// Sources forgotten to stay within `ring_bytes`.
    pub fn forgotten_sources(&self) -> u64 {
        self.forgotten_sources
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatewarden_capture::LinkType;

    fn frame(ts: u64, data: &[u8]) -> Frame<'_> {
        Frame { ts_ns: ts, link: LinkType::Ethernet, data, orig_len: data.len() as u32 }
    }

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0xc633_0000 | (n & 0xffff)))
    }

    #[test]
    fn keeps_the_first_packets_of_a_flow_cut_at_the_snap_length() {
        let mut r = EvidenceRing::new(&EvidenceConfig::default());
        let data = [7u8; 1500];
        for i in 1..=20 {
            r.keep(ip(1), &frame(i, &data), i);
        }
        let e = r.evidence("r1", 42, ip(1)).unwrap();
        assert_eq!(e.packets.len(), 8, "packets_per_flow");
        assert!(e.packets.iter().all(|p| p.data.len() == 256 && p.orig_len == 1500));
        assert_eq!((e.alert_id, e.link_type, e.node.as_str()), (42, 1, "r1"));
        assert_eq!(e.check(), Ok(()));
        assert!(r.evidence("r1", 42, ip(2)).is_none());
    }

    #[test]
    fn one_source_keeps_at_most_max_alert_bytes_and_drops_its_oldest() {
        let mut r = EvidenceRing::new(&EvidenceConfig::default());
        let data = [1u8; 256];
        for i in 0..10_000u64 {
            r.keep(ip(1), &frame(i, &data), 1);
        }
        let e = r.evidence("r", 1, ip(1)).unwrap();
        assert_eq!(e.captured_bytes(), 64 * 1024);
        assert_eq!(e.packets.len(), 256);
        assert_eq!(e.packets[0].ts_ns, 10_000 - 256, "the newest flows' packets stay");
        assert_eq!(e.left_out, 10_000 - 256);
        assert!(r.charged_bytes() <= 64 * 1024 + 256 * PACKET_OVERHEAD + SOURCE_OVERHEAD);
    }

    /// A spoofed flood: a million forged sources, one SYN each. The ring stays
    /// within its bytes, its recency list stays bounded, and a real attacker
    /// seen during the flood is still there to answer its verdict.
    #[test]
    fn a_spoofed_flood_cannot_grow_the_ring() {
        let cfg = EvidenceConfig { ring_bytes: 1 << 20, ..EvidenceConfig::default() };
        let mut r = EvidenceRing::new(&cfg);
        let syn = [0u8; 74];
        let attacker: IpAddr = "203.0.113.9".parse().unwrap();
        let start = std::time::Instant::now();
        for i in 0..1_000_000u32 {
            let forged = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 | i));
            r.keep(forged, &frame(i as u64, &syn), 1);
            if i % 1000 == 0 {
                r.keep(attacker, &frame(i as u64, &syn), 1);
            }
            assert!(r.charged_bytes() <= cfg.ring_bytes, "at {i}: {}", r.charged_bytes());
            assert!(r.order_len() <= 2 * r.sources() + 65, "at {i}: {} entries", r.order_len());
        }
        let per_packet = start.elapsed() / 1_001_000;
        assert!(r.sources() <= cfg.ring_bytes / SOURCE_OVERHEAD);
        assert!(r.forgotten_sources() > 900_000);
        let e = r.evidence("r", 1, attacker).expect("the attacker touched recently is kept");
        assert!(!e.packets.is_empty());
        eprintln!(
            "spoofed flood: {} sources held in {} bytes, {per_packet:?} per packet (debug build)",
            r.sources(),
            r.charged_bytes()
        );
    }

    /// Forgotten packets' buffers and queues are reused (a flood of one-packet sources
    /// allocates nothing once the ring is full): a reused buffer holds exactly its new
    /// packet, whatever the old one was, and the ring's charge stays what it holds.
    #[test]
    fn reused_buffers_hold_exactly_their_new_packet() {
        let cfg = EvidenceConfig { ring_bytes: 1 << 17, max_alert_bytes: 1 << 16, ..EvidenceConfig::default() };
        let mut r = EvidenceRing::new(&cfg);
        for i in 0..20_000u32 {
            // Sizes cycle 60..=300 (over the 256-byte snap), bytes differ per source.
            let len = 60 + (i as usize * 37) % 241;
            let data: Vec<u8> = (0..len).map(|j| (i as usize + j) as u8).collect();
            r.keep(ip(i), &frame(u64::from(i), &data), 1);
            assert!(r.charged_bytes() <= cfg.ring_bytes);
            let e = r.evidence("r", 1, ip(i)).unwrap();
            assert_eq!(e.packets.len(), 1, "source {i}");
            assert_eq!(e.packets[0].data, data[..len.min(256)], "source {i}");
            assert_eq!(e.packets[0].orig_len as usize, len);
        }
        assert!(r.forgotten_sources() > 19_000);
        assert!(r.spare_buffers.len() <= SPARE_BUFFERS && r.spare_queues.len() <= SPARE_QUEUES);
        // The charge is the sum of what is held, recomputed.
        let held: usize =
            r.sources.values().map(|s| SOURCE_OVERHEAD + s.packets.iter().map(Kept::cost).sum::<usize>()).sum();
        assert_eq!(r.charged_bytes(), held);
    }

    /// Spares of large packets are not reused for small ones: a flood of
    /// 54-byte SYNs after large packets holds as many sources as in a fresh ring
    /// (reused 256-byte buffers charged at capacity held a fifth of them).
    #[test]
    fn a_flood_after_large_packets_holds_as_many_sources_as_a_fresh_ring() {
        let cfg = EvidenceConfig { ring_bytes: 1 << 20, ..EvidenceConfig::default() };
        let flood = |r: &mut EvidenceRing| {
            for i in 0..50_000u32 {
                r.keep(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 | i)), &frame(u64::from(i), &[0u8; 54]), 1);
            }
            r.sources()
        };
        let fresh = flood(&mut EvidenceRing::new(&cfg));
        let mut r = EvidenceRing::new(&cfg);
        for i in 0..20_000u32 {
            r.keep(ip(i), &frame(u64::from(i), &[1u8; 1500]), 1);
        }
        let after = flood(&mut r);
        assert!(after * 100 >= fresh * 95, "{after} sources after large packets, {fresh} in a fresh ring");
    }

    #[test]
    fn disabled_keeps_nothing_and_knobs_are_validated() {
        let mut r = EvidenceRing::new(&EvidenceConfig { enabled: false, ..EvidenceConfig::default() });
        r.keep(ip(1), &frame(1, &[1; 60]), 1);
        assert!(r.evidence("r", 1, ip(1)).is_none());
        assert!(EvidenceConfig::default().problems().is_empty());
        let bad = EvidenceConfig {
            packets_per_flow: 0,
            snap_bytes: 10,
            max_alert_bytes: 2 << 20,
            ring_bytes: 1,
            store_bytes: 0,
            enabled: true,
        };
        let keys: Vec<&str> = bad.problems().iter().map(|p| p.0).collect();
        assert_eq!(
            keys,
            [
                "evidence.packets_per_flow",
                "evidence.snap_bytes",
                "evidence.max_alert_bytes",
                "evidence.ring_bytes",
                "evidence.store_bytes"
            ]
        );
    }
}
