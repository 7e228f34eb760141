//! The hub: channels, subscriptions and fan-out.
//!
//! # Cost model
//!
//! A publication costs, per channel: one lock of that channel; per distinct filter among
//! its subscribers: one filter evaluation; per wire format present among the matching
//! subscribers: one encoding; per subscriber: one frame clone (a reference-count increment)
//! and one [`Sink::push`]. Nothing else runs per subscriber unless the publication is
//! identity-targeted, in which case each subscriber's identity is checked against the
//! (sorted) target lists.
//!
//! # Ordering
//!
//! Fan-out of one channel happens under that channel's lock, so every subscriber sees the
//! channel's publications in the same order.
//!
//! # Concurrency
//!
//! Channels live in [`SHARDS`] shards keyed by name hash. Subscribe and unsubscribe take
//! the shard's write lock (so a channel is never removed while someone joins it); publish
//! takes the shard's read lock just long enough to clone the channel's `Arc`.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use indexmap::IndexMap;
use parking_lot::{Mutex, RwLock};
use tether_proto::{ChannelName, Filter, Identity, Tags, Target};

/// Number of channel-map shards.
pub const SHARDS: usize = 64;
/// Most wire formats a hub can encode to.
pub const MAX_FORMATS: usize = 8;

/// Identifies a connection within one hub.
pub type ConnId = u64;

/// Index of a registered encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FormatId(u8);

impl FormatId {
    /// The index.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// Where the hub puts frames for one connection. Implemented by the transport layer,
/// typically as a bounded queue drained by the connection's task.
pub trait Sink: Send + Sync + 'static {
    /// The encoded frame type; cloning must be cheap (shared bytes).
    type Frame: Clone + Send + Sync + 'static;

    /// Queues a frame. Must never block. Returns `false` if the frame was not accepted
    /// because the connection's queue overflowed or the connection is closing; the sink is
    /// then responsible for disconnecting its connection.
    fn push(&self, frame: &Self::Frame) -> bool;
}

/// Turns a publication into a frame of one wire format.
pub type Encoder<F> = Box<dyn Fn(&Publication) -> F + Send + Sync>;

/// A publication as the hub sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Publication {
    /// Channel it is published to.
    pub channel: ChannelName,
    /// Payload as JSON text, validated at the edge; `None` only for dialects whose
    /// events may lack data.
    pub data: Option<Box<str>>,
    /// Tags that subscription filters are evaluated against.
    pub tags: Tags,
    /// Identity targeting; must be normalized ([`Target::normalize`]).
    pub target: Option<Target>,
}

/// What a publish did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishStats {
    /// Frames accepted by sinks.
    pub delivered: usize,
    /// Frames refused by sinks (overflowing or closing connections).
    pub dropped: usize,
    /// Total bytes of distinct encodings made (not multiplied by subscribers).
    pub encodings: usize,
}

/// Why a subscribe was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeError {
    /// The connection is already subscribed to the channel.
    AlreadySubscribed,
    /// The channel has reached its subscriber limit.
    ChannelFull,
}

impl From<SubscribeError> for tether_proto::ProtoError {
    fn from(e: SubscribeError) -> Self {
        use tether_proto::ErrorCode;
        match e {
            SubscribeError::AlreadySubscribed => {
                Self::new(ErrorCode::AlreadySubscribed, "already subscribed to this channel")
            }
            SubscribeError::ChannelFull => Self::new(ErrorCode::ChannelFull, "the channel is full"),
        }
    }
}

/// One subscriber: a connection, where its frames go, in which format, and who it is.
#[derive(Debug)]
pub struct Subscriber<S> {
    /// The connection.
    pub conn: ConnId,
    /// Where its frames go.
    pub sink: Arc<S>,
    /// Which encoding it receives.
    pub format: FormatId,
    /// Its identity, for targeted publications.
    pub identity: Arc<Identity>,
}

impl<S> Clone for Subscriber<S> {
    fn clone(&self) -> Self {
        Self {
            conn: self.conn,
            sink: Arc::clone(&self.sink),
            format: self.format,
            identity: Arc::clone(&self.identity),
        }
    }
}

/// Subscribers of one channel sharing one filter (or none).
struct Group<S> {
    filter: Option<Arc<Filter>>,
    members: IndexMap<ConnId, Subscriber<S>>,
}

struct Channel<S> {
    groups: Vec<Group<S>>,
    count: usize,
}

impl<S> Channel<S> {
    fn group_of(&self, conn: ConnId) -> Option<usize> {
        self.groups.iter().position(|g| g.members.contains_key(&conn))
    }
}

type Shard<S> = RwLock<HashMap<ChannelName, Arc<Mutex<Channel<S>>>>>;

/// Channels and their subscribers.
pub struct Hub<S: Sink> {
    shards: Box<[Shard<S>]>,
    hasher: RandomState,
    encoders: Vec<Encoder<S::Frame>>,
    subscriptions: AtomicUsize,
    channels: AtomicUsize,
}

impl<S: Sink> std::fmt::Debug for Hub<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("channels", &self.channel_count())
            .field("subscriptions", &self.subscription_count())
            .field("formats", &self.encoders.len())
            .finish_non_exhaustive()
    }
}

