//! Server → client encoders, byte for byte what the reference's `toJSON` +
//! `JSON.stringify` write: the same key order, the same string escapes and the same
//! number formatting.

use std::io::Write as _;

use serde_json::{Number, Value};

use super::{SyncFragment, Uuid, WireError};

/// The largest close reason a close frame can carry: 125 bytes of control-frame payload
/// minus the 2-byte code.
pub const MAX_CLOSE_REASON: usize = 123;

/// A server → client message, borrowing what it encodes. The server always sends arrays:
/// one frame is `[m1,m2,…]` (see [`encode_frame`]).
#[derive(Debug, Clone, Copy)]
pub enum ServerMessage<'a> {
    /// `{"type":"SessionCreateReply","index","sessionToken"?,"error"?}`: not a reply
    /// subtype, it has no `replyTo`.
    SessionCreateReply {
        /// `index` (0: the server's first message).
        index: u64,
        /// `sessionToken` on success (omitted when `None` or empty, as the reference's
        /// truthiness test does).
        session_token: Option<&'a str>,
        /// `error` on denial.
        error: Option<&'a WireError>,
    },
    /// `{"type":"ScopeFetchReply","index","replyTo","scopeIndex"?,"error"?}`.
    ScopeFetchReply {
        /// `index`.
        index: u64,
        /// `replyTo`: the `ScopeFetch`'s index.
        reply_to: u64,
        /// `scopeIndex` on success.
        scope_index: Option<u64>,
        /// `error` on denial.
        error: Option<&'a WireError>,
    },
    /// `{"type":"ScopeState","index","scopeIndex","rootUUID","fragments"}`: a full snapshot.
    ScopeState {
        /// `index`.
        index: u64,
        /// `scopeIndex`.
        scope_index: u64,
        /// `rootUUID`.
        root_uuid: Uuid,
        /// An already-encoded JSON array (see [`encode_fragments`]), shared between
        /// sessions, written as it is.
        fragments_json: &'a [u8],
    },
    /// `{"type":"ScopeSync","index","scopeIndex","fragments"}`: another session's applied
    /// changes (the server never sends `atomic` or `procedure`).
    ScopeSync {
        /// `index`.
        index: u64,
        /// `scopeIndex`.
        scope_index: u64,
        /// An already-encoded JSON array (see [`encode_fragments`]), written as it is.
        fragments_json: &'a [u8],
    },
    /// `{"type":"ScopeSyncReply","index","replyTo","fragmentReplies"}`.
    ScopeSyncReply {
        /// `index`.
        index: u64,
        /// `replyTo`: the `ScopeSync`'s index.
        reply_to: u64,
        /// One per fragment of the sync, in order: `None` is `{}` (accepted), `Some(e)` is
        /// `{"error":{…}}`.
        fragment_replies: &'a [Option<WireError>],
    },
    /// `{"type":"Ping","index","ack","resendMissing"}`.
    Ping {
        /// `index` (always 0: pings are unreliable).
        index: u64,
        /// `ack`: the last client index received.
        ack: u64,
        /// `resendMissing`: the server is about to resend what the client has not
        /// acknowledged.
        resend_missing: bool,
    },
}

