//! The event-server dialect over real sockets: `POST /event` and the `/events` WebSocket,
//! ported from the seed's unit tests as black-box protocol tests, plus the HTTP matrix,
//! the token-file rules and the bridges to the native protocol.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use common::*;
use futures_util::SinkExt;
use serde_json::json;
use tether_server::RunningServer;
use tether_server::config::TokenIdentity;

/// A valid token (at least 16 characters).
const TOKEN: &str = "the_token_0123456789";
/// The reply to a successful init.
const INIT_OK: &str = r#"{"type":"init","code":"OK"}"#;
/// A native connection token (see `auth.tokens`).
const NATIVE_TOKEN: &str = "native-token-0123456789";

/// A fresh directory for one test, removed when dropped (also when the test fails).
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tether-es-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A token file in its own temporary directory.
struct Tokens {
    path: PathBuf,
    _dir: TempDir,
}

impl std::ops::Deref for Tokens {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for Tokens {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

/// Writes `text` as the token file in a fresh directory.
fn token_file(name: &str, text: &str) -> Tokens {
    let dir = TempDir::new(name);
    let path = dir.0.join("tokens");
    std::fs::write(&path, text).expect("write tokens");
    Tokens { path, _dir: dir }
}

/// A server whose event-server token file is `path`.
async fn server_with(path: &Path) -> RunningServer {
    let mut c = config();
    c.event_server.tokens_file = Some(path.to_owned());
    start(c).await
}

/// A server whose token file holds [`TOKEN`]; keep the returned file alive.
async fn server(name: &str) -> (RunningServer, Tokens) {
    let path = token_file(name, &format!("{TOKEN}\n"));
    (server_with(&path).await, path)
}

/// `POST /event` with an optional `Authorization` header and a JSON content type.
async fn post(server: &RunningServer, auth: Option<&str>, body: &str) -> (u16, String) {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = auth {
        headers.push(("authorization", a));
    }
    http(server, "POST", "/event", &headers, body).await
}

/// `POST /event` authenticated with [`TOKEN`], asserting 200 `{"code":"OK"}`.
async fn post_ok(server: &RunningServer, body: &str) {
    let auth = format!("Basic {TOKEN}");
    let r = post(server, Some(&auth), body).await;
    assert_eq!(r, (200, r#"{"code":"OK"}"#.to_owned()), "POST /event {body}");
}

fn init_msg(token: &str, events: &[&str]) -> String {
    json!({"authentication": format!("Basic {token}"), "events": events}).to_string()
}

fn init_reply(code: &str) -> String {
    format!(r#"{{"type":"init","code":"{code}"}}"#)
}

/// Sends one init message and returns the reply text.
async fn init(ws: &mut Ws, msg: &str) -> String {
    send(ws, msg).await;
    recv_text(ws).await
}

/// Opens `/events` and registers for `events` with [`TOKEN`].
async fn listener(server: &RunningServer, events: &[&str]) -> Ws {
    let mut ws = ws(server, "/events").await;
    assert_eq!(init(&mut ws, &init_msg(TOKEN, events)).await, INIT_OK);
    ws
}

fn event(name: &str, data: &str) -> String {
    format!(r#"{{"type":"event","event":"{name}","data":{data}}}"#)
}

fn deliveries(server: &RunningServer) -> u64 {
    server.state.metrics.deliveries.load(Ordering::Relaxed)
}

// ---------------------------------------------------------------------------------------
// HTTP matrix
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn post_with_valid_token_is_ok_json() {
    let (server, _tokens) = server("post_ok").await;
    let auth = format!("Basic {TOKEN}");
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let req = hyper::Request::post(format!("http://{}/event", server.addr))
        .header("authorization", auth)
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(br#"{"event":"e","data":1}"#)))
        .expect("request");
    let resp = tokio::time::timeout(WAIT, client.request(req)).await.expect("reply").expect("http");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body = http_body_util::BodyExt::collect(resp.into_body()).await.expect("body").to_bytes();
    assert_eq!(&body[..], br#"{"code":"OK"}"#);
}

#[tokio::test]
async fn post_unauthenticated_cases_are_403() {
    let (server, _tokens) = server("post_unauth").await;
    let body = r#"{"event":"e","data":1}"#;
    let unauth = (403, r#"{"code":"UNAUTHENTICATED"}"#.to_owned());
    assert_eq!(post(&server, None, body).await, unauth, "no header");
    assert_eq!(post(&server, Some("Basic unknown_token_0123456789"), body).await, unauth, "unknown");
    assert_eq!(post(&server, Some("Basic the_token_0123"), body).await, unauth, "prefix of a token");
    assert_eq!(post(&server, Some("Basic short"), body).await, unauth, "under 16 chars");
    assert_eq!(post(&server, Some("Basic"), body).await, unauth, "scheme only");
    assert_eq!(post(&server, Some("Basic "), body).await, unauth, "empty token");
}

#[tokio::test]
async fn post_with_missing_tokens_file_is_403() {
    let dir = TempDir::new("missing_file");
    let server = server_with(&dir.0.join("does-not-exist")).await;
    let auth = format!("Basic {TOKEN}");
    assert_eq!(
        post(&server, Some(&auth), r#"{"event":"e"}"#).await,
        (403, r#"{"code":"UNAUTHENTICATED"}"#.to_owned())
    );
    drop(dir);

    // No token file configured at all: nothing is accepted either.
    let server = start(config()).await;
    assert_eq!(
        post(&server, Some(&auth), r#"{"event":"e"}"#).await,
        (403, r#"{"code":"UNAUTHENTICATED"}"#.to_owned())
    );
}

#[tokio::test]
async fn post_with_other_scheme_is_403_unrecognized() {
    let (server, _tokens) = server("post_scheme").await;
    let body = r#"{"event":"e"}"#;
    let expected = (403, r#"{"code":"AUTH_UNRECOGNIZED_SCHEME"}"#.to_owned());
    assert_eq!(post(&server, Some(&format!("basic {TOKEN}")), body).await, expected, "basic");
    assert_eq!(post(&server, Some(&format!("Bearer {TOKEN}")), body).await, expected, "Bearer");
    assert_eq!(post(&server, Some(TOKEN), body).await, expected, "token without scheme");
}

#[tokio::test]
async fn post_invalid_bodies_are_400() {
    let (server, _tokens) = server("post_invalid").await;
    let mut l = listener(&server, &["e", "1"]).await;
    let auth = format!("Basic {TOKEN}");
    let invalid = (400, r#"{"code":"INVALID_BODY"}"#.to_owned());
    for body in [
        r#"{"event":"e""#,
        "not json",
        "",
        r#"["e"]"#,
        r#"[{"event":"e"}]"#,
        r#"{"data":1}"#,
        "{}",
        r#"{"event":1}"#,
        r#"{"event":null}"#,
        r#"{"event":["e"]}"#,
        r#"{"event":"a b"}"#,
        r#"{"event":""}"#,
        "null",
        r#""e""#,
    ] {
        assert_eq!(post(&server, Some(&auth), body).await, invalid, "body {body:?}");
    }
    // None of them was published: the next frame is the event posted after them.
    post_ok(&server, r#"{"event":"e","data":"after"}"#).await;
    assert_eq!(recv_text(&mut l).await, event("e", r#""after""#));
}

#[tokio::test]
async fn post_without_data_is_allowed_and_delivered_without_data() {
    let (server, _tokens) = server("post_no_data").await;
    let mut l = listener(&server, &["b"]).await;
    post_ok(&server, r#"{"event":"b"}"#).await;
    assert_eq!(recv_text(&mut l).await, r#"{"type":"event","event":"b"}"#);
}

#[tokio::test]
async fn post_unknown_fields_are_ignored() {
    let (server, _tokens) = server("post_extra").await;
    let mut l = listener(&server, &["b"]).await;
    post_ok(&server, r#"{"extra":true,"event":"b","data":[1]}"#).await;
    assert_eq!(recv_text(&mut l).await, event("b", "[1]"));
}

/// Regression: `"data": null` is present data (the seed's `JSON.stringify` keeps it), not
/// absent data.
#[tokio::test]
async fn post_with_null_data_delivers_null() {
    let (server, _tokens) = server("post_null_data").await;
    let mut l = listener(&server, &["b"]).await;
    post_ok(&server, r#"{"event":"b","data":null}"#).await;
    assert_eq!(recv_text(&mut l).await, r#"{"type":"event","event":"b","data":null}"#);
    post_ok(&server, r#"{"event":"b"}"#).await;
    assert_eq!(recv_text(&mut l).await, r#"{"type":"event","event":"b"}"#);
}

#[tokio::test]
async fn post_data_over_namespace_limit_is_413() {
    let path = token_file("post_too_large", &format!("{TOKEN}\n"));
    let mut c = config();
    c.event_server.tokens_file = Some(path.to_path_buf());
    c.namespaces.insert(
        "events".to_owned(),
        tether_server::config::NamespaceConfig { max_message_bytes: 16, ..Default::default() },
    );
    let server = start(c).await;
    let auth = format!("Basic {TOKEN}");
    let big = format!(r#"{{"event":"e","data":"{}"}}"#, "x".repeat(64));
    let (status, body) = post(&server, Some(&auth), &big).await;
    assert_eq!(status, 413, "{body}");
    post_ok(&server, r#"{"event":"e","data":"small"}"#).await;
}

/// Regression: the body used to be buffered (up to axum's 2 MiB default, with a plain-text
/// 413) before authentication; now auth comes first and `http.max_body_bytes` applies with
/// a JSON code.
#[tokio::test]
async fn post_body_over_limit_is_413_json_and_auth_comes_first() {
    let path = token_file("post_body_limit", &format!("{TOKEN}\n"));
    let mut c = config();
    c.event_server.tokens_file = Some(path.to_path_buf());
    c.http.max_body_bytes = 256;
    let server = start(c).await;
    let big = format!(r#"{{"event":"e","data":"{}"}}"#, "x".repeat(1000));
    assert_eq!(
        post(&server, Some(&format!("Basic {TOKEN}")), &big).await,
        (413, r#"{"code":"PAYLOAD_TOO_LARGE"}"#.to_owned())
    );
    assert_eq!(post(&server, None, &big).await, (403, r#"{"code":"UNAUTHENTICATED"}"#.to_owned()));
    assert_eq!(server.state.metrics.bytes_in.load(Ordering::Relaxed), 0, "no body was read");
    post_ok(&server, r#"{"event":"e","data":"small"}"#).await;
}

/// Regression: a non-ASCII token (the file is UTF-8) could authenticate over WebSocket but
/// never over HTTP, where the header was required to be visible ASCII.
#[tokio::test]
async fn utf8_tokens_work_over_http_and_websocket() {
    let token = "tökén_ünïcödé_0123";
    let path = token_file("utf8_token", &format!("{token}\n"));
    let server = server_with(&path).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    for (auth, status) in [(format!("Basic {token}"), 200), ("Basic tökén_ünïcödé_9999".to_owned(), 403)]
    {
        let req = hyper::Request::post(format!("http://{}/event", server.addr))
            .header(
                "authorization",
                hyper::header::HeaderValue::from_bytes(auth.as_bytes()).expect("obs-text"),
            )
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(br#"{"event":"e"}"#)))
            .expect("request");
        let resp = tokio::time::timeout(WAIT, client.request(req)).await.expect("reply").expect("http");
        assert_eq!(resp.status(), status, "{auth}");
    }
    let mut ws = ws(&server, "/events").await;
    assert_eq!(init(&mut ws, &init_msg(token, &["e"])).await, INIT_OK);
}

// ---------------------------------------------------------------------------------------
// WebSocket init (seed unit tests 1-3 and the error table)
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn init_non_json_is_invalid_syntax() {
    let (server, _tokens) = server("init_syntax").await;
    let mut ws = ws(&server, "/events").await;
    assert_eq!(init(&mut ws, "non_json").await, init_reply("INVALID_SYNTAX"));
    assert_eq!(init(&mut ws, r#"{"events":["#).await, init_reply("INVALID_SYNTAX"));
}

#[tokio::test]
async fn init_without_events_is_invalid_events_missing() {
    let (server, _tokens) = server("init_missing").await;
    let mut ws = ws(&server, "/events").await;
    for msg in [
        r#"{"foo":"bar"}"#,
        r#"{"foo": "bar"}"#,
        "null",
        "1",
        r#""events""#,
        "[]",
        "{}",
        r#"{"events":null}"#,
        r#"{"events":"the_event"}"#,
        r#"{"events":{"0":"the_event"}}"#,
    ] {
        let reply = init(&mut ws, msg).await;
        assert_eq!(reply, init_reply("INVALID_EVENTS_MISSING"), "init {msg}");
        assert!(!reply.contains("Cannot read"), "no V8-like error text: {reply}");
    }
}

/// Regression: a JSON array used to be read positionally as `[authentication, events]`
/// and register the listener; the seed treats every non-object as having no `events`.
#[tokio::test]
async fn init_array_is_not_an_init_object() {
    let (server, _tokens) = server("init_array").await;
    let mut ws = ws(&server, "/events").await;
    let msg = json!([format!("Basic {TOKEN}"), ["the_event"]]).to_string();
    assert_eq!(init(&mut ws, &msg).await, init_reply("INVALID_EVENTS_MISSING"));
    assert_eq!(server.state.hub.subscriber_count(&channel("events:the_event")), 0);
}

#[tokio::test]
async fn init_with_events_is_ok() {
    let (server, _tokens) = server("init_ok").await;
    let mut ws = ws(&server, "/events").await;
    assert_eq!(init(&mut ws, &init_msg(TOKEN, &["the_event"])).await, INIT_OK);
    assert_eq!(server.state.hub.subscriber_count(&channel("events:the_event")), 1);
}

#[tokio::test]
async fn init_auth_errors() {
    let (server, _tokens) = server("init_auth").await;
    let mut ws = ws(&server, "/events").await;
    let unauth = init_reply("UNAUTHENTICATED");
    assert_eq!(init(&mut ws, r#"{"events":["e"]}"#).await, unauth, "no token");
    assert_eq!(init(&mut ws, &init_msg("short", &["e"])).await, unauth, "short token");
    assert_eq!(init(&mut ws, &init_msg("unknown_token_0123456789", &["e"])).await, unauth, "unknown");
    assert_eq!(init(&mut ws, r#"{"authentication":7,"events":["e"]}"#).await, unauth, "not a string");
    let scheme = init_reply("AUTH_UNRECOGNIZED_SCHEME");
    let msg = json!({"authentication": format!("Bearer {TOKEN}"), "events": ["e"]}).to_string();
    assert_eq!(init(&mut ws, &msg).await, scheme, "Bearer");
    let msg = json!({"authentication": format!("basic {TOKEN}"), "events": ["e"]}).to_string();
    assert_eq!(init(&mut ws, &msg).await, scheme, "basic");
    assert_eq!(server.state.hub.subscriber_count(&channel("events:e")), 0);
}

#[tokio::test]
async fn init_checks_events_before_auth() {
    let (server, _tokens) = server("init_order").await;
    let mut ws = ws(&server, "/events").await;
    let msg = json!({"authentication": "Bearer nope"}).to_string();
    assert_eq!(init(&mut ws, &msg).await, init_reply("INVALID_EVENTS_MISSING"));
}

#[tokio::test]
async fn init_errors_keep_the_socket_open() {
    let (server, _tokens) = server("init_keep_open").await;
    let mut ws = ws(&server, "/events").await;
    assert_eq!(init(&mut ws, "non_json").await, init_reply("INVALID_SYNTAX"));
    assert_eq!(init(&mut ws, r#"{"foo":"bar"}"#).await, init_reply("INVALID_EVENTS_MISSING"));
    assert_eq!(init(&mut ws, "null").await, init_reply("INVALID_EVENTS_MISSING"));
    assert_eq!(init(&mut ws, &init_msg("short", &["e"])).await, init_reply("UNAUTHENTICATED"));
    let msg = json!({"authentication": format!("Bearer {TOKEN}"), "events": ["e"]}).to_string();
    assert_eq!(init(&mut ws, &msg).await, init_reply("AUTH_UNRECOGNIZED_SCHEME"));
    assert_eq!(init(&mut ws, &init_msg(TOKEN, &["e"])).await, INIT_OK);
    post_ok(&server, r#"{"event":"e","data":{"foo":"bar"}}"#).await;
    assert_eq!(recv_text(&mut ws).await, event("e", r#"{"foo":"bar"}"#));
}

#[tokio::test]
async fn init_binary_frame_is_an_init_too() {
    let (server, _tokens) = server("init_binary").await;
    let mut ws = ws(&server, "/events").await;
    let msg = init_msg(TOKEN, &["e"]);
    ws.send(tokio_tungstenite::tungstenite::Message::Binary(msg.into_bytes().into())).await.expect("send");
    assert_eq!(recv_text(&mut ws).await, INIT_OK);
}

// ---------------------------------------------------------------------------------------
// Registration and delivery (seed unit tests 4-7)
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn two_inits_for_overlapping_events_deliver_once() {
    let (server, _tokens) = server("two_inits").await;
    let mut ws = listener(&server, &["the_event", "the_event_1"]).await;
    assert_eq!(init(&mut ws, &init_msg(TOKEN, &["the_event", "the_event_2", "the_event"])).await, INIT_OK);
    assert_eq!(server.state.hub.subscriber_count(&channel("events:the_event")), 1);
    let before = deliveries(&server);
    post_ok(&server, r#"{"event":"the_event","data":1}"#).await;
    assert_eq!(deliveries(&server) - before, 1, "one delivery for one connection");
    // Inits accumulate: both earlier and later events are still registered.
    post_ok(&server, r#"{"event":"the_event_1","data":2}"#).await;
    post_ok(&server, r#"{"event":"the_event_2","data":3}"#).await;
    assert_eq!(recv_text(&mut ws).await, event("the_event", "1"));
    assert_eq!(recv_text(&mut ws).await, event("the_event_1", "2"));
    assert_eq!(recv_text(&mut ws).await, event("the_event_2", "3"));
}

#[tokio::test]
async fn new_listeners_are_appended_and_existing_ones_kept() {
    let (server, _tokens) = server("register").await;
    let mut existing = listener(&server, &["the_event_2"]).await;
    let mut conn = listener(&server, &["the_event_1", "the_event_2"]).await;
    assert_eq!(server.state.hub.subscriber_count(&channel("events:the_event_1")), 1);
    assert_eq!(server.state.hub.subscriber_count(&channel("events:the_event_2")), 2);
    post_ok(&server, r#"{"event":"the_event_2","data":"both"}"#).await;
    post_ok(&server, r#"{"event":"the_event_1","data":"one"}"#).await;
    assert_eq!(recv_text(&mut existing).await, event("the_event_2", r#""both""#));
    assert_eq!(recv_text(&mut conn).await, event("the_event_2", r#""both""#));
    assert_eq!(recv_text(&mut conn).await, event("the_event_1", r#""one""#));
    // `existing` got nothing for the_event_1: its next frame is the next the_event_2.
    post_ok(&server, r#"{"event":"the_event_2","data":"next"}"#).await;
    assert_eq!(recv_text(&mut existing).await, event("the_event_2", r#""next""#));
}

#[tokio::test]
async fn closed_socket_receives_nothing_and_others_still_do() {
    let (server, _tokens) = server("closed").await;
    let mut other = listener(&server, &["the_event_2"]).await;
    let mut conn = listener(&server, &["the_event_1", "the_event_2"]).await;
    conn.close(None).await.expect("close");
    drop(conn);
    let (c1, c2) = (channel("events:the_event_1"), channel("events:the_event_2"));
    eventually("listener removed", || {
        server.state.hub.subscriber_count(&c1) == 0 && server.state.hub.subscriber_count(&c2) == 1
    })
    .await;
    let before = deliveries(&server);
    post_ok(&server, r#"{"event":"the_event_1","data":1}"#).await;
    post_ok(&server, r#"{"event":"the_event_2","data":2}"#).await;
    assert_eq!(deliveries(&server) - before, 1, "only the open listener was sent anything");
    assert_eq!(recv_text(&mut other).await, event("the_event_2", "2"));
}

#[tokio::test]
async fn delivery_is_byte_exact() {
    let (server, _tokens) = server("byte_exact").await;
    let mut ws = listener(&server, &["the_event", "b"]).await;
    post_ok(&server, r#"{"event":"the_event","data":{"foo":"bar"}}"#).await;
    assert_eq!(recv_text(&mut ws).await, r#"{"type":"event","event":"the_event","data":{"foo":"bar"}}"#);
    post_ok(&server, r#"{"event":"b"}"#).await;
    assert_eq!(recv_text(&mut ws).await, r#"{"type":"event","event":"b"}"#);
}

#[tokio::test]
async fn pretty_printed_data_is_delivered_compact() {
    let (server, _tokens) = server("compact").await;
    let mut ws = listener(&server, &["the_event"]).await;
    let body = "{\n  \"event\" : \"the_event\",\n  \"data\" : {\r\n    \"foo\" : \"b a r\",\n\t\"n\" : [ 1, 2 ]\n  }\n}\n";
    post_ok(&server, body).await;
    assert_eq!(
        recv_text(&mut ws).await,
        r#"{"type":"event","event":"the_event","data":{"foo":"b a r","n":[1,2]}}"#
    );
}

#[tokio::test]
async fn subscription_limit_is_all_or_nothing() {
    let path = token_file("sub_limit", &format!("{TOKEN}\n"));
    let mut c = config();
    c.event_server.tokens_file = Some(path.to_path_buf());
    c.limits.max_subscriptions_per_connection = 2;
    let server = start(c).await;
    let mut ws = ws(&server, "/events").await;
    assert_eq!(init(&mut ws, &init_msg(TOKEN, &["a", "b", "c"])).await, init_reply("TOO_MANY_SUBSCRIPTIONS"));
    assert_eq!(server.state.hub.subscription_count(), 0);
    assert_eq!(init(&mut ws, &init_msg(TOKEN, &["a", "b", "a"])).await, INIT_OK);
    assert_eq!(init(&mut ws, &init_msg(TOKEN, &["b"])).await, INIT_OK, "already registered");
    assert_eq!(init(&mut ws, &init_msg(TOKEN, &["c"])).await, init_reply("TOO_MANY_SUBSCRIPTIONS"));
    assert_eq!(server.state.hub.subscription_count(), 2);
}

#[tokio::test]
async fn invalid_event_names_are_refused_at_init() {
    let (server, _tokens) = server("bad_names").await;
    let mut ws = ws(&server, "/events").await;
    for events in [json!(["ok", "a b"]), json!([""]), json!([true]), json!([1.5]), json!([null])] {
        let msg = json!({"authentication": format!("Basic {TOKEN}"), "events": events}).to_string();
        assert_eq!(init(&mut ws, &msg).await, init_reply("INVALID_EVENT_NAME"), "{events}");
    }
    assert_eq!(server.state.hub.subscription_count(), 0);
}

#[tokio::test]
async fn numeric_event_names_use_their_decimal_form() {
    let (server, _tokens) = server("numeric").await;
    let mut ws = ws(&server, "/events").await;
    let msg = json!({"authentication": format!("Basic {TOKEN}"), "events": [42]}).to_string();
    assert_eq!(init(&mut ws, &msg).await, INIT_OK);
    post_ok(&server, r#"{"event":"42","data":true}"#).await;
    assert_eq!(recv_text(&mut ws).await, event("42", "true"));
}

// ---------------------------------------------------------------------------------------
// Token file rules
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn token_lines_under_16_chars_are_ignored() {
    let path = token_file("short_lines", "fifteen_chars_x\nexactly_16_chars\n");
    let server = server_with(&path).await;
    let body = r#"{"event":"e"}"#;
    assert_eq!(post(&server, Some("Basic fifteen_chars_x"), body).await.0, 403);
    assert_eq!(post(&server, Some("Basic exactly_16_chars"), body).await.0, 200);
    let mut ws = ws(&server, "/events").await;
    assert_eq!(init(&mut ws, &init_msg("fifteen_chars_x", &["e"])).await, init_reply("UNAUTHENTICATED"));
    assert_eq!(init(&mut ws, &init_msg("exactly_16_chars", &["e"])).await, INIT_OK);
}

#[tokio::test]
async fn token_file_crlf_and_cr_line_endings() {
    let path = token_file(
        "line_endings",
        "crlf_token_one_0123\r\ncr_token_two_0123456\rlf_token_three_01234\ncrlf_last_token_0123\r\n",
    );
    let server = server_with(&path).await;
    let body = r#"{"event":"e"}"#;
    for t in ["crlf_token_one_0123", "cr_token_two_0123456", "lf_token_three_01234", "crlf_last_token_0123"] {
        assert_eq!(post(&server, Some(&format!("Basic {t}")), body).await.0, 200, "{t}");
        let mut ws = ws(&server, "/events").await;
        assert_eq!(init(&mut ws, &init_msg(t, &["e"])).await, INIT_OK, "{t}");
    }
    // The line ending is never part of the token.
    let mut ws = ws(&server, "/events").await;
    assert_eq!(
        init(&mut ws, &init_msg("crlf_token_one_0123\r", &["e"])).await,
        init_reply("UNAUTHENTICATED")
    );
}

#[tokio::test]
async fn token_trailing_space_is_part_of_the_token() {
    let path = token_file("trailing_space", "trailing_space_token \n");
    let server = server_with(&path).await;
    let mut ws = ws(&server, "/events").await;
    assert_eq!(init(&mut ws, &init_msg("trailing_space_token", &["e"])).await, init_reply("UNAUTHENTICATED"));
    assert_eq!(init(&mut ws, &init_msg("trailing_space_token ", &["e"])).await, INIT_OK);
    assert_eq!(post(&server, Some("Basic trailing_space_token"), r#"{"event":"e"}"#).await.0, 403);
    // HTTP drops trailing whitespace of header values (RFC 9110 OWS), as Node's parser
    // did, so over HTTP such a token can never match.
    assert_eq!(post(&server, Some("Basic trailing_space_token "), r#"{"event":"e"}"#).await.0, 403);
}

#[tokio::test]
async fn token_file_rewritten_while_running() {
    let path = token_file("rewrite", "first_token_0123456\n");
    let server = server_with(&path).await;
    let body = r#"{"event":"e"}"#;
    assert_eq!(post(&server, Some("Basic first_token_0123456"), body).await.0, 200);
    std::fs::write(&path, "second_token_0123456789\n").expect("rewrite");
    assert_eq!(post(&server, Some("Basic second_token_0123456789"), body).await.0, 200, "new token");
    assert_eq!(post(&server, Some("Basic first_token_0123456"), body).await.0, 403, "removed token");
    let mut ws = ws(&server, "/events").await;
    assert_eq!(init(&mut ws, &init_msg("first_token_0123456", &["e"])).await, init_reply("UNAUTHENTICATED"));
    assert_eq!(init(&mut ws, &init_msg("second_token_0123456789", &["e"])).await, INIT_OK);
    // Removing the file rejects everything; restoring it accepts again.
    std::fs::remove_file(&path).expect("remove");
    assert_eq!(post(&server, Some("Basic second_token_0123456789"), body).await.0, 403);
    std::fs::write(&path, "second_token_0123456789\n").expect("restore");
    assert_eq!(post(&server, Some("Basic second_token_0123456789"), body).await.0, 200);
}

/// Regression: the cache was keyed on size, mtime and inode, and file timestamps are
/// coarse (one kernel tick), so an in-place rewrite of the same size within one tick — or
/// one that restores the mtime — kept serving the old tokens.
#[tokio::test]
async fn token_file_rewritten_in_place_with_same_size_and_mtime() {
    let path = token_file("rewrite_same_size", "aaaaaaaaaaaaaaaaaaaa\n");
    let server = server_with(&path).await;
    let body = r#"{"event":"e"}"#;
    let mtime = SystemTime::now() - Duration::from_secs(3600);
    let set_mtime = |p: &Path| {
        std::fs::File::options().write(true).open(p).expect("open").set_modified(mtime).expect("mtime");
    };
    set_mtime(&path);
    assert_eq!(post(&server, Some("Basic aaaaaaaaaaaaaaaaaaaa"), body).await.0, 200);
    for round in 0..5 {
        let (old, new) = if round % 2 == 0 {
            ("aaaaaaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbbbbbb")
        } else {
            ("bbbbbbbbbbbbbbbbbbbb", "aaaaaaaaaaaaaaaaaaaa")
        };
        std::fs::write(&path, format!("{new}\n")).expect("rewrite in place");
        set_mtime(&path);
        assert_eq!(post(&server, Some(&format!("Basic {new}")), body).await.0, 200, "round {round}: new");
        assert_eq!(post(&server, Some(&format!("Basic {old}")), body).await.0, 403, "round {round}: old");
    }
}

// ---------------------------------------------------------------------------------------
// Cross-dialect
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn api_publish_reaches_event_listeners() {
    let (server, _tokens) = server("api_to_events").await;
    let mut ws = listener(&server, &["the_event"]).await;
    let (s, b) = api(&server, "/api/publish", r#"{"channel":"events:the_event","data":{"foo":"bar"}}"#).await;
    assert_eq!((s, b.as_str()), (200, "{}"));
    assert_eq!(recv_text(&mut ws).await, r#"{"type":"event","event":"the_event","data":{"foo":"bar"}}"#);
}

/// A server with an event-server token file and a static native token.
async fn bridged_server(name: &str) -> (RunningServer, Tokens) {
    let path = token_file(name, &format!("{TOKEN}\n"));
    let mut c = config();
    c.event_server.tokens_file = Some(path.to_path_buf());
    c.auth.tokens.push(TokenIdentity {
        token: NATIVE_TOKEN.to_owned(),
        user: Some("u".into()),
        device: None,
        zone: None,
    });
    (start(c).await, path)
}

#[tokio::test]
async fn post_event_reaches_native_subscriber() {
    let (server, _tokens) = bridged_server("events_to_native").await;
    let mut n = ws(&server, "/ws").await;
    let r = request(&mut n, 1, json!({"op":"connect","token":NATIVE_TOKEN})).await;
    assert!(r.get("result").is_some(), "{r}");
    let r = request(&mut n, 2, json!({"op":"subscribe","channel":"events:the_event"})).await;
    assert_eq!(r["result"], json!({}), "{r}");
    post_ok(&server, r#"{"event":"the_event","data":{"foo":"bar"}}"#).await;
    assert_eq!(
        recv_text(&mut n).await,
        r#"{"push":"pub","channel":"events:the_event","data":{"foo":"bar"}}"#
    );
    post_ok(&server, r#"{"event":"the_event"}"#).await;
    assert_eq!(recv_text(&mut n).await, r#"{"push":"pub","channel":"events:the_event"}"#);
}

#[tokio::test]
async fn anonymous_native_subscribe_to_events_is_denied() {
    let (server, _tokens) = bridged_server("anon_native").await;
    let mut n = native(&server).await;
    let r = request(&mut n, 2, json!({"op":"subscribe","channel":"events:x"})).await;
    assert_eq!(r["error"]["code"], "unauthenticated", "{r}");
    assert_eq!(server.state.hub.subscriber_count(&channel("events:x")), 0);
}
