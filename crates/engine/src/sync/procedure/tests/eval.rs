//! Evaluating every expression form against a scope and a changeset, and every way it can
//! fail (with the reference's messages).

use serde_json::{Map, Value, json};
use tether_proto::jetstream::SyncFragment;

use super::{chat_room, chat_schema, params};
use crate::sync::ScopeState;
use crate::sync::procedure::eval::{Env, js_number, js_string};
use crate::sync::procedure::expr::parse;
use crate::sync::tests::{NODE_TOML, add, change, schema, scope, u, us};

fn cases() -> Vec<(String, Vec<(String, Value)>)> {
    let table = |kv: &[(&str, Value)]| kv.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
    vec![
        ("statusValue".to_owned(), table(&[("0", json!("OPEN")), ("1", json!("CLOSED"))])),
        (
            "keys".to_owned(),
            table(&[
                ("1.5", json!("one and a half")),
                ("true", json!("yes")),
                ("null", json!("nil")),
                ("undefined", json!("undef")),
                ("a,b", json!("joined")),
            ]),
        ),
    ]
}

fn eval_with(
    sc: &ScopeState,
    params: &Map<String, Value>,
    fragments: &[SyncFragment],
    src: &str,
) -> Result<Option<Value>, String> {
    let e = parse(src).unwrap_or_else(|e| panic!("{src}: {e}"));
    let cases = cases();
    Env::new(sc, "TestScope", params, fragments, &cases).eval(&e)
}

fn ev(sc: &ScopeState, fragments: &[SyncFragment], src: &str) -> Result<Option<Value>, String> {
    eval_with(sc, &params(), fragments, src)
}

/// The value, which must be defined.
fn val(sc: &ScopeState, fragments: &[SyncFragment], src: &str) -> Value {
    ev(sc, fragments, src)
        .unwrap_or_else(|e| panic!("{src}: {e}"))
        .unwrap_or_else(|| panic!("{src}: undefined"))
}

fn err(sc: &ScopeState, fragments: &[SyncFragment], src: &str) -> String {
    ev(sc, fragments, src).expect_err(src)
}

/// A new message u(10) by u(2), appended.
fn post() -> Vec<SyncFragment> {
    vec![
        change(u(0), "ChatRoom", &[("messages", json!([us(3), us(10)])), ("name", json!("New"))]),
        add(
            u(10),
            "Message",
            &[("author", json!(us(2).to_uppercase())), ("postedAt", json!(5)), ("text", json!("hello"))],
        ),
    ]
}

#[test]
fn incoming_values() {
    let sc = chat_room();
    let f = post();
    assert_eq!(val(&sc, &f, "$incoming.Message.add.text"), json!("hello"));
    assert_eq!(val(&sc, &f, "$incoming.Message.add.uuid"), json!(us(10)));
    assert_eq!(val(&sc, &f, "$incoming.ChatRoom.change.uuid"), json!(us(0)));
    assert_eq!(val(&sc, &f, "$incoming.ChatRoom.change.name"), json!("New"));
    // References in lower case, as stored.
    assert_eq!(val(&sc, &f, "$incoming.Message.add.author"), json!(us(2)));
    assert_eq!(val(&sc, &f, "$incoming.ChatRoom.change.messages"), json!([us(3), us(10)]));
}

#[test]
fn incoming_indices() {
    let sc = chat_room();
    let f = post();
    assert_eq!(val(&sc, &f, "$incoming.ChatRoom.change.messages[0]"), json!(us(3)));
    assert_eq!(val(&sc, &f, "$incoming.ChatRoom.change.messages[1]"), json!(us(10)));
    assert_eq!(val(&sc, &f, "$incoming.ChatRoom.change.messages[-1]"), json!(us(10)));
    assert_eq!(val(&sc, &f, "$incoming.ChatRoom.change.messages[-2]"), json!(us(3)));
    // Past either end: undefined.
    assert_eq!(ev(&sc, &f, "$incoming.ChatRoom.change.messages[2]"), Ok(None));
    assert_eq!(ev(&sc, &f, "$incoming.ChatRoom.change.messages[-3]"), Ok(None));
    assert_eq!(ev(&sc, &f, &format!("$incoming.ChatRoom.change.messages[{}]", i64::MIN)), Ok(None));
    assert_eq!(ev(&sc, &f, &format!("$incoming.ChatRoom.change.messages[{}]", i64::MAX)), Ok(None));
    // Inserted and removed, against the object's current array.
    assert_eq!(val(&sc, &f, "$incoming.ChatRoom.change.messages[inserted[0]]"), json!(us(10)));
    assert_eq!(val(&sc, &f, "$incoming.ChatRoom.change.messages[inserted[-1]]"), json!(us(10)));
    assert_eq!(ev(&sc, &f, "$incoming.ChatRoom.change.messages[inserted[1]]"), Ok(None));
    assert_eq!(ev(&sc, &f, "$incoming.ChatRoom.change.messages[removed[0]]"), Ok(None));
    let swap = [change(u(0), "ChatRoom", &[("users", json!([us(7).to_uppercase(), us(8)]))])];
    assert_eq!(val(&sc, &swap, "$incoming.ChatRoom.change.users[removed[0]]"), json!(us(2)));
    // Upper-case UUIDs are the same objects: u(2) was neither inserted nor removed here.
    let same = [change(u(0), "ChatRoom", &[("users", json!([us(2).to_uppercase(), us(8)]))])];
    assert_eq!(val(&sc, &same, "$incoming.ChatRoom.change.users[inserted[0]]"), json!(us(8)));
    assert_eq!(ev(&sc, &same, "$incoming.ChatRoom.change.users[removed[0]]"), Ok(None));
    assert_eq!(val(&sc, &swap, "$incoming.ChatRoom.change.users[inserted[1]]"), json!(us(8)));
}

