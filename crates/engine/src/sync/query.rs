//! Server-side writes: the reference's `scope.update(query, update)` (`lib/query/` of
//! `jetstream@0.13.4`) as a pure function, [`plan_update`], that turns a Mongo-style update
//! into the changeset fragments performing it, without applying anything. The caller applies
//! them with [`ScopeState::apply`]`(&fragments, true)` (atomic) and broadcasts what applied.
//!
//! The grammar of queries and updates, what the result holds and how Tether differs from
//! the reference are documented on [`plan_update`], for readers of the public API.
//!
//! How it works: every key path is resolved on the scope as it is (`path.rs`), and every
//! place it goes through or writes is recorded, so that order-dependent key paths are found
//! (`Planner::touch`). Writes to existing objects are kept per (object, property), objects
//! created by inline objects with their properties; `Planner::finish` turns them into one
//! `change` per object written and one `add` per object created and attached. Filters (for
//! `$pull` and queries) are in `filter.rs`.

mod filter;
mod path;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde_json::{Map, Value};
use tether_proto::jetstream::{FragmentKind, SyncFragment, Uuid};

use super::schema::{Prop, Schema, Single};
use super::scope::ScopeState;
use super::value::{Slot, check_value, uuid_string};

/// How deep inline objects (and filters) may nest in one operand: enough for any schema a
/// person writes, and a bound on recursion whatever the input.
const MAX_DEPTH: usize = 32;

/// Where in a query or update something is: the operator (or `query`) and the key path, as
/// written, extended with the keys of inline objects and filters (`messages.author`) and the
/// positions in arrays given (`messages[1]`, `users.$each[0]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct At {
    /// `$set`, `$push`, `$addToSet`, `$pull` or `query`.
    pub op: &'static str,
    /// The key path (empty for the query itself).
    pub path: String,
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The query as a whole has no path; a key path is quoted even when empty.
        if self.path.is_empty() && self.op == "query" {
            f.write_str(self.op)
        } else {
            write!(f, "{} '{}'", self.op, self.path)
        }
    }
}

impl At {
    fn new(op: &'static str, path: &str) -> Self {
        Self { op, path: path.to_owned() }
    }

    /// A key inside the operand at this place.
    fn key(&self, key: &str) -> Self {
        let path = if self.path.is_empty() { key.to_owned() } else { format!("{}.{key}", self.path) };
        Self { op: self.op, path }
    }

    /// Element `i` of an array given at this place.
    fn index(&self, i: usize) -> Self {
        Self { op: self.op, path: format!("{}[{i}]", self.path) }
    }
}

/// Why an update cannot be planned. Nothing was changed. [`code`](Self::code) is a stable
/// machine-readable kind; the message names the operator and key path concerned.
///
/// Values of the wrong type are not caught here: they reach [`ScopeState::apply`], which
/// rejects the changeset with the reference's message for them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpdateError {
    /// The query is not `null`, `{}` or one of the supported forms.
    #[error("invalid query: {reason}")]
    InvalidQuery {
        /// What is wrong.
        reason: String,
    },
    /// The query's `$uuid` names no object of the scope.
    #[error("no object with $uuid '{uuid}' in the scope")]
    NotFound {
        /// The UUID, lower-case.
        uuid: String,
    },
    /// The query's `$cls` is not the model of the object its `$uuid` names, nor a supertype.
    #[error("object '{uuid}' is a '{model}', which is not '{cls}' or a model extending it")]
    ClassMismatch {
        /// The object.
        uuid: String,
        /// Its model.
        model: String,
        /// The query's `$cls`.
        cls: String,
    },
    /// No object matches the query's property conditions.
    #[error("no object matches the query")]
    NoMatch,
    /// Several objects match the query; an update applies to one.
    #[error("the query matches {count} objects; it must match exactly one (add $uuid or more conditions)")]
    AmbiguousQuery {
        /// How many match.
        count: usize,
    },
    /// The update is not an object of operators, an operator's operand is not an object, or
    /// there is no operator at all.
    #[error("invalid update: {reason}")]
    InvalidUpdate {
        /// What is wrong.
        reason: String,
    },
    /// A key of the update that is not an operator.
    #[error("unknown operator '{operator}': the operators are $set, $push, $addToSet and $pull")]
    UnknownOperator {
        /// The key.
        operator: String,
    },
    /// A key path that does not parse, or uses an index where none can be.
    #[error("{at}: invalid key path: {reason}")]
    InvalidKeyPath {
        /// Where.
        at: At,
        /// What is wrong.
        reason: String,
    },
    /// A property name that the object's model (or a filter's model) does not have.
    #[error("{at}: model '{model}' has no property '{property}'")]
    UnknownProperty {
        /// Where.
        at: At,
        /// The model.
        model: String,
        /// The name.
        property: String,
    },
    /// A key path that continues past a property that is not a reference to an object.
    #[error("{at}: '{property}' is not a reference to an object, so the key path cannot continue past it")]
    NotAReference {
        /// Where.
        at: At,
        /// The property.
        property: String,
    },
    /// A key path that continues past a collection without naming an element.
    #[error(
        "{at}: '{property}' is a collection: name one of its elements with an index ('{property}[0]', \
         '{property}.0', '{property}[-1]')"
    )]
    MissingIndex {
        /// Where.
        at: At,
        /// The collection property.
        property: String,
    },
    /// An index beyond the collection's ends.
    #[error("{at}: index {index} is out of range: '{property}' has {len} elements")]
    IndexOutOfRange {
        /// Where.
        at: At,
        /// The collection property.
        property: String,
        /// The index, as written.
        index: i64,
        /// The collection's length.
        len: usize,
    },
    /// A key path that continues past a reference that is `null`.
    #[error("{at}: '{property}' is null, so the key path cannot continue past it")]
    NoObject {
        /// Where.
        at: At,
        /// The reference property.
        property: String,
    },
    /// `$push`, `$addToSet` or `$pull` on a property that is not a collection.
    #[error("{at}: '{property}' is not a collection ({op} applies to collections)", op = at.op)]
    NotACollection {
        /// Where.
        at: At,
        /// The property.
        property: String,
    },
    /// `$push`, `$addToSet` or `$pull` on one element of a collection.
    #[error("{at}: {op} applies to a whole collection, not to one element", op = at.op)]
    ElementNotAllowed {
        /// Where.
        at: At,
    },
    /// An operand that cannot be used: `$each` that is not an array, an inline object with
    /// an invalid `$uuid` or `$cls`, a `$pull` match or filter that cannot match, …
    #[error("{at}: {reason}")]
    InvalidValue {
        /// Where.
        at: At,
        /// What is wrong.
        reason: String,
    },
    /// `$cls` names no model of the schema.
    #[error("{at}: no model '{cls}' ($cls)")]
    UnknownModel {
        /// Where.
        at: At,
        /// The name.
        cls: String,
    },
    /// Two key paths whose result would depend on which applies first.
    #[error(
        "{first} and {second} conflict: both touch the same property, so the result would depend on \
         which applies first"
    )]
    Conflict {
        /// The one planned first.
        first: At,
        /// The other.
        second: At,
    },
    /// `new_uuid` gave a UUID that an object of the scope, or of this update, already has.
    #[error("{at}: the new object's generated UUID '{uuid}' is already in use")]
    UuidCollision {
        /// Where.
        at: At,
        /// The UUID.
        uuid: String,
    },
}

