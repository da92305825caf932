//! Cycles to nanoseconds, for a counter that does not start at zero.
//!
//! Under TCG the guest's TSC starts near zero; under KVM it is the host's
//! TSC plus an offset: on a host that has been up for hours it is past
//! 10^14 cycles (measured here: 1.1 × 10^14, 10.9 hours at 2.8 GHz). A
//! conversion that multiplies by 10^6 in 64 bits saturates from about 1.8
//! hours' worth of cycles on, and a saturated clock stands still: every
//! deadline loop built on it spins forever. So the product is taken in 128
//! bits, and the result is exact (floor) for any counter value.
//!
//! Calibration is robust to a host that deschedules the vCPU, as loaded CI
//! hosts do (measured: twelve guests at once on two cores put one window
//! 35 times off). A pause can strike in three places, and each has its
//! answer here. Inside one read of the reference: each end of a window is
//! the [`narrowest`] of a few bracketed reads. Between two reads, for
//! longer than the reference takes to wrap (55 ms for the PIT): whole
//! periods are lost and the window is wrong, so several windows are taken
//! and only a [`consensus`] of them counts. Anywhere else a pause costs
//! nothing, because a window is the reference's exact ticks between its
//! two ends, not the length it was asked to be.

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

/// One read of a reference clock of known frequency (`ticks`, its running
/// count), bracketed by reads of the counter being calibrated: the
/// reference was read at some instant between `before` and `after`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    pub before: u64,
    pub after: u64,
    pub ticks: u64,
}

impl Sample {
    fn width(&self) -> u64 {
        self.after.saturating_sub(self.before)
    }

    /// The counter's best guess at the instant of the read.
    fn mid(&self) -> u64 {
        self.before + self.width() / 2
    }
}

/// The read with the narrowest bracket (the first of equals): a read that
/// the host interrupted, or that took a slow exit, has a wide one.
pub fn narrowest(samples: impl IntoIterator<Item = Sample>) -> Option<Sample> {
    samples
        .into_iter()
        .reduce(|best, s| if s.width() < best.width() { s } else { best })
}

/// The counter's rate over the window from `start` to `end`, against a
/// reference of `ref_hz`; `None` if either clock stood still over it.
pub fn rate_over(start: Sample, end: Sample, ref_hz: u64) -> Option<Rate> {
    let cycles = end.mid().checked_sub(start.mid()).filter(|&c| c > 0)?;
    let ticks = end.ticks.checked_sub(start.ticks).filter(|&t| t > 0)?;
    // cycles per µs × 1000 = cycles / (ticks / ref_hz seconds) / 10^6 × 1000
    let r = u128::from(cycles) * u128::from(ref_hz) / (u128::from(ticks) * 1000);
    Some(Rate::from_per_us_x1000(
        u64::try_from(r).unwrap_or(u64::MAX),
    ))
}

/// The median of the `need` rates that lie closest together, if those
/// agree to within `tolerance_per_mille` of the slowest of them: `None`
/// until enough windows agree. A window that lost reference periods reads
/// too fast, and never agrees with the good ones or with another bad one
/// (the periods lost differ). Sorts `rates`.
pub fn consensus(rates: &mut [Rate], need: usize, tolerance_per_mille: u64) -> Option<Rate> {
    rates.sort_unstable_by_key(|r| r.per_us_x1000);
    rates
        .windows(need.max(1))
        .filter(|w| {
            let (lo, hi) = (w[0].per_us_x1000, w[w.len() - 1].per_us_x1000);
            u128::from(hi - lo) * 1000 <= u128::from(lo) * u128::from(tolerance_per_mille)
        })
        .min_by_key(|w| w[w.len() - 1].per_us_x1000 - w[0].per_us_x1000)
        .map(|w| w[w.len() / 2])
}

/// The median of `rates` (the lower of the middle two), as the last resort
/// when no `consensus` formed; `None` for no rates. Sorts `rates`.
pub fn median(rates: &mut [Rate]) -> Option<Rate> {
    rates.sort_unstable_by_key(|r| r.per_us_x1000);
    rates.get(rates.len().saturating_sub(1) / 2).copied()
}

