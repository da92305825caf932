//! Was a use after free caught, and was it told well? Pure: the guest's
//! `UAF-ARMED`/`UAF-HIT` lines (`lines`) and a symbolizer in, a verdict out.
//!
//! The report is held against what the fault handler did not write: the
//! object the scenario announced before touching it (kind, owner, pages,
//! the exact address, the reader), the guest ELF (where the faulting code
//! really is), and the lifetime rules a task's history must obey (a struct
//! is freed only after `delayed_put_task_struct` was queued, which only
//! happens once the task was reaped, after it exited).

use super::lines::{Armed as UafArmed, Events, UseAfterFree as UafHit};
use super::{functions_near, return_addresses, Check, Failure, FaultVerdict};
use crate::symbols::Symbolize;
use abi::kinds::{ObjectKind, TaskEvent};
use abi::uaf::{UafExpect, REQUIRED_HISTORY};
use abi::{Outcome, Scenario};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UafVerdict {
    /// A `UAF-HIT` was reported at all.
    pub caught: bool,
    pub failures: Vec<Failure>,
    pub hits: usize,
    /// From the first report: what was touched, whose it was, and how many
    /// history entries told its life.
    pub object: Option<ObjectKind>,
    pub owner: Option<u64>,
    pub history: usize,
}

impl FaultVerdict for UafVerdict {
    fn as_expected(&self) -> bool {
        self.caught && self.failures.is_empty()
    }

    fn describe(&self) -> String {
        let what = match (&self.object, self.owner) {
            (Some(o), Some(id)) => format!("{o} {id}"),
            _ => "the freed object".to_string(),
        };
        let failed: Vec<&str> = self.failures.iter().map(|f| f.check.name()).collect();
        match (self.caught, failed.is_empty()) {
            (false, _) => "use after free NOT CAUGHT".to_string(),
            (true, true) => format!(
                "use after free caught with good diagnostics ({what}, {} history entries)",
                self.history
            ),
            (true, false) => format!(
                "use after free caught, diagnostics wrong ({what}); wrong: {}",
                failed.join(", ")
            ),
        }
    }

    fn category_str(&self) -> &'static str {
        match (self.caught, self.failures.is_empty()) {
            (false, _) => "not-caught",
            (true, true) => "caught-good",
            (true, false) => "caught-diagnostics-wrong",
        }
    }

    fn failures(&self) -> &[Failure] {
        &self.failures
    }
}

pub fn judge(
    scenario: &Scenario,
    expect: &UafExpect,
    events: &Events,
    symbols: Option<&dyn Symbolize>,
) -> UafVerdict {
    let armed: Vec<&UafArmed> = events.uaf_armed_of(scenario.name).collect();
    let hits: Vec<&UafHit> = events.uaf_hits_of(scenario.name).collect();
    let mut failures: Vec<Failure> = events
        .unreadable_of(scenario.name)
        .map(|line| Failure {
            check: Check::Readable,
            detail: format!(
                "a fault line does not parse: {}",
                line.chars().take(120).collect::<String>()
            ),
        })
        .collect();
    if armed.is_empty() {
        failures.push(Failure {
            check: Check::Announced,
            detail: "no UAF-ARMED announced the freed object: nothing to hold the report against"
                .into(),
        });
    }
    if !hits.is_empty() && hits.len() != armed.len().max(1) {
        failures.push(Failure {
            check: Check::Hits,
            detail: format!(
                "{} UAF-HIT report(s) for {} announced use(s) after free",
                hits.len(),
                armed.len()
            ),
        });
    }
    let recovered = scenario.expect == Outcome::Pass;
    for (i, hit) in hits.iter().enumerate() {
        let truth = armed
            .iter()
            .find(|a| a.owner == hit.owner)
            .or(armed.first())
            .copied();
        let mut found = judge_hit(hit, truth, expect, symbols, recovered);
        if hits.len() > 1 {
            for f in &mut found {
                f.detail = format!("report {}: {}", i + 1, f.detail);
            }
        }
        failures.extend(found);
    }
    let first = hits.first();
    UafVerdict {
        caught: !hits.is_empty(),
        failures,
        hits: hits.len(),
        object: first.map(|h| h.object),
        owner: first.map(|h| h.owner),
        history: first.map_or(0, |h| h.history.len()),
    }
}

