//! `Refcount` against a model in arithmetic that cannot wrap: random
//! inc / inc_not_zero / dec_and_test sequences agree with it call by call.
use kcore::refcount::RefcountEvent::*;
use kcore::refcount::{Refcount, REFCOUNT_MAX, REFCOUNT_SATURATED};
use proptest::prelude::*;

#[derive(Clone, Copy, Debug)]
enum Op {
    Inc,
    IncNotZero,
    Dec,
}

/// The spec, in arithmetic that cannot wrap.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Model {
    Count(u64),
    Saturated,
}

proptest! {
    /// Random inc/dec sequences, from a small start or from just below
    /// the top, against the model: results and values agree, the value
    /// is always a real count or exactly `REFCOUNT_SATURATED` (never a
    /// wrap), zero is reached only by a decrement that reports it, and
    /// saturation is sticky.
    #[test]
    fn matches_the_model(
        start in prop_oneof![0u32..4, (REFCOUNT_MAX - 3)..=REFCOUNT_MAX],
        ops in prop::collection::vec(
            prop_oneof![Just(Op::Inc), Just(Op::IncNotZero), Just(Op::Dec)], 0..64),
    ) {
        let r = Refcount::new(start);
        let mut m = Model::Count(start as u64);
        for op in ops {
            let before = r.get();
            let (got, want) = match (op, m) {
                (Op::Inc, Model::Count(0)) => {
                    m = Model::Saturated;
                    (r.inc().map(|()| None), Err(AddOnZero))
                }
                (Op::Inc | Op::IncNotZero, Model::Saturated) => {
                    let got = match op {
                        Op::Inc => r.inc().map(|()| None),
                        _ => r.inc_not_zero().map(Some),
                    };
                    (got, Err(Saturated))
                }
                (Op::Inc, Model::Count(n)) | (Op::IncNotZero, Model::Count(n)) if n > 0 => {
                    let got = match op {
                        Op::Inc => r.inc().map(|()| None),
                        _ => r.inc_not_zero().map(Some),
                    };
                    if n + 1 > REFCOUNT_MAX as u64 {
                        m = Model::Saturated;
                        (got, Err(Saturated))
                    } else {
                        m = Model::Count(n + 1);
                        (got, Ok(matches!(op, Op::IncNotZero).then_some(true)))
                    }
                }
                (Op::IncNotZero, Model::Count(_)) => (r.inc_not_zero().map(Some), Ok(Some(false))),
                (Op::Inc, Model::Count(_)) => unreachable!(),
                (Op::Dec, Model::Count(0)) => {
                    m = Model::Saturated;
                    (r.dec_and_test().map(Some), Err(Underflow))
                }
                (Op::Dec, Model::Count(n)) => {
                    m = Model::Count(n - 1);
                    (r.dec_and_test().map(Some), Ok(Some(n == 1)))
                }
                (Op::Dec, Model::Saturated) => (r.dec_and_test().map(Some), Err(Saturated)),
            };
            prop_assert_eq!(got, want, "{:?} from {:#x}", op, before);
            let v = r.get();
            prop_assert!(v <= REFCOUNT_MAX || v == REFCOUNT_SATURATED, "wrapped: {:#x}", v);
            match m {
                Model::Count(n) => prop_assert_eq!(v as u64, n),
                Model::Saturated => prop_assert_eq!(v, REFCOUNT_SATURATED),
            }
            if v == 0 && before != 0 {
                prop_assert!(matches!(op, Op::Dec) && got == Ok(Some(true)));
            }
            if before > REFCOUNT_MAX {
                prop_assert_eq!(v, REFCOUNT_SATURATED, "saturation is sticky");
            }
        }
    }
}
