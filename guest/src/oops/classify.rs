//! What a stack fault hit: the guard page below the faulting stack
//! (overflow), the one above (underflow), or no guard of that stack at all.
//! Decided from the vmalloc ownership registry, never guessed from
//! addresses. Kept apart from the reporting so the rule can be replaced
//! (or checked) on its own.
use crate::arch::x86_64::percpu::PerCpu;
use crate::arch::x86_64::trap::TrapFrame;
use crate::mm::stack::StackKind;
use crate::mm::vmalloc::{self, Owner, VmAllocation};
use abi::guard::{Area, AreaOwner};
use abi::kinds::{HitKind, Via};
use abi::Hex;
use kcore::vmalloc::Lookup;
use x86_64::VirtAddr;

/// A stack fault, classified.
#[derive(Clone, Copy)]
pub struct Fault {
    /// The stack the CPU was on, if it is one we allocated.
    pub stack: Option<(VmAllocation, StackKind)>,
    pub kind: HitKind,
    /// How far past the stack (see `abi::guard::GuardHit::bytes`).
    pub bytes: u64,
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
    let same = |a: &VmAllocation| stack.is_some_and(|(s, _)| s.seq == a.seq);
    let (kind, bytes, guard) = match hit {
        Some(Lookup::GuardBelow {
            alloc,
            bytes_below_base,
        }) if same(&alloc) => {
            let g = alloc.guard_below_range();
            // A deliberate defect (`runner --defect`): the distance counted
            // into the guard page from its bottom instead of below the
            // stack, the kind of slip a page-relative computation makes.
            #[cfg(defect = "bytes-into-guard")]
            let bytes_below_base = cr2 - g.start;
            (HitKind::Overflow, bytes_below_base, (g.start, g.end))
        }
        Some(Lookup::GuardAbove {
            alloc,
            bytes_above_top,
        }) if same(&alloc) => {
            let g = alloc.guard_above_range();
            (HitKind::Underflow, bytes_above_top + 1, (g.start, g.end))
        }
        _ => (HitKind::NotGuard, 0, (0, 0)),
    };
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
        guard,
        area,
    })
}
