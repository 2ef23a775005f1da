//! `gatewarden ctl`: an operator talks to one node directly over TCP, through
//! the same handshake and envelope as the bus ([`crate::secure`]).
//!
//! On a connection both sides first send their signed [`crate::secure::Announce`]
//! (a fresh ephemeral key per connection, so every session has its own
//! forward-secret key), then the operator sends sealed [`ControlRequest`]s and
//! the node answers with sealed [`ControlResponse`]s. Frames are a 4-byte
//! big-endian length plus bytes, at most [`MAX_FRAME`]. Only certificates with
//! role `operator` may send requests; every refusal is counted in
//! `gatewarden_secure_rejected_total` and raised as a `ChannelAbuse` alert.
//!
//! Blocking lives in the router's enforcement layer: `src/enforce/control.rs`
//! implements [`BlockControl`] over the enforcement thread, so `ctl block`
//! writes the same nftables sets as detector verdicts (the `admin` set). A
//! node without enforcement (detector, monitor, or a router with
//! `[enforce] enabled = false`) answers `blocks`, `block` and `unblock` with
//! an error that says so.

//!
//! ## Before authentication
//!
//! Anyone who can reach the port can connect, so everything before the
//! operator is proven is bounded ([`crate::config::CtlConfig`]): the whole
//! handshake (hello, our answer, the first sealed request) has one deadline
//! however slowly bytes trickle in; hello frames are at most
//! [`MAX_HANDSHAKE_FRAME`] bytes and the announced name must be a node id;
//! the hello's certificate and signature are checked (with ring, cheap)
//! before this side spends a key generation on it; pre-auth connections have
//! a total and a per-address cap, and a newcomer is always let in: at an
//! address's cap that address's oldest connection is dropped, at the total
//! cap the oldest of all, so held connections cannot lock operators out (an
//! operator's handshake takes milliseconds); authenticated sessions have
//! their own cap, never taken by pre-auth connections. Failed handshakes become one
//! `ChannelAbuse` alert per address per `ctl.alert_interval_s` carrying a
//! count ([`failures`]); peer-supplied text is escaped and truncated
//! ([`crate::logging::sanitize`]) before it reaches an alert or a log.

mod failures;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

pub use failures::{address_key, FailureReport, HandshakeFailures};

use crate::bus::Publisher;
use crate::config::CtlConfig;
use crate::logging::sanitize;
use crate::pki::{CaVerifier, CertRole, Identity};
use crate::secure::{now_ns, Announce, PayloadKind, SecureChannel, SecureConfig};
use gatewarden_core::metrics::{Counter, Gauge, Registry};
use gatewarden_core::shutdown::Shutdown;
use gatewarden_proto::messages::Message;

/// Largest frame a `ctl` client accepts (a node's answer: the status document).
pub const MAX_FRAME: usize = 1 << 20;
/// Largest frame before authentication: a hello is a name, a certificate
/// (under 1 KiB), a key and a signature.
pub const MAX_HANDSHAKE_FRAME: usize = 8 * 1024;
/// Largest request frame a node reads (requests are a few dozen bytes sealed).
pub const MAX_REQUEST_FRAME: usize = 64 * 1024;
/// Characters of peer-supplied text kept in an alert or a log line.
pub const MAX_PEER_TEXT: usize = 160;

/// What an operator asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlRequest {
    /// The node's status document.
    Status,
    /// Addresses blocked now.
    Blocks,
    /// Block an address for `ttl_s` seconds.
    Block {
        /// The address.
        ip: IpAddr,
        /// How long.
        ttl_s: u32,
    },
    /// Lift a block.
    Unblock {
        /// The address.
        ip: IpAddr,
    },
    /// Lift the containment of a LAN MAC caught forging source addresses
    /// (listed by `Blocks` with origin `contain`). Last, so older variants keep their wire index.
    UnblockMac {
        /// The MAC, `aa:bb:cc:dd:ee:ff`.
        mac: String,
    },
}

pub use gatewarden_proto::messages::BlockEntry;

/// The node's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ControlResponse {
    /// The status document as JSON text.
    Status(String),
    /// Current blocks.
    Blocks(Vec<BlockEntry>),
    /// Done, with a sentence.
    Done(String),
    /// Refused or failed, with what to do.
    Error(String),
    /// The first [`MAX_CTL_BLOCK_ROWS`] of `total` blocks (admin and
    /// contained first): the whole list would not fit in one answer. Last,
    /// so older variants keep their wire index.
    BlocksPartial {
        /// The rows shown.
        shown: Vec<BlockEntry>,
        /// How many blocks the router holds.
        total: usize,
    },
}

/// Most block rows in one `ctl blocks` answer. A row is up to ~470 bytes
/// (a 256-byte reason, two 64-byte sender ids, a drop count), so 2 000
/// stay inside [`MAX_FRAME`] once sealed (test
/// `a_router_holding_twenty_thousand_blocks_still_answers_ctl_blocks`); a router holding more (a feed, a long attack) answered nothing
/// at all once the list passed about 10 000.
pub const MAX_CTL_BLOCK_ROWS: usize = 2_000;

/// The answer to `ctl blocks`: the list, or its first rows when it is too
/// long for one answer (the operator's own blocks and containments first,
/// then detector blocks, then feed ranges).
fn blocks_answer(mut list: Vec<BlockEntry>) -> ControlResponse {
    if list.len() <= MAX_CTL_BLOCK_ROWS {
        return ControlResponse::Blocks(list);
    }
    let rank = |b: &BlockEntry| match b.origin.as_str() {
        o if o.starts_with("operator") || o == "admin" => 0,
        "contain" => 1,
        "detector" => 2,
        _ => 3,
    };
    let total = list.len();
    list.sort_by_key(rank);
    list.truncate(MAX_CTL_BLOCK_ROWS);
    ControlResponse::BlocksPartial { shown: list, total }
}

