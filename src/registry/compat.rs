//! JSON Schema compatibility, decided by rules over the schema structure.
//!
//! Everything reduces to one question, "is every instance valid under `a` also valid under
//! `b`?" ([`includes`]). BACKWARD asks it of (old, new): the new schema reads all old data.
//! FORWARD asks it of (new, old). FULL asks both. The answer has three values: yes, no (with
//! what breaks, and where), or undecided (with the rule that could not decide). Undecided
//! is never rounded to yes; registration treats it as incompatible and says why.
//!
//! Rules are sound in the direction that matters: "yes" is only answered when it holds for
//! every instance. Combinators (`anyOf`, `oneOf`, `allOf`, `not`, `if`) are decided where a
//! sufficient condition applies, and reported as undecided otherwise. Every rule is listed,
//! with an example, in docs/registry.md.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use serde_json::{Map, Value};

/// Compatibility levels, as Confluent Schema Registry names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Level {
    None,
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
}

impl Level {
    pub const ALL: [Level; 7] = [
        Level::None,
        Level::Backward,
        Level::BackwardTransitive,
        Level::Forward,
        Level::ForwardTransitive,
        Level::Full,
        Level::FullTransitive,
    ];

    pub fn parse(s: &str) -> Option<Level> {
        Level::ALL.into_iter().find(|l| l.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::None => "NONE",
            Level::Backward => "BACKWARD",
            Level::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Level::Forward => "FORWARD",
            Level::ForwardTransitive => "FORWARD_TRANSITIVE",
            Level::Full => "FULL",
            Level::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    fn transitive(self) -> bool {
        matches!(
            self,
            Level::BackwardTransitive | Level::ForwardTransitive | Level::FullTransitive
        )
    }

    fn backward(self) -> bool {
        matches!(
            self,
            Level::Backward | Level::BackwardTransitive | Level::Full | Level::FullTransitive
        )
    }

    fn forward(self) -> bool {
        matches!(
            self,
            Level::Forward | Level::ForwardTransitive | Level::Full | Level::FullTransitive
        )
    }
}

/// One reason a pair is not (provably) compatible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// `TYPE_NARROWED`, `REQUIRED_PROPERTY_ADDED`, ... or `UNDECIDED_<what>`.
    pub kind: &'static str,
    /// JSON pointer into the schema (`#/properties/plan`).
    pub path: String,
    pub detail: String,
    /// False when the rule could not decide.
    pub decided: bool,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "#"
        } else {
            &self.path
        };
        if self.decided {
            write!(f, "{} at {path}: {}", self.kind, self.detail)
        } else {
            write!(
                f,
                "cannot decide ({}) at {path}: {}",
                self.kind, self.detail
            )
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Compatible,
    /// At least one rule found data that one side accepts and the other refuses.
    Incompatible(Vec<Finding>),
    /// No rule found a break, but some could not decide.
    Undecided(Vec<Finding>),
}

impl Verdict {
    pub fn is_compatible(&self) -> bool {
        matches!(self, Verdict::Compatible)
    }

    /// Messages for `?verbose=true` and 409 answers.
    pub fn messages(&self) -> Vec<String> {
        match self {
            Verdict::Compatible => Vec::new(),
            Verdict::Incompatible(f) | Verdict::Undecided(f) => {
                f.iter().map(ToString::to_string).collect()
            }
        }
    }

