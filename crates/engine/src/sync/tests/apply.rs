//! Applying changesets: the reference's traces and scope tests, commit and sweep, atomic.

use serde_json::json;
use tether_proto::jetstream::{FragmentKind, SyncFragment, Uuid};

use super::{
    CHAT_TOML, NODE_TOML, SHAPES_TOML, add, change, check_invariants, messages, schema, scope, u, us,
};
use crate::sync::ScopeState;

/// Replays `applied` on `before` and checks it reproduces `after` with every fragment
/// accepted and the same fragments applied (the server's log replay).
fn assert_replays(before: &ScopeState, applied: &[SyncFragment], after: &ScopeState) {
    let mut again = before.clone();
    let a = again.apply(applied, false);
    assert!(a.replies.iter().all(Result::is_ok), "replay replies: {:?}", a.replies);
    assert_eq!(a.applied, applied, "replay applies the same fragments");
    assert_eq!(again.snapshot(), after.snapshot());
    assert!(again == *after);
}

/// A fresh `Node` scope with `kids` of the root set to `kids` (added as new Nodes).
fn nodes(kids: &[u32]) -> ScopeState {
    let s = schema(NODE_TOML);
    let mut sc = scope(&s, "Node", &[]);
    let mut fragments =
        vec![change(u(0), "Node", &[("kids", json!(kids.iter().map(|&k| us(k)).collect::<Vec<_>>()))])];
    fragments.extend(kids.iter().map(|&k| add(u(k), "Node", &[])));
    let a = sc.apply(&fragments, false);
    assert!(a.replies.iter().all(Result::is_ok), "{:?}", a.replies);
    sc
}

fn has(sc: &ScopeState, n: u32) -> bool {
    sc.object(&u(n)).is_some()
}

#[test]
fn golden_trace_shapes() {
    // seed-systems.md §1.4, first trace.
    let s = schema(SHAPES_TOML);
    let mut sc = scope(&s, "Canvas", &[("name", json!("Shapes Demo"))]);
    let snap = sc.snapshot();
    assert_eq!(
        snap,
        [SyncFragment {
            kind: FragmentKind::Change,
            uuid: u(0),
            cls_name: "Canvas".to_owned(),
            properties: vec![("name".to_owned(), json!("Shapes Demo")), ("shapes".to_owned(), json!([]))],
        }]
    );
    let a1 = Uuid::parse("AAAAAAAA-0000-4000-8000-000000000001").unwrap();
    let a2 = Uuid::parse("aaaaaaaa-0000-4000-8000-000000000002").unwrap();
    let b9 = Uuid::parse("bbbbbbbb-0000-4000-8000-000000000009").unwrap();
    let before = sc.clone();
    let fragments = [
        change(u(0), "Canvas", &[("shapes", json!(["aaaaaaaa-0000-4000-8000-000000000001"]))]),
        add(
            a1,
            "Shape",
            &[
                ("x", json!(10)),
                ("y", json!(20)),
                ("width", json!(100)),
                ("height", json!(100)),
                ("color", json!(255)),
            ],
        ),
        add(a2, "Shape", &[("x", json!("bad"))]),
        change(b9, "Shape", &[("x", json!(1))]),
    ];
    let a = sc.apply(&fragments, false);
    assert_eq!(
        messages(&a),
        [
            None,
            None,
            Some("Not valid type at 'x', should be Number".to_owned()),
            Some("ModelObject not found".to_owned())
        ]
    );
    assert_eq!(a.applied, fragments[..2]);
    assert_eq!(sc.len(), 2);
    assert_eq!(sc.snapshot()[1].properties[0], ("x".to_owned(), json!(10)));
    check_invariants(&sc);
    assert_replays(&before, &a.applied, &sc);
}