pub use crate::enforce::control::BlockControl;

/// What the control server answers with.
#[derive(Clone)]
pub struct ControlHandler {
    /// Produces the status document.
    pub status: Arc<dyn Fn() -> serde_json::Value + Send + Sync>,
    /// The enforcement layer, on routers once wired.
    pub blocks: Option<Arc<dyn BlockControl>>,
    /// Where ChannelAbuse alerts go.
    pub alerts: Option<Arc<dyn Publisher>>,
}

impl ControlHandler {
    /// Answers one authenticated request.
    pub fn handle(&self, req: &ControlRequest, operator: &str) -> ControlResponse {
        let no_blocks = || {
            ControlResponse::Error(
                "this node has no enforcement layer to ask: only a router with [enforce] enabled = true \
                 blocks addresses (point --node at a router's ctl.listen)"
                    .into(),
            )
        };
        match req {
            ControlRequest::Status => ControlResponse::Status((self.status)().to_string()),
            ControlRequest::Blocks => match &self.blocks {
                Some(b) => b.list().map(blocks_answer).unwrap_or_else(ControlResponse::Error),
                None => no_blocks(),
            },
            ControlRequest::Block { ip, ttl_s } => match &self.blocks {
                Some(b) => match b.block(*ip, *ttl_s, &format!("operator:{operator}")) {
                    Ok(()) => ControlResponse::Done(format!(
                        "blocked {ip} for {}",
                        gatewarden_core::duration::format_duration(u64::from(*ttl_s))
                    )),
                    Err(e) => ControlResponse::Error(e),
                },
                None => no_blocks(),
            },
            ControlRequest::Unblock { ip } => match &self.blocks {
                Some(b) => match b.unblock(*ip) {
                    Ok(true) => ControlResponse::Done(format!("unblocked {ip}")),
                    Ok(false) => ControlResponse::Done(format!("{ip} was not blocked")),
                    Err(e) => ControlResponse::Error(e),
                },
                None => no_blocks(),
            },
            ControlRequest::UnblockMac { mac } => {
                let Some(m) = crate::enforce::spoof::parse_mac(mac) else {
                    return ControlResponse::Error(format!(
                        "\"{}\" is not a MAC address: give six hex bytes, e.g. 02:00:00:00:00:66",
                        sanitize(mac, 40)
                    ));
                };
                let mac = crate::enforce::spoof::mac_text(&m);
                match &self.blocks {
                    Some(b) => match b.unblock_mac(m) {
                        Ok(true) => ControlResponse::Done(format!("lifted the containment of {mac}")),
                        Ok(false) => ControlResponse::Error(format!(
                            "{mac} is not contained (expired or already lifted; `gatewarden ctl blocks` lists contained MACs with origin contain)"
                        )),
                        Err(e) => ControlResponse::Error(e),
                    },
                    None => no_blocks(),
                }
            }
        }
    }
}

/// Why reading a frame stopped.
#[derive(Debug, thiserror::Error)]
enum FrameError {
    #[error("closed before sending anything")]
    Closed,
    #[error("closed in the middle of a frame")]
    Truncated,
    #[error("not finished in time")]
    Timeout,
    #[error("a frame of {0} bytes exceeds the limit of {1}")]
    TooLarge(usize, usize),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Fills `buf` before `deadline`. The socket timeout is set to what is left
/// before every read, so a peer sending a byte now and then gains nothing.
fn read_exact_by(s: &mut TcpStream, buf: &mut [u8], deadline: Instant, at_start: bool) -> Result<(), FrameError> {
    let mut got = 0;
    while got < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(FrameError::Timeout);
        }
        s.set_read_timeout(Some(left))?;
        match s.read(&mut buf[got..]) {
            Ok(0) if at_start && got == 0 => return Err(FrameError::Closed),
            Ok(0) => return Err(FrameError::Truncated),
            Ok(n) => got += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    Ok(())
}

/// One frame of at most `max` bytes, all of it before `deadline`.
fn read_frame_by(s: &mut TcpStream, max: usize, deadline: Instant) -> Result<Vec<u8>, FrameError> {
    let mut len = [0u8; 4];
    read_exact_by(s, &mut len, deadline, true)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(FrameError::TooLarge(len, max));
    }
    let mut buf = vec![0u8; len];
    read_exact_by(s, &mut buf, deadline, false)?;
    Ok(buf)
}

fn write_frame_by(s: &mut TcpStream, b: &[u8], deadline: Instant) -> anyhow::Result<()> {
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    s.set_write_timeout(Some(left))?;
    let len = u32::try_from(b.len()).context("frame too large")?;
    s.write_all(&len.to_be_bytes())?;
    s.write_all(b)?;
    s.flush()?;
    Ok(())
}

/// Connections in the handshake (oldest first) and the number of sessions.
struct Conns {
    max_preauth: usize,
    per_address: usize,
    max_sessions: usize,
    inner: Mutex<ConnsInner>,
    preauth_now: Gauge,
    sessions_now: Gauge,
}

#[derive(Default)]
struct ConnsInner {
    next: u64,
    /// Connection id (increasing, so the first is the oldest) → (address key, a handle to close it).
    preauth: BTreeMap<u64, (IpAddr, TcpStream)>,
    sessions: usize,
}

/// Why an older pre-auth connection was dropped for a newcomer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dropped {
    /// The newcomer's address already held `max_preauth_per_address`: its own oldest goes.
    PerAddress,
    /// `max_preauth` were open: the oldest of all goes.
    Capacity,
}

