//! The context switch: callee-saved registers and the stack pointer.
//!
//! Everything else of a task's CPU state is either caller-saved (the
//! compiler already spilled it before calling `switch`) or lives on its
//! stack (an interrupt frame, for a preempted task). A new task's stack is
//! prepared so that its first `switch` "returns" into the trampoline, which
//! calls the entry function the scheduler gave (kept in r12 until then).
use super::stack::KernelStack;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

core::arch::global_asm!(
    ".section .text.context_switch, \"ax\"",
    ".global context_switch",
    // rdi = where to save the old rsp, rsi = the new rsp.
    "context_switch:",
    asm_lines_begin!(),
    asm_line!("    push rbp"),
    asm_line!("    push rbx"),
    asm_line!("    push r12"),
    asm_line!("    push r13"),
    asm_line!("    push r14"),
    asm_line!("    push r15"),
    asm_line!("    mov [rdi], rsp"),
    asm_line!("    mov rsp, rsi"),
    asm_line!("    pop r15"),
    asm_line!("    pop r14"),
    asm_line!("    pop r13"),
    asm_line!("    pop r12"),
    asm_line!("    pop rbx"),
    asm_line!("    pop rbp"),
    asm_line!("    ret"),
    // A new task lands here with rsp 16-byte aligned and its entry function
    // in r12; rbp = 0 ends the frame-pointer chain for backtraces, and an
    // undefined return address tells a DWARF unwinder the same: this is a
    // task's outermost frame.
    ".global task_entry_trampoline",
    "task_entry_trampoline:",
    "    .cfi_startproc",
    "    .cfi_undefined rip",
    asm_line!("    xor ebp, ebp"),
    asm_line!("    call r12"),
    asm_line!("    ud2"),
    "    .cfi_endproc",
    asm_lines_end!(),
);

extern "C" {
    fn context_switch(save_rsp: *mut u64, next_rsp: u64);
    fn task_entry_trampoline();
}

/// What a new task's first code is: it never returns (a task ends by
/// switching away for good).
pub type TaskEntry = extern "C" fn() -> !;

/// A task's saved stack pointer while it is not running, and whether a CPU
/// runs it (claimed) so that two never do.
pub struct Context {
    rsp: UnsafeCell<u64>,
    claimed: AtomicBool,
}

// SAFETY: a context is touched only by the CPU switching into or out of its
// task, and the scheduler's run-queue lock orders those switches.
unsafe impl Sync for Context {}

impl Context {
    /// The context of code already running (the boot flow becoming a task):
    /// its rsp is filled in by the first switch away from it.
    pub const fn running() -> Context {
        Context {
            rsp: UnsafeCell::new(0),
            claimed: AtomicBool::new(true),
        }
    }

    /// Prepare `stack` so that switching to it calls `entry` there. The
    /// task must keep the stack until a CPU has switched away from it for
    /// the last time (the scheduler frees a dead task's stack only after
    /// `take_prev`, `task::lifetime::switched_away_dead`).
    pub fn new_task(stack: &impl KernelStack, entry: TaskEntry) -> Context {
        let top = stack.top().as_u64();
        assert_eq!(top % 16, 0, "a task stack's top must be 16-byte aligned");
        // The callee-saved registers `context_switch` pops (r15, r14, r13,
        // r12 = the entry, rbx, rbp), then the "return address".
        let frame: [u64; 7] = [
            0,
            0,
            0,
            entry as usize as u64,
            0,
            0,
            task_entry_trampoline as *const () as u64,
        ];
        let rsp = top - 8 * frame.len() as u64;
        // SAFETY: `KernelStack` promises the 64 bytes below the top are
        // mapped, writable and the new task's, which has not run yet.
        unsafe { core::ptr::copy_nonoverlapping(frame.as_ptr(), rsp as *mut u64, frame.len()) };
        Context {
            rsp: UnsafeCell::new(rsp),
            claimed: AtomicBool::new(false),
        }
    }

    /// A CPU runs this context, or has not yet saved it after switching away
    /// (until the incoming side's `take_prev`): it may not be resumed.
    pub fn is_running(&self) -> bool {
        self.claimed.load(Ordering::Acquire)
    }

    /// Mark the context as run by this CPU; false if a CPU already runs it.
    pub(super) fn claim(&self) -> bool {
        self.claimed
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The switch out of it has saved its registers: it may be resumed.
    pub(super) fn release(&self) {
        self.claimed.store(false, Ordering::Release);
    }
}

/// Save the running context in `prev` and resume `next`. Returns when
/// something switches back to `prev`.
///
/// # Safety
/// Interrupts are off; `next` is not running anywhere and was prepared by
/// `Context::new_task` or saved by an earlier `switch`; `prev` is the
/// context of the code calling this (see `current::CurrentTasks`).
pub(super) unsafe fn switch(prev: &Context, next: &Context) {
    // SAFETY: `next` holds a stack pointer to a frame laid out by `new_task`
    // or by `context_switch` itself (the caller's contract), so the pops and
    // the `ret` land in valid code with the registers that context saved;
    // `prev.rsp` is ours to write.
    unsafe { context_switch(prev.rsp.get(), *next.rsp.get()) }
}
