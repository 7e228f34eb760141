//! Property tests for the grammars of `docs/grammar.md`: filters, channel names, tags and
//! channel patterns.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tether_proto::channel::{ChannelError, ChannelName, MAX_CHANNEL_LEN, MAX_NAMESPACE_LEN, is_channel_byte};
use tether_proto::filter::{
    Filter, FilterError, MAX_FILTER_LEN, MAX_IN_VALUES, MAX_PREDICATES, MAX_VALUE_LEN,
};
use tether_proto::pattern::{ChannelPattern, MAX_PATTERN_LEN, PatternError, any_matches};
use tether_proto::tags::{MAX_TAG_KEY_LEN, MAX_TAG_VALUE_LEN, MAX_TAGS, Tags, is_valid_key};

/// A filter as the reference model sees it: key → set of allowed values.
type Ast = BTreeMap<String, BTreeSet<String>>;

fn config() -> Config {
    // No regression files: a failure prints its shrunk input instead.
    Config { failure_persistence: None, ..Config::default() }
}

// ---------------------------------------------------------------------------------------
// Reference model of the filter grammar and canonical form, written independently of
// `filter.rs`.

const KEY_BYTES: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.";
const BARE_BYTES: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.:@/+";

fn ref_is_bare(v: &str) -> bool {
    !v.is_empty() && v.bytes().all(|b| BARE_BYTES.contains(&b))
}

fn ref_quote(v: &str) -> String {
    let mut out = String::from("\"");
    for c in v.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn ref_value(v: &str) -> String {
    if ref_is_bare(v) { v.to_owned() } else { ref_quote(v) }
}

/// The canonical form, straight from the spec.
fn ref_canonical(ast: &Ast) -> String {
    ast.iter()
        .map(|(k, vs)| {
            if vs.len() == 1 {
                format!("{k}={}", ref_value(vs.first().unwrap()))
            } else {
                let vs: Vec<String> = vs.iter().map(|v| ref_value(v)).collect();
                format!("{k} in ({})", vs.join(","))
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn ref_matches(ast: &Ast, tags: &BTreeMap<String, String>) -> bool {
    ast.iter().all(|(k, allowed)| {
        let allowed: HashSet<&str> = allowed.iter().map(String::as_str).collect();
        tags.get(k).is_some_and(|v| allowed.contains(v.as_str()))
    })
}

fn as_predicates(ast: &Ast) -> Vec<(String, Vec<String>)> {
    ast.iter().map(|(k, vs)| (k.clone(), vs.iter().cloned().collect())).collect()
}

fn predicates_of(f: &Filter) -> Vec<(String, Vec<String>)> {
    f.predicates().iter().map(|p| (p.key.clone(), p.values.clone())).collect()
}

fn hash_of(f: &Filter) -> u64 {
    let mut h = DefaultHasher::new();
    f.hash(&mut h);
    h.finish()
}

/// A tiny deterministic generator for the layout choices of [`surface`].
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
    fn ws(&mut self, min: usize) -> String {
        " ".repeat(min + self.below(3) * self.below(2))
    }
}

/// Writes `ast` the way a person might: any predicate and value order, random spaces,
/// repeated values, `in (v)` for single values, quotes around values that need none.
/// Falls back to a tight layout if the loose one would be over the length limit.
fn surface(ast: &Ast, seed: u64) -> String {
    let mut rng = Rng(seed | 1);
    let mut preds: Vec<(&String, &BTreeSet<String>)> = ast.iter().collect();
    rng.shuffle(&mut preds);
    let mut loose = rng.ws(0);
    let mut tight = String::new();
    for (i, (k, vs)) in preds.iter().enumerate() {
        if i > 0 {
            loose += &format!("{},{}", rng.ws(0), rng.ws(0));
            tight.push(',');
        }
        let mut vals: Vec<&String> = vs.iter().collect();
        rng.shuffle(&mut vals);
        tight += k;
        if let [v] = vals.as_slice() {
            tight += &format!("={}", ref_value(v));
        } else {
            let rendered: Vec<String> = vals.iter().map(|v| ref_value(v)).collect();
            tight += &format!(" in ({})", rendered.join(","));
        }
        if vals.len() < MAX_IN_VALUES && rng.below(3) == 0 {
            vals.push(vals[rng.below(vals.len())]);
        }
        let written: Vec<String> =
            vals.iter().map(|v| if rng.below(4) == 0 { ref_quote(v) } else { ref_value(v) }).collect();
        loose += k;
        if written.len() == 1 && rng.below(4) != 0 {
            loose += &format!("{}={}{}", rng.ws(0), rng.ws(0), written[0]);
        } else {
            let sep = format!("{},{}", rng.ws(0), rng.ws(0));
            loose +=
                &format!("{}in{}({}{}{})", rng.ws(1), rng.ws(0), rng.ws(0), written.join(&sep), rng.ws(0));
        }
    }
    loose += &rng.ws(0);
    if loose.len() <= MAX_FILTER_LEN { loose } else { tight }
}

// ---------------------------------------------------------------------------------------
// Strategies.

fn key_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => bytes_string(b"abcdefghijklmnopqrstuvwxyz", 1..=3),
        1 => Just("in".to_owned()),
        1 => Just("IN".to_owned()),
        2 => bytes_string(KEY_BYTES, 1..=MAX_TAG_KEY_LEN),
        1 => long_string(KEY_BYTES, MAX_TAG_KEY_LEN..=MAX_TAG_KEY_LEN),
    ]
}

fn value_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => bytes_string(BARE_BYTES, 1..=12),
        1 => Just(String::new()),
        1 => Just("in".to_owned()),
        2 => bytes_string(b"abxyz \"\\,()=", 0..=8),
        2 => prop::collection::vec(any::<char>(), 0..8).prop_map(String::from_iter),
    ]
}

