//! Presence over real sockets: who is subscribed, counts, join/leave pushes, permissions,
//! and no ghosts: an abrupt disconnect leaves at once, an entry whose heartbeats stop runs
//! out on its TTL (driven by a manual clock, never by sleeping).

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tether_server::Config;

/// `config()` with namespaces `p` (presence, join/leave pushes, readable by anyone),
/// `q` (presence, no pushes, default rule: subscribers) and `n` (no presence); clients
/// may declare identities.
fn presence_config() -> Config {
    let mut c = config();
    let extra: Config = Config::from_toml(
        r#"
        listen = "127.0.0.1:0"
        [namespaces.p]
        track_presence = true
        join_leave = true
        presence = "anyone"
        [namespaces.q]
        track_presence = true
        [namespaces.n]
        "#,
        std::path::Path::new("test.toml"),
    )
    .unwrap();
    c.namespaces.extend(extra.namespaces);
    c.auth.allow_client_identity = true;
    c.presence.ttl_ms = 30_000;
    c.presence.sweep_interval_ms = 20;
    c
}

/// A connection with a declared user (or anonymous).
async fn as_user(server: &tether_server::RunningServer, user: Option<&str>) -> Ws {
    let mut ws = ws(server, "/ws").await;
    let connect = match user {
        Some(u) => json!({"op":"connect","identity":{"user":u}}),
        None => json!({"op":"connect"}),
    };
    let r = request(&mut ws, 1, connect).await;
    assert!(r["result"].is_object(), "{r}");
    ws
}

async fn subscribe(ws: &mut Ws, channel: &str) {
    let r = request(ws, 2, json!({"op":"subscribe","channel":channel})).await;
    assert!(r["result"].is_object(), "{r}");
}

fn users(presence: &Value) -> Vec<Option<String>> {
    presence["clients"].as_array().unwrap().iter().map(|c| c["user"].as_str().map(str::to_owned)).collect()
}

#[tokio::test]
async fn presence_lists_subscribers_and_counts_unique_users_with_permissions() {
    let server = start(presence_config()).await;
    let mut a1 = as_user(&server, Some("alice")).await;
    let mut a2 = as_user(&server, Some("alice")).await;
    let mut anon = as_user(&server, None).await;
    for ws in [&mut a1, &mut a2, &mut anon] {
        subscribe(ws, "q:room").await;
    }
    let r = request(&mut anon, 3, json!({"op":"presence","channel":"q:room"})).await;
    assert_eq!(users(&r["result"]), [Some("alice".into()), Some("alice".into()), None]);
    let r = request(&mut anon, 4, json!({"op":"presence_stats","channel":"q:room"})).await;
    assert_eq!(r["result"], json!({"connections": 3, "users": 1}));
    // HTTP sees the same.
    let (status, body) = api(&server, "/api/presence_stats", r#"{"channel":"q:room"}"#).await;
    assert_eq!(
        (status, serde_json::from_str::<Value>(&body).unwrap()),
        (200, json!({"connections":3,"users":1}))
    );
    let (_, body) = api(&server, "/api/presence", r#"{"channel":"q:room"}"#).await;
    assert_eq!(users(&serde_json::from_str(&body).unwrap()).len(), 3);

    // One of alice's two connections leaves: alice is still counted.
    assert_eq!(
        request(&mut a2, 5, json!({"op":"unsubscribe","channel":"q:room"})).await["result"],
        json!({})
    );
    let r = request(&mut anon, 6, json!({"op":"presence_stats","channel":"q:room"})).await;
    assert_eq!(r["result"], json!({"connections": 2, "users": 1}));

    // Permissions: `q` lets only subscribers read; `n` tracks nothing.
    let r = request(&mut a2, 7, json!({"op":"presence","channel":"q:room"})).await;
    assert_eq!(error_code(&r), "permission_denied");
    let r = request(&mut a2, 8, json!({"op":"presence","channel":"n:room"})).await;
    assert_eq!(error_code(&r), "presence_disabled");
    let (status, body) = api(&server, "/api/presence", r#"{"channel":"n:room"}"#).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("presence_disabled"));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn join_and_leave_are_pushed_where_the_namespace_asks_and_an_abrupt_disconnect_leaves_no_ghost() {
    let server = start(presence_config()).await;
    let mut watcher = as_user(&server, Some("watcher")).await;
    subscribe(&mut watcher, "p:room").await;
    subscribe(&mut watcher, "q:room").await;

    let mut bob = as_user(&server, Some("bob")).await;
    subscribe(&mut bob, "p:room").await;
    let join = recv_push(&mut watcher, "join").await;
    assert_eq!(join["channel"], "p:room");
    assert_eq!(join["user"], "bob");
    let bob_client = join["client"].as_str().unwrap().to_owned();

    // `q` does not announce: nothing arrives for it (the next push is p's leave below).
    subscribe(&mut bob, "q:room").await;

    // Bob's connection drops without a close handshake.
    drop(bob);
    let leave = recv_push(&mut watcher, "leave").await;
    assert_eq!(leave, json!({"push":"leave","channel":"p:room","client":bob_client,"user":"bob"}));
    let r = request(&mut watcher, 3, json!({"op":"presence","channel":"q:room"})).await;
    assert_eq!(users(&r["result"]), [Some("watcher".into())], "no ghost on q either");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_entry_whose_heartbeats_stop_expires_on_its_ttl_and_comes_back_with_the_next_one() {
    let (server, clock) = start_clocked(presence_config()).await;
    let mut watcher = as_user(&server, Some("watcher")).await;
    subscribe(&mut watcher, "p:room").await;
    let mut quiet = as_user(&server, Some("quiet")).await;
    subscribe(&mut quiet, "p:room").await;
    assert_eq!(recv_push(&mut watcher, "join").await["user"], "quiet");

    // The watcher keeps answering heartbeats; the quiet one does not (its socket stays
    // open: a wedged client, or the node holding it died).
    clock.advance(Duration::from_millis(20_000));
    send(&mut watcher, r#"{"op":"pong"}"#).await;
    // A request after the pong: once it is answered, the pong has been handled.
    request(&mut watcher, 3, json!({"op":"ping"})).await;
    clock.advance(Duration::from_millis(10_001));
    let leave = recv_push(&mut watcher, "leave").await;
    assert_eq!(leave["user"], "quiet");
    let r = request(&mut watcher, 4, json!({"op":"presence","channel":"p:room"})).await;
    assert_eq!(users(&r["result"]), [Some("watcher".into())], "the watcher's own heartbeat kept it");

    // The quiet client's next heartbeat brings it back, announced.
    send(&mut quiet, r#"{"op":"pong"}"#).await;
    assert_eq!(recv_push(&mut watcher, "join").await["user"], "quiet");
    let r = request(&mut watcher, 5, json!({"op":"presence_stats","channel":"p:room"})).await;
    assert_eq!(r["result"], json!({"connections": 2, "users": 2}));
    server.shutdown().await.unwrap();
}
