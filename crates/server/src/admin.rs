//! Administration from the command line: the work behind `tether user …`,
//! `tether apikey …` and `tether token mint`.
//!
//! These commands open the store directly, in their own process, usually while a server
//! runs on the same data directory (SQLite in WAL mode lets both write). How their effects
//! reach a running server:
//!
//! - users and passwords: a login reads the store, so it sees them at once;
//! - revoked sessions (`user passwd`, `user remove`): a request presenting the token fails
//!   at once; a live connection holding it is closed within `auth.session_check_ms` (the
//!   server sweeps its live sessions against the store);
//! - API keys: looked up per request, so a created key works and a revoked one fails at
//!   once.
//!
//! This is the binary's edge, so errors are [`anyhow::Error`]. No message ever contains a
//! password, a key or a token.

use std::io::BufRead;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, anyhow, bail};
use tether_proto::ChannelPattern;
use tether_store::{ApiKey, NewApiKey, NewUser, SqliteStore, Store, StoreError, User};

use crate::auth::jwt::{JwtConfig, MintClaims};
use crate::auth::password::Hasher;
use crate::auth::rules::Rules;
use crate::auth::{apikeys, token};
use crate::clock::Clock;
use crate::config::{AuthConfig, Config};

/// Longest API key label, in characters.
pub const MAX_KEY_NAME_CHARS: usize = 100;

/// Whether opening the store may create the database file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Create the data directory and the database if missing (commands that add things).
    Create,
    /// Fail if there is no database yet: a mistyped `--data-dir` must not silently show an
    /// empty, freshly created database.
    Existing,
}

/// The store and the account rules of one configuration.
#[derive(Debug)]
pub struct Admin {
    store: Arc<dyn Store>,
    auth: AuthConfig,
    rules: Rules,
    clock: Clock,
    /// Set when [`Admin::open`] created a new database file.
    pub created_database: Option<PathBuf>,
}

/// A user as `tether user list` shows it (never the password hash).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UserRow {
    /// Row id.
    pub id: i64,
    /// User name.
    pub name: String,
    /// Email address.
    pub email: Option<String>,
    /// Creation time, RFC 3339 UTC.
    pub created: String,
}

impl From<&User> for UserRow {
    fn from(u: &User) -> Self {
        Self { id: u.id, name: u.name.clone(), email: u.email.clone(), created: rfc3339_ms(u.created_ms) }
    }
}

/// An API key as `tether apikey list` shows it (its id, never the secret).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ApiKeyRow {
    /// Public id (`tak_<id>_…`).
    pub id: String,
    /// Label.
    pub name: String,
    /// Channel patterns; empty means every channel.
    pub channels: Vec<String>,
    /// Creation time, RFC 3339 UTC.
    pub created: String,
}

impl From<&ApiKey> for ApiKeyRow {
    fn from(k: &ApiKey) -> Self {
        Self {
            id: k.key_id.clone(),
            name: k.name.clone(),
            channels: k.channels.clone(),
            created: rfc3339_ms(k.created_ms),
        }
    }
}

/// A freshly created API key.
pub struct CreatedKey {
    /// Public id.
    pub id: String,
    /// The whole key: the secret, shown once.
    pub key: String,
}

impl std::fmt::Debug for CreatedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedKey").field("id", &self.id).finish_non_exhaustive()
    }
}

fn store_error(what: &str, e: StoreError) -> anyhow::Error {
    anyhow!("{what}: {e}")
}

impl Admin {
    /// Opens `<data_dir>/tether.db` of `config` (blocking: runs migrations).
    pub fn open(config: &Config, mode: OpenMode) -> anyhow::Result<Self> {
        let path = config.data_dir.join(tether_store::sqlite::FILE_NAME);
        let existed = path.exists();
        if mode == OpenMode::Existing && !existed {
            bail!(
                "no database at {} (is --data-dir right? the server creates it on its first start)",
                path.display()
            );
        }
        let store = SqliteStore::open_in_dir(&config.data_dir)
            .map_err(|e| anyhow!("opening the database in {}: {e}", config.data_dir.display()))?;
        let mut admin = Self::new(Arc::new(store), &config.auth, Clock::system())?;
        admin.created_database = (!existed).then_some(path);
        Ok(admin)
    }