    fn from_findings(findings: Vec<Finding>) -> Verdict {
        if findings.is_empty() {
            Verdict::Compatible
        } else if findings.iter().any(|f| f.decided) {
            Verdict::Incompatible(findings)
        } else {
            Verdict::Undecided(findings)
        }
    }
}

/// The work [`check`] may do by default, in steps (one step: one pair of subschemas compared,
/// or one schema node walked). A 64-level schema of two-way combinators, the worst shape the
/// tests know, needs a few thousand once pairs are memoised; a million take well under a
/// second on one core.
pub const DEFAULT_BUDGET: u64 = 1_000_000;

/// Checks `new` against the subject's earlier schemas (oldest first) at `level`. Non-transitive
/// levels compare with the latest only.
pub fn check(level: Level, new: &Value, previous: &[&Value]) -> Verdict {
    check_within(level, new, previous, DEFAULT_BUDGET)
}

/// [`check`] with a work budget shared by every comparison it makes: when it runs out, the
/// answer is "cannot decide" (`UNDECIDED_BUDGET`), never a guess.
pub fn check_within(level: Level, new: &Value, previous: &[&Value], budget: u64) -> Verdict {
    let mut steps = budget;
    if level == Level::None || previous.is_empty() {
        return Verdict::Compatible;
    }
    let against: &[&Value] = if level.transitive() {
        previous
    } else {
        &previous[previous.len() - 1..]
    };
    let mut findings = Vec::new();
    for old in against {
        if level.backward() {
            let v = includes_within(old, new, &mut steps);
            findings.extend(tag(v, "new schema cannot read old data: "));
        }
        if level.forward() {
            let v = includes_within(new, old, &mut steps);
            findings.extend(tag(v, "old schema cannot read new data: "));
        }
        if steps == 0 {
            break;
        }
    }
    Verdict::from_findings(findings)
}

fn tag(v: Verdict, prefix: &str) -> Vec<Finding> {
    match v {
        Verdict::Compatible => Vec::new(),
        Verdict::Incompatible(f) | Verdict::Undecided(f) => f
            .into_iter()
            .map(|mut f| {
                f.detail = format!("{prefix}{}", f.detail);
                f
            })
            .collect(),
    }
}

/// Whether every instance valid under `a` (the writer schema) is valid under `b` (the reader).
pub fn includes(a: &Value, b: &Value) -> Verdict {
    let mut steps = DEFAULT_BUDGET;
    includes_within(a, b, &mut steps)
}

/// [`includes`], spending at most `steps` (what is left is written back).
fn includes_within(a: &Value, b: &Value, steps: &mut u64) -> Verdict {
    fn defs(v: &Value) -> (Option<&Value>, Option<&Value>) {
        (v.get("$defs"), v.get("definitions"))
    }
    let mut cx = Cx {
        roots: (a, b),
        same_defs: defs(a) == defs(b),
        findings: Vec::new(),
        seen: HashMap::new(),
        memo: HashMap::new(),
        low: usize::MAX,
        depth: 0,
        depth_cuts: 0,
        steps: *steps,
    };
    if cx.spend(2) {
        cx.sub(a, b, "");
    }
    if cx.steps == 0 {
        cx.undecided(
            "UNDECIDED_BUDGET",
            "",
            "the schemas need more work to compare than the registry allows (registry.compat_budget)",
        );
    }
    *steps = cx.steps;
    Verdict::from_findings(cx.findings)
}

/// Keywords that do not change which instances are valid.
const ANNOTATIONS: &[&str] = &[
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
const KNOWN: &[&str] = &[
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

const TYPES: [&str; 7] = [
    "null", "boolean", "object", "array", "number", "integer", "string",
];

struct Cx<'a> {
    roots: (&'a Value, &'a Value),
    /// Equal-looking subschemas are only equal when their `$ref`s point at equal definitions.
    same_defs: bool,
    findings: Vec<Finding>,
    /// Pairs under comparison, with the depth each was entered at: a pair met again is a
    /// cycle through `$ref`, assumed to hold (the greatest fixed point, as for recursive types).
    seen: HashMap<Pair, usize>,
    /// Results of pairs already compared, findings relative to the pair's own path: a pair
    /// reached again by another route (`allOf` listing one `$ref` twice, level after level)
    /// costs one lookup, not the whole comparison again.
    memo: HashMap<Pair, Vec<Finding>>,
    /// The shallowest depth of a pair assumed by a cycle since the current pair was entered:
    /// a result that leaned on an assumption about an enclosing pair is not memoised, since
    /// that assumption may yet fail.
    low: usize,
    depth: usize,
    /// How many times nesting was cut short at [`MAX_DEPTH`].
    depth_cuts: u64,
    /// Work left; at zero every comparison stops and the verdict is undecided.
    steps: u64,
}

/// (writer subschema, keywords of it left out, reader subschema). Every pointer is into the
/// two root documents (or a static), which outlive the comparison, so addresses identify.
type Pair = (*const Value, u8, *const Value);

/// Writer keywords a comparison may leave out ([`Cx::fits_without`]), as bits.
const SKIP_ALL_OF: u8 = 1;
const SKIP_ANY_OF: u8 = 2;
const SKIP_ONE_OF: u8 = 4;
const SKIP_NOT: u8 = 8;
/// `if` with its `then` and `else`.
const SKIP_IF: u8 = 16;

fn skip_bit(key: &str) -> u8 {
    match key {
        "allOf" => SKIP_ALL_OF,
        "anyOf" => SKIP_ANY_OF,
        "oneOf" => SKIP_ONE_OF,
        "not" => SKIP_NOT,
        "if" | "then" | "else" => SKIP_IF,
        _ => 0,
    }
}

/// A writer schema object with some combinator keywords left out (a superset of it), read
/// in place rather than copied.
#[derive(Clone, Copy)]
struct View<'x> {
    map: &'x Map<String, Value>,
    skip: u8,
}

impl<'x> View<'x> {
    fn get(&self, key: &str) -> Option<&'x Value> {
        if self.skip & skip_bit(key) != 0 {
            return None;
        }
        self.map.get(key)
    }

    fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    fn keys(&self) -> impl Iterator<Item = &'x String> + '_ {
        self.map.keys().filter(|k| self.skip & skip_bit(k) == 0)
    }
}

/// Nesting followed (writer and reader descents add up), well inside a 2 MiB stack.
const MAX_DEPTH: usize = 128;
/// Findings kept per comparison.
const MAX_FINDINGS: usize = 32;

impl<'a> Cx<'a> {
    fn no(&mut self, kind: &'static str, path: &str, detail: impl Into<String>) {
        self.push(Finding {
            kind,
            path: format!("#{path}"),
            detail: detail.into(),
            decided: true,
        });
    }

    fn undecided(&mut self, kind: &'static str, path: &str, detail: impl Into<String>) {
        self.push(Finding {
            kind,
            path: format!("#{path}"),
            detail: detail.into(),
            decided: false,
        });
    }

    /// Keeps at most [`MAX_FINDINGS`]: one break reached by many routes would otherwise be
    /// listed once per route, and routes can be exponentially many.
    fn push(&mut self, f: Finding) {
        if self.findings.len() < MAX_FINDINGS {
            self.findings.push(f);
        }
    }

    /// Takes `n` steps from the budget; false (and nothing left) when it does not hold them.
    fn spend(&mut self, n: u64) -> bool {
        match self.steps.checked_sub(n) {
            Some(left) => {
                self.steps = left;
                true
            }
            None => {
                self.steps = 0;
                false
            }
        }
    }

    /// Runs `f` on a scratch list of findings and returns them, leaving ours untouched.
    fn trial(&mut self, f: impl FnOnce(&mut Self)) -> Vec<Finding> {
        let saved = std::mem::take(&mut self.findings);
        f(self);
        std::mem::replace(&mut self.findings, saved)
    }

    /// Whether two subschemas are equal once annotations are ignored, paying for the walk.
    fn same(&mut self, a: View<'_>, b: &Value) -> bool {
        let mut walked = 0;
        let r = match b.as_object() {
            Some(bo) => same_obj(a, bo, &mut walked),
            None => false,
        };
        self.spend(walked) && r
    }

    fn has_ref(&mut self, a: &Value) -> bool {
        let mut walked = 0;
        let r = has_ref(a, &mut walked);
        self.spend(walked) && r
    }

    fn resolve<'x>(&mut self, root: &'x Value, s: &'x Value, path: &str) -> Option<&'x Value> {
        let mut s = s;
        for _ in 0..16 {
            let Some(r) = s.get("$ref").and_then(Value::as_str) else {
                return Some(s);
            };
            let siblings = s.as_object().is_some_and(|o| {
                o.keys()
                    .any(|k| k != "$ref" && !ANNOTATIONS.contains(&k.as_str()))
            });
            if siblings {
                self.undecided("UNDECIDED_REF", path, "`$ref` next to other constraints");
                return None;
            }
            match r.strip_prefix('#').and_then(|p| root.pointer(p)) {
                Some(target) => s = target,
                None => {
                    self.undecided(
                        "UNDECIDED_REF",
                        path,
                        format!("`$ref` {r} is not a local reference this checker can follow"),
                    );
                    return None;
                }
            }
        }
        self.undecided("UNDECIDED_REF", path, "`$ref` chain too long");
        None
    }

    /// a ⊆ b, findings pushed for every break.
    fn sub<'x>(&mut self, a: &'x Value, b: &'x Value, path: &str)
    where
        'a: 'x,
    {
        self.sub_skipping(a, 0, b, path);
    }

