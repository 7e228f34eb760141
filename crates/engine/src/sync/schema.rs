//! Schemas: the models and enumerations objects of a scope are typed with, and the
//! definition ([`SchemaDef`]) they are built from. The file format is documented on the
//! [`sync`](super) module.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;

use indexmap::IndexMap;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::value::{self, Slot};

/// A table whose entries keep the order they were written in.
///
/// Order matters in a schema: a model's properties are listed in snapshots, and children
/// are visited, in declaration order, and an integer enumeration's values are quoted in
/// declaration order in error messages. (Reading TOML this way needs the `toml` crate's
/// `preserve_order` feature; without it `toml` hands tables over sorted by key.)
#[derive(Debug, Clone, PartialEq)]
pub struct Table<V>(pub Vec<(String, V)>);

impl<V> Default for Table<V> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Table<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TableVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for TableVisitor<V> {
            type Value = Table<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(256));
                while let Some(entry) = map.next_entry::<String, V>()? {
                    entries.push(entry);
                }
                Ok(Table(entries))
            }
        }
        deserializer.deserialize_map(TableVisitor(PhantomData))
    }
}

/// A schema definition, as read from the schema file. Build a [`Schema`] from it with
/// [`Schema::from_def`], which checks everything that can be wrong with it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaDef {
    /// `[enums]`: enumeration name → values.
    #[serde(default)]
    pub enums: Table<EnumDef>,
    /// `[extends]`: model name → the model it extends (its supertype).
    #[serde(default)]
    pub extends: Table<String>,
    /// `[models.<Name>]`: model name → its own properties (inherited ones are not repeated).
    #[serde(default)]
    pub models: Table<Table<PropertyDef>>,
}

/// The values of an enumeration. Kept as raw values so that a wrong one is reported by
/// [`Schema::from_def`] with the enumeration's name, not by the deserializer.
#[derive(Debug, Clone, PartialEq)]
pub enum EnumDef {
    /// `["red", "green"]`: a string enumeration (every element must be a string).
    Strings(Vec<Value>),
    /// `{ Open = 0, Closed = 1 }`: an integer enumeration, name → integer.
    Integers(Table<Value>),
}

impl<'de> Deserialize<'de> for EnumDef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EnumVisitor;
        impl<'de> Visitor<'de> for EnumVisitor {
            type Value = EnumDef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of strings or a table of names to integers")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<EnumDef, A::Error> {
                let mut values = Vec::new();
                while let Some(v) = seq.next_element::<Value>()? {
                    values.push(v);
                }
                Ok(EnumDef::Strings(values))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<EnumDef, A::Error> {
                Table::deserialize(de::value::MapAccessDeserializer::new(map)).map(EnumDef::Integers)
            }
        }
        deserializer.deserialize_any(EnumVisitor)
    }
}

/// One property: its type alone (`x = "Number"`), or a table with a default value
/// (`y = { type = "Number", default = 0 }`).
#[derive(Debug, Clone, PartialEq)]
pub enum PropertyDef {
    /// The type: `String`, `Number`, `Boolean`, `Date`, an enumeration or model name, or
    /// `[T]` for a collection of any of these.
    Type(String),
    /// The type with options.
    Spec(PropertySpec),
}

/// The table form of a property.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PropertySpec {
    /// The type, as in [`PropertyDef::Type`].
    #[serde(rename = "type")]
    pub ty: String,
    /// The value a new object gets when its add fragment does not set the property. Checked
    /// like an incoming value; model references cannot have one.
    #[serde(default)]
    pub default: Option<Value>,
}

impl<'de> Deserialize<'de> for PropertyDef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PropertyVisitor;
        impl<'de> Visitor<'de> for PropertyVisitor {
            type Value = PropertyDef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a type name or a table with `type` and optionally `default`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PropertyDef, E> {
                Ok(PropertyDef::Type(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<PropertyDef, A::Error> {
                PropertySpec::deserialize(de::value::MapAccessDeserializer::new(map)).map(PropertyDef::Spec)
            }
        }
        deserializer.deserialize_any(PropertyVisitor)
    }
}

/// What is wrong with a [`SchemaDef`]. The message names the enumeration, model and
/// property concerned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SchemaError {
    message: String,
}