#[test]
fn golden_trace_chat() {
    // seed-systems.md §1.4, second trace.
    let s = schema(CHAT_TOML);
    let mut sc = scope(&s, "ChatRoom", &[("name", json!("Chat Demo"))]);
    let user = u(0x1111);
    let a = sc.apply(
        &[
            change(u(0), "ChatRoom", &[("users", json!([us(0x1111)]))]),
            add(
                user,
                "User",
                &[("username", json!("alice")), ("color", json!(16_711_680)), ("lastActive", json!(1.5e9))],
            ),
        ],
        false,
    );
    assert_eq!(messages(&a), [None, None]);
    assert_eq!(a.applied.len(), 2);
    // Enumeration value 5 not in [0,1], plus a reference to that failed object.
    let attrs = u(0x2222);
    let a = sc.apply(
        &[
            add(attrs, "ChatRoomAttributes", &[("status", json!(5)), ("topic", json!("t"))]),
            change(u(0), "ChatRoom", &[("attributes", json!(us(0x2222)))]),
        ],
        false,
    );
    assert_eq!(
        messages(&a),
        [
            Some("Not valid type at 'status', should be one of [0,1]".to_owned()),
            Some(format!("No such ModelObject '{}' at 'attributes'", us(0x2222))),
        ]
    );
    // The reference still broadcasts an (empty) ScopeSync; the dialect decides.
    assert!(a.applied.is_empty());
    assert_eq!(sc.len(), 2);
    // A message by the user, with a Date as the JavaScript client sends it (ISO 8601).
    let a = sc.apply(
        &[
            add(
                u(0x3333),
                "Message",
                &[
                    ("author", json!(us(0x1111))),
                    ("postedAt", json!("2015-03-04T05:06:07.089Z")),
                    ("text", json!("hi")),
                ],
            ),
            change(u(0), "ChatRoom", &[("messages", json!([us(0x3333)]))]),
        ],
        false,
    );
    assert_eq!(messages(&a), [None, None]);
    assert_eq!(a.applied[0].properties[1], ("postedAt".to_owned(), json!(1_425_445_567.089)));
    check_invariants(&sc);
}

#[test]
fn removes_objects_that_lose_their_parent() {
    // test/scope.js: "should remove any model objects that have no parents".
    let mut sc = nodes(&[1, 2]);
    let a = sc.apply(&[change(u(0), "Node", &[("kids", json!([us(1)]))])], false);
    assert_eq!(messages(&a), [None]);
    assert!(has(&sc, 1) && !has(&sc, 2));
    assert_eq!(sc.len(), 2);
    check_invariants(&sc);
    // "should clear the orphaned model objects after they are removed".
    let mut sc = nodes(&[1, 2]);
    sc.apply(&[change(u(0), "Node", &[("kids", json!([us(2)]))])], false);
    assert!(!has(&sc, 1) && has(&sc, 2));
    check_invariants(&sc);
}

#[test]
fn removes_newly_orphaned_objects_recursively() {
    // test/scope.js: "should clear the newly orphaned model objects after orphans are removed":
    // root -> child -> {g1, g2}, g1 -> g2; detaching child leaves the root alone.
    let mut sc = nodes(&[1]);
    let a = sc.apply(
        &[
            change(u(1), "Node", &[("kids", json!([us(2), us(3)]))]),
            add(u(2), "Node", &[("kids", json!([us(3)]))]),
            add(u(3), "Node", &[]),
        ],
        false,
    );
    assert_eq!(messages(&a), [None, None, None]);
    assert_eq!(sc.len(), 4);
    check_invariants(&sc);
    sc.apply(&[change(u(0), "Node", &[("kids", json!([]))])], false);
    assert_eq!(sc.len(), 1);
    check_invariants(&sc);
}

#[test]
fn removes_cycles_cut_off_from_the_root() {
    let mut sc = nodes(&[1]);
    // 1 -> 2 -> 3 -> 1, and 3 -> 3.
    let a = sc.apply(
        &[
            change(u(1), "Node", &[("one", json!(us(2)))]),
            add(u(2), "Node", &[("one", json!(us(3)))]),
            add(u(3), "Node", &[("one", json!(us(1))), ("kids", json!([us(3), us(3)]))]),
        ],
        false,
    );
    assert_eq!(messages(&a), [None, None, None]);
    assert_eq!(sc.len(), 4);
    check_invariants(&sc);
    let before = sc.clone();
    let a = sc.apply(&[change(u(0), "Node", &[("kids", json!([]))])], false);
    assert_eq!(messages(&a), [None]);
    assert_eq!(sc.len(), 1);
    check_invariants(&sc);
    assert_replays(&before, &a.applied, &sc);
}

