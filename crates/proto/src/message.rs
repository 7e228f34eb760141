//! The native protocol, v1: client frames (decoded) and server frames (encoded).
//!
//! Every frame is one JSON object in one WebSocket text frame. See `docs/protocol.md` for
//! the full description with examples.
//!
//! Decoding is done in two steps so that a wrong type in one field yields a precise
//! `invalid_message` error that still carries the request `id`: first every known field is
//! captured as raw JSON, then each one is decoded on its own.

use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::channel::ChannelName;
use crate::error::{ErrorCode, ProtoError};
use crate::filter::Filter;
use crate::identity::Identity;
use crate::tags::Tags;

/// Protocol version string sent in the connect reply.
pub const PROTOCOL_VERSION: &str = "1";

/// A decoded client frame.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientFrame {
    /// A request that expects a reply carrying the same `id`.
    Request {
        /// Correlation id chosen by the client.
        id: u64,
        /// What is asked.
        request: Request,
    },
    /// Answer to a server heartbeat; no reply.
    Pong,
}

/// A request from a client.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Opens the session. Must come first.
    Connect(Connect),
    /// Subscribes to a channel, optionally filtered by tags.
    Subscribe {
        /// Channel to subscribe to.
        channel: ChannelName,
        /// Optional tag filter.
        filter: Option<Filter>,
        /// Recover what was published after this position (the last one the client saw).
        recover: Option<StreamPosition>,
    },
    /// Leaves a channel.
    Unsubscribe {
        /// Channel to leave.
        channel: ChannelName,
    },
    /// Publishes to a channel (where the namespace allows client publishing).
    Publish {
        /// Target channel.
        channel: ChannelName,
        /// The payload, as JSON text (validated by the decoder).
        data: Box<str>,
        /// Tags that subscription filters see.
        tags: Tags,
        /// Retries with the same key publish once (see `docs/delivery.md`).
        idempotency_key: Option<String>,
    },
    /// Reads a page of a channel's history.
    History {
        /// The channel.
        channel: ChannelName,
        /// Forward: offsets above this one; backward (`reverse`): below it.
        since: Option<u64>,
        /// Most publications returned (the server caps it).
        limit: Option<u64>,
        /// Newest first.
        reverse: bool,
    },
    /// Who is present on a channel.
    Presence {
        /// The channel.
        channel: ChannelName,
    },
    /// How many connections and unique users are present on a channel.
    PresenceStats {
        /// The channel.
        channel: ChannelName,
    },
    /// Round-trip check; answered with an empty result.
    Ping,
    /// Creates an account and logs the connection in (may replace `connect`).
    Register(Account),
    /// Logs the connection in with a name and password (may replace `connect`).
    Login(Account),
    /// Renews the connection's credential: with `token`, a fresh JWT; without, a new
    /// session token for the connection's login session.
    Refresh {
        /// A fresh JWT, for JWT connections.
        token: Option<Secret>,
    },
    /// Ends the connection's login session; the connection stays, anonymous.
    Logout,
    /// Changes the password (checking the current one); other sessions are revoked.
    ChangePassword {
        /// Current password.
        password: Secret,
        /// New password.
        new_password: Secret,
    },
    /// Deletes the account (checking the password); every session ends.
    DeleteAccount {
        /// Current password.
        password: Secret,
    },
}

/// A secret string (password, token): its `Debug` never shows it, so it cannot leak into
/// a log line through a derived `Debug`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Parameters of `register` and `login`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// User name.
    pub name: String,
    /// Password.
    pub password: Secret,
    /// Email (registration).
    pub email: Option<String>,
    /// "Remember me"; absent means the server's default for the operation.
    pub persistent: Option<bool>,
}

/// A position in a channel's history: the offset of the last publication seen, in an
/// epoch.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamPosition {
    /// Offset of the last publication seen (0: none).
    pub offset: u64,
    /// The epoch it belongs to.
    pub epoch: String,
}

/// Longest epoch accepted from a client, in bytes (the server's are 16).
pub const MAX_EPOCH_BYTES: usize = 64;
/// Longest idempotency key accepted, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 128;

