//! The monitor's evidence pcaps (issue #18): `evidence/<alert-id>.pcap`
//! beside the alert store, at most `evidence.store_bytes` in all (the oldest
//! deleted first), or the same in memory when the monitor keeps no data
//! directory (`replay --serve`). The binary turns a router's
//! [`gatewarden_proto::messages::Evidence`] into pcap bytes; this store keeps
//! and serves them (`GET /api/alerts/{id}/pcap`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;

/// Where pcaps are kept and how many bytes they may take.
struct Inner {
    dir: Option<PathBuf>,
    max_bytes: u64,
    /// alert id → (size, insertion order).
    index: HashMap<u64, (u64, u64)>,
    /// insertion order → alert id: the oldest first.
    order: BTreeMap<u64, u64>,
    /// The pcaps themselves when there is no directory.
    memory: HashMap<u64, Vec<u8>>,
    next: u64,
    total: u64,
}

/// Per-alert pcaps, bounded in bytes.
pub struct EvidenceStore {
    inner: Mutex<Inner>,
}

/// What [`EvidenceStore::put`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    /// Stored (and this many older pcaps deleted to make room).
    Stored {
        /// Older pcaps deleted.
        deleted: usize,
    },
    /// The alert has a pcap already: the first one stays (another router, or a repeat, cannot replace it).
    Exists,
    /// Larger than the whole store may hold.
    TooLarge,
}

impl Default for EvidenceStore {
    fn default() -> Self {
        EvidenceStore::in_memory(64 << 20)
    }
}

impl EvidenceStore {
    /// A store in memory holding at most `max_bytes`.
    pub fn in_memory(max_bytes: u64) -> EvidenceStore {
        EvidenceStore {
            inner: Mutex::new(Inner {
                dir: None,
                max_bytes,
                index: HashMap::new(),
                order: BTreeMap::new(),
                memory: HashMap::new(),
                next: 0,
                total: 0,
            }),
        }
    }

    /// A store in `dir` (created if missing), indexing the pcaps already
    /// there oldest first; beyond `max_bytes` the oldest are deleted now.
    pub fn open(dir: &Path, max_bytes: u64) -> anyhow::Result<EvidenceStore> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the evidence directory {} (monitor.data_dir)", dir.display()))?;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".pcap")).and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let meta = entry.metadata()?;
            found.push((meta.modified().unwrap_or(std::time::UNIX_EPOCH), id, meta.len()));
        }
        found.sort();
        let store = EvidenceStore::in_memory(max_bytes);
        {
            let mut g = store.lock();
            g.dir = Some(dir.to_path_buf());
            for (_, id, size) in found {
                g.add(id, size);
            }
            g.shrink(0);
        }
        Ok(store)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Deletes the pcaps of ids from `first_unissued` on: they belong to no
    /// stored alert (alert lines lost to a power cut or a removed file), and
    /// the next alert to get such an id would otherwise show an older
    /// alert's packets, about another attacker. Returns how many went.
    pub fn forget_from(&self, first_unissued: u64) -> usize {
        let mut g = self.lock();
        let ids: Vec<u64> = g.index.keys().copied().filter(|id| *id >= first_unissued).collect();
        for id in &ids {
            if let Some((size, seq)) = g.index.remove(id) {
                g.total -= size;
                g.order.remove(&seq);
            }
            g.memory.remove(id);
            if let Some(dir) = &g.dir {
                let path = dir.join(format!("{id}.pcap"));
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), error = %e, "could not delete an orphaned evidence pcap");
                }
            }
        }
        ids.len()
    }

    /// Keeps `pcap` as alert `id`'s evidence, unless it has some already.
    pub fn put(&self, id: u64, pcap: &[u8]) -> anyhow::Result<Put> {
        let mut g = self.lock();
        if g.index.contains_key(&id) {
            return Ok(Put::Exists);
        }
        let size = pcap.len() as u64;
        if size > g.max_bytes {
            return Ok(Put::TooLarge);
        }
        let deleted = g.shrink(size);
        match &g.dir {
            Some(dir) => {
                let path = dir.join(format!("{id}.pcap"));
                gatewarden_core::atomic_file::write_atomic(&path, pcap)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            None => {
                g.memory.insert(id, pcap.to_vec());
            }
        }
        g.add(id, size);
        Ok(Put::Stored { deleted })
    }

    /// Alert `id`'s pcap, if kept.
    pub fn get(&self, id: u64) -> anyhow::Result<Option<Vec<u8>>> {
        let g = self.lock();
        if !g.index.contains_key(&id) {
            return Ok(None);
        }
        match &g.dir {
            Some(dir) => {
                let path = dir.join(format!("{id}.pcap"));
                match std::fs::read(&path) {
                    Ok(b) => Ok(Some(b)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
                }
            }
            None => Ok(g.memory.get(&id).cloned()),
        }
    }

    /// (pcaps kept, bytes they take).
    pub fn usage(&self) -> (usize, u64) {
        let g = self.lock();
        (g.index.len(), g.total)
    }
}

impl Inner {
    fn add(&mut self, id: u64, size: u64) {
        self.next += 1;
        self.index.insert(id, (size, self.next));
        self.order.insert(self.next, id);
        self.total += size;
    }

    /// Deletes the oldest pcaps until `room` more bytes fit; how many were deleted.
    fn shrink(&mut self, room: u64) -> usize {
        let mut deleted = 0;
        while self.total + room > self.max_bytes {
            let Some((_, id)) = self.order.pop_first() else { break };
            if let Some((size, _)) = self.index.remove(&id) {
                self.total -= size;
            }
            self.memory.remove(&id);
            if let Some(dir) = &self.dir {
                let path = dir.join(format!("{id}.pcap"));
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), error = %e, "could not delete an old evidence pcap");
                }
            }
            deleted += 1;
        }
        deleted
    }
}

