//! JWT connection tokens end to end: every algorithm family, the rejections that matter for
//! security (`alg: none`, algorithm confusion, expiry, `nbf`, `aud`, `iss`, tampering),
//! channel grants and personal channels, expiry and `refresh` on a live connection,
//! targeting by the token's identity, and `/sse` with a token in the query.
//!
//! Everything runs against the real server over real sockets. Time is the server's manual
//! clock (`start_clocked`): tokens are minted at `clock.now_s()` and expiry is reached with
//! `clock.advance`, never by sleeping. Tokens are minted with the server's own
//! `auth::jwt::mint` and the test-only keys in `tests/fixtures/jwt/` (see its README);
//! hostile tokens are built by hand.
//!
//! Four tests here were first written as ignored `SERVER BUG` reproductions (SSE outliving
//! its JWT, dotted static tokens, refresh ignoring leeway, overlapping personal channels);
//! the bugs are fixed and they are now regression tests.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use serde_json::{Value, json};
use tether_server::RunningServer;
use tether_server::auth::jwt::{JwtConfig, MintClaims, mint};

/// HMAC secret of the test configurations (at least 32 bytes).
const SECRET: &str = "jwt-integration-test-secret-0123456789abcdef";
const ISSUER: &str = "https://app.example";
const AUDIENCE: &str = "tether";
/// `auth.jwt.refresh_grace_ms` of the test configurations.
const GRACE_MS: u64 = 5_000;

const RSA: (&str, &str) = ("rsa_public.pem", "rsa_private.pem");
const EC: (&str, &str) = ("ec_public.pem", "ec_private.pem");
const ED: (&str, &str) = ("ed25519_public.pem", "ed25519_private.pem");

// ---- configuration and tokens ----------------------------------------------------------

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jwt").join(name)
}

fn read_fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).expect("fixture")
}

/// `[auth.jwt]` allowing `algorithms`, with the HMAC secret when an HS* algorithm is listed
/// and the `(public, private)` fixture pair when given.
fn jwt_config(algorithms: &[&str], pair: Option<(&str, &str)>) -> JwtConfig {
    let list = algorithms.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(", ");
    let mut cfg: JwtConfig =
        toml::from_str(&format!("algorithms = [{list}]\nrefresh_grace_ms = {GRACE_MS}")).expect("jwt config");
    if algorithms.iter().any(|a| a.starts_with("HS")) {
        cfg.hmac_secret = Some(SECRET.to_owned());
    }
    if let Some((public, private)) = pair {
        cfg.public_key_file = Some(fixture(public));
        cfg.private_key_file = Some(fixture(private));
    }
    cfg
}

/// HS256 only.
fn hs_config() -> JwtConfig {
    jwt_config(&["HS256"], None)
}

/// The test server config with `jwt` and three namespaces besides `chat` and the default
/// one: `vip` (grants only), `members` (authenticated) and `me` (personal channels).
fn server_config(jwt: JwtConfig) -> tether_server::Config {
    let mut c = config();
    c.auth.jwt = Some(jwt);
    for (name, options) in [
        ("vip", "subscribe = \"granted\""),
        ("members", "subscribe = \"authenticated\""),
        ("me", "personal = true"),
    ] {
        c.namespaces.insert(name.into(), toml::from_str(options).expect("namespace"));
    }
    c
}

/// Claims for `sub`, issued at `now_s`, valid for `ttl_s` seconds.
fn claims(sub: &str, now_s: u64, ttl_s: u64) -> MintClaims {
    MintClaims { sub: sub.to_owned(), iat_s: now_s, exp_s: now_s + ttl_s, ..MintClaims::default() }
}

/// Mints with the server's own minting code (which adds `iss`/`aud` from `cfg`).
fn sign(cfg: &JwtConfig, alg: &str, claims: &MintClaims) -> String {
    mint(cfg, claims, Some(alg)).unwrap_or_else(|e| panic!("mint {alg}: {e}"))
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

/// The three parts of a compact JWS.
fn parts(token: &str) -> [&str; 3] {
    let p: Vec<&str> = token.split('.').collect();
    [p[0], p[1], p[2]]
}

/// Signs `payload` with `alg` and raw `key` bytes through `jsonwebtoken` directly, bypassing
/// every check of `mint`: how an attacker (or a sloppy backend) would build a token.
fn sign_raw(alg: jsonwebtoken::Algorithm, key: &jsonwebtoken::EncodingKey, payload: &Value) -> String {
    jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), payload, key).expect("encode")
}

fn hmac_key(secret: &[u8]) -> jsonwebtoken::EncodingKey {
    jsonwebtoken::EncodingKey::from_secret(secret)
}

// ---- protocol helpers ------------------------------------------------------------------

async fn connect(ws: &mut Ws, id: u64, token: &str) -> Value {
    request(ws, id, json!({"op":"connect","token":token})).await
}

/// Opens `/ws` and connects with `token`, asserting the reply names `user`.
async fn connected(server: &RunningServer, token: &str, user: &str) -> Ws {
    let mut ws = common::ws(server, "/ws").await;
    let r = connect(&mut ws, 1, token).await;
    assert_eq!(r["result"]["user"], user, "{r}");
    ws
}

async fn subscribe(ws: &mut Ws, id: u64, channel: &str) -> Value {
    request(ws, id, json!({"op":"subscribe","channel":channel})).await
}

