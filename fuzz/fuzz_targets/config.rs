//! `Config::from_toml` on any text returns a value or an error, never panics.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tether_server::Config;

fuzz_target!(|text: &str| {
    let _ = Config::from_toml(text, Path::new("fuzz.toml"));
});
