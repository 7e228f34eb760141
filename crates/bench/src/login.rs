//! The `login` scenario: `POST /auth/login` throughput, which Argon2 bounds.
//!
//! Registers one user over HTTP, then runs `concurrency` keep-alive connections, each
//! sending logins for that user back to back for `duration`. Every login verifies the
//! password with Argon2id on the server's blocking pool (at most one hash per core at once)
//! and writes a new session row. Before the load, the bench times the same Argon2id check
//! in its own process, one at a time, with the server's code (`password::Hasher`): the
//! expected ceiling is `cores / per-check time`. The spawned server gets the login rate
//! limits switched off and the Argon2 parameters written out explicitly.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde_json::json;
use tether_server::auth::password::Hasher;
use tether_server::config::Argon2Config;
use tokio::time::Instant;

use crate::http::HttpConn;
use crate::server::{CpuSample, Target};
use crate::track::{latency_json, latency_line, new_histogram};

/// The benchmark account (meets the default name, email and password rules).
const USER: &str = "benchlogin";
const PASSWORD: &str = "BenchPass1!";
const EMAIL: &str = "benchlogin@example.com";

/// Argon2 checks timed in this process for the expected ceiling, after
/// `CALIBRATION_WARMUP` untimed ones. On the 2-core KVM guest of `docs/benchmarks.md`
/// single checks vary from about 18 to 50 ms from one to the next, so the median gives the
/// ceiling; the fastest check, and the ceiling implied by the server's own CPU time per
/// login, are reported next to it.
const CALIBRATION_HASHES: usize = 20;
const CALIBRATION_WARMUP: usize = 2;

/// Shape of the scenario.
#[derive(Debug, Clone)]
pub(crate) struct Params {
    /// Connections, each with one login in flight.
    pub(crate) concurrency: usize,
    /// How long to send logins.
    pub(crate) duration: Duration,
    /// Argon2id memory, KiB.
    pub(crate) memory_kib: u32,
    /// Argon2id passes.
    pub(crate) iterations: u32,
    /// Argon2id lanes.
    pub(crate) parallelism: u32,
    /// Print progress.
    pub(crate) progress: bool,
}

impl Params {
    /// The `[auth…]` tables for a spawned server.
    pub(crate) fn server_toml(&self) -> String {
        format!(
            "[auth.argon2]\nmemory_kib = {}\niterations = {}\nparallelism = {}\n\
             [auth.rate_limits]\nlogin_per_ip_per_minute = 0\nlogin_per_user_per_minute = 0\n",
            self.memory_kib, self.iterations, self.parallelism
        )
    }
}