/// Subscribes and asserts success.
async fn subscribed(ws: &mut Ws, id: u64, channel: &str) {
    let r = subscribe(ws, id, channel).await;
    assert_eq!(r, json!({"id":id,"result":{}}), "subscribe {channel}");
}

async fn refresh(ws: &mut Ws, id: u64, token: &str) -> Value {
    request(ws, id, json!({"op":"refresh","token":token})).await
}

/// A `ping` request answered with `{}`: the connection is open and its frames before this
/// one have all been received.
async fn alive(ws: &mut Ws, id: u64) {
    assert_eq!(request(ws, id, json!({"op":"ping"})).await, json!({"id":id,"result":{}}));
}

/// Publishes through the HTTP API with the test key.
async fn publish(server: &RunningServer, body: Value) {
    let (s, b) = api(server, "/api/publish", &body.to_string()).await;
    assert_eq!((s, b.as_str()), (200, "{}"), "publish {body}");
}

/// The next frame must be the publication of `data` on `channel`.
async fn expect_pub(ws: &mut Ws, channel: &str, data: Value) {
    assert_eq!(recv_json(ws).await, json!({"push":"pub","channel":channel,"data":data}));
}

/// `GET /auth/me` with `token`: status, JSON body and the `WWW-Authenticate` header.
async fn me(server: &RunningServer, token: &str) -> (u16, Value, Option<String>) {
    let auth = format!("Bearer {token}");
    let (s, headers, body) = http_full(server, "GET", "/auth/me", &[("authorization", &auth)], "").await;
    let www = headers.get("www-authenticate").map(|v| v.to_str().expect("ascii").to_owned());
    (s, serde_json::from_str(&body).unwrap_or_else(|_| panic!("JSON body: {body}")), www)
}

/// The token is refused with `code` over the socket (on `ws`, which must stay usable) and
/// over `GET /auth/me` (401, same code); no error message quotes the token.
async fn assert_rejected(server: &RunningServer, ws: &mut Ws, id: u64, what: &str, token: &str, code: &str) {
    let r = connect(ws, id, token).await;
    assert_eq!(r["error"]["code"], code, "{what}: connect: {r}");
    let message = r["error"]["message"].as_str().expect("message");
    assert!(token.len() < 8 || !message.contains(token), "{what}: the message quotes the token: {r}");
    let (s, b, www) = me(server, token).await;
    assert_eq!((s, b["code"].as_str()), (401, Some(code)), "{what}: /auth/me: {b}");
    assert_eq!(www.as_deref(), Some("Bearer"), "{what}: /auth/me WWW-Authenticate");
}

// ---- 1. every algorithm family -------------------------------------------------------

#[tokio::test]
async fn valid_tokens_of_every_algorithm_family_connect() {
    let cases: [(&str, Option<(&str, &str)>); 6] = [
        ("HS256", None),
        ("RS256", Some(RSA)),
        ("PS256", Some(RSA)),
        ("ES256", Some(EC)),
        ("ES384", Some(("ec384_public.pem", "ec384_private.pem"))),
        ("EdDSA", Some(ED)),
    ];
    for (alg, pair) in cases {
        let jwt = jwt_config(&[alg], pair);
        let (server, clock) = start_clocked(server_config(jwt.clone())).await;
        let now = clock.now_s();
        let sub = format!("user-{alg}");
        let token = sign(&jwt, alg, &claims(&sub, now, 600));
        let mut ws = connected(&server, &token, &sub).await;
        subscribed(&mut ws, 2, &format!("members:{alg}")).await;
        let (s, b, _) = me(&server, &token).await;
        assert_eq!(
            (s, b),
            (200, json!({"user":sub,"device":null,"zone":null,"kind":"jwt","expires_at":(now + 600) * 1000})),
            "{alg}"
        );
    }
}

#[tokio::test]
async fn one_server_accepts_an_asymmetric_family_and_hs256_and_nothing_else() {
    let jwt = jwt_config(&["EdDSA", "HS256"], Some(ED));
    let (server, clock) = start_clocked(server_config(jwt.clone())).await;
    let now = clock.now_s();
    for alg in ["EdDSA", "HS256"] {
        let sub = format!("user-{alg}");
        let token = sign(&jwt, alg, &claims(&sub, now, 600));
        connected(&server, &token, &sub).await;
        assert_eq!(me(&server, &token).await.1["user"], sub.as_str());
    }
    // Algorithms that are not listed are refused, even when the signature is good for a
    // key of the same family (HS384 with the very same secret).
    let payload = json!({"sub":"mallory","iat":now,"exp":now + 600});
    let hs384 = sign_raw(jsonwebtoken::Algorithm::HS384, &hmac_key(SECRET.as_bytes()), &payload);
    let rsa = jsonwebtoken::EncodingKey::from_rsa_pem(&read_fixture("rsa_private.pem")).expect("rsa key");
    let rs256 = sign_raw(jsonwebtoken::Algorithm::RS256, &rsa, &payload);
    let ec = jsonwebtoken::EncodingKey::from_ec_pem(&read_fixture("ec_private.pem")).expect("ec key");
    let es256 = sign_raw(jsonwebtoken::Algorithm::ES256, &ec, &payload);
    let mut ws = common::ws(&server, "/ws").await;
    let mut id = 0;
    for (what, token) in [("HS384", hs384), ("RS256", rs256), ("ES256", es256)] {
        id += 1;
        assert_rejected(&server, &mut ws, id, what, &token, "invalid_token").await;
    }
}

// ---- 2. rejections ---------------------------------------------------------------------

