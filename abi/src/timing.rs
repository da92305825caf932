//! A scenario's own running time, as the guest measures it (the TSC, from
//! just before the scenario runs to just after its post-kill checks) and
//! prints it as the last KTAP diagnostic before its result:
//! `# time: 12.345 ms`. The runner reads it back for the console, the JSON
//! and JUnit, so that each scenario shows its own cost, not its boot's. A
//! scenario that stops the machine never gets to print one.

use core::fmt;

const PREFIX: &str = "time: ";
const UNIT: &str = " ms";

/// A running time, to the microsecond.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScenarioTime {
    pub us: u64,
}

impl ScenarioTime {
    pub fn from_ns(ns: u64) -> Self {
        Self { us: ns / 1000 }
    }

    /// The time a diagnostic line (its text after `# `) gives, if it is
    /// one: exactly as `Display` writes it, nothing looser.
    pub fn parse(diagnostic: &str) -> Option<Self> {
        let ms = diagnostic.strip_prefix(PREFIX)?.strip_suffix(UNIT)?;
        let (whole, frac) = ms.split_once('.')?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole) || frac.len() != 3 || !digits(frac) {
            return None;
        }
        let us = whole
            .parse::<u64>()
            .ok()?
            .checked_mul(1000)?
            .checked_add(frac.parse().ok()?)?;
        Some(Self { us })
    }
}

impl fmt::Display for ScenarioTime {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{PREFIX}{}.{:03}{UNIT}", self.us / 1000, self.us % 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use proptest::prelude::*;

    #[test]
    fn reads_what_it_writes_and_nothing_else() {
        let t = ScenarioTime::from_ns(12_345_999);
        assert_eq!(format!("{t}"), "time: 12.345 ms");
        assert_eq!(ScenarioTime::parse("time: 12.345 ms"), Some(t));
        assert_eq!(
            ScenarioTime::parse("time: 0.000 ms"),
            Some(ScenarioTime { us: 0 })
        );
        for not in [
            "time: 12.34 ms",
            "time: 12.3456 ms",
            "time: .345 ms",
            "time: 12.345 s",
            "time: -1.000 ms",
            "time: 1.2x5 ms",
            "ok: time: 1.000 ms",
            "time: 99999999999999999999.000 ms",
        ] {
            assert_eq!(ScenarioTime::parse(not), None, "{not}");
        }
    }

    proptest! {
        #[test]
        fn round_trips(us in any::<u64>()) {
            let t = ScenarioTime { us };
            prop_assert_eq!(ScenarioTime::parse(&format!("{t}")), Some(t));
        }
    }
}
