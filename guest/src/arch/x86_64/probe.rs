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
    asm_lines_begin!(),
    asm_line!("    xor eax, eax"),
    ".global probe_read_insn",
    "probe_read_insn:",
    asm_line!("    mov al, byte ptr [rdi]"),
    asm_line!("    ret"),
    ".global probe_fixup",
    "probe_fixup:",
    asm_line!("    mov eax, 0x100"),
    asm_line!("    ret"),
    ".global probe_read_u64",
    "probe_read_u64:",
    asm_line!("    xor eax, eax"),
    ".global probe_read64_insn",
    "probe_read64_insn:",
    asm_line!("    mov rax, qword ptr [rdi]"),
    asm_line!("    xor edx, edx"),
    asm_line!("    ret"),
    ".global probe_fixup64",
    "probe_fixup64:",
    asm_line!("    mov edx, 1"),
    asm_line!("    ret"),
    ".global probe_write_u8",
    "probe_write_u8:",
    asm_line!("    xor eax, eax"),
    ".global probe_write_insn",
    "probe_write_insn:",
    asm_line!("    mov byte ptr [rdi], sil"),
    asm_line!("    ret"),
    asm_lines_end!(),
);

/// rax = value, rdx = 0 on success, 1 if the read faulted.
#[repr(C)]
struct Read64 {
    value: u64,
    faulted: u64,
}

extern "C" {
    fn probe_read_u64(addr: u64) -> Read64;
    static probe_read64_insn: u8;
    static probe_fixup64: u8;
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

/// Write one byte at `addr`; `false` if that page-faulted. A write to any
/// address can break what others own, so it takes the scenarios' `License`
/// (`sabotage`): they write only bytes of their own (below their own rsp, a
/// page they mapped).
pub fn write_u8(_: &super::sabotage::License, addr: u64, value: u8) -> bool {
    // SAFETY: as `read_u8`; the `License`'s grant vouches for the byte.
    unsafe { probe_write_u8(addr, value) == 0 }
}

/// Read the 8-byte word at `addr` (8-byte aligned); `None` if that faulted.
/// The backtracer walks frame pointers with this, so a corrupt chain ends
/// the trace instead of the report.
pub fn read_u64(addr: u64) -> Option<u64> {
    if !addr.is_multiple_of(8) {
        return None;
    }
    // SAFETY: reads one word; a fault resumes at `probe_fixup64`, which
    // reports it in rdx. The two-register return is the SysV ABI for a
    // 16-byte struct of two integers.
    let r = unsafe { probe_read_u64(addr) };
    (r.faulted == 0).then_some(r.value)
}

/// If `rip` is a probing instruction, the address to resume at.
pub fn fixup_for(rip: u64) -> Option<u64> {
    let read = (&raw const probe_read_insn) as u64;
    let write = (&raw const probe_write_insn) as u64;
    let read64 = (&raw const probe_read64_insn) as u64;
    if rip == read64 {
        return Some((&raw const probe_fixup64) as u64);
    }
    (rip == read || rip == write).then_some((&raw const probe_fixup) as u64)
}
