//! Model sync: the runtime behind the Jetstream dialect (`/jetstream`).
//!
//! The engine (`tether_engine::sync`) holds the pure logic: schemas, scope state,
//! changeset application. This module gives it a life: scope templates from config, one
//! actor task per loaded scope (`scope.rs`), sessions that outlive sockets (`session.rs`),
//! and the store for durability. The dialect (`crate::dialects::jetstream`) decodes frames
//! and calls in here.

pub(crate) mod http;
pub(crate) mod scope;
pub(crate) mod session;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tether_engine::SubscribeRule;
use tether_engine::sync::{Procedure, Schema, SchemaDef, ScopeState};
use tether_proto::ChannelName;
use tether_proto::jetstream::{ServerMessage, Uuid, WireError};
use tether_store::Store;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Principal, PrincipalKind};
use crate::config::{ScopeTemplateConfig, SyncConfig};

use scope::{ScopeCmd, ScopeHandle, SendError};
use session::{FetchedScope, Session};

/// The `scopeIndex` of a `ScopeFetchReply` that carries an error. The reference sent none,
/// and its own JS client cannot parse a reply without one (it throws instead of reporting
/// the error). `u32::MAX` is a number every client can read and never a real index.
pub(crate) const NO_SCOPE_INDEX: u64 = u32::MAX as u64;

/// The HTTP client of procedures' remote calls (plain `http://`).
pub(crate) type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<bytes::Bytes>,
>;

/// A scope template: which scope names it serves and how their scopes start.
#[derive(Debug)]
pub struct ScopeTemplate {
    /// The configured name: exact, or a prefix when it ends with `*`.
    pub(crate) name: String,
    /// Root model.
    pub(crate) root: String,
    /// Initial property values of the root.
    pub(crate) initial: Vec<(String, serde_json::Value)>,
    /// Who may fetch.
    pub(crate) fetch: SubscribeRule,
    /// Scope params a fetch may carry.
    pub(crate) params: Vec<String>,
}

impl ScopeTemplate {
    fn matches(&self, name: &str) -> bool {
        match self.name.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => self.name == name,
        }
    }
}

/// Why a fetch is refused (the `error` of its `ScopeFetchReply`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FetchError {
    /// No template serves the name: the reference's `No such scope`.
    NoSuchScope,
    /// The client may not fetch it.
    Denied,
    /// A param the template does not declare, or a param value that is not a string or
    /// number.
    InvalidParams(String),
    /// The session holds the most scopes allowed.
    TooManyScopes,
    /// The scope's queue is full.
    Busy,
}

impl FetchError {
    /// The wire error.
    pub(crate) fn wire(&self) -> WireError {
        let (message, kind) = match self {
            Self::NoSuchScope => ("No such scope".to_owned(), None),
            Self::Denied => ("Scope fetch denied".to_owned(), Some("fetch-denied")),
            Self::InvalidParams(m) => (format!("Invalid scope params: {m}"), Some("invalid-params")),
            Self::TooManyScopes => {
                ("Too many scopes fetched in this session".to_owned(), Some("too-many-scopes"))
            }
            Self::Busy => ("Scope is overloaded; retry later".to_owned(), Some("scope-busy")),
        };
        WireError { message, kind: kind.map(str::to_owned) }
    }
}

/// Error building the sync runtime from config (at start-up).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SyncSetupError(String);

/// The sync runtime shared by every Jetstream connection.
#[derive(Debug)]
pub struct SyncShared {
    pub(crate) config: SyncConfig,
    pub(crate) schema: Arc<Schema>,
    templates: Vec<Arc<ScopeTemplate>>,
    /// Procedures by `Model.name`.
    pub(crate) procedures: HashMap<String, Arc<Procedure>>,
    /// Client for procedures' remote calls.
    pub(crate) http: HttpClient,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) tasks: TaskTracker,
    pub(crate) shutdown: CancellationToken,
    /// Loaded scopes by key.
    pub(crate) scopes: Mutex<HashMap<Arc<str>, ScopeHandle>>,
    /// Live sessions by token.
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    next_session: AtomicU64,
    changesets: AtomicU64,
}