impl Conns {
    fn lock(&self) -> std::sync::MutexGuard<'_, ConnsInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Always lets the newcomer in: an operator's handshake takes
    /// milliseconds, an attacker's held connection is the oldest. At the
    /// per-address cap the address's own oldest connection is dropped (one
    /// address cannot push out others), at the total cap the oldest of all.
    fn admit(self: &Arc<Self>, peer: IpAddr, handle: TcpStream) -> (PreauthTicket, Option<Dropped>) {
        let key = address_key(peer);
        let mut g = self.lock();
        let mut dropped = None;
        let mine: Vec<u64> = g.preauth.iter().filter(|(_, (k, _))| *k == key).map(|(id, _)| *id).collect();
        let mut victims: Vec<u64> = Vec::new();
        if mine.len() >= self.per_address {
            victims.extend(&mine[..=mine.len() - self.per_address]);
            dropped = Some(Dropped::PerAddress);
        } else if g.preauth.len() >= self.max_preauth {
            victims.extend(g.preauth.keys().take(g.preauth.len() + 1 - self.max_preauth));
            dropped = Some(Dropped::Capacity);
        }
        for id in victims {
            if let Some((_, old)) = g.preauth.remove(&id) {
                // Its thread's next read fails at once and it leaves quietly.
                let _ = old.shutdown(std::net::Shutdown::Both);
            }
        }
        let id = g.next;
        g.next += 1;
        g.preauth.insert(id, (key, handle));
        self.preauth_now.set(g.preauth.len() as f64);
        (PreauthTicket { conns: self.clone(), id }, dropped)
    }

    fn session(self: &Arc<Self>) -> Option<SessionTicket> {
        let mut g = self.lock();
        if g.sessions >= self.max_sessions {
            return None;
        }
        g.sessions += 1;
        self.sessions_now.set(g.sessions as f64);
        Some(SessionTicket { conns: self.clone() })
    }
}

/// A place among the pre-auth connections, given back when dropped.
struct PreauthTicket {
    conns: Arc<Conns>,
    id: u64,
}

impl PreauthTicket {
    /// Whether the connection was dropped to make room for a newer one.
    fn evicted(&self) -> bool {
        !self.conns.lock().preauth.contains_key(&self.id)
    }
}

impl Drop for PreauthTicket {
    fn drop(&mut self) {
        let mut g = self.conns.lock();
        g.preauth.remove(&self.id);
        self.conns.preauth_now.set(g.preauth.len() as f64);
    }
}

/// An operator session slot, given back when dropped.
struct SessionTicket {
    conns: Arc<Conns>,
}

impl Drop for SessionTicket {
    fn drop(&mut self) {
        let mut g = self.conns.lock();
        g.sessions = g.sessions.saturating_sub(1);
        self.conns.sessions_now.set(g.sessions as f64);
    }
}

/// Labels of `gatewarden_ctl_handshake_failures_total`.
const FAILURE_REASONS: [&str; 7] = ["timeout", "oversize", "truncated", "malformed", "refused", "unauthorized", "io"];

/// A handshake that did not produce an operator session.
struct Failure {
    /// Metric label (one of [`FAILURE_REASONS`]).
    label: &'static str,
    /// What happened, peer-supplied parts already sanitized.
    detail: String,
}

impl Failure {
    fn new(label: &'static str, detail: impl AsRef<str>) -> Failure {
        Failure { label, detail: sanitize(detail.as_ref(), MAX_PEER_TEXT * 2) }
    }
    fn frame(e: FrameError) -> Option<Failure> {
        Some(match e {
            // A connect-and-close (a port scan, a health check) is no failed handshake.
            FrameError::Closed => return None,
            FrameError::Timeout => Failure::new("timeout", "handshake not finished in time"),
            FrameError::TooLarge(..) => Failure::new("oversize", e.to_string()),
            FrameError::Truncated => Failure::new("truncated", e.to_string()),
            FrameError::Io(_) => Failure::new("io", e.to_string()),
        })
    }
}

impl From<crate::secure::Rejection> for Failure {
    fn from(e: crate::secure::Rejection) -> Failure {
        Failure::new("refused", e.to_string())
    }
}

