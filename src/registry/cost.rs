//! How much work validating one event against a schema can take, bounded before the schema is
//! accepted.
//!
//! A validator applies subschemas to each place of an event: the schema itself, what its
//! combinators and `$ref`s bring in at the same place, and what `properties`, `items` and the
//! like bring to the values below. Some schemas apply a subschema to one place many times over:
//! an `allOf` naming one `$ref` twice, level after level, applies the innermost 2^levels times
//! to the same value; a recursive `$ref` reached through two branches of a `oneOf` doubles at
//! every level of nesting of the event. jsonschema evaluates each application (its cache only
//! covers recursive references on the `is_valid` path), so a 2 KB schema and a 100-byte event
//! could take minutes. [`fanout`] finds the most applications any one place of an event can
//! get, up to the event nesting limit, and refuses the schema when that passes the limit: then
//! validating an event costs at most that limit times the event's size.
//!
//! The count is an upper bound: every branch is assumed taken, every `patternProperties`
//! pattern assumed to match. It follows `$ref`s the way jsonschema does (JSON pointers, anchors,
//! `$id`s of resources inside the schema) and refuses references it cannot follow.

use std::collections::HashMap;

use serde_json::Value;

/// A schema node with the resource (`$id` scope) it sits in, for resolving its `$ref`s.
type Node<'a> = (&'a Value, &'a Value);
type Key = (*const Value, *const Value);

/// Work the analysis itself may do (subschema visits) before it gives up on a schema.
const STEPS: u64 = 5_000_000;

/// The most subschema applications one place of an event can get (up to `max_depth` levels of
/// nesting), or why the schema is refused: over `limit`, or a `$ref` that cannot be followed.
pub fn fanout(schema: &Value, max_depth: usize, limit: u64) -> Result<u64, String> {
    let mut cx = Cx {
        index: Index::of(schema),
        limit,
        max_depth,
        steps: STEPS,
        worst: 0,
        seen: HashMap::new(),
    };
    cx.explore(vec![((schema, schema), 1)], 1)?;
    Ok(cx.worst)
}

/// Anchors and embedded resources, found once.
struct Index<'a> {
    root: &'a Value,
    anchors: HashMap<&'a str, Vec<Node<'a>>>,
    dynamic: HashMap<&'a str, Vec<Node<'a>>>,
    resources: Vec<(&'a str, &'a Value)>,
}