impl<S: Sink> Hub<S> {
    /// A hub with the given encoders; the position of each encoder is its [`FormatId`].
    ///
    /// # Panics
    /// If more than [`MAX_FORMATS`] encoders are given (a programming error).
    pub fn new(encoders: Vec<Encoder<S::Frame>>) -> Self {
        assert!(encoders.len() <= MAX_FORMATS, "at most {MAX_FORMATS} formats");
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            encoders,
            subscriptions: AtomicUsize::new(0),
            channels: AtomicUsize::new(0),
        }
    }

    /// The format id of the encoder registered at `index`.
    ///
    /// # Panics
    /// If no encoder was registered there (a programming error).
    pub fn format(&self, index: usize) -> FormatId {
        assert!(index < self.encoders.len(), "no encoder at {index}");
        FormatId(u8::try_from(index).unwrap_or(u8::MAX))
    }

    fn shard(&self, channel: &ChannelName) -> &Shard<S> {
        let h = self.hasher.hash_one(channel.as_str());
        // The modulo keeps the value below SHARDS, so the cast cannot truncate.
        #[allow(clippy::cast_possible_truncation)]
        &self.shards[(h % SHARDS as u64) as usize]
    }

    /// Subscribes connection `conn` to `channel`. `max_subscribers` of 0 means unlimited.
    pub fn subscribe(
        &self,
        channel: &ChannelName,
        sub: Subscriber<S>,
        filter: Option<Filter>,
        max_subscribers: usize,
    ) -> Result<(), SubscribeError> {
        let conn = sub.conn;
        let mut shard = self.shard(channel).write();
        let ch = match shard.entry(channel.clone()) {
            Entry::Occupied(e) => Arc::clone(e.get()),
            Entry::Vacant(e) => {
                self.channels.fetch_add(1, Ordering::Relaxed);
                Arc::clone(e.insert(Arc::new(Mutex::new(Channel { groups: Vec::new(), count: 0 }))))
            }
        };
        let mut ch = ch.lock();
        if ch.group_of(conn).is_some() {
            return Err(SubscribeError::AlreadySubscribed);
        }
        if max_subscribers != 0 && ch.count >= max_subscribers {
            if ch.count == 0 {
                shard.remove(channel);
                self.channels.fetch_sub(1, Ordering::Relaxed);
            }
            return Err(SubscribeError::ChannelFull);
        }
        let member = sub;
        match ch.groups.iter_mut().find(|g| g.filter.as_deref() == filter.as_ref()) {
            Some(g) => {
                g.members.insert(conn, member);
            }
            None => {
                let mut members = IndexMap::with_capacity(1);
                members.insert(conn, member);
                ch.groups.push(Group { filter: filter.map(Arc::new), members });
            }
        }
        ch.count += 1;
        self.subscriptions.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Removes `conn` from `channel`. Returns whether it was subscribed.
    pub fn unsubscribe(&self, channel: &ChannelName, conn: ConnId) -> bool {
        let mut shard = self.shard(channel).write();
        let Some(ch_arc) = shard.get(channel) else { return false };
        let ch_arc = Arc::clone(ch_arc);
        let mut ch = ch_arc.lock();
        let Some(gi) = ch.group_of(conn) else { return false };
        ch.groups[gi].members.swap_remove(&conn);
        if ch.groups[gi].members.is_empty() {
            ch.groups.swap_remove(gi);
        }
        ch.count -= 1;
        self.subscriptions.fetch_sub(1, Ordering::Relaxed);
        if ch.count == 0 {
            shard.remove(channel);
            self.channels.fetch_sub(1, Ordering::Relaxed);
        }
        true
    }

    /// Delivers `p` to every matching subscriber of its channel.
    pub fn publish(&self, p: &Publication) -> PublishStats {
        let ch = {
            let shard = self.shard(&p.channel).read();
            match shard.get(&p.channel) {
                Some(c) => Arc::clone(c),
                None => return PublishStats::default(),
            }
        };
        let ch = ch.lock();
        let mut frames: [Option<S::Frame>; MAX_FORMATS] = Default::default();
        let mut stats = PublishStats::default();
        let target = p.target.as_ref().filter(|t| !t.is_empty());
        for g in &ch.groups {
            if g.filter.as_ref().is_some_and(|f| !f.matches(&p.tags)) {
                continue;
            }
            for m in g.members.values() {
                if target.is_some_and(|t| !t.admits(&m.identity)) {
                    continue;
                }
                let frame = frames[m.format.index()].get_or_insert_with(|| {
                    stats.encodings += 1;
                    (self.encoders[m.format.index()])(p)
                });
                if m.sink.push(frame) {
                    stats.delivered += 1;
                } else {
                    stats.dropped += 1;
                }
            }
        }
        stats
    }

    /// Number of subscribers of `channel`.
    pub fn subscriber_count(&self, channel: &ChannelName) -> usize {
        let shard = self.shard(channel).read();
        shard.get(channel).map_or(0, |c| c.lock().count)
    }

    /// Number of distinct filters among `channel`'s subscribers (unfiltered counts as one).
    pub fn filter_group_count(&self, channel: &ChannelName) -> usize {
        let shard = self.shard(channel).read();
        shard.get(channel).map_or(0, |c| c.lock().groups.len())
    }

    /// Channels with at least one subscriber.
    pub fn channel_count(&self) -> usize {
        self.channels.load(Ordering::Relaxed)
    }

    /// Total subscriptions.
    pub fn subscription_count(&self) -> usize {
        self.subscriptions.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests;
