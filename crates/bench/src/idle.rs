//! The `idle` scenario: many subscribed, silent WebSocket connections; the server's
//! resident memory per connection.
//!
//! Connections use tokio-tungstenite like a real client, each bound to one of several
//! loopback source addresses (so the ~28k ephemeral ports of one source address are no
//! limit), and answer the server's heartbeats so they stay open while memory is read.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::json;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::server::{Target, rss_kib};

/// Shape of the idle scenario.
#[derive(Debug, Clone)]
pub(crate) struct Params {
    /// Connections to open.
    pub(crate) connections: usize,
    /// Each connection subscribes to its own channel (else all share one).
    pub(crate) channel_per_connection: bool,
    /// Local addresses to bind, round-robin.
    pub(crate) source_ips: Vec<IpAddr>,
    /// How long to keep the connections open after they are all up.
    pub(crate) hold: Duration,
    /// Pause between the last connection and the first memory reading.
    pub(crate) settle: Duration,
    /// Handshakes in flight at once.
    pub(crate) connect_concurrency: usize,
    /// Print progress.
    pub(crate) progress: bool,
}

#[derive(Debug, Default)]
struct ConnResult {
    failed: Option<String>,
    closed: Option<String>,
}

/// Runs the scenario.
pub(crate) async fn run(
    target: &Target,
    p: Params,
    server_pid: Option<u32>,
) -> anyhow::Result<serde_json::Value> {
    let me = std::process::id();
    let rss0 = server_pid.and_then(rss_kib);
    let bench0 = rss_kib(me);
    let gate = Arc::new(Semaphore::new(p.connect_concurrency.max(1)));
    let ready = Arc::new(AtomicU64::new(0));
    let pongs = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let url = format!("ws://{}{}", target.ws_host, target.ws_path);
    let t0 = Instant::now();
    let mut set = JoinSet::new();
    for i in 0..p.connections {
        let ip = p.source_ips[i % p.source_ips.len()];
        let channel =
            if p.channel_per_connection { format!("bench:idle{i}") } else { "bench:idle".to_owned() };
        let conn = Conn {
            ws: target.ws,
            url: url.clone(),
            ip,
            channel,
            gate: Arc::clone(&gate),
            ready: Arc::clone(&ready),
            pongs: Arc::clone(&pongs),
            stop: stop_rx.clone(),
        };
        set.spawn(conn.run());
    }
    let mut results = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut next_report = Instant::now() + Duration::from_secs(5);
    loop {
        let failed = results.iter().filter(|r: &&ConnResult| r.failed.is_some()).count() as u64;
        if ready.load(Ordering::Relaxed) + failed >= p.connections as u64 || Instant::now() > deadline {
            break;
        }
        if let Ok(Some(r)) = tokio::time::timeout(Duration::from_millis(50), set.join_next()).await {
            results
                .push(r.unwrap_or_else(|e| ConnResult { failed: Some(e.to_string()), ..Default::default() }));
        }
        if p.progress && Instant::now() >= next_report {
            eprintln!("  {} connections up", ready.load(Ordering::Relaxed));
            next_report += Duration::from_secs(5);
        }
    }
    let connected = ready.load(Ordering::Relaxed);
    let connect_secs = t0.elapsed().as_secs_f64();
    if p.progress {
        eprintln!("{connected}/{} connections up in {connect_secs:.1} s; settling", p.connections);
    }
    tokio::time::sleep(p.settle).await;
    let rss1 = server_pid.and_then(rss_kib);
    let bench1 = rss_kib(me);
    if p.progress {
        eprintln!("holding for {} s (heartbeats answered)", p.hold.as_secs());
    }
    tokio::time::sleep(p.hold).await;
    let rss2 = server_pid.and_then(rss_kib);
    let metrics = crate::server::fetch_metrics(target.api, &target.api_host).await;
    let _ = stop_tx.send(true);
    while let Some(r) = set.join_next().await {
        results.push(r.unwrap_or_else(|e| ConnResult { failed: Some(e.to_string()), ..Default::default() }));
    }
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    let mut closed: BTreeMap<String, u64> = BTreeMap::new();
    for r in &results {
        if let Some(f) = &r.failed {
            *failures.entry(f.clone()).or_default() += 1;
        }
        if let Some(c) = &r.closed {
            *closed.entry(c.clone()).or_default() += 1;
        }
    }
    let per = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) if connected > 0 => Some(b.saturating_sub(a) as f64 / connected as f64),
        _ => None,
    };
    let pick = |k: &str| metrics.as_ref().and_then(|m| m.get(k).copied());
    Ok(json!({
        "scenario": "idle",
        "connections_requested": p.connections,
        "connections_open": connected,
        "connect_s": connect_secs,
        "connections_per_s": connected as f64 / connect_secs.max(1e-3),
        "channel_per_connection": p.channel_per_connection,
        "source_ips": p.source_ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "hold_s": p.hold.as_secs_f64(),
        "server_rss_kib": {"before": rss0, "connected": rss1, "after_hold": rss2},
        "server_kib_per_connection": per(rss0, rss1),
        "server_kib_per_connection_after_hold": per(rss0, rss2),
        "bench_rss_kib": {"before": bench0, "connected": bench1},
        "bench_kib_per_connection": per(bench0, bench1),
        "heartbeats_answered": pongs.load(Ordering::Relaxed),
        "connect_failures": failures,
        "closed_during_hold": closed,
        "server_metrics": {
            "connections": pick("tether_connections"),
            "subscriptions": pick("tether_subscriptions"),
            "channels": pick("tether_channels"),
            "idle_timeouts_total": pick("tether_idle_timeouts_total"),
        },
    }))
}