impl<'a> Index<'a> {
    fn of(root: &'a Value) -> Index<'a> {
        let mut index = Index {
            root,
            anchors: HashMap::new(),
            dynamic: HashMap::new(),
            resources: Vec::new(),
        };
        index.walk(root, root);
        index
    }

    fn walk(&mut self, v: &'a Value, mut base: &'a Value) {
        match v {
            Value::Object(o) => {
                match o.get("$id").and_then(Value::as_str) {
                    // Drafts before 2019-09 spell anchors as `$id: "#name"`.
                    Some(id) if id.starts_with('#') => {
                        self.anchors.entry(&id[1..]).or_default().push((v, base));
                    }
                    Some(id) => {
                        base = v;
                        self.resources.push((id.trim_end_matches('#'), v));
                    }
                    None => {}
                }
                if let Some(a) = o.get("$anchor").and_then(Value::as_str) {
                    self.anchors.entry(a).or_default().push((v, base));
                }
                for key in ["$dynamicAnchor", "$recursiveAnchor"] {
                    if let Some(a) = o.get(key).and_then(Value::as_str) {
                        self.dynamic.entry(a).or_default().push((v, base));
                        self.anchors.entry(a).or_default().push((v, base));
                    }
                }
                // Data (`enum`, `const`) is walked too: an anchor found there is never named.
                for child in o.values() {
                    self.walk(child, base);
                }
            }
            Value::Array(a) => {
                for child in a {
                    self.walk(child, base);
                }
            }
            _ => {}
        }
    }

    /// The nodes a reference from inside `base` names.
    fn resolve(&self, r: &str, base: &'a Value, dynamic: bool) -> Result<Vec<Node<'a>>, String> {
        let (uri, fragment) = r.split_once('#').unwrap_or((r, ""));
        let doc = if uri.is_empty() {
            base
        } else {
            self.resources
                .iter()
                .find(|(id, _)| {
                    *id == uri
                        || id.ends_with(&format!("/{uri}"))
                        || uri.ends_with(&format!("/{id}"))
                })
                .map(|(_, v)| *v)
                .ok_or_else(|| {
                    format!(
                        "$ref {r} names no resource of this schema (by $id) that Sluice can follow"
                    )
                })?
        };
        if fragment.is_empty() {
            if dynamic && uri.is_empty() {
                // `$recursiveRef: "#"`: the root, or any recursive anchor.
                let mut all = vec![(doc, doc), (self.root, self.root)];
                all.extend(self.dynamic.values().flatten().copied());
                return Ok(all);
            }
            return Ok(vec![(doc, doc)]);
        }
        if fragment.starts_with('/') {
            let pointer = percent_decode(fragment);
            return match doc.pointer(&pointer) {
                Some(t) => Ok(vec![(t, doc)]),
                None => Err(format!("$ref {r} points at nothing in the schema")),
            };
        }
        let named = if dynamic {
            self.dynamic
                .get(fragment)
                .or_else(|| self.anchors.get(fragment))
        } else {
            self.anchors.get(fragment)
        };
        match named {
            Some(nodes) => Ok(nodes.clone()),
            None => Err(format!(
                "$ref {r} names an anchor the schema does not define"
            )),
        }
    }
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

struct Cx<'a> {
    index: Index<'a>,
    limit: u64,
    max_depth: usize,
    steps: u64,
    worst: u64,
    /// States already explored, with the shallowest depth they were met at: met again no
    /// shallower, they have nothing new below them.
    seen: HashMap<Vec<(Key, u64)>, usize>,
}

/// What a place of the event gets applied: nodes with how many times each.
type State<'a> = Vec<(Node<'a>, u64)>;

/// Which value below a place: a property by name or index, or any other one.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Child<'a> {
    Name(&'a str),
    Index(usize),
    OtherName,
    OtherIndex,
}

impl<'a> Cx<'a> {
    fn explore(&mut self, state: State<'a>, depth: usize) -> Result<(), String> {
        let closure = self.closure(&state)?;
        if depth >= self.max_depth {
            return Ok(());
        }
        let mut key: Vec<(Key, u64)> = state
            .iter()
            .map(|((n, b), c)| ((*n as *const Value, *b as *const Value), *c))
            .collect();
        key.sort_unstable();
        match self.seen.get(&key) {
            Some(&d) if d <= depth => return Ok(()),
            _ => {
                self.seen.insert(key, depth);
            }
        }
        // The values below: every property and index some applied schema names, and the rest.
        let mut children = vec![Child::OtherName, Child::OtherIndex];
        for ((node, _), _) in &closure {
            if let Some(props) = node.get("properties").and_then(Value::as_object) {
                children.extend(props.keys().map(|k| Child::Name(k.as_str())));
            }
            for key in ["prefixItems", "items"] {
                if let Some(tuple) = node.get(key).and_then(Value::as_array) {
                    children.extend((0..tuple.len()).map(Child::Index));
                }
            }
        }
        children.sort_unstable_by_key(child_order);
        children.dedup();
        for child in children {
            let below = merge(
                closure
                    .iter()
                    .flat_map(|(n, c)| targets(*n, &child).into_iter().map(move |t| (t, *c)))
                    .collect(),
            );
            if !below.is_empty() {
                self.explore(below, depth + 1)?;
            }
        }
        // Property names are strings: applied, with nothing below them.
        let names = merge(
            closure
                .iter()
                .filter_map(|((node, base), c)| node.get("propertyNames").map(|s| ((s, *base), *c)))
                .collect(),
        );
        if !names.is_empty() {
            self.closure(&names)?;
        }
        Ok(())
    }

