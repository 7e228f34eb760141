//! The Jetstream decoders on any bytes: `decode_frame` (on UTF-8 input) and
//! `decode_fragments` never panic and are deterministic; every decoded fragment list
//! re-encodes (`encode_fragments`) to JSON that decodes to the same fragments; every
//! rejection reason fits a close frame through `close_reason`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_proto::jetstream::{
    ClientMessage, MAX_CLOSE_REASON, SyncFragment, WireError, close_reason, decode_fragments, decode_frame,
    encode_fragments, is_valid_semver,
};

/// `encode_fragments` then `decode_fragments` gives the fragments back.
fn round_trip(fragments: &[SyncFragment]) {
    let mut json = Vec::new();
    encode_fragments(fragments, &mut json);
    match decode_fragments(&json) {
        Ok(again) => assert_eq!(again, fragments, "re-encoded fragments decode differently"),
        Err(e) => panic!("re-encoded fragments do not decode: {e}\n{}", String::from_utf8_lossy(&json)),
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(fragments) = decode_fragments(data) {
        round_trip(&fragments);
    }
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = is_valid_semver(text);
    let first = decode_frame(text);
    assert_eq!(first, decode_frame(text), "decoding the same frame twice gave different results");
    let Ok(messages) = first else { return };
    for m in &messages {
        match m {
            Ok(ClientMessage::ScopeSync(sync)) => round_trip(&sync.fragments),
            Ok(_) => {}
            Err(rejected) => {
                let kind = rejected.type_name.clone();
                let reason = close_reason(&WireError { message: rejected.reason.clone(), kind });
                assert!(reason.len() <= MAX_CLOSE_REASON, "close reason of {} bytes", reason.len());
                assert!(
                    serde_json::from_str::<serde_json::Value>(&reason).is_ok(),
                    "close reason is not JSON"
                );
            }
        }
    }
});
