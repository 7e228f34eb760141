//! Every way an update is refused, with its code and message.

use serde_json::{Value, json};
use tether_proto::jetstream::Uuid;

use super::{chat_room, plan_err};
use crate::sync::tests::{CHAT_TOML, EXAMPLE_TOML, add, change, schema, scope, u, us};
use crate::sync::{At, ScopeState, UpdateError, plan_update};

/// The code and message of the error planning `update` on the root of the chat room.
fn refused(update: Value) -> (&'static str, String) {
    let e = plan_err(&chat_room(), json!({}), update);
    (e.code(), e.to_string())
}

fn refused_query(query: Value) -> (&'static str, String) {
    let e = plan_err(&chat_room(), query, json!({"$set": {"name": "x"}}));
    (e.code(), e.to_string())
}

fn s(code: &'static str, message: &str) -> (&'static str, String) {
    (code, message.to_owned())
}

#[test]
fn invalid_queries() {
    assert_eq!(
        refused_query(json!(5)),
        s("invalid-query", "invalid query: the query must be null or an object")
    );
    assert_eq!(
        refused_query(json!([])),
        s("invalid-query", "invalid query: the query must be null or an object")
    );
    assert_eq!(
        refused_query(json!({"$uuid": 5})),
        s("invalid-query", "invalid query: $uuid must be a UUID string")
    );
    assert_eq!(
        refused_query(json!({"$uuid": "x"})),
        s("invalid-query", "invalid query: $uuid 'x' is not a UUID")
    );
    assert_eq!(
        refused_query(json!({"$cls": true})),
        s("invalid-query", "invalid query: $cls must be a model name")
    );
    assert_eq!(
        refused_query(json!({"text": "Rarr"})),
        s(
            "invalid-query",
            "invalid query: a query is null, {}, or has $uuid or $cls (property values alone do not say which \
             model they are of)"
        )
    );
    assert_eq!(
        refused_query(json!({"$cls": "Room"})),
        s("unknown-model", "query '$cls': no model 'Room' ($cls)")
    );
    assert_eq!(
        refused_query(json!({"$cls": "User", "nick": "x"})),
        s("unknown-property", "query 'nick': model 'User' has no property 'nick'")
    );
    assert_eq!(
        refused_query(json!({"$cls": "User", "$gt": 1})),
        s(
            "invalid-value",
            "query '$gt': '$gt' is not supported in a filter (a filter has $uuid, $cls and property values; no \
             query operators)"
        )
    );
    assert_eq!(
        refused_query(json!({"$cls": "User", "username": 5})),
        s(
            "invalid-value",
            "query 'username': 5 can never match: Not valid type at 'username', should be String"
        )
    );
}

#[test]
fn queries_that_select_no_single_object() {
    assert_eq!(
        refused_query(json!({"$uuid": us(99)})),
        s("not-found", &format!("no object with $uuid '{}' in the scope", us(99)))
    );
    assert_eq!(
        refused_query(json!({"$uuid": us(3), "$cls": "User"})),
        s(
            "class-mismatch",
            &format!("object '{}' is a 'Message', which is not 'User' or a model extending it", us(3))
        )
    );
    assert_eq!(
        refused_query(json!({"$cls": "User", "username": "nobody"})),
        s("no-match", "no object matches the query")
    );
    assert_eq!(
        refused_query(json!({"$uuid": us(3), "text": "other"})),
        s("no-match", "no object matches the query")
    );
    let mut sc = chat_room();
    let a = sc.apply(
        &[change(u(0), "ChatRoom", &[("users", json!([us(2), us(4)]))]), add(u(4), "User", &[])],
        true,
    );
    assert!(a.replies.iter().all(Result::is_ok));
    let e = plan_err(&sc, json!({"$cls": "User"}), json!({"$set": {"color": 1}}));
    assert_eq!(e, UpdateError::AmbiguousQuery { count: 2 });
    assert_eq!(
        e.to_string(),
        "the query matches 2 objects; it must match exactly one (add $uuid or more conditions)"
    );
}

#[test]
fn invalid_updates_and_operators() {
    assert_eq!(
        refused(json!(null)),
        s(
            "invalid-update",
            "invalid update: the update must be an object of operators ($set, $push, $addToSet, $pull)"
        )
    );
    assert_eq!(refused(json!({})), s("invalid-update", "invalid update: the update has no operator"));
    assert_eq!(
        refused(json!({"$set": ["name"]})),
        s("invalid-update", "invalid update: the operand of $set must be an object of key paths to values")
    );
    for op in ["$inc", "name", "$unset", "$SET"] {
        assert_eq!(
            refused(json!({"$set": {"name": "x"}, op: {}})),
            (
                "unknown-operator",
                format!("unknown operator '{op}': the operators are $set, $push, $addToSet and $pull")
            )
        );
    }
}

