//! Live capture: an AF_PACKET socket with a TPACKET_V3 memory-mapped ring.
//!
//! The kernel fills blocks of packets and hands each block over by setting
//! its status to `TP_STATUS_USER`; we read every packet in place and give the
//! block back (`TP_STATUS_KERNEL`) when we move on. A classic BPF socket
//! filter ([`snap_filter`]) cuts each packet after its headers so payloads
//! are not copied: the configured snap length, except for an IPv6 packet
//! whose extension headers reach past it, which is kept up to its transport
//! header. Kernel drop counters come from `PACKET_STATISTICS`.
//!
//! This is one of the few places with `unsafe`: socket options, `mmap` and
//! reads of the shared ring. Every block is bounds-checked before use.

use std::ffi::CString;
use std::io;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{CaptureError, Frame, LinkType, PacketSource, SourceStats};

const SOL_PACKET: libc::c_int = 263;
const PACKET_ADD_MEMBERSHIP: libc::c_int = 1;
const PACKET_RX_RING: libc::c_int = 5;
const PACKET_STATISTICS: libc::c_int = 6;
const PACKET_VERSION: libc::c_int = 10;
const PACKET_MR_PROMISC: libc::c_ushort = 1;
const TPACKET_V3: libc::c_int = 2;
const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1;
const ETH_P_ALL: u16 = 0x0003;
const SO_ATTACH_FILTER: libc::c_int = 26;

#[repr(C)]
struct TpacketReq3 {
    tp_block_size: libc::c_uint,
    tp_block_nr: libc::c_uint,
    tp_frame_size: libc::c_uint,
    tp_frame_nr: libc::c_uint,
    tp_retire_blk_tov: libc::c_uint,
    tp_sizeof_priv: libc::c_uint,
    tp_feature_req_word: libc::c_uint,
}

#[repr(C)]
#[derive(Default)]
struct TpacketStatsV3 {
    tp_packets: libc::c_uint,
    tp_drops: libc::c_uint,
    tp_freeze_q_cnt: libc::c_uint,
}

#[repr(C)]
struct PacketMreq {
    mr_ifindex: libc::c_int,
    mr_type: libc::c_ushort,
    mr_alen: libc::c_ushort,
    mr_address: [libc::c_uchar; 8],
}

/// One classic BPF instruction (`struct sock_filter`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockFilter {
    /// Instruction class, size, mode or operation, source.
    pub code: u16,
    /// Instructions to skip when a conditional jump is taken.
    pub jt: u8,
    /// Instructions to skip when it is not.
    pub jf: u8,
    /// The constant operand (an offset, a value, a jump length).
    pub k: u32,
}

#[repr(C)]
struct SockFprog {
    len: libc::c_ushort,
    filter: *const SockFilter,
}

// Offsets inside a tpacket_block_desc (version u32, offset_to_priv u32, then tpacket_hdr_v1).
const BLK_STATUS: usize = 8;
const BLK_NUM_PKTS: usize = 12;
const BLK_FIRST_PKT: usize = 16;
const BLK_LEN: usize = 20;
// Offsets inside a tpacket3_hdr.
const PKT_NEXT: usize = 0;
const PKT_SEC: usize = 4;
const PKT_NSEC: usize = 8;
const PKT_SNAPLEN: usize = 12;
const PKT_LEN: usize = 16;
const PKT_MAC: usize = 24;

/// Where a packet sits in the ring.
#[derive(Debug, Clone, Copy)]
struct Desc {
    start: usize,
    len: usize,
    ts_ns: u64,
    wire_len: u32,
}

/// How long the kernel may hold a partly filled ring block (ms): the floor
/// of capture latency, and what one block holds at ordinary rates.
pub const BLOCK_TIMEOUT_MS: u32 = 10;

/// Settings for a live capture.
#[derive(Debug, Clone)]
pub struct AfPacketConfig {
    /// Interface name, e.g. `eth0`.
    pub interface: String,
    /// Bytes kept per packet (≥ 128 keeps every header we parse, except
    /// behind IPv6 extension headers: [`snap_filter`] keeps those further).
    pub snap_len: u32,
    /// Receive frames not addressed to this host.
    pub promiscuous: bool,
    /// Bytes per ring block (a power of two, multiple of the page size).
    pub block_size: u32,
    /// Blocks in the ring.
    pub block_count: u32,
    /// How long the kernel may hold a partly filled block, in milliseconds.
    pub block_timeout_ms: u32,
}

impl AfPacketConfig {
    /// Defaults that suit a gateway: the ring of `CaptureConfig::default()`
    /// (8 MiB in 128 KiB blocks), 10 ms latency.
    pub fn new(interface: &str, snap_len: u32, promiscuous: bool) -> AfPacketConfig {
        let ring = crate::config::CaptureConfig::default();
        AfPacketConfig {
            interface: interface.to_string(),
            snap_len,
            promiscuous,
            block_size: ring.ring_block_kib * 1024,
            block_count: ring.ring_blocks,
            block_timeout_ms: BLOCK_TIMEOUT_MS,
        }
    }

    /// The ring `[capture]` asks for (`ring_blocks` × `ring_block_kib`).
    pub fn from_config(cfg: &crate::config::CaptureConfig) -> AfPacketConfig {
        AfPacketConfig {
            block_size: cfg.ring_block_kib.saturating_mul(1024),
            block_count: cfg.ring_blocks,
            ..AfPacketConfig::new(&cfg.interface, cfg.snap_len, cfg.promiscuous)
        }
    }
}

/// The capture socket's kernel counters since it opened (what
/// `AfPacketSource::kernel_stats` returns): every frame the kernel handed the
/// ring or dropped for want of room, and the drops among them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelCounters {
    /// Frames the kernel saw for this socket, dropped ones included.
    pub packets: u64,
    /// Frames it dropped because the ring was full.
    pub drops: u64,
}

