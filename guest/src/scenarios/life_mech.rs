//! `life.*` that test the mechanisms themselves, not an outcome a broken
//! mechanism would produce too.
//!
//! - `life.rcu_gp`: readers on every CPU sit in long read-side sections,
//!   each reading an object that only RCU keeps alive (a slot index: no
//!   reference count that would keep it valid whatever RCU did), while an
//!   updater replaces and frees objects through `call_rcu` as fast as grace
//!   periods allow. Throughout each section the reader samples the
//!   grace-period counters: a grace period that began after the section
//!   began must not end before it does (RCU's one promise), and the object
//!   must stay live. A section during which no grace period began at all
//!   proves nothing, so those are counted and must be rare.
//! - `life.rcu_sync`: `synchronize_rcu()` must not return while a reader
//!   that began before the call is still inside, and only once a grace
//!   period begun after the call completed; no `rcu_barrier()` anywhere to
//!   hide a wait that did not happen. A callback queued while a reader is
//!   inside must not run before that reader leaves.
//! - `life.stack_cache`: a stack put in the per-CPU cache at exit is the
//!   very range the next task on that CPU gets, and the hit counter says so
//!   (a cache that is refilled but never taken from passes every
//!   put-side check).
use super::Checks;
use crate::arch::x86_64::{percpu, probe, time};
use crate::boot::BootInfo;
use crate::mm::stack::{self, Strategy};
use crate::rcu;
use crate::task::{self, ExitStatus, FreeMode};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};

const SLOTS: usize = 16;
const FREE: u8 = 0;
const LIVE: u8 = 1;

/// The objects: each a state and a generation (bumped on every reuse).
struct Slot {
    state: AtomicU8,
    generation: AtomicU64,
}

static OBJECTS: [Slot; SLOTS] = [const {
    Slot {
        state: AtomicU8::new(FREE),
        generation: AtomicU64::new(0),
    }
}; SLOTS];
/// The RCU-protected pointer: which slot readers should read.
static CURRENT: AtomicUsize = AtomicUsize::new(0);

/// What the readers saw, all CPUs.
static SECTIONS: AtomicU64 = AtomicU64::new(0);
static EARLY_ENDS: AtomicU64 = AtomicU64::new(0);
static FREED_UNDER_READER: AtomicU64 = AtomicU64::new(0);
static NO_GP_BEGAN: AtomicU64 = AtomicU64::new(0);
static GPS_WAITED: AtomicU64 = AtomicU64::new(0);
static STOP: AtomicBool = AtomicBool::new(false);
static UPDATES: AtomicU64 = AtomicU64::new(0);

/// One read-side section of about `ns`, sampling all the while.
fn long_section(ns: u64) {
    let _rcu = rcu::read_lock();
    // Every grace period numbered above `began` started after this point.
    let began = rcu::gp_seq();
    let idx = CURRENT.load(Ordering::Acquire);
    let obj = &OBJECTS[idx];
    let generation = obj.generation.load(Ordering::Acquire);
    let live_at_start = obj.state.load(Ordering::Acquire) == LIVE;
    // One grace period is asked for from inside: it begins after `began`
    // (now, or when the one in progress ends), so it must wait for us.
    rcu::request_grace_period();
    let start = time::now_ns();
    let (mut early, mut freed) = (false, !live_at_start);
    // At least `ns`, and on until a grace period has begun inside the
    // section (bounded: a host that starves the other vCPUs may hold the
    // one in progress for long).
    while {
        let now = time::now_ns();
        now < start + ns || (rcu::gp_seq() == began && now < start + 10 * ns)
    } {
        early |= rcu::completed() > began;
        freed |= obj.state.load(Ordering::Acquire) != LIVE
            || obj.generation.load(Ordering::Acquire) != generation;
        core::hint::spin_loop();
    }
    let last = rcu::gp_seq();
    SECTIONS.fetch_add(1, Ordering::AcqRel);
    EARLY_ENDS.fetch_add(u64::from(early), Ordering::AcqRel);
    FREED_UNDER_READER.fetch_add(u64::from(freed), Ordering::AcqRel);
    if last > began {
        GPS_WAITED.fetch_add(1, Ordering::AcqRel);
    } else {
        NO_GP_BEGAN.fetch_add(1, Ordering::AcqRel);
    }
}

