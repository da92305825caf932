//! The cache against a plain stack of values: it returns only what it was
//! given, each thing once, newest first, and its counters add up.
use kcore::stack_cache::{CacheStats, StackCache};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Put,
    Take,
    Evict,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![3 => Just(Op::Put), 3 => Just(Op::Take), 1 => Just(Op::Evict)]
}

fn run<const N: usize>(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut cache: StackCache<u64, N> = StackCache::new();
    let mut model: Vec<u64> = Vec::new();
    let mut stats = CacheStats::default();
    let mut outside: Vec<u64> = Vec::new();
    let mut next = 0u64;
    for op in ops {
        match op {
            Op::Put => {
                // Each "stack" is unique, so a duplicate would show.
                next += 1;
                match cache.put(next) {
                    Ok(()) => {
                        prop_assert!(model.len() < N);
                        model.push(next);
                        stats.puts += 1;
                    }
                    Err(back) => {
                        prop_assert_eq!(
                            back,
                            next,
                            "a full cache returns the stack it was offered"
                        );
                        prop_assert_eq!(model.len(), N);
                        outside.push(back);
                        stats.overflows += 1;
                    }
                }
            }
            Op::Take => {
                let got = cache.take();
                prop_assert_eq!(got, model.pop());
                match got {
                    Some(s) => {
                        outside.push(s);
                        stats.hits += 1;
                    }
                    None => stats.misses += 1,
                }
            }
            Op::Evict => {
                let got = cache.evict();
                prop_assert_eq!(got, model.pop());
                outside.extend(got);
            }
        }
        prop_assert_eq!(cache.len(), model.len());
        prop_assert_eq!(cache.stats(), stats);
        prop_assert_eq!(cache.hit_rate().lookups, stats.hits + stats.misses);
    }
    // Conservation: everything put came out at most once or is still cached.
    outside.extend(std::iter::from_fn(|| cache.evict()));
    outside.sort_unstable();
    prop_assert_eq!(outside, (1..=next).collect::<Vec<_>>());
    Ok(())
}

proptest! {
    #[test]
    fn linux_sized_cache_matches_model(ops in prop::collection::vec(op(), 0..200)) {
        run::<2>(&ops)?;
    }

    #[test]
    fn other_sizes_match_model(ops in prop::collection::vec(op(), 0..200)) {
        run::<0>(&ops)?;
        run::<1>(&ops)?;
        run::<5>(&ops)?;
    }
}

/// The seed's measurement, in miniature: a fork-heavy loop where each new
/// task replaces one that just died. Freed at exit, every fork after the
/// first finds a cached stack; freed in bursts at the end of a grace period,
/// all but two of each burst overflow and most forks miss.
#[test]
fn rcu_deferred_freeing_starves_the_cache() {
    const FORKS: u64 = 1000;
    const GRACE_PERIOD: usize = 50;

    let mut immediate: StackCache<u64, 2> = StackCache::new();
    for task in 0..FORKS {
        let stack = immediate.take().unwrap_or(task);
        let _ = immediate.put(stack);
    }

    let mut deferred: StackCache<u64, 2> = StackCache::new();
    let mut waiting_for_rcu = Vec::new();
    for task in 0..FORKS {
        waiting_for_rcu.push(deferred.take().unwrap_or(task));
        if waiting_for_rcu.len() == GRACE_PERIOD {
            for stack in waiting_for_rcu.drain(..) {
                let _ = deferred.put(stack);
            }
        }
    }

    let fast = immediate.hit_rate().permille().unwrap();
    let slow = deferred.hit_rate().permille().unwrap();
    assert_eq!(fast, 999, "{}", immediate.hit_rate());
    assert!(slow <= 40, "{}", deferred.hit_rate());
    assert!(deferred.stats().overflows > deferred.stats().puts * 10);
}
