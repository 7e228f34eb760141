//! Account flows shared by the HTTP routes and the native socket: register, login,
//! session verification with "remember me" renewal, refresh, logout, password change and
//! account deletion.
//!
//! Rules that make these safe: passwords are checked and hashed off the runtime
//! ([`super::password`]); a login for an unknown user costs the same as a wrong password
//! and gets the same error; duplicate names are refused by the store's unique index, not
//! by a lookup first; tokens are stored only as digests; revoking a session tells every
//! connection holding it at once ([`super::live`]).

use std::net::IpAddr;
use std::sync::Arc;

use tether_proto::{ErrorCode, Identity, ProtoError};
use tether_store::{NewSession, NewUser, Session, SessionId, StoreError, UserId};

use super::live::Revoked;
use super::{Auth, Issued, Principal, PrincipalKind, Verified, internal, rate_limited, token};
use tether_engine::hub::ConnId;

/// What a register or login request carries.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    /// User name.
    pub name: &'a str,
    /// Password (plain text, never logged).
    pub password: &'a str,
    /// Email (registration only).
    pub email: Option<&'a str>,
    /// "Remember me".
    pub persistent: bool,
}

fn invalid_credentials() -> ProtoError {
    ProtoError::new(ErrorCode::InvalidCredentials, "Invalid user name or password.")
}

impl Auth {
    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    fn now_u64(&self) -> u64 {
        u64::try_from(self.now_ms()).unwrap_or(0)
    }

    fn ttl_ms(&self) -> i64 {
        i64::try_from(self.cfg.accounts.session_ttl_s.saturating_mul(1000)).unwrap_or(i64::MAX)
    }

    fn remember_ms(&self) -> i64 {
        i64::try_from(self.cfg.accounts.remember_for_s.saturating_mul(1000)).unwrap_or(i64::MAX)
    }

    fn accounts_enabled(&self) -> Result<(), ProtoError> {
        if self.cfg.accounts.enabled {
            Ok(())
        } else {
            Err(ProtoError::new(ErrorCode::AccountsDisabled, "accounts are disabled on this server"))
        }
    }

    /// The principal of a session.
    pub fn session_principal(s: &Session, token_hash: tether_store::TokenHash) -> Principal {
        Principal {
            identity: Arc::new(Identity { user: Some(s.user_name.clone()), device: None, zone: None }),
            kind: PrincipalKind::Session {
                id: s.id,
                user_id: s.user_id,
                persistent: s.persistent,
                token_hash,
            },
            expires_ms: Some(s.expires_ms),
            grants: Arc::from([]),
            info: None,
        }
    }

    async fn issue(&self, user_id: UserId, user: String, persistent: bool) -> Result<Issued, ProtoError> {
        let token = token::new_session_token();
        let token_hash = token::hash(&token);
        let now = self.now_ms();
        let expires_ms = now.saturating_add(self.ttl_ms());
        let id = self
            .store
            .create_session(NewSession { user_id, token_hash, persistent, created_ms: now, expires_ms })
            .await
            .map_err(|e| match e {
                StoreError::NotFound => invalid_credentials(),
                e => internal(e),
            })?;
        let s = Session { id, user_id, user_name: user.clone(), persistent, created_ms: now, expires_ms };
        Ok(Issued { user, token, expires_ms, persistent, principal: Self::session_principal(&s, token_hash) })
    }

