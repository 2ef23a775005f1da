//! `gatewarden ctl blocks|block|unblock` (addresses and contained MACs) on a running router: the
//! [`BlockControl`] the control endpoint (`gatewarden ctl`) calls, implemented on
//! top of the enforcement thread (`service.rs`).
//!
//! Why through the thread and not a second [`Blocker`]: the thread owns the
//! netlink socket in the router's network namespace and the escalation
//! history; an operator's `unblock` must also make the detector's next
//! verdict for that address start again at the base TTL. Operator blocks go
//! to the `admin` sets (`block4_admin`, `block6_admin`), so `nft list ruleset`
//! and the per-origin drop counters tell them apart from detector verdicts.

use std::net::IpAddr;
use std::sync::mpsc;
use std::time::Duration;

/// What the router's enforcement layer implements for `ctl blocks|block|unblock`.
pub trait BlockControl: Send + Sync {
    /// Every address blocked now.
    fn list(&self) -> Result<Vec<BlockEntry>, String>;
    /// Adds or refreshes a block.
    fn block(&self, ip: IpAddr, ttl_s: u32, origin: &str) -> Result<(), String>;
    /// Removes a block; Ok(false) if there was none.
    fn unblock(&self, ip: IpAddr) -> Result<bool, String>;
    /// Lifts a MAC's containment; Ok(false) if it was not contained.
    fn unblock_mac(&self, mac: [u8; 6]) -> Result<bool, String> {
        let _ = mac;
        Err("this node's enforcement cannot lift MAC containments".into())
    }
}

use super::blocker::{BlockOutcome, Blocker};
use super::ruleset::Origin;
use gatewarden_proto::messages::{BlockEntry, Dropped};

/// How long a ctl request waits for the enforcement thread.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest block an operator may ask for (a week); longer TTLs are refused, not clipped.
pub const MAX_TTL_S: u32 = 7 * 24 * 3600;

/// One operator request, executed on the enforcement thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlOp {
    /// Every active block.
    List,
    /// Block `ip` in the admin set for `ttl_s` seconds; `who` becomes the element comment.
    Block {
        /// The address.
        ip: IpAddr,
        /// Seconds.
        ttl_s: u32,
        /// Who asked (e.g. `operator:alice`).
        who: String,
    },
    /// Remove `ip` from the detector and admin sets.
    Unblock {
        /// The address.
        ip: IpAddr,
    },
    /// Lift the containment of a LAN MAC (`contain_mac`).
    UnblockMac {
        /// The MAC.
        mac: super::spoof::Mac,
    },
}

/// The enforcement thread's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlReply {
    /// Answer to [`ControlOp::List`].
    List(Vec<BlockEntry>),
    /// Answer to [`ControlOp::Block`].
    Blocked,
    /// Answer to [`ControlOp::Unblock`]: whether it was blocked.
    Unblocked(bool),
    /// Refused or failed, with what to do.
    Error(String),
}

// Every sender an element keeps passes the decoder's bound on a block entry.
const _: () = assert!(crate::ruleset::MAX_SENDERS <= gatewarden_proto::messages::MAX_BLOCK_SENDERS);