#[test]
fn incoming_errors() {
    let sc = chat_room();
    let f = post();
    assert_eq!(
        err(&sc, &f, "$incoming.User.add.username"),
        "Incoming did not contain the change 'User.add'; expr: '$incoming.User.add.username'"
    );
    assert_eq!(
        err(&sc, &f, "$incoming.Message.change.text"),
        "Incoming did not contain the change 'Message.change'; expr: '$incoming.Message.change.text'"
    );
    assert_eq!(
        err(&sc, &f, "$incoming.ChatRoom.change.users"),
        "Incoming change did not contain the field 'users'; expr: '$incoming.ChatRoom.change.users'"
    );
    assert_eq!(
        err(&sc, &f, "$incoming.ChatRoom.change.name[0]"),
        "Incoming change was not an array value for field 'name'; expr: '$incoming.ChatRoom.change.name[0]'"
    );
    let unknown = [change(u(99), "ChatRoom", &[("users", json!([]))])];
    assert_eq!(
        err(&sc, &unknown, "$incoming.ChatRoom.change.users[removed[0]]"),
        format!(
            "Incoming change with dynamic index unable to find existing ModelObject '{}'; expr: \
             '$incoming.ChatRoom.change.users[removed[0]]'",
            us(99)
        )
    );
    // A change names a model its object does not have (a change's clsName is not checked).
    let wrong_model = [change(u(3), "ChatRoom", &[("users", json!([]))])];
    assert_eq!(
        err(&sc, &wrong_model, "$incoming.ChatRoom.change.users[removed[0]]"),
        "Incoming change with dynamic index unable to resolve value as ModelObject type 'ChatRoom' has no \
         collection at key 'users'; expr: '$incoming.ChatRoom.change.users[removed[0]]'"
    );
}

#[test]
fn the_last_fragment_of_a_model_and_type_wins() {
    let sc = chat_room();
    let f =
        [add(u(10), "User", &[("username", json!("a"))]), add(u(11), "User", &[("username", json!("b"))])];
    assert_eq!(val(&sc, &f, "$incoming.User.add.username"), json!("b"));
}

#[test]
fn scope_values() {
    let sc = chat_room();
    let mut p = params();
    p.insert("room".to_owned(), json!(7));
    p.insert("flag".to_owned(), json!(null));
    p.insert("nested".to_owned(), json!({ "a": { "b": "deep" } }));
    let ev = |src| eval_with(&sc, &p, &[], src);
    assert_eq!(ev("$scope.name"), Ok(Some(json!("TestScope"))));
    assert_eq!(ev("$scope.params.room"), Ok(Some(json!(7))));
    assert_eq!(ev("$scope.params.nested.a.b"), Ok(Some(json!("deep"))));
    assert_eq!(ev("$scope.params.nested.a"), Ok(Some(json!({ "b": "deep" }))));
    // A param that is null is a value; a missing one is an error.
    assert_eq!(ev("$scope.params.flag"), Ok(Some(json!(null))));
    let missing = "Scope expression for params was not able to be resolved, field or key path given did not exist \
                   in params object";
    for src in
        ["$scope.params.nope", "$scope.params.room.x", "$scope.params.nested.a.c", "$scope.params.flag.x"]
    {
        assert_eq!(ev(src), Err(format!("{missing}; expr: '{src}'")), "{src}");
    }
}

