use super::*;
use crate::history::{NotRecovered, Position, Recovery};
use crate::presence::{PresenceEvent, PresenceInfo};
use std::sync::atomic::AtomicBool;

#[derive(Default)]
struct VecSink {
    got: Mutex<Vec<String>>,
    full: AtomicBool,
}

impl Sink for VecSink {
    type Frame = Arc<str>;
    fn push(&self, frame: &Arc<str>) -> bool {
        if self.full.load(Ordering::Relaxed) {
            return false;
        }
        self.got.lock().push(frame.to_string());
        true
    }
}

fn hub() -> Hub<VecSink> {
    Hub::new(vec![
        Box::new(|p: &Publication| Arc::from(format!("A:{}", p.data.as_deref().unwrap_or("")))),
        Box::new(|p: &Publication| Arc::from(format!("B:{}", p.data.as_deref().unwrap_or("")))),
    ])
}

fn ch(s: &str) -> ChannelName {
    ChannelName::parse(s).unwrap()
}

fn publication(c: &str, data: &str, tags: &[(&str, &str)]) -> Publication {
    Publication::new(ch(c), Some(data.into()), Tags::from_pairs(tags.iter().copied()).unwrap())
}

fn anon() -> Arc<Identity> {
    Arc::new(Identity::default())
}

#[test]
fn fan_out_in_order_to_every_subscriber() {
    let h = hub();
    let sinks: Vec<Arc<VecSink>> = (0..5).map(|_| Arc::new(VecSink::default())).collect();
    for (i, s) in sinks.iter().enumerate() {
        let fmt = h.format(i % 2);
        h.subscribe(
            &ch("c"),
            Subscriber { conn: i as u64, sink: Arc::clone(s), format: fmt, identity: anon() },
            None,
            0,
        )
        .unwrap();
    }
    for n in 0..10 {
        let st = h.publish(&publication("c", &n.to_string(), &[]));
        assert_eq!(st.delivered, 5);
        assert_eq!(st.encodings, 2, "one encoding per format, not per subscriber");
    }
    for (i, s) in sinks.iter().enumerate() {
        let prefix = if i % 2 == 0 { "A" } else { "B" };
        let want: Vec<String> = (0..10).map(|n| format!("{prefix}:{n}")).collect();
        assert_eq!(*s.got.lock(), want);
    }
}

#[test]
fn filters_group_and_match() {
    let h = hub();
    let a = Arc::new(VecSink::default());
    let b = Arc::new(VecSink::default());
    let c = Arc::new(VecSink::default());
    let f = h.format(0);
    h.subscribe(
        &ch("c"),
        Subscriber { conn: 1, sink: Arc::clone(&a), format: f, identity: anon() },
        Some(Filter::parse("k=v").unwrap()),
        0,
    )
    .unwrap();
    h.subscribe(
        &ch("c"),
        Subscriber { conn: 2, sink: Arc::clone(&b), format: f, identity: anon() },
        Some(Filter::parse("k=v").unwrap()),
        0,
    )
    .unwrap();
    h.subscribe(&ch("c"), Subscriber { conn: 3, sink: Arc::clone(&c), format: f, identity: anon() }, None, 0)
        .unwrap();
    assert_eq!(h.filter_group_count(&ch("c")), 2);
    h.publish(&publication("c", "1", &[("k", "v")]));
    h.publish(&publication("c", "2", &[("k", "w")]));
    h.publish(&publication("c", "3", &[]));
    assert_eq!(*a.got.lock(), vec!["A:1"]);
    assert_eq!(*b.got.lock(), vec!["A:1"]);
    assert_eq!(*c.got.lock(), vec!["A:1", "A:2", "A:3"]);
}