/// A 16-bit down-counter (the PIT's) unfolded into a running up-count,
/// for reads less than one period apart.
#[derive(Clone, Copy, Debug)]
pub struct Unwrap16 {
    last: u16,
    total: u64,
}

impl Unwrap16 {
    pub fn new(first: u16) -> Self {
        Self {
            last: first,
            total: 0,
        }
    }

    /// The ticks counted since the first read, given the counter now.
    pub fn advance(&mut self, now: u16) -> u64 {
        self.total += u64::from(self.last.wrapping_sub(now));
        self.last = now;
        self.total
    }
}

/// Reads taken at each end of a window, of which the narrowest counts.
pub const READS_PER_END: usize = 4;
/// Windows that must agree, and how closely, before a rate is believed.
pub const AGREEING: usize = 3;
pub const TOLERANCE_PER_MILLE: u64 = 30;
/// Windows taken at most, before settling for their median.
pub const MAX_WINDOWS: usize = 9;

/// One calibration window of at least `ticks` of the reference, which runs
/// at `ref_hz`; `read` takes one bracketed sample.
pub fn window(mut read: impl FnMut() -> Sample, ticks: u64, ref_hz: u64) -> Option<Rate> {
    let start = narrowest((0..READS_PER_END).map(|_| read()))?;
    while read().ticks < start.ticks.saturating_add(ticks) {}
    let end = narrowest((0..READS_PER_END).map(|_| read()))?;
    rate_over(start, end, ref_hz)
}

/// What calibration settled on, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Calibration {
    pub rate: Rate,
    /// Windows taken.
    pub windows: usize,
    /// Whether [`AGREEING`] of them agreed (else `rate` is their median).
    pub agreed: bool,
    /// Whether `rate` is a long window's that one window confirmed
    /// ([`calibrate_confirming`]).
    pub confirmed_long: bool,
}

/// Take windows until [`AGREEING`] of them agree, or [`MAX_WINDOWS`] were
/// taken; `None` only if no window measured anything.
pub fn calibrate(mut window: impl FnMut() -> Option<Rate>) -> Option<Calibration> {
    let mut rates = [Rate::from_per_us_x1000(1); MAX_WINDOWS];
    let mut n = 0;
    for windows in 1..=MAX_WINDOWS {
        if let Some(r) = window() {
            rates[n] = r;
            n += 1;
        }
        if let Some(rate) = consensus(&mut rates[..n], AGREEING, TOLERANCE_PER_MILLE) {
            return Some(Calibration {
                rate,
                windows,
                agreed: true,
                confirmed_long: false,
            });
        }
    }
    median(&mut rates[..n]).map(|rate| Calibration {
        rate,
        windows: MAX_WINDOWS,
        agreed: false,
        confirmed_long: false,
    })
}

/// A rate measured over a long window, the boot's first milliseconds,
/// believed once one ordinary window agrees with it; else
/// [`calibrate`] from scratch.
///
/// Its two ends are reads like any other, so the long window is the most
/// precise one (a 5 µs bracket is 0.06 % of 8 ms), and it costs no waiting:
/// the boot runs inside it. But it is read rarely, so a pause longer than
/// the reference's period (55 ms for the PIT) loses whole periods, which
/// makes it read too fast by at least as many times its length: never
/// within [`TOLERANCE_PER_MILLE`] of a window that lost none.
pub fn calibrate_confirming(
    long: Option<Rate>,
    mut window: impl FnMut() -> Option<Rate>,
) -> Option<Calibration> {
    if let Some(long) = long {
        if let Some(short) = window() {
            if consensus(&mut [long, short], 2, TOLERANCE_PER_MILLE).is_some() {
                return Some(Calibration {
                    rate: long,
                    windows: 1,
                    agreed: true,
                    confirmed_long: true,
                });
            }
        }
    }
    calibrate(window)
}

