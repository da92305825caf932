//! One `run` or `test`: build, boot each planned boot in turn, judge, report.

use crate::boot::console;
use crate::boot::media::{self, Media};
use crate::boot::process::{self, Ended};
use crate::boot::qemu::{self, Invocation};
use crate::cli::{BootPath, Options};
use crate::compare;
use crate::fatal::Fatal;
use crate::output::{json, junit, summary};
use crate::report::classify::{classify, Evidence, Verdict};
use crate::report::judge::{scenario_results, ScenarioResult};
use crate::select::{self, Boot};
use crate::symbols::Symbols;
use crate::workspace::{self, Artifacts};
use crate::{report, status};
use abi::Outcome;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Report what happened.
    Run,
    /// Report whether each scenario did what it should (negative controls fail on purpose).
    Test,
}

pub struct BootRecord {
    pub boot: Boot,
    pub invocation: Invocation,
    pub exit_status: Option<i32>,
    pub duration: Duration,
    pub serial_log: PathBuf,
    pub verdict: Verdict,
    pub results: Vec<ScenarioResult>,
}

/// Boots the plan wanted but this machine cannot do (no Limine here), each
/// reported as SKIP with the reason.
pub struct Skipped {
    pub path: BootPath,
    pub scenarios: Vec<&'static abi::Scenario>,
    pub smp: u32,
    pub reason: String,
}

/// What `runner test` boots through real Limine besides the default run:
/// the boot scenarios, on each Limine path, at each of their CPU counts.
pub const LIMINE_TEST_SCENARIOS: [&str; 2] = ["boot.smoke", CONFORMANCE];

