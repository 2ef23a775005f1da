//! Reads pcap and pcapng files in a streaming way, with exact byte offsets in
//! every error so an operator can find the bad record with a hex editor.
//!
//! Classic pcap is parsed here directly (it is 16 bytes a record, and
//! pcap-file refuses `orig_len > snaplen`, which every headers-only capture
//! has). So are pcapng blocks: pcap-file's parser keeps a copy of every
//! interface description, each option a list entry of ~40 bytes, until the
//! next section header, so a hostile file of 4-byte options held ~10 times its
//! size in memory. Here a block is read in place and only a few numbers per
//! interface are kept, for at most [`MAX_PCAPNG_INTERFACES`] interfaces a section.

use std::fs::File;
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};

use pcap_file::pcapng::blocks::{
    ENHANCED_PACKET_BLOCK, INTERFACE_DESCRIPTION_BLOCK, INTERFACE_STATISTIC_BLOCK, NAME_RESOLUTION_BLOCK, PACKET_BLOCK,
    SECTION_HEADER_BLOCK, SIMPLE_PACKET_BLOCK, SYSTEMD_JOURNAL_EXPORT_BLOCK,
};

use super::{CaptureError, Frame, LinkType, PacketSource, SourceStats};

/// Largest single record accepted; anything larger is corruption, not a packet.
pub const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;
/// Most interfaces one pcapng section may describe (real captures have a few).
pub const MAX_PCAPNG_INTERFACES: usize = 4096;
/// Largest pcapng interface description block accepted (real ones are a few
/// hundred bytes: a link type, a name, a filter, a few numbers).
pub const MAX_PCAPNG_INTERFACE_BYTES: usize = 64 * 1024;
/// pcapng block types known to hold no packets, read past without a word:
/// name resolution, interface statistics, systemd journal export, decryption
/// secrets and the two custom block types. Any other type the reader does not
/// parse is skipped as the pcapng spec says, but counted
/// ([`SourceStats::blocks_skipped`]): it may have held packets.
const NG_BLOCKS_WITHOUT_PACKETS: [u32; 6] = [
    NAME_RESOLUTION_BLOCK,
    INTERFACE_STATISTIC_BLOCK,
    SYSTEMD_JOURNAL_EXPORT_BLOCK,
    0x0000_000a,
    0x0000_0bad,
    0x4000_0bad,
];
const READ_CHUNK: usize = 256 * 1024;
/// The first read after a skip when frames are cut ([`CaptureFile::keep_at_most`]):
/// a page beyond what is wanted, so a long record's payload is mostly skipped
/// (never read) rather than copied (on a capture of full-size packets, fixed 4 KiB reads
/// spent half the system time of 16 KiB and a fifth of 256 KiB).
const SPARSE_READ_CHUNK: usize = 4 * 1024;

/// Where the bytes come from: a file is read at offsets we keep (one system
/// call a read, none to skip a payload nobody reads); a stream in order.
enum Input {
    File { file: File, pos: u64 },
    Stream(Box<dyn Read + Send>),
}

impl Input {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Input::File { file, pos } => {
                let n = std::os::unix::fs::FileExt::read_at(file, buf, *pos)?;
                *pos += n as u64;
                Ok(n)
            }
            Input::Stream(r) => r.read(buf),
        }
    }
}

/// In pcapng, `big_endian` is the current section's byte order and
/// `interfaces` what that section described.
enum Format {
    Pcap { big_endian: bool, nanos: bool, link: LinkType },
    PcapNg { big_endian: bool, interfaces: Vec<Interface> },
}

/// What a pcapng block means to the reader; packet data is a range of the block.
/// `Packet` is an enhanced or an (obsolete) packet block. `Simple` is a simple
/// packet block: its data starts at `data_start` and is cut to interface 0's
/// snap length, which the block itself does not say; `room` is what the block
/// holds, padding included. `NoPackets` is a block of a type that holds none
/// ([`NG_BLOCKS_WITHOUT_PACKETS`]), `Unknown` one of a type the reader does not know.
enum NgBlock {
    Section { big_endian: bool },
    Interface(Interface),
    Packet { if_id: usize, ts_raw: u64, data: Range<usize>, orig_len: u32 },
    Simple { data_start: usize, room: usize, orig_len: u32 },
    NoPackets,
    Unknown { kind: u32 },
}

#[derive(Clone, Copy)]
struct Interface {
    link: Option<LinkType>,
    dlt: u32,
    /// Most bytes of a packet captured, 0 for no limit: the length of a
    /// simple packet block's data.
    snaplen: u32,
    /// Multiply a raw timestamp by `mul` and divide by `div` to get nanoseconds.
    mul: u64,
    div: u64,
}

