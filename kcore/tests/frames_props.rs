//! Random alloc/free sequences over random usable regions, against a model
//! that is just two sets: the frames declared usable and the frames handed
//! out. The bitmap spans several words and starts at an unaligned base, so
//! word edges and address-vs-index alignment are both exercised.
use kcore::frames::{bitmap_words_for, FrameBitmap, FrameCounters, FrameError, FRAME_SIZE};
use proptest::prelude::*;
use std::collections::BTreeSet;

const F: u64 = FRAME_SIZE;
const N: usize = 200;

#[derive(Clone, Debug)]
enum Op {
    Alloc,
    AllocContiguous {
        n: usize,
        align: usize,
    },
    Free(usize),
    FreeRun(usize),
    /// Free something that is not allocated: a free frame, a reserved one,
    /// one outside the bitmap, or a misaligned address.
    BadFree(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Alloc),
        3 => (1usize..=9, 0usize..=9).prop_map(|(n, align)| Op::AllocContiguous { n, align }),
        3 => any::<usize>().prop_map(Op::Free),
        2 => any::<usize>().prop_map(Op::FreeRun),
        // Mostly whole frames near the covered range, so every error occurs.
        2 => (0u64..(N as u64 + 16), prop_oneof![7 => Just(0u64), 1 => 1u64..F])
            .prop_map(|(frame, off)| Op::BadFree(frame * F + off)),
    ]
}

struct Model {
    base: u64,
    usable: BTreeSet<u64>,
    held: BTreeSet<u64>,
    singles: Vec<u64>,
    runs: Vec<(u64, usize)>,
}

impl Model {
    fn counters(&self) -> FrameCounters {
        FrameCounters {
            free_frames: self.usable.len() - self.held.len(),
            used_frames: self.held.len(),
            total_frames: self.usable.len(),
        }
    }

    fn is_free(&self, a: u64) -> bool {
        self.usable.contains(&a) && !self.held.contains(&a)
    }

    fn run_exists(&self, n: usize, align: usize) -> bool {
        (0..N as u64)
            .map(|i| self.base + i * F)
            .filter(|a| (a / F).is_multiple_of(align as u64))
            .any(|a| (0..n as u64).all(|k| self.is_free(a + k * F)))
    }

    fn take(&mut self, a: u64) -> Result<(), TestCaseError> {
        prop_assert!(self.usable.contains(&a), "{:#x} was never usable", a);
        prop_assert!(self.held.insert(a), "{:#x} handed out twice", a);
        Ok(())
    }
}

/// Usable regions in bytes, deliberately unaligned and spilling past both
/// ends of the covered range.
fn regions() -> impl Strategy<Value = Vec<(u64, u64)>> {
    prop::collection::vec((0u64..(N as u64 + 20) * F, 0u64..40 * F), 0..8)
        .prop_map(|v| v.into_iter().map(|(s, len)| (s, s + len)).collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_sequences_match_model(
        base_frames in 0u64..8,
        regions in regions(),
        ops in prop::collection::vec(op(), 1..150),
    ) {
        let base = base_frames * F;
        let mut storage = vec![0u64; bitmap_words_for(N)];
        let mut b = FrameBitmap::new(&mut storage, base, N);
        let mut m = Model { base, usable: BTreeSet::new(), held: BTreeSet::new(), singles: vec![], runs: vec![] };
        for &(s, e) in &regions {
            let before = m.usable.len();
            for i in 0..N as u64 {
                let a = base + i * F;
                if s <= a && a + F <= e {
                    m.usable.insert(a);
                }
            }
            prop_assert_eq!(b.add_free_range(s, e), m.usable.len() - before);
        }
        prop_assert_eq!(b.counters(), m.counters());

        for op in ops {
            match op {
                Op::Alloc => match b.alloc() {
                    Some(a) => {
                        m.take(a)?;
                        m.singles.push(a);
                    }
                    None => prop_assert_eq!(m.counters().free_frames, 0, "refused with frames free"),
                },
                Op::AllocContiguous { n, align } => match b.alloc_contiguous(n, align) {
                    Some(a) => {
                        prop_assert_eq!(a % (align.max(1) as u64 * F), 0, "misaligned run");
                        for k in 0..n as u64 {
                            m.take(a + k * F)?;
                        }
                        m.runs.push((a, n));
                    }
                    None => prop_assert!(!m.run_exists(n, align.max(1)), "refused a run that exists"),
                },
                Op::Free(i) if !m.singles.is_empty() => {
                    let a = m.singles.swap_remove(i % m.singles.len());
                    prop_assert_eq!(b.free(a), Ok(()));
                    m.held.remove(&a);
                }
                Op::FreeRun(i) if !m.runs.is_empty() => {
                    let (a, n) = m.runs.swap_remove(i % m.runs.len());
                    prop_assert_eq!(b.free_contiguous(a, n), Ok(()));
                    for k in 0..n as u64 {
                        m.held.remove(&(a + k * F));
                    }
                }
                Op::Free(_) | Op::FreeRun(_) => {}
                Op::BadFree(addr) => {
                    let expected = if !addr.is_multiple_of(F) {
                        Some(FrameError::Misaligned)
                    } else if addr < base || addr >= base + N as u64 * F {
                        Some(FrameError::OutOfRange)
                    } else if !m.usable.contains(&addr) {
                        Some(FrameError::NotUsable)
                    } else if !m.held.contains(&addr) {
                        Some(FrameError::AlreadyFree)
                    } else {
                        None
                    };
                    if let Some(e) = expected {
                        prop_assert_eq!(b.free(addr), Err(e));
                    }
                }
            }
            prop_assert_eq!(b.counters(), m.counters());
        }

        // Free everything; then every usable frame, and only those, comes back.
        for a in std::mem::take(&mut m.singles) {
            prop_assert_eq!(b.free(a), Ok(()));
        }
        for (a, n) in std::mem::take(&mut m.runs) {
            prop_assert_eq!(b.free_contiguous(a, n), Ok(()));
        }
        let total = m.usable.len();
        prop_assert_eq!(b.counters(), FrameCounters { free_frames: total, used_frames: 0, total_frames: total });
        let all: BTreeSet<u64> = std::iter::from_fn(|| b.alloc()).collect();
        prop_assert_eq!(all, m.usable);
    }

    #[test]
    fn contiguous_alignment_is_physical(base_frames in 0u64..64, n in 1usize..8, align_log in 0u32..5) {
        let align = 1usize << align_log;
        let base = base_frames * F;
        let mut storage = vec![0u64; bitmap_words_for(N)];
        let mut b = FrameBitmap::new(&mut storage, base, N);
        b.add_free_range(0, u64::MAX);
        let a = b.alloc_contiguous(n, align).expect("an empty bitmap has room");
        prop_assert_eq!(a % (align as u64 * F), 0);
        prop_assert!(a >= base && a + n as u64 * F <= base + N as u64 * F);
        // The first aligned address at or above base: nothing lower would do.
        let first = base.div_ceil(align as u64 * F) * align as u64 * F;
        prop_assert_eq!(a, first);
    }
}
