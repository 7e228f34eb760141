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
//! - [`history`]: channel history written behind to the store and restored at start-up.
//! - [`auth`]: accounts, sessions, JWTs, API keys, trusted identity headers.
//! - [`clock`]: the injectable wall clock expiry is measured on.
//! - [`metrics`]: counters, gauges and the Prometheus exposition.
//! - [`keys`]: API key resolution (flags, env, config, generated file).
//! - [`admin`]: the work behind `tether user`, `tether apikey` and `tether token mint`.

pub mod admin;
pub mod api;
pub mod app;
pub mod auth;
pub mod clock;
pub mod config;
pub mod conn;
pub mod dialects;
pub mod history;
pub mod keys;
pub mod metrics;
pub mod outbox;
pub mod sse;
pub mod state;
pub mod sync;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use clock::Clock;
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
    /// background with the given API keys, the SQLite store in `config.data_dir` and the
    /// system clock.
    pub async fn start(config: Config, api_keys: HashSet<String>) -> std::io::Result<Self> {
        Self::start_with_clock(config, api_keys, Clock::system()).await
    }

    /// Like [`RunningServer::start`] with a given clock (tests pass a manual one).
    pub async fn start_with_clock(
        config: Config,
        api_keys: HashSet<String>,
        clock: Clock,
    ) -> std::io::Result<Self> {
        let listener = app::bind_listener(config.listen)?;
        let addr = listener.local_addr()?;
        let state = tokio::task::spawn_blocking(move || build_state(config, &api_keys, clock))
            .await
            .map_err(std::io::Error::other)??;
        let state = Arc::new(state);
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

/// Opens the store in the data directory and builds the shared state (blocking).
pub fn build_state(config: Config, api_keys: &HashSet<String>, clock: Clock) -> std::io::Result<Shared> {
    // The other half of `auth.session_cache_ms` is the session cache's (see auth::cache).
    let options = tether_store::StoreOptions {
        max_snapshot_age: std::time::Duration::from_millis(config.auth.session_cache_ms / 2),
    };
    let path = config.data_dir.join(tether_store::sqlite::FILE_NAME);
    let store = tether_store::SqliteStore::open_with(&path, options).map_err(|e| {
        std::io::Error::other(format!("opening the database in {}: {e}", config.data_dir.display()))
    })?;
    Shared::new(config, api_keys, Arc::new(store), clock).map_err(std::io::Error::other)
}
