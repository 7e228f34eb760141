//! Binding the remote call: URL placeholders, headers, body, defaults.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use super::{TOKEN, bind, chat_room, chat_schema, header, params, procedure};
use crate::sync::procedure::{Procedure, ProcedureDef, ProcedureError};
use crate::sync::tests::{change, u, us};

/// A procedure on ChatRoom whose only constraint allows any change of a ChatRoom, with this
/// `[remote]` table body.
fn remote(remote_toml: &str) -> Procedure {
    procedure(&format!(
        "name = \"ChatRoom.p\"\nconstraints = [{{ type = \"change\", clsName = \"ChatRoom\", allowAdditionalProperties = true }}]\n[remote]\n{remote_toml}"
    ))
}

fn rename(name: serde_json::Value) -> [tether_proto::jetstream::SyncFragment; 1] {
    [change(u(0), "ChatRoom", &[("name", name), ("users", json!([us(2), us(8)]))])]
}

#[test]
fn url_values_are_percent_encoded() {
    let sc = chat_room();
    let p = remote(
        r#"url = "https://api.example/rooms/:room/n/:name" 
params = { room = "$incoming.ChatRoom.change.uuid", name = "$incoming.ChatRoom.change.name" }"#,
    );
    let r = bind(&p, &sc, &rename(json!("a/b c?d&é%#"))).expect("binds");
    assert_eq!(r.url, format!("https://api.example/rooms/{}/n/a%2Fb%20c%3Fd%26%C3%A9%25%23", us(0)));
    assert_eq!(r.method, "GET");
}

#[test]
fn url_placeholders_in_queries_and_literal_params() {
    let sc = chat_room();
    let p = remote(
        r#"url = "http://127.0.0.1:9000/rooms/:id.json?room=:id&n=:n&b=:b&s=:s&time=12:30"
params = { id = "$rootModel.uuid", n = 2.5, b = true, s = "$$x y" }"#,
    );
    let r = bind(&p, &sc, &[]).expect("binds");
    // The port and `12:30` are not placeholders; `:id.json` ends the name at the dot.
    assert_eq!(
        r.url,
        format!("http://127.0.0.1:9000/rooms/{0}.json?room={0}&n=2.5&b=true&s=%24x%20y&time=12:30", us(0))
    );
}

#[test]
fn url_params_must_have_a_scalar_value() {
    let sc = chat_room();
    let p = remote(
        r#"url = "http://h/:x"
params = { x = "$incoming.ChatRoom.change.name" }"#,
    );
    let e = |name| bind(&p, &sc, &rename(name)).expect_err("no URL value");
    assert_eq!(
        e(json!(null)),
        ProcedureError::Binding(
            "URL parameter 'x' is null; expr: '$incoming.ChatRoom.change.name'".to_owned()
        )
    );
    let q = remote(
        r#"url = "http://h/:x"
params = { x = "$incoming.ChatRoom.change.users[7]" }"#,
    );
    assert_eq!(
        bind(&q, &sc, &rename(json!("n"))).expect_err("undefined").to_string(),
        "URL parameter 'x' is undefined; expr: '$incoming.ChatRoom.change.users[7]'"
    );
    let r = remote(
        r#"url = "http://h/:x"
params = { x = "$incoming.ChatRoom.change.users" }"#,
    );
    assert_eq!(
        bind(&r, &sc, &rename(json!("n"))).expect_err("an array").to_string(),
        "URL parameter 'x' is not a string, number or boolean; expr: '$incoming.ChatRoom.change.users'"
    );
}

