//! `bench`: what a boot of the testbed costs next to the cheapest boot QEMU
//! can do (the direct path's loader alone), so a regression in either shows
//! as a ratio; then the same boot through real Limine, BIOS and UEFI, where
//! this machine has Limine. Each figure is whole-process wall time of QEMU,
//! boot to exit.

use crate::cli::{BootPath, Options};
use crate::fatal::Fatal;
use crate::media;
use crate::qemu;
use crate::session::{self, Setup};
use crate::status;
use abi::Outcome;
use std::time::Duration;

const SCENARIO: &str = "boot.smoke";

pub fn execute(runs: u32, options: &Options) -> Result<i32, Fatal> {
    let mut paths = vec![BootPath::Direct];
    let mut missing = Vec::new();
    for path in [BootPath::LimineBios, BootPath::LimineUefi] {
        match media::check(path) {
            Ok(()) => paths.push(path),
            Err(why) => missing.push(format!("{}: not measured: {why}", path.as_str())),
        }
    }
    let setup = session::setup(options, &paths)?;
    let smp = options.smp.unwrap_or(1);
    let what = |path: BootPath| {
        format!("{}, {:?}, smp={smp}", path.as_str(), options.accel).to_lowercase()
    };
    let guest = measure(&setup, options, runs, smp, BootPath::Direct, true)?;
    let baseline = measure(&setup, options, runs, smp, BootPath::Direct, false)?;
    println!("{SCENARIO} ({}): {guest}", what(BootPath::Direct));
    println!("trivial PVH guest (the loader alone): {baseline}");
    println!(
        "ratio (median): {:.1}x",
        guest.median.as_secs_f64() / baseline.median.as_secs_f64().max(1e-9)
    );
    for &path in &paths[1..] {
        let limine = measure(&setup, options, runs, smp, path, true)?;
        println!(
            "{SCENARIO} ({}): {limine} ({:.0}x direct)",
            what(path),
            limine.median.as_secs_f64() / guest.median.as_secs_f64().max(1e-9)
        );
    }
    for line in missing {
        println!("{line}");
    }
    stack_suite(&setup, options)?;
    spawn_costs(&setup, options)?;
    Ok(status::OK)
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
    let extra = options.guest_args();
    let smp = options.smp.unwrap_or(1);
    let invocation = qemu::invocation(
        &setup.qemu,
        &qemu::Boot {
            path: BootPath::Direct,
            loader: &setup.artifacts.loader,
            guest: Some(setup.artifacts.guest.as_path()),
            iso: None,
            firmware: None,
            scenarios,
            smp,
            accel: options.accel,
            cmdline_extra: &extra,
        },
    );
    let log = setup.run_dir.join(format!("{name}.serial"));
    let timeout = Duration::from_secs(options.timeout);
    let (capture, verdict) = session::launch(&invocation, name, &log, scenarios, timeout, options);
    if verdict.outcome != expected {
        return Err(Fatal {
            status: status::for_outcome(verdict.outcome).max(status::TEST_FAILURE),
            message: format!(
                "{name} ended in {} instead of {}: {} (serial log: {})",
                verdict.outcome.as_str(),
                expected.as_str(),
                verdict.reason,
                log.display()
            ),
        });
    }
    let serial = std::fs::read_to_string(&log).unwrap_or_default();
    Ok((serial, capture.duration))
}

/// The whole `stack.*` suite on the direct path: the recoverable overflows
/// share one boot, each fatal one has its own.
fn stack_suite(setup: &Setup, options: &Options) -> Result<(), Fatal> {
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
    println!(
        "stack.* suite (direct, {} scenarios in {} boots): {:.2} s wall",
        stack.len(),
        1 + stack.iter().filter(|s| s.isolated).count(),
        total.as_secs_f64()
    );
    Ok(())
}

/// One row of `bench.spawn`'s output.
#[derive(Debug, PartialEq)]
pub struct SpawnRow {
    pub strategy: String,
    pub free: String,
    pub median_cycles: u64,
    pub p90_cycles: u64,
    pub median_ns: u64,
    pub cache_hits: u64,
    pub cache_lookups: u64,
}

/// Parse `# bench spawn strategy=.. free=.. median_cycles=..` lines.
pub fn parse_spawn(serial: &str) -> Vec<SpawnRow> {
    serial
        .lines()
        .filter_map(|line| {
            let rest = line.trim_end().strip_prefix("# bench spawn ")?;
            let field = |key: &str| {
                rest.split_whitespace()
                    .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
            };
            let num = |key: &str| field(key)?.parse::<u64>().ok();
            Some(SpawnRow {
                strategy: field("strategy")?.to_string(),
                free: field("free").unwrap_or("exit").to_string(),
                median_cycles: num("median_cycles")?,
                p90_cycles: num("p90_cycles")?,
                median_ns: num("median_ns")?,
                cache_hits: num("cache_hits")?,
                cache_lookups: num("cache_lookups")?,
            })
        })
        .collect()
}

