//! The Jetstream dialect over real sockets: the reference's golden traces (seed-systems.md
//! §1.4), resume, close codes, atomic changesets and durability across restarts.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tether_server::{Config, RunningServer};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The reference demo's models (demos/app.js), in Tether's schema format.
const SCHEMA: &str = r#"
[enums]
MessageStatus = { Sent = 0, Read = 1 }

[models.Canvas]
name = "String"
shapes = "[Shape]"

[models.Shape]
x = "Number"
y = "Number"
width = "Number"
height = "Number"
color = "Number"

[models.ChatRoom]
name = "String"
users = "[User]"
messages = "[Message]"

[models.User]
username = "String"
lastActive = "Date"

[models.Message]
author = "User"
text = "String"
postedAt = "Date"
status = "MessageStatus"
attributes = "[Attributes]"

[models.Attributes]
kind = "String"
"#;

const SHAPE_1: &str = "aaaaaaaa-0000-4000-8000-000000000001";

/// A config with the demo schema and its two scopes.
fn jet_config() -> Config {
    let mut c = config();
    let schema = c.data_dir.join("schema.toml");
    std::fs::write(&schema, SCHEMA).unwrap();
    let extra = format!(
        r#"
        [sync]
        schema = {schema:?}
        [[sync.scopes]]
        name = "Canvas"
        root = "Canvas"
        initial = {{ name = "Shapes Demo" }}
        [[sync.scopes]]
        name = "ChatRoom"
        root = "ChatRoom"
        initial = {{ name = "Room" }}
        "#
    );
    let mut table: toml::Table = toml::from_str(&extra).unwrap();
    let sync = table.remove("sync").unwrap();
    c.sync = sync.try_into().unwrap();
    c
}

/// The default `sync.fanout_interval_ms`.
fn cfg_fanout_ms() -> u64 {
    tether_server::config::SyncConfig::default().fanout_interval_ms
}

async fn open(server: &RunningServer, query: &str) -> Ws {
    ws(server, &format!("/jetstream{query}")).await
}

/// The messages of the next frame that are not keep-alive pings.
async fn recv_msgs(ws: &mut Ws) -> Vec<Value> {
    loop {
        let frame = recv_json(ws).await;
        let msgs = frame.as_array().expect("the server sends arrays").clone();
        let keepalive = msgs.len() == 1 && msgs[0]["type"] == "Ping" && msgs[0]["resendMissing"] == false;
        if !keepalive {
            return msgs;
        }
    }
}

/// Reads frames until `n` messages have come (a scope sends everything one batch has for a
/// session in one frame, so how they are split into frames depends on timing).
async fn recv_n(ws: &mut Ws, n: usize) -> Vec<Value> {
    let mut msgs = Vec::new();
    while msgs.len() < n {
        msgs.extend(recv_msgs(ws).await);
    }
    assert_eq!(msgs.len(), n, "{msgs:?}");
    msgs
}

