//! Starting the application processors: INIT-SIPI-SIPI into a real-mode
//! trampoline that enters long mode directly on the guest's final page
//! tables, then parks each AP on its `goto_address` in HHDM-mapped code.
//!
//! APs start one at a time, so the trampoline needs only one parameter
//! block; an AP signals arrival once it has copied every parameter out.
use crate::acpi::Madt;
use crate::cell::Static;
use crate::memmap::{align_up, Map, PAGE};
use crate::protocol::memmap_type::BOOTLOADER_RECLAIMABLE;
use crate::protocol::{MpInfo, HHDM_OFFSET, MP_INFO_GOTO_OFFSET};
use crate::time::Clock;
use crate::{acpi, cpu};
use core::sync::atomic::{AtomicU64, Ordering};

const APIC_BASE_MSR: u32 = 0x1b;
const LAPIC_ID: usize = 0x20;
const LAPIC_SVR: usize = 0xf0;
const LAPIC_ICR_LOW: usize = 0x300;
const LAPIC_ICR_HIGH: usize = 0x310;
const ICR_PENDING: u32 = 1 << 12;
const ICR_INIT: u32 = 0x4500;
const ICR_STARTUP: u32 = 0x4600;
/// Generous for TCG on a loaded host; only a CPU that never comes waits this long.
const FIRST_SIPI_WAIT_US: u64 = 20_000;
const SECOND_SIPI_WAIT_US: u64 = 500_000;
const MAX_MTRRS: usize = 48;

core::arch::global_asm!(
    r#"
    .section .rodata.ap_trampoline, "a"
    .balign 16
    .global ap_trampoline_start
ap_trampoline_start:
    .code16
    cli
    cld
    mov %cs, %ax
    mov %ax, %ds
    lgdtl (tp_gdtr - ap_trampoline_start)
    mov %cr4, %eax
    or $0x20, %eax
    mov %eax, %cr4
    mov (tp_cr3 - ap_trampoline_start), %eax
    mov %eax, %cr3
    mov $0xc0000080, %ecx
    rdmsr
    or (tp_efer - ap_trampoline_start), %eax
    wrmsr
    /* PE and PG together: straight from real mode into long mode. */
    mov %cr0, %eax
    or $0x80010001, %eax
    mov %eax, %cr0
    ljmpl *(tp_far64 - ap_trampoline_start)

    .code64
    .global ap_trampoline_long
ap_trampoline_long:
    mov $0x30, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov %eax, %fs
    mov %eax, %gs
    /* Match the BSP's MTRRs (default type last, with the ranges in place). */
    lea tp_msrs(%rip), %rsi
    mov tp_msr_count(%rip), %ebx
1:
    test %ebx, %ebx
    jz 2f
    mov (%rsi), %ecx
    mov 8(%rsi), %eax
    mov 12(%rsi), %edx
    wrmsr
    add $16, %rsi
    dec %ebx
    jmp 1b
2:
    /* Find this CPU's slot by its local APIC id. */
    mov tp_lapic(%rip), %rax
    mov 0x20(%rax), %eax
    shr $24, %eax
    mov tp_slots(%rip), %rsi
    mov tp_slot_count(%rip), %ecx
5:
    test %ecx, %ecx
    jz 7f
    cmp (%rsi), %eax
    je 6f
    add ${slot_size}, %rsi
    dec %ecx
    jmp 5b
6:
    lgdt tp_final_gdtr(%rip)
    mov {slot_stack}(%rsi), %rsp
    mov {slot_info}(%rsi), %rdi
    mov tp_park(%rip), %rax
    pushq $0x28
    push %rax
    movq $1, {slot_arrived}(%rsi)
    lretq
7:
    /* Not a CPU we were asked to start: stay out of the way. */
    cli
    hlt
    jmp 7b

    .balign 8
    .global tp_gdt
tp_gdt:
    .quad 0, 0x00009a000000ffff, 0x000092000000ffff, 0x00cf9a000000ffff
    .quad 0x00cf92000000ffff, 0x00209a0000000000, 0x0000920000000000
    .global tp_gdtr
tp_gdtr:
    .word 7 * 8 - 1
    .long 0
    .global tp_far64
tp_far64:
    .long 0
    .word 0x28
    .global tp_cr3
tp_cr3:
    .long 0
    .global tp_efer
tp_efer:
    .long 0
    .balign 8
    .global tp_final_gdtr
tp_final_gdtr:
    .word 0
    .quad 0
    .balign 8
    .global tp_lapic
tp_lapic:
    .quad 0
    .global tp_slots
tp_slots:
    .quad 0
    .global tp_park
tp_park:
    .quad 0
    .global tp_slot_count
tp_slot_count:
    .long 0
    .global tp_msr_count
tp_msr_count:
    .long 0
    .global tp_msrs
tp_msrs:
    .skip 16 * {max_mtrrs}
    .global ap_trampoline_end
ap_trampoline_end:

    /* Runs at its HHDM alias (position-independent): RDI = this CPU's
     * limine_mp_info, RSP = top of its stack. */
    .text
    .global ap_park
ap_park:
3:
    mov {goto}(%rdi), %rax
    test %rax, %rax
    jnz 4f
    pause
    jmp 3b
4:
    /* Drop TLB entries of the identity map the handoff removed. */
    mov %cr3, %rcx
    mov %rcx, %cr3
    pushq $0
    push %rax
    pushq $2
    popfq
    "#,
    zero_gprs_but_rdi_and_ret!(),
    goto = const MP_INFO_GOTO_OFFSET,
    slot_size = const core::mem::size_of::<Slot>(),
    slot_stack = const core::mem::offset_of!(Slot, stack),
    slot_info = const core::mem::offset_of!(Slot, info),
    slot_arrived = const core::mem::offset_of!(Slot, arrived),
    max_mtrrs = const MAX_MTRRS,
    options(att_syntax)
);

