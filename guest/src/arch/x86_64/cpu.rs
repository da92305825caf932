//! CPU control: identity, halting, leaving QEMU.
use abi::GuestExit;
use qemu_exit::QEMUExit;

/// The initial APIC id of the executing CPU (CPUID leaf 1, EBX[31:24]).
/// Good enough to name a CPU in a panic record before per-CPU data exists.
pub fn apic_id() -> u32 {
    // CPUID leaf 1 exists on every x86_64 CPU.
    let r = core::arch::x86_64::__cpuid(1);
    r.ebx >> 24
}

/// Stop this CPU for good: interrupts off, halt forever.
pub fn halt_forever() -> ! {
    loop {
        ::x86_64::instructions::interrupts::disable();
        ::x86_64::instructions::hlt();
    }
}

/// Spin with interrupts off and never halt: the hang the runner must time out.
pub fn spin_forever() -> ! {
    ::x86_64::instructions::interrupts::disable();
    loop {
        core::hint::spin_loop();
    }
}

/// End the QEMU process with `code` through isa-debug-exit.
pub fn exit(code: GuestExit) -> ! {
    // SAFETY: the runner always attaches isa-debug-exit at this port; the
    // success code is odd as the crate requires.
    let dev = unsafe {
        qemu_exit::X86::new(
            abi::exit::ISA_DEBUG_EXIT_PORT,
            GuestExit::Pass.qemu_status() as u32,
        )
    };
    dev.exit(code.code())
}

/// Provoke a triple fault: with an empty IDT, a breakpoint cannot be
/// delivered, the resulting #GP cannot be either, and the #DF escalates to a
/// shutdown, which QEMU turns into a reset (`-no-reboot`: an exit).
pub fn triple_fault() -> ! {
    use ::x86_64::structures::DescriptorTablePointer;
    use ::x86_64::VirtAddr;
    let empty = DescriptorTablePointer {
        limit: 0,
        base: VirtAddr::zero(),
    };
    // SAFETY: deliberately breaks exception delivery; nothing after this runs.
    unsafe {
        ::x86_64::instructions::tables::lidt(&empty);
        core::arch::asm!("int3", options(nomem, nostack));
    }
    halt_forever()
}

/// The current stack pointer: the caller's own (always inlined, so that
/// it is not a callee's, 8 bytes lower).
#[inline(always)]
pub fn stack_pointer() -> u64 {
    let rsp: u64;
    // SAFETY: reads a register, touches no memory.
    unsafe {
        core::arch::asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack, preserves_flags))
    };
    rsp
}
