//! Sliding replay window over sequence numbers (as IPsec's anti-replay
//! window): the highest sequence seen plus a 1024-bit map of the ones below
//! it. Late, reordered messages inside the window are accepted once; anything
//! older or seen before is refused. 136 bytes per sender key.

/// Width of the window in sequence numbers.
pub const WINDOW: u64 = 1024;

/// One sender key's window.
#[derive(Debug, Clone, Default)]
pub struct ReplayWindow {
    highest: u64,
    seen_any: bool,
    bits: [u64; (WINDOW / 64) as usize],
}

/// Why a sequence number is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayVerdict {
    /// New: accept (then call [`ReplayWindow::commit`]).
    Fresh,
    /// Seen before.
    Duplicate,
    /// Older than the window.
    TooOld,
}

impl ReplayWindow {
    /// Whether `seq` would be accepted; does not change the window.
    pub fn check(&self, seq: u64) -> ReplayVerdict {
        if !self.seen_any || seq > self.highest {
            return ReplayVerdict::Fresh;
        }
        let back = self.highest - seq;
        if back >= WINDOW {
            return ReplayVerdict::TooOld;
        }
        if self.bit(back) {
            ReplayVerdict::Duplicate
        } else {
            ReplayVerdict::Fresh
        }
    }

    /// Records `seq` as seen (call only after the message authenticated).
    pub fn commit(&mut self, seq: u64) {
        if !self.seen_any {
            self.seen_any = true;
            self.highest = seq;
            self.bits = Default::default();
            self.set(0);
            return;
        }
        if seq > self.highest {
            let shift = seq - self.highest;
            self.shift(shift);
            self.highest = seq;
            self.set(0);
        } else {
            let back = self.highest - seq;
            if back < WINDOW {
                self.set(back);
            }
        }
    }

    fn bit(&self, back: u64) -> bool {
        self.bits[(back / 64) as usize] >> (back % 64) & 1 == 1
    }

    fn set(&mut self, back: u64) {
        self.bits[(back / 64) as usize] |= 1 << (back % 64);
    }

    /// Moves every bit `n` places older.
    fn shift(&mut self, n: u64) {
        if n >= WINDOW {
            self.bits = Default::default();
            return;
        }
        let words = (n / 64) as usize;
        let bits = (n % 64) as u32;
        let len = self.bits.len();
        for i in (0..len).rev() {
            let src = i.checked_sub(words);
            let lo = src.map(|s| self.bits[s]).unwrap_or(0);
            let carry = src.and_then(|s| s.checked_sub(1)).map(|s| self.bits[s]).unwrap_or(0);
            self.bits[i] = if bits == 0 { lo } else { (lo << bits) | (carry >> (64 - bits)) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn in_order_reordered_duplicate_and_old() {
        let mut w = ReplayWindow::default();
        for s in [5, 6, 7] {
            assert_eq!(w.check(s), ReplayVerdict::Fresh);
            w.commit(s);
        }
        assert_eq!(w.check(6), ReplayVerdict::Duplicate);
        assert_eq!(w.check(4), ReplayVerdict::Fresh, "late but inside the window");
        w.commit(4);
        assert_eq!(w.check(4), ReplayVerdict::Duplicate);
        w.commit(7 + WINDOW);
        assert_eq!(w.check(7), ReplayVerdict::TooOld);
        assert_eq!(w.check(8), ReplayVerdict::Fresh);
    }

    proptest! {
        /// Against a model: every sequence is accepted exactly once unless it fell out of the window.
        #[test]
        fn matches_a_set_model(seqs in proptest::collection::vec(0u64..3000, 1..400)) {
            let mut w = ReplayWindow::default();
            let mut seen = std::collections::HashSet::new();
            let mut highest: Option<u64> = None;
            for s in seqs {
                let expect = if seen.contains(&s) {
                    if highest.unwrap() - s >= WINDOW { ReplayVerdict::TooOld } else { ReplayVerdict::Duplicate }
                } else if highest.is_some_and(|h| s < h && h - s >= WINDOW) {
                    ReplayVerdict::TooOld
                } else {
                    ReplayVerdict::Fresh
                };
                prop_assert_eq!(w.check(s), expect, "seq {}", s);
                if expect == ReplayVerdict::Fresh {
                    w.commit(s);
                    seen.insert(s);
                    highest = Some(highest.map_or(s, |h| h.max(s)));
                }
            }
        }
    }
}
