//! CPU exceptions: what arch does before anyone explains the fault.
//!
//! A guard-page hit usually arrives as a double fault: the page fault on
//! the overflowing stack cannot push its own frame there, so the CPU
//! escalates to #DF, which runs on its IST stack (the SDM's "contributory
//! fault during delivery" rule). Arch does the parts that are about the CPU
//! (a probe's fixup, the #DF slot that must not take a second #DF, the
//! page-fault nesting count, NMI bookkeeping) and hands every other fault to
//! the handlers the fault-report layer installed (`register`): it tells a
//! guard hit from anything else and decides whether the task can be killed
//! or the machine must stop. Arch names none of the layers above it.
use super::percpu::{self, IST_DOUBLE_FAULT};
use super::probe;
use super::trap::TrapFrame;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use spin::Once;
use x86_64::registers::control::Cr2;

/// NMIs taken, on all CPUs.
pub static NMI_COUNT: AtomicU64 = AtomicU64::new(0);
/// Where each CPU's last NMI frame was (proves which stack it ran on).
static LAST_NMI_FRAME: [AtomicU64; percpu::MAX_CPUS] =
    [const { AtomicU64::new(0) }; percpu::MAX_CPUS];
/// Nesting of page-fault handlers per CPU (a fault inside one is reported
/// as exception context).
static IN_PAGE_FAULT: [AtomicU8; percpu::MAX_CPUS] = [const { AtomicU8::new(0) }; percpu::MAX_CPUS];

/// What the kernel does with a fault arch does not handle itself; each
/// never returns (the task is killed or the machine stops).
pub struct FaultHandlers {
    /// A double fault, with CR2 and this CPU's #DF slot blocked.
    pub double_fault: fn(&mut TrapFrame, u64, NestedDfBlocked) -> !,
    /// A page fault no probe claimed, with CR2, counted as nested.
    pub page_fault: fn(&mut TrapFrame, u64, InPageFault) -> !,
    /// Any other exception, by name.
    pub other: fn(&TrapFrame, &'static str) -> !,
}

static HANDLERS: Once<FaultHandlers> = Once::new();

/// Install the kernel's fault handlers (once, at boot, before the first
/// fault that is not a probe's).
pub fn register(handlers: FaultHandlers) {
    HANDLERS.call_once(|| handlers);
}

fn handlers(what: &str, frame: &TrapFrame) -> &'static FaultHandlers {
    HANDLERS.get().unwrap_or_else(|| {
        panic!(
            "{what} at rip {:#x} before the fault handlers were registered",
            frame.rip
        )
    })
}

/// Proof that this CPU's #DF IST slot points at the guard page below its
/// stack, so that a #DF inside the #DF handler cannot be delivered (a
/// shutdown, i.e. a triple fault) instead of silently restarting on top of
/// the handler's own frames. `lift` points it back at the stack, once the
/// report no longer needs the protection; a handler that never lifts it
/// leaves the CPU unable to take its next #DF.
pub struct NestedDfBlocked {
    cpu: &'static percpu::PerCpu,
    top: x86_64::VirtAddr,
}

impl NestedDfBlocked {
    fn new(cpu: &'static percpu::PerCpu) -> NestedDfBlocked {
        let top = cpu.ist_top(IST_DOUBLE_FAULT);
        cpu.set_ist_top(IST_DOUBLE_FAULT, cpu.ist_bottom(IST_DOUBLE_FAULT));
        NestedDfBlocked { cpu, top }
    }
    pub fn lift(self) {
        self.cpu.set_ist_top(IST_DOUBLE_FAULT, self.top);
    }
}

/// This CPU is inside a page-fault handler until this is dropped (a fault
/// taken meanwhile is reported as exception context: `in_page_fault`).
pub struct InPageFault {
    cpu: usize,
}

impl InPageFault {
    fn new(cpu: usize) -> InPageFault {
        IN_PAGE_FAULT[cpu].fetch_add(1, Ordering::Relaxed);
        InPageFault { cpu }
    }
    /// The CPU this handler runs on (0 before per-CPU data).
    pub fn cpu(&self) -> usize {
        self.cpu
    }
}

impl Drop for InPageFault {
    fn drop(&mut self) {
        IN_PAGE_FAULT[self.cpu].fetch_sub(1, Ordering::Relaxed);
    }
}

