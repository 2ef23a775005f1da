//! Enforcement: where a block rule is written. nftables is programmed over
//! netlink in pure Rust (no `nft` process, no libnftnl).
//!
//! | file | what it holds |
//! |---|---|
//! | `netlink.rs` | the socket, attribute encoding, batch transactions, dumps |
//! | `expr.rs` | rule expressions (payload, cmp, lookup, counter, limit, dynset, ct, log, verdicts) |
//! | `ruleset.rs` | the `inet gatewarden` table: sets, chains, rules, counters |
//! | `blocker.rs` | block / unblock / list, escalation, allowlist, size cap, feeds, fail-closed, group rules |
//! | `feeds.rs` | CIDRs, blocklist files, durations |
//! | `service.rs` | the router's enforcement thread: verdicts in, blocks and metrics out |
//! | `spoof.rs` | LAN IP ↔ MAC bindings (leases, neighbour table, first sightings), forged-source checks per frame, the verdict gate's source classes |
//! | `control.rs` | `gatewarden ctl` blocks, block and unblock on top of the enforcement thread |

pub mod blocker;
pub mod control;
pub mod expr;
pub mod feeds;
pub mod netlink;
pub mod persist;
pub mod ruleset;
pub mod service;
pub mod spoof;

pub use blocker::{BlockEntry, BlockOutcome, Blocker, Protection, Settings};
pub use ruleset::Origin;
