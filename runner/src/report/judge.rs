//! From a boot's verdict to each scenario's result, and from a result to
//! whether the scenario behaved as its catalog entry says it should.

use super::classify::Verdict;
use super::stack::StackVerdict;
use super::uaf::UafVerdict;
use super::FaultVerdict;
use abi::{Outcome, Scenario};

#[derive(Clone, Debug)]
pub struct ScenarioResult {
    pub scenario: &'static Scenario,
    pub outcome: Outcome,
    pub skipped: bool,
    /// The scenario's own `# ` lines, or for the one that took the boot down,
    /// what was printed after the last result.
    pub diagnostics: Vec<String>,
    /// Whether this result carries the boot's failure (and so its details).
    pub ended_the_boot: bool,
    /// For stack scenarios: was the fault caught, and told well (`stack`).
    pub guard: Option<StackVerdict>,
    /// For use-after-free scenarios: the same question (`uaf`).
    pub uaf: Option<UafVerdict>,
    /// The guest's `# TODO` on a `not ok`: a failure it knows about, shown
    /// as such (KTAP does not count it as a failure).
    pub todo: Option<String>,
    /// Why the result cannot be believed as the guest gave it: the evidence
    /// it needs is missing (`evidence`). Any objection fails it.
    pub objections: Vec<String>,
    /// Where the scenario's first caught fault was, for a person and for
    /// CI annotations (`report::attach`); `None` when nothing was caught.
    pub site: Option<FaultSite>,
    /// How deep the stacks of the tasks that exited during it went, and
    /// its near misses (`usage`); `None` if the guest told nothing.
    pub usage: Option<super::usage::ScenarioUsage>,
    /// For the usage scenarios: did the records show what they did.
    pub usage_verdict: Option<super::usage::UsageVerdict>,
}

/// A caught fault's place in the guest's source and its report's opening.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultSite {
    /// `path:line` of the faulting code, relative to the repository: the
    /// innermost frame (of the RIP, then the trace) that DWARF places in it.
    pub location: Option<String>,
    /// The first lines of the oops (from its `BUG:` line), as printed.
    pub oops: Vec<String>,
}

impl ScenarioResult {
    /// The scenario's own running time, as the guest measured it (its
    /// `# time:` line, `abi::timing`); `None` for one that stopped the
    /// machine, or a guest that did not say.
    pub fn own_time(&self) -> Option<std::time::Duration> {
        self.diagnostics
            .iter()
            .rev()
            .find_map(|d| abi::timing::ScenarioTime::parse(d))
            .map(|t| std::time::Duration::from_micros(t.us))
    }

    /// The outcome is the expected one and, for a scenario that provokes a
    /// fault, so is the fault's verdict: an `ok` from the guest is not
    /// enough on its own.
    pub fn as_expected(&self) -> bool {
        self.outcome == self.scenario.expect && self.fault_as_expected() && self.believed()
    }

    /// No objection stands against the result.
    pub fn believed(&self) -> bool {
        self.objections.is_empty()
    }

    /// Whether a caught fault, if the scenario provokes one, was caught and
    /// told as it should be.
    pub fn fault_as_expected(&self) -> bool {
        self.fault().is_none_or(|f| f.as_expected())
    }

    /// The verdict on the fault the scenario provokes, if it provokes one.
    pub fn fault(&self) -> Option<&dyn FaultVerdict> {
        match (&self.guard, &self.uaf, &self.usage_verdict) {
            (Some(g), _, _) => Some(g),
            (None, Some(u), _) => Some(u),
            (None, None, Some(s)) => Some(s),
            (None, None, None) => None,
        }
    }

    /// A scenario that provokes a fault (or a near miss) is judged against
    /// what it is for.
    pub fn provokes_fault(&self) -> bool {
        self.scenario.guard.is_some()
            || self.scenario.uaf.is_some()
            || abi::usage::expect(self.scenario.name).is_some()
    }

    /// The near misses told during the scenario.
    pub fn near_misses(&self) -> &[super::usage::NearMissReport] {
        self.usage.as_ref().map_or(&[], |u| &u.near_misses)
    }
}

