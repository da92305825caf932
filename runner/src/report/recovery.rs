//! Is a fault report's `recovered: true` backed by proof, and did the kill
//! path decide what the task's state called for? Pure: the guest's records
//! in, failures out.
//!
//! The guest prints, for every caught fault, a `TASK-STATE` (what the task
//! held, the exit policy's decision) and, after every kill, a `RECOVERY`
//! (preempt_count back to 0, nothing left in service at the LAPIC, nothing
//! left on the dead task's held-lock stack, the tick advancing on that CPU,
//! a grace period begun after the kill completed), and per scenario a
//! `RECOVERY-TALLY` that accounts for kills whose reports were suppressed.
//! A claim of recovery without its proof, a proof that does not hold, or a
//! decision the task's state does not call for (`abi::held::EXPECT` for
//! the atomic-context scenarios) is a failed check.

use super::lines::{read, read_lines, Seen};
use super::{Check, Failure};
use abi::held::{Decision, Recovery, RecoveryTally, TaskState};
use abi::Scenario;

/// The recovery records of one boot.
#[derive(Clone, Debug, Default)]
pub struct Records<'a> {
    pub states: Vec<Seen<TaskState<'a>>>,
    pub recoveries: Vec<Seen<Recovery<'a>>>,
    pub tallies: Vec<Seen<RecoveryTally<'a>>>,
    /// Lines with one of these prefixes that do not parse.
    pub unreadable: Vec<(usize, &'a str)>,
}

pub fn parse(serial: &str) -> Records<'_> {
    let mut r = Records::default();
    r.unreadable = read_lines(serial, |line, i| {
        read(line, i, &mut r.states)
            .or_else(|| read(line, i, &mut r.recoveries))
            .or_else(|| read(line, i, &mut r.tallies))
    });
    r
}

/// What one fault report claims about its task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    pub task_id: u64,
    pub recovered: bool,
}

fn fail(out: &mut Vec<Failure>, check: Check, detail: String) {
    out.push(Failure { check, detail });
}

/// Hold a scenario's fault reports (`claims`, plus `suppressed` reports the
/// guest counted but did not print) against its recovery records.
pub fn judge(
    scenario: &Scenario,
    claims: &[Claim],
    suppressed: u64,
    records: &Records,
) -> Vec<Failure> {
    let name = scenario.name;
    let mut out = Vec::new();
    let needle = format!("\"scenario\":\"{name}\"");
    for (_, line) in records
        .unreadable
        .iter()
        .filter(|(_, l)| l.contains(&needle))
    {
        let shown: String = line.chars().take(120).collect();
        fail(
            &mut out,
            Check::TaskState,
            format!("a recovery record does not parse: {shown}"),
        );
    }
    let expect = abi::held::expect(name);
    for c in claims {
        let state = records
            .states
            .iter()
            .find(|s| s.scenario == name && s.task_id == c.task_id);
        match state {
            None => fail(
                &mut out,
                Check::TaskState,
                format!(
                    "no TASK-STATE for task {}: what it held is not told",
                    c.task_id
                ),
            ),
            Some(s) => judge_state(s, c, expect, &mut out),
        }
        if c.recovered {
            judge_recovery(name, c, records, &mut out);
        }
    }
    let recovered = claims.iter().filter(|c| c.recovered).count() as u64;
    if recovered > 0 {
        let tally = records.tallies.iter().rev().find(|t| t.scenario == name);
        match tally {
            None => fail(
                &mut out,
                Check::Recovered,
                "no RECOVERY-TALLY: the scenario's kills are not accounted for".into(),
            ),
            Some(t) => {
                let claimed = recovered + suppressed;
                if t.kills < claimed {
                    fail(
                        &mut out,
                        Check::Recovered,
                        format!(
                            "{} kills tallied, but {claimed} reports claim a recovered kill",
                            t.kills
                        ),
                    );
                }
                if t.proven != t.kills || t.pending != 0 {
                    fail(
                        &mut out,
                        Check::Recovered,
                        format!(
                            "recovery proven after {} of {} kills ({} pending)",
                            t.proven, t.kills, t.pending
                        ),
                    );
                }
            }
        }
    }
    out
}