impl ServerMessage<'_> {
    /// The wire `type`.
    pub const fn type_name(&self) -> &'static str {
        match self {
            Self::SessionCreateReply { .. } => "SessionCreateReply",
            Self::ScopeFetchReply { .. } => "ScopeFetchReply",
            Self::ScopeState { .. } => "ScopeState",
            Self::ScopeSync { .. } => "ScopeSync",
            Self::ScopeSyncReply { .. } => "ScopeSyncReply",
            Self::Ping { .. } => "Ping",
        }
    }

    /// Appends the message as one JSON object, keys in the reference's `toJSON` order
    /// (`type`, `index`, then the message's own fields).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(br#"{"type":""#);
        out.extend_from_slice(self.type_name().as_bytes());
        out.extend_from_slice(br#"","index":"#);
        match *self {
            Self::SessionCreateReply { index, session_token, error } => {
                push_u64(out, index);
                if let Some(token) = session_token.filter(|t| !t.is_empty()) {
                    out.extend_from_slice(br#","sessionToken":"#);
                    push_string(out, token);
                }
                if let Some(e) = error {
                    out.extend_from_slice(br#","error":"#);
                    push_error(out, e);
                }
            }
            Self::ScopeFetchReply { index, reply_to, scope_index, error } => {
                push_u64(out, index);
                out.extend_from_slice(br#","replyTo":"#);
                push_u64(out, reply_to);
                if let Some(s) = scope_index {
                    out.extend_from_slice(br#","scopeIndex":"#);
                    push_u64(out, s);
                }
                if let Some(e) = error {
                    out.extend_from_slice(br#","error":"#);
                    push_error(out, e);
                }
            }
            Self::ScopeState { index, scope_index, root_uuid, fragments_json } => {
                push_u64(out, index);
                out.extend_from_slice(br#","scopeIndex":"#);
                push_u64(out, scope_index);
                out.extend_from_slice(br#","rootUUID":""#);
                push_uuid(out, root_uuid);
                out.extend_from_slice(br#"","fragments":"#);
                out.extend_from_slice(fragments_json);
            }
            Self::ScopeSync { index, scope_index, fragments_json } => {
                push_u64(out, index);
                out.extend_from_slice(br#","scopeIndex":"#);
                push_u64(out, scope_index);
                out.extend_from_slice(br#","fragments":"#);
                out.extend_from_slice(fragments_json);
            }
            Self::ScopeSyncReply { index, reply_to, fragment_replies } => {
                push_u64(out, index);
                out.extend_from_slice(br#","replyTo":"#);
                push_u64(out, reply_to);
                out.extend_from_slice(br#","fragmentReplies":["#);
                for (i, reply) in fragment_replies.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    match reply {
                        None => out.extend_from_slice(b"{}"),
                        Some(e) => {
                            out.extend_from_slice(br#"{"error":"#);
                            push_error(out, e);
                            out.push(b'}');
                        }
                    }
                }
                out.push(b']');
            }
            Self::Ping { index, ack, resend_missing } => {
                push_u64(out, index);
                out.extend_from_slice(br#","ack":"#);
                push_u64(out, ack);
                out.extend_from_slice(if resend_missing {
                    br#","resendMissing":true"#
                } else {
                    br#","resendMissing":false"#
                });
            }
        }
        out.push(b'}');
    }
}

/// One frame from encoded messages: `[` + the messages joined with `,` + `]`.
pub fn encode_frame(messages: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + messages.iter().map(|m| m.len() + 1).sum::<usize>());
    out.push(b'[');
    for (i, m) in messages.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(m);
    }
    out.push(b']');
    out
}

/// Appends a JSON array of fragments, each `{"type","uuid","clsName","properties"}` in
/// that order, properties in their order.
///
/// `properties` is always written (`{}` when empty) and so is `clsName`; the reference
/// leaves out `properties` when a fragment had none and `clsName` when it is empty.
/// Property values are written as `JSON.stringify` would: strings with its escapes, numbers
/// in its format (`1e+21`, `1e-7`, `100` for the float 100.0).
pub fn encode_fragments(fragments: &[SyncFragment], out: &mut Vec<u8>) {
    out.push(b'[');
    for (i, f) in fragments.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(br#"{"type":""#);
        out.extend_from_slice(f.kind.as_str().as_bytes());
        out.extend_from_slice(br#"","uuid":""#);
        push_uuid(out, f.uuid);
        out.extend_from_slice(br#"","clsName":"#);
        push_string(out, &f.cls_name);
        out.extend_from_slice(br#","properties":{"#);
        for (j, (key, value)) in f.properties.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            push_string(out, key);
            out.push(b':');
            push_value(out, value);
        }
        out.extend_from_slice(b"}}");
    }
    out.push(b']');
}

/// The close reason for codes 4096 and 4097: `{"message":…,"type":…}` as the reference
/// sends it (`JSON.stringify(Errors.jsonify(error))`), cut to fit a close frame.
///
/// The reference does not cut it, so its longest reason (the unrecognized-handshake one, 129
/// bytes) makes the close frame invalid and clients see 1002 instead. Here the message is
/// truncated on a character boundary and ends with `…` so that the whole JSON is at most
/// [`MAX_CLOSE_REASON`] bytes; the type is kept whole unless it alone is too long.
pub fn close_reason(error: &WireError) -> String {
    let kind = error.kind.as_deref().filter(|k| !k.is_empty());
    let full = close_reason_json(&error.message, kind);
    if full.len() <= MAX_CLOSE_REASON {
        return full;
    }
    // Types are short constants; one that leaves no room for a message is cut as well.
    let cut_kind: String;
    let kind = match kind {
        Some(k) if close_reason_json("…", Some(k)).len() > MAX_CLOSE_REASON => {
            let room = MAX_CLOSE_REASON - close_reason_json("…", Some("…")).len();
            cut_kind = format!("{}…", truncate_escaped(k, room));
            Some(cut_kind.as_str())
        }
        other => other,
    };
    let budget = MAX_CLOSE_REASON - close_reason_json("…", kind).len();
    let message = format!("{}…", truncate_escaped(&error.message, budget));
    close_reason_json(&message, kind)
}

fn close_reason_json(message: &str, kind: Option<&str>) -> String {
    let mut out = Vec::with_capacity(32 + message.len());
    out.extend_from_slice(br#"{"message":"#);
    push_string(&mut out, message);
    if let Some(k) = kind {
        out.extend_from_slice(br#","type":"#);
        push_string(&mut out, k);
    }
    out.push(b'}');
    // Only UTF-8 was written: `push_string` copies `&str`s and ASCII escapes.
    String::from_utf8(out).unwrap_or_default()
}

/// The longest prefix of `s`, cut on a character boundary, whose JSON-escaped form (without
/// quotes) is at most `budget` bytes.
fn truncate_escaped(s: &str, budget: usize) -> &str {
    let mut used = 0;
    for (i, c) in s.char_indices() {
        let len = escaped_char_len(c);
        if used + len > budget {
            return &s[..i];
        }
        used += len;
    }
    s
}

fn escaped_char_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\u{8}' | '\u{c}' | '\n' | '\r' | '\t' => 2,
        '\u{0}'..='\u{1f}' => 6,
        c => c.len_utf8(),
    }
}

/// Appends `{"message":…,"type"?:…}` (`Errors.jsonify`: `type` only when truthy).
fn push_error(out: &mut Vec<u8>, e: &WireError) {
    out.extend_from_slice(br#"{"message":"#);
    push_string(out, &e.message);
    if let Some(kind) = e.kind.as_deref().filter(|k| !k.is_empty()) {
        out.extend_from_slice(br#","type":"#);
        push_string(out, kind);
    }
    out.push(b'}');
}

fn push_u64(out: &mut Vec<u8>, n: u64) {
    // Not `write!`: core::fmt was a tenth of the scope actor's fan-out time.
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn push_uuid(out: &mut Vec<u8>, u: Uuid) {
    let _ = write!(out, "{u}");
}

/// Appends a JSON string literal escaped as `JSON.stringify` does: `"` and `\`, the short
/// escapes `\b \f \n \r \t`, every other control character as `\u00xx` (lower-case hex),
/// and nothing else (not `/`, not non-ASCII, not U+2028/U+2029).
pub(super) fn push_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x0c => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if short.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(short);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Appends a JSON value as `JSON.stringify` writes it: strings as [`push_string`], numbers
/// as JavaScript prints them (see [`push_number`]), object keys in the `Map`'s order.
pub(super) fn push_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => push_number(out, n),
        Value::String(s) => push_string(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                push_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            out.push(b'{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                push_string(out, k);
                out.push(b':');
                push_value(out, item);
            }
            out.push(b'}');
        }
    }
}

/// Integers as their digits (exactly, even past 2^53 where JavaScript would round them);
/// floats as `Number.prototype.toString`.
fn push_number(out: &mut Vec<u8>, n: &Number) {
    if let Some(u) = n.as_u64() {
        push_u64(out, u);
    } else if let Some(i) = n.as_i64() {
        let _ = write!(out, "{i}");
    } else if let Some(f) = n.as_f64() {
        push_js_f64(out, f);
    }
}

/// `Number::toString(x)` (ECMA-262 §6.1.6.1.20) for a finite `x`: the shortest digits that
/// read back as `x`, in positional notation for 1e-6 ≤ |x| < 1e21 and exponential
/// (`1e+21`, `1.5e-7`) outside it; `-0` is `0`.
pub(super) fn push_js_f64(out: &mut Vec<u8>, x: f64) {
    if x == 0.0 || !x.is_finite() {
        // JSON.stringify writes non-finite numbers as null; serde_json never holds one.
        out.extend_from_slice(if x == 0.0 { b"0" } else { b"null" });
        return;
    }
    if x < 0.0 {
        out.push(b'-');
    }
    // Rust's `{:e}` is the shortest round-trip form, `d[.ddd]e[-]N`: the same digits.
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let digits: Vec<u8> = mantissa.bytes().filter(u8::is_ascii_digit).collect();
    let k = digits.len() as i64;
    // x = 0.d1d2… × 10^n.
    let n = exp.parse::<i64>().unwrap_or(0) + 1;
    if k <= n && n <= 21 {
        out.extend_from_slice(&digits);
        out.extend(std::iter::repeat_n(b'0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        out.extend_from_slice(&digits[..n as usize]);
        out.push(b'.');
        out.extend_from_slice(&digits[n as usize..]);
    } else if -6 < n && n <= 0 {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', (-n) as usize));
        out.extend_from_slice(&digits);
    } else {
        out.push(digits[0]);
        if k > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..]);
        }
        let e = n - 1;
        let _ = write!(out, "e{}{}", if e < 0 { '-' } else { '+' }, e.abs());
    }
}
