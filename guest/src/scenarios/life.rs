//! `life.*`: task lifetimes under RCU, and the stack freed at exit.
//!
//! These turn the seeds' argument into checks: a reader inside an RCU
//! read-side section keeps seeing a valid task across its exit; the stack
//! is back in the per-CPU cache before the grace period ends while the task
//! struct waits for it; refcount misuse is reported and contained; a use
//! after free of a debug-placed task struct faults and is explained.
//! (`life.mm_refs`, the address-space counts, is `life_mm.rs`.)
use super::Checks;
use crate::arch::x86_64::{percpu, sabotage, time};
use crate::boot::BootInfo;
use crate::mm::guarded;
use crate::mm::stack::{self, Strategy};
use crate::task::{self, ExitStatus, FreeMode};
use crate::{mm, oops, rcu};
use alloc::vec::Vec;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use kcore::refcount::{Refcount, RefcountEvent, REFCOUNT_MAX};

pub fn rcu_reader(_: &BootInfo, c: &mut Checks) {
    if percpu::online() < 2 {
        c.skip("needs at least 2 CPUs (the reader must not stop the exiting task's CPU)");
        return;
    }
    static GO: AtomicBool = AtomicBool::new(false);
    static REAPED: AtomicBool = AtomicBool::new(false);
    GO.store(false, Ordering::Release);
    REAPED.store(false, Ordering::Release);
    let here = percpu::this().id;
    let other = (here + 1) % percpu::online();
    let target = match task::spawn_on(other, "rcu-target", || {
        while !GO.load(Ordering::Acquire) {
            core::hint::spin_loop();
        }
        7
    }) {
        Ok(h) => h,
        Err(e) => {
            c.check(false, format_args!("spawn: {e:?}"));
            return;
        }
    };
    let id = target.id();
    // The reaper runs on the other CPU: joining releases the task there.
    let reaper = task::spawn_on(other, "rcu-reaper", move || {
        let v = match target.join() {
            ExitStatus::Exited(v) => v,
            ExitStatus::Killed(_) => u64::MAX,
        };
        REAPED.store(true, Ordering::Release);
        v
    });
    let seen = {
        let _rcu = rcu::read_lock();
        let Some(t) = task::find_get(id) else {
            c.check(false, format_args!("task {id} found under rcu_read_lock"));
            return;
        };
        GO.store(true, Ordering::Release);
        // Hold the read-side section across the exit and the reap, for
        // however long the other CPU takes (a loaded host may not run its
        // vCPU for a while: wait for the reap itself, not a fixed time).
        let t0 = time::now_ns();
        while !REAPED.load(Ordering::Acquire) && time::now_ns() - t0 < 5_000_000_000 {
            core::hint::spin_loop();
        }
        c.check(
            REAPED.load(Ordering::Acquire),
            format_args!("the target exited and was reaped while the reader held it"),
        );
        let valid = !t.is_freed() && t.id == id;
        c.check(
            valid,
            format_args!(
                "task {id} valid while the reader holds it (usage {})",
                t.usage()
            ),
        );
        c.check(
            task::find_get(id).is_none(),
            format_args!("a reaped task is no longer found by id"),
        );
        t
    };
    let reaped = reaper.ok().map(|r| r.join());
    c.check(
        reaped == Some(ExitStatus::Exited(7)),
        format_args!("the target exited and was reaped: {reaped:?}"),
    );
    let id_seen = seen.id;
    drop(seen);
    rcu::synchronize_rcu();
    rcu::rcu_barrier();
    c.check(
        super::workload::settle(),
        format_args!("task {id_seen} freed after the grace period"),
    );
}