#[tokio::test]
async fn hostile_and_invalid_tokens_are_rejected_on_the_socket_and_over_http() {
    let jwt = JwtConfig {
        issuer: Some(ISSUER.to_owned()),
        audience: Some(AUDIENCE.to_owned()),
        ..jwt_config(&["RS256"], Some(RSA))
    };
    let (server, clock) = start_clocked(server_config(jwt.clone())).await;
    let now = clock.now_s();
    let good = sign(&jwt, "RS256", &claims("alice", now, 600));
    let [header, payload, signature] = parts(&good);
    let hostile = json!({"sub":"mallory","iat":now,"exp":now + 600,"iss":ISSUER,"aud":AUDIENCE});
    let forged =
        |alg: &str, sig: &str| format!("{}.{}.{sig}", b64(&json!({"alg":alg,"typ":"JWT"})), b64(&hostile));
    let other = |f: fn(&mut JwtConfig)| {
        let mut cfg = jwt.clone();
        f(&mut cfg);
        sign(&cfg, "RS256", &claims("alice", now, 600))
    };
    let tampered_payload = {
        let mut p: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("json");
        p["sub"] = json!("admin");
        format!("{header}.{}.{signature}", b64(&p))
    };
    let tampered_signature = {
        let mut sig = signature.as_bytes().to_vec();
        let mid = sig.len() / 2;
        sig[mid] = if sig[mid] == b'A' { b'B' } else { b'A' };
        format!("{header}.{payload}.{}", String::from_utf8(sig).expect("ascii"))
    };
    let rsa_public_pem = read_fixture("rsa_public.pem");
    let not_yet_valid =
        sign(&jwt, "RS256", &MintClaims { nbf_s: Some(now + 60), ..claims("alice", now, 600) });

    let cases: Vec<(&str, String, &str)> = vec![
        ("alg none, no signature", forged("none", ""), "invalid_token"),
        ("alg none, a real signature", forged("none", signature), "invalid_token"),
        ("alg None", forged("None", ""), "invalid_token"),
        ("alg NONE", forged("NONE", ""), "invalid_token"),
        ("alg rs256 (wrong case)", forged("rs256", signature), "invalid_token"),
        (
            "HS256 signed with the RSA public key PEM",
            sign_raw(jsonwebtoken::Algorithm::HS256, &hmac_key(&rsa_public_pem), &hostile),
            "invalid_token",
        ),
        (
            "expired",
            sign(&jwt, "RS256", &MintClaims { iat_s: now - 120, exp_s: now - 60, ..claims("alice", now, 0) }),
            "token_expired",
        ),
        (
            "expires this very second",
            sign(&jwt, "RS256", &MintClaims { iat_s: now - 60, exp_s: now, ..claims("alice", now, 0) }),
            "token_expired",
        ),
        ("not valid before a minute from now", not_yet_valid.clone(), "invalid_token"),
        ("wrong audience", other(|c| c.audience = Some("someone-else".to_owned())), "invalid_token"),
        ("no audience", other(|c| c.audience = None), "invalid_token"),
        ("wrong issuer", other(|c| c.issuer = Some("https://evil.example".to_owned())), "invalid_token"),
        ("no issuer", other(|c| c.issuer = None), "invalid_token"),
        ("tampered payload", tampered_payload, "invalid_token"),
        ("tampered signature", tampered_signature, "invalid_token"),
        ("signature stripped", format!("{header}.{payload}."), "invalid_token"),
        ("two parts", format!("{header}.{payload}"), "invalid_token"),
        ("four parts", format!("{good}.{signature}"), "invalid_token"),
        ("garbage", "garbage".to_owned(), "invalid_token"),
        ("garbage with two dots", "not.a.jwt".to_owned(), "invalid_token"),
        ("dots only", "..".to_owned(), "invalid_token"),
        ("oversized", format!("{header}.{}.{signature}", "A".repeat(9_000)), "invalid_token"),
    ];
    // One socket for every rejection: a refused connect leaves it usable.
    let mut ws = common::ws(&server, "/ws").await;
    let mut id = 0;
    for (what, token, code) in &cases {
        id += 1;
        assert_rejected(&server, &mut ws, id, what, token, code).await;
    }
    assert_eq!(error_code(&subscribe(&mut ws, 100, "news").await), "not_connected");
    let r = connect(&mut ws, 101, &good).await;
    assert_eq!(r["result"]["user"], "alice", "a valid connect after {} rejections: {r}", cases.len());
    assert_eq!(me(&server, &good).await.0, 200);

    // The not-yet-valid token becomes valid when the clock reaches its `nbf`.
    clock.advance(Duration::from_secs(60));
    connected(&server, &not_yet_valid, "alice").await;
    assert_eq!(me(&server, &not_yet_valid).await.0, 200);
}

