//! Properties of `apply` over random changesets on random-ish scopes.

use std::collections::HashSet;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde_json::{Value, json};
use tether_proto::jetstream::{FragmentKind, SyncFragment, Uuid};

use super::{NODE_TOML, check_invariants, schema, scope, u, us};
use crate::sync::{ScopeState, error::ATOMIC_REJECTED_KIND};

/// UUIDs in play: the root `u(0)` and a few more, so that fragments meet often.
const POOL: u32 = 12;

fn uuid_str() -> impl Strategy<Value = Value> {
    prop_oneof![
        12 => (0..POOL).prop_map(|i| json!(us(i))),
        2 => (0..POOL).prop_map(|i| json!(us(i).to_uppercase())),
        1 => Just(json!("junk")),
    ]
}

/// Mostly valid values (so that scopes grow), sometimes not.
fn value_for(key: &'static str) -> BoxedStrategy<Value> {
    match key {
        "n" => prop_oneof![
            8 => any::<i32>().prop_map(|i| json!(i)),
            4 => (-1e6f64..1e6).prop_map(|f| json!(f)),
            2 => Just(json!(null)),
            1 => Just(json!("1")),
        ]
        .boxed(),
        "s" => prop_oneof![8 => Just(json!("a")), 4 => Just(json!("b")), 2 => Just(json!(null)), 1 => Just(json!(1))].boxed(),
        "b" => prop_oneof![8 => any::<bool>().prop_map(|b| json!(b)), 2 => Just(json!(null)), 1 => Just(json!(0))].boxed(),
        "d" => prop_oneof![
            8 => (0f64..2e9).prop_map(|f| json!(f)),
            4 => Just(json!("2020-01-01T00:00:00.123Z")),
            1 => Just(json!("garbage")),
            2 => Just(json!(null)),
            1 => Just(json!(true)),
        ]
        .boxed(),
        "e" => prop_oneof![6 => Just(json!(0)), 6 => Just(json!(1.0)), 1 => Just(json!(5)), 1 => Just(json!(null))].boxed(),
        "c" => prop_oneof![
            6 => Just(json!(["red"])),
            6 => Just(json!(["green", "red"])),
            1 => Just(json!("red")),
            1 => Just(json!(["blue"])),
        ]
        .boxed(),
        "nums" => prop_oneof![8 => Just(json!([1, 2.0])), 4 => Just(json!([null])), 1 => Just(json!("x")), 1 => Just(json!([1, "a"]))].boxed(),
        "one" => prop_oneof![10 => uuid_str(), 4 => Just(json!(null)), 1 => Just(json!(5))].boxed(),
        "kids" => prop_oneof![
            14 => prop::collection::vec(uuid_str(), 0..4).prop_map(Value::Array),
            1 => Just(json!("x")),
            1 => Just(json!([5])),
        ]
        .boxed(),
        _ => Just(json!(1)).boxed(),
    }
}

fn property() -> impl Strategy<Value = (String, Value)> {
    prop::sample::select(vec![
        "n", "s", "b", "d", "e", "c", "nums", "one", "one", "one", "kids", "kids", "kids", "kids", "weight",
        "zz",
    ])
    .prop_flat_map(|k| value_for(k).prop_map(move |v| (k.to_owned(), v)))
}

fn fragment() -> impl Strategy<Value = SyncFragment> {
    (
        prop_oneof![7 => Just(FragmentKind::Add), 13 => Just(FragmentKind::Change)],
        prop_oneof![2 => Just(0), 3 => 0..POOL],
        prop_oneof![14 => Just("Node"), 4 => Just("Leaf"), 1 => Just("Other"), 1 => Just("Nope")],
        prop::collection::vec(property(), 0..4),
    )
        .prop_map(|(kind, i, cls, properties)| SyncFragment {
            kind,
            uuid: u(i),
            cls_name: cls.to_owned(),
            properties,
        })
}

/// A value whose references are picks among the objects that exist when the changeset is
/// built (so that most references hit).
#[derive(Debug, Clone)]
enum Pick {
    Plain(Value),
    One(usize),
    Many(Vec<usize>),
}

/// A fragment with a purpose, its references resolved against the scope when the changeset
/// is built: scopes grow, shrink, and get cycles and shared objects.
#[derive(Debug, Clone)]
enum Op {
    /// Add a new object and put it in `kids` of an existing one (keeping its kids or not).
    Attach { parent: usize, new: u32, keep: bool, leaf: bool, props: Vec<(String, Pick)> },
    /// Change an existing object.
    Change { target: usize, props: Vec<(String, Pick)> },
    /// Anything, often invalid.
    Raw(SyncFragment),
}

