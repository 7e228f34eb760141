//! `semver.valid(v)` of node-semver 4 (the reference depends on `semver ^4`, which
//! resolves to 4.3.6), the only check the reference makes on `SessionCreate.version`.

/// node-semver's `MAX_LENGTH`: longer strings are invalid before any parsing.
const MAX_LENGTH: usize = 256;

/// `Number.MAX_SAFE_INTEGER`: a larger major, minor or patch number is invalid.
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// True if node-semver@4's `valid(v)` (strict mode, the only mode the reference uses)
/// accepts `v`.
///
/// That is the regular expression
/// `^v?N\.N\.N(?:-(P(?:\.P)*))?(?:\+(B(?:\.B)*))?$` where `N` is `0|[1-9][0-9]*`, a
/// pre-release identifier `P` is `N` or `[0-9]*[A-Za-z-][0-9A-Za-z-]*`, a build identifier
/// `B` is `[0-9A-Za-z-]+`, plus three rules outside it: at most 256 characters, each of
/// major, minor and patch at most 2^53 − 1, and nothing else (no surrounding whitespace, no
/// `=` or `V` prefix, ASCII digits only). A leading lower-case `v` is accepted.
pub fn is_valid_semver(v: &str) -> bool {
    // The limit counts UTF-16 units; every valid string is ASCII, where that is bytes.
    if v.len() > MAX_LENGTH {
        return false;
    }
    let s = v.strip_prefix('v').unwrap_or(v);
    // The version core ends at the first `-` or `+`; neither occurs in it.
    let core_end = s.find(['-', '+']).unwrap_or(s.len());
    let (core, rest) = s.split_at(core_end);
    let mut parts = core.split('.');
    for _ in 0..3 {
        match parts.next() {
            Some(n) if is_numeric_identifier(n) && fits_safe_integer(n) => {}
            _ => return false,
        }
    }
    if parts.next().is_some() {
        return false;
    }
    // Pre-release, if any, runs to the first `+` (which no identifier contains).
    let (pre, build) = match rest.find('+') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    if let Some(pre) = pre.strip_prefix('-') {
        if !pre.split('.').all(is_prerelease_identifier) {
            return false;
        }
    } else if !pre.is_empty() {
        return false;
    }
    build.is_none_or(|b| b.split('.').all(is_build_identifier))
}

/// `0|[1-9]\d*` (`\d` is ASCII in JavaScript regular expressions without the `u` flag).
fn is_numeric_identifier(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty() && b.iter().all(u8::is_ascii_digit) && (b[0] != b'0' || b.len() == 1)
}

/// `+m[1] > MAX_SAFE_INTEGER` is invalid. `s` is a numeric identifier (no leading zero), so
/// more than 16 digits is past 2^53 − 1 (which has 16).
fn fits_safe_integer(s: &str) -> bool {
    s.len() <= 16 && s.parse::<u64>().is_ok_and(|n| n <= MAX_SAFE_INTEGER)
}

/// `0|[1-9]\d*|\d*[a-zA-Z-][a-zA-Z0-9-]*`: anything over `[0-9A-Za-z-]` that is not all
/// digits, or all digits without a leading zero.
fn is_prerelease_identifier(s: &str) -> bool {
    is_build_identifier(s) && (is_numeric_identifier(s) || !s.bytes().all(|b| b.is_ascii_digit()))
}

/// `[0-9A-Za-z-]+`.
fn is_build_identifier(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}
