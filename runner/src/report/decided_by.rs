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
                check: Check::DecidedBy,
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
    use crate::report::lines::{parse, tests};
    use abi::guard::{GuardHit, StackAlloc};
    use abi::Hex;

    fn checked(hit: &GuardHit) -> Vec<Check> {
        let log = format!(
            "{}\nGUARD-HIT {}\n",
            tests::alloc(),
            serde_json::to_string(hit).unwrap()
        );
        let events = parse(&log);
        judge(hit.scenario, &events)
            .into_iter()
            .map(|f| f.check)
            .collect()
    }

    /// The real report (`fixture::STACK`) and its announced stack bottom.
    fn real() -> (GuardHit<'static>, u64) {
        let json = |line: &'static str| line.split_once(' ').unwrap().1;
        let hit: GuardHit = serde_json::from_str(json(tests::hit())).unwrap();
        let alloc: StackAlloc = serde_json::from_str(json(tests::alloc())).unwrap();
        (hit, alloc.lo.get())
    }

    /// The KVM case: CR2 stale, RSP at the very bottom of the announced stack.
    fn by_rsp(rsp: u64, fault: u64) -> GuardHit<'static> {
        let (hit, _) = real();
        GuardHit {
            fault_addr: Hex(fault),
            rsp: Hex(rsp),
            cr2: Hex(0xffffc90000c00000),
            evidence: Some(Evidence::Rsp),
            ..hit
        }
    }

    #[test]
    fn each_evidence_is_held_to_its_claim() {
        let (hit, lo) = real();
        assert_eq!(checked(&hit), [] as [Check; 0], "CR2, as captured");
        assert_eq!(checked(&by_rsp(lo, lo - 8)), [] as [Check; 0]);
        assert_eq!(checked(&by_rsp(lo + 40, lo - 8)), [] as [Check; 0]);
        assert_eq!(
            checked(&by_rsp(lo + 48, lo - 8)),
            [Check::DecidedBy],
            "room for a frame"
        );
        // RSP at the guard's lowest byte: a push inside the guard came first.
        let guard_bottom = lo - 4096;
        assert_eq!(
            checked(&by_rsp(guard_bottom + 8, guard_bottom)),
            [] as [Check; 0]
        );
        assert_eq!(
            checked(&by_rsp(guard_bottom, guard_bottom)),
            [Check::DecidedBy],
            "below the guard"
        );
        assert_eq!(
            checked(&by_rsp(lo, lo - 16)),
            [Check::DecidedBy],
            "not the first push"
        );
        let said_cr2 = GuardHit {
            evidence: Some(Evidence::Cr2),
            ..by_rsp(lo, lo - 8)
        };
        assert_eq!(
            checked(&said_cr2),
            [Check::DecidedBy],
            "CR2 said to decide, but not used"
        );
    }

    /// RSP is held against the stack of the task and CPU that took the
    /// fault, not whichever stack was announced first.
    #[test]
    fn rsp_is_held_to_the_faulting_tasks_own_stack() {
        let (_, lo) = real();
        let hit = by_rsp(lo, lo - 8);
        let real_alloc = tests::alloc();
        // Another task's stack on the same CPU, announced first.
        let decoy = real_alloc
            .replace("\"task_id\":3", "\"task_id\":99")
            .replace("0xffffc9000001f000", "0xffffc9000011f000")
            .replace("0xffffc90000023000", "0xffffc90000123000");
        assert_ne!(decoy, real_alloc);
        let judged = |allocs: &[&str]| {
            let log = format!(
                "{}\nGUARD-HIT {}\n",
                allocs.join("\n"),
                serde_json::to_string(&hit).unwrap()
            );
            let events = parse(&log);
            let checks: Vec<Check> = judge(hit.scenario, &events)
                .into_iter()
                .map(|f| f.check)
                .collect();
            checks
        };
        assert_eq!(judged(&[&decoy, real_alloc]), [] as [Check; 0]);
        assert_eq!(judged(&[&decoy]), [Check::DecidedBy], "only the decoy");
        // The same task's earlier stack on another CPU, announced first.
        let other_cpu = decoy
            .replace("\"task_id\":99", "\"task_id\":3")
            .replace("\"cpu\":0", "\"cpu\":1");
        assert_eq!(judged(&[&other_cpu, real_alloc]), [] as [Check; 0]);
    }

    /// An RSP already deep in a two-page guard, and one above the stack
    /// (an underflow), are each held to the push they could not make.
    #[test]
    fn rsp_in_a_wider_guard_and_above_the_stack() {
        let (_, lo) = real();
        let two_pages = tests::alloc().replace("\"guard_below\":1", "\"guard_below\":2");
        let judged = |alloc: &str, hit: &GuardHit| {
            let log = format!(
                "{alloc}\nGUARD-HIT {}\n",
                serde_json::to_string(hit).unwrap()
            );
            let events = parse(&log);
            let checks: Vec<Check> = judge(hit.scenario, &events)
                .into_iter()
                .map(|f| f.check)
                .collect();
            checks
        };
        let deep = lo - 5000;
        assert_eq!(
            judged(&two_pages, &by_rsp(deep, deep - 8)),
            [] as [Check; 0]
        );
        assert_eq!(
            judged(tests::alloc(), &by_rsp(deep, deep - 8)),
            [Check::DecidedBy],
            "below a one-page guard"
        );

        let alloc: StackAlloc =
            serde_json::from_str(tests::alloc().split_once(' ').unwrap().1).unwrap();
        let hi = alloc.hi.get();
        let above = |rsp: u64, fault: u64| GuardHit {
            kind: abi::kinds::HitKind::Underflow,
            ..by_rsp(rsp, fault)
        };
        assert_eq!(
            judged(tests::alloc(), &above(hi + 16, hi + 8)),
            [] as [Check; 0]
        );
        assert_eq!(
            judged(tests::alloc(), &above(hi, hi)),
            [] as [Check; 0],
            "the first word above"
        );
        assert_eq!(
            judged(tests::alloc(), &above(hi + 16, hi)),
            [Check::DecidedBy],
            "not the push above the stack"
        );
    }
}
