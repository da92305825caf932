//! `bench`: what a boot of the testbed costs next to the cheapest boot QEMU
//! can do (the direct path's loader alone), so a regression in either shows
//! as a ratio; then the same boot through real Limine, BIOS and UEFI, where
//! this machine has Limine. Each figure is whole-process wall time of QEMU,
//! boot to exit. Then the stack suite's wall time and the `bench.*`
//! scenarios' cost tables; all of it also lands in `<target>/bench/`
//! (`report`).

mod report;
mod rows;
mod suite;
mod svg;
mod timeline;

use self::report::{Costs, PathTimes, Report, StackSuite, Times};
use crate::boot::media;
use crate::cli::{BootPath, Options};
use crate::fatal::Fatal;
use crate::report::classify::Verdict;
use crate::session::{self, Setup};
use crate::status;
use crate::workspace;
use abi::kinds::BenchFamily;
use abi::Outcome;
use std::path::PathBuf;
use std::time::Duration;

pub const SCENARIO: &str = "boot.smoke";
const SPAWN: &str = "bench.spawn";
const FORK_HEAVY: &str = "bench.fork_heavy";
/// Without `--smp`: enough CPUs for stacks to come back in bursts, one
/// grace period ending for many tasks at once, which one CPU never does.
const FORK_HEAVY_SMP: u32 = 4;

pub fn execute(runs: u32, options: &Options) -> Result<i32, Fatal> {
    let accel = format!("{:?}", options.accel).to_lowercase();
    let mut report = Report::new(accel, options.smp.unwrap_or(1), runs);
    let measured = measure_all(runs, options, &mut report);
    report.complete = measured.is_ok();
    report.error = measured.as_ref().err().map(|f| f.message.clone());
    let written = write_report(&report);
    match measured {
        Err(fatal) => {
            if let Err(unwritten) = written {
                eprintln!("runner: warning: {unwritten}");
            }
            Err(fatal)
        }
        Ok(()) => written.map(|()| status::OK),
    }
}

/// Every step in order, each adding what it measured to `report`, so a
/// failing step still leaves the earlier figures to write.
fn measure_all(runs: u32, options: &Options, report: &mut Report) -> Result<(), Fatal> {
    let mut paths = vec![BootPath::Direct];
    for path in [BootPath::LimineBios, BootPath::LimineUefi] {
        match media::check(path) {
            Ok(()) => paths.push(path),
            Err(why) => report
                .boot
                .not_measured
                .push(format!("{}: not measured: {why}", path.as_str())),
        }
    }
    let setup = session::setup(options, &paths)?;
    report.run_dir = Some(setup.run_dir.clone());
    boot_times(&setup, options, runs, &paths, report)?;
    report.stack_suite = Some(stack_suite(&setup, options)?);
    report.test_suite = Some(suite::measure(&setup, options)?);
    report.spawn = Some(spawn_costs(&setup, options)?);
    report.fork_heavy = Some(fork_heavy_costs(&setup, options)?);
    Ok(())
}

/// Written whatever happened, but only once something booted: an empty
/// report would just overwrite the last useful one.
fn write_report(report: &Report) -> Result<(), Fatal> {
    if report.is_empty() {
        return Ok(());
    }
    let dir = workspace::target_dir().join("bench");
    let (json, svg) = report::write(report, &dir).map_err(Fatal::setup)?;
    let partial = if report.complete {
        ""
    } else {
        " (partial: the steps before the error)"
    };
    println!("report: {}{partial}", json.display());
    println!("chart:  {}{partial}", svg.display());
    Ok(())
}

