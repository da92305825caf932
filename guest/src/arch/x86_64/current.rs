//! The task running on each CPU, and the reference hand-off at a switch.
//!
//! This is the mechanism under the scheduler, and the only code that turns
//! the slots' raw pointers back into references: arch knows of a task only
//! what `Switchable` says, and `task` instantiates `CurrentTasks` with its
//! own type. A slot owns one strong reference (`Arc::into_raw`) to the task
//! running on its CPU; a switch moves it to `prev` until the incoming side
//! takes it back (`take_prev`), and the task's held-lock stack, which lockdep
//! reaches through `HeldSlots` without naming the task type, moves with it.
//!
//! Soundness rests on three things checked here, not on the caller:
//! - Only this CPU's slot is ever changed, with interrupts off (asserted),
//!   so nothing else runs on this CPU between a load and its use.
//! - A context is resumed only while no CPU runs it: `Context`'s claim flag
//!   is taken by the switch into it and dropped by `take_prev` after the
//!   switch out of it has saved its registers (a second claim panics).
//! - A reader on this CPU finds the task it runs in, or, in an interrupt, the
//!   task it interrupted, which cannot be switched away before the handler
//!   returns. A task in task context reads "this CPU" (GS) and then the slot
//!   as two loads; it may be preempted between them, which is harmless
//!   because a preempted task is requeued on its own CPU (`sched::enqueue`
//!   by `Task::cpu`): only `task::migrate_to`, called by the task itself,
//!   moves it, never between those loads. This no-migration rule is what
//!   `percpu::this()` in preemptible code relies on as well.
use super::context::{self, Context};
use super::percpu::{self, CpuLocal, MAX_CPUS};
use alloc::sync::Arc;
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use x86_64::instructions::interrupts;

/// What a task must offer to be switched to.
pub trait Switchable: Send + Sync {
    /// What lockdep records into while this task runs.
    type Held: Sync + 'static;
    /// Where the task's registers are saved while it does not run.
    fn context(&self) -> &Context;
    /// The task's held-lock stack.
    fn held(&self) -> &Self::Held;
    /// A number naming the task (its id), readable from any CPU without
    /// touching the task itself.
    fn key(&self) -> u64;
}

struct Slot<T> {
    current: AtomicPtr<T>,
    /// The task this CPU just switched away from, until the incoming task
    /// takes it (`take_prev`; it owns that reference meanwhile).
    prev: AtomicPtr<T>,
    /// `current`'s context, as claimed when it was switched to: the switch
    /// saves the registers here, not wherever `context()` says next time.
    running: AtomicPtr<Context>,
    /// `prev`'s claimed context, released by `take_prev`.
    prev_running: AtomicPtr<Context>,
    /// `current`'s key (0: none).
    key: AtomicU64,
}

/// Per CPU: the running task's held-lock stack (a field of the task in
/// `CurrentTasks`), written only by the switch that makes the task current.
pub struct HeldSlots<H: 'static> {
    held: CpuLocal<AtomicPtr<H>>,
    /// The one `CurrentTasks` that writes these slots (a second panics:
    /// two schedulers would leave each other's pointers stale).
    owner: AtomicPtr<()>,
}

impl<H: Sync + 'static> HeldSlots<H> {
    pub const fn new() -> HeldSlots<H> {
        HeldSlots {
            held: CpuLocal::new([const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CPUS]),
            owner: AtomicPtr::new(core::ptr::null_mut()),
        }
    }

    /// Run `f` on the held-lock stack of the task running on this CPU (none
    /// before this CPU has a per-CPU block or a task). Callers record with
    /// interrupts off, so the task cannot be switched away meanwhile; in
    /// task context it could only be switched back in on this CPU (see the
    /// module doc), so the stack is still its own.
    #[inline]
    pub fn with<R>(&self, f: impl FnOnce(&H) -> R) -> Option<R> {
        let cpu = percpu::try_this()?;
        let p = self.held.get(cpu.id).load(Ordering::Acquire);
        // SAFETY: a non-null pointer was stored by `CurrentTasks` from
        // `held()` of the task it made current on this CPU, whose reference
        // its slot owns until the next switch on this CPU, and that switch
        // stores the next task's pointer first; the task running `f` (or
        // interrupted by it) is that task.
        (!p.is_null()).then(|| f(unsafe { &*p }))
    }
}

impl<H: Sync + 'static> Default for HeldSlots<H> {
    fn default() -> Self {
        Self::new()
    }
}

/// Every CPU's running task.
pub struct CurrentTasks<T: Switchable + 'static> {
    slots: CpuLocal<Slot<T>>,
    held: &'static HeldSlots<T::Held>,
}

