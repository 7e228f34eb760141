//! Channel names and namespaces.
//!
//! Grammar (documented in `docs/grammar.md`, property-tested in `tests/grammar.rs`). Whatever
//! precedes the first `:` must be a valid namespace:
//!
//! ```text
//! channel   = [ namespace ":" ] rest
//! namespace = 1*64( ALPHA / DIGIT / "_" / "-" )
//! rest      = 1*( ALPHA / DIGIT / "_" / "-" / "." / ":" / "@" / "/" / "=" / "+" / "!" / "~" / "$" / "," / ";" )
//! ```
//!
//! The whole name is 1 to 255 bytes. The namespace is the part before the first `:`;
//! a name without `:` belongs to the default namespace.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

/// Longest channel name accepted, in bytes.
pub const MAX_CHANNEL_LEN: usize = 255;
/// Longest namespace accepted, in bytes.
pub const MAX_NAMESPACE_LEN: usize = 64;

/// A validated channel name. Cheap to clone: the text is shared.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName(Arc<str>);

/// Why a string is not a valid channel name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// The name is empty.
    #[error("channel name is empty")]
    Empty,
    /// The name is longer than [`MAX_CHANNEL_LEN`] bytes.
    #[error("channel name is {0} bytes long; the limit is 255")]
    TooLong(usize),
    /// A character outside the grammar.
    #[error("channel name has a character that is not allowed at byte {pos}")]
    InvalidChar {
        /// Byte offset of the offending character.
        pos: usize,
    },
    /// The namespace part (before the first `:`) is empty, too long or has characters
    /// other than letters, digits, `_` and `-`.
    #[error("channel namespace must be 1-64 letters, digits, '_' or '-'")]
    InvalidNamespace,
    /// Nothing follows the namespace separator.
    #[error("channel name has nothing after its namespace")]
    EmptyName,
}

/// True for bytes allowed anywhere in a channel name.
pub fn is_channel_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'_' | b'-' | b'.' | b':' | b'@' | b'/' | b'=' | b'+' | b'!' | b'~' | b'$' | b',' | b';'
        )
}

/// True for bytes allowed in a namespace.
pub fn is_namespace_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Checks a namespace name against the grammar.
pub fn validate_namespace(ns: &str) -> Result<(), ChannelError> {
    if ns.is_empty() || ns.len() > MAX_NAMESPACE_LEN || !ns.bytes().all(is_namespace_byte) {
        return Err(ChannelError::InvalidNamespace);
    }
    Ok(())
}

impl ChannelName {
    /// Validates `s` against the channel grammar.
    pub fn parse(s: &str) -> Result<Self, ChannelError> {
        Self::validate(s)?;
        Ok(Self(Arc::from(s)))
    }

    /// Validates without allocating.
    pub fn validate(s: &str) -> Result<(), ChannelError> {
        if s.is_empty() {
            return Err(ChannelError::Empty);
        }
        if s.len() > MAX_CHANNEL_LEN {
            return Err(ChannelError::TooLong(s.len()));
        }
        if let Some(pos) = s.bytes().position(|b| !is_channel_byte(b)) {
            return Err(ChannelError::InvalidChar { pos });
        }
        if let Some((ns, rest)) = s.split_once(':') {
            validate_namespace(ns)?;
            if rest.is_empty() {
                return Err(ChannelError::EmptyName);
            }
        }
        Ok(())
    }

    /// The channel's namespace, or `None` for the default namespace.
    pub fn namespace(&self) -> Option<&str> {
        self.0.split_once(':').map(|(ns, _)| ns)
    }

    /// The part after the namespace (the whole name in the default namespace).
    pub fn local_name(&self) -> &str {
        self.0.split_once(':').map_or(&self.0, |(_, rest)| rest)
    }

    /// The full name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Borrow<str> for ChannelName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for ChannelName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for ChannelName {
    type Err = ChannelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces() {
        let c = ChannelName::parse("chat:room1").unwrap();
        assert_eq!(c.namespace(), Some("chat"));
        assert_eq!(c.local_name(), "room1");
        let c = ChannelName::parse("news").unwrap();
        assert_eq!(c.namespace(), None);
        let c = ChannelName::parse("a:b:c").unwrap();
        assert_eq!(c.namespace(), Some("a"));
        assert_eq!(c.local_name(), "b:c");
    }

    #[test]
    fn rejections() {
        assert_eq!(ChannelName::parse(""), Err(ChannelError::Empty));
        assert_eq!(ChannelName::parse("a b"), Err(ChannelError::InvalidChar { pos: 1 }));
        assert_eq!(ChannelName::parse(":x"), Err(ChannelError::InvalidNamespace));
        assert_eq!(ChannelName::parse("a.b:x"), Err(ChannelError::InvalidNamespace));
        assert_eq!(ChannelName::parse("chat:"), Err(ChannelError::EmptyName));
        assert_eq!(ChannelName::parse(&"x".repeat(256)), Err(ChannelError::TooLong(256)));
        assert!(ChannelName::parse(&"x".repeat(255)).is_ok());
        assert!(ChannelName::parse("é").is_err());
    }
}
