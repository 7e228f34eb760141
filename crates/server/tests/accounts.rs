//! Accounts, sessions and permissions over HTTP and the native socket (issue 3), against
//! the real server, its real SQLite file and a manual clock for expiry.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const PW: &str = "S3cret!pass";

fn body(v: &Value) -> String {
    v.to_string()
}

async fn post(
    server: &tether_server::RunningServer,
    path: &str,
    token: Option<&str>,
    b: Value,
) -> (u16, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    let (s, text) = http(server, "POST", path, &headers, &body(&b)).await;
    (s, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).expect("json body") })
}

async fn me(server: &tether_server::RunningServer, token: &str) -> (u16, Value) {
    let a = format!("Bearer {token}");
    let (s, text) = http(server, "GET", "/auth/me", &[("authorization", &a)], "").await;
    (s, serde_json::from_str(&text).expect("json"))
}

async fn register(server: &tether_server::RunningServer, name: &str) -> String {
    let (s, b) =
        post(server, "/auth/register", None, json!({"name":name,"password":PW,"email":"a@b.io"})).await;
    assert_eq!(s, 201, "{b}");
    b["token"].as_str().expect("token").to_owned()
}

fn accounts_config() -> tether_server::Config {
    let mut c = config();
    c.namespaces.insert(
        "members".into(),
        toml::from_str("subscribe = \"authenticated\"\npublish = \"subscribers\"").expect("ns"),
    );
    c.namespaces.insert("me".into(), toml::from_str("personal = true").expect("ns"));
    c
}

#[tokio::test]
async fn http_register_login_refresh_logout_with_exact_codes() {
    let server = start(accounts_config()).await;
    let token = register(&server, "alice").await;
    assert!(token.starts_with("tts_") && token.len() >= 4 + 43, "{token}");
    let (s, m) = me(&server, &token).await;
    assert_eq!((s, m["user"].as_str(), m["kind"].as_str()), (200, Some("alice"), Some("session")));

    // The same name in another case is taken.
    let (s, b) =
        post(&server, "/auth/register", None, json!({"name":"ALICE","password":PW,"email":"c@d.io"})).await;
    assert_eq!(
        (s, b["code"].as_str(), b["message"].as_str()),
        (409, Some("username_taken"), Some("User name already in use."))
    );

    // Wrong password and unknown user: same status, code and message.
    let (s1, b1) = post(&server, "/auth/login", None, json!({"name":"alice","password":"Wrong!pass1"})).await;
    let (s2, b2) = post(&server, "/auth/login", None, json!({"name":"nobody","password":PW})).await;
    assert_eq!((s1, b1["code"].as_str()), (401, Some("invalid_credentials")));
    assert_eq!((s1, &b1), (s2, &b2));

    let (s, b) =
        post(&server, "/auth/login", None, json!({"name":"alice","password":PW,"persistent":true})).await;
    assert_eq!((s, b["user"].as_str(), b["persistent"].as_bool()), (200, Some("alice"), Some(true)));
    let second = b["token"].as_str().unwrap().to_owned();
    assert_ne!(second, token, "every login opens its own session");

    // Refresh replaces the token: the old one stops working.
    let (s, b) = post(&server, "/auth/refresh", Some(&second), json!({})).await;
    assert_eq!(s, 200, "{b}");
    let third = b["token"].as_str().unwrap().to_owned();
    assert_eq!(me(&server, &second).await.1["code"], "invalid_token");
    assert_eq!(me(&server, &third).await.0, 200);

    // Logout revokes one session only.
    let (s, _) = post(&server, "/auth/logout", Some(&third), json!({})).await;
    assert_eq!(s, 204);
    assert_eq!(me(&server, &third).await, (401, me(&server, &third).await.1));
    assert_eq!(me(&server, &third).await.1["code"], "invalid_token");
    assert_eq!(me(&server, &token).await.0, 200, "the first session survives");

    // No credential, a non-session credential for session routes.
    let (s, b) = post(&server, "/auth/logout", None, json!({})).await;
    assert_eq!((s, b["code"].as_str()), (401, Some("unauthenticated")));
    let (s, b) = post(&server, "/auth/refresh", Some("not-a-session-token-at-all"), json!({})).await;
    assert_eq!((s, b["code"].as_str()), (401, Some("invalid_token")));
}

