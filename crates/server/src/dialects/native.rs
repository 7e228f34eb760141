//! The native protocol v1 over WebSocket (`/ws`). See `docs/protocol.md`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, Utf8Bytes, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::response::Response;
use tether_engine::hub::ConnId;
use tether_engine::{Publication, Subscriber};
use tether_proto::message::{self, ClientFrame, Connect, Request};
use tether_proto::{ChannelName, ErrorCode, Filter, Identity, ProtoError, Tags};

use crate::conn::{Dialect, Flow, Heartbeat, close};
use crate::metrics::Transport;
use crate::outbox::{Frame, Outbox};
use crate::state::AppState;

/// Encodes a publication as a native push frame.
pub fn encode_push(p: &Publication) -> Frame {
    Frame::now(message::encode_publication(&p.channel, p.data.as_deref(), &p.tags))
}

/// `GET /ws`: upgrades to the native protocol.
pub async fn handler(
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    let cfg = super::loop_config(&state);
    super::accept(state, ws, peer, Transport::Native, cfg, Session::new)
}

/// One native session.
#[derive(Debug)]
pub struct Session {
    state: AppState,
    id: ConnId,
    outbox: Arc<Outbox>,
    /// `None` until `connect` succeeded.
    identity: Option<Arc<Identity>>,
    subscriptions: Vec<ChannelName>,
}

impl Session {
    /// A session before `connect`.
    pub fn new(state: AppState, outbox: Arc<Outbox>) -> Self {
        let id = state.next_conn_id();
        Self { state, id, outbox, identity: None, subscriptions: Vec::new() }
    }

    fn connect(&mut self, c: Connect) -> Result<String, ProtoError> {
        if self.identity.is_some() {
            return Err(ProtoError::new(ErrorCode::AlreadyConnected, "already connected"));
        }
        let auth = &self.state.config.auth;
        let identity = match (c.token, c.identity) {
            (Some(token), None) => match self.state.identities.get(&token) {
                Some(id) => Arc::clone(id),
                None => return Err(ProtoError::new(ErrorCode::Unauthenticated, "unknown token")),
            },
            (None, Some(claimed)) if auth.allow_client_identity => Arc::new(claimed),
            (None, Some(_)) => {
                return Err(ProtoError::new(
                    ErrorCode::PermissionDenied,
                    "this server does not accept client-declared identities",
                ));
            }
            (Some(_), Some(_)) => {
                return Err(ProtoError::new(
                    ErrorCode::InvalidMessage,
                    "send either token or identity, not both",
                ));
            }
            (None, None) if auth.allow_anonymous => Arc::new(Identity::default()),
            (None, None) => return Err(ProtoError::new(ErrorCode::Unauthenticated, "credentials required")),
        };
        self.identity = Some(identity);
        let ws = &self.state.config.websocket;
        Ok(format!(
            r#"{{"client":"{}","version":"{}","ping_interval_ms":{},"pong_timeout_ms":{}}}"#,
            self.id,
            message::PROTOCOL_VERSION,
            ws.ping_interval_ms,
            ws.pong_timeout_ms
        ))
    }

    fn subscribe(&mut self, channel: ChannelName, filter: Option<Filter>) -> Result<(), ProtoError> {
        let identity = self.identity.as_ref().ok_or_else(not_connected)?;
        if self.subscriptions.contains(&channel) {
            return Err(ProtoError::new(ErrorCode::AlreadySubscribed, "already subscribed to this channel"));
        }
        let max = self.state.config.limits.max_subscriptions_per_connection;
        if self.subscriptions.len() >= max {
            return Err(ProtoError::new(
                ErrorCode::TooManySubscriptions,
                format!("a connection may hold at most {max} subscriptions"),
            ));
        }
        let opts = self.state.namespaces.check_subscribe(&channel, identity.is_anonymous())?;
        self.state.hub.subscribe(
            &channel,
            Subscriber {
                conn: self.id,
                sink: Arc::clone(&self.outbox),
                format: self.state.formats.native,
                identity: Arc::clone(identity),
            },
            filter,
            opts.max_subscribers,
        )?;
        self.subscriptions.push(channel);
        Ok(())
    }