impl UpdateError {
    /// A stable machine-readable kind, in kebab case: `invalid-query`, `not-found`,
    /// `class-mismatch`, `no-match`, `ambiguous-query`, `invalid-update`, `unknown-operator`,
    /// `invalid-key-path`, `unknown-property`, `not-a-reference`, `missing-index`,
    /// `index-out-of-range`, `no-object`, `not-a-collection`, `element-not-allowed`,
    /// `invalid-value`, `unknown-model`, `conflict`, `uuid-collision`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidQuery { .. } => "invalid-query",
            Self::NotFound { .. } => "not-found",
            Self::ClassMismatch { .. } => "class-mismatch",
            Self::NoMatch => "no-match",
            Self::AmbiguousQuery { .. } => "ambiguous-query",
            Self::InvalidUpdate { .. } => "invalid-update",
            Self::UnknownOperator { .. } => "unknown-operator",
            Self::InvalidKeyPath { .. } => "invalid-key-path",
            Self::UnknownProperty { .. } => "unknown-property",
            Self::NotAReference { .. } => "not-a-reference",
            Self::MissingIndex { .. } => "missing-index",
            Self::IndexOutOfRange { .. } => "index-out-of-range",
            Self::NoObject { .. } => "no-object",
            Self::NotACollection { .. } => "not-a-collection",
            Self::ElementNotAllowed { .. } => "element-not-allowed",
            Self::InvalidValue { .. } => "invalid-value",
            Self::UnknownModel { .. } => "unknown-model",
            Self::Conflict { .. } => "conflict",
            Self::UuidCollision { .. } => "uuid-collision",
        }
    }
}

fn invalid(at: &At, reason: impl Into<String>) -> UpdateError {
    UpdateError::InvalidValue { at: at.clone(), reason: reason.into() }
}

/// The operators, in the order they are planned (which only decides the order of the
/// fragments, of `new_uuid` calls and of errors: results do not depend on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Set,
    Push,
    AddToSet,
    Pull,
}

impl Op {
    const ALL: [Op; 4] = [Op::Set, Op::Push, Op::AddToSet, Op::Pull];

    fn name(self) -> &'static str {
        match self {
            Op::Set => "$set",
            Op::Push => "$push",
            Op::AddToSet => "$addToSet",
            Op::Pull => "$pull",
        }
    }
}