/// Creates a session and fetches `scope`; returns the token and the ScopeState message.
async fn session_with(ws: &mut Ws, scope: &str) -> (String, Value) {
    send(ws, r#"{"type":"SessionCreate","index":0,"version":"0.1.0","params":{}}"#).await;
    let reply = recv_msgs(ws).await;
    assert_eq!(reply[0]["type"], "SessionCreateReply", "{reply:?}");
    assert_eq!(reply[0]["index"], 0);
    let token = reply[0]["sessionToken"].as_str().expect("token").to_owned();
    send(ws, &json!({"type":"ScopeFetch","index":1,"name":scope,"params":{}}).to_string()).await;
    let msgs = recv_n(ws, 2).await;
    assert_eq!(msgs[0], json!({"type":"ScopeFetchReply","index":1,"replyTo":1,"scopeIndex":0}));
    assert_eq!(msgs[1]["type"], "ScopeState");
    (token, msgs[1].clone())
}

fn add_shape_sync(index: u64, root: &str) -> String {
    json!({"type":"ScopeSync","index":index,"scopeIndex":0,"atomic":false,"fragments":[
        {"type":"change","uuid":root,"clsName":"Canvas","properties":{"shapes":[SHAPE_1]}},
        {"type":"add","uuid":SHAPE_1.to_uppercase(),"clsName":"Shape","properties":{"x":10,"y":20,"width":100,"height":100,"color":255}},
        {"type":"add","uuid":"aaaaaaaa-0000-4000-8000-000000000002","clsName":"Shape","properties":{"x":"bad"}},
        {"type":"change","uuid":"bbbbbbbb-0000-4000-8000-000000000009","clsName":"Shape","properties":{"x":1}}
    ]})
    .to_string()
}

#[tokio::test]
async fn golden_trace_handshake_fetch_sync_ping() {
    let server = start(jet_config()).await;
    let mut ws = open(&server, "").await;
    let (_, state) = session_with(&mut ws, "Canvas").await;
    assert_eq!(state["index"], 2);
    assert_eq!(state["scopeIndex"], 0);
    let root = state["rootUUID"].as_str().unwrap().to_owned();
    assert_eq!(
        state["fragments"],
        json!([{"type":"change","uuid":root,"clsName":"Canvas","properties":{"name":"Shapes Demo","shapes":[]}}])
    );

    send(&mut ws, &add_shape_sync(2, &root)).await;
    let reply = recv_msgs(&mut ws).await;
    assert_eq!(
        reply,
        [json!({"type":"ScopeSyncReply","index":3,"replyTo":2,"fragmentReplies":[
            {},{},
            {"error":{"message":"Not valid type at 'x', should be Number"}},
            {"error":{"message":"ModelObject not found"}}
        ]})]
    );

    // Acknowledge nothing and ask for a resend: our Ping, then every unacknowledged message.
    send(&mut ws, r#"{"type":"Ping","index":0,"ack":0,"resendMissing":true}"#).await;
    let resent = recv_msgs(&mut ws).await;
    assert_eq!(resent[0], json!({"type":"Ping","index":0,"ack":2,"resendMissing":true}));
    let indices: Vec<u64> = resent[1..].iter().map(|m| m["index"].as_u64().unwrap()).collect();
    assert_eq!(indices, [1, 2, 3]);
    // After an ack of 3 nothing is left to resend.
    send(&mut ws, r#"{"type":"Ping","index":0,"ack":3,"resendMissing":true}"#).await;
    assert_eq!(recv_msgs(&mut ws).await, [json!({"type":"Ping","index":0,"ack":2,"resendMissing":true})]);

    send(&mut ws, r#"{"type":"ScopeFetch","index":3,"name":"Nope"}"#).await;
    assert_eq!(
        recv_msgs(&mut ws).await,
        [
            json!({"type":"ScopeFetchReply","index":4,"replyTo":3,"scopeIndex":4_294_967_295_u64,"error":{"message":"No such scope"}})
        ]
    );
    // A sync to a scope index the session does not have.
    send(&mut ws, r#"{"type":"ScopeSync","index":4,"scopeIndex":7,"fragments":[{"type":"change","uuid":"aaaaaaaa-0000-4000-8000-000000000001","clsName":"Shape","properties":{"x":1}}]}"#).await;
    assert_eq!(
        recv_msgs(&mut ws).await,
        [json!({"type":"ScopeSyncReply","index":5,"replyTo":4,"fragmentReplies":[
            {"error":{"message":"Scope at index 7 was not found","type":"scope-index-not-found"}}
        ]})]
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn other_sessions_receive_exactly_the_applied_fragments_and_duplicates_are_dropped() {
    let server = start(jet_config()).await;
    let mut a = open(&server, "").await;
    let mut b = open(&server, "").await;
    let (_, state) = session_with(&mut a, "Canvas").await;
    session_with(&mut b, "Canvas").await;
    let root = state["rootUUID"].as_str().unwrap().to_owned();

    send(&mut a, &add_shape_sync(2, &root)).await;
    assert_eq!(recv_msgs(&mut a).await[0]["type"], "ScopeSyncReply");
    let got = recv_msgs(&mut b).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["type"], "ScopeSync");
    assert_eq!(got[0]["index"], 3);
    assert_eq!(got[0]["scopeIndex"], 0);
    let frags = got[0]["fragments"].as_array().unwrap();
    assert_eq!(frags.len(), 2, "only the two applied fragments: {frags:?}");
    assert_eq!(frags[1]["uuid"], SHAPE_1, "UUIDs are normalised to lower case");

    // The same index again is dropped silently; the next index is answered.
    send(&mut a, &add_shape_sync(2, &root)).await;
    send(&mut a, r#"{"type":"Ping","index":0,"ack":3,"resendMissing":true}"#).await;
    assert_eq!(recv_msgs(&mut a).await, [json!({"type":"Ping","index":0,"ack":2,"resendMissing":true})]);
    server.shutdown().await.unwrap();
}

/// What a session saw, in order: its own changesets where their replies came, the others'
/// where their broadcasts came.
#[derive(Default)]
struct View {
    seen: Vec<String>,
    replies: u64,
    broadcasts: u64,
}

impl View {
    /// Reads frames until `replies` replies and `broadcasts` broadcasts have come.
    async fn read_until(&mut self, ws: &mut Ws, own: &str, replies: u64, broadcasts: u64) {
        while self.replies < replies || self.broadcasts < broadcasts {
            for m in recv_msgs(ws).await {
                match m["type"].as_str() {
                    Some("ScopeSyncReply") => {
                        assert_eq!(m["fragmentReplies"], json!([{}]), "{m}");
                        self.seen.push(format!("{own}{}", m["replyTo"].as_u64().unwrap() - 2));
                        self.replies += 1;
                    }
                    Some("ScopeSync") => {
                        let name = m["fragments"][0]["properties"]["name"].as_str().unwrap();
                        self.seen.push(name.to_owned());
                        self.broadcasts += 1;
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Two sessions write while a third only listens, with broadcasts to members not
/// answered in a batch held back (`fanout_interval_ms`) and without: every session sees
/// every other session's changesets exactly once, and all in the one order the scope
/// applied them (the listener's view is that order; each writer's view of the other's
/// changesets, merged with its own acknowledged ones, is the same). First in bursts
/// (batches with both writers), then one at a time in an irregular pattern (a writer
/// answered in a batch is first given what the held-back fan-out still owes it).
#[tokio::test]
async fn concurrent_writers_and_a_listener_see_one_order_with_and_without_fan_out_delay() {
    for interval in [0u64, 30] {
        let mut cfg = jet_config();
        cfg.sync.fanout_interval_ms = interval;
        let server = start(cfg).await;
        let mut a = open(&server, "").await;
        let mut b = open(&server, "").await;
        let mut c = open(&server, "").await;
        let (_, state) = session_with(&mut a, "Canvas").await;
        session_with(&mut b, "Canvas").await;
        session_with(&mut c, "Canvas").await;
        let root = state["rootUUID"].as_str().unwrap().to_owned();
        let change = |index: u64, name: String| {
            json!({"type":"ScopeSync","index":index,"scopeIndex":0,"atomic":false,"fragments":[
                {"type":"change","uuid":root,"clsName":"Canvas","properties":{"name":name}}
            ]})
            .to_string()
        };
        let (mut va, mut vb, mut vc) = (View::default(), View::default(), View::default());
        let (mut na, mut nb) = (0u64, 0u64);
        // Bursts, without waiting: the scope batches them as they come.
        for _ in 0..30 {
            send(&mut a, &change(2 + na, format!("a{na}"))).await;
            send(&mut b, &change(2 + nb, format!("b{nb}"))).await;
            na += 1;
            nb += 1;
        }
        va.read_until(&mut a, "a", na, 0).await;
        vb.read_until(&mut b, "b", nb, 0).await;
        // One at a time, each waiting for its reply: A A B A B B A B B B …
        for step in 0..40u64 {
            if (step * 7 + step / 3) % 5 < 2 {
                send(&mut a, &change(2 + na, format!("a{na}"))).await;
                na += 1;
                va.read_until(&mut a, "a", na, 0).await;
            } else {
                send(&mut b, &change(2 + nb, format!("b{nb}"))).await;
                nb += 1;
                vb.read_until(&mut b, "b", nb, 0).await;
            }
        }
        vc.read_until(&mut c, "c", 0, na + nb).await;
        va.read_until(&mut a, "a", na, nb).await;
        vb.read_until(&mut b, "b", nb, na).await;
        let mut unique = vc.seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), vc.seen.len(), "the listener got each changeset once ({interval} ms)");
        assert_eq!(va.seen, vc.seen, "writer A's view is the scope's order ({interval} ms)");
        assert_eq!(vb.seen, vc.seen, "writer B's view is the scope's order ({interval} ms)");
        // Nothing more comes: no broadcast was sent twice.
        for ws in [&mut a, &mut b, &mut c] {
            send(ws, r#"{"type":"Ping","index":0,"ack":0,"resendMissing":false}"#).await;
            let more = tokio::time::timeout(Duration::from_millis(100), recv_msgs(ws)).await;
            assert!(more.is_err(), "unexpected: {more:?}");
        }
        server.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn atomic_changeset_with_one_invalid_fragment_changes_nothing() {
    let server = start(jet_config()).await;
    let mut a = open(&server, "").await;
    let mut b = open(&server, "").await;
    let (_, state) = session_with(&mut a, "Canvas").await;
    session_with(&mut b, "Canvas").await;
    let root = state["rootUUID"].as_str().unwrap().to_owned();
    let mut sync: Value = serde_json::from_str(&add_shape_sync(2, &root)).unwrap();
    sync["atomic"] = json!(true);
    send(&mut a, &sync.to_string()).await;
    let reply = recv_msgs(&mut a).await;
    let replies = reply[0]["fragmentReplies"].as_array().unwrap();
    assert_eq!(replies.len(), 4);
    assert!(replies.iter().all(|r| r.get("error").is_some()), "{replies:?}");
    assert_eq!(replies[0]["error"]["type"], "atomic-changeset-rejected");
    assert_eq!(replies[2]["error"]["message"], "Not valid type at 'x', should be Number");

    // Nothing applied: a new session sees the initial state, and B got no broadcast.
    let mut c = open(&server, "").await;
    let (_, state) = session_with(&mut c, "Canvas").await;
    assert_eq!(state["fragments"].as_array().unwrap().len(), 1, "{state}");
    send(&mut b, r#"{"type":"Ping","index":0,"ack":2,"resendMissing":true}"#).await;
    assert_eq!(recv_msgs(&mut b).await.len(), 1, "only our Ping: nothing was broadcast");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn resume_by_query_parameter_and_by_header_loses_nothing() {
    let server = start(jet_config()).await;
    let mut a = open(&server, "").await;
    let mut b = open(&server, "").await;
    let (token, state) = session_with(&mut a, "Canvas").await;
    session_with(&mut b, "Canvas").await;
    let root = state["rootUUID"].as_str().unwrap().to_owned();
    // A's socket drops; B changes the canvas meanwhile.
    drop(a);
    send(&mut b, &add_shape_sync(2, &root)).await;
    assert_eq!(recv_msgs(&mut b).await[0]["type"], "ScopeSyncReply");
    // B's reply does not wait for the fan-out to A (at most `fanout_interval_ms` later);
    // let it reach A's session, so that the resend below is what carries it.
    tokio::time::sleep(Duration::from_millis(20 * cfg_fanout_ms().max(1))).await;

    // Resume with the query parameter (what a browser can do), acknowledging index 2.
    let mut a = open(&server, &format!("?x-jetstream-sessiontoken={token}")).await;
    send(&mut a, r#"{"type":"Ping","index":0,"ack":2,"resendMissing":true}"#).await;
    let msgs = recv_msgs(&mut a).await;
    assert_eq!(msgs[0]["type"], "Ping");
    assert_eq!(msgs[1]["type"], "ScopeSync", "{msgs:?}");
    assert_eq!(msgs[1]["index"], 3);
    assert_eq!(msgs[1]["fragments"].as_array().unwrap().len(), 2);

    // And with the header, the old socket being replaced.
    let mut req = format!("ws://{}/jetstream", server.addr).into_client_request().unwrap();
    req.headers_mut().insert("X-Jetstream-SessionToken", token.parse().unwrap());
    let (mut a2, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(recv_close(&mut a).await, Some(1000), "the replaced socket is closed");
    send(&mut a2, r#"{"type":"Ping","index":0,"ack":3,"resendMissing":true}"#).await;
    assert_eq!(recv_msgs(&mut a2).await, [json!({"type":"Ping","index":0,"ack":1,"resendMissing":true})]);
    server.shutdown().await.unwrap();
}

/// The close frame's code and reason.
async fn close_frame(ws: &mut Ws) -> (u16, String) {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("close within WAIT") {
            Some(Ok(Message::Close(Some(f)))) => return (u16::from(f.code), f.reason.to_string()),
            Some(Ok(Message::Close(None))) => panic!("close without a code"),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("socket error instead of a close frame: {e}"),
            None => panic!("socket ended without a close frame"),
        }
    }
}

#[tokio::test]
async fn refusals_close_with_4096_and_a_reason_that_fits() {
    let server = start(jet_config()).await;
    let mut ws = open(&server, "?x-jetstream-sessiontoken=nope").await;
    let (code, reason) = close_frame(&mut ws).await;
    assert_eq!(code, 4096);
    assert_eq!(
        serde_json::from_str::<Value>(&reason).unwrap(),
        json!({"message":"Session token unrecognized","type":"session-token-unrecognized"})
    );

    let mut ws = open(&server, "").await;
    send(&mut ws, r#"{"type":"ScopeFetch","index":1,"name":"Canvas"}"#).await;
    let (code, reason) = close_frame(&mut ws).await;
    assert_eq!(code, 4096);
    assert_eq!(serde_json::from_str::<Value>(&reason).unwrap()["type"], "unrecognized-handshake");

    let mut ws = open(&server, "").await;
    ws.send(Message::Text("not json".into())).await.unwrap();
    assert_eq!(close_frame(&mut ws).await.0, 4096);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn establish_timeout_and_inactivity_expiry() {
    let mut cfg = jet_config();
    cfg.sync.establish_timeout_ms = 200;
    cfg.sync.session_expiry_s = 1;
    cfg.sync.ping_interval_ms = 60_000;
    let server = start(cfg).await;
    let mut ws = open(&server, "").await;
    let (code, reason) = close_frame(&mut ws).await;
    assert_eq!(code, 4096);
    assert_eq!(serde_json::from_str::<Value>(&reason).unwrap()["type"], "session-establish-timedout");

    let mut ws = open(&server, "").await;
    let (token, _) = session_with(&mut ws, "Canvas").await;
    // Silent for longer than the expiry: closed with 4097, and the token is forgotten.
    let (code, _) = close_frame(&mut ws).await;
    assert_eq!(code, 4097);
    let mut again = open(&server, &format!("?x-jetstream-sessiontoken={token}")).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (code, _) = close_frame(&mut again).await;
        if code == 4096 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
        again = open(&server, &format!("?x-jetstream-sessiontoken={token}")).await;
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn acknowledged_changes_survive_a_restart() {
    let cfg = jet_config();
    let server = start(cfg.clone()).await;
    let mut a = open(&server, "").await;
    let (_, state) = session_with(&mut a, "Canvas").await;
    let root = state["rootUUID"].as_str().unwrap().to_owned();
    send(&mut a, &add_shape_sync(2, &root)).await;
    assert_eq!(recv_msgs(&mut a).await[0]["type"], "ScopeSyncReply");
    drop(a);
    server.shutdown().await.unwrap();

    let server = start(cfg).await;
    let mut b = open(&server, "").await;
    let (_, state) = session_with(&mut b, "Canvas").await;
    assert_eq!(state["rootUUID"], root.as_str(), "same scope");
    let frags = state["fragments"].as_array().unwrap();
    assert_eq!(frags.len(), 2, "{frags:?}");
    assert_eq!(frags[0]["properties"]["shapes"], json!([SHAPE_1]));
    assert_eq!(frags[1]["properties"]["x"], 10);
    server.shutdown().await.unwrap();
}

/// Starts the real binary on `dir` with the demo schema and scope `Canvas`.
async fn spawn_tether_jet(dir: &std::path::Path) -> Child {
    let schema = dir.join("schema.toml");
    std::fs::write(&schema, SCHEMA).unwrap();
    let config = format!(
        "[log]\nlevel = \"warn\"\n[sync]\nschema = {schema:?}\n[[sync.scopes]]\nname = \"Canvas\"\nroot = \"Canvas\"\n"
    );
    spawn_tether(dir, &config).await
}

async fn open_at(addr: std::net::SocketAddr) -> Ws {
    tokio_tungstenite::connect_async(format!("ws://{addr}/jetstream")).await.unwrap().0
}

fn shape_uuid(i: u64) -> String {
    format!("aaaaaaaa-0000-4000-8000-{i:012x}")
}

#[tokio::test]
async fn kill_9_during_a_stream_of_changesets_loses_no_acknowledged_one() {
    let dir = fresh_dir("kill9");
    let child = spawn_tether_jet(&dir).await;
    let mut ws = open_at(child.addr).await;
    let (_, state) = session_with(&mut ws, "Canvas").await;
    let root = state["rootUUID"].as_str().unwrap().to_owned();

    // Changeset i adds shape i and appends it to the canvas. All are sent at once
    // (pipelined); acknowledgements are read while the process is killed under them.
    const N: u64 = 3_000;
    let (mut tx, mut rx) = ws.split();
    let sender = tokio::spawn(async move {
        let mut shapes = Vec::new();
        for i in 1..=N {
            shapes.push(shape_uuid(i));
            let sync = json!({"type":"ScopeSync","index":i + 1,"scopeIndex":0,"fragments":[
                {"type":"change","uuid":root,"clsName":"Canvas","properties":{"shapes":shapes}},
                {"type":"add","uuid":shape_uuid(i),"clsName":"Shape","properties":{"x":i}}
            ]});
            if tx.send(Message::Text(sync.to_string().into())).await.is_err() {
                break;
            }
        }
    });
    let mut acked = 0u64;
    let mut child = child;
    loop {
        let Ok(Some(Ok(msg))) = tokio::time::timeout(WAIT, rx.next()).await else { break };
        let Message::Text(t) = msg else { continue };
        let frame: Value = serde_json::from_str(&t).unwrap();
        for m in frame.as_array().unwrap() {
            if m["type"] == "ScopeSyncReply" {
                assert_eq!(m["fragmentReplies"], json!([{}, {}]), "{m}");
                let changeset = m["replyTo"].as_u64().unwrap() - 1;
                assert_eq!(changeset, acked + 1, "replies come in order");
                acked = changeset;
            }
        }
        if acked >= 300 {
            child.proc.kill().unwrap(); // SIGKILL
            child.proc.wait().unwrap();
            break;
        }
    }
    sender.abort();
    assert!(acked >= 300, "only {acked} changesets acknowledged before the stream ended");

    let child = spawn_tether_jet(&dir).await;
    let mut ws = open_at(child.addr).await;
    let (_, state) = session_with(&mut ws, "Canvas").await;
    let frags = state["fragments"].as_array().unwrap();
    let shapes = frags[0]["properties"]["shapes"].as_array().unwrap();
    let stored = shapes.len() as u64;
    assert!(stored >= acked, "{stored} changesets restored, {acked} were acknowledged");
    // A prefix, in order, each shape with its own value: nothing torn, nothing reordered.
    for (i, s) in shapes.iter().enumerate() {
        assert_eq!(s, &json!(shape_uuid(i as u64 + 1)));
    }
    assert_eq!(frags.len() as u64, stored + 1, "every listed shape exists");
    for (i, f) in frags[1..].iter().enumerate() {
        assert_eq!(f["properties"]["x"], i + 1);
    }
}

#[tokio::test]
async fn an_idle_scope_leaves_memory_and_is_reloaded_on_fetch() {
    let mut cfg = jet_config();
    cfg.sync.session_expiry_s = 1;
    cfg.sync.idle_unload_ms = 100;
    let server = start(cfg).await;
    let loaded = || async {
        let (_, body) = http(&server, "GET", "/metrics", &[], "").await;
        body.lines()
            .find_map(|l| l.strip_prefix("tether_sync_scopes_loaded "))
            .map(|v| v.parse::<u64>().unwrap())
            .unwrap()
    };
    let mut a = open(&server, "").await;
    let (_, state) = session_with(&mut a, "Canvas").await;
    let root = state["rootUUID"].as_str().unwrap().to_owned();
    send(&mut a, &add_shape_sync(2, &root)).await;
    assert_eq!(recv_msgs(&mut a).await[0]["type"], "ScopeSyncReply");
    assert_eq!(loaded().await, 1);
    drop(a);
    // The session expires (1 s), leaves the scope, and the scope unloads 100 ms later.
    let deadline = tokio::time::Instant::now() + WAIT;
    while loaded().await != 0 {
        assert!(tokio::time::Instant::now() < deadline, "the scope never left memory");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut b = open(&server, "").await;
    let (_, state) = session_with(&mut b, "Canvas").await;
    assert_eq!(state["rootUUID"], root.as_str());
    assert_eq!(state["fragments"].as_array().unwrap().len(), 2, "reloaded with the shape: {state}");
    assert_eq!(loaded().await, 1);
    drop(b);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn over_the_rate_limit_the_socket_closes_and_the_session_resumes_without_loss() {
    let mut cfg = jet_config();
    cfg.sync.inbound_rate = 1;
    cfg.sync.inbound_burst = 4;
    let server = start(cfg).await;
    let mut a = open(&server, "").await;
    let (token, state) = session_with(&mut a, "Canvas").await;
    let root = state["rootUUID"].as_str().unwrap().to_owned();
    let rename = |i: u64| {
        json!({"type":"ScopeSync","index":i,"scopeIndex":0,"fragments":[
            {"type":"change","uuid":root,"clsName":"Canvas","properties":{"name":format!("v{i}")}}
        ]})
        .to_string()
    };
    // Two messages of the burst were used by the handshake; the fourth sync is over.
    for i in 2..=5 {
        a.send(Message::Text(rename(i).into())).await.unwrap();
    }
    let mut replied = Vec::new();
    let code = loop {
        match tokio::time::timeout(WAIT, a.next()).await.expect("close within WAIT") {
            Some(Ok(Message::Text(t))) => {
                for m in serde_json::from_str::<Value>(&t).unwrap().as_array().unwrap() {
                    if m["type"] == "ScopeSyncReply" {
                        replied.push(m["replyTo"].as_u64().unwrap());
                    }
                }
            }
            Some(Ok(Message::Close(f))) => break f.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            other => panic!("socket ended without a close frame: {other:?}"),
        }
    };
    assert_eq!(code, Some(4008));
    assert!(replied.len() < 4, "the message over the limit was not processed: {replied:?}");

    // The client resumes and resends what got no reply: everything applies, once.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut a = open(&server, &format!("?x-jetstream-sessiontoken={token}")).await;
    send(&mut a, r#"{"type":"Ping","index":0,"ack":0,"resendMissing":true}"#).await;
    let resent = recv_msgs(&mut a).await;
    let earlier: Vec<u64> = resent
        .iter()
        .filter(|m| m["type"] == "ScopeSyncReply")
        .map(|m| m["replyTo"].as_u64().unwrap())
        .collect();
    // Every reply the client saw is resent (none was acknowledged), and perhaps replies
    // that were still queued when the socket closed.
    assert!(earlier.starts_with(&replied), "{earlier:?} vs {replied:?}");
    assert!(earlier.len() < 4, "the message over the limit was not processed: {earlier:?}");
    let last = *earlier.last().unwrap_or(&1);
    for i in last + 1..=5 {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        send(&mut a, &rename(i)).await;
        let r = recv_msgs(&mut a).await;
        assert_eq!(r[0]["replyTo"], i, "{r:?}");
        assert_eq!(r[0]["fragmentReplies"], json!([{}]));
    }
    let mut c = open(&server, "").await;
    let (_, state) = session_with(&mut c, "Canvas").await;
    assert_eq!(state["fragments"][0]["properties"]["name"], "v5");
    server.shutdown().await.unwrap();
}

#[test]
fn a_bad_schema_or_template_is_refused_at_start_with_what_is_wrong() {
    let check = |schema: &str, scopes: &str| {
        let dir = fresh_dir("badschema");
        let path = dir.join("schema.toml");
        std::fs::write(&path, schema).unwrap();
        let text = format!("[sync]\nschema = {path:?}\n{scopes}");
        Config::from_toml(&text, std::path::Path::new("t.toml"))
            .and_then(|c| c.validate(std::path::Path::new("t.toml")).map(|()| c))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let e = check("[models.Shape]\nstatus = \"Statuz\"\n", "");
    assert!(e.contains("model 'Shape', property 'status'") && e.contains("Statuz"), "{e}");
    let e = check(SCHEMA, "[[sync.scopes]]\nname = \"Canvas\"\nroot = \"Nope\"\n");
    assert!(e.contains("sync.scopes 'Canvas'") && e.contains("'Nope'"), "{e}");
    let e = check(SCHEMA, "[[sync.scopes]]\nname = \"Canvas\"\nroot = \"Canvas\"\ninitial = { name = 5 }\n");
    assert!(e.contains("initial values") && e.contains("should be String"), "{e}");
    assert_eq!(check(SCHEMA, "[[sync.scopes]]\nname = \"Canvas\"\nroot = \"Canvas\"\n"), "");
}

#[tokio::test]
async fn hostile_messages_get_errors_and_the_server_keeps_serving() {
    let server = start(jet_config()).await;
    let mut a = open(&server, "").await;
    let (_, state) = session_with(&mut a, "ChatRoom").await;
    let room = state["rootUUID"].as_str().unwrap().to_owned();
    let mut index = 1;
    let mut sync = |fragments: Value| {
        index += 1;
        json!({"type":"ScopeSync","index":index,"scopeIndex":0,"fragments":fragments}).to_string()
    };
    let replies = |msgs: &[Value]| msgs[0]["fragmentReplies"].as_array().unwrap().clone();

    // An unknown class and wrong types: per-fragment errors.
    send(
        &mut a,
        &sync(json!([
            {"type":"add","uuid":shape_uuid(1),"clsName":"Nope","properties":{}},
            {"type":"change","uuid":room,"clsName":"ChatRoom","properties":{"name":7}},
            {"type":"change","uuid":room,"clsName":"ChatRoom","properties":{"users":"not an array"}}
        ])),
    )
    .await;
    let r = replies(&recv_msgs(&mut a).await);
    assert_eq!(r[0]["error"]["message"], "No such class type 'Nope'");
    assert_eq!(r[1]["error"]["message"], "Not valid type at 'name', should be String");
    assert_eq!(r[2]["error"]["message"], "Not valid type at 'users', should be array of UUIDs");

    // A huge collection of references to objects that do not exist: one error.
    let many: Vec<String> = (0..20_000).map(shape_uuid).collect();
    send(
        &mut a,
        &sync(json!([{"type":"change","uuid":room,"clsName":"ChatRoom","properties":{"users":many}}])),
    )
    .await;
    let r = replies(&recv_msgs(&mut a).await);
    assert!(r[0]["error"]["message"].as_str().unwrap().starts_with("No such ModelObjects"), "{r:?}");

    // A reference cycle attached to the root (message → author user; users ↔ messages), then
    // cut off: the sweep removes the whole cycle.
    let (u, m) = (shape_uuid(100), shape_uuid(101));
    send(
        &mut a,
        &sync(json!([
            {"type":"change","uuid":room,"clsName":"ChatRoom","properties":{"users":[u],"messages":[m]}},
            {"type":"add","uuid":u,"clsName":"User","properties":{"username":"u"}},
            {"type":"add","uuid":m,"clsName":"Message","properties":{"author":u,"text":"hi"}}
        ])),
    )
    .await;
    assert_eq!(replies(&recv_msgs(&mut a).await), [json!({}), json!({}), json!({})]);
    send(&mut a, &sync(json!([{"type":"change","uuid":room,"clsName":"ChatRoom","properties":{"users":[],"messages":[]}}]))).await;
    assert_eq!(replies(&recv_msgs(&mut a).await), [json!({})]);

    // Deep nesting: a frame nested far beyond any message is dropped, not a crash.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    send(&mut a, &deep).await;
    // An object where a value belongs: refused before anything changes.
    send(
        &mut a,
        &sync(json!([{"type":"change","uuid":room,"clsName":"ChatRoom","properties":{"name":{"$gt":""}}}])),
    )
    .await;
    let r = replies(&recv_msgs(&mut a).await);
    assert_eq!(r[0]["error"]["type"], "could-not-apply-sync-message", "{r:?}");

    // Still serving, and the state is what the accepted changesets made it.
    let mut b = open(&server, "").await;
    let (_, state) = session_with(&mut b, "ChatRoom").await;
    let frags = state["fragments"].as_array().unwrap();
    assert_eq!(frags.len(), 1, "the detached cycle was swept: {frags:?}");
    assert_eq!(frags[0]["properties"]["name"], "Room");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn server_side_updates_apply_atomically_are_broadcast_and_durable() {
    let cfg = jet_config();
    let server = start(cfg.clone()).await;
    let key = ("authorization", "Bearer test-api-key-0123456789");
    let json_ct = ("content-type", "application/json");
    let mut a = open(&server, "").await;
    let (_, state) = session_with(&mut a, "Canvas").await;
    let root = state["rootUUID"].as_str().unwrap().to_owned();

    // $set on the root and $push of an inline new object: one atomic write, broadcast.
    let body = json!({"update": {
        "$set": {"name": "Renamed"},
        "$push": {"shapes": {"$cls": "Shape", "x": 5, "y": 6}}
    }});
    let (st, reply) =
        http(&server, "POST", "/api/scopes/Canvas/update", &[key, json_ct], &body.to_string()).await;
    assert_eq!(st, 200, "{reply}");
    let applied = serde_json::from_str::<Value>(&reply).unwrap()["applied"].clone();
    assert!(applied.as_array().is_some_and(|a| !a.is_empty()), "{reply}");
    let got = recv_msgs(&mut a).await;
    assert_eq!(got[0]["type"], "ScopeSync", "every member gets it, {got:?}");
    assert_eq!(got[0]["fragments"], applied);

    // Read: the whole scope as one tree.
    let (st, body) = http(&server, "GET", "/api/scopes/Canvas", &[key], "").await;
    assert_eq!(st, 200, "{body}");
    let tree: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(tree["rootUUID"], root.as_str());
    assert_eq!(tree["root"]["name"], "Renamed");
    assert_eq!(tree["root"]["shapes"][0]["x"], 5);

    // A value of the wrong type: refused by validation, nothing changes, nothing is sent.
    let bad = json!({"update": {"$set": {"name": "ok", "shapes": 7}}});
    let (st, body) =
        http(&server, "POST", "/api/scopes/Canvas/update", &[key, json_ct], &bad.to_string()).await;
    assert_eq!(st, 422, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["code"], "update_rejected");
    let (_, body) = http(&server, "GET", "/api/scopes/Canvas", &[key], "").await;
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["root"]["name"], "Renamed");
    // Malformed update, unknown scope, no key.
    let (st, _) =
        http(&server, "POST", "/api/scopes/Canvas/update", &[key, json_ct], r#"{"update":{"$nope":{}}}"#)
            .await;
    assert_eq!(st, 400);
    let (st, _) = http(&server, "POST", "/api/scopes/Nope/update", &[key, json_ct], r#"{"update":{}}"#).await;
    assert_eq!(st, 404);
    let (st, _) = http(&server, "GET", "/api/scopes/Canvas", &[], "").await;
    assert_eq!(st, 401);
    send(&mut a, r#"{"type":"Ping","index":0,"ack":3,"resendMissing":true}"#).await;
    assert_eq!(recv_msgs(&mut a).await.len(), 1, "nothing else was broadcast");
    drop(a);
    server.shutdown().await.unwrap();

    // Durable: after a restart the write is there.
    let server = start(cfg).await;
    let (_, body) = http(&server, "GET", "/api/scopes/Canvas", &[key], "").await;
    let tree: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(tree["root"]["name"], "Renamed");
    assert_eq!(tree["root"]["shapes"][0]["x"], 5);
    server.shutdown().await.unwrap();
}

/// What the downstream service was sent: (path id, body).
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, Value)>>>;

/// A downstream service for procedures: records what it is sent; refuses text "reject".
async fn downstream() -> (std::net::SocketAddr, Seen) {
    use axum::extract::{Path, State};
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let app =
        axum::Router::new()
            .route(
                "/room/{id}/messages",
                axum::routing::post(
                    |State(seen): State<Seen>,
                     Path(id): Path<String>,
                     axum::Json(body): axum::Json<Value>| async move {
                        seen.lock().unwrap().push((id, body.clone()));
                        if body["text"] == "slow reject" {
                            // Holds the scope (it waits for its procedures' calls).
                            tokio::time::sleep(Duration::from_millis(400)).await;
                        }
                        if body["text"] == "reject" || body["text"] == "slow reject" {
                            return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({})));
                        }
                        let name = format!("last: {}", body["text"].as_str().unwrap_or(""));
                        (
                            axum::http::StatusCode::OK,
                            axum::Json(json!({"_updates": [{"update": {"$set": {"name": name}}}]})),
                        )
                    },
                ),
            )
            .with_state(std::sync::Arc::clone(&seen));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, seen)
}

/// [`jet_config`] with procedure `ChatRoom.postMessage` calling [`downstream`] at `addr`.
fn procedure_config(addr: std::net::SocketAddr) -> Config {
    let mut cfg = jet_config();
    let procedures = format!(
        r#"
        [[procedures]]
        name = "ChatRoom.postMessage"
        constraints = [
          {{ type = "change", clsName = "ChatRoom", properties = {{ messages = {{ "$array" = "insert" }} }} }},
          {{ type = "add", clsName = "Message", properties = {{ text = "$hasNewValue" }}, allowAdditionalProperties = true }},
        ]
        [procedures.remote]
        url = "http://{addr}/room/:id/messages"
        params = {{ id = "$incoming.ChatRoom.change.uuid" }}
        method = "POST"
        body = {{ text = "$incoming.Message.add.text", room = "$rootModel.name" }}
        "#
    );
    let table: toml::Table = toml::from_str(&procedures).unwrap();
    cfg.sync.procedures = table["procedures"].clone().try_into().unwrap();
    cfg
}

/// A `ScopeSync` posting message number `n` with `text` through `ChatRoom.postMessage`.
fn post(room: &str, index: u64, n: u64, text: &str) -> String {
    let messages: Vec<String> = (1..=n).map(|i| shape_uuid(200 + i)).collect();
    json!({"type":"ScopeSync","index":index,"scopeIndex":0,"atomic":true,"procedure":"ChatRoom.postMessage","fragments":[
        {"type":"change","uuid":room,"clsName":"ChatRoom","properties":{"messages":messages}},
        {"type":"add","uuid":shape_uuid(200 + n),"clsName":"Message","properties":{"text":text}}
    ]})
    .to_string()
}

#[tokio::test]
async fn procedures_check_constraints_call_downstream_and_apply_its_updates() {
    let (addr, seen) = downstream().await;
    let server = start(procedure_config(addr)).await;
    let mut a = open(&server, "").await;
    let mut b = open(&server, "").await;
    let (_, state) = session_with(&mut a, "ChatRoom").await;
    session_with(&mut b, "ChatRoom").await;
    let room = state["rootUUID"].as_str().unwrap().to_owned();
    let post = |index: u64, n: u64, text: &str| post(&room, index, n, text);

    // Accepted downstream: applied, broadcast to B, then the remote's update reaches both.
    send(&mut a, &post(2, 1, "hello")).await;
    let at_a = recv_n(&mut a, 2).await;
    assert_eq!(at_a[0]["fragmentReplies"], json!([{}, {}]));
    let at_b = recv_n(&mut b, 2).await;
    assert_eq!(at_b[0]["fragments"].as_array().unwrap().len(), 2, "{at_b:?}");
    for update in [&at_a[1], &at_b[1]] {
        assert_eq!(update["type"], "ScopeSync");
        assert_eq!(update["fragments"][0]["properties"]["name"], "last: hello", "{update:?}");
    }
    assert_eq!(seen.lock().unwrap().clone(), [(room.clone(), json!({"text": "hello", "room": "Room"}))]);

    // Refused downstream: the whole message is refused and nothing changes.
    send(&mut a, &post(3, 2, "reject")).await;
    let r = recv_msgs(&mut a).await;
    let refused = json!({"error": {
        "message": "Could not apply SyncMessage: Expected response 200 status code, received 500 status code",
        "type": "could-not-apply-sync-message"}});
    assert_eq!(r[0]["fragmentReplies"], json!([refused, refused]));
    // Not matching the constraints: refused before any call.
    send(&mut a, &json!({"type":"ScopeSync","index":4,"scopeIndex":0,"atomic":true,"procedure":"ChatRoom.postMessage","fragments":[
        {"type":"change","uuid":room,"clsName":"ChatRoom","properties":{"name":"sneaky"}}
    ]}).to_string()).await;
    let r = recv_msgs(&mut a).await;
    assert_eq!(
        r[0]["fragmentReplies"][0]["error"]["message"],
        "Could not apply SyncMessage: Changes do not match the procedure constraints"
    );
    assert_eq!(seen.lock().unwrap().len(), 2, "no call for a changeset that fails its constraints");

    let mut c = open(&server, "").await;
    let (_, state) = session_with(&mut c, "ChatRoom").await;
    let frags = state["fragments"].as_array().unwrap();
    assert_eq!(frags[0]["properties"]["name"], "last: hello");
    assert_eq!(frags[0]["properties"]["messages"], json!([shape_uuid(201)]));
    server.shutdown().await.unwrap();
}

/// A batch the store refuses (here: another process appended to the scope's log first) is
/// refused as a whole and the scope reloads what is durable; a fetch in that batch is
/// answered at once with the reloaded state. (Regression: that fetch's reply waited for the
/// session's next flush.)
#[tokio::test]
async fn a_batch_the_store_refuses_is_refused_and_a_fetch_in_it_gets_the_durable_state() {
    let (addr, _) = downstream().await;
    let cfg = procedure_config(addr);
    let data_dir = cfg.data_dir.clone();
    let server = start(cfg).await;
    let mut a = open(&server, "").await;
    let (_, state) = session_with(&mut a, "ChatRoom").await;
    let room = state["rootUUID"].as_str().unwrap().to_owned();

    // Another writer of the same file moves the scope's log on.
    let other = tether_store::SqliteStore::open_in_dir(&data_dir).unwrap();
    let stored = tether_store::Store::load_scope(&other, "ChatRoom").await.unwrap().unwrap();
    let change =
        json!([{"type":"change","uuid":room,"clsName":"ChatRoom","properties":{"name":"written elsewhere"}}]);
    tether_store::Store::append_changesets(
        &other,
        "ChatRoom",
        vec![(stored.last_seq() + 1, change.to_string().into_bytes())],
    )
    .await
    .unwrap();

    // A slow procedure call holds the scope, so the next two messages land in one batch.
    send(&mut a, &post(&room, 2, 1, "slow reject")).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let batch = json!([
        {"type":"ScopeSync","index":3,"scopeIndex":0,"fragments":[
            {"type":"change","uuid":room,"clsName":"ChatRoom","properties":{"name":"not stored"}}]},
        {"type":"ScopeFetch","index":4,"name":"ChatRoom","params":{}}
    ]);
    send(&mut a, &batch.to_string()).await;
    let got = recv_n(&mut a, 4).await;
    assert_eq!(got[0]["replyTo"], 2, "{got:?}");
    assert_eq!(got[1]["type"], "ScopeSyncReply", "{got:?}");
    assert_eq!(got[1]["replyTo"], 3);
    assert_eq!(
        got[1]["fragmentReplies"][0]["error"]["message"],
        "Could not apply SyncMessage: the change could not be stored"
    );
    assert_eq!(got[2]["type"], "ScopeFetchReply", "{got:?}");
    assert_eq!(got[2]["replyTo"], 4);
    assert_eq!(got[3]["type"], "ScopeState");
    assert_eq!(got[3]["fragments"][0]["properties"]["name"], "written elsewhere", "{got:?}");
    server.shutdown().await.unwrap();
}
