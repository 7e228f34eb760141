//! [`SqliteStore`]: the embedded [`Store`], one SQLite file in WAL mode.
//!
//! # Concurrency model
//!
//! - **Writes** go to one dedicated OS thread (`tether-store-writer`) that owns the only
//!   read-write [`Connection`]. Callers send it boxed jobs over a channel and await the reply
//!   on a oneshot. SQLite allows one writer at a time anyway; funnelling every write through
//!   one thread means writers of this process never contend for the lock (no `SQLITE_BUSY`
//!   between our own writes), the blocking `fsync` of `synchronous=FULL` never runs on an
//!   async worker, and multi-row writes are simple transactions.
//! - **Reads** run inline on the calling task, on a small pool of read-only connections. In
//!   WAL mode a reader works on its own snapshot and never waits for the writer, and a point
//!   lookup through a cached prepared statement takes a few microseconds: less than a round
//!   trip to a thread would cost. Session-token verification is a hot path, so it must not
//!   queue behind writes or pay for a thread hop.
//!
//! # Held read snapshots
//!
//! Starting and ending a read transaction costs SQLite four `fcntl` lock calls (a shared lock
//! on the database file and a read mark in the WAL index), about a third of a cold session
//! lookup. With [`StoreOptions::max_snapshot_age`] above zero, a pooled reader therefore
//! keeps its read transaction open between session-token lookups
//! ([`Store::session_by_token`], the only read that tolerates it) and reuses the snapshot
//! while
//!
//! - no write of this store has committed since the snapshot was taken: every write bumps a
//!   generation counter before its future resolves, so this process always reads its own
//!   writes; and
//! - the snapshot is younger than `max_snapshot_age`, which bounds how late a change made by
//!   another process (the CLI revoking a session) is seen.
//!
//! A lookup that finds nothing on a reused snapshot is repeated on a fresh one, so a session
//! created by another process is found at once; only removals can be seen late.
//! Every other read takes a fresh snapshot. After each write the
//! writer thread also ends the snapshots of idle readers, so old snapshots never hold back
//! the WAL checkpoint while this process writes. With `max_snapshot_age` zero (the default,
//! and what the CLI uses) every read is its own transaction.
//!
//! Other processes (the CLI) may open the same file; they are serialized by SQLite's file
//! locks, with a 5 s busy timeout.
//!
//! # Schema
//!
//! Versioned by `PRAGMA user_version`: migration `i` of a static, ordered list upgrades version
//! `i` to `i + 1`, each in its own transaction. The list is append-only; a released migration
//! is never edited. A file newer than the list is refused with [`StoreError::TooNew`].
//!
//! Model-sync scopes (Jetstream) take two tables, added by migration 2:
//!
//! - `scopes(id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT UNIQUE, root_uuid BLOB,
//!   snapshot BLOB, snapshot_seq INTEGER)`: one row per scope, with its latest snapshot and
//!   the changeset that snapshot includes (0 for the initial state).
//! - `scope_log(scope_id, seq, changeset BLOB, PRIMARY KEY (scope_id, seq)) WITHOUT ROWID`:
//!   the changesets after the snapshot. The table is clustered on its key, so an append
//!   writes one b-tree at its right edge, a load is one range scan and the last seq is one
//!   seek. The key starts with the integer id, not the text key, to keep every row small.
//!
//! Snapshots and changesets are opaque bytes of the server's encoding; the store only
//! orders, checks and trims them by sequence number. The last seq is not kept in `scopes`
//! (updating that row would rewrite its snapshot on every append): an append reads
//! `max(seq)` inside its IMMEDIATE transaction and refuses a batch that does not continue
//! it, so even two processes appending to one scope cannot leave a gap or a repeat.
//! `save_snapshot` replaces the snapshot and trims the log it includes in one transaction,
//! and a load reads both on one snapshot, so a load never sees a mix. Scope loads never reuse
//! a held snapshot: they happen when a scope is not in memory, and must include everything
//! acknowledged before, by any process.
//!
//! Channel history takes two tables, and the server's lifecycle flag a third, added by
//! migration 3:
//!
//! - `history_channels(id INTEGER PRIMARY KEY AUTOINCREMENT, channel TEXT UNIQUE, epoch TEXT,
//!   top INTEGER)`: one row per channel with history, holding its position: the current
//!   epoch and the highest offset written in it. Kept apart from the rows because trimming
//!   may delete every row while the position must survive. The row is small, so updating
//!   `top` on every append costs little (unlike `scopes`, whose rows carry a snapshot).
//! - `history_log(channel_id, offset, at_ms INTEGER, payload BLOB, PRIMARY KEY (channel_id,
//!   offset)) WITHOUT ROWID`: the kept publications, clustered like `scope_log` so an append
//!   writes at the right edge of the channel's range and a load is one range scan. `at_ms`
//!   comes before the payload so that trimming by age reads it without touching payload
//!   overflow pages.
//! - `lifecycle(key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID`: small flags about the
//!   file. Key `server` is `running` from [`Store::mark_started`] until
//!   [`Store::mark_clean_shutdown`] sets it to `clean`.
//!
//! An append runs in one IMMEDIATE transaction: per record, reset the channel if the epoch
//! changed (delete its rows, take the new epoch), upsert the row, raise `top`; then trim by
//! count (a range delete of the offsets up to `top - max_count`) and by age (an ascending
//! scan from the oldest row to the first one young enough, then a range delete). Both trims
//! remove a prefix of the channel's range, never a row in the middle, so the kept rows stay
//! the consecutive run the engine restores; and both cost in proportion to what they delete,
//! not to what is kept (stepping over kept rows would read their payloads on every append).
//! A load reads every channel and its rows on one snapshot, never from a held one.
//!
//! API key channel lists are stored as a JSON array of strings (`["a.*","b"]`, `[]` for "every
//! channel"). JSON rather than a joined string because every pattern round-trips exactly,
//! including one that is empty or contains the separator, so a restricted key can never be
//! read back as an unrestricted one.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, LazyLock};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::types::Type;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior, ffi, params};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::{
    ApiKey, HistoryKeep, HistoryRecord, NewApiKey, NewSession, NewUser, ScopeSeq, Session, SessionId, Store,
    StoreError, StoreFuture, StoredHistory, StoredScope, TokenHash, User, UserId,
};

/// File name of the database inside a data directory (see [`SqliteStore::open_in_dir`]).
pub const FILE_NAME: &str = "tether.db";

/// Schema migrations, in order: entry `i` upgrades `user_version` `i` to `i + 1`.
///
/// Append-only. `id INTEGER PRIMARY KEY AUTOINCREMENT` (still a rowid alias) guarantees that
/// an id is never reused after a delete: a session id the server remembers, or a user id
/// inside an identity, must never come to mean a different, newer row.
const MIGRATIONS: &[&str] = &[
    // 1: accounts, login sessions, API keys.
    "
    CREATE TABLE users (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        name          TEXT NOT NULL,
        email         TEXT,
        password_hash TEXT NOT NULL,
        created_ms    INTEGER NOT NULL
    );
    -- The only thing that makes names unique: concurrent registrations race on this index.
    CREATE UNIQUE INDEX users_name_nocase ON users(name COLLATE NOCASE);

    CREATE TABLE sessions (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        token_hash BLOB NOT NULL UNIQUE,
        persistent INTEGER NOT NULL,
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL
    );
    CREATE INDEX sessions_user_id ON sessions(user_id);

    CREATE TABLE api_keys (
        key_id     TEXT PRIMARY KEY,
        name       TEXT NOT NULL,
        key_hash   BLOB NOT NULL UNIQUE,
        -- JSON array of channel patterns; [] means every channel.
        channels   TEXT NOT NULL,
        created_ms INTEGER NOT NULL
    );
    ",
    // 2: model-sync scopes (Jetstream): each scope's latest snapshot, and the changesets
    // logged after it. Both are opaque bytes of the server's encoding.
    "
    CREATE TABLE scopes (
        -- The log refers to a scope by this small integer rather than by its text key.
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        key          TEXT NOT NULL UNIQUE,
        root_uuid    BLOB NOT NULL,
        snapshot     BLOB NOT NULL,
        -- The changeset the snapshot includes; 0 for the initial state.
        snapshot_seq INTEGER NOT NULL
    );

    -- Changesets after the snapshot. Clustered on (scope_id, seq): an append writes one
    -- b-tree, a load reads one contiguous range, and the highest seq is one seek. No
    -- foreign key: every append reads the scope id in its own write transaction, and the
    -- store deletes a scope's log together with the scope.
    CREATE TABLE scope_log (
        scope_id  INTEGER NOT NULL,
        seq       INTEGER NOT NULL,
        changeset BLOB NOT NULL,
        PRIMARY KEY (scope_id, seq)
    ) WITHOUT ROWID;
    ",
    // 3: channel history: each channel's position (epoch, top offset) and the publications
    // it keeps (opaque bytes of the server's encoding); and the server's lifecycle flag.
    "
    CREATE TABLE history_channels (
        -- The rows refer to a channel by this small integer rather than by its name.
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        channel TEXT NOT NULL UNIQUE,
        epoch   TEXT NOT NULL,
        -- Highest offset written in the current epoch, even if its row was trimmed since.
        top     INTEGER NOT NULL
    );

    -- Kept publications, clustered on (channel_id, offset) like scope_log. No foreign key:
    -- every append reads the channel id in its own write transaction, and the store deletes
    -- a channel's rows together with its position. at_ms before the payload, so that
    -- trimming by age does not read payload overflow pages.
    CREATE TABLE history_log (
        channel_id INTEGER NOT NULL,
        offset     INTEGER NOT NULL,
        at_ms      INTEGER NOT NULL,
        payload    BLOB NOT NULL,
        PRIMARY KEY (channel_id, offset)
    ) WITHOUT ROWID;

    -- Flags about the file; key 'server': 'running' or 'clean' (see mark_started).
    CREATE TABLE lifecycle (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;
    ",
];

/// Key of the server's lifecycle flag in `lifecycle`.
const LIFECYCLE_SERVER: &str = "server";
/// Its value from [`Store::mark_started`] to [`Store::mark_clean_shutdown`].
const LIFECYCLE_RUNNING: &str = "running";
/// Its value after [`Store::mark_clean_shutdown`].
const LIFECYCLE_CLEAN: &str = "clean";

/// Newest schema version this binary knows.
// A handful of migrations always fits an i64: the cast cannot wrap.
const SUPPORTED_VERSION: i64 = MIGRATIONS.len() as i64;

/// How long a connection waits for another process's lock before failing with `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_millis(5000);

/// Idle read connections kept for reuse; more are opened under load and closed afterwards.
const MAX_IDLE_READERS: usize = 16;

/// Ids per `IN (...)` list in [`Store::existing_sessions`]. Far below SQLite's variable limit
/// (32766), and one fixed size so that a single cached statement serves every chunk.
const IN_CHUNK: usize = 256;

/// `SELECT` of the session ids among [`IN_CHUNK`] bound ids.
static EXISTING_SESSIONS_SQL: LazyLock<String> =
    LazyLock::new(|| format!("SELECT id FROM sessions WHERE id IN ({})", vec!["?"; IN_CHUNK].join(", ")));

/// Work for the writer thread. It sends its own result through a oneshot it captured.
type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// Tuning of a [`SqliteStore`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreOptions {
    /// How long a pooled reader may keep reusing one read snapshot for credential lookups:
    /// the longest a removal made by another process can go unseen. Zero (the default)
    /// makes every read its own transaction. See the [module documentation](self).
    pub max_snapshot_age: Duration,
}

/// How current a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Freshness {
    /// Everything committed before the read started, by any process.
    Latest,
    /// Every write of this store; other processes' writes up to `max_snapshot_age` late.
    Recent,
}

/// A read transaction a pooled reader keeps open.
#[derive(Debug, Clone, Copy)]
struct Snapshot {
    /// The write generation when it was taken.
    generation: u64,
    taken: Instant,
}

/// A pooled read-only connection, and the snapshot it holds open, if any.
struct Reader {
    conn: Connection,
    snapshot: Option<Snapshot>,
}

impl Reader {
    /// Ends the held read transaction, if any. Failure leaves nothing to undo (a read-only
    /// transaction has no changes); it is logged, and the connection is then dropped.
    fn end_snapshot(&mut self) -> rusqlite::Result<()> {
        self.snapshot = None;
        if self.conn.is_autocommit() { Ok(()) } else { self.conn.execute_batch("COMMIT") }
    }
}

/// What the store's callers and its writer thread share.
struct Shared {
    /// Bumped after every write job, before its result is handed back.
    generation: AtomicU64,
    /// Idle readers.
    readers: Mutex<Vec<Reader>>,
}

impl Shared {
    /// Ends the snapshots of idle readers, so they do not pin old WAL frames.
    fn end_idle_snapshots(&self) {
        let mut readers = self.readers.lock();
        readers.retain_mut(|r| match r.end_snapshot() {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "cannot end a read snapshot; closing that reader");
                false
            }
        });
    }
}

/// The embedded [`Store`]: one SQLite file in WAL mode, one writer thread, pooled readers.
///
/// See the [module documentation](self) for the concurrency model. Dropping the store lets
/// the writer finish the jobs already queued, then waits for it to close the file.
pub struct SqliteStore {
    path: PathBuf,
    schema_version: i64,
    /// `None` only while dropping (taken so the writer sees the channel close).
    writer: Option<mpsc::Sender<Job>>,
    writer_thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
    options: StoreOptions,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("schema_version", &self.schema_version)
            .field("idle_readers", &self.shared.readers.lock().len())
            .field("options", &self.options)
            .field("closed", &self.writer.is_none())
            .finish()
    }
}

