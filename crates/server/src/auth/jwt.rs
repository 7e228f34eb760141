//! JWT connection tokens minted by the application's own backend (the Centrifugo model).
//!
//! The application authenticates its users however it likes, then hands each client a
//! short-lived JWT signed with a key it shares with Tether (an HMAC secret) or whose public
//! half Tether knows (RSA, ECDSA or Ed25519). The client presents the token on `connect`;
//! this module checks it and extracts the claims Tether uses:
//!
//! | claim      | meaning                                                                 |
//! |------------|-------------------------------------------------------------------------|
//! | `sub`      | user id (required, 1-128 characters, no control characters)            |
//! | `exp`      | expiry, Unix seconds (required unless `require_exp = false`)            |
//! | `nbf`      | not before, Unix seconds (optional)                                     |
//! | `iss`      | must equal `issuer` when one is configured                              |
//! | `aud`      | must be, or contain, `audience` when one is configured                  |
//! | `info`     | any JSON, shown to other clients (presence, publications)               |
//! | `channels` | channel grants: channel names or prefix patterns such as `chat:*`       |
//! | `device`   | device id (optional, 1-128 characters)                                  |
//! | `zone`     | zone (optional, 1-128 characters)                                       |
//!
//! # Security decisions
//!
//! - **The allow-list comes first.** The header's `alg` is looked up in the configured
//!   `algorithms` before any key is touched: `none`, unknown names and algorithms the
//!   operator did not list are rejected without a signature check.
//! - **One key per family, chosen by the algorithm.** An `HS*` token is only ever checked
//!   with the HMAC secret, an `RS*`/`PS*`/`ES*`/`EdDSA` token only with the public key, and
//!   only when that key's type fits the algorithm. This is what defeats algorithm
//!   confusion (an `HS256` token "signed" with the public key's PEM bytes).
//! - **Keys are validated at start-up**, not on first use: the public key must be a public
//!   key (not a private key or certificate), RSA keys at least 2048 bits, EC keys on
//!   P-256/P-384 and every allowed asymmetric algorithm must fit the key.
//! - **Time comes from the caller** (`now_s`, from the injectable clock), so expiry is
//!   testable without sleeping; `jsonwebtoken`'s own clock is never consulted.
//! - **Errors are safe to send to clients**: they never quote the token, a claim value or
//!   key material. Configuration errors name the field and never contain the secret.
//!
//! # Why not `jsonwebtoken::decode`
//!
//! `decode` parses the header twice (once to pick a key, once inside), deserializes the
//! claims twice (the caller's type and its own validation view) and goes through a header
//! type with a `flatten`ed map, which serde buffers. On the connect hot path we instead
//! split and parse the token once, and use `jsonwebtoken` only for what it is good at: the
//! signature primitives ([`jsonwebtoken::crypto::verify`]) and PEM key loading. The
//! `Validation` type is therefore not used at all; every claim check is below, explicit.

use std::borrow::Cow;
use std::fmt;
use std::fs::File;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey, Header};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tether_proto::{ChannelPattern, ErrorCode};

/// Longest token accepted, in bytes. Longer tokens are rejected before any parsing, so a
/// client cannot make the server base64-decode and parse megabytes.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Shortest HMAC secret accepted, in bytes: 256 bits, the output size of HS256 (RFC 7518
/// §3.2 requires a key at least as long as the hash output).
pub const MIN_HMAC_SECRET_LEN: usize = 32;
/// Longest `sub`, `device` and `zone` accepted, in characters.
pub const MAX_ID_CHARS: usize = 128;
/// Deepest nesting of arrays and objects accepted in the `info` claim. `info` is relayed to
/// other clients inside the protocol's own envelope, and common parsers stop at 128 levels
/// (serde_json, for one): one user's `info` must not make other clients' parsers fail.
pub const MAX_INFO_DEPTH: usize = 64;
/// Smallest RSA modulus accepted, in bits (NIST SP 800-131A; RFC 7518 §3.3).
pub const MIN_RSA_BITS: usize = 2048;

/// Default of [`JwtConfig::refresh_grace_ms`].
pub const DEFAULT_REFRESH_GRACE_MS: u64 = 30_000;

/// Key files larger than this are refused: a PEM key is a few KiB, and pointing the config
/// at `/dev/zero` or a log file should fail fast rather than exhaust memory.
const MAX_KEY_FILE_LEN: u64 = 64 * 1024;

/// Message signed by nobody, used to check at start-up that a public key can actually be
/// loaded by the verifier of every allowed algorithm.
const PROBE_MESSAGE: &[u8] = b"tether key probe";

/// Every algorithm Tether accepts, by its JOSE name (RFC 7518 §3.1), in a fixed order: the
/// index is the bit in [`JwtVerifier`]'s allow-mask. `none` is deliberately absent.
const ALGORITHMS: [(&str, Algorithm); 12] = [
    ("HS256", Algorithm::HS256),
    ("HS384", Algorithm::HS384),
    ("HS512", Algorithm::HS512),
    ("RS256", Algorithm::RS256),
    ("RS384", Algorithm::RS384),
    ("RS512", Algorithm::RS512),
    ("PS256", Algorithm::PS256),
    ("PS384", Algorithm::PS384),
    ("PS512", Algorithm::PS512),
    ("ES256", Algorithm::ES256),
    ("ES384", Algorithm::ES384),
    ("EdDSA", Algorithm::EdDSA),
];

/// Looks an algorithm up by its exact (case-sensitive, as RFC 7515 requires) JOSE name.
fn algorithm_by_name(name: &str) -> Option<(usize, &'static str, Algorithm)> {
    ALGORITHMS.iter().enumerate().find(|(_, (n, _))| *n == name).map(|(i, (n, a))| (i, *n, *a))
}

/// The comma-separated list of accepted algorithm names, for error messages.
fn algorithm_list() -> String {
    ALGORITHMS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

fn default_true() -> bool {
    true
}

fn default_refresh_grace_ms() -> u64 {
    DEFAULT_REFRESH_GRACE_MS
}

/// The `[auth.jwt]` table: how connection JWTs are verified (and, for development, minted).
///
/// ```toml
/// [auth.jwt]
/// algorithms = ["HS256"]
/// hmac_secret_file = "/run/secrets/tether_jwt"
/// issuer = "https://app.example.com"
/// audience = "tether"
/// ```
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Accepted signature algorithms: HS256, HS384, HS512, RS256, RS384, RS512, PS256,
    /// PS384, PS512, ES256, ES384, EdDSA (exact spelling). Required and non-empty; `none`
    /// is never accepted. A token whose header names another algorithm is rejected before
    /// its signature is looked at.
    pub algorithms: Vec<String>,
    /// Shared secret for HS* (at least 32 bytes, used as raw bytes, not base64-decoded).
    /// At most one of `hmac_secret` and `hmac_secret_file`; one is required iff an HS*
    /// algorithm is allowed.
    #[serde(default)]
    pub hmac_secret: Option<String>,
    /// File holding the HMAC secret (raw bytes; one trailing `\n` or `\r\n` is dropped, as
    /// `echo secret > file` adds one).
    #[serde(default)]
    pub hmac_secret_file: Option<PathBuf>,
    /// PEM public key (`-----BEGIN PUBLIC KEY-----`, or `RSA PUBLIC KEY`): RSA of at least
    /// 2048 bits for RS*/PS*, EC P-256 for ES256, EC P-384 for ES384, Ed25519 for EdDSA.
    /// Required iff an asymmetric algorithm is allowed; every allowed asymmetric algorithm
    /// must fit the key.
    #[serde(default)]
    pub public_key_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, or PKCS#1 for RSA) used only by `tether token mint` for
    /// asymmetric algorithms. The server never reads it.
    #[serde(default)]
    pub private_key_file: Option<PathBuf>,
    /// When set, tokens must carry an `iss` claim equal to it.
    #[serde(default)]
    pub issuer: Option<String>,
    /// When set, tokens must carry an `aud` claim equal to it, or an array containing it.
    /// When unset, `aud` is not checked.
    #[serde(default)]
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds. Default 0.
    #[serde(default)]
    pub leeway_s: u64,
    /// Reject tokens without `exp`. Default true: a token without expiry is a credential
    /// that can never be revoked.
    #[serde(default = "default_true")]
    pub require_exp: bool,
    /// How long a connection whose token expired has to send a fresh one before it is
    /// closed, in milliseconds. Default 30000. (Carried here; enforced by the connection.)
    #[serde(default = "default_refresh_grace_ms")]
    pub refresh_grace_ms: u64,
}

impl fmt::Debug for JwtConfig {
    // Hand-written so that logging the configuration never prints the HMAC secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtConfig")
            .field("algorithms", &self.algorithms)
            .field("hmac_secret", &self.hmac_secret.as_ref().map(|_| "[redacted]"))
            .field("hmac_secret_file", &self.hmac_secret_file)
            .field("public_key_file", &self.public_key_file)
            .field("private_key_file", &self.private_key_file)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_s", &self.leeway_s)
            .field("require_exp", &self.require_exp)
            .field("refresh_grace_ms", &self.refresh_grace_ms)
            .finish()
    }
}

/// Why a token was rejected. Every message is safe to send to the client: none quotes the
/// token, a claim value or key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not a compact JWS: wrong shape, bad base64url, header or payload not a JSON object,
    /// unsupported critical header parameters, or longer than [`MAX_TOKEN_LEN`].
    #[error("token is malformed")]
    Malformed,
    /// The header's `alg` is `none`, unknown, or not in the configured `algorithms`.
    #[error("token algorithm is not allowed")]
    AlgorithmNotAllowed,
    /// The signature does not verify with the configured key.
    #[error("token signature is invalid")]
    BadSignature,
    /// `exp` has passed (beyond the configured leeway).
    #[error("token has expired")]
    Expired,
    /// `nbf` is in the future (beyond the configured leeway).
    #[error("token is not valid yet")]
    NotYetValid,
    /// An issuer is configured and `iss` is missing or different.
    #[error("token issuer is not accepted")]
    WrongIssuer,
    /// An audience is configured and `aud` is missing or does not contain it.
    #[error("token audience is not accepted")]
    WrongAudience,
    /// A claim is missing, has the wrong type or an invalid value. The message names the
    /// claim, never its value.
    #[error("token claims are invalid: {0}")]
    InvalidClaims(String),
}

impl JwtError {
    /// The protocol error code for this rejection: [`ErrorCode::TokenExpired`] for an
    /// expired token (the client should fetch a fresh one), [`ErrorCode::InvalidToken`]
    /// otherwise.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Expired => ErrorCode::TokenExpired,
            _ => ErrorCode::InvalidToken,
        }
    }
}

