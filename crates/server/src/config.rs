//! Configuration: the TOML file, its defaults and its validation.
//!
//! Every option is documented in `docs/operations.md` with its default. Unknown keys are
//! rejected with the file, line and key, because a misspelt option silently falling back
//! to its default is a production incident waiting to happen.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tether_engine::{ClientRule, NamespaceOptions, Namespaces, SubscribeRule};
use tether_proto::Identity;
use tether_proto::channel::validate_namespace;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// File path.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys or wrong types.
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        /// File path.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// Values that parse but make no sense together.
    #[error("{path}: {message}")]
    Invalid {
        /// File path (or `<flags>`).
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The whole configuration. Field docs are the reference; `docs/operations.md` mirrors them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Directory for state (the generated API key; later, the SQLite file).
    pub data_dir: PathBuf,
    /// API keys accepted by the HTTP server API (`Authorization: Bearer KEY`).
    pub api_keys: Vec<String>,
    /// API keys that may publish only to some channels.
    pub scoped_api_keys: Vec<ScopedApiKey>,
    /// Logging.
    pub log: LogConfig,
    /// Connection and message limits.
    pub limits: Limits,
    /// WebSocket heartbeats and queues.
    pub websocket: WebSocketConfig,
    /// Server-sent events.
    pub sse: SseConfig,
    /// HTTP server API.
    pub http: HttpConfig,
    /// Connection authentication.
    pub auth: AuthConfig,
    /// Options of channels without a namespace (`enabled = false` rejects such channels).
    pub default_namespace: NamespaceConfig,
    /// Named namespaces.
    pub namespaces: BTreeMap<String, NamespaceConfig>,
    /// The event-server dialect (`POST /event`, `/events`).
    pub event_server: EventServerConfig,
    /// Model sync (the Jetstream dialect on `/jetstream`).
    pub sync: SyncConfig,
    /// Channel history and idempotent publishing (sizes are per namespace).
    pub history: HistoryConfig,
    /// Presence entries' lifetime (which namespaces track presence is per namespace).
    pub presence: PresenceConfig,
    /// Graceful shutdown.
    pub shutdown: ShutdownConfig,
    /// Conformance-testing switches; never enable in production.
    pub testing: TestingConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            data_dir: PathBuf::from("tether-data"),
            api_keys: Vec::new(),
            scoped_api_keys: Vec::new(),
            log: LogConfig::default(),
            limits: Limits::default(),
            websocket: WebSocketConfig::default(),
            sse: SseConfig::default(),
            http: HttpConfig::default(),
            auth: AuthConfig::default(),
            default_namespace: NamespaceConfig::default(),
            namespaces: BTreeMap::new(),
            event_server: EventServerConfig::default(),
            sync: SyncConfig::default(),
            history: HistoryConfig::default(),
            presence: PresenceConfig::default(),
            shutdown: ShutdownConfig::default(),
            testing: TestingConfig::default(),
        }
    }
}

/// Log output.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter directive, e.g. `info` or `tether_server=debug,info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Text, level: "info".to_owned() }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Limits that protect the server from clients.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Most open WebSocket and SSE connections in total.
    pub max_connections: usize,
    /// Most open connections from one IP address.
    pub max_connections_per_ip: usize,
    /// Largest WebSocket message (after reassembling fragments) accepted, in bytes.
    /// A larger one violates the protocol: the connection is closed with 1009.
    pub max_message_bytes: usize,
    /// Largest single WebSocket frame, in bytes (closes with 1009 beyond).
    pub max_frame_bytes: usize,
    /// Most subscriptions one connection may hold.
    pub max_subscriptions_per_connection: usize,
    /// Inbound messages per second allowed per connection (0 = unlimited).
    pub inbound_rate: u32,
    /// Inbound burst allowed above the rate.
    pub inbound_burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 100_000,
            max_connections_per_ip: 10_000,
            max_message_bytes: 1 << 20,
            max_frame_bytes: 1 << 20,
            max_subscriptions_per_connection: 128,
            inbound_rate: 100,
            inbound_burst: 200,
        }
    }
}