impl SqliteStore {
    /// Opens the database at `path`, creating it (and its parent directory) if missing, and
    /// brings its schema up to date.
    ///
    /// The file gets mode 0600 on unix because it holds password hashes. The connection uses
    /// `journal_mode=WAL`, `synchronous=FULL` (an acknowledged write survives power loss),
    /// `foreign_keys=ON` and a 5 s busy timeout.
    ///
    /// # Errors
    ///
    /// [`StoreError::TooNew`] if the file was written by a newer Tether (it is left
    /// untouched), [`StoreError::Database`] for IO errors, a file that is not a database, or a
    /// file system without WAL support.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, StoreOptions::default())
    }

    /// [`SqliteStore::open`] with explicit [`StoreOptions`].
    ///
    /// # Errors
    ///
    /// As [`SqliteStore::open`].
    pub fn open_with(path: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        prepare_file(path)?;
        let mut conn = open_writer(path).map_err(|e| db_error("open", &e))?;
        let schema_version = migrate(&mut conn)?;
        // Fail now, not on the first request, if read-only connections do not work here.
        let reader = open_reader(path).map_err(|e| db_error("open reader", &e))?;

        let shared = Arc::new(Shared {
            generation: AtomicU64::new(0),
            readers: Mutex::new(vec![Reader { conn: reader, snapshot: None }]),
        });
        let (sender, receiver) = mpsc::channel::<Job>();
        let writer_shared = Arc::clone(&shared);
        let writer_thread = std::thread::Builder::new()
            .name("tether-store-writer".to_owned())
            .spawn(move || {
                // Ends when every sender is gone, i.e. the store was dropped, after running the
                // jobs already queued. The connection closes (and checkpoints) on return.
                for job in receiver {
                    job(&mut conn);
                    writer_shared.end_idle_snapshots();
                }
            })
            .map_err(|e| {
                tracing::error!(error = %e, "cannot start the store writer thread");
                StoreError::Database(format!("cannot start the store writer thread: {e}"))
            })?;

        Ok(Self {
            path: path.to_owned(),
            schema_version,
            writer: Some(sender),
            writer_thread: Some(writer_thread),
            shared,
            options,
        })
    }

    /// Opens (or creates) [`FILE_NAME`] inside `dir`, creating `dir` if needed.
    ///
    /// # Errors
    ///
    /// As [`SqliteStore::open`].
    pub fn open_in_dir(dir: &Path) -> Result<Self, StoreError> {
        Self::open(&dir.join(FILE_NAME))
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Schema version of the file (`PRAGMA user_version`) after opening, which is the number
    /// of migrations this binary knows.
    pub fn schema_version(&self) -> i64 {
        self.schema_version
    }

    /// Runs `f` on the writer thread. Nothing happens until the future is first polled; once
    /// the job is queued it runs to completion even if the future is dropped.
    fn write<T, F>(&self, f: F) -> StoreFuture<'_, T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, result) = oneshot::channel();
        let shared = Arc::clone(&self.shared);
        let job: Job = Box::new(move |conn: &mut Connection| {
            let outcome = f(conn);
            // Before the caller hears back, so any read it starts afterwards takes a fresh
            // snapshot (bumped for failed writes too: harmless, and simpler to reason about).
            shared.generation.fetch_add(1, Ordering::Release);
            // An error here only means the caller stopped waiting; the write still happened.
            let _ = reply.send(outcome);
        });
        let writer = self.writer.as_ref();
        Box::pin(async move {
            let writer = writer.ok_or(StoreError::Closed)?;
            writer.send(job).map_err(|_| StoreError::Closed)?;
            // The reply sender is dropped unsent only if the writer died mid-job.
            result.await.map_err(|_| StoreError::Closed)?
        })
    }

    /// Runs the read `f` now, on a pooled read-only connection, at the given freshness.
    fn read<T>(
        &self,
        op: &'static str,
        freshness: Freshness,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        self.with_reader(op, |reader| self.read_on(reader, freshness, f).map(|(value, _)| value))
    }

    /// A credential lookup at [`Freshness::Recent`], repeated on a fresh snapshot if a reused
    /// one found nothing: something just created by another process is found at once.
    fn lookup<T>(
        &self,
        op: &'static str,
        f: impl Fn(&Connection) -> rusqlite::Result<Option<T>>,
    ) -> Result<Option<T>, StoreError> {
        self.with_reader(op, |reader| match self.read_on(reader, Freshness::Recent, &f)? {
            (None, true) => self.read_on(reader, Freshness::Latest, &f).map(|(value, _)| value),
            (value, _) => Ok(value),
        })
    }

    /// Lends `f` a pooled reader (opening one if none is idle) and takes it back afterwards,
    /// unless `f` failed: a connection in an unknown state is closed, not pooled.
    fn with_reader<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut Reader) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        // Pop in its own statement so the pool lock is not held while opening a connection.
        let pooled = self.shared.readers.lock().pop();
        let mut reader = match pooled {
            Some(reader) => reader,
            None => Reader { conn: open_reader(&self.path).map_err(|e| db_error(op, &e))?, snapshot: None },
        };
        let result = f(&mut reader).map_err(|e| db_error(op, &e));
        // If `f` panicked the connection is simply dropped, which is harmless.
        if result.is_ok() {
            let mut pool = self.shared.readers.lock();
            if pool.len() < MAX_IDLE_READERS {
                pool.push(reader);
            }
        }
        result
    }

    /// Runs `f` on `reader`, reusing its snapshot if `freshness` allows; also says whether
    /// the snapshot was reused.
    fn read_on<T>(
        &self,
        reader: &mut Reader,
        freshness: Freshness,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<(T, bool)> {
        let max_age = self.options.max_snapshot_age;
        if max_age.is_zero() {
            // Autocommit: the statement is its own read transaction.
            return Ok((f(&reader.conn)?, false));
        }
        // Loaded before the snapshot is taken: a write committing in between makes this
        // snapshot look older than it is, never newer.
        let generation = self.shared.generation.load(Ordering::Acquire);
        let now = Instant::now();
        let reused = freshness == Freshness::Recent
            && reader
                .snapshot
                .is_some_and(|s| s.generation == generation && now.duration_since(s.taken) < max_age);
        if !reused {
            reader.end_snapshot()?;
            // Deferred: the read transaction (the snapshot) starts at the first read of `f`
            // and lasts until `end_snapshot`.
            reader.conn.execute_batch("BEGIN")?;
            reader.snapshot = Some(Snapshot { generation, taken: now });
        }
        Ok((f(&reader.conn)?, reused))
    }

    /// A read as a [`StoreFuture`]: computed synchronously (see the module docs), then ready.
    fn read_now<T: Send + 'static>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> StoreFuture<'static, T> {
        Box::pin(std::future::ready(self.read(op, Freshness::Latest, f)))
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Readers first: a snapshot left open would keep the writer's close from
        // checkpointing and removing the WAL.
        self.shared.readers.lock().clear();
        // Closing the channel ends the writer's loop once the queue is drained.
        drop(self.writer.take());
        // Waiting means the file is closed (and the WAL checkpointed) when the drop returns, so
        // it can be reopened or copied right away. It cannot deadlock: jobs never own the
        // store, so this never runs on the writer thread. The queue holds at most the jobs of
        // futures dropped after being polled, since live futures borrow the store.
        if let Some(thread) = self.writer_thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the store writer thread panicked");
        }
    }
}

