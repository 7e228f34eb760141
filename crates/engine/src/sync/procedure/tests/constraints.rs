//! `check_constraints`: the reference's matching rules, and the remove constraint fixed.

use serde_json::json;
use tether_proto::jetstream::SyncFragment;

use super::{POST_MESSAGE, USER_LOGOUT, chat_room, chat_schema, procedure, procedure_in};
use crate::sync::ScopeState;
use crate::sync::procedure::{Procedure, ProcedureError};
use crate::sync::tests::{add, change, scope, u, us};

fn ok(p: &Procedure, sc: &ScopeState, fragments: &[SyncFragment]) -> bool {
    match p.check_constraints(sc, fragments) {
        Ok(()) => true,
        Err(ProcedureError::ConstraintsNotMatched) => false,
        Err(e) => panic!("unexpected error {e:?}"),
    }
}

/// A procedure with only these constraints (TOML inline tables).
fn with(constraints: &str) -> Procedure {
    procedure(&format!("name = \"ChatRoom.p\"\nconstraints = [{constraints}]\n"))
}

fn message(n: u32) -> SyncFragment {
    add(u(n), "Message", &[("author", json!(us(2))), ("postedAt", json!(1)), ("text", json!("hi"))])
}

#[test]
fn every_fragment_must_match_some_constraint() {
    let sc = chat_room();
    let p = procedure(POST_MESSAGE);
    let grow = change(u(0), "ChatRoom", &[("messages", json!([us(3), us(10)]))]);
    assert!(ok(&p, &sc, &[grow.clone(), message(10)]));
    // Order does not matter, and a constraint may match several fragments.
    assert!(ok(&p, &sc, &[message(10), grow.clone(), message(11)]));
    // An empty changeset matches, as in the reference.
    assert!(ok(&p, &sc, &[]));
    // One fragment that matches nothing fails the lot.
    let rename = change(u(0), "ChatRoom", &[("name", json!("x"))]);
    assert!(!ok(&p, &sc, &[grow.clone(), message(10), rename]));
    // Type and clsName must be the constraint's.
    let as_change =
        change(u(10), "Message", &[("author", json!(us(2))), ("postedAt", json!(1)), ("text", json!("hi"))]);
    assert!(!ok(&p, &sc, &[grow.clone(), as_change]));
    let other_cls =
        add(u(10), "User", &[("author", json!(us(2))), ("postedAt", json!(1)), ("text", json!("hi"))]);
    assert!(!ok(&p, &sc, &[grow, other_cls]));
}

#[test]
fn properties_must_be_exactly_the_constraint_s_unless_additional_are_allowed() {
    let sc = chat_room();
    let p = procedure(POST_MESSAGE);
    // A missing property.
    let missing = add(u(10), "Message", &[("author", json!(us(2))), ("text", json!("hi"))]);
    assert!(!ok(&p, &sc, &[missing]));
    // An additional one.
    let extra = add(
        u(10),
        "Message",
        &[("author", json!(us(2))), ("postedAt", json!(1)), ("text", json!("hi")), ("x", json!(1))],
    );
    assert!(!ok(&p, &sc, std::slice::from_ref(&extra)));
    // The same count, one swapped.
    let swapped =
        add(u(10), "Message", &[("author", json!(us(2))), ("postedAt", json!(1)), ("x", json!("hi"))]);
    assert!(!ok(&p, &sc, &[swapped]));
    // Allowed additional properties.
    let lax = with(
        r#"{ type = "add", clsName = "Message", properties = { text = "$hasNewValue" }, allowAdditionalProperties = true }"#,
    );
    assert!(ok(&lax, &sc, &[extra]));
    assert!(!ok(&lax, &sc, &[add(u(10), "Message", &[("author", json!(us(2)))])]));
}

