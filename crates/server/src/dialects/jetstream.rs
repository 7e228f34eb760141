//! The Jetstream dialect: the Jetstream Sync protocol (npm `jetstream@0.13.4`) on
//! `/jetstream`, so that Jetstream's own clients work unchanged.
//!
//! This file only translates: frames are decoded by `tether_proto::jetstream`, sessions and
//! scopes live in [`crate::sync`], changesets are applied by `tether_engine::sync`. Protocol
//! and deliberate differences from the reference: `docs/dialects/jetstream.md`.
//!
//! Connection parameters are the reference's: any header or query parameter whose name
//! starts with `x-jetstream-` (prefix compared case-insensitively). `sessiontoken` resumes a
//! session. Unlike the reference, the query parameter works too, because browsers cannot
//! set headers. A credential (session token, JWT or static token) may come as
//! `Authorization: Bearer`, as the `x-jetstream-token` parameter, or as `params.token` of
//! `SessionCreate`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tether_proto::jetstream::{self, ClientMessage, Rejected, ServerMessage, WireError};
use tether_proto::{ErrorCode, ProtoError};

use crate::auth::Principal;
use crate::conn::{Dialect, Flow, Heartbeat, Mailbox};
use crate::metrics::Transport;
use crate::outbox::Outbox;
use crate::state::AppState;
use crate::sync::scope::{ScopeCmd, scope_not_found};
use crate::sync::session::{Session, SessionEvent};
use crate::sync::{SyncShared, could_not_apply, keepalive_ping};

/// Close code of the reference for a refused session (bad handshake, unknown token).
pub const CLOSE_REJECTED: u16 = 4096;
/// Close code of the reference for an expired session.
pub const CLOSE_EXPIRED: u16 = 4097;

/// Close reasons: the reference's JSON error objects, short enough for a close frame (at
/// most 123 bytes; the reference's handshake reason was 129, so clients saw 1002 or 1006).
mod reason {
    /// The reference's message minus one word ("message"), to fit.
    pub(super) const UNRECOGNIZED_HANDSHAKE: &str = r#"{"message":"Unrecognized handshake, should send SessionCreate as first and only message","type":"unrecognized-handshake"}"#;
    pub(super) const NOT_JSON: &str = r#"{"message":"Could not parse message input, input was not JSON"}"#;
    pub(super) const INVALID_VERSION: &str = r#"{"message":"Requires valid version"}"#;
    pub(super) const TOKEN_UNRECOGNIZED: &str =
        r#"{"message":"Session token unrecognized","type":"session-token-unrecognized"}"#;
    pub(super) const ESTABLISH_TIMEOUT: &str =
        r#"{"message":"Session took long to establish and timed out","type":"session-establish-timedout"}"#;
    /// The reference closes an expired session's socket with 4097 and no reason.
    pub(super) const EXPIRED: &str = "";
}

/// Frames held while a `SessionCreate` credential is being verified.
const MAX_PENDING: usize = 256;

/// `GET /jetstream`.
pub(crate) async fn handler(
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Some(sync) = state.sync.clone() else {
        return crate::api::ApiError(state.count_error(ProtoError::new(
            ErrorCode::NotFound,
            "model sync is not configured on this server (sync.schema)",
        )))
        .into_response();
    };
    // An undecodable query string carries no parameters (as a missing one).
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let params = ConnParams::new(&headers, &query);
    // A resume names its session up front; an unknown one is refused on the socket, as the
    // reference does (close 4096).
    let resumed = match &params.session_token {
        Some(token) => match sync.session(token) {
            Some(s) => Some(s),
            None => return refuse(&state, ws, reason::TOKEN_UNRECOGNIZED),
        },
        None => None,
    };
    // A connection-level credential is checked before the upgrade; a failure is reported
    // in the `SessionCreateReply`, where the client looks for it.
    let principal = match &params.credential {
        Some(c) => state.auth.verify(c).await.map(|v| v.principal),
        None => Ok(Principal::anonymous()),
    };
    let mut cfg = super::loop_config(&state);
    cfg.ping_interval = Duration::from_millis(sync.config.ping_interval_ms);
    cfg.rate = sync.config.inbound_rate;
    cfg.burst = sync.config.inbound_burst;
    super::accept(state, ws, peer, Transport::Jetstream, cfg, move |state, outbox, mailbox| {
        Conn::new(state, sync, outbox, mailbox, principal, resumed)
    })
}

