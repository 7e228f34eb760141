//! Subscription filters: a conjunction of equality and `in` predicates over tags.
//!
//! Grammar (documented with examples in `docs/grammar.md`, property-tested in
//! `tests/grammar.rs`):
//!
//! ```text
//! filter    = ws predicate *( ws "," ws predicate ) ws
//! predicate = key ws "=" ws value
//!           / key 1*SP "in" ws "(" ws value *( ws "," ws value ) ws ")"
//! key       = 1*64( ALPHA / DIGIT / "_" / "-" / "." )
//! value     = bare / quoted
//! bare      = 1*( ALPHA / DIGIT / "_" / "-" / "." / ":" / "@" / "/" / "+" )
//! quoted    = DQUOTE *( unescaped / "\" DQUOTE / "\\" ) DQUOTE
//! unescaped = any character except DQUOTE and "\"
//! ws        = *SP
//! ```
//!
//! A key may itself be named `in` (`in=x`, `in in (x, y)`): `in` is the keyword only
//! where a key and at least one space came before it.
//!
//! Semantics: every predicate must hold. `key=value` holds when the tag `key` is present
//! and equal to `value`; `key in (v1, v2, ...)` holds when the tag is present and equal to
//! one of the values. An absent tag never matches.
//!
//! Limits: [`MAX_FILTER_LEN`], [`MAX_PREDICATES`], [`MAX_IN_VALUES`], [`MAX_VALUE_LEN`],
//! and keys are at most [`MAX_TAG_KEY_LEN`] bytes. A key may appear only once.
//!
//! A parsed [`Filter`] is kept in canonical form (predicates sorted by key, values sorted
//! and deduplicated), so two filters that mean the same thing compare, hash and
//! [display](Filter#impl-Display-for-Filter) the same.

use std::fmt::{self, Write as _};

use crate::tags::{MAX_TAG_KEY_LEN, MAX_TAG_VALUE_LEN, Tags};

/// Longest filter string accepted, in bytes. The filter's canonical form must fit too.
pub const MAX_FILTER_LEN: usize = 1024;
/// Most predicates one filter may have.
pub const MAX_PREDICATES: usize = 16;
/// Most values one `in ( ... )` list may have, counted as written (before deduplication).
pub const MAX_IN_VALUES: usize = 64;
/// Longest value, in bytes after unescaping; the same as [`MAX_TAG_VALUE_LEN`].
pub const MAX_VALUE_LEN: usize = MAX_TAG_VALUE_LEN;

/// A parsed filter in canonical form.
///
/// Equality, hashing and [`Display`](fmt::Display) all follow the canonical form, so
/// `b=2, a=1` and `a=1,b=2` are the same filter, and so are `a in (x, x)` and `a=x`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Filter {
    preds: Vec<Predicate>,
}

/// One predicate of a filter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Predicate {
    /// Tag key.
    pub key: String,
    /// Allowed values, sorted and deduplicated; one value means equality.
    pub values: Vec<String>,
}

