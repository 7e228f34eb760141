//! `decode_client_frame` on any UTF-8 text: never panics, and is deterministic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_proto::message::decode_client_frame;

fuzz_target!(|text: &str| {
    let first = decode_client_frame(text);
    if first.is_ok() {
        let again = decode_client_frame(text);
        assert_eq!(first, again, "decoding the same frame twice gave different results");
    }
});
