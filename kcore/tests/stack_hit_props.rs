//! `stack_hit::classify` over random stacks (a few neighbours, 0-2 guard
//! pages), random CR2 (anywhere in or around the area, the way a stale CR2
//! can be) and random RSP, against rules stated from the layout alone:
//!
//! - CR2 in the faulting stack's guard decides, and names that address;
//! - else, for a double fault, RSP less than 48 bytes above the bottom (or
//!   already in the guard below) is an overflow, and RSP in the guard above
//!   an underflow; for a page fault RSP never decides;
//! - else it is no guard hit;
//! - whatever decided, the address judged by lies in the reported guard of
//!   that very stack, and `bytes` is its distance past the stack.
use kcore::stack_hit::{classify, Evidence, HitKind, FRAME_ROOM};
use kcore::vmalloc::{Allocation, Guards, VmArea, PAGE_SIZE};
use proptest::prelude::*;

const START: u64 = 0xffff_c900_0000_0000;
const PAGES: u64 = 64;
const P: u64 = PAGE_SIZE;

fn setup(layout: &[(usize, usize)]) -> (VmArea<usize>, Vec<Allocation<usize>>) {
    let mut area = VmArea::new(START, START + PAGES * P);
    let stacks = layout
        .iter()
        .enumerate()
        .filter_map(|(i, &(pages, guards))| area.alloc(pages, Guards::both(guards), i).ok())
        .collect();
    (area, stacks)
}

fn address() -> impl Strategy<Value = u64> {
    // Mostly near page boundaries, where the rules change.
    prop_oneof![
        (0..=PAGES + 1, -64i64..64).prop_map(|(p, d)| (START + p * P).wrapping_add_signed(d)),
        (0..(PAGES + 2) * P).prop_map(|o| START - P + o),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn evidence_rules(
        layout in prop::collection::vec((1usize..=4, 0usize..=2), 1..5),
        which in any::<usize>(),
        cr2 in address(),
        rsp in address(),
        double_fault in any::<bool>(),
    ) {
        let (area, stacks) = setup(&layout);
        prop_assume!(!stacks.is_empty());
        let s = stacks[which % stacks.len()];
        let hit = classify(Some(&s), cr2, Some(area.lookup(cr2)), rsp, double_fault);

        let below = s.guard_below_range();
        let above = s.guard_above_range();
        let cr2_says = if below.contains(&cr2) {
            Some(HitKind::Overflow)
        } else if above.contains(&cr2) {
            Some(HitKind::Underflow)
        } else {
            None
        };
        let rsp_says = if !double_fault {
            None
        } else if !below.is_empty() && rsp > below.start && rsp < s.base + FRAME_ROOM {
            Some(HitKind::Overflow)
        } else if !above.is_empty() && rsp > above.start && rsp <= above.end {
            Some(HitKind::Underflow)
        } else {
            None
        };
        match (cr2_says, rsp_says) {
            (Some(k), r) => {
                prop_assert_eq!(hit.kind, k);
                prop_assert_eq!(hit.fault_addr, cr2);
                let want = if r == Some(k) { Evidence::Both } else { Evidence::Cr2 };
                prop_assert_eq!(hit.evidence, Some(want));
            }
            (None, Some(k)) => {
                prop_assert_eq!(hit.kind, k);
                prop_assert_eq!(hit.evidence, Some(Evidence::Rsp));
            }
            (None, None) => {
                prop_assert_eq!(hit.kind, HitKind::NotGuard);
                prop_assert_eq!(hit.evidence, None);
                prop_assert_eq!(hit.bytes, 0);
            }
        }
        match hit.kind {
            HitKind::Overflow => {
                prop_assert!(below.contains(&hit.fault_addr), "{:#x} not in {:x?}", hit.fault_addr, below);
                prop_assert_eq!(hit.bytes, s.base - hit.fault_addr);
            }
            HitKind::Underflow => {
                prop_assert!(above.contains(&hit.fault_addr), "{:#x} not in {:x?}", hit.fault_addr, above);
                prop_assert_eq!(hit.bytes, hit.fault_addr - s.top() + 1);
            }
            HitKind::NotGuard => prop_assert_eq!(hit.fault_addr, cr2),
        }
    }

    /// A guard of another stack is never this stack's hit, by CR2.
    #[test]
    fn a_neighbours_guard_is_not_ours(
        layout in prop::collection::vec((2usize..=4, 1usize..=2), 2..5),
        off in 0..2 * P,
        above in any::<bool>(),
    ) {
        let (area, stacks) = setup(&layout);
        prop_assume!(stacks.len() >= 2);
        let (s, other) = (stacks[0], stacks[1]);
        let guard = if above { other.guard_above_range() } else { other.guard_below_range() };
        let cr2 = guard.start + off % (guard.end - guard.start);
        // RSP well inside the stack: only CR2 could speak.
        let hit = classify(Some(&s), cr2, Some(area.lookup(cr2)), s.base + P, true);
        prop_assert_eq!(hit.kind, HitKind::NotGuard);
    }
}
