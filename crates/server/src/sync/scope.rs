//! The scope actor: one task per loaded scope, the only owner of its state.
//!
//! Every command for a scope goes through its actor's queue, so changesets are applied one
//! at a time in one total order. The actor works in batches: it takes every command queued
//! (up to [`MAX_BATCH`]), applies them in order, writes the changesets that changed
//! something to the store in one transaction, and only after that commit is durable sends
//! the replies and broadcasts (group commit: one fsync for the whole batch). A scope with
//! no members for `sync.idle_unload_ms` saves a snapshot and leaves memory; the next fetch
//! loads it again.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tether_engine::sync::{FragmentError, ScopeState};
use tether_proto::jetstream::{self, ServerMessage, SyncFragment, Uuid, WireError};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::session::Session;
use super::{ScopeTemplate, SyncShared};

/// Most commands applied per batch (and so per store transaction).
const MAX_BATCH: usize = 1024;

/// A command for a scope's actor.
#[derive(Debug)]
pub(crate) enum ScopeCmd {
    /// A session fetched the scope at its `scope_index`: reply, send the state, add it as
    /// a member.
    Fetch {
        /// The session.
        session: Arc<Session>,
        /// Its `scopeIndex` for this scope.
        scope_index: u64,
        /// Index of the `ScopeFetch`.
        reply_to: u64,
    },
    /// A changeset from a member.
    Sync {
        /// The sender.
        session: Arc<Session>,
        /// Its `scopeIndex` for this scope.
        scope_index: u64,
        /// Index of the `ScopeSync`.
        reply_to: u64,
        /// The fragments.
        fragments: Vec<SyncFragment>,
        /// All or nothing.
        atomic: bool,
        /// `procedure`, if named.
        procedure: Option<String>,
    },
    /// A server-side write (`POST /api/scopes/{name}/update`): planned, applied atomically,
    /// stored, then broadcast to every member.
    Update {
        /// Which object (`null`/`{}`: the root).
        query: serde_json::Value,
        /// `$set`, `$push`, `$pull`, `$addToSet`.
        update: serde_json::Value,
        /// The outcome, once durable.
        reply: oneshot::Sender<Result<UpdateDone, UpdateFailure>>,
    },
    /// A read of the whole scope as a JSON tree (`GET /api/scopes/{name}`).
    Read {
        /// `(root UUID, tree)`, after the commands queued before it are durable.
        reply: oneshot::Sender<(Uuid, serde_json::Value)>,
    },
    /// A session is over: it is no longer a member.
    Leave {
        /// The session's id.
        session_id: u64,
    },
}

/// A server-side write that applied.
#[derive(Debug)]
pub(crate) struct UpdateDone {
    /// The fragments applied, encoded as broadcast (a JSON array; `[]` when nothing
    /// changed).
    pub(crate) applied_json: Arc<[u8]>,
}

/// Why a server-side write did not apply (nothing changed).
#[derive(Debug)]
pub(crate) enum UpdateFailure {
    /// The query or update is malformed or names something that does not exist.
    Invalid(String),
    /// The scope's validation refused a fragment: the messages of the refused fragments.
    Rejected(Vec<String>),
    /// The store refused the write.
    NotStored,
}

/// A scope's queue.
#[derive(Debug, Clone)]
pub(crate) struct ScopeHandle {
    /// The scope's key (name, plus its params when it has any).
    pub(crate) key: Arc<str>,
    tx: mpsc::Sender<ScopeCmd>,
}

/// Why a command could not be queued.
#[derive(Debug)]
pub(crate) enum SendError {
    /// The actor is gone (it unloaded): look the scope up again.
    Closed(ScopeCmd),
    /// The queue is full.
    Full(ScopeCmd),
}

impl ScopeHandle {
    /// Queues a command without waiting.
    pub(crate) fn try_send(&self, cmd: ScopeCmd) -> Result<(), SendError> {
        self.tx.try_send(cmd).map_err(|e| match e {
            mpsc::error::TrySendError::Closed(c) => SendError::Closed(c),
            mpsc::error::TrySendError::Full(c) => SendError::Full(c),
        })
    }

    /// True if this handle and `other` lead to the same actor.
    pub(crate) fn same(&self, other: &ScopeHandle) -> bool {
        self.tx.same_channel(&other.tx)
    }

