//! The HTTP API of model sync: server-side writes to a scope and reads of it.
//!
//! - `POST /api/scopes/{name}/update` applies a Jetstream-style update (`$set`, `$push`,
//!   `$pull`, `$addToSet` on key paths) atomically, stores it, and broadcasts it to every
//!   session holding the scope. Answers once the write is durable.
//! - `GET /api/scopes/{name}` returns the scope as one JSON tree.
//!
//! Both need an API key that is unrestricted, or whose channel patterns match the scope
//! name (when the name is a valid channel name).

use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tether_proto::{ChannelName, ErrorCode};
use tokio::sync::oneshot;

use crate::api::{ApiError, api_error, authorize, json_response, parse, read_body};
use crate::auth::apikeys::Scope;
use crate::state::AppState;

use super::FetchError;
use super::scope::{ScopeCmd, UpdateFailure};

/// Longest wait for a scope to answer (it may be loading, or committing a batch).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// `POST /api/scopes/{name}/update` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateRequest {
    /// Scope params (for templates that declare them).
    #[serde(default)]
    params: Map<String, Value>,
    /// Which object: `null` or `{}` for the root, `{"$uuid": "..."}` for another.
    #[serde(default)]
    query: Value,
    /// The update.
    update: Value,
}

/// `GET /api/scopes/{name}` query string.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReadQuery {
    /// Scope params as a JSON object.
    params: Option<String>,
}

/// `POST /api/scopes/{name}/update`.
pub(crate) async fn update(
    State(state): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let sync = enabled(&state)?;
    let (key_scope, body) = read_body(&state, req).await?;
    allowed(&state, &key_scope, &name)?;
    let body: UpdateRequest = parse(&state, &body)?;
    let (reply, answer) = oneshot::channel();
    let cmd = ScopeCmd::Update { query: body.query, update: body.update, reply };
    sync.command(&name, &body.params, cmd).map_err(|e| fetch_error(&state, &e))?;
    match tokio::time::timeout(ANSWER_TIMEOUT, answer).await {
        Ok(Ok(Ok(done))) => {
            // The fragments as the scope encoded them for its broadcast.
            let applied = String::from_utf8_lossy(&done.applied_json);
            Ok(json_response(StatusCode::OK, format!(r#"{{"applied":{applied}}}"#)))
        }
        Ok(Ok(Err(UpdateFailure::Invalid(m)))) => Err(api_error(&state, ErrorCode::InvalidMessage, m)),
        Ok(Ok(Err(UpdateFailure::Rejected(messages)))) => Err(api_error(
            &state,
            ErrorCode::UpdateRejected,
            format!("the scope refused the update: {}", messages.join("; ")),
        )),
        Ok(Ok(Err(UpdateFailure::NotStored))) | Ok(Err(_)) | Err(_) => unavailable(&state),
    }
}

/// `GET /api/scopes/{name}`.
pub(crate) async fn read(
    State(state): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<ReadQuery>, axum::extract::rejection::QueryRejection>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let sync = enabled(&state)?;
    let key_scope = authorize(&state, &headers).await?;
    allowed(&state, &key_scope, &name)?;
    let Query(query) = query.map_err(|e| {
        api_error(&state, ErrorCode::InvalidMessage, format!("query string: {}", e.body_text()))
    })?;
    let params = match query.params.as_deref() {
        None => Map::new(),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(m)) => m,
            _ => return Err(api_error(&state, ErrorCode::InvalidMessage, "params must be a JSON object")),
        },
    };
    let (reply, answer) = oneshot::channel();
    sync.command(&name, &params, ScopeCmd::Read { reply }).map_err(|e| fetch_error(&state, &e))?;
    match tokio::time::timeout(ANSWER_TIMEOUT, answer).await {
        Ok(Ok((root, tree))) => Ok(json_response(
            StatusCode::OK,
            json!({ "name": name, "params": params, "rootUUID": root.to_string(), "root": tree }).to_string(),
        )),
        _ => unavailable(&state),
    }
}

fn enabled(state: &AppState) -> Result<std::sync::Arc<super::SyncShared>, ApiError> {
    state.sync.clone().ok_or_else(|| {
        api_error(state, ErrorCode::NotFound, "model sync is not configured on this server (sync.schema)")
    })
}

/// A key limited to channel patterns reaches only scopes whose name matches one.
fn allowed(state: &AppState, key: &Scope, name: &str) -> Result<(), ApiError> {
    let ok = match key {
        Scope::All => true,
        Scope::Channels(_) => ChannelName::parse(name).is_ok_and(|c| key.allows(&c)),
    };
    if ok {
        Ok(())
    } else {
        Err(api_error(
            state,
            ErrorCode::ChannelNotAllowed,
            "this API key may not write to or read this scope",
        ))
    }
}

fn fetch_error(state: &AppState, e: &FetchError) -> ApiError {
    match e {
        FetchError::NoSuchScope => {
            api_error(state, ErrorCode::NotFound, "no scope template serves this name")
        }
        FetchError::InvalidParams(m) => {
            api_error(state, ErrorCode::InvalidMessage, format!("invalid scope params: {m}"))
        }
        FetchError::Busy | FetchError::TooManyScopes | FetchError::Denied => {
            api_error(state, ErrorCode::TooManyConnections, "the scope is overloaded; retry later")
        }
    }
}

fn unavailable(state: &AppState) -> Result<Response, ApiError> {
    Err(api_error(state, ErrorCode::Internal, "the scope could not be loaded or stored"))
}
