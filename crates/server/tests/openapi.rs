//! `docs/openapi.json` against the real server.
//!
//! Every request goes to a running server (or, for the one state a fresh socket cannot reach,
//! to the real router), and every response is checked against the document: its status must be
//! documented for that path and method, its media type must be one the document lists, its
//! headers must match the documented ones, and its body must validate against the documented
//! schema (with `$ref`s resolved inside the document). Request bodies are checked against the
//! documented request schema too, both ways: accepted requests must validate, and requests the
//! server rejects for their shape must not. The test fails if any documented response (path,
//! method, status, media type) is never produced, and if the `Error` schema's code enum and
//! `tether_proto::ErrorCode::ALL` differ.

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use common::*;
use futures_util::SinkExt;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tether_server::config::NamespaceConfig;
use tether_server::{Config, RunningServer};
use tokio_tungstenite::tungstenite::Message;

/// The document under test, as the server also serves it.
const DOC: &str = include_str!("../../../docs/openapi.json");

/// A token for the event-server token file (at least 16 characters).
const EVENT_TOKEN: &str = "openapi-event-token-0123456789";

/// One documented response: path (`*` for the router's fallbacks), method, status, media type
/// (`-` when the response has no body).
type Key = (String, String, String, String);

/// A response as the test saw it.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: hyper::HeaderMap,
    body: String,
}

impl Reply {
    fn content_type(&self) -> Option<&str> {
        self.headers.get(hyper::header::CONTENT_TYPE).and_then(|v| v.to_str().ok())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// The `code` of an error body.
    fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_else(|| panic!("no code in {:?}", self.body)).to_owned()
    }
}

/// Escapes one JSON-pointer segment (RFC 6901).
fn esc(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// Reads a JSON pointer from the document, panicking with the pointer if it is missing.
fn at<'a>(doc: &'a Value, pointer: &str) -> &'a Value {
    doc.pointer(pointer).unwrap_or_else(|| panic!("docs/openapi.json has nothing at #{pointer}"))
}

/// The document, compiled validators, and the responses seen so far.
struct Spec {
    doc: Value,
    validators: HashMap<String, jsonschema::Validator>,
    seen: BTreeSet<Key>,
}

impl Spec {
    fn new() -> Self {
        let doc: Value = serde_json::from_str(DOC).expect("docs/openapi.json is JSON");
        assert_eq!(doc["openapi"], "3.1.0", "OpenAPI version");
        Self { doc, validators: HashMap::new(), seen: BTreeSet::new() }
    }

    /// A validator for the schema at `pointer`. The schema is compiled as a `$ref` from the
    /// whole document, so every `#/components/...` reference inside it resolves.
    fn validator(&mut self, pointer: &str) -> &jsonschema::Validator {
        if !self.validators.contains_key(pointer) {
            at(&self.doc, pointer);
            let mut root = self.doc.clone();
            root["$ref"] = Value::String(format!("#{pointer}"));
            let v = jsonschema::options()
                .build(&root)
                .unwrap_or_else(|e| panic!("schema at #{pointer} does not compile: {e}"));
            self.validators.insert(pointer.to_owned(), v);
        }
        &self.validators[pointer]
    }

    /// Validation errors of `instance` against the schema at `pointer` (empty if valid).
    fn errors(&mut self, pointer: &str, instance: &Value) -> Vec<String> {
        self.validator(pointer)
            .iter_errors(instance)
            .map(|e| {
                let at = e.instance_path();
                format!("{e} at {at}")
            })
            .collect()
    }

    fn assert_valid(&mut self, pointer: &str, instance: &Value, what: &str) {
        let errors = self.errors(pointer, instance);
        assert!(errors.is_empty(), "{what}: {instance} does not match #{pointer}: {errors:#?}");
    }

    /// Checks a response to `method path` against the document and records it as seen.
    fn check(&mut self, path: &str, method: &str, reply: &Reply) {
        let op = format!("/paths/{}/{method}", esc(path));
        at(&self.doc, &op);
        let pointer = format!("{op}/responses/{}", reply.status);
        assert!(
            self.doc.pointer(&pointer).is_some(),
            "{method} {path} answered {} which the document does not list: {:?}",
            reply.status,
            reply.body
        );
        self.check_response(path, method, &pointer, reply);
    }

