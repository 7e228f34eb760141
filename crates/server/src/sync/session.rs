//! Jetstream sessions: what outlives a socket.
//!
//! A session is created by `SessionCreate` and identified by its token. It keeps the
//! indices of both directions, the server messages the client has not acknowledged yet
//! (resent on `Ping{resendMissing}`, typically after a resume on a new socket), and the
//! scopes it fetched. A socket attaches to a session; when it drops, the session stays,
//! queueing messages, until it expires after `sync.session_expiry_s` without a client
//! message.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use parking_lot::Mutex;
use tether_engine::Sink;
use tether_proto::jetstream::{ServerMessage, WireError};
use tokio::time::Instant;

use crate::auth::Principal;
use crate::conn::Mailbox;
use crate::outbox::{Frame, Outbox};

use super::scope::ScopeHandle;

/// Events for a Jetstream socket's loop (from its session, or from the task verifying
/// its credential).
#[derive(Debug)]
pub(crate) enum SessionEvent {
    /// Another socket resumed this session: close this one.
    Replaced,
    /// The session expired or was dropped for holding too much: close with 4097.
    Expired,
    /// The credential of `SessionCreate` was checked.
    Verified(Result<Principal, tether_proto::ProtoError>),
}

/// The socket attached to a session.
#[derive(Debug)]
struct Attached {
    conn_id: u64,
    outbox: Arc<Outbox>,
    events: Mailbox<SessionEvent>,
}

/// A fetched scope, at its `scopeIndex` in the session's list.
#[derive(Debug, Clone)]
pub(crate) struct FetchedScope {
    /// The scope's actor.
    pub(crate) handle: ScopeHandle,
}

#[derive(Debug)]
struct Inner {
    /// Index of the next reliable server message (`SessionCreateReply` had 0).
    next_index: u64,
    /// Highest index received from the client (duplicates are dropped).
    last_client_index: u64,
    /// Reliable messages handed to the socket (or waiting for one) and not acknowledged
    /// yet, oldest first: (index, the message's JSON object, a slice of its frame).
    unacked: VecDeque<(u64, Bytes)>,
    /// Messages numbered but not handed to the socket yet: the frame being built, `[` and
    /// the messages so far, separated by commas (see [`Session::queue`]).
    pending: Vec<u8>,
    /// Index and place in `pending` of each of its messages.
    pending_msgs: Vec<(u64, Range<usize>)>,
    /// Size of the last frame flushed: the next one is likely alike, and reserving that
    /// much at once saves the copies of growing it.
    pending_hint: usize,
    attached: Option<Attached>,
    scopes: Vec<FetchedScope>,
    last_active: Instant,
    /// The last resend frame handed to the socket.
    resend: Option<Utf8Bytes>,
}

impl Inner {
    /// Numbers a message and appends it to the frame being built.
    fn push_pending(&mut self, encode: impl FnOnce(u64, &mut Vec<u8>)) {
        let index = self.next_index;
        self.next_index += 1;
        let buf = &mut self.pending;
        if buf.is_empty() {
            buf.reserve(self.pending_hint.clamp(256, 1 << 20));
            buf.push(b'[');
        } else {
            buf.push(b',');
        }
        let start = buf.len();
        encode(index, buf);
        let end = buf.len();
        self.pending_msgs.push((index, start..end));
    }

    /// Closes the frame being built, keeps its messages until acknowledged and hands it
    /// to the attached socket, if any.
    fn flush_pending(&mut self) {
        if self.pending_msgs.is_empty() {
            return;
        }
        let mut buf = std::mem::take(&mut self.pending);
        buf.push(b']');
        self.pending_hint = buf.len();
        let frame = Bytes::from(buf);
        for (index, range) in self.pending_msgs.drain(..) {
            self.unacked.push_back((index, frame.slice(range)));
        }
        if let Some(a) = &self.attached {
            // A refused push means the socket is overflowing or closing: it will be closed
            // as a slow consumer, and the client's resume resends from `unacked`.
            a.outbox.push(&Frame { text: utf8(frame), at: Instant::now() });
        }
    }
}