/// WebSocket session timing and queues.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSocketConfig {
    /// How often the server sends a heartbeat, in milliseconds.
    pub ping_interval_ms: u64,
    /// How long after a heartbeat the client has to show it is alive, in milliseconds.
    /// A connection silent for `ping_interval_ms + pong_timeout_ms` is closed with 4001.
    pub pong_timeout_ms: u64,
    /// How long a native connection has to send `connect`, in milliseconds (closes 4004).
    pub connect_timeout_ms: u64,
    /// Frames queued for one connection before it is disconnected as a slow consumer (4002).
    pub outbound_queue: usize,
    /// Longest a single socket write may take before the connection is dropped as a slow
    /// consumer, in milliseconds.
    pub write_timeout_ms: u64,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        Self {
            ping_interval_ms: 25_000,
            pong_timeout_ms: 10_000,
            connect_timeout_ms: 10_000,
            outbound_queue: 1024,
            write_timeout_ms: 10_000,
        }
    }
}

/// Server-sent events.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SseConfig {
    /// Heartbeat comment interval, in milliseconds.
    pub heartbeat_ms: u64,
}

impl Default for SseConfig {
    fn default() -> Self {
        Self { heartbeat_ms: 15_000 }
    }
}

/// HTTP server API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Largest request body, in bytes (413 `payload_too_large` beyond).
    pub max_body_bytes: usize,
    /// Most publications in one `batch` or channels in one `broadcast`.
    pub max_batch_items: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self { max_body_bytes: 1 << 20, max_batch_items: 1000 }
    }
}

/// How connections and users authenticate. See `docs/auth.md`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Allow `connect` without credentials.
    pub allow_anonymous: bool,
    /// Trust an `identity` object sent in `connect`. Only for development and tests.
    pub allow_client_identity: bool,
    /// Static connection tokens, each mapped to an identity.
    pub tokens: Vec<TokenIdentity>,
    /// User accounts (register, login, sessions).
    pub accounts: AccountsConfig,
    /// Password hashing cost.
    pub argon2: Argon2Config,
    /// Login and registration rate limits.
    pub rate_limits: AuthRateLimits,
    /// JWT connection tokens minted by the application's backend; off when absent.
    pub jwt: Option<crate::auth::jwt::JwtConfig>,
    /// Peers (IP addresses or CIDRs) whose identity headers are trusted.
    pub trusted_proxies: Vec<String>,
    /// Names of the identity headers a trusted proxy sets.
    pub identity_headers: IdentityHeaders,
    /// How often live connections re-check that their session still exists, in
    /// milliseconds. Revocations made by this server reach connections at once; this
    /// catches those made by another process, such as `tether user passwd`.
    pub session_check_ms: u64,
    /// How late a session-token verification may see a change made by another process
    /// (the CLI), in milliseconds; 0 reads the database on every verification. Half of it
    /// is how long a lookup is remembered in memory, half how long a database read
    /// snapshot is reused. Changes made by this server take effect at once regardless.
    pub session_cache_ms: u64,
    /// Most session lookups remembered in memory (0: none, though read snapshots are still
    /// reused for `session_cache_ms / 2`).
    pub session_cache_entries: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            allow_anonymous: true,
            allow_client_identity: false,
            tokens: Vec::new(),
            accounts: AccountsConfig::default(),
            argon2: Argon2Config::default(),
            rate_limits: AuthRateLimits::default(),
            jwt: None,
            trusted_proxies: Vec::new(),
            identity_headers: IdentityHeaders::default(),
            session_check_ms: 10_000,
            session_cache_ms: 1_000,
            session_cache_entries: 100_000,
        }
    }
}

/// User accounts: switches, session lifetimes and the rules for names and passwords.
/// Defaults follow sockey (`docs/auth.md` § Rules).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccountsConfig {
    /// Accounts at all (login, sessions). Off: `accounts_disabled`.
    pub enabled: bool,
    /// Self-service registration (`register`). Off: users are created with `tether user add`.
    pub registration: bool,
    /// Registration requires an email address.
    pub require_email: bool,
    /// Lifetime of a session token, in seconds.
    pub session_ttl_s: u64,
    /// "Remember me": how long after its expiry a persistent session is still renewed
    /// when presented, in seconds. After that it is logged out like any other.
    pub remember_for_s: u64,
    /// Shortest user name, in characters.
    pub username_min: usize,
    /// Longest user name, in characters.
    pub username_max: usize,
    /// Regular expression a user name must match.
    pub username_pattern: String,
    /// Shortest password, in characters.
    pub password_min: usize,
    /// Longest password, in characters.
    pub password_max: usize,
    /// Regular expression a password must match.
    pub password_pattern: String,
    /// A password must contain a letter.
    pub password_require_letter: bool,
    /// A password must contain a digit.
    pub password_require_digit: bool,
    /// A password must contain one of `!@#$%^&*`.
    pub password_require_special: bool,
}