    /// Checks a response of the router's fallbacks against `#/components/responses/{name}`.
    fn check_fallback(&mut self, name: &str, status: u16, reply: &Reply) {
        assert_eq!(reply.status, status, "{name}: {reply:?}");
        let pointer = format!("/components/responses/{name}");
        self.check_response("*", "*", &pointer, reply);
    }

    fn check_response(&mut self, path: &str, method: &str, pointer: &str, reply: &Reply) {
        let mut pointer = pointer.to_owned();
        if let Some(r) = at(&self.doc, &pointer).get("$ref").and_then(Value::as_str) {
            pointer = r.strip_prefix('#').expect("local $ref").to_owned();
        }
        let response = at(&self.doc, &pointer).clone();
        let what = format!("{method} {path} {}", reply.status);
        if let Some(headers) = response.get("headers").and_then(Value::as_object) {
            for (name, h) in headers {
                let value =
                    reply.headers.get(name.as_str()).unwrap_or_else(|| panic!("{what}: no {name} header"));
                let value = Value::String(value.to_str().expect("ASCII header").to_owned());
                if h.get("schema").is_some() {
                    self.assert_valid(&format!("{pointer}/headers/{}/schema", esc(name)), &value, &what);
                }
            }
        }
        let media = match response.get("content").and_then(Value::as_object) {
            None => {
                assert!(reply.body.is_empty(), "{what}: undocumented body {:?}", reply.body);
                "-".to_owned()
            }
            Some(content) => {
                let ct = reply.content_type().unwrap_or_else(|| panic!("{what}: no content type"));
                let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
                assert!(content.contains_key(&essence), "{what}: content type {ct} is not documented");
                let schema = format!("{pointer}/content/{}/schema", esc(&essence));
                let instance = if essence == "application/json" {
                    reply.json()
                } else {
                    Value::String(reply.body.clone())
                };
                if self.doc.pointer(&schema).is_some() {
                    self.assert_valid(&schema, &instance, &what);
                }
                essence
            }
        };
        self.seen.insert((path.to_owned(), method.to_owned(), reply.status.to_string(), media));
    }

    /// Checks a request body against the documented request schema of `method path`.
    fn check_request(&mut self, path: &str, method: &str, body: &str, expect_valid: bool) {
        let pointer = format!("/paths/{}/{method}/requestBody/content/application~1json/schema", esc(path));
        let instance: Value = serde_json::from_str(body).expect("request body is JSON");
        let errors = self.errors(&pointer, &instance);
        if expect_valid {
            assert!(
                errors.is_empty(),
                "{method} {path}: accepted request {body} fails its schema: {errors:#?}"
            );
        } else {
            assert!(!errors.is_empty(), "{method} {path}: rejected request {body} passes its schema");
        }
    }

    /// Every response the document declares, including the fallbacks.
    fn documented(&self) -> BTreeSet<Key> {
        let mut all = BTreeSet::new();
        let media_of = |response: &Value| -> Vec<String> {
            let response = match response.get("$ref").and_then(Value::as_str) {
                Some(r) => at(&self.doc, r.strip_prefix('#').expect("local $ref")),
                None => response,
            };
            match response.get("content").and_then(Value::as_object) {
                Some(c) => c.keys().cloned().collect(),
                None => vec!["-".to_owned()],
            }
        };
        for (path, item) in self.doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                for (status, response) in op["responses"].as_object().expect("responses") {
                    for media in media_of(response) {
                        all.insert((path.clone(), method.clone(), status.clone(), media));
                    }
                }
            }
        }
        for (name, status) in [("NotFound", "404"), ("MethodNotAllowed", "405")] {
            for media in media_of(&self.doc["components"]["responses"][name]) {
                all.insert(("*".to_owned(), "*".to_owned(), status.to_owned(), media));
            }
        }
        all
    }
}