#[tokio::test]
async fn algorithm_confusion_fails_also_when_hs256_is_allowed_with_another_secret() {
    let jwt = jwt_config(&["RS256", "HS256"], Some(RSA));
    let (server, clock) = start_clocked(server_config(jwt.clone())).await;
    let now = clock.now_s();
    let hostile = json!({"sub":"mallory","iat":now,"exp":now + 600});
    let pem = read_fixture("rsa_public.pem");
    // The PEM as HMAC secret, with and without its trailing newline, and the DER inside it.
    let pem_text = String::from_utf8(pem.clone()).expect("pem");
    let der: String = pem_text.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(der).expect("der");
    let mut ws = common::ws(&server, "/ws").await;
    let secrets: [(&str, &[u8]); 3] =
        [("PEM", &pem), ("PEM without newline", pem_text.trim_end().as_bytes()), ("DER", &der)];
    let mut id = 0;
    for (what, secret) in secrets {
        id += 1;
        let token = sign_raw(jsonwebtoken::Algorithm::HS256, &hmac_key(secret), &hostile);
        assert_rejected(&server, &mut ws, id, what, &token, "invalid_token").await;
    }
    // Control: HS256 with the configured secret, and RS256 with the private key, connect.
    let hs = sign(&jwt, "HS256", &claims("alice", now, 600));
    assert_eq!(connect(&mut ws, 10, &hs).await["result"]["user"], "alice");
    let rs = sign(&jwt, "RS256", &claims("bob", now, 600));
    connected(&server, &rs, "bob").await;
}

#[tokio::test]
async fn a_server_without_jwt_config_refuses_jwts() {
    let (server, clock) = start_clocked(config()).await;
    let token = sign(&hs_config(), "HS256", &claims("alice", clock.now_s(), 600));
    let mut ws = common::ws(&server, "/ws").await;
    assert_rejected(&server, &mut ws, 1, "JWT without [auth.jwt]", &token, "invalid_token").await;
}

// ---- 3. grants and personal channels ---------------------------------------------------

#[tokio::test]
async fn channel_grants_admit_granted_channels_only() {
    let jwt = hs_config();
    let (server, clock) = start_clocked(server_config(jwt.clone())).await;
    let now = clock.now_s();
    let gold =
        sign(&jwt, "HS256", &MintClaims { channels: vec!["vip:gold*".into()], ..claims("alice", now, 600) });
    let plain = sign(&jwt, "HS256", &claims("bob", now, 600));

    let mut alice = connected(&server, &gold, "alice").await;
    subscribed(&mut alice, 2, "vip:gold-1").await;
    subscribed(&mut alice, 3, "vip:golden").await; // a prefix grant: any name starting with it
    let r = subscribe(&mut alice, 4, "vip:silver").await;
    assert_eq!((r["id"].as_u64(), error_code(&r)), (Some(4), "grant_required"));
    subscribed(&mut alice, 5, "members:room").await;

    let mut bob = connected(&server, &plain, "bob").await;
    assert_eq!(error_code(&subscribe(&mut bob, 2, "vip:gold-1").await), "grant_required");
    assert_eq!(error_code(&subscribe(&mut bob, 3, "vip:silver").await), "grant_required");
    // An authenticated namespace admits any JWT user; an anonymous connection is refused.
    subscribed(&mut bob, 4, "members:room").await;
    let mut anon = native(&server).await;
    assert_eq!(error_code(&subscribe(&mut anon, 2, "members:room").await), "unauthenticated");
    assert_eq!(error_code(&subscribe(&mut anon, 3, "vip:gold-1").await), "grant_required");

    // Granted subscriptions receive publications.
    publish(&server, json!({"channel":"vip:gold-1","data":"gold"})).await;
    expect_pub(&mut alice, "vip:gold-1", json!("gold")).await;
    publish(&server, json!({"channel":"members:room","data":"hello members"})).await;
    expect_pub(&mut alice, "members:room", json!("hello members")).await;
    expect_pub(&mut bob, "members:room", json!("hello members")).await;

    // Over /auth/me the JWT is simply valid, with or without grants.
    assert_eq!(me(&server, &gold).await.1["user"], "alice");
}

#[tokio::test]
async fn personal_channels_follow_the_token_subject_and_grants_override_them() {
    let jwt = hs_config();
    let (server, clock) = start_clocked(server_config(jwt.clone())).await;
    let now = clock.now_s();
    let mut alice = connected(&server, &sign(&jwt, "HS256", &claims("alice", now, 600)), "alice").await;
    subscribed(&mut alice, 2, "me:alice").await;
    subscribed(&mut alice, 3, "me:alice/inbox").await;
    let r = subscribe(&mut alice, 4, "me:bob").await;
    assert_eq!((r["id"].as_u64(), error_code(&r)), (Some(4), "personal_channel"));
    assert_eq!(error_code(&subscribe(&mut alice, 5, "me:alicex").await), "personal_channel");

    let mut bob = connected(&server, &sign(&jwt, "HS256", &claims("bob", now, 600)), "bob").await;
    subscribed(&mut bob, 2, "me:bob").await;
    assert_eq!(error_code(&subscribe(&mut bob, 3, "me:alice").await), "personal_channel");

    // A grant admits a channel whatever the namespace rule, personal channels included: the
    // application's backend decided that carol may read alice's channel.
    let carol_token =
        sign(&jwt, "HS256", &MintClaims { channels: vec!["me:alice".into()], ..claims("carol", now, 600) });
    let mut carol = connected(&server, &carol_token, "carol").await;
    subscribed(&mut carol, 2, "me:alice").await;
    assert_eq!(error_code(&subscribe(&mut carol, 3, "me:bob").await), "personal_channel");
    subscribed(&mut carol, 4, "me:carol").await;

    publish(&server, json!({"channel":"me:alice","data":1})).await;
    expect_pub(&mut alice, "me:alice", json!(1)).await;
    expect_pub(&mut carol, "me:alice", json!(1)).await;
}

