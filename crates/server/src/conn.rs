//! The WebSocket connection loop every dialect runs on.
//!
//! One task per connection does everything: reads frames, answers them through its
//! [`Dialect`], drains the connection's [`Outbox`] into coalesced writes, sends
//! heartbeats, enforces the idle timeout and the inbound rate limit, and closes with a
//! documented code. The loop is generic over `Sink + Stream` so tests can drive it with
//! in-memory channels and a paused clock, and so the WebSocket library can be swapped.
//!
//! Close codes (see `docs/protocol.md` § Close codes):
//! 1000 normal, 1001 server shutdown (reconnect), 1002 protocol error, 1003 binary frame
//! where only text is allowed, 1007 invalid UTF-8, 1009 message too big,
//! 4001 idle timeout, 4002 slow consumer, 4003 credential expired or revoked, 4004 no
//! `connect` in time, 4008 rate limit abuse.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tether_engine::TokenBucket;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::outbox::{Frame, Outbox, Overflowed};

/// Documented close codes.
pub mod close {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down; reconnect (to another node).
    pub const GOING_AWAY: u16 = 1001;
    /// The peer violated the WebSocket protocol.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A binary frame where only text frames are allowed.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// A text frame that is not valid UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// A message above `limits.max_message_bytes`.
    pub const TOO_BIG: u16 = 1009;
    /// Nothing received for longer than the idle timeout.
    pub const IDLE_TIMEOUT: u16 = 4001;
    /// The client did not read fast enough and its queue overflowed.
    pub const SLOW_CONSUMER: u16 = 4002;
    /// The connection's credential expired (JWT not refreshed within the grace period) or
    /// was revoked, and the server does not allow anonymous connections.
    pub const AUTH_EXPIRED: u16 = 4003;
    /// No `connect` within the connect timeout.
    pub const CONNECT_TIMEOUT: u16 = 4004;
    /// The client kept sending far above its rate limit.
    pub const RATE_LIMIT: u16 = 4008;
}

/// What the loop should do after a dialect handled a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep going.
    Continue,
    /// Close with this code and reason.
    Close(u16, &'static str),
}

/// How the server proves liveness to a client and gives it something to answer.
#[derive(Debug, Clone)]
pub enum Heartbeat {
    /// An application-level frame the client answers (native protocol).
    App(Utf8Bytes),
    /// A WebSocket ping control frame, answered by the client's library.
    WsPing,
    /// A frame the dialect builds when the heartbeat is due
    /// ([`Dialect::heartbeat_frame`]), e.g. one carrying its current acknowledgement.
    Custom,
    /// None (echo route).
    Off,
}

/// Sends events into a connection's loop from other tasks (e.g. the result of a password
/// check done off the runtime, or a revocation of the connection's session).
///
/// Not a tokio channel: those allocate their first block of 32 slots up front, which for
/// the native session's events would add kilobytes to every idle connection. This is an
/// `Arc` with an empty queue until an event actually arrives.
pub struct Mailbox<E> {
    inner: Arc<MailboxInner<E>>,
}

struct MailboxInner<E> {
    queue: parking_lot::Mutex<VecDeque<E>>,
    notify: tokio::sync::Notify,
    /// Set when the connection is over: later events are dropped.
    closed: std::sync::atomic::AtomicBool,
}

impl<E> Clone for Mailbox<E> {
    fn clone(&self) -> Self {
        Self { inner: Arc::clone(&self.inner) }
    }
}

impl<E> std::fmt::Debug for Mailbox<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox").field("queued", &self.inner.queue.lock().len()).finish()
    }
}

impl<E> Default for Mailbox<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E> Mailbox<E> {
    /// An empty mailbox.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(MailboxInner {
                queue: parking_lot::Mutex::new(VecDeque::new()),
                notify: tokio::sync::Notify::new(),
                closed: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// Queues an event for the connection's loop (dropped if the connection is over).
    pub fn send(&self, event: E) {
        if self.inner.closed.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        self.inner.queue.lock().push_back(event);
        // `notify_one` stores a permit when the loop is not waiting, so no wake-up is lost.
        self.inner.notify.notify_one();
    }

