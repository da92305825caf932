//! `task_struct::rcu_users`: a refcount that becomes an RCU callback head.
//!
//! Linux (v5.4, "tasks: Add a count of task RCU users") puts `refcount_t
//! rcu_users` in a union with the task's `struct rcu_head`, so the count
//! costs no space: while it is non-zero the word is a count; the
//! `put_task_struct_rcu_user` that takes it to zero hands the same storage
//! to `call_rcu(&task->rcu, delayed_put_task_struct)`. Paul McKenney's
//! review names the danger: the union switches meaning "instantly", and
//! once `call_rcu` has written the head the word is no longer zero, so an
//! `atomic_add_unless(.., 0)` reader would happily "take a reference" on a
//! callback head.
//!
//! [`RcuUsers`] keeps both meanings in one atomic word and makes the switch
//! a state, not a convention:
//!
//! - bit 31 clear, value 1..=[`RCU_USERS_MAX`]: `Counting(n)`;
//!   [`RCU_USERS_SATURATED`]: leaked for good, as `refcount_t` does it;
//! - bit 31 set: handed off; the low 31 bits are the callback head, which
//!   only the one [`RcuHandoff`] token can read or write.
//!
//! The decrement from 1 goes straight to "handed off" in one compare-and-
//! swap (there is no zero state to race on), and returns the token; no
//! other call can produce one. After it, [`RcuUsers::try_get`] fails and
//! [`RcuUsers::put`] reports an underflow, whatever the head holds.

use core::fmt;
use core::sync::atomic::{fence, AtomicU32, Ordering};

use crate::refcount::RefcountEvent;

const HANDED_OFF: u32 = 1 << 31;

/// The bits of the word the callback head may use once handed off.
pub const HEAD_MASK: u32 = !HANDED_OFF;

/// Where an overflowing count sticks (bit 30; the count never gets near).
pub const RCU_USERS_SATURATED: u32 = 1 << 30;

/// The largest real count; one more saturates.
pub const RCU_USERS_MAX: u32 = RCU_USERS_SATURATED - 1;

/// Linux v5.4 kernel/fork.c, `dup_task_struct`: "One for the user space
/// visible state that goes away when reaped. One for the scheduler." The
/// first is dropped by `release_task` (the parent reaps), the second by
/// `finish_task_switch` once the dead task has been switched away from.
/// (The seed's v2 1/4 started at 1 with `usage` at 2; the series moved the
/// scheduler's reference from `usage` to `rcu_users` in a later patch.)
pub const RCU_USERS_INIT: u32 = 2;

/// What the word means now: a snapshot, for reports and assertions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RcuUsersState {
    Counting(u32),
    Saturated,
    /// The count reached zero and the storage belongs to the RCU callback.
    HandedOff,
}

/// The refcount half of the `rcu_users`/`rcu` union.
pub struct RcuUsers {
    word: AtomicU32,
}

/// Proof that this caller dropped the last `rcu_users` reference, and the
/// only key to the callback head. Not `Clone`: there is exactly one, ever.
/// The caller queues the RCU callback (`delayed_put_task_struct`) with it.
#[must_use = "the last rcu_users reference is gone: queue the RCU callback"]
pub struct RcuHandoff<'a> {
    users: &'a RcuUsers,
}

fn state_of(v: u32) -> RcuUsersState {
    match v {
        // 0 is never stored (1 goes straight to handed off); treat it as
        // dead rather than as a count anyone may take.
        0 => RcuUsersState::HandedOff,
        v if v & HANDED_OFF != 0 => RcuUsersState::HandedOff,
        RCU_USERS_SATURATED.. => RcuUsersState::Saturated,
        n => RcuUsersState::Counting(n),
    }
}

// Transitions as pure functions: (new word, result). `None` means "do not
// write", which matters: after the handoff the head belongs to the token
// holder, and no try_get/put may store over it.

type Step = (Option<u32>, Result<bool, RefcountEvent>);

fn step_get(v: u32) -> Step {
    match state_of(v) {
        RcuUsersState::HandedOff => (None, Ok(false)),
        RcuUsersState::Saturated => (None, Err(RefcountEvent::Saturated)),
        RcuUsersState::Counting(RCU_USERS_MAX) => {
            (Some(RCU_USERS_SATURATED), Err(RefcountEvent::Saturated))
        }
        RcuUsersState::Counting(n) => (Some(n + 1), Ok(true)),
    }
}

