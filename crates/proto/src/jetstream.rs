//! Wire types of the Jetstream Sync protocol (npm `jetstream@0.13.4`), which Tether speaks on
//! `/jetstream` so that Jetstream's own clients work unchanged.
//!
//! The reference for every field and rule is `../shared/reference/seed-systems.md` §1 and
//! `docs/dialects/jetstream.md`; where they differ, the reference's code
//! (`lib/message/*.js`, `lib/sync_fragment.js`) is normative and the decoder follows it.
//! This module only decodes and encodes; what a message does is the engine's
//! (`tether_engine::sync`) and the server dialect's business.
//!
//! # Framing
//!
//! A text frame carries one JSON message or a JSON array of messages. Arrays are decoded
//! message by message and sorted by `index` (as the reference server does). The server
//! always sends arrays.
//!
//! # Layout
//!
//! - this file: the wire types, the limits and [`FrameError`];
//! - `decode.rs`: [`decode_frame`] / [`Frame::decode`], and [`decode_fragments`] for stored
//!   fragment arrays;
//! - `encode.rs`: [`ServerMessage::encode`], [`encode_frame`], [`encode_fragments`],
//!   [`close_reason`];
//! - `semver.rs`: [`is_valid_semver`];
//! - `tree.rs`: the order-preserving JSON reader behind the decoder.

use std::fmt;

use serde_json::Value;

mod decode;
mod encode;
mod semver;
mod tree;

#[cfg(test)]
mod tests;

pub use decode::{decode_fragments, decode_frame};
pub use encode::{MAX_CLOSE_REASON, ServerMessage, close_reason, encode_fragments, encode_frame};
pub use semver::is_valid_semver;

/// At most this many messages in one frame; a longer array is a [`FrameError`].
///
/// The reference has no bound. Its JS client sends every message as a frame of its own; a
/// batch is what one side queued in one event-loop tick, or an iOS client's resend of
/// its unacknowledged messages after a reconnect. 1024 covers both with room to spare,
/// and bounds what one frame can make the decoder allocate (a `Rejected` per entry) no
/// matter how large the transport lets frames be.
pub const MAX_MESSAGES_PER_FRAME: usize = 1024;

/// At most this many fragments in one `ScopeSync` (or `ScopeState`) from a client; a
/// message with more is [`Rejected`] ("Too many fragments"), with its
/// [`fragment_count`](Rejected::fragment_count) so that each can still be answered.
///
/// The reference has no bound. A fragment takes at least ~75 bytes of JSON, so a 1 MiB
/// frame (the server's default `limits.max_message_bytes`) holds about 14 000: this bound
/// is of the same order, large enough for a bulk paste, small enough that one changeset
/// cannot hold a scope's write lock for long.
pub const MAX_FRAGMENTS_PER_MESSAGE: usize = 10_000;

/// Deepest nesting of arrays and objects in a frame; deeper is [`FrameError::TooDeep`].
///
/// A valid message needs 6 levels (frame array, message, `fragments`, fragment,
/// `properties`, an array value); the rest is for `params`, which are the application's.
/// The bound is checked while parsing, before the nested value is read, so that neither
/// the parser nor the drop of the tree recurses deeper (serde_json's own limit is 128).
pub const MAX_DEPTH: usize = 64;

/// Why a whole frame (or a stored fragment array) could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not JSON text (serde_json's message, with the position).
    #[error("not JSON: {0}")]
    Json(String),
    /// Nested deeper than [`MAX_DEPTH`].
    #[error("JSON nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// An array of more than [`MAX_MESSAGES_PER_FRAME`] entries.
    #[error("more than {MAX_MESSAGES_PER_FRAME} messages in one frame")]
    TooManyMessages,
    /// Valid JSON, but neither an object nor an array (the value's kind, e.g. "a number").
    #[error("a frame must be a message object or an array of them, not {0}")]
    NotMessages(&'static str),
    /// [`decode_fragments`]: valid JSON, but not an array.
    #[error("expected an array of fragments, not {0}")]
    NotFragments(&'static str),
    /// [`decode_fragments`]: the fragment at `position` breaks a fragment rule.
    #[error("fragment {position}: {reason}")]
    Fragment {
        /// Position in the array, from 0.
        position: usize,
        /// The rule broken, in the reference's words where it has them.
        reason: String,
    },
}

/// A decoded frame: its messages, and whether it was an array.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// True if the frame was a JSON array (even of one message). The reference accepts a
    /// session's first frame only as a single `SessionCreate` object: `[{…SessionCreate…}]`
    /// is an unrecognized handshake to it.
    pub batch: bool,
    /// One entry per message, sorted by `index` (see [`Frame::decode`]).
    pub messages: Vec<Result<ClientMessage, Rejected>>,
}

/// A UUID as Jetstream uses it: 16 bytes, written lower-case and hyphenated
/// (`8-4-4-4-12`). Parsing accepts either case (the reference lower-cases on parse).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uuid([u8; 16]);

