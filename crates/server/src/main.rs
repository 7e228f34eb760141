//! The `tether` binary: `serve`, `check-config`, `publish`, `subscribe`, and the
//! administration commands `user`, `apikey` and `token` (see [`tether_server::admin`]).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tether_server::admin::{Admin, MintRequest, OpenMode};
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
    /// Manages user accounts in the database (safe while a server runs on it).
    #[command(subcommand)]
    User(UserCommand),
    /// Manages API keys of the HTTP API in the database (safe while a server runs on it).
    #[command(subcommand)]
    Apikey(ApikeyCommand),
    /// Development JWTs.
    #[command(subcommand)]
    Token(TokenCommand),
}

/// Where the database is: the same `--config` and `--data-dir` as `serve`.
#[derive(clap::Args, Debug)]
struct DbArgs {
    /// TOML configuration file (for `data_dir` and the `[auth]` rules).
    #[arg(long, env = "TETHER_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory holding `tether.db` [default: the config's `data_dir`, or ./tether-data].
    #[arg(long, env = "TETHER_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Creates a user; the password is the first line of stdin.
    ///
    /// The password is never an argument, which would show in `ps` and shell history:
    /// `printf '%s\n' "$PW" | tether user add NAME`. Name and password follow the rules of
    /// `[auth.accounts]`, with the server's messages. An email is optional here even when
    /// `require_email` is set (that rule is for self-service registration) but must be
    /// valid when given.
    Add {
        /// User name.
        name: String,
        /// Email address.
        #[arg(long)]
        email: Option<String>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Lists users: id, name, email (`-` if none), created (RFC 3339 UTC), tab-separated.
    List {
        /// Print a JSON array instead.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Sets a user's password (first line of stdin) and revokes all their sessions.
    ///
    /// A running server on the same data directory refuses the revoked session tokens at
    /// once, and closes live connections holding them within `auth.session_check_ms`
    /// (default 10 s), when it next checks its live sessions against the database.
    Passwd {
        /// User name.
        name: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Deletes a user and all their sessions.
    ///
    /// Live connections of a running server holding those sessions are closed within
    /// `auth.session_check_ms` (default 10 s).
    Remove {
        /// User name.
        name: String,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Subcommand, Debug)]
enum ApikeyCommand {
    /// Creates an API key and prints it, once.
    ///
    /// Only the key's hash is stored, so it cannot be shown again. The key alone goes to
    /// stdout (`KEY=$(tether apikey create)`), the note to stderr. A running server accepts
    /// the key at once.
    Create {
        /// A label, shown by `apikey list`.
        #[arg(long, default_value = "")]
        name: String,
        /// Limit the key to channels matching this pattern, e.g. `chat:*` (repeatable;
        /// none: every channel).
        #[arg(long = "channel", value_name = "PATTERN")]
        channels: Vec<String>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Lists API keys: id, name, channels, created (RFC 3339 UTC). Never the keys themselves.
    List {
        /// Print a JSON array instead.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Revokes an API key by its id (from `apikey list`).
    ///
    /// A running server refuses the key from its next request.
    Revoke {
        /// The key's id.
        id: String,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Mints a development JWT and prints only the token.
    ///
    /// Signed with the `[auth.jwt]` key of the configuration (`hmac_secret`, or
    /// `private_key_file` for asymmetric algorithms), with `iss`/`aud` from it, `iat` now
    /// and `exp` now + `--ttl`. For development and tests: production tokens come from your
    /// application's backend.
    Mint(MintArgs),
}

#[derive(clap::Args, Debug)]
struct MintArgs {
    /// TOML configuration file with an `[auth.jwt]` section.
    #[arg(long, env = "TETHER_CONFIG")]
    config: Option<PathBuf>,
    /// User id (`sub`).
    #[arg(long)]
    user: String,
    /// Lifetime: `3600s`, `30m`, `1h`, `7d` (a bare number is seconds).
    #[arg(long, default_value = "1h")]
    ttl: String,
    /// Channel grant, a name or pattern such as `chat:*` (repeatable).
    #[arg(long = "channel", value_name = "PATTERN")]
    channels: Vec<String>,
    /// The `info` claim, as JSON.
    #[arg(long)]
    info: Option<String>,
    /// The `device` claim.
    #[arg(long)]
    device: Option<String>,
    /// The `zone` claim.
    #[arg(long)]
    zone: Option<String>,
    /// Signing algorithm [default: the first of `auth.jwt.algorithms`].
    #[arg(long)]
    algorithm: Option<String>,
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
        Command::User(cmd) => user(cmd),
        Command::Apikey(cmd) => apikey(cmd),
        Command::Token(TokenCommand::Mint(args)) => mint(args),
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
    let filter = tracing_subscriber::EnvFilter::try_new(tether_server::config::effective_log_filter(level))
        .unwrap_or_else(|_| "info".into());
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
    // The directory holds the database (password hashes) and the generated API key: only
    // the server's user may enter it. An existing directory keeps its mode.
    let mut dir = std::fs::DirBuilder::new();
    dir.recursive(true);
    std::os::unix::fs::DirBuilderExt::mode(&mut dir, 0o700);
    dir.create(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    // Only scoped keys configured: no unrestricted key is generated behind the operator's back.
    let keys = if config.api_keys.is_empty() && !config.scoped_api_keys.is_empty() {
        tether_server::keys::Resolved { keys: std::collections::HashSet::new(), generated: None }
    } else {
        tether_server::keys::resolve(&config.api_keys, &config.data_dir)?
    };
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
        let listener = tether_server::app::bind_listener(config.listen)
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

/// The configuration of `db` (`--data-dir` wins over the file's `data_dir`).
fn load_config(config: Option<&std::path::Path>, data_dir: Option<PathBuf>) -> anyhow::Result<Config> {
    let mut config = match config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if let Some(d) = data_dir {
        config.data_dir = d;
    }
    Ok(config)
}

/// Opens the store of `db` and runs `f` on a runtime.
fn with_admin<T>(
    db: DbArgs,
    mode: OpenMode,
    f: impl AsyncFnOnce(&Admin, &Config) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let config = load_config(db.config.as_deref(), db.data_dir)?;
    let admin = Admin::open(&config, mode)?;
    if let Some(path) = &admin.created_database {
        eprintln!("note: created a new database at {}", path.display());
    }
    runtime()?.block_on(f(&admin, &config))
}

/// Reads a password from stdin, prompting on stderr when stdin is a terminal.
fn password_from_stdin(prompt: &str) -> anyhow::Result<String> {
    use std::io::IsTerminal as _;
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("{prompt} (one line; it is echoed, so prefer piping it in): ");
    }
    tether_server::admin::read_password(stdin.lock())
}

fn plural(n: usize, one: &str) -> String {
    if n == 1 { format!("1 {one}") } else { format!("{n} {one}s") }
}

fn user(cmd: UserCommand) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Add { name, email, db } => with_admin(db, OpenMode::Create, async |admin, config| {
            admin.check_username(&name)?;
            admin.check_email(email.as_deref())?;
            admin.ensure_free(&name).await?;
            let password = password_from_stdin(&format!("Password for {name}"))?;
            admin.add_user(&name, email.as_deref(), &password).await?;
            println!("created user {name}");
            if !config.auth.accounts.enabled {
                eprintln!(
                    "note: auth.accounts.enabled is false in this configuration: the server refuses logins"
                );
            }
            Ok(())
        }),
        UserCommand::List { json, db } => with_admin(db, OpenMode::Existing, async |admin, _| {
            let users = admin.list_users().await?;
            if json {
                println!("{}", serde_json::to_string(&users)?);
            } else {
                for u in users {
                    println!("{}\t{}\t{}\t{}", u.id, u.name, u.email.as_deref().unwrap_or("-"), u.created);
                }
            }
            Ok(())
        }),
        UserCommand::Passwd { name, db } => with_admin(db, OpenMode::Existing, async |admin, _| {
            let user = admin.user(&name).await?;
            let password = password_from_stdin(&format!("New password for {}", user.name))?;
            let revoked = admin.set_password(&user.name, &password).await?;
            println!("changed the password of {}; revoked {}", user.name, plural(revoked, "session"));
            Ok(())
        }),
        UserCommand::Remove { name, db } => with_admin(db, OpenMode::Existing, async |admin, _| {
            let user = admin.user(&name).await?;
            let revoked = admin.remove_user(&user.name).await?;
            println!("removed user {}; revoked {}", user.name, plural(revoked, "session"));
            Ok(())
        }),
    }
}

fn apikey(cmd: ApikeyCommand) -> anyhow::Result<()> {
    match cmd {
        ApikeyCommand::Create { name, channels, db } => with_admin(db, OpenMode::Create, async |admin, _| {
            let created = admin.create_api_key(&name, &channels).await?;
            println!("{}", created.key);
            let scope = if channels.is_empty() { "every channel".to_owned() } else { channels.join(", ") };
            eprintln!(
                "created API key {} for {scope}. This is the only time the key is shown: \
                 only its hash is stored, so it cannot be shown again.",
                created.id
            );
            Ok(())
        }),
        ApikeyCommand::List { json, db } => with_admin(db, OpenMode::Existing, async |admin, _| {
            let keys = admin.list_api_keys().await?;
            if json {
                println!("{}", serde_json::to_string(&keys)?);
            } else {
                for k in keys {
                    let name = if k.name.is_empty() { "-" } else { &k.name };
                    let channels = if k.channels.is_empty() {
                        "(every channel)".to_owned()
                    } else {
                        k.channels.join(",")
                    };
                    println!("{}\t{name}\t{channels}\t{}", k.id, k.created);
                }
            }
            Ok(())
        }),
        ApikeyCommand::Revoke { id, db } => with_admin(db, OpenMode::Existing, async |admin, _| {
            admin.revoke_api_key(&id).await?;
            println!("revoked API key {id}");
            Ok(())
        }),
    }
}

fn mint(args: MintArgs) -> anyhow::Result<()> {
    let config = load_config(args.config.as_deref(), None)?;
    let req = MintRequest {
        user: args.user,
        ttl_s: tether_server::admin::parse_ttl(&args.ttl).map_err(|e| anyhow::anyhow!("--ttl {e}"))?,
        channels: args.channels,
        info: args.info,
        device: args.device,
        zone: args.zone,
        algorithm: args.algorithm,
    };
    let token = tether_server::admin::mint_token(
        config.auth.jwt.as_ref(),
        &req,
        tether_server::Clock::system().now_s(),
    )?;
    println!("{token}");
    Ok(())
}