/// Turns a Mongo-style update of the reference (`$set`, `$push`, `$pull`, `$addToSet` on key
/// paths) into the changeset fragments that perform it, without applying anything. The
/// server then applies them with [`ScopeState::apply`]`(&fragments, true)` (atomic) and
/// broadcasts the applied fragments to every member.
///
/// This is the reference's `scope.update(query, update)` (`lib/query/` of
/// `jetstream@0.13.4`). `query` selects the object key paths start from; `update` is the
/// operators. `new_uuid` is called once for each object the update creates without a
/// `$uuid` (a random v4 UUID in production, a counter in tests).
///
/// Pure and deterministic (given `new_uuid`): nothing is changed, and the fragments are the
/// same whatever the order of the JSON objects' keys. An error ([`UpdateError`]) means
/// nothing was planned. Values of the wrong type are not errors here: `apply` refuses the
/// changeset with the reference's message for them (and, the changeset being atomic, the
/// fragments that depend on the failing one fail too, with "No parents" or "No such
/// ModelObject").
///
/// # Query: which object the update starts from
///
/// | query | selects |
/// |---|---|
/// | `null`, `{}` | the root |
/// | `{"$uuid": "<uuid>"}` | that object (error `not-found` if it is not in the scope) |
/// | `{"$uuid": "<uuid>", "$cls": "Message"}` | that object, which must be a `Message` or of a model extending it (`class-mismatch`) |
/// | `{"$cls": "User", "username": "alice"}` | the one object of model `User` (or a subtype) whose properties have these values: none is `no-match`, several `ambiguous-query` |
/// | `{"$uuid": "<uuid>", "text": "hi"}` | that object, if its properties have these values (else `no-match`) |
///
/// Property conditions are those of a [filter](#filters). Matching by property values needs
/// `$cls` or `$uuid` (the model says what the properties are).
///
/// # Update
///
/// An object of operators, each an object of key paths to operands:
///
/// ```json
/// {"$set": {"name": "Lobby", "attributes.topic": "Rust", "messages[-1].text": "edited"},
///  "$push": {"messages": {"author": "<user uuid>", "postedAt": 1425445567, "text": "hi"}},
///  "$addToSet": {"users": "<user uuid>"},
///  "$pull": {"users": {"username": "mallory"}}}
/// ```
///
/// - **`$set`** `{"path": value}`: sets a property, or one element of a collection when the
///   path ends with an index (`"shapes[0]"`, `"tags.-1"`).
/// - **`$push`** `{"path": item}` or `{"path": {"$each": [items], "$position": n}}`: appends to a
///   collection (`$position`, optional, inserts at `n` instead: `0` is the front, a negative
///   `n` counts from the end, `-1` being before the last element; out of range is clamped).
/// - **`$addToSet`** `{"path": item}` or `{"path": {"$each": [items]}}`: appends each item not
///   already in the collection (references compared by UUID, values after normalisation: `1.0`
///   is `1`, an ISO date is its seconds).
/// - **`$pull`** `{"path": match}` or `{"path": {"$each": [matches]}}`: removes every element
///   that matches. In a collection of values a match is a value (`"red"`, `3`); in a
///   collection of references it is a UUID string, or a [filter](#filters) object
///   (`{"$uuid": "…"}`, `{"author": "<uuid>"}`, `{"author": {"username": "bob"}}`).
///
/// `$push`, `$addToSet` and `$pull` apply to a whole collection (the path names a collection
/// property, not an element). An operator's operand object may be empty (nothing to do); the
/// update may not be. An object's `$uuid` and `$cls` cannot be set.
///
/// ## Key paths
///
/// `segment(.segment)*`, each segment a property name, optionally followed by an index
/// `[i]`; after a collection property the index may also be the next segment (`messages.0`).
/// An index is an integer; a negative one counts from the end (`-1` is the last element).
/// Every segment but the last must lead to an object: a single reference that is not `null`,
/// or an element of a collection of references. Paths are resolved on the object the query
/// selected, as the scope is before the update, and on the object actually there (so a
/// property of a subtype is reachable when the object is of that subtype).
///
/// ## Values
///
/// - A value property takes any JSON value; [`ScopeState::apply`] validates it, so a wrong
///   type gets the reference's message (`Not valid type at 'x', should be Number`).
/// - A reference takes a UUID string (an object of the scope; hyphenated `8-4-4-4-12`, either
///   case), `null`, or an **inline object**; a collection of references takes an array of
///   those (no `null`).
/// - An inline object is `{"$uuid"?: "<uuid>", "$cls"?: "Model", …properties}`. If `$uuid`
///   names an object of the scope, it is a reference to that object and its properties are
///   set on it (`$cls`, if given, must be its model or a supertype). Otherwise it creates an
///   object (an `add` fragment): `$uuid` is its UUID (else one from `new_uuid`), `$cls` its
///   model (the property's model or a subtype; else the property's model), and its
///   properties are set as by `$set` (recursively, so inline objects can hold inline objects,
///   at most 32 deep).
///
/// ## Filters
///
/// `{"$uuid"?: "<uuid>", "$cls"?: "Model", "prop": value, …}`: every condition must hold.
/// `$cls` holds for that model and any model extending it. A value property's condition is
/// its value (normalised as when it is set: dates in seconds or ISO 8601, a collection as
/// the whole array); a reference's is a UUID string, `null`, or a nested filter on the object
/// it refers to; a collection of references' is the exact array of UUIDs. The property may be
/// declared by a subtype of the filtered model; an object without it does not match.
///
/// # Order and conflicts
///
/// Every key path is resolved, and every operator computed, on the scope as it is before the
/// update, so the result does not depend on the order of operators or key paths. Key paths
/// whose result would depend on that order conflict, and the update is refused (`conflict`),
/// as MongoDB does: two writes to the same property (of the same object, whichever paths
/// reach it), or a write to a property that another key path goes through
/// (`{"$set": {"attributes": {…}, "attributes.topic": "x"}}`). Writes to different elements
/// of one collection (`tags[0]`, `tags[1]`) do not conflict.
///
/// # Result
///
/// One `change` fragment per existing object written (its written properties, a collection
/// always whole, in the model's property order), then one `add` fragment per object created
/// that the update attaches, in creation order. A `$set` always writes (even the value the
/// property has); a `$push`, `$addToSet` or `$pull` that leaves its collection as it was
/// writes nothing, so an update may give no fragments at all. Nothing is ever removed directly: objects an update detaches (`$pull`, a
/// replaced reference) are removed by the orphan sweep when the fragments are applied.
///
/// # Differences from the reference
///
/// - One changeset, applied atomically, for the whole update (the reference applied each
///   operator as its own changeset, in key order, so a failing operator left the earlier ones
///   applied); order-dependent key paths are refused instead of depending on JSON key order.
/// - `$set` of `"shapes[0]"` sets that element (the reference ignored the index and set the
///   whole collection to the value).
/// - Collections of values work with `$push`, `$addToSet` and `$pull` (the reference handled
///   only collections of references for the first two).
/// - An unchanged collection writes nothing (the reference always sent the collection: its
///   unchanged check compared a length with an array).
/// - `$addToSet` with `$each` adds a repeated item once (the reference added it each time).
/// - `$push` takes `$position` (with `$each`).
/// - `$pull` from a collection of references also takes a UUID string, filters on
///   references (by UUID, `null`, or a nested filter), `$cls`, and properties of subtypes,
///   and checks filter values against the property types (the reference compared raw values,
///   so a date or a reference never matched).
/// - Queries: `$uuid` without `$cls`, `$cls` as "is a" (the reference wanted the exact
///   model), and property conditions; an unknown `$uuid` is an error (the reference reported
///   success with nothing matched).
/// - Inline objects: `$cls` may name the property's own model (the reference accepted only
///   strict subtypes) and, for an existing object, a supertype of its model (the reference
///   wanted its exact model name, and without `$cls` refused an existing object of a
///   subtype).
/// - Key paths resolve on the objects there, not on declared types: the reference looked a
///   property missing from the declared model up in its subtypes and refused one declared by
///   two of them ("ambiguous"); Tether finds it on the object, whatever its model. An index
///   after a single reference is an error (the reference ignored it).
/// - Not supported: MongoDB's query conditions (`$gte`, `$in`, …), the positional `$`,
///   `$slice` and `$sort` (neither did the reference); updating several objects with one
///   query (the reference could not either).
pub fn plan_update(
    state: &ScopeState,
    query: &Value,
    update: &Value,
    new_uuid: &mut dyn FnMut() -> Uuid,
) -> Result<Vec<SyncFragment>, UpdateError> {
    let target = filter::find_target(state, query)?;
    let ops = operators(update)?;
    let mut planner = Planner::new(state, new_uuid);
    for (op, operands) in ops {
        for (path, operand) in operands {
            planner.key_path(target, op, path, operand)?;
        }
    }
    Ok(planner.finish())
}