/// `bench.spawn` in one boot: spawn + run-empty + exit + join cost per
/// stack strategy and free mode, with ratios against `direct` (same mode,
/// same boot) and the stack cache's hit rate.
fn spawn_costs(setup: &Setup, options: &Options) -> Result<(), Fatal> {
    let (serial, _) = boot_once(
        setup,
        options,
        "bench-spawn",
        &["bench.spawn"],
        Outcome::Pass,
    )?;
    let rows = parse_spawn(&serial);
    if rows.is_empty() {
        return Err(Fatal {
            status: status::for_outcome(Outcome::Malformed),
            message: "bench.spawn printed no `bench spawn` lines".to_string(),
        });
    }
    println!("task spawn+exit+join (bench.spawn, direct path, TSC; ratio vs direct with the same free mode):");
    println!(
        "  {:<12} {:<10} {:>14} {:>11} {:>11} {:>7} {:>10}",
        "strategy", "free", "median cycles", "median ns", "p90 cycles", "ratio", "cache hit"
    );
    for r in &rows {
        let direct = rows
            .iter()
            .find(|d| d.strategy == "direct" && d.free == r.free)
            .map_or(r.median_cycles, |d| d.median_cycles);
        let hit = if r.cache_lookups == 0 {
            "-".to_string()
        } else {
            format!(
                "{:.1}%",
                100.0 * r.cache_hits as f64 / r.cache_lookups as f64
            )
        };
        println!(
            "  {:<12} {:<10} {:>14} {:>11} {:>11} {:>6.2}x {:>10}",
            r.strategy,
            r.free,
            r.median_cycles,
            r.median_ns,
            r.p90_cycles,
            r.median_cycles as f64 / direct.max(1) as f64,
            hit
        );
    }
    Ok(())
}

#[derive(Debug, PartialEq)]
pub struct Stats {
    pub median: Duration,
    pub p90: Duration,
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

fn measure(
    setup: &Setup,
    options: &Options,
    runs: u32,
    smp: u32,
    path: BootPath,
    with_guest: bool,
) -> Result<Stats, Fatal> {
    let (expected, label) = if with_guest {
        (Outcome::Pass, format!("bench-{}", path.as_str()))
    } else {
        (Outcome::LoaderError, "bench-baseline".to_string())
    };
    let scenarios = [SCENARIO];
    let extra = options.guest_args();
    let timeout = Duration::from_secs(options.timeout) + path.firmware_allowance();
    let mut times = Vec::with_capacity(runs as usize);
    for run in 0..runs {
        let name = format!("{label}-{run:03}");
        // Cached after the first run; UEFI gets fresh OVMF variables each time.
        let media = setup.media.prepare(
            path,
            &setup.artifacts.guest,
            &qemu::guest_cmdline(&scenarios, smp, &extra),
            &setup.run_dir,
            &name,
        )?;
        let invocation = qemu::invocation(
            &setup.qemu,
            &qemu::Boot {
                path,
                loader: &setup.artifacts.loader,
                guest: with_guest.then_some(setup.artifacts.guest.as_path()),
                iso: media.iso.as_deref(),
                firmware: media
                    .firmware
                    .as_ref()
                    .map(|(code, vars)| (code.as_path(), vars.as_path())),
                scenarios: &scenarios,
                smp,
                accel: options.accel,
                cmdline_extra: &extra,
            },
        );
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
        times.push(capture.duration);
    }
    Ok(stats(times))
}

/// Median (mean of the middle two for an even count) and nearest-rank p90.
pub fn stats(mut times: Vec<Duration>) -> Stats {
    times.sort();
    let n = times.len();
    if n == 0 {
        return Stats {
            median: Duration::ZERO,
            p90: Duration::ZERO,
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
        runs: n,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn spawn_lines_parse_and_garbage_is_skipped() {
        let serial = "noise\n# bench spawn strategy=vmap free=rcu iterations=10 median_cycles=5 p90_cycles=7 median_ns=2 p90_ns=3 cache_hits=1 cache_lookups=4\n# bench spawn strategy=vmap median_cycles=x\n";
        let rows = super::parse_spawn(serial);
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (
                rows[0].strategy.as_str(),
                rows[0].free.as_str(),
                rows[0].median_cycles,
                rows[0].cache_lookups
            ),
            ("vmap", "rcu", 5, 4)
        );
    }

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
        assert_eq!(stats(vec![]).runs, 0);
        assert_eq!(
            stats(ms(&[20, 30])).to_string(),
            "median 25.0 ms, p90 30.0 ms over 2 runs"
        );
    }
}
