//! What a parsed KTAP report holds, and what can be wrong with it.

use std::fmt;

/// A parsed report. Built by [`crate::parse`]; never rejected, only annotated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The number from the first top-level `KTAP version N` line.
    pub version: Option<u32>,
    /// `N` from the first top-level `1..N` plan line.
    pub plan: Option<usize>,
    pub results: Vec<TestResult>,
    /// Diagnostics after the last result: nothing claims them, but a report
    /// that stops early often explains itself here.
    pub trailing_diagnostics: Vec<String>,
    pub problems: Vec<Problem>,
    /// Lines that are not KTAP, including everything before the version line.
    pub unknown_lines: Vec<String>,
}

impl Report {
    /// The report is whole and consistent: a version, a plan, and exactly the
    /// planned results numbered 1..=N. Says nothing about whether they passed.
    pub fn is_complete(&self) -> bool {
        self.problems.is_empty()
    }

    /// Results that count as failures (`not ok` without a `TODO`).
    pub fn failures(&self) -> impl Iterator<Item = &TestResult> {
        self.results.iter().filter(|r| r.is_failure())
    }

    pub fn result_named(&self, name: &str) -> Option<&TestResult> {
        self.results.iter().find(|r| r.name == name)
    }
}

/// One `ok`/`not ok` line with the diagnostics printed just before it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestResult {
    pub number: usize,
    pub name: String,
    pub ok: bool,
    pub directive: Option<Directive>,
    /// `# ` lines (without the `# `) and indented subtest lines, in order,
    /// seen between the previous result and this one: KUnit prints a test's
    /// log before its result.
    pub diagnostics: Vec<String>,
}

impl TestResult {
    /// A `not ok` marked `TODO` is a known failure and does not count (TAP rule).
    pub fn is_failure(&self) -> bool {
        !self.ok && !matches!(self.directive, Some(Directive::Todo(_)))
    }

    pub fn is_skip(&self) -> bool {
        matches!(self.directive, Some(Directive::Skip(_)))
    }

    /// The subtest printed before this result, if any: its lines indented
    /// by four spaces (KTAP's nesting, as kunit_parser.py reads it), parsed
    /// as a report of their own. `None` without an indented header.
    pub fn subtest(&self) -> Option<Report> {
        let lines: Vec<&str> = self
            .diagnostics
            .iter()
            .filter_map(|d| d.strip_prefix("    "))
            .collect();
        let sub = crate::parse(&lines.join("\n"));
        sub.version.map(|_| sub)
    }
}

/// The `# SKIP reason` / `# TODO reason` after a result's name; the reason may be empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Directive {
    Skip(String),
    Todo(String),
}

/// Why a report cannot be trusted as complete. Line numbers count from 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    NoVersion,
    NoPlan,
    /// Fewer results than planned: the run stopped early or output was lost.
    Truncated {
        planned: usize,
        got: usize,
    },
    MoreThanPlanned {
        planned: usize,
        got: usize,
    },
    OutOfOrder {
        line: usize,
        expected: usize,
        found: usize,
    },
    Duplicate {
        line: usize,
        number: usize,
    },
    /// A second top-level version line, typically a reboot starting a new report.
    SecondVersion {
        line: usize,
    },
    SecondPlan {
        line: usize,
        plan: usize,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::NoVersion => write!(f, "no `KTAP version` line"),
            Problem::NoPlan => write!(f, "no plan line (`1..N`)"),
            Problem::Truncated { planned, got } => {
                write!(f, "truncated: {got} of {planned} planned results")
            }
            Problem::MoreThanPlanned { planned, got } => {
                write!(f, "{got} results but only {planned} planned")
            }
            Problem::OutOfOrder {
                line,
                expected,
                found,
            } => write!(f, "line {line}: result {found} where {expected} was due"),
            Problem::Duplicate { line, number } => {
                write!(f, "line {line}: result {number} reported twice")
            }
            Problem::SecondVersion { line } => write!(f, "line {line}: a second version line"),
            Problem::SecondPlan { line, plan } => {
                write!(f, "line {line}: a second plan (1..{plan})")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(number: usize, name: &str, ok: bool, directive: Option<Directive>) -> TestResult {
        TestResult {
            number,
            name: name.into(),
            ok,
            directive,
            diagnostics: Vec::new(),
        }
    }

    fn skip() -> Option<Directive> {
        Some(Directive::Skip("why".into()))
    }

    fn todo() -> Option<Directive> {
        Some(Directive::Todo("later".into()))
    }

    #[test]
    fn only_an_unexcused_not_ok_is_a_failure() {
        // (ok, directive, is_failure, is_skip): the TAP rules, every case.
        for (ok, directive, failure, skipped) in [
            (true, None, false, false),
            (true, skip(), false, true),
            (true, todo(), false, false),
            (false, None, true, false),
            (false, skip(), true, true),
            (false, todo(), false, false),
        ] {
            let r = result(1, "t", ok, directive.clone());
            assert_eq!(r.is_failure(), failure, "ok={ok} {directive:?}");
            assert_eq!(r.is_skip(), skipped, "ok={ok} {directive:?}");
        }
    }

    #[test]
    fn failures_and_lookup_by_name() {
        let report = Report {
            results: vec![
                result(1, "a", true, None),
                result(2, "b", false, None),
                result(3, "c", false, todo()),
                result(4, "d", false, skip()),
                result(5, "b", true, None),
            ],
            ..Report::default()
        };
        let failed: Vec<usize> = report.failures().map(|r| r.number).collect();
        assert_eq!(failed, [2, 4]);
        assert_eq!(report.result_named("c").map(|r| r.number), Some(3));
        // A repeated name answers with its first result, as the runner judges it.
        assert_eq!(report.result_named("b").map(|r| r.number), Some(2));
        assert_eq!(report.result_named("e"), None);
        assert_eq!(report.result_named(""), None);
    }

    #[test]
    fn each_problem_explains_itself() {
        for (problem, text) in [
            (Problem::NoVersion, "no `KTAP version` line"),
            (Problem::NoPlan, "no plan line (`1..N`)"),
            (
                Problem::Truncated { planned: 3, got: 1 },
                "truncated: 1 of 3 planned results",
            ),
            (
                Problem::MoreThanPlanned { planned: 1, got: 2 },
                "2 results but only 1 planned",
            ),
            (
                Problem::OutOfOrder {
                    line: 4,
                    expected: 2,
                    found: 3,
                },
                "line 4: result 3 where 2 was due",
            ),
            (
                Problem::Duplicate { line: 5, number: 3 },
                "line 5: result 3 reported twice",
            ),
            (
                Problem::SecondVersion { line: 6 },
                "line 6: a second version line",
            ),
            (
                Problem::SecondPlan { line: 7, plan: 3 },
                "line 7: a second plan (1..3)",
            ),
        ] {
            assert_eq!(problem.to_string(), text);
        }
    }
}
