//! The `connect-storm` scenario: many clients connect at once, each with its own token.
//!
//! Every connection is a task that waits for a slot (at most `concurrency` are being set
//! up at once), opens a TCP connection from one of the loopback source addresses, does
//! the WebSocket handshake, sends `{"id":1,"op":"connect","token":…}` and waits for the
//! reply. A `result` is a success; an `error` reply, a refused handshake, a socket error
//! or no answer within the timeout is an error. Successful connections stay open until
//! every connection has its answer, so at the end the server holds all of them at once,
//! as it would after a restart or a network blip. Then all close.
//!
//! Two latencies per connection: *connect* from taking the slot to the reply (TCP, the
//! WebSocket upgrade and token verification, i.e. what a client waits for), and *op* from
//! sending the `connect` frame to the reply (verification and the server's queueing).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::json;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::server::{CpuSample, Target, rss_kib};
use crate::track::{latency_json, latency_line, new_histogram};
use crate::ws;

/// Shape of the storm.
#[derive(Debug, Clone)]
pub(crate) struct Params {
    /// Connections to open.
    pub(crate) connections: usize,
    /// Connections being set up at once.
    pub(crate) concurrency: usize,
    /// Local addresses to bind, round-robin (loopback only).
    pub(crate) source_ips: Vec<IpAddr>,
    /// Longest wait for one connection's answer.
    pub(crate) timeout: Duration,
    /// Tokens; connection `i` uses `tokens[i % len]`.
    pub(crate) tokens: Vec<String>,
    /// What the tokens are, for the report.
    pub(crate) token_kind: String,
    /// Seconds spent creating the tokens (reported).
    pub(crate) token_setup_s: f64,
    /// Print progress.
    pub(crate) progress: bool,
}

#[derive(Debug)]
struct Outcome {
    connect_us: u64,
    op_us: u64,
    error: Option<String>,
}

/// Runs the storm.
pub(crate) async fn run(
    target: &Target,
    p: Params,
    server_pid: Option<u32>,
) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(!p.tokens.is_empty(), "no tokens");
    anyhow::ensure!(!p.source_ips.is_empty(), "no source addresses");
    let n = p.connections;
    let distinct = p.tokens.len().min(n);
    let tokens = Arc::new(p.tokens);
    let gate = Arc::new(Semaphore::new(p.concurrency.max(1)));
    let (tx, mut rx) = mpsc::unbounded_channel::<Outcome>();
    let (stop_tx, stop_rx) = watch::channel(false);
    let rss0 = server_pid.and_then(rss_kib);
    let cpu0 = CpuSample::now(server_pid);
    let t0 = Instant::now();
    let mut set = JoinSet::new();
    for i in 0..n {
        let conn = Conn {
            i,
            ws: target.ws,
            host: target.ws_host.clone(),
            path: target.ws_path.clone(),
            ip: p.source_ips[i % p.source_ips.len()],
            tokens: Arc::clone(&tokens),
            gate: Arc::clone(&gate),
            timeout: p.timeout,
            tx: tx.clone(),
            stop: stop_rx.clone(),
        };
        set.spawn(conn.run());
    }
    drop(tx);

    let mut connect_h = new_histogram();
    let mut op_h = new_histogram();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let (mut ok, mut answered) = (0u64, 0usize);
    let mut last = t0;
    // Every connection answers within its own timeout once it has a slot, so this bound
    // is only reached if something is badly wrong.
    let slots = n.div_ceil(p.concurrency.max(1)) as u32;
    let deadline = t0 + (p.timeout + Duration::from_secs(1)) * slots.max(1) + Duration::from_secs(30);
    let mut next_report = t0 + Duration::from_secs(1);
    while answered < n {
        let wait = next_report.min(deadline);
        match tokio::time::timeout_at(wait, rx.recv()).await {
            Ok(Some(o)) => {
                answered += 1;
                last = Instant::now();
                match o.error {
                    None => {
                        ok += 1;
                        connect_h.saturating_record(o.connect_us.max(1));
                        op_h.saturating_record(o.op_us.max(1));
                    }
                    Some(e) => *errors.entry(e).or_default() += 1,
                }
            }
            Ok(None) => break,
            Err(_) if Instant::now() >= deadline => {
                *errors.entry("no answer before the scenario's deadline".to_owned()).or_default() +=
                    (n - answered) as u64;
                break;
            }
            Err(_) => {}
        }
        if p.progress && Instant::now() >= next_report {
            eprintln!("  {answered}/{n} answered ({ok} ok) after {:.1} s", t0.elapsed().as_secs_f64());
            next_report += Duration::from_secs(1);
        }
    }
    let total_s = last.duration_since(t0).as_secs_f64().max(1e-6);
    let cpu = cpu0.since(server_pid);
    let rss1 = server_pid.and_then(rss_kib);
    let metrics = crate::server::fetch_metrics(target.api, &target.api_host).await;
    if p.progress {
        eprintln!("{ok}/{n} connected in {total_s:.2} s; closing");
    }
    let _ = stop_tx.send(true);
    let closing = async {
        while let Some(r) = set.join_next().await {
            if let Err(e) = r {
                *errors.entry(format!("task failed: {e}")).or_default() += 1;
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(30), closing).await.is_err() {
        set.abort_all();
    }
    let error_count: u64 = errors.values().sum();
    Ok(json!({
        "scenario": "connect-storm",
        "token_kind": p.token_kind,
        "token_setup_s": p.token_setup_s,
        "connections": n,
        "distinct_tokens": distinct,
        "concurrency": p.concurrency,
        "source_ips": p.source_ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "ok": ok,
        "errors": error_count,
        "error_kinds": errors,
        "total_s": total_s,
        "connects_per_s": ok as f64 / total_s,
        "connect_latency": latency_json(&connect_h),
        "op_latency": latency_json(&op_h),
        "_connect_line": latency_line(&connect_h),
        "_op_line": latency_line(&op_h),
        "cpu": cpu,
        "server_rss_kib_before": rss0,
        "server_rss_kib_connected": rss1,
        "server_metrics": metrics,
    }))
}

/// Human summary of a `connect-storm` report.
pub(crate) fn summary(r: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "== connect-storm ({}) ==", r["token_kind"].as_str().unwrap_or(""));
    let _ = writeln!(
        s,
        "connections      {} ok of {} ({} distinct tokens), {} errors, concurrency {}, sources {}",
        r["ok"], r["connections"], r["distinct_tokens"], r["errors"], r["concurrency"], r["source_ips"]
    );
    let _ = writeln!(
        s,
        "storm            {:.2} s to the last answer -> {:.0} connects/s",
        r["total_s"].as_f64().unwrap_or(0.0),
        r["connects_per_s"].as_f64().unwrap_or(0.0)
    );
    let _ = writeln!(s, "connect latency  {}", r["_connect_line"].as_str().unwrap_or(""));
    let _ = writeln!(s, "  (slot taken -> TCP + WebSocket upgrade + connect -> result)");
    let _ = writeln!(s, "op latency       {}", r["_op_line"].as_str().unwrap_or(""));
    let _ = writeln!(s, "  (connect frame sent -> result)");
    let _ = writeln!(
        s,
        "CPU (100 = core) server {} / bench {} / machine {}",
        r["cpu"]["server_pct"], r["cpu"]["bench_pct"], r["cpu"]["machine_pct"]
    );
    let _ = writeln!(
        s,
        "server RSS KiB   {} before, {} with everything connected",
        r["server_rss_kib_before"], r["server_rss_kib_connected"]
    );
    if r["error_kinds"].as_object().is_some_and(|m| !m.is_empty()) {
        let _ = writeln!(s, "errors           {}", r["error_kinds"]);
    }
    let _ = writeln!(s, "token setup      {:.1} s", r["token_setup_s"].as_f64().unwrap_or(0.0));
    s
}