impl Default for AccountsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            registration: true,
            require_email: true,
            session_ttl_s: 86_400,
            remember_for_s: 30 * 86_400,
            username_min: 3,
            username_max: 32,
            username_pattern: "^[a-zA-Z0-9!@#$%^&*]*$".to_owned(),
            password_min: 6,
            password_max: 60,
            password_pattern: "^[a-zA-Z0-9!@#$%^&*]*$".to_owned(),
            password_require_letter: true,
            password_require_digit: true,
            password_require_special: true,
        }
    }
}

/// Argon2id parameters (OWASP's recommended minimum by default).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Argon2Config {
    /// Memory per hash, KiB.
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
    /// Hashes computed at once (0 = number of CPUs); more wait their turn.
    pub max_concurrent: usize,
}

impl Default for Argon2Config {
    fn default() -> Self {
        Self { memory_kib: 19_456, iterations: 2, parallelism: 1, max_concurrent: 0 }
    }
}

/// Rate limits of login and registration attempts (token buckets: `burst` attempts, then
/// one more every `60 / per_minute` seconds).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthRateLimits {
    /// Login attempts per client IP per minute (0 = unlimited).
    pub login_per_ip_per_minute: u32,
    /// Login burst per client IP.
    pub login_ip_burst: u32,
    /// Login attempts per user name per minute, from any address (0 = unlimited).
    pub login_per_user_per_minute: u32,
    /// Login burst per user name.
    pub login_user_burst: u32,
    /// Registrations per client IP per minute (0 = unlimited).
    pub register_per_ip_per_minute: u32,
    /// Registration burst per client IP.
    pub register_ip_burst: u32,
    /// Most addresses and names tracked at once; beyond, new ones are refused.
    pub max_tracked: usize,
}

impl Default for AuthRateLimits {
    fn default() -> Self {
        Self {
            login_per_ip_per_minute: 30,
            login_ip_burst: 10,
            login_per_user_per_minute: 10,
            login_user_burst: 5,
            register_per_ip_per_minute: 5,
            register_ip_burst: 5,
            max_tracked: 100_000,
        }
    }
}

/// Names of the identity headers set by a trusted proxy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityHeaders {
    /// User id header.
    pub user: String,
    /// Device id header.
    pub device: String,
    /// Zone header.
    pub zone: String,
}

impl Default for IdentityHeaders {
    fn default() -> Self {
        Self {
            user: "X-Tether-User".to_owned(),
            device: "X-Tether-Device".to_owned(),
            zone: "X-Tether-Zone".to_owned(),
        }
    }
}

/// An API key limited to channel patterns.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopedApiKey {
    /// The secret key (at least 16 characters).
    pub key: String,
    /// Channel patterns it may publish to (`chat:*`, `news`).
    pub channels: Vec<tether_proto::ChannelPattern>,
}

/// A static token and the identity it grants.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenIdentity {
    /// The secret token (at least 16 characters).
    pub token: String,
    /// User id.
    pub user: Option<String>,
    /// Device id.
    pub device: Option<String>,
    /// Zone id.
    pub zone: Option<String>,
}

impl TokenIdentity {
    /// The identity this token grants.
    pub fn identity(&self) -> Identity {
        Identity { user: self.user.clone(), device: self.device.clone(), zone: self.zone.clone() }
    }
}

