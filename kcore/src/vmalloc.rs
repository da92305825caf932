//! The vmalloc area: address space for virtually contiguous allocations, each
//! fenced by unmapped guard pages of its own.
//!
//! Like Linux's VMALLOC_START..VMALLOC_END, this only hands out ranges of
//! virtual pages; backing them with frames is the caller's job. A guard page
//! is reserved address space that is never mapped, so running off either end
//! of an allocation faults instead of scribbling on the neighbour. Guards are
//! never shared between neighbours, so a faulting address names exactly one
//! victim: that is what lets an oops say "stack guard page was hit at X
//! (stack is Y..Z)" instead of guessing which of two stacks overflowed.
//!
//! Free address space is kept twice, by address (to merge a freed range with
//! its neighbours) and by size (to find the smallest hole that fits in
//! O(log n)). Best fit keeps the large holes whole for large requests.
use alloc::collections::{BTreeMap, BTreeSet};
use core::fmt;
use core::ops::Range;

pub const PAGE_SIZE: u64 = 4096;

/// Unmapped pages on each side of an allocation. Zero is allowed, to show
/// what an overflow does without them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Guards {
    pub below: usize,
    pub above: usize,
}

impl Guards {
    pub const NONE: Guards = Guards::both(0);

    pub const fn both(pages: usize) -> Guards {
        Guards {
            below: pages,
            above: pages,
        }
    }
}

/// One page each side, as CONFIG_VMAP_STACK has it.
impl Default for Guards {
    fn default() -> Self {
        Guards::both(1)
    }
}

/// A live allocation, by value: the area keeps the authoritative copy, so
/// changing a field here changes nothing there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allocation<O> {
    /// The first mapped byte (page aligned).
    pub base: u64,
    /// Mapped pages, from `base` up.
    pub pages: usize,
    pub guard_below: usize,
    pub guard_above: usize,
    /// The caller's tag, so a fault report can say whose stack it was.
    pub owner: O,
    /// Unique for the area's lifetime, even when an address is reused, so a
    /// report can tell a stale allocation from a new one at the same place.
    pub seq: u64,
}

impl<O> Allocation<O> {
    /// One past the last mapped byte (a stack's initial stack pointer).
    pub fn top(&self) -> u64 {
        self.base + self.size()
    }

    /// Mapped bytes.
    pub fn size(&self) -> u64 {
        pages_to_bytes(self.pages)
    }

    /// Everything this allocation reserves: guards and mapped pages.
    pub fn span(&self) -> Range<u64> {
        self.base - pages_to_bytes(self.guard_below)..self.top() + pages_to_bytes(self.guard_above)
    }

    /// Where an overflow (a stack growing down past `base`) lands.
    pub fn guard_below_range(&self) -> Range<u64> {
        self.span().start..self.base
    }

    /// Where an underflow (popping past `top`) lands.
    pub fn guard_above_range(&self) -> Range<u64> {
        self.top()..self.span().end
    }

    pub fn span_pages(&self) -> usize {
        self.guard_below + self.pages + self.guard_above
    }
}

/// Whose is an address, and which part of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup<O> {
    /// In mapped pages, `offset` bytes above `base`.
    Mapped {
        alloc: Allocation<O>,
        offset: u64,
    },
    /// In the guard below: `bytes_below_base` is `base - addr`, so 1 for the
    /// byte just below the lowest mapped one. A stack overflow.
    GuardBelow {
        alloc: Allocation<O>,
        bytes_below_base: u64,
    },
    /// In the guard above: `bytes_above_top` is `addr - top()`, so 0 for the
    /// byte just past the highest mapped one. A stack underflow.
    GuardAbove {
        alloc: Allocation<O>,
        bytes_above_top: u64,
    },
    /// In the area, but reserved by nobody.
    Unallocated,
    OutsideArea,
}

impl<O: Copy> Lookup<O> {
    pub fn allocation(&self) -> Option<Allocation<O>> {
        match *self {
            Lookup::Mapped { alloc, .. }
            | Lookup::GuardBelow { alloc, .. }
            | Lookup::GuardAbove { alloc, .. } => Some(alloc),
            Lookup::Unallocated | Lookup::OutsideArea => None,
        }
    }

    pub fn is_guard(&self) -> bool {
        matches!(self, Lookup::GuardBelow { .. } | Lookup::GuardAbove { .. })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmError {
    /// Linux's vmalloc(0) fails too: an empty allocation has no base.
    ZeroPages,
    /// No hole is large enough for the pages and their guards.
    NoSpace,
    /// The address is not the base of a live allocation (double free,
    /// or a pointer into the middle of one).
    NotAllocated,
}

impl fmt::Display for VmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VmError::ZeroPages => "zero-page allocation",
            VmError::NoSpace => "vmalloc area exhausted",
            VmError::NotAllocated => "not the base of a live allocation",
        })
    }
}