impl Uuid {
    /// The UUID with these bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The 16 bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Parses the hyphenated form (`8-4-4-4-12` hex digits, either case). Nothing else is a
    /// UUID: no braces, no `urn:uuid:` prefix, no unhyphenated form.
    pub fn parse(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() != 36 {
            return None;
        }
        let mut out = [0u8; 16];
        let mut n = 0;
        let mut i = 0;
        while i < 36 {
            if matches!(i, 8 | 13 | 18 | 23) {
                if b[i] != b'-' {
                    return None;
                }
                i += 1;
                continue;
            }
            let hi = hex(b[i])?;
            let lo = hex(b[i + 1])?;
            out[n] = (hi << 4) | lo;
            n += 1;
            i += 2;
        }
        Some(Self(out))
    }
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut s = [0u8; 36];
        let mut j = 0;
        for (i, byte) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                s[j] = b'-';
                j += 1;
            }
            s[j] = DIGITS[usize::from(byte >> 4)];
            s[j + 1] = DIGITS[usize::from(byte & 0xf)];
            j += 2;
        }
        // Only ASCII hex digits and hyphens were written.
        f.write_str(std::str::from_utf8(&s).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uuid({self})")
    }
}

/// The two fragment types. Jetstream has no `remove`: objects leave a scope when they lose
/// their last parent (the orphan sweep).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FragmentKind {
    /// `"add"`: a new object.
    Add,
    /// `"change"`: new values for properties of an existing object.
    Change,
}

impl FragmentKind {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Add => "add",
            Self::Change => "change",
        }
    }
}

/// One object-level change: `{"type","uuid","clsName","properties"}`.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncFragment {
    /// `type`.
    pub kind: FragmentKind,
    /// `uuid` (normalised to lower case by parsing).
    pub uuid: Uuid,
    /// `clsName`: a model name of the schema.
    pub cls_name: String,
    /// `properties`, in the order `JSON.parse` gives them: the order received, except
    /// that keys which are array indices (`"0"`, `"12"`) come first in numeric order, and a
    /// repeated key keeps its first position and its last value. Empty when absent or
    /// falsy. Values are as sent (a string, number, boolean, `null` or an array of one of
    /// those; numbers with an integral value are integers, as in JavaScript `1.0` is `1`);
    /// the engine validates them against the schema and normalises them (UUIDs
    /// lower-cased).
    pub properties: Vec<(String, Value)>,
}

/// The `error` object of replies: `{"message", "type"?}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    /// Human-readable message (the reference's wording where it has one).
    pub message: String,
    /// Machine-readable kind, e.g. `scope-index-not-found`.
    pub kind: Option<String>,
}

/// `ScopeSync` from a client.
#[derive(Debug, Clone, PartialEq)]
pub struct ScopeSync {
    /// `index`.
    pub index: u64,
    /// `scopeIndex`: position in the session's list of fetched scopes.
    pub scope_index: u64,
    /// `fragments`.
    pub fragments: Vec<SyncFragment>,
    /// `atomic`, if the key was present.
    pub atomic: Option<bool>,
    /// `procedure` (`"Model.procName"`); only accepted when `atomic` is present.
    pub procedure: Option<String>,
}

/// A message a client may send.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    /// `SessionCreate`: the first and only message of a new session's socket.
    SessionCreate {
        /// `index` (clients send 0).
        index: u64,
        /// `version`: a valid semver string.
        version: String,
        /// `params` (`{}` when absent).
        params: serde_json::Map<String, Value>,
    },
    /// `ScopeFetch`.
    ScopeFetch {
        /// `index`.
        index: u64,
        /// `name`.
        name: String,
        /// `params` (`{}` when absent).
        params: serde_json::Map<String, Value>,
    },
    /// `ScopeSync`.
    ScopeSync(ScopeSync),
    /// `Ping`: acknowledgement and keep-alive.
    Ping {
        /// `index` (0: unreliable).
        index: u64,
        /// `ack`: the last index received in order from the server.
        ack: u64,
        /// `resendMissing`: the server should resend what is not acknowledged.
        resend_missing: bool,
    },
    /// Any other type the reference parser accepts from clients (`Reply`,
    /// `SessionCreateReply`, `ScopeState`): decoded for its index, otherwise ignored.
    Ignored {
        /// `type`.
        type_name: &'static str,
        /// `index`.
        index: u64,
    },
}

impl ClientMessage {
    /// The message's `index`.
    pub fn index(&self) -> u64 {
        match self {
            Self::SessionCreate { index, .. }
            | Self::ScopeFetch { index, .. }
            | Self::Ping { index, .. }
            | Self::Ignored { index, .. } => *index,
            Self::ScopeSync(s) => s.index,
        }
    }
}

/// A message of a frame that could not be decoded. Carries what could be read of it, so
/// that the dialect can reply where the protocol has a reply for that type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// `type`, if it was a string.
    pub type_name: Option<String>,
    /// `index`, if it was an unsigned integer.
    pub index: Option<u64>,
    /// For a `ScopeSync`: how many entries `fragments` had, if it was an array (so each
    /// can get an error reply).
    pub fragment_count: Option<usize>,
    /// What was wrong, for the reply or the log: the reference's own error message where
    /// the reference refuses the same thing (e.g. "Invalid scopeIndex", "Unrecognized
    /// message type"), checked in the reference's order so that the first failure is the
    /// one it would report.
    pub reason: String,
}