/// Parameters of `connect`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Connect {
    /// Credentials: a session token, a JWT or a configured static token.
    pub token: Option<Secret>,
    /// Self-declared identity, honoured only where the server allows it.
    pub identity: Option<Identity>,
}

#[derive(Deserialize)]
struct RawFrame<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    op: Option<&'a RawValue>,
    #[serde(borrow, default)]
    channel: Option<&'a RawValue>,
    #[serde(borrow, default)]
    filter: Option<&'a RawValue>,
    /// `null` is a valid payload, so it must not collapse into "absent".
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tags: Option<&'a RawValue>,
    #[serde(borrow, default)]
    token: Option<&'a RawValue>,
    #[serde(borrow, default)]
    identity: Option<&'a RawValue>,
    #[serde(borrow, default)]
    name: Option<&'a RawValue>,
    #[serde(borrow, default)]
    password: Option<&'a RawValue>,
    #[serde(borrow, default)]
    new_password: Option<&'a RawValue>,
    #[serde(borrow, default)]
    email: Option<&'a RawValue>,
    #[serde(borrow, default)]
    persistent: Option<&'a RawValue>,
    #[serde(borrow, default)]
    recover: Option<&'a RawValue>,
    #[serde(borrow, default)]
    idempotency_key: Option<&'a RawValue>,
    #[serde(borrow, default)]
    since: Option<&'a RawValue>,
    #[serde(borrow, default)]
    limit: Option<&'a RawValue>,
    #[serde(borrow, default)]
    reverse: Option<&'a RawValue>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Why a frame could not be decoded. Carries the request id when it could be read, so the
/// error can be correlated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// The request id, if the frame had a readable one.
    pub id: Option<u64>,
    /// The error to send.
    pub error: ProtoError,
}

fn err(id: Option<u64>, code: ErrorCode, message: impl Into<String>) -> DecodeError {
    DecodeError { id, error: ProtoError::new(code, message) }
}

fn field<'a, T: Deserialize<'a>>(
    id: Option<u64>,
    raw: Option<&'a RawValue>,
    name: &str,
    expected: &str,
) -> Result<Option<T>, DecodeError> {
    match raw {
        None => Ok(None),
        Some(r) if r.get() == "null" => Ok(None),
        Some(r) => serde_json::from_str(r.get())
            .map(Some)
            .map_err(|_| err(id, ErrorCode::InvalidMessage, format!("field '{name}' must be {expected}"))),
    }
}

fn required<T>(id: Option<u64>, v: Option<T>, name: &str) -> Result<T, DecodeError> {
    v.ok_or_else(|| err(id, ErrorCode::InvalidMessage, format!("field '{name}' is required")))
}

fn channel(id: Option<u64>, raw: Option<&RawValue>) -> Result<ChannelName, DecodeError> {
    let s: String = required(id, field(id, raw, "channel", "a string")?, "channel")?;
    ChannelName::parse(&s).map_err(|e| err(id, ErrorCode::InvalidChannel, e.to_string()))
}