/// Alerts whose (router, verdict id) → store id the linker remembers.
pub const MAX_LINKS: usize = 8192;
/// Evidence held for an alert not stored yet (it waits for its router's
/// answer, [`crate::confirm::CONFIRM_WAIT`]): at most this many …
pub const MAX_EARLY: usize = 256;
/// … holding at most this many bytes in all …
pub const MAX_EARLY_BYTES: usize = 16 << 20;
/// … for at most this long (an alert waits a few seconds for its router).
pub const EARLY_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// (router node, verdict id): what a router's evidence and the alert its
/// verdict came with share. The store gives the alert its own id (detector
/// ids restart with the process), so evidence is filed through this.
pub type Key = (String, u64);

/// What became of evidence handed to [`Linker::evidence`].
#[derive(Debug, PartialEq, Eq)]
pub enum Linked {
    /// Its alert is stored under this id: store the pcap now.
    Now(u64, Vec<u8>),
    /// Held until its alert is stored.
    Held,
    /// Not kept: too large to hold, evidence for that verdict is held
    /// already, or its router holds more than any other and has nothing
    /// older to give up.
    Dropped,
}

/// One router's evidence waiting for its alert.
struct HeldPcap {
    pcap: Vec<u8>,
    at: std::time::Instant,
    seq: u64,
}

/// Joins routers' evidence (keyed by verdict id) to stored alerts (keyed by
/// store id), whichever arrives first. A router's evidence can only reach
/// an alert filed under that router (the bus checks that an evidence
/// message names its sender). Held evidence is bounded in count, bytes and
/// age; when full, the router holding the most gives up its oldest, so one
/// router flooding evidence for verdicts that never come (a stolen
/// certificate) pushes out only its own.
#[derive(Default)]
pub struct Linker {
    stored: HashMap<Key, u64>,
    stored_order: VecDeque<Key>,
    early: HashMap<Key, HeldPcap>,
    /// Insertion number → key, the oldest first (exactly the keys in `early`).
    early_order: BTreeMap<u64, Key>,
    early_bytes: usize,
    next_seq: u64,
    /// Held evidence given up (aged out or pushed out) since start.
    given_up: u64,
}

impl Linker {
    /// An alert was stored as `store_id`: the evidence that came before it, if any.
    pub fn alert_stored(&mut self, key: Key, store_id: u64) -> Option<Vec<u8>> {
        if self.stored.insert(key.clone(), store_id).is_none() {
            self.stored_order.push_back(key.clone());
            if self.stored_order.len() > MAX_LINKS {
                if let Some(old) = self.stored_order.pop_front() {
                    self.stored.remove(&old);
                }
            }
        }
        self.take(&key)
    }

