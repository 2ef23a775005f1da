//! Live capture: an AF_PACKET socket with a TPACKET_V3 memory-mapped ring.
//!
//! The kernel fills blocks of packets and hands each block over by setting
//! its status to `TP_STATUS_USER`; we read every packet in place and give the
//! block back (`TP_STATUS_KERNEL`) when we move on. A one-instruction BPF
//! filter (`ret #snaplen`) cuts packets to the snap length so only headers
//! are copied. Kernel drop counters come from `PACKET_STATISTICS`.
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

#[repr(C)]
struct SockFilter {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
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
    /// Bytes kept per packet (≥ 128 keeps every header we parse).
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
        let snap = cfg.snap_len.max(128);
        let filter = [SockFilter { code: 0x06, jt: 0, jf: 0, k: snap }];
        let prog = SockFprog { len: 1, filter: filter.as_ptr() };
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
