//! The HTTP server API under `/api`: publish, broadcast, batch, and the OpenAPI document.
//!
//! Authentication is `Authorization: Bearer KEY` against the API keys (configured, or
//! created with `tether apikey create`); a key may be limited to channel patterns. Every
//! error is `{"code": …, "message": …}` with a stable code and the status from
//! [`status_for`]. The OpenAPI document (`docs/openapi.json`) is served as it is at
//! `/api/openapi.json`; integration tests validate real responses against it.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::value::RawValue;
use tether_engine::Publication;
use tether_engine::history::Page;
use tether_engine::hub::{HistoryQuery, Published};
use tether_proto::message::strip_location;
use tether_proto::{ChannelName, ErrorCode, ProtoError, Tags, Target};

use crate::auth::apikeys::Scope;
use crate::dialects::native;
use crate::state::AppState;

/// The OpenAPI 3 document of this API.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");

/// The HTTP status that goes with an error code.
pub fn status_for(code: ErrorCode) -> StatusCode {
    use ErrorCode as C;
    match code {
        C::Unauthenticated | C::InvalidToken | C::TokenExpired | C::InvalidCredentials => {
            StatusCode::UNAUTHORIZED
        }
        C::PermissionDenied
        | C::PublishNotAllowed
        | C::ChannelNotAllowed
        | C::GrantRequired
        | C::PersonalChannel
        | C::AccountsDisabled => StatusCode::FORBIDDEN,
        C::UsernameTaken => StatusCode::CONFLICT,
        C::UpdateRejected => StatusCode::UNPROCESSABLE_ENTITY,
        C::NotFound => StatusCode::NOT_FOUND,
        C::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        C::PayloadTooLarge | C::MessageTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        C::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        C::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        C::TooManyConnections | C::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        C::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// An API error response.
#[derive(Debug)]
pub struct ApiError(pub ProtoError);

impl From<ProtoError> for ApiError {
    fn from(e: ProtoError) -> Self {
        Self(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = status_for(self.0.code);
        let mut resp = (status, Json(&self.0)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

pub(crate) fn api_error(state: &AppState, code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError(state.count_error(ProtoError::new(code, message)))
}

/// Response for a connection refused by limits (before any upgrade).
pub fn limit_response(state: &AppState, e: ProtoError) -> Response {
    state.metrics.connections_rejected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    ApiError(state.count_error(e)).into_response()
}

/// The credential of an `Authorization: Bearer …` header, or what is wrong with it.
pub(crate) fn bearer(headers: &HeaderMap) -> Result<&str, &'static str> {
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return Err("missing Authorization: Bearer <credential>");
    };
    // The scheme is case-insensitive (RFC 9110 § 11.1), one or more spaces follow it.
    value
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, key)| key.trim_start_matches(' '))
        .filter(|k| !k.is_empty())
        .ok_or("expected Authorization: Bearer <credential>")
}

/// Checks the API key; returns what it may publish to.
pub(crate) async fn authorize(state: &AppState, headers: &HeaderMap) -> Result<Scope, ApiError> {
    let key = bearer(headers).map_err(|m| api_error(state, ErrorCode::Unauthenticated, m))?;
    // Keys are compared by SHA-256 digest: equal digests mean equal keys, and the lookup's
    // timing reveals nothing about the key itself.
    match state.auth.api_keys.check(state.auth.store().as_ref(), key).await {
        Ok(Some(scope)) => Ok(scope),
        Ok(None) => Err(api_error(state, ErrorCode::Unauthenticated, "unknown API key")),
        Err(e) => {
            tracing::error!(error = %e, "API key lookup failed");
            Err(api_error(state, ErrorCode::Internal, "internal error"))
        }
    }
}

/// Checks the content type, then reads the body within the size limit.
pub(crate) async fn read_json_body(
    state: &AppState,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<axum::body::Bytes, ApiError> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("");
        let essence = ct.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return Err(api_error(state, ErrorCode::UnsupportedMediaType, "send application/json"));
        }
    }
    let limit = state.config.http.max_body_bytes;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.downcast_ref::<http_body_util::LengthLimitError>().is_some())
            || e.to_string().contains("length limit");
        if too_large {
            api_error(state, ErrorCode::PayloadTooLarge, format!("request body is larger than {limit} bytes"))
        } else {
            api_error(state, ErrorCode::InvalidMessage, "could not read the request body")
        }
    })?;
    state.metrics.bytes_in.fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
    Ok(bytes)
}

