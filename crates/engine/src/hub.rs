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
//! # History, recovery and idempotency
//!
//! A channel whose namespace keeps history ([`PublishOptions::history`]) numbers its
//! publications by offset under an epoch ([`crate::history`]). The offset is assigned, the
//! publication appended to the history and fanned out **under the channel's lock**, and a
//! subscribe that recovers ([`SubscribeOptions::recover`]) joins the channel and reads its
//! history under that same lock. So a recovering subscriber gets every publication up to
//! the position it is told, and every later one live, with nothing missed or doubled and
//! no buffer to merge. (A broker that delivers from another process needs that buffer; it
//! lives with the broker.) Idempotency keys are remembered per channel under the same lock,
//! so two concurrent retries publish once.
//!
//! # Presence
//!
//! On namespaces that track presence, a subscriber joins the channel's presence
//! ([`crate::presence`]) as it subscribes and leaves it as it unsubscribes, under the same
//! lock, so presence and the subscriber list never disagree; its connection refreshes the
//! entry on heartbeats ([`Hub::presence_touch`]) and [`Hub::presence_sweep`] removes entries
//! whose refresh stopped (a connection wedged, or a node that died, once presence is shared).
//! Join and leave events go to the channel's other subscribers in formats that have a
//! presence encoder, when the namespace announces them.
//!
//! # Position checks
//!
//! Publications numbered elsewhere (a broker that assigns offsets for every node) arrive
//! through [`Hub::deliver_numbered`], which remembers the last position it delivered per
//! channel. A publication that does not continue it (one was lost on the way) is not
//! delivered; instead every subscriber of the channel is told to resubscribe, which makes
//! its client recover from its last offset (all or nothing) rather than carry on past a
//! silent gap. [`Hub::check_position`] does the same when a periodic comparison with the
//! authoritative position (once per channel per node, not per connection) shows that the
//! last publications never arrived at all. With the in-memory default, numbering, history
//! and fan-out are one critical section, so the delivered position cannot fall behind.
//!
//! A channel stays in the hub while it has subscribers, history or remembered idempotency
//! keys; [`Hub::sweep`] removes channels that have none of those left.
//!
//! # Concurrency
//!
//! Channels live in [`SHARDS`] shards keyed by name hash. Subscribe and unsubscribe take
//! the shard's write lock (so a channel is never removed while someone joins it); publish
//! takes the shard's read lock just long enough to clone the channel's `Arc`.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use indexmap::IndexMap;
use parking_lot::{Mutex, RwLock};
use tether_proto::{ChannelName, Filter, Identity, Tags, Target};

use crate::history::{ChannelHistory, HistoryLimits, Page, Position, Recovery};
use crate::presence::{ChannelPresence, PresenceCounts, PresenceEvent, PresenceInfo};

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
    /// Its offset in the channel's history; set by the hub on channels with history.
    pub offset: Option<u64>,
    /// The epoch of that offset (for encodings that carry whole positions, like SSE ids).
    pub epoch: Option<Arc<str>>,
}

impl Publication {
    /// A publication without targeting or offset.
    pub fn new(channel: ChannelName, data: Option<Box<str>>, tags: Tags) -> Self {
        Self { channel, data, tags, target: None, offset: None, epoch: None }
    }

    /// May a connection with `identity` receive it (through `filter`, if any)?
    fn admits(&self, filter: Option<&Filter>, identity: &Identity) -> bool {
        filter.is_none_or(|f| f.matches(&self.tags))
            && self.target.as_ref().is_none_or(|t| t.is_empty() || t.admits(identity))
    }
}

/// How a publish treats history and retries.
#[derive(Debug, Clone, Copy, Default)]
pub struct PublishOptions<'a> {
    /// Keep the publication in the channel's history, bounded so (its namespace's
    /// setting); `None`: no history, no offset.
    pub history: Option<HistoryLimits>,
    /// A key the publisher retries under: a second publish with the same key on the same
    /// channel within `idempotency_window_ms` publishes nothing and returns the first
    /// one's result.
    pub idempotency_key: Option<&'a str>,
    /// How long an idempotency key is remembered, in milliseconds.
    pub idempotency_window_ms: u64,
    /// The caller's clock, in milliseconds.
    pub now_ms: u64,
}