#[test]
fn invalid_key_paths() {
    for (path, reason) in [
        ("", "it is empty"),
        ("a..b", "a segment is empty ('a..b', '.a' or 'a.')"),
        ("name.", "a segment is empty ('a..b', '.a' or 'a.')"),
        ("messages[x]", "'messages[x]' is not 'property' or 'property[index]', with an integer index"),
        ("messages[0", "'messages[0' is not 'property' or 'property[index]', with an integer index"),
        ("[0]", "'[0]' is not 'property' or 'property[index]', with an integer index"),
        ("messages[0][0]", "'messages[0][0]' is not 'property' or 'property[index]', with an integer index"),
        ("name[0]", "'name' is not a collection, so it takes no index"),
        ("attributes[0].topic", "'attributes' is not a collection, so it takes no index"),
        ("$uuid", "an object's $uuid cannot be changed"),
        ("messages[0].$cls", "an object's $cls cannot be changed"),
    ] {
        assert_eq!(
            refused(json!({"$set": {path: "x"}})),
            ("invalid-key-path", format!("$set '{path}': invalid key path: {reason}")),
        );
    }
}

#[test]
fn key_paths_that_lead_nowhere() {
    assert_eq!(
        refused(json!({"$set": {"nmae": "x"}})),
        s("unknown-property", "$set 'nmae': model 'ChatRoom' has no property 'nmae'")
    );
    assert_eq!(
        refused(json!({"$set": {"attributes.topik": "x"}})),
        s("unknown-property", "$set 'attributes.topik': model 'ChatRoomAttributes' has no property 'topik'")
    );
    assert_eq!(
        refused(json!({"$set": {"name.first": "x"}})),
        s(
            "not-a-reference",
            "$set 'name.first': 'name' is not a reference to an object, so the key path cannot continue past it"
        )
    );
    assert_eq!(
        refused(json!({"$set": {"messages.text": "x"}})),
        s(
            "missing-index",
            "$set 'messages.text': 'messages' is a collection: name one of its elements with an index \
             ('messages[0]', 'messages.0', 'messages[-1]')"
        )
    );
    assert_eq!(
        refused(json!({"$set": {"messages[1].text": "x"}})),
        s(
            "index-out-of-range",
            "$set 'messages[1].text': index 1 is out of range: 'messages' has 1 elements"
        )
    );
    assert_eq!(
        refused(json!({"$set": {"messages[-2]": us(3)}})),
        s("index-out-of-range", "$set 'messages[-2]': index -2 is out of range: 'messages' has 1 elements")
    );
    assert_eq!(
        refused(json!({"$set": {"users.99999999999999999999999.username": "x"}})),
        s(
            "index-out-of-range",
            &format!(
                "$set 'users.99999999999999999999999.username': index {} is out of range: 'users' has 1 elements",
                i64::MAX
            )
        )
    );
    assert_eq!(
        refused(json!({"$set": {"messages[0].author.username.x": "x"}})),
        s(
            "not-a-reference",
            "$set 'messages[0].author.username.x': 'username' is not a reference to an object, so the key path \
             cannot continue past it"
        )
    );
    let s_ = schema(CHAT_TOML);
    let bare = scope(&s_, "ChatRoom", &[]);
    let e = plan_err(&bare, json!(null), json!({"$set": {"attributes.topic": "x"}}));
    assert_eq!(e.code(), "no-object");
    assert_eq!(
        e.to_string(),
        "$set 'attributes.topic': 'attributes' is null, so the key path cannot continue past it"
    );
}

#[test]
fn collection_operators_on_what_is_not_a_collection() {
    for op in ["$push", "$addToSet", "$pull"] {
        assert_eq!(
            refused(json!({op: {"name": "x"}})),
            (
                "not-a-collection",
                format!("{op} 'name': 'name' is not a collection ({op} applies to collections)")
            )
        );
        assert_eq!(
            refused(json!({op: {"attributes": {}}})),
            (
                "not-a-collection",
                format!("{op} 'attributes': 'attributes' is not a collection ({op} applies to collections)")
            )
        );
        assert_eq!(
            refused(json!({op: {"messages[0]": us(3)}})),
            (
                "element-not-allowed",
                format!("{op} 'messages[0]': {op} applies to a whole collection, not to one element")
            )
        );
        assert_eq!(
            refused(json!({op: {"messages.-1": us(3)}})),
            (
                "element-not-allowed",
                format!("{op} 'messages.-1': {op} applies to a whole collection, not to one element")
            )
        );
    }
}

