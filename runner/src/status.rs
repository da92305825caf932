//! The runner's own exit status: one code per way things can go wrong, so a
//! script can tell a hang from a panic without parsing the output.

use crate::output::summary::{self, Mark};
use crate::record::Mode;
use crate::report::judge::ScenarioResult;
use abi::Outcome;

pub const OK: i32 = 0;
pub const TEST_FAILURE: i32 = 1;
pub const USAGE: i32 = 2;
pub const SETUP: i32 = 10;
pub const INTERRUPTED: i32 = 130;

pub const HELP: &str = "\
Exit status: 0 when the summary marks no result FAIL; else the highest code among the results
it marks FAIL: the class of how the boot ended when that was wrong (3-9), else 1.
    0    everything as expected
    1    test failure: a scenario reported `not ok`, its fault was not caught or not told well,
         its result lacks the evidence it needs, or (test) it passed where it should have failed
    2    usage error: unknown scenario, bad option
    3    panic: the guest panicked
    4    caught-fatal: a fault was caught and reported but the guest had to stop
    5    reset: QEMU ended without an exit code (a triple fault)
    6    timeout: a boot passed its deadline and was killed
    7    malformed: the KTAP report was missing, truncated or contradicted the exit code
    8    loader-error: the direct-boot loader refused to start the guest
    9    qemu-failed: QEMU could not start or died on its own
    10   setup error: QEMU not installed, build failed, artifacts missing
    11   flood: a boot's serial output passed --serial-limit; QEMU was killed
    12   caught-unrecoverable: a fault was caught in a task that held a lock (or another
         thing the kernel needs), so the guest stopped instead of killing it
    130  interrupted (Ctrl-C, SIGTERM)

Environment: QEMU overrides the qemu-system-x86_64 binary; CARGO the cargo used to build;
CARGO_TARGET_DIR where builds and serial logs (runs/<run id>/) go; LIMINE_DIR a Limine binary
release for --boot limine-bios/limine-uefi (else the cache `make limine` fills).";

/// One result's status, from the mark the summary prints for it: 0 unless
/// it is marked FAIL; then 1 if how the boot ended was right (the fault
/// verdict or the evidence was not), else the class of how it ended.
pub fn for_result(mode: Mode, result: &ScenarioResult) -> i32 {
    match summary::mark(mode, result) {
        Mark::Passed | Mark::Skipped | Mark::Todo => OK,
        Mark::Failed if summary::outcome_is_fine(mode, result) => TEST_FAILURE,
        Mark::Failed => for_outcome(result.outcome).max(TEST_FAILURE),
    }
}

