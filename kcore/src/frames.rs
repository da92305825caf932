//! Physical frames: a bitmap allocator that needs no heap.
//!
//! It is the first allocator up (the heap and the page tables get their
//! frames from it), so its bitmap lives in storage the caller carves out of
//! usable memory. Everything starts used; the boot memory map's usable
//! regions are then added one by one, so a frame nobody declared usable can
//! never be handed out.
//!
//! A second bitmap remembers which frames were ever added. Without it,
//! freeing a reserved frame (a wrong address, a firmware table) would look
//! like freeing an allocated one and quietly put firmware memory in the pool.
//!
//! Single frames come from a next-fit scan, so consecutive allocations do
//! not rescan the full low end; contiguous runs exist for the pre-4.8 style
//! stacks, which are physically contiguous and aligned to their size.
use core::fmt;

pub const FRAME_SIZE: u64 = 4096;
const WORD_BITS: usize = u64::BITS as usize;

/// Words of storage [`FrameBitmap::new`] needs for `n_frames` frames (two
/// bits a frame: allocated, and ever usable).
pub const fn bitmap_words_for(n_frames: usize) -> usize {
    2 * n_frames.div_ceil(WORD_BITS)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    Misaligned,
    /// Outside the range the bitmap covers.
    OutOfRange,
    /// Never added as usable: not ours to free.
    NotUsable,
    /// Already free: a double free.
    AlreadyFree,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FrameError::Misaligned => "address is not frame aligned",
            FrameError::OutOfRange => "address outside the frame bitmap",
            FrameError::NotUsable => "frame was never usable memory",
            FrameError::AlreadyFree => "frame is already free",
        })
    }
}

/// Frames added as usable (`total_frames`), split into free and allocated.
/// `Eq`, so a leak check is `before == after`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FrameCounters {
    pub free_frames: usize,
    pub used_frames: usize,
    pub total_frames: usize,
}

pub struct FrameBitmap<'a> {
    /// Set: not available (allocated, or never usable).
    used: &'a mut [u64],
    /// Set: added through `add_free_range`.
    usable: &'a mut [u64],
    base: u64,
    n_frames: usize,
    free: usize,
    total: usize,
    /// Where the next scan starts.
    next: usize,
}

impl<'a> FrameBitmap<'a> {
    /// A bitmap for `[base, base + n_frames * FRAME_SIZE)`, all used.
    ///
    /// # Panics
    /// If `base` is not frame aligned, the range wraps, or `storage` is
    /// shorter than [`bitmap_words_for`]`(n_frames)`: the caller sized it.
    pub fn new(storage: &'a mut [u64], base: u64, n_frames: usize) -> Self {
        assert!(
            base.is_multiple_of(FRAME_SIZE),
            "frame bitmap base must be frame aligned"
        );
        assert!(
            (n_frames as u64)
                .checked_mul(FRAME_SIZE)
                .and_then(|len| base.checked_add(len))
                .is_some(),
            "frame bitmap range wraps around"
        );
        assert!(
            storage.len() >= bitmap_words_for(n_frames),
            "frame bitmap storage too small"
        );
        let words = n_frames.div_ceil(WORD_BITS);
        let (used, rest) = storage.split_at_mut(words);
        let usable = &mut rest[..words];
        // The tail bits past n_frames stay set forever, so scans need no
        // bounds check inside the last word.
        used.fill(u64::MAX);
        usable.fill(0);
        FrameBitmap {
            used,
            usable,
            base,
            n_frames,
            free: 0,
            total: 0,
            next: 0,
        }
    }