    /// Evidence arrived: file it now under its alert's store id, or hold it
    /// until its alert is stored (past the bounds the router holding the
    /// most gives up its oldest).
    pub fn evidence(&mut self, key: Key, pcap: Vec<u8>, now: std::time::Instant) -> Linked {
        if let Some(&id) = self.stored.get(&key) {
            return Linked::Now(id, pcap);
        }
        if pcap.len() > MAX_EARLY_BYTES || self.early.contains_key(&key) {
            return Linked::Dropped;
        }
        // Aged out first: their alerts are not coming.
        while let Some((_, old)) = self.early_order.first_key_value() {
            if self.early.get(old).is_some_and(|h| now.saturating_duration_since(h.at) <= EARLY_TTL) {
                break;
            }
            let old = old.clone();
            self.take(&old);
            self.given_up += 1;
        }
        while self.early.len() >= MAX_EARLY || self.early_bytes + pcap.len() > MAX_EARLY_BYTES {
            match self.victim(&key.0, pcap.len(), self.early.len() >= MAX_EARLY) {
                Some(old) => {
                    self.take(&old);
                    self.given_up += 1;
                }
                None => return Linked::Dropped,
            }
        }
        self.next_seq += 1;
        self.early_bytes += pcap.len();
        self.early_order.insert(self.next_seq, key.clone());
        self.early.insert(key, HeldPcap { pcap, at: now, seq: self.next_seq });
        Linked::Held
    }

    /// The oldest held evidence of the router that holds the most (entries
    /// when `by_count`, else bytes), counting what `incoming` brings; `None`
    /// when that router is `incoming` and holds nothing yet.
    fn victim(&self, incoming: &str, incoming_bytes: usize, by_count: bool) -> Option<Key> {
        let mut load: BTreeMap<&str, usize> = BTreeMap::new();
        *load.entry(incoming).or_default() += if by_count { 1 } else { incoming_bytes };
        for ((node, _), h) in &self.early {
            *load.entry(node.as_str()).or_default() += if by_count { 1 } else { h.pcap.len() };
        }
        let (heaviest, _) = load.into_iter().max_by_key(|&(_, n)| n)?;
        self.early_order.values().find(|k| k.0 == heaviest).cloned()
    }

    /// Removes `key`'s held evidence, if any.
    fn take(&mut self, key: &Key) -> Option<Vec<u8>> {
        let h = self.early.remove(key)?;
        self.early_order.remove(&h.seq);
        self.early_bytes -= h.pcap.len();
        Some(h.pcap)
    }

    /// Held evidence given up since start: aged out (its alert never came)
    /// or pushed out by newer evidence past the bounds.
    pub fn given_up(&self) -> u64 {
        self.given_up
    }

    /// Evidence held for alerts not stored yet: (count, bytes).
    pub fn held(&self) -> (usize, usize) {
        (self.early.len(), self.early_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Red-team finding: alert ids are issued from the alert lines only, so
    /// after lost lines a new alert got an id whose pcap was still on disk,
    /// and `put` kept the old packets (about another attacker) for it.
    #[test]
    fn evidence_of_ids_not_issued_is_forgotten_so_a_new_alert_gets_its_own() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("4.pcap"), b"alert four").unwrap();
        std::fs::write(dir.path().join("5.pcap"), b"an older attacker").unwrap();
        let store = EvidenceStore::open(dir.path(), 1 << 20).unwrap();
        // The alert store read back alerts 1 to 4: id 5 is the next one it issues.
        assert_eq!(store.forget_from(5), 1);
        assert!(!dir.path().join("5.pcap").exists());
        assert!(matches!(store.put(5, b"the new alert's packets").unwrap(), Put::Stored { .. }));
        assert_eq!(store.get(5).unwrap().as_deref(), Some(&b"the new alert's packets"[..]));
        assert_eq!(store.get(4).unwrap().as_deref(), Some(&b"alert four"[..]));
    }

    #[test]
    fn the_oldest_pcaps_go_first_and_the_first_pcap_of_an_alert_stays() {
        let dir = tempfile::tempdir().unwrap();
        let store = EvidenceStore::open(dir.path(), 250).unwrap();
        for id in 1..=3u64 {
            assert_eq!(store.put(id, &[id as u8; 100]).unwrap(), Put::Stored { deleted: (id == 3) as usize });
        }
        assert_eq!(store.put(3, &[9; 10]).unwrap(), Put::Exists);
        assert_eq!(store.put(4, &[9; 251]).unwrap(), Put::TooLarge);
        assert_eq!(store.get(1).unwrap(), None, "the oldest was deleted");
        assert!(!dir.path().join("1.pcap").exists());
        assert_eq!(store.get(3).unwrap(), Some(vec![3; 100]));
        assert_eq!(store.usage(), (2, 200));
        // Reopened: the files on disk are the index, still bounded.
        drop(store);
        let again = EvidenceStore::open(dir.path(), 150).unwrap();
        assert_eq!(again.usage().0, 1);
        assert_eq!(again.get(3).unwrap(), Some(vec![3; 100]), "the newer one stays");
    }