    /// Creates an account and logs it in.
    pub async fn register(&self, ip: IpAddr, c: Credentials<'_>) -> Result<Issued, ProtoError> {
        self.accounts_enabled()?;
        if !self.cfg.accounts.registration {
            return Err(ProtoError::new(
                ErrorCode::PermissionDenied,
                "registration is closed on this server; ask an administrator for an account",
            ));
        }
        self.rules.username(c.name)?;
        self.rules.password(c.password)?;
        let email = self.rules.email(c.email)?;
        if !self.limits.lock().register_ip.try_take(&ip, self.now_u64()) {
            return Err(rate_limited());
        }
        let password_hash = self.hasher.hash(c.password.to_owned()).await.map_err(internal)?;
        let new = NewUser { name: c.name.to_owned(), email, password_hash, created_ms: self.now_ms() };
        let id = self.store.create_user(new).await.map_err(|e| match e {
            StoreError::Conflict => ProtoError::new(ErrorCode::UsernameTaken, "User name already in use."),
            e => internal(e),
        })?;
        tracing::info!(user = c.name, "account registered");
        self.issue(id, c.name.to_owned(), c.persistent).await
    }

    /// Checks a name and password and opens a new session.
    pub async fn login(&self, ip: IpAddr, c: Credentials<'_>) -> Result<Issued, ProtoError> {
        self.accounts_enabled()?;
        if c.name.is_empty() || c.password.is_empty() || c.name.len() > 256 || c.password.len() > 1024 {
            return Err(invalid_credentials());
        }
        {
            let now = self.now_u64();
            let mut l = self.limits.lock();
            // Per address and per name: one address trying many names and many addresses
            // spraying one name are both slowed.
            // The name's budget is only spent by attempts the address was allowed to make.
            // A per-name limit does let whoever exhausts it delay that user's logins for a
            // while (the price of stopping guesses spread over many addresses); the per-name
            // budget refills continuously, so the delay is bounded.
            if !l.login_ip.try_take(&ip, now) || !l.login_user.try_take(&c.name.to_lowercase(), now) {
                return Err(rate_limited());
            }
        }
        let user = self.store.user_by_name(c.name).await.map_err(internal)?;
        let hash = user.as_ref().map(|u| u.password_hash.clone());
        // An unknown user is checked against a dummy hash: same cost, same answer.
        if !self.hasher.verify(c.password.to_owned(), hash).await {
            tracing::debug!("login failed");
            return Err(invalid_credentials());
        }
        let Some(user) = user else { return Err(invalid_credentials()) };
        self.issue(user.id, user.name, c.persistent).await
    }

    /// Verifies a session token. An expired persistent session within the "remember me"
    /// window is renewed when `renew` is set: the new token is in [`Verified::renewed`].
    pub async fn verify_session(&self, credential: &str, renew: bool) -> Result<Verified, ProtoError> {
        self.accounts_enabled()?;
        let hash = token::hash(credential);
        let now = self.now_ms();
        let s = match self.sessions.get(&hash, now) {
            Some(s) => s,
            None => {
                let Some(s) = self.store.session_by_token(&hash).await.map_err(internal)? else {
                    return Err(ProtoError::new(ErrorCode::InvalidToken, "unknown or revoked session token"));
                };
                self.sessions.put(hash, s.clone(), now);
                s
            }
        };
        if now < s.expires_ms {
            return Ok(Verified { principal: Self::session_principal(&s, hash), renewed: None });
        }
        if s.persistent && renew && now < s.expires_ms.saturating_add(self.remember_ms()) {
            let issued = self.rotate(&s, &hash, None).await?;
            return Ok(Verified { principal: issued.principal.clone(), renewed: Some(issued) });
        }
        // Kept until housekeeping purges it, so presenting it again still says "expired".
        Err(ProtoError::new(ErrorCode::TokenExpired, "Logged out: the session has expired; log in again."))
    }

    /// Replaces a session's token (compare-and-swap on the old digest) and tells the other
    /// connections holding the session (all but `except`).
    async fn rotate(
        &self,
        s: &Session,
        old: &tether_store::TokenHash,
        except: Option<ConnId>,
    ) -> Result<Issued, ProtoError> {
        self.try_rotate(s, old, except)
            .await?
            .ok_or_else(|| ProtoError::new(ErrorCode::InvalidToken, "the session token was already replaced"))
    }

