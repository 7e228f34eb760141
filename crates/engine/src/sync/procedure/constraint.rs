//! Procedure constraints: which fragments a procedure call may carry
//! (`lib/procedures/constraint.js` of the reference).

use serde_json::Value;
use tether_proto::jetstream::{FragmentKind, SyncFragment};

use super::ConstraintDef;
use super::eval::{lower_uuids, prop_of, strict_eq};
use crate::sync::ScopeState;
use crate::sync::schema::{Schema, Single};

/// `"$hasNewValue"`: the marker for "the fragment sets this property, to anything".
pub(crate) const HAS_NEW_VALUE: &str = "$hasNewValue";

/// The key of an array constraint: `{ "$array" = "insert" | "remove" }`.
pub(crate) const ARRAY: &str = "$array";

/// A validated constraint.
#[derive(Debug)]
pub(crate) struct Constraint {
    kind: FragmentKind,
    cls: String,
    props: Vec<(String, Spec)>,
    allow_additional: bool,
}

/// What a constraint requires of one property.
#[derive(Debug)]
enum Spec {
    /// The fragment sets the property (`hasNewValuePropertyConstraint()`).
    HasNewValue,
    /// An array longer than the object's current one (`arrayPropertyConstraint({type:'insert'})`);
    /// on an add, any array.
    Insert,
    /// An array shorter than the object's current one (`{type:'remove'}`); change only.
    Remove,
    /// Exactly this value (`===`).
    Literal(Value),
}

impl Constraint {
    /// Validates a definition against the schema. An error is (where, what): where is
    /// relative to the constraint, e.g. `properties.text`.
    pub(crate) fn new(def: &ConstraintDef, schema: &Schema) -> Result<Self, (String, String)> {
        let kind = def.kind.into();
        let cls = &def.cls_name;
        if !schema.has_model(cls) {
            return Err(("clsName".to_owned(), format!("no model '{cls}' in the schema")));
        }
        let mut props = Vec::with_capacity(def.properties.0.len());
        for (key, v) in &def.properties.0 {
            let at = || format!("properties.{key}");
            let Some(p) = prop_of(schema, cls, key) else {
                return Err((at(), format!("model '{cls}' has no property '{key}'")));
            };
            let spec = spec(v).map_err(|m| (at(), m))?;
            let spec = match spec {
                Spec::Insert | Spec::Remove if !p.collection => {
                    return Err((
                        at(),
                        format!("an array constraint needs a collection; '{key}' of '{cls}' is not one"),
                    ));
                }
                Spec::Remove if kind == FragmentKind::Add => {
                    // The reference accepted this and then never matched (`Array property
                    // constraint 'remove' for new object not valid, only insert is applicable`).
                    let m = "\"remove\" applies to change constraints only: an added object has no current \
                             value to remove from";
                    return Err((at(), m.to_owned()));
                }
                Spec::Literal(_) if p.collection => {
                    return Err((
                        at(),
                        format!("'{key}' of '{cls}' is a collection: a literal never equals an array"),
                    ));
                }
                // A UUID literal compares with the lower-cased values of reference properties.
                Spec::Literal(l) if matches!(p.single, Single::Model(_)) => Spec::Literal(lower_uuids(&l)),
                s => s,
            };
            props.push((key.clone(), spec));
        }
        Ok(Self { kind, cls: cls.clone(), props, allow_additional: def.allow_additional_properties })
    }

    /// True if fragment `f` satisfies this constraint, given the scope before the changeset
    /// (`Constraint.prototype.matches`; every internal error there means "no match").
    pub(crate) fn matches(&self, state: &ScopeState, f: &SyncFragment) -> bool {
        if self.kind != f.kind || self.cls != f.cls_name {
            return false;
        }
        if self.props.is_empty() {
            return self.allow_additional || f.properties.is_empty();
        }
        // Without additional properties the counts must match; a fragment key the constraint
        // does not name then means a constraint key is missing, caught below.
        if !self.allow_additional && f.properties.len() != self.props.len() {
            return false;
        }
        let schema = state.schema();
        // The model must be one the scope can hold (`getSubtypeWithTypeName` on the root's type).
        let reachable = schema
            .model_id(state.root_cls())
            .zip(schema.model_id(&self.cls))
            .is_some_and(|(root, m)| schema.model(root).reach[m]);
        if !reachable {
            return false;
        }
        self.props.iter().all(|(key, spec)| {
            let Some(value) = f.properties.iter().find(|(k, _)| k == key).map(|(_, v)| v) else {
                return false;
            };
            match spec {
                Spec::HasNewValue => true,
                Spec::Insert | Spec::Remove => {
                    let Value::Array(new) = value else {
                        return false;
                    };
                    if f.kind == FragmentKind::Add {
                        // Only insert gets here for an add (checked at load): any array.
                        return true;
                    }
                    let current = state.object(&f.uuid).and_then(|(_, values)| {
                        values.into_iter().find(|(k, _)| k == key).and_then(|(_, v)| match v {
                            Value::Array(a) => Some(a.len()),
                            _ => None,
                        })
                    });
                    match (current, spec) {
                        (Some(len), Spec::Insert) => new.len() > len,
                        // The reference tested `value.length > original.length` here too, so a
                        // remove constraint accepted inserts and refused removals.
                        (Some(len), _) => new.len() < len,
                        (None, _) => false,
                    }
                }
                Spec::Literal(l) => {
                    let is_ref =
                        prop_of(schema, &self.cls, key).is_some_and(|p| matches!(p.single, Single::Model(_)));
                    if is_ref { strict_eq(&lower_uuids(value), l) } else { strict_eq(value, l) }
                }
            }
        })
    }
}

/// Reads one property's constraint from its configured value.
fn spec(v: &Value) -> Result<Spec, String> {
    const EXPECTED: &str = "expected \"$hasNewValue\", { \"$array\" = \"insert\" } or { \"$array\" = \"remove\" }, \
                            or a string, number or boolean to compare with (\"$$…\" for a string starting with '$')";
    match v {
        Value::String(s) if s == HAS_NEW_VALUE => Ok(Spec::HasNewValue),
        Value::String(s) if s.starts_with("$$") => Ok(Spec::Literal(Value::String(s[1..].to_owned()))),
        Value::String(s) if s.starts_with('$') => Err(format!("unknown constraint '{s}': {EXPECTED}")),
        Value::Object(m) if m.len() == 1 && m.contains_key(ARRAY) => {
            match m.get(ARRAY).and_then(Value::as_str) {
                Some("insert") => Ok(Spec::Insert),
                Some("remove") => Ok(Spec::Remove),
                _ => Err("\"$array\" must be \"insert\" or \"remove\"".to_owned()),
            }
        }
        Value::Object(_) | Value::Array(_) => Err(EXPECTED.to_owned()),
        v => Ok(Spec::Literal(v.clone())),
    }
}
