//! The kernel entry point the boot loader jumps to.
//!
//! Limine enters us in long mode with interrupts off, on a 16-byte aligned
//! stack in bootloader-reclaimable memory with a zero return address pushed
//! (PROTOCOL.md, "Machine state at entry"). The frame-pointer chain must end
//! here, so the backtracer knows where to stop: `rbp` is zeroed before Rust
//! runs. The stack's top (rsp + 8, above the pushed zero) is passed along:
//! the boot flow becomes the init task and needs to know its stack.
//!
//! What runs next is the kernel's, not arch's: `kernel_main`, found by its
//! symbol (as head_64.S calls `x86_64_start_kernel`), so arch names nothing
//! above it.

core::arch::global_asm!(
    ".section .text.kernel_entry, \"ax\"",
    ".global kernel_entry",
    "kernel_entry:",
    asm_lines_begin!(),
    asm_line!("    xor ebp, ebp"),
    asm_line!("    lea rdi, [rsp + 8]"),
    // Entered like a called function (rsp = 8 mod 16); realign for our call.
    asm_line!("    and rsp, -16"),
    asm_line!("    call kernel_main"),
    asm_line!("    ud2"),
    asm_lines_end!(),
);
