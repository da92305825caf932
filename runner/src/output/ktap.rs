//! `--ktap FILE`: the whole run as one KTAP document, for Linux's own KTAP
//! tooling (`tools/testing/kunit/kunit.py parse`): a subtest per boot and,
//! in it, a result per scenario carrying the *runner's* verdict, not the
//! guest's: a boot that is expected to stop the machine (`stack.irq`) is
//! `ok` when it stopped as it should, a scenario whose fault report failed
//! the checks is `not ok` even if the guest said `ok`. Boots this machine
//! cannot do (no Limine here) are subtests whose results are all `# SKIP`.
//!
//! Each failure's reason is a `# ` line just before its result, where
//! KUnit prints a test's log. The layout is KUnit's own (an indented
//! `KTAP version 1`, `# Subtest: NAME`, the plan, the results, then the
//! parent's `ok N NAME`).

use crate::fatal::Fatal;
use crate::output::summary::{self, Mark};
use crate::record::{BootRecord, Mode, Skipped};
use std::fmt::Write;
use std::path::Path;

pub fn write(
    path: &Path,
    mode: Mode,
    records: &[BootRecord],
    skipped: &[Skipped],
) -> Result<(), Fatal> {
    super::write_file(path, &render(mode, records, skipped))
}

/// One line of text, whatever the reason held: KTAP has no continuation.
fn one_line(text: &str) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    // A `#` would start a directive inside a result line.
    line.replace('#', "no.")
}

pub fn render(mode: Mode, records: &[BootRecord], skipped: &[Skipped]) -> String {
    let mut out = header(records.len() + skipped.len());
    let mut number = 0;
    for record in records {
        number += 1;
        out += &boot(number, mode, record);
    }
    for skip in skipped {
        number += 1;
        out += &skipped_boot(number, skip);
    }
    out
}

/// The document's start: its version and the plan, one test per boot.
/// `--verbose` prints it before the first boot, so that the boots' own
/// `[NAME] KTAP version 1` lines, echoed behind their prefix, are read as
/// diagnostics and not as the start of the run's document.
pub fn header(boots: usize) -> String {
    format!("KTAP version 1\n1..{boots}\n")
}

/// Boot `number` of the document as a subtest: its header, its plan and a
/// result per scenario, then its own result line. Whole on its own, so
/// `--verbose` prints it the moment the boot is judged.
pub fn boot(number: usize, mode: Mode, record: &BootRecord) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "    KTAP version 1");
    let _ = writeln!(out, "    # Subtest: {}", record.boot.name);
    let _ = writeln!(out, "    1..{}", record.results.len());
    let mut failed = false;
    for (i, result) in record.results.iter().enumerate() {
        let n = i + 1;
        let name = result.scenario.name;
        match summary::mark(mode, result) {
            Mark::Passed => {
                let _ = writeln!(out, "    ok {n} {name}");
            }
            Mark::Skipped => {
                let why = summary::skip_reason(record, result).unwrap_or_default();
                let _ = writeln!(out, "    ok {n} {name} # SKIP {}", one_line(&why));
            }
            // kunit_parser.py knows no TODO (it would read a failure):
            // a known failure is told as a skip that says so, as in JUnit.
            Mark::Todo => {
                let why = result.todo.as_deref().unwrap_or_default();
                let _ = writeln!(
                    out,
                    "    ok {n} {name} # SKIP not ok, TODO: {}",
                    one_line(why)
                );
            }
            Mark::Failed => {
                failed = true;
                let why = summary::failure_reason(mode, record, result);
                let _ = writeln!(out, "    # {}", one_line(&why));
                let _ = writeln!(out, "    not ok {n} {name}");
            }
        }
    }
    let status = if failed { "not ok" } else { "ok" };
    let _ = writeln!(out, "{status} {number} {}", record.boot.name);
    out
}

