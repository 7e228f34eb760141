//! Read views: snapshot order and form, `from_snapshot`, `object`, `to_json_tree`.

use serde_json::json;
use tether_proto::jetstream::FragmentKind;

use super::{NODE_TOML, add, change, check_invariants, messages, schema, scope, u, us};
use crate::sync::ScopeState;

/// root.kids = [1, 2]; 1.kids = [3]; 2.one = 3; 3.one = root.
fn diamond() -> ScopeState {
    let s = schema(NODE_TOML);
    let mut sc = scope(&s, "Node", &[("s", json!("root"))]);
    let a = sc.apply(
        &[
            change(u(0), "Node", &[("kids", json!([us(1), us(2)]))]),
            add(u(1), "Node", &[("kids", json!([us(3)]))]),
            add(u(2), "Leaf", &[("one", json!(us(3))), ("d", json!(1.5))]),
            add(u(3), "Node", &[("one", json!(us(0)))]),
        ],
        false,
    );
    assert!(a.replies.iter().all(Result::is_ok));
    sc
}

#[test]
fn snapshot_is_depth_first_with_every_value() {
    let sc = diamond();
    let snap = sc.snapshot();
    let order: Vec<_> = snap.iter().map(|f| (f.kind, f.uuid)).collect();
    assert_eq!(
        order,
        [
            (FragmentKind::Change, u(0)),
            (FragmentKind::Add, u(1)),
            (FragmentKind::Add, u(3)),
            (FragmentKind::Add, u(2))
        ]
    );
    let keys = |i: usize| snap[i].properties.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>();
    // Every value and collection property; an unset single reference left out.
    assert_eq!(keys(0), ["n", "s", "b", "d", "e", "c", "nums", "kids"]);
    assert_eq!(keys(2), ["n", "s", "b", "d", "e", "c", "nums", "one", "kids"]);
    assert_eq!(keys(3), ["n", "s", "b", "d", "e", "c", "nums", "one", "kids", "weight"]);
    assert_eq!(snap[3].cls_name, "Leaf");
    assert_eq!(
        snap[3].properties,
        super::props(&[
            ("n", json!(null)),
            ("s", json!(null)),
            ("b", json!(null)),
            ("d", json!(1.5)),
            ("e", json!(null)),
            ("c", json!([])),
            ("nums", json!([])),
            ("one", json!(us(3))),
            ("kids", json!([])),
            ("weight", json!(1)),
        ])
    );
}

#[test]
fn from_snapshot_round_trips() {
    let sc = diamond();
    let again = ScopeState::from_snapshot(sc.schema().clone(), sc.root(), &sc.snapshot()).unwrap();
    assert!(again == sc);
    assert_eq!(again.snapshot(), sc.snapshot());
    assert_eq!(again.root_cls(), "Node");
    check_invariants(&again);
    // In any order, with the root as an add.
    let mut snap = sc.snapshot();
    snap.reverse();
    snap.iter_mut().for_each(|f| f.kind = FragmentKind::Add);
    let again = ScopeState::from_snapshot(sc.schema().clone(), sc.root(), &snap).unwrap();
    assert!(again == sc);
    check_invariants(&again);
}

#[test]
fn from_snapshot_drops_unreachable_objects() {
    let sc = diamond();
    let mut snap = sc.snapshot();
    snap.push(add(u(9), "Node", &[("one", json!(us(1)))]));
    let again = ScopeState::from_snapshot(sc.schema().clone(), sc.root(), &snap).unwrap();
    assert!(again == sc);
    check_invariants(&again);
}

