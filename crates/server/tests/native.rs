//! Native protocol over a real socket.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn publish_reaches_subscriber() {
    let server = start(config()).await;
    let mut ws = native(&server).await;
    let r = request(&mut ws, 2, json!({"op":"subscribe","channel":"news"})).await;
    assert_eq!(r["result"], json!({}));
    let (s, b) = api(&server, "/api/publish", r#"{"channel":"news","data":{"n":1}}"#).await;
    assert_eq!((s, b.as_str()), (200, "{}"));
    assert_eq!(recv_text(&mut ws).await, r#"{"push":"pub","channel":"news","data":{"n":1}}"#);
    server.shutdown().await.unwrap();
}