#[test]
fn keeps_cycles_that_still_hang_from_the_root() {
    let mut sc = nodes(&[1, 4]);
    // 1 <-> 2, and 4 -> 2.
    sc.apply(
        &[
            change(u(1), "Node", &[("one", json!(us(2)))]),
            add(u(2), "Node", &[("one", json!(us(1)))]),
            change(u(4), "Node", &[("one", json!(us(2)))]),
        ],
        false,
    );
    assert_eq!(sc.len(), 4);
    sc.apply(&[change(u(0), "Node", &[("kids", json!([us(4)]))])], false);
    // 1 and 2 still reachable through 4.
    assert_eq!(sc.len(), 4);
    check_invariants(&sc);
    sc.apply(&[change(u(4), "Node", &[("one", json!(null))])], false);
    assert_eq!(sc.len(), 2);
    check_invariants(&sc);
}

#[test]
fn cycles_through_the_root_are_fine() {
    let mut sc = nodes(&[1]);
    sc.apply(&[change(u(1), "Node", &[("one", json!(us(0))), ("kids", json!([us(0), us(1)]))])], false);
    assert_eq!(sc.len(), 2);
    check_invariants(&sc);
    sc.apply(&[change(u(0), "Node", &[("kids", json!([]))])], false);
    assert_eq!(sc.len(), 1);
    check_invariants(&sc);
}

#[test]
fn moving_an_object_between_parents_keeps_it() {
    let mut sc = nodes(&[1, 2]);
    sc.apply(&[change(u(1), "Node", &[("kids", json!([us(3)]))]), add(u(3), "Node", &[])], false);
    assert_eq!(sc.len(), 4);
    // Detach first, attach second: in between it has no parent.
    let a = sc.apply(
        &[change(u(1), "Node", &[("kids", json!([]))]), change(u(2), "Node", &[("kids", json!([us(3)]))])],
        false,
    );
    assert_eq!(messages(&a), [None, None]);
    assert!(has(&sc, 3));
    check_invariants(&sc);
}

#[test]
fn an_object_with_two_parents_goes_with_the_last() {
    let mut sc = nodes(&[1, 2]);
    sc.apply(
        &[
            change(u(1), "Node", &[("one", json!(us(3)))]),
            change(u(2), "Node", &[("kids", json!([us(3), us(3)]))]),
            add(u(3), "Node", &[]),
        ],
        false,
    );
    sc.apply(&[change(u(1), "Node", &[("one", json!(null))])], false);
    assert!(has(&sc, 3));
    sc.apply(&[change(u(2), "Node", &[("kids", json!([us(3)]))])], false);
    assert!(has(&sc, 3));
    check_invariants(&sc);
    sc.apply(&[change(u(2), "Node", &[("kids", json!([]))])], false);
    assert!(!has(&sc, 3));
    check_invariants(&sc);
}

#[test]
fn adds_without_a_parent_fail() {
    let mut sc = nodes(&[1]);
    // Not referred to at all; referred to by a failed change; referred to only by an add
    // that is itself unattached; a cycle of adds with nothing above.
    let a = sc.apply(
        &[
            add(u(10), "Node", &[]),
            add(u(11), "Node", &[]),
            change(u(1), "Node", &[("one", json!(us(11))), ("n", json!("bad"))]),
            add(u(12), "Node", &[("one", json!(us(13)))]),
            add(u(13), "Node", &[]),
            add(u(14), "Node", &[("one", json!(us(15)))]),
            add(u(15), "Node", &[("kids", json!([us(14)]))]),
            add(u(16), "Node", &[("one", json!(us(16)))]),
        ],
        false,
    );
    let np = Some("No parents, parent sync fragment failed".to_owned());
    assert_eq!(
        messages(&a),
        [
            np.clone(),
            np.clone(),
            Some("Not valid type at 'n', should be Number".to_owned()),
            np.clone(),
            np.clone(),
            np.clone(),
            np.clone(),
            np
        ]
    );
    assert!(a.applied.is_empty());
    assert_eq!(sc.len(), 2);
    check_invariants(&sc);
}

