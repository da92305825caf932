//! What shows a result is real, beyond the guest's word for it. A guest
//! that never ran (a loader that died, a "QEMU" that exits 0 and prints
//! nothing) must pass nothing, and neither may a guest that skips, or says
//! `ok`, where it has nothing to show:
//!
//! - every boot echoes the configuration it ran with (`GUEST-CONFIG`), and
//!   it is the one the run asked for;
//! - a scenario expected to stop the machine first showed that the guest
//!   ran it: the KTAP header, then the scenario's announcement of what it
//!   was about to break;
//! - "not caught" is a verdict only with that announcement and a witness
//!   after the fact: the damage found (`STACK-CORRUPTION`), the guest's own
//!   `not ok`, or the machine stopping in the scenario;
//! - a SKIP is an answer only where the catalog allows it.
//!
//! A missing piece of evidence is an objection against the result (or, for
//! "not caught", a failed check of its stack verdict): either fails it.

use super::judge::ScenarioResult;
use super::lines::Events;
use super::{Check, Failure};
use abi::config::{GuestConfig, TaskStructs, Workload};
use abi::kinds::{FreeMode, Strategy};
use abi::scenario::SkipAllowed;
use abi::{Outcome, Record};

/// The configuration a run asked the guest for; `None` is left to the
/// guest's default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Requested {
    pub stack_strategy: Option<Strategy>,
    pub stack_size: Option<u64>,
    pub guard_pages: Option<u64>,
    pub near_miss_percent: Option<u64>,
    pub stack_free: Option<FreeMode>,
    pub task_structs: Option<TaskStructs>,
    pub workload: Option<Workload>,
}

/// Hold every result of one boot against its log: objections for what is
/// missing, failed checks for an unwitnessed "not caught".
pub fn check(
    results: &mut [ScenarioResult],
    serial: &str,
    report: &ktap::Report,
    smp: u32,
    requested: &Requested,
) {
    let events = super::lines::parse(serial);
    let config = configuration(serial, requested);
    let header = header_line(serial, report);
    for r in results.iter_mut() {
        r.objections.extend(config.iter().cloned());
        if let Some(skip) = refused_skip(r, smp) {
            r.objections.push(skip);
        }
        if stops_the_machine(r.scenario.expect) {
            r.objections.extend(ran(r, header, &events));
        }
        let unwitnessed = not_caught(r, &events);
        if let Some(guard) = &mut r.guard {
            guard.failures.extend(unwitnessed);
        }
    }
}

/// The boot's echo against the request, as sentences (empty if they agree).
pub fn configuration(serial: &str, requested: &Requested) -> Vec<String> {
    let echoes: Vec<&str> = serial
        .lines()
        .filter_map(abi::record::json_in::<GuestConfig>)
        .collect();
    let Some(first) = echoes.first() else {
        return vec![format!(
            "the guest echoed no configuration (no {}line): nothing shows it ran",
            GuestConfig::PREFIX
        )];
    };
    let echoed = match serde_json::from_str::<GuestConfig>(first) {
        Ok(config) => config,
        Err(e) => {
            let shown: String = first.chars().take(120).collect();
            return vec![format!(
                "the guest's {}line does not parse ({e}): {shown}",
                GuestConfig::PREFIX
            )];
        }
    };
    let mut wrong = Vec::new();
    if echoes.iter().any(|e| e != first) {
        wrong.push(format!(
            "the guest echoed {} different configurations in one boot",
            echoes.len()
        ));
    }
    let mut differs = |what: &str, asked: Option<String>, used: String| {
        if let Some(asked) = asked.filter(|a| *a != used) {
            wrong.push(format!(
                "asked for {what} {asked}, the guest ran with {used}: this run did not test what was asked"
            ));
        }
    };
    let text = |s: &dyn ToString| s.to_string();
    differs(
        "--stack-strategy",
        requested.stack_strategy.map(|s| text(&s)),
        text(&echoed.stack_strategy),
    );
    differs(
        "--stack-size",
        requested.stack_size.map(|n| text(&n)),
        text(&echoed.stack_size),
    );
    differs(
        "--guard-pages",
        requested.guard_pages.map(|n| text(&n)),
        text(&echoed.guard_pages),
    );
    differs(
        "--near-miss-percent",
        requested.near_miss_percent.map(|n| text(&n)),
        text(&echoed.near_miss_percent),
    );
    differs(
        "--stack-free",
        requested.stack_free.map(|m| text(&m)),
        text(&echoed.stack_free),
    );
    differs(
        "task structs in",
        requested.task_structs.map(|t| text(&t)),
        text(&echoed.task_structs),
    );
    differs(
        "workload",
        requested.workload.map(|w| text(&w)),
        text(&echoed.workload),
    );
    wrong
}