#[tokio::test]
async fn tokens_with_invalid_grants_or_claims_are_rejected() {
    let (server, clock) = start_clocked(server_config(hs_config())).await;
    let now = clock.now_s();
    let key = hmac_key(SECRET.as_bytes());
    let base = json!({"sub":"alice","iat":now,"exp":now + 600});
    let with = |k: &str, v: Value| {
        let mut p = base.clone();
        p[k] = v;
        sign_raw(jsonwebtoken::Algorithm::HS256, &key, &p)
    };
    let without = |k: &str| {
        let mut p = base.clone();
        p.as_object_mut().expect("object").remove(k);
        sign_raw(jsonwebtoken::Algorithm::HS256, &key, &p)
    };
    let cases = [
        ("a channel with a space", with("channels", json!(["vip:no spaces"]))),
        ("channels as a string", with("channels", json!("vip:*"))),
        ("empty sub", with("sub", json!(""))),
        ("numeric sub", with("sub", json!(42))),
        ("sub too long", with("sub", json!("u".repeat(129)))),
        ("string exp", with("exp", json!("soon"))),
        ("no sub", without("sub")),
        ("no exp", without("exp")),
    ];
    let mut ws = common::ws(&server, "/ws").await;
    let mut id = 0;
    for (what, token) in &cases {
        id += 1;
        assert_rejected(&server, &mut ws, id, what, token, "invalid_token").await;
    }
    // Control: the base payload itself is fine.
    let r = connect(&mut ws, 100, &sign_raw(jsonwebtoken::Algorithm::HS256, &key, &base)).await;
    assert_eq!(r["result"]["user"], "alice", "{r}");
}

// ---- 4. expiry and refresh on a live connection ----------------------------------------

#[tokio::test]
async fn expiry_pushes_refresh_and_a_fresh_token_keeps_the_connection() {
    let jwt = hs_config();
    let (server, clock) = start_clocked(server_config(jwt.clone())).await;
    let now = clock.now_s();
    let grants = || vec!["vip:gold*".to_owned()];
    let first = sign(&jwt, "HS256", &MintClaims { channels: grants(), ..claims("alice", now, 60) });
    let mut ws = connected(&server, &first, "alice").await;
    subscribed(&mut ws, 2, "members:room").await;
    subscribed(&mut ws, 3, "vip:gold-1").await;

    // One second before expiry nothing happens; at expiry the server asks for a new token.
    clock.advance(Duration::from_secs(59));
    alive(&mut ws, 4).await;
    clock.advance(Duration::from_secs(1));
    assert_eq!(recv_json(&mut ws).await, json!({"push":"refresh"}));

    // The expired token itself does not renew the connection; a fresh one (same sub) does.
    assert_eq!(error_code(&refresh(&mut ws, 5, &first).await), "token_expired");
    let now = clock.now_s();
    let second = sign(&jwt, "HS256", &MintClaims { channels: grants(), ..claims("alice", now, 120) });
    assert_eq!(refresh(&mut ws, 6, &second).await, json!({"id":6,"result":{}}));

    // Past the grace period of the first expiry: still open (the deadline was cancelled),
    // still subscribed to both channels.
    clock.advance(Duration::from_millis(GRACE_MS));
    alive(&mut ws, 7).await;
    publish(&server, json!({"channel":"members:room","data":"after refresh"})).await;
    expect_pub(&mut ws, "members:room", json!("after refresh")).await;
    publish(&server, json!({"channel":"vip:gold-1","data":"still granted"})).await;
    expect_pub(&mut ws, "vip:gold-1", json!("still granted")).await;

    // Another user's token, a garbage token or a session-style refresh are refused, and
    // change nothing.
    let now = clock.now_s();
    let bob = sign(&jwt, "HS256", &claims("bob", now, 3_600));
    let r = refresh(&mut ws, 8, &bob).await;
    assert_eq!((r["id"].as_u64(), error_code(&r)), (Some(8), "permission_denied"), "{r}");
    assert_eq!(error_code(&refresh(&mut ws, 9, "not.a.jwt").await), "invalid_token");
    assert_eq!(error_code(&request(&mut ws, 10, json!({"op":"refresh"})).await), "unauthenticated");
    assert_eq!(error_code(&subscribe(&mut ws, 11, "me:bob").await), "personal_channel");
    subscribed(&mut ws, 12, "me:alice").await;

    // A fresh token with fewer grants: the lost subscription is pushed as unsubscribed
    // before the reply; the others stay.
    let now = clock.now_s();
    let third = sign(&jwt, "HS256", &claims("alice", now, 120));
    assert_eq!(
        recv_after(&mut ws, json!({"id":13,"op":"refresh","token":third})).await,
        vec![
            json!({"push":"unsubscribed","channel":"vip:gold-1","code":"grant_required",
                   "message":"this namespace only admits channels granted by the connection token"}),
            json!({"id":13,"result":{}}),
        ]
    );
    publish(&server, json!({"channel":"vip:gold-1","data":"lost"})).await;
    publish(&server, json!({"channel":"members:room","data":"kept"})).await;
    expect_pub(&mut ws, "members:room", json!("kept")).await;

    // The third token expires; no answer to the push; the connection is closed with 4003
    // when the grace period is over, not a millisecond earlier.
    clock.advance(Duration::from_secs(120));
    assert_eq!(recv_json(&mut ws).await, json!({"push":"refresh"}));
    clock.advance(Duration::from_millis(GRACE_MS - 1));
    alive(&mut ws, 14).await;
    clock.advance(Duration::from_millis(1));
    assert_eq!(recv_close(&mut ws).await, Some(4003));
    eventually("the closed connection left its channels", || {
        server.state.hub.subscriber_count(&channel("members:room")) == 0
    })
    .await;
}