#[test]
fn adds_attached_through_other_adds_commit() {
    let mut sc = nodes(&[1]);
    let before = sc.clone();
    let a = sc.apply(
        &[
            add(u(12), "Node", &[("kids", json!([us(13), us(14)]))]),
            add(u(13), "Node", &[("one", json!(us(14)))]),
            add(u(14), "Node", &[("one", json!(us(12)))]),
            change(u(1), "Node", &[("one", json!(us(12)))]),
        ],
        false,
    );
    assert_eq!(messages(&a), [None, None, None, None]);
    assert_eq!(sc.len(), 5);
    check_invariants(&sc);
    assert_replays(&before, &a.applied, &sc);
}

#[test]
fn an_add_referring_to_a_failed_add_fails_in_either_order() {
    for reversed in [false, true] {
        let mut sc = nodes(&[1]);
        let mut fragments = vec![
            add(u(20), "Node", &[("s", json!("ok")), ("one", json!(us(21)))]),
            add(u(21), "Node", &[("n", json!("bad"))]),
            change(u(1), "Node", &[("one", json!(us(20)))]),
        ];
        if reversed {
            fragments.swap(0, 1);
        }
        let a = sc.apply(&fragments, false);
        let mut expected = vec![
            Some(format!("No such ModelObject '{}' at 'one'", us(21))),
            Some("Not valid type at 'n', should be Number".to_owned()),
            Some(format!("No such ModelObject '{}' at 'one'", us(20))),
        ];
        if reversed {
            expected.swap(0, 1);
        }
        assert_eq!(messages(&a), expected);
        assert_eq!(sc.len(), 2);
        check_invariants(&sc);
    }
    // Through a chain, listed against its order.
    let mut sc = nodes(&[1]);
    let a = sc.apply(
        &[
            change(u(1), "Node", &[("kids", json!([us(30)]))]),
            add(u(30), "Node", &[("kids", json!([us(31), us(32)]))]),
            add(u(31), "Node", &[("one", json!(us(32)))]),
            add(u(32), "Node", &[("e", json!(7))]),
        ],
        false,
    );
    assert_eq!(
        messages(&a),
        [
            Some(format!("No such ModelObjects '[\"{}\"]' at 'kids'", us(30))),
            Some(format!("No such ModelObjects '[\"{}\",\"{}\"]' at 'kids'", us(31), us(32))),
            Some(format!("No such ModelObject '{}' at 'one'", us(32))),
            Some("Not valid type at 'e', should be one of [0,1]".to_owned()),
        ]
    );
    check_invariants(&sc);
}

#[test]
fn changes_cannot_target_objects_added_by_the_same_changeset() {
    let mut sc = nodes(&[1]);
    let a = sc.apply(
        &[
            change(u(1), "Node", &[("one", json!(us(2)))]),
            add(u(2), "Node", &[]),
            change(u(2), "Node", &[("n", json!(1))]),
        ],
        false,
    );
    assert_eq!(messages(&a), [None, None, Some("ModelObject not found".to_owned())]);
    check_invariants(&sc);
}

#[test]
fn one_uuid_added_twice() {
    let mut sc = nodes(&[1]);
    let a = sc.apply(
        &[
            add(u(2), "Node", &[("n", json!(1))]),
            add(u(2), "Node", &[("n", json!(2))]),
            change(u(1), "Node", &[("one", json!(us(2)))]),
        ],
        false,
    );
    assert_eq!(messages(&a), [None, Some(format!("ModelObject with UUID '{}' already exists", us(2))), None]);
    assert_eq!(sc.object(&u(2)).unwrap().1[0], ("n", json!(1)));
}