/// A boot this machine cannot do, as test `number`: a subtest whose
/// scenarios are all `# SKIP` with the reason.
pub fn skipped_boot(number: usize, skip: &Skipped) -> String {
    let mut out = String::new();
    let name = format!("skipped-{}-smp{}", skip.path.as_str(), skip.smp);
    let why = one_line(&skip.reason);
    let _ = writeln!(out, "    KTAP version 1");
    let _ = writeln!(out, "    # Subtest: {name}");
    let _ = writeln!(out, "    1..{}", skip.scenarios.len());
    for (i, s) in skip.scenarios.iter().enumerate() {
        let _ = writeln!(out, "    ok {} {} # SKIP {why}", i + 1, s.name);
    }
    let _ = writeln!(out, "ok {number} {name} # SKIP {why}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::process::Ended;
    use crate::output::summary::tests::record;
    use abi::GuestExit;

    /// Read the document back the way kunit_parser.py does: a top-level
    /// plan of boots, each a 4-space-indented subtest with its own header
    /// and plan, every result numbered in order, SKIP as a directive.
    fn counts(text: &str) -> (usize, usize, usize) {
        let top = ktap::parse(text);
        assert!(top.is_complete(), "{:?}\n{text}", top.problems);
        let (mut passed, mut failed, mut skipped) = (0, 0, 0);
        for boot in &top.results {
            let sub = boot.subtest().expect("every boot is a subtest");
            assert!(sub.is_complete(), "{}: {:?}", boot.name, sub.problems);
            let name = format!("Subtest: {}", boot.name);
            assert!(sub.unknown_lines.is_empty() && sub.results.iter().all(|r| !r.name.is_empty()));
            assert!(boot
                .diagnostics
                .iter()
                .any(|d| d.trim() == format!("# {name}")));
            for r in &sub.results {
                if r.is_skip() {
                    skipped += 1;
                } else if r.is_failure() {
                    failed += 1;
                } else {
                    passed += 1;
                }
            }
            // The boot is `not ok` exactly when one of its scenarios is.
            assert_eq!(
                boot.is_failure(),
                sub.failures().next().is_some(),
                "{}",
                boot.name
            );
        }
        (passed, failed, skipped)
    }

    /// What kunit_parser.py's `extract_tap_lines` keeps of a log: from the
    /// first line that *ends* in a KTAP version (wherever it starts), every
    /// line with as many leading characters cut as that line had before
    /// its `KTAP version`.
    fn isolate(log: &str) -> String {
        let mut lines = log.lines();
        let Some(first) = lines.by_ref().find(|l| {
            l.trim_end()
                .rsplit_once("KTAP version ")
                .is_some_and(|(_, v)| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        }) else {
            return String::new();
        };
        let prefix = first.find("KTAP version").unwrap();
        std::iter::once(first)
            .chain(lines)
            .map(|l| format!("{}\n", l.get(prefix..).unwrap_or("")))
            .collect()
    }

    #[test]
    fn one_document_with_a_subtest_per_boot_and_the_summarys_counts() {
        let shared = record(
            &["boot.smoke", "core.leak", "core.preempt"],
            Ended::Exited(GuestExit::Fail.qemu_status()),
            "KTAP version 1\n1..3\nok 1 boot.smoke\n# leaked 3 frames\nnot ok 2 core.leak\nok 3 core.preempt # SKIP one cpu\n",
        );
        let fine = record(
            &["boot.smoke"],
            Ended::Exited(GuestExit::Pass.qemu_status()),
            "KTAP version 1\n1..1\nok 1 boot.smoke\n",
        );
        let skipped = Skipped {
            path: crate::cli::BootPath::LimineBios,
            scenarios: vec![abi::scenario::find("boot.smoke").unwrap()],
            smp: 1,
            reason: "Limine not found: set LIMINE_DIR # or run make limine".into(),
        };
        let records = [shared, fine];
        let text = render(Mode::Run, &records, std::slice::from_ref(&skipped));
        let totals = summary::totals_with_skipped(Mode::Run, &records, &[skipped]);
        assert_eq!(
            counts(&text),
            (totals.passed, totals.failed, totals.skipped),
            "{text}"
        );
        assert_eq!(counts(&text), (2, 1, 2), "{text}");
        // The failure's reason sits just before its result.
        assert!(text.contains("    # "), "{text}");
    }

    /// `--verbose` prints the document in pieces between the boots' echoed
    /// serial lines, each of which holds that boot's own `KTAP version 1`:
    /// the log must still read as one document holding every boot.
    #[test]
    fn a_verbose_log_of_several_boots_is_one_document_with_all_of_them() {
        let serials = [
            "KTAP version 1\n1..2\nok 1 boot.smoke\n# leaked 3 frames\nnot ok 2 core.leak\n",
            "KTAP version 1\n1..1\nok 1 boot.smoke\n",
        ];
        let mut records = [
            record(
                &["boot.smoke", "core.leak"],
                Ended::Exited(GuestExit::Fail.qemu_status()),
                serials[0],
            ),
            record(
                &["boot.smoke"],
                Ended::Exited(GuestExit::Pass.qemu_status()),
                serials[1],
            ),
        ];
        // Prefixes of unequal length, as real boot names have.
        records[1].boot.name = "02-boot.smoke-smp4".into();
        // The order `session::execute` prints in.
        let mut log = header(records.len());
        for (i, (record, serial)) in records.iter().zip(serials).enumerate() {
            for line in serial.lines() {
                log += &format!("[{}] {line}\n", record.boot.name);
            }
            log += &boot(i + 1, Mode::Run, record);
        }
        log += "1 passed, 1 failed\n";
        let totals = summary::totals_with_skipped(Mode::Run, &records, &[]);
        assert_eq!(
            counts(&isolate(&log)),
            (totals.passed, totals.failed, totals.skipped),
            "{log}"
        );
    }
}