/// The key paths of one operator, with their operands.
type Operands = Map<String, Value>;

/// The update's operators, checked, in planning order.
fn operators(update: &Value) -> Result<Vec<(Op, &Operands)>, UpdateError> {
    let Value::Object(ops) = update else {
        return Err(UpdateError::InvalidUpdate {
            reason: "the update must be an object of operators ($set, $push, $addToSet, $pull)".to_owned(),
        });
    };
    if ops.is_empty() {
        return Err(UpdateError::InvalidUpdate { reason: "the update has no operator".to_owned() });
    }
    // Every key is checked before anything is planned, so that an unknown operator is
    // reported whatever else is wrong.
    if let Some(k) = ops.keys().find(|k| !Op::ALL.iter().any(|op| op.name() == k.as_str())) {
        return Err(UpdateError::UnknownOperator { operator: k.clone() });
    }
    let mut out = Vec::with_capacity(ops.len());
    for op in Op::ALL {
        match ops.get(op.name()) {
            None => {}
            Some(Value::Object(m)) => out.push((op, m)),
            Some(_) => {
                return Err(UpdateError::InvalidUpdate {
                    reason: format!("the operand of {} must be an object of key paths to values", op.name()),
                });
            }
        }
    }
    Ok(out)
}

/// One place a key path reads (goes through) or writes, for conflict detection.
#[derive(Debug)]
struct Touch {
    /// The element, for a collection element; `None` is the whole property.
    index: Option<usize>,
    write: bool,
    /// The key path it belongs to (numbered in planning order).
    path: usize,
    at: At,
}

/// What the update writes to one property of an existing object.
#[derive(Debug)]
enum Write {
    /// A new value for the whole property. `changed` is false for a collection operation
    /// that left the collection as it was.
    Whole { value: Value, changed: bool },
    /// New values for some elements of a collection (distinct indices).
    Elements(Vec<(usize, Value)>),
}