#[test]
fn invalid_modifiers() {
    assert_eq!(
        refused(json!({"$push": {"users": {"$each": us(2)}}})),
        s("invalid-value", "$push 'users': $each must be an array")
    );
    assert_eq!(
        refused(json!({"$pull": {"users": {"$each": {}}}})),
        s("invalid-value", "$pull 'users': $each must be an array")
    );
    assert_eq!(
        refused(json!({"$push": {"users": {"$position": 0}}})),
        s("invalid-value", "$push 'users': $position needs $each")
    );
    assert_eq!(
        refused(json!({"$push": {"users": {"$each": [], "$position": "0"}}})),
        s("invalid-value", "$push 'users': $position must be an integer")
    );
    assert_eq!(
        refused(json!({"$push": {"users": {"$each": [], "$position": 0.5}}})),
        s("invalid-value", "$push 'users': $position must be an integer")
    );
    assert_eq!(
        refused(json!({"$push": {"users": {"$each": [], "$slice": 3}}})),
        s("invalid-value", "$push 'users': '$slice' cannot go with $each (only $position can)")
    );
    assert_eq!(
        refused(json!({"$addToSet": {"users": {"$each": [], "$position": 0}}})),
        s(
            "invalid-value",
            "$addToSet 'users': '$position' cannot go with $each (nothing can, with $addToSet)"
        )
    );
    assert_eq!(
        refused(json!({"$pull": {"users": {"$each": [], "username": "x"}}})),
        s("invalid-value", "$pull 'users': 'username' cannot go with $each (nothing can, with $pull)")
    );
}

#[test]
fn invalid_inline_objects() {
    assert_eq!(
        refused(json!({"$set": {"attributes": {"$uuid": "nope"}}})),
        s("invalid-value", "$set 'attributes': $uuid 'nope' is not a UUID")
    );
    assert_eq!(
        refused(json!({"$set": {"attributes": {"$uuid": 7}}})),
        s("invalid-value", "$set 'attributes': $uuid must be a UUID string")
    );
    assert_eq!(
        refused(json!({"$set": {"attributes": {"$cls": 7}}})),
        s("invalid-value", "$set 'attributes': $cls must be a model name")
    );
    assert_eq!(
        refused(json!({"$set": {"attributes": {"$cls": "Attrs"}}})),
        s("unknown-model", "$set 'attributes': no model 'Attrs' ($cls)")
    );
    assert_eq!(
        refused(json!({"$set": {"attributes": {"$cls": "User"}}})),
        s(
            "invalid-value",
            "$set 'attributes': $cls 'User' is not 'ChatRoomAttributes' or a model extending it"
        )
    );
    assert_eq!(
        refused(json!({"$set": {"attributes": {"$ref": us(1)}}})),
        s(
            "invalid-value",
            "$set 'attributes': unknown key '$ref' in an inline object (its special keys are $uuid and $cls)"
        )
    );
    assert_eq!(
        refused(json!({"$set": {"attributes": {"$uuid": us(1), "$cls": "User"}}})),
        s(
            "invalid-value",
            &format!(
                "$set 'attributes': object '{}' is a 'ChatRoomAttributes', which is not 'User' or a model extending it ($cls)",
                us(1)
            )
        )
    );
    assert_eq!(
        refused(json!({"$set": {"attributes": {"topic": "x", "mood": "happy"}}})),
        s("unknown-property", "$set 'attributes.mood': model 'ChatRoomAttributes' has no property 'mood'")
    );
    assert_eq!(
        refused(json!({"$set": {"attributes": {"$uuid": us(1), "mood": "happy"}}})),
        s("unknown-property", "$set 'attributes.mood': model 'ChatRoomAttributes' has no property 'mood'")
    );
    assert_eq!(
        refused(json!({"$set": {"messages": [{"text": "a"}, {"author": {"nick": "x"}}]}})),
        s("unknown-property", "$set 'messages[1].author.nick': model 'User' has no property 'nick'")
    );
    assert_eq!(
        refused(
            json!({"$push": {"messages": {"$each": [{"text": "a"}, {"$uuid": us(50)}, {"$uuid": us(50)}]}}})
        ),
        s(
            "invalid-value",
            &format!("$push 'messages.$each[2]': $uuid '{}' is given to two new objects", us(50))
        )
    );
    // Nesting beyond the limit.
    let node = schema(crate::sync::tests::NODE_TOML);
    let sc = scope(&node, "Node", &[]);
    let mut v = json!({});
    for _ in 0..40 {
        v = json!({ "one": v });
    }
    let e = plan_err(&sc, json!(null), json!({"$set": {"one": v}}));
    assert_eq!(e.code(), "invalid-value");
    assert!(e.to_string().ends_with("inline objects nest more than 32 deep"), "{e}");
}