/// How far behind the kernel user space is: blocks full and waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingBacklog {
    /// Blocks handed to user space and not yet read, beyond the one being read.
    pub waiting: u32,
    /// Blocks in the ring.
    pub blocks: u32,
}

/// A live AF_PACKET capture with a TPACKET_V3 ring.
pub struct AfPacketSource {
    fd: libc::c_int,
    ring: *mut u8,
    ring_len: usize,
    block_size: usize,
    block_count: usize,
    block: usize,
    /// Packets left in the current block, and the offset of the next one.
    current: Option<(u32, usize)>,
    stats: SourceStats,
    kernel_packets: u64,
    stop: Arc<AtomicBool>,
    interface: String,
}

// SAFETY: the ring pointer is owned exclusively by this value (mapped in
// `open`, unmapped in `drop`); moving it to another thread is sound.
unsafe impl Send for AfPacketSource {}

fn os_err(interface: &str, what: &str) -> CaptureError {
    let e = io::Error::last_os_error();
    let hint = match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            ": live capture needs root or CAP_NET_RAW (run as root, or `setcap cap_net_raw,cap_net_admin+ep gatewarden`)"
        }
        Some(libc::ENODEV) => ": no such interface (check `ip link`)",
        _ => "",
    };
    CaptureError::Io {
        path: format!("interface {interface}").into(),
        source: io::Error::new(e.kind(), format!("{what}: {e}{hint}")),
    }
}

fn setsockopt<T>(fd: libc::c_int, level: libc::c_int, name: libc::c_int, value: &T) -> libc::c_int {
    // SAFETY: `value` is a valid, initialised T for the duration of the call and
    // the length passed is exactly its size.
    unsafe {
        libc::setsockopt(fd, level, name, (value as *const T).cast(), std::mem::size_of::<T>() as libc::socklen_t)
    }
}

/// Whether an interface of this name exists in this process's network
/// namespace (the router waits for a VLAN that networking creates later).
pub fn interface_exists(name: &str) -> bool {
    let Ok(cname) = CString::new(name) else { return false };
    // SAFETY: cname is a valid NUL-terminated string; if_nametoindex only reads it.
    !name.is_empty() && unsafe { libc::if_nametoindex(cname.as_ptr()) } != 0
}