/// One Jetstream session.
#[derive(Debug)]
pub(crate) struct Session {
    /// Process-unique id (scope membership is keyed by it).
    pub(crate) id: u64,
    /// The resume token.
    pub(crate) token: String,
    /// Who the client is, as verified at `SessionCreate`.
    pub(crate) principal: Principal,
    /// Most unacknowledged messages kept before the session is dropped.
    max_unacked: usize,
    /// Set once the session is over; scopes stop delivering to it.
    expired: AtomicBool,
    inner: Mutex<Inner>,
}

impl Session {
    /// A new session (its `SessionCreateReply` is index 0, sent by the caller).
    pub(crate) fn new(id: u64, token: String, principal: Principal, max_unacked: usize) -> Self {
        Self {
            id,
            token,
            principal,
            max_unacked,
            expired: AtomicBool::new(false),
            inner: Mutex::new(Inner {
                next_index: 1,
                last_client_index: 0,
                unacked: VecDeque::new(),
                pending: Vec::new(),
                pending_msgs: Vec::new(),
                pending_hint: 0,
                attached: None,
                scopes: Vec::new(),
                last_active: Instant::now(),
                resend: None,
            }),
        }
    }

    /// Attaches a socket, detaching (and closing) any previous one.
    pub(crate) fn attach(&self, conn_id: u64, outbox: Arc<Outbox>, events: Mailbox<SessionEvent>) {
        let mut inner = self.inner.lock();
        inner.last_active = Instant::now();
        if let Some(old) = inner.attached.replace(Attached { conn_id, outbox, events }) {
            old.events.send(SessionEvent::Replaced);
        }
    }

    /// Detaches the socket `conn_id` if it is still the attached one.
    pub(crate) fn detach(&self, conn_id: u64) {
        let mut inner = self.inner.lock();
        if inner.attached.as_ref().is_some_and(|a| a.conn_id == conn_id) {
            inner.attached = None;
        }
    }

    /// Notes client activity (any message) for the inactivity expiry.
    pub(crate) fn touch(&self) {
        self.inner.lock().last_active = Instant::now();
    }

    /// When the client was last heard from.
    pub(crate) fn last_active(&self) -> Instant {
        self.inner.lock().last_active
    }

    /// Records a client message index: `false` if it is a duplicate to drop (index 0 is
    /// unreliable and never a duplicate).
    pub(crate) fn accept_client_index(&self, index: u64) -> bool {
        if index == 0 {
            return true;
        }
        let mut inner = self.inner.lock();
        if index <= inner.last_client_index {
            return false;
        }
        inner.last_client_index = index;
        true
    }

    /// The highest client index received (the `ack` of server Pings).
    pub(crate) fn last_client_index(&self) -> u64 {
        self.inner.lock().last_client_index
    }

    /// True once the session is over.
    pub(crate) fn is_expired(&self) -> bool {
        self.expired.load(Ordering::Acquire)
    }

    /// Ends the session: the attached socket is told (and closes with 4097), queued
    /// messages are dropped. Returns the scopes it had fetched, for the caller to leave.
    pub(crate) fn expire(&self) -> Vec<FetchedScope> {
        self.expired.store(true, Ordering::Release);
        let mut inner = self.inner.lock();
        inner.unacked.clear();
        inner.pending = Vec::new();
        inner.pending_msgs.clear();
        if let Some(a) = inner.attached.take() {
            a.events.send(SessionEvent::Expired);
        }
        std::mem::take(&mut inner.scopes)
    }

    /// Adds a fetched scope; returns its `scopeIndex`, or `None` at `max` scopes. A scope
    /// fetched again keeps its first index (as the reference does).
    pub(crate) fn add_scope(&self, scope: FetchedScope, max: usize) -> Option<u64> {
        let mut inner = self.inner.lock();
        if let Some(i) = inner.scopes.iter().position(|s| s.handle.key == scope.handle.key) {
            // The newest actor of the scope (an unloaded one has been replaced).
            inner.scopes[i] = scope;
            return u64::try_from(i).ok();
        }
        if inner.scopes.len() >= max {
            return None;
        }
        inner.scopes.push(scope);
        u64::try_from(inner.scopes.len() - 1).ok()
    }

