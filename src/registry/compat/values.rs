//! What schema values mean: the keyword vocabulary, `true`/`false` schemas, equality with
//! annotations ignored, node counts, and the small readers the rules share.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::context::View;

/// Keywords that do not change which instances are valid.
pub(super) const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "default",
    "examples",
    "$comment",
    "deprecated",
    "readOnly",
    "writeOnly",
    "$id",
    "$schema",
    "$anchor",
    "$defs",
    "definitions",
    "contentEncoding",
    "contentMediaType",
    "contentSchema",
];

/// Keywords the rules below understand.
pub(super) const KNOWN: &[&str] = &[
    "type",
    "enum",
    "const",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "properties",
    "required",
    "additionalProperties",
    "patternProperties",
    "minProperties",
    "maxProperties",
    "propertyNames",
    "dependentRequired",
    "dependencies",
    "items",
    "prefixItems",
    "additionalItems",
    "minItems",
    "maxItems",
    "uniqueItems",
    "contains",
    "minContains",
    "maxContains",
    "anyOf",
    "oneOf",
    "allOf",
    "not",
    "if",
    "then",
    "else",
    "$ref",
    "unevaluatedProperties",
    "unevaluatedItems",
];

pub(super) const TYPES: [&str; 7] = [
    "null", "boolean", "object", "array", "number", "integer", "string",
];

pub(super) static TRUE: Value = Value::Bool(true);

/// (positional item schemas, schema of the rest), for 2020-12 and draft-07 spellings.
pub(super) fn items(s: &Map<String, Value>) -> (Vec<&Value>, &Value) {
    if let Some(prefix) = s.get("prefixItems").and_then(Value::as_array) {
        return (prefix.iter().collect(), s.get("items").unwrap_or(&TRUE));
    }
    match s.get("items") {
        Some(Value::Array(tuple)) => (
            tuple.iter().collect(),
            s.get("additionalItems").unwrap_or(&TRUE),
        ),
        Some(one) => (Vec::new(), one),
        None => (Vec::new(), &TRUE),
    }
}

pub(super) fn lower(s: &Map<String, Value>) -> Option<(f64, bool)> {
    let inc = s.get("minimum").and_then(Value::as_f64).map(|v| (v, false));
    let exc = s
        .get("exclusiveMinimum")
        .and_then(Value::as_f64)
        .map(|v| (v, true));
    match (inc, exc) {
        (Some(i), Some(e)) => Some(if e.0 >= i.0 { e } else { i }),
        (x, None) | (None, x) => x,
    }
}

pub(super) fn upper(s: &Map<String, Value>) -> Option<(f64, bool)> {
    let inc = s.get("maximum").and_then(Value::as_f64).map(|v| (v, false));
    let exc = s
        .get("exclusiveMaximum")
        .and_then(Value::as_f64)
        .map(|v| (v, true));
    match (inc, exc) {
        (Some(i), Some(e)) => Some(if e.0 <= i.0 { e } else { i }),
        (x, None) | (None, x) => x,
    }
}

pub(super) fn as_schema(v: &Value) -> Option<&Map<String, Value>> {
    v.as_object()
}

pub(super) fn is_true(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Object(o) => o.keys().all(|k| ANNOTATIONS.contains(&k.as_str())),
        _ => false,
    }
}

pub(super) fn is_false(v: &Value) -> bool {
    matches!(v, Value::Bool(false))
}

/// Equal once annotations are ignored (`a` read through its view); `walked` counts the
/// nodes looked at.
pub(super) fn same_obj(a: View<'_>, b: &Map<String, Value>, walked: &mut u64) -> bool {
    let keys_a: BTreeSet<&String> = a
        .keys()
        .filter(|k| !ANNOTATIONS.contains(&k.as_str()))
        .collect();
    let keys_b: BTreeSet<&String> = b
        .keys()
        .filter(|k| !ANNOTATIONS.contains(&k.as_str()))
        .collect();
    *walked += (keys_a.len() + keys_b.len()) as u64 + 1;
    keys_a == keys_b
        && keys_a
            .iter()
            .all(|k| same_value(k, &a.map[k.as_str()], &b[k.as_str()], walked))
}

pub(super) fn same(a: &Value, b: &Value, walked: &mut u64) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => same_obj(View { map: x, skip: 0 }, y, walked),
        _ => equal(a, b, walked),
    }
}