impl AfPacketSource {
    /// Opens the interface and maps the ring.
    pub fn open(cfg: &AfPacketConfig) -> Result<AfPacketSource, CaptureError> {
        let name = &cfg.interface;
        let cname = CString::new(name.as_str()).map_err(|_| CaptureError::Io {
            path: format!("interface {name}").into(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "interface name contains a NUL byte"),
        })?;
        // SAFETY: cname is a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if ifindex == 0 {
            return Err(os_err(name, "looking up the interface"));
        }
        // SAFETY: plain socket(2) call; the result is checked.
        let fd =
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, ETH_P_ALL.to_be() as i32) };
        if fd < 0 {
            return Err(os_err(name, "opening an AF_PACKET socket"));
        }
        let mut src = AfPacketSource {
            fd,
            ring: std::ptr::null_mut(),
            ring_len: 0,
            block_size: cfg.block_size as usize,
            block_count: cfg.block_count as usize,
            block: 0,
            current: None,
            stats: SourceStats::default(),
            kernel_packets: 0,
            stop: Arc::new(AtomicBool::new(false)),
            interface: name.clone(),
        };
        if setsockopt(fd, SOL_PACKET, PACKET_VERSION, &TPACKET_V3) < 0 {
            return Err(os_err(name, "selecting TPACKET_V3"));
        }
        let filter = snap_filter::program(cfg.snap_len.max(128));
        // The kernel copies the program during the call; `filter` outlives it.
        let prog = SockFprog { len: filter.len() as libc::c_ushort, filter: filter.as_ptr() };
        if setsockopt(fd, libc::SOL_SOCKET, SO_ATTACH_FILTER, &prog) < 0 {
            return Err(os_err(name, "attaching the snap-length filter"));
        }
        let req = TpacketReq3 {
            tp_block_size: cfg.block_size,
            tp_block_nr: cfg.block_count,
            tp_frame_size: 2048,
            tp_frame_nr: cfg.block_size / 2048 * cfg.block_count,
            tp_retire_blk_tov: cfg.block_timeout_ms,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        if setsockopt(fd, SOL_PACKET, PACKET_RX_RING, &req) < 0 {
            return Err(os_err(name, "creating the receive ring"));
        }
        let len = cfg.block_size as usize * cfg.block_count as usize;
        // SAFETY: mapping the ring the kernel just created for this socket; the
        // result is checked against MAP_FAILED and the length is recorded for munmap.
        let ring = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_LOCKED,
                fd,
                0,
            )
        };
        let ring = if ring == libc::MAP_FAILED {
            // MAP_LOCKED can fail under a low RLIMIT_MEMLOCK; retry without it.
            // SAFETY: as above.
            let r = unsafe {
                libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0)
            };
            if r == libc::MAP_FAILED {
                return Err(os_err(name, "mapping the receive ring"));
            }
            r
        } else {
            ring
        };
        src.ring = ring.cast();
        src.ring_len = len;
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid starting value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ALL.to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: sll is a valid sockaddr_ll and the length matches.
        let rc = unsafe {
            libc::bind(
                fd,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(os_err(name, "binding to the interface"));
        }
        if cfg.promiscuous {
            let mreq =
                PacketMreq { mr_ifindex: ifindex as i32, mr_type: PACKET_MR_PROMISC, mr_alen: 0, mr_address: [0; 8] };
            if setsockopt(fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mreq) < 0 {
                return Err(os_err(name, "enabling promiscuous mode"));
            }
        }
        Ok(src)
    }

    /// Sends one whole Ethernet frame on the captured interface (the
    /// router's ARP and neighbour-solicitation probes, whose answers come
    /// back through this ring).
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: `fd` is this open socket, bound to the interface; `frame` is
        // a valid slice for the call and its exact length is passed.
        let rc = unsafe { libc::send(self.fd, frame.as_ptr().cast(), frame.len(), 0) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        if rc as usize != frame.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, format!("sent {rc} of {} bytes", frame.len())));
        }
        Ok(())
    }

    /// A flag that, once set, makes `next_frame` return `Ok(None)` within 100 ms.
    pub fn stop_handle(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// The interface name.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    fn read_u32(&self, off: usize) -> u32 {
        assert!(off + 4 <= self.ring_len, "ring read out of bounds");
        // SAFETY: `off + 4 <= ring_len` was checked, the ring is mapped for
        // `ring_len` bytes, and the kernel may write concurrently, hence volatile.
        unsafe { std::ptr::read_volatile(self.ring.add(off).cast::<u32>()) }
    }

    fn read_u16(&self, off: usize) -> u16 {
        assert!(off + 2 <= self.ring_len, "ring read out of bounds");
        // SAFETY: bounds checked as above; volatile because the ring is shared.
        unsafe { std::ptr::read_volatile(self.ring.add(off).cast::<u16>()) }
    }

    fn release_block(&mut self) {
        let off = self.block * self.block_size + BLK_STATUS;
        fence(Ordering::Release);
        // SAFETY: `off` is inside the ring (block < block_count); writing the status
        // word hands the block back to the kernel, which is the protocol.
        unsafe { std::ptr::write_volatile(self.ring.add(off).cast::<u32>(), TP_STATUS_KERNEL) };
        self.block = (self.block + 1) % self.block_count;
        self.current = None;
    }

    /// The next frame, or `Ok(None)` if none arrived within `timeout`.
    pub fn poll_frame(&mut self, timeout: Duration) -> Result<Option<Frame<'_>>, CaptureError> {
        Ok(self.next_desc(timeout)?.map(|d| self.frame_at(d)))
    }

    fn frame_at(&self, d: Desc) -> Frame<'_> {
        // SAFETY: `next_desc` checked [start, start + len) lies inside the current
        // block, which stays ours until `release_block`; that needs `&mut self`,
        // so it cannot run while the returned frame borrows `self`.
        let data = unsafe { std::slice::from_raw_parts(self.ring.add(d.start), d.len) };
        Frame { ts_ns: d.ts_ns, link: LinkType::Ethernet, data, orig_len: d.wire_len }
    }

    fn next_desc(&mut self, timeout: Duration) -> Result<Option<Desc>, CaptureError> {
        let mut waited = false;
        loop {
            if let Some((left, off)) = self.current {
                if left == 0 {
                    self.release_block();
                    continue;
                }
                let base = self.block * self.block_size;
                let block_end = base + self.block_size;
                let hdr = base + off;
                if hdr + 32 > block_end {
                    // A malformed block: give it back rather than read past it.
                    self.release_block();
                    continue;
                }
                let next = self.read_u32(hdr + PKT_NEXT) as usize;
                let sec = self.read_u32(hdr + PKT_SEC) as u64;
                let nsec = self.read_u32(hdr + PKT_NSEC) as u64;
                let snaplen = self.read_u32(hdr + PKT_SNAPLEN) as usize;
                let wire_len = self.read_u32(hdr + PKT_LEN);
                let mac = self.read_u16(hdr + PKT_MAC) as usize;
                let data_start = hdr + mac;
                self.current = if left > 1 && next > 0 { Some((left - 1, off + next)) } else { Some((0, off)) };
                if data_start + snaplen > block_end {
                    continue;
                }
                self.stats.frames += 1;
                self.stats.bytes_read += wire_len as u64;
                return Ok(Some(Desc { start: data_start, len: snaplen, ts_ns: sec * 1_000_000_000 + nsec, wire_len }));
            }
            let base = self.block * self.block_size;
            let status = self.read_u32(base + BLK_STATUS);
            if status & TP_STATUS_USER != 0 {
                fence(Ordering::Acquire);
                let n = self.read_u32(base + BLK_NUM_PKTS);
                let first = self.read_u32(base + BLK_FIRST_PKT) as usize;
                let blen = self.read_u32(base + BLK_LEN) as usize;
                if n == 0 || first >= self.block_size || blen > self.block_size {
                    self.current = Some((0, 0));
                } else {
                    self.current = Some((n, first));
                }
                continue;
            }
            if waited {
                return Ok(None);
            }
            let mut pfd = libc::pollfd { fd: self.fd, events: libc::POLLIN | libc::POLLERR, revents: 0 };
            // SAFETY: one valid pollfd, count 1.
            let rc = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis().min(i32::MAX as u128) as i32) };
            if rc < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                return Err(os_err(&self.interface, "waiting for packets"));
            }
            waited = true;
        }
    }

    /// Blocks the kernel has filled that we have not started reading: the
    /// ring's backlog, read from the block status words (no syscall). When
    /// every block is waiting the kernel has nowhere to write and drops.
    pub fn backlog(&self) -> RingBacklog {
        let mut waiting = 0u32;
        for i in 0..self.block_count {
            if i == self.block && self.current.is_some() {
                continue;
            }
            if self.read_u32(i * self.block_size + BLK_STATUS) & TP_STATUS_USER != 0 {
                waiting += 1;
            }
        }
        RingBacklog { waiting, blocks: self.block_count as u32 }
    }

    /// Kernel counters since the socket opened.
    pub fn kernel_stats(&mut self) -> KernelCounters {
        let mut st = TpacketStatsV3::default();
        let mut len = std::mem::size_of::<TpacketStatsV3>() as libc::socklen_t;
        // SAFETY: st is a valid buffer of `len` bytes; the kernel writes at most that.
        let rc = unsafe {
            libc::getsockopt(self.fd, SOL_PACKET, PACKET_STATISTICS, (&mut st as *mut TpacketStatsV3).cast(), &mut len)
        };
        if rc == 0 {
            // The kernel resets these on every read; accumulate.
            self.kernel_packets += st.tp_packets as u64;
            self.stats.kernel_drops += st.tp_drops as u64;
        }
        KernelCounters { packets: self.kernel_packets, drops: self.stats.kernel_drops }
    }
}