/// Sends `frame` and returns the frames received up to and including its reply.
async fn recv_after(ws: &mut Ws, frame: Value) -> Vec<Value> {
    let id = frame["id"].clone();
    send(ws, &frame.to_string()).await;
    let mut got = Vec::new();
    loop {
        let v = recv_json(ws).await;
        let done = v["id"] == id;
        got.push(v);
        if done {
            return got;
        }
    }
}

#[tokio::test]
async fn refreshing_before_expiry_moves_the_deadline() {
    let jwt = hs_config();
    let (server, clock) = start_clocked(server_config(jwt.clone())).await;
    let start = clock.now_s();
    let mut ws = connected(&server, &sign(&jwt, "HS256", &claims("alice", start, 60)), "alice").await;
    clock.advance(Duration::from_secs(30));
    let fresh = sign(&jwt, "HS256", &claims("alice", clock.now_s(), 120));
    assert_eq!(refresh(&mut ws, 2, &fresh).await, json!({"id":2,"result":{}}));
    // The first token's expiry (and its grace period) passes without a push or a close.
    clock.advance(Duration::from_secs(30) + Duration::from_millis(GRACE_MS));
    alive(&mut ws, 3).await;
    // The new one's expiry (start + 150 s) brings the push.
    clock.advance(Duration::from_secs(150 - 30 - 30) - Duration::from_millis(GRACE_MS));
    assert_eq!(clock.now_s(), start + 150);
    assert_eq!(recv_json(&mut ws).await, json!({"push":"refresh"}));
    // Answering it within the grace period keeps the connection.
    clock.advance(Duration::from_millis(GRACE_MS - 1));
    let fresh = sign(&jwt, "HS256", &claims("alice", clock.now_s(), 60));
    assert_eq!(refresh(&mut ws, 4, &fresh).await, json!({"id":4,"result":{}}));
    clock.advance(Duration::from_millis(1));
    alive(&mut ws, 5).await;
}

#[tokio::test]
async fn refresh_with_a_token_is_only_for_jwt_connections() {
    let jwt = hs_config();
    let (server, clock) = start_clocked(server_config(jwt.clone())).await;
    let token = sign(&jwt, "HS256", &claims("alice", clock.now_s(), 60));
    let mut ws = common::ws(&server, "/ws").await;
    assert_eq!(error_code(&refresh(&mut ws, 1, &token).await), "not_connected");
    let mut anon = native(&server).await;
    assert_eq!(error_code(&refresh(&mut anon, 2, &token).await), "invalid_message");
    // Anonymous connections have no expiry: nothing is pushed, nothing closes.
    clock.advance(Duration::from_secs(3_600));
    alive(&mut anon, 3).await;
}

// ---- 5. targeting by the token's identity ----------------------------------------------

#[tokio::test]
async fn targeting_uses_the_device_zone_and_user_of_the_token() {
    let jwt = hs_config();
    let (server, clock) = start_clocked(server_config(jwt.clone())).await;
    let now = clock.now_s();
    let token = |sub: &str, device: Option<&str>, zone: Option<&str>| {
        let c = MintClaims {
            device: device.map(str::to_owned),
            zone: zone.map(str::to_owned),
            ..claims(sub, now, 600)
        };
        sign(&jwt, "HS256", &c)
    };
    let phone_token = token("alice", Some("phone-1"), Some("eu"));
    let mut phone = connected(&server, &phone_token, "alice").await;
    let mut tablet = connected(&server, &token("alice", Some("tablet-1"), Some("us")), "alice").await;
    let mut bob = connected(&server, &token("bob", None, None), "bob").await;
    let mut anon = native(&server).await;
    for ws in [&mut phone, &mut tablet, &mut bob, &mut anon] {
        subscribed(ws, 2, "news").await;
    }
    assert_eq!(
        me(&server, &phone_token).await.1,
        json!({"user":"alice","device":"phone-1","zone":"eu","kind":"jwt","expires_at":(now + 600) * 1000})
    );

    publish(&server, json!({"channel":"news","data":"phone","to":{"devices":["phone-1"]}})).await;
    publish(&server, json!({"channel":"news","data":"us","to":{"zones":["us"]}})).await;
    publish(&server, json!({"channel":"news","data":"bob","to":{"users":["bob"]}})).await;
    publish(&server, json!({"channel":"news","data":"alice","to":{"users":["alice"]}})).await;
    publish(
        &server,
        json!({"channel":"news","data":"nobody","to":{"users":["alice"],"devices":["phone-2"]}}),
    )
    .await;
    publish(&server, json!({"channel":"news","data":"all"})).await;
    // Each connection sees its own targeted publications, in order, then the broadcast:
    // anything else would arrive before "all".
    for d in ["phone", "alice", "all"] {
        expect_pub(&mut phone, "news", json!(d)).await;
    }
    for d in ["us", "alice", "all"] {
        expect_pub(&mut tablet, "news", json!(d)).await;
    }
    for d in ["bob", "all"] {
        expect_pub(&mut bob, "news", json!(d)).await;
    }
    expect_pub(&mut anon, "news", json!("all")).await;

    // A refresh that moves the connection to another device retargets it.
    let moved = token("alice", Some("phone-2"), Some("eu"));
    assert_eq!(refresh(&mut phone, 3, &moved).await, json!({"id":3,"result":{}}));
    publish(&server, json!({"channel":"news","data":"old","to":{"devices":["phone-1"]}})).await;
    publish(&server, json!({"channel":"news","data":"new","to":{"devices":["phone-2"]}})).await;
    publish(&server, json!({"channel":"news","data":"all-2"})).await;
    expect_pub(&mut phone, "news", json!("new")).await;
    expect_pub(&mut phone, "news", json!("all-2")).await;
    expect_pub(&mut tablet, "news", json!("all-2")).await;
}