/// The outcomes that take the machine down: a scenario expected to end
/// so passes on how the boot ended, not on a line the guest printed.
fn stops_the_machine(expect: Outcome) -> bool {
    !matches!(expect, Outcome::Pass | Outcome::Fail)
}

/// Where the KTAP report starts in the log, if it does (version and plan).
fn header_line(serial: &str, report: &ktap::Report) -> Option<usize> {
    if report.version.is_none() || report.plan.is_none() {
        return None;
    }
    serial.lines().position(|l| l.contains("KTAP version"))
}

/// What is missing to show the guest ran a scenario that stopped the machine.
fn ran(r: &ScenarioResult, header: Option<usize>, events: &Events) -> Vec<String> {
    let name = r.scenario.name;
    let Some(header) = header else {
        return vec![format!(
            "no KTAP header and plan: nothing shows the guest ever started {name}"
        )];
    };
    let announced = if r.scenario.guard.is_some() {
        Some((
            "STACK-ALLOC",
            events.allocs_of(name).any(|a| a.line > header),
        ))
    } else if r.scenario.uaf.is_some() {
        Some((
            "UAF-ARMED",
            events.uaf_armed_of(name).any(|a| a.line > header),
        ))
    } else {
        None
    };
    match announced {
        Some((record, false)) => vec![format!(
            "no {record} for {name} after the KTAP header: nothing shows the guest reached it before the machine stopped"
        )],
        _ => Vec::new(),
    }
}

/// A skip the catalog does not allow at this CPU count.
fn refused_skip(r: &ScenarioResult, smp: u32) -> Option<String> {
    if !r.skipped || r.scenario.skip.allows(smp) {
        return None;
    }
    let allowed = match r.scenario.skip {
        SkipAllowed::Never => "never allows it a skip".to_string(),
        SkipAllowed::BelowCpus(n) => format!("allows it a skip only below {n} CPUs"),
    };
    Some(format!(
        "the guest skipped {} at smp={smp}, but the catalog {allowed}",
        r.scenario.name
    ))
}

