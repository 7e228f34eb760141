//! The `auth-verify` scenario, and the setup the auth scenarios share: fresh signing keys,
//! pre-minted JWTs, and sessions written straight into a SQLite store.
//!
//! `auth-verify` runs in this process on one thread (a current-thread tokio runtime) and
//! times `Shared::auth.verify(token)`, the call the native `connect` makes, over many
//! distinct tokens cycled in order: JWTs of each requested algorithm, then session tokens
//! looked up by SHA-256 in a fresh SQLite file. It measures the verification path alone:
//! no sockets, no JSON framing, no other thread.
//!
//! Keys are generated for each run with `openssl genpkey` (RSA 2048, EC P-256/P-384,
//! Ed25519) in a scratch directory; the test fixtures of the server crate are never used.
//! Users and sessions are inserted through the `Store` trait with a placeholder password
//! hash and precomputed token digests, so setup runs no Argon2.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use jsonwebtoken::{Algorithm, AlgorithmFamily, EncodingKey, Header};
use serde_json::json;
use tether_server::auth::{Auth, token};
use tether_server::{Clock, Config};
use tether_store::{NewSession, NewUser, Store};
use tokio::time::Instant;

use crate::server::cpu_ticks;

/// The HS256 secret of the bench's spawned servers and in-process states (at least 32
/// bytes, as the server requires). A benchmark value, not a secret.
pub(crate) const BENCH_HMAC_SECRET: &str = "tether-bench-hs256-secret-0123456789abcdef";

/// Password hash stored for benchmark users. A well-formed Argon2id PHC string that no
/// password matches; session verification never reads it, and writing it costs no Argon2.
const PLACEHOLDER_PHC: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$dGV0aGVyLWJlbmNoLXNhbHQ$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// Lifetime of minted JWTs and created sessions: far longer than any run.
const CREDENTIAL_TTL_S: u64 = 6 * 3600;

/// Users and sessions written per batch of concurrent store calls during setup.
const SETUP_BATCH: usize = 256;

/// Unix time in seconds.
pub(crate) fn unix_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A scratch directory, removed when dropped.
#[derive(Debug)]
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    /// Creates `$TMPDIR/tether-bench-<what>-<pid>-<nanos>`.
    pub(crate) fn new(what: &str) -> anyhow::Result<Self> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!("tether-bench-{what}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        Ok(Self(dir))
    }

    /// Its path.
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A TOML basic string holding `s` (paths and secrets in generated configs).
pub(crate) fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Parses a JOSE algorithm name the server accepts (exact spelling: HS256 … EdDSA).
pub(crate) fn parse_algorithm(name: &str) -> anyhow::Result<Algorithm> {
    match Algorithm::from_str(name) {
        Ok(a) if format!("{a:?}") == name => Ok(a),
        _ => bail!(
            "unknown JWT algorithm {name:?}; expected HS256, HS384, HS512, RS256, RS384, RS512, \
             PS256, PS384, PS512, ES256, ES384 or EdDSA"
        ),
    }
}

/// A signing key and the `[auth.jwt]` table that makes a server accept its tokens.
#[derive(Debug)]
pub(crate) struct JwtSetup {
    /// The algorithm.
    pub(crate) alg: Algorithm,
    /// Private (or shared) key for minting.
    key: EncodingKey,
    /// The `[auth.jwt]` table.
    pub(crate) toml: String,
    /// What the key is, for reports.
    pub(crate) key_desc: String,
}

