//! `refcount_t`: a reference count that saturates instead of wrapping.
//!
//! A plain atomic counter turns a missing `get` into a use after free and a
//! leaked `get` (repeated 2^32 times) into a wrap to zero and, again, a use
//! after free. Linux's `refcount_t` (include/linux/refcount.h) trades both
//! for a leak: on overflow, underflow or an increment from zero the counter
//! is pinned at `REFCOUNT_SATURATED` and stays there, so the object is never
//! freed, and a warning says what happened.
//!
//! kcore prints nothing, so every such event is *returned* as a
//! [`RefcountEvent`] for the guest to report. One deliberate difference:
//! Linux does `fetch_add` and repairs the value afterwards (cheap, and the
//! saturation range is wide enough to absorb the races); here every update
//! is one compare-and-swap, so an out-of-range value is never visible, not
//! even briefly, and the result of each call is exact.

use core::fmt;
use core::sync::atomic::{fence, AtomicU32, Ordering};

/// Linux's saturation value, `INT_MIN / 2`: far from both 0 and the wrap,
/// so that racing increments and decrements around it stay negative.
pub const REFCOUNT_SATURATED: u32 = 0xc000_0000;

/// The largest real count (`INT_MAX`); one more saturates.
pub const REFCOUNT_MAX: u32 = i32::MAX as u32;

/// Something a caller did wrong, contained by saturating the counter.
///
/// Whenever a call returns one, the counter is now [`REFCOUNT_SATURATED`]:
/// the object is leaked, never freed, so carrying on is memory safe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefcountEvent {
    /// `inc` on a zero count: someone is using an object whose last
    /// reference is gone (its free may already be under way). Linux
    /// saturates here rather than resurrecting it; so do we.
    AddOnZero,
    /// The count overflowed, or was already saturated: leaked for good.
    /// (Linux reports a decrement of a saturated count as an underflow; we
    /// can tell the two apart, so we say which it was.)
    Saturated,
    /// A decrement of a zero count: one `put` too many.
    Underflow,
}

impl RefcountEvent {
    /// Linux's wording (lib/refcount.c), so the guest's reports read the same.
    pub fn message(&self) -> &'static str {
        match self {
            RefcountEvent::AddOnZero => "refcount_t: addition on 0; use-after-free.",
            RefcountEvent::Saturated => "refcount_t: saturated; leaking memory.",
            RefcountEvent::Underflow => "refcount_t: underflow; use-after-free.",
        }
    }
}

impl fmt::Display for RefcountEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

/// A `refcount_t`. `const fn new`, so it can live in a `static` or in any
/// struct; all methods take `&self` and are safe from several CPUs at once.
pub struct Refcount {
    refs: AtomicU32,
}

/// Anything above [`REFCOUNT_MAX`] counts as saturated (only
/// `REFCOUNT_SATURATED` itself is ever stored).
const fn saturated(v: u32) -> bool {
    v > REFCOUNT_MAX
}

// The three transitions as pure functions of the old value: (new value,
// result). Kept apart from the atomics so they read like the spec.

fn step_inc(old: u32) -> (u32, Result<(), RefcountEvent>) {
    match old {
        0 => (REFCOUNT_SATURATED, Err(RefcountEvent::AddOnZero)),
        // Covers `REFCOUNT_MAX` (the overflow itself) and already saturated.
        REFCOUNT_MAX.. => (REFCOUNT_SATURATED, Err(RefcountEvent::Saturated)),
        n => (n + 1, Ok(())),
    }
}

fn step_inc_not_zero(old: u32) -> (u32, Result<bool, RefcountEvent>) {
    match old {
        0 => (0, Ok(false)),
        REFCOUNT_MAX.. => (REFCOUNT_SATURATED, Err(RefcountEvent::Saturated)),
        n => (n + 1, Ok(true)),
    }
}

fn step_dec(old: u32) -> (u32, Result<bool, RefcountEvent>) {
    match old {
        0 => (REFCOUNT_SATURATED, Err(RefcountEvent::Underflow)),
        1 => (0, Ok(true)),
        n if saturated(n) => (REFCOUNT_SATURATED, Err(RefcountEvent::Saturated)),
        n => (n - 1, Ok(false)),
    }
}

impl Refcount {
    /// A count of `n`; `n > REFCOUNT_MAX` starts saturated.
    pub const fn new(n: u32) -> Self {
        Refcount {
            refs: AtomicU32::new(if saturated(n) { REFCOUNT_SATURATED } else { n }),
        }
    }

    /// `refcount_read`: a snapshot, stale as soon as it is returned.
    pub fn get(&self) -> u32 {
        self.refs.load(Ordering::Relaxed)
    }

    pub fn is_saturated(&self) -> bool {
        saturated(self.get())
    }

    /// `refcount_set`: for (re)initialising an object nobody else can see.
    pub fn set(&self, n: u32) {
        let n = if saturated(n) { REFCOUNT_SATURATED } else { n };
        self.refs.store(n, Ordering::Relaxed);
    }

    /// `refcount_inc`: take another reference; the caller must already hold
    /// one. From zero this is a use after free: reported as `AddOnZero`, and
    /// the count saturates (as in Linux) so that whoever is freeing the
    /// object has a count that can never again reach zero through us.
    pub fn inc(&self) -> Result<(), RefcountEvent> {
        // Relaxed, as in Linux: the caller's own reference already orders
        // its accesses to the object.
        self.update(Ordering::Relaxed, step_inc)
    }