#[tokio::test]
async fn registration_rules_deliver_sockeys_intended_messages() {
    let server = start(accounts_config()).await;
    let cases = [
        (
            json!({"name":"","password":PW,"email":"a@b.io"}),
            "invalid_username",
            "You need to fill in a name.",
        ),
        (
            json!({"name":"ab","password":PW,"email":"a@b.io"}),
            "invalid_username",
            "User name must be between 3 and 32 Characters..",
        ),
        (
            json!({"name":"a b c","password":PW,"email":"a@b.io"}),
            "invalid_username",
            "Usernames may contain letters, special characters and numbers.",
        ),
        (
            json!({"name":"carol","password":"","email":"a@b.io"}),
            "invalid_password",
            "You need to fill in a password.",
        ),
        (
            json!({"name":"carol","password":"a1!","email":"a@b.io"}),
            "invalid_password",
            "Password must be between 6 and 60 characters long.",
        ),
        (
            json!({"name":"carol","password":"abcdefg1","email":"a@b.io"}),
            "invalid_password",
            "Password must contain letters and at least one special character and one number.",
        ),
        (json!({"name":"carol","password":PW}), "invalid_email", "Email address needed."),
        (json!({"name":"carol","password":PW,"email":"nope"}), "invalid_email", "Email address is invalid."),
    ];
    for (b, code, message) in cases {
        let (s, r) = post(&server, "/auth/register", None, b.clone()).await;
        assert_eq!((s, r["code"].as_str(), r["message"].as_str()), (400, Some(code), Some(message)), "{b}");
    }
    // Wrong types and unknown fields are invalid messages, not crashes.
    let (s, r) = post(&server, "/auth/register", None, json!({"name":5,"password":PW})).await;
    assert_eq!((s, r["code"].as_str()), (400, Some("invalid_message")));
    let (s, r) = post(&server, "/auth/login", None, json!({"name":"x","password":PW,"admin":true})).await;
    assert_eq!((s, r["code"].as_str()), (400, Some("invalid_message")));
    let (s, r) = http(&server, "POST", "/auth/login", &[("content-type", "application/json")], "{nope").await;
    assert_eq!(
        (s, serde_json::from_str::<Value>(&r).unwrap()["code"].as_str()),
        (400, Some("malformed_json"))
    );
    // The same rules over the socket.
    let mut ws = ws(&server, "/ws").await;
    let r = request(&mut ws, 1, json!({"op":"register","name":"ab","password":PW,"email":"a@b.io"})).await;
    assert_eq!(error_code(&r), "invalid_username");
    assert_eq!(r["error"]["message"], "User name must be between 3 and 32 Characters..");
    let r = request(&mut ws, 2, json!({"op":"register","name":"carol","password":true})).await;
    assert_eq!(error_code(&r), "invalid_message");
    let r = request(&mut ws, 3, json!({"op":"login","name":"carol"})).await;
    assert_eq!(error_code(&r), "invalid_message");
}

