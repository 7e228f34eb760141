//! Evaluating expressions against a changeset, a scope's name and params, and its state
//! before the changeset (as the reference: procedures run before any fragment applies).
//!
//! A value is `Option<Value>`: `None` is JavaScript's `undefined`, which the reference
//! produced for an index past the end of an array. The caller decides what it means where
//! the value goes (a body key left out, as `JSON.stringify` does; a header left out; a URL
//! parameter refused).

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use tether_proto::jetstream::{FragmentKind, SyncFragment, Uuid};

use super::expr::{Expr, Field, Index, Path, Step, Target};
use crate::sync::ScopeState;
use crate::sync::schema::{Prop, Schema, Single};

/// The case tables of a procedure: name → (key → value), in configuration order.
pub(crate) type Cases = [(String, Vec<(String, Value)>)];

/// What expressions are evaluated against.
pub(crate) struct Env<'a> {
    state: &'a ScopeState,
    scope_name: &'a str,
    params: &'a Map<String, Value>,
    /// The fragments by (`clsName`, type).
    incoming: HashMap<(&'a str, FragmentKind), &'a SyncFragment>,
    cases: &'a Cases,
}

impl<'a> Env<'a> {
    pub(crate) fn new(
        state: &'a ScopeState,
        scope_name: &'a str,
        params: &'a Map<String, Value>,
        fragments: &'a [SyncFragment],
        cases: &'a Cases,
    ) -> Self {
        // A later fragment of the same model and type replaces an earlier one, as in the
        // reference (`SyncFragment.toIncoming` fills a plain object keyed by "Cls.type").
        let incoming = fragments.iter().map(|f| ((f.cls_name.as_str(), f.kind), f)).collect();
        Self { state, scope_name, params, incoming, cases }
    }

    /// The value of `e`, or the reason it has none. Every reason ends with
    /// `; expr: '<e>'`, as most of the reference's do.
    pub(crate) fn eval(&self, e: &Expr) -> Result<Option<Value>, String> {
        self.eval_inner(e).map_err(|m| format!("{m}; expr: '{e}'"))
    }

    fn eval_inner(&self, e: &Expr) -> Result<Option<Value>, String> {
        match e {
            Expr::Incoming { cls, kind, field } => self.incoming(cls, *kind, field),
            Expr::ScopeName => Ok(Some(Value::String(self.scope_name.to_owned()))),
            Expr::ScopeParam(keys) => {
                // `dotty.get(scope.params, keyPath)`: `undefined` is an error, `null` a value.
                let mut at = self.params;
                let mut value = None;
                for (i, k) in keys.iter().enumerate() {
                    value = at.get(k);
                    match value {
                        Some(Value::Object(m)) => at = m,
                        Some(_) if i + 1 == keys.len() => {}
                        _ => {
                            value = None;
                            break;
                        }
                    }
                }
                value.cloned().map(Some).ok_or_else(|| {
                    "Scope expression for params was not able to be resolved, field or key path given did \
                     not exist in params object"
                        .to_owned()
                })
            }
            Expr::RootModel(path) => self.walk(self.state.root(), path),
            Expr::Model { find, path } => {
                let found = self
                    .eval(find)
                    .map_err(|m| format!("Model expression inner find expression error: {m}"))?;
                let uuid = match &found {
                    Some(Value::String(s)) => Uuid::parse(s).filter(|u| self.state.object(u).is_some()),
                    _ => None,
                };
                let Some(uuid) = uuid else {
                    return Err(format!(
                        "Model expression could not find ModelObject with UUID '{}'",
                        js_string(found.as_ref())
                    ));
                };
                self.walk(uuid, path)
            }
            Expr::Case { name, of } => {
                let v = self.eval(of).map_err(|m| format!("Case expression inner expression error: {m}"))?;
                // Object keys are strings: the reference looks up `String(value)`.
                let key = js_string(v.as_ref());
                let entries = self.cases.iter().find(|(n, _)| n == name).map(|(_, e)| e.as_slice());
                // Case names are checked at load; a missing one is reported, not a panic.
                entries
                    .and_then(|e| e.iter().find(|(k, _)| *k == key))
                    .map(|(_, v)| Some(v.clone()))
                    .ok_or_else(|| {
                        format!("Case expression has no entry for returned expression result: {key}")
                    })
            }
        }
    }

