//! `json::minify` on valid JSON keeps its meaning: the result parses to an equal value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tether_proto::json::minify;

fuzz_target!(|text: &str| {
    let Ok(before) = serde_json::from_str::<Value>(text) else { return };
    let out = minify(text);
    let after: Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("minify({text:?}) = {out:?} is not JSON: {e}"));
    assert_eq!(before, after, "minify({text:?}) = {out:?} changed the value");
});
