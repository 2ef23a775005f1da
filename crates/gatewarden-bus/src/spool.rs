//! Store-and-forward: the on-disk outbox of messages that must arrive
//! (alerts, verdicts, policy updates).
//!
//! Every such message is appended here *before* it is sent and stays until
//! the receiver acknowledges it end to end (an `ack` from the receiving node,
//! not merely the broker's PUBACK, so a broker crash loses nothing either).
//! While the broker is unreachable nothing is sent and the spool grows; on
//! reconnect everything unacknowledged is sent again in order, and receivers
//! drop duplicates by message id.
//!
//! The file is an append-only log of `Add`/`Ack` records (length-prefixed
//! postcard); a torn record at the end (crash mid-write) is ignored on
//! reopen. When the file grows past twice the live data plus 1 MiB it is
//! compacted (rewritten with live entries only, then renamed over).
//!
//! Overflow policy: past `max_messages` or `max_bytes` of live entries the
//! **oldest** entry **of the largest backlog** (by count, or by bytes when
//! bytes are over) is dropped and counted in
//! `gatewarden_spool_dropped_total{kind}`. Backlogs are per recipient
//! (`None`, "every node that takes the kind", is one): on a long outage
//! recent alerts and verdicts matter more than old ones, and a verdict older
//! than its block TTL is useless anyway; but one node's backlog (a router
//! that makes the monitor resend its policy, or the detector issue verdicts
//! for it) must not push out what waits for the others, so a recipient loses
//! an entry only while none holds more than it does.
//!
//! A [`LATEST_ONLY`] kind carries the whole state (a policy update is the
//! complete policy), so a newer entry replaces the one queued for the same
//! recipient instead of joining it (counted in
//! `gatewarden_spool_superseded_total{kind}`).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use gatewarden_core::metrics::{Counter, Gauge, Registry};

/// Largest single record; anything bigger in the file means corruption.
const MAX_RECORD: usize = 8 * 1024 * 1024;

/// Kinds whose newest entry per recipient replaces any older one queued:
/// each carries the whole state and receivers ignore versions they have.
pub const LATEST_ONLY: [&str; 1] = [gatewarden_proto::kinds::POLICY_UPDATE];

/// The live entries for one recipient.
#[derive(Debug, Default)]
struct Backlog {
    /// Oldest first.
    ids: BTreeSet<u64>,
    bytes: usize,
}

#[derive(Debug, Serialize, Deserialize)]
enum Record {
    Add { id: u64, kind: String, to: Option<String>, payload: Vec<u8> },
    Ack { id: u64 },
}

/// One message waiting for its acknowledgement.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Message id (receivers de-duplicate by it).
    pub id: u64,
    /// Message kind (`alert`, `verdict`, …), the topic's last level.
    pub kind: String,
    /// Recipient node, or `None` for "every node that takes this kind".
    pub to: Option<String>,
    /// The encoded message.
    pub payload: Vec<u8>,
    last_sent: Option<Instant>,
}

/// The outbox.
#[derive(Debug)]
pub struct Spool {
    path: PathBuf,
    file: File,
    live: BTreeMap<u64, Entry>,
    live_bytes: usize,
    /// Live entries per recipient: a full spool drops from the largest.
    backlogs: HashMap<Option<String>, Backlog>,
    /// The queued entry of each [`LATEST_ONLY`] kind, per recipient.
    latest: HashMap<(String, Option<String>), u64>,
    file_bytes: u64,
    max_messages: usize,
    max_bytes: usize,
    next_id: u64,
    registry: Arc<Registry>,
    depth: Gauge,
    acked: Counter,
}

fn record_bytes(r: &Record) -> Vec<u8> {
    let body = postcard::to_allocvec(r).expect("records are encodable");
    let mut out = (body.len() as u32).to_le_bytes().to_vec();
    out.extend(body);
    out
}

