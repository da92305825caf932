//! Generated maps that keep every promise must be reported clean, and
//! breaking exactly one promise in one entry must always be reported, at
//! that entry.
use kcore::memmap::{check, kind, Entry};
use proptest::prelude::*;

const PAGE: u64 = 4096;

/// Sorted, non-overlapping, starting at or above 0x1000. Strict entries are
/// page aligned; the others get sub-page offsets inside their slot, as
/// firmware regions do (e.g. the EBDA at 0x9fc00).
fn clean_map() -> impl Strategy<Value = Vec<Entry>> {
    prop::collection::vec((0u64..4, 1u64..64, 0u64..8, 0u64..PAGE, 0u64..PAGE), 1..24).prop_map(
        |slots| {
            let mut cursor = PAGE;
            slots
                .into_iter()
                .map(|(gap, pages, k, lo, hi)| {
                    let start = cursor + gap * PAGE;
                    let end = start + pages * PAGE;
                    cursor = end;
                    if is_strict(k) {
                        Entry::new(start, end - start, k)
                    } else {
                        let (s, e) = (start + lo / 2, end - hi / 2);
                        Entry::new(s, e - s, k)
                    }
                })
                .collect()
        },
    )
}

/// PROTOCOL.md's list, written out again so that a wrong `kind::is_strict`
/// cannot make the generator agree with it.
fn is_strict(k: u64) -> bool {
    k == 0 || k == 5
}

fn sums(map: &[Entry]) -> (u64, u64) {
    let sum = |k| map.iter().filter(|e| e.kind == k).map(|e| e.length).sum();
    (sum(kind::USABLE), sum(kind::BOOTLOADER_RECLAIMABLE))
}

fn strict_index(map: &[Entry], pick: usize) -> Option<usize> {
    let strict: Vec<_> = (0..map.len()).filter(|&i| is_strict(map[i].kind)).collect();
    (!strict.is_empty()).then(|| strict[pick % strict.len()])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn clean_maps_are_clean(map in clean_map()) {
        let r = check(map.iter().copied());
        prop_assert!(r.is_clean(), "{:?}", r);
        prop_assert_eq!((r.usable_bytes, r.reclaimable_bytes), sums(&map));
    }

    #[test]
    fn overlaps_with_a_strict_entry_are_found(
        map in clean_map(),
        pick: usize,
        intruders in prop::collection::vec((any::<u64>(), 1u64..(8 * PAGE), 0u64..8), 1..4),
    ) {
        let Some(i) = strict_index(&map, pick) else { return Ok(()) };
        let victim = map[i];
        // Inserted right after their victim, in base order, they start below
        // every later base: the map stays sorted and only overlaps are wrong.
        // With several, the victim overlaps entries that are not its neighbour.
        let mut intruders: Vec<_> = intruders
            .into_iter()
            .map(|(at, len, k)| Entry::new(victim.base + at % victim.length, len, k))
            .collect();
        intruders.sort_by_key(|e| e.base);
        let count = intruders.len();
        let mut map = map;
        map.splice(i + 1..i + 1, intruders);
        let r = check(map.iter().copied());
        prop_assert!(r.sorted);
        for m in 1..=count {
            prop_assert!(r.overlaps_with_strict.contains(&(i, i + m)), "({}, {}) missing: {:?}", i, i + m, r);
        }
    }

    #[test]
    fn a_misaligned_strict_entry_is_found(map in clean_map(), pick: usize, d in 1u64..PAGE, move_base: bool) {
        let Some(i) = strict_index(&map, pick) else { return Ok(()) };
        let mut map = map;
        // Shrinking from either end keeps it sorted and inside its slot.
        if move_base {
            map[i].base += d;
        }
        map[i].length -= d;
        let r = check(map.iter().copied());
        prop_assert_eq!(&r.misaligned_strict, &vec![i]);
        prop_assert!(r.sorted && r.overlaps_with_strict.is_empty() && r.usable_below_4k.is_empty(), "{:?}", r);
    }

    #[test]
    fn usable_memory_below_4k_is_found(map in clean_map(), len in 1u64..=PAGE) {
        let mut map = map;
        map.insert(0, Entry::new(0, len.min(map[0].base), kind::USABLE));
        let r = check(map.iter().copied());
        prop_assert_eq!(&r.usable_below_4k, &vec![0]);
        prop_assert!(r.sorted && r.overlaps_with_strict.is_empty(), "{:?}", r);
    }

    #[test]
    fn an_out_of_order_entry_is_found(map in clean_map(), pick: usize) {
        prop_assume!(map.len() >= 2);
        let i = pick % (map.len() - 1);
        let mut map = map;
        map.swap(i, i + 1);
        let r = check(map.iter().copied());
        prop_assert!(!r.sorted);
        prop_assert!(r.overlaps_with_strict.is_empty() && r.misaligned_strict.is_empty(), "{:?}", r);
    }

    #[test]
    fn arbitrary_input_never_panics(raw in prop::collection::vec((any::<u64>(), any::<u64>(), any::<u64>()), 0..16)) {
        let r = check(raw.iter().copied());
        // Every reported overlap really is one, and involves a strict entry.
        for &(i, j) in &r.overlaps_with_strict {
            let (a, b) = (Entry::from(raw[i]), Entry::from(raw[j]));
            prop_assert!(i < j && a.base < b.end() && b.base < a.end());
            prop_assert!(is_strict(a.kind) || is_strict(b.kind));
        }
    }
}
