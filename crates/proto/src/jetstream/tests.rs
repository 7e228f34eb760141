//! Tests of the Jetstream codec against the reference: the captured traces of
//! seed-systems.md §1.4, the error messages of `lib/message/*.js`, and values checked by
//! running the reference's own code under node (node-semver 4.3.6's `valid`,
//! `JSON.stringify`, `Object.keys(JSON.parse(…))`).

use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{Value, json};

use super::tree::number_from_f64;
use super::*;

fn config() -> Config {
    // No regression files: a failure prints its shrunk input instead.
    Config { failure_persistence: None, ..Config::default() }
}

/// The root of the traced `Canvas` scope (the trace elides it as `744e1aca-…`).
const ROOT: &str = "744e1aca-5f0b-4c8e-9d1a-2b3c4d5e6f70";

fn uuid(s: &str) -> Uuid {
    Uuid::parse(s).unwrap()
}

/// Decodes a frame that must hold exactly one message.
fn one(text: &str) -> Result<ClientMessage, Rejected> {
    let mut messages = decode_frame(text).unwrap();
    assert_eq!(messages.len(), 1, "{text}");
    messages.pop().unwrap()
}

fn ok(text: &str) -> ClientMessage {
    one(text).unwrap_or_else(|r| panic!("{text}: rejected: {r:?}"))
}

fn rejected(text: &str) -> Rejected {
    match one(text) {
        Ok(m) => panic!("{text}: accepted as {m:?}"),
        Err(r) => r,
    }
}

fn reason(text: &str) -> String {
    rejected(text).reason
}

fn props(pairs: &[(&str, Value)]) -> Vec<(String, Value)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
}

fn encode(m: &ServerMessage<'_>) -> String {
    let mut out = Vec::new();
    m.encode(&mut out);
    String::from_utf8(out).unwrap()
}

/// A one-message server frame, as the trace shows them.
fn frame_of(m: &ServerMessage<'_>) -> String {
    let mut one = Vec::new();
    m.encode(&mut one);
    String::from_utf8(encode_frame(&[one])).unwrap()
}

fn fragments_json(fragments: &[SyncFragment]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_fragments(fragments, &mut out);
    out
}

// ---------------------------------------------------------------------------------------
// Decoding the traced client messages (seed-systems.md §1.4).

