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
//! with an example, in docs/registry.md (and as data in `rules.json`, which the tests read).
//!
//! Where things are: [`context`] holds the comparison's state and the walk (resolving `$ref`,
//! cycles, memo, budget, depth); [`combinators`] the rules for `allOf`/`anyOf`/`oneOf`/`not`/
//! `if`; [`keywords`] the keyword families (numbers, strings, objects, arrays, enumerations);
//! [`values`] what schema values mean (annotations, equality, node counts).

use std::collections::HashMap;
use std::fmt;

use serde_json::Value;

mod combinators;
mod context;
mod keywords;
mod values;

#[cfg(test)]
mod tests;

use context::Cx;

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

/// The work [`check`] may do by default: `registry.compat_budget`'s default.
pub use crate::config::DEFAULT_COMPAT_BUDGET as DEFAULT_BUDGET;

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
