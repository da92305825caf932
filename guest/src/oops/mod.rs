//! Explaining stack faults the way a good kernel explains an oops.
//!
//! Called from the #PF and #DF handlers (`trap`, which arch calls up to)
//! with the trapped register frame.
//! In four steps, each its own piece: `classify` decides what was hit (the
//! guard page below a stack, overflow; the one above, underflow; or no
//! guard of the faulting stack at all) from the vmalloc ownership registry
//! rather than guesses; `decide` says in what context it hit and whether
//! the task can be killed or the machine must stop, and `held` applies the
//! exit policy to what the task held; `backtrace` walks the
//! frames; `report` prints Linux's lines (`BUG: TASK stack guard page was
//! hit at ...`) plus what Linux does not tell (by how many bytes, whose
//! stack, the recursion depth, the LAPIC that took it), one
//! machine-readable `GUARD-HIT` line for the runner, and, the first time a
//! scenario faults, the raw stack so the runner can unwind it itself.
mod backtrace;
mod classify;
pub mod held;
mod panic;
mod report;
mod symbols;
mod trap;
mod uaf;

pub use abi::kinds::HitKind;
pub use trap::{register, IRQS_CUT_SHORT};
pub use uaf::{announce_uaf, uaf_reports, use_after_free};

use crate::arch::x86_64::lapic;
use crate::arch::x86_64::percpu::{self, PerCpu};
use crate::arch::x86_64::trap::TrapFrame;
use crate::lkdtm;
use crate::mm::stack::StackKind;
use crate::mm::vmalloc::Owner;
use abi::guard::{CpuMap, StackAlloc, StackCorruption};
use abi::kinds::{Context, Via};
use abi::Hex;
use classify::Fault;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use x86_64::registers::control::Cr3;

/// What the handler must do after the report.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Action {
    /// Task context: kill the task (with this reason), keep the machine.
    Kill(&'static str),
    /// IRQ or exception stack, or no task to blame: stop the machine.
    Fatal,
}

/// Guard hits reported so far (all CPUs), and the last kind per CPU (its
/// index in `HitKind::ALL` plus one; 0 for none), for the scenarios' own
/// checks.
static HITS: AtomicU64 = AtomicU64::new(0);
static LAST_KIND: [AtomicU8; percpu::MAX_CPUS] = [const { AtomicU8::new(0) }; percpu::MAX_CPUS];
static QUIET: AtomicBool = AtomicBool::new(false);
static SUPPRESSED: AtomicU64 = AtomicU64::new(0);
/// The scenario running now (index into `abi::SCENARIOS`, or MAX), named in
/// every report. An atomic: fault handlers on several CPUs read it at once.
static SCENARIO: AtomicUsize = AtomicUsize::new(usize::MAX);
/// The scenario whose first hit has dumped its stack (one dump per
/// scenario keeps a thousand overflows as fast as one).
static DUMPED: AtomicUsize = AtomicUsize::new(usize::MAX);

pub fn hits() -> u64 {
    HITS.load(Ordering::Acquire)
}

pub fn last_kind(cpu: usize) -> Option<HitKind> {
    let k = LAST_KIND[cpu].load(Ordering::Acquire) as usize;
    HitKind::from_index(k.checked_sub(1)?)
}

pub fn set_scenario(name: &str) {
    let i = abi::SCENARIOS
        .iter()
        .position(|s| s.name == name)
        .unwrap_or(usize::MAX);
    SCENARIO.store(i, Ordering::Release);
}

fn scenario() -> &'static str {
    abi::SCENARIOS
        .get(SCENARIO.load(Ordering::Acquire))
        .map_or("?", |s| s.name)
}

/// Rate-limit reports (a thousand identical oopses help nobody): while
/// quiet, hits are counted but not printed. Returns how many were
/// suppressed since the last call.
pub fn set_quiet(quiet: bool) -> u64 {
    QUIET.store(quiet, Ordering::Release);
    SUPPRESSED.swap(0, Ordering::AcqRel)
}

/// The running task's id and name (0 and "?" without one).
fn current_task(f: impl FnOnce(u64, &str)) {
    let (id, comm) =
        crate::task::with_current(|t| (t.id, t.name_bytes())).unwrap_or((0, ([0; 16], 0)));
    f(id, core::str::from_utf8(&comm.0[..comm.1]).unwrap_or("?"))
}

/// In what context the fault hit, and what to do about it. Only a task's
/// own stack, outside interrupt context, can be given up by killing the
/// task: everything on it belongs to that task alone.
fn decide(fault: &Fault, cpu: &PerCpu, task_id: u64) -> (Context, Action) {
    let stack_kind = fault.stack.map(|(_, k)| k);
    let in_exception = crate::arch::x86_64::exceptions::in_page_fault(cpu.id);
    let context = match stack_kind {
        Some(StackKind::Irq) => Context::Irq,
        // A deliberate defect (`runner --defect context-ignores-exception`):
        // a fault inside an exception handler told as plain task context.
        Some(StackKind::Task) if in_exception && !cfg!(defect = "context-ignores-exception") => {
            Context::Exception
        }
        Some(StackKind::Task) => Context::Task,
        _ => Context::Exception,
    };
    let owner_is_current = fault.stack.is_some_and(|(a, k)| {
        k == StackKind::Task && matches!(a.owner, Owner::Stack { id, .. } if id == task_id)
    });
    let action = if context != Context::Irq && owner_is_current && !cpu.in_irq() {
        Action::Kill("stack overflow")
    } else {
        Action::Fatal
    };
    (context, action)
}

