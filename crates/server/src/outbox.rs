//! The per-connection outbound queue: the hub's [`Sink`] for WebSocket and SSE clients.
//!
//! Publishers push without blocking; the connection's task takes everything queued at
//! once and writes it in one flush. The queue is bounded: when a client does not keep up
//! and the queue is full, the outbox refuses further frames, drops what it held and wakes
//! the connection task, which disconnects the client as a slow consumer. Other subscribers
//! and the publisher are never delayed by it.

use std::collections::VecDeque;

use axum::extract::ws::Utf8Bytes;
use parking_lot::Mutex;
use tether_engine::Sink;
use tokio::sync::Notify;
use tokio::time::Instant;

/// An encoded frame plus the time its publication entered the hub.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The encoded text, shared by every subscriber of the same format.
    pub text: Utf8Bytes,
    /// When the publication was encoded (for the publish-to-write histogram).
    pub at: Instant,
}

impl Frame {
    /// A frame stamped now.
    pub fn now(text: String) -> Self {
        Self { text: Utf8Bytes::from(text), at: Instant::now() }
    }
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Frame>,
    overflowed: bool,
    closed: bool,
}

/// A bounded, non-blocking, multi-producer single-consumer frame queue.
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    notify: Notify,
    capacity: usize,
}

/// The outbox refused frames because the client was too slow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflowed;

impl Outbox {
    /// An empty outbox holding at most `capacity` frames. Allocates nothing until used.
    pub fn new(capacity: usize) -> Self {
        Self { state: Mutex::new(State::default()), notify: Notify::new(), capacity }
    }

    /// Waits until frames are queued, then moves all of them into `batch` (which must be
    /// empty). Returns `Err` once the outbox overflowed.
    pub async fn take(&self, batch: &mut VecDeque<Frame>) -> Result<(), Overflowed> {
        loop {
            {
                let mut st = self.state.lock();
                if st.overflowed {
                    return Err(Overflowed);
                }
                if !st.queue.is_empty() {
                    std::mem::swap(&mut st.queue, batch);
                    return Ok(());
                }
            }
            self.notify.notified().await;
        }
    }

    /// Resolves when the outbox has overflowed (used to abort a stuck write).
    pub async fn overflowed(&self) {
        loop {
            if self.state.lock().overflowed {
                return;
            }
            self.notify.notified().await;
        }
    }

    /// Refuses all further frames (the connection is going away).
    pub fn close(&self) {
        let mut st = self.state.lock();
        st.closed = true;
        st.queue = VecDeque::new();
    }

    /// Drops the frames queued and not yet taken (the Jetstream dialect resends them
    /// itself, in one frame, after a resume).
    pub fn clear(&self) {
        self.state.lock().queue.clear();
    }

    /// True if the oldest frame still queued is `text` itself (the same allocation).
    pub fn front_is(&self, text: &Utf8Bytes) -> bool {
        self.state
            .lock()
            .queue
            .front()
            .is_some_and(|f| f.text.as_bytes().as_ptr() == text.as_bytes().as_ptr())
    }

    /// Frames currently queued.
    pub fn len(&self) -> usize {
        self.state.lock().queue.len()
    }

    /// True if nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Sink for Outbox {
    type Frame = Frame;

    fn push(&self, frame: &Frame) -> bool {
        let mut st = self.state.lock();
        if st.overflowed || st.closed {
            return false;
        }
        if st.queue.len() >= self.capacity {
            st.overflowed = true;
            st.queue = VecDeque::new();
            drop(st);
            self.notify.notify_one();
            return false;
        }
        st.queue.push_back(frame.clone());
        let first = st.queue.len() == 1;
        drop(st);
        if first {
            self.notify.notify_one();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn batches_and_overflows() {
        let o = Outbox::new(3);
        let f = Frame::now("x".to_owned());
        assert!(o.push(&f));
        assert!(o.push(&f));
        let mut b = VecDeque::new();
        o.take(&mut b).await.unwrap();
        assert_eq!(b.len(), 2);
        b.clear();
        for _ in 0..3 {
            assert!(o.push(&f));
        }
        assert!(!o.push(&f), "fourth frame overflows");
        assert!(!o.push(&f), "stays refused");
        assert_eq!(o.take(&mut b).await, Err(Overflowed));
        o.overflowed().await;
    }

    #[tokio::test]
    async fn wakes_waiting_consumer() {
        let o = std::sync::Arc::new(Outbox::new(8));
        let o2 = std::sync::Arc::clone(&o);
        let t = tokio::spawn(async move {
            let mut b = VecDeque::new();
            o2.take(&mut b).await.unwrap();
            b.len()
        });
        tokio::task::yield_now().await;
        assert!(o.push(&Frame::now("a".to_owned())));
        assert_eq!(t.await.unwrap(), 1);
    }
}