impl SchemaError {
    fn new(message: String) -> Self {
        Self { message }
    }

    /// The message (also the `Display` form).
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// The built-in single types, by the names schema files and messages use (the names of the
/// JavaScript constructors the reference declares them with).
const BUILTINS: [(&str, Single); 4] = [
    ("String", Single::String),
    ("Number", Single::Number),
    ("Boolean", Single::Boolean),
    ("Date", Single::Date),
];

/// The largest integer JavaScript numbers hold exactly: integer enumeration values must
/// survive a trip through a JavaScript client.
const MAX_SAFE_INTEGER: i64 = 9_007_199_254_740_991;

/// The type of one value of a property (of each element, for a collection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Single {
    /// `String`.
    String,
    /// `Number`: a finite double.
    Number,
    /// `Boolean`.
    Boolean,
    /// `Date`: seconds since the epoch on the wire.
    Date,
    /// An enumeration (index into the schema's enumerations).
    Enum(usize),
    /// A reference to an object of this model or a subtype (index into the models).
    Model(usize),
}

impl Single {
    /// The name used in "should be …" messages for the built-in types.
    pub(crate) fn builtin_name(self) -> &'static str {
        match self {
            Self::String => "String",
            Self::Number => "Number",
            Self::Boolean => "Boolean",
            Self::Date => "Date",
            Self::Enum(_) | Self::Model(_) => "",
        }
    }
}

/// One property of a model (inherited ones included).
#[derive(Debug, Clone)]
pub(crate) struct Prop {
    /// The name (the key in fragments).
    pub(crate) name: String,
    /// The type of a value (of each element, for a collection).
    pub(crate) single: Single,
    /// `[T]`.
    pub(crate) collection: bool,
    /// The value of a new object that was not given one.
    pub(crate) default: Slot,
}

/// A model, with its inherited properties first.
#[derive(Debug)]
pub(crate) struct Model {
    /// The name (`clsName`).
    pub(crate) name: String,
    /// The model it extends.
    pub(crate) parent: Option<usize>,
    /// Every property: the supertype's (recursively) first, then its own.
    pub(crate) props: Vec<Prop>,
    /// Name → index into `props`.
    index: HashMap<String, usize>,
    /// `reach[m]`: a scope whose root is this model may hold objects of model `m`. These are
    /// the root model, every model a property of a model in the set refers to, and every
    /// subtype of one (a reference accepts subtypes). The reference server computes the same
    /// set without the subtypes ("No such class type" for anything else).
    pub(crate) reach: Vec<bool>,
}

impl Model {
    /// The index of the property called `key`.
    pub(crate) fn prop_index(&self, key: &str) -> Option<usize> {
        self.index.get(key).copied()
    }

    /// The number of properties (inherited ones included).
    pub(crate) fn prop_count(&self) -> usize {
        self.props.len()
    }
}

/// An enumeration.
#[derive(Debug)]
pub(crate) struct Enum {
    /// The values.
    pub(crate) values: EnumValues,
    /// `JSON.stringify(values)`, for "should be one of …".
    pub(crate) one_of: String,
}

/// The values of an enumeration, in declaration order.
#[derive(Debug)]
pub(crate) enum EnumValues {
    /// A string enumeration.
    Strings(Vec<String>),
    /// An integer enumeration (the names only matter to clients).
    Integers(Vec<i64>),
}

/// A validated schema: models (with inheritance resolved) and enumerations. Shared by every
/// scope typed with it (`Arc<Schema>`); immutable once built.
#[derive(Debug)]
pub struct Schema {
    models: Vec<Model>,
    by_name: IndexMap<String, usize>,
    enums: Vec<Enum>,
}

/// A model's own properties, resolved but not yet validated for defaults.
struct OwnProp {
    name: String,
    single: Single,
    collection: bool,
    default: Option<Value>,
}