    /// The next event.
    pub async fn recv(&self) -> E {
        loop {
            if let Some(e) = self.inner.queue.lock().pop_front() {
                return e;
            }
            self.inner.notify.notified().await;
        }
    }

    fn close(&self) {
        self.inner.closed.store(true, std::sync::atomic::Ordering::Release);
        self.inner.queue.lock().clear();
    }
}

/// A protocol spoken over the connection loop.
pub trait Dialect: Send {
    /// Events other tasks deliver to this connection through its [`Mailbox`]; handled by
    /// [`Dialect::on_event`] on the connection's own task, so dialect state needs no lock.
    type Event: Send + 'static;
    /// Current idle timeout: the connection is closed if nothing arrives for this long.
    fn idle_timeout(&self) -> (Duration, u16);
    /// A deadline counted from when the connection opened (not from the last frame), with
    /// its close code: e.g. the time allowed to complete a handshake. `None` when there is
    /// none (any more).
    fn handshake_deadline(&self) -> Option<(Duration, u16)> {
        None
    }
    /// The close reason for a timeout closing with `code` (from
    /// [`Dialect::idle_timeout`] or [`Dialect::handshake_deadline`]).
    fn timeout_reason(&self, _code: u16) -> &'static str {
        "idle timeout"
    }
    /// Heartbeat kind.
    fn heartbeat(&self) -> Heartbeat;
    /// The heartbeat frame, for [`Heartbeat::Custom`] (`None`: skip this beat).
    fn heartbeat_frame(&mut self) -> Option<Message> {
        None
    }
    /// Handles a text message; replies go to `out`.
    fn on_text(&mut self, text: Utf8Bytes, out: &mut Vec<Message>) -> Flow;
    /// Handles a binary message (by default a protocol violation).
    fn on_binary(&mut self, _data: bytes::Bytes, _out: &mut Vec<Message>) -> Flow {
        Flow::Close(close::UNSUPPORTED_DATA, "binary frames are not supported")
    }
    /// A text message arrived above the rate limit; it was not processed.
    fn on_rate_limited(&mut self, text: &str, out: &mut Vec<Message>);
    /// Messages over the rate limit tolerated in a row before the connection is closed
    /// with 4008. A protocol whose client resends what was not acknowledged (Jetstream)
    /// closes at once: a dropped message would otherwise be lost.
    fn rate_limit_strikes(&self) -> u32 {
        RATE_LIMIT_STRIKES
    }
    /// Handles an event from the connection's mailbox; replies go to `out`.
    fn on_event(&mut self, event: Self::Event, out: &mut Vec<Message>) -> Flow;
    /// The connection is over: release subscriptions.
    fn on_close(&mut self);
}

/// Settings of the loop shared by all dialects.
#[derive(Debug, Clone)]
pub struct LoopConfig {
    /// Heartbeat period.
    pub ping_interval: Duration,
    /// Longest one write may take.
    pub write_timeout: Duration,
    /// Inbound messages per second (0 = unlimited).
    pub rate: u32,
    /// Inbound burst.
    pub burst: u32,
}

/// Rate-limited messages tolerated in a row before the connection is closed with 4008.
const RATE_LIMIT_STRIKES: u32 = 100;
/// How long to wait for the client's close reply after sending a close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(3);

enum Exit {
    /// The peer went away (stream ended or failed).
    Gone,
    /// We close with this code.
    Close(u16, &'static str),
}

fn close_message(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from_static(reason) }))
}

/// Maps a read error to the close code the peer deserves, if any.
fn read_error_close(err: axum::Error) -> Exit {
    let inner = err.into_inner();
    match inner.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => Exit::Close(close::TOO_BIG, "message too big"),
        Some(tungstenite::Error::Utf8(_)) => Exit::Close(close::INVALID_PAYLOAD, "invalid UTF-8"),
        Some(tungstenite::Error::Protocol(_)) => Exit::Close(close::PROTOCOL_ERROR, "protocol error"),
        _ => Exit::Gone,
    }
}

