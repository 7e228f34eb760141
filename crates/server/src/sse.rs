//! Server-sent events at `/sse?channel=…[&filter=…][&token=…]`: one-way subscribers.
//!
//! Each publication is one event whose `data:` is the native push JSON (payloads are
//! stored minified, so it never contains a raw newline). A comment line `: ping` is sent
//! every `sse.heartbeat_ms`. When the server shuts down or the client is too slow, a last
//! `event: disconnect` carries the same code a WebSocket would get.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use std::pin::Pin;
use tether_engine::history::{Position, Recovery};
use tether_engine::hub::ConnId;
use tether_engine::hub::{SubscribeOptions, Subscribed};
use tether_engine::{Publication, Subscriber};
use tether_proto::{ChannelName, ErrorCode, Filter, ProtoError};

use tokio::time::{Instant, Sleep, sleep_until};
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::api::ApiError;
use crate::auth::{Principal, PrincipalKind, Verified};
use crate::conn::close;
use crate::metrics::{ConnectionGauge, Transport};
use crate::outbox::{Frame, Outbox, Overflowed};
use crate::state::{AppState, ConnLimiter, ConnSlot};

/// Encodes a publication as an SSE event; on a channel with history its `id` is the
/// position `EPOCH:OFFSET`, which the browser sends back as `Last-Event-ID` when it
/// reconnects.
pub fn encode_event(p: &Publication) -> Frame {
    let json = crate::dialects::native::publication_json(p);
    let mut s = String::with_capacity(json.len() + 48);
    if let (Some(offset), Some(epoch)) = (p.offset, p.epoch.as_deref()) {
        push_id(&mut s, epoch, offset);
    }
    s.push_str("data: ");
    // Payloads are minified at the edge, so raw line breaks cannot occur; map any that
    // would to spaces rather than let them split the event.
    if json.contains(['\n', '\r']) {
        s.extend(json.chars().map(|c| if c == '\n' || c == '\r' { ' ' } else { c }));
    } else {
        s.push_str(&json);
    }
    s.push_str("\n\n");
    Frame::now(s)
}

/// `id: EPOCH:OFFSET` and its line end.
fn push_id(s: &mut String, epoch: &str, offset: u64) {
    use std::fmt::Write as _;
    let _ = writeln!(s, "id: {epoch}:{offset}");
}

/// Reads a `Last-Event-ID` (`EPOCH:OFFSET`, as [`encode_event`] writes ids).
pub fn parse_event_id(id: &str) -> Option<Position> {
    let (epoch, offset) = id.trim().rsplit_once(':')?;
    if epoch.is_empty()
        || epoch.len() > tether_proto::message::MAX_EPOCH_BYTES
        || epoch.contains(char::is_control)
    {
        return None;
    }
    Some(Position { offset: offset.parse().ok()?, epoch: epoch.into() })
}

