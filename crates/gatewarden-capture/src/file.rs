//! Reads pcap and pcapng files in a streaming way, with exact byte offsets in
//! every error so an operator can find the bad record with a hex editor.
//!
//! Classic pcap is parsed here directly (it is 16 bytes a record, and
//! pcap-file refuses `orig_len > snaplen`, which every headers-only capture
//! has); pcapng blocks are parsed by pcap-file.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgParser};
use pcap_file::PcapError;

use super::{CaptureError, Frame, LinkType, PacketSource, SourceStats};

/// Largest single record accepted; anything larger is corruption, not a packet.
pub const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;
const READ_CHUNK: usize = 256 * 1024;

enum Format {
    Pcap { big_endian: bool, nanos: bool, link: LinkType },
    PcapNg { parser: Box<PcapNgParser>, interfaces: Vec<Interface> },
}

#[derive(Clone, Copy)]
struct Interface {
    link: Option<LinkType>,
    dlt: u32,
    /// Multiply a raw timestamp by `mul` and divide by `div` to get nanoseconds.
    mul: u64,
    div: u64,
}

/// A pcap or pcapng file opened for streaming.
pub struct CaptureFile {
    path: PathBuf,
    file: Box<dyn Read + Send>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// File offset of `buf[0]`.
    base: u64,
    eof: bool,
    format: Format,
    size: Option<u64>,
    stats: SourceStats,
}

impl std::fmt::Debug for CaptureFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureFile").field("path", &self.path).finish()
    }
}

impl CaptureFile {
    /// Opens a capture file and reads its header.
    pub fn open(path: &Path) -> Result<CaptureFile, CaptureError> {
        let file = File::open(path).map_err(|source| CaptureError::Io { path: path.to_path_buf(), source })?;
        let size = file.metadata().ok().map(|m| m.len());
        let mut cf = CaptureFile::from_reader(path, Box::new(file))?;
        cf.size = size;
        Ok(cf)
    }

    /// Reads a capture from any byte stream; `path` names it in errors.
    pub fn from_reader(path: &Path, file: Box<dyn Read + Send>) -> Result<CaptureFile, CaptureError> {
        let mut cf = CaptureFile {
            path: path.to_path_buf(),
            file,
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            base: 0,
            eof: false,
            format: Format::Pcap { big_endian: false, nanos: false, link: LinkType::Ethernet },
            size: None,
            stats: SourceStats::default(),
        };
        cf.read_header()?;
        Ok(cf)
    }

    fn offset(&self) -> u64 {
        self.base + self.start as u64
    }

    fn corrupt(&self, detail: impl Into<String>) -> CaptureError {
        CaptureError::Corrupt { path: self.path.clone(), offset: self.offset(), detail: detail.into() }
    }

    fn truncated(&self, detail: impl Into<String>) -> CaptureError {
        CaptureError::Truncated { path: self.path.clone(), offset: self.offset(), detail: detail.into() }
    }

