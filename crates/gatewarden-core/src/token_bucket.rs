//! A token bucket: how the detector caps verdicts per second and the status
//! page caps requests per client, so a flood of events cannot become a
//! flood of work.

/// `rate` tokens per second, at most `burst` saved up; time in nanoseconds
/// from any monotonic or wall origin the caller picks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    tokens: f64,
    last_ns: Option<u64>,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens.
    pub fn full(burst: f64) -> TokenBucket {
        TokenBucket { tokens: burst, last_ns: None }
    }

    /// Tokens now (after the last refill).
    pub fn tokens(&self) -> f64 {
        self.tokens
    }

    /// Caps the saved tokens at a new `burst` (settings changed).
    pub fn cap(&mut self, burst: f64) {
        self.tokens = self.tokens.min(burst);
    }

    /// Refills for the time since the last call (a clock that went back refills nothing).
    pub fn refill(&mut self, now_ns: u64, rate: f64, burst: f64) {
        if let Some(last) = self.last_ns {
            if now_ns > last {
                let dt = (now_ns - last) as f64 / 1e9;
                self.tokens = (self.tokens + dt * rate).min(burst);
            }
        }
        if self.last_ns.is_none_or(|last| now_ns > last) {
            self.last_ns = Some(now_ns);
        }
    }

    /// Takes one token: `Ok` if there was one, else `Err(seconds until the next)`.
    pub fn take(&mut self, now_ns: u64, rate: f64, burst: f64) -> Result<(), f64> {
        self.refill(now_ns, rate, burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err((1.0 - self.tokens) / rate.max(f64::MIN_POSITIVE))
        }
    }

    /// Whether the bucket, refilled to `now_ns`, would be full: an idle client that can be forgotten.
    pub fn full_at(&self, now_ns: u64, rate: f64, burst: f64) -> bool {
        let dt = self.last_ns.map_or(f64::INFINITY, |last| now_ns.saturating_sub(last) as f64 / 1e9);
        self.tokens + dt * rate >= burst
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let mut b = TokenBucket::full(3.0);
        for _ in 0..3 {
            assert!(b.take(0, 1.0, 3.0).is_ok());
        }
        let wait = b.take(0, 1.0, 3.0).unwrap_err();
        assert!((wait - 1.0).abs() < 1e-9, "{wait}");
        assert!(b.take(1_000_000_000, 1.0, 3.0).is_ok(), "one token a second");
        assert!(b.take(1_000_000_000, 1.0, 3.0).is_err());
    }

    #[test]
    fn a_clock_going_back_refills_nothing() {
        let mut b = TokenBucket::full(1.0);
        assert!(b.take(5_000_000_000, 1.0, 1.0).is_ok());
        assert!(b.take(1_000_000_000, 1.0, 1.0).is_err());
        assert!(!b.full_at(5_000_000_000, 1.0, 1.0));
        assert!(b.full_at(6_000_000_000, 1.0, 1.0));
    }
}
