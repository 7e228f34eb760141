//! The expression parser: every form, every error with its position, and properties
//! (never panics; the canonical text reads back to the same tree).

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use tether_proto::jetstream::FragmentKind;

use crate::sync::procedure::expr::{Expr, Field, Index, Path, Step, Target, parse};

fn step(name: &str, index: Option<i64>) -> Step {
    Step { name: name.to_owned(), index }
}

fn path(steps: &[(&str, Option<i64>)], last: Target) -> Path {
    Path { steps: steps.iter().map(|(n, i)| step(n, *i)).collect(), last }
}

fn prop(name: &str, index: Option<i64>) -> Target {
    Target::Prop(step(name, index))
}

fn incoming(cls: &str, kind: FragmentKind, field: Field) -> Expr {
    Expr::Incoming { cls: cls.to_owned(), kind, field }
}

fn field(name: &str, index: Option<Index>) -> Field {
    Field::Prop { name: name.to_owned(), index }
}

/// Parses, checks the tree, and checks that its canonical text is `canonical` and parses
/// back to the same tree.
fn parses(src: &str, want: &Expr, canonical: &str) {
    let e = parse(src).unwrap_or_else(|e| panic!("{src}: {e}"));
    assert_eq!(&e, want, "{src}");
    assert_eq!(e.to_string(), canonical, "{src}");
    assert_eq!(parse(canonical).as_ref(), Ok(want), "{canonical}");
}

#[test]
fn every_form_parses() {
    use FragmentKind::{Add, Change};
    let cases: Vec<(&str, Expr)> = vec![
        ("$incoming.Message.add.text", incoming("Message", Add, field("text", None))),
        ("$incoming.ChatRoom.change.uuid", incoming("ChatRoom", Change, Field::Uuid)),
        (
            "$incoming.ChatRoom.change.messages[-1]",
            incoming("ChatRoom", Change, field("messages", Some(Index::At(-1)))),
        ),
        (
            "$incoming.ChatRoom.change.messages[0]",
            incoming("ChatRoom", Change, field("messages", Some(Index::At(0)))),
        ),
        (
            "$incoming.ChatRoom.change.messages[inserted[0]]",
            incoming("ChatRoom", Change, field("messages", Some(Index::Inserted(0)))),
        ),
        (
            "$incoming.ChatRoom.change.users[removed[-2]]",
            incoming("ChatRoom", Change, field("users", Some(Index::Removed(-2)))),
        ),
        ("$scope.name", Expr::ScopeName),
        ("$scope.params.accessToken", Expr::ScopeParam(vec!["accessToken".to_owned()])),
        ("$scope.params.a.0.b-c", Expr::ScopeParam(vec!["a".to_owned(), "0".to_owned(), "b-c".to_owned()])),
        ("$rootModel.name", Expr::RootModel(path(&[], prop("name", None)))),
        ("$rootModel.uuid", Expr::RootModel(path(&[], Target::Uuid))),
        (
            "$rootModel.attributes.locale",
            Expr::RootModel(path(&[("attributes", None)], prop("locale", None))),
        ),
        (
            "$rootModel.messages[-1].author.username",
            Expr::RootModel(path(&[("messages", Some(-1)), ("author", None)], prop("username", None))),
        ),
        ("$rootModel.attributes.uuid", Expr::RootModel(path(&[("attributes", None)], Target::Uuid))),
        ("$rootModel.nums[2]", Expr::RootModel(path(&[], prop("nums", Some(2))))),
        // An intermediate segment called `uuid` is a property name like any other.
        ("$rootModel.uuid.x", Expr::RootModel(path(&[("uuid", None)], prop("x", None)))),
        (
            "$model.find($incoming.ChatRoom.change.uuid).messages[-1].author.username",
            Expr::Model {
                find: Box::new(incoming("ChatRoom", Change, Field::Uuid)),
                path: path(&[("messages", Some(-1)), ("author", None)], prop("username", None)),
            },
        ),
        (
            "$model.find($scope.params.user).uuid",
            Expr::Model {
                find: Box::new(Expr::ScopeParam(vec!["user".to_owned()])),
                path: path(&[], Target::Uuid),
            },
        ),
        (
            "$case.statusValue($rootModel.attributes.status)",
            Expr::Case {
                name: "statusValue".to_owned(),
                of: Box::new(Expr::RootModel(path(&[("attributes", None)], prop("status", None)))),
            },
        ),
        (
            "$case.a($case.b($model.find($incoming.X.add.y[inserted[1]]).z))",
            Expr::Case {
                name: "a".to_owned(),
                of: Box::new(Expr::Case {
                    name: "b".to_owned(),
                    of: Box::new(Expr::Model {
                        find: Box::new(incoming("X", Add, field("y", Some(Index::Inserted(1))))),
                        path: path(&[], prop("z", None)),
                    }),
                }),
            },
        ),
    ];
    for (src, want) in &cases {
        parses(src, want, src);
    }
}

