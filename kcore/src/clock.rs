//! Cycles to nanoseconds, for a counter that does not start at zero.
//!
//! Under TCG the guest's TSC starts near zero; under KVM it is the host's
//! TSC plus an offset: on a host that has been up for hours it is past
//! 10^14 cycles (measured here: 1.1 × 10^14, 10.9 hours at 2.8 GHz). A
//! conversion that multiplies by 10^6 in 64 bits saturates from about 1.8
//! hours' worth of cycles on, and a saturated clock stands still: every
//! deadline loop built on it spins forever. So the product is taken in 128
//! bits, and the result is exact (floor) for any counter value.

/// A counter's rate against the PIT, in cycles per microsecond times 1000
/// (what one calibration window measures, to three decimals).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    per_us_x1000: u64,
}

impl Rate {
    /// The rate measured as `cycles` over a window of `us` microseconds; at
    /// least one (a window that saw no cycles is a broken counter, and a
    /// zero rate would divide by zero).
    pub fn measured(cycles: u64, us: u64) -> Self {
        let r = u128::from(cycles) * 1000 / u128::from(us.max(1));
        Self {
            per_us_x1000: u64::try_from(r).unwrap_or(u64::MAX).max(1),
        }
    }

    /// A rate stored as [`Rate::per_us_x1000`] gave it (at least one).
    pub fn from_per_us_x1000(per_us_x1000: u64) -> Self {
        Self {
            per_us_x1000: per_us_x1000.max(1),
        }
    }

    pub fn per_us_x1000(self) -> u64 {
        self.per_us_x1000
    }

    /// `cycles` in nanoseconds at this rate, rounded down; saturates only
    /// past u64::MAX nanoseconds (584 years).
    pub fn cycles_to_ns(self, cycles: u64) -> u64 {
        let ns = u128::from(cycles) * 1_000_000 / u128::from(self.per_us_x1000);
        u64::try_from(ns).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_kvm_guest_tsc_from_a_host_up_for_hours_still_advances() {
        // The values one KVM boot here printed: TSC and rate.
        let rate = Rate::measured(5_648_474, 2000); // 2824.237 cycles/µs
        assert_eq!(rate.per_us_x1000(), 2_824_237);
        let t0 = 110_994_407_557_008;
        let a = rate.cycles_to_ns(t0);
        let b = rate.cycles_to_ns(t0 + 2_824_237); // one millisecond later
        assert_eq!(b - a, 1_000_000);
        assert_eq!(a, 39_300_670_431_344); // 10.9 hours
    }

    #[test]
    fn exact_at_round_rates() {
        let ghz = Rate::measured(2_000_000, 1000); // 2000 cycles/µs
        assert_eq!(ghz.cycles_to_ns(0), 0);
        assert_eq!(ghz.cycles_to_ns(1), 0);
        assert_eq!(ghz.cycles_to_ns(2), 1);
        assert_eq!(ghz.cycles_to_ns(2_000_000_000), 1_000_000_000);
        assert_eq!(ghz.cycles_to_ns(u64::MAX), u64::MAX / 2);
    }

    #[test]
    fn degenerate_windows_give_a_usable_rate() {
        assert_eq!(Rate::measured(0, 1000).per_us_x1000(), 1);
        assert_eq!(Rate::measured(5, 0).per_us_x1000(), 5000);
        assert_eq!(Rate::measured(u64::MAX, 1).per_us_x1000(), u64::MAX);
        // The slowest rate saturates only at the top.
        assert_eq!(Rate::measured(0, 1).cycles_to_ns(u64::MAX), u64::MAX);
    }

    proptest! {
        /// Every later counter value is a later time, and one rate's worth
        /// of cycles is within a nanosecond of a microsecond, wherever the
        /// counter stands: at boot or years into a host's uptime.
        #[test]
        fn monotone_and_linear_anywhere(
            per_us_x1000 in 100_000u64..10_000_000, // 100 MHz .. 10 GHz
            t in 0u64..(1 << 60),
            d in 0u64..(1 << 40),
        ) {
            let rate = Rate::measured(per_us_x1000, 1000);
            prop_assert_eq!(rate.per_us_x1000(), per_us_x1000);
            let (a, b) = (rate.cycles_to_ns(t), rate.cycles_to_ns(t + d));
            prop_assert!(b >= a);
            let exact = u128::from(d) * 1_000_000 / u128::from(per_us_x1000);
            let got = u128::from(b - a);
            prop_assert!(got + 1 >= exact && got <= exact + 1, "{got} vs {exact}");
        }
    }
}
