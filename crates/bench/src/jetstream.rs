//! The `jetstream-sync` scenario: model sync on one scope over `/jetstream` (Jetstream Sync
//! protocol of npm `jetstream@0.13.4`), against Tether and, in the same run, against the
//! reference server (`tests/jetstream/reference-server.js`).
//!
//! Every connection is a real Jetstream session (over the bench's own WebSocket client,
//! [`crate::ws`]: one reusable read buffer per session, frames parsed in place; 100
//! listeners receive a million messages a second on a machine the server shares, and
//! every cycle they spend is taken from the server): `SessionCreate`, then
//! `ScopeFetch{Canvas}` (reply + `ScopeState`), then `ScopeSync`s. Each changeset is one
//! `change` fragment: the root's `name` set to `bench:<phase>:<writer>:<seq>` (default), or
//! `x`/`y` of a `Shape` each writer owns (created at setup) set to `<seq>`/`<phase·10000 +
//! writer>`. Either way every broadcast carries a stamp saying which changeset it is.
//!
//! Two phases, each bounded in time:
//!
//! - **throughput**: W writer sessions each keep up to P changesets in flight (pipelined:
//!   a new one goes out whenever a `ScopeSyncReply` comes back). Counted: accepted fragment
//!   replies per second. Writers also receive every other writer's changesets as
//!   broadcasts; those are counted and checked too.
//! - **latency**: R more sessions fetch the scope and only listen; the W writers send at a
//!   fixed total rate on a schedule (open loop: they never wait for replies; a cap on the
//!   changesets outstanding per writer only bounds memory if the server stops answering,
//!   and every time it holds a send back is reported). Ack latency is measured per changeset
//!   by `replyTo`, from the moment its frame was handed to the socket (and, separately,
//!   from its scheduled time, which also counts any lag of the bench). Broadcast latency
//!   is from that send to a listener parsing the `ScopeSync`. Each session checks with a
//!   bitmap that it got every accepted changeset exactly once and in order.
//!
//! Every session acknowledges the server's messages with `Ping{ack, resendMissing:false}`
//! every `--ack-interval-ms` or 1,000 messages (Tether drops a session that holds 10,000 unacknowledged
//! messages; the reference keeps them all) and answers nothing else.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::{BufRead as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, MissedTickBehavior};

use crate::jsonscan::{self, Kind};
use crate::server::{CpuSample, Target, fetch_metrics, rss_kib};
use crate::track::{Latencies, SeqTracker, latency_json, latency_line, new_histogram};
use crate::ws::{self, WsReader, WsWriter, op};

/// The scope every session fetches (the reference demo's shapes canvas).
const SCOPE: &str = "Canvas";
/// A stream of stamps per writer and phase: `y = phase * PHASE_STRIDE + writer`.
const PHASE_STRIDE: u64 = 10_000;
/// How long a drain may go without any progress before it gives up.
const DRAIN_STALL: Duration = Duration::from_secs(3);
/// Longest wait for one session's `SessionCreate` + `ScopeFetch`.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// A session also acknowledges as soon as this many server messages are unacknowledged
/// (whatever `--ack-interval-ms` says), far below Tether's `max_unacked` of 10,000.
const ACK_AFTER: u64 = 1000;
/// How long after the latency phase's window a late writer may still send changesets
/// that were due inside it (what it has not sent by then is reported as not sent).
const OPEN_LOOP_GRACE: Duration = Duration::from_secs(1);
/// Distinct error messages kept per phase.
const MAX_ERROR_KINDS: usize = 16;
/// Initial read buffer per session (it grows for a larger frame; it is never zeroed
/// between reads).
const READ_BUF: usize = 64 * 1024;

/// What each changeset changes.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// The root Canvas's `name` (every writer changes the same property).
    Name,
    /// `x` and `y` of a Shape per writer, created at setup.
    Shape,
}

/// Phases to run.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Closed-loop pipelined writers: accepted changesets/s.
    Throughput,
    /// Open-loop writers at a fixed rate plus listening sessions: ack and broadcast latency.
    Latency,
}

/// How hard one server is driven (Tether and the reference get their own).
#[derive(Debug, Clone)]
pub(crate) struct Shape {
    /// Throughput phase: changesets in flight per writer.
    pub(crate) pipeline: usize,
    /// Throughput phase: seconds of sending.
    pub(crate) duration: Duration,
    /// Latency phase: changesets per second offered, in total.
    pub(crate) rate: f64,
    /// Latency phase: seconds of sending.
    pub(crate) latency_duration: Duration,
    /// Latency phase: listening sessions.
    pub(crate) receivers: usize,
    /// Latency phase: changesets outstanding (sent, unanswered) per writer before the
    /// schedule is held back.
    pub(crate) max_outstanding: usize,
}

/// Where the reference server is and how it is bounded.
#[derive(Debug, Clone)]
pub(crate) struct ReferenceParams {
    /// `node`.
    pub(crate) node: PathBuf,
    /// The directory of `reference-server.js` (with `node_modules`).
    pub(crate) dir: PathBuf,
    /// Its load.
    pub(crate) shape: Shape,
}

/// Shape of the scenario.
#[derive(Debug, Clone)]
pub(crate) struct Params {
    /// Writer sessions.
    pub(crate) writers: usize,
    /// ScopeSync messages per client frame (1: each its own WebSocket message).
    pub(crate) per_frame: usize,
    /// What the changesets change.
    pub(crate) change: Change,
    /// Send changesets with `atomic: true`.
    pub(crate) atomic: bool,
    /// Phases, in order.
    pub(crate) phases: Vec<Phase>,
    /// How often every session acknowledges what it received.
    pub(crate) ack_interval: Duration,
    /// Longest wait for replies and broadcasts after sending stops.
    pub(crate) drain: Duration,
    /// Handshakes in flight at once.
    pub(crate) connect_concurrency: usize,
    /// Worker threads of the listeners' runtime (0: the writers').
    pub(crate) listener_threads: usize,
    /// Tether's load.
    pub(crate) tether: Shape,
    /// Also run against the reference server.
    pub(crate) reference: Option<ReferenceParams>,
    /// Progress lines on stderr.
    pub(crate) progress: bool,
}

/// One server under test.
#[derive(Debug, Clone)]
struct Endpoint {
    /// Where listening sessions are opened and run (see `--listener-threads`).
    listeners: tokio::runtime::Handle,
    label: &'static str,
    addr: SocketAddr,
    /// `Host` header and request path of the WebSocket handshake.
    host: String,
    path: String,
    /// `ws://host/path`, for the report.
    url: String,
    pid: Option<u32>,
    /// `/metrics` (Tether only).
    metrics: Option<(SocketAddr, String)>,
}

/// Changeset frames: what every writer needs to write them.
#[derive(Debug)]
struct Ctx {
    change: Change,
    atomic: bool,
    per_frame: usize,
    ack_interval: Duration,
    /// Shape UUID per writer (shape mode).
    shapes: Vec<String>,
}

/// A changeset sent and not answered yet.
#[derive(Debug, Clone, Copy)]
struct Pending {
    sent: Instant,
    scheduled: Option<Instant>,
}

/// An established session.
#[derive(Debug)]
struct Conn {
    rd: WsReader,
    wr: WsWriter,
    /// Writer or listener number.
    id: usize,
    /// Next client index (0 and 1 went to `SessionCreate` and `ScopeFetch`).
    next_index: u64,
    scope_index: u64,
    root: String,
    /// Highest server index received, and the last one acknowledged.
    max_server_index: u64,
    acked: u64,
    /// Largest `max_server_index - acked` seen at an acknowledgement.
    max_unacked: u64,
    pings_sent: u64,
    /// Changesets sent and not answered, by index.
    outstanding: HashMap<u64, Pending>,
    /// Set once the connection failed or closed.
    closed: Option<String>,
}

