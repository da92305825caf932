//! `core.*`: the kernel core under load — tasks, scheduling, SMP, memory.
//!
//! Each scenario checks an invariant the testbed's overflow scenarios rely
//! on: that tasks really run everywhere, that `current` is right, that
//! nothing leaks, and that every stack has its guard pages.
use super::Checks;
use crate::arch::x86_64::{percpu, probe, time};
use crate::boot::BootInfo;
use crate::mm::paging;
use crate::mm::stack::{self, StackKind, Strategy};
use crate::mm::vmalloc::{self, Owner};
use crate::sync::{lockdep, preempt, SpinLock};
use crate::task::{self, ExitStatus, JoinHandle};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use kcore::vmalloc::Guards;
use x86_64::VirtAddr;

/// How many tasks may be alive at once in the bulk scenarios: bounded so
/// that 10 000 tasks fit in a small guest (each has a 16 KiB stack).
const IN_FLIGHT: usize = 256;

/// Spawn `n` tasks (at most `IN_FLIGHT` alive), each running `work(i)`, and
/// collect their exit statuses in order.
fn spawn_many(
    n: u64,
    name: &str,
    work: fn(u64) -> u64,
) -> Result<Vec<ExitStatus>, task::SpawnError> {
    let mut results = Vec::with_capacity(n as usize);
    let mut flight: alloc::collections::VecDeque<JoinHandle> = alloc::collections::VecDeque::new();
    for i in 0..n {
        if flight.len() >= IN_FLIGHT {
            results.push(flight.pop_front().expect("non-empty").join());
        }
        flight.push_back(task::spawn(name, move || work(i))?);
    }
    results.extend(flight.into_iter().map(JoinHandle::join));
    Ok(results)
}

fn square_plus_cpu_check(i: u64) -> u64 {
    // The value proves the task ran its own closure; the CPU check proves
    // `current` and the per-CPU block agree.
    let on = percpu::this().id;
    let ok = task::current().cpu() == on;
    i * i + if ok { 0 } else { 1 << 63 }
}

pub fn spawn_join(_: &BootInfo, c: &mut Checks) {
    let n = super::workload::soak(10_000);
    super::workload::note(c, 10_000, n);
    let before: Vec<u64> = percpu::all()
        .map(|p| {
            crate::task::SCHED
                .get(p.id)
                .switches
                .load(Ordering::Relaxed)
        })
        .collect();
    let results = match spawn_many(n, "spawn-join", square_plus_cpu_check) {
        Ok(r) => r,
        Err(e) => {
            c.check(false, format_args!("spawning {n} tasks: {e:?}"));
            return;
        }
    };
    let wrong = results
        .iter()
        .enumerate()
        .filter(|(i, r)| **r != ExitStatus::Exited((*i as u64) * (*i as u64)))
        .count();
    c.check(
        wrong == 0,
        format_args!("{n} tasks joined, {wrong} wrong results"),
    );
    for (cpu, b) in percpu::all().zip(before) {
        let ran = crate::task::SCHED
            .get(cpu.id)
            .switches
            .load(Ordering::Relaxed)
            - b;
        c.check(ran > 0, format_args!("CPU {} switched {ran} times", cpu.id));
    }
}

pub fn preempt(_: &BootInfo, c: &mut Checks) {
    // Two never-yielding spinners per CPU: only the timer can share the CPUs.
    let n = percpu::online() * 2 + 1;
    static STOP: AtomicBool = AtomicBool::new(false);
    static PROGRESS: [AtomicU64; 2 * percpu::MAX_CPUS + 1] =
        [const { AtomicU64::new(0) }; 2 * percpu::MAX_CPUS + 1];
    STOP.store(false, Ordering::Relaxed);
    let mut handles = Vec::new();
    for (i, progress) in PROGRESS.iter().enumerate().take(n) {
        progress.store(0, Ordering::Relaxed);
        let h = task::spawn("spinner", move || {
            while !STOP.load(Ordering::Relaxed) {
                PROGRESS[i].fetch_add(1, Ordering::Relaxed);
            }
            0
        });
        match h {
            Ok(h) => handles.push(h),
            Err(e) => {
                c.check(false, format_args!("spawn spinner: {e:?}"));
                return;
            }
        }
    }
    // This task is one more CPU-bound contender: it gets the CPU back only
    // through preemption too.
    let deadline = time::now_ns() + 200_000_000;
    while time::now_ns() < deadline {
        core::hint::spin_loop();
    }
    let snapshot: Vec<u64> = (0..n)
        .map(|i| PROGRESS[i].load(Ordering::Relaxed))
        .collect();
    STOP.store(true, Ordering::Relaxed);
    for h in handles {
        h.join();
    }
    let stalled = snapshot.iter().filter(|&&p| p == 0).count();
    c.check(
        stalled == 0,
        format_args!(
            "{n} spinners on {} CPUs, {stalled} never ran",
            percpu::online()
        ),
    );
    let ticks: u64 = percpu::all().map(|p| p.ticks()).sum();
    c.info(format_args!("timer ticks so far: {ticks}"));
}

