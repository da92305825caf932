//! The PVH entry (Xen's x86/HVM direct boot ABI, which QEMU implements for
//! `-kernel`): 32-bit protected mode, paging off, EBX = hvm_start_info.
//!
//! The 32-bit stub identity-maps the first 4 GiB with 2 MiB pages, enters long
//! mode on the protocol's GDT layout and calls `loader_main`.
use crate::memmap::E820Entry;

const START_MAGIC: u32 = 0x336e_c578;

core::arch::global_asm!(
    r#"
    .section .note.pvh, "a"
    .balign 4
    .long 4                 /* name size */
    .long 8                 /* desc size: QEMU reads a pointer-sized value */
    .long 18                /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .quad pvh_start32

    .section .text.entry, "ax"
    .code32
    .global pvh_start32
pvh_start32:
    cli
    cld
    mov edi, offset __bss_start
    mov ecx, offset __bss_end
    sub ecx, edi
    xor eax, eax
    rep stosb
    mov dword ptr [pvh_start_info], ebx
    mov esp, offset boot_stack_top

    /* NX only if the CPU has it: setting EFER.NXE otherwise faults. */
    mov eax, 0x80000000
    cpuid
    cmp eax, 0x80000001
    jb 2f
    mov eax, 0x80000001
    cpuid
    bt edx, 20
    jnc 2f
    mov byte ptr [nx_available], 1
2:
    mov edi, offset boot_pd
    mov eax, 0x83           /* present, writable, 2 MiB */
    xor ecx, ecx
3:
    mov dword ptr [edi + ecx * 8], eax
    add eax, 0x200000
    inc ecx
    cmp ecx, 2048
    jb 3b
    mov eax, offset boot_pd + 3
    mov dword ptr [boot_pdpt], eax
    add eax, 4096
    mov dword ptr [boot_pdpt + 8], eax
    add eax, 4096
    mov dword ptr [boot_pdpt + 16], eax
    add eax, 4096
    mov dword ptr [boot_pdpt + 24], eax
    mov eax, offset boot_pdpt + 3
    mov dword ptr [boot_pml4], eax

    mov eax, cr4
    or eax, 1 << 5          /* PAE */
    mov cr4, eax
    mov eax, offset boot_pml4
    mov cr3, eax
    mov ecx, 0xc0000080     /* EFER */
    rdmsr
    or eax, 1 << 8          /* LME */
    cmp byte ptr [nx_available], 0
    je 4f
    or eax, 1 << 11         /* NXE */
4:
    wrmsr
    mov eax, cr0
    or eax, 0x80010001      /* PG | WP | PE */
    mov cr0, eax
    lgdt [boot_gdtr]
    mov eax, 0x28
    push eax
    mov eax, offset pvh_long_mode
    push eax
    retf

    .code64
pvh_long_mode:
    mov eax, 0x30
    mov ds, eax
    mov es, eax
    mov ss, eax
    mov fs, eax
    mov gs, eax
    mov esp, offset boot_stack_top
    mov edi, dword ptr [pvh_start_info]
    call loader_main
    ud2

    .section .data.boot, "aw"
    .balign 8
boot_gdtr:
    .word 7 * 8 - 1
    .quad HANDOFF_GDT
    .global pvh_start_info
pvh_start_info:
    .long 0
    .global nx_available
nx_available:
    .byte 0

    .section .bss.boot, "aw", @nobits
    .balign 4096
boot_pml4:
    .skip 4096
boot_pdpt:
    .skip 4096
boot_pd:
    .skip 4096 * 4
    .global boot_stack_bottom
boot_stack_bottom:
    .skip 65536
boot_stack_top:
    "#
);

unsafe extern "C" {
    static nx_available: u8;
}

/// Whether the entry stub enabled EFER.NXE, and so whether page-table entries
/// may carry the NX bit.
pub fn nx() -> bool {
    // SAFETY: written once by the entry stub before any Rust code runs.
    unsafe { core::ptr::addr_of!(nx_available).read_volatile() != 0 }
}

#[repr(C)]
struct StartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    nr_modules: u32,
    modlist_paddr: u64,
    cmdline_paddr: u64,
    rsdp_paddr: u64,
    memmap_paddr: u64,
    memmap_entries: u32,
    reserved: u32,
}

#[repr(C)]
struct ModListEntry {
    paddr: u64,
    size: u64,
    cmdline_paddr: u64,
    reserved: u64,
}

#[repr(C)]
struct MemMapEntry {
    addr: u64,
    size: u64,
    kind: u32,
    reserved: u32,
}

pub const MAX_E820: usize = 128;
pub const CMDLINE_MAX: usize = 4096;

/// What the loader keeps from hvm_start_info, copied out because the
/// structure may live in memory the loader later hands out.
pub struct BootParams {
    pub e820: [E820Entry; MAX_E820],
    pub e820_len: usize,
    pub module: Option<(u64, u64)>,
    pub rsdp: u64,
}

/// Reads hvm_start_info at `paddr`, copying the command line into `cmdline`
/// (NUL-terminated, truncated to fit).
pub fn read(paddr: u32, cmdline: &mut [u8; CMDLINE_MAX]) -> BootParams {
    if paddr == 0 {
        crate::fail!("no hvm_start_info (EBX = 0): not started through PVH");
    }
    // SAFETY: the PVH ABI hands us a valid hvm_start_info in EBX, inside the
    // first 4 GiB that the entry stub identity-mapped.
    let si = unsafe { &*(paddr as usize as *const StartInfo) };
    if si.magic != START_MAGIC {
        crate::fail!(
            "hvm_start_info magic is {:#x}, expected {:#x}",
            si.magic,
            START_MAGIC
        );
    }
    let mut params = BootParams {
        e820: [E820Entry::default(); MAX_E820],
        e820_len: 0,
        module: None,
        rsdp: si.rsdp_paddr,
    };
    if si.version >= 1 && si.memmap_paddr != 0 {
        let n = (si.memmap_entries as usize).min(MAX_E820);
        for i in 0..n {
            // SAFETY: version 1 start info points at `memmap_entries` entries.
            let e = unsafe { &*(si.memmap_paddr as usize as *const MemMapEntry).add(i) };
            params.e820[i] = E820Entry {
                base: e.addr,
                len: e.size,
                kind: e.kind,
            };
        }
        params.e820_len = n;
    }
    if si.nr_modules > 0 && si.modlist_paddr != 0 {
        // SAFETY: `nr_modules` > 0 entries live at `modlist_paddr`; we read the first.
        let m = unsafe { &*(si.modlist_paddr as usize as *const ModListEntry) };
        params.module = Some((m.paddr, m.size));
    }
    if si.cmdline_paddr != 0 {
        let src = si.cmdline_paddr as usize as *const u8;
        let mut n = 0;
        while n < CMDLINE_MAX - 1 {
            // SAFETY: the command line is a NUL-terminated string; we stop at
            // its NUL or at our buffer's end, whichever comes first.
            let b = unsafe { src.add(n).read() };
            if b == 0 {
                break;
            }
            cmdline[n] = b;
            n += 1;
        }
        cmdline[n] = 0;
    }
    params
}
