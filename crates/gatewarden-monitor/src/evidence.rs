//! The monitor's evidence pcaps (issue #18): `evidence/<alert-id>.pcap`
//! beside the alert store, at most `evidence.store_bytes` in all (the oldest
//! deleted first), or the same in memory when the monitor keeps no data
//! directory (`replay --serve`). The binary turns a router's
//! [`gatewarden_proto::messages::Evidence`] into pcap bytes; this store keeps
//! and serves them (`GET /api/alerts/{id}/pcap`).

use std::collections::{BTreeMap, HashMap};
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn in_memory_is_bounded_too() {
        let store = EvidenceStore::in_memory(1000);
        for id in 0..100u64 {
            store.put(id, &[0; 300]).unwrap();
        }
        assert_eq!(store.usage(), (3, 900));
        assert!(store.get(99).unwrap().is_some() && store.get(0).unwrap().is_none());
    }
}