    fn unsubscribe(&mut self, channel: &ChannelName) -> Result<(), ProtoError> {
        self.identity.as_ref().ok_or_else(not_connected)?;
        let Some(i) = self.subscriptions.iter().position(|c| c == channel) else {
            return Err(ProtoError::new(ErrorCode::NotSubscribed, "not subscribed to this channel"));
        };
        self.subscriptions.swap_remove(i);
        self.state.hub.unsubscribe(channel, self.id);
        Ok(())
    }

    fn publish(&self, channel: ChannelName, data: &str, tags: Tags) -> Result<(), ProtoError> {
        self.identity.as_ref().ok_or_else(not_connected)?;
        // Sizes are checked on the stored (minified) form, as the HTTP API does.
        let data = tether_proto::json::minify(data).into_owned().into_boxed_str();
        self.state.namespaces.check_client_publish(&channel, data.len())?;
        self.state.publish(&Publication { channel, data: Some(data), tags, target: None });
        Ok(())
    }

    fn handle(&mut self, request: Request) -> Result<String, ProtoError> {
        match request {
            Request::Connect(c) => self.connect(c),
            Request::Subscribe { channel, filter } => {
                self.subscribe(channel, filter).map(|()| "{}".to_owned())
            }
            Request::Unsubscribe { channel } => self.unsubscribe(&channel).map(|()| "{}".to_owned()),
            Request::Publish { channel, data, tags } => {
                self.publish(channel, &data, tags).map(|()| "{}".to_owned())
            }
            Request::Ping => {
                self.identity.as_ref().ok_or_else(not_connected)?;
                Ok("{}".to_owned())
            }
        }
    }

    fn error(&self, id: Option<u64>, e: ProtoError) -> Message {
        let e = self.state.count_error(e);
        Message::Text(message::encode_error(id, &e).into())
    }
}

fn not_connected() -> ProtoError {
    ProtoError::new(ErrorCode::NotConnected, "send connect first")
}

impl Dialect for Session {
    fn idle_timeout(&self) -> (Duration, u16) {
        let ws = &self.state.config.websocket;
        (Duration::from_millis(ws.ping_interval_ms + ws.pong_timeout_ms), close::IDLE_TIMEOUT)
    }

    fn handshake_deadline(&self) -> Option<(Duration, u16)> {
        // Counted from the socket opening, so failed `connect` attempts cannot keep an
        // unauthenticated connection alive.
        self.identity.is_none().then(|| {
            (Duration::from_millis(self.state.config.websocket.connect_timeout_ms), close::CONNECT_TIMEOUT)
        })
    }

    fn heartbeat(&self) -> Heartbeat {
        Heartbeat::App(Utf8Bytes::from_static(message::PING_FRAME))
    }

    fn on_text(&mut self, text: Utf8Bytes, out: &mut Vec<Message>) -> Flow {
        match message::decode_client_frame(&text) {
            Ok(ClientFrame::Pong) => {}
            Ok(ClientFrame::Request { id, request }) => {
                let reply = match self.handle(request) {
                    Ok(result) => Message::Text(message::encode_result(id, &result).into()),
                    Err(e) => self.error(Some(id), e),
                };
                out.push(reply);
            }
            Err(e) => out.push(self.error(e.id, e.error)),
        }
        Flow::Continue
    }

    fn on_rate_limited(&mut self, text: &str, out: &mut Vec<Message>) {
        let id = message::decode_client_frame(text).ok().and_then(|f| match f {
            ClientFrame::Request { id, .. } => Some(id),
            ClientFrame::Pong => None,
        });
        out.push(self.error(id, ProtoError::new(ErrorCode::RateLimited, "too many messages; slow down")));
    }

    fn on_close(&mut self) {
        for c in self.subscriptions.drain(..) {
            self.state.hub.unsubscribe(&c, self.id);
        }
    }
}
