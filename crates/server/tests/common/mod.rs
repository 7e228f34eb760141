//! Shared helpers of the integration tests: start a real server on port 0 and talk to it
//! with real WebSocket and HTTP clients.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::HashSet;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tether_server::{Config, RunningServer};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const API_KEY: &str = "test-api-key-0123456789";
/// Generous upper bound for anything the tests wait for; never a measured time.
pub const WAIT: Duration = Duration::from_secs(10);

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A config for tests: port 0, one API key, a `chat` namespace with client publishing.
pub fn config() -> Config {
    let mut c = Config::from_toml(
        r#"
        listen = "127.0.0.1:0"
        api_keys = ["test-api-key-0123456789"]
        [namespaces.chat]
        publish = "anyone"
        "#,
        std::path::Path::new("test.toml"),
    )
    .expect("test config");
    c.data_dir = fresh_dir("data");
    // Cheap hashing keeps the suite fast; the code path is the production one.
    c.auth.argon2.memory_kib = 256;
    c.auth.argon2.iterations = 1;
    c
}

/// A new, empty directory under the system temp dir, unique to this process and call.
pub fn fresh_dir(what: &str) -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("tether-test-{}-{n}-{what}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

pub async fn start(config: Config) -> RunningServer {
    let keys: HashSet<String> = config.api_keys.iter().cloned().collect();
    RunningServer::start(config, keys).await.expect("server starts")
}

pub async fn ws(server: &RunningServer, path: &str) -> Ws {
    let (ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}{path}", server.addr)).await.expect("ws connects");
    ws
}

pub async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::Text(text.into())).await.expect("send");
}

/// The next text frame, skipping heartbeats; panics on timeout or close.
pub async fn recv_text(ws: &mut Ws) -> String {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("frame within WAIT")
            .expect("open")
            .expect("ok");
        match msg {
            Message::Text(t) => {
                if t.as_str() == r#"{"push":"ping"}"# {
                    continue;
                }
                return t.to_string();
            }
            Message::Close(f) => panic!("unexpected close {f:?}"),
            _ => {}
        }
    }
}

pub async fn recv_json(ws: &mut Ws) -> Value {
    serde_json::from_str(&recv_text(ws).await).expect("json frame")
}

/// Waits for the close frame and returns its code.
pub async fn recv_close(ws: &mut Ws) -> Option<u16> {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("close within WAIT") {
            Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return None,
        }
    }
}

/// Opens `/ws` and sends `connect`, asserting success.
pub async fn native(server: &RunningServer) -> Ws {
    let mut ws = ws(server, "/ws").await;
    send(&mut ws, r#"{"id":1,"op":"connect"}"#).await;
    let r = recv_json(&mut ws).await;
    assert_eq!(r["id"], 1, "{r}");
    assert!(r.get("result").is_some(), "{r}");
    ws
}

/// Sends a request and returns its reply (asserting the id matches).
pub async fn request(ws: &mut Ws, id: u64, body: Value) -> Value {
    let mut body = body;
    body["id"] = Value::from(id);
    send(ws, &body.to_string()).await;
    let r = recv_json(ws).await;
    assert_eq!(r["id"], id, "reply correlates: {r}");
    r
}

/// A raw HTTP request; returns status, headers and body text.
pub async fn http_full(
    server: &RunningServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, hyper::HeaderMap, String) {
    http_full_at(server.addr, method, path, headers, body).await
}

/// [`http_full`] to a server at `addr` (a child process, say).
pub async fn http_full_at(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, hyper::HeaderMap, String) {
    use http_body_util::{BodyExt, Full};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let mut req = hyper::Request::builder().method(method).uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(bytes::Bytes::from(body.to_owned()))).expect("request");
    let resp =
        tokio::time::timeout(WAIT, client.request(req)).await.expect("reply within WAIT").expect("http");
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    (parts.status.as_u16(), parts.headers, String::from_utf8_lossy(&bytes).into_owned())
}

/// A raw HTTP request; returns status and body text.
pub async fn http(
    server: &RunningServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let (status, _, body) = http_full(server, method, path, headers, body).await;
    (status, body)
}

/// A channel name known to be valid.
pub fn channel(name: &str) -> tether_proto::ChannelName {
    tether_proto::ChannelName::parse(name).expect("channel")
}

/// Polls `cond` until it holds; panics after [`WAIT`] (a failure guard, not a timing).
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    tokio::time::timeout(WAIT, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what} within WAIT"));
}

/// POST to the API with the test key and a JSON content type.
pub async fn api(server: &RunningServer, path: &str, body: &str) -> (u16, String) {
    let auth = format!("Bearer {API_KEY}");
    http(server, "POST", path, &[("authorization", &auth), ("content-type", "application/json")], body).await
}

/// Opens a WebSocket to `path` from source address `src` (any 127.x.y.z works on Linux
/// loopback), with extra request headers: how tests play a trusted proxy or a stranger.
pub async fn ws_from(
    server: &RunningServer,
    path: &str,
    src: std::net::IpAddr,
    headers: &[(&str, &str)],
) -> Ws {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind(std::net::SocketAddr::new(src, 0)).expect("bind source address");
    let tcp = sock.connect(server.addr).await.expect("tcp connect");
    let mut req = format!("ws://{}{path}", server.addr).into_client_request().expect("request");
    for (k, v) in headers {
        req.headers_mut().insert(
            hyper::header::HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            hyper::header::HeaderValue::from_str(v).expect("header value"),
        );
    }
    let (ws, _) =
        tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(tcp)).await.expect("ws handshake");
    ws
}

