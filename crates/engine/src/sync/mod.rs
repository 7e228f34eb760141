//! Model sync: typed object graphs (scopes) edited by changesets, with the semantics of the
//! Jetstream Sync protocol (npm `jetstream@0.13.4`, whose code is the reference; the wire
//! side is `tether_proto::jetstream` and the server's `/jetstream` dialect).
//!
//! Pure: no IO, no clock, no randomness, no JSON text. Property values are
//! `serde_json::Value`s, checked and normalised here.
//!
//! - [`Schema`]: models and enumerations, built from a [`SchemaDef`] (the schema file).
//! - [`ScopeState`]: one scope's objects; [`ScopeState::apply`] applies a changeset and
//!   says what to reply and what to broadcast; [`ScopeState::snapshot`] is the
//!   `ScopeState` message's fragments and [`ScopeState::from_snapshot`] reads them back.
//! - [`Procedure`]: downstream validation of a changeset (constraints, then a remote HTTP
//!   call whose request it binds and whose response it reads; the server does the IO).
//! - [`plan_update`]: server-side writes (`$set`, `$push`, `$addToSet`, `$pull` on key paths)
//!   planned as the changeset fragments that perform them.
//!
//! # Schema file
//!
//! TOML, read into [`SchemaDef`] (unknown keys are errors):
//!
//! ```toml
//! [enums]
//! MessageStatus = { Sent = 0, Read = 1 }   # integer enumeration: name = integer
//! Palette = ["red", "green", "blue"]       # string enumeration
//!
//! [extends]
//! Circle = "Shape"                         # model Circle extends model Shape
//!
//! [models.Canvas]
//! name = "String"
//! shapes = "[Shape]"                       # a collection of references (Circles too)
//!
//! [models.Shape]
//! x = "Number"
//! y = { type = "Number", default = 0 }
//! color = "Number"
//! created = "Date"
//! visible = { type = "Boolean", default = true }
//! tags = "[String]"
//! status = "MessageStatus"
//! palette = "[Palette]"
//!
//! [models.Circle]
//! radius = "Number"                        # plus every property of Shape, first
//! ```
//!
//! - **Types**: `String`, `Number` (a finite double), `Boolean`, `Date` (seconds since the
//!   epoch on the wire), an enumeration name, a model name (a reference to an object of that
//!   model or of any model extending it: a UUID string, or `null`), or `[T]`, a collection
//!   of any of those (no collections of collections).
//! - **Names** of enumerations, models and properties start with a letter or `_` and have
//!   only letters, digits and `_`. `String`, `Number`, `Boolean` and `Date` cannot be
//!   redefined; a name is an enumeration or a model, not both.
//! - **Properties** are `name = "Type"` or `name = { type = "Type", default = value }`. A
//!   default is checked like an incoming value (a `Date` default is a number of seconds or an
//!   ISO 8601 string); a reference cannot have one. Without one, a new object's value is
//!   `null` (`[]` for collections; unset for references).
//! - **Enumerations**: an array of strings, or a table of names to integers (within ±2^53).
//!   A value that is neither, or an empty enumeration, is an error.
//! - **Subtypes**: the `[extends]` table maps a model to the model it extends, so that no
//!   property name is reserved for it. A subtype has its supertype's properties (first, in
//!   their order) and its own; redeclaring an inherited property, extending an unknown model
//!   and inheritance cycles are errors.
//! - **Order**: properties are listed (in snapshots) and references followed (for the
//!   snapshot's depth-first order) in the order the file declares them, and an integer
//!   enumeration's values are quoted in that order in error messages. The `toml` crate keeps
//!   that order only with its `preserve_order` feature; without it, tables arrive sorted.
//!
//! [`Schema::from_def`] reports the first problem as a [`SchemaError`] naming the
//! enumeration, model and property, e.g. `model 'Shape', property 'status': unknown type
//! 'MessageStatuz'`.
//!
//! # Scopes
//!
//! A scope holds a root object and every object reachable from it through references. Which
//! models it can hold follows from the root's model: the root's, every model a property of
//! one of them refers to, and every subtype of those (as in the reference, plus subtypes).
//! An add fragment of any other model fails with "No such class type".
//!
//! There is no remove fragment: an object leaves the scope when it is no longer reachable
//! from the root (the orphan sweep, after every changeset; cycles cut off from the root go
//! too). [`ScopeState::apply`] lists the steps of a changeset.
//!
//! # Values
//!
//! | type | accepted | stored and sent as |
//! |---|---|---|
//! | `String` | a string, `null` | as sent |
//! | `Number` | a number, `null` | JavaScript's form: `1.0` → `1`, `-0` → `0` |
//! | `Boolean` | `true`, `false`, `null` | as sent |
//! | `Date` | seconds since the epoch, an ISO 8601 string, `null` | seconds (ms precision) |
//! | enumeration | a declared value (not `null`) | the declared value |
//! | reference | a UUID string of an object in the scope or added by the changeset, `null` | lower-case UUID |
//! | `[T]` | an array of `T` (`null` elements allowed for `String`, `Number`, `Boolean`, `Date`) | array |
//!
//! # Messages
//!
//! Rejected fragments get the reference's messages (listed in `error.rs` with the line of
//! the reference each reproduces): `No property at 'k'`, `Not valid type at 'k', should be
//! Number` (`String`, `Boolean`, `Date`), `Not valid type at 'k', should be one of [0,1]`,
//! `Collection type without array value at 'k'`, `Not valid type at 'k', should be array of
//! UUIDs`, `Cannot set property at 'k' as non-UUID`, `No such ModelObject 'u' at 'k'`, `No
//! such ModelObjects '["u1","u2"]' at 'k'`, `ModelObject with UUID 'u' already exists`, `No
//! such class type 'X'`, `ModelObject not found`, `No parents, parent sync fragment failed`.
//! Tether adds `Not valid type at 'k', should be Shape` (and `should be array of Shape`) for a
//! reference to an object of the wrong model, which the reference accepted and then silently
//! ignored, and `Atomic changeset rejected: another fragment failed` (kind
//! `atomic-changeset-rejected`).
//!
//! # Differences from the reference
//!
//! Where the reference is inconsistent, loses data or crashes, Tether does this instead:
//!
//! - `atomic: true` is honoured (the reference parses it and ignores it).
//! - A reference to an object of the wrong model is rejected (the reference replied success
//!   and left the property unchanged).
//! - Subtypes of the models a scope can hold can be added (the reference only knows the
//!   models named by property types).
//! - Cycles cut off from the root are removed (the reference keeps them forever).
//! - An add that refers to an add that failed fails, whatever their order (in the reference,
//!   only if the failed one came first; otherwise it kept a reference to an object that is
//!   not in the scope). The same UUID added twice in one changeset: the second fails with
//!   "already exists" (the reference accepted both, and the second won).
//! - "No parents" is decided on the applied fragments, not on the final graph (see
//!   [`ScopeState::apply`]): an add attached and detached again in one changeset is applied (and swept);
//!   adds that hang only from other unattached adds fail (the reference committed them,
//!   unreachable, forever).
//! - Dates: incoming numbers are seconds, as the reference sends them (it read them as
//!   milliseconds), booleans are refused, strings must be ISO 8601 (V8 takes more), and
//!   dates are normalised to seconds everywhere (the reference broadcast them as sent, and
//!   wrote `[Date]` collections as ISO strings in snapshots).
//! - A change's `clsName` is not checked (as in the reference), but the applied fragment
//!   carries the object's model (the reference broadcast whatever was sent).
//! - A fragment without properties is applied as one with `{}` (the reference crashed:
//!   `Object.keys(null)` in an asynchronous callback).

mod apply;
mod error;
mod graph;
mod hash;
mod procedure;
mod query;
mod schema;
mod scope;
mod value;
mod verify;

#[cfg(test)]
mod tests;

pub use procedure::{
    ConstraintDef, ConstraintType, Procedure, ProcedureDef, ProcedureError, ProcedureUpdate, RemoteDef,
    RemoteRequest,
};
pub use query::{At, UpdateError, plan_update};
pub use schema::{EnumDef, PropertyDef, PropertySpec, Schema, SchemaDef, SchemaError, Table};
pub use scope::{Applied, FragmentError, ScopeState};