impl SyncShared {
    /// Builds the runtime: reads and validates the schema file and the scope templates.
    /// `None` when no schema is configured (then `/jetstream` is not served).
    pub fn from_config(
        config: &SyncConfig,
        store: Arc<dyn Store>,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<Option<Self>, SyncSetupError> {
        let Some(Loaded { schema, templates, procedures }) = load(config)? else { return Ok(None) };
        Ok(Some(Self {
            config: config.clone(),
            schema,
            templates,
            procedures,
            http: hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http(),
            store,
            tasks,
            shutdown,
            scopes: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(1),
            changesets: AtomicU64::new(0),
        }))
    }

    /// Creates a session for a verified principal.
    pub(crate) fn create_session(&self, principal: Principal) -> Option<Arc<Session>> {
        let mut sessions = self.sessions.lock();
        if sessions.len() >= self.config.max_sessions {
            return None;
        }
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let token = crate::auth::token::random_secret();
        let session = Arc::new(Session::new(id, token.clone(), principal, self.config.max_unacked));
        sessions.insert(token, Arc::clone(&session));
        Some(session)
    }

    /// The live session with this resume token.
    pub(crate) fn session(&self, token: &str) -> Option<Arc<Session>> {
        self.sessions.lock().get(token).filter(|s| !s.is_expired()).cloned()
    }

    /// Ends a session: it leaves its scopes and its token is forgotten.
    pub(crate) fn end_session(&self, session: &Session) {
        self.sessions.lock().remove(&session.token);
        for fetched in session.expire() {
            let _ = fetched.handle.try_send(ScopeCmd::Leave { session_id: session.id });
            // A full or closed queue: the scope drops the member when a send to it fails.
        }
    }

    /// Expires sessions without a client message for `session_expiry_s` (called
    /// periodically), and forgets sessions already over.
    pub(crate) fn sweep(&self) {
        let expiry = Duration::from_secs(self.config.session_expiry_s);
        let now = tokio::time::Instant::now();
        let stale: Vec<Arc<Session>> = self
            .sessions
            .lock()
            .values()
            .filter(|s| s.is_expired() || now.duration_since(s.last_active()) >= expiry)
            .cloned()
            .collect();
        for s in stale {
            tracing::debug!(session = s.id, "jetstream session expired");
            self.end_session(&s);
        }
    }

    /// Handles a `ScopeFetch`: finds the template, checks the client may fetch, and queues
    /// the fetch on the scope's actor (which replies).
    pub(crate) fn fetch(
        self: &Arc<Self>,
        session: &Arc<Session>,
        reply_to: u64,
        name: &str,
        params: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), FetchError> {
        let template = self.templates.iter().find(|t| t.matches(name)).ok_or(FetchError::NoSuchScope)?;
        if !may_fetch(template.fetch, &session.principal, name) {
            return Err(FetchError::Denied);
        }
        let key = scope_key(name, params, &template.params)?;
        let handle = self.handle(&key, template);
        let scope_index = session
            .add_scope(FetchedScope { handle: handle.clone() }, self.config.max_scopes_per_session)
            .ok_or(FetchError::TooManyScopes)?;
        let cmd = ScopeCmd::Fetch { session: Arc::clone(session), scope_index, reply_to };
        if self.dispatch_to(handle, &key, cmd).is_err() {
            return Err(FetchError::Busy);
        }
        Ok(())
    }

    /// Queues a command that comes from no session (the HTTP API) on the scope `name` with
    /// `params`, loading the scope if needed (it must be served by a template).
    pub(crate) fn command(
        self: &Arc<Self>,
        name: &str,
        params: &serde_json::Map<String, serde_json::Value>,
        cmd: ScopeCmd,
    ) -> Result<(), FetchError> {
        let template = self.templates.iter().find(|t| t.matches(name)).ok_or(FetchError::NoSuchScope)?;
        let key = scope_key(name, params, &template.params)?;
        let handle = self.handle(&key, template);
        self.dispatch_to(handle, &key, cmd).map_err(|_| FetchError::Busy)
    }

    /// Queues a command on the scope `key` (loading it if it is not in memory). Used for
    /// commands that must not be lost when a scope unloads under them.
    pub(crate) fn dispatch(self: &Arc<Self>, key: &str, cmd: ScopeCmd) {
        let Some(template) = self.templates.iter().find(|t| t.matches(scope_name(key))) else { return };
        let handle = self.handle(key, template);
        if let Err(cmd) = self.dispatch_to(handle, key, cmd) {
            tracing::warn!(scope = key, ?cmd, "scope queue full; command dropped");
        }
    }

    /// Sends `cmd` to `handle`, or to the scope's next actor if that one is gone. `Err` if
    /// the queue is full.
    pub(crate) fn dispatch_to(
        self: &Arc<Self>,
        mut handle: ScopeHandle,
        key: &str,
        mut cmd: ScopeCmd,
    ) -> Result<(), ScopeCmd> {
        loop {
            match handle.try_send(cmd) {
                Ok(()) => return Ok(()),
                Err(SendError::Full(c)) => return Err(c),
                Err(SendError::Closed(c)) => {
                    cmd = c;
                    let Some(template) = self.templates.iter().find(|t| t.matches(scope_name(key))) else {
                        return Err(cmd);
                    };
                    handle = self.handle(key, template);
                }
            }
        }
    }

    /// The actor of scope `key`, started if needed.
    fn handle(self: &Arc<Self>, key: &str, template: &Arc<ScopeTemplate>) -> ScopeHandle {
        let mut scopes = self.scopes.lock();
        if let Some(h) = scopes.get(key)
            && !h.is_closed()
        {
            return h.clone();
        }
        let key: Arc<str> = Arc::from(key);
        let h = scope::spawn(Arc::clone(self), Arc::clone(&key), Arc::clone(template));
        scopes.insert(key, h.clone());
        h
    }

    /// Counts applied changesets (metrics).
    pub(crate) fn metrics_changesets(&self, n: u64) {
        self.changesets.fetch_add(n, Ordering::Relaxed);
    }

    /// Applied changesets since start.
    pub fn changesets_applied(&self) -> u64 {
        self.changesets.load(Ordering::Relaxed)
    }

    /// Appends the model-sync metrics (Prometheus text format).
    pub(crate) fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let scopes = self.scopes.lock().values().filter(|h| !h.is_closed()).count();
        let sessions = self.sessions.lock().len();
        let _ = writeln!(
            out,
            "# HELP tether_sync_scopes_loaded Scopes in memory.\n# TYPE tether_sync_scopes_loaded gauge\n\
             tether_sync_scopes_loaded {scopes}\n\
             # HELP tether_sync_sessions Live Jetstream sessions (with or without a socket).\n\
             # TYPE tether_sync_sessions gauge\ntether_sync_sessions {sessions}\n\
             # HELP tether_sync_changesets_total Changesets applied and stored.\n\
             # TYPE tether_sync_changesets_total counter\ntether_sync_changesets_total {}",
            self.changesets_applied()
        );
    }
}