pub fn stack_before_gp(_: &BootInfo, c: &mut Checks) {
    let (strategy, mode) = (stack::strategy(), task::free_mode());
    stack::set_strategy(Strategy::VmapCached);
    task::set_free_mode(FreeMode::Exit);
    let here = percpu::this().id;
    let cached_before = stack::cache_len(here);
    let t = match task::spawn_on(here, "short-lived", || 0) {
        Ok(h) => {
            let t = h.task();
            h.join();
            // No quiescent state on this CPU from here until the guard
            // drops: the delayed put queued by the reap cannot run yet.
            let _rcu = rcu::read_lock();
            let released = t.with_stack(|_| ()).is_none();
            let cached = stack::cache_len(here);
            c.check(
                released && cached >= cached_before.max(1),
                format_args!(
                    "the stack left the task and is back in CPU {here}'s cache ({cached} cached)"
                ),
            );
            c.check(
                !t.is_freed(),
                format_args!("the task struct is not freed yet: it waits for the grace period"),
            );
            t
        }
        Err(e) => {
            c.check(false, format_args!("spawn: {e:?}"));
            stack::set_strategy(strategy);
            task::set_free_mode(mode);
            return;
        }
    };
    rcu::synchronize_rcu();
    rcu::rcu_barrier();
    c.check(
        t.is_freed(),
        format_args!("after the grace period the struct is freed"),
    );
    stack::set_strategy(strategy);
    task::set_free_mode(mode);
}

pub fn refcount(_: &BootInfo, c: &mut Checks) {
    // A standalone count shows the refcount_t rules; a real task shows they
    // protect a struct.
    let r = Refcount::new(0);
    c.check(
        r.inc() == Err(RefcountEvent::AddOnZero),
        format_args!("increment from zero reported"),
    );
    c.check(
        r.is_saturated(),
        format_args!("and saturated, never resurrected"),
    );
    let r = Refcount::new(1);
    c.check(
        r.dec_and_test() == Ok(true),
        format_args!("last put reaches zero once"),
    );
    c.check(
        r.dec_and_test().is_err(),
        format_args!("a put below zero is reported as underflow"),
    );
    let r = Refcount::new(REFCOUNT_MAX);
    c.check(
        r.inc().is_err() && r.is_saturated(),
        format_args!("overflow saturates"),
    );
    c.check(
        r.dec_and_test().is_err() && r.is_saturated(),
        format_args!("saturation is sticky: a leak, never a free"),
    );

    let events = task::refcount_events();
    let freed = task::freed_count();
    let h = match task::spawn("refcount-victim", || 0) {
        Ok(h) => h,
        Err(e) => {
            c.check(false, format_args!("spawn: {e:?}"));
            return;
        }
    };
    let id = h.id();
    let held = task::find_get(id);
    h.join();
    rcu::synchronize_rcu();
    rcu::rcu_barrier();
    c.check(
        freed == task::freed_count(),
        format_args!("a held reference keeps the struct alive after reap"),
    );
    c.check(
        task::find_get(id).is_none(),
        format_args!("inc-not-zero finds nothing once reaped"),
    );
    drop(held);
    c.check(
        task::freed_count() == freed + 1,
        format_args!("the last put frees it, once"),
    );
    c.check(
        task::refcount_events() == events,
        format_args!("no refcount_t event on the normal path"),
    );

    // A real task whose count a leak of 2^31 gets has brought to the edge:
    // the next get saturates it, and from then on no put may free it (the
    // struct leaks, as in Linux, rather than being freed under a holder).
    // The task waits to be let go: its exit and reap put references, and
    // none may land between the count being set and the get below.
    static GO: AtomicBool = AtomicBool::new(false);
    GO.store(false, Ordering::Release);
    let h = match task::spawn("refcount-sat", || {
        while !GO.load(Ordering::Acquire) {
            task::yield_now();
        }
        0
    }) {
        Ok(h) => h,
        Err(e) => {
            c.check(false, format_args!("spawn: {e:?}"));
            return;
        }
    };
    let id = h.id();
    let (Some(held), Some(other)) = (task::find_get(id), task::find_get(id)) else {
        c.check(false, format_args!("find_get found the live task {id}"));
        return;
    };
    // And preemption off, so nothing else runs here either: beside two CPU
    // hogs, a tick once switched to the task right here, and its exit's
    // puts landed between the set and the get (1 run in 20).
    let (events, freed, again) = {
        let _still = crate::sync::preempt::disable();
        task::debug_usage_to_max(&held);
        let events = task::refcount_events();
        let freed = task::freed_count();
        (events, freed, task::find_get(id))
    };
    c.check(
        held.usage() >= kcore::refcount::REFCOUNT_SATURATED
            && task::refcount_events() == events + 1,
        format_args!("the get past REFCOUNT_MAX saturates the count, and says so"),
    );
    drop(again);
    drop(other);
    GO.store(true, Ordering::Release);
    h.join();
    rcu::synchronize_rcu();
    rcu::rcu_barrier();
    c.check(
        task::freed_count() == freed,
        format_args!(
            "no put frees a saturated task struct: {} freed by a put and the reap",
            task::freed_count() - freed
        ),
    );
    // The leak undone, so the boot's later scenarios start quiet.
    task::debug_unleak(held);
    c.check(
        task::freed_count() == freed + 1,
        format_args!("freed once its count is made whole again"),
    );
}

