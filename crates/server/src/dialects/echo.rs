//! A WebSocket echo through the real connection loop, served on `/` only when
//! `testing.echo_route` is on. It exists so the Autobahn suite exercises the exact loop
//! production connections run on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, Utf8Bytes, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};

use crate::conn::{self, Dialect, Flow, Heartbeat};
use crate::metrics::Transport;
use crate::state::{AppState, ConnLimiter};

struct Echo;

impl Dialect for Echo {
    fn idle_timeout(&self) -> (Duration, u16) {
        (Duration::from_secs(60), conn::close::IDLE_TIMEOUT)
    }
    fn heartbeat(&self) -> Heartbeat {
        Heartbeat::Off
    }
    fn on_text(&mut self, text: Utf8Bytes, out: &mut Vec<Message>) -> Flow {
        out.push(Message::Text(text));
        Flow::Continue
    }
    fn on_binary(&mut self, data: bytes::Bytes, out: &mut Vec<Message>) -> Flow {
        out.push(Message::Binary(data));
        Flow::Continue
    }
    fn on_rate_limited(&mut self, _text: &str, _out: &mut Vec<Message>) {}
    fn on_close(&mut self) {}
}

/// `GET /` (testing only): echo.
pub async fn handler(
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    let ws = match super::native::require_upgrade(&state, ws) {
        Ok(ws) => ws,
        Err(e) => return e.into_response(),
    };
    let slot = match ConnLimiter::acquire(&state, peer.ip()) {
        Ok(s) => s,
        Err(e) => return crate::api::limit_response(&state, e),
    };
    let tracker = state.tasks.clone();
    let mut cfg = super::native::loop_config(&state);
    cfg.rate = 0;
    super::native::configure(ws, &state)
        .on_upgrade(move |socket| {
            tracker.track_future(async move {
                let _slot = slot;
                let _gauge = state.metrics.connection_opened(Transport::Echo);
                let outbox = state.new_outbox();
                conn::run(socket, Echo, outbox, cfg, state.shutdown.clone(), Arc::clone(&state.metrics))
                    .await;
            })
        })
        .into_response()
}
