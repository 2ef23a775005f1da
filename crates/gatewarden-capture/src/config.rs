//! `[capture]`: where the router captures and how much of each packet it
//! keeps. The binary composes it into its TOML file (same keys).

use serde::{Deserialize, Serialize};

/// Live capture on the router.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    /// Interface to capture on (the LAN side); empty means no live capture.
    pub interface: String,
    /// Bytes kept of each packet; headers only need 128. An IPv6 packet
    /// whose extension headers reach past it is kept further, up to its
    /// transport header (at most 9 KiB): the capture filter reads the chain
    /// (`afpacket::snap_filter`): a scan hid behind Destination Options.
    pub snap_len: u32,
    /// Put the interface in promiscuous mode.
    pub promiscuous: bool,
    /// `run --replay FILE` only: play the file at its recorded pace and stamp
    /// each packet with the wall clock, as a live capture would (a fleet of
    /// routers fed from files, end-to-end latency measured against real time).
    /// Off: the file is read as fast as possible with its recorded times.
    pub replay_live: bool,
    /// Blocks in the AF_PACKET ring. With `ring_block_kib` it sets how long a
    /// burst the ring absorbs while the pipeline catches up; when it fills
    /// the router sheds load (see `overload`) before the kernel must drop.
    /// The kernel hands a block over when it is full or 10 ms old, so at
    /// ordinary rates each block holds 10 ms of traffic and the ring rides out
    /// a pause of the pipeline of `ring_blocks` × 10 ms: many small blocks, not
    /// a few large ones (4 × 1 MiB dropped frames whenever a loaded machine
    /// paused the pipeline for 40 ms; 64 × 128 KiB rides out 640 ms).
    pub ring_blocks: u32,
    /// Size of one ring block in KiB (a power of two, 4 to 65536).
    pub ring_block_kib: u32,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            interface: String::new(),
            snap_len: 128,
            promiscuous: false,
            replay_live: false,
            ring_blocks: 64,
            ring_block_kib: 128,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_ring_rides_out_a_half_second_pause_at_ordinary_rates_in_8_mib() {
        let c = CaptureConfig::default();
        let pause_ms = c.ring_blocks * crate::afpacket::BLOCK_TIMEOUT_MS;
        assert!(pause_ms >= 500, "a pause of {pause_ms} ms fills the ring");
        assert_eq!(c.ring_blocks * c.ring_block_kib, 8192, "the ring's memory is 8 MiB");
        // A block holds the largest frame the snap length lets through (and
        // so the 9 KiB the filter allows IPv6 extension headers).
        assert!(c.ring_block_kib * 1024 >= 65_535 + 1024);
    }
}
