//! Read-copy-update, the classic non-preemptible kind.
//!
//! A reader disables preemption (`read_lock`), so a CPU that context
//! switches, idles, or takes a tick outside a read-side section has passed a
//! quiescent state: it holds no reference obtained under an earlier
//! `read_lock`. A grace period ends once every CPU has passed one; callbacks
//! queued with `call_rcu` before it began then run, in a batch, on the CPU
//! that queued them. The grace-period bookkeeping is `kcore::rcu`
//! (host-tested); this module feeds it quiescent states and runs callbacks.
//!
//! As in Linux, a context switch only *notes* its quiescent state in a
//! per-CPU word (`rcu_qs()`); the scheduler tick reports it to the
//! grace-period machinery (`rcu_sched_clock_irq()`). That keeps the global
//! lock off the switch path, and it makes a grace period last a tick or two
//! (4-8 ms at 250 Hz) however fast tasks come and go, so a fork-heavy load
//! queues many frees per grace period: the condition under which the LWN
//! seed found the stack cache useless with RCU-deferred freeing.
//!
//! RCU and `task` are one layer and name each other, on purpose: the
//! scheduler reports quiescent states and ticks here, and
//! `synchronize_rcu` and `rcu_barrier` wait by yielding the CPU
//! (`task::yield_now`); task structs and stacks are freed after a grace
//! period (`task::lifetime`).
use crate::arch::x86_64::{percpu, time};
use crate::sync::preempt::PreemptGuard;
use crate::sync::IrqLock;
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::panic::Location;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use kcore::lockdep::HeldKind;
use kcore::rcu::Rcu;
use kcore::rcu_stall;

mod stall;

use stall::{
    check_stall, note_gp_start, policy, progress, progress_at_start, GP_STARTED_NS, MAX_GP_WALL_NS,
    MAX_QS_OWN_TICKS,
};
pub use stall::{gp_ages, last_stall, reset_gp_ages, set_stall_ticks, stalls};

type Callback = Box<dyn FnOnce() + Send>;

static STATE: IrqLock<Option<Rcu<Callback>>> = IrqLock::new(None).named("rcu_state");

/// Start RCU once every CPU that will take part is online.
pub fn init(cpus: usize) {
    *STATE.lock() = Some(Rcu::new(cpus));
}

/// `gp_seq()` and `completed()`, readable without the lock: a switch notes
/// its quiescent state against the first, the tick skips the lock when the
/// two are equal (no grace period to report to).
static GP_SEQ: AtomicU64 = AtomicU64::new(0);
static COMPLETED: AtomicU64 = AtomicU64::new(0);
/// Per CPU: `GP_SEQ` when it last passed a quiescent state at a switch or
/// in the idle loop, not yet reported.
static NOTED: [AtomicU64; percpu::MAX_CPUS] = [const { AtomicU64::new(0) }; percpu::MAX_CPUS];
/// Per CPU: a grace period ended with callbacks of this CPU's ready.
static READY: [AtomicBool; percpu::MAX_CPUS] = [const { AtomicBool::new(false) }; percpu::MAX_CPUS];

fn with<R>(f: impl FnOnce(&mut Rcu<Callback>) -> R) -> Option<R> {
    with_state(STATE.lock().as_mut(), f)
}

/// Run `f` on the state, then publish what changed to the lock-free side.
fn with_state<R>(
    state: Option<&mut Rcu<Callback>>,
    f: impl FnOnce(&mut Rcu<Callback>) -> R,
) -> Option<R> {
    let r = state?;
    let completed = r.completed();
    let out = f(r);
    if r.completed() != completed {
        for (cpu, ready) in READY.iter().enumerate().take(r.n_cpus()) {
            if r.has_done(cpu) {
                ready.store(true, Ordering::Release);
            }
        }
        COMPLETED.store(r.completed(), Ordering::Release);
    }
    if r.completed() != completed {
        let wall = time::now_ns().saturating_sub(GP_STARTED_NS.load(Ordering::Acquire));
        MAX_GP_WALL_NS.fetch_max(wall, Ordering::AcqRel);
    }
    if GP_SEQ.swap(r.gp_seq(), Ordering::AcqRel) != r.gp_seq() {
        note_gp_start();
    }
    Some(out)
}

/// A read-side critical section: no quiescent state on this CPU until it
/// is dropped, so whatever it found under RCU stays allocated. Classic RCU:
/// it is a preemption-off section (the guard proves it), recorded on the
/// task's held-lock stack as `rcu_read_lock`.
pub struct ReadGuard {
    _preempt: PreemptGuard,
}

#[track_caller]
pub fn read_lock() -> ReadGuard {
    ReadGuard {
        _preempt: PreemptGuard::enter(HeldKind::RcuRead, "rcu_read_lock", Location::caller()),
    }
}

/// Run `f` after a grace period, on this CPU.
pub fn call_rcu(f: impl FnOnce() + Send + 'static) {
    let cpu = percpu::this().id;
    let queued = with(|r| r.call_rcu(cpu, Box::new(f)));
    assert!(queued.is_some(), "call_rcu before rcu::init");
}

