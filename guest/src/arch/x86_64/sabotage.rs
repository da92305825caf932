//! Deliberate stack abuse, for the stack scenarios: the few things only
//! assembly can do wrong on purpose. Each ends in a fault that the fault
//! handlers must catch and explain; none returns.
//!
//! Breaking memory safety is the point here, so none of it is offered as
//! a plain safe function: each takes a `License`, which only an `unsafe`
//! grant makes (once, in `kernel_main`, for the scenarios). With the guard
//! pages on, the push lands in a guard and nothing is harmed; with them off
//! (`--guard-pages 0`, the negative control) it corrupts whatever is
//! mapped there, which is what that control exists to show.

/// Permission to corrupt memory on purpose (see the module doc).
pub struct License {
    _granted: (),
}

impl License {
    /// # Safety
    /// The holder uses the license only as the stack scenarios do: on a
    /// stack it announced (`STACK-ALLOC`), in a task the fault will kill, or
    /// on bytes of its own; and accepts that without guard pages the write
    /// lands in memory someone else owns.
    pub unsafe fn grant() -> License {
        License { _granted: () }
    }
}

/// Move rsp to `new_rsp` and push: what code that misjudged its stack does.
/// Above the stack top this is an underflow; far below the bottom it is a
/// frame that skipped the guard page (no stack probes).
pub fn push_at(_: &License, new_rsp: u64) -> ! {
    // SAFETY: deliberately invalid, under the `License` (the module doc):
    // the push faults in a guard, the fault handler kills this task, and no
    // Rust code runs on the bogus stack. Nothing after the asm executes.
    unsafe {
        core::arch::asm!(
            "mov rsp, {0}",
            "push rax",
            "ud2",
            in(reg) new_rsp,
            options(noreturn)
        )
    }
}

/// Move rsp to `new_rsp` and wait there for an interrupt, interrupts on:
/// with `new_rsp` at the bottom of a stack, the CPU cannot push the
/// interrupt's frame, and the push faults into the guard page below. If
/// the interrupt is handled instead (no guard: its frame landed on
/// whatever lies below), `ud2` stops the machine rather than let the task
/// spin on a stack that is not its own.
pub fn wait_for_irq_at(_: &License, new_rsp: u64) -> ! {
    // SAFETY: deliberately invalid, as in `push_at`: the first interrupt's
    // frame push faults, the fault becomes a #DF on its own IST stack, and
    // the handler kills this task. No Rust code runs on the bogus stack.
    unsafe {
        core::arch::asm!(
            "mov rsp, {0}",
            "sti",
            "hlt",
            "ud2",
            in(reg) new_rsp,
            options(noreturn)
        )
    }
}

/// Read one byte at `addr` without a fixup: a real page fault if unmapped.
/// Safe: a read through `asm!` makes no Rust reference, so it can break no
/// aliasing rule, and a fault on it is the fault handlers' to explain.
pub fn touch(addr: u64) -> u8 {
    let v: u8;
    // SAFETY: a one-byte load that writes nothing; if `addr` is unmapped the
    // #PF handler deals with it (the scenario arranged for it to), and it
    // never returns here in that case.
    unsafe {
        core::arch::asm!("mov {0}, byte ptr [{1}]", out(reg_byte) v, in(reg) addr, options(nostack, readonly))
    };
    v
}
