//! `ChannelPattern::parse`: never panics; an accepted pattern is kept exactly as given and
//! matches channels exactly as the grammar says. The input is split at its first newline
//! into a pattern and a channel name to match it against.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_proto::{ChannelName, ChannelPattern};

fuzz_target!(|text: &str| {
    let (pattern, channel) = text.split_once('\n').unwrap_or((text, ""));
    let Ok(p) = ChannelPattern::parse(pattern) else { return };
    assert_eq!(p.as_str(), pattern);
    assert_eq!(ChannelPattern::parse(p.as_str()).as_ref(), Ok(&p));
    // Every accepted pattern matches some channel: its prefix, or its prefix plus a letter.
    let witness = ChannelName::parse(p.prefix())
        .or_else(|_| ChannelName::parse(&format!("{}x", p.prefix())))
        .unwrap_or_else(|e| panic!("no channel matches pattern {pattern:?}: {e}"));
    assert!(p.matches(&witness), "{pattern:?} does not match {witness:?}");
    if let Ok(c) = ChannelName::parse(channel) {
        let expected = match pattern.strip_suffix('*') {
            Some(prefix) => channel.starts_with(prefix),
            None => channel == pattern,
        };
        assert_eq!(p.matches(&c), expected, "{pattern:?} against {channel:?}");
    }
});
