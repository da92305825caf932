//! `stack.*` in atomic context: an overflow while the task is inside an
//! RCU read-side section, with preemption off, holding a lock of each type
//! the guest has, inside an interrupts-off section, or running RCU
//! callbacks.
//!
//! The exit policy (`kcore::lockdep::exit_verdict`, README "Recovery")
//! decides each: preemption and RCU nesting alone are reset and noted, as
//! Linux's `make_task_dead()` does, and the machine goes on, which these
//! scenarios then check (the CPU's `preempt_count` is 0, a grace period
//! completes, the CPU still schedules). A lock, an interrupts-off section
//! or a callback batch makes the machine stop, "caught, cannot recover",
//! naming what was held: those scenarios end their boot, and the runner
//! holds their `TASK-STATE` against `abi::held::EXPECT`.
use super::stack::{check_tick, expect_killed, recurse_to_death, stack_recurse};
use super::Checks;
use crate::arch::x86_64::{percpu, time};
use crate::boot::BootInfo;
use crate::oops::HitKind;
use crate::rcu;
use crate::sync::irq;
use crate::sync::{preempt, IrqLock, SpinLock};
use crate::task::{self, ExitStatus};
use abi::held::VICTIM_LOCK;
use core::sync::atomic::{AtomicBool, Ordering};

/// After a kill on `cpu`: what recovery means, checked from the outside.
fn machine_went_on(c: &mut Checks, cpu: usize) {
    let count = task::spawn_on(cpu, "preempt-check", || {
        u64::from(percpu::this().preempt_count())
    })
    .map(|h| h.join());
    c.check(
        count == Ok(ExitStatus::Exited(0)),
        format_args!("CPU {cpu}'s preempt_count is back to 0: {count:?}"),
    );
    let target = rcu::request_grace_period();
    let start = time::now_ns();
    // Patient: a genuinely stuck grace period never ends, and a vCPU the
    // host starves ends it late.
    while rcu::completed() < target && time::now_ns() - start < 10_000_000_000 {
        task::yield_now();
    }
    c.check(
        rcu::completed() >= target,
        format_args!(
            "a grace period begun after the kill completed (waited {} ms)",
            (time::now_ns() - start) / 1_000_000
        ),
    );
    check_tick(c, cpu);
}

pub fn in_rcu(_: &BootInfo, c: &mut Checks) {
    // On the last CPU: with several, the others keep driving grace periods
    // that must wait for this one.
    let cpu = percpu::online() - 1;
    expect_killed(c, cpu, "rcu-reader", HitKind::Overflow, || {
        let _rcu = rcu::read_lock();
        recurse_to_death()
    });
    machine_went_on(c, cpu);
}

pub fn preempt_off(_: &BootInfo, c: &mut Checks) {
    let cpu = percpu::this().id;
    expect_killed(c, cpu, "no-preempt", HitKind::Overflow, || {
        let _p = preempt::disable();
        recurse_to_death()
    });
    machine_went_on(c, cpu);
}

pub fn nested_atomic(_: &BootInfo, c: &mut Checks) {
    let cpu = percpu::this().id;
    expect_killed(c, cpu, "nested-atomic", HitKind::Overflow, || {
        let _a = preempt::disable();
        let _b = rcu::read_lock();
        let _c = preempt::disable();
        let _d = rcu::read_lock();
        recurse_to_death()
    });
    machine_went_on(c, cpu);
}

/// The lock the lock-holding scenarios overflow with, one of each type.
static VICTIM: SpinLock<u64> = SpinLock::new(0).named(VICTIM_LOCK);
static VICTIM_IRQ: IrqLock<u64> = IrqLock::new(0).named(VICTIM_LOCK);

