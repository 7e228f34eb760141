//! Channel patterns: which channels a grant or a restriction covers.
//!
//! Used by JWT channel grants and by API-key publish restrictions. Grammar (documented in
//! `docs/grammar.md`, property-tested in `tests/grammar.rs`):
//!
//! ```text
//! pattern = channel / prefix "*"
//! prefix  = *( ALPHA / DIGIT / "_" / "-" / "." / ":" / "@" / "/" / "=" / "+" / "!" / "~" / "$" / "," / ";" )
//! ```
//!
//! - An **exact** pattern is a channel name (anything [`ChannelName::parse`] accepts) and
//!   matches that channel only.
//! - A **prefix** pattern ends in a single `*` and matches every channel whose name starts
//!   with the prefix: `*` matches every channel, `chat:*` every channel in namespace `chat`,
//!   `chat:room-*` the channels of `chat` whose local name starts with `room-`.
//! - `*` anywhere but at the end is an error. When the prefix contains a `:`, the part
//!   before the first `:` must be a valid namespace (otherwise no channel could match).
//!   The prefix is at most [`MAX_CHANNEL_LEN`] bytes.
//!
//! So every accepted pattern matches at least one channel. Matching is a plain byte
//! comparison: no allocation, no backtracking.

use std::fmt;
use std::sync::Arc;

use serde::de::Visitor;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::channel::{ChannelError, ChannelName, MAX_CHANNEL_LEN, is_channel_byte, validate_namespace};

/// Longest pattern accepted, in bytes: a full-length channel name plus a trailing `*`.
pub const MAX_PATTERN_LEN: usize = MAX_CHANNEL_LEN + 1;

/// A validated channel pattern: an exact channel name, or a prefix followed by `*`.
/// Cheap to clone: the text is shared.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelPattern {
    /// The pattern as written, including the trailing `*` of a prefix pattern.
    text: Arc<str>,
    /// True for a prefix pattern (`text` ends in `*`).
    wildcard: bool,
}

/// Why a string is not a valid channel pattern. The messages quote no input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The pattern is empty.
    #[error("channel pattern is empty; use '*' for every channel")]
    Empty,
    /// The pattern is too long: more than [`MAX_CHANNEL_LEN`] bytes, plus the trailing `*`
    /// of a prefix pattern.
    #[error("channel pattern is {len} bytes long; the limit is 255, plus a trailing '*'")]
    TooLong {
        /// Length of the pattern, in bytes.
        len: usize,
    },
    /// A `*` that is not the last character.
    #[error("channel pattern has '*' at byte {pos}; '*' is only allowed once, as the last character")]
    MisplacedWildcard {
        /// Byte offset of the first misplaced `*`.
        pos: usize,
    },
    /// A character outside the channel-name alphabet.
    #[error("channel pattern has a character that is not allowed at byte {pos}")]
    InvalidChar {
        /// Byte offset of the offending character.
        pos: usize,
    },
    /// The namespace part (before the first `:`) is empty, too long or has characters
    /// other than letters, digits, `_` and `-`.
    #[error("channel pattern namespace must be 1-64 letters, digits, '_' or '-'")]
    InvalidNamespace,
    /// An exact pattern with nothing after its namespace.
    #[error("channel pattern has nothing after its namespace; write 'namespace:*' for a whole namespace")]
    EmptyName,
}

impl From<ChannelError> for PatternError {
    fn from(e: ChannelError) -> Self {
        match e {
            ChannelError::Empty => Self::Empty,
            ChannelError::TooLong(len) => Self::TooLong { len },
            ChannelError::InvalidChar { pos } => Self::InvalidChar { pos },
            ChannelError::InvalidNamespace => Self::InvalidNamespace,
            ChannelError::EmptyName => Self::EmptyName,
        }
    }
}

impl ChannelPattern {
    /// Validates `s` against the pattern grammar.
    pub fn parse(s: &str) -> Result<Self, PatternError> {
        let wildcard = Self::validate(s)?;
        Ok(Self { text: Arc::from(s), wildcard })
    }

