//! An order-preserving JSON tree with a nesting limit, read the way `JSON.parse` reads.
//!
//! `serde_json::Value` (without the `preserve_order` feature, which would change the
//! workspace's `Map` for every crate) sorts object keys, but a fragment's `properties`
//! must keep the order the reference sees: it decides which property's error is reported
//! first and the order the fragment is relayed in. So frames are first read into [`Node`],
//! whose objects are lists in JavaScript's own key order, then validated.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::{FrameError, MAX_DEPTH};

/// A JSON value as read from the wire. Strings borrow from the frame when they have no
/// escapes.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Node<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    Array(Vec<Node<'a>>),
    /// Entries in `JSON.parse` order, each key once (see [`js_object`]).
    Object(Vec<(Cow<'a, str>, Node<'a>)>),
}

impl<'a> Node<'a> {
    /// The value of `key`, if this is an object that has it.
    #[cfg(test)]
    fn get(&self, key: &str) -> Option<&Node<'a>> {
        match self {
            Node::Object(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// JavaScript truthiness: `null`, `false`, `0`, `-0` and `""` are falsy (JSON has no
    /// `NaN` or `undefined`; an absent key is `None` at the caller).
    pub(super) fn is_truthy(&self) -> bool {
        match self {
            Node::Null => false,
            Node::Bool(b) => *b,
            Node::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
            Node::String(s) => !s.is_empty(),
            Node::Array(_) | Node::Object(_) => true,
        }
    }

    /// The string, if this is one.
    pub(super) fn as_str(&self) -> Option<&str> {
        match self {
            Node::String(s) => Some(s),
            _ => None,
        }
    }

    /// What kind of JSON value this is, for messages.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool(_) => "a boolean",
            Node::Number(_) => "a number",
            Node::String(_) => "a string",
            Node::Array(_) => "an array",
            Node::Object(_) => "an object",
        }
    }

    /// Converts to a `serde_json::Value` (whose objects sort their keys).
    pub(super) fn into_value(self) -> Value {
        match self {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(b),
            Node::Number(n) => Value::Number(n),
            Node::String(s) => Value::String(s.into_owned()),
            Node::Array(items) => Value::Array(items.into_iter().map(Node::into_value).collect()),
            Node::Object(entries) => {
                Value::Object(entries.into_iter().map(|(k, v)| (k.into_owned(), v.into_value())).collect())
            }
        }
    }

    /// Converts an object to a `serde_json::Map`; `None` if this is not an object.
    pub(super) fn into_map(self) -> Option<Map<String, Value>> {
        match self.into_value() {
            Value::Object(m) => Some(m),
            _ => None,
        }
    }
}

/// Reads one JSON text. `top_array_limit` bounds the length of a top-level array (checked
/// while reading, so that a frame of a million tiny entries is refused before it is
/// built); `None` for no bound.
pub(super) fn parse(text: &[u8], top_array_limit: Option<usize>) -> Result<Node<'_>, FrameError> {
    let flags = Flags::default();
    let mut de = serde_json::Deserializer::from_slice(text);
    let seed = NodeSeed { depth: 0, flags: &flags, top_array_limit };
    let result = seed.deserialize(&mut de).and_then(|node| de.end().map(|()| node));
    result.map_err(|e| {
        if flags.too_deep.get() {
            FrameError::TooDeep
        } else if flags.too_many.get() {
            FrameError::TooManyMessages
        } else {
            FrameError::Json(e.to_string())
        }
    })
}

/// Which of our own limits stopped the parse (serde reports them as opaque errors).
#[derive(Default)]
struct Flags {
    too_deep: Cell<bool>,
    too_many: Cell<bool>,
}

#[derive(Clone, Copy)]
struct NodeSeed<'f> {
    /// How many arrays and objects enclose the value being read.
    depth: usize,
    flags: &'f Flags,
    top_array_limit: Option<usize>,
}

