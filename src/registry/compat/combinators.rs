//! The rules for combinators: `allOf`, `anyOf` and `oneOf` on either side, `not` and `if`
//! in the writer. Each is decided where a sufficient condition applies, and reported as
//! undecided otherwise.

use std::ops::ControlFlow;

use serde_json::{Map, Value};

use super::context::{skip_bit, Cx, View};
use super::values::{pairwise_disjoint, ANNOTATIONS};

impl<'a> Cx<'a> {
    /// The combinator rules, in order; `Break` when they answered for the whole pair.
    pub(super) fn combinators<'x>(
        &mut self,
        a: &'x Value,
        ao: View<'x>,
        b: &'x Value,
        bo: &'x Map<String, Value>,
        path: &str,
    ) -> ControlFlow<()>
    where
        'a: 'x,
    {
        self.reader_conjunction(a, bo, path);
        self.writer_disjunction(a, ao, b, path)?;
        self.writer_narrowing(a, ao, b, path)?;
        self.reader_disjunction(a, bo, path)
    }

    /// b's conjunctions: a must fit each part.
    fn reader_conjunction<'x>(&mut self, a: &'x Value, bo: &'x Map<String, Value>, path: &str)
    where
        'a: 'x,
    {
        if let Some(parts) = bo.get("allOf").and_then(Value::as_array) {
            for (i, part) in parts.iter().enumerate() {
                self.sub(a, part, &format!("{path}/allOf/{i}"));
            }
        }
    }

    /// a's disjunctions: every branch must fit b (sufficient, and exact for anyOf when the
    /// branches carry all of a's constraints). First try a without them: a superset of a.
    fn writer_disjunction<'x>(
        &mut self,
        a: &'x Value,
        ao: View<'x>,
        b: &'x Value,
        path: &str,
    ) -> ControlFlow<()>
    where
        'a: 'x,
    {
        for comb in ["anyOf", "oneOf"] {
            let Some(branches) = ao.get(comb).and_then(Value::as_array) else {
                continue;
            };
            if self.fits_without(a, ao, comb, b, path) {
                return ControlFlow::Break(());
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
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    /// a's conjunctions and conditions only narrow a: try dropping them.
    fn writer_narrowing<'x>(
        &mut self,
        a: &'x Value,
        ao: View<'x>,
        b: &'x Value,
        path: &str,
    ) -> ControlFlow<()>
    where
        'a: 'x,
    {
        for key in ["allOf", "not", "if"] {
            if !ao.contains_key(key) {
                continue;
            }
            if self.fits_without(a, ao, key, b, path) {
                return ControlFlow::Break(());
            }
            if key == "allOf" {
                let parts = ao
                    .get("allOf")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                for part in parts {
                    if self.trial(|cx| cx.sub(part, b, path)).is_empty() {
                        return ControlFlow::Break(());
                    }
                }
            }
            self.undecided(
                "UNDECIDED_COMBINATOR",
                path,
                format!("`{key}` in the writer schema"),
            );
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    /// b's disjunctions: a must fit one branch (or, branch by branch, some branch).
    fn reader_disjunction<'x>(
        &mut self,
        a: &'x Value,
        bo: &'x Map<String, Value>,
        path: &str,
    ) -> ControlFlow<()>
    where
        'a: 'x,
    {
        for comb in ["anyOf", "oneOf"] {
            let Some(branches) = bo.get(comb).and_then(Value::as_array) else {
                continue;
            };
            let pairs = (branches.len() as u64).saturating_mul(branches.len() as u64) / 2;
            if !self.spend(pairs) {
                return ControlFlow::Break(());
            }
            if comb == "oneOf" && !pairwise_disjoint(branches) {
                self.undecided(
                    "UNDECIDED_COMBINATOR",
                    &format!("{path}/oneOf"),
                    "`oneOf` branches that may overlap",
                );
                return ControlFlow::Break(());
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
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }

    /// Whether `a` minus `key` (a superset of `a`) already fits `b`.
    pub(super) fn fits_without<'x>(
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
}
