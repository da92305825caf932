//! The report a person reads: one line per scenario, the reasons under the
//! failures, and the totals.

use crate::cli::BootPath;
use crate::record::{BootRecord, Mode, Skipped};
use crate::report::judge::ScenarioResult;
use abi::Outcome;
use std::io::IsTerminal;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    Passed,
    Failed,
    Skipped,
    /// A `not ok` the guest marked `# TODO`: a failure it knows about, which
    /// KTAP does not count as one; shown, never as PASS.
    Todo,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub todo: usize,
}

impl std::fmt::Display for Totals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} passed, {} failed", self.passed, self.failed)?;
        if self.skipped > 0 {
            write!(f, ", {} skipped", self.skipped)?;
        }
        if self.todo > 0 {
            write!(f, ", {} todo", self.todo)?;
        }
        Ok(())
    }
}

pub fn print(mode: Mode, records: &[BootRecord], skipped: &[Skipped]) {
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    println!();
    for line in render(mode, records, skipped, colour) {
        println!("{line}");
    }
}

pub fn mark(mode: Mode, result: &ScenarioResult) -> Mark {
    let good = match mode {
        // Stack scenarios are judged against what they are for even in `run`:
        // an IRQ-stack overflow is meant to stop the machine.
        Mode::Run if result.provokes_fault() => result.as_expected(),
        Mode::Run => result.outcome == Outcome::Pass && result.fault_as_expected(),
        Mode::Test => result.as_expected(),
    };
    match (good && result.believed(), result.skipped, &result.todo) {
        (false, _, _) => Mark::Failed,
        (true, true, _) => Mark::Skipped,
        (true, false, Some(_)) => Mark::Todo,
        (true, false, None) => Mark::Passed,
    }
}

/// The totals, counting each scenario of a skipped boot as skipped.
pub fn totals_with_skipped(mode: Mode, records: &[BootRecord], skipped: &[Skipped]) -> Totals {
    let mut totals = Totals {
        skipped: skipped.iter().map(|s| s.scenarios.len()).sum(),
        ..Totals::default()
    };
    for result in records.iter().flat_map(|r| &r.results) {
        match mark(mode, result) {
            Mark::Passed => totals.passed += 1,
            Mark::Failed => totals.failed += 1,
            Mark::Skipped => totals.skipped += 1,
            Mark::Todo => totals.todo += 1,
        }
    }
    totals
}

pub fn render(
    mode: Mode,
    records: &[BootRecord],
    skipped: &[Skipped],
    colour: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    for record in records {
        for result in &record.results {
            render_result(mode, record, result, colour, &mut out);
        }
    }
    let (on, off) = if colour {
        ("\x1b[33m", "\x1b[0m")
    } else {
        ("", "")
    };
    for skip in skipped {
        for scenario in &skip.scenarios {
            out.push(format!(
                "{on}SKIP{off} {} smp={}{}: {}",
                scenario.name,
                skip.smp,
                via(skip.path),
                skip.reason
            ));
        }
    }
    out.push(totals_with_skipped(mode, records, skipped).to_string());
    out
}

