//! gatewarden-netlink: the netlink socket and message encoding ([`Batch`],
//! [`Attrs`]), nftables expressions ([`expr`]) and rtnetlink queries
//! ([`route`]). Depends on gatewarden-core only; one of the two crates with
//! `unsafe` (a socket option, with its `// SAFETY:` comment).
//!
//! # What is delegated, and what stays ours
//!
//! - **Sockets**: `netlink-sys` (rust-netlink) opens, binds and reads them.
//! - **rtnetlink** (routes, addresses, links, neighbours; [`route`]): the
//!   messages are `netlink-packet-route`'s. Requests are its typed headers
//!   and replies go through its parsers (`RouteMessage`, `AddressMessage`,
//!   `NeighbourMessage`; for links its header parser and
//!   `netlink-packet-core`'s checked attribute walk), so this crate holds no
//!   `rtmsg`/`ifaddrmsg`/`ndmsg` offsets. Two crates are added
//!   (`netlink-packet-core`, no dependencies; `netlink-packet-route`, whose
//!   `bitflags`, `log` and `zerocopy` were already in the tree); it builds
//!   statically for aarch64. Only those parsers are linked, not
//!   `RouteNetlinkMessage`'s dispatch over every rtnetlink message nor
//!   `LinkMessage`'s decoder of every link attribute: in an aarch64 size
//!   probe of the four queries that is +55 kB, against +450 kB with them
//!   (issue #16; `docs/ARCHITECTURE.md`, "rtnetlink queries"). The parsers are
//!   fuzzed with this machine's real replies (`route::tests`): a reply they
//!   refuse is an error naming the query, never a panic. The dump loop stays
//!   ours: the queries are short blocking calls and this crate runs no async
//!   runtime, while rust-netlink's own loop (`rtnetlink` over
//!   `netlink-proto`) is async only.
//! - **nf_tables stays ours** ([`Batch`], [`Attrs`], [`expr`]):
//!   `netlink-packet-netfilter` 0.4 has table/chain/set/rule messages but
//!   none of the expressions the gateway needs (counter objects, limit,
//!   dynset, objref, ct, log, reject) and no batch begin/end, so mixing its
//!   enums with hand-built nested attributes would mean two encoders. No
//!   other maintained crate builds set elements with timeouts, comments and
//!   `ether_addr` keys in one atomic batch as the blocker needs (`rustables`
//!   and `nftnl` need libnftnl, a C library the static aarch64 build cannot
//!   take). This encoder is small (≈200 lines); unit tests pin its bytes and
//!   `tests/enforce.rs` proves the kernel accepts them.
//!
//! # Transactions
//!
//! Every nf_tables change goes through [`Batch`]: `BATCH_BEGIN`, the
//! messages, `BATCH_END`, sent in one `send`. The kernel applies all of it or
//! nothing, and processes it synchronously inside `send`, so every ack is
//! already in our receive queue when `send` returns.

pub mod expr;
pub mod route;

use std::io;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

/// nfnetlink subsystem id of nf_tables (`NFNL_SUBSYS_NFTABLES`).
pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// `NLM_F_REQUEST`.
pub const NLM_F_REQUEST: u16 = 0x1;
/// `NLM_F_ACK`: the kernel answers every message, so a batch's fate is known.
pub const NLM_F_ACK: u16 = 0x4;
/// `NLM_F_EXCL`: fail if the object exists (never used for elements: re-adding refreshes).
pub const NLM_F_EXCL: u16 = 0x200;
/// `NLM_F_CREATE`.
pub const NLM_F_CREATE: u16 = 0x400;
/// `NLM_F_APPEND`: rules go to the end of the chain, in the order sent.
pub const NLM_F_APPEND: u16 = 0x800;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLM_F_CAPPED: u16 = 0x100;
const NLA_F_NESTED: u16 = 0x8000;
const NLMSGERR_ATTR_MSG: u16 = 1;

