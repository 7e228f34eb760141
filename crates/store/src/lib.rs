//! Tether's storage: the [`Store`] trait and its embedded SQLite implementation.
//!
//! **Architecture invariant:** this is the only crate that knows SQL. Callers pass plain
//! records and timestamps in; the store never reads the wall clock (it only measures how old
//! a held read snapshot is, see [`sqlite`]), never sees a plaintext
//! password or token (only Argon2 PHC strings and SHA-256 digests), and never decides a
//! policy: expiry, rotation and revocation rules live in the server's auth service.
//!
//! Besides accounts, the store keeps the model-sync scopes of the Jetstream dialect
//! ([`StoredScope`]): a snapshot plus the log of changesets applied after it, both opaque
//! bytes encoded by the server. The store orders and trims them by sequence number and never
//! looks inside.
//!
//! It also keeps channel history ([`StoredHistory`]): per channel, its position (epoch and
//! top offset) and the publications it still keeps, as opaque bytes. The server numbers
//! publications in memory and hands them over in write-behind batches
//! ([`Store::append_history`]); the store upserts them by offset and trims them by the
//! limits given with each batch, and [`Store::mark_started`] tells a restarted server whether
//! the previous one had flushed everything before it stopped.
//!
//! The trait is object-safe (`Arc<dyn Store>`) so a server database (Postgres) can be
//! added later without touching callers.
//!
//! # Layout
//!
//! - [`sqlite`]: [`SqliteStore`], one writer thread plus pooled readers over a WAL file.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;

pub mod sqlite;

pub use sqlite::{SqliteStore, StoreOptions};

/// Row id of a user.
pub type UserId = i64;
/// Row id of a login session.
pub type SessionId = i64;
/// SHA-256 digest of a secret (session token or API key), computed by the caller.
pub type TokenHash = [u8; 32];

/// A user to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    /// Unique user name (compared case-insensitively).
    pub name: String,
    /// Email address, if the server asks for one.
    pub email: Option<String>,
    /// Argon2id PHC string; never the password itself.
    pub password_hash: String,
    /// Creation time, Unix milliseconds.
    pub created_ms: i64,
}

/// A stored user.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// Row id; also the user id carried in identities.
    pub id: UserId,
    /// User name as registered.
    pub name: String,
    /// Email address.
    pub email: Option<String>,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// Creation time, Unix milliseconds.
    pub created_ms: i64,
}

impl Debug for User {
    // The hash is not a secret in the strict sense, but it never belongs in a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("email", &self.email)
            .field("created_ms", &self.created_ms)
            .finish_non_exhaustive()
    }
}

/// A login session to create.
#[derive(Clone, PartialEq, Eq)]
pub struct NewSession {
    /// Owner.
    pub user_id: UserId,
    /// SHA-256 of the session token.
    pub token_hash: TokenHash,
    /// "Remember me": renewed on use after expiry instead of logged out.
    pub persistent: bool,
    /// Creation time, Unix milliseconds.
    pub created_ms: i64,
    /// When the current token stops being valid, Unix milliseconds.
    pub expires_ms: i64,
}

impl Debug for NewSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSession")
            .field("user_id", &self.user_id)
            .field("persistent", &self.persistent)
            .field("expires_ms", &self.expires_ms)
            .finish_non_exhaustive()
    }
}

/// A stored login session (without its token hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Row id.
    pub id: SessionId,
    /// Owner.
    pub user_id: UserId,
    /// Owner's name (joined from `users`).
    pub user_name: String,
    /// "Remember me".
    pub persistent: bool,
    /// Creation time, Unix milliseconds.
    pub created_ms: i64,
    /// When the current token stops being valid, Unix milliseconds.
    pub expires_ms: i64,
}

/// An API key to create.
#[derive(Clone, PartialEq, Eq)]
pub struct NewApiKey {
    /// Public identifier (the part of the key shown by `apikey list`).
    pub key_id: String,
    /// Human label.
    pub name: String,
    /// SHA-256 of the whole key.
    pub key_hash: TokenHash,
    /// Channel patterns the key may publish to; empty means every channel.
    pub channels: Vec<String>,
    /// Creation time, Unix milliseconds.
    pub created_ms: i64,
}