/// Options of one namespace (see [`NamespaceOptions`] for the meaning of each).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NamespaceConfig {
    /// Accept channels in this namespace at all (otherwise `unknown_namespace`).
    pub enabled: bool,
    /// Who may subscribe: `anyone`, `authenticated` or `granted` (JWT grants only).
    pub subscribe: SubscribeRule,
    /// Who may publish from a client: `nobody`, `subscribers`, `authenticated` or `anyone`.
    pub publish: ClientRule,
    /// Personal channels: `ns:<user>` only for that user.
    pub personal: bool,
    /// Who may read presence.
    pub presence: ClientRule,
    /// Who may read history over the protocol.
    pub history: ClientRule,
    /// Publications kept per channel (0 = no history, the default).
    pub history_size: usize,
    /// Age limit of kept publications in ms (0 = none).
    pub history_ttl_ms: u64,
    /// Most publications one recovery returns (0 = up to `history_size`).
    pub recovery_limit: usize,
    /// Keep track of who is subscribed (presence).
    pub track_presence: bool,
    /// Push join and leave events to subscribers.
    pub join_leave: bool,
    /// Most subscribers per channel (0 = unlimited).
    pub max_subscribers: usize,
    /// Largest publication `data` in bytes.
    pub max_message_bytes: usize,
}

impl Default for NamespaceConfig {
    fn default() -> Self {
        let d = NamespaceOptions::default();
        Self {
            enabled: true,
            subscribe: d.subscribe,
            publish: d.publish,
            personal: d.personal,
            presence: d.presence,
            history: d.history,
            history_size: d.history_size,
            history_ttl_ms: d.history_ttl_ms,
            recovery_limit: d.recovery_limit,
            track_presence: d.track_presence,
            join_leave: d.join_leave,
            max_subscribers: d.max_subscribers,
            max_message_bytes: d.max_message_bytes,
        }
    }
}

impl From<&NamespaceConfig> for NamespaceOptions {
    fn from(c: &NamespaceConfig) -> Self {
        Self {
            subscribe: c.subscribe,
            publish: c.publish,
            personal: c.personal,
            presence: c.presence,
            history: c.history,
            history_size: c.history_size,
            history_ttl_ms: c.history_ttl_ms,
            recovery_limit: c.recovery_limit,
            track_presence: c.track_presence,
            join_leave: c.join_leave,
            max_subscribers: c.max_subscribers,
            max_message_bytes: c.max_message_bytes,
        }
    }
}

/// The event-server dialect.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventServerConfig {
    /// Serve `POST /event` and `/events`.
    pub enabled: bool,
    /// Token file: one token per line, lines under 16 characters ignored, re-read when it
    /// changes. Without it every event-server request is `UNAUTHENTICATED`.
    pub tokens_file: Option<PathBuf>,
    /// Namespace that event types map into: event `x` is channel `<namespace>:x`.
    pub namespace: String,
}

impl Default for EventServerConfig {
    fn default() -> Self {
        Self { enabled: true, tokens_file: None, namespace: "events".to_owned() }
    }
}

/// Channel history and idempotent publishing, server-wide. How much history a channel keeps
/// is set per namespace (`history_size`, `history_ttl_ms`, `recovery_limit`). See
/// `docs/delivery.md`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Keep history in the embedded store too, so a clean restart keeps every channel's
    /// history and epoch (otherwise a restart starts new epochs).
    pub persist: bool,
    /// How long an `idempotency_key` is remembered per channel, in ms.
    pub idempotency_window_ms: u64,
    /// A channel without subscribers that nobody published to for this long forgets its
    /// history and epoch, in ms.
    pub idle_ttl_ms: u64,
    /// How often idle channels and expired idempotency keys are swept, in ms.
    pub sweep_interval_ms: u64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            persist: false,
            idempotency_window_ms: 300_000,
            idle_ttl_ms: 86_400_000,
            sweep_interval_ms: 10_000,
        }
    }
}

/// Presence, server-wide. See `docs/delivery.md`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PresenceConfig {
    /// A presence entry not refreshed for this long is removed (and its leave announced),
    /// in ms. Connections refresh theirs on every heartbeat (`websocket.ping_interval_ms`),
    /// so keep it above the ping interval plus the pong timeout.
    pub ttl_ms: u64,
    /// How often expired entries are looked for, in ms.
    pub sweep_interval_ms: u64,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self { ttl_ms: 60_000, sweep_interval_ms: 1_000 }
    }
}

