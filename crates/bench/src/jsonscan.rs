//! A minimal scanner for the frames a Jetstream server sends, for `jetstream-sync`.
//!
//! A frame is one JSON message or an array of them. The bench needs a handful of fields of
//! each message (`type`, `index`, `replyTo`, whether each fragment reply is `{}`, where the
//! `fragments` are) and nothing else, at up to a million messages per second on a machine
//! it shares with the server. So this walks the JSON once, in place: no allocation, no
//! tree, key order free (the reference server and Tether order keys differently), nested
//! values skipped by bracket depth with string escapes honoured. It does not validate
//! beyond what it needs; anything it cannot follow makes the whole frame `None`.

use crate::ws::parse_u64;

/// The message types the bench acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A broadcast changeset (or, in the reference, an empty one).
    ScopeSync,
    /// The answer to one of our changesets.
    ScopeSyncReply,
    /// A server `Ping` (keep-alive or resend).
    Ping,
    /// Anything else (`SessionCreateReply`, `ScopeFetchReply`, `ScopeState`, …).
    Other,
}

/// The fields of one server message the bench looks at.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Msg<'a> {
    /// Its type.
    pub(crate) kind: Kind,
    /// `index` (0 when absent: unreliable messages).
    pub(crate) index: u64,
    /// `replyTo`, if present.
    pub(crate) reply_to: Option<u64>,
    /// Fragment replies that are `{}` (accepted).
    pub(crate) replies_ok: u32,
    /// Fragment replies that carry something (an `error`).
    pub(crate) replies_err: u32,
    /// The raw JSON of the first non-empty fragment reply.
    pub(crate) first_error: Option<&'a [u8]>,
    /// The raw JSON of `fragments`, if present.
    pub(crate) fragments: Option<&'a [u8]>,
}

/// The keys [`P::message`] tells apart.
#[derive(Debug, Clone, Copy)]
enum Key {
    Type,
    Index,
    ReplyTo,
    FragmentReplies,
    Fragments,
    Other,
}