/// nf_tables message types (`enum nf_tables_msg_types`).
#[allow(missing_docs)]
pub mod msg {
    pub const NEWTABLE: u8 = 0;
    pub const GETTABLE: u8 = 1;
    pub const DELTABLE: u8 = 2;
    pub const NEWCHAIN: u8 = 3;
    pub const NEWRULE: u8 = 6;
    pub const GETRULE: u8 = 7;
    pub const DELRULE: u8 = 8;
    pub const NEWSET: u8 = 9;
    pub const GETSET: u8 = 10;
    pub const DELSET: u8 = 11;
    pub const NEWSETELEM: u8 = 12;
    pub const GETSETELEM: u8 = 13;
    pub const DELSETELEM: u8 = 14;
    pub const NEWOBJ: u8 = 18;
    pub const NEWGEN: u8 = 15;
    pub const GETGEN: u8 = 16;
    pub const GETOBJ: u8 = 19;
}

/// `NFNL_BATCH_GENID`: the attribute of a batch's begin message that makes
/// the kernel refuse the batch (`ERESTART`) unless the ruleset is still at
/// that generation.
const NFNL_BATCH_GENID: u16 = 1;
/// `NFTA_GEN_ID` in a `NEWGEN` reply.
const NFTA_GEN_ID: u16 = 1;
/// `ERESTART`: the ruleset changed since the generation a batch was built on.
pub const ERESTART: i32 = 85;

/// Protocol families in `nfgenmsg.nfgen_family`.
#[allow(missing_docs)]
pub mod family {
    pub const UNSPEC: u8 = 0;
    pub const INET: u8 = 1;
    pub const IPV4: u8 = 2;
    pub const IPV6: u8 = 10;
}

/// A list of netlink attributes being built (type-length-value, 4-byte aligned).
///
/// Integers are big-endian, as nf_tables expects for every `NLA_U32/U64`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attrs(Vec<u8>);

impl Attrs {
    /// No attributes yet.
    pub fn new() -> Attrs {
        Attrs(Vec::new())
    }

    /// Appends raw bytes as attribute `ty`.
    pub fn bytes(mut self, ty: u16, value: &[u8]) -> Attrs {
        let len = 4 + value.len();
        assert!(len <= u16::MAX as usize, "netlink attribute {ty} too long ({len} bytes)");
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&ty.to_ne_bytes());
        self.0.extend_from_slice(value);
        while self.0.len() % 4 != 0 {
            self.0.push(0);
        }
        self
    }

    /// A big-endian u32.
    pub fn u32(self, ty: u16, v: u32) -> Attrs {
        self.bytes(ty, &v.to_be_bytes())
    }

    /// A big-endian u64.
    pub fn u64(self, ty: u16, v: u64) -> Attrs {
        self.bytes(ty, &v.to_be_bytes())
    }

    /// A NUL-terminated string.
    pub fn str(self, ty: u16, s: &str) -> Attrs {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.bytes(ty, &v)
    }

    /// A nested attribute list (`NLA_F_NESTED` set, as the kernel's strict parser wants).
    pub fn nested(self, ty: u16, inner: Attrs) -> Attrs {
        self.bytes(ty | NLA_F_NESTED, &inner.0)
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Encoded length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Iterates over the attributes in `buf` as (type without flag bits, value).
pub fn parse_attrs(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        let ty = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            return None;
        }
        let value = &rest[4..len];
        let aligned = (len + 3) & !3;
        rest = &rest[aligned.min(rest.len())..];
        Some((ty, value))
    })
}

/// Splits `buf` into (type without flag bits, value) and refuses what does
/// not add up: an attribute shorter than its header, longer than what is
/// left, or stray bytes after the last one. For replies whose numbers reach
/// an operator (per-element drop counters): a truncated reply is an error
/// naming `what`, never a silently shorter list.
pub fn parse_attrs_strict<'a>(buf: &'a [u8], what: &str) -> Result<Vec<(u16, &'a [u8])>, NlError> {
    let mut out = Vec::new();
    let mut rest = buf;
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(NlError::Protocol(format!("{what}: {} stray bytes after the last attribute", rest.len())));
        }
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        let ty = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            return Err(NlError::Protocol(format!("{what}: attribute {ty} claims {len} bytes, {} left", rest.len())));
        }
        out.push((ty, &rest[4..len]));
        let aligned = (len + 3) & !3;
        rest = &rest[aligned.min(rest.len())..];
    }
    Ok(out)
}

