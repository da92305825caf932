//! `rcu_stall::judge` against the two facts it must keep apart, over
//! random progress and wall time:
//!
//! - a CPU that shows no progress of its own (no tick, no NMI answered) is
//!   never a stall before `unresponsive_ns`, however much wall time passes:
//!   host starvation alone cannot raise the warning;
//! - a CPU whose own ticks plus weighted NMI answers reach `stall_ticks` is
//!   always one, whatever the wall clock says: a real stall is caught;
//! - and the verdict only grows with more progress (monotone).
use kcore::rcu_stall::{judge, own_age, CpuStall, Policy, Progress};
use proptest::prelude::*;

fn policy() -> impl Strategy<Value = Policy> {
    (1u64..1000, 1u64..50, 1u64..100_000_000_000).prop_map(
        |(stall_ticks, nmi_weight, unresponsive_ns)| Policy {
            stall_ticks,
            nmi_weight,
            unresponsive_ns,
        },
    )
}

proptest! {
    #[test]
    fn starvation_alone_is_never_a_stall(
        p in policy(),
        ticks in any::<u32>(),
        nmis in any::<u32>(),
        wall in any::<u64>(),
    ) {
        let start = Progress { ticks: ticks.into(), nmis: nmis.into() };
        let v = judge(start, start, wall, &p);
        prop_assert_eq!(v.is_stall(), wall >= p.unresponsive_ns);
        prop_assert!(matches!(v, CpuStall::No | CpuStall::Unresponsive));
    }

    #[test]
    fn own_progress_past_the_threshold_always_is(
        p in policy(),
        t0 in any::<u32>(),
        n0 in any::<u32>(),
        dt in 0u64..5000,
        dn in 0u64..500,
        wall in any::<u64>(),
    ) {
        let start = Progress { ticks: t0.into(), nmis: n0.into() };
        let now = Progress { ticks: start.ticks + dt, nmis: start.nmis + dn };
        let age = own_age(start, now, &p);
        prop_assert_eq!(age, dt + dn * p.nmi_weight);
        let v = judge(start, now, wall, &p);
        if age >= p.stall_ticks {
            prop_assert!(v.is_stall());
            let ticking = matches!(v, CpuStall::Ticking { .. });
            prop_assert_eq!(ticking, dt >= p.stall_ticks);
        } else if dt + dn > 0 {
            prop_assert_eq!(v, CpuStall::No, "some progress, below the threshold: slow, not stalled");
        }
        // More progress never takes a stall back.
        let more = Progress { ticks: now.ticks + 1, nmis: now.nmis + 1 };
        if v.is_stall() && v != CpuStall::Unresponsive {
            prop_assert!(judge(start, more, wall, &p).is_stall());
        }
    }
}
