//! A bounded map that forgets the least recently touched entry when full:
//! the shape every per-host and per-pair table needs so a spoofed flood
//! cannot grow memory. Slab + intrusive list + `hashbrown::HashTable<u32>`
//! seeded per process.

use std::hash::{BuildHasher, Hash};

use hashbrown::HashTable;

use crate::recency::{Linked, RecencyList, NIL};

struct Slot<K, V> {
    key: K,
    value: V,
    prev: u32,
    next: u32,
    /// The map's operation count when this slot last moved to the front.
    moved_at: u32,
}

impl<K, V> Linked for Slot<K, V> {
    fn links(&self) -> (u32, u32) {
        (self.prev, self.next)
    }
    fn set_prev(&mut self, prev: u32) {
        self.prev = prev;
    }
    fn set_next(&mut self, next: u32) {
        self.next = next;
    }
}

/// A least-recently-used map with a hard capacity.
pub struct LruMap<K, V> {
    index: HashTable<u32>,
    slab: Vec<Slot<K, V>>,
    lru: RecencyList,
    cap: usize,
    hasher: foldhash::fast::RandomState,
    evictions: u64,
    ops: u32,
    /// An entry touched within this many operations of its last move stays
    /// put: hot entries skip the list surgery, and the order stays exact to
    /// within 1/16 of the capacity.
    slack: u32,
    /// The slots of the last two keys touched: a packet's source is usually
    /// one of the last two packets' (issue #19). Every slot holds a key that
    /// is in the index, so a slot whose key matches *is* the entry and a hit
    /// skips hashing and probing; a slot reused for another key just stops
    /// matching.
    recent: [u32; 2],
}

