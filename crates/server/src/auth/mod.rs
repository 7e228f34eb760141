//! Authentication: who a connection or request is. See `docs/auth.md`.
//!
//! Credentials come in several shapes, all verified here and turned into one
//! [`Principal`]; the engine's namespace rules then decide from the principal's
//! [`Access`]. Sources, in the order `connect` tries them:
//!
//! - session tokens (`tts_…`) issued by register/login, stored as SHA-256 digests;
//! - JWTs minted by the application's backend ([`jwt`]);
//! - static tokens from `auth.tokens` in the config;
//! - identity headers from a trusted proxy ([`proxy`]), when no credential is sent.
//!
//! Account flows (register, login, refresh, logout, password change, deletion) live in
//! [`accounts`] and are shared by the HTTP routes ([`http`]) and the native socket.

pub mod accounts;
pub mod apikeys;
pub mod cache;
pub mod http;
pub mod jwt;
pub mod live;
pub mod password;
pub mod proxy;
pub mod rules;
pub mod token;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use tether_engine::{Access, KeyedLimiter};
use tether_proto::{ChannelPattern, ErrorCode, Identity, ProtoError};
use tether_store::{SessionId, Store, TokenHash, UserId};

use crate::clock::Clock;
use crate::config::AuthConfig;

/// How a connection proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalKind {
    /// No credentials.
    Anonymous,
    /// A client-declared identity (`auth.allow_client_identity`, development only).
    Declared,
    /// A static token from `auth.tokens`.
    Static,
    /// Identity headers from a trusted proxy.
    Header,
    /// A login session.
    Session {
        /// Session row.
        id: SessionId,
        /// User row.
        user_id: UserId,
        /// "Remember me".
        persistent: bool,
        /// Digest of the session's current token (for compare-and-swap rotation).
        token_hash: TokenHash,
    },
    /// A JWT from the application's backend.
    Jwt,
}

/// A verified identity with what it may do.
#[derive(Debug, Clone)]
pub struct Principal {
    /// User/device/zone, used for targeting and personal channels.
    pub identity: Arc<Identity>,
    /// Where it came from.
    pub kind: PrincipalKind,
    /// When the credential stops being valid (Unix ms), if it expires.
    pub expires_ms: Option<i64>,
    /// Channels granted by the token.
    pub grants: Arc<[ChannelPattern]>,
    /// Application data from the JWT `info` claim (JSON text).
    pub info: Option<Arc<str>>,
}

impl Principal {
    /// No credentials.
    pub fn anonymous() -> Self {
        Self::with_identity(Identity::default(), PrincipalKind::Anonymous)
    }

    /// An identity without expiry or grants.
    pub fn with_identity(identity: Identity, kind: PrincipalKind) -> Self {
        Self { identity: Arc::new(identity), kind, expires_ms: None, grants: Arc::from([]), info: None }
    }

    /// What the namespace rules see.
    pub fn access(&self) -> Access<'_> {
        Access { user: self.identity.user.as_deref(), grants: &self.grants }
    }

    /// The login session, if this principal is one.
    pub fn session_id(&self) -> Option<SessionId> {
        match self.kind {
            PrincipalKind::Session { id, .. } => Some(id),
            _ => None,
        }
    }

    /// The wire name of [`Principal::kind`].
    pub fn kind_str(&self) -> &'static str {
        match self.kind {
            PrincipalKind::Anonymous => "anonymous",
            PrincipalKind::Declared => "declared",
            PrincipalKind::Static => "static",
            PrincipalKind::Header => "header",
            PrincipalKind::Session { .. } => "session",
            PrincipalKind::Jwt => "jwt",
        }
    }
}

