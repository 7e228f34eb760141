//! `tether-bench`: the load generator behind `docs/benchmarks.md`.
//!
//! It shares the machine with the server, so it is built to be cheap: one multi-thread
//! tokio runtime, a hand-rolled WebSocket reader that parses pushes in place (see
//! [`ws`]), a hand-rolled keep-alive HTTP client (see [`http`]), and per-delivery work
//! limited to one substring search, three integer parses, a bit set and a histogram
//! record. Every run is bounded in time and only targets loopback addresses.

mod auth;
mod history;
mod http;
mod idle;
mod jetstream;
mod jsonscan;
mod login;
mod pubsub;
mod server;
mod storm;
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

// Parsed once per run: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
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
    /// Token verifications per second on one thread, in process: JWTs of several
    /// algorithms and session tokens (no server, no sockets).
    AuthVerify {
        /// JWT algorithms to measure, comma-separated (exact JOSE names).
        #[arg(long, value_delimiter = ',', default_value = "HS256,RS256,ES256,EdDSA")]
        algorithms: Vec<String>,
        /// Distinct JWTs per algorithm, cycled.
        #[arg(long, default_value_t = 10_000)]
        tokens: usize,
        /// Users with one session each, written to a fresh SQLite store (0: skip).
        #[arg(long, default_value_t = 10_000)]
        sessions: usize,
        /// Seconds per timed round.
        #[arg(long, default_value_t = 2.0)]
        duration: f64,
        /// Timed rounds per kind; the median is reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Also print one JSON line of results on stdout (the summary goes to stderr).
        #[arg(long)]
        json: bool,
        /// No progress lines on stderr.
        #[arg(long)]
        quiet: bool,
    },
    /// Many WebSocket connections at once, each sending `connect` with its own token.
    ConnectStorm {
        /// Connections (each holds a socket in the bench and in the server until the end).
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// Credential each connection presents.
        #[arg(long, value_enum, default_value_t = TokenKind::Jwt)]
        token: TokenKind,
        /// Distinct tokens, cycled over the connections (default: one per connection).
        #[arg(long)]
        distinct_tokens: Option<usize>,
        /// Source addresses to bind, comma-separated, round-robin (loopback only).
        #[arg(long, value_delimiter = ',', default_value = "127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4")]
        source_ips: Vec<IpAddr>,
        /// Seconds one connection may take, once it has a slot, before it counts as an error.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        /// HS256 secret of the target server (a spawned server is configured with it).
        #[arg(long, env = "TETHER_BENCH_HMAC_SECRET", default_value = auth::BENCH_HMAC_SECRET)]
        hmac_secret: String,
        #[command(flatten)]
        common: Common,
    },
    /// `POST /auth/login` throughput and latency for one registered user.
    Login {
        /// Connections, each with one login in flight.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Seconds of logins.
        #[arg(long, default_value_t = 20)]
        duration: u64,
        /// Argon2id memory of the spawned server, KiB.
        #[arg(long, default_value_t = 19_456)]
        argon2_memory_kib: u32,
        /// Argon2id passes of the spawned server.
        #[arg(long, default_value_t = 2)]
        argon2_iterations: u32,
        /// Argon2id lanes of the spawned server.
        #[arg(long, default_value_t = 1)]
        argon2_parallelism: u32,
        #[command(flatten)]
        common: Common,
    },
    /// Model sync over `/jetstream` (Jetstream Sync protocol) on one scope: accepted
    /// changesets/s with pipelined writers, then ack and broadcast latency at a fixed rate
    /// with listening sessions; optionally the same against the reference server.
    JetstreamSync {
        #[command(flatten)]
        js: JetstreamArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Channel history (issue 5): publish throughput without history, with it (and with
    /// it persisted), same load, same run; then the time to recover M missed publications.
    History {
        #[command(flatten)]
        h: HistoryArgs,
        #[command(flatten)]
        common: Common,
    },
}

/// Options of `history`.
#[derive(Args, Debug, Clone)]
struct HistoryArgs {
    /// Parts to run, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "throughput,recovery")]
    parts: Vec<history::Part>,
    /// Throughput: channels.
    #[arg(long, default_value_t = 100)]
    channels: usize,
    /// Throughput: subscribers on each channel.
    #[arg(long, default_value_t = 10)]
    subscribers_per_channel: usize,
    /// Throughput: publisher connections (flat out, pipelined, round-robin over channels).
    #[arg(long, default_value_t = 2)]
    publishers: usize,
    /// Throughput: publications per channel in flight (published, not yet received by
    /// every subscriber).
    #[arg(long, default_value_t = 8)]
    window: u64,
    /// Throughput: seconds of publishing per mode and round.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Approximate size of each publication's data in bytes.
    #[arg(long, default_value_t = 100)]
    payload_bytes: usize,
    /// Throughput: how publications reach the server.
    #[arg(long, value_enum, default_value_t = Via::Ws)]
    publish_via: Via,
    /// Throughput: longest wait for stragglers after publishing, seconds.
    #[arg(long, default_value_t = 10)]
    drain: u64,
    /// Throughput: rounds; each runs every mode, in alternating order.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// `history_size` of the history namespace.
    #[arg(long, default_value_t = 1000)]
    history_size: usize,
    /// Throughput: also run the history mode on a second spawned server with
    /// `[history] persist = true` (needs --spawn-server).
    #[arg(long)]
    persist: bool,
    /// Recovery: how many times to recover.
    #[arg(long, default_value_t = 200)]
    recoveries: usize,
    /// Recovery: publications missed before each recovery (the recovery namespace keeps
    /// `max(history_size, missed)` and allows recovering `missed`).
    #[arg(long, default_value_t = 1000)]
    missed: usize,
}

/// Options of `jetstream-sync`.
#[derive(Args, Debug, Clone)]
struct JetstreamArgs {
    /// Writer sessions (each sends changesets on the `Canvas` scope).
    #[arg(long, default_value_t = 4)]
    writers: usize,
    /// Throughput phase: changesets in flight per writer (a new one goes out per reply).
    #[arg(long, default_value_t = 64)]
    pipeline: usize,
    /// ScopeSync messages per WebSocket frame (a JSON array when above 1).
    #[arg(long, default_value_t = 1)]
    per_frame: usize,
    /// Throughput phase: seconds of sending.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Latency phase: changesets per second offered in total, on a schedule (open loop).
    #[arg(long, default_value_t = 10_000.0)]
    rate: f64,
    /// Latency phase: seconds of sending.
    #[arg(long, default_value_t = 10)]
    latency_duration: u64,
    /// Latency phase: other sessions that fetch the scope and receive every broadcast.
    #[arg(long, default_value_t = 100)]
    receivers: usize,
    /// Latency phase: changesets sent and unanswered per writer before its schedule is
    /// held back (bounds memory if the server stops answering; reported when it happens).
    #[arg(long, default_value_t = 5_000)]
    max_outstanding: usize,
    /// Latency phase: worker threads of the listeners' own tokio runtime (0: the writers'
    /// runtime). Listeners parse a million messages a second; on the writers' runtime a
    /// writer's reply waited behind them in the run queue, and that wait was counted as
    /// the server's ack latency. On their own threads, the OS scheduler lets a writer that
    /// wakes up run at once.
    #[arg(long, default_value_t = 2)]
    listener_threads: usize,
    /// Every session acknowledges what it received (Ping{ack}) this often, milliseconds,
    /// and whenever 1,000 messages are unacknowledged.
    #[arg(long, default_value_t = 50)]
    ack_interval_ms: u64,
    /// Longest wait for replies and broadcasts after sending stops, seconds (ends early
    /// when all are in, or after 3 s without progress).
    #[arg(long, default_value_t = 10)]
    drain: u64,
    /// What each changeset changes: the root's `name`, or x/y of a Shape per writer.
    #[arg(long, value_enum, default_value_t = jetstream::Change::Name)]
    change: jetstream::Change,
    /// Send every changeset with `atomic: true`.
    #[arg(long)]
    atomic: bool,
    /// Phases to run, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "throughput,latency")]
    phases: Vec<jetstream::Phase>,
    /// Schema of the spawned server: the reference demo's models.
    #[arg(long, default_value = "tests/jetstream/tether/schema.toml")]
    schema: PathBuf,
    /// `sync.inbound_rate` of the spawned server: messages/s one socket may send before it
    /// is closed with 4008 (0: unlimited; Tether's default is 10,000).
    #[arg(long, default_value_t = 0)]
    sync_inbound_rate: u32,
    /// An extra `KEY=VALUE` line for the spawned server's `[sync]` table (repeatable), e.g.
    /// `snapshot_every=100000`, to see what a setting costs. Default: none.
    #[arg(long, value_name = "KEY=VALUE")]
    sync_option: Vec<String>,
    /// Also run every phase against the reference server (`node reference-server.js
    /// --port 0` in --reference-dir), after Tether, and report the ratios.
    #[arg(long)]
    compare_reference: bool,
    /// Directory of `reference-server.js` (needs `npm ci --omit=dev` there once).
    #[arg(long, default_value = "tests/jetstream")]
    reference_dir: PathBuf,
    /// Node.js binary for the reference server.
    #[arg(long, default_value = "node")]
    node: PathBuf,
    /// Reference: throughput-phase seconds.
    #[arg(long, default_value_t = 10)]
    reference_duration: u64,
    /// Reference: changesets in flight per writer (default: --pipeline).
    #[arg(long)]
    reference_pipeline: Option<usize>,
    /// Reference: latency-phase seconds.
    #[arg(long, default_value_t = 5)]
    reference_latency_duration: u64,
    /// Reference: offered changesets/s in the latency phase (default: --rate).
    #[arg(long)]
    reference_rate: Option<f64>,
    /// Reference: listening sessions in the latency phase (default: --receivers).
    #[arg(long)]
    reference_receivers: Option<usize>,
    /// Reference: outstanding changesets per writer in the latency phase.
    #[arg(long, default_value_t = 2_000)]
    reference_max_outstanding: usize,
}

/// What `connect-storm` connections present.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum TokenKind {
    /// HS256 JWTs minted by the bench.
    Jwt,
    /// Session tokens written into the spawned server's database before it starts.
    Session,
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

/// The common options; `None` for the in-process `auth-verify`.
fn common(cmd: &Command) -> Option<&Common> {
    match cmd {
        Command::Fanout { common, .. }
        | Command::Channels { common, .. }
        | Command::Idle { common, .. }
        | Command::Http { common, .. }
        | Command::ConnectStorm { common, .. }
        | Command::Login { common, .. }
        | Command::JetstreamSync { common, .. }
        | Command::History { common, .. } => Some(common),
        Command::AuthVerify { .. } => None,
    }
}

fn loadavg() -> Option<String> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

/// Prints a report: the summary on stdout, or on stderr with one JSON line on stdout.
fn emit(
    mut report: serde_json::Value,
    mut text: String,
    json: bool,
    load_before: Option<String>,
) -> anyhow::Result<()> {
    if let Some(obj) = report.as_object_mut() {
        obj.insert("loadavg_before".to_owned(), serde_json::json!(load_before));
        obj.insert("loadavg_after".to_owned(), serde_json::json!(loadavg()));
    }
    text.push_str(&format!(
        "load average     {} -> {}\n",
        load_before.unwrap_or_default(),
        loadavg().unwrap_or_default()
    ));
    if json {
        // Summary to stderr, one JSON line to stdout.
        eprint!("{text}");
        if let Some(obj) = report.as_object_mut() {
            obj.retain(|k, _| !k.starts_with('_'));
        }
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{text}");
    }
    Ok(())
}

/// Called with a spawned server's data directory before it starts.
type Prepare<'a> = dyn FnMut(&std::path::Path) -> anyhow::Result<()> + 'a;

/// Tokens for `connect-storm` made before the server starts, and the config they need.
#[derive(Debug, Default)]
struct StormSetup {
    tokens: Vec<String>,
    kind: String,
    setup_s: f64,
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let Some(c) = common(&cli.command).cloned() else {
        let Command::AuthVerify { algorithms, tokens, sessions, duration, rounds, json, quiet } = cli.command
        else {
            unreachable!("only auth-verify has no common options")
        };
        let p = auth::VerifyParams {
            algorithms: algorithms
                .iter()
                .filter(|a| !a.is_empty())
                .map(|a| auth::parse_algorithm(a))
                .collect::<Result<_, _>>()?,
            tokens: tokens.max(1),
            sessions,
            duration: Duration::from_secs_f64(duration.max(0.1)),
            rounds: rounds.max(1),
            progress: !quiet,
        };
        let load_before = loadavg();
        let report = auth::run_verify(&p)?;
        let text = auth::verify_summary(&report);
        return emit(report, text, json, load_before);
    };
    // Scenario-specific server config, and tokens that must exist before the server does.
    let mut storm = StormSetup::default();
    let mut extra_toml = String::new();
    let mut prepare: Box<Prepare<'_>> = Box::new(|_| Ok(()));
    match &cli.command {
        Command::ConnectStorm { connections, token, distinct_tokens, hmac_secret, .. } => {
            let n = distinct_tokens.unwrap_or(*connections).clamp(1, (*connections).max(1));
            match token {
                TokenKind::Jwt => {
                    let t0 = tokio::time::Instant::now();
                    let tmp = auth::TempDir::new("storm-keys")?;
                    let setup = auth::JwtSetup::new(jsonwebtoken::Algorithm::HS256, hmac_secret, tmp.path())?;
                    storm.tokens = setup.mint(n)?;
                    storm.kind = "HS256 JWT".to_owned();
                    storm.setup_s = t0.elapsed().as_secs_f64();
                    extra_toml = setup.toml;
                }
                TokenKind::Session => {
                    anyhow::ensure!(
                        c.spawn_server.is_some(),
                        "--token session needs --spawn-server (sessions are written into its database)"
                    );
                    let progress = !c.quiet;
                    let storm = &mut storm;
                    prepare = Box::new(move |data_dir: &std::path::Path| {
                        let t0 = tokio::time::Instant::now();
                        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                        let store = tether_store::SqliteStore::open_in_dir(data_dir)?;
                        storm.tokens = rt.block_on(auth::create_sessions(&store, n, progress))?;
                        // Dropping the store joins its writer and checkpoints the WAL.
                        drop(store);
                        storm.kind = "session token".to_owned();
                        storm.setup_s = t0.elapsed().as_secs_f64();
                        Ok(())
                    });
                }
            }
        }
        Command::Login {
            concurrency,
            duration,
            argon2_memory_kib,
            argon2_iterations,
            argon2_parallelism,
            ..
        } => {
            extra_toml = login_params(
                *concurrency,
                *duration,
                *argon2_memory_kib,
                *argon2_iterations,
                *argon2_parallelism,
                false,
            )
            .server_toml();
        }
        Command::JetstreamSync { js, .. } if c.spawn_server.is_some() => {
            extra_toml = jetstream::server_toml(&js.schema, js.sync_inbound_rate, &js.sync_option)?;
        }
        Command::History { h, .. } => {
            anyhow::ensure!(!h.persist || c.spawn_server.is_some(), "--persist needs --spawn-server");
            extra_toml = history::server_toml(h.history_size, h.missed, false);
        }
        _ => {}
    }
    let ws_default_path = match &cli.command {
        Command::JetstreamSync { .. } => "/jetstream",
        _ => "/ws",
    };
    // The spawned server lives until the end of this function.
    let spawned = c
        .spawn_server
        .as_deref()
        .map(|p| Spawned::start(p, c.outbound_queue, &extra_toml, &mut *prepare))
        .transpose()?;
    drop(prepare);
    let (target, server_pid) = match &spawned {
        Some(s) => {
            let base = s.addr.to_string();
            let target = Target {
                ws: s.addr,
                ws_host: base.clone(),
                ws_path: ws_default_path.to_owned(),
                api: s.addr,
                api_host: base,
                key: s.key.clone(),
            };
            (target, Some(s.pid()))
        }
        None => {
            let (ws, ws_host, ws_path) = server::parse_url(&c.url, ws_default_path)?;
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
    type Summary = fn(&serde_json::Value) -> String;
    let pubsub_summary: Summary = pubsub::summary;
    let (mut report, summary) = rt.block_on(async {
        match cli.command {
            Command::Fanout { subscribers, publish, .. } => {
                let p = pub_params("fanout", 1, subscribers, &publish, &c, progress);
                pubsub::run(&target, p, server_pid).await.map(|r| (r, pubsub_summary))
            }
            Command::Channels { channels, subscribers_per_channel, publish, .. } => {
                let p =
                    pub_params("channels", channels.max(1), subscribers_per_channel, &publish, &c, progress);
                pubsub::run(&target, p, server_pid).await.map(|r| (r, pubsub_summary))
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
                    check_offsets: false,
                };
                pubsub::run(&target, p, server_pid).await.map(|r| (r, pubsub_summary))
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
                idle::run(&target, p, server_pid).await.map(|r| (r, idle::summary as Summary))
            }
            Command::ConnectStorm { connections, source_ips, timeout, .. } => {
                for ip in &source_ips {
                    anyhow::ensure!(ip.is_loopback(), "--source-ips: {ip} is not a loopback address");
                }
                let p = storm::Params {
                    connections,
                    concurrency: c.connect_concurrency.max(1),
                    source_ips,
                    timeout: Duration::from_secs(timeout.max(1)),
                    tokens: storm.tokens,
                    token_kind: storm.kind,
                    token_setup_s: storm.setup_s,
                    progress,
                };
                storm::run(&target, p, server_pid).await.map(|r| (r, storm::summary as Summary))
            }
            Command::Login {
                concurrency,
                duration,
                argon2_memory_kib,
                argon2_iterations,
                argon2_parallelism,
                ..
            } => {
                let p = login_params(
                    concurrency,
                    duration,
                    argon2_memory_kib,
                    argon2_iterations,
                    argon2_parallelism,
                    progress,
                );
                login::run(&target, p, server_pid).await.map(|r| (r, login::summary as Summary))
            }
            Command::JetstreamSync { js, .. } => {
                let p = jetstream_params(&js, &c, progress);
                jetstream::run(&target, p, server_pid).await.map(|r| (r, jetstream::summary as Summary))
            }
            Command::History { h, .. } => {
                let p = history::Params {
                    parts: h.parts.clone(),
                    channels: h.channels.max(1),
                    subs_per_channel: h.subscribers_per_channel,
                    publishers: h.publishers.max(1),
                    window: h.window.max(1),
                    duration: Duration::from_secs(h.duration.max(1)),
                    payload_bytes: h.payload_bytes,
                    via: h.publish_via,
                    drain: Duration::from_secs(h.drain),
                    rounds: h.rounds.max(1),
                    history_size: h.history_size.max(1),
                    persist: if h.persist {
                        c.spawn_server.clone().map(|b| (b, c.outbound_queue))
                    } else {
                        None
                    },
                    recoveries: h.recoveries,
                    missed: h.missed.max(1),
                    connect_concurrency: c.connect_concurrency,
                    progress,
                };
                history::run(&target, p, server_pid).await.map(|r| (r, history::summary as Summary))
            }
            Command::AuthVerify { .. } => unreachable!("handled above"),
        }
    })?;
    // Let connection tasks finish closing before the runtime (and maybe the server) go.
    rt.shutdown_timeout(Duration::from_secs(2));
    if let Some(obj) = report.as_object_mut() {
        obj.insert("server_pid".to_owned(), serde_json::json!(server_pid));
        obj.insert("spawned_server".to_owned(), serde_json::json!(spawned.is_some()));
    }
    let text = summary(&report);
    emit(report, text, c.json, load_before)?;
    drop(spawned);
    Ok(())
}

fn jetstream_params(a: &JetstreamArgs, c: &Common, progress: bool) -> jetstream::Params {
    let tether = jetstream::Shape {
        pipeline: a.pipeline.max(1),
        duration: Duration::from_secs(a.duration.max(1)),
        rate: a.rate.max(1.0),
        latency_duration: Duration::from_secs(a.latency_duration.max(1)),
        receivers: a.receivers,
        max_outstanding: a.max_outstanding.max(1),
    };
    let reference = a.compare_reference.then(|| jetstream::ReferenceParams {
        node: a.node.clone(),
        dir: a.reference_dir.clone(),
        shape: jetstream::Shape {
            pipeline: a.reference_pipeline.unwrap_or(a.pipeline).max(1),
            duration: Duration::from_secs(a.reference_duration.max(1)),
            rate: a.reference_rate.unwrap_or(a.rate).max(1.0),
            latency_duration: Duration::from_secs(a.reference_latency_duration.max(1)),
            receivers: a.reference_receivers.unwrap_or(a.receivers),
            max_outstanding: a.reference_max_outstanding.max(1),
        },
    });
    jetstream::Params {
        // Stamps carry `phase * 10000 + writer`.
        writers: a.writers.clamp(1, 9_999),
        per_frame: a.per_frame.clamp(1, 1024),
        change: a.change,
        atomic: a.atomic,
        phases: a.phases.clone(),
        ack_interval: Duration::from_millis(a.ack_interval_ms.max(1)),
        drain: Duration::from_secs(a.drain),
        connect_concurrency: c.connect_concurrency,
        listener_threads: a.listener_threads,
        tether,
        reference,
        progress,
    }
}

fn login_params(
    concurrency: usize,
    duration: u64,
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
    progress: bool,
) -> login::Params {
    login::Params {
        concurrency: concurrency.max(1),
        duration: Duration::from_secs(duration.max(1)),
        memory_kib,
        iterations,
        parallelism,
        progress,
    }
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
        check_offsets: false,
    }
}