    /// True if the actor is gone.
    pub(crate) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// A member: a session that fetched the scope, at its `scopeIndex`.
#[derive(Debug)]
struct Member {
    session: Arc<Session>,
    scope_index: u64,
    /// While a batch is delivered: the session has an outcome of its own in it (a reply
    /// or a fetch), so it is served in the first pass (see [`Actor::deliver_batch`]).
    sender: bool,
    /// Number of the last broadcast this member has been given (or that was its own, or
    /// older than its snapshot): it is owed the pending ones after it.
    seen: u64,
}

/// A broadcast not yet sent to every member (see [`Actor::fan_out`]).
#[derive(Debug)]
struct Pending {
    /// Its number, in the scope's order.
    seq: u64,
    /// The applied fragments.
    json: Arc<[u8]>,
    /// The session that sent them (never echoed to it).
    except: Option<u64>,
}

/// Starts the actor of scope `key` (it loads or creates the scope first).
pub(crate) fn spawn(shared: Arc<SyncShared>, key: Arc<str>, template: Arc<ScopeTemplate>) -> ScopeHandle {
    let (tx, rx) = mpsc::channel(shared.config.scope_queue);
    let handle = ScopeHandle { key: Arc::clone(&key), tx };
    let me = handle.clone();
    let tasks = shared.tasks.clone();
    tasks.spawn(async move {
        Actor::run(shared, key, template, rx, me).await;
    });
    handle
}

/// The loaded state of a scope.
struct Loaded {
    state: ScopeState,
    /// Seq of the last changeset applied (and durable).
    seq: u64,
    /// Seq the stored snapshot was taken at.
    snapshot_seq: u64,
}

/// The result of one command of a batch, sent once the batch is durable.
enum Outcome {
    Fetched {
        session: Arc<Session>,
        scope_index: u64,
        reply_to: u64,
        state_json: Arc<[u8]>,
        root: Uuid,
    },
    Synced {
        session: Arc<Session>,
        reply_to: u64,
        replies: Vec<Option<WireError>>,
        applied_json: Option<Arc<[u8]>>,
    },
    Updated {
        reply: oneshot::Sender<Result<UpdateDone, UpdateFailure>>,
        result: Result<(Vec<SyncFragment>, Arc<[u8]>), UpdateFailure>,
    },
    Read {
        reply: oneshot::Sender<(Uuid, serde_json::Value)>,
        root: Uuid,
        tree: serde_json::Value,
    },
    /// Fragments applied by a procedure's `_updates`: sent to every member.
    Broadcast {
        json: Arc<[u8]>,
    },
}

impl Outcome {
    /// A changeset of `count` fragments refused as a whole with `error`.
    fn refused(session: Arc<Session>, reply_to: u64, count: usize, error: WireError) -> Self {
        Self::Synced { session, reply_to, replies: vec![Some(error); count], applied_json: None }
    }