/// Decodes one client text frame.
pub fn decode_client_frame(text: &str) -> Result<ClientFrame, DecodeError> {
    let parsed = if crate::json::is_object(text) {
        serde_json::from_str::<RawFrame<'_>>(text)
    } else {
        // serde would also read a struct from a JSON array; only objects are frames.
        match serde_json::from_str::<&RawValue>(text) {
            Ok(_) => return Err(err(None, ErrorCode::InvalidMessage, "frame must be a JSON object")),
            Err(e) => Err(e),
        }
    };
    let raw: RawFrame<'_> = match parsed {
        Ok(r) => r,
        Err(e) if e.is_syntax() || e.is_eof() => {
            return Err(err(None, ErrorCode::MalformedJson, "frame is not valid JSON"));
        }
        Err(_) => {
            return Err(err(
                None,
                ErrorCode::InvalidMessage,
                "frame must be a JSON object without duplicate fields",
            ));
        }
    };
    let id: Option<u64> = field(None, raw.id, "id", "a non-negative integer")?;
    let op: String = required(id, field(id, raw.op, "op", "a string")?, "op")?;
    if op == "pong" {
        return Ok(ClientFrame::Pong);
    }
    let request = match op.as_str() {
        "connect" => Request::Connect(Connect {
            token: field::<String>(id, raw.token, "token", "a string")?.map(Secret),
            identity: field::<Identity>(
                id,
                raw.identity,
                "identity",
                "an object of user/device/zone strings",
            )?
            .map(|i| i.validate().map(|()| i).map_err(|m| err(id, ErrorCode::InvalidMessage, m)))
            .transpose()?,
        }),
        "subscribe" => Request::Subscribe {
            channel: channel(id, raw.channel)?,
            filter: field::<String>(id, raw.filter, "filter", "a string")?
                .map(|f| Filter::parse(&f).map_err(|e| err(id, ErrorCode::InvalidFilter, e.to_string())))
                .transpose()?,
            recover: field::<StreamPosition>(
                id,
                raw.recover,
                "recover",
                "an object {offset: non-negative integer, epoch: string}",
            )?
            .map(|p| {
                if p.epoch.is_empty() || p.epoch.len() > MAX_EPOCH_BYTES || p.epoch.contains(char::is_control)
                {
                    Err(err(
                        id,
                        ErrorCode::InvalidMessage,
                        format!(
                            "recover.epoch must be 1 to {MAX_EPOCH_BYTES} bytes without control characters"
                        ),
                    ))
                } else {
                    Ok(p)
                }
            })
            .transpose()?,
        },
        "presence" => Request::Presence { channel: channel(id, raw.channel)? },
        "presence_stats" => Request::PresenceStats { channel: channel(id, raw.channel)? },
        "history" => Request::History {
            channel: channel(id, raw.channel)?,
            since: field(id, raw.since, "since", "a non-negative integer")?,
            limit: field(id, raw.limit, "limit", "a non-negative integer")?,
            reverse: field(id, raw.reverse, "reverse", "a boolean")?.unwrap_or(false),
        },
        "unsubscribe" => Request::Unsubscribe { channel: channel(id, raw.channel)? },
        "publish" => {
            let channel = channel(id, raw.channel)?;
            let data: Box<str> = required(id, raw.data, "data")?.get().into();
            let tags = match raw.tags {
                None => Tags::new(),
                Some(r) if r.get() == "null" => Tags::new(),
                Some(r) => serde_json::from_str(r.get())
                    .map_err(|e| err(id, ErrorCode::InvalidTags, strip_location(&e)))?,
            };
            let idempotency_key: Option<String> =
                field(id, raw.idempotency_key, "idempotency_key", "a string")?;
            if let Some(k) = &idempotency_key {
                check_idempotency_key(k).map_err(|m| err(id, ErrorCode::InvalidMessage, m))?;
            }
            Request::Publish { channel, data, tags, idempotency_key }
        }
        "ping" => Request::Ping,
        "register" | "login" => {
            let account = Account {
                name: required(id, field(id, raw.name, "name", "a string")?, "name")?,
                password: Secret(required(id, field(id, raw.password, "password", "a string")?, "password")?),
                email: field(id, raw.email, "email", "a string")?,
                persistent: field(id, raw.persistent, "persistent", "a boolean")?,
            };
            if op == "register" { Request::Register(account) } else { Request::Login(account) }
        }
        "refresh" => {
            Request::Refresh { token: field::<String>(id, raw.token, "token", "a string")?.map(Secret) }
        }
        "logout" => Request::Logout,
        "change_password" => Request::ChangePassword {
            password: Secret(required(id, field(id, raw.password, "password", "a string")?, "password")?),
            new_password: Secret(required(
                id,
                field(id, raw.new_password, "new_password", "a string")?,
                "new_password",
            )?),
        },
        "delete_account" => Request::DeleteAccount {
            password: Secret(required(id, field(id, raw.password, "password", "a string")?, "password")?),
        },
        _ => return Err(err(id, ErrorCode::UnknownOp, "unknown op")),
    };
    let id = required(id, id, "id")?;
    Ok(ClientFrame::Request { id, request })
}