/// An object the update creates.
#[derive(Debug)]
struct NewObj {
    uuid: Uuid,
    cls: usize,
    /// Its properties, in the order given.
    props: Vec<(usize, Value)>,
}

/// The plan of one update, built key path by key path on the unchanged scope.
struct Planner<'a, 'f> {
    state: &'a ScopeState,
    schema: &'a Schema,
    new_uuid: &'a mut (dyn FnMut() -> Uuid + 'f),
    /// The number of key paths planned so far.
    paths: usize,
    touches: HashMap<(Uuid, usize), Vec<Touch>>,
    writes: HashMap<(Uuid, usize), Write>,
    /// The existing objects written, in the order first written (the change fragments'
    /// order; a `HashMap`'s would vary from run to run).
    written: Vec<Uuid>,
    written_set: HashSet<Uuid>,
    created: Vec<NewObj>,
    created_index: HashMap<Uuid, usize>,
}

impl<'a, 'f> Planner<'a, 'f> {
    fn new(state: &'a ScopeState, new_uuid: &'a mut (dyn FnMut() -> Uuid + 'f)) -> Self {
        Self {
            state,
            schema: &state.schema,
            new_uuid,
            paths: 0,
            touches: HashMap::new(),
            writes: HashMap::new(),
            written: Vec::new(),
            written_set: HashSet::new(),
            created: Vec::new(),
            created_index: HashMap::new(),
        }
    }

    /// Plans one key path of one operator.
    fn key_path(&mut self, start: Uuid, op: Op, path: &str, operand: &Value) -> Result<(), UpdateError> {
        let at = At::new(op.name(), path);
        let id = self.paths;
        self.paths += 1;
        let r = path::resolve(self.state, start, path, &at)?;
        for &(obj, prop, index) in &r.through {
            self.touch(obj, prop, index, false, id, &at)?;
        }
        let Some(cls) = self.state.objects.get(&r.obj).map(|o| o.cls) else {
            // Resolution only ever ends on an object of the scope.
            return Err(UpdateError::NotFound { uuid: r.obj.to_string() });
        };
        let schema = self.schema;
        let prop = &schema.model(cls).props[r.prop];
        if op == Op::Set {
            self.touch(r.obj, r.prop, r.index, true, id, &at)?;
            // Before the operand's inline objects: the object written comes first.
            self.note_written(r.obj);
            match r.index {
                None => {
                    let v = self.value(&at, id, prop, operand, 0)?;
                    self.write_whole(r.obj, r.prop, v, true);
                }
                Some(i) => {
                    let v = self.element(&at, id, prop, operand, 0)?;
                    self.write_element(r.obj, r.prop, i, v);
                }
            }
            return Ok(());
        }
        if r.index.is_some() {
            return Err(UpdateError::ElementNotAllowed { at });
        }
        if !prop.collection {
            return Err(UpdateError::NotACollection { at, property: prop.name.clone() });
        }
        self.touch(r.obj, r.prop, None, true, id, &at)?;
        self.note_written(r.obj);
        let current = self.current(r.obj, r.prop);
        let new = match op {
            Op::Push => self.push(&at, id, prop, operand, &current)?,
            Op::AddToSet => self.add_to_set(&at, id, prop, operand, &current)?,
            Op::Pull | Op::Set => self.pull(&at, prop, operand, &current)?,
        };
        let changed = new != current;
        self.write_whole(r.obj, r.prop, Value::Array(new), changed);
        Ok(())
    }

    /// Records that key path `path` reads or writes property `prop` of `obj` (one element
    /// of it if `index`), and refuses it if that conflicts with what was recorded before:
    /// two writes of the same place, or a write of a place another key path reads. Places
    /// overlap if they are the same element or one of them is the whole property.
    fn touch(
        &mut self,
        obj: Uuid,
        prop: usize,
        index: Option<usize>,
        write: bool,
        path: usize,
        at: &At,
    ) -> Result<(), UpdateError> {
        let list = self.touches.entry((obj, prop)).or_default();
        for t in list.iter() {
            let overlap = t.index.is_none() || index.is_none() || t.index == index;
            let clash = (write && t.write) || ((write || t.write) && t.path != path);
            if overlap && clash {
                return Err(UpdateError::Conflict { first: t.at.clone(), second: at.clone() });
            }
        }
        list.push(Touch { index, write, path, at: at.clone() });
        Ok(())
    }

    fn note_written(&mut self, obj: Uuid) {
        if self.written_set.insert(obj) {
            self.written.push(obj);
        }
    }

    fn write_whole(&mut self, obj: Uuid, prop: usize, value: Value, changed: bool) {
        self.note_written(obj);
        self.writes.insert((obj, prop), Write::Whole { value, changed });
    }

    fn write_element(&mut self, obj: Uuid, prop: usize, index: usize, value: Value) {
        self.note_written(obj);
        match self.writes.entry((obj, prop)).or_insert_with(|| Write::Elements(Vec::new())) {
            Write::Elements(list) => list.push((index, value)),
            // Unreachable: `touch` refuses an element write after a whole one.
            Write::Whole { .. } => {}
        }
    }

    /// The elements of a collection property of an object of the scope, in wire form.
    fn current(&self, obj: Uuid, prop: usize) -> Vec<Value> {
        match self.state.objects.get(&obj).and_then(|o| o.slots.get(prop)) {
            Some(Slot::Value(Value::Array(items))) => items.clone(),
            Some(Slot::Refs(us)) => us.iter().map(|u| Value::String(uuid_string(u))).collect(),
            _ => Vec::new(),
        }
    }

    /// The wire value for property `prop` from an operand: inline objects become the UUID
    /// of the object they create or name; everything else is passed on as given, for
    /// `apply` to validate.
    fn value(
        &mut self,
        at: &At,
        path: usize,
        prop: &Prop,
        v: &Value,
        depth: usize,
    ) -> Result<Value, UpdateError> {
        let Single::Model(m) = prop.single else {
            return Ok(v.clone());
        };
        if !prop.collection {
            return self.reference(at, path, m, v, depth);
        }
        match v {
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| self.reference(&at.index(i), path, m, item, depth))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            _ => Ok(v.clone()),
        }
    }