    /// a (without the `skip` keywords) ⊆ b.
    fn sub_skipping<'x>(&mut self, a: &'x Value, skip: u8, b: &'x Value, path: &str)
    where
        'a: 'x,
    {
        // A full list already answers; the budget ends the work.
        if self.findings.len() >= MAX_FINDINGS || !self.spend(1) {
            return;
        }
        let Some(a) = self.resolve(self.roots.0, a, path) else {
            return;
        };
        let Some(b) = self.resolve(self.roots.1, b, path) else {
            return;
        };
        let pair: Pair = (a as *const _, skip, b as *const _);
        if let Some(&depth) = self.seen.get(&pair) {
            self.low = self.low.min(depth);
            return;
        }
        if let Some(found) = self.memo.get(&pair) {
            let room = MAX_FINDINGS.saturating_sub(self.findings.len());
            let found: Vec<Finding> = found
                .iter()
                .take(room)
                .map(|f| Finding {
                    path: format!("#{path}{}", f.path),
                    ..f.clone()
                })
                .collect();
            self.findings.extend(found);
            return;
        }
        if self.depth >= MAX_DEPTH {
            self.depth_cuts += 1;
            self.undecided(
                "UNDECIDED_DEPTH",
                path,
                "schemas nest deeper than the checker follows",
            );
            return;
        }
        let depth = self.depth;
        let cuts = self.depth_cuts;
        let outer_low = std::mem::replace(&mut self.low, usize::MAX);
        let start = self.findings.len();
        self.seen.insert(pair, depth);
        self.depth += 1;
        self.sub_resolved(a, skip, b, path);
        self.depth -= 1;
        self.seen.remove(&pair);
        // Memoised only when complete (no budget run out, no finding left off, no nesting cut
        // short: a pair reached nearer the root may yet be decided) and free of assumptions
        // about enclosing pairs.
        let complete =
            self.steps > 0 && self.findings.len() < MAX_FINDINGS && self.depth_cuts == cuts;
        if complete && self.low >= depth {
            let prefix = format!("#{path}");
            let found = self.findings[start..]
                .iter()
                .map(|f| Finding {
                    path: f.path.strip_prefix(&prefix).unwrap_or("").to_string(),
                    ..f.clone()
                })
                .collect();
            self.memo.insert(pair, found);
            self.low = outer_low;
        } else {
            self.low = outer_low.min(self.low);
        }
    }

