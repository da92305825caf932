//! `RcuUsers` under random interleavings of several CPUs' operations.
//!
//! Each CPU's try_get and put linearise at one compare-and-swap, so any
//! concurrent run is equivalent to some sequence of whole operations; this
//! drives random such sequences (CPUs holding references, stray puts, the
//! token holder scribbling on the head) against a model of the count.
//! Never two handoffs, never a reference after the handoff, never a handoff
//! before the count is balanced out.
use kcore::rcu_users::{RcuUsers, RcuUsersState, HEAD_MASK, RCU_USERS_INIT};
use kcore::refcount::RefcountEvent;
use proptest::prelude::*;

const CPUS: usize = 4;

#[derive(Clone, Debug)]
enum Op {
    Get(usize),
    /// A put of a reference this CPU holds; with none, a stray put (a bug
    /// elsewhere, which the count must contain).
    Put(usize),
    SetHead(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..CPUS).prop_map(Op::Get),
        4 => (0..CPUS).prop_map(Op::Put),
        // Small heads look like small counts: the dangerous ones.
        1 => prop_oneof![0u32..4, any::<u32>()].prop_map(Op::SetHead),
    ]
}

proptest! {
    #[test]
    fn one_handoff_and_nothing_after_it(ops in prop::collection::vec(op(), 0..80)) {
        let users = RcuUsers::new();
        // The task's two initial references: CPU 0 reaps, CPU 1 schedules.
        let mut held = [1u32, 1, 0, 0];
        let mut count = RCU_USERS_INIT as u64;
        let mut token = None;
        let mut handoffs = 0;
        for op in &ops {
            match *op {
                Op::Get(cpu) => {
                    let got = users.try_get();
                    if token.is_some() {
                        prop_assert_eq!(got, Ok(false), "a get after the handoff");
                    } else {
                        prop_assert_eq!(got, Ok(true));
                        held[cpu] += 1;
                        count += 1;
                    }
                }
                Op::Put(cpu) => {
                    held[cpu] = held[cpu].saturating_sub(1);
                    match users.put() {
                        Ok(Some(h)) => {
                            handoffs += 1;
                            prop_assert_eq!(handoffs, 1, "a second handoff");
                            prop_assert_eq!(count, 1, "handed off with references left");
                            prop_assert_eq!(h.head(), 0);
                            count = 0;
                            token = Some(h);
                        }
                        Ok(None) => {
                            prop_assert!(token.is_none() && count > 1);
                            count -= 1;
                        }
                        Err(e) => {
                            prop_assert!(token.is_some(), "{} while counting", e);
                            prop_assert_eq!(e, RefcountEvent::Underflow);
                        }
                    }
                }
                Op::SetHead(head) => {
                    if let Some(h) = token.as_mut() {
                        let fits = head & !HEAD_MASK == 0;
                        prop_assert_eq!(h.set_head(head).is_ok(), fits);
                        if fits {
                            prop_assert_eq!(h.head(), head);
                        }
                    }
                }
            }
            let want = if token.is_some() {
                RcuUsersState::HandedOff
            } else {
                RcuUsersState::Counting(count as u32)
            };
            prop_assert_eq!(users.state(), want);
        }
        // Every CPU drops what it still holds: the handoff happens exactly
        // once overall, stray puts included.
        for &n in &held {
            for _ in 0..n {
                if let Ok(Some(h)) = users.put() {
                    handoffs += 1;
                    token = Some(h);
                }
            }
        }
        prop_assert!(handoffs <= 1);
        prop_assert_eq!(handoffs == 1, token.is_some());
        if token.is_some() {
            prop_assert_eq!(users.try_get(), Ok(false));
        }
    }
}