#[test]
fn headers() {
    let sc = chat_room();
    let p = remote(
        r#"url = "http://h/"
method = "put"
[remote.headers]
content-type = "application/merge-patch+json"
X-Status = "$rootModel.attributes.status"
X-Literal = true
X-Dollar = "$$5"
X-Name = "$incoming.ChatRoom.change.name"
X-Missing = "$incoming.ChatRoom.change.users[9]"
X-Token = "$scope.params.accessToken"
"#,
    );
    let r = bind(&p, &sc, &rename(json!("N"))).expect("binds");
    assert_eq!(r.method, "PUT");
    // A configured Content-Type (any case) replaces the default; Accept stays.
    assert_eq!(
        r.headers,
        [
            ("Accept", "application/json"),
            ("content-type", "application/merge-patch+json"),
            ("X-Status", "0"),
            ("X-Literal", "true"),
            ("X-Dollar", "$5"),
            ("X-Name", "N"),
            ("X-Token", TOKEN),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
    );
    // null: the header is left out (undefined too, as X-Missing above).
    let r = bind(&p, &sc, &rename(json!(null))).expect("binds");
    assert_eq!(header(&r, "X-Name"), None);
    // A client cannot split the request with CR or LF.
    assert_eq!(
        bind(&p, &sc, &rename(json!("a\r\nX-Evil: 1"))).expect_err("CRLF").to_string(),
        "Header 'X-Name' value has control characters; expr: '$incoming.ChatRoom.change.name'"
    );
    assert_eq!(
        header(&bind(&p, &sc, &rename(json!("a\tb"))).expect("a tab is fine"), "X-Name"),
        Some("a\tb")
    );
    assert_eq!(
        bind(&p, &sc, &rename(json!(["a"]))).expect_err("an array").to_string(),
        "Header 'X-Name' value is not a string, number or boolean; expr: '$incoming.ChatRoom.change.name'"
    );
}

#[test]
fn bodies_take_expressions_anywhere() {
    let sc = chat_room();
    let p = remote(
        r#"url = "http://h/"
method = "POST"
timeout_ms = 2500
[remote.body]
room = { name = "$rootModel.name", id = "$rootModel.uuid", tags = ["$$literal", "$incoming.ChatRoom.change.name", 3, "$incoming.ChatRoom.change.users[9]"] }
missing = "$incoming.ChatRoom.change.users[9]"
null = "$incoming.ChatRoom.change.name"
plain = "text"
nested = [[1, "$scope.name"], { deep = { deeper = "$scope.params.accessToken" } }]
"#,
    );
    let r = bind(&p, &sc, &rename(json!(null))).expect("binds");
    assert_eq!(r.timeout, Duration::from_millis(2500));
    assert_eq!(
        r.body,
        Some(json!({
            "room": { "name": "TestChatRoom", "id": us(0), "tags": ["$literal", null, 3, null] },
            "null": null,
            "plain": "text",
            "nested": [[1, "TestScope"], { "deep": { "deeper": TOKEN } }],
        })),
        "an undefined value leaves its key out, and is null in an array"
    );
    // An array body.
    let q = remote(
        r#"url = "http://h/"
body = ["$scope.name", 1]"#,
    );
    assert_eq!(bind(&q, &sc, &[]).expect("binds").body, Some(json!(["TestScope", 1])));
}

#[test]
fn an_expression_that_fails_refuses_the_call() {
    let sc = chat_room();
    let p = remote(
        r#"url = "http://h/"
body = { a = { b = ["$incoming.User.add.username"] } }"#,
    );
    assert_eq!(
        bind(&p, &sc, &[]),
        Err(ProcedureError::Binding(
            "Incoming did not contain the change 'User.add'; expr: '$incoming.User.add.username'".to_owned()
        ))
    );
}

#[test]
fn a_procedure_without_remote_only_checks_constraints() {
    let sc = chat_room();
    let p = procedure(
        r#"name = "ChatRoom.rename"
constraints = [{ type = "change", clsName = "ChatRoom", properties = { name = "$hasNewValue" } }]"#,
    );
    assert!(!p.has_remote());
    assert_eq!(p.name(), "ChatRoom.rename");
    assert_eq!(p.model(), "ChatRoom");
    let f = rename(json!("x"));
    assert_eq!(p.check_constraints(&sc, &f[..1]), Err(ProcedureError::ConstraintsNotMatched));
    assert_eq!(p.bind(&sc, "TestScope", &params(), &f), Ok(None));
    assert_eq!(p.read_response(500, b"nonsense"), Ok(vec![]));
}

#[test]
fn debug_leaves_out_header_values_and_the_body() {
    let sc = chat_room();
    let p = remote(
        r#"url = "http://h/"
headers = { Authorization = "$scope.params.accessToken" }
body = { token = "$scope.params.accessToken" }"#,
    );
    let r = bind(&p, &sc, &[]).expect("binds");
    let shown = format!("{r:?}");
    assert!(!shown.contains(TOKEN), "{shown}");
    assert!(shown.contains("Authorization"), "{shown}");
}

#[test]
fn errors_for_the_server_to_report() {
    assert_eq!(ProcedureError::Timeout.to_string(), "ETIMEDOUT");
    assert_eq!(ProcedureError::RemoteFailed.to_string(), "Remote procedure call failed");
}

#[test]
fn the_documented_configuration_is_valid() {
    // The TOML of the module docs, as the server reads it (`[[sync.procedures]]`).
    #[derive(Deserialize)]
    struct File {
        sync: Sync,
    }
    #[derive(Deserialize)]
    struct Sync {
        procedures: Vec<ProcedureDef>,
    }
    let text = r#"
[[sync.procedures]]
name = "ChatRoom.postMessage"            # "Model.procedureName"; Model is in the schema
constraints = [
  { type = "change", clsName = "ChatRoom", properties = { messages = { "$array" = "insert" } } },
  { type = "add", clsName = "Message", properties = { author = "$hasNewValue", text = "$hasNewValue" },
    allowAdditionalProperties = true },
]

[sync.procedures.remote]                 # optional: without it, constraints only
url = "http://127.0.0.1:9000/room/:id/messages"
params = { id = "$incoming.ChatRoom.change.uuid" }   # one per :placeholder of the url
method = "POST"                          # GET (default), DELETE, HEAD, OPTIONS, PATCH, POST, PUT
headers = { Authorization = "$scope.params.token", "X-Locale" = "$rootModel.attributes.locale" }
body = { text = "$incoming.Message.add.text", room = "$rootModel.name",
         status = "$case.statusName($rootModel.attributes.status)", tags = ["a", "b"] }
timeout_ms = 10000                       # default 10000
success_status_codes = [200]             # default [200]
updates_response_key = "_updates"        # default "_updates"
cases = { statusName = { "0" = "open", "1" = "closed" } }
"#;
    let file: File = toml::from_str(text).expect("parses");
    let schema = chat_schema();
    let procedures: Vec<Procedure> =
        file.sync.procedures.into_iter().map(|d| Procedure::new(d, &schema).expect("valid")).collect();
    assert_eq!(procedures.len(), 1);
    let sc = chat_room();
    let mut params = params();
    params.insert("token".to_owned(), json!("t"));
    let f = [
        change(u(0), "ChatRoom", &[("messages", json!([us(3), us(10)]))]),
        crate::sync::tests::add(u(10), "Message", &[("author", json!(us(2))), ("text", json!("hi"))]),
    ];
    procedures[0].check_constraints(&sc, &f).expect("matches");
    let r = procedures[0].bind(&sc, "room-1", &params, &f).expect("binds").expect("remote");
    assert_eq!(r.url, format!("http://127.0.0.1:9000/room/{}/messages", us(0)));
    assert_eq!(
        r.body,
        Some(json!({ "text": "hi", "room": "TestChatRoom", "status": "open", "tags": ["a", "b"] }))
    );
}
