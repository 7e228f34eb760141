//! State shared by every handler of one server.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tether_engine::hub::ConnId;
use tether_engine::hub::{PublishOptions, Published};
use tether_engine::{FormatId, Hub, NamespaceOptions, Namespaces, Publication};
use tether_proto::{ErrorCode, ProtoError};
use tether_store::Store;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::apikeys::ApiKeys;
use crate::auth::{Auth, AuthSetupError};
use crate::clock::Clock;
use crate::config::Config;
use crate::dialects::event_server::TokenFile;
use crate::metrics::Metrics;
use crate::outbox::Outbox;

/// The wire formats the hub encodes publications into, one encoding per publication each.
#[derive(Debug, Clone, Copy)]
pub struct Formats {
    /// Native protocol JSON push.
    pub native: FormatId,
    /// SSE `data:` event carrying the native push.
    pub sse: FormatId,
    /// Event-server `{"type":"event",…}`.
    pub event_server: FormatId,
}

/// Everything a handler needs.
#[derive(Debug)]
pub struct Shared {
    /// The loaded configuration.
    pub config: Config,
    /// Channels and subscriptions.
    pub hub: Hub<Outbox>,
    /// Wire formats registered in the hub.
    pub formats: Formats,
    /// Namespace rules.
    pub namespaces: Namespaces,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Cancelled when the server starts shutting down.
    pub shutdown: CancellationToken,
    /// Tracks connection tasks so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// Connection limits.
    pub limiter: ConnLimiter,
    /// Authentication: accounts, sessions, JWTs, API keys, trusted headers.
    pub auth: Auth,
    /// The event-server token file, when configured.
    pub event_tokens: Option<TokenFile>,
    /// Model sync (`/jetstream`), when a schema is configured.
    pub sync: Option<Arc<crate::sync::SyncShared>>,
    /// Wall clock (history ages, idempotency windows).
    pub clock: Clock,
    /// The embedded store.
    pub store: Arc<dyn Store>,
    /// Channel history on its way to the store (`history.persist`).
    pub history_writer: crate::history::HistoryWriter,
    next_conn: AtomicU64,
}

