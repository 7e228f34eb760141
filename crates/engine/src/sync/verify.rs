//! Verifying the properties of one fragment against a model: the reference's
//! `SyncFragment.verifyPropertiesForType`, producing the normalised new slots.
//!
//! The whole fragment is verified before anything is set, and the first failing property
//! (in the order a JavaScript object lists its keys) is the fragment's error.

use serde_json::Value;
use tether_proto::jetstream::Uuid;

use super::error::{self, FragmentError};
use super::schema::{Prop, Schema, Single};
use super::value::{self, Slot};

/// The verified new values of one fragment: (property index, value), in key order.
pub(crate) type Sets = Vec<(usize, Slot)>;

/// Where the values being verified come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// A changeset (or a new scope's initial values): the reference's rules.
    Incoming,
    /// A snapshot, which also holds what no fragment may set: `null` for an enumeration
    /// never set.
    Snapshot,
}

/// Verifies `props` as new values for an object of `model`. `resolve` gives the model of an
/// object a reference may point at (one in the scope, or one added by the same changeset),
/// or `None`. `current` is the object's values, for a change: a reference it already holds
/// at the same place in the same property needs no lookup (it is to an object of the scope,
/// of the right model), which makes sending a long collection with one more element cheap.
///
/// Keys are taken in JavaScript's order: integer-like keys first (none can be a property,
/// since property names start with a letter or `_`), then the others in the order sent; a
/// repeated key counts once, at its first position, with its last value (`JSON.parse`).
pub(crate) fn verify(
    schema: &Schema,
    model: usize,
    props: &[(String, Value)],
    resolve: &impl Fn(&Uuid) -> Option<usize>,
    current: Option<&[Slot]>,
    source: Source,
) -> Result<Sets, FragmentError> {
    if let Some((_, key)) = props.iter().filter_map(|(k, _)| array_index(k).map(|i| (i, k))).min() {
        return Err(error::no_property(key));
    }
    let m = schema.model(model);
    let mut sets: Sets = Vec::with_capacity(props.len().min(m.prop_count()));
    // Only a repeated key needs the last-occurrence table; most fragments have none.
    let mut last: Option<Vec<usize>> = None;
    for (i, (key, v)) in props.iter().enumerate() {
        let Some(p) = m.prop_index(key) else {
            return Err(error::no_property(key));
        };
        if sets.iter().any(|(q, _)| *q == p) {
            // A repeat of a key already verified (with its last value).
            continue;
        }
        let v = if props[i + 1..].iter().any(|(k, _)| k == key) {
            let table =
                last.get_or_insert_with(|| last_occurrences(m.prop_count(), props, |k| m.prop_index(k)));
            &props[table[p]].1
        } else {
            v
        };
        let old = current.and_then(|c| c.get(p)).map_or(&[][..], Slot::refs);
        sets.push((p, verify_one(schema, &m.props[p], v, resolve, old, source)?));
    }
    Ok(sets)
}

/// For each property index, the position of its last occurrence in `props`.
fn last_occurrences(
    n: usize,
    props: &[(String, Value)],
    index: impl Fn(&str) -> Option<usize>,
) -> Vec<usize> {
    let mut last = vec![0; n];
    for (i, (k, _)) in props.iter().enumerate() {
        if let Some(p) = index(k) {
            last[p] = i;
        }
    }
    last
}

/// The array index a key is, if it is one (`"0"`, `"17"`; not `"017"`, not 2^32 − 1 or
/// more): JavaScript objects list such keys first, in numeric order.
fn array_index(k: &str) -> Option<u32> {
    let b = k.as_bytes();
    if b.is_empty() || b.len() > 10 || !b.iter().all(u8::is_ascii_digit) || (b[0] == b'0' && b.len() > 1) {
        return None;
    }
    k.parse::<u64>().ok().filter(|&i| i < u64::from(u32::MAX)).and_then(|i| u32::try_from(i).ok())
}

fn verify_one(
    schema: &Schema,
    prop: &Prop,
    v: &Value,
    resolve: &impl Fn(&Uuid) -> Option<usize>,
    old: &[Uuid],
    source: Source,
) -> Result<Slot, FragmentError> {
    let key = prop.name.as_str();
    if source == Source::Snapshot && v.is_null() && !prop.collection {
        return Ok(Slot::empty(prop.single, false));
    }
    let Single::Model(target) = prop.single else {
        return value::check_value(prop.single, prop.collection, key, v, schema.enums()).map(Slot::Value);
    };
    let target_name = schema.model(target).name.as_str();
    if !prop.collection {
        return match v {
            Value::Null => Ok(Slot::Ref(None)),
            Value::String(s) => match Uuid::parse(s) {
                Some(u) if old.first() == Some(&u) => Ok(Slot::Ref(Some(u))),
                Some(u) => match resolve(&u) {
                    Some(cls) if schema.is_subtype(cls, target) => Ok(Slot::Ref(Some(u))),
                    Some(_) => Err(error::wrong_model(key, target_name)),
                    None => Err(error::no_such_object(&u.to_string(), key)),
                },
                // Not a UUID, so no object has it; the reference looks it up lower-cased.
                None => Err(error::no_such_object(&s.to_lowercase(), key)),
            },
            _ => Err(error::non_uuid(key)),
        };
    }
    let Value::Array(items) = v else {
        return Err(error::array_of_uuids(key));
    };
    // `!uuid || typeof uuid !== 'string'`: every element a non-empty string.
    if !items.iter().all(|x| x.as_str().is_some_and(|s| !s.is_empty())) {
        return Err(error::array_of_uuids(key));
    }
    let mut out = Vec::with_capacity(items.len());
    let mut missing: Vec<String> = Vec::new();
    let mut wrong = false;
    // Old and new aligned at the start and at the end: appending, inserting or removing
    // leaves the elements on either side where they were.
    let shift = old.len().checked_sub(items.len());
    let known = |i: usize, u: &Uuid| {
        old.get(i) == Some(u)
            || match shift {
                Some(d) => old.get(i + d) == Some(u),
                None => (i + old.len()).checked_sub(items.len()).and_then(|j| old.get(j)) == Some(u),
            }
    };
    for (i, s) in items.iter().filter_map(Value::as_str).enumerate() {
        match Uuid::parse(s) {
            Some(u) if known(i, &u) => out.push(u),
            Some(u) => match resolve(&u) {
                Some(cls) => {
                    wrong |= !schema.is_subtype(cls, target);
                    out.push(u);
                }
                None => missing.push(u.to_string()),
            },
            None => missing.push(s.to_lowercase()),
        }
    }
    if !missing.is_empty() {
        return Err(error::no_such_objects(&missing, key));
    }
    if wrong {
        return Err(error::wrong_model_collection(key, target_name));
    }
    Ok(Slot::Refs(out))
}