fn judge_hit(
    hit: &UafHit,
    truth: Option<&UafArmed>,
    expect: &UafExpect,
    symbols: Option<&dyn Symbolize>,
    recovered: bool,
) -> Vec<Failure> {
    let mut out = Vec::new();
    let mut fail = |check: Check, detail: String| out.push(Failure { check, detail });
    if hit.object != expect.object {
        fail(
            Check::Object,
            format!(
                "reported a {}, the scenario frees a {}",
                hit.object, expect.object
            ),
        );
    }
    if let Some(a) = truth {
        if (hit.object.as_str(), hit.owner) != (a.object.as_str(), a.owner) {
            fail(
                Check::Object,
                format!(
                    "reported {} {}, announced {} {}",
                    hit.object, hit.owner, a.object, a.owner
                ),
            );
        }
        let object = a.base.0..a.base.0.saturating_add(a.bytes);
        if hit.fault_addr.0 != a.addr.0
            || hit.object_base.0 != a.base.0
            || !object.contains(&a.addr.0)
        {
            fail(
                Check::FaultInObject,
                format!(
                    "reported a fault at {:#x} in the object at {:#x}; announced {:#x} in {:#x}..{:#x}",
                    hit.fault_addr.0, hit.object_base.0, a.addr.0, object.start, object.end
                ),
            );
        }
        if hit.task_name != a.reader {
            fail(
                Check::Task,
                format!(
                    "reported task {} '{}', announced reader '{}'",
                    hit.task_id, hit.task_name, a.reader
                ),
            );
        }
    }
    if hit.access != expect.access {
        fail(
            Check::Access,
            format!(
                "reported a {}, the scenario does a {}",
                hit.access, expect.access
            ),
        );
    }
    if let Some(want) = expect.rip_fn {
        match symbols {
            None => fail(
                Check::Backtrace,
                "no guest ELF to symbolize the faulting RIP with".into(),
            ),
            Some(symbols) => {
                let names = functions_near(symbols, hit.rip.0, &return_addresses(&hit.backtrace));
                if !names.iter().any(|n| n.contains(want)) {
                    fail(
                        Check::Backtrace,
                        format!(
                            "no `{want}` at the faulting RIP or in the backtrace: {}",
                            if names.is_empty() {
                                "no known function".to_string()
                            } else {
                                names.join(", ")
                            }
                        ),
                    );
                }
            }
        }
    }
    if expect.object == ObjectKind::TaskStruct {
        if let Err(why) = history_tells_a_life(hit) {
            fail(Check::History, why);
        }
    }
    if hit.recovered != recovered {
        fail(
            Check::Recovered,
            format!(
                "recovered: {}, but the scenario {}",
                hit.recovered,
                if recovered {
                    "expects the reader killed and the boot to go on"
                } else {
                    "cannot recover"
                }
            ),
        );
    }
    out
}

