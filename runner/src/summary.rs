//! The report a person reads: one line per scenario, the reasons under the
//! failures, and the totals.

use crate::judge::ScenarioResult;
use crate::session::{BootRecord, Mode};
use abi::Outcome;
use std::io::IsTerminal;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mark {
    Passed,
    Failed,
    Skipped,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl std::fmt::Display for Totals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} passed, {} failed", self.passed, self.failed)?;
        if self.skipped > 0 {
            write!(f, ", {} skipped", self.skipped)?;
        }
        Ok(())
    }
}

pub fn print(mode: Mode, records: &[BootRecord]) {
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    println!();
    for line in render(mode, records, colour) {
        println!("{line}");
    }
}

fn mark(mode: Mode, result: &ScenarioResult) -> Mark {
    let good = match mode {
        Mode::Run => result.outcome == Outcome::Pass,
        Mode::Test => result.as_expected(),
    };
    match (good, result.skipped) {
        (true, true) => Mark::Skipped,
        (true, false) => Mark::Passed,
        (false, _) => Mark::Failed,
    }
}

pub fn totals(mode: Mode, records: &[BootRecord]) -> Totals {
    let mut totals = Totals::default();
    for result in records.iter().flat_map(|r| &r.results) {
        match mark(mode, result) {
            Mark::Passed => totals.passed += 1,
            Mark::Failed => totals.failed += 1,
            Mark::Skipped => totals.skipped += 1,
        }
    }
    totals
}

pub fn render(mode: Mode, records: &[BootRecord], colour: bool) -> Vec<String> {
    let mut out = Vec::new();
    for record in records {
        for result in &record.results {
            render_result(mode, record, result, colour, &mut out);
        }
    }
    out.push(totals(mode, records).to_string());
    out
}

fn render_result(
    mode: Mode,
    record: &BootRecord,
    result: &ScenarioResult,
    colour: bool,
    out: &mut Vec<String>,
) {
    let mark = mark(mode, result);
    let label = match (mode, mark) {
        (_, Mark::Skipped) => "SKIP".to_string(),
        (Mode::Test, Mark::Passed) => "PASS".to_string(),
        (Mode::Test, Mark::Failed) => "FAIL".to_string(),
        (Mode::Run, _) => result.outcome.as_str().to_ascii_uppercase(),
    };
    let paint = match (colour, mark) {
        (false, _) => ("", ""),
        (true, Mark::Passed) => ("\x1b[32m", "\x1b[0m"),
        (true, Mark::Failed) => ("\x1b[1;31m", "\x1b[0m"),
        (true, Mark::Skipped) => ("\x1b[33m", "\x1b[0m"),
    };
    let mut line = format!(
        "{}{label}{} {} smp={} {:.2}s",
        paint.0,
        paint.1,
        result.scenario.name,
        record.boot.smp,
        record.duration.as_secs_f64()
    );
    let expected = result.scenario.expect;
    if mode == Mode::Test && mark == Mark::Passed && expected != Outcome::Pass {
        line += &format!(" ({}, as expected)", expected.as_str());
    }
    if mark == Mark::Skipped {
        if let Some(ktap::Directive::Skip(reason)) = record
            .verdict
            .report
            .result_named(result.scenario.name)
            .and_then(|r| r.directive.clone())
        {
            line += &format!(": {reason}");
        }
    }
    if mark == Mark::Failed {
        line += ": ";
        if mode == Mode::Test {
            line += &format!(
                "{}, expected {}: ",
                result.outcome.as_str(),
                expected.as_str()
            );
        }
        line += &reason(record, result);
    }
    out.push(line);
    if mark != Mark::Failed {
        return;
    }
    let indent = |text: &str| format!("    {text}");
    let diagnostics: Vec<String> = result
        .diagnostics
        .iter()
        .map(|d| format!("# {d}"))
        .collect();
    out.extend(diagnostics.iter().map(|d| indent(d)));
    if result.ended_the_boot {
        out.extend(record.verdict.problems.iter().skip(1).map(|p| indent(p)));
        // The serial tail shows where the boot stopped; what it repeats is noise.
        let news = record.verdict.detail.iter().filter(|line| {
            !diagnostics.contains(line)
                && !record
                    .verdict
                    .reason
                    .contains(line.trim_start_matches("PANIC "))
                && !line.starts_with("KTAP version")
                && !line.starts_with("1..")
        });
        out.extend(news.map(|d| indent(&format!("| {d}"))));
        out.push(indent(&format!(
            "serial log: {}",
            record.serial_log.display()
        )));
    }
}

