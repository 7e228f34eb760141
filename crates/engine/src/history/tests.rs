use proptest::prelude::*;

use super::*;

fn limits(max_count: usize, max_age_ms: u64) -> HistoryLimits {
    HistoryLimits { max_count, max_age_ms }
}

fn epoch(s: &str) -> Arc<str> {
    Arc::from(s)
}

fn at(offset: u64, e: &str) -> Position {
    Position { offset, epoch: epoch(e) }
}

fn offsets<T>(r: &Recovery<T>) -> Option<Vec<u64>> {
    match r {
        Recovery::Recovered(v) => Some(v.iter().map(|e| e.offset).collect()),
        Recovery::NotRecovered(_) => None,
    }
}

#[test]
fn offsets_count_from_one_and_recovery_returns_what_was_missed() {
    let mut h = ChannelHistory::new(epoch("e1"), limits(10, 0));
    assert_eq!(h.position(), at(0, "e1"));
    for i in 0..5 {
        assert_eq!(h.append(i, 100), i + 1);
    }
    assert_eq!(offsets(&h.recover(&at(2, "e1"), 0, 100)), Some(vec![3, 4, 5]));
    assert_eq!(offsets(&h.recover(&at(5, "e1"), 0, 100)), Some(vec![]));
    assert_eq!(offsets(&h.recover(&at(0, "e1"), 0, 100)), Some(vec![1, 2, 3, 4, 5]));
}

#[test]
fn never_a_partial_recovery() {
    let mut h = ChannelHistory::new(epoch("e1"), limits(3, 0));
    for i in 0..6 {
        h.append(i, 0);
    }
    // Kept: 4, 5, 6. From 3 everything is there; from 2, offset 3 is gone.
    assert_eq!(offsets(&h.recover(&at(3, "e1"), 0, 0)), Some(vec![4, 5, 6]));
    assert_eq!(h.recover(&at(2, "e1"), 0, 0), Recovery::NotRecovered(NotRecovered::Trimmed));
    assert_eq!(h.recover(&at(3, "e2"), 0, 0), Recovery::NotRecovered(NotRecovered::EpochChanged));
    assert_eq!(h.recover(&at(7, "e1"), 0, 0), Recovery::NotRecovered(NotRecovered::Ahead));
    assert_eq!(h.recover(&at(3, "e1"), 2, 0), Recovery::NotRecovered(NotRecovered::TooMany));
    assert_eq!(offsets(&h.recover(&at(4, "e1"), 2, 0)), Some(vec![5, 6]));
}

#[test]
fn age_limit_applies_on_read_too() {
    let mut h = ChannelHistory::new(epoch("e"), limits(100, 1_000));
    h.append("a", 0);
    h.append("b", 500);
    assert_eq!(offsets(&h.recover(&at(0, "e"), 0, 900)), Some(vec![1, 2]));
    // At 1,200 "a" (published at 0) is older than a second: gone, so from 0 is trimmed.
    assert_eq!(h.recover(&at(0, "e"), 0, 1_200), Recovery::NotRecovered(NotRecovered::Trimmed));
    assert_eq!(offsets(&h.recover(&at(1, "e"), 0, 1_200)), Some(vec![2]));
    // Nothing kept, but nothing missed either: recovered.
    assert_eq!(offsets(&h.recover(&at(2, "e"), 0, 9_999)), Some(vec![]));
    assert!(h.is_empty());
}

#[test]
fn pages_forward_and_backward() {
    let mut h = ChannelHistory::new(epoch("e"), limits(5, 0));
    for i in 0..8 {
        h.append(i, 0);
    }
    let p = |page: Page<u64>| page.entries.iter().map(|e| e.offset).collect::<Vec<_>>();
    assert_eq!(p(h.page(None, 0, false, 0)), [4, 5, 6, 7, 8]);
    assert_eq!(p(h.page(None, 2, false, 0)), [4, 5]);
    assert_eq!(p(h.page(Some(5), 2, false, 0)), [6, 7]);
    assert_eq!(p(h.page(None, 2, true, 0)), [8, 7]);
    assert_eq!(p(h.page(Some(7), 2, true, 0)), [6, 5]);
    assert_eq!(p(h.page(Some(4), 2, true, 0)), Vec::<u64>::new());
    assert_eq!(h.page(None, 1, false, 0).position, at(8, "e"));
}

