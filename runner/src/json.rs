//! `--json FILE`: the same results for machines.

use crate::classify::PanicRecord;
use crate::fatal::Fatal;
use crate::session::{BootRecord, Mode};
use crate::summary;
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Serialize)]
struct Document<'a> {
    command: &'static str,
    run_dir: &'a Path,
    boots: Vec<Boot<'a>>,
    totals: Totals,
    exit_status: i32,
}

#[derive(Serialize)]
struct Totals {
    passed: usize,
    failed: usize,
    skipped: usize,
}

#[derive(Serialize)]
struct Boot<'a> {
    name: &'a str,
    scenarios: Vec<&'static str>,
    smp: u32,
    outcome: &'static str,
    reason: &'a str,
    /// QEMU's exit status; null when it was killed or never ran.
    exit_status: Option<i32>,
    duration_s: f64,
    serial_log: &'a PathBuf,
    qemu_command: String,
    panic: Option<&'a PanicRecord>,
    problems: &'a [String],
    detail: &'a [String],
    results: Vec<ScenarioResult<'a>>,
}

#[derive(Serialize)]
struct ScenarioResult<'a> {
    scenario: &'static str,
    outcome: &'static str,
    skipped: bool,
    expected: &'static str,
    as_expected: bool,
    diagnostics: &'a [String],
}

pub fn write(
    path: &Path,
    mode: Mode,
    run_dir: &Path,
    records: &[BootRecord],
    exit_status: i32,
) -> Result<(), Fatal> {
    let totals = summary::totals(mode, records);
    let document = Document {
        command: match mode {
            Mode::Run => "run",
            Mode::Test => "test",
        },
        run_dir,
        boots: records.iter().map(boot).collect(),
        totals: Totals {
            passed: totals.passed,
            failed: totals.failed,
            skipped: totals.skipped,
        },
        exit_status,
    };
    let text = serde_json::to_string_pretty(&document)
        .map_err(|e| Fatal::setup(format!("cannot encode results: {e}")))?;
    std::fs::write(path, text + "\n")
        .map_err(|e| Fatal::setup(format!("cannot write {}: {e}", path.display())))
}

fn boot(record: &BootRecord) -> Boot<'_> {
    Boot {
        name: &record.boot.name,
        scenarios: record.boot.names(),
        smp: record.boot.smp,
        outcome: record.verdict.outcome.as_str(),
        reason: &record.verdict.reason,
        exit_status: record.exit_status,
        duration_s: record.duration.as_secs_f64(),
        serial_log: &record.serial_log,
        qemu_command: record.invocation.shell_line(),
        panic: record.verdict.panic.as_ref(),
        problems: &record.verdict.problems,
        detail: &record.verdict.detail,
        results: record
            .results
            .iter()
            .map(|r| ScenarioResult {
                scenario: r.scenario.name,
                outcome: r.outcome.as_str(),
                skipped: r.skipped,
                expected: r.scenario.expect.as_str(),
                as_expected: r.as_expected(),
                diagnostics: &r.diagnostics,
            })
            .collect(),
    }
}