    /// The session the outcome answers, if it came from one.
    fn session(&self) -> Option<&Arc<Session>> {
        match self {
            Self::Fetched { session, .. } | Self::Synced { session, .. } => Some(session),
            Self::Updated { .. } | Self::Read { .. } | Self::Broadcast { .. } => None,
        }
    }
}

struct Actor {
    shared: Arc<SyncShared>,
    key: Arc<str>,
    /// The scope's name and params (for procedures' `$scope` expressions).
    name: String,
    params: serde_json::Map<String, serde_json::Value>,
    loaded: Loaded,
    members: Vec<Member>,
    /// Broadcasts some members have not been given yet, oldest first.
    pending: VecDeque<Pending>,
    /// Number of the last broadcast.
    broadcast_seq: u64,
    /// When the members without a reply in their batch were last sent their broadcasts.
    last_fan_out: Instant,
    /// `sync.fanout_interval_ms`.
    fan_out_interval: Duration,
}

impl Actor {
    async fn run(
        shared: Arc<SyncShared>,
        key: Arc<str>,
        template: Arc<ScopeTemplate>,
        mut rx: mpsc::Receiver<ScopeCmd>,
        me: ScopeHandle,
    ) {
        let loaded = match load(&shared, &key, &template).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(scope = %key, error = %e, "cannot load scope");
                fail_all(&shared, &me, &mut rx, "Scope could not be loaded").await;
                return;
            }
        };
        let (name, params) = super::split_key(&key);
        let fan_out_interval = Duration::from_millis(shared.config.fanout_interval_ms);
        let mut actor = Actor {
            shared,
            key,
            name,
            params,
            loaded,
            members: Vec::new(),
            pending: VecDeque::new(),
            broadcast_seq: 0,
            last_fan_out: Instant::now(),
            fan_out_interval,
        };
        let idle = Duration::from_millis(actor.shared.config.idle_unload_ms);
        let shutdown = actor.shared.shutdown.clone();
        let mut batch = Vec::with_capacity(64);
        loop {
            let wait = async {
                if actor.members.is_empty() {
                    tokio::time::timeout(idle, rx.recv()).await
                } else {
                    Ok(rx.recv().await)
                }
            };
            let fan_out_at = (!actor.pending.is_empty()).then(|| actor.last_fan_out + actor.fan_out_interval);
            let first = tokio::select! {
                () = async { tokio::time::sleep_until(fan_out_at.unwrap_or_else(Instant::now)).await },
                    if fan_out_at.is_some() => {
                    actor.fan_out();
                    continue;
                }
                r = wait => match r {
                    Ok(Some(cmd)) => cmd,
                    Ok(None) => break,
                    Err(_) => {
                        if actor.unload(&me, &mut rx).await {
                            return;
                        }
                        continue;
                    }
                },
                () = shutdown.cancelled() => break,
            };
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(cmd) => batch.push(cmd),
                    Err(_) => break,
                }
            }
            actor.run_batch(&mut batch).await;
        }
        // Shutting down: what applied reaches everyone; the latest snapshot is kept, so the
        // next start replays no log.
        actor.fan_out();
        actor.save_snapshot().await;
    }

    /// Applies a batch, makes it durable, then answers.
    async fn run_batch(&mut self, batch: &mut Vec<ScopeCmd>) {
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut log: Vec<(u64, Vec<u8>)> = Vec::new();
        let before_seq = self.loaded.seq;
        for cmd in batch.drain(..) {
            match cmd {
                ScopeCmd::Fetch { session, scope_index, reply_to } => {
                    outcomes.push(self.fetched(session, scope_index, reply_to));
                }
                ScopeCmd::Sync { session, scope_index, reply_to, fragments, atomic, procedure } => {
                    if !self
                        .members
                        .iter()
                        .any(|m| m.session.id == session.id && m.scope_index == scope_index)
                    {
                        outcomes.push(Outcome::refused(
                            session,
                            reply_to,
                            fragments.len(),
                            scope_not_found(scope_index),
                        ));
                        continue;
                    }
                    let mut follow_up = Vec::new();
                    if let Some(p) = procedure {
                        let outcome = match self.shared.procedures.get(&p).cloned() {
                            Some(procedure) => self.run_procedure(&procedure, &fragments).await,
                            None => Err(self.no_such_procedure(&p)),
                        };
                        match outcome {
                            Ok(updates) => follow_up = updates,
                            Err(reason) => {
                                // The whole message is refused before anything changes.
                                let e = super::could_not_apply(reason);
                                outcomes.push(Outcome::refused(session, reply_to, fragments.len(), e));
                                continue;
                            }
                        }
                    }
                    let applied = self.loaded.state.apply(&fragments, atomic);
                    let replies = applied.replies.into_iter().map(|r| r.err().map(wire_error)).collect();
                    let applied_json = if applied.applied.is_empty() {
                        None
                    } else {
                        let mut json = Vec::with_capacity(256);
                        jetstream::encode_fragments(&applied.applied, &mut json);
                        self.loaded.seq += 1;
                        log.push((self.loaded.seq, json.clone()));
                        Some(Arc::<[u8]>::from(json))
                    };
                    outcomes.push(Outcome::Synced { session, reply_to, replies, applied_json });
                    // The remote's `_updates`, applied afterwards and sent to everyone.
                    for u in follow_up {
                        match self.plan_and_apply(&u.query, &u.update, &mut log) {
                            Ok((applied, json)) if !applied.is_empty() => {
                                outcomes.push(Outcome::Broadcast { json })
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(scope = %self.key, procedure_update = ?e, "a procedure's update did not apply")
                            }
                        }
                    }
                }
                ScopeCmd::Update { query, update, reply } => {
                    let result = self.plan_and_apply(&query, &update, &mut log);
                    outcomes.push(Outcome::Updated { reply, result });
                }
                ScopeCmd::Read { reply } => outcomes.push(Outcome::Read {
                    reply,
                    root: self.loaded.state.root(),
                    tree: self.loaded.state.to_json_tree(),
                }),
                ScopeCmd::Leave { session_id } => self.members.retain(|m| m.session.id != session_id),
            }
        }
        if !log.is_empty() {
            if let Err(e) = self.shared.store.append_changesets(&self.key, log).await {
                tracing::error!(scope = %self.key, error = %e, "cannot persist changesets; reloading the scope");
                self.recover(outcomes).await;
                return;
            }
            self.shared.metrics_changesets(self.loaded.seq - before_seq);
        }
        self.deliver_batch(outcomes);
        if self.loaded.seq - self.loaded.snapshot_seq >= self.shared.config.snapshot_every {
            self.save_snapshot().await;
        }
    }

    /// The reference's error for a `procedure` no procedure is configured for.
    fn no_such_procedure(&self, p: &str) -> String {
        let (model, name) = p.split_once('.').unwrap_or((p, ""));
        if self.loaded.state.schema().has_model(model) {
            format!("No such procedure '{name}' for model '{model}'")
        } else {
            format!("No such model '{model}' for procedure call with procedure '{p}'")
        }
    }

    /// Checks a changeset against a procedure: its constraints, then its remote call. The
    /// scope waits meanwhile (as in the reference, which held the scope's write lock), so
    /// the call sees the state the changeset will apply to. `Ok` carries the updates the
    /// remote asked for; `Err` the reason the whole message is refused.
    async fn run_procedure(
        &self,
        procedure: &tether_engine::sync::Procedure,
        fragments: &[SyncFragment],
    ) -> Result<Vec<tether_engine::sync::ProcedureUpdate>, String> {
        let state = &self.loaded.state;
        procedure.check_constraints(state, fragments).map_err(|e| e.to_string())?;
        let Some(request) =
            procedure.bind(state, &self.name, &self.params, fragments).map_err(|e| e.to_string())?
        else {
            return Ok(Vec::new());
        };
        let (status, body) =
            super::remote_call(&self.shared.http, request).await.map_err(|e| e.to_string())?;
        procedure.read_response(status, &body).map_err(|e| e.to_string())
    }

    /// Plans a server-side write and applies it atomically; logs it if it changed anything.
    fn plan_and_apply(
        &mut self,
        query: &serde_json::Value,
        update: &serde_json::Value,
        log: &mut Vec<(u64, Vec<u8>)>,
    ) -> Result<(Vec<SyncFragment>, Arc<[u8]>), UpdateFailure> {
        let fragments = tether_engine::sync::plan_update(&self.loaded.state, query, update, &mut || {
            Uuid::from_bytes(super::random_uuid())
        })
        .map_err(|e| UpdateFailure::Invalid(e.to_string()))?;
        // Atomic: a refused fragment leaves the scope as it was.
        let applied = self.loaded.state.apply(&fragments, true);
        let refused: Vec<String> = applied
            .replies
            .iter()
            .filter_map(|r| r.as_ref().err())
            .filter(|e| e.kind != Some("atomic-changeset-rejected"))
            .map(|e| e.message.clone())
            .collect();
        if !refused.is_empty() {
            return Err(UpdateFailure::Rejected(refused));
        }
        if applied.applied.is_empty() {
            return Ok((Vec::new(), Arc::from(&b"[]"[..])));
        }
        let mut json = Vec::with_capacity(256);
        jetstream::encode_fragments(&applied.applied, &mut json);
        self.loaded.seq += 1;
        log.push((self.loaded.seq, json.clone()));
        Ok((applied.applied, Arc::from(json)))
    }

    /// The reply to a fetch: the scope's state now (sent once the batch is durable).
    fn fetched(&self, session: Arc<Session>, scope_index: u64, reply_to: u64) -> Outcome {
        Outcome::Fetched {
            session,
            scope_index,
            reply_to,
            state_json: snapshot_json(&self.loaded.state).into(),
            root: self.loaded.state.root(),
        }
    }

    /// Sends a durable batch's outcomes. Every message for a session is queued first and
    /// leaves in one frame per session. Two passes, so that replies do not wait for the
    /// fan-out: first everything for the sessions that have an outcome of their own in the
    /// batch (replies, fetches), with every broadcast they are owed, flushed; then the
    /// broadcasts to every other member ([`Self::fan_out`]), at once or, when the last
    /// fan-out was less than `sync.fanout_interval_ms` ago, at that time, together with
    /// the next batches' (fewer, larger frames under load). Each member gets broadcasts
    /// in the scope's order, never twice: `seen` says where it is.
    fn deliver_batch(&mut self, outcomes: Vec<Outcome>) {
        let mut ids = HashSet::with_capacity(outcomes.len());
        let mut senders: Vec<Arc<Session>> = Vec::with_capacity(outcomes.len());
        for s in outcomes.iter().filter_map(Outcome::session) {
            if ids.insert(s.id) {
                senders.push(Arc::clone(s));
            }
        }
        let pending = &self.pending;
        self.members.retain_mut(|m| {
            m.sender = ids.contains(&m.session.id);
            // A member served now first gets what earlier fan-outs still owe it.
            !m.sender || catch_up(m, pending.iter())
        });
        for outcome in outcomes {
            self.deliver(outcome);
        }
        for session in &senders {
            session.flush();
        }
        if self.pending.is_empty() {
            return;
        }
        if self.last_fan_out.elapsed() >= self.fan_out_interval {
            self.fan_out();
        }
    }

    /// Sends every member the pending broadcasts it has not been given, each member under
    /// one lock of its session and in one frame.
    fn fan_out(&mut self) {
        let pending = &self.pending;
        self.members.retain_mut(|m| catch_up(m, pending.iter()));
        self.pending.clear();
        self.last_fan_out = Instant::now();
    }

    /// Queues applied fragments as a `ScopeSync` for every member served in the first
    /// pass of [`Self::deliver_batch`] but the session `except`, and keeps them for the
    /// others; a member whose session is over is dropped.
    fn broadcast(&mut self, json: Arc<[u8]>, except: Option<u64>) {
        self.broadcast_seq += 1;
        let seq = self.broadcast_seq;
        self.members.retain_mut(|m| {
            if !m.sender {
                return true;
            }
            m.seen = seq;
            Some(m.session.id) == except
                || m.session.queue(|index, buf| {
                    ServerMessage::ScopeSync { index, scope_index: m.scope_index, fragments_json: &json }
                        .encode(buf);
                })
        });
        if self.members.iter().any(|m| !m.sender) {
            self.pending.push_back(Pending { seq, json, except });
        }
    }

    /// Queues one outcome's messages for the first pass of [`Self::deliver_batch`]: to its
    /// own session, and its broadcast (see [`Self::broadcast`]).
    fn deliver(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Fetched { session, scope_index, reply_to, state_json, root } => {
                let ok = session.queue(|index, buf| {
                    ServerMessage::ScopeFetchReply {
                        index,
                        reply_to,
                        scope_index: Some(scope_index),
                        error: None,
                    }
                    .encode(buf);
                }) && session.queue(|index, buf| {
                    ServerMessage::ScopeState {
                        index,
                        scope_index,
                        root_uuid: root,
                        fragments_json: &state_json,
                    }
                    .encode(buf);
                });
                let known =
                    self.members.iter().any(|m| m.session.id == session.id && m.scope_index == scope_index);
                if ok && !known {
                    // It gets what applies after its snapshot, from here on.
                    let seen = self.broadcast_seq;
                    self.members.push(Member { session, scope_index, sender: true, seen });
                }
            }
            Outcome::Updated { reply, result } => {
                if let Ok((applied, json)) = &result
                    && !applied.is_empty()
                {
                    // A server-side write reaches every member.
                    self.broadcast(Arc::clone(json), None);
                }
                let _ = reply.send(result.map(|(_, applied_json)| UpdateDone { applied_json }));
            }
            Outcome::Read { reply, root, tree } => {
                let _ = reply.send((root, tree));
            }
            Outcome::Broadcast { json } => self.broadcast(json, None),
            Outcome::Synced { session, reply_to, replies, applied_json } => {
                session.queue(|index, buf| {
                    ServerMessage::ScopeSyncReply { index, reply_to, fragment_replies: &replies }.encode(buf);
                });
                // The sender is not echoed; every other member gets exactly what applied.
                if let Some(json) = applied_json {
                    self.broadcast(json, Some(session.id));
                }
            }
        }
    }

    /// The store refused a batch: nothing of it is acknowledged. Its changesets are
    /// refused, and the state goes back to what is durable.
    async fn recover(&mut self, outcomes: Vec<Outcome>) {
        let refused = super::could_not_apply("the change could not be stored");
        let mut fetches = Vec::new();
        let mut reads = Vec::new();
        for outcome in outcomes {
            match outcome {
                Outcome::Synced { session, reply_to, replies, .. } => {
                    session.refuse_sync(reply_to, replies.len(), &refused);
                }
                Outcome::Fetched { session, scope_index, reply_to, .. } => {
                    fetches.push((session, scope_index, reply_to))
                }
                Outcome::Updated { reply, result } => {
                    let _ = reply.send(result.and(Err(UpdateFailure::NotStored)));
                }
                // A read in a failed batch may have seen changes that are now undone.
                Outcome::Read { reply, .. } => reads.push(reply),
                Outcome::Broadcast { .. } => {}
            }
        }
        match load_stored(&self.shared, &self.key).await {
            Ok(Some(l)) => self.loaded = l,
            Ok(None) | Err(_) => {
                tracing::error!(scope = %self.key, "cannot reload the scope after a store failure");
            }
        }
        for reply in reads {
            let _ = reply.send((self.loaded.state.root(), self.loaded.state.to_json_tree()));
        }
        // Fetches in the failed batch get the durable state.
        let outcomes = fetches
            .into_iter()
            .map(|(session, scope_index, reply_to)| self.fetched(session, scope_index, reply_to))
            .collect();
        // Served like any batch: flushed, and after what the fan-out still owes them.
        self.deliver_batch(outcomes);
    }

    /// Stores a snapshot at the current seq (trimming the log), if anything changed since
    /// the last one.
    async fn save_snapshot(&mut self) {
        if self.loaded.seq == self.loaded.snapshot_seq {
            return;
        }
        let json = snapshot_json(&self.loaded.state);
        match self.shared.store.save_snapshot(&self.key, self.loaded.seq, json).await {
            Ok(()) => self.loaded.snapshot_seq = self.loaded.seq,
            // Not fatal: the log still holds every changeset since the last snapshot.
            Err(e) => tracing::warn!(scope = %self.key, error = %e, "cannot save a scope snapshot"),
        }
    }

    /// Leaves memory if still idle; `false` if a command arrived meanwhile.
    async fn unload(&mut self, me: &ScopeHandle, rx: &mut mpsc::Receiver<ScopeCmd>) -> bool {
        self.save_snapshot().await;
        {
            let mut scopes = self.shared.scopes.lock();
            if !rx.is_empty() {
                return false;
            }
            if scopes.get(&self.key).is_some_and(|h| h.same(me)) {
                scopes.remove(&self.key);
            }
            // From here on senders see `Closed` and look the scope up again.
            rx.close();
        }
        // Commands sent between the check and the close go to the scope's next actor,
        // which loads the snapshot just saved.
        while let Ok(cmd) = rx.try_recv() {
            self.shared.dispatch(&self.key, cmd);
        }
        tracing::debug!(scope = %self.key, "scope unloaded");
        true
    }
}