/// A big-endian u64 that must be exactly 8 bytes (strict replies).
pub fn be_u64_exact(v: &[u8], what: &str) -> Result<u64, NlError> {
    <[u8; 8]>::try_from(v)
        .map(u64::from_be_bytes)
        .map_err(|_| NlError::Protocol(format!("{what}: a 64-bit value of {} bytes", v.len())))
}

/// Reads a big-endian u32 attribute value (0 if short).
pub fn be_u32(v: &[u8]) -> u32 {
    v.get(..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])).unwrap_or(0)
}

/// Reads a big-endian u64 attribute value (0 if short).
pub fn be_u64(v: &[u8]) -> u64 {
    v.get(..8).map(|b| u64::from_be_bytes(b.try_into().unwrap_or([0; 8]))).unwrap_or(0)
}

/// Reads a NUL-terminated string attribute value.
pub fn c_str(v: &[u8]) -> String {
    let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

/// One nf_tables message waiting in a batch.
#[derive(Debug, Clone)]
pub struct NfMsg {
    /// `NFT_MSG_*`.
    pub kind: u8,
    /// `NFPROTO_*` of the object.
    pub family: u8,
    /// `NLM_F_*` besides REQUEST and ACK, which are always set.
    pub flags: u16,
    /// The attributes.
    pub attrs: Attrs,
    /// What this message does, for error messages ("add element 192.0.2.7 to block4_admin").
    pub what: String,
}

fn push_nlmsg(out: &mut Vec<u8>, ty: u16, flags: u16, seq: u32, family: u8, res_id: u16, payload: &[u8]) {
    let len = 16 + 4 + payload.len();
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    out.push(family);
    out.push(0); // NFNETLINK_V0
    out.extend_from_slice(&res_id.to_be_bytes());
    out.extend_from_slice(payload);
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

/// Messages applied by the kernel as one transaction: all or nothing.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    msgs: Vec<NfMsg>,
    /// The ruleset generation this transaction was computed from, if it
    /// must not apply to any other (see [`Batch::at_generation`]).
    generation: Option<u32>,
}

impl Batch {
    /// An empty transaction.
    pub fn new() -> Batch {
        Batch::default()
    }

    /// Appends a message.
    pub fn push(&mut self, kind: u8, family: u8, flags: u16, attrs: Attrs, what: impl Into<String>) {
        self.msgs.push(NfMsg { kind, family, flags, attrs, what: what.into() });
    }

    /// Makes the kernel apply this transaction only if the ruleset is still
    /// at `generation` (read with [`Netlink::generation`] before what the
    /// transaction was computed from); otherwise the commit fails with
    /// [`ERESTART`] and nothing changes. Two processes that each read, decide
    /// and rewrite the same rules cannot then overwrite each other's change.
    pub fn at_generation(mut self, generation: u32) -> Batch {
        self.generation = Some(generation);
        self
    }

    /// Number of messages (without begin/end).
    pub fn len(&self) -> usize {
        self.msgs.len()
    }

    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    /// Encodes begin, messages and end with sequence numbers from `seq`.
    pub fn encode(&self, seq: u32) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.msgs.iter().map(|m| 24 + m.attrs.len()).sum::<usize>());
        let begin = match self.generation {
            Some(g) => Attrs::new().bytes(NFNL_BATCH_GENID, &g.to_be_bytes()),
            None => Attrs::new(),
        };
        push_nlmsg(
            &mut out,
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            seq,
            family::UNSPEC,
            NFNL_SUBSYS_NFTABLES,
            begin.as_bytes(),
        );
        for (i, m) in self.msgs.iter().enumerate() {
            let ty = (NFNL_SUBSYS_NFTABLES << 8) | m.kind as u16;
            let flags = NLM_F_REQUEST | NLM_F_ACK | m.flags;
            push_nlmsg(&mut out, ty, flags, seq.wrapping_add(1 + i as u32), m.family, 0, m.attrs.as_bytes());
        }
        let end_seq = seq.wrapping_add(1 + self.msgs.len() as u32);
        push_nlmsg(&mut out, NFNL_MSG_BATCH_END, NLM_F_REQUEST, end_seq, family::UNSPEC, NFNL_SUBSYS_NFTABLES, &[]);
        out
    }
}

