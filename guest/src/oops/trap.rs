//! The fault handlers arch calls up to (`exceptions::register`): explain
//! the fault, then carry out what the report decided.
//!
//! The test hooks that misbehave inside a handler (LKDTM's crash points)
//! run here, at the top of the handler, where arch has already done its part
//! (the #DF slot blocked, the page fault counted as nested).
use super::{held, Action};
use crate::arch::x86_64::exceptions::{self, FaultHandlers, InPageFault, NestedDfBlocked};
use crate::arch::x86_64::trap::TrapFrame;
use crate::arch::x86_64::{cpu, lapic, percpu};
use crate::lkdtm;
use crate::task::{self, ExitStatus};
use abi::kinds::Via;
use abi::GuestExit;
use core::sync::atomic::{AtomicU64, Ordering};
use x86_64::registers::control::{Cr2, Cr3};

/// Interrupts whose delivery a stack fault cut short, ended when the
/// faulting task was killed (see `act`).
pub static IRQS_CUT_SHORT: AtomicU64 = AtomicU64::new(0);

/// Install these handlers with arch.
pub fn register() {
    exceptions::register(FaultHandlers {
        double_fault,
        page_fault,
        other: oops,
    });
}

fn double_fault(frame: &mut TrapFrame, cr2: u64, blocked: NestedDfBlocked) -> ! {
    let cpu = percpu::this();
    if lkdtm::fire(&lkdtm::DF_RECURSE) {
        lkdtm::df_recurse(cpu.id);
    }
    if lkdtm::fire(&lkdtm::NMI_IN_DF) {
        lkdtm::nmi_here(cpu.lapic_id);
    }
    let action = super::stack_fault(frame, cr2, Via::DoubleFault).unwrap_or(Action::Fatal);
    // A deliberate defect (`runner --defect df-ist-not-restored`): the slot
    // left pointing at the guard, so the CPU's next #DF cannot be delivered.
    #[cfg(not(defect = "df-ist-not-restored"))]
    blocked.lift();
    #[cfg(defect = "df-ist-not-restored")]
    core::mem::forget(blocked);
    act(frame, action)
}

fn page_fault(frame: &mut TrapFrame, cr2: u64, nesting: InPageFault) -> ! {
    if lkdtm::fire(&lkdtm::PF_RECURSE) {
        lkdtm::pf_handler_recurse(nesting.cpu());
    }
    // A freed debug-placed object first: its pages lie in the vmalloc
    // area, where the stack-fault report would take it for a stray stack
    // access.
    let action = if percpu::ready() {
        super::use_after_free(frame, cr2).or_else(|| super::stack_fault(frame, cr2, Via::PageFault))
    } else {
        None
    };
    drop(nesting);
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
/// (`held`): a kill only if the task holds nothing the rest of the kernel
/// needs, after the resets Linux's `make_task_dead()` makes; otherwise the
/// machine stops ("caught, cannot recover").
fn act(frame: &TrapFrame, action: Action) -> ! {
    // The report normally decided already (so its `recovered` is true);
    // a path that did not is decided here.
    let decided = held::take().or_else(|| {
        held::decide(frame, action);
        held::take()
    });
    if let Some(d) = &decided {
        held::report(d);
    }
    let fixups = decided.as_ref().and_then(|d| d.fixups());
    match (action, fixups) {
        (Action::Kill(reason), Some(fixups)) => {
            exceptions::abandon_page_faults(percpu::this().id);
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
                held::scenario(),
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
fn oops(frame: &TrapFrame, what: &'static str) -> ! {
    let cpu = percpu::try_this().map_or(-1, |c| c.id as i64);
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