/// Queues for member `m`, in one frame with whatever its session has queued, the
/// broadcasts of `pending` after its `seen` that are not its own, and flushes. `false` if
/// its session is over.
fn catch_up<'a>(m: &mut Member, pending: impl Iterator<Item = &'a Pending>) -> bool {
    let id = m.session.id;
    let mut last = m.seen;
    let owed = pending.filter(|p| p.seq > m.seen).inspect(|p| last = p.seq).filter(|p| p.except != Some(id));
    let scope_index = m.scope_index;
    let ok = m.session.send_each(owed, |p, index, buf| {
        ServerMessage::ScopeSync { index, scope_index, fragments_json: &p.json }.encode(buf);
    });
    m.seen = last;
    ok
}

/// The actor could not load its scope: every queued command fails, and the scope is
/// forgotten so the next fetch tries again.
async fn fail_all(shared: &SyncShared, me: &ScopeHandle, rx: &mut mpsc::Receiver<ScopeCmd>, message: &str) {
    {
        let mut scopes = shared.scopes.lock();
        if scopes.get(&me.key).is_some_and(|h| h.same(me)) {
            scopes.remove(&me.key);
        }
        rx.close();
    }
    let error = WireError { message: message.to_owned(), kind: None };
    while let Some(cmd) = rx.recv().await {
        match cmd {
            ScopeCmd::Fetch { session, reply_to, .. } => session.refuse_fetch(reply_to, &error),
            ScopeCmd::Sync { session, reply_to, fragments, .. } => {
                session.refuse_sync(reply_to, fragments.len(), &error);
            }
            // Dropping the reply senders tells the HTTP callers the scope is unavailable.
            ScopeCmd::Update { .. } | ScopeCmd::Read { .. } | ScopeCmd::Leave { .. } => {}
        }
    }
}