#[tokio::test]
async fn concurrent_registration_of_one_name_yields_exactly_one_account() {
    let mut c = accounts_config();
    c.auth.rate_limits.register_ip_burst = 100;
    let server = std::sync::Arc::new(start(c).await);
    let mut tasks = Vec::new();
    for i in 0..24 {
        let server = std::sync::Arc::clone(&server);
        // Mixed case: the uniqueness is case-insensitive.
        let name = if i % 2 == 0 { "racer" } else { "RACER" };
        tasks.push(tokio::spawn(async move {
            post(&server, "/auth/register", None, json!({"name":name,"password":PW,"email":"r@r.io"})).await
        }));
    }
    let mut created = 0;
    for t in tasks {
        match t.await.unwrap() {
            (201, _) => created += 1,
            (409, b) => assert_eq!(b["code"], "username_taken"),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(created, 1);
    let db = rusqlite::Connection::open(server.state.config.data_dir.join("tether.db")).unwrap();
    let n: i64 = db
        .query_row("SELECT count(*) FROM users WHERE name = 'racer' COLLATE NOCASE", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn the_database_holds_no_plaintext_password_or_token() {
    let server = start(accounts_config()).await;
    let password = "Pl41ntext!Marker";
    let (s, b) =
        post(&server, "/auth/register", None, json!({"name":"dave","password":password,"email":"d@d.io"}))
            .await;
    assert_eq!(s, 201);
    let t1 = b["token"].as_str().unwrap().to_owned();
    let (_, b) = post(&server, "/auth/login", None, json!({"name":"dave","password":password})).await;
    let t2 = b["token"].as_str().unwrap().to_owned();
    let mut bytes = Vec::new();
    for f in ["tether.db", "tether.db-wal"] {
        if let Ok(b) = std::fs::read(server.state.config.data_dir.join(f)) {
            bytes.extend(b);
        }
    }
    assert!(!bytes.is_empty());
    let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(contains(b"dave"), "sanity: the user is in the file");
    assert!(contains(b"$argon2id$"), "passwords are stored as Argon2id hashes");
    for secret in [password, t1.as_str(), t2.as_str(), &t1[4..], &t2[4..]] {
        assert!(!contains(secret.as_bytes()), "found a secret in the database file");
    }
    // Through SQL too, in every column.
    let db = rusqlite::Connection::open(server.state.config.data_dir.join("tether.db")).unwrap();
    let hash: String =
        db.query_row("SELECT password_hash FROM users WHERE name='dave'", [], |r| r.get(0)).unwrap();
    assert!(hash.starts_with("$argon2id$") && !hash.contains(password));
    let n: i64 = db.query_row("SELECT count(*) FROM sessions", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 2);
}

#[tokio::test]
async fn socket_register_then_pipelined_subscribe_and_personal_channels() {
    let server = start(accounts_config()).await;
    let mut ws = ws(&server, "/ws").await;
    // register as the first op (no connect), then subscribe without waiting for the reply.
    send(&mut ws, &json!({"id":1,"op":"register","name":"erin","password":PW,"email":"e@e.io"}).to_string())
        .await;
    send(&mut ws, r#"{"id":2,"op":"subscribe","channel":"members:lounge"}"#).await;
    send(&mut ws, r#"{"id":3,"op":"subscribe","channel":"me:erin"}"#).await;
    send(&mut ws, r#"{"id":4,"op":"subscribe","channel":"me:frank"}"#).await;
    let r = recv_json(&mut ws).await;
    assert_eq!(r["id"], 1);
    assert_eq!(r["result"]["user"], "erin");
    assert_eq!(r["result"]["session"]["user"], "erin");
    assert!(r["result"]["session"]["token"].as_str().unwrap().starts_with("tts_"));
    assert!(r["result"]["client"].is_string());
    assert_eq!(recv_json(&mut ws).await, json!({"id":2,"result":{}}));
    assert_eq!(recv_json(&mut ws).await, json!({"id":3,"result":{}}));
    let r = recv_json(&mut ws).await;
    assert_eq!((r["id"].as_u64(), error_code(&r)), (Some(4), "personal_channel"));

    // An anonymous connection: authenticated namespace and personal channels refused.
    let mut anon = native(&server).await;
    let r = request(&mut anon, 2, json!({"op":"subscribe","channel":"members:lounge"})).await;
    assert_eq!(error_code(&r), "unauthenticated");
    let r = request(&mut anon, 3, json!({"op":"subscribe","channel":"me:erin"})).await;
    assert_eq!(error_code(&r), "unauthenticated");
    // Publish in `members` is for subscribers only.
    let r = request(&mut anon, 4, json!({"op":"publish","channel":"members:lounge","data":1})).await;
    assert_eq!(error_code(&r), "publish_not_allowed");
    let r = request(&mut ws, 5, json!({"op":"publish","channel":"members:lounge","data":1})).await;
    assert_eq!(r, json!({"id":5,"result":{}}));
}

#[tokio::test]
async fn socket_login_failures_and_logout() {
    let server = start(accounts_config()).await;
    register(&server, "gina").await;
    let mut ws = native(&server).await;
    let r = request(&mut ws, 2, json!({"op":"login","name":"gina","password":"Wrong!pw1"})).await;
    assert_eq!(error_code(&r), "invalid_credentials");
    let r = request(&mut ws, 3, json!({"op":"login","name":"ghost","password":"Wrong!pw1"})).await;
    assert_eq!(error_code(&r), "invalid_credentials");
    let r = request(&mut ws, 4, json!({"op":"logout"})).await;
    assert_eq!(error_code(&r), "unauthenticated");
    let r = request(&mut ws, 5, json!({"op":"login","name":"gina","password":PW})).await;
    assert_eq!(r["result"]["user"], "gina", "login after anonymous connect upgrades the connection: {r}");
    let token = r["result"]["session"]["token"].as_str().unwrap().to_owned();
    assert_eq!(
        request(&mut ws, 6, json!({"op":"subscribe","channel":"members:x"})).await["result"],
        json!({})
    );

    // A second connection on the same session is told when the first logs out.
    let mut other = ws_connect_token(&server, &token).await;
    assert_eq!(
        request(&mut other, 2, json!({"op":"subscribe","channel":"members:x"})).await["result"],
        json!({})
    );
    let r = request(&mut ws, 7, json!({"op":"logout"})).await;
    assert_eq!(r, json!({"id":7,"result":{}}));
    let p = recv_push(&mut ws, "logged_out").await;
    assert_eq!(p["reason"], "logged_out");
    let p = recv_json(&mut other).await;
    assert_eq!(p, json!({"push":"logged_out","reason":"logged_out"}));
    let p = recv_json(&mut other).await;
    assert_eq!(
        (p["push"].as_str(), p["channel"].as_str(), p["code"].as_str()),
        (Some("unsubscribed"), Some("members:x"), Some("unauthenticated"))
    );
    // Rights are gone at once.
    let r = request(&mut other, 3, json!({"op":"subscribe","channel":"members:y"})).await;
    assert_eq!(error_code(&r), "unauthenticated");
    // The token is dead for new connections too.
    let mut third = common::ws(&server, "/ws").await;
    let r = request(&mut third, 1, json!({"op":"connect","token":token})).await;
    assert_eq!(error_code(&r), "invalid_token");
}

async fn ws_connect_token(server: &tether_server::RunningServer, token: &str) -> Ws {
    let mut ws = ws(server, "/ws").await;
    let r = request(&mut ws, 1, json!({"op":"connect","token":token})).await;
    assert!(r.get("result").is_some(), "{r}");
    ws
}

#[tokio::test]
async fn password_change_revokes_other_sessions_and_delete_ends_all() {
    let mut c = accounts_config();
    c.auth.rate_limits.login_user_burst = 50;
    let server = start(c).await;
    let t1 = register(&server, "hank").await;
    let (_, b) = post(&server, "/auth/login", None, json!({"name":"hank","password":PW})).await;
    let t2 = b["token"].as_str().unwrap().to_owned();
    let mut on_t1 = ws_connect_token(&server, &t1).await;
    let mut on_t2 = ws_connect_token(&server, &t2).await;

    // Over the socket, with the wrong current password first.
    let r = request(
        &mut on_t2,
        2,
        json!({"op":"change_password","password":"Wrong!pw1","new_password":"N3w!passwd"}),
    )
    .await;
    assert_eq!(error_code(&r), "invalid_credentials");
    let r =
        request(&mut on_t2, 3, json!({"op":"change_password","password":PW,"new_password":"short"})).await;
    assert_eq!(error_code(&r), "invalid_password");
    let r = request(&mut on_t2, 4, json!({"op":"change_password","password":PW,"new_password":"N3w!passwd"}))
        .await;
    assert_eq!(r, json!({"id":4,"result":{}}));
    assert_eq!(recv_json(&mut on_t1).await, json!({"push":"logged_out","reason":"password_changed"}));
    assert_eq!(me(&server, &t1).await.1["code"], "invalid_token");
    assert_eq!(me(&server, &t2).await.0, 200, "the changing session survives");
    let (s, _) = post(&server, "/auth/login", None, json!({"name":"hank","password":PW})).await;
    assert_eq!(s, 401);
    let (s, b) = post(&server, "/auth/login", None, json!({"name":"hank","password":"N3w!passwd"})).await;
    assert_eq!(s, 200);
    let t3 = b["token"].as_str().unwrap().to_owned();

    // Delete over HTTP: wrong password refused; then every session ends.
    let a = format!("Bearer {t3}");
    let h = [("authorization", a.as_str()), ("content-type", "application/json")];
    let (s, b) = http(&server, "DELETE", "/auth/account", &h, r#"{"password":"Wrong!pw1"}"#).await;
    assert_eq!(
        (s, serde_json::from_str::<Value>(&b).unwrap()["code"].as_str()),
        (401, Some("invalid_credentials"))
    );
    let (s, _) = http(&server, "DELETE", "/auth/account", &h, r#"{"password":"N3w!passwd"}"#).await;
    assert_eq!(s, 204);
    assert_eq!(recv_json(&mut on_t2).await, json!({"push":"logged_out","reason":"account_deleted"}));
    let (s, b) = post(&server, "/auth/login", None, json!({"name":"hank","password":"N3w!passwd"})).await;
    assert_eq!((s, b["code"].as_str()), (401, Some("invalid_credentials")));
    // The name is free again.
    register(&server, "hank").await;
}

#[tokio::test]
async fn non_persistent_session_expires_on_a_live_connection() {
    let (server, clock) = start_clocked(accounts_config()).await;
    register(&server, "ivy").await;
    let mut ws = ws(&server, "/ws").await;
    let r = request(&mut ws, 1, json!({"op":"login","name":"ivy","password":PW,"persistent":false})).await;
    assert_eq!(r["result"]["session"]["persistent"], false);
    let token = r["result"]["session"]["token"].as_str().unwrap().to_owned();
    assert_eq!(
        request(&mut ws, 2, json!({"op":"subscribe","channel":"members:a"})).await["result"],
        json!({})
    );
    assert_eq!(request(&mut ws, 3, json!({"op":"subscribe","channel":"news"})).await["result"], json!({}));
    clock.advance(Duration::from_secs(86_400 - 1));
    assert_eq!(request(&mut ws, 4, json!({"op":"ping"})).await["result"], json!({}), "still valid");
    clock.advance(Duration::from_secs(1));
    assert_eq!(recv_json(&mut ws).await, json!({"push":"logged_out","reason":"expired"}));
    let p = recv_json(&mut ws).await;
    assert_eq!((p["push"].as_str(), p["channel"].as_str()), (Some("unsubscribed"), Some("members:a")));
    // Anonymous rights remain: `news` is kept, `members` is refused.
    let r = request(&mut ws, 5, json!({"op":"subscribe","channel":"members:b"})).await;
    assert_eq!(error_code(&r), "unauthenticated");
    let r = request(&mut ws, 6, json!({"op":"subscribe","channel":"news"})).await;
    assert_eq!(error_code(&r), "already_subscribed");
    // Presenting the expired token: token_expired.
    let mut again = common::ws(&server, "/ws").await;
    let r = request(&mut again, 1, json!({"op":"connect","token":token})).await;
    assert_eq!(error_code(&r), "token_expired");
}

#[tokio::test]
async fn persistent_session_is_renewed_and_pushed() {
    let (server, clock) = start_clocked(accounts_config()).await;
    register(&server, "jack").await;
    let (_, b) =
        post(&server, "/auth/login", None, json!({"name":"jack","password":PW,"persistent":true})).await;
    let token = b["token"].as_str().unwrap().to_owned();
    let mut ws = ws_connect_token(&server, &token).await;
    assert_eq!(
        request(&mut ws, 2, json!({"op":"subscribe","channel":"members:a"})).await["result"],
        json!({})
    );
    clock.advance(Duration::from_secs(86_400));
    let p = recv_json(&mut ws).await;
    assert_eq!(p["push"], "session", "{p}");
    let fresh = p["session"]["token"].as_str().unwrap().to_owned();
    assert_ne!(fresh, token);
    assert_eq!(p["session"]["expires_at"].as_i64().unwrap(), clock.now_ms() + 86_400_000);
    // Still authenticated, subscription kept.
    assert_eq!(
        request(&mut ws, 3, json!({"op":"subscribe","channel":"members:b"})).await["result"],
        json!({})
    );
    assert_eq!(me(&server, &token).await.1["code"], "invalid_token");
    assert_eq!(me(&server, &fresh).await.0, 200);

    // Presenting an expired persistent token at connect renews it in the reply.
    clock.advance(Duration::from_secs(86_400 + 5));
    // (The live connection above renewed again; use the token it was pushed.)
    let p = recv_json(&mut ws).await;
    let latest = p["session"]["token"].as_str().unwrap().to_owned();
    drop(ws);
    // Wait until the server has closed that connection, or its timer would renew again.
    eventually("the connection is gone", || server.state.hub.subscriber_count(&channel("members:a")) == 0)
        .await;
    clock.advance(Duration::from_secs(86_400 * 2));
    let mut again = common::ws(&server, "/ws").await;
    let r = request(&mut again, 1, json!({"op":"connect","token":latest})).await;
    assert_eq!(r["result"]["user"], "jack", "{r}");
    let renewed = r["result"]["session"]["token"].as_str().expect("renewed token in the connect reply");
    assert_eq!(me(&server, renewed).await.0, 200);
    // Past the remember window, even a persistent session is logged out.
    drop(again);
    eventually("the connection is gone", || server.state.limiter.open() == 0).await;
    clock.advance(Duration::from_secs(86_400 + 31 * 86_400));
    let mut late = common::ws(&server, "/ws").await;
    let r = request(&mut late, 1, json!({"op":"connect","token":renewed})).await;
    assert_eq!(error_code(&r), "token_expired");
}

#[tokio::test]
async fn login_rate_limits_per_address_and_per_user_name() {
    let mut c = accounts_config();
    c.auth.rate_limits.login_ip_burst = 3;
    c.auth.rate_limits.login_user_burst = 4;
    let (server, clock) = start_clocked(c).await;
    register(&server, "kim").await;
    let mut from1 = ws_from(&server, "/ws", "127.0.0.11".parse().unwrap(), &[]).await;
    let wrong = json!({"op":"login","name":"kim","password":"Wrong!pw1"});
    for i in 1..=3 {
        assert_eq!(error_code(&request(&mut from1, i, wrong.clone()).await), "invalid_credentials");
    }
    assert_eq!(error_code(&request(&mut from1, 4, wrong.clone()).await), "rate_limited");
    // Another address: its own budget, but the user name's budget (4) is nearly spent.
    let mut from2 = ws_from(&server, "/ws", "127.0.0.12".parse().unwrap(), &[]).await;
    assert_eq!(error_code(&request(&mut from2, 1, wrong.clone()).await), "invalid_credentials");
    let right = json!({"op":"login","name":"kim","password":PW});
    assert_eq!(error_code(&request(&mut from2, 2, right.clone()).await), "rate_limited");
    // Over HTTP the same limits apply.
    let (s, b) = post(&server, "/auth/login", None, right.clone()).await;
    let _ = (s, b);
    // Time refills the buckets.
    clock.advance(Duration::from_secs(60));
    assert_eq!(request(&mut from2, 3, right).await["result"]["user"], "kim");
}

#[tokio::test]
async fn identity_headers_only_from_trusted_proxies() {
    let mut c = accounts_config();
    c.auth.trusted_proxies = vec!["127.0.0.2/32".into()];
    let server = start(c).await;
    let headers = [("X-Tether-User", "mallory"), ("X-Tether-Device", "phone-1"), ("X-Tether-Zone", "eu")];
    // From an untrusted peer the headers are ignored: anonymous.
    let mut stranger = ws_from(&server, "/ws", "127.0.0.1".parse().unwrap(), &headers).await;
    let r = request(&mut stranger, 1, json!({"op":"connect"})).await;
    assert_eq!(r["result"]["user"], Value::Null);
    assert_eq!(
        error_code(&request(&mut stranger, 2, json!({"op":"subscribe","channel":"me:mallory"})).await),
        "unauthenticated"
    );
    // Through the trusted proxy address they are the identity.
    let mut proxied = ws_from(&server, "/ws", "127.0.0.2".parse().unwrap(), &headers).await;
    let r = request(&mut proxied, 1, json!({"op":"connect"})).await;
    assert_eq!(r["result"]["user"], "mallory");
    assert_eq!(
        request(&mut proxied, 2, json!({"op":"subscribe","channel":"me:mallory"})).await["result"],
        json!({})
    );
    assert_eq!(
        request(&mut stranger, 3, json!({"op":"subscribe","channel":"news"})).await["result"],
        json!({})
    );
    assert_eq!(
        request(&mut proxied, 3, json!({"op":"subscribe","channel":"news"})).await["result"],
        json!({})
    );
    // Targeting uses the header identity (user, device and zone).
    let (s, _) =
        api(&server, "/api/publish", r#"{"channel":"news","data":"for-phone","to":{"devices":["phone-1"]}}"#)
            .await;
    assert_eq!(s, 200);
    let (s, _) = api(&server, "/api/publish", r#"{"channel":"news","data":"for-all"}"#).await;
    assert_eq!(s, 200);
    assert_eq!(recv_json(&mut proxied).await["data"], "for-phone");
    assert_eq!(recv_json(&mut proxied).await["data"], "for-all");
    assert_eq!(recv_json(&mut stranger).await["data"], "for-all", "the stranger got no targeted message");
}

#[tokio::test]
async fn scoped_api_keys_publish_only_where_allowed() {
    let mut c = accounts_config();
    c.scoped_api_keys = vec![
        toml::from_str(
            r#"key = "scoped-key-0123456789"
channels = ["chat:*", "news"]"#,
        )
        .unwrap(),
    ];
    let server = start(c).await;
    let h = [("authorization", "Bearer scoped-key-0123456789"), ("content-type", "application/json")];
    let pub_to = |ch: &str| format!(r#"{{"channel":"{ch}","data":1}}"#);
    assert_eq!(http(&server, "POST", "/api/publish", &h, &pub_to("chat:a")).await.0, 200);
    assert_eq!(http(&server, "POST", "/api/publish", &h, &pub_to("news")).await.0, 200);
    let (s, b) = http(&server, "POST", "/api/publish", &h, &pub_to("newsroom")).await;
    assert_eq!(
        (s, serde_json::from_str::<Value>(&b).unwrap()["code"].as_str()),
        (403, Some("channel_not_allowed"))
    );
    // A batch with one forbidden item publishes nothing.
    let (s, _) = http(
        &server,
        "POST",
        "/api/batch",
        &h,
        r#"{"publications":[{"channel":"chat:a","data":1},{"channel":"members:x","data":2}]}"#,
    )
    .await;
    assert_eq!(s, 403);
    // The unrestricted key still publishes anywhere.
    assert_eq!(api(&server, "/api/publish", &pub_to("newsroom")).await.0, 200);
}

// Regression: with two connections on one persistent session, only one renewal could win
// the compare-and-swap and the other connection was logged out; a refresh on one also left
// the others holding a dead token.
#[tokio::test]
async fn connections_sharing_a_session_all_follow_its_rotation() {
    let (server, clock) = start_clocked(accounts_config()).await;
    register(&server, "lena").await;
    let (_, b) =
        post(&server, "/auth/login", None, json!({"name":"lena","password":PW,"persistent":true})).await;
    let token = b["token"].as_str().unwrap().to_owned();
    let mut a = ws_connect_token(&server, &token).await;
    let mut b = ws_connect_token(&server, &token).await;
    assert_eq!(
        request(&mut a, 2, json!({"op":"subscribe","channel":"members:a"})).await["result"],
        json!({})
    );
    assert_eq!(
        request(&mut b, 2, json!({"op":"subscribe","channel":"members:b"})).await["result"],
        json!({})
    );

    // Expiry: both timers fire; one renews, both end up with the same new token.
    clock.advance(Duration::from_secs(86_400));
    let pa = recv_push(&mut a, "session").await;
    let pb = recv_push(&mut b, "session").await;
    assert_eq!(pa["session"]["token"], pb["session"]["token"]);
    assert_eq!(
        request(&mut a, 3, json!({"op":"subscribe","channel":"members:c"})).await["result"],
        json!({})
    );
    assert_eq!(
        request(&mut b, 3, json!({"op":"subscribe","channel":"members:d"})).await["result"],
        json!({})
    );

    // An explicit refresh on `a` reaches `b` as a session push.
    let r = request(&mut a, 4, json!({"op":"refresh"})).await;
    let fresh = r["result"]["session"]["token"].as_str().unwrap().to_owned();
    let pb = recv_push(&mut b, "session").await;
    assert_eq!(pb["session"]["token"], fresh);
    // `b` can renew later with the token it adopted.
    clock.advance(Duration::from_secs(86_400));
    let pa = recv_push(&mut a, "session").await;
    let pb = recv_push(&mut b, "session").await;
    assert_eq!(pa["session"]["token"], pb["session"]["token"]);
    assert_eq!(me(&server, pa["session"]["token"].as_str().unwrap()).await.0, 200);
    assert_eq!(request(&mut b, 5, json!({"op":"ping"})).await["result"], json!({}));
}