fn reason(record: &BootRecord, result: &ScenarioResult) -> String {
    if result.ended_the_boot || record.verdict.outcome == Outcome::Malformed {
        return record.verdict.reason.clone();
    }
    match result.outcome {
        Outcome::Pass => "passed".to_string(),
        Outcome::Fail => "not ok".to_string(),
        other => format!("did not run: the boot ended in {}", other.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{classify, Evidence};
    use crate::judge::scenario_results;
    use crate::process::Ended;
    use crate::qemu::Invocation;
    use crate::select::Boot;
    use abi::{GuestExit, Scenario};
    use std::time::Duration;

    fn record(names: &[&str], ended: Ended, serial: &str) -> BootRecord {
        let scenarios: Vec<&'static Scenario> = names
            .iter()
            .map(|n| abi::scenario::find(n).unwrap())
            .collect();
        let verdict = classify(&Evidence {
            ended: &ended,
            serial,
            stderr: "",
            requested: names,
        });
        BootRecord {
            results: scenario_results(&scenarios, &verdict),
            boot: Boot {
                name: "01-x".into(),
                scenarios,
                smp: 4,
            },
            invocation: Invocation {
                program: "q".into(),
                args: vec![],
            },
            exit_status: None,
            duration: Duration::from_millis(210),
            serial_log: "/t/01-x.serial".into(),
            verdict,
        }
    }

    #[test]
    fn lines_and_totals() {
        let shared = record(
            &["boot.smoke", "core.leak", "core.preempt"],
            Ended::Exited(GuestExit::Fail.qemu_status()),
            "KTAP version 1\n1..3\nok 1 boot.smoke\n# leaked 3 frames\nnot ok 2 core.leak\nok 3 core.preempt # SKIP one cpu\n",
        );
        let hang = record(
            &["selftest.hang"],
            Ended::TimedOut(Duration::from_secs(3)),
            "KTAP version 1\n1..1\n# spinning\n",
        );
        let lines = render(Mode::Run, &[shared, hang], false);
        assert_eq!(lines[0], "PASS boot.smoke smp=4 0.21s");
        assert_eq!(lines[1], "FAIL core.leak smp=4 0.21s: not ok");
        assert_eq!(lines[2], "    # leaked 3 frames");
        assert_eq!(lines[3], "SKIP core.preempt smp=4 0.21s: one cpu");
        assert!(lines[4].starts_with("TIMEOUT selftest.hang smp=4 0.21s: no exit after 3s"));
        assert!(lines.contains(&"    # spinning".to_string()));
        assert!(lines.contains(&"    serial log: /t/01-x.serial".to_string()));
        assert_eq!(lines.last().unwrap(), "1 passed, 2 failed, 1 skipped");
    }

    #[test]
    fn test_mode_judges_against_expectations() {
        let hang = record(
            &["selftest.hang"],
            Ended::TimedOut(Duration::from_secs(3)),
            "",
        );
        let panic = record(
            &["selftest.panic"],
            Ended::Exited(GuestExit::Pass.qemu_status()),
            "",
        );
        let lines = render(Mode::Test, &[hang, panic], true);
        assert_eq!(
            lines[0],
            "\x1b[32mPASS\x1b[0m selftest.hang smp=4 0.21s (timeout, as expected)"
        );
        assert!(lines[1]
            .contains("FAIL\x1b[0m selftest.panic smp=4 0.21s: malformed, expected panic: "));
        assert_eq!(lines.last().unwrap(), "1 passed, 1 failed");
    }
}
