//! A budget of key announcements per node, spent before any verification.
//!
//! A key announcement that is not a byte-identical repeat costs its receiver
//! a CA check and a signature check (two P-384 verifications) and, if the key
//! is new, a resend of what waits in the outbox for that node. A node holding
//! a stolen certificate can mint a fresh key per message, so every node gets
//! a budget: `burst` announcements at once, then one per `refill` (a token
//! bucket, kept as one "theoretical arrival time" per node, GCRA). One over
//! the budget is refused unverified; the newest refused one is kept (one per
//! node, at most [`MAX_DEFERRED_BYTES`]) and tried again once the budget
//! allows ([`AnnounceLimiter::due`]), so a node that really did restart
//! several times in a row is still learned, late rather than never: its
//! retained announcement would otherwise only come back when the receiver
//! reconnects or the node rotates again.
//!
//! The budget is the node the transport vouches for (on MQTT the topic's node
//! level, which the broker's ACL ties to the publisher's certificate), so one
//! certificate cannot spend another node's budget. The table holds at most
//! `capacity` nodes: a full table first forgets nodes whose budget is whole
//! again (they lose nothing), then gives a node the receiver already holds a
//! key from (a member) the place of one it does not; any other newcomer
//! shares one overflow budget, so a flood of made-up names grows neither
//! the table nor the work past `capacity + 1` budgets.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Largest announcement kept to try again later (a P-384 certificate plus
/// key and signature is about 1 KiB); larger ones are refused and not kept,
/// so the deferred copies stay under `capacity` × 4 KiB.
pub const MAX_DEFERRED_BYTES: usize = 4096;

#[derive(Debug, Clone)]
struct Bucket {
    /// When the budget would be whole again if nothing more came (GCRA's
    /// theoretical arrival time); at or before now, the bucket is full.
    tat: Instant,
    /// Announcements refused since the last one let through.
    refused: u64,
    /// The newest refused announcement, to try again when a token is back.
    deferred: Option<Vec<u8>>,
}

impl Bucket {
    fn fresh(now: Instant) -> Bucket {
        Bucket { tat: now, refused: 0, deferred: None }
    }
}

/// Over budget: why, for the rejection's detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// When the next announcement from this node will be let through.
    pub retry_in: Duration,
    /// How many were refused since the last one let through (this one included).
    pub refused: u64,
    /// The table was full of busy budgets: this node shares the overflow budget (and nothing is kept for it).
    pub shared: bool,
}

/// Per-node budgets of key announcements (see the module documentation).
#[derive(Debug)]
pub struct AnnounceLimiter {
    burst: u32,
    refill: Duration,
    capacity: usize,
    buckets: HashMap<String, Bucket>,
    overflow: Bucket,
    deferred: usize,
}

impl AnnounceLimiter {
    /// `burst` announcements at once (at least 1), then one per `refill`
    /// (zero: no limit), for at most `capacity` nodes (at least 1).
    pub fn new(burst: u32, refill: Duration, capacity: usize, now: Instant) -> AnnounceLimiter {
        AnnounceLimiter {
            burst: burst.max(1),
            refill,
            capacity: capacity.max(1),
            buckets: HashMap::new(),
            overflow: Bucket::fresh(now),
            deferred: 0,
        }
    }

    /// How far ahead of now a bucket's arrival time may be and still let one through.
    fn tolerance(&self) -> Duration {
        self.refill * (self.burst - 1)
    }

    /// Spends one of `node`'s budget, or says it is spent. `member` says
    /// whether the receiver holds a key from a node (who may take a
    /// stranger's place in a full table).
    pub fn admit(&mut self, node: &str, now: Instant, member: impl Fn(&str) -> bool) -> Result<(), Limited> {
        let (tolerance, refill) = (self.tolerance(), self.refill);
        let shared = !self.buckets.contains_key(node) && !self.make_room(node, now, &member);
        let bucket = if shared {
            &mut self.overflow
        } else {
            self.buckets.entry(node.to_string()).or_insert_with(|| Bucket::fresh(now))
        };
        let ahead = bucket.tat.saturating_duration_since(now);
        if ahead > tolerance {
            bucket.refused += 1;
            return Err(Limited { retry_in: ahead - tolerance, refused: bucket.refused, shared });
        }
        bucket.tat = bucket.tat.max(now) + refill;
        bucket.refused = 0;
        Ok(())
    }

    /// Whether `node` may get a place of its own in the table.
    fn make_room(&mut self, node: &str, now: Instant, member: &impl Fn(&str) -> bool) -> bool {
        if self.buckets.len() < self.capacity {
            return true;
        }
        // A whole budget with nothing deferred is what a new one would be: forget those.
        self.buckets.retain(|_, b| b.tat > now || b.deferred.is_some());
        if self.buckets.len() < self.capacity {
            return true;
        }
        if !member(node) {
            return false;
        }
        let Some(stranger) = self.buckets.keys().find(|n| !member(n)).cloned() else { return false };
        if self.buckets.remove(&stranger).is_some_and(|b| b.deferred.is_some()) {
            self.deferred -= 1;
        }
        true
    }

    /// Keeps `bytes` (an announcement [`Self::admit`] just refused for
    /// `node`) to try again later, in place of any kept before; returns
    /// whether it was kept (not when `node` shares the overflow budget, nor
    /// over [`MAX_DEFERRED_BYTES`]).
    pub fn defer(&mut self, node: &str, bytes: &[u8]) -> bool {
        let Some(b) = self.buckets.get_mut(node) else { return false };
        if bytes.len() > MAX_DEFERRED_BYTES {
            return false;
        }
        if b.deferred.replace(bytes.to_vec()).is_none() {
            self.deferred += 1;
        }
        true
    }