impl Store for SqliteStore {
    fn create_user(&self, user: NewUser) -> StoreFuture<'_, UserId> {
        // A plain INSERT: the unique index decides who wins a race for a name. Checking first
        // and inserting afterwards would let two registrations both pass the check.
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO users (name, email, password_hash, created_ms) VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut stmt| {
                stmt.insert(params![user.name, user.email, user.password_hash, user.created_ms])
            })
            .map_err(|e| {
                if is_unique_violation(&e) { StoreError::Conflict } else { db_error("create_user", &e) }
            })
        })
    }

    fn user_by_name<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Option<User>> {
        self.read_now("user_by_name", |conn| {
            // `COLLATE NOCASE` on the comparison lets SQLite use the unique index. NOCASE folds
            // ASCII letters only, as the index does, so lookup and uniqueness always agree.
            conn.prepare_cached(
                "SELECT id, name, email, password_hash, created_ms FROM users \
                 WHERE name = ?1 COLLATE NOCASE",
            )?
            .query_row([name], user_from_row)
            .optional()
        })
    }

    fn user_by_id(&self, id: UserId) -> StoreFuture<'_, Option<User>> {
        self.read_now("user_by_id", |conn| {
            conn.prepare_cached("SELECT id, name, email, password_hash, created_ms FROM users WHERE id = ?1")?
                .query_row([id], user_from_row)
                .optional()
        })
    }

    fn list_users(&self) -> StoreFuture<'_, Vec<User>> {
        self.read_now("list_users", |conn| {
            conn.prepare_cached("SELECT id, name, email, password_hash, created_ms FROM users ORDER BY id")?
                .query_map([], user_from_row)?
                .collect()
        })
    }

    fn set_password(
        &self,
        id: UserId,
        password_hash: String,
        keep: Option<SessionId>,
    ) -> StoreFuture<'_, Vec<SessionId>> {
        self.write(move |conn| {
            let result = (|| {
                // IMMEDIATE takes the write lock up front: another process cannot slip a
                // session in between the listing and the delete.
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let updated = tx
                    .prepare_cached("UPDATE users SET password_hash = ?1 WHERE id = ?2")?
                    .execute(params![password_hash, id])?;
                if updated == 0 {
                    return Ok(None); // Dropping `tx` rolls back (nothing changed anyway).
                }
                // `id IS NOT NULL` is true for every row, so `keep = None` deletes them all.
                let deleted: Vec<SessionId> = tx
                    .prepare_cached(
                        "SELECT id FROM sessions WHERE user_id = ?1 AND id IS NOT ?2 ORDER BY id",
                    )?
                    .query_map(params![id, keep], |row| row.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                tx.prepare_cached("DELETE FROM sessions WHERE user_id = ?1 AND id IS NOT ?2")?
                    .execute(params![id, keep])?;
                tx.commit()?;
                Ok(Some(deleted))
            })();
            match result {
                Ok(Some(deleted)) => Ok(deleted),
                Ok(None) => Err(StoreError::NotFound),
                Err(e) => Err(db_error("set_password", &e)),
            }
        })
    }

    fn delete_user(&self, id: UserId) -> StoreFuture<'_, Vec<SessionId>> {
        self.write(move |conn| {
            let result = (|| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                // The cascade does not report what it deleted, so list the sessions first.
                let sessions: Vec<SessionId> = tx
                    .prepare_cached("SELECT id FROM sessions WHERE user_id = ?1 ORDER BY id")?
                    .query_map([id], |row| row.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                let deleted = tx.prepare_cached("DELETE FROM users WHERE id = ?1")?.execute([id])?;
                if deleted == 0 {
                    return Ok(None);
                }
                tx.commit()?;
                Ok(Some(sessions))
            })();
            match result {
                Ok(Some(sessions)) => Ok(sessions),
                Ok(None) => Err(StoreError::NotFound),
                Err(e) => Err(db_error("delete_user", &e)),
            }
        })
    }

    fn create_session(&self, session: NewSession) -> StoreFuture<'_, SessionId> {
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO sessions (user_id, token_hash, persistent, created_ms, expires_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut stmt| {
                stmt.insert(params![
                    session.user_id,
                    session.token_hash,
                    session.persistent,
                    session.created_ms,
                    session.expires_ms
                ])
            })
            // The foreign key is the existence check, atomic with the insert.
            .map_err(|e| {
                if is_foreign_key_violation(&e) {
                    StoreError::NotFound
                } else {
                    db_error("create_session", &e)
                }
            })
        })
    }

    fn session_by_token<'a>(&'a self, hash: &'a TokenHash) -> StoreFuture<'a, Option<Session>> {
        // The hot path: one indexed lookup on a cached statement, on a held snapshot.
        let found = self.lookup("session_by_token", |conn| {
            conn.prepare_cached(
                "SELECT s.id, s.user_id, u.name, s.persistent, s.created_ms, s.expires_ms \
                 FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = ?1",
            )?
            .query_row([hash], session_from_row)
            .optional()
        });
        Box::pin(std::future::ready(found))
    }

    fn rotate_session<'a>(
        &'a self,
        id: SessionId,
        old: &'a TokenHash,
        new: &'a TokenHash,
        expires_ms: i64,
    ) -> StoreFuture<'a, bool> {
        let (old, new) = (*old, *new);
        self.write(move |conn| {
            // Compare-and-swap: of two refreshes presenting the same old token, only the first
            // matches `token_hash = old`.
            conn.prepare_cached(
                "UPDATE sessions SET token_hash = ?1, expires_ms = ?2 WHERE id = ?3 AND token_hash = ?4",
            )
            .and_then(|mut stmt| stmt.execute(params![new, expires_ms, id, old]))
            .map(|changed| changed == 1)
            .map_err(|e| db_error("rotate_session", &e))
        })
    }

    fn delete_session(&self, id: SessionId) -> StoreFuture<'_, bool> {
        self.write(move |conn| {
            conn.prepare_cached("DELETE FROM sessions WHERE id = ?1")
                .and_then(|mut stmt| stmt.execute([id]))
                .map(|deleted| deleted == 1)
                .map_err(|e| db_error("delete_session", &e))
        })
    }

    fn sessions_of_user(&self, user: UserId) -> StoreFuture<'_, Vec<Session>> {
        self.read_now("sessions_of_user", |conn| {
            conn.prepare_cached(
                "SELECT s.id, s.user_id, u.name, s.persistent, s.created_ms, s.expires_ms \
                 FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.user_id = ?1 ORDER BY s.id",
            )?
            .query_map([user], session_from_row)?
            .collect()
        })
    }

    fn purge_sessions(
        &self,
        non_persistent_before_ms: i64,
        persistent_before_ms: i64,
    ) -> StoreFuture<'_, usize> {
        self.write(move |conn| {
            conn.prepare_cached(
                "DELETE FROM sessions WHERE (persistent = 0 AND expires_ms < ?1) \
                 OR (persistent = 1 AND expires_ms < ?2)",
            )
            .and_then(|mut stmt| stmt.execute([non_persistent_before_ms, persistent_before_ms]))
            .map_err(|e| db_error("purge_sessions", &e))
        })
    }

    /// Returns the ids of `ids` that still exist, in the order (and with the repetitions) of
    /// `ids`. Long lists are checked in chunks, each its own snapshot; a session deleted
    /// meanwhile may still be reported and is noticed on the next call.
    fn existing_sessions(&self, mut ids: Vec<SessionId>) -> StoreFuture<'_, Vec<SessionId>> {
        if ids.is_empty() {
            return Box::pin(std::future::ready(Ok(ids)));
        }
        let found = self.read("existing_sessions", Freshness::Latest, |conn| {
            let mut stmt = conn.prepare_cached(&EXISTING_SESSIONS_SQL)?;
            let mut found = HashSet::new();
            for chunk in ids.chunks(IN_CHUNK) {
                // Pad a short chunk by repeating an id (harmless inside IN) so every chunk
                // binds exactly IN_CHUNK values and shares the one cached statement.
                let Some(&last) = chunk.last() else { continue };
                let values = chunk.iter().copied().chain(std::iter::repeat(last)).take(IN_CHUNK);
                let mut rows = stmt.query(rusqlite::params_from_iter(values))?;
                while let Some(row) = rows.next()? {
                    found.insert(row.get::<_, SessionId>(0)?);
                }
            }
            Ok(found)
        });
        Box::pin(std::future::ready(found.map(|found| {
            ids.retain(|id| found.contains(id));
            ids
        })))
    }

    fn create_api_key(&self, key: NewApiKey) -> StoreFuture<'_, ()> {
        let channels = match serde_json::to_string(&key.channels) {
            Ok(channels) => channels,
            // Unreachable for a Vec<String>, but not worth a panic.
            Err(e) => {
                tracing::error!(error = %e, "cannot encode API key channels");
                return Box::pin(std::future::ready(Err(StoreError::Database(e.to_string()))));
            }
        };
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO api_keys (key_id, name, key_hash, channels, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut stmt| stmt.execute(params![key.key_id, key.name, key.key_hash, channels, key.created_ms]))
            .map(|_| ())
            .map_err(|e| if is_unique_violation(&e) { StoreError::Conflict } else { db_error("create_api_key", &e) })
        })
    }

    fn api_key_by_hash<'a>(&'a self, hash: &'a TokenHash) -> StoreFuture<'a, Option<ApiKey>> {
        // Latest, not a held snapshot: a key revoked with the CLI is refused from the next
        // request on (publishing is not hot enough on this path for the difference to matter).
        self.read_now("api_key_by_hash", |conn| {
            conn.prepare_cached(
                "SELECT key_id, name, channels, created_ms FROM api_keys WHERE key_hash = ?1",
            )?
            .query_row([hash], api_key_from_row)
            .optional()
        })
    }

    fn list_api_keys(&self) -> StoreFuture<'_, Vec<ApiKey>> {
        self.read_now("list_api_keys", |conn| {
            // `rowid` (insertion order) breaks ties between keys created in one millisecond.
            conn.prepare_cached(
                "SELECT key_id, name, channels, created_ms FROM api_keys ORDER BY created_ms, rowid",
            )?
            .query_map([], api_key_from_row)?
            .collect()
        })
    }

    fn revoke_api_key<'a>(&'a self, key_id: &'a str) -> StoreFuture<'a, bool> {
        let key_id = key_id.to_owned();
        self.write(move |conn| {
            conn.prepare_cached("DELETE FROM api_keys WHERE key_id = ?1")
                .and_then(|mut stmt| stmt.execute([key_id]))
                .map(|deleted| deleted == 1)
                .map_err(|e| db_error("revoke_api_key", &e))
        })
    }

    fn create_scope(
        &self,
        key: &str,
        root_uuid: [u8; 16],
        snapshot: Vec<u8>,
    ) -> StoreFuture<'_, StoredScope> {
        let key = key.to_owned();
        Box::pin(async move {
            let snapshot = Arc::new(snapshot);
            loop {
                let job_key = key.clone();
                let job_snapshot = Arc::clone(&snapshot);
                // One statement, atomic on its own: the unique key decides a race, so of
                // concurrent creations (in any process) one inserts and the others do nothing.
                let inserted = self
                    .write(move |conn| {
                        conn.prepare_cached(
                            "INSERT INTO scopes (key, root_uuid, snapshot, snapshot_seq) \
                             VALUES (?1, ?2, ?3, 0) ON CONFLICT (key) DO NOTHING",
                        )
                        .and_then(|mut stmt| stmt.execute(params![job_key, root_uuid, *job_snapshot]))
                        .map(|inserted| inserted == 1)
                        .map_err(|e| db_error("create_scope", &e))
                    })
                    .await?;
                if inserted {
                    let snapshot = Arc::unwrap_or_clone(snapshot);
                    return Ok(StoredScope { root_uuid, snapshot, snapshot_seq: 0, log: Vec::new() });
                }
                // Someone else's scope: loaded on a reader, not inside the write, so a long log
                // does not hold up the writer (and every other scope's appends) meanwhile.
                let existing = self.read("create_scope", Freshness::Latest, |conn| {
                    in_one_snapshot(conn, |conn| load_scope_in(conn, &key))
                })?;
                if let Some(scope) = existing {
                    return Ok(scope);
                }
                // Deleted between the insert and the load: try to create it again.
            }
        })
    }

    fn load_scope<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<StoredScope>> {
        // Latest: a scope is loaded when it is not in memory, and whatever was acknowledged
        // before (by this process or another) must be in it.
        self.read_now("load_scope", |conn| in_one_snapshot(conn, |conn| load_scope_in(conn, key)))
    }

    fn append_changesets<'a>(
        &'a self,
        key: &'a str,
        entries: Vec<(ScopeSeq, Vec<u8>)>,
    ) -> StoreFuture<'a, ()> {
        if entries.is_empty() {
            return Box::pin(std::future::ready(Ok(())));
        }
        let key = key.to_owned();
        self.write(move |conn| {
            let result = (|| {
                // IMMEDIATE: the last seq read below is still the last one when the batch is
                // inserted, even if another process appends to the same scope.
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let Some(tail) = scope_tail(&tx, &key)? else { return Ok(Err(StoreError::NotFound)) };
                // Checked before the first insert, so a refused batch writes nothing (dropping
                // `tx` rolls back an empty transaction). The primary key would catch a repeat
                // too, but not a gap.
                if !continues(tail.last_seq, entries.iter().map(|(seq, _)| *seq)) {
                    return Ok(Err(StoreError::Conflict));
                }
                {
                    // The hot loop: one cached statement, rebound per row.
                    let mut insert = tx.prepare_cached(
                        "INSERT INTO scope_log (scope_id, seq, changeset) VALUES (?1, ?2, ?3)",
                    )?;
                    for (seq, changeset) in &entries {
                        insert.execute(params![tail.id, seq_to_sql(*seq)?, changeset])?;
                    }
                }
                // With synchronous=FULL the commit returns after the WAL is synced: the batch
                // is durable before the future resolves.
                tx.commit()?;
                Ok(Ok(()))
            })();
            refusable("append_changesets", result)
        })
    }

    fn save_snapshot<'a>(&'a self, key: &'a str, seq: ScopeSeq, snapshot: Vec<u8>) -> StoreFuture<'a, ()> {
        let key = key.to_owned();
        self.write(move |conn| {
            let result = (|| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let Some(tail) = scope_tail(&tx, &key)? else { return Ok(Err(StoreError::NotFound)) };
                if seq < tail.snapshot_seq || seq > tail.last_seq {
                    return Ok(Err(StoreError::Conflict));
                }
                tx.prepare_cached("UPDATE scopes SET snapshot = ?1, snapshot_seq = ?2 WHERE id = ?3")?
                    .execute(params![snapshot, seq_to_sql(seq)?, tail.id])?;
                // One transaction with the update: a load sees the old snapshot with the whole
                // log, or the new one with what follows it, never a mix.
                tx.prepare_cached("DELETE FROM scope_log WHERE scope_id = ?1 AND seq <= ?2")?
                    .execute(params![tail.id, seq_to_sql(seq)?])?;
                tx.commit()?;
                Ok(Ok(()))
            })();
            refusable("save_snapshot", result)
        })
    }

    fn delete_scope<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool> {
        let key = key.to_owned();
        self.write(move |conn| {
            let result = (|| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let Some(id) = tx
                    .prepare_cached("SELECT id FROM scopes WHERE key = ?1")?
                    .query_row([&key], |row| row.get::<_, i64>(0))
                    .optional()?
                else {
                    return Ok(false);
                };
                // The log has no foreign key (see the schema): it goes explicitly, with the scope.
                tx.prepare_cached("DELETE FROM scope_log WHERE scope_id = ?1")?.execute([id])?;
                tx.prepare_cached("DELETE FROM scopes WHERE id = ?1")?.execute([id])?;
                tx.commit()?;
                Ok(true)
            })();
            result.map_err(|e| db_error("delete_scope", &e))
        })
    }

    fn scope_keys(&self) -> StoreFuture<'_, Vec<String>> {
        self.read_now("scope_keys", |conn| {
            conn.prepare_cached("SELECT key FROM scopes ORDER BY key")?
                .query_map([], |row| row.get(0))?
                .collect()
        })
    }

    fn append_history(&self, records: Vec<HistoryRecord>, keep: Vec<HistoryKeep>) -> StoreFuture<'_, ()> {
        if records.is_empty() && keep.is_empty() {
            return Box::pin(std::future::ready(Ok(())));
        }
        // Checked before queueing: a refused batch never reaches the writer.
        if let Err(problem) = check_history_batch(&records, &keep) {
            tracing::error!(problem, "refused an invalid history batch");
            return Box::pin(std::future::ready(Err(StoreError::Invalid(problem))));
        }
        self.write(move |conn| {
            let result = (|| {
                // IMMEDIATE: the epochs and tops read below stay current until the commit,
                // even if another process writes history to the same file.
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let mut channels: HashMap<&str, HistoryTail> = HashMap::new();
                {
                    // The hot loop: cached statements, rebound per row.
                    let mut upsert = tx.prepare_cached(
                        "INSERT INTO history_log (channel_id, offset, at_ms, payload) VALUES (?1, ?2, ?3, ?4) \
                         ON CONFLICT (channel_id, offset) DO UPDATE SET at_ms = excluded.at_ms, \
                         payload = excluded.payload",
                    )?;
                    for record in &records {
                        let tail = match channels.entry(record.channel.as_str()) {
                            Entry::Occupied(entry) => entry.into_mut(),
                            Entry::Vacant(entry) => entry.insert(history_tail(&tx, &record.channel)?),
                        };
                        if tail.epoch != record.epoch {
                            // A reset: nothing of the old epoch survives it.
                            tx.prepare_cached("DELETE FROM history_log WHERE channel_id = ?1")?
                                .execute([tail.id])?;
                            tail.epoch.clone_from(&record.epoch);
                            tail.top = 0;
                        }
                        // Within the batch, checked to fit an i64 (check_history_batch).
                        let (offset, at_ms) = (seq_to_sql(record.offset)?, seq_to_sql(record.at_ms)?);
                        upsert.execute(params![tail.id, offset, at_ms, record.payload])?;
                        tail.top = tail.top.max(record.offset);
                    }
                }
                // One update per channel, not per record.
                for tail in channels.values() {
                    tx.prepare_cached("UPDATE history_channels SET epoch = ?1, top = ?2 WHERE id = ?3")?
                        .execute(params![tail.epoch, seq_to_sql(tail.top)?, tail.id])?;
                }
                for keep in &keep {
                    let channel = match channels.get(keep.channel.as_str()) {
                        Some(tail) => Some((tail.id, tail.top)),
                        None => history_channel(&tx, &keep.channel)?,
                    };
                    if let Some((id, top)) = channel {
                        trim_history(&tx, id, top, keep)?;
                    }
                }
                // With synchronous=FULL the commit returns after the WAL is synced.
                tx.commit()
            })();
            result.map_err(|e| db_error("append_history", &e))
        })
    }

    fn load_histories(&self) -> StoreFuture<'_, Vec<StoredHistory>> {
        // Latest and on one snapshot: everything acknowledged before, and never a channel
        // half-way through a batch.
        self.read_now("load_histories", |conn| in_one_snapshot(conn, load_histories_in))
    }

    fn delete_history<'a>(&'a self, channel: &'a str) -> StoreFuture<'a, bool> {
        let channel = channel.to_owned();
        self.write(move |conn| {
            let result = (|| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let Some((id, _)) = history_channel(&tx, &channel)? else { return Ok(false) };
                // No foreign key (see the schema): the rows go explicitly, with the position.
                tx.prepare_cached("DELETE FROM history_log WHERE channel_id = ?1")?.execute([id])?;
                tx.prepare_cached("DELETE FROM history_channels WHERE id = ?1")?.execute([id])?;
                tx.commit()?;
                Ok(true)
            })();
            result.map_err(|e| db_error("delete_history", &e))
        })
    }

    fn mark_started(&self) -> StoreFuture<'_, bool> {
        self.write(|conn| {
            let result = (|| {
                // IMMEDIATE: read and set as one step, even against another process.
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let previous: Option<String> = tx
                    .prepare_cached("SELECT value FROM lifecycle WHERE key = ?1")?
                    .query_row([LIFECYCLE_SERVER], |row| row.get(0))
                    .optional()?;
                set_lifecycle(&tx, LIFECYCLE_RUNNING)?;
                tx.commit()?;
                // Anything but an explicit clean mark (say, a value some newer binary wrote)
                // counts as unclean: the safe side.
                Ok(previous.is_none_or(|value| value == LIFECYCLE_CLEAN))
            })();
            result.map_err(|e| db_error("mark_started", &e))
        })
    }

    fn mark_clean_shutdown(&self) -> StoreFuture<'_, ()> {
        self.write(|conn| {
            set_lifecycle(conn, LIFECYCLE_CLEAN).map_err(|e| db_error("mark_clean_shutdown", &e))
        })
    }
}

/// Logs a database failure and turns it into [`StoreError::Database`].
///
/// SQLite's messages name tables and columns, never bound values, so no hash can leak here.
fn db_error(op: &'static str, e: &rusqlite::Error) -> StoreError {
    tracing::error!(op, error = %e, "store operation failed");
    StoreError::Database(e.to_string())
}

/// An IO failure while preparing the database file, as [`StoreError::Database`].
fn io_error(what: &str, path: &Path, e: &std::io::Error) -> StoreError {
    tracing::error!(path = %path.display(), error = %e, "{what}");
    StoreError::Database(format!("{what} {}: {e}", path.display()))
}

/// The extended result code of a failed SQLite call.
fn extended_code(e: &rusqlite::Error) -> Option<i32> {
    e.sqlite_error().map(|e| e.extended_code)
}

/// A UNIQUE index or PRIMARY KEY (a text primary key is a unique index too) was violated.
fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(extended_code(e), Some(ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY))
}

/// A FOREIGN KEY constraint was violated.
fn is_foreign_key_violation(e: &rusqlite::Error) -> bool {
    extended_code(e) == Some(ffi::SQLITE_CONSTRAINT_FOREIGNKEY)
}

/// Creates the parent directory and the file itself with owner-only permissions, before
/// SQLite touches them.
///
/// Creating the file ourselves (SQLite accepts an empty file as a new database) means it never
/// exists with a wider mode, not even briefly. SQLite gives the `-wal` and `-shm` files the
/// mode of the main file.
fn prepare_file(path: &Path) -> Result<(), StoreError> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).map_err(|e| io_error("cannot create directory", dir, &e))?;
    }

    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(path).map_err(|e| io_error("cannot open", path, &e))?;

    // An existing file keeps its old mode through `open`: tighten it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| io_error("cannot set permissions of", path, &e))?;
    }
    drop(file);
    Ok(())
}

/// Opens the read-write connection and applies its pragmas.
///
/// `journal_mode` is left alone here: it is switched to WAL by [`migrate`], after the schema
/// version has been checked, so a file from a newer Tether is not modified at all.
fn open_writer(path: &Path) -> rusqlite::Result<Connection> {
    // No SQLITE_OPEN_URI: the path is a file name, even if it starts with `file:`.
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // FULL: the WAL is synced at every commit, so a write whose future resolved survives a
    // power cut (NORMAL, the usual WAL setting, can lose the last commits).
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

/// Opens a read-only connection for the reader pool.
fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // In WAL mode readers wait only in rare cases (WAL recovery after a crash).
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // The bundled SQLite is built with STAT4, under which a cached statement whose
    // parameters could change the plan is re-prepared on every run; that was half the cost
    // of a session-token lookup. The query planner stability guarantee keeps one plan.
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(conn)
}