#[test]
fn trace_session_create() {
    assert_eq!(
        ok(r#"{"type":"SessionCreate","index":0,"version":"0.1.0","params":{}}"#),
        ClientMessage::SessionCreate { index: 0, version: "0.1.0".into(), params: serde_json::Map::new() }
    );
    // `params` may be omitted, and holds anything the application wants.
    let m =
        ok(r#"{"type":"SessionCreate","index":0,"version":"v1.2.3-rc.1+b","params":{"a":[1,{"b":null}]}}"#);
    let ClientMessage::SessionCreate { version, params, .. } = m else { panic!("{m:?}") };
    assert_eq!(version, "v1.2.3-rc.1+b");
    assert_eq!(Value::Object(params), json!({"a":[1,{"b":null}]}));
    let m = ok(r#"{"type":"SessionCreate","index":0,"version":"1.0.0"}"#);
    assert!(matches!(m, ClientMessage::SessionCreate { params, .. } if params.is_empty()));
}

#[test]
fn trace_scope_fetch() {
    assert_eq!(
        ok(r#"{"type":"ScopeFetch","index":1,"name":"Canvas","params":{}}"#),
        ClientMessage::ScopeFetch { index: 1, name: "Canvas".into(), params: serde_json::Map::new() }
    );
    // The trace's second fetch has no `params`.
    assert_eq!(
        ok(r#"{"type":"ScopeFetch","index":3,"name":"Nope"}"#),
        ClientMessage::ScopeFetch { index: 3, name: "Nope".into(), params: serde_json::Map::new() }
    );
}

#[test]
fn trace_scope_sync() {
    let text = format!(
        r#"{{"type":"ScopeSync","index":2,"scopeIndex":0,"atomic":false,"fragments":[
        {{"type":"change","uuid":"{ROOT}","clsName":"Canvas","properties":{{"shapes":["aaaaaaaa-0000-4000-8000-000000000001"]}}}},
        {{"type":"add","uuid":"AAAAAAAA-0000-4000-8000-000000000001","clsName":"Shape","properties":{{"x":10,"y":20,"width":100,"height":100,"color":255}}}},
        {{"type":"add","uuid":"aaaaaaaa-0000-4000-8000-000000000002","clsName":"Shape","properties":{{"x":"bad"}}}},
        {{"type":"change","uuid":"bbbbbbbb-0000-4000-8000-000000000009","clsName":"Shape","properties":{{"x":1}}}}]}}"#
    );
    let expected = ScopeSync {
        index: 2,
        scope_index: 0,
        atomic: Some(false),
        procedure: None,
        fragments: vec![
            SyncFragment {
                kind: FragmentKind::Change,
                uuid: uuid(ROOT),
                cls_name: "Canvas".into(),
                properties: props(&[("shapes", json!(["aaaaaaaa-0000-4000-8000-000000000001"]))]),
            },
            SyncFragment {
                kind: FragmentKind::Add,
                // Upper case in the trace: lower-cased, as the reference does.
                uuid: uuid("aaaaaaaa-0000-4000-8000-000000000001"),
                cls_name: "Shape".into(),
                properties: props(&[
                    ("x", json!(10)),
                    ("y", json!(20)),
                    ("width", json!(100)),
                    ("height", json!(100)),
                    ("color", json!(255)),
                ]),
            },
            SyncFragment {
                kind: FragmentKind::Add,
                uuid: uuid("aaaaaaaa-0000-4000-8000-000000000002"),
                cls_name: "Shape".into(),
                // Type errors are the engine's to find: the wire rules allow any scalar.
                properties: props(&[("x", json!("bad"))]),
            },
            SyncFragment {
                kind: FragmentKind::Change,
                uuid: uuid("bbbbbbbb-0000-4000-8000-000000000009"),
                cls_name: "Shape".into(),
                properties: props(&[("x", json!(1))]),
            },
        ],
    };
    assert_eq!(ok(&text), ClientMessage::ScopeSync(expected));
    assert_eq!(ok(&text).index(), 2);
}

#[test]
fn trace_ping() {
    assert_eq!(
        ok(r#"{"type":"Ping","index":0,"ack":3,"resendMissing":true}"#),
        ClientMessage::Ping { index: 0, ack: 3, resend_missing: true }
    );
    // `resendMissing` is `=== true`: anything else, or nothing, is false.
    for v in [r#","resendMissing":false"#, "", r#","resendMissing":1"#, r#","resendMissing":"true""#] {
        assert_eq!(
            ok(&format!(r#"{{"type":"Ping","index":0,"ack":3{v}}}"#)),
            ClientMessage::Ping { index: 0, ack: 3, resend_missing: false },
            "{v}"
        );
    }
}

#[test]
fn types_the_reference_parses_but_ignores() {
    assert_eq!(
        ok(r#"{"type":"Reply","index":4,"replyTo":3}"#),
        ClientMessage::Ignored { type_name: "Reply", index: 4 }
    );
    assert_eq!(
        ok(r#"{"type":"SessionCreateReply","index":0,"sessionToken":"t"}"#),
        ClientMessage::Ignored { type_name: "SessionCreateReply", index: 0 }
    );
    let state = format!(
        r#"{{"type":"ScopeState","index":2,"scopeIndex":0,"rootUUID":"any string","fragments":[{{"type":"change","uuid":"{ROOT}","clsName":"Canvas"}}]}}"#
    );
    assert_eq!(ok(&state), ClientMessage::Ignored { type_name: "ScopeState", index: 2 });
}

#[test]
fn atomic_and_procedure() {
    let sync =
        |extra: &str| format!(r#"{{"type":"ScopeSync","index":5,"scopeIndex":1,"fragments":[]{extra}}}"#);
    let decoded = |extra: &str| match ok(&sync(extra)) {
        ClientMessage::ScopeSync(s) => (s.atomic, s.procedure),
        other => panic!("{other:?}"),
    };
    assert_eq!(decoded(""), (None, None));
    assert_eq!(decoded(r#","atomic":true"#), (Some(true), None));
    assert_eq!(
        decoded(r#","atomic":true,"procedure":"ChatRoom.setName""#),
        (Some(true), Some("ChatRoom.setName".into()))
    );
    // Only the key's presence matters, not its value.
    assert_eq!(decoded(r#","atomic":false,"procedure":"A.b""#), (Some(false), Some("A.b".into())));
    // `split('.').length === 2`: one dot, either side may be empty.
    assert_eq!(decoded(r#","atomic":true,"procedure":".""#), (Some(true), Some(".".into())));
    assert_eq!(decoded(r#","atomic":true,"procedure":"A.""#), (Some(true), Some("A.".into())));

    let format_error = r#"Procedure must be of the format "ModelName.procedureName""#;
    for (extra, why) in [
        (r#","atomic":null"#, "Invalid atomic"),
        (r#","atomic":1"#, "Invalid atomic"),
        (r#","atomic":"true""#, "Invalid atomic"),
        (r#","procedure":"A.b""#, "Procedure requires to be atomic"),
        (r#","atomic":true,"procedure":null"#, "Invalid procedure"),
        (r#","atomic":true,"procedure":5"#, "Invalid procedure"),
        (r#","atomic":true,"procedure":"Ab""#, format_error),
        (r#","atomic":true,"procedure":"A.b.c""#, format_error),
        (r#","atomic":true,"procedure":"""#, format_error),
        // `atomic` is checked before `procedure`.
        (r#","atomic":null,"procedure":"A.b""#, "Invalid atomic"),
    ] {
        assert_eq!(reason(&sync(extra)), why, "{extra}");
    }
}

// ---------------------------------------------------------------------------------------
// Every rejection, with the reference's message and what could be read.

#[test]
fn rejections() {
    const NO_INDEX: &str = "Message requires to be reliably sent with an index";
    let u = "aaaaaaaa-0000-4000-8000-000000000001";
    let sync = |fragments: &str| {
        format!(r#"{{"type":"ScopeSync","index":7,"scopeIndex":0,"fragments":[{fragments}]}}"#)
    };
    let frag = |body: &str| sync(&format!("{{{body}}}"));
    let cases: Vec<(String, &str)> = vec![
        // Type.
        (r#"{"index":1}"#.into(), "Unrecognized message type"),
        (r#"{"type":5,"index":1}"#.into(), "Unrecognized message type"),
        (r#"{"type":"Nope","index":1}"#.into(), "Unrecognized message type"),
        (
            r#"{"type":"ScopeFetchReply","index":1,"replyTo":0,"scopeIndex":0}"#.into(),
            "Unrecognized message type",
        ),
        (
            r#"{"type":"ScopeSyncReply","index":1,"replyTo":0,"fragmentReplies":[]}"#.into(),
            "Unrecognized message type",
        ),
        (r#"{"type":"Abstract","index":1}"#.into(), "Unrecognized message type"),
        (r#"{"type":"ping","index":1,"ack":0}"#.into(), "Unrecognized message type"),
        // Index.
        (r#"{"type":"Ping","ack":0}"#.into(), NO_INDEX),
        (r#"{"type":"Ping","index":-1,"ack":0}"#.into(), NO_INDEX),
        (r#"{"type":"Ping","index":1.5,"ack":0}"#.into(), NO_INDEX),
        (r#"{"type":"Ping","index":"1","ack":0}"#.into(), NO_INDEX),
        (r#"{"type":"Ping","index":[1],"ack":0}"#.into(), NO_INDEX),
        (r#"{"type":"Ping","index":null,"ack":0}"#.into(), NO_INDEX),
        (r#"{"type":"Ping","index":true,"ack":0}"#.into(), NO_INDEX),
        (r#"{"type":"Ping","index":18446744073709551616,"ack":0}"#.into(), NO_INDEX),
        (r#"{"type":"Ping","index":1e300,"ack":0}"#.into(), NO_INDEX),
        // Per type.
        (r#"{"type":"Reply","index":1}"#.into(), "Invalid replyTo index specified"),
        (r#"{"type":"Reply","index":1,"replyTo":-2}"#.into(), "Invalid replyTo index specified"),
        (r#"{"type":"SessionCreate","index":0}"#.into(), "Requires version"),
        (r#"{"type":"SessionCreate","index":0,"version":1}"#.into(), "Requires version"),
        (r#"{"type":"SessionCreate","index":0,"version":"1.0"}"#.into(), "Requires valid version"),
        (r#"{"type":"SessionCreate","index":0,"version":" 1.0.0"}"#.into(), "Requires valid version"),
        (
            r#"{"type":"SessionCreate","index":0,"version":"1.0.0","params":[]}"#.into(),
            "Invalid params: must be an object, not an array",
        ),
        (
            r#"{"type":"SessionCreate","index":0,"version":"1.0.0","params":"x"}"#.into(),
            "Invalid params: must be an object, not a string",
        ),
        (r#"{"type":"SessionCreateReply","index":0}"#.into(), "Requires sessionToken or error"),
        (
            r#"{"type":"SessionCreateReply","index":0,"error":{"message":"x"}}"#.into(),
            "Requires sessionToken or error",
        ),
        (r#"{"type":"ScopeFetch","index":1}"#.into(), "Invalid name"),
        (r#"{"type":"ScopeFetch","index":1,"name":["Canvas"]}"#.into(), "Invalid name"),
        (
            r#"{"type":"ScopeFetch","index":1,"name":"C","params":true}"#.into(),
            "Invalid params: must be an object, not a boolean",
        ),
        (r#"{"type":"Ping","index":0}"#.into(), "Invalid ack"),
        (r#"{"type":"Ping","index":0,"ack":-1}"#.into(), "Invalid ack"),
        (
            r#"{"type":"ScopeState","index":1,"scopeIndex":0,"rootUUID":"r"}"#.into(),
            "SyncFragments not on `fragments`",
        ),
        (r#"{"type":"ScopeState","index":1,"rootUUID":"r","fragments":[]}"#.into(), "Invalid scopeIndex"),
        (r#"{"type":"ScopeState","index":1,"scopeIndex":0,"fragments":[]}"#.into(), "Invalid rootUUID"),
        // ScopeSync.
        (r#"{"type":"ScopeSync","index":1,"scopeIndex":0}"#.into(), "SyncFragments not on `fragments`"),
        (
            r#"{"type":"ScopeSync","index":1,"scopeIndex":0,"fragments":{}}"#.into(),
            "SyncFragments not on `fragments`",
        ),
        (r#"{"type":"ScopeSync","index":1,"fragments":[]}"#.into(), "Invalid scopeIndex"),
        (r#"{"type":"ScopeSync","index":1,"scopeIndex":-1,"fragments":[]}"#.into(), "Invalid scopeIndex"),
        // Fragments.
        (sync("null"), "Invalid type"),
        (sync("1"), "Invalid type"),
        (sync(r#""add""#), "Invalid type"),
        (sync("[]"), "Invalid type"),
        (frag(&format!(r#""uuid":"{u}","clsName":"S""#)), "Invalid type"),
        (frag(&format!(r#""type":"remove","uuid":"{u}","clsName":"S""#)), "Invalid type"),
        (frag(&format!(r#""type":"Add","uuid":"{u}","clsName":"S""#)), "Invalid type"),
        (frag(r#""type":"add","clsName":"S""#), "Requires uuid or modelObject"),
        (frag(r#""type":"add","uuid":5,"clsName":"S""#), "Requires uuid or modelObject"),
        (frag(&format!(r#""type":"add","uuid":"{u}""#)), "Requires clsName or modelObject"),
        (frag(&format!(r#""type":"add","uuid":"{u}","clsName":null"#)), "Requires clsName or modelObject"),
        (
            frag(&format!(r#""type":"add","uuid":"{u}","clsName":"S","properties":true"#)),
            "Requires properties",
        ),
        (
            frag(&format!(r#""type":"add","uuid":"{u}","clsName":"S","properties":"x""#)),
            "Requires properties",
        ),
        (frag(&format!(r#""type":"add","uuid":"{u}","clsName":"S","properties":1"#)), "Requires properties"),
        (
            frag(&format!(r#""type":"add","uuid":"{u}","clsName":"S","properties":[1]"#)),
            "Property key not a string",
        ),
        (
            frag(&format!(r#""type":"add","uuid":"{u}","clsName":"S","properties":{{"a":1,"k":{{}}}}"#)),
            "Property 'k' not a string, number, boolean, array, date, null",
        ),
        (
            frag(&format!(r#""type":"add","uuid":"{u}","clsName":"S","properties":{{"k":[{{}}]}}"#)),
            "Property 'k' not a string, number, boolean, array, date, null",
        ),
        (
            frag(&format!(r#""type":"add","uuid":"{u}","clsName":"S","properties":{{"k":[[1]]}}"#)),
            "Property 'k' cannot have arrays in an array",
        ),
        (
            frag(&format!(r#""type":"add","uuid":"{u}","clsName":"S","properties":{{"k":[1,"1"]}}"#)),
            "Property 'k' not all array value types match",
        ),
        (
            frag(&format!(r#""type":"add","uuid":"{u}","clsName":"S","properties":{{"k":[null,1]}}"#)),
            "Property 'k' not all array value types match",
        ),
        // Keys are checked in JavaScript's order: the index key "2" first.
        (
            frag(&format!(r#""type":"add","uuid":"{u}","clsName":"S","properties":{{"a":{{}},"2":[[1]]}}"#)),
            "Property '2' cannot have arrays in an array",
        ),
        // Tether's own rule: a fragment uuid is a UUID (the reference takes any string).
        (
            frag(r#""type":"add","uuid":"not-a-uuid","clsName":"S""#),
            "Fragment 0: Invalid uuid: must be a UUID (8-4-4-4-12 hex digits)",
        ),
        (
            sync(&format!(
                r#"{{"type":"add","uuid":"{u}","clsName":"S"}},{{"type":"add","uuid":"{{{u}}}","clsName":"S"}}"#
            )),
            "Fragment 1: Invalid uuid: must be a UUID (8-4-4-4-12 hex digits)",
        ),
    ];
    for (text, why) in &cases {
        assert_eq!(&reason(text), why, "{text}");
    }
}

#[test]
fn rejected_carries_what_could_be_read() {
    let r = rejected(r#"{"type":"ScopeSync","index":9,"scopeIndex":0,"fragments":[1,2,3]}"#);
    assert_eq!(
        r,
        Rejected {
            type_name: Some("ScopeSync".into()),
            index: Some(9),
            fragment_count: Some(3),
            reason: "Invalid type".into()
        }
    );
    let r = rejected(r#"{"type":"ScopeSync","index":"9","scopeIndex":0,"fragments":[]}"#);
    assert_eq!((r.type_name.as_deref(), r.index, r.fragment_count), (Some("ScopeSync"), None, Some(0)));
    let r = rejected(r#"{"type":"ScopeSync","index":9,"scopeIndex":0}"#);
    assert_eq!((r.index, r.fragment_count), (Some(9), None));
    // Only a ScopeSync has fragments to answer.
    let r = rejected(r#"{"type":"ScopeState","index":4,"fragments":[1]}"#);
    assert_eq!((r.type_name.as_deref(), r.index, r.fragment_count), (Some("ScopeState"), Some(4), None));
    let r = rejected(r#"{"type":"Fly","index":3}"#);
    assert_eq!(
        (r.type_name.as_deref(), r.index, r.reason.as_str()),
        (Some("Fly"), Some(3), "Unrecognized message type")
    );
    let r = rejected(r#"{"type":{},"index":3}"#);
    assert_eq!((r.type_name, r.index), (None, Some(3)));
}

#[test]
fn the_reference_checks_fragments_before_the_index() {
    // ScopeSync and ScopeState parse `fragments` before constructing the message, so a
    // message wrong in both reports the fragment, as the reference does.
    let r = rejected(r#"{"type":"ScopeSync","scopeIndex":0,"fragments":[{}]}"#);
    assert_eq!(r.reason, "Invalid type");
    // Tether's extra checks come after all of the reference's.
    let r = rejected(
        r#"{"type":"ScopeSync","scopeIndex":0,"fragments":[{"type":"add","uuid":"x","clsName":"S"}]}"#,
    );
    assert_eq!(r.reason, "Message requires to be reliably sent with an index");
    let r = rejected(
        r#"{"type":"ScopeSync","index":1,"scopeIndex":0,"atomic":true,"procedure":"x","fragments":[{"type":"add","uuid":"x","clsName":"S"}]}"#,
    );
    assert_eq!(r.reason, r#"Procedure must be of the format "ModelName.procedureName""#);
}

#[test]
fn integral_numbers_are_unsigned_integers() {
    // `robb.isUnsignedInt` tests `String(value)`: `1.0`, `1e2` and `-0` are integers.
    let ping = |index: &str| ok(&format!(r#"{{"type":"Ping","index":{index},"ack":{index}}}"#));
    assert_eq!(ping("1.0"), ClientMessage::Ping { index: 1, ack: 1, resend_missing: false });
    assert_eq!(ping("1e2"), ClientMessage::Ping { index: 100, ack: 100, resend_missing: false });
    assert_eq!(ping("-0"), ClientMessage::Ping { index: 0, ack: 0, resend_missing: false });
    assert_eq!(ping("-0.0"), ClientMessage::Ping { index: 0, ack: 0, resend_missing: false });
    assert_eq!(ping("18446744073709551615").index(), u64::MAX);
    // Exactly, where JavaScript would round.
    assert_eq!(ping("9007199254740993").index(), 9_007_199_254_740_993);
}

// ---------------------------------------------------------------------------------------
// Properties.

fn fragment_properties(properties_json: &str) -> Result<Vec<(String, Value)>, String> {
    let text = format!(
        r#"{{"type":"ScopeSync","index":1,"scopeIndex":0,"fragments":[{{"type":"change","uuid":"{ROOT}","clsName":"C","properties":{properties_json}}}]}}"#
    );
    match one(&text) {
        Ok(ClientMessage::ScopeSync(mut s)) => Ok(s.fragments.pop().unwrap().properties),
        Ok(other) => panic!("{other:?}"),
        Err(r) => Err(r.reason),
    }
}

#[test]
fn properties_in_javascript_order() {
    // node: Object.keys(JSON.parse(...)) gives [ '1', '2', 'b', 'a' ] and a: 8.
    let p = fragment_properties(r#"{"b":1,"2":2,"a":3,"1":4,"a":8}"#).unwrap();
    assert_eq!(p, props(&[("1", json!(4)), ("2", json!(2)), ("b", json!(1)), ("a", json!(8))]));
    // `01` and 2^32 − 1 are not array indices.
    let p = fragment_properties(r#"{"z":1,"01":2,"4294967295":3,"4294967294":4}"#).unwrap();
    let keys: Vec<&str> = p.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["4294967294", "z", "01", "4294967295"]);
}

#[test]
fn properties_values() {
    let p = fragment_properties(
        r#"{"s":"x","n":-1.5,"i":3,"b":false,"z":null,"a":[1,2.5],"e":[],"ns":[null,null],"ss":["a"],"f":1.0,"g":1e2}"#,
    )
    .unwrap();
    assert_eq!(
        p,
        props(&[
            ("s", json!("x")),
            ("n", json!(-1.5)),
            ("i", json!(3)),
            ("b", json!(false)),
            ("z", Value::Null),
            ("a", json!([1, 2.5])),
            ("e", json!([])),
            ("ns", json!([null, null])),
            ("ss", json!(["a"])),
            // What JavaScript holds (and `JSON.stringify` writes): 1 and 100.
            ("f", json!(1)),
            ("g", json!(100)),
        ])
    );
    // In an array, integers and floats are all "number".
    assert!(fragment_properties(r#"{"a":[1,2.5,-3]}"#).is_ok());
    // Absent, falsy or an empty array: no properties.
    for empty in ["null", "false", "0", r#""""#, "[]", "{}"] {
        assert_eq!(fragment_properties(empty), Ok(vec![]), "{empty}");
    }
    // `length` is a key like any other (lodash 2.4 would treat the object as array-like).
    assert_eq!(
        fragment_properties(r#"{"length":0,"x":1}"#),
        Ok(props(&[("length", json!(0)), ("x", json!(1))]))
    );
}

#[test]
fn duplicate_message_keys_keep_the_last_value() {
    assert_eq!(
        ok(r#"{"type":"Nope","index":"x","type":"Ping","ack":1,"index":2}"#),
        ClientMessage::Ping { index: 2, ack: 1, resend_missing: false }
    );
}

#[test]
fn unknown_keys_are_ignored() {
    // Including the reference's in-process `modelObject` option.
    let text = format!(
        r#"{{"type":"ScopeSync","index":1,"scopeIndex":0,"extra":[1],"fragments":[{{"type":"add","uuid":"{ROOT}","clsName":"C","modelObject":{{"uuid":"x"}},"more":1}}]}}"#
    );
    let ClientMessage::ScopeSync(s) = ok(&text) else { panic!() };
    assert_eq!(s.fragments[0].uuid, uuid(ROOT));
}

// ---------------------------------------------------------------------------------------
// Frames.

#[test]
fn arrays_are_sorted_by_index() {
    let text = r#"[
        {"type":"Ping","index":3,"ack":0},
        {"type":"Nope"},
        {"type":"Ping","index":1,"ack":1},
        {"type":"Nope","index":2},
        {"type":"Ping","index":1,"ack":2},
        {"type":"Ping","index":-1,"ack":0},
        {"type":"Ping","index":0,"ack":3}
    ]"#;
    let frame = Frame::decode(text).unwrap();
    assert!(frame.batch);
    let summary: Vec<(Option<u64>, Option<u64>)> = frame
        .messages
        .iter()
        .map(|m| match m {
            Ok(ClientMessage::Ping { index, ack, .. }) => (Some(*index), Some(*ack)),
            Ok(other) => panic!("{other:?}"),
            Err(r) => (r.index, None),
        })
        .collect();
    // Stable: the two index-1 pings keep their order; unreadable indices last, in order.
    assert_eq!(
        summary,
        [
            (Some(0), Some(3)),
            (Some(1), Some(1)),
            (Some(1), Some(2)),
            (Some(2), None),
            (Some(3), Some(0)),
            (None, None),
            (None, None)
        ]
    );
    let last_two: Vec<&str> =
        frame.messages[5..].iter().map(|m| m.as_ref().unwrap_err().reason.as_str()).collect();
    assert_eq!(last_two, ["Unrecognized message type", "Message requires to be reliably sent with an index"]);
}

#[test]
fn frame_shapes() {
    let single = Frame::decode(r#"{"type":"Ping","index":0,"ack":0}"#).unwrap();
    assert!(!single.batch);
    assert_eq!(single.messages.len(), 1);
    // A SessionCreate in an array is still a batch (the reference refuses it as a handshake).
    let wrapped = Frame::decode(r#"[{"type":"SessionCreate","index":0,"version":"1.0.0"}]"#).unwrap();
    assert!(wrapped.batch);
    assert!(wrapped.messages[0].is_ok());
    assert_eq!(decode_frame("[]"), Ok(vec![]));
    assert_eq!(decode_frame(" [ ] \n"), Ok(vec![]));
}

#[test]
fn entries_that_are_not_objects() {
    // `[null]` crashes the reference server (lodash's sortBy reads `null.index`); here it
    // is one rejected entry.
    let messages =
        decode_frame(r#"[null,0,false,"",1,"x",true,[],[{"type":"Ping","index":0,"ack":0}]]"#).unwrap();
    let reasons: Vec<&str> = messages.iter().map(|m| m.as_ref().unwrap_err().reason.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "No message(s) to parse",
            "No message(s) to parse",
            "No message(s) to parse",
            "No message(s) to parse",
            "Unrecognized message type",
            "Unrecognized message type",
            "Unrecognized message type",
            "A message must be an object, not an array",
            "A message must be an object, not an array",
        ]
    );
    for m in &messages {
        let r = m.as_ref().unwrap_err();
        assert_eq!((&r.type_name, r.index, r.fragment_count), (&None, None, None));
    }
}

#[test]
fn frame_errors() {
    for (text, kind) in [("null", "null"), ("0", "a number"), (r#""x""#, "a string"), ("true", "a boolean")] {
        assert_eq!(decode_frame(text), Err(FrameError::NotMessages(kind)), "{text}");
    }
    for text in
        ["", " ", "{", "[1,]", "{\"a\":1}x", "\u{feff}{}", r#"{"a":"\ud800"}"#, "[1e400]", "NaN", "{'a':1}"]
    {
        assert!(matches!(decode_frame(text), Err(FrameError::Json(_))), "{text:?}");
    }
    let e = decode_frame("[1,").unwrap_err();
    assert!(e.to_string().starts_with("not JSON: EOF while parsing"), "{e}");
    assert_eq!(FrameError::TooDeep.to_string(), "JSON nested deeper than 64 levels");
    assert_eq!(FrameError::TooManyMessages.to_string(), "more than 1024 messages in one frame");
}

#[test]
fn nesting_is_bounded() {
    // A message may nest up to the limit (its params are the application's).
    let nested = |levels: usize| {
        let inner = "[".repeat(levels) + &"]".repeat(levels);
        format!(r#"[{{"type":"ScopeFetch","index":1,"name":"n","params":{{"deep":{inner}}}}}]"#)
    };
    // frame array + message + params = 3 levels around the nested arrays.
    assert!(decode_frame(&nested(MAX_DEPTH - 3)).unwrap()[0].is_ok());
    assert_eq!(decode_frame(&nested(MAX_DEPTH - 2)), Err(FrameError::TooDeep));
    // Far past serde_json's own limit and any stack: refused early, no overflow.
    assert_eq!(decode_frame(&"[".repeat(1_000_000)), Err(FrameError::TooDeep));
    assert_eq!(decode_frame(&r#"{"a":"#.repeat(200_000)), Err(FrameError::TooDeep));
}

#[test]
fn message_and_fragment_bounds() {
    let ping = r#"{"type":"Ping","index":0,"ack":0}"#;
    let frame = |n: usize| format!("[{}]", vec![ping; n].join(","));
    assert_eq!(decode_frame(&frame(MAX_MESSAGES_PER_FRAME)).unwrap().len(), MAX_MESSAGES_PER_FRAME);
    assert_eq!(decode_frame(&frame(MAX_MESSAGES_PER_FRAME + 1)), Err(FrameError::TooManyMessages));
    // Only the top level is a list of messages.
    let nested = format!(
        r#"{{"type":"ScopeFetch","index":1,"name":"n","params":{{"a":[{}]}}}}"#,
        "0,".repeat(5000) + "0"
    );
    assert!(ok(&nested).index() == 1);

    let fragment = format!(r#"{{"type":"change","uuid":"{ROOT}","clsName":"C"}}"#);
    let sync = |n: usize| {
        format!(
            r#"{{"type":"ScopeSync","index":1,"scopeIndex":0,"fragments":[{}]}}"#,
            vec![fragment.as_str(); n].join(",")
        )
    };
    let ClientMessage::ScopeSync(s) = ok(&sync(MAX_FRAGMENTS_PER_MESSAGE)) else { panic!() };
    assert_eq!(s.fragments.len(), MAX_FRAGMENTS_PER_MESSAGE);
    let r = rejected(&sync(MAX_FRAGMENTS_PER_MESSAGE + 1));
    assert_eq!(r.fragment_count, Some(MAX_FRAGMENTS_PER_MESSAGE + 1));
    assert_eq!(r.index, Some(1));
    assert_eq!(r.reason, "Too many fragments: 10001 (at most 10000)");
}

#[test]
fn huge_strings() {
    let big = "é".repeat(1 << 19);
    let m = ok(&format!(r#"{{"type":"ScopeFetch","index":1,"name":"{big}"}}"#));
    assert!(matches!(m, ClientMessage::ScopeFetch { name, .. } if name == big));
    let r = rejected(&format!(r#"{{"type":"{big}","index":1}}"#));
    assert_eq!(r.type_name.as_deref(), Some(big.as_str()));
    let r = rejected(&format!(
        r#"{{"type":"ScopeSync","index":1,"scopeIndex":0,"fragments":[{{"type":"add","uuid":"{big}","clsName":"C"}}]}}"#
    ));
    assert!(r.reason.starts_with("Fragment 0: Invalid uuid"));
}

#[test]
fn escaped_strings_decode() {
    let m = ok(r#"{"type":"ScopeFetch","index":1,"name":"a\"b\\c\u00e9\ud83d\ude00\n"}"#);
    assert!(matches!(m, ClientMessage::ScopeFetch { name, .. } if name == "a\"b\\cé😀\n"));
    // Escaped keys are keys.
    assert_eq!(
        ok(r#"{"\u0074ype":"Ping","index":0,"\u0061ck":4}"#),
        ClientMessage::Ping { index: 0, ack: 4, resend_missing: false }
    );
}

#[test]
fn decode_fragments_reads_what_encode_fragments_writes() {
    let fragments = vec![
        SyncFragment {
            kind: FragmentKind::Change,
            uuid: uuid(ROOT),
            cls_name: "Canvas".into(),
            properties: props(&[("name", json!("Shapes Demo")), ("shapes", json!([]))]),
        },
        SyncFragment {
            kind: FragmentKind::Add,
            uuid: Uuid::from_bytes([0xab; 16]),
            cls_name: "S".into(),
            properties: vec![],
        },
    ];
    assert_eq!(decode_fragments(&fragments_json(&fragments)), Ok(fragments));
    // No bound for stored data.
    let many = vec![
        SyncFragment {
            kind: FragmentKind::Add,
            uuid: uuid(ROOT),
            cls_name: "S".into(),
            properties: vec![]
        };
        MAX_FRAGMENTS_PER_MESSAGE + 1
    ];
    assert_eq!(decode_fragments(&fragments_json(&many)).map(|f| f.len()), Ok(MAX_FRAGMENTS_PER_MESSAGE + 1));

    assert_eq!(decode_fragments(b"{}"), Err(FrameError::NotFragments("an object")));
    assert!(matches!(decode_fragments(b"[\xff]"), Err(FrameError::Json(_))));
    let bad = format!(
        r#"[{{"type":"add","uuid":"{ROOT}","clsName":"C"}},{{"type":"add","uuid":"x","clsName":"C"}}]"#
    );
    let e = decode_fragments(bad.as_bytes()).unwrap_err();
    assert!(matches!(&e, FrameError::Fragment { position: 1, .. }), "{e:?}");
    assert_eq!(e.to_string(), "fragment 1: Invalid uuid: must be a UUID (8-4-4-4-12 hex digits)");
    let e = decode_fragments(br#"[{"type":"move"}]"#).unwrap_err();
    assert_eq!(e.to_string(), "fragment 0: Invalid type");
}

// ---------------------------------------------------------------------------------------
// Encoding: byte for byte the trace's server frames.

#[test]
fn trace_session_create_reply() {
    let token = "tjmRkSx27V3HaAbCdEfGhIjKlMnOpQrStUvWxYz0123456789";
    assert_eq!(
        frame_of(&ServerMessage::SessionCreateReply { index: 0, session_token: Some(token), error: None }),
        format!(r#"[{{"type":"SessionCreateReply","index":0,"sessionToken":"{token}"}}]"#)
    );
    let denied = WireError { message: "Session creation denied".into(), kind: None };
    assert_eq!(
        frame_of(&ServerMessage::SessionCreateReply { index: 0, session_token: None, error: Some(&denied) }),
        r#"[{"type":"SessionCreateReply","index":0,"error":{"message":"Session creation denied"}}]"#
    );
}

#[test]
fn trace_scope_fetch_replies() {
    assert_eq!(
        frame_of(&ServerMessage::ScopeFetchReply {
            index: 1,
            reply_to: 1,
            scope_index: Some(0),
            error: None
        }),
        r#"[{"type":"ScopeFetchReply","index":1,"replyTo":1,"scopeIndex":0}]"#
    );
    let nope = WireError { message: "No such scope".into(), kind: None };
    assert_eq!(
        frame_of(&ServerMessage::ScopeFetchReply {
            index: 4,
            reply_to: 3,
            scope_index: None,
            error: Some(&nope)
        }),
        r#"[{"type":"ScopeFetchReply","index":4,"replyTo":3,"error":{"message":"No such scope"}}]"#
    );
}

#[test]
fn trace_scope_state() {
    let root = SyncFragment {
        kind: FragmentKind::Change,
        uuid: uuid(ROOT),
        cls_name: "Canvas".into(),
        properties: props(&[("name", json!("Shapes Demo")), ("shapes", json!([]))]),
    };
    let fragments = fragments_json(&[root]);
    assert_eq!(
        frame_of(&ServerMessage::ScopeState {
            index: 2,
            scope_index: 0,
            root_uuid: uuid(ROOT),
            fragments_json: &fragments
        }),
        format!(
            r#"[{{"type":"ScopeState","index":2,"scopeIndex":0,"rootUUID":"{ROOT}","fragments":[{{"type":"change","uuid":"{ROOT}","clsName":"Canvas","properties":{{"name":"Shapes Demo","shapes":[]}}}}]}}]"#
        )
    );
}

#[test]
fn trace_scope_sync_reply() {
    let replies = [
        None,
        None,
        Some(WireError { message: "Not valid type at 'x', should be Number".into(), kind: None }),
        Some(WireError { message: "ModelObject not found".into(), kind: None }),
    ];
    assert_eq!(
        frame_of(&ServerMessage::ScopeSyncReply { index: 3, reply_to: 2, fragment_replies: &replies }),
        r#"[{"type":"ScopeSyncReply","index":3,"replyTo":2,"fragmentReplies":[{},{},{"error":{"message":"Not valid type at 'x', should be Number"}},{"error":{"message":"ModelObject not found"}}]}]"#
    );
    let missing = [Some(WireError {
        message: "Scope at index 7 was not found".into(),
        kind: Some("scope-index-not-found".into()),
    })];
    assert_eq!(
        encode(&ServerMessage::ScopeSyncReply { index: 5, reply_to: 4, fragment_replies: &missing }),
        r#"{"type":"ScopeSyncReply","index":5,"replyTo":4,"fragmentReplies":[{"error":{"message":"Scope at index 7 was not found","type":"scope-index-not-found"}}]}"#
    );
    assert_eq!(
        encode(&ServerMessage::ScopeSyncReply { index: 5, reply_to: 4, fragment_replies: &[] }),
        r#"{"type":"ScopeSyncReply","index":5,"replyTo":4,"fragmentReplies":[]}"#
    );
}

#[test]
fn trace_scope_sync_broadcast() {
    let fragments = [
        SyncFragment {
            kind: FragmentKind::Change,
            uuid: uuid(ROOT),
            cls_name: "ChatRoom".into(),
            properties: props(&[("messages", json!(["aaaaaaaa-0000-4000-8000-000000000001"]))]),
        },
        SyncFragment {
            kind: FragmentKind::Add,
            uuid: uuid("aaaaaaaa-0000-4000-8000-000000000001"),
            cls_name: "Message".into(),
            properties: props(&[("text", json!("hi")), ("postedAt", json!(1_700_000_000.5))]),
        },
    ];
    let json = fragments_json(&fragments);
    assert_eq!(
        frame_of(&ServerMessage::ScopeSync { index: 3, scope_index: 0, fragments_json: &json }),
        format!(
            r#"[{{"type":"ScopeSync","index":3,"scopeIndex":0,"fragments":[{{"type":"change","uuid":"{ROOT}","clsName":"ChatRoom","properties":{{"messages":["aaaaaaaa-0000-4000-8000-000000000001"]}}}},{{"type":"add","uuid":"aaaaaaaa-0000-4000-8000-000000000001","clsName":"Message","properties":{{"text":"hi","postedAt":1700000000.5}}}}]}}]"#
        )
    );
    // The quirk of the trace: everything failed, the others still get an empty sync.
    assert_eq!(
        encode(&ServerMessage::ScopeSync { index: 4, scope_index: 0, fragments_json: &fragments_json(&[]) }),
        r#"{"type":"ScopeSync","index":4,"scopeIndex":0,"fragments":[]}"#
    );
}

#[test]
fn trace_server_ping() {
    assert_eq!(
        frame_of(&ServerMessage::Ping { index: 0, ack: 2, resend_missing: true }),
        r#"[{"type":"Ping","index":0,"ack":2,"resendMissing":true}]"#
    );
    assert_eq!(
        encode(&ServerMessage::Ping { index: 0, ack: u64::MAX, resend_missing: false }),
        r#"{"type":"Ping","index":0,"ack":18446744073709551615,"resendMissing":false}"#
    );
}

#[test]
fn encode_appends_and_frames_join() {
    let mut out = b"[".to_vec();
    ServerMessage::Ping { index: 0, ack: 4, resend_missing: true }.encode(&mut out);
    assert_eq!(out, br#"[{"type":"Ping","index":0,"ack":4,"resendMissing":true}"#);

    let a = encode(&ServerMessage::Ping { index: 0, ack: 4, resend_missing: true }).into_bytes();
    let b =
        encode(&ServerMessage::ScopeFetchReply { index: 1, reply_to: 1, scope_index: Some(0), error: None })
            .into_bytes();
    assert_eq!(
        String::from_utf8(encode_frame(&[a, b])).unwrap(),
        r#"[{"type":"Ping","index":0,"ack":4,"resendMissing":true},{"type":"ScopeFetchReply","index":1,"replyTo":1,"scopeIndex":0}]"#
    );
    assert_eq!(encode_frame(&[]), b"[]");
}

#[test]
fn errors_follow_jsonify() {
    // `Errors.jsonify`: `type` only when truthy; `sessionToken` likewise.
    let e = WireError { message: "m".into(), kind: Some(String::new()) };
    assert_eq!(
        encode(&ServerMessage::SessionCreateReply { index: 0, session_token: Some(""), error: Some(&e) }),
        r#"{"type":"SessionCreateReply","index":0,"error":{"message":"m"}}"#
    );
}

#[test]
fn strings_are_escaped_as_json_stringify_does() {
    // node: JSON.stringify("\b\f\n\r\t\"\\/\u0001\u001f\u007f\u2028é😀<>&\u0000")
    let mut out = Vec::new();
    encode::push_string(&mut out, "\u{8}\u{c}\n\r\t\"\\/\u{1}\u{1f}\u{7f}\u{2028}é😀<>&\u{0}");
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "\"\\b\\f\\n\\r\\t\\\"\\\\/\\u0001\\u001f\u{7f}\u{2028}é😀<>&\\u0000\""
    );
}

#[test]
fn numbers_are_written_as_javascript_does() {
    // node: JSON.stringify(x) for each.
    let cases: [(f64, &str); 16] = [
        (1e21, "1e+21"),
        (1e-7, "1e-7"),
        (1e-6, "0.000001"),
        (1.234_567_890_123_456_8e20, "123456789012345680000"),
        (-0.0, "0"),
        (0.1, "0.1"),
        (1.0 / 3.0, "0.3333333333333333"),
        (5e-324, "5e-324"),
        (f64::MAX, "1.7976931348623157e+308"),
        (9_007_199_254_740_992.0, "9007199254740992"),
        (-1.5e-10, "-1.5e-10"),
        (0.1 + 0.2, "0.30000000000000004"),
        (123.456, "123.456"),
        (1e300, "1e+300"),
        (-2.5e-7, "-2.5e-7"),
        (100.0, "100"),
    ];
    for (x, js) in cases {
        let mut out = Vec::new();
        encode::push_js_f64(&mut out, x);
        assert_eq!(String::from_utf8(out).unwrap(), js, "{x:e}");
    }
    let mut out = Vec::new();
    encode::push_value(&mut out, &json!({"b":[1,-2,2.5,null,true,"s"],"a":u64::MAX,"c":i64::MIN}));
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"{"a":18446744073709551615,"b":[1,-2,2.5,null,true,"s"],"c":-9223372036854775808}"#
    );
}

// ---------------------------------------------------------------------------------------
// Close reasons.

#[test]
fn close_reasons() {
    let unrecognized = WireError {
        message: "Session token unrecognized".into(),
        kind: Some("session-token-unrecognized".into()),
    };
    // The trace's close reason, unchanged: it fits.
    assert_eq!(
        close_reason(&unrecognized),
        r#"{"message":"Session token unrecognized","type":"session-token-unrecognized"}"#
    );
    // The reference's handshake error is 129 bytes: cut to fit, type intact.
    let handshake = WireError {
        message: "Unrecognized handshake, should send SessionCreate message as first and only message".into(),
        kind: Some("unrecognized-handshake".into()),
    };
    let reason = close_reason(&handshake);
    assert_eq!(reason.len(), MAX_CLOSE_REASON);
    assert_eq!(
        reason,
        r#"{"message":"Unrecognized handshake, should send SessionCreate message as first and onl…","type":"unrecognized-handshake"}"#
    );
    assert_eq!(close_reason(&WireError { message: String::new(), kind: None }), r#"{"message":""}"#);
}

/// Checks one close reason: at most 123 bytes, valid JSON, the message a prefix of the
/// original (marked with `…` when cut), the type kept when it can be.
fn check_close_reason(message: &str, kind: Option<&str>) {
    let e = WireError { message: message.to_owned(), kind: kind.map(str::to_owned) };
    let reason = close_reason(&e);
    assert!(reason.len() <= MAX_CLOSE_REASON, "{} bytes: {reason}", reason.len());
    let v: Value = serde_json::from_str(&reason).unwrap();
    let got = v["message"].as_str().unwrap();
    let kind = kind.filter(|k| !k.is_empty());
    let mut full = Vec::new();
    full.extend_from_slice(br#"{"message":"#);
    encode::push_string(&mut full, message);
    if let Some(k) = kind {
        full.extend_from_slice(br#","type":"#);
        encode::push_string(&mut full, k);
    }
    full.push(b'}');
    if full.len() <= MAX_CLOSE_REASON {
        assert_eq!(reason.as_bytes(), full, "a reason that fits is not cut");
        return;
    }
    let cut = got.strip_suffix('…').unwrap_or_else(|| panic!("cut without a mark: {reason}"));
    assert!(message.starts_with(cut), "{cut:?} is not a prefix of {message:?}");
    let escaped_len = |s: &str| {
        let mut out = Vec::new();
        encode::push_string(&mut out, s);
        out.len()
    };
    // `{"message":"…","type":` (24 bytes) + the type + `}` at most 123.
    let fits_whole = |k: &str| 24 + escaped_len(k) < MAX_CLOSE_REASON;
    match kind {
        Some(k) if fits_whole(k) => assert_eq!(v["type"], k),
        Some(k) => {
            let t = v["type"].as_str().unwrap();
            assert!(k.starts_with(t.strip_suffix('…').unwrap_or(t)), "{t:?}");
        }
        None => assert!(v.get("type").is_none()),
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn close_reason_fits(
        message in "(\\PC|[\u{0}-\u{1f}\"\\\\]|é|€|😀){0,80}",
        kind in proptest::option::of("[a-z-]{0,40}"),
    ) {
        check_close_reason(&message, kind.as_deref());
    }

    #[test]
    fn close_reason_fits_any_type(message in "\\PC{0,200}", kind in "(\\PC|\u{1}|😀){0,200}") {
        check_close_reason(&message, Some(&kind));
    }
}

// ---------------------------------------------------------------------------------------
// UUIDs.

proptest! {
    #![proptest_config(config())]

    #[test]
    fn uuid_display_parse_round_trip(bytes in any::<[u8; 16]>()) {
        let u = Uuid::from_bytes(bytes);
        let s = u.to_string();
        prop_assert_eq!(s.len(), 36);
        prop_assert!(s.bytes().all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        prop_assert_eq!(Uuid::parse(&s), Some(u));
        // Upper case (and any mix) normalises to the same UUID.
        prop_assert_eq!(Uuid::parse(&s.to_uppercase()), Some(u));
        prop_assert_eq!(Uuid::parse(&s.to_uppercase()).unwrap().to_string(), s);
    }

    #[test]
    fn uuid_parse_is_exactly_the_hyphenated_form(s in "([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})|[0-9a-gA-G{}-]{30,40}|\\PC{0,40}") {
        let model = regex::Regex::new(
            "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
        ).unwrap();
        let parsed = Uuid::parse(&s);
        prop_assert_eq!(parsed.is_some(), model.is_match(&s));
        if let Some(u) = parsed {
            prop_assert_eq!(u.to_string(), s.to_lowercase());
        }
    }
}

#[test]
fn uuid_rejects() {
    for s in [
        "",
        "aaaaaaaa-0000-4000-8000-00000000000g",
        "aaaaaaaa-0000-4000-8000-0000000000001",
        "aaaaaaaa-0000-4000-8000-00000000001",
        "aaaaaaaa00000-4000-8000-000000000001",
        "{aaaaaaaa-0000-4000-8000-00000000001}",
        "aaaaaaaa0000400080000000000000000001",
        "urn:uuid:aaaaaaaa-0000-4000-8000-0000",
        "aaaaaaaa-0000-4000-8000-0000000000é",
        "aaaaaaaa-0000-4000-8000-00000000000 ",
        "+aaaaaaa-0000-4000-8000-000000000001",
    ] {
        assert_eq!(Uuid::parse(s), None, "{s}");
    }
}

// ---------------------------------------------------------------------------------------
// Fragments round trip through the encoder and both decoders.

/// The order `JSON.parse` gives keys: array indices first, ascending (a model written
/// apart from `tree.rs`).
fn js_order(mut props: Vec<(String, Value)>) -> Vec<(String, Value)> {
    let index = |k: &str| -> Option<u64> {
        let canonical = k == "0" || (!k.starts_with('0') && !k.is_empty() && k.len() <= 10);
        let n = k.parse::<u64>().ok().filter(|_| canonical && k.bytes().all(|b| b.is_ascii_digit()))?;
        (n < u64::from(u32::MAX)).then_some(n)
    };
    props.sort_by_key(|(k, _)| index(k).map_or((1, 0), |n| (0, n)));
    props
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        // Any finite float, stored as the decoder stores it (integral ones as integers).
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| Value::Number(number_from_f64(f))),
        (-1000i32..1000, -30i32..30)
            .prop_map(|(m, e)| Value::Number(number_from_f64(f64::from(m) * 10f64.powi(e)))),
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        "(\\PC|[\u{0}-\u{1f}\"\\\\/]|\u{2028}){0,12}".prop_map(Value::String),
    ]
}

fn property_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => scalar(),
        1 => prop::collection::vec(number(), 0..4).prop_map(Value::Array),
        1 => prop::collection::vec("\\PC{0,4}".prop_map(Value::String), 0..4).prop_map(Value::Array),
        1 => prop::collection::vec(any::<bool>().prop_map(Value::Bool), 0..4).prop_map(Value::Array),
        1 => (0usize..3).prop_map(|n| Value::Array(vec![Value::Null; n])),
    ]
}

fn fragment() -> impl Strategy<Value = SyncFragment> {
    (
        any::<bool>(),
        any::<[u8; 16]>(),
        "\\PC{0,10}",
        prop::collection::btree_map(
            "[a-zA-Z_$][a-zA-Z0-9_]{0,6}|[0-9]{1,3}|\\PC{0,5}",
            property_value(),
            0..6,
        ),
    )
        .prop_map(|(add, bytes, cls_name, props)| SyncFragment {
            kind: if add { FragmentKind::Add } else { FragmentKind::Change },
            uuid: Uuid::from_bytes(bytes),
            cls_name,
            properties: js_order(props.into_iter().collect()),
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fragments_round_trip(fragments in prop::collection::vec(fragment(), 0..5)) {
        let json = fragments_json(&fragments);
        prop_assert_eq!(decode_fragments(&json), Ok(fragments.clone()));
        // The same fragments in a client's ScopeSync.
        let mut text = br#"{"type":"ScopeSync","index":1,"scopeIndex":2,"atomic":true,"fragments":"#.to_vec();
        text.extend_from_slice(&json);
        text.push(b'}');
        let text = String::from_utf8(text).unwrap();
        let decoded = decode_frame(&text).unwrap();
        prop_assert_eq!(
            decoded,
            vec![Ok(ClientMessage::ScopeSync(ScopeSync {
                index: 1,
                scope_index: 2,
                fragments,
                atomic: Some(true),
                procedure: None,
            }))]
        );
        // And it is JSON a JavaScript client reads (serde_json agrees on every value).
        let v: Value = serde_json::from_slice(&json).unwrap();
        prop_assert!(v.is_array());
    }

    #[test]
    fn server_messages_are_json(
        index in any::<u64>(),
        reply_to in any::<u64>(),
        token in proptest::option::of("\\PC{0,20}"),
        message in "(\\PC|[\u{0}-\u{1f}\"\\\\]){0,20}",
        kind in proptest::option::of("\\PC{0,10}"),
        replies in prop::collection::vec(any::<bool>(), 0..4),
        fragments in prop::collection::vec(fragment(), 0..3),
    ) {
        let error = WireError { message: message.clone(), kind: kind.clone() };
        let replies: Vec<Option<WireError>> = replies.into_iter().map(|r| r.then(|| error.clone())).collect();
        let json = fragments_json(&fragments);
        let root = Uuid::from_bytes([7; 16]);
        let messages = [
            ServerMessage::SessionCreateReply { index, session_token: token.as_deref(), error: Some(&error) },
            ServerMessage::ScopeFetchReply { index, reply_to, scope_index: Some(reply_to), error: None },
            ServerMessage::ScopeFetchReply { index, reply_to, scope_index: None, error: Some(&error) },
            ServerMessage::ScopeState { index, scope_index: reply_to, root_uuid: root, fragments_json: &json },
            ServerMessage::ScopeSync { index, scope_index: reply_to, fragments_json: &json },
            ServerMessage::ScopeSyncReply { index, reply_to, fragment_replies: &replies },
            ServerMessage::Ping { index, ack: reply_to, resend_missing: index % 2 == 0 },
        ];
        let encoded: Vec<Vec<u8>> = messages.iter().map(|m| { let mut v = Vec::new(); m.encode(&mut v); v }).collect();
        let frame: Value = serde_json::from_slice(&encode_frame(&encoded)).unwrap();
        let frame = frame.as_array().unwrap();
        prop_assert_eq!(frame.len(), messages.len());
        for (m, v) in messages.iter().zip(frame) {
            prop_assert_eq!(v["type"].as_str(), Some(m.type_name()));
            prop_assert_eq!(v["index"].as_u64(), Some(index));
        }
        prop_assert_eq!(&frame[0]["error"]["message"], &Value::String(message));
        prop_assert_eq!(frame[0]["error"].get("type").and_then(Value::as_str), kind.as_deref().filter(|k| !k.is_empty()));
        prop_assert_eq!(&frame[3]["rootUUID"], &Value::String(root.to_string()));
        prop_assert_eq!(frame[5]["fragmentReplies"].as_array().map(Vec::len), Some(replies.len()));
    }

    /// No input panics, and decoding is deterministic.
    #[test]
    fn any_text_decodes_without_panicking(text in "\\PC{0,64}|[\\[\\]{}\":,0-9a-zA-Z.+-]{0,64}") {
        let first = decode_frame(&text);
        prop_assert_eq!(first, decode_frame(&text));
    }

    /// Mutations of a valid frame: every result is Ok or a FrameError, never a panic.
    #[test]
    fn mutated_frames_decode_without_panicking(cut in 0usize..400, insert in "[\\[\\]{}\":,0-9.e-]{0,3}") {
        let base = format!(
            r#"[{{"type":"ScopeSync","index":2,"scopeIndex":0,"atomic":false,"fragments":[{{"type":"change","uuid":"{ROOT}","clsName":"Canvas","properties":{{"shapes":["aaaaaaaa-0000-4000-8000-000000000001"],"x":1.5}}}}]}},{{"type":"Ping","index":0,"ack":3,"resendMissing":true}}]"#
        );
        let cut = cut.min(base.len());
        if base.is_char_boundary(cut) {
            let text = format!("{}{insert}{}", &base[..cut], &base[cut..]);
            let _ = decode_frame(&text);
        }
    }
}

// ---------------------------------------------------------------------------------------
// node-semver@4 `valid()`.

/// Each checked with `require("semver").valid(v) !== null` under node 20, semver 4.3.6
/// (the version `semver ^4` resolves to, and the one bundled in the reference's install).
const SEMVER_TABLE: &[(&str, bool)] = &[
    ("0.1.0", true),
    ("1.0.0", true),
    ("1.2.3", true),
    ("v1.2.3", true),
    ("V1.2.3", false),
    ("=1.2.3", false),
    ("vv1.2.3", false),
    (" 1.2.3", false),
    ("1.2.3 ", false),
    ("1.2.3\n", false),
    ("1.2", false),
    ("1", false),
    ("1.2.3.4", false),
    ("01.2.3", false),
    ("1.02.3", false),
    ("1.2.03", false),
    ("0.0.0", true),
    ("1.2.3-0", true),
    ("1.2.3-00", false),
    ("1.2.3-01", false),
    ("1.2.3-0a", true),
    ("1.2.3-a", true),
    ("1.2.3-alpha.1", true),
    ("1.2.3-alpha.01", false),
    ("1.2.3--", true),
    ("1.2.3-", false),
    ("1.2.3-a..b", false),
    ("1.2.3-a.", false),
    ("1.2.3-a_b", false),
    ("1.2.3+b", true),
    ("1.2.3+01", true),
    ("1.2.3+", false),
    ("1.2.3+a.b-c.001", true),
    ("1.2.3+a+b", false),
    ("1.2.3-rc.1+build.5", true),
    ("1.2.3+build-rc.1", true),
    ("1.2.3-é", false),
    ("１.2.3", false),
    ("9007199254740991.0.0", true),
    ("9007199254740992.0.0", false),
    ("0.9007199254740991.0", true),
    ("0.0.9007199254740992", false),
    ("99999999999999999999.0.0", false),
    ("1.2.3-99999999999999999999", true),
    ("1.2.3alpha", false),
    ("1.2.x", false),
    ("*", false),
    ("", false),
    ("v", false),
    ("1.2.3-a.b.c.d.e.f", true),
    ("0.0.0-0+0", true),
    ("1.2.3-\u{0}", false),
];

#[test]
fn semver_matches_node_semver_4() {
    for &(v, valid) in SEMVER_TABLE {
        assert_eq!(is_valid_semver(v), valid, "{v:?}");
    }
    // MAX_LENGTH is 256: checked with node as well.
    let at = format!("1.2.3-{}", "a".repeat(250));
    assert_eq!(at.len(), 256);
    assert!(is_valid_semver(&at));
    assert!(!is_valid_semver(&format!("{at}a")));
}

/// node-semver 4.3.6's `re[FULL]`, assembled from its source as it is there (with `\d`
/// spelled `[0-9]`: JavaScript's `\d` is ASCII, the regex crate's is Unicode).
fn node_semver_full() -> regex::Regex {
    let numeric = "0|[1-9][0-9]*";
    let non_numeric = "[0-9]*[a-zA-Z-][a-zA-Z0-9-]*";
    let main = format!(r"({numeric})\.({numeric})\.({numeric})");
    let pre_id = format!("(?:{numeric}|{non_numeric})");
    let pre = format!(r"(?:-({pre_id}(?:\.{pre_id})*))");
    let build_id = "[0-9A-Za-z-]+";
    let build = format!(r"(?:\+({build_id}(?:\.{build_id})*))");
    regex::Regex::new(&format!("^v?{main}{pre}?{build}?$")).unwrap()
}

/// `valid()`: length, the regex, then the safe-integer bound on major, minor and patch.
fn node_semver_valid(re: &regex::Regex, v: &str) -> bool {
    if v.encode_utf16().count() > 256 {
        return false;
    }
    let Some(m) = re.captures(v) else { return false };
    (1..=3).all(|i| m[i].parse::<f64>().is_ok_and(|n| n <= 9_007_199_254_740_991.0))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn semver_matches_the_node_semver_regex(
        v in "v?[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,17}(-[0-9a-zA-Z.-]{0,8})?(\\+[0-9a-zA-Z.+-]{0,8})?|[0-9v.+a-z-]{0,14}|\\PC{0,20}"
    ) {
        let re = node_semver_full();
        prop_assert_eq!(is_valid_semver(&v), node_semver_valid(&re, &v), "{:?}", v);
    }
}