impl Schema {
    /// Builds and validates a schema from its definition: names, types, inheritance and
    /// defaults. Every error names the enumeration, model and property concerned.
    pub fn from_def(def: SchemaDef) -> Result<Schema, SchemaError> {
        let err = |m: String| Err(SchemaError::new(m));

        // Names first: types refer to enumerations and models by name.
        let mut enum_ids: HashMap<&str, usize> = HashMap::new();
        for (i, (name, _)) in def.enums.0.iter().enumerate() {
            check_type_name("enum", name)?;
            if enum_ids.insert(name, i).is_some() {
                return err(format!("enum '{name}' is defined twice"));
            }
        }
        let mut by_name: IndexMap<String, usize> = IndexMap::new();
        for (i, (name, _)) in def.models.0.iter().enumerate() {
            check_type_name("model", name)?;
            if enum_ids.contains_key(name.as_str()) {
                return err(format!("'{name}' is defined both as an enum and as a model"));
            }
            if by_name.insert(name.clone(), i).is_some() {
                return err(format!("model '{name}' is defined twice"));
            }
        }
        if by_name.is_empty() {
            return err("the schema defines no models".to_owned());
        }

        let enums = def.enums.0.iter().map(|(name, d)| build_enum(name, d)).collect::<Result<Vec<_>, _>>()?;

        // Inheritance.
        let n = def.models.0.len();
        let mut parent: Vec<Option<usize>> = vec![None; n];
        for (sub, sup) in &def.extends.0 {
            let Some(&s) = by_name.get(sub) else {
                return err(format!("extends: '{sub}' is not a model"));
            };
            let Some(&p) = by_name.get(sup.trim()) else {
                return err(format!("extends: model '{sub}' extends '{sup}', which is not a model"));
            };
            if parent[s].is_some() {
                return err(format!("extends: model '{sub}' is listed twice"));
            }
            parent[s] = Some(p);
        }
        for start in 0..n {
            let mut chain = vec![start];
            let mut at = start;
            while let Some(p) = parent[at] {
                if p == start {
                    chain.push(p);
                    let names: Vec<&str> = chain.iter().map(|&m| def.models.0[m].0.as_str()).collect();
                    return err(format!("extends: inheritance cycle {}", names.join(" -> ")));
                }
                if chain.contains(&p) {
                    // A cycle that does not pass through `start`: reported from one of its members.
                    break;
                }
                chain.push(p);
                at = p;
            }
        }

        // Own properties, with types resolved.
        let mut own: Vec<Vec<OwnProp>> = Vec::with_capacity(n);
        for (model, props) in &def.models.0 {
            let mut list: Vec<OwnProp> = Vec::with_capacity(props.0.len());
            for (pname, pdef) in &props.0 {
                if !is_identifier(pname) {
                    return err(format!(
                        "model '{model}': invalid property name '{pname}' (a name starts with a letter or '_' \
                         and has only letters, digits and '_')"
                    ));
                }
                if list.iter().any(|p| p.name == *pname) {
                    return err(format!("model '{model}': property '{pname}' is declared twice"));
                }
                let (ty, default) = match pdef {
                    PropertyDef::Type(t) => (t.as_str(), None),
                    PropertyDef::Spec(s) => (s.ty.as_str(), s.default.clone()),
                };
                let (single, collection) = parse_type(ty, &enum_ids, &by_name)
                    .map_err(|m| SchemaError::new(format!("model '{model}', property '{pname}': {m}")))?;
                list.push(OwnProp { name: pname.clone(), single, collection, default });
            }
            own.push(list);
        }

        // Full property lists (ancestors first), defaults checked where declared.
        let mut models: Vec<Model> = Vec::with_capacity(n);
        for (m, (name, _)) in def.models.0.iter().enumerate() {
            let mut chain = vec![m];
            let mut at = m;
            while let Some(p) = parent[at] {
                chain.push(p);
                at = p;
            }
            chain.reverse();
            let mut props: Vec<Prop> = Vec::new();
            let mut index: HashMap<String, usize> = HashMap::new();
            let mut declared_by: Vec<usize> = Vec::new();
            for &c in &chain {
                let cname = &def.models.0[c].0;
                for op in &own[c] {
                    if let Some(&i) = index.get(&op.name) {
                        let by = &def.models.0[declared_by[i]].0;
                        return err(format!(
                            "model '{cname}', property '{}': already declared by its supertype '{by}'",
                            op.name
                        ));
                    }
                    let default = build_default(cname, op, &enums)?;
                    index.insert(op.name.clone(), props.len());
                    declared_by.push(c);
                    props.push(Prop {
                        name: op.name.clone(),
                        single: op.single,
                        collection: op.collection,
                        default,
                    });
                }
            }
            models.push(Model { name: name.clone(), parent: parent[m], props, index, reach: Vec::new() });
        }

        let mut schema = Schema { models, by_name, enums };
        schema.compute_reach();
        Ok(schema)
    }