/// Counters of the endpoint.
struct CtlMetrics {
    requests: Counter,
    dropped_per_address: Counter,
    dropped_capacity: Counter,
    failures: Vec<(&'static str, Counter)>,
    alerts: Counter,
    sessions_refused: Counter,
    rejected_malformed: Counter,
    rejected_certificate: Counter,
    rejected_revoked: Counter,
    rejected_signature: Counter,
}

impl CtlMetrics {
    fn new(r: &Registry) -> CtlMetrics {
        let dropped = |reason| {
            r.counter(
                "gatewarden_ctl_preauth_dropped_total",
                "ctl connections dropped in their handshake to let a newcomer in: per_address (the oldest of an \
                 address holding ctl.max_preauth_per_address), capacity (the oldest of ctl.max_preauth).",
                &[("reason", reason)],
            )
        };
        let rejected = |reason| {
            r.counter(
                "gatewarden_secure_rejected_total",
                "Envelopes and key announcements refused by the secure channel, by reason.",
                &[("reason", reason)],
            )
        };
        CtlMetrics {
            requests: r.counter("gatewarden_ctl_requests_total", "Control requests answered.", &[]),
            dropped_per_address: dropped("per_address"),
            dropped_capacity: dropped("capacity"),
            failures: FAILURE_REASONS
                .iter()
                .map(|l| {
                    (
                        *l,
                        r.counter(
                            "gatewarden_ctl_handshake_failures_total",
                            "ctl handshakes that failed, by reason (timeout: not finished within \
                             ctl.handshake_timeout_ms).",
                            &[("reason", l)],
                        ),
                    )
                })
                .collect(),
            alerts: r.counter(
                "gatewarden_ctl_failure_alerts_total",
                "ChannelAbuse alerts raised for failed ctl handshakes (at most one per address per ctl.alert_interval_s).",
                &[],
            ),
            sessions_refused: r.counter(
                "gatewarden_ctl_sessions_refused_total",
                "Authenticated operators turned away because ctl.max_sessions sessions were open.",
                &[],
            ),
            rejected_malformed: rejected(crate::secure::Reject::Malformed.as_str()),
            rejected_certificate: rejected(crate::secure::Reject::BadCertificate.as_str()),
            rejected_revoked: rejected(crate::secure::Reject::Revoked.as_str()),
            rejected_signature: rejected(crate::secure::Reject::BadSignature.as_str()),
        }
    }
}

/// What every connection thread shares.
struct Shared {
    id: Identity,
    ca: CaVerifier,
    secure: SecureConfig,
    handler: ControlHandler,
    registry: Arc<Registry>,
    handshake_timeout: Duration,
    idle_timeout: Duration,
    alert_interval: Duration,
    port: u16,
    conns: Arc<Conns>,
    failures: Mutex<HandshakeFailures>,
    m: CtlMetrics,
}

/// Everything a control server needs.
pub struct ControlServer {
    /// The address it listens on.
    pub addr: SocketAddr,
    thread: std::thread::JoinHandle<()>,
}

impl ControlServer {
    /// Listens on `cfg.listen` with `cfg`'s limits and serves until `shutdown`.
    pub fn start(
        cfg: &CtlConfig,
        id: Identity,
        ca: CaVerifier,
        secure: SecureConfig,
        handler: ControlHandler,
        registry: &Arc<Registry>,
        shutdown: Shutdown,
    ) -> anyhow::Result<ControlServer> {
        let listen = &cfg.listen;
        let listener =
            TcpListener::bind(listen).with_context(|| format!("ctl.listen {listen}: cannot listen (port in use?)"))?;
        listener.set_nonblocking(true).context("ctl listener")?;
        let addr = listener.local_addr()?;
        let conns = Arc::new(Conns {
            max_preauth: cfg.max_preauth.max(1),
            per_address: cfg.max_preauth_per_address.max(1),
            max_sessions: cfg.max_sessions.max(1),
            inner: Mutex::new(ConnsInner::default()),
            preauth_now: registry.gauge(
                "gatewarden_ctl_preauth_connections",
                "ctl connections in their handshake now.",
                &[],
            ),
            sessions_now: registry.gauge("gatewarden_ctl_sessions", "Authenticated ctl operator sessions now.", &[]),
        });
        let alert_interval = Duration::from_secs(cfg.alert_interval_s.max(1));
        let shared = Arc::new(Shared {
            id,
            ca,
            secure,
            handler,
            registry: registry.clone(),
            handshake_timeout: Duration::from_millis(cfg.handshake_timeout_ms.max(1)),
            idle_timeout: Duration::from_secs(cfg.session_idle_timeout_s.max(1)),
            alert_interval,
            port: addr.port(),
            conns,
            failures: Mutex::new(HandshakeFailures::new(alert_interval, cfg.max_alert_addresses)),
            m: CtlMetrics::new(registry),
        });
        let thread = std::thread::Builder::new().name("ctl".into()).spawn(move || {
            let mut last_due = Instant::now();
            while !shutdown.is_triggered() {
                if last_due.elapsed() >= Duration::from_secs(1) {
                    last_due = Instant::now();
                    let due = shared.failures.lock().unwrap_or_else(|e| e.into_inner()).due(last_due);
                    due.into_iter().for_each(|r| shared.raise(r));
                }
                match listener.accept() {
                    Ok((stream, peer)) => shared.clone().admit(stream, peer),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    Err(e) => {
                        // EMFILE and friends: back off and keep serving.
                        tracing::warn!(error = %e, "ctl accept failed");
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            }
        })?;
        Ok(ControlServer { addr, thread })
    }

    /// Waits for the accept loop to end (after shutdown).
    pub fn join(self) {
        let _ = self.thread.join();
    }
}

impl Shared {
    /// Takes a new connection in (or not) and starts its thread.
    fn admit(self: Arc<Self>, stream: TcpStream, peer: SocketAddr) {
        let handle = match stream.try_clone() {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "ctl: cannot take a connection (out of file descriptors?)");
                return;
            }
        };
        let (ticket, dropped) = self.conns.admit(peer.ip(), handle);
        match dropped {
            Some(Dropped::PerAddress) => self.m.dropped_per_address.inc(),
            Some(Dropped::Capacity) => self.m.dropped_capacity.inc(),
            None => {}
        }
        let spawned = std::thread::Builder::new().name("ctl-conn".into()).spawn(move || {
            self.serve(stream, peer, ticket);
        });
        if let Err(e) = spawned {
            // The closure (stream and ticket) is dropped: the connection closes and its slot frees.
            tracing::warn!(%peer, error = %e, "ctl: cannot start a connection thread");
        }
    }

