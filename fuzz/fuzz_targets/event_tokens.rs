//! The event-server token-file parser never panics, and keeps only lines of at least
//! `MIN_TOKEN_LEN` UTF-16 units that contain no line break.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_server::dialects::event_server::{MIN_TOKEN_LEN, parse_tokens};

fuzz_target!(|text: &str| {
    for token in parse_tokens(text) {
        assert!(!token.contains(['\r', '\n']), "token {token:?} contains a line break");
        assert!(token.encode_utf16().count() >= MIN_TOKEN_LEN, "token {token:?} is too short");
        assert!(text.contains(token.as_str()), "token {token:?} is not in the input");
    }
});
