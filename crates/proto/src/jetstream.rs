//! Wire types of the Jetstream Sync protocol (npm `jetstream@0.13.4`), which Tether speaks on
//! `/jetstream` so that Jetstream's own clients work unchanged.
//!
//! The reference for every field and rule is `../shared/reference/seed-systems.md` §1 and
//! `docs/dialects/jetstream.md`. This module only decodes and encodes; what a message does
//! is the engine's (`tether_engine::sync`) and the server dialect's business.
//!
//! # Framing
//!
//! A text frame carries one JSON message or a JSON array of messages. Arrays are decoded
//! message by message and sorted by `index` (as the reference server does). The server
//! always sends arrays.

use std::fmt;

use serde_json::Value;

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
    /// `properties`, in the order received (empty when absent). Values are as sent; the
    /// engine validates them against the schema and normalises them (UUIDs lower-cased).
    /// A key repeated in the JSON object keeps its last value, as `JSON.parse` does.
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
    /// What was wrong, for the reply or the log.
    pub reason: String,
}
