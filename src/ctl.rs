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

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::bus::messages::Message;
use crate::bus::Publisher;
use crate::metrics::Registry;
use crate::pki::{CaVerifier, CertRole, Identity};
use crate::secure::{now_ns, PayloadKind, SecureChannel, SecureConfig};
use crate::shutdown::Shutdown;

/// Largest frame on a control connection.
pub const MAX_FRAME: usize = 1 << 20;
/// Most control connections served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 8;

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
}

/// One blocked address (or, for imported feeds, network or range).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockEntry {
    /// The address, CIDR or range, as the router's block set holds it.
    pub target: String,
    /// Seconds until the kernel drops the block, if it has a timeout.
    pub expires_in_s: Option<u32>,
    /// Which block set holds it (`detector`, `admin`, `feed`).
    pub origin: String,
    /// Why (the element's comment: the verdict reason, or which operator asked).
    pub reason: String,
}

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
}

/// What the router's enforcement layer implements for `ctl blocks|block|unblock`.
pub trait BlockControl: Send + Sync {
    /// Every address blocked now.
    fn list(&self) -> Result<Vec<BlockEntry>, String>;
    /// Adds or refreshes a block.
    fn block(&self, ip: IpAddr, ttl_s: u32, origin: &str) -> Result<(), String>;
    /// Removes a block; Ok(false) if there was none.
    fn unblock(&self, ip: IpAddr) -> Result<bool, String>;
}

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
                Some(b) => b.list().map(ControlResponse::Blocks).unwrap_or_else(ControlResponse::Error),
                None => no_blocks(),
            },
            ControlRequest::Block { ip, ttl_s } => match &self.blocks {
                Some(b) => match b.block(*ip, *ttl_s, &format!("operator:{operator}")) {
                    Ok(()) => ControlResponse::Done(format!("blocked {ip} for {ttl_s} s")),
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
        }
    }
}

fn read_frame(s: &mut TcpStream) -> anyhow::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).context("reading a frame length")?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        bail!("frame of {len} bytes exceeds {MAX_FRAME}");
    }
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf).context("reading a frame")?;
    Ok(buf)
}

fn write_frame(s: &mut TcpStream, b: &[u8]) -> anyhow::Result<()> {
    s.write_all(&(b.len() as u32).to_be_bytes())?;
    s.write_all(b)?;
    s.flush()?;
    Ok(())
}

/// Everything a control server needs.
pub struct ControlServer {
    /// The address it listens on.
    pub addr: SocketAddr,
    thread: std::thread::JoinHandle<()>,
}