    /// The scope at `scopeIndex`.
    pub(crate) fn scope(&self, index: u64) -> Option<FetchedScope> {
        let i = usize::try_from(index).ok()?;
        self.inner.lock().scopes.get(i).cloned()
    }

    /// Sends a reliable message: `encode` writes the JSON object for the index it is given.
    /// The message is kept until acknowledged and goes to the attached socket, if any, in
    /// index order (with any message [`queue`](Self::queue)d before it, in the same frame).
    /// Returns `false` if the session is over or overflowed (and is now over).
    pub(crate) fn send(&self, encode: impl FnOnce(u64, &mut Vec<u8>)) -> bool {
        let ok = self.queue(encode);
        if ok {
            self.flush();
        }
        ok
    }

    /// Numbers a reliable message like [`send`](Self::send) but holds it back until the
    /// next [`flush`](Self::flush), so that all the messages a scope has for this session
    /// from one batch leave as one `[m1,m2,…]` frame: one allocation, one queue push and
    /// one WebSocket frame per session per batch instead of one per message (the
    /// reference batches the same way). Whoever queues must flush.
    pub(crate) fn queue(&self, encode: impl FnOnce(u64, &mut Vec<u8>)) -> bool {
        if self.is_expired() {
            return false;
        }
        let mut inner = self.inner.lock();
        if inner.unacked.len() + inner.pending_msgs.len() >= self.max_unacked {
            drop(inner);
            self.overflowed();
            return false;
        }
        inner.push_pending(encode);
        true
    }

    /// Sends one message per item, in order, in one frame with anything queued before,
    /// taking the session's lock once: a scope's fan-out to a member that is not replied
    /// to in the batch. (Locking per message was the costliest part of that fan-out: the
    /// lock's cache line comes from the core that ran the socket's task.) Returns `false`
    /// like [`send`](Self::send).
    pub(crate) fn send_each<T>(
        &self,
        items: impl IntoIterator<Item = T>,
        mut encode: impl FnMut(T, u64, &mut Vec<u8>),
    ) -> bool {
        if self.is_expired() {
            return false;
        }
        let mut inner = self.inner.lock();
        for item in items {
            if inner.unacked.len() + inner.pending_msgs.len() >= self.max_unacked {
                drop(inner);
                self.overflowed();
                return false;
            }
            inner.push_pending(|index, buf| encode(item, index, buf));
        }
        inner.flush_pending();
        true
    }

    /// Hands the messages [`queue`](Self::queue)d so far to the attached socket as one
    /// frame (they are kept until acknowledged either way). Cheap when nothing is queued.
    pub(crate) fn flush(&self) {
        self.inner.lock().flush_pending();
    }

    /// The client let `max_unacked` messages pile up: the session is over.
    fn overflowed(&self) {
        tracing::info!(session = self.id, "jetstream session dropped: too many unacknowledged messages");
        // The caller (a scope) notices `false`; the registry sweep removes the session.
        self.expire();
    }

    /// Refuses a `ScopeSync`: a `ScopeSyncReply` giving each of its `count` fragments
    /// `error`.
    pub(crate) fn refuse_sync(&self, reply_to: u64, count: usize, error: &WireError) {
        let replies = vec![Some(error.clone()); count];
        self.send(|index, buf| {
            ServerMessage::ScopeSyncReply { index, reply_to, fragment_replies: &replies }.encode(buf);
        });
    }

    /// Refuses a `ScopeFetch` with `error` (and [`super::NO_SCOPE_INDEX`]).
    pub(crate) fn refuse_fetch(&self, reply_to: u64, error: &WireError) {
        self.send(|index, buf| {
            ServerMessage::ScopeFetchReply {
                index,
                reply_to,
                scope_index: Some(super::NO_SCOPE_INDEX),
                error: Some(error),
            }
            .encode(buf);
        });
    }