/// Why a filter string is rejected.
///
/// Positions are byte offsets into the filter string. Messages quote at most one
/// character (or, for [`FilterError::DuplicateKey`], one already validated key) of input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// The filter is empty or only spaces.
    #[error("filter is empty")]
    Empty,
    /// The filter string is longer than [`MAX_FILTER_LEN`] bytes.
    #[error("filter is {len} bytes long; the limit is {MAX_FILTER_LEN}")]
    TooLong {
        /// Length of the filter string, in bytes.
        len: usize,
    },
    /// The filter's canonical form would be longer than [`MAX_FILTER_LEN`] bytes.
    ///
    /// Only possible when the input is close to the limit and writes `in(` without a
    /// space: the canonical form always has `in (`. Rejecting it keeps every accepted
    /// filter's canonical form parseable.
    #[error(
        "filter's canonical form would be {len} bytes long; the limit is {MAX_FILTER_LEN} \
         (the canonical form writes ' in (' with spaces)"
    )]
    CanonicalTooLong {
        /// Length of the canonical form, in bytes.
        len: usize,
    },
    /// A character that does not fit the grammar.
    #[error("unexpected character {found:?} at byte {pos}; expected {expected}")]
    Unexpected {
        /// Byte offset of the character.
        pos: usize,
        /// The character found.
        found: char,
        /// What the grammar allows there.
        expected: &'static str,
    },
    /// The filter ends in the middle of a predicate, or after a `,`.
    #[error("filter ends early at byte {pos}; expected {expected}")]
    UnexpectedEnd {
        /// Byte offset of the end (the filter's length).
        pos: usize,
        /// What the grammar requires there.
        expected: &'static str,
    },
    /// A key longer than [`MAX_TAG_KEY_LEN`] bytes.
    #[error("key at byte {pos} is longer than {MAX_TAG_KEY_LEN} bytes")]
    KeyTooLong {
        /// Byte offset where the key starts.
        pos: usize,
    },
    /// A value longer than [`MAX_VALUE_LEN`] bytes (after unescaping).
    #[error("value at byte {pos} is longer than {MAX_VALUE_LEN} bytes")]
    ValueTooLong {
        /// Byte offset where the value starts.
        pos: usize,
    },
    /// A quoted value without its closing `"`.
    #[error("quoted value at byte {pos} has no closing '\"'")]
    UnterminatedQuote {
        /// Byte offset of the opening `"`.
        pos: usize,
    },
    /// A `\` in a quoted value followed by something other than `"` or `\`.
    #[error("invalid escape at byte {pos}; only \\\" and \\\\ are allowed in a quoted value")]
    InvalidEscape {
        /// Byte offset of the `\`.
        pos: usize,
    },
    /// More than [`MAX_PREDICATES`] predicates.
    #[error("filter has more than {MAX_PREDICATES} predicates (one too many at byte {pos})")]
    TooManyPredicates {
        /// Byte offset where the first predicate over the limit starts.
        pos: usize,
    },
    /// More than [`MAX_IN_VALUES`] values in one `in ( ... )` list.
    #[error("'in' list has more than {MAX_IN_VALUES} values (one too many at byte {pos})")]
    TooManyValues {
        /// Byte offset where the first value over the limit starts.
        pos: usize,
    },
    /// The same key in two predicates.
    #[error("key {key:?} appears more than once (again at byte {pos})")]
    DuplicateKey {
        /// The repeated key (valid keys are at most 64 bytes of `A-Z a-z 0-9 _ - .`).
        key: String,
        /// Byte offset where the second predicate with that key starts.
        pos: usize,
    },
}

const EXPECTED_KEY: &str = "a key (letters, digits, '_', '-' or '.')";
const EXPECTED_AFTER_KEY: &str = "'=', or a space then 'in ('";
const EXPECTED_PAREN: &str = "'(' after 'in'";
const EXPECTED_VALUE: &str = "a value (bare or double-quoted)";
const EXPECTED_LIST_SEP: &str = "',' or ')'";
const EXPECTED_PRED_SEP: &str = "',' or the end of the filter";

/// True for bytes allowed in a key (the same set as [`crate::tags::is_valid_key`]).
fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
}

/// True for bytes allowed in a bare (unquoted) value.
fn is_bare_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'@' | b'/' | b'+')
}

/// True if `v` can be written without quotes.
fn is_bare_value(v: &str) -> bool {
    !v.is_empty() && v.bytes().all(is_bare_byte)
}

/// Length of `v` as the canonical form writes it.
fn rendered_value_len(v: &str) -> usize {
    if is_bare_value(v) {
        v.len()
    } else {
        2 + v.len() + v.bytes().filter(|&b| b == b'"' || b == b'\\').count()
    }
}