/// Report a fault that may be a stack fault. `None` from a page fault
/// means "not about any stack": the caller reports it generically. A
/// double fault is always reported here, guard hit or not.
pub fn stack_fault(frame: &TrapFrame, cr2: u64, via: Via) -> Option<Action> {
    let cpu = percpu::this();
    // The second witness for "which CPU": the hardware's answer, read
    // before anything consults the per-CPU data.
    let lapic_id = lapic::hardware_id();
    let fault = classify::classify(frame, cr2, via, cpu)?;
    let mut out = None;
    current_task(|task_id, comm| {
        let (context, action) = decide(&fault, cpu, task_id);
        // What the task holds may forbid the kill: the exit policy decides
        // before the report, so `recovered` says what will really happen.
        // A deliberate defect (`runner --defect recovered-before-policy`):
        // the report's `recovered` taken from the decision before the exit
        // policy looked at what the task held.
        #[cfg(defect = "recovered-before-policy")]
        let told = action;
        let action = held::decide(frame, action);
        #[cfg(not(defect = "recovered-before-policy"))]
        let told = action;
        let (depth, depth_sp) = lkdtm::depth(cpu.id);
        let (lo, hi) = fault.stack.map_or((0, 0), |(a, _)| (a.base, a.top()));
        // The trace lives on the faulting stack (or, if rsp left it,
        // wherever rbp still points inside it).
        let trace = backtrace::walk_fault(frame, lo.min(frame.rbp), hi.max(frame.rbp + 16));

        HITS.fetch_add(1, Ordering::AcqRel);
        LAST_KIND[cpu.id].store(fault.kind.index() as u8 + 1, Ordering::Release);
        out = Some(action);
        // Quiet only hides what the machine survives: a hit that stops it is
        // the one report somebody must read.
        if QUIET.load(Ordering::Acquire) && action != Action::Fatal {
            SUPPRESSED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let me = SCENARIO.load(Ordering::Acquire);
        report::print(&report::Report {
            scenario: scenario(),
            fault: &fault,
            frame,
            cr2,
            cr3: Cr3::read().0.start_address().as_u64(),
            via,
            cpu: cpu.id as u32,
            lapic_id,
            task_id,
            comm,
            context,
            depth,
            depth_sp,
            trace: &trace,
            recovered: told != Action::Fatal,
            dump: &|| DUMPED.swap(me, Ordering::AcqRel) != me,
        });
    });
    lkdtm::reset_depth(cpu.id);
    out
}

/// Announce, before overflowing it, the stack a scenario is about to
/// overflow: the ground truth the runner checks the report against.
pub fn announce_stack(kind: StackKind, lo: u64, hi: u64, guards: usize, frame_bytes: u64) {
    if QUIET.load(Ordering::Acquire) {
        return;
    }
    let cpu = percpu::this();
    let lapic_id = lapic::hardware_id();
    lkdtm::reset_depth(cpu.id);
    current_task(|task_id, task_name| {
        crate::console::record(&StackAlloc {
            scenario: scenario(),
            stack_kind: kind,
            lo: Hex(lo),
            hi: Hex(hi),
            guard_below: guards as u64,
            guard_above: guards as u64,
            cpu: cpu.id as u32,
            lapic_id,
            task_id,
            task_name,
            frame_bytes,
        })
    });
}

/// Announce which LAPIC each CPU index is (`CPU-MAP`), as the boot loader
/// listed them: what the LAPIC id a report reads from the hardware is held
/// against.
pub fn announce_cpus(lapic_ids: impl Iterator<Item = u32>) {
    let mut map = CpuMap {
        lapic_ids: heapless::Vec::new(),
    };
    for id in lapic_ids {
        if map.lapic_ids.push(id).is_err() {
            break;
        }
    }
    crate::console::record(&map);
}

/// Report damage found after the fact, that no hardware caught.
pub fn report_corruption(what: &str, expected: u64, found: u64, lo: u64, hi: u64, task_id: u64) {
    crate::console::report(|w| {
        let _ = writeln!(
            w,
            "BUG: stack corruption: {what} is {found:#x}, expected {expected:#x} (stack {lo:016x}..{hi:016x}, task {task_id}); no fault was raised"
        );
        w.record(&StackCorruption {
            scenario: scenario(),
            what,
            expected: Hex(expected),
            found: Hex(found),
            lo: Hex(lo),
            hi: Hex(hi),
            task_id,
        });
    });
}