/// Callbacks taken from the queue whose run has not finished.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// This CPU passed a quiescent state (the scheduler and the idle loop call
/// this): note it for the tick to report, and run whatever callbacks of
/// this CPU's a finished grace period made ready.
pub fn quiescent_state_and_run() {
    let cpu = percpu::this();
    if cpu.preempt_count() != 0 {
        return;
    }
    NOTED[cpu.id].store(GP_SEQ.load(Ordering::Acquire), Ordering::Release);
    if !READY[cpu.id].swap(false, Ordering::AcqRel) {
        return;
    }
    let done = with(|r| {
        let done: Vec<Callback> = r.take_done(cpu.id).collect();
        // Counted under the lock, so `rcu_barrier` never sees a batch that
        // is neither queued nor counted as running.
        IN_FLIGHT.fetch_add(done.len(), Ordering::AcqRel);
        done
    })
    .unwrap_or_default();
    // Preemption off around each, as in softirq, where Linux runs them:
    // `might_sleep` must see that nothing may sleep here even when a task
    // with interrupts on runs them (`synchronize_rcu`, `rcu_barrier`).
    // Each is recorded as an RCU callback section: a task caught inside
    // one cannot be killed, or the rest of the batch (and `rcu_barrier`'s
    // count of it) would be lost.
    #[cfg(not(defect = "rcu-callbacks-reversed"))]
    let batch = done.into_iter();
    // A deliberate defect (`runner --defect rcu-callbacks-reversed`): the
    // batch run from its end, as `while let Some(cb) = done.pop()` does:
    // the newest callback first.
    #[cfg(defect = "rcu-callbacks-reversed")]
    let batch = done.into_iter().rev();
    for cb in batch {
        let section =
            PreemptGuard::enter(HeldKind::RcuCallbacks, "rcu_callbacks", Location::caller());
        cb();
        drop(section);
        IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
    }
}

/// From the tick: report this CPU's quiescent state, either the tick's own
/// (it interrupted code outside any read-side section) or one a switch
/// noted during the grace period in progress. Callbacks stay queued; they
/// run at the next switch or idle, not in interrupt context.
pub fn tick() {
    let cpu = percpu::this();
    let seq = GP_SEQ.load(Ordering::Acquire);
    if seq == COMPLETED.load(Ordering::Acquire) {
        return;
    }
    check_stall(seq);
    // The defect "a grace period that ends early": the tick reports a
    // quiescent state even from inside a read-side section.
    let now = cpu.preempt_count() == 0 || cfg!(defect = "gp-early");
    let noted = NOTED[cpu.id].load(Ordering::Acquire);
    if !now && noted != seq {
        return;
    }
    // Another CPU may hold the lock with this one's tick pending: try
    // again at the next tick rather than spin in interrupt context.
    if let Some(mut g) = STATE.try_lock() {
        let reported = with_state(g.as_mut(), |r| {
            let owed = r.needs_qs(cpu.id);
            if now {
                r.quiescent_state(cpu.id);
                owed
            } else {
                r.noted_quiescent_state(cpu.id, noted)
            }
        });
        if reported == Some(true) {
            let age = rcu_stall::own_age(progress_at_start(cpu.id), progress(cpu), &policy());
            MAX_QS_OWN_TICKS.fetch_max(age, Ordering::AcqRel);
        }
    }
}

/// Wait until every callback queued (on any CPU) before this call has run.
pub fn rcu_barrier() {
    let Some(cookie) = with(|r| r.barrier_cookie()) else {
        return;
    };
    while !with(|r| r.barrier_done(cookie)).unwrap_or(true)
        || IN_FLIGHT.load(Ordering::Acquire) != 0
    {
        crate::task::yield_now();
        quiescent_state_and_run();
    }
}

/// Wait for a full grace period (yielding: each switch is a quiescent state
/// for this CPU).
pub fn synchronize_rcu() {
    let Some(target) = with(|r| r.wait_target()) else {
        return;
    };
    // The defect "a synchronize_rcu() that does not wait".
    if cfg!(defect = "sync-no-wait") {
        return;
    }
    while !with(|r| r.poll(target)).unwrap_or(true) {
        crate::task::yield_now();
        quiescent_state_and_run();
    }
}

/// Grace periods started so far (the number of the one in progress, if
/// any), read without the lock.
pub fn gp_seq() -> u64 {
    GP_SEQ.load(Ordering::Acquire)
}

/// Grace periods completed so far, read without the lock.
pub fn completed() -> u64 {
    COMPLETED.load(Ordering::Acquire)
}

/// Ask for a grace period that starts after this call (one starts even
/// with no callbacks queued); it has ended once `completed()` reaches the
/// value returned. `u64::MAX` before `init`.
pub fn request_grace_period() -> u64 {
    with(|r| r.wait_target()).unwrap_or(u64::MAX)
}

pub fn counters() -> Option<kcore::rcu::Counters> {
    with(|r| r.counters())
}