impl PacketSource for AfPacketSource {
    fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(None);
            }
            if let Some(d) = self.next_desc(Duration::from_millis(100))? {
                return Ok(Some(self.frame_at(d)));
            }
        }
    }

    fn stats(&self) -> SourceStats {
        self.stats
    }
}

impl Drop for AfPacketSource {
    fn drop(&mut self) {
        if !self.ring.is_null() {
            // SAFETY: unmapping exactly the region mapped in `open`.
            unsafe { libc::munmap(self.ring.cast(), self.ring_len) };
        }
        // SAFETY: closing the descriptor this value owns.
        unsafe { libc::close(self.fd) };
    }
}

/// The socket filter that decides how much of each frame the ring keeps.
///
/// A fixed snap length cannot hold every header. Linux accepts up to 2 KiB
/// of Destination Options per header: eight options of up to 257 bytes,
/// and an unknown option whose type says "skip" is passed over (PadN of
/// more than 7 bytes it drops). 80 bytes of such options put a SYN's TCP
/// header at byte 134 of its frame, past the default 128, and a scan hid
/// behind them: the parser saw protocol 60 and no ports. A larger fixed snap
/// only moves the line and copies more of every packet.
///
/// So the filter reads each frame. Anything but IPv6 (IPv6 behind two or
/// more VLAN tags included, as the parser's common path) gets the
/// configured snap, exactly as the one-instruction `ret #snap` did. For
/// IPv6, directly or behind one 802.1Q / 802.1ad tag, it walks the
/// extension chain (hop-by-hop 0, routing 43, destination options 60:
/// `(len + 1) * 8` bytes; fragment 44: 8; authentication 51: `(len + 2) * 4`),
/// unrolled for [`MAX_EXT_HEADERS`] headers since classic BPF only jumps
/// forward, and keeps the larger of the snap and the chain's end plus
/// [`TRANSPORT_ALLOWANCE`], at most [`HEADER_SNAP_CAP`] (or the snap, if
/// larger). A longer chain, or one whose next header starts past the
/// frame's end, gets the cap: all it may keep. The kernel copies at most
/// the frame, whatever the program returns.
///
/// In classic BPF a load past the end of the frame ends the program with 0,
/// which would drop the frame from the capture altogether: a worse hiding
/// place than a short snap. So every load is preceded by a length check,
/// and the program never returns less than the configured snap (the unit
/// tests run it in an interpreter with the kernel's semantics and compare
/// it with the rule written plainly).
pub mod snap_filter {
    use super::SockFilter;

    /// Bytes kept past the end of an IPv6 extension chain: the largest TCP
    /// header (60 bytes) and then some.
    pub const TRANSPORT_ALLOWANCE: u32 = 64;

    /// Extension headers the filter walks; a longer chain is kept up to the cap.
    pub const MAX_EXT_HEADERS: usize = 8;

    /// The most a frame with IPv6 extension headers is kept (when the
    /// configured snap is smaller): the largest jumbo frame. A chain a
    /// Linux host accepts must fit in one frame with its transport header
    /// (RFC 8200 §4.5: it drops a first fragment without them), so on any
    /// link such a chain is kept whole. Only frames whose chain needs it
    /// get it, and the sender pays for every byte of it on the wire.
    pub const HEADER_SNAP_CAP: u32 = 9216;

    // Classic BPF operation codes (linux/bpf_common.h: class | size | mode,
    // or class | operation | source).
    const LD_W_LEN: u16 = 0x80; // A = the frame's length
    const LD_H_ABS: u16 = 0x28; // A = the big-endian u16 at k
    const LD_B_IND: u16 = 0x50; // A = the byte at X + k
    const LD_IMM: u16 = 0x00; // A = k
    const LD_MEM: u16 = 0x60; // A = M[k]
    const LDX_IMM: u16 = 0x01; // X = k
    const LDX_MEM: u16 = 0x61; // X = M[k]
    const ST: u16 = 0x02; // M[k] = A
    const ADD_K: u16 = 0x04; // A += k
    const ADD_X: u16 = 0x0c; // A += X
    const SUB_X: u16 = 0x1c; // A -= X
    const LSH_K: u16 = 0x64; // A <<= k
    const TAX: u16 = 0x07; // X = A
    const TXA: u16 = 0x87; // A = X
    const JA: u16 = 0x05; // jump k forward
    const JEQ_K: u16 = 0x15; // A == k
    const JGT_K: u16 = 0x25; // A > k
    const JGE_K: u16 = 0x35; // A >= k
    const JGT_X: u16 = 0x2d; // A > X
    const RET_K: u16 = 0x06; // keep k bytes
    const RET_A: u16 = 0x16; // keep A bytes

    /// Scratch words: the type of the header at X, and where the next starts.
    const M_TYPE: u32 = 0;
    const M_NEXT: u32 = 1;

    const IPV6: u32 = 0x86dd;
    /// 802.1Q, 802.1ad, and the old QinQ type the parser also reads.
    const VLAN_TAGS: [u32; 3] = [0x8100, 0x88a8, 0x9100];
    /// The IPv6 extension headers etherparse (and so the parser) walks.
    const EXT_HEADERS: [u32; 5] = [0, 43, 44, 51, 60];