unsafe extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_end: u8;
    static ap_trampoline_long: u8;
    static tp_gdt: u8;
    static tp_gdtr: u8;
    static tp_far64: u8;
    static tp_cr3: u8;
    static tp_efer: u8;
    static tp_final_gdtr: u8;
    static tp_lapic: u8;
    static tp_slots: u8;
    static tp_slot_count: u8;
    static tp_park: u8;
    static tp_msr_count: u8;
    static tp_msrs: u8;
    static ap_park: u8;
}

static INFOS: Static<[MpInfo; acpi::MAX_CPUS]> = Static::new(
    [const {
        MpInfo {
            processor_id: 0,
            lapic_id: 0,
            reserved: 0,
            goto_address: 0,
            extra_argument: 0,
        }
    }; acpi::MAX_CPUS],
);
/// What one AP picks up in the trampoline, found by its APIC id. All APs
/// start at once, so each has its own slot.
#[repr(C)]
struct Slot {
    apic_id: u32,
    _pad: u32,
    stack: u64,
    info: u64,
    arrived: AtomicU64,
}

static SLOTS: Static<[Slot; acpi::MAX_CPUS]> = Static::new(
    [const {
        Slot {
            apic_id: 0,
            _pad: 0,
            stack: 0,
            info: 0,
            arrived: AtomicU64::new(0),
        }
    }; acpi::MAX_CPUS],
);
static INFO_PTRS: Static<[u64; acpi::MAX_CPUS]> = Static::new([0; acpi::MAX_CPUS]);

fn sym(s: *const u8) -> u64 {
    s as u64
}

/// Where a trampoline symbol lives once the trampoline is copied to `page`.
fn at(page: u64, s: *const u8) -> u64 {
    page + (sym(s) - sym(core::ptr::addr_of!(ap_trampoline_start)))
}

struct Lapic(u64);

impl Lapic {
    fn read(&self, reg: usize) -> u32 {
        // SAFETY: xAPIC registers are 32-bit MMIO in the identity-mapped page at `self.0`.
        unsafe { ((self.0 as usize + reg) as *const u32).read_volatile() }
    }

    fn write(&self, reg: usize, value: u32) {
        // SAFETY: as for `read`.
        unsafe { ((self.0 as usize + reg) as *mut u32).write_volatile(value) }
    }

    fn send_ipi(&self, clock: &Clock, apic_id: u32, command: u32) {
        self.write(LAPIC_ICR_HIGH, apic_id << 24);
        self.write(LAPIC_ICR_LOW, command);
        clock.wait_until(1000, || self.read(LAPIC_ICR_LOW) & ICR_PENDING == 0);
    }
}