#[test]
fn invalid_pull_matches() {
    assert_eq!(
        refused(json!({"$pull": {"users": 5}})),
        s(
            "invalid-value",
            "$pull 'users': 5 cannot match a reference: give a UUID string or a filter object ({\"$uuid\": …}, \
             {\"property\": value})"
        )
    );
    assert_eq!(
        refused(json!({"$pull": {"users": "bob"}})),
        s("invalid-value", "$pull 'users': 'bob' is not a UUID")
    );
    assert_eq!(
        refused(json!({"$pull": {"users": {"$each": [us(2), "bob"]}}})),
        s("invalid-value", "$pull 'users.$each[1]': 'bob' is not a UUID")
    );
    assert_eq!(
        refused(json!({"$pull": {"users": {"nick": "x"}}})),
        s("unknown-property", "$pull 'users.nick': model 'User' has no property 'nick'")
    );
    assert_eq!(
        refused(json!({"$pull": {"users": {"$in": [us(2)]}}})),
        s(
            "invalid-value",
            "$pull 'users.$in': '$in' is not supported in a filter (a filter has $uuid, $cls and property values; \
             no query operators)"
        )
    );
    assert_eq!(
        refused(json!({"$pull": {"users": {"color": "red"}}})),
        s(
            "invalid-value",
            "$pull 'users.color': \"red\" can never match: Not valid type at 'color', should be Number"
        )
    );
    assert_eq!(
        refused(json!({"$pull": {"messages": {"author": 5}}})),
        s(
            "invalid-value",
            "$pull 'messages.author': a reference matches a UUID string, null or a filter object"
        )
    );
    assert_eq!(
        refused(json!({"$pull": {"messages": {"author": {"$cls": "Nobody"}}}})),
        s("unknown-model", "$pull 'messages.author.$cls': no model 'Nobody' ($cls)")
    );
    assert_eq!(
        refused(json!({"$pull": {"messages": {"$uuid": "x"}}})),
        s("invalid-value", "$pull 'messages.$uuid': 'x' is not a UUID")
    );
    let canvas = scope(&schema(EXAMPLE_TOML), "Canvas", &[]);
    let e = plan_err(&canvas, json!(null), json!({"$pull": {"shapes": {"tags": "a"}}}));
    assert_eq!(
        e.to_string(),
        "$pull 'shapes.tags': \"a\" can never match: Collection type without array value at 'tags'"
    );
    let e = plan_err(&canvas, json!(null), json!({"$pull": {"shapes": {"radius": "big"}}}));
    assert_eq!(
        e.to_string(),
        "$pull 'shapes.radius': \"big\" can never match: Not valid type at 'radius', should be Number"
    );
}

#[test]
fn invalid_pulls_from_collections_of_values() {
    let canvas = {
        let s_ = schema(EXAMPLE_TOML);
        let mut sc = scope(&s_, "Canvas", &[]);
        let a =
            sc.apply(&[change(u(0), "Canvas", &[("shapes", json!([us(1)]))]), add(u(1), "Shape", &[])], true);
        assert!(a.replies.iter().all(Result::is_ok));
        sc
    };
    let e = plan_err(&canvas, json!(null), json!({"$pull": {"shapes[0].tags": {"$each": ["a", {"x": 1}]}}}));
    assert_eq!(
        e.to_string(),
        "$pull 'shapes[0].tags.$each[1]': a collection of values is pulled from by value (a string, number, \
         boolean or null), not by an object or array"
    );
    let e = plan_err(&canvas, json!(null), json!({"$pull": {"shapes[0].palette": "purple"}}));
    assert_eq!(
        e.to_string(),
        "$pull 'shapes[0].palette': \"purple\" can never match: Not valid type at 'palette', should be one of \
         [\"red\",\"green\",\"blue\"]"
    );
}

