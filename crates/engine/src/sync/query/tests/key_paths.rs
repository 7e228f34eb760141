//! The reference's `test/query/key_path_notation.js` (21 cases), ported on its models.
//!
//! Its `resolveModelObject` walks objects; its `resolveProperty` walks declared types and
//! returns the property and the key path of its owner. Tether resolves key paths on the
//! objects there (`path::resolve` gives the owner object, the property and the element), so
//! the `resolveProperty` cases run on objects built to the shape they describe. Where
//! Tether's answer differs, the test says why.

use std::sync::Arc;

use serde_json::json;
use tether_proto::jetstream::{SyncFragment, Uuid};

use super::super::path::{Resolved, resolve, resolve_object};
use super::{new, news, plan, plan_err};
use crate::sync::tests::{add, change, schema};
use crate::sync::{At, Schema, ScopeState, UpdateError};

/// The models of the test file. `Leaf` has no properties.
const KEY_PATH_TOML: &str = r#"
[extends]
DerivedKeyPathTest = "KeyPathTest"
ConflictingDerivedKeyPathTest = "KeyPathTest"

[models.Leaf]

[models.KeyPathTest]
single = "KeyPathTest"
leaf = "Leaf"
many = "[KeyPathTest]"
number = "Number"
str = "String"

[models.DerivedKeyPathTest]
base = "KeyPathTest"
derived = "DerivedKeyPathTest"
date = "Date"

[models.ConflictingDerivedKeyPathTest]
date = "Date"
"#;

/// UUIDs of the objects of a test: `t(1)` is the root.
fn t(n: u32) -> Uuid {
    crate::sync::tests::u(0x7000 + n)
}

fn ts(n: u32) -> String {
    t(n).to_string()
}

/// A scope whose root `t(1)` is a `KeyPathTest`, then `fragments` applied.
fn objects(fragments: &[SyncFragment]) -> ScopeState {
    let s: Arc<Schema> = schema(KEY_PATH_TOML);
    let mut sc = ScopeState::new(s, "KeyPathTest", t(1), &[]).expect("root");
    let a = sc.apply(fragments, true);
    assert!(a.replies.iter().all(Result::is_ok), "{:?}", a.replies);
    sc
}

fn prop(sc: &ScopeState, obj: Uuid, name: &str) -> usize {
    let cls = sc.objects[&obj].cls;
    sc.schema.model(cls).prop_index(name).expect("property")
}

fn at(path: &str) -> At {
    At { op: "$set", path: path.to_owned() }
}

/// `resolve` from the root.
fn resolved(sc: &ScopeState, path: &str) -> Result<Resolved, UpdateError> {
    resolve(sc, t(1), path, &at(path))
}

// resolveModelObject

#[test]
fn constructor_should_be_a_function() {
    // There is no constructor to call; its Rust counterpart is that parsing takes any string
    // (including what looks like an index) without panicking.
    let sc = objects(&[]);
    for path in
        ["", ".", "[", "]", "[0]", "single[", "single]", "many[]", "many[-]", "many[1][2]", "many.-", "é.ü"]
    {
        assert!(resolved(&sc, path).is_err(), "{path}");
    }
}

#[test]
fn resolve_model_object_should_return_error_result_if_model_object_not_instance_of_model_object() {
    // The start must be an object of the scope.
    let sc = objects(&[]);
    let e = resolve_object(&sc, t(99), "").expect_err("not an object");
    assert!(matches!(e, UpdateError::NotFound { .. }), "{e}");
}

#[test]
fn resolve_model_object_should_return_model_object_with_empty_key_path() {
    let sc = objects(&[]);
    assert_eq!(resolve_object(&sc, t(1), ""), Ok(t(1)));
}

#[test]
fn resolve_model_object_should_support_simple_property_of_property_access() {
    let sc = objects(&[
        change(t(1), "KeyPathTest", &[("single", json!(ts(2)))]),
        add(t(2), "KeyPathTest", &[("leaf", json!(ts(3)))]),
        add(t(3), "Leaf", &[]),
    ]);
    assert_eq!(resolve_object(&sc, t(1), "single.leaf"), Ok(t(3)));
}

