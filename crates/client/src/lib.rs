//! Rust client for Tether.
//!
//! - [`Client`]: the native protocol over WebSocket (connect, subscribe, publish, ping),
//!   with replies correlated by id and publications delivered on a channel.
//! - [`HttpClient`]: the HTTP server API (publish, broadcast, batch) with an API key.
//!
//! Used by the `tether` CLI, the integration tests and the benchmark tool.

mod http;
mod ws;

pub use http::{HttpClient, HttpError};
pub use ws::{Client, ClientError, ConnectOptions, Push};