/// Model sync: the schema, the scope templates, and the Jetstream session rules. See
/// `docs/dialects/jetstream.md`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    /// The schema file (TOML). Without one, `/jetstream` is not served.
    pub schema: Option<PathBuf>,
    /// Scope templates: which scope names exist and how they start. First match wins.
    pub scopes: Vec<ScopeTemplateConfig>,
    /// Procedures (downstream validation): changesets that name one are checked against
    /// its constraints and a remote HTTP call before anything applies.
    pub procedures: Vec<tether_engine::sync::ProcedureDef>,
    /// A session is forgotten after this long without a client message (the reference's
    /// 10 minutes); its socket, if any, is closed with 4097.
    pub session_expiry_s: u64,
    /// Time a new socket has to send `SessionCreate`, in milliseconds.
    pub establish_timeout_ms: u64,
    /// Keep-alive `Ping` period, in milliseconds.
    pub ping_interval_ms: u64,
    /// Most unacknowledged server messages a session may hold; beyond, it is dropped
    /// (4097) rather than grow without bound.
    pub max_unacked: usize,
    /// Most scopes one session may fetch.
    pub max_scopes_per_session: usize,
    /// Most live sessions (`SessionCreate` is refused beyond).
    pub max_sessions: usize,
    /// Commands queued per scope before fetches and changesets are refused as busy.
    pub scope_queue: usize,
    /// Changesets between stored snapshots of a scope (the log is replayed from the last
    /// snapshot on load).
    pub snapshot_every: u64,
    /// A scope without members leaves memory after this long, in milliseconds.
    pub idle_unload_ms: u64,
    /// Messages per second one Jetstream socket may send (0: unlimited). Above it the
    /// socket is closed with 4008; the client resumes and resends what was not
    /// acknowledged, so nothing is lost. Replaces `limits.inbound_rate` on `/jetstream`.
    pub inbound_rate: u32,
    /// Burst above `inbound_rate`.
    pub inbound_burst: u32,
    /// Broadcasts to members that were not answered in the same batch leave at most this
    /// often, in milliseconds (0: with every batch). Replies never wait for it. Under load
    /// a member then gets one larger frame per interval instead of one per batch, which
    /// saves a write and a wake-up per member per batch; when the scope is quiet, the
    /// first broadcast after a pause leaves at once.
    pub fanout_interval_ms: u64,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            schema: None,
            scopes: Vec::new(),
            procedures: Vec::new(),
            session_expiry_s: 600,
            establish_timeout_ms: 10_000,
            ping_interval_ms: 10_000,
            max_unacked: 10_000,
            max_scopes_per_session: 64,
            max_sessions: 100_000,
            scope_queue: 10_000,
            snapshot_every: 1_000,
            idle_unload_ms: 60_000,
            inbound_rate: 10_000,
            inbound_burst: 10_000,
            fanout_interval_ms: 10,
        }
    }
}

/// One scope template.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeTemplateConfig {
    /// The scope name, or a prefix followed by `*` (`room-*`).
    pub name: String,
    /// Model of the scope's root object.
    pub root: String,
    /// Initial property values of the root, as on the wire (a table).
    #[serde(default)]
    pub initial: serde_json::Map<String, serde_json::Value>,
    /// Who may fetch: `anyone`, `authenticated`, or `granted` (a JWT grant whose channel
    /// pattern matches the scope name).
    #[serde(default = "anyone")]
    pub fetch: SubscribeRule,
    /// Names of the scope params a fetch may carry (a scope is one per distinct params).
    #[serde(default)]
    pub params: Vec<String>,
}

fn anyone() -> SubscribeRule {
    SubscribeRule::Anyone
}

/// Graceful shutdown.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// How long to wait for connections to close after SIGTERM/SIGINT, in milliseconds.
    pub drain_timeout_ms: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self { drain_timeout_ms: 10_000 }
    }
}

/// Switches used by conformance tests only.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TestingConfig {
    /// Serve a WebSocket echo on `/` through the real connection loop (for Autobahn).
    pub echo_route: bool,
}

/// The log filter actually installed for `level`. At `trace`, the WebSocket library logs
/// every frame in full, which would put passwords and tokens sent over the socket into the
/// log; so its targets are capped at `debug` unless the filter names them explicitly (a
/// deliberate choice for debugging, never for production).
pub fn effective_log_filter(level: &str) -> String {
    let names = |target: &str| {
        level.split(',').any(|d| {
            let t = d.trim().split(['=', '[']).next().unwrap_or("");
            t == target || t.starts_with(&format!("{target}::"))
        })
    };
    let mut out = level.to_owned();
    for target in ["tungstenite", "tokio_tungstenite"] {
        if !names(target) {
            out.push_str(&format!(",{target}=debug"));
        }
    }
    out
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(before.len(), |i| before.len() - i - 1) + 1;
    (line, column)
}

