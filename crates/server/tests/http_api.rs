//! The HTTP server API (`/api/publish`, `/api/broadcast`, `/api/batch`) over real
//! sockets, delivering to native WebSocket subscribers.

mod common;

use common::*;
use serde_json::{Value, json};
use tether_server::RunningServer;
use tether_server::config::NamespaceConfig;

/// The channel every test subscriber also joins; a publication there marks the end of
/// what a test expects, so "nothing else arrived" needs no waiting.
const END: &str = "end";

/// Asserts a JSON error body `{"code":…,"message":…}` with `status` and `code`; returns
/// the message.
fn assert_error(reply: &(u16, String), status: u16, code: &str) -> String {
    let v: Value = serde_json::from_str(&reply.1).unwrap_or_else(|_| panic!("JSON error body: {reply:?}"));
    assert_eq!((reply.0, v["code"].as_str()), (status, Some(code)), "{reply:?}");
    v["message"].as_str().expect("message").to_owned()
}

/// A native connection that declared `identity` (needs `auth.allow_client_identity`).
async fn native_as(server: &RunningServer, identity: Value) -> Ws {
    let mut ws = ws(server, "/ws").await;
    let r = request(&mut ws, 1, json!({"op":"connect","identity":identity})).await;
    assert!(r.get("result").is_some(), "{r}");
    ws
}

/// Subscribes to `channel` (with an optional filter) and to [`END`].
async fn subscribe(ws: &mut Ws, channel: &str, filter: Option<&str>) {
    let mut body = json!({"op":"subscribe","channel":channel});
    if let Some(f) = filter {
        body["filter"] = Value::from(f);
    }
    let r = request(ws, 100, body).await;
    assert_eq!(r["result"], json!({}), "subscribe {channel}: {r}");
    join_end(ws).await;
}

async fn join_end(ws: &mut Ws) {
    let r = request(ws, 101, json!({"op":"subscribe","channel":END})).await;
    assert!(r.get("result").is_some() || r["error"]["code"] == "already_subscribed", "{r}");
}

async fn publish_ok(server: &RunningServer, body: Value) {
    let (s, b) = api(server, "/api/publish", &body.to_string()).await;
    assert_eq!((s, b.as_str()), (200, "{}"), "publish {body}");
}

/// Publishes the end marker.
async fn end(server: &RunningServer) {
    publish_ok(server, json!({"channel":END,"data":"end"})).await;
}

/// Every publication received before the end marker, as `(channel, data)` pairs.
async fn until_end(ws: &mut Ws) -> Vec<(String, Value)> {
    let mut got = Vec::new();
    loop {
        let v = recv_json(ws).await;
        assert_eq!(v["push"], "pub", "{v}");
        let channel = v["channel"].as_str().expect("channel").to_owned();
        if channel == END {
            return got;
        }
        got.push((channel, v["data"].clone()));
    }
}

/// The data values received before the end marker.
async fn data_until_end(ws: &mut Ws) -> Vec<Value> {
    until_end(ws).await.into_iter().map(|(_, d)| d).collect()
}

/// The value of a metric line (`name` includes labels) from `/metrics`.
async fn metric(server: &RunningServer, name: &str) -> u64 {
    let (s, text) = http(server, "GET", "/metrics", &[], "").await;
    assert_eq!(s, 200);
    let prefix = format!("{name} ");
    let line = text.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("metric {name}"));
    line[prefix.len()..].trim().parse().unwrap_or_else(|_| panic!("numeric {line}"))
}

fn identity_config() -> tether_server::Config {
    let mut c = config();
    c.auth.allow_client_identity = true;
    c
}