    /// [`Auth::rotate`], with `None` when another rotation won the race.
    async fn try_rotate(
        &self,
        s: &Session,
        old: &tether_store::TokenHash,
        except: Option<ConnId>,
    ) -> Result<Option<Issued>, ProtoError> {
        let token = token::new_session_token();
        let new_hash = token::hash(&token);
        let expires_ms = self.now_ms().saturating_add(self.ttl_ms());
        self.sessions.forget(&[s.id]);
        if !self.store.rotate_session(s.id, old, &new_hash, expires_ms).await.map_err(internal)? {
            return Ok(None);
        }
        let s = Session { expires_ms, ..s.clone() };
        let issued = Issued {
            user: s.user_name.clone(),
            token,
            expires_ms,
            persistent: s.persistent,
            principal: Self::session_principal(&s, new_hash),
        };
        self.live.rotated(s.id, &Arc::new(issued.clone()), except);
        Ok(Some(issued))
    }

    /// Refreshes a session by its token (HTTP): a new token replaces the old one. Works
    /// on a live session, and on an expired persistent one within the remember window.
    pub async fn refresh_token(&self, credential: &str) -> Result<Issued, ProtoError> {
        self.accounts_enabled()?;
        let v = self.verify_session(credential, true).await?;
        if let Some(issued) = v.renewed {
            return Ok(issued);
        }
        self.refresh_principal(&v.principal, None).await
    }

    /// Refreshes the session a connection (`conn`) holds.
    pub async fn refresh_principal(&self, p: &Principal, conn: Option<ConnId>) -> Result<Issued, ProtoError> {
        let (s, token_hash) = Self::session_of_principal(p)?;
        self.rotate(&s, &token_hash, conn).await
    }

    fn session_of_principal(p: &Principal) -> Result<(Session, tether_store::TokenHash), ProtoError> {
        let PrincipalKind::Session { id, user_id, persistent, token_hash } = p.kind else {
            return Err(ProtoError::new(ErrorCode::Unauthenticated, "not logged in with a session"));
        };
        let s = Session {
            id,
            user_id,
            user_name: p.identity.user.clone().unwrap_or_default(),
            persistent,
            created_ms: 0,
            expires_ms: p.expires_ms.unwrap_or(0),
        };
        Ok((s, token_hash))
    }

    /// A connection's session expired while open. Persistent: renewed (the caller pushes
    /// the new token), or `Ok(None)` when another connection holding the same session
    /// renewed it first (its new token reaches this connection as a `Rotated` event).
    /// Otherwise: `token_expired`.
    pub async fn renew_expired(&self, p: &Principal, conn: ConnId) -> Result<Option<Issued>, ProtoError> {
        let PrincipalKind::Session { persistent, .. } = p.kind else {
            return Err(ProtoError::new(ErrorCode::Unauthenticated, "not a session"));
        };
        if persistent {
            let (s, old) = Self::session_of_principal(p)?;
            return self.try_rotate(&s, &old, Some(conn)).await;
        }
        Err(ProtoError::new(ErrorCode::TokenExpired, "Logged out: the session has expired; log in again."))
    }

    /// Ends one session and tells the other connections holding it.
    pub async fn logout(&self, session: SessionId, except: Option<ConnId>) -> Result<(), ProtoError> {
        self.sessions.forget(&[session]);
        self.store.delete_session(session).await.map_err(internal)?;
        self.live.revoke(&[session], Revoked::LoggedOut, except);
        Ok(())
    }

    /// The valid session behind an HTTP bearer token (no renewal).
    pub async fn session_of(&self, credential: &str) -> Result<Principal, ProtoError> {
        self.accounts_enabled()?;
        if !token::is_session_token(credential) {
            return Err(ProtoError::new(ErrorCode::InvalidToken, "expected a session token"));
        }
        Ok(self.verify_session(credential, false).await?.principal)
    }