fn long_value_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        long_string(BARE_BYTES, MAX_VALUE_LEN - 8..=MAX_VALUE_LEN),
        long_string(b"ab \"\\", MAX_VALUE_LEN - 8..=MAX_VALUE_LEN),
        Just("é".repeat(MAX_VALUE_LEN / 2)),
    ]
}

fn ast_strategy() -> impl Strategy<Value = Ast> {
    let general = prop::collection::btree_map(
        key_strategy(),
        prop::collection::btree_set(value_strategy(), 1..=4),
        1..=10,
    );
    // The largest shapes the limits allow: 16 predicates, one list of up to 64 values,
    // values of up to 256 bytes.
    let many_preds = prop::collection::btree_map(
        key_strategy(),
        prop::collection::btree_set(value_strategy(), 1..=2),
        MAX_PREDICATES,
    );
    let long_list = prop::collection::btree_map(
        key_strategy(),
        prop::collection::btree_set(
            prop_oneof![9 => bytes_string(b"abcdefghij0123456789", 2..=4), 1 => value_strategy()],
            MAX_IN_VALUES - 16..=MAX_IN_VALUES,
        ),
        1..=2,
    );
    let long_values = prop::collection::btree_map(
        key_strategy(),
        prop::collection::btree_set(prop_oneof![value_strategy(), long_value_strategy()], 1..=2),
        1..=3,
    );
    prop_oneof![4 => general, 1 => many_preds, 1 => long_list, 1 => long_values]
        .prop_filter("canonical form within the limit", |ast| ref_canonical(ast).len() <= MAX_FILTER_LEN)
}

/// Filters and tag sets over a small shared alphabet, so that matches happen.
fn match_case_strategy() -> impl Strategy<Value = (Ast, BTreeMap<String, String>)> {
    let key = prop::sample::select(vec!["a", "b", "c", "in"]).prop_map(str::to_owned);
    let value = prop::sample::select(vec!["x", "y", "", "z w", "\"q\\", "X"]).prop_map(str::to_owned);
    (
        prop::collection::btree_map(key.clone(), prop::collection::btree_set(value.clone(), 1..=3), 1..=3),
        prop::collection::btree_map(key, value, 0..=4),
        prop::collection::vec((any::<bool>(), any::<prop::sample::Index>()), 3),
    )
        .prop_map(|(ast, mut tags, picks)| {
            // Make some predicates hold by copying one of their values into the tags.
            for ((k, vs), (pick, idx)) in ast.iter().zip(picks) {
                if pick {
                    let vs: Vec<String> = vs.iter().cloned().collect();
                    tags.insert(k.clone(), idx.get(&vs).clone());
                }
            }
            (ast, tags)
        })
}