#[test]
fn targeting() {
    let h = hub();
    let f = h.format(0);
    let mk = |u: &str| Arc::new(Identity { user: Some(u.into()), ..Default::default() });
    let a = Arc::new(VecSink::default());
    let b = Arc::new(VecSink::default());
    let n = Arc::new(VecSink::default());
    h.subscribe(
        &ch("c"),
        Subscriber { conn: 1, sink: Arc::clone(&a), format: f, identity: mk("alice") },
        None,
        0,
    )
    .unwrap();
    h.subscribe(
        &ch("c"),
        Subscriber { conn: 2, sink: Arc::clone(&b), format: f, identity: mk("bob") },
        None,
        0,
    )
    .unwrap();
    h.subscribe(&ch("c"), Subscriber { conn: 3, sink: Arc::clone(&n), format: f, identity: anon() }, None, 0)
        .unwrap();
    let mut p = publication("c", "x", &[]);
    p.target = Some(Target { users: vec!["bob".into()], ..Default::default() }.normalize().unwrap());
    assert_eq!(h.publish(&p).delivered, 1);
    assert!(a.got.lock().is_empty());
    assert_eq!(*b.got.lock(), vec!["A:x"]);
    assert!(n.got.lock().is_empty());
}

#[test]
fn limits_duplicates_and_cleanup() {
    let h = hub();
    let f = h.format(0);
    let s = Arc::new(VecSink::default());
    h.subscribe(&ch("c"), Subscriber { conn: 1, sink: Arc::clone(&s), format: f, identity: anon() }, None, 2)
        .unwrap();
    assert_eq!(
        h.subscribe(
            &ch("c"),
            Subscriber { conn: 1, sink: Arc::clone(&s), format: f, identity: anon() },
            None,
            2
        ),
        Err(SubscribeError::AlreadySubscribed)
    );
    h.subscribe(&ch("c"), Subscriber { conn: 2, sink: Arc::clone(&s), format: f, identity: anon() }, None, 2)
        .unwrap();
    assert_eq!(
        h.subscribe(
            &ch("c"),
            Subscriber { conn: 3, sink: Arc::clone(&s), format: f, identity: anon() },
            None,
            2
        ),
        Err(SubscribeError::ChannelFull)
    );
    assert_eq!(h.subscription_count(), 2);
    assert!(h.unsubscribe(&ch("c"), 1));
    assert!(!h.unsubscribe(&ch("c"), 1));
    assert!(h.unsubscribe(&ch("c"), 2));
    assert_eq!(h.channel_count(), 0);
    assert_eq!(h.subscription_count(), 0);
    assert_eq!(h.publish(&publication("c", "x", &[])), PublishStats::default());
}

#[test]
fn refusing_sink_counts_as_dropped_and_does_not_stop_others() {
    let h = hub();
    let f = h.format(0);
    let slow = Arc::new(VecSink::default());
    slow.full.store(true, Ordering::Relaxed);
    let fast = Arc::new(VecSink::default());
    h.subscribe(
        &ch("c"),
        Subscriber { conn: 1, sink: Arc::clone(&slow), format: f, identity: anon() },
        None,
        0,
    )
    .unwrap();
    h.subscribe(
        &ch("c"),
        Subscriber { conn: 2, sink: Arc::clone(&fast), format: f, identity: anon() },
        None,
        0,
    )
    .unwrap();
    let st = h.publish(&publication("c", "x", &[]));
    assert_eq!((st.delivered, st.dropped), (1, 1));
    assert_eq!(*fast.got.lock(), vec!["A:x"]);
}

// History, recovery, idempotency and the sweep.

const LIMITS: HistoryLimits = HistoryLimits { max_count: 5, max_age_ms: 0 };

/// A hub whose epochs are "e1", "e2", …; the encoder shows data and offset.
fn history_hub() -> Hub<VecSink> {
    let n = std::sync::atomic::AtomicU64::new(0);
    Hub::new(vec![Box::new(|p: &Publication| {
        Arc::from(format!("{}@{}", p.data.as_deref().unwrap_or(""), p.offset.map_or(0, |o| o)))
    })])
    .with_epochs(Box::new(move || Arc::from(format!("e{}", n.fetch_add(1, Ordering::Relaxed) + 1))))
}

fn publish_h(h: &Hub<VecSink>, data: &str, now_ms: u64) -> Published {
    let o = PublishOptions { history: Some(LIMITS), now_ms, ..PublishOptions::default() };
    h.publish_with(&publication("c", data, &[]), &o)
}

fn sub(conn: u64, sink: &Arc<VecSink>, h: &Hub<VecSink>) -> Subscriber<VecSink> {
    Subscriber { conn, sink: Arc::clone(sink), format: h.format(0), identity: anon() }
}

