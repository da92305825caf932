//! A task's life: spawned on a fresh stack, started, joined, and ended by
//! `exit`, which hands the stack back as soon as the CPU has left it.
use super::sched::{self, CURRENT};
use super::{
    current, current_id, history, lifetime, next_id, usage, ExitStatus, State, Task, PERMANENT,
};
use crate::arch::x86_64::context::Context;
use crate::arch::x86_64::interrupts;
use crate::mm::stack::{self, StackError};
use crate::sync::irq;
use alloc::boxed::Box;
use alloc::sync::Arc;
use core::sync::atomic::Ordering;

/// A handle to wait for a spawned task. Dropping it unjoined detaches the
/// task: it reaps itself when it exits.
pub struct JoinHandle {
    task: Arc<Task>,
    joined: bool,
}

impl Drop for JoinHandle {
    fn drop(&mut self) {
        if self.joined {
            return;
        }
        let exited = irq::without(|| {
            let mut j = self.task.join.lock();
            j.detached = true;
            j.status.is_some()
        });
        if exited {
            lifetime::reap(&self.task);
        }
    }
}

impl JoinHandle {
    /// The task's id (for lookups through the task list).
    pub fn id(&self) -> u64 {
        self.task.id
    }

    /// The task itself, without taking a `usage` reference: like a pointer
    /// read under RCU, it says nothing about the struct still being live
    /// (`Task::is_freed` does).
    pub fn task(&self) -> Arc<Task> {
        self.task.clone()
    }

    /// Where the task struct lives: an address, not a reference (what a
    /// buggy reader keeps after dropping its reference).
    pub fn struct_addr(&self) -> u64 {
        Arc::as_ptr(&self.task) as u64
    }

    /// Block until the task has ended, reap it, and return how it ended.
    pub fn join(mut self) -> ExitStatus {
        self.joined = true;
        loop {
            let status = irq::without(|| {
                let mut j = self.task.join.lock();
                if let Some(s) = j.status {
                    return Some(s);
                }
                let me = current();
                me.set_state(State::Blocked);
                j.waiter = Some(me);
                None
            });
            if let Some(s) = status {
                lifetime::reap(&self.task);
                return s;
            }
            // Blocked: the exiting task wakes us. If it already did, the
            // scheduler finds us runnable and we come straight back.
            sched::block();
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum SpawnError {
    NoMemory,
}

impl From<StackError> for SpawnError {
    fn from(_: StackError) -> Self {
        SpawnError::NoMemory
    }
}

/// Start a kernel thread running `f` on some CPU (round-robin over the
/// online CPUs: simple load spreading).
pub fn spawn<F: FnOnce() -> u64 + Send + 'static>(
    name: &str,
    f: F,
) -> Result<JoinHandle, SpawnError> {
    spawn_on(sched::pick_cpu(), name, f)
}

/// Start a kernel thread on CPU `cpu`.
pub fn spawn_on<F: FnOnce() -> u64 + Send + 'static>(
    cpu: usize,
    name: &str,
    f: F,
) -> Result<JoinHandle, SpawnError> {
    let id = next_id();
    let stack = stack::alloc_task_stack(id)?;
    let context = Context::new_task(&stack, task_entry);
    let task = lifetime::allocate(Task::new(
        id,
        name,
        0,
        context,
        Some(stack),
        Some(Box::new(f)),
    ));
    history::begin(id, task.comm, current_id());
    task.cpu.store(cpu, Ordering::Relaxed);
    lifetime::register(&task);
    sched::enqueue(task.clone());
    Ok(JoinHandle {
        task,
        joined: false,
    })
}

/// Start a kernel thread that lives as long as the machine (a worker that
/// sleeps until it has work): it counts as permanent, so `settle` does not
/// wait for it to exit.
pub fn spawn_daemon(name: &str, f: fn() -> !) -> Result<u64, SpawnError> {
    let handle = spawn(name, move || -> u64 { f() })?;
    PERMANENT.fetch_add(1, Ordering::Relaxed);
    Ok(handle.id())
}

/// First code of every new task, on its own stack (called by arch's
/// `task_entry_trampoline`, the entry `Context::new_task` was given).
pub(super) extern "C" fn task_entry() -> ! {
    start_current()
}

fn start_current() -> ! {
    sched::finish_switch();
    interrupts::enable();
    let entry = CURRENT.with_current(|t| t.entry.lock().take()).flatten();
    let code = entry.map_or(0, |f| f());
    exit(ExitStatus::Exited(code))
}

/// End the running task with `status`.
pub fn exit(status: ExitStatus) -> ! {
    x86_64::instructions::interrupts::disable();
    // Nothing that owns a reference may stay on this stack: it is freed as
    // soon as the next task runs.
    {
        let me = current();
        history::record(me.id, history::Event::Exited(status));
        // How deep the stack went, while it is still ours to read.
        usage::at_exit(&me, status);
        me.set_state(State::Dead);
        let (waiter, detached) = {
            let mut j = me.join.lock();
            j.status = Some(status);
            (j.waiter.take(), j.detached)
        };
        if let Some(w) = waiter {
            sched::wake(w);
        }
        if detached {
            lifetime::reap(&me);
        }
    }
    sched::schedule();
    unreachable!("a dead task was scheduled again");
}