/// A pcap or pcapng file opened for streaming.
pub struct CaptureFile {
    path: PathBuf,
    file: Input,
    buf: Vec<u8>,
    /// Bytes of each frame handed out; the rest of a longer record is skipped.
    keep: usize,
    /// Bytes of the last record beyond the buffer, still to skip before the next one starts.
    pending_skip: u64,
    /// The next read's size when frames are cut: a page after a skip, twice
    /// as much after each read without one, so a run of small records costs
    /// few reads and a long record is skipped, not copied.
    sparse_read: usize,
    start: usize,
    end: usize,
    /// File offset of `buf[0]`.
    base: u64,
    eof: bool,
    format: Format,
    size: Option<u64>,
    stats: SourceStats,
    /// The last pcapng packet's time: a simple packet block, which has
    /// none, is stamped with it.
    last_ng_ts_ns: u64,
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
        CaptureFile::with_input(path, Input::File { file, pos: 0 }, size)
    }

    /// Reads a capture from any byte stream; `path` names it in errors.
    pub fn from_reader(path: &Path, file: Box<dyn Read + Send>) -> Result<CaptureFile, CaptureError> {
        CaptureFile::with_input(path, Input::Stream(file), None)
    }

    /// Hands out at most `bytes` of each frame (its `orig_len` still says how
    /// long it was). The pipeline reads headers only, so a replay of a capture
    /// with full payloads need not copy them: in an opened file the rest of a
    /// long record is skipped, never read. A record that runs past the end of the file
    /// is still reported as truncated before any of it is handed out.
    pub fn keep_at_most(&mut self, bytes: usize) {
        self.keep = bytes.max(1);
    }

    fn with_input(path: &Path, file: Input, size: Option<u64>) -> Result<CaptureFile, CaptureError> {
        let mut cf = CaptureFile {
            path: path.to_path_buf(),
            file,
            keep: usize::MAX,
            pending_skip: 0,
            sparse_read: SPARSE_READ_CHUNK,
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            base: 0,
            eof: false,
            format: Format::Pcap { big_endian: false, nanos: false, link: LinkType::Ethernet },
            size,
            stats: SourceStats::default(),
            last_ng_ts_ns: 0,
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
            // Cut frames from a file: read little beyond what is wanted, so a
            // long record's payload is skipped rather than copied.
            let sparse = self.keep != usize::MAX
                && matches!(self.file, Input::File { .. })
                && matches!(self.format, Format::Pcap { .. });
            let stop = if sparse {
                let stop = (self.start + want).max(self.end + self.sparse_read).min(self.buf.len());
                self.sparse_read = (self.sparse_read * 2).min(READ_CHUNK);
                stop
            } else {
                self.buf.len()
            };
            match self.file.read(&mut self.buf[self.end..stop]) {
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
        if !self.fill(block_len)? {
            return Err(self.truncated("pcapng section header"));
        }
        match parse_ng_block(&self.buf[self.start..self.start + block_len], false) {
            Ok(NgBlock::Section { big_endian }) => {
                self.format = Format::PcapNg { big_endian, interfaces: Vec::new() };
                self.start += block_len;
                Ok(())
            }
            Ok(_) => unreachable!("the block starts with the section header magic"),
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
        } else if let Format::PcapNg { big_endian, .. } = &self.format {
            *big_endian
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
        // What to read now: the whole record, or (frames cut, a file) only
        // what is kept, after checking the file holds the rest.
        let keep = if matches!(self.file, Input::File { .. }) { incl_len.min(self.keep) } else { incl_len };
        if keep < incl_len {
            let record_end = self.offset() + 16 + incl_len as u64;
            if !self.file_reaches(record_end)? {
                let left = self.file_len()?.saturating_sub(self.offset() + 16);
                return Err(self.truncated(format!("record of {incl_len} bytes, {left} left in the file")));
            }
        }
        if !self.fill(16 + keep)? {
            return Err(self.truncated(format!(
                "record of {incl_len} bytes, {} left in the file",
                (self.end - self.start).saturating_sub(16)
            )));
        }
        let data_start = self.start + 16;
        let rest = incl_len - keep;
        let buffered = self.end - (data_start + keep);
        if rest <= buffered {
            self.start = data_start + incl_len;
        } else {
            self.start = self.end;
            self.pending_skip = (rest - buffered) as u64;
        }
        self.stats.frames += 1;
        self.stats.bytes_read = self.offset() + self.pending_skip;
        Ok(Some(Frame {
            ts_ns: ts_sec * 1_000_000_000 + frac_ns,
            link,
            data: &self.buf[data_start..data_start + keep.min(self.keep)],
            orig_len: orig_len.max(incl_len as u32),
        }))
    }

    /// Length of the file now (a capture still being written grows).
    fn file_len(&mut self) -> Result<u64, CaptureError> {
        let Input::File { file, .. } = &self.file else { return Ok(u64::MAX) };
        let len = file.metadata().map_err(|source| CaptureError::Io { path: self.path.clone(), source })?.len();
        self.size = Some(len);
        Ok(len)
    }

    /// Whether the file is at least `offset` bytes long, asking the file
    /// system again only when the size known from before says no.
    fn file_reaches(&mut self, offset: u64) -> Result<bool, CaptureError> {
        if self.size.is_some_and(|s| s >= offset) {
            return Ok(true);
        }
        Ok(self.file_len()? >= offset)
    }

    /// Moves past the part of the last record beyond the (consumed) buffer by
    /// moving the file offset; the buffer starts again there.
    fn skip_pending(&mut self) -> Result<(), CaptureError> {
        let beyond = std::mem::take(&mut self.pending_skip);
        if beyond == 0 {
            return Ok(());
        }
        let Input::File { pos, .. } = &mut self.file else { unreachable!("only records of a file are cut") };
        *pos += beyond;
        let at = *pos;
        self.base = at;
        self.start = 0;
        self.end = 0;
        self.stats.bytes_skipped += beyond;
        self.sparse_read = SPARSE_READ_CHUNK;
        // Checked before the record was handed out; a file cut since then
        // must not end the replay as if it were complete.
        if !self.file_reaches(at)? {
            return Err(self.truncated("the file became shorter while it was read"));
        }
        Ok(())
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
            let is_shb = self.buf[self.start..self.start + 4] == SECTION_HEADER_BLOCK.to_be_bytes();
            let len = self.peek_pcapng_block_len(is_shb)?;
            let Format::PcapNg { big_endian, .. } = self.format else {
                unreachable!("next_pcapng is only called for pcapng files")
            };
            let kind = read_u32(&self.buf[self.start..self.start + 4], big_endian);
            if kind == INTERFACE_DESCRIPTION_BLOCK && len > MAX_PCAPNG_INTERFACE_BYTES {
                return Err(self.corrupt(format!(
                    "pcapng interface description of {len} bytes, more than the \
                     {MAX_PCAPNG_INTERFACE_BYTES}-byte limit (real ones are a few hundred bytes): the file is \
                     corrupt or built to exhaust memory; if it is genuine, convert it with `editcap -F pcap`"
                )));
            }
            if !self.fill(len)? {
                return Err(self.truncated(format!("pcapng block of {len} bytes, {} left", self.end - self.start)));
            }
            let block_start = self.start;
            let block = match parse_ng_block(&self.buf[block_start..block_start + len], big_endian) {
                Ok(block) => block,
                Err(e) => return Err(self.corrupt(format!("pcapng block: {e}"))),
            };
            let Format::PcapNg { big_endian, interfaces } = &mut self.format else {
                unreachable!("next_pcapng is only called for pcapng files")
            };
            let (ts_raw, if_id, data, orig_len) = match block {
                NgBlock::Section { big_endian: section_big_endian } => {
                    *big_endian = section_big_endian;
                    interfaces.clear();
                    self.start += len;
                    continue;
                }
                NgBlock::Interface(iface) => {
                    if interfaces.len() >= MAX_PCAPNG_INTERFACES {
                        return Err(self.corrupt(format!(
                            "pcapng section describes more than {MAX_PCAPNG_INTERFACES} interfaces, the limit: \
                             the file is corrupt or built to exhaust memory; if it is genuine, split it with \
                             `editcap` or convert it with `editcap -F pcap`"
                        )));
                    }
                    interfaces.push(iface);
                    self.start += len;
                    continue;
                }
                NgBlock::Packet { if_id, ts_raw, data, orig_len } => (Some(ts_raw), if_id, data, orig_len),
                NgBlock::Simple { data_start, room, orig_len } => {
                    // Per the pcapng spec the data is min(original length,
                    // interface 0's snap length if not 0), padded to 32 bits.
                    let Some(iface) = interfaces.first().copied() else {
                        return Err(self.corrupt(
                            "simple packet block before any interface description (its packets belong to \
                             interface 0, which must be described first)",
                        ));
                    };
                    let captured = match iface.snaplen {
                        0 => orig_len,
                        snaplen => orig_len.min(snaplen),
                    } as usize;
                    if captured > room {
                        return Err(self.corrupt(format!(
                            "simple packet of {orig_len} bytes (interface 0's snap length {}) needs {captured} \
                             bytes of data, the block holds {room}",
                            iface.snaplen
                        )));
                    }
                    // A simple packet block has no timestamp: it is stamped
                    // with the packet before it (0 stamped the year 1970, and
                    // a realtime replay then waited at each switch back).
                    (None, 0, data_start..data_start + captured, orig_len)
                }
                NgBlock::NoPackets => {
                    self.start += len;
                    continue;
                }
                NgBlock::Unknown { kind } => {
                    self.stats.blocks_skipped += 1;
                    self.stats.first_skipped_block.get_or_insert((kind, self.offset()));
                    self.start += len;
                    continue;
                }
            };
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
            let ts_ns = match ts_raw {
                Some(raw) => (raw as u128 * iface.mul as u128 / iface.div as u128).min(u64::MAX as u128) as u64,
                None => self.last_ng_ts_ns,
            };
            self.last_ng_ts_ns = ts_ns;
            let captured = data.len() as u32;
            let data_len = data.len().min(self.keep);
            self.start += len;
            self.stats.frames += 1;
            self.stats.bytes_read = self.offset();
            let data = &self.buf[block_start + data.start..block_start + data.start + data_len];
            return Ok(Some(Frame { ts_ns, link, data, orig_len: orig_len.max(captured) }));
        }
    }
}

/// Reads one whole pcapng block (its leading length already checked against
/// the slice) in the current section's byte order, keeping nothing of it
/// beyond a few numbers; an error is the detail of a corrupt block.
fn parse_ng_block(block: &[u8], big_endian: bool) -> Result<NgBlock, String> {
    let kind = read_u32(&block[0..4], big_endian);
    let big_endian = if kind == SECTION_HEADER_BLOCK {
        match block[8..12] {
            [0x1a, 0x2b, 0x3c, 0x4d] => true,
            [0x4d, 0x3c, 0x2b, 0x1a] => false,
            _ => return Err("section header has no valid byte-order magic".into()),
        }
    } else {
        big_endian
    };
    let len = block.len();
    let trailer = read_u32(&block[len - 4..], big_endian) as usize;
    if trailer != len {
        return Err(format!("block of {len} bytes ends with a length of {trailer}"));
    }
    let body = &block[8..len - 4];
    match kind {
        SECTION_HEADER_BLOCK => {
            // Magic, major and minor version, section length; then options.
            if body.len() < 16 {
                return Err(format!("section header body of {} bytes, at least 16 needed", body.len()));
            }
            walk_options(&body[16..], big_endian, |_, _| Ok(()))?;
            Ok(NgBlock::Section { big_endian })
        }
        INTERFACE_DESCRIPTION_BLOCK => {
            if body.len() < 8 {
                return Err(format!("interface description body of {} bytes, at least 8 needed", body.len()));
            }
            let dlt = u32::from(read_u16(&body[0..2], big_endian));
            if read_u16(&body[2..4], big_endian) != 0 {
                return Err("interface description: reserved field is not 0".into());
            }
            let snaplen = read_u32(&body[4..8], big_endian);
            let mut tsresol = None;
            walk_options(&body[8..], big_endian, |code, value| {
                if code == 9 {
                    let [r] = value else {
                        return Err(format!("interface description: if_tsresol of {} bytes, not 1", value.len()));
                    };
                    tsresol.get_or_insert(*r);
                }
                Ok(())
            })?;
            let (mul, div) = tsresol.map(tsresol_to_ns).unwrap_or((1000, 1));
            Ok(NgBlock::Interface(Interface { link: LinkType::from_dlt(dlt), dlt, snaplen, mul, div }))
        }
        ENHANCED_PACKET_BLOCK | PACKET_BLOCK => {
            // An obsolete packet block (old writers) is laid out as an
            // enhanced one but for a 16-bit interface id and a 16-bit drop
            // count where the enhanced block has its 32-bit interface id.
            let name = if kind == PACKET_BLOCK { "obsolete packet" } else { "enhanced packet" };
            if body.len() < 20 {
                return Err(format!("{name} body of {} bytes, at least 20 needed", body.len()));
            }
            let if_id = if kind == PACKET_BLOCK {
                usize::from(read_u16(&body[0..2], big_endian))
            } else {
                read_u32(&body[0..4], big_endian) as usize
            };
            let ts_raw =
                (u64::from(read_u32(&body[4..8], big_endian)) << 32) | u64::from(read_u32(&body[8..12], big_endian));
            let captured = read_u32(&body[12..16], big_endian) as usize;
            let orig_len = read_u32(&body[16..20], big_endian);
            // Compared before padding, which could overflow a 32-bit usize.
            let room = body.len() - 20;
            let padded = captured.min(room).div_ceil(4) * 4;
            if captured > room || padded > room {
                return Err(format!("{name} claims {captured} captured bytes, the block holds {}", body.len() - 20));
            }
            walk_options(&body[20 + padded..], big_endian, |_, _| Ok(()))?;
            Ok(NgBlock::Packet { if_id, ts_raw, data: 8 + 20..8 + 20 + captured, orig_len })
        }
        SIMPLE_PACKET_BLOCK => {
            if body.len() < 4 {
                return Err(format!("simple packet body of {} bytes, at least 4 needed", body.len()));
            }
            let orig_len = read_u32(&body[0..4], big_endian);
            Ok(NgBlock::Simple { data_start: 8 + 4, room: body.len() - 4, orig_len })
        }
        kind if NG_BLOCKS_WITHOUT_PACKETS.contains(&kind) => Ok(NgBlock::NoPackets),
        kind => Ok(NgBlock::Unknown { kind }),
    }
}

/// Walks a pcapng option list (code, length, value padded to 4 bytes, up to
/// an end-of-options marker) as pcap-file checked it, keeping none of it:
/// `each` sees every option's code and value.
fn walk_options(
    mut opts: &[u8],
    big_endian: bool,
    mut each: impl FnMut(u16, &[u8]) -> Result<(), String>,
) -> Result<(), String> {
    if opts.is_empty() {
        return Ok(());
    }
    while !opts.is_empty() {
        if opts.len() < 4 {
            return Err(format!("option header needs 4 bytes, {} left", opts.len()));
        }
        let code = read_u16(&opts[0..2], big_endian);
        let len = read_u16(&opts[2..4], big_endian) as usize;
        if code == 0 {
            return Ok(());
        }
        let padded = len.div_ceil(4) * 4;
        if padded > opts.len() - 4 {
            return Err(format!("option {code} claims {len} bytes, {} left in the block", opts.len() - 4));
        }
        each(code, &opts[4..4 + len])?;
        opts = &opts[4 + padded..];
    }
    Err("options do not end with an end-of-options marker".into())
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

fn read_u16(b: &[u8], big_endian: bool) -> u16 {
    let a = [b[0], b[1]];
    if big_endian {
        u16::from_be_bytes(a)
    } else {
        u16::from_le_bytes(a)
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
            Format::Pcap { big_endian, nanos, link } => {
                self.skip_pending()?;
                self.next_pcap(big_endian, nanos, link)
            }
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

    /// Records of 3 bytes, 400 KiB, 200 bytes, 640 KiB, 1 byte, each filled with its index.
    fn mixed_sizes() -> Vec<Vec<u8>> {
        [3usize, 400 * 1024, 200, 640 * 1024, 1].iter().enumerate().map(|(i, n)| vec![i as u8 + 1; *n]).collect()
    }

    fn file_with(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, bytes).unwrap();
        f
    }

    #[test]
    fn frames_cut_from_a_file_skip_long_payloads_and_keep_every_record() {
        let records = mixed_sizes();
        let bytes = pcap_bytes(&records.iter().map(|d| (1, 0, d.as_slice())).collect::<Vec<_>>());
        let f = file_with(&bytes);
        let mut cf = CaptureFile::open(f.path()).unwrap();
        cf.keep_at_most(100);
        let frames = drain(&mut cf).unwrap();
        let want: Vec<_> =
            records.iter().map(|d| (1_000_000_000, d[..d.len().min(100)].to_vec(), d.len() as u32 + 100)).collect();
        assert_eq!(frames, want, "cut data, original lengths, nothing lost or out of order");
        let stats = cf.stats();
        assert_eq!(stats.bytes_read, bytes.len() as u64, "the whole file was walked");
        // The two long records' payloads were skipped, save the first
        // read when the file was opened (before anything was cut) and a page
        // after each record header.
        let long = (400 + 640) * 1024;
        let most = long - READ_CHUNK - 2 * (SPARSE_READ_CHUNK + 1024);
        assert!(stats.bytes_skipped as usize >= most, "skipped {} of {long}", stats.bytes_skipped);
        // A stream cannot skip, but hands out the same frames.
        let mut streamed = open(bytes).unwrap();
        streamed.keep_at_most(100);
        assert_eq!(drain(&mut streamed).unwrap(), want);
        assert_eq!(streamed.stats().bytes_skipped, 0);
    }

    #[test]
    fn a_cut_record_running_past_the_end_of_a_file_is_truncated_not_handed_out() {
        let records = mixed_sizes();
        let mut bytes = pcap_bytes(&records[..4].iter().map(|d| (1, 0, d.as_slice())).collect::<Vec<_>>());
        let last_record = bytes.len() - 16 - 640 * 1024;
        bytes.truncate(bytes.len() - 10);
        let f = file_with(&bytes);
        let mut cf = CaptureFile::open(f.path()).unwrap();
        cf.keep_at_most(100);
        for _ in 0..3 {
            assert!(cf.next_frame().unwrap().is_some());
        }
        let err = cf.next_frame().unwrap_err();
        match &err {
            CaptureError::Truncated { offset, detail, .. } => {
                assert_eq!(*offset, last_record as u64);
                assert!(detail.contains("record of 655360 bytes, 655350 left"), "{detail}");
            }
            e => panic!("{e}"),
        }
    }

    #[test]
    fn pcapng_frames_are_cut_too() {
        use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
        use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock;
        use pcap_file::pcapng::PcapNgWriter;
        use pcap_file::DataLink;
        let mut w = PcapNgWriter::new(Vec::new()).unwrap();
        let idb = InterfaceDescriptionBlock { linktype: DataLink::ETHERNET, snaplen: 0xffff, options: vec![] };
        w.write_pcapng_block(idb).unwrap();
        let data = vec![9u8; 3000];
        let epb = EnhancedPacketBlock {
            interface_id: 0,
            timestamp: std::time::Duration::from_nanos(1),
            original_len: 3000,
            data: std::borrow::Cow::Borrowed(&data),
            options: vec![],
        };
        w.write_pcapng_block(epb).unwrap();
        let f = file_with(&w.into_inner());
        let mut cf = CaptureFile::open(f.path()).unwrap();
        cf.keep_at_most(64);
        assert_eq!(drain(&mut cf).unwrap(), vec![(1000, vec![9u8; 64], 3000)]);
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

    /// One little-endian pcapng block of `kind` around `body` (padded to 4 bytes).
    fn ng_block(kind: u32, body: &[u8]) -> Vec<u8> {
        let padded = body.len().div_ceil(4) * 4;
        let len = (12 + padded) as u32;
        let mut v = Vec::with_capacity(len as usize);
        v.extend(kind.to_le_bytes());
        v.extend(len.to_le_bytes());
        v.extend(body);
        v.resize(8 + padded, 0);
        v.extend(len.to_le_bytes());
        v
    }

    fn ng_section() -> Vec<u8> {
        let mut body = vec![0x4d, 0x3c, 0x2b, 0x1a, 1, 0, 0, 0];
        body.extend((-1i64).to_le_bytes());
        ng_block(0x0a0d_0d0a, &body)
    }

    /// An Ethernet interface description carrying `options` (already encoded, end marker included).
    fn ng_interface(options: &[u8]) -> Vec<u8> {
        let mut body = vec![1, 0, 0, 0, 0xff, 0xff, 0, 0];
        body.extend(options);
        ng_block(1, &body)
    }

    fn ng_packet(if_id: u32, ts: u64, data: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend(if_id.to_le_bytes());
        body.extend(((ts >> 32) as u32).to_le_bytes());
        body.extend((ts as u32).to_le_bytes());
        body.extend((data.len() as u32).to_le_bytes());
        body.extend((data.len() as u32).to_le_bytes());
        body.extend(data);
        body.resize(body.len().div_ceil(4) * 4, 0);
        ng_block(6, &body)
    }

    /// The red-team file: interface descriptions stuffed with empty 4-byte
    /// comment options (code 1, length 0). pcap-file's parser kept every one,
    /// as a ~40-byte list entry, until the next section header: ~10x the
    /// file in memory (a 63 MiB file took RSS from 69 MB to 734 MB).
    #[test]
    fn pcapng_interface_descriptions_stuffed_with_options_are_refused_not_hoarded() {
        let mut options = [1u8, 0, 0, 0].repeat(1024 * 1024 / 4);
        options.extend([0, 0, 0, 0]);
        let mut bytes = ng_section();
        let first_idb = bytes.len() as u64;
        for _ in 0..32 {
            bytes.extend(ng_interface(&options));
        }
        bytes.extend(ng_packet(0, 1, b"abc"));
        let mut cf = open(bytes).unwrap();
        let err = cf.next_frame().map(|f| f.map(|f| f.data.to_vec())).unwrap_err();
        match &err {
            CaptureError::Corrupt { offset, detail, .. } => {
                assert_eq!(*offset, first_idb, "the first oversized description is named");
                assert!(detail.contains("interface description") && detail.contains("65536"), "{detail}");
            }
            e => panic!("{e}"),
        }
    }

    #[test]
    fn a_section_keeps_a_small_record_for_at_most_the_interface_limit() {
        // Each description with a name and some padding options: the reader keeps
        // a few numbers per interface, not the block.
        let mut options = vec![2, 0, 4, 0, b'e', b't', b'h', b'0'];
        options.extend([1u8, 0, 0, 0].repeat(10));
        options.extend([0, 0, 0, 0]);
        let idb = ng_interface(&options);
        let mut bytes = ng_section();
        for _ in 0..MAX_PCAPNG_INTERFACES {
            bytes.extend(&idb);
        }
        bytes.extend(ng_packet(MAX_PCAPNG_INTERFACES as u32 - 1, 7, b"last"));
        let at_limit = bytes.clone();
        let mut cf = open(at_limit).unwrap();
        assert_eq!(drain(&mut cf).unwrap(), vec![(7000, b"last".to_vec(), 4)]);
        let Format::PcapNg { interfaces, .. } = &cf.format else { panic!("read as pcapng") };
        assert_eq!(interfaces.len(), MAX_PCAPNG_INTERFACES);
        assert!(std::mem::size_of::<Interface>() <= 32, "a few numbers per interface");

        // One more in the same section is refused at that block...
        let over = bytes.len() - ng_packet(0, 7, b"last").len();
        bytes.truncate(over);
        bytes.extend(&idb);
        bytes.extend(ng_packet(0, 7, b"last"));
        let err = drain(&mut open(bytes).unwrap()).unwrap_err();
        match &err {
            CaptureError::Corrupt { offset, detail, .. } => {
                assert_eq!(*offset, over as u64);
                assert!(detail.contains("more than 4096 interfaces"), "{detail}");
            }
            e => panic!("{e}"),
        }

        // ...but a new section header starts the count again.
        let mut sections = ng_section();
        for _ in 0..3 {
            sections.extend(ng_section());
            for _ in 0..MAX_PCAPNG_INTERFACES / 2 + 1 {
                sections.extend(&idb);
            }
            sections.extend(ng_packet(1, 1, b"x"));
        }
        assert_eq!(drain(&mut open(sections).unwrap()).unwrap().len(), 3);
    }

    #[test]
    fn an_interface_description_up_to_the_size_limit_is_read() {
        let mut options = [1u8, 0, 0, 0].repeat((MAX_PCAPNG_INTERFACE_BYTES - 20 - 4) / 4);
        options.extend([9, 0, 1, 0, 9, 0, 0, 0, 0, 0, 0, 0]); // if_tsresol: nanoseconds
        options.truncate(MAX_PCAPNG_INTERFACE_BYTES - 20);
        options[MAX_PCAPNG_INTERFACE_BYTES - 20 - 12..].copy_from_slice(&[9, 0, 1, 0, 9, 0, 0, 0, 0, 0, 0, 0]);
        let idb = ng_interface(&options);
        assert_eq!(idb.len(), MAX_PCAPNG_INTERFACE_BYTES);
        let mut bytes = ng_section();
        bytes.extend(idb);
        bytes.extend(ng_packet(0, 5, b"ok"));
        assert_eq!(drain(&mut open(bytes).unwrap()).unwrap(), vec![(5, b"ok".to_vec(), 2)]);
    }

    #[test]
    fn malformed_pcapng_blocks_are_corruption_at_their_offset() {
        let good = [ng_section(), ng_interface(&[]), ng_packet(0, 1, b"abcd")].concat();
        assert_eq!(drain(&mut open(good.clone()).unwrap()).unwrap().len(), 1);
        let packet_at = good.len() - ng_packet(0, 1, b"abcd").len();
        let idb_at = ng_section().len();
        let cases: [(usize, &[u8], usize, &str); 5] = [
            // Trailing length differs from the leading one.
            (good.len() - 4, &[0, 1, 0, 0], packet_at, "ends with a length"),
            // Captured length beyond the block.
            (packet_at + 20, &[0, 1, 0, 0], packet_at, "captured bytes"),
            // Reserved field of the interface description.
            (idb_at + 10, &[1, 0], idb_at, "reserved"),
            // Packet on an interface never described.
            (packet_at + 8, &[3, 0, 0, 0], packet_at, "interface 3"),
            // Byte-order magic of the section header.
            (8, &[0, 0, 0, 0], 0, "byte-order magic"),
        ];
        for (at, patch, offset, want) in cases {
            let mut bytes = good.clone();
            bytes[at..at + patch.len()].copy_from_slice(patch);
            let err = open(bytes).and_then(|mut cf| drain(&mut cf)).unwrap_err();
            match &err {
                CaptureError::Corrupt { offset: o, detail, .. } => {
                    assert_eq!((*o, detail.contains(want)), (offset as u64, true), "{want}: {err}");
                }
                e => panic!("{want}: {e}"),
            }
        }
        // An option running past the end of its block.
        let bytes = [ng_section(), ng_interface(&[9, 0, 200, 0, 6, 0, 0, 0]), ng_packet(0, 1, b"a")].concat();
        let err = drain(&mut open(bytes).unwrap()).unwrap_err();
        assert!(matches!(&err, CaptureError::Corrupt { offset, .. } if *offset == idb_at as u64), "{err}");
    }

    /// A simple packet block (no interface id, no timestamp, no captured
    /// length) around `data`, claiming `orig_len` bytes on the wire.
    fn ng_simple(orig_len: u32, data: &[u8]) -> Vec<u8> {
        let mut body = orig_len.to_le_bytes().to_vec();
        body.extend(data);
        ng_block(3, &body)
    }

    /// An Ethernet interface description with snap length `snaplen` and no options.
    fn ng_interface_snapping(snaplen: u32) -> Vec<u8> {
        let mut body = vec![1, 0, 0, 0];
        body.extend(snaplen.to_le_bytes());
        ng_block(1, &body)
    }

    /// The error of reading `bytes` to the end, which must be corruption: (offset, detail).
    fn corruption(bytes: Vec<u8>) -> (u64, String) {
        match open(bytes).and_then(|mut cf| drain(&mut cf)) {
            Err(CaptureError::Corrupt { offset, detail, .. }) => (offset, detail),
            other => panic!("expected corruption, got {other:?}"),
        }
    }

    #[test]
    fn pcapng_simple_packets_are_cut_at_the_snap_length_not_the_padding() {
        // Interface 0 snaps at 64 bytes: a 5-byte packet is 5 bytes (3 of
        // padding follow it), a 1500-byte one is its first 64.
        let bytes = [
            ng_section(),
            ng_interface_snapping(64),
            ng_simple(5, b"hello"),
            ng_simple(1500, &[7; 64]),
            ng_simple(4, b"four"),
        ]
        .concat();
        let mut cf = open(bytes).unwrap();
        let want = vec![(0, b"hello".to_vec(), 5), (0, vec![7; 64], 1500), (0, b"four".to_vec(), 4)];
        assert_eq!(drain(&mut cf).unwrap(), want);
        assert_eq!(cf.stats().frames, 3);
        // A snap length of 0 is no limit; a later interface's does not count.
        let bytes = [ng_section(), ng_interface_snapping(0), ng_interface_snapping(2), ng_simple(3, b"abc")].concat();
        assert_eq!(drain(&mut open(bytes).unwrap()).unwrap(), vec![(0, b"abc".to_vec(), 3)]);
    }

    #[test]
    fn a_simple_packet_takes_the_time_of_the_packet_before_it() {
        // Stamped 0 (1970), a simple packet between timed ones made the
        // replay's span decades long and a realtime replay wait at each
        // switch back; it has no time of its own, so it takes its neighbour's.
        let bytes = [
            ng_section(),
            ng_interface_snapping(0),
            ng_packet(0, 2_000_000, b"one"),
            ng_simple(3, b"two"),
            ng_packet(0, 2_000_001, b"three"),
        ]
        .concat();
        let stamps: Vec<u64> = drain(&mut open(bytes).unwrap()).unwrap().into_iter().map(|f| f.0).collect();
        assert_eq!(stamps, vec![2_000_000_000, 2_000_000_000, 2_000_001_000]);
    }

    #[test]
    fn a_bad_pcapng_simple_packet_is_corruption_at_its_offset() {
        // Before any interface description: whose snap length, whose link type?
        let spb_at = ng_section().len() as u64;
        let (offset, detail) = corruption([ng_section(), ng_simple(3, b"abc")].concat());
        assert_eq!(offset, spb_at);
        assert!(detail.contains("simple packet block before any interface description"), "{detail}");
        // More data than the block holds (no snap length: all 100 bytes were captured).
        let spb_at = spb_at + ng_interface_snapping(0).len() as u64;
        let (offset, detail) = corruption([ng_section(), ng_interface_snapping(0), ng_simple(100, b"abcd")].concat());
        assert_eq!(offset, spb_at);
        assert!(detail.contains("needs 100 bytes of data, the block holds 4"), "{detail}");
    }

    /// An obsolete packet block (type 2): 16-bit interface id, 16-bit drop
    /// count, then as an enhanced packet block; with a `pack_flags` option.
    fn ng_obsolete(if_id: u16, drops: u16, ts: u64, data: &[u8], orig_len: u32) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend(if_id.to_le_bytes());
        body.extend(drops.to_le_bytes());
        body.extend(((ts >> 32) as u32).to_le_bytes());
        body.extend((ts as u32).to_le_bytes());
        body.extend((data.len() as u32).to_le_bytes());
        body.extend(orig_len.to_le_bytes());
        body.extend(data);
        body.resize(body.len().div_ceil(4) * 4, 0);
        body.extend([2, 0, 4, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
        ng_block(2, &body)
    }

    #[test]
    fn pcapng_obsolete_packet_blocks_are_read_like_enhanced_ones() {
        let nanos = [9, 0, 1, 0, 9, 0, 0, 0, 0, 0, 0, 0];
        let bytes = [
            ng_section(),
            ng_interface(&[]),
            ng_interface(&nanos),
            ng_obsolete(0, 3, 1_500_000, b"old", 60),
            ng_packet(0, 2_000_000, b"new"),
            ng_obsolete(1, 7, 2_000_000_001, b"second interface", 100),
        ]
        .concat();
        let mut cf = open(bytes).unwrap();
        let want = vec![
            (1_500_000_000, b"old".to_vec(), 60),
            (2_000_000_000, b"new".to_vec(), 3),
            (2_000_000_001, b"second interface".to_vec(), 100),
        ];
        assert_eq!(drain(&mut cf).unwrap(), want);
        assert_eq!((cf.stats().frames, cf.stats().blocks_skipped), (3, 0));

        // Bad ones are corruption at their offset, as enhanced ones are.
        let opb_at = (ng_section().len() + ng_interface(&[]).len()) as u64;
        let good = [ng_section(), ng_interface(&[]), ng_obsolete(0, 0, 1, b"abcd", 4)].concat();
        let mut beyond = good.clone();
        beyond[opb_at as usize + 20] = 200; // captured length
        let (offset, detail) = corruption(beyond);
        assert_eq!(offset, opb_at);
        assert!(detail.contains("obsolete packet claims 200 captured bytes"), "{detail}");
        let mut elsewhere = good;
        elsewhere[opb_at as usize + 8] = 5; // interface id
        let (offset, detail) = corruption(elsewhere);
        assert_eq!(offset, opb_at);
        assert!(detail.contains("interface 5"), "{detail}");
    }

    #[test]
    fn unknown_pcapng_blocks_are_skipped_but_counted() {
        let known = [
            ng_block(4, &[0, 0, 0, 0]),                            // name resolution: end of records
            ng_block(5, &[0; 12]),                                 // interface statistics
            ng_block(0x0bad, &[0x8c, 0x1f, 0, 0, 1, 2, 3, 4]),     // custom
            ng_block(0x0a, &[0x4b, 0x53, 0x4c, 0x54, 0, 0, 0, 0]), // decryption secrets
        ]
        .concat();
        let head = [ng_section(), ng_interface(&[]), known, ng_packet(0, 1, b"a")].concat();
        let unknown_at = head.len() as u64;
        let bytes = [
            head,
            ng_block(0x1234, b"what is this?"),
            ng_packet(0, 2, b"b"),
            ng_block(0x8000_0001, &[0; 8]), // local use
            ng_packet(0, 3, b"c"),
        ]
        .concat();
        let mut cf = open(bytes).unwrap();
        assert_eq!(drain(&mut cf).unwrap().len(), 3, "the packets around them are read");
        let stats = cf.stats();
        assert_eq!(stats.blocks_skipped, 2, "only the two of unknown types");
        assert_eq!(stats.first_skipped_block, Some((0x1234, unknown_at)));
        // A classic pcap has no blocks.
        let mut cf = open(pcap_bytes(&[(1, 0, b"x")])).unwrap();
        drain(&mut cf).unwrap();
        assert_eq!((cf.stats().blocks_skipped, cf.stats().first_skipped_block), (0, None));
    }

    #[test]
    fn big_endian_pcapng_with_options_reads_like_little_endian() {
        use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
        use pcap_file::pcapng::blocks::interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption};
        use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};
        use pcap_file::pcapng::PcapNgWriter;
        use pcap_file::{DataLink, Endianness};
        let mut read = Vec::new();
        for endianness in [Endianness::Little, Endianness::Big] {
            let section = SectionHeaderBlock {
                endianness,
                options: vec![SectionHeaderOption::UserApplication("test".into())],
                ..Default::default()
            };
            let mut w = PcapNgWriter::with_section_header(Vec::new(), section).unwrap();
            for tsresol in [6u8, 9, 0x80 | 10] {
                let idb = InterfaceDescriptionBlock {
                    linktype: DataLink::ETHERNET,
                    snaplen: 0xffff,
                    options: vec![
                        InterfaceDescriptionOption::IfName("eth0".into()),
                        InterfaceDescriptionOption::IfTsResol(tsresol),
                        InterfaceDescriptionOption::Comment("more".into()),
                    ],
                };
                w.write_pcapng_block(idb).unwrap();
            }
            for (if_id, data) in [(0u32, &b"one"[..]), (1, b"two!"), (2, b"three")] {
                let epb = EnhancedPacketBlock {
                    interface_id: if_id,
                    timestamp: std::time::Duration::from_nanos(3 << 33 | 2048),
                    original_len: 100,
                    data: std::borrow::Cow::Borrowed(data),
                    options: vec![EnhancedPacketOption::Comment("hello".into()), EnhancedPacketOption::Flags(1)],
                };
                w.write_pcapng_block(epb).unwrap();
            }
            read.push(drain(&mut open(w.into_inner()).unwrap()).unwrap());
        }
        let raw = 3u64 << 33 | 2048;
        let want = vec![
            (raw * 1000, b"one".to_vec(), 100),
            (raw, b"two!".to_vec(), 100),
            ((u128::from(raw) * 1_000_000_000 / 1024) as u64, b"three".to_vec(), 100),
        ];
        assert_eq!(read[0], want);
        assert_eq!(read[1], want);
    }

    #[test]
    fn tsresol_conversion() {
        assert_eq!(tsresol_to_ns(6), (1000, 1));
        assert_eq!(tsresol_to_ns(9), (1, 1));
        assert_eq!(tsresol_to_ns(12), (1, 1000));
        assert_eq!(tsresol_to_ns(0x80 | 10), (1_000_000_000, 1024));
    }
}
