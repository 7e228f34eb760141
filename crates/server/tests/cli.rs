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
