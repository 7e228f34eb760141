//! `ChannelName::parse`: never panics, and an accepted name is kept exactly as given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_proto::ChannelName;

fuzz_target!(|text: &str| {
    if let Ok(name) = ChannelName::parse(text) {
        assert_eq!(name.as_str(), text);
    }
});
