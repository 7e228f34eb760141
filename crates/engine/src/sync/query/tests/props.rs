//! Properties of `plan_update` over arbitrary JSON queries and updates: it never panics, and
//! what it plans is a changeset `apply` accepts structurally (every change is of an object of
//! the scope, every add is new, attached and of a model the scope can hold), so that the only
//! reasons left for `apply` to refuse it are the values' types.

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde_json::{Map, Value, json};
use tether_proto::jetstream::FragmentKind;

use super::{chat_room, counter};
use crate::sync::tests::{check_invariants, us};
use crate::sync::{ScopeState, plan_update};

/// Keys that mean something to the planner, or almost do.
const KEYS: &[&str] = &[
    "$set",
    "$push",
    "$addToSet",
    "$pull",
    "$each",
    "$position",
    "$uuid",
    "$cls",
    "$in",
    "$slice",
    "name",
    "attributes",
    "attributes.topic",
    "attributes.status",
    "users",
    "users[0]",
    "users.0",
    "users[-1]",
    "users.0.username",
    "users[0].color",
    "messages",
    "messages[0]",
    "messages[-1]",
    "messages.0.text",
    "messages[-1].author",
    "messages[0].author.username",
    "messages[1]",
    "author",
    "text",
    "username",
    "postedAt",
    "lastActive",
    "topic",
    "status",
    "color",
    "users.x",
    "name.x",
    "",
    "a..b",
    "messages[x]",
    "name[0]",
];

/// Strings that mean something: UUIDs of the room's objects (and of none), models, names.
fn strings() -> Vec<String> {
    let mut v: Vec<String> = (0..5).map(us).collect();
    v.push(us(3).to_uppercase());
    v.push(us(40));
    v.extend(
        [
            "User",
            "Message",
            "ChatRoom",
            "ChatRoomAttributes",
            "Nope",
            "chatmonster1",
            "Rarr",
            "2015-03-04T05:06:07Z",
            "x",
            "",
        ]
        .map(str::to_owned),
    );
    v
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::sample::select(KEYS).prop_map(str::to_owned),
        1 => "[a-z$.\\[\\]0-9-]{0,10}",
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..5).prop_map(|i| json!(i)),
        any::<i64>().prop_map(|i| json!(i)),
        (-1e12f64..1e12).prop_map(|f| json!(f)),
        prop::sample::select(strings()).prop_map(Value::String),
        ".{0,8}".prop_map(Value::String),
    ]
}

/// Any JSON, at most 5 levels deep, keys mostly from [`KEYS`].
fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(5, 48, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Updates shaped like updates: operators of key paths of any operand.
fn update() -> impl Strategy<Value = Value> {
    let op = prop_oneof![
        6 => prop::sample::select(&["$set", "$push", "$addToSet", "$pull"][..]).prop_map(str::to_owned),
        1 => key(),
    ];
    let operands = prop::collection::btree_map(key(), json_value(), 0..4)
        .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>()));
    prop_oneof![
        4 => prop::collection::btree_map(op, operands, 1..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        1 => json_value(),
    ]
}

/// One well-formed (operator, key path, operand) of the room: most are planned, and many
/// change something.
fn good_entry() -> impl Strategy<Value = (&'static str, &'static str, Value)> {
    // Mostly valid values, so that many plans apply.
    let uuid = || prop_oneof![6 => (0u32..5).prop_map(|i| json!(us(i))), 1 => prop::sample::select(strings()).prop_map(Value::String)];
    let text = || prop_oneof![6 => "[a-z]{0,6}".prop_map(Value::String), 1 => leaf()];
    let user = || {
        prop_oneof![
            uuid(),
            (text(), prop::option::of(uuid())).prop_map(|(name, id)| match id {
                Some(id) => json!({"$uuid": id, "username": name}),
                None => json!({"username": name}),
            }),
        ]
    };
    let message = || (text(), user()).prop_map(|(text, author)| json!({"text": text, "author": author}));
    prop_oneof![
        text().prop_map(|v| ("$set", "name", v)),
        text().prop_map(|v| ("$set", "attributes.topic", v)),
        text().prop_map(|v| ("$set", "messages[-1].text", v)),
        text().prop_map(|v| ("$set", "users.0.username", v)),
        user().prop_map(|v| ("$set", "messages[0].author", v)),
        // `$uuid: null` too, which is refused.
        (text(), prop::option::of(uuid())).prop_map(|(t, id)| (
            "$set",
            "attributes",
            json!({"$uuid": id, "topic": t})
        )),
        (text(), uuid()).prop_map(|(t, id)| ("$set", "attributes", json!({"$uuid": id, "topic": t}))),
        prop::collection::vec(message(), 0..3).prop_map(|v| ("$set", "messages", Value::Array(v))),
        message().prop_map(|v| ("$push", "messages", v)),
        (prop::collection::vec(message(), 0..3), -3i64..4).prop_map(|(v, p)| (
            "$push",
            "messages",
            json!({"$each": v, "$position": p})
        )),
        user().prop_map(|v| ("$addToSet", "users", v)),
        prop::collection::vec(user(), 0..3).prop_map(|v| ("$addToSet", "users", json!({"$each": v}))),
        uuid().prop_map(|v| ("$pull", "users", v)),
        text().prop_map(|v| ("$pull", "users", json!({"username": v}))),
        text().prop_map(|v| ("$pull", "messages", json!({"author": {"username": v}}))),
        uuid().prop_map(|v| ("$pull", "messages", json!({"$each": [v, {"text": "Rarr"}]}))),
    ]
}

