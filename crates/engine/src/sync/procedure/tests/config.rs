//! Every configuration error, reported at load with the procedure and the value named.

use super::{config_err, def};

/// `ChatRoom.p` with these constraints (inline tables) and no remote.
fn constraints(c: &str) -> String {
    format!("name = \"ChatRoom.p\"\nconstraints = [{c}]\n")
}

/// `ChatRoom.p` without constraints and this `[remote]` body.
fn remote(r: &str) -> String {
    format!("name = \"ChatRoom.p\"\nconstraints = []\n[remote]\n{r}\n")
}

fn check(cases: &[(String, &str)]) {
    for (toml_text, want) in cases {
        assert_eq!(config_err(toml_text), *want, "{toml_text}");
    }
}

#[test]
fn names() {
    let shape = |n: &str| format!("procedure '{n}': the name must be \"Model.procedureName\"");
    for n in ["ChatRoom", "ChatRoom.", ".p", "A.b.c", ""] {
        assert_eq!(config_err(&format!("name = \"{n}\"\nconstraints = []\n")), shape(n), "{n}");
    }
    assert_eq!(
        config_err("name = \"Nope.p\"\nconstraints = []\n"),
        "procedure 'Nope.p': no model 'Nope' in the schema"
    );
}

#[test]
fn constraint_errors() {
    let p = "procedure 'ChatRoom.p', ";
    let expected = "expected \"$hasNewValue\", { \"$array\" = \"insert\" } or { \"$array\" = \"remove\" }, or a string, \
                    number or boolean to compare with (\"$$…\" for a string starting with '$')";
    check(&[
        (
            constraints(r#"{ type = "add", clsName = "Nope" }"#),
            &format!("{p}constraints[0].clsName: no model 'Nope' in the schema"),
        ),
        (
            constraints(
                r#"{ type = "change", clsName = "ChatRoom" }, { type = "change", clsName = "ChatRoom", properties = { nope = 1 } }"#,
            ),
            &format!("{p}constraints[1].properties.nope: model 'ChatRoom' has no property 'nope'"),
        ),
        (
            constraints(r#"{ type = "change", clsName = "ChatRoom", properties = { name = "$foo" } }"#),
            &format!("{p}constraints[0].properties.name: unknown constraint '$foo': {expected}"),
        ),
        (
            constraints(
                r#"{ type = "change", clsName = "ChatRoom", properties = { users = { "$array" = "push" } } }"#,
            ),
            &format!("{p}constraints[0].properties.users: \"$array\" must be \"insert\" or \"remove\""),
        ),
        (
            constraints(
                r#"{ type = "change", clsName = "ChatRoom", properties = { users = { "$array" = "insert", x = 1 } } }"#,
            ),
            &format!("{p}constraints[0].properties.users: {expected}"),
        ),
        (
            constraints(r#"{ type = "change", clsName = "ChatRoom", properties = { name = ["a"] } }"#),
            &format!("{p}constraints[0].properties.name: {expected}"),
        ),
        (
            constraints(
                r#"{ type = "change", clsName = "ChatRoom", properties = { name = { "$array" = "insert" } } }"#,
            ),
            &format!(
                "{p}constraints[0].properties.name: an array constraint needs a collection; 'name' of 'ChatRoom' is not one"
            ),
        ),
        (
            constraints(
                r#"{ type = "add", clsName = "ChatRoom", properties = { users = { "$array" = "remove" } } }"#,
            ),
            &format!(
                "{p}constraints[0].properties.users: \"remove\" applies to change constraints only: an added object has \
                 no current value to remove from"
            ),
        ),
        (
            constraints(r#"{ type = "change", clsName = "ChatRoom", properties = { users = "x" } }"#),
            &format!(
                "{p}constraints[0].properties.users: 'users' of 'ChatRoom' is a collection: a literal never equals an array"
            ),
        ),
    ]);
}

#[test]
fn unknown_keys_and_bad_types_are_refused_by_the_deserializer() {
    let parse =
        |t: &str| toml::from_str::<super::super::ProcedureDef>(t).map(|_| ()).map_err(|e| e.to_string());
    let cases = [
        ("name = \"A.b\"\nconstraints = []\nconstraint = []\n", "unknown field `constraint`"),
        ("name = \"A.b\"\n", "missing field `constraints`"),
        ("name = \"A.b\"\nconstraints = [{ type = \"add\", clsname = \"A\" }]\n", "unknown field `clsname`"),
        (
            "name = \"A.b\"\nconstraints = [{ type = \"remove\", clsName = \"A\" }]\n",
            "unknown variant `remove`",
        ),
        (
            "name = \"A.b\"\nconstraints = []\n[remote]\ntype = \"http\"\nurl = \"http://h/\"\n",
            "unknown field `type`",
        ),
        ("name = \"A.b\"\nconstraints = []\n[remote]\nmethod = \"GET\"\n", "missing field `url`"),
        (
            "name = \"A.b\"\nconstraints = []\n[remote]\nurl = \"http://h/\"\ntimeout = 5\n",
            "unknown field `timeout`",
        ),
        (
            "name = \"A.b\"\nconstraints = []\n[remote]\nurl = \"http://h/\"\nsuccess_status_codes = [70000]\n",
            "70000",
        ),
        ("name = \"A.b\"\nconstraints = []\n[remote]\nurl = \"http://h/\"\ntimeout_ms = -1\n", "-1"),
    ];
    for (t, want) in cases {
        let e = parse(t).expect_err(t);
        assert!(e.contains(want), "{t}: {e}");
    }
    // And a valid one, for contrast.
    let _ = def("name = \"A.b\"\nconstraints = []\n");
}

#[test]
fn remote_errors() {
    let p = "procedure 'ChatRoom.p', remote.";
    check(&[
        (
            remote("url = \"http://h/\"\nmethod = \"fetch\""),
            &format!("{p}method: 'FETCH' is not one of GET, DELETE, HEAD, OPTIONS, PATCH, POST, PUT"),
        ),
        (remote("url = \"http://h/\"\ncases = { x = {} }"), &format!("{p}cases.x: has no entries")),
        (
            remote("url = \"http://h/:x\"\nparams = { x = [1] }"),
            &format!("{p}params.x: a URL parameter must be a string, number, boolean or expression"),
        ),
        (remote("url = \"ftp://h/\""), &format!("{p}url: 'ftp://h/' is not an http:// or https:// URL")),
        (remote("url = \"h/x\""), &format!("{p}url: 'h/x' is not an http:// or https:// URL")),
        (remote("url = \"http:///x\""), &format!("{p}url: 'http:///x' has no host")),
        (
            remote("url = \"http://h/a b\""),
            &format!("{p}url: \" \" is not allowed in a URL (percent-encode it)"),
        ),
        (
            remote("url = \"http://h/:a/:b/:c\"\nparams = { a = 1 }"),
            &format!("{p}url: no value in remote.params for the placeholders ':b', ':c'"),
        ),
        (
            remote("url = \"http://h/:a\"\nparams = { a = 1, c = 2 }"),
            &format!("{p}params.c: the url has no placeholder ':c'"),
        ),
        (
            // `:a` inside a segment is not a placeholder.
            remote("url = \"http://h/x:a\"\nparams = { a = 1 }"),
            &format!("{p}params.a: the url has no placeholder ':a'"),
        ),
        (
            remote("url = \"http://h/\"\nheaders = { \"X Y\" = \"1\" }"),
            &format!("{p}headers.X Y: 'X Y' is not a valid header name"),
        ),
        (
            remote("url = \"http://h/\"\nheaders = { \"X-A\" = \"1\", \"x-a\" = \"2\" }"),
            &format!("{p}headers.x-a: header 'x-a' is set twice"),
        ),
        (
            remote("url = \"http://h/\"\nheaders = { X = { a = 1 } }"),
            &format!("{p}headers.X: a header value must be a string, number, boolean or expression"),
        ),
        (
            remote("url = \"http://h/\"\nheaders = { X = \"a\\nb\" }"),
            &format!("{p}headers.X: control characters are not allowed in a header value"),
        ),
        (remote("url = \"http://h/\"\nbody = \"x\""), &format!("{p}body: must be a table or an array")),
        (remote("url = \"http://h/\"\ntimeout_ms = 0"), &format!("{p}timeout_ms: must be at least 1")),
        (
            remote("url = \"http://h/\"\nsuccess_status_codes = []"),
            &format!("{p}success_status_codes: is empty: every call would fail"),
        ),
        (
            remote("url = \"http://h/\"\nsuccess_status_codes = [200, 99]"),
            &format!("{p}success_status_codes: 99 is not an HTTP status code"),
        ),
        (
            remote("url = \"http://h/\"\nupdates_response_key = \"\""),
            &format!("{p}updates_response_key: is empty"),
        ),
    ]);
}

#[test]
fn expression_errors() {
    let p = "procedure 'ChatRoom.p', remote.";
    let body = |v: &str| remote(&format!("url = \"http://h/\"\nbody = {{ text = \"{v}\" }}"));
    check(&[
        (body("$incoming.Message.add.text)"), &format!("{p}body.text: unexpected ')' at 27, expected end")),
        (
            remote("url = \"http://h/\"\nbody = { a = [1, { b = \"$nope\" }] }"),
            &format!(
                "{p}body.a[1].b: unknown expression '$nope' at 1, expected $incoming, $scope, $rootModel, $model or $case"
            ),
        ),
        (
            remote("url = \"http://h/\"\nheaders = { X = \"$5 off\" }"),
            &format!("{p}headers.X: unexpected \" \" at 3"),
        ),
        (
            body("$incoming.Nope.add.x"),
            &format!("{p}body.text: no model 'Nope' in the schema; expr: '$incoming.Nope.add.x'"),
        ),
        (
            body("$incoming.Message.add.txt"),
            &format!(
                "{p}body.text: model 'Message' has no property 'txt'; expr: '$incoming.Message.add.txt'"
            ),
        ),
        (
            body("$incoming.Message.add.text[0]"),
            &format!(
                "{p}body.text: 'text' of 'Message' is not a collection: it has no index; expr: '$incoming.Message.add.text[0]'"
            ),
        ),
        (
            body("$incoming.ChatRoom.add.users[inserted[0]]"),
            &format!(
                "{p}body.text: inserted[n] and removed[n] compare with the object's current value: \
                 $incoming.<Model>.change only; expr: '$incoming.ChatRoom.add.users[inserted[0]]'"
            ),
        ),
        (
            body("$case.nope($scope.name)"),
            &format!("{p}body.text: no case 'nope' in remote.cases; expr: '$case.nope($scope.name)'"),
        ),
        (
            body("$model.find($case.nope($scope.name)).x"),
            &format!(
                "{p}body.text: no case 'nope' in remote.cases; expr: '$model.find($case.nope($scope.name)).x'"
            ),
        ),
        (
            remote("url = \"http://h/:x\"\nparams = { x = \"$incoming.Nope.add.uuid\" }"),
            &format!("{p}params.x: no model 'Nope' in the schema; expr: '$incoming.Nope.add.uuid'"),
        ),
    ]);
}

#[test]
fn dollar_dollar_is_a_literal_and_paths_are_checked_when_evaluated() {
    // `$$` strings are not parsed; `$rootModel` paths depend on the scope's root model.
    let t = remote(
        "url = \"http://h/\"\nheaders = { X = \"$$5 off\" }\nbody = { a = \"$rootModel.no.such.path\", b = \"$model.find($scope.name).x\" }",
    );
    let p = super::procedure(&t);
    assert!(p.has_remote());
}
