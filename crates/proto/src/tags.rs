//! Publication tags: a small string → string map that filters are evaluated against.
//!
//! Tags are kept as a vector sorted by key, which is smaller than a map for the handful
//! of tags a publication carries and lets a filter look a key up by binary search.

use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Most tags one publication may carry.
pub const MAX_TAGS: usize = 32;
/// Longest tag key, in bytes.
pub const MAX_TAG_KEY_LEN: usize = 64;
/// Longest tag value, in bytes.
pub const MAX_TAG_VALUE_LEN: usize = 256;

/// Why a tag map is rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagsError {
    /// More than [`MAX_TAGS`] entries.
    #[error("too many tags ({0}); the limit is 32")]
    TooMany(usize),
    /// A key outside the key grammar.
    #[error("tag key {0:?} must be 1-64 letters, digits, '_', '-' or '.'")]
    InvalidKey(String),
    /// A value longer than [`MAX_TAG_VALUE_LEN`] bytes.
    #[error("tag value for {0:?} is longer than 256 bytes")]
    ValueTooLong(String),
    /// The same key twice.
    #[error("tag key {0:?} appears twice")]
    DuplicateKey(String),
}

/// At most 32 characters of `s`, marked when cut, so errors never echo large input.
fn snippet(s: &str) -> String {
    let mut out: String = s.chars().take(32).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// True if `key` is a valid tag (and filter) key: 1-64 of `A-Z a-z 0-9 _ - .`.
pub fn is_valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_TAG_KEY_LEN
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// A validated set of tags, sorted by key.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Tags(Vec<(String, String)>);

impl Tags {
    /// No tags.
    pub const fn new() -> Self {
        Self(Vec::new())
    }

    /// Builds and validates a tag set from key/value pairs in any order.
    pub fn from_pairs<I, K, V>(pairs: I) -> Result<Self, TagsError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut v: Vec<(String, String)> = pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        if v.len() > MAX_TAGS {
            return Err(TagsError::TooMany(v.len()));
        }
        for (k, val) in &v {
            if !is_valid_key(k) {
                return Err(TagsError::InvalidKey(snippet(k)));
            }
            if val.len() > MAX_TAG_VALUE_LEN {
                return Err(TagsError::ValueTooLong(snippet(k)));
            }
        }
        v.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(w) = v.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(TagsError::DuplicateKey(w[0].0.clone()));
        }
        Ok(Self(v))
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(key)).ok().map(|i| self.0[i].1.as_str())
    }

    /// True if there are no tags.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of tags.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Iterates in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl fmt::Debug for Tags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for Tags {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Tags {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Tags;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of string values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tags, A::Error> {
                let mut pairs: Vec<(String, String)> = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, String>()? {
                    if pairs.len() == MAX_TAGS {
                        return Err(serde::de::Error::custom(TagsError::TooMany(MAX_TAGS + 1)));
                    }
                    pairs.push((k, v));
                }
                Tags::from_pairs(pairs).map_err(serde::de::Error::custom)
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_lookup() {
        let t = Tags::from_pairs([("b", "2"), ("a", "1")]).unwrap();
        assert_eq!(t.get("a"), Some("1"));
        assert_eq!(t.get("b"), Some("2"));
        assert_eq!(t.get("c"), None);
        assert_eq!(serde_json::to_string(&t).unwrap(), r#"{"a":"1","b":"2"}"#);
    }

    #[test]
    fn rejects() {
        assert!(matches!(Tags::from_pairs([("a b", "1")]), Err(TagsError::InvalidKey(_))));
        assert!(matches!(Tags::from_pairs([("a", "1"), ("a", "2")]), Err(TagsError::DuplicateKey(_))));
        let huge = "k ".repeat(10_000);
        let msg = Tags::from_pairs([(huge.as_str(), "v")]).unwrap_err().to_string();
        assert!(msg.len() < 120, "error echoes at most a snippet: {msg}");
        assert!(serde_json::from_str::<Tags>(r#"{"a":1}"#).is_err());
        assert!(serde_json::from_str::<Tags>(r#"{"a":"x","a":"y"}"#).is_err());
        let many: String = (0..33).map(|i| format!("\"k{i}\":\"v\"")).collect::<Vec<_>>().join(",");
        assert!(serde_json::from_str::<Tags>(&format!("{{{many}}}")).is_err());
    }
}