    #[test]
    fn evidence_finds_its_alert_whichever_comes_first_and_only_under_its_router() {
        let now = std::time::Instant::now();
        let mut l = Linker::default();
        // The alert first (stored as 107 for router r1's verdict 7), then the evidence.
        assert_eq!(l.alert_stored(("r1".into(), 7), 107), None);
        assert_eq!(l.evidence(("r1".into(), 7), vec![1; 10], now), Linked::Now(107, vec![1; 10]));
        // Another router's evidence with that verdict id is not this alert's.
        assert_eq!(l.evidence(("r2".into(), 7), vec![2; 10], now), Linked::Held);
        // The evidence first: held, then handed over when the alert is stored.
        assert_eq!(l.evidence(("r1".into(), 8), vec![3; 10], now), Linked::Held);
        assert_eq!(l.alert_stored(("r1".into(), 8), 108), Some(vec![3; 10]));
        assert_eq!(l.held(), (1, 10), "r2's stays held until it expires");
        // Held evidence is bounded in count and ages out.
        for i in 0..10_000u64 {
            let _ = l.evidence(("r3".into(), i), vec![0; 100], now);
        }
        assert!(l.held().0 <= MAX_EARLY);
        let _ = l.evidence(("r4".into(), 1), vec![0; 1], now + EARLY_TTL * 2);
        assert_eq!(l.held(), (1, 1));
        for i in 0..(MAX_LINKS as u64 + 10) {
            l.alert_stored(("r5".into(), i), i);
        }
        assert!(l.stored.len() <= MAX_LINKS);
    }

    #[test]
    fn a_router_flooding_evidence_pushes_out_only_its_own() {
        let now = std::time::Instant::now();
        let mut l = Linker::default();
        // An honest router's evidence waits for its alert (its router has not answered yet).
        assert_eq!(l.evidence(("router-1".into(), 1), vec![1; 1000], now), Linked::Held);
        // A stolen certificate floods evidence for verdicts that never come: in count …
        for i in 0..10_000u64 {
            let _ = l.evidence(("rogue".into(), i), vec![9; 10], now);
        }
        assert_eq!(l.held().0, MAX_EARLY);
        // … and in bytes.
        for i in 0..100u64 {
            let _ = l.evidence(("rogue".into(), 1_000_000 + i), vec![9; MAX_EARLY_BYTES / 8], now);
        }
        assert!(l.held().1 <= MAX_EARLY_BYTES, "{:?}", l.held());
        // One piece larger than all held evidence may be is not held at all.
        assert_eq!(l.evidence(("rogue".into(), 7), vec![9; MAX_EARLY_BYTES + 1], now), Linked::Dropped);
        assert!(l.given_up() >= 10_000 - MAX_EARLY as u64, "{}", l.given_up());
        // The honest router's evidence is still there for its alert.
        assert_eq!(l.alert_stored(("router-1".into(), 1), 41), Some(vec![1; 1000]));
        // A newcomer heavier than everything held is refused rather than emptying the others.
        let mut l = Linker::default();
        assert_eq!(l.evidence(("router-1".into(), 1), vec![1; MAX_EARLY_BYTES / 2], now), Linked::Held);
        assert_eq!(l.evidence(("rogue".into(), 1), vec![9; MAX_EARLY_BYTES / 2 + 1], now), Linked::Dropped);
        assert_eq!(l.held(), (1, MAX_EARLY_BYTES / 2));
    }

    #[test]
    fn in_memory_is_bounded_too() {
        let store = EvidenceStore::in_memory(1000);
        for id in 0..100u64 {
            store.put(id, &[0; 300]).unwrap();
        }
        assert_eq!(store.usage(), (3, 900));
        assert!(store.get(99).unwrap().is_some() && store.get(0).unwrap().is_none());
    }
}
