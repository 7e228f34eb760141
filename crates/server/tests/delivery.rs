//! Delivery guarantees over real sockets: channel history (offsets under an epoch),
//! recovery after a dropped connection (native `recover` and SSE `Last-Event-ID`),
//! idempotent publishing, and history pages over the protocol and the HTTP API.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use futures_util::StreamExt;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tether_engine::ClientRule;
use tether_server::config::NamespaceConfig;
use tether_server::{Config, RunningServer};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

// ---- helpers ---------------------------------------------------------------------------

/// A namespace with client publishing and `size` publications of history per channel.
fn history_ns(size: usize, recovery_limit: usize) -> NamespaceConfig {
    NamespaceConfig {
        publish: ClientRule::Anyone,
        history_size: size,
        history_ttl_ms: 0,
        recovery_limit,
        ..NamespaceConfig::default()
    }
}

/// [`config`] (whose `chat` namespace keeps no history) plus `h`, keeping 100 publications
/// per channel; no inbound rate limit, so test clients may publish as fast as they can.
fn delivery_config() -> Config {
    let mut c = config();
    c.limits.inbound_rate = 0;
    c.namespaces.insert("h".into(), history_ns(100, 1000));
    c
}

/// A small deterministic PRNG (splitmix64): the tests' randomness is reproducible from
/// the seed they print.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Self {
        Self(seed ^ stream.wrapping_add(1).wrapping_mul(0xA076_1D64_78BD_642F))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-enough in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The seed of the seeded tests: `TETHER_TEST_SEED` if set, else a fixed one.
fn seed() -> u64 {
    std::env::var("TETHER_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x7E7E_5EED)
}

fn offset(v: &Value) -> u64 {
    v["offset"].as_u64().unwrap_or_else(|| panic!("an offset in {v}"))
}

fn epoch(v: &Value) -> String {
    v["epoch"].as_str().unwrap_or_else(|| panic!("an epoch in {v}")).to_owned()
}

/// Offsets of a page's or recovery's `publications`.
fn offsets(publications: &Value) -> Vec<u64> {
    publications.as_array().unwrap_or_else(|| panic!("a list: {publications}")).iter().map(offset).collect()
}

/// `data` of a page's or recovery's `publications`.
fn datas(publications: &Value) -> Vec<Value> {
    publications
        .as_array()
        .unwrap_or_else(|| panic!("a list: {publications}"))
        .iter()
        .map(|p| p["data"].clone())
        .collect()
}

/// Publishes over the HTTP API, asserting 200; returns the result.
async fn api_publish(server: &RunningServer, body: Value) -> Value {
    let (s, b) = api(server, "/api/publish", &body.to_string()).await;
    assert_eq!(s, 200, "publish {body}: {b}");
    serde_json::from_str(&b).expect("JSON result")
}

/// `POST /api/history`, asserting 200; returns the page.
async fn api_history(server: &RunningServer, body: Value) -> Value {
    let (s, b) = api(server, "/api/history", &body.to_string()).await;
    assert_eq!(s, 200, "history {body}: {b}");
    serde_json::from_str(&b).expect("JSON page")
}

/// The `data` of a protocol history page of `channel` (`q`: since, limit, reverse).
async fn ws_history(ws: &mut Ws, id: u64, channel: &str, q: Value) -> Vec<Value> {
    let mut q = q;
    q["op"] = json!("history");
    q["channel"] = json!(channel);
    let r = request(ws, id, q).await;
    datas(&r.get("result").unwrap_or_else(|| panic!("{r}"))["publications"])
}

/// An HTTP error reply's `(status, code)`.
fn http_error(reply: &(u16, String)) -> (u16, String) {
    let v: Value = serde_json::from_str(&reply.1).unwrap_or_else(|_| panic!("JSON error body: {reply:?}"));
    assert!(v["message"].is_string(), "{v}");
    (reply.0, v["code"].as_str().unwrap_or_else(|| panic!("a code: {v}")).to_owned())
}

/// Subscribes, asserting success; returns the result. `recover`: `(offset, epoch)`.
async fn subscribe(
    ws: &mut Ws,
    id: u64,
    channel: &str,
    filter: Option<&str>,
    recover: Option<(u64, &str)>,
) -> Value {
    let mut body = json!({"op":"subscribe","channel":channel});
    if let Some(f) = filter {
        body["filter"] = Value::from(f);
    }
    if let Some((o, e)) = recover {
        body["recover"] = json!({"offset":o,"epoch":e});
    }
    let r = request(ws, id, body).await;
    r.get("result").unwrap_or_else(|| panic!("subscribe {channel}: {r}")).clone()
}

/// A native connection to `addr` (for spawned tasks, which cannot borrow the server).
async fn native_at(addr: SocketAddr) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await.expect("ws connects");
    let r = request(&mut ws, 1, json!({"op":"connect"})).await;
    assert!(r.get("result").is_some(), "{r}");
    ws
}

/// A native connection that declared `identity` (needs `auth.allow_client_identity`).
async fn native_as(server: &RunningServer, user: &str) -> Ws {
    let mut ws = ws(server, "/ws").await;
    let r = request(&mut ws, 1, json!({"op":"connect","identity":{"user":user}})).await;
    assert!(r.get("result").is_some(), "{r}");
    ws
}

/// The next `pub` push's `(offset, data)`, asserting its channel.
async fn next_pub(ws: &mut Ws, channel: &str) -> (u64, Value) {
    let v = recv_json(ws).await;
    assert_eq!((v["push"].as_str(), v["channel"].as_str()), (Some("pub"), Some(channel)), "{v}");
    (offset(&v), v["data"].clone())
}

/// An HTTP client that keeps its connection (the chaos publishers post thousands of times).
#[derive(Clone)]
struct ApiClient {
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<bytes::Bytes>,
    >,
    addr: SocketAddr,
}

impl ApiClient {
    fn new(addr: SocketAddr) -> Self {
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<http_body_util::Full<bytes::Bytes>>();
        Self { client, addr }
    }

    async fn post(&self, path: &str, body: &str) -> (u16, String) {
        use http_body_util::BodyExt;
        let req = hyper::Request::post(format!("http://{}{path}", self.addr))
            .header("authorization", format!("Bearer {API_KEY}"))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body.to_owned())))
            .expect("request");
        let resp = tokio::time::timeout(WAIT, self.client.request(req))
            .await
            .expect("reply within WAIT")
            .expect("http");
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// One SSE event: its `id:`, `event:` and (single-line, JSON) `data:`.
#[derive(Debug, Clone, PartialEq)]
struct SseEvent {
    id: Option<String>,
    event: Option<String>,
    data: Value,
}

fn parse_event(block: &str) -> SseEvent {
    let body = block.strip_suffix("\n\n").unwrap_or_else(|| panic!("an event block: {block:?}"));
    let (mut id, mut event, mut data) = (None, None, None);
    for line in body.split('\n') {
        if let Some(v) = line.strip_prefix("id: ") {
            assert!(id.replace(v.to_owned()).is_none(), "one id: {block:?}");
        } else if let Some(v) = line.strip_prefix("event: ") {
            assert!(event.replace(v.to_owned()).is_none(), "one event: {block:?}");
        } else if let Some(v) = line.strip_prefix("data: ") {
            let v: Value = serde_json::from_str(v).unwrap_or_else(|_| panic!("JSON data: {block:?}"));
            assert!(data.replace(v).is_none(), "one data line: {block:?}");
        } else {
            panic!("unexpected line {line:?} in {block:?}");
        }
    }
    SseEvent { id, event, data: data.unwrap_or_else(|| panic!("a data line: {block:?}")) }
}

async fn next_sse(sse: &mut Sse) -> SseEvent {
    parse_event(&sse.next_event().await)
}

/// Opens an SSE stream on a history channel (optionally resuming), asserting 200.
async fn open_history_sse(server: &RunningServer, path: &str, last_event_id: Option<&str>) -> Sse {
    let headers: Vec<(&str, &str)> = last_event_id.map(|id| ("last-event-id", id)).into_iter().collect();
    let (parts, sse) = open_sse_with(server, path, &headers).await;
    assert_eq!(parts.status, 200, "GET {path} (Last-Event-ID {last_event_id:?})");
    assert_eq!(parts.headers["content-type"], "text/event-stream");
    sse
}

/// Asserts a publication event on `channel` at `offset` in `epoch`; returns its data.
fn assert_pub_event(e: &SseEvent, channel: &str, epoch: &str, offset: u64) -> Value {
    assert_eq!(e.id.as_deref(), Some(format!("{epoch}:{offset}").as_str()), "{e:?}");
    assert_eq!(e.event, None, "{e:?}");
    assert_eq!((e.data["push"].as_str(), e.data["channel"].as_str()), (Some("pub"), Some(channel)), "{e:?}");
    assert_eq!(e.data["offset"], offset, "{e:?}");
    e.data["data"].clone()
}

