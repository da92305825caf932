//! The tasks every CPU starts with: the code already running on its boot
//! stack, made a task (the BSP's init flow, an AP's idle loop), and, for the
//! BSP, an idle task on a fresh stack.
use super::life::task_entry;
use super::sched::{self, CURRENT, SCHED};
use super::{flags, next_id, Entry, SpawnError, State, Task, PERMANENT};
use crate::arch::x86_64::context::Context;
use crate::arch::x86_64::percpu;
use crate::mm::stack::{self, Stack};
use alloc::boxed::Box;
use alloc::sync::Arc;
use core::sync::atomic::Ordering;
use x86_64::VirtAddr;

/// Make the code running on this CPU's boot stack a task (the BSP's init
/// flow, or an AP's idle loop), so that it can be switched away from.
/// `[bottom, stack_top)` is the boot loader's stack, as best known.
pub fn adopt_boot_flow(name: &str, idle: bool, bottom: VirtAddr, stack_top: VirtAddr) {
    let flags = flags::BOOT_STACK | if idle { flags::IDLE } else { 0 };
    let mut task = Task::new(next_id(), name, flags, Context::running(), None, None);
    (task.stack_bottom, task.stack_top) = (bottom, stack_top);
    let task = Arc::new(task);
    let cpu = percpu::this();
    PERMANENT.fetch_add(1, Ordering::Relaxed);
    task.cpu.store(cpu.id, Ordering::Relaxed);
    task.set_state(State::Running);
    cpu.set_stack_top(stack_top);
    if idle {
        SCHED.get(cpu.id).set_idle(task.clone());
    }
    CURRENT.install(task);
}

/// Give this CPU an idle task on a fresh stack (the BSP, whose boot flow is
/// the init task and so cannot idle).
pub fn create_idle() -> Result<(), SpawnError> {
    let cpu = percpu::this();
    let id = next_id();
    let stack = Stack::vmap(stack::StackKind::Task, stack::DEFAULT_TASK_STACK, id)?;
    let context = Context::new_task(&stack, task_entry);
    let entry: Entry = Box::new(|| sched::idle_loop());
    let task = Arc::new(Task::new(
        id,
        "swapper",
        flags::IDLE,
        context,
        Some(stack),
        Some(entry),
    ));
    task.cpu.store(cpu.id, Ordering::Relaxed);
    PERMANENT.fetch_add(1, Ordering::Relaxed);
    SCHED.get(cpu.id).set_idle(task);
    Ok(())
}