/// Strings built from grammar tokens, so they get deep into the parser.
fn grammarish_strategy() -> impl Strategy<Value = String> {
    let token = prop::sample::select(vec![
        "a", "b", "key", "in", "in ", " in ", " in (", " ", "  ", "=", ",", "(", ")", "\"", "\\", "\\\"",
        "\\\\", "x", "é", "\t", "\n", "-", ".", ":", "@", "/", "+", "!", "\u{0}",
    ]);
    prop::collection::vec(token, 0..40).prop_map(|t| t.concat())
}

fn check_parse_result(s: &str) -> Result<(), TestCaseError> {
    match Filter::parse(s) {
        Ok(f) => {
            let canon = f.to_string();
            prop_assert!(canon.len() <= MAX_FILTER_LEN);
            prop_assert!(s.len() <= MAX_FILTER_LEN);
            prop_assert!(!f.predicates().is_empty() && f.predicates().len() <= MAX_PREDICATES);
            let again = Filter::parse(&canon);
            prop_assert_eq!(again.as_ref(), Ok(&f));
            prop_assert_eq!(again.unwrap().to_string(), canon);
        }
        Err(e) => {
            let msg = e.to_string();
            prop_assert!(msg.len() <= 200, "message too long: {}", msg);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Filters.

proptest! {
    #![proptest_config(config())]

    /// (1) Any filter AST, written in any equivalent way, parses to the same Filter,
    /// whose Display is the canonical form; and the canonical form parses back to it.
    #[test]
    fn filter_round_trip(ast in ast_strategy(), seed in any::<u64>()) {
        let written = surface(&ast, seed);
        let f = Filter::parse(&written)
            .map_err(|e| TestCaseError::fail(format!("{written:?}: {e}")))?;
        prop_assert_eq!(predicates_of(&f), as_predicates(&ast));
        let canon = f.to_string();
        prop_assert_eq!(&canon, &ref_canonical(&ast));
        prop_assert_eq!(Filter::parse(&canon), Ok(f.clone()));

        // Another way of writing the same filter gives an equal filter and hash.
        let other = Filter::parse(&surface(&ast, seed.rotate_left(17) ^ 0x9e37)).unwrap();
        prop_assert_eq!(&other, &f);
        prop_assert_eq!(hash_of(&other), hash_of(&f));
        prop_assert_eq!(other.to_string(), canon);
    }

    /// (2) The canonical form is idempotent.
    #[test]
    fn canonical_is_idempotent(ast in ast_strategy(), seed in any::<u64>()) {
        let once = Filter::parse(&surface(&ast, seed)).unwrap().to_string();
        let twice = Filter::parse(&once).unwrap().to_string();
        prop_assert_eq!(twice, once);
    }

    /// (2) Idempotence also holds for whatever odd inputs happen to parse.
    #[test]
    fn canonical_is_idempotent_on_odd_inputs(s in grammarish_strategy()) {
        if let Ok(f) = Filter::parse(&s) {
            let once = f.to_string();
            prop_assert_eq!(Filter::parse(&once).unwrap().to_string(), once);
        }
    }

    /// (3) `matches` agrees with the reference model.
    #[test]
    fn matches_agrees_with_model((ast, tags) in match_case_strategy(), seed in any::<u64>()) {
        let f = Filter::parse(&surface(&ast, seed)).unwrap();
        let t = Tags::from_pairs(tags.clone()).unwrap();
        prop_assert_eq!(f.matches(&t), ref_matches(&ast, &tags));
    }

    /// (4) Arbitrary input never panics; when it parses, its canonical form parses back
    /// to the same filter, and error messages stay short.
    #[test]
    fn parse_never_panics_any_string(s in any::<String>()) {
        check_parse_result(&s)?;
    }

    /// (4) Same, over the grammar's own alphabet.
    #[test]
    fn parse_never_panics_grammar_alphabet(s in "[a-z=,() \"\\\\in]{0,64}") {
        check_parse_result(&s)?;
    }

    /// (4) Same, over sequences of grammar tokens.
    #[test]
    fn parse_never_panics_tokens(s in grammarish_strategy()) {
        check_parse_result(&s)?;
    }

    /// (4) Same, for valid filters with one byte-level edit (kept valid UTF-8), and around
    /// the length limit.
    #[test]
    fn parse_never_panics_mutations(
        ast in ast_strategy(),
        seed in any::<u64>(),
        at in any::<prop::sample::Index>(),
        edit in 0..3u8,
        c in prop::sample::select(vec!['"', '\\', ',', '(', ')', ' ', '=', 'i', 'é', '\0']),
        pad in 0..40usize,
    ) {
        let mut s = surface(&ast, seed);
        let mut i = at.index(s.len() + 1);
        while !s.is_char_boundary(i) {
            i -= 1;
        }
        match edit {
            0 => s.insert(i, c),
            1 if i < s.len() => { s.remove(i); }
            _ => s.push_str(&" ".repeat(pad + MAX_FILTER_LEN.saturating_sub(s.len()))),
        }
        check_parse_result(&s)?;
        if s.len() > MAX_FILTER_LEN {
            prop_assert_eq!(Filter::parse(&s), Err(FilterError::TooLong { len: s.len() }));
        }
    }

    /// Filter keys follow the tag key rule exactly.
    #[test]
    fn filter_keys_are_tag_keys(k in "[A-Za-z0-9_.!#é-]{0,70}") {
        let parsed = Filter::parse(&format!("{k}=v"));
        prop_assert_eq!(parsed.is_ok(), is_valid_key(&k), "{:?}", parsed);
    }

    /// Values up to the limit round-trip, longer ones are rejected, quoted or not.
    #[test]
    fn value_length_limit(n in MAX_VALUE_LEN - 2..=MAX_VALUE_LEN + 2, quote in any::<bool>()) {
        let v = "v".repeat(n);
        let s = if quote { format!("k=\"{v}\"") } else { format!("k={v}") };
        let r = Filter::parse(&s);
        if n <= MAX_VALUE_LEN {
            let f = r.unwrap();
            prop_assert_eq!(&f.predicates()[0].values[0], &v);
        } else {
            prop_assert_eq!(r, Err(FilterError::ValueTooLong { pos: 2 }));
        }
    }
}

/// The matching strategy really produces both outcomes (so property 3 is not vacuous).
#[test]
fn match_cases_cover_both_outcomes() {
    let hits = Cell::new(0u32);
    let misses = Cell::new(0u32);
    let mut runner = TestRunner::new(config());
    runner
        .run(&match_case_strategy(), |(ast, tags)| {
            if ref_matches(&ast, &tags) {
                hits.set(hits.get() + 1);
            } else {
                misses.set(misses.get() + 1);
            }
            Ok(())
        })
        .unwrap();
    assert!(hits.get() >= 20 && misses.get() >= 20, "hits {hits:?}, misses {misses:?}");
}

/// The reference model's alphabets agree with the grammar's.
#[test]
fn reference_alphabets() {
    for b in 0..=u8::MAX {
        let one = [b];
        let s = std::str::from_utf8(&one).unwrap_or("\u{0}");
        assert_eq!(KEY_BYTES.contains(&b), is_valid_key(s), "key byte {b}");
        assert_eq!(CHANNEL_BYTES.contains(&b), is_channel_byte(b), "channel byte {b}");
        let bare = Filter::parse(&format!("k={s}")).is_ok_and(|f| f.to_string().len() == 3);
        assert_eq!(BARE_BYTES.contains(&b), bare, "bare byte {b}");
    }
}

// ---------------------------------------------------------------------------------------
// Channel names.

const CHANNEL_BYTES: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.:@/=+!~$,;";
const NAMESPACE_BYTES: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";

fn bytes_string(alphabet: &'static [u8], len: std::ops::RangeInclusive<usize>) -> BoxedStrategy<String> {
    prop::collection::vec(prop::sample::select(alphabet), len)
        .prop_map(|b| String::from_utf8(b).unwrap())
        .boxed()
}

/// Long strings over `alphabet`, cheaply: a short random pattern repeated to a length in
/// `len`.
fn long_string(alphabet: &'static [u8], len: std::ops::RangeInclusive<usize>) -> BoxedStrategy<String> {
    (bytes_string(alphabet, 1..=5), len)
        .prop_map(|(pattern, n)| {
            let mut s = pattern.repeat(n);
            s.truncate(n);
            s
        })
        .boxed()
}

/// Valid channel names: with a namespace (the rest may contain more `:`), or without
/// one (then there is no `:` at all).
fn channel_strategy() -> impl Strategy<Value = String> {
    let no_colon: Vec<u8> = CHANNEL_BYTES.iter().copied().filter(|&b| b != b':').collect();
    let no_colon: &'static [u8] = no_colon.leak();
    let namespaced = bytes_string(NAMESPACE_BYTES, 1..=MAX_NAMESPACE_LEN).prop_flat_map(|ns| {
        let room = MAX_CHANNEL_LEN - ns.len() - 1;
        bytes_string(CHANNEL_BYTES, 1..=room).prop_map(move |rest| format!("{ns}:{rest}"))
    });
    prop_oneof![namespaced, bytes_string(no_colon, 1..=MAX_CHANNEL_LEN), bytes_string(no_colon, 1..=8),]
}

/// The channel grammar written out directly.
fn ref_channel_ok(s: &str) -> bool {
    let ok_len = !s.is_empty() && s.len() <= MAX_CHANNEL_LEN;
    let ok_bytes = s.bytes().all(|b| CHANNEL_BYTES.contains(&b));
    let ok_ns = match s.split_once(':') {
        None => true,
        Some((ns, rest)) => {
            !ns.is_empty()
                && ns.len() <= MAX_NAMESPACE_LEN
                && ns.bytes().all(|b| NAMESPACE_BYTES.contains(&b))
                && !rest.is_empty()
        }
    };
    ok_len && ok_bytes && ok_ns
}

proptest! {
    #![proptest_config(config())]

    /// (5) Every well-shaped name parses to itself, and namespace + local name
    /// recombine to it.
    #[test]
    fn channel_valid_names_parse(s in channel_strategy()) {
        let c = ChannelName::parse(&s).map_err(|e| TestCaseError::fail(format!("{s:?}: {e}")))?;
        prop_assert_eq!(c.as_str(), s.as_str());
        prop_assert_eq!(c.to_string(), s.as_str());
        let recombined = match c.namespace() {
            Some(ns) => format!("{ns}:{}", c.local_name()),
            None => c.local_name().to_owned(),
        };
        prop_assert_eq!(&recombined, &s);
        prop_assert_eq!(c.namespace().is_some(), s.contains(':'));
        prop_assert!(!c.local_name().is_empty());
    }

    /// (5) A byte outside the alphabet anywhere makes the name invalid, and the error
    /// points at it.
    #[test]
    fn channel_bad_byte_rejected(
        s in channel_strategy(),
        at in any::<prop::sample::Index>(),
        c in any::<char>().prop_filter("outside the alphabet", |c| {
            !c.is_ascii() || !CHANNEL_BYTES.contains(&(*c as u8))
        }),
    ) {
        let mut bad = s.clone();
        let i = at.index(s.len() + 1);
        bad.insert(i, c);
        let r = ChannelName::parse(&bad);
        if bad.len() > MAX_CHANNEL_LEN {
            prop_assert_eq!(r, Err(ChannelError::TooLong(bad.len())));
        } else {
            prop_assert_eq!(r, Err(ChannelError::InvalidChar { pos: i }));
        }
    }

    /// (5) The parser accepts exactly what the grammar describes.
    #[test]
    fn channel_agrees_with_model(
        s in prop_oneof![
            "[a-z:.é -]{0,12}",
            channel_strategy(),
            bytes_string(CHANNEL_BYTES, 0..=MAX_CHANNEL_LEN + 2),
        ]
    ) {
        let r = ChannelName::parse(&s);
        prop_assert_eq!(r.is_ok(), ref_channel_ok(&s), "{:?}: {:?}", s, r);
        prop_assert_eq!(ChannelName::validate(&s).is_ok(), r.is_ok());
    }
}

// ---------------------------------------------------------------------------------------
// Tags.

fn tag_key_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,3}",
        bytes_string(KEY_BYTES, 1..=MAX_TAG_KEY_LEN),
        long_string(KEY_BYTES, MAX_TAG_KEY_LEN..=MAX_TAG_KEY_LEN),
    ]
}