/// Replace the current object and free the old one after a grace period,
/// as fast as free slots come back.
fn updater() -> u64 {
    while !STOP.load(Ordering::Acquire) {
        let Some(next) = (0..SLOTS).find(|&i| {
            OBJECTS[i]
                .state
                .compare_exchange(FREE, LIVE, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        }) else {
            task::yield_now();
            continue;
        };
        OBJECTS[next].generation.fetch_add(1, Ordering::AcqRel);
        let old = CURRENT.swap(next, Ordering::AcqRel);
        if old != next {
            rcu::call_rcu(move || OBJECTS[old].state.store(FREE, Ordering::Release));
        }
        UPDATES.fetch_add(1, Ordering::Relaxed);
        task::yield_now();
    }
    0
}

pub fn rcu_gp(_: &BootInfo, c: &mut Checks) {
    const SECTIONS_PER_READER: u64 = 12;
    const SECTION_NS: u64 = 20_000_000;
    for s in [
        &SECTIONS,
        &EARLY_ENDS,
        &FREED_UNDER_READER,
        &NO_GP_BEGAN,
        &GPS_WAITED,
        &UPDATES,
    ] {
        s.store(0, Ordering::Release);
    }
    STOP.store(false, Ordering::Release);
    for (i, o) in OBJECTS.iter().enumerate() {
        o.state
            .store(if i == 0 { LIVE } else { FREE }, Ordering::Release);
    }
    CURRENT.store(0, Ordering::Release);
    // The updater on CPU 0, readers on every other CPU (on one CPU, there).
    let n = percpu::online();
    let first = usize::from(n > 1);
    let updater = task::spawn_on(0, "rcu-updater", updater);
    let readers: Vec<_> = (first..n)
        .filter_map(|cpu| {
            task::spawn_on(cpu, "rcu-long-reader", || {
                for _ in 0..SECTIONS_PER_READER {
                    long_section(SECTION_NS);
                    // Between sections, a quiescent state.
                    task::yield_now();
                }
                0
            })
            .ok()
        })
        .collect();
    let started = readers.len();
    for r in readers {
        r.join();
    }
    STOP.store(true, Ordering::Release);
    if let Ok(u) = updater {
        u.join();
    }
    let sections = SECTIONS.load(Ordering::Acquire);
    let waited = GPS_WAITED.load(Ordering::Acquire);
    let cpus = n - first;
    c.check(
        started == cpus && sections == cpus as u64 * SECTIONS_PER_READER,
        format_args!("{sections} read sections of 20 ms on {cpus} CPUs"),
    );
    c.check(
        EARLY_ENDS.load(Ordering::Acquire) == 0,
        format_args!(
            "no grace period that began inside a read section ended inside it ({} did)",
            EARLY_ENDS.load(Ordering::Acquire)
        ),
    );
    c.check(
        FREED_UNDER_READER.load(Ordering::Acquire) == 0,
        format_args!(
            "no object freed (or reused) under a reader ({} were), {} updates",
            FREED_UNDER_READER.load(Ordering::Acquire),
            UPDATES.load(Ordering::Acquire)
        ),
    );
    // The checks above mean something only if grace periods were waiting
    // on the sections: most must have seen one begin and not end.
    c.check(
        waited * 3 >= sections * 2,
        format_args!(
            "a grace period began, and had to wait, during {waited} of {sections} sections ({} saw none begin)",
            NO_GP_BEGAN.load(Ordering::Acquire)
        ),
    );
}

pub fn rcu_sync(_: &BootInfo, c: &mut Checks) {
    if percpu::online() < 2 {
        c.skip("needs at least 2 CPUs (the reader must not block the caller's CPU)");
        return;
    }
    static INSIDE: AtomicBool = AtomicBool::new(false);
    static LEFT: AtomicBool = AtomicBool::new(false);
    static RAN: AtomicBool = AtomicBool::new(false);
    static READER_INSIDE_AT_RUN: AtomicBool = AtomicBool::new(false);
    static GP_AT_QUEUE: AtomicU64 = AtomicU64::new(0);
    static COMPLETED_AT_RUN: AtomicU64 = AtomicU64::new(0);
    let reader = |ms: u64| {
        move || {
            let _rcu = rcu::read_lock();
            INSIDE.store(true, Ordering::Release);
            let end = time::now_ns() + ms * 1_000_000;
            while time::now_ns() < end {
                core::hint::spin_loop();
            }
            LEFT.store(true, Ordering::Release);
            INSIDE.store(false, Ordering::Release);
            0
        }
    };
    let other = (percpu::this().id + 1) % percpu::online();

    // synchronize_rcu against a reader that began before the call.
    INSIDE.store(false, Ordering::Release);
    LEFT.store(false, Ordering::Release);
    let r = task::spawn_on(other, "rcu-sync-reader", reader(40));
    while !INSIDE.load(Ordering::Acquire) {
        task::yield_now();
    }
    let before = rcu::gp_seq();
    let t0 = time::now_ns();
    rcu::synchronize_rcu();
    let waited = (time::now_ns() - t0) / 1_000_000;
    c.check(
        LEFT.load(Ordering::Acquire),
        format_args!(
            "synchronize_rcu returned after the reader that began before it left ({waited} ms)"
        ),
    );
    c.check(
        rcu::completed() > before,
        format_args!(
            "a grace period begun after the call ({}) had completed when it returned ({} completed)",
            before + 1,
            rcu::completed()
        ),
    );
    if let Ok(r) = r {
        r.join();
    }

    // A callback queued while a reader is inside waits for it.
    INSIDE.store(false, Ordering::Release);
    LEFT.store(false, Ordering::Release);
    RAN.store(false, Ordering::Release);
    let r = task::spawn_on(other, "rcu-cb-reader", reader(40));
    while !INSIDE.load(Ordering::Acquire) {
        task::yield_now();
    }
    GP_AT_QUEUE.store(rcu::gp_seq(), Ordering::Release);
    rcu::call_rcu(|| {
        READER_INSIDE_AT_RUN.store(!LEFT.load(Ordering::Acquire), Ordering::Release);
        COMPLETED_AT_RUN.store(rcu::completed(), Ordering::Release);
        RAN.store(true, Ordering::Release);
    });
    let start = time::now_ns();
    while !RAN.load(Ordering::Acquire) && time::now_ns() - start < 2_000_000_000 {
        task::yield_now();
    }
    c.check(
        RAN.load(Ordering::Acquire) && !READER_INSIDE_AT_RUN.load(Ordering::Acquire),
        format_args!(
            "the callback ran, and only after the reader inside at call_rcu had left (ran: {})",
            RAN.load(Ordering::Acquire)
        ),
    );
    c.check(
        COMPLETED_AT_RUN.load(Ordering::Acquire) > GP_AT_QUEUE.load(Ordering::Acquire),
        format_args!(
            "when it ran, grace period {} (begun after it was queued) had completed ({} completed)",
            GP_AT_QUEUE.load(Ordering::Acquire) + 1,
            COMPLETED_AT_RUN.load(Ordering::Acquire)
        ),
    );
    if let Ok(r) = r {
        r.join();
    }
    callbacks_in_order(c);
}

/// Callbacks queued on one CPU run in the order they were queued (what
/// Linux's segmented callback list keeps, and what a callback that frees
/// a structure an earlier one still walks relies on).
fn callbacks_in_order(c: &mut Checks) {
    const N: usize = 16;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    static OUT_OF_ORDER: AtomicUsize = AtomicUsize::new(0);
    NEXT.store(0, Ordering::Release);
    OUT_OF_ORDER.store(0, Ordering::Release);
    {
        // One CPU's queue: no switch, hence no migration, between them.
        let _on_one_cpu = crate::sync::preempt::disable();
        for i in 0..N {
            rcu::call_rcu(move || {
                if NEXT.fetch_add(1, Ordering::AcqRel) != i {
                    OUT_OF_ORDER.fetch_add(1, Ordering::AcqRel);
                }
            });
        }
    }
    rcu::rcu_barrier();
    c.check(
        NEXT.load(Ordering::Acquire) == N && OUT_OF_ORDER.load(Ordering::Acquire) == 0,
        format_args!(
            "{N} callbacks queued on one CPU ran in the order queued ({} ran, {} out of order)",
            NEXT.load(Ordering::Acquire),
            OUT_OF_ORDER.load(Ordering::Acquire)
        ),
    );
}

pub fn stack_cache(_: &BootInfo, c: &mut Checks) {
    static BOTTOM: AtomicU64 = AtomicU64::new(0);
    let (strategy, mode) = (stack::strategy(), task::free_mode());
    stack::set_strategy(Strategy::VmapCached);
    task::set_free_mode(FreeMode::Exit);
    super::workload::settle();
    stack::drain_caches();
    stack::reset_cache_stats();
    let here = percpu::this().id;
    // The first task leaves a mark deep in its stack, where no frame of
    // either task reaches; the second counts what is left of it.
    const MARK_AT: u64 = 64;
    const MARK_LEN: u64 = 256;
    const MARK: u8 = 0xa5;
    static MARKS_LEFT: AtomicU64 = AtomicU64::new(0);
    let run = |name: &str| {
        task::spawn_on(here, name, || {
            let bottom = task::current().stack_bounds().0.as_u64();
            BOTTOM.store(bottom, Ordering::Release);
            let mark = bottom + MARK_AT..bottom + MARK_AT + MARK_LEN;
            let left = mark
                .clone()
                .filter(|&a| probe::read_u8(a) == Some(MARK))
                .count();
            MARKS_LEFT.store(left as u64, Ordering::Release);
            mark.for_each(|a| {
                probe::write_u8(super::license(), a, MARK);
            });
            0
        })
        .map(|h| h.join())
    };
    let first = run("cache-first");
    let first_lo = BOTTOM.load(Ordering::Acquire);
    let cached = stack::cache_newest(here).map(|a| a.as_u64());
    c.check(
        first == Ok(ExitStatus::Exited(0)) && cached == Some(first_lo),
        format_args!(
            "the first task's stack {first_lo:#x} went into CPU {here}'s cache at exit (newest cached: {cached:x?})"
        ),
    );
    let (hits, lookups) = stack::cache_stats();
    let second = run("cache-second");
    let second_lo = BOTTOM.load(Ordering::Acquire);
    let (hits_after, lookups_after) = stack::cache_stats();
    c.check(
        second == Ok(ExitStatus::Exited(0)) && second_lo == first_lo,
        format_args!("the next task on CPU {here} got that very stack back ({second_lo:#x})"),
    );
    c.check(
        MARKS_LEFT.load(Ordering::Acquire) == 0,
        format_args!(
            "it came back zeroed: {} of the {MARK_LEN} bytes the first task marked were left",
            MARKS_LEFT.load(Ordering::Acquire)
        ),
    );
    c.check(
        hits_after == hits + 1 && lookups_after == lookups + 1,
        format_args!(
            "one lookup, one hit: hits {hits} -> {hits_after}, lookups {lookups} -> {lookups_after}"
        ),
    );
    stack::set_strategy(strategy);
    task::set_free_mode(mode);
    super::workload::settle();
}

/// `life.rcu_stall`: a deliberate stall is caught, and told for what it
/// is. A task on the last CPU holds a grace period up, first with
/// preemption off (the CPU keeps taking its tick: it ages in its own
/// ticks), then with interrupts off (no tick: it ages by the NMIs it
/// answers). The threshold is lowered to 50 own ticks (200 ms) for the
/// scenario, so the run is short; the same rule at 500 is what keeps
/// `life.stress` quiet on a loaded host (README).
pub fn rcu_stall(_: &BootInfo, c: &mut Checks) {
    if percpu::online() < 2 {
        c.skip("needs at least 2 CPUs (one stalls, another notices)");
        return;
    }
    static INSIDE: AtomicBool = AtomicBool::new(false);
    static STALLS_BEFORE: AtomicU64 = AtomicU64::new(0);
    // How long a staller waits for the warning before giving up: well past
    // the 50 own ticks (200 ms of its own time) that make a stall here, and
    // short enough that a blind detector (`stall-blind`) costs the boot 10 s,
    // not a deadline under host load.
    const LIMIT_NS: u64 = 5_000_000_000;
    let cpu = percpu::online() - 1;
    rcu::set_stall_ticks(50);
    for irqs_off in [false, true] {
        let what = if irqs_off {
            "interrupts off"
        } else {
            "preemption off"
        };
        INSIDE.store(false, Ordering::Release);
        STALLS_BEFORE.store(rcu::stalls(), Ordering::Release);
        let body: fn() -> u64 = if irqs_off {
            || crate::sync::irq::without(stall_until_reported)
        } else {
            || {
                let _p = crate::sync::preempt::disable();
                stall_until_reported()
            }
        };
        let h = task::spawn_on(cpu, "rcu-staller", body);
        while !INSIDE.load(Ordering::Acquire) {
            task::yield_now();
        }
        // A grace period that must wait for the staller.
        let target = rcu::request_grace_period();
        let waited = h.map(|h| h.join());
        let stalls = rcu::stalls() - STALLS_BEFORE.load(Ordering::Acquire);
        let masks = rcu::last_stall();
        let named = if irqs_off {
            masks.irqs_off
        } else {
            masks.ticking
        };
        c.check(
            stalls == 1 && named & (1 << cpu) != 0,
            format_args!(
                "a stall with {what} on CPU {cpu} was reported, and as that ({stalls} warnings, {masks:?}; the staller saw it after {waited:?} ms)"
            ),
        );
        let start = time::now_ns();
        while rcu::completed() < target && time::now_ns() - start < 2_000_000_000 {
            task::yield_now();
        }
        c.check(
            rcu::completed() >= target,
            format_args!("the grace period it held up completed once it ended"),
        );
    }
    rcu::set_stall_ticks(0);

    /// Hold the CPU (in whatever section the caller entered) until a stall
    /// warning is printed, or give up after `LIMIT_NS`; how long it took.
    fn stall_until_reported() -> u64 {
        INSIDE.store(true, Ordering::Release);
        let t0 = time::now_ns();
        while rcu::stalls() == STALLS_BEFORE.load(Ordering::Acquire)
            && time::now_ns() - t0 < LIMIT_NS
        {
            core::hint::spin_loop();
        }
        (time::now_ns() - t0) / 1_000_000
    }
}