/// Why the kernel refused something.
#[derive(Debug, thiserror::Error)]
pub enum NlError {
    /// The socket could not be opened or used.
    #[error("netlink socket: {0}")]
    Io(#[from] io::Error),
    /// The kernel answered a message with an error; the whole batch was rolled back.
    #[error("{what}: {source}{}{hint}", ext.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Kernel {
        /// The message that failed.
        what: String,
        /// errno from the kernel.
        source: io::Error,
        /// The kernel's extended ack message, if any.
        ext: Option<String>,
        /// What the user can do about it.
        hint: &'static str,
    },
    /// The kernel's answer did not add up (missing acks, truncated messages).
    #[error("unexpected netlink reply: {0}")]
    Protocol(String),
}

impl NlError {
    /// The errno if the kernel refused a message.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NlError::Kernel { source, .. } => source.raw_os_error(),
            NlError::Io(e) => e.raw_os_error(),
            NlError::Protocol(_) => None,
        }
    }
}

/// What to tell the operator for an errno.
pub fn hint_for(errno: i32) -> &'static str {
    match errno {
        libc::EPERM => {
            ". Changing nftables needs root or CAP_NET_ADMIN: run as root or `setcap cap_net_admin+ep` on the binary"
        }
        libc::ENOENT => ". The object does not exist (is `gatewarden run` holding the table, or was it removed?)",
        libc::EOPNOTSUPP | libc::EAFNOSUPPORT | libc::EPROTONOSUPPORT => {
            ". This kernel lacks an nf_tables feature we use: load nf_tables (`modprobe nf_tables`) or use kernel 5.10+"
        }
        libc::ENFILE => ". The set is full",
        ERESTART => ". Another process changed the ruleset meanwhile: nothing was applied; run the command again",
        _ => "",
    }
}

/// A blocking netlink socket speaking nfnetlink (or rtnetlink, for addresses).
pub struct Netlink {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
    /// Receive buffer asked for so far, in bytes (see [`Netlink::commit`]).
    rcvbuf: usize,
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netlink").field("seq", &self.seq).finish()
    }
}

/// Raises the socket's send buffer so a large transaction (a feed of tens of
/// thousands of ranges) fits in one `sendmsg`: the kernel applies an
/// nfnetlink batch per message, so splitting it would lose atomicity.
/// `SO_SNDBUFFORCE` (root / CAP_NET_ADMIN) ignores `net.core.wmem_max`;
/// plain `SO_SNDBUF` is the fallback. Failure only limits batch size.
fn set_send_buffer(sock: &Socket, bytes: libc::c_int) {
    set_buffer(sock, &[libc::SO_SNDBUFFORCE, libc::SO_SNDBUF], bytes);
}

/// Kernel buffer space one queued acknowledgement takes (an skb's truesize,
/// ~770 bytes measured, rounded up).
const ACK_BUFFER_BYTES: usize = 1024;

/// Receive buffer a socket starts with (the kernel reports twice what is asked).
const DEFAULT_RCVBUF: usize = 4 << 20;

/// Sets a socket buffer option, trying each of `opts` in turn (the `FORCE`
/// variant first); returns whether one took.
fn set_buffer(sock: &Socket, opts: &[libc::c_int], bytes: libc::c_int) -> bool {
    use std::os::fd::AsRawFd;
    let fd = sock.as_raw_fd();
    for &opt in opts {
        // SAFETY: `fd` is this open socket; the option value is a valid c_int
        // that lives for the call, and its exact size is passed.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&bytes as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return true;
        }
    }
    false
}

impl Netlink {
    /// Opens a netfilter netlink socket in the calling thread's network namespace.
    pub fn open() -> Result<Netlink, NlError> {
        Netlink::open_protocol(NETLINK_NETFILTER)
    }