/// What [`Hub::publish_with`] did.
#[derive(Debug, Clone, Default)]
pub struct Published {
    /// Deliveries (all zero for a duplicate).
    pub stats: PublishStats,
    /// The publication's position, on a channel with history (for a duplicate: the
    /// original's).
    pub position: Option<Position>,
    /// The idempotency key had been seen: nothing was published.
    pub duplicate: bool,
    /// The publication as kept in the history (with its offset), for a store to keep too.
    pub kept: Option<Arc<Publication>>,
}

/// Which page of a channel's history to read (see [`ChannelHistory::page`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct HistoryQuery {
    /// Forward: offsets above this; backward: below it.
    pub since: Option<u64>,
    /// Most entries (0: no limit).
    pub limit: usize,
    /// Newest first.
    pub backward: bool,
}

/// How a subscribe treats history.
#[derive(Debug, Clone, Copy, Default)]
pub struct SubscribeOptions<'a> {
    /// Most subscribers the channel may have; 0: unlimited.
    pub max_subscribers: usize,
    /// The channel's history bounds, when its namespace keeps history.
    pub history: Option<HistoryLimits>,
    /// Recover from this position: at most `.1` publications (0: no limit).
    pub recover: Option<(&'a Position, usize)>,
    /// Join the channel's presence.
    pub presence: Option<&'a PresenceJoin>,
    /// The caller's clock, in milliseconds.
    pub now_ms: u64,
}

/// A subscriber's presence entry (namespaces that track presence).
#[derive(Debug, Clone)]
pub struct PresenceJoin {
    /// Who it is (its `client` is the subscriber's connection).
    pub info: PresenceInfo,
    /// How long the entry lives without a refresh, in milliseconds.
    pub ttl_ms: u64,
    /// Send join and leave events to the channel's subscribers.
    pub announce: bool,
}

/// What [`Hub::subscribe_with`] found.
#[derive(Debug, Clone, Default)]
pub struct Subscribed {
    /// The channel's position when the subscriber joined: every later publication reaches
    /// it live. `None` without history.
    pub position: Option<Position>,
    /// The outcome of the recovery asked for: the missed publications the subscriber may
    /// see (its filter and identity applied), in order, or why none can be.
    pub recovery: Option<Recovery<Arc<Publication>>>,
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
    /// Its name (for presence events).
    name: ChannelName,
    groups: Vec<Group<S>>,
    count: usize,
    /// Recent publications, when the namespace keeps history.
    history: Option<ChannelHistory<Arc<Publication>>>,
    /// Results of recent publishes by idempotency key.
    keys: KeyCache,
    /// Last publish or history start (caller's clock), for the sweep.
    last_publish_ms: u64,
    /// Since when the sweep has seen the channel without subscribers.
    idle_since_ms: Option<u64>,
    /// Who is present, on namespaces that track presence.
    presence: Option<ChannelPresence>,
    /// Presence events go to subscribers.
    announce: bool,
    /// The last position delivered through [`Hub::deliver_numbered`].
    delivered: Option<Position>,
}

impl<S> Channel<S> {
    fn new(name: ChannelName) -> Self {
        Self {
            name,
            groups: Vec::new(),
            count: 0,
            history: None,
            keys: KeyCache::default(),
            last_publish_ms: 0,
            idle_since_ms: None,
            presence: None,
            announce: false,
            delivered: None,
        }
    }

    /// Nothing but subscribers keeps it in the hub.
    fn is_bare(&self) -> bool {
        self.history.is_none() && self.keys.is_empty()
    }

    fn group_of(&self, conn: ConnId) -> Option<usize> {
        self.groups.iter().position(|g| g.members.contains_key(&conn))
    }
}

