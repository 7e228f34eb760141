//! `tether-bench`: the load generator behind `docs/benchmarks.md`.
//!
//! It shares the machine with the server, so it is built to be cheap: one multi-thread
//! tokio runtime, a hand-rolled WebSocket reader that parses pushes in place (see
//! [`ws`]), a hand-rolled keep-alive HTTP client (see [`http`]), and per-delivery work
//! limited to one substring search, three integer parses, a bit set and a histogram
//! record. Every run is bounded in time and only targets loopback addresses.

mod http;
mod idle;
mod pubsub;
mod server;
mod track;
mod ws;

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use crate::pubsub::{Budget, Pace, Via};
use crate::server::{Spawned, Target};

#[derive(Parser, Debug)]
#[command(name = "tether-bench", version, about = "Load generator and benchmark scenarios for Tether")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// N subscribers on one channel; measures deliveries/s, latency and integrity.
    Fanout {
        /// Subscriber connections.
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        #[command(flatten)]
        publish: PublishArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Many channels with K subscribers each; publications spread round-robin.
    Channels {
        /// Channels.
        #[arg(long, default_value_t = 1000)]
        channels: usize,
        /// Subscribers on each channel (each subscriber holds one channel).
        #[arg(long, default_value_t = 10)]
        subscribers_per_channel: usize,
        #[command(flatten)]
        publish: PublishArgs,
        #[command(flatten)]
        common: Common,
    },
    /// N idle subscribed connections; server RSS per connection (needs the server pid).
    Idle {
        /// Connections to open (this machine allows 20,000 open files per process, so
        /// stay below ~19,000 for the server and the bench).
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// Subscribe each connection to its own channel instead of one shared channel.
        #[arg(long)]
        channel_per_connection: bool,
        /// Source addresses to bind, comma-separated, round-robin (loopback only).
        #[arg(long, value_delimiter = ',', default_value = "127.0.0.1")]
        source_ips: Vec<IpAddr>,
        /// Seconds to hold the connections open after all are up (heartbeats are
        /// answered; 30+ covers one heartbeat round).
        #[arg(long, default_value_t = 30)]
        hold: u64,
        /// Seconds between the last connection and the first memory reading.
        #[arg(long, default_value_t = 3)]
        settle: u64,
        #[command(flatten)]
        common: Common,
    },
    /// Keep-alive HTTP publish throughput with one WebSocket subscriber checking delivery.
    Http {
        /// Requests in total.
        #[arg(long, default_value_t = 200_000)]
        requests: u64,
        /// Connections, each with one request in flight.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Approximate size of each publication's data.
        #[arg(long, default_value_t = 100)]
        payload_bytes: usize,
        /// Longest wait for the subscriber's stragglers, seconds.
        #[arg(long, default_value_t = 10)]
        drain: u64,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Args, Debug, Clone)]
struct PublishArgs {
    /// Publications per second in total.
    #[arg(long, required_unless_present = "flat_out", conflicts_with = "flat_out")]
    rate: Option<f64>,
    /// Publish as fast as subscribers keep up (see --window).
    #[arg(long)]
    flat_out: bool,
    /// Flat-out only: publications per channel allowed in flight, i.e. published but not
    /// yet received by every subscriber. Keeps the server from being pushed into
    /// slow-consumer disconnects; latency grows with it.
    #[arg(long, default_value_t = 8)]
    window: u64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Approximate size of each publication's data in bytes.
    #[arg(long, default_value_t = 100)]
    payload_bytes: usize,
    /// How publications reach the server.
    #[arg(long, value_enum, default_value_t = Via::Ws)]
    publish_via: Via,
    /// Publisher connections.
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Longest wait for stragglers after publishing, seconds.
    #[arg(long, default_value_t = 10)]
    drain: u64,
}

#[derive(Args, Debug, Clone)]
struct Common {
    /// WebSocket base URL (path defaults to /ws).
    #[arg(long, default_value = "ws://127.0.0.1:7080")]
    url: String,
    /// HTTP API base URL.
    #[arg(long, default_value = "http://127.0.0.1:7080")]
    api: String,
    /// API key.
    #[arg(long, env = "TETHER_API_KEY", default_value = "bench-key-0123456789abcdef")]
    key: String,
    /// Start this `tether` binary with a generated config on a free port, use it, and
    /// stop it afterwards (overrides --url, --api, --key, --server-pid).
    #[arg(long, value_name = "PATH_TO_TETHER")]
    spawn_server: Option<PathBuf>,
    /// `websocket.outbound_queue` of the spawned server.
    #[arg(long, default_value_t = 65_536)]
    outbound_queue: usize,
    /// Server process id, for RSS and CPU readings from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Also print one JSON line of results on stdout (the summary goes to stderr).
    #[arg(long)]
    json: bool,
    /// WebSocket handshakes in flight at once.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Runtime worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tether-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn common(cmd: &Command) -> &Common {
    match cmd {
        Command::Fanout { common, .. }
        | Command::Channels { common, .. }
        | Command::Idle { common, .. }
        | Command::Http { common, .. } => common,
    }
}