#[test]
fn an_add_attached_then_detached_in_one_changeset_is_applied_then_swept() {
    let mut sc = nodes(&[1]);
    let before = sc.clone();
    let a = sc.apply(
        &[
            change(u(1), "Node", &[("one", json!(us(2))), ("s", json!("kept"))]),
            add(u(2), "Node", &[]),
            change(u(1), "Node", &[("one", json!(null))]),
        ],
        false,
    );
    assert_eq!(messages(&a), [None, None, None]);
    assert_eq!(a.applied.len(), 3);
    assert!(!has(&sc, 2));
    assert_eq!(sc.object(&u(1)).unwrap().1[1], ("s", json!("kept")));
    check_invariants(&sc);
    assert_replays(&before, &a.applied, &sc);
}

#[test]
fn an_add_attached_to_an_object_removed_in_the_same_changeset() {
    let mut sc = nodes(&[1]);
    let before = sc.clone();
    let a = sc.apply(
        &[
            change(u(0), "Node", &[("kids", json!([]))]),
            change(u(1), "Node", &[("one", json!(us(2)))]),
            add(u(2), "Node", &[]),
        ],
        false,
    );
    assert_eq!(messages(&a), [None, None, None]);
    assert_eq!(sc.len(), 1);
    check_invariants(&sc);
    assert_replays(&before, &a.applied, &sc);
}

#[test]
fn a_change_without_properties_applies() {
    // The reference crashes on a fragment without `properties` (Object.keys(null)); with
    // `{}` it replies success and broadcasts it.
    let mut sc = nodes(&[1]);
    let a = sc.apply(&[change(u(1), "Node", &[])], false);
    assert_eq!(messages(&a), [None]);
    assert_eq!(a.applied, [change(u(1), "Node", &[])]);
}

#[test]
fn a_change_with_the_wrong_cls_name_is_applied_as_the_object_model() {
    let mut sc = nodes(&[1]);
    let a = sc.apply(&[change(u(1), "Whatever", &[("n", json!(3))])], false);
    assert_eq!(messages(&a), [None]);
    assert_eq!(a.applied, [change(u(1), "Node", &[("n", json!(3))])]);
}

#[test]
fn applied_fragments_are_normalised() {
    let mut sc = nodes(&[1]);
    let upper = Uuid::parse(&us(2).to_uppercase()).unwrap();
    let a = sc.apply(
        &[
            change(
                u(1),
                "Node",
                &[("kids", json!([us(2).to_uppercase()])), ("d", json!("1970-01-02")), ("n", json!(4.0))],
            ),
            add(upper, "Leaf", &[("e", json!(1.0)), ("one", json!(us(1).to_uppercase()))]),
        ],
        false,
    );
    assert_eq!(messages(&a), [None, None]);
    assert_eq!(
        a.applied,
        [
            change(u(1), "Node", &[("kids", json!([us(2)])), ("d", json!(86_400)), ("n", json!(4))]),
            add(u(2), "Leaf", &[("e", json!(1)), ("one", json!(us(1)))]),
        ]
    );
}

#[test]
fn empty_changeset() {
    let mut sc = nodes(&[1]);
    for atomic in [false, true] {
        let a = sc.apply(&[], atomic);
        assert!(a.replies.is_empty() && a.applied.is_empty());
    }
}

