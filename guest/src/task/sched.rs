//! The scheduler: per-CPU run queues, round robin, preemption by the LAPIC
//! timer, an idle task per CPU, and cross-CPU wakeups by IPI.
//!
//! Every entry here runs with interrupts off. A switch is two halves:
//! `schedule` on the outgoing task's stack picks the next task and switches;
//! `finish_switch`, run by whatever runs next on that CPU, completes the
//! outgoing task's side: it may now be resumed elsewhere (`take_prev` releases its context),
//! and if it is dead its stack goes back right away (to the per-CPU cache or
//! the vmalloc area), before anyone could still be using it.
use super::{flags, State, Task};
use crate::arch::x86_64::current::CurrentTasks;
use crate::arch::x86_64::percpu::{CpuLocal, MAX_CPUS};
use crate::arch::x86_64::{interrupts, lapic, percpu};
use crate::sync::irq;
use crate::sync::IrqLock;
use alloc::collections::VecDeque;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use spin::Once;

/// Scheduler state of one CPU.
pub struct SchedCpu {
    runqueue: IrqLock<VecDeque<Arc<Task>>>,
    idle: Once<Arc<Task>>,
    /// Context switches performed.
    pub switches: AtomicU64,
}

/// Every CPU's run queue and idle task.
pub static SCHED: CpuLocal<SchedCpu> = CpuLocal::new([const { SchedCpu::new() }; MAX_CPUS]);

/// Every CPU's running task (the mechanism is arch's; the policy is here).
pub(super) static CURRENT: CurrentTasks<Task> = CurrentTasks::new(&crate::sync::lockdep::HELD);

impl SchedCpu {
    pub const fn new() -> SchedCpu {
        SchedCpu {
            runqueue: IrqLock::new(VecDeque::new()).named("rq->lock"),
            idle: Once::new(),
            switches: AtomicU64::new(0),
        }
    }

    pub(super) fn set_idle(&self, task: Arc<Task>) {
        self.idle.call_once(|| task);
    }

    pub fn queued(&self) -> usize {
        self.runqueue.lock().len()
    }
}

static NEXT_CPU: AtomicUsize = AtomicUsize::new(0);

/// Round-robin over the online CPUs.
pub(super) fn pick_cpu() -> usize {
    NEXT_CPU.fetch_add(1, Ordering::Relaxed) % percpu::online().max(1)
}

/// Put a runnable task on the run queue of its CPU, and kick that CPU if it
/// is not this one (it may be idle in `hlt`).
pub(super) fn enqueue(task: Arc<Task>) {
    let target = task.cpu();
    task.set_state(State::Runnable);
    let cpu = percpu::get(target).expect("enqueue on an offline CPU");
    SCHED.get(target).runqueue.lock().push_back(task);
    if target != percpu::this().id {
        lapic::send_ipi(
            cpu.lapic_id,
            lapic::Delivery::Fixed(interrupts::RESCHEDULE_VECTOR),
        );
    } else {
        percpu::this().set_need_resched(true);
    }
}

/// Wake a blocked task; a task already woken is left alone.
pub(super) fn wake(task: Arc<Task>) {
    if task.cas_state(State::Blocked, State::Runnable) {
        enqueue(task);
    }
}

/// Switch away from the running task, which has already said what it wants:
/// still `Running` means "requeue me" (a yield or preemption); anything else
/// (blocked, dead, or already queued elsewhere) means "don't".
pub(super) fn schedule() {
    debug_assert!(!x86_64::instructions::interrupts::are_enabled());
    let cpu = percpu::this();
    let local = SCHED.get(cpu.id);
    let next = {
        let mut rq = local.runqueue.lock();
        let requeue = CURRENT
            .with_current(|t| {
                !t.has_flag(flags::IDLE) && t.cas_state(State::Running, State::Runnable)
            })
            .unwrap_or(false);
        if requeue {
            rq.push_back(CURRENT.current().expect("a requeued task is current"));
        }
        pick_next(&mut rq)
    };
    let next = next.unwrap_or_else(|| local.idle.get().expect("no idle task on this CPU").clone());
    cpu.set_need_resched(false);
    if CURRENT
        .with_current(|t| core::ptr::eq(t, &*next))
        .unwrap_or(false)
    {
        next.set_state(State::Running);
        return;
    }
    next.set_state(State::Running);
    next.cpu.store(cpu.id, Ordering::Relaxed);
    next.switches.fetch_add(1, Ordering::Relaxed);
    local.switches.fetch_add(1, Ordering::Relaxed);
    // One per-CPU fact says where the running task's stack ends: TSS.rsp0.
    // A deliberate defect (`runner --defect rsp0-stale`): the switch
    // forgets it, and rsp0 goes on naming a stack the CPU has left.
    #[cfg(not(defect = "rsp0-stale"))]
    cpu.set_stack_top(next.stack_top);
    CURRENT.switch_to(next);
    finish_switch();
}