/// Compares keyword values, recursing into subschemas so that nested annotations are ignored.
pub(super) fn same_value(key: &str, a: &Value, b: &Value, walked: &mut u64) -> bool {
    *walked += 1;
    match key {
        "properties" | "patternProperties" | "$defs" | "definitions" => match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                x.len() == y.len()
                    && x.iter()
                        .all(|(k, v)| y.get(k).is_some_and(|w| same(v, w, walked)))
            }
            _ => equal(a, b, walked),
        },
        "allOf" | "anyOf" | "oneOf" | "prefixItems" => match (a, b) {
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same(v, w, walked))
            }
            _ => equal(a, b, walked),
        },
        "required" => {
            *walked += (a.as_array().map_or(0, Vec::len) + b.as_array().map_or(0, Vec::len)) as u64;
            strings(Some(a)) == strings(Some(b))
        }
        "items"
        | "additionalProperties"
        | "not"
        | "if"
        | "then"
        | "else"
        | "contains"
        | "propertyNames"
        | "additionalItems" => same(a, b, walked),
        _ => equal(a, b, walked),
    }
}

/// `a == b`, counting the nodes looked at in `walked`.
pub(super) fn equal(a: &Value, b: &Value, walked: &mut u64) -> bool {
    *walked += 1;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| equal(v, w, walked)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| equal(v, w, walked))
        }
        _ => a == b,
    }
}

/// The number of nodes in `v`.
pub(super) fn nodes(v: &Value) -> u64 {
    1 + match v {
        Value::Object(o) => o.values().map(nodes).sum(),
        Value::Array(a) => a.iter().map(nodes).sum(),
        _ => 0,
    }
}

pub(super) fn strings(v: Option<&Value>) -> BTreeSet<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// The JSON types a schema admits (`integer` stands for itself; `number` includes it).
pub(super) fn types(s: &Map<String, Value>) -> BTreeSet<&'static str> {
    match s.get("type") {
        Some(Value::String(t)) => TYPES.iter().copied().filter(|x| x == t).collect(),
        Some(Value::Array(ts)) => TYPES
            .iter()
            .copied()
            .filter(|x| ts.iter().any(|t| t == x))
            .collect(),
        _ => TYPES.iter().copied().filter(|t| *t != "integer").collect(),
    }
}

/// The values a schema is restricted to, when it is: `const`, `enum`, or a type with finitely
/// many values (`boolean`, `null`).
pub(super) fn enumerated(s: &Map<String, Value>) -> Option<Vec<&Value>> {
    static BOOLS: [Value; 2] = [Value::Bool(true), Value::Bool(false)];
    static NULL: Value = Value::Null;
    if let Some(c) = s.get("const") {
        return Some(vec![c]);
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        return Some(e.iter().collect());
    }
    let t = types(s);
    if s.contains_key("type") && t.iter().all(|t| *t == "boolean" || *t == "null") {
        let mut out = Vec::new();
        if t.contains("boolean") {
            out.extend(BOOLS.iter());
        }
        if t.contains("null") {
            out.push(&NULL);
        }
        return Some(out);
    }
    None
}

pub(super) fn has_ref(v: &Value, walked: &mut u64) -> bool {
    *walked += 1;
    match v {
        Value::Object(o) => o.iter().any(|(k, v)| k == "$ref" || has_ref(v, walked)),
        Value::Array(a) => a.iter().any(|v| has_ref(v, walked)),
        _ => false,
    }
}

/// Branches that no instance can satisfy two of: distinct single types, or distinct `const`
/// values of one required property (a discriminator).
pub(super) fn pairwise_disjoint(branches: &[Value]) -> bool {
    let single_type = |b: &Value| -> Option<BTreeSet<&'static str>> {
        b.as_object().filter(|o| o.contains_key("type")).map(types)
    };
    let discriminator = |b: &Value| -> Option<(String, Value)> {
        let o = b.as_object()?;
        let props = o.get("properties")?.as_object()?;
        strings(o.get("required"))
            .into_iter()
            .find_map(|r| props.get(&r)?.get("const").map(|c| (r.clone(), c.clone())))
    };
    for (i, x) in branches.iter().enumerate() {
        for y in &branches[i + 1..] {
            let by_type = match (single_type(x), single_type(y)) {
                (Some(tx), Some(ty)) => tx.iter().all(|t| {
                    let numeric = |t: &str| t == "integer" || t == "number";
                    !(ty.contains(t) || (numeric(t) && ty.iter().any(|u| numeric(u))))
                }),
                _ => false,
            };
            let by_const = match (discriminator(x), discriminator(y)) {
                (Some((kx, cx)), Some((ky, cy))) => kx == ky && cx != cy,
                _ => false,
            };
            if !by_type && !by_const {
                return false;
            }
        }
    }
    true
}