/// The claims of an accepted token.
#[derive(Debug, Clone)]
pub struct JwtClaims {
    /// The user id (`sub`): 1 to 128 characters, no control characters.
    pub sub: String,
    /// Expiry (`exp`), Unix seconds; `None` only when `require_exp = false`. Fractional
    /// values are rounded down.
    pub exp: Option<u64>,
    /// The `info` claim, verbatim (any JSON value nested at most [`MAX_INFO_DEPTH`] deep),
    /// to be shown to other clients. `None` when absent or `null`.
    pub info: Option<Box<RawValue>>,
    /// The `channels` claim: channel grants, each a valid channel name or prefix pattern
    /// (`chat:*`, `chat:room-*`, `*`) as accepted by [`ChannelPattern::parse`]. Kept as
    /// written; empty when the claim is absent.
    pub channels: Vec<String>,
    /// The `device` claim (1 to 128 characters, no control characters).
    pub device: Option<String>,
    /// The `zone` claim (1 to 128 characters, no control characters).
    pub zone: Option<String>,
}

/// The type of the configured public key, which decides the algorithms it may verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PublicKeyKind {
    /// RSA: RS256/384/512 and PS256/384/512.
    Rsa,
    /// EC on P-256: ES256 only.
    P256,
    /// EC on P-384: ES384 only.
    P384,
    /// Ed25519: EdDSA only.
    Ed25519,
}

impl PublicKeyKind {
    /// True if this key type can verify `alg`. Never true for HMAC: a public key is never
    /// used as an HMAC secret.
    fn fits(self, alg: Algorithm) -> bool {
        match self {
            Self::Rsa => alg.family() == AlgorithmFamily::Rsa,
            Self::P256 => alg == Algorithm::ES256,
            Self::P384 => alg == Algorithm::ES384,
            Self::Ed25519 => alg == Algorithm::EdDSA,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Rsa => "an RSA key (fits RS256, RS384, RS512, PS256, PS384, PS512)",
            Self::P256 => "an EC P-256 key (fits ES256)",
            Self::P384 => "an EC P-384 key (fits ES384)",
            Self::Ed25519 => "an Ed25519 key (fits EdDSA)",
        }
    }
}

/// Verifies connection JWTs. Built once from [`JwtConfig`] (keys are read and validated
/// then); [`JwtVerifier::verify`] does no IO and takes the time from the caller.
#[derive(Clone)]
pub struct JwtVerifier {
    /// Bit `i` set when `ALGORITHMS[i]` is allowed.
    allowed: u16,
    /// The allowed algorithm names, in configuration order, without duplicates.
    names: Vec<&'static str>,
    /// The HMAC secret; `Some` iff an HS* algorithm is allowed.
    hmac: Option<DecodingKey>,
    /// The public key and its type; `Some` iff an asymmetric algorithm is allowed.
    public: Option<(PublicKeyKind, DecodingKey)>,
    /// Base64url encodings of the headers common libraries emit for the allowed algorithms
    /// (`{"alg":"HS256","typ":"JWT"}` and the like), with the algorithm. A token
    /// whose header is byte-for-byte one of these skips decoding and parsing it: ~10% of an
    /// HS256 verification. Any other header takes the general path.
    known_headers: Vec<(String, Algorithm)>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_s: u64,
    require_exp: bool,
    refresh_grace_ms: u64,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithms", &self.names)
            .field("hmac", &self.hmac.as_ref().map(|_| "[redacted]"))
            .field("public_key", &self.public.as_ref().map(|(kind, _)| kind))
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_s", &self.leeway_s)
            .field("require_exp", &self.require_exp)
            .field("refresh_grace_ms", &self.refresh_grace_ms)
            .finish()
    }
}

/// The JOSE header fields Tether looks at. Anything else (`typ`, `kid`, ...) is ignored.
#[derive(Deserialize)]
struct RawHeader<'a> {
    /// Borrowed when the JSON string has no escapes, which is always the case in practice.
    #[serde(borrow)]
    alg: Cow<'a, str>,
    /// RFC 7515 §4.1.11: a recipient must reject a token listing critical extensions it
    /// does not understand. Tether understands none, so any `crit` is rejected.
    #[serde(default)]
    crit: Option<IgnoredAny>,
}

/// First pass over the claims: each claim Tether uses, captured as raw JSON text so that it
/// can be type-checked on its own with an error naming it (a derive error would quote the
/// offending value). Unknown claims (`iat`, `jti`, ...) are skipped; a duplicated known
/// claim is an error, so that no two parsers can disagree on which copy counts.
#[derive(Deserialize)]
struct RawClaims<'a> {
    #[serde(borrow, default)]
    sub: Option<&'a RawValue>,
    #[serde(borrow, default)]
    exp: Option<&'a RawValue>,
    #[serde(borrow, default)]
    nbf: Option<&'a RawValue>,
    #[serde(borrow, default)]
    iss: Option<&'a RawValue>,
    #[serde(borrow, default)]
    aud: Option<&'a RawValue>,
    #[serde(borrow, default)]
    info: Option<&'a RawValue>,
    #[serde(borrow, default)]
    channels: Option<&'a RawValue>,
    #[serde(borrow, default)]
    device: Option<&'a RawValue>,
    #[serde(borrow, default)]
    zone: Option<&'a RawValue>,
}

impl JwtVerifier {
    /// Validates `config` and loads its keys. The error is a message for the operator that
    /// names the offending field; it never contains the secret.
    pub fn from_config(config: &JwtConfig) -> Result<Self, String> {
        if config.algorithms.is_empty() {
            return Err("auth.jwt.algorithms must list at least one algorithm".to_owned());
        }
        let mut allowed = 0u16;
        let mut names = Vec::with_capacity(config.algorithms.len());
        for name in &config.algorithms {
            let (index, canonical, _) = algorithm_by_name(name).ok_or_else(|| unknown_algorithm(name))?;
            if allowed & (1 << index) == 0 {
                allowed |= 1 << index;
                names.push(canonical);
            }
        }
        let allowed_algs = || ALGORITHMS.iter().enumerate().filter(move |(i, _)| allowed & (1u16 << *i) != 0);
        let wants_hmac = allowed_algs().any(|(_, (_, a))| a.family() == AlgorithmFamily::Hmac);
        let wants_public = allowed_algs().any(|(_, (_, a))| a.family() != AlgorithmFamily::Hmac);

        // A key that is configured but not needed is an error too: it usually means the
        // operator believes an algorithm is enabled when it is not.
        let hmac_field = match (&config.hmac_secret, &config.hmac_secret_file) {
            (Some(_), _) => Some("hmac_secret"),
            (None, Some(_)) => Some("hmac_secret_file"),
            (None, None) => None,
        };
        let hmac = match hmac_field {
            Some(field) if !wants_hmac => {
                return Err(format!(
                    "auth.jwt.{field} is set but no HS256/HS384/HS512 algorithm is allowed in \
                     auth.jwt.algorithms"
                ));
            }
            None if wants_hmac => {
                return Err("auth.jwt.algorithms allows an HS* algorithm: set auth.jwt.hmac_secret \
                            or auth.jwt.hmac_secret_file"
                    .to_owned());
            }
            _ => load_hmac_secret(config)?.map(|secret| DecodingKey::from_secret(&secret)),
        };

        let public = match &config.public_key_file {
            Some(path) if wants_public => {
                let (kind, key) = load_public_key(path)?;
                for (_, (name, alg)) in allowed_algs() {
                    if alg.family() == AlgorithmFamily::Hmac {
                        continue;
                    }
                    if !kind.fits(*alg) {
                        return Err(format!(
                            "auth.jwt.algorithms allows {name}, which does not fit auth.jwt.public_key_file \
                             {}: it holds {}",
                            path.display(),
                            kind.describe()
                        ));
                    }
                    // Builds the verifier the hot path will build, so a key that parses as
                    // PEM but is unusable (an EC point off the curve, say) fails now.
                    if jsonwebtoken::crypto::verify("", PROBE_MESSAGE, &key, *alg).is_err() {
                        return Err(format!(
                            "auth.jwt.public_key_file {}: the key cannot verify {name}",
                            path.display()
                        ));
                    }
                }
                Some((kind, key))
            }
            Some(_) => {
                return Err("auth.jwt.public_key_file is set but no asymmetric algorithm (RS*, PS*, ES*, \
                            EdDSA) is allowed in auth.jwt.algorithms"
                    .to_owned());
            }
            None if wants_public => {
                return Err("auth.jwt.algorithms allows an asymmetric algorithm: set \
                            auth.jwt.public_key_file"
                    .to_owned());
            }
            None => None,
        };
        if config.private_key_file.is_some() && !wants_public {
            return Err("auth.jwt.private_key_file is set but no asymmetric algorithm (RS*, PS*, ES*, \
                        EdDSA) is allowed in auth.jwt.algorithms"
                .to_owned());
        }
        if config.issuer.as_deref() == Some("") {
            return Err("auth.jwt.issuer is empty: remove it or give the expected issuer".to_owned());
        }
        if config.audience.as_deref() == Some("") {
            return Err("auth.jwt.audience is empty: remove it or give the expected audience".to_owned());
        }

        let known_headers = allowed_algs()
            .flat_map(|(_, (name, alg))| {
                [
                    format!(r#"{{"alg":"{name}","typ":"JWT"}}"#),
                    format!(r#"{{"typ":"JWT","alg":"{name}"}}"#),
                    format!(r#"{{"alg":"{name}"}}"#),
                ]
                .map(|json| (URL_SAFE_NO_PAD.encode(json), *alg))
            })
            .collect();

        Ok(Self {
            allowed,
            names,
            hmac,
            public,
            known_headers,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            leeway_s: config.leeway_s,
            require_exp: config.require_exp,
            refresh_grace_ms: config.refresh_grace_ms,
        })
    }

    /// The accepted algorithm names, in configuration order.
    pub fn expected_algorithms(&self) -> &[&'static str] {
        &self.names
    }

    /// How long a connection whose token expired may keep going while it sends a fresh
    /// token, in milliseconds ([`JwtConfig::refresh_grace_ms`]).
    pub fn refresh_grace_ms(&self) -> u64 {
        self.refresh_grace_ms
    }

    /// Verifies `token` at Unix time `now_s` and returns its claims.
    ///
    /// Checks, in order: size and shape, header `alg` against the allow-list, signature
    /// with the key of that algorithm's family, claim types and values, `iss`, `aud`,
    /// `nbf`, `exp`. Expiry is checked last, so [`JwtError::Expired`] means "this token
    /// would be accepted if it were fresh" and the client can usefully fetch a new one.
    pub fn verify(&self, token: &str, now_s: u64) -> Result<JwtClaims, JwtError> {
        let payload = self.check_signature(token)?;
        if !is_json_object(&payload) {
            return Err(JwtError::Malformed);
        }
        // Validating UTF-8 once up front lets serde_json skip its own per-string and
        // per-raw-value checks (`from_str` instead of `from_slice`): measurably faster.
        let payload = std::str::from_utf8(&payload).map_err(|_| JwtError::Malformed)?;
        let raw: RawClaims<'_> = serde_json::from_str(payload).map_err(|e| match e.classify() {
            // The payload is an object (checked above), so a data error means a claim
            // Tether reads appears twice.
            serde_json::error::Category::Data => invalid("a claim appears more than once"),
            _ => JwtError::Malformed,
        })?;
        self.check_claims(&raw, now_s)
    }

    /// Checks the token's shape, its header and its signature; returns the decoded payload,
    /// which is only worth parsing as JSON once the signature is known to be good.
    fn check_signature(&self, token: &str) -> Result<Vec<u8>, JwtError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(JwtError::Malformed);
        }
        let (header_b64, rest) = token.split_once('.').ok_or(JwtError::Malformed)?;
        let (payload_b64, signature_b64) = rest.split_once('.').ok_or(JwtError::Malformed)?;
        // Exactly three parts: a fourth `.` would make this a JWE or garbage.
        if signature_b64.contains('.') {
            return Err(JwtError::Malformed);
        }
        let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];

        let alg = match self.known_headers.iter().find(|(known, _)| known == header_b64) {
            Some((_, alg)) => *alg,
            None => self.parse_header(header_b64)?,
        };
        // The key is picked by the family of the (allowed) header algorithm, never the
        // other way round: an HS* token can only meet the HMAC secret.
        let key = if alg.family() == AlgorithmFamily::Hmac {
            self.hmac.as_ref()
        } else {
            self.public.as_ref().filter(|(kind, _)| kind.fits(alg)).map(|(_, key)| key)
        };
        // Unreachable with a validated config; kept so that a future change cannot turn a
        // missing key into an accepted token.
        let key = key.ok_or(JwtError::AlgorithmNotAllowed)?;
        // Decoded before the signature check so that a badly encoded payload is reported as
        // malformed whatever the signature; this costs nothing, the payload is needed next.
        let payload = decode_b64(payload_b64)?;

        match jsonwebtoken::crypto::verify(signature_b64, signing_input.as_bytes(), key, alg) {
            Ok(true) => Ok(payload),
            Ok(false) => Err(JwtError::BadSignature),
            Err(e) => match e.kind() {
                jsonwebtoken::errors::ErrorKind::Base64(_) => Err(JwtError::Malformed),
                _ => Err(JwtError::BadSignature),
            },
        }
    }

    /// Decodes and parses a header; returns its algorithm if that is allowed.
    fn parse_header(&self, header_b64: &str) -> Result<Algorithm, JwtError> {
        let header_json = decode_b64(header_b64)?;
        if !is_json_object(&header_json) {
            return Err(JwtError::Malformed);
        }
        let header: RawHeader<'_> = serde_json::from_slice(&header_json).map_err(|_| JwtError::Malformed)?;
        if header.crit.is_some() {
            return Err(JwtError::Malformed);
        }
        let (index, _, alg) = algorithm_by_name(&header.alg).ok_or(JwtError::AlgorithmNotAllowed)?;
        if self.allowed & (1 << index) == 0 {
            return Err(JwtError::AlgorithmNotAllowed);
        }
        Ok(alg)
    }

    /// Type-checks and validates the claims of a token whose signature is good.
    fn check_claims(&self, raw: &RawClaims<'_>, now_s: u64) -> Result<JwtClaims, JwtError> {
        let sub = match raw.sub {
            Some(v) => parse_id(v, "sub")?,
            None => return Err(invalid("`sub` is missing")),
        };
        let exp = raw.exp.map(|v| numeric_date(v, "exp", false)).transpose()?;
        let nbf = raw.nbf.map(|v| numeric_date(v, "nbf", true)).transpose()?;
        let channels = match raw.channels {
            Some(v) => parse_channels(v)?,
            None => Vec::new(),
        };
        if let Some(info) = raw.info
            && json_depth(info.get()) > MAX_INFO_DEPTH
        {
            return Err(invalid("`info` is nested too deeply"));
        }
        let device = raw.device.map(|v| parse_id(v, "device")).transpose()?;
        let zone = raw.zone.map(|v| parse_id(v, "zone")).transpose()?;

        if let Some(expected) = &self.issuer
            && raw.iss.and_then(parse_str).is_none_or(|iss| iss != expected.as_str())
        {
            return Err(JwtError::WrongIssuer);
        }
        if let Some(expected) = &self.audience
            && !raw.aud.is_some_and(|aud| audience_contains(aud, expected))
        {
            return Err(JwtError::WrongAudience);
        }
        if let Some(nbf) = nbf
            && nbf > now_s.saturating_add(self.leeway_s)
        {
            return Err(JwtError::NotYetValid);
        }
        match exp {
            Some(exp) if exp.saturating_add(self.leeway_s) <= now_s => return Err(JwtError::Expired),
            None if self.require_exp => return Err(invalid("`exp` is missing")),
            _ => {}
        }

        Ok(JwtClaims { sub, exp, info: raw.info.map(ToOwned::to_owned), channels, device, zone })
    }
}

