//! Schema definitions: the file format and every `SchemaError`.

use serde_json::json;

use super::super::schema::{EnumValues, Single};
use super::super::value::Slot;
use super::super::{EnumDef, PropertyDef, PropertySpec, Schema, SchemaDef, Table};
use super::{EXAMPLE_TOML, schema, schema_err};

#[test]
fn example_file_parses_in_order() {
    let def: SchemaDef = toml::from_str(EXAMPLE_TOML).unwrap();
    let enum_names: Vec<&str> = def.enums.0.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(enum_names, ["MessageStatus", "Palette"]);
    assert_eq!(
        def.enums.0[0].1,
        EnumDef::Integers(Table(vec![("Sent".to_owned(), json!(0)), ("Read".to_owned(), json!(1))]))
    );
    assert_eq!(def.enums.0[1].1, EnumDef::Strings(vec![json!("red"), json!("green"), json!("blue")]));
    assert_eq!(def.extends.0, vec![("Circle".to_owned(), "Shape".to_owned())]);
    let shape = &def.models.0[1];
    assert_eq!(shape.0, "Shape");
    let names: Vec<&str> = shape.1.0.iter().map(|(n, _)| n.as_str()).collect();
    // The order written, not sorted (needs toml's `preserve_order`).
    assert_eq!(names, ["x", "y", "color", "created", "visible", "tags", "status", "palette"]);
    assert_eq!(shape.1.0[0].1, PropertyDef::Type("Number".to_owned()));
    assert_eq!(
        shape.1.0[1].1,
        PropertyDef::Spec(PropertySpec { ty: "Number".to_owned(), default: Some(json!(0)) })
    );

    let s = Schema::from_def(def).unwrap();
    assert_eq!(s.model_names().collect::<Vec<_>>(), ["Canvas", "Shape", "Circle"]);
    assert!(s.has_model("Circle"));
    assert!(!s.has_model("MessageStatus"));
    assert!(!s.has_model("String"));
}

#[test]
fn subtypes_have_their_supertype_properties_first() {
    let s = schema(EXAMPLE_TOML);
    let circle = s.model(s.model_id("Circle").unwrap());
    let names: Vec<&str> = circle.props.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["x", "y", "color", "created", "visible", "tags", "status", "palette", "radius"]);
    let shape = s.model_id("Shape").unwrap();
    assert_eq!(circle.parent, Some(shape));
    assert!(s.is_subtype(s.model_id("Circle").unwrap(), shape));
    assert!(!s.is_subtype(shape, s.model_id("Circle").unwrap()));
}

#[test]
fn property_types_and_defaults() {
    let s = schema(EXAMPLE_TOML);
    let shape = s.model(s.model_id("Shape").unwrap());
    let p = |name: &str| &shape.props[shape.prop_index(name).unwrap()];
    assert_eq!((p("x").single, p("x").collection), (Single::Number, false));
    assert_eq!(p("x").default, Slot::Value(json!(null)));
    assert_eq!(p("y").default, Slot::Value(json!(0)));
    assert_eq!(p("visible").default, Slot::Value(json!(true)));
    assert_eq!((p("tags").single, p("tags").collection), (Single::String, true));
    assert_eq!(p("tags").default, Slot::Value(json!([])));
    assert_eq!(p("created").single, Single::Date);
    assert!(matches!(p("status").single, Single::Enum(_)));
    assert!(matches!((p("palette").single, p("palette").collection), (Single::Enum(_), true)));
    let canvas = s.model(s.model_id("Canvas").unwrap());
    let shapes = &canvas.props[canvas.prop_index("shapes").unwrap()];
    assert_eq!((shapes.single, shapes.collection), (Single::Model(s.model_id("Shape").unwrap()), true));
    assert_eq!(shapes.default, Slot::Refs(vec![]));
    let Single::Enum(e) = p("status").single else { unreachable!() };
    assert!(matches!(&s.enums()[e].values, EnumValues::Integers(v) if v == &[0, 1]));
    assert_eq!(s.enums()[e].one_of, "[0,1]");
}

#[test]
fn defaults_of_every_kind_are_normalised() {
    let s = schema(
        r#"
        [enums]
        E = { A = 1, B = 2 }
        P = ["red", "blue"]
        [models.M]
        d = { type = "Date", default = "2020-01-01T00:00:00.5Z" }
        n = { type = "Number", default = 2.0 }
        e = { type = "E", default = 2.0 }
        p = { type = "[P]", default = ["blue", "red"] }
        t = { type = "[String]", default = ["a"] }
        "#,
    );
    let m = s.model(0);
    let defaults: Vec<&Slot> = m.props.iter().map(|p| &p.default).collect();
    assert_eq!(
        defaults,
        [
            &Slot::Value(json!(1_577_836_800.5)),
            &Slot::Value(json!(2)),
            &Slot::Value(json!(2)),
            &Slot::Value(json!(["blue", "red"])),
            &Slot::Value(json!(["a"]))
        ]
    );
}

