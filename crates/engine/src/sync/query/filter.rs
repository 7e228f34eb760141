//! Filters (`{"$uuid"?, "$cls"?, property: value, …}`), used by `$pull` on collections of
//! references and by queries; and the query's choice of the object an update starts from.

use serde_json::{Map, Value};
use tether_proto::jetstream::Uuid;

use super::{At, MAX_DEPTH, UpdateError, invalid};
use crate::sync::schema::{Schema, Single};
use crate::sync::scope::ScopeState;
use crate::sync::value::{Slot, check_value};

/// A checked filter: every condition must hold.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Filter {
    conds: Vec<Cond>,
}

#[derive(Debug, Clone, PartialEq)]
enum Cond {
    /// The object is this one.
    Uuid(Uuid),
    /// The object is of this model or of one extending it.
    Cls(usize),
    /// The object has property `name` and it passes `test`.
    Prop { name: String, test: Test },
}

#[derive(Debug, Clone, PartialEq)]
enum Test {
    /// A value property (or collection of values) equal to this, in normal form.
    Value(Value),
    /// A single reference to this object, or unset.
    Ref(Option<Uuid>),
    /// A collection of references holding exactly these, in order.
    Refs(Vec<Uuid>),
    /// A single reference to an object that matches.
    Nested(Filter),
}

impl Filter {
    /// The filter `{"$uuid": u}`.
    pub(super) fn uuid(u: Uuid) -> Self {
        Self { conds: vec![Cond::Uuid(u)] }
    }

    /// True if object `u` of the scope matches.
    pub(super) fn matches(&self, state: &ScopeState, u: Uuid) -> bool {
        let Some(obj) = state.objects.get(&u) else {
            return false;
        };
        let model = state.schema.model(obj.cls);
        self.conds.iter().all(|c| match c {
            Cond::Uuid(x) => *x == u,
            Cond::Cls(m) => state.schema.is_subtype(obj.cls, *m),
            Cond::Prop { name, test } => {
                let Some(slot) = model.prop_index(name).and_then(|p| obj.slots.get(p)) else {
                    return false;
                };
                match (test, slot) {
                    (Test::Value(v), Slot::Value(s)) => v == s,
                    (Test::Ref(r), Slot::Ref(s)) => r == s,
                    (Test::Refs(rs), Slot::Refs(s)) => rs == s,
                    (Test::Nested(f), Slot::Ref(Some(c))) => f.matches(state, *c),
                    _ => false,
                }
            }
        })
    }
}

/// Checks a filter on objects of model `model` (or models extending it). `at` is where the
/// filter is, for messages.
pub(super) fn compile(
    schema: &Schema,
    model: usize,
    o: &Map<String, Value>,
    at: &At,
    depth: usize,
) -> Result<Filter, UpdateError> {
    if depth >= MAX_DEPTH {
        return Err(invalid(at, format!("filters nest more than {MAX_DEPTH} deep")));
    }
    let mut conds = Vec::with_capacity(o.len());
    for (k, v) in o {
        let at_k = at.key(k);
        let cond = match k.as_str() {
            "$uuid" => match v.as_str().map(|s| (s, Uuid::parse(s))) {
                Some((_, Some(u))) => Cond::Uuid(u),
                Some((s, None)) => return Err(invalid(&at_k, format!("'{s}' is not a UUID"))),
                None => return Err(invalid(&at_k, "$uuid must be a UUID string")),
            },
            "$cls" => match v.as_str() {
                Some(s) => match schema.model_id(s) {
                    Some(m) => Cond::Cls(m),
                    None => return Err(UpdateError::UnknownModel { at: at_k, cls: s.to_owned() }),
                },
                None => return Err(invalid(&at_k, "$cls must be a model name")),
            },
            _ if k.starts_with('$') => {
                return Err(invalid(
                    &at_k,
                    format!(
                        "'{k}' is not supported in a filter (a filter has $uuid, $cls and property values; \
                         no query operators)"
                    ),
                ));
            }
            _ => {
                let (single, collection) = property_type(schema, model, k, &at_k)?;
                Cond::Prop { name: k.clone(), test: test(schema, single, collection, k, v, &at_k, depth)? }
            }
        };
        conds.push(cond);
    }
    Ok(Filter { conds })
}

