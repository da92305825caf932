//! End to end: a guest built with a deliberate defect (`runner --defect`,
//! runner/src/defects.rs) must make `runner run 'stack.*'` fail, and the
//! failure must name the line of the oops that is wrong. One defect in the
//! symbol table, two in the trace walker (frames dropped at either end),
//! one in a byte count. And a guest with a broken mechanism (RCU grace
//! periods, `synchronize_rcu`, the stack cache, the kill path's resets and
//! its look at held locks, the stall detector) must fail the scenario that
//! tests that mechanism, saying what broke.
//!
//! Each defect is a separate guest build (only the guest crate is rebuilt,
//! into target/defect/), so the defects run one after another in one test.

use serde_json::Value;
use std::process::Command;

/// `runner ARGS --defect DEFECT --json FILE`, which must fail: its console
/// output and its JSON report.
fn run_defect(defect: &str, args: &[&str]) -> (String, Value) {
    let json = std::env::temp_dir().join(format!(
        "runner-defects-{}-{defect}.json",
        std::process::id()
    ));
    let out = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(args)
        .args(["--defect", defect, "--json"])
        .arg(&json)
        .output()
        .expect("the runner starts");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let text = std::fs::read_to_string(&json).unwrap_or_else(|e| {
        panic!(
            "{defect}: no JSON ({e}); stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let _ = std::fs::remove_file(&json);
    assert_ne!(
        out.status.code(),
        Some(0),
        "{defect}: the run passed\n{stdout}"
    );
    (stdout, serde_json::from_str(&text).unwrap())
}

struct Case {
    defect: &'static str,
    /// The one check that must fail for stack.recursion.
    check: &'static str,
    /// What its message must say: the wrong line, named.
    names: &'static str,
}

const CASES: &[Case] = &[
    Case {
        defect: "ksyms-off-by-one",
        check: "symbol",
        names: "the `RIP:` line names",
    },
    Case {
        defect: "trace-skip-innermost",
        check: "unwind",
        names: "Call Trace line 1: the guest prints",
    },
    Case {
        defect: "trace-first-only",
        check: "unwind",
        names: "Call Trace line 1: the guest prints",
    },
    Case {
        defect: "bytes-into-guard",
        check: "bytes",
        names: "the `Oops:` line says overflow by",
    },
];

#[test]
fn each_defect_fails_stack_runs_naming_the_wrong_line() {
    for case in CASES {
        let (stdout, report) = run_defect(case.defect, &["run", "stack.*"]);
        let result = report["boots"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|b| b["results"].as_array().unwrap())
            .find(|r| r["scenario"] == "stack.recursion")
            .expect("stack.recursion ran");
        let failed = result["guard"]["failed_checks"].as_array().unwrap();
        let checks: Vec<&str> = failed
            .iter()
            .map(|f| f["check"].as_str().unwrap())
            .collect();
        assert!(
            !checks.is_empty() && checks.iter().all(|&c| c == case.check),
            "{}: stack.recursion failed {checks:?}, expected only {}\n{stdout}",
            case.defect,
            case.check
        );
        let detail = failed[0]["detail"].as_str().unwrap();
        assert!(
            detail.contains(case.names),
            "{}: the failure does not name the line ({:?}): {detail}",
            case.defect,
            case.names
        );
        // The summary a person reads says it too.
        assert!(stdout.contains(case.names), "{}:\n{stdout}", case.defect);
    }
}

/// A defect in a mechanism that a scenario tests itself: that scenario
/// must fail, saying what broke.
struct Mechanism {
    defect: &'static str,
    scenario: &'static str,
    smp: u32,
    /// The runner check that must fail (`None`: the guest's own `not ok`).
    check: Option<&'static str>,
    /// What the failure (or the guest's diagnostic) must say.
    says: &'static str,
}

const MECHANISMS: &[Mechanism] = &[
    Mechanism {
        defect: "gp-early",
        scenario: "life.rcu_gp",
        smp: 4,
        check: None,
        says: "FAIL: no grace period that began inside a read section ended inside it",
    },
    Mechanism {
        defect: "sync-no-wait",
        scenario: "life.rcu_sync",
        smp: 4,
        check: None,
        says: "FAIL: synchronize_rcu returned after the reader that began before it left",
    },
    Mechanism {
        defect: "cache-never-taken",
        scenario: "life.stack_cache",
        smp: 1,
        check: None,
        says: "FAIL: one lookup, one hit",
    },
    Mechanism {
        defect: "no-preempt-reset",
        scenario: "stack.in_rcu",
        smp: 1,
        check: Some("recovered"),
        says: "preempt_count not back to 0",
    },
    Mechanism {
        defect: "kill-ignores-locks",
        scenario: "stack.lock_held",
        smp: 1,
        check: Some("task-state"),
        says: "killed while holding 1 lock(s)",
    },
    Mechanism {
        defect: "stall-blind",
        scenario: "life.rcu_stall",
        smp: 4,
        check: None,
        says: "FAIL: a stall with preemption off on CPU 3 was reported",
    },
];

#[test]
fn each_mechanism_defect_fails_the_scenario_that_tests_it() {
    for case in MECHANISMS {
        let smp = case.smp.to_string();
        let (stdout, report) = run_defect(case.defect, &["run", case.scenario, "--smp", &smp]);
        let result = report["boots"][0]["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["scenario"] == case.scenario)
            .expect("the scenario ran");
        assert_eq!(result["as_expected"], false, "{}\n{stdout}", case.defect);
        let said = match case.check {
            Some(check) => result["guard"]["failed_checks"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|f| f["check"] == check)
                .any(|f| f["detail"].as_str().unwrap().contains(case.says)),
            None => {
                result["outcome"] == "fail"
                    && result["diagnostics"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|d| d.as_str().unwrap().contains(case.says))
            }
        };
        assert!(
            said,
            "{}: {} does not fail saying {:?}\n{stdout}",
            case.defect, case.scenario, case.says
        );
    }
}