impl JwtSetup {
    /// HS* with `secret`; anything else with a key pair generated in `dir` by `openssl`.
    pub(crate) fn new(alg: Algorithm, secret: &str, dir: &Path) -> anyhow::Result<Self> {
        if alg.family() == AlgorithmFamily::Hmac {
            anyhow::ensure!(secret.len() >= 32, "the HMAC secret must be at least 32 bytes");
            return Ok(Self {
                alg,
                key: EncodingKey::from_secret(secret.as_bytes()),
                toml: format!("[auth.jwt]\nalgorithms = [\"{alg:?}\"]\nhmac_secret = {}\n", toml_str(secret)),
                key_desc: format!("shared secret ({} bytes)", secret.len()),
            });
        }
        let (genpkey, key_desc): (&[&str], _) = match alg {
            Algorithm::ES256 => (&["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"], "EC P-256"),
            Algorithm::ES384 => (&["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"], "EC P-384"),
            Algorithm::EdDSA => (&["-algorithm", "ED25519"], "Ed25519"),
            _ => (&["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"], "RSA 2048"),
        };
        let private = dir.join(format!("{alg:?}-private.pem"));
        let public = dir.join(format!("{alg:?}-public.pem"));
        openssl(&[&["genpkey"], genpkey, &["-out", path_str(&private)?]].concat())?;
        openssl(&["pkey", "-in", path_str(&private)?, "-pubout", "-out", path_str(&public)?])?;
        let pem = std::fs::read(&private)?;
        let key = match alg.family() {
            AlgorithmFamily::Rsa => EncodingKey::from_rsa_pem(&pem),
            AlgorithmFamily::Ec => EncodingKey::from_ec_pem(&pem),
            _ => EncodingKey::from_ed_pem(&pem),
        }
        .with_context(|| format!("loading the generated {key_desc} key"))?;
        let toml = format!(
            "[auth.jwt]\nalgorithms = [\"{alg:?}\"]\npublic_key_file = {}\n",
            toml_str(path_str(&public)?)
        );
        Ok(Self { alg, key, toml, key_desc: key_desc.to_owned() })
    }

    /// `n` distinct tokens (`sub` = `bench-user-<i>`, `iat` now, `exp` in six hours),
    /// signed on every core.
    pub(crate) fn mint(&self, n: usize) -> anyhow::Result<Vec<String>> {
        let iat = unix_s();
        let exp = iat + CREDENTIAL_TTL_S;
        let threads = std::thread::available_parallelism().map_or(1, |c| c.get()).clamp(1, 8);
        let per = n.div_ceil(threads).max(1);
        let header = Header::new(self.alg);
        let chunks: Vec<anyhow::Result<Vec<String>>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..n)
                .step_by(per)
                .map(|from| {
                    let header = &header;
                    s.spawn(move || {
                        (from..(from + per).min(n))
                            .map(|i| {
                                let claims =
                                    json!({"sub": format!("bench-user-{i}"), "iat": iat, "exp": exp});
                                jsonwebtoken::encode(header, &claims, &self.key)
                                    .map_err(|e| anyhow::anyhow!("signing a {:?} token: {e}", self.alg))
                            })
                            .collect()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("panic")))).collect()
        });
        let mut out = Vec::with_capacity(n);
        for c in chunks {
            out.extend(c?);
        }
        Ok(out)
    }
}

fn path_str(p: &Path) -> anyhow::Result<&str> {
    p.to_str().with_context(|| format!("{} is not UTF-8", p.display()))
}