/// `Ok(true)`: this put was the last and performed the handoff.
fn step_put(v: u32) -> Step {
    match state_of(v) {
        RcuUsersState::HandedOff => (None, Err(RefcountEvent::Underflow)),
        RcuUsersState::Saturated => (None, Err(RefcountEvent::Saturated)),
        RcuUsersState::Counting(1) => (Some(HANDED_OFF), Ok(true)),
        RcuUsersState::Counting(n) => (Some(n - 1), Ok(false)),
    }
}

impl RcuUsers {
    /// A new task's count, [`RCU_USERS_INIT`].
    pub const fn new() -> Self {
        RcuUsers {
            word: AtomicU32::new(RCU_USERS_INIT),
        }
    }

    /// A count of `n` references; `None` unless `1 <= n <= RCU_USERS_MAX`
    /// (a zero count would be an object already handed off, with no token).
    pub const fn with_count(n: u32) -> Option<Self> {
        if n == 0 || n > RCU_USERS_MAX {
            return None;
        }
        Some(RcuUsers {
            word: AtomicU32::new(n),
        })
    }

    pub fn state(&self) -> RcuUsersState {
        state_of(self.word.load(Ordering::Relaxed))
    }

    pub fn is_handed_off(&self) -> bool {
        self.state() == RcuUsersState::HandedOff
    }

    /// Take a reference if the count is still live (inc-not-zero): what an
    /// RCU reader that found the task does. `Ok(false)` once handed off,
    /// forever, whatever the head holds. `Err(Saturated)`: the reference is
    /// held, and the task leaked (never freed).
    pub fn try_get(&self) -> Result<bool, RefcountEvent> {
        self.update(Ordering::Acquire, step_get)
    }

    /// `put_task_struct_rcu_user`: drop a reference. `Ok(Some(token))` for
    /// the last one; queue the RCU callback with the token. A put after the
    /// handoff is `Err(Underflow)` and changes nothing (the head is safe);
    /// a saturated count stays saturated and never hands off.
    pub fn put(&self) -> Result<Option<RcuHandoff<'_>>, RefcountEvent> {
        // As refcount_dec_and_test: Release, then Acquire when last.
        let last = self.update(Ordering::Release, step_put)?;
        if !last {
            return Ok(None);
        }
        fence(Ordering::Acquire);
        Ok(Some(RcuHandoff { users: self }))
    }

    fn update(&self, success: Ordering, step: fn(u32) -> Step) -> Result<bool, RefcountEvent> {
        let old = match self
            .word
            .fetch_update(success, Ordering::Relaxed, |v| step(v).0)
        {
            Ok(v) | Err(v) => v,
        };
        step(old).1
    }
}

impl Default for RcuUsers {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for RcuUsers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The head is not ours to show.
        write!(f, "RcuUsers({:?})", self.state())
    }
}

impl<'a> RcuHandoff<'a> {
    /// The callback head's bits (31 of them); zero right after the handoff.
    pub fn head(&self) -> u32 {
        self.users.word.load(Ordering::Relaxed) & HEAD_MASK
    }

    /// Store the callback head (say, a link in the RCU callback list).
    /// `Err(head)` if it does not fit in [`HEAD_MASK`]: bit 31 is what keeps
    /// the word dead.
    pub fn set_head(&mut self, head: u32) -> Result<(), u32> {
        if head & !HEAD_MASK != 0 {
            return Err(head);
        }
        // Only this token writes a handed-off word; every other path reads
        // it and leaves it alone, so a plain store is enough.
        self.users.word.store(HANDED_OFF | head, Ordering::Relaxed);
        Ok(())
    }

    /// The count this token came from (to find the task around it).
    pub fn users(&self) -> &'a RcuUsers {
        self.users
    }
}

impl fmt::Debug for RcuHandoff<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RcuHandoff(head {:#x})", self.head())
    }
}

#[cfg(test)]
mod tests {
    use super::RcuUsersState::{Counting, HandedOff};
    use super::*;
    use RefcountEvent::{Saturated, Underflow};

    #[test]
    fn starts_at_two_and_the_second_put_hands_off() {
        let u = RcuUsers::new();
        assert_eq!(u.state(), Counting(2));
        assert!(!u.is_handed_off());
        assert!(matches!(u.put(), Ok(None)), "release_task: reaped");
        assert!(!u.is_handed_off(), "one reference is left");
        let h = u.put().unwrap().expect("finish_task_switch: last");
        assert_eq!(h.head(), 0);
        assert!(u.is_handed_off());
    }