    /// Make the whole frames inside `[start, end)` available, clipped to
    /// the covered range; partial frames at either end are left out. Adding
    /// a frame twice is harmless and never frees an allocated frame, so
    /// overlapping regions cannot corrupt the counts. Returns how many
    /// frames became available.
    pub fn add_free_range(&mut self, start: u64, end: u64) -> usize {
        let lo = start.max(self.base).div_ceil(FRAME_SIZE) * FRAME_SIZE;
        let hi = end.min(self.limit()) / FRAME_SIZE * FRAME_SIZE;
        if lo >= hi {
            return 0;
        }
        // A word at a time: the boot map's first region is the whole of
        // RAM, and frame by frame (65 536 for 256 MiB) it took 2 ms of the
        // boot under TCG. Frames already added keep their state.
        let (first, end) = (self.index_of(lo), self.index_of(hi));
        let mut added = 0;
        for w in first / WORD_BITS..end.div_ceil(WORD_BITS) {
            let from = (w * WORD_BITS).max(first) - w * WORD_BITS;
            let to = ((w + 1) * WORD_BITS).min(end) - w * WORD_BITS;
            let new = bits_between(from, to) & !self.usable[w];
            self.usable[w] |= new;
            self.used[w] &= !new;
            added += new.count_ones() as usize;
        }
        self.free += added;
        self.total += added;
        added
    }

    pub fn alloc(&mut self) -> Option<u64> {
        let i = self.find_free(self.next).or_else(|| self.find_free(0))?;
        set(self.used, i);
        self.free -= 1;
        self.next = i + 1;
        Some(self.addr_of(i))
    }

    /// `n` physically contiguous frames whose first frame's address is a
    /// multiple of `align_frames * FRAME_SIZE` (0 means 1). `None` for
    /// `n == 0`: there is no address to return.
    pub fn alloc_contiguous(&mut self, n: usize, align_frames: usize) -> Option<u64> {
        if n == 0 || n > self.free {
            return None;
        }
        let align = align_frames.max(1);
        let i = self
            .find_run(self.next, n, align)
            .or_else(|| self.find_run(0, n, align))?;
        for j in i..i + n {
            set(self.used, j);
        }
        self.free -= n;
        self.next = i + n;
        Some(self.addr_of(i))
    }

    pub fn free(&mut self, addr: u64) -> Result<(), FrameError> {
        self.free_contiguous(addr, 1)
    }

    /// Free `n` frames from `addr`. All or nothing: if any of them is not
    /// an allocated frame, none is freed.
    pub fn free_contiguous(&mut self, addr: u64, n: usize) -> Result<(), FrameError> {
        let first = self.index(addr)?;
        let end = first
            .checked_add(n)
            .filter(|&e| e <= self.n_frames)
            .ok_or(FrameError::OutOfRange)?;
        for i in first..end {
            if !bit(self.usable, i) {
                return Err(FrameError::NotUsable);
            }
            if !bit(self.used, i) {
                return Err(FrameError::AlreadyFree);
            }
        }
        for i in first..end {
            clear(self.used, i);
        }
        self.free += n;
        Ok(())
    }

    /// Whether `addr`'s frame is available to `alloc` now.
    pub fn is_free(&self, addr: u64) -> bool {
        self.index(addr).is_ok_and(|i| !bit(self.used, i))
    }

    pub fn counters(&self) -> FrameCounters {
        FrameCounters {
            free_frames: self.free,
            used_frames: self.total - self.free,
            total_frames: self.total,
        }
    }

    pub fn free_frames(&self) -> usize {
        self.free
    }

    pub fn used_frames(&self) -> usize {
        self.total - self.free
    }

    pub fn total_frames(&self) -> usize {
        self.total
    }

    /// The covered range, `[base, limit)`.
    pub fn base(&self) -> u64 {
        self.base
    }

    pub fn limit(&self) -> u64 {
        self.base + self.n_frames as u64 * FRAME_SIZE
    }

    fn index(&self, addr: u64) -> Result<usize, FrameError> {
        if !addr.is_multiple_of(FRAME_SIZE) {
            return Err(FrameError::Misaligned);
        }
        if addr < self.base || addr >= self.limit() {
            return Err(FrameError::OutOfRange);
        }
        Ok(self.index_of(addr))
    }

    fn index_of(&self, addr: u64) -> usize {
        ((addr - self.base) / FRAME_SIZE) as usize
    }