fn pick_property() -> impl Strategy<Value = (String, Pick)> {
    prop_oneof![
        3 => any::<i32>().prop_map(|i| ("n".to_owned(), Pick::Plain(json!(i)))),
        1 => Just(("s".to_owned(), Pick::Plain(json!("v")))),
        1 => Just(("d".to_owned(), Pick::Plain(json!("2021-06-01T12:00:00Z")))),
        1 => Just(("e".to_owned(), Pick::Plain(json!(1)))),
        1 => Just(("c".to_owned(), Pick::Plain(json!(["green"])))),
        4 => any::<usize>().prop_map(|i| ("one".to_owned(), Pick::One(i))),
        2 => Just(("one".to_owned(), Pick::Plain(json!(null)))),
        5 => prop::collection::vec(any::<usize>(), 0..4).prop_map(|v| ("kids".to_owned(), Pick::Many(v))),
        1 => property().prop_map(|(k, v)| (k, Pick::Plain(v))),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (any::<usize>(), 1..64u32, prop::bool::weighted(0.7), prop::bool::weighted(0.3), prop::collection::vec(pick_property(), 0..3))
            .prop_map(|(parent, new, keep, leaf, props)| Op::Attach { parent, new, keep, leaf, props }),
        4 => (any::<usize>(), prop::collection::vec(pick_property(), 0..3))
            .prop_map(|(target, props)| Op::Change { target, props }),
        2 => fragment().prop_map(Op::Raw),
    ]
}

fn changeset() -> impl Strategy<Value = (Vec<Op>, bool)> {
    (prop::collection::vec(op(), 0..6), prop::bool::weighted(0.3))
}

fn history() -> impl Strategy<Value = Vec<(Vec<Op>, bool)>> {
    prop::collection::vec(changeset(), 1..12)
}

/// The fragments of a changeset, built against the scope as it is (the last fragments are
/// shuffled into a fixed but different order when `mix`).
fn build(sc: &ScopeState, ops: &[Op], mix: bool) -> Vec<SyncFragment> {
    let mut objects: Vec<Uuid> = sc.objects.keys().copied().collect();
    objects.sort_unstable();
    let pick = |i: usize, objects: &[Uuid]| objects[i % objects.len()];
    let resolve = |props: &[(String, Pick)], objects: &[Uuid]| -> Vec<(String, Value)> {
        props
            .iter()
            .map(|(k, p)| {
                let v = match p {
                    Pick::Plain(v) => v.clone(),
                    Pick::One(i) => json!(pick(*i, objects).to_string()),
                    Pick::Many(is) => {
                        json!(is.iter().map(|i| pick(*i, objects).to_string()).collect::<Vec<_>>())
                    }
                };
                (k.clone(), v)
            })
            .collect()
    };
    let mut out = Vec::new();
    for op in ops {
        match op {
            Op::Attach { parent, new, keep, leaf, props } => {
                let parent = pick(*parent, &objects);
                let new = u(1000 + new);
                let mut kids: Vec<String> = if *keep {
                    sc.object(&parent)
                        .and_then(|(_, vals)| vals.into_iter().find(|(k, _)| *k == "kids"))
                        .and_then(|(_, v)| v.as_array().cloned())
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                } else {
                    Vec::new()
                };
                kids.push(new.to_string());
                out.push(SyncFragment {
                    kind: FragmentKind::Change,
                    uuid: parent,
                    cls_name: "Node".to_owned(),
                    properties: vec![("kids".to_owned(), json!(kids))],
                });
                // The new object may be referred to by later fragments of the changeset.
                objects.push(new);
                let cls = if *leaf { "Leaf" } else { "Node" };
                out.push(SyncFragment {
                    kind: FragmentKind::Add,
                    uuid: new,
                    cls_name: cls.to_owned(),
                    properties: resolve(props, &objects),
                });
            }
            Op::Change { target, props } => out.push(SyncFragment {
                kind: FragmentKind::Change,
                uuid: pick(*target, &objects),
                cls_name: "Node".to_owned(),
                properties: resolve(props, &objects),
            }),
            Op::Raw(f) => out.push(f.clone()),
        }
    }
    if mix {
        out.reverse();
    }
    out
}

fn fresh() -> ScopeState {
    scope(&schema(NODE_TOML), "Node", &[])
}

