//! CPU exceptions: expected fixups, stack faults, and an oops for the rest.
//!
//! A guard-page hit usually arrives as a double fault: the page fault on
//! the overflowing stack cannot push its own frame there, so the CPU
//! escalates to #DF, which runs on its IST stack (the SDM's "contributory
//! fault during delivery" rule). Both handlers hand the frame to `oops`,
//! which tells a guard hit from anything else and says whether the task can
//! be killed or the machine must stop.
use super::percpu::{self, IST_DOUBLE_FAULT};
use super::trap::TrapFrame;
use super::{cpu, lapic, probe};
use crate::lkdtm;
use crate::mm::stack::EXCEPTION_STACK;
use crate::oops::{self, Action};
use crate::task::{self, ExitStatus};
use abi::kinds::Via;
use abi::GuestExit;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use x86_64::registers::control::{Cr2, Cr3};

/// NMIs taken, on all CPUs.
pub static NMI_COUNT: AtomicU64 = AtomicU64::new(0);
/// Interrupts whose delivery a stack fault cut short, ended when the
/// faulting task was killed (see `act`).
pub static IRQS_CUT_SHORT: AtomicU64 = AtomicU64::new(0);
/// Where each CPU's last NMI frame was (proves which stack it ran on).
static LAST_NMI_FRAME: [AtomicU64; percpu::MAX_CPUS] =
    [const { AtomicU64::new(0) }; percpu::MAX_CPUS];
/// Nesting of page-fault handlers per CPU (a fault inside one is reported
/// as exception context).
static IN_PAGE_FAULT: [AtomicU8; percpu::MAX_CPUS] = [const { AtomicU8::new(0) }; percpu::MAX_CPUS];

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
        v => oops(frame, NAMES[v as usize & 31]),
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
        let ticks = cpu.local.ticks.load(Ordering::Acquire);
        if NMI_TICKS[id].swap(ticks, Ordering::AcqRel) == ticks && !irqs_on {
            NMI_STUCK[id].fetch_add(1, Ordering::AcqRel);
        }
    }
    NMI_COUNT.fetch_add(1, Ordering::AcqRel);
}

fn double_fault(frame: &mut TrapFrame) {
    let cpu = percpu::this();
    let top = cpu.ist_top(IST_DOUBLE_FAULT);
    // No second #DF can be handled while this one runs: point the IST slot
    // at the guard page below this stack, so a nested #DF cannot be
    // delivered (a shutdown, i.e. triple fault) instead of silently
    // restarting on top of this handler's own frames.
    cpu.set_ist_top(IST_DOUBLE_FAULT, top - EXCEPTION_STACK as u64);
    if lkdtm::fire(&lkdtm::DF_RECURSE) {
        lkdtm::df_recurse(cpu.id);
    }
    if lkdtm::fire(&lkdtm::NMI_IN_DF) {
        let before = NMI_COUNT.load(Ordering::Acquire);
        lapic::send_ipi(cpu.lapic_id, lapic::Delivery::Nmi);
        for _ in 0..10_000_000u32 {
            if NMI_COUNT.load(Ordering::Acquire) != before {
                break;
            }
            core::hint::spin_loop();
        }
    }
    let action =
        oops::stack_fault(frame, Cr2::read_raw(), Via::DoubleFault).unwrap_or(Action::Fatal);
    // A deliberate defect (`runner --defect df-ist-not-restored`): the slot
    // left pointing at the guard, so the CPU's next #DF cannot be delivered.
    #[cfg(not(defect = "df-ist-not-restored"))]
    cpu.set_ist_top(IST_DOUBLE_FAULT, top);
    act(frame, action)
}