    fn serve(&self, mut s: TcpStream, peer: SocketAddr, ticket: PreauthTicket) {
        let _ = s.set_nonblocking(false);
        let _ = s.set_nodelay(true);
        let deadline = Instant::now() + self.handshake_timeout;
        let (mut sc, operator, first) = match self.handshake(&mut s, deadline) {
            Ok(h) => h,
            Err(f) => {
                // Dropped for a newer connection: counted at the door, no alert.
                if !ticket.evicted() {
                    if let Some(f) = f {
                        self.failed(peer, f);
                    }
                }
                return;
            }
        };
        drop(ticket);
        let Some(_slot) = self.conns.session() else {
            self.m.sessions_refused.inc();
            tracing::warn!(%peer, %operator, "ctl: ctl.max_sessions operator sessions open; refusing this one");
            let e = ControlResponse::Error(
                "this node serves as many operator sessions as ctl.max_sessions allows: try again shortly".into(),
            );
            let _ = self.answer(&mut s, &mut sc, &operator, first.msg_id, &e);
            return;
        };
        if let Err(e) = self.session(&mut s, &mut sc, &operator, first) {
            tracing::debug!(%peer, error = %format!("{e:#}"), "control connection ended");
        }
    }

    /// Hello, our answer and the first request, all before `deadline`:
    /// returns the channel, the operator and the opened request.
    fn handshake(
        &self,
        s: &mut TcpStream,
        deadline: Instant,
    ) -> Result<(SecureChannel, String, crate::secure::Opened), Option<Failure>> {
        let hello = read_frame_by(s, MAX_HANDSHAKE_FRAME, deadline).map_err(Failure::frame)?;
        self.precheck_hello(&hello)?;
        let mut sc = SecureChannel::new(self.id.clone(), self.ca.clone(), self.secure.clone(), &self.registry);
        let operator = sc.accept_announce(&hello, None).map_err(|e| Some(Failure::from(e)))?;
        write_frame_by(s, &sc.announce(), deadline).map_err(|e| Some(Failure::new("io", format!("{e:#}"))))?;
        let frame = read_frame_by(s, MAX_REQUEST_FRAME, deadline).map_err(Failure::frame)?;
        // The hello proved who this is; a request whose envelope names
        // someone else is refused unopened and put down to the operator who
        // sent it. Opened, its refusal named the claimed sender: a stolen
        // operator certificate could send requests that cannot open in
        // another operator's (or node's) name and have the alert blame them.
        match crate::secure::envelope::decode::<crate::secure::Envelope>(&frame) {
            Ok(e) if e.header.sender != operator => {
                let r = sc.reject_unauthorized(
                    &operator,
                    format!("{operator} sent a request claiming sender {:?}", sanitize(&e.header.sender, 64)),
                );
                return Err(Some(Failure::new("unauthorized", r.to_string())));
            }
            _ => {}
        }
        let o = sc.open(&frame, now_ns()).map_err(|e| Some(Failure::from(e)))?;
        if o.kind != PayloadKind::ControlRequest {
            return Err(Some(Failure::new("malformed", format!("{operator}: expected a control request"))));
        }
        if o.sender_role != CertRole::Operator {
            let r = sc.reject_unauthorized(
                &o.sender,
                format!("a {} certificate may not send control commands", o.sender_role),
            );
            let e = ControlResponse::Error(
                "only operator certificates (`gatewarden pki issue NAME --role operator`) may control a node".into(),
            );
            let _ = self.answer(s, &mut sc, &operator, o.msg_id, &e);
            return Err(Some(Failure::new("unauthorized", r.to_string())));
        }
        Ok((sc, operator, o))
    }

    /// The checks of [`SecureChannel::accept_announce`] that cost no key
    /// generation (decoding, the name, the certificate and the signature, all
    /// with ring), so a forged hello is refused before this side makes its
    /// own ephemeral key and signs it. The channel checks them again.
    fn precheck_hello(&self, hello: &[u8]) -> Result<(), Option<Failure>> {
        let refuse = |c: &Counter, detail: String| {
            c.inc();
            Err(Some(Failure::new("refused", detail)))
        };
        let a: Announce = match crate::secure::envelope::decode(hello) {
            Ok(a) => a,
            Err(e) => return refuse(&self.m.rejected_malformed, format!("malformed hello: {e}")),
        };
        if !crate::pki::valid_node_id(&a.node) {
            return refuse(
                &self.m.rejected_malformed,
                format!(
                    "the hello names \"{}\" ({} bytes), not a node id (1 to 64 of A-Z a-z 0-9 - _)",
                    sanitize(&a.node, 64),
                    a.node.len()
                ),
            );
        }
        let cert = match self.ca.verify(&a.cert_der) {
            Ok(c) => c,
            // A revoked certificate (issue #14) is counted as such: an operator sees a theft being tried.
            Err(e) if e.downcast_ref::<crate::pki::CertRevoked>().is_some() => {
                return refuse(&self.m.rejected_revoked, format!("{}: certificate revoked: {e:#}", a.node))
            }
            Err(e) => return refuse(&self.m.rejected_certificate, format!("{}: certificate: {e:#}", a.node)),
        };
        if cert.node != a.node {
            return refuse(
                &self.m.rejected_certificate,
                format!("the certificate is for {}, the hello claims {}", cert.node, a.node),
            );
        }
        if !crate::pki::verify_p384(&cert.key_sec1, &a.signed_bytes(), &a.signature) {
            return refuse(&self.m.rejected_signature, format!("{}: hello signature does not verify", a.node));
        }
        Ok(())
    }

