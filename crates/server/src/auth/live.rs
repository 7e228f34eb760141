//! Live sessions: which connections hold which login session, so that revoking a session
//! (logout elsewhere, password change, account deletion) reaches them at once.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tether_engine::hub::ConnId;
use tether_store::SessionId;

/// Why a session was revoked (sent to the client as `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// Logged out (here or from another connection, or by an administrator).
    LoggedOut,
    /// The password changed elsewhere.
    PasswordChanged,
    /// The account was deleted.
    AccountDeleted,
    /// The session expired and was not "remember me".
    Expired,
}

impl Revoked {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Revoked::LoggedOut => "logged_out",
            Revoked::PasswordChanged => "password_changed",
            Revoked::AccountDeleted => "account_deleted",
            Revoked::Expired => "expired",
        }
    }
}

/// What happened to a live session.
#[derive(Debug, Clone)]
pub enum LiveEvent {
    /// It ended; the connection loses its rights.
    Revoked(Revoked),
    /// Its token was replaced (refresh or renewal on another connection): every
    /// connection holding it takes the new token and expiry.
    Rotated(Arc<super::Issued>),
}

/// Called (on the notifying task) to tell one connection; it must not block.
pub type Notify = Arc<dyn Fn(LiveEvent) + Send + Sync>;

/// The registry.
#[derive(Default)]
pub struct LiveSessions {
    map: Mutex<HashMap<SessionId, Vec<(ConnId, Notify)>>>,
}

impl std::fmt::Debug for LiveSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSessions").field("sessions", &self.map.lock().len()).finish()
    }
}

impl LiveSessions {
    /// Records that `conn` holds `session`.
    pub fn register(&self, session: SessionId, conn: ConnId, notify: Notify) {
        self.map.lock().entry(session).or_default().push((conn, notify));
    }

    /// Forgets that `conn` holds `session`.
    pub fn unregister(&self, session: SessionId, conn: ConnId) {
        let mut map = self.map.lock();
        if let Some(v) = map.get_mut(&session) {
            v.retain(|(c, _)| *c != conn);
            if v.is_empty() {
                map.remove(&session);
            }
        }
    }

    /// Tells every connection holding one of `sessions`, except `except`, and forgets
    /// them. Returns how many connections were told.
    pub fn revoke(&self, sessions: &[SessionId], why: Revoked, except: Option<ConnId>) -> usize {
        let mut told = Vec::new();
        {
            let mut map = self.map.lock();
            for s in sessions {
                if let Some(conns) = map.remove(s) {
                    for (c, n) in conns {
                        if Some(c) == except {
                            continue;
                        }
                        told.push(n);
                    }
                }
            }
        }
        // Notified outside the lock: a notifier only queues an event, but it must never be
        // able to deadlock against register/unregister.
        for n in &told {
            n(LiveEvent::Revoked(why));
        }
        told.len()
    }

    /// Tells every connection holding `session`, except `except`, that its token was
    /// replaced. Returns how many were told.
    pub fn rotated(&self, session: SessionId, issued: &Arc<super::Issued>, except: Option<ConnId>) -> usize {
        let told: Vec<Notify> = self
            .map
            .lock()
            .get(&session)
            .map(|v| v.iter().filter(|(c, _)| Some(*c) != except).map(|(_, n)| Arc::clone(n)).collect())
            .unwrap_or_default();
        for n in &told {
            n(LiveEvent::Rotated(Arc::clone(issued)));
        }
        told.len()
    }

    /// Every live session id.
    pub fn ids(&self) -> Vec<SessionId> {
        self.map.lock().keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn revoke_tells_holders_except_one() {
        let live = LiveSessions::default();
        let hits = Arc::new(AtomicUsize::new(0));
        let n = |h: &Arc<AtomicUsize>| -> Notify {
            let h = Arc::clone(h);
            Arc::new(move |_: LiveEvent| {
                h.fetch_add(1, Ordering::SeqCst);
            })
        };
        live.register(1, 10, n(&hits));
        live.register(1, 11, n(&hits));
        live.register(2, 12, n(&hits));
        live.unregister(2, 12);
        assert_eq!(live.ids(), vec![1]);
        assert_eq!(live.revoke(&[1, 2], Revoked::LoggedOut, Some(10)), 1);
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        assert!(live.ids().is_empty());
    }
}
