//! `Filter::parse`: never panics, and an accepted filter's canonical form (its `Display`)
//! parses back to the same filter.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_proto::Filter;

fuzz_target!(|text: &str| {
    if let Ok(f) = Filter::parse(text) {
        let canonical = f.to_string();
        assert_eq!(
            Filter::parse(&canonical),
            Ok(f),
            "canonical form {canonical:?} of {text:?} does not parse back to the same filter"
        );
    }
});
