//! The event-server dialect: `POST /event` publishes, WebSocket `/events` listens.
//!
//! Wire behaviour follows the seed exactly (`docs/dialects/event-server.md`), with its
//! defects fixed: bodies that are not `{event: string, data?: any}` get 400
//! `INVALID_BODY` instead of a silent 200, and no internal error text ever reaches a
//! client. Event type `x` is native channel `<event_server.namespace>:x` (default
//! `events:x`), so both sides share the hub with every other dialect.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, Utf8Bytes, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use serde_json::value::RawValue;
use tether_engine::hub::ConnId;
use tether_engine::{Publication, SubscribeError, Subscriber};
use tether_proto::message::push_json_string;
use tether_proto::{ChannelName, Identity, Tags};

use crate::conn::{Dialect, Flow, Heartbeat, close};
use crate::metrics::Transport;
use crate::outbox::{Frame, Outbox};
use crate::state::AppState;

/// Tokens shorter than this (in UTF-16 units, as the seed measured them) are ignored.
pub const MIN_TOKEN_LEN: usize = 16;

/// Encodes a publication as `{"type":"event","event":NAME,"data":DATA}`, byte-exact with
/// the seed (`data` omitted when absent).
pub fn encode_event(p: &Publication) -> Frame {
    let name = p.channel.local_name();
    let data = p.data.as_deref();
    let mut s = String::with_capacity(40 + name.len() + data.map_or(0, str::len));
    s.push_str(r#"{"type":"event","event":"#);
    push_json_string(&mut s, name);
    if let Some(d) = data {
        s.push_str(r#","data":"#);
        s.push_str(d);
    }
    s.push('}');
    Frame::now(s)
}

/// The seed's token file: re-read whenever its size, timestamps, inode or device change,
/// and on every check while it was changed too recently for its timestamps to be trusted.
#[derive(Debug)]
pub struct TokenFile {
    path: PathBuf,
    cache: Mutex<Option<Cached>>,
}

#[derive(Debug)]
struct Cached {
    stamp: Stamp,
    /// SHA-256 digests of the tokens: a lookup by digest reveals nothing about the token
    /// through timing (a plain string set would compare candidate bytes).
    tokens: Arc<HashSet<tether_store::TokenHash>>,
    /// False while the file's last change is too recent: a rewrite of the same size
    /// within one timestamp tick would leave the stamp unchanged.
    settled: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
    ctime: i64,
    ctime_nsec: i64,
    ino: u64,
    dev: u64,
}

/// How long after a file's last change its stamp is trusted to reveal further changes.
/// Timestamps are coarse (one kernel tick on Linux without multigrain timestamps; two
/// seconds on some filesystems), so a same-size rewrite within that window is invisible.
const SETTLE: Duration = Duration::from_secs(3);

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            len: meta.len(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            ctime: meta.ctime(),
            ctime_nsec: meta.ctime_nsec(),
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }

    /// True if both timestamps are at least [`SETTLE`] before `now`, so a later change
    /// necessarily gets a different timestamp. A timestamp in the future never settles.
    fn settled_at(&self, now: SystemTime) -> bool {
        let at = |secs: i64, nsec: i64| {
            let nsec = u32::try_from(nsec).unwrap_or(0);
            match u64::try_from(secs) {
                Ok(s) => UNIX_EPOCH.checked_add(Duration::new(s, nsec)),
                Err(_) => UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs())),
            }
        };
        [at(self.mtime, self.mtime_nsec), at(self.ctime, self.ctime_nsec)]
            .into_iter()
            .all(|t| t.and_then(|t| now.duration_since(t).ok()).is_some_and(|age| age >= SETTLE))
    }
}

/// Parses token-file text with the seed's rules: split on CRLF, CR or LF; lines shorter
/// than [`MIN_TOKEN_LEN`] are ignored; no trimming.
pub fn parse_tokens(text: &str) -> HashSet<String> {
    text.split("\r\n")
        .flat_map(|l| l.split(['\r', '\n']))
        .filter(|l| l.encode_utf16().count() >= MIN_TOKEN_LEN)
        .map(str::to_owned)
        .collect()
}

