//! A short-lived cache of verified session lookups.
//!
//! Verifying a session token is a SHA-256 and one indexed SQLite read (a few microseconds,
//! see `docs/benchmarks.md` § Auth). Reconnect waves present the same tokens again within
//! moments, so lookups are remembered for half of `auth.session_cache_ms` (the store may
//! reuse a read snapshot for the other half). Every change this server makes to a session
//! (rotation, logout, password change, deletion, expiry sweep) removes its entry first, so
//! the cache is never staler than the database for in-process changes; a change made by
//! another process (the CLI) is seen at most `session_cache_ms` late.

use std::collections::HashMap;

use parking_lot::Mutex;
use tether_store::{Session, SessionId, TokenHash};

#[derive(Default)]
struct Inner {
    by_hash: HashMap<TokenHash, (Session, i64)>,
    by_id: HashMap<SessionId, TokenHash>,
}

/// The cache.
pub struct SessionCache {
    ttl_ms: i64,
    /// Most entries kept; beyond, the cache starts over (cheap, and bounded).
    max_entries: usize,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for SessionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCache").field("ttl_ms", &self.ttl_ms).finish_non_exhaustive()
    }
}

impl SessionCache {
    /// A cache keeping up to `max_entries` lookups for `ttl_ms` (either 0 disables it).
    pub fn new(ttl_ms: u64, max_entries: usize) -> Self {
        let ttl_ms = if max_entries == 0 { 0 } else { i64::try_from(ttl_ms).unwrap_or(i64::MAX) };
        Self { ttl_ms, max_entries, inner: Mutex::new(Inner::default()) }
    }

    /// The session for `hash` if it was looked up less than the TTL ago.
    pub fn get(&self, hash: &TokenHash, now_ms: i64) -> Option<Session> {
        if self.ttl_ms == 0 {
            return None;
        }
        let inner = self.inner.lock();
        let (s, at) = inner.by_hash.get(hash)?;
        (now_ms.saturating_sub(*at) < self.ttl_ms).then(|| s.clone())
    }

    /// Remembers a lookup.
    pub fn put(&self, hash: TokenHash, session: Session, now_ms: i64) {
        if self.ttl_ms == 0 {
            return;
        }
        let mut inner = self.inner.lock();
        if inner.by_hash.len() >= self.max_entries {
            inner.by_hash.clear();
            inner.by_id.clear();
        }
        if let Some(old) = inner.by_id.insert(session.id, hash) {
            inner.by_hash.remove(&old);
        }
        inner.by_hash.insert(hash, (session, now_ms));
    }

    /// Forgets sessions (called before telling anyone they changed).
    pub fn forget(&self, ids: &[SessionId]) {
        if self.ttl_ms == 0 {
            return;
        }
        let mut inner = self.inner.lock();
        for id in ids {
            if let Some(h) = inner.by_id.remove(id) {
                inner.by_hash.remove(&h);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: SessionId) -> Session {
        Session { id, user_id: 1, user_name: "u".into(), persistent: false, created_ms: 0, expires_ms: 10 }
    }

    #[test]
    fn entries_expire_and_are_forgotten() {
        let c = SessionCache::new(1_000, 10);
        c.put([1; 32], session(7), 0);
        assert_eq!(c.get(&[1; 32], 999).map(|s| s.id), Some(7));
        assert!(c.get(&[1; 32], 1_000).is_none());
        c.put([1; 32], session(7), 2_000);
        // A rotation re-keys the session: the old digest is gone.
        c.put([2; 32], session(7), 2_000);
        assert!(c.get(&[1; 32], 2_000).is_none());
        c.forget(&[7]);
        assert!(c.get(&[2; 32], 2_000).is_none());
        for off in [SessionCache::new(0, 10), SessionCache::new(1_000, 0)] {
            off.put([1; 32], session(1), 0);
            assert!(off.get(&[1; 32], 0).is_none());
        }
        // Full: it starts over rather than growing.
        let small = SessionCache::new(1_000, 2);
        small.put([1; 32], session(1), 0);
        small.put([2; 32], session(2), 0);
        small.put([3; 32], session(3), 0);
        assert!(small.get(&[1; 32], 0).is_none() && small.get(&[2; 32], 0).is_none());
        assert_eq!(small.get(&[3; 32], 0).map(|s| s.id), Some(3));
    }
}
