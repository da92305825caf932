//! `--json FILE`: the same results for machines. The document's shape is
//! `runner/schema/results.schema.json` (JSON Schema 2020-12), which
//! `tests/outcomes.rs` holds every real run's output against: a field
//! renamed or dropped here fails there; change both, and bump
//! `SCHEMA_VERSION` when a consumer's reading would break.

use crate::fatal::Fatal;
use crate::output::summary;
use crate::record::{BootRecord, Mode, Skipped};
use crate::report::classify::PanicRecord;
use crate::report::FaultVerdict;
use crate::workspace::Artifacts;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The version of the results document's shape.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Serialize)]
struct Document<'a> {
    schema_version: u32,
    /// The runner that wrote it (`CARGO_PKG_VERSION`).
    runner_version: &'static str,
    command: &'static str,
    run_dir: &'a Path,
    /// The images every boot booted: the run's own copies.
    images: Images<'a>,
    boots: Vec<Boot<'a>>,
    /// Boots the plan wanted on a path this machine cannot boot (no Limine).
    skipped_boots: Vec<SkippedBoot<'a>>,
    totals: Totals,
    exit_status: i32,
}

#[derive(Serialize)]
struct Images<'a> {
    guest: &'a Path,
    loader: &'a Path,
}

#[derive(Serialize)]
struct SkippedBoot<'a> {
    boot_path: &'static str,
    scenarios: Vec<&'static str>,
    smp: u32,
    reason: &'a str,
}

#[derive(Serialize)]
struct Totals {
    passed: usize,
    failed: usize,
    skipped: usize,
    /// `not ok # TODO`: failures the guest knows about (not counted as failed).
    todo: usize,
}

#[derive(Serialize)]
struct Boot<'a> {
    name: &'a str,
    scenarios: Vec<&'static str>,
    smp: u32,
    boot_path: &'static str,
    outcome: &'static str,
    reason: &'a str,
    /// QEMU's exit status; null when it was killed or never ran.
    exit_status: Option<i32>,
    duration_s: f64,
    serial_log: &'a PathBuf,
    /// Serial lines longer than --line-limit, kept as head and tail.
    cut_lines: u64,
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
    /// The guest's `# TODO` reason on a `not ok`.
    todo: Option<&'a str>,
    expected: &'static str,
    as_expected: bool,
    /// The scenario's own running time as the guest measured it (TSC, its
    /// `# time:` line); null for one that stopped the machine. The boot's
    /// `duration_s` includes QEMU's start and every other scenario.
    time_s: Option<f64>,
    /// Why the result is not believed as the guest gave it (`report/evidence.rs`).
    objections: &'a [String],
    diagnostics: &'a [String],
    /// Stack scenarios only: the guard verdict (`report/stack.rs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    guard: Option<Guard<'a>>,
    /// Use-after-free scenarios only: the report's verdict (`report/uaf.rs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    uaf: Option<Uaf<'a>>,
}

#[derive(Serialize)]
struct Uaf<'a> {
    /// caught-good, caught-diagnostics-wrong or not-caught.
    verdict: &'static str,
    as_expected: bool,
    summary: String,
    failed_checks: &'a [crate::report::Failure],
    reports: usize,
    object: Option<abi::kinds::ObjectKind>,
    owner: Option<u64>,
    history_entries: usize,
}

#[derive(Serialize)]
struct Guard<'a> {
    /// caught-good, caught-diagnostics-wrong, not-caught or guard-jumped.
    verdict: &'static str,
    /// Where the fault really was: overflow, underflow, not-caught, guard-jumped.
    observed: &'static str,
    expected: &'static str,
    as_expected: bool,
    summary: String,
    failed_checks: &'a [crate::report::Failure],
    hits: usize,
    suppressed_hits: u64,
    stack_kind: Option<abi::kinds::StackKind>,
    depth: Option<u64>,
    corruption: &'a [String],
}