impl ControlServer {
    /// Listens on `listen` and serves until `shutdown`.
    pub fn start(
        listen: &str,
        id: Identity,
        ca: CaVerifier,
        cfg: SecureConfig,
        handler: ControlHandler,
        registry: &Arc<Registry>,
        shutdown: Shutdown,
    ) -> anyhow::Result<ControlServer> {
        let listener =
            TcpListener::bind(listen).with_context(|| format!("ctl.listen {listen}: cannot listen (port in use?)"))?;
        listener.set_nonblocking(true).context("ctl listener")?;
        let addr = listener.local_addr()?;
        let registry = registry.clone();
        let active = Arc::new(AtomicUsize::new(0));
        let requests = registry.counter("gatewarden_ctl_requests_total", "Control requests answered.", &[]);
        let thread = std::thread::Builder::new().name("ctl".into()).spawn(move || {
            while !shutdown.is_triggered() {
                match listener.accept() {
                    Ok((stream, peer)) => {
                        if active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
                            tracing::warn!(%peer, "too many control connections; closing this one");
                            continue;
                        }
                        active.fetch_add(1, Ordering::SeqCst);
                        let (id, ca, cfg, handler, registry, active, requests) = (
                            id.clone(),
                            ca.clone(),
                            cfg.clone(),
                            handler.clone(),
                            registry.clone(),
                            active.clone(),
                            requests.clone(),
                        );
                        let _ = std::thread::Builder::new().name("ctl-conn".into()).spawn(move || {
                            let mut sc = SecureChannel::new(id, ca, cfg, &registry);
                            if let Err(e) = serve_one(stream, &mut sc, &handler, &requests) {
                                tracing::debug!(%peer, error = %format!("{e:#}"), "control connection ended");
                            }
                            active.fetch_sub(1, Ordering::SeqCst);
                        });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    Err(e) => {
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

fn abuse(handler: &ControlHandler, sc: &SecureChannel, peer: &str, reason: String) {
    tracing::warn!(peer, %reason, "control request refused");
    if let Some(p) = &handler.alerts {
        let now = now_ns();
        p.publish(Message::Alert(crate::secure::channel_abuse_alert(sc.node(), now, format!("ctl: {reason}"))));
    }
}

fn serve_one(
    mut s: TcpStream,
    sc: &mut SecureChannel,
    handler: &ControlHandler,
    requests: &crate::metrics::Counter,
) -> anyhow::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_nodelay(true)?;
    let hello = read_frame(&mut s)?;
    let operator = match sc.accept_announce(&hello, None) {
        Ok(n) => n,
        Err(e) => {
            abuse(handler, sc, e.claimed.as_deref().unwrap_or("?"), e.to_string());
            bail!("handshake refused: {e}");
        }
    };
    write_frame(&mut s, &sc.announce())?;
    loop {
        let Ok(frame) = read_frame(&mut s) else { return Ok(()) };
        let o = match sc.open(&frame, now_ns()) {
            Ok(o) => o,
            Err(e) => {
                abuse(handler, sc, &operator, e.to_string());
                bail!("refused: {e}");
            }
        };
        let resp = if o.kind != PayloadKind::ControlRequest {
            ControlResponse::Error("expected a control request".into())
        } else if o.sender_role != CertRole::Operator {
            let r = sc.reject_unauthorized(
                &o.sender,
                format!("a {} certificate may not send control commands", o.sender_role),
            );
            abuse(handler, sc, &o.sender, r.to_string());
            ControlResponse::Error(
                "only operator certificates (`gatewarden pki issue NAME --role operator`) may control a node".into(),
            )
        } else {
            match postcard::from_bytes::<ControlRequest>(&o.plaintext) {
                Ok(req) => {
                    requests.inc();
                    tracing::info!(operator = %o.sender, ?req, "control request");
                    handler.handle(&req, &o.sender)
                }
                Err(e) => ControlResponse::Error(format!("malformed request: {e}")),
            }
        };
        let body = postcard::to_allocvec(&resp).expect("responses are encodable");
        let sealed = sc.seal(&operator, o.msg_id, PayloadKind::ControlResponse, &body)?;
        write_frame(&mut s, &sealed)?;
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
    let mut s = TcpStream::connect_timeout(&sock, timeout)
        .with_context(|| format!("connecting to {addr}: is `ctl.listen` set on that node and the port reachable?"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_nodelay(true)?;
    let registry = Registry::new();
    let mut sc = SecureChannel::new(id, ca, SecureConfig::default(), &registry);
    write_frame(&mut s, &sc.announce())?;
    let hello = read_frame(&mut s)
        .context("the node closed the connection during the handshake (is this certificate from its fleet CA?)")?;
    let node = sc.accept_announce(&hello, None).map_err(|e| anyhow::anyhow!("the node's identity was refused: {e}"))?;
    let msg_id = rand_core::RngCore::next_u64(&mut rand_core::OsRng);
    let body = postcard::to_allocvec(req).expect("requests are encodable");
    let sealed = sc.seal(&node, msg_id, PayloadKind::ControlRequest, &body)?;
    write_frame(&mut s, &sealed)?;
    let answer = read_frame(&mut s)
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
    use crate::secure::tests::Fleet;
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
            });
            Ok(())
        }
        fn unblock(&self, ip: IpAddr) -> Result<bool, String> {
            let mut v = self.0.lock().unwrap();
            let n = v.len();
            v.retain(|e| e.target != ip.to_string());
            Ok(v.len() != n)
        }
    }

    fn server(f: &Fleet, blocks: Option<Arc<dyn BlockControl>>, reg: &Arc<Registry>) -> (ControlServer, Shutdown) {
        let sd = Shutdown::new();
        let handler = ControlHandler {
            status: Arc::new(|| serde_json::json!({"node": "router-1", "role": "router"})),
            blocks,
            alerts: None,
        };
        let s = ControlServer::start(
            "127.0.0.1:0",
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
        assert!(matches!(
            request(&addr, op(), f.ca.clone(), &ControlRequest::Block { ip, ttl_s: 60 }, t).unwrap(),
            ControlResponse::Done(_)
        ));
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
