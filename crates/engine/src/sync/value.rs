//! Property values: how they are stored ([`Slot`]), and how incoming values of the
//! non-reference types are checked and normalised (references need the scope: see
//! `verify.rs`).
//!
//! Normal forms (what snapshots and broadcasts carry):
//! - `Number`: the JSON number JavaScript would print for the same double: integral values
//!   up to 2^53 as integers, `-0` as `0`, anything else as a float.
//! - `Date`: seconds since the epoch as a number, at millisecond precision (JavaScript
//!   `Date`s hold whole milliseconds).
//! - enumeration values: the declared value (an integer enumeration given `1.0` stores `1`).
//! - strings and booleans: as sent.

use serde_json::Value;
use tether_proto::jetstream::Uuid;

use super::error::{self, FragmentError};
use super::schema::{Enum, EnumValues, Single};

/// The stored value of one property.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Slot {
    /// A non-reference property, in normal form: `null`, a boolean, number or string, or an
    /// array of those for a collection.
    Value(Value),
    /// A single model reference; `None` is unset (`null`).
    Ref(Option<Uuid>),
    /// A collection of model references, in order (duplicates allowed, as in the reference).
    Refs(Vec<Uuid>),
}

impl Slot {
    /// The value of a property nobody has set: `null`, `[]`, unset.
    pub(crate) fn empty(single: Single, collection: bool) -> Slot {
        match (single, collection) {
            (Single::Model(_), false) => Slot::Ref(None),
            (Single::Model(_), true) => Slot::Refs(Vec::new()),
            (_, true) => Slot::Value(Value::Array(Vec::new())),
            (_, false) => Slot::Value(Value::Null),
        }
    }

    /// The wire form: references as lower-case UUID strings.
    pub(crate) fn to_json(&self) -> Value {
        match self {
            Slot::Value(v) => v.clone(),
            Slot::Ref(None) => Value::Null,
            Slot::Ref(Some(u)) => Value::String(uuid_string(u)),
            Slot::Refs(us) => Value::Array(us.iter().map(|u| Value::String(uuid_string(u))).collect()),
        }
    }

    /// Every reference this slot holds (one per occurrence).
    pub(crate) fn refs(&self) -> &[Uuid] {
        match self {
            Slot::Value(_) | Slot::Ref(None) => &[],
            Slot::Ref(Some(u)) => std::slice::from_ref(u),
            Slot::Refs(us) => us,
        }
    }
}

/// The lower-case hyphenated form of a UUID (as its `Display`, without the formatting
/// machinery: broadcasts write one per reference).
pub(crate) fn uuid_string(u: &Uuid) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(36);
    for (i, b) in u.as_bytes().iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    s
}

/// Checks a value of a non-reference property (`collection`: `[single]`) and returns its
/// normal form. `key` is the property name, for messages. The order of checks, and so which
/// message a bad value gets, is `verifyPropertiesForType`'s.
pub(crate) fn check_value(
    single: Single,
    collection: bool,
    key: &str,
    v: &Value,
    enums: &[Enum],
) -> Result<Value, FragmentError> {
    if !collection {
        return check_single(single, key, v, enums);
    }
    let Value::Array(items) = v else {
        return Err(error::collection_without_array(key));
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        out.push(check_single(single, key, item, enums)?);
    }
    Ok(Value::Array(out))
}

/// Checks one value (or one element of a collection) of a non-reference type.
fn check_single(single: Single, key: &str, v: &Value, enums: &[Enum]) -> Result<Value, FragmentError> {
    if let Single::Enum(e) = single {
        // `indexOf` with `===`: `null` is not a member, so an enumeration property cannot be
        // set to `null` (although a new object's value is `null` until set).
        return enums.get(e).and_then(|en| enum_member(en, v)).ok_or_else(|| {
            error::not_one_of(key, enums.get(e).map(|en| en.one_of.as_str()).unwrap_or("[]"))
        });
    }
    // `null` is valid for every non-reference type, also inside a collection (the reference
    // checks elements with the same function).
    if v.is_null() {
        return Ok(Value::Null);
    }
    let ok = match single {
        Single::String => v.is_string().then(|| v.clone()),
        Single::Boolean => v.is_boolean().then(|| v.clone()),
        Single::Number => v.as_f64().and_then(js_number),
        Single::Date => date_seconds(v),
        Single::Enum(_) | Single::Model(_) => None,
    };
    ok.ok_or_else(|| error::not_valid_type(key, single.builtin_name()))
}

/// The declared value equal to `v`, if there is one.
fn enum_member(e: &Enum, v: &Value) -> Option<Value> {
    match (&e.values, v) {
        (EnumValues::Strings(ss), Value::String(s)) => ss.iter().any(|x| x == s).then(|| v.clone()),
        (EnumValues::Integers(is), Value::Number(n)) => {
            let f = n.as_f64()?;
            // Integer enumeration values are at most 2^53 in magnitude, so exact as doubles.
            #[allow(clippy::cast_precision_loss)]
            is.iter().find(|&&i| i as f64 == f).map(|&i| Value::from(i))
        }
        _ => None,
    }
}