fn judge_state(
    s: &TaskState,
    c: &Claim,
    expect: Option<&abi::held::AtomicExpect>,
    out: &mut Vec<Failure>,
) {
    let killed = s.decision == Decision::Kill;
    if killed != c.recovered {
        fail(
            out,
            Check::TaskState,
            format!(
                "the report says recovered: {}, but the exit policy decided `{}`",
                c.recovered, s.decision
            ),
        );
    }
    let resets = (s.reset_preempt, s.reset_rcu, s.reset_irqs);
    match expect {
        Some(e) => {
            if s.decision != e.decision {
                fail(
                    out,
                    Check::TaskState,
                    format!(
                        "decided `{}`, expected `{}` for what the task held",
                        s.decision, e.decision
                    ),
                );
            }
            if s.stop != e.stop {
                fail(
                    out,
                    Check::TaskState,
                    format!(
                        "stop reason {}, expected {}",
                        s.stop.map_or("none", |k| k.as_str()),
                        e.stop.map_or("none", |k| k.as_str())
                    ),
                );
            }
            if let Some(want) = e.stopped_by {
                let by = s.stopped_by.map(|h| h.name);
                if by != Some(want) {
                    fail(
                        out,
                        Check::TaskState,
                        format!(
                            "stopped by {}, expected {want}",
                            by.unwrap_or("nothing named")
                        ),
                    );
                } else if !s.held.iter().any(|h| h.name == want) {
                    fail(
                        out,
                        Check::TaskState,
                        format!("{want} decided the stop but is not in the held list"),
                    );
                }
            }
            if resets != (e.reset_preempt, e.reset_rcu, e.reset_irqs) {
                fail(
                    out,
                    Check::TaskState,
                    format!(
                        "reset preempt {}, rcu {}, irqs {}; expected {}, {}, {}",
                        resets.0, resets.1, resets.2, e.reset_preempt, e.reset_rcu, e.reset_irqs
                    ),
                );
            }
        }
        // Any other killed task held nothing: nothing to reset.
        None if killed && resets != (0, 0, false) => fail(
            out,
            Check::TaskState,
            format!(
                "reset preempt {}, rcu {}, irqs {} for a task that should hold nothing",
                resets.0, resets.1, resets.2
            ),
        ),
        None => {}
    }
    if killed && s.locks != 0 {
        fail(
            out,
            Check::TaskState,
            format!("killed while holding {} lock(s)", s.locks),
        );
    }
}

