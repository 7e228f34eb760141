//! Tether's server: transports, dialects, the HTTP API, configuration and metrics.
//!
//! This is the only crate that knows HTTP, WebSocket framing and JSON framing of the
//! dialects; it translates them onto `tether-engine`, which holds the logic.
//!
//! # Layout
//!
//! - [`config`]: the TOML configuration and its validation.
//! - [`state`]: state shared by handlers (hub, limits, keys, metrics, shutdown).
//! - [`app`]: the router and the graceful serve loop.
//! - [`conn`]: the WebSocket connection loop every dialect runs on.
//! - [`outbox`]: the bounded per-connection queue (the hub's sink).
//! - [`dialects`]: native protocol, event-server, Autobahn echo.
//! - [`sse`]: server-sent events.
//! - [`api`]: the HTTP server API.
//! - [`metrics`]: counters, gauges and the Prometheus exposition.
//! - [`keys`]: API key resolution (flags, env, config, generated file).

pub mod api;
pub mod app;
pub mod config;
pub mod conn;
pub mod dialects;
pub mod keys;
pub mod metrics;
pub mod outbox;
pub mod sse;
pub mod state;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use config::Config;
pub use state::{AppState, Shared};

/// A server running in the background (used by tests and the benchmark tool).
#[derive(Debug)]
pub struct RunningServer {
    /// The bound address.
    pub addr: SocketAddr,
    /// Its state, for assertions.
    pub state: AppState,
    stop: Option<oneshot::Sender<()>>,
    join: JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// Binds `config.listen` (use port 0 for an ephemeral port) and serves in the
    /// background with the given API keys.
    pub async fn start(config: Config, api_keys: HashSet<String>) -> std::io::Result<Self> {
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Shared::new(config, api_keys));
        let (tx, rx) = oneshot::channel::<()>();
        let join = tokio::spawn(app::serve(listener, Arc::clone(&state), async move {
            let _ = rx.await;
        }));
        Ok(Self { addr, state, stop: Some(tx), join })
    }

    /// Triggers graceful shutdown and waits for it to finish.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.join.await.map_err(std::io::Error::other)?
    }
}