    fn sub_resolved<'x>(&mut self, a: &'x Value, skip: u8, b: &'x Value, path: &str)
    where
        'a: 'x,
    {
        if is_false(a) || is_true(b) {
            return;
        }
        if let Some(ao) = as_schema(a) {
            let view = View { map: ao, skip };
            if self.same(view, b) && (self.same_defs || !self.has_ref(a)) {
                return;
            }
        } else if skip == 0 && a == b {
            return;
        }
        if is_false(b) {
            self.no(
                "SCHEMA_NARROWED_TO_NOTHING",
                path,
                "the schema accepts nothing any more",
            );
            return;
        }
        let (Some(ao_map), Some(bo)) = (as_schema(a), as_schema(b)) else {
            self.undecided(
                "UNDECIDED_SCHEMA",
                path,
                "a schema is neither an object nor a boolean",
            );
            return;
        };
        let ao = View { map: ao_map, skip };

        // b's conjunctions: a must fit each part.
        if let Some(parts) = bo.get("allOf").and_then(Value::as_array) {
            for (i, part) in parts.iter().enumerate() {
                self.sub(a, part, &format!("{path}/allOf/{i}"));
            }
        }
        // a's disjunctions: every branch must fit b (sufficient, and exact for anyOf when the
        // branches carry all of a's constraints). First try a without them: a superset of a.
        for comb in ["anyOf", "oneOf"] {
            if let Some(branches) = ao.get(comb).and_then(Value::as_array) {
                if self.fits_without(a, ao, comb, b, path) {
                    return;
                }
                if ao
                    .keys()
                    .all(|k| k == comb || ANNOTATIONS.contains(&k.as_str()))
                {
                    for (i, br) in branches.iter().enumerate() {
                        self.sub(br, b, &format!("{path}/{comb}/{i}"));
                    }
                } else {
                    self.undecided(
                        "UNDECIDED_COMBINATOR",
                        path,
                        format!("`{comb}` next to other keywords in the writer schema"),
                    );
                }
                return;
            }
        }
        // a's conjunctions and conditions only narrow a: try dropping them.
        for key in ["allOf", "not", "if"] {
            if ao.contains_key(key) {
                if self.fits_without(a, ao, key, b, path) {
                    return;
                }
                if key == "allOf" {
                    let parts = ao
                        .get("allOf")
                        .and_then(Value::as_array)
                        .map(Vec::as_slice)
                        .unwrap_or_default();
                    for part in parts {
                        if self.trial(|cx| cx.sub(part, b, path)).is_empty() {
                            return;
                        }
                    }
                }
                self.undecided(
                    "UNDECIDED_COMBINATOR",
                    path,
                    format!("`{key}` in the writer schema"),
                );
                return;
            }
        }
        // b's disjunctions: a must fit one branch (or, branch by branch, some branch).
        for comb in ["anyOf", "oneOf"] {
            if let Some(branches) = bo.get(comb).and_then(Value::as_array) {
                let pairs = (branches.len() as u64).saturating_mul(branches.len() as u64) / 2;
                if !self.spend(pairs) {
                    return;
                }
                if comb == "oneOf" && !pairwise_disjoint(branches) {
                    self.undecided(
                        "UNDECIDED_COMBINATOR",
                        &format!("{path}/oneOf"),
                        "`oneOf` branches that may overlap",
                    );
                    return;
                }
                let fits_one = branches
                    .iter()
                    .any(|br| self.trial(|cx| cx.sub(a, br, path)).is_empty());
                if !fits_one {
                    self.undecided(
                        "UNDECIDED_COMBINATOR",
                        &format!("{path}/{comb}"),
                        format!("the writer schema fits no single `{comb}` branch of the reader"),
                    );
                    return;
                }
            }
        }
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
                return;
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

        // Enumerations: decide value by value.
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

    /// Whether `a` minus `key` (a superset of `a`) already fits `b`.
    fn fits_without<'x>(
        &mut self,
        a: &'x Value,
        ao: View<'x>,
        key: &str,
        b: &'x Value,
        path: &str,
    ) -> bool
    where
        'a: 'x,
    {
        let skip = ao.skip | skip_bit(key);
        self.trial(|cx| cx.sub_skipping(a, skip, b, path))
            .is_empty()
    }

    /// Whether two keyword values differ, paying for the walk.
    fn differ(&mut self, a: Option<&Value>, b: Option<&Value>) -> bool {
        let mut walked = 0;
        let eq = match (a, b) {
            (Some(a), Some(b)) => equal(a, b, &mut walked),
            (None, None) => true,
            _ => false,
        };
        !(self.spend(walked) && eq)
    }

