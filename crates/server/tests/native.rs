//! Native protocol over real sockets: delivery, every bad-input class, limits, close codes.

mod common;

use common::*;
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

fn code(reply: &Value) -> &str {
    reply["error"]["code"].as_str().unwrap_or_else(|| panic!("expected an error reply, got {reply}"))
}

#[tokio::test]
async fn publish_reaches_subscriber() {
    let server = start(config()).await;
    let mut ws = native(&server).await;
    let r = request(&mut ws, 2, json!({"op":"subscribe","channel":"news"})).await;
    assert_eq!(r["result"], json!({}));
    let (s, b) = api(&server, "/api/publish", r#"{"channel":"news","data":{"n":1}}"#).await;
    assert_eq!((s, b.as_str()), (200, "{}"));
    assert_eq!(recv_text(&mut ws).await, r#"{"push":"pub","channel":"news","data":{"n":1}}"#);
}

#[tokio::test]
async fn every_subscriber_gets_every_publication_once_in_order() {
    let server = start(config()).await;
    let mut subs = Vec::new();
    for _ in 0..20 {
        let mut ws = native(&server).await;
        request(&mut ws, 2, json!({"op":"subscribe","channel":"chat:room"})).await;
        subs.push(ws);
    }
    // Half from the HTTP API, half from a client connection, interleaved.
    let mut publisher = native(&server).await;
    for n in 0..100u64 {
        if n % 2 == 0 {
            let (s, _) =
                api(&server, "/api/publish", &json!({"channel":"chat:room","data":{"n":n}}).to_string())
                    .await;
            assert_eq!(s, 200);
        } else {
            let r =
                request(&mut publisher, 10 + n, json!({"op":"publish","channel":"chat:room","data":{"n":n}}))
                    .await;
            assert_eq!(r["result"], json!({}), "{r}");
        }
    }
    for ws in &mut subs {
        for n in 0..100u64 {
            let v = recv_json(ws).await;
            assert_eq!(v["push"], "pub");
            assert_eq!(v["channel"], "chat:room");
            assert_eq!(v["data"]["n"], n, "in order, none missing, none duplicated");
        }
        // Nothing extra: a ping round trip arrives before any further publication.
        let r = request(ws, 999, json!({"op":"ping"})).await;
        assert_eq!(r["result"], json!({}));
    }
}

#[tokio::test]
async fn publisher_subscribed_to_its_channel_receives_its_own_publication() {
    let server = start(config()).await;
    let mut ws = native(&server).await;
    request(&mut ws, 2, json!({"op":"subscribe","channel":"chat:a"})).await;
    send(&mut ws, r#"{"id":3,"op":"publish","channel":"chat:a","data":"hi","tags":{"k":"v"}}"#).await;
    let first = recv_json(&mut ws).await;
    let second = recv_json(&mut ws).await;
    let (reply, push) = if first.get("id").is_some() { (first, second) } else { (second, first) };
    assert_eq!(reply, json!({"id":3,"result":{}}));
    assert_eq!(push, json!({"push":"pub","channel":"chat:a","data":"hi","tags":{"k":"v"}}));
}

#[tokio::test]
async fn each_bad_input_class_gets_its_code_and_the_connection_stays_usable() {
    let mut c = config();
    c.limits.max_subscriptions_per_connection = 2;
    c.namespaces.insert(
        "tiny".into(),
        tether_server::config::NamespaceConfig {
            publish: tether_engine::ClientRule::Anyone,
            max_subscribers: 1,
            max_message_bytes: 8,
            ..Default::default()
        },
    );
    let server = start(c).await;
    let mut ws = ws(&server, "/ws").await;

    // Before connect.
    send(&mut ws, r#"{"id":1,"op":"subscribe","channel":"news"}"#).await;
    let r = recv_json(&mut ws).await;
    assert_eq!((r["id"].as_u64(), code(&r)), (Some(1), "not_connected"));
    send(&mut ws, r#"{"id":2,"op":"connect"}"#).await;
    let r = recv_json(&mut ws).await;
    assert_eq!(r["result"]["version"], "1", "{r}");
    assert!(r["result"]["client"].is_string());

    let cases: &[(&str, Option<u64>, &str)] = &[
        ("not json", None, "malformed_json"),
        ("{\"id\":3", None, "malformed_json"),
        ("[1,2]", None, "invalid_message"),
        ("42", None, "invalid_message"),
        (r#"{"id":"x","op":"ping"}"#, None, "invalid_message"),
        (r#"{"op":"ping"}"#, None, "invalid_message"),
        (r#"{"id":4,"op":"teleport"}"#, Some(4), "unknown_op"),
        (r#"{"id":5,"op":7}"#, Some(5), "invalid_message"),
        (r#"{"id":6,"op":"subscribe"}"#, Some(6), "invalid_message"),
        (r#"{"id":7,"op":"subscribe","channel":["a"]}"#, Some(7), "invalid_message"),
        (r#"{"id":8,"op":"subscribe","channel":"bad channel"}"#, Some(8), "invalid_channel"),
        (r#"{"id":9,"op":"subscribe","channel":"news","filter":"k=="}"#, Some(9), "invalid_filter"),
        (r#"{"id":10,"op":"subscribe","channel":"nope:x"}"#, Some(10), "unknown_namespace"),
        (r#"{"id":11,"op":"connect"}"#, Some(11), "already_connected"),
        (r#"{"id":12,"op":"publish","channel":"news","data":1}"#, Some(12), "publish_not_allowed"),
        (r#"{"id":13,"op":"publish","channel":"tiny:a","data":"123456789"}"#, Some(13), "message_too_large"),
        (r#"{"id":14,"op":"publish","channel":"chat:a","data":1,"tags":{"k":1}}"#, Some(14), "invalid_tags"),
        (r#"{"id":15,"op":"publish","channel":"chat:a"}"#, Some(15), "invalid_message"),
        (r#"{"id":16,"op":"unsubscribe","channel":"news"}"#, Some(16), "not_subscribed"),
    ];
    for (frame, id, want) in cases {
        send(&mut ws, frame).await;
        let r = recv_json(&mut ws).await;
        assert_eq!(code(&r), *want, "frame {frame}: {r}");
        assert_eq!(r["id"].as_u64(), *id, "frame {frame}: {r}");
        assert!(r["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }

    // Subscription rules.
    assert!(request(&mut ws, 20, json!({"op":"subscribe","channel":"tiny:a"})).await.get("result").is_some());
    assert_eq!(
        code(&request(&mut ws, 21, json!({"op":"subscribe","channel":"tiny:a"})).await),
        "already_subscribed"
    );
    assert!(request(&mut ws, 22, json!({"op":"subscribe","channel":"news"})).await.get("result").is_some());
    assert_eq!(
        code(&request(&mut ws, 23, json!({"op":"subscribe","channel":"chat:z"})).await),
        "too_many_subscriptions"
    );
    let mut other = native(&server).await;
    assert_eq!(
        code(&request(&mut other, 2, json!({"op":"subscribe","channel":"tiny:a"})).await),
        "channel_full"
    );
    assert!(
        request(&mut ws, 24, json!({"op":"unsubscribe","channel":"tiny:a"})).await.get("result").is_some()
    );
    assert!(
        request(&mut other, 3, json!({"op":"subscribe","channel":"tiny:a"})).await.get("result").is_some()
    );

    // Still usable.
    assert_eq!(request(&mut ws, 30, json!({"op":"ping"})).await, json!({"id":30,"result":{}}));
    let metrics = http(&server, "GET", "/metrics", &[], "").await.1;
    assert!(metrics.contains("tether_errors_total{code=\"malformed_json\"} 2"), "{metrics}");
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let server = start(config()).await;
    let mut ws = native(&server).await;
    request(&mut ws, 2, json!({"op":"subscribe","channel":"news"})).await;
    request(&mut ws, 3, json!({"op":"unsubscribe","channel":"news"})).await;
    api(&server, "/api/publish", r#"{"channel":"news","data":1}"#).await;
    // The ping reply is the next frame: no publication was queued before it.
    assert_eq!(request(&mut ws, 4, json!({"op":"ping"})).await, json!({"id":4,"result":{}}));
    assert_eq!(server.state.hub.subscription_count(), 0);
}

#[tokio::test]
async fn connect_credentials() {
    let mut c = config();
    c.auth.allow_anonymous = false;
    c.auth.tokens.push(tether_server::config::TokenIdentity {
        token: "token-of-alice-0123".into(),
        user: Some("alice".into()),
        device: None,
        zone: None,
    });
    let server = start(c).await;
    let mut ws = ws(&server, "/ws").await;
    assert_eq!(code(&request(&mut ws, 1, json!({"op":"connect"})).await), "unauthenticated");
    assert_eq!(
        code(&request(&mut ws, 2, json!({"op":"connect","token":"wrong-token-0123456"})).await),
        "invalid_token"
    );
    assert_eq!(
        code(&request(&mut ws, 3, json!({"op":"connect","identity":{"user":"mallory"}})).await),
        "permission_denied",
        "client-declared identities are off by default"
    );
    let r = request(&mut ws, 4, json!({"op":"connect","token":"token-of-alice-0123"})).await;
    assert!(r.get("result").is_some(), "{r}");
}

#[tokio::test]
async fn oversize_message_closes_with_1009() {
    let mut c = config();
    c.limits.max_message_bytes = 1024;
    c.limits.max_frame_bytes = 1024;
    let server = start(c).await;
    let mut ws = native(&server).await;
    let big = format!(r#"{{"id":2,"op":"ping","pad":"{}"}}"#, "x".repeat(2000));
    let _ = ws.send(Message::Text(big.into())).await;
    assert_eq!(recv_close(&mut ws).await, Some(1009));
}

#[tokio::test]
async fn binary_frame_closes_with_1003() {
    let server = start(config()).await;
    let mut ws = native(&server).await;
    ws.send(Message::Binary(vec![1, 2, 3].into())).await.unwrap();
    assert_eq!(recv_close(&mut ws).await, Some(1003));
}

#[tokio::test]
async fn rate_limit_answers_then_closes_abusers() {
    let mut c = config();
    c.limits.inbound_rate = 1;
    c.limits.inbound_burst = 3;
    let server = start(c).await;
    let mut ws = native(&server).await; // connect used one token
    assert!(request(&mut ws, 2, json!({"op":"ping"})).await.get("result").is_some());
    assert!(request(&mut ws, 3, json!({"op":"ping"})).await.get("result").is_some());
    let r = request(&mut ws, 4, json!({"op":"ping"})).await;
    assert_eq!(code(&r), "rate_limited");
    // Keep flooding: past 100 refused messages in a row the server closes with 4008.
    for i in 0..200u64 {
        if ws.send(Message::Text(format!(r#"{{"id":{},"op":"ping"}}"#, 100 + i).into())).await.is_err() {
            break;
        }
    }
    assert_eq!(recv_close(&mut ws).await, Some(4008));
}

#[tokio::test]
async fn connect_timeout_closes_with_4004() {
    let mut c = config();
    c.websocket.connect_timeout_ms = 50;
    let server = start(c).await;
    let mut ws = ws(&server, "/ws").await;
    assert_eq!(recv_close(&mut ws).await, Some(4004));
}

#[tokio::test]
async fn heartbeats_then_idle_timeout_closes_with_4001() {
    let mut c = config();
    c.websocket.ping_interval_ms = 50;
    c.websocket.pong_timeout_ms = 50;
    let server = start(c).await;
    let mut ws = native(&server).await;
    // The server pings; a client that never answers is closed with 4001.
    let mut pings = 0;
    let close = loop {
        match tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut ws)).await.unwrap() {
            Some(Ok(Message::Text(t))) => {
                assert_eq!(t.as_str(), r#"{"push":"ping"}"#);
                pings += 1;
            }
            Some(Ok(Message::Close(f))) => break f.map(|f| u16::from(f.code)),
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(pings >= 1);
    assert_eq!(close, Some(4001));
}

#[tokio::test]
async fn answering_heartbeats_keeps_the_connection() {
    let mut c = config();
    c.websocket.ping_interval_ms = 30;
    c.websocket.pong_timeout_ms = 200;
    let server = start(c).await;
    let mut ws = native(&server).await;
    for _ in 0..10 {
        match tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut ws)).await.unwrap() {
            Some(Ok(Message::Text(t))) if t.as_str() == r#"{"push":"ping"}"# => {
                send(&mut ws, r#"{"op":"pong"}"#).await;
            }
            other => panic!("expected a heartbeat, got {other:?}"),
        }
    }
    assert_eq!(request(&mut ws, 5, json!({"op":"ping"})).await, json!({"id":5,"result":{}}));
}

#[tokio::test]
async fn graceful_shutdown_closes_with_1001_and_a_reconnect_hint() {
    let server = start(config()).await;
    let mut ws = native(&server).await;
    request(&mut ws, 2, json!({"op":"subscribe","channel":"news"})).await;
    let state = std::sync::Arc::clone(&server.state);
    let stopping = tokio::spawn(server.shutdown());
    let frame = loop {
        match tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut ws)).await.unwrap() {
            Some(Ok(Message::Close(f))) => break f.expect("close frame has a code"),
            Some(Ok(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(u16::from(frame.code), 1001);
    assert!(frame.reason.contains("reconnect"), "{}", frame.reason);
    // Complete the close handshake so the server finishes without waiting out its grace.
    let _ = ws.close(None).await;
    stopping.await.unwrap().unwrap();
    assert_eq!(state.hub.subscription_count(), 0);
}

#[tokio::test]
async fn slow_consumer_is_disconnected_without_delaying_others() {
    let mut c = config();
    c.websocket.outbound_queue = 8;
    c.namespaces.insert(
        "big".into(),
        tether_server::config::NamespaceConfig { max_message_bytes: 1 << 20, ..Default::default() },
    );
    let server = start(c).await;
    // The slow subscriber never reads after subscribing.
    let mut slow = native(&server).await;
    request(&mut slow, 2, json!({"op":"subscribe","channel":"big:c"})).await;
    let mut fast = native(&server).await;
    request(&mut fast, 2, json!({"op":"subscribe","channel":"big:c"})).await;

    let pad = "x".repeat(256 * 1024);
    let total = 200u64; // ~50 MiB: far beyond loopback socket buffers.
    let reader = tokio::spawn(async move {
        for n in 0..total {
            let v = recv_json(&mut fast).await;
            assert_eq!(v["data"]["n"], n);
        }
        fast
    });
    for n in 0..total {
        let body = json!({"channel":"big:c","data":{"n":n,"pad":pad}}).to_string();
        let (s, b) = api(&server, "/api/publish", &body).await;
        assert_eq!(s, 200, "publisher is never refused or blocked: {b}");
    }
    let mut fast = reader.await.expect("fast subscriber got every publication in order");
    assert_eq!(request(&mut fast, 3, json!({"op":"ping"})).await["result"], json!({}));
    let metrics = http(&server, "GET", "/metrics", &[], "").await.1;
    assert!(metrics.contains("tether_slow_consumer_disconnects_total 1"), "{metrics}");
    assert_eq!(server.state.hub.subscriber_count(&tether_proto::ChannelName::parse("big:c").unwrap()), 1);
    // The slow client eventually sees its connection end (with 4002 if the close frame
    // could still be written).
    let end = recv_close_after_data(&mut slow).await;
    assert!(end.is_none() || end == Some(4002), "{end:?}");
}

/// Reads and discards data frames until the connection closes; returns the close code.
async fn recv_close_after_data(ws: &mut Ws) -> Option<u16> {
    loop {
        match tokio::time::timeout(WAIT, futures_util::StreamExt::next(ws)).await.expect("ends within WAIT") {
            Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return None,
        }
    }
}

#[tokio::test]
async fn connection_limits_refuse_before_upgrade() {
    let mut c = config();
    c.limits.max_connections_per_ip = 2;
    let server = start(c).await;
    let _a = native(&server).await;
    let _b = native(&server).await;
    let err = tokio_tungstenite::connect_async(format!("ws://{}/ws", server.addr)).await.unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => {
            assert_eq!(resp.status().as_u16(), 503);
            let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap_or_default()).unwrap();
            assert_eq!(body["code"], "too_many_connections");
        }
        other => panic!("expected HTTP 503, got {other:?}"),
    }
}

// Regression: the connect deadline used to restart with every frame, so an unauthenticated
// client could stay forever by sending failing requests.
#[tokio::test]
async fn connect_deadline_counts_from_socket_open_not_from_the_last_frame() {
    let mut c = config();
    c.websocket.connect_timeout_ms = 300;
    let server = start(c).await;
    let mut ws = ws(&server, "/ws").await;
    let mut id = 0u64;
    let code = loop {
        id += 1;
        if ws.send(Message::Text(format!(r#"{{"id":{id},"op":"ping"}}"#).into())).await.is_err() {
            break recv_close(&mut ws).await;
        }
        match tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut ws))
            .await
            .expect("reply or close")
        {
            Some(Ok(Message::Text(t))) => assert!(t.contains("not_connected"), "{t}"),
            Some(Ok(Message::Close(f))) => break f.map(|f| u16::from(f.code)),
            other => panic!("unexpected {other:?}"),
        }
        assert!(id < 10_000, "never closed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(code, Some(4004));
}

#[tokio::test]
async fn null_is_a_valid_payload() {
    let server = start(config()).await;
    let mut ws = native(&server).await;
    request(&mut ws, 2, json!({"op":"subscribe","channel":"chat:n"})).await;
    let r = request(&mut ws, 3, json!({"op":"publish","channel":"chat:n","data":null})).await;
    assert_eq!(r["result"], json!({}), "{r}");
    assert_eq!(recv_json(&mut ws).await, json!({"push":"pub","channel":"chat:n","data":null}));
}

#[tokio::test]
async fn a_plain_get_on_ws_gets_a_json_error() {
    let server = start(config()).await;
    let (status, body) = http(&server, "GET", "/ws", &[], "").await;
    assert_eq!(status, 400);
    let v: Value = serde_json::from_str(&body).expect("JSON error body");
    assert_eq!(v["code"], "invalid_message");
}