/// The `ScopeState` fragments of a scope, encoded (also the stored snapshot's format).
fn snapshot_json(state: &ScopeState) -> Vec<u8> {
    let mut json = Vec::with_capacity(256);
    jetstream::encode_fragments(&state.snapshot(), &mut json);
    json
}

/// `Scope at index N was not found`.
pub(crate) fn scope_not_found(scope_index: u64) -> WireError {
    WireError {
        message: format!("Scope at index {scope_index} was not found"),
        kind: Some("scope-index-not-found".to_owned()),
    }
}

fn wire_error(e: FragmentError) -> WireError {
    WireError { message: e.message, kind: e.kind.map(str::to_owned) }
}

/// Loads the scope from the store, or creates it from its template.
async fn load(shared: &SyncShared, key: &str, template: &ScopeTemplate) -> Result<Loaded, String> {
    if let Some(l) = load_stored(shared, key).await? {
        return Ok(l);
    }
    let root = Uuid::from_bytes(super::random_uuid());
    let state = ScopeState::new(Arc::clone(&shared.schema), &template.root, root, &template.initial)
        .map_err(|e| format!("initial values of scope template '{}': {}", template.name, e.message))?;
    let stored = shared
        .store
        .create_scope(key, *root.as_bytes(), snapshot_json(&state))
        .await
        .map_err(|e| e.to_string())?;
    if stored.root_uuid == *root.as_bytes() && stored.snapshot_seq == 0 && stored.log.is_empty() {
        return Ok(Loaded { state, seq: 0, snapshot_seq: 0 });
    }
    // Another process created it first: use theirs.
    from_stored(shared, stored)
}