impl Spool {
    /// Opens (or creates) `dir/outbox.spool`, restoring unacknowledged entries.
    pub fn open(dir: &Path, max_messages: usize, max_bytes: usize, registry: &Arc<Registry>) -> anyhow::Result<Spool> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating spool directory {} (mqtt.spool_dir)", dir.display()))?;
        let path = dir.join("outbox.spool");
        let mut live = BTreeMap::new();
        let mut max_id = 0u64;
        // Records whose bytes went bad (a power cut on an SD card) are
        // skipped, not the end of the file: stopping there dropped every
        // later message, and the compaction below made it final. A length
        // that cannot be right ends the reading; either way a copy of the
        // file as found is kept for an operator before it is rewritten.
        let (mut damaged, mut cut_short) = (0usize, false);
        if let Ok(f) = File::open(&path) {
            let mut r = BufReader::new(f);
            loop {
                let mut len = [0u8; 4];
                if r.read_exact(&mut len).is_err() {
                    break;
                }
                let len = u32::from_le_bytes(len) as usize;
                if len > MAX_RECORD {
                    cut_short = true;
                    break;
                }
                let mut buf = vec![0u8; len];
                // A torn last record: the write a crash interrupted, nothing lost that was kept.
                if r.read_exact(&mut buf).is_err() {
                    break;
                }
                match postcard::from_bytes::<Record>(&buf) {
                    Ok(Record::Add { id, kind, to, payload }) => {
                        max_id = max_id.max(id);
                        live.insert(id, Entry { id, kind, to, payload, last_sent: None });
                    }
                    Ok(Record::Ack { id }) => {
                        live.remove(&id);
                    }
                    Err(_) => damaged += 1,
                }
            }
        }
        if damaged > 0 || cut_short {
            let aside = dir.join(format!("outbox.spool.damaged-{}", gatewarden_core::clock::unix_now_ms()));
            let kept = std::fs::copy(&path, &aside).map(|_| aside.display().to_string());
            tracing::warn!(
                path = %path.display(),
                damaged_records = damaged,
                rest_unreadable = cut_short,
                kept = %kept.as_deref().unwrap_or("(could not copy)"),
                "the outbox spool has damaged records: they were skipped{}; the file as found was kept aside",
                if cut_short { ", and a record length past the limit ended the reading" } else { "" }
            );
        }
        let boot = (rand_core::RngCore::next_u32(&mut rand_core::OsRng) as u64) << 32;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening spool {}", path.display()))?;
        let mut s = Spool {
            path,
            file,
            live_bytes: 0,
            live: BTreeMap::new(),
            backlogs: HashMap::new(),
            latest: HashMap::new(),
            file_bytes: 0,
            max_messages: max_messages.max(1),
            max_bytes: max_bytes.max(1024),
            next_id: boot.max(max_id + 1),
            depth: registry.gauge(
                "gatewarden_spool_messages",
                "Messages waiting in the outbox for an acknowledgement.",
                &[],
            ),
            acked: registry.counter(
                "gatewarden_spool_acked_total",
                "Outbox messages acknowledged by their receiver.",
                &[],
            ),
            registry: registry.clone(),
        };
        // Every kind the spool can hold at zero, so a dashboard shows 0 drops, not "no data".
        for k in gatewarden_proto::kinds::TABLE.iter().filter(|k| k.durable) {
            s.dropped_counter(k.name);
        }
        for k in LATEST_ONLY {
            s.superseded_counter(k);
        }
        // Restored in order, so a latest-only entry replaces older ones (a
        // file from before they were replaced); the compaction drops those.
        for e in live.into_values() {
            s.insert_live(e);
        }
        s.compact()?;
        Ok(s)
    }

    /// Unacknowledged messages.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    fn append(&mut self, r: &Record) -> anyhow::Result<()> {
        let bytes = record_bytes(r);
        self.file.write_all(&bytes).with_context(|| format!("appending to {}", self.path.display()))?;
        self.file_bytes += bytes.len() as u64;
        Ok(())
    }

    /// `gatewarden_spool_dropped_total{kind}`.
    fn dropped_counter(&self, kind: &str) -> Counter {
        self.registry.counter(
            "gatewarden_spool_dropped_total",
            "Outbox messages dropped (oldest first) because the spool was full.",
            &[("kind", kind)],
        )
    }

    /// `gatewarden_spool_superseded_total{kind}`.
    fn superseded_counter(&self, kind: &str) -> Counter {
        self.registry.counter(
            "gatewarden_spool_superseded_total",
            "Outbox messages replaced by a newer one of the same kind for the same recipient (kinds that carry the whole state, e.g. policy_update).",
            &[("kind", kind)],
        )
    }

    /// Adds `e` to the live entries and its recipient's backlog; returns
    /// the entry it replaces (a [`LATEST_ONLY`] kind), already taken out.
    fn insert_live(&mut self, e: Entry) -> Option<Entry> {
        let replaced = if LATEST_ONLY.contains(&e.kind.as_str()) {
            let old = self.latest.insert((e.kind.clone(), e.to.clone()), e.id);
            old.and_then(|id| self.remove_live(id))
        } else {
            None
        };
        let backlog = self.backlogs.entry(e.to.clone()).or_default();
        backlog.ids.insert(e.id);
        backlog.bytes += e.payload.len();
        self.live_bytes += e.payload.len();
        self.live.insert(e.id, e);
        replaced
    }

    /// Takes `id` out of the live entries and its recipient's backlog.
    fn remove_live(&mut self, id: u64) -> Option<Entry> {
        let e = self.live.remove(&id)?;
        self.live_bytes -= e.payload.len();
        if let Some(b) = self.backlogs.get_mut(&e.to) {
            b.ids.remove(&id);
            b.bytes -= e.payload.len();
            if b.ids.is_empty() {
                self.backlogs.remove(&e.to);
            }
        }
        if LATEST_ONLY.contains(&e.kind.as_str()) {
            let key = (e.kind.clone(), e.to.clone());
            if self.latest.get(&key) == Some(&id) {
                self.latest.remove(&key);
            }
        }
        Some(e)
    }

    /// The entry a full spool drops: the oldest of the largest backlog (by
    /// bytes when `by_bytes`, else by count; of equals, the one holding the
    /// oldest entry).
    fn eviction_victim(&self, by_bytes: bool) -> Option<u64> {
        self.backlogs
            .values()
            .filter_map(|b| {
                let oldest = *b.ids.first()?;
                Some((if by_bytes { b.bytes } else { b.ids.len() }, Reverse(oldest)))
            })
            .max()
            .map(|(_, Reverse(id))| id)
    }

    /// Stores a message; returns its id. It replaces the entry queued for the
    /// same recipient of a [`LATEST_ONLY`] kind; if the spool is full, the
    /// oldest entries of the largest backlog go.
    pub fn push(&mut self, kind: &str, to: Option<&str>, payload: Vec<u8>) -> anyhow::Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        self.append(&Record::Add { id, kind: kind.to_string(), to: to.map(str::to_string), payload: payload.clone() })?;
        let entry = Entry { id, kind: kind.to_string(), to: to.map(str::to_string), payload, last_sent: None };
        if let Some(old) = self.insert_live(entry) {
            self.superseded_counter(&old.kind).inc();
            self.append(&Record::Ack { id: old.id })?;
        }
        while self.live.len() > self.max_messages || self.live_bytes > self.max_bytes {
            let Some(old) = self.eviction_victim(self.live.len() <= self.max_messages) else { break };
            if let Some(e) = self.remove_live(old) {
                self.dropped_counter(&e.kind).inc();
                self.append(&Record::Ack { id: old })?;
            }
        }
        self.after_change()?;
        Ok(id)
    }

    /// The entry waiting under `id`, if any (to check who may acknowledge it).
    pub fn get(&self, id: u64) -> Option<&Entry> {
        self.live.get(&id)
    }

    /// Marks `id` delivered; returns false if it was not waiting.
    pub fn ack(&mut self, id: u64) -> anyhow::Result<bool> {
        if self.remove_live(id).is_none() {
            return Ok(false);
        }
        self.acked.inc();
        self.append(&Record::Ack { id })?;
        self.after_change()?;
        Ok(true)
    }

    fn after_change(&mut self) -> anyhow::Result<()> {
        self.depth.set(self.live.len() as f64);
        if self.file_bytes > 2 * self.live_bytes as u64 + (1 << 20) {
            self.compact()?;
        }
        Ok(())
    }

    /// Rewrites the file with live entries only.
    fn compact(&mut self) -> anyhow::Result<()> {
        let tmp = self.path.with_extension("spool.tmp");
        let mut out = Vec::new();
        for e in self.live.values() {
            out.extend(record_bytes(&Record::Add {
                id: e.id,
                kind: e.kind.clone(),
                to: e.to.clone(),
                payload: e.payload.clone(),
            }));
        }
        std::fs::write(&tmp, &out).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path).with_context(|| format!("replacing {}", self.path.display()))?;
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .with_context(|| format!("reopening {}", self.path.display()))?;
        self.file_bytes = out.len() as u64;
        self.depth.set(self.live.len() as f64);
        Ok(())
    }

    /// Entries never sent or not acknowledged within `resend_after`, oldest first, at most `limit`; marks them sent.
    pub fn due(&mut self, resend_after: Duration, limit: usize) -> Vec<Entry> {
        let now = Instant::now();
        let mut out = Vec::new();
        for e in self.live.values_mut() {
            if out.len() >= limit {
                break;
            }
            if e.last_sent.is_none_or(|t| now.duration_since(t) >= resend_after) {
                e.last_sent = Some(now);
                out.push(e.clone());
            }
        }
        out
    }

    /// Marks one entry sent now and returns it (to transmit it right after `push`).
    pub fn take_for_send(&mut self, id: u64) -> Option<Entry> {
        let e = self.live.get_mut(&id)?;
        e.last_sent = Some(Instant::now());
        Some(e.clone())
    }

    /// Forgets send times (after a reconnect everything unacknowledged goes again at once).
    pub fn mark_all_unsent(&mut self) {
        for e in self.live.values_mut() {
            e.last_sent = None;
        }
    }

    /// Marks the entries `f` picks unsent (a peer's new key: what it takes
    /// goes again at once); returns how many.
    pub fn mark_unsent_where(&mut self, f: impl Fn(&Entry) -> bool) -> usize {
        let mut n = 0;
        for e in self.live.values_mut().filter(|e| f(e)) {
            e.last_sent = None;
            n += 1;
        }
        n
    }

    /// Marks one entry unsent (its publish could not be queued).
    pub fn mark_unsent(&mut self, id: u64) {
        if let Some(e) = self.live.get_mut(&id) {
            e.last_sent = None;
        }
    }

    /// Size of the spool file in bytes.
    pub fn file_bytes(&self) -> u64 {
        self.file_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unacknowledged_entries_survive_a_restart_and_acked_ones_do_not() {
        let d = tempfile::tempdir().unwrap();
        let r = Registry::new();
        let ids: Vec<u64> = {
            let mut s = Spool::open(d.path(), 100, 1 << 20, &r).unwrap();
            let ids: Vec<u64> = (0..10).map(|i| s.push("alert", None, vec![i; 10]).unwrap()).collect();
            for id in &ids[..4] {
                assert!(s.ack(*id).unwrap());
            }
            assert!(!s.ack(ids[0]).unwrap(), "second ack is a no-op");
            ids
        };
        let mut s = Spool::open(d.path(), 100, 1 << 20, &r).unwrap();
        let due: Vec<u64> = s.due(Duration::from_secs(1), 100).iter().map(|e| e.id).collect();
        assert_eq!(due, ids[4..].to_vec());
        assert!(s.due(Duration::from_secs(60), 100).is_empty(), "not resent before resend_after");
        s.mark_all_unsent();
        assert_eq!(s.due(Duration::from_secs(60), 3).len(), 3, "limit respected");
        let new = s.push("verdict", Some("r1"), vec![1]).unwrap();
        assert!(new > *ids.last().unwrap() || new >> 32 != ids[0] >> 32, "ids never collide with restored ones");
    }

    /// Red-team finding: one bad byte in a record (a power cut on an SD
    /// card) ended the reading there, and the compaction then dropped every
    /// later message for good. The bad record is skipped, the rest restored,
    /// and the file as found kept aside.
    #[test]
    fn a_damaged_record_is_skipped_and_the_ones_after_it_restored() {
        let d = tempfile::tempdir().unwrap();
        let r = Registry::new();
        let ids: Vec<u64> = {
            let mut s = Spool::open(d.path(), 100, 1 << 20, &r).unwrap();
            (0..3u8).map(|i| s.push("alert", None, vec![i; 100]).unwrap()).collect()
        };
        let p = d.path().join("outbox.spool");
        let mut bytes = std::fs::read(&p).unwrap();
        let first = 4 + u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
        bytes[first + 4] = 0x7f; // the second record's variant: no such record
        std::fs::write(&p, &bytes).unwrap();
        let mut s = Spool::open(d.path(), 100, 1 << 20, &r).unwrap();
        let live: Vec<u64> = s.due(Duration::ZERO, 10).iter().map(|e| e.id).collect();
        assert_eq!(live, [ids[0], ids[2]], "the record after the damaged one is restored");
        let kept: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("outbox.spool.damaged-"))
            .collect();
        assert_eq!(kept.len(), 1, "the file as found is kept aside");
    }

    #[test]
    fn a_torn_last_record_is_ignored() {
        let d = tempfile::tempdir().unwrap();
        let r = Registry::new();
        {
            let mut s = Spool::open(d.path(), 100, 1 << 20, &r).unwrap();
            s.push("alert", None, vec![7; 100]).unwrap();
            s.push("alert", None, vec![8; 100]).unwrap();
        }
        let p = d.path().join("outbox.spool");
        let len = std::fs::metadata(&p).unwrap().len();
        let f = OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(len - 10).unwrap();
        let s = Spool::open(d.path(), 100, 1 << 20, &r).unwrap();
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn overflow_drops_oldest_and_counts() {
        let d = tempfile::tempdir().unwrap();
        let r = Registry::new();
        let mut s = Spool::open(d.path(), 5, 1 << 20, &r).unwrap();
        let ids: Vec<u64> = (0..8).map(|_| s.push("alert", None, vec![0; 10]).unwrap()).collect();
        assert_eq!(s.len(), 5);
        let left: Vec<u64> = s.due(Duration::ZERO, 100).iter().map(|e| e.id).collect();
        assert_eq!(left, ids[3..].to_vec(), "oldest dropped first");
        assert_eq!(r.snapshot()["gatewarden_spool_dropped_total{kind=alert}"], 3.0);
    }

    /// Red-team finding: the outbox dropped its oldest entries whoever they
    /// were for, so a backlog for one node (a router that makes the monitor
    /// resend its policy, or the detector issue verdicts for it) pushed out
    /// other nodes' unblocks, settings and policies. A full spool now drops
    /// from the largest backlog, by count and by bytes.
    #[test]
    fn one_recipients_backlog_never_evicts_anothers() {
        let d = tempfile::tempdir().unwrap();
        let r = Registry::new();
        let mut s = Spool::open(d.path(), 100, 1 << 20, &r).unwrap();
        let for_b = s.push("unblock", Some("router-b"), vec![1; 10]).unwrap();
        let alert = s.push("alert", None, vec![2; 10]).unwrap();
        let for_a: Vec<u64> = (0..1000).map(|_| s.push("verdict", Some("router-a"), vec![0; 10]).unwrap()).collect();
        assert_eq!(s.len(), 100);
        assert!(s.get(for_b).is_some() && s.get(alert).is_some(), "router-a's backlog evicted another's entry");
        assert!(for_a[for_a.len() - 98..].iter().all(|id| s.get(*id).is_some()), "its newest stay");
        assert_eq!(r.snapshot()["gatewarden_spool_dropped_total{kind=verdict}"], 902.0);
        // The same with bytes: 4 KiB of room, 100-byte entries.
        let d = tempfile::tempdir().unwrap();
        let mut s = Spool::open(d.path(), 10_000, 4096, &r).unwrap();
        let for_b = s.push("unblock", Some("router-b"), vec![1; 1000]).unwrap();
        for _ in 0..1000 {
            s.push("verdict", Some("router-a"), vec![0; 100]).unwrap();
        }
        assert!(s.get(for_b).is_some(), "router-a's bytes evicted router-b's entry");
        drop(s);
        let s = Spool::open(d.path(), 10_000, 4096, &r).unwrap();
        assert!(s.get(for_b).is_some(), "and after a restart");
    }

    /// A policy update carries the whole policy, so only the newest copy per
    /// router is worth keeping: a router that makes the monitor resend keeps
    /// one entry queued, not one per resend.
    #[test]
    fn a_newer_policy_for_a_router_replaces_the_queued_one() {
        let d = tempfile::tempdir().unwrap();
        let r = Registry::new();
        let mut s = Spool::open(d.path(), 100, 1 << 20, &r).unwrap();
        let for_b = s.push("policy_update", Some("router-b"), vec![1]).unwrap();
        let verdict = s.push("verdict", Some("router-a"), vec![2]).unwrap();
        let mut last = 0;
        for i in 0..1000u32 {
            last = s.push("policy_update", Some("router-a"), i.to_le_bytes().to_vec()).unwrap();
        }
        assert_eq!(s.len(), 3);
        assert!(s.get(for_b).is_some() && s.get(verdict).is_some() && s.get(last).is_some());
        drop(s);
        let s = Spool::open(d.path(), 100, 1 << 20, &r).unwrap();
        assert_eq!(s.len(), 3, "after a restart too");
        assert_eq!(s.get(last).map(|e| e.payload.clone()), Some(999u32.to_le_bytes().to_vec()));
    }

    #[test]
    fn the_file_is_compacted_so_disk_use_stays_bounded() {
        let d = tempfile::tempdir().unwrap();
        let r = Registry::new();
        let mut s = Spool::open(d.path(), 1000, 1 << 20, &r).unwrap();
        for _ in 0..5000 {
            let id = s.push("alert", None, vec![0; 1000]).unwrap();
            s.ack(id).unwrap();
        }
        assert!(s.file_bytes() < 2 << 20, "{} bytes", s.file_bytes());
        assert!(std::fs::metadata(d.path().join("outbox.spool")).unwrap().len() < 2 << 20);
    }
}