#[test]
fn reset_starts_a_new_epoch_and_old_positions_are_refused() {
    let mut h = ChannelHistory::new(epoch("old"), limits(5, 0));
    h.append(1, 0);
    h.reset(epoch("new"));
    assert_eq!(h.position(), at(0, "new"));
    assert_eq!(h.recover(&at(1, "old"), 0, 0), Recovery::NotRecovered(NotRecovered::EpochChanged));
    assert_eq!(h.append(2, 0), 1);
}

#[test]
fn restore_keeps_the_consecutive_run_that_ends_at_the_top() {
    let e = |offset| Entry { offset, at_ms: 0, item: offset };
    let h = ChannelHistory::restore(epoch("e"), 9, vec![e(3), e(5), e(6), e(7), e(8), e(9)], limits(10, 0));
    assert_eq!(h.len(), 5);
    let h = ChannelHistory::restore(epoch("e"), 9, vec![e(5), e(6)], limits(10, 0));
    assert!(h.is_empty(), "entries that do not end at the top cannot be trusted");
    let mut h = ChannelHistory::restore(epoch("e"), 2, vec![e(1), e(2)], limits(10, 0));
    assert_eq!(offsets(&h.recover(&at(0, "e"), 0, 0)), Some(vec![1, 2]));
}

#[derive(Debug, Clone)]
enum Op {
    /// Publish after `dt` ms.
    Publish { dt: u64 },
    /// A client at `back` publications behind the top (maybe a stale epoch) recovers
    /// with `limit`, `dt` ms later.
    Recover { back: u64, stale: bool, limit: usize, dt: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..300).prop_map(|dt| Op::Publish { dt }),
        1 => (0u64..40, prop::bool::weighted(0.1), 0usize..30, 0u64..300)
            .prop_map(|(back, stale, limit, dt)| Op::Recover { back, stale, limit, dt }),
    ]
}

proptest! {
    /// Against a model that keeps every publication forever: a recovery returns exactly
    /// the model's publications after the position, in order; it refuses only when the
    /// epoch is stale, the client is ahead, there are more than `limit`, or one of them is
    /// beyond the count or age limit.
    #[test]
    fn recovery_matches_a_model(
        ops in prop::collection::vec(op(), 1..200),
        max_count in 1usize..20,
        max_age_ms in prop_oneof![Just(0u64), 100u64..2_000],
    ) {
        let mut h = ChannelHistory::new(epoch("e"), limits(max_count, max_age_ms));
        let mut all: Vec<(u64, u64)> = Vec::new(); // (offset, at_ms)
        let mut now = 0u64;
        for op in ops {
            match op {
                Op::Publish { dt } => {
                    now += dt;
                    let offset = h.append(all.len() as u64 * 10, now);
                    all.push((offset, now));
                    prop_assert_eq!(offset, all.len() as u64);
                }
                Op::Recover { back, stale, limit, dt } => {
                    now += dt;
                    let top = all.len() as u64;
                    let from = top.saturating_sub(back);
                    let pos = at(from, if stale { "other" } else { "e" });
                    let got = h.recover(&pos, limit, now);
                    let missed: Vec<&(u64, u64)> = all.iter().filter(|(o, _)| *o > from).collect();
                    let oldest_kept = top.saturating_sub(max_count as u64) + 1;
                    let gone = missed.iter().any(|(o, t)| {
                        *o < oldest_kept || (max_age_ms != 0 && *t < now.saturating_sub(max_age_ms))
                    });
                    let expected = if stale {
                        Recovery::NotRecovered(NotRecovered::EpochChanged)
                    } else if missed.is_empty() {
                        Recovery::Recovered(Vec::new())
                    } else if limit != 0 && missed.len() > limit {
                        Recovery::NotRecovered(NotRecovered::TooMany)
                    } else if gone {
                        Recovery::NotRecovered(NotRecovered::Trimmed)
                    } else {
                        Recovery::Recovered(
                            missed.iter().map(|(o, t)| Entry { offset: *o, at_ms: *t, item: (*o - 1) * 10 }).collect(),
                        )
                    };
                    prop_assert_eq!(got, expected);
                }
            }
        }
    }
}
