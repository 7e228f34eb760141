//! Token-bucket rate limiting. The caller supplies the time, so the limiter is pure and
//! tests drive it with any clock.

/// A token bucket: `rate` tokens per second, holding at most `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate_per_ms: f64,
    burst: f64,
    tokens: f64,
    last_ms: u64,
}

impl TokenBucket {
    /// A full bucket. `rate` is tokens per second; `burst` is the capacity. A `rate` of 0
    /// disables limiting.
    pub fn new(rate: u32, burst: u32, now_ms: u64) -> Self {
        let burst = f64::from(burst.max(1));
        Self { rate_per_ms: f64::from(rate) / 1000.0, burst, tokens: burst, last_ms: now_ms }
    }

    /// Takes one token if available.
    pub fn try_take(&mut self, now_ms: u64) -> bool {
        if self.rate_per_ms == 0.0 {
            return true;
        }
        let elapsed = now_ms.saturating_sub(self.last_ms);
        self.last_ms = self.last_ms.max(now_ms);
        // Precision loss only matters after 2^52 ms (≈ 142,000 years) of elapsed time.
        #[allow(clippy::cast_precision_loss)]
        let refill = elapsed as f64 * self.rate_per_ms;
        self.tokens = (self.tokens + refill).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let mut b = TokenBucket::new(10, 3, 0);
        assert!(b.try_take(0));
        assert!(b.try_take(0));
        assert!(b.try_take(0));
        assert!(!b.try_take(0));
        assert!(!b.try_take(50));
        assert!(b.try_take(100));
        assert!(!b.try_take(100));
        // Never exceeds burst after a long pause.
        for _ in 0..3 {
            assert!(b.try_take(1_000_000));
        }
        assert!(!b.try_take(1_000_000));
    }

    #[test]
    fn zero_rate_is_unlimited() {
        let mut b = TokenBucket::new(0, 1, 0);
        for _ in 0..1000 {
            assert!(b.try_take(0));
        }
    }
}