struct Conn {
    i: usize,
    ws: SocketAddr,
    host: String,
    path: String,
    ip: IpAddr,
    tokens: Arc<Vec<String>>,
    gate: Arc<Semaphore>,
    timeout: Duration,
    tx: mpsc::UnboundedSender<Outcome>,
    stop: watch::Receiver<bool>,
}

impl Conn {
    async fn run(mut self) {
        let Ok(permit) = Arc::clone(&self.gate).acquire_owned().await else { return };
        let start = Instant::now();
        let token = &self.tokens[self.i % self.tokens.len()];
        let res = tokio::time::timeout(self.timeout, self.connect(token)).await;
        drop(permit);
        let connect_us = start.elapsed().as_micros() as u64;
        let (held, outcome) = match res {
            Ok(Ok((rd, wr, op_us))) => (Some((rd, wr)), Outcome { connect_us, op_us, error: None }),
            Ok(Err(e)) => (None, Outcome { connect_us, op_us: 0, error: Some(short(&format!("{e:#}"))) }),
            Err(_) => (
                None,
                Outcome {
                    connect_us,
                    op_us: 0,
                    error: Some(format!("no answer within {} s", self.timeout.as_secs())),
                },
            ),
        };
        let _ = self.tx.send(outcome);
        if let Some((_rd, mut wr)) = held {
            let _ = self.stop.wait_for(|s| *s).await;
            wr.close().await;
        }
    }

    async fn connect(&self, token: &str) -> anyhow::Result<(ws::WsReader, ws::WsWriter, u64)> {
        let (mut rd, mut wr) =
            ws::connect(self.ws, &self.host, &self.path, Some(self.ip), 4096, self.i as u64).await?;
        let t = Instant::now();
        wr.push_text_with(|out| {
            out.extend_from_slice(br#"{"id":1,"op":"connect","token":""#);
            out.extend_from_slice(token.as_bytes());
            out.extend_from_slice(br#""}"#);
        });
        wr.flush().await?;
        let reply = rd.read_text(&mut wr).await?;
        let op_us = t.elapsed().as_micros() as u64;
        let v: serde_json::Value = serde_json::from_slice(&reply).context("the reply is not JSON")?;
        if v.get("id").and_then(serde_json::Value::as_u64) != Some(1) {
            bail!("unexpected first frame: {}", String::from_utf8_lossy(&reply));
        }
        if v.get("result").is_some() {
            return Ok((rd, wr, op_us));
        }
        let e = &v["error"];
        bail!(
            "connect refused: {} ({})",
            e["code"].as_str().unwrap_or("?"),
            e["message"].as_str().unwrap_or("")
        )
    }
}

/// An error message short enough to use as a histogram key.
fn short(s: &str) -> String {
    match s.char_indices().nth(160) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_cuts_long_messages() {
        assert_eq!(short("abc"), "abc");
        assert_eq!(short(&"x".repeat(200)).chars().count(), 161);
    }
}
