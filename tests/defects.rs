//! End to end: a guest built with a deliberate defect (`runner --defect`,
//! runner/src/defects.rs) must make `runner run 'stack.*'` fail, and the
//! failure must name the line of the oops that is wrong. One defect in the
//! symbol table, two in the trace walker (frames dropped at either end),
//! one in a byte count.
//!
//! Each defect is a separate guest build (only the guest crate is rebuilt,
//! into target/defect/), so the defects run one after another in one test.

use serde_json::Value;
use std::process::Command;

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
        let json = std::env::temp_dir().join(format!(
            "runner-defects-{}-{}.json",
            std::process::id(),
            case.defect
        ));
        let out = Command::new(env!("CARGO_BIN_EXE_runner"))
            .args(["run", "stack.*", "--defect", case.defect, "--json"])
            .arg(&json)
            .output()
            .expect("the runner starts");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let text = std::fs::read_to_string(&json).unwrap_or_else(|e| {
            panic!(
                "{}: no JSON ({e}); stderr:\n{}",
                case.defect,
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let _ = std::fs::remove_file(&json);
        assert_ne!(
            out.status.code(),
            Some(0),
            "{}: the run passed\n{stdout}",
            case.defect
        );
        let report: Value = serde_json::from_str(&text).unwrap();
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