/// Asserts the `subscribed` event; returns its data.
fn assert_subscribed_event(e: &SseEvent, epoch: &str, top: u64) -> Value {
    assert_eq!(e.event.as_deref(), Some("subscribed"), "{e:?}");
    assert_eq!(e.id.as_deref(), Some(format!("{epoch}:{top}").as_str()), "{e:?}");
    assert_eq!((e.data["offset"].as_u64(), e.data["epoch"].as_str()), (Some(top), Some(epoch)), "{e:?}");
    e.data.clone()
}

// ---- 1. chaos --------------------------------------------------------------------------

const CHAOS_CHANNELS: usize = 8;
const CHAOS_PUBLISHERS: usize = 4;
const CHAOS_PER_PUBLISHER: usize = 2_500;
const CHAOS_SUBSCRIBERS: usize = 48;
const CHAOS_HISTORY: u64 = 50;
const CHAOS_RECOVERY_LIMIT: u64 = 250;

fn chaos_channel(i: usize) -> String {
    format!("h:chaos{i}")
}

/// What a chaos subscriber saw on one channel, in order.
#[derive(Debug)]
enum Seen {
    /// Subscribed without recovery: live from `top + 1`.
    Fresh { top: u64, epoch: String },
    /// Recovered from `since`: `pubs`, then live from `top + 1`.
    Recovered { since: u64, top: u64, epoch: String, pubs: Vec<(u64, Value)> },
    /// Told it cannot recover from `since`: live from `top + 1`.
    NotRecovered { since: u64, top: u64, epoch: String, reason: String },
    /// A live push.
    Push { offset: u64, data: Value },
}

impl Seen {
    /// Without payloads, for failure messages.
    fn brief(&self) -> String {
        match self {
            Self::Fresh { top, epoch } => format!("subscribed at {top} in {epoch}"),
            Self::Recovered { since, top, epoch, pubs } => {
                let o: Vec<u64> = pubs.iter().map(|p| p.0).collect();
                format!("recovered from {since} to {top} in {epoch}: offsets {o:?}")
            }
            Self::NotRecovered { since, top, epoch, reason } => {
                format!("not recovered from {since} ({reason}), top {top} in {epoch}")
            }
            Self::Push { offset, .. } => format!("push {offset}"),
        }
    }
}

#[derive(Debug, Default)]
struct ChaosSub {
    channels: [usize; 2],
    seen: [Vec<Seen>; 2],
    connections: usize,
    /// Connections the server closed as slow consumers (4002); recovered from like drops.
    slow: usize,
    error: Option<String>,
}

/// Publications of the chaos run: `(channel, offset) -> data`, and each channel's epoch.
#[derive(Default)]
struct Published {
    data: HashMap<(usize, u64), Value>,
    epochs: [Option<String>; CHAOS_CHANNELS],
}

/// The next JSON frame (heartbeats skipped); `None` if the server closed the connection as
/// a slow consumer; an error for anything else (a stall, another close).
async fn chaos_frame(ws: &mut Ws) -> Result<Option<Value>, String> {
    loop {
        let msg = match tokio::time::timeout(WAIT, ws.next()).await {
            Err(_) => return Err("no frame within WAIT (stalled: a publication never arrived?)".into()),
            Ok(None) => return Err("connection ended without a close frame".into()),
            Ok(Some(Err(e))) => return Err(format!("socket error {e}")),
            Ok(Some(Ok(m))) => m,
        };
        match msg {
            Message::Text(t) if t.as_str() == r#"{"push":"ping"}"# => {}
            Message::Text(t) => {
                return serde_json::from_str(t.as_str()).map(Some).map_err(|e| format!("{e}: {t}"));
            }
            Message::Close(Some(f)) if u16::from(f.code) == 4002 => return Ok(None),
            Message::Close(f) => return Err(format!("unexpected close {f:?}")),
            _ => {}
        }
    }
}

/// Records a `pub` push of a channel subscribed on this connection (`live`: its subscribe
/// reply has arrived).
fn chaos_push(
    sub: &mut ChaosSub,
    pos: &mut [Option<(u64, String)>; 2],
    live: [bool; 2],
    v: &Value,
) -> Result<(), String> {
    if v["push"] != "pub" {
        return Err(format!("unexpected frame {v}"));
    }
    let i = (0..2)
        .find(|&i| v["channel"].as_str() == Some(chaos_channel(sub.channels[i]).as_str()) && live[i])
        .ok_or_else(|| format!("push of a channel not subscribed (or before its subscribe reply): {v}"))?;
    let o = v["offset"].as_u64().ok_or_else(|| format!("push without offset: {v}"))?;
    sub.seen[i].push(Seen::Push { offset: o, data: v["data"].clone() });
    if let Some(p) = &mut pos[i] {
        p.0 = o;
    }
    Ok(())
}

/// How many publications (of its first channel) a subscriber stays away for: mostly few
/// enough to recover, sometimes more than the history keeps (`trimmed`), sometimes more
/// than one recovery may return (`too_many`).
fn chaos_gap(rng: &mut Rng) -> u64 {
    match rng.below(100) {
        0..75 => rng.below(CHAOS_HISTORY * 3 / 5),
        75..88 => 2 * CHAOS_HISTORY + rng.below(CHAOS_HISTORY + CHAOS_HISTORY / 2),
        _ => CHAOS_RECOVERY_LIMIT + 150 + rng.below(300),
    }
}

async fn chaos_subscriber(
    addr: SocketAddr,
    me: usize,
    seed: u64,
    progress: Vec<watch::Receiver<u64>>,
    finals: watch::Receiver<Option<Vec<u64>>>,
) -> ChaosSub {
    let mut rng = Rng::new(seed, 1_000 + me as u64);
    let a = usize::try_from(rng.below(CHAOS_CHANNELS as u64)).expect("small");
    let b = (a + 1 + usize::try_from(rng.below(CHAOS_CHANNELS as u64 - 1)).expect("small")) % CHAOS_CHANNELS;
    let mut sub = ChaosSub { channels: [a, b], ..ChaosSub::default() };
    if let Err(e) = chaos_subscriber_run(&mut sub, addr, &mut rng, progress, finals).await {
        sub.error = Some(e);
    }
    sub
}

async fn chaos_subscriber_run(
    sub: &mut ChaosSub,
    addr: SocketAddr,
    rng: &mut Rng,
    mut progress: Vec<watch::Receiver<u64>>,
    mut finals: watch::Receiver<Option<Vec<u64>>>,
) -> Result<(), String> {
    let mut pos: [Option<(u64, String)>; 2] = [None, None];
    let mut id = 10u64;
    let caught_up = |pos: &[Option<(u64, String)>; 2], f: &[u64], ch: [usize; 2]| {
        (0..2).all(|i| pos[i].as_ref().is_some_and(|p| p.0 == f[ch[i]]))
    };
    loop {
        let mut ws = native_at(addr).await;
        sub.connections += 1;
        let mut dropped_by_server = false;
        let mut live = [false; 2];
        'subscribe: for i in 0..2 {
            id += 1;
            let channel = chaos_channel(sub.channels[i]);
            let mut body = json!({"id":id,"op":"subscribe","channel":channel});
            if let Some((o, e)) = &pos[i] {
                body["recover"] = json!({"offset":o,"epoch":e});
            }
            send(&mut ws, &body.to_string()).await;
            let reply = loop {
                let Some(v) = chaos_frame(&mut ws).await? else {
                    dropped_by_server = true;
                    break 'subscribe;
                };
                if v.get("push").is_some() {
                    chaos_push(sub, &mut pos, live, &v)?;
                } else if v["id"] == id {
                    break v;
                } else {
                    return Err(format!("unexpected frame {v}"));
                }
            };
            let r = reply.get("result").ok_or_else(|| format!("subscribe {channel} failed: {reply}"))?;
            let top = r["offset"].as_u64().ok_or_else(|| format!("no offset: {reply}"))?;
            let ep = r["epoch"].as_str().ok_or_else(|| format!("no epoch: {reply}"))?.to_owned();
            let seen = match (&pos[i], r["recovered"].as_bool()) {
                (None, None) => Seen::Fresh { top, epoch: ep.clone() },
                (Some((since, _)), Some(true)) => {
                    let list =
                        r["publications"].as_array().ok_or_else(|| format!("no publications: {reply}"))?;
                    let mut pubs = Vec::with_capacity(list.len());
                    for p in list {
                        if p["push"] != "pub" || p["channel"] != channel.as_str() {
                            return Err(format!("a recovered publication of another kind: {p}"));
                        }
                        pubs.push((
                            p["offset"].as_u64().ok_or_else(|| format!("no offset: {p}"))?,
                            p["data"].clone(),
                        ));
                    }
                    Seen::Recovered { since: *since, top, epoch: ep.clone(), pubs }
                }
                (Some((since, _)), Some(false)) => Seen::NotRecovered {
                    since: *since,
                    top,
                    epoch: ep.clone(),
                    reason: r["reason"].as_str().unwrap_or("(none)").to_owned(),
                },
                _ => {
                    return Err(format!(
                        "unexpected subscribe result (recover asked: {}): {reply}",
                        pos[i].is_some()
                    ));
                }
            };
            sub.seen[i].push(seen);
            pos[i] = Some((top, ep));
            live[i] = true;
        }
        let mut planned_drop = false;
        if !dropped_by_server {
            let budget = 10 + rng.below(290);
            let mut got = 0;
            loop {
                let done = finals.borrow_and_update().clone();
                if let Some(f) = &done {
                    if caught_up(&pos, f, sub.channels) {
                        return Ok(());
                    }
                } else if got >= budget {
                    planned_drop = true;
                    break;
                }
                let frame = tokio::select! {
                    f = chaos_frame(&mut ws) => f?,
                    _ = finals.changed(), if done.is_none() => continue,
                };
                match frame {
                    None => break,
                    Some(v) => chaos_push(sub, &mut pos, live, &v)?,
                }
                got += 1;
            }
        }
        if !planned_drop {
            sub.slow += 1;
        }
        // Abruptly: no close frame, whatever is in flight is lost.
        drop(ws);
        if planned_drop {
            let gap = chaos_gap(rng);
            let target = pos[0].as_ref().map_or(0, |p| p.0) + gap;
            let rx = &mut progress[sub.channels[0]];
            while *rx.borrow_and_update() < target && finals.borrow().is_none() {
                tokio::select! {
                    r = rx.changed() => r.map_err(|_| "progress gone".to_owned())?,
                    r = finals.changed() => r.map_err(|_| "finals gone".to_owned())?,
                }
            }
        }
    }
}