#[test]
fn resolve_model_object_should_support_simple_array_property_access() {
    let sc = objects(&[
        change(t(1), "KeyPathTest", &[("many", json!([ts(2), ts(3)]))]),
        add(t(2), "KeyPathTest", &[("leaf", json!(ts(4)))]),
        add(t(3), "KeyPathTest", &[("single", json!(ts(5)))]),
        add(t(4), "Leaf", &[]),
        add(t(5), "KeyPathTest", &[("leaf", json!(ts(6)))]),
        add(t(6), "Leaf", &[]),
    ]);
    assert_eq!(resolve_object(&sc, t(1), "many.0.leaf"), Ok(t(4)));
    assert_eq!(resolve_object(&sc, t(1), "many[1]"), Ok(t(3)));
    assert_eq!(resolve_object(&sc, t(1), "many[1].single.leaf"), Ok(t(6)));
    // Negative indices count from the end.
    assert_eq!(resolve_object(&sc, t(1), "many[-1]"), Ok(t(3)));
    assert_eq!(resolve_object(&sc, t(1), "many.-2.leaf"), Ok(t(4)));
}

#[test]
fn resolve_model_object_should_support_traversing_derived_model_object_properties() {
    let sc = objects(&[
        change(t(1), "KeyPathTest", &[("single", json!(ts(2)))]),
        add(t(2), "DerivedKeyPathTest", &[("derived", json!(ts(3)))]),
        add(t(3), "DerivedKeyPathTest", &[("single", json!(ts(1)))]),
    ]);
    assert_eq!(resolve_object(&sc, t(1), "single.derived.single"), Ok(t(1)));
}

#[test]
fn resolve_model_object_should_return_error_result_for_missing_key_path() {
    let sc = objects(&[]);
    let e = resolve_object(&sc, t(1), "missing").expect_err("no such property");
    assert!(matches!(e, UpdateError::UnknownProperty { ref property, .. } if property == "missing"), "{e}");
    assert_eq!(e.to_string(), "query 'missing': model 'KeyPathTest' has no property 'missing'");
}

#[test]
fn resolve_model_object_should_return_error_result_for_non_model_object_property() {
    let sc =
        objects(&[change(t(1), "KeyPathTest", &[("single", json!(ts(2)))]), add(t(2), "KeyPathTest", &[])]);
    let e = resolve_object(&sc, t(1), "single.number").expect_err("not a reference");
    assert!(matches!(e, UpdateError::NotAReference { .. }), "{e}");
}

#[test]
fn resolve_model_object_should_return_error_result_for_missing_array_index_with_array_key_path() {
    let sc = objects(&[
        change(t(1), "KeyPathTest", &[("many", json!([ts(2), ts(3)]))]),
        add(t(2), "KeyPathTest", &[("single", json!(ts(4)))]),
        add(t(3), "KeyPathTest", &[]),
        add(t(4), "KeyPathTest", &[]),
    ]);
    for path in ["many.single", "many"] {
        let e = resolve_object(&sc, t(1), path).expect_err("no index");
        assert!(matches!(e, UpdateError::MissingIndex { ref property, .. } if property == "many"), "{e}");
    }
}

#[test]
fn resolve_model_object_should_return_error_result_for_array_index_with_no_element_present() {
    let sc = objects(&[
        change(t(1), "KeyPathTest", &[("many", json!([ts(2), ts(3)]))]),
        add(t(2), "KeyPathTest", &[]),
        add(t(3), "KeyPathTest", &[]),
    ]);
    assert_eq!(resolve_object(&sc, t(1), "many.0"), Ok(t(2)));
    let e = resolve_object(&sc, t(1), "many[2]").expect_err("out of range");
    assert_eq!(
        e,
        UpdateError::IndexOutOfRange {
            at: At { op: "query", path: "many[2]".to_owned() },
            property: "many".to_owned(),
            index: 2,
            len: 2
        }
    );
    assert!(resolve_object(&sc, t(1), "many[-3]").is_err());
}

