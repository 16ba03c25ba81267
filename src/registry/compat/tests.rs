use super::context::MAX_FINDINGS;
use super::*;
use serde_json::json;

/// C compatible, I incompatible, U undecided.
fn verdict(v: &Verdict) -> char {
    match v {
        Verdict::Compatible => 'C',
        Verdict::Incompatible(_) => 'I',
        Verdict::Undecided(_) => 'U',
    }
}

/// (name, old, new, BACKWARD, FORWARD, FULL) from `rules.json`: each row is one rule of
/// docs/registry.md, with the verdict expected at each level (C, I or U).
fn table() -> Vec<(String, Value, Value, char, char, char)> {
    let rows: Vec<Value> =
        serde_json::from_str(include_str!("rules.json")).expect("rules.json is a JSON array");
    let level = |row: &Value, key: &str| -> char {
        match row[key].as_str() {
            Some("C") => 'C',
            Some("I") => 'I',
            Some("U") => 'U',
            other => panic!("{}: {key} is {other:?}, not C, I or U", row["rule"]),
        }
    };
    rows.iter()
        .map(|row| {
            (
                row["rule"].as_str().expect("rule names a row").to_string(),
                row["old"].clone(),
                row["new"].clone(),
                level(row, "BACKWARD"),
                level(row, "FORWARD"),
                level(row, "FULL"),
            )
        })
        .collect()
}

#[test]
fn the_rule_table_holds_at_each_level() {
    let rows = table();
    assert!(rows.len() >= 40, "at least 40 pairs");
    let mut failures = Vec::new();
    for (name, old, new, back, fwd, full) in &rows {
        for (level, want) in [
            (Level::Backward, back),
            (Level::Forward, fwd),
            (Level::Full, full),
        ] {
            let v = check(level, new, &[old]);
            if verdict(&v) != *want {
                failures.push(format!(
                    "{name} {}: want {want}, got {:?}",
                    level.as_str(),
                    v
                ));
            }
        }
        assert!(
            check(Level::None, new, &[old]).is_compatible(),
            "{name}: NONE"
        );
    }
    assert!(
        failures.is_empty(),
        "{} rows disagree:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn transitive_levels_check_every_earlier_version() {
    // v1 requires a; v2 drops the requirement; v3 forbids a (closed, not listed).
    let v1 = json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}}, "required": ["a"]});
    let v2 =
        json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}}});
    let v3 = json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}}, "required": ["b"]});
    // v3 reads v2's data? No: b is now required. Against v1 also no.
    assert_eq!(verdict(&check(Level::Backward, &v3, &[&v1, &v2])), 'I');
    // Forward: v2 reads v3 data (b required there): yes. v1 reads v3 data: a not required in v3 -> no.
    assert_eq!(verdict(&check(Level::Forward, &v3, &[&v1, &v2])), 'C');
    assert_eq!(
        verdict(&check(Level::ForwardTransitive, &v3, &[&v1, &v2])),
        'I'
    );
    let v4 =
        json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}}});
    assert_eq!(verdict(&check(Level::Backward, &v4, &[&v1, &v3])), 'C');
    assert_eq!(
        verdict(&check(Level::BackwardTransitive, &v4, &[&v1, &v3])),
        'C'
    );
    assert_eq!(
        verdict(&check(Level::FullTransitive, &v4, &[&v1, &v3])),
        'I'
    );
}

#[test]
fn messages_name_the_rule_and_the_place() {
    let old = json!({"type": "object", "properties": {"plan": {"enum": ["free", "team"]}}});
    let new =
        json!({"type": "object", "properties": {"plan": {"enum": ["free"]}}, "required": ["plan"]});
    let m = check(Level::Backward, &new, &[&old]).messages();
    assert!(
        m.iter()
            .any(|m| m.starts_with("ENUM_VALUE_REFUSED at #/properties/plan")),
        "{m:?}"
    );
    assert!(
        m.iter()
            .any(|m| m.starts_with("REQUIRED_PROPERTY_ADDED at #/required")),
        "{m:?}"
    );
    let m = check(
        Level::Backward,
        &json!({"type": "string", "pattern": "^b"}),
        &[&json!({"type": "string", "pattern": "^a"})],
    )
    .messages();
    assert!(
        m[0].starts_with("cannot decide (UNDECIDED_PATTERN)"),
        "{m:?}"
    );
}

#[test]
fn levels_round_trip_their_names() {
    for l in Level::ALL {
        assert_eq!(Level::parse(l.as_str()), Some(l));
    }
    assert_eq!(Level::parse("backward"), None);
}

/// `depth` levels, each an `allOf` naming the level below twice: explored pair by pair
/// without memory, it costs 2^depth comparisons.
fn doubling(depth: usize, leaf: Value) -> Value {
    let mut defs = serde_json::Map::new();
    defs.insert("l0".into(), leaf);
    for i in 1..=depth {
        let below = json!({"$ref": format!("#/$defs/l{}", i - 1)});
        defs.insert(format!("l{i}"), json!({"allOf": [below.clone(), below]}));
    }
    json!({"$defs": defs, "$ref": format!("#/$defs/l{depth}")})
}

#[test]
fn repeated_references_cost_each_pair_once() {
    let old = doubling(
        32,
        json!({"type": "object", "properties": {"x": {"type": "string"}}}),
    );
    let wider = doubling(
        32,
        json!({"type": ["object", "null"], "properties": {"x": {"type": "string"}}}),
    );
    let narrower = doubling(
        32,
        json!({"type": "object", "properties": {"x": {"type": "string", "maxLength": 3}}}),
    );
    // Decided well inside a budget that 2^32 comparisons would exceed by far.
    let budget = 200_000;
    assert_eq!(
        check_within(Level::Backward, &wider, &[&old], budget),
        Verdict::Compatible
    );
    // A writer `allOf` whose parts all fail is "cannot decide", reached without the
    // budget running out.
    for (level, new) in [(Level::Full, &wider), (Level::Backward, &narrower)] {
        match check_within(level, new, &[&old], budget) {
            Verdict::Undecided(f) => {
                assert!(f.iter().all(|f| f.kind == "UNDECIDED_COMBINATOR"), "{f:?}")
            }
            v => panic!("{v:?}"),
        }
    }
    // One break reached by 2^32 routes through the reader: decided, listed a bounded
    // number of times.
    let plain = json!({"type": "object", "properties": {"x": {"type": "string"}}});
    match check_within(Level::Backward, &narrower, &[&plain], budget) {
        Verdict::Incompatible(f) => {
            assert!(f.iter().all(|f| f.kind == "MAX_LENGTH_DECREASED"), "{f:?}");
            assert!(f.len() <= MAX_FINDINGS, "{}", f.len());
        }
        v => panic!("{v:?}"),
    }
}

#[test]
fn a_spent_budget_answers_cannot_decide() {
    let old = doubling(8, json!({"type": "object"}));
    let new = doubling(8, json!({"type": ["object", "null"]}));
    assert_eq!(check(Level::Backward, &new, &[&old]), Verdict::Compatible);
    match check_within(Level::Backward, &new, &[&old], 10) {
        Verdict::Undecided(f) => {
            assert!(f.iter().any(|f| f.kind == "UNDECIDED_BUDGET"), "{f:?}");
            assert!(f[0].to_string().contains("registry.compat_budget"), "{f:?}");
        }
        v => panic!("{v:?}"),
    }
}
