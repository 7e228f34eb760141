//! Deserializing `Tags` from arbitrary JSON text never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_proto::Tags;

fuzz_target!(|text: &str| {
    let _ = serde_json::from_str::<Tags>(text);
});
