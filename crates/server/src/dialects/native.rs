//! The native protocol v1 over WebSocket (`/ws`). See `docs/protocol.md` and `docs/auth.md`.
//!
//! Account operations (register, login, token verification against the store, password
//! checks) are asynchronous: they run on their own task and come back through the
//! connection's mailbox as [`Event::Done`]. While one is in flight, later frames of the
//! same connection wait in a small queue, so a client may pipeline `login` and
//! `subscribe` and still have them applied in order.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, Utf8Bytes, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::Response;
use std::fmt::Write as _;
use tether_engine::hub::ConnId;

use tether_engine::history::{Entry, NotRecovered, Position, Recovery};
use tether_engine::hub::{HistoryQuery, PresenceJoin, SubscribeOptions, Subscribed};
use tether_engine::presence::{PresenceEvent, PresenceInfo};
use tether_engine::{Publication, Subscriber};
use tether_proto::message::{self, Account, ClientFrame, Connect, Request, StreamPosition, push_json_string};
use tether_proto::{ChannelName, ErrorCode, Filter, Identity, ProtoError, Tags};
use tokio::task::AbortHandle;

use crate::auth::accounts::Credentials;
use crate::auth::http::session_json;
use crate::auth::live::{LiveEvent, Revoked};
use crate::auth::{Issued, Principal, PrincipalKind, Verified};
use crate::conn::{Dialect, Flow, Heartbeat, Mailbox, close};
use crate::metrics::Transport;
use crate::outbox::{Frame, Outbox};
use crate::state::AppState;

/// Frames held while an account operation is in flight; beyond this the client is told
/// to slow down (`rate_limited`).
const MAX_QUEUED: usize = 64;

/// Encodes a publication as a native push frame.
pub fn encode_push(p: &Publication) -> Frame {
    Frame::now(publication_json(p))
}

/// Most publications one recovery returns for a namespace: its `recovery_limit`, or its
/// whole history when that is 0.
pub fn recovery_limit(opts: &tether_engine::NamespaceOptions) -> usize {
    if opts.recovery_limit == 0 { opts.history_size } else { opts.recovery_limit }
}

/// The push telling a subscriber that publications on `channel` may have been lost on the
/// way to this node: unsubscribe and subscribe again with `recover` from the last offset.
pub fn encode_resubscribe(channel: &ChannelName) -> Frame {
    Frame::now(format!(
        r#"{{"push":"resubscribe","channel":"{}","reason":"insufficient_state"}}"#,
        channel.as_str()
    ))
}

/// Encodes a presence event as a native `join` or `leave` push.
pub fn encode_presence(channel: &ChannelName, ev: &PresenceEvent) -> Frame {
    let (kind, who) = match ev {
        PresenceEvent::Join(i) => ("join", i),
        PresenceEvent::Leave(i) => ("leave", i),
    };
    Frame::now(message::encode_presence_push(
        kind,
        channel,
        who.client,
        who.user.as_deref(),
        who.info.as_deref(),
    ))
}

/// A publication as its `pub` push (the native encoding, shared by every encoding that
/// embeds publications: SSE events, recovered publications, history pages).
pub fn publication_json(p: &Publication) -> String {
    message::encode_publication(&p.channel, p.data.as_deref(), &p.tags, p.offset)
}

/// `"offset":N,"epoch":"…"`: a channel position as the fields of a result.
pub fn push_position(s: &mut String, p: &Position) {
    let _ = write!(s, r#""offset":{},"epoch":"#, p.offset);
    push_json_string(s, &p.epoch);
}

/// `[push,…]`: kept publications as their `pub` pushes, in order.
pub fn push_publications(s: &mut String, entries: &[Entry<Arc<Publication>>]) {
    s.push('[');
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&publication_json(&e.item));
    }
    s.push(']');
}

