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
//!
//! Configurations that exclude each other get their own server: accounts off, registration
//! closed, tight rate limits, and a database whose tables are dropped under the running server
//! (the only way to a real `500 internal`). Sessions and JWTs expire on a manual clock, never
//! by sleeping.

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use common::*;
use futures_util::SinkExt;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tether_server::auth::jwt::{JwtConfig, MintClaims};
use tether_server::config::{NamespaceConfig, TokenIdentity};
use tether_server::{Clock, Config, RunningServer};
use tokio_tungstenite::tungstenite::Message;

/// The document under test, as the server also serves it.
const DOC: &str = include_str!("../../../docs/openapi.json");

/// A token for the event-server token file (at least 16 characters).
const EVENT_TOKEN: &str = "openapi-event-token-0123456789";

/// An API key limited to `chat:*` (`scoped_api_keys`).
const SCOPED_KEY: &str = "openapi-scoped-key-0123456789";

/// A password that passes the default account rules, and another one.
const PW: &str = "S3cret!pass";
const PW2: &str = "N3w!passwd";

/// The HMAC secret of the accounts server's JWTs (at least 32 bytes).
const JWT_SECRET: &str = "openapi-jwt-secret-0123456789abcdef";

/// Static tokens (`auth.tokens`): one with a user and device, one with only a zone.
const STATIC_TOKEN: &str = "openapi-static-token-0123456789";
const ZONE_TOKEN: &str = "openapi-zone-token-0123456789";

/// Session-token shaped, but never issued.
const FAKE_SESSION: &str = "tts_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// `http.max_body_bytes` of the accounts server.
const AUTH_MAX_BODY: usize = 1024;

/// `auth.accounts.session_ttl_s` (the default), in milliseconds.
const TTL_MS: i64 = 86_400_000;

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
            // A pointer in a URI fragment percent-encodes what a URI may not hold (RFC 6901
            // § 6), such as the braces of templated paths.
            let fragment = pointer.replace('{', "%7B").replace('}', "%7D");
            root["$ref"] = Value::String(format!("#{fragment}"));
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

/// `history_size` of the `hist` namespace of the main server.
const HISTORY_SIZE: usize = 10;

