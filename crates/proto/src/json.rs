//! Small JSON helpers shared by the codecs.

use std::borrow::Cow;

/// True if JSON text is (or starts like) an object. serde reads a struct from a JSON array
/// too, positionally; every decoder that wants an object checks this first.
pub fn is_object(text: &str) -> bool {
    text.trim_start().starts_with('{')
}

/// Removes insignificant whitespace from JSON text. `text` must already be valid JSON (the
/// edge validates it); on any input the function returns without panicking. Returns the
/// input unchanged, without allocating, when it has no whitespace outside strings.
///
/// Payloads are stored compact so that every wire format, including SSE where a raw
/// newline would end a `data:` line, can embed them as they are.
pub fn minify(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut in_string = false;
    let mut escaped = false;
    let first_ws = bytes.iter().position(|&b| {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            false
        } else if b == b'"' {
            in_string = true;
            false
        } else {
            matches!(b, b' ' | b'\t' | b'\n' | b'\r')
        }
    });
    let Some(start) = first_ws else { return Cow::Borrowed(text) };
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..start]);
    // Whitespace outside strings is ASCII, so removing it keeps UTF-8 boundaries intact.
    let mut piece_start = start;
    for (i, &b) in bytes.iter().enumerate().skip(start) {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            out.push_str(&text[piece_start..i]);
            piece_start = i + 1;
        }
    }
    out.push_str(&text[piece_start..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_only_outside_strings() {
        assert!(matches!(minify(r#"{"a":1}"#), Cow::Borrowed(_)));
        assert_eq!(minify("{ \"a b\" :\r\n [1, \"x\\\" y\"] }"), r#"{"a b":[1,"x\" y"]}"#);
        assert_eq!(minify(" 1 "), "1");
        assert_eq!(minify("\"é \""), "\"é \"");
    }
}
