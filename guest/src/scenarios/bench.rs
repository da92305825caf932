//! `bench.*`: what a task's birth and death cost per stack strategy and
//! stack-free mode, with the per-CPU stack cache's hit rate: the LWN
//! seed's numbers, measured here.
//!
//! Each sample is one spawn + run-empty + exit + join, between two
//! serialising TSC reads, on the CPU that spawns (so the two switches are
//! part of the cost). Each cell is one `BENCH-CELL` record
//! (`abi::bench`); the runner computes ratios against `direct` and draws
//! the chart.
use super::Checks;
use crate::arch::x86_64::{percpu, time};
use crate::boot::BootInfo;
use crate::mm::stack::{self, Strategy};
use crate::rcu;
use crate::sync::IrqLock;
use crate::task::{self, ExitStatus, FreeMode};
use abi::bench::BenchCell;
use abi::kinds::BenchFamily;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

/// `bench.spawn`: one task at a time on one CPU.
const SPAWN_ITERS: usize = 10_000;
/// `bench.fork_heavy`: tasks each CPU's driver creates, per combination.
const FORK_HEAVY_PER_CPU: usize = 2_500;
/// Every cell is measured in this many slices, the cells taking turns
/// round by round. Whatever the host does meanwhile (a vCPU thread
/// descheduled, a neighbour's burst) then falls on every cell alike, and a
/// ratio against `direct` compares like with like; measured one cell after
/// another, a slow minute of the host could flip the table's shape.
const ROUNDS: usize = 10;

/// Median and 90th percentile of `samples` (sorted in place).
fn percentiles(samples: &mut [u64]) -> (u64, u64) {
    samples.sort_unstable();
    match samples.len() {
        0 => (0, 0),
        n => (samples[n / 2], samples[n * 9 / 10]),
    }
}

/// Spawn + join `n` empty tasks on `cpu`, one at a time: each sample in
/// TSC cycles. Stops early if a spawn fails.
fn spawn_join_samples(cpu: usize, n: usize) -> Result<Vec<u64>, task::SpawnError> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = time::tsc();
        task::spawn_on(cpu, "bench", || 0)?.join();
        samples.push(time::tsc() - t0);
    }
    Ok(samples)
}

/// One strategy × free mode, summed over its slices.
struct Cell {
    strategy: Strategy,
    mode: FreeMode,
    samples: Vec<u64>,
    cache_hits: u64,
    cache_lookups: u64,
    grace_periods: u64,
}

/// Measure every strategy × one of `modes` in `ROUNDS` interleaved slices,
/// each from a quiet start (`slice` measures one and returns its samples),
/// and put the original settings back afterwards.
fn interleaved(
    modes: &[FreeMode],
    mut slice: impl FnMut(Strategy, FreeMode) -> Result<Vec<u64>, String>,
) -> Result<Vec<Cell>, String> {
    let (original, original_mode) = (stack::strategy(), task::free_mode());
    let mut cells: Vec<Cell> = Strategy::ALL
        .iter()
        .flat_map(|&strategy| {
            modes.iter().map(move |&mode| Cell {
                strategy,
                mode,
                samples: Vec::new(),
                cache_hits: 0,
                cache_lookups: 0,
                grace_periods: 0,
            })
        })
        .collect();
    let mut measure = || -> Result<(), String> {
        for _ in 0..ROUNDS {
            for cell in cells.iter_mut() {
                stack::set_strategy(cell.strategy);
                task::set_free_mode(cell.mode);
                // The previous slice's deferred frees must not land in
                // this one's cache statistics.
                super::workload::settle();
                stack::reset_cache_stats();
                let gps = gps_completed();
                cell.samples.extend(slice(cell.strategy, cell.mode)?);
                cell.grace_periods += gps_completed() - gps;
                let (hits, lookups) = stack::cache_stats();
                cell.cache_hits += hits;
                cell.cache_lookups += lookups;
            }
        }
        Ok(())
    };
    let result = measure();
    stack::set_strategy(original);
    task::set_free_mode(original_mode);
    result.map(|()| cells)
}

fn gps_completed() -> u64 {
    rcu::counters().map_or(0, |r| r.gps_completed)
}

