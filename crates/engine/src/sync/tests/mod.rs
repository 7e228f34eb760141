//! Tests of model sync. Helpers here; tests by topic in the submodules.

mod apply;
mod perf;
mod props;
mod schema;
mod snapshot;
mod values;

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};
use tether_proto::jetstream::{FragmentKind, SyncFragment, Uuid};

use super::{Applied, FragmentError, Schema, SchemaDef, ScopeState};

/// The schema file of the module docs.
pub(super) const EXAMPLE_TOML: &str = r#"
[enums]
MessageStatus = { Sent = 0, Read = 1 }   # integer enumeration (name -> integer)
Palette = ["red", "green", "blue"]       # string enumeration

[extends]
Circle = "Shape"

[models.Canvas]
name = "String"
shapes = "[Shape]"

[models.Shape]
x = "Number"
y = { type = "Number", default = 0 }
color = "Number"
created = "Date"
visible = { type = "Boolean", default = true }
tags = "[String]"
status = "MessageStatus"
palette = "[Palette]"

[models.Circle]
radius = "Number"
"#;

/// The models of the reference's `demos/shapes.js`.
pub(super) const SHAPES_TOML: &str = r#"
[models.Shape]
x = "Number"
y = "Number"
width = "Number"
height = "Number"
color = "Number"

[models.Canvas]
name = "String"
shapes = "[Shape]"
"#;

/// The models of the reference's `demos/chat.js`.
pub(super) const CHAT_TOML: &str = r#"
[enums]
ChatRoomStatus = { Open = 0, Closed = 1 }

[models.User]
username = "String"
color = "Number"
lastActive = "Date"

[models.Message]
author = "User"
postedAt = "Date"
text = "String"

[models.ChatRoomAttributes]
status = "ChatRoomStatus"
topic = "String"
tintColor = "Number"
locale = "String"

[models.ChatRoom]
name = "String"
attributes = "ChatRoomAttributes"
users = "[User]"
messages = "[Message]"
"#;

/// A model with every kind of property, referring to itself (cycles, collections).
pub(super) const NODE_TOML: &str = r#"
[enums]
Level = { Low = 0, High = 1 }
Color = ["red", "green"]

[extends]
Leaf = "Node"

[models.Node]
n = "Number"
s = "String"
b = "Boolean"
d = "Date"
e = "Level"
c = "[Color]"
nums = "[Number]"
one = "Node"
kids = "[Node]"

[models.Leaf]
weight = { type = "Number", default = 1 }

[models.Other]
z = "Number"
"#;

/// Parses and builds a schema, panicking on errors.
pub(super) fn schema(toml_text: &str) -> Arc<Schema> {
    let def: SchemaDef = toml::from_str(toml_text).expect("schema TOML parses");
    Arc::new(Schema::from_def(def).expect("schema is valid"))
}

/// The schema error of a TOML text.
pub(super) fn schema_err(toml_text: &str) -> String {
    let def: SchemaDef = toml::from_str(toml_text).expect("schema TOML parses");
    Schema::from_def(def).expect_err("schema is invalid").message().to_owned()
}

/// A UUID for tests: `000000nn-0000-4000-8000-000000000000`.
pub(super) fn u(n: u32) -> Uuid {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&n.to_be_bytes());
    b[6] = 0x40;
    b[8] = 0x80;
    Uuid::from_bytes(b)
}

/// `u(n)` as a string.
pub(super) fn us(n: u32) -> String {
    u(n).to_string()
}

/// Properties from (key, value) pairs, in order.
pub(super) fn props(kv: &[(&str, Value)]) -> Vec<(String, Value)> {
    kv.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
}

/// An add fragment.
pub(super) fn add(uuid: Uuid, cls: &str, kv: &[(&str, Value)]) -> SyncFragment {
    SyncFragment { kind: FragmentKind::Add, uuid, cls_name: cls.to_owned(), properties: props(kv) }
}

/// A change fragment.
pub(super) fn change(uuid: Uuid, cls: &str, kv: &[(&str, Value)]) -> SyncFragment {
    SyncFragment { kind: FragmentKind::Change, uuid, cls_name: cls.to_owned(), properties: props(kv) }
}