pub fn bsp_lapic_id() -> u32 {
    let lapic = Lapic(cpu::rdmsr(APIC_BASE_MSR) & 0xffff_f000);
    lapic.read(LAPIC_ID) >> 24
}

/// A CPU the MADT lists and the memory it will run on.
pub struct Plan {
    stacks: [u64; acpi::MAX_CPUS],
}

/// Allocates each AP's stack (bootloader-reclaimable) before the page tables
/// are built, so the memory map is final once they are.
pub fn plan(madt: &Madt, bsp: u32, stack_size: u64, map: &mut Map) -> Plan {
    let mut p = Plan {
        stacks: [0; acpi::MAX_CPUS],
    };
    for (i, c) in madt.cpus[..madt.cpu_count].iter().enumerate() {
        if c.lapic_id != bsp {
            let size = align_up(stack_size, PAGE);
            p.stacks[i] = map.alloc(size, PAGE, BOOTLOADER_RECLAIMABLE) + size;
        }
    }
    p
}

fn mtrrs(out: &mut [[u64; 2]; MAX_MTRRS]) -> usize {
    if cpu::cpuid(1)[3] & (1 << 12) == 0 {
        return 0;
    }
    let cap = cpu::rdmsr(0xfe);
    let mut n = 0;
    let mut push = |msr: u32| {
        if n < MAX_MTRRS {
            out[n] = [u64::from(msr), cpu::rdmsr(msr)];
            n += 1;
        }
    };
    for i in 0..(cap & 0xff) as u32 {
        push(0x200 + 2 * i);
        push(0x201 + 2 * i);
    }
    if cap & (1 << 8) != 0 {
        for msr in [
            0x250, 0x258, 0x259, 0x268, 0x269, 0x26a, 0x26b, 0x26c, 0x26d, 0x26e, 0x26f,
        ] {
            push(msr);
        }
    }
    push(0x2ff);
    n
}

/// Everything the trampoline's parameter block needs that is the same for
/// every AP.
pub struct Context {
    pub trampoline: u64,
    pub cr3: u64,
    pub nx: bool,
    pub gdtr_limit: u16,
    pub gdt_hhdm: u64,
}

