//! One `run` or `test`: build, boot each planned boot in turn, judge, report.

use crate::boot::console;
use crate::boot::media::Media;
use crate::boot::process::{self, Ended};
use crate::boot::qemu::{self, Invocation};
use crate::cli::{BootPath, Options};
use crate::fatal::Fatal;
use crate::output::{github, json, junit, ktap, summary};
use crate::record::{BootRecord, Mode, Skipped};
use crate::report::classify::{classify, Evidence, Verdict};
use crate::report::compare;
use crate::report::judge::scenario_results;
use crate::select::Boot;
use crate::symbols::Symbols;
use crate::workspace::{self, Artifacts};
use crate::{report, status};
use abi::Outcome;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything a boot needs besides its own plan.
pub struct Setup {
    pub qemu: PathBuf,
    /// The run's own copies of the images (`run_dir/images`).
    pub artifacts: Artifacts,
    pub run_dir: PathBuf,
    pub media: Media,
    /// The guest ELF's symbols and DWARF, for the stack verdicts (`None`
    /// if it cannot be read: the backtrace checks then fail, saying why).
    pub symbols: Option<Symbols>,
}

impl Setup {
    /// The QEMU invocation of one boot of this run's images on `path`,
    /// with its boot media made (an ISO and OVMF variables for the Limine
    /// paths): the one place a boot's command line is put together.
    /// `with_guest: false` boots the loader alone (the bench's baseline).
    pub fn invocation(
        &self,
        options: &Options,
        path: BootPath,
        name: &str,
        scenarios: &[&str],
        smp: u32,
        with_guest: bool,
    ) -> Result<Invocation, Fatal> {
        let extra = options.guest_args();
        let image = self.artifacts.image();
        let media = self.media.prepare(
            path,
            &image,
            &qemu::guest_cmdline(scenarios, smp, &extra),
            &self.run_dir,
            name,
        )?;
        Ok(qemu::invocation(
            &self.qemu,
            &qemu::Boot {
                path,
                loader: &self.artifacts.loader,
                guest: with_guest.then_some(image.as_path()),
                iso: media.iso.as_deref(),
                firmware: media
                    .firmware
                    .as_ref()
                    .map(|(code, vars)| (code.as_path(), vars.as_path())),
                scenarios,
                smp,
                accel: options.accel,
                cmdline_extra: &extra,
                gdb: options.gdb_port,
            },
        ))
    }
}

/// QEMU and the boot paths' tools first: they are the checks that need no build.
pub fn setup(options: &Options, paths: &[BootPath]) -> Result<Setup, Fatal> {
    let qemu = qemu::program()?;
    let mut media = Media::find(paths)?;
    let built = if options.no_build {
        workspace::prebuilt(options.defect)?
    } else {
        workspace::build(options.defect)?
    };
    let run_dir = create_run_dir()?;
    // The run boots its own copies, and reads the symbols from the same.
    let images = run_dir.join("images");
    let artifacts = workspace::pin(&built, &images)?;
    media.pin(&images.join("limine"))?;
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

/// `runs/<seconds>-<pid>`: concurrent runners never share a directory. A
/// runner that sets up more than once (`mutants`: the normal guest, then
/// each defect's) adds `-N` to all but its first, so two set-ups in one
/// second never share one either: the second would link its guest over
/// the first's.
fn create_run_dir() -> Result<PathBuf, Fatal> {
    static SETUPS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut name = format!("{}-{}", since_epoch.as_secs(), std::process::id());
    match SETUPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) {
        0 => {}
        n => name += &format!("-{n}"),
    }
    let dir = workspace::target_dir().join("runs").join(name);
    std::fs::create_dir_all(&dir)
        .map_err(|e| Fatal::setup(format!("cannot create {}: {e}", dir.display())))?;
    if let Some(runs) = dir.parent() {
        prune_images(runs, KEEP_IMAGES, IMAGES_IDLE);
    }
    Ok(dir)
}

/// Runs whose images are kept: each holds a guest (a hard link, but one
/// that keeps every rebuilt guest alive) and a loader.
const KEEP_IMAGES: usize = 16;
/// A run directory this old is done with its images (no boot lasts this
/// long), so a concurrent runner's are never taken away from it.
const IMAGES_IDLE: Duration = Duration::from_secs(3600);

/// Drop the `images/` of all but the newest `keep` runs, among those idle
/// for `idle`; their serial logs stay (best effort).
fn prune_images(runs: &Path, keep: usize, idle: Duration) {
    let Ok(entries) = std::fs::read_dir(runs) else {
        return;
    };
    let mut dirs: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("images").is_dir())
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .collect();
    dirs.sort();
    let old = dirs.len().saturating_sub(keep);
    for (modified, dir) in &dirs[..old] {
        if modified.elapsed().is_ok_and(|age| age >= idle) {
            let _ = std::fs::remove_dir_all(dir.join("images"));
        }
    }
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
    execute_with(mode, &setup, boots, skipped, options)
}

