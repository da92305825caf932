//! `--json FILE`: the same results for machines. The document's shape is
//! `runner/schema/results.schema.json` (JSON Schema 2020-12), which
//! `tests/outcomes.rs` holds every real run's output against: a field
//! renamed or dropped here fails there; change both, and bump
//! `SCHEMA_VERSION` when a consumer's reading would break.

use crate::fatal::Fatal;
use crate::output::summary;
use crate::record::{BootRecord, Mode, Skipped};
use crate::report::classify::PanicRecord;
use crate::report::{usage, FaultVerdict};
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
    /// Every task of the boot that exited, binned by the share of its
    /// stack it used (`report/usage.rs`).
    stack_usage: BootUsage,
}

#[derive(Serialize)]
struct BootUsage {
    stack_size: u64,
    tasks: u64,
    /// Tenths of the stack: [0, 10) %, ..., [90, 100] %.
    histogram: Vec<Bucket>,
    deepest: Option<Deepest>,
    near_misses: usize,
}

#[derive(Serialize)]
struct Bucket {
    from_percent: u64,
    to_percent: u64,
    tasks: u64,
}

#[derive(Serialize)]
struct Deepest {
    scenario: &'static str,
    task_id: u64,
    used: u64,
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
    /// How deep the stack of every task that exited during the scenario
    /// went, and its near misses (`report/usage.rs`); absent when the
    /// guest told nothing (a scenario that stopped the machine).
    #[serde(skip_serializing_if = "Option::is_none")]
    stack_usage: Option<StackUsage<'a>>,
    /// The usage scenarios only: the verdict on their records.
    #[serde(skip_serializing_if = "Option::is_none")]
    near_miss: Option<NearMissVerdict<'a>>,
}

#[derive(Serialize)]
struct StackUsage<'a> {
    stack_size: u64,
    /// Task id (as a string, JSON's keys are) to the bytes of its stack it
    /// used: its high-water mark.
    tasks: Tasks<'a>,
    /// The records account for every exit the guest counted.
    complete: bool,
    /// Exits the guest could not record (its heap was exhausted).
    dropped: u64,
    near_misses: Vec<NearMiss<'a>>,
}

/// `(id, used)` pairs as one JSON object, a line each when pretty.
struct Tasks<'a>(&'a [(u64, u64)]);

impl Serialize for Tasks<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (id, used) in self.0 {
            map.serialize_entry(&id.to_string(), used)?;
        }
        map.end()
    }
}

#[derive(Serialize)]
struct NearMiss<'a> {
    task_id: u64,
    task_name: &'a str,
    cpu: u32,
    lo: String,
    hi: String,
    used: u64,
    used_percent: u64,
    threshold_percent: u64,
    /// The function the deepest chain begins in, by the ELF.
    deepest: Option<&'a str>,
    /// Innermost first.
    chain: Vec<ChainEntry<'a>>,
    truncated: bool,
}

#[derive(Serialize)]
struct ChainEntry<'a> {
    at: String,
    addr: String,
    /// Records in a row that return to `addr` (a recursion, folded).
    repeat: u32,
    function: Option<&'a str>,
    guest_name: Option<&'a str>,
}

#[derive(Serialize)]
struct NearMissVerdict<'a> {
    /// usage-good or usage-wrong.
    verdict: &'static str,
    as_expected: bool,
    summary: String,
    failed_checks: &'a [crate::report::Failure],
    /// NEAR-MISS records for the scenario's task.
    reported: usize,
    task_id: Option<u64>,
    used: Option<u64>,
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

