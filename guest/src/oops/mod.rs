//! Explaining stack faults the way a good kernel explains an oops.
//!
//! Called from the #PF and #DF handlers with the trapped register frame.
//! It decides what was hit — the guard page below a stack (overflow), the
//! one above (underflow), or something that is no guard of the faulting
//! stack at all — using the vmalloc ownership registry rather than guesses,
//! prints Linux's lines (`BUG: TASK stack guard page was hit at ...`) plus
//! what Linux does not tell (by how many bytes, whose stack, the recursion
//! depth), one machine-readable `GUARD-HIT` line for the runner, and says
//! whether the task can be killed or the machine must stop.
mod backtrace;
mod json;
mod uaf;

pub use uaf::{announce_uaf, uaf_reports, use_after_free};

use crate::arch::x86_64::percpu;
use crate::arch::x86_64::trap::TrapFrame;
use crate::lkdtm;
use crate::mm::stack::StackKind;
use crate::mm::vmalloc::{self, Owner, VmAllocation};
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use kcore::vmalloc::Lookup;
use x86_64::registers::control::Cr3;
use x86_64::VirtAddr;

/// Which handler saw the fault.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Via {
    PageFault,
    DoubleFault,
}

/// What the handler must do after the report.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Action {
    /// Task context: kill the task (with this reason), keep the machine.
    Kill(&'static str),
    /// IRQ or exception stack, or no task to blame: stop the machine.
    Fatal,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum HitKind {
    None = 0,
    Overflow = 1,
    Underflow = 2,
    NotGuard = 3,
}

impl HitKind {
    fn json(self) -> &'static str {
        match self {
            HitKind::Overflow => "overflow",
            HitKind::Underflow => "underflow",
            _ => "not-guard",
        }
    }
}

/// Guard hits reported so far (all CPUs), and the last kind per CPU, for
/// the scenarios' own checks.
static HITS: AtomicU64 = AtomicU64::new(0);
static LAST_KIND: [AtomicU8; percpu::MAX_CPUS] = [const { AtomicU8::new(0) }; percpu::MAX_CPUS];
static QUIET: AtomicBool = AtomicBool::new(false);
static SUPPRESSED: AtomicU64 = AtomicU64::new(0);
/// The scenario running now (index into `abi::SCENARIOS`, or MAX), named in
/// every report. An atomic: fault handlers on several CPUs read it at once.
static SCENARIO: AtomicUsize = AtomicUsize::new(usize::MAX);

pub fn hits() -> u64 {
    HITS.load(Ordering::Acquire)
}

pub fn last_kind(cpu: usize) -> HitKind {
    match LAST_KIND[cpu].load(Ordering::Acquire) {
        1 => HitKind::Overflow,
        2 => HitKind::Underflow,
        3 => HitKind::NotGuard,
        _ => HitKind::None,
    }
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

fn stack_kind_json(k: StackKind) -> &'static str {
    match k {
        StackKind::Task => abi::guard::stack_kind::TASK,
        StackKind::Irq => abi::guard::stack_kind::IRQ,
        StackKind::DoubleFault => abi::guard::stack_kind::DOUBLE_FAULT,
        StackKind::Nmi => abi::guard::stack_kind::NMI,
        StackKind::MachineCheck => abi::guard::stack_kind::MACHINE_CHECK,
    }
}

/// The stack allocation an address lies in or guards, if it is a stack.
fn stack_at(addr: u64) -> Option<(VmAllocation, StackKind)> {
    let a = vmalloc::lookup(VirtAddr::new(addr))?.allocation()?;
    match a.owner {
        Owner::Stack { kind, .. } => Some((a, kind)),
        _ => None,
    }
}

/// Name an address from the embedded symbol table.
struct Sym(u64);

impl core::fmt::Display for Sym {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match crate::mm::layout::symbols().and_then(|t| t.lookup(self.0)) {
            Some((name, off)) => write!(f, "{name}+{off:#x}"),
            None => f.write_str("?"),
        }
    }
}

/// Where the CPU was, by symbol, and every register.
fn write_regs(w: &mut impl Write, frame: &TrapFrame) -> core::fmt::Result {
    writeln!(
        w,
        "RIP: {:04x}:{:016x} {}",
        frame.cs,
        frame.rip,
        Sym(frame.rip)
    )?;
    writeln!(w, "{frame}")
}

/// The call trace and the end marker, a recursion collapsed into one line
/// with a count.
fn write_trace(w: &mut impl Write, bt: &backtrace::Backtrace) -> core::fmt::Result {
    writeln!(w, "Call Trace:")?;
    let addrs = bt.addrs();
    let mut i = 0;
    while i < addrs.len() {
        let mut j = i + 1;
        while j < addrs.len() && addrs[j] == addrs[i] {
            j += 1;
        }
        if j - i > 1 {
            writeln!(w, " [<{:016x}>] {} (x{})", addrs[i], Sym(addrs[i]), j - i)?;
        } else {
            writeln!(w, " [<{:016x}>] {}", addrs[i], Sym(addrs[i]))?;
        }
        i = j;
    }
    if bt.truncated {
        writeln!(w, " ... (more frames)")?;
    }
    writeln!(w, "---[ end trace ]---")
}