#[test]
fn root_model_paths() {
    let sc = chat_room();
    assert_eq!(val(&sc, &[], "$rootModel.name"), json!("TestChatRoom"));
    assert_eq!(val(&sc, &[], "$rootModel.uuid"), json!(us(0)));
    assert_eq!(val(&sc, &[], "$rootModel.attributes.locale"), json!("en_US"));
    assert_eq!(val(&sc, &[], "$rootModel.attributes.status"), json!(0));
    assert_eq!(val(&sc, &[], "$rootModel.attributes.uuid"), json!(us(1)));
    // Unset values are null; dates are epoch seconds.
    assert_eq!(val(&sc, &[], "$rootModel.attributes.tintColor"), json!(null));
    assert_eq!(val(&sc, &[], "$rootModel.users[0].lastActive"), json!(1_425_445_567));
    assert_eq!(val(&sc, &[], "$rootModel.users[0].username"), json!("chatmonster1"));
    assert_eq!(val(&sc, &[], "$rootModel.users.0.username"), json!("chatmonster1"));
    assert_eq!(val(&sc, &[], "$rootModel.users[-1].uuid"), json!(us(2)));
    assert_eq!(val(&sc, &[], "$rootModel.messages[-1].author.username"), json!("chatmonster1"));
    // The state before the changeset: the new message is not there yet.
    assert_eq!(val(&sc, &post(), "$rootModel.messages[-1].text"), json!("Rarr"));
}

#[test]
fn value_collections_in_paths() {
    let s = schema(NODE_TOML);
    let sc = scope(&s, "Node", &[("nums", json!([1, 2, 3])), ("c", json!(["red"]))]);
    assert_eq!(val(&sc, &[], "$rootModel.nums"), json!([1, 2, 3]));
    assert_eq!(val(&sc, &[], "$rootModel.nums[-1]"), json!(3));
    assert_eq!(val(&sc, &[], "$rootModel.c[0]"), json!("red"));
    assert_eq!(ev(&sc, &[], "$rootModel.nums[3]"), Ok(None));
    assert_eq!(
        err(&sc, &[], "$rootModel.n[0]"),
        format!(
            "Property 'n' is not a collection at keyPath: Node('{}').n[0]; expr: '$rootModel.n[0]'",
            us(0)
        )
    );
}

#[test]
fn path_errors() {
    let sc = chat_room();
    let root = format!("ChatRoom('{}')", us(0));
    let cases = [
        ("$rootModel.nope", format!("No property 'nope' at keyPath: {root}.nope")),
        ("$rootModel.attributes.nope", format!("No property 'nope' at keyPath: {root}.attributes.nope")),
        ("$rootModel.nope.x", format!("No property 'nope' at keyPath: {root}.nope")),
        (
            "$rootModel.name.x",
            format!("Property 'name' is not a ModelObject property at keyPath: {root}.name"),
        ),
        (
            "$rootModel.users.username",
            format!(
                "No index found for ModelObject in collection on property 'users' at keyPath: {root}.users"
            ),
        ),
        (
            "$rootModel.users[5].username",
            format!("No ModelObject instance at index 5 on property 'users' at keyPath: {root}.users[5]"),
        ),
        (
            "$rootModel.attributes[0].locale",
            format!("Property 'attributes' is not a collection at keyPath: {root}.attributes[0]"),
        ),
        (
            "$rootModel.attributes",
            format!(
                "Property 'attributes' is a ModelObject property type not a value property type at keyPath: \
                 {root}.attributes"
            ),
        ),
        (
            "$rootModel.messages[0].author",
            format!(
                "Property 'author' is a ModelObject property type not a value property type at keyPath: \
                 {root}.messages[0].author"
            ),
        ),
    ];
    for (src, want) in cases {
        assert_eq!(err(&sc, &[], src), format!("{want}; expr: '{src}'"), "{src}");
    }
    // A reference that is not set.
    let bare = scope(&chat_schema(), "ChatRoom", &[]);
    assert_eq!(
        err(&bare, &[], "$rootModel.attributes.locale"),
        format!(
            "No ModelObject instance on property 'attributes' at keyPath: {root}.attributes; expr: \
             '$rootModel.attributes.locale'"
        )
    );
}

#[test]
fn model_find() {
    let sc = chat_room();
    let f = post();
    assert_eq!(val(&sc, &f, "$model.find($incoming.Message.add.author).username"), json!("chatmonster1"));
    assert_eq!(val(&sc, &f, "$model.find($incoming.ChatRoom.change.uuid).attributes.locale"), json!("en_US"));
    let mut p = params();
    p.insert("user".to_owned(), json!(us(2).to_uppercase()));
    assert_eq!(
        eval_with(&sc, &p, &f, "$model.find($scope.params.user).username"),
        Ok(Some(json!("chatmonster1")))
    );
    // Not an object of the scope: objects being added are not there yet.
    assert_eq!(
        err(&sc, &f, "$model.find($incoming.Message.add.uuid).text"),
        format!(
            "Model expression could not find ModelObject with UUID '{}'; expr: '$model.find($incoming.Message.add.uuid).text'",
            us(10)
        )
    );
    assert_eq!(
        err(&sc, &f, "$model.find($incoming.ChatRoom.change.name).text"),
        "Model expression could not find ModelObject with UUID 'New'; expr: '$model.find($incoming.ChatRoom.change.name).text'"
    );
    assert_eq!(
        err(&sc, &f, "$model.find($incoming.ChatRoom.change.messages[5]).text"),
        "Model expression could not find ModelObject with UUID 'undefined'; expr: \
         '$model.find($incoming.ChatRoom.change.messages[5]).text'"
    );
    // The inner expression's error, wrapped.
    assert_eq!(
        err(&sc, &f, "$model.find($incoming.User.add.uuid).username"),
        "Model expression inner find expression error: Incoming did not contain the change 'User.add'; expr: \
         '$incoming.User.add.uuid'; expr: '$model.find($incoming.User.add.uuid).username'"
    );
    // Paths from the found object name it.
    assert_eq!(
        err(&sc, &f, "$model.find($incoming.Message.add.author).nope"),
        format!(
            "No property 'nope' at keyPath: User('{}').nope; expr: '$model.find($incoming.Message.add.author).nope'",
            us(2)
        )
    );
}

