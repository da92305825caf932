//! The per-CPU cache of free kernel stacks (Linux: NR_CACHED_STACKS = 2).
//!
//! vmalloc is slow: allocating and mapping a stack, then unmapping it and
//! shooting down TLBs at exit, cost 1.5 µs per fork in the original
//! CONFIG_VMAP_STACK series. Keeping the last couple of freed stacks around
//! turned that into a gain, but only because a stack now comes back the
//! moment its task dies. With RCU-deferred freeing they come back in bursts
//! at the end of a grace period, overflow a cache this small, and the hit
//! rate collapses; the counters here exist to show exactly that.
//!
//! The cache only stores and returns: it never hands out a stack it was not
//! given, and never touches the contents. Clearing a reused stack (stale
//! pointers from the dead task) is the caller's job.

use core::fmt;

pub struct StackCache<T, const N: usize> {
    /// `slots[..len]` are full; the newest is last, as it is the most
    /// likely to still be cache-hot.
    slots: [Option<T>; N],
    len: usize,
    stats: CacheStats,
}

/// Everything the cache has seen; `take` counts as a hit or a miss, `put`
/// as a put or (when full) an overflow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub puts: u64,
    pub overflows: u64,
}

impl CacheStats {
    pub fn lookups(&self) -> u64 {
        self.hits + self.misses
    }

    pub fn hit_rate(&self) -> HitRate {
        HitRate {
            hits: self.hits,
            lookups: self.lookups(),
        }
    }
}

/// Hits out of lookups, kept as integers so the guest needs no floats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HitRate {
    pub hits: u64,
    pub lookups: u64,
}

impl HitRate {
    /// Hits per thousand lookups, rounded down; `None` before any lookup.
    pub fn permille(&self) -> Option<u64> {
        (self.lookups != 0).then(|| (self.hits as u128 * 1000 / self.lookups as u128) as u64)
    }
}

/// `hits/lookups (xx.x%)`.
impl fmt::Display for HitRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.hits, self.lookups)?;
        match self.permille() {
            Some(p) => write!(f, " ({}.{}%)", p / 10, p % 10),
            None => f.write_str(" (no lookups)"),
        }
    }
}

impl<T, const N: usize> StackCache<T, N> {
    /// Empty; `const` so per-CPU caches can be statics.
    pub const fn new() -> Self {
        StackCache {
            slots: [const { None }; N],
            len: 0,
            stats: CacheStats {
                hits: 0,
                misses: 0,
                puts: 0,
                overflows: 0,
            },
        }
    }

    /// Keep `stack` for the next `take`. A full cache gives it back, and the
    /// caller frees it for real.
    pub fn put(&mut self, stack: T) -> Result<(), T> {
        if self.len == N {
            self.stats.overflows += 1;
            return Err(stack);
        }
        self.slots[self.len] = Some(stack);
        self.len += 1;
        self.stats.puts += 1;
        Ok(())
    }

    /// The most recently put stack, or `None` (a miss: allocate a new one).
    pub fn take(&mut self) -> Option<T> {
        let stack = self.pop();
        match stack {
            Some(_) => self.stats.hits += 1,
            None => self.stats.misses += 1,
        }
        stack
    }