/// The stream's first chunk on a channel with history: the recovered publications (each
/// an event with its id), then `event: subscribed` with the position (and its id, so a
/// later reconnect resumes from there) and, when a recovery was asked for, whether it
/// worked.
fn subscribed_events(done: &Subscribed, asked: bool) -> Bytes {
    let Some(pos) = &done.position else {
        return Bytes::from_static(b": subscribed\n\n");
    };
    let mut s = String::new();
    let mut recovered = None;
    match &done.recovery {
        Some(Recovery::Recovered(entries)) => {
            for e in entries {
                s.push_str(&encode_event(&e.item).text);
            }
            recovered = Some(r#","recovered":true"#.to_owned());
        }
        Some(Recovery::NotRecovered(why)) => {
            let reason = crate::dialects::native::not_recovered_reason(*why);
            recovered = Some(format!(r#","recovered":false,"reason":"{reason}""#));
        }
        None => {}
    }
    push_id(&mut s, &pos.epoch, pos.offset);
    s.push_str("event: subscribed\ndata: ");
    s.push('{');
    crate::dialects::native::push_position(&mut s, pos);
    if asked {
        s.push_str(recovered.as_deref().unwrap_or(r#","recovered":false"#));
    }
    s.push_str("}\n\n");
    Bytes::from(s)
}

/// Query parameters of `/sse`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SseQuery {
    /// Channel to subscribe to.
    pub channel: String,
    /// Optional filter.
    pub filter: Option<String>,
    /// Optional credential: session token, JWT or static token.
    pub token: Option<String>,
}

struct Subscription {
    state: AppState,
    channel: ChannelName,
    id: ConnId,
    outbox: Arc<Outbox>,
    /// The login session the stream holds, registered for revocation.
    session: Option<tether_store::SessionId>,
    /// Ends the stream when the credential expires (an SSE client cannot refresh it).
    expiry: Option<tokio::task::AbortHandle>,
    _slot: ConnSlot,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(sid) = self.session {
            self.state.auth.live.unregister(sid, self.id);
        }
        if let Some(t) = &self.expiry {
            t.abort();
        }
        self.outbox.close();
        self.state.hub.unsubscribe(&self.channel, self.id);
    }
}

struct StreamState {
    sub: Subscription,
    batch: VecDeque<Frame>,
    /// Created once and re-armed, rather than a new timer and a new cancellation waiter
    /// per chunk sent.
    heartbeat: Pin<Box<Sleep>>,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    done: bool,
    _gauge: ConnectionGauge,
}

fn disconnect_event(code: u16, reason: &str) -> Bytes {
    Bytes::from(format!("event: disconnect\ndata: {{\"code\":{code},\"reason\":\"{reason}\"}}\n\n"))
}

/// `GET /sse`.
pub async fn handler(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<SseQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let err = |code, msg: String| ApiError(state.count_error(ProtoError::new(code, msg)));
    let Query(q) = query.map_err(|e| err(ErrorCode::InvalidMessage, e.body_text()))?;
    let channel =
        ChannelName::parse(&q.channel).map_err(|e| err(ErrorCode::InvalidChannel, e.to_string()))?;
    let filter = q
        .filter
        .as_deref()
        .map(Filter::parse)
        .transpose()
        .map_err(|e| err(ErrorCode::InvalidFilter, e.to_string()))?;
    // EventSource cannot set headers, so the token may come in the query; a Bearer header
    // works too. No credential: a trusted proxy's identity headers, or anonymous.
    let token = match (q.token.as_deref(), headers.contains_key(header::AUTHORIZATION)) {
        (Some(t), _) => Some(t),
        // A credential in another scheme is an error, not a silent anonymous stream.
        (None, true) => {
            Some(crate::api::bearer(&headers).map_err(|m| err(ErrorCode::Unauthenticated, m.to_owned()))?)
        }
        (None, false) => None,
    };
    let principal = match token {
        // A persistent session is not renewed here: an SSE client could not learn the new token.
        Some(t) => state.auth.verify_with(t, false).await,
        None => match state.auth.proxy.identity(peer.ip(), &headers) {
            Some(h) => {
                Ok(Verified { principal: Principal::with_identity(h, PrincipalKind::Header), renewed: None })
            }
            None if state.config.auth.allow_anonymous => {
                Ok(Verified { principal: Principal::anonymous(), renewed: None })
            }
            None => Err(ProtoError::new(ErrorCode::Unauthenticated, "credentials required")),
        },
    }
    .map_err(|e| ApiError(state.count_error(e)))?
    .principal;
    let opts = state
        .namespaces
        .check_subscribe(&channel, &principal.access())
        .map_err(|e| ApiError(state.count_error(e)))?;
    let identity = Arc::clone(&principal.identity);
    let slot = match ConnLimiter::acquire(&state, peer.ip()) {
        Ok(s) => s,
        Err(e) => return Ok(crate::api::limit_response(&state, e)),
    };
    // A browser reconnecting sends the id of the last event it got.
    let since = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(v.to_str().ok().and_then(parse_event_id).ok_or_else(|| {
            err(
                ErrorCode::InvalidMessage,
                "Last-Event-ID must be EPOCH:OFFSET as sent in an event id".to_owned(),
            )
        })?),
    };
    let outbox = state.new_outbox();
    let id = state.next_conn_id();
    let o = SubscribeOptions {
        max_subscribers: opts.max_subscribers,
        history: opts.history_limits(),
        recover: since.as_ref().map(|p| (p, crate::dialects::native::recovery_limit(opts))),
        // SSE streams are receive-only and have no heartbeat reply to refresh an entry by:
        // they do not appear in presence.
        presence: None,
        now_ms: state.now_ms(),
    };
    let done = state
        .hub
        .subscribe_with(
            &channel,
            Subscriber { conn: id, sink: Arc::clone(&outbox), format: state.formats.sse, identity },
            filter,
            &o,
        )
        .map_err(|e| ApiError(state.count_error(e.into())))?;
    let first = subscribed_events(&done, since.is_some() && done.position.is_some());
    let heartbeat = Duration::from_millis(state.config.sse.heartbeat_ms);
    // Cancelled by server shutdown (the parent), by revocation of the stream's session, or
    // when its credential expires.
    let ended = state.shutdown.child_token();
    let session = principal.session_id();
    if let Some(sid) = session {
        let ended = ended.clone();
        state.auth.live.register(
            sid,
            id,
            Arc::new(move |ev| {
                if let crate::auth::live::LiveEvent::Revoked(_) = ev {
                    ended.cancel();
                }
            }),
        );
    }
    let expiry = state.auth.effective_expiry(&principal).map(|at| {
        let (ended, clock) = (ended.clone(), state.auth.clock().clone());
        tokio::spawn(async move {
            clock.sleep_until(at).await;
            ended.cancel();
        })
        .abort_handle()
    });
    let st = StreamState {
        sub: Subscription { state: Arc::clone(&state), channel, id, outbox, session, expiry, _slot: slot },
        batch: VecDeque::new(),
        heartbeat: Box::pin(sleep_until(Instant::now() + heartbeat)),
        cancelled: Box::pin(ended.cancelled_owned()),
        done: false,
        _gauge: state.metrics.connection_opened(Transport::Sse),
    };
    let body = stream::unfold(st, move |mut st| async move {
        if st.done {
            return None;
        }
        let chunk = tokio::select! {
            biased;
            () = st.cancelled.as_mut() => {
                st.done = true;
                if st.sub.state.shutdown.is_cancelled() {
                    disconnect_event(close::GOING_AWAY, "server shutting down; reconnect")
                } else {
                    disconnect_event(close::AUTH_EXPIRED, "credentials expired or revoked")
                }
            }
            taken = st.sub.outbox.take(&mut st.batch) => {
                if taken == Err(Overflowed) {
                    st.sub.state.metrics.slow_consumers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    st.done = true;
                    disconnect_event(close::SLOW_CONSUMER, "slow consumer")
                } else {
                    if let Some(f) = st.batch.front() {
                        st.sub.state.metrics.publish_to_write.observe(f.at.elapsed());
                    }
                    let chunk = if st.batch.len() == 1 {
                        // The shared encoding itself: no copy.
                        st.batch.pop_front().map(|f| Bytes::from(f.text)).unwrap_or_default()
                    } else {
                        let mut buf = Vec::with_capacity(st.batch.iter().map(|f| f.text.len()).sum());
                        for f in st.batch.drain(..) {
                            buf.extend_from_slice(f.text.as_bytes());
                        }
                        Bytes::from(buf)
                    };
                    st.sub.state.metrics.bytes_out.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    chunk
                }
            }
            () = st.heartbeat.as_mut() => {
                st.heartbeat.as_mut().reset(Instant::now() + heartbeat);
                Bytes::from_static(b": ping\n\n")
            }
        };
        Some((Ok::<_, std::convert::Infallible>(chunk), st))
    });
    let first = stream::once(async { Ok(first) });
    let body = Body::from_stream(futures_util::StreamExt::chain(first, body));
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn event_ids_round_trip_and_bad_ones_are_refused() {
        let mut s = String::new();
        push_id(&mut s, "0123456789abcdef", 42);
        assert_eq!(s, "id: 0123456789abcdef:42\n");
        let p = parse_event_id("0123456789abcdef:42").unwrap();
        assert_eq!((p.offset, &*p.epoch), (42, "0123456789abcdef"));
        // The epoch may itself contain ':' (a client's choice); the offset is after the last.
        assert_eq!(parse_event_id("a:b:7").map(|p| p.offset), Some(7));
        for bad in
            ["", "42", ":42", "e:", "e:-1", "e:x", "e:18446744073709551616", &format!("{}:1", "e".repeat(65))]
        {
            assert!(parse_event_id(bad).is_none(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn any_position_survives_the_round_trip(epoch in "[0-9a-zA-Z_:-]{1,64}", offset: u64) {
            let mut s = String::new();
            push_id(&mut s, &epoch, offset);
            let id = s.strip_prefix("id: ").and_then(|r| r.strip_suffix('\n')).unwrap();
            let p = parse_event_id(id).unwrap();
            prop_assert_eq!((p.offset, &*p.epoch), (offset, epoch.as_str()));
        }

        #[test]
        fn no_header_value_panics(id in ".{0,200}") {
            let _ = parse_event_id(&id);
        }
    }
}
