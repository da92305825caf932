//! The run for GitHub Actions: `--github-summary FILE`, a Markdown step
//! summary (the results table, then each failure's reason and the opening
//! of its oops), appended to FILE as `$GITHUB_STEP_SUMMARY` wants; and
//! `--github-annotations`, one `::error` workflow command per failed
//! result on stdout, at the guest source line the fault was symbolized to
//! (or the panic's `file:line`), so the failure shows on the diff.

use crate::fatal::Fatal;
use crate::output::summary::{self, Mark};
use crate::record::{BootRecord, Mode, Skipped};
use crate::report::judge::ScenarioResult;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

/// Append the summary to `path`: each step's summary file is shared by
/// everything the step writes to it.
pub fn write_summary(
    path: &Path,
    mode: Mode,
    records: &[BootRecord],
    skipped: &[Skipped],
) -> Result<(), Fatal> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(summary_markdown(mode, records, skipped).as_bytes()))
        .map_err(|e| Fatal::setup(format!("cannot write {}: {e}", path.display())))
}

pub fn summary_markdown(mode: Mode, records: &[BootRecord], skipped: &[Skipped]) -> String {
    let totals = summary::totals_with_skipped(mode, records, skipped);
    let mut out = format!(
        "## runner {}: {totals}\n\n| scenario | boot | verdict | time |\n|---|---|---|---|\n",
        match mode {
            Mode::Run => "run",
            Mode::Test => "test",
        }
    );
    let mut failed = Vec::new();
    for record in records {
        for result in &record.results {
            let mark = summary::mark(mode, result);
            let took = match result.own_time() {
                Some(own) => format!("{:.3}s", own.as_secs_f64()),
                None => format!("{:.2}s", record.duration.as_secs_f64()),
            };
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {took} |",
                result.scenario.name,
                boot_cell(record),
                verdict_cell(mark, result)
            );
            if mark == Mark::Failed {
                failed.push((record, result));
            }
        }
    }
    for skip in skipped {
        for scenario in &skip.scenarios {
            let _ = writeln!(
                out,
                "| `{}` | {} smp={} | SKIP: {} | - |",
                scenario.name,
                skip.path.as_str(),
                skip.smp,
                cell(&skip.reason)
            );
        }
    }
    for (record, result) in failed {
        let _ = write!(
            out,
            "\n### FAIL `{}` ({})\n\n{}\n",
            result.scenario.name,
            boot_cell(record),
            summary::failure_reason(mode, record, result)
        );
        if let Some(fault) = result.fault() {
            for f in fault.failures() {
                let _ = write!(out, "\n- `{}`: {}", f.check.name(), f.detail);
            }
            if !fault.failures().is_empty() {
                out.push('\n');
            }
        }
        if let Some(at) = location(record, result) {
            let _ = write!(out, "\nat `{}:{}`\n", at.0, at.1);
        }
        if let Some(site) = result.site.as_ref().filter(|s| !s.oops.is_empty()) {
            // A fence longer than any backtick run in the oops.
            let _ = write!(out, "\n````text\n{}\n````\n", site.oops.join("\n"));
        }
        let _ = writeln!(out, "\nserial log: `{}`", record.serial_log.display());
    }
    out
}

/// One `::error` line per failed result, in run order.
pub fn annotations(mode: Mode, records: &[BootRecord]) -> Vec<String> {
    let mut out = Vec::new();
    for record in records {
        for result in &record.results {
            if summary::mark(mode, result) != Mark::Failed {
                continue;
            }
            let title = format!("{} ({})", result.scenario.name, boot_cell(record));
            let mut message = summary::failure_reason(mode, record, result);
            if let Some(fault) = result.fault() {
                for f in fault.failures() {
                    let _ = write!(message, "\n{}: {}", f.check.name(), f.detail);
                }
            }
            let _ = write!(message, "\nserial log: {}", record.serial_log.display());
            let place = match location(record, result) {
                Some((file, line)) => {
                    format!("file={},line={line},", escape_property(file))
                }
                None => String::new(),
            };
            out.push(format!(
                "::error {place}title={}::{}",
                escape_property(&title),
                escape_data(&message)
            ));
        }
    }
    out
}

/// The guest source line a failure is pinned to: where its fault was
/// symbolized, else, for the result that ended a panicked boot, the
/// panic's own `file:line`.
fn location<'a>(record: &'a BootRecord, result: &'a ScenarioResult) -> Option<(&'a str, u32)> {
    let text = result
        .site
        .as_ref()
        .and_then(|s| s.location.as_deref())
        .or_else(|| {
            let panic = record.verdict.panic.as_ref()?;
            result.ended_the_boot.then_some(panic.location.as_str())
        })?;
    let (file, line) = text.rsplit_once(':')?;
    Some((file, line.parse().ok()?))
}