    /// The program for a configured snap length (≥ 128 in practice).
    pub fn program(snap: u32) -> Vec<SockFilter> {
        let cap = snap.max(HEADER_SNAP_CAP);
        let mut a = Asm::default();
        // Conditional jumps reach 255 instructions at most, so the early
        // exits have their own `ret #snap` close by.
        let (not_ipv6, tagged, untagged, ipv6) = (a.label(), a.label(), a.label(), a.label());
        let (whole_header, done, keep_a, ret_snap) = (a.label(), a.label(), a.label(), a.label());

        // Ethernet: IPv6 at 14, or at 18 behind one tag; anything else, the snap.
        a.op(LD_W_LEN, 0);
        a.jump(JGE_K, 14, To::Next, To::L(not_ipv6));
        a.op(LD_H_ABS, 12);
        a.jump(JEQ_K, IPV6, To::L(untagged), To::Next);
        for (i, tag) in VLAN_TAGS.into_iter().enumerate() {
            let otherwise = if i + 1 == VLAN_TAGS.len() { To::L(not_ipv6) } else { To::Next };
            a.jump(JEQ_K, tag, To::L(tagged), otherwise);
        }
        a.bind(tagged);
        a.op(LD_W_LEN, 0);
        a.jump(JGE_K, 18, To::Next, To::L(not_ipv6));
        a.op(LD_H_ABS, 16);
        a.jump(JEQ_K, IPV6, To::Next, To::L(not_ipv6));
        a.op(LDX_IMM, 18);
        a.ja(ipv6);
        a.bind(not_ipv6);
        a.op(RET_K, snap);
        a.bind(untagged);
        a.op(LDX_IMM, 14);

        // X: the IPv6 header, X ≤ len. Its next-header field, and X past it.
        a.bind(ipv6);
        a.op(LD_W_LEN, 0);
        a.op(SUB_X, 0);
        a.jump(JGE_K, 40, To::L(whole_header), To::Next);
        a.op(RET_K, snap);
        a.bind(whole_header);
        a.op(LD_B_IND, 6);
        a.op(ST, M_TYPE);
        a.op(TXA, 0);
        a.op(ADD_K, 40);
        a.op(TAX, 0);

        for _ in 0..MAX_EXT_HEADERS {
            // M_TYPE: the header at X. Not an extension header: X is the
            // transport's start.
            let (ext, short, frag, auth, advance) = (a.label(), a.label(), a.label(), a.label(), a.label());
            a.op(LD_MEM, M_TYPE);
            for t in EXT_HEADERS {
                a.jump(JEQ_K, t, To::L(ext), To::Next);
            }
            a.ja(done);
            // Its first two bytes must be in the frame: X < len first (X
            // may have run past the end, and len - X would wrap), then
            // len - X ≥ 2. Otherwise the chain runs past the frame: keep it all.
            a.bind(ext);
            a.op(LD_W_LEN, 0);
            a.jump(JGT_X, 0, To::Next, To::L(short));
            a.op(SUB_X, 0);
            a.jump(JGE_K, 2, To::Next, To::L(short));
            a.op(LD_MEM, M_TYPE);
            a.jump(JEQ_K, 44, To::L(frag), To::Next);
            a.jump(JEQ_K, 51, To::L(auth), To::Next);
            // Hop-by-hop, routing, destination options: (len + 1) * 8.
            a.op(LD_B_IND, 1);
            a.op(ADD_K, 1);
            a.op(LSH_K, 3);
            a.ja(advance);
            a.bind(short);
            a.op(RET_K, cap);
            a.bind(frag);
            a.op(LD_IMM, 8);
            a.ja(advance);
            a.bind(auth);
            a.op(LD_B_IND, 1);
            a.op(ADD_K, 2);
            a.op(LSH_K, 2);
            // A: this header's length. The next header's type, and X past this one.
            a.bind(advance);
            a.op(ADD_X, 0);
            a.op(ST, M_NEXT);
            a.op(LD_B_IND, 0);
            a.op(ST, M_TYPE);
            a.op(LDX_MEM, M_NEXT);
        }
        // Still an extension header after MAX_EXT_HEADERS: keep what we may.
        let longer = a.label();
        a.op(LD_MEM, M_TYPE);
        for (i, t) in EXT_HEADERS.into_iter().enumerate() {
            let otherwise = if i + 1 == EXT_HEADERS.len() { To::L(done) } else { To::Next };
            a.jump(JEQ_K, t, To::L(longer), otherwise);
        }
        a.bind(longer);
        a.op(RET_K, cap);

        // X: where the transport starts. max(snap, X + allowance), at most cap.
        a.bind(done);
        a.op(TXA, 0);
        a.op(ADD_K, TRANSPORT_ALLOWANCE);
        a.jump(JGT_K, snap, To::Next, To::L(ret_snap));
        a.jump(JGT_K, cap, To::Next, To::L(keep_a));
        a.op(RET_K, cap);
        a.bind(keep_a);
        a.op(RET_A, 0);
        a.bind(ret_snap);
        a.op(RET_K, snap);
        a.finish()
    }

    /// A jump target: the next instruction, or a label.
    #[derive(Debug, Clone, Copy)]
    enum To {
        Next,
        L(usize),
    }

    /// A tiny assembler: instructions with labelled forward jumps, resolved
    /// into classic BPF's relative offsets by [`Asm::finish`].
    #[derive(Default)]
    struct Asm {
        code: Vec<(u16, To, To, u32)>,
        labels: Vec<Option<usize>>,
    }

    impl Asm {
        fn label(&mut self) -> usize {
            self.labels.push(None);
            self.labels.len() - 1
        }

        fn bind(&mut self, label: usize) {
            self.labels[label] = Some(self.code.len());
        }

        fn op(&mut self, code: u16, k: u32) {
            self.code.push((code, To::Next, To::Next, k));
        }

        fn jump(&mut self, code: u16, k: u32, jt: To, jf: To) {
            self.code.push((code, jt, jf, k));
        }

        fn ja(&mut self, to: usize) {
            self.code.push((JA, To::L(to), To::Next, 0));
        }

