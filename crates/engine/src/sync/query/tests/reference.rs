//! The reference's `test/query/{set,push,pull,add_to_set}_query_operation.js`, ported. Their
//! `QueryResult` is read off the fragments: `created` are the `add` fragments, `modified` the
//! `change` fragments (`matched` is the query's object, the root in every one of them).

use serde_json::json;
use tether_proto::jetstream::{FragmentKind, SyncFragment, Uuid};

use super::{chat_room, get, has, new, news, run};
use crate::sync::tests::{add, change, u, us};

/// The UUIDs and models of the fragments of one kind (`created` / `modified`).
fn entries(fragments: &[SyncFragment], kind: FragmentKind) -> Vec<(Uuid, &str)> {
    fragments.iter().filter(|f| f.kind == kind).map(|f| (f.uuid, f.cls_name.as_str())).collect()
}

#[test]
fn set_should_be_able_to_perform_simple_updates() {
    let mut sc = chat_room();
    let f = run(&mut sc, json!({}), json!({"$set": {"name": "RoomNameAfterSetQuery"}}));
    assert_eq!(get(&sc, u(0), "name"), json!("RoomNameAfterSetQuery"));
    assert_eq!(f, [change(u(0), "ChatRoom", &[("name", json!("RoomNameAfterSetQuery"))])]);
    assert!(entries(&f, FragmentKind::Add).is_empty());
    assert_eq!(entries(&f, FragmentKind::Change), [(u(0), "ChatRoom")]);
}

#[test]
fn set_should_be_able_to_perform_array_property_setting() {
    let mut sc = chat_room();
    // Two new messages replace the existing one, which the sweep then removes.
    let f = run(
        &mut sc,
        json!({}),
        json!({"$set": {"messages": [
            {"author": us(2), "postedAt": "2015-03-04T05:06:07.089Z", "text": "A new message"},
            {"author": us(2), "postedAt": "2015-03-04T05:06:08Z", "text": "Another new message"},
        ]}}),
    );
    assert_eq!(
        f,
        [
            change(u(0), "ChatRoom", &[("messages", json!([news(0), news(1)]))]),
            add(
                new(0),
                "Message",
                &[
                    ("author", json!(us(2))),
                    ("postedAt", json!("2015-03-04T05:06:07.089Z")),
                    ("text", json!("A new message"))
                ]
            ),
            add(
                new(1),
                "Message",
                &[
                    ("author", json!(us(2))),
                    ("postedAt", json!("2015-03-04T05:06:08Z")),
                    ("text", json!("Another new message"))
                ]
            ),
        ]
    );
    assert_eq!(get(&sc, u(0), "messages"), json!([news(0), news(1)]));
    for (m, text) in [(new(0), "A new message"), (new(1), "Another new message")] {
        assert_eq!(get(&sc, m, "author"), json!(us(2)));
        assert!(get(&sc, m, "postedAt").is_number(), "a Date");
        assert_eq!(get(&sc, m, "text"), json!(text));
    }
    assert_eq!(get(&sc, new(0), "postedAt"), json!(1_425_445_567.089));
    assert!(!has(&sc, u(3)), "the replaced message is swept");
    assert_eq!(entries(&f, FragmentKind::Add), [(new(0), "Message"), (new(1), "Message")]);
    assert_eq!(entries(&f, FragmentKind::Change), [(u(0), "ChatRoom")]);
}

#[test]
fn set_should_be_able_to_perform_null_property_setting() {
    let mut sc = chat_room();
    assert_eq!(get(&sc, u(3), "author"), json!(us(2)));
    let f = run(&mut sc, json!({}), json!({"$set": {"messages[0].author": null}}));
    assert_eq!(get(&sc, u(0), "messages"), json!([us(3)]));
    assert_eq!(get(&sc, u(3), "author"), json!(null));
    assert!(has(&sc, u(2)), "the user is still in the room's users");
    assert_eq!(f, [change(u(3), "Message", &[("author", json!(null))])]);
    assert_eq!(entries(&f, FragmentKind::Change), [(u(3), "Message")]);
}

#[test]
fn push_should_be_able_to_perform_simple_push() {
    let mut sc = chat_room();
    let m = u(0xAB);
    let f = run(
        &mut sc,
        json!({}),
        json!({"$push": {"messages": {"$uuid": us(0xAB), "author": us(2), "postedAt": 1_500_000_000, "text": "A new message"}}}),
    );
    assert_eq!(get(&sc, u(0), "messages"), json!([us(3), us(0xAB)]));
    assert_eq!(get(&sc, m, "author"), json!(us(2)));
    assert_eq!(get(&sc, m, "postedAt"), json!(1_500_000_000));
    assert_eq!(get(&sc, m, "text"), json!("A new message"));
    assert_eq!(entries(&f, FragmentKind::Add), [(m, "Message")]);
    assert_eq!(entries(&f, FragmentKind::Change), [(u(0), "ChatRoom")]);
}

#[test]
fn push_should_be_able_to_push_an_existing_model_object_by_just_uuid() {
    let mut sc = chat_room();
    let f = run(&mut sc, json!({}), json!({"$push": {"messages": us(3)}}));
    // The same message twice: collections may repeat a reference.
    assert_eq!(get(&sc, u(0), "messages"), json!([us(3), us(3)]));
    assert_eq!(get(&sc, u(3), "text"), json!("Rarr"));
    assert_eq!(f, [change(u(0), "ChatRoom", &[("messages", json!([us(3), us(3)]))])]);
}

#[test]
fn push_should_be_able_to_push_an_existing_model_object_and_set_properties() {
    let mut sc = chat_room();
    let f = run(
        &mut sc,
        json!({}),
        json!({"$push": {"messages": {"$uuid": us(3), "text": "Overwrite message"}}}),
    );
    assert_eq!(get(&sc, u(0), "messages"), json!([us(3), us(3)]));
    assert_eq!(get(&sc, u(3), "author"), json!(us(2)));
    assert_eq!(get(&sc, u(3), "text"), json!("Overwrite message"));
    assert!(entries(&f, FragmentKind::Add).is_empty());
    assert_eq!(entries(&f, FragmentKind::Change), [(u(0), "ChatRoom"), (u(3), "Message")]);
}

#[test]
fn pull_should_be_able_to_perform_simple_pull() {
    let mut sc = chat_room();
    let f = run(&mut sc, json!({}), json!({"$pull": {"messages": {"$uuid": us(3)}}}));
    assert_eq!(get(&sc, u(0), "messages"), json!([]));
    assert!(!has(&sc, u(3)), "the pulled message is swept");
    assert!(has(&sc, u(2)), "its author is still a user of the room");
    assert_eq!(f, [change(u(0), "ChatRoom", &[("messages", json!([]))])]);
}

#[test]
fn add_to_set_should_avoid_inserting_a_duplicate_object() {
    let mut sc = chat_room();
    let f = run(&mut sc, json!({}), json!({"$addToSet": {"messages": us(3)}}));
    assert_eq!(get(&sc, u(0), "messages"), json!([us(3)]));
    assert_eq!(get(&sc, u(3), "text"), json!("Rarr"));
    // The reference reports the room as modified (its unchanged check compares a length
    // with an array, so it always resends the collection); Tether writes nothing.
    assert!(f.is_empty());
}