/// Not reached when the policy holds: the overflow stops the machine. In a
/// build whose kill path ignores what the task held, the waiter would spin
/// on the dead task's lock for good; say so in bounded time instead of
/// hanging until the runner's timeout.
fn after_a_kill_with_the_lock(c: &mut Checks, status: Result<ExitStatus, task::SpawnError>) {
    static GOT_IT: AtomicBool = AtomicBool::new(false);
    c.check(
        false,
        format_args!("the task holding {VICTIM_LOCK} was killed: {status:?}"),
    );
    GOT_IT.store(false, Ordering::Release);
    let waiter = task::spawn("lock-waiter", || {
        let _g = VICTIM.lock();
        GOT_IT.store(true, Ordering::Release);
        0
    });
    let start = time::now_ns();
    while !GOT_IT.load(Ordering::Acquire) && time::now_ns() - start < 1_000_000_000 {
        task::yield_now();
    }
    let got = GOT_IT.load(Ordering::Acquire);
    c.check(
        got,
        format_args!("another task could take {VICTIM_LOCK} after the kill"),
    );
    if got {
        if let Ok(w) = waiter {
            w.join();
        }
    } else {
        // Detached: it spins on a lock nobody holds any more.
        drop(waiter);
    }
}

pub fn lock_held(_: &BootInfo, c: &mut Checks) {
    let status = task::spawn("lock-holder", || {
        let _g = VICTIM.lock();
        // Another task that needs the lock, queued behind us.
        let _waiter = task::spawn("lock-waiter", || u64::from(*VICTIM.lock() == 0));
        recurse_to_death()
    })
    .map(|h| h.join());
    after_a_kill_with_the_lock(c, status);
}

pub fn irqlock_held(_: &BootInfo, c: &mut Checks) {
    let status = task::spawn("irqlock-holder", || {
        let _g = VICTIM_IRQ.lock();
        recurse_to_death()
    })
    .map(|h| h.join());
    c.check(
        false,
        format_args!("the task holding {VICTIM_LOCK} (IrqLock) was killed: {status:?}"),
    );
    c.check(
        VICTIM_IRQ.try_lock().is_some(),
        format_args!("{VICTIM_LOCK} can be taken after the kill"),
    );
}

pub fn irqs_section(_: &BootInfo, c: &mut Checks) {
    let status = task::spawn("irqs-section", || irq::without(recurse_to_death)).map(|h| h.join());
    c.check(
        false,
        format_args!("a task inside an interrupts-off section was killed: {status:?}"),
    );
}

/// The callback of `stack.rcu_callback`: recurse until the guard stops it,
/// but only in the task that announced its stack. Callbacks run at the
/// CPU's next quiescent state in whichever task passes it: under host load
/// the recovery worker sometimes did, on a stack nobody had announced (18
/// of 20 runs beside two CPU hogs passed). Anywhere else, queue again.
fn recurse_in(runner: u64) {
    if task::current().id != runner {
        rcu::call_rcu(move || recurse_in(runner));
        return;
    }
    stack_recurse(0, u64::MAX);
}

/// `stack.rcu_callback_preempted`: the callback where `stack.rcu_callback`
/// only sometimes runs it, under a preemption at interrupt exit. This task
/// spins and never yields, beside a second spinner, so the tick preempts it
/// from `irq_common`'s exit path every time; it is switched back to there,
/// and that switch's quiescent state runs the callback. Its trace crosses
/// the exit path's frame into the spin loop, and its context is the task's:
/// the interrupt's handler has returned (Linux's `preempt_schedule_irq`).
pub fn rcu_callback_preempted(_: &BootInfo, c: &mut Checks) {
    let status = task::spawn("rcu-cb-spinner", || {
        super::stack::announce_own_stack(super::stack::recursion_frame_bytes());
        // Something else to run here, so that the tick asks to reschedule.
        let here = percpu::this().id;
        let _other = task::spawn_on(here, "rcu-cb-other", || loop {
            core::hint::spin_loop();
        });
        let me = task::current().id;
        rcu::call_rcu(move || recurse_in(me));
        loop {
            core::hint::spin_loop();
        }
    })
    .map(|h| h.join());
    c.check(
        false,
        format_args!("a task preempted into RCU callbacks was killed: {status:?}"),
    );
}

pub fn rcu_callback(_: &BootInfo, c: &mut Checks) {
    let status = task::spawn("rcu-cb-runner", || {
        super::stack::announce_own_stack(super::stack::recursion_frame_bytes());
        let me = task::current().id;
        rcu::call_rcu(move || recurse_in(me));
        // Callbacks run on this CPU at its next quiescent state: mostly
        // here, in this task's yields, on this task's stack.
        loop {
            task::yield_now();
        }
    })
    .map(|h| h.join());
    c.check(
        false,
        format_args!("a task running RCU callbacks was killed: {status:?}"),
    );
}
