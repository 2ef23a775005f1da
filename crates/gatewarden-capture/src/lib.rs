//! Where packets come from (and, in [`pcap_writer`], where kept ones go): every source (capture files now, AF_PACKET
//! rings on the router) sits behind [`PacketSource`], so the flow table and
//! everything after it never knows which one it is reading.
//!
//! gatewarden-capture depends on gatewarden-core only. It is one of the two
//! crates allowed `unsafe` (the other is gatewarden-netlink): the AF_PACKET
//! socket options and the `mmap`ed ring in [`afpacket`], each block with a
//! `// SAFETY:` comment.

pub mod afpacket;
pub mod config;
pub mod file;
pub mod overload;
pub mod pcap_writer;

use std::path::PathBuf;

pub use afpacket::{AfPacketConfig, AfPacketSource, KernelCounters, RingBacklog};
pub use file::CaptureFile;

/// How a frame's bytes start, from the capture's link-layer type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkType {
    /// Ethernet II, possibly with 802.1Q tags (DLT 1).
    Ethernet,
    /// A bare IPv4 or IPv6 header (DLT 101, 228, 229, 12, 14).
    RawIp,
    /// Linux "cooked" capture, as `tcpdump -i any` writes (DLT 113).
    LinuxSll,
    /// BSD loopback with a 4-byte address family (DLT 0).
    Null,
}

impl LinkType {
    /// Maps a libpcap DLT number, or `None` for link types we cannot parse.
    pub fn from_dlt(dlt: u32) -> Option<LinkType> {
        match dlt {
            1 => Some(LinkType::Ethernet),
            12 | 14 | 101 | 228 | 229 => Some(LinkType::RawIp),
            113 => Some(LinkType::LinuxSll),
            0 => Some(LinkType::Null),
            _ => None,
        }
    }

    /// The libpcap DLT number a capture file of this link type declares
    /// (raw IP as DLT_RAW 101), for writing frames back out.
    pub fn dlt(self) -> u32 {
        match self {
            LinkType::Ethernet => 1,
            LinkType::RawIp => 101,
            LinkType::LinuxSll => 113,
            LinkType::Null => 0,
        }
    }
}

/// One captured frame, borrowed from the source's buffer until the next call.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// Capture time, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// How to parse `data`.
    pub link: LinkType,
    /// The captured bytes (possibly cut at the snap length).
    pub data: &'a [u8],
    /// Length of the packet on the wire.
    pub orig_len: u32,
}

/// Why a source stopped or skipped data.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a pcap or pcapng capture at all.
    #[error("{path}: not a pcap or pcapng capture (magic bytes {magic:02x?}); convert it with `editcap -F pcap`")]
    NotACapture {
        /// The file.
        path: PathBuf,
        /// The first bytes seen.
        magic: Vec<u8>,
    },
    /// Unparseable data at a known position.
    #[error("{path}: corrupt capture at byte offset {offset}: {detail}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Offset from the start of the file of the bad record.
        offset: u64,
        /// What is wrong.
        detail: String,
    },
    /// The file ends in the middle of a record.
    #[error("{path}: truncated capture at byte offset {offset}: the last record is cut short ({detail})")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Offset of the incomplete record.
        offset: u64,
        /// What was expected.
        detail: String,
    },
    /// A link type gatewarden cannot parse.
    #[error("{path}: unsupported link type {dlt} at byte offset {offset}; capture on an Ethernet interface or with `tcpdump -i any`")]
    UnsupportedLink {
        /// The file.
        path: PathBuf,
        /// The DLT number.
        dlt: u32,
        /// Offset of the header that declared it.
        offset: u64,
    },
}

/// Counters a source keeps about itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// Frames returned.
    pub frames: u64,
    /// Bytes of the source consumed so far (file offset).
    pub bytes_read: u64,
    /// Bytes of long records skipped instead of read, when frames are cut
    /// (`CaptureFile::keep_at_most`): payload that was never copied.
    pub bytes_skipped: u64,
    /// Frames the kernel dropped before we could read them (live capture only).
    pub kernel_drops: u64,
    /// pcapng blocks of a type the reader does not know, skipped as the pcapng
    /// spec says: they may have held packets nobody saw, so a replay says so.
    /// (Blocks known to hold none, such as name resolution and interface
    /// statistics, are not counted.)
    pub blocks_skipped: u64,
    /// The first such block: its type and its byte offset in the file.
    pub first_skipped_block: Option<(u32, u64)>,
}

/// Anything that yields captured frames in time order.
pub trait PacketSource {
    /// The next frame, `Ok(None)` at the end, or an error that ends the source.
    fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError>;
    /// Counters so far.
    fn stats(&self) -> SourceStats;
    /// Total size if known (files), for progress bars.
    fn size_hint(&self) -> Option<u64> {
        None
    }
}