fn recover_from(
    h: &Hub<VecSink>,
    conn: u64,
    sink: &Arc<VecSink>,
    since: &Position,
    limit: usize,
) -> Subscribed {
    let o = SubscribeOptions {
        history: Some(LIMITS),
        recover: Some((since, limit)),
        ..SubscribeOptions::default()
    };
    h.subscribe_with(&ch("c"), sub(conn, sink, h), None, &o).unwrap()
}

fn offsets(r: &Option<Recovery<Arc<Publication>>>) -> Vec<u64> {
    match r {
        Some(Recovery::Recovered(v)) => v.iter().map(|e| e.offset).collect(),
        other => panic!("not recovered: {other:?}"),
    }
}

#[test]
fn offsets_epochs_and_recovery_after_a_gap() {
    let h = history_hub();
    let s = Arc::new(VecSink::default());
    let o = SubscribeOptions { history: Some(LIMITS), ..SubscribeOptions::default() };
    let first = h.subscribe_with(&ch("c"), sub(1, &s, &h), None, &o).unwrap();
    assert_eq!(first.position, Some(Position { offset: 0, epoch: "e1".into() }));
    assert!(first.recovery.is_none());
    for i in 1..=3 {
        let p = publish_h(&h, &i.to_string(), 0);
        assert_eq!(p.position, Some(Position { offset: i, epoch: "e1".into() }));
        assert_eq!(p.kept.as_ref().and_then(|k| k.offset), Some(i));
    }
    assert_eq!(*s.got.lock(), ["1@1", "2@2", "3@3"]);
    // It leaves after offset 2 … two more are published … it comes back.
    assert!(h.unsubscribe(&ch("c"), 1));
    assert_eq!(h.channel_count(), 1, "a channel with history outlives its subscribers");
    publish_h(&h, "4", 0);
    publish_h(&h, "5", 0);
    let back = recover_from(&h, 1, &s, &Position { offset: 2, epoch: "e1".into() }, 0);
    assert_eq!(offsets(&back.recovery), [3, 4, 5]);
    assert_eq!(back.position.map(|p| p.offset), Some(5));
    publish_h(&h, "6", 0);
    assert_eq!(s.got.lock().last().map(String::as_str), Some("6@6"), "live after the recovery");
}

#[test]
fn recovery_is_all_or_nothing() {
    let h = history_hub();
    let s = Arc::new(VecSink::default());
    for i in 1..=8 {
        publish_h(&h, &i.to_string(), 0);
    }
    let e1 = |offset| Position { offset, epoch: "e1".into() };
    // Kept: 4..=8 (max_count 5). From 3: everything after it is kept.
    assert_eq!(offsets(&recover_from(&h, 1, &s, &e1(3), 0).recovery), [4, 5, 6, 7, 8]);
    h.unsubscribe(&ch("c"), 1);
    let not = |r: Subscribed| match r.recovery {
        Some(Recovery::NotRecovered(why)) => why,
        other => panic!("recovered: {other:?}"),
    };
    assert_eq!(not(recover_from(&h, 1, &s, &e1(2), 0)), NotRecovered::Trimmed);
    h.unsubscribe(&ch("c"), 1);
    assert_eq!(not(recover_from(&h, 1, &s, &e1(3), 4)), NotRecovered::TooMany);
    h.unsubscribe(&ch("c"), 1);
    assert_eq!(not(recover_from(&h, 1, &s, &e1(9), 0)), NotRecovered::Ahead);
    h.unsubscribe(&ch("c"), 1);
    let stale = Position { offset: 7, epoch: "e0".into() };
    let r = recover_from(&h, 1, &s, &stale, 0);
    assert_eq!(r.position.clone().map(|p| p.offset), Some(8), "the current position comes with a refusal");
    assert_eq!(not(r), NotRecovered::EpochChanged);
}

