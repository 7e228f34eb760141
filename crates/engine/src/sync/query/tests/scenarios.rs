//! Plans applied as the server does (`apply(&fragments, true)`), on the chat room of the
//! reference's tests and on the canvas of the module docs: what the scope holds afterwards,
//! the orphan sweep included.

use serde_json::json;
use tether_proto::jetstream::FragmentKind;

use super::{chat_room, get, has, new, news, plan, run};
use crate::sync::ScopeState;
use crate::sync::tests::{CHAT_TOML, EXAMPLE_TOML, add, change, check_invariants, schema, scope, u, us};

/// A canvas `u(0)` holding a Shape `u(10)` and a Circle `u(11)`.
fn canvas() -> ScopeState {
    let s = schema(EXAMPLE_TOML);
    let mut sc = scope(&s, "Canvas", &[("name", json!("Shapes"))]);
    let a = sc.apply(
        &[
            change(u(0), "Canvas", &[("shapes", json!([us(10), us(11)]))]),
            add(
                u(10),
                "Shape",
                &[("x", json!(1)), ("tags", json!(["a"])), ("palette", json!(["red", "green"]))],
            ),
            add(u(11), "Circle", &[("x", json!(2)), ("radius", json!(5))]),
        ],
        true,
    );
    assert!(a.replies.iter().all(Result::is_ok), "{:?}", a.replies);
    sc
}

// Chat room.

#[test]
fn replacing_a_reference_with_an_inline_object_sweeps_the_old_one() {
    let mut sc = chat_room();
    let f = run(&mut sc, json!({}), json!({"$set": {"attributes": {"topic": "New", "status": 1}}}));
    assert_eq!(
        f,
        [
            change(u(0), "ChatRoom", &[("attributes", json!(news(0)))]),
            add(new(0), "ChatRoomAttributes", &[("status", json!(1)), ("topic", json!("New"))]),
        ]
    );
    assert!(!has(&sc, u(1)), "the old attributes are swept");
    assert_eq!(get(&sc, new(0), "topic"), json!("New"));
    assert_eq!(get(&sc, new(0), "locale"), json!(null), "properties not given get their defaults");
}

#[test]
fn several_key_paths_of_several_objects_in_one_changeset() {
    let mut sc = chat_room();
    let f = run(
        &mut sc,
        json!(null),
        json!({"$set": {"name": "Lobby", "attributes.topic": "Rust", "users.0.username": "alice", "messages[-1].text": "edited"}}),
    );
    // One change per object.
    assert!(f.iter().all(|x| x.kind == FragmentKind::Change));
    let mut uuids: Vec<_> = f.iter().map(|x| x.uuid).collect();
    uuids.sort();
    assert_eq!(uuids, [u(0), u(1), u(2), u(3)]);
    assert_eq!(get(&sc, u(0), "name"), json!("Lobby"));
    assert_eq!(get(&sc, u(1), "topic"), json!("Rust"));
    assert_eq!(get(&sc, u(2), "username"), json!("alice"));
    assert_eq!(get(&sc, u(3), "text"), json!("edited"));
    assert_eq!(sc.len(), 4);
}

#[test]
fn an_inline_object_naming_an_existing_object_sets_its_properties() {
    let mut sc = chat_room();
    let f = run(
        &mut sc,
        json!({}),
        json!({"$set": {"attributes": {"$uuid": us(1).to_uppercase(), "topic": "Same object"}}}),
    );
    assert_eq!(
        f,
        [
            change(u(0), "ChatRoom", &[("attributes", json!(us(1)))]),
            change(u(1), "ChatRoomAttributes", &[("topic", json!("Same object"))]),
        ]
    );
    assert_eq!(get(&sc, u(1), "topic"), json!("Same object"));
    assert_eq!(get(&sc, u(1), "locale"), json!("en_US"));
}

#[test]
fn inline_objects_nest() {
    let mut sc = chat_room();
    // A message by a new user: the user is added too, and held only by the message.
    let f = run(
        &mut sc,
        json!({}),
        json!({"$push": {"messages": {"text": "hello", "author": {"username": "bob", "lastActive": "2020-01-01T00:00:00Z"}}}}),
    );
    assert_eq!(f.iter().filter(|x| x.kind == FragmentKind::Add).count(), 2);
    assert_eq!(get(&sc, u(0), "messages"), json!([us(3), news(0)]));
    assert_eq!(get(&sc, new(0), "author"), json!(news(1)));
    assert_eq!(get(&sc, new(1), "username"), json!("bob"));
    assert_eq!(
        get(&sc, new(1), "lastActive"),
        json!(1_577_836_800),
        "dates are normalised to seconds by apply"
    );
}