/// Report a fault that may be a stack fault. `None` from a page fault
/// means "not about any stack": the caller reports it generically. A
/// double fault is always reported here, guard hit or not.
pub fn stack_fault(frame: &TrapFrame, cr2: u64, via: Via) -> Option<Action> {
    let cpu = percpu::this();
    // The stack the CPU was on: where rsp points (already in the guard, for
    // an overflow), or else the running task's stack (rsp may have been
    // thrown far away from it).
    // Which stack the CPU was on is a per-CPU fact, not something to infer
    // from rsp (which an overflow has pushed into a guard page, and a bad
    // frame may have thrown into someone else's): the IRQ stack inside an
    // interrupt, the running task's stack otherwise. rsp is the fallback for
    // code on no stack we allocated (the boot stacks).
    let current_stack = if cpu.in_irq() {
        Some(cpu.irq_stack_top().as_u64() - 1)
    } else {
        // TSS.rsp0: the one place that says where the running task's stack
        // ends (luto's seed), kept up to date by the context switch.
        Some(cpu.stack_top().as_u64())
            .filter(|&top| top != 0)
            .map(|top| top - 1)
    };
    let stack = current_stack
        .and_then(stack_at)
        .or_else(|| stack_at(frame.rsp));
    let hit = vmalloc::lookup(VirtAddr::new(cr2));
    let same = |a: &VmAllocation| stack.is_some_and(|(s, _)| s.seq == a.seq);
    let (kind, by) = match hit {
        Some(Lookup::GuardBelow {
            alloc,
            bytes_below_base,
        }) if same(&alloc) => (HitKind::Overflow, bytes_below_base),
        Some(Lookup::GuardAbove {
            alloc,
            bytes_above_top,
        }) if same(&alloc) => (HitKind::Underflow, bytes_above_top + 1),
        _ => (HitKind::NotGuard, 0),
    };
    if kind == HitKind::NotGuard
        && via == Via::PageFault
        && stack_at(frame.rsp).is_none()
        && !hit.is_some_and(|h| h.is_guard())
    {
        return None;
    }
    let (task_id, comm) = cpu
        .with_current(|t| (t.id, t.name_bytes()))
        .unwrap_or((0, ([0; 16], 0)));
    let comm = core::str::from_utf8(&comm.0[..comm.1]).unwrap_or("?");
    let stack_kind = stack.map(|(_, k)| k);
    let in_exception = crate::arch::x86_64::exceptions::in_page_fault(cpu.id);
    let context = match stack_kind {
        Some(StackKind::Irq) => "irq",
        Some(StackKind::Task) if in_exception => "exception",
        Some(StackKind::Task) => "task",
        _ => "exception",
    };
    // Only a task's own stack, outside interrupt context, can be given up
    // by killing the task: everything on it belongs to that task alone.
    let owner_is_current = stack.is_some_and(|(a, k)| {
        k == StackKind::Task && matches!(a.owner, Owner::Stack { id, .. } if id == task_id)
    });
    let action = if context != "irq" && owner_is_current && !cpu.in_irq() {
        Action::Kill("stack overflow")
    } else {
        Action::Fatal
    };
    let depth = lkdtm::depth(cpu.id);
    let (lo, hi) = stack.map_or((0, 0), |(a, _)| (a.base, a.top()));
    let (guard_lo, guard_hi) = match (kind, stack) {
        (HitKind::Overflow, Some((a, _))) => {
            (a.guard_below_range().start, a.guard_below_range().end)
        }
        (HitKind::Underflow, Some((a, _))) => {
            (a.guard_above_range().start, a.guard_above_range().end)
        }
        _ => (0, 0),
    };
    // The trace lives on the faulting stack (or, if rsp left it, wherever
    // rbp still points inside it).
    let bt = backtrace::walk(frame.rbp, lo.min(frame.rbp), hi.max(frame.rbp + 16));

    HITS.fetch_add(1, Ordering::AcqRel);
    LAST_KIND[cpu.id].store(kind as u8, Ordering::Release);
    if QUIET.load(Ordering::Acquire) {
        SUPPRESSED.fetch_add(1, Ordering::Relaxed);
        return Some(action);
    }
    let linux = stack_kind.map_or("UNKNOWN", |k| k.linux_name());
    crate::console::report(|w| {
        let _ = (|| -> core::fmt::Result {
            match kind {
                HitKind::Overflow | HitKind::Underflow => {
                    writeln!(w, "BUG: {linux} stack guard page was hit at {cr2:016x} (stack is {lo:016x}..{hi:016x})")?;
                    let side = if kind == HitKind::Overflow {
                        "below"
                    } else {
                        "above"
                    };
                    writeln!(
                        w,
                        "Oops: stack guard page: {} by {by} bytes {side} the stack, on CPU {}, task {task_id} '{comm}'",
                        kind.json(),
                        cpu.id
                    )?;
                }
                _ => {
                    writeln!(
                        w,
                        "BUG: unable to handle page fault for address: {cr2:016x}"
                    )?;
                    writeln!(
                        w,
                        "Oops: stack fault outside the guard pages of the {linux} stack {lo:016x}..{hi:016x} (guard jumped?), on CPU {}, task {task_id} '{comm}'",
                        cpu.id
                    )?;
                    if let Some(h) = hit.and_then(|h| h.allocation()) {
                        writeln!(
                            w,
                            "  {cr2:016x} belongs to {:?} {:016x}..{:016x}",
                            h.owner,
                            h.base,
                            h.top()
                        )?;
                    }
                }
            }
            writeln!(
                w,
                "CPU: {} PID: {task_id} Comm: {comm} via {} context {context}",
                cpu.id,
                if via == Via::DoubleFault {
                    "#DF (IST stack)"
                } else {
                    "#PF"
                }
            )?;
            write_regs(w, frame)?;
            writeln!(
                w,
                "CR2: {cr2:016x} CR3: {:016x} error code: {:#x}",
                Cr3::read().0.start_address().as_u64(),
                frame.error_code
            )?;
            if guard_hi > guard_lo {
                writeln!(
                    w,
                    "Guard: {guard_lo:016x}..{guard_hi:016x} ({} pages)",
                    (guard_hi - guard_lo) / 4096
                )?;
            }
            if depth > 0 {
                writeln!(w, "Recursion depth: {depth}")?;
            }
            write_trace(w, &bt)?;
            w.write_str(abi::guard::HIT_PREFIX)?;
            let mut o = json::Obj::begin(w)?;
            o.str("scenario", scenario())?;
            o.str("kind", kind.json())?;
            o.str("stack_kind", stack_kind.map_or("unknown", stack_kind_json))?;
            o.hex("stack_lo", lo)?;
            o.hex("stack_hi", hi)?;
            o.hex("guard_lo", guard_lo)?;
            o.hex("guard_hi", guard_hi)?;
            o.hex("fault_addr", cr2)?;
            o.num("cpu", cpu.id as u64)?;
            o.num("task_id", task_id)?;
            o.str("task_name", comm)?;
            o.hex("rip", frame.rip)?;
            o.hex("rsp", frame.rsp)?;
            o.hex("error_code", frame.error_code)?;
            o.hex("cr2", cr2)?;
            o.hex_list("backtrace", bt.addrs())?;
            o.opt_num("depth", (depth > 0).then_some(depth))?;
            o.str("context", context)?;
            o.bool("recovered", action != Action::Fatal)?;
            o.end()?;
            writeln!(w)
        })();
    });
    lkdtm::set_depth(cpu.id, 0);
    Some(action)
}