/// `execute` once the images are built and pinned (`run --gdb` needs their
/// paths before the boot).
pub fn execute_with(
    mode: Mode,
    setup: &Setup,
    boots: Vec<Boot>,
    skipped: Vec<Skipped>,
    options: &Options,
) -> Result<i32, Fatal> {
    // A setup step that fails midway (an ISO that cannot be built) ends the
    // run, but the boots before it are still reported.
    // `--verbose` prints the run's KTAP document as it goes, each boot's
    // piece after its echoed serial lines, so that the log itself is one
    // document `kunit.py parse` reads whole (the boots' own KTAP, behind
    // their `[NAME]` prefix, is diagnostics to it).
    let live_ktap = options.verbose;
    if live_ktap {
        println!("{}", ktap::header(boots.len() + skipped.len()).trim_end());
    }
    let (records, stopped) = boot_each(mode, setup, boots, options, live_ktap);
    if live_ktap {
        for (i, skip) in skipped.iter().enumerate() {
            println!(
                "{}",
                ktap::skipped_boot(records.len() + i + 1, skip).trim_end()
            );
        }
    }
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
    let (clean, conformance) = match mode {
        Mode::Test => conformance(&records),
        Mode::Run => (true, Vec::new()),
    };
    if !clean {
        code = code.max(status::TEST_FAILURE);
    }
    let mut errors: Vec<Fatal> = stopped.into_iter().collect();
    if let Some(fatal) = errors.first() {
        code = code.max(fatal.status);
    }
    // The files first: the console may be a pipe that is already closed.
    if let Some(path) = &options.json {
        let written = json::write(
            path,
            mode,
            (&setup.run_dir, &setup.artifacts),
            &records,
            &skipped,
            code,
        );
        errors.extend(written.err());
    }
    if let Some(path) = &options.junit {
        errors.extend(junit::write(path, mode, &records, &skipped).err());
    }
    if let Some(path) = &options.ktap {
        errors.extend(ktap::write(path, mode, &records, &skipped).err());
    }
    if let Some(path) = &options.github_summary {
        errors.extend(github::write_summary(path, mode, &records, &skipped).err());
    }
    summary::print(mode, &records, &skipped);
    if options.github_annotations {
        for line in github::annotations(mode, &records) {
            println!("{line}");
        }
    }
    for line in conformance {
        println!("{line}");
    }
    for fatal in &errors {
        eprintln!("runner: error: {fatal}");
        code = code.max(fatal.status);
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
    match boot_each(mode, setup, boots, options, false) {
        (records, None) => Ok(records),
        (_, Some(fatal)) => Err(fatal),
    }
}

/// `boot_all`, keeping the records made before a boot could not be set up.
/// Up to `--jobs` vCPUs' worth of boots run at once (`boot::pool`); each is
/// reported, in the plan's order, once it and those before it are done.
/// With `live_ktap`, each boot's piece of the KTAP document is printed
/// as soon as it is judged.
fn boot_each(
    mode: Mode,
    setup: &Setup,
    boots: Vec<Boot>,
    options: &Options,
    live_ktap: bool,
) -> (Vec<BootRecord>, Option<Fatal>) {
    let total = boots.len();
    let mut planned = Vec::with_capacity(total);
    let mut stopped = None;
    // The boot media first, in order: a path that cannot be set up ends
    // the plan there, as it would have one boot after another.
    for boot in boots.into_iter().enumerate() {
        match prepare(mode, setup, boot, options) {
            Ok(p) => planned.push((p.boot.smp, p)),
            Err(fatal) => {
                stopped = Some(fatal);
                break;
            }
        }
    }
    let mut records = Vec::with_capacity(planned.len());
    let announce = |i: usize, boot: &Boot| {
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
    };
    let run = |p: Prepared| {
        let launched = launch(
            &p.invocation,
            &p.boot.name,
            &p.serial_log,
            &p.boot.names(),
            p.timeout,
            options,
        );
        (p, launched)
    };
    let mut report = |(p, (capture, verdict)): (Prepared, _)| {
        let number = p.index + 1;
        let record = judge(setup, p, capture, verdict, options);
        eprintln!(
            "runner:   {} in {:.2}s",
            record.verdict.outcome.as_str(),
            record.duration.as_secs_f64()
        );
        if record.cut_lines > 0 {
            eprintln!(
                "runner:   {} serial line(s) longer than {} bytes were cut (--line-limit)",
                record.cut_lines, options.line_limit
            );
        }
        if live_ktap {
            println!("{}", ktap::boot(number, mode, &record).trim_end());
        }
        records.push(record);
    };
    if options.jobs() == 1 {
        // One after another, each announced as it starts.
        for (_, p) in planned {
            announce(p.index, &p.boot);
            report(run(p));
        }
    } else {
        crate::boot::pool::run_in_order(planned, options.jobs(), run, |i, done| {
            announce(i, &done.0.boot);
            report(done);
        });
    }
    (records, stopped)
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
fn conformance(records: &[BootRecord]) -> (bool, Vec<String>) {
    let mut clean = true;
    let mut lines = Vec::new();
    for (smp, columns) in conformance_columns(records) {
        let flags = compare::judge(&columns);
        let labels: Vec<&str> = columns.iter().map(|c| c.label.as_str()).collect();
        if flags.is_empty() && labels.len() == 1 {
            lines.push(format!(
                "conformance smp={smp}: {}: no boot fact the protocol rules out",
                labels[0]
            ));
        } else if flags.is_empty() {
            lines.push(format!(
                "conformance smp={smp}: {} agree on every boot fact the protocol fixes",
                labels.join(", "),
            ));
        } else {
            clean = false;
            lines.push(format!(
                "conformance smp={smp}: FAIL: {} flag(s) across {} (details: `runner compare-boot`)",
                flags.len(),
                labels.join(", ")
            ));
            lines.extend(flags.iter().map(|flag| format!("    {flag}")));
        }
    }
    (clean, lines)
}

/// A negative control built to hang proves its point in a few seconds; `test`
/// need not wait the full deadline a real scenario gets.
const HANG_DEADLINE: Duration = Duration::from_secs(5);

fn deadline(mode: Mode, boot: &Boot, options: &Options) -> Duration {
    // Held by a debugger, a boot takes as long as the person at it.
    if options.gdb_port.is_some() {
        return Duration::MAX;
    }
    let full = Duration::from_secs(options.timeout_secs());
    let all_hang = boot.scenarios.iter().all(|s| s.expect == Outcome::Timeout);
    let guest = if mode == Mode::Test && all_hang {
        full.min(HANG_DEADLINE)
    } else {
        full
    };
    guest.saturating_add(boot.path.firmware_allowance())
}

/// One boot, ready to launch: its QEMU invocation (boot media made), where
/// its serial output goes, and its deadline.
struct Prepared {
    index: usize,
    boot: Boot,
    invocation: Invocation,
    serial_log: PathBuf,
    timeout: Duration,
}

fn prepare(
    mode: Mode,
    setup: &Setup,
    (index, boot): (usize, Boot),
    options: &Options,
) -> Result<Prepared, Fatal> {
    let names = boot.names();
    let invocation = setup.invocation(options, boot.path, &boot.name, &names, boot.smp, true)?;
    Ok(Prepared {
        index,
        serial_log: setup.run_dir.join(format!("{}.serial", boot.name)),
        timeout: deadline(mode, &boot, options),
        invocation,
        boot,
    })
}

/// What the boot's output says of each of its scenarios.
fn judge(
    setup: &Setup,
    p: Prepared,
    capture: process::Capture,
    verdict: Verdict,
    options: &Options,
) -> BootRecord {
    let Prepared {
        boot,
        invocation,
        serial_log,
        ..
    } = p;
    let mut results = scenario_results(&boot.scenarios, &verdict);
    let serial = String::from_utf8_lossy(&capture.serial);
    report::attach(&mut results, &serial, boot.smp, setup.symbols.as_ref());
    report::evidence::check(
        &mut results,
        &serial,
        &verdict.report,
        boot.smp,
        &options.requested(),
    );
    BootRecord {
        exit_status: match capture.ended {
            Ended::Exited(code) => Some(code),
            _ => None,
        },
        duration: capture.duration,
        cut_lines: capture.cut_lines,
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
    let mut capture = process::run_captured(
        invocation.command(),
        timeout,
        serial_log,
        options.verbose.then_some(prefix.as_str()),
        options.limits(),
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

/// The worst thing that happened, as one status (see `status::HELP`): each
/// result's status follows the mark the summary gives it.
pub fn exit_status(mode: Mode, records: &[BootRecord]) -> i32 {
    records
        .iter()
        .flat_map(|r| &r.results)
        .map(|r| status::for_result(mode, r))
        .max()
        .unwrap_or(status::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_runs_lose_their_images_and_keep_their_logs() {
        let runs = std::env::temp_dir().join(format!("runner-prune-images-{}", std::process::id()));
        for i in 0..4 {
            let run = runs.join(format!("{i}"));
            std::fs::create_dir_all(run.join("images")).unwrap();
            std::fs::write(run.join("a.serial"), b"").unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        // Not idle yet: nothing goes.
        prune_images(&runs, 2, Duration::from_secs(3600));
        assert!(runs.join("0/images").is_dir());
        prune_images(&runs, 2, Duration::ZERO);
        for (i, kept) in [(0, false), (1, false), (2, true), (3, true)] {
            assert_eq!(runs.join(format!("{i}/images")).is_dir(), kept, "run {i}");
            assert!(runs.join(format!("{i}/a.serial")).is_file());
        }
        let _ = std::fs::remove_dir_all(&runs);
    }
}