/// The kill path: whatever handler frames were on the dead task's stack are
/// abandoned with it, and so are their nesting counts.
pub fn abandon_page_faults(cpu: usize) {
    IN_PAGE_FAULT[cpu].store(0, Ordering::Relaxed);
}

const NAMES: [&str; 32] = [
    "divide error",
    "debug",
    "NMI",
    "breakpoint",
    "overflow",
    "bound range",
    "invalid opcode",
    "device not available",
    "double fault",
    "coprocessor overrun",
    "invalid TSS",
    "segment not present",
    "stack segment",
    "general protection",
    "page fault",
    "reserved",
    "x87 FP",
    "alignment check",
    "machine check",
    "SIMD FP",
    "virtualization",
    "control protection",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "hypervisor injection",
    "VMM communication",
    "security",
    "reserved",
];

pub fn dispatch(frame: &mut TrapFrame) {
    match frame.vector {
        2 => nmi(frame),
        8 => double_fault(frame),
        14 => page_fault(frame),
        v => {
            let what = NAMES[v as usize & 31];
            (handlers(what, frame).other)(frame, what)
        }
    }
}

pub fn in_page_fault(cpu: usize) -> bool {
    IN_PAGE_FAULT[cpu].load(Ordering::Relaxed) > 0
}

pub fn last_nmi_frame(cpu: usize) -> u64 {
    LAST_NMI_FRAME[cpu].load(Ordering::Acquire)
}

/// Per CPU: NMIs that found interrupts off with no tick taken since the
/// previous NMI (a CPU stuck with interrupts off answers these; one that
/// only was not being run answers at most one, wherever the host stopped
/// it, and then takes its pending tick), the tick count at the last NMI,
/// and what the last NMI interrupted (RIP, interrupt flag). RCU's stall
/// detector probes with them.
static NMI_STUCK: [AtomicU64; percpu::MAX_CPUS] = [const { AtomicU64::new(0) }; percpu::MAX_CPUS];
static NMI_TICKS: [AtomicU64; percpu::MAX_CPUS] =
    [const { AtomicU64::new(u64::MAX) }; percpu::MAX_CPUS];
static NMI_RIP: [AtomicU64; percpu::MAX_CPUS] = [const { AtomicU64::new(0) }; percpu::MAX_CPUS];
static NMI_IF: [AtomicU8; percpu::MAX_CPUS] = [const { AtomicU8::new(0) }; percpu::MAX_CPUS];

/// NMIs `cpu` answered stuck with interrupts off (see `NMI_STUCK`), and the
/// RIP and interrupt flag the last NMI found there.
pub fn nmis_answered(cpu: usize) -> (u64, u64, bool) {
    (
        NMI_STUCK[cpu].load(Ordering::Acquire),
        NMI_RIP[cpu].load(Ordering::Acquire),
        NMI_IF[cpu].load(Ordering::Acquire) != 0,
    )
}

/// NMIs only count and note where they ran: an NMI may arrive inside any
/// other handler (a #DF report included) and must disturb nothing.
fn nmi(frame: &mut TrapFrame) {
    if percpu::ready() {
        let cpu = percpu::this();
        let id = cpu.id;
        LAST_NMI_FRAME[id].store(frame as *const TrapFrame as u64, Ordering::Release);
        let irqs_on = frame.rflags & (1 << 9) != 0;
        NMI_RIP[id].store(frame.rip, Ordering::Release);
        NMI_IF[id].store(u8::from(irqs_on), Ordering::Release);
        let ticks = cpu.ticks();
        if NMI_TICKS[id].swap(ticks, Ordering::AcqRel) == ticks && !irqs_on {
            NMI_STUCK[id].fetch_add(1, Ordering::AcqRel);
        }
    }
    NMI_COUNT.fetch_add(1, Ordering::AcqRel);
}

fn double_fault(frame: &mut TrapFrame) {
    let blocked = NestedDfBlocked::new(percpu::this());
    (handlers("double fault", frame).double_fault)(frame, Cr2::read_raw(), blocked)
}

fn page_fault(frame: &mut TrapFrame) {
    if let Some(fixup) = probe::fixup_for(frame.rip) {
        frame.rip = fixup;
        return;
    }
    let cr2 = Cr2::read_raw();
    let id = percpu::try_this().map_or(0, |c| c.id);
    let nesting = InPageFault::new(id);
    (handlers("page fault", frame).page_fault)(frame, cr2, nesting)
}