// ---- 6. SSE ----------------------------------------------------------------------------

/// `GET path` expecting a JSON error: status and code.
async fn sse_error(server: &RunningServer, path: &str) -> (u16, String) {
    let (s, b) = http(server, "GET", path, &[], "").await;
    let v: Value = serde_json::from_str(&b).unwrap_or_else(|_| panic!("JSON error for {path}: {b}"));
    (s, v["code"].as_str().unwrap_or_else(|| panic!("code in {v}")).to_owned())
}

#[tokio::test]
async fn sse_accepts_a_jwt_in_the_query_and_refuses_bad_ones() {
    let jwt = hs_config();
    let (server, clock) = start_clocked(server_config(jwt.clone())).await;
    let now = clock.now_s();
    let gold =
        sign(&jwt, "HS256", &MintClaims { channels: vec!["vip:gold*".into()], ..claims("alice", now, 600) });

    let mut news = open_sse(&server, &format!("/sse?channel=members:room&token={gold}")).await;
    let mut vip = open_sse(&server, &format!("/sse?channel=vip:gold-1&token={gold}")).await;
    let mut mine = open_sse(&server, &format!("/sse?channel=me:alice&token={gold}")).await;
    publish(&server, json!({"channel":"members:room","data":"m"})).await;
    publish(&server, json!({"channel":"vip:gold-1","data":"v"})).await;
    publish(&server, json!({"channel":"me:alice","data":"p"})).await;
    assert_eq!(
        news.next_event().await,
        "data: {\"push\":\"pub\",\"channel\":\"members:room\",\"data\":\"m\"}\n\n"
    );
    assert_eq!(
        vip.next_event().await,
        "data: {\"push\":\"pub\",\"channel\":\"vip:gold-1\",\"data\":\"v\"}\n\n"
    );
    assert_eq!(
        mine.next_event().await,
        "data: {\"push\":\"pub\",\"channel\":\"me:alice\",\"data\":\"p\"}\n\n"
    );

    // Authorization rules apply to the JWT's identity and grants.
    assert_eq!(
        sse_error(&server, &format!("/sse?channel=vip:silver&token={gold}")).await,
        (403, "grant_required".to_owned())
    );
    assert_eq!(
        sse_error(&server, &format!("/sse?channel=me:bob&token={gold}")).await,
        (403, "personal_channel".to_owned())
    );
    assert_eq!(sse_error(&server, "/sse?channel=members:room").await, (401, "unauthenticated".to_owned()));

    // Bad tokens: 401 before any stream.
    let [header, payload, signature] = parts(&gold);
    let mut p: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("json");
    p["channels"] = json!(["*"]);
    let tampered = format!("{header}.{}.{signature}", b64(&p));
    let none = format!("{}.{}.", b64(&json!({"alg":"none"})), b64(&p));
    let expired =
        sign(&jwt, "HS256", &MintClaims { iat_s: now - 120, exp_s: now - 60, ..claims("alice", now, 0) });
    for (what, token, code) in [
        ("tampered", tampered.as_str(), "invalid_token"),
        ("alg none", none.as_str(), "invalid_token"),
        ("garbage", "not.a.jwt", "invalid_token"),
        ("expired", expired.as_str(), "token_expired"),
    ] {
        assert_eq!(
            sse_error(&server, &format!("/sse?channel=members:room&token={token}")).await,
            (401, code.to_owned()),
            "{what}"
        );
    }
}

#[tokio::test]
async fn sse_stream_ends_when_its_jwt_expires() {
    // A native connection whose JWT expires is asked to refresh and closed with 4003 after
    // `refresh_grace_ms`. An SSE client cannot refresh, yet its stream is never ended:
    // `/sse` arms no expiry timer for JWT principals, so a 60-second token (possibly with
    // channel grants) buys a subscription that lasts as long as the TCP connection. With
    // `require_exp = true` documented as "a token without expiry is a credential that can
    // never be revoked", this defeats expiry for SSE. Expected: at `exp` (or after the
    // grace period) the stream sends `event: disconnect` with code 4003 and ends.
    let jwt = hs_config();
    let (server, clock) = start_clocked(server_config(jwt.clone())).await;
    let now = clock.now_s();
    let gold =
        sign(&jwt, "HS256", &MintClaims { channels: vec!["vip:gold*".into()], ..claims("alice", now, 60) });
    let mut sse = open_sse(&server, &format!("/sse?channel=vip:gold-1&token={gold}")).await;
    clock.advance(Duration::from_secs(60) + Duration::from_millis(GRACE_MS));
    // Under the bug the stream is still subscribed and this publication is delivered.
    publish(&server, json!({"channel":"vip:gold-1","data":"after expiry"})).await;
    let block = sse.next_event().await;
    assert!(
        block.starts_with("event: disconnect\ndata: {\"code\":4003"),
        "expected the stream to end with 4003 after the JWT expired, got {block:?}"
    );
}