/// Upgrades only to close at once with 4096 and `reason`.
fn refuse(
    state: &AppState,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    reason: &'static str,
) -> Response {
    let ws = match super::require_upgrade(state, ws) {
        Ok(ws) => ws,
        Err(e) => return e.into_response(),
    };
    let tracker = state.tasks.clone();
    super::configure(ws, state)
        .on_upgrade(move |socket: WebSocket| {
            tracker.track_future(async move {
                close_now(socket, CLOSE_REJECTED, reason).await;
            })
        })
        .into_response()
}

/// Sends a close frame and reads until the peer's close reply (or a short timeout).
async fn close_now(mut socket: WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame { code, reason: Utf8Bytes::from_static(reason) };
    if socket.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    let drain = async { while let Some(Ok(_)) = socket.next().await {} };
    let _ = tokio::time::timeout(Duration::from_secs(3), drain).await;
}

/// The `x-jetstream-*` parameters of a connection that Tether uses.
#[derive(Debug, Default)]
struct ConnParams {
    session_token: Option<String>,
    credential: Option<String>,
}

impl ConnParams {
    fn new(headers: &HeaderMap, query: &[(String, String)]) -> Self {
        let mut p = Self::default();
        for (name, value) in headers {
            let Ok(value) = value.to_str() else { continue };
            p.take(name.as_str(), value);
        }
        for (k, v) in query {
            p.take(k, v);
        }
        if p.credential.is_none()
            && let Some(auth) = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok())
            && let Some(t) = auth.strip_prefix("Bearer ")
        {
            p.credential = Some(t.trim().to_owned());
        }
        p
    }

    fn take(&mut self, name: &str, value: &str) {
        const PREFIX: &str = "x-jetstream-";
        if name.len() <= PREFIX.len() || !name[..PREFIX.len()].eq_ignore_ascii_case(PREFIX) {
            return;
        }
        // As the reference: only the prefix is case-insensitive (header names arrive
        // lower-cased anyway).
        match &name[PREFIX.len()..] {
            "sessiontoken" => self.session_token = Some(value.to_owned()),
            "token" => self.credential = Some(value.to_owned()),
            _ => {}
        }
    }
}

type Entry = Result<ClientMessage, Rejected>;

/// One Jetstream socket.
pub(crate) struct Conn {
    state: AppState,
    sync: Arc<SyncShared>,
    conn_id: u64,
    outbox: Arc<Outbox>,
    mailbox: Mailbox<SessionEvent>,
    /// The connection-level credential's outcome (anonymous without one).
    principal: Result<Principal, ProtoError>,
    session: Option<Arc<Session>>,
    /// Messages received while a `SessionCreate` credential is verified.
    pending: Option<VecDeque<Entry>>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("conn_id", &self.conn_id)
            .field("session", &self.session.as_ref().map(|s| s.id))
            .finish_non_exhaustive()
    }
}

impl Conn {
    fn new(
        state: AppState,
        sync: Arc<SyncShared>,
        outbox: Arc<Outbox>,
        mailbox: Mailbox<SessionEvent>,
        principal: Result<Principal, ProtoError>,
        resumed: Option<Arc<Session>>,
    ) -> Self {
        let conn_id = state.next_conn_id();
        if let Some(s) = &resumed {
            s.attach(conn_id, Arc::clone(&outbox), mailbox.clone());
        }
        Self { state, sync, conn_id, outbox, mailbox, principal, session: resumed, pending: None }
    }

    /// Handles decoded messages in order until one ends the connection.
    fn handle_all(&mut self, entries: impl IntoIterator<Item = Entry>, out: &mut Vec<Message>) -> Flow {
        let mut entries = entries.into_iter();
        while let Some(entry) = entries.next() {
            if let Some(pending) = &mut self.pending {
                pending.push_back(entry);
                pending.extend(entries.by_ref());
                if pending.len() > MAX_PENDING {
                    return Flow::Close(CLOSE_REJECTED, reason::UNRECOGNIZED_HANDSHAKE);
                }
                return Flow::Continue;
            }
            let flow = match self.session.clone() {
                None => self.handshake(entry, out),
                Some(session) => {
                    self.handle(&session, entry);
                    Flow::Continue
                }
            };
            if flow != Flow::Continue {
                return flow;
            }
        }
        Flow::Continue
    }