#[test]
fn dot_indices_read_as_bracket_indices() {
    // The reference's key paths also take `messages.0.author`; the canonical form brackets.
    let want = Expr::RootModel(path(&[("messages", Some(0)), ("author", None)], prop("username", None)));
    parses("$rootModel.messages.0.author.username", &want, "$rootModel.messages[0].author.username");
    let last = Expr::RootModel(path(&[], prop("nums", Some(-1))));
    parses("$rootModel.nums.-1", &last, "$rootModel.nums[-1]");
    // Leading zeros and -0 are the same index.
    parses("$rootModel.nums[007]", &Expr::RootModel(path(&[], prop("nums", Some(7)))), "$rootModel.nums[7]");
    parses(
        "$incoming.A.add.b[-0]",
        &incoming("A", FragmentKind::Add, field("b", Some(Index::At(0)))),
        "$incoming.A.add.b[0]",
    );
}

#[test]
fn errors_name_the_token_and_its_position() {
    let deep = format!("{}$scope.name{}", "$case.a(".repeat(16), ")".repeat(16));
    let cases: Vec<(&str, &str)> = vec![
        ("", "unexpected end at 1, expected an expression ($incoming, $scope, $rootModel, $model or $case)"),
        ("$", "'$' without a name at 1, expected $incoming, $scope, $rootModel, $model or $case"),
        ("$$x", "'$' without a name at 1, expected $incoming, $scope, $rootModel, $model or $case"),
        (
            "$foo.bar",
            "unknown expression '$foo' at 1, expected $incoming, $scope, $rootModel, $model or $case",
        ),
        (
            "incoming.A.add.b",
            "unexpected 'incoming' at 1, expected an expression ($incoming, $scope, $rootModel, $model or $case)",
        ),
        ("$incoming.Message.add.text)", "unexpected ')' at 27, expected end"),
        ("$incoming.Message.add.text extra", "unexpected \" \" at 27"),
        ("$incoming.Message.add.text\n", "unexpected \"\\n\" at 27"),
        ("$incoming.Message.add.té", "unexpected 'é' at 24"),
        ("$incoming.Message", "unexpected end at 18, expected '.'"),
        ("$incoming.1Message.add.text", "unexpected '1Message' at 11, expected a model name"),
        ("$incoming.Message.remove.text", "unexpected 'remove' at 19, expected add or change"),
        ("$incoming.Message.add.", "unexpected end at 23, expected a property name or uuid"),
        ("$incoming.Message.add.uuid[0]", "unexpected '[' at 27, expected end ('uuid' cannot be indexed)"),
        (
            "$incoming.A.change.b[first]",
            "unexpected 'first' at 22, expected an integer, inserted[n] or removed[n]",
        ),
        ("$incoming.A.change.b[inserted]", "unexpected ']' at 30, expected '['"),
        ("$incoming.A.change.b[inserted[x]]", "unexpected 'x' at 31, expected an integer"),
        ("$incoming.A.change.b[0", "unexpected end at 23, expected ']'"),
        ("$incoming.A.add.b[99999999999999999999]", "index '99999999999999999999' out of range at 19"),
        ("$scope", "unexpected end at 7, expected '.'"),
        ("$scope.id", "unexpected 'id' at 8, expected name or params"),
        ("$scope.name.x", "unexpected '.' at 12, expected end"),
        ("$scope.params", "unexpected end at 14, expected '.'"),
        ("$scope.params.", "unexpected end at 15, expected a param name"),
        ("$scope.params.a..b", "unexpected '.' at 17, expected a param name"),
        ("$rootModel", "unexpected end at 11, expected '.'"),
        ("$rootModel.1abc", "unexpected '1abc' at 12, expected a property name or uuid"),
        ("$rootModel.users[0].uuid[1]", "unexpected index at 25, expected end ('uuid' cannot be indexed)"),
        ("$rootModel.users[x]", "unexpected 'x' at 18, expected an integer"),
        ("$rootModel.users[0][1]", "unexpected '[' at 20, expected end"),
        ("$model.get($scope.name).x", "unexpected 'get' at 8, expected 'find'"),
        ("$model.find($scope.name)", "unexpected end at 25, expected '.'"),
        (
            "$model.find().x",
            "unexpected ')' at 13, expected an expression ($incoming, $scope, $rootModel, $model or $case)",
        ),
        ("$model.find($scope.name.x", "unexpected '.' at 24, expected ')'"),
        ("$case.statusName", "unexpected end at 17, expected '('"),
        ("$case.statusName($incoming.ChatRoom.change.status", "unexpected end at 50, expected ')'"),
        ("$case.(x)", "unexpected '(' at 7, expected a case name"),
        ("$case.a($scope.name))", "unexpected ')' at 21, expected end"),
        (&deep, "expression nested more than 16 deep at 129"),
    ];
    for (src, want) in cases {
        let e = parse(src).expect_err(src);
        assert_eq!(e.to_string(), want, "{src}");
    }
    // Sixteen levels parse.
    let ok = format!("{}$scope.name{}", "$case.a(".repeat(15), ")".repeat(15));
    assert!(parse(&ok).is_ok());
}

