//! Random alloc/free sequences against a model that knows nothing but a list
//! of live spans. Every page of the area is looked up after every step, so a
//! wrong answer at any boundary shows up, not just at the ones a unit test
//! thought of.
use kcore::vmalloc::{Allocation, Counters, Guards, Lookup, VmArea, VmError, PAGE_SIZE};
use proptest::prelude::*;

const START: u64 = 0xffff_c900_0000_0000;
const AREA_PAGES: u64 = 160;
const P: u64 = PAGE_SIZE;

#[derive(Clone, Debug)]
enum Op {
    Alloc {
        pages: usize,
        below: usize,
        above: usize,
    },
    /// Free the live allocation at this index (modulo the count).
    Free(usize),
    /// Free an address that is not a live base: an old base or an interior one.
    BadFree(usize, u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (1usize..=12, 0usize..=3, 0usize..=3).prop_map(|(pages, below, above)| Op::Alloc { pages, below, above }),
        3 => any::<usize>().prop_map(Op::Free),
        1 => (any::<usize>(), 0u64..AREA_PAGES * P).prop_map(|(i, off)| Op::BadFree(i, off)),
    ]
}

type Owner = (u8, u64);

struct Model {
    live: Vec<Allocation<Owner>>,
    freed_bases: Vec<u64>,
}

impl Model {
    fn counters(&self) -> Counters {
        Counters {
            ranges: self.live.len(),
            mapped_pages: self.live.iter().map(|a| a.pages).sum(),
            guard_pages: self
                .live
                .iter()
                .map(|a| a.guard_below + a.guard_above)
                .sum(),
        }
    }

    /// The largest run of pages no live span covers.
    fn largest_hole(&self) -> u64 {
        let mut spans: Vec<_> = self.live.iter().map(|a| a.span()).collect();
        spans.sort_by_key(|s| s.start);
        let mut cursor = START;
        let mut best = 0;
        for s in spans {
            best = best.max((s.start - cursor) / P);
            cursor = s.end;
        }
        best.max((START + AREA_PAGES * P - cursor) / P)
    }

    /// What `addr` must look up as, computed from spans alone.
    fn expect(&self, addr: u64) -> Lookup<Owner> {
        if !(START..START + AREA_PAGES * P).contains(&addr) {
            return Lookup::OutsideArea;
        }
        let mut hits = self.live.iter().filter(|a| a.span().contains(&addr));
        let Some(&alloc) = hits.next() else {
            return Lookup::Unallocated;
        };
        assert!(hits.next().is_none(), "model: {addr:#x} in two spans");
        if alloc.guard_below_range().contains(&addr) {
            Lookup::GuardBelow {
                alloc,
                bytes_below_base: alloc.base - addr,
            }
        } else if alloc.guard_above_range().contains(&addr) {
            Lookup::GuardAbove {
                alloc,
                bytes_above_top: addr - alloc.top(),
            }
        } else {
            Lookup::Mapped {
                alloc,
                offset: addr - alloc.base,
            }
        }
    }
}

fn audit(area: &VmArea<Owner>, model: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(area.counters(), model.counters());
    let reserved: usize = model.live.iter().map(|a| a.span_pages()).sum();
    prop_assert_eq!(area.unreserved_pages(), AREA_PAGES as usize - reserved);
    prop_assert_eq!(area.largest_hole_pages() as u64, model.largest_hole());

    // No two spans overlap, and all lie inside the area.
    let mut spans: Vec<_> = model.live.iter().map(|a| a.span()).collect();
    spans.sort_by_key(|s| s.start);
    for w in spans.windows(2) {
        prop_assert!(w[0].end <= w[1].start, "spans overlap: {:x?}", w);
    }
    for s in &spans {
        prop_assert!(START <= s.start && s.end <= START + AREA_PAGES * P);
    }

    // Iteration is the live set, in address order.
    let mut by_base = model.live.clone();
    by_base.sort_by_key(|a| a.base);
    prop_assert_eq!(area.iter().copied().collect::<Vec<_>>(), by_base);

    // Every page's first and last byte, plus the bytes just outside.
    for page in 0..AREA_PAGES {
        for addr in [START + page * P, START + page * P + P - 1] {
            prop_assert_eq!(area.lookup(addr), model.expect(addr), "at {:#x}", addr);
        }
    }
    prop_assert_eq!(area.lookup(START - 1), Lookup::OutsideArea);
    prop_assert_eq!(area.lookup(START + AREA_PAGES * P), Lookup::OutsideArea);

    // Each guard page belongs to exactly its own allocation.
    for a in &model.live {
        for g in a
            .guard_below_range()
            .chain(a.guard_above_range())
            .step_by(P as usize)
        {
            let hit = area.lookup(g);
            prop_assert!(hit.is_guard());
            prop_assert_eq!(hit.allocation().map(|b| b.seq), Some(a.seq));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_alloc_free_matches_model(ops in prop::collection::vec(op(), 1..120)) {
        let mut area: VmArea<Owner> = VmArea::new(START, START + AREA_PAGES * P);
        let mut model = Model { live: Vec::new(), freed_bases: Vec::new() };
        let mut seqs = std::collections::HashSet::new();
        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::Alloc { pages, below, above } => {
                    let owner = ((below * 4 + above) as u8, step as u64);
                    let need = (pages + below + above) as u64;
                    let fits = model.largest_hole() >= need;
                    match area.alloc(pages, Guards { below, above }, owner) {
                        Ok(a) => {
                            prop_assert!(fits, "allocated {} pages with no hole that large", need);
                            prop_assert_eq!((a.pages, a.guard_below, a.guard_above, a.owner), (pages, below, above, owner));
                            prop_assert_eq!(a.base % P, 0);
                            prop_assert!(seqs.insert(a.seq), "sequence id reused");
                            model.live.push(a);
                        }
                        Err(e) => {
                            prop_assert_eq!(e, VmError::NoSpace);
                            prop_assert!(!fits, "refused {} pages though a hole fits them", need);
                        }
                    }
                }
                Op::Free(i) if !model.live.is_empty() => {
                    let a = model.live.swap_remove(i % model.live.len());
                    prop_assert_eq!(area.free(a.base), Ok(a));
                    model.freed_bases.push(a.base);
                }
                Op::Free(_) => {}
                Op::BadFree(i, off) => {
                    let addr = match model.freed_bases.get(i % model.freed_bases.len().max(1)) {
                        Some(&b) if i % 2 == 0 => b,
                        _ => START + off,
                    };
                    if !model.live.iter().any(|a| a.base == addr) {
                        let before = area.counters();
                        prop_assert_eq!(area.free(addr), Err(VmError::NotAllocated));
                        prop_assert_eq!(area.counters(), before);
                    }
                }
            }
            audit(&area, &model)?;
        }

        for a in std::mem::take(&mut model.live) {
            prop_assert_eq!(area.free(a.base), Ok(a));
        }
        prop_assert_eq!(area.counters(), Counters::default());
        prop_assert_eq!(area.iter().count(), 0);
        let whole = area.alloc(AREA_PAGES as usize - 2, Guards::default(), (0, 0));
        prop_assert!(whole.is_ok(), "whole area not allocatable after freeing all: {:?}", whole);
    }

    #[test]
    fn lookup_never_panics(addr in any::<u64>(), pages in 1usize..8) {
        let mut area: VmArea<Owner> = VmArea::new(START, START + AREA_PAGES * P);
        area.alloc(pages, Guards::default(), (0, 0)).unwrap();
        let _ = area.lookup(addr);
        let _ = area.free(addr);
    }
}