pub fn write(
    path: &Path,
    mode: Mode,
    (run_dir, artifacts): (&Path, &Artifacts),
    records: &[BootRecord],
    skipped: &[Skipped],
    exit_status: i32,
) -> Result<(), Fatal> {
    let totals = summary::totals_with_skipped(mode, records, skipped);
    let document = Document {
        schema_version: SCHEMA_VERSION,
        runner_version: super::RUNNER_VERSION,
        command: match mode {
            Mode::Run => "run",
            Mode::Test => "test",
        },
        run_dir,
        images: Images {
            guest: &artifacts.guest,
            loader: &artifacts.loader,
        },
        boots: records.iter().map(boot).collect(),
        skipped_boots: skipped
            .iter()
            .map(|s| SkippedBoot {
                boot_path: s.path.as_str(),
                scenarios: s.scenarios.iter().map(|s| s.name).collect(),
                smp: s.smp,
                reason: &s.reason,
            })
            .collect(),
        totals: Totals {
            passed: totals.passed,
            failed: totals.failed,
            skipped: totals.skipped,
            todo: totals.todo,
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
        boot_path: record.boot.path.as_str(),
        outcome: record.verdict.outcome.as_str(),
        reason: &record.verdict.reason,
        exit_status: record.exit_status,
        duration_s: record.duration.as_secs_f64(),
        serial_log: &record.serial_log,
        cut_lines: record.cut_lines,
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
                todo: r.todo.as_deref(),
                expected: r.scenario.expect.as_str(),
                as_expected: r.as_expected(),
                time_s: r.own_time().map(|t| t.as_secs_f64()),
                objections: &r.objections,
                diagnostics: &r.diagnostics,
                guard: r.guard.as_ref().map(|g| Guard {
                    verdict: g.category_str(),
                    observed: g.observed.as_str(),
                    expected: g.expected.as_str(),
                    as_expected: g.as_expected(),
                    summary: g.describe(),
                    failed_checks: &g.failures,
                    hits: g.hits,
                    suppressed_hits: g.suppressed,
                    stack_kind: g.stack_kind,
                    depth: g.depth,
                    corruption: &g.corruption,
                }),
                uaf: r.uaf.as_ref().map(|u| Uaf {
                    verdict: u.category_str(),
                    as_expected: u.as_expected(),
                    summary: u.describe(),
                    failed_checks: &u.failures,
                    reports: u.hits,
                    object: u.object,
                    owner: u.owner,
                    history_entries: u.history,
                }),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use crate::cli::BootPath;
    use abi::kinds::{ObjectKind, StackKind};
    use abi::Outcome;

    const SCHEMA: &str = include_str!("../../schema/results.schema.json");

    /// The schema's closed word lists are the runner's own enums, so a
    /// variant added in Rust cannot be left out of the schema (nor one
    /// dropped left in).
    #[test]
    fn the_schemas_word_lists_are_the_enums() {
        let schema: serde_json::Value = serde_json::from_str(SCHEMA).unwrap();
        let words = |def: &str| -> Vec<String> {
            schema["$defs"][def]["enum"]
                .as_array()
                .unwrap_or_else(|| panic!("no enum for {def} in the schema"))
                .iter()
                .map(|w| w.as_str().unwrap().to_string())
                .collect()
        };
        let names = |all: Vec<&str>| -> Vec<String> { all.into_iter().map(String::from).collect() };
        assert_eq!(
            words("outcome"),
            names(Outcome::ALL.iter().map(|o| o.as_str()).collect())
        );
        assert_eq!(
            words("boot_path"),
            names(BootPath::ALL.iter().map(|p| p.as_str()).collect())
        );
        assert_eq!(
            words("stack_kind"),
            names(StackKind::ALL.iter().map(|k| k.as_str()).collect())
        );
        assert_eq!(
            words("object_kind"),
            names(ObjectKind::ALL.iter().map(|k| k.as_str()).collect())
        );
        assert_eq!(
            schema["properties"]["schema_version"]["const"],
            super::SCHEMA_VERSION
        );
    }
}
