//! Touching memory that may not be mapped, and surviving it.
//!
//! Like Linux's exception tables: the probing instruction has a known
//! address, and the page-fault handler, seeing a fault there, resumes at the
//! fixup instead of oopsing. Tests use this to prove a page is unmapped
//! (TLB shootdown, guard pages) without taking the machine down.

core::arch::global_asm!(
    ".section .text.probe, \"ax\"",
    ".global probe_read_u8",
    "probe_read_u8:",
    "    xor eax, eax",
    ".global probe_read_insn",
    "probe_read_insn:",
    "    mov al, byte ptr [rdi]",
    "    ret",
    ".global probe_fixup",
    "probe_fixup:",
    "    mov eax, 0x100",
    "    ret",
    ".global probe_write_u8",
    "probe_write_u8:",
    "    xor eax, eax",
    ".global probe_write_insn",
    "probe_write_insn:",
    "    mov byte ptr [rdi], sil",
    "    ret",
);

extern "C" {
    fn probe_read_u8(addr: u64) -> u64;
    fn probe_write_u8(addr: u64, value: u8) -> u64;
    static probe_read_insn: u8;
    static probe_write_insn: u8;
    static probe_fixup: u8;
}

/// Read one byte at `addr`; `None` if that page-faulted.
pub fn read_u8(addr: u64) -> Option<u8> {
    // SAFETY: the function reads one byte; if the read faults, the #PF
    // handler resumes it at `probe_fixup`, so it returns either way. It
    // clobbers only rax (its return value).
    let r = unsafe { probe_read_u8(addr) };
    (r < 0x100).then_some(r as u8)
}

/// Write one byte at `addr`; `false` if that page-faulted. The caller owns
/// whatever lives there.
pub fn write_u8(addr: u64, value: u8) -> bool {
    // SAFETY: as `read_u8`; the caller vouches the byte is theirs to write.
    unsafe { probe_write_u8(addr, value) == 0 }
}

/// If `rip` is a probing instruction, the address to resume at.
pub fn fixup_for(rip: u64) -> Option<u64> {
    let read = (&raw const probe_read_insn) as u64;
    let write = (&raw const probe_write_insn) as u64;
    (rip == read || rip == write).then_some((&raw const probe_fixup) as u64)
}