fn tag_value_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9]{0,8}",
        // At most 64 chars of at most 4 bytes: always within the 256-byte limit.
        prop::collection::vec(any::<char>(), 0..=64).prop_map(String::from_iter),
        long_string(b"abc \"\\", MAX_TAG_VALUE_LEN - 4..=MAX_TAG_VALUE_LEN),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// (6) Valid pairs in any order build a Tags that round-trips through JSON and finds
    /// every key.
    #[test]
    fn tags_round_trip(
        pairs in prop::collection::btree_map(tag_key_strategy(), tag_value_strategy(), 0..=MAX_TAGS)
            .prop_flat_map(|m| Just(m.into_iter().collect::<Vec<_>>()).prop_shuffle()),
        missing in tag_key_strategy(),
    ) {
        let t = Tags::from_pairs(pairs.clone()).unwrap();
        prop_assert_eq!(t.len(), pairs.len());
        prop_assert_eq!(t.is_empty(), pairs.is_empty());
        for (k, v) in &pairs {
            prop_assert!(v.len() <= MAX_TAG_VALUE_LEN);
            prop_assert_eq!(t.get(k), Some(v.as_str()));
        }
        if !pairs.iter().any(|(k, _)| *k == missing) {
            prop_assert_eq!(t.get(&missing), None);
        }
        let sorted: BTreeMap<String, String> = pairs.iter().cloned().collect();
        let iterated: Vec<(&str, &str)> = t.iter().collect();
        let expected: Vec<(&str, &str)> =
            sorted.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        prop_assert_eq!(iterated, expected);

        let json = serde_json::to_string(&t).unwrap();
        let back: Tags = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(&back, &t);
        let as_map: BTreeMap<String, String> = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(as_map, sorted);
    }

    /// (6) A filter built from a tag set's own pairs matches it; changing one value
    /// makes it fail.
    #[test]
    fn tags_match_their_own_filter(
        pairs in prop::collection::btree_map("[a-z]{1,6}", "[a-z0-9 \"\\\\,()=é]{0,12}", 1..=MAX_PREDICATES),
        extra in prop::collection::btree_map("[A-Z]{1,6}", "[a-z]{0,4}", 0..4),
    ) {
        let ast: Ast = pairs.iter().map(|(k, v)| (k.clone(), BTreeSet::from([v.clone()]))).collect();
        let canon = ref_canonical(&ast);
        prop_assume!(canon.len() <= MAX_FILTER_LEN);
        let f = Filter::parse(&canon).unwrap();
        let mut all = pairs.clone();
        all.extend(extra);
        prop_assert!(f.matches(&Tags::from_pairs(all.clone()).unwrap()));
        let (k, v) = pairs.iter().next().unwrap();
        all.insert(k.clone(), format!("{v}!"));
        prop_assert!(!f.matches(&Tags::from_pairs(all.clone()).unwrap()));
        all.remove(k);
        prop_assert!(!f.matches(&Tags::from_pairs(all).unwrap()));
    }
}