#[test]
fn push_each_with_position() {
    let mut sc = chat_room();
    run(
        &mut sc,
        json!({}),
        json!({"$push": {"messages": {"$each": [{"text": "first"}, {"text": "second"}], "$position": 0}}}),
    );
    assert_eq!(get(&sc, u(0), "messages"), json!([news(0), news(1), us(3)]));
    // Negative: before the last element.
    run(&mut sc, json!({}), json!({"$push": {"messages": {"$each": [us(3)], "$position": -1}}}));
    assert_eq!(get(&sc, u(0), "messages"), json!([news(0), news(1), us(3), us(3)]));
    // Beyond either end: clamped.
    run(&mut sc, json!({}), json!({"$push": {"users": {"$each": [us(2)], "$position": 99}}}));
    assert_eq!(get(&sc, u(0), "users"), json!([us(2), us(2)]));
    run(&mut sc, json!({}), json!({"$push": {"users": {"$each": [], "$position": -99}}}));
    assert_eq!(get(&sc, u(0), "users"), json!([us(2), us(2)]));
}

#[test]
fn pulling_a_user_still_referred_to_keeps_it_until_the_last_reference_goes() {
    let mut sc = chat_room();
    run(&mut sc, json!({}), json!({"$pull": {"users": {"username": "chatmonster1"}}}));
    assert_eq!(get(&sc, u(0), "users"), json!([]));
    assert!(has(&sc, u(2)), "still the author of a message");
    // Pulling the message by its author (a nested filter) removes both.
    run(&mut sc, json!({}), json!({"$pull": {"messages": {"author": {"username": "chatmonster1"}}}}));
    assert_eq!(get(&sc, u(0), "messages"), json!([]));
    assert!(!has(&sc, u(2)) && !has(&sc, u(3)));
    assert_eq!(sc.len(), 2);
}

#[test]
fn pull_by_uuid_string_by_reference_and_by_each() {
    let mut sc = chat_room();
    // Three messages: u(3) by the user, two new ones without an author.
    run(&mut sc, json!({}), json!({"$push": {"messages": {"$each": [{"text": "x"}, {"text": "y"}]}}}));
    assert_eq!(get(&sc, u(0), "messages"), json!([us(3), news(0), news(1)]));
    let mut by_author = sc.clone();
    run(&mut by_author, json!({}), json!({"$pull": {"messages": {"author": null}}}));
    assert_eq!(get(&by_author, u(0), "messages"), json!([us(3)]));
    let mut by_author = sc.clone();
    run(&mut by_author, json!({}), json!({"$pull": {"messages": {"author": us(2)}}}));
    assert_eq!(get(&by_author, u(0), "messages"), json!([news(0), news(1)]));
    run(
        &mut sc,
        json!({}),
        json!({"$pull": {"messages": {"$each": [news(0).to_uppercase(), {"text": "y"}]}}}),
    );
    assert_eq!(get(&sc, u(0), "messages"), json!([us(3)]));
    assert!(!has(&sc, new(0)) && !has(&sc, new(1)));
    // Nothing matches: nothing to write.
    assert_eq!(plan(&sc, json!({}), json!({"$pull": {"messages": {"text": "nope"}}})), Ok(vec![]));
}

#[test]
fn add_to_set_of_references() {
    let mut sc = chat_room();
    // The user is already there; the new one is added, once.
    let f = run(
        &mut sc,
        json!({}),
        json!({"$addToSet": {"users": {"$each": [us(2), {"$uuid": us(0x20), "username": "bob"}, us(0x20)]}}}),
    );
    assert_eq!(get(&sc, u(0), "users"), json!([us(2), us(0x20)]));
    assert_eq!(f.len(), 2);
    // An existing object given inline with properties, already in the set: not added again,
    // but its properties are set.
    let f =
        run(&mut sc, json!({}), json!({"$addToSet": {"users": {"$uuid": us(0x20), "username": "robert"}}}));
    assert_eq!(f, [change(u(0x20), "User", &[("username", json!("robert"))])]);
    assert_eq!(get(&sc, u(0), "users"), json!([us(2), us(0x20)]));
}