    /// True if the schema defines a model called `name`.
    pub fn has_model(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The model names, in the order the definition lists them.
    pub fn model_names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// The index of the model called `name`.
    pub(crate) fn model_id(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// The model at `id` (an index this schema handed out).
    pub(crate) fn model(&self, id: usize) -> &Model {
        &self.models[id]
    }

    /// The enumerations, by index.
    pub(crate) fn enums(&self) -> &[Enum] {
        &self.enums
    }

    /// True if model `sub` is `sup` or extends it, directly or not.
    pub(crate) fn is_subtype(&self, sub: usize, sup: usize) -> bool {
        let mut at = Some(sub);
        // Inheritance chains are acyclic (checked at build), so this ends.
        while let Some(m) = at {
            if m == sup {
                return true;
            }
            at = self.models[m].parent;
        }
        false
    }

    /// Fills every model's `reach`.
    fn compute_reach(&mut self) {
        let n = self.models.len();
        let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (m, model) in self.models.iter().enumerate() {
            if let Some(p) = model.parent {
                children[p].push(m);
            }
        }
        let reaches: Vec<Vec<bool>> = (0..n)
            .map(|root| {
                let mut reach = vec![false; n];
                // `referable[m]`: some property may hold an `m` (so also any subtype of `m`).
                // The root itself is not, unless a property refers to its model.
                let mut referable = vec![false; n];
                let mut stack = vec![root];
                reach[root] = true;
                while let Some(m) = stack.pop() {
                    let referenced = self.models[m].props.iter().filter_map(|p| match p.single {
                        Single::Model(t) => Some(t),
                        _ => None,
                    });
                    let subtypes = children[m].iter().copied().filter(|_| referable[m]);
                    let next: Vec<usize> = referenced.chain(subtypes).collect();
                    for t in next {
                        if !referable[t] {
                            referable[t] = true;
                            reach[t] = true;
                            stack.push(t);
                        }
                    }
                }
                reach
            })
            .collect();
        for (model, reach) in self.models.iter_mut().zip(reaches) {
            model.reach = reach;
        }
    }
}

fn build_enum(name: &str, def: &EnumDef) -> Result<Enum, SchemaError> {
    let err = |m: String| Err(SchemaError::new(m));
    match def {
        EnumDef::Strings(vals) => {
            if vals.is_empty() {
                return err(format!("enum '{name}': has no values"));
            }
            let mut strings = Vec::with_capacity(vals.len());
            for v in vals {
                match v {
                    Value::String(s) => strings.push(s.clone()),
                    other => {
                        return err(format!(
                            "enum '{name}': value {other} is not a string (a string enum is an array of \
                             strings; an integer enum is a table of names to integers)"
                        ));
                    }
                }
            }
            let one_of = serde_json::to_string(&strings).unwrap_or_default();
            Ok(Enum { values: EnumValues::Strings(strings), one_of })
        }
        EnumDef::Integers(table) => {
            if table.0.is_empty() {
                return err(format!("enum '{name}': has no values"));
            }
            let mut ints = Vec::with_capacity(table.0.len());
            for (i, (key, v)) in table.0.iter().enumerate() {
                if key.is_empty() {
                    return err(format!("enum '{name}': a value has an empty name"));
                }
                if table.0[..i].iter().any(|(k, _)| k == key) {
                    return err(format!("enum '{name}': name '{key}' is defined twice"));
                }
                match integer(v) {
                    Some(x) => ints.push(x),
                    None => {
                        return err(format!(
                            "enum '{name}', value '{key}': {v} is not an integer between -{MAX_SAFE_INTEGER} \
                             and {MAX_SAFE_INTEGER}"
                        ));
                    }
                }
            }
            let one_of = serde_json::to_string(&ints).unwrap_or_default();
            Ok(Enum { values: EnumValues::Integers(ints), one_of })
        }
    }
}

/// The integer `v` holds, if it is one JavaScript numbers hold exactly (`1.0` counts: in
/// JavaScript it is the same number as `1`).
fn integer(v: &Value) -> Option<i64> {
    let Value::Number(n) = v else { return None };
    let x = if let Some(i) = n.as_i64() {
        i
    } else {
        let f = n.as_f64()?;
        if f.fract() != 0.0 || f.abs() > 9_007_199_254_740_991.0 {
            return None;
        }
        // In range and integral (checked just above).
        #[allow(clippy::cast_possible_truncation)]
        let i = f as i64;
        i
    };
    (x.abs() <= MAX_SAFE_INTEGER).then_some(x)
}

fn build_default(model: &str, p: &OwnProp, enums: &[Enum]) -> Result<Slot, SchemaError> {
    let Some(v) = &p.default else {
        return Ok(Slot::empty(p.single, p.collection));
    };
    if let Single::Model(_) = p.single {
        return Err(SchemaError::new(format!(
            "model '{model}', property '{}': a model reference cannot have a default",
            p.name
        )));
    }
    value::check_value(p.single, p.collection, &p.name, v, enums).map(Slot::Value).map_err(|e| {
        SchemaError::new(format!("model '{model}', property '{}': invalid default: {}", p.name, e.message))
    })
}

/// Checks an enumeration or model name.
fn check_type_name(what: &str, name: &str) -> Result<(), SchemaError> {
    if !is_identifier(name) {
        return Err(SchemaError::new(format!(
            "invalid {what} name '{name}' (a name starts with a letter or '_' and has only letters, digits and '_')"
        )));
    }
    if BUILTINS.iter().any(|(b, _)| *b == name) {
        return Err(SchemaError::new(format!("{what} '{name}': the name of a built-in type")));
    }
    Ok(())
}

/// `[A-Za-z_][A-Za-z0-9_]*`. Property names are restricted like type names: no `$` (the
/// JSON tree of a scope uses `$uuid`, `$cls` and `$ref` keys) and no leading digit (a
/// JavaScript object lists integer-like keys first, whatever the order they were written in).
fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses a property type: `T` or `[T]`.
fn parse_type(
    ty: &str,
    enums: &HashMap<&str, usize>,
    models: &IndexMap<String, usize>,
) -> Result<(Single, bool), String> {
    let t = ty.trim();
    let (inner, collection) = match t.strip_prefix('[') {
        Some(rest) => match rest.strip_suffix(']') {
            Some(inner) => (inner.trim(), true),
            None => return Err(format!("invalid type '{ty}' (a collection is written '[T]')")),
        },
        None => (t, false),
    };
    if collection && inner.starts_with('[') {
        return Err(format!("nested collections are not supported ('{ty}')"));
    }
    if let Some((_, s)) = BUILTINS.iter().find(|(b, _)| *b == inner) {
        return Ok((*s, collection));
    }
    if let Some(&e) = enums.get(inner) {
        return Ok((Single::Enum(e), collection));
    }
    if let Some(&m) = models.get(inner) {
        return Ok((Single::Model(m), collection));
    }
    Err(format!("unknown type '{inner}'"))
}