/// Reads `PRAGMA user_version`.
fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

/// Switches to WAL and applies the missing migrations, one transaction each. Returns the
/// resulting schema version.
fn migrate(conn: &mut Connection) -> Result<i64, StoreError> {
    let too_new = |found| {
        tracing::error!(found, supported = SUPPORTED_VERSION, "database schema is newer than this binary");
        StoreError::TooNew { found, supported: SUPPORTED_VERSION }
    };
    let found = user_version(conn).map_err(|e| db_error("open", &e))?;
    if found > SUPPORTED_VERSION {
        return Err(too_new(found));
    }

    // The mode is persistent in the file; the pragma returns the mode actually in effect,
    // which stays the old one where WAL is impossible (e.g. some network file systems).
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(|e| db_error("open", &e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::error!(mode, "cannot enable the WAL journal mode");
        return Err(StoreError::Database(format!("cannot enable the WAL journal mode (still {mode})")));
    }

    loop {
        // IMMEDIATE, and the version read again inside the transaction: if another process
        // opens the same new file at the same moment, each migration still runs exactly once.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| db_error("migrate", &e))?;
        let version = user_version(&tx).map_err(|e| db_error("migrate", &e))?;
        let Some(sql) = usize::try_from(version).ok().and_then(|v| MIGRATIONS.get(v)) else {
            // Up to date (or upgraded meanwhile by a newer binary, or a negative version that
            // no Tether writes). Dropping `tx` rolls back the empty transaction.
            return match version {
                SUPPORTED_VERSION => Ok(version),
                v if v > SUPPORTED_VERSION => Err(too_new(v)),
                v => Err(StoreError::Database(format!("invalid database schema version {v}"))),
            };
        };
        let next = version + 1;
        tx.execute_batch(sql)
            .and_then(|()| tx.pragma_update(None, "user_version", next))
            .and_then(|()| tx.commit())
            .map_err(|e| db_error("migrate", &e))?;
        tracing::info!(version = next, "database schema migrated");
    }
}

fn user_from_row(row: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(0)?,
        name: row.get(1)?,
        email: row.get(2)?,
        password_hash: row.get(3)?,
        created_ms: row.get(4)?,
    })
}

/// Expects `id, user_id, user_name, persistent, created_ms, expires_ms`.
fn session_from_row(row: &Row<'_>) -> rusqlite::Result<Session> {
    Ok(Session {
        id: row.get(0)?,
        user_id: row.get(1)?,
        user_name: row.get(2)?,
        persistent: row.get(3)?,
        created_ms: row.get(4)?,
        expires_ms: row.get(5)?,
    })
}

/// Expects `key_id, name, channels, created_ms`.
fn api_key_from_row(row: &Row<'_>) -> rusqlite::Result<ApiKey> {
    let channels: String = row.get(2)?;
    let channels = serde_json::from_str(&channels)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(2, Type::Text, Box::new(e)))?;
    Ok(ApiKey { key_id: row.get(0)?, name: row.get(1)?, channels, created_ms: row.get(3)? })
}

/// The result of a write that may be refused (`Ok(Err(..))`, its transaction rolled back) as
/// the store's result; a database failure is logged as the failure of `op`.
fn refusable<T>(op: &'static str, result: rusqlite::Result<Result<T, StoreError>>) -> Result<T, StoreError> {
    result.map_err(|e| db_error(op, &e))?
}

/// Runs the reads of `f` on one snapshot. A pooled reader in autocommit mode makes each
/// statement its own read transaction, and a write committing between two of them (a new
/// snapshot and its trimmed log) would make them disagree.
fn in_one_snapshot<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    if !conn.is_autocommit() {
        // Already inside a read transaction that `read_on` just began for this read.
        return f(conn);
    }
    let tx = conn.unchecked_transaction()?;
    let value = f(&tx)?;
    tx.commit()?;
    Ok(value)
}

/// Where a scope's log stands, read inside a write transaction.
#[derive(Debug, Clone, Copy)]
struct ScopeTail {
    id: i64,
    snapshot_seq: ScopeSeq,
    /// The highest logged seq, or `snapshot_seq` if the log is empty.
    last_seq: ScopeSeq,
}

/// The [`ScopeTail`] of scope `key`, if it exists.
fn scope_tail(conn: &Connection, key: &str) -> rusqlite::Result<Option<ScopeTail>> {
    // `max(seq)` over the primary key prefix is a single seek to the end of the scope's range,
    // however long its log is: no counter in `scopes` to keep in step (updating the row would
    // also rewrite the snapshot blob stored in it).
    conn.prepare_cached(
        "SELECT id, snapshot_seq, \
         coalesce((SELECT max(seq) FROM scope_log WHERE scope_id = scopes.id), snapshot_seq) \
         FROM scopes WHERE key = ?1",
    )?
    .query_row([key], |row| {
        Ok(ScopeTail {
            id: row.get(0)?,
            snapshot_seq: seq_from_row(row, 1)?,
            last_seq: seq_from_row(row, 2)?,
        })
    })
    .optional()
}

/// A sequence number as SQLite's (signed) integer; above `i64::MAX` it cannot be stored.
fn seq_to_sql(seq: ScopeSeq) -> rusqlite::Result<i64> {
    i64::try_from(seq).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

/// Column `idx` of `row` as a sequence number (never negative in a file this store wrote).
fn seq_from_row(row: &Row<'_>, idx: usize) -> rusqlite::Result<ScopeSeq> {
    let value: i64 = row.get(idx)?;
    ScopeSeq::try_from(value).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(idx, value))
}

/// Whether `seqs` (not empty) are `last + 1, last + 2, ...`.
fn continues(last: ScopeSeq, seqs: impl IntoIterator<Item = ScopeSeq>) -> bool {
    let mut previous = last;
    seqs.into_iter().all(|seq| {
        let next = previous.checked_add(1) == Some(seq);
        previous = seq;
        next
    })
}

/// Scope `key` with its whole log, all read on `conn`'s current snapshot.
fn load_scope_in(conn: &Connection, key: &str) -> rusqlite::Result<Option<StoredScope>> {
    let Some((id, root_uuid, snapshot, snapshot_seq)) = conn
        .prepare_cached("SELECT id, root_uuid, snapshot, snapshot_seq FROM scopes WHERE key = ?1")?
        .query_row([key], |row| Ok((row.get::<_, i64>(0)?, row.get(1)?, row.get(2)?, seq_from_row(row, 3)?)))
        .optional()?
    else {
        return Ok(None);
    };
    let mut stmt = conn.prepare_cached(
        "SELECT seq, changeset FROM scope_log WHERE scope_id = ?1 AND seq > ?2 ORDER BY seq",
    )?;
    let mut rows = stmt.query(params![id, seq_to_sql(snapshot_seq)?])?;
    let mut log: Vec<(ScopeSeq, Vec<u8>)> = Vec::new();
    while let Some(row) = rows.next()? {
        let seq = seq_from_row(row, 0)?;
        // Appends only ever continue the log, so a gap means a damaged file. Refusing it beats
        // replaying a changeset onto a state it was not made for.
        if seq != snapshot_seq + 1 + log.len() as u64 {
            let gap = format!("scope {key:?}: log entry {seq} does not continue the sequence");
            return Err(rusqlite::Error::FromSqlConversionFailure(0, Type::Integer, gap.into()));
        }
        log.push((seq, row.get(1)?));
    }
    Ok(Some(StoredScope { root_uuid, snapshot, snapshot_seq, log }))
}

/// Why a history batch breaks the rules of [`Store::append_history`], if it does.
fn check_history_batch(records: &[HistoryRecord], keep: &[HistoryKeep]) -> Result<(), String> {
    const MAX: u64 = i64::MAX as u64;
    // Per channel: the epoch and offset of its previous record in the batch.
    let mut last: HashMap<&str, (&str, u64)> = HashMap::new();
    for (i, r) in records.iter().enumerate() {
        if r.channel.is_empty() {
            return Err(format!("record {i}: empty channel name"));
        }
        if r.offset == 0 || r.offset > MAX {
            return Err(format!("record {i} ({:?}): offset {} out of range", r.channel, r.offset));
        }
        if r.at_ms > MAX {
            return Err(format!("record {i} ({:?}): at_ms {} out of range", r.channel, r.at_ms));
        }
        if let Some((epoch, offset)) = last.insert(&r.channel, (&r.epoch, r.offset))
            && epoch == r.epoch
            && offset >= r.offset
        {
            return Err(format!("record {i} ({:?}): offset {} after {offset}", r.channel, r.offset));
        }
    }
    if let Some(i) = keep.iter().position(|k| k.channel.is_empty()) {
        return Err(format!("keep {i}: empty channel name"));
    }
    Ok(())
}

/// A channel's position, as read and then updated inside an append.
#[derive(Debug)]
struct HistoryTail {
    id: i64,
    epoch: String,
    top: u64,
}

/// The [`HistoryTail`] of `channel`, whose position row is created if there is none: with
/// the empty epoch and top 0, so the first record either resets it to the record's epoch or
/// (an empty epoch) simply continues it; the caller writes the final epoch and top.
fn history_tail(conn: &Connection, channel: &str) -> rusqlite::Result<HistoryTail> {
    let found = conn
        .prepare_cached("SELECT id, epoch, top FROM history_channels WHERE channel = ?1")?
        .query_row([channel], |row| {
            Ok(HistoryTail { id: row.get(0)?, epoch: row.get(1)?, top: seq_from_row(row, 2)? })
        })
        .optional()?;
    if let Some(tail) = found {
        return Ok(tail);
    }
    let id = conn
        .prepare_cached("INSERT INTO history_channels (channel, epoch, top) VALUES (?1, '', 0)")?
        .insert([channel])?;
    Ok(HistoryTail { id, epoch: String::new(), top: 0 })
}

/// The row id and top offset of `channel` in `history_channels`, if it has a row.
fn history_channel(conn: &Connection, channel: &str) -> rusqlite::Result<Option<(i64, u64)>> {
    conn.prepare_cached("SELECT id, top FROM history_channels WHERE channel = ?1")?
        .query_row([channel], |row| Ok((row.get(0)?, seq_from_row(row, 1)?)))
        .optional()
}

/// Applies `keep` to the rows of channel `id`, whose top offset is `top`. Both limits delete
/// a prefix of the channel's range (its oldest rows), with work proportional to what they
/// delete, however many rows are kept.
fn trim_history(conn: &Connection, id: i64, top: u64, keep: &HistoryKeep) -> rusqlite::Result<()> {
    // Count: the window of the newest `max_count` offsets, one range delete. Counting rows
    // instead would step over every kept row (and its payload) on every append.
    if let Some(cut) = top.checked_sub(keep.max_count).filter(|&cut| cut > 0) {
        conn.prepare_cached("DELETE FROM history_log WHERE channel_id = ?1 AND offset <= ?2")?
            .execute(params![id, seq_to_sql(cut)?])?;
    }

    if keep.min_at_ms == 0 {
        return Ok(());
    }
    // Age: everything before the oldest row young enough goes. The scan stops there, so it
    // reads about as many rows as it deletes (plus one).
    let first_kept: Option<i64> = match i64::try_from(keep.min_at_ms) {
        Ok(min_at_ms) => conn
            .prepare_cached(
                "SELECT offset FROM history_log WHERE channel_id = ?1 AND at_ms >= ?2 ORDER BY offset LIMIT 1",
            )?
            .query_row([id, min_at_ms], |row| row.get(0))
            .optional()?,
        // Later than any storable time: every row is older.
        Err(_) => None,
    };
    match first_kept {
        Some(first) => conn
            .prepare_cached("DELETE FROM history_log WHERE channel_id = ?1 AND offset < ?2")?
            .execute([id, first])?,
        None => conn.prepare_cached("DELETE FROM history_log WHERE channel_id = ?1")?.execute([id])?,
    };
    Ok(())
}