#[test]
fn recovery_applies_the_subscribers_filter_and_identity() {
    let h = history_hub();
    let o = PublishOptions { history: Some(LIMITS), ..PublishOptions::default() };
    h.publish_with(&publication("c", "a", &[("k", "v")]), &o);
    h.publish_with(&publication("c", "b", &[("k", "w")]), &o);
    let mut secret = publication("c", "for-bob", &[("k", "v")]);
    secret.target = Some(Target { users: vec!["bob".into()], ..Default::default() }.normalize().unwrap());
    h.publish_with(&secret, &o);
    let s = Arc::new(VecSink::default());
    let since = Position { offset: 0, epoch: "e1".into() };
    let so =
        SubscribeOptions { history: Some(LIMITS), recover: Some((&since, 0)), ..SubscribeOptions::default() };
    let r = h.subscribe_with(&ch("c"), sub(1, &s, &h), Some(Filter::parse("k=v").unwrap()), &so).unwrap();
    assert_eq!(offsets(&r.recovery), [1], "filtered out: 2; targeted at bob: 3");
    // The history API: the server sees everything, a reader only what it may.
    let q = HistoryQuery::default();
    assert_eq!(h.history(&ch("c"), q, None, 0).entries.len(), 3);
    let alice = Identity { user: Some("alice".into()), ..Default::default() };
    let page = h.history(&ch("c"), HistoryQuery { limit: 2, ..q }, Some(&alice), 0);
    assert_eq!(page.entries.iter().map(|e| e.offset).collect::<Vec<_>>(), [1, 2]);
    let back = h.history(&ch("c"), HistoryQuery { backward: true, limit: 1, ..q }, Some(&alice), 0);
    assert_eq!(back.entries.iter().map(|e| e.offset).collect::<Vec<_>>(), [2], "3 is skipped, not counted");
}

#[test]
fn an_idempotency_key_publishes_once_within_its_window() {
    let h = history_hub();
    let s = Arc::new(VecSink::default());
    h.subscribe(&ch("c"), sub(1, &s, &h), None, 0).unwrap();
    let keyed = |key, now_ms| PublishOptions {
        history: Some(LIMITS),
        idempotency_key: Some(key),
        idempotency_window_ms: 1000,
        now_ms,
    };
    let first = h.publish_with(&publication("c", "x", &[]), &keyed("k", 0));
    let again = h.publish_with(&publication("c", "x", &[]), &keyed("k", 999));
    assert!(!first.duplicate && again.duplicate);
    assert_eq!(first.position, again.position, "the retry gets the first result");
    assert_eq!(again.stats.delivered, 0);
    assert_eq!(*s.got.lock(), ["x@1"]);
    h.publish_with(&publication("c", "y", &[]), &keyed("other", 999));
    let later = h.publish_with(&publication("c", "x", &[]), &keyed("k", 1000));
    assert!(!later.duplicate, "the window is over");
    assert_eq!(*s.got.lock(), ["x@1", "y@2", "x@3"]);
    // Without history: still once, with no position.
    let plain = |now_ms| PublishOptions {
        idempotency_key: Some("p"),
        idempotency_window_ms: 1000,
        now_ms,
        ..PublishOptions::default()
    };
    assert!(!h.publish_with(&publication("d", "1", &[]), &plain(0)).duplicate);
    let dup = h.publish_with(&publication("d", "1", &[]), &plain(1));
    assert!(dup.duplicate && dup.position.is_none());
}

#[test]
fn the_sweep_forgets_idle_channels_and_their_epoch() {
    let h = history_hub();
    let s = Arc::new(VecSink::default());
    publish_h(&h, "1", 0);
    let o = PublishOptions {
        idempotency_key: Some("k"),
        idempotency_window_ms: 100,
        now_ms: 0,
        ..PublishOptions::default()
    };
    h.publish_with(&publication("keys", "1", &[]), &o);
    assert_eq!(h.channel_count(), 2);
    // The first sweep starts the idle clock; keys outlive their window only until a sweep.
    assert!(h.sweep(50, 1000).is_empty());
    assert!(h.sweep(100, 1000).is_empty());
    assert_eq!(h.channel_count(), 1, "the idempotency key expired, and its channel with it");
    assert!(h.sweep(1049, 1000).is_empty(), "idle for 999 ms");
    assert_eq!(h.position(&ch("c")).map(|p| p.offset), Some(1));
    // A subscriber keeps it however long it is quiet.
    h.subscribe(&ch("c"), sub(1, &s, &h), None, 0).unwrap();
    assert!(h.sweep(10_000, 1000).is_empty());
    h.unsubscribe(&ch("c"), 1);
    assert!(h.sweep(10_999, 1000).is_empty(), "idle since the sweep at 10,999");
    assert_eq!(h.sweep(11_999, 1000), [ch("c")]);
    assert_eq!(h.channel_count(), 0);
    // Reading the history of a channel without one creates nothing.
    let page = h.history(&ch("c"), HistoryQuery::default(), None, 0);
    assert_eq!((page.position.offset, &*page.position.epoch, page.entries.len()), (0, "", 0));
    assert_eq!(h.channel_count(), 0);
    // Its next life is a new epoch: an old position cannot be recovered.
    let r = recover_from(&h, 1, &s, &Position { offset: 1, epoch: "e1".into() }, 0);
    assert_eq!(r.position, Some(Position { offset: 0, epoch: "e2".into() }));
    assert_eq!(r.recovery, Some(Recovery::NotRecovered(NotRecovered::EpochChanged)));
}

