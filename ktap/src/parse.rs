//! Turning a whole serial log into a [`Report`].

use crate::line::{classify, Line};
use crate::report::{Problem, Report, TestResult};
use std::collections::HashSet;

/// Parse raw serial bytes; invalid UTF-8 is replaced, never fatal.
pub fn parse_bytes(bytes: &[u8]) -> Report {
    parse(&String::from_utf8_lossy(bytes))
}

/// Parse a log that contains (at most) one top-level KTAP report.
pub fn parse(text: &str) -> Report {
    let mut state = State::default();
    for (index, raw) in text.lines().enumerate() {
        state.feed(index + 1, raw.strip_suffix('\r').unwrap_or(raw));
    }
    state.finish()
}

#[derive(Default)]
struct State {
    report: Report,
    pending: Vec<String>,
    seen: HashSet<usize>,
}

impl State {
    fn feed(&mut self, number: usize, line: &str) {
        if self.report.version.is_none() {
            // Everything before the header is the loader's and firmware's.
            match classify(line) {
                Line::Version(v) => self.report.version = Some(v),
                Line::Blank => {}
                _ => self.report.unknown_lines.push(line.to_string()),
            }
            return;
        }
        match classify(line) {
            Line::Version(_) => self
                .report
                .problems
                .push(Problem::SecondVersion { line: number }),
            Line::Plan(plan) if self.report.plan.is_some() => self
                .report
                .problems
                .push(Problem::SecondPlan { line: number, plan }),
            Line::Plan(plan) => self.report.plan = Some(plan),
            Line::Diagnostic(text) => self.pending.push(text.to_string()),
            Line::Nested(text) => self.pending.push(text.to_string()),
            Line::Result {
                number: n,
                name,
                ok,
                directive,
            } => {
                self.check_number(number, n);
                self.report.results.push(TestResult {
                    number: n,
                    name: name.to_string(),
                    ok,
                    directive,
                    diagnostics: std::mem::take(&mut self.pending),
                });
            }
            Line::Blank => {}
            Line::Unknown => self.report.unknown_lines.push(line.to_string()),
        }
    }

    fn check_number(&mut self, line: usize, found: usize) {
        let expected = self
            .report
            .results
            .last()
            .map_or(1, |r| r.number.saturating_add(1));
        if !self.seen.insert(found) {
            self.report.problems.push(Problem::Duplicate {
                line,
                number: found,
            });
        } else if found != expected {
            self.report.problems.push(Problem::OutOfOrder {
                line,
                expected,
                found,
            });
        }
    }

    fn finish(mut self) -> Report {
        let report = &mut self.report;
        report.trailing_diagnostics = self.pending;
        let got = report.results.len();
        let mut closing = Vec::new();
        if report.version.is_none() {
            closing.push(Problem::NoVersion);
        }
        match report.plan {
            None => closing.push(Problem::NoPlan),
            Some(planned) if got < planned => closing.push(Problem::Truncated { planned, got }),
            Some(planned) if got > planned => {
                closing.push(Problem::MoreThanPlanned { planned, got })
            }
            Some(_) => {}
        }
        // Whole-report problems first: they are what a reader needs to see.
        closing.append(&mut report.problems);
        report.problems = closing;
        self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Directive;

    #[test]
    fn mixed_serial_log() {
        let log = "loader: jumping\r\n\
                   \x1b[0mgarbage \u{fffd}\n\
                   KTAP version 1\n\
                   1..3\n\
                   # Subtest: boot\n\
                   \x20   ok 1 inner\n\
                   ok 1 boot.smoke\n\
                   random noise\n\
                   # cpus=4\n\
                   not ok 2 core.leak\n\
                   ok 3 core.preempt # SKIP needs 2 cpus\n\
                   # bye\n";
        let r = parse(log);
        assert!(r.is_complete(), "{:?}", r.problems);
        assert_eq!(r.version, Some(1));
        assert_eq!(r.plan, Some(3));
        assert_eq!(r.results.len(), 3);
        assert_eq!(
            r.results[0].diagnostics,
            ["Subtest: boot", "    ok 1 inner"]
        );
        assert_eq!(r.results[1].diagnostics, ["cpus=4"]);
        assert!(r.results[1].is_failure());
        assert_eq!(
            r.results[2].directive,
            Some(Directive::Skip("needs 2 cpus".into()))
        );
        assert_eq!(r.trailing_diagnostics, ["bye"]);
        assert_eq!(
            r.unknown_lines,
            ["loader: jumping", "\x1b[0mgarbage \u{fffd}", "random noise"]
        );
    }

    #[test]
    fn truncated_report() {
        let r = parse("KTAP version 1\n1..3\nok 1 a\n# running b\nPANIC cpu=0 x.rs:1 boom\n");
        assert!(!r.is_complete());
        assert_eq!(r.problems, [Problem::Truncated { planned: 3, got: 1 }]);
        assert_eq!(r.trailing_diagnostics, ["running b"]);
        assert_eq!(r.unknown_lines, ["PANIC cpu=0 x.rs:1 boom"]);
    }

    #[test]
    fn missing_header_and_plan() {
        assert_eq!(parse("").problems, [Problem::NoVersion, Problem::NoPlan]);
        let r = parse("ok 1 a\n1..1\n");
        assert_eq!(r.problems, [Problem::NoVersion, Problem::NoPlan]);
        assert!(
            r.results.is_empty(),
            "results before the header are not trusted"
        );
        assert_eq!(
            parse("KTAP version 1\nok 1 a\n").problems,
            [Problem::NoPlan]
        );
    }

    #[test]
    fn numbering_and_repeats() {
        let r = parse("KTAP version 1\n1..3\nok 1 a\nok 3 c\nok 3 c\nKTAP version 1\n1..3\n");
        assert_eq!(
            r.problems,
            [
                Problem::OutOfOrder {
                    line: 4,
                    expected: 2,
                    found: 3
                },
                Problem::Duplicate { line: 5, number: 3 },
                Problem::SecondVersion { line: 6 },
                Problem::SecondPlan { line: 7, plan: 3 },
            ]
        );
        let r = parse("KTAP version 1\n1..1\nok 1 a\nok 2 b\n");
        assert_eq!(
            r.problems,
            [Problem::MoreThanPlanned { planned: 1, got: 2 }]
        );
    }

    #[test]
    fn blank_lines_before_the_header_are_not_unknown() {
        let r = parse("\n  \nboot\n\t\nKTAP version 1\n1..0\n");
        assert_eq!(r.unknown_lines, ["boot"]);
        assert!(r.is_complete());
    }

    #[test]
    fn empty_plan_is_complete() {
        assert!(parse("KTAP version 1\n1..0\n").is_complete());
    }

    #[test]
    fn garbage_bytes() {
        let r = parse_bytes(b"\xff\xfe\x00KTAP version 1\n1..1\n\xc3\x28ok 1 x\nok 1 \xff\n");
        assert_eq!(r.version, None, "the header must start its line");
        let r = parse_bytes(b"KTAP version 1\n1..1\nok 1 \xff\xfe\n");
        assert!(r.is_complete());
        assert_eq!(r.results[0].name, "\u{fffd}\u{fffd}");
        let r =
            parse_bytes(b"KTAP version 1\n1..18446744073709551615\nok 18446744073709551615 x\n");
        assert!(!r.is_complete());
    }
}
