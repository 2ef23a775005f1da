//! Enforcement: where a block rule is written. nftables is programmed over
//! netlink in pure Rust (no `nft` process, no libnftnl).
//!
//! | file | what it holds |
//! |---|---|
//! | gatewarden-netlink | the socket, attribute encoding, batch transactions, dumps; rule expressions; rtnetlink queries |
//! | `ruleset.rs` | the `inet gatewarden` table: sets, chains, rules, counters |
//! | `blocker.rs` | block / unblock / list, escalation, allowlist, size cap, feeds, fail-closed, group rules |
//! | `feeds.rs` | blocklist files (CIDRs and durations are gatewarden-core's) |
//! | `service.rs` | the router's enforcement thread: verdicts in, blocks and metrics out |
//! | `spoof.rs` | LAN IP ↔ MAC bindings (leases, neighbour table, first sightings), forged-source checks per frame, the verdict gate's source classes |
//! | `control.rs` | `gatewarden ctl` blocks, block and unblock on top of the enforcement thread |
//!
//! gatewarden-enforce depends on gatewarden-core, gatewarden-proto and
//! gatewarden-netlink; the node hands the enforcement thread its verdicts
//! and a [`service::Reports`] for what it has to say.
#![forbid(unsafe_code)]

pub mod blocker;
pub mod config;
pub mod control;
/// nftables expressions (the gatewarden-netlink crate).
pub use gatewarden_netlink::expr;
pub mod feeds;
/// The netlink socket and messages (the gatewarden-netlink crate).
pub use gatewarden_netlink as netlink;
pub mod persist;
pub mod ruleset;
pub mod service;
pub mod spoof;

pub use blocker::{BlockOutcome, Blocker, KernelBlock, Protection, Settings};
pub use ruleset::Origin;
