//! The reference's procedure tests (`test/procedures/remote_http_sync_procedure.js`,
//! `test/procedures/sync_procedure.js`, the procedure test of `test/scope.js`), ported: the
//! mocked HTTP client's assertions become assertions on the bound [`RemoteRequest`].

use std::time::Duration;

use serde_json::json;

use super::{POST_MESSAGE, SET_NAME, TOKEN, USER_LOGOUT, bind, chat_room, header, procedure};
use crate::sync::procedure::{ProcedureError, ProcedureUpdate};
use crate::sync::tests::{add, change, u, us};

/// The headers every request gets unless configured (the reference's default
/// `Content-Type`, and the `Accept` that `request` adds for `json: true`).
fn defaults() -> Vec<(String, String)> {
    vec![
        ("Content-Type".to_owned(), "application/json".to_owned()),
        ("Accept".to_owned(), "application/json".to_owned()),
    ]
}

fn headers(kv: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut h = defaults();
    h.extend(kv.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    h
}

#[test]
fn set_name_allows_no_body() {
    // "should allow null body".
    let sc = chat_room();
    let p = procedure(SET_NAME);
    let fragments = [change(u(0), "ChatRoom", &[("name", json!("New chat room name"))])];
    p.check_constraints(&sc, &fragments).expect("constraints match");
    let r = bind(&p, &sc, &fragments).expect("binds");
    assert_eq!(r.url, format!("http://chatRoomAPI/room/{}", us(0)));
    assert_eq!(r.method, "POST");
    assert_eq!(r.headers, headers(&[("Authorization", TOKEN), ("X-ChatRoom-SetName", "New chat room name")]));
    // `json: true`: no body.
    assert_eq!(r.body, None);
    assert_eq!(r.timeout, Duration::from_secs(10));
    // `{updated: true}`: no updates.
    assert_eq!(p.read_response(200, br#"{"updated":true}"#), Ok(vec![]));
}

/// The changeset of "should bind simple incoming and scope expression values": a new
/// message u(10) appended to the room.
fn post_message_fragments() -> [tether_proto::jetstream::SyncFragment; 2] {
    [
        change(u(0), "ChatRoom", &[("messages", json!([us(3), us(10)]))]),
        add(
            u(10),
            "Message",
            &[
                ("author", json!(us(2))),
                ("postedAt", json!(1_700_000_100.25)),
                ("text", json!("This is a new message")),
            ],
        ),
    ]
}

#[test]
fn post_message_binds_incoming_scope_root_model_and_case_values() {
    let sc = chat_room();
    let p = procedure(POST_MESSAGE);
    let fragments = post_message_fragments();
    p.check_constraints(&sc, &fragments).expect("constraints match");
    let r = bind(&p, &sc, &fragments).expect("binds");
    assert_eq!(r.url, format!("http://chatRoomAPI/room/{}/messages", us(0)));
    assert_eq!(r.method, "POST");
    assert_eq!(
        r.headers,
        headers(&[
            ("Authorization", TOKEN),
            ("X-ChatRoom-Locale", "en_US"),
            ("X-ChatRoom-Status", "OPEN"),
            ("X-ChatRoom-MessageId", &us(10)),
            ("X-ChatRoom-InsertedMessageId", &us(10)),
            // The scope as it is before the changeset: the previous last message's author.
            ("X-ChatRoom-PreviousMessageAuthorUsername", "chatmonster1"),
        ])
    );
    assert_eq!(
        r.body,
        Some(json!({
            "uuid": us(10),
            "authorUUID": us(2),
            "postedAt": 1_700_000_100.25,
            "text": "This is a new message",
            "tags": ["staticValue0", "staticValue1"],
        }))
    );
    assert_eq!(p.read_response(200, br#"{"posted":true}"#), Ok(vec![]));
}

#[test]
fn user_logout_binds_dynamic_indices() {
    // "should bind dynamic index incoming expression values": a second user, so that the
    // removed one is found among those that stay.
    let mut sc = chat_room();
    let a = sc.apply(
        &[
            change(u(0), "ChatRoom", &[("users", json!([us(2), us(4)]))]),
            add(u(4), "User", &[("username", json!("b"))]),
        ],
        false,
    );
    assert!(a.replies.iter().all(Result::is_ok));
    let p = procedure(USER_LOGOUT);
    let fragments = [change(u(0), "ChatRoom", &[("users", json!([us(4)]))])];
    // The reference's test called `execute`, not `verifyAndExecute`, so it never met its
    // remove-constraint bug: this changeset fails its constraints there.
    p.check_constraints(&sc, &fragments).expect("a removal matches a remove constraint");
    let r = bind(&p, &sc, &fragments).expect("binds");
    assert_eq!(r.url, format!("http://chatRoomAPI/room/{}/users/{}/logout", us(0), us(2)));
    assert_eq!(r.method, "POST");
    assert_eq!(r.headers, headers(&[("Authorization", TOKEN), ("X-ChatRoom-Locale", "en_US")]));
    assert_eq!(r.body, Some(json!({ "uuid": us(2) })));
    assert_eq!(p.read_response(200, br#"{"logout":true}"#), Ok(vec![]));
}

#[test]
fn procedure_updates_are_read_from_the_response() {
    // test/scope.js "should apply procedure updates on success".
    let sc = chat_room();
    let p = procedure(SET_NAME);
    let fragments = [change(u(0), "ChatRoom", &[("name", json!("New name"))])];
    p.check_constraints(&sc, &fragments).expect("constraints match");
    let r = bind(&p, &sc, &fragments).expect("binds");
    assert_eq!(header(&r, "X-ChatRoom-SetName"), Some("New name"));
    let topic = "Room renamed \"TestChatRoom\" to \"New name\"";
    let body = json!({ "_updates": [{ "update": { "$set": { "attributes.topic": topic } } }] });
    assert_eq!(
        p.read_response(200, body.to_string().as_bytes()),
        Ok(vec![ProcedureUpdate {
            query: json!(null),
            update: json!({ "$set": { "attributes.topic": topic } })
        }])
    );
}

#[test]
fn constraints_mismatch_has_the_reference_message() {
    // sync_procedure.js `verifyAndExecute`.
    let sc = chat_room();
    let p = procedure(SET_NAME);
    let e = p
        .check_constraints(&sc, &[change(u(0), "ChatRoom", &[("name", json!("x")), ("users", json!([]))])])
        .expect_err("an additional property");
    assert_eq!(e, ProcedureError::ConstraintsNotMatched);
    assert_eq!(e.to_string(), "Changes do not match the procedure constraints");
}

#[test]
fn non_success_status_has_the_reference_message() {
    let p = procedure(SET_NAME);
    let e = p.read_response(500, b"{}").expect_err("500 is not a success");
    assert_eq!(e.to_string(), "Expected response 200 status code, received 500 status code");
}