/// A scope of `root_cls` with root `u(0)`.
pub(super) fn scope(schema: &Arc<Schema>, root_cls: &str, initial: &[(&str, Value)]) -> ScopeState {
    ScopeState::new(Arc::clone(schema), root_cls, u(0), &props(initial)).expect("valid initial values")
}

/// The messages of the replies (`None` for success).
pub(super) fn messages(a: &Applied) -> Vec<Option<String>> {
    a.replies.iter().map(|r| r.as_ref().err().map(|e| e.message.clone())).collect()
}

/// The error of a single-fragment changeset's only reply.
pub(super) fn only_error(a: &Applied) -> FragmentError {
    assert_eq!(a.replies.len(), 1);
    a.replies[0].clone().expect_err("the fragment fails")
}

/// Checks the graph invariants: every object reachable from the root, every reference to an
/// object of the scope, and `parents` exactly the references held.
pub(super) fn check_invariants(s: &ScopeState) {
    assert!(s.objects.contains_key(&s.root), "the root is in the scope");
    assert_eq!(s.reachable().len(), s.objects.len(), "every object is reachable from the root");
    let mut expected: HashMap<Uuid, HashMap<Uuid, u32>> = HashMap::new();
    for (uuid, o) in &s.objects {
        for slot in o.slots.iter() {
            for c in slot.refs() {
                assert!(
                    s.objects.contains_key(c),
                    "reference from {uuid} to {c} is to an object in the scope"
                );
                *expected.entry(*c).or_default().entry(*uuid).or_default() += 1;
            }
        }
    }
    for (uuid, o) in &s.objects {
        let have: HashMap<Uuid, u32> = o.parents.iter().collect();
        assert_eq!(have.len(), o.parents.len(), "parents of {uuid} listed once each");
        assert!(o.parents.iter().all(|(_, n)| n > 0), "no parent of {uuid} with zero references");
        assert_eq!(have, expected.remove(uuid).unwrap_or_default(), "parents of {uuid}");
    }
    let snap = s.snapshot();
    assert_eq!(snap.len(), s.len(), "the snapshot lists every object");
}

/// `ScopeState` can move between and be shared by threads (a scope actor owns it; readers
/// may hold a clone).
#[test]
fn scope_state_is_send_sync_clone_debug() {
    fn assert_traits<T: Send + Sync + Clone + std::fmt::Debug>() {}
    fn assert_shared<T: Send + Sync + std::fmt::Debug>() {}
    assert_traits::<ScopeState>();
    assert_shared::<Schema>();
    assert_traits::<super::Applied>();
    let sc = scope(&schema(NODE_TOML), "Node", &[]);
    let debug = format!("{sc:?}");
    assert!(
        debug.starts_with(
            "ScopeState { root: Uuid(00000000-0000-4000-8000-000000000000), root_cls: \"Node\", objects: 1"
        ),
        "{debug}"
    );
}

/// The room of the reference's `createTestChatRoom` (test/test/test_helpers.js): root
/// `u(0)`, attributes `u(1)`, one user `u(2)`, one message `u(3)` by that user.
pub(super) fn chat_room() -> ScopeState {
    let s = schema(CHAT_TOML);
    let mut sc = scope(&s, "ChatRoom", &[("name", json!("TestChatRoom"))]);
    let a = sc.apply(
        &[
            change(
                u(0),
                "ChatRoom",
                &[("attributes", json!(us(1))), ("users", json!([us(2)])), ("messages", json!([us(3)]))],
            ),
            add(
                u(1),
                "ChatRoomAttributes",
                &[
                    ("status", json!(0)),
                    ("topic", json!("This is a test chat room")),
                    ("locale", json!("en_US")),
                ],
            ),
            add(u(2), "User", &[("username", json!("chatmonster1")), ("lastActive", json!(1_425_445_567))]),
            add(
                u(3),
                "Message",
                &[("author", json!(us(2))), ("postedAt", json!(1_425_445_600)), ("text", json!("Rarr"))],
            ),
        ],
        true,
    );
    assert!(a.replies.iter().all(Result::is_ok), "{:?}", a.replies);
    sc
}