/// Writes `v` bare if it can be, else quoted with `"` and `\` escaped.
fn write_value(f: &mut fmt::Formatter<'_>, v: &str) -> fmt::Result {
    if is_bare_value(v) {
        return f.write_str(v);
    }
    f.write_char('"')?;
    let mut rest = v;
    while let Some(i) = rest.find(['"', '\\']) {
        f.write_str(&rest[..i])?;
        f.write_char('\\')?;
        // `"` and `\` are one byte each, so `i + 1` is a character boundary.
        f.write_str(&rest[i..=i])?;
        rest = &rest[i + 1..];
    }
    f.write_str(rest)?;
    f.write_char('"')
}

/// A cursor over the filter string. Every position it stops at is a character boundary:
/// it only steps over ASCII bytes outside quoted values, and a quoted value's content is
/// only cut at `"` or `\`.
struct Parser<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    /// Skips spaces; returns how many.
    fn skip_ws(&mut self) -> usize {
        let start = self.pos;
        while self.peek() == Some(b' ') {
            self.pos += 1;
        }
        self.pos - start
    }

    /// The error for whatever is at the cursor when the grammar wanted `expected`.
    fn unexpected(&self, expected: &'static str) -> FilterError {
        match self.s.get(self.pos..).and_then(|r| r.chars().next()) {
            Some(found) => FilterError::Unexpected { pos: self.pos, found, expected },
            None => FilterError::UnexpectedEnd { pos: self.s.len(), expected },
        }
    }

    fn key(&mut self) -> Result<&'a str, FilterError> {
        let start = self.pos;
        while self.peek().is_some_and(is_key_byte) {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.unexpected(EXPECTED_KEY));
        }
        if self.pos - start > MAX_TAG_KEY_LEN {
            return Err(FilterError::KeyTooLong { pos: start });
        }
        Ok(&self.s[start..self.pos])
    }

    fn value(&mut self) -> Result<String, FilterError> {
        let start = self.pos;
        let value = match self.peek() {
            Some(b'"') => self.quoted()?,
            Some(b) if is_bare_byte(b) => {
                while self.peek().is_some_and(is_bare_byte) {
                    self.pos += 1;
                }
                if self.pos - start > MAX_VALUE_LEN {
                    return Err(FilterError::ValueTooLong { pos: start });
                }
                self.s[start..self.pos].to_owned()
            }
            _ => return Err(self.unexpected(EXPECTED_VALUE)),
        };
        if value.len() > MAX_VALUE_LEN {
            return Err(FilterError::ValueTooLong { pos: start });
        }
        Ok(value)
    }

    /// Parses a quoted value; the cursor is on the opening `"`.
    fn quoted(&mut self) -> Result<String, FilterError> {
        let open = self.pos;
        let bytes = self.s.as_bytes();
        let mut out = String::new();
        self.pos += 1;
        let mut seg = self.pos;
        loop {
            match bytes.get(self.pos) {
                None => return Err(FilterError::UnterminatedQuote { pos: open }),
                Some(b'"') => {
                    out.push_str(&self.s[seg..self.pos]);
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    out.push_str(&self.s[seg..self.pos]);
                    match bytes.get(self.pos + 1) {
                        Some(b'"') => out.push('"'),
                        Some(b'\\') => out.push('\\'),
                        None => return Err(FilterError::UnterminatedQuote { pos: open }),
                        Some(_) => return Err(FilterError::InvalidEscape { pos: self.pos }),
                    }
                    self.pos += 2;
                    seg = self.pos;
                }
                Some(_) => self.pos += 1,
            }
        }
    }

    /// Parses the values of a predicate, after its key and the spaces that follow it.
    /// `spaced` tells whether there was at least one space after the key.
    fn predicate_values(&mut self, spaced: bool) -> Result<Vec<String>, FilterError> {
        match self.peek() {
            Some(b'=') => {
                self.pos += 1;
                self.skip_ws();
                Ok(vec![self.value()?])
            }
            // After a key, `in` can only be the keyword: a key is followed by a byte
            // that is not a key byte, so `i` here means a space came first.
            Some(b'i') if spaced && self.s.as_bytes().get(self.pos + 1) == Some(&b'n') => {
                self.pos += 2;
                self.skip_ws();
                if self.peek() != Some(b'(') {
                    return Err(self.unexpected(EXPECTED_PAREN));
                }
                self.pos += 1;
                self.skip_ws();
                let mut values = Vec::new();
                loop {
                    if values.len() == MAX_IN_VALUES {
                        return Err(FilterError::TooManyValues { pos: self.pos });
                    }
                    values.push(self.value()?);
                    self.skip_ws();
                    match self.peek() {
                        Some(b',') => {
                            self.pos += 1;
                            self.skip_ws();
                        }
                        Some(b')') => {
                            self.pos += 1;
                            return Ok(values);
                        }
                        _ => return Err(self.unexpected(EXPECTED_LIST_SEP)),
                    }
                }
            }
            _ => Err(self.unexpected(EXPECTED_AFTER_KEY)),
        }
    }
}

