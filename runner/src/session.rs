//! One `run` or `test`: build, boot each planned boot in turn, judge, report.

use crate::classify::{classify, Evidence, Verdict};
use crate::cli::Options;
use crate::fatal::Fatal;
use crate::judge::{scenario_results, ScenarioResult};
use crate::process::{self, Ended};
use crate::qemu::{self, Invocation};
use crate::select::Boot;
use crate::workspace::{self, Artifacts};
use crate::{json, status, summary};
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

/// Everything a boot needs besides its own plan.
pub struct Setup {
    pub qemu: PathBuf,
    pub artifacts: Artifacts,
    pub run_dir: PathBuf,
}

/// QEMU first: it is the check that needs no build.
pub fn setup(options: &Options) -> Result<Setup, Fatal> {
    let qemu = qemu::program()?;
    let artifacts = if options.no_build {
        workspace::prebuilt()?
    } else {
        workspace::build()?
    };
    let run_dir = create_run_dir()?;
    Ok(Setup {
        qemu,
        artifacts,
        run_dir,
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

pub fn execute(mode: Mode, boots: Vec<Boot>, options: &Options) -> Result<i32, Fatal> {
    let setup = setup(options)?;
    let total = boots.len();
    let mut records = Vec::with_capacity(total);
    for (i, boot) in boots.into_iter().enumerate() {
        eprintln!(
            "runner: boot {}/{total} {}: {}",
            i + 1,
            boot.name,
            boot.names().join(", ")
        );
        let record = boot_once(mode, &setup, boot, options);
        eprintln!(
            "runner:   {} in {:.2}s",
            record.verdict.outcome.as_str(),
            record.duration.as_secs_f64()
        );
        records.push(record);
    }
    let code = exit_status(mode, &records);
    summary::print(mode, &records);
    if let Some(path) = &options.json {
        json::write(path, mode, &setup.run_dir, &records, code)?;
    }
    Ok(code)
}

/// A negative control built to hang proves its point in a few seconds; `test`
/// need not wait the full deadline a real scenario gets.
const HANG_DEADLINE: Duration = Duration::from_secs(5);

fn deadline(mode: Mode, boot: &Boot, options: &Options) -> Duration {
    let full = Duration::from_secs(options.timeout);
    let all_hang = boot.scenarios.iter().all(|s| s.expect == Outcome::Timeout);
    if mode == Mode::Test && all_hang {
        full.min(HANG_DEADLINE)
    } else {
        full
    }
}

pub fn boot_once(mode: Mode, setup: &Setup, boot: Boot, options: &Options) -> BootRecord {
    let names = boot.names();
    let invocation = qemu::invocation(
        &setup.qemu,
        &qemu::Boot {
            path: options.boot,
            loader: &setup.artifacts.loader,
            guest: Some(&setup.artifacts.guest),
            scenarios: &names,
            smp: boot.smp,
            accel: options.accel,
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
    let results = scenario_results(&boot.scenarios, &verdict);
    BootRecord {
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
    }
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
    let capture = process::run_captured(
        invocation.command(),
        timeout,
        serial_log,
        options.verbose.then_some(prefix.as_str()),
    );
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
            Mode::Run => status::for_outcome(r.outcome),
            Mode::Test if r.as_expected() => status::OK,
            Mode::Test if r.outcome == Outcome::Pass => status::TEST_FAILURE,
            Mode::Test => status::for_outcome(r.outcome),
        })
        .max()
        .unwrap_or(status::OK)
}