#[test]
fn a_recovery_racing_publishers_misses_nothing_and_doubles_nothing() {
    let h = Arc::new(history_hub());
    let big = HistoryLimits { max_count: 100_000, max_age_ms: 0 };
    let publishers: Vec<_> = (0..2)
        .map(|t| {
            let h = Arc::clone(&h);
            std::thread::spawn(move || {
                for i in 0..2000 {
                    let o = PublishOptions { history: Some(big), ..PublishOptions::default() };
                    h.publish_with(&publication("c", &format!("{t}-{i}"), &[]), &o);
                }
            })
        })
        .collect();
    // Subscribers join (recovering from 0) while the publishers run; each must see every
    // offset exactly once: recovered ones, then live ones.
    let mut sinks = Vec::new();
    for conn in 0..50 {
        let s = Arc::new(VecSink::default());
        let since = Position { offset: 0, epoch: "e1".into() };
        let o = SubscribeOptions {
            history: Some(big),
            recover: Some((&since, 0)),
            ..SubscribeOptions::default()
        };
        let r = h.subscribe_with(&ch("c"), sub(conn, &s, &h), None, &o).unwrap();
        sinks.push((s, offsets(&r.recovery)));
        std::thread::yield_now();
    }
    for p in publishers {
        p.join().unwrap();
    }
    for (s, recovered) in sinks {
        let live = s
            .got
            .lock()
            .iter()
            .map(|f| f.rsplit_once('@').unwrap().1.parse::<u64>().unwrap())
            .collect::<Vec<_>>();
        let all: Vec<u64> = recovered.into_iter().chain(live).collect();
        assert_eq!(all, (1..=4000).collect::<Vec<_>>());
    }
}

// Presence.

fn presence_hub() -> Hub<VecSink> {
    history_hub().with_presence_encoder(
        0,
        Box::new(|c: &ChannelName, ev: &PresenceEvent| {
            let (k, i) = match ev {
                PresenceEvent::Join(i) => ("join", i),
                PresenceEvent::Leave(i) => ("leave", i),
            };
            Arc::from(format!("{k}:{}:{}", c.as_str(), i.client))
        }),
    )
}

fn joining(conn: u64, user: &str, announce: bool) -> PresenceJoin {
    PresenceJoin {
        info: PresenceInfo { client: conn, user: Some(user.into()), info: None },
        ttl_ms: 100,
        announce,
    }
}

fn subscribe_present(h: &Hub<VecSink>, conn: u64, sink: &Arc<VecSink>, join: &PresenceJoin, now_ms: u64) {
    let o = SubscribeOptions { presence: Some(join), now_ms, ..SubscribeOptions::default() };
    h.subscribe_with(&ch("c"), sub(conn, sink, h), None, &o).unwrap();
}