/// What is live now. `Eq`, so a leak check is `before == after`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Counters {
    pub ranges: usize,
    pub mapped_pages: usize,
    pub guard_pages: usize,
}

pub struct VmArea<O> {
    start: u64,
    end: u64,
    /// Live allocations keyed by the start of their span (guards included),
    /// so the one containing an address is the last key at or below it.
    live: BTreeMap<u64, Allocation<O>>,
    /// Free address space: start -> end, never two adjacent entries.
    holes: BTreeMap<u64, u64>,
    /// The same holes as (length, start), for best fit.
    holes_by_size: BTreeSet<(u64, u64)>,
    counters: Counters,
    next_seq: u64,
}

impl<O: Copy + Eq + fmt::Debug> VmArea<O> {
    /// An area over `[start, end)`.
    ///
    /// # Panics
    /// If either bound is not page aligned or `start > end`: the area's
    /// placement is a constant of the kernel's layout, not a runtime input.
    pub fn new(start: u64, end: u64) -> Self {
        assert!(
            start.is_multiple_of(PAGE_SIZE) && end.is_multiple_of(PAGE_SIZE),
            "vmalloc area bounds must be page aligned"
        );
        assert!(start <= end, "vmalloc area ends before it starts");
        let mut area = VmArea {
            start,
            end,
            live: BTreeMap::new(),
            holes: BTreeMap::new(),
            holes_by_size: BTreeSet::new(),
            counters: Counters::default(),
            next_seq: 1,
        };
        if start < end {
            area.insert_hole(start, end);
        }
        area
    }

    pub fn start(&self) -> u64 {
        self.start
    }

    pub fn end(&self) -> u64 {
        self.end
    }