/// `boot.smoke` against the loader alone (runs taking turns, so a slow
/// stretch of the host falls on both alike), then through Limine where it
/// can; then where each path's boot time went, stage by stage.
fn boot_times(
    setup: &Setup,
    options: &Options,
    runs: u32,
    paths: &[BootPath],
    report: &mut Report,
) -> Result<(), Fatal> {
    let smp = options.smp.unwrap_or(1);
    let what = |path: BootPath| {
        format!("{}, {:?}, smp={smp}", path.as_str(), options.accel).to_lowercase()
    };
    let mut guest = Measured::default();
    let mut baseline = Measured::default();
    for run in 0..runs {
        guest.add(boot_run(setup, options, smp, BootPath::Direct, true, run)?);
        baseline.add(boot_run(setup, options, smp, BootPath::Direct, false, run)?);
    }
    let (guest_stats, baseline_stats) = (stats(guest.times.clone()), stats(baseline.times));
    let ratio = guest_stats.median.as_secs_f64() / baseline_stats.median.as_secs_f64().max(1e-9);
    report.boot.paths.push(PathTimes {
        path: BootPath::Direct.as_str(),
        times: Times::from(&guest_stats),
        ratio_vs_direct: 1.0,
        stages: timeline::medians(&guest.timelines, guest_stats.median),
    });
    report.boot.baseline = Some(Times::from(&baseline_stats));
    report.boot.ratio_vs_baseline = Some(ratio);
    println!("{SCENARIO} ({}): {guest_stats}", what(BootPath::Direct));
    println!("trivial PVH guest (the loader alone): {baseline_stats}");
    println!("ratio (median): {ratio:.2}x");
    for &path in &paths[1..] {
        let mut limine = Measured::default();
        for run in 0..runs {
            limine.add(boot_run(setup, options, smp, path, true, run)?);
        }
        let limine_stats = stats(limine.times.clone());
        let vs_direct =
            limine_stats.median.as_secs_f64() / guest_stats.median.as_secs_f64().max(1e-9);
        println!(
            "{SCENARIO} ({}): {limine_stats} ({vs_direct:.0}x direct)",
            what(path)
        );
        report.boot.paths.push(PathTimes {
            path: path.as_str(),
            times: Times::from(&limine_stats),
            ratio_vs_direct: vs_direct,
            stages: timeline::medians(&limine.timelines, limine_stats.median),
        });
    }
    for line in &report.boot.not_measured {
        println!("{line}");
    }
    println!(
        "where the time goes (median per stage; entry: from the CPU's reset to the guest's \
         first instruction, i.e. firmware and loader; rest: QEMU's start-up, the scenario, exit):"
    );
    let columns: Vec<(&str, &[timeline::StageMs])> = report
        .boot
        .paths
        .iter()
        .map(|p| (p.path, p.stages.as_slice()))
        .collect();
    for line in timeline::table(&columns) {
        println!("  {line}");
    }
    Ok(())
}

/// One path's runs: wall times, and the guest's timelines where it printed one.
#[derive(Default)]
struct Measured {
    times: Vec<Duration>,
    timelines: Vec<abi::timeline::BootTimeline>,
}

impl Measured {
    fn add(&mut self, (time, timeline): (Duration, Option<abi::timeline::BootTimeline>)) {
        self.times.push(time);
        self.timelines.extend(timeline);
    }
}

/// One boot's serial log, wall time and verdict.
struct Booted {
    serial: String,
    duration: Duration,
    verdict: Verdict,
    log: PathBuf,
}

/// Boot `scenarios` once on the direct path with `smp` CPUs.
fn boot(setup: &Setup, options: &Options, name: &str, scenarios: &[&str], smp: u32) -> Booted {
    let invocation = match setup.invocation(options, BootPath::Direct, name, scenarios, smp, true) {
        Ok(i) => i,
        Err(e) => panic!("the direct path needs no boot media: {e}"),
    };
    let log = setup.run_dir.join(format!("{name}.serial"));
    let timeout = Duration::from_secs(options.timeout_secs());
    let (capture, verdict) = session::launch(&invocation, name, &log, scenarios, timeout, options);
    Booted {
        serial: std::fs::read_to_string(&log).unwrap_or_default(),
        duration: capture.duration,
        verdict,
        log,
    }
}

/// A boot that did not end as `expected`, as one line naming its serial log.
fn expect(booted: &Booted, name: &str, expected: Outcome) -> Result<(), Fatal> {
    if booted.verdict.outcome == expected {
        return Ok(());
    }
    Err(Fatal {
        status: status::for_outcome(booted.verdict.outcome).max(status::TEST_FAILURE),
        message: format!(
            "{name} ended in {} instead of {}: {} (serial log: {})",
            booted.verdict.outcome.as_str(),
            expected.as_str(),
            booted.verdict.reason,
            booted.log.display()
        ),
    })
}

/// Boot `scenarios` once on the direct path and return the serial log and
/// the wall time, failing unless the boot ended as `expected`.
fn boot_once(
    setup: &Setup,
    options: &Options,
    name: &str,
    scenarios: &[&str],
    expected: Outcome,
) -> Result<(String, Duration), Fatal> {
    let booted = boot(setup, options, name, scenarios, options.smp.unwrap_or(1));
    expect(&booted, name, expected)?;
    Ok((booted.serial, booted.duration))
}