/// Renders the human summary.
pub(crate) fn summary(r: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let g = |k: &str| r.get(k).cloned().unwrap_or(serde_json::Value::Null);
    let kib =
        |k: &str| g(k).as_f64().map_or_else(|| "n/a (no --server-pid)".to_owned(), |v| format!("{v:.2} KiB"));
    let _ = writeln!(s, "== idle ==");
    let _ = writeln!(
        s,
        "connections      {} open of {} in {:.1} s, sources {}",
        g("connections_open"),
        g("connections_requested"),
        g("connect_s").as_f64().unwrap_or(0.0),
        g("source_ips")
    );
    let _ = writeln!(s, "server RSS KiB   {}", g("server_rss_kib"));
    let _ = writeln!(
        s,
        "per connection   {} right after connecting, {} after the hold",
        kib("server_kib_per_connection"),
        kib("server_kib_per_connection_after_hold")
    );
    let _ = writeln!(s, "bench per conn   {}", kib("bench_kib_per_connection"));
    let _ = writeln!(
        s,
        "heartbeats       {} answered; closed during hold: {}",
        g("heartbeats_answered"),
        g("closed_during_hold")
    );
    if g("connect_failures").as_object().is_some_and(|m| !m.is_empty()) {
        let _ = writeln!(s, "connect failures {}", g("connect_failures"));
    }
    let _ = writeln!(s, "server metrics   {}", g("server_metrics"));
    s
}

struct Conn {
    ws: std::net::SocketAddr,
    url: String,
    ip: IpAddr,
    channel: String,
    gate: Arc<Semaphore>,
    ready: Arc<AtomicU64>,
    pongs: Arc<AtomicU64>,
    stop: watch::Receiver<bool>,
}

impl Conn {
    async fn run(self) -> ConnResult {
        let mut res = ConnResult::default();
        let setup = async {
            let _permit = self.gate.acquire().await?;
            let stream = crate::ws::tcp_connect(self.ws, Some(self.ip)).await?;
            let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
            let (mut ws, _) =
                tokio_tungstenite::client_async_with_config(self.url.as_str(), stream, Some(config)).await?;
            ws.send(Message::text(r#"{"id":1,"op":"connect"}"#)).await?;
            expect_reply(&mut ws, r#"{"id":1,"result""#).await?;
            let sub = format!(r#"{{"id":2,"op":"subscribe","channel":"{}"}}"#, self.channel);
            ws.send(Message::text(sub)).await?;
            expect_reply(&mut ws, r#"{"id":2,"result""#).await?;
            anyhow::Ok(ws)
        };
        let mut ws = match tokio::time::timeout(Duration::from_secs(60), setup).await {
            Ok(Ok(ws)) => ws,
            Ok(Err(e)) => {
                res.failed = Some(format!("{e:#}"));
                return res;
            }
            Err(_) => {
                res.failed = Some("setup timed out".to_owned());
                return res;
            }
        };
        self.ready.fetch_add(1, Ordering::Relaxed);
        let mut stop = self.stop;
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                m = ws.next() => match m {
                    Some(Ok(Message::Text(t))) if t.as_str().starts_with(r#"{"push":"ping""#) => {
                        if ws.send(Message::text(r#"{"op":"pong"}"#)).await.is_err() {
                            res.closed = Some("write error".to_owned());
                            return res;
                        }
                        self.pongs.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(Ok(Message::Close(c))) => {
                        res.closed = Some(c.map_or_else(|| "close".to_owned(), |c| format!("close {} {}", u16::from(c.code), c.reason)));
                        return res;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        res.closed = Some(format!("error: {e}"));
                        return res;
                    }
                    None => {
                        res.closed = Some("eof".to_owned());
                        return res;
                    }
                },
            }
        }
        let _ = ws.close(None).await;
        res
    }
}

async fn expect_reply<S>(ws: &mut S, prefix: &str) -> anyhow::Result<()>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                if t.as_str().starts_with(prefix) {
                    return Ok(());
                }
                if !t.as_str().starts_with(r#"{"push""#) {
                    anyhow::bail!("unexpected reply: {}", t.as_str());
                }
            }
            Some(Ok(Message::Close(c))) => anyhow::bail!("closed: {c:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => anyhow::bail!("connection closed"),
        }
    }
}
