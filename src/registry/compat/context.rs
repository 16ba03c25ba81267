//! The state of one comparison and the walk over pairs of subschemas: `$ref` resolution,
//! cycles (assumed to hold), the memo, the work budget and the depth cut.

use std::collections::HashMap;
use std::ops::ControlFlow;

use serde_json::{Map, Value};

use super::values::{as_schema, equal, has_ref, is_false, is_true, same_obj, ANNOTATIONS};
use super::Finding;

pub(super) struct Cx<'a> {
    pub(super) roots: (&'a Value, &'a Value),
    /// Equal-looking subschemas are only equal when their `$ref`s point at equal definitions.
    pub(super) same_defs: bool,
    pub(super) findings: Vec<Finding>,
    /// Pairs under comparison, with the depth each was entered at: a pair met again is a
    /// cycle through `$ref`, assumed to hold (the greatest fixed point, as for recursive types).
    pub(super) seen: HashMap<Pair, usize>,
    /// Results of pairs already compared, findings relative to the pair's own path: a pair
    /// reached again by another route (`allOf` listing one `$ref` twice, level after level)
    /// costs one lookup, not the whole comparison again.
    pub(super) memo: HashMap<Pair, Vec<Finding>>,
    /// The shallowest depth of a pair assumed by a cycle since the current pair was entered:
    /// a result that leaned on an assumption about an enclosing pair is not memoised, since
    /// that assumption may yet fail.
    pub(super) low: usize,
    pub(super) depth: usize,
    /// How many times nesting was cut short at [`MAX_DEPTH`].
    pub(super) depth_cuts: u64,
    /// Work left; at zero every comparison stops and the verdict is undecided.
    pub(super) steps: u64,
}

/// (writer subschema, keywords of it left out, reader subschema). Every pointer is into the
/// two root documents (or a static), which outlive the comparison, so addresses identify.
pub(super) type Pair = (*const Value, u8, *const Value);

/// Writer keywords a comparison may leave out ([`Cx::fits_without`]), as bits.
pub(super) const SKIP_ALL_OF: u8 = 1;
pub(super) const SKIP_ANY_OF: u8 = 2;
pub(super) const SKIP_ONE_OF: u8 = 4;
pub(super) const SKIP_NOT: u8 = 8;
/// `if` with its `then` and `else`.
pub(super) const SKIP_IF: u8 = 16;

pub(super) fn skip_bit(key: &str) -> u8 {
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
pub(super) struct View<'x> {
    pub(super) map: &'x Map<String, Value>,
    pub(super) skip: u8,
}

impl<'x> View<'x> {
    pub(super) fn get(&self, key: &str) -> Option<&'x Value> {
        if self.skip & skip_bit(key) != 0 {
            return None;
        }
        self.map.get(key)
    }

    pub(super) fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &'x String> + '_ {
        self.map.keys().filter(|k| self.skip & skip_bit(k) == 0)
    }
}

/// Nesting followed (writer and reader descents add up), well inside a 2 MiB stack.
pub(super) const MAX_DEPTH: usize = 128;
/// Findings kept per comparison.
pub(super) const MAX_FINDINGS: usize = 32;

impl<'a> Cx<'a> {
    pub(super) fn no(&mut self, kind: &'static str, path: &str, detail: impl Into<String>) {
        self.push(Finding {
            kind,
            path: format!("#{path}"),
            detail: detail.into(),
            decided: true,
        });
    }

    pub(super) fn undecided(&mut self, kind: &'static str, path: &str, detail: impl Into<String>) {
        self.push(Finding {
            kind,
            path: format!("#{path}"),
            detail: detail.into(),
            decided: false,
        });
    }

    /// Keeps at most [`MAX_FINDINGS`]: one break reached by many routes would otherwise be
    /// listed once per route, and routes can be exponentially many.
    pub(super) fn push(&mut self, f: Finding) {
        if self.findings.len() < MAX_FINDINGS {
            self.findings.push(f);
        }
    }

