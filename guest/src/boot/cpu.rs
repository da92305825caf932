//! Bringing one CPU into the kernel: its interrupt stacks, per-CPU block,
//! GDT/TSS, IDT and LAPIC. Runs on the CPU itself, interrupts off.
use crate::arch::x86_64::interrupts::TIMER_VECTOR;
use crate::arch::x86_64::lapic;
use crate::arch::x86_64::percpu::{self, CpuStacks, PerCpu};
use crate::mm::stack::{Stack, StackKind, EXCEPTION_STACK, IRQ_STACK};
use alloc::boxed::Box;

/// The scheduler tick: 250 Hz, Linux's common default.
pub const TICK_US: u64 = 4000;

fn permanent_stack(kind: StackKind, bytes: usize, cpu: usize) -> &'static Stack {
    let stack = Stack::vmap(kind, bytes, cpu as u64).unwrap_or_else(|e| {
        panic!(
            "CPU {cpu}: no memory for its {} stack: {e:?}",
            kind.linux_name()
        )
    });
    // Per-CPU stacks live as long as the machine: never freed, still in the
    // vmalloc registry (so faults on their guard pages are explained).
    Box::leak(Box::new(stack))
}

pub fn init_cpu(id: usize, lapic_id: u32) -> &'static PerCpu {
    let stacks = CpuStacks {
        irq: permanent_stack(StackKind::Irq, IRQ_STACK, id),
        double_fault: permanent_stack(StackKind::DoubleFault, EXCEPTION_STACK, id),
        nmi: permanent_stack(StackKind::Nmi, EXCEPTION_STACK, id),
        machine_check: permanent_stack(StackKind::MachineCheck, EXCEPTION_STACK, id),
    };
    let cpu = percpu::init_this_cpu(id, lapic_id, stacks);
    lapic::init_this_cpu();
    cpu
}

/// Start this CPU's scheduler tick (after the LAPIC timer was calibrated).
pub fn start_tick() {
    lapic::start_timer(TIMER_VECTOR, TICK_US);
}
