//! Where a reported fault really is, by the stack the scenario announced:
//! which guard holds the address, or, for a double fault whose CR2 is
//! stale, whether the interrupted RSP leaves room for an exception frame.
use super::PAGE;
use crate::report::lines::{Alloc, Hit};
use abi::guard::Verdict;
use abi::kinds::Via;

/// The announcement a hit is about: the one whose guard the fault is in,
/// else the same task's, else the first.
pub(super) fn pair<'r, 'a>(hit: &Hit, allocs: &[&'r Alloc<'a>]) -> Option<&'r Alloc<'a>> {
    allocs
        .iter()
        .find(|a| truth(hit.fault_addr.0, a) != Verdict::GuardJumped)
        .or_else(|| {
            allocs
                .iter()
                .find(|a| a.task_id == hit.task_id && a.cpu == hit.cpu)
        })
        .or_else(|| allocs.first())
        .copied()
}

fn guard_below(a: &Alloc) -> std::ops::Range<u64> {
    a.lo.0.saturating_sub(a.guard_below * PAGE)..a.lo.0
}

fn guard_above(a: &Alloc) -> std::ops::Range<u64> {
    a.hi.0..a.hi.0.saturating_add(a.guard_above * PAGE)
}

/// Where `addr` is, by the announced allocation alone.
fn truth(addr: u64, a: &Alloc) -> Verdict {
    if guard_below(a).contains(&addr) {
        Verdict::Overflow
    } else if guard_above(a).contains(&addr) {
        Verdict::Underflow
    } else {
        Verdict::GuardJumped
    }
}

/// Room an exception frame needs above a stack's bottom: with the
/// interrupted RSP closer than this, "as a practical matter, we've
/// overflowed the stack" (Linux, `exc_double_fault`), whatever CR2 says.
const FRAME_ROOM: u64 = 48;

/// Where the fault really is: by its address; and for a double fault
/// whose address is in no guard (a hypervisor can leave CR2 stale), by
/// the interrupted RSP, which the guest cannot make agree with a wrong
/// claim by reporting a wrong address.
pub(super) fn truth_of(hit: &Hit, a: &Alloc) -> (Verdict, bool) {
    let by_addr = truth(hit.fault_addr.0, a);
    let rsp = hit.rsp.0;
    let no_room = rsp > guard_below(a).start && rsp < a.lo.0.saturating_add(FRAME_ROOM);
    if by_addr == Verdict::GuardJumped && hit.via == Via::DoubleFault && no_room {
        (Verdict::Overflow, true)
    } else {
        (by_addr, false)
    }
}

pub(super) fn jump_distance(addr: u64, a: &Alloc) -> Option<String> {
    let below = guard_below(a);
    let above = guard_above(a);
    if addr < below.start {
        Some(format!(
            "fault at {addr:#x}, {} bytes below the guard",
            below.start - addr
        ))
    } else if addr >= above.end {
        Some(format!(
            "fault at {addr:#x}, {} bytes above the guard",
            addr - above.end + 1
        ))
    } else if (a.lo.0..a.hi.0).contains(&addr) {
        Some(format!("fault at {addr:#x}, inside the stack itself"))
    } else {
        None
    }
}
