//! Account routes under `/auth` (HTTP twins of the socket operations; `docs/auth.md`).
//!
//! | route | body | auth | success |
//! |---|---|---|---|
//! | `POST /auth/register` | `{name, password, email?, persistent?}` | – | 201 session |
//! | `POST /auth/login` | `{name, password, persistent?}` | – | 200 session |
//! | `POST /auth/refresh` | – | session token | 200 session (new token) |
//! | `POST /auth/logout` | – | session token | 204 |
//! | `POST /auth/password` | `{password, new_password}` | session token | 204 |
//! | `DELETE /auth/account` | `{password}` | session token | 204 |
//! | `GET /auth/me` | – | any connection credential | 200 principal |

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tether_proto::message::push_json_string;
use tether_proto::{ErrorCode, ProtoError};

use super::accounts::Credentials;
use super::{Issued, Principal};
use crate::api::{ApiError, api_error, bearer, json_response, parse, read_json_body};
use crate::state::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    name: String,
    password: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default = "yes")]
    persistent: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    name: String,
    password: String,
    #[serde(default)]
    persistent: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordBody {
    password: String,
    new_password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteBody {
    password: String,
}

// sockey's schema defaults `persistent` to 1 for a new registration.
fn yes() -> bool {
    true
}

/// The JSON of an issued session: `{"user","token","expires_at","persistent"}`.
pub fn session_json(i: &Issued) -> String {
    let mut s = String::with_capacity(128);
    s.push_str(r#"{"user":"#);
    push_json_string(&mut s, &i.user);
    s.push_str(r#","token":"#);
    push_json_string(&mut s, &i.token);
    s.push_str(&format!(r#","expires_at":{},"persistent":{}}}"#, i.expires_ms, i.persistent));
    s
}

/// The JSON describing a principal: `{"user","device","zone","kind","expires_at"?,"info"?}`.
pub fn principal_json(p: &Principal) -> String {
    let mut s = String::with_capacity(96);
    let id = &p.identity;
    for (i, (k, v)) in
        [("user", &id.user), ("device", &id.device), ("zone", &id.zone)].into_iter().enumerate()
    {
        s.push(if i == 0 { '{' } else { ',' });
        push_json_string(&mut s, k);
        s.push(':');
        match v {
            Some(v) => push_json_string(&mut s, v),
            None => s.push_str("null"),
        }
    }
    s.push_str(r#","kind":""#);
    s.push_str(p.kind_str());
    s.push('"');
    if let Some(e) = p.expires_ms {
        s.push_str(&format!(r#","expires_at":{e}"#));
    }
    if let Some(info) = &p.info {
        s.push_str(r#","info":"#);
        s.push_str(info);
    }
    s.push('}');
    s
}

fn fail(state: &AppState, e: ProtoError) -> ApiError {
    ApiError(state.count_error(e))
}

fn credential<'h>(state: &AppState, headers: &'h HeaderMap) -> Result<&'h str, ApiError> {
    bearer(headers).map_err(|m| api_error(state, ErrorCode::Unauthenticated, m))
}

/// `POST /auth/register`.
pub async fn register(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let bytes = read_json_body(&state, &parts.headers, body).await?;
    let b: RegisterBody = parse(&state, &bytes)?;
    let c = Credentials {
        name: &b.name,
        password: &b.password,
        email: b.email.as_deref(),
        persistent: b.persistent,
    };
    let ip = state.auth.proxy.client_ip(peer.ip(), &parts.headers);
    let issued = state.auth.register(ip, c).await.map_err(|e| fail(&state, e))?;
    Ok(json_response(StatusCode::CREATED, session_json(&issued)))
}

/// `POST /auth/login`.
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let bytes = read_json_body(&state, &parts.headers, body).await?;
    let b: LoginBody = parse(&state, &bytes)?;
    let c = Credentials { name: &b.name, password: &b.password, email: None, persistent: b.persistent };
    let ip = state.auth.proxy.client_ip(peer.ip(), &parts.headers);
    let issued = state.auth.login(ip, c).await.map_err(|e| fail(&state, e))?;
    Ok(json_response(StatusCode::OK, session_json(&issued)))
}

/// `POST /auth/refresh`: a new token for the session (the old one stops working).
pub async fn refresh(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let token = credential(&state, &headers)?;
    let issued = state.auth.refresh_token(token).await.map_err(|e| fail(&state, e))?;
    Ok(json_response(StatusCode::OK, session_json(&issued)))
}

/// `POST /auth/logout`.
pub async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let token = credential(&state, &headers)?;
    let p = state.auth.session_of(token).await.map_err(|e| fail(&state, e))?;
    if let Some(id) = p.session_id() {
        state.auth.logout(id, None).await.map_err(|e| fail(&state, e))?;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The session behind the bearer token, then the JSON body: the shape of every route that
/// changes an account.
async fn session_and_body<T: serde::de::DeserializeOwned>(
    state: &AppState,
    req: Request,
) -> Result<(Principal, T), ApiError> {
    let (parts, body) = req.into_parts();
    let token = credential(state, &parts.headers)?;
    let p = state.auth.session_of(token).await.map_err(|e| fail(state, e))?;
    let bytes = read_json_body(state, &parts.headers, body).await?;
    Ok((p, parse(state, &bytes)?))
}

/// `POST /auth/password`.
pub async fn password(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let (p, b): (_, PasswordBody) = session_and_body(&state, req).await?;
    state.auth.change_password(&p, &b.password, &b.new_password, None).await.map_err(|e| fail(&state, e))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /auth/account`.
pub async fn delete_account(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let (p, b): (_, DeleteBody) = session_and_body(&state, req).await?;
    state.auth.delete_account(&p, &b.password, None).await.map_err(|e| fail(&state, e))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /auth/me`: who a credential (session token, JWT or static token) is. Does not
/// renew an expired persistent session.
pub async fn me(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let token = credential(&state, &headers)?;
    let v = state.auth.verify_with(token, false).await.map_err(|e| fail(&state, e))?;
    Ok(json_response(StatusCode::OK, principal_json(&v.principal)))
}