#[tokio::test]
async fn static_tokens_shaped_like_jwts_still_work_when_jwt_is_enabled() {
    // `Auth::verify` routes any credential with exactly two `.` to the JWT verifier and
    // returns its error without consulting `auth.tokens`, although the module doc says the
    // sources are tried in order. A deployment that adds `[auth.jwt]` silently locks out
    // clients whose static token looks like `team.alice.0123456789`. Without `[auth.jwt]`
    // the same token works (checked first, below).
    let token = "team.alice.0123456789abcdef";
    let static_config = |jwt: Option<JwtConfig>| {
        let mut c = server_config(hs_config());
        c.auth.jwt = jwt;
        c.auth.tokens = vec![toml::from_str(&format!("token = {token:?}\nuser = \"alice\"")).expect("token")];
        c
    };
    let without = start(static_config(None)).await;
    connected(&without, token, "alice").await;
    let with = start(static_config(Some(hs_config()))).await;
    let mut ws = common::ws(&with, "/ws").await;
    let r = connect(&mut ws, 1, token).await;
    assert_eq!(r["result"]["user"], "alice", "static token refused once JWT is enabled: {r}");
}

#[tokio::test]
async fn a_token_accepted_within_leeway_is_not_asked_to_refresh_at_once() {
    // The verifier accepts a token until `exp + leeway_s`, but the connection's expiry
    // timer is armed at `exp` (`Principal::expires_ms`). A token accepted within the leeway
    // therefore gets `{"push":"refresh"}` the moment it connects, and refreshing with that
    // same (still accepted) token succeeds and re-arms an already-past timer: another push
    // at once. A client that answers pushes with its cached token loops push/refresh
    // without bound, with no clock movement at all, until the leeway runs out.
    // Expected: the deadline is `exp + leeway_s`, so a token the server just accepted is
    // not asked to refresh until then.
    let jwt = JwtConfig { leeway_s: 30, ..hs_config() };
    let (server, clock) = start_clocked(server_config(jwt.clone())).await;
    let now = clock.now_s();
    let skewed =
        sign(&jwt, "HS256", &MintClaims { iat_s: now - 70, exp_s: now - 10, ..claims("alice", now, 0) });
    let mut ws = connected(&server, &skewed, "alice").await;
    // Under the bug, `{"push":"refresh"}` arrives here instead of the ping's reply.
    alive(&mut ws, 2).await;
    assert_eq!(refresh(&mut ws, 3, &skewed).await, json!({"id":3,"result":{}}));
    alive(&mut ws, 4).await;
    // At exp + leeway the push comes.
    clock.advance(Duration::from_secs(20));
    assert_eq!(recv_json(&mut ws).await, json!({"push":"refresh"}));
}

#[tokio::test]
async fn personal_channels_of_different_users_do_not_overlap() {
    // Personal channels are `ns:<user>` and `ns:<user>/…`. The JWT `sub` may contain '/'
    // (only control characters are refused), so the personal channel `me:alice/inbox` of
    // user "alice/inbox" is also a sub-channel of user "alice": both may subscribe to it,
    // and alice reads everything sent to the other user's personal channel.
    // Expected: one of the two is refused: either such a `sub` is rejected at connect
    // (`invalid_token`), or `me:alice/inbox` is `personal_channel` for alice.
    let jwt = hs_config();
    let (server, clock) = start_clocked(server_config(jwt.clone())).await;
    let now = clock.now_s();
    let other = sign(&jwt, "HS256", &claims("alice/inbox", now, 600));
    let mut ws = common::ws(&server, "/ws").await;
    let r = connect(&mut ws, 1, &other).await;
    if r.get("error").is_some() {
        assert_eq!(error_code(&r), "invalid_token", "{r}");
        return;
    }
    // Tether's choice: a user id containing '/' owns no personal channel.
    let r = subscribe(&mut ws, 2, "me:alice/inbox").await;
    assert_eq!(error_code(&r), "personal_channel", "{r}");
    let mut alice = connected(&server, &sign(&jwt, "HS256", &claims("alice", now, 600)), "alice").await;
    subscribed(&mut alice, 2, "me:alice/inbox").await;
    let mut ws2 = common::ws(&server, "/ws").await;
    connect(&mut ws2, 1, &other).await;
    let r = subscribe(&mut ws2, 2, "me:alice");
    let r = r.await;
    assert_eq!(r["error"]["code"], "personal_channel", "user 'alice/inbox' reads alice's channel: {r}");
}

#[tokio::test]
async fn the_info_claim_is_returned_verbatim() {
    let jwt = hs_config();
    let (server, clock) = start_clocked(server_config(jwt.clone())).await;
    let now = clock.now_s();
    let info = json!({"name":"Alice","roles":["admin"],"n":1.5});
    let token = sign(&jwt, "HS256", &MintClaims { info: Some(info.clone()), ..claims("alice", now, 600) });
    let mut ws = common::ws(&server, "/ws").await;
    let r = connect(&mut ws, 1, &token).await;
    assert_eq!(r["result"]["info"], info, "{r}");
    let a = format!("Bearer {token}");
    let (s, body) = http(&server, "GET", "/auth/me", &[("authorization", &a)], "").await;
    assert_eq!(s, 200);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["info"], info);
    // Without the claim, no `info` field.
    let plain = sign(&jwt, "HS256", &claims("bob", now, 600));
    let mut ws = common::ws(&server, "/ws").await;
    assert!(connect(&mut ws, 1, &plain).await["result"].get("info").is_none());
}