/// The main server: small body and batch limits, a one-subscriber namespace, a namespace with
/// history, a token file.
fn main_config(tokens: PathBuf) -> Config {
    let mut c = config();
    c.http.max_body_bytes = MAX_BODY;
    c.http.max_batch_items = MAX_ITEMS;
    c.namespaces
        .insert("tiny".to_owned(), NamespaceConfig { max_subscribers: 1, ..NamespaceConfig::default() });
    c.namespaces.insert(
        "hist".to_owned(),
        NamespaceConfig { history_size: HISTORY_SIZE, ..NamespaceConfig::default() },
    );
    c.event_server.tokens_file = Some(tokens);
    c.scoped_api_keys = vec![
        toml::from_str(&format!("key = \"{SCOPED_KEY}\"\nchannels = [\"chat:*\"]")).expect("scoped key"),
    ];
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

        // 403: a key limited to `chat:*`, outside its scope (checked before the namespace).
        let scoped_auth = format!("Bearer {SCOPED_KEY}");
        let scoped = [("authorization", scoped_auth.as_str()), JSON];
        for channel in ["news", "nope:x"] {
            let body = wrap(path, &format!(r#"{{"channel":"{channel}","data":1}}"#));
            let r = send(server, "POST", path, &scoped, &body).await;
            assert_eq!((r.status, r.code().as_str()), (403, "channel_not_allowed"), "{path} {body}: {r:?}");
            let prefix = match path {
                "/api/broadcast" => "channels[0]: ",
                "/api/batch" => "publications[0]: ",
                _ => "",
            };
            assert!(r.json()["message"].as_str().unwrap_or("").starts_with(prefix), "{r:?}");
            spec.check(path, "post", &r);
            spec.check_request(path, "post", &body, true);
        }
        let body = wrap(path, r#"{"channel":"chat:lobby","data":1}"#);
        let r = send(server, "POST", path, &scoped, &body).await;
        assert_eq!(r.status, 200, "{path}: the scoped key publishes inside its scope: {r:?}");
        spec.check(path, "post", &r);

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

/// The epoch of a publish result `{offset, epoch}`, after checking its offset.
fn position(r: &Reply, offset: u64) -> String {
    let v = r.json();
    assert_eq!(v["offset"].as_u64(), Some(offset), "{v}");
    v["epoch"].as_str().unwrap_or_else(|| panic!("no epoch in {v}")).to_owned()
}

/// Publishing with positions and idempotency keys on a namespace with history, and
/// `POST /api/history`.
async fn history_routes(spec: &mut Spec, server: &RunningServer) {
    // Publish: the position; a repeated idempotency key publishes nothing and answers the
    // first result; another key publishes.
    let first = r#"{"channel":"hist:a","data":{"n":1},"idempotency_key":"k-1"}"#;
    let r = post_api(server, "/api/publish", first).await;
    assert_eq!(r.status, 200, "{r:?}");
    spec.check("/api/publish", "post", &r);
    spec.check_request("/api/publish", "post", first, true);
    let epoch = position(&r, 1);
    let again = r#"{"channel":"hist:a","data":{"n":"retry"},"idempotency_key":"k-1"}"#;
    let r = post_api(server, "/api/publish", again).await;
    assert_eq!(r.json(), json!({"offset": 1, "epoch": epoch}), "a repeat answers the first result");
    spec.check("/api/publish", "post", &r);
    let body = r#"{"channel":"hist:a","data":{"n":2},"tags":{"k":"v"},"idempotency_key":null}"#;
    let r = post_api(server, "/api/publish", body).await;
    assert_eq!(position(&r, 2), epoch);
    spec.check("/api/publish", "post", &r);
    spec.check_request("/api/publish", "post", body, true);
    // Without history: `{}`, with or without a key.
    let body = r#"{"channel":"news","data":1,"idempotency_key":"k-1"}"#;
    let r = post_api(server, "/api/publish", body).await;
    assert_eq!(r.json(), json!({}));
    spec.check("/api/publish", "post", &r);

    // Batch: two items with one key on one channel publish once; broadcast: the key counts
    // per channel, and a repeat publishes nothing anywhere.
    let body = r#"{"publications":[{"channel":"hist:b","data":1,"idempotency_key":"b-1"},{"channel":"hist:b","data":2,"idempotency_key":"b-1"},{"channel":"hist:b","data":3}]}"#;
    let r = post_api(server, "/api/batch", body).await;
    assert_eq!(r.status, 200, "{r:?}");
    spec.check("/api/batch", "post", &r);
    spec.check_request("/api/batch", "post", body, true);
    let results = r.json()["results"].clone();
    assert_eq!(results[0], results[1], "{results}");
    assert_eq!((results[0]["offset"].as_u64(), results[2]["offset"].as_u64()), (Some(1), Some(2)));
    let body = r#"{"channels":["hist:c","hist:d","news"],"data":1,"idempotency_key":"c-1"}"#;
    let r = post_api(server, "/api/broadcast", body).await;
    assert_eq!(r.status, 200, "{r:?}");
    spec.check("/api/broadcast", "post", &r);
    spec.check_request("/api/broadcast", "post", body, true);
    let results = r.json()["results"].clone();
    assert_eq!((results[0]["offset"].as_u64(), results[1]["offset"].as_u64()), (Some(1), Some(1)));
    assert_eq!(results[2], json!({}));
    let r = post_api(server, "/api/broadcast", body).await;
    assert_eq!(r.json()["results"], results, "a repeated broadcast answers the first results");
    spec.check("/api/broadcast", "post", &r);

    // Malformed keys, on every publish route.
    let long = format!(r#"{{"channel":"hist:a","data":1,"idempotency_key":"{}"}}"#, "k".repeat(129));
    for case in [
        r#"{"channel":"hist:a","data":1,"idempotency_key":""}"#,
        r#"{"channel":"hist:a","data":1,"idempotency_key":7}"#,
        r#"{"channel":"hist:a","data":1,"idempotency_key":"a\nb"}"#,
        long.as_str(),
    ] {
        for path in ["/api/publish", "/api/broadcast", "/api/batch"] {
            let body = wrap(path, case);
            let r = post_api(server, path, &body).await;
            assert_eq!((r.status, r.code().as_str()), (400, "invalid_message"), "{path} {body}: {r:?}");
            spec.check(path, "post", &r);
            spec.check_request(path, "post", &body, false);
        }
    }

    // 200: pages forward and backward.
    const HISTORY: &str = "/api/history";
    let pub_at = |offset: u64, data: Value, tags: Option<Value>| {
        let mut p = json!({"push": "pub", "channel": "hist:a", "data": data, "offset": offset});
        if let Some(t) = tags {
            p["tags"] = t;
        }
        p
    };
    let p1 = pub_at(1, json!({"n": 1}), None);
    let p2 = pub_at(2, json!({"n": 2}), Some(json!({"k": "v"})));
    for (body, publications) in [
        (r#"{"channel":"hist:a"}"#, vec![p1.clone(), p2.clone()]),
        (r#"{"channel":"hist:a","since":1,"limit":5,"reverse":false}"#, vec![p2.clone()]),
        (r#"{"channel":"hist:a","since":null,"limit":null,"reverse":true}"#, vec![p2.clone(), p1.clone()]),
        (r#"{"channel":"hist:a","limit":1,"reverse":true}"#, vec![p2.clone()]),
        (r#"{"channel":"hist:a","since":2,"reverse":true}"#, vec![p1.clone()]),
        (r#"{"channel":"hist:a","since":2}"#, vec![]),
        (r#"{"channel":"hist:a","limit":0}"#, vec![p1.clone(), p2.clone()]),
    ] {
        let r = post_api(server, HISTORY, body).await;
        assert_eq!(r.status, 200, "{body}: {r:?}");
        assert_eq!(r.json(), json!({"offset": 2, "epoch": epoch, "publications": publications}), "{body}");
        spec.check(HISTORY, "post", &r);
        spec.check_request(HISTORY, "post", body, true);
    }
    // A channel without history yet: an empty page, no epoch, and nothing created.
    let r = post_api(server, HISTORY, r#"{"channel":"hist:new"}"#).await;
    assert_eq!(r.json(), json!({"offset": 0, "epoch": "", "publications": []}));
    spec.check(HISTORY, "post", &r);

    // 400: (body, code, does the request schema accept it?)
    let cases: [(&str, &str, bool); 8] = [
        (r#"{"channel":"news"}"#, "history_disabled", true),
        (r#"{"channel":"nope:x"}"#, "unknown_namespace", true),
        (r#"{"channel":"a b"}"#, "invalid_channel", false),
        (r#"{"channel":1}"#, "invalid_message", false),
        (r#"{}"#, "invalid_message", false),
        (r#"{"channel":"hist:a","limit":-1}"#, "invalid_message", false),
        (r#"{"channel":"hist:a","since":"1"}"#, "invalid_message", false),
        (r#"{"channel":"hist:a","extra":1}"#, "invalid_message", false),
    ];
    for (body, code, schema_accepts) in cases {
        let r = post_api(server, HISTORY, body).await;
        assert_eq!((r.status, r.code().as_str()), (400, code), "{body}: {r:?}");
        spec.check(HISTORY, "post", &r);
        spec.check_request(HISTORY, "post", body, schema_accepts);
    }
    let r = post_api(server, HISTORY, r#"{"channel":"#).await;
    assert_eq!((r.status, r.code().as_str()), (400, "malformed_json"), "{r:?}");
    spec.check(HISTORY, "post", &r);

    // 401: no key.
    let r = send(server, "POST", HISTORY, &[JSON], r#"{"channel":"hist:a"}"#).await;
    assert_eq!((r.status, r.code().as_str()), (401, "unauthenticated"), "{r:?}");
    spec.check(HISTORY, "post", &r);

    // 403 outside a scoped key's channels (before the namespace); inside them the namespace
    // decides.
    let scoped_auth = format!("Bearer {SCOPED_KEY}");
    let scoped = [("authorization", scoped_auth.as_str()), JSON];
    for (body, want) in [
        (r#"{"channel":"hist:a"}"#, (403, "channel_not_allowed")),
        (r#"{"channel":"nope:x"}"#, (403, "channel_not_allowed")),
        (r#"{"channel":"chat:lobby"}"#, (400, "history_disabled")),
    ] {
        let r = send(server, "POST", HISTORY, &scoped, body).await;
        assert_eq!((r.status, r.code().as_str()), want, "{body}: {r:?}");
        spec.check(HISTORY, "post", &r);
        spec.check_request(HISTORY, "post", body, true);
    }

    // 413 and 415.
    let huge = format!(r#"{{"channel":"hist:a","x":"{}"}}"#, "x".repeat(MAX_BODY));
    let r = post_api(server, HISTORY, &huge).await;
    assert_eq!((r.status, r.code().as_str()), (413, "payload_too_large"), "{r:?}");
    spec.check(HISTORY, "post", &r);
    let r = send(
        server,
        "POST",
        HISTORY,
        &[("authorization", &bearer()), ("content-type", "text/plain")],
        r#"{"channel":"hist:a"}"#,
    )
    .await;
    assert_eq!((r.status, r.code().as_str()), (415, "unsupported_media_type"), "{r:?}");
    spec.check(HISTORY, "post", &r);

    // /sse on a namespace with history: resuming from `Last-Event-ID` replays what was missed,
    // then the `subscribed` event; a malformed id is a 400 before the stream starts.
    let resp =
        open(server, "GET", "/sse?channel=hist:a", &[("last-event-id", &format!("{epoch}:1"))], "").await;
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    assert_eq!(status, 200);
    let mut body = resp.into_body();
    let mut text = String::new();
    read_sse(&mut body, &mut text, |t| t.contains("event: subscribed\n") && t.ends_with("\n\n")).await;
    let missed = r#"{"push":"pub","channel":"hist:a","data":{"n":2},"tags":{"k":"v"},"offset":2}"#;
    let subscribed = format!(r#"{{"offset":2,"epoch":"{epoch}","recovered":true}}"#);
    assert_eq!(
        text,
        format!("id: {epoch}:2\ndata: {missed}\n\nid: {epoch}:2\nevent: subscribed\ndata: {subscribed}\n\n")
    );
    spec.check("/sse", "get", &Reply { status, headers, body: text });
    drop(body);
    for id in ["nope".to_owned(), ":1".to_owned(), format!("{epoch}:-1"), format!("{epoch}:x")] {
        let r = send(server, "GET", "/sse?channel=hist:a", &[("last-event-id", &id)], "").await;
        assert_eq!((r.status, r.code().as_str()), (400, "invalid_message"), "{id:?}: {r:?}");
        spec.check("/sse", "get", &r);
    }
}

/// `POST /api/presence` and `POST /api/presence_stats`, on a server of their own: a namespace
/// that tracks presence, JWTs (for `info`), the scoped key, a small body limit.
async fn presence_routes(spec: &mut Spec) {
    let mut c = config();
    c.http.max_body_bytes = MAX_BODY;
    c.namespaces
        .insert("pres".to_owned(), NamespaceConfig { track_presence: true, ..NamespaceConfig::default() });
    c.auth.jwt = Some(jwt_config());
    c.scoped_api_keys = vec![
        toml::from_str(&format!("key = \"{SCOPED_KEY}\"\nchannels = [\"chat:*\"]")).expect("scoped key"),
    ];
    let (server, clock) = start_clocked(c).await;
    const PRESENCE: &str = "/api/presence";
    const STATS: &str = "/api/presence_stats";

    // 200: nobody subscribed yet.
    let body = r#"{"channel":"pres:room"}"#;
    for (path, want) in [(PRESENCE, json!({"clients": []})), (STATS, json!({"connections": 0, "users": 0}))] {
        let r = post_api(&server, path, body).await;
        assert_eq!((r.status, r.json()), (200, want), "{path}: {r:?}");
        spec.check(path, "post", &r);
        spec.check_request(path, "post", body, true);
    }

    // 200: a JWT connection with `info` and an anonymous one, both subscribed; listed by
    // client id, as their `connect` results name them.
    let now = clock.now_s();
    let claims = MintClaims {
        sub: "alice".to_owned(),
        iat_s: now,
        exp_s: now + 3600,
        info: Some(json!({"name": "Alice"})),
        ..MintClaims::default()
    };
    let token = tether_server::auth::jwt::mint(&jwt_config(), &claims, None).expect("mint");
    let mut alice = ws(&server, "/ws").await;
    let r = request(&mut alice, 1, json!({"op": "connect", "token": token})).await;
    let alice_client = r["result"]["client"].as_str().unwrap_or_else(|| panic!("{r}")).to_owned();
    let mut anon = ws(&server, "/ws").await;
    let r = request(&mut anon, 1, json!({"op": "connect"})).await;
    let anon_client = r["result"]["client"].as_str().unwrap_or_else(|| panic!("{r}")).to_owned();
    for c in [&mut alice, &mut anon] {
        let r = request(c, 2, json!({"op": "subscribe", "channel": "pres:room"})).await;
        assert_eq!(r["result"], json!({}), "{r}");
    }
    let mut clients = vec![
        (
            alice_client.parse::<u64>().expect("numeric id"),
            json!({"client": alice_client, "user": "alice", "info": {"name": "Alice"}}),
        ),
        (anon_client.parse::<u64>().expect("numeric id"), json!({"client": anon_client})),
    ];
    clients.sort_by_key(|(id, _)| *id);
    let clients: Vec<Value> = clients.into_iter().map(|(_, c)| c).collect();
    for (path, want) in
        [(PRESENCE, json!({"clients": clients})), (STATS, json!({"connections": 2, "users": 1}))]
    {
        let r = post_api(&server, path, body).await;
        assert_eq!((r.status, r.json()), (200, want), "{path}: {r:?}");
        spec.check(path, "post", &r);
    }
    // The native op answers the same object.
    let r = request(&mut anon, 3, json!({"op": "presence", "channel": "pres:room"})).await;
    assert_eq!(r["result"], json!({"clients": clients}));
    spec.assert_valid("/components/schemas/Presence", &r["result"], "presence op result");

    for path in [PRESENCE, STATS] {
        // 400: (body, code, does the request schema accept it?)
        let cases: [(&str, &str, bool); 6] = [
            (r#"{"channel":"chat:room"}"#, "presence_disabled", true),
            (r#"{"channel":"nope:x"}"#, "unknown_namespace", true),
            (r#"{"channel":"a b"}"#, "invalid_channel", false),
            (r#"{"channel":1}"#, "invalid_message", false),
            (r#"{}"#, "invalid_message", false),
            (r#"{"channel":"pres:room","extra":1}"#, "invalid_message", false),
        ];
        for (body, code, schema_accepts) in cases {
            let r = post_api(&server, path, body).await;
            assert_eq!((r.status, r.code().as_str()), (400, code), "{path} {body}: {r:?}");
            spec.check(path, "post", &r);
            spec.check_request(path, "post", body, schema_accepts);
        }
        let r = post_api(&server, path, r#"{"channel":"#).await;
        assert_eq!((r.status, r.code().as_str()), (400, "malformed_json"), "{path}: {r:?}");
        spec.check(path, "post", &r);

        // 401: no key.
        let r = send(&server, "POST", path, &[JSON], body).await;
        assert_eq!((r.status, r.code().as_str()), (401, "unauthenticated"), "{path}: {r:?}");
        spec.check(path, "post", &r);

        // 403 outside a scoped key's channels (before the namespace); inside them the
        // namespace decides.
        let scoped_auth = format!("Bearer {SCOPED_KEY}");
        let scoped = [("authorization", scoped_auth.as_str()), JSON];
        for (body, want) in [
            (r#"{"channel":"pres:room"}"#, (403, "channel_not_allowed")),
            (r#"{"channel":"nope:x"}"#, (403, "channel_not_allowed")),
            (r#"{"channel":"chat:lobby"}"#, (400, "presence_disabled")),
        ] {
            let r = send(&server, "POST", path, &scoped, body).await;
            assert_eq!((r.status, r.code().as_str()), want, "{path} {body}: {r:?}");
            spec.check(path, "post", &r);
            spec.check_request(path, "post", body, true);
        }

        // 413 and 415.
        let huge = format!(r#"{{"channel":"pres:room","x":"{}"}}"#, "x".repeat(MAX_BODY));
        let r = post_api(&server, path, &huge).await;
        assert_eq!((r.status, r.code().as_str()), (413, "payload_too_large"), "{path}: {r:?}");
        spec.check(path, "post", &r);
        let r = send(
            &server,
            "POST",
            path,
            &[("authorization", &bearer()), ("content-type", "text/plain")],
            body,
        )
        .await;
        assert_eq!((r.status, r.code().as_str()), (415, "unsupported_media_type"), "{path}: {r:?}");
        spec.check(path, "post", &r);
    }

    // An unsubscribe leaves: the lists follow.
    let r = request(&mut alice, 4, json!({"op": "unsubscribe", "channel": "pres:room"})).await;
    assert_eq!(r["result"], json!({}), "{r}");
    let r = post_api(&server, STATS, body).await;
    assert_eq!(r.json(), json!({"connections": 1, "users": 0}), "{r:?}");
    spec.check(STATS, "post", &r);
    drop((alice, anon));
    server.shutdown().await.expect("shutdown");
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
    for (method, path) in [
        ("GET", "/api/publish"),
        ("PUT", "/api/batch"),
        ("POST", "/healthz"),
        ("POST", "/ws"),
        ("GET", "/auth/login"),
        ("POST", "/auth/me"),
        ("POST", "/auth/account"),
        ("DELETE", "/auth/logout"),
    ] {
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
        ("/sse?channel=news&token=unknown-token-0123456789", 401, "invalid_token"),
        ("/sse?channel=news&token=tts_unknown", 401, "invalid_token"),
        // `events` admits authenticated subscribers only.
        ("/sse?channel=events:x", 401, "unauthenticated"),
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

/// A `[sync]` table with a one-model schema written next to it (`name_type` is the type of
/// `Doc.name`, so a second server can be given an incompatible schema).
fn sync_config(dir: &std::path::Path, name_type: &str, extra: &str) -> tether_server::config::SyncConfig {
    let schema = dir.join(format!("schema-{name_type}.toml"));
    std::fs::write(&schema, format!("[models.Doc]\nname = \"{name_type}\"\nparts = \"[Doc]\"\n"))
        .expect("schema");
    let text = format!(
        "schema = {schema:?}\n{extra}\n[[scopes]]\nname = \"doc\"\nroot = \"Doc\"\n[[scopes]]\nname = \"chat:room\"\nroot = \"Doc\"\n"
    );
    toml::from_str(&text).expect("sync config")
}

/// The model-sync routes: `/jetstream` and `/api/scopes/...`.
async fn model_sync(spec: &mut Spec) {
    const SCOPE: &str = "/api/scopes/{name}";
    const UPDATE: &str = "/api/scopes/{name}/update";
    let key = Some(API_KEY);
    // Without `sync.schema` every route is unknown.
    let server = start(config()).await;
    let r = send(&server, "GET", "/jetstream", &UPGRADE, "").await;
    assert_eq!((r.status, r.code().as_str()), (404, "not_found"));
    spec.check("/jetstream", "get", &r);
    let r = call(&server, "GET", "/api/scopes/doc", key, "").await;
    assert_eq!((r.status, r.code().as_str()), (404, "not_found"));
    spec.check(SCOPE, "get", &r);
    server.shutdown().await.expect("shutdown");

    let dir = fresh_dir("openapi-sync");
    let mut c = main_config(token_file());
    c.sync = sync_config(&dir, "String", "");
    let data_dir = c.data_dir.clone();
    let server = start(c).await;
    let (_ws, resp) =
        tokio_tungstenite::connect_async(format!("ws://{}/jetstream", server.addr)).await.expect("connects");
    upgraded(spec, "/jetstream", &resp);
    let r = send(&server, "GET", "/jetstream", &[], "").await;
    assert_eq!((r.status, r.code().as_str()), (400, "invalid_message"));
    spec.check("/jetstream", "get", &r);

    // (method, path, documented path, key, body, status, code)
    type Case<'a> = (&'a str, &'a str, &'a str, Option<&'a str>, &'a str, u16, &'a str);
    let cases: &[Case<'_>] = &[
        (
            "POST",
            "/api/scopes/doc/update",
            UPDATE,
            key,
            r#"{"update":{"$set":{"name":"x"},"$push":{"parts":{"name":"p"}}}}"#,
            200,
            "",
        ),
        ("POST", "/api/scopes/doc/update", UPDATE, key, r#"{"update":{"$nope":{}}}"#, 400, "invalid_message"),
        (
            "POST",
            "/api/scopes/doc/update",
            UPDATE,
            key,
            r#"{"update":{"$set":{"name":5}}}"#,
            422,
            "update_rejected",
        ),
        ("POST", "/api/scopes/doc/update", UPDATE, None, r#"{"update":{}}"#, 401, "unauthenticated"),
        (
            "POST",
            "/api/scopes/doc/update",
            UPDATE,
            Some(SCOPED_KEY),
            r#"{"update":{}}"#,
            403,
            "channel_not_allowed",
        ),
        ("POST", "/api/scopes/nope/update", UPDATE, key, r#"{"update":{}}"#, 404, "not_found"),
        ("GET", "/api/scopes/doc", SCOPE, key, "", 200, ""),
        ("GET", "/api/scopes/chat:room", SCOPE, Some(SCOPED_KEY), "", 200, ""),
        ("GET", "/api/scopes/doc?params=[1]", SCOPE, key, "", 400, "invalid_message"),
        ("GET", "/api/scopes/doc", SCOPE, None, "", 401, "unauthenticated"),
        ("GET", "/api/scopes/doc", SCOPE, Some(SCOPED_KEY), "", 403, "channel_not_allowed"),
        ("GET", "/api/scopes/nope", SCOPE, key, "", 404, "not_found"),
    ];
    for &(method, path, doc_path, token, body, status, code) in cases {
        let r = call(&server, method, path, token, body).await;
        let got = (r.status, if r.status < 300 { String::new() } else { r.code() });
        assert_eq!((got.0, got.1.as_str()), (status, code), "{method} {path} {body}: {r:?}");
        spec.check(doc_path, &method.to_ascii_lowercase(), &r);
    }
    let big = format!(r#"{{"update":{{"$set":{{"name":"{}"}}}}}}"#, "x".repeat(MAX_BODY));
    let r = call(&server, "POST", "/api/scopes/doc/update", key, &big).await;
    assert_eq!((r.status, r.code().as_str()), (413, "payload_too_large"));
    spec.check(UPDATE, "post", &r);
    let r = send(
        &server,
        "POST",
        "/api/scopes/doc/update",
        &[("authorization", &bearer()), ("content-type", "text/plain")],
        "{}",
    )
    .await;
    assert_eq!((r.status, r.code().as_str()), (415, "unsupported_media_type"));
    spec.check(UPDATE, "post", &r);
    server.shutdown().await.expect("shutdown");

    // The stored scope no longer fits a changed schema: it cannot be loaded (500).
    let mut c = config();
    c.data_dir = data_dir;
    c.sync = sync_config(&dir, "Number", "");
    let server = start(c).await;
    for (method, path, doc_path, body) in [
        ("GET", "/api/scopes/doc", SCOPE, ""),
        ("POST", "/api/scopes/doc/update", UPDATE, r#"{"update":{}}"#),
    ] {
        let r = call(&server, method, path, key, body).await;
        assert_eq!((r.status, r.code().as_str()), (500, "internal"), "{method} {path}");
        spec.check(doc_path, &method.to_ascii_lowercase(), &r);
    }
    server.shutdown().await.expect("shutdown");

    // Overload: no connection slot for /jetstream; a one-command scope queue for the API.
    let mut c = config();
    c.limits.max_connections = 0;
    c.sync = sync_config(&dir, "String", "scope_queue = 1");
    let server = start(c).await;
    let r = send(&server, "GET", "/jetstream", &UPGRADE, "").await;
    assert_eq!((r.status, r.code().as_str()), (503, "too_many_connections"));
    spec.check("/jetstream", "get", &r);
    // Many requests at once: while the scope commits one, the queue holds one more and the
    // rest are refused. Repeated until both routes have seen a 503 (bounded).
    let deadline = tokio::time::Instant::now() + WAIT;
    let (mut get_busy, mut post_busy) = (false, false);
    while !(get_busy && post_busy) {
        assert!(tokio::time::Instant::now() < deadline, "no 503 from an overloaded scope");
        let server = &server;
        let replies = futures_util::future::join_all((0..64).map(|i| async move {
            if i % 2 == 0 {
                (
                    "post",
                    call(
                        server,
                        "POST",
                        "/api/scopes/doc/update",
                        key,
                        &format!(r#"{{"update":{{"$set":{{"name":"n{i}"}}}}}}"#),
                    )
                    .await,
                )
            } else {
                ("get", call(server, "GET", "/api/scopes/doc", key, "").await)
            }
        }))
        .await;
        for (method, r) in replies {
            if r.status == 503 {
                assert_eq!(r.code(), "too_many_connections");
                let doc_path = if method == "post" { UPDATE } else { SCOPE };
                spec.check(doc_path, method, &r);
                if method == "post" { post_busy = true } else { get_busy = true }
            }
        }
    }
    server.shutdown().await.expect("shutdown");
}

/// A request with an optional bearer credential; a non-empty `body` is sent as JSON.
async fn call(server: &RunningServer, method: &str, path: &str, token: Option<&str>, body: &str) -> Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = Vec::new();
    if !body.is_empty() {
        headers.push(JSON);
    }
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    send(server, method, path, &headers, body).await
}

/// [`call`] `(method, path)`, asserts the status and, for an error, its code; then checks the
/// reply against the document. `want.1` is `""` for a success.
async fn expect(
    spec: &mut Spec,
    server: &RunningServer,
    (method, path): (&str, &str),
    token: Option<&str>,
    body: &str,
    want: (u16, &str),
) -> Reply {
    let r = call(server, method, path, token, body).await;
    let got = (r.status, if r.status < 300 { String::new() } else { r.code() });
    assert_eq!((got.0, got.1.as_str()), want, "{method} {path} {body}: {r:?}");
    spec.check(path, &method.to_ascii_lowercase(), &r);
    r
}

const REGISTER: (&str, &str) = ("POST", "/auth/register");
const LOGIN: (&str, &str) = ("POST", "/auth/login");
const REFRESH: (&str, &str) = ("POST", "/auth/refresh");
const LOGOUT: (&str, &str) = ("POST", "/auth/logout");
const PASSWORD: (&str, &str) = ("POST", "/auth/password");
const ACCOUNT: (&str, &str) = ("DELETE", "/auth/account");
const ME: (&str, &str) = ("GET", "/auth/me");

/// The session-token routes and a body each accepts (bodiless routes ignore theirs).
const SESSION_ROUTES: [((&str, &str), &str); 4] = [
    (REFRESH, ""),
    (LOGOUT, ""),
    (PASSWORD, r#"{"password":"S3cret!pass","new_password":"N3w!passwd"}"#),
    (ACCOUNT, r#"{"password":"S3cret!pass"}"#),
];

/// The token of a session reply, after checking it is the session of `user` issued now.
fn session_token(r: &Reply, clock: &Clock, user: &str, persistent: bool) -> String {
    let s = r.json();
    assert_eq!(s["user"], user, "{s}");
    assert_eq!(s["persistent"], persistent, "{s}");
    assert_eq!(s["expires_at"].as_i64(), Some(clock.now_ms() + TTL_MS), "{s}");
    s["token"].as_str().expect("token").to_owned()
}

fn jwt_config() -> JwtConfig {
    toml::from_str(&format!("algorithms = [\"HS256\"]\nhmac_secret = \"{JWT_SECRET}\"")).expect("jwt config")
}

/// A JWT for `sub` on the server's clock, expiring in `ttl_s`, granting `channels`.
fn jwt(clock: &Clock, sub: &str, ttl_s: u64, channels: &[&str]) -> String {
    let now = clock.now_s();
    let claims = MintClaims {
        sub: sub.to_owned(),
        iat_s: now,
        exp_s: now + ttl_s,
        channels: channels.iter().map(|c| (*c).to_owned()).collect(),
        device: Some("tab-1".to_owned()),
        zone: Some("eu".to_owned()),
        ..MintClaims::default()
    };
    tether_server::auth::jwt::mint(&jwt_config(), &claims, None).expect("mint")
}

/// The accounts server: namespaces for every subscribe rule, JWTs, static tokens, a small body
/// limit, and rate limits out of the way.
fn accounts_config() -> Config {
    let mut c = config();
    c.http.max_body_bytes = AUTH_MAX_BODY;
    for (name, toml) in [
        ("members", "subscribe = \"authenticated\""),
        ("me", "personal = true"),
        ("vip", "subscribe = \"granted\""),
    ] {
        c.namespaces.insert(name.to_owned(), toml::from_str(toml).expect("namespace"));
    }
    c.auth.jwt = Some(jwt_config());
    c.auth.tokens = vec![
        TokenIdentity {
            token: STATIC_TOKEN.to_owned(),
            user: Some("kiosk".to_owned()),
            device: Some("kiosk-1".to_owned()),
            zone: None,
        },
        TokenIdentity { token: ZONE_TOKEN.to_owned(), user: None, device: None, zone: Some("eu".to_owned()) },
    ];
    let r = &mut c.auth.rate_limits;
    r.register_ip_burst = 1000;
    r.login_ip_burst = 1000;
    r.login_user_burst = 1000;
    c
}

fn register_body(name: &str) -> String {
    json!({"name": name, "password": PW, "email": format!("{name}@example.com")}).to_string()
}

async fn register(spec: &mut Spec, server: &RunningServer, clock: &Clock, name: &str) -> String {
    let body = register_body(name);
    let r = expect(spec, server, REGISTER, None, &body, (201, "")).await;
    spec.check_request("/auth/register", "post", &body, true);
    session_token(&r, clock, name, true)
}

/// Every documented response of `/auth/register` and `/auth/login` the accounts server gives.
async fn register_and_login(spec: &mut Spec, server: &RunningServer, clock: &Clock) {
    // 201: persistent by default; with a padded email and `persistent: false`.
    register(spec, server, clock, "alice").await;
    let body = r#"{"name":"bob","password":"S3cret!pass","email":" bob@example.com ","persistent":false}"#;
    let r = expect(spec, server, REGISTER, None, body, (201, "")).await;
    spec.check_request("/auth/register", "post", body, true);
    session_token(&r, clock, "bob", false);

    // 400: (body, code, does the request schema accept it?). The rules are configuration,
    // so the schema checks only the shape.
    let cases: [(&str, &str, bool); 12] = [
        (r#"{"name":"","password":"S3cret!pass","email":"a@b.io"}"#, "invalid_username", true),
        (r#"{"name":"a b","password":"S3cret!pass","email":"a@b.io"}"#, "invalid_username", true),
        (r#"{"name":"carl","password":"a1!","email":"a@b.io"}"#, "invalid_password", true),
        (r#"{"name":"carl","password":"abcdefg1","email":"a@b.io"}"#, "invalid_password", true),
        (r#"{"name":"carl","password":"S3cret!pass"}"#, "invalid_email", true),
        (r#"{"name":"carl","password":"S3cret!pass","email":null}"#, "invalid_email", true),
        (r#"{"name":"carl","password":"S3cret!pass","email":"nope"}"#, "invalid_email", true),
        (r#"{"name":5,"password":"S3cret!pass","email":"a@b.io"}"#, "invalid_message", false),
        (r#"{"name":"carl","email":"a@b.io"}"#, "invalid_message", false),
        (
            r#"{"name":"carl","password":"S3cret!pass","email":"a@b.io","admin":true}"#,
            "invalid_message",
            false,
        ),
        (
            r#"{"name":"carl","password":"S3cret!pass","email":"a@b.io","persistent":null}"#,
            "invalid_message",
            false,
        ),
        ("[]", "invalid_message", false),
    ];
    for (body, code, schema_accepts) in cases {
        expect(spec, server, REGISTER, None, body, (400, code)).await;
        spec.check_request("/auth/register", "post", body, schema_accepts);
    }
    expect(spec, server, REGISTER, None, r#"{"name":"carl","#, (400, "malformed_json")).await;
    // 409: the same name in another case.
    let body = r#"{"name":"ALICE","password":"S3cret!pass","email":"x@y.io"}"#;
    let r = expect(spec, server, REGISTER, None, body, (409, "username_taken")).await;
    assert_eq!(r.json()["message"], "User name already in use.");
    spec.check_request("/auth/register", "post", body, true);

    // 200: not persistent by default; the name in any case logs in as registered.
    let body = r#"{"name":"alice","password":"S3cret!pass"}"#;
    let r = expect(spec, server, LOGIN, None, body, (200, "")).await;
    spec.check_request("/auth/login", "post", body, true);
    session_token(&r, clock, "alice", false);
    let body = r#"{"name":"ALICE","password":"S3cret!pass","persistent":true}"#;
    let r = expect(spec, server, LOGIN, None, body, (200, "")).await;
    spec.check_request("/auth/login", "post", body, true);
    session_token(&r, clock, "alice", true);
    // 401: wrong password and unknown user are indistinguishable; an empty name too.
    let wrong = expect(
        spec,
        server,
        LOGIN,
        None,
        r#"{"name":"alice","password":"Wrong!pw1"}"#,
        (401, "invalid_credentials"),
    )
    .await;
    let unknown = expect(
        spec,
        server,
        LOGIN,
        None,
        r#"{"name":"nobody","password":"S3cret!pass"}"#,
        (401, "invalid_credentials"),
    )
    .await;
    assert_eq!(wrong.json(), unknown.json());
    let body = r#"{"name":"","password":"S3cret!pass"}"#;
    expect(spec, server, LOGIN, None, body, (401, "invalid_credentials")).await;
    spec.check_request("/auth/login", "post", body, true);
    // 400
    for (body, code, schema_accepts) in [
        (r#"{"name":"alice","password":"S3cret!pass","email":"a@b.io"}"#, "invalid_message", Some(false)),
        (r#"{"name":"alice"}"#, "invalid_message", Some(false)),
        (r#"{"name":"alice","password":"S3cret!pass","persistent":"yes"}"#, "invalid_message", Some(false)),
        ("[]", "invalid_message", Some(false)),
        ("{nope", "malformed_json", None),
    ] {
        expect(spec, server, LOGIN, None, body, (400, code)).await;
        if let Some(ok) = schema_accepts {
            spec.check_request("/auth/login", "post", body, ok);
        }
    }

    // 413 and 415 for both.
    for (route, path) in [(REGISTER, "/auth/register"), (LOGIN, "/auth/login")] {
        let body =
            json!({"name": "carl", "password": "x".repeat(AUTH_MAX_BODY), "email": "a@b.io"}).to_string();
        let r = send(server, route.0, path, &[JSON], &body).await;
        assert_eq!((r.status, r.code().as_str()), (413, "payload_too_large"), "{path}");
        spec.check(path, "post", &r);
        let r = send(server, route.0, path, &[("content-type", "text/plain")], &register_body("carl")).await;
        assert_eq!((r.status, r.code().as_str()), (415, "unsupported_media_type"), "{path}");
        spec.check(path, "post", &r);
    }
}

/// `/auth/me`, `/auth/refresh`, `/auth/password`, `/auth/logout` and `/auth/account` with live
/// credentials, and every way a credential is refused.
async fn sessions(spec: &mut Spec, server: &RunningServer, clock: &Clock) {
    let alice =
        call(server, "POST", "/auth/login", None, r#"{"name":"alice","password":"S3cret!pass"}"#).await;
    let alice = session_token(&alice, clock, "alice", false);

    // 200: a session, a JWT and static tokens (with and without a user).
    let r = expect(spec, server, ME, Some(&alice), "", (200, "")).await;
    assert_eq!(
        r.json(),
        json!({"user": "alice", "device": null, "zone": null, "kind": "session", "expires_at": clock.now_ms() + TTL_MS})
    );
    let token = jwt(clock, "jill", 3600, &["vip:*"]);
    let r = expect(spec, server, ME, Some(&token), "", (200, "")).await;
    let exp = i64::try_from(clock.now_s() + 3600).expect("i64") * 1000;
    assert_eq!(
        r.json(),
        json!({"user": "jill", "device": "tab-1", "zone": "eu", "kind": "jwt", "expires_at": exp})
    );
    let r = expect(spec, server, ME, Some(STATIC_TOKEN), "", (200, "")).await;
    assert_eq!(r.json(), json!({"user": "kiosk", "device": "kiosk-1", "zone": null, "kind": "static"}));
    let r = expect(spec, server, ME, Some(ZONE_TOKEN), "", (200, "")).await;
    assert_eq!(r.json(), json!({"user": null, "device": null, "zone": "eu", "kind": "static"}));
    // 401: no credential, another scheme, unknown tokens of each shape, a forged JWT, an API key.
    let r = send(server, "GET", "/auth/me", &[], "").await;
    assert_eq!((r.status, r.code().as_str()), (401, "unauthenticated"));
    spec.check("/auth/me", "get", &r);
    let basic = format!("Basic {alice}");
    let r = send(server, "GET", "/auth/me", &[("authorization", &basic)], "").await;
    assert_eq!((r.status, r.code().as_str()), (401, "unauthenticated"));
    spec.check("/auth/me", "get", &r);
    let forged = format!("{}x", &token[..token.len() - 1]);
    for t in [FAKE_SESSION, "unknown-static-token-0123456789", forged.as_str(), API_KEY] {
        expect(spec, server, ME, Some(t), "", (401, "invalid_token")).await;
    }
    // Nor is a client credential an API key.
    for t in [alice.as_str(), token.as_str(), STATIC_TOKEN] {
        let r = call(server, "POST", "/api/publish", Some(t), r#"{"channel":"news","data":1}"#).await;
        assert_eq!((r.status, r.code().as_str()), (401, "unauthenticated"), "{r:?}");
        spec.check("/api/publish", "post", &r);
    }

    // Refresh: a new token, the old one dead at once. The body is ignored, whatever its type.
    let r = send(
        server,
        "POST",
        "/auth/refresh",
        &[("authorization", &format!("Bearer {alice}")), ("content-type", "text/plain")],
        "ignored",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    spec.check("/auth/refresh", "post", &r);
    let refreshed = session_token(&r, clock, "alice", false);
    assert_ne!(refreshed, alice);
    expect(spec, server, ME, Some(&alice), "", (401, "invalid_token")).await;
    expect(spec, server, ME, Some(&refreshed), "", (200, "")).await;

    // Every session route: no credential or another scheme (401 unauthenticated, before the
    // body is looked at), a replaced session, unknown tokens, credentials that are not sessions.
    for ((method, path), body) in SESSION_ROUTES {
        let lower = method.to_ascii_lowercase();
        for headers in [vec![JSON], vec![JSON, ("authorization", basic.as_str())]] {
            let r = send(server, method, path, &headers, "not even JSON").await;
            assert_eq!((r.status, r.code().as_str()), (401, "unauthenticated"), "{method} {path}");
            spec.check(path, &lower, &r);
        }
        for t in [alice.as_str(), FAKE_SESSION, "not-a-session-token", token.as_str(), STATIC_TOKEN, API_KEY]
        {
            expect(spec, server, (method, path), Some(t), body, (401, "invalid_token")).await;
        }
    }

    // Password change and deletion: body checks come after the token.
    register(spec, server, clock, "carol").await;
    let carol =
        call(server, "POST", "/auth/login", None, r#"{"name":"carol","password":"S3cret!pass"}"#).await;
    let carol = session_token(&carol, clock, "carol", false);
    let other =
        call(server, "POST", "/auth/login", None, r#"{"name":"carol","password":"S3cret!pass"}"#).await;
    let other = session_token(&other, clock, "carol", false);
    for ((method, path), body, schema) in [
        (PASSWORD, SESSION_ROUTES[2].1, "PasswordChangeRequest"),
        (ACCOUNT, SESSION_ROUTES[3].1, "DeleteAccountRequest"),
    ] {
        let lower = method.to_ascii_lowercase();
        spec.assert_valid(
            &format!("/components/schemas/{schema}"),
            &serde_json::from_str(body).expect("JSON"),
            path,
        );
        let auth = format!("Bearer {carol}");
        let r = send(server, method, path, &[("authorization", &auth), ("content-type", "text/plain")], body)
            .await;
        assert_eq!((r.status, r.code().as_str()), (415, "unsupported_media_type"), "{path}");
        spec.check(path, &lower, &r);
        let huge = json!({"password": "x".repeat(AUTH_MAX_BODY)}).to_string();
        expect(spec, server, (method, path), Some(&carol), &huge, (413, "payload_too_large")).await;
        expect(spec, server, (method, path), Some(&carol), "{nope", (400, "malformed_json")).await;
        for bad in
            [r#"{"password":1}"#, r#"{"password":"S3cret!pass","new_password":"N3w!passwd","x":1}"#, "[]"]
        {
            expect(spec, server, (method, path), Some(&carol), bad, (400, "invalid_message")).await;
            spec.check_request(path, &lower, bad, false);
        }
    }
    // The new password's rules, then the current password.
    for (body, want, ok) in [
        (r#"{"password":"S3cret!pass","new_password":"short"}"#, (400, "invalid_password"), true),
        (r#"{"password":"S3cret!pass"}"#, (400, "invalid_message"), false),
        (r#"{"password":"Wrong!pw1","new_password":"N3w!passwd"}"#, (401, "invalid_credentials"), true),
    ] {
        expect(spec, server, PASSWORD, Some(&carol), body, want).await;
        spec.check_request("/auth/password", "post", body, ok);
    }
    let body = r#"{"password":"Wrong!pw1"}"#;
    expect(spec, server, ACCOUNT, Some(&carol), body, (401, "invalid_credentials")).await;
    spec.check_request("/auth/account", "delete", body, true);
    // 204: the changing session survives, the other one is revoked.
    let body = SESSION_ROUTES[2].1;
    expect(spec, server, PASSWORD, Some(&carol), body, (204, "")).await;
    spec.check_request("/auth/password", "post", body, true);
    expect(spec, server, ME, Some(&other), "", (401, "invalid_token")).await;
    expect(spec, server, ME, Some(&carol), "", (200, "")).await;
    // 204: deleted; every session ends and the name is free again.
    let body = json!({"password": PW2}).to_string();
    expect(spec, server, ACCOUNT, Some(&carol), &body, (204, "")).await;
    spec.check_request("/auth/account", "delete", &body, true);
    expect(spec, server, ME, Some(&carol), "", (401, "invalid_token")).await;
    let login = json!({"name": "carol", "password": PW2}).to_string();
    expect(spec, server, LOGIN, None, &login, (401, "invalid_credentials")).await;
    register(spec, server, clock, "carol").await;

    // 204: logout ends one session only; the token is dead afterwards.
    expect(spec, server, LOGOUT, Some(&refreshed), "", (204, "")).await;
    expect(spec, server, LOGOUT, Some(&refreshed), "", (401, "invalid_token")).await;
    expect(spec, server, ME, Some(&refreshed), "", (401, "invalid_token")).await;
}

/// Reads an SSE body until `done` holds for the text read so far.
async fn read_sse(body: &mut hyper::body::Incoming, text: &mut String, done: impl Fn(&str) -> bool) {
    while !done(text) {
        let frame = tokio::time::timeout(WAIT, body.frame())
            .await
            .expect("SSE chunk within WAIT")
            .unwrap_or_else(|| panic!("SSE stream ended after {text:?}"))
            .expect("ok");
        if let Ok(data) = frame.into_data() {
            text.push_str(std::str::from_utf8(&data).expect("UTF-8"));
        }
    }
}

/// Opens `/sse`, asserts it starts, records the 200 and returns the open body.
async fn sse_open(
    spec: &mut Spec,
    server: &RunningServer,
    path: &str,
    headers: &[(&str, &str)],
) -> hyper::body::Incoming {
    let resp = open(server, "GET", path, headers, "").await;
    let (status, resp_headers) = (resp.status().as_u16(), resp.headers().clone());
    assert_eq!(status, 200, "{path}");
    let mut body = resp.into_body();
    let mut text = String::new();
    read_sse(&mut body, &mut text, |t| t.ends_with("\n\n")).await;
    assert_eq!(text, ": subscribed\n\n", "{path}");
    spec.check("/sse", "get", &Reply { status, headers: resp_headers, body: text });
    body
}

/// `/sse` with every kind of credential and every namespace rule.
async fn sse_credentials(spec: &mut Spec, server: &RunningServer, clock: &Clock) {
    let login =
        call(server, "POST", "/auth/login", None, r#"{"name":"alice","password":"S3cret!pass"}"#).await;
    let alice = session_token(&login, clock, "alice", false);
    let bearer = format!("Bearer {alice}");
    let token = jwt(clock, "jill", 3600, &["vip:*"]);

    // 200: a session in the query or a Bearer header, a JWT grant, a static token.
    let streams = [
        sse_open(spec, server, &format!("/sse?channel=me:alice&token={alice}"), &[]).await,
        sse_open(spec, server, "/sse?channel=members:x", &[("authorization", &bearer)]).await,
        sse_open(spec, server, &format!("/sse?channel=vip:gold&token={token}"), &[]).await,
        sse_open(spec, server, &format!("/sse?channel=members:x&token={STATIC_TOKEN}"), &[]).await,
    ];
    drop(streams);

    let basic = format!("Basic {alice}");
    // (path, headers, status, code)
    let cases = [
        (format!("/sse?channel=news&token={FAKE_SESSION}"), vec![], 401, "invalid_token"),
        (
            "/sse?channel=news".to_owned(),
            vec![("authorization", "Bearer unknown-token-0123456789")],
            401,
            "invalid_token",
        ),
        (format!("/sse?channel=news&token={}x", &token[..token.len() - 1]), vec![], 401, "invalid_token"),
        (format!("/sse?channel=news&token={API_KEY}"), vec![], 401, "invalid_token"),
        // The query parameter wins over the header.
        (
            "/sse?channel=members:x&token=unknown-token-0123456789".to_owned(),
            vec![("authorization", &bearer)],
            401,
            "invalid_token",
        ),
        // Anonymous (a header with another scheme is ignored; a token without a user).
        ("/sse?channel=members:x".to_owned(), vec![("authorization", &basic)], 401, "unauthenticated"),
        ("/sse?channel=me:alice".to_owned(), vec![], 401, "unauthenticated"),
        (format!("/sse?channel=members:x&token={ZONE_TOKEN}"), vec![], 401, "unauthenticated"),
        ("/sse?channel=vip:gold".to_owned(), vec![], 403, "grant_required"),
        (format!("/sse?channel=vip:gold&token={alice}"), vec![], 403, "grant_required"),
        (format!("/sse?channel=me:bob&token={alice}"), vec![], 403, "personal_channel"),
    ];
    for (path, headers, status, code) in cases {
        let r = send(server, "GET", &path, &headers, "").await;
        assert_eq!((r.status, r.code().as_str()), (status, code), "{path} {headers:?}");
        spec.check("/sse", "get", &r);
    }

    // Revoking the stream's session ends it with `event: disconnect` and code 4003.
    let mut body = sse_open(spec, server, &format!("/sse?channel=members:y&token={alice}"), &[]).await;
    expect(spec, server, LOGOUT, Some(&alice), "", (204, "")).await;
    let mut text = String::new();
    read_sse(&mut body, &mut text, |t| t.contains("event: disconnect\n") && t.ends_with("\n\n")).await;
    assert!(
        text.ends_with(
            "event: disconnect\ndata: {\"code\":4003,\"reason\":\"credentials expired or revoked\"}\n\n"
        ),
        "{text:?}"
    );
}

/// Expired sessions and JWTs, and "remember me", on the manual clock.
async fn expiry(spec: &mut Spec, server: &RunningServer, clock: &Clock) {
    let login =
        |persistent: bool| json!({"name": "alice", "password": PW, "persistent": persistent}).to_string();
    let short = call(server, "POST", "/auth/login", None, &login(false)).await;
    let short = session_token(&short, clock, "alice", false);
    let long = call(server, "POST", "/auth/login", None, &login(true)).await;
    let long = session_token(&long, clock, "alice", true);
    let token = jwt(clock, "jill", 60, &["vip:*"]);
    clock.advance(std::time::Duration::from_millis(u64::try_from(TTL_MS).expect("u64")));

    for t in [short.as_str(), long.as_str(), token.as_str()] {
        // `/auth/me` never renews, not even a persistent session.
        expect(spec, server, ME, Some(t), "", (401, "token_expired")).await;
        let r = send(server, "GET", &format!("/sse?channel=news&token={t}"), &[], "").await;
        assert_eq!((r.status, r.code().as_str()), (401, "token_expired"));
        spec.check("/sse", "get", &r);
    }
    for (route, body) in SESSION_ROUTES {
        expect(spec, server, route, Some(&short), body, (401, "token_expired")).await;
    }
    // An expired persistent session is renewed by refresh, within its remember window.
    let r = expect(spec, server, REFRESH, Some(&long), "", (200, "")).await;
    let renewed = session_token(&r, clock, "alice", true);
    expect(spec, server, ME, Some(&renewed), "", (200, "")).await;
    expect(spec, server, ME, Some(&long), "", (401, "invalid_token")).await;
}

/// Accounts off (and anonymous streams too): every account route is 403, `/auth/me` still
/// verifies, `/sse` wants a credential.
async fn accounts_disabled(spec: &mut Spec) {
    let mut c = config();
    c.auth.accounts.enabled = false;
    c.auth.allow_anonymous = false;
    let server = start(c).await;
    expect(spec, &server, REGISTER, None, &register_body("alice"), (403, "accounts_disabled")).await;
    expect(
        spec,
        &server,
        LOGIN,
        None,
        r#"{"name":"alice","password":"S3cret!pass"}"#,
        (403, "accounts_disabled"),
    )
    .await;
    for (route, body) in SESSION_ROUTES {
        expect(spec, &server, route, Some(FAKE_SESSION), body, (403, "accounts_disabled")).await;
    }
    expect(spec, &server, ME, Some(FAKE_SESSION), "", (403, "accounts_disabled")).await;
    let r = send(&server, "GET", "/sse?channel=news", &[], "").await;
    assert_eq!((r.status, r.code().as_str()), (401, "unauthenticated"));
    spec.check("/sse", "get", &r);
    server.shutdown().await.expect("shutdown");
}

/// Registration closed: accounts work, self-service registration does not.
async fn registration_closed(spec: &mut Spec) {
    let mut c = config();
    c.auth.accounts.registration = false;
    let server = start(c).await;
    expect(spec, &server, REGISTER, None, &register_body("alice"), (403, "permission_denied")).await;
    expect(
        spec,
        &server,
        LOGIN,
        None,
        r#"{"name":"alice","password":"S3cret!pass"}"#,
        (401, "invalid_credentials"),
    )
    .await;
    server.shutdown().await.expect("shutdown");
}

/// One registration and one login attempt per address, and a clock that never refills them.
async fn rate_limits(spec: &mut Spec) {
    let mut c = config();
    c.auth.rate_limits.register_ip_burst = 1;
    c.auth.rate_limits.login_ip_burst = 1;
    let (server, clock) = start_clocked(c).await;
    register(spec, &server, &clock, "erin").await;
    expect(spec, &server, REGISTER, None, &register_body("frank"), (429, "rate_limited")).await;
    let wrong = r#"{"name":"erin","password":"Wrong!pw1"}"#;
    expect(spec, &server, LOGIN, None, wrong, (401, "invalid_credentials")).await;
    expect(spec, &server, LOGIN, None, r#"{"name":"erin","password":"S3cret!pass"}"#, (429, "rate_limited"))
        .await;
    server.shutdown().await.expect("shutdown");
}

/// The database loses its tables under the running server: every route that needs it is 500.
async fn store_failure(spec: &mut Spec) {
    let c = config();
    let db = c.data_dir.join("tether.db");
    let server = start(c).await;
    let conn = rusqlite::Connection::open(&db).expect("open the server's database");
    conn.execute_batch("DROP TABLE sessions; DROP TABLE users;").expect("drop tables");
    drop(conn);
    expect(spec, &server, REGISTER, None, &register_body("gail"), (500, "internal")).await;
    expect(spec, &server, LOGIN, None, r#"{"name":"gail","password":"S3cret!pass"}"#, (500, "internal"))
        .await;
    for (route, body) in SESSION_ROUTES {
        expect(spec, &server, route, Some(FAKE_SESSION), body, (500, "internal")).await;
    }
    expect(spec, &server, ME, Some(FAKE_SESSION), "", (500, "internal")).await;
    let r = send(&server, "GET", &format!("/sse?channel=news&token={FAKE_SESSION}"), &[], "").await;
    assert_eq!((r.status, r.code().as_str()), (500, "internal"));
    assert!(!r.body.contains("sessions"), "no internal details in the message: {}", r.body);
    spec.check("/sse", "get", &r);
    server.shutdown().await.expect("shutdown");
}

/// Every `/auth` route, and `/sse` with credentials.
async fn accounts(spec: &mut Spec) {
    let (server, clock) = start_clocked(accounts_config()).await;
    register_and_login(spec, &server, &clock).await;
    sessions(spec, &server, &clock).await;
    sse_credentials(spec, &server, &clock).await;
    expiry(spec, &server, &clock).await;
    server.shutdown().await.expect("shutdown");
    accounts_disabled(spec).await;
    registration_closed(spec).await;
    rate_limits(spec).await;
    store_failure(spec).await;
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
    history_routes(&mut spec, &server).await;
    operations(&mut spec, &server).await;
    websockets(&mut spec, &server).await;
    event_route(&mut spec, &server).await;
    sse(&mut spec, &server).await;
    server.shutdown().await.expect("shutdown");
    readyz_shutting_down(&mut spec).await;
    connection_limits(&mut spec).await;
    event_server_disabled(&mut spec).await;
    presence_routes(&mut spec).await;
    accounts(&mut spec).await;
    model_sync(&mut spec).await;

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
