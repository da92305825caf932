//! `bench.*`: what a task's birth and death cost per stack strategy and
//! stack-free mode, with the per-CPU stack cache's hit rate: the LWN
//! seed's numbers, measured here.
//!
//! Each sample is one spawn + run-empty + exit + join, between two
//! serialising TSC reads, on the CPU that spawns (so the two switches are
//! part of the cost). The runner parses the `# bench ..` lines, computes
//! ratios against `direct` and draws the chart.
use super::Checks;
use crate::arch::x86_64::{percpu, time};
use crate::boot::BootInfo;
use crate::mm::stack::{self, Strategy};
use crate::rcu;
use crate::sync::IrqLock;
use crate::task::{self, ExitStatus, FreeMode};
use alloc::sync::Arc;
use alloc::vec::Vec;

/// `bench.spawn`: one task at a time on one CPU.
const SPAWN_ITERS: usize = 10_000;
/// `bench.fork_heavy`: tasks each CPU's driver creates, per combination.
const FORK_HEAVY_PER_CPU: usize = 2_500;

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

/// Run `f` once per strategy × free mode, from a quiet start each time,
/// and put the original settings back afterwards.
fn for_each_combination(mut f: impl FnMut(Strategy, FreeMode)) {
    let (original, original_mode) = (stack::strategy(), task::free_mode());
    for s in Strategy::ALL {
        for mode in FreeMode::ALL {
            stack::set_strategy(s);
            task::set_free_mode(mode);
            // The previous combination's deferred frees must not land in
            // this one's cache statistics.
            task::settle(2_000);
            stack::reset_cache_stats();
            f(s, mode);
        }
    }
    stack::set_strategy(original);
    task::set_free_mode(original_mode);
}

fn gps_completed() -> u64 {
    rcu::counters().map_or(0, |r| r.gps_completed)
}

/// The fields every `# bench ..` line shares.
fn report(
    c: &Checks,
    family: &str,
    s: Strategy,
    mode: FreeMode,
    extra: core::fmt::Arguments,
    samples: &mut [u64],
) {
    let (median, p90) = percentiles(samples);
    let (hits, lookups) = stack::cache_stats();
    c.info(format_args!(
        "bench {family} strategy={} free={} {extra} median_cycles={median} p90_cycles={p90} median_ns={} p90_ns={} cache_hits={hits} cache_lookups={lookups}",
        s.name(),
        mode.name(),
        time::cycles_to_ns(median),
        time::cycles_to_ns(p90),
    ));
}

/// The stack alone: allocate and release one task stack, `n` times, with
/// no task running on it. Set against `bench spawn`, it separates what the
/// allocator costs from what running on the memory it returns costs.
fn stack_alone(c: &mut Checks, s: Strategy, n: usize) {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = time::tsc();
        match stack::alloc_task_stack(0) {
            Ok(st) => stack::release_task_stack(st),
            Err(e) => {
                c.check(false, format_args!("{}: stack: {e:?}", s.name()));
                return;
            }
        }
        samples.push(time::tsc() - t0);
    }
    report(
        c,
        "stack_alloc",
        s,
        FreeMode::AtExit,
        format_args!("iterations={n}"),
        &mut samples,
    );
}

/// `bench.spawn`: the sequential case, one CPU.
pub fn spawn(_: &BootInfo, c: &mut Checks) {
    let here = percpu::this().id;
    for_each_combination(|s, mode| {
        if mode == FreeMode::AtExit {
            stack_alone(c, s, SPAWN_ITERS);
            stack::reset_cache_stats();
        }
    });
    for_each_combination(|s, mode| match spawn_join_samples(here, SPAWN_ITERS) {
        Ok(mut samples) => {
            let n = samples.len();
            report(
                c,
                "spawn",
                s,
                mode,
                format_args!("iterations={n}"),
                &mut samples,
            );
        }
        Err(e) => {
            c.check(
                false,
                format_args!("{}/{}: spawn: {e:?}", s.name(), mode.name()),
            );
        }
    });
}

/// `bench.fork_heavy`: every CPU creates short tasks back to back, so
/// many exit within each grace period (which lasts a tick or two). Frees
/// deferred to RCU then pile up behind the grace period while the cache
/// of two stacks per CPU is refilled at most twice per period.
pub fn fork_heavy(_: &BootInfo, c: &mut Checks) {
    let cpus = percpu::online();
    for_each_combination(|s, mode| {
        let samples: Arc<IrqLock<Vec<u64>>> = Arc::new(IrqLock::new(Vec::new()));
        let gps = gps_completed();
        let drivers: Vec<_> = (0..cpus)
            .filter_map(|cpu| {
                let out = samples.clone();
                task::spawn_on(cpu, "fork-heavy", move || {
                    match spawn_join_samples(cpu, FORK_HEAVY_PER_CPU) {
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
        let gps = gps_completed() - gps;
        if !c.check(
            started == cpus && clean == cpus,
            format_args!(
                "{}/{}: {clean} of {cpus} CPUs' drivers finished",
                s.name(),
                mode.name()
            ),
        ) {
            return;
        }
        let mut samples = core::mem::take(&mut *samples.lock());
        let n = samples.len();
        report(
            c,
            "fork_heavy",
            s,
            mode,
            format_args!("cpus={cpus} tasks={n} grace_periods={gps}"),
            &mut samples,
        );
    });
}