fn openssl(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .context("running `openssl` (needed to generate the RS*/PS*/ES*/EdDSA keys; HS* needs nothing)")?;
    if !out.status.success() {
        bail!("openssl {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Creates `n` users (`benchuser<i>`, placeholder password hash) with one session each
/// and returns the session tokens. Writes go through the store's writer thread, each
/// durable (`synchronous=FULL`), issued `SETUP_BATCH` at a time.
pub(crate) async fn create_sessions(
    store: &dyn Store,
    n: usize,
    progress: bool,
) -> anyhow::Result<Vec<String>> {
    let now_ms = i64::try_from(unix_s()).unwrap_or(0) * 1000;
    let expires_ms = now_ms + i64::try_from(CREDENTIAL_TTL_S * 1000).unwrap_or(i64::MAX / 2);
    let t0 = Instant::now();
    let mut tokens = Vec::with_capacity(n);
    for from in (0..n).step_by(SETUP_BATCH) {
        let to = (from + SETUP_BATCH).min(n);
        let users = futures_util::future::join_all((from..to).map(|i| {
            store.create_user(NewUser {
                name: format!("benchuser{i}"),
                email: None,
                password_hash: PLACEHOLDER_PHC.to_owned(),
                created_ms: now_ms,
            })
        }))
        .await;
        let mut batch = Vec::with_capacity(to - from);
        for u in users {
            let user_id = u.context("creating a benchmark user (is the database fresh?)")?;
            batch.push((user_id, token::new_session_token()));
        }
        let sessions = futures_util::future::join_all(batch.iter().map(|(user_id, t)| {
            store.create_session(NewSession {
                user_id: *user_id,
                token_hash: token::hash(t),
                persistent: false,
                created_ms: now_ms,
                expires_ms,
            })
        }))
        .await;
        for s in sessions {
            s.context("creating a benchmark session")?;
        }
        tokens.extend(batch.into_iter().map(|(_, t)| t));
        if progress && (to % 2048 < SETUP_BATCH || to == n) {
            eprintln!("  {to}/{n} users and sessions written ({:.1} s)", t0.elapsed().as_secs_f64());
        }
    }
    Ok(tokens)
}

/// Shape of the `auth-verify` scenario.
#[derive(Debug, Clone)]
pub(crate) struct VerifyParams {
    /// JWT algorithms to measure, in order.
    pub(crate) algorithms: Vec<Algorithm>,
    /// Distinct JWTs per algorithm.
    pub(crate) tokens: usize,
    /// Users and sessions for the session-token measurement (0 skips it).
    pub(crate) sessions: usize,
    /// Length of one timed round.
    pub(crate) duration: Duration,
    /// Timed rounds per kind (the median is reported).
    pub(crate) rounds: usize,
    /// Print progress.
    pub(crate) progress: bool,
}

/// Builds the server state for a config made of `extra` (tables) over a data directory.
fn build_state(data_dir: &Path, extra: &str) -> anyhow::Result<tether_server::Shared> {
    let text = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = {}\n[log]\nlevel = \"warn\"\n{extra}",
        toml_str(path_str(data_dir)?)
    );
    let config = Config::from_toml(&text, Path::new("<auth-verify>")).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(tether_server::build_state(config, &HashSet::new(), Clock::system())?)
}

/// Runs `auth-verify`. Builds its own current-thread runtime: everything timed runs on
/// the calling thread.
pub(crate) fn run_verify(p: &VerifyParams) -> anyhow::Result<serde_json::Value> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let tmp = TempDir::new("auth-verify")?;
    let mut kinds = Vec::new();
    for (i, &alg) in p.algorithms.iter().enumerate() {
        let t0 = Instant::now();
        let setup = JwtSetup::new(alg, BENCH_HMAC_SECRET, tmp.path())?;
        let state = build_state(&tmp.path().join(format!("jwt{i}")), &setup.toml)?;
        let tokens = setup.mint(p.tokens)?;
        let setup_s = t0.elapsed().as_secs_f64();
        if p.progress {
            eprintln!(
                "{alg:?}: {} tokens of {} bytes minted in {:.1} s; timing",
                tokens.len(),
                tokens.first().map_or(0, String::len),
                t0.elapsed().as_secs_f64()
            );
        }
        let mut r = measure(&rt, &state.auth, &tokens, p)?;
        if let Some(o) = r.as_object_mut() {
            o.insert("kind".to_owned(), json!(format!("{alg:?} JWT")));
            o.insert("key".to_owned(), json!(&setup.key_desc));
            o.insert("token_bytes".to_owned(), json!(tokens.first().map_or(0, String::len)));
            o.insert("setup_s".to_owned(), json!(setup_s));
        }
        kinds.push(r);
    }
    if p.sessions > 0 {
        let t0 = Instant::now();
        // Strict: every verification is its own SQLite read transaction (no lookup cache,
        // no reused snapshot).
        let dir = tmp.path().join("sessions");
        let strict = build_state(&dir, "[auth]\nsession_cache_ms = 0\n")?;
        let tokens = rt.block_on(create_sessions(strict.auth.store().as_ref(), p.sessions, p.progress))?;
        let setup_s = t0.elapsed().as_secs_f64();
        if p.progress {
            eprintln!(
                "session tokens: {} users and sessions written in {setup_s:.1} s; timing",
                tokens.len()
            );
        }
        drop(strict);
        // Cold: the default staleness but no lookup cache, so every verification reads
        // SQLite (on a reused snapshot), as for tokens the server has not seen lately.
        // Warm: the default configuration, where tokens presented again within
        // `auth.session_cache_ms / 2` skip the database. Each reopens the same file.
        let rows = [
            ("[auth]\nsession_cache_ms = 0\n", "SHA-256 + SQLite lookup, strict (session_cache_ms = 0)"),
            ("[auth]\nsession_cache_entries = 0\n", "SHA-256 + SQLite lookup, cold (no lookup cache)"),
            ("", "SHA-256 + session cache, warm (default)"),
        ];
        for (toml, key) in rows {
            let state = build_state(&dir, toml)?;
            let mut r = measure(&rt, &state.auth, &tokens, p)?;
            if let Some(o) = r.as_object_mut() {
                o.insert("kind".to_owned(), json!("session token"));
                o.insert("key".to_owned(), json!(key));
                o.insert("token_bytes".to_owned(), json!(tokens.first().map_or(0, String::len)));
                o.insert("setup_s".to_owned(), json!(setup_s));
            }
            kinds.push(r);
        }
    }
    Ok(json!({
        "scenario": "auth-verify",
        "threads": 1,
        "tokens_per_jwt_kind": p.tokens,
        "sessions": p.sessions,
        "round_s": p.duration.as_secs_f64(),
        "rounds": p.rounds,
        "kinds": kinds,
    }))
}

/// One pass over every token (warm-up, and a check that all verify), then `rounds` timed
/// rounds cycling through them.
fn measure(
    rt: &tokio::runtime::Runtime,
    auth: &Auth,
    tokens: &[String],
    p: &VerifyParams,
) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(!tokens.is_empty(), "no tokens to verify");
    rt.block_on(async {
        let mut failures: BTreeMap<String, u64> = BTreeMap::new();
        let warm = Instant::now();
        for t in tokens {
            if let Err(e) = auth.verify(t).await {
                *failures.entry(e.to_string()).or_default() += 1;
            }
        }
        let warm_s = warm.elapsed().as_secs_f64();
        if failures.values().sum::<u64>() == tokens.len() as u64 {
            bail!("every token was rejected: {failures:?}");
        }
        let me = std::process::id();
        let mut rates = Vec::with_capacity(p.rounds);
        let mut cpu = Vec::with_capacity(p.rounds);
        let mut per_cpu = Vec::with_capacity(p.rounds);
        let mut errors = 0u64;
        let mut next = 0usize;
        for _ in 0..p.rounds.max(1) {
            let ticks0 = cpu_ticks(me);
            let t0 = Instant::now();
            let mut n = 0u64;
            loop {
                for _ in 0..256 {
                    let t = &tokens[next];
                    next = if next + 1 == tokens.len() { 0 } else { next + 1 };
                    match auth.verify(t).await {
                        Ok(v) => {
                            std::hint::black_box(&v);
                        }
                        Err(_) => errors += 1,
                    }
                    n += 1;
                }
                if t0.elapsed() >= p.duration {
                    break;
                }
            }
            let secs = t0.elapsed().as_secs_f64();
            rates.push(n as f64 / secs);
            if let (Some(a), Some(b)) = (ticks0, cpu_ticks(me)) {
                // Ticks are 10 ms; a 2 s round reads its CPU time to within 1 %.
                let cpu_s = (b.saturating_sub(a)) as f64 / 100.0;
                cpu.push((cpu_s / secs * 100.0).round());
                if cpu_s > 0.0 {
                    per_cpu.push(n as f64 / cpu_s);
                }
            }
        }
        let median = |v: &[f64]| {
            let mut s = v.to_vec();
            s.sort_by(f64::total_cmp);
            s.get(s.len() / 2).copied()
        };
        let median_rate = median(&rates).unwrap_or(0.0);
        Ok(json!({
            "tokens": tokens.len(),
            "warmup_ops_per_s": tokens.len() as f64 / warm_s,
            "warmup_failures": failures,
            "ops_per_s_rounds": rates.iter().map(|r| r.round()).collect::<Vec<_>>(),
            "ops_per_s": median_rate.round(),
            "us_per_op": 1e6 / median_rate,
            "errors": errors,
            "cpu_pct_rounds": cpu,
            // Verifications per second of CPU actually received: what one core does when the
            // thread is not preempted by other load on a shared machine.
            "ops_per_cpu_s_rounds": per_cpu.iter().map(|r| r.round()).collect::<Vec<_>>(),
            "ops_per_cpu_s": median(&per_cpu).map(f64::round),
        }))
    })
}