impl Debug for NewApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewApiKey")
            .field("key_id", &self.key_id)
            .field("name", &self.name)
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

/// A stored API key (without its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Public identifier.
    pub key_id: String,
    /// Human label.
    pub name: String,
    /// Channel patterns the key may publish to; empty means every channel.
    pub channels: Vec<String>,
    /// Creation time, Unix milliseconds.
    pub created_ms: i64,
}

/// Sequence number of a changeset within its scope: the first changeset of a scope is 1, and
/// every later one is one more than the previous one.
pub type ScopeSeq = u64;

/// A model-sync scope as stored: its latest snapshot and the changesets logged after it.
///
/// Loading it and applying `log` in order to `snapshot` gives the scope's state after its last
/// acknowledged changeset, which is `snapshot_seq + log.len()`.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredScope {
    /// Identity of the scope's root object, fixed at creation.
    pub root_uuid: [u8; 16],
    /// Opaque snapshot bytes (the server's encoding), taken after changeset `snapshot_seq`.
    pub snapshot: Vec<u8>,
    /// The changeset the snapshot includes, 0 for the initial state.
    pub snapshot_seq: ScopeSeq,
    /// Changesets with `seq > snapshot_seq`, ascending and contiguous (opaque bytes).
    pub log: Vec<(ScopeSeq, Vec<u8>)>,
}

impl StoredScope {
    /// Sequence number of the last changeset the scope includes (`snapshot_seq` if the log
    /// is empty): the next append must start one above it.
    pub fn last_seq(&self) -> ScopeSeq {
        self.log.last().map_or(self.snapshot_seq, |(seq, _)| *seq)
    }
}

impl Debug for StoredScope {
    // Sizes, not contents: a snapshot can be megabytes, and a log line is no place for it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredScope")
            .field("root_uuid", &self.root_uuid)
            .field("snapshot_len", &self.snapshot.len())
            .field("snapshot_seq", &self.snapshot_seq)
            .field("log_len", &self.log.len())
            .field("last_seq", &self.last_seq())
            .finish()
    }
}

/// One publication kept in a channel's history.
#[derive(Clone, PartialEq, Eq)]
pub struct HistoryRecord {
    /// Channel name (not empty).
    pub channel: String,
    /// The epoch the offset belongs to.
    pub epoch: String,
    /// Offset of the publication within its epoch, from 1 to `i64::MAX`.
    pub offset: u64,
    /// When it was published (the server's clock), Unix milliseconds, at most `i64::MAX`.
    pub at_ms: u64,
    /// Opaque bytes of the server's encoding.
    pub payload: Vec<u8>,
}

impl Debug for HistoryRecord {
    // The size, not the contents: a publication is no business of a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryRecord")
            .field("channel", &self.channel)
            .field("epoch", &self.epoch)
            .field("offset", &self.offset)
            .field("at_ms", &self.at_ms)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

/// How much history one channel keeps, given with each [`Store::append_history`] so the
/// store trims in the same transaction.
///
/// Both limits remove publications from the oldest on, so what is kept is always the newest
/// part of the channel's history, as `ChannelHistory` in the engine keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryKeep {
    /// Channel name (not empty).
    pub channel: String,
    /// Most publications kept: rows with an offset of `top - max_count` or less are deleted,
    /// so what stays is the window of the newest `max_count` offsets. With consecutive
    /// offsets, as the engine assigns them, that is the newest `max_count` publications; with
    /// gaps, fewer (but still every one of the consecutive run ending at `top` that fits).
    /// 0 keeps none (the channel's position is still kept). The engine treats a limit of 0
    /// as 1: pass the limit actually in effect.
    pub max_count: u64,
    /// Publications stamped before this (Unix milliseconds) are deleted, from the oldest on,
    /// up to the first one that is not: like the engine's age trimming, which keeps a newer
    /// publication stamped earlier by a clock that stepped back. 0: no age limit.
    pub min_at_ms: u64,
}