    fn addr_of(&self, i: usize) -> u64 {
        self.base + i as u64 * FRAME_SIZE
    }

    /// The first free frame at or after `from`.
    fn find_free(&self, from: usize) -> Option<usize> {
        if from >= self.n_frames {
            return None;
        }
        let mut w = from / WORD_BITS;
        // Bits below `from` count as used for this search.
        let mut word = self.used[w] | low_mask(from % WORD_BITS);
        loop {
            if word != u64::MAX {
                let i = w * WORD_BITS + word.trailing_ones() as usize;
                return (i < self.n_frames).then_some(i);
            }
            w += 1;
            word = *self.used.get(w)?;
        }
    }

    /// The first used frame in `[from, to)`.
    fn find_used(&self, from: usize, to: usize) -> Option<usize> {
        let mut i = from;
        while i < to {
            let w = i / WORD_BITS;
            let word = self.used[w] & !low_mask(i % WORD_BITS);
            if word != 0 {
                let hit = w * WORD_BITS + word.trailing_zeros() as usize;
                return (hit < to).then_some(hit);
            }
            i = (w + 1) * WORD_BITS;
        }
        None
    }

    /// The first aligned run of `n` free frames starting at or after `from`.
    fn find_run(&self, from: usize, n: usize, align: usize) -> Option<usize> {
        let mut pos = from;
        loop {
            let start = self.align_up(self.find_free(pos)?, align)?;
            let end = start.checked_add(n).filter(|&e| e <= self.n_frames)?;
            match self.find_used(start, end) {
                Some(used) => pos = used + 1,
                None => return Some(start),
            }
        }
    }

    /// Alignment is of the physical address, not of the index: `base`
    /// itself need not be aligned to `align` frames.
    fn align_up(&self, i: usize, align: usize) -> Option<usize> {
        let frame = self.base / FRAME_SIZE + i as u64;
        let rem = (frame % align as u64) as usize;
        if rem == 0 {
            Some(i)
        } else {
            i.checked_add(align - rem)
        }
    }
}

fn low_mask(bits: usize) -> u64 {
    (1u64 << bits) - 1
}

/// The bits `from..to` of a word (`to` at most [`WORD_BITS`]).
fn bits_between(from: usize, to: usize) -> u64 {
    let below = |n: usize| {
        if n >= WORD_BITS {
            u64::MAX
        } else {
            (1u64 << n) - 1
        }
    };
    below(to) & !below(from)
}

fn bit(words: &[u64], i: usize) -> bool {
    words[i / WORD_BITS] & (1 << (i % WORD_BITS)) != 0
}

fn set(words: &mut [u64], i: usize) {
    words[i / WORD_BITS] |= 1 << (i % WORD_BITS);
}