    /// Serves requests until the operator closes, goes idle or misbehaves.
    fn session(
        &self,
        s: &mut TcpStream,
        sc: &mut SecureChannel,
        operator: &str,
        first: crate::secure::Opened,
    ) -> anyhow::Result<()> {
        let mut next = Some(first);
        loop {
            let o = match next.take() {
                Some(o) => o,
                None => {
                    let Ok(frame) = read_frame_by(s, MAX_REQUEST_FRAME, Instant::now() + self.idle_timeout) else {
                        return Ok(());
                    };
                    match sc.open(&frame, now_ns()) {
                        Ok(o) => o,
                        Err(e) => {
                            let detail = sanitize(&e.to_string(), MAX_PEER_TEXT);
                            self.abuse(format!("ctl: refused from operator {operator}: {detail}"), None);
                            bail!("refused: {detail}");
                        }
                    }
                }
            };
            let resp = if o.kind != PayloadKind::ControlRequest || o.sender_role != CertRole::Operator {
                ControlResponse::Error("expected a control request from an operator certificate".into())
            } else {
                match postcard::from_bytes::<ControlRequest>(&o.plaintext) {
                    Ok(req) => {
                        self.m.requests.inc();
                        tracing::info!(operator = %o.sender, ?req, "control request");
                        self.handler.handle(&req, &o.sender)
                    }
                    Err(e) => ControlResponse::Error(format!("malformed request: {e}")),
                }
            };
            self.answer(s, sc, operator, o.msg_id, &resp)?;
        }
    }

    fn answer(
        &self,
        s: &mut TcpStream,
        sc: &mut SecureChannel,
        operator: &str,
        msg_id: u64,
        resp: &ControlResponse,
    ) -> anyhow::Result<()> {
        let body = postcard::to_allocvec(resp).context("encoding the answer")?;
        let sealed = sc.seal(operator, msg_id, PayloadKind::ControlResponse, &body)?;
        write_frame_by(s, &sealed, Instant::now() + self.idle_timeout)
    }

    /// Counts a failed handshake and raises an alert when its address is due one.
    fn failed(&self, peer: SocketAddr, f: Failure) {
        if let Some((_, c)) = self.m.failures.iter().find(|(l, _)| *l == f.label) {
            c.inc();
        }
        tracing::debug!(%peer, reason = f.label, detail = %f.detail, "ctl handshake failed");
        let report = self.failures.lock().unwrap_or_else(|e| e.into_inner()).record(
            peer.ip(),
            f.detail,
            Instant::now(),
            now_ns(),
        );
        if let Some(r) = report {
            self.raise(r);
        }
    }

    /// One aggregated alert (text from [`alert_text`]).
    fn raise(&self, r: FailureReport) {
        self.m.alerts.inc();
        let text = alert_text(&r, self.alert_interval);
        self.abuse(text, r.addr);
    }