    /// Everything applied in place of `state`, with multiplicities (the number of routes to
    /// each node); refused past the limit. Routes are counted over the graph of in-place
    /// references once, not walked one by one; an edge back to a node on the current route
    /// is a cycle, which the validator cuts, and is left out.
    fn closure(&mut self, state: &State<'a>) -> Result<State<'a>, String> {
        let mut nodes: HashMap<Key, Node<'a>> = HashMap::new();
        let mut edges: HashMap<Key, Vec<Key>> = HashMap::new();
        let mut done: HashMap<Key, bool> = HashMap::new(); // false: on the route
        let mut postorder: Vec<Key> = Vec::new();
        for (start, _) in state {
            let k = key(*start);
            if done.contains_key(&k) {
                continue;
            }
            nodes.insert(k, *start);
            done.insert(k, false);
            let mut stack = vec![(k, self.in_place(*start)?, 0usize)];
            while let Some((at, children, next)) = stack.last_mut() {
                let at = *at;
                let Some(&child) = children.get(*next) else {
                    done.insert(at, true);
                    postorder.push(at);
                    stack.pop();
                    continue;
                };
                *next += 1;
                self.spend()?;
                let c = key(child);
                match done.get(&c) {
                    Some(false) => {} // a cycle
                    Some(true) => edges.entry(at).or_default().push(c),
                    None => {
                        edges.entry(at).or_default().push(c);
                        nodes.insert(c, child);
                        done.insert(c, false);
                        let grandchildren = self.in_place(child)?;
                        stack.push((c, grandchildren, 0));
                    }
                }
            }
        }
        let mut counts: HashMap<Key, u64> = HashMap::new();
        for (n, c) in state {
            let e = counts.entry(key(*n)).or_default();
            *e = e.saturating_add(*c);
        }
        for at in postorder.iter().rev() {
            let here = counts.get(at).copied().unwrap_or(0);
            for c in edges.get(at).into_iter().flatten() {
                self.spend()?;
                let e = counts.entry(*c).or_default();
                *e = e.saturating_add(here);
            }
        }
        let total = counts.values().fold(0u64, |t, c| t.saturating_add(*c));
        self.worst = self.worst.max(total);
        if total > self.limit {
            return Err(format!(
                "validating one value of an event could apply more than {} subschemas to it \
                 (registry.max_schema_fanout): a $ref or combinator that names the same schema \
                 more than once, level after level, multiplies the work",
                self.limit
            ));
        }
        Ok(counts.into_iter().map(|(k, c)| (nodes[&k], c)).collect())
    }

    fn spend(&mut self) -> Result<(), String> {
        self.steps = self.steps.checked_sub(1).ok_or_else(|| {
            "the schema is too intricate for Sluice to bound the cost of validating an event"
                .to_string()
        })?;
        Ok(())
    }

    /// The subschemas applied at the same place as `node`.
    fn in_place(&self, (node, base): Node<'a>) -> Result<Vec<Node<'a>>, String> {
        let Some(o) = node.as_object() else {
            return Ok(Vec::new());
        };
        let base = match o.get("$id").and_then(Value::as_str) {
            Some(id) if !id.starts_with('#') => node,
            _ => base,
        };
        let mut out = Vec::new();
        for (key, dynamic) in [
            ("$ref", false),
            ("$dynamicRef", true),
            ("$recursiveRef", true),
        ] {
            if let Some(r) = o.get(key).and_then(Value::as_str) {
                out.extend(self.index.resolve(r, base, dynamic)?);
            }
        }
        for key in ["allOf", "anyOf", "oneOf"] {
            if let Some(branches) = o.get(key).and_then(Value::as_array) {
                out.extend(branches.iter().map(|b| (b, base)));
            }
        }
        for key in ["not", "if", "then", "else"] {
            if let Some(s) = o.get(key) {
                out.push((s, base));
            }
        }
        for key in ["dependentSchemas", "dependencies"] {
            if let Some(m) = o.get(key).and_then(Value::as_object) {
                out.extend(m.values().filter(|s| !s.is_array()).map(|s| (s, base)));
            }
        }
        Ok(out)
    }
}

fn child_order<'c>(c: &Child<'c>) -> (u8, &'c str, usize) {
    match c {
        Child::Name(n) => (0, n, 0),
        Child::Index(i) => (1, "", *i),
        Child::OtherName => (2, "", 0),
        Child::OtherIndex => (3, "", 0),
    }
}

/// The subschemas `node` applies to the value `child` below its place (every pattern assumed
/// to match, `contains` and `unevaluated*` assumed to apply).
fn targets<'a>((node, base): Node<'a>, child: &Child<'_>) -> Vec<Node<'a>> {
    let Some(o) = node.as_object() else {
        return Vec::new();
    };
    let base = match o.get("$id").and_then(Value::as_str) {
        Some(id) if !id.starts_with('#') => node,
        _ => base,
    };
    let mut out = Vec::new();
    match child {
        Child::Name(_) | Child::OtherName => {
            let props = o.get("properties").and_then(Value::as_object);
            let named = match child {
                Child::Name(n) => props.and_then(|p| p.get(*n)),
                _ => None,
            };
            out.extend(named);
            if named.is_none() {
                out.extend(o.get("additionalProperties"));
            }
            if let Some(p) = o.get("patternProperties").and_then(Value::as_object) {
                out.extend(p.values());
            }
            out.extend(o.get("unevaluatedProperties"));
        }
        Child::Index(_) | Child::OtherIndex => {
            let i = match child {
                Child::Index(i) => Some(*i),
                _ => None,
            };
            let in_tuple = |key: &str| -> Option<Option<&'a Value>> {
                let tuple = o.get(key)?.as_array()?;
                Some(i.and_then(|i| tuple.get(i)))
            };
            match (in_tuple("prefixItems"), in_tuple("items")) {
                // 2020-12: prefixItems, then items for the rest.
                (Some(hit), _) => match hit {
                    Some(s) => out.push(s),
                    None => out.extend(o.get("items")),
                },
                // Draft 7 and earlier: items as a tuple, then additionalItems.
                (None, Some(hit)) => match hit {
                    Some(s) => out.push(s),
                    None => out.extend(o.get("additionalItems")),
                },
                (None, None) => out.extend(o.get("items")),
            }
            out.extend(o.get("contains"));
            out.extend(o.get("unevaluatedItems"));
        }
    }
    out.into_iter().map(|s| (s, base)).collect()
}

fn key((n, b): Node<'_>) -> Key {
    (n as *const Value, b as *const Value)
}

/// One entry per node, multiplicities added.
fn merge(items: State<'_>) -> State<'_> {
    let mut by: HashMap<Key, (Node<'_>, u64)> = HashMap::new();
    for (n, c) in items {
        let e = by
            .entry((n.0 as *const Value, n.1 as *const Value))
            .or_insert((n, 0));
        e.1 = e.1.saturating_add(c);
    }
    by.into_values().collect()
}

#[cfg(test)]
mod tests {

    #[test]
    fn pointers_are_percent_decoded_to_their_end() {
        assert_eq!(super::percent_decode("#/$defs/a%20b%41"), "#/$defs/a bA");
        assert_eq!(super::percent_decode("#/%zz/%4"), "#/%zz/%4");
    }

    use super::*;
    use serde_json::json;

    const LIMIT: u64 = 1000;

    fn doubling(depth: usize) -> Value {
        let mut defs = serde_json::Map::new();
        defs.insert("l0".into(), json!({"type": "object"}));
        for i in 1..=depth {
            let below = json!({"$ref": format!("#/$defs/l{}", i - 1)});
            defs.insert(format!("l{i}"), json!({"allOf": [below.clone(), below]}));
        }
        json!({"$defs": defs, "$ref": format!("#/$defs/l{depth}")})
    }

    #[test]
    fn ordinary_schemas_apply_a_handful_of_subschemas_per_value() {
        let event = json!({
            "type": "object",
            "properties": {
                "user": {"$ref": "#/$defs/user"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "plan": {"enum": ["free", "team"]}
            },
            "required": ["user"],
            "$defs": {"user": {"type": "object", "properties": {"id": {"type": "string"}}}}
        });
        let n = fanout(&event, 64, LIMIT).unwrap();
        assert!(n <= 3, "{n}");
        // Recursive, JSON-like values: constant per level, however deep the event.
        let tree = json!({"anyOf": [
            {"type": "string"},
            {"type": "array", "items": {"$ref": "#"}},
            {"type": "object", "additionalProperties": {"$ref": "#"}}
        ]});
        let n = fanout(&tree, 64, LIMIT).unwrap();
        assert!(n <= 6, "{n}");
        // Self-reference in place is a cycle the validator cuts.
        assert!(fanout(&json!({"allOf": [{"$ref": "#"}]}), 64, LIMIT).is_ok());
        // Anchors, $id resources and percent-encoded pointers are followed.
        let named = json!({
            "$id": "https://example.com/root.json",
            "properties": {
                "a": {"$ref": "#thing"},
                "b": {"$ref": "https://example.com/root.json#/$defs/a%20b"},
                "c": {"$ref": "item.json"}
            },
            "$defs": {
                "a b": {"$anchor": "thing", "type": "string"},
                "item": {"$id": "https://example.com/item.json", "$ref": "#/$defs/x", "$defs": {"x": {}}}
            }
        });
        assert!(
            fanout(&named, 64, LIMIT).is_ok(),
            "{:?}",
            fanout(&named, 64, LIMIT)
        );
    }

    #[test]
    fn schemas_that_multiply_the_work_are_refused() {
        // In place: 2^32 applications of the innermost schema to one value.
        let e = fanout(&doubling(32), 64, LIMIT).unwrap_err();
        assert!(e.contains("registry.max_schema_fanout"), "{e}");
        assert!(fanout(&doubling(5), 64, LIMIT).is_ok());
        // Counted over the graph, not route by route: the count itself is cheap.
        assert!(fanout(&doubling(32), 64, u64::MAX).unwrap() >= 1 << 32);
        // Through nesting: a recursive reference reached by two branches doubles per level.
        let twins = |me: &str| json!({"type": "array", "items": {"oneOf": [{"$ref": "#/$defs/n"}, {"$ref": "#/$defs/m"}]}, "title": me});
        let s = json!({"$defs": {"n": twins("n"), "m": twins("m")}, "$ref": "#/$defs/n"});
        assert!(fanout(&s, 64, LIMIT).is_err());
        // ...which only matters as deep as events may nest.
        assert!(fanout(&s, 6, LIMIT).is_ok());
        let same = json!({"$defs": {"n": {"type": "array", "items": {"allOf": [{"$ref": "#/$defs/n"}, {"$ref": "#/$defs/n"}]}}}, "$ref": "#/$defs/n"});
        assert!(fanout(&same, 64, LIMIT).is_err());
        // Property names are values too.
        let names = json!({"propertyNames": doubling(20)});
        assert!(fanout(&names, 64, LIMIT).is_err());
    }

    #[test]
    fn references_it_cannot_follow_are_refused_with_the_reason() {
        let e = fanout(&json!({"$ref": "#/$defs/missing"}), 64, LIMIT).unwrap_err();
        assert!(e.contains("#/$defs/missing"), "{e}");
        let e = fanout(&json!({"$ref": "other.json"}), 64, LIMIT).unwrap_err();
        assert!(e.contains("other.json"), "{e}");
        let e = fanout(&json!({"$ref": "#nowhere"}), 64, LIMIT).unwrap_err();
        assert!(e.contains("anchor"), "{e}");
    }
}