/// The whole `stack.*` suite on the direct path: the recoverable overflows
/// share one boot, each fatal one has its own.
fn stack_suite(setup: &Setup, options: &Options) -> Result<StackSuite, Fatal> {
    let stack: Vec<&abi::Scenario> = abi::SCENARIOS
        .iter()
        .filter(|s| s.name.starts_with("stack."))
        .collect();
    let shared: Vec<&str> = stack
        .iter()
        .filter(|s| !s.isolated)
        .map(|s| s.name)
        .collect();
    let (_, mut total) = boot_once(setup, options, "bench-stack-shared", &shared, Outcome::Pass)?;
    for s in stack.iter().filter(|s| s.isolated) {
        let name = format!("bench-{}", s.name);
        total += boot_once(setup, options, &name, &[s.name], s.expect)?.1;
    }
    let suite = StackSuite {
        scenarios: stack.len(),
        boots: 1 + stack.iter().filter(|s| s.isolated).count(),
        wall_s: total.as_secs_f64(),
    };
    println!(
        "stack.* suite (direct, {} scenarios in {} boots): {:.2} s wall",
        suite.scenarios, suite.boots, suite.wall_s
    );
    Ok(suite)
}

/// `bench.spawn` in one boot: spawn + run-empty + exit + join cost per
/// stack strategy and free mode, with ratios against `direct` (same mode,
/// same boot) and the stack cache's hit rate.
fn spawn_costs(setup: &Setup, options: &Options) -> Result<Costs, Fatal> {
    let (serial, _) = boot_once(setup, options, "bench-spawn", &[SPAWN], Outcome::Pass)?;
    let rows = rows::parse(BenchFamily::Spawn, &serial);
    if rows.is_empty() {
        return Err(no_lines(SPAWN, "spawn"));
    }
    rows::print_table(
        "task spawn+exit+join (bench.spawn, direct path, TSC; ratio vs direct with the same free mode):",
        &rows,
        false,
    );
    // What the allocator alone costs, no task on the stack: tells the
    // allocator's share of the spawn cost from running on what it returned.
    let alone = rows::parse(BenchFamily::StackAlloc, &serial);
    if !alone.is_empty() {
        rows::print_table(
            "task stack alloc + release alone, no task (bench.spawn, TSC; ratio vs direct):",
            &alone,
            false,
        );
    }
    // The guest pins every task to the CPU it runs on, whatever --smp says.
    Ok(Costs {
        scenario: SPAWN,
        cpus: 1,
        rows,
    })
}

/// `bench.fork_heavy` in one boot on all CPUs: many short tasks exiting
/// per grace period, the burst that can overrun the per-CPU stack cache.
fn fork_heavy_costs(setup: &Setup, options: &Options) -> Result<Costs, Fatal> {
    if abi::scenario::find(FORK_HEAVY).is_none() {
        return Err(Fatal::setup(format!(
            "{FORK_HEAVY} is not in the scenario catalog (abi::SCENARIOS): this runner cannot boot it"
        )));
    }
    let smp = options.smp.unwrap_or(FORK_HEAVY_SMP);
    let name = "bench-fork-heavy";
    let booted = boot(setup, options, name, &[FORK_HEAVY], smp);
    if let Some(why) = not_runnable(&booted.serial, FORK_HEAVY) {
        return Err(Fatal::setup(format!(
            "{FORK_HEAVY} cannot run: the guest says \"{why}\"; build a guest that has it (serial log: {})",
            booted.log.display()
        )));
    }
    expect(&booted, name, Outcome::Pass)?;
    let rows = rows::parse(BenchFamily::ForkHeavy, &booted.serial);
    if rows.is_empty() {
        return Err(no_lines(FORK_HEAVY, "fork_heavy"));
    }
    rows::print_table(
        &format!("many tasks per grace period on all CPUs (bench.fork_heavy, direct path, smp={smp}, TSC per task; ratio vs direct with the same free mode):"),
        &rows,
        true,
    );
    let cpus = rows
        .iter()
        .find_map(|r| r.cpus)
        .and_then(|c| u32::try_from(c).ok());
    Ok(Costs {
        scenario: FORK_HEAVY,
        cpus: cpus.unwrap_or(smp),
        rows,
    })
}

/// The guest's own reason for not running `scenario` at all, as
/// `guest/src/scenarios/mod.rs` prints it: a name it does not know, or one
/// the catalog has and this guest build does not implement.
fn not_runnable<'a>(serial: &'a str, scenario: &str) -> Option<&'a str> {
    let prefix = format!("# FAIL: {scenario}: ");
    serial
        .lines()
        .filter_map(|line| line.trim().strip_prefix(prefix.as_str()))
        .find(|why| why.contains("unknown scenario") || why.contains("not implemented"))
}

fn no_lines(scenario: &str, family: &str) -> Fatal {
    Fatal {
        status: status::for_outcome(Outcome::Malformed),
        message: format!("{scenario} printed no `bench {family}` lines"),
    }
}

