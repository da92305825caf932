//! Tasks: kernel threads with their own stacks, and the scheduler that
//! runs them.
//!
//! A task is a heap object separate from its stack: its id, name, state and
//! flags live here, never at the bottom of the stack (no `thread_info`), so
//! the running task is found through the per-CPU `current` pointer and a
//! dead task's stack can be released the moment the CPU has switched away
//! from it, while the task struct lives on for whoever still holds it.
mod first;
pub mod history;
mod life;
mod lifetime;
pub mod recovery;
mod sched;
pub mod usage;
mod wait;

pub use lifetime::{
    debug_placement, debug_unleak, debug_usage_to_max, find_get, for_each_task, free_mode,
    freed_count, refcount_events, set_debug_placement, set_free_mode, FreeMode,
};

pub use first::{adopt_boot_flow, create_idle};
pub use life::{exit, spawn, spawn_daemon, spawn_on, JoinHandle, SpawnError};
pub use sched::migrate_to;
pub use sched::{idle_loop, preempt_from_irq, timer_tick, yield_now, PREEMPT_DEFERRED, SCHED};
pub use wait::WaitQueue;

use crate::arch::x86_64::context::Context;
use crate::arch::x86_64::current::Switchable;
use crate::arch::x86_64::percpu;
use crate::mm::stack::Stack;
use crate::sync::IrqLock;
use alloc::boxed::Box;
use alloc::sync::Arc;
use core::fmt;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use sched::CURRENT;
use x86_64::VirtAddr;

/// Linux's TASK_COMM_LEN.
const COMM_LEN: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// In some CPU's run queue.
    Runnable = 0,
    /// On a CPU right now.
    Running = 1,
    /// Waiting to be woken (join).
    Blocked = 2,
    /// Exited; its stack is released once the CPU has switched away.
    Dead = 3,
}

/// How a task ended, as its joiner learns it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(u64),
    /// Killed by the kernel, with the reason ("stack overflow").
    Killed(&'static str),
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Exited(code) => write!(f, "exited: {code}"),
            ExitStatus::Killed(why) => write!(f, "killed: {why}"),
        }
    }
}

/// Task flags (Linux keeps these in `task_struct`, since 4.9 no longer in
/// `thread_info` on the stack).
pub mod flags {
    /// A per-CPU idle task: never queued, runs when nothing else can.
    pub const IDLE: u32 = 1 << 0;
    /// Runs on a stack the boot loader gave the CPU, not one we allocated.
    pub const BOOT_STACK: u32 = 1 << 1;
}

type Entry = Box<dyn FnOnce() -> u64 + Send>;

struct JoinState {
    status: Option<ExitStatus>,
    waiter: Option<Arc<Task>>,
    /// Nobody will join: the task reaps itself at exit.
    detached: bool,
    reaped: bool,
}

pub struct Task {
    pub id: u64,
    comm: [u8; COMM_LEN],
    state: AtomicU8,
    flags: AtomicU32,
    /// The CPU whose run queue it belongs to.
    cpu: AtomicUsize,
    context: Context,
    stack_bottom: VirtAddr,
    stack_top: VirtAddr,
    stack: IrqLock<Option<Stack>>,
    entry: IrqLock<Option<Entry>>,
    join: IrqLock<JoinState>,
    /// Linux's `usage`: references to the struct itself. The seed's initial
    /// value 2: one for the RCU users (dropped after a grace period once
    /// `rcu_users` is gone), one for the scheduler (dropped when the dead
    /// task has been switched away from).
    usage: kcore::refcount::Refcount,
    /// Linux's `rcu_users`, sharing storage with the RCU head: 1, "for the
    /// user space visible state that goes away when reaped" (the seed).
    rcu_users: kcore::rcu_users::RcuUsers,
    /// `lifetime::POISON_FREE` once `usage` reached zero (the struct counts
    /// as freed; a stale reader sees the poison).
    poison: AtomicU64,
    /// Context switches into this task.
    pub switches: AtomicU64,
    /// What it holds: every lock and atomic section it is inside.
    held: crate::sync::TaskHeld,
}

impl Switchable for Task {
    type Held = crate::sync::TaskHeld;
    fn context(&self) -> &Context {
        &self.context
    }
    fn held(&self) -> &Self::Held {
        &self.held
    }
    fn key(&self) -> u64 {
        self.id
    }
}

impl fmt::Debug for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task {} '{}'", self.id, self.name())
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static LIVE_TASKS: AtomicU64 = AtomicU64::new(0);

fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

fn comm(name: &str) -> [u8; COMM_LEN] {
    let mut c = [0u8; COMM_LEN];
    let n = name.len().min(COMM_LEN - 1);
    c[..n].copy_from_slice(&name.as_bytes()[..n]);
    c
}