/// The type of property `key` on objects of `model`: declared by it or by a model
/// extending it (the object filtered may be of a subtype).
fn property_type(schema: &Schema, model: usize, key: &str, at: &At) -> Result<(Single, bool), UpdateError> {
    let mut found: Option<(Single, bool)> = None;
    for m in 0..schema.model_names().count() {
        if !schema.is_subtype(m, model) {
            continue;
        }
        let name = &schema.model(m).name;
        let Some(p) = schema.model(m).prop_index(key) else { continue };
        let prop = &schema.model(m).props[p];
        let ty = (prop.single, prop.collection);
        match found {
            None => found = Some(ty),
            Some(f) if f == ty => {}
            Some(_) => {
                return Err(invalid(
                    at,
                    format!("'{key}' has different types in the models extending '{}' (one is '{name}')", {
                        schema.model(model).name.as_str()
                    }),
                ));
            }
        }
    }
    found.ok_or_else(|| UpdateError::UnknownProperty {
        at: at.clone(),
        model: schema.model(model).name.clone(),
        property: key.to_owned(),
    })
}

fn test(
    schema: &Schema,
    single: Single,
    collection: bool,
    key: &str,
    v: &Value,
    at: &At,
    depth: usize,
) -> Result<Test, UpdateError> {
    let uuid = |s: &str| Uuid::parse(s).ok_or_else(|| invalid(at, format!("'{s}' is not a UUID")));
    match (single, collection) {
        (Single::Model(t), false) => match v {
            Value::Null => Ok(Test::Ref(None)),
            Value::String(s) => Ok(Test::Ref(Some(uuid(s)?))),
            Value::Object(o) => Ok(Test::Nested(compile(schema, t, o, at, depth + 1)?)),
            _ => Err(invalid(at, "a reference matches a UUID string, null or a filter object")),
        },
        (Single::Model(_), true) => match v {
            Value::Array(items) => items
                .iter()
                .map(|x| {
                    x.as_str()
                        .ok_or_else(|| invalid(at, "a collection of references matches an array of UUIDs"))
                })
                .map(|s| s.and_then(uuid))
                .collect::<Result<Vec<_>, _>>()
                .map(Test::Refs),
            _ => Err(invalid(at, "a collection of references matches an array of UUIDs")),
        },
        _ => check_value(single, collection, key, v, schema.enums())
            .map(Test::Value)
            .map_err(|e| invalid(at, format!("{v} can never match: {e}"))),
    }
}

/// The object an update starts from (see the module docs for the query forms).
pub(super) fn find_target(state: &ScopeState, query: &Value) -> Result<Uuid, UpdateError> {
    let q = match query {
        Value::Null => return Ok(state.root),
        Value::Object(q) if q.is_empty() => return Ok(state.root),
        Value::Object(q) => q,
        _ => {
            return Err(UpdateError::InvalidQuery {
                reason: "the query must be null or an object".to_owned(),
            });
        }
    };
    let schema = &state.schema;
    let uuid = match q.get("$uuid") {
        None => None,
        Some(Value::String(s)) => match Uuid::parse(s) {
            Some(u) => Some(u),
            None => return Err(UpdateError::InvalidQuery { reason: format!("$uuid '{s}' is not a UUID") }),
        },
        Some(_) => {
            return Err(UpdateError::InvalidQuery { reason: "$uuid must be a UUID string".to_owned() });
        }
    };
    let cls = match q.get("$cls") {
        None => None,
        Some(Value::String(s)) => match schema.model_id(s) {
            Some(m) => Some(m),
            None => return Err(UpdateError::UnknownModel { at: At::new("query", "$cls"), cls: s.clone() }),
        },
        Some(_) => return Err(UpdateError::InvalidQuery { reason: "$cls must be a model name".to_owned() }),
    };
    let at = At::new("query", "");
    if let Some(u) = uuid {
        let Some(obj) = state.objects.get(&u) else {
            return Err(UpdateError::NotFound { uuid: u.to_string() });
        };
        if let Some(c) = cls
            && !schema.is_subtype(obj.cls, c)
        {
            return Err(UpdateError::ClassMismatch {
                uuid: u.to_string(),
                model: schema.model(obj.cls).name.clone(),
                cls: schema.model(c).name.clone(),
            });
        }
        // Property conditions are checked against the object's own model.
        let filter = compile(schema, obj.cls, q, &at, 0)?;
        return if filter.matches(state, u) { Ok(u) } else { Err(UpdateError::NoMatch) };
    }
    let Some(c) = cls else {
        return Err(UpdateError::InvalidQuery {
            reason: "a query is null, {}, or has $uuid or $cls (property values alone do not say which \
                     model they are of)"
                .to_owned(),
        });
    };
    let filter = compile(schema, c, q, &at, 0)?;
    let mut found = None;
    let mut count = 0;
    for u in state.objects.keys() {
        if filter.matches(state, *u) {
            count += 1;
            found = Some(*u);
        }
    }
    match (count, found) {
        (1, Some(u)) => Ok(u),
        (0, _) => Err(UpdateError::NoMatch),
        _ => Err(UpdateError::AmbiguousQuery { count }),
    }
}
