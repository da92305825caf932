//! The jump into the guest. The final stub runs at its HHDM alias, so it can
//! remove the loader's identity map (the guest must not rely on it) and still
//! execute.
use crate::cell::Static;
use crate::cpu;
use crate::protocol::{HANDOFF_GDT, HHDM_OFFSET};

#[repr(C, packed)]
pub struct Gdtr {
    pub limit: u16,
    pub base: u64,
}

/// The protocol GDT's descriptor, with its HHDM address so it stays valid
/// after the identity map is gone. Shared by the BSP handoff and the APs.
pub static GDTR: Static<Gdtr> = Static::new(Gdtr { limit: 0, base: 0 });

#[repr(C)]
struct Block {
    gdtr: u64,
    identity_slot: u64,
    stack_top: u64,
    entry: u64,
}

static BLOCK: Static<Block> = Static::new(Block {
    gdtr: 0,
    identity_slot: 0,
    stack_top: 0,
    entry: 0,
});

core::arch::global_asm!(
    r#"
    .text
    .global handoff_stub
handoff_stub:
    mov (%rdi), %rax
    lgdt (%rax)
    lea 1f(%rip), %rax
    pushq $0x28
    push %rax
    lretq
1:
    mov $0x30, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov %eax, %fs
    mov %eax, %gs
    mov 8(%rdi), %rax
    movq $0, (%rax)
    mov %cr3, %rax
    mov %rax, %cr3
    mov 16(%rdi), %rsp
    mov 24(%rdi), %rax
    pushq $0
    push %rax
    pushq $2
    popfq
    xor %edi, %edi
    "#,
    zero_gprs_but_rdi_and_ret!(),
    options(att_syntax)
);

unsafe extern "C" {
    static handoff_stub: u8;
}

pub fn init_gdtr() {
    // SAFETY: single-threaded loader; nothing reads GDTR before this.
    unsafe {
        *GDTR.get() = Gdtr {
            limit: (core::mem::size_of_val(&HANDOFF_GDT) - 1) as u16,
            base: HHDM_OFFSET + HANDOFF_GDT.as_ptr() as u64,
        };
    }
}

fn mask_legacy_irqs(ioapics: &[u64]) {
    cpu::outb(0x21, 0xff);
    cpu::outb(0xa1, 0xff);
    for &base in ioapics {
        let reg = |index: u32| {
            // SAFETY: IOREGSEL/IOWIN of an I/O APIC the MADT lists, identity-mapped MMIO.
            unsafe { (base as usize as *mut u32).write_volatile(index) };
        };
        let win = base as usize + 0x10;
        reg(1);
        // SAFETY: as above.
        let entries = ((unsafe { (win as *const u32).read_volatile() } >> 16) & 0xff) + 1;
        for i in 0..entries {
            reg(0x10 + 2 * i);
            // SAFETY: as above.
            let low = unsafe { (win as *const u32).read_volatile() };
            // Only fixed and lowest-priority entries, as the protocol says.
            if (low >> 8) & 0x7 <= 1 {
                // SAFETY: as above.
                unsafe { (win as *mut u32).write_volatile(low | 1 << 16) };
            }
        }
    }
}

/// Enters the guest at `entry` on `stack_top` (HHDM addresses), with the
/// page tables already in CR3. `identity_slot` is the physical address of
/// the PML4 entry that identity-maps the loader.
pub fn enter(entry: u64, stack_top: u64, identity_slot: u64, ioapics: &[u64]) -> ! {
    mask_legacy_irqs(ioapics);
    let block = BLOCK.get();
    // SAFETY: single-threaded; the block lives in the loader image, which the
    // stub reads through the HHDM.
    unsafe {
        *block = Block {
            gdtr: HHDM_OFFSET + GDTR.get() as u64,
            identity_slot: HHDM_OFFSET + identity_slot,
            stack_top,
            entry,
        };
    }
    // SAFETY: the stub is position-independent and mapped at its HHDM alias
    // in the current page tables; it never returns.
    unsafe {
        core::arch::asm!(
            "cli",
            "cld",
            "jmp {stub}",
            stub = in(reg) HHDM_OFFSET + core::ptr::addr_of!(handoff_stub) as u64,
            in("rdi") HHDM_OFFSET + block as u64,
            options(noreturn)
        )
    }
}