pub fn leak(_: &BootInfo, c: &mut Checks) {
    let cycles = super::workload::soak(100_000);
    super::workload::note(c, 100_000, cycles);
    let original = stack::strategy();
    for &s in Strategy::ALL {
        stack::set_strategy(s);
        // One round first, so that buffers which grow to a steady size (run
        // queues, the lazy-free list) are not mistaken for leaks.
        if spawn_many(2 * IN_FLIGHT as u64, "leak-warmup", |i| i).is_err() {
            c.check(false, format_args!("{}: warm-up spawn failed", s.as_str()));
            continue;
        }
        let settled = super::workload::settle();
        let before = super::counters_now();
        let t0 = time::now_ns();
        if let Err(e) = spawn_many(cycles, "leak", |i| i) {
            c.check(false, format_args!("{}: spawn: {e:?}", s.as_str()));
            continue;
        }
        let settled = settled && super::workload::settle();
        let ms = (time::now_ns() - t0) / 1_000_000;
        c.check(
            settled,
            format_args!(
                "{}: every task reaped ({} live)",
                s.as_str(),
                task::live_tasks()
            ),
        );
        c.back_to_baseline(
            &before,
            true,
            format_args!(
                "{}: {cycles} spawn/exit cycles in {ms} ms, counters back to baseline",
                s.as_str()
            ),
        );
    }
    stack::set_strategy(original);
}

pub fn shootdown(_: &BootInfo, c: &mut Checks) {
    let a = match vmalloc::vmalloc(1, Guards::default(), Owner::Named("shootdown")) {
        Ok(a) => a,
        Err(e) => {
            c.check(false, format_args!("vmalloc: {e:?}"));
            return;
        }
    };
    let addr = a.base;
    c.check(
        probe::write_u8(super::license(), addr, 0x5a),
        format_args!("page {addr:#x} writable here"),
    );
    // Every other CPU reads it, so that its TLB caches the translation, and
    // then stays with preemption off until the purge is done: a switch in
    // between (under TCG any CR3 write flushes the whole TLB) would drop
    // the entry, and a CPU that no longer caches it faults whether the
    // shootdown reached it or not. With the readers gone before the purge,
    // `shootdown-local-only` once passed under host load.
    let others: Vec<usize> = (0..percpu::online())
        .filter(|&i| i != percpu::this().id)
        .collect();
    static READY: AtomicUsize = AtomicUsize::new(0);
    static GO: AtomicBool = AtomicBool::new(false);
    READY.store(0, Ordering::Release);
    GO.store(false, Ordering::Release);
    let checkers: Vec<_> = others
        .iter()
        .filter_map(|&cpu| {
            task::spawn_on(cpu, "tlb-check", move || {
                let _still = preempt::disable();
                let warm = probe::read_u8(addr) == Some(0x5a);
                READY.fetch_add(1, Ordering::AcqRel);
                while !GO.load(Ordering::Acquire) {
                    core::hint::spin_loop();
                }
                u64::from(warm) | u64::from(probe::read_u8(addr).is_none()) << 1
            })
            .ok()
        })
        .collect();
    let start = time::now_ns();
    while READY.load(Ordering::Acquire) < checkers.len() && time::now_ns() - start < 10_000_000_000
    {
        task::yield_now();
    }
    let _ = vmalloc::vfree(VirtAddr::new(addr));
    c.check(
        probe::read_u8(addr).is_none(),
        format_args!("after vfree, this CPU faults on it"),
    );
    // vfree defers the cross-CPU flush (lazy vunmap); the purge is the
    // shootdown this scenario is about.
    vmalloc::purge();
    GO.store(true, Ordering::Release);
    let results: Vec<u64> = checkers
        .into_iter()
        .map(JoinHandle::join)
        .map(|s| match s {
            ExitStatus::Exited(v) => v,
            _ => 0,
        })
        .collect();
    let warmed = results.iter().filter(|&&v| v & 1 != 0).count();
    let faulted = results.iter().filter(|&&v| v & 2 != 0).count();
    c.check(
        warmed == others.len(),
        format_args!("{warmed} of {} other CPUs read the page", others.len()),
    );
    c.check(
        faulted == others.len(),
        format_args!(
            "after the purge, {faulted} of {} other CPUs fault on it (TLB shot down)",
            others.len()
        ),
    );
}

