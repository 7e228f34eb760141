//! The router and the serve loop with graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post};
use axum::serve::ListenerExt;
use tokio::net::TcpListener;

use crate::dialects::{echo, event_server, native};
use crate::state::AppState;
use crate::{api, auth, sse};

/// Pending connections the kernel queues for `accept` (capped by `net.core.somaxconn`).
/// A connect storm of thousands of clients overflows a small queue, and every dropped SYN
/// costs its client a one-second retransmit.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds the listening socket with [`LISTEN_BACKLOG`].
pub fn bind_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket =
        if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    // As std and tokio do: a restarted server can bind while old connections are in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Builds the router. Tests can call this directly.
pub fn router(state: AppState) -> Router {
    let mut r = Router::new()
        .route("/ws", get(native::handler))
        .route("/sse", get(sse::handler))
        .route("/jetstream", get(crate::dialects::jetstream::handler))
        .route("/api/publish", post(api::publish))
        .route("/api/broadcast", post(api::broadcast))
        .route("/api/batch", post(api::batch))
        .route("/api/history", post(api::history))
        .route("/api/presence", post(api::presence))
        .route("/api/presence_stats", post(api::presence_stats))
        .route("/api/openapi.json", get(api::openapi))
        .route("/api/scopes/{name}", get(crate::sync::http::read))
        .route("/api/scopes/{name}/update", post(crate::sync::http::update))
        .route("/auth/register", post(auth::http::register))
        .route("/auth/login", post(auth::http::login))
        .route("/auth/refresh", post(auth::http::refresh))
        .route("/auth/logout", post(auth::http::logout))
        .route("/auth/password", post(auth::http::password))
        .route("/auth/account", delete(auth::http::delete_account))
        .route("/auth/me", get(auth::http::me))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics));
    if state.config.event_server.enabled {
        r = r.route("/event", post(event_server::post_event)).route("/events", get(event_server::ws_handler));
    }
    if state.config.testing.echo_route {
        r = r.route("/", any(echo::handler));
    }
    r.fallback(api::not_found).method_not_allowed_fallback(api::method_not_allowed).with_state(state)
}

async fn healthz() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], r#"{"status":"ok"}"#).into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.shutdown.is_cancelled() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"status":"shutting_down"}"#,
        )
            .into_response()
    } else {
        ([(header::CONTENT_TYPE, "application/json")], r#"{"status":"ready"}"#).into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut body = state.metrics.render(state.hub.subscription_count(), state.hub.channel_count());
    if let Some(sync) = &state.sync {
        sync.render_metrics(&mut body);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// Serves until `shutdown` resolves, then shuts down gracefully: stops accepting, closes
/// every WebSocket with 1001 and every SSE stream with a `disconnect` event, and waits up
/// to `shutdown.drain_timeout_ms` for connections to finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(Arc::clone(&state)).into_make_service_with_connect_info::<SocketAddr>();
    let token = state.shutdown.clone();
    let signal = {
        let token = token.clone();
        async move {
            tokio::select! {
                () = shutdown => {}
                () = token.cancelled() => {}
            }
            tracing::info!("shutting down: closing connections");
            token.cancel();
        }
    };
    tokio::spawn(housekeeping(Arc::clone(&state)));
    // Persistent history is restored before the first connection is served.
    let history = if state.config.history.persist {
        let restored = crate::history::restore(&state).await.map_err(std::io::Error::other)?;
        tracing::info!(channels = restored, "channel history restored");
        let stop = tokio_util::sync::CancellationToken::new();
        Some((tokio::spawn(crate::history::run(Arc::clone(&state), stop.clone())), stop))
    } else {
        None
    };
    let drain = Duration::from_millis(state.config.shutdown.drain_timeout_ms);
    // Realtime frames are small and latency-bound: never let Nagle's algorithm hold one
    // back waiting for the peer's (possibly delayed) ACK.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    let server = axum::serve(listener, app).with_graceful_shutdown(signal);
    // One drain budget for HTTP and upgraded connections together, counted from the
    // moment shutdown starts.
    let drained = async {
        let r = server.await;
        state.tasks.close();
        state.tasks.wait().await;
        r
    };
    let deadline = async {
        token.cancelled().await;
        tokio::time::sleep(drain).await;
    };
    tokio::select! {
        r = drained => r?,
        () = deadline => tracing::warn!(
            remaining = state.tasks.len(),
            "drain timeout reached; dropping remaining connections"
        ),
    }
    if let Some((writer, stop)) = history {
        // Nothing publishes any more: write what is queued, then mark the shutdown clean
        // (only then does the next start keep the epochs).
        stop.cancel();
        let _ = writer.await;
        // A publication that never reached the store may have been seen by a client, and
        // the next process would reuse its offset: then the epochs must change, as after
        // a crash.
        if state.history_writer.dropped.load(std::sync::atomic::Ordering::Relaxed) > 0 {
            tracing::warn!("some channel history was not persisted; the next start will begin new epochs");
        } else if let Err(e) = state.store.mark_clean_shutdown().await {
            tracing::warn!(error = %e, "cannot record the clean shutdown");
        }
    }
    Ok(())
}

/// Periodic housekeeping until shutdown: re-checks live sessions (revocations made by
/// another process), purges expired sessions and idle rate-limit entries, expires Jetstream
/// sessions, and sweeps idle channels' history and idempotency keys out of the hub.
async fn housekeeping(state: AppState) {
    let mut sweep = tokio::time::interval(Duration::from_millis(state.config.auth.session_check_ms.max(100)));
    let mut purge = tokio::time::interval(Duration::from_secs(60));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Jetstream sessions expire after minutes; a one-second sweep is precise enough.
    let mut sync_sweep = tokio::time::interval(Duration::from_secs(1));
    sync_sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut hub_sweep = tokio::time::interval(Duration::from_millis(state.config.history.sweep_interval_ms));
    hub_sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut presence_sweep =
        tokio::time::interval(Duration::from_millis(state.config.presence.sweep_interval_ms));
    presence_sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            _ = sweep.tick() => state.auth.sweep_live_sessions().await,
            _ = purge.tick() => state.auth.housekeeping().await,
            _ = sync_sweep.tick() => if let Some(sync) = &state.sync { sync.sweep() },
            _ = hub_sweep.tick() => {
                let dropped = state.hub.sweep(state.now_ms(), state.config.history.idle_ttl_ms);
                if state.config.history.persist {
                    for channel in dropped {
                        if let Err(e) = state.store.delete_history(channel.as_str()).await {
                            tracing::warn!(error = %e, %channel, "cannot delete a swept channel's history");
                        }
                    }
                }
            }
            _ = presence_sweep.tick() => {
                state.hub.presence_sweep(state.now_ms());
            }
        }
    }
}
