use super::*;
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
    Publication {
        channel: ch(c),
        data: Some(data.into()),
        tags: Tags::from_pairs(tags.iter().copied()).unwrap(),
        target: None,
    }
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