#[test]
fn from_snapshot_errors() {
    let sc = diamond();
    let schema = sc.schema().clone();
    let snap = sc.snapshot();
    let e = ScopeState::from_snapshot(schema.clone(), u(7), &snap).unwrap_err();
    assert_eq!(e.message, format!("Snapshot has no fragment for its root '{}'", us(7)));
    let mut bad = snap.clone();
    bad[0].cls_name = "Nope".to_owned();
    let e = ScopeState::from_snapshot(schema.clone(), u(0), &bad).unwrap_err();
    assert_eq!(e.message, "No such class type 'Nope'");
    let mut bad = snap.clone();
    bad[2].cls_name = "Other".to_owned();
    let e = ScopeState::from_snapshot(schema.clone(), u(0), &bad).unwrap_err();
    assert_eq!(e.message, format!("snapshot fragment 2 ('{}'): No such class type 'Other'", us(3)));
    let mut bad = snap.clone();
    bad.push(snap[1].clone());
    let e = ScopeState::from_snapshot(schema.clone(), u(0), &bad).unwrap_err();
    assert_eq!(
        e.message,
        format!("snapshot fragment 4 ('{}'): ModelObject with UUID '{}' already exists", us(1), us(1))
    );
    let mut bad = snap.clone();
    bad[1].properties.push(("kids".to_owned(), json!([us(8)])));
    let e = ScopeState::from_snapshot(schema.clone(), u(0), &bad).unwrap_err();
    assert_eq!(
        e.message,
        format!("snapshot fragment 1 ('{}'): No such ModelObjects '[\"{}\"]' at 'kids'", us(1), us(8))
    );
    let mut bad = snap;
    bad[3].properties[0].1 = json!("x");
    let e = ScopeState::from_snapshot(schema, u(0), &bad).unwrap_err();
    assert_eq!(
        e.message,
        format!("snapshot fragment 3 ('{}'): Not valid type at 'n', should be Number", us(2))
    );
}

#[test]
fn object_lists_every_property() {
    let sc = diamond();
    let (cls, values) = sc.object(&u(2)).unwrap();
    assert_eq!(cls, "Leaf");
    assert_eq!(values.len(), 10);
    assert_eq!(values[7], ("one", json!(us(3))));
    let (cls, values) = sc.object(&u(0)).unwrap();
    assert_eq!(cls, "Node");
    // An unset reference is null here.
    assert_eq!(values[7], ("one", json!(null)));
    assert_eq!(values[8], ("kids", json!([us(1), us(2)])));
    assert!(sc.object(&u(9)).is_none());
}

#[test]
fn json_tree_expands_references() {
    let sc = diamond();
    let tree = sc.to_json_tree();
    assert_eq!(tree["$uuid"], json!(us(0)));
    assert_eq!(tree["$cls"], json!("Node"));
    assert_eq!(tree["s"], json!("root"));
    assert_eq!(tree["one"], json!(null));
    let k1 = &tree["kids"][0];
    assert_eq!(k1["$uuid"], json!(us(1)));
    let three = &k1["kids"][0];
    assert_eq!(three["$uuid"], json!(us(3)));
    // The root is on the path: a cycle.
    assert_eq!(three["one"], json!({"$ref": us(0)}));
    // 3 is shared, not a cycle: expanded again under 2.
    let k2 = &tree["kids"][1];
    assert_eq!(k2["$cls"], json!("Leaf"));
    assert_eq!(k2["weight"], json!(1));
    assert_eq!(k2["one"]["$uuid"], json!(us(3)));
    assert_eq!(k2["one"]["one"], json!({"$ref": us(0)}));
}

#[test]
fn json_tree_of_shared_chains_stays_small() {
    // Each level refers twice to the next: 2^40 paths through 41 objects.
    let s = schema(NODE_TOML);
    let mut sc = scope(&s, "Node", &[]);
    let mut fragments = vec![change(u(0), "Node", &[("kids", json!([us(1), us(1)]))])];
    fragments.extend((1..=40).map(|i| add(u(i), "Node", &[("kids", json!([us(i + 1), us(i + 1)]))])));
    fragments.push(add(u(41), "Node", &[]));
    let a = sc.apply(&fragments, false);
    assert!(a.replies.iter().all(Result::is_ok), "{:?}", messages(&a));
    let tree = sc.to_json_tree();
    let text = serde_json::to_string(&tree).unwrap();
    let objects = text.matches("\"$uuid\"").count();
    // The budget bounds repeats; each object is expanded at least once.
    assert!(objects <= 4 * 42 + 64 + 42, "{objects} objects expanded");
    assert!(text.contains("\"$ref\""));
}