/// Writes one batch of frames as one flush.
async fn write_batch<S>(socket: &mut S, batch: &mut VecDeque<Frame>, metrics: &Metrics) -> Result<(), ()>
where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    if let Some(first) = batch.front() {
        metrics.publish_to_write.observe(first.at.elapsed());
    }
    let mut bytes = 0usize;
    for f in batch.drain(..) {
        bytes += f.text.len();
        socket.feed(Message::Text(f.text)).await.map_err(drop)?;
    }
    socket.flush().await.map_err(drop)?;
    metrics.bytes_out.fetch_add(bytes as u64, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

async fn write_replies<S>(socket: &mut S, out: &mut Vec<Message>, metrics: &Metrics) -> Result<(), ()>
where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    let mut bytes = 0usize;
    for m in out.drain(..) {
        if let Message::Text(t) = &m {
            bytes += t.len();
        }
        socket.feed(m).await.map_err(drop)?;
    }
    socket.flush().await.map_err(drop)?;
    metrics.bytes_out.fetch_add(bytes as u64, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// Writes the replies a dialect produced (bounded by the write timeout), then applies its
/// [`Flow`]: `Err` carries how the connection ends.
async fn send_replies<S>(
    socket: &mut S,
    out: &mut Vec<Message>,
    flow: Flow,
    cfg: &LoopConfig,
    metrics: &Metrics,
) -> Result<(), Exit>
where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    if !out.is_empty() {
        match tokio::time::timeout(cfg.write_timeout, write_replies(socket, out, metrics)).await {
            Ok(Ok(())) => {}
            Ok(Err(())) => return Err(Exit::Gone),
            Err(_) => return Err(Exit::Close(close::SLOW_CONSUMER, "slow consumer")),
        }
    }
    match flow {
        Flow::Continue => Ok(()),
        Flow::Close(code, reason) => Err(Exit::Close(code, reason)),
    }
}

/// Runs a connection to completion.
pub async fn run<S, D>(
    mut socket: S,
    mut dialect: D,
    outbox: Arc<Outbox>,
    events: Mailbox<D::Event>,
    cfg: LoopConfig,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
) where
    S: Stream<Item = Result<Message, axum::Error>> + Sink<Message, Error = axum::Error> + Unpin,
    D: Dialect,
{
    let start = Instant::now();
    let now_ms = || u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut bucket = TokenBucket::new(cfg.rate, cfg.burst, 0);
    let mut strikes = 0u32;
    let mut last_seen = start;
    let mut next_ping = start + cfg.ping_interval;
    let mut batch: VecDeque<Frame> = VecDeque::new();
    let mut out: Vec<Message> = Vec::new();

    // Both futures are created once and polled across iterations: re-creating them per
    // iteration would touch the timer wheel and the shared token's waiter list for every
    // batch written.
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    let timer = tokio::time::sleep_until(next_ping);
    tokio::pin!(timer);
    // Kept across iterations too: its waiter stays registered instead of being re-added
    // for every frame; replaced only after it yields an event.
    let next_event = events.recv();
    tokio::pin!(next_event);

    let exit = loop {
        let (idle, mut idle_code) = dialect.idle_timeout();
        let mut idle_deadline = last_seen + idle;
        if let Some((limit, code)) = dialect.handshake_deadline()
            && start + limit < idle_deadline
        {
            idle_deadline = start + limit;
            idle_code = code;
        }
        let heartbeat = dialect.heartbeat();
        let wake =
            if matches!(heartbeat, Heartbeat::Off) { idle_deadline } else { idle_deadline.min(next_ping) };
        // Inbound traffic only moves the idle deadline later; rather than touch the timer
        // for every message, let it fire early and re-arm it then.
        if wake < timer.deadline() || timer.is_elapsed() {
            timer.as_mut().reset(wake);
        }
        tokio::select! {
            biased;
            () = &mut cancelled => break Exit::Close(close::GOING_AWAY, "server shutting down; reconnect"),
            taken = outbox.take(&mut batch) => {
                if taken == Err(Overflowed) {
                    break Exit::Close(close::SLOW_CONSUMER, "slow consumer");
                }
                let write = tokio::time::timeout(cfg.write_timeout, write_batch(&mut socket, &mut batch, &metrics));
                tokio::select! {
                    r = write => match r {
                        Ok(Ok(())) => {}
                        Ok(Err(())) => break Exit::Gone,
                        Err(_) => break Exit::Close(close::SLOW_CONSUMER, "slow consumer"),
                    },
                    () = outbox.overflowed() => break Exit::Close(close::SLOW_CONSUMER, "slow consumer"),
                    () = &mut cancelled => break Exit::Close(close::GOING_AWAY, "server shutting down; reconnect"),
                }
                if batch.capacity() > 256 {
                    batch = VecDeque::new();
                }
            }
            msg = socket.next() => {
                let msg = match msg {
                    None => break Exit::Gone,
                    Some(Err(e)) => break read_error_close(e),
                    Some(Ok(m)) => m,
                };
                last_seen = Instant::now();
                let flow = match msg {
                    Message::Text(t) => {
                        metrics.bytes_in.fetch_add(t.len() as u64, std::sync::atomic::Ordering::Relaxed);
                        if bucket.try_take(now_ms()) {
                            strikes = 0;
                            dialect.on_text(t, &mut out)
                        } else {
                            strikes += 1;
                            dialect.on_rate_limited(&t, &mut out);
                            if strikes > dialect.rate_limit_strikes() {
                                Flow::Close(close::RATE_LIMIT, "rate limit exceeded")
                            } else {
                                Flow::Continue
                            }
                        }
                    }
                    Message::Binary(b) => {
                        metrics.bytes_in.fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
                        if bucket.try_take(now_ms()) {
                            strikes = 0;
                            dialect.on_binary(b, &mut out)
                        } else {
                            strikes += 1;
                            dialect.on_rate_limited(std::str::from_utf8(&b).unwrap_or(""), &mut out);
                            if strikes > dialect.rate_limit_strikes() {
                                Flow::Close(close::RATE_LIMIT, "rate limit exceeded")
                            } else {
                                Flow::Continue
                            }
                        }
                    }
                    // The library answers pings and close frames itself; we keep reading
                    // until the stream ends so the close handshake completes.
                    Message::Ping(_) | Message::Pong(_) | Message::Close(_) => Flow::Continue,
                };
                if let Err(exit) = send_replies(&mut socket, &mut out, flow, &cfg, &metrics).await {
                    break exit;
                }
            }
            event = &mut next_event => {
                next_event.set(events.recv());
                let flow = dialect.on_event(event, &mut out);
                if let Err(exit) = send_replies(&mut socket, &mut out, flow, &cfg, &metrics).await {
                    break exit;
                }
            }
            () = &mut timer => {
                let now = Instant::now();
                if now >= idle_deadline {
                    break Exit::Close(idle_code, dialect.timeout_reason(idle_code));
                }
                if now >= next_ping {
                    next_ping = now + cfg.ping_interval;
                    let m = match heartbeat {
                        Heartbeat::App(t) => Message::Text(t),
                        Heartbeat::WsPing => Message::Ping(bytes::Bytes::new()),
                        Heartbeat::Custom => match dialect.heartbeat_frame() {
                            Some(m) => m,
                            None => continue,
                        },
                        Heartbeat::Off => continue,
                    };
                    out.push(m);
                    if let Err(exit) = send_replies(&mut socket, &mut out, Flow::Continue, &cfg, &metrics).await {
                        break exit;
                    }
                }
            }
        }
    };

    outbox.close();
    events.close();
    dialect.on_close();
    if let Exit::Close(code, reason) = exit {
        match code {
            close::SLOW_CONSUMER => {
                metrics.slow_consumers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            close::IDLE_TIMEOUT | close::CONNECT_TIMEOUT => {
                metrics.idle_timeouts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            _ => {}
        }
        tracing::debug!(code, reason, "closing connection");
        // Send our close frame, then keep reading until the peer answers and the stream
        // ends, bounded so a silent peer cannot hold the task.
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            if socket.send(close_message(code, reason)).await.is_err() {
                return;
            }
            while let Some(Ok(_)) = socket.next().await {}
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    //! The loop driven through in-memory channels with a paused clock: timing behaviour
    //! is checked exactly, without sleeping.

    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::sync::mpsc;

    use super::*;

    /// An in-memory socket: the test feeds inbound messages and reads what the loop sent.
    struct FakeSocket {
        inbound: mpsc::UnboundedReceiver<Result<Message, axum::Error>>,
        outbound: mpsc::UnboundedSender<Message>,
    }

    impl Stream for FakeSocket {
        type Item = Result<Message, axum::Error>;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.inbound.poll_recv(cx)
        }
    }

    impl Sink<Message> for FakeSocket {
        type Error = axum::Error;
        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
            self.outbound.send(item).map_err(axum::Error::new)
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Echoes text, counts closes.
    struct TestDialect {
        closed: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Dialect for TestDialect {
        type Event = &'static str;
        fn on_event(&mut self, event: &'static str, out: &mut Vec<Message>) -> Flow {
            if event == "close" {
                return Flow::Close(4999, "asked");
            }
            out.push(Message::Text(Utf8Bytes::from_static(event)));
            Flow::Continue
        }
        fn idle_timeout(&self) -> (Duration, u16) {
            (Duration::from_secs(10), close::IDLE_TIMEOUT)
        }
        fn heartbeat(&self) -> Heartbeat {
            Heartbeat::App(Utf8Bytes::from_static("hb"))
        }
        fn on_text(&mut self, text: Utf8Bytes, out: &mut Vec<Message>) -> Flow {
            out.push(Message::Text(text));
            Flow::Continue
        }
        fn on_rate_limited(&mut self, _text: &str, out: &mut Vec<Message>) {
            out.push(Message::Text(Utf8Bytes::from_static("limited")));
        }
        fn on_close(&mut self) {
            self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    struct Harness {
        to_loop: mpsc::UnboundedSender<Result<Message, axum::Error>>,
        from_loop: mpsc::UnboundedReceiver<Message>,
        outbox: Arc<Outbox>,
        shutdown: CancellationToken,
        closed: Arc<std::sync::atomic::AtomicBool>,
        events: Mailbox<&'static str>,
        task: tokio::task::JoinHandle<()>,
    }

    fn harness(cfg: LoopConfig, queue: usize) -> Harness {
        let (to_loop, inbound) = mpsc::unbounded_channel();
        let (outbound, from_loop) = mpsc::unbounded_channel();
        let outbox = Arc::new(Outbox::new(queue));
        let shutdown = CancellationToken::new();
        let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let events = Mailbox::new();
        let task = tokio::spawn(run(
            FakeSocket { inbound, outbound },
            TestDialect { closed: Arc::clone(&closed) },
            Arc::clone(&outbox),
            events.clone(),
            cfg,
            shutdown.clone(),
            Arc::new(Metrics::new()),
        ));
        Harness { to_loop, from_loop, outbox, shutdown, closed, events, task }
    }

    fn cfg() -> LoopConfig {
        LoopConfig {
            ping_interval: Duration::from_secs(5),
            write_timeout: Duration::from_secs(1),
            rate: 0,
            burst: 1,
        }
    }

    fn text(m: &Message) -> &str {
        match m {
            Message::Text(t) => t.as_str(),
            other => panic!("expected text, got {other:?}"),
        }
    }

    fn close_code(m: &Message) -> u16 {
        match m {
            Message::Close(Some(f)) => f.code,
            other => panic!("expected close, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeat_every_interval_then_idle_close() {
        let mut h = harness(LoopConfig { ping_interval: Duration::from_secs(4), ..cfg() }, 8);
        let start = Instant::now();
        let m = h.from_loop.recv().await.unwrap();
        assert_eq!(text(&m), "hb");
        assert_eq!(start.elapsed(), Duration::from_secs(4));
        let m = h.from_loop.recv().await.unwrap();
        assert_eq!(text(&m), "hb");
        assert_eq!(start.elapsed(), Duration::from_secs(8));
        // Idle timeout is 10 s after the last inbound message (none): close 4001 at 10 s.
        let m = h.from_loop.recv().await.unwrap();
        assert_eq!(close_code(&m), close::IDLE_TIMEOUT);
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        drop(h.to_loop);
        h.task.await.unwrap();
        assert!(h.closed.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn mailbox_events_reach_the_dialect_and_may_close() {
        let mut h = harness(LoopConfig { ping_interval: Duration::from_secs(60), ..cfg() }, 8);
        h.events.send("from another task");
        assert_eq!(text(&h.from_loop.recv().await.unwrap()), "from another task");
        h.events.send("close");
        assert_eq!(close_code(&h.from_loop.recv().await.unwrap()), 4999);
        drop(h.to_loop);
        h.task.await.unwrap();
        assert!(h.closed.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn inbound_traffic_postpones_idle_close() {
        let mut h = harness(LoopConfig { ping_interval: Duration::from_secs(60), ..cfg() }, 8);
        let start = Instant::now();
        tokio::time::sleep(Duration::from_secs(8)).await;
        h.to_loop.send(Ok(Message::Text("a".into()))).unwrap();
        assert_eq!(text(&h.from_loop.recv().await.unwrap()), "a");
        let m = h.from_loop.recv().await.unwrap();
        assert_eq!(close_code(&m), close::IDLE_TIMEOUT);
        assert_eq!(start.elapsed(), Duration::from_secs(18));
    }

    #[tokio::test(start_paused = true)]
    async fn outbox_frames_are_written_in_order() {
        use tether_engine::Sink as _;
        let mut h = harness(cfg(), 8);
        for s in ["1", "2", "3"] {
            assert!(h.outbox.push(&Frame::now(s.to_owned())));
        }
        for s in ["1", "2", "3"] {
            assert_eq!(text(&h.from_loop.recv().await.unwrap()), s);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn overflow_closes_as_slow_consumer() {
        use tether_engine::Sink as _;
        let mut h = harness(cfg(), 2);
        // Fill beyond capacity before the loop gets to run.
        let accepted: Vec<bool> = (0..4).map(|i| h.outbox.push(&Frame::now(i.to_string()))).collect();
        assert_eq!(accepted, [true, true, false, false]);
        let m = h.from_loop.recv().await.unwrap();
        assert_eq!(close_code(&m), close::SLOW_CONSUMER);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_closes_with_1001() {
        let mut h = harness(cfg(), 2);
        h.shutdown.cancel();
        let m = h.from_loop.recv().await.unwrap();
        assert_eq!(close_code(&m), close::GOING_AWAY);
        // The loop waits for the peer's close reply, bounded by the grace period.
        h.task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_refuses_then_closes() {
        let mut h = harness(LoopConfig { rate: 1, burst: 2, ..cfg() }, 8);
        for _ in 0..(2 + RATE_LIMIT_STRIKES + 1) {
            h.to_loop.send(Ok(Message::Text("x".into()))).unwrap();
        }
        let mut texts = Vec::new();
        let code = loop {
            match h.from_loop.recv().await.unwrap() {
                Message::Text(t) => texts.push(t.to_string()),
                m => break close_code(&m),
            }
        };
        assert_eq!(&texts[..2], ["x", "x"]);
        assert!(texts[2..].iter().all(|t| t == "limited"));
        assert_eq!(texts.len(), 2 + usize::try_from(RATE_LIMIT_STRIKES).unwrap() + 1);
        assert_eq!(code, close::RATE_LIMIT);
    }

    #[tokio::test(start_paused = true)]
    async fn peer_close_ends_the_loop_after_the_stream_ends() {
        let h = harness(cfg(), 2);
        h.to_loop.send(Ok(Message::Close(None))).unwrap();
        drop(h.to_loop);
        h.task.await.unwrap();
        assert!(h.closed.load(std::sync::atomic::Ordering::SeqCst));
    }
}