#[test]
fn positions_count_characters_not_bytes() {
    let e = parse("$case.é($scope.name)").expect_err("é is not a word character");
    assert_eq!(e.to_string(), "unexpected 'é' at 7");
    let e = parse("$scope.params.x)").expect_err("trailing ')'");
    assert_eq!(e.pos, 16);
}

/// Words and punctuation of the grammar, and a few characters outside it.
fn piece() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "$incoming",
        "$scope",
        "$rootModel",
        "$model",
        "$case",
        "$",
        ".",
        "(",
        ")",
        "[",
        "]",
        "add",
        "change",
        "uuid",
        "name",
        "params",
        "find",
        "inserted",
        "removed",
        "-1",
        "0",
        "12",
        "Message",
        "a-b",
        "_x",
        " ",
        "é",
        ".0",
    ])
}

/// The canonical text of a tree, changed a little: a piece inserted, a character
/// removed, or a bracket index written as a segment (`[1]` → `.1`). Many of these parse.
fn near_valid() -> impl Strategy<Value = String> {
    (arb_expr(), any::<prop::sample::Index>(), piece(), 0..4u8).prop_map(|(e, at, piece, how)| {
        let mut chars: Vec<char> = e.to_string().chars().collect();
        let i = at.index(chars.len() + 1);
        match how {
            0 => {
                chars.splice(i..i, piece.chars());
            }
            1 if i < chars.len() => {
                chars.remove(i);
            }
            2 => {
                let text: String = chars.iter().collect();
                return text.replacen(']', "", 1).replacen('[', ".", 1);
            }
            _ => {}
        }
        chars.into_iter().collect()
    })
}

fn name() -> impl Strategy<Value = String> {
    "[A-Za-z_][A-Za-z0-9_-]{0,6}"
}

fn int() -> impl Strategy<Value = i64> {
    prop_oneof![-3i64..4, any::<i64>()]
}

fn arb_step() -> impl Strategy<Value = Step> {
    (name(), prop::option::of(int())).prop_map(|(name, index)| Step { name, index })
}

fn arb_path() -> impl Strategy<Value = Path> {
    let last = prop_oneof![
        1 => Just(Target::Uuid),
        // `uuid` without an index reads as `Target::Uuid`.
        4 => arb_step().prop_filter("plain uuid is Target::Uuid", |s| !(s.name == "uuid" && s.index.is_none())).prop_map(Target::Prop),
    ];
    (prop::collection::vec(arb_step(), 0..3), last).prop_map(|(steps, last)| Path { steps, last })
}

fn arb_expr() -> impl Strategy<Value = Expr> {
    let index = prop_oneof![
        int().prop_map(Index::At),
        int().prop_map(Index::Inserted),
        int().prop_map(Index::Removed)
    ];
    let field = prop_oneof![
        1 => Just(Field::Uuid),
        4 => (name(), prop::option::of(index))
            .prop_filter("uuid is Field::Uuid and cannot be indexed", |(n, _)| n != "uuid")
            .prop_map(|(name, index)| Field::Prop { name, index }),
    ];
    let kind = prop_oneof![Just(FragmentKind::Add), Just(FragmentKind::Change)];
    let leaf = prop_oneof![
        (name(), kind, field).prop_map(|(cls, kind, field)| Expr::Incoming { cls, kind, field }),
        Just(Expr::ScopeName),
        prop::collection::vec("[A-Za-z0-9_-]{1,5}", 1..4).prop_map(Expr::ScopeParam),
        arb_path().prop_map(Expr::RootModel),
    ];
    leaf.prop_recursive(4, 16, 2, |inner| {
        prop_oneof![
            (inner.clone(), arb_path()).prop_map(|(find, path)| Expr::Model { find: Box::new(find), path }),
            (name(), inner).prop_map(|(name, of)| Expr::Case { name, of: Box::new(of) }),
        ]
    })
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 2000,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn parsing_arbitrary_text_never_panics(s in any::<String>()) {
        let _ = parse(&s);
    }

    #[test]
    fn parsed_trees_read_back_from_their_canonical_text(s in near_valid()) {
        if let Ok(e) = parse(&s) {
            let text = e.to_string();
            prop_assert_eq!(parse(&text), Ok(e), "{} → {}", s, text);
            prop_assert_eq!(parse(&text).map(|e| e.to_string()), Ok(text));
        }
    }

    #[test]
    fn every_tree_reads_back_from_its_canonical_text(e in arb_expr()) {
        let text = e.to_string();
        prop_assert_eq!(parse(&text), Ok(e), "{}", text);
    }
}