    /// The first message of a new session must be `SessionCreate`.
    fn handshake(&mut self, entry: Entry, out: &mut Vec<Message>) -> Flow {
        let params = match entry {
            Ok(ClientMessage::SessionCreate { params, .. }) => params,
            Err(r) if r.type_name.as_deref() == Some("SessionCreate") => {
                // As the reference: a SessionCreate that does not parse (most often an
                // invalid semver version) closes with the parse error.
                tracing::debug!(conn = self.conn_id, reason = %r.reason, "jetstream: invalid SessionCreate");
                return Flow::Close(CLOSE_REJECTED, reason::INVALID_VERSION);
            }
            _ => {
                tracing::debug!(conn = self.conn_id, "jetstream: first message is not SessionCreate");
                return Flow::Close(CLOSE_REJECTED, reason::UNRECOGNIZED_HANDSHAKE);
            }
        };
        match params.get("token") {
            Some(serde_json::Value::String(token)) => {
                // Verified off this task; messages that follow wait in `pending`.
                self.pending = Some(VecDeque::new());
                let (auth_state, token, mailbox) =
                    (Arc::clone(&self.state), token.clone(), self.mailbox.clone());
                tokio::spawn(async move {
                    let r = auth_state.auth.verify(&token).await.map(|v| v.principal);
                    mailbox.send(SessionEvent::Verified(r));
                });
                Flow::Continue
            }
            Some(_) => {
                let e = ProtoError::new(ErrorCode::InvalidToken, "params.token must be a string");
                self.create_session(Err(e), out)
            }
            None => {
                let principal = self.principal.clone();
                self.create_session(principal, out)
            }
        }
    }

    /// Answers `SessionCreate`: a new session with its token, or the refusal.
    fn create_session(&mut self, principal: Result<Principal, ProtoError>, out: &mut Vec<Message>) -> Flow {
        let session = match principal {
            Ok(p) => self
                .sync
                .create_session(p)
                .ok_or_else(|| ProtoError::new(ErrorCode::TooManyConnections, "too many sessions")),
            Err(e) => Err(e),
        };
        let mut buf = Vec::with_capacity(128);
        buf.push(b'[');
        match session {
            Ok(session) => {
                ServerMessage::SessionCreateReply {
                    index: 0,
                    session_token: Some(&session.token),
                    error: None,
                }
                .encode(&mut buf);
                session.attach(self.conn_id, Arc::clone(&self.outbox), self.mailbox.clone());
                self.session = Some(session);
            }
            Err(e) => {
                tracing::debug!(conn = self.conn_id, error = %e, "jetstream session refused");
                // The reference's message, with Tether's stable code as its type.
                let error = WireError {
                    message: "Session creation denied".to_owned(),
                    kind: Some(e.code.as_str().to_owned()),
                };
                ServerMessage::SessionCreateReply { index: 0, session_token: None, error: Some(&error) }
                    .encode(&mut buf);
            }
        }
        buf.push(b']');
        out.push(Message::Text(Utf8Bytes::from(String::from_utf8(buf).unwrap_or_default())));
        Flow::Continue
    }

    /// One message of an established session.
    fn handle(&mut self, session: &Arc<Session>, entry: Entry) {
        session.touch();
        // A message that does not decode does not use up its index (as in the reference),
        // so the client may send a corrected one under the same index.
        let index = match &entry {
            Ok(m) => m.index(),
            Err(_) => 0,
        };
        if !session.accept_client_index(index) {
            tracing::trace!(session = session.id, index, "jetstream: duplicate index dropped");
            return;
        }
        match entry {
            Ok(ClientMessage::SessionCreate { .. }) => {
                tracing::debug!(
                    session = session.id,
                    "jetstream: SessionCreate on an established session ignored"
                );
            }
            Ok(ClientMessage::ScopeFetch { index, name, params }) => {
                if let Err(e) = self.sync.fetch(session, index, &name, &params) {
                    session.refuse_fetch(index, &e.wire());
                }
            }
            Ok(ClientMessage::ScopeSync(s)) => {
                let Some(fetched) = session.scope(s.scope_index) else {
                    session.refuse_sync(s.index, s.fragments.len(), &scope_not_found(s.scope_index));
                    return;
                };
                let (reply_to, count) = (s.index, s.fragments.len());
                let cmd = ScopeCmd::Sync {
                    session: Arc::clone(session),
                    scope_index: s.scope_index,
                    reply_to,
                    fragments: s.fragments,
                    atomic: s.atomic.unwrap_or(false),
                    procedure: s.procedure,
                };
                let key = Arc::clone(&fetched.handle.key);
                if self.sync.dispatch_to(fetched.handle, &key, cmd).is_err() {
                    session.refuse_sync(
                        reply_to,
                        count,
                        &could_not_apply("scope is overloaded; retry later"),
                    );
                }
            }
            Ok(ClientMessage::Ping { ack, resend_missing, .. }) => session.on_ping(ack, resend_missing),
            Ok(ClientMessage::Ignored { .. }) => {}
            Err(r) => self.rejected(session, r),
        }
    }