/// Add the Limine boots of a test run, or, where this machine cannot boot
/// a path, say why they are skipped.
pub fn add_limine_boots(boots: &mut Vec<Boot>, options: &Options) -> Vec<Skipped> {
    let wanted: Vec<(&'static abi::Scenario, u32)> = LIMINE_TEST_SCENARIOS
        .iter()
        .filter_map(|name| abi::scenario::find(name))
        .flat_map(|s| match options.smp {
            Some(smp) => vec![(s, smp)],
            None => s.test_smp.iter().map(|&n| (s, n)).collect(),
        })
        .collect();
    let mut skipped = Vec::new();
    for path in [BootPath::LimineBios, BootPath::LimineUefi] {
        match media::check(path) {
            Ok(()) => boots.extend(select::boots_on(path, &wanted)),
            Err(reason) => {
                for boot in select::boots_on(path, &wanted) {
                    skipped.push(Skipped {
                        path,
                        scenarios: boot.scenarios,
                        smp: boot.smp,
                        reason: reason.clone(),
                    });
                }
            }
        }
    }
    skipped
}

/// Everything a boot needs besides its own plan.
pub struct Setup {
    pub qemu: PathBuf,
    pub artifacts: Artifacts,
    pub run_dir: PathBuf,
    pub media: Media,
    /// The guest ELF's symbols and DWARF, for the stack verdicts (`None`
    /// if it cannot be read: the backtrace checks then fail, saying why).
    pub symbols: Option<Symbols>,
}

/// QEMU and the boot paths' tools first: they are the checks that need no build.
pub fn setup(options: &Options, paths: &[BootPath]) -> Result<Setup, Fatal> {
    let qemu = qemu::program()?;
    let media = Media::find(paths)?;
    let artifacts = if options.no_build {
        workspace::prebuilt()?
    } else {
        workspace::build()?
    };
    let run_dir = create_run_dir()?;
    let symbols = Symbols::load(&artifacts.guest)
        .map_err(|e| eprintln!("runner: warning: no symbols for the verdicts: {e}"))
        .ok();
    Ok(Setup {
        qemu,
        artifacts,
        run_dir,
        media,
        symbols,
    })
}

/// `runs/<seconds>-<pid>`: concurrent runners never share a directory.
fn create_run_dir() -> Result<PathBuf, Fatal> {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let dir = workspace::target_dir().join("runs").join(format!(
        "{}-{}",
        since_epoch.as_secs(),
        std::process::id()
    ));
    std::fs::create_dir_all(&dir)
        .map_err(|e| Fatal::setup(format!("cannot create {}: {e}", dir.display())))?;
    Ok(dir)
}

pub fn execute(
    mode: Mode,
    boots: Vec<Boot>,
    skipped: Vec<Skipped>,
    options: &Options,
) -> Result<i32, Fatal> {
    let mut paths: Vec<BootPath> = boots.iter().map(|b| b.path).collect();
    paths.dedup();
    let setup = setup(options, &paths)?;
    let records = boot_all(mode, &setup, boots, options)?;
    for skip in &skipped {
        eprintln!(
            "runner: skip {} via {}: {}",
            skip.scenarios
                .iter()
                .map(|s| s.name)
                .collect::<Vec<_>>()
                .join(", "),
            skip.path.as_str(),
            skip.reason
        );
    }
    let mut code = exit_status(mode, &records);
    summary::print(mode, &records, &skipped);
    if mode == Mode::Test && !conformance(&records) {
        code = code.max(status::TEST_FAILURE);
    }
    if let Some(path) = &options.json {
        json::write(path, mode, &setup.run_dir, &records, &skipped, code)?;
    }
    if let Some(path) = &options.junit {
        junit::write(path, mode, &records, &skipped)?;
    }
    Ok(code)
}

/// Boot each planned boot in turn, saying what is going on.
pub fn boot_all(
    mode: Mode,
    setup: &Setup,
    boots: Vec<Boot>,
    options: &Options,
) -> Result<Vec<BootRecord>, Fatal> {
    let total = boots.len();
    let mut records = Vec::with_capacity(total);
    for (i, boot) in boots.into_iter().enumerate() {
        let via = match boot.path {
            BootPath::Direct => String::new(),
            other => format!(" via {}", other.as_str()),
        };
        eprintln!(
            "runner: boot {}/{total} {}{via}: {}",
            i + 1,
            boot.name,
            boot.names().join(", ")
        );
        let record = boot_once(mode, setup, boot, options)?;
        eprintln!(
            "runner:   {} in {:.2}s",
            record.verdict.outcome.as_str(),
            record.duration.as_secs_f64()
        );
        records.push(record);
    }
    Ok(records)
}

pub const CONFORMANCE: &str = "boot.conformance";

/// The boot facts `boot.conformance` reported, one column per boot path,
/// for each CPU count it ran at.
pub fn conformance_columns(records: &[BootRecord]) -> Vec<(u32, Vec<compare::Column>)> {
    let mut groups: Vec<(u32, Vec<compare::Column>)> = Vec::new();
    for record in records {
        let Some(result) = record
            .results
            .iter()
            .find(|r| r.scenario.name == CONFORMANCE && r.outcome == Outcome::Pass)
        else {
            continue;
        };
        let column = compare::Column {
            label: record.boot.path.as_str().to_string(),
            facts: compare::parse(&result.diagnostics),
        };
        match groups.iter_mut().find(|(smp, _)| *smp == record.boot.smp) {
            Some((_, columns)) => columns.push(column),
            None => groups.push((record.boot.smp, vec![column])),
        }
    }
    groups
}

/// After a test run: hold the paths' boot facts against each other and the
/// protocol; one line per CPU count (and each flag). False if anything is flagged.
fn conformance(records: &[BootRecord]) -> bool {
    let mut clean = true;
    for (smp, columns) in conformance_columns(records) {
        let flags = compare::judge(&columns);
        let labels: Vec<&str> = columns.iter().map(|c| c.label.as_str()).collect();
        if flags.is_empty() && labels.len() == 1 {
            println!(
                "conformance smp={smp}: {}: no boot fact the protocol rules out",
                labels[0]
            );
        } else if flags.is_empty() {
            println!(
                "conformance smp={smp}: {} agree on every boot fact the protocol fixes",
                labels.join(", "),
            );
        } else {
            clean = false;
            println!(
                "conformance smp={smp}: FAIL: {} flag(s) across {} (details: `runner compare-boot`)",
                flags.len(),
                labels.join(", ")
            );
            for flag in flags {
                println!("    {flag}");
            }
        }
    }
    clean
}

/// A negative control built to hang proves its point in a few seconds; `test`
/// need not wait the full deadline a real scenario gets.
const HANG_DEADLINE: Duration = Duration::from_secs(5);

fn deadline(mode: Mode, boot: &Boot, options: &Options) -> Duration {
    let full = Duration::from_secs(options.timeout_secs());
    let all_hang = boot.scenarios.iter().all(|s| s.expect == Outcome::Timeout);
    let guest = if mode == Mode::Test && all_hang {
        full.min(HANG_DEADLINE)
    } else {
        full
    };
    guest + boot.path.firmware_allowance()
}

pub fn boot_once(
    mode: Mode,
    setup: &Setup,
    boot: Boot,
    options: &Options,
) -> Result<BootRecord, Fatal> {
    let names = boot.names();
    let media = setup.media.prepare(
        boot.path,
        &setup.artifacts.guest,
        &qemu::guest_cmdline(&names, boot.smp, &options.guest_args()),
        &setup.run_dir,
        &boot.name,
    )?;
    let invocation = qemu::invocation(
        &setup.qemu,
        &qemu::Boot {
            path: boot.path,
            loader: &setup.artifacts.loader,
            guest: Some(&setup.artifacts.guest),
            iso: media.iso.as_deref(),
            firmware: media
                .firmware
                .as_ref()
                .map(|(code, vars)| (code.as_path(), vars.as_path())),
            scenarios: &names,
            smp: boot.smp,
            accel: options.accel,
            cmdline_extra: &options.guest_args(),
        },
    );
    let serial_log = setup.run_dir.join(format!("{}.serial", boot.name));
    let timeout = deadline(mode, &boot, options);
    let (capture, verdict) = launch(
        &invocation,
        &boot.name,
        &serial_log,
        &names,
        timeout,
        options,
    );
    let mut results = scenario_results(&boot.scenarios, &verdict);
    report::attach(
        &mut results,
        &String::from_utf8_lossy(&capture.serial),
        boot.smp,
        setup.symbols.as_ref(),
    );
    Ok(BootRecord {
        exit_status: match capture.ended {
            Ended::Exited(code) => Some(code),
            _ => None,
        },
        duration: capture.duration,
        boot,
        invocation,
        serial_log,
        verdict,
        results,
    })
}

/// Boot one invocation and classify it; shared with the bench.
pub fn launch(
    invocation: &Invocation,
    name: &str,
    serial_log: &Path,
    requested: &[&str],
    timeout: Duration,
    options: &Options,
) -> (process::Capture, Verdict) {
    if options.print_qemu {
        println!("$ {}", invocation.shell_line());
    }
    let prefix = format!("[{name}]");
    let mut capture = process::run_captured(
        invocation.command(),
        timeout,
        serial_log,
        options.verbose.then_some(prefix.as_str()),
    );
    capture.serial = console::plain(&capture.serial);
    let serial = String::from_utf8_lossy(&capture.serial);
    let verdict = classify(&Evidence {
        ended: &capture.ended,
        serial: &serial,
        stderr: &capture.stderr,
        requested,
    });
    (capture, verdict)
}

/// The worst thing that happened, as one status (see `status::HELP`).
pub fn exit_status(mode: Mode, records: &[BootRecord]) -> i32 {
    records
        .iter()
        .flat_map(|r| &r.results)
        .map(|r| match mode {
            // An `ok` whose fault was not caught, or not told well, still fails.
            Mode::Run if !r.fault_as_expected() => {
                status::for_outcome(r.outcome).max(status::TEST_FAILURE)
            }
            // A stack scenario that is meant to stop the machine (an IRQ-stack
            // overflow, a #DF-stack overflow) did what it is for.
            Mode::Run if r.provokes_fault() && r.as_expected() => status::OK,
            Mode::Run => status::for_outcome(r.outcome),
            Mode::Test if r.as_expected() => status::OK,
            Mode::Test if r.outcome == Outcome::Pass => status::TEST_FAILURE,
            Mode::Test => status::for_outcome(r.outcome),
        })
        .max()
        .unwrap_or(status::OK)
}