    /// `$incoming.cls.kind.field`.
    fn incoming(&self, cls: &str, kind: FragmentKind, field: &Field) -> Result<Option<Value>, String> {
        let Some(f) = self.incoming.get(&(cls, kind)) else {
            return Err(format!("Incoming did not contain the change '{cls}.{}'", kind.as_str()));
        };
        let (name, index) = match field {
            Field::Uuid => return Ok(Some(Value::String(f.uuid.to_string()))),
            Field::Prop { name, index } => (name, index),
        };
        let Some(raw) = f.properties.iter().find(|(k, _)| k == name).map(|(_, v)| v) else {
            return Err(format!("Incoming change did not contain the field '{name}'"));
        };
        let schema = self.state.schema();
        let value = match prop_of(schema, cls, name) {
            Some(p) if matches!(p.single, Single::Model(_)) => lower_uuids(raw),
            _ => raw.clone(),
        };
        let Some(index) = index else {
            return Ok(Some(value));
        };
        let Value::Array(new) = &value else {
            return Err(format!("Incoming change was not an array value for field '{name}'"));
        };
        let (n, from_current) = match *index {
            Index::At(n) => return Ok(element_at(new, n).cloned()),
            Index::Inserted(n) => (n, false),
            Index::Removed(n) => (n, true),
        };
        let Some((obj_cls, values)) = self.state.object(&f.uuid) else {
            return Err(format!(
                "Incoming change with dynamic index unable to find existing ModelObject '{}'",
                f.uuid
            ));
        };
        let current = prop_of(schema, obj_cls, name)
            .filter(|p| p.collection)
            .and_then(|_| values.into_iter().find(|(k, _)| k == name))
            .and_then(|(_, v)| if let Value::Array(a) = v { Some(a) } else { None });
        let Some(current) = current else {
            return Err(format!(
                "Incoming change with dynamic index unable to resolve value as ModelObject type '{cls}' has no \
                 collection at key '{name}'"
            ));
        };
        // `_.difference`: the elements of one array that the other does not hold, in order.
        let (from, other) = if from_current { (&current, new) } else { (new, &current) };
        let diff: Vec<&Value> = from.iter().filter(|x| !other.iter().any(|y| strict_eq(x, y))).collect();
        Ok(element_at(&diff, n).map(|v| (*v).clone()))
    }

    /// Follows `path` from object `start` (`KeyPathNotation.resolveModelObject`, then the
    /// value of the last segment). Messages name the key path as the reference's do.
    fn walk(&self, start: Uuid, path: &Path) -> Result<Option<Value>, String> {
        let schema = self.state.schema();
        let Some((start_cls, _)) = self.state.object(&start) else {
            return Err(format!("Model expression could not find ModelObject with UUID '{start}'"));
        };
        let base = format!("{start_cls}('{start}')");
        let mut traversed = String::new();
        let mut cur = start;
        for step in &path.steps {
            let at = || format!("{base}{traversed}.{step}");
            let (p, value) = self
                .read(schema, cur, &step.name)
                .ok_or_else(|| format!("No property '{}' at keyPath: {}", step.name, at()))?;
            if !matches!(p.single, Single::Model(_)) {
                return Err(format!(
                    "Property '{}' is not a ModelObject property at keyPath: {}",
                    step.name,
                    at()
                ));
            }
            let next = match (p.collection, step.index, &value) {
                (true, None, _) => {
                    return Err(format!(
                        "No index found for ModelObject in collection on property '{}' at keyPath: {}",
                        step.name,
                        at()
                    ));
                }
                (true, Some(i), Value::Array(a)) => element_at(a, i).ok_or_else(|| {
                    format!(
                        "No ModelObject instance at index {i} on property '{}' at keyPath: {}",
                        step.name,
                        at()
                    )
                })?,
                // The reference ignored an index on a single reference; it is a mistake.
                (false, Some(_), _) => {
                    return Err(format!("Property '{}' is not a collection at keyPath: {}", step.name, at()));
                }
                (_, _, v) => v,
            };
            let Some(next) = next.as_str().and_then(Uuid::parse) else {
                return Err(format!(
                    "No ModelObject instance on property '{}' at keyPath: {}",
                    step.name,
                    at()
                ));
            };
            traversed.push('.');
            traversed.push_str(&step.to_string());
            cur = next;
        }
        let step: &Step = match &path.last {
            Target::Uuid => return Ok(Some(Value::String(cur.to_string()))),
            Target::Prop(step) => step,
        };
        let at = || format!("{base}{traversed}.{step}");
        let (p, value) = self
            .read(schema, cur, &step.name)
            .ok_or_else(|| format!("No property '{}' at keyPath: {}", step.name, at()))?;
        if matches!(p.single, Single::Model(_)) {
            return Err(format!(
                "Property '{}' is a ModelObject property type not a value property type at keyPath: {}",
                step.name,
                at()
            ));
        }
        match (step.index, value) {
            (None, v) => Ok(Some(v)),
            (Some(i), Value::Array(a)) => Ok(element_at(&a, i).cloned()),
            (Some(_), _) => Err(format!("Property '{}' is not a collection at keyPath: {}", step.name, at())),
        }
    }