/// Announce, before overflowing it, the stack a scenario is about to
/// overflow: the ground truth the runner checks the report against.
pub fn announce_stack(kind: StackKind, lo: u64, hi: u64, guards: usize, frame_bytes: u64) {
    if QUIET.load(Ordering::Acquire) {
        return;
    }
    let cpu = percpu::this();
    lkdtm::set_depth(cpu.id, 0);
    let (task_id, name) = cpu
        .with_current(|t| (t.id, t.name_bytes()))
        .unwrap_or((0, ([0; 16], 0)));
    let name = core::str::from_utf8(&name.0[..name.1]).unwrap_or("?");
    crate::console::report(|w| {
        let _ = (|| -> core::fmt::Result {
            w.write_str(abi::guard::ALLOC_PREFIX)?;
            let mut o = json::Obj::begin(w)?;
            o.str("scenario", scenario())?;
            o.str("stack_kind", stack_kind_json(kind))?;
            o.hex("lo", lo)?;
            o.hex("hi", hi)?;
            o.num("guard_below", guards as u64)?;
            o.num("guard_above", guards as u64)?;
            o.num("cpu", cpu.id as u64)?;
            o.num("task_id", task_id)?;
            o.str("task_name", name)?;
            o.num("frame_bytes", frame_bytes)?;
            o.end()?;
            writeln!(w)
        })();
    });
}

/// Report damage found after the fact, that no hardware caught.
pub fn report_corruption(what: &str, expected: u64, found: u64, lo: u64, hi: u64, task_id: u64) {
    crate::console::report(|w| {
        let _ = (|| -> core::fmt::Result {
            writeln!(
                w,
                "BUG: stack corruption: {what} is {found:#x}, expected {expected:#x} (stack {lo:016x}..{hi:016x}, task {task_id}); no fault was raised"
            )?;
            w.write_str(abi::guard::CORRUPTION_PREFIX)?;
            let mut o = json::Obj::begin(w)?;
            o.str("scenario", scenario())?;
            o.str("what", what)?;
            o.hex("expected", expected)?;
            o.hex("found", found)?;
            o.hex("lo", lo)?;
            o.hex("hi", hi)?;
            o.num("task_id", task_id)?;
            o.end()?;
            writeln!(w)
        })();
    });
}