    #[test]
    fn no_get_and_no_second_handoff_after_the_switch() {
        let u = RcuUsers::with_count(1).unwrap();
        let mut h = u.put().unwrap().unwrap();
        // The RCU callback machinery writes the head: the word is no longer
        // "zero", which is exactly what would fool an add-unless-zero.
        for head in [1, 2, RCU_USERS_MAX, HEAD_MASK] {
            h.set_head(head).unwrap();
            assert_eq!(h.head(), head);
            assert_eq!(u.try_get(), Ok(false));
            assert_eq!(u.put().err(), Some(Underflow));
            assert_eq!(h.head(), head, "a stray put does not touch the head");
            assert_eq!(u.state(), HandedOff);
        }
    }

    #[test]
    fn head_cannot_clear_the_dead_bit() {
        let u = RcuUsers::with_count(1).unwrap();
        let mut h = u.put().unwrap().unwrap();
        assert_eq!(h.set_head(HANDED_OFF | 5), Err(HANDED_OFF | 5));
        assert!(u.is_handed_off());
        assert!(std::ptr::eq(h.users(), &u));
        assert_eq!(format!("{h:?}"), "RcuHandoff(head 0x0)");
    }

    #[test]
    fn try_get_while_counting() {
        let u = RcuUsers::new();
        assert_eq!(u.try_get(), Ok(true));
        assert_eq!(u.state(), Counting(3));
        assert_eq!(format!("{u:?}"), "RcuUsers(Counting(3))");
    }

    #[test]
    fn overflow_saturates_and_never_hands_off() {
        let u = RcuUsers::with_count(RCU_USERS_MAX).unwrap();
        assert_eq!(u.try_get(), Err(Saturated));
        assert_eq!(u.state(), RcuUsersState::Saturated);
        for _ in 0..3 {
            assert_eq!(u.put().err(), Some(Saturated));
            assert_eq!(u.try_get(), Err(Saturated));
        }
        assert_eq!(u.state(), RcuUsersState::Saturated);
    }

    #[test]
    fn with_count_rejects_zero_and_too_many() {
        assert!(RcuUsers::with_count(0).is_none());
        assert!(RcuUsers::with_count(RCU_USERS_SATURATED).is_none());
        assert!(RcuUsers::with_count(RCU_USERS_MAX).is_some());
    }

    #[test]
    fn usable_as_a_static() {
        static U: RcuUsers = RcuUsers::new();
        assert_eq!(U.try_get(), Ok(true));
        assert!(matches!(U.put(), Ok(None)));
    }

    /// Real threads: holders drop their references while readers hammer
    /// try_get. Exactly one handoff; no reader gets a reference after it.
    #[test]
    fn concurrent_readers_never_get_after_the_handoff() {
        use std::sync::atomic::{AtomicBool, AtomicUsize};
        for _ in 0..20 {
            let holders = 4;
            let u = RcuUsers::with_count(holders).unwrap();
            let handed_off = AtomicBool::new(false);
            let handoffs = AtomicUsize::new(0);
            let late_gets = AtomicUsize::new(0);
            std::thread::scope(|s| {
                for _ in 0..holders {
                    s.spawn(|| {
                        for _ in 0..500 {
                            if u.try_get() == Ok(true) {
                                assert!(matches!(u.put(), Ok(None)), "we still hold ours");
                            }
                        }
                        if let Some(_h) = u.put().unwrap() {
                            handoffs.fetch_add(1, Ordering::SeqCst);
                            handed_off.store(true, Ordering::SeqCst);
                        }
                    });
                }
                for _ in 0..2 {
                    s.spawn(|| loop {
                        let was_dead = handed_off.load(Ordering::SeqCst);
                        match u.try_get() {
                            Ok(true) if was_dead => {
                                late_gets.fetch_add(1, Ordering::SeqCst);
                            }
                            // A reader's reference is never the last one
                            // while a holder is still around; if it is, it
                            // does the handoff itself.
                            Ok(true) => {
                                if u.put().unwrap().is_some() {
                                    handoffs.fetch_add(1, Ordering::SeqCst);
                                    handed_off.store(true, Ordering::SeqCst);
                                }
                            }
                            Ok(false) => break,
                            Err(e) => panic!("{e}"),
                        }
                    });
                }
            });
            assert_eq!(handoffs.into_inner(), 1);
            assert_eq!(late_gets.into_inner(), 0);
            assert_eq!(u.try_get(), Ok(false));
        }
    }
}