/// The status for a scenario that ended in `outcome` when it should not have.
pub fn for_outcome(outcome: Outcome) -> i32 {
    match outcome {
        Outcome::Pass => OK,
        Outcome::Fail => TEST_FAILURE,
        Outcome::Panic => 3,
        Outcome::CaughtFatal => 4,
        Outcome::Reset => 5,
        Outcome::Timeout => 6,
        Outcome::Malformed => 7,
        Outcome::LoaderError => 8,
        Outcome::QemuFailed => 9,
        Outcome::Flood => 11,
        Outcome::CaughtUnrecoverable => 12,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_has_its_own_documented_code() {
        let all = [
            Outcome::Fail,
            Outcome::Panic,
            Outcome::CaughtFatal,
            Outcome::Reset,
            Outcome::Timeout,
            Outcome::Malformed,
            Outcome::LoaderError,
            Outcome::QemuFailed,
            Outcome::Flood,
            Outcome::CaughtUnrecoverable,
        ];
        for (i, o) in all.iter().enumerate() {
            let code = for_outcome(*o);
            assert!(all[..i].iter().all(|p| for_outcome(*p) != code));
            assert!(![OK, USAGE, SETUP, INTERRUPTED].contains(&code));
            let line = format!("    {code:<4} {}", o.as_str());
            let line = if *o == Outcome::Fail {
                "    1    test failure".to_string()
            } else {
                line
            };
            assert!(HELP.contains(&line), "{line:?} is not documented");
        }
    }
}

/// The exit status and the summary's marks are one rule: every combination
/// of what a scenario expects, how its boot ended, what its fault verdict
/// says, whether the guest skipped it or marked it TODO, and whether its
/// evidence holds.
#[cfg(test)]
mod marks {
    use super::*;
    use crate::boot::qemu::Invocation;
    use crate::cli::BootPath;
    use crate::record::BootRecord;
    use crate::report::classify::Verdict;
    use crate::report::stack::StackVerdict;
    use crate::report::{Check, Failure};
    use crate::select::Boot;
    use crate::session::exit_status;
    use abi::guard::Verdict as Caught;
    use std::time::Duration;

    fn record(result: ScenarioResult) -> BootRecord {
        BootRecord {
            boot: Boot {
                name: "01-x".into(),
                scenarios: vec![result.scenario],
                smp: 1,
                path: BootPath::Direct,
            },
            invocation: Invocation {
                program: "q".into(),
                args: vec![],
            },
            exit_status: None,
            duration: Duration::ZERO,
            serial_log: "/t/01-x.serial".into(),
            cut_lines: 0,
            verdict: Verdict {
                outcome: result.outcome,
                reason: "why".into(),
                panic: None,
                problems: vec![],
                detail: vec![],
                report: ktap::parse(""),
            },
            results: vec![result],
        }
    }

    fn stack_verdict(expected: Caught, observed: Caught, good: bool) -> StackVerdict {
        StackVerdict {
            expected,
            observed,
            failures: if good {
                vec![]
            } else {
                vec![Failure {
                    check: Check::Kind,
                    detail: "made up".into(),
                }]
            },
            hits: 1,
            suppressed: 0,
            stack_kind: None,
            depth: None,
            jumped: None,
            corruption: vec![],
        }
    }

    /// Every result this catalog entry can come out with.
    fn results(name: &str) -> Vec<ScenarioResult> {
        let scenario = abi::scenario::find(name).unwrap();
        let mut out = Vec::new();
        for outcome in Outcome::ALL {
            let verdicts: Vec<Option<StackVerdict>> = match &scenario.guard {
                None => vec![None],
                Some(g) => [
                    (g.verdict, true),
                    (g.verdict, false),
                    (Caught::NotCaught, true),
                ]
                .into_iter()
                .map(|(observed, good)| Some(stack_verdict(g.verdict, observed, good)))
                .collect(),
            };
            for guard in verdicts {
                for (skipped, todo) in [(false, None), (true, None), (false, Some("later"))] {
                    for objections in [vec![], vec!["no GUEST-CONFIG line".to_string()]] {
                        out.push(ScenarioResult {
                            scenario,
                            outcome,
                            skipped,
                            diagnostics: vec![],
                            ended_the_boot: outcome != Outcome::Pass && outcome != Outcome::Fail,
                            guard: guard.clone(),
                            uaf: None,
                            todo: todo.map(String::from),
                            objections,
                            site: None,
                            usage: None,
                            usage_verdict: None,
                        });
                    }
                }
            }
        }
        out
    }

    /// One of each kind of expectation: a plain check, a recovering stack
    /// scenario, one that stops the machine caught, one that resets, a
    /// negative control.
    const KINDS: [&str; 6] = [
        "boot.smoke",
        "stack.recursion",
        "stack.direct_legacy",
        "stack.irq",
        "stack.df_overflow",
        "selftest.hang",
    ];

    #[test]
    fn nonzero_exactly_when_the_summary_says_fail() {
        for mode in [Mode::Run, Mode::Test] {
            for name in KINDS {
                for result in results(name) {
                    let mark = summary::mark(mode, &result);
                    let shown = format!(
                        "{mode:?} {name} {} skipped={} todo={:?} objections={:?} verdict={:?}",
                        result.outcome.as_str(),
                        result.skipped,
                        result.todo,
                        result.objections,
                        result.guard.as_ref().map(|g| g.describe())
                    );
                    let records = [record(result)];
                    let code = exit_status(mode, &records);
                    let lines = summary::render(mode, &records, &[], false);
                    let totals = lines.last().unwrap();
                    assert_eq!(
                        code != OK,
                        mark == Mark::Failed,
                        "{shown}: status {code}, {}",
                        lines[0]
                    );
                    let label = lines[0].split(' ').next().unwrap();
                    let want = match mark {
                        Mark::Passed => label == "PASS",
                        Mark::Skipped => label == "SKIP",
                        Mark::Todo => label == "TODO",
                        Mark::Failed => label != "PASS" && label != "SKIP",
                    };
                    assert!(want, "{shown}: marked {mark:?}: {}", lines[0]);
                    assert_eq!(
                        totals.starts_with("0 passed, 1 failed"),
                        mark == Mark::Failed,
                        "{shown}: {totals}"
                    );
                }
            }
        }
    }
}
