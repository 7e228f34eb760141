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

struct P<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> P<'a> {
    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\r' | b'\n') {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        self.ws();
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// A string's raw contents (escapes left as they are).
    fn string(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let start = self.i;
        self.i = string_end(self.b, start)?;
        Some(&self.b[start..self.i - 1])
    }

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
            let key = self.string()?;
            self.eat(b':')?;
            match key {
                b"type" => {
                    self.ws();
                    if self.peek()? == b'"' {
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
                b"index" => m.index = self.number()?,
                b"replyTo" => m.reply_to = Some(self.number()?),
                b"fragmentReplies" => self.replies(&mut m)?,
                b"fragments" => m.fragments = Some(self.skip()?),
                _ => {
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

/// Bytes that matter when skipping a container: quotes and brackets.
static STRUCTURAL: [bool; 256] = {
    let mut t = [false; 256];
    t[b'"' as usize] = true;
    t[b'{' as usize] = true;
    t[b'[' as usize] = true;
    t[b'}' as usize] = true;
    t[b']' as usize] = true;
    t
};

/// The position just past the closing quote of the string whose contents start at `i`.
/// (memchr: a listener scans a million messages a second, mostly string contents.)
fn string_end(b: &[u8], mut i: usize) -> Option<usize> {
    loop {
        i += memchr::memchr2(b'"', b'\\', b.get(i..)?)?;
        if b[i] == b'"' {
            return Some(i + 1);
        }
        i += 2;
    }
}

/// The position just past the object or array that opens at `i`.
fn skip_container(b: &[u8], mut i: usize) -> Option<usize> {
    let mut depth = 0usize;
    loop {
        i += b.get(i..)?.iter().position(|c| STRUCTURAL[usize::from(*c)])?;
        match b[i] {
            b'"' => {
                i = string_end(b, i + 1)?;
                continue;
            }
            b'{' | b'[' => depth += 1,
            _ => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
        }
        i += 1;
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

/// The unsigned integer that follows the first `key` (a literal such as `"x":`) in `b`.
pub(crate) fn number_after(b: &[u8], key: &[u8]) -> Option<u64> {
    let at = memchr::memmem::find(b, key)? + key.len();
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

    #[test]
    fn numbers_after_keys() {
        let b = br#"[{"type":"change","properties":{"x":12345,"y": 20003}}]"#;
        assert_eq!(number_after(b, br#""x":"#), Some(12345));
        assert_eq!(number_after(b, br#""y":"#), Some(20003));
        assert_eq!(number_after(b, br#""z":"#), None);
    }
}
