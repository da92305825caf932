//! How deep a stack was ever used, and what its deepest excursion left
//! behind: Linux's `CONFIG_DEBUG_STACK_USAGE`, with the call chain.
//!
//! Every stack starts zeroed (the guest clears each one it hands out, fresh
//! or cached), and nothing but use writes to it, so the lowest nonzero word
//! is the deepest the stack has ever been written: `first_used`, Linux's
//! `stack_not_used()` counted from the other end. A locally zero word at
//! the very bottom of the deepest frame is missed; Linux lives with the
//! same few bytes.
//!
//! With frame pointers, each call leaves a frame record in its frame: the
//! caller's rbp and, above it, the return address. When the deep call
//! returns, its records stay in the now-unused part until a later, deep
//! enough call writes over them; the shallower calls made since (the exit
//! path) overwrite only the top of them. `stale_chain` finds the lowest
//! record that still chains upward through plausible records and reads the
//! return addresses off it, innermost first: which functions the deepest
//! excursion went through, long after it returned.
//!
//! Both read memory only through the `read` they are given, and only at
//! word-aligned addresses inside the range they are given.

use core::ops::Range;

/// A stack word.
pub const WORD: usize = 8;

/// The bytes of one frame record: saved rbp, then the return address.
const RECORD: usize = 2 * WORD;

/// A record must chain through at least this many records (itself
/// included) to be believed: one stale pointer that happens to sit below a
/// code address is not a call chain.
pub const MIN_RECORDS: usize = 3;

/// The address of the lowest nonzero word in `range` (its start rounded up
/// to a word), or `range.end` if every word is zero: the stack was used
/// from there to its top.
pub fn first_used(range: Range<usize>, read: impl Fn(usize) -> u64) -> usize {
    let mut at = range.start.next_multiple_of(WORD);
    // A block of words at a time, one branch for all of them, while a
    // whole block fits: most of a stack was never used, and this runs at
    // every exit (under TCG a word at a time was 15 µs for a 16 KiB stack).
    while range.end.saturating_sub(at) >= BLOCK * WORD {
        let any = (0..BLOCK).fold(0, |any, k| any | read(at + k * WORD));
        if any != 0 {
            break;
        }
        at += BLOCK * WORD;
    }
    while range.end.saturating_sub(at) >= WORD {
        if read(at) != 0 {
            return at;
        }
        at += WORD;
    }
    range.end
}

/// Words `first_used` reads in one step.
const BLOCK: usize = 8;

/// Bytes from `first_used` to the top of `range`: the high-water mark.
pub fn used_bytes(range: Range<usize>, read: impl Fn(usize) -> u64) -> usize {
    let end = range.end;
    end - first_used(range, read)
}

/// One frame record of a chain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// Where the record is: the frame's rbp.
    pub at: usize,
    /// The return address above the saved rbp.
    pub ret: u64,
}

/// A chain of frame records, innermost first, at most `N` of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chain<const N: usize> {
    records: [Record; N],
    len: usize,
    /// The chain went on past `N` records.
    pub truncated: bool,
}

impl<const N: usize> Default for Chain<N> {
    fn default() -> Self {
        Chain {
            records: [Record::default(); N],
            len: 0,
            truncated: false,
        }
    }
}

impl<const N: usize> Chain<N> {
    pub fn records(&self) -> &[Record] {
        &self.records[..self.len]
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn push(&mut self, r: Record) -> bool {
        if self.len == N {
            self.truncated = true;
            return false;
        }
        self.records[self.len] = r;
        self.len += 1;
        true
    }
}

/// Reads frame records inside one stack.
struct Walker<R, T> {
    range: Range<usize>,
    read: R,
    is_text: T,
}

impl<R: Fn(usize) -> u64, T: Fn(u64) -> bool> Walker<R, T> {
    /// The record at `at` (saved rbp, return address), if one fits there
    /// and its return address is code.
    fn record(&self, at: usize) -> Option<(u64, u64)> {
        let fits = at.is_multiple_of(WORD)
            && at >= self.range.start
            && at.checked_add(RECORD)? <= self.range.end;
        if !fits {
            return None;
        }
        let ret = (self.read)(at + WORD);
        (self.is_text)(ret).then(|| ((self.read)(at), ret))
    }