/// Human summary of an `auth-verify` report.
pub(crate) fn verify_summary(r: &serde_json::Value) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "== auth-verify (one thread; {} rounds of {} s each, median shown) ==",
        r["rounds"], r["round_s"]
    );
    let _ = writeln!(
        s,
        "{:<14} {:<24} {:>6} {:>5} {:>9} {:>8} {:>11}  {:<26} {:>4} {:>6}",
        "kind", "key", "tokens", "bytes", "ops/s", "µs/op", "ops/CPU-s", "ops/s per round", "err", "CPU %"
    );
    for k in r["kinds"].as_array().into_iter().flatten() {
        let list = |key: &str, sep: &str| {
            k[key]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| format!("{:.0}", v.as_f64().unwrap_or(0.0)))
                .collect::<Vec<_>>()
                .join(sep)
        };
        let _ = writeln!(
            s,
            "{:<14} {:<24} {:>6} {:>5} {:>9.0} {:>8.2} {:>11.0}  {:<26} {:>4} {:>6}",
            k["kind"].as_str().unwrap_or(""),
            k["key"].as_str().unwrap_or(""),
            k["tokens"].as_u64().unwrap_or(0),
            k["token_bytes"].as_u64().unwrap_or(0),
            k["ops_per_s"].as_f64().unwrap_or(0.0),
            k["us_per_op"].as_f64().unwrap_or(0.0),
            k["ops_per_cpu_s"].as_f64().unwrap_or(0.0),
            list("ops_per_s_rounds", " / "),
            k["errors"].as_u64().unwrap_or(0),
            list("cpu_pct_rounds", "/"),
        );
        if k["warmup_failures"].as_object().is_some_and(|m| !m.is_empty()) {
            let _ = writeln!(s, "  warm-up failures: {}", k["warmup_failures"]);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_str(r#"/tmp/a "b"\c"#), r#""/tmp/a \"b\"\\c""#);
        assert_eq!(toml_str("x\ny"), r#""x\u000Ay""#);
    }

    #[test]
    fn algorithm_names_are_exact() {
        assert!(matches!(parse_algorithm("HS256"), Ok(Algorithm::HS256)));
        assert!(matches!(parse_algorithm("EdDSA"), Ok(Algorithm::EdDSA)));
        assert!(parse_algorithm("hs256").is_err());
        assert!(parse_algorithm("none").is_err());
    }

    #[test]
    fn minted_hs256_tokens_verify_in_a_server_state() {
        let tmp = TempDir::new("test-mint").unwrap();
        let setup = JwtSetup::new(Algorithm::HS256, BENCH_HMAC_SECRET, tmp.path()).unwrap();
        let tokens = setup.mint(5).unwrap();
        assert_eq!(tokens.iter().collect::<HashSet<_>>().len(), 5);
        // The header the server's verifier recognises without parsing it.
        // `{"typ":"JWT","alg":"HS256"}`, base64url.
        assert!(tokens[0].starts_with("eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9."), "{}", tokens[0]);
        let state = build_state(&tmp.path().join("data"), &setup.toml).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        for t in &tokens {
            let v = rt.block_on(state.auth.verify(t)).unwrap();
            assert!(v.principal.identity.user.as_deref().unwrap().starts_with("bench-user-"));
        }
        let sessions = rt.block_on(create_sessions(state.auth.store().as_ref(), 3, false)).unwrap();
        for t in &sessions {
            assert_eq!(rt.block_on(state.auth.verify(t)).unwrap().principal.kind_str(), "session");
        }
    }
}