/// A channel's stored history.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredHistory {
    /// Channel name.
    pub channel: String,
    /// The current epoch.
    pub epoch: String,
    /// Highest offset ever written in the current epoch, even if trimmed since: the
    /// channel's position, and where its next publication continues (`top + 1`).
    pub top: u64,
    /// The kept publications of the current epoch, oldest (lowest offset) first; possibly
    /// none. Normally consecutive and ending at `top`, but the store does not enforce that.
    pub entries: Vec<HistoryRecord>,
}

impl Debug for StoredHistory {
    // Sizes, not contents, as for StoredScope.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredHistory")
            .field("channel", &self.channel)
            .field("epoch", &self.epoch)
            .field("top", &self.top)
            .field("entries_len", &self.entries.len())
            .field("first_offset", &self.entries.first().map(|e| e.offset))
            .finish()
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique value (user name, API key id) is already taken, or a scope changeset or
    /// snapshot does not continue the stored sequence (see [`Store::append_changesets`]).
    #[error("already exists")]
    Conflict,
    /// The row to change does not exist.
    #[error("not found")]
    NotFound,
    /// The database file was written by a newer Tether.
    #[error("database schema version {found} is newer than this binary supports ({supported})")]
    TooNew {
        /// Version in the file.
        found: i64,
        /// Newest version this binary knows.
        supported: i64,
    },
    /// The store has been shut down.
    #[error("the store is closed")]
    Closed,
    /// The arguments break a rule of the operation (a bug in the caller, such as an empty
    /// channel name in [`Store::append_history`]); nothing was written.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Anything else from the database (IO, corruption, …); logged, never sent to clients.
    #[error("database error: {0}")]
    Database(String),
}