// ---------------------------------------------------------------------------------------
// Channel patterns.

/// Valid channel names, and one-byte edits of them (often valid too), to match patterns
/// against.
fn nearby_channel_strategy(base: String) -> impl Strategy<Value = String> {
    let b = base.clone();
    prop_oneof![
        Just(base.clone()),
        channel_strategy(),
        (0..=base.len()).prop_map(move |n| b[..n].to_owned()),
        prop::sample::select(CHANNEL_BYTES).prop_map(move |c| format!("{base}{}", c as char)),
    ]
    .prop_filter("a valid channel name", |s| ChannelName::validate(s).is_ok())
}

/// Valid patterns: channel names, `*`, and char-boundary prefixes of channel names
/// followed by `*`.
fn pattern_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => channel_strategy(),
        1 => Just("*".to_owned()),
        3 => (channel_strategy(), any::<prop::sample::Index>()).prop_map(|(c, at)| {
            let mut i = at.index(c.len() + 1);
            while !c.is_char_boundary(i) {
                i -= 1;
            }
            format!("{}*", &c[..i])
        }),
    ]
}

/// The pattern grammar written out directly.
fn ref_pattern_ok(s: &str) -> bool {
    match s.strip_suffix('*') {
        None => ref_channel_ok(s),
        Some(prefix) => {
            prefix.len() <= MAX_CHANNEL_LEN
                && prefix.bytes().all(|b| CHANNEL_BYTES.contains(&b))
                && prefix.split_once(':').is_none_or(|(ns, _)| {
                    !ns.is_empty()
                        && ns.len() <= MAX_NAMESPACE_LEN
                        && ns.bytes().all(|b| NAMESPACE_BYTES.contains(&b))
                })
        }
    }
}