    fn abuse(&self, text: String, src: Option<IpAddr>) {
        tracing::warn!(reason = %text, "ctl: channel abuse");
        if let Some(p) = &self.handler.alerts {
            let mut a = gatewarden_proto::messages::Alert::channel_abuse(&self.id.node, now_ns(), text);
            a.src = src;
            a.dport = self.port;
            a.proto = Some(gatewarden_proto::messages::Proto::Tcp);
            p.publish(Message::Alert(a));
        }
    }
}

/// The alert sentence for a [`FailureReport`].
pub fn alert_text(r: &FailureReport, interval: Duration) -> String {
    let from = match r.addr {
        Some(a) => a.to_string(),
        None => "other addresses (more than ctl.max_alert_addresses failing)".into(),
    };
    if r.first {
        format!(
            "ctl: failed handshake from {from}: {}; further failures from there are counted, one alert per {} s",
            r.last_reason,
            interval.as_secs()
        )
    } else {
        format!(
            "ctl: {} failed handshake{} from {from} since {} (last: {})",
            r.count,
            if r.count == 1 { "" } else { "s" },
            gatewarden_core::clock::rfc3339(r.since_ns),
            r.last_reason
        )
    }
}

/// Sends one request to the node at `addr` and returns its answer.
pub fn request(
    addr: &str,
    id: Identity,
    ca: CaVerifier,
    req: &ControlRequest,
    timeout: Duration,
) -> anyhow::Result<ControlResponse> {
    use std::net::ToSocketAddrs;
    let sock = addr
        .to_socket_addrs()
        .with_context(|| format!("resolving {addr}"))?
        .next()
        .with_context(|| format!("{addr} resolves to no address"))?;
    let deadline = Instant::now() + timeout;
    let mut s = TcpStream::connect_timeout(&sock, timeout)
        .with_context(|| format!("connecting to {addr}: is `ctl.listen` set on that node and the port reachable?"))?;
    s.set_nodelay(true)?;
    let registry = Registry::new();
    let mut sc = SecureChannel::new(id, ca, SecureConfig::default(), &registry);
    write_frame_by(&mut s, &sc.announce(), deadline)?;
    let hello = read_frame_by(&mut s, MAX_HANDSHAKE_FRAME, deadline)
        .context("the node closed the connection during the handshake (is this certificate from its fleet CA?)")?;
    let node = sc.accept_announce(&hello, None).map_err(|e| anyhow::anyhow!("the node's identity was refused: {e}"))?;
    let msg_id = rand_core::RngCore::next_u64(&mut rand_core::OsRng);
    let body = postcard::to_allocvec(req).context("encoding the request")?;
    let sealed = sc.seal(&node, msg_id, PayloadKind::ControlRequest, &body)?;
    write_frame_by(&mut s, &sealed, deadline)?;
    let answer = read_frame_by(&mut s, MAX_FRAME, deadline)
        .context("no answer: the node refused the request (see its log and gatewarden_secure_rejected_total)")?;
    let o = sc.open(&answer, now_ns()).map_err(|e| anyhow::anyhow!("the answer was refused: {e}"))?;
    if o.kind != PayloadKind::ControlResponse || o.msg_id != msg_id {
        bail!("the node answered something else than our request");
    }
    postcard::from_bytes(&o.plaintext).context("malformed answer")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::test_fleet::Fleet;
    use std::sync::Mutex;

    #[derive(Default)]
    struct FakeBlocks(Mutex<Vec<BlockEntry>>);
    impl BlockControl for FakeBlocks {
        fn list(&self) -> Result<Vec<BlockEntry>, String> {
            Ok(self.0.lock().unwrap().clone())
        }
        fn block(&self, ip: IpAddr, ttl_s: u32, origin: &str) -> Result<(), String> {
            self.0.lock().unwrap().push(BlockEntry {
                target: ip.to_string(),
                expires_in_s: Some(ttl_s),
                origin: origin.into(),
                reason: String::new(),
                dropped: None,
                senders: Vec::new(),
            });
            Ok(())
        }
        fn unblock(&self, ip: IpAddr) -> Result<bool, String> {
            let mut v = self.0.lock().unwrap();
            let n = v.len();
            v.retain(|e| e.target != ip.to_string());
            Ok(v.len() != n)
        }
        fn unblock_mac(&self, mac: [u8; 6]) -> Result<bool, String> {
            let mut v = self.0.lock().unwrap();
            let n = v.len();
            let text = crate::enforce::spoof::mac_text(&mac);
            v.retain(|e| !(e.origin == "contain" && e.target == text));
            Ok(v.len() != n)
        }
    }

    fn server(f: &Fleet, blocks: Option<Arc<dyn BlockControl>>, reg: &Arc<Registry>) -> (ControlServer, Shutdown) {
        server_alerting(f, blocks, None, reg)
    }

    /// [`server`] whose channel-abuse alerts go to `alerts`.
    fn server_alerting(
        f: &Fleet,
        blocks: Option<Arc<dyn BlockControl>>,
        alerts: Option<Arc<dyn Publisher>>,
        reg: &Arc<Registry>,
    ) -> (ControlServer, Shutdown) {
        let sd = Shutdown::new();
        let handler = ControlHandler {
            status: Arc::new(|| serde_json::json!({"node": "router-1", "role": "router"})),
            blocks,
            alerts,
        };
        let cfg = CtlConfig { listen: "127.0.0.1:0".into(), ..CtlConfig::default() };
        let s = ControlServer::start(
            &cfg,
            f.identity("router-1", CertRole::Router),
            f.ca.clone(),
            SecureConfig::default(),
            handler,
            reg,
            sd.clone(),
        )
        .unwrap();
        (s, sd)
    }

    /// A stolen operator certificate (alice's) says hello as alice, then
    /// sends a request sealed by another identity: the refusal named the
    /// claimed sender ("unknown_sender from det-1"), so the alert blamed a
    /// node that sent nothing (found by review).
    #[test]
    fn a_request_naming_another_sender_than_the_hello_is_put_down_to_the_operator() {
        let f = Fleet::new();
        let reg = Registry::new();
        let bus = crate::bus::LocalBus::new(16, &reg);
        let (s, sd) = server_alerting(&f, None, Some(Arc::new(bus.clone())), &reg);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut c = TcpStream::connect(s.addr).unwrap();
        let mut alice =
            SecureChannel::new(f.identity("alice", CertRole::Operator), f.ca.clone(), SecureConfig::default(), &reg);
        write_frame_by(&mut c, &alice.announce(), deadline).unwrap();
        let server_hello = read_frame_by(&mut c, MAX_HANDSHAKE_FRAME, deadline).unwrap();
        alice.accept_announce(&server_hello, None).unwrap();
        let mut det =
            SecureChannel::new(f.identity("det-1", CertRole::Detector), f.ca.clone(), SecureConfig::default(), &reg);
        det.accept_announce(&server_hello, None).unwrap();
        let req = postcard::to_allocvec(&ControlRequest::Status).unwrap();
        let env = det.seal("router-1", 1, PayloadKind::ControlRequest, &req).unwrap();
        write_frame_by(&mut c, &env, deadline).unwrap();
        let _ = read_frame_by(&mut c, MAX_REQUEST_FRAME, deadline);
        let t = Instant::now();
        while bus.alerts.is_empty() && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let a = bus.alerts.receiver().try_recv().expect("a channel-abuse alert");
        assert!(
            a.reason.contains("alice") && !a.reason.contains("det-1 ") && !a.reason.contains("from det-1"),
            "{}",
            a.reason
        );
        sd.trigger();
        s.join();
    }

    #[test]
    fn operator_gets_status_and_drives_blocks() {
        let f = Fleet::new();
        let reg = Registry::new();
        let (s, sd) = server(&f, Some(Arc::new(FakeBlocks::default())), &reg);
        let addr = s.addr.to_string();
        let op = || f.identity("alice", CertRole::Operator);
        let t = Duration::from_secs(5);
        match request(&addr, op(), f.ca.clone(), &ControlRequest::Status, t).unwrap() {
            ControlResponse::Status(j) => assert!(j.contains("router-1"), "{j}"),
            other => panic!("{other:?}"),
        }
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(
            request(&addr, op(), f.ca.clone(), &ControlRequest::Block { ip, ttl_s: 5400 }, t).unwrap(),
            ControlResponse::Done(format!("blocked {ip} for 1h30m")),
            "durations read as they are written (`--ttl 1h30m`)"
        );
        match request(&addr, op(), f.ca.clone(), &ControlRequest::Blocks, t).unwrap() {
            ControlResponse::Blocks(v) => {
                assert_eq!((v[0].target.as_str(), v[0].origin.as_str()), ("198.51.100.7", "operator:alice"))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            request(&addr, op(), f.ca.clone(), &ControlRequest::Unblock { ip }, t).unwrap(),
            ControlResponse::Done(format!("unblocked {ip}"))
        );
        assert_eq!(reg.snapshot()["gatewarden_ctl_requests_total"], 4.0);
        sd.trigger();
        s.join();
    }

    /// Red-team finding: `ctl blocks` returned every entry, and past about
    /// 10 000 (a feed, a long attack: the sets hold 65 536) the answer
    /// outgrew the frame the client reads, so the operator saw nothing at
    /// all exactly when it mattered. The answer now holds the first rows,
    /// the operator's own first, and the total.
    #[test]
    fn a_router_holding_twenty_thousand_blocks_still_answers_ctl_blocks() {
        let f = Fleet::new();
        let reg = Registry::new();
        let fake = FakeBlocks::default();
        {
            let mut v = fake.0.lock().unwrap();
            for i in 0..20_000u32 {
                // Every row as long as a row gets: a 256-byte reason and
                // two 64-byte senders (honest detector rows have less).
                v.push(BlockEntry {
                    target: format!("10.{}.{}.0/24", i >> 8, i & 255),
                    expires_in_s: Some(3600),
                    origin: "detector".into(),
                    reason: "x".repeat(256),
                    dropped: Some(gatewarden_proto::messages::Dropped::saturating(u64::MAX, u64::MAX, u64::MAX)),
                    senders: vec!["d".repeat(64), "e".repeat(64)],
                });
            }
            v.push(BlockEntry {
                target: "198.51.100.7".into(),
                expires_in_s: Some(60),
                origin: "operator:alice".into(),
                reason: "ctl alice".into(),
                dropped: None,
                senders: Vec::new(),
            });
        }
        let (s, sd) = server(&f, Some(Arc::new(fake)), &reg);
        let addr = s.addr.to_string();
        let op = || f.identity("alice", CertRole::Operator);
        match request(&addr, op(), f.ca.clone(), &ControlRequest::Blocks, Duration::from_secs(10)).unwrap() {
            ControlResponse::BlocksPartial { shown, total } => {
                assert_eq!((shown.len(), total), (MAX_CTL_BLOCK_ROWS, 20_001));
                assert_eq!(shown[0].target, "198.51.100.7", "the operator's own block comes first");
            }
            other => panic!("{:?}", std::mem::discriminant(&other)),
        }
        sd.trigger();
        s.join();
    }

    #[test]
    fn an_operator_lifts_a_contained_mac_and_gets_clear_errors_for_others() {
        let f = Fleet::new();
        let reg = Registry::new();
        let fake = FakeBlocks::default();
        fake.0.lock().unwrap().push(BlockEntry {
            target: "02:00:00:00:00:66".into(),
            expires_in_s: Some(3000),
            origin: "contain".into(),
            reason: "spoofing: forged 192.0.2.10".into(),
            dropped: None,
            senders: Vec::new(),
        });
        let (s, sd) = server(&f, Some(Arc::new(fake)), &reg);
        let addr = s.addr.to_string();
        let ask = |mac: &str| {
            let req = ControlRequest::UnblockMac { mac: mac.into() };
            request(&addr, f.identity("alice", CertRole::Operator), f.ca.clone(), &req, Duration::from_secs(5)).unwrap()
        };
        assert_eq!(
            ask("02-00-00-00-00-66"),
            ControlResponse::Done("lifted the containment of 02:00:00:00:00:66".into())
        );
        match ask("02:00:00:00:00:66") {
            ControlResponse::Error(e) => assert!(e.contains("is not contained"), "{e}"),
            other => panic!("{other:?}"),
        }
        match ask("02:00:00:00:66\n") {
            ControlResponse::Error(e) => assert!(e.contains("not a MAC address") && !e.contains('\n'), "{e}"),
            other => panic!("{other:?}"),
        }
        // A detector certificate may not lift one.
        let req = ControlRequest::UnblockMac { mac: "02:00:00:00:00:66".into() };
        let det = f.identity("det-1", CertRole::Detector);
        match request(&addr, det, f.ca.clone(), &req, Duration::from_secs(5)).unwrap() {
            ControlResponse::Error(e) => assert!(e.contains("operator"), "{e}"),
            other => panic!("{other:?}"),
        }
        sd.trigger();
        s.join();
    }

    #[test]
    fn non_operators_and_strangers_are_refused_and_counted() {
        let f = Fleet::new();
        let reg = Registry::new();
        let (s, sd) = server(&f, None, &reg);
        let addr = s.addr.to_string();
        let t = Duration::from_secs(5);
        let det = f.identity("det-1", CertRole::Detector);
        match request(&addr, det, f.ca.clone(), &ControlRequest::Status, t).unwrap() {
            ControlResponse::Error(e) => assert!(e.contains("operator"), "{e}"),
            other => panic!("{other:?}"),
        }
        let other = Fleet::new();
        let stranger = other.identity("mallory", CertRole::Operator);
        let err = request(&addr, stranger, f.ca.clone(), &ControlRequest::Status, t).unwrap_err();
        assert!(format!("{err:#}").contains("handshake"), "{err:#}");
        let snap = reg.snapshot();
        assert_eq!(snap["gatewarden_secure_rejected_total{reason=unauthorized}"], 1.0);
        assert_eq!(snap["gatewarden_secure_rejected_total{reason=bad_certificate}"], 1.0);
        // Without enforcement wired, block commands say so.
        let op = f.identity("alice", CertRole::Operator);
        match request(&addr, op, f.ca.clone(), &ControlRequest::Blocks, t).unwrap() {
            ControlResponse::Error(e) => assert!(e.contains("enforcement"), "{e}"),
            other => panic!("{other:?}"),
        }
        sd.trigger();
        s.join();
    }
}