/// Checks the API key and content type, then reads the body.
pub(crate) async fn read_body(
    state: &AppState,
    req: Request,
) -> Result<(Scope, axum::body::Bytes), ApiError> {
    let (parts, body) = req.into_parts();
    let scope = authorize(state, &parts.headers).await?;
    Ok((scope, read_json_body(state, &parts.headers, body).await?))
}

pub(crate) fn parse<'a, T: Deserialize<'a>>(state: &AppState, body: &'a [u8]) -> Result<T, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| api_error(state, ErrorCode::MalformedJson, "body is not valid UTF-8"))?;
    if !tether_proto::json::is_object(text) {
        // serde would also read a struct from a JSON array (positionally); only objects
        // are requests.
        return Err(match serde_json::from_str::<&RawValue>(text) {
            Ok(_) => api_error(state, ErrorCode::InvalidMessage, "body must be a JSON object"),
            Err(_) => api_error(state, ErrorCode::MalformedJson, "body is not valid JSON"),
        });
    }
    serde_json::from_str(text).map_err(|e| {
        // serde stops at the first error, so a missing or unknown field can be reported
        // before the syntax error further on: classify by the whole text.
        if e.is_syntax() || e.is_eof() || serde_json::from_str::<serde::de::IgnoredAny>(text).is_err() {
            api_error(state, ErrorCode::MalformedJson, "body is not valid JSON")
        } else {
            api_error(state, ErrorCode::InvalidMessage, strip_location(&e))
        }
    })
}

