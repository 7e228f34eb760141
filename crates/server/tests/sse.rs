//! Server-sent events over a real socket, read incrementally as a streaming HTTP body.

mod common;

use std::sync::atomic::Ordering;

use common::*;
use common::{open_sse as open, open_sse_raw as open_raw};
use serde_json::{Value, json};
use tether_server::RunningServer;
use tether_server::config::TokenIdentity;

async fn publish(server: &RunningServer, body: Value) {
    let (s, b) = api(server, "/api/publish", &body.to_string()).await;
    assert_eq!((s, b.as_str()), (200, "{}"), "publish {body}");
}

fn error_code(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("JSON error body: {body}"));
    assert!(v["message"].is_string(), "{v}");
    v["code"].as_str().expect("code").to_owned()
}

#[tokio::test]
async fn subscribed_then_publication() {
    let server = start(config()).await;
    let (parts, mut sse) = open_raw(&server, "/sse?channel=news").await;
    assert_eq!(parts.status, 200);
    assert_eq!(parts.headers["content-type"], "text/event-stream");
    assert_eq!(parts.headers["cache-control"], "no-cache");
    assert_eq!(sse.next_block().await.as_deref(), Some(": subscribed\n\n"));
    publish(&server, json!({"channel":"news","data":{"n":1}})).await;
    assert_eq!(
        sse.next_event().await,
        "data: {\"push\":\"pub\",\"channel\":\"news\",\"data\":{\"n\":1}}\n\n"
    );
    publish(&server, json!({"channel":"news","data":"two","tags":{"k":"v"}})).await;
    assert_eq!(sse.next_data().await, r#"{"push":"pub","channel":"news","data":"two","tags":{"k":"v"}}"#);
}

#[tokio::test]
async fn pretty_printed_data_stays_on_one_line() {
    let server = start(config()).await;
    let mut sse = open(&server, "/sse?channel=news").await;
    let (s, _) = api(
        &server,
        "/api/publish",
        "{\"channel\":\"news\",\"data\":{\n  \"a\" : [1,\r\n 2],\n \"s\":\"x\\ny\"\n}}",
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(sse.next_data().await, r#"{"push":"pub","channel":"news","data":{"a":[1,2],"s":"x\ny"}}"#);
}

#[tokio::test]
async fn filter_delivers_only_matching_publications() {
    let server = start(config()).await;
    let mut sse = open(&server, "/sse?channel=news&filter=k%3Dv").await;
    let mut all = open(&server, "/sse?channel=news").await;
    publish(&server, json!({"channel":"news","data":1,"tags":{"k":"v"}})).await;
    publish(&server, json!({"channel":"news","data":2,"tags":{"k":"w"}})).await;
    publish(&server, json!({"channel":"news","data":3})).await;
    publish(&server, json!({"channel":"news","data":4,"tags":{"k":"v","x":"y"}})).await;
    assert_eq!(sse.next_data().await, r#"{"push":"pub","channel":"news","data":1,"tags":{"k":"v"}}"#);
    assert_eq!(sse.next_data().await, r#"{"push":"pub","channel":"news","data":4,"tags":{"k":"v","x":"y"}}"#);
    for n in 1..=4 {
        let v: Value = serde_json::from_str(&all.next_data().await).expect("json");
        assert_eq!(v["data"], n);
    }
}

#[tokio::test]
async fn in_filter_over_sse() {
    let server = start(config()).await;
    let mut sse = open(&server, "/sse?channel=news&filter=k%20in%20(a%2C%20c)").await;
    for (n, k) in [(1, "a"), (2, "b"), (3, "c"), (4, "d")] {
        publish(&server, json!({"channel":"news","data":n,"tags":{"k":k}})).await;
    }
    publish(&server, json!({"channel":"news","data":5,"tags":{"k":"a"}})).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let v: Value = serde_json::from_str(&sse.next_data().await).expect("json");
        got.push(v["data"].as_i64().expect("n"));
    }
    assert_eq!(got, [1, 3, 5]);
}

#[tokio::test]
async fn invalid_requests_are_400_json() {
    let server = start(config()).await;
    let get = |path: &'static str| {
        let server = &server;
        async move { http(server, "GET", path, &[], "").await }
    };
    let (s, b) = get("/sse?channel=a%20b").await;
    assert_eq!((s, error_code(&b).as_str()), (400, "invalid_channel"), "{b}");
    let (s, b) = get("/sse?channel=").await;
    assert_eq!((s, error_code(&b).as_str()), (400, "invalid_channel"), "{b}");
    let (s, b) = get("/sse?channel=news&filter=k%3D").await;
    assert_eq!((s, error_code(&b).as_str()), (400, "invalid_filter"), "{b}");
    let (s, b) = get("/sse?channel=news&filter=((").await;
    assert_eq!((s, error_code(&b).as_str()), (400, "invalid_filter"), "{b}");
    let (s, b) = get("/sse?channel=nowhere:x").await;
    assert_eq!((s, error_code(&b).as_str()), (400, "unknown_namespace"), "{b}");
    let (s, b) = get("/sse").await;
    assert_eq!((s, error_code(&b).as_str()), (400, "invalid_message"), "{b}");
    let (s, b) = get("/sse?channel=news&bogus=1").await;
    assert_eq!((s, error_code(&b).as_str()), (400, "invalid_message"), "{b}");
    assert_eq!(server.state.hub.subscription_count(), 0, "no subscription left behind");
    let m = &server.state.metrics;
    assert_eq!(m.errors_with(tether_proto::ErrorCode::InvalidChannel), 2);
    assert_eq!(m.errors_with(tether_proto::ErrorCode::InvalidFilter), 2);
    assert_eq!(m.errors_with(tether_proto::ErrorCode::UnknownNamespace), 1);
}

#[tokio::test]
async fn heartbeat_ping_comment() {
    let mut c = config();
    c.sse.heartbeat_ms = 20;
    let server = start(c).await;
    let mut sse = open(&server, "/sse?channel=news").await;
    assert_eq!(sse.next_block().await.as_deref(), Some(": ping\n\n"));
    assert_eq!(sse.next_block().await.as_deref(), Some(": ping\n\n"));
    publish(&server, json!({"channel":"news","data":1})).await;
    assert_eq!(sse.next_data().await, r#"{"push":"pub","channel":"news","data":1}"#);
}

#[tokio::test]
async fn graceful_shutdown_sends_disconnect_and_ends_stream() {
    let server = start(config()).await;
    let mut sse = open(&server, "/sse?channel=news").await;
    publish(&server, json!({"channel":"news","data":1})).await;
    assert_eq!(sse.next_data().await, r#"{"push":"pub","channel":"news","data":1}"#);
    let shutdown = tokio::spawn(server.shutdown());
    let block = sse.next_event().await;
    let data = block
        .strip_prefix("event: disconnect\ndata: ")
        .and_then(|d| d.strip_suffix("\n\n"))
        .unwrap_or_else(|| panic!("disconnect event, got {block:?}"));
    let v: Value = serde_json::from_str(data).expect("json");
    assert_eq!(v["code"], 1001, "{v}");
    assert!(v["reason"].is_string(), "{v}");
    assert_eq!(sse.next_block().await, None, "stream ends after disconnect");
    tokio::time::timeout(WAIT, shutdown).await.expect("shutdown within WAIT").expect("join").expect("serve");
}

#[tokio::test]
async fn order_and_exactly_once_for_200_publications() {
    let server = start(config()).await;
    let mut sse = open(&server, "/sse?channel=news").await;
    for n in 0..200 {
        publish(&server, json!({"channel":"news","data":{"n":n}})).await;
    }
    for n in 0..200 {
        assert_eq!(sse.next_data().await, format!(r#"{{"push":"pub","channel":"news","data":{{"n":{n}}}}}"#));
    }
    publish(&server, json!({"channel":"news","data":"end"})).await;
    assert_eq!(sse.next_data().await, r#"{"push":"pub","channel":"news","data":"end"}"#, "no duplicates");
    assert_eq!(server.state.metrics.deliveries.load(Ordering::Relaxed), 201);
}

#[tokio::test]
async fn batch_and_broadcast_reach_sse() {
    let server = start(config()).await;
    let mut a = open(&server, "/sse?channel=a").await;
    let mut b = open(&server, "/sse?channel=chat:b").await;
    let (s, _) = api(&server, "/api/broadcast", r#"{"channels":["a","chat:b"],"data":"x"}"#).await;
    assert_eq!(s, 200);
    let (s, _) = api(
        &server,
        "/api/batch",
        r#"{"publications":[{"channel":"chat:b","data":1},{"channel":"a","data":2},{"channel":"chat:b","data":3}]}"#,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(a.next_data().await, r#"{"push":"pub","channel":"a","data":"x"}"#);
    assert_eq!(a.next_data().await, r#"{"push":"pub","channel":"a","data":2}"#);
    assert_eq!(b.next_data().await, r#"{"push":"pub","channel":"chat:b","data":"x"}"#);
    assert_eq!(b.next_data().await, r#"{"push":"pub","channel":"chat:b","data":1}"#);
    assert_eq!(b.next_data().await, r#"{"push":"pub","channel":"chat:b","data":3}"#);
}

#[tokio::test]
async fn client_disconnect_removes_subscription() {
    // The default heartbeat (15 s) is longer than WAIT: the disconnect is noticed without
    // a failed write.
    let server = start(config()).await;
    let sse = open(&server, "/sse?channel=news").await;
    assert_eq!(server.state.hub.subscriber_count(&channel("news")), 1);
    assert_eq!(server.state.metrics.open_connections(tether_server::metrics::Transport::Sse), 1);
    drop(sse);
    eventually("subscription removed", || server.state.hub.subscriber_count(&channel("news")) == 0).await;
    eventually("gauge back to 0", || {
        server.state.metrics.open_connections(tether_server::metrics::Transport::Sse) == 0
    })
    .await;
    let (s, _) = api(&server, "/api/publish", r#"{"channel":"news","data":1}"#).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn tokens_and_anonymous_access() {
    let mut c = config();
    c.auth.allow_anonymous = false;
    c.auth.tokens.push(TokenIdentity {
        token: "sse-token-0123456789".to_owned(),
        user: Some("u".into()),
        device: None,
        zone: None,
    });
    let server = start(c).await;
    let (s, b) = http(&server, "GET", "/sse?channel=news", &[], "").await;
    assert_eq!((s, error_code(&b).as_str()), (401, "unauthenticated"));
    let (s, b) = http(&server, "GET", "/sse?channel=news&token=wrong-token-0123456789", &[], "").await;
    assert_eq!((s, error_code(&b).as_str()), (401, "invalid_token"));
    let mut sse = open(&server, "/sse?channel=news&token=sse-token-0123456789").await;
    publish(&server, json!({"channel":"news","data":1})).await;
    assert_eq!(sse.next_data().await, r#"{"push":"pub","channel":"news","data":1}"#);
}

#[tokio::test]
async fn event_server_namespace_needs_identity() {
    let mut c = config();
    c.auth.tokens.push(TokenIdentity {
        token: "sse-token-0123456789".to_owned(),
        user: Some("u".into()),
        device: None,
        zone: None,
    });
    let server = start(c).await;
    let (s, b) = http(&server, "GET", "/sse?channel=events:x", &[], "").await;
    assert_eq!((s, error_code(&b).as_str()), (401, "unauthenticated"));
    let mut sse = open(&server, "/sse?channel=events:x&token=sse-token-0123456789").await;
    publish(&server, json!({"channel":"events:x","data":{"a":1}})).await;
    assert_eq!(sse.next_data().await, r#"{"push":"pub","channel":"events:x","data":{"a":1}}"#);
}

#[tokio::test]
async fn slow_consumer_gets_disconnect_4002() {
    let mut c = config();
    c.websocket.outbound_queue = 4;
    let server = start(c).await;
    let mut sse = open(&server, "/sse?channel=news").await;
    // The client reads nothing while far more than the socket buffers can hold is
    // published, so the queue overflows.
    let big = "x".repeat(60_000);
    for _ in 0..400 {
        publish(&server, json!({"channel":"news","data":big})).await;
        if server.state.metrics.dropped.load(Ordering::Relaxed) > 0 {
            break;
        }
    }
    assert!(server.state.metrics.dropped.load(Ordering::Relaxed) > 0, "the queue overflowed");
    let disconnect = loop {
        let b = sse.next_event().await;
        if b.starts_with("data: ") {
            continue;
        }
        break b;
    };
    let data = disconnect
        .strip_prefix("event: disconnect\ndata: ")
        .and_then(|d| d.strip_suffix("\n\n"))
        .unwrap_or_else(|| panic!("disconnect event, got {disconnect:?}"));
    let v: Value = serde_json::from_str(data).expect("json");
    assert_eq!(v["code"], 4002, "{v}");
    assert_eq!(sse.next_block().await, None, "stream ends after disconnect");
    eventually("subscription removed", || server.state.hub.subscriber_count(&channel("news")) == 0).await;
    assert_eq!(server.state.metrics.slow_consumers.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn targeted_publications_follow_the_token_identity() {
    let mut c = config();
    c.auth.tokens.push(TokenIdentity {
        token: "alice-token-0123456789".to_owned(),
        user: Some("alice".into()),
        device: None,
        zone: Some("eu".into()),
    });
    let server = start(c).await;
    let mut alice = open(&server, "/sse?channel=news&token=alice-token-0123456789").await;
    let mut anon = open(&server, "/sse?channel=news").await;
    publish(&server, json!({"channel":"news","data":1,"to":{"users":["alice"]}})).await;
    publish(&server, json!({"channel":"news","data":2,"to":{"users":["alice"],"zones":["us"]}})).await;
    publish(&server, json!({"channel":"news","data":3,"to":{"users":["bob"]}})).await;
    publish(&server, json!({"channel":"news","data":4})).await;
    assert_eq!(alice.next_data().await, r#"{"push":"pub","channel":"news","data":1}"#);
    assert_eq!(alice.next_data().await, r#"{"push":"pub","channel":"news","data":4}"#);
    assert_eq!(anon.next_data().await, r#"{"push":"pub","channel":"news","data":4}"#);
}