/// A checked schema, its scope templates and its procedures.
#[derive(Debug)]
pub struct Loaded {
    schema: Arc<Schema>,
    templates: Vec<Arc<ScopeTemplate>>,
    procedures: HashMap<String, Arc<Procedure>>,
}

/// Reads and checks the schema file and the scope templates (`None` without a schema).
/// Used at start-up and by `Config::validate` (so `tether check-config` reports them too).
pub fn load(config: &SyncConfig) -> Result<Option<Loaded>, SyncSetupError> {
    let Some(path) = &config.schema else {
        if !config.scopes.is_empty() {
            return Err(SyncSetupError("sync.scopes needs sync.schema".to_owned()));
        }
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| SyncSetupError(format!("sync.schema: cannot read {}: {e}", path.display())))?;
    let def: SchemaDef =
        toml::from_str(&text).map_err(|e| SyncSetupError(format!("sync.schema {}: {e}", path.display())))?;
    let schema = Arc::new(
        Schema::from_def(def).map_err(|e| SyncSetupError(format!("sync.schema {}: {e}", path.display())))?,
    );
    let mut templates = Vec::with_capacity(config.scopes.len());
    for t in &config.scopes {
        templates.push(Arc::new(template(t, &schema)?));
    }
    let mut procedures = HashMap::new();
    for def in &config.procedures {
        let name = def.name.clone();
        let p = Procedure::new(def.clone(), &schema)
            .map_err(|e| SyncSetupError(format!("sync.procedures: {e}")))?;
        if procedures.insert(name.clone(), Arc::new(p)).is_some() {
            return Err(SyncSetupError(format!("sync.procedures: '{name}' is defined twice")));
        }
    }
    Ok(Some(Loaded { schema, templates, procedures }))
}

/// Most bytes of a procedure's response read.
const MAX_REMOTE_RESPONSE: usize = 1024 * 1024;

/// Makes a procedure's remote call: the status and (at most 1 MiB of) the body. Failures are
/// logged here with their details; the client only learns that the call failed.
pub(crate) async fn remote_call(
    client: &HttpClient,
    request: tether_engine::sync::RemoteRequest,
) -> Result<(u16, Vec<u8>), tether_engine::sync::ProcedureError> {
    use http_body_util::BodyExt;
    use tether_engine::sync::ProcedureError;
    let mut builder = hyper::Request::builder().method(request.method.as_str()).uri(&request.url);
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let body = request.body.as_ref().map(serde_json::Value::to_string).unwrap_or_default();
    let req = builder.body(http_body_util::Full::new(bytes::Bytes::from(body))).map_err(|e| {
        tracing::warn!(url = %request.url, error = %e, "procedure call: invalid request");
        ProcedureError::RemoteFailed
    })?;
    let call = async {
        let resp = client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = http_body_util::Limited::new(resp.into_body(), MAX_REMOTE_RESPONSE)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok::<_, String>((status, body.to_vec()))
    };
    match tokio::time::timeout(request.timeout, call).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => {
            tracing::warn!(url = %request.url, error = %e, "procedure call failed");
            Err(ProcedureError::RemoteFailed)
        }
        Err(_) => Err(ProcedureError::Timeout),
    }
}