pub fn current(_: &BootInfo, c: &mut Checks) {
    let hops = super::workload::scaled(2_000);
    super::workload::note(c, 2_000, hops);
    let n = percpu::online();
    let workers: Vec<_> = (0..n)
        .filter_map(|w| {
            task::spawn("migrant", move || {
                let me = task::current_id();
                let mut wrong = 0;
                for hop in 0..hops {
                    let target = ((w as u64 + hop) % n as u64) as usize;
                    task::migrate_to(target);
                    let here = percpu::this().id;
                    if task::current_id() != me || here != target || task::current().cpu() != here {
                        wrong += 1;
                    }
                }
                wrong
            })
            .ok()
        })
        .collect();
    c.check(
        workers.len() == n,
        format_args!("{n} migrating tasks spawned"),
    );
    let wrong: u64 = workers
        .into_iter()
        .map(|h| match h.join() {
            ExitStatus::Exited(w) => w,
            ExitStatus::Killed(_) => hops,
        })
        .sum();
    c.check(
        wrong == 0,
        format_args!(
            "{} migrations over {n} CPUs, current() wrong {wrong} times",
            hops * n as u64
        ),
    );
    held_locks_follow_current(c);
}

/// The held-lock stack a CPU records on is switched with `current`: a
/// task that holds nothing sees nothing on it while another task on the
/// same CPU sits on a lock (what the exit policy's "what it held" rests on).
fn held_locks_follow_current(c: &mut Checks) {
    static PROBE: SpinLock<()> = SpinLock::new(()).named("held_probe");
    static HOLDING: AtomicBool = AtomicBool::new(false);
    static RELEASE: AtomicBool = AtomicBool::new(false);
    static SEEN: AtomicU64 = AtomicU64::new(u64::MAX);
    HOLDING.store(false, Ordering::Release);
    RELEASE.store(false, Ordering::Release);
    SEEN.store(u64::MAX, Ordering::Release);
    let here = percpu::this().id;
    let holder = task::spawn_on(here, "held-probe-holder", || {
        let _g = PROBE.lock();
        HOLDING.store(true, Ordering::Release);
        while !RELEASE.load(Ordering::Acquire) {
            task::yield_now();
        }
        0
    });
    let looker = task::spawn_on(here, "held-probe-looker", || {
        while !HOLDING.load(Ordering::Acquire) {
            task::yield_now();
        }
        let locks = lockdep::current()
            .and_then(|(held, _)| held)
            .map_or(u64::MAX, |h| u64::from(h.depths().locks()));
        SEEN.store(locks, Ordering::Release);
        RELEASE.store(true, Ordering::Release);
        0
    });
    for h in [holder, looker].into_iter().flatten() {
        h.join();
    }
    let seen = SEEN.load(Ordering::Acquire);
    c.check(
        seen == 0,
        format_args!(
            "a task holding nothing saw {seen} lock(s) on its held-lock stack while another task on CPU {here} held held_probe"
        ),
    );
}

pub fn guard_layout(_: &BootInfo, c: &mut Checks) {
    // A few live task stacks, so task stacks are audited too.
    static HOLD: AtomicBool = AtomicBool::new(true);
    HOLD.store(true, Ordering::Relaxed);
    let sleepers: Vec<_> = (0..percpu::online())
        .filter_map(|_| {
            task::spawn("sleeper", || {
                while HOLD.load(Ordering::Relaxed) {
                    task::yield_now();
                }
                0
            })
            .ok()
        })
        .collect();
    let mut per_kind = [0usize; 5];
    let mut bad_guard = 0;
    let mut bad_body = 0;
    vmalloc::for_each(|a| {
        let Owner::Stack { kind, .. } = a.owner else {
            return;
        };
        per_kind[kind as usize] += 1;
        for g in a
            .guard_below_range()
            .chain(a.guard_above_range())
            .step_by(4096)
        {
            if paging::translate(VirtAddr::new(g)).is_some() {
                bad_guard += 1;
            }
        }
        for p in (a.base..a.top()).step_by(4096) {
            if paging::translate(VirtAddr::new(p)).is_none() {
                bad_body += 1;
            }
        }
    });
    HOLD.store(false, Ordering::Relaxed);
    sleepers.into_iter().for_each(|h| {
        h.join();
    });
    let cpus = percpu::online();
    for (kind, min) in [
        (StackKind::Task, cpus),
        (StackKind::Irq, cpus),
        (StackKind::DoubleFault, cpus),
        (StackKind::Nmi, cpus),
        (StackKind::MachineCheck, cpus),
    ] {
        let n = per_kind[kind as usize];
        c.check(
            n >= min,
            format_args!("{} stacks: {n} (at least {min})", kind.linux_name()),
        );
    }
    c.check(
        bad_guard == 0,
        format_args!("guard pages mapped: {bad_guard}"),
    );
    c.check(
        bad_body == 0,
        format_args!("stack pages unmapped: {bad_body}"),
    );
    c.info(format_args!(
        "guard pages per side: {}",
        stack::guard_pages()
    ));
}
