//! How long a task lives, and when its stack goes (paulmck's and the LWN
//! seeds).
//!
//! Two counts, with the seed's initial values: `rcu_users` = 1 for the
//! visible state that goes away when the task is reaped (joined), and
//! `usage` = 2, one for the RCU users and one for the scheduler. Reaping
//! unlinks the task from the task list and drops `rcu_users`; the drop that
//! takes it to zero hands the storage over to RCU (`RcuHandoff`, once) and
//! queues `delayed_put_task_struct`, which drops the RCU users' `usage`
//! after a grace period. The scheduler drops its own once the dead task has
//! been switched away from. Readers find tasks under `rcu::read_lock` and
//! take references with inc-not-zero, so a task whose `usage` reached zero
//! is never handed out again.
//!
//! The stack is another matter: nothing of the task lives on it, so it can
//! go back as soon as the CPU has left it (`FreeMode::Exit`, Linux 4.9 to
//! 5.17), long before the struct does. `AfterGracePeriod` is the pre-4.8
//! behaviour that `thread_info` on the stack forced; `RcuCallback` is
//! Linux 5.18's `thread_stack_delayed_free`: an RCU callback that first
//! tries the per-CPU cache.
use super::history::{self, Event};
use super::Task;
use crate::mm::{guarded, stack};
use crate::rcu;
use crate::sync::IrqLock;
use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use core::ops::Deref;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use kcore::refcount::RefcountEvent;

pub use abi::kinds::FreeMode;

static FREE_MODE: AtomicU8 = AtomicU8::new(FreeMode::Exit.index() as u8);

pub fn free_mode() -> FreeMode {
    FreeMode::from_index(FREE_MODE.load(Ordering::Relaxed).into()).unwrap_or(FreeMode::Exit)
}

pub fn set_free_mode(m: FreeMode) {
    FREE_MODE.store(m.index() as u8, Ordering::Relaxed);
}

/// Debug mode: task structs in guarded vmalloc pages, unmapped when
/// freed, and each task's history kept for the report a stale access gets.
static DEBUG_PLACEMENT: AtomicBool = AtomicBool::new(false);

pub fn set_debug_placement(on: bool) {
    DEBUG_PLACEMENT.store(on, Ordering::Release);
    history::set_enabled(on);
}

pub fn debug_placement() -> bool {
    DEBUG_PLACEMENT.load(Ordering::Acquire)
}

/// Give a new task struct its storage: the heap, or (debug mode) pages of
/// its own that are unmapped when the last reference to them goes.
pub(super) fn allocate(task: Task) -> Arc<Task> {
    if !debug_placement() {
        return Arc::new(task);
    }
    let id = task.id;
    guarded::place(abi::kinds::ObjectKind::TaskStruct, id, || Arc::new(task))
}

/// Every task that is not reaped yet, by id: what RCU readers traverse.
static TASK_LIST: IrqLock<BTreeMap<u64, Arc<Task>>> =
    IrqLock::new(BTreeMap::new()).named("tasklist_lock");

/// refcount_t events seen (saturation, underflow, add-on-zero), all tasks.
static EVENTS: AtomicU64 = AtomicU64::new(0);
/// Task structs freed (usage reached zero).
static FREED: AtomicU64 = AtomicU64::new(0);

/// Linux's slab poison for freed objects.
pub const POISON_FREE: u64 = 0x6b6b_6b6b_6b6b_6b6b;

pub fn refcount_events() -> u64 {
    EVENTS.load(Ordering::Acquire)
}

pub fn freed_count() -> u64 {
    FREED.load(Ordering::Acquire)
}

fn report(task: &Task, which: &str, e: RefcountEvent) {
    EVENTS.fetch_add(1, Ordering::AcqRel);
    kprintln!("{} ({which} of task {} '{}')", e, task.id, task.name());
}

pub(super) fn register(task: &Arc<Task>) {
    TASK_LIST.lock().insert(task.id, task.clone());
}

/// Linux's `release_task`: unlink the task and drop its `rcu_users`; the
/// last drop queues the delayed put. Runs once per task.
pub(super) fn reap(task: &Arc<Task>) {
    {
        let mut j = task.join.lock();
        if j.reaped {
            return;
        }
        j.reaped = true;
    }
    TASK_LIST.lock().remove(&task.id);
    history::record(
        task.id,
        Event::Reaped {
            by: super::current_id(),
        },
    );
    match task.rcu_users.put() {
        Ok(Some(_handoff)) => {
            history::record(task.id, Event::RcuQueued);
            // From here the union means "RCU head": nothing can take an
            // rcu_users reference any more (`try_get` fails for good).
            let t = task.clone();
            rcu::call_rcu(move || put_task_struct(&t));
        }
        Ok(None) => {}
        Err(e) => report(task, "rcu_users", e),
    }
}