impl TokenFile {
    /// A token file at `path` (read lazily).
    pub fn new(path: PathBuf) -> Self {
        Self { path, cache: Mutex::new(None) }
    }

    /// True if `token` is in the file as it is now. A missing or unreadable file accepts
    /// nothing. Costs one `stat` per call; the file is read only when it changed (or
    /// changed so recently that its timestamps cannot tell, see `SETTLE`).
    pub fn contains(&self, token: &str) -> bool {
        let now = SystemTime::now();
        let Ok(meta) = std::fs::metadata(&self.path) else {
            *self.cache.lock() = None;
            return false;
        };
        let stamp = Stamp::of(&meta);
        let cached = self
            .cache
            .lock()
            .as_ref()
            .filter(|c| c.settled && c.stamp == stamp)
            .map(|c| Arc::clone(&c.tokens));
        let tokens = match cached {
            Some(t) => t,
            None => {
                let Ok(text) = std::fs::read_to_string(&self.path) else { return false };
                let t = Arc::new(parse_tokens(&text).iter().map(|t| crate::auth::token::hash(t)).collect());
                let settled = stamp.settled_at(now);
                *self.cache.lock() = Some(Cached { stamp, tokens: Arc::clone(&t), settled });
                t
            }
        };
        tokens.contains(&crate::auth::token::hash(token))
    }
}

/// Outcome of checking an `Authorization`-style value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthCode {
    /// Accepted.
    Ok,
    /// Missing, short or unknown token.
    Unauthenticated,
    /// A scheme other than `Basic` (case-sensitive).
    UnrecognizedScheme,
}

impl AuthCode {
    fn as_str(self) -> &'static str {
        match self {
            AuthCode::Ok => "OK",
            AuthCode::Unauthenticated => "UNAUTHENTICATED",
            AuthCode::UnrecognizedScheme => "AUTH_UNRECOGNIZED_SCHEME",
        }
    }
}

/// Checks `Basic <raw token>` (not RFC 7617: the token is compared as it is).
pub fn check_auth(state: &AppState, value: Option<&str>) -> AuthCode {
    let Some(value) = value else { return AuthCode::Unauthenticated };
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if scheme != "Basic" {
        return AuthCode::UnrecognizedScheme;
    }
    match &state.event_tokens {
        Some(f) if token.encode_utf16().count() >= MIN_TOKEN_LEN && f.contains(token) => AuthCode::Ok,
        _ => AuthCode::Unauthenticated,
    }
}

fn code_response(status: StatusCode, code: &str) -> Response {
    let body = format!(r#"{{"code":"{code}"}}"#);
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn channel_for(state: &AppState, event: &str) -> Option<ChannelName> {
    let ns = &state.config.event_server.namespace;
    let name = format!("{ns}:{event}");
    ChannelName::parse(&name).ok()
}

#[derive(serde::Deserialize)]
struct EventBody<'a> {
    #[serde(borrow)]
    event: &'a RawValue,
    /// `None` only when absent: `"data":null` is data (the seed relays it as `null`).
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
}

/// Deserializes a field that is present, even as `null`, into `Some`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue as serde::Deserialize<'de>>::deserialize(d).map(Some)
}