/// What a pattern matches, written out directly.
fn ref_pattern_matches(pattern: &str, channel: &str) -> bool {
    match pattern.strip_suffix('*') {
        None => pattern == channel,
        Some(prefix) => channel.starts_with(prefix),
    }
}

/// Strings near the pattern grammar (valid or not, around the length limit), with
/// channel names to match them against.
fn pattern_case_strategy() -> impl Strategy<Value = (String, Vec<String>)> {
    (
        prop_oneof![
            "[a-c:*.é -]{0,10}",
            pattern_strategy(),
            pattern_strategy().prop_map(|s| format!("{s}*")),
            bytes_string(b"abc:*.", 0..=MAX_PATTERN_LEN + 2),
            long_string(CHANNEL_BYTES, MAX_CHANNEL_LEN - 2..=MAX_PATTERN_LEN + 2)
                .prop_map(|s| format!("{}*", &s[..s.len() - 1])),
        ],
        prop::collection::vec(prop_oneof![channel_strategy(), "[a-c][a-c:.]{0,8}"], 1..8),
    )
}

/// The pattern cases really produce accepted and rejected patterns, and matches and
/// misses (so `pattern_agrees_with_model` is not vacuous).
#[test]
fn pattern_cases_cover_all_outcomes() {
    let counts = Cell::new([0u32; 4]);
    let mut runner = TestRunner::new(config());
    runner
        .run(&pattern_case_strategy(), |(s, channels)| {
            let mut n = counts.get();
            if ref_pattern_ok(&s) {
                n[0] += 1;
                for c in channels.iter().filter(|c| ref_channel_ok(c)) {
                    n[if ref_pattern_matches(&s, c) { 2 } else { 3 }] += 1;
                }
            } else {
                n[1] += 1;
            }
            counts.set(n);
            Ok(())
        })
        .unwrap();
    let [ok, rejected, hits, misses] = counts.get();
    assert!(ok >= 20 && rejected >= 20 && hits >= 20 && misses >= 20, "{:?}", counts.get());
}