    /// `refcount_inc_not_zero`: the RCU reader's way in. `Ok(false)` if the
    /// object is already on its way out (do not touch it beyond the RCU
    /// read side); `Ok(true)` if a reference was taken. `Err(Saturated)`
    /// means the count was (or just became) saturated: the caller may use
    /// the object, which is now leaked and so never freed.
    pub fn inc_not_zero(&self) -> Result<bool, RefcountEvent> {
        // Linux relies on the control dependency; Rust's model has no such
        // thing, so ask for Acquire (free on x86).
        self.update(Ordering::Acquire, step_inc_not_zero)
    }

    /// `refcount_dec_and_test`: drop a reference; `Ok(true)` when it was the
    /// last, and the caller now frees the object. A decrement of zero is
    /// reported as `Underflow` and saturates; a saturated count stays put.
    /// Neither ever returns `Ok(true)`, so nobody frees twice.
    pub fn dec_and_test(&self) -> Result<bool, RefcountEvent> {
        // Release so this CPU's accesses to the object happen before the
        // free; the Acquire fence on the last reference makes every other
        // CPU's accesses happen before it too.
        let r = self.update(Ordering::Release, step_dec);
        if r == Ok(true) {
            fence(Ordering::Acquire);
        }
        r
    }

    /// One CAS loop for every transition; a step that leaves the value as
    /// it is (zero for `inc_not_zero`, a saturated count) does not write.
    fn update<R>(&self, success: Ordering, step: fn(u32) -> (u32, R)) -> R {
        let old = match self.refs.fetch_update(success, Ordering::Relaxed, |old| {
            let (new, _) = step(old);
            (new != old).then_some(new)
        }) {
            Ok(old) | Err(old) => old,
        };
        step(old).1
    }
}

impl fmt::Debug for Refcount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.get() {
            v if saturated(v) => f.write_str("Refcount(saturated)"),
            v => write!(f, "Refcount({v})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RefcountEvent::*;
    use super::*;

    #[test]
    fn counts_and_reports_the_last_reference() {
        let r = Refcount::new(1);
        assert_eq!(r.inc(), Ok(()));
        assert_eq!(r.get(), 2);
        assert_eq!(r.dec_and_test(), Ok(false));
        assert_eq!(r.dec_and_test(), Ok(true));
        assert_eq!(r.get(), 0);
    }

    #[test]
    fn inc_from_zero_saturates_and_does_not_resurrect() {
        let r = Refcount::new(0);
        assert_eq!(r.inc(), Err(AddOnZero));
        assert_eq!(r.get(), REFCOUNT_SATURATED);
        // The freer's view: the object can never reach zero again.
        assert_eq!(r.dec_and_test(), Err(Saturated));
        assert!(r.is_saturated());
    }

    #[test]
    fn inc_not_zero_refuses_a_dying_object() {
        let r = Refcount::new(0);
        assert_eq!(r.inc_not_zero(), Ok(false));
        assert_eq!(r.get(), 0, "a refused get leaves zero alone");
        let r = Refcount::new(3);
        assert_eq!(r.inc_not_zero(), Ok(true));
        assert_eq!(r.get(), 4);
    }

    #[test]
    fn underflow_saturates_instead_of_wrapping() {
        let r = Refcount::new(0);
        assert_eq!(r.dec_and_test(), Err(Underflow));
        assert_eq!(r.get(), REFCOUNT_SATURATED);
        assert_eq!(r.dec_and_test(), Err(Saturated));
        assert_eq!(r.inc_not_zero(), Err(Saturated));
    }

    #[test]
    fn overflow_saturates_and_sticks() {
        for op in [Refcount::inc, |r: &Refcount| r.inc_not_zero().map(drop)] {
            let r = Refcount::new(REFCOUNT_MAX - 1);
            assert_eq!(op(&r), Ok(()));
            assert_eq!(r.get(), REFCOUNT_MAX);
            assert_eq!(op(&r), Err(Saturated));
            assert_eq!(r.get(), REFCOUNT_SATURATED);
            for _ in 0..3 {
                assert_eq!(r.inc(), Err(Saturated));
                assert_eq!(r.inc_not_zero(), Err(Saturated));
                assert_eq!(r.dec_and_test(), Err(Saturated));
                assert_eq!(r.get(), REFCOUNT_SATURATED);
            }
        }
    }

    #[test]
    fn new_and_set_clamp_to_saturated() {
        assert!(Refcount::new(REFCOUNT_MAX + 1).is_saturated());
        assert!(!Refcount::new(REFCOUNT_MAX).is_saturated());
        let r = Refcount::new(1);
        r.set(u32::MAX);
        assert_eq!(r.get(), REFCOUNT_SATURATED);
        r.set(5);
        assert_eq!(r.get(), 5);
        assert_eq!(format!("{r:?}"), "Refcount(5)");
        r.set(u32::MAX);
        assert_eq!(format!("{r:?}"), "Refcount(saturated)");
    }

    #[test]
    fn messages_are_linux_words() {
        assert_eq!(
            Underflow.to_string(),
            "refcount_t: underflow; use-after-free."
        );
        assert!(AddOnZero.message().contains("addition on 0"));
        assert!(Saturated.message().contains("leaking memory"));
    }

    #[test]
    fn usable_as_a_static() {
        static R: Refcount = Refcount::new(1);
        assert_eq!(R.inc(), Ok(()));
        assert_eq!(R.dec_and_test(), Ok(false));
    }

    #[test]
    fn concurrent_balanced_gets_and_puts_free_exactly_once() {
        use std::sync::atomic::AtomicUsize;
        let r = Refcount::new(1);
        let frees = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..20_000 {
                        assert_eq!(r.inc_not_zero(), Ok(true));
                        assert_eq!(r.dec_and_test(), Ok(false));
                    }
                });
            }
        });
        assert_eq!(r.get(), 1);
        if r.dec_and_test() == Ok(true) {
            frees.fetch_add(1, Ordering::Relaxed);
        }
        assert_eq!(frees.into_inner(), 1);
    }
}
