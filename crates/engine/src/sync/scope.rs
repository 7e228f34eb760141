//! [`ScopeState`]: the objects of one scope, and its read views (snapshot, one object, JSON
//! tree). Applying changesets is in `apply.rs`, the graph bookkeeping in `graph.rs`.

use std::fmt;
use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::{Map, Value};
use tether_proto::jetstream::{FragmentKind, SyncFragment, Uuid};

pub use super::apply::Applied;
use super::error;
pub use super::error::FragmentError;
use super::hash::{UuidMap, UuidSet};
use super::schema::Schema;
use super::value::Slot;
use super::verify::{Source, verify};

/// Objects nested deeper than this in [`ScopeState::to_json_tree`] appear as `{"$ref"}`,
/// so that the tree stays within what JSON parsers accept (serde_json's default limit is
/// 128 levels of arrays and objects) and recursion stays shallow.
const MAX_TREE_DEPTH: usize = 50;

/// One object of a scope.
#[derive(Debug, Clone)]
pub(crate) struct Obj {
    /// Its model (index into the schema's models).
    pub(crate) cls: usize,
    /// One value per property of the model, in the model's order.
    pub(crate) slots: Box<[Slot]>,
    /// The objects that refer to it. Kept so that the sweep can walk up from an object to
    /// the root without scanning the scope.
    pub(crate) parents: Parents,
}

/// The objects referring to one object, each with its number of references to it.
///
/// Most objects have one parent, a few have thousands (the author of every message): a
/// short list while that is cheapest, an indexed map beyond, so that adding or removing a
/// parent never costs more than a hash lookup. Both keep positions, which the sweep's
/// upward walk uses to resume where it left off.
#[derive(Debug, Clone)]
pub(crate) enum Parents {
    /// Up to [`Parents::FEW`] parents.
    Few(Vec<(Uuid, u32)>),
    /// More.
    Many(IndexMap<Uuid, u32>),
}

impl Default for Parents {
    fn default() -> Self {
        Parents::Few(Vec::new())
    }
}

impl Parents {
    /// The size up to which a list is used.
    const FEW: usize = 8;

    /// No object refers to this one.
    pub(crate) fn is_empty(&self) -> bool {
        match self {
            Parents::Few(v) => v.is_empty(),
            Parents::Many(m) => m.is_empty(),
        }
    }

    /// The number of distinct parents.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        match self {
            Parents::Few(v) => v.len(),
            Parents::Many(m) => m.len(),
        }
    }

    /// The parent at position `i`.
    pub(crate) fn get(&self, i: usize) -> Option<Uuid> {
        match self {
            Parents::Few(v) => v.get(i).map(|(u, _)| *u),
            Parents::Many(m) => m.get_index(i).map(|(u, _)| *u),
        }
    }

    /// Every parent with its number of references.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Uuid, u32)> + '_ {
        let (few, many) = match self {
            Parents::Few(v) => (Some(v.iter().copied()), None),
            Parents::Many(m) => (None, Some(m.iter().map(|(u, n)| (*u, *n)))),
        };
        few.into_iter().flatten().chain(many.into_iter().flatten())
    }

    /// `n` more references from `parent`.
    pub(crate) fn add(&mut self, parent: Uuid, n: u32) {
        match self {
            Parents::Few(v) => {
                if let Some(i) = v.iter().position(|(p, _)| *p == parent) {
                    v[i].1 = v[i].1.saturating_add(n);
                } else if v.len() < Self::FEW {
                    v.push((parent, n));
                } else {
                    let mut m: IndexMap<Uuid, u32> = v.drain(..).collect();
                    m.insert(parent, n);
                    *self = Parents::Many(m);
                }
            }
            Parents::Many(m) => {
                let count = m.entry(parent).or_insert(0);
                *count = count.saturating_add(n);
            }
        }
    }

    /// `n` fewer references from `parent`.
    pub(crate) fn remove(&mut self, parent: Uuid, n: u32) {
        match self {
            Parents::Few(v) => {
                if let Some(i) = v.iter().position(|(p, _)| *p == parent) {
                    v[i].1 = v[i].1.saturating_sub(n);
                    if v[i].1 == 0 {
                        v.swap_remove(i);
                    }
                }
            }
            Parents::Many(m) => {
                if let Some(count) = m.get_mut(&parent) {
                    *count = count.saturating_sub(n);
                    if *count == 0 {
                        m.swap_remove(&parent);
                    }
                }
            }
        }
    }
}

