//! Was a defect killed? What its boot showed (`Seen`), and the decision
//! against the normal guest's baseline (`decide`, `Fate`).
use crate::defects::Caught;
use crate::output::summary::{self, Mark};
use crate::record::{BootRecord, Mode};
use crate::report::judge::ScenarioResult;
use crate::report::Check;
use abi::Outcome;

/// What the decisive scenario showed on one guest, as far as the decision
/// needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// What `runner test` marks it.
    pub mark: Mark,
    pub outcome: Outcome,
    pub expect: Outcome,
    /// The runner's checks that failed on its fault report.
    pub failed_checks: Vec<Check>,
    /// Why its result is not believed (`report::evidence`).
    pub objections: usize,
    /// The fault came out as the wrong class (`guard-jumped` for an
    /// expected overflow, `not-caught`): the verdict itself, not a check.
    pub wrong_verdict: Option<&'static str>,
    /// What it said: every failure of what had to catch it, else why it
    /// failed at all.
    pub said: Vec<String>,
}

impl Seen {
    pub(super) fn of(record: &BootRecord, result: &ScenarioResult, caught: Caught) -> Seen {
        let failures = result.fault().map(|f| f.failures()).unwrap_or_default();
        let mark = summary::mark(Mode::Test, result);
        let mut said: Vec<String> = match caught {
            Caught::Check(c) => failures
                .iter()
                .filter(|f| f.check == c)
                .map(|f| f.detail.clone())
                .collect(),
            Caught::Guest => result
                .diagnostics
                .iter()
                .filter(|d| d.contains("FAIL"))
                .cloned()
                .collect(),
        };
        if said.is_empty() && mark == Mark::Failed {
            said.push(summary::failure_reason(Mode::Test, record, result));
        }
        Seen {
            mark,
            outcome: result.outcome,
            expect: result.scenario.expect,
            failed_checks: failures.iter().map(|f| f.check).collect(),
            objections: result.objections.len(),
            wrong_verdict: match (&result.guard, &result.uaf) {
                (Some(g), _) if g.observed != g.expected => Some(g.observed.as_str()),
                (None, Some(u)) if !u.caught => Some("not-caught"),
                _ => None,
            },
            said,
        }
    }

    /// The guest reported `not ok` itself: a trusted report's own failure
    /// (`judge::scenario_results` gives `Fail` to nothing else).
    fn guest_failed(&self) -> bool {
        self.outcome == Outcome::Fail
    }

    /// What failed it, as the table says it: `not-ok` for the guest's own
    /// failure, the runner's checks by name, an ending it should not have had.
    pub fn caught_by(&self) -> Vec<String> {
        let mut by = Vec::new();
        if self.guest_failed() && self.expect != Outcome::Fail {
            by.push("not-ok".to_string());
        } else if self.outcome != self.expect {
            by.push(self.outcome.as_str().to_string());
        }
        for check in &self.failed_checks {
            if !by.iter().any(|b| b == check.name()) {
                by.push(check.name().to_string());
            }
        }
        if let Some(verdict) = self.wrong_verdict {
            by.push(format!("verdict={verdict}"));
        }
        if self.objections > 0 {
            by.push("evidence".to_string());
        }
        by
    }
}

/// What the suite made of one defect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Its scenario flipped from pass to fail, by what must catch it.
    Killed,
    /// Not shown to be caught; why.
    Survived(String),
    /// Not run here; why.
    Skipped(String),
    /// The normal guest does not pass the same scenarios: the defect's
    /// result proves nothing either way.
    NoBaseline(String),
}

impl Fate {
    pub fn as_str(&self) -> &'static str {
        match self {
            Fate::Killed => "KILLED",
            Fate::Survived(_) => "SURVIVED",
            Fate::Skipped(_) => "SKIPPED",
            Fate::NoBaseline(_) => "NO BASELINE",
        }
    }

    pub fn why(&self) -> Option<&str> {
        match self {
            Fate::Killed => None,
            Fate::Survived(w) | Fate::Skipped(w) | Fate::NoBaseline(w) => Some(w),
        }
    }

    /// Whether the run may still pass.
    pub fn fine(&self) -> bool {
        matches!(self, Fate::Killed | Fate::Skipped(_))
    }
}

pub fn caught_name(caught: Caught) -> &'static str {
    match caught {
        Caught::Check(c) => c.name(),
        Caught::Guest => "not-ok",
    }
}

/// The decision: `baseline` is whether the normal guest passed the same
/// boots (Err: what it failed), `seen` what the decisive scenario showed on
/// the defect's guest (Err: why it never got a result).
pub fn decide(caught: Caught, baseline: Result<(), String>, seen: Result<&Seen, String>) -> Fate {
    if let Err(why) = baseline {
        return Fate::NoBaseline(why);
    }
    let seen = match seen {
        Ok(seen) => seen,
        Err(why) => return Fate::Survived(format!("did not boot: {why}")),
    };
    match seen.mark {
        Mark::Passed => return Fate::Survived("passed".into()),
        Mark::Skipped => return Fate::Survived("skipped (# SKIP) instead of failing".into()),
        Mark::Todo => return Fate::Survived("passed (a known failure, # TODO)".into()),
        Mark::Failed => {}
    }
    let by = match caught {
        Caught::Check(c) => seen.failed_checks.contains(&c),
        Caught::Guest => seen.guest_failed(),
    };
    if by {
        return Fate::Killed;
    }
    let failed_by = seen.caught_by();
    let did_not_finish = !matches!(seen.outcome, Outcome::Pass | Outcome::Fail)
        && seen.outcome != seen.expect
        && failed_by.len() == 1;
    if did_not_finish {
        Fate::Survived(format!(
            "did not boot through: ended in {}, expected {}",
            seen.outcome.as_str(),
            seen.expect.as_str()
        ))
    } else {
        Fate::Survived(format!(
            "failed, but by {}, not {}",
            failed_by.join(", "),
            caught_name(caught)
        ))
    }
}

/// The normal guest passed every scenario of the plan as `runner test`
/// judges it (skips where allowed), and `decisive` outright.
pub(super) fn passed(records: &[BootRecord], decisive: &str) -> Result<(), String> {
    for record in records {
        for result in &record.results {
            let mark = summary::mark(Mode::Test, result);
            let must_run = result.scenario.name == decisive;
            if mark == Mark::Failed || (must_run && mark != Mark::Passed) {
                return Err(format!(
                    "the normal guest does not pass {}: {}",
                    result.scenario.name,
                    match mark {
                        Mark::Failed => summary::failure_reason(Mode::Test, record, result),
                        _ => "it did not run to a pass".to_string(),
                    }
                ));
            }
        }
    }
    if records
        .iter()
        .flat_map(|r| &r.results)
        .all(|r| r.scenario.name != decisive)
    {
        return Err(format!("the normal guest gave {decisive} no result"));
    }
    Ok(())
}