/// The error code of an error reply.
pub fn error_code(r: &Value) -> &str {
    r["error"]["code"].as_str().unwrap_or_else(|| panic!("expected an error reply, got {r}"))
}

/// Receives frames until one with `"push": kind` arrives; returns it.
pub async fn recv_push(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let v = recv_json(ws).await;
        if v["push"] == kind {
            return v;
        }
    }
}

/// Starts a server on a manual clock (expiry is driven by `clock.advance`, never sleeps).
pub async fn start_clocked(config: Config) -> (RunningServer, tether_server::Clock) {
    let clock = tether_server::Clock::manual(1_800_000_000_000);
    let keys: HashSet<String> = config.api_keys.iter().cloned().collect();
    let server = RunningServer::start_with_clock(config, keys, clock.clone()).await.expect("server starts");
    (server, clock)
}

/// A streaming SSE response, split into events (blocks ending with a blank line).
pub struct Sse {
    body: hyper::body::Incoming,
    buf: Vec<u8>,
    /// Keeps the client (and its connection pool) alive while the body is read.
    _client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Empty<bytes::Bytes>,
    >,
}

impl Sse {
    /// The next block (comment or event) including its terminating blank line, or `None`
    /// when the stream ended cleanly.
    pub async fn next_block(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..i + 2).collect();
                return Some(String::from_utf8(block).expect("utf-8 stream"));
            }
            let frame = tokio::time::timeout(WAIT, http_body_util::BodyExt::frame(&mut self.body))
                .await
                .expect("SSE bytes within WAIT");
            match frame {
                None => {
                    assert!(self.buf.is_empty(), "stream ended inside an event: {:?}", self.buf);
                    return None;
                }
                Some(f) => {
                    if let Ok(data) = f.expect("body frame").into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// The next block that is not a `: ping` heartbeat; panics if the stream ends.
    pub async fn next_event(&mut self) -> String {
        loop {
            let b = self.next_block().await.expect("stream still open");
            if b != ": ping\n\n" {
                return b;
            }
        }
    }

    /// The JSON of the next `data:` event.
    pub async fn next_data(&mut self) -> String {
        let b = self.next_event().await;
        let data = b.strip_prefix("data: ").and_then(|d| d.strip_suffix("\n\n"));
        let data = data.unwrap_or_else(|| panic!("a data event, got {b:?}"));
        assert!(!data.contains('\n'), "one data line: {b:?}");
        data.to_owned()
    }
}

/// Opens `path` with a GET and returns the response head and its streaming body.
pub async fn open_sse_raw(server: &RunningServer, path: &str) -> (hyper::http::response::Parts, Sse) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let req = hyper::Request::get(format!("http://{}{path}", server.addr))
        .header("accept", "text/event-stream")
        .body(http_body_util::Empty::new())
        .expect("request");
    let resp =
        tokio::time::timeout(WAIT, client.request(req)).await.expect("head within WAIT").expect("http");
    let (parts, body) = resp.into_parts();
    (parts, Sse { body, buf: Vec::new(), _client: client })
}

/// Opens an SSE stream, asserting 200, the event-stream type and the `: subscribed`
/// comment first.
pub async fn open_sse(server: &RunningServer, path: &str) -> Sse {
    let (parts, mut sse) = open_sse_raw(server, path).await;
    assert_eq!(parts.status, 200, "GET {path}");
    assert_eq!(parts.headers["content-type"], "text/event-stream");
    assert_eq!(sse.next_block().await.as_deref(), Some(": subscribed\n\n"));
    sse
}

/// Like [`open_sse_raw`], with extra request headers (e.g. `Last-Event-ID` to resume).
pub async fn open_sse_with(
    server: &RunningServer,
    path: &str,
    headers: &[(&str, &str)],
) -> (hyper::http::response::Parts, Sse) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let mut req =
        hyper::Request::get(format!("http://{}{path}", server.addr)).header("accept", "text/event-stream");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(http_body_util::Empty::new()).expect("request");
    let resp =
        tokio::time::timeout(WAIT, client.request(req)).await.expect("head within WAIT").expect("http");
    let (parts, body) = resp.into_parts();
    (parts, Sse { body, buf: Vec::new(), _client: client })
}

/// A `tether serve` child process on a free port, killed when dropped.
pub struct Child {
    pub proc: std::process::Child,
    pub addr: std::net::SocketAddr,
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.proc.kill();
        let _ = self.proc.wait();
    }
}

/// Starts the real binary with `config` (TOML, written to `dir/tether.toml`) and its data
/// in `dir/data`, and waits until it accepts connections.
pub async fn spawn_tether(dir: &std::path::Path, config: &str) -> Child {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let path = dir.join("tether.toml");
    std::fs::write(&path, config).unwrap();
    let proc = std::process::Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["serve", "--config"])
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "tether did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Child { proc, addr }
}