pub fn stress(_: &BootInfo, c: &mut Checks) {
    let n = super::workload::soak(10_000);
    super::workload::note(c, 10_000, n);
    static STOP: AtomicBool = AtomicBool::new(false);
    static VISITS: AtomicU64 = AtomicU64::new(0);
    static BAD: AtomicU64 = AtomicU64::new(0);
    // A warm-up round first: buffers that grow to a steady size (run
    // queues, RCU callback lists, the task list) are not leaks.
    let warm: Vec<_> = (0..512)
        .filter_map(|_| task::spawn("warm-up", || 0).ok())
        .collect();
    warm.into_iter().for_each(|h| {
        h.join();
    });
    c.check(
        super::workload::settle(),
        format_args!("quiet before the run"),
    );
    let before = super::counters_now();
    let stalls = rcu::stalls();
    rcu::reset_gp_ages();
    STOP.store(false, Ordering::Release);
    let readers: Vec<_> = (0..percpu::online())
        .filter_map(|cpu| {
            task::spawn_on(cpu, "list-reader", || {
                while !STOP.load(Ordering::Acquire) {
                    task::for_each_task(|t| {
                        VISITS.fetch_add(1, Ordering::Relaxed);
                        if t.is_freed() {
                            BAD.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                    task::yield_now();
                }
                0
            })
            .ok()
        })
        .collect();
    let mut flight = alloc::collections::VecDeque::new();
    let mut spawned = 0;
    for i in 0..n {
        if flight.len() >= 256 {
            let h: task::JoinHandle = flight.pop_front().expect("non-empty");
            h.join();
        }
        if let Ok(h) = task::spawn("stress", move || i) {
            flight.push_back(h);
            spawned += 1;
        }
    }
    flight.into_iter().for_each(|h| {
        h.join();
    });
    STOP.store(true, Ordering::Release);
    readers.into_iter().for_each(|h| {
        h.join();
    });
    c.check(
        spawned == n,
        format_args!("{spawned} of {n} tasks created and reaped on all CPUs"),
    );
    c.check(
        BAD.load(Ordering::Acquire) == 0,
        format_args!(
            "readers saw no freed task in {} visits",
            VISITS.load(Ordering::Acquire)
        ),
    );
    c.check(
        super::workload::settle(),
        format_args!("every task freed after its grace period"),
    );
    c.back_to_baseline(
        &before,
        true,
        format_args!("frame, vmalloc and heap counters back to baseline"),
    );
    rcu::rcu_barrier();
    let (unbalanced, crossed) = (
        crate::sync::lockdep::unbalanced(),
        crate::sync::lockdep::crossed(),
    );
    c.check(
        unbalanced == 0 && crossed == 0,
        format_args!(
            "every lock release matched an acquisition on the same task ({unbalanced} unmatched, {crossed} across a switch)"
        ),
    );
    let (wall_ms, own_ticks) = rcu::gp_ages();
    c.check(
        rcu::stalls() == stalls,
        format_args!(
            "no RCU stall warning during the run (longest grace period {wall_ms} ms of wall time; the most own ticks a CPU owed one: {own_ticks})"
        ),
    );
    if let Some(r) = rcu::counters() {
        c.check(
            r.pending == 0,
            format_args!(
                "no RCU callback left pending after rcu_barrier ({})",
                r.pending
            ),
        );
        c.info(format_args!(
            "rcu: {} grace periods, {} callbacks run, {} pending, batch per grace period: last {}, largest {}",
            r.gps_completed, r.callbacks_run, r.pending, r.last_batch, r.max_batch
        ));
        let mut hist = alloc::string::String::new();
        for (i, n) in r.batch_hist.iter().enumerate().filter(|(_, &n)| n > 0) {
            let _ = write!(hist, " {}+:{n}", kcore::rcu::batch_bucket_start(i));
        }
        c.info(format_args!(
            "rcu: grace periods by batch size (callbacks):{hist}"
        ));
    }
}

/// `life.uaf`: with task structs debug-placed, a pointer kept past the
/// last reference faults on the freed struct, and the report names the
/// task and tells its history; the reader is killed, the machine lives.
pub fn uaf(_: &BootInfo, c: &mut Checks) {
    let was = task::debug_placement();
    task::set_debug_placement(true);
    provoke_uaf(c);
    task::set_debug_placement(was);
}

/// The bug: a reader that kept a task struct's address, not a reference.
/// Not inlined, so the report can name it.
#[inline(never)]
fn stale_task_read(addr: u64) -> u8 {
    sabotage::touch(addr)
}

fn provoke_uaf(c: &mut Checks) {
    let here = percpu::this().id;
    let victim = match task::spawn("uaf-victim", || 0) {
        Ok(h) => h,
        Err(e) => {
            c.check(false, format_args!("spawn: {e:?}"));
            return;
        }
    };
    let (id, addr) = (victim.id(), victim.struct_addr());
    c.check(
        guarded::is_placed(addr),
        format_args!("task {id}'s struct lives in vmalloc pages of its own at {addr:#x}"),
    );
    victim.join();
    rcu::synchronize_rcu();
    rcu::rcu_barrier();
    c.check(
        super::workload::settle(),
        format_args!("task {id} freed after its grace period"),
    );
    c.check(
        guarded::freed_object_at(addr).is_some_and(|o| o.id == id),
        format_args!("its pages are unmapped, the range quarantined"),
    );
    // The free flushed only its own CPU's TLB (no IPIs from where frees
    // happen, as in KFENCE); force the batched shootdown so the outcome
    // does not depend on which CPU still caches the old translation.
    mm::vmalloc::purge();
    c.check(
        oops::announce_uaf(addr, "stale-reader"),
        format_args!("announced the freed struct before touching it"),
    );
    let before = oops::uaf_reports();
    let status = task::spawn_on(here, "stale-reader", move || {
        u64::from(stale_task_read(addr))
    })
    .map(|h| h.join());
    c.check(
        status
            .as_ref()
            .is_ok_and(|s| *s == ExitStatus::Killed("use after free")),
        format_args!("the stale read faulted and the reader was killed: {status:?}"),
    );
    let after = oops::uaf_reports();
    c.check(
        after.count == before.count + 1 && after.last_owner == id,
        format_args!("one use-after-free report, naming task {id}"),
    );
    c.check(
        after.last_had_history,
        format_args!("the report told task {id}'s history"),
    );
    let (placed, freed, fallbacks) = guarded::counters();
    c.info(format_args!(
        "debug-placed objects: {placed} placed, {freed} freed, {fallbacks} fell back to the heap"
    ));
    let alive = task::spawn("after-uaf", || 5).map(|h| h.join());
    c.check(
        alive.is_ok_and(|s| s == ExitStatus::Exited(5)),
        format_args!("the machine goes on"),
    );
}