/// Sends one HTTP request and reads the whole response.
async fn send(
    server: &RunningServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let resp = open(server, method, path, headers, body).await;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = tokio::time::timeout(WAIT, resp.into_body().collect())
        .await
        .expect("body within WAIT")
        .expect("body")
        .to_bytes();
    Reply { status, headers, body: String::from_utf8(bytes.to_vec()).expect("UTF-8 body") }
}

/// Sends one HTTP request and returns the response with its body unread (for streams).
async fn open(
    server: &RunningServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> hyper::Response<hyper::body::Incoming> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let mut req = hyper::Request::builder().method(method).uri(format!("http://{}{path}", server.addr));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(http_body_util::Full::new(bytes::Bytes::from(body.to_owned()))).expect("request");
    tokio::time::timeout(WAIT, client.request(req)).await.expect("reply within WAIT").expect("http")
}

const JSON: (&str, &str) = ("content-type", "application/json");
const UPGRADE: [(&str, &str); 4] = [
    ("connection", "upgrade"),
    ("upgrade", "websocket"),
    ("sec-websocket-version", "13"),
    ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
];

fn bearer() -> String {
    format!("Bearer {API_KEY}")
}

/// POST to an API route with the test key and a JSON content type.
async fn post_api(server: &RunningServer, path: &str, body: &str) -> Reply {
    send(server, "POST", path, &[("authorization", &bearer()), JSON], body).await
}

/// The limits the API cases rely on.
const MAX_BODY: usize = 128 * 1024;
const MAX_ITEMS: usize = 3;

fn token_file() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tether-openapi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("event-tokens");
    std::fs::write(&path, format!("short\n{EVENT_TOKEN}\n")).expect("token file");
    path
}

/// The main server: small body and batch limits, a one-subscriber namespace, a token file.
fn main_config(tokens: PathBuf) -> Config {
    let mut c = config();
    c.http.max_body_bytes = MAX_BODY;
    c.http.max_batch_items = MAX_ITEMS;
    c.namespaces
        .insert("tiny".to_owned(), NamespaceConfig { max_subscribers: 1, ..NamespaceConfig::default() });
    c.event_server.tokens_file = Some(tokens);
    c
}