/// Updates of 1 to 4 well-formed entries (some of which conflict).
fn good_update() -> impl Strategy<Value = Value> {
    prop::collection::vec(good_entry(), 1..5).prop_map(|entries| {
        let mut ops = Map::new();
        for (op, path, v) in entries {
            if let Value::Object(m) = ops.entry(op).or_insert_with(|| json!({})) {
                m.insert(path.to_owned(), v);
            }
        }
        Value::Object(ops)
    })
}

fn query() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => Just(Value::Null),
        2 => Just(json!({})),
        3 => prop::sample::select(strings()).prop_map(|s| json!({"$uuid": s})),
        2 => (prop::sample::select(strings()), json_value()).prop_map(|(c, v)| json!({"$cls": c, "username": v})),
        1 => json_value(),
    ]
}

/// True if `apply`'s reply to a planned fragment says the plan itself was wrong: a change
/// of an object not in the scope, an add of one that is, or of a model the scope cannot
/// hold, or an add nothing attaches. "No parents" is also what an add gets when the change
/// that attaches it fails on a value, so it counts only when no change failed.
fn structural(message: &str, a_change_failed: bool) -> bool {
    message == "ModelObject not found"
        || message.ends_with("already exists")
        || message.starts_with("No such class type")
        || (message == "No parents, parent sync fragment failed" && !a_change_failed)
}

fn check(sc: &ScopeState, query: &Value, update: &Value) {
    let Ok(fragments) = plan_update(sc, query, update, &mut counter()) else { return };
    let mut after = sc.clone();
    let a = after.apply(&fragments, true);
    let a_change_failed = fragments.iter().zip(&a.replies).any(|(f, r)| {
        f.kind == FragmentKind::Change
            && r.as_ref().is_err_and(|e| e.kind != Some(crate::sync::error::ATOMIC_REJECTED_KIND))
    });
    for r in &a.replies {
        if let Err(e) = r {
            assert!(!structural(&e.message, a_change_failed), "{e} for {fragments:?}");
        }
    }
    if a.replies.iter().all(Result::is_ok) {
        assert_eq!(a.applied.len(), fragments.len());
    } else {
        assert!(after == *sc, "atomic");
    }
    check_invariants(&after);
}

proptest! {
    // Failing cases are kept next to this file (`props.proptest-regressions`).
    #![proptest_config(ProptestConfig {
        cases: 1024,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    /// Arbitrary JSON as query and update: no panic; whatever is planned applies, or fails
    /// only on values.
    #[test]
    fn never_panics_on_arbitrary_json(query in json_value(), update in json_value()) {
        check(&chat_room(), &query, &update);
    }

    /// Updates shaped like updates, so that most reach deep into the planner.
    #[test]
    fn plans_apply_structurally(query in query(), update in update()) {
        check(&chat_room(), &query, &update);
    }

    /// Well-formed updates of the root.
    #[test]
    fn well_formed_updates_apply_structurally(update in good_update()) {
        check(&chat_room(), &Value::Null, &update);
    }
}

/// The generators do reach the planner: a good share of their updates are planned.
#[test]
fn generated_updates_are_often_planned() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let sc = chat_room();
    let mut runner = TestRunner::deterministic();
    let mut count = |strategy: BoxedStrategy<Value>| {
        let (mut planned, mut applied) = (0, 0);
        for _ in 0..1000 {
            let u = strategy.new_tree(&mut runner).expect("value").current();
            if let Ok(f) = plan_update(&sc, &Value::Null, &u, &mut counter()) {
                planned += 1;
                let mut after = sc.clone();
                let a = after.apply(&f, true);
                applied += usize::from(!f.is_empty() && a.replies.iter().all(Result::is_ok));
            }
        }
        (planned, applied)
    };
    let (planned, _) = count(update().boxed());
    assert!(planned > 50, "shaped updates: {planned} planned");
    let (planned, applied) = count(good_update().boxed());
    assert!(planned > 400 && applied > 200, "well-formed updates: {planned} planned, {applied} applied");
}