/// Decodes one item of a batch, which must be a publication object.
fn decode_item<'a>(raw: &'a RawValue) -> Result<RawPublication<'a>, ProtoError> {
    if !tether_proto::json::is_object(raw.get()) {
        return Err(ProtoError::new(ErrorCode::InvalidMessage, "must be a JSON object"));
    }
    serde_json::from_str(raw.get())
        .map_err(|e| ProtoError::new(ErrorCode::InvalidMessage, strip_location(&e)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPublication<'a> {
    #[serde(borrow)]
    channel: &'a RawValue,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(borrow, default)]
    tags: Option<&'a RawValue>,
    #[serde(borrow, default)]
    to: Option<&'a RawValue>,
    #[serde(borrow, default)]
    idempotency_key: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBroadcast<'a> {
    #[serde(borrow)]
    channels: Vec<&'a RawValue>,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(borrow, default)]
    tags: Option<&'a RawValue>,
    #[serde(borrow, default)]
    to: Option<&'a RawValue>,
    #[serde(borrow, default)]
    idempotency_key: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatch<'a> {
    /// Decoded one by one so that an error names the item.
    #[serde(borrow)]
    publications: Vec<&'a RawValue>,
}

fn decode_channel(raw: &RawValue) -> Result<ChannelName, ProtoError> {
    let s: String = serde_json::from_str(raw.get())
        .map_err(|_| ProtoError::new(ErrorCode::InvalidMessage, "channel must be a string"))?;
    ChannelName::parse(&s).map_err(|e| ProtoError::new(ErrorCode::InvalidChannel, e.to_string()))
}

fn decode_tags(raw: Option<&RawValue>) -> Result<Tags, ProtoError> {
    match raw {
        None => Ok(Tags::new()),
        Some(r) if r.get() == "null" => Ok(Tags::new()),
        Some(r) => serde_json::from_str(r.get())
            .map_err(|e| ProtoError::new(ErrorCode::InvalidTags, strip_location(&e))),
    }
}

fn decode_key(raw: Option<&RawValue>) -> Result<Option<String>, ProtoError> {
    let Some(r) = raw.filter(|r| r.get() != "null") else { return Ok(None) };
    let k: String = serde_json::from_str(r.get())
        .map_err(|_| ProtoError::new(ErrorCode::InvalidMessage, "idempotency_key must be a string"))?;
    tether_proto::message::check_idempotency_key(&k)
        .map_err(|m| ProtoError::new(ErrorCode::InvalidMessage, m))?;
    Ok(Some(k))
}

fn decode_target(raw: Option<&RawValue>) -> Result<Option<Target>, ProtoError> {
    let Some(r) = raw.filter(|r| r.get() != "null") else { return Ok(None) };
    let t: Target = serde_json::from_str(r.get())
        .map_err(|e| ProtoError::new(ErrorCode::InvalidTarget, strip_location(&e)))?;
    let t = t.normalize().map_err(|m| ProtoError::new(ErrorCode::InvalidTarget, m))?;
    Ok(if t.is_empty() { None } else { Some(t) })
}

/// Validates one publication completely (grammar, namespace, size) without publishing.
fn build(
    state: &AppState,
    scope: &Scope,
    channel: ChannelName,
    data: &RawValue,
    tags: Tags,
    target: Option<Target>,
) -> Result<Publication, ProtoError> {
    if !scope.allows(&channel) {
        return Err(ProtoError::new(
            ErrorCode::ChannelNotAllowed,
            "this API key may not publish to this channel",
        ));
    }
    let data = tether_proto::json::minify(data.get());
    state.namespaces.check_api_publish(&channel, data.len())?;
    let mut p = Publication::new(channel, Some(data.into_owned().into_boxed_str()), tags);
    p.target = target;
    Ok(p)
}

/// A validated publication and its idempotency key.
type Keyed = (Publication, Option<String>);

fn build_one(state: &AppState, scope: &Scope, raw: &RawPublication<'_>) -> Result<Keyed, ProtoError> {
    let channel = decode_channel(raw.channel)?;
    let key = decode_key(raw.idempotency_key)?;
    Ok((build(state, scope, channel, raw.data, decode_tags(raw.tags)?, decode_target(raw.to)?)?, key))
}

/// A publish's result: `{}`, or `{"offset":N,"epoch":"…"}` on a channel with history
/// (for a repeated idempotency key: the first publish's).
pub(crate) fn push_result(s: &mut String, done: &Published) {
    s.push('{');
    if let Some(p) = &done.position {
        native::push_position(s, p);
    }
    s.push('}');
}

/// Publishes in order; `{"results":[…]}`.
fn publish_all(state: &AppState, pubs: &[Keyed]) -> Response {
    let mut s = String::with_capacity(16 + 3 * pubs.len());
    s.push_str(r#"{"results":["#);
    for (i, (p, key)) in pubs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        push_result(&mut s, &state.publish_keyed(p, key.as_deref()));
    }
    s.push_str("]}");
    json_response(StatusCode::OK, s)
}

pub(crate) fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `POST /api/publish`.
pub async fn publish(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let (scope, body) = read_body(&state, req).await?;
    let raw: RawPublication<'_> = parse(&state, &body)?;
    let (p, key) = build_one(&state, &scope, &raw).map_err(|e| ApiError(state.count_error(e)))?;
    let mut s = String::new();
    push_result(&mut s, &state.publish_keyed(&p, key.as_deref()));
    Ok(json_response(StatusCode::OK, s))
}

/// `POST /api/broadcast`: one payload to many channels.
pub async fn broadcast(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let (scope, body) = read_body(&state, req).await?;
    let raw: RawBroadcast<'_> = parse(&state, &body)?;
    let max = state.config.http.max_batch_items;
    if raw.channels.len() > max {
        return Err(api_error(
            &state,
            ErrorCode::TooManyItems,
            format!("at most {max} channels per broadcast"),
        ));
    }
    let tags = decode_tags(raw.tags).map_err(|e| ApiError(state.count_error(e)))?;
    let target = decode_target(raw.to).map_err(|e| ApiError(state.count_error(e)))?;
    let key = decode_key(raw.idempotency_key).map_err(|e| ApiError(state.count_error(e)))?;
    let mut pubs: Vec<Keyed> = Vec::with_capacity(raw.channels.len());
    for (i, c) in raw.channels.iter().enumerate() {
        let p = decode_channel(c)
            .and_then(|ch| build(&state, &scope, ch, raw.data, tags.clone(), target.clone()))
            .map_err(|e| api_error(&state, e.code, format!("channels[{i}]: {}", e.message)))?;
        // A repeated channel would deliver the payload twice to its subscribers.
        if let Some(j) = pubs.iter().position(|(q, _)| q.channel == p.channel) {
            return Err(api_error(
                &state,
                ErrorCode::InvalidMessage,
                format!("channels[{i}]: repeats channels[{j}]"),
            ));
        }
        pubs.push((p, key.clone()));
    }
    Ok(publish_all(&state, &pubs))
}

/// `POST /api/batch`: many publications, validated together, published in order.
pub async fn batch(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let (scope, body) = read_body(&state, req).await?;
    let raw: RawBatch<'_> = parse(&state, &body)?;
    let max = state.config.http.max_batch_items;
    if raw.publications.len() > max {
        return Err(api_error(
            &state,
            ErrorCode::TooManyItems,
            format!("at most {max} publications per batch"),
        ));
    }
    let mut pubs = Vec::with_capacity(raw.publications.len());
    for (i, r) in raw.publications.iter().enumerate() {
        let p = decode_item(r)
            .and_then(|r| build_one(&state, &scope, &r))
            .map_err(|e| api_error(&state, e.code, format!("publications[{i}]: {}", e.message)))?;
        pubs.push(p);
    }
    Ok(publish_all(&state, &pubs))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHistory<'a> {
    #[serde(borrow)]
    channel: &'a RawValue,
    #[serde(default)]
    since: Option<u64>,
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default)]
    reverse: Option<bool>,
}

