//! What a stack fault hit: the guard page below the faulting stack
//! (overflow), the one above (underflow), or no guard of that stack at all.
//! Decided from the vmalloc ownership registry, never guessed from
//! addresses, and from CR2 or, for a double fault, the interrupted RSP
//! (`kcore::stack_hit`). Kept apart from the reporting so the rule can be replaced
//! (or checked) on its own.
use crate::arch::x86_64::percpu::PerCpu;
use crate::arch::x86_64::trap::TrapFrame;
use crate::mm::stack::StackKind;
use crate::mm::vmalloc::{self, Owner, VmAllocation};
use abi::guard::{Area, AreaOwner};
use abi::kinds::{Evidence, HitKind, Via};
use abi::Hex;
use kcore::stack_hit;
use x86_64::VirtAddr;

/// A stack fault, classified.
#[derive(Clone, Copy)]
pub struct Fault {
    /// The stack the CPU was on, if it is one we allocated.
    pub stack: Option<(VmAllocation, StackKind)>,
    pub kind: HitKind,
    /// How far past the stack (see `abi::guard::GuardHit::bytes`).
    pub bytes: u64,
    /// The address the fault is judged by: CR2, or with `Evidence::Rsp` the
    /// first push that could not be made.
    pub fault_addr: u64,
    /// What decided the hit (`None` for not-guard).
    pub evidence: Option<Evidence>,
    /// The guard range the fault is in (`0..0` for not-guard).
    pub guard: (u64, u64),
    /// For a fault in no guard of this stack: whose the address is.
    pub area: Option<Area<'static>>,
}

/// The stack allocation an address lies in or guards, if it is a stack.
pub fn stack_at(addr: u64) -> Option<(VmAllocation, StackKind)> {
    let a = vmalloc::lookup(VirtAddr::new(addr))?.allocation()?;
    match a.owner {
        Owner::Stack { kind, .. } => Some((a, kind)),
        _ => None,
    }
}

fn area_owner(owner: Owner) -> AreaOwner<'static> {
    match owner {
        Owner::Stack { kind, id } => AreaOwner::Stack { kind, id },
        Owner::Named(name) => AreaOwner::Named(name),
        Owner::LazyFree => AreaOwner::LazyFree,
        Owner::Object { what, id } => AreaOwner::Object { what, id },
        Owner::Freed { what, id } => AreaOwner::Freed { what, id },
    }
}

/// Classify the fault at `cr2` taken with `frame` on `cpu`. `None` from a
/// page fault means "not about any stack" (the caller reports it as a
/// plain page fault); a double fault is always a stack fault.
pub fn classify(frame: &TrapFrame, cr2: u64, via: Via, cpu: &PerCpu) -> Option<Fault> {
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
    let found = stack_hit::classify(
        stack.as_ref().map(|(a, _)| a),
        cr2,
        hit,
        frame.rsp,
        via == Via::DoubleFault && !cfg!(defect = "cr2-only"),
    );
    let (kind, bytes, guard) = match (found.kind, stack) {
        (stack_hit::HitKind::Overflow, Some((a, _))) => {
            let g = a.guard_below_range();
            // A deliberate defect (`runner --defect`): the distance counted
            // into the guard page from its bottom instead of below the
            // stack, the kind of slip a page-relative computation makes.
            #[cfg(defect = "bytes-into-guard")]
            let found = stack_hit::StackHit {
                bytes: found.fault_addr - g.start,
                ..found
            };
            (HitKind::Overflow, found.bytes, (g.start, g.end))
        }
        (stack_hit::HitKind::Underflow, Some((a, _))) => {
            #[cfg(not(defect = "underflow-guard-below"))]
            let g = a.guard_above_range();
            // A deliberate defect (`runner --defect underflow-guard-below`):
            // the arm copied from the overflow one above, still naming the
            // guard below the stack.
            #[cfg(defect = "underflow-guard-below")]
            let g = a.guard_below_range();
            (HitKind::Underflow, found.bytes, (g.start, g.end))
        }
        _ => (HitKind::NotGuard, 0, (0, 0)),
    };
    let evidence = found.evidence.map(|e| match e {
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
    let area = match kind {
        HitKind::NotGuard => hit.and_then(|h| h.allocation()).map(|a| Area {
            lo: Hex(a.base),
            hi: Hex(a.top()),
            owner: area_owner(a.owner),
        }),
        _ => None,
    };
    Some(Fault {
        stack,
        kind,
        bytes,
        fault_addr: found.fault_addr,
        evidence,
        guard,
        area,
    })
}