async fn chaos_publisher(
    addr: SocketAddr,
    me: usize,
    seed: u64,
    progress: Arc<Vec<watch::Sender<u64>>>,
    published: Arc<Mutex<Published>>,
) -> usize {
    let mut rng = Rng::new(seed, me as u64);
    let http = me.is_multiple_of(2);
    let client = ApiClient::new(addr);
    let mut ws = if http { None } else { Some(native_at(addr).await) };
    let mut n = 0;
    let mut req_id = 10;
    while n < CHAOS_PER_PUBLISHER {
        // (channel, data) items; the HTTP publishers sometimes batch a few.
        let left = (CHAOS_PER_PUBLISHER - n) as u64;
        let k = if http && rng.below(10) == 0 { (1 + rng.below(3)).min(left) } else { 1 };
        let items: Vec<(usize, Value)> = (0..k)
            .map(|j| {
                let ch = usize::try_from(rng.below(CHAOS_CHANNELS as u64)).expect("small");
                (ch, json!({"p":me,"n":n + usize::try_from(j).expect("small"),"r":rng.below(1_000_000)}))
            })
            .collect();
        let results: Vec<Value> = match &mut ws {
            Some(ws) => {
                req_id += 1;
                let (ch, data) = &items[0];
                let r = request(ws, req_id, json!({"op":"publish","channel":chaos_channel(*ch),"data":data}))
                    .await;
                vec![r.get("result").unwrap_or_else(|| panic!("publish failed: {r}")).clone()]
            }
            None if items.len() == 1 => {
                let (ch, data) = &items[0];
                let body = json!({"channel":chaos_channel(*ch),"data":data}).to_string();
                let (s, b) = client.post("/api/publish", &body).await;
                assert_eq!(s, 200, "{b}");
                vec![serde_json::from_str(&b).expect("json")]
            }
            None => {
                let pubs: Vec<Value> = items
                    .iter()
                    .map(|(ch, data)| json!({"channel":chaos_channel(*ch),"data":data}))
                    .collect();
                let (s, b) = client.post("/api/batch", &json!({"publications":pubs}).to_string()).await;
                assert_eq!(s, 200, "{b}");
                let v: Value = serde_json::from_str(&b).expect("json");
                v["results"].as_array().expect("results").clone()
            }
        };
        assert_eq!(results.len(), items.len(), "one result per publication");
        let mut p = published.lock();
        for ((ch, data), r) in items.into_iter().zip(results) {
            let (o, e) = (offset(&r), epoch(&r));
            match &p.epochs[ch] {
                None => p.epochs[ch] = Some(e),
                Some(known) => assert_eq!(*known, e, "one epoch per channel"),
            }
            if let Some(before) = p.data.insert((ch, o), data.clone()) {
                panic!("offset {o} of {} given twice: {before} and {data}", chaos_channel(ch));
            }
            progress[ch].send_modify(|top| *top = (*top).max(o));
            n += 1;
        }
    }
    n
}

#[derive(Debug, Default)]
struct ChaosStats {
    pushes: usize,
    recovered: usize,
    recovered_pubs: usize,
    trimmed: usize,
    too_many: usize,
}