fn page_fault(frame: &mut TrapFrame) {
    if let Some(fixup) = probe::fixup_for(frame.rip) {
        frame.rip = fixup;
        return;
    }
    let cr2 = Cr2::read_raw();
    let id = if percpu::ready() {
        percpu::this().id
    } else {
        0
    };
    IN_PAGE_FAULT[id].fetch_add(1, Ordering::Relaxed);
    if lkdtm::fire(&lkdtm::PF_RECURSE) {
        lkdtm::pf_handler_recurse(id);
    }
    // A freed debug-placed object first: its pages lie in the vmalloc
    // area, where the stack-fault report would take it for a stray stack
    // access.
    let action = if percpu::ready() {
        oops::use_after_free(frame, cr2).or_else(|| oops::stack_fault(frame, cr2, Via::PageFault))
    } else {
        None
    };
    IN_PAGE_FAULT[id].fetch_sub(1, Ordering::Relaxed);
    match action {
        Some(a) => act(frame, a),
        None => {
            kprintln!("BUG: unable to handle page fault for address: {cr2:016x}");
            kprintln!(
                "#PF: {} {} access in {} mode",
                if frame.error_code & 1 != 0 {
                    "protection violation on"
                } else {
                    "not-present page,"
                },
                if frame.error_code & 16 != 0 {
                    "instruction fetch"
                } else if frame.error_code & 2 != 0 {
                    "write"
                } else {
                    "read"
                },
                if frame.error_code & 4 != 0 {
                    "user"
                } else {
                    "kernel"
                },
            );
            oops(frame, "page fault")
        }
    }
}

/// Carry out what the fault report decided, under the exit policy
/// (`oops::held`): a kill only if the task holds nothing the rest of the
/// kernel needs, after the resets Linux's `make_task_dead()` makes;
/// otherwise the machine stops ("caught, cannot recover").
fn act(frame: &TrapFrame, action: Action) -> ! {
    // The report normally decided already (so its `recovered` is true);
    // a path that did not is decided here.
    let decided = oops::held::take().or_else(|| {
        oops::held::decide(frame, action);
        oops::held::take()
    });
    if let Some(d) = &decided {
        oops::held::report(d);
    }
    let fixups = decided.as_ref().and_then(|d| d.fixups());
    match (action, fixups) {
        (Action::Kill(reason), Some(fixups)) => {
            // Whatever handler frames were on the dead task's stack are
            // abandoned with it.
            IN_PAGE_FAULT[percpu::this().id].store(0, Ordering::Relaxed);
            // An interrupt that arrived with no room left on the stack could
            // not push its frame: the fault (then #DF) took its place, but
            // the LAPIC had already put it in service, and no handler will
            // send its EOI. Its vector and every lower one would stay
            // blocked on this CPU for good, the tick first (and with it
            // preemption and RCU). A task is killed only outside interrupt
            // handlers, so nothing else can be in service here.
            #[cfg(not(defect = "kill-no-eoi"))]
            let ended = lapic::end_all_in_service();
            // A deliberate defect (`runner --defect kill-no-eoi`): the kill
            // path trusts that no interrupt is in service.
            #[cfg(defect = "kill-no-eoi")]
            let ended = 0;
            IRQS_CUT_SHORT.fetch_add(ended, Ordering::AcqRel);
            task::recovery::make_task_dead(
                fixups,
                oops::held::scenario(),
                decided.as_ref().is_some_and(|d| d.quiet()),
            );
            task::exit(ExitStatus::Killed(reason))
        }
        _ => match decided.as_ref().and_then(|d| d.policy_stop()) {
            Some(why) => {
                kprintln!("Kernel panic - not syncing: caught, cannot recover: {why}");
                cpu::exit(GuestExit::CaughtUnrecoverable)
            }
            None => {
                kprintln!("Kernel panic - not syncing: stack fault outside task context; stopping");
                cpu::exit(GuestExit::CaughtFatal)
            }
        },
    }
}

/// Print the oops and stop the machine through the panic path.
fn oops(frame: &TrapFrame, what: &str) -> ! {
    let cpu = if percpu::ready() {
        percpu::this().id as i64
    } else {
        -1
    };
    kprintln!("Oops: {what}: {:04x} [#1] SMP", frame.error_code);
    kprintln!("CPU: {cpu}");
    kprintln!("RIP: {:04x}:{:016x}", frame.cs, frame.rip);
    kprintln!("{frame}");
    kprintln!(
        "CR2: {:016x} CR3: {:016x}",
        Cr2::read_raw(),
        Cr3::read().0.start_address().as_u64()
    );
    panic!("unhandled {what} at rip {:#x}", frame.rip);
}