impl Task {
    fn new(
        id: u64,
        name: &str,
        flags: u32,
        context: Context,
        stack: Option<Stack>,
        entry: Option<Entry>,
    ) -> Task {
        LIVE_TASKS.fetch_add(1, Ordering::Relaxed);
        let bounds = stack
            .as_ref()
            .map_or((VirtAddr::zero(), VirtAddr::zero()), |s| {
                (s.bottom(), s.top())
            });
        Task {
            id,
            comm: comm(name),
            state: AtomicU8::new(State::Runnable as u8),
            flags: AtomicU32::new(flags),
            cpu: AtomicUsize::new(0),
            context,
            stack_bottom: bounds.0,
            stack_top: bounds.1,
            stack: IrqLock::new(stack).named("task->stack"),
            entry: IrqLock::new(entry).named("task->entry"),
            join: IrqLock::new(JoinState {
                status: None,
                waiter: None,
                detached: false,
                reaped: false,
            })
            .named("task->join"),
            usage: kcore::refcount::Refcount::new(2),
            rcu_users: kcore::rcu_users::RcuUsers::with_count(1).expect("1 is a valid count"),
            poison: AtomicU64::new(0),
            switches: AtomicU64::new(0),
            held: crate::sync::TaskHeld::new(),
        }
    }

    pub fn name(&self) -> &str {
        let n = self.comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
        core::str::from_utf8(&self.comm[..n]).unwrap_or("?")
    }
    /// The name as a copy, for code that must not hold a borrow of the
    /// task (fault reports).
    pub fn name_bytes(&self) -> ([u8; COMM_LEN], usize) {
        (
            self.comm,
            self.comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN),
        )
    }

    pub fn state(&self) -> State {
        match self.state.load(Ordering::Acquire) {
            0 => State::Runnable,
            1 => State::Running,
            2 => State::Blocked,
            _ => State::Dead,
        }
    }
    fn set_state(&self, s: State) {
        self.state.store(s as u8, Ordering::Release);
    }
    fn cas_state(&self, from: State, to: State) -> bool {
        self.state
            .compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
    pub fn flags(&self) -> u32 {
        self.flags.load(Ordering::Relaxed)
    }
    pub fn has_flag(&self, f: u32) -> bool {
        self.flags() & f != 0
    }
    /// The CPU this task last ran on (or is queued on).
    pub fn cpu(&self) -> usize {
        self.cpu.load(Ordering::Relaxed)
    }
    /// [bottom, top) of the task's stack (kept after the stack is freed, for
    /// reports about it).
    pub fn stack_bounds(&self) -> (VirtAddr, VirtAddr) {
        (self.stack_bottom, self.stack_top)
    }
    /// Its held-lock stack.
    pub fn held(&self) -> &crate::sync::TaskHeld {
        &self.held
    }
    /// A per-CPU idle task (or a boot flow that became one): never killed.
    pub fn is_idle(&self) -> bool {
        self.has_flag(flags::IDLE)
    }
    /// Run `f` on the task's stack handle, if it still has one.
    pub fn with_stack<R>(&self, f: impl FnOnce(&Stack) -> R) -> Option<R> {
        self.stack.lock().as_ref().map(f)
    }
}

impl Task {
    /// Whether `usage` reached zero (the struct is poisoned).
    pub fn is_freed(&self) -> bool {
        self.poison.load(Ordering::Acquire) == lifetime::POISON_FREE
    }
    pub fn usage(&self) -> u32 {
        self.usage.get()
    }
}

/// Tasks whose struct has not been freed yet (leak checks).
pub fn live_tasks() -> u64 {
    LIVE_TASKS.load(Ordering::Relaxed)
}

/// Tasks that live as long as the machine: init and one idle per CPU.
static PERMANENT: AtomicU64 = AtomicU64::new(0);

/// Wait until every task but the permanent ones has been freed: a joined
/// task is already dead, but its CPU may not have switched away from it
/// yet, and its struct goes only after an RCU grace period. Then wait for
/// the RCU callbacks queued meanwhile, which may still hold a stack (free
/// mode `rcu-cache`: its callback can run after the struct's). Returns
/// false if the tasks were not freed within `timeout_ms`.
pub fn settle(timeout_ms: u64) -> bool {
    let deadline = crate::arch::x86_64::time::now_ns() + timeout_ms * 1_000_000;
    while crate::arch::x86_64::time::now_ns() < deadline {
        if live_tasks() <= PERMANENT.load(Ordering::Relaxed) {
            crate::rcu::rcu_barrier();
            return true;
        }
        yield_now();
    }
    false
}

/// The running task. Found through GS (`percpu`), never through the stack.
pub fn current() -> Arc<Task> {
    CURRENT
        .current()
        .expect("current() before the scheduler started")
}

/// Borrow the task running on this CPU (or the one an interrupt handler
/// interrupted), without touching its reference count; `None` before this
/// CPU has a task.
pub fn with_current<R>(f: impl FnOnce(&Task) -> R) -> Option<R> {
    CURRENT.with_current(f)
}

/// The running task's id, without touching its reference count.
pub fn current_id() -> u64 {
    let Some(cpu) = percpu::try_this() else {
        return 0;
    };
    // A deliberate defect (`runner --defect current-boot-cpu`): the boot
    // CPU's slot read instead of this CPU's, `per_cpu(current_task, 0)`
    // for `this_cpu_read(current_task)`.
    let cpu = if cfg!(defect = "current-boot-cpu") {
        0
    } else {
        cpu.id
    };
    CURRENT.key_on(cpu)
}