struct P<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> P<'a> {
    #[inline]
    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\r' | b'\n') {
            self.i += 1;
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    fn eat(&mut self, c: u8) -> Option<()> {
        self.ws();
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// A string's raw contents (escapes left as they are).
    #[inline]
    fn string(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let start = self.i;
        self.i = string_end(self.b, start)?;
        Some(&self.b[start..self.i - 1])
    }

    #[inline]
    fn number(&mut self) -> Option<u64> {
        self.ws();
        let (v, n) = parse_u64(&self.b[self.i..])?;
        self.i += n;
        // A fraction or exponent is not an index: skip it and give up on the value.
        let rest = self.i;
        while self.i < self.b.len()
            && matches!(self.b[self.i], b'.' | b'e' | b'E' | b'+' | b'-' | b'0'..=b'9')
        {
            self.i += 1;
        }
        (rest == self.i).then_some(v)
    }

    /// Skips one value; returns its raw JSON.
    fn skip(&mut self) -> Option<&'a [u8]> {
        self.ws();
        let start = self.i;
        match self.peek()? {
            b'"' => {
                self.string()?;
            }
            b'{' | b'[' => self.i = skip_container(self.b, self.i)?,
            _ => {
                while self.i < self.b.len()
                    && !matches!(self.b[self.i], b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n')
                {
                    self.i += 1;
                }
                if self.i == start {
                    return None;
                }
            }
        }
        Some(&self.b[start..self.i])
    }

    /// `fragmentReplies`: counts `{}` and the rest.
    fn replies(&mut self, m: &mut Msg<'a>) -> Option<()> {
        self.eat(b'[')?;
        self.ws();
        if self.peek()? == b']' {
            self.i += 1;
            return Some(());
        }
        loop {
            let v = self.skip()?;
            let empty = v.len() >= 2
                && v[0] == b'{'
                && v[1..v.len() - 1].iter().all(|c| matches!(c, b' ' | b'\t' | b'\r' | b'\n'));
            if empty {
                m.replies_ok += 1;
            } else {
                m.replies_err += 1;
                m.first_error.get_or_insert(v);
            }
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// Consumes `lit` if the input continues with it. (Always inlined, so that the
    /// comparison is of a known length and needs no call to `memcmp`.)
    #[inline(always)]
    fn literal<const N: usize>(&mut self, lit: &[u8; N]) -> bool {
        let hit = self.b.get(self.i..self.i + N).is_some_and(|w| w == lit);
        if hit {
            self.i += N;
        }
        hit
    }

    /// A key the bench reads (or `scopeIndex`) written exactly as `"key":`, consumed; the
    /// shortcut for compact JSON, as both servers send it. `None` (nothing consumed) for
    /// anything else, which [`Self::message`] reads the general way.
    #[inline]
    fn literal_key(&mut self) -> Option<Key> {
        let (hit, key) = match *self.b.get(self.i + 1)? {
            b't' => (self.literal(br#""type":"#), Key::Type),
            b'i' => (self.literal(br#""index":"#), Key::Index),
            b's' => (self.literal(br#""scopeIndex":"#), Key::Other),
            b'r' => (self.literal(br#""replyTo":"#), Key::ReplyTo),
            b'f' if self.literal(br#""fragments":"#) => (true, Key::Fragments),
            b'f' => (self.literal(br#""fragmentReplies":"#), Key::FragmentReplies),
            _ => return None,
        };
        hit.then_some(key)
    }

    /// A `type` value the bench acts on, written as a plain string, consumed.
    #[inline]
    fn literal_kind(&mut self) -> Option<Kind> {
        if self.literal(br#""ScopeSync""#) {
            Some(Kind::ScopeSync)
        } else if self.literal(br#""ScopeSyncReply""#) {
            Some(Kind::ScopeSyncReply)
        } else if self.literal(br#""Ping""#) {
            Some(Kind::Ping)
        } else {
            None
        }
    }

    fn message(&mut self) -> Option<Msg<'a>> {
        let mut m = Msg {
            kind: Kind::Other,
            index: 0,
            reply_to: None,
            replies_ok: 0,
            replies_err: 0,
            first_error: None,
            fragments: None,
        };
        self.eat(b'{')?;
        self.ws();
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(m);
        }
        loop {
            let key = match self.literal_key() {
                Some(k) => k,
                None => {
                    let key = match self.string()? {
                        b"type" => Key::Type,
                        b"index" => Key::Index,
                        b"replyTo" => Key::ReplyTo,
                        b"fragmentReplies" => Key::FragmentReplies,
                        b"fragments" => Key::Fragments,
                        _ => Key::Other,
                    };
                    self.eat(b':')?;
                    key
                }
            };
            match key {
                Key::Type => {
                    self.ws();
                    if let Some(kind) = self.literal_kind() {
                        m.kind = kind;
                    } else if self.peek()? == b'"' {
                        m.kind = match self.string()? {
                            b"ScopeSync" => Kind::ScopeSync,
                            b"ScopeSyncReply" => Kind::ScopeSyncReply,
                            b"Ping" => Kind::Ping,
                            _ => Kind::Other,
                        };
                    } else {
                        self.skip()?;
                    }
                }
                Key::Index => m.index = self.number()?,
                Key::ReplyTo => m.reply_to = Some(self.number()?),
                Key::FragmentReplies => self.replies(&mut m)?,
                Key::Fragments => m.fragments = Some(self.skip()?),
                Key::Other => {
                    self.skip()?;
                }
            }
            self.ws();
            match self.peek()? {
                b',' => {
                    self.i += 1;
                    self.ws();
                }
                b'}' => {
                    self.i += 1;
                    return Some(m);
                }
                _ => return None,
            }
        }
    }
}

/// What a byte is to [`skip_container`]: 0 nothing, else one of these.
const QUOTE: u8 = 1;
const OPEN: u8 = 2;
const CLOSE: u8 = 3;

/// Bytes that matter when skipping a container: quotes and brackets.
static STRUCTURAL: [u8; 256] = {
    let mut t = [0u8; 256];
    t[b'"' as usize] = QUOTE;
    t[b'{' as usize] = OPEN;
    t[b'[' as usize] = OPEN;
    t[b'}' as usize] = CLOSE;
    t[b']' as usize] = CLOSE;
    t
};

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// High bit set in each byte of `x` equal to `c`, exact up to the lowest such byte
/// (bytes above it may be flagged wrongly; only the lowest is used).
#[inline(always)]
fn bytes_eq(x: u64, c: u8) -> u64 {
    let y = x ^ (LO * u64::from(c));
    y.wrapping_sub(LO) & !y & HI
}

/// The position just past the closing quote of the string whose contents start at `i`.
/// Eight bytes at a time: a listener scans a million messages a second, mostly short
/// strings (type names, UUIDs, keys), where a call to `memchr` costs more than it saves.
#[inline]
fn string_end(b: &[u8], mut i: usize) -> Option<usize> {
    loop {
        while let Some(w) = b.get(i..i + 8) {
            let x = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
            let m = bytes_eq(x, b'"') | bytes_eq(x, b'\\');
            if m != 0 {
                i += (m.trailing_zeros() / 8) as usize;
                break;
            }
            i += 8;
        }
        // A quote or backslash at `i`, or fewer than eight bytes left.
        loop {
            match *b.get(i)? {
                b'"' => return Some(i + 1),
                b'\\' => {
                    i += 2;
                    break;
                }
                _ => i += 1,
            }
        }
    }
}

/// The position just past the object or array that opens at `i`: one pass, strings
/// skipped by [`string_end`].
fn skip_container(b: &[u8], mut i: usize) -> Option<usize> {
    let mut depth = 0usize;
    loop {
        match STRUCTURAL[usize::from(*b.get(i)?)] {
            0 => i += 1,
            QUOTE => i = string_end(b, i + 1)?,
            OPEN => {
                depth += 1;
                i += 1;
            }
            _ => {
                depth -= 1;
                i += 1;
                if depth == 0 {
                    return Some(i);
                }
            }
        }
    }
}

/// Calls `f` for every message of a frame, in order. `None` if the frame could not be
/// followed (messages before the problem have been passed to `f`).
pub(crate) fn messages<'a>(frame: &'a [u8], mut f: impl FnMut(Msg<'a>)) -> Option<()> {
    let mut p = P { b: frame, i: 0 };
    p.ws();
    if p.peek()? == b'{' {
        f(p.message()?);
        return Some(());
    }
    p.eat(b'[')?;
    p.ws();
    if p.peek()? == b']' {
        return Some(());
    }
    loop {
        f(p.message()?);
        p.ws();
        match p.peek()? {
            b',' => p.i += 1,
            b']' => return Some(()),
            _ => return None,
        }
    }
}

/// The unsigned integer that follows the first `key` (a literal such as `"x":`, in a
/// prebuilt searcher: building one per call costs more than the search) in `b`.
pub(crate) fn number_after(b: &[u8], key: &memchr::memmem::Finder<'_>) -> Option<u64> {
    let at = key.find(b)? + key.needle().len();
    let rest = &b[at..];
    let skip = rest.iter().take_while(|c| **c == b' ').count();
    parse_u64(&rest[skip..]).map(|(v, _)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(frame: &str) -> Option<Vec<Msg<'_>>> {
        let mut v = Vec::new();
        messages(frame.as_bytes(), |m| v.push(m))?;
        Some(v)
    }

    #[test]
    fn tether_and_reference_shapes() {
        let f = r#"[{"type":"ScopeSyncReply","index":3,"replyTo":2,"fragmentReplies":[{},{},{"error":{"message":"Not valid type at 'x', should be Number"}},{}]}]"#;
        let m = all(f).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].kind, Kind::ScopeSyncReply);
        assert_eq!((m[0].index, m[0].reply_to), (3, Some(2)));
        assert_eq!((m[0].replies_ok, m[0].replies_err), (3, 1));
        assert!(m[0].first_error.unwrap().starts_with(br#"{"error""#));

        // Keys in another order, two messages, nested brackets inside strings.
        let f = r#"[ {"index":4,"fragments":[{"type":"change","uuid":"a","clsName":"Canvas","properties":{"name":"bench:1:2:30 ]}"}}],"scopeIndex":0,"type":"ScopeSync"},
                     {"type":"Ping","index":0,"ack":9,"resendMissing":false} ]"#;
        let m = all(f).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].kind, m[0].index), (Kind::ScopeSync, 4));
        let frags = m[0].fragments.unwrap();
        assert!(frags.starts_with(b"[{") && frags.ends_with(b"}]"));
        assert_eq!(m[1].kind, Kind::Ping);

        // A single object, escapes in strings.
        let m = all(r#"{"type":"ScopeState","index":2,"rootUUID":"x\"y","fragments":[]}"#).unwrap();
        assert_eq!((m[0].kind, m[0].index), (Kind::Other, 2));
        assert_eq!(all("[]").unwrap().len(), 0);
        assert!(all(r#"[{"type":"Ping","index":}]"#).is_none());
        assert!(all(r#"[{"type":"Ping""#).is_none());
    }

    /// A message's fields as compared: kind, index, replyTo, ok and error replies, fragments.
    type Fields = (Kind, u64, Option<u64>, u32, u32, Option<serde_json::Value>);

    /// What `messages` should say about a frame, from serde_json.
    fn expected(frame: &str) -> Vec<Fields> {
        let v: serde_json::Value = serde_json::from_str(frame).unwrap();
        let msgs = match v {
            serde_json::Value::Array(a) => a,
            v => vec![v],
        };
        msgs.iter()
            .map(|m| {
                let kind = match m["type"].as_str() {
                    Some("ScopeSync") => Kind::ScopeSync,
                    Some("ScopeSyncReply") => Kind::ScopeSyncReply,
                    Some("Ping") => Kind::Ping,
                    _ => Kind::Other,
                };
                let replies = m["fragmentReplies"].as_array().cloned().unwrap_or_default();
                let ok = replies.iter().filter(|r| r.as_object().is_some_and(|o| o.is_empty())).count();
                (
                    kind,
                    m["index"].as_u64().unwrap_or(0),
                    m["replyTo"].as_u64(),
                    ok as u32,
                    (replies.len() - ok) as u32,
                    m.get("fragments").cloned(),
                )
            })
            .collect()
    }

    fn scanned(frame: &str) -> Vec<Fields> {
        all(frame)
            .unwrap_or_else(|| panic!("not followed: {frame}"))
            .iter()
            .map(|m| {
                let frags = m.fragments.map(|f| serde_json::from_slice(f).expect("fragments slice is JSON"));
                (m.kind, m.index, m.reply_to, m.replies_ok, m.replies_err, frags)
            })
            .collect()
    }

    /// The literal shortcuts and the general path agree with a real JSON parser, whatever
    /// the key order, spacing, escapes and nesting.
    #[test]
    fn agrees_with_serde_json() {
        let frames = [
            // Tether: keys in the reference's toJSON order, compact.
            r#"[{"type":"ScopeSync","index":7,"scopeIndex":0,"fragments":[{"type":"change","uuid":"u","clsName":"Canvas","properties":{"name":"bench:1:2:3"}}]},{"type":"ScopeSyncReply","index":8,"replyTo":5,"fragmentReplies":[{}]}]"#,
            // The reference's order, and other fields in between.
            r#"[{"index":9,"type":"ScopeSync","atomic":false,"scopeIndex":0,"fragments":[]},{"fragmentReplies":[{},{"error":{"message":"x"}}],"replyTo":4,"index":10,"type":"ScopeSyncReply"}]"#,
            // Whitespace everywhere JSON allows it.
            " [ { \"type\" : \"ScopeSync\" , \"index\" : 11 ,\n\t\"fragments\" : [ { \"a\" : [ 1 , { } , [ ] ] } ] } , { \"type\":\"Ping\",\"index\":0,\"ack\":3,\"resendMissing\":false } ] ",
            // Escaped quotes and backslashes, brackets inside strings, nesting.
            r#"[{"type":"ScopeSync","index":12,"fragments":[{"s":"a\"]}[{\\","t":"\\\\","u":"\\\"}"},[[["]"]]],{"v":{"w":{"x":"}"}}}]}]"#,
            r#"{"type":"ScopeSync","index":13,"fragments":[{"properties":{"name":"q\"uote \\ back\\slash \u00e9 ]"}}]}"#,
            // Keys that start like the ones read, values of other types.
            r#"[{"typeX":"ScopeSync","type":"ScopeSyncReplyX","indexes":[1,2],"index":14,"fragmentsX":{"a":"]"},"replyToo":1,"scopeIndexX":null,"fragmentRepliesX":[{}]}]"#,
            r#"[{"type":"Ping","index":15,"ack":2,"resendMissing":true,"extra":{"fragments":["nested, not ours"]}}]"#,
            r#"[{"type":null,"index":16},{"type":"ScopeSyncReply","index":17,"replyTo":3,"fragmentReplies":[]},{}]"#,
            r#"[{"type":"ScopeSyncReply","index":18,"replyTo":3,"fragmentReplies":[ { } , {"error":{"message":"no \"such\" [thing]"}} ]}]"#,
            "[]",
            " [ ] ",
        ];
        for f in frames {
            assert_eq!(scanned(f), expected(f), "{f}");
        }
        // Escaped keys are compared as written (neither server escapes ASCII letters).
        let m = all(r#"[{"ty\u0070e":"Ping","\"index\"":3,"index":4}]"#).unwrap();
        assert_eq!((m[0].kind, m[0].index), (Kind::Other, 4));
    }

    #[test]
    fn strings_and_containers() {
        assert_eq!(string_end(br#"abc"x"#, 0), Some(4));
        assert_eq!(string_end(br#"a\"b"x"#, 0), Some(5));
        assert_eq!(string_end(br#"a\\"x"#, 0), Some(4));
        assert_eq!(string_end(br#"0123456789abcdef\\\"0123456789"tail"#, 0), Some(31));
        assert_eq!(string_end(br#"unterminated\""#, 0), None);
        assert_eq!(string_end(b"\\", 0), None);
        // Across the eight-byte steps: the quote at every position.
        for n in 0..40 {
            let mut b = vec![b'x'; n];
            b.extend_from_slice(b"\"rest");
            assert_eq!(string_end(&b, 0), Some(n + 1));
        }
        assert_eq!(skip_container(b"[]x", 0), Some(2));
        assert_eq!(skip_container(b"{}", 0), Some(2));
        assert_eq!(skip_container(br#"[{"a":"]}"},[1,[2]],"\"]"]x"#, 0), Some(26));
        assert_eq!(skip_container(br#"[{"a":1}"#, 0), None);
        assert_eq!(skip_container(br#"["]"#, 0), None);
    }

    #[test]
    fn numbers_after_keys() {
        let b = br#"[{"type":"change","properties":{"x":12345,"y": 20003}}]"#;
        let key = |k| memchr::memmem::Finder::new(k);
        assert_eq!(number_after(b, &key(br#""x":"#)), Some(12345));
        assert_eq!(number_after(b, &key(br#""y":"#)), Some(20003));
        assert_eq!(number_after(b, &key(br#""z":"#)), None);
    }
}

#[cfg(test)]
mod speed {
    use super::*;

    /// A frame as Tether sends listeners: `n` ScopeSync broadcasts.
    pub(crate) fn tether_frame(n: usize) -> Vec<u8> {
        let mut f = b"[".to_vec();
        for i in 0..n {
            if i > 0 {
                f.push(b',');
            }
            f.extend_from_slice(
                format!(
                    r#"{{"type":"ScopeSync","index":{},"scopeIndex":0,"fragments":[{{"type":"change","uuid":"6f1d2c1e-8a7b-4c3d-9e2f-0a1b2c3d4e5f","clsName":"Canvas","properties":{{"name":"bench:2:{}:{}"}}}}]}}"#,
                    100_000 + i,
                    i % 4,
                    12_345 + i
                )
                .as_bytes(),
            );
        }
        f.push(b']');
        f
    }

    /// `cargo test --release -p tether-bench speed -- --ignored --nocapture`
    #[test]
    #[ignore = "timing, not a test"]
    fn scan_speed() {
        let frame = tether_frame(10);
        let rounds = 100_000;
        let mut sum = 0u64;
        let mut best = f64::MAX;
        for _ in 0..9 {
            let t = tokio::time::Instant::now();
            for _ in 0..rounds {
                messages(std::hint::black_box(&frame), |m| {
                    sum += m.index + m.fragments.map_or(0, |f| f.len() as u64);
                });
            }
            best = best.min(t.elapsed().as_nanos() as f64 / (rounds * 10) as f64);
        }
        let ns = best;
        println!("messages: {ns:.1} ns/message ({} bytes/message) {sum}", frame.len() / 10);
    }
}