/// ` [limine-bios]` after a scenario booted some other way than direct.
fn via(path: BootPath) -> String {
    match path {
        BootPath::Direct => String::new(),
        other => format!(" [{}]", other.as_str()),
    }
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
        (_, Mark::Todo) => "TODO".to_string(),
        (Mode::Test, Mark::Passed) => "PASS".to_string(),
        (Mode::Run, Mark::Passed) if result.provokes_fault() => "PASS".to_string(),
        (Mode::Test, Mark::Failed) => "FAIL".to_string(),
        // The guest said ok, but the fault was not caught or not told well.
        (Mode::Run, Mark::Failed) if outcome_is_fine(mode, result) => "FAIL".to_string(),
        (Mode::Run, Mark::Failed) if result.outcome == Outcome::Pass => "FAIL".to_string(),
        (Mode::Run, _) => result.outcome.as_str().to_ascii_uppercase(),
    };
    let paint = match (colour, mark) {
        (false, _) => ("", ""),
        (true, Mark::Passed) => ("\x1b[32m", "\x1b[0m"),
        (true, Mark::Failed) => ("\x1b[1;31m", "\x1b[0m"),
        (true, Mark::Skipped | Mark::Todo) => ("\x1b[33m", "\x1b[0m"),
    };
    // The scenario's own time where the guest measured it (to the
    // millisecond), else its boot's.
    let took = match result.own_time() {
        Some(own) => format!("{:.3}s", own.as_secs_f64()),
        None => format!("{:.2}s", record.duration.as_secs_f64()),
    };
    let mut line = format!(
        "{}{label}{} {} smp={}{} {took}",
        paint.0,
        paint.1,
        result.scenario.name,
        record.boot.smp,
        via(record.boot.path),
    );
    let expected = result.scenario.expect;
    if mark == Mark::Passed && expected != Outcome::Pass {
        line += &format!(" ({}, as expected)", expected.as_str());
    }
    if mark == Mark::Skipped {
        if let Some(reason) = skip_reason(record, result) {
            line += &format!(": {reason}");
        }
    }
    if let Some(todo) = &result.todo {
        line += &format!(": not ok, # TODO {todo}");
    }
    if mark == Mark::Failed && !outcome_is_fine(mode, result) {
        line += ": ";
        line += &outcome_reason(mode, record, result);
    } else if let Some(objection) = result.objections.first() {
        line += &format!(": {objection}");
    }
    if let Some(fault) = result.fault() {
        line += &format!(" — {}", fault.describe());
    }
    out.push(line);
    let indent = |text: &str| format!("    {text}");
    // A task that came close to the end of its stack is worth a look
    // whatever the verdict (`report::usage`).
    let (warn, plain) = if colour {
        ("\x1b[33m", "\x1b[0m")
    } else {
        ("", "")
    };
    out.extend(
        result
            .near_misses()
            .iter()
            .map(|n| indent(&format!("{warn}warning:{plain} {}", n.warning()))),
    );
    if mark != Mark::Failed {
        return;
    }
    if let Some(fault) = result.fault() {
        out.extend(
            fault
                .failures()
                .iter()
                .map(|f| indent(&format!("✗ {}: {}", f.check.name(), f.detail))),
        );
    }
    out.extend(
        result
            .objections
            .iter()
            .map(|o| indent(&format!("✗ evidence: {o}"))),
    );
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

/// The KTAP `# SKIP` reason, if the guest gave one.
pub fn skip_reason(record: &BootRecord, result: &ScenarioResult) -> Option<String> {
    match record
        .verdict
        .report
        .result_named(result.scenario.name)
        .and_then(|r| r.directive.clone())
    {
        Some(ktap::Directive::Skip(reason)) => Some(reason),
        _ => None,
    }
}

/// Whether the outcome alone would have passed (a failure is then the
/// fault verdict's). In `run` a scenario that provokes a fault is held to
/// what it is for: an IRQ-stack overflow is meant to stop the machine.
pub fn outcome_is_fine(mode: Mode, result: &ScenarioResult) -> bool {
    match mode {
        Mode::Run if result.provokes_fault() => result.outcome == result.scenario.expect,
        Mode::Run => result.outcome == Outcome::Pass,
        Mode::Test => result.outcome == result.scenario.expect,
    }
}

fn outcome_reason(mode: Mode, record: &BootRecord, result: &ScenarioResult) -> String {
    let mut text = String::new();
    if mode == Mode::Test || result.provokes_fault() {
        text += &format!(
            "{}, expected {}: ",
            result.outcome.as_str(),
            result.scenario.expect.as_str()
        );
    }
    text + &reason(record, result)
}