#[test]
fn case_tables() {
    let sc = chat_room();
    let mut p = params();
    for (k, v) in
        [("half", json!(1.5)), ("yes", json!(true)), ("nil", json!(null)), ("list", json!(["a", "b"]))]
    {
        p.insert(k.to_owned(), v);
    }
    let ev = |src| eval_with(&sc, &p, &[], src);
    assert_eq!(ev("$case.statusValue($rootModel.attributes.status)"), Ok(Some(json!("OPEN"))));
    // The key is the value's JavaScript string.
    assert_eq!(ev("$case.keys($scope.params.half)"), Ok(Some(json!("one and a half"))));
    assert_eq!(ev("$case.keys($scope.params.yes)"), Ok(Some(json!("yes"))));
    assert_eq!(ev("$case.keys($scope.params.nil)"), Ok(Some(json!("nil"))));
    assert_eq!(ev("$case.keys($scope.params.list)"), Ok(Some(json!("joined"))));
    assert_eq!(
        ev("$case.keys($rootModel.users[3].uuid)"),
        Err(format!(
            "Case expression inner expression error: No ModelObject instance at index 3 on property 'users' at keyPath: ChatRoom('{}').users[3]; expr: '$rootModel.users[3].uuid'; expr: '$case.keys($rootModel.users[3].uuid)'",
            us(0)
        ))
    );
    assert_eq!(
        ev("$case.statusValue($scope.name)"),
        Err("Case expression has no entry for returned expression result: TestScope; expr: '$case.statusValue($scope.name)'".to_owned())
    );
    assert_eq!(
        ev("$case.statusValue($scope.params.nope)"),
        Err("Case expression inner expression error: Scope expression for params was not able to be resolved, field \
             or key path given did not exist in params object; expr: '$scope.params.nope'; expr: \
             '$case.statusValue($scope.params.nope)'"
            .to_owned())
    );
    // Nested.
    let mut q = params();
    q.insert("s".to_owned(), json!("1"));
    assert_eq!(
        eval_with(&sc, &q, &[], "$case.keys($case.statusValue($scope.params.s))"),
        Err("Case expression has no entry for returned expression result: CLOSED; expr: \
             '$case.keys($case.statusValue($scope.params.s))'"
            .to_owned())
    );
}

#[test]
fn an_undefined_value_is_a_case_key_too() {
    let sc = chat_room();
    assert_eq!(
        ev(&sc, &post(), "$case.keys($incoming.ChatRoom.change.messages[9])"),
        Ok(Some(json!("undef")))
    );
}

#[test]
fn javascript_strings_of_values() {
    let n = |v: Value| js_number(v.as_number().expect("a number"));
    assert_eq!(n(json!(0)), "0");
    assert_eq!(n(json!(-0.0)), "0");
    assert_eq!(n(json!(123.0)), "123");
    assert_eq!(n(json!(-5)), "-5");
    assert_eq!(n(json!(0.1)), "0.1");
    assert_eq!(n(json!(1.5e300)), "1.5e+300");
    assert_eq!(n(json!(1e21)), "1e+21");
    assert_eq!(n(json!(1e20)), "100000000000000000000");
    assert_eq!(n(json!(1e-7)), "1e-7");
    assert_eq!(n(json!(0.000001)), "0.000001");
    // Beyond 2^53, as the double JavaScript holds.
    assert_eq!(n(json!(u64::MAX)), "18446744073709552000");
    assert_eq!(n(json!(9_007_199_254_740_993_i64)), "9007199254740992");
    assert_eq!(js_string(None), "undefined");
    assert_eq!(js_string(Some(&json!(null))), "null");
    assert_eq!(js_string(Some(&json!([1, null, "a", [2, 3]]))), "1,,a,2,3");
    assert_eq!(js_string(Some(&json!({}))), "[object Object]");
}
