//! Writes frames as a classic pcap file (microsecond timestamps, the
//! format every tcpdump and Wireshark reads), with pcap-file's writer: the
//! monitor's per-alert evidence (issue #18) is written here, so what the
//! capture reader accepts and what the writer produces are one library's.

use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, Endianness, TsResolution};

/// One frame to write.
#[derive(Debug, Clone, Copy)]
pub struct OutFrame<'a> {
    /// Capture time, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// Length on the wire (at least `data.len()`).
    pub orig_len: u32,
    /// The bytes kept.
    pub data: &'a [u8],
}

/// Why frames could not be written.
#[derive(Debug, thiserror::Error)]
#[error("writing a pcap: {0}")]
pub struct WriteError(String);

/// A whole pcap file (little-endian, microseconds) of `frames` with link
/// type `dlt` (libpcap DLT number). A frame pcap cannot hold (a time past
/// 2106, a kept length above its wire length) is an error, not a bad file.
pub fn pcap_bytes<'a>(dlt: u32, frames: impl IntoIterator<Item = OutFrame<'a>>) -> Result<Vec<u8>, WriteError> {
    let frames: Vec<OutFrame<'a>> = frames.into_iter().collect();
    let snaplen = frames.iter().map(|f| f.data.len() as u32).max().unwrap_or(0).max(65_535);
    let header = PcapHeader {
        version_major: 2,
        version_minor: 4,
        ts_correction: 0,
        ts_accuracy: 0,
        snaplen,
        datalink: DataLink::from(dlt),
        ts_resolution: TsResolution::MicroSecond,
        endianness: Endianness::Little,
    };
    let size = 24 + frames.iter().map(|f| 16 + f.data.len()).sum::<usize>();
    let mut w = PcapWriter::with_header(Vec::with_capacity(size), header).map_err(|e| WriteError(e.to_string()))?;
    for f in &frames {
        let p = PcapPacket::new(Duration::from_nanos(f.ts_ns), f.orig_len, f.data);
        w.write_packet(&p).map_err(|e| WriteError(e.to_string()))?;
    }
    Ok(w.into_writer())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CaptureFile, LinkType, PacketSource};

    #[test]
    fn what_it_writes_the_capture_reader_reads_back() {
        let a = [0x11u8; 60];
        let b = [0x22u8; 54];
        let frames = [
            OutFrame { ts_ns: 1_700_000_000_123_456_000, orig_len: 60, data: &a },
            OutFrame { ts_ns: 1_700_000_001_000_001_000, orig_len: 1514, data: &b },
        ];
        let bytes = pcap_bytes(1, frames).unwrap();
        assert_eq!(bytes.len(), 24 + 16 + 60 + 16 + 54);
        let mut cf =
            CaptureFile::from_reader(std::path::Path::new("mem"), Box::new(std::io::Cursor::new(bytes))).unwrap();
        let f = cf.next_frame().unwrap().unwrap();
        assert_eq!((f.ts_ns, f.orig_len, f.data, f.link), (1_700_000_000_123_456_000, 60, &a[..], LinkType::Ethernet));
        let f = cf.next_frame().unwrap().unwrap();
        assert_eq!((f.ts_ns, f.orig_len, f.data.len()), (1_700_000_001_000_001_000, 1514, 54));
        assert!(cf.next_frame().unwrap().is_none());
    }

    #[test]
    fn a_frame_pcap_cannot_hold_is_an_error() {
        let a = [0u8; 60];
        assert!(pcap_bytes(1, [OutFrame { ts_ns: 1, orig_len: 10, data: &a }]).is_err());
        assert!(pcap_bytes(1, [OutFrame { ts_ns: u64::MAX, orig_len: 60, data: &a }]).is_err());
        assert_eq!(pcap_bytes(101, []).unwrap().len(), 24, "an empty capture is a header");
    }
}
