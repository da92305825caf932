//! Device interrupts and IPIs: who handles which vector, and the
//! preemption point on the way out.
//!
//! What a vector means to the kernel (a tick for the scheduler, a flush for
//! mm, a test hook) belongs to the layers above, which install their
//! handlers once at init (`register`, from `kernel_main`): arch calls up
//! through them and names none of those layers.
use super::lapic;
use super::percpu;
use super::trap::TrapFrame;
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Once;

/// The LAPIC timer: the scheduler tick.
pub const TIMER_VECTOR: u8 = 0x30;
/// "Flush these pages from your TLB" (see `mm::tlb`).
pub const TLB_SHOOTDOWN_VECTOR: u8 = 0xf0;
/// "Look at your run queue": a cross-CPU wakeup.
pub const RESCHEDULE_VECTOR: u8 = 0xf1;
/// A vector the stack scenarios raise on themselves, to run code on the
/// IRQ stack (`stack.irq`).
pub const TEST_VECTOR: u8 = 0xf2;

/// Interrupts on vectors nobody claimed (counted, never silent).
pub static UNEXPECTED: AtomicU64 = AtomicU64::new(0);

/// The kernel's handlers for the vectors above, each called with interrupts
/// off on the interrupted CPU (on its IRQ stack), before the EOI.
pub struct Handlers {
    /// The scheduler tick (`TIMER_VECTOR`), after `PerCpu::ticks` counted it.
    pub tick: fn(),
    /// A TLB shootdown IPI.
    pub shootdown: fn(),
    /// `TEST_VECTOR`.
    pub test: fn(),
    /// On the way out of an interrupt that asked for a reschedule, back on
    /// the interrupted task's stack, when it may be preempted.
    pub preempt: fn(),
}

static HANDLERS: Once<Handlers> = Once::new();

/// Install the kernel's handlers (once, before interrupts are enabled).
pub fn register(handlers: Handlers) {
    HANDLERS.call_once(|| handlers);
}

fn call(pick: impl FnOnce(&Handlers) -> fn()) {
    match HANDLERS.get() {
        Some(h) => pick(h)(),
        None => {
            UNEXPECTED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

pub fn dispatch(frame: &mut TrapFrame) {
    match frame.vector as u8 {
        TIMER_VECTOR => {
            percpu::this().count_tick();
            call(|h| h.tick);
            lapic::eoi();
        }
        TLB_SHOOTDOWN_VECTOR => {
            call(|h| h.shootdown);
            lapic::eoi();
        }
        RESCHEDULE_VECTOR => {
            percpu::this().set_need_resched(true);
            lapic::eoi();
        }
        TEST_VECTOR => {
            call(|h| h.test);
            lapic::eoi();
        }
        // Spurious interrupts must not be acknowledged.
        lapic::SPURIOUS_VECTOR => {}
        _ => {
            UNEXPECTED.fetch_add(1, Ordering::Relaxed);
            lapic::eoi();
        }
    }
}

/// Back on the interrupted stack, interrupts still off: if the tick or a
/// wakeup asked for it and the interrupted code may be preempted, switch
/// tasks now. The interrupted context resumes when this task runs again.
pub fn exit(frame: &mut TrapFrame) {
    const IF: u64 = 1 << 9;
    let cpu = percpu::this();
    if cpu.need_resched() && cpu.preempt_count() == 0 && !cpu.in_irq() && frame.rflags & IF != 0 {
        if let Some(h) = HANDLERS.get() {
            (h.preempt)();
        }
    }
}

/// Raise `vector` on this CPU (a self-IPI).
pub fn raise_self(vector: u8) {
    lapic::send_ipi(percpu::this().lapic_id, lapic::Delivery::Fixed(vector));
}

/// Disable interrupts on this CPU.
pub fn disable() {
    x86_64::instructions::interrupts::disable();
}

/// Enable interrupts on this CPU.
pub fn enable() {
    x86_64::instructions::interrupts::enable();
}

/// Halt until the next interrupt, enabling interrupts atomically with the
/// halt (`sti; hlt`), so a wakeup between the check and the halt is not lost.
pub fn enable_and_halt() {
    x86_64::instructions::interrupts::enable_and_hlt();
}