#[test]
fn queries_by_uuid_by_class_and_by_property_values() {
    let mut sc = chat_room();
    run(&mut sc, json!({"$uuid": us(3)}), json!({"$set": {"text": "by uuid"}}));
    assert_eq!(get(&sc, u(3), "text"), json!("by uuid"));
    run(
        &mut sc,
        json!({"$uuid": us(3).to_uppercase(), "$cls": "Message"}),
        json!({"$set": {"text": "by uuid and cls"}}),
    );
    assert_eq!(get(&sc, u(3), "text"), json!("by uuid and cls"));
    let f = run(
        &mut sc,
        json!({"$cls": "User", "username": "chatmonster1"}),
        json!({"$set": {"lastActive": "2015-03-04T05:06:07Z"}}),
    );
    assert_eq!(f, [change(u(2), "User", &[("lastActive", json!("2015-03-04T05:06:07Z"))])]);
    assert_eq!(get(&sc, u(2), "lastActive"), json!(1_425_445_567));
    // A date condition matches the stored value whatever its form.
    run(
        &mut sc,
        json!({"$cls": "User", "lastActive": "2015-03-04T05:06:07.000Z"}),
        json!({"$set": {"color": 255}}),
    );
    assert_eq!(get(&sc, u(2), "color"), json!(255));
    // A reference condition, then a nested one.
    run(&mut sc, json!({"$cls": "Message", "author": us(2)}), json!({"$set": {"text": "by author"}}));
    assert_eq!(get(&sc, u(3), "text"), json!("by author"));
    run(
        &mut sc,
        json!({"$cls": "Message", "author": {"username": "chatmonster1"}}),
        json!({"$set": {"text": "nested"}}),
    );
    assert_eq!(get(&sc, u(3), "text"), json!("nested"));
    // The root by its model.
    run(&mut sc, json!({"$cls": "ChatRoom"}), json!({"$set": {"name": "by model"}}));
    assert_eq!(get(&sc, u(0), "name"), json!("by model"));
    // Key paths start from the object the query chose.
    run(&mut sc, json!({"$uuid": us(3)}), json!({"$set": {"author.username": "renamed"}}));
    assert_eq!(get(&sc, u(2), "username"), json!("renamed"));
}

#[test]
fn wrong_types_are_left_to_apply_with_the_reference_messages() {
    let sc = chat_room();
    for (update, message) in [
        (json!({"$set": {"name": 5}}), "Not valid type at 'name', should be String".to_owned()),
        (
            json!({"$set": {"attributes.status": 7}}),
            "Not valid type at 'status', should be one of [0,1]".to_owned(),
        ),
        (json!({"$set": {"users": "x"}}), "Not valid type at 'users', should be array of UUIDs".to_owned()),
        (json!({"$set": {"attributes": 5}}), "Cannot set property at 'attributes' as non-UUID".to_owned()),
        (json!({"$push": {"users": us(99)}}), format!("No such ModelObjects '[\"{}\"]' at 'users'", us(99))),
        (
            json!({"$set": {"attributes": us(3)}}),
            "Not valid type at 'attributes', should be ChatRoomAttributes".to_owned(),
        ),
        (
            json!({"$push": {"messages": {"postedAt": true}}}),
            "Not valid type at 'postedAt', should be Date".to_owned(),
        ),
    ] {
        let fragments = plan(&sc, json!({}), update.clone()).expect("planned");
        let mut after = sc.clone();
        let a = after.apply(&fragments, true);
        let errors: Vec<_> =
            a.replies.iter().filter_map(|r| r.as_ref().err()).map(|e| e.message.clone()).collect();
        assert!(errors.contains(&message), "{update}: {errors:?}");
        assert!(a.applied.is_empty());
        assert!(after == sc, "atomic: nothing changed");
        check_invariants(&after);
    }
}

#[test]
fn a_room_without_attributes() {
    let s = schema(CHAT_TOML);
    let mut sc = scope(&s, "ChatRoom", &[]);
    run(&mut sc, json!({}), json!({"$set": {"attributes": {"$uuid": us(5), "topic": "t"}}}));
    assert_eq!(get(&sc, u(0), "attributes"), json!(us(5)));
    run(&mut sc, json!({}), json!({"$set": {"attributes": null}}));
    assert_eq!(sc.len(), 1);
}

// Canvas.