/// The state of one scope: a root object and every object reachable from it through model
/// references, typed by a [`Schema`]. Pure data: no IO, no clock, no randomness.
#[derive(Clone)]
pub struct ScopeState {
    pub(super) schema: Arc<Schema>,
    pub(super) root: Uuid,
    pub(super) root_cls: usize,
    pub(super) objects: UuidMap<Obj>,
}

impl fmt::Debug for ScopeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A scope may hold 100k objects: their count, not their contents.
        f.debug_struct("ScopeState")
            .field("root", &self.root)
            .field("root_cls", &self.root_cls())
            .field("objects", &self.objects.len())
            .finish_non_exhaustive()
    }
}

/// Equal scopes have the same root and the same objects with the same values (the schema
/// is not compared).
impl PartialEq for ScopeState {
    fn eq(&self, other: &Self) -> bool {
        self.root == other.root
            && self.root_cls == other.root_cls
            && self.objects.len() == other.objects.len()
            && self
                .objects
                .iter()
                .all(|(u, o)| other.objects.get(u).is_some_and(|p| p.cls == o.cls && p.slots == o.slots))
    }
}

impl ScopeState {
    /// A new scope whose root is a new object of model `root_cls` with id `root_uuid`,
    /// given `initial` property values. They are verified as those of an add fragment would
    /// be (a reference can only be to the root itself); properties not given get their
    /// defaults.
    pub fn new(
        schema: Arc<Schema>,
        root_cls: &str,
        root_uuid: Uuid,
        initial: &[(String, Value)],
    ) -> Result<Self, FragmentError> {
        let Some(cls) = schema.model_id(root_cls) else {
            return Err(error::no_such_class(root_cls));
        };
        let sets = verify(
            &schema,
            cls,
            initial,
            &|u: &Uuid| (*u == root_uuid).then_some(cls),
            None,
            Source::Incoming,
        )?;
        let mut scope = ScopeState { schema, root: root_uuid, root_cls: cls, objects: UuidMap::default() };
        scope.insert_object(root_uuid, cls, None);
        for (p, slot) in sets {
            scope.set_slot(root_uuid, p, slot, None);
        }
        Ok(scope)
    }

    /// The schema.
    pub fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    /// The root object's UUID.
    pub fn root(&self) -> Uuid {
        self.root
    }

    /// The root object's model.
    pub fn root_cls(&self) -> &str {
        &self.schema.model(self.root_cls).name
    }

    /// The number of objects in the scope, the root included.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Never true: a scope always holds its root. (For API symmetry with [`len`](Self::len).)
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// The `ScopeState` snapshot: one fragment per object, depth first from the root
    /// (children in property order, collection elements in order, each object once). The
    /// root's fragment is a `change`, the others `add`s. Every value and collection property
    /// is present (`null` or `[]` when unset); an unset single reference is left out.
    pub fn snapshot(&self) -> Vec<SyncFragment> {
        let mut out = Vec::with_capacity(self.objects.len());
        let mut seen = UuidSet::with_capacity_and_hasher(self.objects.len(), Default::default());
        let mut stack = vec![self.root];
        while let Some(u) = stack.pop() {
            if !seen.insert(u) {
                continue;
            }
            let Some(o) = self.objects.get(&u) else {
                continue;
            };
            let model = self.schema.model(o.cls);
            let properties = model
                .props
                .iter()
                .zip(o.slots.iter())
                .filter(|(_, s)| !matches!(s, Slot::Ref(None)))
                .map(|(p, s)| (p.name.clone(), s.to_json()))
                .collect();
            let kind = if u == self.root { FragmentKind::Change } else { FragmentKind::Add };
            out.push(SyncFragment { kind, uuid: u, cls_name: model.name.clone(), properties });
            // Reversed, so that the first child is visited first.
            for s in o.slots.iter().rev() {
                stack.extend(s.refs().iter().rev().filter(|c| !seen.contains(c)));
            }
        }
        out
    }

