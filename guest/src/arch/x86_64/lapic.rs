//! The local APIC (xAPIC, memory mapped): end-of-interrupt, inter-processor
//! interrupts, and the timer that drives preemption.
//!
//! The registers are reached through the HHDM, which maps the first 4 GiB
//! under base revision 2; the firmware's MTRRs make that range uncached, as
//! MMIO needs, whatever the page tables say.
use crate::mm::hhdm;
use core::sync::atomic::{AtomicU64, Ordering};
use x86_64::registers::model_specific::Msr;
use x86_64::PhysAddr;

const IA32_APIC_BASE: u32 = 0x1b;

const ID: usize = 0x20;
const EOI: usize = 0xb0;
const SVR: usize = 0xf0;
/// In-service register: 8 registers of 32 vectors each, 16 bytes apart.
const ISR: usize = 0x100;
const ICR_LOW: usize = 0x300;
const ICR_HIGH: usize = 0x310;
const LVT_TIMER: usize = 0x320;
const TIMER_INITIAL: usize = 0x380;
const TIMER_CURRENT: usize = 0x390;
const TIMER_DIVIDE: usize = 0x3e0;

pub const SPURIOUS_VECTOR: u8 = 0xff;

/// Virtual address of the register page; the same on every CPU.
static BASE: AtomicU64 = AtomicU64::new(0);
/// LAPIC timer ticks per millisecond (divider 16), from calibration.
static TICKS_PER_MS: AtomicU64 = AtomicU64::new(0);

fn reg(offset: usize) -> *mut u32 {
    let base = BASE.load(Ordering::Relaxed);
    assert!(base != 0, "LAPIC used before lapic::init");
    (base as usize + offset) as *mut u32
}

fn read(offset: usize) -> u32 {
    // SAFETY: `reg` points into the LAPIC register page mapped by the HHDM;
    // LAPIC registers are 32-bit aligned and must be accessed as such.
    unsafe { reg(offset).read_volatile() }
}

fn write(offset: usize, value: u32) {
    // SAFETY: as in `read`.
    unsafe { reg(offset).write_volatile(value) }
}

/// Enable this CPU's LAPIC (software enable + spurious vector).
pub fn init_this_cpu() {
    // SAFETY: IA32_APIC_BASE exists on every x86_64 CPU with an APIC.
    let msr = unsafe { Msr::new(IA32_APIC_BASE).read() };
    let phys = PhysAddr::new(msr & 0x000f_ffff_ffff_f000);
    let virt = hhdm::phys_to_virt(phys).expect("LAPIC init before the HHDM offset is known");
    BASE.store(virt.as_u64(), Ordering::Relaxed);
    write(SVR, 0x100 | u32::from(SPURIOUS_VECTOR));
}

/// This CPU's LAPIC id, read from the LAPIC itself (xAPIC ID register,
/// bits 31:24): a fact about the executing CPU that no per-CPU variable
/// can get wrong, for fault reports to witness which CPU they ran on.
pub fn hardware_id() -> u32 {
    read(ID) >> 24
}

pub fn eoi() {
    write(EOI, 0);
}

/// Interrupt vectors in service on this CPU (bits set in the ISR).
pub fn in_service_count() -> u32 {
    (0..8).map(|i| read(ISR + 0x10 * i).count_ones()).sum()
}

/// End every interrupt in service on this CPU; how many there were.
/// Only for code that knows no handler is running on this CPU: each EOI
/// ends the highest-priority one in service.
pub fn end_all_in_service() -> u64 {
    let in_service = || (0..8).any(|i| read(ISR + 0x10 * i) != 0);
    let mut ended = 0;
    while ended < 256 && in_service() {
        eoi();
        ended += 1;
    }
    ended
}

/// Delivery modes for `send_ipi`.
#[derive(Clone, Copy)]
pub enum Delivery {
    Fixed(u8),
    Nmi,
}

fn icr_low(d: Delivery) -> u32 {
    match d {
        Delivery::Fixed(v) => u32::from(v),
        Delivery::Nmi => 0b100 << 8,
    }
}

fn wait_icr_idle() {
    while read(ICR_LOW) & (1 << 12) != 0 {
        core::hint::spin_loop();
    }
}

/// Send an IPI to the CPU with LAPIC id `dest`.
pub fn send_ipi(dest: u32, d: Delivery) {
    let flags = x86_64::instructions::interrupts::are_enabled();
    x86_64::instructions::interrupts::disable();
    wait_icr_idle();
    write(ICR_HIGH, dest << 24);
    write(ICR_LOW, icr_low(d));
    wait_icr_idle();
    if flags {
        x86_64::instructions::interrupts::enable();
    }
}

/// Send an IPI to every CPU but this one.
pub fn send_ipi_all_but_self(d: Delivery) {
    let flags = x86_64::instructions::interrupts::are_enabled();
    x86_64::instructions::interrupts::disable();
    wait_icr_idle();
    write(ICR_LOW, icr_low(d) | (0b11 << 18));
    wait_icr_idle();
    if flags {
        x86_64::instructions::interrupts::enable();
    }
}

/// Measure the LAPIC timer's rate: `measure` gets a reader of the ticks
/// counted so far and returns the ticks per millisecond it found.
pub fn calibrate(measure: impl FnOnce(&mut dyn FnMut() -> u64) -> u64) {
    write(TIMER_DIVIDE, 0b0011); // divide by 16
    write(LVT_TIMER, 1 << 16); // masked, one-shot
    write(TIMER_INITIAL, u32::MAX);
    let per_ms = measure(&mut || u64::from(u32::MAX - read(TIMER_CURRENT)));
    write(TIMER_INITIAL, 0);
    TICKS_PER_MS.store(per_ms.max(1), Ordering::Relaxed);
}

pub fn ticks_per_ms() -> u64 {
    TICKS_PER_MS.load(Ordering::Relaxed)
}

/// Start the periodic timer on this CPU: `vector` every `period_us`.
pub fn start_timer(vector: u8, period_us: u64) {
    let ticks = (ticks_per_ms() * period_us / 1000).clamp(1, u64::from(u32::MAX)) as u32;
    write(TIMER_DIVIDE, 0b0011);
    write(LVT_TIMER, (1 << 17) | u32::from(vector)); // periodic
    write(TIMER_INITIAL, ticks);
}
