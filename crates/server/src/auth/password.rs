//! Password hashing: Argon2id, run off the async runtime with bounded concurrency.
//!
//! Each hash costs tens of milliseconds of CPU and `memory_kib` of RAM, so it runs on the
//! blocking pool behind a semaphore: a burst of logins queues instead of starving the
//! connection tasks or exhausting memory.

use std::sync::Arc;

use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, PasswordVerifier as _, Version};
use tokio::sync::Semaphore;

use crate::config::Argon2Config;

/// Why hashing failed (never because of the password's content).
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// The configured parameters are invalid.
    #[error("invalid argon2 parameters: {0}")]
    Params(String),
    /// The worker failed.
    #[error("password hashing failed: {0}")]
    Internal(String),
}

/// Hashes and verifies passwords.
#[derive(Debug, Clone)]
pub struct Hasher {
    params: Params,
    permits: Arc<Semaphore>,
    /// A hash of a random password, verified against when a login names an unknown user,
    /// so that the response takes as long as for a known user.
    dummy: Arc<str>,
}

impl Hasher {
    /// Builds a hasher; computes the dummy hash once (blocking: call at start-up).
    pub fn new(cfg: &Argon2Config) -> Result<Self, HashError> {
        let params = Params::new(cfg.memory_kib, cfg.iterations, cfg.parallelism, None)
            .map_err(|e| HashError::Params(e.to_string()))?;
        let permits = if cfg.max_concurrent == 0 {
            std::thread::available_parallelism().map_or(2, std::num::NonZero::get)
        } else {
            cfg.max_concurrent
        };
        let dummy = hash_blocking(&params, &super::token::random_secret())?;
        Ok(Self { params, permits: Arc::new(Semaphore::new(permits)), dummy: dummy.into() })
    }

    /// Hashes a password into a PHC string.
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        let _permit = self.permits.acquire().await.map_err(|e| HashError::Internal(e.to_string()))?;
        let params = self.params.clone();
        tokio::task::spawn_blocking(move || hash_blocking(&params, &password))
            .await
            .map_err(|e| HashError::Internal(e.to_string()))?
    }

    /// Checks a password against a PHC string (or against the dummy hash when `hash` is
    /// `None`, which always fails but costs the same).
    pub async fn verify(&self, password: String, hash: Option<String>) -> bool {
        let Ok(_permit) = self.permits.acquire().await else { return false };
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy.to_string());
        let ok = tokio::task::spawn_blocking(move || {
            // The parameters come from the PHC string, so hashes made under older settings
            // still verify after the configuration changes.
            Argon2::default().verify_password(password.as_bytes(), hash.as_str()).is_ok()
        })
        .await
        .unwrap_or(false);
        ok && known
    }
}

fn hash_blocking(params: &Params, password: &str) -> Result<String, HashError> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| HashError::Internal(e.to_string()))
}