    /// Opens a netlink socket of any protocol (NETLINK_ROUTE for addresses).
    pub fn open_protocol(protocol: isize) -> Result<Netlink, NlError> {
        let mut sock = Socket::new(protocol)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        // Errors carry the kernel's reason text; acks do not echo our request back.
        let _ = sock.set_ext_ack(true);
        let _ = sock.set_cap_ack(true);
        // What the receive buffer holds is known only when forced: plain
        // SO_RCVBUF is silently capped by `net.core.rmem_max`, so then
        // nothing is assumed and the first commit forces what it needs.
        let forced = set_buffer(&sock, &[libc::SO_RCVBUFFORCE], (DEFAULT_RCVBUF / 2) as libc::c_int);
        if !forced {
            let _ = sock.set_rx_buf_sz(DEFAULT_RCVBUF);
        }
        set_send_buffer(&sock, 32 << 20);
        let seq =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as u32).unwrap_or(1);
        Ok(Netlink { sock, seq, buf: Vec::with_capacity(1 << 16), rcvbuf: if forced { DEFAULT_RCVBUF } else { 0 } })
    }

    /// Sets the receive buffer as an unprivileged process could (plain
    /// `SO_RCVBUF`, capped by `net.core.rmem_max`): what a default kernel
    /// gives. [`Netlink::commit`] still raises it as a batch needs.
    pub fn set_receive_buffer(&mut self, bytes: usize) {
        set_buffer(&self.sock, &[libc::SO_RCVBUF], bytes.min(i32::MAX as usize) as libc::c_int);
        self.rcvbuf = bytes;
    }

    /// Makes room for `messages` acknowledgements: nfnetlink queues them all
    /// inside `sendmsg`, and once the receive buffer is full it drops the
    /// rest and the next `recv` fails with ENOBUFS — after the kernel applied
    /// the batch, so a success would be reported as a failure. Plain
    /// `SO_RCVBUF` is capped by `net.core.rmem_max` (212 992 on a default
    /// kernel: ~550 acknowledgements), so `SO_RCVBUFFORCE` first, as nft does.
    fn make_room_for_acks(&mut self, messages: usize) {
        let need = messages.saturating_mul(ACK_BUFFER_BYTES).saturating_add(64 << 10).max(DEFAULT_RCVBUF);
        if need <= self.rcvbuf {
            return;
        }
        // The kernel doubles what is asked for; ask for half.
        let ask = (need / 2).min(i32::MAX as usize) as libc::c_int;
        if set_buffer(&self.sock, &[libc::SO_RCVBUFFORCE, libc::SO_RCVBUF], ask) {
            self.rcvbuf = need;
        }
    }

    fn next_seq(&mut self, n: u32) -> u32 {
        let s = self.seq;
        self.seq = self.seq.wrapping_add(n);
        s
    }

    /// Sends `batch` as one transaction and waits for every ack.
    ///
    /// On error the kernel has rolled the whole batch back; the error names
    /// the first message it refused.
    pub fn commit(&mut self, batch: &Batch) -> Result<(), NlError> {
        if batch.is_empty() {
            return Ok(());
        }
        let n = batch.len() as u32;
        let seq = self.next_seq(n + 2);
        let bytes = batch.encode(seq);
        self.make_room_for_acks(batch.len() + 2);
        self.sock.send(&bytes, 0)?;
        let mut acked = 0u32;
        let mut first_err: Option<NlError> = None;
        // nfnetlink runs the batch inside send(); all replies are queued now.
        loop {
            self.buf.clear();
            match self.sock.recv(&mut self.buf, libc::MSG_DONTWAIT) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    return Err(NlError::Protocol(format!(
                        "the kernel's acknowledgements of a {n}-message batch overflowed the socket's receive \
                         buffer (ENOBUFS): the batch may have been applied; list the ruleset (`nft list table inet \
                         gatewarden`) before repeating it"
                    )))
                }
                Err(e) => return Err(NlError::Io(e)),
            }
            for m in split_msgs(&self.buf) {
                if m.ty != NLMSG_ERROR {
                    continue;
                }
                let (errno, ext, orig_seq) = parse_error(&m);
                acked += 1;
                if errno != 0 && first_err.is_none() {
                    let idx = orig_seq.wrapping_sub(seq).wrapping_sub(1) as usize;
                    let what = match batch.msgs.get(idx) {
                        Some(m) => m.what.clone(),
                        None if errno == ERESTART => "apply a change computed from an older ruleset generation".into(),
                        None => "nf_tables batch".into(),
                    };
                    first_err = Some(NlError::Kernel {
                        what,
                        source: io::Error::from_raw_os_error(errno),
                        ext,
                        hint: hint_for(errno),
                    });
                }
            }
            if acked >= n {
                break;
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        if acked < n {
            return Err(NlError::Protocol(format!("kernel acknowledged {acked} of {n} messages")));
        }
        Ok(())
    }

    /// Runs an nf_tables dump (`GET*` with `NLM_F_DUMP`) and returns each
    /// reply's attributes (after the 4-byte nfgenmsg header).
    pub fn dump(&mut self, kind: u8, family: u8, attrs: &Attrs) -> Result<Vec<Vec<u8>>, NlError> {
        let ty = (NFNL_SUBSYS_NFTABLES << 8) | kind as u16;
        let seq = self.next_seq(1);
        let mut req = Vec::new();
        push_nlmsg(&mut req, ty, NLM_F_REQUEST | NLM_F_DUMP, seq, family, 0, attrs.as_bytes());
        self.dump_raw(&req, seq, 4)
    }

    /// Runs a single nf_tables `GET*` (no dump) with an ack: the reply's
    /// attributes, or the kernel's error (`ENOENT` when there is no such object).
    pub fn get(&mut self, kind: u8, family: u8, attrs: &Attrs) -> Result<Vec<Vec<u8>>, NlError> {
        let ty = (NFNL_SUBSYS_NFTABLES << 8) | kind as u16;
        let seq = self.next_seq(1);
        let mut req = Vec::new();
        push_nlmsg(&mut req, ty, NLM_F_REQUEST | NLM_F_ACK, seq, family, 0, attrs.as_bytes());
        self.dump_raw(&req, seq, 4)
    }

    /// Sends a prepared dump request and collects payloads after `skip` header bytes.
    pub fn dump_raw(&mut self, req: &[u8], seq: u32, skip: usize) -> Result<Vec<Vec<u8>>, NlError> {
        self.sock.send(req, 0)?;
        let mut out = Vec::new();
        loop {
            self.buf.clear();
            self.buf.reserve(1 << 16);
            self.sock.recv(&mut self.buf, 0)?;
            for m in split_msgs(&self.buf) {
                if m.seq != seq {
                    continue;
                }
                match m.ty {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let (errno, ext, _) = parse_error(&m);
                        if errno == 0 {
                            return Ok(out);
                        }
                        return Err(NlError::Kernel {
                            what: "read nftables state".into(),
                            source: io::Error::from_raw_os_error(errno),
                            ext,
                            hint: hint_for(errno),
                        });
                    }
                    _ => out.push(m.payload.get(skip..).unwrap_or_default().to_vec()),
                }
            }
        }
    }

    /// The ruleset's generation: every committed transaction (any table,
    /// any process) moves it on. Read it before reading what a change is
    /// computed from, and commit the change [`Batch::at_generation`] it.
    pub fn generation(&mut self) -> Result<u32, NlError> {
        let replies = self.get(msg::GETGEN, family::UNSPEC, &Attrs::new())?;
        let id = replies
            .iter()
            .flat_map(|r| parse_attrs(r))
            .find(|(ty, v)| *ty == NFTA_GEN_ID && v.len() == 4)
            .map(|(_, v)| be_u32(v));
        id.ok_or_else(|| NlError::Protocol("the kernel's NEWGEN reply has no generation id".into()))
    }

    /// A sequence number for a hand-built request.
    pub fn take_seq(&mut self) -> u32 {
        self.next_seq(1)
    }
}