/// Runs `op` against the blocker (on the enforcement thread).
pub fn apply(blocker: &mut Blocker, op: ControlOp) -> ControlReply {
    match op {
        ControlOp::List => match blocker.list() {
            Ok(list) => {
                let now_s = gatewarden_core::clock::unix_now_ms() / 1000;
                let mut out: Vec<BlockEntry> =
                    list.into_iter()
                        .map(|e| BlockEntry {
                            // Saturated to what every decoder accepts (2^53 - 1).
                            dropped: e.dropped_packets.zip(e.dropped_bytes).map(|(packets, bytes)| {
                                Dropped::saturating(packets, bytes, now_s.saturating_sub(e.age_s))
                            }),
                            target: e.target,
                            expires_in_s: (e.timeout_s > 0).then(|| e.remaining_s.min(u64::from(u32::MAX)) as u32),
                            origin: e.origin.as_str().to_string(),
                            reason: e.reason,
                            senders: e.senders,
                        })
                        .collect();
                // Contained MACs are rows too (origin `contain`, the MAC as target, what it
                // forged in the reason): clients and monitors show them as rows, with no count.
                match blocker.contained_list(gatewarden_core::clock::unix_now_ms()) {
                    Ok(macs) => out.extend(macs.into_iter().map(|c| BlockEntry {
                        target: c.mac,
                        expires_in_s: Some(c.remaining_s.min(u64::from(u32::MAX)) as u32),
                        origin: super::persist::CONTAIN_ORIGIN.to_string(),
                        reason: c.reason,
                        dropped: None,
                        senders: Vec::new(),
                    })),
                    Err(e) => return ControlReply::Error(format!("cannot read the contained MACs: {e}")),
                }
                ControlReply::List(out)
            }
            Err(e) => ControlReply::Error(format!("cannot read the block sets: {e}")),
        },
        ControlOp::Block { ip, ttl_s, who } => {
            let reason = format!("ctl {who}");
            match blocker.block(ip, Duration::from_secs(u64::from(ttl_s)), Origin::Admin, &reason) {
                Ok(BlockOutcome::Blocked { .. }) => ControlReply::Blocked,
                Ok(BlockOutcome::Refused { allowed_by, why }) => ControlReply::Error(match why {
                    crate::Protection::Allowlist => format!(
                        "{ip} is on the allowlist ({allowed_by}) and is never blocked; remove it from enforce.allowlist first"
                    ),
                    other => format!("{ip} is never blocked: {} ({allowed_by})", other.describe()),
                }),
                Err(e) => ControlReply::Error(format!("block {ip} failed: {e}")),
            }
        }
        ControlOp::Unblock { ip } => match blocker.unblock(ip) {
            Ok(origins) => ControlReply::Unblocked(!origins.is_empty()),
            Err(e) => ControlReply::Error(format!("unblock {ip} failed: {e}")),
        },
        ControlOp::UnblockMac { mac } => match blocker.uncontain(mac) {
            Ok(was) => ControlReply::Unblocked(was),
            Err(e) => ControlReply::Error(format!("unblock {} failed: {e}", super::spoof::mac_text(&mac))),
        },
    }
}

/// [`BlockControl`] for the control endpoint: hands each request to the
/// enforcement thread and waits (at most [`REPLY_TIMEOUT`]) for its answer.
pub struct EnforceControl {
    send: Box<dyn Fn(ControlOp, mpsc::Sender<ControlReply>) -> bool + Send + Sync>,
}

impl std::fmt::Debug for EnforceControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnforceControl").finish_non_exhaustive()
    }
}

impl EnforceControl {
    /// Control over a thread that `send` hands each request to (with where its
    /// answer goes); `false`: the thread is gone. [`crate::service::EnforceService::control`] makes one.
    pub fn new(send: impl Fn(ControlOp, mpsc::Sender<ControlReply>) -> bool + Send + Sync + 'static) -> EnforceControl {
        EnforceControl { send: Box::new(send) }
    }

    fn ask(&self, op: ControlOp) -> Result<ControlReply, String> {
        let (reply_tx, reply_rx) = mpsc::channel();
        if !(self.send)(op, reply_tx) {
            return Err("the router's enforcement thread has stopped (see the router's log)".into());
        }
        reply_rx.recv_timeout(REPLY_TIMEOUT).map_err(|_| {
            "the enforcement thread did not answer within 5 s (busy or stopped; the request is queued and may still be carried out: list the blocks to see, and the router's log)".into()
        })
    }
}

impl BlockControl for EnforceControl {
    fn list(&self) -> Result<Vec<BlockEntry>, String> {
        match self.ask(ControlOp::List)? {
            ControlReply::List(v) => Ok(v),
            ControlReply::Error(e) => Err(e),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }

    fn block(&self, ip: IpAddr, ttl_s: u32, origin: &str) -> Result<(), String> {
        if ttl_s == 0 || ttl_s > MAX_TTL_S {
            return Err(format!("--ttl {ttl_s}: give 1 to {MAX_TTL_S} seconds (a week)"));
        }
        match self.ask(ControlOp::Block { ip, ttl_s, who: origin.to_string() })? {
            ControlReply::Blocked => Ok(()),
            ControlReply::Error(e) => Err(e),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }

    fn unblock(&self, ip: IpAddr) -> Result<bool, String> {
        match self.ask(ControlOp::Unblock { ip })? {
            ControlReply::Unblocked(b) => Ok(b),
            ControlReply::Error(e) => Err(e),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }

    fn unblock_mac(&self, mac: super::spoof::Mac) -> Result<bool, String> {
        match self.ask(ControlOp::UnblockMac { mac })? {
            ControlReply::Unblocked(b) => Ok(b),
            ControlReply::Error(e) => Err(e),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }
}
