//! Token-bucket rate limiting. The caller supplies the time, so the limiters are pure and
//! tests drive them with any clock.
//!
//! - [`TokenBucket`]: one bucket.
//! - [`KeyedLimiter`]: one bucket per key (an IP address, a user name), with a bound on
//!   the number of keys it remembers.

use std::collections::HashMap;
use std::hash::Hash;

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
        Self::per_period(rate, 1000, burst, now_ms)
    }

    /// A full bucket refilled with `rate` tokens every `period_ms` milliseconds (e.g. a
    /// per-minute rate with `period_ms = 60_000`). A `rate` of 0 disables limiting.
    pub fn per_period(rate: u32, period_ms: u32, burst: u32, now_ms: u64) -> Self {
        let burst = f64::from(burst.max(1));
        let rate_per_ms = f64::from(rate) / f64::from(period_ms.max(1));
        Self { rate_per_ms, burst, tokens: burst, last_ms: now_ms }
    }

    /// Takes one token if available.
    pub fn try_take(&mut self, now_ms: u64) -> bool {
        if self.rate_per_ms == 0.0 {
            return true;
        }
        self.tokens = self.tokens_at(now_ms);
        self.last_ms = self.last_ms.max(now_ms);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// The tokens the bucket holds at `now_ms`, before taking any.
    fn tokens_at(&self, now_ms: u64) -> f64 {
        let elapsed = now_ms.saturating_sub(self.last_ms);
        // Precision loss only matters after 2^52 ms (≈ 142,000 years) of elapsed time.
        #[allow(clippy::cast_precision_loss)]
        let refill = elapsed as f64 * self.rate_per_ms;
        (self.tokens + refill).min(self.burst)
    }

    /// True if the bucket holds `burst` tokens at `now_ms` (always, with a zero rate): then
    /// replacing it with a new, full bucket changes nothing.
    pub fn is_full(&self, now_ms: u64) -> bool {
        self.rate_per_ms == 0.0 || self.tokens_at(now_ms) >= self.burst
    }

    /// About when the bucket is full again if nobody takes from it (to the millisecond,
    /// give or take rounding; [`is_full`](Self::is_full) is exact).
    fn full_at_ms(&self) -> u64 {
        let missing = self.burst - self.tokens;
        if self.rate_per_ms == 0.0 || missing <= 0.0 {
            return self.last_ms;
        }
        // At most burst / rate ≤ 2^32 * 1000 ms: the cast neither truncates nor wraps.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let wait = (missing / self.rate_per_ms).ceil() as u64;
        self.last_ms.saturating_add(wait)
    }
}

/// A [`TokenBucket`] per key, for limits such as login attempts per IP address and per
/// user name. Keys are created on first use with a full bucket, and forgotten again by
/// [`prune`](Self::prune) once their bucket is full (then they are indistinguishable from
/// a key never seen).
///
/// **Memory is bounded:** the limiter never holds more than `max_keys` buckets. When a new
/// key arrives and the map is at `max_keys`, it prunes; if no bucket is full yet, the new
/// key is **rejected** (fail closed). The keys typically come from the network, and an
/// attacker can produce as many as they like (spoofed user names, a whole IPv6 prefix), so
/// admitting every new key would let them grow memory without bound, while evicting a
/// partly-drained bucket to make room would reset it and let them bypass the limit for
/// the keys they target. Keys that already have a bucket are unaffected, and new keys are
/// admitted again as soon as buckets refill.
///
/// Pruning at capacity scans every bucket. To keep a stream of rejected new keys from
/// costing a scan each, the limiter remembers about when the first bucket will be full
/// again and does not scan before then, so most rejections are O(1) and a full map is
/// scanned at most once per millisecond of the caller's clock. A `max_keys` of 0 rejects
/// every key.
///
/// The map uses the standard library's randomly keyed hasher, so chosen keys cannot force
/// collisions.
#[derive(Debug, Clone)]
pub struct KeyedLimiter<K: Hash + Eq + Clone> {
    rate_per_s: u32,
    period_ms: u32,
    burst: u32,
    max_keys: usize,
    buckets: HashMap<K, TokenBucket>,
    /// About the earliest time a bucket can be full again: at capacity, no scan before it.
    next_full_ms: u64,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    /// A limiter allowing each key `rate_per_s` attempts per second with bursts of `burst`
    /// (as [`TokenBucket::new`]), remembering at most `max_keys` keys. A `rate_per_s` of 0
    /// disables limiting (and then no key is ever stored).
    pub fn new(rate_per_s: u32, burst: u32, max_keys: usize) -> Self {
        Self { rate_per_s, period_ms: 1000, burst, max_keys, buckets: HashMap::new(), next_full_ms: 0 }
    }