/// Scenarios that reported before a boot went wrong keep their own result;
/// the rest take the boot's outcome, and at least one always does, so a panic
/// after the last `ok` is still somebody's failure. A malformed report is not
/// believed at all.
pub fn scenario_results(scenarios: &[&'static Scenario], verdict: &Verdict) -> Vec<ScenarioResult> {
    let report = &verdict.report;
    let mut results: Vec<ScenarioResult> = scenarios
        .iter()
        .map(|&scenario| {
            let reported = report.result_named(scenario.name);
            let trusted = reported.filter(|_| verdict.outcome != Outcome::Malformed);
            match trusted {
                Some(r) => ScenarioResult {
                    scenario,
                    outcome: if r.is_failure() {
                        Outcome::Fail
                    } else {
                        Outcome::Pass
                    },
                    skipped: r.is_skip(),
                    diagnostics: r.diagnostics.clone(),
                    ended_the_boot: false,
                    guard: None,
                    uaf: None,
                    todo: match &r.directive {
                        Some(ktap::Directive::Todo(reason)) if !r.ok => Some(reason.clone()),
                        _ => None,
                    },
                    objections: Vec::new(),
                    site: None,
                    usage: None,
                    usage_verdict: None,
                },
                None => ScenarioResult {
                    scenario,
                    outcome: verdict.outcome,
                    skipped: false,
                    diagnostics: reported.map(|r| r.diagnostics.clone()).unwrap_or_default(),
                    ended_the_boot: false,
                    guard: None,
                    uaf: None,
                    todo: None,
                    objections: Vec::new(),
                    site: None,
                    usage: None,
                    usage_verdict: None,
                },
            }
        })
        .collect();
    let abnormal = !matches!(verdict.outcome, Outcome::Pass | Outcome::Fail);
    if abnormal {
        let first_unreported = results
            .iter()
            .position(|r| r.outcome == verdict.outcome)
            .unwrap_or(results.len().saturating_sub(1));
        if let Some(r) = results.get_mut(first_unreported) {
            r.outcome = verdict.outcome;
            r.skipped = false;
            r.todo = None;
            r.ended_the_boot = true;
            r.diagnostics
                .extend(report.trailing_diagnostics.iter().cloned());
        }
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::process::Ended;
    use crate::report::classify::{classify, Evidence};
    use abi::GuestExit;

    static A: Scenario = scenario("a.a", Outcome::Pass);
    static B: Scenario = scenario("b.b", Outcome::Pass);
    static C: Scenario = scenario("c.c", Outcome::Pass);

    const fn scenario(name: &'static str, expect: Outcome) -> Scenario {
        Scenario {
            name,
            summary: "",
            expect,
            isolated: false,
            default: true,
            test_smp: &[1],
            guard: None,
            uaf: None,
            skip: abi::scenario::SkipAllowed::Never,
        }
    }

    fn results(ended: Ended, serial: &str) -> Vec<(&'static str, Outcome, bool)> {
        let verdict = classify(&Evidence {
            ended: &ended,
            serial,
            stderr: "",
            requested: &["a.a", "b.b", "c.c"],
        });
        scenario_results(&[&A, &B, &C], &verdict)
            .into_iter()
            .map(|r| (r.scenario.name, r.outcome, r.ended_the_boot))
            .collect()
    }

    #[test]
    fn a_crash_is_charged_to_the_scenario_that_was_running() {
        let serial = "KTAP version 1\n1..3\nok 1 a.a\n# spinning\n";
        assert_eq!(
            results(Ended::TimedOut(std::time::Duration::from_secs(1)), serial),
            [
                ("a.a", Outcome::Pass, false),
                ("b.b", Outcome::Timeout, true),
                ("c.c", Outcome::Timeout, false),
            ]
        );
    }

    #[test]
    fn a_crash_after_every_result_is_charged_to_the_last() {
        let serial = "KTAP version 1\n1..3\nok 1 a.a\nok 2 b.b\nok 3 c.c\nPANIC cpu=0 x:1 late\n";
        let got = results(Ended::Exited(GuestExit::Panic.qemu_status()), serial);
        assert_eq!(got[2], ("c.c", Outcome::Panic, true));
        assert_eq!(got[0].1, Outcome::Pass);
    }

    #[test]
    fn failures_are_per_scenario_and_malformed_reports_are_not_believed() {
        let serial = "KTAP version 1\n1..3\nok 1 a.a\nnot ok 2 b.b\nok 3 c.c # SKIP\n";
        let got = results(Ended::Exited(GuestExit::Fail.qemu_status()), serial);
        let outcomes: Vec<Outcome> = got.iter().map(|r| r.1).collect();
        assert_eq!(outcomes, [Outcome::Pass, Outcome::Fail, Outcome::Pass]);

        let got = results(Ended::Exited(GuestExit::Pass.qemu_status()), serial);
        assert!(got.iter().all(|r| r.1 == Outcome::Malformed), "{got:?}");
        assert!(got[0].2);
    }

    fn result_of(scenario: &'static Scenario) -> ScenarioResult {
        ScenarioResult {
            scenario,
            outcome: scenario.expect,
            skipped: false,
            diagnostics: Vec::new(),
            ended_the_boot: false,
            guard: None,
            uaf: None,
            todo: None,
            objections: Vec::new(),
            site: None,
            usage: None,
            usage_verdict: None,
        }
    }

    fn stack_verdict(failures: Vec<super::super::Failure>) -> StackVerdict {
        StackVerdict {
            expected: abi::guard::Verdict::Overflow,
            observed: abi::guard::Verdict::Overflow,
            failures,
            hits: 1,
            suppressed: 0,
            stack_kind: None,
            depth: None,
            jumped: None,
            corruption: Vec::new(),
        }
    }

    fn uaf_verdict(caught: bool) -> UafVerdict {
        UafVerdict {
            caught,
            failures: Vec::new(),
            hits: usize::from(caught),
            object: None,
            owner: None,
            history: 0,
        }
    }

    #[test]
    fn the_expected_outcome_is_not_enough_without_the_fault_and_the_evidence() {
        let plain = result_of(&A);
        assert!(plain.believed() && plain.as_expected());
        assert!(!plain.provokes_fault() && plain.fault().is_none());

        let mut doubted = result_of(&A);
        doubted.objections.push("no echo of the request".into());
        assert!(!doubted.believed());
        assert!(!doubted.as_expected(), "an objection fails the result");

        let stack = abi::scenario::find("stack.recursion").unwrap();
        let mut r = result_of(stack);
        assert!(r.provokes_fault() && r.fault().is_none());
        r.guard = Some(stack_verdict(Vec::new()));
        assert!(r.fault_as_expected() && r.as_expected());
        r.guard = Some(stack_verdict(vec![super::super::Failure {
            check: super::super::Check::Bounds,
            detail: "wrong".into(),
        }]));
        assert_eq!(r.fault().map(|f| f.failures().len()), Some(1));
        assert!(!r.fault_as_expected(), "a badly told fault");
        assert!(!r.as_expected(), "a guest `ok` with a badly told fault");

        let uaf = abi::scenario::find("life.uaf").unwrap();
        let mut r = result_of(uaf);
        assert!(r.provokes_fault());
        r.uaf = Some(uaf_verdict(true));
        assert!(r.as_expected());
        r.uaf = Some(UafVerdict {
            failures: vec![super::super::Failure {
                check: super::super::Check::Access,
                detail: "write, not read".into(),
            }],
            ..uaf_verdict(true)
        });
        assert_eq!(r.fault().map(|f| f.failures().len()), Some(1));
        assert!(!r.as_expected());
        r.uaf = Some(uaf_verdict(false));
        assert_eq!(r.fault().map(|f| f.category_str()), Some("not-caught"));
        assert!(!r.fault_as_expected() && !r.as_expected());
    }

    #[test]
    fn only_a_not_ok_carries_its_todo() {
        let serial = "KTAP version 1\n1..3\nok 1 a.a # TODO done already\n\
                      not ok 2 b.b # TODO known bug\nok 3 c.c\n";
        let verdict = classify(&Evidence {
            ended: &Ended::Exited(GuestExit::Pass.qemu_status()),
            serial,
            stderr: "",
            requested: &["a.a", "b.b", "c.c"],
        });
        let todos: Vec<(Outcome, Option<String>)> = scenario_results(&[&A, &B, &C], &verdict)
            .into_iter()
            .map(|r| (r.outcome, r.todo))
            .collect();
        assert_eq!(
            todos,
            [
                (Outcome::Pass, None),
                (Outcome::Pass, Some("known bug".into())),
                (Outcome::Pass, None),
            ]
        );
    }
}
