//! Is what decided a guard hit (`evidence`) backed by the report's own
//! registers and the announced stack? Pure.
//!
//! `cr2` (or `cr2+rsp`): the address judged by is CR2 itself. `rsp`: CR2
//! was no help (stale, as under nested KVM), and the interrupted RSP left
//! less than an exception frame's 48 bytes above the bottom of the stack
//! the scenario announced, or was already below it; the address judged by
//! must then be the first push that could not be made. The verdict's other
//! checks hold that address against the guards; this one holds the claim
//! of how it was found.

use super::lines::{Alloc, Events, Hit};
use super::{Check, Failure};
use abi::kinds::Evidence;

/// Linux's "within 47 bytes of the bottom of the stack".
const FRAME_ROOM: u64 = 48;
const PAGE: u64 = 4096;

fn announced<'r, 'a>(hit: &Hit, allocs: &[&'r Alloc<'a>]) -> Option<&'r Alloc<'a>> {
    allocs
        .iter()
        .find(|a| a.task_id == hit.task_id && a.cpu == hit.cpu)
        .or_else(|| allocs.first())
        .copied()
}

/// The failures of one scenario's hits.
pub fn judge(scenario: &str, events: &Events) -> Vec<Failure> {
    let allocs: Vec<&Alloc> = events.allocs_of(scenario).collect();
    let mut out = Vec::new();
    for hit in events.hits_of(scenario) {
        if let Some(detail) = judge_hit(hit, announced(hit, &allocs)) {
            out.push(Failure {
                check: Check::Evidence,
                detail,
            });
        }
    }
    out
}

fn judge_hit(hit: &Hit, alloc: Option<&Alloc>) -> Option<String> {
    let (fault, cr2, rsp) = (hit.fault_addr.0, hit.cr2.0, hit.rsp.0);
    match hit.evidence {
        None | Some(Evidence::Cr2) | Some(Evidence::Both) if fault != cr2 => Some(format!(
            "judged by {fault:#x}, which is not CR2 {cr2:#x}, yet CR2 is said to have decided"
        )),
        Some(Evidence::Rsp) => {
            let Some(a) = alloc else {
                return Some(
                    "decided by RSP, but no stack was announced to hold it against".into(),
                );
            };
            let (lo, below) = (a.lo.0, a.guard_below * PAGE);
            if hit.kind != abi::kinds::HitKind::Overflow {
                // The guest's underflow rule has no Linux counterpart to
                // check against the announcement; hold it to its address.
                return (fault != rsp.saturating_sub(8).max(a.hi.0)).then(|| {
                    format!("decided by RSP {rsp:#x}, judged by {fault:#x}: not the push above the stack")
                });
            }
            if !(rsp > lo.saturating_sub(below) && rsp < lo + FRAME_ROOM) {
                return Some(format!(
                    "decided by RSP {rsp:#x}, which leaves room for a frame above the announced bottom {lo:#x}"
                ));
            }
            let push = rsp.min(lo).saturating_sub(8).max(lo.saturating_sub(below));
            (fault != push).then(|| {
                format!("decided by RSP {rsp:#x}, but judged by {fault:#x}, not the first push that could not be made ({push:#x})")
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::lines::{parse, tests::ALLOC, tests::HIT};

    fn checked(hit: &str) -> Vec<Check> {
        let log = format!("{ALLOC}\n{hit}\n");
        let events = parse(&log);
        let found = judge("stack.recursion", &events);
        found.into_iter().map(|f| f.check).collect()
    }

    /// The KVM case: CR2 stale, RSP at the very bottom of the announced stack.
    fn by_rsp(rsp: u64, fault: u64) -> String {
        HIT.replace(
            "\"fault_addr\":\"0xffffc9000001ef48\"",
            &format!("\"fault_addr\":\"{fault:#x}\""),
        )
        .replace(
            "\"rsp\":\"0xffffc9000001ef50\"",
            &format!("\"rsp\":\"{rsp:#x}\""),
        )
        .replace(
            "\"cr2\":\"0xffffc9000001ef48\"",
            "\"cr2\":\"0xffffc90000c00000\"",
        )
        .replace(
            "\"recovered\":true",
            "\"recovered\":true,\"evidence\":\"rsp\"",
        )
    }

    #[test]
    fn each_evidence_is_held_to_its_claim() {
        assert_eq!(
            checked(HIT),
            [] as [Check; 0],
            "no evidence field: CR2, as before"
        );
        let lo = 0xffffc9000001f000u64;
        assert_eq!(checked(&by_rsp(lo, lo - 8)), [] as [Check; 0]);
        assert_eq!(checked(&by_rsp(lo + 40, lo - 8)), [] as [Check; 0]);
        assert_eq!(
            checked(&by_rsp(lo + 48, lo - 8)),
            [Check::Evidence],
            "room for a frame"
        );
        assert_eq!(
            checked(&by_rsp(lo, lo - 16)),
            [Check::Evidence],
            "not the first push"
        );
        let said_cr2 = by_rsp(lo, lo - 8).replace("\"evidence\":\"rsp\"", "\"evidence\":\"cr2\"");
        assert_eq!(
            checked(&said_cr2),
            [Check::Evidence],
            "CR2 said to decide, but not used"
        );
    }
}
