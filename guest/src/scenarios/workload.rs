//! How much work the throughput scenarios do here.
//!
//! Under a hypervisor that traps the privileged instructions a kernel runs
//! all the time (cli/sti around every `IrqLock`, LAPIC writes), each one
//! costs a round trip to it: this machine's `/dev/kvm` is such a one
//! (nested, paravirtual, shadow page tables), where a spawn-and-join costs
//! about 20 ms against 0.1 ms under TCG, and `core.leak`'s 300 000 cycles
//! would take hours. So the cost of a cli/sti pair is measured once; where
//! it shows trapping, the scenarios that count iterations (spawns, exits,
//! overflows, migrations) run a hundredth of them. Every check they make is
//! the same; only how many times they make it changes, and each such
//! scenario says so in its report.
use crate::arch::x86_64::time;
use abi::config::Workload;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

/// A cli/sti pair dearer than this traps: at the cheapest, TCG takes about
/// 1 µs here (the held-lock record included), the paravirtual /dev/kvm
/// about 30 µs (600 µs on average).
const TRAPPING_PAIR_NS: u64 = 5_000;
const DIVISOR: u64 = 100;

static PAIR_NS: AtomicU64 = AtomicU64::new(u64::MAX);

/// Nanoseconds one cli/sti pair costs here (measured once).
pub fn irq_pair_ns() -> u64 {
    let known = PAIR_NS.load(Ordering::Acquire);
    if known != u64::MAX {
        return known;
    }
    // The cheapest of several short samples: a sample the host preempted
    // the vCPU in is dear for a reason that is not the instruction's.
    const SAMPLES: u64 = 16;
    const PAIRS: u64 = 8;
    let mut ns = u64::MAX;
    for _ in 0..SAMPLES {
        let t0 = time::tsc();
        for _ in 0..PAIRS {
            crate::sync::irq::without(core::hint::spin_loop);
        }
        ns = ns.min(time::cycles_to_ns(time::tsc() - t0) / PAIRS);
    }
    PAIR_NS.store(ns, Ordering::Release);
    ns
}

/// How many iterations out of `n` a throughput scenario runs here.
pub fn scaled(n: u64) -> u64 {
    if irq_pair_ns() > TRAPPING_PAIR_NS {
        (n / DIVISOR).max(1)
    } else {
        n
    }
}

/// A soak loop's share of its full count under `check` (the default).
const CHECK_DIVISOR: u64 = 10;

static WORKLOAD: AtomicU8 = AtomicU8::new(Workload::Check as u8);

/// The workload the command line asked for (`abi::cmdline::WORKLOAD`).
pub fn set(w: Workload) {
    WORKLOAD.store(w as u8, Ordering::Release);
}

pub fn get() -> Workload {
    Workload::from_index(usize::from(WORKLOAD.load(Ordering::Acquire))).unwrap_or(Workload::Check)
}

/// How many iterations out of `full` a soak loop runs: the loops whose
/// cost is repetition, not a check (a leak of one object per cycle shows
/// after ten cycles as after a hundred thousand). All of them under
/// `soak`, a tenth under `check`, and `scaled` on top where instructions trap.
pub fn soak(full: u64) -> u64 {
    match get() {
        Workload::Check => scaled((full / CHECK_DIVISOR).max(1)),
        Workload::Soak => scaled(full),
    }
}

/// For the scenario's report: a line when `n` of its `full` iterations run.
pub fn note(c: &super::Checks, full: u64, n: u64) {
    if n == full {
        return;
    }
    let mut why = alloc::vec::Vec::new();
    if get() == Workload::Check && soak(full) == n {
        why.push("workload=check (make soak runs them all)");
    }
    if scaled(full) != full {
        why.push("a cli/sti pair traps to the hypervisor here");
    }
    c.info(format_args!(
        "workload: {n} of {full} iterations: {} (a cli/sti pair costs {} ns)",
        why.join("; "),
        irq_pair_ns()
    ));
}

/// Wait for every exited task to be reaped and its RCU callbacks run
/// (`task::settle`): two seconds, or fifty times that where instructions
/// trap, since reaping costs what spawning does. Returns early once quiet,
/// so the patience costs only a run that is failing anyway.
pub fn settle() -> bool {
    const QUIET_MS: u64 = 2_000;
    const TRAPPING_PATIENCE: u64 = 50;
    let ms = if irq_pair_ns() > TRAPPING_PAIR_NS {
        QUIET_MS * TRAPPING_PATIENCE
    } else {
        QUIET_MS
    };
    crate::task::settle(ms)
}