    /// Reserve `guards.below + pages + guards.above` pages of address space
    /// and return the allocation; `base` is above the lower guard.
    pub fn alloc(
        &mut self,
        pages: usize,
        guards: Guards,
        owner: O,
    ) -> Result<Allocation<O>, VmError> {
        if pages == 0 {
            return Err(VmError::ZeroPages);
        }
        let span_bytes = pages
            .checked_add(guards.below)
            .and_then(|p| p.checked_add(guards.above))
            .and_then(|p| u64::try_from(p).ok())
            .and_then(|p| p.checked_mul(PAGE_SIZE))
            .ok_or(VmError::NoSpace)?;
        let &(len, start) = self
            .holes_by_size
            .range((span_bytes, 0)..)
            .next()
            .ok_or(VmError::NoSpace)?;
        self.remove_hole(start, start + len);
        if len > span_bytes {
            self.insert_hole(start + span_bytes, start + len);
        }
        let alloc = Allocation {
            base: start + pages_to_bytes(guards.below),
            pages,
            guard_below: guards.below,
            guard_above: guards.above,
            owner,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        self.live.insert(start, alloc);
        self.counters.ranges += 1;
        self.counters.mapped_pages += pages;
        self.counters.guard_pages += guards.below + guards.above;
        Ok(alloc)
    }

    /// Release the allocation whose first mapped byte is `base`, guards and
    /// all. The caller must have unmapped it (and shot down TLBs) first:
    /// the range may be handed out again at once.
    pub fn free(&mut self, base: u64) -> Result<Allocation<O>, VmError> {
        let alloc = self.get(base).ok_or(VmError::NotAllocated)?;
        let span = alloc.span();
        self.live.remove(&span.start);
        self.release(span.start, span.end);
        self.counters.ranges -= 1;
        self.counters.mapped_pages -= alloc.pages;
        self.counters.guard_pages -= alloc.guard_below + alloc.guard_above;
        Ok(alloc)
    }

    /// The live allocation whose first mapped byte is `base`.
    pub fn get(&self, base: u64) -> Option<Allocation<O>> {
        self.containing(base).filter(|a| a.base == base).copied()
    }

    /// Hand a live allocation to a new owner (a cached stack reused by a new
    /// task). `seq` stays: it is still the same reservation.
    pub fn set_owner(&mut self, base: u64, owner: O) -> Result<(), VmError> {
        let (_, alloc) = self
            .live
            .range_mut(..=base)
            .next_back()
            .filter(|(_, a)| a.base == base)
            .ok_or(VmError::NotAllocated)?;
        alloc.owner = owner;
        Ok(())
    }

    /// Whose is `addr`: for fault reports, so it must be exact at every
    /// boundary byte.
    pub fn lookup(&self, addr: u64) -> Lookup<O> {
        if addr < self.start || addr >= self.end {
            return Lookup::OutsideArea;
        }
        let Some(&alloc) = self.containing(addr) else {
            return Lookup::Unallocated;
        };
        if addr < alloc.base {
            Lookup::GuardBelow {
                alloc,
                bytes_below_base: alloc.base - addr,
            }
        } else if addr < alloc.top() {
            Lookup::Mapped {
                alloc,
                offset: addr - alloc.base,
            }
        } else {
            Lookup::GuardAbove {
                alloc,
                bytes_above_top: addr - alloc.top(),
            }
        }
    }

    /// Live allocations in address order (page-table audits: every guard
    /// page must be unmapped, every mapped page present).
    pub fn iter(&self) -> impl Iterator<Item = &Allocation<O>> + '_ {
        self.live.values()
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Pages no allocation reserves.
    pub fn unreserved_pages(&self) -> usize {
        self.total_pages() - self.counters.mapped_pages - self.counters.guard_pages
    }

    /// The largest span (guards included) an allocation could get now; less
    /// than `unreserved_pages` means the area is fragmented.
    pub fn largest_hole_pages(&self) -> usize {
        self.holes_by_size
            .last()
            .map_or(0, |&(len, _)| (len / PAGE_SIZE) as usize)
    }

    pub fn total_pages(&self) -> usize {
        ((self.end - self.start) / PAGE_SIZE) as usize
    }

    fn containing(&self, addr: u64) -> Option<&Allocation<O>> {
        self.live
            .range(..=addr)
            .next_back()
            .map(|(_, a)| a)
            .filter(|a| a.span().contains(&addr))
    }

    /// Give `[start, end)` back, merged with the holes on either side so that
    /// freeing everything leaves the one hole the area started with.
    fn release(&mut self, mut start: u64, mut end: u64) {
        if let Some((&before, &before_end)) = self.holes.range(..start).next_back() {
            if before_end == start {
                self.remove_hole(before, before_end);
                start = before;
            }
        }
        if let Some(&after_end) = self.holes.get(&end) {
            self.remove_hole(end, after_end);
            end = after_end;
        }
        self.insert_hole(start, end);
    }

    fn insert_hole(&mut self, start: u64, end: u64) {
        self.holes.insert(start, end);
        self.holes_by_size.insert((end - start, start));
    }

    fn remove_hole(&mut self, start: u64, end: u64) {
        self.holes.remove(&start);
        self.holes_by_size.remove(&(end - start, start));
    }
}

fn pages_to_bytes(pages: usize) -> u64 {
    pages as u64 * PAGE_SIZE
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: u64 = 0xffff_c900_0000_0000;
    const P: u64 = PAGE_SIZE;

    fn area(pages: u64) -> VmArea<u32> {
        VmArea::new(START, START + pages * P)
    }

    #[test]
    fn only_the_guards_are_guards() {
        let mut a = area(16);
        assert_eq!((a.start(), a.end()), (START, START + 16 * P));
        let x = a.alloc(2, Guards::default(), 1).unwrap();
        assert!(a.lookup(x.base - 1).is_guard(), "the page below the base");
        assert!(a.lookup(x.top()).is_guard(), "the page above the top");
        assert!(!a.lookup(x.base).is_guard(), "the lowest mapped byte");
        assert!(!a.lookup(x.top() - 1).is_guard(), "the highest mapped byte");
        assert!(!a.lookup(x.span().end).is_guard(), "unallocated");
        assert!(!a.lookup(START - 1).is_guard(), "outside the area");
    }

    #[test]
    fn errors_say_what_went_wrong() {
        assert_eq!(VmError::ZeroPages.to_string(), "zero-page allocation");
        assert_eq!(VmError::NoSpace.to_string(), "vmalloc area exhausted");
        assert_eq!(
            VmError::NotAllocated.to_string(),
            "not the base of a live allocation"
        );
    }

    #[test]
    fn an_area_that_starts_elsewhere_says_so() {
        let a: VmArea<u32> = VmArea::new(START + 4 * P, START + 8 * P);
        assert_eq!(a.start(), START + 4 * P);
        assert_eq!(a.lookup(START + 4 * P - 1), Lookup::OutsideArea);
    }

    #[test]
    fn default_guards_are_one_page_each_side() {
        let mut a = area(16);
        let x = a.alloc(4, Guards::default(), 7).unwrap();
        assert_eq!(x.base, START + P);
        assert_eq!(x.top(), START + 5 * P);
        assert_eq!(x.span(), START..START + 6 * P);
        assert_eq!(x.guard_below_range(), START..START + P);
        assert_eq!(x.guard_above_range(), START + 5 * P..START + 6 * P);
        assert_eq!(
            a.counters(),
            Counters {
                ranges: 1,
                mapped_pages: 4,
                guard_pages: 2
            }
        );
        assert_eq!(a.unreserved_pages(), 10);
    }

    #[test]
    fn lookup_at_every_boundary_byte() {
        let mut a = area(32);
        let left = a.alloc(1, Guards::default(), 1).unwrap();
        let x = a.alloc(4, Guards { below: 2, above: 1 }, 2).unwrap();
        let right = a.alloc(1, Guards::default(), 3).unwrap();
        assert_eq!(x.span().start, left.span().end, "neighbours are adjacent");
        assert_eq!(right.span().start, x.span().end);

        let below = |n| Lookup::GuardBelow {
            alloc: x,
            bytes_below_base: n,
        };
        let above = |n| Lookup::GuardAbove {
            alloc: x,
            bytes_above_top: n,
        };
        let mapped = |n| Lookup::Mapped {
            alloc: x,
            offset: n,
        };
        let span = x.span();
        assert_eq!(a.lookup(span.start - 1).allocation(), Some(left));
        assert!(a.lookup(span.start - 1).is_guard());
        assert_eq!(a.lookup(span.start), below(2 * P));
        assert_eq!(a.lookup(x.base - P), below(P));
        assert_eq!(a.lookup(x.base - 1), below(1));
        assert_eq!(a.lookup(x.base), mapped(0));
        assert_eq!(a.lookup(x.top() - 1), mapped(4 * P - 1));
        assert_eq!(a.lookup(x.top()), above(0));
        assert_eq!(a.lookup(span.end - 1), above(P - 1));
        assert_eq!(
            a.lookup(span.end),
            Lookup::GuardBelow {
                alloc: right,
                bytes_below_base: P
            }
        );
        assert_eq!(a.lookup(right.span().end), Lookup::Unallocated);
        assert_eq!(a.lookup(a.end() - 1), Lookup::Unallocated);
        assert_eq!(a.lookup(a.end()), Lookup::OutsideArea);
        assert_eq!(a.lookup(START - 1), Lookup::OutsideArea);
        assert_eq!(a.lookup(0), Lookup::OutsideArea);
        assert_eq!(a.lookup(u64::MAX), Lookup::OutsideArea);
    }

    #[test]
    fn zero_guards_pack_allocations_back_to_back() {
        let mut a = area(4);
        let x = a.alloc(2, Guards::NONE, 1).unwrap();
        let y = a.alloc(2, Guards::NONE, 2).unwrap();
        assert_eq!(x.top(), y.base);
        assert!(x.guard_below_range().is_empty() && x.guard_above_range().is_empty());
        assert_eq!(
            a.lookup(x.top() - 1),
            Lookup::Mapped {
                alloc: x,
                offset: 2 * P - 1
            }
        );
        // Without guards an overflow of y lands in x's pages: the reason guards exist.
        assert_eq!(a.lookup(y.base - 1).allocation(), Some(x));
        assert_eq!(a.counters().guard_pages, 0);
        assert_eq!(a.alloc(1, Guards::NONE, 3), Err(VmError::NoSpace));
    }

    #[test]
    fn one_sided_guards() {
        let mut a = area(8);
        let x = a.alloc(2, Guards { below: 1, above: 0 }, 1).unwrap();
        assert_eq!(a.lookup(x.top()), Lookup::Unallocated);
        assert_eq!(
            a.lookup(x.base - 1),
            Lookup::GuardBelow {
                alloc: x,
                bytes_below_base: 1
            }
        );
        let y = a.alloc(2, Guards { below: 0, above: 3 }, 2).unwrap();
        assert_eq!(y.base, x.top());
        assert_eq!(
            a.lookup(y.base - 1),
            Lookup::Mapped {
                alloc: x,
                offset: 2 * P - 1
            }
        );
        assert_eq!(
            a.lookup(y.top() + 3 * P - 1),
            Lookup::GuardAbove {
                alloc: y,
                bytes_above_top: 3 * P - 1
            }
        );
        assert_eq!(a.unreserved_pages(), 0);
    }

    #[test]
    fn exhaustion_and_refill() {
        let mut a = area(12);
        let xs: Vec<_> = (0..4)
            .map(|i| a.alloc(1, Guards::default(), i).unwrap())
            .collect();
        assert_eq!(a.alloc(1, Guards::NONE, 9), Err(VmError::NoSpace));
        assert_eq!(a.largest_hole_pages(), 0);
        a.free(xs[1].base).unwrap();
        // Three pages free: a one-page allocation with guards fits, a
        // two-page one does not.
        assert_eq!(a.alloc(2, Guards::default(), 9), Err(VmError::NoSpace));
        let y = a.alloc(1, Guards::default(), 9).unwrap();
        assert_eq!(y.span(), xs[1].span(), "the hole is reused");
        assert_ne!(y.seq, xs[1].seq, "but the sequence id is new");
    }

    #[test]
    fn zero_pages_and_absurd_sizes_fail_cleanly() {
        let mut a = area(8);
        assert_eq!(a.alloc(0, Guards::default(), 1), Err(VmError::ZeroPages));
        assert_eq!(
            a.alloc(usize::MAX, Guards::default(), 1),
            Err(VmError::NoSpace)
        );
        assert_eq!(
            a.alloc(1, Guards::both(usize::MAX / 2), 1),
            Err(VmError::NoSpace)
        );
        assert_eq!(a.alloc(9, Guards::NONE, 1), Err(VmError::NoSpace));
        assert_eq!(a.counters(), Counters::default());
    }

    #[test]
    fn double_free_and_interior_pointers_are_errors() {
        let mut a = area(16);
        let x = a.alloc(2, Guards::default(), 1).unwrap();
        for bogus in [
            x.base - P,
            x.base + P,
            x.top(),
            x.base + 1,
            START + 15 * P,
            0,
            u64::MAX,
        ] {
            assert_eq!(a.free(bogus), Err(VmError::NotAllocated), "{bogus:#x}");
        }
        assert_eq!(a.free(x.base), Ok(x));
        assert_eq!(a.free(x.base), Err(VmError::NotAllocated));
        assert_eq!(a.counters(), Counters::default());
    }

    #[test]
    fn freeing_merges_holes_both_ways() {
        let mut a = area(9);
        let xs: Vec<_> = (0..3)
            .map(|i| a.alloc(1, Guards::default(), i).unwrap())
            .collect();
        a.free(xs[0].base).unwrap();
        a.free(xs[2].base).unwrap();
        assert_eq!(a.largest_hole_pages(), 3);
        a.free(xs[1].base).unwrap();
        assert_eq!(a.largest_hole_pages(), 9);
        assert!(a.alloc(7, Guards::default(), 0).is_ok());
    }

    #[test]
    fn best_fit_keeps_large_holes_whole() {
        let mut a = area(20);
        let small = a.alloc(1, Guards::NONE, 0).unwrap();
        let _pin = a.alloc(1, Guards::NONE, 1).unwrap();
        a.free(small.base).unwrap();
        // A one-page hole at the start, an 18-page hole after the pin.
        let x = a.alloc(1, Guards::NONE, 2).unwrap();
        assert_eq!(x.base, small.base);
        assert_eq!(a.largest_hole_pages(), 18);
    }

    #[test]
    fn owners_can_change_but_only_on_live_bases() {
        let mut a = area(8);
        let x = a.alloc(1, Guards::default(), 1).unwrap();
        assert_eq!(a.set_owner(x.base, 5), Ok(()));
        assert_eq!(a.get(x.base).map(|y| (y.owner, y.seq)), Some((5, x.seq)));
        assert_eq!(a.lookup(x.base - 1).allocation().map(|y| y.owner), Some(5));
        assert_eq!(a.set_owner(x.base + P, 6), Err(VmError::NotAllocated));
        assert_eq!(a.set_owner(x.base - P, 6), Err(VmError::NotAllocated));
        a.free(x.base).unwrap();
        assert_eq!(a.set_owner(x.base, 6), Err(VmError::NotAllocated));
    }

    #[test]
    fn iteration_is_in_address_order() {
        let mut a = area(32);
        let xs: Vec<_> = (0..5)
            .map(|i| a.alloc(1 + i as usize, Guards::default(), i).unwrap())
            .collect();
        a.free(xs[2].base).unwrap();
        let bases: Vec<_> = a.iter().map(|x| x.base).collect();
        assert_eq!(bases, [xs[0].base, xs[1].base, xs[3].base, xs[4].base]);
    }

    #[test]
    fn empty_area() {
        let mut a: VmArea<u32> = VmArea::new(START, START);
        assert_eq!(a.alloc(1, Guards::NONE, 0), Err(VmError::NoSpace));
        assert_eq!(a.lookup(START), Lookup::OutsideArea);
        assert_eq!(a.largest_hole_pages(), 0);
    }

    #[test]
    #[should_panic(expected = "page aligned")]
    fn misaligned_area_is_a_layout_bug() {
        let _ = VmArea::<u32>::new(START + 1, START + P);
    }
}
