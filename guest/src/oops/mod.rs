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
pub mod held;
mod uaf;

pub use abi::kinds::HitKind;
pub use uaf::{announce_uaf, uaf_reports, use_after_free};

use crate::arch::x86_64::percpu;
use crate::arch::x86_64::trap::TrapFrame;
use crate::lkdtm;
use crate::mm::stack::StackKind;
use crate::mm::vmalloc::{self, Owner, VmAllocation};
use abi::guard::{Frame, GuardHit, StackAlloc, StackCorruption};
use abi::kinds::{Context, Evidence, Via};
use abi::Hex;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use kcore::stack_hit;
use x86_64::registers::control::Cr3;
use x86_64::VirtAddr;

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

/// The stack allocation an address lies in or guards, if it is a stack.
fn stack_at(addr: u64) -> Option<(VmAllocation, StackKind)> {
    let a = vmalloc::lookup(VirtAddr::new(addr))?.allocation()?;
    match a.owner {
        Owner::Stack { kind, .. } => Some((a, kind)),
        _ => None,
    }
}

/// An address as the embedded symbol table names it.
fn sym(addr: u64) -> Option<abi::guard::Sym<'static>> {
    let (name, off) = crate::mm::layout::symbols()?.lookup(addr)?;
    Some(abi::guard::Sym {
        name,
        off: Hex(off),
    })
}

/// Name an address from the embedded symbol table.
struct Sym(u64);

impl core::fmt::Display for Sym {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match sym(self.0) {
            Some(s) => write!(f, "{}+{:#x}", s.name, s.off.get()),
            None => f.write_str("?"),
        }
    }
}

/// A backtrace as the records carry it: every frame, each with its name.
fn frames(bt: &backtrace::Backtrace) -> heapless::Vec<Frame<'static>, { abi::guard::MAX_FRAMES }> {
    let mut out = heapless::Vec::new();
    for &a in bt.addrs() {
        // Cannot fail: a walk keeps at most `MAX_FRAMES`.
        let _ = out.push(Frame {
            addr: Hex(a),
            sym: sym(a),
        });
    }
    out
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

/// Which evidence decided the hit, when it is not CR2 alone.
fn write_evidence(
    w: &mut impl Write,
    evidence: Option<Evidence>,
    cr2: u64,
    rsp: u64,
    (lo, hi): (u64, u64),
) -> core::fmt::Result {
    struct Where(u64, u64, u64);
    impl core::fmt::Display for Where {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            let Where(rsp, lo, hi) = *self;
            if rsp < lo {
                write!(f, "{} bytes below the stack bottom", lo - rsp)
            } else if rsp >= hi {
                write!(f, "{} bytes above the stack top", rsp - hi)
            } else {
                write!(f, "{} bytes above the stack bottom", rsp - lo)
            }
        }
    }
    let at = Where(rsp, lo, hi);
    match evidence {
        Some(Evidence::Rsp) => writeln!(
            w,
            "Evidence: RSP {rsp:016x} ({at}) leaves no room for an exception frame; CR2 {cr2:016x} lies in no guard of this stack (stale)"
        ),
        Some(Evidence::Both) => writeln!(
            w,
            "Evidence: CR2 in the guard, and RSP {rsp:016x} ({at}) leaves no room for an exception frame"
        ),
        _ => Ok(()),
    }
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
    // CR2, and for a double fault the interrupted RSP too (CR2 can be
    // stale there): `kcore::stack_hit` says which guard, and what decided.
    let classified = stack_hit::classify(
        stack.as_ref().map(|(a, _)| a),
        cr2,
        hit,
        frame.rsp,
        via == Via::DoubleFault && !cfg!(defect = "cr2_only"),
    );
    let (kind, by, fault_at) = (
        match classified.kind {
            stack_hit::HitKind::Overflow => HitKind::Overflow,
            stack_hit::HitKind::Underflow => HitKind::Underflow,
            stack_hit::HitKind::NotGuard => HitKind::NotGuard,
        },
        classified.bytes,
        classified.fault_addr,
    );
    let evidence = classified.evidence.map(|e| match e {
        stack_hit::Evidence::Cr2 => Evidence::Cr2,
        stack_hit::Evidence::Rsp => Evidence::Rsp,
        stack_hit::Evidence::Both => Evidence::Both,
    });
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
        Some(StackKind::Irq) => Context::Irq,
        Some(StackKind::Task) if in_exception => Context::Exception,
        Some(StackKind::Task) => Context::Task,
        _ => Context::Exception,
    };
    // Only a task's own stack, outside interrupt context, can be given up
    // by killing the task: everything on it belongs to that task alone.
    let owner_is_current = stack.is_some_and(|(a, k)| {
        k == StackKind::Task && matches!(a.owner, Owner::Stack { id, .. } if id == task_id)
    });
    let action = if context != Context::Irq && owner_is_current && !cpu.in_irq() {
        Action::Kill("stack overflow")
    } else {
        Action::Fatal
    };
    let action = held::decide(frame, action);
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
    LAST_KIND[cpu.id].store(kind.index() as u8 + 1, Ordering::Release);
    if QUIET.load(Ordering::Acquire) {
        SUPPRESSED.fetch_add(1, Ordering::Relaxed);
        return Some(action);
    }
    let linux = stack_kind.map_or("UNKNOWN", |k| k.linux_name());
    crate::console::report(|w| {
        let _ = (|| -> core::fmt::Result {
            match kind {
                HitKind::Overflow | HitKind::Underflow => {
                    writeln!(w, "BUG: {linux} stack guard page was hit at {fault_at:016x} (stack is {lo:016x}..{hi:016x})")?;
                    let side = if kind == HitKind::Overflow {
                        "below"
                    } else {
                        "above"
                    };
                    writeln!(
                        w,
                        "Oops: stack guard page: {kind} by {by} bytes {side} the stack, on CPU {}, task {task_id} '{comm}'",
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
                via.oops_name()
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
            write_evidence(w, evidence, cr2, frame.rsp, (lo, hi))?;
            if depth > 0 {
                writeln!(w, "Recursion depth: {depth}")?;
            }
            write_trace(w, &bt)?;
            Ok(())
        })();
        w.record(&GuardHit {
            scenario: scenario(),
            kind,
            stack_kind,
            stack_lo: Hex(lo),
            stack_hi: Hex(hi),
            guard_lo: Hex(guard_lo),
            guard_hi: Hex(guard_hi),
            bytes: by,
            fault_addr: Hex(fault_at),
            via,
            cpu: cpu.id as u32,
            task_id,
            task_name: comm,
            rip: Hex(frame.rip),
            rip_sym: sym(frame.rip),
            rsp: Hex(frame.rsp),
            error_code: Hex(frame.error_code),
            cr2: Hex(cr2),
            backtrace: frames(&bt),
            truncated: bt.truncated,
            depth: (depth > 0).then_some(depth),
            context,
            recovered: action != Action::Fatal,
            evidence,
        });
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
    crate::console::record(&StackAlloc {
        scenario: scenario(),
        stack_kind: kind,
        lo: Hex(lo),
        hi: Hex(hi),
        guard_below: guards as u64,
        guard_above: guards as u64,
        cpu: cpu.id as u32,
        task_id,
        task_name: name,
        frame_bytes,
    });
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