/// For a stack verdict of "not caught": what is missing to believe it.
fn not_caught(r: &ScenarioResult, events: &Events) -> Vec<Failure> {
    let Some(guard) = &r.guard else {
        return Vec::new();
    };
    // A scenario the boot never reached has its failure already ("did not
    // run"); a missing witness would only repeat it.
    let ran = r.ended_the_boot || matches!(r.outcome, Outcome::Pass | Outcome::Fail);
    if guard.observed != abi::guard::Verdict::NotCaught || !ran {
        return Vec::new();
    }
    let name = r.scenario.name;
    let mut out = Vec::new();
    if events.allocs_of(name).next().is_none() {
        out.push(Failure {
            check: Check::Announced,
            detail: format!(
                "no STACK-ALLOC: nothing shows {name} overflowed a stack, so \"not caught\" is unproven"
            ),
        });
    }
    let damage = events.corruptions_of(name).next().is_some();
    let own_not_ok = r.outcome == Outcome::Fail && !r.ended_the_boot;
    if !(damage || own_not_ok || r.ended_the_boot) {
        out.push(Failure {
            check: Check::Witnessed,
            detail: format!(
                "no fault report, and nothing after the fact either (no STACK-CORRUPTION, no `not ok`, the machine went on): \"not caught\" for {name} is unproven"
            ),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::lines::tests::{alloc, CORRUPTION};

    const CONFIG: &str = r#"GUEST-CONFIG {"stack_strategy":"vmap-cached","stack_size":16384,"guard_pages":1,"stack_free":"exit","task_structs":"heap","workload":"check"}"#;

    #[test]
    fn the_echo_must_be_there_and_be_what_was_asked() {
        let none = Requested::default();
        assert_eq!(configuration(CONFIG, &none), Vec::<String>::new());
        let asked = Requested {
            stack_size: Some(16384),
            guard_pages: Some(1),
            stack_free: Some(FreeMode::Exit),
            ..Requested::default()
        };
        assert_eq!(configuration(CONFIG, &asked), Vec::<String>::new());
        let asked = Requested {
            stack_size: Some(8192),
            task_structs: Some(TaskStructs::Vmalloc),
            near_miss_percent: Some(75),
            ..Requested::default()
        };
        let wrong = configuration(&format!("loader: ok\n{CONFIG}\n"), &asked);
        assert_eq!(wrong.len(), 3, "{wrong:?}");
        assert!(wrong[0].contains("--stack-size 8192, the guest ran with 16384"));
        // An echo from before the field says the default.
        assert!(wrong[1].contains("--near-miss-percent 75, the guest ran with 90"));
        let echoed = CONFIG.replace("}", ",\"near_miss_percent\":75}");
        let asked = Requested {
            near_miss_percent: Some(75),
            ..Requested::default()
        };
        assert_eq!(configuration(&echoed, &asked), Vec::<String>::new());
        let missing = configuration("KTAP version 1\n1..1\nok 1 a.b\n", &none);
        assert!(missing[0].contains("no GUEST-CONFIG"), "{missing:?}");
        let garbled = configuration("GUEST-CONFIG {\"stack\n", &none);
        assert!(garbled[0].contains("does not parse"), "{garbled:?}");
        let twice = format!("{CONFIG}\n{}\n", CONFIG.replace("16384", "8192"));
        assert!(configuration(&twice, &none)[0].contains("2 different"));
    }

    /// The result as the judge gives it, for a boot that ended in `outcome`.
    fn result(name: &str, outcome: Outcome, serial: &str) -> ScenarioResult {
        use abi::GuestExit;
        let scenario = abi::scenario::find(name).unwrap();
        let status = match outcome {
            Outcome::Pass => GuestExit::Pass.qemu_status(),
            Outcome::Fail => GuestExit::Fail.qemu_status(),
            _ => 0,
        };
        let verdict = crate::report::classify::classify(&crate::report::classify::Evidence {
            ended: &crate::boot::process::Ended::Exited(status),
            serial,
            stderr: "",
            requested: &[name],
        });
        let mut r = crate::report::judge::scenario_results(&[scenario], &verdict).remove(0);
        r.outcome = outcome;
        r.ended_the_boot = stops_the_machine(outcome);
        r
    }

    fn objections(name: &str, outcome: Outcome, serial: &str, smp: u32) -> Vec<String> {
        let mut results = [result(name, outcome, serial)];
        let report = ktap::parse(serial);
        check(&mut results, serial, &report, smp, &Requested::default());
        results[0].objections.clone()
    }

    #[test]
    fn stopping_the_machine_needs_the_header_and_the_announcement() {
        let alloc = alloc().replace("stack.recursion", "stack.df_overflow");
        let good = format!("{CONFIG}\nKTAP version 1\n1..1\n{alloc}\n");
        assert_eq!(
            objections("stack.df_overflow", Outcome::Reset, &good, 1),
            Vec::<String>::new()
        );
        // A loader that died first, a QEMU that printed nothing.
        for serial in ["", "loader: jumping to the guest\n"] {
            let o = objections("stack.df_overflow", Outcome::Reset, serial, 1);
            assert!(o.iter().any(|o| o.contains("no KTAP header")), "{o:?}");
            assert!(o.iter().any(|o| o.contains("no GUEST-CONFIG")), "{o:?}");
        }
        // A version line without a plan is no report begun.
        let no_plan = format!("{CONFIG}\nKTAP version 1\n{alloc}\n");
        let o = objections("stack.df_overflow", Outcome::Reset, &no_plan, 1);
        assert!(
            o.iter().any(|o| o.contains("no KTAP header and plan")),
            "{o:?}"
        );
        let no_alloc = format!("{CONFIG}\nKTAP version 1\n1..1\n");
        let o = objections("stack.df_overflow", Outcome::Reset, &no_alloc, 1);
        assert_eq!(o.len(), 1, "{o:?}");
        assert!(
            o[0].contains("no STACK-ALLOC for stack.df_overflow"),
            "{o:?}"
        );
        // An announcement before the report began is not this scenario's.
        let early = format!("{alloc}\n{CONFIG}\nKTAP version 1\n1..1\n");
        assert_eq!(
            objections("stack.df_overflow", Outcome::Reset, &early, 1).len(),
            1
        );
        // A control with no announcement needs the header only.
        let header = format!("{CONFIG}\nKTAP version 1\n1..1\n");
        assert!(objections("selftest.triple_fault", Outcome::Reset, &header, 1).is_empty());
        assert_eq!(
            objections("selftest.hang", Outcome::Timeout, CONFIG, 1).len(),
            1
        );
    }

    #[test]
    fn skips_only_where_the_catalog_allows() {
        let skipped = |name: &str| {
            format!("{CONFIG}\nKTAP version 1\n1..1\nok 1 {name} # SKIP needs at least 2 CPUs\n")
        };
        assert!(objections("stack.ap", Outcome::Pass, &skipped("stack.ap"), 1).is_empty());
        let o = objections("stack.ap", Outcome::Pass, &skipped("stack.ap"), 4);
        assert!(o[0].contains("only below 2 CPUs"), "{o:?}");
        let o = objections(
            "stack.recursion",
            Outcome::Pass,
            &skipped("stack.recursion"),
            1,
        );
        assert!(o[0].contains("never allows"), "{o:?}");
    }

    fn not_caught_failures(serial: &str, outcome: Outcome) -> Vec<&'static str> {
        let mut r = result("stack.direct_legacy", outcome, serial);
        r.guard = Some(crate::report::stack::judge(
            r.scenario,
            &r.scenario.guard.unwrap(),
            1,
            &crate::report::lines::parse(serial),
            &[],
            None,
        ));
        let report = ktap::parse(serial);
        let mut results = [r];
        check(&mut results, serial, &report, 1, &Requested::default());
        let guard = results[0].guard.as_ref().unwrap();
        guard.failures.iter().map(|f| f.check.name()).collect()
    }

    #[test]
    fn not_caught_needs_the_announcement_and_a_witness() {
        // The CPU map lets the LAPIC check hold the allocation's CPU.
        let ok = "CPU-MAP {\"lapic_ids\":[0]}\nKTAP version 1\n1..1\nok 1 stack.direct_legacy\n";
        let good = format!("{CONFIG}\n{}\n{CORRUPTION}\n{ok}", alloc())
            .replace("stack.recursion", "stack.direct_legacy");
        assert!(not_caught_failures(&good, Outcome::Pass).is_empty());
        // A forged `ok` alone.
        assert_eq!(
            not_caught_failures(&format!("{CONFIG}\n{ok}"), Outcome::Pass),
            ["announced", "witnessed"]
        );
        // Announced, but nothing after the fact.
        let announced = format!("{CONFIG}\n{}\n{ok}", alloc())
            .replace("stack.recursion", "stack.direct_legacy");
        assert_eq!(
            not_caught_failures(&announced, Outcome::Pass),
            ["witnessed"]
        );
        // A boot that stopped in the scenario witnesses it, but not the announcement.
        assert_eq!(
            not_caught_failures(&format!("{CONFIG}\nKTAP version 1\n1..1\n"), Outcome::Reset),
            ["announced"]
        );
        // The guest's own `not ok` witnesses it.
        let not_ok = announced.replace("ok 1 stack", "not ok 1 stack");
        assert!(not_caught_failures(&not_ok, Outcome::Fail).is_empty());
    }

    /// A use after free that stops the machine (no such scenario yet: the
    /// catalog's is contained) shows it ran by its UAF-ARMED after the header.
    #[test]
    fn a_fatal_use_after_free_needs_its_announcement_after_the_header() {
        let contained = abi::scenario::find("life.uaf").unwrap();
        let fatal: &'static abi::Scenario = Box::leak(Box::new(abi::Scenario {
            expect: Outcome::CaughtFatal,
            ..*contained
        }));
        let objections = |serial: &str| {
            let header = header_line(serial, &ktap::parse(serial));
            let mut r = result("life.uaf", Outcome::CaughtFatal, serial);
            r.scenario = fatal;
            ran(&r, header, &crate::report::lines::parse(serial))
        };
        let header = format!("{CONFIG}\nKTAP version 1\n1..1\n");
        let armed = crate::report::lines::tests::UAF_ARMED;
        assert_eq!(
            objections(&format!("{header}{armed}\n")),
            Vec::<String>::new()
        );
        for serial in [header.clone(), format!("{armed}\n{header}")] {
            let o = objections(&serial);
            assert_eq!(o.len(), 1, "{o:?}");
            assert!(
                o[0].contains("no UAF-ARMED for life.uaf after the KTAP header"),
                "{o:?}"
            );
        }
    }

    /// Only "not caught" needs a witness: a caught fault is its own.
    #[test]
    fn a_caught_fault_needs_no_witness() {
        let serial = crate::report::fixture::STACK;
        let mut r = result("stack.recursion", Outcome::Pass, serial);
        let events = crate::report::lines::parse(serial);
        r.guard = Some(crate::report::stack::judge(
            r.scenario,
            &r.scenario.guard.unwrap(),
            1,
            &events,
            &[],
            None,
        ));
        let before = r.guard.as_ref().unwrap().failures.clone();
        assert_eq!(
            r.guard.as_ref().unwrap().observed,
            abi::guard::Verdict::Overflow
        );
        let mut results = [r];
        check(
            &mut results,
            serial,
            &ktap::parse(serial),
            1,
            &Requested::default(),
        );
        assert_eq!(results[0].guard.as_ref().unwrap().failures, before);
    }
}
