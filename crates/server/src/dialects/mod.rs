//! Dialects: each translates one wire protocol onto the hub. They never reimplement hub
//! logic; they decode, call the engine, and encode.

pub mod echo;
pub mod event_server;
pub mod jetstream;
pub mod native;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use tether_proto::{ErrorCode, ProtoError};

use crate::conn::{self, Dialect, LoopConfig, Mailbox};
use crate::metrics::Transport;
use crate::outbox::Outbox;
use crate::state::{AppState, ConnLimiter};

/// Applies the WebSocket size limits from config to an upgrade.
pub(crate) fn configure(ws: WebSocketUpgrade, state: &AppState) -> WebSocketUpgrade {
    let l = &state.config.limits;
    // The read buffer is zero-filled to its capacity on the first read, so its size is
    // resident memory of every idle connection: 1 KiB instead of tungstenite's 128 KiB.
    // Large inbound messages still work; they just take more reads.
    // The write buffer must stay large: with 0, tungstenite writes every frame to the socket
    // as it is fed, defeating the one-flush-per-batch coalescing of the connection loop.
    ws.read_buffer_size(1024)
        .write_buffer_size(64 * 1024)
        .max_message_size(l.max_message_bytes)
        .max_frame_size(l.max_frame_bytes)
}

/// The loop settings from config.
pub(crate) fn loop_config(state: &AppState) -> LoopConfig {
    let ws = &state.config.websocket;
    LoopConfig {
        ping_interval: Duration::from_millis(ws.ping_interval_ms),
        write_timeout: Duration::from_millis(ws.write_timeout_ms),
        rate: state.config.limits.inbound_rate,
        burst: state.config.limits.inbound_burst,
    }
}

/// A request that is not a valid WebSocket upgrade gets the usual JSON error, not axum's
/// plain-text rejection.
pub(crate) fn require_upgrade(
    state: &AppState,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<WebSocketUpgrade, crate::api::ApiError> {
    ws.map_err(|r| {
        crate::api::ApiError(state.count_error(ProtoError::new(
            ErrorCode::InvalidMessage,
            format!("expected a WebSocket upgrade request: {}", r.body_text()),
        )))
    })
}

/// Accepts a WebSocket upgrade for a dialect: validates the upgrade, takes a connection
/// slot, and runs the connection loop with the dialect `make` builds, as a tracked task.
pub(crate) fn accept<D, F>(
    state: AppState,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    peer: SocketAddr,
    transport: Transport,
    cfg: LoopConfig,
    make: F,
) -> Response
where
    D: Dialect + 'static,
    F: FnOnce(AppState, Arc<Outbox>, Mailbox<D::Event>) -> D + Send + 'static,
{
    let ws = match require_upgrade(&state, ws) {
        Ok(ws) => ws,
        Err(e) => return e.into_response(),
    };
    let slot = match ConnLimiter::acquire(&state, peer.ip()) {
        Ok(s) => s,
        Err(e) => return crate::api::limit_response(&state, e),
    };
    let tracker = state.tasks.clone();
    configure(ws, &state)
        .on_upgrade(move |socket: WebSocket| {
            tracker.track_future(async move {
                let _slot = slot;
                let _gauge = state.metrics.connection_opened(transport);
                let outbox = state.new_outbox();
                let events = Mailbox::new();
                let dialect = make(Arc::clone(&state), Arc::clone(&outbox), events.clone());
                let (shutdown, metrics) = (state.shutdown.clone(), Arc::clone(&state.metrics));
                drop(state);
                conn::run(socket, dialect, outbox, events, cfg, shutdown, metrics).await;
            })
        })
        .into_response()
}