impl Conn {
    /// Queues a `Ping` acknowledging everything received, if anything is new (sent by the
    /// next [`WsWriter::flush`]).
    fn ack(&mut self) {
        if self.max_server_index <= self.acked {
            return;
        }
        self.max_unacked = self.max_unacked.max(self.max_server_index - self.acked);
        self.acked = self.max_server_index;
        self.pings_sent += 1;
        let acked = self.acked;
        self.wr.push_text_with(|b| {
            let _ = write!(b, r#"{{"type":"Ping","index":0,"ack":{acked},"resendMissing":false}}"#);
        });
    }

    /// Acknowledges (if anything is new) and sends it now.
    async fn ack_now(&mut self) -> anyhow::Result<()> {
        self.ack();
        self.wr.flush().await
    }
}

/// Counters every session of a phase adds to.
#[derive(Debug)]
struct Shared {
    phase: u64,
    /// Time base of `send_us`.
    epoch: Instant,
    sent: AtomicU64,
    replies: AtomicU64,
    accepted: AtomicU64,
    rejected: AtomicU64,
    /// Distinct broadcasts of this phase received, by all sessions together.
    broadcasts: AtomicU64,
    /// Writers whose connection ended (the phase ends early when all have).
    writers_closed: AtomicU64,
    /// Latency phase: when each changeset was sent (µs since `epoch`, plus one), by writer
    /// and sequence number, for the listeners' broadcast latency.
    send_us: Vec<Box<[AtomicU64]>>,
    /// Broadcast latency, recorded by every session a read at a time into the histogram
    /// of the thread it runs on (`thread_slot`): one per session (100 of them, ~40 KiB
    /// each in use) missed the cache on almost every record.
    broadcast: Latencies,
}

/// How a writer sends during a phase.
#[derive(Debug, Clone, Copy)]
enum Load {
    /// Up to `pipeline` in flight, until `until`.
    Closed { pipeline: usize, until: Instant },
    /// `total` changesets, the n-th at `start + n / rate`; none after `until` (those the
    /// cap held back until then are not sent, and reported).
    Open { start: Instant, until: Instant, rate: f64, total: u64, max_outstanding: usize },
}

/// What one session saw during a phase.
#[derive(Debug)]
struct ConnResult {
    writer: bool,
    sent: u64,
    accepted: u64,
    rejected: u64,
    replies: u64,
    late_replies: u64,
    ack: Histogram<u64>,
    ack_sched: Histogram<u64>,
    send_lag: Histogram<u64>,
    /// Broadcast latencies of the current read, not yet in `Shared::broadcast`.
    broadcast_batch: Vec<u64>,
    /// Counts not yet added to `Shared`'s (which every session updates: once per read,
    /// not once per message).
    unpublished: Unpublished,
    tracker: SeqTracker,
    stale: u64,
    empty_broadcasts: u64,
    unparsed: u64,
    errors: BTreeMap<String, u64>,
    held_back: u64,
}

/// Shards of `Shared::broadcast` (threads beyond this many share them).
const BROADCAST_SHARDS: usize = 16;

/// A number per thread, for `Shared::broadcast`: sessions on the same thread record into
/// the same histogram, which stays in that core's cache.
fn thread_slot() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    thread_local!(static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed));
    SLOT.with(|s| *s)
}

/// See `ConnResult::unpublished`.
#[derive(Debug, Default)]
struct Unpublished {
    replies: u64,
    accepted: u64,
    rejected: u64,
    broadcasts: u64,
}

impl ConnResult {
    /// Adds what this session counted since the last call to the phase's totals.
    fn publish(&mut self, s: &Shared) {
        let u = std::mem::take(&mut self.unpublished);
        for (n, total) in [
            (u.replies, &s.replies),
            (u.accepted, &s.accepted),
            (u.rejected, &s.rejected),
            (u.broadcasts, &s.broadcasts),
        ] {
            if n > 0 {
                total.fetch_add(n, Ordering::Relaxed);
            }
        }
        if !self.broadcast_batch.is_empty() {
            s.broadcast.record(thread_slot(), &self.broadcast_batch);
            self.broadcast_batch.clear();
        }
    }

    fn new(writer: bool) -> Self {
        Self {
            writer,
            sent: 0,
            accepted: 0,
            rejected: 0,
            replies: 0,
            late_replies: 0,
            ack: new_histogram(),
            ack_sched: new_histogram(),
            send_lag: new_histogram(),
            broadcast_batch: Vec::new(),
            unpublished: Unpublished::default(),
            tracker: SeqTracker::default(),
            stale: 0,
            empty_broadcasts: 0,
            unparsed: 0,
            errors: BTreeMap::new(),
            held_back: 0,
        }
    }
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).max(1)
}