/// Checks one subscriber's record of one channel against what was published.
fn chaos_verify(
    sub: &ChaosSub,
    i: usize,
    published: &Published,
    finals: &[u64],
    stats: &mut ChaosStats,
) -> Result<(), String> {
    let ch = sub.channels[i];
    let want_epoch = published.epochs[ch].as_deref().ok_or("a channel without publications")?;
    let payload = |o: u64, data: &Value| match published.data.get(&(ch, o)) {
        Some(p) if p == data => Ok(()),
        Some(p) => Err(format!("offset {o}: got {data}, published {p}")),
        None => Err(format!("offset {o} was never published (got {data})")),
    };
    let check_epoch = |e: &str| {
        if e == want_epoch { Ok(()) } else { Err(format!("epoch {e}, publishers got {want_epoch}")) }
    };
    // The offset the next live push must have.
    let mut next: Option<u64> = None;
    for (k, s) in sub.seen[i].iter().enumerate() {
        let at = |m: String| format!("event #{k} ({}): {m}", s.brief());
        let last_seen =
            |next: Option<u64>| next.map(|n| n - 1).ok_or_else(|| at("recovery before any subscribe".into()));
        match s {
            Seen::Fresh { top, epoch } => {
                if next.is_some() {
                    return Err(at("a fresh subscribe after the first".into()));
                }
                check_epoch(epoch).map_err(at)?;
                next = Some(top + 1);
            }
            Seen::Recovered { since, top, epoch, pubs } => {
                if *since != last_seen(next)? {
                    return Err(at(format!(
                        "recovered from {since}, but the last offset seen was {:?}",
                        last_seen(next)
                    )));
                }
                check_epoch(epoch).map_err(at)?;
                let got: Vec<u64> = pubs.iter().map(|p| p.0).collect();
                let want: Vec<u64> = (since + 1..=*top).collect();
                if got != want {
                    return Err(at(format!("recovered offsets {got:?}, want {}..={top}", since + 1)));
                }
                if top - since > CHAOS_HISTORY.min(CHAOS_RECOVERY_LIMIT) {
                    return Err(at("recovered more than the history keeps".into()));
                }
                for (o, data) in pubs {
                    payload(*o, data).map_err(at)?;
                }
                stats.recovered += 1;
                stats.recovered_pubs += pubs.len();
                next = Some(top + 1);
            }
            Seen::NotRecovered { since, top, epoch, reason } => {
                if *since != last_seen(next)? {
                    return Err(at(format!(
                        "recovery from {since}, but the last offset seen was {:?}",
                        last_seen(next)
                    )));
                }
                check_epoch(epoch).map_err(at)?;
                let missed = top.checked_sub(*since).ok_or_else(|| at("top below the position".into()))?;
                match reason.as_str() {
                    "trimmed" if missed > CHAOS_HISTORY => stats.trimmed += 1,
                    "too_many" if missed > CHAOS_RECOVERY_LIMIT => stats.too_many += 1,
                    _ => {
                        return Err(at(format!(
                            "told {reason:?} with {missed} missed (history {CHAOS_HISTORY}, recovery limit {CHAOS_RECOVERY_LIMIT})"
                        )));
                    }
                }
                next = Some(top + 1);
            }
            Seen::Push { offset, data } => {
                let n = next.ok_or_else(|| at("a push before the subscribe result".into()))?;
                if *offset != n {
                    let what = if *offset < n { "duplicate or out of order" } else { "gap" };
                    return Err(at(format!("{what}: push {offset}, expected {n}")));
                }
                payload(*offset, data).map_err(at)?;
                stats.pushes += 1;
                next = Some(n + 1);
            }
        }
    }
    let end = next.map(|n| n - 1);
    if end != Some(finals[ch]) {
        return Err(format!("ended at {end:?}, the channel's last offset is {}", finals[ch]));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_subscribers_drop_and_recover_every_publication_exactly_once_or_are_told() {
    let seed = seed();
    eprintln!("chaos seed {seed} (rerun with TETHER_TEST_SEED={seed})");
    let mut c = config();
    c.limits.inbound_rate = 0;
    c.namespaces.insert(
        "h".into(),
        history_ns(
            usize::try_from(CHAOS_HISTORY).expect("small"),
            usize::try_from(CHAOS_RECOVERY_LIMIT).expect("small"),
        ),
    );
    let server = start(c).await;
    let addr = server.addr;

    let (senders, receivers): (Vec<_>, Vec<_>) = (0..CHAOS_CHANNELS).map(|_| watch::channel(0u64)).unzip();
    let progress = Arc::new(senders);
    let (finals_tx, finals_rx) = watch::channel(None::<Vec<u64>>);
    let published = Arc::new(Mutex::new(Published::default()));

    let subscribers: Vec<_> = (0..CHAOS_SUBSCRIBERS)
        .map(|me| tokio::spawn(chaos_subscriber(addr, me, seed, receivers.clone(), finals_rx.clone())))
        .collect();
    let publishers: Vec<_> = (0..CHAOS_PUBLISHERS)
        .map(|me| {
            tokio::spawn(chaos_publisher(addr, me, seed, Arc::clone(&progress), Arc::clone(&published)))
        })
        .collect();
    let mut total = 0;
    for p in publishers {
        total += p.await.unwrap_or_else(|e| panic!("seed {seed}: a publisher failed: {e}"));
    }
    assert_eq!(total, CHAOS_PUBLISHERS * CHAOS_PER_PUBLISHER);
    let published = Arc::into_inner(published).expect("publishers done").into_inner();
    assert_eq!(published.data.len(), total, "every publication got its own (channel, offset)");
    let finals: Vec<u64> = (0..CHAOS_CHANNELS)
        .map(|ch| published.data.keys().filter(|k| k.0 == ch).map(|k| k.1).max().unwrap_or(0))
        .collect();
    for (ch, top) in finals.iter().enumerate() {
        let count = published.data.keys().filter(|k| k.0 == ch).count() as u64;
        assert_eq!(count, *top, "offsets of {} are 1..={top} without holes", chaos_channel(ch));
    }
    finals_tx.send(Some(finals.clone())).expect("subscribers listen");

    let mut stats = ChaosStats::default();
    let (mut connections, mut slow) = (0, 0);
    let mut failures = Vec::new();
    for (me, s) in subscribers.into_iter().enumerate() {
        let sub = s.await.unwrap_or_else(|e| panic!("seed {seed}: subscriber {me} panicked: {e}"));
        connections += sub.connections;
        slow += sub.slow;
        if let Some(e) = &sub.error {
            failures.push(format!("subscriber {me}: {e}"));
        }
        for i in 0..2 {
            if let Err(e) = chaos_verify(&sub, i, &published, &finals, &mut stats) {
                failures.push(format!("subscriber {me}, {}: {e}", chaos_channel(sub.channels[i])));
            }
        }
    }
    eprintln!(
        "seed {seed}: {total} publications, {connections} connections ({slow} closed by the server), {stats:?}"
    );
    assert!(
        failures.is_empty(),
        "seed {seed}: {} failures; first ones:\n{}",
        failures.len(),
        failures[..failures.len().min(10)].join("\n")
    );
    assert!(
        stats.recovered > 0 && stats.trimmed > 0 && stats.too_many > 0,
        "seed {seed}: every outcome exercised: {stats:?}"
    );
    assert!(
        stats.recovered > stats.trimmed + stats.too_many,
        "seed {seed}: most recoveries succeed: {stats:?}"
    );
}

// ---- 2. recovery racing live publications ----------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recovery_racing_live_publications_has_no_gap_and_no_duplicate() {
    const CH: &str = "h:race";
    const PUBLISHERS: usize = 2;
    let seed = seed();
    let mut c = config();
    c.limits.inbound_rate = 0;
    // Recovery limit 0: up to the whole history, so every recovery here must succeed.
    c.namespaces.insert("h".into(), history_ns(1_000_000, 0));
    let server = start(c).await;
    let addr = server.addr;
    let stop = Arc::new(AtomicBool::new(false));
    // offset -> data, as the publishers' results tell.
    let published = Arc::new(Mutex::new(HashMap::<u64, Value>::new()));
    let (started_tx, mut started) = watch::channel(0usize);
    let started_tx = Arc::new(started_tx);
    let mut publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let (stop, published, started_tx) =
                (Arc::clone(&stop), Arc::clone(&published), Arc::clone(&started_tx));
            tokio::spawn(async move {
                // Each as fast as its request/reply round trips allow.
                let mut ws = native_at(addr).await;
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let data = json!({"p":p,"n":n});
                    let r = request(&mut ws, 10 + n, json!({"op":"publish","channel":CH,"data":data})).await;
                    let o = offset(&r["result"]);
                    assert!(published.lock().insert(o, data).is_none(), "offset {o} given twice");
                    n += 1;
                    started_tx.send_modify(|k| *k += 1);
                }
            })
        })
        .collect();
    started.wait_for(|n| *n >= PUBLISHERS).await.expect("publishers run");

    let mut rng = Rng::new(seed, 7);
    // Every (offset, data) received after the first subscribe's top, in order (recovered
    // and live).
    let mut got: Vec<(u64, Value)> = Vec::new();
    let mut pos: Option<(u64, String)> = None;
    let (mut recovered_pubs, mut live) = (0usize, 0usize);
    const ROUNDS: usize = 50;
    for round in 0..=ROUNDS {
        if round == ROUNDS {
            // The last recovery: after the publishers stopped, it must reach their end.
            stop.store(true, Ordering::Relaxed);
            for p in publishers.drain(..) {
                p.await.expect("publisher");
            }
        }
        let mut ws = native(&server).await;
        let r = subscribe(&mut ws, 2, CH, None, pos.as_ref().map(|(o, e)| (*o, e.as_str()))).await;
        let top = offset(&r);
        match &pos {
            None => assert_eq!(r.get("recovered"), None, "{r}"),
            Some((since, e)) => {
                assert_eq!(epoch(&r), *e, "seed {seed} round {round}: {r}");
                assert_eq!(r["recovered"], true, "seed {seed} round {round}: {r}");
                let pubs = r["publications"].as_array().expect("publications");
                assert_eq!(
                    offsets(&r["publications"]),
                    (since + 1..=top).collect::<Vec<_>>(),
                    "seed {seed} round {round}: everything after {since} up to the top"
                );
                got.extend(pubs.iter().map(|p| (offset(p), p["data"].clone())));
                recovered_pubs += pubs.len();
            }
        }
        let first = pos.is_none();
        pos = Some((top, epoch(&r)));
        if first {
            got.push((top, Value::Null));
        }
        if round == ROUNDS {
            break;
        }
        // Sometimes read nothing: the recovery then races only the next subscribe.
        for _ in 0..rng.below(25) {
            let (o, data) = next_pub(&mut ws, CH).await;
            got.push((o, data));
            live += 1;
            if let Some(p) = &mut pos {
                p.0 = o;
            }
        }
        // Abruptly, with pushes still in flight.
        drop(ws);
    }
    let (top, e) = pos.expect("subscribed");
    let published = std::mem::take(&mut *published.lock());
    assert_eq!(published.len() as u64, top, "seed {seed}: the last recovery reached the end");
    let first = got[0].0;
    for (i, (o, data)) in got.iter().enumerate().skip(1) {
        assert_eq!(
            *o,
            first + i as u64,
            "seed {seed}: offsets not consecutive (gap or duplicate) at #{i}, after {}",
            got[i - 1].0
        );
        assert_eq!(Some(data), published.get(o), "seed {seed}: payload of offset {o}");
    }
    assert_eq!(got.last().map(|g| g.0), Some(top));
    eprintln!("seed {seed}: {} offsets ({recovered_pubs} recovered, {live} live) up to {top}", got.len() - 1);
    assert!(recovered_pubs > 0 && live > 0, "both paths exercised: {recovered_pubs} recovered, {live} live");

    // Positions that cannot be recovered: from another epoch, or ahead of the channel. The
    // subscriber is told so, gets the top, and live publications from there.
    let mut ws = native(&server).await;
    subscribe(&mut ws, 2, CH, None, None).await;
    let mut other = native(&server).await;
    let r = subscribe(&mut other, 2, CH, None, Some((3, "0123456789abcdef"))).await;
    assert_eq!(r, json!({"offset":top,"epoch":e,"recovered":false,"reason":"epoch_changed"}));
    let r = subscribe(&mut ws, 3, "h:race2", None, None).await;
    let e2 = epoch(&r);
    assert_ne!(e2, e, "each channel has its own epoch");
    let r = subscribe(&mut other, 3, "h:race2", None, Some((1, &e2))).await;
    assert_eq!(r, json!({"offset":0,"epoch":e2,"recovered":false,"reason":"ahead"}));
    let r = subscribe(&mut other, 4, "h:race3", None, Some((0, &e))).await;
    assert_eq!(r["reason"], "epoch_changed", "another channel's epoch: {r}");
    let published = api_publish(&server, json!({"channel":CH,"data":"after"})).await;
    assert_eq!(published, json!({"offset":top + 1,"epoch":e}));
    assert_eq!(next_pub(&mut other, CH).await, (top + 1, json!("after")));
    assert_eq!(next_pub(&mut ws, CH).await, (top + 1, json!("after")));
}