#[derive(Debug, PartialEq)]
pub struct Stats {
    pub median: Duration,
    pub p90: Duration,
    pub min: Duration,
    pub max: Duration,
    pub runs: usize,
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        write!(
            f,
            "median {:.1} ms, p90 {:.1} ms over {} runs",
            ms(self.median),
            ms(self.p90),
            self.runs
        )
    }
}

/// Boot `boot.smoke` once on `path` (or the loader alone), requiring the
/// outcome it must have; its wall time and the guest's timeline.
fn boot_run(
    setup: &Setup,
    options: &Options,
    smp: u32,
    path: BootPath,
    with_guest: bool,
    run: u32,
) -> Result<(Duration, Option<abi::timeline::BootTimeline>), Fatal> {
    let (expected, label) = if with_guest {
        (Outcome::Pass, format!("bench-{}", path.as_str()))
    } else {
        (Outcome::LoaderError, "bench-baseline".to_string())
    };
    let scenarios = [SCENARIO];
    let timeout =
        Duration::from_secs(options.timeout_secs()).saturating_add(path.firmware_allowance());
    let name = format!("{label}-{run:03}");
    // Cached after the first run; UEFI gets fresh OVMF variables each time.
    let invocation = setup.invocation(options, path, &name, &scenarios, smp, with_guest)?;
    let log = setup.run_dir.join(format!("{name}.serial"));
    let (capture, verdict) =
        session::launch(&invocation, &name, &log, &scenarios, timeout, options);
    if verdict.outcome != expected {
        return Err(Fatal {
            status: status::for_outcome(verdict.outcome).max(status::TEST_FAILURE),
            message: format!(
                "{label} run {run} ended in {} instead of {}: {} (serial log: {})",
                verdict.outcome.as_str(),
                expected.as_str(),
                verdict.reason,
                log.display()
            ),
        });
    }
    let serial = String::from_utf8_lossy(&capture.serial);
    let timeline = serial
        .lines()
        .filter_map(abi::record::json_in::<abi::timeline::BootTimeline>)
        .find_map(|json| serde_json::from_str(json).ok());
    Ok((capture.duration, timeline))
}

/// Median (mean of the middle two for an even count) and nearest-rank p90.
pub fn stats(mut times: Vec<Duration>) -> Stats {
    times.sort();
    let n = times.len();
    if n == 0 {
        return Stats {
            median: Duration::ZERO,
            p90: Duration::ZERO,
            min: Duration::ZERO,
            max: Duration::ZERO,
            runs: 0,
        };
    }
    let median = if n % 2 == 1 {
        times[n / 2]
    } else {
        (times[n / 2 - 1] + times[n / 2]) / 2
    };
    let p90 = times[(n * 9).div_ceil(10) - 1];
    Stats {
        median,
        p90,
        min: times[0],
        max: times[n - 1],
        runs: n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn median_and_p90() {
        let s = stats(ms(&[5, 1, 3, 2, 4, 6, 7, 8, 9, 10]));
        assert_eq!(s.median, Duration::from_micros(5500));
        assert_eq!(s.p90, Duration::from_millis(9));
        let s = stats(ms(&[30, 10, 20]));
        assert_eq!(
            (s.median, s.p90),
            (Duration::from_millis(20), Duration::from_millis(30))
        );
        assert_eq!(stats(ms(&[7])).p90, Duration::from_millis(7));
        assert_eq!(
            (s.min, s.max),
            (Duration::from_millis(10), Duration::from_millis(30))
        );
        assert_eq!(stats(vec![]).runs, 0);
        assert_eq!(
            stats(ms(&[20, 30])).to_string(),
            "median 25.0 ms, p90 30.0 ms over 2 runs"
        );
    }

    #[test]
    fn a_scenario_the_guest_cannot_run_is_told_apart_from_a_failing_one() {
        let missing = "TAP version 14\n1..1\n# FAIL: bench.fork_heavy: listed in the catalog but not implemented by this guest\nnot ok 1 bench.fork_heavy\n";
        assert_eq!(
            not_runnable(missing, "bench.fork_heavy"),
            Some("listed in the catalog but not implemented by this guest")
        );
        let unknown = "# FAIL: bench.fork_heavy: unknown scenario\r\n";
        assert_eq!(
            not_runnable(unknown, "bench.fork_heavy"),
            Some("unknown scenario")
        );
        let failing = "# FAIL: bench.fork_heavy: spawn: OutOfMemory\n";
        assert_eq!(not_runnable(failing, "bench.fork_heavy"), None);
        assert_eq!(not_runnable(missing, "bench.spawn"), None);
    }
}
