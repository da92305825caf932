//! The context switch: callee-saved registers and the stack pointer.
//!
//! Everything else of a task's CPU state is either caller-saved (the
//! compiler already spilled it before calling `switch`) or lives on its
//! stack (an interrupt frame, for a preempted task). A new task's stack is
//! prepared so that its first `switch` "returns" into `task_entry`.
use core::cell::UnsafeCell;

core::arch::global_asm!(
    ".section .text.context_switch, \"ax\"",
    ".global context_switch",
    // rdi = where to save the old rsp, rsi = the new rsp.
    "context_switch:",
    "    push rbp",
    "    push rbx",
    "    push r12",
    "    push r13",
    "    push r14",
    "    push r15",
    "    mov [rdi], rsp",
    "    mov rsp, rsi",
    "    pop r15",
    "    pop r14",
    "    pop r13",
    "    pop r12",
    "    pop rbx",
    "    pop rbp",
    "    ret",
    // A new task lands here with rsp 16-byte aligned; rbp = 0 ends the
    // frame-pointer chain for backtraces, and an undefined return address
    // tells a DWARF unwinder the same: this is a task's outermost frame.
    ".global task_entry_trampoline",
    "task_entry_trampoline:",
    "    .cfi_startproc",
    "    .cfi_undefined rip",
    "    xor ebp, ebp",
    "    call {entry}",
    "    ud2",
    "    .cfi_endproc",
    entry = sym task_entry,
);

extern "C" {
    fn context_switch(save_rsp: *mut u64, next_rsp: u64);
    fn task_entry_trampoline();
}

extern "C" fn task_entry() -> ! {
    crate::task::start_current()
}

/// A task's saved stack pointer while it is not running.
pub struct Context {
    rsp: UnsafeCell<u64>,
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
        }
    }

    /// Prepare a fresh stack whose top is `top` (16-byte aligned, mapped,
    /// owned by the new task) so that switching to it enters `task_entry`.
    pub fn new_task(stack: &crate::mm::stack::Stack) -> Context {
        let top = stack.top().as_u64();
        debug_assert_eq!(top % 16, 0);
        // Six callee-saved registers (zero), then the "return address".
        let frame: [u64; 7] = [0, 0, 0, 0, 0, 0, task_entry_trampoline as *const () as u64];
        let rsp = top - 8 * frame.len() as u64;
        // SAFETY: the Stack handle guarantees [bottom, top) is mapped,
        // writable and owned by this new task, which has not run yet; 56 bytes
        // below the top are well inside any stack we allocate.
        unsafe { core::ptr::copy_nonoverlapping(frame.as_ptr(), rsp as *mut u64, frame.len()) };
        Context {
            rsp: UnsafeCell::new(rsp),
        }
    }
}

/// Save the running context in `prev` and resume `next`. Returns when
/// something switches back to `prev`.
///
/// # Safety
/// Interrupts are off; `next` is not running anywhere and was prepared by
/// `Context::new_task` or saved by an earlier `switch`; `prev` is the
/// context of the code calling this.
pub(super) unsafe fn switch(prev: &Context, next: &Context) {
    // SAFETY: `next` holds a stack pointer to a frame laid out by `new_task`
    // or by `context_switch` itself (the caller's contract), so the pops and
    // the `ret` land in valid code with the registers that context saved;
    // `prev.rsp` is ours to write.
    unsafe { context_switch(prev.rsp.get(), *next.rsp.get()) }
}
