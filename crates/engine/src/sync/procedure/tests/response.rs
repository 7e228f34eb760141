//! Reading the remote's response: status, updates.

use serde_json::json;

use super::procedure;
use crate::sync::procedure::{Procedure, ProcedureError, ProcedureUpdate};

fn with(remote_extra: &str) -> Procedure {
    procedure(&format!(
        "name = \"ChatRoom.p\"\nconstraints = []\n[remote]\nurl = \"http://h/\"\n{remote_extra}"
    ))
}

fn update(query: serde_json::Value, update: serde_json::Value) -> ProcedureUpdate {
    ProcedureUpdate { query, update }
}

#[test]
fn status_must_be_a_success_code() {
    let p = with("success_status_codes = [200, 201, 204]");
    for s in [200, 201, 204] {
        assert_eq!(p.read_response(s, b""), Ok(vec![]), "{s}");
    }
    for s in [202, 301, 404, 500] {
        assert_eq!(
            p.read_response(s, br#"{"_updates":[{"update":{"$set":{"name":"x"}}}]}"#),
            Err(ProcedureError::Status { expected: "200, 201, 204".to_owned(), received: s })
        );
    }
    assert_eq!(
        p.read_response(404, b"").expect_err("404").to_string(),
        "Expected response 200, 201, 204 status code, received 404 status code"
    );
}

#[test]
fn updates_are_read_from_the_updates_key() {
    let p = with("");
    let body = json!({
        "ok": true,
        "_updates": [
            { "update": { "$set": { "name": "a" } } },
            { "query": null, "update": { "$push": { "messages": { "$cls": "Message" } } }, "options": { "x": 1 } },
            { "query": { "$uuid": "u", "$cls": "User" }, "update": { "$set": { "username": "b" } } },
        ],
    });
    assert_eq!(
        p.read_response(200, body.to_string().as_bytes()),
        Ok(vec![
            update(json!(null), json!({ "$set": { "name": "a" } })),
            update(json!(null), json!({ "$push": { "messages": { "$cls": "Message" } } })),
            update(json!({ "$uuid": "u", "$cls": "User" }), json!({ "$set": { "username": "b" } })),
        ])
    );
    let custom = with("updates_response_key = \"changes\"");
    assert_eq!(
        custom.read_response(
            200,
            br#"{"_updates":[{"update":{}}],"changes":[{"update":{"$set":{"name":"c"}}}]}"#
        ),
        Ok(vec![update(json!(null), json!({ "$set": { "name": "c" } }))])
    );
}

#[test]
fn bodies_without_updates_have_none() {
    let p = with("");
    for body in [
        &b""[..],
        b"not json",
        b"[1,2]",
        b"\"_updates\"",
        b"{}",
        br#"{"_updates":null}"#,
        br#"{"_updates":[]}"#,
        br#"{"other":[{"update":{}}]}"#,
    ] {
        assert_eq!(p.read_response(200, body), Ok(vec![]), "{}", String::from_utf8_lossy(body));
    }
}

#[test]
fn malformed_updates_refuse_the_message() {
    let p = with("");
    let cases = [
        (r#"{"_updates":{"update":{}}}"#, "Invalid updates: '_updates' is not an array"),
        (r#"{"_updates":true}"#, "Invalid updates: '_updates' is not an array"),
        (r#"{"_updates":[1]}"#, "Invalid updates: update 0 is not an object"),
        (r#"{"_updates":[{"update":{}},{}]}"#, "Invalid updates: update 1 has no update object"),
        (r#"{"_updates":[{"update":"$set"}]}"#, "Invalid updates: update 0 has no update object"),
        (
            r#"{"_updates":[{"query":"root","update":{}}]}"#,
            "Invalid updates: update 0 has a query that is not an object",
        ),
    ];
    for (body, want) in cases {
        let e = p.read_response(200, body.as_bytes()).expect_err(body);
        assert!(matches!(e, ProcedureError::InvalidUpdates(_)), "{body}");
        assert_eq!(e.to_string(), want, "{body}");
    }
}