// ---------------------------------------------------------------------------------------
// Happy paths
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn publish_delivers_once_and_in_order() {
    let server = start(config()).await;
    let mut a = native(&server).await;
    let mut b = native(&server).await;
    let mut other = native(&server).await;
    subscribe(&mut a, "news", None).await;
    subscribe(&mut b, "news", None).await;
    subscribe(&mut other, "sport", None).await;
    for n in 0..50 {
        publish_ok(&server, json!({"channel":"news","data":{"n":n}})).await;
    }
    end(&server).await;
    let expected: Vec<Value> = (0..50).map(|n| json!({"n": n})).collect();
    assert_eq!(data_until_end(&mut a).await, expected);
    assert_eq!(data_until_end(&mut b).await, expected);
    assert_eq!(data_until_end(&mut other).await, Vec::<Value>::new());
}

#[tokio::test]
async fn publish_frame_is_exact_and_compact() {
    let server = start(config()).await;
    let mut ws = native(&server).await;
    subscribe(&mut ws, "news", None).await;
    let (s, b) = api(
        &server,
        "/api/publish",
        "{ \"channel\" : \"news\",\n \"data\" : { \"a\" : [ 1 , \"b c\" ] },\n \"tags\": {\"k\":\"v\"} }",
    )
    .await;
    assert_eq!((s, b.as_str()), (200, "{}"));
    assert_eq!(
        recv_text(&mut ws).await,
        r#"{"push":"pub","channel":"news","data":{"a":[1,"b c"]},"tags":{"k":"v"}}"#
    );
    publish_ok(&server, json!({"channel":"news","data":null,"tags":null,"to":null})).await;
    assert_eq!(recv_text(&mut ws).await, r#"{"push":"pub","channel":"news","data":null}"#);
}

#[tokio::test]
async fn broadcast_to_three_channels() {
    let server = start(config()).await;
    let mut all = native(&server).await;
    for ch in ["a", "chat:b", "c"] {
        subscribe(&mut all, ch, None).await;
    }
    let mut only_b = native(&server).await;
    subscribe(&mut only_b, "chat:b", None).await;
    let mut none = native(&server).await;
    subscribe(&mut none, "d", None).await;
    let (s, b) = api(&server, "/api/broadcast", r#"{"channels":["a","chat:b","c"],"data":{"x":1}}"#).await;
    assert_eq!((s, b.as_str()), (200, r#"{"results":[{},{},{}]}"#));
    end(&server).await;
    let x = json!({"x":1});
    assert_eq!(
        until_end(&mut all).await,
        vec![("a".to_owned(), x.clone()), ("chat:b".to_owned(), x.clone()), ("c".to_owned(), x.clone())]
    );
    assert_eq!(until_end(&mut only_b).await, vec![("chat:b".to_owned(), x)]);
    assert_eq!(until_end(&mut none).await, vec![]);
}

#[tokio::test]
async fn batch_publishes_in_order() {
    let server = start(config()).await;
    let mut both = native(&server).await;
    subscribe(&mut both, "a", None).await;
    subscribe(&mut both, "b", None).await;
    let mut only_a = native(&server).await;
    subscribe(&mut only_a, "a", None).await;
    let body = json!({"publications":[
        {"channel":"a","data":1},
        {"channel":"b","data":2},
        {"channel":"a","data":3,"tags":{"k":"v"}},
        {"channel":"b","data":4},
        {"channel":"a","data":5},
    ]});
    let (s, b) = api(&server, "/api/batch", &body.to_string()).await;
    assert_eq!((s, b.as_str()), (200, r#"{"results":[{},{},{},{},{}]}"#));
    end(&server).await;
    let got = until_end(&mut both).await;
    let want: Vec<(String, Value)> = [("a", 1), ("b", 2), ("a", 3), ("b", 4), ("a", 5)]
        .iter()
        .map(|(c, n)| ((*c).to_owned(), json!(n)))
        .collect();
    assert_eq!(got, want);
    assert_eq!(data_until_end(&mut only_a).await, vec![json!(1), json!(3), json!(5)]);
    let (s, b) = api(&server, "/api/batch", r#"{"publications":[]}"#).await;
    assert_eq!((s, b.as_str()), (200, r#"{"results":[]}"#));
}

// ---------------------------------------------------------------------------------------
// Validation: all or nothing
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn batch_validation_is_all_or_nothing() {
    let mut c = config();
    c.default_namespace = NamespaceConfig { max_message_bytes: 64, ..Default::default() };
    let server = start(c).await;
    let mut ws = native(&server).await;
    subscribe(&mut ws, "a", None).await;
    let big = "x".repeat(100);
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"channel":"a b","data":1}), 400, "invalid_channel"),
        (json!({"channel":7,"data":1}), 400, "invalid_message"),
        (json!({"channel":"nowhere:x","data":1}), 400, "unknown_namespace"),
        (json!({"channel":"a"}), 400, "invalid_message"),
        (json!({"channel":"a","data":1,"extra":true}), 400, "invalid_message"),
        (json!({"channel":"a","data":1,"tags":{"k":1}}), 400, "invalid_tags"),
        (json!({"channel":"a","data":1,"to":{"users":[""]}}), 400, "invalid_target"),
        (json!({"channel":"a","data":1,"to":{"groups":["x"]}}), 400, "invalid_target"),
        (json!({"channel":"a","data":big}), 413, "message_too_large"),
        (json!(["a", 1]), 400, "invalid_message"),
        (json!("a"), 400, "invalid_message"),
        (json!(null), 400, "invalid_message"),
    ];
    for (bad, status, code) in cases {
        let body = json!({"publications":[
            {"channel":"a","data":1},
            {"channel":"a","data":2},
            bad,
            {"channel":"a","data":3},
        ]});
        let reply = api(&server, "/api/batch", &body.to_string()).await;
        let msg = assert_error(&reply, status, code);
        assert!(msg.starts_with("publications[2]: "), "names the item: {msg} ({body})");
    }
    end(&server).await;
    assert_eq!(data_until_end(&mut ws).await, Vec::<Value>::new(), "nothing was delivered");
    assert_eq!(metric(&server, "tether_publications_total").await, 1, "only the end marker");
}

#[tokio::test]
async fn broadcast_validation_is_all_or_nothing() {
    let mut c = config();
    c.namespaces.get_mut("chat").expect("chat").max_message_bytes = 8;
    let server = start(c).await;
    let mut ws = native(&server).await;
    subscribe(&mut ws, "a", None).await;
    let reply = api(&server, "/api/broadcast", r#"{"channels":["a","a b","c"],"data":1}"#).await;
    let msg = assert_error(&reply, 400, "invalid_channel");
    assert!(msg.starts_with("channels[1]: "), "{msg}");
    let reply = api(&server, "/api/broadcast", r#"{"channels":["a","nowhere:x"],"data":1}"#).await;
    let msg = assert_error(&reply, 400, "unknown_namespace");
    assert!(msg.starts_with("channels[1]: "), "{msg}");
    // Sizes are per namespace: fine for `a`, too large for `chat:x`.
    let reply = api(&server, "/api/broadcast", r#"{"channels":["a","chat:x"],"data":"0123456789"}"#).await;
    let msg = assert_error(&reply, 413, "message_too_large");
    assert!(msg.starts_with("channels[1]: "), "{msg}");
    let reply = api(&server, "/api/broadcast", r#"{"channels":["a"],"data":1,"tags":{"k":2}}"#).await;
    assert_error(&reply, 400, "invalid_tags");
    let reply = api(&server, "/api/broadcast", r#"{"channels":["a"]}"#).await;
    assert_error(&reply, 400, "invalid_message");
    end(&server).await;
    assert_eq!(data_until_end(&mut ws).await, Vec::<Value>::new(), "nothing was delivered");
}

#[tokio::test]
async fn too_many_items() {
    let mut c = config();
    c.http.max_batch_items = 2;
    let server = start(c).await;
    let item = json!({"channel":"a","data":1});
    let body = json!({"publications":[item.clone(), item.clone(), item]});
    let reply = api(&server, "/api/batch", &body.to_string()).await;
    assert_error(&reply, 400, "too_many_items");
    let reply = api(&server, "/api/broadcast", r#"{"channels":["a","b","c"],"data":1}"#).await;
    assert_error(&reply, 400, "too_many_items");
    let (s, _) = api(&server, "/api/broadcast", r#"{"channels":["a","b"],"data":1}"#).await;
    assert_eq!(s, 200);
}

// ---------------------------------------------------------------------------------------
// Tags and filters
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn filters_receive_exactly_the_matching_publications() {
    let server = start(config()).await;
    let filters = [None, Some("kind=a"), Some("kind=b"), Some("kind in (a, c)"), Some("kind=a, lang=en")];
    let mut subs = Vec::new();
    for f in filters {
        let mut ws = native(&server).await;
        subscribe(&mut ws, "news", f).await;
        subs.push(ws);
    }
    let pubs = [
        (1, json!({"kind":"a"})),
        (2, json!({"kind":"b"})),
        (3, json!({"kind":"c"})),
        (4, json!({"kind":"a","lang":"en"})),
        (5, json!({"kind":"a","lang":"fr"})),
        (6, json!({})),
        (7, json!({"other":"a"})),
    ];
    for (n, tags) in &pubs {
        publish_ok(&server, json!({"channel":"news","data":n,"tags":tags})).await;
    }
    publish_ok(&server, json!({"channel":"news","data":8})).await;
    end(&server).await;
    let expected: [&[i64]; 5] = [&[1, 2, 3, 4, 5, 6, 7, 8], &[1, 4, 5], &[2], &[1, 3, 4, 5], &[4]];
    for ((ws, f), want) in subs.iter_mut().zip(filters).zip(expected) {
        let got = data_until_end(ws).await;
        let want: Vec<Value> = want.iter().map(|n| json!(n)).collect();
        assert_eq!(got, want, "filter {f:?}");
    }
}

#[tokio::test]
async fn filters_apply_to_broadcast_and_batch() {
    let server = start(config()).await;
    let mut a = native(&server).await;
    subscribe(&mut a, "x", Some("k=a")).await;
    let (s, _) = api(&server, "/api/broadcast", r#"{"channels":["x","y"],"data":1,"tags":{"k":"b"}}"#).await;
    assert_eq!(s, 200);
    let (s, _) = api(&server, "/api/broadcast", r#"{"channels":["x","y"],"data":2,"tags":{"k":"a"}}"#).await;
    assert_eq!(s, 200);
    let (s, _) = api(
        &server,
        "/api/batch",
        r#"{"publications":[{"channel":"x","data":3,"tags":{"k":"b"}},{"channel":"x","data":4,"tags":{"k":"a"}}]}"#,
    )
    .await;
    assert_eq!(s, 200);
    end(&server).await;
    assert_eq!(data_until_end(&mut a).await, vec![json!(2), json!(4)]);
}

// ---------------------------------------------------------------------------------------
// Identity targeting
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn to_users_reaches_only_those_users() {
    let server = start(identity_config()).await;
    let mut alice1 = native_as(&server, json!({"user":"alice","zone":"eu"})).await;
    let mut alice2 = native_as(&server, json!({"user":"alice","zone":"us","device":"phone"})).await;
    let mut bob = native_as(&server, json!({"user":"bob","zone":"eu"})).await;
    let mut carol = native_as(&server, json!({"user":"carol"})).await;
    let mut anon = native(&server).await;
    for ws in [&mut alice1, &mut alice2, &mut bob, &mut carol, &mut anon] {
        subscribe(ws, "news", None).await;
    }
    let publish = |data: i64, to: Value| {
        let server = &server;
        async move { publish_ok(server, json!({"channel":"news","data":data,"to":to})).await }
    };
    publish(1, json!({"users":["alice"]})).await;
    publish(2, json!({"users":["alice"],"zones":["eu"]})).await;
    publish(3, json!({"zones":["eu"]})).await;
    publish(4, json!({"users":["bob","carol","nobody"]})).await;
    publish(5, json!({"devices":["phone"]})).await;
    publish(6, json!({})).await;
    publish(7, json!({"users":["alice"],"zones":["us"],"devices":["tablet"]})).await;
    let (s, _) =
        api(&server, "/api/broadcast", r#"{"channels":["news"],"data":8,"to":{"users":["bob"]}}"#).await;
    assert_eq!(s, 200);
    let (s, _) = api(
        &server,
        "/api/batch",
        r#"{"publications":[{"channel":"news","data":9,"to":{"users":["carol"]}}]}"#,
    )
    .await;
    assert_eq!(s, 200);
    end(&server).await;
    let cases: [(&mut Ws, &str, &[i64]); 5] = [
        (&mut alice1, "alice/eu", &[1, 2, 3, 6]),
        (&mut alice2, "alice/us/phone", &[1, 5, 6]),
        (&mut bob, "bob/eu", &[3, 4, 6, 8]),
        (&mut carol, "carol", &[4, 6, 9]),
        (&mut anon, "anonymous", &[6]),
    ];
    for (ws, who, want) in cases {
        let want: Vec<Value> = want.iter().map(|n| json!(n)).collect();
        assert_eq!(data_until_end(ws).await, want, "{who}");
    }
}

#[tokio::test]
async fn targeting_combines_with_filters() {
    let server = start(identity_config()).await;
    let mut alice_a = native_as(&server, json!({"user":"alice"})).await;
    subscribe(&mut alice_a, "news", Some("k=a")).await;
    let mut alice_all = native_as(&server, json!({"user":"alice"})).await;
    subscribe(&mut alice_all, "news", None).await;
    let mut bob_a = native_as(&server, json!({"user":"bob"})).await;
    subscribe(&mut bob_a, "news", Some("k=a")).await;
    publish_ok(&server, json!({"channel":"news","data":1,"tags":{"k":"a"},"to":{"users":["alice"]}})).await;
    publish_ok(&server, json!({"channel":"news","data":2,"tags":{"k":"b"},"to":{"users":["alice"]}})).await;
    end(&server).await;
    assert_eq!(data_until_end(&mut alice_a).await, vec![json!(1)]);
    assert_eq!(data_until_end(&mut alice_all).await, vec![json!(1), json!(2)]);
    assert_eq!(data_until_end(&mut bob_a).await, Vec::<Value>::new());
}

// ---------------------------------------------------------------------------------------
// Request errors
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn unauthenticated_is_401_with_www_authenticate() {
    let server = start(config()).await;
    let body = r#"{"channel":"news","data":1}"#;
    let json_ct = ("content-type", "application/json");
    for (what, headers) in [
        ("no header", vec![json_ct]),
        ("unknown key", vec![json_ct, ("authorization", "Bearer wrong-key-0123456789")]),
        ("other scheme", vec![json_ct, ("authorization", "Basic test-api-key-0123456789")]),
        ("no scheme", vec![json_ct, ("authorization", API_KEY)]),
        ("empty key", vec![json_ct, ("authorization", "Bearer ")]),
    ] {
        for path in ["/api/publish", "/api/broadcast", "/api/batch"] {
            let (s, h, b) = http_full(&server, "POST", path, &headers, body).await;
            assert_error(&(s, b), 401, "unauthenticated");
            assert_eq!(
                h.get("www-authenticate").map(|v| v.as_bytes()),
                Some(&b"Bearer"[..]),
                "{what} {path}"
            );
        }
    }
    assert_eq!(metric(&server, "tether_publications_total").await, 0);
}

/// Regression: the auth scheme is case-insensitive (RFC 9110 § 11.1), and one or more
/// spaces may separate it from the credentials.
#[tokio::test]
async fn bearer_scheme_is_case_insensitive() {
    let server = start(config()).await;
    for auth in [format!("bearer {API_KEY}"), format!("BEARER {API_KEY}"), format!("Bearer   {API_KEY}")] {
        let (s, b) = http(
            &server,
            "POST",
            "/api/publish",
            &[("authorization", &auth), ("content-type", "application/json")],
            r#"{"channel":"news","data":1}"#,
        )
        .await;
        assert_eq!((s, b.as_str()), (200, "{}"), "{auth}");
    }
}

#[tokio::test]
async fn auth_is_checked_before_the_body() {
    let server = start(config()).await;
    let (s, b) = http(&server, "POST", "/api/publish", &[("content-type", "text/plain")], "nope").await;
    assert_error(&(s, b), 401, "unauthenticated");
}

#[tokio::test]
async fn wrong_content_type_is_415() {
    let server = start(config()).await;
    let auth = format!("Bearer {API_KEY}");
    let body = r#"{"channel":"news","data":1}"#;
    for ct in ["text/plain", "application/x-www-form-urlencoded", "application/jsonx", "multipart/form-data"]
    {
        for path in ["/api/publish", "/api/broadcast", "/api/batch"] {
            let reply =
                http(&server, "POST", path, &[("authorization", &auth), ("content-type", ct)], body).await;
            assert_error(&reply, 415, "unsupported_media_type");
        }
    }
    for ct in ["application/json; charset=utf-8", "Application/JSON"] {
        let reply =
            http(&server, "POST", "/api/publish", &[("authorization", &auth), ("content-type", ct)], body)
                .await;
        assert_eq!(reply, (200, "{}".to_owned()), "{ct}");
    }
    assert_eq!(metric(&server, "tether_publications_total").await, 2);
}

#[tokio::test]
async fn body_over_limit_is_413() {
    let mut c = config();
    c.http.max_body_bytes = 256;
    let server = start(c).await;
    let big = json!({"channel":"news","data":"x".repeat(1000)}).to_string();
    for path in ["/api/publish", "/api/broadcast", "/api/batch"] {
        assert_error(&api(&server, path, &big).await, 413, "payload_too_large");
    }
    let (s, _) = api(&server, "/api/publish", r#"{"channel":"news","data":1}"#).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn data_over_namespace_limit_is_413_message_too_large() {
    let mut c = config();
    c.default_namespace = NamespaceConfig { max_message_bytes: 32, ..Default::default() };
    let server = start(c).await;
    let mut ws = native(&server).await;
    subscribe(&mut ws, "news", None).await;
    let reply =
        api(&server, "/api/publish", &json!({"channel":"news","data":"x".repeat(64)}).to_string()).await;
    assert_error(&reply, 413, "message_too_large");
    // The limit applies to the compact form: exactly 32 bytes once minified passes.
    let exactly = format!("\"{}\"", "y".repeat(30));
    let padded = format!("{{\"channel\":\"news\",\"data\":  {exactly}  }}");
    let (s, _) = api(&server, "/api/publish", &padded).await;
    assert_eq!(s, 200);
    let pretty = "{\"channel\":\"news\",\"data\":[1,    2,    3,    4,    5,    6,    7,    8]}";
    let (s, _) = api(&server, "/api/publish", pretty).await;
    assert_eq!(s, 200, "whitespace does not count");
    end(&server).await;
    assert_eq!(data_until_end(&mut ws).await, vec![json!("y".repeat(30)), json!([1, 2, 3, 4, 5, 6, 7, 8])]);
}

#[tokio::test]
async fn unknown_fields_are_400_invalid_message() {
    let server = start(config()).await;
    for (path, body) in [
        ("/api/publish", r#"{"channel":"news","data":1,"chanel":"x"}"#),
        ("/api/broadcast", r#"{"channels":["news"],"data":1,"extra":1}"#),
        ("/api/batch", r#"{"publications":[],"extra":1}"#),
    ] {
        let msg = assert_error(&api(&server, path, body).await, 400, "invalid_message");
        assert!(!msg.contains("line"), "no parser location: {msg}");
    }
}

#[tokio::test]
async fn malformed_and_non_object_bodies() {
    let server = start(config()).await;
    let mut ws = native(&server).await;
    subscribe(&mut ws, "news", None).await;
    for path in ["/api/publish", "/api/broadcast", "/api/batch"] {
        for body in ["", "{", r#"{"channel":"news","data":1"#, "nope", r#"{"channel":"news","data":1} x"#] {
            assert_error(&api(&server, path, body).await, 400, "malformed_json");
        }
        for body in ["null", "1", r#""news""#, "[]"] {
            assert_error(&api(&server, path, body).await, 400, "invalid_message");
        }
    }
    end(&server).await;
    assert_eq!(data_until_end(&mut ws).await, Vec::<Value>::new());
}

/// Regression: serde reports the first error it meets, so a truncated body with an
/// unknown or misplaced field came back as `invalid_message` instead of `malformed_json`.
#[tokio::test]
async fn truncated_bodies_are_malformed_even_after_a_bad_field() {
    let server = start(config()).await;
    for (path, body) in [
        ("/api/publish", r#"{"channel":"news","data":1,"extra":"#),
        ("/api/publish", r#"{"channels":["news"],"data":1"#),
        ("/api/broadcast", r#"{"channel":"news","data":1"#),
        ("/api/batch", r#"{"publication":[{"channel":"news","data":1}"#),
        ("/api/batch", r#"{"publications":{"channel":"news"}"#),
    ] {
        assert_error(&api(&server, path, body).await, 400, "malformed_json");
    }
}

/// Regression: serde reads a struct from a JSON array positionally, so `["news",1]` was
/// accepted as `{"channel":"news","data":1}` and published.
#[tokio::test]
async fn array_bodies_are_not_requests() {
    let server = start(config()).await;
    let mut ws = native(&server).await;
    subscribe(&mut ws, "news", None).await;
    for (path, body) in [
        ("/api/publish", r#"["news",1]"#),
        ("/api/broadcast", r#"[["news"],1]"#),
        ("/api/batch", r#"[[{"channel":"news","data":1}]]"#),
        ("/api/batch", r#"{"publications":[["news",1]]}"#),
    ] {
        assert_error(&api(&server, path, body).await, 400, "invalid_message");
    }
    end(&server).await;
    assert_eq!(data_until_end(&mut ws).await, Vec::<Value>::new());
}

/// Regression: a structural error inside one batch item (missing field, unknown field,
/// wrong type) was reported without naming the item.
#[tokio::test]
async fn batch_item_structure_errors_name_the_item() {
    let server = start(config()).await;
    for (item, needle) in
        [(r#"{"channel":"a"}"#, "data"), (r#"{"channel":"a","data":1,"x":1}"#, "x"), ("1", "object")]
    {
        let body = format!(r#"{{"publications":[{{"channel":"a","data":1}},{item}]}}"#);
        let msg = assert_error(&api(&server, "/api/batch", &body).await, 400, "invalid_message");
        assert!(msg.starts_with("publications[1]: ") && msg.contains(needle), "{msg}");
    }
}

#[tokio::test]
async fn unknown_namespace_and_invalid_channel() {
    let server = start(config()).await;
    let reply = api(&server, "/api/publish", r#"{"channel":"nowhere:x","data":1}"#).await;
    assert_error(&reply, 400, "unknown_namespace");
    let reply = api(&server, "/api/publish", r#"{"channel":"a b","data":1}"#).await;
    assert_error(&reply, 400, "invalid_channel");
    let reply = api(&server, "/api/publish", r#"{"channel":["a"],"data":1}"#).await;
    assert_error(&reply, 400, "invalid_message");
    let reply = api(&server, "/api/publish", r#"{"channel":"a","data":1,"to":{"users":"alice"}}"#).await;
    assert_error(&reply, 400, "invalid_target");
    let reply = api(&server, "/api/publish", r#"{"channel":"a","data":1,"tags":{"bad key":"v"}}"#).await;
    assert_error(&reply, 400, "invalid_tags");
}

#[tokio::test]
async fn routes_and_methods() {
    let server = start(config()).await;
    let auth = format!("Bearer {API_KEY}");
    let reply = http(&server, "GET", "/api/publish", &[("authorization", &auth)], "").await;
    assert_error(&reply, 405, "method_not_allowed");
    let reply = api(&server, "/api/nothing", "{}").await;
    assert_error(&reply, 404, "not_found");
    let (s, _, b) = http_full(&server, "GET", "/api/openapi.json", &[], "").await;
    assert_eq!(s, 200);
    serde_json::from_str::<Value>(&b).expect("OpenAPI document is JSON");
}

#[tokio::test]
async fn metrics_counters_move() {
    let server = start(config()).await;
    let mut ws = native(&server).await;
    subscribe(&mut ws, "news", None).await;
    let pubs = metric(&server, "tether_publications_total").await;
    let deliveries = metric(&server, "tether_deliveries_total").await;
    let e415 = metric(&server, r#"tether_errors_total{code="unsupported_media_type"}"#).await;
    let e401 = metric(&server, r#"tether_errors_total{code="unauthenticated"}"#).await;
    let e400 = metric(&server, r#"tether_errors_total{code="invalid_channel"}"#).await;
    let e413 = metric(&server, r#"tether_errors_total{code="message_too_large"}"#).await;
    publish_ok(&server, json!({"channel":"news","data":1})).await;
    let (s, _) = api(&server, "/api/broadcast", r#"{"channels":["news","other"],"data":2}"#).await;
    assert_eq!(s, 200);
    let (s, _) = api(&server, "/api/batch", r#"{"publications":[{"channel":"news","data":3}]}"#).await;
    assert_eq!(s, 200);
    let auth = format!("Bearer {API_KEY}");
    let r = http(
        &server,
        "POST",
        "/api/publish",
        &[("authorization", &auth), ("content-type", "text/plain")],
        "x",
    )
    .await;
    assert_eq!(r.0, 415);
    let r = http(&server, "POST", "/api/publish", &[], "x").await;
    assert_eq!(r.0, 401);
    let r = api(&server, "/api/batch", r#"{"publications":[{"channel":"a b","data":1}]}"#).await;
    assert_eq!(r.0, 400);
    let r =
        api(&server, "/api/publish", &json!({"channel":"news","data":"x".repeat(70_000)}).to_string()).await;
    assert_eq!(r.0, 413);
    assert_eq!(metric(&server, "tether_publications_total").await - pubs, 4);
    assert_eq!(metric(&server, "tether_deliveries_total").await - deliveries, 3);
    assert_eq!(metric(&server, r#"tether_errors_total{code="unsupported_media_type"}"#).await - e415, 1);
    assert_eq!(metric(&server, r#"tether_errors_total{code="unauthenticated"}"#).await - e401, 1);
    assert_eq!(metric(&server, r#"tether_errors_total{code="invalid_channel"}"#).await - e400, 1);
    assert_eq!(metric(&server, r#"tether_errors_total{code="message_too_large"}"#).await - e413, 1);
    end(&server).await;
    assert_eq!(data_until_end(&mut ws).await, vec![json!(1), json!(2), json!(3)]);
}

#[tokio::test]
async fn broadcast_refuses_a_repeated_channel() {
    let server = start(config()).await;
    let mut ws = native(&server).await;
    request(&mut ws, 2, serde_json::json!({"op":"subscribe","channel":"news"})).await;
    let (status, body) =
        api(&server, "/api/broadcast", r#"{"channels":["news","other","news"],"data":1}"#).await;
    assert_eq!(status, 400, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["code"], "invalid_message");
    assert!(v["message"].as_str().unwrap().contains("channels[2]"), "{v}");
    // Nothing was delivered: the next frame is the ping reply.
    let r = request(&mut ws, 3, serde_json::json!({"op":"ping"})).await;
    assert_eq!(r["result"], serde_json::json!({}));
}
