//! Which guard page a stack fault hit, from both pieces of evidence the
//! CPU leaves: CR2 (the address that faulted) and the interrupted RSP.
//!
//! CR2 alone is not enough. The SDM says a page fault during the delivery
//! of another updates CR2, but when the fault is an interrupt that could not
//! push its frame, some hypervisors deliver the #DF with CR2 still holding
//! an older address (nested KVM here: 12 MB away from the stack). Linux's
//! `exc_double_fault` comment in arch/x86/kernel/traps.c names the remedy:
//! with the saved RSP less than 48 bytes above the bottom of the stack, an
//! exception frame (SS, RSP, RFLAGS, CS, RIP, error code) no longer fits,
//! so "as a practical matter, we've overflowed the stack" whatever the
//! trigger. So for a double fault RSP is evidence too: CR2 in the stack's
//! guard decides first (it names the exact address); RSP decides when CR2
//! does not; and the result says which did, so a report can tell.
use crate::vmalloc::{Allocation, Lookup};

/// Room an exception frame needs below RSP (Linux: "within 47 bytes of
/// the bottom of the stack" means it does not fit).
pub const FRAME_ROOM: u64 = 48;

/// A word: what a push writes.
const WORD: u64 = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HitKind {
    /// The guard page below the stack.
    Overflow,
    /// The guard page above it.
    Underflow,
    /// No guard of the faulting stack.
    NotGuard,
}

/// What decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Evidence {
    /// CR2 lies in the stack's guard; RSP does not say the same.
    Cr2,
    /// CR2 does not; RSP leaves no room for an exception frame.
    Rsp,
    /// Both say the same.
    Both,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackHit {
    pub kind: HitKind,
    /// Bytes past the stack (as the oops says "overflow by N bytes"); 0 for
    /// `NotGuard`.
    pub bytes: u64,
    /// The address the fault is judged by: CR2 when it decided, else the
    /// first push that could not be made.
    pub fault_addr: u64,
    pub evidence: Option<Evidence>,
}

/// What CR2 says about `stack`.
fn by_cr2<O: Copy>(stack: &Allocation<O>, cr2: u64, lookup: Lookup<O>) -> Option<StackHit> {
    let hit = |kind, bytes| StackHit {
        kind,
        bytes,
        fault_addr: cr2,
        evidence: Some(Evidence::Cr2),
    };
    match lookup {
        Lookup::GuardBelow {
            alloc,
            bytes_below_base,
        } if alloc.seq == stack.seq => Some(hit(HitKind::Overflow, bytes_below_base)),
        Lookup::GuardAbove {
            alloc,
            bytes_above_top,
        } if alloc.seq == stack.seq => Some(hit(HitKind::Underflow, bytes_above_top + 1)),
        _ => None,
    }
}

/// What the interrupted RSP says about `stack`: an exception frame does
/// not fit below it without entering a guard.
fn by_rsp<O: Copy>(stack: &Allocation<O>, rsp: u64) -> Option<StackHit> {
    let below = stack.guard_below_range();
    let above = stack.guard_above_range();
    let hit = |kind, bytes, fault_addr| StackHit {
        kind,
        bytes,
        fault_addr,
        evidence: Some(Evidence::Rsp),
    };
    if !below.is_empty() && rsp > below.start && rsp < stack.base.saturating_add(FRAME_ROOM) {
        // The CPU pushes downwards from RSP (aligned down to 16 first, which
        // stays at or above the page-aligned base): the first word that does
        // not fit is the one just below the base, or below RSP if RSP has
        // already left the stack.
        let addr = rsp.min(stack.base).saturating_sub(WORD).max(below.start);
        return Some(hit(HitKind::Overflow, stack.base - addr, addr));
    }
    if !above.is_empty() && rsp > above.start && rsp <= above.end {
        let addr = rsp - WORD;
        let addr = addr.max(above.start);
        return Some(hit(HitKind::Underflow, addr - above.start + 1, addr));
    }
    None
}