impl Config {
    /// Parses TOML text; `path` is used in error messages.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let cfg: Self = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map_or((1, 1), |s| line_col(text, s.start));
            ConfigError::Parse { path: path.to_owned(), line, column, message: e.message().to_owned() }
        })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Reads and parses a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::from_toml(&text, path)
    }

    /// Checks cross-field rules.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid { path: path.to_owned(), message };
        for name in self.namespaces.keys() {
            validate_namespace(name).map_err(|e| invalid(format!("namespace '{name}': {e}")))?;
        }
        validate_namespace(&self.event_server.namespace)
            .map_err(|e| invalid(format!("event_server.namespace: {e}")))?;
        for k in &self.api_keys {
            if k.chars().count() < 16 {
                return Err(invalid("api_keys: every key must be at least 16 characters".to_owned()));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for t in &self.auth.tokens {
            if t.token.chars().count() < 16 {
                return Err(invalid("auth.tokens: every token must be at least 16 characters".to_owned()));
            }
            if !seen.insert(t.token.as_str()) {
                return Err(invalid("auth.tokens: the same token appears twice".to_owned()));
            }
            t.identity().validate().map_err(|m| invalid(format!("auth.tokens: {m}")))?;
        }
        for k in &self.scoped_api_keys {
            if k.key.chars().count() < 16 {
                return Err(invalid("scoped_api_keys: every key must be at least 16 characters".to_owned()));
            }
        }
        crate::auth::rules::Rules::new(&self.auth.accounts).map_err(invalid)?;
        let a2 = &self.auth.argon2;
        argon2::Params::new(a2.memory_kib, a2.iterations, a2.parallelism, None)
            .map_err(|e| invalid(format!("auth.argon2: {e}")))?;
        crate::auth::proxy::TrustedHeaders::new(&self.auth).map_err(invalid)?;
        if let Some(j) = &self.auth.jwt {
            crate::auth::jwt::JwtVerifier::from_config(j).map_err(|m| invalid(format!("auth.jwt: {m}")))?;
        }
        let a = &self.auth.accounts;
        if a.session_ttl_s == 0 || a.username_min == 0 || a.password_min == 0 {
            return Err(invalid(
                "auth.accounts: session_ttl_s, username_min and password_min must be above 0".to_owned(),
            ));
        }
        if a.username_min > a.username_max || a.password_min > a.password_max {
            return Err(invalid("auth.accounts: a minimum length is above its maximum".to_owned()));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(invalid(format!("log.level: '{}' is not a valid filter", self.log.level)));
        }
        let ws = &self.websocket;
        if ws.ping_interval_ms == 0
            || ws.pong_timeout_ms == 0
            || ws.connect_timeout_ms == 0
            || ws.write_timeout_ms == 0
        {
            return Err(invalid("websocket: intervals and timeouts must be above 0".to_owned()));
        }
        if ws.outbound_queue == 0 {
            return Err(invalid("websocket.outbound_queue must be above 0".to_owned()));
        }
        let h = &self.history;
        if h.idempotency_window_ms == 0 || h.idle_ttl_ms == 0 || h.sweep_interval_ms == 0 {
            return Err(invalid("history: every interval must be above 0".to_owned()));
        }
        if self.presence.ttl_ms == 0 || self.presence.sweep_interval_ms == 0 {
            return Err(invalid("presence: ttl_ms and sweep_interval_ms must be above 0".to_owned()));
        }
        crate::sync::load(&self.sync).map_err(|e| invalid(e.to_string()))?;
        let sy = &self.sync;
        if sy.session_expiry_s == 0
            || sy.establish_timeout_ms == 0
            || sy.ping_interval_ms == 0
            || sy.max_unacked == 0
            || sy.max_scopes_per_session == 0
            || sy.max_sessions == 0
            || sy.scope_queue == 0
            || sy.snapshot_every == 0
            || sy.idle_unload_ms == 0
        {
            return Err(invalid("sync: every limit and interval must be above 0".to_owned()));
        }
        if self.sse.heartbeat_ms == 0 {
            return Err(invalid("sse.heartbeat_ms must be above 0".to_owned()));
        }
        if self.limits.max_message_bytes < 128 || self.limits.max_frame_bytes < 128 {
            return Err(invalid(
                "limits: max_message_bytes and max_frame_bytes must be at least 128".to_owned(),
            ));
        }
        Ok(())
    }

    /// The namespace table the engine uses. The event-server namespace is added with
    /// anonymous subscribing off when it is not configured explicitly.
    pub fn namespaces(&self) -> Namespaces {
        let mut named: std::collections::HashMap<String, NamespaceOptions> = self
            .namespaces
            .iter()
            .filter(|(_, v)| v.enabled)
            .map(|(k, v)| (k.clone(), NamespaceOptions::from(v)))
            .collect();
        if self.event_server.enabled && !self.namespaces.contains_key(&self.event_server.namespace) {
            named.entry(self.event_server.namespace.clone()).or_insert(NamespaceOptions {
                subscribe: SubscribeRule::Authenticated,
                ..NamespaceOptions::default()
            });
        }
        let default = self.default_namespace.enabled.then(|| NamespaceOptions::from(&self.default_namespace));
        Namespaces { default, named }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_logging_of_the_websocket_library_is_capped() {
        let f = effective_log_filter("trace");
        assert_eq!(f, "trace,tungstenite=debug,tokio_tungstenite=debug");
        assert!(tracing_subscriber::EnvFilter::try_new(&f).is_ok());
        assert_eq!(
            effective_log_filter("info,tungstenite=trace"),
            "info,tungstenite=trace,tokio_tungstenite=debug"
        );
        // Regression: naming one target used to lift the cap of both.
        assert_eq!(
            effective_log_filter("trace,tokio_tungstenite=info"),
            "trace,tokio_tungstenite=info,tungstenite=debug"
        );
    }

    #[test]
    fn unknown_key_reports_line_and_key() {
        let text = "listen = \"127.0.0.1:1\"\n\n[limits]\nmax_conections = 5\n";
        let e = Config::from_toml(text, Path::new("t.toml")).unwrap_err().to_string();
        assert!(e.starts_with("t.toml:4:1: "), "{e}");
        assert!(e.contains("unknown field `max_conections`"), "{e}");
    }

    #[test]
    fn wrong_type_reports_line() {
        let e = Config::from_toml("[websocket]\nping_interval_ms = \"soon\"\n", Path::new("c"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("c:2:"), "{e}");
    }

    #[test]
    fn defaults_and_namespaces() {
        let c = Config::from_toml("[namespaces.chat]\npublish = \"anyone\"\n", Path::new("c")).unwrap();
        let ns = c.namespaces();
        assert_eq!(ns.named["chat"].publish, ClientRule::Anyone);
        assert_eq!(ns.named["events"].subscribe, SubscribeRule::Authenticated);
        assert!(ns.default.is_some());
        let c = Config::from_toml(
            "[default_namespace]\nenabled = false\n[namespaces.x]\nenabled = false\n",
            Path::new("c"),
        )
        .unwrap();
        let ns = c.namespaces();
        assert!(ns.default.is_none());
        assert!(!ns.named.contains_key("x"));
        let dup =
            "[[auth.tokens]]\ntoken = \"0123456789abcdef\"\n[[auth.tokens]]\ntoken = \"0123456789abcdef\"\n";
        assert!(Config::from_toml(dup, Path::new("c")).unwrap_err().to_string().contains("twice"));
        assert!(Config::from_toml("[log]\nlevel = \"=[\"\n", Path::new("c")).is_err());
        assert!(Config::from_toml("[websocket]\nwrite_timeout_ms = 0\n", Path::new("c")).is_err());
        let e = Config::from_toml("[namespaces.\"a.b\"]\n", Path::new("c")).unwrap_err().to_string();
        assert!(e.contains("namespace 'a.b'"), "{e}");
        assert!(Config::from_toml("api_keys = [\"short\"]", Path::new("c")).is_err());
        let e = Config::from_toml("[auth.argon2]\nmemory_kib = 1\n", Path::new("c")).unwrap_err().to_string();
        assert!(e.contains("auth.argon2"), "{e}");
    }
}
