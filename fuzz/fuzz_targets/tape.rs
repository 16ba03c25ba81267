//! `data` on the validator's tape (`sluice::registry::tape`) against serde_json's tree: the
//! same value or the same error for any bytes, and the same verdict under schemas whose
//! keywords read the representation (lookups, member passes, names, lengths, numbers,
//! equality, uniqueness, recursion). The first byte picks the schema.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use sluice::registry::{compile_schema, tape, Validator};

const SCHEMAS: usize = 8;

fn schema(i: usize) -> Value {
    match i {
        0 => json!({"type": "object", "properties": {"a": {"type": "integer"}, "s": {"maxLength": 3}}, "required": ["a"]}),
        1 => json!({"additionalProperties": false, "properties": {"a": {}, "b": {}}}),
        2 => json!({"patternProperties": {"^k": {"minimum": 1}}, "propertyNames": {"maxLength": 2}}),
        3 => json!({"enum": [null, 1, "é", [1, 2], {"a": 1}]}),
        4 => json!({"uniqueItems": true, "items": {"type": ["string", "number"]}}),
        5 => json!({"multipleOf": 0.5, "maximum": 18446744073709551615_u64}),
        6 => json!({"$defs": {"t": {"anyOf": [{"type": "integer"}, {"items": {"$ref": "#/$defs/t"}}, {"additionalProperties": {"$ref": "#/$defs/t"}}]}}, "$ref": "#/$defs/t"}),
        _ => json!({"dependentRequired": {"a": ["b"]}, "minProperties": 1, "unevaluatedProperties": {"type": "string"}}),
    }
}

fn validators() -> &'static [(Validator, jsonschema::Validator)] {
    static V: OnceLock<Vec<(Validator, jsonschema::Validator)>> = OnceLock::new();
    V.get_or_init(|| {
        (0..SCHEMAS)
            .map(|i| {
                let s = schema(i);
                (compile_schema(&s).unwrap(), jsonschema::validator_for(&s).unwrap())
            })
            .collect()
    })
}

fuzz_target!(|input: &[u8]| {
    let Some((&pick, data)) = input.split_first() else {
        return;
    };
    let expected = serde_json::from_slice::<Value>(data).map_err(|e| e.to_string());
    let (tape_validator, tree_validator) = &validators()[pick as usize % SCHEMAS];
    let got = tape::with_document(Some(data), |node| {
        (node.to_tree(), tape_validator.is_valid(node))
    })
    .map_err(|e| e.to_string());
    match (got, expected) {
        (Ok((tree, valid)), Ok(value)) => {
            assert_eq!(tree, value);
            assert_eq!(valid, tree_validator.is_valid(&value));
        }
        (Err(got), Err(expected)) => assert_eq!(got, expected),
        (got, expected) => panic!("tape {got:?}, serde_json {expected:?}"),
    }
});
