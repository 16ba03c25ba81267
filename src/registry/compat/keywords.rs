//! The keyword families: enumerations, types, number and string bounds, object shapes
//! (properties, required, additional and pattern properties, dependencies) and arrays.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use serde_json::{Map, Value};

use super::context::{Cx, View};
use super::values::*;
use crate::event::escape_pointer;

impl<'a> Cx<'a> {
    /// Keywords of the reader no rule reads: changed or added, they leave the pair undecided
    /// (`Break` for the conditional ones, which make every other answer unsafe).
    pub(super) fn unread(
        &mut self,
        ao: View<'_>,
        bo: &Map<String, Value>,
        path: &str,
    ) -> ControlFlow<()> {
        for key in [
            "not",
            "if",
            "then",
            "else",
            "unevaluatedProperties",
            "unevaluatedItems",
        ] {
            if bo.contains_key(key) && self.differ(bo.get(key), ao.get(key)) {
                self.undecided(
                    "UNDECIDED_KEYWORD",
                    &format!("{path}/{key}"),
                    format!("`{key}` changed or added"),
                );
                return ControlFlow::Break(());
            }
        }
        let ao = ao.map;
        for k in bo.keys() {
            if !KNOWN.contains(&k.as_str())
                && !ANNOTATIONS.contains(&k.as_str())
                && self.differ(bo.get(k), ao.get(k))
            {
                self.undecided(
                    "UNDECIDED_KEYWORD",
                    &format!("{path}/{k}"),
                    format!("unknown keyword `{k}` changed or added"),
                );
            }
        }
        ControlFlow::Continue(())
    }

    /// The keyword families: enumerations value by value, then types, then the bounds and
    /// shapes of each type a admits.
    pub(super) fn keywords(
        &mut self,
        ao: &Map<String, Value>,
        bo: &Map<String, Value>,
        path: &str,
    ) {
        if let Some(values) = enumerated(ao) {
            self.values_fit(values, bo, path);
            return;
        }
        if enumerated(bo).is_some() {
            self.no(
                "ENUM_ADDED",
                path,
                "values are now restricted to an enumeration",
            );
            return;
        }
        let ta = types(ao);
        let tb = types(bo);
        for t in &ta {
            let allowed = tb.contains(t) || (*t == "integer" && tb.contains("number"));
            if !allowed {
                self.no(
                    "TYPE_NARROWED",
                    path,
                    format!("type `{t}` is no longer accepted"),
                );
            }
        }
        let allows = |t: &str| ta.contains(t);
        if allows("number") || allows("integer") {
            self.numbers(ao, bo, path);
        }
        if allows("string") {
            self.strings(ao, bo, path);
        }
        if allows("object") {
            self.objects(ao, bo, path);
        }
        if allows("array") {
            self.arrays(ao, bo, path);
        }
    }

    pub(super) fn values_fit(&mut self, values: Vec<&Value>, bo: &Map<String, Value>, path: &str) {
        let b = Value::Object(bo.clone());
        // Compiling and trying each value costs about the reader's size per value.
        if !self.spend(nodes(&b).saturating_mul(values.len() as u64 + 1)) {
            return;
        }
        let Ok(validator) = jsonschema::options().build(&b) else {
            self.undecided(
                "UNDECIDED_SCHEMA",
                path,
                "the later schema does not compile on its own",
            );
            return;
        };
        for v in values {
            if !validator.is_valid(v) {
                self.no(
                    "ENUM_VALUE_REFUSED",
                    path,
                    format!("value {v} is no longer accepted"),
                );
            }
        }
    }

    pub(super) fn numbers(&mut self, a: &Map<String, Value>, b: &Map<String, Value>, path: &str) {
        let (a_lo, b_lo) = (lower(a), lower(b));
        if let Some((bv, bx)) = b_lo {
            match a_lo {
                Some((av, ax)) if av > bv || (av == bv && (ax || !bx)) => {}
                _ => self.no(
                    "MINIMUM_INCREASED",
                    path,
                    format!("numbers below {bv} are no longer accepted"),
                ),
            }
        }
        let (a_hi, b_hi) = (upper(a), upper(b));
        if let Some((bv, bx)) = b_hi {
            match a_hi {
                Some((av, ax)) if av < bv || (av == bv && (ax || !bx)) => {}
                _ => self.no(
                    "MAXIMUM_DECREASED",
                    path,
                    format!("numbers above {bv} are no longer accepted"),
                ),
            }
        }
        if let Some(bm) = b.get("multipleOf").and_then(Value::as_f64) {
            let am = a.get("multipleOf").and_then(Value::as_f64);
            let ok = am.is_some_and(|am| {
                let q = am / bm;
                (q - q.round()).abs() < 1e-9 && q.round() >= 1.0
            });
            if !ok {
                self.no(
                    "MULTIPLE_OF_CHANGED",
                    path,
                    format!("numbers must now be multiples of {bm}"),
                );
            }
        }
    }

    pub(super) fn strings(&mut self, a: &Map<String, Value>, b: &Map<String, Value>, path: &str) {
        self.bound_min(a, b, "minLength", "MIN_LENGTH_INCREASED", path);
        self.bound_max(a, b, "maxLength", "MAX_LENGTH_DECREASED", path);
        if let Some(bp) = b.get("pattern") {
            match a.get("pattern") {
                Some(ap) if ap == bp => {}
                None => self.no("PATTERN_ADDED", path, "strings must now match a pattern"),
                Some(_) => self.undecided(
                    "UNDECIDED_PATTERN",
                    path,
                    "the pattern changed; regular-expression inclusion is not decided",
                ),
            }
        }
        if let Some(bf) = b.get("format") {
            if a.get("format") != Some(bf) {
                self.no(
                    "FORMAT_CHANGED",
                    path,
                    format!("strings must now have format {bf}"),
                );
            }
        }
    }