fn near_miss(n: &usage::NearMissReport) -> NearMiss<'_> {
    NearMiss {
        task_id: n.task_id,
        task_name: &n.task_name,
        cpu: n.cpu,
        lo: format!("{:#x}", n.lo),
        hi: format!("{:#x}", n.hi),
        used: n.used,
        used_percent: usage::percent(n.used, n.size()),
        threshold_percent: n.threshold_percent,
        deepest: n.deepest(),
        chain: n
            .chain
            .iter()
            .map(|c| ChainEntry {
                at: format!("{:#x}", c.at),
                addr: format!("{:#x}", c.addr),
                repeat: c.repeat,
                function: c.function.as_deref(),
                guest_name: c.guest_name.as_deref(),
            })
            .collect(),
        truncated: n.truncated,
    }
}

fn boot_usage(record: &BootRecord) -> BootUsage {
    let h = usage::histogram(
        record
            .results
            .iter()
            .filter_map(|r| Some((r.scenario.name, r.usage.as_ref()?))),
    );
    BootUsage {
        stack_size: h.stack_size,
        tasks: h.tasks,
        histogram: h
            .buckets
            .iter()
            .enumerate()
            .map(|(i, &tasks)| Bucket {
                from_percent: 10 * i as u64,
                to_percent: 10 * (i as u64 + 1),
                tasks,
            })
            .collect(),
        deepest: h.deepest.map(|(scenario, task_id, used)| Deepest {
            scenario,
            task_id,
            used,
        }),
        near_misses: h.near_misses,
    }
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
                stack_usage: r.usage.as_ref().map(|u| StackUsage {
                    stack_size: u.stack_size,
                    tasks: Tasks(&u.tasks),
                    complete: u.complete(),
                    dropped: u.dropped,
                    near_misses: u.near_misses.iter().map(near_miss).collect(),
                }),
                near_miss: r.usage_verdict.as_ref().map(|v| NearMissVerdict {
                    verdict: v.category_str(),
                    as_expected: v.as_expected(),
                    summary: v.describe(),
                    failed_checks: &v.failures,
                    reported: v.reported,
                    task_id: v.task,
                    used: v.used,
                }),
            })
            .collect(),
        stack_usage: boot_usage(record),
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

    /// Every task's figure, the near miss with its chain, the verdict and
    /// the boot's histogram, in a document the schema holds.
    #[test]
    fn stack_usage_is_in_the_document_and_the_schema_holds_it() {
        let record = crate::output::summary::tests::usage_record();
        let dir = std::env::temp_dir().join(format!("runner-json-usage-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("results.json");
        let artifacts = crate::workspace::Artifacts {
            guest: "/t/guest".into(),
            loader: "/t/loader".into(),
        };
        super::write(
            &path,
            crate::record::Mode::Test,
            (&dir, &artifacts),
            &[record],
            &[],
            1,
        )
        .unwrap();
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let schema: serde_json::Value = serde_json::from_str(SCHEMA).unwrap();
        let validator = jsonschema::draft202012::new(&schema).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&doc)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{errors:#?}");
        let boot = &doc["boots"][0];
        let near = &boot["results"][0];
        assert_eq!(near["stack_usage"]["tasks"]["4"], 15584);
        let miss = &near["stack_usage"]["near_misses"][0];
        assert_eq!(miss["used_percent"], 95);
        assert_eq!(miss["chain"][0]["at"], "0xffffc900000253b0");
        assert_eq!(miss["chain"][0]["repeat"], 60);
        assert_eq!(
            miss["deepest"],
            "guest::scenarios::usage::near_miss_recurse"
        );
        // Without the ELF the chain is not the runner's to name: failed.
        assert_eq!(
            near["near_miss"]["failed_checks"][0]["check"],
            "deepest-chain"
        );
        assert_eq!(boot["results"][1]["near_miss"]["as_expected"], true);
        let usage = &boot["stack_usage"];
        assert_eq!(usage["tasks"], 2);
        assert_eq!(usage["histogram"][5]["tasks"], 1);
        assert_eq!(usage["histogram"][9]["tasks"], 1);
        assert_eq!(usage["deepest"]["task_id"], 4);
        assert_eq!(usage["near_misses"], 1);
    }
}