/// The future every store operation returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Persistent state of accounts, sessions, API keys, model-sync scopes and channel history.
///
/// Writes are serialized (one writer); reads may run concurrently. Every write is durable
/// when its future resolves.
pub trait Store: Send + Sync + Debug + 'static {
    /// Creates a user. [`StoreError::Conflict`] if the name is taken (case-insensitively);
    /// enforced by a unique index, so concurrent registrations of one name yield one user.
    fn create_user(&self, user: NewUser) -> StoreFuture<'_, UserId>;
    /// Looks a user up by name (case-insensitively).
    fn user_by_name<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Option<User>>;
    /// Looks a user up by id.
    fn user_by_id(&self, id: UserId) -> StoreFuture<'_, Option<User>>;
    /// Every user, ordered by id.
    fn list_users(&self) -> StoreFuture<'_, Vec<User>>;
    /// Replaces the password hash and deletes every session of the user except `keep`, in
    /// one transaction. Returns the ids of the deleted sessions. [`StoreError::NotFound`]
    /// if there is no such user.
    fn set_password(
        &self,
        id: UserId,
        password_hash: String,
        keep: Option<SessionId>,
    ) -> StoreFuture<'_, Vec<SessionId>>;
    /// Deletes the user and all its sessions. Returns the ids of the deleted sessions.
    /// [`StoreError::NotFound`] if there is no such user.
    fn delete_user(&self, id: UserId) -> StoreFuture<'_, Vec<SessionId>>;
    /// Creates a session. [`StoreError::NotFound`] if the user does not exist.
    fn create_session(&self, session: NewSession) -> StoreFuture<'_, SessionId>;
    /// The session whose current token hashes to `hash`, if any.
    fn session_by_token<'a>(&'a self, hash: &'a TokenHash) -> StoreFuture<'a, Option<Session>>;
    /// Replaces the token of session `id` only if its current hash is `old`, so two
    /// concurrent refreshes cannot both win. `false` if the session is gone or `old` is
    /// not its current hash.
    fn rotate_session<'a>(
        &'a self,
        id: SessionId,
        old: &'a TokenHash,
        new: &'a TokenHash,
        expires_ms: i64,
    ) -> StoreFuture<'a, bool>;
    /// Deletes one session; `false` if it did not exist.
    fn delete_session(&self, id: SessionId) -> StoreFuture<'_, bool>;
    /// Sessions of one user, ordered by id.
    fn sessions_of_user(&self, user: UserId) -> StoreFuture<'_, Vec<Session>>;
    /// Deletes non-persistent sessions that expired before `non_persistent_before_ms` and
    /// persistent ones that expired before `persistent_before_ms`. Returns how many.
    fn purge_sessions(
        &self,
        non_persistent_before_ms: i64,
        persistent_before_ms: i64,
    ) -> StoreFuture<'_, usize>;
    /// Which of `ids` still exist (to notice revocations made by another process, such as
    /// the CLI).
    fn existing_sessions(&self, ids: Vec<SessionId>) -> StoreFuture<'_, Vec<SessionId>>;
    /// Stores an API key. [`StoreError::Conflict`] if `key_id` exists.
    fn create_api_key(&self, key: NewApiKey) -> StoreFuture<'_, ()>;
    /// The API key whose hash is `hash`, if any.
    fn api_key_by_hash<'a>(&'a self, hash: &'a TokenHash) -> StoreFuture<'a, Option<ApiKey>>;
    /// Every API key, ordered by creation.
    fn list_api_keys(&self) -> StoreFuture<'_, Vec<ApiKey>>;
    /// Deletes an API key; `false` if there was none with this id.
    fn revoke_api_key<'a>(&'a self, key_id: &'a str) -> StoreFuture<'a, bool>;

    /// Creates the scope `key` with `snapshot` as its state before any changeset
    /// (`snapshot_seq` 0, empty log), unless it exists: then `root_uuid` and `snapshot` are
    /// ignored and the stored scope is returned unchanged, as [`Store::load_scope`] would.
    /// Concurrent creations of one key, by this process or another one, end with one scope,
    /// and every caller gets that one back.
    ///
    /// Meant for a scope that [`Store::load_scope`] did not find: creating is a write, and
    /// writes are serialized.
    fn create_scope(&self, key: &str, root_uuid: [u8; 16], snapshot: Vec<u8>)
    -> StoreFuture<'_, StoredScope>;
    /// The scope `key` as last committed (never from an older read snapshot), if it exists.
    fn load_scope<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<StoredScope>>;
    /// Appends `entries` to the log of scope `key`, all or nothing, in one transaction; the
    /// future resolves once that commit is durable.
    ///
    /// The sequence numbers must continue the scope's log one by one: the first is
    /// [`StoredScope::last_seq`] + 1, each next one is one more. A gap or a repeated number is
    /// [`StoreError::Conflict`], and nothing of the batch is written. [`StoreError::NotFound`]
    /// if there is no such scope. An empty `entries` does nothing (and checks nothing).
    ///
    /// Like every write, the append is queued when the future is first polled and then runs
    /// even if the future is dropped. After a dropped future or a [`StoreError::Database`]
    /// (which may come from the commit itself), whether the batch is stored is unknown: reload
    /// the scope rather than assume either outcome.
    fn append_changesets<'a>(
        &'a self,
        key: &'a str,
        entries: Vec<(ScopeSeq, Vec<u8>)>,
    ) -> StoreFuture<'a, ()>;
    /// Replaces the snapshot of scope `key` with `snapshot`, taken after changeset `seq`, and
    /// deletes the log entries it includes (`<= seq`), in one transaction.
    ///
    /// `seq` must lie between the current `snapshot_seq` and [`StoredScope::last_seq`]
    /// (inclusive), otherwise [`StoreError::Conflict`] and nothing changes: an older snapshot
    /// would lose trimmed changesets, a newer one would vouch for changesets never logged.
    /// [`StoreError::NotFound`] if there is no such scope.
    fn save_snapshot<'a>(&'a self, key: &'a str, seq: ScopeSeq, snapshot: Vec<u8>) -> StoreFuture<'a, ()>;
    /// Deletes scope `key` and its log; `false` if it did not exist.
    fn delete_scope<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool>;
    /// Keys of all stored scopes, in byte order.
    fn scope_keys(&self) -> StoreFuture<'_, Vec<String>>;

    /// Stores a batch of channel history, then trims it, all in one transaction: when the
    /// future resolves with `Ok`, the whole batch is durable; with an error, none of it was
    /// written (but see below for a database error).
    ///
    /// `records` may mix channels, but each channel's records must come in the order they were
    /// published. For each record, in turn:
    ///
    /// - if its epoch differs from the channel's stored epoch (or the channel has none), the
    ///   history was reset: every stored row of the channel is deleted and the record's epoch
    ///   becomes the channel's epoch, restarting at whatever offset the record carries (an
    ///   epoch change in the middle of a batch is a reset there);
    /// - it is stored under (channel, offset), replacing the row already there (an offset
    ///   re-used after a crash overwrites it);
    /// - the channel's `top` becomes the highest offset written in its current epoch (a
    ///   lower, re-used offset does not lower it).
    ///
    /// Then each [`HistoryKeep`] is applied to its channel, in order: a channel without stored
    /// history is ignored, and a channel of `records` without a `keep` is not trimmed. Trimming
    /// never changes a channel's epoch or `top`, even if it deletes every row.
    ///
    /// [`StoreError::Invalid`], and nothing is written, if a channel name (of a record or a
    /// keep) is empty, an offset is 0 or above `i64::MAX`, an `at_ms` is above `i64::MAX`,
    /// or a channel's records of one epoch do not have strictly increasing offsets within the
    /// batch. Two empty lists do nothing.
    ///
    /// Like every write, the batch is queued when the future is first polled and then runs
    /// even if the future is dropped. After a dropped future or a [`StoreError::Database`]
    /// (which may come from the commit itself), whether the batch is stored is unknown.
    /// Applying a batch twice gives the same result as applying it once, so it may be
    /// retried, as long as no later batch for its channels was appended in between (an old
    /// batch applied after a newer one could reset a channel back to its old epoch).
    fn append_history(&self, records: Vec<HistoryRecord>, keep: Vec<HistoryKeep>) -> StoreFuture<'_, ()>;
    /// Every channel with stored history, in byte order of channel name, with its epoch, `top`
    /// and kept rows (oldest first), all read on one snapshot: everything committed before
    /// the call, by any process, and no half of a batch. A channel whose rows were all trimmed
    /// is still listed, with no entries. Everything is loaded in memory at once.
    fn load_histories(&self) -> StoreFuture<'_, Vec<StoredHistory>>;
    /// Deletes the stored history of `channel`, its position included (the next
    /// [`Store::append_history`] for it starts afresh in whatever epoch it carries); `false`
    /// if there was none.
    fn delete_history<'a>(&'a self, channel: &'a str) -> StoreFuture<'a, bool>;
    /// Records that a server process started using this store; returns whether the previous
    /// process that did so shut down cleanly, i.e. called [`Store::mark_clean_shutdown`]
    /// after its last [`Store::mark_started`] (`true` for a file no server ever started on).
    ///
    /// Durable when the future resolves. The flag belongs to the file, not to a process: two
    /// servers started on one file make the second one see an unclean shutdown. After an
    /// error the flag is usually unchanged and a retry gives the right answer; but if the
    /// commit itself failed (a [`StoreError::Database`]) or the future was dropped, the flag
    /// may already say "running", and a retry then reports an unclean shutdown: the safe
    /// side.
    fn mark_started(&self) -> StoreFuture<'_, bool>;
    /// Records a clean shutdown, durably: the next [`Store::mark_started`] returns `true`.
    ///
    /// To be called after the last [`Store::append_history`] succeeded, and only then: the
    /// store does not check it, and later writes do not undo the mark. Writes are applied in
    /// the order they are queued, so an append whose future resolved is never applied after
    /// this mark.
    fn mark_clean_shutdown(&self) -> StoreFuture<'_, ()>;
}
