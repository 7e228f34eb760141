//! Key paths (the reference's `key_path_notation.js`): parsing, and resolving one on the
//! objects of a scope.

use tether_proto::jetstream::Uuid;

use super::{At, UpdateError};
use crate::sync::scope::ScopeState;
use crate::sync::value::Slot;

/// Where a key path leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Resolved {
    /// The object owning the property the path ends on.
    pub(super) obj: Uuid,
    /// That property (index into its model's properties).
    pub(super) prop: usize,
    /// The element of it, if the path ends on an element of a collection (resolved: never
    /// negative, within the collection).
    pub(super) index: Option<usize>,
    /// The (object, property, element) the path goes through on its way, in order.
    pub(super) through: Vec<(Uuid, usize, Option<usize>)>,
}

/// Resolves `path` from object `start`, on the scope as it is. `at` is for messages.
pub(super) fn resolve(state: &ScopeState, start: Uuid, path: &str, at: &At) -> Result<Resolved, UpdateError> {
    let key_path_error = |reason: String| UpdateError::InvalidKeyPath { at: at.clone(), reason };
    if path.is_empty() {
        return Err(key_path_error("it is empty".to_owned()));
    }
    let pieces: Vec<&str> = path.split('.').collect();
    if pieces.iter().any(|p| p.is_empty()) {
        return Err(key_path_error("a segment is empty ('a..b', '.a' or 'a.')".to_owned()));
    }
    let schema = &state.schema;
    let mut cur = start;
    let mut through = Vec::new();
    let mut i = 0;
    loop {
        let piece = pieces[i];
        i += 1;
        let (name, mut index) = split_index(piece).map_err(key_path_error)?;
        let Some(obj) = state.objects.get(&cur) else {
            return Err(UpdateError::NotFound { uuid: cur.to_string() });
        };
        let model = schema.model(obj.cls);
        let Some(p) = model.prop_index(name) else {
            if name == "$uuid" || name == "$cls" {
                return Err(key_path_error(format!("an object's {name} cannot be changed")));
            }
            return Err(UpdateError::UnknownProperty {
                at: at.clone(),
                model: model.name.clone(),
                property: name.to_owned(),
            });
        };
        let prop = &model.props[p];
        let slot = &obj.slots[p];
        let more = i < pieces.len();
        if prop.collection && index.is_none() && more {
            // `messages.0`: the index is the next segment.
            match parse_index(pieces[i]) {
                Some(ix) => {
                    index = Some(ix);
                    i += 1;
                }
                None if matches!(slot, Slot::Refs(_)) => {
                    return Err(UpdateError::MissingIndex { at: at.clone(), property: name.to_owned() });
                }
                None => return Err(UpdateError::NotAReference { at: at.clone(), property: name.to_owned() }),
            }
        }
        if !prop.collection && index.is_some() {
            return Err(key_path_error(format!("'{name}' is not a collection, so it takes no index")));
        }
        let len = match slot {
            Slot::Refs(us) => us.len(),
            Slot::Value(serde_json::Value::Array(items)) => items.len(),
            _ => 0,
        };
        let element = match index {
            None => None,
            Some(ix) => match element_index(ix, len) {
                Some(e) => Some(e),
                None => {
                    return Err(UpdateError::IndexOutOfRange {
                        at: at.clone(),
                        property: name.to_owned(),
                        index: ix,
                        len,
                    });
                }
            },
        };
        if i == pieces.len() {
            return Ok(Resolved { obj: cur, prop: p, index: element, through });
        }
        let next = match (slot, element) {
            (Slot::Ref(Some(c)), _) => *c,
            (Slot::Ref(None), _) => {
                return Err(UpdateError::NoObject { at: at.clone(), property: name.to_owned() });
            }
            (Slot::Refs(us), Some(e)) => us[e],
            // A collection of references always has an element here (the index was taken from
            // the next segment, or refused, above).
            (Slot::Refs(_), None) => {
                return Err(UpdateError::MissingIndex { at: at.clone(), property: name.to_owned() });
            }
            (Slot::Value(_), _) => {
                return Err(UpdateError::NotAReference { at: at.clone(), property: name.to_owned() });
            }
        };
        through.push((cur, p, element));
        cur = next;
    }
}

/// The object a key path leads to (the reference's `resolveModelObject`): `start` for an
/// empty path, else the object the last reference (or element of a collection of
/// references) refers to.
#[cfg(test)]
pub(super) fn resolve_object(state: &ScopeState, start: Uuid, path: &str) -> Result<Uuid, UpdateError> {
    let at = At::new("query", path);
    if !state.objects.contains_key(&start) {
        return Err(UpdateError::NotFound { uuid: start.to_string() });
    }
    if path.is_empty() {
        return Ok(start);
    }
    let r = resolve(state, start, path, &at)?;
    let model = state.schema.model(state.objects[&r.obj].cls);
    let name = model.props[r.prop].name.clone();
    match (&state.objects[&r.obj].slots[r.prop], r.index) {
        (Slot::Ref(Some(c)), _) => Ok(*c),
        (Slot::Ref(None), _) => Err(UpdateError::NoObject { at, property: name }),
        (Slot::Refs(us), Some(e)) => Ok(us[e]),
        (Slot::Refs(_), None) => Err(UpdateError::MissingIndex { at, property: name }),
        (Slot::Value(_), _) => Err(UpdateError::NotAReference { at, property: name }),
    }
}

/// Splits `name[i]` into the name and the index; a segment without brackets has none.
fn split_index(piece: &str) -> Result<(&str, Option<i64>), String> {
    if !piece.contains(['[', ']']) {
        return Ok((piece, None));
    }
    let parsed = piece
        .strip_suffix(']')
        .and_then(|s| s.rsplit_once('['))
        .and_then(|(name, ix)| Some((name, parse_index(ix)?)))
        .filter(|(name, _)| !name.is_empty() && !name.contains(['[', ']']));
    match parsed {
        Some((name, ix)) => Ok((name, Some(ix))),
        None => Err(format!("'{piece}' is not 'property' or 'property[index]', with an integer index")),
    }
}

/// An index: an optional `-` and decimal digits. One too large for an `i64` saturates
/// (it is out of range of any collection anyway).
pub(super) fn parse_index(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse::<i64>().unwrap_or(if s.starts_with('-') { i64::MIN } else { i64::MAX }))
}

/// The position of index `ix` in a collection of `len` elements (negative from the end).
fn element_index(ix: i64, len: usize) -> Option<usize> {
    if ix >= 0 {
        usize::try_from(ix).ok().filter(|&e| e < len)
    } else {
        usize::try_from(ix.unsigned_abs()).ok().and_then(|back| len.checked_sub(back))
    }
}