#[test]
fn presence_follows_subscriptions_and_announces_to_the_others() {
    let h = presence_hub();
    let (a, b) = (Arc::new(VecSink::default()), Arc::new(VecSink::default()));
    subscribe_present(&h, 1, &a, &joining(1, "ann", true), 0);
    subscribe_present(&h, 2, &b, &joining(2, "bob", true), 0);
    assert_eq!(*a.got.lock(), ["join:c:2"], "the joiner is not told about itself");
    assert!(b.got.lock().is_empty());
    let counts = h.presence_counts(&ch("c"), 0).unwrap();
    assert_eq!((counts.connections, counts.users), (2, 2));
    h.unsubscribe(&ch("c"), 2);
    assert_eq!(*a.got.lock(), ["join:c:2", "leave:c:2"]);
    assert_eq!(h.presence(&ch("c"), 0).unwrap().len(), 1);
    // Heartbeats keep an entry; without them the sweep removes it and says so.
    let c = Arc::new(VecSink::default());
    subscribe_present(&h, 3, &c, &joining(3, "cy", true), 0);
    assert!(h.presence_touch(&ch("c"), &joining(1, "ann", true), 90));
    assert_eq!(h.presence_sweep(99), 0);
    assert_eq!(h.presence_sweep(100), 1);
    assert_eq!(a.got.lock().last().map(String::as_str), Some("leave:c:3"));
    assert_eq!(h.presence(&ch("c"), 100).unwrap().iter().map(|p| p.client).collect::<Vec<_>>(), [1]);
    // The next heartbeat of the still-subscribed connection brings it back.
    assert!(h.presence_touch(&ch("c"), &joining(3, "cy", true), 150));
    assert_eq!(a.got.lock().last().map(String::as_str), Some("join:c:3"));
    assert!(!h.presence_touch(&ch("c"), &joining(9, "nobody", true), 150), "not subscribed");
}

#[test]
fn presence_without_announcing_sends_nothing() {
    let h = presence_hub();
    let (a, b) = (Arc::new(VecSink::default()), Arc::new(VecSink::default()));
    subscribe_present(&h, 1, &a, &joining(1, "ann", false), 0);
    subscribe_present(&h, 2, &b, &joining(2, "ann", false), 0);
    h.unsubscribe(&ch("c"), 2);
    assert!(a.got.lock().is_empty());
    let counts = h.presence_counts(&ch("c"), 0).unwrap();
    assert_eq!((counts.connections, counts.users), (1, 1));
}

// Position checks.

fn numbered(data: &str, offset: u64, epoch: &str) -> Publication {
    let mut p = publication("c", data, &[]);
    p.offset = Some(offset);
    p.epoch = Some(epoch.into());
    p
}

fn resync_hub() -> Hub<VecSink> {
    history_hub()
        .with_resync_encoder(0, Box::new(|c: &ChannelName| Arc::from(format!("resync:{}", c.as_str()))))
}

#[test]
fn a_numbered_stream_with_a_hole_makes_subscribers_resubscribe() {
    let h = resync_hub();
    let s = Arc::new(VecSink::default());
    h.subscribe(&ch("c"), sub(1, &s, &h), None, 0).unwrap();
    assert!(matches!(h.deliver_numbered(&numbered("a", 7, "e")), Delivered::Delivered(_)));
    assert!(matches!(h.deliver_numbered(&numbered("b", 8, "e")), Delivered::Delivered(_)));
    assert_eq!(h.deliver_numbered(&numbered("b", 8, "e")), Delivered::Duplicate);
    // 9 was lost on the way.
    assert_eq!(h.deliver_numbered(&numbered("d", 10, "e")), Delivered::Resync(1));
    assert!(matches!(h.deliver_numbered(&numbered("e", 11, "e")), Delivered::Delivered(_)));
    // Another epoch: the stream restarted elsewhere.
    assert_eq!(h.deliver_numbered(&numbered("f", 1, "e2")), Delivered::Resync(1));
    assert_eq!(*s.got.lock(), ["a@7", "b@8", "resync:c", "e@11", "resync:c"]);
    assert_eq!(h.numbered_channels(), [ch("c")]);
}

#[test]
fn the_periodic_check_catches_publications_that_never_arrived() {
    let h = resync_hub();
    let s = Arc::new(VecSink::default());
    h.subscribe(&ch("c"), sub(1, &s, &h), None, 0).unwrap();
    h.deliver_numbered(&numbered("a", 1, "e"));
    let at = |offset, epoch: &str| Position { offset, epoch: epoch.into() };
    assert_eq!(h.check_position(&ch("c"), &at(1, "e")), 0, "in step");
    assert_eq!(h.check_position(&ch("c"), &at(3, "e")), 1, "2 and 3 never came");
    assert_eq!(h.check_position(&ch("c"), &at(3, "e")), 0, "told once");
    assert_eq!(h.check_position(&ch("c"), &at(3, "other")), 1);
    assert_eq!(h.check_position(&ch("nope"), &at(3, "e")), 0);
    assert_eq!(*s.got.lock(), ["a@1", "resync:c", "resync:c"]);
}
