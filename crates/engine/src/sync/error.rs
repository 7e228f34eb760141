//! [`FragmentError`] and every message a fragment can be rejected with.
//!
//! The wording is the reference server's (`jetstream@0.13.4`, `lib/`), character for
//! character, because Jetstream clients show these messages and tests compare them. Each
//! constructor names the line of the reference it reproduces; the few messages Tether adds
//! (where the reference silently did something wrong) say so.

use std::fmt;

/// Why one fragment of a changeset was not applied: the `error` of its entry in
/// `ScopeSyncReply.fragmentReplies`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FragmentError {
    /// Human-readable message, in the reference's wording.
    pub message: String,
    /// Machine-readable kind (the wire `type`), when the error has one. Validation errors
    /// have none, as in the reference.
    pub kind: Option<&'static str>,
}

impl fmt::Display for FragmentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for FragmentError {}

/// The `kind` of [`atomic_rejected`].
pub(crate) const ATOMIC_REJECTED_KIND: &str = "atomic-changeset-rejected";

impl FragmentError {
    fn plain(message: String) -> Self {
        Self { message, kind: None }
    }
}

/// `sync_fragment.js` `verifyPropertiesForType`: the key is not a property of the model.
pub(crate) fn no_property(key: &str) -> FragmentError {
    FragmentError::plain(format!("No property at '{key}'"))
}

/// `sync_fragment.js` `_verifyFragmentValueProperty`: `type_name` is the JS constructor's
/// name (`String`, `Number`, `Boolean`, `Date`).
pub(crate) fn not_valid_type(key: &str, type_name: &str) -> FragmentError {
    FragmentError::plain(format!("Not valid type at '{key}', should be {type_name}"))
}

/// `sync_fragment.js` `_verifyFragmentEnumerationProperty`: `values_json` is
/// `JSON.stringify(values)`, e.g. `[0,1]` or `["red","green"]`.
pub(crate) fn not_one_of(key: &str, values_json: &str) -> FragmentError {
    FragmentError::plain(format!("Not valid type at '{key}', should be one of {values_json}"))
}

/// `sync_fragment.js` `verifyPropertiesForType`: a collection of values (or enumeration
/// values) given something other than an array.
pub(crate) fn collection_without_array(key: &str) -> FragmentError {
    FragmentError::plain(format!("Collection type without array value at '{key}'"))
}

/// `sync_fragment.js` `_verifyFragmentModelObjectProperty`: a collection of references given
/// something other than an array of non-empty strings.
pub(crate) fn array_of_uuids(key: &str) -> FragmentError {
    FragmentError::plain(format!("Not valid type at '{key}', should be array of UUIDs"))
}

/// `sync_fragment.js` `_verifyFragmentModelObjectProperty`: a single reference given
/// something other than a string or `null`.
pub(crate) fn non_uuid(key: &str) -> FragmentError {
    FragmentError::plain(format!("Cannot set property at '{key}' as non-UUID"))
}

/// `sync_fragment.js` `_verifyFragmentModelObjectProperty`: a single reference to an object
/// that is neither in the scope nor added by the same changeset. `value` is the string sent,
/// lower-cased.
pub(crate) fn no_such_object(value: &str, key: &str) -> FragmentError {
    FragmentError::plain(format!("No such ModelObject '{value}' at '{key}'"))
}

/// `sync_fragment.js` `_verifyFragmentModelObjectProperty` (the branch with a scope, which is
/// the one a changeset takes): every element of a reference collection that was not found,
/// in order, as `JSON.stringify` writes an array of strings, inside single quotes.
pub(crate) fn no_such_objects(missing: &[String], key: &str) -> FragmentError {
    // Strings only: serde_json escapes exactly as JSON.stringify does (\" \\ \b \f \n \r \t,
    // other control characters as \u00xx with lower-case hex).
    let list = serde_json::to_string(missing).unwrap_or_else(|_| "[]".to_owned());
    FragmentError::plain(format!("No such ModelObjects '{list}' at '{key}'"))
}

/// Tether: a reference to an object whose model is not the property's model or a subtype
/// of it. The reference verified only that the object existed, then silently left the
/// property unchanged while replying success; Tether rejects the fragment instead.
pub(crate) fn wrong_model(key: &str, model: &str) -> FragmentError {
    FragmentError::plain(format!("Not valid type at '{key}', should be {model}"))
}

/// Tether: as [`wrong_model`], for a reference collection.
pub(crate) fn wrong_model_collection(key: &str, model: &str) -> FragmentError {
    FragmentError::plain(format!("Not valid type at '{key}', should be array of {model}"))
}

/// `scope.js` `_temporalModelObjectForAddSyncFragment`: an add fragment for a UUID that is
/// in the scope (or added earlier in the same changeset: Tether's reading of a case the
/// reference mishandles).
pub(crate) fn already_exists(uuid: &str) -> FragmentError {
    FragmentError::plain(format!("ModelObject with UUID '{uuid}' already exists"))
}

/// `scope.js` `_temporalModelObjectForAddSyncFragment`: `clsName` is not a model this scope
/// can hold.
pub(crate) fn no_such_class(cls_name: &str) -> FragmentError {
    FragmentError::plain(format!("No such class type '{cls_name}'"))
}

/// `scope.js` `_applyChangeSyncFragment`: a change fragment for a UUID that is not in the
/// scope (objects added by the same changeset are not in it yet).
pub(crate) fn object_not_found() -> FragmentError {
    FragmentError::plain("ModelObject not found".to_owned())
}

/// `scope.js` `commitAttachedTemporalModelObjects`: an added object that nothing applied
/// in the changeset refers to.
pub(crate) fn no_parents() -> FragmentError {
    FragmentError::plain("No parents, parent sync fragment failed".to_owned())
}

/// Tether (`atomic: true`): this fragment was valid, but another one of its changeset
/// failed, so none was applied.
pub(crate) fn atomic_rejected() -> FragmentError {
    FragmentError {
        message: "Atomic changeset rejected: another fragment failed".to_owned(),
        kind: Some(ATOMIC_REJECTED_KIND),
    }
}

/// Tether, [`ScopeState::from_snapshot`](super::ScopeState::from_snapshot): the snapshot
/// has no fragment for its root.
pub(crate) fn snapshot_without_root(root: &str) -> FragmentError {
    FragmentError::plain(format!("Snapshot has no fragment for its root '{root}'"))
}

/// Tether, [`ScopeState::from_snapshot`](super::ScopeState::from_snapshot): which fragment
/// of the snapshot an error is about.
pub(crate) fn in_snapshot_fragment(index: usize, uuid: &str, e: FragmentError) -> FragmentError {
    FragmentError { message: format!("snapshot fragment {index} ('{uuid}'): {}", e.message), kind: e.kind }
}