impl<K: Hash + Eq + Copy, V> LruMap<K, V> {
    /// A map holding at most `cap` entries.
    pub fn new(cap: usize) -> LruMap<K, V> {
        let cap = cap.clamp(1, u32::MAX as usize - 1);
        LruMap {
            index: HashTable::new(),
            slab: Vec::new(),
            lru: RecencyList::default(),
            cap,
            hasher: foldhash::fast::RandomState::default(),
            evictions: 0,
            ops: 0,
            slack: (cap / 16).min(u32::MAX as usize) as u32,
            recent: [NIL; 2],
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Entries forgotten because the map was full.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Bytes one entry costs (slot plus index share at worst-case load).
    pub fn bytes_per_entry() -> usize {
        std::mem::size_of::<Slot<K, V>>() + 2 * (std::mem::size_of::<u32>() + 1)
    }

    /// The slot of `key` if it is one of the last two touched.
    #[inline]
    fn recent_slot(&self, key: &K) -> Option<u32> {
        self.recent.into_iter().find(|&i| i != NIL && self.slab[i as usize].key == *key)
    }

    fn remember(&mut self, i: u32) {
        if self.recent[0] != i {
            self.recent = [i, self.recent[0]];
        }
    }

    /// Looks up without touching recency.
    pub fn peek(&self, key: &K) -> Option<&V> {
        let hash = self.hasher.hash_one(key);
        let slab = &self.slab;
        self.index.find(hash, |&j| slab[j as usize].key == *key).map(|&i| &self.slab[i as usize].value)
    }

    /// Counts an operation and finds `key`, marking it most recent: its
    /// slot, or the hash to insert it under.
    fn find_and_touch(&mut self, key: K) -> Result<u32, u64> {
        self.ops = self.ops.wrapping_add(1);
        let i = match self.recent_slot(&key) {
            Some(i) => i,
            None => {
                let hash = self.hasher.hash_one(key);
                let slab = &self.slab;
                match self.index.find(hash, |&j| slab[j as usize].key == key) {
                    Some(&i) => i,
                    None => return Err(hash),
                }
            }
        };
        if self.lru.head != i && self.ops.wrapping_sub(self.slab[i as usize].moved_at) > self.slack {
            self.lru.unlink(&mut self.slab, i);
            self.lru.push_front(&mut self.slab, i);
            self.slab[i as usize].moved_at = self.ops;
        }
        self.remember(i);
        Ok(i)
    }

    /// The entry for `key` if present, marked most recent (as
    /// [`LruMap::get_or_insert_with`] marks it); nothing is inserted.
    pub fn get(&mut self, key: K) -> Option<&mut V> {
        let i = self.find_and_touch(key).ok()?;
        Some(&mut self.slab[i as usize].value)
    }

    /// The entry for `key`, created with `make` if absent (evicting the least
    /// recently used entry when full, reusing its slot); marks it most recent.
    pub fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        match self.find_and_touch(key) {
            Ok(i) => &mut self.slab[i as usize].value,
            Err(hash) => self.insert_new(key, hash, make),
        }
    }

    fn insert_new(&mut self, key: K, hash: u64, make: impl FnOnce() -> V) -> &mut V {
        let i = if self.index.len() >= self.cap {
            // Reuse the tail's slot.
            let t = self.lru.tail;
            self.lru.unlink(&mut self.slab, t);
            let old_key = self.slab[t as usize].key;
            let old_hash = self.hasher.hash_one(old_key);
            let slab = &self.slab;
            if let Ok(e) = self.index.find_entry(old_hash, |&j| slab[j as usize].key == old_key) {
                e.remove();
            }
            self.evictions += 1;
            self.slab[t as usize] = Slot { key, value: make(), prev: NIL, next: NIL, moved_at: self.ops };
            t
        } else {
            self.slab.push(Slot { key, value: make(), prev: NIL, next: NIL, moved_at: self.ops });
            (self.slab.len() - 1) as u32
        };
        let slab = &self.slab;
        let hasher = &self.hasher;
        self.index.insert_unique(hash, i, |&j| hasher.hash_one(slab[j as usize].key));
        self.lru.push_front(&mut self.slab, i);
        self.remember(i);
        &mut self.slab[i as usize].value
    }
}

/// Drops the `n` entries of `map` with the smallest `age` (ties broken
/// arbitrarily): the batch eviction of the detector's per-source maps, one
/// O(len) pass per `len / 8` newcomers, so a spoofed flood costs a few
/// operations a record.
pub fn evict_oldest<K, V, S>(map: &mut std::collections::HashMap<K, V, S>, n: usize, age: impl Fn(&V) -> u64) {
    let n = n.min(map.len());
    if n == 0 {
        return;
    }
    let mut ages: Vec<u64> = map.values().map(&age).collect();
    let (_, &mut cutoff, _) = ages.select_nth_unstable(n - 1);
    let mut removed = 0;
    map.retain(|_, v| {
        if removed < n && age(v) <= cutoff {
            removed += 1;
            false
        } else {
            true
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evict_oldest_drops_exactly_the_n_oldest() {
        let mut m: std::collections::HashMap<u32, u64> = (0..100).map(|i| (i, u64::from(i) * 10)).collect();
        evict_oldest(&mut m, 12, |v| *v);
        assert_eq!(m.len(), 88);
        assert!(m.keys().all(|k| *k >= 12), "the 12 oldest went");
        evict_oldest(&mut m, 0, |v| *v);
        assert_eq!(m.len(), 88);
        evict_oldest(&mut m, 500, |v| *v);
        assert!(m.is_empty());
    }

    proptest::proptest! {
        /// Below 16 entries the order is exact: the map must behave as a
        /// plain least-recently-used list, whatever the recent-slot memo
        /// hits, misses or holds after a slot was reused for another key.
        #[test]
        fn behaves_as_an_exact_lru_list_below_sixteen_entries(
            cap in 1usize..6,
            ops in proptest::collection::vec((0u8..3, 0u32..9), 1..300),
        ) {
            let mut m: LruMap<u32, u32> = LruMap::new(cap);
            // Most recent first: (key, value).
            let mut model: Vec<(u32, u32)> = Vec::new();
            for (n, (op, k)) in ops.into_iter().enumerate() {
                let n = n as u32;
                if op == 0 {
                    let want = model.iter().find(|e| e.0 == k).map(|e| e.1);
                    proptest::prop_assert_eq!(m.peek(&k).copied(), want);
                } else {
                    let v = m.get_or_insert_with(k, || n);
                    *v += 1;
                    let got = *v;
                    let e = match model.iter().position(|e| e.0 == k) {
                        Some(at) => model.remove(at),
                        None => {
                            if model.len() == cap {
                                model.pop();
                            }
                            (k, n)
                        }
                    };
                    model.insert(0, (k, e.1 + 1));
                    proptest::prop_assert_eq!(got, e.1 + 1);
                }
                proptest::prop_assert_eq!(m.len(), model.len());
            }
            for k in 0..9 {
                proptest::prop_assert_eq!(m.peek(&k).copied(), model.iter().find(|e| e.0 == k).map(|e| e.1));
            }
        }
    }

    #[test]
    fn evicts_least_recently_used_at_capacity() {
        let mut m: LruMap<u32, u32> = LruMap::new(3);
        for k in 0..3 {
            *m.get_or_insert_with(k, || 0) += 1;
        }
        *m.get_or_insert_with(0, || 0) += 1; // 0 is now most recent; 1 is least
        m.get_or_insert_with(9, || 0);
        assert_eq!(m.len(), 3);
        assert_eq!(m.peek(&1), None);
        assert_eq!(m.peek(&0), Some(&2));
        assert_eq!(m.evictions(), 1);
        for k in 100..10_000 {
            m.get_or_insert_with(k, || k);
            assert!(m.len() <= 3);
        }
        assert_eq!(m.peek(&9_999), Some(&9_999));
    }
}
