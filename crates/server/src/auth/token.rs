//! Opaque secrets: session tokens and API keys. Generated from the OS CSPRNG, handed to the
//! client once, and stored only as a SHA-256 digest.
//!
//! A fast hash is right here (unlike passwords): the secrets carry 256 bits of entropy, so
//! there is nothing to brute-force, and verification sits on the connect hot path.
//!
//! Every secret the server checks (session tokens, API keys, static tokens, event-server
//! tokens) is compared by looking up its digest, never by comparing the secret's bytes:
//! how long a lookup takes depends on digest bytes an attacker cannot steer, so timing
//! reveals nothing about the secret. That is this server's constant-time comparison.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use tether_store::TokenHash;

/// Prefix of session tokens, so they are recognisable (secret scanners, support).
pub const SESSION_PREFIX: &str = "tts_";
/// Prefix of API keys created by `tether apikey create`.
pub const API_KEY_PREFIX: &str = "tak_";

/// 32 random bytes from the OS, base64url without padding (43 characters).
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    // The OS RNG failing is unrecoverable for a server that issues credentials.
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut bytes).expect("the OS random number generator is unavailable");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A fresh session token: `tts_` + 256 random bits.
pub fn new_session_token() -> String {
    format!("{SESSION_PREFIX}{}", random_secret())
}

/// SHA-256 of a secret.
pub fn hash(secret: &str) -> TokenHash {
    Sha256::digest(secret.as_bytes()).into()
}

/// Is this string shaped like a session token? (Cheap routing, not validation.)
pub fn is_session_token(s: &str) -> bool {
    s.starts_with(SESSION_PREFIX)
}

/// Is this string shaped like a JWT (three base64url parts)?
pub fn is_jwt(s: &str) -> bool {
    s.bytes().filter(|&b| b == b'.').count() == 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_and_long() {
        let a = new_session_token();
        let b = new_session_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), SESSION_PREFIX.len() + 43);
        assert!(is_session_token(&a));
        assert_ne!(hash(&a), hash(&b));
        assert!(is_jwt("a.b.c"));
        assert!(!is_jwt("a.b"));
    }
}