    /// The property `name` of object `u`: its definition and its value (JSON, as
    /// [`ScopeState::object`] gives it).
    fn read<'s>(&self, schema: &'s Schema, u: Uuid, name: &str) -> Option<(&'s Prop, Value)> {
        let (cls, values) = self.state.object(&u)?;
        let p = prop_of(schema, cls, name)?;
        let v = values.into_iter().find(|(k, _)| *k == name)?.1;
        Some((p, v))
    }
}

/// The property `name` of model `cls` (inherited ones included).
pub(crate) fn prop_of<'s>(schema: &'s Schema, cls: &str, name: &str) -> Option<&'s Prop> {
    let m = schema.model(schema.model_id(cls)?);
    m.prop_index(name).map(|i| &m.props[i])
}

/// UUID strings (alone or in an array) in lower case, as the reference's fragment parsing
/// leaves the values of reference properties and as the scope stores them.
pub(crate) fn lower_uuids(v: &Value) -> Value {
    match v {
        Value::String(s) => Uuid::parse(s).map_or_else(|| v.clone(), |u| Value::String(u.to_string())),
        Value::Array(a) => Value::Array(a.iter().map(lower_uuids).collect()),
        _ => v.clone(),
    }
}

/// `Collection.objectAtIndex`: element `i`, counted from the end when negative.
pub(crate) fn element_at<T>(a: &[T], i: i64) -> Option<&T> {
    let len = i64::try_from(a.len()).ok()?;
    let at = if i < 0 { len.checked_add(i)? } else { i };
    usize::try_from(at).ok().and_then(|at| a.get(at))
}

/// JavaScript's `===` on JSON values: numbers by value, arrays and objects never (they are
/// compared by identity there, and a parsed value is never the same object as another).
pub(crate) fn strict_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(_) | Value::Object(_), _) | (_, Value::Array(_) | Value::Object(_)) => false,
        _ => a == b,
    }
}

/// JavaScript's `String(value)`, `undefined` for `None`.
pub(crate) fn js_string(v: Option<&Value>) -> String {
    match v {
        None => "undefined".to_owned(),
        Some(Value::Null) => "null".to_owned(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => js_number(n),
        Some(Value::String(s)) => s.clone(),
        // `Array.prototype.join`: `null` and `undefined` elements are empty.
        Some(Value::Array(a)) => a
            .iter()
            .map(|e| if e.is_null() { String::new() } else { js_string(Some(e)) })
            .collect::<Vec<_>>()
            .join(","),
        Some(Value::Object(_)) => "[object Object]".to_owned(),
    }
}

/// JavaScript's `String(number)`: integers without a fraction, exponents beyond 1e21 and
/// below 1e-6 (`1e+21`, `1e-7`), otherwise the shortest decimal that reads back the same.
pub(crate) fn js_number(n: &Number) -> String {
    // Integers JavaScript holds exactly; larger ones are doubles there too.
    if let Some(i) = n.as_i64().filter(|i| i.unsigned_abs() <= 1 << 53) {
        return i.to_string();
    }
    let f = n.as_f64().unwrap_or(0.0);
    if f == 0.0 {
        return "0".to_owned();
    }
    let abs = f.abs();
    if (1e-6..1e21).contains(&abs) {
        // Rust's `Display` for floats is the shortest round-trip form, without exponent.
        return f.to_string();
    }
    let e = format!("{f:e}");
    match e.split_once('e') {
        Some((m, x)) if !x.starts_with('-') => format!("{m}e+{x}"),
        _ => e,
    }
}
