//! Tests of procedures. Helpers and the reference's test procedures here; tests by topic in
//! the submodules.

mod binding;
mod config;
mod constraints;
mod eval;
mod expr;
mod reference;
mod response;

use std::sync::Arc;

use serde_json::{Map, Value, json};
use tether_proto::jetstream::SyncFragment;

use super::{Procedure, ProcedureDef, ProcedureError, RemoteRequest};
pub(super) use crate::sync::tests::chat_room;
use crate::sync::tests::{CHAT_TOML, schema};
use crate::sync::{Schema, ScopeState};

/// The reference's `test/test/test_helpers.js` procedures on `ChatRoom`, in Tether's
/// configuration format: `setName`, `postMessage`, `userLogout`.
pub(super) const SET_NAME: &str = r#"
name = "ChatRoom.setName"
constraints = [
  { type = "change", clsName = "ChatRoom", properties = { name = "$hasNewValue" }, allowAdditionalProperties = false },
]

[remote]
url = "http://chatRoomAPI/room/:chatRoomUUID"
params = { chatRoomUUID = "$incoming.ChatRoom.change.uuid" }
method = "post"
headers = { Authorization = "$scope.params.accessToken", "X-ChatRoom-SetName" = "$incoming.ChatRoom.change.name" }
"#;

/// See [`SET_NAME`]. (`ChatRoomStatus.Open` is 0, `Closed` 1: the case keys are their
/// string forms, as JavaScript object keys are.)
pub(super) const POST_MESSAGE: &str = r#"
name = "ChatRoom.postMessage"
constraints = [
  { type = "change", clsName = "ChatRoom", properties = { messages = { "$array" = "insert" } }, allowAdditionalProperties = false },
  { type = "add", clsName = "Message", properties = { author = "$hasNewValue", postedAt = "$hasNewValue", text = "$hasNewValue" }, allowAdditionalProperties = false },
]

[remote]
url = "http://chatRoomAPI/room/:chatRoomUUID/messages"
params = { chatRoomUUID = "$incoming.ChatRoom.change.uuid" }
method = "post"
body = { uuid = "$incoming.Message.add.uuid", authorUUID = "$incoming.Message.add.author", postedAt = "$incoming.Message.add.postedAt", text = "$incoming.Message.add.text", tags = ["staticValue0", "staticValue1"] }
cases = { statusValue = { "0" = "OPEN", "1" = "CLOSED" } }

[remote.headers]
Authorization = "$scope.params.accessToken"
X-ChatRoom-Locale = "$rootModel.attributes.locale"
X-ChatRoom-Status = "$case.statusValue($rootModel.attributes.status)"
X-ChatRoom-MessageId = "$incoming.ChatRoom.change.messages[-1]"
X-ChatRoom-InsertedMessageId = "$incoming.ChatRoom.change.messages[inserted[0]]"
X-ChatRoom-PreviousMessageAuthorUsername = "$model.find($incoming.ChatRoom.change.uuid).messages[-1].author.username"
"#;

/// See [`SET_NAME`].
pub(super) const USER_LOGOUT: &str = r#"
name = "ChatRoom.userLogout"
constraints = [
  { type = "change", clsName = "ChatRoom", properties = { users = { "$array" = "remove" } }, allowAdditionalProperties = false },
]

[remote]
url = "http://chatRoomAPI/room/:chatRoomUUID/users/:userUUID/logout"
params = { chatRoomUUID = "$incoming.ChatRoom.change.uuid", userUUID = "$incoming.ChatRoom.change.users[removed[0]]" }
method = "post"
headers = { Authorization = "$scope.params.accessToken", "X-ChatRoom-Locale" = "$rootModel.attributes.locale" }
body = { uuid = "$incoming.ChatRoom.change.users[removed[0]]" }
"#;

/// The access token of the test scope's params.
pub(super) const TOKEN: &str = "5b1a7b8e-7c51-4a55-9c4e-2d0c7a3c1f00";

/// The chat schema.
pub(super) fn chat_schema() -> Arc<Schema> {
    schema(CHAT_TOML)
}

/// A definition from TOML.
pub(super) fn def(toml_text: &str) -> ProcedureDef {
    toml::from_str(toml_text).expect("procedure TOML parses")
}

/// A procedure from TOML, valid for `schema`.
pub(super) fn procedure_in(schema: &Schema, toml_text: &str) -> Procedure {
    Procedure::new(def(toml_text), schema).expect("procedure is valid")
}

/// A procedure from TOML, valid for the chat schema.
pub(super) fn procedure(toml_text: &str) -> Procedure {
    procedure_in(&chat_schema(), toml_text)
}

/// The configuration error of a procedure in the chat schema.
pub(super) fn config_err(toml_text: &str) -> String {
    match Procedure::new(def(toml_text), &chat_schema()) {
        Err(ProcedureError::Config(m)) => m,
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

/// The test scope's params: `{accessToken}`.
pub(super) fn params() -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("accessToken".to_owned(), json!(TOKEN));
    m
}

/// Binds `p` on the test scope (`TestScope`, [`params`]).
pub(super) fn bind(
    p: &Procedure,
    state: &ScopeState,
    fragments: &[SyncFragment],
) -> Result<RemoteRequest, ProcedureError> {
    p.bind(state, "TestScope", &params(), fragments).map(|r| r.expect("the procedure has a remote call"))
}

/// A header's value.
pub(super) fn header<'a>(r: &'a RemoteRequest, name: &str) -> Option<&'a str> {
    r.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}
