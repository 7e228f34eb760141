//! HTTP server API client.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tether_proto::{ErrorCode, ProtoError};

/// Errors of the HTTP client.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Transport failure.
    #[error("http: {0}")]
    Transport(String),
    /// The server answered with an error.
    #[error("server error (HTTP {status}): {error}")]
    Server {
        /// HTTP status.
        status: u16,
        /// The error body.
        error: ProtoError,
    },
}

/// A client of the HTTP server API.
#[derive(Debug, Clone)]
pub struct HttpClient {
    base: String,
    api_key: String,
    inner: HyperClient<HttpConnector, Full<Bytes>>,
}

impl HttpClient {
    /// A client for the server at `base` (e.g. `http://127.0.0.1:7070`).
    pub fn new(base: &str, api_key: &str) -> Self {
        let inner = HyperClient::builder(TokioExecutor::new()).build_http();
        Self { base: base.trim_end_matches('/').to_owned(), api_key: api_key.to_owned(), inner }
    }

    /// POSTs a JSON body to `path` and returns the JSON reply.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, HttpError> {
        let req = hyper::Request::post(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {}", self.api_key))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| HttpError::Transport(e.to_string()))?;
        let resp = self.inner.request(req).await.map_err(|e| HttpError::Transport(e.to_string()))?;
        let status = resp.status().as_u16();
        let bytes =
            resp.into_body().collect().await.map_err(|e| HttpError::Transport(e.to_string()))?.to_bytes();
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status == 200 {
            return Ok(v);
        }
        let code = v
            .get("code")
            .and_then(Value::as_str)
            .and_then(ErrorCode::from_wire)
            .unwrap_or(ErrorCode::Internal);
        let message = v.get("message").and_then(Value::as_str).unwrap_or_default().to_owned();
        Err(HttpError::Server { status, error: ProtoError::new(code, message) })
    }

    /// Publishes `data` to `channel` with optional tags.
    pub async fn publish(&self, channel: &str, data: Value, tags: Option<Value>) -> Result<Value, HttpError> {
        let mut body = serde_json::json!({ "channel": channel, "data": data });
        if let Some(t) = tags {
            body["tags"] = t;
        }
        self.post("/api/publish", &body).await
    }

    /// Publishes one payload to many channels.
    pub async fn broadcast(&self, channels: &[&str], data: Value) -> Result<Value, HttpError> {
        self.post("/api/broadcast", &serde_json::json!({ "channels": channels, "data": data })).await
    }

    /// Publishes many publications (each `{channel, data, tags?, to?}`).
    pub async fn batch(&self, publications: Vec<Value>) -> Result<Value, HttpError> {
        self.post("/api/batch", &serde_json::json!({ "publications": publications })).await
    }
}