/// What `tether token mint` puts in a development token. `iss` and `aud` come from the
/// configuration, so the token passes this server's checks.
#[derive(Debug, Clone, Default)]
pub struct MintClaims {
    /// User id (`sub`).
    pub sub: String,
    /// Expiry (`exp`), Unix seconds.
    pub exp_s: u64,
    /// Not before (`nbf`), Unix seconds; omitted when `None`.
    pub nbf_s: Option<u64>,
    /// Issued at (`iat`), Unix seconds.
    pub iat_s: u64,
    /// The `info` claim; omitted when `None`.
    pub info: Option<serde_json::Value>,
    /// Channel grants (`channels`); omitted when empty.
    pub channels: Vec<String>,
    /// The `device` claim; omitted when `None`.
    pub device: Option<String>,
    /// The `zone` claim; omitted when `None`.
    pub zone: Option<String>,
}

/// The payload `mint` signs.
#[derive(Serialize)]
struct MintPayload<'a> {
    sub: &'a str,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
    iat: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    info: Option<&'a serde_json::Value>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    channels: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    zone: Option<&'a str>,
}

/// Mints a development token (`tether token mint`) with `algorithm`, or the first of the
/// configured `algorithms` when `None`.
///
/// HS* tokens are signed with the configured HMAC secret; asymmetric ones with
/// `private_key_file`. The result is then verified with this very configuration (at the
/// later of `iat_s` and `nbf_s`), so a token that this server would reject — a private key
/// that does not match `public_key_file`, an invalid `sub` or channel, `exp_s` not after
/// `iat_s` — is an error here rather than a confusing failure at connect time.
pub fn mint(config: &JwtConfig, claims: &MintClaims, algorithm: Option<&str>) -> Result<String, String> {
    let verifier = JwtVerifier::from_config(config)?;
    let name = match algorithm {
        Some(name) => name,
        None => verifier.names.first().copied().ok_or("auth.jwt.algorithms is empty")?,
    };
    let (index, name, alg) = algorithm_by_name(name).ok_or_else(|| unknown_algorithm(name))?;
    if verifier.allowed & (1 << index) == 0 {
        return Err(format!(
            "{name} is not in auth.jwt.algorithms ({}); the server would reject the token",
            verifier.names.join(", ")
        ));
    }
    let key = match (alg.family(), &verifier.hmac) {
        (AlgorithmFamily::Hmac, Some(secret)) => EncodingKey::from_secret(
            secret.try_get_as_bytes().map_err(|_| "auth.jwt.hmac_secret could not be loaded")?,
        ),
        (AlgorithmFamily::Hmac, None) => return Err("auth.jwt.hmac_secret is not set".to_owned()),
        (family, _) => load_private_key(config, family)?,
    };
    let payload = MintPayload {
        sub: &claims.sub,
        exp: claims.exp_s,
        nbf: claims.nbf_s,
        iat: claims.iat_s,
        iss: config.issuer.as_deref(),
        aud: config.audience.as_deref(),
        info: claims.info.as_ref(),
        channels: &claims.channels,
        device: claims.device.as_deref(),
        zone: claims.zone.as_deref(),
    };
    let token = jsonwebtoken::encode(&Header::new(alg), &payload, &key)
        .map_err(|e| format!("signing the token with {name} failed: {e}"))?;

    let at = claims.nbf_s.map_or(claims.iat_s, |nbf| nbf.max(claims.iat_s));
    match verifier.verify(&token, at) {
        Ok(_) => Ok(token),
        Err(JwtError::BadSignature) => Err(format!(
            "the token does not verify with the configured key: does auth.jwt.private_key_file \
             match auth.jwt.public_key_file? ({name})"
        )),
        Err(JwtError::Expired) => Err("exp must be later than iat and nbf".to_owned()),
        Err(e) => Err(format!("this server would reject the token: {e}")),
    }
}

/// Config error for an algorithm name that is not accepted.
fn unknown_algorithm(name: &str) -> String {
    if name.eq_ignore_ascii_case("none") {
        return "auth.jwt.algorithms: \"none\" is never allowed (unsigned tokens would let anyone \
                connect as anyone)"
            .to_owned();
    }
    if let Some((canonical, _)) = ALGORITHMS.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
        return format!(
            "auth.jwt.algorithms: unknown algorithm {name:?}; algorithm names are case-sensitive: \
             did you mean {canonical:?}?"
        );
    }
    format!("auth.jwt.algorithms: unknown algorithm {name:?}; expected some of {}", algorithm_list())
}

/// Reads the HMAC secret from `hmac_secret` or `hmac_secret_file` and checks its length.
fn load_hmac_secret(config: &JwtConfig) -> Result<Option<Vec<u8>>, String> {
    let secret = match (&config.hmac_secret, &config.hmac_secret_file) {
        (Some(_), Some(_)) => {
            return Err(
                "auth.jwt.hmac_secret and auth.jwt.hmac_secret_file are both set; keep one".to_owned()
            );
        }
        (Some(secret), None) => secret.as_bytes().to_vec(),
        (None, Some(path)) => {
            let mut bytes = read_key_file(path, "hmac_secret_file")?;
            // One line ending, as left by `echo` or an editor; nothing else is trimmed.
            if bytes.ends_with(b"\r\n") {
                bytes.truncate(bytes.len() - 2);
            } else if bytes.ends_with(b"\n") {
                bytes.truncate(bytes.len() - 1);
            }
            bytes
        }
        (None, None) => return Ok(None),
    };
    if secret.len() < MIN_HMAC_SECRET_LEN {
        let field = if config.hmac_secret.is_some() { "hmac_secret" } else { "hmac_secret_file" };
        return Err(format!(
            "auth.jwt.{field}: the secret is {} bytes; at least {MIN_HMAC_SECRET_LEN} are required \
             (generate one with `openssl rand -base64 48`)",
            secret.len()
        ));
    }
    Ok(Some(secret))
}