#[test]
fn atomic_rejects_everything_when_one_fragment_fails() {
    let mut sc = nodes(&[1, 2]);
    sc.apply(
        &[change(u(1), "Node", &[("kids", json!([us(3)]))]), add(u(3), "Node", &[("one", json!(us(3)))])],
        false,
    );
    let before = sc.clone();
    let snap = sc.snapshot();
    let fragments = [
        change(u(0), "Node", &[("kids", json!([us(2), us(4)])), ("s", json!("x"))]),
        add(u(4), "Node", &[("kids", json!([us(5)]))]),
        add(u(5), "Leaf", &[("n", json!(5))]),
        change(u(2), "Node", &[("n", json!("bad"))]),
        add(u(6), "Node", &[]),
    ];
    let a = sc.apply(&fragments, true);
    let rejected = Some("Atomic changeset rejected: another fragment failed".to_owned());
    assert_eq!(
        messages(&a),
        [
            rejected.clone(),
            rejected.clone(),
            rejected,
            Some("Not valid type at 'n', should be Number".to_owned()),
            Some("No parents, parent sync fragment failed".to_owned()),
        ]
    );
    assert_eq!(a.replies[0].as_ref().unwrap_err().kind, Some("atomic-changeset-rejected"));
    assert_eq!(a.replies[3].as_ref().unwrap_err().kind, None);
    assert!(a.applied.is_empty());
    assert_eq!(sc.snapshot(), snap);
    assert!(sc == before);
    check_invariants(&sc);
    // Without the bad fragments, it applies as a non-atomic changeset would.
    let good = &fragments[..3];
    let mut other = before;
    let b = other.apply(good, false);
    let a = sc.apply(good, true);
    assert_eq!(a, b);
    assert!(sc == other);
    // Root, 2, 4 and 5; 1 and 3 went with the root's old `kids`.
    assert_eq!(sc.len(), 4);
    check_invariants(&sc);
}

#[test]
fn atomic_rollback_restores_swept_objects() {
    let mut sc = nodes(&[1, 2]);
    sc.apply(
        &[
            change(u(1), "Node", &[("kids", json!([us(3), us(4)])), ("one", json!(us(1)))]),
            add(u(3), "Node", &[("one", json!(us(4)))]),
            add(u(4), "Node", &[("one", json!(us(3)))]),
        ],
        false,
    );
    let before = sc.clone();
    let a = sc.apply(&[change(u(0), "Node", &[("kids", json!([]))]), change(u(9), "Node", &[])], true);
    assert_eq!(messages(&a)[1].as_deref(), Some("ModelObject not found"));
    assert!(sc == before);
    check_invariants(&sc);
    // The same, failing after the sweep would have run: nothing to undo there, since the
    // sweep only runs once nothing failed.
    let a = sc.apply(&[change(u(0), "Node", &[("kids", json!([]))])], true);
    assert_eq!(messages(&a), [None]);
    assert_eq!(sc.len(), 1);
    check_invariants(&sc);
}

#[test]
fn new_scope_checks_its_initial_values() {
    let s = schema(NODE_TOML);
    let e = ScopeState::new(s.clone(), "Nope", u(0), &[]).unwrap_err();
    assert_eq!(e.message, "No such class type 'Nope'");
    let e = ScopeState::new(s.clone(), "Node", u(0), &super::props(&[("n", json!("x"))])).unwrap_err();
    assert_eq!(e.message, "Not valid type at 'n', should be Number");
    let e = ScopeState::new(s.clone(), "Node", u(0), &super::props(&[("one", json!(us(1)))])).unwrap_err();
    assert_eq!(e.message, format!("No such ModelObject '{}' at 'one'", us(1)));
    let sc =
        ScopeState::new(s.clone(), "Leaf", u(0), &super::props(&[("one", json!(us(0))), ("s", json!("a"))]))
            .unwrap();
    assert_eq!(sc.root_cls(), "Leaf");
    assert_eq!(sc.root(), u(0));
    assert_eq!(sc.len(), 1);
    assert!(!sc.is_empty());
    assert!(std::sync::Arc::ptr_eq(sc.schema(), &s));
    check_invariants(&sc);
    // Defaults filled in.
    let (_, values) = sc.object(&u(0)).unwrap();
    assert!(values.contains(&("weight", json!(1))));
    assert!(values.contains(&("kids", json!([]))));
    assert!(values.contains(&("one", json!(us(0)))));
}

#[test]
fn long_chains_do_not_recurse() {
    let s = schema(NODE_TOML);
    let mut sc = scope(&s, "Node", &[]);
    let n = 50_000u32;
    let mut fragments = vec![change(u(0), "Node", &[("one", json!(us(1)))])];
    fragments.extend((1..n).map(|i| add(u(i), "Node", &[("one", json!(us(i + 1)))])));
    fragments.push(add(u(n), "Node", &[("one", json!(us(1)))]));
    let a = sc.apply(&fragments, true);
    assert!(a.replies.iter().all(Result::is_ok));
    assert_eq!(sc.len(), usize::try_from(n).unwrap() + 1);
    assert_eq!(sc.snapshot().len(), sc.len());
    let tree = sc.to_json_tree();
    assert!(tree.is_object());
    // Cut the chain (a cycle back to u(1)) from the root.
    let a = sc.apply(&[change(u(0), "Node", &[("one", json!(null))])], false);
    assert_eq!(messages(&a), [None]);
    assert_eq!(sc.len(), 1);
}