#[test]
fn canvas_subtypes_and_value_collections() {
    let mut sc = canvas();
    // A Circle into [Shape] by $cls; the property of the subtype is set.
    run(&mut sc, json!({}), json!({"$push": {"shapes": {"$cls": "Circle", "x": 3, "radius": 1.5}}}));
    assert_eq!(sc.object(&new(0)).map(|(c, _)| c), Some("Circle"));
    assert_eq!(get(&sc, new(0), "y"), json!(0), "default");
    // A key path through the last element reaches the Circle's own property.
    run(&mut sc, json!({}), json!({"$set": {"shapes[-1].radius": 2.0}}));
    assert_eq!(get(&sc, new(0), "radius"), json!(2));
    // Collections of values.
    run(&mut sc, json!({}), json!({"$addToSet": {"shapes[0].tags": {"$each": ["a", "b", "b", "c"]}}}));
    assert_eq!(get(&sc, u(10), "tags"), json!(["a", "b", "c"]));
    run(
        &mut sc,
        json!({}),
        json!({"$pull": {"shapes.0.tags": {"$each": ["a", "c"]}}, "$push": {"shapes.0.palette": "blue"}}),
    );
    assert_eq!(get(&sc, u(10), "tags"), json!(["b"]));
    assert_eq!(get(&sc, u(10), "palette"), json!(["red", "green", "blue"]));
    run(
        &mut sc,
        json!({}),
        json!({"$set": {"shapes[0].palette[0]": "blue", "shapes[0].palette[-1]": "red"}}),
    );
    assert_eq!(get(&sc, u(10), "palette"), json!(["blue", "green", "red"]));
    // Numbers and dates are compared in normal form.
    run(&mut sc, json!({}), json!({"$set": {"shapes[0].created": "2020-01-01T00:00:00Z"}}));
    assert_eq!(get(&sc, u(10), "created"), json!(1_577_836_800));
    assert_eq!(plan(&sc, json!({}), json!({"$addToSet": {"shapes.0.tags": "b"}})), Ok(vec![]));
    // Pull shapes by model: the circles go.
    run(&mut sc, json!({}), json!({"$pull": {"shapes": {"$cls": "Circle"}}}));
    assert_eq!(get(&sc, u(0), "shapes"), json!([us(10)]));
    assert!(!has(&sc, u(11)) && !has(&sc, new(0)));
    // By a property only Circles have: nothing left to match.
    assert_eq!(plan(&sc, json!({}), json!({"$pull": {"shapes": {"radius": 5}}})), Ok(vec![]));
}

#[test]
fn canvas_pull_by_values_of_each_type() {
    let mut sc = canvas();
    run(
        &mut sc,
        json!({}),
        json!({"$set": {"shapes[1].created": 1_500_000_000.5, "shapes[1].visible": false, "shapes[1].status": 1}}),
    );
    for (filter, left) in [
        (json!({"x": 2.0}), json!([us(10)])),
        (json!({"created": "2017-07-14T02:40:00.500Z"}), json!([us(10)])),
        (json!({"visible": false}), json!([us(10)])),
        (json!({"status": 1}), json!([us(10)])),
        (json!({"palette": ["red", "green"]}), json!([us(11)])),
        (json!({"tags": []}), json!([us(10)])),
        (json!({"color": null}), json!([])),
        (json!({"x": 1, "tags": ["a"]}), json!([us(11)])),
        (json!({"x": 1, "tags": ["b"]}), json!([us(10), us(11)])),
    ] {
        let mut after = sc.clone();
        run(&mut after, json!({}), json!({"$pull": {"shapes": filter.clone()}}));
        assert_eq!(get(&after, u(0), "shapes"), left, "{filter}");
    }
}

#[test]
fn distinct_elements_of_one_collection_do_not_conflict() {
    let mut sc = canvas();
    run(&mut sc, json!({}), json!({"$set": {"shapes.0.tags": ["a", "b", "c"]}}));
    let f = run(&mut sc, json!({}), json!({"$set": {"shapes.0.tags[0]": "x", "shapes.0.tags.2": "z"}}));
    assert_eq!(f, [change(u(10), "Shape", &[("tags", json!(["x", "b", "z"]))])]);
    // Nor do a collection and key paths through its elements to other objects.
    run(
        &mut sc,
        json!({}),
        json!({"$set": {"shapes[0].x": 10, "shapes[1].x": 11}, "$push": {"shapes[0].tags": "d"}}),
    );
    assert_eq!(get(&sc, u(10), "x"), json!(10));
    assert_eq!(get(&sc, u(11), "x"), json!(11));
    assert_eq!(get(&sc, u(10), "tags"), json!(["x", "b", "z", "d"]));
}

#[test]
fn plans_are_pure() {
    let sc = chat_room();
    let before = sc.clone();
    let update =
        json!({"$set": {"name": "x", "messages": [{"text": "t"}]}, "$push": {"users": {"username": "u"}}});
    let a = plan(&sc, json!({}), update.clone()).expect("planned");
    let b = plan(&sc, json!({}), update).expect("planned");
    assert_eq!(a, b, "the same fragments each time");
    assert!(sc == before, "nothing applied");
}