        /// The program. The shape does not depend on the snap, so a jump
        /// that cannot be encoded (backwards, unbound, or a conditional one
        /// past 255) is a bug the unit tests catch, never a runtime case.
        fn finish(self) -> Vec<SockFilter> {
            let offset = |pc: usize, to: To| -> usize {
                match to {
                    To::Next => 0,
                    To::L(l) => {
                        let at = self.labels[l].expect("every label is bound");
                        assert!(at > pc, "classic BPF jumps only forward");
                        at - pc - 1
                    }
                }
            };
            self.code
                .iter()
                .enumerate()
                .map(|(pc, &(code, jt, jf, k))| {
                    if code == JA {
                        return SockFilter { code, jt: 0, jf: 0, k: offset(pc, jt) as u32 };
                    }
                    let short = |to| u8::try_from(offset(pc, to)).expect("a conditional jump of at most 255");
                    SockFilter { code, jt: short(jt), jf: short(jf), k }
                })
                .collect()
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// Runs `prog` on `frame` as the kernel runs a socket filter: 32-bit
        /// unsigned arithmetic, a load past the frame's end ends the program
        /// with 0 (the frame is then not captured at all). Only the
        /// operations the filter uses, numbered as in linux/filter.h
        /// independently of the constants above. Returns what the program
        /// returned and how many instructions it ran.
        fn run(prog: &[SockFilter], frame: &[u8]) -> (u32, usize) {
            let (mut a, mut x, mut m) = (0u32, 0u32, [0u32; 16]);
            let (mut pc, mut steps) = (0usize, 0usize);
            loop {
                let i = prog[pc];
                let k = i.k;
                steps += 1;
                pc += 1;
                match i.code {
                    0x80 => a = frame.len() as u32,
                    0x28 => match frame.get(k as usize..k as usize + 2) {
                        Some(b) => a = u32::from(u16::from_be_bytes([b[0], b[1]])),
                        None => return (0, steps),
                    },
                    0x50 => match frame.get((u64::from(x) + u64::from(k)) as usize) {
                        Some(&b) => a = u32::from(b),
                        None => return (0, steps),
                    },
                    0x00 => a = k,
                    0x60 => a = m[k as usize],
                    0x01 => x = k,
                    0x61 => x = m[k as usize],
                    0x02 => m[k as usize] = a,
                    0x04 => a = a.wrapping_add(k),
                    0x0c => a = a.wrapping_add(x),
                    0x1c => a = a.wrapping_sub(x),
                    0x64 => a = a.checked_shl(k).unwrap_or(0),
                    0x07 => x = a,
                    0x87 => a = x,
                    0x05 => pc += k as usize,
                    0x15 | 0x25 | 0x35 | 0x2d => {
                        let taken = match i.code {
                            0x15 => a == k,
                            0x25 => a > k,
                            0x35 => a >= k,
                            _ => a > x,
                        };
                        pc += usize::from(if taken { i.jt } else { i.jf });
                    }
                    0x06 => return (k, steps),
                    0x16 => return (a, steps),
                    c => panic!("opcode {c:#04x} at {} is not one the filter should use", pc - 1),
                }
            }
        }

        /// What the kernel copies to the ring: the program's answer, at most the frame.
        fn kept(prog: &[SockFilter], frame: &[u8]) -> usize {
            (run(prog, frame).0 as usize).min(frame.len())
        }

        /// The kernel's checks when a classic program is attached
        /// (`bpf_check_classic`, `check_load_and_stores`): at most 4 096
        /// instructions, jumps inside the program, a return last, scratch
        /// words below 16 and written on every path before they are read.
        fn check_like_the_kernel(prog: &[SockFilter]) {
            assert!(!prog.is_empty() && prog.len() <= 4096, "{} instructions", prog.len());
            assert!(prog.last().is_some_and(|i| i.code & 0x07 == 0x06), "the last instruction returns");
            let mut masks = vec![u16::MAX; prog.len()];
            let mut valid = 0u16;
            for (pc, i) in prog.iter().enumerate() {
                valid &= masks[pc];
                match i.code {
                    0x02 => {
                        assert!(i.k < 16);
                        valid |= 1 << i.k;
                    }
                    0x60 | 0x61 => {
                        assert!(i.k < 16);
                        assert!(valid & (1 << i.k) != 0, "M[{}] read at {pc} before it is written", i.k);
                    }
                    _ => {}
                }
                match i.code & 0x07 {
                    0x05 => {
                        let targets = if i.code == 0x05 {
                            vec![i.k as usize]
                        } else {
                            vec![usize::from(i.jt), usize::from(i.jf)]
                        };
                        for off in targets {
                            let to = pc + 1 + off;
                            assert!(to < prog.len(), "jump at {pc} leaves the program");
                            masks[to] &= valid;
                        }
                        valid = u16::MAX;
                    }
                    0x06 => valid = u16::MAX,
                    _ => {}
                }
            }
        }

        fn is_ext(t: u8) -> bool {
            matches!(t, 0 | 43 | 44 | 51 | 60)
        }

        /// The rule, written plainly: what the program must compute.
        fn reference(frame: &[u8], snap: u32) -> u32 {
            let cap = snap.max(HEADER_SNAP_CAP);
            let be16 = |at: usize| frame.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
            let ip = match be16(12) {
                Some(0x86dd) => 14,
                Some(0x8100 | 0x88a8 | 0x9100) if be16(16) == Some(0x86dd) => 18,
                _ => return snap,
            };
            if frame.len() < ip + 40 {
                return snap;
            }
            let (mut next, mut at) = (frame[ip + 6], ip + 40);
            for _ in 0..MAX_EXT_HEADERS {
                if !is_ext(next) {
                    break;
                }
                let Some(h) = frame.get(at..at + 2) else { return cap };
                at += match next {
                    44 => 8,
                    51 => (usize::from(h[1]) + 2) * 4,
                    _ => (usize::from(h[1]) + 1) * 8,
                };
                next = h[0];
            }
            if is_ext(next) {
                return cap;
            }
            (at as u32 + TRANSPORT_ALLOWANCE).clamp(snap, cap)
        }

        fn eth(tags: &[u16], ethertype: u16, payload: &[u8]) -> Vec<u8> {
            let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
            for &t in tags {
                f.extend(t.to_be_bytes());
                f.extend([0, 7]);
            }
            f.extend(ethertype.to_be_bytes());
            f.extend(payload);
            f
        }

        fn syn() -> Vec<u8> {
            let mut t = vec![0x9c, 0x40, 0, 22, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0];
            t.extend([0xab; 40]);
            t
        }

        fn ipv6(next: u8, rest: &[u8]) -> Vec<u8> {
            let mut v = vec![0x60, 0, 0, 0];
            v.extend((rest.len() as u16).to_be_bytes());
            v.extend([next, 64]);
            v.extend([0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10]);
            v.extend([0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20]);
            v.extend(rest);
            v
        }

        fn ipv4_syn() -> Vec<u8> {
            let mut v = vec![0x45, 0, 0, 80, 0, 1, 0x40, 0, 64, 6, 0, 0, 192, 0, 2, 10, 198, 51, 100, 10];
            v.extend(syn());
            v
        }

        /// An options header (hop-by-hop, routing, destination options) of
        /// `len` bytes (a multiple of 8): one unknown skippable option.
        fn options(next: u8, len: usize) -> Vec<u8> {
            let mut h = vec![next, (len / 8 - 1) as u8, 0x1e, (len - 4) as u8];
            h.resize(len, 0);
            h
        }

        /// IPv6 with extension headers `chain` (each its type and bytes), then a SYN.
        fn chained(tags: &[u16], chain: &[(u8, Vec<u8>)]) -> Vec<u8> {
            let first = chain.first().map_or(6, |c| c.0);
            let mut rest: Vec<u8> = chain.iter().flat_map(|c| c.1.clone()).collect();
            rest.extend(syn());
            eth(tags, 0x86dd, &ipv6(first, &rest))
        }

        /// `n` destination options headers of `len` bytes each, then TCP.
        fn dest_opts_chain(n: usize, len: usize) -> Vec<(u8, Vec<u8>)> {
            (0..n).map(|i| (60, options(if i + 1 == n { 6 } else { 60 }, len))).collect()
        }

        const SNAP: u32 = 128;

        #[test]
        fn the_program_passes_the_kernels_checks_for_any_snap() {
            for snap in [128, 129, 1500, HEADER_SNAP_CAP - 1, HEADER_SNAP_CAP, HEADER_SNAP_CAP + 1, 65_535] {
                let prog = program(snap);
                check_like_the_kernel(&prog);
                assert_eq!(prog.len(), 270, "the shape does not depend on the snap");
            }
        }

        #[test]
        fn everything_but_ipv6_keeps_exactly_the_configured_snap() {
            for snap in [128, 1500] {
                let prog = program(snap);
                let mut frames = vec![
                    eth(&[], 0x0800, &ipv4_syn()),
                    eth(&[0x8100], 0x0800, &ipv4_syn()),
                    eth(&[], 0x0806, &[0; 28]),
                    eth(&[], 0x88cc, &[0; 300]),
                    // Two tags: as the parser's common path, one tag only.
                    chained(&[0x88a8, 0x8100], &dest_opts_chain(1, 80)),
                ];
                frames.extend((0..20).map(|n| vec![0x86; n]));
                for f in frames {
                    assert_eq!(run(&prog, &f).0, snap, "{f:02x?}");
                }
            }
        }

        #[test]
        fn plain_ipv6_keeps_the_configured_snap() {
            let prog = program(SNAP);
            assert_eq!(run(&prog, &chained(&[], &[])).0, SNAP);
            assert_eq!(run(&prog, &chained(&[0x8100], &[])).0, SNAP);
            // A short chain whose transport still falls inside the snap.
            assert_eq!(run(&prog, &chained(&[], &dest_opts_chain(1, 8))).0, SNAP);
            assert_eq!(run(&program(1500), &chained(&[], &dest_opts_chain(1, 80))).0, 1500);
        }

        #[test]
        fn a_syn_behind_80_bytes_of_destination_options_is_kept_through_its_tcp_header() {
            let prog = program(SNAP);
            for (tags, ip) in [(&[][..], 14usize), (&[0x8100][..], 18), (&[0x88a8][..], 18), (&[0x9100][..], 18)] {
                let f = chained(tags, &dest_opts_chain(1, 80));
                let tcp = ip + 40 + 80;
                assert_eq!(f[tcp + 2..tcp + 4], [0, 22], "the SYN to port 22 starts at {tcp}");
                assert_eq!(run(&prog, &f).0 as usize, tcp + 64, "tags {tags:x?}");
                assert!(kept(&prog, &f) >= tcp + 20, "the whole TCP header is kept (tags {tags:x?})");
                assert!(tcp + 20 > SNAP as usize, "which the fixed snap cut off");
            }
        }

        #[test]
        fn every_extension_header_is_measured_as_the_kernel_measures_it() {
            let prog = program(SNAP);
            // Hop-by-hop (16), routing (24), an atomic fragment header (8),
            // authentication (payload length 4: (4 + 2) * 4 = 24), destination options (8).
            let mut routing = options(44, 24);
            routing[2..4].copy_from_slice(&[0, 0]); // routing type 0, segments left 0
            let fragment = vec![51, 0, 0, 0, 0, 0, 0, 9];
            let mut auth = vec![60, 4];
            auth.resize(24, 0x11);
            let chain = vec![(0, options(43, 16)), (43, routing), (44, fragment), (51, auth), (60, options(6, 8))];
            let f = chained(&[], &chain);
            assert_eq!(run(&prog, &f).0, 14 + 40 + 16 + 24 + 8 + 24 + 8 + 64);
            assert_eq!(run(&prog, &f).0, reference(&f, SNAP));
        }

        #[test]
        fn eight_headers_are_walked_and_a_ninth_gets_the_cap() {
            let prog = program(SNAP);
            let eight = chained(&[], &dest_opts_chain(8, 16));
            assert_eq!(run(&prog, &eight).0, 14 + 40 + 8 * 16 + 64);
            let nine = chained(&[], &dest_opts_chain(9, 16));
            assert_eq!(run(&prog, &nine).0, HEADER_SNAP_CAP, "past the walk: keep all it may");
            assert_eq!(kept(&prog, &nine), nine.len());
            // Eight of the largest (2 KiB each): past the cap, kept up to it.
            let big = chained(&[], &dest_opts_chain(8, 2048));
            assert_eq!(run(&prog, &big).0, HEADER_SNAP_CAP);
            let four = chained(&[], &dest_opts_chain(4, 2048));
            assert_eq!(run(&prog, &four).0, 14 + 40 + 4 * 2048 + 64);
            // A snap above the cap is never cut below itself.
            assert_eq!(run(&program(65_535), &big).0, 65_535);
        }

        #[test]
        fn a_chain_pointing_past_the_frame_keeps_the_whole_frame() {
            let prog = program(SNAP);
            // A 2 KiB destination options header in a frame of a few hundred bytes.
            let mut f = chained(&[], &dest_opts_chain(1, 80));
            f[14 + 40 + 1] = 255;
            assert_eq!(run(&prog, &f).0, (14 + 40 + 2048 + 64) as u32);
            assert_eq!(kept(&prog, &f), f.len());
            // A next header that would start exactly at, and just past, the end.
            let mut f = chained(&[], &dest_opts_chain(2, 8));
            f.truncate(14 + 40 + 8);
            assert_eq!(run(&prog, &f).0, HEADER_SNAP_CAP);
            f.truncate(14 + 40 + 7);
            assert_eq!(run(&prog, &f).0, HEADER_SNAP_CAP);
            // A chain claiming more than the frame with X far past len: no wrap-around read.
            let mut f = chained(&[], &dest_opts_chain(2, 80));
            f[14 + 40 + 1] = 200;
            f.truncate(300);
            assert_eq!(run(&prog, &f).0, HEADER_SNAP_CAP);
        }

        #[test]
        fn a_cut_frame_is_never_dropped_nor_kept_shorter_than_the_snap() {
            let prog = program(SNAP);
            let frames = [
                eth(&[], 0x0800, &ipv4_syn()),
                chained(&[], &[]),
                chained(&[], &dest_opts_chain(1, 80)),
                chained(&[0x8100], &dest_opts_chain(3, 24)),
                chained(&[], &dest_opts_chain(9, 8)),
            ];
            for f in &frames {
                for cut in 0..=f.len() {
                    let (ret, _) = run(&prog, &f[..cut]);
                    assert!(ret >= SNAP, "cut at {cut} of {f:02x?}: {ret}");
                    assert_eq!(ret, reference(&f[..cut], SNAP), "cut at {cut} of {f:02x?}");
                }
            }
        }

        #[test]
        fn random_frames_get_what_the_plain_rule_gives() {
            // xorshift64*: deterministic, no dependency.
            let mut state = 0x9e37_79b9_7f4a_7c15u64;
            let mut next = move || {
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                state.wrapping_mul(0x2545_f491_4f6c_dd1d)
            };
            let types = [0u8, 43, 44, 51, 60, 6, 17, 58, 59];
            for round in 0..40_000 {
                let snap = [128, 200, 1500, 65_535][round % 4];
                let prog = program(snap);
                let r = next();
                let tags: &[u16] = match r % 5 {
                    0 => &[0x8100],
                    1 => &[0x88a8],
                    2 => &[0x8100, 0x8100],
                    _ => &[],
                };
                let n = (r >> 8) as usize % 11;
                let chain: Vec<(u8, Vec<u8>)> = (0..n)
                    .map(|_| {
                        let r = next();
                        let t = types[r as usize % 5];
                        let len = match t {
                            44 => 8,
                            51 => (((r >> 8) % 6) as usize + 2) * 4,
                            _ => (((r >> 8) % 40) as usize + 1) * 8,
                        };
                        let mut h = vec![types[(r >> 16) as usize % types.len()], 0];
                        h[1] = if t == 51 { (len / 4 - 2) as u8 } else { (len / 8).saturating_sub(1) as u8 };
                        h.resize(len, (r >> 24) as u8);
                        (t, h)
                    })
                    .collect();
                // Each header names the next as chained() does not: keep the random names.
                let mut f = chained(tags, &chain);
                if next() % 4 == 0 {
                    let ether = [0x0800u16, 0x86dd, 0x8100, 0x0806][next() as usize % 4];
                    let at = if tags.is_empty() { 12 } else { 16 };
                    f[at..at + 2].copy_from_slice(&ether.to_be_bytes());
                }
                if next() % 3 == 0 {
                    let at = next() as usize % f.len();
                    f[at] = next() as u8;
                }
                if next() % 3 == 0 {
                    f.truncate(next() as usize % (f.len() + 1));
                }
                let (ret, _) = run(&prog, &f);
                assert_eq!(ret, reference(&f, snap), "round {round}, snap {snap}: {f:02x?}");
                assert!(ret >= snap && ret <= snap.max(HEADER_SNAP_CAP));
            }
        }

        #[test]
        fn common_frames_cost_a_handful_of_instructions() {
            let prog = program(SNAP);
            let steps = |f: &[u8]| run(&prog, f).1;
            assert_eq!(steps(&eth(&[], 0x0800, &ipv4_syn())), 8, "IPv4: a length check and four compares");
            assert_eq!(steps(&chained(&[], &[])), 24, "IPv6 without extension headers");
            assert_eq!(steps(&chained(&[], &dest_opts_chain(1, 80))), 47, "one destination options header");
            assert_eq!(steps(&chained(&[], &dest_opts_chain(8, 8))), 200, "the longest walk");
        }
    }
}