/// Which changeset a broadcast carries: (phase, writer, seq).
fn stamp(fragments: &[u8], change: Change) -> Option<(u64, usize, u64)> {
    match change {
        Change::Name => {
            // A prebuilt searcher: building one per broadcast was 7 % of the bench's time.
            static NAME: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
                std::sync::LazyLock::new(|| memchr::memmem::Finder::new(br#""name":"bench:"#));
            let at = NAME.find(fragments)? + 14;
            let b = &fragments[at..];
            let (phase, n) = crate::ws::parse_u64(b)?;
            let b = b.get(n..)?.strip_prefix(b":")?;
            let (w, n) = crate::ws::parse_u64(b)?;
            let b = b.get(n..)?.strip_prefix(b":")?;
            let (seq, _) = crate::ws::parse_u64(b)?;
            Some((phase, usize::try_from(w).ok()?, seq))
        }
        Change::Shape => {
            static X: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
                std::sync::LazyLock::new(|| memchr::memmem::Finder::new(br#""x":"#));
            static Y: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
                std::sync::LazyLock::new(|| memchr::memmem::Finder::new(br#""y":"#));
            let seq = jsonscan::number_after(fragments, &X)?;
            let tag = jsonscan::number_after(fragments, &Y)?;
            Some((tag / PHASE_STRIDE, usize::try_from(tag % PHASE_STRIDE).ok()?, seq))
        }
    }
}

/// Who writes a `ScopeSync`: the session's scope index and root, and the writer number.
#[derive(Debug, Clone, Copy)]
struct Author<'a> {
    scope_index: u64,
    root: &'a str,
    id: usize,
}

/// Appends one `ScopeSync` message.
fn push_sync(out: &mut Vec<u8>, a: Author<'_>, index: u64, ctx: &Ctx, phase: u64, seq: u64) {
    let _ = write!(
        out,
        r#"{{"type":"ScopeSync","index":{index},"scopeIndex":{},"atomic":{},"fragments":["#,
        a.scope_index, ctx.atomic
    );
    match ctx.change {
        Change::Name => {
            let _ = write!(
                out,
                r#"{{"type":"change","uuid":"{}","clsName":"Canvas","properties":{{"name":"bench:{phase}:{}:{seq}"}}}}]}}"#,
                a.root, a.id
            );
        }
        Change::Shape => {
            let _ = write!(
                out,
                r#"{{"type":"change","uuid":"{}","clsName":"Shape","properties":{{"x":{seq},"y":{}}}}}]}}"#,
                ctx.shapes[a.id],
                phase * PHASE_STRIDE + a.id as u64
            );
        }
    }
}

/// When a read was done: for ack latency, and in µs since `Shared::epoch` plus one (as
/// `Shared::send_us`) for broadcast latency.
#[derive(Debug, Clone, Copy)]
struct ReadAt {
    now: Instant,
    us: u64,
}

impl ReadAt {
    fn now(s: &Shared) -> Self {
        let now = Instant::now();
        Self { now, us: now.saturating_duration_since(s.epoch).as_micros() as u64 + 1 }
    }
}

/// Handles one text frame from the server, received at `at`.
fn on_frame(
    max_server_index: &mut u64,
    outstanding: &mut HashMap<u64, Pending>,
    r: &mut ConnResult,
    text: &[u8],
    at: ReadAt,
    s: &Shared,
    ctx: &Ctx,
) {
    let now = at.now;
    let ok = jsonscan::messages(text, |m| {
        if m.index > *max_server_index {
            *max_server_index = m.index;
        }
        match m.kind {
            Kind::ScopeSyncReply => {
                let Some(p) = m.reply_to.and_then(|i| outstanding.remove(&i)) else {
                    // Not one of this phase's (a straggler from an earlier phase).
                    r.late_replies += 1;
                    return;
                };
                r.replies += 1;
                r.accepted += u64::from(m.replies_ok);
                r.rejected += u64::from(m.replies_err);
                r.unpublished.replies += 1;
                r.unpublished.accepted += u64::from(m.replies_ok);
                if m.replies_err > 0 {
                    r.unpublished.rejected += u64::from(m.replies_err);
                    if let Some(e) = m.first_error {
                        let e = String::from_utf8_lossy(&e[..e.len().min(200)]).into_owned();
                        if r.errors.len() < MAX_ERROR_KINDS || r.errors.contains_key(&e) {
                            *r.errors.entry(e).or_default() += 1;
                        }
                    }
                }
                r.ack.saturating_record(micros(now.duration_since(p.sent)));
                if let Some(t) = p.scheduled {
                    r.ack_sched.saturating_record(micros(now.duration_since(t)));
                }
            }
            Kind::ScopeSync => {
                let Some(frags) = m.fragments else {
                    r.unparsed += 1;
                    return;
                };
                if frags.iter().filter(|b| !b.is_ascii_whitespace()).take(3).count() == 2 {
                    // `[]`: the reference broadcasts a changeset of which nothing applied.
                    r.empty_broadcasts += 1;
                    return;
                }
                let Some((phase, w, seq)) = stamp(frags, ctx.change) else {
                    r.unparsed += 1;
                    return;
                };
                if phase != s.phase {
                    r.stale += 1;
                    return;
                }
                if r.tracker.on(w, seq) {
                    r.unpublished.broadcasts += 1;
                }
                let sent = s
                    .send_us
                    .get(w)
                    .and_then(|v| v.get(usize::try_from(seq).ok()?))
                    .map_or(0, |a| a.load(Ordering::Acquire));
                if sent > 0 {
                    r.broadcast_batch.push(at.us.saturating_sub(sent).max(1));
                }
            }
            Kind::Ping | Kind::Other => {}
        }
    });
    if ok.is_none() {
        r.unparsed += 1;
    }
}

/// Handles every complete frame in the read buffer, all as received now (one clock
/// reading per read, taken before any of them is parsed): text frames by [`on_frame`],
/// WebSocket pings answered (queued on the writer; the caller flushes). Then adds the
/// counts to the phase's. `false` when the connection is over (reason in `c.closed`).
fn on_frames(c: &mut Conn, r: &mut ConnResult, s: &Shared, ctx: &Ctx) -> bool {
    let at = ReadAt::now(s);
    let open = on_frames_at(c, r, at, s, ctx);
    r.publish(s);
    open
}

/// [`on_frames`] without the clock reading and the publishing.
fn on_frames_at(c: &mut Conn, r: &mut ConnResult, at: ReadAt, s: &Shared, ctx: &Ctx) -> bool {
    loop {
        let f = match c.rd.next_frame() {
            Ok(Some(f)) => f,
            Ok(None) => return true,
            Err(e) => {
                c.closed = Some(format!("error: {e:#}"));
                return false;
            }
        };
        let p = c.rd.payload(&f);
        match f.opcode {
            op::TEXT => on_frame(&mut c.max_server_index, &mut c.outstanding, r, p, at, s, ctx),
            op::PING => c.wr.push_frame(op::PONG, p),
            op::CLOSE => {
                c.closed = Some(if p.is_empty() {
                    "close".to_owned()
                } else {
                    format!("close {}", ws::close_reason(p))
                });
                return false;
            }
            _ => {}
        }
    }
}

/// After a read (`n`: its result): handles what arrived and sends any pong. `false` when
/// the connection is over (reason in `c.closed`).
async fn on_read(c: &mut Conn, r: &mut ConnResult, n: anyhow::Result<usize>, s: &Shared, ctx: &Ctx) -> bool {
    match n {
        Ok(0) => {
            c.closed = Some("eof".to_owned());
            return false;
        }
        Ok(_) => {}
        Err(e) => {
            c.closed = Some(format!("error: {e:#}"));
            return false;
        }
    }
    if !on_frames(c, r, s, ctx) {
        return false;
    }
    if let Err(e) = c.wr.flush().await {
        c.closed = Some(format!("error: {e:#}"));
        return false;
    }
    true
}

/// A writer for one phase. Returns the connection for the next phase.
async fn writer(
    mut c: Conn,
    load: Load,
    s: Arc<Shared>,
    ctx: Arc<Ctx>,
    mut stop: watch::Receiver<bool>,
) -> (Conn, ConnResult) {
    let mut r = ConnResult::new(true);
    let mut ack = tokio::time::interval(ctx.ack_interval);
    ack.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Open loop: a tick per millisecond sends what is due. Closed loop: wakes up to
    // notice the end of sending.
    let step = match load {
        Load::Open { .. } => Duration::from_millis(1),
        Load::Closed { .. } => Duration::from_millis(10),
    };
    let mut tick = tokio::time::interval(step);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut seq = 0u64;
    // Replies still owed from an earlier phase no longer count against the window.
    c.outstanding.clear();
    tokio::time::sleep_until(s.epoch).await;
    // What an earlier phase (or the setup) left in the read buffer.
    // (`false` only with `c.closed` set, which ends the loop.)
    on_frames(&mut c, &mut r, &s, &ctx);
    let mut next_ack = Instant::now() + ctx.ack_interval;
    while c.closed.is_none() {
        // Acknowledge here rather than in the select: a socket that always has a message
        // ready would starve that branch.
        let now = Instant::now();
        if now >= next_ack || c.max_server_index >= c.acked + ACK_AFTER {
            next_ack = now + ctx.ack_interval;
            c.ack();
        }
        // Send what the load allows now.
        let mut budget = match load {
            Load::Closed { pipeline, until } if now < until => pipeline.saturating_sub(c.outstanding.len()),
            Load::Closed { .. } => 0,
            Load::Open { until, .. } if now >= until => 0,
            Load::Open { start, rate, total, max_outstanding, .. } => {
                let due = if now < start {
                    0
                } else {
                    ((now.duration_since(start).as_secs_f64() * rate) as u64 + 1).min(total)
                };
                let want = usize::try_from(due.saturating_sub(seq)).unwrap_or(usize::MAX);
                let room = max_outstanding.saturating_sub(c.outstanding.len());
                if want > room {
                    r.held_back += 1;
                }
                want.min(room)
            }
        };
        while budget > 0 {
            let k = budget.min(ctx.per_frame.max(1));
            budget -= k;
            let sent = Instant::now();
            let author = Author { scope_index: c.scope_index, root: &c.root, id: c.id };
            // The frame is written straight into the socket's output buffer.
            c.wr.push_text_with(|frame| {
                if k > 1 {
                    frame.push(b'[');
                }
                for j in 0..k {
                    if j > 0 {
                        frame.push(b',');
                    }
                    let index = c.next_index;
                    c.next_index += 1;
                    push_sync(frame, author, index, &ctx, s.phase, seq);
                    let scheduled = match load {
                        Load::Open { start, rate, .. } => {
                            let t = start + Duration::from_secs_f64(seq as f64 / rate);
                            r.send_lag.saturating_record(micros(sent.saturating_duration_since(t)));
                            Some(t)
                        }
                        Load::Closed { .. } => None,
                    };
                    if let Some(slot) = s.send_us.get(author.id).and_then(|v| v.get(seq as usize)) {
                        slot.store(sent.duration_since(s.epoch).as_micros() as u64 + 1, Ordering::Release);
                    }
                    c.outstanding.insert(index, Pending { sent, scheduled });
                    seq += 1;
                }
                if k > 1 {
                    frame.push(b']');
                }
            });
            r.sent += k as u64;
            s.sent.fetch_add(k as u64, Ordering::Relaxed);
        }
        // The acknowledgement and the changesets, in one write.
        if let Err(e) = c.wr.flush().await {
            c.closed = Some(format!("error: {e:#}"));
            break;
        }
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            // Cancel-safe: `fill` only moves data within its buffer before the read, and
            // takes the bytes in only once the read has completed.
            n = c.rd.fill() => {
                if !on_read(&mut c, &mut r, n, &s, &ctx).await {
                    break;
                }
            }
            _ = ack.tick() => {}
            _ = tick.tick() => {}
        }
    }
    if c.closed.is_none() {
        let _ = tokio::time::timeout(Duration::from_secs(2), c.ack_now()).await;
    } else {
        s.writers_closed.fetch_add(1, Ordering::Relaxed);
    }
    (c, r)
}

/// A listening session for one phase.
async fn listener(
    mut c: Conn,
    s: Arc<Shared>,
    ctx: Arc<Ctx>,
    mut stop: watch::Receiver<bool>,
) -> (Conn, ConnResult) {
    let mut r = ConnResult::new(false);
    let mut ack = tokio::time::interval(ctx.ack_interval);
    ack.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // What the setup left in the read buffer.
    // (`false` only with `c.closed` set, which ends the loop.)
    on_frames(&mut c, &mut r, &s, &ctx);
    let mut next_ack = Instant::now() + ctx.ack_interval;
    while c.closed.is_none() {
        // As in `writer`: acknowledged here, the select's tick only wakes the loop up.
        let now = Instant::now();
        if now >= next_ack || c.max_server_index >= c.acked + ACK_AFTER {
            next_ack = now + ctx.ack_interval;
            if let Err(e) = c.ack_now().await {
                c.closed = Some(format!("error: {e:#}"));
                break;
            }
        }
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            // Cancel-safe, as in `writer`.
            n = c.rd.fill() => {
                if !on_read(&mut c, &mut r, n, &s, &ctx).await {
                    break;
                }
            }
            _ = ack.tick() => {}
        }
    }
    if c.closed.is_none() {
        let _ = tokio::time::timeout(Duration::from_secs(2), c.ack_now()).await;
    }
    (c, r)
}

/// Reads frames (parsed as JSON, flattened) until `want` says it has what it needs;
/// answers WebSocket pings on the way. What follows in the read buffer stays there, for
/// the phases.
async fn read_setup(
    rd: &mut WsReader,
    wr: &mut WsWriter,
    max_index: &mut u64,
    mut want: impl FnMut(&Value) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    loop {
        while let Some(f) = rd.next_frame()? {
            let p = rd.payload(&f);
            match f.opcode {
                op::TEXT => {}
                op::PING => {
                    wr.push_frame(op::PONG, p);
                    continue;
                }
                op::CLOSE => bail!("closed during setup: {}", ws::close_reason(p)),
                _ => continue,
            }
            let v: Value = serde_json::from_slice(p).context("setup frame is not JSON")?;
            let msgs = match v {
                Value::Array(a) => a,
                v => vec![v],
            };
            let mut done = false;
            for m in &msgs {
                if let Some(i) = m["index"].as_u64() {
                    *max_index = (*max_index).max(i);
                }
                done |= want(m)?;
            }
            if done {
                wr.flush().await?;
                return Ok(());
            }
        }
        wr.flush().await?;
        if rd.fill().await? == 0 {
            bail!("connection closed during setup");
        }
    }
}

/// Opens a session and fetches the scope.
async fn open_session(ep: &Endpoint, id: usize) -> anyhow::Result<Conn> {
    let (mut rd, mut wr) = ws::connect(ep.addr, &ep.host, &ep.path, None, READ_BUF, id as u64)
        .await
        .with_context(|| format!("WebSocket handshake with {}", ep.url))?;
    let mut max_index = 0;
    wr.send_text(br#"{"type":"SessionCreate","index":0,"version":"0.1.0","params":{}}"#).await?;
    read_setup(&mut rd, &mut wr, &mut max_index, |m| {
        if m["type"] != "SessionCreateReply" {
            return Ok(false);
        }
        if m["sessionToken"].is_string() { Ok(true) } else { bail!("session refused: {m}") }
    })
    .await?;
    let fetch = format!(r#"{{"type":"ScopeFetch","index":1,"name":"{SCOPE}","params":{{}}}}"#);
    wr.send_text(fetch.as_bytes()).await?;
    let (mut scope_index, mut root) = (None, None);
    read_setup(&mut rd, &mut wr, &mut max_index, |m| {
        match m["type"].as_str() {
            Some("ScopeFetchReply") if m["replyTo"] == 1 => {
                if !m["error"].is_null() {
                    bail!("ScopeFetch refused: {m}");
                }
                scope_index = m["scopeIndex"].as_u64();
            }
            Some("ScopeState") => root = m["rootUUID"].as_str().map(str::to_owned),
            _ => {}
        }
        Ok(scope_index.is_some() && root.is_some())
    })
    .await?;
    Ok(Conn {
        rd,
        wr,
        id,
        next_index: 2,
        scope_index: scope_index.unwrap_or(0),
        root: root.unwrap_or_default(),
        max_server_index: max_index,
        acked: 0,
        max_unacked: 0,
        pings_sent: 0,
        outstanding: HashMap::new(),
        closed: None,
    })
}

/// Opens `n` sessions, `concurrency` handshakes at once.
async fn open_sessions(ep: &Endpoint, n: usize, concurrency: usize) -> anyhow::Result<Vec<Conn>> {
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for id in 0..n {
        let (ep, gate) = (ep.clone(), Arc::clone(&gate));
        set.spawn(async move {
            let _permit = gate.acquire().await?;
            let r = tokio::time::timeout(SETUP_TIMEOUT, open_session(&ep, id)).await;
            r.map_err(|_| anyhow::anyhow!("session setup took over {} s", SETUP_TIMEOUT.as_secs()))?
        });
    }
    let mut conns = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        conns.push(r.context("session setup task")??);
    }
    conns.sort_by_key(|c| c.id);
    Ok(conns)
}

/// A UUID that is new for each run (shapes are created in a scope that may outlive it).
fn fresh_uuid(n: usize) -> String {
    let t = crate::track::now_nanos();
    let h = (t as u128) << 16 | n as u128;
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        (h >> 64) as u32,
        (h >> 48) as u16,
        (h >> 36) as u16 & 0xfff,
        (h >> 24) as u16 & 0xfff,
        h as u64 & 0xffff_ffff_ffff
    )
}

/// Shape mode: writer 0 adds one Shape per writer to the root's `shapes`.
async fn create_shapes(c: &mut Conn, shapes: &[String]) -> anyhow::Result<()> {
    let list = shapes.iter().map(|u| format!(r#""{u}""#)).collect::<Vec<_>>().join(",");
    let mut frags = format!(
        r#"{{"type":"change","uuid":"{}","clsName":"Canvas","properties":{{"shapes":[{list}]}}}}"#,
        c.root
    );
    for u in shapes {
        let _ = write!(
            frags,
            r#",{{"type":"add","uuid":"{u}","clsName":"Shape","properties":{{"x":0,"y":0,"width":10,"height":10,"color":255}}}}"#
        );
    }
    let index = c.next_index;
    c.next_index += 1;
    let msg = format!(
        r#"{{"type":"ScopeSync","index":{index},"scopeIndex":{},"atomic":false,"fragments":[{frags}]}}"#,
        c.scope_index
    );
    c.wr.send_text(msg.as_bytes()).await?;
    let mut max = c.max_server_index;
    let fut = read_setup(&mut c.rd, &mut c.wr, &mut max, |m| {
        if m["type"] != "ScopeSyncReply" || m["replyTo"] != index {
            return Ok(false);
        }
        let replies = m["fragmentReplies"].as_array().map(Vec::as_slice).unwrap_or_default();
        if replies.len() != shapes.len() + 1
            || replies.iter().any(|r| r.as_object().is_none_or(|o| !o.is_empty()))
        {
            bail!("creating the shapes failed: {m}");
        }
        Ok(true)
    });
    tokio::time::timeout(SETUP_TIMEOUT, fut).await.context("no reply to the shape setup")??;
    c.max_server_index = max;
    Ok(())
}

/// Runs one phase; returns the writers (for the next phase) and the phase report.
#[allow(clippy::too_many_arguments)]
async fn run_phase(
    ep: &Endpoint,
    phase: Phase,
    phase_no: u64,
    writers: Vec<Conn>,
    listeners: Vec<Conn>,
    shape: &Shape,
    ctx: &Arc<Ctx>,
    p: &Params,
) -> (Vec<Conn>, Value) {
    let w = writers.len();
    let r_n = listeners.len();
    let start = Instant::now() + Duration::from_millis(100);
    let (send_for, load_of): (Duration, Box<dyn Fn(usize) -> Load>) = match phase {
        Phase::Throughput => {
            let until = start + shape.duration;
            let pipeline = shape.pipeline.max(1);
            (shape.duration, Box::new(move |_| Load::Closed { pipeline, until }))
        }
        Phase::Latency => {
            let per = shape.rate / w.max(1) as f64;
            let total = (per * shape.latency_duration.as_secs_f64()).floor() as u64;
            let max_outstanding = shape.max_outstanding.max(1);
            let rate = shape.rate;
            let latency_duration = shape.latency_duration;
            (
                shape.latency_duration,
                Box::new(move |i| Load::Open {
                    // Writers interleave: writer i starts i/rate after writer 0.
                    start: start + Duration::from_secs_f64(i as f64 / rate),
                    // A writer running late at the end may still send what was due
                    // within the window, for up to `OPEN_LOOP_GRACE`.
                    until: start + latency_duration + OPEN_LOOP_GRACE,
                    rate: per,
                    total,
                    max_outstanding,
                }),
            )
        }
    };
    let send_us = match phase {
        Phase::Latency => {
            let per =
                (shape.rate / w.max(1) as f64 * shape.latency_duration.as_secs_f64()).ceil() as usize + 1;
            (0..w).map(|_| (0..per).map(|_| AtomicU64::new(0)).collect::<Box<[_]>>()).collect()
        }
        Phase::Throughput => Vec::new(),
    };
    let s = Arc::new(Shared {
        phase: phase_no,
        epoch: start,
        sent: AtomicU64::new(0),
        replies: AtomicU64::new(0),
        accepted: AtomicU64::new(0),
        rejected: AtomicU64::new(0),
        broadcasts: AtomicU64::new(0),
        writers_closed: AtomicU64::new(0),
        send_us,
        broadcast: Latencies::new(BROADCAST_SHARDS),
    });
    let metrics0 = match &ep.metrics {
        Some((a, h)) => fetch_metrics(*a, h).await,
        None => None,
    };
    let rss0 = ep.pid.and_then(rss_kib);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut wtasks = Vec::with_capacity(w);
    for c in writers {
        let load = load_of(c.id);
        wtasks.push(tokio::spawn(writer(c, load, Arc::clone(&s), Arc::clone(ctx), stop_rx.clone())));
    }
    let mut ltasks = Vec::with_capacity(r_n);
    for c in listeners {
        ltasks.push(ep.listeners.spawn(listener(c, Arc::clone(&s), Arc::clone(ctx), stop_rx.clone())));
    }
    tokio::time::sleep_until(start).await;
    let cpu0 = CpuSample::now(ep.pid);
    let send_end = start + send_for;
    // Sending window, with a line per second.
    let mut per_second = Vec::new();
    let mut last = 0u64;
    let mut next = start + Duration::from_secs(1);
    let accepted_at_start = s.accepted.load(Ordering::Relaxed);
    let mut ended_early = false;
    while Instant::now() < send_end {
        if s.writers_closed.load(Ordering::Relaxed) >= w as u64 {
            ended_early = true;
            break;
        }
        tokio::time::sleep_until(next.min(send_end).min(Instant::now() + Duration::from_millis(100))).await;
        if Instant::now() >= next {
            let a = s.accepted.load(Ordering::Relaxed);
            per_second.push(a - last);
            if p.progress {
                eprintln!(
                    "  [{} {}] {:>3} s: {} accepted/s, sent {}, replies {}, broadcasts {}",
                    ep.label,
                    phase_name(phase),
                    per_second.len(),
                    a - last,
                    s.sent.load(Ordering::Relaxed),
                    s.replies.load(Ordering::Relaxed),
                    s.broadcasts.load(Ordering::Relaxed)
                );
            }
            last = a;
            next += Duration::from_secs(1);
        }
    }
    let mut cpu = cpu0.since(ep.pid);
    // What neither the server nor the bench used: other processes (and kernel threads). A
    // run where this is large shared the machine with someone else.
    if let (Some(m), Some(a), Some(b)) =
        (cpu["machine_pct"].as_f64(), cpu["server_pct"].as_f64(), cpu["bench_pct"].as_f64())
    {
        cpu["other_pct"] = json!((m - a - b).max(0.0));
    }
    let window_s = Instant::now().duration_since(start).as_secs_f64();
    let accepted_in_window = s.accepted.load(Ordering::Relaxed) - accepted_at_start;
    let rss1 = ep.pid.and_then(rss_kib);
    // Drain: every reply, and every accepted changeset at every other session.
    let drain_t0 = Instant::now();
    let drain_end = drain_t0 + p.drain;
    let mut progress_mark = (0, 0, Instant::now());
    let drained = loop {
        let (sent, replies, accepted, bc) = (
            s.sent.load(Ordering::Relaxed),
            s.replies.load(Ordering::Relaxed),
            s.accepted.load(Ordering::Relaxed),
            s.broadcasts.load(Ordering::Relaxed),
        );
        // Each accepted changeset goes to every session but its sender (one fragment
        // per changeset).
        let want = accepted * (w + r_n).saturating_sub(1) as u64;
        if replies >= sent && bc >= want {
            break true;
        }
        let now = Instant::now();
        if now > drain_end {
            break false;
        }
        if (replies, bc) != (progress_mark.0, progress_mark.1) {
            progress_mark = (replies, bc, now);
        } else if now.duration_since(progress_mark.2) > DRAIN_STALL {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let drain_s = drain_t0.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    let metrics1 = match &ep.metrics {
        Some((a, h)) => fetch_metrics(*a, h).await,
        None => None,
    };
    // Collect. A task stuck in a write (a server that stopped reading) is abandoned.
    let mut writers_back = Vec::with_capacity(w);
    let mut results = Vec::with_capacity(w + r_n);
    let mut closed: BTreeMap<String, u64> = BTreeMap::new();
    let mut stuck = 0u64;
    let (mut max_unacked, mut pings) = (0u64, 0u64);
    let collect_by = Instant::now() + Duration::from_secs(5);
    for (is_writer, t) in wtasks.into_iter().map(|t| (true, t)).chain(ltasks.into_iter().map(|t| (false, t)))
    {
        let abort = t.abort_handle();
        match tokio::time::timeout_at(collect_by, t).await {
            Ok(Ok((c, r))) => {
                if let Some(why) = &c.closed {
                    *closed.entry(why.clone()).or_default() += 1;
                }
                max_unacked = max_unacked.max(c.max_unacked);
                pings += c.pings_sent;
                results.push(r);
                if is_writer && c.closed.is_none() {
                    writers_back.push(c);
                } else if !is_writer {
                    let mut c = c;
                    let _ = tokio::time::timeout(Duration::from_secs(1), c.wr.close()).await;
                }
            }
            Ok(Err(e)) => *closed.entry(format!("task failed: {e}")).or_default() += 1,
            Err(_) => {
                abort.abort();
                stuck += 1;
            }
        }
    }
    let accepted_total = s.accepted.load(Ordering::Relaxed);
    let mut ack = new_histogram();
    let mut ack_sched = new_histogram();
    let mut lag = new_histogram();
    let bcast = s.broadcast.merged();
    let (mut dup, mut ooo, mut stale, mut empty, mut unparsed, mut late, mut held) = (0, 0, 0, 0, 0, 0, 0);
    let (mut missing_w, mut missing_l, mut got_w, mut got_l, mut complete_l, mut extra) = (0, 0, 0, 0, 0, 0);
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for r in &results {
        let _ = ack.add(&r.ack);
        let _ = ack_sched.add(&r.ack_sched);
        let _ = lag.add(&r.send_lag);
        dup += r.tracker.duplicates;
        ooo += r.tracker.out_of_order;
        stale += r.stale;
        empty += r.empty_broadcasts;
        unparsed += r.unparsed + r.tracker.unparsed;
        late += r.late_replies;
        held += r.held_back;
        for (k, v) in &r.errors {
            *errors.entry(k.clone()).or_default() += v;
        }
        let got = r.tracker.distinct_total();
        let expected = if r.writer { accepted_total - r.accepted } else { accepted_total };
        extra += got.saturating_sub(expected);
        if r.writer {
            got_w += got;
            missing_w += expected.saturating_sub(got);
        } else {
            got_l += got;
            missing_l += expected.saturating_sub(got);
            if got >= expected {
                complete_l += 1;
            }
        }
    }
    let sent = s.sent.load(Ordering::Relaxed);
    let replies = s.replies.load(Ordering::Relaxed);
    let pick = |m: &Option<BTreeMap<String, f64>>, k: &str| m.as_ref().and_then(|m| m.get(k).copied());
    let server_changesets = match (
        pick(&metrics0, "tether_sync_changesets_total"),
        pick(&metrics1, "tether_sync_changesets_total"),
    ) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let mut report = json!({
        "phase": phase_name(phase),
        "writers": w,
        "sent": sent,
        "send_window_s": window_s,
        "sent_per_s": sent as f64 / window_s.max(1e-3),
        "replies": replies,
        "unanswered": sent.saturating_sub(replies),
        "replies_not_of_this_phase": late,
        "accepted_fragments": accepted_total,
        "rejected_fragments": s.rejected.load(Ordering::Relaxed),
        "accepted_in_window": accepted_in_window,
        "accepted_per_s": accepted_in_window as f64 / window_s.max(1e-3),
        "per_second": per_second,
        "ack_latency": latency_json(&ack),
        "_ack_line": latency_line(&ack),
        "broadcasts": {
            "expected_at_writers": accepted_total * w.saturating_sub(1) as u64,
            "received_at_writers": got_w,
            "missing_at_writers": missing_w,
            "expected_at_listeners": accepted_total * r_n as u64,
            "received_at_listeners": got_l,
            "missing_at_listeners": missing_l,
            "listeners_complete": complete_l,
            "duplicates": dup,
            "out_of_order": ooo,
            "unexpected": extra,
            "stale_from_earlier_phase": stale,
            "empty": empty,
        },
        "unparsed": unparsed,
        "drained": drained,
        "ended_early_all_writers_closed": ended_early,
        "drain_s": drain_s,
        "closed": closed,
        "stuck_tasks": stuck,
        "errors": errors,
        "acks": {"pings_sent": pings, "max_unacked_at_ack": max_unacked},
        "cpu": cpu,
        "server_rss_kib": {"before": rss0, "after_sending": rss1},
        "server_changesets_applied": server_changesets,
    });
    if let Some(o) = report.as_object_mut() {
        match phase {
            Phase::Throughput => {
                o.insert("pipeline".to_owned(), json!(shape.pipeline));
            }
            Phase::Latency => {
                let per =
                    (shape.rate / w.max(1) as f64 * shape.latency_duration.as_secs_f64()).floor() as u64;
                let planned = per * w as u64;
                o.insert("offered_per_s".to_owned(), json!(shape.rate));
                o.insert("planned".to_owned(), json!(planned));
                o.insert("not_sent_held_back".to_owned(), json!(planned.saturating_sub(sent)));
                o.insert("listeners".to_owned(), json!(r_n));
                o.insert("max_outstanding_per_writer".to_owned(), json!(shape.max_outstanding));
                o.insert("schedule_held_back_ticks".to_owned(), json!(held));
                o.insert("ack_latency_from_schedule".to_owned(), latency_json(&ack_sched));
                o.insert("send_lag".to_owned(), latency_json(&lag));
                o.insert("broadcast_latency".to_owned(), latency_json(&bcast));
                o.insert("_sched_line".to_owned(), json!(latency_line(&ack_sched)));
                o.insert("_lag_line".to_owned(), json!(latency_line(&lag)));
                o.insert("_bcast_line".to_owned(), json!(latency_line(&bcast)));
            }
        }
    }
    (writers_back, report)
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Throughput => "throughput",
        Phase::Latency => "latency",
    }
}

/// Runs every phase against one server.
async fn run_target(ep: &Endpoint, shape: &Shape, p: &Params) -> anyhow::Result<Value> {
    if p.progress {
        eprintln!("[{}] {} writer sessions on {SCOPE} ({})", ep.label, p.writers, ep.url);
    }
    let mut writers = open_sessions(ep, p.writers.max(1), p.connect_concurrency).await?;
    let shapes: Vec<String> = (0..writers.len()).map(fresh_uuid).collect();
    if p.change == Change::Shape {
        create_shapes(&mut writers[0], &shapes).await?;
    }
    let ctx = Arc::new(Ctx {
        change: p.change,
        atomic: p.atomic,
        per_frame: p.per_frame.max(1),
        ack_interval: p.ack_interval,
        shapes,
    });
    let mut out = serde_json::Map::new();
    out.insert("label".to_owned(), json!(ep.label));
    out.insert("url".to_owned(), json!(ep.url));
    out.insert("pid".to_owned(), json!(ep.pid));
    for (i, &phase) in p.phases.iter().enumerate() {
        let listeners = match phase {
            Phase::Latency => {
                if p.progress {
                    eprintln!("[{}] {} listening sessions", ep.label, shape.receivers);
                }
                // Opened on the listeners' runtime, so their sockets are driven by it.
                let (ep2, n, cc) = (ep.clone(), shape.receivers, p.connect_concurrency);
                ep.listeners.spawn(async move { open_sessions(&ep2, n, cc).await }).await??
            }
            Phase::Throughput => Vec::new(),
        };
        if writers.len() < p.writers.max(1) {
            out.insert(
                phase_name(phase).to_owned(),
                json!({"skipped": format!("{} of {} writers left", writers.len(), p.writers)}),
            );
            continue;
        }
        if p.progress {
            eprintln!("[{}] phase {}", ep.label, phase_name(phase));
        }
        let (back, report) = run_phase(ep, phase, i as u64 + 1, writers, listeners, shape, &ctx, p).await;
        writers = back;
        out.insert(phase_name(phase).to_owned(), report);
        // Let the server settle (and its CPU reading start clean) between phases.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for mut c in writers {
        let _ = tokio::time::timeout(Duration::from_secs(1), c.wr.close()).await;
    }
    Ok(Value::Object(out))
}

/// The reference server, stopped when dropped.
#[derive(Debug)]
struct Reference {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Reference {
    fn start(node: &Path, dir: &Path) -> anyhow::Result<Self> {
        let dir = &dir.canonicalize().with_context(|| {
            format!("--reference-dir {}: not found (run from the repository root)", dir.display())
        })?;
        let script = dir.join("reference-server.js");
        anyhow::ensure!(script.is_file(), "{} not found (--reference-dir)", script.display());
        anyhow::ensure!(
            dir.join("node_modules/jetstream").is_dir(),
            "{}/node_modules/jetstream is missing: run `cd {} && npm ci --omit=dev` once",
            dir.display(),
            dir.display()
        );
        let log = std::env::temp_dir().join(format!("tether-bench-reference-{}.log", std::process::id()));
        let mut child = Command::new(node)
            .arg(&script)
            .args(["--port", "0"])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("start {} {}", node.display(), script.display()))?;
        let stdout = child.stdout.take().context("reference stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stdout).lines();
            if let Some(Ok(l)) = lines.next() {
                let _ = tx.send(l);
            }
            // Keep the pipe open (and drained) for the life of the process.
            for _ in lines {}
        });
        let Ok(line) = rx.recv_timeout(Duration::from_secs(15)) else {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "the reference server did not print `listening <port>` within 15 s: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        let port = line
            .strip_prefix("listening ")
            .and_then(|p| p.trim().parse().ok())
            .with_context(|| format!("unexpected first line from the reference server: {line}"))?;
        Ok(Self { child, port, log })
    }

    /// Whether it is still running, and what it wrote to stderr.
    fn status(&mut self) -> Value {
        let exited = self.child.try_wait().ok().flatten().map(|s| s.to_string());
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let uncaught = log.matches("uncaught exception").count();
        let tail: String = log.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
        json!({"exited": exited, "uncaught_exceptions": uncaught, "stderr_tail": tail})
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = std::fs::remove_file(&self.log);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The `[sync]` tables of a spawned Tether: `tests/jetstream/tether/serve.sh`'s scopes, and
/// `inbound_rate` (the default, 10,000 messages/s per socket, closes a writer with 4008
/// once it sends faster; 0 turns it off, as `limits.inbound_rate = 0` does for the other
/// scenarios). Everything else (durability, `max_unacked`, `scope_queue`,
/// `snapshot_every`) keeps its default unless `extra` (`KEY=VALUE` lines) sets it.
pub(crate) fn server_toml(schema: &Path, inbound_rate: u32, extra: &[String]) -> anyhow::Result<String> {
    let schema = schema.canonicalize().with_context(|| {
        format!("--schema {}: not found (run from the repository root)", schema.display())
    })?;
    let schema = schema.to_str().context("schema path is not UTF-8")?;
    let mut extra_lines = String::new();
    for kv in extra {
        anyhow::ensure!(kv.contains('='), "--sync-option {kv}: expected KEY=VALUE (a TOML line)");
        extra_lines.push_str(kv);
        extra_lines.push('\n');
    }
    Ok(format!(
        "[sync]\nschema = {schema:?}\ninbound_rate = {inbound_rate}\n{extra_lines}\
         [[sync.scopes]]\nname = \"Canvas\"\nroot = \"Canvas\"\ninitial = {{ name = \"Shapes Demo\" }}\n\
         [[sync.scopes]]\nname = \"ChatRoom\"\nroot = \"ChatRoom\"\ninitial = {{ name = \"Chat Demo\" }}\n"
    ))
}

fn shape_json(s: &Shape) -> Value {
    json!({
        "pipeline": s.pipeline,
        "duration_s": s.duration.as_secs_f64(),
        "rate": s.rate,
        "latency_duration_s": s.latency_duration.as_secs_f64(),
        "receivers": s.receivers,
        "max_outstanding": s.max_outstanding,
    })
}

/// Runs the scenario against `target` (Tether) and, if asked, the reference server.
pub(crate) async fn run(target: &Target, p: Params, server_pid: Option<u32>) -> anyhow::Result<Value> {
    let own = if p.listener_threads > 0 {
        Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(p.listener_threads)
                .thread_name("listeners")
                .enable_all()
                .build()
                .context("the listeners' runtime")?,
        )
    } else {
        None
    };
    let listeners = own.as_ref().map_or_else(tokio::runtime::Handle::current, |rt| rt.handle().clone());
    let result = run_all(target, &p, server_pid, listeners).await;
    if let Some(rt) = own {
        // Not dropped here: dropping a runtime inside another one's task panics.
        rt.shutdown_background();
    }
    result
}

async fn run_all(
    target: &Target,
    p: &Params,
    server_pid: Option<u32>,
    listeners: tokio::runtime::Handle,
) -> anyhow::Result<Value> {
    let tether = Endpoint {
        listeners: listeners.clone(),
        label: "tether",
        addr: target.ws,
        host: target.ws_host.clone(),
        path: target.ws_path.clone(),
        url: format!("ws://{}{}", target.ws_host, target.ws_path),
        pid: server_pid,
        metrics: Some((target.api, target.api_host.clone())),
    };
    let t = run_target(&tether, &p.tether, p).await?;
    let mut report = json!({
        "scenario": "jetstream-sync",
        "scope": SCOPE,
        "writers": p.writers,
        "per_frame": p.per_frame,
        "change": format!("{:?}", p.change).to_lowercase(),
        "atomic": p.atomic,
        "ack_interval_ms": p.ack_interval.as_millis() as u64,
        "drain_s": p.drain.as_secs_f64(),
        "tether_load": shape_json(&p.tether),
        "tether": t,
    });
    if let Some(rp) = &p.reference {
        if p.progress {
            eprintln!("starting the reference server ({})", rp.dir.join("reference-server.js").display());
        }
        let r = match Reference::start(&rp.node, &rp.dir) {
            Ok(mut server) => {
                let addr = SocketAddr::from(([127, 0, 0, 1], server.port));
                let ep = Endpoint {
                    listeners: listeners.clone(),
                    label: "reference",
                    addr,
                    host: addr.to_string(),
                    path: "/jetstream".to_owned(),
                    url: format!("ws://{addr}/jetstream"),
                    pid: Some(server.child.id()),
                    metrics: None,
                };
                let res = run_target(&ep, &rp.shape, p).await;
                let status = server.status();
                let rss = rss_kib(server.child.id());
                let mut v = res.unwrap_or_else(|e| json!({"label": "reference", "error": format!("{e:#}")}));
                if let Some(o) = v.as_object_mut() {
                    o.insert("process".to_owned(), status);
                    o.insert("rss_kib_at_end".to_owned(), json!(rss));
                }
                v
            }
            Err(e) => json!({"label": "reference", "error": format!("{e:#}")}),
        };
        report["reference_load"] = shape_json(&rp.shape);
        report["reference"] = r;
    }
    report["targets"] = targets(&report);
    Ok(report)
}

/// Issue 4's targets, from a report.
fn targets(r: &Value) -> Value {
    let t = &r["tether"];
    let thr = t["throughput"]["accepted_per_s"].as_f64();
    let p99 = t["latency"]["ack_latency"]["p99_ms"].as_f64();
    let offered = t["latency"]["offered_per_s"].as_f64();
    let achieved = t["latency"]["sent_per_s"].as_f64();
    let b = &t["latency"]["broadcasts"];
    let complete = t["latency"].get("broadcasts").map(|_| {
        b["missing_at_listeners"] == 0
            && b["missing_at_writers"] == 0
            && b["duplicates"] == 0
            && b["out_of_order"] == 0
            && t["latency"]["unanswered"] == 0
    });
    let ref_thr = r["reference"]["throughput"]["accepted_per_s"].as_f64();
    let ratio = match (thr, ref_thr) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let lat_ratio = match (p99, r["reference"]["latency"]["ack_latency"]["p99_ms"].as_f64()) {
        (Some(a), Some(b)) if a > 0.0 => Some(b / a),
        _ => None,
    };
    json!({
        "throughput_per_s": thr,
        "throughput_met": thr.map(|x| x >= 50_000.0),
        "ack_p99_ms": p99,
        "ack_p99_met": p99.map(|x| x < 10.0),
        "latency_offered_per_s": offered,
        "latency_achieved_send_per_s": achieved,
        "every_listener_got_every_changeset": complete,
        "reference_throughput_per_s": ref_thr,
        "throughput_ratio": ratio,
        "throughput_ratio_met": ratio.map(|x| x >= 20.0),
        "reference_over_tether_ack_p99": lat_ratio,
    })
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn target_summary(s: &mut String, t: &Value) {
    let label = t["label"].as_str().unwrap_or("?");
    let _ = writeln!(s, "-- {label} --");
    if let Some(e) = t["error"].as_str() {
        let _ = writeln!(s, "error            {e}");
    }
    for ph in ["throughput", "latency"] {
        let r = &t[ph];
        if r.is_null() {
            continue;
        }
        if let Some(why) = r["skipped"].as_str() {
            let _ = writeln!(s, "{ph:<16} skipped: {why}");
            continue;
        }
        let b = &r["broadcasts"];
        match ph {
            "throughput" => {
                let _ = writeln!(
                    s,
                    "throughput       {:.0} accepted changesets/s ({} writers x {} in flight, {:.1} s); \
                     sent {}, replies {}, accepted {}, rejected {}",
                    f(&r["accepted_per_s"]),
                    r["writers"],
                    r["pipeline"],
                    f(&r["send_window_s"]),
                    r["sent"],
                    r["replies"],
                    r["accepted_fragments"],
                    r["rejected_fragments"]
                );
                let _ = writeln!(s, "  ack latency    {}", r["_ack_line"].as_str().unwrap_or(""));
            }
            _ => {
                let _ = writeln!(
                    s,
                    "latency          offered {:.0}/s, sent {:.0}/s over {:.1} s by {} writers, {} listeners; \
                     replies {}/{}, accepted {}, rejected {}",
                    f(&r["offered_per_s"]),
                    f(&r["sent_per_s"]),
                    f(&r["send_window_s"]),
                    r["writers"],
                    r["listeners"],
                    r["replies"],
                    r["sent"],
                    r["accepted_fragments"],
                    r["rejected_fragments"]
                );
                let _ = writeln!(s, "  ack latency    {}", r["_ack_line"].as_str().unwrap_or(""));
                let _ = writeln!(s, "  from schedule  {}", r["_sched_line"].as_str().unwrap_or(""));
                let _ = writeln!(s, "  bench send lag {}", r["_lag_line"].as_str().unwrap_or(""));
                let _ = writeln!(s, "  broadcast      {}", r["_bcast_line"].as_str().unwrap_or(""));
                let _ = writeln!(
                    s,
                    "  listeners      {}/{} complete, {} of {} broadcasts received",
                    b["listeners_complete"],
                    r["listeners"],
                    b["received_at_listeners"],
                    b["expected_at_listeners"]
                );
                if r["schedule_held_back_ticks"].as_u64().unwrap_or(0) > 0 {
                    let _ = writeln!(
                        s,
                        "  held back      {} ticks at {} outstanding per writer (server not keeping up); \
                         {} of {} planned changesets never sent",
                        r["schedule_held_back_ticks"],
                        r["max_outstanding_per_writer"],
                        r["not_sent_held_back"],
                        r["planned"]
                    );
                }
            }
        }
        let _ = writeln!(
            s,
            "  integrity      missing {} at listeners, {} at writers; dup {}, out-of-order {}, unexpected {}, \
             empty {}, unparsed {}; unanswered {}; drained {} in {:.1} s",
            b["missing_at_listeners"],
            b["missing_at_writers"],
            b["duplicates"],
            b["out_of_order"],
            b["unexpected"],
            b["empty"],
            r["unparsed"],
            r["unanswered"],
            r["drained"],
            f(&r["drain_s"])
        );
        let _ = writeln!(
            s,
            "  CPU (100=core)  server {} / bench {} / machine {} (others {}) of {}; server RSS {} -> {} KiB; \
             max unacked at ack {}",
            r["cpu"]["server_pct"],
            r["cpu"]["bench_pct"],
            r["cpu"]["machine_pct"],
            r["cpu"]["other_pct"],
            r["cpu"]["cores"].as_u64().unwrap_or(1) * 100,
            r["server_rss_kib"]["before"],
            r["server_rss_kib"]["after_sending"],
            r["acks"]["max_unacked_at_ack"]
        );
        if r["closed"].as_object().is_some_and(|m| !m.is_empty())
            || r["stuck_tasks"].as_u64().unwrap_or(0) > 0
        {
            let _ = writeln!(s, "  closed         {} (stuck tasks {})", r["closed"], r["stuck_tasks"]);
        }
        if r["errors"].as_object().is_some_and(|m| !m.is_empty()) {
            let _ = writeln!(s, "  errors         {}", r["errors"]);
        }
    }
    if !t["process"].is_null() {
        let _ = writeln!(s, "process          {} (RSS {} KiB at the end)", t["process"], t["rss_kib_at_end"]);
    }
}

/// Human summary of a `jetstream-sync` report.
pub(crate) fn summary(r: &Value) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "== jetstream-sync == scope {}, change {}, atomic {}, {} writers, {} ScopeSync per frame, ack every {} ms",
        r["scope"], r["change"], r["atomic"], r["writers"], r["per_frame"], r["ack_interval_ms"]
    );
    target_summary(&mut s, &r["tether"]);
    if !r["reference"].is_null() {
        target_summary(&mut s, &r["reference"]);
    }
    let t = &r["targets"];
    let yes = |v: &Value| match v.as_bool() {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "n/a",
    };
    let _ = writeln!(s, "-- targets --");
    let _ = writeln!(
        s,
        "throughput >= 50,000/s  {:.0}/s: {}",
        f(&t["throughput_per_s"]),
        yes(&t["throughput_met"])
    );
    let _ = writeln!(
        s,
        "ack p99 < 10 ms         {:.2} ms at {:.0}/s offered ({:.0}/s sent): {}",
        f(&t["ack_p99_ms"]),
        f(&t["latency_offered_per_s"]),
        f(&t["latency_achieved_send_per_s"]),
        yes(&t["ack_p99_met"])
    );
    let _ = writeln!(
        s,
        "every listener got all  {}",
        match t["every_listener_got_every_changeset"].as_bool() {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "n/a",
        }
    );
    let _ = writeln!(
        s,
        "tether / reference      {:.1}x ({:.0}/s vs {:.0}/s): {}",
        f(&t["throughput_ratio"]),
        f(&t["throughput_per_s"]),
        f(&t["reference_throughput_per_s"]),
        yes(&t["throughput_ratio_met"])
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps() {
        let f =
            br#"[{"type":"change","uuid":"u","clsName":"Canvas","properties":{"name":"bench:2:5:1234"}}]"#;
        assert_eq!(stamp(f, Change::Name), Some((2, 5, 1234)));
        let f = br#"[{"type":"change","uuid":"u","clsName":"Shape","properties":{"x":77,"y":20003}}]"#;
        assert_eq!(stamp(f, Change::Shape), Some((2, 3, 77)));
        assert_eq!(stamp(b"[]", Change::Name), None);
    }

    #[test]
    fn uuids_look_like_uuids() {
        let u = fresh_uuid(3);
        assert_eq!(u.len(), 36);
        assert_eq!(u.as_bytes()[14], b'4');
        assert_eq!(u.as_bytes()[19], b'8');
        assert_ne!(fresh_uuid(1), fresh_uuid(2));
    }
}