    /// Handles a client `Ping`: forgets acknowledged messages and, with `resendMissing`,
    /// sends one frame to the attached socket: our `Ping` followed by every
    /// unacknowledged message (as the reference does).
    pub(crate) fn on_ping(&self, ack: u64, resend_missing: bool) {
        let mut inner = self.inner.lock();
        while inner.unacked.front().is_some_and(|(i, _)| *i <= ack) {
            inner.unacked.pop_front();
        }
        if !resend_missing {
            return;
        }
        // A resend still waiting to be written already holds every unacknowledged message
        // (later ones are queued behind it): building another would only let a client that
        // repeats `resendMissing` make the server copy its whole backlog over and over.
        if let (Some(a), Some(pending)) = (&inner.attached, &inner.resend)
            && a.outbox.front_is(pending)
        {
            return;
        }
        let mut buf = Vec::with_capacity(64 + inner.unacked.iter().map(|(_, m)| m.len() + 1).sum::<usize>());
        buf.push(b'[');
        ServerMessage::Ping { index: 0, ack: inner.last_client_index, resend_missing: true }.encode(&mut buf);
        for (_, message) in &inner.unacked {
            buf.push(b',');
            buf.extend_from_slice(message);
        }
        buf.push(b']');
        // Whatever the socket still had queued is in `unacked` too: drop it, or the client
        // would see those indices twice and take it as a gap. Under the lock, so no scope
        // can slip a message in between.
        if let Some(a) = &inner.attached {
            let frame = utf8(Bytes::from(buf));
            a.outbox.clear();
            a.outbox.push(&Frame { text: frame.clone(), at: Instant::now() });
            inner.resend = Some(frame);
        }
    }

    /// Number of unacknowledged messages (for tests and metrics).
    #[cfg(test)]
    pub(crate) fn unacked_len(&self) -> usize {
        self.inner.lock().unacked.len()
    }
}