    /// Like [`KeyedLimiter::new`] with a rate per minute (login attempts are counted in
    /// minutes, not seconds).
    pub fn per_minute(rate_per_minute: u32, burst: u32, max_keys: usize) -> Self {
        Self { period_ms: 60_000, ..Self::new(rate_per_minute, burst, max_keys) }
    }

    /// Takes one token from `key`'s bucket at `now_ms`. False if the key is over its rate,
    /// or if it is new and the limiter is full of keys that are all still limited.
    pub fn try_take(&mut self, key: &K, now_ms: u64) -> bool {
        if self.rate_per_s == 0 {
            return true;
        }
        if let Some(bucket) = self.buckets.get_mut(key) {
            // Taking only makes this bucket full later: `next_full_ms` stays a lower bound.
            return bucket.try_take(now_ms);
        }
        if self.buckets.len() >= self.max_keys {
            if now_ms < self.next_full_ms {
                return false;
            }
            self.prune(now_ms);
            if self.buckets.len() >= self.max_keys {
                return false;
            }
        }
        let mut bucket = TokenBucket::per_period(self.rate_per_s, self.period_ms, self.burst, now_ms);
        let taken = bucket.try_take(now_ms);
        self.next_full_ms = self.next_full_ms.min(bucket.full_at_ms());
        self.buckets.insert(key.clone(), bucket);
        taken
    }

    /// Forgets every key whose bucket is full at `now_ms`. Call it now and then (say, once a
    /// minute) so that idle keys do not stay in memory until the map fills up.
    pub fn prune(&mut self, now_ms: u64) {
        let mut next = u64::MAX;
        self.buckets.retain(|_, bucket| {
            if bucket.is_full(now_ms) {
                return false;
            }
            // Not full now, so not before the next millisecond, whatever the rounding.
            next = next.min(bucket.full_at_ms().max(now_ms.saturating_add(1)));
            true
        });
        self.next_full_ms = next;
    }

    /// How many keys the limiter currently remembers.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// True if the limiter remembers no key.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
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

    #[test]
    fn bucket_is_full() {
        let mut b = TokenBucket::new(10, 2, 0);
        assert!(b.is_full(0));
        assert!(b.try_take(0));
        assert!(!b.is_full(0));
        assert!(!b.is_full(99));
        assert!(b.is_full(100));
        assert!(b.try_take(100) && b.try_take(100));
        assert!(!b.is_full(299));
        assert!(b.is_full(300));
        // Time going backwards neither panics nor refills.
        assert!(!b.is_full(50));
        assert!(TokenBucket::new(0, 1, 0).is_full(0));
    }

