//! The intrusive least-recently-used list that every bounded table threads
//! through its slab (the flow table, the per-host and per-pair feature maps):
//! entries carry their neighbours' slab indices, so touching or evicting an
//! entry is O(1) with no allocation, and the tail is always the entry to
//! forget first when a spoofed flood fills the table.

/// "No entry" in a link or at an end of the list.
pub const NIL: u32 = u32::MAX;

/// A slab entry that can sit on a [`RecencyList`].
pub trait Linked {
    /// Slab indices of the more recent and the less recent neighbour.
    fn links(&self) -> (u32, u32);
    /// Sets the more recent neighbour.
    fn set_prev(&mut self, prev: u32);
    /// Sets the less recent neighbour.
    fn set_next(&mut self, next: u32);
}

/// Most recent (`head`) and least recent (`tail`) entry; [`NIL`] when empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecencyList {
    /// The most recently touched entry.
    pub head: u32,
    /// The least recently touched entry: the next to evict.
    pub tail: u32,
}

impl Default for RecencyList {
    fn default() -> Self {
        RecencyList { head: NIL, tail: NIL }
    }
}

impl RecencyList {
    /// Takes entry `i` out of the list (its own links are left stale).
    pub fn unlink<T: Linked>(&mut self, slab: &mut [T], i: u32) {
        let (prev, next) = slab[i as usize].links();
        if prev != NIL {
            slab[prev as usize].set_next(next);
        } else {
            self.head = next;
        }
        if next != NIL {
            slab[next as usize].set_prev(prev);
        } else {
            self.tail = prev;
        }
    }

    /// Makes entry `i` (not on the list) the most recent.
    pub fn push_front<T: Linked>(&mut self, slab: &mut [T], i: u32) {
        let old = self.head;
        slab[i as usize].set_prev(NIL);
        slab[i as usize].set_next(old);
        if old != NIL {
            slab[old as usize].set_prev(i);
        } else {
            self.tail = i;
        }
        self.head = i;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct E(u32, u32);
    impl Linked for E {
        fn links(&self) -> (u32, u32) {
            (self.0, self.1)
        }
        fn set_prev(&mut self, p: u32) {
            self.0 = p;
        }
        fn set_next(&mut self, n: u32) {
            self.1 = n;
        }
    }

    fn order(l: &RecencyList, slab: &[E]) -> Vec<u32> {
        let mut out = vec![];
        let mut i = l.head;
        while i != NIL {
            out.push(i);
            i = slab[i as usize].1;
        }
        out
    }

    #[test]
    fn push_unlink_and_touch_keep_head_tail_and_both_directions_consistent() {
        let mut slab: Vec<E> = (0..4).map(|_| E(NIL, NIL)).collect();
        let mut l = RecencyList::default();
        for i in 0..4 {
            l.push_front(&mut slab, i);
        }
        assert_eq!(order(&l, &slab), [3, 2, 1, 0]);
        assert_eq!(l.tail, 0);
        l.unlink(&mut slab, 0); // evict the tail
        assert_eq!((order(&l, &slab), l.tail), (vec![3, 2, 1], 1));
        l.unlink(&mut slab, 2); // touch a middle entry
        l.push_front(&mut slab, 2);
        assert_eq!(order(&l, &slab), [2, 3, 1]);
        assert_eq!(slab[1].0, 3, "back links follow");
        for i in [2, 3, 1] {
            l.unlink(&mut slab, i);
        }
        assert_eq!(l, RecencyList::default());
    }
}