/// Times `CALIBRATION_HASHES` sequential password checks; returns them in milliseconds.
async fn calibrate(p: &Params) -> anyhow::Result<Vec<f64>> {
    let cfg = Argon2Config {
        memory_kib: p.memory_kib,
        iterations: p.iterations,
        parallelism: p.parallelism,
        max_concurrent: 1,
    };
    let hasher = tokio::task::spawn_blocking(move || Hasher::new(&cfg)).await??;
    let hash = hasher.hash(PASSWORD.to_owned()).await?;
    let mut ms = Vec::with_capacity(CALIBRATION_HASHES);
    for i in 0..CALIBRATION_WARMUP + CALIBRATION_HASHES {
        let t = Instant::now();
        let ok = hasher.verify(PASSWORD.to_owned(), Some(hash.clone())).await;
        if i >= CALIBRATION_WARMUP {
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        anyhow::ensure!(ok, "the calibration password did not verify");
    }
    Ok(ms)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(0.0)
}

/// Runs the scenario.
pub(crate) async fn run(
    target: &Target,
    p: Params,
    server_pid: Option<u32>,
) -> anyhow::Result<serde_json::Value> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if p.progress {
        eprintln!("timing {CALIBRATION_HASHES} Argon2id checks in the bench process, one at a time");
    }
    let hash_ms = calibrate(&p).await?;
    let per_hash_ms = median(&hash_ms);
    let fastest_ms = hash_ms.iter().copied().fold(f64::INFINITY, f64::min);
    let bound = cores as f64 * 1000.0 / per_hash_ms;
    if p.progress {
        eprintln!(
            "Argon2id check: median {per_hash_ms:.1} ms, fastest {fastest_ms:.1} ms -> ceiling \
             {bound:.1} logins/s on {cores} cores"
        );
    }

    let mut c = HttpConn::connect(target.api, &target.api_host, &target.key).await?;
    let reg = json!({"name": USER, "password": PASSWORD, "email": EMAIL}).to_string();
    let (status, body) = c.post_json("/auth/register", reg.as_bytes()).await?;
    let body = String::from_utf8_lossy(&body);
    anyhow::ensure!(
        status == 201 || body.contains("username_taken"),
        "register failed: HTTP {status}: {body}"
    );
    let login = json!({"name": USER, "password": PASSWORD}).to_string().into_bytes();
    let (status, body) = c.post_json("/auth/login", &login).await?;
    anyhow::ensure!(status == 200, "first login failed: HTTP {status}: {}", String::from_utf8_lossy(&body));
    drop(c);

    if p.progress {
        eprintln!("{} connections sending logins for {} s", p.concurrency, p.duration.as_secs());
    }
    let cpu0 = CpuSample::now(server_pid);
    let t0 = Instant::now();
    let deadline = t0 + p.duration;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..p.concurrency.max(1) {
        let (api, host, key, login) =
            (target.api, target.api_host.clone(), target.key.clone(), login.clone());
        workers.spawn(async move { worker(api, &host, &key, &login, deadline).await });
    }
    let mut h = new_histogram();
    let mut ok = 0u64;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    while let Some(r) = workers.join_next().await {
        let w = r.context("login worker")?;
        ok += w.ok;
        let _ = h.add(&w.latency);
        for (k, v) in w.errors {
            *errors.entry(k).or_default() += v;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu0.since(server_pid);
    let metrics = crate::server::fetch_metrics(target.api, &target.api_host).await;
    let rate = ok as f64 / secs;
    let server_cpu_ms_per_login =
        cpu["server_pct"].as_f64().filter(|_| ok > 0).map(|pct| pct / 100.0 * secs * 1000.0 / ok as f64);
    Ok(json!({
        "scenario": "login",
        "concurrency": p.concurrency,
        "duration_s": secs,
        "argon2": {"algorithm": "argon2id", "memory_kib": p.memory_kib, "iterations": p.iterations,
                   "parallelism": p.parallelism},
        "cores": cores,
        "argon2_check_ms_samples": hash_ms,
        "argon2_check_ms": per_hash_ms,
        "argon2_check_fastest_ms": fastest_ms,
        "expected_ceiling_per_s": bound,
        "ceiling_at_fastest_check_per_s": cores as f64 * 1000.0 / fastest_ms,
        "server_cpu_ms_per_login": server_cpu_ms_per_login,
        "ceiling_from_server_cpu_per_s": server_cpu_ms_per_login.map(|ms| cores as f64 * 1000.0 / ms),
        "logins": ok,
        "logins_per_s": rate,
        "share_of_ceiling": rate / bound,
        "errors": errors.values().sum::<u64>(),
        "error_kinds": errors,
        "latency": latency_json(&h),
        "_latency_line": latency_line(&h),
        "cpu": cpu,
        "server_metrics": metrics,
    }))
}

struct WorkerResult {
    ok: u64,
    latency: Histogram<u64>,
    errors: BTreeMap<String, u64>,
}

async fn worker(
    api: std::net::SocketAddr,
    host: &str,
    key: &str,
    login: &[u8],
    deadline: Instant,
) -> WorkerResult {
    let mut r = WorkerResult { ok: 0, latency: new_histogram(), errors: BTreeMap::new() };
    let mut conn: Option<HttpConn> = None;
    while Instant::now() < deadline {
        let c = match &mut conn {
            Some(c) => c,
            None => match HttpConn::connect(api, host, key).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    *r.errors.entry(format!("{e:#}")).or_default() += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let t = Instant::now();
        match tokio::time::timeout(Duration::from_secs(60), c.post_json("/auth/login", login)).await {
            Ok(Ok((200, _))) => {
                r.ok += 1;
                r.latency.saturating_record((t.elapsed().as_micros() as u64).max(1));
            }
            Ok(Ok((status, body))) => {
                let body = String::from_utf8_lossy(&body);
                *r.errors
                    .entry(format!("HTTP {status}: {}", body.chars().take(120).collect::<String>()))
                    .or_default() += 1;
            }
            Ok(Err(e)) => {
                *r.errors.entry(format!("{e:#}")).or_default() += 1;
                conn = None;
            }
            Err(_) => {
                *r.errors.entry("no answer within 60 s".to_owned()).or_default() += 1;
                conn = None;
            }
        }
    }
    r
}

/// Human summary of a `login` report.
pub(crate) fn summary(r: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let a = &r["argon2"];
    let _ = writeln!(s, "== login ==");
    let _ = writeln!(
        s,
        "argon2id         m={} KiB, t={}, p={}; one check here: median {:.1} ms, fastest {:.1} ms \
         (of {CALIBRATION_HASHES})",
        a["memory_kib"],
        a["iterations"],
        a["parallelism"],
        r["argon2_check_ms"].as_f64().unwrap_or(0.0),
        r["argon2_check_fastest_ms"].as_f64().unwrap_or(0.0),
    );
    let _ = writeln!(
        s,
        "ceiling          {} cores / median check = {:.1} logins/s ({:.1}/s at the fastest check)",
        r["cores"],
        r["expected_ceiling_per_s"].as_f64().unwrap_or(0.0),
        r["ceiling_at_fastest_check_per_s"].as_f64().unwrap_or(0.0),
    );
    let _ = writeln!(
        s,
        "logins           {} in {:.1} s = {:.1}/s ({:.0} % of the ceiling), {} errors, concurrency {}",
        r["logins"],
        r["duration_s"].as_f64().unwrap_or(0.0),
        r["logins_per_s"].as_f64().unwrap_or(0.0),
        r["share_of_ceiling"].as_f64().unwrap_or(0.0) * 100.0,
        r["errors"],
        r["concurrency"]
    );
    let _ = writeln!(s, "latency          {}", r["_latency_line"].as_str().unwrap_or(""));
    let _ = writeln!(
        s,
        "server CPU/login {:.1} ms -> {:.1} logins/s on {} cores",
        r["server_cpu_ms_per_login"].as_f64().unwrap_or(f64::NAN),
        r["ceiling_from_server_cpu_per_s"].as_f64().unwrap_or(f64::NAN),
        r["cores"]
    );
    let _ = writeln!(
        s,
        "CPU (100 = core) server {} / bench {} / machine {}",
        r["cpu"]["server_pct"], r["cpu"]["bench_pct"], r["cpu"]["machine_pct"]
    );
    if r["error_kinds"].as_object().is_some_and(|m| !m.is_empty()) {
        let _ = writeln!(s, "errors           {}", r["error_kinds"]);
    }
    s
}