/// A session token handed to a client.
#[derive(Clone)]
pub struct Issued {
    /// The user name.
    pub user: String,
    /// The secret token (shown once).
    pub token: String,
    /// When it expires, Unix ms.
    pub expires_ms: i64,
    /// "Remember me".
    pub persistent: bool,
    /// The principal it makes.
    pub principal: Principal,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("user", &self.user)
            .field("expires_ms", &self.expires_ms)
            .field("persistent", &self.persistent)
            .finish_non_exhaustive()
    }
}

/// The result of verifying a credential.
#[derive(Debug, Clone)]
pub struct Verified {
    /// Who it is.
    pub principal: Principal,
    /// A persistent session presented after its expiry was renewed: this is the new
    /// token, which the client must store (the old one no longer works).
    pub renewed: Option<Issued>,
}

struct Limiters {
    login_ip: KeyedLimiter<IpAddr>,
    login_user: KeyedLimiter<String>,
    register_ip: KeyedLimiter<IpAddr>,
}

/// The authentication service of one server.
pub struct Auth {
    store: Arc<dyn Store>,
    clock: Clock,
    cfg: AuthConfig,
    rules: rules::Rules,
    hasher: password::Hasher,
    jwt: Option<jwt::JwtVerifier>,
    statics: HashMap<TokenHash, Arc<Identity>>,
    /// Trusted proxies and their identity headers.
    pub proxy: proxy::TrustedHeaders,
    /// API keys of the HTTP API.
    pub api_keys: apikeys::ApiKeys,
    limits: Mutex<Limiters>,
    /// Connections holding each live session, to tell them when it is revoked.
    pub live: live::LiveSessions,
    /// Recent session lookups.
    sessions: cache::SessionCache,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("store", &self.store).finish_non_exhaustive()
    }
}

/// Why the auth service could not be built (a configuration problem).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AuthSetupError(pub String);

impl Auth {
    /// Builds the service. Blocking (loads keys, computes a dummy hash): call at start-up.
    pub fn new(
        cfg: &AuthConfig,
        store: Arc<dyn Store>,
        clock: Clock,
        api_keys: apikeys::ApiKeys,
    ) -> Result<Self, AuthSetupError> {
        let e = AuthSetupError;
        let rules = rules::Rules::new(&cfg.accounts).map_err(e)?;
        let hasher = password::Hasher::new(&cfg.argon2).map_err(|x| e(x.to_string()))?;
        let jwt = cfg.jwt.as_ref().map(jwt::JwtVerifier::from_config).transpose().map_err(e)?;
        let proxy = proxy::TrustedHeaders::new(cfg).map_err(e)?;
        let statics = cfg.tokens.iter().map(|t| (token::hash(&t.token), Arc::new(t.identity()))).collect();
        let r = &cfg.rate_limits;
        let limits = Limiters {
            login_ip: KeyedLimiter::per_minute(r.login_per_ip_per_minute, r.login_ip_burst, r.max_tracked),
            login_user: KeyedLimiter::per_minute(
                r.login_per_user_per_minute,
                r.login_user_burst,
                r.max_tracked,
            ),
            register_ip: KeyedLimiter::per_minute(
                r.register_per_ip_per_minute,
                r.register_ip_burst,
                r.max_tracked,
            ),
        };
        Ok(Self {
            store,
            clock,
            cfg: cfg.clone(),
            rules,
            hasher,
            jwt,
            statics,
            proxy,
            api_keys,
            limits: Mutex::new(limits),
            live: live::LiveSessions::default(),
            // Half of the staleness budget here, half in the store's read snapshots.
            sessions: cache::SessionCache::new(cfg.session_cache_ms / 2, cfg.session_cache_entries),
        })
    }

    /// The clock the service reads.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The configuration.
    pub fn config(&self) -> &AuthConfig {
        &self.cfg
    }

    /// How long a JWT connection has to send a fresh token after expiry, ms.
    pub fn refresh_grace_ms(&self) -> u64 {
        self.cfg.jwt.as_ref().map_or(30_000, |j| j.refresh_grace_ms)
    }