    /// The wire value of one element of collection `prop`.
    fn element(
        &mut self,
        at: &At,
        path: usize,
        prop: &Prop,
        v: &Value,
        depth: usize,
    ) -> Result<Value, UpdateError> {
        match prop.single {
            Single::Model(m) => self.reference(at, path, m, v, depth),
            _ => Ok(self.normalised(prop, v).unwrap_or_else(|| v.clone())),
        }
    }

    /// A reference to an object of model `m` (or a subtype): a UUID string (lower-cased),
    /// an inline object, or anything else as given.
    fn reference(
        &mut self,
        at: &At,
        path: usize,
        m: usize,
        v: &Value,
        depth: usize,
    ) -> Result<Value, UpdateError> {
        match v {
            Value::String(s) => {
                Ok(Uuid::parse(s).map_or_else(|| v.clone(), |u| Value::String(uuid_string(&u))))
            }
            Value::Object(o) => {
                let u = self.inline(at, path, m, o, depth)?;
                Ok(Value::String(uuid_string(&u)))
            }
            _ => Ok(v.clone()),
        }
    }

    /// An inline object for a reference to model `m`: sets the properties of the existing
    /// object its `$uuid` names, or creates one. Returns its UUID.
    fn inline(
        &mut self,
        at: &At,
        path: usize,
        m: usize,
        o: &Map<String, Value>,
        depth: usize,
    ) -> Result<Uuid, UpdateError> {
        if depth >= MAX_DEPTH {
            return Err(invalid(at, format!("inline objects nest more than {MAX_DEPTH} deep")));
        }
        let schema = self.schema;
        let given_uuid = match o.get("$uuid") {
            None => None,
            Some(Value::String(s)) => match Uuid::parse(s) {
                Some(u) => Some(u),
                None => return Err(invalid(at, format!("$uuid '{s}' is not a UUID"))),
            },
            Some(_) => return Err(invalid(at, "$uuid must be a UUID string")),
        };
        let given_cls = match o.get("$cls") {
            None => None,
            Some(Value::String(s)) => match schema.model_id(s) {
                Some(c) => Some(c),
                None => return Err(UpdateError::UnknownModel { at: at.clone(), cls: s.clone() }),
            },
            Some(_) => return Err(invalid(at, "$cls must be a model name")),
        };
        if let Some(k) = o.keys().find(|k| k.starts_with('$') && *k != "$uuid" && *k != "$cls") {
            return Err(invalid(
                at,
                format!("unknown key '{k}' in an inline object (its special keys are $uuid and $cls)"),
            ));
        }
        let props = || o.iter().filter(|(k, _)| !k.starts_with('$'));

        if let Some(u) = given_uuid
            && let Some(existing) = self.state.objects.get(&u)
        {
            // An object of the scope: a reference to it, and its properties set.
            let cls = existing.cls;
            let model = schema.model(cls);
            if let Some(c) = given_cls
                && !schema.is_subtype(cls, c)
            {
                return Err(invalid(
                    at,
                    format!(
                        "object '{u}' is a '{}', which is not '{}' or a model extending it ($cls)",
                        model.name,
                        schema.model(c).name
                    ),
                ));
            }
            for (k, v) in props() {
                let at_k = at.key(k);
                let p = self.prop_of(&at_k, cls, k)?;
                self.touch(u, p, None, true, path, &at_k)?;
                self.note_written(u);
                let value = self.value(&at_k, path, &model.props[p], v, depth + 1)?;
                self.write_whole(u, p, value, true);
            }
            return Ok(u);
        }

        if let Some(c) = given_cls
            && !schema.is_subtype(c, m)
        {
            return Err(invalid(
                at,
                format!(
                    "$cls '{}' is not '{}' or a model extending it",
                    schema.model(c).name,
                    schema.model(m).name
                ),
            ));
        }
        let u = match given_uuid {
            Some(u) if self.created_index.contains_key(&u) => {
                return Err(invalid(at, format!("$uuid '{u}' is given to two new objects")));
            }
            Some(u) => u,
            None => {
                let u = (self.new_uuid)();
                if self.state.objects.contains_key(&u) || self.created_index.contains_key(&u) {
                    return Err(UpdateError::UuidCollision { at: at.clone(), uuid: u.to_string() });
                }
                u
            }
        };
        let cls = given_cls.unwrap_or(m);
        // Registered before its properties, so that an inline object inside it cannot reuse
        // its `$uuid`.
        let i = self.created.len();
        self.created.push(NewObj { uuid: u, cls, props: Vec::new() });
        self.created_index.insert(u, i);
        let model = schema.model(cls);
        for (k, v) in props() {
            let at_k = at.key(k);
            let p = self.prop_of(&at_k, cls, k)?;
            let value = self.value(&at_k, path, &model.props[p], v, depth + 1)?;
            if let Some(n) = self.created.get_mut(i) {
                n.props.push((p, value));
            }
        }
        Ok(u)
    }