    /// Like `take`, but not counted: for draining the cache (a strategy
    /// change, a leak check), which is not a lookup by a new task.
    pub fn evict(&mut self) -> Option<T> {
        self.pop()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// The stack the next `take` would hand out, without taking it.
    pub fn newest(&self) -> Option<&T> {
        self.len.checked_sub(1).and_then(|i| self.slots[i].as_ref())
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_full(&self) -> bool {
        self.len == N
    }

    pub const fn capacity(&self) -> usize {
        N
    }

    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    pub fn hits(&self) -> u64 {
        self.stats.hits
    }

    pub fn misses(&self) -> u64 {
        self.stats.misses
    }

    pub fn hit_rate(&self) -> HitRate {
        self.stats.hit_rate()
    }

    /// Start measuring afresh (per benchmark run); cached stacks stay.
    pub fn reset_stats(&mut self) {
        self.stats = CacheStats::default();
    }

    fn pop(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        self.slots[self.len].take()
    }
}

impl<T, const N: usize> Default for StackCache<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T, const N: usize> fmt::Debug for StackCache<T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StackCache")
            .field("len", &self.len)
            .field("capacity", &N)
            .field("stats", &self.stats)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_slots_like_linux() {
        let mut c: StackCache<u32, 2> = StackCache::new();
        assert_eq!(c.take(), None);
        assert!(c.is_empty() && !c.is_full());
        assert_eq!(c.capacity(), 2);
        assert_eq!(c.put(1), Ok(()));
        assert!(!c.is_empty() && !c.is_full(), "one of two slots");
        assert_eq!(c.len(), 1);
        assert_eq!(c.put(2), Ok(()));
        assert!(c.is_full());
        assert_eq!(c.len(), 2);
        assert_eq!(c.put(3), Err(3), "full: the caller frees it");
        assert_eq!(c.newest(), Some(&2), "what take would hand out");
        assert_eq!(c.take(), Some(2), "newest first");
        assert_eq!(c.take(), Some(1));
        assert_eq!(c.take(), None);
        assert_eq!(
            c.stats(),
            CacheStats {
                hits: 2,
                misses: 2,
                puts: 2,
                overflows: 1
            }
        );
        assert_eq!((c.hits(), c.misses()), (2, 2));
        assert_eq!(c.hit_rate().permille(), Some(500));
        assert_eq!(c.hit_rate().to_string(), "2/4 (50.0%)");
    }

    #[test]
    fn a_reset_starts_the_count_afresh_and_keeps_the_stacks() {
        let mut c: StackCache<u32, 2> = StackCache::new();
        c.put(1).unwrap();
        assert_eq!(c.take(), Some(1));
        c.put(2).unwrap();
        c.reset_stats();
        assert_eq!(c.stats(), CacheStats::default());
        assert_eq!(c.take(), Some(2), "the cached stack stays");
        assert_eq!(c.stats().hits, 1);
        assert_eq!(
            format!("{c:?}"),
            "StackCache { len: 0, capacity: 2, stats: CacheStats { hits: 1, misses: 0, puts: 0, overflows: 0 } }"
        );
    }

    #[test]
    fn evict_is_not_a_lookup() {
        let mut c: StackCache<u32, 2> = StackCache::default();
        c.put(1).unwrap();
        assert_eq!(c.evict(), Some(1));
        assert_eq!(c.evict(), None);
        assert_eq!(c.stats().lookups(), 0);
        assert_eq!(c.hit_rate().permille(), None);
        assert_eq!(c.hit_rate().to_string(), "0/0 (no lookups)");
    }

    #[test]
    fn zero_capacity_always_misses() {
        let mut c: StackCache<u32, 0> = StackCache::new();
        assert_eq!(c.put(1), Err(1));
        assert_eq!(c.take(), None);
        assert!(c.is_full() && c.is_empty());
    }

    #[test]
    fn usable_as_a_static() {
        static CACHE: std::sync::Mutex<StackCache<String, 2>> =
            std::sync::Mutex::new(StackCache::new());
        CACHE.lock().unwrap().put("stack".into()).unwrap();
        assert_eq!(CACHE.lock().unwrap().take().as_deref(), Some("stack"));
    }

    #[test]
    fn permille_rounds_down_and_never_overflows() {
        let r = HitRate {
            hits: 2,
            lookups: 3,
        };
        assert_eq!(r.permille(), Some(666));
        assert_eq!(r.to_string(), "2/3 (66.6%)");
        let big = HitRate {
            hits: u64::MAX,
            lookups: u64::MAX,
        };
        assert_eq!(big.permille(), Some(1000));
    }
}