    /// A message that could not be decoded: answered where the protocol has a reply for
    /// its type, otherwise dropped (logged).
    fn rejected(&mut self, session: &Arc<Session>, r: Rejected) {
        tracing::debug!(session = session.id, reason = %r.reason, "jetstream: message rejected");
        self.state.metrics.error(ErrorCode::InvalidMessage);
        let Some(index) = r.index.filter(|i| *i != 0) else { return };
        match r.type_name.as_deref() {
            Some("ScopeFetch") => {
                let error = WireError {
                    message: format!("Invalid ScopeFetch: {}", r.reason),
                    kind: Some("invalid-message".to_owned()),
                };
                session.refuse_fetch(index, &error);
            }
            Some("ScopeSync") => {
                session.refuse_sync(index, r.fragment_count.unwrap_or(0), &could_not_apply(&r.reason));
            }
            _ => {}
        }
    }
}

impl Dialect for Conn {
    type Event = SessionEvent;

    fn idle_timeout(&self) -> (Duration, u16) {
        // The session's inactivity expiry; the client pings every 10 s when alive.
        (Duration::from_secs(self.sync.config.session_expiry_s), CLOSE_EXPIRED)
    }

    fn handshake_deadline(&self) -> Option<(Duration, u16)> {
        self.session
            .is_none()
            .then(|| (Duration::from_millis(self.sync.config.establish_timeout_ms), CLOSE_REJECTED))
    }

    fn timeout_reason(&self, code: u16) -> &'static str {
        if code == CLOSE_REJECTED { reason::ESTABLISH_TIMEOUT } else { reason::EXPIRED }
    }

    fn heartbeat(&self) -> Heartbeat {
        Heartbeat::Custom
    }

    fn heartbeat_frame(&mut self) -> Option<Message> {
        let session = self.session.as_ref()?;
        Some(Message::Text(Utf8Bytes::from(keepalive_ping(session))))
    }

    fn on_text(&mut self, text: Utf8Bytes, out: &mut Vec<Message>) -> Flow {
        match jetstream::decode_frame(text.as_str()) {
            Ok(entries) => self.handle_all(entries, out),
            Err(e) => {
                tracing::debug!(conn = self.conn_id, error = %e, "jetstream: undecodable frame");
                self.state.metrics.error(ErrorCode::InvalidMessage);
                if self.session.is_none() && self.pending.is_none() {
                    return Flow::Close(CLOSE_REJECTED, reason::NOT_JSON);
                }
                Flow::Continue
            }
        }
    }

    fn on_rate_limited(&mut self, _text: &str, _out: &mut Vec<Message>) {
        // The protocol has no error message for this, and a dropped message would be lost
        // (its index is never acknowledged, but the client only resends after a
        // reconnect): the socket is closed with 4008 (`rate_limit_strikes` is 0), so the
        // client resumes and resends it.
        tracing::debug!(conn = self.conn_id, "jetstream: over the rate limit; closing");
    }

    fn rate_limit_strikes(&self) -> u32 {
        0
    }

    fn on_event(&mut self, event: SessionEvent, out: &mut Vec<Message>) -> Flow {
        match event {
            SessionEvent::Replaced => {
                Flow::Close(crate::conn::close::NORMAL, "session resumed on another connection")
            }
            SessionEvent::Expired => Flow::Close(CLOSE_EXPIRED, reason::EXPIRED),
            SessionEvent::Verified(principal) => {
                let flow = self.create_session(principal, out);
                let held = self.pending.take().unwrap_or_default();
                if flow != Flow::Continue {
                    return flow;
                }
                if self.session.is_none() {
                    // Refused: the client must open a new socket; what it sent meanwhile is
                    // not for any session.
                    return Flow::Continue;
                }
                self.handle_all(held, out)
            }
        }
    }

    fn on_close(&mut self) {
        if let Some(s) = &self.session {
            s.detach(self.conn_id);
        }
    }
}

// A close frame's reason is at most 123 bytes (the reference's did not fit, so its clients
// saw 1002 instead of its code).
const _: () = assert!(reason::UNRECOGNIZED_HANDSHAKE.len() <= 123);
const _: () = assert!(reason::TOKEN_UNRECOGNIZED.len() <= 123);
const _: () = assert!(reason::ESTABLISH_TIMEOUT.len() <= 123);
const _: () = assert!(reason::NOT_JSON.len() <= 123);
const _: () = assert!(reason::INVALID_VERSION.len() <= 123);