/// Classify a fault on `stack` (the stack the CPU was on, if it is one the
/// guest allocated): `cr2` and what the vmalloc registry says of it, the
/// interrupted `rsp`, and whether it came as a double fault (the only case
/// where RSP is evidence: a page fault that was delivered has a CR2 of its
/// own).
pub fn classify<O: Copy>(
    stack: Option<&Allocation<O>>,
    cr2: u64,
    cr2_lookup: Option<Lookup<O>>,
    rsp: u64,
    double_fault: bool,
) -> StackHit {
    let not_guard = StackHit {
        kind: HitKind::NotGuard,
        bytes: 0,
        fault_addr: cr2,
        evidence: None,
    };
    let Some(stack) = stack else {
        return not_guard;
    };
    let c = cr2_lookup.and_then(|l| by_cr2(stack, cr2, l));
    let r = if double_fault {
        by_rsp(stack, rsp)
    } else {
        None
    };
    match (c, r) {
        (Some(c), Some(r)) if c.kind == r.kind => StackHit {
            evidence: Some(Evidence::Both),
            ..c
        },
        (Some(c), _) => c,
        (None, Some(r)) => r,
        (None, None) => not_guard,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmalloc::{Guards, VmArea};

    fn area() -> (VmArea<u8>, Allocation<u8>) {
        let mut a = VmArea::new(0x10_0000, 0x20_0000);
        let stack = a.alloc(4, Guards::both(1), 1).unwrap();
        (a, stack)
    }

    #[test]
    fn the_kvm_case_stale_cr2_and_rsp_at_the_bottom() {
        let (a, s) = area();
        let stale = 0x1f_0000; // far away, in nobody's allocation
        let hit = classify(Some(&s), stale, Some(a.lookup(stale)), s.base, true);
        assert_eq!(hit.kind, HitKind::Overflow);
        assert_eq!(hit.evidence, Some(Evidence::Rsp));
        assert_eq!(hit.fault_addr, s.base - 8);
        assert_eq!(hit.bytes, 8);
        // The same on a page fault: RSP is not evidence there.
        let pf = classify(Some(&s), stale, Some(a.lookup(stale)), s.base, false);
        assert_eq!(pf.kind, HitKind::NotGuard);
    }

    #[test]
    fn cr2_decides_first_and_both_are_named_when_they_agree() {
        let (a, s) = area();
        let cr2 = s.base - 0xb8;
        let both = classify(Some(&s), cr2, Some(a.lookup(cr2)), cr2 + 8, true);
        assert_eq!(
            (both.kind, both.evidence, both.fault_addr, both.bytes),
            (HitKind::Overflow, Some(Evidence::Both), cr2, 0xb8)
        );
        let deep = classify(Some(&s), cr2, Some(a.lookup(cr2)), s.base + 4096, true);
        assert_eq!(deep.evidence, Some(Evidence::Cr2));
        let up = s.top() + 0x38;
        let under = classify(Some(&s), up, Some(a.lookup(up)), up + 8, true);
        assert_eq!(
            (under.kind, under.evidence, under.bytes),
            (HitKind::Underflow, Some(Evidence::Both), 0x39)
        );
    }

    #[test]
    fn room_for_a_frame_is_no_overflow() {
        let (a, s) = area();
        let stale = 0x1f_0000;
        let hit = classify(Some(&s), stale, Some(a.lookup(stale)), s.base + 48, true);
        assert_eq!(hit.kind, HitKind::NotGuard);
        assert_eq!(
            classify::<u8>(None, stale, None, s.base, true).kind,
            HitKind::NotGuard
        );
    }

    /// The guards' edges, where the property test's random RSP rarely
    /// lands: RSP at the lowest byte of the guard below means a push into
    /// the guard already happened (and faulted with a CR2 of its own), so
    /// RSP does not decide there; one byte higher it does.
    #[test]
    fn rsp_at_the_guards_edges() {
        let (a, s) = area();
        let stale = 0x1f_0000;
        let by = |rsp| classify(Some(&s), stale, Some(a.lookup(stale)), rsp, true);
        let floor = s.guard_below_range().start;
        assert_eq!(by(floor).kind, HitKind::NotGuard);
        let just_above = by(floor + 1);
        assert_eq!(
            (just_above.kind, just_above.fault_addr),
            (HitKind::Overflow, floor)
        );
        let roof = s.guard_above_range();
        assert_eq!(by(roof.start).kind, HitKind::NotGuard);
        let top = by(roof.end);
        assert_eq!(
            (top.kind, top.fault_addr, top.bytes),
            (
                HitKind::Underflow,
                roof.end - 8,
                roof.end - 8 - roof.start + 1
            )
        );
        assert_eq!(by(roof.end + 1).kind, HitKind::NotGuard);
    }

    /// CR2 in the guard below and RSP in the guard above disagree: CR2
    /// decides, alone, and the two are not named together.
    #[test]
    fn cr2_and_rsp_that_disagree_are_not_both() {
        let (a, s) = area();
        let cr2 = s.base - 0x10;
        let rsp = s.guard_above_range().start + 0x10;
        let hit = classify(Some(&s), cr2, Some(a.lookup(cr2)), rsp, true);
        assert_eq!(
            (hit.kind, hit.evidence, hit.fault_addr),
            (HitKind::Overflow, Some(Evidence::Cr2), cr2)
        );
    }
}