#[test]
fn has_new_value_accepts_any_value_even_null() {
    let sc = chat_room();
    let p = with(r#"{ type = "change", clsName = "ChatRoom", properties = { name = "$hasNewValue" } }"#);
    for v in [json!("x"), json!(null), json!(""), json!("TestChatRoom")] {
        assert!(ok(&p, &sc, &[change(u(0), "ChatRoom", &[("name", v.clone())])]), "{v}");
    }
}

#[test]
fn a_constraint_without_properties_matches_fragments_without_properties() {
    let sc = chat_room();
    let strict = with(r#"{ type = "change", clsName = "ChatRoom" }"#);
    assert!(ok(&strict, &sc, &[change(u(0), "ChatRoom", &[])]));
    assert!(!ok(&strict, &sc, &[change(u(0), "ChatRoom", &[("name", json!("x"))])]));
    let lax = with(r#"{ type = "change", clsName = "ChatRoom", allowAdditionalProperties = true }"#);
    assert!(ok(&lax, &sc, &[change(u(0), "ChatRoom", &[("name", json!("x"))])]));
}

#[test]
fn insert_and_remove_are_distinguished() {
    // Regression: the reference tested `value.length > original.length` for both, so a
    // remove constraint accepted insertions and refused removals.
    let mut sc = chat_room();
    let a = sc.apply(
        &[change(u(0), "ChatRoom", &[("users", json!([us(2), us(4)]))]), add(u(4), "User", &[])],
        false,
    );
    assert!(a.replies.iter().all(Result::is_ok));
    let remove = procedure(USER_LOGOUT);
    let insert = with(
        r#"{ type = "change", clsName = "ChatRoom", properties = { users = { "$array" = "insert" } } }"#,
    );
    let users = |v: serde_json::Value| [change(u(0), "ChatRoom", &[("users", v)])];

    let shorter = users(json!([us(4)]));
    let longer = users(json!([us(2), us(4), us(5)]));
    let same_length = users(json!([us(4), us(2)]));
    let emptied = users(json!([]));

    assert!(ok(&remove, &sc, &shorter));
    assert!(ok(&remove, &sc, &emptied));
    assert!(!ok(&remove, &sc, &longer), "an insertion is not a removal");
    assert!(!ok(&remove, &sc, &same_length));

    assert!(ok(&insert, &sc, &longer));
    assert!(!ok(&insert, &sc, &shorter), "a removal is not an insertion");
    assert!(!ok(&insert, &sc, &same_length));

    // Not an array: no match.
    assert!(!ok(&remove, &sc, &users(json!(null))));
    assert!(!ok(&insert, &sc, &users(json!(us(4)))));
}

#[test]
fn array_constraints_on_changes_need_the_current_object() {
    let sc = chat_room();
    let insert = with(
        r#"{ type = "change", clsName = "ChatRoom", properties = { users = { "$array" = "insert" } } }"#,
    );
    // No such object: no current value to compare with.
    assert!(!ok(&insert, &sc, &[change(u(99), "ChatRoom", &[("users", json!([us(2), us(5)]))])]));
    // An object of another model (a change's clsName is not checked): it has no `users`.
    assert!(!ok(&insert, &sc, &[change(u(3), "ChatRoom", &[("users", json!([us(2), us(5)]))])]));
}

#[test]
fn insert_on_an_add_accepts_any_array() {
    let s = chat_schema();
    let sc = chat_room();
    let p = procedure_in(
        &s,
        r#"
name = "ChatRoom.p"
constraints = [{ type = "add", clsName = "ChatRoom", properties = { users = { "$array" = "insert" } } }]
"#,
    );
    assert!(ok(&p, &sc, &[add(u(9), "ChatRoom", &[("users", json!([]))])]));
    assert!(ok(&p, &sc, &[add(u(9), "ChatRoom", &[("users", json!([us(2)]))])]));
    assert!(!ok(&p, &sc, &[add(u(9), "ChatRoom", &[("users", json!(us(2)))])]));
}

#[test]
fn literals_compare_as_javascript_strict_equality() {
    let sc = chat_room();
    let p = with(
        r#"{ type = "change", clsName = "ChatRoomAttributes", properties = { status = 1, topic = "$$closed", tintColor = 1.0, locale = true } }"#,
    );
    let attrs = |status, topic, tint, locale| {
        [change(
            u(1),
            "ChatRoomAttributes",
            &[
                ("status", json!(status)),
                ("topic", json!(topic)),
                ("tintColor", tint),
                ("locale", json!(locale)),
            ],
        )]
    };
    // `$$` is a literal `$`; 1.0 and 1 are the same number.
    assert!(ok(&p, &sc, &attrs(1, "$closed", json!(1), true)));
    assert!(ok(&p, &sc, &attrs(1, "$closed", json!(1.0), true)));
    assert!(!ok(&p, &sc, &attrs(0, "$closed", json!(1), true)));
    assert!(!ok(&p, &sc, &attrs(1, "$$closed", json!(1), true)));
    assert!(!ok(&p, &sc, &attrs(1, "$closed", json!("1"), true)));
    assert!(!ok(&p, &sc, &attrs(1, "$closed", json!(1), false)));
}

#[test]
fn reference_literals_compare_in_lower_case() {
    let sc = chat_room();
    let upper = us(2).to_uppercase();
    let p = with(&format!(
        r#"{{ type = "add", clsName = "Message", properties = {{ author = "{upper}" }}, allowAdditionalProperties = true }}"#
    ));
    assert!(ok(&p, &sc, &[add(u(10), "Message", &[("author", json!(us(2)))])]));
    assert!(ok(&p, &sc, &[add(u(10), "Message", &[("author", json!(upper))])]));
    assert!(!ok(&p, &sc, &[add(u(10), "Message", &[("author", json!(us(3)))])]));
}

#[test]
fn the_constraint_s_model_must_be_one_the_scope_can_hold() {
    // A scope whose root is a User cannot hold Messages (`getSubtypeWithTypeName` fails).
    // (The reference checks this only for constraints with properties, as here.)
    let s = chat_schema();
    let users = scope(&s, "User", &[]);
    let p = with(
        r#"{ type = "add", clsName = "Message", properties = { text = "$hasNewValue" }, allowAdditionalProperties = true }"#,
    );
    assert!(!ok(&p, &users, &[message(10)]));
    assert!(ok(&p, &chat_room(), &[message(10)]));
}
