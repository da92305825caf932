//! Read-copy-update, the classic non-preemptible kind.
//!
//! A reader disables preemption (`read_lock`), so a CPU that context
//! switches, idles, or takes a tick outside a read-side section has passed a
//! quiescent state: it holds no reference obtained under an earlier
//! `read_lock`. A grace period ends once every CPU has passed one; callbacks
//! queued with `call_rcu` before it began then run, in a batch, on the CPU
//! that queued them. The grace-period bookkeeping is `kcore::rcu`
//! (host-tested); this module feeds it quiescent states and runs callbacks.
use crate::arch::x86_64::percpu;
use crate::sync::IrqLock;
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicUsize, Ordering};
use kcore::rcu::Rcu;

type Callback = Box<dyn FnOnce() + Send>;

static STATE: IrqLock<Option<Rcu<Callback>>> = IrqLock::new(None);

/// Start RCU once every CPU that will take part is online.
pub fn init(cpus: usize) {
    *STATE.lock() = Some(Rcu::new(cpus));
}

fn with<R>(f: impl FnOnce(&mut Rcu<Callback>) -> R) -> Option<R> {
    STATE.lock().as_mut().map(f)
}

/// A read-side critical section: no quiescent state on this CPU until it
/// is dropped, so whatever it found under RCU stays allocated.
pub struct ReadGuard(());

pub fn read_lock() -> ReadGuard {
    percpu::this().preempt_disable();
    ReadGuard(())
}

impl Drop for ReadGuard {
    fn drop(&mut self) {
        percpu::this().preempt_enable();
    }
}

/// Run `f` after a grace period, on this CPU.
pub fn call_rcu(f: impl FnOnce() + Send + 'static) {
    let cpu = percpu::this().id;
    let queued = with(|r| r.call_rcu(cpu, Box::new(f)));
    assert!(queued.is_some(), "call_rcu before rcu::init");
}

/// This CPU passed a quiescent state (the scheduler and the idle loop call
/// this; so does the tick when it interrupted code outside any read-side
/// section). Returns the callbacks now ready on this CPU, for the caller to
/// run outside the lock.
fn quiescent_state() -> Vec<Callback> {
    let cpu = percpu::this();
    if cpu.preempt_count() != 0 {
        return Vec::new();
    }
    with(|r| {
        r.quiescent_state(cpu.id);
        let done: Vec<Callback> = r.take_done(cpu.id).collect();
        // Counted under the lock, so `rcu_barrier` never sees a batch that
        // is neither queued nor counted as running.
        IN_FLIGHT.fetch_add(done.len(), Ordering::AcqRel);
        done
    })
    .unwrap_or_default()
}

/// Callbacks taken from the queue whose run has not finished.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Report a quiescent state and run this CPU's ready callbacks, each with
/// preemption off: Linux runs them from softirq, where nothing may sleep,
/// and `might_sleep` must see that even when a task with interrupts on runs
/// them (`synchronize_rcu`, `rcu_barrier`).
pub fn quiescent_state_and_run() {
    for cb in quiescent_state() {
        percpu::this().preempt_disable();
        cb();
        percpu::this().preempt_enable();
        IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
    }
}

/// From the tick: report a quiescent state if the interrupted code was
/// outside any read-side section, but leave the callbacks queued (they run
/// at the next switch or idle, not in interrupt context).
pub fn tick() {
    let cpu = percpu::this();
    if cpu.preempt_count() == 0 {
        if let Some(mut g) = STATE.try_lock() {
            if let Some(r) = g.as_mut() {
                r.quiescent_state(cpu.id);
            }
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
    while !with(|r| r.poll(target)).unwrap_or(true) {
        crate::task::yield_now();
        quiescent_state_and_run();
    }
}

pub fn counters() -> Option<kcore::rcu::Counters> {
    with(|r| r.counters())
}