/// `POST /event`.
///
/// Authentication comes first and the body is read only afterwards, within
/// `http.max_body_bytes` (413 `PAYLOAD_TOO_LARGE` beyond), so unauthenticated clients
/// cannot make the server buffer anything.
pub async fn post_event(State(state): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    // Tokens are UTF-8 text (the file is read as such), so compare the header's bytes as
    // UTF-8 rather than insisting on visible ASCII.
    let auth =
        parts.headers.get(header::AUTHORIZATION).map(|v| std::str::from_utf8(v.as_bytes()).unwrap_or(""));
    match check_auth(&state, auth) {
        AuthCode::Ok => {}
        other => {
            tracing::warn!(code = other.as_str(), "unauthenticated event-server request");
            return code_response(StatusCode::FORBIDDEN, other.as_str());
        }
    }
    let body = match axum::body::to_bytes(body, state.config.http.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.downcast_ref::<http_body_util::LengthLimitError>().is_some());
            if too_large {
                state.metrics.error(tether_proto::ErrorCode::PayloadTooLarge);
                return code_response(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE");
            }
            return code_response(StatusCode::BAD_REQUEST, "INVALID_BODY");
        }
    };
    state.metrics.bytes_in.fetch_add(body.len() as u64, std::sync::atomic::Ordering::Relaxed);
    let invalid = || code_response(StatusCode::BAD_REQUEST, "INVALID_BODY");
    let Ok(text) = std::str::from_utf8(&body) else { return invalid() };
    if !tether_proto::json::is_object(text) {
        return invalid();
    }
    let Ok(parsed) = serde_json::from_str::<EventBody<'_>>(text) else { return invalid() };
    let Ok(event) = serde_json::from_str::<String>(parsed.event.get()) else { return invalid() };
    let Some(channel) = channel_for(&state, &event) else { return invalid() };
    let data = parsed.data.map(|d| tether_proto::json::minify(d.get()).into_owned().into_boxed_str());
    if let Err(e) = state.namespaces.check_api_publish(&channel, data.as_deref().map_or(0, str::len)) {
        state.metrics.error(e.code);
        return code_response(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE");
    }
    state.publish(&Publication::new(channel, data, Tags::new()));
    code_response(StatusCode::OK, "OK")
}

/// `GET /events`: the listener WebSocket.
pub async fn ws_handler(
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    let cfg = super::loop_config(&state);
    super::accept(state, ws, peer, Transport::EventServer, cfg, |state, outbox, _| Listener {
        id: state.next_conn_id(),
        state,
        outbox,
        identity: Arc::new(Identity::default()),
        subscriptions: Vec::new(),
    })
}

struct Listener {
    state: AppState,
    id: ConnId,
    outbox: Arc<Outbox>,
    identity: Arc<Identity>,
    subscriptions: Vec<ChannelName>,
}

fn init(code: &str) -> Message {
    Message::Text(format!(r#"{{"type":"init","code":"{code}"}}"#).into())
}

#[derive(serde::Deserialize)]
struct InitMessage<'a> {
    #[serde(borrow, default)]
    authentication: Option<&'a RawValue>,
    #[serde(borrow, default)]
    events: Option<&'a RawValue>,
}

impl Listener {
    /// The seed's order: JSON syntax, then `events` array, then authentication.
    fn init(&mut self, text: &str) -> &'static str {
        let Ok(value) = serde_json::from_str::<&RawValue>(text) else { return "INVALID_SYNTAX" };
        // Valid JSON that is not an object (null, numbers, arrays…) has no events. The
        // check must come first: serde would read a struct from an array positionally.
        if !tether_proto::json::is_object(value.get()) {
            return "INVALID_EVENTS_MISSING";
        }
        let Ok(msg) = serde_json::from_str::<InitMessage<'_>>(value.get()) else {
            return "INVALID_EVENTS_MISSING";
        };
        let Some(events) = msg.events.and_then(|e| serde_json::from_str::<Vec<&RawValue>>(e.get()).ok())
        else {
            return "INVALID_EVENTS_MISSING";
        };
        let auth = msg.authentication.and_then(|a| serde_json::from_str::<String>(a.get()).ok());
        match check_auth(&self.state, auth.as_deref()) {
            AuthCode::Ok => {}
            other => return other.as_str(),
        }
        let mut channels = Vec::with_capacity(events.len());
        for e in events {
            // Names are strings; integers are taken in their decimal form, as the seed's
            // object-key conversion did.
            let name = serde_json::from_str::<String>(e.get())
                .ok()
                .or_else(|| serde_json::from_str::<i64>(e.get()).ok().map(|n| n.to_string()));
            match name.and_then(|n| channel_for(&self.state, &n)) {
                Some(c) => channels.push(c),
                None => return "INVALID_EVENT_NAME",
            }
        }
        channels.sort();
        channels.dedup();
        channels.retain(|c| !self.subscriptions.contains(c));
        let max = self.state.config.limits.max_subscriptions_per_connection;
        if self.subscriptions.len() + channels.len() > max {
            return "TOO_MANY_SUBSCRIPTIONS";
        }
        for c in channels {
            let max_subs = self.state.namespaces.resolve(&c).map_or(0, |o| o.max_subscribers);
            let sub = Subscriber {
                conn: self.id,
                sink: Arc::clone(&self.outbox),
                format: self.state.formats.event_server,
                identity: Arc::clone(&self.identity),
            };
            match self.state.hub.subscribe(&c, sub, None, max_subs) {
                Ok(()) | Err(SubscribeError::AlreadySubscribed) => self.subscriptions.push(c),
                Err(SubscribeError::ChannelFull) => return "CHANNEL_FULL",
            }
        }
        "OK"
    }
}