/// Checks an idempotency key: 1 to [`MAX_IDEMPOTENCY_KEY_BYTES`] bytes, no control
/// characters. The error is the message to send.
pub fn check_idempotency_key(k: &str) -> Result<(), String> {
    if k.is_empty() || k.len() > MAX_IDEMPOTENCY_KEY_BYTES || k.chars().any(char::is_control) {
        return Err(format!(
            "idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY_BYTES} bytes without control characters"
        ));
    }
    Ok(())
}

/// A serde error message without serde_json's " at line 1 column 9" suffix.
pub fn strip_location(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// Encodes a successful reply: `{"id":ID,"result":RESULT}` where `result` is JSON text.
pub fn encode_result(id: u64, result: &str) -> String {
    let mut s = String::with_capacity(24 + result.len());
    let _ = write!(s, r#"{{"id":{id},"result":{result}}}"#);
    s
}

/// Encodes an error reply: `{"id":ID,"error":{"code":…,"message":…}}`, without `id` when
/// the request could not be correlated.
pub fn encode_error(id: Option<u64>, error: &ProtoError) -> String {
    let mut s = String::with_capacity(64 + error.message.len());
    s.push('{');
    if let Some(id) = id {
        let _ = write!(s, r#""id":{id},"#);
    }
    s.push_str(r#""error":{"code":""#);
    s.push_str(error.code.as_str());
    s.push_str(r#"","message":"#);
    push_json_string(&mut s, &error.message);
    s.push_str("}}");
    s
}

/// Encodes one present connection: `{"client":"ID","user":…,"info":…}` (`user` and `info`
/// only when known; `info` is JSON text from the credential).
pub fn push_client_info(s: &mut String, client: u64, user: Option<&str>, info: Option<&str>) {
    let _ = write!(s, r#"{{"client":"{client}""#);
    if let Some(u) = user {
        s.push_str(r#","user":"#);
        push_json_string(s, u);
    }
    if let Some(i) = info {
        s.push_str(r#","info":"#);
        s.push_str(i);
    }
    s.push('}');
}

/// Encodes a presence push: `{"push":"join"|"leave","channel":…,"client":"ID","user":…,"info":…}`.
pub fn encode_presence_push(
    kind: &str,
    channel: &ChannelName,
    client: u64,
    user: Option<&str>,
    info: Option<&str>,
) -> String {
    let mut s = String::with_capacity(64 + channel.as_str().len());
    let _ = write!(s, r#"{{"push":"{kind}","channel":"{}","#, channel.as_str());
    let mut who = String::new();
    push_client_info(&mut who, client, user, info);
    // `who` is an object; splice its fields into the push.
    s.push_str(&who[1..]);
    s
}

/// The server heartbeat frame.
pub const PING_FRAME: &str = r#"{"push":"ping"}"#;

/// Encodes a publication push:
/// `{"push":"pub","channel":…,"data":…,"tags":{…},"offset":N}`; `data` is omitted when the
/// publication has none (possible only for event-server publications), `tags` when empty,
/// `offset` on channels without history.
pub fn encode_publication(
    channel: &ChannelName,
    data: Option<&str>,
    tags: &Tags,
    offset: Option<u64>,
) -> String {
    let mut s = String::with_capacity(48 + channel.as_str().len() + data.map_or(0, str::len));
    s.push_str(r#"{"push":"pub","channel":""#);
    // The channel grammar has no character that needs escaping in JSON.
    s.push_str(channel.as_str());
    s.push('"');
    if let Some(d) = data {
        s.push_str(r#","data":"#);
        s.push_str(d);
    }
    if !tags.is_empty() {
        s.push_str(r#","tags":{"#);
        for (i, (k, v)) in tags.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            push_json_string(&mut s, k);
            s.push(':');
            push_json_string(&mut s, v);
        }
        s.push('}');
    }
    if let Some(o) = offset {
        let _ = write!(s, r#","offset":{o}"#);
    }
    s.push('}');
    s
}

/// Appends `v` as a JSON string literal.
pub fn push_json_string(out: &mut String, v: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in v.bytes().enumerate() {
        let esc: Option<&str> = match b {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0..=0x1f => None,
            _ => continue,
        };
        out.push_str(&v[start..i]);
        match esc {
            Some(e) => out.push_str(e),
            None => {
                let _ = write!(out, "\\u{b:04x}");
            }
        }
        start = i + 1;
    }
    out.push_str(&v[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_err(s: &str) -> (Option<u64>, ErrorCode) {
        let e = decode_client_frame(s).unwrap_err();
        (e.id, e.error.code)
    }

    #[test]
    fn decodes_requests() {
        let f =
            decode_client_frame(r#"{"id":7,"op":"subscribe","channel":"chat:a","filter":"k=v"}"#).unwrap();
        match f {
            ClientFrame::Request {
                id: 7,
                request: Request::Subscribe { channel, filter, recover: None },
            } => {
                assert_eq!(channel.as_str(), "chat:a");
                assert!(filter.is_some());
            }
            other => panic!("unexpected {other:?}"),
        }
        let f = decode_client_frame(
            r#"{"id":1,"op":"subscribe","channel":"a","recover":{"offset":4,"epoch":"e1"}}"#,
        )
        .unwrap();
        let want = StreamPosition { offset: 4, epoch: "e1".into() };
        assert!(
            matches!(f, ClientFrame::Request { request: Request::Subscribe { recover: Some(p), .. }, .. } if p == want)
        );
        let f = decode_client_frame(
            r#"{"id":1,"op":"history","channel":"a","since":3,"limit":10,"reverse":true}"#,
        )
        .unwrap();
        assert!(matches!(
            f,
            ClientFrame::Request {
                request: Request::History { since: Some(3), limit: Some(10), reverse: true, .. },
                ..
            }
        ));
        let f =
            decode_client_frame(r#"{"id":1,"op":"publish","channel":"a","data":1,"idempotency_key":"k-1"}"#)
                .unwrap();
        assert!(matches!(
            f,
            ClientFrame::Request { request: Request::Publish { idempotency_key: Some(k), .. }, .. } if k == "k-1"
        ));
        assert_eq!(decode_client_frame(r#"{"op":"pong"}"#).unwrap(), ClientFrame::Pong);
        let f = decode_client_frame(
            r#"{"id":1,"op":"publish","channel":"a","data":{"x":[1,2]},"tags":{"k":"v"}}"#,
        )
        .unwrap();
        match f {
            ClientFrame::Request { request: Request::Publish { data, tags, .. }, .. } => {
                assert_eq!(&*data, r#"{"x":[1,2]}"#);
                assert_eq!(tags.get("k"), Some("v"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn error_classes() {
        assert_eq!(decode_err("{"), (None, ErrorCode::MalformedJson));
        assert_eq!(decode_err("nope"), (None, ErrorCode::MalformedJson));
        assert_eq!(decode_err("[1]"), (None, ErrorCode::InvalidMessage));
        assert_eq!(decode_err(r#"{"id":1,"id":2,"op":"ping"}"#), (None, ErrorCode::InvalidMessage));
        assert_eq!(decode_err(r#"{"id":-1,"op":"ping"}"#), (None, ErrorCode::InvalidMessage));
        assert_eq!(decode_err(r#"{"id":3}"#), (Some(3), ErrorCode::InvalidMessage));
        assert_eq!(decode_err(r#"{"id":3,"op":5}"#), (Some(3), ErrorCode::InvalidMessage));
        assert_eq!(decode_err(r#"{"id":3,"op":"fly"}"#), (Some(3), ErrorCode::UnknownOp));
        assert_eq!(decode_err(r#"{"op":"ping"}"#), (None, ErrorCode::InvalidMessage));
        assert_eq!(decode_err(r#"{"id":4,"op":"subscribe"}"#), (Some(4), ErrorCode::InvalidMessage));
        assert_eq!(
            decode_err(r#"{"id":4,"op":"subscribe","channel":1}"#),
            (Some(4), ErrorCode::InvalidMessage)
        );
        assert_eq!(
            decode_err(r#"{"id":4,"op":"subscribe","channel":"a b"}"#),
            (Some(4), ErrorCode::InvalidChannel)
        );
        assert_eq!(
            decode_err(r#"{"id":4,"op":"subscribe","channel":"a","filter":"(("}"#),
            (Some(4), ErrorCode::InvalidFilter)
        );
        assert_eq!(
            decode_err(r#"{"id":5,"op":"publish","channel":"a"}"#),
            (Some(5), ErrorCode::InvalidMessage)
        );
        match decode_client_frame(r#"{"id":5,"op":"publish","channel":"a","data":null}"#) {
            Ok(ClientFrame::Request { request: Request::Publish { data, .. }, .. }) => {
                assert_eq!(&*data, "null")
            }
            other => panic!("null is a payload: {other:?}"),
        }
        assert_eq!(
            decode_err(r#"{"id":5,"op":"publish","channel":"a","data":1,"tags":{"k":1}}"#),
            (Some(5), ErrorCode::InvalidTags)
        );
        assert_eq!(
            decode_err(r#"{"id":6,"op":"connect","identity":{"user":""}}"#),
            (Some(6), ErrorCode::InvalidMessage)
        );
        for bad in [
            r#"{"id":7,"op":"subscribe","channel":"a","recover":{"offset":-1,"epoch":"e"}}"#,
            r#"{"id":7,"op":"subscribe","channel":"a","recover":{"offset":1}}"#,
            r#"{"id":7,"op":"subscribe","channel":"a","recover":{"offset":1,"epoch":""}}"#,
            r#"{"id":7,"op":"subscribe","channel":"a","recover":{"offset":1,"epoch":"e","x":1}}"#,
            r#"{"id":7,"op":"subscribe","channel":"a","recover":5}"#,
            r#"{"id":7,"op":"publish","channel":"a","data":1,"idempotency_key":""}"#,
            r#"{"id":7,"op":"publish","channel":"a","data":1,"idempotency_key":7}"#,
            r#"{"id":7,"op":"publish","channel":"a","data":1,"idempotency_key":"a\nb"}"#,
            r#"{"id":7,"op":"history","channel":"a","limit":-2}"#,
            r#"{"id":7,"op":"history","channel":"a","reverse":"yes"}"#,
        ] {
            assert_eq!(decode_err(bad), (Some(7), ErrorCode::InvalidMessage), "{bad}");
        }
        let long = format!(
            r#"{{"id":7,"op":"publish","channel":"a","data":1,"idempotency_key":"{}"}}"#,
            "k".repeat(129)
        );
        assert_eq!(decode_err(&long), (Some(7), ErrorCode::InvalidMessage));
    }

    #[test]
    fn encodes() {
        let c = ChannelName::parse("n:c").unwrap();
        let tags = Tags::from_pairs([("k", "v\"")]).unwrap();
        let s = encode_publication(&c, Some(r#"{"a":1}"#), &tags, None);
        assert_eq!(s, r#"{"push":"pub","channel":"n:c","data":{"a":1},"tags":{"k":"v\""}}"#);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["tags"]["k"], "v\"");
        let s = encode_publication(&c, None, &Tags::new(), Some(7));
        assert_eq!(s, r#"{"push":"pub","channel":"n:c","offset":7}"#);
        let s = encode_presence_push("join", &c, 12, Some("a\"b"), Some(r#"{"x":1}"#));
        assert_eq!(s, r#"{"push":"join","channel":"n:c","client":"12","user":"a\"b","info":{"x":1}}"#);
        assert_eq!(
            encode_presence_push("leave", &c, 3, None, None),
            r#"{"push":"leave","channel":"n:c","client":"3"}"#
        );
        assert!(matches!(
            decode_client_frame(r#"{"id":1,"op":"presence_stats","channel":"a"}"#),
            Ok(ClientFrame::Request { request: Request::PresenceStats { .. }, .. })
        ));
        assert_eq!(encode_result(3, "{}"), r#"{"id":3,"result":{}}"#);
        let e = ProtoError::new(ErrorCode::UnknownOp, "bad\u{1}\n");
        let s = encode_error(None, &e);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["error"]["message"], "bad\u{1}\n");
        assert_eq!(v["error"]["code"], "unknown_op");
    }
}