/// Linux's `put_task_struct`.
pub fn put_task_struct(task: &Task) {
    match task.usage.dec_and_test() {
        Ok(true) => free_task(task),
        Ok(false) => {}
        Err(e) => {
            report(task, "usage", e);
            // A deliberate defect (`runner --defect saturated-put-frees`):
            // a put that treats a refcount_t event as the end of the count
            // and frees, where a saturated count must leak the struct.
            if cfg!(defect = "saturated-put-frees") {
                free_task(task);
            }
        }
    }
}

/// Test only (`life.refcount`): bring `task`'s usage count to the edge of
/// saturation, where a leak of some 2^31 references would leave it, so
/// that the next get saturates it through the real path.
pub fn debug_usage_to_max(task: &TaskRef) {
    task.usage.set(kcore::refcount::REFCOUNT_MAX);
}

/// Test only: undo `debug_usage_to_max`'s leak once the scenario has
/// checked it, so that the boot's later scenarios start with every task
/// freed: the count goes back to this one reference, and its put frees.
pub fn debug_unleak(task: TaskRef) {
    task.usage.set(1);
    drop(task);
}

/// `usage` reached zero: the struct is dead. Poison it (a reader that kept
/// a stale pointer sees POISON_FREE, not a plausible task), give back a
/// stack still held (`AfterGracePeriod`), and count it freed.
fn free_task(task: &Task) {
    history::record(task.id, Event::StructFreed);
    task.poison.store(POISON_FREE, Ordering::Release);
    let stack = task.stack.lock().take();
    if let Some(s) = stack {
        stack::release_task_stack(s);
    }
    FREED.fetch_add(1, Ordering::AcqRel);
    super::LIVE_TASKS.fetch_sub(1, Ordering::AcqRel);
}

/// A dead task has just been switched away from (from `finish_switch`):
/// the stack goes now, in an RCU callback, or with the struct, per the
/// mode; then the scheduler's `usage` goes.
pub(super) fn switched_away_dead(task: &Arc<Task>) {
    let mode = free_mode();
    history::record(
        task.id,
        Event::SwitchedAway {
            stack: match mode {
                FreeMode::Exit => "released now",
                FreeMode::RcuCache => "queued to an RCU callback",
                FreeMode::Rcu => "kept until the struct goes",
            },
        },
    );
    match mode {
        FreeMode::Exit => {
            let s = task.stack.lock().take();
            if let Some(s) = s {
                #[cfg(not(defect = "exit-stack-leak"))]
                stack::release_task_stack(s);
                // A deliberate defect (`runner --defect exit-stack-leak`):
                // the stack taken from the dead task and then forgotten,
                // neither cached nor freed.
                #[cfg(defect = "exit-stack-leak")]
                core::mem::forget(s);
            }
        }
        FreeMode::RcuCache => {
            let s = task.stack.lock().take();
            if let Some(s) = s {
                rcu::call_rcu(move || stack::release_task_stack(s));
            }
        }
        FreeMode::Rcu => {}
    }
    put_task_struct(task);
}

/// A counted reference to a task (`get_task_struct`), dropped with
/// `put_task_struct`.
pub struct TaskRef(Arc<Task>);

impl Deref for TaskRef {
    type Target = Task;
    fn deref(&self) -> &Task {
        &self.0
    }
}

impl Drop for TaskRef {
    fn drop(&mut self) {
        put_task_struct(&self.0);
    }
}

/// Find a live task by id, as an RCU reader: under `read_lock`, take a
/// reference only if `usage` is not already zero.
pub fn find_get(id: u64) -> Option<TaskRef> {
    let _rcu = rcu::read_lock();
    let t = TASK_LIST.lock().get(&id).cloned()?;
    match t.usage.inc_not_zero() {
        Ok(true) => Some(TaskRef(t)),
        Ok(false) => None,
        Err(e) => {
            report(&t, "usage", e);
            None
        }
    }
}

/// Visit every task on the list under an RCU read-side section.
pub fn for_each_task(mut f: impl FnMut(&Task)) {
    let _rcu = rcu::read_lock();
    for t in TASK_LIST.lock().values() {
        f(t);
    }
}