impl NodeSeed<'_> {
    fn inner(self) -> Self {
        Self { depth: self.depth + 1, ..self }
    }

    /// Refuses to open one more level past [`MAX_DEPTH`]. Checked before the nested value
    /// is read, so that the parser's own recursion stops here, far below serde_json's
    /// limit of 128 and any stack limit.
    fn enter<E: de::Error>(self) -> Result<(), E> {
        if self.depth >= MAX_DEPTH {
            self.flags.too_deep.set(true);
            return Err(E::custom(format_args!("nesting deeper than {MAX_DEPTH}")));
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for NodeSeed<'_> {
    type Value = Node<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Node<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NodeSeed<'_> {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Node<'de>, E> {
        Ok(Node::Bool(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Node<'de>, E> {
        Ok(Node::Number(v.into()))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Node<'de>, E> {
        Ok(Node::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Node<'de>, E> {
        Ok(Node::Number(number_from_f64(v)))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Node<'de>, E> {
        Ok(Node::String(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Node<'de>, E> {
        Ok(Node::String(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Node<'de>, E> {
        Ok(Node::String(Cow::Owned(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'de>, A::Error> {
        self.enter()?;
        let limit = if self.depth == 0 { self.top_array_limit } else { None };
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self.inner())? {
            if limit.is_some_and(|l| items.len() >= l) {
                self.flags.too_many.set(true);
                return Err(de::Error::custom("too many messages"));
            }
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<'de>, A::Error> {
        self.enter()?;
        let mut entries = Vec::new();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let value = map.next_value_seed(self.inner())?;
            entries.push((key, value));
        }
        Ok(Node::Object(js_object(entries)))
    }
}

/// Object keys, borrowed when they have no escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v))
    }
}

/// A float as JavaScript would hold it, stored the way it prints: an integral value that
/// fits `u64` or `i64` becomes an integer (`1.0`, `1e2` and `-0` are the numbers `1`, `100`
/// and `0` to the reference, and `JSON.stringify` writes them so), anything else stays a
/// float. serde_json only produces finite floats.
pub(super) fn number_from_f64(v: f64) -> Number {
    // 2^64 and 2^63 are exact in f64; an integral f64 below them converts exactly.
    const TWO_64: f64 = 18_446_744_073_709_551_616.0;
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if v.fract() == 0.0 {
        // `-0.0` is in the first range (it compares equal to 0) and converts to 0.
        if (0.0..TWO_64).contains(&v) {
            return Number::from(v as u64);
        }
        if (-TWO_63..0.0).contains(&v) {
            return Number::from(v as i64);
        }
    }
    Number::from_f64(v).unwrap_or_else(|| Number::from(0u8))
}

/// Puts an object's entries in the order `JSON.parse` gives them, which is the order the
/// reference iterates and re-serialises them in:
/// - a key that appears twice keeps the position of its first appearance and the value of
///   its last;
/// - keys that are array indices (`"0"`, `"17"`: canonical decimal integers up to
///   2^32 − 2) come first, in numeric order, then every other key in insertion order.
fn js_object<'a>(entries: Vec<(Cow<'a, str>, Node<'a>)>) -> Vec<(Cow<'a, str>, Node<'a>)> {
    let mut out: Vec<(Cow<'a, str>, Node<'a>)> = Vec::with_capacity(entries.len());
    // Small objects (every message and fragment) dedupe by scanning; large ones (a hostile
    // `properties` with 100k keys) by hashing, so that the work stays linear.
    const SCAN_MAX: usize = 16;
    if entries.len() <= SCAN_MAX {
        for (k, v) in entries {
            match out.iter_mut().find(|(ok, _)| *ok == k) {
                Some(slot) => slot.1 = v,
                None => out.push((k, v)),
            }
        }
    } else {
        let mut seen: HashMap<Cow<'a, str>, usize> = HashMap::with_capacity(entries.len());
        for (k, v) in entries {
            match seen.get(&k) {
                Some(&i) => out[i].1 = v,
                None => {
                    seen.insert(k.clone(), out.len());
                    out.push((k, v));
                }
            }
        }
    }
    if out.iter().any(|(k, _)| array_index(k).is_some()) {
        // Stable: the non-index keys keep their order.
        out.sort_by_key(|(k, _)| array_index(k).map_or((1, 0), |i| (0, i)));
    }
    out
}

/// The array index a property key denotes in JavaScript, if any.
fn array_index(key: &str) -> Option<u32> {
    let b = key.as_bytes();
    if b.is_empty() || b.len() > 10 || !b.iter().all(u8::is_ascii_digit) || (b.len() > 1 && b[0] == b'0') {
        return None;
    }
    // At most 10 digits: fits u64. The largest index is 2^32 − 2 (2^32 − 1 is a length).
    let n: u64 = key.parse().ok()?;
    u32::try_from(n).ok().filter(|&n| n != u32::MAX)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::MAX_MESSAGES_PER_FRAME;
    use super::*;

    fn keys(text: &str) -> Vec<String> {
        match parse(text.as_bytes(), None).unwrap() {
            Node::Object(e) => e.into_iter().map(|(k, _)| k.into_owned()).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn object_key_order_is_javascripts() {
        // Checked against node: Object.keys(JSON.parse(...)).
        assert_eq!(
            keys(r#"{"b":1,"2":2,"a":3,"1":4,"01":5,"4294967294":6,"4294967295":7,"a":8}"#),
            ["1", "2", "4294967294", "b", "a", "01", "4294967295"]
        );
        let mut big = String::from("{");
        for i in (0..40).rev() {
            big.push_str(&format!(r#""k{i}":{i},"#));
        }
        big.push_str(r#""k39":"last"}"#);
        let n = parse(big.as_bytes(), None).unwrap();
        assert_eq!(n.get("k39"), Some(&Node::String("last".into())));
        assert_eq!(keys(&big).len(), 40);
        assert_eq!(keys(&big)[0], "k39");
    }

    #[test]
    fn floats_become_integers_when_javascript_would_print_them_so() {
        let n = parse(br#"[1.0,1e2,-0,-0.0,-3.0,1.5,1e20,18446744073709551615]"#, None).unwrap();
        let Node::Array(items) = n else { panic!() };
        let got: Vec<Value> = items.into_iter().map(Node::into_value).collect();
        let want =
            [json!(1), json!(100), json!(0), json!(0), json!(-3), json!(1.5), json!(1e20), json!(u64::MAX)];
        assert_eq!(got, want);
        // Integers and floats are different `Number`s: the conversion made the first five
        // integers and left 1e20 (past u64) a float.
        assert!(got[..5].iter().all(|v| v.is_i64() || v.is_u64()));
        assert!(got[6].is_f64());
    }

    #[test]
    fn depth_limit() {
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse(ok.as_bytes(), None).is_ok());
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert_eq!(parse(deep.as_bytes(), None), Err(FrameError::TooDeep));
        let deeper = r#"{"a":"#.repeat(1_000_000);
        assert_eq!(parse(deeper.as_bytes(), None), Err(FrameError::TooDeep));
    }

    #[test]
    fn top_level_array_bound() {
        let at = format!("[{}0]", "0,".repeat(MAX_MESSAGES_PER_FRAME - 1));
        assert!(parse(at.as_bytes(), Some(MAX_MESSAGES_PER_FRAME)).is_ok());
        let over = format!("[{}0]", "0,".repeat(MAX_MESSAGES_PER_FRAME));
        assert_eq!(parse(over.as_bytes(), Some(MAX_MESSAGES_PER_FRAME)), Err(FrameError::TooManyMessages));
        // Only the top level is bounded.
        let nested = format!("[[{}0]]", "0,".repeat(MAX_MESSAGES_PER_FRAME));
        assert!(parse(nested.as_bytes(), Some(MAX_MESSAGES_PER_FRAME)).is_ok());
    }
}