/// Publication-shaped bodies, wrapped for each API route.
fn wrap(path: &str, publication: &str) -> String {
    match path {
        "/api/publish" => publication.to_owned(),
        "/api/broadcast" => {
            // The same payload, with the single channel as a one-element list.
            let mut v: Value = serde_json::from_str(publication).expect("case is JSON");
            let obj = v.as_object_mut().expect("case is an object");
            if let Some(ch) = obj.remove("channel") {
                obj.insert("channels".to_owned(), Value::Array(vec![ch]));
            }
            v.to_string()
        }
        "/api/batch" => format!(r#"{{"publications":[{publication}]}}"#),
        other => panic!("not an API route: {other}"),
    }
}

async fn api_routes(spec: &mut Spec, server: &RunningServer) {
    let big = "x".repeat(70_000);
    for path in ["/api/publish", "/api/broadcast", "/api/batch"] {
        // 200, with every optional field, and with the optional fields null.
        for case in [
            r#"{"channel":"news","data":{"n":[1, 2]},"tags":{"kind":"news","region":"eu"},"to":{"users":["u1"],"zones":["eu"]}}"#,
            r#"{"channel":"chat:lobby","data":null,"tags":null,"to":null}"#,
        ] {
            let body = wrap(path, case);
            let r = post_api(server, path, &body).await;
            assert_eq!(r.status, 200, "{path} {body}: {r:?}");
            spec.check(path, "post", &r);
            spec.check_request(path, "post", &body, true);
            if path != "/api/publish" {
                assert_eq!(r.json(), json!({"results": [{}]}), "one result per item");
            }
        }
        // 400: (publication, expected code, does the request schema accept it?)
        let cases: [(&str, &str, bool); 10] = [
            (r#"{"channel":"news","data":1,"extra":1}"#, "invalid_message", false),
            (r#"{"channel":"news"}"#, "invalid_message", false),
            (r#"{"channel":1,"data":1}"#, "invalid_message", false),
            (r#"{"channel":"a b","data":1}"#, "invalid_channel", false),
            (r#"{"channel":"news:","data":1}"#, "invalid_channel", false),
            (r#"{"channel":"news","data":1,"tags":{"k":1}}"#, "invalid_tags", false),
            (r#"{"channel":"news","data":1,"tags":{"a b":"x"}}"#, "invalid_tags", false),
            (r#"{"channel":"news","data":1,"to":{"users":[""]}}"#, "invalid_target", false),
            (r#"{"channel":"news","data":1,"to":{"groups":["g"]}}"#, "invalid_target", false),
            (r#"{"channel":"nope:x","data":1}"#, "unknown_namespace", true),
        ];
        for (case, code, schema_accepts) in cases {
            let body = wrap(path, case);
            let r = post_api(server, path, &body).await;
            assert_eq!((r.status, r.code().as_str()), (400, code), "{path} {body}: {r:?}");
            spec.check(path, "post", &r);
            spec.check_request(path, "post", &body, schema_accepts);
        }
        let r = post_api(server, path, r#"{"channel":"news","#).await;
        assert_eq!((r.status, r.code().as_str()), (400, "malformed_json"), "{path}: {r:?}");
        spec.check(path, "post", &r);
        // Unknown top-level field of the request (for broadcast and batch, outside the item).
        let body = match path {
            "/api/publish" => r#"{"channel":"news","data":1,"channels":[]}"#.to_owned(),
            "/api/broadcast" => r#"{"channels":["news"],"data":1,"publications":[]}"#.to_owned(),
            _ => r#"{"publications":[],"channels":[]}"#.to_owned(),
        };
        let r = post_api(server, path, &body).await;
        assert_eq!((r.status, r.code().as_str()), (400, "invalid_message"), "{path} {body}: {r:?}");
        spec.check(path, "post", &r);
        spec.check_request(path, "post", &body, false);

        // 401: no header, another scheme, an unknown key.
        for auth in [None, Some(format!("Basic {API_KEY}")), Some("Bearer not-the-key-0123456789".to_owned())]
        {
            let mut headers = vec![JSON];
            if let Some(a) = &auth {
                headers.push(("authorization", a));
            }
            let r = send(server, "POST", path, &headers, &wrap(path, r#"{"channel":"news","data":1}"#)).await;
            assert_eq!((r.status, r.code().as_str()), (401, "unauthenticated"), "{path} {auth:?}: {r:?}");
            spec.check(path, "post", &r);
        }

        // 413: the body over http.max_body_bytes; data over the namespace's max_message_bytes.
        let huge = format!(r#"{{"channel":"news","data":"{}"}}"#, "x".repeat(MAX_BODY + 1));
        let r = post_api(server, path, &wrap(path, &huge)).await;
        assert_eq!((r.status, r.code().as_str()), (413, "payload_too_large"), "{path}");
        spec.check(path, "post", &r);
        let body = wrap(path, &format!(r#"{{"channel":"news","data":"{big}"}}"#));
        let r = post_api(server, path, &body).await;
        assert_eq!((r.status, r.code().as_str()), (413, "message_too_large"), "{path}");
        spec.check(path, "post", &r);
        spec.check_request(path, "post", &body, true);

        // 415: a content type other than JSON.
        let r = send(
            server,
            "POST",
            path,
            &[("authorization", &bearer()), ("content-type", "text/plain")],
            &wrap(path, r#"{"channel":"news","data":1}"#),
        )
        .await;
        assert_eq!((r.status, r.code().as_str()), (415, "unsupported_media_type"), "{path}");
        spec.check(path, "post", &r);
        // JSON with parameters, and no content type at all, are accepted.
        for headers in [
            vec![("authorization", bearer()), ("content-type", "application/json; charset=utf-8".to_owned())],
            vec![("authorization", bearer())],
        ] {
            let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let r = send(server, "POST", path, &headers, &wrap(path, r#"{"channel":"news","data":1}"#)).await;
            assert_eq!(r.status, 200, "{path} {headers:?}: {r:?}");
            spec.check(path, "post", &r);
        }
    }

    // too_many_items: more channels or publications than http.max_batch_items.
    let channels: Vec<String> = (0..=MAX_ITEMS).map(|i| format!("\"c{i}\"")).collect();
    let body = format!(r#"{{"channels":[{}],"data":1}}"#, channels.join(","));
    let r = post_api(server, "/api/broadcast", &body).await;
    assert_eq!((r.status, r.code().as_str()), (400, "too_many_items"), "{r:?}");
    spec.check("/api/broadcast", "post", &r);
    spec.check_request("/api/broadcast", "post", &body, true);
    let items: Vec<&str> = (0..=MAX_ITEMS).map(|_| r#"{"channel":"news","data":1}"#).collect();
    let body = format!(r#"{{"publications":[{}]}}"#, items.join(","));
    let r = post_api(server, "/api/batch", &body).await;
    assert_eq!((r.status, r.code().as_str()), (400, "too_many_items"), "{r:?}");
    spec.check("/api/batch", "post", &r);
    spec.check_request("/api/batch", "post", &body, true);

    // Many items: one result each, in order.
    let body = r#"{"channels":["a","b","chat:c"],"data":{"n":1}}"#;
    let r = post_api(server, "/api/broadcast", body).await;
    assert_eq!(r.json(), json!({"results": [{}, {}, {}]}));
    spec.check("/api/broadcast", "post", &r);
    spec.check_request("/api/broadcast", "post", body, true);
    // An invalid item rejects the whole batch, with its index in the message.
    let body = r#"{"publications":[{"channel":"a","data":1},{"channel":"nope:b","data":2}]}"#;
    let r = post_api(server, "/api/batch", body).await;
    assert_eq!((r.status, r.code().as_str()), (400, "unknown_namespace"));
    assert!(r.json()["message"].as_str().unwrap_or("").starts_with("publications[1]: "), "{r:?}");
    spec.check("/api/batch", "post", &r);
}

async fn operations(spec: &mut Spec, server: &RunningServer) {
    let r = send(server, "GET", "/api/openapi.json", &[], "").await;
    assert_eq!(r.status, 200);
    let served: Value = r.json();
    assert_eq!(served, spec.doc, "/api/openapi.json serves docs/openapi.json");
    spec.check("/api/openapi.json", "get", &r);

    let r = send(server, "GET", "/healthz", &[], "").await;
    assert_eq!(r.json(), json!({"status": "ok"}));
    spec.check("/healthz", "get", &r);

    let r = send(server, "GET", "/readyz", &[], "").await;
    assert_eq!(r.json(), json!({"status": "ready"}));
    spec.check("/readyz", "get", &r);

    let r = send(server, "GET", "/metrics", &[], "").await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("# TYPE tether_errors_total counter"), "{}", r.body);
    spec.check("/metrics", "get", &r);

    // Fallbacks: unknown routes and wrong methods.
    for path in ["/nope", "/api", "/api/publish/extra"] {
        let r = send(server, "GET", path, &[], "").await;
        assert_eq!(r.code(), "not_found");
        spec.check_fallback("NotFound", 404, &r);
    }
    for (method, path) in
        [("GET", "/api/publish"), ("PUT", "/api/batch"), ("POST", "/healthz"), ("POST", "/ws")]
    {
        let r = send(server, method, path, &[JSON], "{}").await;
        assert_eq!(r.code(), "method_not_allowed", "{method} {path}");
        spec.check_fallback("MethodNotAllowed", 405, &r);
    }
}

/// `/readyz` during shutdown. A server that is shutting down no longer accepts connections,
/// so this one state is checked through the real router with its shutdown token cancelled.
async fn readyz_shutting_down(spec: &mut Spec) {
    use tower::ServiceExt as _;
    let state = Arc::new(
        tether_server::build_state(config(), &HashSet::new(), tether_server::Clock::system()).unwrap(),
    );
    state.shutdown.cancel();
    let req = axum::http::Request::get("/readyz").body(axum::body::Body::empty()).expect("request");
    let resp = tether_server::app::router(state).oneshot(req).await.expect("router answers");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let r = Reply { status, headers, body: String::from_utf8(bytes.to_vec()).expect("UTF-8") };
    assert_eq!((r.status, r.json()), (503, json!({"status": "shutting_down"})));
    spec.check("/readyz", "get", &r);
}

/// Records a WebSocket handshake's 101 response.
fn upgraded(spec: &mut Spec, path: &str, resp: &tokio_tungstenite::tungstenite::handshake::client::Response) {
    let r = Reply { status: resp.status().as_u16(), headers: hyper::HeaderMap::new(), body: String::new() };
    assert_eq!(r.status, 101);
    spec.check(path, "get", &r);
}

async fn websockets(spec: &mut Spec, server: &RunningServer) {
    // /ws: 101, then a working session.
    let (mut ws, resp) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws", server.addr)).await.expect("ws connects");
    upgraded(spec, "/ws", &resp);
    ws.send(Message::Text(r#"{"id":1,"op":"connect"}"#.into())).await.expect("send");
    assert_eq!(recv_json(&mut ws).await["result"]["version"], "1");
    ws.close(None).await.expect("close");

    // /events: 101, an init reply and a delivery that match their component schemas.
    let (mut ev, resp) = tokio_tungstenite::connect_async(format!("ws://{}/events", server.addr))
        .await
        .expect("events connects");
    upgraded(spec, "/events", &resp);
    let init = json!({"authentication": format!("Basic {EVENT_TOKEN}"), "events": ["shipped"]});
    spec.assert_valid("/components/schemas/EventsInit", &init, "init message");
    ev.send(Message::Text(init.to_string().into())).await.expect("send");
    let reply = recv_json(&mut ev).await;
    assert_eq!(reply, json!({"type": "init", "code": "OK"}));
    spec.assert_valid("/components/schemas/EventsInitReply", &reply, "init reply");
    ev.send(Message::Text("not json".into())).await.expect("send");
    let reply = recv_json(&mut ev).await;
    assert_eq!(reply["code"], "INVALID_SYNTAX");
    spec.assert_valid("/components/schemas/EventsInitReply", &reply, "init reply");
    let body = r#"{"event":"shipped","data":{"order": 1}}"#;
    let auth = format!("Basic {EVENT_TOKEN}");
    let r = send(server, "POST", "/event", &[("authorization", &auth)], body).await;
    assert_eq!(r.json(), json!({"code": "OK"}));
    spec.check("/event", "post", &r);
    spec.check_request("/event", "post", body, true);
    let delivery = recv_json(&mut ev).await;
    assert_eq!(delivery, json!({"type": "event", "event": "shipped", "data": {"order": 1}}));
    spec.assert_valid("/components/schemas/EventsDelivery", &delivery, "delivery");
    ev.close(None).await.expect("close");

    // 400: not a WebSocket upgrade (a JSON error, like every other rejection).
    for path in ["/ws", "/events"] {
        let r = send(server, "GET", path, &[], "").await;
        assert_eq!(r.status, 400, "{path}: {r:?}");
        spec.check(path, "get", &r);
    }
}

async fn event_route(spec: &mut Spec, server: &RunningServer) {
    let auth = format!("Basic {EVENT_TOKEN}");
    // 400 INVALID_BODY: no event, a non-string event, a name outside the channel grammar, not JSON.
    for (body, schema_accepts) in [
        (r#"{"data":1}"#, Some(false)),
        (r#"{"event":1}"#, Some(false)),
        (r#"{"event":"a b"}"#, None),
        ("nope", None),
    ] {
        let r = send(server, "POST", "/event", &[("authorization", &auth)], body).await;
        assert_eq!((r.status, r.json()), (400, json!({"code": "INVALID_BODY"})), "{body}");
        spec.check("/event", "post", &r);
        if let Some(ok) = schema_accepts {
            spec.check_request("/event", "post", body, ok);
        }
    }
    // 403: no header, a short token, an unknown token, another scheme.
    let cases = [
        (None, "UNAUTHENTICATED"),
        (Some("Basic short".to_owned()), "UNAUTHENTICATED"),
        (Some("Basic unknown-token-0123456789".to_owned()), "UNAUTHENTICATED"),
        (Some(format!("basic {EVENT_TOKEN}")), "AUTH_UNRECOGNIZED_SCHEME"),
        (Some(format!("Bearer {EVENT_TOKEN}")), "AUTH_UNRECOGNIZED_SCHEME"),
    ];
    for (header, code) in cases {
        let headers: Vec<(&str, &str)> = header.iter().map(|h| ("authorization", h.as_str())).collect();
        let r = send(server, "POST", "/event", &headers, r#"{"event":"x"}"#).await;
        assert_eq!((r.status, r.json()), (403, json!({"code": code})), "{header:?}");
        spec.check("/event", "post", &r);
    }
    // 413: data over the namespace's max_message_bytes; a body over http.max_body_bytes.
    for len in [70_000, MAX_BODY + 1] {
        let body = format!(r#"{{"event":"x","data":"{}"}}"#, "x".repeat(len));
        let r = send(server, "POST", "/event", &[("authorization", &auth)], &body).await;
        assert_eq!((r.status, r.json()), (413, json!({"code": "PAYLOAD_TOO_LARGE"})), "data of {len} bytes");
        spec.check("/event", "post", &r);
        spec.check_request("/event", "post", &body, true);
    }
    // "data": null is data, delivered as such; only an absent field is omitted.
    let body = r#"{"event":"x","data":null}"#;
    let r = send(server, "POST", "/event", &[("authorization", &auth)], body).await;
    assert_eq!((r.status, r.json()), (200, json!({"code": "OK"})));
    spec.check("/event", "post", &r);
    spec.check_request("/event", "post", body, true);
}

async fn sse(spec: &mut Spec, server: &RunningServer) {
    // 200: the stream opens with ": subscribed", then carries the native push.
    let resp = open(server, "GET", "/sse?channel=news&filter=kind%3Dnews", &[], "").await;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let mut body = resp.into_body();
    let mut text = String::new();
    let mut published = false;
    while !text.contains("\ndata: ") || !text.ends_with("\n\n") {
        let frame = tokio::time::timeout(WAIT, body.frame())
            .await
            .expect("SSE chunk within WAIT")
            .expect("open")
            .expect("ok");
        if let Ok(data) = frame.into_data() {
            text.push_str(std::str::from_utf8(&data).expect("UTF-8"));
        }
        if text.starts_with(": subscribed\n\n") && !published {
            published = true;
            let r = post_api(
                server,
                "/api/publish",
                r#"{"channel":"news","data":{"a":1},"tags":{"kind":"news"}}"#,
            )
            .await;
            assert_eq!(r.status, 200);
        }
    }
    assert_eq!(
        text,
        ": subscribed\n\ndata: {\"push\":\"pub\",\"channel\":\"news\",\"data\":{\"a\":1},\"tags\":{\"kind\":\"news\"}}\n\n"
    );
    let r = Reply { status, headers, body: text };
    assert_eq!(r.headers.get("x-accel-buffering").map(|v| v.as_bytes()), Some(&b"no"[..]));
    spec.check("/sse", "get", &r);
    drop(body);

    // Errors before the stream starts.
    let _full = open(server, "GET", "/sse?channel=tiny:x", &[], "").await;
    let cases = [
        ("/sse", 400, "invalid_message"),
        ("/sse?channel=news&x=1", 400, "invalid_message"),
        ("/sse?channel=a%20b", 400, "invalid_channel"),
        ("/sse?channel=news&filter=((", 400, "invalid_filter"),
        ("/sse?channel=nope:x", 400, "unknown_namespace"),
        ("/sse?channel=tiny:x", 400, "channel_full"),
        ("/sse?channel=news&token=unknown-token-0123456789", 401, "unauthenticated"),
        ("/sse?channel=events:x", 403, "permission_denied"),
    ];
    for (path, status, code) in cases {
        let r = send(server, "GET", path, &[], "").await;
        assert_eq!((r.status, r.code().as_str()), (status, code), "{path}");
        spec.check("/sse", "get", &r);
    }
}

/// A server that accepts no connection: every upgrade endpoint answers 503.
async fn connection_limits(spec: &mut Spec) {
    let mut c = config();
    c.limits.max_connections = 0;
    let server = start(c).await;
    for path in ["/ws", "/events"] {
        let r = send(&server, "GET", path, &UPGRADE, "").await;
        assert_eq!((r.status, r.code().as_str()), (503, "too_many_connections"), "{path}");
        spec.check(path, "get", &r);
    }
    let r = send(&server, "GET", "/sse?channel=news", &[], "").await;
    assert_eq!((r.status, r.code().as_str()), (503, "too_many_connections"));
    spec.check("/sse", "get", &r);
    server.shutdown().await.expect("shutdown");
}

/// With the event-server dialect off, its routes are unknown.
async fn event_server_disabled(spec: &mut Spec) {
    let mut c = config();
    c.event_server.enabled = false;
    let server = start(c).await;
    let r =
        send(&server, "POST", "/event", &[("authorization", &format!("Basic {EVENT_TOKEN}"))], "{}").await;
    assert_eq!((r.status, r.code().as_str()), (404, "not_found"));
    spec.check("/event", "post", &r);
    let r = send(&server, "GET", "/events", &UPGRADE, "").await;
    assert_eq!((r.status, r.code().as_str()), (404, "not_found"));
    spec.check("/events", "get", &r);
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn every_documented_response_is_real_and_matches_its_schema() {
    let mut spec = Spec::new();
    // The validator really validates: a sanity check before trusting it.
    assert!(!spec.errors("/components/schemas/Error", &json!({"code": "nope", "message": "x"})).is_empty());
    assert!(!spec.errors("/components/schemas/Error", &json!({"code": "internal"})).is_empty());
    assert!(!spec.errors("/components/schemas/Channel", &json!("a b")).is_empty());

    let server = start(main_config(token_file())).await;
    api_routes(&mut spec, &server).await;
    operations(&mut spec, &server).await;
    websockets(&mut spec, &server).await;
    event_route(&mut spec, &server).await;
    sse(&mut spec, &server).await;
    server.shutdown().await.expect("shutdown");
    readyz_shutting_down(&mut spec).await;
    connection_limits(&mut spec).await;
    event_server_disabled(&mut spec).await;

    let documented = spec.documented();
    let never: Vec<&Key> = documented.difference(&spec.seen).collect();
    assert!(never.is_empty(), "documented responses never exercised: {never:#?}");
    let undocumented: Vec<&Key> = spec.seen.difference(&documented).collect();
    assert!(undocumented.is_empty(), "responses seen but not documented: {undocumented:#?}");
}

#[test]
fn error_schema_lists_exactly_the_error_codes() {
    let doc: Value = serde_json::from_str(DOC).expect("docs/openapi.json is JSON");
    let listed: BTreeSet<&str> = at(&doc, "/components/schemas/Error/properties/code/enum")
        .as_array()
        .expect("enum")
        .iter()
        .map(|v| v.as_str().expect("string code"))
        .collect();
    let codes: BTreeSet<&str> = tether_proto::ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    let missing: Vec<&&str> = codes.difference(&listed).collect();
    assert!(missing.is_empty(), "error codes missing from the Error schema: {missing:?}");
    let extra: Vec<&&str> = listed.difference(&codes).collect();
    assert!(extra.is_empty(), "Error schema lists codes the server does not have: {extra:?}");
}

#[test]
fn every_ref_resolves() {
    fn walk(v: &Value, refs: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    refs.push(r.clone());
                }
                m.values().for_each(|x| walk(x, refs));
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, refs)),
            _ => {}
        }
    }
    let doc: Value = serde_json::from_str(DOC).expect("docs/openapi.json is JSON");
    let mut refs = Vec::new();
    walk(&doc, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("non-local $ref {r}"));
        at(&doc, pointer);
    }
}