    /// Takes `n` steps from the budget; false (and nothing left) when it does not hold them.
    pub(super) fn spend(&mut self, n: u64) -> bool {
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
    pub(super) fn trial(&mut self, f: impl FnOnce(&mut Self)) -> Vec<Finding> {
        let saved = std::mem::take(&mut self.findings);
        f(self);
        std::mem::replace(&mut self.findings, saved)
    }

    /// Whether two subschemas are equal once annotations are ignored, paying for the walk.
    pub(super) fn same(&mut self, a: View<'_>, b: &Value) -> bool {
        let mut walked = 0;
        let r = match b.as_object() {
            Some(bo) => same_obj(a, bo, &mut walked),
            None => false,
        };
        self.spend(walked) && r
    }

    pub(super) fn has_ref(&mut self, a: &Value) -> bool {
        let mut walked = 0;
        let r = has_ref(a, &mut walked);
        self.spend(walked) && r
    }

    pub(super) fn resolve<'x>(
        &mut self,
        root: &'x Value,
        s: &'x Value,
        path: &str,
    ) -> Option<&'x Value> {
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
    pub(super) fn sub<'x>(&mut self, a: &'x Value, b: &'x Value, path: &str)
    where
        'a: 'x,
    {
        self.sub_skipping(a, 0, b, path);
    }

    /// a (without the `skip` keywords) ⊆ b.
    pub(super) fn sub_skipping<'x>(&mut self, a: &'x Value, skip: u8, b: &'x Value, path: &str)
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

    /// a ⊆ b once both are resolved: the answers that need no rule, then the combinators, then
    /// the keywords no rule reads, then keyword family by family.
    pub(super) fn sub_resolved<'x>(&mut self, a: &'x Value, skip: u8, b: &'x Value, path: &str)
    where
        'a: 'x,
    {
        let ControlFlow::Continue((ao, bo)) = self.shortcuts(a, skip, b, path) else {
            return;
        };
        if self.combinators(a, ao, b, bo, path).is_break() || self.unread(ao, bo, path).is_break() {
            return;
        }
        self.keywords(ao.map, bo, path);
    }

    /// Answers that need no rule (`false` fits anything, anything fits `true`, a schema fits
    /// itself), or the two schema objects to compare.
    fn shortcuts<'x>(
        &mut self,
        a: &'x Value,
        skip: u8,
        b: &'x Value,
        path: &str,
    ) -> ControlFlow<(), (View<'x>, &'x Map<String, Value>)> {
        if is_false(a) || is_true(b) {
            return ControlFlow::Break(());
        }
        if let Some(ao) = as_schema(a) {
            let view = View { map: ao, skip };
            if self.same(view, b) && (self.same_defs || !self.has_ref(a)) {
                return ControlFlow::Break(());
            }
        } else if skip == 0 && a == b {
            return ControlFlow::Break(());
        }
        if is_false(b) {
            self.no(
                "SCHEMA_NARROWED_TO_NOTHING",
                path,
                "the schema accepts nothing any more",
            );
            return ControlFlow::Break(());
        }
        let (Some(ao), Some(bo)) = (as_schema(a), as_schema(b)) else {
            self.undecided(
                "UNDECIDED_SCHEMA",
                path,
                "a schema is neither an object nor a boolean",
            );
            return ControlFlow::Break(());
        };
        ControlFlow::Continue((View { map: ao, skip }, bo))
    }

    /// Whether two keyword values differ, paying for the walk.
    pub(super) fn differ(&mut self, a: Option<&Value>, b: Option<&Value>) -> bool {
        let mut walked = 0;
        let eq = match (a, b) {
            (Some(a), Some(b)) => equal(a, b, &mut walked),
            (None, None) => true,
            _ => false,
        };
        !(self.spend(walked) && eq)
    }
}
