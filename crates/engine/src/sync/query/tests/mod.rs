//! Tests of server-side writes: the reference's query tests ported (`reference.rs`,
//! `key_paths.rs`), plans applied to scopes (`scenarios.rs`), every error (`errors.rs`), and
//! properties over arbitrary JSON (`props.rs`).

mod errors;
mod key_paths;
mod props;
mod reference;
mod scenarios;

use serde_json::Value;
use tether_proto::jetstream::{SyncFragment, Uuid};

use crate::sync::tests::{chat_room, check_invariants, u};
use crate::sync::{ScopeState, UpdateError, plan_update};

/// The first UUID `new_uuid` gives in these tests (then the next ones, counting up).
const FIRST_NEW: u32 = 0xF001;

/// `new_uuid` for tests: `u(0xF001)`, `u(0xF002)`, …
fn counter() -> impl FnMut() -> Uuid {
    let mut n = FIRST_NEW - 1;
    move || {
        n += 1;
        u(n)
    }
}

/// The `i`-th UUID (from 0) [`counter`] gives.
fn new(i: u32) -> Uuid {
    u(FIRST_NEW + i)
}

/// `new(i)` as a string.
fn news(i: u32) -> String {
    new(i).to_string()
}

/// Plans an update with [`counter`].
fn plan(sc: &ScopeState, query: Value, update: Value) -> Result<Vec<SyncFragment>, UpdateError> {
    plan_update(sc, &query, &update, &mut counter())
}

/// The error of an update that cannot be planned.
fn plan_err(sc: &ScopeState, query: Value, update: Value) -> UpdateError {
    plan(sc, query, update).expect_err("the update is refused")
}

/// Plans an update and applies it atomically, as the server does; checks that every fragment
/// applied, that what applied is what was planned (normalised), and the graph invariants.
/// Returns the planned fragments.
fn run(sc: &mut ScopeState, query: Value, update: Value) -> Vec<SyncFragment> {
    let fragments = plan(sc, query, update).expect("the update is planned");
    let a = sc.apply(&fragments, true);
    assert!(a.replies.iter().all(Result::is_ok), "replies {:?} to {fragments:?}", a.replies);
    assert_eq!(a.applied.len(), fragments.len());
    check_invariants(sc);
    fragments
}

/// The value of property `key` of object `uuid`.
fn get(sc: &ScopeState, uuid: Uuid, key: &str) -> Value {
    let (_, values) = sc.object(&uuid).unwrap_or_else(|| panic!("object {uuid} is in the scope"));
    values.into_iter().find(|(k, _)| *k == key).map(|(_, v)| v).unwrap_or_else(|| panic!("property {key}"))
}

/// True if object `uuid` is in the scope.
fn has(sc: &ScopeState, uuid: Uuid) -> bool {
    sc.object(&uuid).is_some()
}