/// Loads a stored scope: its snapshot, then its log replayed in order.
async fn load_stored(shared: &SyncShared, key: &str) -> Result<Option<Loaded>, String> {
    match shared.store.load_scope(key).await.map_err(|e| e.to_string())? {
        Some(stored) => from_stored(shared, stored).map(Some),
        None => Ok(None),
    }
}

fn from_stored(shared: &SyncShared, stored: tether_store::StoredScope) -> Result<Loaded, String> {
    let root = Uuid::from_bytes(stored.root_uuid);
    let fragments =
        jetstream::decode_fragments(&stored.snapshot).map_err(|e| format!("stored snapshot: {e}"))?;
    let mut state = ScopeState::from_snapshot(Arc::clone(&shared.schema), root, &fragments)
        .map_err(|e| format!("stored snapshot does not fit the schema: {}", e.message))?;
    let mut seq = stored.snapshot_seq;
    for (s, bytes) in &stored.log {
        let fragments =
            jetstream::decode_fragments(bytes).map_err(|e| format!("stored changeset {s}: {e}"))?;
        let applied = state.apply(&fragments, false);
        if let Some(e) = applied.replies.iter().find_map(|r| r.as_ref().err()) {
            // Replaying what once applied must apply again; if the schema changed under a
            // stored scope, say so rather than silently diverge.
            tracing::warn!(changeset = s, error = %e.message, "a stored changeset no longer applies in full");
        }
        seq = *s;
    }
    Ok(Loaded { state, seq, snapshot_seq: stored.snapshot_seq })
}