/// Most publications one history page returns.
pub const HISTORY_PAGE_MAX: usize = 1000;

/// A page's limit: what was asked, at most [`HISTORY_PAGE_MAX`] (absent or 0: that many).
pub fn page_limit(asked: Option<u64>) -> usize {
    match asked {
        Some(n) if n > 0 => usize::try_from(n).unwrap_or(usize::MAX).min(HISTORY_PAGE_MAX),
        _ => HISTORY_PAGE_MAX,
    }
}

/// `{"offset":TOP,"epoch":"…","publications":[push,…]}`: a history page, each publication
/// encoded as its `pub` push.
pub fn encode_page(page: &Page<std::sync::Arc<Publication>>) -> String {
    let mut s = String::with_capacity(64 + page.entries.len() * 64);
    s.push('{');
    native::push_position(&mut s, &page.position);
    s.push_str(r#","publications":"#);
    native::push_publications(&mut s, &page.entries);
    s.push('}');
    s
}

/// `POST /api/history`: a page of a channel's history.
pub async fn history(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let (scope, body) = read_body(&state, req).await?;
    let raw: RawHistory<'_> = parse(&state, &body)?;
    let channel = decode_channel(raw.channel).map_err(|e| ApiError(state.count_error(e)))?;
    if !scope.allows(&channel) {
        return Err(api_error(&state, ErrorCode::ChannelNotAllowed, "this API key may not use this channel"));
    }
    state.namespaces.resolve(&channel).map_err(|e| ApiError(state.count_error(e)))?;
    if state.history_limits(&channel).is_none() {
        return Err(api_error(&state, ErrorCode::HistoryDisabled, "this namespace keeps no history"));
    }
    let page = state.hub.history(
        &channel,
        HistoryQuery {
            since: raw.since,
            limit: page_limit(raw.limit),
            backward: raw.reverse.unwrap_or(false),
        },
        None,
        state.now_ms(),
    );
    Ok(json_response(StatusCode::OK, encode_page(&page)))
}

/// `{"clients":[{client,user?,info?},…]}` or, with `stats`, `{"connections":N,"users":M}`:
/// who is present on `channel` (nobody when it has no subscribers).
pub fn encode_presence(state: &AppState, channel: &ChannelName, stats: bool) -> String {
    let now = state.now_ms();
    if stats {
        let c = state.hub.presence_counts(channel, now).unwrap_or_default();
        return format!(r#"{{"connections":{},"users":{}}}"#, c.connections, c.users);
    }
    let mut s = String::from(r#"{"clients":["#);
    for (i, p) in state.hub.presence(channel, now).unwrap_or_default().iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        tether_proto::message::push_client_info(&mut s, p.client, p.user.as_deref(), p.info.as_deref());
    }
    s.push_str("]}");
    s
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChannel<'a> {
    #[serde(borrow)]
    channel: &'a RawValue,
}

/// `POST /api/presence` and `POST /api/presence_stats`.
async fn presence_of(state: AppState, req: Request, stats: bool) -> Result<Response, ApiError> {
    let (scope, body) = read_body(&state, req).await?;
    let raw: RawChannel<'_> = parse(&state, &body)?;
    let channel = decode_channel(raw.channel).map_err(|e| ApiError(state.count_error(e)))?;
    if !scope.allows(&channel) {
        return Err(api_error(&state, ErrorCode::ChannelNotAllowed, "this API key may not use this channel"));
    }
    let opts = state.namespaces.resolve(&channel).map_err(|e| ApiError(state.count_error(e)))?;
    if !opts.track_presence {
        return Err(api_error(&state, ErrorCode::PresenceDisabled, "this namespace does not track presence"));
    }
    Ok(json_response(StatusCode::OK, encode_presence(&state, &channel, stats)))
}

/// `POST /api/presence`: who is present on a channel.
pub async fn presence(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    presence_of(state, req, false).await
}

/// `POST /api/presence_stats`: how many connections and unique users are present.
pub async fn presence_stats(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    presence_of(state, req, true).await
}

/// `GET /api/openapi.json`.
pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// Unknown route.
pub async fn not_found(State(state): State<AppState>) -> ApiError {
    api_error(&state, ErrorCode::NotFound, "no such route")
}

/// Known route, wrong method.
pub async fn method_not_allowed(State(state): State<AppState>) -> ApiError {
    api_error(&state, ErrorCode::MethodNotAllowed, "method not allowed on this route")
}