/// The name and params of a scope key (see [`scope_key`]).
pub(crate) fn split_key(key: &str) -> (String, serde_json::Map<String, serde_json::Value>) {
    match key.split_once('\u{0}') {
        Some((name, json)) => (name.to_owned(), serde_json::from_str(json).unwrap_or_default()),
        None => (key.to_owned(), serde_json::Map::new()),
    }
}

/// The reference's error for a refused `ScopeSync`: `Could not apply SyncMessage: <reason>`,
/// type `could-not-apply-sync-message`.
pub(crate) fn could_not_apply(reason: impl std::fmt::Display) -> WireError {
    WireError {
        message: format!("Could not apply SyncMessage: {reason}"),
        kind: Some("could-not-apply-sync-message".to_owned()),
    }
}

/// A random (version 4) UUID for a new scope's root.
pub(crate) fn random_uuid() -> [u8; 16] {
    let mut b = [0u8; 16];
    // The OS RNG failing is unrecoverable for a server that issues credentials.
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut b).expect("the OS random number generator is unavailable");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    b
}

/// The scope name part of a key (see [`scope_key`]).
fn scope_name(key: &str) -> &str {
    key.split_once('\u{0}').map_or(key, |(name, _)| name)
}

/// The key of a scope: its name alone, or its name, a NUL and its params as canonical JSON
/// (keys sorted) when it has params. A name containing NUL is refused, so keys never
/// collide.
fn scope_key(
    name: &str,
    params: &serde_json::Map<String, serde_json::Value>,
    allowed: &[String],
) -> Result<String, FetchError> {
    if name.contains('\u{0}') || name.is_empty() || name.len() > 256 {
        return Err(FetchError::NoSuchScope);
    }
    if params.is_empty() {
        return Ok(name.to_owned());
    }
    let mut sorted: Vec<(&String, &serde_json::Value)> = params.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    for (k, v) in &sorted {
        if !allowed.iter().any(|a| a == *k) {
            return Err(FetchError::InvalidParams(format!("'{k}' is not a param of this scope")));
        }
        if !(v.is_string() || v.is_number() || v.is_boolean()) {
            return Err(FetchError::InvalidParams(format!("'{k}' must be a string, number or boolean")));
        }
    }
    let canonical: serde_json::Map<String, serde_json::Value> =
        sorted.into_iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let json = serde_json::Value::Object(canonical).to_string();
    if json.len() > 1024 {
        return Err(FetchError::InvalidParams("params are longer than 1024 bytes".to_owned()));
    }
    Ok(format!("{name}\u{0}{json}"))
}

/// Whether `principal` may fetch scope `name` under `rule`. `granted` means a JWT grant
/// whose channel pattern matches the scope name (when the name is a valid channel name).
fn may_fetch(rule: SubscribeRule, principal: &Principal, name: &str) -> bool {
    match rule {
        SubscribeRule::Anyone => true,
        SubscribeRule::Authenticated => !matches!(principal.kind, PrincipalKind::Anonymous),
        SubscribeRule::Granted => {
            ChannelName::parse(name).map(|c| principal.grants.iter().any(|g| g.matches(&c))).unwrap_or(false)
        }
    }
}

/// Checks a template against the schema.
fn template(t: &ScopeTemplateConfig, schema: &Arc<Schema>) -> Result<ScopeTemplate, SyncSetupError> {
    let err = |m: String| SyncSetupError(format!("sync.scopes '{}': {m}", t.name));
    if t.name.is_empty() || t.name.contains('\u{0}') || t.name[..t.name.len() - 1].contains('*') {
        return Err(err("a name is not empty and has at most one '*', at the end".to_owned()));
    }
    if !schema.has_model(&t.root) {
        return Err(err(format!("root model '{}' is not in the schema", t.root)));
    }
    let initial: Vec<(String, serde_json::Value)> =
        t.initial.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    // Build a throw-away scope: bad initial values fail at start-up, not at first fetch.
    ScopeState::new(Arc::clone(schema), &t.root, Uuid::from_bytes([0; 16]), &initial)
        .map_err(|e| err(format!("initial values: {}", e.message)))?;
    Ok(ScopeTemplate {
        name: t.name.clone(),
        root: t.root.clone(),
        initial,
        fetch: t.fetch,
        params: t.params.clone(),
    })
}

/// Encodes the keep-alive `Ping` of a session.
pub(crate) fn keepalive_ping(session: &Session) -> String {
    let mut buf = Vec::with_capacity(64);
    buf.push(b'[');
    ServerMessage::Ping { index: 0, ack: session.last_client_index(), resend_missing: false }
        .encode(&mut buf);
    buf.push(b']');
    String::from_utf8(buf).unwrap_or_default()
}