#[test]
fn conflicting_key_paths() {
    let conflict = |first: (&'static str, &str), second: (&'static str, &str)| UpdateError::Conflict {
        first: At { op: first.0, path: first.1.to_owned() },
        second: At { op: second.0, path: second.1.to_owned() },
    };
    let sc = chat_room();
    let e =
        plan_err(&sc, json!({}), json!({"$set": {"attributes": {"topic": "a"}, "attributes.topic": "b"}}));
    assert_eq!(e, conflict(("$set", "attributes"), ("$set", "attributes.topic")));
    assert_eq!(e.code(), "conflict");
    assert_eq!(
        e.to_string(),
        "$set 'attributes' and $set 'attributes.topic' conflict: both touch the same property, so the result \
         would depend on which applies first"
    );
    // Whichever operator comes first in the JSON.
    let e = plan_err(
        &sc,
        json!({}),
        json!({"$push": {"messages": {"text": "x"}}, "$set": {"messages[-1].text": "y"}}),
    );
    assert_eq!(e, conflict(("$set", "messages[-1].text"), ("$push", "messages")));
    // One property reached along two paths.
    let e = plan_err(
        &sc,
        json!({}),
        json!({"$set": {"users[0].username": "a", "messages[0].author.username": "b"}}),
    );
    assert_eq!(e, conflict(("$set", "messages[0].author.username"), ("$set", "users[0].username")));
    // One element named two ways.
    let e = plan_err(&sc, json!({}), json!({"$set": {"users[0]": us(2), "users.-1": us(2)}}));
    assert_eq!(e, conflict(("$set", "users.-1"), ("$set", "users[0]")));
    // An element and the whole collection.
    let e = plan_err(&sc, json!({}), json!({"$set": {"users[0]": us(2)}, "$pull": {"users": us(2)}}));
    assert_eq!(e, conflict(("$set", "users[0]"), ("$pull", "users")));
    // Two collection operators on one collection.
    let e = plan_err(&sc, json!({}), json!({"$push": {"users": us(2)}, "$addToSet": {"users": us(2)}}));
    assert_eq!(e, conflict(("$push", "users"), ("$addToSet", "users")));
    // An inline object setting a property a key path also sets.
    let e = plan_err(
        &sc,
        json!({}),
        json!({"$set": {"attributes": {"$uuid": us(1), "topic": "a"}, "attributes.topic": "b"}}),
    );
    assert_eq!(e, conflict(("$set", "attributes"), ("$set", "attributes.topic")));
    let e = plan_err(
        &sc,
        json!({}),
        json!({"$set": {"users[0].username": "a"}, "$push": {"messages": {"author": {"$uuid": us(2), "username": "b"}}}}),
    );
    assert_eq!(e, conflict(("$set", "users[0].username"), ("$push", "messages.author.username")));
    let e = plan_err(
        &sc,
        json!({}),
        json!({"$push": {"messages": {"$each": [{"$uuid": us(3), "text": "a"}, {"$uuid": us(3), "text": "b"}]}}}),
    );
    assert_eq!(e, conflict(("$push", "messages.$each[0].text"), ("$push", "messages.$each[1].text")));
}

#[test]
fn generated_uuids_that_are_taken() {
    let sc = chat_room();
    let mut taken = || u(3);
    let e = plan_update(&sc, &json!({}), &json!({"$push": {"messages": {"text": "x"}}}), &mut taken)
        .expect_err("collision");
    assert_eq!(e.code(), "uuid-collision");
    assert_eq!(
        e.to_string(),
        format!("$push 'messages': the new object's generated UUID '{}' is already in use", us(3))
    );
    let mut same = || u(77);
    let e = plan_update(&sc, &json!({}), &json!({"$push": {"messages": {"$each": [{}, {}]}}}), &mut same)
        .expect_err("collision");
    assert_eq!(
        e,
        UpdateError::UuidCollision {
            at: At { op: "$push", path: "messages.$each[1]".to_owned() },
            uuid: Uuid::to_string(&u(77)),
        }
    );
}

#[test]
fn nothing_changes_when_refused() {
    let sc = chat_room();
    let before: ScopeState = sc.clone();
    let _ = plan_err(&sc, json!({}), json!({"$set": {"name": "x", "nope": 1}}));
    assert!(sc == before);
}