/// Ticks per millisecond of a second counter (the LAPIC timer's) that
/// samples bracketed by a counter of rate `rate` read at `start` and `end`
/// (at least one): the second clock calibrated against the first.
pub fn ticks_per_ms(rate: Rate, start: Sample, end: Sample) -> u64 {
    let ns = rate.cycles_to_ns(end.mid().saturating_sub(start.mid()));
    let ticks = end.ticks.saturating_sub(start.ticks);
    let r = u128::from(ticks) * 1_000_000 / u128::from(ns.max(1));
    u64::try_from(r).unwrap_or(u64::MAX).max(1)
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

    fn s(before: u64, after: u64, ticks: u64) -> Sample {
        Sample {
            before,
            after,
            ticks,
        }
    }

    fn rates(r: &[u64]) -> std::vec::Vec<Rate> {
        r.iter().map(|&r| Rate::from_per_us_x1000(r)).collect()
    }

    #[test]
    fn the_narrowest_bracket_wins_and_the_first_of_equals() {
        let a = s(0, 10, 1);
        let b = s(20, 25, 2);
        let c = s(30, 35, 3);
        assert_eq!(narrowest([a, b, c]), Some(b));
        assert_eq!(narrowest([]), None);
    }

    #[test]
    fn a_window_is_its_exact_ticks_between_bracket_midpoints() {
        // 2 GHz against the PIT: 1193 ticks are 999.847 µs.
        let r = rate_over(s(100, 110, 7), s(1_999_794, 1_999_804, 1200), 1_193_182).unwrap();
        assert_eq!(r.per_us_x1000(), 1_999_999); // floor of 1999.9994
        assert_eq!(rate_over(s(0, 10, 5), s(20, 30, 5), 1_193_182), None);
        assert_eq!(rate_over(s(0, 10, 5), s(0, 10, 9), 1_193_182), None);
        // Each end at its bracket's middle: 50 to 1_000_000 is 999_950
        // cycles over 1193 ticks (999.847 µs) at 1.193182 MHz.
        let r = rate_over(s(0, 100, 0), s(1_000_000, 1_000_000, 1193), 1_193_182).unwrap();
        assert_eq!(r.per_us_x1000(), 1_000_102);
        assert_eq!(rate_over(s(20, 30, 5), s(0, 10, 9), 1_193_182), None);
    }

    #[test]
    fn three_windows_must_agree_and_outliers_are_ignored() {
        let tol = TOLERANCE_PER_MILLE;
        assert_eq!(consensus(&mut rates(&[2000, 2010]), 3, tol), None);
        assert_eq!(consensus(&mut rates(&[2000, 70_000, 2010]), 3, tol), None);
        let got = consensus(&mut rates(&[2020, 70_000, 2000, 4100, 2010]), 3, tol);
        assert_eq!(got.map(Rate::per_us_x1000), Some(2010));
        // 3 % of the slowest, and not one more.
        assert!(consensus(&mut rates(&[1000, 1015, 1030]), 3, 30).is_some());
        assert!(consensus(&mut rates(&[1000, 1015, 1031]), 3, 30).is_none());
        // The median of the group, whatever its size.
        let got = consensus(&mut rates(&[1003, 1000, 1002, 1001]), 4, 30);
        assert_eq!(got.map(Rate::per_us_x1000), Some(1002));
        // The tightest group wins over an earlier, looser one.
        let got = consensus(&mut rates(&[1000, 1029, 1030, 1031, 1032]), 3, 30);
        assert_eq!(got.map(Rate::per_us_x1000), Some(1030));
    }

    #[test]
    fn median_and_a_second_clock_against_the_first() {
        assert_eq!(
            median(&mut rates(&[5, 1, 9, 7])).map(Rate::per_us_x1000),
            Some(5)
        );
        let of5 = median(&mut rates(&[5, 1, 9, 7, 3]));
        assert_eq!(of5.map(Rate::per_us_x1000), Some(5));
        assert_eq!(median(&mut []), None);
        let ghz = Rate::from_per_us_x1000(1_000_000);
        // 62 500 ticks in a millisecond of a 1 GHz counter (mid to mid).
        let per_ms = ticks_per_ms(ghz, s(0, 10, 100), s(1_000_000, 1_000_010, 62_600));
        assert_eq!(per_ms, 62_500);
        assert_eq!(ticks_per_ms(ghz, s(5, 5, 5), s(5, 5, 5)), 1);
    }

    #[test]
    fn a_window_ends_at_the_first_read_that_reaches_its_length() {
        // A reference that advances one tick a read, brackets all alike:
        // 4 start reads (ticks 0-3, the first counts), reads up to tick 10,
        // and 4 end reads.
        let mut reads = 0u64;
        let r = window(
            || {
                reads += 1;
                s(reads * 100, reads * 100 + 10, reads - 1)
            },
            10,
            1_000_000,
        );
        assert_eq!(reads, 4 + 7 + 4);
        // 11 ticks (0 to 11) in 1100 cycles at 1 MHz: 100 cycles/µs.
        assert_eq!(r.map(Rate::per_us_x1000), Some(100_000));
    }

    #[test]
    fn the_pit_unwraps_across_its_reload() {
        let mut u = Unwrap16::new(5);
        assert_eq!(u.advance(2), 3);
        assert_eq!(u.advance(65_530), 3 + 8);
        assert_eq!(u.advance(65_530), 11);
    }

    /// A guest whose vCPU the host pauses: a counter of `per_us_x1000`
    /// and the PIT, both on one true clock, reads costing what they cost
    /// under TCG, and pauses (read number, ns, inside the bracket or not).
    struct Host {
        ns: u64,
        per_us_x1000: u64,
        reads: usize,
        pauses: std::vec::Vec<(usize, u64, bool)>,
    }

    const PIT_HZ: u64 = 1_193_182;

    impl Host {
        fn counter(&mut self) -> u64 {
            self.ns += 20;
            (u128::from(self.ns) * u128::from(self.per_us_x1000) / 1_000_000) as u64
        }

        fn pit(&mut self) -> u16 {
            self.ns += 1500;
            let ticks = u128::from(self.ns) * u128::from(PIT_HZ) / 1_000_000_000;
            self.ns += 1500;
            (65_536 - (ticks % 65_536) as u32) as u16
        }

        fn pause(&mut self, inside: bool) {
            for &(at, ns, i) in &self.pauses {
                if at == self.reads && i == inside {
                    self.ns += ns;
                }
            }
        }

        fn calibrate(&mut self) -> Option<Calibration> {
            calibrate(|| self.window())
        }

        fn read(&mut self, pit: &mut Unwrap16) -> Sample {
            self.reads += 1;
            self.pause(false);
            let before = self.counter();
            self.pause(true);
            let now = self.pit();
            let ticks = pit.advance(now);
            Sample {
                before,
                after: self.counter(),
                ticks,
            }
        }

        fn window(&mut self) -> Option<Rate> {
            let mut pit = Unwrap16::new(self.pit());
            window(|| self.read(&mut pit), PIT_HZ / 1000, PIT_HZ)
        }

        /// A window opened, then `boot_ns` of work that reads nothing, then
        /// closed; then `calibrate_confirming` with it.
        fn calibrate_over_boot(&mut self, boot_ns: u64) -> Option<Calibration> {
            let mut pit = Unwrap16::new(self.pit());
            let start = narrowest((0..READS_PER_END).map(|_| self.read(&mut pit)));
            self.ns += boot_ns;
            let end = narrowest((0..READS_PER_END).map(|_| self.read(&mut pit)));
            let long = rate_over(start?, end?, PIT_HZ);
            calibrate_confirming(long, || self.window())
        }
    }

    #[test]
    fn a_pause_inside_an_end_read_costs_nothing() {
        // 20 ms inside the first start read of the first window, and inside
        // a read near that window's end (a window is about 340 reads).
        for at in [1, 345] {
            let mut h = Host {
                ns: 7,
                per_us_x1000: 2_000_000,
                reads: 0,
                pauses: vec![(at, 20_000_000, true)],
            };
            let c = h.calibrate().unwrap();
            assert_eq!((c.windows, c.agreed), (3, true), "pause at read {at}");
            assert!(c.rate.per_us_x1000().abs_diff(2_000_000) <= 20_000, "{c:?}");
        }
    }

    fn host(per_us_x1000: u64) -> Host {
        Host {
            ns: 7,
            per_us_x1000,
            reads: 0,
            pauses: vec![],
        }
    }

    #[test]
    fn a_boot_shorter_than_a_pit_period_is_a_window_one_more_confirms() {
        let c = host(2_595_700).calibrate_over_boot(8_000_000).unwrap();
        assert_eq!((c.windows, c.agreed, c.confirmed_long), (1, true, true));
        // The long window's precision: within 0.1 %.
        assert!(
            c.rate.per_us_x1000().abs_diff(2_595_700) * 1000 <= 2_595_700,
            "{c:?}"
        );
    }

    #[test]
    fn a_boot_that_lost_pit_periods_is_refused_and_windows_decide() {
        // 56 ms reads as 1 ms, 120 ms as 10 ms: far too fast, both.
        for boot_ms in [56, 120, 1000] {
            let c = host(2_595_700)
                .calibrate_over_boot(boot_ms * 1_000_000)
                .unwrap();
            assert!(!c.confirmed_long, "{boot_ms} ms: {c:?}");
            assert_eq!((c.windows, c.agreed), (3, true), "{boot_ms} ms");
            assert!(c.rate.per_us_x1000().abs_diff(2_595_700) * 100 <= 2_595_700);
        }
    }

    #[test]
    fn an_undisturbed_host_calibrates_in_three_windows() {
        let mut h = Host {
            ns: 7,
            per_us_x1000: 2_824_237,
            reads: 0,
            pauses: vec![],
        };
        let c = h.calibrate().unwrap();
        assert_eq!((c.windows, c.agreed), (3, true));
        let off = c.rate.per_us_x1000().abs_diff(2_824_237);
        assert!(off * 1000 <= 2_824_237, "{c:?}");
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

        /// However long the boot took, the rate is within 1 %, and the
        /// long window is believed exactly when it lost no PIT period.
        #[test]
        fn any_boot_length_calibrates(
            per_us_x1000 in 500_000u64..5_000_000,
            boot_ns in 0u64..2_000_000_000,
        ) {
            let c = host(per_us_x1000).calibrate_over_boot(boot_ns).unwrap();
            prop_assert!(c.rate.per_us_x1000().abs_diff(per_us_x1000) * 100 <= per_us_x1000, "{c:?}");
            // A period is 54.9 ms; the window's own reads add a few µs.
            if boot_ns < 54_000_000 && boot_ns > 500_000 {
                prop_assert!(c.confirmed_long, "{boot_ns} ns: {c:?}");
            }
            if boot_ns > 55_000_000 {
                prop_assert!(!c.confirmed_long, "{boot_ns} ns: {c:?}");
            }
        }

        /// Up to three pauses of up to a second anywhere in calibration,
        /// inside a read or between reads: the rate stays within 1 %, and
        /// only a pause that lost PIT periods costs another window. The
        /// naive single window this replaced read 35 times off.
        #[test]
        fn pauses_anywhere_do_not_move_the_rate(
            per_us_x1000 in 500_000u64..5_000_000,
            pauses in proptest::collection::vec(
                (0usize..1100, prop_oneof![0u64..50_000_000, 0u64..1_000_000_000],
                 any::<bool>()), 0..=3),
        ) {
            // Only a pause long enough to lose a PIT period spoils a window;
            // pauses at one read add up (proptest found two, 12 and 43 ms,
            // that lost a period together).
            let mut at: std::vec::Vec<usize> = pauses.iter().map(|p| p.0).collect();
            at.sort_unstable();
            at.dedup();
            let long = at
                .iter()
                .filter(|&&r| pauses.iter().filter(|p| p.0 == r).map(|p| p.1).sum::<u64>() >= 50_000_000)
                .count();
            let mut h = Host { ns: 1, per_us_x1000, reads: 0, pauses };
            let c = h.calibrate().unwrap();
            prop_assert!(c.agreed);
            prop_assert!(c.windows <= AGREEING + long, "{:?}", c);
            let off = c.rate.per_us_x1000().abs_diff(per_us_x1000);
            prop_assert!(off * 100 <= per_us_x1000, "{:?} vs {}", c, per_us_x1000);
        }
    }
}