/// The first queued task that may run here. A task still leaving another
/// CPU (woken or migrated right after it switched out there) is skipped,
/// not waited for: its registers are saved only by that CPU's
/// `finish_switch`, and that CPU may at this moment be waiting for one of
/// ours. Skipping keeps both sides moving; the task is picked up on the next
/// pass (the idle loop comes straight back while anything is queued).
fn pick_next(rq: &mut VecDeque<Arc<Task>>) -> Option<Arc<Task>> {
    for _ in 0..rq.len() {
        let t = rq.pop_front()?;
        let is_current = CURRENT
            .with_current(|c| core::ptr::eq(c, &*t))
            .unwrap_or(false);
        if is_current || !t.context.is_running() {
            return Some(t);
        }
        rq.push_back(t);
    }
    None
}

/// The second half of a switch, on the incoming task, on whatever CPU it
/// now runs on.
pub(super) fn finish_switch() {
    if let Some(prev) = CURRENT.take_prev() {
        if prev.state() == State::Dead {
            // A killed task: what must already be true now that the CPU
            // has left it (before its stack and struct can go).
            super::recovery::switched_away(&prev);
            // Nothing of the task lives on its stack, so (per the free mode)
            // the stack can go now, long before the task struct does.
            super::lifetime::switched_away_dead(&prev);
        }
    }
    // A context switch is a quiescent state.
    crate::rcu::quiescent_state_and_run();
}

/// Block the running task (its state already says Blocked) until woken.
pub(super) fn block() {
    irq::without(schedule);
}

/// Give up the CPU to the next runnable task, if any. A voluntary
/// reschedule is a quiescent state even when nothing else was runnable.
pub fn yield_now() {
    irq::without(|| {
        schedule();
        crate::rcu::quiescent_state_and_run();
    });
}

/// The LAPIC timer fired on this CPU (arch counted it in `PerCpu::ticks`):
/// time slice over if anyone is waiting.
pub fn timer_tick() {
    let cpu = percpu::this();
    crate::rcu::tick();
    super::recovery::tick();
    if !SCHED.get(cpu.id).runqueue.lock().is_empty() {
        cpu.set_need_resched(true);
    }
}

/// Stack a switch from an interrupt's exit needs below the interrupted
/// rsp: `schedule`, the run-queue lock and its lockdep record, with room to
/// spare (a recursion frame of `stack.repeat` is 304 bytes, so this puts
/// off preemption in its last three).
const PREEMPT_HEADROOM: u64 = 1024;

/// Preemptions put off because the interrupted stack was nearly used up.
pub static PREEMPT_DEFERRED: AtomicU64 = AtomicU64::new(0);

/// Called on the way out of an interrupt that asked for a reschedule, on
/// the interrupted task's stack. Not when that stack is nearly used up: the
/// switch would overflow inside the scheduler, with the run-queue lock or a
/// held-lock record half taken, where no kill can recover (a recursion that
/// the tick catches in its last frames did exactly that). The request stays
/// pending, for the next interrupt or the task's own next switch.
pub fn preempt_from_irq() {
    let sp = crate::arch::x86_64::cpu::stack_pointer();
    let room = CURRENT.with_current(|t| sp.saturating_sub(t.stack_bounds().0.as_u64()));
    if room.is_some_and(|r| r < PREEMPT_HEADROOM) {
        PREEMPT_DEFERRED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    schedule();
}

/// What a CPU does when nothing is runnable.
pub fn idle_loop() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        if SCHED.this().queued() > 0 {
            schedule();
            // Still here: what is queued is leaving another CPU. Open a
            // window for interrupts (that CPU may be waiting on a TLB
            // shootdown IPI from us) before looking again.
            interrupts::enable();
            core::hint::spin_loop();
        } else {
            crate::rcu::quiescent_state_and_run();
            // sti; hlt — a wakeup IPI between the check and the halt still
            // ends the halt.
            interrupts::enable_and_halt();
        }
    }
}

/// Move the running task to CPU `target` and return there.
pub fn migrate_to(target: usize) {
    if target == percpu::this().id {
        return;
    }
    irq::without(|| {
        let me = super::current();
        me.cpu.store(target, Ordering::Relaxed);
        // Runnable, not Running: the local scheduler will not requeue it here.
        me.set_state(State::Runnable);
        enqueue(me);
        schedule();
    });
}