/// The task's history has every event of its life, oldest first, in an
/// order the lifetime rules allow.
fn history_tells_a_life(hit: &UafHit) -> Result<(), String> {
    let h = &hit.history;
    if h.is_empty() {
        return Err(format!("no history told for task {}", hit.owner));
    }
    let first = |event: TaskEvent| h.iter().position(|e| e.event == event);
    let missing: Vec<&str> = REQUIRED_HISTORY
        .iter()
        .copied()
        .filter(|&e| first(e).is_none())
        .map(TaskEvent::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(format!("the history leaves out: {}", missing.join(", ")));
    }
    for &(before, after) in TaskEvent::ORDER {
        if first(before) > first(after) {
            return Err(format!("the history has {after} before {before}"));
        }
    }
    if let Some(w) = h.windows(2).find(|w| w[1].ago_ns > w[0].ago_ns) {
        return Err(format!(
            "the history is not oldest first: {} {} ns ago, then {} {} ns ago",
            w[0].event, w[0].ago_ns, w[1].event, w[1].ago_ns
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::lines::{parse, tests as lines};
    use crate::symbols::tests::Fake;
    use std::collections::HashMap;

    fn judge_log(log: &str) -> UafVerdict {
        let s = abi::scenario::find("life.uaf").unwrap();
        let mut m = HashMap::new();
        m.insert(
            0xffffffff8000f934,
            vec!["guest::scenarios::life::stale_task_read"],
        );
        judge(s, &s.uaf.unwrap(), &parse(log), Some(&Fake(m)))
    }

    fn judged(armed: &str, hit: &str) -> UafVerdict {
        judge_log(&format!("{armed}\nBUG: KFENCE\n{hit}\nok 1 life.uaf\n"))
    }

    fn failed(v: &UafVerdict) -> Vec<&'static str> {
        v.failures.iter().map(|f| f.check.name()).collect()
    }

    #[test]
    fn a_good_report_passes_every_check() {
        let v = judged(lines::UAF_ARMED, lines::UAF_HIT);
        assert_eq!(v.failures, []);
        assert!(v.as_expected());
        assert_eq!(
            v.describe(),
            "use after free caught with good diagnostics (task_struct 6, 6 history entries)"
        );
    }

    /// Each tampered field must be caught by its own check, and only by it.
    #[test]
    fn each_tampered_field_names_its_check() {
        let cases: &[(&str, &str, &[&str])] = &[
            ("\"owner\":6", "\"owner\":5", &["object"]),
            // An object kind the contract does not know is no report at all.
            (
                "\"object\":\"task_struct\"",
                "\"object\":\"mm_struct\"",
                &["readable"],
            ),
            (
                "\"fault_addr\":\"0xffffc9000006d010\"",
                "\"fault_addr\":\"0xffffc9000006d018\"",
                &["fault-in-object"],
            ),
            (
                "\"object_base\":\"0xffffc9000006d000\"",
                "\"object_base\":\"0xffffc9000006e000\"",
                &["fault-in-object"],
            ),
            ("\"access\":\"read\"", "\"access\":\"write\"", &["access"]),
            (
                "\"task_name\":\"stale-reader\"",
                "\"task_name\":\"init\"",
                &["task"],
            ),
            (
                "\"rip\":\"0xffffffff8000f934\"",
                "\"rip\":\"0xffffffff80000000\"",
                &["backtrace"],
            ),
            ("\"recovered\":true", "\"recovered\":false", &["recovered"]),
            // freed before delayed_put_task_struct was even queued
            (
                "\"event\":\"rcu-queued\"",
                "\"event\":\"struct-freed\"",
                &["history"],
            ),
            // a life without its end
            (
                ",{\"event\":\"struct-freed\",\"cpu\":0,\"ago_ns\":6981559}",
                "",
                &["history"],
            ),
            // not oldest first
            ("\"ago_ns\":14400552", "\"ago_ns\":16000000", &["history"]),
        ];
        for (from, to, want) in cases {
            assert!(lines::UAF_HIT.contains(from), "{from}");
            let v = judged(lines::UAF_ARMED, &lines::UAF_HIT.replace(from, to));
            assert_eq!(failed(&v), *want, "{to}: {:?}", v.failures);
            assert_eq!(v.caught, *want != ["readable"], "{to}");
            assert_eq!(v.as_expected(), want.is_empty(), "{to}");
        }
        let v = judged(
            lines::UAF_ARMED,
            &lines::UAF_HIT.replace(
                "\"history\":[{\"event\":\"created\"",
                "\"history\":[],\"x\":[{\"event\":\"created\"",
            ),
        );
        assert_eq!(failed(&v), ["history"], "{:?}", v.failures);
    }

    #[test]
    fn nothing_reported_is_not_caught_and_nothing_announced_is_not_believed() {
        let v = judge_log(&format!("{}\nok 1 life.uaf\n", lines::UAF_ARMED));
        assert!(!v.caught && !v.as_expected());
        assert_eq!(v.category_str(), "not-caught");
        assert_eq!(v.describe(), "use after free NOT CAUGHT");

        let v = judge_log(&format!("{}\nok 1 life.uaf\n", lines::UAF_HIT));
        assert_eq!(failed(&v), ["announced"]);

        let v = judged(
            lines::UAF_ARMED,
            &format!("{}\n{}", lines::UAF_HIT, lines::UAF_HIT),
        );
        assert_eq!(failed(&v), ["hits"]);

        let cut = &lines::UAF_HIT[..lines::UAF_HIT.len() - 40];
        let v = judged(lines::UAF_ARMED, &format!("{cut}\n{}", lines::UAF_HIT));
        assert_eq!(failed(&v), ["readable"]);
    }

    /// Two objects freed and read: each report is held to its own
    /// announcement (by owner), and each failure names its report.
    #[test]
    fn each_report_is_held_to_its_own_announcement() {
        let other = |line: &str| {
            line.replace("\"owner\":6", "\"owner\":9")
                .replace("0xffffc9000006d0", "0xffffc9000007e0")
        };
        let (armed_9, hit_9) = (other(lines::UAF_ARMED), other(lines::UAF_HIT));
        assert_ne!(armed_9, lines::UAF_ARMED);
        let log = |hit_9: &str| {
            format!(
                "{}\n{armed_9}\nBUG: KFENCE\n{}\nBUG: KFENCE\n{hit_9}\nok 1 life.uaf\n",
                lines::UAF_ARMED,
                lines::UAF_HIT
            )
        };
        let v = judge_log(&log(&hit_9));
        assert_eq!(v.failures, [], "{:#?}", v.failures);
        assert_eq!(v.hits, 2);
        let v = judge_log(&log(
            &hit_9.replace("\"access\":\"read\"", "\"access\":\"write\"")
        ));
        assert_eq!(failed(&v), ["access"]);
        assert!(
            v.failures[0].detail.starts_with("report 2: "),
            "{:#?}",
            v.failures
        );
        // One report: nothing to tell apart.
        let v = judged(
            lines::UAF_ARMED,
            &lines::UAF_HIT.replace("\"access\":\"read\"", "\"access\":\"write\""),
        );
        assert_eq!(failed(&v), ["access"]);
        assert!(
            v.failures[0].detail.starts_with("reported a write"),
            "{:#?}",
            v.failures
        );
    }

    /// Every event told, but in an order no life takes; and two events in
    /// the same nanosecond, which is still oldest first.
    #[test]
    fn the_history_must_be_a_possible_life() {
        let swapped = lines::UAF_HIT
            .replacen("\"event\":\"exited\"", "\"event\":\"EXITED\"", 1)
            .replacen("\"event\":\"reaped\"", "\"event\":\"exited\"", 1)
            .replacen("\"event\":\"EXITED\"", "\"event\":\"reaped\"", 1);
        assert_ne!(swapped, lines::UAF_HIT);
        let v = judged(lines::UAF_ARMED, &swapped);
        assert_eq!(failed(&v), ["history"]);
        assert!(
            v.failures[0]
                .detail
                .contains("the history has switched-away before exited"),
            "{:#?}",
            v.failures
        );
        let same_ns = lines::UAF_HIT.replace("\"ago_ns\":14400552", "\"ago_ns\":14501037");
        assert_ne!(same_ns, lines::UAF_HIT);
        let v = judged(lines::UAF_ARMED, &same_ns);
        assert_eq!(v.failures, [], "{:#?}", v.failures);
    }
}