impl Filter {
    /// Parses a filter string (see the [module documentation](self) for the grammar).
    ///
    /// Runs in time linear in the input, never panics, and rejects strings longer than
    /// [`MAX_FILTER_LEN`] before looking at them.
    pub fn parse(s: &str) -> Result<Self, FilterError> {
        if s.len() > MAX_FILTER_LEN {
            return Err(FilterError::TooLong { len: s.len() });
        }
        if s.bytes().all(|b| b == b' ') {
            return Err(FilterError::Empty);
        }
        let mut p = Parser { s, pos: 0 };
        let mut preds: Vec<Predicate> = Vec::new();
        p.skip_ws();
        loop {
            let start = p.pos;
            if preds.len() == MAX_PREDICATES {
                return Err(FilterError::TooManyPredicates { pos: start });
            }
            let key = p.key()?;
            let spaced = p.skip_ws() > 0;
            let mut values = p.predicate_values(spaced)?;
            // At most MAX_PREDICATES keys so far: a linear scan is cheapest.
            if preds.iter().any(|q| q.key == key) {
                return Err(FilterError::DuplicateKey { key: key.to_owned(), pos: start });
            }
            values.sort_unstable();
            values.dedup();
            preds.push(Predicate { key: key.to_owned(), values });
            p.skip_ws();
            match p.peek() {
                None => break,
                Some(b',') => {
                    p.pos += 1;
                    p.skip_ws();
                }
                Some(_) => return Err(p.unexpected(EXPECTED_PRED_SEP)),
            }
        }
        preds.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        let filter = Self { preds };
        let len = filter.canonical_len();
        if len > MAX_FILTER_LEN {
            return Err(FilterError::CanonicalTooLong { len });
        }
        Ok(filter)
    }

    /// True if every predicate holds for `tags`. Does not allocate.
    pub fn matches(&self, tags: &Tags) -> bool {
        self.preds.iter().all(|p| {
            tags.get(&p.key).is_some_and(|v| p.values.binary_search_by(|x| x.as_str().cmp(v)).is_ok())
        })
    }

    /// The predicates, sorted by key.
    pub fn predicates(&self) -> &[Predicate] {
        &self.preds
    }

    /// Length in bytes of the canonical form, i.e. of `self.to_string()`.
    fn canonical_len(&self) -> usize {
        let separators = self.preds.len().saturating_sub(1);
        let preds: usize = self
            .preds
            .iter()
            .map(|p| {
                let values: usize = p.values.iter().map(|v| rendered_value_len(v)).sum();
                if p.values.len() == 1 {
                    p.key.len() + 1 + values
                } else {
                    // `key in (` + values + commas + `)`
                    p.key.len() + 5 + values + p.values.len().saturating_sub(1) + 1
                }
            })
            .sum();
        separators + preds
    }
}