impl<T: Switchable + 'static> CurrentTasks<T> {
    pub const fn new(held: &'static HeldSlots<T::Held>) -> CurrentTasks<T> {
        CurrentTasks {
            slots: CpuLocal::new(
                [const {
                    Slot {
                        current: AtomicPtr::new(core::ptr::null_mut()),
                        prev: AtomicPtr::new(core::ptr::null_mut()),
                        running: AtomicPtr::new(core::ptr::null_mut()),
                        prev_running: AtomicPtr::new(core::ptr::null_mut()),
                        key: AtomicU64::new(0),
                    }
                }; MAX_CPUS],
            ),
            held,
        }
    }

    fn this_slot(&self) -> Option<&Slot<T>> {
        Some(self.slots.get(percpu::try_this()?.id))
    }

    fn this_slot_irqs_off(&self, what: &str) -> &Slot<T> {
        assert!(
            !interrupts::are_enabled(),
            "{what} with interrupts on: only a switch on this CPU may change its task"
        );
        self.slots.this()
    }

    /// A new reference to the task running on this CPU.
    pub fn current(&self) -> Option<Arc<T>> {
        let p = self.this_slot()?.current.load(Ordering::Acquire);
        if p.is_null() {
            return None;
        }
        // SAFETY: a non-null `current` came from `Arc::into_raw` in
        // `install` or `switch_to` and owns that strong reference until this
        // CPU switches again, which cannot happen before the caller (the
        // running or interrupted task, see the module doc) is done here.
        unsafe {
            Arc::increment_strong_count(p);
            Some(Arc::from_raw(p))
        }
    }

    /// Borrow the task running on this CPU without touching its reference
    /// count (the hot path).
    pub fn with_current<R>(&self, f: impl FnOnce(&T) -> R) -> Option<R> {
        let p = self.this_slot()?.current.load(Ordering::Acquire);
        // SAFETY: as in `current`: the slot's reference outlives `f`, which
        // runs in (or interrupts) the task it points at.
        (!p.is_null()).then(|| f(unsafe { &*p }))
    }

    /// The key of the task running on `cpu` (0: none), from any CPU.
    pub fn key_on(&self, cpu: usize) -> u64 {
        self.slots.get(cpu).key.load(Ordering::Acquire)
    }

    /// Make `first`, the code already running on this CPU (its context made
    /// by `Context::running`), this CPU's first task.
    pub fn install(&self, first: Arc<T>) {
        let slot = self.this_slot_irqs_off("install");
        let ctx = first.context();
        assert!(
            ctx.is_running(),
            "install: the first task must be the code running here"
        );
        assert!(
            slot.current.load(Ordering::Acquire).is_null(),
            "install: this CPU already has a task"
        );
        self.bind();
        self.set_held(&first);
        slot.running
            .store(core::ptr::from_ref(ctx).cast_mut(), Ordering::Release);
        slot.key.store(first.key(), Ordering::Release);
        slot.current
            .store(Arc::into_raw(first).cast_mut(), Ordering::Release);
    }

    fn bind(&self) {
        let me = core::ptr::from_ref(self).cast::<()>().cast_mut();
        let owner = match self.held.owner.compare_exchange(
            core::ptr::null_mut(),
            me,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => me,
            Err(owner) => owner,
        };
        assert!(
            owner == me,
            "install: these held-lock slots belong to another scheduler"
        );
    }

    /// Point this CPU's held-lock slot at `task`'s stack, before `task`
    /// becomes current here.
    fn set_held(&self, task: &T) {
        self.held.held.this().store(
            core::ptr::from_ref(task.held()).cast_mut(),
            Ordering::Release,
        );
    }

    /// Make `next` this CPU's task and switch to it. The outgoing task's
    /// reference moves to the `prev` slot, for `take_prev` on the other
    /// side. Returns when the outgoing task is resumed, possibly on another
    /// CPU. Panics if `next` is running (claimed) anywhere.
    pub fn switch_to(&self, next: Arc<T>) {
        let slot = self.this_slot_irqs_off("switch_to");
        let next_ctx = next.context();
        assert!(
            next_ctx.claim(),
            "switch_to: the next task is running elsewhere"
        );
        // A deliberate defect (`runner --defect held-not-switched`): the
        // CPU's held-lock stack left pointing at the outgoing task, so the
        // incoming one records its locks there.
        #[cfg(not(defect = "held-not-switched"))]
        self.set_held(&next);
        slot.key.store(next.key(), Ordering::Release);
        let prev_ctx = slot
            .running
            .swap(core::ptr::from_ref(next_ctx).cast_mut(), Ordering::AcqRel);
        let next_ctx = core::ptr::from_ref(next_ctx);
        let next = Arc::into_raw(next);
        let prev = slot.current.swap(next.cast_mut(), Ordering::AcqRel);
        assert!(!prev.is_null(), "switch_to without a current task");
        let stale = slot.prev.swap(prev, Ordering::AcqRel);
        assert!(stale.is_null(), "previous switch was never finished");
        slot.prev_running.store(prev_ctx, Ordering::Release);
        // SAFETY: interrupts are off (asserted above). `next_ctx` belongs to
        // `next`, alive through the `current` slot, and was claimed above, so
        // no CPU runs it: it was prepared by `Context::new_task` or saved by
        // an earlier switch out of it. `prev_ctx` is the context claimed when
        // the outgoing task (the code running here) was switched to, alive
        // through the `prev` slot's reference until `take_prev`, which the
        // incoming side can run only after this switch has saved into it.
        unsafe { context::switch(&*prev_ctx, &*next_ctx) }
    }

    /// The reference to the task switched away from, if a switch is
    /// unfinished on this CPU. Its context may be claimed again from now on.
    pub fn take_prev(&self) -> Option<Arc<T>> {
        let slot = self.this_slot_irqs_off("take_prev");
        let p = slot.prev.swap(core::ptr::null_mut(), Ordering::AcqRel);
        // SAFETY: a non-null `prev` holds the reference `switch_to` moved
        // there from `current` (an `Arc::into_raw`), taken back exactly once.
        let prev = (!p.is_null()).then(|| unsafe { Arc::from_raw(p) })?;
        let ctx = slot
            .prev_running
            .swap(core::ptr::null_mut(), Ordering::AcqRel);
        assert!(!ctx.is_null(), "take_prev: a prev without its context");
        // SAFETY: `ctx` is the context `prev` was switched to with, alive
        // through `prev` (held here), whose registers the switch saved.
        unsafe { (*ctx).release() };
        Some(prev)
    }
}