/// Sets the server's lifecycle flag.
fn set_lifecycle(conn: &Connection, value: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO lifecycle (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute([LIFECYCLE_SERVER, value])?;
    Ok(())
}

/// Every channel's stored history, all read on `conn`'s current snapshot.
fn load_histories_in(conn: &Connection) -> rusqlite::Result<Vec<StoredHistory>> {
    let channels: Vec<(i64, String, String, u64)> = conn
        .prepare_cached("SELECT id, channel, epoch, top FROM history_channels ORDER BY channel")?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, seq_from_row(row, 3)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut rows = conn.prepare_cached(
        "SELECT offset, at_ms, payload FROM history_log WHERE channel_id = ?1 ORDER BY offset",
    )?;
    channels
        .into_iter()
        .map(|(id, channel, epoch, top)| {
            let entries = rows
                .query_map([id], |row| {
                    Ok(HistoryRecord {
                        channel: channel.clone(),
                        epoch: epoch.clone(),
                        offset: seq_from_row(row, 0)?,
                        at_ms: seq_from_row(row, 1)?,
                        payload: row.get(2)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(StoredHistory { channel, epoch, top, entries })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let name = format!(
                "tether-store-test-{}-{nanos}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            Self(std::env::temp_dir().join(name))
        }

        fn db(&self) -> PathBuf {
            self.0.join(FILE_NAME)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn new_user(name: &str) -> NewUser {
        NewUser {
            name: name.to_owned(),
            email: Some(format!("{name}@example.com")),
            password_hash: format!("$argon2id$v=19$hash-of-{name}"),
            created_ms: 1_000,
        }
    }

    fn hash(n: u8) -> TokenHash {
        [n; 32]
    }

    fn new_session(user_id: UserId, token: u8, persistent: bool, expires_ms: i64) -> NewSession {
        NewSession { user_id, token_hash: hash(token), persistent, created_ms: 1_000, expires_ms }
    }

    fn new_key(key_id: &str, token: u8, channels: &[&str], created_ms: i64) -> NewApiKey {
        NewApiKey {
            key_id: key_id.to_owned(),
            name: format!("label {key_id}"),
            key_hash: hash(token),
            channels: channels.iter().map(|c| (*c).to_owned()).collect(),
            created_ms,
        }
    }

    fn raw_count(path: &Path, table: &str) -> i64 {
        let conn = Connection::open(path).unwrap();
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| row.get(0)).unwrap()
    }

    #[tokio::test]
    async fn users_create_and_lookup() {
        let dir = TempDir::new();
        let store = SqliteStore::open_in_dir(&dir.0).unwrap();
        assert_eq!(store.path(), dir.db());

        let alice = store.create_user(new_user("Alice")).await.unwrap();
        let bob = store.create_user(NewUser { email: None, ..new_user("bob") }).await.unwrap();
        assert_ne!(alice, bob);

        let found = store.user_by_name("aLiCe").await.unwrap().unwrap();
        assert_eq!(found.id, alice);
        assert_eq!(found.name, "Alice");
        assert_eq!(found.email.as_deref(), Some("Alice@example.com"));
        assert_eq!(found.password_hash, "$argon2id$v=19$hash-of-Alice");
        assert_eq!(found.created_ms, 1_000);
        assert_eq!(store.user_by_id(alice).await.unwrap(), Some(found));
        assert_eq!(store.user_by_id(bob).await.unwrap().unwrap().email, None);
        assert_eq!(store.user_by_name("carol").await.unwrap(), None);
        assert_eq!(store.user_by_id(9_999).await.unwrap(), None);

        assert!(matches!(store.create_user(new_user("ALICE")).await, Err(StoreError::Conflict)));
        let names: Vec<String> = store.list_users().await.unwrap().into_iter().map(|u| u.name).collect();
        assert_eq!(names, ["Alice", "bob"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 8)]
    async fn concurrent_registrations_of_one_name_yield_one_user() {
        let dir = TempDir::new();
        let store = Arc::new(SqliteStore::open_in_dir(&dir.0).unwrap());
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let store = Arc::clone(&store);
                // Several spellings of one name: they must collide case-insensitively.
                let name = ["racer", "RACER", "Racer"][i % 3];
                tokio::spawn(async move { store.create_user(new_user(name)).await })
            })
            .collect();
        let (mut ok, mut conflict) = (0, 0);
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => ok += 1,
                Err(StoreError::Conflict) => conflict += 1,
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        assert_eq!((ok, conflict), (1, 63));
        assert_eq!(raw_count(&dir.db(), "users"), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 8)]
    async fn two_stores_on_one_file_race_for_a_name() {
        // Like the server and the CLI: two writers, serialized only by SQLite's file lock.
        let dir = TempDir::new();
        let stores = [
            Arc::new(SqliteStore::open_in_dir(&dir.0).unwrap()),
            Arc::new(SqliteStore::open_in_dir(&dir.0).unwrap()),
        ];
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let store = Arc::clone(&stores[i % 2]);
                tokio::spawn(async move { store.create_user(new_user("shared")).await })
            })
            .collect();
        let mut ok = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => ok += 1,
                Err(StoreError::Conflict) => {}
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        assert_eq!(ok, 1);
        assert_eq!(raw_count(&dir.db(), "users"), 1);
    }

    /// Options that make every reused snapshot outlive any test.
    fn held_snapshots() -> StoreOptions {
        StoreOptions { max_snapshot_age: Duration::from_secs(3_600) }
    }

    #[tokio::test]
    async fn sessions_lookup_and_rotate() {
        // With held snapshots too: this store's own writes are always read back at once.
        for options in [StoreOptions::default(), held_snapshots()] {
            sessions_lookup_and_rotate_with(options).await;
        }
    }

    async fn sessions_lookup_and_rotate_with(options: StoreOptions) {
        let dir = TempDir::new();
        let store = SqliteStore::open_with(&dir.db(), options).unwrap();
        let user = store.create_user(new_user("Dora")).await.unwrap();
        let id = store.create_session(new_session(user, 1, true, 5_000)).await.unwrap();

        let session = store.session_by_token(&hash(1)).await.unwrap().unwrap();
        assert_eq!(
            session,
            Session {
                id,
                user_id: user,
                user_name: "Dora".to_owned(),
                persistent: true,
                created_ms: 1_000,
                expires_ms: 5_000
            }
        );
        assert_eq!(store.session_by_token(&hash(9)).await.unwrap(), None);

        assert!(store.rotate_session(id, &hash(1), &hash(2), 8_000).await.unwrap());
        // A second refresh presenting the same (now stale) token loses.
        assert!(!store.rotate_session(id, &hash(1), &hash(3), 9_000).await.unwrap());
        assert_eq!(store.session_by_token(&hash(1)).await.unwrap(), None);
        assert_eq!(store.session_by_token(&hash(3)).await.unwrap(), None);
        let rotated = store.session_by_token(&hash(2)).await.unwrap().unwrap();
        assert_eq!((rotated.id, rotated.expires_ms), (id, 8_000));
        // Unknown session.
        assert!(!store.rotate_session(id + 100, &hash(2), &hash(4), 9_000).await.unwrap());

        assert_eq!(store.sessions_of_user(user).await.unwrap(), [rotated]);
        assert!(store.delete_session(id).await.unwrap());
        assert!(!store.delete_session(id).await.unwrap());
        assert_eq!(store.session_by_token(&hash(2)).await.unwrap(), None);
        assert!(store.sessions_of_user(user).await.unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn held_snapshot_sees_other_processes_late_but_within_its_age() {
        let dir = TempDir::new();
        let age = Duration::from_millis(500);
        let server = SqliteStore::open_with(&dir.db(), StoreOptions { max_snapshot_age: age }).unwrap();
        // Another process, as the CLI: strict options, its own connections and writer.
        let cli = SqliteStore::open(&dir.db()).unwrap();
        let user = cli.create_user(new_user("Erin")).await.unwrap();
        let first = cli.create_session(new_session(user, 1, false, 5_000)).await.unwrap();
        assert_eq!(server.session_by_token(&hash(1)).await.unwrap().map(|s| s.id), Some(first));

        // Created elsewhere: the miss on the held snapshot is retried on a fresh one.
        let second = cli.create_session(new_session(user, 2, false, 5_000)).await.unwrap();
        assert_eq!(server.session_by_token(&hash(2)).await.unwrap().map(|s| s.id), Some(second));

        // Removed elsewhere: still found on the held snapshot (this is the saving)...
        assert!(cli.delete_session(first).await.unwrap());
        tokio::time::advance(age - Duration::from_millis(1)).await;
        assert!(server.session_by_token(&hash(1)).await.unwrap().is_some());
        // ...until the snapshot is `max_snapshot_age` old.
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(server.session_by_token(&hash(1)).await.unwrap(), None);

        // Reads other than session lookups are never served from a held snapshot.
        assert!(server.session_by_token(&hash(2)).await.unwrap().is_some());
        assert!(cli.delete_session(second).await.unwrap());
        assert!(server.sessions_of_user(user).await.unwrap().is_empty());
        assert!(server.existing_sessions(vec![first, second]).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_reader_busy_during_a_write_does_not_serve_its_old_snapshot() {
        let dir = TempDir::new();
        let store = SqliteStore::open_with(&dir.db(), held_snapshots()).unwrap();
        let user = store.create_user(new_user("Gus")).await.unwrap();
        let id = store.create_session(new_session(user, 1, false, 5_000)).await.unwrap();
        assert!(store.session_by_token(&hash(1)).await.unwrap().is_some());
        // The reader holding that snapshot is lent out (mid-lookup on another task) while
        // the session is deleted, so the writer's sweep of idle readers misses it.
        let busy = store.shared.readers.lock().pop().unwrap();
        assert!(busy.snapshot.is_some());
        assert!(store.delete_session(id).await.unwrap());
        store.shared.readers.lock().clear();
        store.shared.readers.lock().push(busy);
        // Back in the pool with a pre-delete snapshot: the generation check refuses it.
        assert_eq!(store.session_by_token(&hash(1)).await.unwrap(), None);
    }

    #[tokio::test]
    async fn writes_end_idle_snapshots_so_the_wal_can_be_checkpointed() {
        let dir = TempDir::new();
        let store = SqliteStore::open_with(&dir.db(), held_snapshots()).unwrap();
        let user = store.create_user(new_user("Finn")).await.unwrap();
        store.create_session(new_session(user, 1, false, 5_000)).await.unwrap();
        // Two pooled readers now hold snapshots (a second one is opened while the first is
        // lent out, as under concurrent lookups).
        let held = store.shared.readers.lock().pop().unwrap();
        assert!(store.session_by_token(&hash(1)).await.unwrap().is_some());
        store.shared.readers.lock().push(held);
        assert!(store.session_by_token(&hash(1)).await.unwrap().is_some());
        let holding = || store.shared.readers.lock().iter().filter(|r| !r.conn.is_autocommit()).count();
        assert!(holding() >= 1);

        store.create_session(new_session(user, 2, false, 5_000)).await.unwrap();
        // The sweep runs on the writer thread right after the reply; wait for it.
        let deadline = std::time::SystemTime::now() + Duration::from_secs(10);
        while holding() > 0 {
            assert!(std::time::SystemTime::now() < deadline, "idle snapshots were not ended");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // No reader pins old frames: a truncating checkpoint completes (busy = 0).
        let raw = Connection::open(dir.db()).unwrap();
        let (busy, log, done): (i64, i64, i64) = raw
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap();
        assert_eq!((busy, log, done), (0, 0, 0));
        assert!(store.session_by_token(&hash(2)).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn session_for_unknown_user_is_not_found() {
        let dir = TempDir::new();
        let store = SqliteStore::open_in_dir(&dir.0).unwrap();
        assert!(matches!(
            store.create_session(new_session(42, 1, false, 5_000)).await,
            Err(StoreError::NotFound)
        ));
        assert_eq!(raw_count(&dir.db(), "sessions"), 0);
    }

    #[tokio::test]
    async fn set_password_keeps_one_session() {
        let dir = TempDir::new();
        let store = SqliteStore::open_in_dir(&dir.0).unwrap();
        let user = store.create_user(new_user("erin")).await.unwrap();
        let other = store.create_user(new_user("frank")).await.unwrap();
        let s1 = store.create_session(new_session(user, 1, false, 5_000)).await.unwrap();
        let s2 = store.create_session(new_session(user, 2, false, 5_000)).await.unwrap();
        let s3 = store.create_session(new_session(user, 3, true, 5_000)).await.unwrap();
        let theirs = store.create_session(new_session(other, 4, false, 5_000)).await.unwrap();

        let deleted = store.set_password(user, "new-hash".to_owned(), Some(s2)).await.unwrap();
        assert_eq!(deleted, [s1, s3]);
        assert_eq!(store.user_by_id(user).await.unwrap().unwrap().password_hash, "new-hash");
        let left: Vec<SessionId> = store.sessions_of_user(user).await.unwrap().iter().map(|s| s.id).collect();
        assert_eq!(left, [s2]);
        assert_eq!(store.sessions_of_user(other).await.unwrap()[0].id, theirs);

        // Without `keep`, every session goes.
        assert_eq!(store.set_password(user, "newer".to_owned(), None).await.unwrap(), [s2]);
        assert!(store.sessions_of_user(user).await.unwrap().is_empty());

        assert!(matches!(store.set_password(9_999, "x".to_owned(), None).await, Err(StoreError::NotFound)));
    }

    #[tokio::test]
    async fn delete_user_cascades_to_sessions() {
        let dir = TempDir::new();
        let store = SqliteStore::open_in_dir(&dir.0).unwrap();
        let user = store.create_user(new_user("gina")).await.unwrap();
        let other = store.create_user(new_user("hank")).await.unwrap();
        let s1 = store.create_session(new_session(user, 1, false, 5_000)).await.unwrap();
        let s2 = store.create_session(new_session(user, 2, true, 5_000)).await.unwrap();
        let theirs = store.create_session(new_session(other, 3, false, 5_000)).await.unwrap();

        assert_eq!(store.delete_user(user).await.unwrap(), [s1, s2]);
        assert_eq!(store.user_by_id(user).await.unwrap(), None);
        assert_eq!(store.session_by_token(&hash(1)).await.unwrap(), None);
        assert_eq!(raw_count(&dir.db(), "sessions"), 1);
        assert_eq!(store.existing_sessions(vec![s1, s2, theirs]).await.unwrap(), [theirs]);
        assert!(matches!(store.delete_user(user).await, Err(StoreError::NotFound)));

        // Ids are never reused, so a remembered id cannot come to mean someone else.
        let again = store.create_user(new_user("gina")).await.unwrap();
        assert!(again > other);
    }

    #[tokio::test]
    async fn purge_and_existing_sessions() {
        let dir = TempDir::new();
        let store = SqliteStore::open_in_dir(&dir.0).unwrap();
        let user = store.create_user(new_user("ivy")).await.unwrap();
        let short_old = store.create_session(new_session(user, 1, false, 100)).await.unwrap();
        let short_new = store.create_session(new_session(user, 2, false, 300)).await.unwrap();
        let long_old = store.create_session(new_session(user, 3, true, 100)).await.unwrap();
        let long_mid = store.create_session(new_session(user, 4, true, 150)).await.unwrap();

        // Non-persistent expired before 200, persistent before 120.
        assert_eq!(store.purge_sessions(200, 120).await.unwrap(), 2);
        let all = vec![short_old, short_new, long_old, long_mid];
        assert_eq!(store.existing_sessions(all).await.unwrap(), [short_new, long_mid]);
        assert_eq!(store.purge_sessions(0, 0).await.unwrap(), 0);

        assert!(store.existing_sessions(Vec::new()).await.unwrap().is_empty());
        // Longer than one IN chunk, with unknown ids and a repetition; order is kept.
        let mut many: Vec<SessionId> = (10_000..10_000 + 3 * IN_CHUNK as i64).collect();
        many.insert(7, long_mid);
        many.push(short_new);
        many.push(long_mid);
        assert_eq!(store.existing_sessions(many).await.unwrap(), [long_mid, short_new, long_mid]);
    }

    #[tokio::test]
    async fn api_keys() {
        let dir = TempDir::new();
        let store = SqliteStore::open_in_dir(&dir.0).unwrap();
        store.create_api_key(new_key("k2", 2, &["news.*", "chat"], 20)).await.unwrap();
        store.create_api_key(new_key("k1", 1, &[], 10)).await.unwrap();
        // Patterns that a joined encoding would mangle round-trip exactly.
        store.create_api_key(new_key("k3", 3, &["", "a\nb"], 20)).await.unwrap();

        assert!(matches!(store.create_api_key(new_key("k1", 9, &[], 30)).await, Err(StoreError::Conflict)));

        let k2 = store.api_key_by_hash(&hash(2)).await.unwrap().unwrap();
        assert_eq!(
            k2,
            ApiKey {
                key_id: "k2".to_owned(),
                name: "label k2".to_owned(),
                channels: vec!["news.*".to_owned(), "chat".to_owned()],
                created_ms: 20
            }
        );
        assert_eq!(store.api_key_by_hash(&hash(3)).await.unwrap().unwrap().channels, ["", "a\nb"]);
        assert!(store.api_key_by_hash(&hash(1)).await.unwrap().unwrap().channels.is_empty());
        assert_eq!(store.api_key_by_hash(&hash(9)).await.unwrap(), None);

        let ids: Vec<String> = store.list_api_keys().await.unwrap().into_iter().map(|k| k.key_id).collect();
        assert_eq!(ids, ["k1", "k2", "k3"]);

        assert!(store.revoke_api_key("k2").await.unwrap());
        assert!(!store.revoke_api_key("k2").await.unwrap());
        assert_eq!(store.api_key_by_hash(&hash(2)).await.unwrap(), None);
        assert_eq!(store.list_api_keys().await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn reopen_keeps_data() {
        let dir = TempDir::new();
        let store = SqliteStore::open_in_dir(&dir.0).unwrap();
        assert_eq!(store.schema_version(), MIGRATIONS.len() as i64);
        let user = store.create_user(new_user("jack")).await.unwrap();
        let session = store.create_session(new_session(user, 1, true, 5_000)).await.unwrap();
        drop(store);

        for _ in 0..2 {
            let store = SqliteStore::open(&dir.db()).unwrap();
            assert_eq!(store.schema_version(), MIGRATIONS.len() as i64);
            assert_eq!(store.user_by_name("JACK").await.unwrap().unwrap().id, user);
            assert_eq!(store.session_by_token(&hash(1)).await.unwrap().unwrap().id, session);
        }
        let conn = Connection::open(dir.db()).unwrap();
        assert_eq!(user_version(&conn).unwrap(), SUPPORTED_VERSION);
        let mode: String = conn.pragma_query_value(None, "journal_mode", |row| row.get(0)).unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn newer_schema_is_refused_untouched() {
        let dir = TempDir::new();
        std::fs::create_dir_all(&dir.0).unwrap();
        {
            let conn = Connection::open(dir.db()).unwrap();
            conn.pragma_update(None, "user_version", 999).unwrap();
        }
        match SqliteStore::open(&dir.db()) {
            Err(StoreError::TooNew { found: 999, supported }) => assert_eq!(supported, SUPPORTED_VERSION),
            other => panic!("expected TooNew, got {other:?}"),
        }
        let conn = Connection::open(dir.db()).unwrap();
        let mode: String = conn.pragma_query_value(None, "journal_mode", |row| row.get(0)).unwrap();
        assert_eq!(mode, "delete");
    }

    #[test]
    fn garbage_file_is_a_database_error() {
        let dir = TempDir::new();
        std::fs::create_dir_all(&dir.0).unwrap();
        std::fs::write(dir.db(), b"this is not a database, just some text that is long enough").unwrap();
        assert!(matches!(SqliteStore::open(&dir.db()), Err(StoreError::Database(_))));
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new();
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;

        let store = SqliteStore::open_in_dir(&dir.0).unwrap();
        store.create_user(new_user("kim")).await.unwrap();
        assert_eq!(mode(&dir.db()), 0o600);
        assert_eq!(mode(&dir.0.join(format!("{FILE_NAME}-wal"))), 0o600);
        drop(store);

        // An existing file with a wider mode is tightened on open.
        std::fs::set_permissions(dir.db(), std::fs::Permissions::from_mode(0o644)).unwrap();
        let _store = SqliteStore::open_in_dir(&dir.0).unwrap();
        assert_eq!(mode(&dir.db()), 0o600);
    }

    #[tokio::test]
    async fn closed_writer_reports_closed() {
        let dir = TempDir::new();
        let mut store = SqliteStore::open_in_dir(&dir.0).unwrap();
        drop(store.writer.take());
        assert!(matches!(store.create_user(new_user("lee")).await, Err(StoreError::Closed)));
        // Reads do not need the writer.
        assert_eq!(store.user_by_name("lee").await.unwrap(), None);
    }

    #[tokio::test]
    async fn queued_writes_finish_before_drop_returns() {
        let dir = TempDir::new();
        let store = SqliteStore::open_in_dir(&dir.0).unwrap();
        let user = store.create_user(new_user("max")).await.unwrap();
        {
            // Poll once so the job is queued, then abandon the future.
            let mut pending = store.create_session(new_session(user, 1, false, 5_000));
            let waker = std::task::Waker::noop();
            let _ = pending.as_mut().poll(&mut std::task::Context::from_waker(waker));
        }
        drop(store);
        assert_eq!(raw_count(&dir.db(), "sessions"), 1);
    }

    #[test]
    fn futures_are_send() {
        fn assert_send<T: Send>(_: &T) {}
        let dir = TempDir::new();
        let store = SqliteStore::open_in_dir(&dir.0).unwrap();
        assert_send(&store.create_user(new_user("ned")));
        assert_send(&store.user_by_name("ned"));
        let store: Arc<dyn Store> = Arc::new(store);
        assert_send(&store.list_users());
    }

    // ---- Model-sync scopes ----

    /// A changeset as the server might encode it; the store only sees bytes.
    fn changeset(seq: ScopeSeq) -> Vec<u8> {
        format!(r#"{{"seq":{seq},"ops":"{}"}}"#, "x".repeat(200 + (seq % 100) as usize)).into_bytes()
    }

    fn snapshot_at(seq: ScopeSeq) -> Vec<u8> {
        format!(r#"{{"snapshot_after":{seq}}}"#).into_bytes()
    }

    fn entries(seqs: impl IntoIterator<Item = ScopeSeq>) -> Vec<(ScopeSeq, Vec<u8>)> {
        seqs.into_iter().map(|seq| (seq, changeset(seq))).collect()
    }

    #[tokio::test]
    async fn scope_create_and_load_round_trip() {
        let dir = TempDir::new();
        let store = SqliteStore::open_in_dir(&dir.0).unwrap();
        assert_eq!(store.load_scope("doc/1").await.unwrap(), None);
        assert!(store.scope_keys().await.unwrap().is_empty());

        let created = store.create_scope("doc/1", [1; 16], snapshot_at(0)).await.unwrap();
        let expected =
            StoredScope { root_uuid: [1; 16], snapshot: snapshot_at(0), snapshot_seq: 0, log: Vec::new() };
        assert_eq!(created, expected);
        assert_eq!(created.last_seq(), 0);
        assert_eq!(store.load_scope("doc/1").await.unwrap(), Some(expected));
        // Keys are exact: no case folding, no prefix matching.
        assert_eq!(store.load_scope("DOC/1").await.unwrap(), None);
        assert_eq!(store.load_scope("doc/").await.unwrap(), None);

        store.create_scope("doc/0", [2; 16], Vec::new()).await.unwrap();
        assert_eq!(store.load_scope("doc/0").await.unwrap().unwrap().snapshot, b"");
        assert_eq!(store.scope_keys().await.unwrap(), ["doc/0", "doc/1"]);
    }

    #[tokio::test]
    async fn creating_an_existing_scope_returns_it_unchanged() {
        let dir = TempDir::new();
        let store = SqliteStore::open_in_dir(&dir.0).unwrap();
        store.create_scope("s", [1; 16], snapshot_at(0)).await.unwrap();
        store.append_changesets("s", entries(1..=3)).await.unwrap();
        store.save_snapshot("s", 2, snapshot_at(2)).await.unwrap();

        let again = store.create_scope("s", [9; 16], b"other".to_vec()).await.unwrap();
        let stored =
            StoredScope { root_uuid: [1; 16], snapshot: snapshot_at(2), snapshot_seq: 2, log: entries([3]) };
        assert_eq!(again, stored);
        assert_eq!(store.load_scope("s").await.unwrap(), Some(stored));
        assert_eq!(raw_count(&dir.db(), "scopes"), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 8)]
    async fn two_stores_on_one_file_race_to_create_a_scope() {
        // Two nodes (or the server and a tool) creating one scope at once: one wins, and every
        // caller gets the winner's scope back.
        let dir = TempDir::new();
        let stores = [
            Arc::new(SqliteStore::open_in_dir(&dir.0).unwrap()),
            Arc::new(SqliteStore::open_in_dir(&dir.0).unwrap()),
        ];
        let tasks: Vec<_> = (0..32_u8)
            .map(|i| {
                let store = Arc::clone(&stores[usize::from(i % 2)]);
                tokio::spawn(async move { store.create_scope("shared", [i; 16], vec![i; 64]).await })
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap().unwrap());
        }
        let winner = &results[0];
        assert_eq!(winner.snapshot, vec![winner.root_uuid[0]; 64]);
        assert!(results.iter().all(|scope| scope == winner), "callers got different scopes");
        assert_eq!(raw_count(&dir.db(), "scopes"), 1);
        for store in &stores {
            assert_eq!(store.load_scope("shared").await.unwrap().as_ref(), Some(winner));
        }
    }

    #[tokio::test]
    async fn appended_changesets_load_in_order() {
        let dir = TempDir::new();
        let store = SqliteStore::open_in_dir(&dir.0).unwrap();
        store.create_scope("a", [1; 16], snapshot_at(0)).await.unwrap();
        store.create_scope("b", [2; 16], snapshot_at(0)).await.unwrap();
        store.append_changesets("a", entries([1])).await.unwrap();
        store.append_changesets("a", entries(2..=50)).await.unwrap();
        // Another scope's log is separate and numbered on its own.
        store.append_changesets("b", entries(1..=5)).await.unwrap();
        store.append_changesets("a", entries(51..=60)).await.unwrap();
        // Nothing to append: nothing happens.
        store.append_changesets("a", Vec::new()).await.unwrap();

        let a = store.load_scope("a").await.unwrap().unwrap();
        assert_eq!(a.log, entries(1..=60));
        assert_eq!((a.snapshot_seq, a.last_seq()), (0, 60));
        assert_eq!(store.load_scope("b").await.unwrap().unwrap().log, entries(1..=5));
        assert_eq!(raw_count(&dir.db(), "scope_log"), 65);
    }

    #[tokio::test]
    async fn a_gap_or_a_repeated_seq_is_a_conflict_and_writes_nothing() {
        let dir = TempDir::new();
        let store = SqliteStore::open_in_dir(&dir.0).unwrap();
        store.create_scope("s", [1; 16], snapshot_at(0)).await.unwrap();
        store.append_changesets("s", entries(1..=3)).await.unwrap();
        let before = store.load_scope("s").await.unwrap();

        let refused: [Vec<ScopeSeq>; 8] = [
            vec![5],          // gap before the batch
            vec![3],          // repeats the last stored seq
            vec![1, 2, 3, 4], // overlaps the stored log
            vec![4, 5, 7],    // gap inside the batch
            vec![4, 5, 5],    // repeat inside the batch
            vec![4, 6, 5],    // out of order
            vec![0],          // seq 0 is the initial state, never a changeset
            vec![u64::MAX],   // far beyond, and not even representable in SQLite
        ];
        for seqs in refused {
            let result = store.append_changesets("s", entries(seqs.clone())).await;
            assert!(matches!(result, Err(StoreError::Conflict)), "{seqs:?}: {result:?}");
            assert_eq!(store.load_scope("s").await.unwrap(), before, "{seqs:?}");
            assert_eq!(raw_count(&dir.db(), "scope_log"), 3, "{seqs:?}");
        }
        assert!(matches!(store.append_changesets("nope", entries([1])).await, Err(StoreError::NotFound)));
        assert_eq!(raw_count(&dir.db(), "scope_log"), 3);

        // The refusals left the scope appendable where it was.
        store.append_changesets("s", entries(4..=5)).await.unwrap();
        assert_eq!(store.load_scope("s").await.unwrap().unwrap().log, entries(1..=5));
    }

    #[tokio::test]
    async fn save_snapshot_trims_the_log() {
        let dir = TempDir::new();
        let store = SqliteStore::open_in_dir(&dir.0).unwrap();
        store.create_scope("s", [1; 16], snapshot_at(0)).await.unwrap();
        store.create_scope("other", [2; 16], snapshot_at(0)).await.unwrap();
        store.append_changesets("s", entries(1..=10)).await.unwrap();
        store.append_changesets("other", entries(1..=10)).await.unwrap();

        store.save_snapshot("s", 4, snapshot_at(4)).await.unwrap();
        let s = store.load_scope("s").await.unwrap().unwrap();
        assert_eq!((s.snapshot.as_slice(), s.snapshot_seq), (snapshot_at(4).as_slice(), 4));
        assert_eq!(s.log, entries(5..=10));
        assert_eq!(s.root_uuid, [1; 16]);
        // Only this scope's log is trimmed.
        assert_eq!(raw_count(&dir.db(), "scope_log"), 6 + 10);

        // Older than the stored snapshot, or past the log: refused, nothing changes.
        for seq in [3, 11] {
            let result = store.save_snapshot("s", seq, snapshot_at(seq)).await;
            assert!(matches!(result, Err(StoreError::Conflict)), "{seq}: {result:?}");
            assert_eq!(store.load_scope("s").await.unwrap().as_ref(), Some(&s));
        }
        // Replacing the snapshot at the same seq is allowed (a retry, or a re-encoding).
        store.save_snapshot("s", 4, b"re-encoded".to_vec()).await.unwrap();
        assert_eq!(store.load_scope("s").await.unwrap().unwrap().snapshot, b"re-encoded");

        // A snapshot of everything empties the log; appends continue after it.
        store.save_snapshot("s", 10, snapshot_at(10)).await.unwrap();
        let s = store.load_scope("s").await.unwrap().unwrap();
        assert_eq!((s.snapshot_seq, s.log.len(), s.last_seq()), (10, 0, 10));
        assert!(matches!(store.append_changesets("s", entries([10])).await, Err(StoreError::Conflict)));
        store.append_changesets("s", entries(11..=12)).await.unwrap();
        assert_eq!(store.load_scope("s").await.unwrap().unwrap().log, entries(11..=12));

        assert!(matches!(store.save_snapshot("nope", 0, Vec::new()).await, Err(StoreError::NotFound)));
    }

    #[tokio::test]
    async fn delete_scope_removes_it_and_its_log() {
        let dir = TempDir::new();
        let store = SqliteStore::open_in_dir(&dir.0).unwrap();
        for key in ["a", "b"] {
            store.create_scope(key, [1; 16], snapshot_at(0)).await.unwrap();
            store.append_changesets(key, entries(1..=5)).await.unwrap();
        }
        assert!(store.delete_scope("a").await.unwrap());
        assert!(!store.delete_scope("a").await.unwrap());
        assert!(!store.delete_scope("never").await.unwrap());
        assert_eq!(store.load_scope("a").await.unwrap(), None);
        assert_eq!(store.scope_keys().await.unwrap(), ["b"]);
        assert_eq!(raw_count(&dir.db(), "scope_log"), 5);
        assert_eq!(store.load_scope("b").await.unwrap().unwrap().log, entries(1..=5));

        // Created again, it starts from scratch: no log entry of the old one comes back.
        let fresh = store.create_scope("a", [3; 16], snapshot_at(0)).await.unwrap();
        assert_eq!((fresh.root_uuid, fresh.log.len()), ([3; 16], 0));
        store.append_changesets("a", entries([1])).await.unwrap();
        assert_eq!(store.load_scope("a").await.unwrap().unwrap().log, entries([1]));
    }

    #[tokio::test]
    async fn reopen_keeps_scopes() {
        let dir = TempDir::new();
        let store = SqliteStore::open_in_dir(&dir.0).unwrap();
        store.create_scope("kept", [5; 16], snapshot_at(0)).await.unwrap();
        store.append_changesets("kept", entries(1..=20)).await.unwrap();
        store.save_snapshot("kept", 7, snapshot_at(7)).await.unwrap();
        store.append_changesets("kept", entries(21..=25)).await.unwrap();
        let before = store.load_scope("kept").await.unwrap().unwrap();
        drop(store);

        for _ in 0..2 {
            let store = SqliteStore::open_in_dir(&dir.0).unwrap();
            assert_eq!(store.load_scope("kept").await.unwrap().as_ref(), Some(&before));
            assert_eq!(store.scope_keys().await.unwrap(), ["kept"]);
        }
        assert_eq!(
            before,
            StoredScope {
                root_uuid: [5; 16],
                snapshot: snapshot_at(7),
                snapshot_seq: 7,
                log: entries(8..=25)
            }
        );
    }

    #[tokio::test]
    async fn a_big_log_loads_whole_and_in_order() {
        let dir = TempDir::new();
        let store = SqliteStore::open_in_dir(&dir.0).unwrap();
        store.create_scope("big", [1; 16], snapshot_at(0)).await.unwrap();
        let total: ScopeSeq = 100_000;
        for first in (1..=total).step_by(1_000) {
            store.append_changesets("big", entries(first..first + 1_000)).await.unwrap();
        }
        let scope = store.load_scope("big").await.unwrap().unwrap();
        assert_eq!(scope.log.len(), 100_000);
        assert_eq!(scope.last_seq(), total);
        assert!(
            scope.log.iter().zip(1..).all(|((seq, bytes), want)| *seq == want && *bytes == changeset(want))
        );

        store.save_snapshot("big", 99_990, snapshot_at(99_990)).await.unwrap();
        assert_eq!(store.load_scope("big").await.unwrap().unwrap().log, entries(99_991..=total));
    }

    #[tokio::test]
    async fn scope_loads_never_come_from_a_held_snapshot() {
        let dir = TempDir::new();
        let server = SqliteStore::open_with(&dir.db(), held_snapshots()).unwrap();
        let other = SqliteStore::open(&dir.db()).unwrap();
        server.create_scope("s", [1; 16], snapshot_at(0)).await.unwrap();
        let user = server.create_user(new_user("Ona")).await.unwrap();
        server.create_session(new_session(user, 1, false, 5_000)).await.unwrap();
        // The pooled reader now holds a snapshot that a session lookup may reuse...
        assert!(server.session_by_token(&hash(1)).await.unwrap().is_some());
        assert!(server.shared.readers.lock().iter().any(|r| r.snapshot.is_some()));

        // ...and another node appends to the scope meanwhile: the load must see it.
        other.append_changesets("s", entries(1..=3)).await.unwrap();
        assert_eq!(server.load_scope("s").await.unwrap().unwrap().log, entries(1..=3));
        other.save_snapshot("s", 3, snapshot_at(3)).await.unwrap();
        let s = server.load_scope("s").await.unwrap().unwrap();
        assert_eq!((s.snapshot_seq, s.log.len()), (3, 0));
        other.delete_scope("s").await.unwrap();
        assert_eq!(server.load_scope("s").await.unwrap(), None);
        assert!(server.scope_keys().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_version_1_file_is_migrated_and_keeps_its_data() {
        let dir = TempDir::new();
        std::fs::create_dir_all(&dir.0).unwrap();
        {
            // A file as the previous release left it: migration 1 only, with an account.
            let conn = Connection::open(dir.db()).unwrap();
            conn.pragma_update(None, "journal_mode", "WAL").unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute(
                "INSERT INTO users (name, email, password_hash, created_ms) VALUES ('old', NULL, 'phc', 5)",
                [],
            )
            .unwrap();
        }
        let store = SqliteStore::open(&dir.db()).unwrap();
        assert_eq!(store.schema_version(), SUPPORTED_VERSION);
        assert_eq!(SUPPORTED_VERSION, 3);
        assert_eq!(store.user_by_name("old").await.unwrap().unwrap().password_hash, "phc");
        store.create_scope("s", [1; 16], snapshot_at(0)).await.unwrap();
        store.append_changesets("s", entries(1..=2)).await.unwrap();
        drop(store);

        let store = SqliteStore::open(&dir.db()).unwrap();
        assert_eq!(store.load_scope("s").await.unwrap().unwrap().log, entries(1..=2));
        assert_eq!(user_version(&Connection::open(dir.db()).unwrap()).unwrap(), SUPPORTED_VERSION);
    }

    #[tokio::test]
    async fn a_version_2_file_is_migrated_and_keeps_its_data() {
        let dir = TempDir::new();
        std::fs::create_dir_all(&dir.0).unwrap();
        {
            // A file as the release before channel history left it: migrations 1 and 2, with
            // an account and a scope.
            let conn = Connection::open(dir.db()).unwrap();
            conn.pragma_update(None, "journal_mode", "WAL").unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.execute_batch(MIGRATIONS[1]).unwrap();
            conn.pragma_update(None, "user_version", 2).unwrap();
            conn.execute(
                "INSERT INTO users (name, email, password_hash, created_ms) VALUES ('old', NULL, 'phc', 5)",
                [],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO scopes (key, root_uuid, snapshot, snapshot_seq) VALUES ('s', ?1, ?2, 0)",
                params![[1_u8; 16], snapshot_at(0)],
            )
            .unwrap();
        }
        let store = SqliteStore::open(&dir.db()).unwrap();
        assert_eq!(store.schema_version(), SUPPORTED_VERSION);
        assert_eq!(store.user_by_name("old").await.unwrap().unwrap().password_hash, "phc");
        assert_eq!(store.load_scope("s").await.unwrap().unwrap().snapshot, snapshot_at(0));
        // The new tables start empty, and a server never started here counts as clean.
        assert!(store.load_histories().await.unwrap().is_empty());
        assert!(store.mark_started().await.unwrap());
        store.append_history(records("c", "e", 1..=3), Vec::new()).await.unwrap();
        drop(store);

        let store = SqliteStore::open(&dir.db()).unwrap();
        assert_eq!(summary(&store.load_histories().await.unwrap()), [("c", "e", 3, vec![1, 2, 3])]);
        assert!(!store.mark_started().await.unwrap());
        assert_eq!(user_version(&Connection::open(dir.db()).unwrap()).unwrap(), SUPPORTED_VERSION);
    }

    // ---- Channel history ----

    /// A publication as the server might encode it; the store only sees bytes (here not even
    /// valid UTF-8, to be sure nothing decodes them).
    fn publication(channel: &str, epoch: &str, offset: u64) -> Vec<u8> {
        let mut bytes = format!("{channel}/{epoch}/{offset}:").into_bytes();
        bytes.extend_from_slice(&[0xff, 0x00, 0xfe]);
        bytes
    }

    /// Records of `channel` in `epoch` at `offsets`, published at `offset * 1_000` ms.
    fn records(channel: &str, epoch: &str, offsets: impl IntoIterator<Item = u64>) -> Vec<HistoryRecord> {
        offsets
            .into_iter()
            .map(|offset| HistoryRecord {
                channel: channel.to_owned(),
                epoch: epoch.to_owned(),
                offset,
                at_ms: offset * 1_000,
                payload: publication(channel, epoch, offset),
            })
            .collect()
    }

    fn keep(channel: &str, max_count: u64, min_at_ms: u64) -> HistoryKeep {
        HistoryKeep { channel: channel.to_owned(), max_count, min_at_ms }
    }

    /// `(channel, epoch, top, offsets)` of each channel, checking on the way that every
    /// entry belongs to its channel and carries the payload [`records`] gave it.
    fn summary(histories: &[StoredHistory]) -> Vec<(&str, &str, u64, Vec<u64>)> {
        histories
            .iter()
            .map(|h| {
                for e in &h.entries {
                    assert_eq!(
                        (e.channel.as_str(), e.epoch.as_str()),
                        (h.channel.as_str(), h.epoch.as_str())
                    );
                    assert_eq!(e.payload, publication(&h.channel, &h.epoch, e.offset), "{e:?}");
                }
                let offsets = h.entries.iter().map(|e| e.offset).collect();
                (h.channel.as_str(), h.epoch.as_str(), h.top, offsets)
            })
            .collect()
    }

    #[tokio::test]
    async fn history_round_trips_across_reopen() {
        let dir = TempDir::new();
        let store = SqliteStore::open_in_dir(&dir.0).unwrap();
        assert!(store.load_histories().await.unwrap().is_empty());
        // Nothing to do: nothing happens.
        store.append_history(Vec::new(), Vec::new()).await.unwrap();

        // Channels interleaved in one batch, each in its own offset order.
        let mut batch = records("news", "e1", 1..=3);
        batch.insert(1, records("chat", "x", [1]).remove(0));
        batch.push(records("chat", "x", [2]).remove(0));
        store.append_history(batch, Vec::new()).await.unwrap();
        store.append_history(records("news", "e1", 4..=5), Vec::new()).await.unwrap();
        // A big payload (overflow pages) and an empty one.
        let big = HistoryRecord { payload: vec![7; 200_000], ..records("big", "b", [1]).remove(0) };
        let empty = HistoryRecord { payload: Vec::new(), ..records("big", "b", [2]).remove(0) };
        store.append_history(vec![big.clone(), empty.clone()], Vec::new()).await.unwrap();

        let before = store.load_histories().await.unwrap();
        // Ordered by channel name, whatever the order of the writes.
        let names: Vec<&str> = before.iter().map(|h| h.channel.as_str()).collect();
        assert_eq!(names, ["big", "chat", "news"]);
        assert_eq!(
            before[0],
            StoredHistory {
                channel: "big".to_owned(),
                epoch: "b".to_owned(),
                top: 2,
                entries: vec![big, empty]
            }
        );
        assert_eq!(
            summary(&before[1..]),
            [("chat", "x", 2, vec![1, 2]), ("news", "e1", 5, vec![1, 2, 3, 4, 5])]
        );
        drop(store);

        for _ in 0..2 {
            let store = SqliteStore::open_in_dir(&dir.0).unwrap();
            assert_eq!(store.load_histories().await.unwrap(), before);
        }
    }

    #[tokio::test]
    async fn history_is_trimmed_by_count_and_age_in_the_append() {
        let dir = TempDir::new();
        let store = SqliteStore::open_in_dir(&dir.0).unwrap();
        // By count: the newest 4 offsets stay. A channel without a keep is not trimmed.
        let mut batch = records("a", "e", 1..=10);
        batch.extend(records("other", "e", 1..=10));
        store.append_history(batch, vec![keep("a", 4, 0)]).await.unwrap();
        let loaded = store.load_histories().await.unwrap();
        assert_eq!(
            summary(&loaded),
            [("a", "e", 10, vec![7, 8, 9, 10]), ("other", "e", 10, (1..=10).collect())]
        );

        // By age (offset n is stamped n * 1000 ms): older than 8500 ms goes, in the same
        // append that adds 11 and 12. Count and age together: the stricter one wins.
        store.append_history(records("a", "e", 11..=12), vec![keep("a", 100, 8_500)]).await.unwrap();
        assert_eq!(summary(&store.load_histories().await.unwrap())[0], ("a", "e", 12, vec![9, 10, 11, 12]));
        store.append_history(records("a", "e", [13]), vec![keep("a", 2, 9_500)]).await.unwrap();
        assert_eq!(summary(&store.load_histories().await.unwrap())[0], ("a", "e", 13, vec![12, 13]));
        store.append_history(records("a", "e", [14]), vec![keep("a", 10, 12_500)]).await.unwrap();
        assert_eq!(summary(&store.load_histories().await.unwrap())[0], ("a", "e", 14, vec![13, 14]));

        // A keep alone trims too (nothing published, time passes); trimming everything keeps
        // the position. A keep for a channel without history does nothing.
        store.append_history(Vec::new(), vec![keep("a", 10, 60_000), keep("none", 0, 0)]).await.unwrap();
        store.append_history(Vec::new(), vec![keep("other", 0, 0)]).await.unwrap();
        assert_eq!(
            summary(&store.load_histories().await.unwrap()),
            [("a", "e", 14, vec![]), ("other", "e", 10, vec![])]
        );
        assert_eq!(raw_count(&dir.db(), "history_log"), 0);
        // An age limit beyond any storable time still just deletes everything.
        store.append_history(records("a", "e", [15]), vec![keep("a", 10, u64::MAX)]).await.unwrap();
        assert_eq!(summary(&store.load_histories().await.unwrap())[0], ("a", "e", 15, vec![]));
        // A count limit beyond i64 keeps everything.
        store.append_history(records("a", "e", 16..=18), vec![keep("a", u64::MAX, 0)]).await.unwrap();
        assert_eq!(summary(&store.load_histories().await.unwrap())[0], ("a", "e", 18, vec![16, 17, 18]));
    }

    #[tokio::test]
    async fn trimming_removes_only_the_oldest_rows() {
        let dir = TempDir::new();
        let store = SqliteStore::open_in_dir(&dir.0).unwrap();
        // A clock that stepped back: offset 3 is stamped before offset 2. As in the engine,
        // age trimming stops at the first row young enough, so 3 stays with 2 and 4.
        let mut batch = records("c", "e", 1..=4);
        batch[2].at_ms = 1_500;
        store.append_history(batch, Vec::new()).await.unwrap();
        store.append_history(Vec::new(), vec![keep("c", 10, 1_800)]).await.unwrap();
        let c = store.load_histories().await.unwrap().remove(0);
        assert_eq!(
            c.entries.iter().map(|e| (e.offset, e.at_ms)).collect::<Vec<_>>(),
            [(2, 2_000), (3, 1_500), (4, 4_000)]
        );

        // Offsets with gaps (the engine writes none): the count keeps the window of the newest
        // offsets, here 18..=20, whatever rows are in it. That holds every row the engine would
        // restore (the consecutive run ending at the top), as far as the limit allows.
        store.append_history(records("g", "e", [1, 2, 10, 19, 20]), vec![keep("g", 3, 0)]).await.unwrap();
        assert_eq!(summary(&store.load_histories().await.unwrap())[1], ("g", "e", 20, vec![19, 20]));
        // Re-used offsets below the top count in the window as they stand.
        store.append_history(records("g", "e", [17, 18]), vec![keep("g", 3, 0)]).await.unwrap();
        assert_eq!(summary(&store.load_histories().await.unwrap())[1], ("g", "e", 20, vec![18, 19, 20]));
    }

    #[tokio::test]
    async fn a_new_epoch_deletes_the_old_rows() {
        let dir = TempDir::new();
        let store = SqliteStore::open_in_dir(&dir.0).unwrap();
        let mut batch = records("a", "e1", 1..=5);
        batch.extend(records("b", "e1", 1..=3));
        store.append_history(batch, Vec::new()).await.unwrap();

        // Reset: the new epoch restarts at the offset its first record carries.
        store.append_history(records("a", "e2", 1..=2), Vec::new()).await.unwrap();
        assert_eq!(
            summary(&store.load_histories().await.unwrap()),
            [("a", "e2", 2, vec![1, 2]), ("b", "e1", 3, vec![1, 2, 3])]
        );
        // A reset in the middle of a batch: what came before it in the batch goes too, and
        // offsets may go down across it. Another epoch may also start higher than 1.
        let mut batch = records("a", "e2", 3..=4);
        batch.extend(records("a", "e3", 1..=2));
        batch.extend(records("b", "e4", [7]));
        store.append_history(batch, Vec::new()).await.unwrap();
        assert_eq!(
            summary(&store.load_histories().await.unwrap()),
            [("a", "e3", 2, vec![1, 2]), ("b", "e4", 7, vec![7])]
        );
        assert_eq!(raw_count(&dir.db(), "history_log"), 3);
    }

    #[tokio::test]
    async fn a_repeated_offset_overwrites_and_a_batch_may_be_retried() {
        let dir = TempDir::new();
        let store = SqliteStore::open_in_dir(&dir.0).unwrap();
        store.append_history(records("c", "e", 1..=5), Vec::new()).await.unwrap();

        // Offsets 3 and 4 re-used (say after a crash): their rows are replaced, the top stays.
        let again: Vec<HistoryRecord> = records("c", "e", 3..=4)
            .into_iter()
            .map(|r| HistoryRecord { payload: b"second".to_vec(), at_ms: 99, ..r })
            .collect();
        store.append_history(again, Vec::new()).await.unwrap();
        let c = store.load_histories().await.unwrap().remove(0);
        assert_eq!(c.top, 5);
        let rows: Vec<(u64, u64, &[u8])> =
            c.entries.iter().map(|e| (e.offset, e.at_ms, e.payload.as_slice())).collect();
        let first = |n: u64| publication("c", "e", n);
        assert_eq!(
            rows,
            [
                (1, 1_000, first(1).as_slice()),
                (2, 2_000, first(2).as_slice()),
                (3, 99, b"second".as_slice()),
                (4, 99, b"second".as_slice()),
                (5, 5_000, first(5).as_slice())
            ]
        );

        // Applying one batch twice (a retry after an unknown outcome) is applying it once.
        let batch = || (records("c", "e", 6..=8), vec![keep("c", 4, 0)]);
        let (r, k) = batch();
        store.append_history(r, k).await.unwrap();
        let once = store.load_histories().await.unwrap();
        let (r, k) = batch();
        store.append_history(r, k).await.unwrap();
        assert_eq!(store.load_histories().await.unwrap(), once);
        assert_eq!(summary(&once), [("c", "e", 8, vec![5, 6, 7, 8])]);
    }

    #[tokio::test]
    async fn an_invalid_history_batch_is_refused_and_writes_nothing() {
        let dir = TempDir::new();
        let store = SqliteStore::open_in_dir(&dir.0).unwrap();
        store.append_history(records("a", "e", 1..=3), Vec::new()).await.unwrap();
        let before = store.load_histories().await.unwrap();

        let with_last = |f: &dyn Fn(&mut HistoryRecord)| {
            // Valid records of three channels (a reset of "a" among them), then a bad one.
            let mut batch = records("a", "new", 1..=2);
            batch.extend(records("b", "e", 1..=2));
            batch.extend(records("c", "e", [1]));
            f(batch.last_mut().unwrap());
            batch
        };
        let refused: Vec<(&str, Vec<HistoryRecord>, Vec<HistoryKeep>)> = vec![
            ("empty channel", with_last(&|r| r.channel.clear()), vec![]),
            ("offset 0", with_last(&|r| r.offset = 0), vec![]),
            ("offset beyond i64", with_last(&|r| r.offset = 1 << 63), vec![]),
            ("at_ms beyond i64", with_last(&|r| r.at_ms = u64::MAX), vec![]),
            ("offset repeated", with_last(&|r| *r = records("b", "e", [2]).remove(0)), vec![]),
            ("offset going down", with_last(&|r| *r = records("a", "new", [1]).remove(0)), vec![]),
            ("keep of no channel", with_last(&|_| {}), vec![keep("a", 1, 0), keep("", 1, 0)]),
        ];
        for (what, batch, keeps) in refused {
            let result = store.append_history(batch, keeps).await;
            assert!(matches!(result, Err(StoreError::Invalid(_))), "{what}: {result:?}");
            assert_eq!(store.load_histories().await.unwrap(), before, "{what}");
            assert_eq!(raw_count(&dir.db(), "history_channels"), 1, "{what}");
        }
        // The same batch without the bad record goes through.
        store.append_history(with_last(&|_| {}), Vec::new()).await.unwrap();
        assert_eq!(
            summary(&store.load_histories().await.unwrap()),
            [("a", "new", 2, vec![1, 2]), ("b", "e", 2, vec![1, 2]), ("c", "e", 1, vec![1])]
        );
    }

    #[tokio::test]
    async fn a_history_batch_failing_part_way_writes_nothing() {
        let dir = TempDir::new();
        let store = SqliteStore::open_in_dir(&dir.0).unwrap();
        let mut batch = records("a", "e1", 1..=5);
        batch.extend(records("b", "e1", 1..=5));
        store.append_history(batch, Vec::new()).await.unwrap();
        let before = store.load_histories().await.unwrap();

        // Make the database itself fail on one row, as a full disk or an IO error would.
        let raw = Connection::open(dir.db()).unwrap();
        raw.execute_batch(
            "CREATE TRIGGER fail_on_dead BEFORE INSERT ON history_log WHEN NEW.payload = x'dead' \
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
        )
        .unwrap();
        // Before the failing row: a reset of "a", upserts and new rows of "b", a new channel
        // "n"; and keeps that would trim. The failing row is the last one.
        let mut batch = records("a", "e2", 1..=2);
        batch.extend(records("b", "e1", 4..=8));
        batch.extend(records("n", "e1", 1..=3));
        batch.push(HistoryRecord { payload: vec![0xde, 0xad], ..records("n", "e1", [4]).remove(0) });
        let keeps = vec![keep("b", 2, 0), keep("a", 0, 0)];
        let result = store.append_history(batch.clone(), keeps.clone()).await;
        assert!(matches!(result, Err(StoreError::Database(ref m)) if m.contains("injected")), "{result:?}");
        assert_eq!(store.load_histories().await.unwrap(), before);
        assert_eq!(raw_count(&dir.db(), "history_channels"), 2);
        assert_eq!(raw_count(&dir.db(), "history_log"), 10);

        // The store still works, and the retried batch now goes through whole.
        raw.execute_batch("DROP TRIGGER fail_on_dead").unwrap();
        store.append_history(batch, keeps).await.unwrap();
        let after = store.load_histories().await.unwrap();
        assert_eq!(summary(&after[..2]), [("a", "e2", 2, vec![]), ("b", "e1", 8, vec![7, 8])]);
        assert_eq!((after[2].top, after[2].entries.len()), (4, 4));
    }

    #[tokio::test]
    async fn delete_history_removes_the_channel_and_its_position() {
        let dir = TempDir::new();
        let store = SqliteStore::open_in_dir(&dir.0).unwrap();
        let mut batch = records("a", "e", 1..=5);
        batch.extend(records("b", "e", 1..=5));
        store.append_history(batch, Vec::new()).await.unwrap();

        assert!(store.delete_history("a").await.unwrap());
        assert!(!store.delete_history("a").await.unwrap());
        assert!(!store.delete_history("never").await.unwrap());
        assert_eq!(summary(&store.load_histories().await.unwrap()), [("b", "e", 5, vec![1, 2, 3, 4, 5])]);
        assert_eq!(raw_count(&dir.db(), "history_log"), 5);

        // Written again, it starts afresh, even in the same epoch: nothing old comes back.
        store.append_history(records("a", "e", [9]), Vec::new()).await.unwrap();
        assert_eq!(summary(&store.load_histories().await.unwrap())[0], ("a", "e", 9, vec![9]));
    }

    #[tokio::test]
    async fn history_loads_never_come_from_a_held_snapshot() {
        let dir = TempDir::new();
        let server = SqliteStore::open_with(&dir.db(), held_snapshots()).unwrap();
        let other = SqliteStore::open(&dir.db()).unwrap();
        let user = server.create_user(new_user("Pia")).await.unwrap();
        server.create_session(new_session(user, 1, false, 5_000)).await.unwrap();
        assert!(server.session_by_token(&hash(1)).await.unwrap().is_some());
        assert!(server.shared.readers.lock().iter().any(|r| r.snapshot.is_some()));

        other.append_history(records("c", "e", 1..=2), Vec::new()).await.unwrap();
        assert_eq!(summary(&server.load_histories().await.unwrap()), [("c", "e", 2, vec![1, 2])]);
    }

    #[tokio::test]
    async fn lifecycle_flag_tells_a_clean_shutdown_from_a_crash() {
        let dir = TempDir::new();
        let store = SqliteStore::open_in_dir(&dir.0).unwrap();
        // A fresh file: nothing to have lost.
        assert!(store.mark_started().await.unwrap());
        // Started again without a clean shutdown in between.
        assert!(!store.mark_started().await.unwrap());
        store.mark_clean_shutdown().await.unwrap();
        assert!(store.mark_started().await.unwrap());
        drop(store);

        // Across processes (reopening the file): a crash after starting...
        let store = SqliteStore::open_in_dir(&dir.0).unwrap();
        assert!(!store.mark_started().await.unwrap());
        store.mark_clean_shutdown().await.unwrap();
        // ...and a clean stop (marking twice is harmless).
        store.mark_clean_shutdown().await.unwrap();
        drop(store);
        let store = SqliteStore::open_in_dir(&dir.0).unwrap();
        assert!(store.mark_started().await.unwrap());
        assert!(!store.mark_started().await.unwrap());
        drop(store);

        // A value this binary does not know (a newer one's, say) counts as unclean.
        Connection::open(dir.db()).unwrap().execute("UPDATE lifecycle SET value = 'paused'", []).unwrap();
        let store = SqliteStore::open_in_dir(&dir.0).unwrap();
        assert!(!store.mark_started().await.unwrap());
        assert_eq!(raw_count(&dir.db(), "lifecycle"), 1);
    }

    /// Set (to the database path) in the child process of
    /// [`acknowledged_appends_survive_sigkill`].
    const DURABILITY_CHILD_ENV: &str = "TETHER_STORE_DURABILITY_CHILD_DB";
    const DURABLE_SCOPE: &str = "durable";

    /// Size of the batch that starts after `last`: varied, and known to the checking parent.
    fn durable_batch_len(last: ScopeSeq) -> ScopeSeq {
        1 + last % 40
    }

    /// Every seq that ends a batch, up to `limit`.
    fn durable_batch_ends(limit: ScopeSeq) -> HashSet<ScopeSeq> {
        std::iter::successors(Some(0), |&last| Some(last + durable_batch_len(last)))
            .take_while(|&end| end <= limit)
            .collect()
    }

    /// The child of [`acknowledged_appends_survive_sigkill`]: appends batches to the scope
    /// forever (until killed), printing `acked <seq>` once each append has resolved, and
    /// saving a snapshot now and then. Does nothing when run as an ordinary test.
    #[tokio::test]
    #[ignore = "child process of acknowledged_appends_survive_sigkill"]
    async fn durability_child() {
        use std::io::Write;
        let Some(path) = std::env::var_os(DURABILITY_CHILD_ENV) else { return };
        let store = SqliteStore::open(Path::new(&path)).unwrap();
        let scope = store.create_scope(DURABLE_SCOPE, [7; 16], snapshot_at(0)).await.unwrap();
        let mut last = scope.last_seq();
        // Bounded so a parent that forgot to kill it cannot leave it running for long.
        for round in 1..=20_000_u32 {
            let len = durable_batch_len(last);
            store.append_changesets(DURABLE_SCOPE, entries(last + 1..=last + len)).await.unwrap();
            last += len;
            let mut out = std::io::stdout().lock();
            writeln!(out, "acked {last}").unwrap();
            out.flush().unwrap();
            if round % 16 == 0 {
                store.save_snapshot(DURABLE_SCOPE, last, snapshot_at(last)).await.unwrap();
            }
        }
    }

    #[cfg(unix)]
    #[test]
    fn acknowledged_appends_survive_sigkill() {
        use std::io::BufRead;
        use std::os::unix::process::ExitStatusExt;
        use std::process::{Command, Stdio};

        let dir = TempDir::new();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let mut acked = 0;
        // Several crashes in a row: each child continues the log the previous one left behind
        // (recovering the WAL of a killed writer first).
        for (round, kill_after) in [7_usize, 30, 64].into_iter().enumerate() {
            let mut child = Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "sqlite::tests::durability_child", "--include-ignored", "--nocapture"])
                .args(["--test-threads", "1"])
                .env(DURABILITY_CHILD_ENV, dir.db())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
            let mut seen = 0;
            for line in stdout.lines() {
                let line = line.unwrap();
                let Some(seq) = line.strip_prefix("acked ") else { continue };
                let seq: ScopeSeq = seq.parse().unwrap();
                assert!(seq > acked, "acks go up: {seq} after {acked}");
                acked = seq;
                seen += 1;
                if seen == kill_after {
                    // SIGKILL, in the middle of the stream: the next append is already queued
                    // or committing. Lines printed before the kill are still read below.
                    child.kill().unwrap();
                }
            }
            let status = child.wait().unwrap();
            assert!(seen >= kill_after, "round {round}: the child stopped after {seen} acks ({status})");
            assert_eq!(status.signal(), Some(9), "round {round}: the child was not killed ({status})");

            // Everything acknowledged is there, nothing half-written, and the log is whole.
            let store = SqliteStore::open(&dir.db()).unwrap();
            let scope = runtime.block_on(store.load_scope(DURABLE_SCOPE)).unwrap().unwrap();
            assert!(scope.last_seq() >= acked, "round {round}: acked {acked}, stored {}", scope.last_seq());
            assert!(
                durable_batch_ends(scope.last_seq()).contains(&scope.last_seq()),
                "round {round}: a batch was partly written (ends at {})",
                scope.last_seq()
            );
            assert_eq!(scope.snapshot, snapshot_at(scope.snapshot_seq));
            assert_eq!(scope.log, entries(scope.snapshot_seq + 1..=scope.last_seq()));
            // The next child starts from what is stored, which may include one batch that
            // committed but was never acknowledged.
            acked = scope.last_seq();
        }
    }
}
