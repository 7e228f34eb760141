//! The `tether` binary as an operator uses it: config checking, key generation, serving,
//! SIGTERM, and the `publish` / `subscribe` commands built on the Rust client.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_tether");

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("tether-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Kills the child if the test fails half way.
struct Guard(Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads a pipe line by line on a thread, so no read can block a test forever.
fn lines(pipe: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next line, or a panic after `WAIT`.
fn next_line(rx: &std::sync::mpsc::Receiver<String>) -> String {
    rx.recv_timeout(WAIT).expect("a line within WAIT")
}

/// Waits for the child to exit, or panics after `WAIT`.
fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    for _ in 0..1000 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("child did not exit");
}

async fn wait_healthy(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("server did not start");
}

#[test]
fn check_config_reports_file_line_and_key() {
    let dir = temp_dir("check");
    let good = dir.join("good.toml");
    std::fs::write(&good, "listen = \"127.0.0.1:9\"\n[namespaces.chat]\npublish = \"anyone\"\n").unwrap();
    let out = Command::new(BIN).arg("check-config").arg(&good).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "listen = \"127.0.0.1:9\"\n\n[websocket]\nping_intervall_ms = 5\n").unwrap();
    let out = Command::new(BIN).arg("check-config").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:4:1"), "{err}");
    assert!(err.contains("ping_intervall_ms"), "{err}");
}

#[tokio::test]
async fn first_start_generates_and_prints_a_key_once_then_sigterm_closes_with_1001() {
    let dir = temp_dir("serve");
    let port = free_port();
    let spawn = || {
        Command::new(BIN)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env_remove("TETHER_API_KEYS")
            .env("TETHER_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut child = Guard(spawn());
    let out = lines(child.0.stdout.take().unwrap());
    let printed: String = (0..3).map(|_| next_line(&out) + "\n").collect();
    let key = std::fs::read_to_string(dir.join("data/api-key")).unwrap().trim().to_owned();
    assert_eq!(key.len(), 64);
    assert!(printed.contains(&key), "{printed}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("data/api-key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    wait_healthy(port).await;

    // The generated key works; a WebSocket subscriber sees the SIGTERM as 1001.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws")).await.unwrap();
    futures_util::SinkExt::send(&mut ws, Message::Text(r#"{"id":1,"op":"connect"}"#.into())).await.unwrap();
    let _connected = ws.next().await.unwrap().unwrap();
    let status = Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status().unwrap();
    assert!(status.success());
    let code = loop {
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(Message::Close(f))) => break f.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(code, Some(1001));
    drop(ws);
    let exit = tokio::task::spawn_blocking(move || wait_exit(&mut child.0)).await.unwrap();
    assert!(exit.success(), "{exit:?}");

    // Second start: the key is read back, not printed again.
    let mut child = Guard(spawn());
    let out = lines(child.0.stdout.take().unwrap());
    wait_healthy(port).await;
    let _ = Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status();
    let exit = tokio::task::spawn_blocking(move || wait_exit(&mut child.0)).await.unwrap();
    assert!(exit.success(), "{exit:?}");
    let rest: Vec<String> = out.try_iter().collect();
    assert!(!rest.iter().any(|l| l.contains(&key)), "key printed again: {rest:?}");
}

// The server runs in this test's runtime, so every blocking pipe read happens on the
// blocking pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_subscribe_commands_round_trip() {
    let server = start(config()).await;
    let url = format!("http://{}", server.addr);
    let mut sub = Guard(
        Command::new(BIN)
            .args(["subscribe", "news", "--filter", "kind=a", "--url", &url])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let err = lines(sub.0.stderr.take().unwrap());
    let out = lines(sub.0.stdout.take().unwrap());
    let line = tokio::task::spawn_blocking(move || next_line(&err)).await.unwrap();
    assert!(line.contains("subscribed to news"), "{line}");
    let publish = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || Command::new(BIN).arg("publish").args(args).output().unwrap())
    };
    for (data, kind) in [(r#"{"n":1}"#, "b"), (r#"{"n":2}"#, "a")] {
        let args = ["news", data, "--tag", &format!("kind={kind}"), "--url", &url, "--api-key", API_KEY];
        let out = publish(args.iter().map(|s| (*s).to_owned()).collect()).await.unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let got = tokio::task::spawn_blocking(move || next_line(&out)).await.unwrap();
    assert_eq!(got.trim(), r#"{"n":2}"#, "only the publication matching the filter");
    let args = ["news", "x", "--url", &url, "--api-key", "wrong-key-0123456789"];
    let out = publish(args.iter().map(|s| (*s).to_owned()).collect()).await.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unauthenticated"), "{out:?}");
}

// ---------------------------------------------------------------------------------------
// Administration commands: `user`, `apikey`, `token mint`, against the real database file
// and a real server on the same data directory.

const PW: &str = "Str0ng!pass";
const JWT_SECRET: &str = "cli-test-hmac-secret-0123456789-abcdefgh";

/// A `tether` command with no `TETHER_*` variable inherited from the environment.
fn tether_cmd() -> Command {
    let mut c = Command::new(BIN);
    for v in [
        "TETHER_CONFIG",
        "TETHER_DATA_DIR",
        "TETHER_LISTEN",
        "TETHER_API_KEYS",
        "TETHER_LOG",
        "TETHER_LOG_FORMAT",
        "TETHER_URL",
        "TETHER_TOKEN",
        "TETHER_API_KEY",
    ] {
        c.env_remove(v);
    }
    c
}

/// What a finished command printed.
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {:?}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

impl Out {
    #[track_caller]
    fn ok(self) -> Self {
        assert_eq!(self.code, Some(0), "{self:?}");
        self
    }

    /// Exit code 1 with `needle` in stderr.
    #[track_caller]
    fn fails_with(self, needle: &str) -> Self {
        assert_eq!(self.code, Some(1), "{self:?}");
        assert!(self.stderr.contains(needle), "expected {needle:?} in stderr: {self:?}");
        self
    }
}

/// Runs `tether ARGS` with `stdin` (closed right after), on the blocking pool so an
/// in-process server keeps running; killed and failed after `WAIT`.
async fn tether<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S], stdin: &str) -> Out {
    let mut child = tether_cmd()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let input = stdin.to_owned();
    let run = tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        // A command that fails before reading stdin closes it: ignore the broken pipe.
        let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
        child.wait_with_output().unwrap()
    });
    let Ok(out) = tokio::time::timeout(WAIT, run).await else {
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        panic!("tether {args:?} did not finish within WAIT");
    };
    let out = out.unwrap();
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Writes `tether.toml` into `dir`: cheap Argon2, a `chat` namespace, a fast session
/// sweep, and `extra`. Returns its path.
fn write_config(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("tether.toml");
    let text = format!(
        "[auth]\nsession_check_ms = 100\n[auth.argon2]\nmemory_kib = 256\niterations = 1\n\
         [namespaces.chat]\npublish = \"anyone\"\n{extra}"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// An in-process server with the configuration file and data directory the CLI uses.
async fn start_on(config_file: &std::path::Path, data_dir: &std::path::Path) -> tether_server::RunningServer {
    let mut config = tether_server::Config::load(config_file).unwrap();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.data_dir = data_dir.to_owned();
    start(config).await
}

/// One HTTP request to `addr`; returns status and body.
async fn http_at(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: &str,
) -> (u16, String) {
    use http_body_util::{BodyExt, Full};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    // No idle keep-alive connection is left for a graceful shutdown to wait for.
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("connection", "close");
    if let Some(b) = bearer {
        req = req.header("authorization", format!("Bearer {b}"));
    }
    if !body.is_empty() {
        req = req.header("content-type", "application/json");
    }
    let req = req.body(Full::new(bytes::Bytes::from(body.to_owned()))).unwrap();
    let resp = tokio::time::timeout(WAIT, client.request(req)).await.expect("reply within WAIT").unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

fn login_body(name: &str, password: &str) -> String {
    serde_json::json!({"name": name, "password": password}).to_string()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Opens `/ws` on `addr` and sends `connect` with `token`; returns the socket and reply.
async fn ws_connect(addr: std::net::SocketAddr, token: &str) -> (Ws, serde_json::Value) {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await.unwrap();
    let hello = serde_json::json!({"id": 1, "op": "connect", "token": token}).to_string();
    send(&mut ws, &hello).await;
    let reply = recv_json(&mut ws).await;
    (ws, reply)
}

fn owned(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test]
async fn serve_without_a_config_file_creates_the_embedded_store() {
    let dir = temp_dir("store");
    let data = dir.join("data");
    let port = free_port();
    let mut child = Guard(
        tether_cmd()
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir", s(&data)])
            .env("TETHER_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_healthy(port).await;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(http_at(addr, "GET", "/healthz", None, "").await.0, 200);
    assert!(data.join("tether.db").is_file(), "the database is created with no configuration");
    // Regression: the data directory (password hashes, the generated key) is private.
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&data).unwrap().permissions().mode() & 0o777, 0o700);
    assert!(data.join("api-key").is_file(), "no key configured: one is generated");
    let status = Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || wait_exit(&mut child.0)).await.unwrap();
    assert!(exit.success(), "{exit:?}");
}

// Regression: with only scoped keys configured, no unrestricted key was generated behind
// the operator's back.
#[tokio::test]
async fn only_scoped_keys_configured_generates_no_unrestricted_key() {
    let dir = temp_dir("scoped-only");
    let data = dir.join("data");
    let cfg = write_config(&dir, "");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let text =
        format!("[[scoped_api_keys]]\nkey = \"scoped-only-key-0123456789\"\nchannels = [\"chat:*\"]\n{text}");
    std::fs::write(&cfg, text).unwrap();
    let port = free_port();
    let mut child = Guard(
        tether_cmd()
            .args([
                "serve",
                "--config",
                s(&cfg),
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
                s(&data),
            ])
            .env("TETHER_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_healthy(port).await;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let body = r#"{"channel":"chat:a","data":1}"#;
    assert_eq!(http_at(addr, "POST", "/api/publish", Some("scoped-only-key-0123456789"), body).await.0, 200);
    assert!(!data.join("api-key").exists(), "no unrestricted key may be generated");
    let status = Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || wait_exit(&mut child.0)).await.unwrap();
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_add_list_passwd_remove_round_trip_with_a_running_server() {
    let dir = temp_dir("users");
    let data = dir.join("data");
    // `require_email` is on (the default): it binds self-service registration, not admins.
    let cfg = write_config(&dir, "");
    let db = ["--config", s(&cfg), "--data-dir", s(&data)];
    let user = |args: &[&str]| owned(&[&["user"], args, &db[..]].concat());

    // Reading commands never create a database a mistyped --data-dir would point at.
    tether(&user(&["list"]), "").await.fails_with("no database at");
    assert!(!data.join("tether.db").exists());

    let out = tether(&user(&["add", "alice"]), &format!("{PW}\n")).await.ok();
    assert_eq!(out.stdout, "created user alice\n");
    assert!(out.stderr.contains("created a new database"), "{out:?}");
    tether(&user(&["add", "ALICE"]), &format!("{PW}\n")).await.fails_with("already exists");
    // The configured rules, with the server's messages; the password is never echoed.
    let out = tether(&user(&["add", "bob"]), "ab1!\n")
        .await
        .fails_with("Password must be between 6 and 60 characters long.");
    assert!(!out.stderr.contains("ab1!"), "{out:?}");
    tether(&user(&["add", "bob"]), "abcdefg1\n")
        .await
        .fails_with("Password must contain letters and at least one special character and one number.");
    tether(&user(&["add", "b b"]), &format!("{PW}\n"))
        .await
        .fails_with("Usernames may contain letters, special characters and numbers.");
    tether(&user(&["add", "bob", "--email", "nope"]), &format!("{PW}\n"))
        .await
        .fails_with("Email address is invalid.");
    tether(&user(&["add", "bob"]), "").await.fails_with("no password on stdin");
    // CRLF line endings are stripped too.
    let out = tether(&user(&["add", "bob", "--email", "bob@example.com"]), "Bob12!pw\r\n").await.ok();
    assert_eq!(out.stdout, "created user bob\n");

    let out = tether(&user(&["list"]), "").await.ok();
    let rows: Vec<Vec<&str>> = out.stdout.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), 2, "{out:?}");
    assert_eq!(rows[0][..3], ["1", "alice", "-"]);
    assert_eq!(rows[1][..3], ["2", "bob", "bob@example.com"]);
    for r in &rows {
        assert!(r[3].len() == 24 && r[3].ends_with('Z') && r[3].as_bytes()[10] == b'T', "{r:?}");
    }
    let list = json(&tether(&user(&["list", "--json"]), "").await.ok().stdout);
    assert_eq!(list[0]["name"], "alice");
    assert_eq!(list[0]["email"], serde_json::Value::Null);
    assert_eq!(list[1]["email"], "bob@example.com");
    assert_eq!(list[1]["created"], rows[1][3]);
    assert!(!out.stdout.contains("argon2") && !list.to_string().contains("argon2"), "no hashes");

    // A real server on the same data directory accepts the passwords set by the CLI.
    let server = start_on(&cfg, &data).await;
    let addr = server.addr;
    let (st, body) = http_at(addr, "POST", "/auth/login", None, &login_body("alice", PW)).await;
    assert_eq!(st, 200, "{body}");
    let alice_token = json(&body)["token"].as_str().unwrap().to_owned();
    let (st, body) = http_at(addr, "POST", "/auth/login", None, &login_body("bob", "Bob12!pw")).await;
    assert_eq!(st, 200, "{body}");
    let bob_token = json(&body)["token"].as_str().unwrap().to_owned();
    let (mut live, reply) = ws_connect(addr, &alice_token).await;
    assert_eq!(reply["result"]["user"], "alice", "{reply}");

    // passwd: rules apply; every session is revoked, the live one within the sweep.
    tether(&user(&["passwd", "alice"]), "short\n").await.fails_with("Password must be between");
    tether(&user(&["passwd", "nobody"]), "New0ne!pw\n").await.fails_with("there is no user named 'nobody'");
    let out = tether(&user(&["passwd", "alice"]), "New0ne!pw\n").await.ok();
    assert_eq!(out.stdout, "changed the password of alice; revoked 1 session\n");
    assert_eq!(http_at(addr, "POST", "/auth/login", None, &login_body("alice", PW)).await.0, 401);
    assert_eq!(http_at(addr, "POST", "/auth/login", None, &login_body("alice", "New0ne!pw")).await.0, 200);
    // Another process changed the database: the server sees it within auth.session_cache_ms.
    revoked_soon(addr, &alice_token).await;
    let push = recv_push(&mut live, "logged_out").await;
    assert_eq!(push["reason"], "logged_out", "{push}");

    // remove: the user and their sessions are gone.
    assert_eq!(http_at(addr, "GET", "/auth/me", Some(&bob_token), "").await.0, 200);
    let out = tether(&user(&["remove", "BOB"]), "").await.ok();
    assert_eq!(out.stdout, "removed user bob; revoked 1 session\n");
    revoked_soon(addr, &bob_token).await;
    assert_eq!(http_at(addr, "POST", "/auth/login", None, &login_body("bob", "Bob12!pw")).await.0, 401);
    tether(&user(&["remove", "bob"]), "").await.fails_with("there is no user named 'bob'");
    let out = tether(&user(&["list"]), "").await.ok();
    assert_eq!(out.stdout.lines().count(), 1, "{out:?}");
    live.close(None).await.unwrap();
    server.shutdown().await.unwrap();
}

/// Polls `/auth/me` until the token is refused: a revocation made by another process
/// reaches the server's session cache within `auth.session_cache_ms` (1 s by default). The
/// bound is a failure guard, not a measured time.
async fn revoked_soon(addr: std::net::SocketAddr, token: &str) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, _) = http_at(addr, "GET", "/auth/me", Some(token), "").await;
        if status == 401 {
            return;
        }
        assert_eq!(status, 200);
        assert!(tokio::time::Instant::now() < deadline, "token still accepted after 10 s");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apikey_create_list_revoke_against_a_running_server() {
    let dir = temp_dir("apikeys");
    let data = dir.join("data");
    let cfg = write_config(&dir, "");
    let server = start_on(&cfg, &data).await;
    let addr = server.addr;
    let db = ["--config", s(&cfg), "--data-dir", s(&data)];
    let apikey = |args: &[&str]| owned(&[&["apikey"], args, &db[..]].concat());
    let publish = |key: String, channel: &'static str| async move {
        let body = serde_json::json!({"channel": channel, "data": "x"}).to_string();
        http_at(addr, "POST", "/api/publish", Some(&key), &body).await
    };

    let out = tether(&apikey(&["create", "--name", "backend"]), "").await.ok();
    let all_key = out.stdout.trim().to_owned();
    assert_eq!(out.stdout.lines().count(), 1, "only the key on stdout: {out:?}");
    assert!(all_key.starts_with("tak_"), "{out:?}");
    assert!(out.stderr.contains("cannot be shown again"), "{out:?}");
    let out = tether(&apikey(&["create", "--name", "chat bot", "--channel", "chat:*"]), "").await.ok();
    let chat_key = out.stdout.trim().to_owned();
    tether(&apikey(&["create", "--channel", "bad chan"]), "").await.fails_with("--channel 'bad chan'");

    // Accepted by the running server at once, within the key's channels.
    assert_eq!(publish(all_key.clone(), "news").await.0, 200);
    let (st, body) = publish(chat_key.clone(), "news").await;
    assert_eq!((st, json(&body)["code"].as_str()), (403, Some("channel_not_allowed")), "{body}");
    assert_eq!(publish(chat_key.clone(), "chat:x").await.0, 200);

    // list: ids, names, channels; never the secret.
    let id_of = |key: &str| key["tak_".len()..].split_once('_').unwrap().0.to_owned();
    let (all_id, chat_id) = (id_of(&all_key), id_of(&chat_key));
    let text = tether(&apikey(&["list"]), "").await.ok().stdout;
    let js = tether(&apikey(&["list", "--json"]), "").await.ok().stdout;
    assert!(text.contains(&format!("{all_id}\tbackend\t(every channel)\t")), "{text}");
    assert!(text.contains(&format!("{chat_id}\tchat bot\tchat:*\t")), "{text}");
    let list = json(&js);
    assert_eq!(list[1]["id"], chat_id.as_str());
    assert_eq!(list[1]["channels"], serde_json::json!(["chat:*"]));
    for key in [&all_key, &chat_key] {
        // `tak_<id>_<secret>`: the id is alphanumeric, the secret base64url (may hold `_`).
        let secret = key["tak_".len()..].split_once('_').unwrap().1;
        assert_eq!(secret.len(), 43, "{key}");
        for listing in [&text, &js] {
            assert!(!listing.contains(secret) && !listing.contains(key.as_str()), "{listing}");
        }
    }

    // revoke: refused from the next request on.
    let out = tether(&apikey(&["revoke", &all_id]), "").await.ok();
    assert_eq!(out.stdout, format!("revoked API key {all_id}\n"));
    assert_eq!(publish(all_key.clone(), "news").await.0, 401);
    assert_eq!(publish(chat_key.clone(), "chat:x").await.0, 200, "the other key still works");
    tether(&apikey(&["revoke", &all_id]), "").await.fails_with("there is no API key");
    // A whole key passed by mistake is refused without being echoed.
    let out = tether(&apikey(&["revoke", &chat_key]), "").await.fails_with("not the key itself");
    assert!(!out.stderr.contains(&chat_key), "{out:?}");
    assert_eq!(publish(chat_key.clone(), "chat:x").await.0, 200);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_mint_makes_a_jwt_the_server_accepts() {
    let dir = temp_dir("mint");
    let jwt = format!("[auth.jwt]\nalgorithms = [\"HS256\"]\nhmac_secret = \"{JWT_SECRET}\"\n");
    let cfg = write_config(&dir, &jwt);
    let mint = |extra: &[&str]| owned(&[&["token", "mint", "--config", s(&cfg)], extra].concat());

    let args =
        ["--user", "sub-7", "--ttl", "30m", "--channel", "chat:*", "--device", "d1", "--info", "{\"n\":1}"];
    let out = tether(&mint(&args), "").await.ok();
    assert_eq!(out.stdout.lines().count(), 1, "only the token: {out:?}");
    let token = out.stdout.trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "{token}");

    let server = start_on(&cfg, &dir.join("data")).await;
    let (mut ws, reply) = ws_connect(server.addr, &token).await;
    assert_eq!(reply["result"]["user"], "sub-7", "{reply}");
    let (st, me) = http_at(server.addr, "GET", "/auth/me", Some(&token), "").await;
    assert_eq!(
        (st, json(&me)["kind"].as_str(), json(&me)["device"].as_str()),
        (200, Some("jwt"), Some("d1"))
    );
    ws.close(None).await.unwrap();
    server.shutdown().await.unwrap();

    tether(&mint(&["--user", "u", "--ttl", "0s"]), "").await.fails_with("above 0");
    tether(&mint(&["--user", "u", "--info", "{nope"]), "").await.fails_with("--info is not valid JSON");
    tether(&mint(&["--user", "u", "--channel", "a b"]), "").await.fails_with("--channel 'a b'");
    let out = tether(&mint(&["--user", "u", "--algorithm", "HS512"]), "").await.fails_with("HS512");
    assert!(!out.stderr.contains(JWT_SECRET), "{out:?}");

    // Without [auth.jwt]: a clear error.
    let plain = temp_dir("mint-plain");
    let cfg = write_config(&plain, "");
    tether(&["token", "mint", "--config", s(&cfg), "--user", "u"], "").await.fails_with("no [auth.jwt]");
    tether(&["token", "mint", "--user", "u"], "").await.fails_with("no [auth.jwt]");
}

/// Every way a secret could show up in a log line: as is, and hex-encoded the way frame
/// and buffer dumps print bytes.
fn leaks(log: &str, what: &str, secret: &str) -> Vec<String> {
    let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
    let spaced: String = secret.bytes().map(|b| format!("{b:02x} ")).collect();
    let mut found = Vec::new();
    for (form, needle) in
        [("plain", secret.to_owned()), ("hex", hex), ("spaced hex", spaced.trim_end().to_owned())]
    {
        if let Some(line) = log.lines().find(|l| l.contains(&needle)) {
            found.push(format!("{what} ({form}) in: {line}"));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_log_at_trace_level() {
    let dir = temp_dir("logs");
    let data = dir.join("data");
    let jwt = format!("[auth.jwt]\nalgorithms = [\"HS256\"]\nhmac_secret = \"{JWT_SECRET}\"\n");
    let cfg = write_config(&dir, &jwt);
    let db = ["--config", s(&cfg), "--data-dir", s(&data)];
    let api_key = tether(&[&["apikey", "create"], &db[..]].concat(), "").await.ok().stdout.trim().to_owned();
    let mint = ["token", "mint", "--config", s(&cfg), "--user", "jwt-user"];
    let jwt_token = tether(&mint, "").await.ok().stdout.trim().to_owned();

    let port = free_port();
    let log_path = dir.join("server.log");
    // Everything at trace. The WebSocket library would log every frame in full at trace
    // (socket passwords, `connect` tokens, session tokens in replies); the server caps its
    // targets at debug unless the filter names them (`config::effective_log_filter`), so
    // plain `trace` must be safe. Regression test for that leak.
    let level = "trace";
    let mut child = Guard(
        tether_cmd()
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--log-level", level])
            .args(db)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_healthy(port).await;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let generated_key = std::fs::read_to_string(data.join("api-key")).unwrap().trim().to_owned();

    // Register, a failed and a good login, /auth/me, refresh: over HTTP.
    let wrong = "Wr0ng!passw0rd";
    let reg = serde_json::json!({"name": "logcheck", "password": PW, "email": "log@example.com"});
    let (st, body) = http_at(addr, "POST", "/auth/register", None, &reg.to_string()).await;
    assert_eq!(st, 201, "{body}");
    let registered = json(&body)["token"].as_str().unwrap().to_owned();
    assert_eq!(http_at(addr, "POST", "/auth/login", None, &login_body("logcheck", wrong)).await.0, 401);
    let (st, body) = http_at(addr, "POST", "/auth/login", None, &login_body("logcheck", PW)).await;
    assert_eq!(st, 200, "{body}");
    let session = json(&body)["token"].as_str().unwrap().to_owned();
    assert_eq!(http_at(addr, "GET", "/auth/me", Some(&session), "").await.0, 200);
    let (st, body) = http_at(addr, "POST", "/auth/refresh", Some(&registered), "").await;
    assert_eq!(st, 200, "{body}");
    let refreshed = json(&body)["token"].as_str().unwrap().to_owned();

    // WebSocket: connect with the session token and with the JWT; log in over the socket.
    let (mut ws1, reply) = ws_connect(addr, &session).await;
    assert_eq!(reply["result"]["user"], "logcheck", "{reply}");
    let (mut ws2, reply) = ws_connect(addr, &jwt_token).await;
    assert_eq!(reply["result"]["user"], "jwt-user", "{reply}");
    let (mut ws3, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await.unwrap();
    let op = serde_json::json!({"id": 1, "op": "login", "name": "logcheck", "password": PW});
    send(&mut ws3, &op.to_string()).await;
    let reply = recv_json(&mut ws3).await;
    let socket_session =
        reply["result"]["session"]["token"].as_str().unwrap_or_else(|| panic!("{reply}")).to_owned();

    // Publish with the CLI-created key and with the generated one.
    for key in [&api_key, &generated_key] {
        let (st, body) =
            http_at(addr, "POST", "/api/publish", Some(key), r#"{"channel":"chat:a","data":1}"#).await;
        assert_eq!(st, 200, "{body}");
    }

    for ws in [&mut ws1, &mut ws2, &mut ws3] {
        ws.close(None).await.unwrap();
    }
    let _ = Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status();
    let exit = tokio::task::spawn_blocking(move || wait_exit(&mut child.0)).await.unwrap();
    assert!(exit.success(), "{exit:?}");
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("tether listening"), "the log was captured: {log}");
    assert!(log.contains("login failed"), "tether's debug lines are on: {log}");

    let mut secrets = vec![
        ("password", PW.to_owned()),
        ("wrong password", wrong.to_owned()),
        ("CLI API key", api_key.clone()),
        ("CLI API key secret", api_key["tak_".len()..].split_once('_').unwrap().1.to_owned()),
        ("generated API key", generated_key),
        ("JWT", jwt_token.clone()),
        ("JWT signature", jwt_token.rsplit_once('.').unwrap().1.to_owned()),
        ("HMAC secret", JWT_SECRET.to_owned()),
    ];
    for (what, t) in [
        ("registered session", registered),
        ("login session", session),
        ("refreshed session", refreshed),
        ("socket session", socket_session),
    ] {
        assert!(t.starts_with("tts_"), "{t}");
        secrets.push((what, t["tts_".len()..].to_owned()));
        secrets.push((what, t));
    }
    let found: Vec<String> = secrets.iter().flat_map(|(what, s)| leaks(&log, what, s)).collect();
    assert!(found.is_empty(), "secrets in the log ({} bytes):\n{}", log.len(), found.join("\n"));
}
