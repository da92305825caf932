//! Sleeping until a condition holds: Linux's `wait_event`/`wake_up`.
//!
//! The waiter tests the condition and marks itself blocked under the
//! queue's lock, and the waker takes that lock after making the condition
//! true, so a wakeup can never fall between the test and the sleep. Waking
//! takes only `IrqLock`s and never sleeps, so it may be called with
//! interrupts off or from an RCU callback (a deferred-work producer such as
//! `mmdrop_async`).
use super::{current, sched, State, Task};
use crate::sync::irq;
use crate::sync::IrqLock;
use alloc::sync::Arc;
use alloc::vec::Vec;

pub struct WaitQueue {
    /// Emptied by `drain` rather than replaced, so its buffer stays: once
    /// grown, neither waiting nor waking allocates or frees.
    waiters: IrqLock<Vec<Arc<Task>>>,
}

impl WaitQueue {
    pub const fn new() -> WaitQueue {
        WaitQueue {
            waiters: IrqLock::new(Vec::new()).named("wq_head->lock"),
        }
    }

    /// Room for `n` waiters at once, so that waiting allocates nothing
    /// until more than `n` wait together (and a leak check taken before the
    /// first wait does not see the list's buffer appear).
    pub fn reserve(&self, n: usize) {
        let mut w = self.waiters.lock();
        let len = w.len();
        w.reserve(n.saturating_sub(len));
    }

    /// Sleep until `cond` holds. `cond` runs with this queue's lock held and
    /// interrupts off: it may take other `IrqLock`s, but none a waker holds
    /// while calling `wake_all`.
    pub fn wait_until(&self, mut cond: impl FnMut() -> bool) {
        loop {
            let done = irq::without(|| {
                let mut w = self.waiters.lock();
                if cond() {
                    return true;
                }
                let me = current();
                me.set_state(State::Blocked);
                if !w.iter().any(|t| Arc::ptr_eq(t, &me)) {
                    w.push(me);
                }
                false
            });
            if done {
                return;
            }
            // A wake between the unlock and here made us runnable again:
            // the scheduler then comes straight back (as in `join`).
            sched::block();
        }
    }

    /// Wake every waiter, each of which then re-tests its condition.
    pub fn wake_all(&self) {
        let mut w = self.waiters.lock();
        for t in w.drain(..) {
            sched::wake(t);
        }
    }
}
