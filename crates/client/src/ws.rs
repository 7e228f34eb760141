//! Native protocol client over WebSocket.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tether_proto::{ErrorCode, Identity, ProtoError};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// Errors of the WebSocket client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The WebSocket failed.
    #[error("websocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    /// The server answered with an error.
    #[error("server error {0}")]
    Server(ProtoError),
    /// The connection closed before the reply arrived.
    #[error("connection closed")]
    Closed,
    /// The server sent something that is not valid protocol.
    #[error("invalid frame from server: {0}")]
    InvalidFrame(String),
}

/// Options of `connect`.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// A connection token.
    pub token: Option<String>,
    /// A self-declared identity (only accepted by servers configured for it).
    pub identity: Option<Identity>,
    /// Do not answer server heartbeats (for testing the server's idle timeout).
    pub no_auto_pong: bool,
}

/// A push from the server.
#[derive(Debug, Clone, PartialEq)]
pub enum Push {
    /// A publication.
    Publication {
        /// Channel.
        channel: String,
        /// Payload (absent only for event-server events without data).
        data: Option<Value>,
        /// Tags.
        tags: HashMap<String, String>,
    },
    /// The connection closed, with the close code if one was received.
    Closed(Option<u16>),
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, ProtoError>>>>>;
type WsSink = futures_util::stream::SplitSink<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    Message,
>;

/// A connected native-protocol client.
#[derive(Debug)]
pub struct Client {
    sink: Arc<Mutex<WsSink>>,
    pending: Pending,
    next_id: AtomicU64,
    pushes: Mutex<mpsc::UnboundedReceiver<Push>>,
}

impl Client {
    /// Opens the WebSocket at `url` (e.g. `ws://127.0.0.1:7070/ws`) and sends `connect`.
    pub async fn connect(url: &str, opts: ConnectOptions) -> Result<Self, ClientError> {
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        let (sink, mut stream) = ws.split();
        let pending: Pending = Arc::default();
        let (push_tx, push_rx) = mpsc::unbounded_channel();
        let reader_pending = Arc::clone(&pending);
        let sink = Arc::new(Mutex::new(sink));
        let reader_sink = Arc::clone(&sink);
        let auto_pong = !opts.no_auto_pong;
        let client = Self { sink, pending, next_id: AtomicU64::new(1), pushes: Mutex::new(push_rx) };
        tokio::spawn(async move {
            let mut close_code = None;
            while let Some(msg) = stream.next().await {
                let text = match msg {
                    Ok(Message::Text(t)) => t,
                    Ok(Message::Close(f)) => {
                        close_code = f.map(|f| u16::from(f.code));
                        continue;
                    }
                    Ok(_) => continue,
                    Err(_) => break,
                };
                let Ok(v) = serde_json::from_str::<Value>(&text) else { continue };
                if let Some(id) = v.get("id").and_then(Value::as_u64) {
                    let reply = match v.get("error") {
                        Some(e) => Err(decode_error(e)),
                        None => Ok(v.get("result").cloned().unwrap_or(Value::Null)),
                    };
                    if let Some(tx) = reader_pending.lock().await.remove(&id) {
                        let _ = tx.send(reply);
                    }
                } else if v.get("push").and_then(Value::as_str) == Some("pub") {
                    let tags = v
                        .get("tags")
                        .and_then(Value::as_object)
                        .map(|m| {
                            m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned()))).collect()
                        })
                        .unwrap_or_default();
                    let _ = push_tx.send(Push::Publication {
                        channel: v.get("channel").and_then(Value::as_str).unwrap_or_default().to_owned(),
                        data: v.get("data").cloned(),
                        tags,
                    });
                } else if auto_pong && v.get("push").and_then(Value::as_str) == Some("ping") {
                    let _ = reader_sink.lock().await.send(Message::Text(r#"{"op":"pong"}"#.into())).await;
                }
            }
            reader_pending.lock().await.clear();
            let _ = push_tx.send(Push::Closed(close_code));
        });
        let mut v = serde_json::json!({ "op": "connect" });
        if let Some(t) = opts.token {
            v["token"] = Value::String(t);
        }
        if let Some(i) = opts.identity {
            v["identity"] = serde_json::to_value(i).unwrap_or(Value::Null);
        }
        client.request(v).await?;
        Ok(client)
    }

    /// Sends a request and waits for its reply.
    pub async fn request(&self, mut body: Value) -> Result<Value, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        body["id"] = Value::from(id);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().await.insert(id, tx);
        self.sink.lock().await.send(Message::Text(body.to_string().into())).await?;
        match rx.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(ClientError::Server(e)),
            Err(_) => Err(ClientError::Closed),
        }
    }

    /// Subscribes to `channel` with an optional filter.
    pub async fn subscribe(&self, channel: &str, filter: Option<&str>) -> Result<(), ClientError> {
        let mut v = serde_json::json!({ "op": "subscribe", "channel": channel });
        if let Some(f) = filter {
            v["filter"] = Value::String(f.to_owned());
        }
        self.request(v).await.map(drop)
    }

    /// Leaves `channel`.
    pub async fn unsubscribe(&self, channel: &str) -> Result<(), ClientError> {
        self.request(serde_json::json!({ "op": "unsubscribe", "channel": channel })).await.map(drop)
    }

    /// Publishes (where the namespace allows client publishing).
    pub async fn publish(
        &self,
        channel: &str,
        data: Value,
        tags: &HashMap<String, String>,
    ) -> Result<(), ClientError> {
        let mut v = serde_json::json!({ "op": "publish", "channel": channel, "data": data });
        if !tags.is_empty() {
            v["tags"] = serde_json::to_value(tags).unwrap_or(Value::Null);
        }
        self.request(v).await.map(drop)
    }

    /// Round-trip ping.
    pub async fn ping(&self) -> Result<(), ClientError> {
        self.request(serde_json::json!({ "op": "ping" })).await.map(drop)
    }

    /// Sends a heartbeat answer (`{"op":"pong"}`).
    pub async fn pong(&self) -> Result<(), ClientError> {
        self.sink.lock().await.send(Message::Text(r#"{"op":"pong"}"#.into())).await?;
        Ok(())
    }

    /// The next push (publication or close).
    pub async fn next_push(&self) -> Option<Push> {
        self.pushes.lock().await.recv().await
    }

    /// Closes the connection normally.
    pub async fn close(&self) -> Result<(), ClientError> {
        self.sink.lock().await.close().await?;
        Ok(())
    }
}

fn decode_error(e: &Value) -> ProtoError {
    let code =
        e.get("code").and_then(Value::as_str).and_then(ErrorCode::from_wire).unwrap_or(ErrorCode::Internal);
    let message = e.get("message").and_then(Value::as_str).unwrap_or_default().to_owned();
    ProtoError::new(code, message)
}
