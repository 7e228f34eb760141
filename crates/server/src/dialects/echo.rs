//! A WebSocket echo through the real connection loop, served on `/` only when
//! `testing.echo_route` is on. It exists so the Autobahn suite exercises the exact loop
//! production connections run on.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, Utf8Bytes, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::response::Response;

use crate::conn::{Dialect, Flow, Heartbeat, LoopConfig, close};
use crate::metrics::Transport;
use crate::state::AppState;

struct Echo;

impl Dialect for Echo {
    type Event = std::convert::Infallible;
    fn on_event(&mut self, event: Self::Event, _out: &mut Vec<Message>) -> Flow {
        match event {}
    }
    fn idle_timeout(&self) -> (Duration, u16) {
        (Duration::from_secs(60), close::IDLE_TIMEOUT)
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
    let cfg = LoopConfig { rate: 0, ..super::loop_config(&state) };
    super::accept(state, ws, peer, Transport::Echo, cfg, |_, _, _| Echo)
}
