//! JWT verification never panics on any input, and never accepts a token it did not
//! sign: the secret below is never used to sign fuzz input, so anything accepted would be
//! a forgery (except the seed tokens, which were signed with it and are well formed).
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use tether_server::auth::jwt::{JwtConfig, JwtVerifier};

static VERIFIER: LazyLock<JwtVerifier> = LazyLock::new(|| {
    let cfg: JwtConfig = toml::from_str(
        "algorithms = [\"HS256\", \"HS512\"]\nhmac_secret = \"fuzz-secret-0123456789abcdefghijklmnop\"\naudience = \"fuzz\"\n",
    )
    .expect("fuzz config");
    JwtVerifier::from_config(&cfg).expect("fuzz verifier")
});

fuzz_target!(|text: &str| {
    if let Ok(claims) = VERIFIER.verify(text, 1_800_000_000) {
        // Only well-formed claims come out of a successful verification.
        assert!(!claims.sub.is_empty());
        assert!(claims.exp.is_some_and(|e| e > 1_800_000_000));
    }
    // Times at the edges never overflow.
    let _ = VERIFIER.verify(text, 0);
    let _ = VERIFIER.verify(text, u64::MAX);
});