/// The normal form of a finite number: what `JSON.stringify` would write for the same
/// double, as a `Value` (integers as integers). `None` for NaN and infinities, which JSON
/// cannot carry.
pub(crate) fn js_number(f: f64) -> Option<Value> {
    if !f.is_finite() {
        return None;
    }
    if f == 0.0 {
        // Also -0, which JSON.stringify writes as 0.
        return Some(Value::from(0));
    }
    if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_991.0 {
        // Integral and within ±2^53: exact as an i64.
        #[allow(clippy::cast_possible_truncation)]
        return Some(Value::from(f as i64));
    }
    serde_json::Number::from_f64(f).map(Value::Number)
}

/// The largest magnitude of a JavaScript `Date`, in milliseconds (ECMAScript TimeClip).
const MAX_DATE_MS: f64 = 8.64e15;

/// A `Date` value in normal form (seconds since the epoch, whole milliseconds), from a
/// number of seconds or a date-time string. Booleans, which `new Date(v)` also takes, are
/// refused: a boolean date is always a client bug.
pub(crate) fn date_seconds(v: &Value) -> Option<Value> {
    let ms = match v {
        // Seconds on the wire, as the reference server sends Dates. (The reference passes an
        // incoming number to `new Date(n)`, which reads milliseconds: a round trip through it
        // divides dates by 1000. Tether reads seconds, like it writes them.)
        Value::Number(n) => (n.as_f64()? * 1000.0).round(),
        // The bundled JavaScript client sends Dates as `JSON.stringify` writes them (ISO 8601).
        Value::String(s) => parse_date_ms(s)?,
        _ => return None,
    };
    if !ms.is_finite() || ms.abs() > MAX_DATE_MS {
        return None;
    }
    js_number(ms / 1000.0)
}

/// Milliseconds since the epoch of a date-time string in the ECMAScript date-time format
/// (ISO 8601 profile): `YYYY`, `YYYY-MM` or `YYYY-MM-DD` (or a signed six-digit year),
/// optionally followed by `THH:mm`, `THH:mm:ss` or `THH:mm:ss.fff…`, and an offset `Z`,
/// `±HH:mm` or `±HHmm`. Also taken, as V8 does: a lower-case `t`/`z` and a space for `T`.
/// Times without an offset are read as UTC (ECMAScript says local time; a server has no
/// meaningful local time zone). Calendar fields are range-checked (no 30 February, which V8
/// accepts through its legacy fallback parser).
pub(crate) fn parse_date_ms(s: &str) -> Option<f64> {
    let mut p = Cursor { b: s.as_bytes(), i: 0 };
    let year: i64 = match p.peek() {
        Some(sign @ (b'+' | b'-')) => {
            p.i += 1;
            let y = p.digits(6)?;
            if sign == b'-' {
                if y == 0 {
                    // "-000000" is not a year (ECMAScript).
                    return None;
                }
                -y
            } else {
                y
            }
        }
        _ => p.digits(4)?,
    };
    let (mut month, mut day) = (1, 1);
    if p.eat(b'-') {
        month = p.digits(2)?;
        if p.eat(b'-') {
            day = p.digits(2)?;
        }
    }
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let (mut hour, mut minute, mut second, mut milli, mut offset_min) = (0, 0, 0, 0, 0);
    if matches!(p.peek(), Some(b'T' | b't' | b' ')) {
        p.i += 1;
        hour = p.digits(2)?;
        if !p.eat(b':') {
            return None;
        }
        minute = p.digits(2)?;
        if p.eat(b':') {
            second = p.digits(2)?;
            if p.eat(b'.') {
                let start = p.i;
                while matches!(p.peek(), Some(b'0'..=b'9')) {
                    p.i += 1;
                }
                let frac = &p.b[start..p.i];
                if frac.is_empty() {
                    return None;
                }
                // Milliseconds from the first three digits; further digits are dropped.
                for k in 0..3 {
                    milli = milli * 10 + frac.get(k).map_or(0, |d| i64::from(d - b'0'));
                }
            }
        }
        match p.peek() {
            Some(b'Z' | b'z') => p.i += 1,
            Some(sign @ (b'+' | b'-')) => {
                p.i += 1;
                let oh = p.digits(2)?;
                p.eat(b':');
                let om = p.digits(2)?;
                if oh > 23 || om > 59 {
                    return None;
                }
                offset_min = (oh * 60 + om) * if sign == b'-' { -1 } else { 1 };
            }
            _ => {}
        }
        let valid_time = (hour < 24 && minute < 60 && second < 60)
            || (hour == 24 && minute == 0 && second == 0 && milli == 0);
        if !valid_time {
            return None;
        }
    }
    if p.i != p.b.len() {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let ms =
        days * 86_400_000 + hour * 3_600_000 + minute * 60_000 + second * 1000 + milli - offset_min * 60_000;
    // |ms| < 2^53 here (years have at most six digits), so the conversion is exact.
    #[allow(clippy::cast_precision_loss)]
    let ms = ms as f64;
    Some(ms)
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// Exactly `n` ASCII digits.
    fn digits(&mut self, n: usize) -> Option<i64> {
        let mut v = 0i64;
        for _ in 0..n {
            let d = self.peek().filter(u8::is_ascii_digit)?;
            v = v * 10 + i64::from(d - b'0');
            self.i += 1;
        }
        Some(v)
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}