fn clear(words: &mut [u64], i: usize) {
    words[i / WORD_BITS] &= !(1 << (i % WORD_BITS));
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: u64 = FRAME_SIZE;

    #[test]
    fn each_error_says_what_went_wrong() {
        use alloc::string::ToString;
        let said = [
            FrameError::Misaligned,
            FrameError::OutOfRange,
            FrameError::NotUsable,
            FrameError::AlreadyFree,
        ]
        .map(|e| e.to_string());
        assert_eq!(
            said,
            [
                "address is not frame aligned",
                "address outside the frame bitmap",
                "frame was never usable memory",
                "frame is already free",
            ]
        );
    }

    fn with_bitmap<R>(base: u64, n: usize, f: impl FnOnce(&mut FrameBitmap) -> R) -> R {
        let mut storage = vec![0; bitmap_words_for(n)];
        f(&mut FrameBitmap::new(&mut storage, base, n))
    }

    #[test]
    fn storage_size() {
        assert_eq!(bitmap_words_for(0), 0);
        assert_eq!(bitmap_words_for(1), 2);
        assert_eq!(bitmap_words_for(64), 2);
        assert_eq!(bitmap_words_for(65), 4);
    }

    #[test]
    fn nothing_is_free_until_added() {
        with_bitmap(0, 100, |b| {
            assert_eq!(b.alloc(), None);
            assert_eq!(b.counters(), FrameCounters::default());
            assert_eq!(
                b.free(0),
                Err(FrameError::NotUsable),
                "reserved memory is not ours"
            );
        });
    }

    #[test]
    fn ranges_are_rounded_inwards_and_clipped() {
        with_bitmap(0x10_0000, 16, |b| {
            assert_eq!(b.add_free_range(0, 0x10_0000), 0, "below the bitmap");
            assert_eq!(
                b.add_free_range(0x10_0001, 0x10_2fff),
                1,
                "only the whole frame"
            );
            assert!(b.is_free(0x10_1000));
            assert!(!b.is_free(0x10_0000) && !b.is_free(0x10_2000));
            assert_eq!(
                b.add_free_range(0x10_e000, u64::MAX),
                2,
                "clipped at the limit"
            );
            assert_eq!(
                b.add_free_range(0x10_0000, 0x10_3000),
                2,
                "the added frame is not counted twice"
            );
            assert_eq!(b.total_frames(), 5);
            assert_eq!(b.add_free_range(0x10_3000, 0x10_3000), 0);
        });
    }

    proptest::proptest! {
        /// Adding ranges word by word has the per-frame rule's effect: a
        /// frame inside a range becomes usable and, unless it was added
        /// before, free; one outside is untouched.
        #[test]
        fn adding_ranges_is_the_per_frame_rule(
            n in 1usize..300,
            ranges in proptest::collection::vec((0u64..320, 0u64..320), 1..6),
            allocs in 0usize..40,
        ) {
            with_bitmap(0, n, |b| {
                let mut usable = vec![false; n];
                let mut free = vec![false; n];
                for (i, &(x, y)) in ranges.iter().enumerate() {
                    let (lo, hi) = (x.min(y), x.max(y));
                    let added = b.add_free_range(lo * F, hi * F);
                    let mut expected = 0;
                    for f in lo.min(n as u64)..hi.min(n as u64) {
                        if !usable[f as usize] {
                            usable[f as usize] = true;
                            free[f as usize] = true;
                            expected += 1;
                        }
                    }
                    proptest::prop_assert_eq!(added, expected);
                    // Allocate between additions, so a re-added range meets
                    // allocated frames that must stay allocated.
                    if i == 0 {
                        for _ in 0..allocs {
                            match b.alloc() {
                                Some(a) => free[(a / F) as usize] = false,
                                None => break,
                            }
                        }
                    }
                }
                for f in 0..n {
                    proptest::prop_assert_eq!(b.is_free(f as u64 * F), free[f], "frame {}", f);
                    proptest::prop_assert_eq!(
                        b.free(f as u64 * F) == Err(FrameError::NotUsable),
                        !usable[f],
                        "frame {} usable", f
                    );
                }
                Ok(())
            })?;
        }
    }

    #[test]
    fn re_adding_never_frees_an_allocated_frame() {
        with_bitmap(0, 4, |b| {
            b.add_free_range(0, 4 * F);
            let a = b.alloc().unwrap();
            assert_eq!(b.add_free_range(0, 4 * F), 0);
            assert!(!b.is_free(a));
            assert_eq!(b.used_frames(), 1);
        });
    }

    #[test]
    fn the_accessors_read_the_bitmap_as_it_stands() {
        with_bitmap(0x10_0000, 5, |b| {
            assert_eq!((b.base(), b.limit()), (0x10_0000, 0x10_0000 + 5 * F));
            b.add_free_range(0x10_0000, 0x10_0000 + 5 * F);
            b.alloc().unwrap();
            b.alloc().unwrap();
            assert_eq!(
                (b.used_frames(), b.free_frames(), b.total_frames()),
                (2, 3, 5)
            );
        });
    }

    #[test]
    fn exhaustion_then_reuse() {
        with_bitmap(0, 3, |b| {
            b.add_free_range(0, 3 * F);
            let got: Vec<_> = (0..3).map(|_| b.alloc().unwrap()).collect();
            assert_eq!(got, [0, F, 2 * F]);
            assert_eq!(b.alloc(), None);
            b.free(F).unwrap();
            assert_eq!(b.alloc(), Some(F), "next-fit wraps around");
            assert_eq!(
                b.counters(),
                FrameCounters {
                    free_frames: 0,
                    used_frames: 3,
                    total_frames: 3
                }
            );
        });
    }

    #[test]
    fn bad_frees_are_errors_and_change_nothing() {
        with_bitmap(F, 8, |b| {
            b.add_free_range(F, 5 * F);
            let a = b.alloc().unwrap();
            let before = b.counters();
            assert_eq!(b.free(a + 1), Err(FrameError::Misaligned));
            assert_eq!(b.free(0), Err(FrameError::OutOfRange));
            assert_eq!(b.free(9 * F), Err(FrameError::OutOfRange));
            assert_eq!(b.free(6 * F), Err(FrameError::NotUsable));
            assert_eq!(b.free(a + F), Err(FrameError::AlreadyFree));
            assert_eq!(b.counters(), before);
            b.free(a).unwrap();
            assert_eq!(b.free(a), Err(FrameError::AlreadyFree), "double free");
        });
    }

    #[test]
    fn free_contiguous_is_all_or_nothing() {
        with_bitmap(0, 8, |b| {
            b.add_free_range(0, 8 * F);
            let a = b.alloc_contiguous(4, 1).unwrap();
            b.free(a + 2 * F).unwrap();
            assert_eq!(b.free_contiguous(a, 4), Err(FrameError::AlreadyFree));
            assert!(!b.is_free(a), "nothing was freed");
            assert_eq!(b.free_contiguous(a, 9), Err(FrameError::OutOfRange));
            assert_eq!(b.free_contiguous(a, 2), Ok(()));
            assert_eq!(b.free_contiguous(a + 3 * F, 1), Ok(()));
            assert_eq!(b.free_frames(), 8);
        });
    }

    #[test]
    fn contiguous_runs_are_aligned_to_the_physical_address() {
        // Base 3 frames in: index alignment and address alignment differ.
        with_bitmap(3 * F, 64, |b| {
            b.add_free_range(0, u64::MAX);
            let a = b.alloc_contiguous(4, 4).unwrap();
            assert_eq!(a % (4 * F), 0);
            assert_eq!(a, 4 * F);
            let c = b.alloc_contiguous(3, 8).unwrap();
            assert_eq!(c % (8 * F), 0);
            assert!(c >= a + 4 * F);
        });
    }

    #[test]
    fn contiguous_skips_runs_with_a_hole() {
        with_bitmap(0, 16, |b| {
            b.add_free_range(0, 3 * F);
            b.add_free_range(4 * F, 16 * F);
            assert_eq!(b.alloc_contiguous(4, 1), Some(4 * F));
            assert_eq!(b.alloc_contiguous(3, 1), Some(8 * F));
            assert_eq!(b.alloc_contiguous(3, 1), Some(11 * F));
            assert_eq!(b.alloc_contiguous(3, 1), Some(0), "wraps to the start");
            assert_eq!(
                b.alloc_contiguous(3, 1),
                None,
                "two free frames, not adjacent"
            );
            assert_eq!(b.alloc_contiguous(0, 1), None);
            assert_eq!(b.free_frames(), 2);
        });
    }

    #[test]
    fn scans_cross_word_boundaries() {
        with_bitmap(0, 200, |b| {
            b.add_free_range(62 * F, 70 * F);
            b.add_free_range(190 * F, 200 * F);
            assert_eq!(
                b.alloc_contiguous(4, 2),
                Some(62 * F),
                "a run across two words"
            );
            assert_eq!(
                b.alloc_contiguous(8, 8),
                Some(192 * F),
                "64..72 would include used frames"
            );
            assert_eq!(
                b.alloc(),
                Some(66 * F),
                "next-fit wraps after the last frame"
            );
        });
    }
}