    /// Drops what is kept for `node`: an announcement from it that arrived
    /// later was let through, so the kept one is older news.
    pub fn settled(&mut self, node: &str) {
        if self.buckets.get_mut(node).and_then(|b| b.deferred.take()).is_some() {
            self.deferred -= 1;
        }
    }

    /// Takes the kept announcements whose node's budget allows one now, to be
    /// checked again (through [`Self::admit`], which then lets them through).
    pub fn due(&mut self, now: Instant) -> Vec<(String, Vec<u8>)> {
        if self.deferred == 0 {
            return Vec::new();
        }
        let tolerance = self.tolerance();
        let mut out = Vec::new();
        for (node, b) in self.buckets.iter_mut() {
            if b.deferred.is_some() && b.tat.saturating_duration_since(now) <= tolerance {
                out.extend(b.deferred.take().map(|bytes| (node.clone(), bytes)));
            }
        }
        self.deferred -= out.len();
        out
    }

    /// How many nodes have a budget of their own (at most `capacity`).
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no node has a budget of its own yet.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// How many refused announcements are kept to try again.
    pub fn deferred(&self) -> usize {
        self.deferred
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn nobody(_: &str) -> bool {
        false
    }

    #[test]
    fn a_burst_then_one_per_refill() {
        let t0 = Instant::now();
        let mut l = AnnounceLimiter::new(3, 5 * S, 16, t0);
        for _ in 0..3 {
            assert!(l.admit("d1", t0, nobody).is_ok());
        }
        let e = l.admit("d1", t0, nobody).unwrap_err();
        assert_eq!(e, Limited { retry_in: 5 * S, refused: 1, shared: false });
        assert_eq!(l.admit("d1", t0 + 4 * S, nobody).unwrap_err().refused, 2);
        assert!(l.admit("d1", t0 + 5 * S, nobody).is_ok(), "one token back after one refill");
        assert!(l.admit("d1", t0 + 5 * S, nobody).is_err());
        // Another node's budget is its own.
        assert!(l.admit("r1", t0, nobody).is_ok());
        // A long quiet spell gives back the burst, not more.
        let later = t0 + 3600 * S;
        assert_eq!((0..10).filter(|_| l.admit("d1", later, nobody).is_ok()).count(), 3);
    }

    #[test]
    fn a_zero_refill_means_no_limit() {
        let t0 = Instant::now();
        let mut l = AnnounceLimiter::new(1, Duration::ZERO, 4, t0);
        assert!((0..1000).all(|_| l.admit("d1", t0, nobody).is_ok()));
    }

    #[test]
    fn made_up_names_share_one_budget_once_the_table_is_full() {
        let t0 = Instant::now();
        let mut l = AnnounceLimiter::new(2, 5 * S, 8, t0);
        let admitted = (0..10_000).filter(|i| l.admit(&format!("ghost-{i}"), t0, nobody).is_ok()).count();
        assert_eq!(l.len(), 8, "the table never grows past its capacity");
        assert_eq!(admitted, 8 + 2, "one each for the table, then the shared overflow budget");
        let e = l.admit("ghost-x", t0, nobody).unwrap_err();
        assert!(e.shared && !l.defer("ghost-x", b"kept?"), "nothing is kept for a node without a place");
        // Once their budgets are whole again, they make way.
        assert!(l.admit("fresh", t0 + 5 * S, nobody).is_ok());
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn a_member_takes_a_strangers_place_but_not_another_members() {
        let t0 = Instant::now();
        let mut l = AnnounceLimiter::new(2, 5 * S, 4, t0);
        let member = |n: &str| n.starts_with("router");
        assert!(l.admit("router-1", t0, member).is_ok());
        for i in 0..100 {
            let _ = l.admit(&format!("ghost-{i}"), t0, member);
        }
        assert!(l.admit("router-2", t0, member).is_ok(), "a member got a place");
        assert!(l.admit("router-1", t0, member).is_ok(), "and router-1 kept its own budget");
        assert_eq!(l.len(), 4);
        assert!(l.admit("router-3", t0, member).is_ok());
        assert!(l.admit("router-4", t0, member).is_ok());
        assert!(l.admit("router-5", t0, member).unwrap_err().shared, "members are never pushed out while busy");
    }

    #[test]
    fn the_newest_refused_announcement_is_kept_and_due_when_a_token_is_back() {
        let t0 = Instant::now();
        let mut l = AnnounceLimiter::new(1, 5 * S, 4, t0);
        l.admit("d1", t0, nobody).unwrap();
        for i in 0..3u8 {
            l.admit("d1", t0, nobody).unwrap_err();
            assert!(l.defer("d1", &[i]));
        }
        assert!(!l.defer("d1", &[0; MAX_DEFERRED_BYTES + 1]), "oversized: not kept");
        assert_eq!(l.deferred(), 1);
        assert!(l.due(t0 + 4 * S).is_empty(), "not before the budget allows");
        assert_eq!(l.due(t0 + 5 * S), vec![("d1".to_string(), vec![2])], "only the newest");
        assert_eq!((l.deferred(), l.due(t0 + 10 * S).len()), (0, 0));
        // Something let through later supersedes what was kept.
        l.admit("d1", t0 + 5 * S, nobody).unwrap();
        l.admit("d1", t0 + 5 * S, nobody).unwrap_err();
        l.defer("d1", b"old");
        l.settled("d1");
        assert_eq!((l.deferred(), l.due(t0 + 60 * S).len()), (0, 0));
    }
}