impl Dialect for Listener {
    type Event = std::convert::Infallible;
    fn on_event(&mut self, event: Self::Event, _out: &mut Vec<Message>) -> Flow {
        match event {}
    }
    fn idle_timeout(&self) -> (Duration, u16) {
        let ws = &self.state.config.websocket;
        (Duration::from_millis(ws.ping_interval_ms + ws.pong_timeout_ms), close::IDLE_TIMEOUT)
    }

    fn heartbeat(&self) -> Heartbeat {
        Heartbeat::WsPing
    }

    fn on_text(&mut self, text: Utf8Bytes, out: &mut Vec<Message>) -> Flow {
        out.push(init(self.init(&text)));
        Flow::Continue
    }

    fn on_binary(&mut self, data: bytes::Bytes, out: &mut Vec<Message>) -> Flow {
        let code = match std::str::from_utf8(&data) {
            Ok(text) => self.init(text),
            Err(_) => "INVALID_SYNTAX",
        };
        out.push(init(code));
        Flow::Continue
    }

    fn on_rate_limited(&mut self, _text: &str, out: &mut Vec<Message>) {
        out.push(init("RATE_LIMITED"));
    }

    fn on_close(&mut self) {
        for c in self.subscriptions.drain(..) {
            self.state.hub.unsubscribe(&c, self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_rules() {
        let t = parse_tokens("short\r\nexactly_16_chars\rtrailing_space_token \nwindows_line_token\r\n\n");
        assert!(t.contains("exactly_16_chars"));
        assert!(t.contains("trailing_space_token "));
        assert!(!t.contains("trailing_space_token"));
        assert!(t.contains("windows_line_token"));
        assert!(!t.contains("short"));
        assert_eq!(t.len(), 3);
    }

    /// Regression: a stamp taken right after a change must not be trusted, since a
    /// same-size rewrite within the same timestamp tick would leave it unchanged.
    #[test]
    fn recent_stamps_are_not_settled() {
        let now = SystemTime::now();
        let secs = |t: SystemTime| {
            let d = t.duration_since(UNIX_EPOCH).unwrap();
            (i64::try_from(d.as_secs()).unwrap(), i64::from(d.subsec_nanos()))
        };
        let stamp = |m: SystemTime, c: SystemTime| {
            let ((mtime, mtime_nsec), (ctime, ctime_nsec)) = (secs(m), secs(c));
            Stamp { len: 20, mtime, mtime_nsec, ctime, ctime_nsec, ino: 1, dev: 1 }
        };
        let old = now - Duration::from_secs(3600);
        assert!(stamp(old, old).settled_at(now));
        assert!(!stamp(now, now).settled_at(now));
        // An mtime restored to the past does not hide a recent change (ctime).
        assert!(!stamp(old, now - Duration::from_millis(1)).settled_at(now));
        // A timestamp in the future never settles.
        assert!(!stamp(old, now + Duration::from_secs(60)).settled_at(now));
    }

    #[test]
    fn byte_exact_event() {
        let p = Publication::new(
            ChannelName::parse("events:the_event").unwrap(),
            Some(r#"{"foo":"bar"}"#.into()),
            Tags::new(),
        );
        assert_eq!(&*encode_event(&p).text, r#"{"type":"event","event":"the_event","data":{"foo":"bar"}}"#);
        let p = Publication { data: None, ..p };
        assert_eq!(&*encode_event(&p).text, r#"{"type":"event","event":"the_event"}"#);
    }
}