    /// Verifies a credential of any kind: a session token (by its `tts_` prefix), then a
    /// static token (by digest, so a static token shaped like a JWT still works), then a
    /// JWT.
    pub async fn verify(&self, credential: &str) -> Result<Verified, ProtoError> {
        self.verify_with(credential, true).await
    }

    /// [`Auth::verify`]; with `renew` off, an expired persistent session is refused rather
    /// than renewed (for callers that could not hand the client its new token: `/sse`,
    /// `/auth/me`).
    pub async fn verify_with(&self, credential: &str, renew: bool) -> Result<Verified, ProtoError> {
        if token::is_session_token(credential) {
            return self.verify_session(credential, renew).await;
        }
        // Looking up the SHA-256 digest leaks nothing useful through timing: an attacker
        // cannot steer which digest bytes match.
        if let Some(identity) = self.statics.get(&token::hash(credential)) {
            return Ok(Verified {
                principal: Principal {
                    identity: Arc::clone(identity),
                    kind: PrincipalKind::Static,
                    expires_ms: None,
                    grants: Arc::from([]),
                    info: None,
                },
                renewed: None,
            });
        }
        if token::is_jwt(credential)
            && let Some(j) = &self.jwt
        {
            return self.verify_jwt(j, credential).map(|principal| Verified { principal, renewed: None });
        }
        Err(ProtoError::new(ErrorCode::InvalidToken, "unknown or invalid token"))
    }

    /// When a principal's credential really stops being accepted (Unix ms): a JWT is
    /// accepted `leeway_s` past its `exp`, so a refresh is asked for only then.
    pub fn effective_expiry(&self, p: &Principal) -> Option<i64> {
        let leeway_ms = match (&p.kind, &self.cfg.jwt) {
            (PrincipalKind::Jwt, Some(j)) => {
                i64::try_from(j.leeway_s.saturating_mul(1000)).unwrap_or(i64::MAX)
            }
            _ => 0,
        };
        p.expires_ms.map(|e| e.saturating_add(leeway_ms))
    }

    /// Verifies a JWT (for `connect` and `refresh`).
    pub fn verify_jwt_token(&self, credential: &str) -> Result<Principal, ProtoError> {
        match &self.jwt {
            Some(j) => self.verify_jwt(j, credential),
            None => Err(ProtoError::new(ErrorCode::InvalidToken, "this server does not accept JWTs")),
        }
    }

    fn verify_jwt(&self, j: &jwt::JwtVerifier, credential: &str) -> Result<Principal, ProtoError> {
        let claims =
            j.verify(credential, self.clock.now_s()).map_err(|e| ProtoError::new(e.code(), e.to_string()))?;
        let mut grants = Vec::with_capacity(claims.channels.len());
        for c in &claims.channels {
            grants.push(ChannelPattern::parse(c).map_err(|e| {
                ProtoError::new(
                    ErrorCode::InvalidToken,
                    format!("token grants an invalid channel pattern: {e}"),
                )
            })?);
        }
        let identity = Identity { user: Some(claims.sub), device: claims.device, zone: claims.zone };
        identity
            .validate()
            .map_err(|m| ProtoError::new(ErrorCode::InvalidToken, format!("token claims: {m}")))?;
        Ok(Principal {
            identity: Arc::new(identity),
            kind: PrincipalKind::Jwt,
            expires_ms: claims.exp.map(|s| i64::try_from(s).unwrap_or(i64::MAX / 1000).saturating_mul(1000)),
            grants: grants.into(),
            info: claims.info.map(|v| Arc::from(v.to_string())),
        })
    }
}

fn rate_limited() -> ProtoError {
    ProtoError::new(ErrorCode::RateLimited, "too many attempts; try again later")
}

fn internal<E: std::fmt::Display>(e: E) -> ProtoError {
    tracing::error!(error = %e, "auth store failure");
    ProtoError::new(ErrorCode::Internal, "internal error")
}