#[test]
fn resolve_model_object_should_return_error_result_when_no_model_object_instance_at_key_path() {
    let sc =
        objects(&[change(t(1), "KeyPathTest", &[("single", json!(ts(2)))]), add(t(2), "KeyPathTest", &[])]);
    let e = resolve_object(&sc, t(1), "single.leaf").expect_err("leaf is null");
    assert!(matches!(e, UpdateError::NoObject { ref property, .. } if property == "leaf"), "{e}");
    // And a null reference in the middle of a path.
    let e = resolve_object(&sc, t(1), "single.single.leaf").expect_err("single.single is null");
    assert!(matches!(e, UpdateError::NoObject { ref property, .. } if property == "single"), "{e}");
}

// resolveProperty

#[test]
fn resolve_property_should_return_error_result_if_type_class_not_derived_from_model_object() {
    // Key paths start from an object the query chose by model: a model that does not exist
    // is the counterpart of a type that is not a model.
    let sc = objects(&[]);
    let e = plan_err(&sc, json!({"$cls": "AnObject"}), json!({"$set": {"number": 1}}));
    assert!(matches!(e, UpdateError::UnknownModel { ref cls, .. } if cls == "AnObject"), "{e}");
}

#[test]
fn resolve_property_should_support_simple_property_access() {
    let sc = objects(&[]);
    let r = resolved(&sc, "number").expect("resolves");
    assert_eq!(r, Resolved { obj: t(1), prop: prop(&sc, t(1), "number"), index: None, through: vec![] });
    assert_eq!(
        plan(&sc, json!(null), json!({"$set": {"number": 5}})),
        Ok(vec![change(t(1), "KeyPathTest", &[("number", json!(5))])])
    );
}

#[test]
fn resolve_property_should_support_simple_property_of_property_access() {
    let sc =
        objects(&[change(t(1), "KeyPathTest", &[("single", json!(ts(2)))]), add(t(2), "KeyPathTest", &[])]);
    let r = resolved(&sc, "single.leaf").expect("resolves");
    let single = prop(&sc, t(1), "single");
    assert_eq!(
        r,
        Resolved {
            obj: t(2),
            prop: prop(&sc, t(2), "leaf"),
            index: None,
            through: vec![(t(1), single, None)]
        }
    );
    // Setting it to a new Leaf: the owner (not the root) changes.
    assert_eq!(
        plan(&sc, json!(null), json!({"$set": {"single.leaf": {}}})),
        Ok(vec![change(t(2), "KeyPathTest", &[("leaf", json!(news(0)))]), add(new(0), "Leaf", &[])])
    );
}

#[test]
fn resolve_property_should_support_simple_array_property_access() {
    let sc = objects(&[
        change(t(1), "KeyPathTest", &[("many", json!([ts(2), ts(3)])), ("single", json!(ts(4)))]),
        add(t(2), "KeyPathTest", &[]),
        add(t(3), "KeyPathTest", &[]),
        add(t(4), "KeyPathTest", &[("many", json!([ts(5)]))]),
        add(t(5), "KeyPathTest", &[]),
    ]);
    // `many[1]`: the reference resolves the property `many` of the root (and `$set` would
    // set the whole collection); Tether resolves element 1 of it.
    let many = prop(&sc, t(1), "many");
    assert_eq!(
        resolved(&sc, "many[1]"),
        Ok(Resolved { obj: t(1), prop: many, index: Some(1), through: vec![] })
    );
    let r = resolved(&sc, "single.many.0.leaf").expect("resolves");
    assert_eq!(r.obj, t(5));
    assert_eq!(r.prop, prop(&sc, t(5), "leaf"));
    assert_eq!(r.through, [(t(1), prop(&sc, t(1), "single"), None), (t(4), many, Some(0))]);
}

#[test]
fn resolve_property_should_support_traversing_derived_model_object_properties() {
    let sc = objects(&[
        change(t(1), "KeyPathTest", &[("single", json!(ts(2)))]),
        add(t(2), "DerivedKeyPathTest", &[("derived", json!(ts(3)))]),
        add(t(3), "DerivedKeyPathTest", &[]),
    ]);
    let r = resolved(&sc, "single.derived.leaf").expect("resolves");
    assert_eq!((r.obj, r.prop), (t(3), prop(&sc, t(3), "leaf")));
    assert_eq!(sc.object(&r.obj).map(|(cls, _)| cls), Some("DerivedKeyPathTest"));
}

