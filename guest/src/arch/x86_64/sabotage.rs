//! Deliberate stack abuse, for the stack scenarios: the few things only
//! assembly can do wrong on purpose. Each ends in a fault that the fault
//! handlers must catch and explain; none returns.

/// Move rsp to `new_rsp` and push: what code that misjudged its stack does.
/// Above the stack top this is an underflow; far below the bottom it is a
/// frame that skipped the guard page (no stack probes).
pub fn push_at(new_rsp: u64) -> ! {
    // SAFETY: deliberately invalid: the push faults (the address is chosen
    // unmapped by the caller), the fault handler kills this task, and no
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
pub fn wait_for_irq_at(new_rsp: u64) -> ! {
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
pub fn touch(addr: u64) -> u8 {
    let v: u8;
    // SAFETY: a plain read; if `addr` is unmapped the #PF handler deals
    // with it (the scenario arranged for it to), and it never returns here
    // in that case.
    unsafe {
        core::arch::asm!("mov {0}, byte ptr [{1}]", out(reg_byte) v, in(reg) addr, options(nostack, readonly))
    };
    v
}