proptest! {
    #![proptest_config(config())]

    /// (7) A valid pattern is kept exactly as written, through `as_str`, `Display`, a
    /// second parse and JSON.
    #[test]
    fn pattern_round_trip(s in pattern_strategy()) {
        let p = ChannelPattern::parse(&s).map_err(|e| TestCaseError::fail(format!("{s:?}: {e}")))?;
        prop_assert_eq!(p.as_str(), s.as_str());
        prop_assert_eq!(p.to_string(), s.as_str());
        prop_assert_eq!(p.is_wildcard(), s.ends_with('*'));
        prop_assert_eq!(ChannelPattern::parse(p.as_str()), Ok(p.clone()));
        let json = serde_json::to_string(&p).unwrap();
        prop_assert_eq!(serde_json::from_str::<ChannelPattern>(&json).unwrap(), p);
    }

    /// (7) Every valid channel name is an exact pattern that matches itself and nothing
    /// else.
    #[test]
    fn pattern_exact_matches_only_itself(
        (c, other) in channel_strategy().prop_flat_map(|c| (Just(c.clone()), nearby_channel_strategy(c))),
    ) {
        let p = ChannelPattern::parse(&c).map_err(|e| TestCaseError::fail(format!("{c:?}: {e}")))?;
        prop_assert!(!p.is_wildcard());
        prop_assert_eq!(p.prefix(), c.as_str());
        let name = ChannelName::parse(&c).unwrap();
        prop_assert!(p.matches(&name));
        prop_assert_eq!(&ChannelPattern::exact(&name), &p);
        prop_assert_eq!(p.matches(&ChannelName::parse(&other).unwrap()), other == c);
    }

    /// (7) For any valid channel name and any char-boundary prefix of it, the prefix
    /// followed by `*` is a valid pattern that matches the name; and it matches another
    /// name exactly when that name starts with the prefix.
    #[test]
    fn pattern_prefix_matches(
        (c, other) in channel_strategy().prop_flat_map(|c| (Just(c.clone()), nearby_channel_strategy(c))),
        at in any::<prop::sample::Index>(),
    ) {
        let mut i = at.index(c.len() + 1);
        while !c.is_char_boundary(i) {
            i -= 1;
        }
        let prefix = &c[..i];
        let s = format!("{prefix}*");
        let p = ChannelPattern::parse(&s).map_err(|e| TestCaseError::fail(format!("{s:?}: {e}")))?;
        prop_assert!(p.is_wildcard());
        prop_assert_eq!(p.prefix(), prefix);
        prop_assert!(p.matches(&ChannelName::parse(&c).unwrap()));
        prop_assert_eq!(p.matches(&ChannelName::parse(&other).unwrap()), other.starts_with(prefix));
    }

    /// (7) A `*` anywhere but at the very end is rejected, and the error points at the
    /// first one.
    #[test]
    fn pattern_misplaced_star_rejected(
        before in prop_oneof!["[a-z:*]{0,6}", any::<String>(), pattern_strategy()],
        after in prop_oneof!["[a-z:*]{1,6}", any::<String>().prop_filter("non-empty", |s| !s.is_empty())],
    ) {
        let s = format!("{before}*{after}");
        let first = s.find('*').unwrap();
        let r = ChannelPattern::parse(&s);
        let limit = if s.ends_with('*') { MAX_PATTERN_LEN } else { MAX_CHANNEL_LEN };
        if s.len() > limit {
            prop_assert_eq!(r, Err(PatternError::TooLong { len: s.len() }));
        } else {
            prop_assert_eq!(r, Err(PatternError::MisplacedWildcard { pos: first }));
        }
    }

    /// (7) `*` matches every valid channel name.
    #[test]
    fn pattern_star_matches_everything(c in channel_strategy()) {
        let all = ChannelPattern::parse("*").unwrap();
        let name = ChannelName::parse(&c).unwrap();
        prop_assert!(all.matches(&name));
        let other = ChannelPattern::parse("zz:none").unwrap();
        prop_assert!(any_matches(&[other.clone(), all], &name));
        prop_assert_eq!(any_matches(&[other], &name), c == "zz:none");
    }

    /// (7) The parser accepts exactly what the grammar describes, matching agrees with
    /// the model, and every accepted pattern matches at least one channel.
    #[test]
    fn pattern_agrees_with_model((s, channels) in pattern_case_strategy()) {
        let r = ChannelPattern::parse(&s);
        prop_assert_eq!(r.is_ok(), ref_pattern_ok(&s), "{:?}: {:?}", s, r);
        match r {
            Ok(p) => {
                for c in channels.iter().filter_map(|c| ChannelName::parse(c).ok()) {
                    prop_assert_eq!(p.matches(&c), ref_pattern_matches(&s, c.as_str()), "{} vs {}", s, c);
                }
                let witness = ChannelName::parse(p.prefix())
                    .or_else(|_| ChannelName::parse(&format!("{}x", p.prefix())))
                    .map_err(|e| TestCaseError::fail(format!("no channel matches {s:?}: {e}")))?;
                prop_assert!(p.matches(&witness));
            }
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(msg.len() <= 120, "message too long: {}", msg);
            }
        }
    }
}