/// Why the server state could not be built (at start-up).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The auth configuration.
    #[error(transparent)]
    Auth(#[from] AuthSetupError),
    /// The sync schema or scope templates.
    #[error(transparent)]
    Sync(#[from] crate::sync::SyncSetupError),
}

/// Shared state handle.
pub type AppState = Arc<Shared>;

impl Shared {
    /// Builds the state from a validated config, the effective API keys, the store and the
    /// clock. Blocking (loads keys, computes a dummy password hash): call at start-up.
    pub fn new(
        config: Config,
        api_keys: &HashSet<String>,
        store: Arc<dyn Store>,
        clock: Clock,
    ) -> Result<Self, SetupError> {
        let hub = Hub::new(vec![
            Box::new(crate::dialects::native::encode_push),
            Box::new(crate::sse::encode_event),
            Box::new(crate::dialects::event_server::encode_event),
        ])
        .with_presence_encoder(0, Box::new(crate::dialects::native::encode_presence))
        .with_resync_encoder(0, Box::new(crate::dialects::native::encode_resubscribe));
        let formats = Formats { native: hub.format(0), sse: hub.format(1), event_server: hub.format(2) };
        let keys = ApiKeys::new(api_keys, &config.scoped_api_keys);
        let auth = Auth::new(&config.auth, Arc::clone(&store), clock.clone(), keys)?;
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let sync = crate::sync::SyncShared::from_config(
            &config.sync,
            Arc::clone(&store),
            tasks.clone(),
            shutdown.clone(),
        )?
        .map(Arc::new);
        let event_tokens = config.event_server.tokens_file.clone().map(TokenFile::new);
        let limiter = ConnLimiter::new(config.limits.max_connections, config.limits.max_connections_per_ip);
        Ok(Self {
            namespaces: config.namespaces(),
            config,
            hub,
            formats,
            metrics: Arc::new(Metrics::new()),
            shutdown,
            tasks,
            sync,
            limiter,
            auth,
            event_tokens,
            clock,
            store,
            history_writer: crate::history::HistoryWriter::default(),
            next_conn: AtomicU64::new(1),
        })
    }

    /// A fresh connection id.
    pub fn next_conn_id(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Publishes and counts (see [`Self::publish_keyed`]).
    pub fn publish(&self, p: &Publication) -> Published {
        self.publish_keyed(p, None)
    }

    /// Publishes and counts: with an offset in the channel's history when its namespace
    /// keeps one, and once per `idempotency_key` within `history.idempotency_window_ms`.
    pub fn publish_keyed(&self, p: &Publication, idempotency_key: Option<&str>) -> Published {
        let o = PublishOptions {
            history: self.history_limits(&p.channel),
            idempotency_key,
            idempotency_window_ms: self.config.history.idempotency_window_ms,
            now_ms: self.now_ms(),
        };
        let done = self.hub.publish_with(p, &o);
        if self.config.history.persist
            && let Some(kept) = &done.kept
        {
            self.history_writer.queue(kept);
        }
        let m = &self.metrics;
        if !done.duplicate {
            m.publications.fetch_add(1, Ordering::Relaxed);
        }
        m.deliveries.fetch_add(done.stats.delivered as u64, Ordering::Relaxed);
        m.dropped.fetch_add(done.stats.dropped as u64, Ordering::Relaxed);
        done
    }

    /// The history bounds of `channel`'s namespace, if it keeps history.
    pub fn history_limits(
        &self,
        channel: &tether_proto::ChannelName,
    ) -> Option<tether_engine::history::HistoryLimits> {
        self.namespaces.resolve(channel).ok().and_then(NamespaceOptions::history_limits)
    }

    /// The clock in milliseconds as the engine takes it (0 before 1970).
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.clock.now_ms()).unwrap_or(0)
    }

    /// Counts an error about to be sent and passes it through.
    pub fn count_error(&self, e: ProtoError) -> ProtoError {
        self.metrics.error(e.code);
        e
    }

    /// A new outbox sized by config.
    pub fn new_outbox(&self) -> Arc<Outbox> {
        Arc::new(Outbox::new(self.config.websocket.outbound_queue))
    }
}

/// Limits open connections in total and per IP address.
#[derive(Debug)]
pub struct ConnLimiter {
    max_total: usize,
    max_per_ip: usize,
    state: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// Holds one connection slot; releases it when dropped.
#[derive(Debug)]
pub struct ConnSlot {
    state: Arc<Shared>,
    ip: IpAddr,
}

impl ConnLimiter {
    fn new(max_total: usize, max_per_ip: usize) -> Self {
        Self { max_total, max_per_ip, state: Mutex::new((0, HashMap::new())) }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.state.lock().0
    }

    /// Takes a slot for `ip`, or explains which limit is reached.
    pub fn acquire(state: &AppState, ip: IpAddr) -> Result<ConnSlot, ProtoError> {
        if state.shutdown.is_cancelled() {
            return Err(ProtoError::new(
                ErrorCode::ShuttingDown,
                "the server is shutting down; reconnect elsewhere",
            ));
        }
        let l = &state.limiter;
        let mut st = l.state.lock();
        if st.0 >= l.max_total {
            return Err(ProtoError::new(
                ErrorCode::TooManyConnections,
                "the server has too many connections",
            ));
        }
        let per = st.1.entry(ip).or_insert(0);
        if *per >= l.max_per_ip {
            return Err(ProtoError::new(
                ErrorCode::TooManyConnections,
                "too many connections from this address",
            ));
        }
        *per += 1;
        st.0 += 1;
        Ok(ConnSlot { state: Arc::clone(state), ip })
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut st = self.state.limiter.state.lock();
        st.0 -= 1;
        if let Some(n) = st.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                st.1.remove(&self.ip);
            }
        }
    }
}