#[test]
fn type_strings_tolerate_spaces() {
    let s = schema("[models.M]\na = \" [ M ] \"\nb = \" Number\"");
    let m = s.model(0);
    assert_eq!((m.props[0].single, m.props[0].collection), (Single::Model(0), true));
    assert_eq!(m.props[1].single, Single::Number);
}

#[test]
fn reach_follows_references_and_subtypes() {
    let s = schema(
        r#"
        [extends]
        Circle = "Shape"
        Dot = "Circle"
        SpecialCanvas = "Canvas"
        [models.Canvas]
        shapes = "[Shape]"
        [models.Shape]
        x = "Number"
        [models.Circle]
        r = "Number"
        [models.Dot]
        owner = "Owner"
        [models.Owner]
        name = "String"
        [models.Unrelated]
        z = "Number"
        [models.SpecialCanvas]
        extra = "Number"
        "#,
    );
    let reach_of = |root: &str| -> Vec<&str> {
        let m = s.model(s.model_id(root).unwrap());
        s.model_names().filter(|n| m.reach[s.model_id(n).unwrap()]).collect()
    };
    // Subtypes of referenced models (recursively) and what they refer to; not the root's
    // own subtypes, nor unrelated models.
    assert_eq!(reach_of("Canvas"), ["Canvas", "Shape", "Circle", "Dot", "Owner"]);
    assert_eq!(reach_of("SpecialCanvas"), ["Shape", "Circle", "Dot", "Owner", "SpecialCanvas"]);
    assert_eq!(reach_of("Owner"), ["Owner"]);
}

#[test]
fn a_model_referring_to_itself_reaches_its_subtypes() {
    let s =
        schema("[extends]\nLeaf = \"Node\"\n[models.Node]\nkids = \"[Node]\"\n[models.Leaf]\nw = \"Number\"");
    let node = s.model(s.model_id("Node").unwrap());
    assert!(node.reach[s.model_id("Leaf").unwrap()]);
}

#[test]
fn unknown_keys_are_rejected_by_the_deserializer() {
    let e = toml::from_str::<SchemaDef>("[model.A]\nx = \"Number\"").unwrap_err().to_string();
    assert!(e.contains("unknown field `model`"), "{e}");
    let e = toml::from_str::<SchemaDef>("[models.A]\nx = { typ = \"Number\" }").unwrap_err().to_string();
    assert!(e.contains("unknown field `typ`"), "{e}");
    let e = toml::from_str::<SchemaDef>("[models.A]\nx = 5").unwrap_err().to_string();
    assert!(e.contains("a type name or a table with `type`"), "{e}");
    let e = toml::from_str::<SchemaDef>("[enums]\nE = 5").unwrap_err().to_string();
    assert!(e.contains("an array of strings or a table of names to integers"), "{e}");
}