    /// Makes at least `want` bytes available from `start`, unless the file ends first.
    /// Returns whether they are available.
    fn fill(&mut self, want: usize) -> Result<bool, CaptureError> {
        if want > MAX_RECORD_BYTES {
            return Err(
                self.corrupt(format!("record claims {want} bytes, more than the {MAX_RECORD_BYTES}-byte limit"))
            );
        }
        while self.end - self.start < want && !self.eof {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.base += self.start as u64;
                self.start = 0;
            }
            if self.buf.len() < want.max(READ_CHUNK) {
                self.buf.resize(want.max(READ_CHUNK), 0);
            }
            if self.end == self.buf.len() {
                let grown = (self.buf.len() * 2).min(MAX_RECORD_BYTES + READ_CHUNK);
                self.buf.resize(grown, 0);
            }
            match self.file.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => return Err(CaptureError::Io { path: self.path.clone(), source }),
            }
        }
        Ok(self.end - self.start >= want)
    }

    fn read_header(&mut self) -> Result<(), CaptureError> {
        self.fill(24)?;
        let head = &self.buf[self.start..self.end];
        if head.len() < 4 {
            return Err(CaptureError::NotACapture { path: self.path.clone(), magic: head.to_vec() });
        }
        let magic = [head[0], head[1], head[2], head[3]];
        let (big_endian, nanos) = match magic {
            [0xd4, 0xc3, 0xb2, 0xa1] => (false, false),
            [0xa1, 0xb2, 0xc3, 0xd4] => (true, false),
            [0x4d, 0x3c, 0xb2, 0xa1] => (false, true),
            [0xa1, 0xb2, 0x3c, 0x4d] => (true, true),
            [0x0a, 0x0d, 0x0d, 0x0a] => return self.read_pcapng_header(),
            _ => return Err(CaptureError::NotACapture { path: self.path.clone(), magic: magic.to_vec() }),
        };
        if head.len() < 24 {
            return Err(self.truncated(format!("pcap file header needs 24 bytes, file has {}", head.len())));
        }
        let dlt = read_u32(&head[20..24], big_endian) & 0x0fff_ffff;
        let link = LinkType::from_dlt(dlt).ok_or(CaptureError::UnsupportedLink {
            path: self.path.clone(),
            dlt,
            offset: 20,
        })?;
        self.format = Format::Pcap { big_endian, nanos, link };
        self.start += 24;
        Ok(())
    }

    fn read_pcapng_header(&mut self) -> Result<(), CaptureError> {
        self.fill(28)?;
        let block_len = self.peek_pcapng_block_len(true)?;
        self.fill(block_len)?;
        let slice = &self.buf[self.start..self.end];
        match PcapNgParser::new(slice) {
            Ok((rem, parser)) => {
                let used = slice.len() - rem.len();
                self.format = Format::PcapNg { parser: Box::new(parser), interfaces: Vec::new() };
                self.start += used;
                Ok(())
            }
            Err(PcapError::IncompleteBuffer) => Err(self.truncated("pcapng section header")),
            Err(e) => Err(self.corrupt(format!("pcapng section header: {e}"))),
        }
    }

    /// Reads the length field of the pcapng block at `start`, checking it is sane
    /// before the parser trusts it.
    fn peek_pcapng_block_len(&self, section_header: bool) -> Result<usize, CaptureError> {
        let avail = &self.buf[self.start..self.end];
        if avail.len() < 12 {
            return Err(self.truncated(format!("pcapng block header needs 12 bytes, {} left", avail.len())));
        }
        let big_endian = if section_header {
            // The byte-order magic follows the length in a section header block.
            match avail[8..12] {
                [0x1a, 0x2b, 0x3c, 0x4d] => true,
                [0x4d, 0x3c, 0x2b, 0x1a] => false,
                _ => return Err(self.corrupt("pcapng section header has no valid byte-order magic")),
            }
        } else if let Format::PcapNg { parser, .. } = &self.format {
            parser.section().endianness == pcap_file::Endianness::Big
        } else {
            false
        };
        let len = read_u32(&avail[4..8], big_endian) as usize;
        if len < 12 || len % 4 != 0 {
            return Err(self.corrupt(format!("pcapng block length {len} is not a multiple of 4 of at least 12")));
        }
        if len > MAX_RECORD_BYTES {
            return Err(
                self.corrupt(format!("pcapng block claims {len} bytes, more than the {MAX_RECORD_BYTES}-byte limit"))
            );
        }
        Ok(len)
    }

    fn next_pcap(&mut self, big_endian: bool, nanos: bool, link: LinkType) -> Result<Option<Frame<'_>>, CaptureError> {
        if !self.fill(16)? {
            if self.start == self.end {
                return Ok(None);
            }
            return Err(self.truncated(format!("record header needs 16 bytes, {} left", self.end - self.start)));
        }
        let h = &self.buf[self.start..self.start + 16];
        let ts_sec = read_u32(&h[0..4], big_endian) as u64;
        let ts_frac = read_u32(&h[4..8], big_endian) as u64;
        let incl_len = read_u32(&h[8..12], big_endian) as usize;
        let orig_len = read_u32(&h[12..16], big_endian);
        let frac_ns = if nanos { ts_frac } else { ts_frac * 1000 };
        if frac_ns >= 1_000_000_000 {
            return Err(self.corrupt(format!("record timestamp fraction {ts_frac} is out of range")));
        }
        if incl_len > MAX_RECORD_BYTES {
            return Err(self.corrupt(format!(
                "record claims {incl_len} captured bytes, more than the {MAX_RECORD_BYTES}-byte limit"
            )));
        }
        if !self.fill(16 + incl_len)? {
            return Err(self.truncated(format!(
                "record of {incl_len} bytes, {} left in the file",
                (self.end - self.start).saturating_sub(16)
            )));
        }
        let data_start = self.start + 16;
        self.start = data_start + incl_len;
        self.stats.frames += 1;
        self.stats.bytes_read = self.offset();
        Ok(Some(Frame {
            ts_ns: ts_sec * 1_000_000_000 + frac_ns,
            link,
            data: &self.buf[data_start..data_start + incl_len],
            orig_len: orig_len.max(incl_len as u32),
        }))
    }

    fn next_pcapng(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        loop {
            if !self.fill(12)? {
                if self.start == self.end {
                    return Ok(None);
                }
                return Err(
                    self.truncated(format!("pcapng block header needs 12 bytes, {} left", self.end - self.start))
                );
            }
            let is_shb = self.buf[self.start..self.start + 4] == [0x0a, 0x0d, 0x0d, 0x0a];
            let len = self.peek_pcapng_block_len(is_shb)?;
            if !self.fill(len)? {
                return Err(self.truncated(format!("pcapng block of {len} bytes, {} left", self.end - self.start)));
            }
            let block_start = self.start;
            let slice = &self.buf[block_start..block_start + len];
            let Format::PcapNg { parser, interfaces } = &mut self.format else {
                unreachable!("next_pcapng is only called for pcapng files")
            };
            let block = match parser.next_block(slice) {
                Ok((_, block)) => block,
                Err(e) => {
                    let detail = format!("pcapng block: {e}");
                    return Err(self.corrupt(detail));
                }
            };
            let (ts_raw, if_id, data, orig_len) = match block {
                Block::SectionHeader(_) => {
                    interfaces.clear();
                    self.start += len;
                    continue;
                }
                Block::InterfaceDescription(idb) => {
                    let dlt = u32::from(idb.linktype);
                    let (mul, div) = idb
                        .options
                        .iter()
                        .find_map(|o| match o {
                            InterfaceDescriptionOption::IfTsResol(r) => Some(tsresol_to_ns(*r)),
                            _ => None,
                        })
                        .unwrap_or((1000, 1));
                    interfaces.push(Interface { link: LinkType::from_dlt(dlt), dlt, mul, div });
                    self.start += len;
                    continue;
                }
                Block::EnhancedPacket(epb) => {
                    let ts = epb.timestamp.as_nanos() as u64; // pcap-file stores the raw value here
                    let data = match epb.data {
                        std::borrow::Cow::Borrowed(d) => d,
                        std::borrow::Cow::Owned(_) => unreachable!("parser borrows packet data"),
                    };
                    (ts, Some(epb.interface_id), data, epb.original_len)
                }
                Block::SimplePacket(spb) => {
                    let data = match spb.data {
                        std::borrow::Cow::Borrowed(d) => d,
                        std::borrow::Cow::Owned(_) => unreachable!("parser borrows packet data"),
                    };
                    (0, Some(0), data, spb.original_len)
                }
                _ => {
                    self.start += len;
                    continue;
                }
            };
            let if_id = if_id.unwrap_or(0) as usize;
            let described = interfaces.len();
            let Some(iface) = interfaces.get(if_id).copied() else {
                return Err(self.corrupt(format!("packet names interface {if_id}, but only {described} are described")));
            };
            let Some(link) = iface.link else {
                return Err(CaptureError::UnsupportedLink {
                    path: self.path.clone(),
                    dlt: iface.dlt,
                    offset: self.offset(),
                });
            };
            let ts_ns = (ts_raw as u128 * iface.mul as u128 / iface.div as u128).min(u64::MAX as u128) as u64;
            let data_off = data.as_ptr() as usize - slice.as_ptr() as usize;
            let data_len = data.len();
            self.start += len;
            self.stats.frames += 1;
            self.stats.bytes_read = self.offset();
            let data = &self.buf[block_start + data_off..block_start + data_off + data_len];
            return Ok(Some(Frame { ts_ns, link, data, orig_len: orig_len.max(data_len as u32) }));
        }
    }
}