/// Idempotency keys of one channel and the positions their publishes got.
#[derive(Debug, Default)]
struct KeyCache {
    by_key: HashMap<Box<str>, Option<Position>>,
    /// (expiry, key), oldest first: keys are added with a fixed window, so in expiry order.
    order: VecDeque<(u64, Box<str>)>,
}

impl KeyCache {
    fn expire(&mut self, now_ms: u64) {
        while self.order.front().is_some_and(|(at, _)| *at <= now_ms) {
            if let Some((_, k)) = self.order.pop_front() {
                self.by_key.remove(&k);
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

type Shard<S> = RwLock<HashMap<ChannelName, Arc<Mutex<Channel<S>>>>>;

/// Makes the "resubscribe and recover" notice for a channel, in one wire format.
pub type ResyncEncoder<F> = Box<dyn Fn(&ChannelName) -> F + Send + Sync>;

/// What [`Hub::deliver_numbered`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// Fanned out; it continues the channel's stream.
    Delivered(PublishStats),
    /// Already delivered (an offset at or below the last one): dropped.
    Duplicate,
    /// It does not continue the stream (a publication was lost, or the epoch changed): not
    /// delivered; this many subscribers were told to resubscribe.
    Resync(usize),
}

/// Turns a presence event on a channel into a frame of one wire format.
pub type PresenceEncoder<F> = Box<dyn Fn(&ChannelName, &PresenceEvent) -> F + Send + Sync>;

/// Makes the epoch of a new history (random, so that it differs across restarts).
pub type EpochSource = Box<dyn Fn() -> Arc<str> + Send + Sync>;

/// A random 16-hex-digit epoch (std's per-process random hasher keys, plus a counter).
fn random_epoch() -> Arc<str> {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let h = RandomState::new().hash_one(n);
    Arc::from(format!("{h:016x}"))
}

/// Channels and their subscribers.
pub struct Hub<S: Sink> {
    shards: Box<[Shard<S>]>,
    hasher: RandomState,
    encoders: Vec<Encoder<S::Frame>>,
    subscriptions: AtomicUsize,
    channels: AtomicUsize,
    epochs: EpochSource,
    /// Per format, how presence events are encoded; `None`: the format gets none.
    presence_encoders: Vec<Option<PresenceEncoder<S::Frame>>>,
    /// Per format, the resubscribe notice; subscribers in a format without one are not told.
    resync_encoders: Vec<Option<ResyncEncoder<S::Frame>>>,
}

/// Pushes a frame made by `encode` (once per format, from that format's entry of
/// `encoders`) to every subscriber of `ch` but `except`; formats without an encoder get
/// nothing. Returns how many sinks took it.
fn notify<S: Sink, E>(
    ch: &Channel<S>,
    encoders: &[Option<E>],
    except: Option<ConnId>,
    encode: impl Fn(&E) -> S::Frame,
) -> usize {
    let mut frames: [Option<S::Frame>; MAX_FORMATS] = Default::default();
    let mut told = 0;
    for m in ch.groups.iter().flat_map(|g| g.members.values()) {
        if Some(m.conn) == except {
            continue;
        }
        let Some(Some(enc)) = encoders.get(m.format.index()) else { continue };
        let frame = frames[m.format.index()].get_or_insert_with(|| encode(enc));
        if m.sink.push(frame) {
            told += 1;
        }
    }
    told
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
            epochs: Box::new(random_epoch),
            presence_encoders: Vec::new(),
            resync_encoders: Vec::new(),
        }
    }

    /// Subscribers in format `index` are told to resubscribe (and recover) so.
    #[must_use]
    pub fn with_resync_encoder(mut self, index: usize, encoder: ResyncEncoder<S::Frame>) -> Self {
        if self.resync_encoders.len() <= index {
            self.resync_encoders.resize_with(index + 1, || None);
        }
        self.resync_encoders[index] = Some(encoder);
        self
    }

    /// Subscribers in format `index` receive presence events, encoded so.
    #[must_use]
    pub fn with_presence_encoder(mut self, index: usize, encoder: PresenceEncoder<S::Frame>) -> Self {
        if self.presence_encoders.len() <= index {
            self.presence_encoders.resize_with(index + 1, || None);
        }
        self.presence_encoders[index] = Some(encoder);
        self
    }

    /// A new epoch from the hub's source (for a history restored without its old one).
    pub fn new_epoch(&self) -> Arc<str> {
        (self.epochs)()
    }

    /// Replaces where new epochs come from (tests make them predictable).
    #[must_use]
    pub fn with_epochs(mut self, epochs: EpochSource) -> Self {
        self.epochs = epochs;
        self
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
        let o = SubscribeOptions { max_subscribers, ..SubscribeOptions::default() };
        self.subscribe_with(channel, sub, filter, &o).map(|_| ())
    }

    /// Subscribes connection `conn` to `channel`, with the channel's position and,
    /// if asked, a recovery read under the same lock as the join (see the module docs).
    pub fn subscribe_with(
        &self,
        channel: &ChannelName,
        sub: Subscriber<S>,
        filter: Option<Filter>,
        o: &SubscribeOptions<'_>,
    ) -> Result<Subscribed, SubscribeError> {
        let conn = sub.conn;
        let mut shard = self.shard(channel).write();
        let (ch, created) = match shard.entry(channel.clone()) {
            Entry::Occupied(e) => (Arc::clone(e.get()), false),
            Entry::Vacant(e) => {
                self.channels.fetch_add(1, Ordering::Relaxed);
                (Arc::clone(e.insert(Arc::new(Mutex::new(Channel::new(channel.clone()))))), true)
            }
        };
        let mut ch = ch.lock();
        if ch.group_of(conn).is_some() {
            return Err(SubscribeError::AlreadySubscribed);
        }
        if o.max_subscribers != 0 && ch.count >= o.max_subscribers {
            if created {
                shard.remove(channel);
                self.channels.fetch_sub(1, Ordering::Relaxed);
            }
            return Err(SubscribeError::ChannelFull);
        }
        let mut done = Subscribed::default();
        if let Some(limits) = o.history {
            if ch.history.is_none() {
                ch.last_publish_ms = o.now_ms;
            }
            let history = ch.history.get_or_insert_with(|| ChannelHistory::new((self.epochs)(), limits));
            done.position = Some(history.position());
            if let Some((since, limit)) = o.recover {
                done.recovery = Some(match history.recover(since, limit, o.now_ms) {
                    Recovery::Recovered(entries) => Recovery::Recovered(
                        entries
                            .into_iter()
                            .filter(|e| e.item.admits(filter.as_ref(), &sub.identity))
                            .collect(),
                    ),
                    not @ Recovery::NotRecovered(_) => not,
                });
            }
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
        ch.idle_since_ms = None;
        self.subscriptions.fetch_add(1, Ordering::Relaxed);
        if let Some(join) = o.presence {
            ch.announce = join.announce;
            let presence = ch.presence.get_or_insert_with(ChannelPresence::new);
            if let Some(ev) = presence.join(join.info.clone(), o.now_ms, join.ttl_ms) {
                self.announce(&ch, &ev);
            }
        }
        Ok(done)
    }

    /// Sends a presence event to the channel's subscribers (but the one it is about) in the
    /// formats that have a presence encoder, if the channel announces.
    fn announce(&self, ch: &Channel<S>, ev: &PresenceEvent) {
        if ch.announce {
            notify(ch, &self.presence_encoders, Some(ev.info().client), |enc| enc(&ch.name, ev));
        }
    }

    /// Removes `conn` from `channel`. Returns whether it was subscribed.
    pub fn unsubscribe(&self, channel: &ChannelName, conn: ConnId) -> bool {
        let mut shard = self.shard(channel).write();
        let Some(ch_arc) = shard.get(channel) else { return false };
        let ch_arc = Arc::clone(ch_arc);
        let mut ch = ch_arc.lock();
        let Some(gi) = ch.group_of(conn) else { return false };
        ch.groups[gi].members.swap_remove(&conn);
        if let Some(ev) = ch.presence.as_mut().and_then(|p| p.leave(conn)) {
            self.announce(&ch, &ev);
        }
        if ch.groups[gi].members.is_empty() {
            ch.groups.swap_remove(gi);
        }
        ch.count -= 1;
        // Idle from the next sweep on (the hub reads no clock).
        ch.idle_since_ms = None;
        self.subscriptions.fetch_sub(1, Ordering::Relaxed);
        if ch.count == 0 && ch.is_bare() {
            shard.remove(channel);
            self.channels.fetch_sub(1, Ordering::Relaxed);
        }
        true
    }

    /// Delivers `p` to every matching subscriber of its channel.
    pub fn publish(&self, p: &Publication) -> PublishStats {
        let Some(ch) = self.existing(&p.channel) else { return PublishStats::default() };
        let ch = ch.lock();
        self.fan_out(&ch, p)
    }

    /// Delivers `p` like [`publish`](Self::publish), first giving it the next offset in
    /// the channel's history and keeping it there (with `o.history`), and publishing
    /// nothing for an idempotency key seen within its window.
    pub fn publish_with(&self, p: &Publication, o: &PublishOptions<'_>) -> Published {
        if o.history.is_none() && o.idempotency_key.is_none() {
            return Published { stats: self.publish(p), ..Published::default() };
        }
        let ch = self.channel_entry(&p.channel);
        let mut ch = ch.lock();
        ch.keys.expire(o.now_ms);
        if let Some(key) = o.idempotency_key
            && let Some(position) = ch.keys.by_key.get(key)
        {
            return Published { position: position.clone(), duplicate: true, ..Published::default() };
        }
        let mut done = Published::default();
        ch.last_publish_ms = o.now_ms;
        done.stats = match o.history {
            Some(limits) => {
                let history = ch.history.get_or_insert_with(|| ChannelHistory::new((self.epochs)(), limits));
                let next = history.position();
                let kept = Arc::new(Publication {
                    offset: Some(next.offset + 1),
                    epoch: Some(next.epoch),
                    ..p.clone()
                });
                history.append(Arc::clone(&kept), o.now_ms);
                done.position = Some(history.position());
                let stats = self.fan_out(&ch, &kept);
                done.kept = Some(kept);
                stats
            }
            None => self.fan_out(&ch, p),
        };
        if let Some(key) = o.idempotency_key {
            let key: Box<str> = key.into();
            ch.keys.order.push_back((o.now_ms.saturating_add(o.idempotency_window_ms), key.clone()));
            ch.keys.by_key.insert(key, done.position.clone());
        }
        done
    }

    /// Delivers a publication whose offset and epoch were assigned elsewhere (see the
    /// module docs on position checks).
    pub fn deliver_numbered(&self, p: &Publication) -> Delivered {
        let (Some(offset), Some(epoch)) = (p.offset, p.epoch.as_ref()) else {
            return Delivered::Delivered(self.publish(p));
        };
        let Some(ch) = self.existing(&p.channel) else {
            return Delivered::Delivered(PublishStats::default());
        };
        let mut ch = ch.lock();
        let continues = match &ch.delivered {
            // The first one this node sees: subscribers were told their position at
            // subscribe time, from the authority; the periodic check catches a gap there.
            None => true,
            Some(last) if *last.epoch != **epoch => false,
            Some(last) if offset <= last.offset => return Delivered::Duplicate,
            Some(last) => offset == last.offset + 1,
        };
        ch.delivered = Some(Position { offset, epoch: Arc::clone(epoch) });
        if continues {
            Delivered::Delivered(self.fan_out(&ch, p))
        } else {
            Delivered::Resync(self.resync(&ch))
        }
    }

    /// Compares what this node delivered on `channel` with `authority`, the position the
    /// channel's numbering source reports. If the authority is ahead or in another epoch,
    /// publications never arrived: every subscriber is told to resubscribe, and the number
    /// told is returned. Call periodically, once per channel.
    pub fn check_position(&self, channel: &ChannelName, authority: &Position) -> usize {
        let Some(ch) = self.existing(channel) else { return 0 };
        let mut ch = ch.lock();
        let behind = match &ch.delivered {
            None => false,
            Some(last) => *last.epoch != *authority.epoch || last.offset < authority.offset,
        };
        if !behind {
            return 0;
        }
        ch.delivered = Some(authority.clone());
        self.resync(&ch)
    }

    /// Channels this node delivers numbered publications for (to check their positions).
    pub fn numbered_channels(&self) -> Vec<ChannelName> {
        let mut out = Vec::new();
        for shard in &*self.shards {
            for (name, ch) in shard.read().iter() {
                if ch.lock().delivered.is_some() {
                    out.push(name.clone());
                }
            }
        }
        out
    }

    /// Tells every subscriber of the channel to resubscribe; returns how many were told.
    fn resync(&self, ch: &Channel<S>) -> usize {
        notify(ch, &self.resync_encoders, None, |enc| enc(&ch.name))
    }

    /// The channel's entry, if it has one.
    fn existing(&self, channel: &ChannelName) -> Option<Arc<Mutex<Channel<S>>>> {
        self.shard(channel).read().get(channel).map(Arc::clone)
    }

    /// The channel's entry, created if absent.
    fn channel_entry(&self, channel: &ChannelName) -> Arc<Mutex<Channel<S>>> {
        if let Some(c) = self.existing(channel) {
            return c;
        }
        let mut shard = self.shard(channel).write();
        let c = shard.entry(channel.clone()).or_insert_with(|| {
            self.channels.fetch_add(1, Ordering::Relaxed);
            Arc::new(Mutex::new(Channel::new(channel.clone())))
        });
        Arc::clone(c)
    }

    /// Fan-out of one publication, under its channel's lock.
    fn fan_out(&self, ch: &Channel<S>, p: &Publication) -> PublishStats {
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

    /// A page of `channel`'s history (see [`ChannelHistory::page`]) as a reader with
    /// `identity` may see it (`None`: everything, for the server API). A channel that has
    /// no history yet gives an empty page at offset 0 with an empty epoch: reading does not
    /// create channels (a reader could otherwise fill memory with names).
    pub fn history(
        &self,
        channel: &ChannelName,
        q: HistoryQuery,
        identity: Option<&Identity>,
        now_ms: u64,
    ) -> Page<Arc<Publication>> {
        let HistoryQuery { since, limit, backward } = q;
        let empty = || Page { entries: Vec::new(), position: Position { offset: 0, epoch: "".into() } };
        let Some(ch) = self.existing(channel) else { return empty() };
        let mut ch = ch.lock();
        let Some(history) = ch.history.as_mut() else { return empty() };
        let Some(identity) = identity else {
            return history.page(since, limit, backward, now_ms);
        };
        // Entries the reader may not see do not count towards the limit.
        let mut page = history.page(since, 0, backward, now_ms);
        page.entries.retain(|e| e.item.admits(None, identity));
        if limit != 0 {
            page.entries.truncate(limit);
        }
        page
    }

    /// The channel's history position, if it keeps history.
    pub fn position(&self, channel: &ChannelName) -> Option<Position> {
        let shard = self.shard(channel).read();
        shard.get(channel).and_then(|c| c.lock().history.as_ref().map(ChannelHistory::position))
    }

    /// Installs a history read back from a store (at start-up, before clients connect).
    pub fn restore_history(
        &self,
        channel: &ChannelName,
        history: ChannelHistory<Arc<Publication>>,
        now_ms: u64,
    ) {
        let ch = self.channel_entry(channel);
        let mut ch = ch.lock();
        ch.history = Some(history);
        ch.last_publish_ms = now_ms;
    }

    /// Forgets what channels without subscribers no longer need: expired idempotency keys,
    /// and the history of channels neither published to nor subscribed for `idle_ttl_ms`
    /// (as seen by the sweeps: a channel's idle time starts at the first sweep after its
    /// last subscriber left). Their epoch ends: a later subscriber starts a new one, and a
    /// client coming back with a position of the old one is told it cannot recover.
    /// Returns the channels whose history was dropped (a store keeping history drops them
    /// too). Run periodically.
    pub fn sweep(&self, now_ms: u64, idle_ttl_ms: u64) -> Vec<ChannelName> {
        let mut removed = 0;
        let mut dropped = Vec::new();
        for shard in &*self.shards {
            let mut shard = shard.write();
            shard.retain(|name, ch| {
                let mut ch = ch.lock();
                ch.keys.expire(now_ms);
                if ch.count > 0 {
                    return true;
                }
                let idle_since = *ch.idle_since_ms.get_or_insert(now_ms);
                let quiet_since = idle_since.max(ch.last_publish_ms);
                if ch.history.is_some() && now_ms.saturating_sub(quiet_since) >= idle_ttl_ms {
                    ch.history = None;
                    dropped.push(name.clone());
                }
                let keep = !ch.is_bare();
                if !keep {
                    removed += 1;
                }
                keep
            });
        }
        self.channels.fetch_sub(removed, Ordering::Relaxed);
        dropped
    }

    /// A subscriber's heartbeat: refreshes its presence entry, or joins again (announced)
    /// if the entry had expired. `false` if `conn` is not subscribed to `channel`.
    pub fn presence_touch(&self, channel: &ChannelName, join: &PresenceJoin, now_ms: u64) -> bool {
        let Some(ch) = self.existing(channel) else { return false };
        let mut ch = ch.lock();
        let conn = join.info.client;
        if ch.group_of(conn).is_none() {
            return false;
        }
        let presence = ch.presence.get_or_insert_with(ChannelPresence::new);
        if presence.refresh(conn, now_ms, join.ttl_ms) {
            return true;
        }
        // Expired (swept or not): a leave first if it is still owed, then the join.
        let events: Vec<PresenceEvent> = presence
            .leave(conn)
            .into_iter()
            .chain(presence.join(join.info.clone(), now_ms, join.ttl_ms))
            .collect();
        for ev in &events {
            self.announce(&ch, ev);
        }
        true
    }

    /// Removes presence entries whose time ran out, announcing their leaves. Returns how
    /// many. Run periodically.
    pub fn presence_sweep(&self, now_ms: u64) -> usize {
        let mut expired = 0;
        for shard in &*self.shards {
            let channels: Vec<_> = shard.read().values().map(Arc::clone).collect();
            for ch in channels {
                let mut ch = ch.lock();
                let Some(p) = ch.presence.as_mut() else { continue };
                if p.next_expiry().is_none_or(|at| at > now_ms) {
                    continue;
                }
                let events = p.expire(now_ms);
                expired += events.len();
                for ev in &events {
                    self.announce(&ch, ev);
                }
            }
        }
        expired
    }

    /// Who is present on `channel` (ordered by connection); `None` if it tracks no
    /// presence (or has no subscribers).
    pub fn presence(&self, channel: &ChannelName, now_ms: u64) -> Option<Vec<PresenceInfo>> {
        let shard = self.shard(channel).read();
        let ch = shard.get(channel)?.lock();
        ch.presence.as_ref().map(|p| p.entries(now_ms))
    }

    /// Connections and unique users present on `channel`; `None` as for
    /// [`presence`](Self::presence).
    pub fn presence_counts(&self, channel: &ChannelName, now_ms: u64) -> Option<PresenceCounts> {
        let shard = self.shard(channel).read();
        let ch = shard.get(channel)?.lock();
        ch.presence.as_ref().map(|p| p.counts(now_ms))
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

    /// Channels the hub holds: with subscribers, history or idempotency keys.
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