fn boot_cell(record: &BootRecord) -> String {
    format!("{} smp={}", record.boot.path.as_str(), record.boot.smp)
}

fn verdict_cell(mark: Mark, result: &ScenarioResult) -> String {
    let word = match mark {
        Mark::Passed => "PASS",
        Mark::Failed => "**FAIL**",
        Mark::Skipped => "SKIP",
        Mark::Todo => "TODO",
    };
    match result.fault() {
        Some(fault) => format!("{word}: {}", cell(&fault.describe())),
        None => word.to_string(),
    }
}

/// Text inside a Markdown table cell: one line, no column break.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\r', '\n'], " ")
}

/// A workflow command's message, as GitHub's toolkit escapes it
/// (`escapeData`): `%`, CR and LF, or the message ends at the first line.
pub fn escape_data(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// A workflow command's property value (`escapeProperty`): also `:` and
/// `,`, which would end the value.
pub fn escape_property(text: &str) -> String {
    escape_data(text).replace(':', "%3A").replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::process::Ended;
    use crate::cli::BootPath;
    use crate::output::summary::tests::record;
    use crate::report::judge::FaultSite;
    use abi::GuestExit;

    #[test]
    fn messages_are_escaped_as_github_reads_them() {
        assert_eq!(escape_data("100% a\r\nb\nc"), "100%25 a%0D%0Ab%0Ac");
        assert_eq!(escape_property("a: b, c%"), "a%3A b%2C c%25");
    }

    fn failed_and_passed() -> Vec<BootRecord> {
        let mut shared = record(
            &["boot.smoke", "core.leak"],
            Ended::Exited(GuestExit::Fail.qemu_status()),
            "KTAP version 1\n1..2\n# time: 12.345 ms\nok 1 boot.smoke\n# leaked 3 frames | 5%\n# time: 100.000 ms\nnot ok 2 core.leak\n",
        );
        shared.results[1].site = Some(FaultSite {
            location: Some("guest/src/scenarios/core.rs:42".into()),
            oops: vec!["BUG: stack guard page was hit".into(), "Oops: 0000".into()],
        });
        let mut panic = record(
            &["selftest.panic"],
            Ended::Exited(GuestExit::Panic.qemu_status()),
            "KTAP version 1\n1..1\nPANIC cpu=0 guest/src/scenarios/selftest.rs:7 boom\n",
        );
        panic.boot.path = BootPath::LimineBios;
        vec![shared, panic]
    }

    #[test]
    fn the_table_has_a_row_per_result_and_each_failure_its_reason() {
        let text = summary_markdown(Mode::Run, &failed_and_passed(), &[]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "## runner run: 1 passed, 2 failed");
        assert_eq!(lines[2], "| scenario | boot | verdict | time |");
        assert_eq!(lines[4], "| `boot.smoke` | direct smp=4 | PASS | 0.012s |");
        assert_eq!(
            lines[5],
            "| `core.leak` | direct smp=4 | **FAIL** | 0.100s |"
        );
        assert!(
            lines[6].starts_with("| `selftest.panic` | limine-bios smp=4 | **FAIL** |"),
            "{text}"
        );
        assert!(text.contains("\n### FAIL `core.leak` (direct smp=4)\n\nnot ok\n"));
        assert!(text.contains("\nat `guest/src/scenarios/core.rs:42`\n"));
        assert!(text.contains("\n````text\nBUG: stack guard page was hit\nOops: 0000\n````\n"));
        assert!(
            text.contains("\nat `guest/src/scenarios/selftest.rs:7`\n"),
            "{text}"
        );
        assert!(text.contains("serial log: `/t/01-x.serial`"));
    }

    #[test]
    fn one_annotation_per_failure_at_its_source_line() {
        let lines = annotations(Mode::Run, &failed_and_passed());
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(
            lines[0],
            "::error file=guest/src/scenarios/core.rs,line=42,title=core.leak (direct smp=4)::not ok%0Aserial log: /t/01-x.serial"
        );
        assert!(
            lines[1].starts_with(
                "::error file=guest/src/scenarios/selftest.rs,line=7,title=selftest.panic (limine-bios smp=4)::"
            ),
            "{}",
            lines[1]
        );
        // Every message stays on its one line.
        assert!(lines.iter().all(|l| !l.contains('\n')));
    }
}
