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
//! 4001 idle timeout, 4002 slow consumer, 4004 no `connect` in time, 4008 rate limit abuse.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tether_engine::TokenBucket;
use tokio::time::{Instant, sleep_until};
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
    /// None (echo route).
    Off,
}

/// A protocol spoken over the connection loop.
pub trait Dialect: Send {
    /// Current idle timeout: the connection is closed if nothing arrives for this long.
    fn idle_timeout(&self) -> (Duration, u16);
    /// Heartbeat kind.
    fn heartbeat(&self) -> Heartbeat;
    /// Handles a text message; replies go to `out`.
    fn on_text(&mut self, text: Utf8Bytes, out: &mut Vec<Message>) -> Flow;
    /// Handles a binary message (by default a protocol violation).
    fn on_binary(&mut self, _data: bytes::Bytes, _out: &mut Vec<Message>) -> Flow {
        Flow::Close(close::UNSUPPORTED_DATA, "binary frames are not supported")
    }
    /// A text message arrived above the rate limit; it was not processed.
    fn on_rate_limited(&mut self, text: &str, out: &mut Vec<Message>);
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

/// Runs a connection to completion.
pub async fn run<S, D>(
    mut socket: S,
    mut dialect: D,
    outbox: Arc<Outbox>,
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

    let exit = loop {
        let (idle, idle_code) = dialect.idle_timeout();
        let idle_deadline = last_seen + idle;
        let heartbeat = dialect.heartbeat();
        let wake =
            if matches!(heartbeat, Heartbeat::Off) { idle_deadline } else { idle_deadline.min(next_ping) };
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break Exit::Close(close::GOING_AWAY, "server shutting down; reconnect"),
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
                    () = shutdown.cancelled() => break Exit::Close(close::GOING_AWAY, "server shutting down; reconnect"),
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
                            if strikes > RATE_LIMIT_STRIKES {
                                Flow::Close(close::RATE_LIMIT, "rate limit exceeded")
                            } else {
                                Flow::Continue
                            }
                        }
                    }
                    Message::Binary(b) => {
                        metrics.bytes_in.fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
                        if bucket.try_take(now_ms()) {
                            dialect.on_binary(b, &mut out)
                        } else {
                            Flow::Close(close::RATE_LIMIT, "rate limit exceeded")
                        }
                    }
                    // The library answers pings and close frames itself; we keep reading
                    // until the stream ends so the close handshake completes.
                    Message::Ping(_) | Message::Pong(_) | Message::Close(_) => Flow::Continue,
                };
                if !out.is_empty() {
                    let w = tokio::time::timeout(cfg.write_timeout, write_replies(&mut socket, &mut out, &metrics));
                    match w.await {
                        Ok(Ok(())) => {}
                        Ok(Err(())) => break Exit::Gone,
                        Err(_) => break Exit::Close(close::SLOW_CONSUMER, "slow consumer"),
                    }
                }
                if let Flow::Close(code, reason) = flow {
                    break Exit::Close(code, reason);
                }
            }
            () = sleep_until(wake) => {
                let now = Instant::now();
                if now >= idle_deadline {
                    break Exit::Close(idle_code, "idle timeout");
                }
                if now >= next_ping {
                    next_ping = now + cfg.ping_interval;
                    let m = match heartbeat {
                        Heartbeat::App(t) => Message::Text(t),
                        Heartbeat::WsPing => Message::Ping(bytes::Bytes::new()),
                        Heartbeat::Off => continue,
                    };
                    out.push(m);
                    let w = tokio::time::timeout(cfg.write_timeout, write_replies(&mut socket, &mut out, &metrics));
                    match w.await {
                        Ok(Ok(())) => {}
                        Ok(Err(())) => break Exit::Gone,
                        Err(_) => break Exit::Close(close::SLOW_CONSUMER, "slow consumer"),
                    }
                }
            }
        }
    };

    outbox.close();
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