#[test]
fn schema_errors() {
    let cases: &[(&str, &str)] = &[
        ("", "the schema defines no models"),
        ("[enums]\nE = [\"a\"]", "the schema defines no models"),
        (
            "[models.\"a b\"]\nx = \"Number\"",
            "invalid model name 'a b' (a name starts with a letter or '_' and has only letters, digits and '_')",
        ),
        (
            "[models.1A]\nx = \"Number\"",
            "invalid model name '1A' (a name starts with a letter or '_' and has only letters, digits and '_')",
        ),
        ("[models.String]\nx = \"Number\"", "model 'String': the name of a built-in type"),
        ("[enums]\nDate = [\"a\"]\n[models.A]\nx = \"Number\"", "enum 'Date': the name of a built-in type"),
        (
            "[enums]\n\"$E\" = [\"a\"]\n[models.A]\nx = \"Number\"",
            "invalid enum name '$E' (a name starts with a letter or '_' and has only letters, digits and '_')",
        ),
        ("[enums]\nA = [\"a\"]\n[models.A]\nx = \"Number\"", "'A' is defined both as an enum and as a model"),
        (
            "[models.A]\n\"$x\" = \"Number\"",
            "model 'A': invalid property name '$x' (a name starts with a letter or '_' and has only letters, digits and '_')",
        ),
        (
            "[models.A]\n\"0\" = \"Number\"",
            "model 'A': invalid property name '0' (a name starts with a letter or '_' and has only letters, digits and '_')",
        ),
        (
            "[models.A]\n\"\" = \"Number\"",
            "model 'A': invalid property name '' (a name starts with a letter or '_' and has only letters, digits and '_')",
        ),
        (
            "[models.Shape]\nstatus = \"MessageStatuz\"",
            "model 'Shape', property 'status': unknown type 'MessageStatuz'",
        ),
        ("[models.Shape]\nstatus = \"\"", "model 'Shape', property 'status': unknown type ''"),
        ("[models.Shape]\nxs = \"[Nope]\"", "model 'Shape', property 'xs': unknown type 'Nope'"),
        (
            "[models.Shape]\nxs = \"[[String]]\"",
            "model 'Shape', property 'xs': nested collections are not supported ('[[String]]')",
        ),
        (
            "[models.Shape]\nxs = \"[String\"",
            "model 'Shape', property 'xs': invalid type '[String' (a collection is written '[T]')",
        ),
        ("[models.Shape]\nxs = \"number\"", "model 'Shape', property 'xs': unknown type 'number'"),
        ("[extends]\nB = \"A\"\n[models.A]\nx = \"Number\"", "extends: 'B' is not a model"),
        (
            "[extends]\nA = \"B\"\n[models.A]\nx = \"Number\"",
            "extends: model 'A' extends 'B', which is not a model",
        ),
        ("[extends]\nA = \"A\"\n[models.A]\nx = \"Number\"", "extends: inheritance cycle A -> A"),
        (
            "[extends]\nA = \"B\"\nB = \"C\"\nC = \"A\"\n[models.A]\n[models.B]\n[models.C]",
            "extends: inheritance cycle A -> B -> C -> A",
        ),
        (
            "[extends]\nCircle = \"Shape\"\n[models.Shape]\nx = \"Number\"\n[models.Circle]\nx = \"Number\"",
            "model 'Circle', property 'x': already declared by its supertype 'Shape'",
        ),
        (
            "[extends]\nB = \"A\"\nC = \"B\"\n[models.A]\nx = \"Number\"\n[models.B]\ny = \"Number\"\n[models.C]\nx = \"String\"",
            "model 'C', property 'x': already declared by its supertype 'A'",
        ),
        ("[enums]\nE = []\n[models.A]\nx = \"E\"", "enum 'E': has no values"),
        ("[enums]\nE = {}\n[models.A]\nx = \"E\"", "enum 'E': has no values"),
        (
            "[enums]\nE = [\"a\", 1]\n[models.A]\nx = \"E\"",
            "enum 'E': value 1 is not a string (a string enum is an array of strings; an integer enum is a table of names to integers)",
        ),
        (
            "[enums]\nE = [[\"a\"]]\n[models.A]\nx = \"E\"",
            "enum 'E': value [\"a\"] is not a string (a string enum is an array of strings; an integer enum is a table of names to integers)",
        ),
        (
            "[enums]\nE = { A = 0, B = 1.5 }\n[models.A]\nx = \"E\"",
            "enum 'E', value 'B': 1.5 is not an integer between -9007199254740991 and 9007199254740991",
        ),
        (
            "[enums]\nE = { A = 0, B = \"1\" }\n[models.A]\nx = \"E\"",
            "enum 'E', value 'B': \"1\" is not an integer between -9007199254740991 and 9007199254740991",
        ),
        (
            "[enums]\nE = { A = 9007199254740992 }\n[models.A]\nx = \"E\"",
            "enum 'E', value 'A': 9007199254740992 is not an integer between -9007199254740991 and 9007199254740991",
        ),
        ("[enums]\nE = { \"\" = 0 }\n[models.A]\nx = \"E\"", "enum 'E': a value has an empty name"),
        (
            "[models.Shape]\ny = { type = \"Number\", default = \"0\" }",
            "model 'Shape', property 'y': invalid default: Not valid type at 'y', should be Number",
        ),
        (
            "[models.Shape]\ny = { type = \"Date\", default = \"yesterday\" }",
            "model 'Shape', property 'y': invalid default: Not valid type at 'y', should be Date",
        ),
        (
            "[models.Shape]\ny = { type = \"Boolean\", default = 1 }",
            "model 'Shape', property 'y': invalid default: Not valid type at 'y', should be Boolean",
        ),
        (
            "[models.Shape]\ny = { type = \"String\", default = 1 }",
            "model 'Shape', property 'y': invalid default: Not valid type at 'y', should be String",
        ),
        (
            "[enums]\nE = { A = 0 }\n[models.Shape]\ny = { type = \"E\", default = 3 }",
            "model 'Shape', property 'y': invalid default: Not valid type at 'y', should be one of [0]",
        ),
        (
            "[models.Shape]\ny = { type = \"[String]\", default = \"a\" }",
            "model 'Shape', property 'y': invalid default: Collection type without array value at 'y'",
        ),
        (
            "[models.Shape]\ny = { type = \"[Number]\", default = [\"a\"] }",
            "model 'Shape', property 'y': invalid default: Not valid type at 'y', should be Number",
        ),
        (
            "[models.Shape]\ny = { type = \"Shape\", default = \"x\" }",
            "model 'Shape', property 'y': a model reference cannot have a default",
        ),
        (
            "[models.Shape]\ny = { type = \"[Shape]\", default = [] }",
            "model 'Shape', property 'y': a model reference cannot have a default",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(schema_err(text), *expected, "for:\n{text}");
    }
}

#[test]
fn programmatic_definitions_with_repeated_names_are_rejected() {
    // TOML cannot repeat a key; a definition built in code can.
    let model = |props: Vec<(&str, &str)>| {
        Table(props.into_iter().map(|(k, t)| (k.to_owned(), PropertyDef::Type(t.to_owned()))).collect())
    };
    let err = |def: SchemaDef| Schema::from_def(def).unwrap_err().to_string();
    let def = SchemaDef {
        models: Table(vec![("A".to_owned(), model(vec![("x", "Number")])), ("A".to_owned(), model(vec![]))]),
        ..SchemaDef::default()
    };
    assert_eq!(err(def), "model 'A' is defined twice");
    let def = SchemaDef {
        models: Table(vec![("A".to_owned(), model(vec![("x", "Number"), ("x", "String")]))]),
        ..SchemaDef::default()
    };
    assert_eq!(err(def), "model 'A': property 'x' is declared twice");
    let def = SchemaDef {
        enums: Table(vec![
            ("E".to_owned(), EnumDef::Strings(vec![json!("a")])),
            ("E".to_owned(), EnumDef::Strings(vec![json!("b")])),
        ]),
        models: Table(vec![("A".to_owned(), model(vec![]))]),
        ..SchemaDef::default()
    };
    assert_eq!(err(def), "enum 'E' is defined twice");
    let def = SchemaDef {
        enums: Table(vec![(
            "E".to_owned(),
            EnumDef::Integers(Table(vec![("A".to_owned(), json!(0)), ("A".to_owned(), json!(1))])),
        )]),
        models: Table(vec![("A".to_owned(), model(vec![]))]),
        ..SchemaDef::default()
    };
    assert_eq!(err(def), "enum 'E': name 'A' is defined twice");
    let def = SchemaDef {
        extends: Table(vec![("B".to_owned(), "A".to_owned()), ("B".to_owned(), "A".to_owned())]),
        models: Table(vec![("A".to_owned(), model(vec![])), ("B".to_owned(), model(vec![]))]),
        ..SchemaDef::default()
    };
    assert_eq!(err(def), "extends: model 'B' is listed twice");
}

#[test]
fn schema_error_displays_its_message() {
    let def: SchemaDef = toml::from_str("[models.Shape]\nstatus = \"MessageStatuz\"").unwrap();
    let e = Schema::from_def(def).unwrap_err();
    assert_eq!(e.to_string(), "model 'Shape', property 'status': unknown type 'MessageStatuz'");
    assert_eq!(e.message(), e.to_string());
}

#[test]
fn definitions_also_read_from_json() {
    // `SchemaDef` is plain serde: other formats work too.
    let def: SchemaDef = serde_json::from_value(
        json!({"enums": {"E": ["a"]}, "models": {"A": {"e": "E", "n": {"type": "Number", "default": 1}}}}),
    )
    .unwrap();
    let s = Schema::from_def(def).unwrap();
    assert!(s.has_model("A"));
}

#[test]
fn integral_float_enum_values_are_integers() {
    let s = schema("[enums]\nE = { A = 1.0, B = -2 }\n[models.M]\ne = \"E\"");
    assert!(matches!(&s.enums()[0].values, EnumValues::Integers(v) if v == &[1, -2]));
    assert_eq!(s.enums()[0].one_of, "[1,-2]");
}

#[test]
fn the_documented_example_builds() {
    // The ```toml block of the module docs, which the dialect docs copy.
    let docs = include_str!("../mod.rs");
    let lines: Vec<&str> = docs
        .lines()
        .map(|l| l.strip_prefix("//!").unwrap_or(l))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .collect();
    let start = lines.iter().position(|l| *l == "```toml").expect("a toml block") + 1;
    let end = start + lines[start..].iter().position(|l| *l == "```").expect("its end");
    let text = lines[start..end].join("\n");
    let s = schema(&text);
    assert_eq!(s.model_names().collect::<Vec<_>>(), ["Canvas", "Shape", "Circle"]);
    let circle = s.model(s.model_id("Circle").unwrap());
    assert_eq!(circle.props.last().map(|p| p.name.as_str()), Some("radius"));
    assert_eq!(circle.props.len(), 9);
}