    /// Where a record at `at` whose saved rbp is `link` leads: the caller's
    /// record, higher in the same stack, if one is there.
    fn next(&self, at: usize, link: u64) -> Option<usize> {
        let up = usize::try_from(link).ok()?;
        (up >= at + RECORD && self.record(up).is_some()).then_some(up)
    }

    /// Whether the chain from `at` has `MIN_RECORDS` records.
    fn believable(&self, at: usize) -> bool {
        let mut here = at;
        for _ in 1..MIN_RECORDS {
            let Some((link, _)) = self.record(here) else {
                return false;
            };
            match self.next(here, link) {
                Some(up) => here = up,
                None => return false,
            }
        }
        self.record(here).is_some()
    }

    fn chain<const N: usize>(&self, from: usize) -> Chain<N> {
        let mut chain = Chain::default();
        let mut here = from;
        while let Some((link, ret)) = self.record(here) {
            if !chain.push(Record { at: here, ret }) {
                break;
            }
            match self.next(here, link) {
                Some(up) => here = up,
                None => break,
            }
        }
        chain
    }
}

/// The frame-pointer chain the deepest excursion into `range` left behind:
/// from the lowest word upward, the first plausible record (8-aligned, its
/// return address accepted by `is_text`, its saved rbp pointing higher into
/// `range` at another such record) that chains through `MIN_RECORDS`,
/// followed upward for as long as the records stay plausible (at most
/// `N`). Empty if no such chain is left. Give it the used part of the
/// stack (`first_used..top`): below that everything is zero.
pub fn stale_chain<const N: usize>(
    range: Range<usize>,
    read: impl Fn(usize) -> u64,
    is_text: impl Fn(u64) -> bool,
) -> Chain<N> {
    let w = Walker {
        range,
        read,
        is_text,
    };
    let mut at = w.range.start.next_multiple_of(WORD);
    while at + RECORD <= w.range.end {
        if w.believable(at) {
            return w.chain(at);
        }
        at += WORD;
    }
    Chain::default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::cell::Cell;
    use std::vec::Vec;

    const BASE: usize = 0xffff_c900_0001_0000;
    const TEXT: Range<u64> = 0xffff_ffff_8000_0000..0xffff_ffff_8010_0000;

    /// A synthetic stack of `words` words at `BASE`, zeroed.
    #[derive(Clone, Debug)]
    struct Stack {
        words: Vec<u64>,
    }

    impl Stack {
        fn new(words: usize) -> Stack {
            Stack {
                words: vec![0; words],
            }
        }
        fn top(&self) -> usize {
            BASE + self.words.len() * WORD
        }
        fn addr(&self, i: usize) -> usize {
            BASE + i * WORD
        }
        fn set(&mut self, i: usize, v: u64) {
            self.words[i] = v;
        }
        /// A reader that fails the test on any read outside the stack or
        /// off a word, and counts the reads.
        fn reader<'s>(&'s self, reads: &'s Cell<usize>) -> impl Fn(usize) -> u64 + 's {
            move |a| {
                assert!(a.is_multiple_of(WORD), "unaligned read at {a:#x}");
                assert!((BASE..self.top()).contains(&a), "read outside at {a:#x}");
                reads.set(reads.get() + 1);
                self.words[(a - BASE) / WORD]
            }
        }
        /// Frame records at word indices `at` (ascending), each linking to
        /// the next, the last to 0 (the outermost frame); returns them
        /// innermost first as `stale_chain` should.
        fn chain(&mut self, at: &[usize], rets: &[u64]) -> Vec<Record> {
            for (k, &i) in at.iter().enumerate() {
                let link = at.get(k + 1).map_or(0, |&up| self.addr(up) as u64);
                self.set(i, link);
                self.set(i + 1, rets[k]);
            }
            at.iter()
                .zip(rets)
                .map(|(&i, &ret)| Record {
                    at: self.addr(i),
                    ret,
                })
                .collect()
        }
    }

    fn is_text(v: u64) -> bool {
        TEXT.contains(&v)
    }

    fn chain_of(s: &Stack, from: usize) -> Chain<64> {
        let reads = Cell::new(0);
        stale_chain::<64>(s.addr(from)..s.top(), s.reader(&reads), is_text)
    }

    /// Garbage a stack frame holds that can never be a saved rbp of this
    /// stack: a local pattern, a small number, a code address, a pointer
    /// to some other memory, a pointer into the stack that is not upward or
    /// not aligned (the walker must not take it for a link).
    fn garbage() -> impl Strategy<Value = u64> {
        prop_oneof![
            Just(0xa5a5_a5a5_a5a5_a5a5u64),
            1u64..4096,
            TEXT,
            0xffff_8000_0000_0000u64..0xffff_8000_1000_0000,
            (0usize..64).prop_map(|i| (BASE + i * WORD) as u64),
            (0usize..4096).prop_map(|i| (BASE + i * WORD + 3) as u64),
        ]
    }

    /// A chain: the gaps (in words, at least a record's) between records
    /// from the innermost upward, and each record's return address.
    fn frames() -> impl Strategy<Value = Vec<(usize, u64)>> {
        prop::collection::vec((2usize..40, TEXT), 3..30)
    }

    #[test]
    fn an_empty_stack_was_never_used_and_holds_no_chain() {
        let s = Stack::new(2048);
        let reads = Cell::new(0);
        assert_eq!(first_used(BASE..s.top(), s.reader(&reads)), s.top());
        assert_eq!(used_bytes(BASE..s.top(), s.reader(&reads)), 0);
        assert!(chain_of(&s, 0).is_empty());
        // An empty range reads nothing.
        let none = Cell::new(0);
        assert_eq!(first_used(BASE..BASE, s.reader(&none)), BASE);
        assert!(stale_chain::<4>(BASE..BASE + WORD, s.reader(&none), is_text).is_empty());
        assert_eq!(none.get(), 0);
    }

    #[test]
    fn a_known_stack_reads_as_linux_would_count_it() {
        // 16 KiB, the deepest write 75 words (600 bytes) below the top.
        let mut s = Stack::new(2048);
        s.set(2048 - 75, 0xa5a5_a5a5_a5a5_a5a5);
        s.set(2047, 1);
        let reads = Cell::new(0);
        assert_eq!(used_bytes(BASE..s.top(), s.reader(&reads)), 75 * WORD);
        // An unaligned start is rounded up, never read below.
        let reads = Cell::new(0);
        assert_eq!(
            first_used(BASE + 1..s.top(), s.reader(&reads)),
            s.addr(2048 - 75)
        );
    }

    #[test]
    fn two_records_are_not_a_chain_but_three_are() {
        let mut s = Stack::new(256);
        let pair = s.chain(&[10, 20], &[TEXT.start + 1, TEXT.start + 2]);
        assert!(chain_of(&s, 0).is_empty(), "{pair:?}");
        let mut s = Stack::new(256);
        let three = s.chain(&[10, 20, 30], &[TEXT.start + 1, TEXT.start + 2, 7]);
        // The third record's return address is not code: still no chain.
        assert!(chain_of(&s, 0).is_empty(), "{three:?}");
        s.set(31, TEXT.start + 3);
        let want = s.chain(
            &[10, 20, 30],
            &[TEXT.start + 1, TEXT.start + 2, TEXT.start + 3],
        );
        assert_eq!(chain_of(&s, 0).records(), &want[..]);
    }

    #[test]
    fn a_long_chain_is_cut_at_the_bound_and_says_so() {
        let mut s = Stack::new(1024);
        let at: Vec<usize> = (0..40).map(|k| 8 + k * 20).collect();
        let rets: Vec<u64> = (0..40).map(|k| TEXT.start + k).collect();
        let want = s.chain(&at, &rets);
        let reads = Cell::new(0);
        let got = stale_chain::<16>(BASE..s.top(), s.reader(&reads), is_text);
        assert_eq!(got.records(), &want[..16]);
        assert!(got.truncated);
        assert!(!chain_of(&s, 0).truncated);
    }

    proptest! {
        /// Zeros below, garbage around: the first word used is the deepest
        /// nonzero one, and the chain is exactly the records, innermost
        /// first, whatever the frames hold between them.
        #[test]
        fn the_chain_is_found_among_garbage(
            frames in frames(),
            below in 0usize..200,
            fill in prop::collection::vec(garbage(), 61),
            locals in prop::collection::vec(0usize..40, 30),
        ) {
            let span: usize = frames.iter().map(|f| f.0).sum();
            let mut s = Stack::new(below + span + 8);
            // The deepest frame's own locals under its record.
            let deepest = below + 1;
            s.set(below, 0xa5a5_a5a5_a5a5_a5a5);
            let mut at = Vec::new();
            let mut i = deepest;
            for &(gap, _) in &frames {
                at.push(i);
                i += gap;
            }
            // Garbage in every frame between the records (locals), never
            // over a record.
            for (k, w) in at.windows(2).enumerate() {
                let room = w[1] - w[0] - 2;
                for j in 0..room.min(locals[k % locals.len()]) {
                    s.set(w[0] + 2 + j, fill[(k * 41 + j) % fill.len()]);
                }
            }
            let rets: Vec<u64> = frames.iter().map(|f| f.1).collect();
            let want = s.chain(&at, &rets);
            let reads = Cell::new(0);
            let first = first_used(BASE..s.top(), s.reader(&reads));
            prop_assert_eq!(first, s.addr(below));
            let got = chain_of(&s, below);
            prop_assert_eq!(got.records(), &want[..]);
            prop_assert!(!got.truncated);
        }

        /// After the deep excursion returned, shallower calls wrote their
        /// own frames over the top of it: the chain still starts at the
        /// deepest record and keeps every record that was not written
        /// over, innermost first; whatever it finds above them is still a
        /// chain of plausible, rising records inside the stack.
        #[test]
        fn a_chain_partly_overwritten_keeps_its_deep_records(
            frames in frames(),
            later in prop::collection::vec((2usize..40, TEXT), 1..8),
            cut_at in 3usize..30,
            fill in prop::collection::vec(garbage(), 61),
        ) {
            let span: usize = frames.iter().map(|f| f.0).sum();
            let later_span: usize = later.iter().map(|f| f.0).sum();
            let mut s = Stack::new(span + later_span + 8);
            let mut at = Vec::new();
            let mut i = 4;
            for &(gap, _) in &frames {
                at.push(i);
                i += gap;
            }
            let rets: Vec<u64> = frames.iter().map(|f| f.1).collect();
            let want = s.chain(&at, &rets);
            // The later calls' frames start above the `cut`-th record,
            // wiping what was there (garbage and records alike), and chain
            // up to the top.
            let keep = cut_at.min(at.len());
            let cut = at[keep - 1] + 2;
            for j in cut..s.words.len() {
                s.set(j, fill[j % fill.len()]);
            }
            let mut live = Vec::new();
            let mut j = cut + 1;
            for &(gap, _) in &later {
                if j + 2 > s.words.len() {
                    break;
                }
                live.push(j);
                j += gap;
            }
            let live_rets: Vec<u64> = later.iter().map(|f| f.1).collect();
            s.chain(&live, &live_rets[..live.len()]);
            let got = chain_of(&s, 0);
            let n = keep.min(got.records().len());
            if keep >= MIN_RECORDS {
                prop_assert!(got.records().len() >= keep);
                prop_assert_eq!(&got.records()[..n], &want[..n]);
            }
            for pair in got.records().windows(2) {
                prop_assert!(pair[1].at >= pair[0].at + 2 * WORD);
            }
            for r in got.records() {
                prop_assert!(is_text(r.ret));
                prop_assert!(r.at >= BASE && r.at + 2 * WORD <= s.top());
            }
        }

        /// However the stack is filled, neither reads outside it or off a
        /// word, the chain rises, and every record in it is plausible.
        #[test]
        fn any_stack_is_read_inside_and_gives_a_plausible_chain(
            words in prop::collection::vec(prop_oneof![Just(0u64), garbage(), (0usize..512).prop_map(|i| (BASE + i * WORD) as u64)], 0..256),
            from in 0usize..64,
        ) {
            let s = Stack { words };
            let start = BASE + from.min(s.words.len()) * WORD;
            let reads = Cell::new(0);
            let first = first_used(start..s.top(), s.reader(&reads));
            prop_assert!(first >= start && first <= s.top());
            prop_assert!(s.words[(start - BASE) / WORD..(first - BASE) / WORD].iter().all(|&w| w == 0));
            let got = stale_chain::<64>(start..s.top(), s.reader(&reads), is_text);
            prop_assert!(got.is_empty() || got.records().len() >= MIN_RECORDS.min(64));
            for pair in got.records().windows(2) {
                prop_assert!(pair[1].at >= pair[0].at + 2 * WORD);
                prop_assert_eq!(s.words[(pair[0].at - BASE) / WORD], pair[1].at as u64);
            }
            for r in got.records() {
                prop_assert!(is_text(r.ret) && r.at >= start);
            }
        }
    }
}
