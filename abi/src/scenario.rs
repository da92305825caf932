//! The scenario catalog: every scenario the guest can run, and what the runner
//! should expect from it.
//!
//! One table serves both sides: the guest dispatches on `name`, the runner
//! validates user patterns against it (without booting), groups scenarios into
//! boots and compares each outcome with `expect`.

/// How one boot ended, as the runner classifies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The guest reported every test `ok` and exited with `GuestExit::Pass`.
    Pass,
    /// The report is complete and some test is `not ok`.
    Fail,
    /// The guest panicked (a `PANIC` record and `GuestExit::Panic`).
    Panic,
    /// A fault was caught and explained, but the guest had to stop.
    CaughtFatal,
    /// QEMU ended without a guest exit code under `-no-reboot`: a reset, in
    /// practice a triple fault.
    Reset,
    /// The runner's deadline passed; QEMU was killed.
    Timeout,
    /// QEMU itself could not start (bad option, missing firmware...).
    QemuFailed,
    /// The serial report is missing, truncated or inconsistent with the exit code.
    Malformed,
    /// The direct-boot loader refused to start the guest.
    LoaderError,
}

impl Outcome {
    /// A short lowercase name used in summaries, JSON and test assertions.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Panic => "panic",
            Outcome::CaughtFatal => "caught-fatal",
            Outcome::Reset => "reset",
            Outcome::Timeout => "timeout",
            Outcome::QemuFailed => "qemu-failed",
            Outcome::Malformed => "malformed",
            Outcome::LoaderError => "loader-error",
        }
    }
}

/// One scenario the guest knows how to run.
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    /// Dotted name, `area.what` (`boot.smoke`).
    pub name: &'static str,
    /// One line for `runner list`.
    pub summary: &'static str,
    /// The outcome that counts as the scenario behaving correctly. Negative
    /// controls expect a failure class: that is how the runner proves it can
    /// tell failures apart.
    pub expect: Outcome,
    /// Needs a boot of its own: it ends the machine (hang, reset, panic) or
    /// spoils the report for whatever runs beside it.
    pub isolated: bool,
    /// Part of the default set (`runner run` without patterns, `make run`).
    pub default: bool,
    /// The CPU counts `runner test` boots it with.
    pub test_smp: &'static [u32],
}

const fn check(name: &'static str, summary: &'static str, test_smp: &'static [u32]) -> Scenario {
    Scenario {
        name,
        summary,
        expect: Outcome::Pass,
        isolated: false,
        default: true,
        test_smp,
    }
}

/// A negative control: a scenario built to fail in one particular way.
const fn control(name: &'static str, summary: &'static str, expect: Outcome) -> Scenario {
    Scenario {
        name,
        summary,
        expect,
        isolated: true,
        default: false,
        test_smp: &[1],
    }
}

/// Every scenario, in the order `runner list` shows them.
pub const SCENARIOS: &[Scenario] = &[
    check(
        "boot.smoke",
        "the boot protocol gave a sane world: memory map, HHDM, executable address, RSDP, all CPUs",
        &[1, 4],
    ),
    check(
        "core.spawn_join",
        "10 000 tasks spread over all CPUs, all joined, every result checked",
        &[1, 4],
    ),
    check(
        "core.preempt",
        "CPU-bound tasks that never yield all make progress (timer preemption)",
        &[1, 4],
    ),
    check(
        "core.leak",
        "100 000 spawn/exit cycles per stack strategy; frame, vmalloc and heap counters return to baseline",
        &[1, 4],
    ),
    check(
        "core.shootdown",
        "a page unmapped on one CPU faults when touched on every other (TLB shootdown)",
        &[1, 4],
    ),
    check(
        "core.current",
        "current() is right on every CPU after thousands of migrations",
        &[1, 4],
    ),
    check(
        "core.guard_layout",
        "every stack of every kind has its guard pages unmapped (page-table walk)",
        &[1, 4],
    ),
    Scenario {
        name: "bench.spawn",
        summary: "spawn + run-empty + exit + join cost per stack strategy (TSC cycles)",
        expect: Outcome::Pass,
        isolated: false,
        default: false,
        test_smp: &[1],
    },
    control(
        "selftest.hang",
        "spins forever with interrupts off: the runner must report a timeout",
        Outcome::Timeout,
    ),
    control(
        "selftest.triple_fault",
        "loads an empty IDT and faults: the runner must report a reset",
        Outcome::Reset,
    ),
    control(
        "selftest.panic",
        "panics with a known message: the runner must report a panic",
        Outcome::Panic,
    ),
    control(
        "selftest.bad_ktap",
        "prints a KTAP plan it does not keep: the runner must report a malformed report",
        Outcome::Malformed,
    ),
    control(
        "selftest.fail",
        "reports `not ok`: the runner must report a failure",
        Outcome::Fail,
    ),
];

/// Look a scenario up by its exact name.
pub fn find(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_dotted_and_cmdline_safe() {
        for (i, s) in SCENARIOS.iter().enumerate() {
            assert!(s.name.contains('.'), "{} is not area.what", s.name);
            assert!(
                s.name.bytes().all(|b| b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || b == b'.'
                    || b == b'_'),
                "{} would not survive the command line",
                s.name
            );
            assert!(
                SCENARIOS[..i].iter().all(|o| o.name != s.name),
                "duplicate {}",
                s.name
            );
            assert!(!s.test_smp.is_empty());
            assert_eq!(find(s.name).map(|f| f.name), Some(s.name));
        }
    }

    #[test]
    fn negative_controls_stay_out_of_the_default_set() {
        for s in SCENARIOS {
            if s.expect != Outcome::Pass {
                assert!(
                    !s.default && s.isolated,
                    "{} would spoil a shared boot",
                    s.name
                );
            }
        }
    }
}
