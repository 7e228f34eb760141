//! Targets (loopback only), an optionally spawned server, and `/proc` readings.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Where to connect.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// WebSocket address.
    pub(crate) ws: SocketAddr,
    /// `Host` header for the WebSocket handshake.
    pub(crate) ws_host: String,
    /// WebSocket path (`/ws`).
    pub(crate) ws_path: String,
    /// HTTP API address.
    pub(crate) api: SocketAddr,
    /// `Host` header for API requests.
    pub(crate) api_host: String,
    /// API key.
    pub(crate) key: String,
}

/// Splits `scheme://host:port/path` into a loopback socket address, host and path.
pub(crate) fn parse_url(url: &str, default_path: &str) -> anyhow::Result<(SocketAddr, String, String)> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (hostport, path) = match rest.find('/') {
        Some(i) if i + 1 < rest.len() => (&rest[..i], rest[i..].to_owned()),
        Some(i) => (&rest[..i], default_path.to_owned()),
        None => (rest, default_path.to_owned()),
    };
    let hostport = if hostport.contains(':') { hostport.to_owned() } else { format!("{hostport}:80") };
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&hostport)
        .with_context(|| format!("resolve {hostport}"))?
        .next()
        .with_context(|| format!("no address for {hostport}"))?;
    if !addr.ip().is_loopback() {
        bail!("{url}: the load generator only targets loopback addresses");
    }
    Ok((addr, hostport, path))
}

/// A server process this tool started; stopped when dropped.
#[derive(Debug)]
pub(crate) struct Spawned {
    child: Child,
    /// Its listen address.
    pub(crate) addr: SocketAddr,
    /// Its API key.
    pub(crate) key: String,
    dir: PathBuf,
}

impl Spawned {
    /// Process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the server has logged so far (stdout and stderr; `warn` and above).
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Bytes in the server's data directory (the embedded store's files).
    pub(crate) fn data_bytes(&self) -> u64 {
        std::fs::read_dir(self.dir.join("data"))
            .map(|d| d.filter_map(|e| e.ok()?.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum())
            .unwrap_or(0)
    }

    /// Starts `tether serve` with a generated config on a free loopback port. `extra_toml`
    /// is appended to the config (whole tables, such as `[auth.jwt]`); `prepare` is called
    /// with the data directory before the server starts (the `connect-storm` scenario writes
    /// sessions into its database there).
    pub(crate) fn start(
        binary: &Path,
        outbound_queue: usize,
        extra_toml: &str,
        prepare: &mut dyn FnMut(&Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let dir = std::env::temp_dir().join(format!("tether-bench-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let key = "bench-key-0123456789abcdef".to_owned();
        let config = format!(
            r#"listen = "{addr}"
data_dir = "{data}"
api_keys = ["{key}"]
[log]
level = "warn"
[limits]
max_connections = 100000
max_connections_per_ip = 100000
inbound_rate = 0
[websocket]
outbound_queue = {outbound_queue}
[shutdown]
drain_timeout_ms = 2000
[namespaces.bench]
publish = "anyone"
{extra_toml}"#,
            data = dir.join("data").display()
        );
        let cfg_path = dir.join("tether.toml");
        std::fs::write(&cfg_path, config)?;
        if let Err(e) = prepare(&dir.join("data")) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e.context("preparing the spawned server's data directory"));
        }
        let log = std::fs::File::create(dir.join("server.log"))?;
        let child = Command::new(binary)
            .arg("serve")
            .arg("--config")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        let mut me = Self { child, addr, key, dir };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            if let Some(st) = me.child.try_wait()? {
                let log = std::fs::read_to_string(me.dir.join("server.log")).unwrap_or_default();
                bail!("server exited with {st}:\n{log}");
            }
            if Instant::now() > deadline {
                bail!("server did not start listening on {addr} within 15 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("spawned {} (pid {}) on {addr}, config {}", binary.display(), me.pid(), cfg_path.display());
        Ok(me)
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        // SIGTERM for a graceful drain, then SIGKILL if it lingers.
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = std::fs::remove_dir_all(&self.dir);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A process's resident set size in KiB (`VmRSS` from `/proc/<pid>/status`).
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A process's user+system CPU time in clock ticks (assumed 100 Hz, Linux's `USER_HZ`).
pub(crate) fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields resume after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, utime field 14, stime field 15 → indexes 11 and 12.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Whole-machine busy and total jiffies from `/proc/stat`.
fn machine_ticks() -> Option<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let line = s.lines().next()?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let total: u64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// CPU use of the server, this process, and the whole machine over an interval.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuSample {
    at: Instant,
    server: Option<u64>,
    bench: Option<u64>,
    machine: Option<(u64, u64)>,
}

impl CpuSample {
    /// Samples now.
    pub(crate) fn now(server_pid: Option<u32>) -> Self {
        Self {
            at: Instant::now(),
            server: server_pid.and_then(cpu_ticks),
            bench: cpu_ticks(std::process::id()),
            machine: machine_ticks(),
        }
    }

    /// CPU percentages (100 = one core) since `self`: server, bench, and whole machine
    /// (busy share of all cores, 0–100 × cores).
    pub(crate) fn since(&self, server_pid: Option<u32>) -> serde_json::Value {
        let later = Self::now(server_pid);
        let secs = later.at.duration_since(self.at).as_secs_f64().max(1e-3);
        let pct = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(((b.saturating_sub(a)) as f64 / secs).round()),
            _ => None,
        };
        let machine = match (self.machine, later.machine) {
            (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
                Some(((b1 - b0) as f64 / (t1 - t0) as f64 * 100.0 * cores).round())
            }
            _ => None,
        };
        serde_json::json!({
            "server_pct": pct(self.server, later.server),
            "bench_pct": pct(self.bench, later.bench),
            "machine_pct": machine,
            "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
        })
    }
}

/// Fetches `/metrics` and returns the counters we report (`name` → value; labels dropped
/// and summed).
pub(crate) async fn fetch_metrics(
    api: SocketAddr,
    host: &str,
) -> Option<std::collections::BTreeMap<String, f64>> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(api).await.ok()?;
        let req = format!("GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut body = Vec::new();
        s.read_to_end(&mut body).await.ok()?;
        let text = String::from_utf8_lossy(&body).into_owned();
        let mut out = std::collections::BTreeMap::new();
        for line in text.lines() {
            if line.starts_with('#') || !line.starts_with("tether_") {
                continue;
            }
            let Some((name, value)) = line.rsplit_once(' ') else { continue };
            let name = name.split('{').next().unwrap_or(name);
            if name.ends_with("_bucket") {
                continue;
            }
            if let Ok(v) = value.parse::<f64>() {
                *out.entry(name.to_owned()).or_insert(0.0) += v;
            }
        }
        Some(out)
    };
    tokio::time::timeout(Duration::from_secs(5), fut).await.ok().flatten()
}