    /// Over any store (tests pass their own clock).
    pub fn new(store: Arc<dyn Store>, auth: &AuthConfig, clock: Clock) -> anyhow::Result<Self> {
        let rules = Rules::new(&auth.accounts).map_err(|e| anyhow!(e))?;
        Ok(Self { store, auth: auth.clone(), rules, clock, created_database: None })
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Checks a user name against the configured rules (before asking for a password).
    pub fn check_username(&self, name: &str) -> anyhow::Result<()> {
        self.rules.username(name).map_err(|e| anyhow!(e.message))
    }

    /// Checks an optional email: admin-created users need none even when
    /// `auth.accounts.require_email` is set (that rule is about self-service
    /// registration), but one that is given must be valid. Returns what to store.
    pub fn check_email(&self, email: Option<&str>) -> anyhow::Result<Option<String>> {
        match email.map(str::trim).filter(|e| !e.is_empty()) {
            None => Ok(None),
            Some(e) => self.rules.email(Some(e)).map_err(|e| anyhow!(e.message)),
        }
    }

    /// Checks a new password against the configured rules.
    pub fn check_password(&self, password: &str) -> anyhow::Result<()> {
        self.rules.password(password).map_err(|e| anyhow!(e.message))
    }

    async fn hash(&self, password: &str) -> anyhow::Result<String> {
        let cfg = self.auth.argon2.clone();
        // Building the hasher computes one hash (its timing dummy): keep it off the runtime.
        let hasher = tokio::task::spawn_blocking(move || Hasher::new(&cfg)).await??;
        Ok(hasher.hash(password.to_owned()).await?)
    }

    /// The user called `name` (case-insensitively), or an error saying there is none.
    pub async fn user(&self, name: &str) -> anyhow::Result<User> {
        self.store
            .user_by_name(name)
            .await
            .map_err(|e| store_error("looking the user up", e))?
            .ok_or_else(|| anyhow!("there is no user named '{name}'"))
    }

    /// Fails if a user called `name` exists (to say so before reading a password; the
    /// unique index still decides a race).
    pub async fn ensure_free(&self, name: &str) -> anyhow::Result<()> {
        match self.store.user_by_name(name).await.map_err(|e| store_error("looking the user up", e))? {
            Some(u) => Err(taken(&u.name)),
            None => Ok(()),
        }
    }

    /// Creates a user; the rules are checked here too. Returns its id.
    pub async fn add_user(&self, name: &str, email: Option<&str>, password: &str) -> anyhow::Result<i64> {
        self.check_username(name)?;
        let email = self.check_email(email)?;
        self.check_password(password)?;
        let password_hash = self.hash(password).await?;
        let new = NewUser { name: name.to_owned(), email, password_hash, created_ms: self.clock.now_ms() };
        self.store.create_user(new).await.map_err(|e| match e {
            StoreError::Conflict => taken(name),
            e => store_error("creating the user", e),
        })
    }

    /// Every user, by id.
    pub async fn list_users(&self) -> anyhow::Result<Vec<UserRow>> {
        let users = self.store.list_users().await.map_err(|e| store_error("listing users", e))?;
        Ok(users.iter().map(UserRow::from).collect())
    }

    /// Replaces a user's password and revokes every session. Returns how many.
    pub async fn set_password(&self, name: &str, password: &str) -> anyhow::Result<usize> {
        self.check_password(password)?;
        let user = self.user(name).await?;
        let hash = self.hash(password).await?;
        let revoked = self.store.set_password(user.id, hash, None).await.map_err(|e| match e {
            StoreError::NotFound => anyhow!("there is no user named '{name}'"),
            e => store_error("changing the password", e),
        })?;
        Ok(revoked.len())
    }

    /// Deletes a user and its sessions. Returns how many sessions.
    pub async fn remove_user(&self, name: &str) -> anyhow::Result<usize> {
        let user = self.user(name).await?;
        let revoked = self.store.delete_user(user.id).await.map_err(|e| match e {
            StoreError::NotFound => anyhow!("there is no user named '{name}'"),
            e => store_error("deleting the user", e),
        })?;
        Ok(revoked.len())
    }

    /// Creates an API key limited to `channels` (every channel when empty).
    pub async fn create_api_key(&self, name: &str, channels: &[String]) -> anyhow::Result<CreatedKey> {
        if name.chars().count() > MAX_KEY_NAME_CHARS || name.chars().any(char::is_control) {
            bail!("the key name must be at most {MAX_KEY_NAME_CHARS} characters, without control characters");
        }
        for c in channels {
            ChannelPattern::parse(c).map_err(|e| anyhow!("--channel '{c}': {e}"))?;
        }
        // Ids are 8 random characters; a collision is unlikely but handled.
        for _ in 0..5 {
            let (id, key) = apikeys::generate();
            let new = NewApiKey {
                key_id: id.clone(),
                name: name.to_owned(),
                key_hash: token::hash(&key),
                channels: channels.to_vec(),
                created_ms: self.clock.now_ms(),
            };
            match self.store.create_api_key(new).await {
                Ok(()) => return Ok(CreatedKey { id, key }),
                Err(StoreError::Conflict) => {}
                Err(e) => return Err(store_error("storing the API key", e)),
            }
        }
        bail!("could not find a free API key id")
    }

    /// Every API key created with `apikey create`, by creation.
    pub async fn list_api_keys(&self) -> anyhow::Result<Vec<ApiKeyRow>> {
        let keys = self.store.list_api_keys().await.map_err(|e| store_error("listing API keys", e))?;
        Ok(keys.iter().map(ApiKeyRow::from).collect())
    }

    /// Revokes the key with public id `id`.
    pub async fn revoke_api_key(&self, id: &str) -> anyhow::Result<()> {
        // A whole key pasted by mistake must not be echoed back in the error.
        if id.starts_with(token::API_KEY_PREFIX) || id.len() > 64 {
            bail!("pass the key's id as shown by `tether apikey list`, not the key itself");
        }
        if self.store.revoke_api_key(id).await.map_err(|e| store_error("revoking the API key", e))? {
            Ok(())
        } else {
            bail!("there is no API key with id '{id}' (see `tether apikey list`)")
        }
    }
}

fn taken(name: &str) -> anyhow::Error {
    anyhow!("a user named '{name}' already exists (names are compared case-insensitively)")
}

/// Reads a password: the first line of `input`, without its line ending. Fails on empty
/// input (nothing at all, not even a newline).
pub fn read_password(mut input: impl BufRead) -> anyhow::Result<String> {
    let mut line = String::new();
    let n = input.read_line(&mut line).context("reading the password from stdin")?;
    if n == 0 {
        bail!("no password on stdin (the first line of stdin is the password)");
    }
    if line.ends_with('\n') {
        line.pop();
        if line.ends_with('\r') {
            line.pop();
        }
    }
    Ok(line)
}

/// What `token mint` signs.
#[derive(Debug, Clone, Default)]
pub struct MintRequest {
    /// `sub`.
    pub user: String,
    /// Lifetime, seconds.
    pub ttl_s: u64,
    /// Channel grants.
    pub channels: Vec<String>,
    /// `info` claim, JSON text.
    pub info: Option<String>,
    /// `device` claim.
    pub device: Option<String>,
    /// `zone` claim.
    pub zone: Option<String>,
    /// Signing algorithm; the first configured one when `None`.
    pub algorithm: Option<String>,
}

/// Mints a development JWT with `[auth.jwt]` of the configuration, valid from `now_s` for
/// `ttl_s`.
pub fn mint_token(jwt: Option<&JwtConfig>, req: &MintRequest, now_s: u64) -> anyhow::Result<String> {
    let Some(jwt) = jwt else {
        bail!(
            "this configuration has no [auth.jwt] section, so the server accepts no JWTs; \
             pass --config with one (algorithms and a key)"
        );
    };
    if req.ttl_s == 0 {
        bail!("--ttl must be above 0");
    }
    for c in &req.channels {
        ChannelPattern::parse(c).map_err(|e| anyhow!("--channel '{c}': {e}"))?;
    }
    let info = req
        .info
        .as_deref()
        .map(serde_json::from_str::<serde_json::Value>)
        .transpose()
        .map_err(|e| anyhow!("--info is not valid JSON: {e}"))?;
    let claims = MintClaims {
        sub: req.user.clone(),
        exp_s: now_s.saturating_add(req.ttl_s),
        nbf_s: None,
        iat_s: now_s,
        info,
        channels: req.channels.clone(),
        device: req.device.clone(),
        zone: req.zone.clone(),
    };
    crate::auth::jwt::mint(jwt, &claims, req.algorithm.as_deref()).map_err(|e| anyhow!(e))
}

/// Parses a duration such as `3600`, `3600s`, `30m`, `1h` or `7d` into seconds.
pub fn parse_ttl(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = digits.parse().map_err(|_| format!("'{s}' is not a duration like 3600s, 30m, 1h or 7d"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("'{s}': the unit must be s, m, h or d")),
    };
    match n.checked_mul(scale) {
        Some(0) => Err("the duration must be above 0".to_owned()),
        Some(v) => Ok(v),
        None => Err(format!("'{s}' is too long")),
    }
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds, e.g. `2025-03-01T12:00:00.000Z`.
pub fn rfc3339_ms(unix_ms: i64) -> String {
    let days = unix_ms.div_euclid(86_400_000);
    let ms_of_day = unix_ms.rem_euclid(86_400_000);
    // Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s, ms) =
        (ms_of_day / 3_600_000, ms_of_day / 60_000 % 60, ms_of_day / 1000 % 60, ms_of_day % 1000);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{ms:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339_ms(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
        assert_eq!(rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn ttl() {
        assert_eq!(parse_ttl("1h"), Ok(3600));
        assert_eq!(parse_ttl("30m"), Ok(1800));
        assert_eq!(parse_ttl("3600s"), Ok(3600));
        assert_eq!(parse_ttl("3600"), Ok(3600));
        assert_eq!(parse_ttl("2d"), Ok(172_800));
        for bad in ["", "0", "0h", "h", "1w", "-1s", "1.5h", "99999999999999999999h"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn password_line() {
        let read = |s: &str| read_password(s.as_bytes());
        assert_eq!(read("abc12!\n").unwrap(), "abc12!");
        assert_eq!(read("abc12!\r\nrest\n").unwrap(), "abc12!");
        assert_eq!(read("abc12!").unwrap(), "abc12!");
        assert_eq!(read("\n").unwrap(), "");
        assert!(read("").is_err());
    }
}