    #[test]
    fn keys_are_independent() {
        let mut l = KeyedLimiter::new(1, 2, 100);
        assert!(l.try_take(&"a", 0));
        assert!(l.try_take(&"a", 0));
        assert!(!l.try_take(&"a", 0));
        assert!(l.try_take(&"b", 0));
        assert!(l.try_take(&"b", 0));
        assert!(!l.try_take(&"b", 0));
        assert!(!l.try_take(&"a", 0));
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn keys_refill_with_time() {
        let mut l = KeyedLimiter::new(10, 1, 100);
        assert!(l.try_take(&1, 0));
        assert!(!l.try_take(&1, 50));
        assert!(l.try_take(&1, 100));
        assert!(!l.try_take(&1, 100));
        // Burst caps the refill after a long pause.
        assert!(l.try_take(&1, 1_000_000));
        assert!(!l.try_take(&1, 1_000_000));
    }

    #[test]
    fn prune_drops_only_full_buckets() {
        let mut l = KeyedLimiter::new(10, 2, 100);
        assert!(l.try_take(&"one", 0)); // full again at 100
        assert!(l.try_take(&"two", 0) && l.try_take(&"two", 0)); // full again at 200
        l.prune(99);
        assert_eq!(l.len(), 2);
        l.prune(100);
        assert_eq!(l.len(), 1);
        // The survivor kept its state: it has exactly one token at 100.
        assert!(l.try_take(&"two", 100));
        assert!(!l.try_take(&"two", 100));
        // A forgotten key starts over with a full bucket, as if it had been kept.
        assert!(l.try_take(&"one", 100) && l.try_take(&"one", 100));
        assert!(!l.try_take(&"one", 100));
        l.prune(1_000);
        assert!(l.is_empty());
    }

    #[test]
    fn zero_rate_stores_nothing() {
        let mut l = KeyedLimiter::new(0, 1, 1);
        for key in 0..1000 {
            assert!(l.try_take(&key, 0));
        }
        assert!(l.is_empty());
    }

    #[test]
    fn max_keys_fails_closed() {
        let mut l = KeyedLimiter::new(1, 1, 2);
        assert!(l.try_take(&"a", 0));
        assert!(l.try_take(&"b", 0));
        // Full of keys that are still limited: new keys are rejected, known keys keep
        // their own limit.
        assert!(!l.try_take(&"c", 0));
        assert!(!l.try_take(&"c", 500));
        assert!(!l.try_take(&"a", 500));
        assert_eq!(l.len(), 2);
        // Once buckets refill, they are pruned to make room.
        assert!(l.try_take(&"c", 1_000));
        assert!(l.len() <= 2);
        assert!(l.try_take(&"d", 1_000));
        assert_eq!(l.len(), 2);
        assert!(!l.try_take(&"e", 1_500));
        assert!(!l.try_take(&"c", 1_500));

        let mut none = KeyedLimiter::new(1, 1, 0);
        assert!(!none.try_take(&"a", 0));
        assert!(!none.try_take(&"a", 1_000_000));
        assert!(none.is_empty());
    }

    /// The skipped scans never keep a key out once a bucket is full again, even when the
    /// bucket that set the skip time was drained again meanwhile.
    #[test]
    fn skipped_scans_admit_as_soon_as_possible() {
        let mut l = KeyedLimiter::new(10, 1, 2);
        assert!(l.try_take(&"a", 0)); // full again at 100
        assert!(l.try_take(&"b", 50)); // full again at 150
        assert!(!l.try_take(&"c", 60)); // scans: next full at 100
        assert_eq!(l.next_full_ms, 100);
        assert!(!l.try_take(&"c", 99)); // no scan
        assert!(l.try_take(&"a", 100)); // a drained again: full at 200
        assert!(!l.try_take(&"c", 120)); // scans, frees nothing: next full at 150
        assert_eq!(l.next_full_ms, 150);
        assert!(!l.try_take(&"c", 149));
        assert!(l.try_take(&"c", 150)); // b pruned
        assert!(!l.try_take(&"d", 150));
        assert!(l.try_take(&"d", 200)); // a pruned
        assert_eq!(l.len(), 2);

        // Keys added after a scan lower the skip time.
        let mut l = KeyedLimiter::new(10, 1, 2);
        assert!(l.try_take(&1, 0));
        assert!(l.try_take(&2, 0));
        assert!(!l.try_take(&3, 10)); // scans: next full at 100
        assert!(l.try_take(&3, 100)); // 1 and 2 pruned; 3 full again at 200
        l.prune(150); // nothing full: next full at 200
        assert_eq!(l.next_full_ms, 200);
        assert!(l.try_take(&4, 150)); // room: 4 full again at 250
        assert!(!l.try_take(&5, 199));
        assert!(l.try_take(&5, 200)); // 3 pruned
    }

    proptest::proptest! {
        // No regression files: a failure prints its shrunk input instead.
        #![proptest_config(proptest::test_runner::Config {
            failure_persistence: None,
            ..proptest::test_runner::Config::default()
        })]

        /// With room for every key, the limiter answers exactly like one bucket per key
        /// that is never forgotten, however often it prunes. With less room it never holds
        /// more than `max_keys` keys.
        #[test]
        fn keyed_agrees_with_buckets(
            rate in 1..20u32,
            burst in 1..4u32,
            max_keys in 0..6usize,
            ops in proptest::collection::vec((0..5u8, 0..150u64, proptest::bool::weighted(0.1)), 1..200),
        ) {
            let mut roomy = KeyedLimiter::new(rate, burst, 5);
            let mut tight = KeyedLimiter::new(rate, burst, max_keys);
            let mut model: HashMap<u8, TokenBucket> = HashMap::new();
            let mut now = 0;
            for (key, dt, prune) in ops {
                now += dt;
                if prune {
                    roomy.prune(now);
                    tight.prune(now);
                    continue;
                }
                let expected =
                    model.entry(key).or_insert_with(|| TokenBucket::new(rate, burst, now)).try_take(now);
                proptest::prop_assert_eq!(roomy.try_take(&key, now), expected);
                let _ = tight.try_take(&key, now);
                proptest::prop_assert!(tight.len() <= max_keys);
            }
        }
    }
}
