//! Throughput of `apply` on a large scope. Not a CI assertion (timings vary): run with
//! `cargo test --release -p tether-engine sync::tests::perf -- --ignored --nocapture`.

use std::time::Duration;

use serde_json::json;
use tether_proto::jetstream::SyncFragment;

use super::{NODE_TOML, add, change, schema, scope, u, us};
use crate::sync::ScopeState;

const GROUPS: u32 = 1_000;
const PER_GROUP: u32 = 100;

/// Group `g` is `u(1 + g)`; its items are `u(1_000_000 + g * 1000 + i)`.
fn item(g: u32, i: u32) -> u32 {
    1_000_000 + g * 1000 + i
}

fn big_scope() -> ScopeState {
    let s = schema(NODE_TOML);
    let mut sc = scope(&s, "Node", &[]);
    let groups: Vec<String> = (0..GROUPS).map(|g| us(1 + g)).collect();
    let mut fragments = vec![change(u(0), "Node", &[("kids", json!(groups))])];
    for g in 0..GROUPS {
        let items: Vec<String> = (0..PER_GROUP).map(|i| us(item(g, i))).collect();
        fragments.push(add(u(1 + g), "Node", &[("kids", json!(items))]));
        fragments.extend(
            (0..PER_GROUP).map(|i| add(u(item(g, i)), "Node", &[("n", json!(i)), ("s", json!("item"))])),
        );
    }
    let a = sc.apply(&fragments, false);
    assert!(a.replies.iter().all(Result::is_ok));
    sc
}

/// Small changesets: a value change (only that, without `collections`), or sometimes an
/// item added to or removed from the end of a group (the whole collection is sent, as
/// clients do).
fn workload(n: usize, collections: bool) -> Vec<Vec<SyncFragment>> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut sizes = vec![PER_GROUP; GROUPS as usize];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let g = u32::try_from(next() % u64::from(GROUPS)).unwrap();
        let size = &mut sizes[g as usize];
        let r = if collections { next() % 100 } else { next() % 70 };
        let cs = if r < 70 || *size == 0 {
            let i = u32::try_from(next() % u64::from(PER_GROUP)).unwrap().min(size.saturating_sub(1));
            vec![change(u(item(g, i)), "Node", &[("n", json!(r)), ("s", json!("changed"))])]
        } else if r < 85 && *size < 999 {
            *size += 1;
            let items: Vec<String> = (0..*size).map(|i| us(item(g, i))).collect();
            vec![
                change(u(1 + g), "Node", &[("kids", json!(items))]),
                add(u(item(g, *size - 1)), "Node", &[("n", json!(1))]),
            ]
        } else {
            *size -= 1;
            let items: Vec<String> = (0..*size).map(|i| us(item(g, i))).collect();
            vec![change(u(1 + g), "Node", &[("kids", json!(items))])]
        };
        out.push(cs);
    }
    out
}

fn measure(atomic: bool, collections: bool) -> (f64, Duration) {
    let mut sc = big_scope();
    let work = workload(100_000, collections);
    let start = std::time::SystemTime::now();
    for cs in &work {
        let a = sc.apply(cs, atomic);
        debug_assert!(a.replies.iter().all(Result::is_ok), "{:?}", a.replies);
    }
    let took = start.elapsed().unwrap_or_default();
    #[allow(clippy::cast_precision_loss)]
    let rate = work.len() as f64 / took.as_secs_f64();
    (rate, took)
}

#[test]
#[ignore = "throughput measurement; run in release with --ignored --nocapture"]
fn throughput_on_a_large_scope() {
    let sc = big_scope();
    println!("scope of {} objects", sc.len());
    for collections in [false, true] {
        for atomic in [false, true] {
            let (rate, took) = measure(atomic, collections);
            println!("collections={collections} atomic={atomic}: 100000 changesets in {took:?}: {rate:.0}/s");
        }
    }
}

#[test]
#[ignore = "profiling aid"]
fn profile_loop() {
    let mut sc = big_scope();
    let work = workload(100_000, true);
    for _ in 0..4 {
        for cs in &work {
            let a = sc.apply(cs, false);
            std::hint::black_box(a);
        }
    }
}