fn judge_recovery(name: &str, c: &Claim, records: &Records, out: &mut Vec<Failure>) {
    let proof = records
        .recoveries
        .iter()
        .find(|r| r.scenario == name && r.task_id == c.task_id);
    match proof {
        None => fail(
            out,
            Check::Recovered,
            format!(
                "recovered: true for task {}, but no RECOVERY proves it",
                c.task_id
            ),
        ),
        Some(r) => {
            let wrong: Vec<&str> = r.failures().collect();
            if !wrong.is_empty() {
                fail(
                    out,
                    Check::Recovered,
                    format!(
                        "kill of task {} not proven: {}",
                        c.task_id,
                        wrong.join("; ")
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATE: &str = r#"TASK-STATE {"scenario":"stack.recursion","cpu":0,"task_id":4,"task_name":"recurse","preempt_count":0,"preempt":0,"rcu":0,"rcu_callbacks":0,"irq_nesting":0,"irqs_enabled":true,"locks":0,"held":[],"lost":0,"decision":"kill","stop":null,"stopped_by":null,"reset_preempt":0,"reset_rcu":0,"reset_irqs":false}"#;
    const PROOF: &str = r#"RECOVERY {"scenario":"stack.recursion","task_id":4,"cpu":0,"kill":1,"preempt_count":0,"in_service":0,"held_left":0,"locks_left":0,"incomplete":false,"ticks_at_kill":5,"ticks_after":7,"gp_at_kill":2,"gp_completed":3,"waited_us":3427}"#;
    const TALLY: &str =
        r#"RECOVERY-TALLY {"scenario":"stack.recursion","kills":1,"proven":1,"pending":0}"#;

    fn scenario(name: &str) -> &'static Scenario {
        abi::scenario::find(name).expect("in the catalog")
    }

    fn judged(name: &str, log: &str, claims: &[Claim], suppressed: u64) -> Vec<Check> {
        judge(scenario(name), claims, suppressed, &parse(log))
            .into_iter()
            .map(|f| f.check)
            .collect()
    }

    const KILLED: Claim = Claim {
        task_id: 4,
        recovered: true,
    };

    #[test]
    fn a_proven_kill_passes_and_each_missing_piece_fails() {
        let all = format!("{STATE}\n{PROOF}\n{TALLY}\n");
        assert_eq!(judged("stack.recursion", &all, &[KILLED], 0), []);
        let no_state = format!("{PROOF}\n{TALLY}\n");
        assert_eq!(
            judged("stack.recursion", &no_state, &[KILLED], 0),
            [Check::TaskState]
        );
        let no_proof = format!("{STATE}\n{TALLY}\n");
        assert_eq!(
            judged("stack.recursion", &no_proof, &[KILLED], 0),
            [Check::Recovered]
        );
        let no_tally = format!("{STATE}\n{PROOF}\n");
        assert_eq!(
            judged("stack.recursion", &no_tally, &[KILLED], 0),
            [Check::Recovered]
        );
        // Suppressed reports must be tallied too.
        assert_eq!(
            judged("stack.recursion", &all, &[KILLED], 999),
            [Check::Recovered]
        );
    }

    #[test]
    fn every_recovery_claim_is_held_to_its_proof() {
        for (from, to) in [
            ("\"preempt_count\":0,\"in", "\"preempt_count\":1,\"in"),
            ("\"in_service\":0", "\"in_service\":1"),
            ("\"locks_left\":0", "\"locks_left\":1"),
            ("\"held_left\":0", "\"held_left\":2"),
            ("\"incomplete\":false", "\"incomplete\":true"),
            ("\"ticks_after\":7", "\"ticks_after\":6"),
            ("\"gp_completed\":3", "\"gp_completed\":2"),
        ] {
            let bad = PROOF.replace(from, to);
            assert_ne!(bad, PROOF, "{from}");
            let log = format!("{STATE}\n{bad}\n{TALLY}\n");
            assert_eq!(
                judged("stack.recursion", &log, &[KILLED], 0),
                [Check::Recovered],
                "{to}"
            );
        }
        let unproven = TALLY.replace("\"proven\":1", "\"proven\":0");
        let log = format!("{STATE}\n{PROOF}\n{unproven}\n");
        assert_eq!(
            judged("stack.recursion", &log, &[KILLED], 0),
            [Check::Recovered]
        );
    }

    #[test]
    fn the_decision_must_fit_what_the_task_held() {
        // A kill while a lock is held, and a report that disagrees with it.
        let locked = STATE.replace("\"locks\":0", "\"locks\":1");
        let log = format!("{locked}\n{PROOF}\n{TALLY}\n");
        assert_eq!(
            judged("stack.recursion", &log, &[KILLED], 0),
            [Check::TaskState]
        );
        let stopped = STATE.replace("\"decision\":\"kill\"", "\"decision\":\"stop\"");
        let log = format!("{stopped}\n{PROOF}\n{TALLY}\n");
        assert_eq!(
            judged("stack.recursion", &log, &[KILLED], 0),
            [Check::TaskState]
        );
        // A task that held nothing has nothing to reset.
        let reset = STATE.replace("\"reset_rcu\":0", "\"reset_rcu\":1");
        let log = format!("{reset}\n{PROOF}\n{TALLY}\n");
        assert_eq!(
            judged("stack.recursion", &log, &[KILLED], 0),
            [Check::TaskState]
        );
    }

    #[test]
    fn atomic_scenarios_are_held_to_their_expectation() {
        let lock = r#"{"kind":"spin-lock","name":"victim_lock","file":"guest/src/scenarios/atomic.rs","line":40}"#;
        let state = format!(
            r#"TASK-STATE {{"scenario":"stack.lock_held","cpu":0,"task_id":9,"task_name":"lock-holder","preempt_count":0,"preempt":0,"rcu":0,"rcu_callbacks":0,"irq_nesting":0,"irqs_enabled":true,"locks":1,"held":[{lock}],"lost":0,"decision":"stop","stop":"lock-held","stopped_by":{lock},"reset_preempt":0,"reset_rcu":0,"reset_irqs":false}}"#
        );
        let claim = [Claim {
            task_id: 9,
            recovered: false,
        }];
        assert_eq!(judged("stack.lock_held", &state, &claim, 0), []);
        let other = state.replace("victim_lock", "tasklist_lock");
        assert_eq!(
            judged("stack.lock_held", &other, &claim, 0),
            [Check::TaskState]
        );
        let killed = state
            .replace("\"decision\":\"stop\"", "\"decision\":\"kill\"")
            .replace("\"stop\":\"lock-held\"", "\"stop\":null");
        let got = judged("stack.lock_held", &killed, &claim, 0);
        assert!(
            got.iter().all(|c| *c == Check::TaskState) && got.len() >= 3,
            "{got:?}"
        );
    }

    /// Each claim is held to its own task's records, in its own scenario,
    /// and the tally covers the printed and the suppressed kills together.
    #[test]
    fn records_are_matched_by_scenario_and_task_and_tallies_add_up() {
        let all = format!("{STATE}\n{PROOF}\n{TALLY}\n");
        let other_task = Claim {
            task_id: 5,
            ..KILLED
        };
        let checks = judged("stack.recursion", &all, &[other_task], 0);
        assert!(checks.contains(&Check::TaskState), "{checks:?}");
        // Task 5's state is told, but only task 4's kill is proven.
        let state_5 = STATE.replace("\"task_id\":4", "\"task_id\":5");
        let log = format!("{state_5}\n{PROOF}\n{TALLY}\n");
        assert_eq!(
            judged("stack.recursion", &log, &[other_task], 0),
            [Check::Recovered]
        );
        let elsewhere = all.replace("stack.recursion", "stack.underflow");
        let checks = judged("stack.recursion", &elsewhere, &[KILLED], 0);
        assert!(checks.contains(&Check::TaskState), "{checks:?}");

        // One printed kill and two suppressed: three kills to tally.
        let tally = |kills: u64| {
            TALLY
                .replace("\"kills\":1", &format!("\"kills\":{kills}"))
                .replace("\"proven\":1", &format!("\"proven\":{kills}"))
        };
        let log = |kills| format!("{STATE}\n{PROOF}\n{}\n", tally(kills));
        assert_eq!(judged("stack.recursion", &log(3), &[KILLED], 2), []);
        assert_eq!(
            judged("stack.recursion", &log(2), &[KILLED], 2),
            [Check::Recovered]
        );
    }
}