/// Reads a key file of at most [`MAX_KEY_FILE_LEN`] bytes.
fn read_key_file(path: &Path, field: &str) -> Result<Vec<u8>, String> {
    let file = File::open(path).map_err(|e| format!("auth.jwt.{field} {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_KEY_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("auth.jwt.{field} {}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_KEY_FILE_LEN {
        return Err(format!(
            "auth.jwt.{field} {}: larger than {MAX_KEY_FILE_LEN} bytes, not a key file",
            path.display()
        ));
    }
    Ok(bytes)
}

/// The label of the first PEM block (`PUBLIC KEY` in `-----BEGIN PUBLIC KEY-----`).
fn pem_label(pem: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(pem).ok()?;
    let start = text.find("-----BEGIN ")? + "-----BEGIN ".len();
    let len = text[start..].find("-----")?;
    Some(&text[start..start + len])
}

/// Loads `public_key_file` and works out its type. Rejects private keys and certificates
/// (`jsonwebtoken` would load some of them as if they were public keys, and every token
/// would then fail verification), RSA keys under [`MIN_RSA_BITS`], EC curves other than
/// P-256/P-384, and Ed448.
fn load_public_key(path: &Path) -> Result<(PublicKeyKind, DecodingKey), String> {
    let field = "public_key_file";
    let pem = read_key_file(path, field)?;
    let shown = path.display();
    match pem_label(&pem) {
        Some("PUBLIC KEY" | "RSA PUBLIC KEY") => {}
        Some(label) if label.ends_with("PRIVATE KEY") => {
            return Err(format!(
                "auth.jwt.{field} {shown}: holds a private key; give the public key \
                 (`openssl pkey -in KEY -pubout`)"
            ));
        }
        Some("CERTIFICATE") => {
            return Err(format!(
                "auth.jwt.{field} {shown}: holds a certificate; extract its public key \
                 (`openssl x509 -in CERT -pubkey -noout`)"
            ));
        }
        Some(label) => {
            return Err(format!(
                "auth.jwt.{field} {shown}: expected a PUBLIC KEY PEM block, found {label:?}"
            ));
        }
        None => return Err(format!("auth.jwt.{field} {shown}: not a PEM file")),
    }

    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        // Parsing the modulus with the RSA implementation the verifier uses also rejects
        // keys it cannot handle (for instance moduli over 4096 bits).
        let bits = match Jwk::from_decoding_key(&key, None).map(|jwk| jwk.algorithm) {
            Ok(AlgorithmParameters::RSA(params)) => URL_SAFE_NO_PAD
                .decode(params.n.as_bytes())
                .ok()
                .map(|n| modulus_bits(&n))
                .ok_or_else(|| format!("auth.jwt.{field} {shown}: invalid RSA key"))?,
            _ => return Err(format!("auth.jwt.{field} {shown}: invalid or unsupported RSA key")),
        };
        if bits < MIN_RSA_BITS {
            return Err(format!(
                "auth.jwt.{field} {shown}: RSA key of {bits} bits; at least {MIN_RSA_BITS} are required"
            ));
        }
        return Ok((PublicKeyKind::Rsa, key));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
        // An uncompressed SEC1 point: 0x04 || x || y.
        let kind = match key.try_get_as_bytes().map(<[u8]>::len) {
            Ok(65) => PublicKeyKind::P256,
            Ok(97) => PublicKeyKind::P384,
            _ => {
                return Err(format!(
                    "auth.jwt.{field} {shown}: EC key on an unsupported curve (or compressed); \
                     P-256 (ES256) and P-384 (ES384) are supported"
                ));
            }
        };
        return Ok((kind, key));
    }
    if let Ok(key) = DecodingKey::from_ed_pem(&pem) {
        // jsonwebtoken slices the first 32 bytes when it builds the verifier, which would
        // panic on a shorter key: check the length here, once.
        if key.try_get_as_bytes().map(<[u8]>::len) != Ok(32) {
            return Err(format!("auth.jwt.{field} {shown}: invalid Ed25519 key"));
        }
        return Ok((PublicKeyKind::Ed25519, key));
    }
    Err(format!("auth.jwt.{field} {shown}: not an RSA, EC (P-256, P-384) or Ed25519 public key"))
}

/// Significant bits of a big-endian unsigned integer.
fn modulus_bits(n: &[u8]) -> usize {
    match n.iter().position(|&b| b != 0) {
        Some(i) => (n.len() - i - 1) * 8 + (8 - n[i].leading_zeros() as usize),
        None => 0,
    }
}

/// Loads `private_key_file` for minting with an algorithm of `family`.
fn load_private_key(config: &JwtConfig, family: AlgorithmFamily) -> Result<EncodingKey, String> {
    let field = "private_key_file";
    let Some(path) = &config.private_key_file else {
        return Err(format!(
            "auth.jwt.{field} is not set; minting with an asymmetric algorithm needs the private key"
        ));
    };
    let pem = read_key_file(path, field)?;
    let shown = path.display();
    match pem_label(&pem) {
        Some("PRIVATE KEY" | "RSA PRIVATE KEY") => {}
        Some("EC PRIVATE KEY") => {
            return Err(format!(
                "auth.jwt.{field} {shown}: SEC1 EC keys are not supported; convert it to PKCS#8 \
                 (`openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.p8`)"
            ));
        }
        Some(label) => {
            return Err(format!(
                "auth.jwt.{field} {shown}: expected a PRIVATE KEY PEM block, found {label:?}"
            ));
        }
        None => return Err(format!("auth.jwt.{field} {shown}: not a PEM file")),
    }
    let key = match family {
        AlgorithmFamily::Rsa => EncodingKey::from_rsa_pem(&pem),
        AlgorithmFamily::Ec => EncodingKey::from_ec_pem(&pem),
        AlgorithmFamily::Ed => EncodingKey::from_ed_pem(&pem),
        AlgorithmFamily::Hmac => return Err("an HMAC secret is not a private key".to_owned()),
    };
    key.map_err(|_| {
        format!("auth.jwt.{field} {shown}: not a private key of the algorithm's type ({family:?})")
    })
}

/// Decodes a token part: base64url without padding, canonical (no stray trailing bits), as
/// RFC 7515 §2 requires.
fn decode_b64(b64: &str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD.decode(b64).map_err(|_| JwtError::Malformed)
}

/// True if `json` starts like a JSON object. Header and claims must be objects; serde would
/// otherwise also accept a JSON array for a struct, field by position.
fn is_json_object(json: &[u8]) -> bool {
    json.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

fn invalid(message: &str) -> JwtError {
    JwtError::InvalidClaims(message.to_owned())
}

/// A JSON string, borrowed when it has no escapes.
fn parse_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    if let Ok(s) = serde_json::from_str::<&str>(raw.get()) {
        return Some(Cow::Borrowed(s));
    }
    serde_json::from_str::<String>(raw.get()).ok().map(Cow::Owned)
}

/// `sub`, `device`, `zone`: a string of 1 to [`MAX_ID_CHARS`] characters, none a control
/// character (they end up in logs and in other clients' presence lists).
fn parse_id(raw: &RawValue, claim: &str) -> Result<String, JwtError> {
    let s: String = serde_json::from_str(raw.get()).map_err(|_| invalid_claim(claim, "must be a string"))?;
    if s.is_empty() {
        return Err(invalid_claim(claim, "is empty"));
    }
    if s.chars().count() > MAX_ID_CHARS {
        return Err(invalid_claim(claim, "is longer than 128 characters"));
    }
    if s.chars().any(char::is_control) {
        return Err(invalid_claim(claim, "contains control characters"));
    }
    Ok(s)
}

fn invalid_claim(claim: &str, what: &str) -> JwtError {
    JwtError::InvalidClaims(format!("`{claim}` {what}"))
}

/// A NumericDate (RFC 7519 §2): seconds since the epoch, possibly fractional (JavaScript
/// backends often send `Date.now() / 1000 + 3600`). Fractions are rounded towards the
/// stricter side: down for `exp`, up for `nbf`.
fn numeric_date(raw: &RawValue, claim: &str, round_up: bool) -> Result<u64, JwtError> {
    let bad = || invalid_claim(claim, "must be a non-negative number of seconds");
    let n: serde_json::Number = serde_json::from_str(raw.get()).map_err(|_| bad())?;
    if let Some(v) = n.as_u64() {
        return Ok(v);
    }
    match n.as_f64() {
        // The range excludes NaN, infinities and negatives; `as` cannot overflow below 1e19.
        Some(f) if (0.0..1.0e19).contains(&f) => {
            Ok(if round_up { f.ceil() as u64 } else { f.floor() as u64 })
        }
        _ => Err(bad()),
    }
}

/// The `channels` claim: an array of channel names or prefix patterns, kept as written.
fn parse_channels(raw: &RawValue) -> Result<Vec<String>, JwtError> {
    let channels: Vec<String> =
        serde_json::from_str(raw.get()).map_err(|_| invalid("`channels` must be an array of strings"))?;
    for (i, channel) in channels.iter().enumerate() {
        // The same grammar the grants will be parsed with later, so a token accepted here
        // never fails there. Its messages quote no input.
        if let Err(e) = ChannelPattern::parse(channel) {
            return Err(JwtError::InvalidClaims(format!("`channels`[{i}]: {e}")));
        }
    }
    Ok(channels)
}

/// Maximum nesting depth of arrays and objects in `json`, which serde_json has already
/// validated (so a plain scan that skips strings is exact). serde_json captures raw values
/// iteratively, without its recursion limit, hence this check.
fn json_depth(json: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for b in json.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// `aud` is a string or an array of strings (RFC 7519 §4.1.3); true if it is, or contains,
/// `expected`. Any other shape is a mismatch.
fn audience_contains(raw: &RawValue, expected: &str) -> bool {
    if raw.get().starts_with('[') {
        serde_json::from_str::<Vec<Cow<'_, str>>>(raw.get())
            .is_ok_and(|list| list.iter().any(|aud| aud == expected))
    } else {
        parse_str(raw).is_some_and(|aud| aud == expected)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::path::PathBuf;

    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{Algorithm, EncodingKey};
    use serde_json::json;

    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef-test-only";
    const NOW: u64 = 1_700_000_000;

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jwt")
    }

    fn fixture(name: &str) -> PathBuf {
        fixtures().join(name)
    }

    fn read_fixture(name: &str) -> Vec<u8> {
        std::fs::read(fixture(name)).unwrap()
    }

    fn config(algorithms: &[&str]) -> JwtConfig {
        JwtConfig {
            algorithms: algorithms.iter().map(|s| (*s).to_owned()).collect(),
            hmac_secret: None,
            hmac_secret_file: None,
            public_key_file: None,
            private_key_file: None,
            issuer: None,
            audience: None,
            leeway_s: 0,
            require_exp: true,
            refresh_grace_ms: DEFAULT_REFRESH_GRACE_MS,
        }
    }

    fn hs_config() -> JwtConfig {
        JwtConfig { hmac_secret: Some(SECRET.to_owned()), ..config(&["HS256"]) }
    }

    fn asym_config(alg: &str, public: &str, private: &str) -> JwtConfig {
        JwtConfig {
            public_key_file: Some(fixture(public)),
            private_key_file: Some(fixture(private)),
            ..config(&[alg])
        }
    }

    fn rs_config() -> JwtConfig {
        asym_config("RS256", "rsa_public.pem", "rsa_private.pem")
    }

    fn es_config() -> JwtConfig {
        asym_config("ES256", "ec_public.pem", "ec_private.pem")
    }

    fn ed_config() -> JwtConfig {
        asym_config("EdDSA", "ed25519_public.pem", "ed25519_private.pem")
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A token with exactly this header and payload text, signed with `key` as `alg`.
    fn raw_token(header: &str, payload: &str, key: &EncodingKey, alg: Algorithm) -> String {
        let message = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).unwrap();
        format!("{message}.{signature}")
    }

    /// An HS256 token over `payload` (any JSON value) with the test secret.
    fn hs_token(payload: &serde_json::Value) -> String {
        raw_token(
            r#"{"alg":"HS256","typ":"JWT"}"#,
            &payload.to_string(),
            &EncodingKey::from_secret(SECRET.as_bytes()),
            Algorithm::HS256,
        )
    }

    fn verifier(config: &JwtConfig) -> JwtVerifier {
        JwtVerifier::from_config(config).unwrap()
    }

    fn config_error(config: &JwtConfig) -> String {
        JwtVerifier::from_config(config).unwrap_err()
    }

    fn mint_claims() -> MintClaims {
        MintClaims {
            sub: "user-42".to_owned(),
            exp_s: NOW + 600,
            nbf_s: None,
            iat_s: NOW,
            info: Some(json!({"name": "Ada", "roles": ["admin"]})),
            channels: vec!["chat:lobby".to_owned(), "news:*".to_owned()],
            device: Some("phone-1".to_owned()),
            zone: Some("eu-west".to_owned()),
        }
    }

    // ---- fixtures --------------------------------------------------------------------

    #[test]
    fn fixtures_load_with_jsonwebtoken() {
        assert!(EncodingKey::from_rsa_pem(&read_fixture("rsa_private.pem")).is_ok());
        assert!(DecodingKey::from_rsa_pem(&read_fixture("rsa_public.pem")).is_ok());
        assert!(EncodingKey::from_ec_pem(&read_fixture("ec_private.pem")).is_ok());
        assert!(DecodingKey::from_ec_pem(&read_fixture("ec_public.pem")).is_ok());
        assert!(EncodingKey::from_ec_pem(&read_fixture("ec384_private.pem")).is_ok());
        assert!(DecodingKey::from_ec_pem(&read_fixture("ec384_public.pem")).is_ok());
        assert!(EncodingKey::from_ed_pem(&read_fixture("ed25519_private.pem")).is_ok());
        assert!(DecodingKey::from_ed_pem(&read_fixture("ed25519_public.pem")).is_ok());
    }

    // ---- valid tokens ----------------------------------------------------------------

    #[test]
    fn valid_hs256_token_is_accepted_with_claims() {
        let token = hs_token(&json!({
            "sub": "user-42", "exp": NOW + 60, "iat": NOW, "jti": "ignored",
            "info": {"name": "Ada", "n": [1, 2.5, null]},
            "channels": ["chat:lobby", "chat:room-*", "news:*", "*", "plain"],
            "device": "phone-1", "zone": "eu-west",
        }));
        let claims = verifier(&hs_config()).verify(&token, NOW).unwrap();
        assert_eq!(claims.sub, "user-42");
        assert_eq!(claims.exp, Some(NOW + 60));
        let info: serde_json::Value = serde_json::from_str(claims.info.unwrap().get()).unwrap();
        assert_eq!(info, json!({"name": "Ada", "n": [1, 2.5, null]}));
        assert_eq!(claims.channels, ["chat:lobby", "chat:room-*", "news:*", "*", "plain"]);
        assert_eq!(claims.device.as_deref(), Some("phone-1"));
        assert_eq!(claims.zone.as_deref(), Some("eu-west"));
    }

    #[test]
    fn info_is_kept_verbatim_and_optional_claims_default() {
        let payload = format!(r#"{{"sub":"u","exp":{},"info":{{"b" : 1,"a":"\u00e9"}}}}"#, NOW + 1);
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        let token = raw_token(r#"{"alg":"HS256"}"#, &payload, &key, Algorithm::HS256);
        let claims = verifier(&hs_config()).verify(&token, NOW).unwrap();
        assert_eq!(claims.info.unwrap().get(), r#"{"b" : 1,"a":"\u00e9"}"#);
        assert!(claims.channels.is_empty());
        assert_eq!(claims.device, None);
        assert_eq!(claims.zone, None);

        let token = hs_token(&json!({"sub": "u", "exp": NOW + 1, "info": null}));
        assert!(verifier(&hs_config()).verify(&token, NOW).unwrap().info.is_none());
    }

    fn check_valid_asymmetric(cfg: &JwtConfig, alg: Algorithm, private: &str) {
        let pem = read_fixture(private);
        let key = match alg.family() {
            AlgorithmFamily::Rsa => EncodingKey::from_rsa_pem(&pem),
            AlgorithmFamily::Ec => EncodingKey::from_ec_pem(&pem),
            _ => EncodingKey::from_ed_pem(&pem),
        }
        .unwrap();
        let claims = json!({"sub": "user-7", "exp": NOW + 60, "channels": ["chat:*"]});
        let token = jsonwebtoken::encode(&Header::new(alg), &claims, &key).unwrap();
        let got = verifier(cfg).verify(&token, NOW).unwrap();
        assert_eq!(got.sub, "user-7");
        assert_eq!(got.channels, ["chat:*"]);
    }

    #[test]
    fn valid_rs256_token_is_accepted() {
        check_valid_asymmetric(&rs_config(), Algorithm::RS256, "rsa_private.pem");
    }

    #[test]
    fn valid_es256_token_is_accepted() {
        check_valid_asymmetric(&es_config(), Algorithm::ES256, "ec_private.pem");
    }

    #[test]
    fn valid_eddsa_token_is_accepted() {
        check_valid_asymmetric(&ed_config(), Algorithm::EdDSA, "ed25519_private.pem");
    }

    #[test]
    fn valid_es384_and_ps256_tokens_are_accepted() {
        let cfg = asym_config("ES384", "ec384_public.pem", "ec384_private.pem");
        check_valid_asymmetric(&cfg, Algorithm::ES384, "ec384_private.pem");
        let cfg = JwtConfig { algorithms: vec!["RS256".to_owned(), "PS256".to_owned()], ..rs_config() };
        check_valid_asymmetric(&cfg, Algorithm::PS256, "rsa_private.pem");
    }

    // ---- algorithm confusion and `none` -----------------------------------------------

    #[test]
    fn alg_none_is_rejected() {
        let payload = json!({"sub": "admin", "exp": NOW + 60}).to_string();
        for header in [
            r#"{"alg":"none","typ":"JWT"}"#,
            r#"{"alg":"None","typ":"JWT"}"#,
            r#"{"alg":"NONE"}"#,
            r#"{"alg":"nOnE"}"#,
        ] {
            let token = format!("{}.{}.", b64(header.as_bytes()), b64(payload.as_bytes()));
            for cfg in [hs_config(), rs_config()] {
                assert_eq!(verifier(&cfg).verify(&token, NOW).unwrap_err(), JwtError::AlgorithmNotAllowed);
            }
        }
    }

    /// An HS256 token whose HMAC key is the RSA public key PEM: what an attacker can build
    /// from public information. A verifier that picked "the configured key" and trusted the
    /// header's algorithm would accept it.
    fn confused_token() -> String {
        let public_pem = read_fixture("rsa_public.pem");
        raw_token(
            r#"{"alg":"HS256","typ":"JWT"}"#,
            &json!({"sub": "admin", "exp": NOW + 60}).to_string(),
            &EncodingKey::from_secret(&public_pem),
            Algorithm::HS256,
        )
    }

    #[test]
    fn hs256_signed_with_public_key_is_rejected_when_only_rs256_allowed() {
        let v = verifier(&rs_config());
        assert_eq!(v.verify(&confused_token(), NOW).unwrap_err(), JwtError::AlgorithmNotAllowed);
    }

    #[test]
    fn hs256_signed_with_public_key_is_rejected_when_rs256_and_hs256_allowed() {
        let cfg = JwtConfig {
            algorithms: vec!["RS256".to_owned(), "HS256".to_owned()],
            hmac_secret: Some(SECRET.to_owned()),
            ..rs_config()
        };
        let v = verifier(&cfg);
        assert_eq!(v.verify(&confused_token(), NOW).unwrap_err(), JwtError::BadSignature);
        // Both families still work with their own keys.
        assert!(v.verify(&hs_token(&json!({"sub": "u", "exp": NOW + 1})), NOW).is_ok());
        let rs = mint(&cfg, &mint_claims(), Some("RS256")).unwrap();
        assert!(v.verify(&rs, NOW).is_ok());
    }

    #[test]
    fn allowed_family_but_unlisted_algorithm_is_rejected() {
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        let payload = json!({"sub": "u", "exp": NOW + 60}).to_string();
        let token = raw_token(r#"{"alg":"HS512"}"#, &payload, &key, Algorithm::HS512);
        assert_eq!(verifier(&hs_config()).verify(&token, NOW).unwrap_err(), JwtError::AlgorithmNotAllowed);
        // Algorithm names are case-sensitive.
        let token = raw_token(r#"{"alg":"hs256"}"#, &payload, &key, Algorithm::HS256);
        assert_eq!(verifier(&hs_config()).verify(&token, NOW).unwrap_err(), JwtError::AlgorithmNotAllowed);
        // An ES256 header against an RSA-only config.
        let es = mint(&es_config(), &mint_claims(), None).unwrap();
        assert_eq!(verifier(&rs_config()).verify(&es, NOW).unwrap_err(), JwtError::AlgorithmNotAllowed);
    }

    #[test]
    fn token_signed_with_another_key_of_the_right_type_is_rejected() {
        let other =
            JwtConfig { hmac_secret: Some("another-secret-of-at-least-32-bytes!".to_owned()), ..hs_config() };
        let token = mint(&other, &mint_claims(), None).unwrap();
        assert_eq!(verifier(&hs_config()).verify(&token, NOW).unwrap_err(), JwtError::BadSignature);
    }

    #[test]
    fn known_header_fast_path_agrees_with_the_parser() {
        let cfg = JwtConfig { algorithms: vec!["HS256".into(), "HS384".into()], ..hs_config() };
        let v = verifier(&cfg);
        assert_eq!(v.known_headers.len(), 6);
        for (b64, alg) in &v.known_headers {
            assert_eq!(v.parse_header(b64), Ok(*alg));
        }
        // A known header of an algorithm that is not allowed is not in the table.
        let hs512 = b64(br#"{"alg":"HS512","typ":"JWT"}"#);
        assert!(v.known_headers.iter().all(|(known, _)| *known != hs512));
        assert_eq!(v.parse_header(&hs512), Err(JwtError::AlgorithmNotAllowed));
        // Tokens with known and other header spellings both verify.
        let payload = json!({"sub": "u", "exp": NOW + 1}).to_string();
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        for header in
            [r#"{"alg":"HS256"}"#, r#"{"typ":"JWT","alg":"HS384"}"#, r#"{ "alg": "HS256", "kid": "k" }"#]
        {
            let alg = if header.contains("HS384") { Algorithm::HS384 } else { Algorithm::HS256 };
            let token = raw_token(header, &payload, &key, alg);
            assert!(v.verify(&token, NOW).is_ok(), "{header}");
        }
    }

    // ---- time ------------------------------------------------------------------------

    #[test]
    fn expired_token_is_rejected() {
        let v = verifier(&hs_config());
        let token = hs_token(&json!({"sub": "u", "exp": NOW}));
        assert_eq!(v.verify(&token, NOW).unwrap_err(), JwtError::Expired);
        assert_eq!(v.verify(&token, NOW + 1000).unwrap_err(), JwtError::Expired);
        assert!(v.verify(&token, NOW - 1).is_ok());
        assert_eq!(JwtError::Expired.code(), ErrorCode::TokenExpired);
    }

    #[test]
    fn not_yet_valid_token_is_rejected() {
        let v = verifier(&hs_config());
        let token = hs_token(&json!({"sub": "u", "exp": NOW + 100, "nbf": NOW + 10}));
        assert_eq!(v.verify(&token, NOW).unwrap_err(), JwtError::NotYetValid);
        assert_eq!(v.verify(&token, NOW + 9).unwrap_err(), JwtError::NotYetValid);
        assert!(v.verify(&token, NOW + 10).is_ok());
        assert_eq!(JwtError::NotYetValid.code(), ErrorCode::InvalidToken);
    }

    #[test]
    fn leeway_is_honoured() {
        let v = verifier(&JwtConfig { leeway_s: 5, ..hs_config() });
        let expired = hs_token(&json!({"sub": "u", "exp": NOW}));
        assert!(v.verify(&expired, NOW + 4).is_ok());
        assert_eq!(v.verify(&expired, NOW + 5).unwrap_err(), JwtError::Expired);
        let early = hs_token(&json!({"sub": "u", "exp": NOW + 100, "nbf": NOW + 5}));
        assert!(v.verify(&early, NOW).is_ok());
        assert_eq!(v.verify(&early, NOW - 1).unwrap_err(), JwtError::NotYetValid);
        // No overflow at the edges of time.
        let v = verifier(&JwtConfig { leeway_s: u64::MAX, ..hs_config() });
        let token = hs_token(&json!({"sub": "u", "exp": u64::MAX, "nbf": u64::MAX}));
        assert!(v.verify(&token, u64::MAX - 1).is_ok());
        assert_eq!(v.verify(&token, u64::MAX).unwrap_err(), JwtError::Expired);
        assert!(v.verify(&token, 0).is_ok());
    }

    #[test]
    fn missing_exp_is_rejected_when_required() {
        let token = hs_token(&json!({"sub": "u"}));
        let err = verifier(&hs_config()).verify(&token, NOW).unwrap_err();
        assert!(matches!(&err, JwtError::InvalidClaims(m) if m.contains("`exp`")), "{err:?}");
        let claims = verifier(&JwtConfig { require_exp: false, ..hs_config() }).verify(&token, NOW).unwrap();
        assert_eq!(claims.exp, None);
    }

    #[test]
    fn fractional_and_malformed_numeric_dates() {
        let v = verifier(&hs_config());
        // Fractional exp rounds down, nbf up: the stricter side.
        let token = hs_token(&json!({"sub": "u", "exp": (NOW as f64) + 0.9}));
        assert_eq!(v.verify(&token, NOW).unwrap_err(), JwtError::Expired);
        assert_eq!(v.verify(&token, NOW - 1).unwrap().exp, Some(NOW));
        let token = hs_token(&json!({"sub": "u", "exp": NOW + 10, "nbf": (NOW as f64) + 0.1}));
        assert_eq!(v.verify(&token, NOW).unwrap_err(), JwtError::NotYetValid);
        for bad in [json!("1700000000"), json!(-1), json!(true), json!([1]), json!(1e300)] {
            let token = hs_token(&json!({"sub": "u", "exp": bad}));
            let err = v.verify(&token, NOW).unwrap_err();
            assert!(matches!(&err, JwtError::InvalidClaims(m) if m.contains("`exp`")), "{bad}: {err:?}");
            let token = hs_token(&json!({"sub": "u", "exp": NOW + 10, "nbf": bad}));
            assert!(matches!(v.verify(&token, NOW), Err(JwtError::InvalidClaims(_))), "{bad}");
        }
    }

    // ---- issuer and audience ---------------------------------------------------------

    #[test]
    fn issuer_is_checked() {
        let v = verifier(&JwtConfig { issuer: Some("https://app.example".to_owned()), ..hs_config() });
        let ok = hs_token(&json!({"sub": "u", "exp": NOW + 1, "iss": "https://app.example"}));
        assert!(v.verify(&ok, NOW).is_ok());
        for iss in [json!("https://evil.example"), json!(["https://app.example"]), json!(1), json!("")] {
            let token = hs_token(&json!({"sub": "u", "exp": NOW + 1, "iss": iss}));
            assert_eq!(v.verify(&token, NOW).unwrap_err(), JwtError::WrongIssuer, "{iss}");
        }
        let missing = hs_token(&json!({"sub": "u", "exp": NOW + 1}));
        assert_eq!(v.verify(&missing, NOW).unwrap_err(), JwtError::WrongIssuer);
        // Without a configured issuer, `iss` is not looked at.
        let any = hs_token(&json!({"sub": "u", "exp": NOW + 1, "iss": 42}));
        assert!(verifier(&hs_config()).verify(&any, NOW).is_ok());
    }

    #[test]
    fn audience_is_checked() {
        let v = verifier(&JwtConfig { audience: Some("tether".to_owned()), ..hs_config() });
        for aud in [json!("tether"), json!(["other", "tether"]), json!(["tether"])] {
            let token = hs_token(&json!({"sub": "u", "exp": NOW + 1, "aud": aud}));
            assert!(v.verify(&token, NOW).is_ok(), "{aud}");
        }
        for aud in [json!("other"), json!(["other"]), json!([]), json!(7), json!({"tether": 1}), json!([1])] {
            let token = hs_token(&json!({"sub": "u", "exp": NOW + 1, "aud": aud}));
            assert_eq!(v.verify(&token, NOW).unwrap_err(), JwtError::WrongAudience, "{aud}");
        }
    }

    #[test]
    fn missing_audience_is_rejected_when_required() {
        let v = verifier(&JwtConfig { audience: Some("tether".to_owned()), ..hs_config() });
        let token = hs_token(&json!({"sub": "u", "exp": NOW + 1}));
        assert_eq!(v.verify(&token, NOW).unwrap_err(), JwtError::WrongAudience);
        let token = hs_token(&json!({"sub": "u", "exp": NOW + 1, "aud": null}));
        assert_eq!(v.verify(&token, NOW).unwrap_err(), JwtError::WrongAudience);
    }

    #[test]
    fn expiry_is_reported_only_for_otherwise_valid_tokens() {
        let v = verifier(&JwtConfig { audience: Some("tether".to_owned()), ..hs_config() });
        let token = hs_token(&json!({"sub": "u", "exp": NOW - 10, "aud": "other"}));
        assert_eq!(v.verify(&token, NOW).unwrap_err(), JwtError::WrongAudience);
    }

    // ---- claims ----------------------------------------------------------------------

    #[test]
    fn sub_is_validated() {
        let v = verifier(&hs_config());
        let long = "x".repeat(129);
        for sub in [json!(null), json!(""), json!(42), json!(long), json!("a\nb"), json!("a\u{7f}")] {
            let token = hs_token(&json!({"sub": sub, "exp": NOW + 1}));
            let err = v.verify(&token, NOW).unwrap_err();
            assert!(matches!(&err, JwtError::InvalidClaims(m) if m.contains("`sub`")), "{sub}: {err:?}");
        }
        let token = hs_token(&json!({"exp": NOW + 1}));
        assert!(matches!(v.verify(&token, NOW), Err(JwtError::InvalidClaims(_))));
        // 128 characters, multi-byte, is fine.
        let token = hs_token(&json!({"sub": "é".repeat(128), "exp": NOW + 1}));
        assert_eq!(v.verify(&token, NOW).unwrap().sub.chars().count(), 128);
    }

    #[test]
    fn channels_device_and_zone_are_validated() {
        let v = verifier(&hs_config());
        for channels in [
            json!("chat:lobby"),
            json!([1]),
            json!(["ok", ""]),
            json!(["chat:*:x"]),
            json!(["a b"]),
            json!(["**"]),
            json!(["bad ns!:*"]),
            json!(["chat:"]),
        ] {
            let token = hs_token(&json!({"sub": "u", "exp": NOW + 1, "channels": channels}));
            let err = v.verify(&token, NOW).unwrap_err();
            assert!(matches!(&err, JwtError::InvalidClaims(m) if m.contains("`channels`")), "{channels}");
        }
        for (claim, value) in [("device", json!(1)), ("device", json!("")), ("zone", json!("x".repeat(129)))]
        {
            let token = hs_token(&json!({"sub": "u", "exp": NOW + 1, claim: value}));
            assert!(matches!(v.verify(&token, NOW), Err(JwtError::InvalidClaims(_))), "{claim}");
        }
    }

    #[test]
    fn duplicate_claims_are_rejected() {
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        let payload = format!(r#"{{"sub":"user","sub":"admin","exp":{}}}"#, NOW + 1);
        let token = raw_token(r#"{"alg":"HS256"}"#, &payload, &key, Algorithm::HS256);
        assert!(matches!(verifier(&hs_config()).verify(&token, NOW), Err(JwtError::InvalidClaims(_))));
        // A duplicated `alg` in the header is malformed.
        let payload = format!(r#"{{"sub":"u","exp":{}}}"#, NOW + 1);
        let token = raw_token(r#"{"alg":"HS256","alg":"none"}"#, &payload, &key, Algorithm::HS256);
        assert_eq!(verifier(&hs_config()).verify(&token, NOW).unwrap_err(), JwtError::Malformed);
    }

    // ---- tampering and garbage -------------------------------------------------------

    #[test]
    fn tampered_payload_is_rejected() {
        let token = hs_token(&json!({"sub": "user", "exp": NOW + 60}));
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = b64(json!({"sub": "admin", "exp": NOW + 60}).to_string().as_bytes());
        parts[1] = &forged;
        let tampered = parts.join(".");
        assert_eq!(verifier(&hs_config()).verify(&tampered, NOW).unwrap_err(), JwtError::BadSignature);

        for (cfg, alg) in [(rs_config(), "RS256"), (es_config(), "ES256"), (ed_config(), "EdDSA")] {
            let token = mint(&cfg, &mint_claims(), Some(alg)).unwrap();
            let (head, sig) = token.rsplit_once('.').unwrap();
            let (header, _) = head.split_once('.').unwrap();
            let tampered = format!("{header}.{forged}.{sig}");
            assert_eq!(verifier(&cfg).verify(&tampered, NOW).unwrap_err(), JwtError::BadSignature, "{alg}");
        }
    }

    #[test]
    fn garbage_is_rejected_as_malformed() {
        let v = verifier(&hs_config());
        let good = hs_token(&json!({"sub": "u", "exp": NOW + 60}));
        let (header, rest) = good.split_once('.').unwrap();
        let (payload, sig) = rest.split_once('.').unwrap();
        let cases = [
            String::new(),
            ".".to_owned(),
            "..".to_owned(),
            "...".to_owned(),
            "not a token".to_owned(),
            "a.b.c".to_owned(),
            "Bearer x.y.z".to_owned(),
            format!("{header}.{payload}"),
            format!("{good}.{sig}"),
            format!("{header}=.{payload}.{sig}"),
            format!("{header}.{payload}==.{sig}"),
            format!("{header}.{payload}.{sig}="),
            format!("{header}.{payload}.{sig}!"),
            format!("{}.{payload}.{sig}", b64(b"[\"HS256\"]")),
            format!("{}.{payload}.{sig}", b64(b"{\"alg\":42}")),
            format!("{}.{payload}.{sig}", b64(b"{}")),
            format!("{}.{payload}.{sig}", b64(b"\xff\xfe")),
            format!("{}.{payload}.{sig}", b64(b"{\"alg\":\"HS256\",\"crit\":[\"exp\"]}")),
            format!(" {good}"),
            "\u{0}.\u{0}.\u{0}".to_owned(),
        ];
        for token in &cases {
            assert_eq!(v.verify(token, NOW).unwrap_err(), JwtError::Malformed, "{token:?}");
        }
        // A payload that is not an object, correctly signed.
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        for payload in ["[\"u\", 1]", "\"u\"", "42", "{", ""] {
            let token = raw_token(r#"{"alg":"HS256"}"#, payload, &key, Algorithm::HS256);
            assert_eq!(v.verify(&token, NOW).unwrap_err(), JwtError::Malformed, "{payload:?}");
        }
    }

    #[test]
    fn deeply_nested_info_is_rejected() {
        let v = verifier(&hs_config());
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        let nested = |depth: usize| {
            let info = format!(r#"{}"[{{\"]"{}"#, "[{\"k\":".repeat(depth / 2), "}]".repeat(depth / 2));
            let payload = format!(r#"{{"sub":"u","exp":{},"info":{info}}}"#, NOW + 1);
            raw_token(r#"{"alg":"HS256"}"#, &payload, &key, Algorithm::HS256)
        };
        assert!(v.verify(&nested(MAX_INFO_DEPTH), NOW).is_ok());
        let err = v.verify(&nested(MAX_INFO_DEPTH + 2), NOW).unwrap_err();
        assert!(matches!(&err, JwtError::InvalidClaims(m) if m.contains("`info`")), "{err:?}");
        // Far deeper than any recursive parser's limit: rejected, and no stack overflow.
        let payload =
            format!(r#"{{"sub":"u","exp":{},"info":{}{}}}"#, NOW + 1, "[".repeat(3000), "]".repeat(3000));
        let token = raw_token(r#"{"alg":"HS256"}"#, &payload, &key, Algorithm::HS256);
        assert!(token.len() <= MAX_TOKEN_LEN);
        assert!(matches!(v.verify(&token, NOW), Err(JwtError::InvalidClaims(_))));
        assert_eq!(json_depth(r#"["\\", {"a": "]]]\"[[["}, [[]]]"#), 3);
    }

    #[test]
    fn huge_token_is_rejected_before_parsing() {
        let v = verifier(&hs_config());
        let huge = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(v.verify(&huge, NOW).unwrap_err(), JwtError::Malformed);
        let huge = "a.".repeat(1 << 20);
        assert_eq!(v.verify(&huge, NOW).unwrap_err(), JwtError::Malformed);
        // A valid token just over the limit is rejected; one under it is accepted.
        let big = hs_token(&json!({"sub": "u", "exp": NOW + 1, "info": "x".repeat(6200)}));
        assert!(big.len() > MAX_TOKEN_LEN);
        assert_eq!(v.verify(&big, NOW).unwrap_err(), JwtError::Malformed);
        let fits = hs_token(&json!({"sub": "u", "exp": NOW + 1, "info": "x".repeat(5800)}));
        assert!(fits.len() <= MAX_TOKEN_LEN);
        assert!(v.verify(&fits, NOW).is_ok());
    }

    /// Deterministic mutations of valid tokens (xorshift PRNG): nothing panics, and no
    /// mutation of the signed bytes is accepted with different claims.
    #[test]
    fn mutated_tokens_never_panic() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b"ABCxyz019-_.={}\"\\ \0\xff";
        let configs = [(hs_config(), 3000), (rs_config(), 40), (es_config(), 40), (ed_config(), 40)];
        for (cfg, rounds) in configs {
            let v = verifier(&cfg);
            let token = mint(&cfg, &mint_claims(), None).unwrap();
            for _ in 0..rounds {
                let mut bytes = token.clone().into_bytes();
                match next() % 4 {
                    0 => bytes.truncate((next() as usize) % bytes.len()),
                    1 => {
                        let i = (next() as usize) % bytes.len();
                        bytes[i] = alphabet[(next() as usize) % alphabet.len()];
                    }
                    2 => {
                        let i = (next() as usize) % bytes.len();
                        bytes.remove(i);
                    }
                    _ => {
                        let i = (next() as usize) % bytes.len();
                        bytes.insert(i, alphabet[(next() as usize) % alphabet.len()]);
                    }
                }
                let mutated = String::from_utf8_lossy(&bytes);
                if let Ok(claims) = v.verify(&mutated, NOW) {
                    // Only changes that leave the signed content intact may pass (for
                    // instance, none: the encoding is canonical).
                    assert_eq!(claims.sub, "user-42", "{mutated}");
                }
            }
        }
    }

    #[test]
    fn error_messages_never_echo_the_token() {
        let v = verifier(&JwtConfig { audience: Some("tether".to_owned()), ..hs_config() });
        let tokens = [
            hs_token(&json!({"sub": "secret-sub-value\n", "exp": NOW + 1, "aud": "tether"})),
            hs_token(&json!({"sub": "u", "exp": "secret-exp-value", "aud": "tether"})),
            hs_token(&json!({"sub": "u", "exp": NOW + 1, "aud": "tether", "channels": ["secret chan"]})),
            hs_token(&json!({"sub": "u", "exp": NOW + 1, "aud": "secret-aud-value"})),
        ];
        for token in &tokens {
            let message = v.verify(token, NOW).unwrap_err().to_string();
            assert!(!message.contains("secret"), "{message}");
            for part in token.split('.') {
                assert!(part.is_empty() || !message.contains(part), "{message}");
            }
            assert_eq!(v.verify(token, NOW).unwrap_err().code(), ErrorCode::InvalidToken);
        }
    }

    // ---- configuration ---------------------------------------------------------------

    #[test]
    fn config_rejects_none_and_unknown_algorithms() {
        for name in ["none", "None", "NONE"] {
            let cfg = JwtConfig { algorithms: vec!["HS256".to_owned(), name.to_owned()], ..hs_config() };
            let err = config_error(&cfg);
            assert!(err.contains("auth.jwt.algorithms") && err.contains("never"), "{err}");
        }
        let err = config_error(&JwtConfig { algorithms: vec!["HS257".to_owned()], ..hs_config() });
        assert!(err.contains("unknown algorithm") && err.contains("EdDSA"), "{err}");
        let err = config_error(&JwtConfig { algorithms: vec!["hs256".to_owned()], ..hs_config() });
        assert!(err.contains("\"HS256\""), "{err}");
    }

    #[test]
    fn config_rejects_empty_algorithm_list() {
        let err = config_error(&JwtConfig { algorithms: vec![], ..hs_config() });
        assert!(err.contains("auth.jwt.algorithms"), "{err}");
    }

    #[test]
    fn config_rejects_hs256_without_secret() {
        let err = config_error(&config(&["HS256"]));
        assert!(err.contains("hmac_secret"), "{err}");
    }

    #[test]
    fn config_rejects_short_secret_without_printing_it() {
        let short = "only-31-bytes-long-secret-xxxxx";
        assert_eq!(short.len(), 31);
        let err = config_error(&JwtConfig { hmac_secret: Some(short.to_owned()), ..hs_config() });
        assert!(err.contains("auth.jwt.hmac_secret") && err.contains("32"), "{err}");
        assert!(!err.contains(short), "{err}");
        let exact = "x".repeat(32);
        assert!(JwtVerifier::from_config(&JwtConfig { hmac_secret: Some(exact), ..hs_config() }).is_ok());
    }

    #[test]
    fn config_rejects_both_secret_and_secret_file() {
        let cfg = JwtConfig { hmac_secret_file: Some(fixture("README.md")), ..hs_config() };
        let err = config_error(&cfg);
        assert!(err.contains("hmac_secret") && err.contains("hmac_secret_file"), "{err}");
        assert!(!err.contains(SECRET), "{err}");
    }

    #[test]
    fn config_reads_secret_file_without_trailing_newline() {
        let dir = std::env::temp_dir().join(format!("tether-jwt-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret");
        std::fs::write(&path, format!("{SECRET}\n")).unwrap();
        let cfg = JwtConfig { hmac_secret: None, hmac_secret_file: Some(path), ..hs_config() };
        // Tokens signed with the secret (no newline) verify.
        let token = hs_token(&json!({"sub": "u", "exp": NOW + 1}));
        assert!(verifier(&cfg).verify(&token, NOW).is_ok());
        let missing = JwtConfig { hmac_secret_file: Some(dir.join("missing")), ..cfg };
        assert!(config_error(&missing).contains("auth.jwt.hmac_secret_file"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn config_rejects_key_that_does_not_fit_the_algorithms() {
        let err = config_error(&JwtConfig { algorithms: vec!["ES256".to_owned()], ..rs_config() });
        assert!(err.contains("ES256") && err.contains("RSA"), "{err}");
        let err = config_error(&JwtConfig {
            algorithms: vec!["RS256".to_owned(), "EdDSA".to_owned()],
            ..rs_config()
        });
        assert!(err.contains("EdDSA"), "{err}");
        let err = config_error(&JwtConfig { algorithms: vec!["ES384".to_owned()], ..es_config() });
        assert!(err.contains("ES384") && err.contains("P-256"), "{err}");
        let err = config_error(&JwtConfig { algorithms: vec!["RS256".to_owned()], ..ed_config() });
        assert!(err.contains("Ed25519"), "{err}");
    }

    #[test]
    fn config_rejects_bad_public_keys() {
        let cases = [
            ("rsa_private.pem", "private key"),
            ("ec_private.pem", "private key"),
            ("rsa1024_public.pem", "1024 bits"),
            ("README.md", "not a PEM file"),
            ("does-not-exist.pem", "auth.jwt.public_key_file"),
        ];
        for (file, expected) in cases {
            let cfg = JwtConfig { public_key_file: Some(fixture(file)), ..rs_config() };
            let err = config_error(&cfg);
            assert!(err.contains(expected) && err.contains("public_key_file"), "{file}: {err}");
        }
        let err = config_error(&config(&["RS256"]));
        assert!(err.contains("public_key_file"), "{err}");
    }

    /// Writes `der` as a PEM block labelled `label` to a temporary file.
    fn temp_pem(name: &str, label: &str, der: &[u8]) -> PathBuf {
        let pem = format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            base64::engine::general_purpose::STANDARD.encode(der)
        );
        let path = std::env::temp_dir().join(format!("tether-jwt-{}-{name}.pem", std::process::id()));
        std::fs::write(&path, pem).unwrap();
        path
    }

    #[test]
    fn garbage_public_keys_are_config_errors_not_panics() {
        // SubjectPublicKeyInfo with the Ed25519 OID and a 31-byte key: jsonwebtoken would
        // slice 32 bytes out of it when building the verifier.
        let mut short_ed = vec![0x30, 0x29, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x20, 0x00];
        short_ed.extend_from_slice(&[9u8; 31]);
        // A well-formed Ed25519 SPKI whose 32 bytes are not a curve point (y = 2 has no x).
        let mut bad_point = vec![0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
        bad_point.push(2);
        bad_point.extend_from_slice(&[0; 31]);
        // The real EC key, truncated; and its point with a flipped coordinate byte.
        let ec_der = pem_body(&read_fixture("ec_public.pem"));
        let mut off_curve = ec_der.clone();
        let last = off_curve.len() - 1;
        off_curve[last] ^= 1;
        let rsa_der = pem_body(&read_fixture("rsa_public.pem"));
        let cases: [(&str, &str, Vec<u8>); 7] = [
            ("short-ed", "EdDSA", short_ed),
            ("bad-point", "EdDSA", bad_point),
            ("ec-truncated", "ES256", ec_der[..ec_der.len() - 5].to_vec()),
            ("ec-off-curve", "ES256", off_curve),
            ("rsa-truncated", "RS256", rsa_der[..rsa_der.len() / 2].to_vec()),
            ("random", "RS256", (0..200u8).map(|i| i.wrapping_mul(37)).collect()),
            ("empty", "ES256", Vec::new()),
        ];
        for (name, alg, der) in cases {
            let path = temp_pem(name, "PUBLIC KEY", &der);
            let cfg =
                JwtConfig { public_key_file: Some(path.clone()), private_key_file: None, ..config(&[alg]) };
            let result = JwtVerifier::from_config(&cfg);
            std::fs::remove_file(&path).unwrap();
            let Err(err) = result else { panic!("{name}: accepted") };
            assert!(err.contains("auth.jwt.public_key_file"), "{name}: {err}");
        }
    }

    /// The DER inside the first PEM block of `pem`.
    fn pem_body(pem: &[u8]) -> Vec<u8> {
        let text = std::str::from_utf8(pem).unwrap();
        let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD.decode(body).unwrap()
    }

    #[test]
    fn config_rejects_keys_that_are_not_needed() {
        let err =
            config_error(&JwtConfig { public_key_file: Some(fixture("rsa_public.pem")), ..hs_config() });
        assert!(err.contains("public_key_file"), "{err}");
        let err = config_error(&JwtConfig { hmac_secret: Some(SECRET.to_owned()), ..rs_config() });
        assert!(err.contains("hmac_secret") && !err.contains(SECRET), "{err}");
        let err =
            config_error(&JwtConfig { private_key_file: Some(fixture("rsa_private.pem")), ..hs_config() });
        assert!(err.contains("private_key_file"), "{err}");
    }

    #[test]
    fn config_from_toml_has_defaults_and_rejects_unknown_keys() {
        let cfg: JwtConfig = toml::from_str(
            r#"
            algorithms = ["HS256", "HS256", "HS512"]
            hmac_secret = "0123456789abcdef0123456789abcdef"
            "#,
        )
        .unwrap();
        assert_eq!(cfg.leeway_s, 0);
        assert!(cfg.require_exp);
        assert_eq!(cfg.refresh_grace_ms, 30_000);
        let v = verifier(&cfg);
        assert_eq!(v.expected_algorithms(), ["HS256", "HS512"]);
        assert_eq!(v.refresh_grace_ms(), 30_000);
        assert!(toml::from_str::<JwtConfig>("algorithms = [\"HS256\"]\nhmac_secrt = \"x\"").is_err());
        assert!(toml::from_str::<JwtConfig>("hmac_secret = \"x\"").is_err());
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let cfg = hs_config();
        assert!(!format!("{cfg:?}").contains(SECRET));
        assert!(format!("{cfg:?}").contains("redacted"));
        let v = verifier(&cfg);
        assert!(!format!("{v:?}").contains(SECRET));
    }

    #[test]
    fn verifier_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<JwtVerifier>();
        assert_send_sync::<JwtClaims>();
        assert_send_sync::<JwtError>();
    }

    // ---- minting ---------------------------------------------------------------------

    fn round_trip(cfg: &JwtConfig, alg: &str) {
        let cfg = JwtConfig {
            issuer: Some("https://app.example".to_owned()),
            audience: Some("tether".to_owned()),
            ..cfg.clone()
        };
        let token = mint(&cfg, &mint_claims(), Some(alg)).unwrap();
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').next().unwrap()).unwrap())
                .unwrap();
        assert_eq!(header["alg"], alg);
        let claims = verifier(&cfg).verify(&token, NOW).unwrap();
        assert_eq!(claims.sub, "user-42");
        assert_eq!(claims.exp, Some(NOW + 600));
        assert_eq!(claims.channels, ["chat:lobby", "news:*"]);
        assert_eq!(claims.device.as_deref(), Some("phone-1"));
        assert_eq!(claims.zone.as_deref(), Some("eu-west"));
        let info: serde_json::Value = serde_json::from_str(claims.info.unwrap().get()).unwrap();
        assert_eq!(info, json!({"name": "Ada", "roles": ["admin"]}));
        assert_eq!(verifier(&cfg).verify(&token, NOW + 600).unwrap_err(), JwtError::Expired);
    }

    #[test]
    fn mint_round_trips_for_every_family() {
        let hs_all =
            JwtConfig { algorithms: vec!["HS256".into(), "HS384".into(), "HS512".into()], ..hs_config() };
        for alg in ["HS256", "HS384", "HS512"] {
            round_trip(&hs_all, alg);
        }
        let rsa_all = JwtConfig { algorithms: vec!["RS256".into(), "PS512".into()], ..rs_config() };
        round_trip(&rsa_all, "RS256");
        round_trip(&rsa_all, "PS512");
        round_trip(&es_config(), "ES256");
        round_trip(&asym_config("ES384", "ec384_public.pem", "ec384_private.pem"), "ES384");
        round_trip(&ed_config(), "EdDSA");
    }

    #[test]
    fn mint_defaults_to_the_first_algorithm_and_checks_its_arguments() {
        let cfg = JwtConfig { algorithms: vec!["HS512".into(), "HS256".into()], ..hs_config() };
        let token = mint(&cfg, &mint_claims(), None).unwrap();
        assert!(token.starts_with(&b64(br#"{"typ":"JWT","alg":"HS512"}"#)));

        let err = mint(&cfg, &mint_claims(), Some("RS256")).unwrap_err();
        assert!(err.contains("RS256"), "{err}");
        let err = mint(&cfg, &mint_claims(), Some("none")).unwrap_err();
        assert!(err.contains("never"), "{err}");
        let bad_sub = MintClaims { sub: String::new(), ..mint_claims() };
        assert!(mint(&cfg, &bad_sub, None).unwrap_err().contains("`sub`"));
        let bad_channel = MintClaims { channels: vec!["no spaces".into()], ..mint_claims() };
        assert!(mint(&cfg, &bad_channel, None).unwrap_err().contains("`channels`"));
        let backwards = MintClaims { exp_s: NOW, ..mint_claims() };
        assert!(mint(&cfg, &backwards, None).unwrap_err().contains("exp"));
        let future = MintClaims { nbf_s: Some(NOW + 100), exp_s: NOW + 200, ..mint_claims() };
        let token = mint(&cfg, &future, None).unwrap();
        assert_eq!(verifier(&cfg).verify(&token, NOW).unwrap_err(), JwtError::NotYetValid);
    }

    #[test]
    fn mint_asymmetric_needs_a_matching_private_key() {
        let no_private = JwtConfig { private_key_file: None, ..rs_config() };
        assert!(mint(&no_private, &mint_claims(), None).unwrap_err().contains("private_key_file"));
        let wrong_type = JwtConfig { private_key_file: Some(fixture("ec_private.pem")), ..rs_config() };
        assert!(mint(&wrong_type, &mint_claims(), None).unwrap_err().contains("private_key_file"));
        let public_as_private =
            JwtConfig { private_key_file: Some(fixture("rsa_public.pem")), ..rs_config() };
        assert!(mint(&public_as_private, &mint_claims(), None).unwrap_err().contains("PRIVATE KEY"));
        // Right type, wrong pair: an Ed25519 private key that is not the fixture's. Its
        // PKCS#8 form is a fixed 16-byte prefix and the 32-byte seed.
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
        ];
        der.extend_from_slice(&[7u8; 32]);
        let path = temp_pem("other-ed", "PRIVATE KEY", &der);
        let mismatched = JwtConfig { private_key_file: Some(path.clone()), ..ed_config() };
        let err = mint(&mismatched, &mint_claims(), None).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(err.contains("does not verify"), "{err}");
    }

    // ---- benchmark -------------------------------------------------------------------

    /// `cargo test --release -- --ignored --nocapture bench_verify`
    #[test]
    #[ignore = "benchmark; run in release mode"]
    fn bench_verify() {
        use std::hint::black_box;
        use std::time::{Duration, SystemTime};

        let claims = MintClaims {
            sub: "user-1234567".to_owned(),
            exp_s: NOW + 3600,
            nbf_s: None,
            iat_s: NOW,
            info: Some(json!({"name": "Ada Lovelace", "avatar": "https://cdn.example/a/1234.png"})),
            channels: vec!["chat:lobby".to_owned(), "notifications:user-1234567".to_owned()],
            device: None,
            zone: None,
        };
        let runs =
            [("HS256", hs_config()), ("RS256", rs_config()), ("ES256", es_config()), ("EdDSA", ed_config())];
        for (name, cfg) in runs {
            let cfg = JwtConfig { audience: Some("tether".to_owned()), ..cfg };
            let v = verifier(&cfg);
            let token = mint(&cfg, &claims, Some(name)).unwrap();
            let start = SystemTime::now();
            let mut n = 0u64;
            while start.elapsed().unwrap_or_default() < Duration::from_secs(2) {
                for _ in 0..256 {
                    let claims = v.verify(black_box(&token), black_box(NOW)).unwrap();
                    black_box(claims);
                }
                n += 256;
            }
            let secs = start.elapsed().unwrap_or_default().as_secs_f64();
            println!(
                "{name}: {:>10.0} verifications/s ({:.2} µs each, token {} bytes)",
                n as f64 / secs,
                secs * 1e6 / n as f64,
                token.len()
            );
        }
    }
}