    /// The index of property `key` of model `cls`.
    fn prop_of(&self, at: &At, cls: usize, key: &str) -> Result<usize, UpdateError> {
        let model = self.schema.model(cls);
        model.prop_index(key).ok_or_else(|| UpdateError::UnknownProperty {
            at: at.clone(),
            model: model.name.clone(),
            property: key.to_owned(),
        })
    }

    /// The normal form of one value of a collection of values, if it is valid (else `apply`
    /// will say what is wrong with it).
    fn normalised(&self, prop: &Prop, v: &Value) -> Option<Value> {
        check_value(prop.single, false, &prop.name, v, self.schema.enums()).ok()
    }

    /// `$push`: the collection with the items inserted.
    fn push(
        &mut self,
        at: &At,
        path: usize,
        prop: &Prop,
        operand: &Value,
        current: &[Value],
    ) -> Result<Vec<Value>, UpdateError> {
        let (items, position) = modifiers(Op::Push, at, operand)?;
        let mut new_items = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let at_i = item_at(at, operand, i);
            new_items.push(self.element(&at_i, path, prop, item, 0)?);
        }
        let len = current.len();
        let pos = match position {
            None => len,
            Some(p) if p >= 0 => usize::try_from(p).map_or(len, |p| p.min(len)),
            Some(p) => usize::try_from(p.unsigned_abs()).map_or(0, |back| len.saturating_sub(back)),
        };
        let mut out = Vec::with_capacity(len + new_items.len());
        out.extend_from_slice(&current[..pos]);
        out.extend(new_items);
        out.extend_from_slice(&current[pos..]);
        Ok(out)
    }

    /// `$addToSet`: the collection with the items it does not hold appended.
    fn add_to_set(
        &mut self,
        at: &At,
        path: usize,
        prop: &Prop,
        operand: &Value,
        current: &[Value],
    ) -> Result<Vec<Value>, UpdateError> {
        let (items, _) = modifiers(Op::AddToSet, at, operand)?;
        let mut out = current.to_vec();
        for (i, item) in items.iter().enumerate() {
            let at_i = item_at(at, operand, i);
            // Inline objects are planned even when already present: their properties are set.
            let v = self.element(&at_i, path, prop, item, 0)?;
            if !out.contains(&v) {
                out.push(v);
            }
        }
        Ok(out)
    }

    /// `$pull`: the collection without the elements that match.
    fn pull(
        &self,
        at: &At,
        prop: &Prop,
        operand: &Value,
        current: &[Value],
    ) -> Result<Vec<Value>, UpdateError> {
        let (items, _) = modifiers(Op::Pull, at, operand)?;
        match prop.single {
            Single::Model(m) => {
                let mut filters = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let at_i = item_at(at, operand, i);
                    filters.push(match item {
                        Value::String(s) => match Uuid::parse(s) {
                            Some(u) => filter::Filter::uuid(u),
                            None => return Err(invalid(&at_i, format!("'{s}' is not a UUID"))),
                        },
                        Value::Object(o) => filter::compile(self.schema, m, o, &at_i, 0)?,
                        _ => {
                            return Err(invalid(
                                &at_i,
                                format!(
                                    "{item} cannot match a reference: give a UUID string or a filter object \
                                     ({{\"$uuid\": …}}, {{\"property\": value}})"
                                ),
                            ));
                        }
                    });
                }
                Ok(current
                    .iter()
                    .filter(|e| {
                        let u = e.as_str().and_then(Uuid::parse);
                        !u.is_some_and(|u| filters.iter().any(|f| f.matches(self.state, u)))
                    })
                    .cloned()
                    .collect())
            }
            _ => {
                let mut values = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let at_i = item_at(at, operand, i);
                    if item.is_object() || item.is_array() {
                        return Err(invalid(
                            &at_i,
                            "a collection of values is pulled from by value (a string, number, boolean or null), \
                             not by an object or array",
                        ));
                    }
                    match check_value(prop.single, false, &prop.name, item, self.schema.enums()) {
                        Ok(v) => values.push(v),
                        Err(e) => return Err(invalid(&at_i, format!("{item} can never match: {e}"))),
                    }
                }
                Ok(current.iter().filter(|e| !values.contains(e)).cloned().collect())
            }
        }
    }

    /// The fragments: changes of existing objects, then adds of the created objects that
    /// something written refers to (the others, replaced within the update, would fail
    /// `apply` with "No parents").
    fn finish(self) -> Vec<SyncFragment> {
        let schema = self.schema;
        let mut out = Vec::with_capacity(self.written.len() + self.created.len());
        let mut anchors: Vec<Uuid> = Vec::new();
        for u in &self.written {
            let Some(obj) = self.state.objects.get(u) else { continue };
            let model = schema.model(obj.cls);
            let mut properties = Vec::new();
            for (p, prop) in model.props.iter().enumerate() {
                let value = match self.writes.get(&(*u, p)) {
                    None | Some(Write::Whole { changed: false, .. }) => continue,
                    Some(Write::Whole { value, changed: true }) => value.clone(),
                    Some(Write::Elements(elements)) => {
                        let mut items = self.current(*u, p);
                        for (i, v) in elements {
                            if let Some(slot) = items.get_mut(*i) {
                                *slot = v.clone();
                            }
                        }
                        Value::Array(items)
                    }
                };
                if matches!(prop.single, Single::Model(_)) {
                    anchors.extend(refs_in(&value));
                }
                properties.push((prop.name.clone(), value));
            }
            if !properties.is_empty() {
                out.push(SyncFragment {
                    kind: FragmentKind::Change,
                    uuid: *u,
                    cls_name: model.name.clone(),
                    properties,
                });
            }
        }
        let mut keep = vec![false; self.created.len()];
        while let Some(u) = anchors.pop() {
            let Some(&i) = self.created_index.get(&u) else { continue };
            if keep[i] {
                continue;
            }
            keep[i] = true;
            let n = &self.created[i];
            let model = schema.model(n.cls);
            for (p, v) in &n.props {
                if matches!(model.props[*p].single, Single::Model(_)) {
                    anchors.extend(refs_in(v));
                }
            }
        }
        for (n, _) in self.created.iter().zip(&keep).filter(|(_, k)| **k) {
            let model = schema.model(n.cls);
            let mut props: Vec<&(usize, Value)> = n.props.iter().collect();
            props.sort_by_key(|(p, _)| *p);
            out.push(SyncFragment {
                kind: FragmentKind::Add,
                uuid: n.uuid,
                cls_name: model.name.clone(),
                properties: props
                    .into_iter()
                    .map(|(p, v)| (model.props[*p].name.clone(), v.clone()))
                    .collect(),
            });
        }
        out
    }
}

