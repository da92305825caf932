//! Device interrupts and IPIs: who handles which vector, and the
//! preemption point on the way out.
use super::lapic;
use super::percpu;
use super::trap::TrapFrame;
use core::sync::atomic::{AtomicU64, Ordering};

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

pub fn dispatch(frame: &mut TrapFrame) {
    match frame.vector as u8 {
        TIMER_VECTOR => {
            crate::task::timer_tick();
            lapic::eoi();
        }
        TLB_SHOOTDOWN_VECTOR => {
            crate::mm::tlb::handle_shootdown();
            lapic::eoi();
        }
        RESCHEDULE_VECTOR => {
            percpu::this().set_need_resched(true);
            lapic::eoi();
        }
        TEST_VECTOR => {
            if crate::lkdtm::fire(&crate::lkdtm::IRQ_RECURSE) {
                crate::lkdtm::irq_recurse(percpu::this().id);
            }
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
        crate::task::preempt_from_irq();
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

/// Run `f` with interrupts off on this CPU, restoring the previous state
/// (Linux's `local_irq_save`). The section is recorded on the running
/// task's held-lock stack: a task caught inside one cannot be killed, since
/// whatever the section guards may be half changed.
#[track_caller]
pub fn without<R>(f: impl FnOnce() -> R) -> R {
    let site = core::panic::Location::caller();
    x86_64::instructions::interrupts::without_interrupts(|| {
        let kind = kcore::lockdep::HeldKind::IrqsOff;
        let token = crate::sync::lockdep::acquired(kind, 0, "irqs_off", site);
        let r = f();
        crate::sync::lockdep::released(token, kind, 0);
        r
    })
}

/// Halt until the next interrupt, enabling interrupts atomically with the
/// halt (`sti; hlt`), so a wakeup between the check and the halt is not lost.
pub fn enable_and_halt() {
    x86_64::instructions::interrupts::enable_and_hlt();
}