#[test]
fn resolve_property_should_return_error_result_when_accessing_ambiguous_derived_key_path() {
    // The reference resolves on declared types: `single` is a KeyPathTest, whose subtypes
    // DerivedKeyPathTest and ConflictingDerivedKeyPathTest both declare `date`, so it cannot
    // tell which `date` is meant. Tether resolves on the object there, which has one model:
    // never ambiguous. A plain KeyPathTest has no `date`.
    let plain =
        objects(&[change(t(1), "KeyPathTest", &[("single", json!(ts(2)))]), add(t(2), "KeyPathTest", &[])]);
    let e = resolved(&plain, "single.date").expect_err("no date on a KeyPathTest");
    assert_eq!(e.to_string(), "$set 'single.date': model 'KeyPathTest' has no property 'date'");
    for cls in ["DerivedKeyPathTest", "ConflictingDerivedKeyPathTest"] {
        let sc = objects(&[change(t(1), "KeyPathTest", &[("single", json!(ts(2)))]), add(t(2), cls, &[])]);
        let r = resolved(&sc, "single.date").expect("the object's own date");
        assert_eq!((r.obj, r.prop), (t(2), prop(&sc, t(2), "date")));
        let f =
            plan(&sc, json!(null), json!({"$set": {"single.date": "2015-03-04T05:06:07Z"}})).expect("plans");
        assert_eq!(f, [change(t(2), cls, &[("date", json!("2015-03-04T05:06:07Z"))])]);
    }
}

#[test]
fn resolve_property_should_return_error_result_for_missing_key_path() {
    let sc =
        objects(&[change(t(1), "KeyPathTest", &[("single", json!(ts(2)))]), add(t(2), "KeyPathTest", &[])]);
    let e = resolved(&sc, "single.missing").expect_err("no such property");
    assert!(matches!(e, UpdateError::UnknownProperty { ref property, .. } if property == "missing"), "{e}");
}

#[test]
fn resolve_property_should_return_error_result_for_key_path_extending_from_a_value_property() {
    let sc =
        objects(&[change(t(1), "KeyPathTest", &[("single", json!(ts(2)))]), add(t(2), "KeyPathTest", &[])]);
    let e = resolved(&sc, "single.number.invalid").expect_err("number is a value");
    assert_eq!(
        e.to_string(),
        "$set 'single.number.invalid': 'number' is not a reference to an object, so the key path cannot \
         continue past it"
    );
}

#[test]
fn resolve_property_should_return_error_result_for_array_key_path_without_index() {
    let sc =
        objects(&[change(t(1), "KeyPathTest", &[("many", json!([ts(2)]))]), add(t(2), "KeyPathTest", &[])]);
    let e = resolved(&sc, "many.single").expect_err("no index");
    assert_eq!(
        e.to_string(),
        "$set 'many.single': 'many' is a collection: name one of its elements with an index ('many[0]', \
         'many.0', 'many[-1]')"
    );
}

#[test]
fn resolve_property_should_return_correct_owner_key_path_if_final_key_path_piece_is_an_array_dot_index() {
    let sc = objects(&[
        change(t(1), "KeyPathTest", &[("single", json!(ts(2)))]),
        add(t(2), "KeyPathTest", &[("many", json!([ts(3), ts(3), ts(3), ts(4)]))]),
        add(t(3), "KeyPathTest", &[]),
        add(t(4), "KeyPathTest", &[]),
    ]);
    // The owner is `single` (not `single.many`), and the element is 3.
    let r = resolved(&sc, "single.many.3").expect("resolves");
    assert_eq!(r.obj, t(2));
    assert_eq!(r.prop, prop(&sc, t(2), "many"));
    assert_eq!(r.index, Some(3));
    // `$set` of it replaces that element only.
    assert_eq!(
        plan(&sc, json!(null), json!({"$set": {"single.many.3": ts(2)}})),
        Ok(vec![change(t(2), "KeyPathTest", &[("many", json!([ts(3), ts(3), ts(3), ts(2)]))])])
    );
}
