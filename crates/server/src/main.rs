//! The `tether` binary: `serve`, `check-config`, `publish`, `subscribe`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tether_server::config::{Config, LogFormat};

#[derive(Parser, Debug)]
#[command(name = "tether", version, about = "Tether realtime server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs the server.
    Serve(ServeArgs),
    /// Validates a configuration file and exits (0 if valid).
    CheckConfig {
        /// The TOML file.
        file: PathBuf,
    },
    /// Publishes one message through the HTTP API.
    Publish {
        /// Channel.
        channel: String,
        /// Data as JSON; text that is not JSON is sent as a JSON string.
        data: String,
        /// Tags, `key=value` (repeatable).
        #[arg(long = "tag", value_name = "KEY=VALUE")]
        tags: Vec<String>,
        /// Server base URL.
        #[arg(long, env = "TETHER_URL", default_value = "http://127.0.0.1:7070")]
        url: String,
        /// API key.
        #[arg(long, env = "TETHER_API_KEY")]
        api_key: String,
    },
    /// Subscribes over WebSocket and prints each publication's data, one per line.
    Subscribe {
        /// Channel.
        channel: String,
        /// Filter over tags, e.g. `kind=news,region in (eu,us)`.
        #[arg(long)]
        filter: Option<String>,
        /// Server base URL.
        #[arg(long, env = "TETHER_URL", default_value = "http://127.0.0.1:7070")]
        url: String,
        /// Connection token (see `auth.tokens`).
        #[arg(long, env = "TETHER_TOKEN")]
        token: Option<String>,
        /// Print the whole push (channel, data, tags) as JSON instead of just the data.
        #[arg(long)]
        full: bool,
    },
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "TETHER_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:7070].
    #[arg(long, env = "TETHER_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// Data directory [default: ./tether-data].
    #[arg(long, env = "TETHER_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// API key for the HTTP API (repeatable; env: comma-separated).
    #[arg(long = "api-key", env = "TETHER_API_KEYS", value_delimiter = ',')]
    api_keys: Vec<String>,
    /// Event-server token file.
    #[arg(long, env = "TETHER_EVENT_TOKENS")]
    event_tokens: Option<PathBuf>,
    /// Log format.
    #[arg(long, env = "TETHER_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `tether_server=debug`.
    #[arg(long, env = "TETHER_LOG")]
    log_level: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                Ok(())
            }
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        },
        Command::Publish { channel, data, tags, url, api_key } => runtime().and_then(|rt| {
            rt.block_on(async {
                let data: serde_json::Value =
                    serde_json::from_str(&data).unwrap_or(serde_json::Value::String(data));
                let mut map = serde_json::Map::new();
                for t in tags {
                    let (k, v) = t.split_once('=').context("tags are KEY=VALUE")?;
                    map.insert(k.to_owned(), serde_json::Value::String(v.to_owned()));
                }
                let tags = (!map.is_empty()).then_some(serde_json::Value::Object(map));
                tether_client::HttpClient::new(&url, &api_key).publish(&channel, data, tags).await?;
                Ok(())
            })
        }),
        Command::Subscribe { channel, filter, url, token, full } => runtime().and_then(|rt| {
            rt.block_on(async {
                let ws_url = format!("{}/ws", url.replacen("http", "ws", 1));
                let opts = tether_client::ConnectOptions { token, ..Default::default() };
                let client = tether_client::Client::connect(&ws_url, opts).await?;
                client.subscribe(&channel, filter.as_deref()).await?;
                eprintln!("subscribed to {channel}");
                while let Some(push) = client.next_push().await {
                    match push {
                        tether_client::Push::Publication { channel, data, tags } => {
                            if full {
                                println!(
                                    "{}",
                                    serde_json::json!({"channel": channel, "data": data, "tags": tags})
                                );
                            } else {
                                println!("{}", data.unwrap_or(serde_json::Value::Null));
                            }
                        }
                        tether_client::Push::Closed(code) => {
                            anyhow::bail!("connection closed (code {code:?})");
                        }
                    }
                }
                Ok(())
            })
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn init_logging(format: LogFormat, level: &str) {
    // The level was validated with the config; fall back only if that was bypassed.
    let filter = tracing_subscriber::EnvFilter::try_new(level).unwrap_or_else(|_| "info".into());
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => b.json().init(),
        LogFormat::Text => b.init(),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if let Some(d) = args.data_dir {
        config.data_dir = d;
    }
    let flag_keys: Vec<String> = args.api_keys.into_iter().filter(|k| !k.is_empty()).collect();
    if !flag_keys.is_empty() {
        config.api_keys = flag_keys;
    }
    if let Some(t) = args.event_tokens {
        config.event_server.tokens_file = Some(t);
    }
    if let Some(f) = args.log_format {
        config.log.format = f;
    }
    if let Some(l) = args.log_level {
        config.log.level = l;
    }
    config.validate(std::path::Path::new("<flags>"))?;
    init_logging(config.log.format, &config.log.level);
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let keys = tether_server::keys::resolve(&config.api_keys, &config.data_dir)?;
    if let Some(k) = &keys.generated {
        let path = config.data_dir.join(tether_server::keys::KEY_FILE);
        println!("Generated an API key (stored in {}; shown only this once):\n\n    {k}\n", path.display());
    }
    let rt = runtime()?;
    let state = rt.block_on(async {
        tokio::task::spawn_blocking(move || {
            tether_server::build_state(config, &keys.keys, tether_server::Clock::system())
        })
        .await
    })??;
    rt.block_on(async move {
        let shutdown = shutdown_signal()?;
        let config = &state.config;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        tracing::info!(addr = %listener.local_addr()?, "tether listening");
        tether_server::app::serve(listener, std::sync::Arc::new(state), shutdown).await?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// Registers SIGTERM and SIGINT handlers immediately (before the listener accepts, so a
/// signal can never hit the default action) and resolves on the first of them.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