    /// Rebuilds a scope from a snapshot ([`snapshot`](Self::snapshot) of a scope with
    /// the same schema), e.g. when a scope is reloaded from the store:
    /// `from_snapshot(s.schema().clone(), s.root(), &s.snapshot()) == s`.
    ///
    /// The fragment of `root_uuid` (of either kind, anywhere in the list) gives the root's
    /// model; every other fragment is an object. Every value is verified as in a changeset
    /// (references may point at any object of the snapshot). Objects not reachable from the
    /// root are dropped, as the orphan sweep would. An error names the fragment.
    pub fn from_snapshot(
        schema: Arc<Schema>,
        root_uuid: Uuid,
        fragments: &[SyncFragment],
    ) -> Result<Self, FragmentError> {
        let Some(root_fragment) = fragments.iter().find(|f| f.uuid == root_uuid) else {
            return Err(error::snapshot_without_root(&root_uuid.to_string()));
        };
        let Some(root_cls) = schema.model_id(&root_fragment.cls_name) else {
            return Err(error::no_such_class(&root_fragment.cls_name));
        };
        let mut scope = ScopeState {
            schema: Arc::clone(&schema),
            root: root_uuid,
            root_cls,
            objects: UuidMap::default(),
        };
        let reach = &schema.model(root_cls).reach;
        for (i, f) in fragments.iter().enumerate() {
            let at = |e| error::in_snapshot_fragment(i, &f.uuid.to_string(), e);
            if scope.objects.contains_key(&f.uuid) {
                return Err(at(error::already_exists(&f.uuid.to_string())));
            }
            let Some(cls) = schema.model_id(&f.cls_name).filter(|&m| reach[m]) else {
                return Err(at(error::no_such_class(&f.cls_name)));
            };
            scope.insert_object(f.uuid, cls, None);
        }
        for (i, f) in fragments.iter().enumerate() {
            let cls = scope.objects.get(&f.uuid).map_or(root_cls, |o| o.cls);
            let resolve = |u: &Uuid| scope.objects.get(u).map(|o| o.cls);
            let sets = verify(&schema, cls, &f.properties, &resolve, None, Source::Snapshot)
                .map_err(|e| error::in_snapshot_fragment(i, &f.uuid.to_string(), e))?;
            for (p, slot) in sets {
                scope.set_slot(f.uuid, p, slot, None);
            }
        }
        scope.remove_unreachable(None);
        Ok(scope)
    }

    /// One object: its model name and every property's value as JSON (references as UUID
    /// strings or `null`, collections as arrays, dates as epoch seconds), in the model's
    /// order.
    pub fn object(&self, uuid: &Uuid) -> Option<(&str, Vec<(&str, Value)>)> {
        let o = self.objects.get(uuid)?;
        let model = self.schema.model(o.cls);
        let values =
            model.props.iter().zip(o.slots.iter()).map(|(p, s)| (p.name.as_str(), s.to_json())).collect();
        Some((model.name.as_str(), values))
    }

    /// The whole scope as one JSON tree from the root, for reads over HTTP. Each object is
    /// a JSON object with `"$uuid"`, `"$cls"` and its properties, references expanded in
    /// place. A reference to an object already being expanded on the current path (a cycle)
    /// appears as `{"$ref": "<uuid>"}`; so does one more than 50 objects deep. An object
    /// reachable along several paths is expanded on each; to keep the tree's size in
    /// proportion to the scope's (a chain of shared objects would otherwise double it at
    /// each link), once the tree holds four times as many objects as the scope (plus 64),
    /// further repeats appear as `{"$ref"}` too.
    pub fn to_json_tree(&self) -> Value {
        let mut t = Tree {
            scope: self,
            path: UuidSet::default(),
            expanded: UuidSet::default(),
            budget: self.objects.len().saturating_mul(4).saturating_add(64),
        };
        t.node(self.root, 0)
    }
}

/// The state of one [`ScopeState::to_json_tree`] walk.
struct Tree<'a> {
    scope: &'a ScopeState,
    path: UuidSet,
    expanded: UuidSet,
    budget: usize,
}

impl Tree<'_> {
    fn node(&mut self, u: Uuid, depth: usize) -> Value {
        let repeat_over_budget = self.budget == 0 && self.expanded.contains(&u);
        let obj = self.scope.objects.get(&u);
        let Some(o) =
            obj.filter(|_| depth < MAX_TREE_DEPTH && !repeat_over_budget && !self.path.contains(&u))
        else {
            let mut m = Map::new();
            m.insert("$ref".to_owned(), Value::String(u.to_string()));
            return Value::Object(m);
        };
        self.budget = self.budget.saturating_sub(1);
        self.expanded.insert(u);
        self.path.insert(u);
        let model = self.scope.schema.model(o.cls);
        let mut m = Map::new();
        m.insert("$uuid".to_owned(), Value::String(u.to_string()));
        m.insert("$cls".to_owned(), Value::String(model.name.clone()));
        for (p, s) in model.props.iter().zip(o.slots.iter()) {
            let v = match s {
                Slot::Value(v) => v.clone(),
                Slot::Ref(None) => Value::Null,
                Slot::Ref(Some(c)) => self.node(*c, depth + 1),
                Slot::Refs(cs) => Value::Array(cs.iter().map(|c| self.node(*c, depth + 1)).collect()),
            };
            m.insert(p.name.clone(), v);
        }
        self.path.remove(&u);
        Value::Object(m)
    }
}