    /// Validates without allocating; returns whether `s` is a prefix pattern.
    fn validate(s: &str) -> Result<bool, PatternError> {
        if s.is_empty() {
            return Err(PatternError::Empty);
        }
        let limit = if s.ends_with('*') { MAX_PATTERN_LEN } else { MAX_CHANNEL_LEN };
        if s.len() > limit {
            return Err(PatternError::TooLong { len: s.len() });
        }
        let last = s.len() - 1;
        if let Some(pos) = s.bytes().position(|b| b == b'*')
            && pos != last
        {
            return Err(PatternError::MisplacedWildcard { pos });
        }
        let Some(prefix) = s.strip_suffix('*') else {
            ChannelName::validate(s)?;
            return Ok(false);
        };
        if let Some(pos) = prefix.bytes().position(|b| !is_channel_byte(b)) {
            return Err(PatternError::InvalidChar { pos });
        }
        if let Some((ns, _)) = prefix.split_once(':') {
            validate_namespace(ns)?;
        }
        Ok(true)
    }

    /// An exact pattern matching `channel` only.
    pub fn exact(channel: &ChannelName) -> Self {
        Self { text: Arc::from(channel.as_str()), wildcard: false }
    }

    /// True if `channel` is covered by this pattern.
    pub fn matches(&self, channel: &ChannelName) -> bool {
        let name = channel.as_str().as_bytes();
        if self.wildcard { name.starts_with(self.prefix().as_bytes()) } else { name == self.text.as_bytes() }
    }

    /// True for a prefix pattern (one ending in `*`), false for an exact channel name.
    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }

    /// What a matching channel name starts with: the text before the `*` of a prefix
    /// pattern, or the whole channel name of an exact pattern.
    pub fn prefix(&self) -> &str {
        if self.wildcard { &self.text[..self.text.len() - 1] } else { &self.text }
    }

    /// The pattern as written (with its trailing `*`, if any).
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// True if any of `patterns` matches `channel`. An empty list matches nothing.
pub fn any_matches(patterns: &[ChannelPattern], channel: &ChannelName) -> bool {
    patterns.iter().any(|p| p.matches(channel))
}

impl fmt::Display for ChannelPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for ChannelPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.text, f)
    }
}

impl AsRef<str> for ChannelPattern {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

impl std::str::FromStr for ChannelPattern {
    type Err = PatternError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl From<&ChannelName> for ChannelPattern {
    fn from(channel: &ChannelName) -> Self {
        Self::exact(channel)
    }
}

impl Serialize for ChannelPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for ChannelPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ChannelPattern;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a channel pattern: a channel name, or a prefix followed by '*'")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ChannelPattern, E> {
                ChannelPattern::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> ChannelPattern {
        ChannelPattern::parse(s).unwrap()
    }

    fn c(s: &str) -> ChannelName {
        ChannelName::parse(s).unwrap()
    }

    #[test]
    fn exact_patterns() {
        let pat = p("chat:room1");
        assert!(!pat.is_wildcard());
        assert_eq!(pat.as_str(), "chat:room1");
        assert_eq!(pat.prefix(), "chat:room1");
        assert!(pat.matches(&c("chat:room1")));
        assert!(!pat.matches(&c("chat:room10")));
        assert!(!pat.matches(&c("chat:room")));
        assert!(!pat.matches(&c("news")));
        assert_eq!(ChannelPattern::exact(&c("news")), p("news"));
        assert_eq!(ChannelPattern::from(&c("a:b")), p("a:b"));
    }