fn loadavg() -> Option<String> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let c = common(&cli.command).clone();
    // The spawned server lives until the end of this function.
    let spawned = c.spawn_server.as_deref().map(|p| Spawned::start(p, c.outbound_queue)).transpose()?;
    let (target, server_pid) = match &spawned {
        Some(s) => {
            let base = s.addr.to_string();
            let target = Target {
                ws: s.addr,
                ws_host: base.clone(),
                ws_path: "/ws".to_owned(),
                api: s.addr,
                api_host: base,
                key: s.key.clone(),
            };
            (target, Some(s.pid()))
        }
        None => {
            let (ws, ws_host, ws_path) = server::parse_url(&c.url, "/ws")?;
            let (api, api_host, _) = server::parse_url(&c.api, "/")?;
            (Target { ws, ws_host, ws_path, api, api_host, key: c.key.clone() }, c.server_pid)
        }
    };
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = c.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = rt.build().context("tokio runtime")?;
    let load_before = loadavg();
    let progress = !c.quiet;
    let (mut report, idle) = rt.block_on(async {
        match cli.command {
            Command::Fanout { subscribers, publish, .. } => {
                let p = pub_params("fanout", 1, subscribers, &publish, &c, progress);
                pubsub::run(&target, p, server_pid).await.map(|r| (r, false))
            }
            Command::Channels { channels, subscribers_per_channel, publish, .. } => {
                let p =
                    pub_params("channels", channels.max(1), subscribers_per_channel, &publish, &c, progress);
                pubsub::run(&target, p, server_pid).await.map(|r| (r, false))
            }
            Command::Http { requests, concurrency, payload_bytes, drain, .. } => {
                let p = pubsub::Params {
                    name: "http",
                    channels: 1,
                    subs_per_channel: 1,
                    pace: Pace::Unpaced,
                    budget: Budget::Count(requests),
                    payload_bytes,
                    via: Via::Http,
                    publishers: concurrency.max(1),
                    drain: Duration::from_secs(drain),
                    connect_concurrency: c.connect_concurrency,
                    read_buf: 64 * 1024,
                    prefix: "bench:http".to_owned(),
                    progress,
                };
                pubsub::run(&target, p, server_pid).await.map(|r| (r, false))
            }
            Command::Idle { connections, channel_per_connection, source_ips, hold, settle, .. } => {
                for ip in &source_ips {
                    anyhow::ensure!(ip.is_loopback(), "--source-ips: {ip} is not a loopback address");
                }
                let p = idle::Params {
                    connections,
                    channel_per_connection,
                    source_ips,
                    hold: Duration::from_secs(hold),
                    settle: Duration::from_secs(settle),
                    connect_concurrency: c.connect_concurrency,
                    progress,
                };
                idle::run(&target, p, server_pid).await.map(|r| (r, true))
            }
        }
    })?;
    // Let connection tasks finish closing before the runtime (and maybe the server) go.
    rt.shutdown_timeout(Duration::from_secs(2));
    if let Some(obj) = report.as_object_mut() {
        obj.insert("loadavg_before".to_owned(), serde_json::json!(load_before));
        obj.insert("loadavg_after".to_owned(), serde_json::json!(loadavg()));
        obj.insert("server_pid".to_owned(), serde_json::json!(server_pid));
        obj.insert("spawned_server".to_owned(), serde_json::json!(spawned.is_some()));
    }
    let mut text = if idle { idle::summary(&report) } else { pubsub::summary(&report) };
    text.push_str(&format!(
        "load average     {} -> {}\n",
        load_before.unwrap_or_default(),
        loadavg().unwrap_or_default()
    ));
    if c.json {
        // Summary to stderr, one JSON line to stdout.
        eprint!("{text}");
        if let Some(obj) = report.as_object_mut() {
            obj.retain(|k, _| !k.starts_with('_'));
        }
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{text}");
    }
    drop(spawned);
    Ok(())
}

fn pub_params(
    name: &'static str,
    channels: usize,
    subs_per_channel: usize,
    a: &PublishArgs,
    c: &Common,
    progress: bool,
) -> pubsub::Params {
    pubsub::Params {
        name,
        channels,
        subs_per_channel,
        pace: if a.flat_out {
            Pace::FlatOut { window: a.window.max(1) }
        } else {
            Pace::Rate(a.rate.unwrap_or(100.0))
        },
        budget: Budget::Duration(Duration::from_secs(a.duration)),
        payload_bytes: a.payload_bytes,
        via: a.publish_via,
        publishers: a.publishers.max(1),
        drain: Duration::from_secs(a.drain),
        connect_concurrency: c.connect_concurrency,
        read_buf: 16 * 1024,
        prefix: if name == "fanout" { "bench:fanout".to_owned() } else { "bench:ch".to_owned() },
        progress,
    }
}