impl std::str::FromStr for Filter {
    type Err = FilterError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Renders the canonical form: predicates sorted by key and joined by `,`; one value as
/// `key=value`, several as `key in (a,b)`; values bare where the grammar allows, else
/// quoted with `"` and `\` escaped; no other spaces.
impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.preds.iter().enumerate() {
            if i > 0 {
                f.write_char(',')?;
            }
            f.write_str(&p.key)?;
            if let [v] = p.values.as_slice() {
                f.write_char('=')?;
                write_value(f, v)?;
            } else {
                f.write_str(" in (")?;
                for (j, v) in p.values.iter().enumerate() {
                    if j > 0 {
                        f.write_char(',')?;
                    }
                    write_value(f, v)?;
                }
                f.write_char(')')?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> Tags {
        Tags::from_pairs(pairs.iter().copied()).unwrap()
    }

    fn canon(s: &str) -> String {
        Filter::parse(s).unwrap().to_string()
    }

    fn err(s: &str) -> FilterError {
        Filter::parse(s).unwrap_err()
    }

    #[test]
    fn key_bytes_agree_with_tags() {
        for b in 0..=u8::MAX {
            let s = [b];
            let as_str = std::str::from_utf8(&s).unwrap_or("\u{0}");
            assert_eq!(is_key_byte(b), crate::tags::is_valid_key(as_str), "byte {b}");
        }
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(canon("a=1"), "a=1");
        assert_eq!(canon("  b = 2 ,a=1  "), "a=1,b=2");
        assert_eq!(canon("a in (x, x)"), "a=x");
        assert_eq!(canon("a in(y,x , y)"), "a in (x,y)");
        assert_eq!(canon("a   in   (  y  ,  x  )"), "a in (x,y)");
        assert_eq!(canon(r#"a="x""#), "a=x");
        assert_eq!(canon(r#"a="""#), r#"a="""#);
        assert_eq!(canon(r#"a="x y""#), r#"a="x y""#);
        assert_eq!(canon(r#"a="q\"b\\s""#), r#"a="q\"b\\s""#);
        assert_eq!(canon(r#"a="é,()=""#), r#"a="é,()=""#);
        assert_eq!(canon("k.1-_=a:b@c/d+e.f_-"), "k.1-_=a:b@c/d+e.f_-");
        assert_eq!(canon(r#"a in ("", b, "b")"#), r#"a in ("",b)"#);
        assert_eq!(Filter::parse("b=2, a=1"), Filter::parse("a=1,b=2"));
        assert_eq!(Filter::parse("a in (x, x)"), Filter::parse("a=x"));
        assert_eq!(Filter::parse(r#"a="x""#), Filter::parse("a=x"));
        assert_ne!(Filter::parse("a=x"), Filter::parse("a=y"));
    }

    #[test]
    fn key_named_in() {
        let f = Filter::parse("in=x").unwrap();
        assert_eq!(f.predicates()[0].key, "in");
        assert_eq!(canon("in = x"), "in=x");
        assert_eq!(canon("in in (x, y)"), "in in (x,y)");
        assert_eq!(canon("in in(x)"), "in=x");
        assert_eq!(canon("a in (in)"), "a=in");
        assert_eq!(canon("in in (in,in)"), "in=in");
        assert_eq!(canon("inx=1,xin=2"), "inx=1,xin=2");
        assert_eq!(canon("a in (in, out)"), "a in (in,out)");
        // `ain` is one key, not `a` followed by `in`.
        assert!(matches!(err("ain (x)"), FilterError::Unexpected { pos: 4, found: '(', .. }));
        assert!(matches!(err("ain(x)"), FilterError::Unexpected { pos: 3, found: '(', .. }));
        // `in` must be followed by `(`.
        assert!(matches!(err("a in x"), FilterError::Unexpected { pos: 5, found: 'x', .. }));
        assert!(matches!(err("a inx (y)"), FilterError::Unexpected { pos: 4, found: 'x', .. }));
        assert!(matches!(err("a in=x"), FilterError::Unexpected { pos: 4, found: '=', .. }));
        assert!(matches!(err("a in"), FilterError::UnexpectedEnd { pos: 4, .. }));
        assert!(matches!(err("a i"), FilterError::Unexpected { pos: 2, found: 'i', .. }));
    }

    #[test]
    fn predicates_are_sorted() {
        let f = Filter::parse("z in (3, 1, 2, 1), a = q").unwrap();
        let p = f.predicates();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0], Predicate { key: "a".into(), values: vec!["q".into()] });
        assert_eq!(p[1].key, "z");
        assert_eq!(p[1].values, ["1", "2", "3"]);
    }

    #[test]
    fn matching() {
        let f = Filter::parse("kind=trade, venue in (xnys, xnas)").unwrap();
        assert!(f.matches(&tags(&[("kind", "trade"), ("venue", "xnys")])));
        assert!(f.matches(&tags(&[("kind", "trade"), ("venue", "xnas"), ("extra", "1")])));
        assert!(!f.matches(&tags(&[("kind", "quote"), ("venue", "xnys")])));
        assert!(!f.matches(&tags(&[("kind", "trade"), ("venue", "bats")])));
        // An absent tag never matches.
        assert!(!f.matches(&tags(&[("kind", "trade")])));
        assert!(!f.matches(&Tags::new()));

        let empty = Filter::parse(r#"a="""#).unwrap();
        assert!(empty.matches(&tags(&[("a", "")])));
        assert!(!empty.matches(&tags(&[("a", "x")])));
        assert!(!empty.matches(&Tags::new()));

        let quoted = Filter::parse(r#"msg in ("a \"b\"", "c\\d")"#).unwrap();
        assert!(quoted.matches(&tags(&[("msg", "a \"b\"")])));
        assert!(quoted.matches(&tags(&[("msg", "c\\d")])));
        assert!(!quoted.matches(&tags(&[("msg", "a")])));

        // Values compare exactly: no case folding, no trimming.
        let f = Filter::parse("a=X").unwrap();
        assert!(!f.matches(&tags(&[("a", "x")])));
        assert!(!f.matches(&tags(&[("a", "X ")])));
    }

    #[test]
    fn empty() {
        assert_eq!(err(""), FilterError::Empty);
        assert_eq!(err("   "), FilterError::Empty);
    }

    #[test]
    fn too_long() {
        let long = format!("a={}", "x".repeat(MAX_FILTER_LEN));
        assert_eq!(err(&long), FilterError::TooLong { len: MAX_FILTER_LEN + 2 });
        // Exactly at the limit is fine (spaces count).
        let at = format!("a=x{}", " ".repeat(MAX_FILTER_LEN - 3));
        assert_eq!(canon(&at), "a=x");
    }

    #[test]
    fn canonical_too_long() {
        // 16 predicates `kN in(v,w)`, each padded so the input is exactly at the limit;
        // the canonical form adds a space before every `(`.
        let mut preds: Vec<String> =
            (0..MAX_PREDICATES).map(|i| format!("k{i:02} in({},w)", "v".repeat(53))).collect();
        let used: usize = preds.iter().map(String::len).sum::<usize>() + MAX_PREDICATES - 1;
        preds[0] = format!("k00 in({},w)", "v".repeat(53 + MAX_FILTER_LEN - used));
        let input = preds.join(",");
        assert_eq!(input.len(), MAX_FILTER_LEN);
        assert_eq!(err(&input), FilterError::CanonicalTooLong { len: MAX_FILTER_LEN + MAX_PREDICATES });
        // With fewer predicates the same kind of input is fine, and its canonical form
        // length is what `canonical_len` says.
        let f = Filter::parse(&preds[1..].join(",")).unwrap();
        assert_eq!(f.to_string().len(), f.canonical_len());
    }

    #[test]
    fn canonical_len_matches_display() {
        for s in [
            "a=1",
            "a=1,b in (x,y),c=\"\"",
            r#"q in ("a\"b", "c\\", "", plain, "with space")"#,
            r#"z="é", y in (1,2,3)"#,
        ] {
            let f = Filter::parse(s).unwrap();
            assert_eq!(f.to_string().len(), f.canonical_len(), "{s}");
        }
    }

    #[test]
    fn syntax_errors() {
        use FilterError::{Unexpected, UnexpectedEnd};
        assert!(matches!(err("=x"), Unexpected { pos: 0, found: '=', expected: EXPECTED_KEY }));
        assert!(matches!(err("a"), UnexpectedEnd { pos: 1, expected: EXPECTED_AFTER_KEY }));
        assert!(matches!(err("a="), UnexpectedEnd { pos: 2, expected: EXPECTED_VALUE }));
        assert!(matches!(err("a= "), UnexpectedEnd { pos: 3, expected: EXPECTED_VALUE }));
        assert!(matches!(err("a b=1"), Unexpected { pos: 2, found: 'b', .. }));
        assert!(matches!(err("a=1,"), UnexpectedEnd { pos: 4, expected: EXPECTED_KEY }));
        assert!(matches!(err("a=1,,b=2"), Unexpected { pos: 4, found: ',', .. }));
        assert!(matches!(err(",a=1"), Unexpected { pos: 0, found: ',', .. }));
        assert!(matches!(err("a=1 b=2"), Unexpected { pos: 4, found: 'b', .. }));
        assert!(matches!(err("a=b=c"), Unexpected { pos: 3, found: '=', .. }));
        assert!(matches!(err("a=x y"), Unexpected { pos: 4, found: 'y', .. }));
        assert!(matches!(err("a=(x)"), Unexpected { pos: 2, found: '(', .. }));
        assert!(matches!(err("a in ()"), Unexpected { pos: 6, found: ')', .. }));
        assert!(matches!(err("a in (x,)"), Unexpected { pos: 8, found: ')', .. }));
        assert!(matches!(err("a in (x y)"), Unexpected { pos: 8, found: 'y', .. }));
        assert!(matches!(err("a in (x"), UnexpectedEnd { pos: 7, expected: EXPECTED_LIST_SEP }));
        assert!(matches!(err("a in (x))"), Unexpected { pos: 8, found: ')', .. }));
        // Only spaces are whitespace.
        assert!(matches!(err("a=1,\tb=2"), Unexpected { pos: 4, found: '\t', .. }));
        assert!(matches!(err("a=1\n"), Unexpected { pos: 3, found: '\n', .. }));
        // Characters outside the grammar, including non-ASCII ones outside quotes.
        assert!(matches!(err("é=1"), Unexpected { pos: 0, found: 'é', .. }));
        assert!(matches!(err("a=é"), Unexpected { pos: 2, found: 'é', .. }));
        assert!(matches!(err("a=1,b=x\u{0}"), Unexpected { pos: 7, found: '\u{0}', .. }));
        assert!(matches!(err("a=x!"), Unexpected { pos: 3, found: '!', .. }));
    }

    #[test]
    fn quote_errors() {
        assert_eq!(err(r#"a=""#), FilterError::UnterminatedQuote { pos: 2 });
        assert_eq!(err(r#"a="abc"#), FilterError::UnterminatedQuote { pos: 2 });
        assert_eq!(err(r#"a in (x, "y\")"#), FilterError::UnterminatedQuote { pos: 9 });
        assert_eq!(err(r#"a="x\"#), FilterError::UnterminatedQuote { pos: 2 });
        assert_eq!(err(r#"a="x\n""#), FilterError::InvalidEscape { pos: 4 });
        assert_eq!(err(r#"a="x\'""#), FilterError::InvalidEscape { pos: 4 });
        assert_eq!(err(r#"a="\é""#), FilterError::InvalidEscape { pos: 3 });
        // A quote in the middle of a bare value is not allowed.
        assert!(matches!(err(r#"a=x"y""#), FilterError::Unexpected { pos: 3, found: '"', .. }));
    }

    #[test]
    fn length_limits() {
        let key = "k".repeat(MAX_TAG_KEY_LEN);
        assert!(Filter::parse(&format!("{key}=1")).is_ok());
        assert_eq!(err(&format!("a=1, {key}k=1")), FilterError::KeyTooLong { pos: 5 });

        let v = "v".repeat(MAX_VALUE_LEN);
        assert!(Filter::parse(&format!("a={v}")).is_ok());
        assert!(Filter::parse(&format!("a=\"{v}\"")).is_ok());
        assert_eq!(err(&format!("a={v}v")), FilterError::ValueTooLong { pos: 2 });
        assert_eq!(err(&format!("a=\"{v}v\"")), FilterError::ValueTooLong { pos: 2 });
        // The limit is on the unescaped value: 256 escaped quotes are 512 bytes of input.
        let q = "\\\"".repeat(MAX_VALUE_LEN);
        let f = Filter::parse(&format!("a=\"{q}\"")).unwrap();
        assert_eq!(f.predicates()[0].values[0], "\"".repeat(MAX_VALUE_LEN));
        assert_eq!(err(&format!("a=\"{q}x\"")), FilterError::ValueTooLong { pos: 2 });
        // Multi-byte characters count in bytes.
        let e = "é".repeat(MAX_VALUE_LEN / 2);
        assert!(Filter::parse(&format!("a=\"{e}\"")).is_ok());
        assert_eq!(err(&format!("a=\"{e}x\"")), FilterError::ValueTooLong { pos: 2 });
    }

    #[test]
    fn count_limits() {
        let preds: Vec<String> = (0..MAX_PREDICATES).map(|i| format!("k{i}=v")).collect();
        let ok = preds.join(",");
        assert_eq!(Filter::parse(&ok).unwrap().predicates().len(), MAX_PREDICATES);
        let over = format!("{ok}, extra=1");
        assert_eq!(err(&over), FilterError::TooManyPredicates { pos: ok.len() + 2 });

        let values: Vec<String> = (0..MAX_IN_VALUES).map(|i| i.to_string()).collect();
        let ok = format!("a in ({})", values.join(","));
        assert_eq!(Filter::parse(&ok).unwrap().predicates()[0].values.len(), MAX_IN_VALUES);
        let over = format!("a in ({}, 64)", values.join(","));
        assert_eq!(err(&over), FilterError::TooManyValues { pos: over.len() - 3 });
        // Counted as written, before deduplication.
        let same = format!("a in ({})", vec!["x"; MAX_IN_VALUES + 1].join(","));
        assert!(matches!(err(&same), FilterError::TooManyValues { .. }));
    }

    #[test]
    fn duplicate_keys() {
        assert_eq!(err("a=1,b=2,a=1"), FilterError::DuplicateKey { key: "a".into(), pos: 8 });
        assert_eq!(err("a in (1,2), a=3"), FilterError::DuplicateKey { key: "a".into(), pos: 12 });
        // The first repeat in input order is reported.
        assert_eq!(err("b=1,a=1,b=2,a=2"), FilterError::DuplicateKey { key: "b".into(), pos: 8 });
        // Keys are case-sensitive, like tag keys.
        assert!(Filter::parse("a=1,A=1").is_ok());
    }

    #[test]
    fn messages_are_short() {
        let huge = "x".repeat(10_000);
        let inputs = [
            String::new(),
            huge,
            format!("a=\"{}", "y".repeat(1000)),
            format!("{}=1", "k".repeat(1000)),
            format!("a={}", "v".repeat(1000)),
            "a=1,a=2".to_owned(),
            "a=1 junk".to_owned(),
            "a=\"\\q\"".to_owned(),
        ];
        for s in &inputs {
            let msg = err(s).to_string();
            assert!(msg.len() < 160, "{msg}");
            assert!(!msg.contains("xxxxx") && !msg.contains("yyyyy") && !msg.contains("vvvvv"));
        }
        assert_eq!(
            err("a=1 junk").to_string(),
            "unexpected character 'j' at byte 4; expected ',' or the end of the filter"
        );
        assert_eq!(err("a=1,a=2").to_string(), "key \"a\" appears more than once (again at byte 4)");
        assert_eq!(
            err("a=1\u{7}").to_string(),
            "unexpected character '\\u{7}' at byte 3; expected ',' or the end of the filter"
        );
    }

    #[test]
    fn from_str() {
        let f: Filter = "a=1".parse().unwrap();
        assert_eq!(f, Filter::parse("a=1").unwrap());
    }
}