// ---- 3. idempotent publish -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotent_publish_under_retries_publishes_once_and_returns_the_first_result() {
    let server = start(delivery_config()).await;
    let addr = server.addr;
    let mut sub = native(&server).await;
    let r = subscribe(&mut sub, 2, "h:idem", None, None).await;
    assert_eq!(offset(&r), 0);
    let e = epoch(&r);
    assert_eq!(subscribe(&mut sub, 3, "chat:idem", None, None).await, json!({}));
    // Protocol publishes come from another connection, so `sub` sees nothing but pushes.
    let mut publisher = native(&server).await;

    // Concurrent retries of one key, 8 over HTTP and 4 over the protocol, on connections
    // made beforehand and released together; for several keys in turn.
    const ROUNDS: u64 = 20;
    let clients: Vec<ApiClient> = (0..8).map(|_| ApiClient::new(addr)).collect();
    for c in &clients {
        // Opens the client's keep-alive connection.
        assert_eq!(c.post("/api/history", r#"{"channel":"h:warm-up"}"#).await.0, 200);
    }
    let mut conns = Vec::new();
    for _ in 0..4 {
        conns.push(native_at(addr).await);
    }
    for round in 0..ROUNDS {
        let body =
            json!({"channel":"h:idem","data":{"order":round},"idempotency_key":format!("order-{round}")});
        let barrier = Arc::new(tokio::sync::Barrier::new(clients.len() + conns.len()));
        let mut tasks = tokio::task::JoinSet::new();
        for c in &clients {
            let (c, barrier, body) = (c.clone(), Arc::clone(&barrier), body.to_string());
            tasks.spawn(async move {
                barrier.wait().await;
                let (s, b) = c.post("/api/publish", &body).await;
                assert_eq!(s, 200, "{b}");
                (serde_json::from_str::<Value>(&b).expect("json"), None)
            });
        }
        for mut ws in conns.drain(..) {
            let (barrier, mut body) = (Arc::clone(&barrier), body.clone());
            body["op"] = json!("publish");
            tasks.spawn(async move {
                barrier.wait().await;
                let r = request(&mut ws, 10 + round, body).await;
                (r.get("result").unwrap_or_else(|| panic!("{r}")).clone(), Some(ws))
            });
        }
        let want = json!({"offset":round + 1,"epoch":e});
        for (result, ws) in tasks.join_all().await {
            assert_eq!(result, want, "round {round}: every retry gets the first result");
            conns.extend(ws);
        }
    }
    let base = ROUNDS;
    assert_eq!(api_publish(&server, json!({"channel":"h:idem","data":"marker-1"})).await["offset"], base + 1);
    for round in 0..ROUNDS {
        assert_eq!(next_pub(&mut sub, "h:idem").await, (round + 1, json!({"order":round})), "published once");
    }
    assert_eq!(next_pub(&mut sub, "h:idem").await, (base + 1, json!("marker-1")), "and only once");
    let page = api_history(&server, json!({"channel":"h:idem"})).await;
    assert_eq!(offsets(&page["publications"]), (1..=base + 1).collect::<Vec<_>>());
    let first = json!({"offset":1,"epoch":e});

    // A later retry, even with other data, publishes nothing and gets the first result.
    let retry = json!({"channel":"h:idem","data":{"order":"changed"},"idempotency_key":"order-0"});
    assert_eq!(api_publish(&server, retry).await, first);
    let r = request(
        &mut publisher,
        4,
        json!({"op":"publish","channel":"h:idem","data":{"order":"changed"},"idempotency_key":"order-0"}),
    )
    .await;
    assert_eq!(r, json!({"id":4,"result":first}));
    // A different key publishes; so does the same key on another channel.
    let r = api_publish(&server, json!({"channel":"h:idem","data":2,"idempotency_key":"other-key"})).await;
    assert_eq!(r, json!({"offset":base + 2,"epoch":e}));
    let other =
        api_publish(&server, json!({"channel":"h:idem2","data":"x","idempotency_key":"order-0"})).await;
    assert_eq!(offset(&other), 1, "{other}");
    let r = request(
        &mut publisher,
        5,
        json!({"op":"publish","channel":"h:idem","data":2,"idempotency_key":"other-key"}),
    )
    .await;
    assert_eq!(r["result"], json!({"offset":base + 2,"epoch":e}), "a protocol retry of an HTTP publish");
    // In a batch, a repeated key is a retry too: same result, one publication.
    let (s, b) = api(
        &server,
        "/api/batch",
        &json!({"publications":[
            {"channel":"h:idem","data":"b1","idempotency_key":"batch-1"},
            {"channel":"h:idem","data":"b1-again","idempotency_key":"batch-1"},
            {"channel":"h:idem","data":"b2"},
        ]})
        .to_string(),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let batch: Value = serde_json::from_str(&b).expect("json");
    assert_eq!(
        batch,
        json!({"results":[{"offset":base + 3,"epoch":e},{"offset":base + 3,"epoch":e},{"offset":base + 4,"epoch":e}]})
    );
    // A broadcast keys each channel; its retry publishes nowhere.
    let bc = json!({"channels":["h:idem","chat:idem"],"data":"bc","idempotency_key":"bc-1"}).to_string();
    for _ in 0..2 {
        let (s, b) = api(&server, "/api/broadcast", &bc).await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(
            serde_json::from_str::<Value>(&b).expect("json"),
            json!({"results":[{"offset":base + 5,"epoch":e},{}]})
        );
    }
    // A namespace without history remembers keys too (result `{}`).
    for _ in 0..2 {
        let r =
            api_publish(&server, json!({"channel":"chat:idem","data":"plain","idempotency_key":"p-1"})).await;
        assert_eq!(r, json!({}));
    }

    // Invalid keys: empty, longer than 128 bytes, not a string, with a control character.
    let long = "k".repeat(129);
    let bad_keys = [json!(""), json!(long), json!(7), json!("a\nb"), json!({"k":1})];
    for k in &bad_keys {
        let reply = api(
            &server,
            "/api/publish",
            &json!({"channel":"h:idem","data":"bad","idempotency_key":k}).to_string(),
        )
        .await;
        assert_eq!(http_error(&reply), (400, "invalid_message".to_owned()), "key {k}");
        let reply = api(
            &server,
            "/api/batch",
            &json!({"publications":[{"channel":"h:idem","data":"bad","idempotency_key":k}]}).to_string(),
        )
        .await;
        assert_eq!(http_error(&reply), (400, "invalid_message".to_owned()), "batch key {k}");
        let reply = api(
            &server,
            "/api/broadcast",
            &json!({"channels":["h:idem"],"data":"bad","idempotency_key":k}).to_string(),
        )
        .await;
        assert_eq!(http_error(&reply), (400, "invalid_message".to_owned()), "broadcast key {k}");
        let r = request(
            &mut publisher,
            6,
            json!({"op":"publish","channel":"h:idem","data":"bad","idempotency_key":k}),
        )
        .await;
        assert_eq!(error_code(&r), "invalid_message", "protocol key {k}: {r}");
    }
    // 128 bytes is fine.
    let r = api_publish(&server, json!({"channel":"h:idem","data":"k128","idempotency_key":"k".repeat(128)}))
        .await;
    assert_eq!(r, json!({"offset":base + 6,"epoch":e}));
    assert_eq!(api_publish(&server, json!({"channel":"h:idem","data":"marker-2"})).await["offset"], base + 7);

    // Exactly these reached the subscriber, in order.
    let mut rest = Vec::new();
    loop {
        let v = recv_json(&mut sub).await;
        assert_eq!(v["push"], "pub", "{v}");
        let done = v["data"] == "marker-2";
        rest.push((
            v["channel"].as_str().expect("channel").to_owned(),
            v["offset"].as_u64(),
            v["data"].clone(),
        ));
        if done {
            break;
        }
    }
    let h = |o: u64, d: Value| ("h:idem".to_owned(), Some(o), d);
    assert_eq!(
        rest,
        [
            h(base + 2, json!(2)),
            h(base + 3, json!("b1")),
            h(base + 4, json!("b2")),
            h(base + 5, json!("bc")),
            ("chat:idem".to_owned(), None, json!("bc")),
            ("chat:idem".to_owned(), None, json!("plain")),
            h(base + 6, json!("k128")),
            h(base + 7, json!("marker-2")),
        ]
    );
    let page = api_history(&server, json!({"channel":"h:idem"})).await;
    assert_eq!(offsets(&page["publications"]), (1..=base + 7).collect::<Vec<_>>());
    let mut want: Vec<Value> = (0..ROUNDS).map(|r| json!({"order":r})).collect();
    want.extend([
        json!("marker-1"),
        json!(2),
        json!("b1"),
        json!("b2"),
        json!("bc"),
        json!("k128"),
        json!("marker-2"),
    ]);
    assert_eq!(datas(&page["publications"]), want);

    // The window: a key is remembered for `history.idempotency_window_ms`, then forgotten.
    let mut c = delivery_config();
    c.history.idempotency_window_ms = 60_000;
    let (server, clock) = start_clocked(c).await;
    let keyed = json!({"channel":"h:win","data":1,"idempotency_key":"w"});
    let r = api_publish(&server, keyed.clone()).await;
    assert_eq!(offset(&r), 1);
    assert!(clock.advance(std::time::Duration::from_millis(59_999)));
    assert_eq!(api_publish(&server, keyed.clone()).await, r, "still within the window");
    assert!(clock.advance(std::time::Duration::from_millis(1)));
    assert_eq!(offset(&api_publish(&server, keyed.clone()).await), 2, "the window has passed");
    assert_eq!(offset(&api_publish(&server, keyed).await), 2, "and the new publish is remembered");
}

// ---- 4. history pages ------------------------------------------------------------------

#[tokio::test]
async fn history_pages_forward_and_backward_with_permissions() {
    let mut c = delivery_config();
    c.auth.allow_client_identity = true;
    c.namespaces.insert("small".into(), history_ns(10, 1000));
    c.namespaces.insert("big".into(), history_ns(1500, 1000));
    c.namespaces
        .insert("open".into(), NamespaceConfig { history: ClientRule::Anyone, ..history_ns(10, 1000) });
    c.scoped_api_keys = vec![
        toml::from_str(
            r#"key = "scoped-key-0123456789"
channels = ["chat:*"]"#,
        )
        .expect("scoped key"),
    ];
    let server = start(c).await;

    // 15 publications; 10 are kept.
    let mut e = String::new();
    for n in 1..=15u64 {
        let r = api_publish(
            &server,
            json!({"channel":"small:p","data":{"n":n},"tags":{"odd":(n % 2).to_string()}}),
        )
        .await;
        assert_eq!(offset(&r), n);
        e = epoch(&r);
    }
    let page = api_history(&server, json!({"channel":"small:p"})).await;
    assert_eq!((offset(&page), epoch(&page)), (15, e.clone()));
    assert_eq!(offsets(&page["publications"]), (6..=15).collect::<Vec<_>>());
    assert_eq!(
        page["publications"][0],
        json!({"push":"pub","channel":"small:p","data":{"n":6},"tags":{"odd":"0"},"offset":6}),
        "each publication as its push"
    );
    let forward = |since: Value, limit: Value| json!({"channel":"small:p","since":since,"limit":limit});
    let cases: Vec<(Value, Vec<u64>)> = vec![
        (forward(json!(10), json!(3)), vec![11, 12, 13]),
        (forward(json!(0), json!(2)), vec![6, 7]),
        (forward(json!(13), json!(100)), vec![14, 15]),
        (forward(json!(15), json!(5)), vec![]),
        (forward(json!(99), Value::Null), vec![]),
        (forward(Value::Null, json!(0)), (6..=15).collect()),
        (json!({"channel":"small:p","reverse":true,"limit":3}), vec![15, 14, 13]),
        (json!({"channel":"small:p","reverse":true,"since":13}), (6..=12).rev().collect()),
        (json!({"channel":"small:p","reverse":true,"since":7,"limit":5}), vec![6]),
        (json!({"channel":"small:p","reverse":true,"since":6}), vec![]),
        (json!({"channel":"small:p","reverse":false,"since":5,"limit":1}), vec![6]),
    ];
    for (q, want) in &cases {
        let page = api_history(&server, q.clone()).await;
        assert_eq!(offsets(&page["publications"]), *want, "HTTP {q}");
        assert_eq!(offset(&page), 15, "{q}");
    }

    // Over the protocol: only subscribers may read (the default rule), with the same pages.
    let mut ws = native(&server).await;
    let r = request(&mut ws, 2, json!({"op":"history","channel":"small:p"})).await;
    assert_eq!(error_code(&r), "permission_denied", "{r}");
    let r = subscribe(&mut ws, 3, "small:p", None, None).await;
    assert_eq!((offset(&r), epoch(&r)), (15, e.clone()));
    for (i, (q, want)) in cases.iter().enumerate() {
        let mut q = q.clone();
        q["op"] = json!("history");
        if q["since"].is_null() {
            q.as_object_mut().expect("object").remove("since");
        }
        if q["limit"].is_null() {
            q.as_object_mut().expect("object").remove("limit");
        }
        let r = request(&mut ws, 10 + i as u64, q.clone()).await;
        let page = r.get("result").unwrap_or_else(|| panic!("{q}: {r}"));
        assert_eq!(offsets(&page["publications"]), *want, "protocol {q}");
        assert_eq!((offset(page), epoch(page)), (15, e.clone()), "{q}");
    }
    // After unsubscribing, no longer.
    request(&mut ws, 40, json!({"op":"unsubscribe","channel":"small:p"})).await;
    let r = request(&mut ws, 41, json!({"op":"history","channel":"small:p"})).await;
    assert_eq!(error_code(&r), "permission_denied", "{r}");
    // `history = "anyone"`: no subscription needed. A channel without history yet gives an
    // empty page at offset 0 with an empty epoch, and reading does not create it.
    let r = request(&mut ws, 42, json!({"op":"history","channel":"open:x"})).await;
    assert_eq!(r, json!({"id":42,"result":{"offset":0,"epoch":"","publications":[]}}));
    assert_eq!(server.state.hub.position(&channel("open:x")), None, "not created by reading");
    let published = api_publish(&server, json!({"channel":"open:x","data":1})).await;
    assert_eq!(offset(&published), 1, "{published}");
    assert!(!epoch(&published).is_empty(), "{published}");
    let r = request(&mut ws, 43, json!({"op":"history","channel":"open:x"})).await;
    assert_eq!((offset(&r["result"]), epoch(&r["result"])), (1, epoch(&published)), "{r}");
    // Bad requests.
    for (frame, code) in [
        (json!({"op":"history","channel":"small:p","since":-1}), "invalid_message"),
        (json!({"op":"history","channel":"small:p","limit":"3"}), "invalid_message"),
        (json!({"op":"history","channel":"small:p","reverse":1}), "invalid_message"),
        (json!({"op":"history"}), "invalid_message"),
        (json!({"op":"history","channel":"nope:x"}), "unknown_namespace"),
    ] {
        let r = request(&mut ws, 50, frame.clone()).await;
        assert_eq!(error_code(&r), code, "{frame}: {r}");
    }

    // The page size is capped (1000), whatever is asked.
    for _ in 0..2 {
        let pubs: Vec<Value> = (0..600).map(|n| json!({"channel":"big:b","data":n})).collect();
        let (s, b) = api(&server, "/api/batch", &json!({"publications":pubs}).to_string()).await;
        assert_eq!(s, 200, "{b}");
    }
    for q in [json!({"channel":"big:b","limit":5000}), json!({"channel":"big:b"})] {
        let page = api_history(&server, q.clone()).await;
        assert_eq!(offsets(&page["publications"]), (1..=1000).collect::<Vec<_>>(), "{q}");
    }
    let page = api_history(&server, json!({"channel":"big:b","limit":5000,"reverse":true})).await;
    assert_eq!(offsets(&page["publications"]), (201..=1200).rev().collect::<Vec<_>>());
    let mut big = native(&server).await;
    subscribe(&mut big, 2, "big:b", None, None).await;
    let r = request(&mut big, 3, json!({"op":"history","channel":"big:b","since":100,"limit":100_000})).await;
    assert_eq!(offsets(&r["result"]["publications"]), (101..=1100).collect::<Vec<_>>());

    // Targeted publications: each user's history shows only what it may receive; the API
    // shows everything; hidden entries do not count towards the limit.
    let mut alice = native_as(&server, "alice").await;
    let mut bob = native_as(&server, "bob").await;
    subscribe(&mut alice, 2, "h:t", None, None).await;
    subscribe(&mut bob, 2, "h:t", None, None).await;
    api_publish(&server, json!({"channel":"h:t","data":"all-1"})).await;
    api_publish(&server, json!({"channel":"h:t","data":"bob-1","to":{"users":["bob"]}})).await;
    api_publish(&server, json!({"channel":"h:t","data":"alice-1","to":{"users":["alice"]}})).await;
    api_publish(&server, json!({"channel":"h:t","data":"bob-2","to":{"users":["bob"]}})).await;
    api_publish(&server, json!({"channel":"h:t","data":"all-2"})).await;
    // What each receives live (read first: pushes and replies share the connection), and
    // what its history shows, agree.
    for want in ["all-1", "alice-1", "all-2"] {
        assert_eq!(next_pub(&mut alice, "h:t").await.1, want);
    }
    for want in ["all-1", "bob-1", "bob-2", "all-2"] {
        assert_eq!(next_pub(&mut bob, "h:t").await.1, want);
    }
    assert_eq!(
        ws_history(&mut alice, 3, "h:t", json!({})).await,
        [json!("all-1"), json!("alice-1"), json!("all-2")]
    );
    assert_eq!(
        ws_history(&mut bob, 3, "h:t", json!({})).await,
        [json!("all-1"), json!("bob-1"), json!("bob-2"), json!("all-2")]
    );
    assert_eq!(
        ws_history(&mut alice, 4, "h:t", json!({"limit":2})).await,
        [json!("all-1"), json!("alice-1")]
    );
    assert_eq!(
        ws_history(&mut alice, 5, "h:t", json!({"reverse":true,"limit":2})).await,
        [json!("all-2"), json!("alice-1")]
    );
    assert_eq!(ws_history(&mut alice, 6, "h:t", json!({"since":1,"limit":1})).await, [json!("alice-1")]);
    let page = api_history(&server, json!({"channel":"h:t"})).await;
    assert_eq!(
        datas(&page["publications"]),
        [json!("all-1"), json!("bob-1"), json!("alice-1"), json!("bob-2"), json!("all-2")]
    );

    // A namespace without history.
    let mut plain = native(&server).await;
    subscribe(&mut plain, 2, "chat:x", None, None).await;
    let r = request(&mut plain, 3, json!({"op":"history","channel":"chat:x"})).await;
    assert_eq!(error_code(&r), "history_disabled", "{r}");
    let reply = api(&server, "/api/history", r#"{"channel":"chat:x"}"#).await;
    assert_eq!(http_error(&reply), (400, "history_disabled".to_owned()));
    // HTTP errors.
    let scoped = [("authorization", "Bearer scoped-key-0123456789"), ("content-type", "application/json")];
    let reply = http(&server, "POST", "/api/history", &scoped, r#"{"channel":"small:p"}"#).await;
    assert_eq!(http_error(&reply), (403, "channel_not_allowed".to_owned()));
    let reply = http(&server, "POST", "/api/history", &scoped, r#"{"channel":"chat:x"}"#).await;
    assert_eq!(http_error(&reply), (400, "history_disabled".to_owned()), "allowed, but no history");
    let reply = http(
        &server,
        "POST",
        "/api/history",
        &[("content-type", "application/json")],
        r#"{"channel":"small:p"}"#,
    )
    .await;
    assert_eq!(http_error(&reply), (401, "unauthenticated".to_owned()));
    for (body, code) in [
        (r#"{"channel":"small:p","since":-1}"#, "invalid_message"),
        (r#"{"channel":"small:p","bogus":1}"#, "invalid_message"),
        (r#"{"since":1}"#, "invalid_message"),
        (r#"{"channel":"a b"}"#, "invalid_channel"),
        (r#"{"channel":"nope:x"}"#, "unknown_namespace"),
    ] {
        let reply = api(&server, "/api/history", body).await;
        assert_eq!(http_error(&reply), (400, code.to_owned()), "{body}");
    }
}

// ---- 5. SSE resume ---------------------------------------------------------------------

#[tokio::test]
async fn sse_resumes_from_last_event_id() {
    let mut c = delivery_config();
    c.namespaces.insert("tiny".into(), history_ns(3, 1000));
    let server = start(c).await;
    let path = "/sse?channel=h:s";

    let mut sse = open_history_sse(&server, path, None).await;
    let subscribed = next_sse(&mut sse).await;
    let e = subscribed.data["epoch"].as_str().expect("epoch").to_owned();
    assert_eq!(assert_subscribed_event(&subscribed, &e, 0), json!({"offset":0,"epoch":e}), "nothing asked");
    let mut ids = Vec::new();
    for n in 1..=3u64 {
        assert_eq!(
            api_publish(&server, json!({"channel":"h:s","data":{"n":n}})).await,
            json!({"offset":n,"epoch":e})
        );
        let ev = next_sse(&mut sse).await;
        assert_eq!(assert_pub_event(&ev, "h:s", &e, n), json!({"n":n}));
        ids.push(ev.id.expect("id"));
    }
    drop(sse);
    eventually("the stream's subscription is gone", || {
        server.state.hub.subscriber_count(&channel("h:s")) == 0
    })
    .await;
    for n in 4..=7u64 {
        api_publish(&server, json!({"channel":"h:s","data":{"n":n}})).await;
    }
    // Resume: exactly the missed events (with their ids), then `subscribed`, then live.
    let mut sse = open_history_sse(&server, path, Some(&ids[2])).await;
    for n in 4..=7u64 {
        assert_eq!(assert_pub_event(&next_sse(&mut sse).await, "h:s", &e, n), json!({"n":n}));
    }
    let s = assert_subscribed_event(&next_sse(&mut sse).await, &e, 7);
    assert_eq!(s, json!({"offset":7,"epoch":e,"recovered":true}));
    api_publish(&server, json!({"channel":"h:s","data":{"n":8}})).await;
    assert_eq!(assert_pub_event(&next_sse(&mut sse).await, "h:s", &e, 8), json!({"n":8}));
    drop(sse);

    // Resuming from the newest id (or the `subscribed` one) recovers nothing, and works.
    let mut sse = open_history_sse(&server, path, Some(&format!("{e}:8"))).await;
    let s = assert_subscribed_event(&next_sse(&mut sse).await, &e, 8);
    assert_eq!(s, json!({"offset":8,"epoch":e,"recovered":true}));
    // From the very start (offset 0) everything kept comes back.
    let mut all = open_history_sse(&server, path, Some(&format!("{e}:0"))).await;
    for n in 1..=8u64 {
        assert_pub_event(&next_sse(&mut all).await, "h:s", &e, n);
    }
    assert_subscribed_event(&next_sse(&mut all).await, &e, 8);
    // A stale epoch, or a position ahead of the channel: told, and live from the top.
    let mut stale = open_history_sse(&server, path, Some("0123456789abcdef:5")).await;
    let s = assert_subscribed_event(&next_sse(&mut stale).await, &e, 8);
    assert_eq!(s, json!({"offset":8,"epoch":e,"recovered":false,"reason":"epoch_changed"}));
    let mut ahead = open_history_sse(&server, path, Some(&format!("{e}:99"))).await;
    let s = assert_subscribed_event(&next_sse(&mut ahead).await, &e, 8);
    assert_eq!(s, json!({"offset":8,"epoch":e,"recovered":false,"reason":"ahead"}));
    api_publish(&server, json!({"channel":"h:s","data":{"n":9}})).await;
    for sse in [&mut sse, &mut all, &mut stale, &mut ahead] {
        assert_eq!(assert_pub_event(&next_sse(sse).await, "h:s", &e, 9), json!({"n":9}));
    }

    // More missed than the history keeps: not recovered, nothing replayed.
    let mut t = open_history_sse(&server, "/sse?channel=tiny:s", None).await;
    let te = next_sse(&mut t).await.data["epoch"].as_str().expect("epoch").to_owned();
    drop(t);
    for n in 1..=4u64 {
        api_publish(&server, json!({"channel":"tiny:s","data":n})).await;
    }
    let mut t = open_history_sse(&server, "/sse?channel=tiny:s", Some(&format!("{te}:0"))).await;
    let s = assert_subscribed_event(&next_sse(&mut t).await, &te, 4);
    assert_eq!(s, json!({"offset":4,"epoch":te,"recovered":false,"reason":"trimmed"}));
    let mut t = open_history_sse(&server, "/sse?channel=tiny:s", Some(&format!("{te}:1"))).await;
    for n in 2..=4u64 {
        assert_pub_event(&next_sse(&mut t).await, "tiny:s", &te, n);
    }
    assert_eq!(assert_subscribed_event(&next_sse(&mut t).await, &te, 4)["recovered"], true);

    // Malformed ids.
    let before = server.state.hub.subscriber_count(&channel("h:s"));
    for bad in [
        "garbage",
        "",
        ":5",
        &format!("{e}:"),
        &format!("{e}:-1"),
        &format!("{e}:x"),
        &format!("{}:1", "e".repeat(65)),
    ] {
        let (status, _, body) =
            http_full(&server, "GET", path, &[("accept", "text/event-stream"), ("last-event-id", bad)], "")
                .await;
        let code =
            serde_json::from_str::<Value>(&body).ok().and_then(|v| v["code"].as_str().map(str::to_owned));
        assert_eq!(
            (status, code.as_deref()),
            (400, Some("invalid_message")),
            "Last-Event-ID {bad:?}: {body}"
        );
    }
    assert_eq!(server.state.hub.subscriber_count(&channel("h:s")), before, "no subscription left behind");
}

// ---- 6. filtered recovery --------------------------------------------------------------

#[tokio::test]
async fn a_filtered_subscriber_recovers_only_what_its_filter_admits() {
    let mut c = delivery_config();
    c.auth.allow_client_identity = true;
    let server = start(c).await;
    const CH: &str = "h:f";
    let tags = |n: u64| match n % 3 {
        0 => json!({"k":"v"}),
        1 => json!({"k":"w"}),
        _ => json!({}),
    };
    let publish = |n: u64| {
        let server = &server;
        async move {
            let r = api_publish(server, json!({"channel":CH,"data":{"n":n},"tags":tags(n)})).await;
            assert_eq!(offset(&r), n);
            r
        }
    };
    let mut ws = native_as(&server, "alice").await;
    let r = subscribe(&mut ws, 2, CH, Some("k=v"), None).await;
    let e = epoch(&r);
    for n in 1..=6 {
        publish(n).await;
    }
    assert_eq!(next_pub(&mut ws, CH).await, (3, json!({"n":3})));
    drop(ws);
    // Missed: 4..=12 plus targeted ones; only k=v (6, 9, 12) for alice may come back.
    for n in 7..=12 {
        publish(n).await;
    }
    api_publish(&server, json!({"channel":CH,"data":"for-bob","tags":{"k":"v"},"to":{"users":["bob"]}}))
        .await;
    api_publish(&server, json!({"channel":CH,"data":"for-alice","tags":{"k":"v"},"to":{"users":["alice"]}}))
        .await;
    api_publish(
        &server,
        json!({"channel":CH,"data":"for-alice-w","tags":{"k":"w"},"to":{"users":["alice"]}}),
    )
    .await;
    let mut ws = native_as(&server, "alice").await;
    let r = subscribe(&mut ws, 2, CH, Some("k=v"), Some((3, &e))).await;
    assert_eq!((offset(&r), epoch(&r), r["recovered"].clone()), (15, e.clone(), json!(true)), "{r}");
    assert_eq!(offsets(&r["publications"]), [6, 9, 12, 14], "{r}");
    assert_eq!(
        datas(&r["publications"]),
        [json!({"n":6}), json!({"n":9}), json!({"n":12}), json!("for-alice")]
    );
    assert_eq!(
        r["publications"][0],
        json!({"push":"pub","channel":CH,"data":{"n":6},"tags":{"k":"v"},"offset":6})
    );
    // Live: only matching publications, above the top.
    for n in 16..=21 {
        publish(n).await;
    }
    assert_eq!(next_pub(&mut ws, CH).await, (18, json!({"n":18})));
    assert_eq!(next_pub(&mut ws, CH).await, (21, json!({"n":21})));
    drop(ws);
    // Caught up (by the top the result gave, though the last push it saw was older):
    // nothing to recover.
    publish(22).await;
    let mut ws = native_as(&server, "alice").await;
    let r = subscribe(&mut ws, 2, CH, Some("k=v"), Some((21, &e))).await;
    assert_eq!(r, json!({"offset":22,"epoch":e,"recovered":true,"publications":[]}));
    // Another filter on the same history sees its own share.
    let mut w = native(&server).await;
    let r = subscribe(&mut w, 2, CH, Some("k=w"), Some((12, &e))).await;
    // (15 has k=w but is for alice only.)
    assert_eq!(offsets(&r["publications"]), [16, 19, 22], "{r}");
    // Filtered recovery is all or nothing too: the bounds count every missed
    // publication, not only the admitted ones (a history of 100).
    for n in 23..=140 {
        publish(n).await;
    }
    let mut w = native(&server).await;
    let r = subscribe(&mut w, 2, CH, Some("k=v"), Some((30, &e))).await;
    assert_eq!(r, json!({"offset":140,"epoch":e,"recovered":false,"reason":"trimmed"}));

    // SSE applies the filter to what it replays too.
    let path = format!("/sse?channel={CH}&filter=k%3Dv");
    let mut sse = open_history_sse(&server, &path, Some(&format!("{e}:130"))).await;
    for n in [132, 135, 138] {
        assert_eq!(assert_pub_event(&next_sse(&mut sse).await, CH, &e, n), json!({"n":n}));
    }
    let s = assert_subscribed_event(&next_sse(&mut sse).await, &e, 140);
    assert_eq!(s["recovered"], true);
    publish(141).await;
    publish(142).await;
    assert_eq!(assert_pub_event(&next_sse(&mut sse).await, CH, &e, 141), json!({"n":141}));
}

// ---- 7. namespaces without history -----------------------------------------------------

#[tokio::test]
async fn namespace_without_history_keeps_upstream_semantics() {
    let server = start(delivery_config()).await;
    let mut ws = native(&server).await;
    assert_eq!(
        request(&mut ws, 2, json!({"op":"subscribe","channel":"chat:a"})).await,
        json!({"id":2,"result":{}})
    );
    assert_eq!(
        api(&server, "/api/publish", r#"{"channel":"chat:a","data":1}"#).await,
        (200, "{}".to_owned())
    );
    assert_eq!(recv_text(&mut ws).await, r#"{"push":"pub","channel":"chat:a","data":1}"#, "no offset");
    let r = request(&mut ws, 3, json!({"op":"publish","channel":"chat:a","data":2,"tags":{"k":"v"}})).await;
    assert_eq!(r, json!({"id":3,"result":{}}));
    assert_eq!(recv_text(&mut ws).await, r#"{"push":"pub","channel":"chat:a","data":2,"tags":{"k":"v"}}"#);
    let (s, b) = api(
        &server,
        "/api/batch",
        r#"{"publications":[{"channel":"chat:a","data":3},{"channel":"news","data":4}]}"#,
    )
    .await;
    assert_eq!((s, b.as_str()), (200, r#"{"results":[{},{}]}"#));
    assert_eq!(recv_text(&mut ws).await, r#"{"push":"pub","channel":"chat:a","data":3}"#);
    let (s, b) = api(&server, "/api/broadcast", r#"{"channels":["chat:a","news"],"data":5}"#).await;
    assert_eq!((s, b.as_str()), (200, r#"{"results":[{},{}]}"#));
    assert_eq!(recv_text(&mut ws).await, r#"{"push":"pub","channel":"chat:a","data":5}"#);

    // Asking to recover: told there is no history, and subscribed as usual.
    let mut again = native(&server).await;
    let r = request(
        &mut again,
        2,
        json!({"op":"subscribe","channel":"chat:a","recover":{"offset":3,"epoch":"0123456789abcdef"}}),
    )
    .await;
    assert_eq!(r, json!({"id":2,"result":{"recovered":false,"reason":"no_history"}}));
    api(&server, "/api/publish", r#"{"channel":"chat:a","data":6}"#).await;
    assert_eq!(recv_text(&mut again).await, r#"{"push":"pub","channel":"chat:a","data":6}"#);
    assert_eq!(recv_text(&mut ws).await, r#"{"push":"pub","channel":"chat:a","data":6}"#);
    // The default namespace keeps none either.
    let r =
        request(&mut again, 3, json!({"op":"subscribe","channel":"news","recover":{"offset":0,"epoch":"e"}}))
            .await;
    assert_eq!(r, json!({"id":3,"result":{"recovered":false,"reason":"no_history"}}));
    // Malformed recover positions are still rejected.
    let r = request(
        &mut again,
        4,
        json!({"op":"subscribe","channel":"chat:b","recover":{"offset":-1,"epoch":"e"}}),
    )
    .await;
    assert_eq!(error_code(&r), "invalid_message", "{r}");

    // SSE: the plain `: subscribed` comment and events without ids, with or without a
    // Last-Event-ID.
    let mut sse = open_sse(&server, "/sse?channel=chat:a").await;
    let (parts, mut resumed) =
        open_sse_with(&server, "/sse?channel=chat:a", &[("last-event-id", "0123456789abcdef:3")]).await;
    assert_eq!(parts.status, 200);
    assert_eq!(resumed.next_block().await.as_deref(), Some(": subscribed\n\n"));
    api(&server, "/api/publish", r#"{"channel":"chat:a","data":7}"#).await;
    assert_eq!(sse.next_event().await, "data: {\"push\":\"pub\",\"channel\":\"chat:a\",\"data\":7}\n\n");
    assert_eq!(resumed.next_event().await, "data: {\"push\":\"pub\",\"channel\":\"chat:a\",\"data\":7}\n\n");
    // Nothing is kept: no channel entry outlives its subscribers.
    drop((ws, again, sse, resumed));
    eventually("channels gone", || server.state.hub.channel_count() == 0).await;
}