/// Starts every AP of `madt`, fills the `limine_mp_info` array, and returns
/// (info pointer array HHDM address, CPUs that made it, BSP APIC id).
pub fn start(madt: &Madt, plan: &Plan, ctx: &Context, clock: &Clock) -> (u64, usize) {
    let lapic = Lapic(cpu::rdmsr(APIC_BASE_MSR) & 0xffff_f000);
    let bsp = lapic.read(LAPIC_ID) >> 24;
    // Sending IPIs needs the local APIC software-enabled.
    lapic.write(LAPIC_SVR, lapic.read(LAPIC_SVR) | 0x100 | 0xff);

    let page = ctx.trampoline;
    let (start, end) = (
        core::ptr::addr_of!(ap_trampoline_start),
        core::ptr::addr_of!(ap_trampoline_end),
    );
    let len = (sym(end) - sym(start)) as usize;
    // SAFETY: the trampoline (well under a page) is copied to its reserved,
    // identity-mapped page below 1 MiB; the source is our own rodata.
    unsafe { core::ptr::copy_nonoverlapping(start, page as usize as *mut u8, len) };

    let mut regs = [[0u64; 2]; MAX_MTRRS];
    let nregs = mtrrs(&mut regs);
    // SAFETY (all writes below): each target is a field of the trampoline
    // copy inside its page, at the offset the assembler gave it, sized as
    // declared there; no AP runs the trampoline yet.
    unsafe {
        let w32 = |s: *const u8, v: u32| (at(page, s) as usize as *mut u32).write_unaligned(v);
        let w64 = |s: *const u8, v: u64| (at(page, s) as usize as *mut u64).write_unaligned(v);
        w32(
            core::ptr::addr_of!(tp_gdtr).add(2),
            at(page, core::ptr::addr_of!(tp_gdt)) as u32,
        );
        w32(
            core::ptr::addr_of!(tp_far64),
            at(page, core::ptr::addr_of!(ap_trampoline_long)) as u32,
        );
        w32(core::ptr::addr_of!(tp_cr3), ctx.cr3 as u32);
        w32(
            core::ptr::addr_of!(tp_efer),
            (1 << 8) | if ctx.nx { 1 << 11 } else { 0 },
        );
        (at(page, core::ptr::addr_of!(tp_final_gdtr)) as usize as *mut u16)
            .write_unaligned(ctx.gdtr_limit);
        w64(core::ptr::addr_of!(tp_final_gdtr).add(2), ctx.gdt_hhdm);
        w64(
            core::ptr::addr_of!(tp_park),
            HHDM_OFFSET + sym(core::ptr::addr_of!(ap_park)),
        );
        w32(core::ptr::addr_of!(tp_msr_count), nregs as u32);
        for (i, r) in regs[..nregs].iter().enumerate() {
            w64(core::ptr::addr_of!(tp_msrs).add(16 * i), r[0]);
            w64(core::ptr::addr_of!(tp_msrs).add(16 * i + 8), r[1]);
        }
    }
    let cpus = &madt.cpus[..madt.cpu_count];
    let slots = SLOTS.get() as *mut Slot;
    let infos = INFOS.get() as *mut MpInfo;
    let mut aps = 0;
    for (i, c) in cpus.iter().enumerate() {
        // SAFETY: i < MAX_CPUS; no AP runs yet, so the BSP owns both arrays.
        unsafe {
            *infos.add(i) = MpInfo {
                processor_id: c.processor_id,
                lapic_id: c.lapic_id,
                reserved: 0,
                goto_address: 0,
                extra_argument: 0,
            };
            if c.lapic_id != bsp {
                *slots.add(aps) = Slot {
                    apic_id: c.lapic_id,
                    _pad: 0,
                    stack: HHDM_OFFSET + plan.stacks[i],
                    info: HHDM_OFFSET + infos.add(i) as u64,
                    arrived: AtomicU64::new(0),
                };
                aps += 1;
            }
        }
    }
    // SAFETY: the slots are initialised and outlive the APs' use of them;
    // from here on APs write `arrived`, so only shared access remains.
    let slots = unsafe { core::slice::from_raw_parts(slots as *const Slot, aps) };
    // SAFETY: as for the parameter block above.
    unsafe {
        (at(page, core::ptr::addr_of!(tp_lapic)) as usize as *mut u64)
            .write_unaligned(HHDM_OFFSET + lapic.0);
        (at(page, core::ptr::addr_of!(tp_slots)) as usize as *mut u64)
            .write_unaligned(HHDM_OFFSET + slots.as_ptr() as u64);
        (at(page, core::ptr::addr_of!(tp_slot_count)) as usize as *mut u32)
            .write_unaligned(aps as u32);
    }

    // All APs at once: their start-up latencies (vCPU threads being
    // scheduled on the host) overlap instead of adding up.
    let vector = (page >> 12) as u32;
    let all_arrived = || slots.iter().all(|s| s.arrived.load(Ordering::Acquire) != 0);
    for s in slots {
        lapic.send_ipi(clock, s.apic_id, ICR_INIT);
    }
    for s in slots {
        lapic.send_ipi(clock, s.apic_id, ICR_STARTUP | vector);
    }
    if !clock.wait_until(FIRST_SIPI_WAIT_US, all_arrived) {
        for s in slots
            .iter()
            .filter(|s| s.arrived.load(Ordering::Acquire) == 0)
        {
            lapic.send_ipi(clock, s.apic_id, ICR_STARTUP | vector);
        }
        clock.wait_until(SECOND_SIPI_WAIT_US, all_arrived);
    }
    for s in slots
        .iter()
        .filter(|s| s.arrived.load(Ordering::Acquire) == 0)
    {
        // Back to wait-for-SIPI, so it cannot start behind the guest's back.
        lapic.send_ipi(clock, s.apic_id, ICR_INIT);
        crate::println!(
            "loader: CPU with APIC id {} did not start; leaving it out",
            s.apic_id
        );
    }

    let ptrs = INFO_PTRS.get() as *mut u64;
    let mut count = 0;
    for (i, c) in cpus.iter().enumerate() {
        let started = c.lapic_id == bsp
            || slots
                .iter()
                .any(|s| s.apic_id == c.lapic_id && s.arrived.load(Ordering::Acquire) != 0);
        if started {
            // SAFETY: count <= i < MAX_CPUS; the array is the BSP's alone.
            unsafe { ptrs.add(count).write(HHDM_OFFSET + infos.add(i) as u64) };
            count += 1;
        }
    }
    (HHDM_OFFSET + ptrs as u64, count)
}