/// Why a failed result failed, in one line (the summary's and JUnit's message).
pub fn failure_reason(mode: Mode, record: &BootRecord, result: &ScenarioResult) -> String {
    let outcome = (!outcome_is_fine(mode, result)).then(|| outcome_reason(mode, record, result));
    let guard = result
        .fault()
        .filter(|g| !g.as_expected())
        .map(|g| g.describe());
    let objection = result.objections.first().cloned();
    match (outcome, guard) {
        (Some(o), Some(g)) => format!("{o} — {g}"),
        (Some(o), None) => o,
        (None, Some(g)) => g,
        (None, None) => objection.unwrap_or_else(|| reason(record, result)),
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
pub(crate) mod tests {
    use super::*;
    use crate::boot::process::Ended;
    use crate::boot::qemu::Invocation;
    use crate::report::classify::{classify, Evidence};
    use crate::report::judge::scenario_results;
    use crate::select::Boot;
    use abi::{GuestExit, Scenario};
    use std::time::Duration;

    /// A boot of `names` that ended so and printed `serial`, 210 ms long.
    pub(crate) fn record(names: &[&str], ended: Ended, serial: &str) -> BootRecord {
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
                path: BootPath::Direct,
            },
            invocation: Invocation {
                program: "q".into(),
                args: vec![],
            },
            exit_status: None,
            duration: Duration::from_millis(210),
            serial_log: "/t/01-x.serial".into(),
            cut_lines: 0,
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
        let lines = render(Mode::Run, &[shared, hang], &[], false);
        assert_eq!(lines[0], "PASS boot.smoke smp=4 0.21s");
        assert_eq!(lines[1], "FAIL core.leak smp=4 0.21s: not ok");
        assert_eq!(lines[2], "    # leaked 3 frames");
        assert_eq!(lines[3], "SKIP core.preempt smp=4 0.21s: one cpu");
        assert!(lines[4]
            .starts_with("TIMEOUT selftest.hang smp=4 0.21s: no exit and no KTAP result for 3s"));
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
        let lines = render(Mode::Test, &[hang, panic], &[], true);
        assert_eq!(
            lines[0],
            "\x1b[32mPASS\x1b[0m selftest.hang smp=4 0.21s (timeout, as expected)"
        );
        assert!(lines[1]
            .contains("FAIL\x1b[0m selftest.panic smp=4 0.21s: malformed, expected panic: "));
        assert_eq!(lines.last().unwrap(), "1 passed, 1 failed");
    }

    /// A real boot of the usage scenarios, its records attached as a run
    /// attaches them (here without the ELF).
    pub(crate) fn usage_record() -> BootRecord {
        let serial = include_str!("../report/testdata/usage.serial");
        let mut r = record(
            &["stack.near_miss", "stack.half_used"],
            Ended::Exited(GuestExit::Pass.qemu_status()),
            serial,
        );
        crate::report::attach(&mut r.results, serial, 1, None);
        r
    }

    #[test]
    fn a_near_miss_is_a_warning_under_its_scenario() {
        let lines = render(Mode::Test, &[usage_record()], &[], false);
        let at = lines
            .iter()
            .position(|l| l.contains(" stack.near_miss "))
            .unwrap();
        assert_eq!(
            lines[at + 1],
            "    warning: near miss: task 4 'near-miss' used 15.2 KiB of 16 KiB (95 %), deepest in guest::scenarios::usage::near_miss_recurse"
        );
        assert_eq!(lines.iter().filter(|l| l.contains("warning:")).count(), 1);
        let half = lines
            .iter()
            .find(|l| l.contains(" stack.half_used "))
            .unwrap();
        assert!(
            half.starts_with("PASS stack.half_used smp=4 0.001s — no near miss: task 5 used 8.0 KiB of 16 KiB (50 %)"),
            "{half}"
        );
    }

    #[test]
    fn other_paths_are_named_and_skipped_boots_say_why() {
        let mut uefi = record(
            &["boot.smoke"],
            Ended::Exited(GuestExit::Pass.qemu_status()),
            "KTAP version 1\n1..1\nok 1 boot.smoke\n",
        );
        uefi.boot.path = BootPath::LimineUefi;
        let skipped = [Skipped {
            path: BootPath::LimineBios,
            scenarios: vec![
                abi::scenario::find("boot.smoke").unwrap(),
                abi::scenario::find("boot.conformance").unwrap(),
            ],
            smp: 1,
            reason: "Limine not found: set LIMINE_DIR or run `make limine`".into(),
        }];
        let lines = render(Mode::Test, &[uefi], &skipped, false);
        assert_eq!(lines[0], "PASS boot.smoke smp=4 [limine-uefi] 0.21s");
        assert_eq!(
            lines[1],
            "SKIP boot.smoke smp=1 [limine-bios]: Limine not found: set LIMINE_DIR or run `make limine`"
        );
        assert!(lines[2].starts_with("SKIP boot.conformance smp=1 [limine-bios]: "));
        assert_eq!(lines.last().unwrap(), "1 passed, 0 failed, 2 skipped");
    }
}