    pub(super) fn bound_min(
        &mut self,
        a: &Map<String, Value>,
        b: &Map<String, Value>,
        key: &str,
        kind: &'static str,
        path: &str,
    ) {
        if let Some(bv) = b.get(key).and_then(Value::as_u64) {
            if bv > 0 && a.get(key).and_then(Value::as_u64).is_none_or(|av| av < bv) {
                self.no(kind, path, format!("`{key}` is now {bv}"));
            }
        }
    }

    pub(super) fn bound_max(
        &mut self,
        a: &Map<String, Value>,
        b: &Map<String, Value>,
        key: &str,
        kind: &'static str,
        path: &str,
    ) {
        if let Some(bv) = b.get(key).and_then(Value::as_u64) {
            if a.get(key).and_then(Value::as_u64).is_none_or(|av| av > bv) {
                self.no(kind, path, format!("`{key}` is now {bv}"));
            }
        }
    }

    pub(super) fn objects<'x>(
        &mut self,
        a: &'x Map<String, Value>,
        b: &'x Map<String, Value>,
        path: &str,
    ) where
        'a: 'x,
    {
        let empty = Map::new();
        let a_req = strings(a.get("required"));
        for r in strings(b.get("required")) {
            if !a_req.contains(&r) {
                self.no(
                    "REQUIRED_PROPERTY_ADDED",
                    &format!("{path}/required"),
                    format!("property `{r}` is now required"),
                );
            }
        }
        self.bound_min(a, b, "minProperties", "MIN_PROPERTIES_INCREASED", path);
        self.bound_max(a, b, "maxProperties", "MAX_PROPERTIES_DECREASED", path);
        for key in ["propertyNames", "dependentRequired", "dependencies"] {
            if b.contains_key(key) && a.get(key) != b.get(key) {
                self.undecided(
                    "UNDECIDED_KEYWORD",
                    &format!("{path}/{key}"),
                    format!("`{key}` changed or added"),
                );
            }
        }
        let pa = a
            .get("patternProperties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let pb = b
            .get("patternProperties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        if pa != pb {
            self.undecided(
                "UNDECIDED_PATTERN_PROPERTIES",
                &format!("{path}/patternProperties"),
                "patternProperties differ; which names they cover is not decided",
            );
            return;
        }
        let props_a = a
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let props_b = b
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let add_a = a.get("additionalProperties").unwrap_or(&Value::Bool(true));
        let add_b = b.get("additionalProperties").unwrap_or(&Value::Bool(true));
        let names: BTreeSet<&String> = props_a.keys().chain(props_b.keys()).collect();
        for name in names {
            let p = format!("{path}/properties/{}", escape_pointer(name));
            let sa = props_a.get(name.as_str());
            let sb = props_b.get(name.as_str());
            let in_patterns = |props: &Map<String, Value>| !props.is_empty();
            match (sa, sb) {
                (Some(sa), Some(sb)) => self.sub(sa, sb, &p),
                (Some(sa), None) => {
                    if in_patterns(pb) {
                        self.undecided(
                            "UNDECIDED_PATTERN_PROPERTIES",
                            &p,
                            "the property may fall under patternProperties",
                        );
                    } else if is_false(add_b) && !is_false(sa) {
                        self.no(
                            "PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL",
                            &p,
                            format!("property `{name}` is no longer allowed"),
                        );
                    } else {
                        self.sub(sa, add_b, &p);
                    }
                }
                (None, Some(sb)) => {
                    if in_patterns(pa) {
                        self.undecided(
                            "UNDECIDED_PATTERN_PROPERTIES",
                            &p,
                            "the property may fall under patternProperties",
                        );
                    } else if is_true(add_a) && !is_true(sb) {
                        self.no("PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL", &p, format!("property `{name}` was allowed with any value and is now constrained"));
                    } else {
                        self.sub(add_a, sb, &p);
                    }
                }
                (None, None) => {}
            }
        }
        if !is_true(add_b) {
            let p = format!("{path}/additionalProperties");
            if is_true(add_a) {
                self.no(
                    "ADDITIONAL_PROPERTIES_NARROWED",
                    &p,
                    "properties not listed were allowed and are now constrained",
                );
            } else {
                self.sub(add_a, add_b, &p);
            }
        }
    }

    pub(super) fn arrays<'x>(
        &mut self,
        a: &'x Map<String, Value>,
        b: &'x Map<String, Value>,
        path: &str,
    ) where
        'a: 'x,
    {
        self.bound_min(a, b, "minItems", "MIN_ITEMS_INCREASED", path);
        self.bound_max(a, b, "maxItems", "MAX_ITEMS_DECREASED", path);
        if b.get("uniqueItems") == Some(&Value::Bool(true))
            && a.get("uniqueItems") != Some(&Value::Bool(true))
        {
            self.no("UNIQUE_ITEMS_ADDED", path, "items must now be unique");
        }
        for key in ["contains", "minContains", "maxContains"] {
            if b.contains_key(key) && a.get(key) != b.get(key) {
                self.undecided(
                    "UNDECIDED_KEYWORD",
                    &format!("{path}/{key}"),
                    format!("`{key}` changed or added"),
                );
            }
        }
        let (tuple_a, rest_a) = items(a);
        let (tuple_b, rest_b) = items(b);
        let n = tuple_a.len().max(tuple_b.len());
        for i in 0..n {
            let sa = tuple_a.get(i).copied().unwrap_or(rest_a);
            let sb = tuple_b.get(i).copied().unwrap_or(rest_b);
            self.sub(sa, sb, &format!("{path}/items/{i}"));
        }
        self.sub(rest_a, rest_b, &format!("{path}/items"));
    }
}