    #[test]
    fn prefix_patterns() {
        let all = p("*");
        assert!(all.is_wildcard());
        assert_eq!(all.prefix(), "");
        for name in ["news", "chat:room1", "a:b:c", "x"] {
            assert!(all.matches(&c(name)), "{name}");
        }

        let chat = p("chat:*");
        assert_eq!(chat.prefix(), "chat:");
        assert!(chat.matches(&c("chat:room1")));
        assert!(chat.matches(&c("chat:a:b")));
        assert!(!chat.matches(&c("chat")));
        assert!(!chat.matches(&c("chatter:x")));
        assert!(!chat.matches(&c("news")));

        let rooms = p("chat:room-*");
        assert!(rooms.matches(&c("chat:room-1")));
        assert!(!rooms.matches(&c("chat:room")));
        assert!(!rooms.matches(&c("chat:lobby")));

        // Without a namespace, a prefix also reaches into namespaces that start with it.
        let ch = p("ch*");
        assert!(ch.matches(&c("chat:x")));
        assert!(ch.matches(&c("ch")));
        assert!(!ch.matches(&c("c")));

        // The prefix may be a whole channel name (then the pattern matches it too).
        assert!(p("news*").matches(&c("news")));
        assert!(p("news*").matches(&c("newsroom")));
        assert!(p("chat:room*").matches(&c("chat:room")));
    }

    #[test]
    fn rejections() {
        use PatternError::*;
        let err = |s: &str| ChannelPattern::parse(s).unwrap_err();
        assert_eq!(err(""), Empty);
        assert_eq!(err("**"), MisplacedWildcard { pos: 0 });
        assert_eq!(err("*chat"), MisplacedWildcard { pos: 0 });
        assert_eq!(err("chat:*:x"), MisplacedWildcard { pos: 5 });
        assert_eq!(err("chat:a*b"), MisplacedWildcard { pos: 6 });
        assert_eq!(err("chat:**"), MisplacedWildcard { pos: 5 });
        assert_eq!(err("a b*"), InvalidChar { pos: 1 });
        assert_eq!(err("a b"), InvalidChar { pos: 1 });
        assert_eq!(err("é*"), InvalidChar { pos: 0 });
        assert_eq!(err(":*"), InvalidNamespace);
        assert_eq!(err("a.b:*"), InvalidNamespace);
        assert_eq!(err(":x"), InvalidNamespace);
        assert_eq!(err("chat:"), EmptyName);
        assert_eq!(err(&"x".repeat(256)), TooLong { len: 256 });
        assert_eq!(err(&format!("x*{}", " ".repeat(254))), TooLong { len: 256 });
        assert_eq!(err(&format!("x*{}*", " ".repeat(253))), MisplacedWildcard { pos: 1 });
        assert_eq!(err(&format!("{}*", "x".repeat(256))), TooLong { len: 257 });
        assert!(ChannelPattern::parse(&"x".repeat(255)).is_ok());
        assert!(ChannelPattern::parse(&format!("{}*", "x".repeat(255))).is_ok());
        // Messages are short and quote nothing from the input.
        for e in [err("a\u{0}b"), err("x*y"), err(&"é".repeat(200))] {
            let msg = e.to_string();
            assert!(msg.len() < 120 && !msg.contains('\u{0}') && !msg.contains('é'), "{msg}");
        }
    }

    #[test]
    fn any_of_a_list() {
        let grants = [p("chat:*"), p("news")];
        assert!(any_matches(&grants, &c("chat:x")));
        assert!(any_matches(&grants, &c("news")));
        assert!(!any_matches(&grants, &c("news:eu")));
        assert!(!any_matches(&[], &c("news")));
    }

    #[test]
    fn display_and_serde() {
        let pat = p("chat:room-*");
        assert_eq!(pat.to_string(), "chat:room-*");
        assert_eq!(format!("{pat:?}"), "\"chat:room-*\"");
        assert_eq!(serde_json::to_string(&pat).unwrap(), "\"chat:room-*\"");
        let back: Vec<ChannelPattern> = serde_json::from_str(r#"["chat:room-*", "*", "news"]"#).unwrap();
        assert_eq!(back, vec![pat, p("*"), p("news")]);
        // Escaped JSON strings are unescaped before parsing.
        assert_eq!(serde_json::from_str::<ChannelPattern>(r#""chat:\u002a""#).unwrap(), p("chat:*"));
        let e = serde_json::from_str::<ChannelPattern>(r#""a*b""#).unwrap_err().to_string();
        assert!(e.contains("only allowed once, as the last character"), "{e}");
        assert!(serde_json::from_str::<ChannelPattern>("7").is_err());
        assert_eq!("news*".parse::<ChannelPattern>(), Ok(p("news*")));
    }
}