/// The UUIDs a reference value (a string, or an array of them) holds.
fn refs_in(v: &Value) -> Vec<Uuid> {
    match v {
        Value::String(s) => Uuid::parse(s).into_iter().collect(),
        Value::Array(items) => items.iter().filter_map(Value::as_str).filter_map(Uuid::parse).collect(),
        _ => Vec::new(),
    }
}

/// Where item `i` of an operand is: the key path itself for a single item, `path.$each[i]`
/// for one of `$each`.
fn item_at(at: &At, operand: &Value, i: usize) -> At {
    if operand.get("$each").is_some() { at.key("$each").index(i) } else { at.clone() }
}

/// The items of a `$push`, `$addToSet` or `$pull` operand (`{"$each": [...]}` or one item),
/// and `$push`'s `$position`.
fn modifiers<'v>(op: Op, at: &At, operand: &'v Value) -> Result<(Vec<&'v Value>, Option<i64>), UpdateError> {
    let Value::Object(o) = operand else {
        return Ok((vec![operand], None));
    };
    let Some(each) = o.get("$each") else {
        if o.contains_key("$position") {
            return Err(invalid(at, "$position needs $each"));
        }
        return Ok((vec![operand], None));
    };
    let Value::Array(items) = each else {
        return Err(invalid(at, "$each must be an array"));
    };
    let mut position = None;
    for (k, v) in o {
        match k.as_str() {
            "$each" => {}
            "$position" if op == Op::Push => match integer(v) {
                Some(p) => position = Some(p),
                None => return Err(invalid(at, "$position must be an integer")),
            },
            _ if op == Op::Push => {
                return Err(invalid(at, format!("'{k}' cannot go with $each (only $position can)")));
            }
            _ => {
                return Err(invalid(
                    at,
                    format!("'{k}' cannot go with $each (nothing can, with {})", op.name()),
                ));
            }
        }
    }
    Ok((items.iter().collect(), position))
}

/// An integer: a JSON integer, or a number with an integral value (JavaScript has no
/// other kind). Beyond ±2^63 it saturates, which clamps the same way.
fn integer(v: &Value) -> Option<i64> {
    if let Some(i) = v.as_i64() {
        return Some(i);
    }
    if v.as_u64().is_some() {
        return Some(i64::MAX);
    }
    let f = v.as_f64()?;
    // Saturating: any out-of-range position clamps to an end.
    #[allow(clippy::cast_possible_truncation)]
    (f.fract() == 0.0).then_some(f as i64)
}