    async fn check_password(
        &self,
        user_id: UserId,
        password: &str,
    ) -> Result<tether_store::User, ProtoError> {
        let user = self.store.user_by_id(user_id).await.map_err(internal)?;
        // A stolen session token must not become an unlimited password-guessing oracle:
        // these checks share the login budget of the user name.
        if let Some(u) = &user
            && !self.limits.lock().login_user.try_take(&u.name.to_lowercase(), self.now_u64())
        {
            return Err(rate_limited());
        }
        let hash = user.as_ref().map(|u| u.password_hash.clone());
        if !self.hasher.verify(password.to_owned(), hash).await {
            return Err(invalid_credentials());
        }
        user.ok_or_else(invalid_credentials)
    }

    /// Changes the password of the principal's user after checking the current one. The
    /// principal's own session survives; every other session of the user is revoked.
    pub async fn change_password(
        &self,
        p: &Principal,
        current: &str,
        new: &str,
        except: Option<ConnId>,
    ) -> Result<(), ProtoError> {
        let PrincipalKind::Session { id, user_id, .. } = p.kind else {
            return Err(ProtoError::new(ErrorCode::Unauthenticated, "log in with an account first"));
        };
        self.rules.password(new)?;
        self.check_password(user_id, current).await?;
        let hash = self.hasher.hash(new.to_owned()).await.map_err(internal)?;
        let revoked = self.store.set_password(user_id, hash, Some(id)).await.map_err(|e| match e {
            StoreError::NotFound => invalid_credentials(),
            e => internal(e),
        })?;
        self.sessions.forget(&revoked);
        self.live.revoke(&revoked, Revoked::PasswordChanged, except);
        tracing::info!(user = ?p.identity.user, sessions_revoked = revoked.len(), "password changed");
        Ok(())
    }

    /// Deletes the principal's account after checking its password; every session ends.
    pub async fn delete_account(
        &self,
        p: &Principal,
        password: &str,
        except: Option<ConnId>,
    ) -> Result<(), ProtoError> {
        let PrincipalKind::Session { user_id, .. } = p.kind else {
            return Err(ProtoError::new(ErrorCode::Unauthenticated, "log in with an account first"));
        };
        self.check_password(user_id, password).await?;
        let revoked = self.store.delete_user(user_id).await.map_err(|e| match e {
            StoreError::NotFound => invalid_credentials(),
            e => internal(e),
        })?;
        self.sessions.forget(&revoked);
        self.live.revoke(&revoked, Revoked::AccountDeleted, except);
        tracing::info!(user = ?p.identity.user, "account deleted");
        Ok(())
    }

    /// Deletes expired sessions past their remember window (periodic housekeeping), and
    /// prunes the rate-limit tables.
    pub async fn housekeeping(&self) {
        // Expired sessions are kept a while (one lifetime, or the remember window) so that
        // presenting one says `token_expired` rather than `invalid_token`.
        let now = self.now_ms();
        let (plain, persistent) = (now.saturating_sub(self.ttl_ms()), now.saturating_sub(self.remember_ms()));
        if let Err(e) = self.store.purge_sessions(plain, persistent).await {
            tracing::warn!(error = %e, "purging expired sessions failed");
        }
        let now = self.now_u64();
        let mut l = self.limits.lock();
        l.login_ip.prune(now);
        l.login_user.prune(now);
        l.register_ip.prune(now);
    }

    /// Revokes live sessions that no longer exist in the store (deleted by another
    /// process, e.g. `tether user passwd`).
    pub async fn sweep_live_sessions(&self) {
        let ids = self.live.ids();
        if ids.is_empty() {
            return;
        }
        match self.store.existing_sessions(ids.clone()).await {
            Ok(existing) => {
                let gone: Vec<SessionId> = ids.into_iter().filter(|i| !existing.contains(i)).collect();
                if !gone.is_empty() {
                    self.sessions.forget(&gone);
                    self.live.revoke(&gone, Revoked::LoggedOut, None);
                }
            }
            Err(e) => tracing::warn!(error = %e, "checking live sessions failed"),
        }
    }
}