/// Converts pcapng's `if_tsresol` to a (multiply, divide) pair giving nanoseconds.
fn tsresol_to_ns(r: u8) -> (u64, u64) {
    let exp = (r & 0x7f) as u32;
    if r & 0x80 == 0 {
        // 10^-exp seconds per unit.
        if exp <= 9 {
            (10u64.pow(9 - exp), 1)
        } else {
            (1, 10u64.pow((exp - 9).min(19)))
        }
    } else {
        // 2^-exp seconds per unit.
        let exp = exp.min(63);
        (1_000_000_000, 1u64 << exp)
    }
}

fn read_u32(b: &[u8], big_endian: bool) -> u32 {
    let a = [b[0], b[1], b[2], b[3]];
    if big_endian {
        u32::from_be_bytes(a)
    } else {
        u32::from_le_bytes(a)
    }
}

impl PacketSource for CaptureFile {
    fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        match self.format {
            Format::Pcap { big_endian, nanos, link } => self.next_pcap(big_endian, nanos, link),
            Format::PcapNg { .. } => self.next_pcapng(),
        }
    }

    fn stats(&self) -> SourceStats {
        self.stats
    }

    fn size_hint(&self) -> Option<u64> {
        self.size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pcap_bytes(records: &[(u32, u32, &[u8])]) -> Vec<u8> {
        let mut v = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0, 0, 0, 1, 0, 0, 0];
        for (sec, usec, data) in records {
            v.extend(sec.to_le_bytes());
            v.extend(usec.to_le_bytes());
            v.extend((data.len() as u32).to_le_bytes());
            v.extend((data.len() as u32 + 100).to_le_bytes());
            v.extend(*data);
        }
        v
    }

    fn open(bytes: Vec<u8>) -> Result<CaptureFile, CaptureError> {
        CaptureFile::from_reader(Path::new("t.pcap"), Box::new(std::io::Cursor::new(bytes)))
    }

    fn drain(cf: &mut CaptureFile) -> Result<Vec<(u64, Vec<u8>, u32)>, CaptureError> {
        let mut out = Vec::new();
        while let Some(f) = cf.next_frame()? {
            out.push((f.ts_ns, f.data.to_vec(), f.orig_len));
        }
        Ok(out)
    }

    #[test]
    fn reads_pcap_records_with_snapped_lengths() {
        let mut cf = open(pcap_bytes(&[(1, 500, b"abc"), (2, 0, b"defgh")])).unwrap();
        let frames = drain(&mut cf).unwrap();
        assert_eq!(frames, vec![(1_000_500_000, b"abc".to_vec(), 103), (2_000_000_000, b"defgh".to_vec(), 105)]);
        assert_eq!(cf.stats().frames, 2);
    }

    #[test]
    fn truncated_record_reports_its_offset() {
        let mut bytes = pcap_bytes(&[(1, 0, b"abcd"), (2, 0, b"efghijkl")]);
        bytes.truncate(bytes.len() - 3);
        let mut cf = open(bytes).unwrap();
        assert!(cf.next_frame().unwrap().is_some());
        let err = cf.next_frame().unwrap_err();
        match &err {
            CaptureError::Truncated { offset, .. } => assert_eq!(*offset, 24 + 16 + 4),
            e => panic!("{e}"),
        }
        assert!(err.to_string().contains("byte offset 44"), "{err}");
    }

    #[test]
    fn truncated_record_header_reports_its_offset() {
        let mut bytes = pcap_bytes(&[(1, 0, b"abcd")]);
        bytes.extend([1, 2, 3]);
        let mut cf = open(bytes).unwrap();
        cf.next_frame().unwrap();
        assert!(matches!(cf.next_frame(), Err(CaptureError::Truncated { offset: 44, .. })));
    }

    #[test]
    fn huge_record_length_is_corruption_not_an_allocation() {
        let mut bytes = pcap_bytes(&[]);
        bytes.extend([0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0]);
        let mut cf = open(bytes).unwrap();
        assert!(matches!(cf.next_frame(), Err(CaptureError::Corrupt { offset: 24, .. })));
    }

    #[test]
    fn bad_timestamp_fraction_is_corruption() {
        let mut cf = open(pcap_bytes(&[(1, 2_000_000, b"x")])).unwrap();
        assert!(matches!(cf.next_frame(), Err(CaptureError::Corrupt { offset: 24, .. })));
    }

    #[test]
    fn not_a_capture_is_named() {
        let err = open(b"hello world, this is text and not a capture".to_vec()).unwrap_err();
        assert!(matches!(err, CaptureError::NotACapture { .. }), "{err}");
        assert!(open(vec![]).is_err());
        assert!(matches!(open(vec![0xd4, 0xc3, 0xb2, 0xa1, 2]), Err(CaptureError::Truncated { offset: 0, .. })));
    }

    #[test]
    fn unsupported_link_type_is_named() {
        let mut bytes = pcap_bytes(&[]);
        bytes[20] = 105; // 802.11
        assert!(matches!(open(bytes), Err(CaptureError::UnsupportedLink { dlt: 105, .. })));
    }

    #[test]
    fn records_larger_than_the_read_chunk_work() {
        let big = vec![7u8; READ_CHUNK * 3 + 5];
        let mut cf = open(pcap_bytes(&[(1, 0, &big), (2, 0, b"x")])).unwrap();
        let frames = drain(&mut cf).unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].1.len(), big.len());
    }

    #[test]
    fn pcapng_written_by_pcap_file_reads_back_with_nanosecond_times() {
        use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
        use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock;
        use pcap_file::pcapng::PcapNgWriter;
        use pcap_file::DataLink;
        let mut w = PcapNgWriter::new(Vec::new()).unwrap();
        let idb = InterfaceDescriptionBlock { linktype: DataLink::ETHERNET, snaplen: 0xffff, options: vec![] };
        w.write_pcapng_block(idb).unwrap();
        let epb = EnhancedPacketBlock {
            interface_id: 0,
            // Default resolution is microseconds: this is 1.5 s.
            timestamp: std::time::Duration::from_nanos(1_500_000),
            original_len: 60,
            data: std::borrow::Cow::Borrowed(&[1, 2, 3, 4, 5]),
            options: vec![],
        };
        w.write_pcapng_block(epb).unwrap();
        let bytes = w.into_inner();
        let mut cf = open(bytes.clone()).unwrap();
        let frames = drain(&mut cf).unwrap();
        assert_eq!(frames, vec![(1_500_000_000, vec![1, 2, 3, 4, 5], 60)]);

        let mut cut = bytes.clone();
        cut.truncate(bytes.len() - 2);
        let mut cf = open(cut).unwrap();
        assert!(matches!(cf.next_frame(), Err(CaptureError::Truncated { .. })));
    }

    #[test]
    fn tsresol_conversion() {
        assert_eq!(tsresol_to_ns(6), (1000, 1));
        assert_eq!(tsresol_to_ns(9), (1, 1));
        assert_eq!(tsresol_to_ns(12), (1, 1000));
        assert_eq!(tsresol_to_ns(0x80 | 10), (1_000_000_000, 1024));
    }
}
