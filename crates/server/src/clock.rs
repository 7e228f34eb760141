//! Wall-clock time, injectable so that expiry and refresh can be tested without sleeping.
//!
//! Token expiry is defined in Unix time (JWT `exp`, session `expires_ms`), so the auth code
//! reads this clock instead of the OS directly. A [`Clock::manual`] clock only moves when a
//! test calls [`Clock::advance`], and [`Clock::sleep_until`] wakes exactly then.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

/// A source of Unix time in milliseconds. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Clock(Arc<Inner>);

#[derive(Debug)]
enum Inner {
    System,
    Manual { now_ms: AtomicI64, changed: watch::Sender<i64> },
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl Clock {
    /// The operating system's clock.
    pub fn system() -> Self {
        Self(Arc::new(Inner::System))
    }

    /// A clock that starts at `start_ms` and moves only through [`Clock::advance`].
    pub fn manual(start_ms: i64) -> Self {
        let (changed, _) = watch::channel(start_ms);
        Self(Arc::new(Inner::Manual { now_ms: AtomicI64::new(start_ms), changed }))
    }

    /// Now, in Unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        match &*self.0 {
            Inner::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            Inner::Manual { now_ms, .. } => now_ms.load(Ordering::SeqCst),
        }
    }

    /// Now, in whole Unix seconds (never negative).
    pub fn now_s(&self) -> u64 {
        u64::try_from(self.now_ms() / 1000).unwrap_or(0)
    }

    /// Moves a manual clock forward and wakes every sleeper whose time has come. Returns
    /// `false` (and does nothing) on the system clock.
    pub fn advance(&self, by: Duration) -> bool {
        match &*self.0 {
            Inner::System => false,
            Inner::Manual { now_ms, changed } => {
                let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
                let now = now_ms.fetch_add(by, Ordering::SeqCst).saturating_add(by);
                changed.send_replace(now);
                true
            }
        }
    }

    /// Waits until the clock reads at least `unix_ms`.
    pub async fn sleep_until(&self, unix_ms: i64) {
        match &*self.0 {
            Inner::System => loop {
                let now = self.now_ms();
                if now >= unix_ms {
                    return;
                }
                // Re-read the wall clock at least every minute: it may be stepped (NTP), and
                // a sleep measured on the monotonic clock would not notice.
                let left = u64::try_from(unix_ms - now).unwrap_or(0).min(60_000);
                tokio::time::sleep(Duration::from_millis(left)).await;
            },
            Inner::Manual { changed, .. } => {
                let mut rx = changed.subscribe();
                while self.now_ms() < unix_ms {
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_clock_wakes_sleepers_on_advance() {
        let c = Clock::manual(1_000);
        let c2 = c.clone();
        let t = tokio::spawn(async move { c2.sleep_until(5_000).await });
        tokio::task::yield_now().await;
        assert!(c.advance(Duration::from_millis(3_000)));
        tokio::task::yield_now().await;
        assert!(!t.is_finished());
        c.advance(Duration::from_millis(1_000));
        t.await.unwrap();
        assert_eq!(c.now_ms(), 5_000);
        assert_eq!(c.now_s(), 5);
    }

    #[test]
    fn system_clock_is_recent() {
        let c = Clock::system();
        assert!(c.now_ms() > 1_700_000_000_000);
        assert!(!c.advance(Duration::from_secs(1)));
    }
}