proptest! {
    // Failing cases are kept next to this file (`props.proptest-regressions`).
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    /// (1) An atomic changeset that fails leaves the scope exactly as it was; one that does
    /// not fail does what the same changeset does without `atomic`.
    #[test]
    fn atomic_is_all_or_nothing(changesets in history()) {
        let mut sc = fresh();
        for (ops, mix) in &changesets {
            let cs = &build(&sc, ops, *mix);
            let before = sc.clone();
            let snap = sc.snapshot();
            let mut plain = sc.clone();
            let p = plain.apply(cs, false);
            let a = sc.apply(cs, true);
            if p.replies.iter().any(Result::is_err) {
                prop_assert_eq!(sc.snapshot(), snap);
                prop_assert!(sc == before);
                prop_assert!(a.applied.is_empty());
                for (pa, at) in p.replies.iter().zip(&a.replies) {
                    match pa {
                        Err(e) => prop_assert_eq!(at.as_ref().err(), Some(e)),
                        Ok(()) => prop_assert_eq!(at.as_ref().err().and_then(|e| e.kind), Some(ATOMIC_REJECTED_KIND)),
                    }
                }
                check_invariants(&sc);
                // Keep the history moving.
                sc = plain;
            } else {
                prop_assert_eq!(&a, &p);
                prop_assert!(sc == plain);
            }
            check_invariants(&sc);
        }
    }

    /// (2) Replaying what was applied, alone, on the state before reproduces the state after,
    /// with every fragment accepted and the same fragments applied (the server's log replay).
    #[test]
    fn replaying_applied_reproduces_the_state(changesets in history()) {
        let mut sc = fresh();
        for (ops, mix) in &changesets {
            let cs = &build(&sc, ops, *mix);
            let before = sc.clone();
            let a = sc.apply(cs, false);
            prop_assert_eq!(a.replies.len(), cs.len());
            let mut again = before;
            let r = again.apply(&a.applied, false);
            prop_assert!(r.replies.iter().all(Result::is_ok), "replay replies {:?}", r.replies);
            prop_assert_eq!(&r.applied, &a.applied);
            prop_assert_eq!(again.snapshot(), sc.snapshot());
            prop_assert!(again == sc);
        }
    }

    /// (3) Every object of the snapshot is reachable from the root, listed once, and the
    /// snapshot lists every object of the scope.
    #[test]
    fn snapshots_list_each_reachable_object_once(changesets in history()) {
        let mut sc = fresh();
        for (ops, mix) in &changesets {
            let cs = &build(&sc, ops, *mix);
            sc.apply(cs, false);
            let snap = sc.snapshot();
            prop_assert_eq!(snap.len(), sc.len());
            prop_assert_eq!(snap[0].uuid, sc.root());
            prop_assert_eq!(snap[0].kind, FragmentKind::Change);
            let mut seen = HashSet::new();
            for f in &snap {
                prop_assert!(seen.insert(f.uuid), "listed twice: {}", f.uuid);
                prop_assert!(f.uuid == sc.root() || f.kind == FragmentKind::Add);
            }
            // Reachable: every non-root object is referred to by an object listed before it.
            let mut listed = HashSet::new();
            for f in &snap {
                if f.uuid != sc.root() {
                    prop_assert!(listed.contains(&f.uuid), "{} not reached before it is listed", f.uuid);
                }
                for (_, v) in &f.properties {
                    let refs: Vec<&Value> = match v {
                        Value::Array(items) => items.iter().collect(),
                        other => vec![other],
                    };
                    for r in refs.into_iter().filter_map(Value::as_str) {
                        if let Some(x) = tether_proto::jetstream::Uuid::parse(r) {
                            listed.insert(x);
                        }
                    }
                }
                listed.insert(f.uuid);
            }
            check_invariants(&sc);
        }
    }

    /// (4) `from_snapshot(snapshot())` is the same scope.
    #[test]
    fn snapshots_round_trip(changesets in history()) {
        let mut sc = fresh();
        for (ops, mix) in &changesets {
            let cs = &build(&sc, ops, *mix);
            sc.apply(cs, false);
            let again = ScopeState::from_snapshot(sc.schema().clone(), sc.root(), &sc.snapshot());
            prop_assert!(again.is_ok(), "{:?}", again.err());
            let again = again.unwrap();
            prop_assert_eq!(again.snapshot(), sc.snapshot());
            prop_assert!(again == sc);
        }
    }
}

/// The generator is worth its time: most fragments apply, scopes grow beyond the root, and
/// objects get removed and shared.
#[test]
fn generator_builds_non_trivial_scopes() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut sizes, mut ok, mut total, mut removals, mut shared) = (0usize, 0usize, 0usize, 0usize, 0usize);
    let runs = 300;
    for _ in 0..runs {
        let h = history().new_tree(&mut runner).unwrap().current();
        let mut sc = fresh();
        for (ops, mix) in &h {
            let cs = &build(&sc, ops, *mix);
            let before = sc.len();
            let a = sc.apply(cs, false);
            ok += a.replies.iter().filter(|r| r.is_ok()).count();
            total += a.replies.len();
            let adds = a.applied.iter().filter(|f| f.kind == FragmentKind::Add).count();
            removals += usize::from(sc.len() < before + adds);
            shared += usize::from(sc.objects.values().any(|o| o.parents.len() > 1));
        }
        sizes += sc.len();
    }
    assert!(ok * 2 > total, "{ok} of {total} fragments applied");
    assert!(sizes > 2 * runs, "average final size {}", sizes / runs);
    assert!(removals > runs / 2, "{removals} changesets removed objects");
    assert!(shared > runs / 2, "{shared} states with shared objects");
}