#[test]
fn wide_fan_out_and_large_collections() {
    let s = schema(NODE_TOML);
    let mut sc = scope(&s, "Node", &[]);
    let n = 20_000u32;
    let ids: Vec<String> = (1..=n).map(us).collect();
    let mut fragments = vec![change(u(0), "Node", &[("kids", json!(ids))])];
    // Every kid also refers to the first one: u(1) has n parents.
    fragments.extend((1..=n).map(|i| add(u(i), "Node", &[("one", json!(us(1)))])));
    let a = sc.apply(&fragments, false);
    assert!(a.replies.iter().all(Result::is_ok));
    check_invariants(&sc);
    // Append one: cheap diff; drop half.
    let mut more = ids.clone();
    more.push(us(n + 1));
    let a = sc.apply(&[change(u(0), "Node", &[("kids", json!(more))]), add(u(n + 1), "Node", &[])], false);
    assert_eq!(messages(&a), [None, None]);
    let half: Vec<String> = ids[..10_000].to_vec();
    sc.apply(&[change(u(0), "Node", &[("kids", json!(half))])], false);
    assert_eq!(sc.len(), 10_001);
    check_invariants(&sc);
}

#[test]
fn an_object_detached_then_referred_to_by_itself_goes() {
    // Found by the property tests: the object loses its last parent, then gains one from
    // itself later in the same changeset.
    let mut sc = nodes(&[1, 2]);
    let a = sc.apply(
        &[
            change(u(0), "Node", &[("kids", json!([us(2)]))]),
            change(u(1), "Node", &[("kids", json!([us(1)]))]),
        ],
        false,
    );
    assert_eq!(messages(&a), [None, None]);
    assert!(!has(&sc, 1));
    check_invariants(&sc);
    // The same through another detached object.
    let mut sc = nodes(&[1, 2]);
    let a = sc.apply(
        &[change(u(0), "Node", &[("kids", json!([]))]), change(u(2), "Node", &[("one", json!(us(1)))])],
        false,
    );
    assert_eq!(messages(&a), [None, None]);
    assert_eq!(sc.len(), 1);
    check_invariants(&sc);
}

#[test]
fn the_sweep_falls_back_to_a_full_pass() {
    use crate::sync::graph::Tx;
    use crate::sync::value::Slot;
    for budget in [0, 1, 2, 3, 1000] {
        let mut sc = nodes(&[1, 5]);
        // 1 -> 2 -> 3 -> 1, 5 -> 3.
        let a = sc.apply(
            &[
                change(u(1), "Node", &[("one", json!(us(2)))]),
                add(u(2), "Node", &[("one", json!(us(3)))]),
                add(u(3), "Node", &[("one", json!(us(1)))]),
                change(u(5), "Node", &[("one", json!(us(3)))]),
            ],
            false,
        );
        assert_eq!(messages(&a), [None, None, None, None]);
        let kids = sc.schema().model(sc.root_cls).prop_index("kids").unwrap();
        let mut tx = Tx::new(false);
        sc.set_slot(u(0), kids, Slot::Refs(vec![u(5)]), Some(&mut tx));
        sc.sweep_within(&mut tx, budget);
        // 3 hangs from 5; 1 and 2 from 3.
        assert_eq!(sc.len(), 5, "budget {budget}");
        check_invariants(&sc);
        let mut tx = Tx::new(false);
        sc.set_slot(u(0), kids, Slot::Refs(vec![]), Some(&mut tx));
        sc.sweep_within(&mut tx, budget);
        assert_eq!(sc.len(), 1, "budget {budget}");
        check_invariants(&sc);
    }
}