/// The shape the LWN seed describes, checked, so a cache that does not
/// behave fails the benchmark instead of printing a quiet 0 %: freed at
/// exit, the next task on the CPU takes the stack back (hit rate at least
/// 90 %); freed after a grace period, stacks come back in bursts that
/// overflow a cache of two (hit rate near 0: at most 10 %, each slice
/// starting from a settled cache worth a couple of hits).
fn shape(c: &mut Checks, family: BenchFamily, cells: &[Cell]) {
    for cell in cells.iter().filter(|x| x.strategy == Strategy::VmapCached) {
        let (hits, lookups) = (cell.cache_hits, cell.cache_lookups);
        let permille = hits * 1000 / lookups.max(1);
        let (ok, want) = match cell.mode {
            FreeMode::Exit => (permille >= 900, ">= 90%"),
            FreeMode::Rcu | FreeMode::RcuCache => (permille <= 100, "<= 10%"),
        };
        c.check(
            lookups > 0 && ok,
            format_args!(
                "{family} vmap-cached/{}: cache hit rate {}.{}% ({hits} of {lookups}), expected {want}",
                cell.mode.as_str(),
                permille / 10,
                permille % 10
            ),
        );
    }
}

/// One `BENCH-CELL` record per cell, or the failure.
fn report(c: &mut Checks, family: BenchFamily, cells: Result<Vec<Cell>, String>) {
    let cells = match cells {
        Ok(cells) => cells,
        Err(e) => {
            c.check(false, format_args!("{family}: {e}"));
            return;
        }
    };
    shape(c, family, &cells);
    for mut cell in cells {
        let n = cell.samples.len() as u64;
        // The mean as well: a cost paid in a few samples (a batch of frees
        // run from one RCU callback) is invisible to the median and p90.
        let mean = cell.samples.iter().sum::<u64>() / n.max(1);
        let (median, p90) = percentiles(&mut cell.samples);
        let fork_heavy = family == BenchFamily::ForkHeavy;
        crate::console::record(&BenchCell {
            scenario: c.scenario(),
            family,
            strategy: cell.strategy,
            free: cell.mode,
            samples: n,
            cpus: fork_heavy.then_some(percpu::online() as u64),
            grace_periods: fork_heavy.then_some(cell.grace_periods),
            median_cycles: median,
            p90_cycles: p90,
            mean_cycles: mean,
            median_ns: time::cycles_to_ns(median),
            p90_ns: time::cycles_to_ns(p90),
            cache_hits: cell.cache_hits,
            cache_lookups: cell.cache_lookups,
        });
    }
}

/// The stack alone: allocate and release one task stack, `n` times, with
/// no task running on it. Set against `bench spawn`, it separates what the
/// allocator costs from what running on the memory it returns costs.
fn stack_alone(s: Strategy, n: usize) -> Result<Vec<u64>, String> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = time::tsc();
        let st = stack::alloc_task_stack(0)
            .map_err(|e| alloc::format!("{}: stack: {e:?}", s.as_str()))?;
        stack::release_task_stack(st);
        samples.push(time::tsc() - t0);
    }
    Ok(samples)
}

/// `bench.spawn`: the sequential case, one CPU.
pub fn spawn(_: &BootInfo, c: &mut Checks) {
    let here = percpu::this().id;
    let alone = interleaved(&[FreeMode::Exit], |s, _| {
        stack_alone(s, SPAWN_ITERS / ROUNDS)
    });
    report(c, BenchFamily::StackAlloc, alone);
    let spawned = interleaved(FreeMode::ALL, |s, mode| {
        spawn_join_samples(here, SPAWN_ITERS / ROUNDS)
            .map_err(|e| alloc::format!("{}/{}: spawn: {e:?}", s.as_str(), mode.as_str()))
    });
    report(c, BenchFamily::Spawn, spawned);
}

/// `bench.fork_heavy`: every CPU creates short tasks back to back, so
/// many exit within each grace period (which lasts a tick or two). Frees
/// deferred to RCU then pile up behind the grace period while the cache
/// of two stacks per CPU is refilled at most twice per period.
pub fn fork_heavy(_: &BootInfo, c: &mut Checks) {
    let cpus = percpu::online();
    let cells = interleaved(FreeMode::ALL, |s, mode| {
        let samples: Arc<IrqLock<Vec<u64>>> = Arc::new(IrqLock::new(Vec::new()));
        let drivers: Vec<_> = (0..cpus)
            .filter_map(|cpu| {
                let out = samples.clone();
                task::spawn_on(cpu, "fork-heavy", move || {
                    match spawn_join_samples(cpu, FORK_HEAVY_PER_CPU / ROUNDS) {
                        Ok(mine) => {
                            out.lock().extend(mine);
                            0
                        }
                        Err(_) => 1,
                    }
                })
                .ok()
            })
            .collect();
        let started = drivers.len();
        let clean = drivers
            .into_iter()
            .map(|h| h.join())
            .filter(|st| *st == ExitStatus::Exited(0))
            .count();
        if started != cpus || clean != cpus {
            return Err(alloc::format!(
                "{}/{}: {clean} of {cpus} CPUs' drivers finished",
                s.as_str(),
                mode.as_str()
            ));
        }
        let mine = core::mem::take(&mut *samples.lock());
        Ok(mine)
    });
    report(c, BenchFamily::ForkHeavy, cells);
}