    fn values_fit(&mut self, values: Vec<&Value>, bo: &Map<String, Value>, path: &str) {
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

    fn numbers(&mut self, a: &Map<String, Value>, b: &Map<String, Value>, path: &str) {
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

    fn strings(&mut self, a: &Map<String, Value>, b: &Map<String, Value>, path: &str) {
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

    fn bound_min(
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

    fn bound_max(
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

    fn objects<'x>(&mut self, a: &'x Map<String, Value>, b: &'x Map<String, Value>, path: &str)
    where
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
            let p = format!("{path}/properties/{}", escape(name));
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

    fn arrays<'x>(&mut self, a: &'x Map<String, Value>, b: &'x Map<String, Value>, path: &str)
    where
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

static TRUE: Value = Value::Bool(true);

/// (positional item schemas, schema of the rest), for 2020-12 and draft-07 spellings.
fn items(s: &Map<String, Value>) -> (Vec<&Value>, &Value) {
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

fn lower(s: &Map<String, Value>) -> Option<(f64, bool)> {
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

fn upper(s: &Map<String, Value>) -> Option<(f64, bool)> {
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

fn as_schema(v: &Value) -> Option<&Map<String, Value>> {
    v.as_object()
}

fn is_true(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Object(o) => o.keys().all(|k| ANNOTATIONS.contains(&k.as_str())),
        _ => false,
    }
}

fn is_false(v: &Value) -> bool {
    matches!(v, Value::Bool(false))
}

/// Equal once annotations are ignored (`a` read through its view); `walked` counts the
/// nodes looked at.
fn same_obj(a: View<'_>, b: &Map<String, Value>, walked: &mut u64) -> bool {
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

fn same(a: &Value, b: &Value, walked: &mut u64) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => same_obj(View { map: x, skip: 0 }, y, walked),
        _ => equal(a, b, walked),
    }
}

/// Compares keyword values, recursing into subschemas so that nested annotations are ignored.
fn same_value(key: &str, a: &Value, b: &Value, walked: &mut u64) -> bool {
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
fn equal(a: &Value, b: &Value, walked: &mut u64) -> bool {
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
fn nodes(v: &Value) -> u64 {
    1 + match v {
        Value::Object(o) => o.values().map(nodes).sum(),
        Value::Array(a) => a.iter().map(nodes).sum(),
        _ => 0,
    }
}

fn strings(v: Option<&Value>) -> BTreeSet<String> {
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
fn types(s: &Map<String, Value>) -> BTreeSet<&'static str> {
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
fn enumerated(s: &Map<String, Value>) -> Option<Vec<&Value>> {
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

fn has_ref(v: &Value, walked: &mut u64) -> bool {
    *walked += 1;
    match v {
        Value::Object(o) => o.iter().any(|(k, v)| k == "$ref" || has_ref(v, walked)),
        Value::Array(a) => a.iter().any(|v| has_ref(v, walked)),
        _ => false,
    }
}

/// Branches that no instance can satisfy two of: distinct single types, or distinct `const`
/// values of one required property (a discriminator).
fn pairwise_disjoint(branches: &[Value]) -> bool {
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

/// A property name as a JSON pointer token.
fn escape(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
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

    fn obj(props: Value, required: &[&str], closed: bool) -> Value {
        let mut o = json!({"type": "object", "properties": props, "required": required});
        if closed {
            o["additionalProperties"] = json!(false);
        }
        o
    }

    /// (name, old, new, BACKWARD, FORWARD, FULL). Each row is one rule of docs/registry.md.
    fn table() -> Vec<(&'static str, Value, Value, char, char, char)> {
        let s = |t: &str| json!({"type": t});
        vec![
            ("identical", s("string"), s("string"), 'C', 'C', 'C'),
            (
                "annotations only",
                json!({"type": "string", "title": "a"}),
                json!({"type": "string", "description": "b"}),
                'C',
                'C',
                'C',
            ),
            (
                "integer widened to number",
                s("integer"),
                s("number"),
                'C',
                'I',
                'I',
            ),
            (
                "number narrowed to integer",
                s("number"),
                s("integer"),
                'I',
                'C',
                'I',
            ),
            ("type changed", s("string"), s("integer"), 'I', 'I', 'I'),
            (
                "type union widened",
                s("string"),
                json!({"type": ["string", "null"]}),
                'C',
                'I',
                'I',
            ),
            (
                "type constraint removed",
                s("string"),
                json!({}),
                'C',
                'I',
                'I',
            ),
            ("true to false", json!(true), json!(false), 'I', 'C', 'I'),
            (
                "optional property added, open model",
                obj(json!({"a": s("string")}), &[], false),
                obj(json!({"a": s("string"), "b": s("integer")}), &[], false),
                'I',
                'C',
                'I',
            ),
            (
                "optional property added, closed model",
                obj(json!({"a": s("string")}), &[], true),
                obj(json!({"a": s("string"), "b": s("integer")}), &[], true),
                'C',
                'I',
                'I',
            ),
            (
                "property removed, open model",
                obj(json!({"a": s("string"), "b": s("integer")}), &[], false),
                obj(json!({"a": s("string")}), &[], false),
                'C',
                'I',
                'I',
            ),
            (
                "property removed, closed model",
                obj(json!({"a": s("string"), "b": s("integer")}), &[], true),
                obj(json!({"a": s("string")}), &[], true),
                'I',
                'C',
                'I',
            ),
            (
                "required property added",
                obj(json!({"a": s("string")}), &[], true),
                obj(json!({"a": s("string")}), &["a"], true),
                'I',
                'C',
                'I',
            ),
            (
                "required property removed",
                obj(json!({"a": s("string")}), &["a"], true),
                obj(json!({"a": s("string")}), &[], true),
                'C',
                'I',
                'I',
            ),
            (
                "property type widened",
                obj(json!({"a": s("integer")}), &["a"], true),
                obj(json!({"a": s("number")}), &["a"], true),
                'C',
                'I',
                'I',
            ),
            (
                "property type narrowed",
                obj(json!({"a": s("number")}), &["a"], true),
                obj(json!({"a": s("integer")}), &["a"], true),
                'I',
                'C',
                'I',
            ),
            (
                "model closed",
                obj(json!({"a": s("string")}), &[], false),
                obj(json!({"a": s("string")}), &[], true),
                'I',
                'C',
                'I',
            ),
            (
                "model opened",
                obj(json!({"a": s("string")}), &[], true),
                obj(json!({"a": s("string")}), &[], false),
                'C',
                'I',
                'I',
            ),
            (
                "additionalProperties schema widened",
                json!({"type": "object", "additionalProperties": s("integer")}),
                json!({"type": "object", "additionalProperties": s("number")}),
                'C',
                'I',
                'I',
            ),
            (
                "enum value added",
                json!({"enum": ["a", "b"]}),
                json!({"enum": ["a", "b", "c"]}),
                'C',
                'I',
                'I',
            ),
            (
                "enum value removed",
                json!({"enum": ["a", "b"]}),
                json!({"enum": ["a"]}),
                'I',
                'C',
                'I',
            ),
            (
                "enum added to a string",
                s("string"),
                json!({"type": "string", "enum": ["a"]}),
                'I',
                'C',
                'I',
            ),
            (
                "const to its type",
                json!({"const": 3}),
                s("integer"),
                'C',
                'I',
                'I',
            ),
            (
                "boolean to enum of both",
                s("boolean"),
                json!({"enum": [true, false]}),
                'C',
                'C',
                'C',
            ),
            (
                "maximum increased",
                json!({"type": "number", "maximum": 10}),
                json!({"type": "number", "maximum": 20}),
                'C',
                'I',
                'I',
            ),
            (
                "maximum decreased",
                json!({"type": "number", "maximum": 20}),
                json!({"type": "number", "maximum": 10}),
                'I',
                'C',
                'I',
            ),
            (
                "minimum added",
                s("number"),
                json!({"type": "number", "minimum": 0}),
                'I',
                'C',
                'I',
            ),
            (
                "exclusive minimum to inclusive",
                json!({"type": "number", "exclusiveMinimum": 0}),
                json!({"type": "number", "minimum": 0}),
                'C',
                'I',
                'I',
            ),
            (
                "multipleOf relaxed",
                json!({"type": "integer", "multipleOf": 4}),
                json!({"type": "integer", "multipleOf": 2}),
                'C',
                'I',
                'I',
            ),
            (
                "maxLength increased",
                json!({"type": "string", "maxLength": 5}),
                json!({"type": "string", "maxLength": 10}),
                'C',
                'I',
                'I',
            ),
            (
                "minLength increased",
                json!({"type": "string", "minLength": 1}),
                json!({"type": "string", "minLength": 3}),
                'I',
                'C',
                'I',
            ),
            (
                "pattern added",
                s("string"),
                json!({"type": "string", "pattern": "^a"}),
                'I',
                'C',
                'I',
            ),
            (
                "pattern changed",
                json!({"type": "string", "pattern": "^a"}),
                json!({"type": "string", "pattern": "^[ab]"}),
                'U',
                'U',
                'U',
            ),
            (
                "format added",
                s("string"),
                json!({"type": "string", "format": "email"}),
                'I',
                'C',
                'I',
            ),
            (
                "items widened",
                json!({"type": "array", "items": s("integer")}),
                json!({"type": "array", "items": s("number")}),
                'C',
                'I',
                'I',
            ),
            (
                "maxItems decreased",
                json!({"type": "array", "maxItems": 5}),
                json!({"type": "array", "maxItems": 3}),
                'I',
                'C',
                'I',
            ),
            (
                "uniqueItems added",
                s("array"),
                json!({"type": "array", "uniqueItems": true}),
                'I',
                'C',
                'I',
            ),
            (
                "tuple item widened",
                json!({"type": "array", "prefixItems": [s("integer")], "items": false}),
                json!({"type": "array", "prefixItems": [s("number")], "items": false}),
                'C',
                'I',
                'I',
            ),
            (
                "anyOf branch added",
                json!({"anyOf": [s("string")]}),
                json!({"anyOf": [s("string"), s("integer")]}),
                'C',
                'U',
                'U',
            ),
            (
                "anyOf branch removed",
                json!({"anyOf": [s("string"), s("integer")]}),
                json!({"anyOf": [s("string")]}),
                'U',
                'C',
                'U',
            ),
            (
                "type to anyOf including it",
                s("string"),
                json!({"anyOf": [s("string"), s("null")]}),
                'C',
                'I',
                'I',
            ),
            (
                "disjoint oneOf branch added",
                json!({"oneOf": [s("string")]}),
                json!({"oneOf": [s("string"), s("integer")]}),
                'C',
                'U',
                'U',
            ),
            (
                "overlapping oneOf",
                s("integer"),
                json!({"oneOf": [s("integer"), s("number")]}),
                'U',
                'I',
                'I',
            ),
            (
                "allOf added",
                json!({"type": "object"}),
                json!({"allOf": [{"type": "object"}, {"required": ["a"]}]}),
                'I',
                'C',
                'I',
            ),
            (
                "not added",
                s("integer"),
                json!({"type": "integer", "not": {"const": 0}}),
                'U',
                'C',
                'U',
            ),
            (
                "local $ref followed",
                json!({"$defs": {"n": s("integer")}, "type": "object", "properties": {"a": {"$ref": "#/$defs/n"}}}),
                json!({"$defs": {"n": s("number")}, "type": "object", "properties": {"a": {"$ref": "#/$defs/n"}}}),
                'C',
                'I',
                'I',
            ),
            (
                "recursive $ref",
                json!({"$defs": {"t": {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/t"}}}}}, "$ref": "#/$defs/t"}),
                json!({"$defs": {"t": {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/t"}}}}}, "$ref": "#/$defs/t"}),
                'C',
                'C',
                'C',
            ),
            (
                "patternProperties changed",
                json!({"type": "object", "patternProperties": {"^x": s("string")}}),
                json!({"type": "object", "patternProperties": {"^y": s("string")}}),
                'U',
                'U',
                'U',
            ),
            (
                "unknown keyword added",
                s("string"),
                json!({"type": "string", "x-custom": 1}),
                'U',
                'C',
                'U',
            ),
            (
                "discriminated oneOf gains a variant",
                json!({"oneOf": [obj(json!({"kind": {"const": "a"}, "x": s("string")}), &["kind"], true)]}),
                json!({"oneOf": [obj(json!({"kind": {"const": "a"}, "x": s("string")}), &["kind"], true), obj(json!({"kind": {"const": "b"}}), &["kind"], true)]}),
                'C',
                'U',
                'U',
            ),
            (
                "anyOf next to type in the writer",
                json!({"type": "string", "anyOf": [{"maxLength": 3}, {"pattern": "^a"}]}),
                s("string"),
                'C',
                'U',
                'U',
            ),
            (
                "null added to a property",
                obj(json!({"a": s("string")}), &["a"], true),
                obj(json!({"a": {"type": ["string", "null"]}}), &["a"], true),
                'C',
                'I',
                'I',
            ),
            (
                "property forbidden with false",
                obj(json!({"a": s("string")}), &[], false),
                obj(json!({"a": false}), &[], false),
                'I',
                'C',
                'I',
            ),
            (
                "nested property removed from closed object",
                obj(
                    json!({"o": obj(json!({"a": s("string"), "b": s("string")}), &[], true)}),
                    &["o"],
                    false,
                ),
                obj(
                    json!({"o": obj(json!({"a": s("string")}), &[], true)}),
                    &["o"],
                    false,
                ),
                'I',
                'C',
                'I',
            ),
        ]
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
        let v2 = json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}}});
        let v3 = json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}}, "required": ["b"]});
        // v3 reads v2's data? No: b is now required. Against v1 also no.
        assert_eq!(verdict(&check(Level::Backward, &v3, &[&v1, &v2])), 'I');
        // Forward: v2 reads v3 data (b required there): yes. v1 reads v3 data: a not required in v3 -> no.
        assert_eq!(verdict(&check(Level::Forward, &v3, &[&v1, &v2])), 'C');
        assert_eq!(
            verdict(&check(Level::ForwardTransitive, &v3, &[&v1, &v2])),
            'I'
        );
        let v4 = json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}}});
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
        let new = json!({"type": "object", "properties": {"plan": {"enum": ["free"]}}, "required": ["plan"]});
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
}