struct RawMsg<'a> {
    ty: u16,
    flags: u16,
    seq: u32,
    payload: &'a [u8],
}

fn split_msgs(mut buf: &[u8]) -> Vec<RawMsg<'_>> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < 16 || len > buf.len() {
            break;
        }
        out.push(RawMsg {
            ty: u16::from_ne_bytes([buf[4], buf[5]]),
            flags: u16::from_ne_bytes([buf[6], buf[7]]),
            seq: u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]),
            payload: &buf[16..len],
        });
        let aligned = (len + 3) & !3;
        buf = &buf[aligned.min(buf.len())..];
    }
    out
}

/// (negated errno, extended-ack text, sequence number of the refused message).
fn parse_error(m: &RawMsg<'_>) -> (i32, Option<String>, u32) {
    let p = m.payload;
    if p.len() < 4 + 16 {
        return (0, None, 0);
    }
    let err = -i32::from_ne_bytes([p[0], p[1], p[2], p[3]]);
    let orig_len = u32::from_ne_bytes([p[4], p[5], p[6], p[7]]) as usize;
    let orig_seq = u32::from_ne_bytes([p[12], p[13], p[14], p[15]]);
    let mut ext = None;
    if m.flags & NLM_F_ACK_TLVS != 0 {
        // NLM_F_CAPPED: only the header of our message is echoed (NETLINK_CAP_ACK);
        // otherwise the whole message comes back before the TLVs.
        let tlv_start = if m.flags & NLM_F_CAPPED != 0 { 4 + 16 } else { 4 + ((orig_len + 3) & !3) };
        let tlvs = p.get(tlv_start..).unwrap_or_default();
        for (ty, v) in parse_attrs(tlvs) {
            if ty == NLMSGERR_ATTR_MSG {
                ext = Some(c_str(v));
            }
        }
    }
    (err, ext, orig_seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_to_four_bytes_and_nested_flagged() {
        let a = Attrs::new().str(1, "gw").u32(2, 0x0102_0304);
        assert_eq!(a.as_bytes(), &[7, 0, 1, 0, b'g', b'w', 0, 0, 8, 0, 2, 0, 1, 2, 3, 4]);
        let n = Attrs::new().nested(3, Attrs::new().u64(1, 1));
        assert_eq!(n.as_bytes(), &[16, 0, 3, 0x80, 12, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        let back: Vec<_> = parse_attrs(a.as_bytes()).collect();
        assert_eq!(back, vec![(1, &b"gw\0"[..]), (2, &[1, 2, 3, 4][..])]);
        assert_eq!(be_u32(back[1].1), 0x0102_0304);
        assert_eq!(c_str(back[0].1), "gw");
    }

    #[test]
    fn batch_is_begin_messages_end_with_consecutive_sequence_numbers() {
        let mut b = Batch::new();
        b.push(msg::NEWTABLE, family::INET, NLM_F_CREATE, Attrs::new().str(1, "gatewarden"), "add table");
        let bytes = b.encode(100);
        let msgs = split_msgs(&bytes);
        assert_eq!(msgs.len(), 3);
        assert_eq!((msgs[0].ty, msgs[0].seq), (0x10, 100));
        // res_id of batch begin is the nf_tables subsystem, big-endian.
        assert_eq!(&msgs[0].payload[..4], &[0, 0, 0, 10]);
        assert_eq!((msgs[1].ty, msgs[1].seq), (10 << 8, 101));
        assert_eq!(msgs[1].flags, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE);
        assert_eq!(msgs[1].payload[0], family::INET);
        assert_eq!(&msgs[1].payload[4..], b"\x0f\x00\x01\x00gatewarden\x00\x00");
        assert_eq!((msgs[2].ty, msgs[2].seq), (0x11, 102));
        // Bound to a generation: the begin message carries NFNL_BATCH_GENID, big-endian.
        let bound = b.clone().at_generation(0x0102_0304).encode(100);
        let msgs = split_msgs(&bound);
        assert_eq!(msgs.len(), 3);
        assert_eq!(&msgs[0].payload[4..], &[8, 0, 1, 0, 1, 2, 3, 4]);
        assert_eq!(msgs[1].payload, split_msgs(&bytes)[1].payload, "the messages are unchanged");
    }

    #[test]
    fn kernel_errors_name_the_message_and_give_a_hint() {
        let e = NlError::Kernel {
            what: "add table inet gatewarden".into(),
            source: io::Error::from_raw_os_error(libc::EPERM),
            ext: None,
            hint: hint_for(libc::EPERM),
        };
        let text = e.to_string();
        assert!(text.starts_with("add table inet gatewarden: "), "{text}");
        assert!(text.contains("CAP_NET_ADMIN") && text.contains("setcap"), "{text}");
        assert_eq!(e.errno(), Some(libc::EPERM));
    }
}
