//! gatewarden-core: the bottom layer every other gatewarden crate may use,
//! and which uses none of them.
//!
//! What lives here is what more than one layer needs and what carries no
//! knowledge of packets, verdicts or roles: the wall clock ([`clock`]),
//! addresses, networks and MACs ([`net`]), durations as people write them
//! ([`duration`]), bounded tables ([`recency`], [`lru`]), a token bucket
//! ([`token_bucket`]), a damped mean and variance ([`ewma`]), metrics
//! ([`metrics`]), files written atomically ([`atomic_file`]) or rotated
//! ([`logfile`]), and the process's shutdown flag ([`shutdown`]).
#![forbid(unsafe_code)]

pub mod atomic_file;
pub mod clock;
pub mod duration;
pub mod ewma;
pub mod floats;
pub mod identity;
pub mod logfile;
pub mod lru;
pub mod metrics;
pub mod net;
pub mod recency;
pub mod seen_before;
pub mod shutdown;
pub mod token_bucket;