/// Bytes the encoders produced (always UTF-8) as a frame.
fn utf8(buf: Bytes) -> Utf8Bytes {
    match Utf8Bytes::try_from(buf.clone()) {
        Ok(s) => s,
        // The encoders write JSON built from Rust strings: unreachable, but no panic.
        Err(_) => Utf8Bytes::from(String::from_utf8_lossy(&buf).into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    fn session(max_unacked: usize) -> (Session, Arc<Outbox>, Mailbox<SessionEvent>) {
        let s = Session::new(1, "t".to_owned(), Principal::anonymous(), max_unacked);
        let (outbox, mailbox) = (Arc::new(Outbox::new(64)), Mailbox::new());
        s.attach(7, Arc::clone(&outbox), mailbox.clone());
        (s, outbox, mailbox)
    }

    fn msg(text: &'static str) -> impl FnOnce(u64, &mut Vec<u8>) {
        move |i, buf| buf.extend_from_slice(format!(r#"{{"i":{i},"m":"{text}"}}"#).as_bytes())
    }

    async fn frames(outbox: &Outbox) -> Vec<String> {
        let mut batch = VecDeque::new();
        outbox.take(&mut batch).await.unwrap();
        batch.into_iter().map(|f| f.text.to_string()).collect()
    }

    #[tokio::test]
    async fn messages_are_numbered_kept_until_acked_and_resent_in_one_frame() {
        let (s, outbox, _) = session(10);
        assert!(s.send(msg("a")) && s.send(msg("b")) && s.send(msg("c")));
        assert_eq!(
            frames(&outbox).await,
            [r#"[{"i":1,"m":"a"}]"#, r#"[{"i":2,"m":"b"}]"#, r#"[{"i":3,"m":"c"}]"#]
        );
        assert!(s.accept_client_index(4));
        assert!(!s.accept_client_index(4), "a repeated index is a duplicate");
        assert!(s.accept_client_index(0), "index 0 is never a duplicate");
        s.on_ping(1, false);
        assert_eq!(s.unacked_len(), 2);
        // Queued but unwritten frames are replaced by the one resend frame.
        assert!(s.send(msg("d")));
        s.on_ping(2, true);
        assert_eq!(
            frames(&outbox).await,
            [r#"[{"type":"Ping","index":0,"ack":4,"resendMissing":true},{"i":3,"m":"c"},{"i":4,"m":"d"}]"#]
        );
    }

    #[tokio::test]
    async fn queued_messages_leave_in_one_frame_and_are_resent_one_by_one() {
        let (s, outbox, _) = session(10);
        assert!(s.queue(msg("a")) && s.queue(msg("b")));
        assert!(outbox.is_empty(), "nothing leaves before the flush");
        // A send flushes what was queued before it, in index order, in one frame.
        assert!(s.send(msg("c")));
        s.flush();
        assert!(s.queue(msg("d")));
        s.flush();
        s.flush();
        assert_eq!(
            frames(&outbox).await,
            [r#"[{"i":1,"m":"a"},{"i":2,"m":"b"},{"i":3,"m":"c"}]"#, r#"[{"i":4,"m":"d"}]"#]
        );
        // An ack in the middle of a frame forgets exactly the acknowledged messages.
        s.on_ping(2, true);
        assert_eq!(
            frames(&outbox).await,
            [r#"[{"type":"Ping","index":0,"ack":0,"resendMissing":true},{"i":3,"m":"c"},{"i":4,"m":"d"}]"#]
        );
        // Queued messages count against the limit before they are flushed.
        let (s, _outbox, _) = session(2);
        assert!(s.queue(msg("a")) && s.queue(msg("b")));
        assert!(!s.queue(msg("c")));
        assert!(s.is_expired());
    }

    #[tokio::test]
    async fn a_repeated_resend_request_is_not_rebuilt_while_the_first_waits() {
        let (s, outbox, _) = session(10);
        assert!(s.send(msg("a")));
        s.on_ping(0, true);
        assert!(s.send(msg("b")));
        s.on_ping(0, true);
        s.on_ping(0, true);
        // One resend (which had "a"), then "b" behind it: still everything, in order.
        assert_eq!(
            frames(&outbox).await,
            [
                r#"[{"type":"Ping","index":0,"ack":0,"resendMissing":true},{"i":1,"m":"a"}]"#,
                r#"[{"i":2,"m":"b"}]"#
            ]
        );
        // Once written, a new request builds a new resend.
        s.on_ping(0, true);
        assert_eq!(
            frames(&outbox).await,
            [r#"[{"type":"Ping","index":0,"ack":0,"resendMissing":true},{"i":1,"m":"a"},{"i":2,"m":"b"}]"#]
        );
    }

    #[tokio::test]
    async fn a_detached_session_queues_and_a_resumed_socket_gets_the_resend() {
        let (s, _old, _) = session(10);
        s.detach(7);
        assert!(s.send(msg("a")));
        let (outbox, mailbox) = (Arc::new(Outbox::new(64)), Mailbox::new());
        s.attach(8, Arc::clone(&outbox), mailbox);
        assert!(outbox.is_empty(), "attaching does not flush; the client's Ping asks for it");
        s.on_ping(0, true);
        assert_eq!(
            frames(&outbox).await,
            [r#"[{"type":"Ping","index":0,"ack":0,"resendMissing":true},{"i":1,"m":"a"}]"#]
        );
    }

    #[tokio::test]
    async fn too_many_unacked_messages_expire_the_session() {
        let (s, _outbox, mailbox) = session(2);
        assert!(s.send(msg("a")) && s.send(msg("b")));
        assert!(!s.send(msg("c")));
        assert!(s.is_expired());
        assert!(matches!(mailbox.recv().await, SessionEvent::Expired));
        assert!(!s.send(msg("d")), "an expired session takes nothing");
    }

    #[tokio::test]
    async fn a_second_socket_replaces_the_first() {
        let (s, _outbox, first) = session(10);
        s.attach(9, Arc::new(Outbox::new(4)), Mailbox::new());
        assert!(matches!(first.recv().await, SessionEvent::Replaced));
        // The old socket closing later does not detach the new one.
        s.detach(7);
        assert!(s.send(msg("a")));
    }
}