/// A subscribe's result: `{}` without history; `{"offset":N,"epoch":"…"}` with it; and
/// when a recovery was asked for, `"recovered"` and the missed `"publications"` (as their
/// `pub` pushes, in order), or `"recovered":false`.
fn subscribe_result(done: &Subscribed, asked: bool) -> String {
    let mut s = String::from("{");
    if let Some(p) = &done.position {
        push_position(&mut s, p);
    }
    if asked {
        if s.len() > 1 {
            s.push(',');
        }
        match &done.recovery {
            Some(Recovery::Recovered(entries)) => {
                s.push_str(r#""recovered":true,"publications":"#);
                push_publications(&mut s, entries);
            }
            Some(Recovery::NotRecovered(why)) => {
                let _ = write!(s, r#""recovered":false,"reason":"{}""#, not_recovered_reason(*why));
            }
            None => s.push_str(r#""recovered":false,"reason":"no_history""#),
        }
    }
    s.push('}');
    s
}

/// The stable `reason` of a `recovered: false`.
pub fn not_recovered_reason(why: NotRecovered) -> &'static str {
    match why {
        NotRecovered::EpochChanged => "epoch_changed",
        NotRecovered::Trimmed => "trimmed",
        NotRecovered::TooMany => "too_many",
        NotRecovered::Ahead => "ahead",
    }
}

/// `GET /ws`: upgrades to the native protocol.
pub async fn handler(
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let cfg = super::loop_config(&state);
    let header_identity = state.auth.proxy.identity(peer.ip(), &headers);
    let client_ip = state.auth.proxy.client_ip(peer.ip(), &headers);
    super::accept(state, ws, peer, Transport::Native, cfg, move |state, outbox, mailbox| {
        Session::new(state, outbox, mailbox, client_ip, header_identity)
    })
}

/// What an account operation produced.
#[derive(Debug)]
pub enum Outcome {
    /// `connect` with a token.
    Connected(Verified),
    /// `register` or `login`.
    LoggedIn(Issued),
    /// `refresh` of a login session.
    Refreshed(Issued),
    /// `refresh` with a fresh JWT.
    JwtRefreshed(Principal),
    /// `logout`.
    LoggedOut,
    /// `change_password`.
    PasswordChanged,
    /// `delete_account`.
    AccountDeleted,
}

/// Events delivered to a session through its mailbox.
#[derive(Debug)]
pub enum Event {
    /// An account operation finished.
    Done {
        /// Request id to answer.
        id: u64,
        /// Its result.
        outcome: Result<Outcome, ProtoError>,
    },
    /// The connection's login session was revoked or rotated elsewhere.
    Live(LiveEvent),
    /// The credential's expiry time has come (generation of the timer).
    Expired(u64),
    /// The renewal of an expired session finished (`None`: another connection renewed it).
    Renewed(u64, Result<Option<Issued>, ProtoError>),
    /// A JWT connection did not refresh in time.
    RefreshDeadline(u64),
}

/// One native session.
pub struct Session {
    state: AppState,
    id: ConnId,
    outbox: Arc<Outbox>,
    mailbox: Mailbox<Event>,
    peer: IpAddr,
    /// Identity from a trusted proxy's headers, used when `connect` carries no token.
    header_identity: Option<Identity>,
    /// `None` until `connect` (or `register`/`login`) succeeded.
    principal: Option<Principal>,
    subscriptions: Vec<(ChannelName, Option<Filter>)>,
    /// An account operation is in flight; frames wait in `queued`.
    busy: bool,
    queued: VecDeque<Utf8Bytes>,
    /// Generation of the expiry timers; a timer whose generation is stale is ignored.
    timer_gen: u64,
    timer: Option<AbortHandle>,
    /// A JWT expired and the server asked for a fresh one.
    refresh_pending: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("id", &self.id).field("busy", &self.busy).finish_non_exhaustive()
    }
}

fn reply(id: u64, result: &str) -> Message {
    Message::Text(message::encode_result(id, result).into())
}

fn not_connected() -> ProtoError {
    ProtoError::new(ErrorCode::NotConnected, "send connect first")
}

impl Session {
    /// A session before `connect`.
    pub fn new(
        state: AppState,
        outbox: Arc<Outbox>,
        mailbox: Mailbox<Event>,
        peer: IpAddr,
        header_identity: Option<Identity>,
    ) -> Self {
        let id = state.next_conn_id();
        Self {
            state,
            id,
            outbox,
            mailbox,
            peer,
            header_identity,
            principal: None,
            subscriptions: Vec::new(),
            busy: false,
            queued: VecDeque::new(),
            timer_gen: 0,
            timer: None,
            refresh_pending: false,
        }
    }

    fn principal(&self) -> Result<&Principal, ProtoError> {
        self.principal.as_ref().ok_or_else(not_connected)
    }

    /// The principal a connection falls back to when its credential goes away.
    fn fallback_principal(&self) -> Option<Principal> {
        match &self.header_identity {
            Some(h) => Some(Principal::with_identity(h.clone(), PrincipalKind::Header)),
            None if self.state.config.auth.allow_anonymous => Some(Principal::anonymous()),
            None => None,
        }
    }

    fn connect_result(&self, session: Option<&Issued>) -> String {
        let ws = &self.state.config.websocket;
        let mut s = format!(
            r#"{{"client":"{}","version":"{}","ping_interval_ms":{},"pong_timeout_ms":{}"#,
            self.id,
            message::PROTOCOL_VERSION,
            ws.ping_interval_ms,
            ws.pong_timeout_ms
        );
        let user = self.principal.as_ref().and_then(|p| p.identity.user.as_deref());
        s.push_str(r#","user":"#);
        match user {
            Some(u) => push_json_string(&mut s, u),
            None => s.push_str("null"),
        }
        if let Some(info) = self.principal.as_ref().and_then(|p| p.info.as_deref()) {
            // The JWT `info` claim, as the application's backend wrote it (validated JSON).
            s.push_str(r#","info":"#);
            s.push_str(info);
        }
        if let Some(i) = session {
            s.push_str(r#","session":"#);
            s.push_str(&session_json(i));
        }
        s.push('}');
        s
    }

    /// `connect` without a token is decided here; with one, the check is asynchronous.
    fn connect(&mut self, id: u64, c: Connect) -> Result<Option<String>, ProtoError> {
        if self.principal.is_some() {
            return Err(ProtoError::new(ErrorCode::AlreadyConnected, "already connected"));
        }
        let auth = &self.state.config.auth;
        let principal = match (c.token, c.identity) {
            (Some(_), Some(_)) => {
                return Err(ProtoError::new(
                    ErrorCode::InvalidMessage,
                    "send either token or identity, not both",
                ));
            }
            (Some(token), None) => {
                self.start(id, Request::Connect(Connect { token: Some(token), identity: None }));
                return Ok(None);
            }
            (None, Some(claimed)) if auth.allow_client_identity => {
                Principal::with_identity(claimed, PrincipalKind::Declared)
            }
            (None, Some(_)) => {
                return Err(ProtoError::new(
                    ErrorCode::PermissionDenied,
                    "this server does not accept client-declared identities",
                ));
            }
            (None, None) => match self.fallback_principal() {
                Some(p) => p,
                None => return Err(ProtoError::new(ErrorCode::Unauthenticated, "credentials required")),
            },
        };
        let mut ignored = Vec::new();
        self.set_principal(principal, &mut ignored);
        Ok(Some(self.connect_result(None)))
    }

    /// Runs an account operation on its own task; its result comes back as an event.
    fn start(&mut self, id: u64, request: Request) {
        self.busy = true;
        let state = Arc::clone(&self.state);
        let principal = self.principal.clone();
        let (peer, conn, mailbox) = (self.peer, self.id, self.mailbox.clone());
        tokio::spawn(async move {
            let outcome = run_account_op(&state, principal, peer, conn, request).await;
            mailbox.send(Event::Done { id, outcome });
        });
    }

    /// Subscribes; the result carries the channel's position when it keeps history, and
    /// the recovery's outcome when one was asked for (see `docs/delivery.md`).
    fn subscribe(
        &mut self,
        channel: ChannelName,
        filter: Option<Filter>,
        recover: Option<StreamPosition>,
    ) -> Result<String, ProtoError> {
        let principal = self.principal()?;
        if self.subscriptions.iter().any(|(c, _)| *c == channel) {
            return Err(ProtoError::new(ErrorCode::AlreadySubscribed, "already subscribed to this channel"));
        }
        let max = self.state.config.limits.max_subscriptions_per_connection;
        if self.subscriptions.len() >= max {
            return Err(ProtoError::new(
                ErrorCode::TooManySubscriptions,
                format!("a connection may hold at most {max} subscriptions"),
            ));
        }
        let opts = self.state.namespaces.check_subscribe(&channel, &principal.access())?;
        let since = recover.map(|p| Position { offset: p.offset, epoch: p.epoch.into() });
        let join = self.presence_join(opts);
        let o = SubscribeOptions {
            max_subscribers: opts.max_subscribers,
            history: opts.history_limits(),
            recover: since.as_ref().map(|p| (p, recovery_limit(opts))),
            presence: join.as_ref(),
            now_ms: self.state.now_ms(),
        };
        let done = self.state.hub.subscribe_with(
            &channel,
            Subscriber {
                conn: self.id,
                sink: Arc::clone(&self.outbox),
                format: self.state.formats.native,
                identity: Arc::clone(&principal.identity),
            },
            filter.clone(),
            &o,
        )?;
        self.subscriptions.push((channel, filter));
        Ok(subscribe_result(&done, since.is_some()))
    }

    fn unsubscribe(&mut self, channel: &ChannelName) -> Result<(), ProtoError> {
        self.principal()?;
        let Some(i) = self.subscriptions.iter().position(|(c, _)| c == channel) else {
            return Err(ProtoError::new(ErrorCode::NotSubscribed, "not subscribed to this channel"));
        };
        self.subscriptions.swap_remove(i);
        self.state.hub.unsubscribe(channel, self.id);
        Ok(())
    }

    fn publish(
        &self,
        channel: ChannelName,
        data: &str,
        tags: Tags,
        idempotency_key: Option<&str>,
    ) -> Result<String, ProtoError> {
        let principal = self.principal()?;
        // Sizes are checked on the stored (minified) form, as the HTTP API does.
        let data = tether_proto::json::minify(data).into_owned().into_boxed_str();
        let subscribed = self.subscriptions.iter().any(|(c, _)| *c == channel);
        self.state.namespaces.check_client_publish(&channel, &principal.access(), subscribed, data.len())?;
        let done = self.state.publish_keyed(&Publication::new(channel, Some(data), tags), idempotency_key);
        let mut s = String::new();
        crate::api::push_result(&mut s, &done);
        Ok(s)
    }

    /// This connection's presence entry on channels of a namespace with `opts`, if it
    /// tracks presence.
    fn presence_join(&self, opts: &tether_engine::NamespaceOptions) -> Option<PresenceJoin> {
        let principal = self.principal.as_ref()?;
        opts.track_presence.then(|| PresenceJoin {
            info: PresenceInfo {
                client: self.id,
                user: principal.identity.user.as_deref().map(Arc::from),
                info: principal.info.clone(),
            },
            ttl_ms: self.state.config.presence.ttl_ms,
            announce: opts.join_leave,
        })
    }

    /// A heartbeat: the connection is alive, so its presence entries are too.
    fn touch_presence(&self) {
        let now = self.state.now_ms();
        for (channel, _) in &self.subscriptions {
            let Ok(opts) = self.state.namespaces.resolve(channel) else { continue };
            if let Some(join) = self.presence_join(opts) {
                self.state.hub.presence_touch(channel, &join, now);
            }
        }
    }

    /// Who is present on a channel (`stats`: only how many), as the namespace's `presence`
    /// rule allows this connection to see.
    fn presence(&self, channel: &ChannelName, stats: bool) -> Result<String, ProtoError> {
        let principal = self.principal()?;
        let subscribed = self.subscriptions.iter().any(|(c, _)| c == channel);
        self.state.namespaces.check_presence(channel, &principal.access(), subscribed)?;
        Ok(crate::api::encode_presence(&self.state, channel, stats))
    }

    /// A page of a channel's history, as this connection may see it.
    fn history(
        &self,
        channel: &ChannelName,
        since: Option<u64>,
        limit: Option<u64>,
        reverse: bool,
    ) -> Result<String, ProtoError> {
        let principal = self.principal()?;
        let subscribed = self.subscriptions.iter().any(|(c, _)| c == channel);
        self.state.namespaces.check_history(channel, &principal.access(), subscribed)?;
        let page = self.state.hub.history(
            channel,
            HistoryQuery { since, limit: crate::api::page_limit(limit), backward: reverse },
            Some(&principal.identity),
            self.state.now_ms(),
        );
        Ok(crate::api::encode_page(&page))
    }

    /// Installs a new principal: re-registers the live session, re-checks every
    /// subscription under the new rights (pushing `unsubscribed` for those lost), and arms
    /// the expiry timer.
    fn set_principal(&mut self, new: Principal, out: &mut Vec<Message>) {
        if let Some(old) = self.principal.as_ref().and_then(Principal::session_id) {
            self.state.auth.live.unregister(old, self.id);
        }
        if let Some(sid) = new.session_id() {
            let mb = self.mailbox.clone();
            self.state.auth.live.register(
                sid,
                self.id,
                Arc::new(move |ev| {
                    mb.send(Event::Live(ev));
                }),
            );
        }
        let identity_changed = self.principal.as_ref().is_none_or(|p| p.identity != new.identity);
        let subs = std::mem::take(&mut self.subscriptions);
        for (channel, filter) in subs {
            let allowed = self.state.namespaces.check_subscribe(&channel, &new.access());
            match allowed {
                Ok(_) if !identity_changed => self.subscriptions.push((channel, filter)),
                Ok(opts) => {
                    // Targeting reads the subscriber's identity: re-register under the new one.
                    self.state.hub.unsubscribe(&channel, self.id);
                    let sub = Subscriber {
                        conn: self.id,
                        sink: Arc::clone(&self.outbox),
                        format: self.state.formats.native,
                        identity: Arc::clone(&new.identity),
                    };
                    match self.state.hub.subscribe(&channel, sub, filter.clone(), opts.max_subscribers) {
                        Ok(()) => self.subscriptions.push((channel, filter)),
                        Err(e) => out.push(unsubscribed(&channel, &ProtoError::from(e))),
                    }
                }
                Err(e) => {
                    self.state.hub.unsubscribe(&channel, self.id);
                    out.push(unsubscribed(&channel, &e));
                }
            }
        }
        self.refresh_pending = false;
        self.arm_timer(self.state.auth.effective_expiry(&new));
        self.principal = Some(new);
    }

    fn arm_timer(&mut self, at_ms: Option<i64>) {
        self.timer_gen += 1;
        if let Some(t) = self.timer.take() {
            t.abort();
        }
        let Some(at) = at_ms else { return };
        let (clock, mb, generation) = (self.state.auth.clock().clone(), self.mailbox.clone(), self.timer_gen);
        let task = tokio::spawn(async move {
            clock.sleep_until(at).await;
            mb.send(Event::Expired(generation));
        });
        self.timer = Some(task.abort_handle());
    }

    /// The credential is gone: tell the client, fall back to the header identity or
    /// anonymous, or close with 4003 where anonymous connections are not allowed.
    fn demote(&mut self, why: Revoked, out: &mut Vec<Message>) -> Flow {
        out.push(Message::Text(format!(r#"{{"push":"logged_out","reason":"{}"}}"#, why.as_str()).into()));
        match self.fallback_principal() {
            Some(p) => {
                self.set_principal(p, out);
                Flow::Continue
            }
            None => Flow::Close(close::AUTH_EXPIRED, "credentials expired or revoked"),
        }
    }

    fn handle_sync(
        &mut self,
        id: u64,
        request: Request,
        out: &mut Vec<Message>,
    ) -> Result<Option<String>, ProtoError> {
        let ok = || Some("{}".to_owned());
        match request {
            Request::Connect(c) => self.connect(id, c),
            Request::Subscribe { channel, filter, recover } => {
                self.subscribe(channel, filter, recover).map(Some)
            }
            Request::Unsubscribe { channel } => self.unsubscribe(&channel).map(|()| ok()),
            Request::Publish { channel, data, tags, idempotency_key } => {
                self.publish(channel, &data, tags, idempotency_key.as_deref()).map(Some)
            }
            Request::History { channel, since, limit, reverse } => {
                self.history(&channel, since, limit, reverse).map(Some)
            }
            Request::Presence { channel } => self.presence(&channel, false).map(Some),
            Request::PresenceStats { channel } => self.presence(&channel, true).map(Some),
            Request::Ping => self.principal().map(|_| ok()),
            Request::Refresh { token: Some(t) } => {
                let current = self.principal()?;
                if current.kind != PrincipalKind::Jwt {
                    return Err(ProtoError::new(
                        ErrorCode::InvalidMessage,
                        "refresh with a token is for JWT connections; session connections send refresh without one",
                    ));
                }
                let fresh = self.state.auth.verify_jwt_token(t.expose())?;
                if fresh.identity.user != current.identity.user {
                    return Err(ProtoError::new(
                        ErrorCode::PermissionDenied,
                        "the new token is for another user",
                    ));
                }
                self.set_principal(fresh, out);
                Ok(ok())
            }
            other => {
                // Everything else is an account operation: asynchronous.
                if !matches!(other, Request::Register(_) | Request::Login(_)) {
                    self.principal()?;
                }
                self.start(id, other);
                Ok(None)
            }
        }
    }

    /// Handles one frame (not queued).
    fn process(&mut self, text: &str, out: &mut Vec<Message>) {
        match message::decode_client_frame(text) {
            Ok(ClientFrame::Pong) => self.touch_presence(),
            Ok(ClientFrame::Request { id, request }) => match self.handle_sync(id, request, out) {
                Ok(Some(result)) => out.push(reply(id, &result)),
                Ok(None) => {}
                Err(e) => out.push(self.error(Some(id), e)),
            },
            Err(e) => out.push(self.error(e.id, e.error)),
        }
    }

    fn apply(&mut self, id: u64, outcome: Outcome, out: &mut Vec<Message>) -> Flow {
        match outcome {
            Outcome::Connected(v) => {
                if self.principal.is_some() {
                    out.push(
                        self.error(
                            Some(id),
                            ProtoError::new(ErrorCode::AlreadyConnected, "already connected"),
                        ),
                    );
                    return Flow::Continue;
                }
                self.set_principal(v.principal, out);
                out.push(reply(id, &self.connect_result(v.renewed.as_ref())));
            }
            Outcome::LoggedIn(issued) => {
                self.set_principal(issued.principal.clone(), out);
                out.push(reply(id, &self.connect_result(Some(&issued))));
            }
            Outcome::Refreshed(issued) => {
                self.set_principal(issued.principal.clone(), out);
                out.push(reply(id, &format!(r#"{{"session":{}}}"#, session_json(&issued))));
            }
            Outcome::JwtRefreshed(p) => {
                self.set_principal(p, out);
                out.push(reply(id, "{}"));
            }
            Outcome::PasswordChanged => out.push(reply(id, "{}")),
            Outcome::LoggedOut | Outcome::AccountDeleted => {
                out.push(reply(id, "{}"));
                let why = if matches!(outcome, Outcome::LoggedOut) {
                    Revoked::LoggedOut
                } else {
                    Revoked::AccountDeleted
                };
                return self.demote(why, out);
            }
        }
        Flow::Continue
    }

    fn error(&self, id: Option<u64>, e: ProtoError) -> Message {
        let e = self.state.count_error(e);
        Message::Text(message::encode_error(id, &e).into())
    }
}

fn session_push(issued: &Issued) -> Message {
    Message::Text(format!(r#"{{"push":"session","session":{}}}"#, session_json(issued)).into())
}

fn unsubscribed(channel: &ChannelName, e: &ProtoError) -> Message {
    let mut s = String::from(r#"{"push":"unsubscribed","channel":""#);
    s.push_str(channel.as_str());
    s.push_str(r#"","code":""#);
    s.push_str(e.code.as_str());
    s.push_str(r#"","message":"#);
    push_json_string(&mut s, &e.message);
    s.push('}');
    Message::Text(s.into())
}

fn creds(a: &Account, default_persistent: bool) -> Credentials<'_> {
    Credentials {
        name: &a.name,
        password: a.password.expose(),
        email: a.email.as_deref(),
        persistent: a.persistent.unwrap_or(default_persistent),
    }
}

/// The asynchronous half of account operations (no session state: it comes back as an
/// [`Outcome`]).
async fn run_account_op(
    state: &AppState,
    principal: Option<Principal>,
    peer: IpAddr,
    conn: ConnId,
    request: Request,
) -> Result<Outcome, ProtoError> {
    let auth = &state.auth;
    match request {
        Request::Connect(c) => {
            let token =
                c.token.ok_or_else(|| ProtoError::new(ErrorCode::Unauthenticated, "credentials required"))?;
            auth.verify(token.expose()).await.map(Outcome::Connected)
        }
        Request::Register(a) => {
            // sockey's schema defaults a new registration to persistent.
            auth.register(peer, creds(&a, true)).await.map(Outcome::LoggedIn)
        }
        Request::Login(a) => auth.login(peer, creds(&a, false)).await.map(Outcome::LoggedIn),
        Request::Refresh { .. } => {
            let p = principal.ok_or_else(not_connected)?;
            auth.refresh_principal(&p, Some(conn)).await.map(Outcome::Refreshed)
        }
        Request::Logout => {
            let p = principal.ok_or_else(not_connected)?;
            let Some(sid) = p.session_id() else {
                return Err(ProtoError::new(ErrorCode::Unauthenticated, "not logged in with a session"));
            };
            auth.logout(sid, Some(conn)).await.map(|()| Outcome::LoggedOut)
        }
        Request::ChangePassword { password, new_password } => {
            let p = principal.ok_or_else(not_connected)?;
            auth.change_password(&p, password.expose(), new_password.expose(), Some(conn))
                .await
                .map(|()| Outcome::PasswordChanged)
        }
        Request::DeleteAccount { password } => {
            let p = principal.ok_or_else(not_connected)?;
            auth.delete_account(&p, password.expose(), Some(conn)).await.map(|()| Outcome::AccountDeleted)
        }
        Request::Subscribe { .. }
        | Request::Unsubscribe { .. }
        | Request::Publish { .. }
        | Request::History { .. }
        | Request::Presence { .. }
        | Request::PresenceStats { .. }
        | Request::Ping => Err(ProtoError::new(ErrorCode::Internal, "internal error")),
    }
}

impl Dialect for Session {
    type Event = Event;

    fn idle_timeout(&self) -> (Duration, u16) {
        let ws = &self.state.config.websocket;
        (Duration::from_millis(ws.ping_interval_ms + ws.pong_timeout_ms), close::IDLE_TIMEOUT)
    }

    fn handshake_deadline(&self) -> Option<(Duration, u16)> {
        // Counted from the socket opening, so failed `connect` attempts cannot keep an
        // unauthenticated connection alive.
        self.principal.is_none().then(|| {
            (Duration::from_millis(self.state.config.websocket.connect_timeout_ms), close::CONNECT_TIMEOUT)
        })
    }

    fn heartbeat(&self) -> Heartbeat {
        Heartbeat::App(Utf8Bytes::from_static(message::PING_FRAME))
    }

    fn on_text(&mut self, text: Utf8Bytes, out: &mut Vec<Message>) -> Flow {
        if self.busy {
            if self.queued.len() >= MAX_QUEUED {
                self.on_rate_limited(&text, out);
            } else {
                self.queued.push_back(text);
            }
            return Flow::Continue;
        }
        self.process(&text, out);
        Flow::Continue
    }

    fn on_event(&mut self, event: Event, out: &mut Vec<Message>) -> Flow {
        match event {
            Event::Done { id, outcome } => {
                self.busy = false;
                let flow = match outcome {
                    Ok(o) => self.apply(id, o, out),
                    Err(e) => {
                        out.push(self.error(Some(id), e));
                        Flow::Continue
                    }
                };
                if flow != Flow::Continue {
                    return flow;
                }
                while !self.busy {
                    let Some(t) = self.queued.pop_front() else { break };
                    self.process(&t, out);
                }
                Flow::Continue
            }
            // `demote` unregisters the old session (a no-op where the registry already
            // forgot it, as after a revocation).
            Event::Live(LiveEvent::Revoked(why)) => self.demote(why, out),
            Event::Live(LiveEvent::Rotated(issued)) => {
                // Another connection on the same session refreshed it: adopt the new token so
                // this one keeps working (and can renew it later), and tell the client.
                let same =
                    self.principal.as_ref().and_then(Principal::session_id) == issued.principal.session_id();
                if same {
                    out.push(session_push(&issued));
                    self.set_principal(issued.principal.clone(), out);
                }
                Flow::Continue
            }
            Event::Expired(generation) if generation == self.timer_gen => {
                let Some(p) = self.principal.clone() else { return Flow::Continue };
                match p.kind {
                    PrincipalKind::Session { .. } => {
                        let (state, mb) = (Arc::clone(&self.state), self.mailbox.clone());
                        let conn = self.id;
                        tokio::spawn(async move {
                            let r = state.auth.renew_expired(&p, conn).await;
                            mb.send(Event::Renewed(generation, r));
                        });
                    }
                    _ => {
                        // A JWT: ask for a fresh one and give the client a grace period.
                        self.refresh_pending = true;
                        out.push(Message::Text(Utf8Bytes::from_static(r#"{"push":"refresh"}"#)));
                        let grace = self.state.auth.refresh_grace_ms();
                        let at = self
                            .state
                            .auth
                            .clock()
                            .now_ms()
                            .saturating_add(i64::try_from(grace).unwrap_or(i64::MAX));
                        let (clock, mb) = (self.state.auth.clock().clone(), self.mailbox.clone());
                        let task = tokio::spawn(async move {
                            clock.sleep_until(at).await;
                            mb.send(Event::RefreshDeadline(generation));
                        });
                        self.timer = Some(task.abort_handle());
                    }
                }
                Flow::Continue
            }
            Event::Renewed(generation, r) if generation == self.timer_gen => match r {
                Ok(Some(issued)) => {
                    out.push(session_push(&issued));
                    self.set_principal(issued.principal, out);
                    Flow::Continue
                }
                // Another connection renewed first; its `Rotated` event carries the token.
                Ok(None) => Flow::Continue,
                Err(_) => self.demote(Revoked::Expired, out),
            },
            Event::RefreshDeadline(generation) if generation == self.timer_gen && self.refresh_pending => {
                Flow::Close(close::AUTH_EXPIRED, "token expired and was not refreshed")
            }
            Event::Expired(_) | Event::Renewed(..) | Event::RefreshDeadline(_) => Flow::Continue,
        }
    }

    fn on_rate_limited(&mut self, text: &str, out: &mut Vec<Message>) {
        let id = message::decode_client_frame(text).ok().and_then(|f| match f {
            ClientFrame::Request { id, .. } => Some(id),
            ClientFrame::Pong => None,
        });
        out.push(self.error(id, ProtoError::new(ErrorCode::RateLimited, "too many messages; slow down")));
    }

    fn on_close(&mut self) {
        if let Some(t) = self.timer.take() {
            t.abort();
        }
        if let Some(sid) = self.principal.as_ref().and_then(Principal::session_id) {
            self.state.auth.live.unregister(sid, self.id);
        }
        for (c, _) in self.subscriptions.drain(..) {
            self.state.hub.unsubscribe(&c, self.id);
        }
    }
}
