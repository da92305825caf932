//! End to end, the fast subset of the mutation suite: `runner mutants` over
//! the defects most likely to regress must kill each one, by what the
//! catalogue (runner/src/defects.rs) says must catch it, and the failure
//! must say what broke. The whole catalogue is `make mutants` (CI's hosted
//! workflow runs it); `make test` runs these two, one of each kind:
//!
//! - `trace-skip-innermost`: an oops defect (the trace walker loses the
//!   innermost frame), caught only by the runner's own unwind of the dumped
//!   stack, the most intricate check the verdict makes; and only by it.
//! - `kill-ignores-locks`: a mechanism defect (the kill path kills a lock
//!   holder), caught by the runner's look at TASK-STATE, and the guest's
//!   own test that the lock is still held fails too.
//!
//! Each defect is a guest build of its own, cached by cargo per defect
//! (target/defect/), so after the first profile the second costs a boot.

use serde_json::Value;
use std::process::Command;

/// One defect of the fast subset and what its kill must show.
struct Case {
    defect: &'static str,
    /// The check that must catch it (as the table names it).
    check: &'static str,
    /// Nothing else may fail its scenario (the oops defects break one line).
    alone: bool,
    /// What the failure must say: the wrong thing, named.
    says: &'static str,
}

const FAST: &[Case] = &[
    Case {
        defect: "trace-skip-innermost",
        check: "unwind",
        alone: true,
        says: "Call Trace line 1: the guest prints",
    },
    Case {
        defect: "kill-ignores-locks",
        check: "task-state",
        alone: false,
        says: "killed while holding 1 lock(s)",
    },
];

#[test]
fn the_fast_subset_of_the_mutation_suite_is_killed() {
    let json = std::env::temp_dir().join(format!("runner-mutants-{}.json", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_runner"))
        .arg("mutants")
        .args(FAST.iter().map(|c| c.defect))
        .arg("--json")
        .arg(&json)
        .output()
        .expect("the runner starts");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let text = std::fs::read_to_string(&json).unwrap_or_else(|e| {
        panic!(
            "no JSON ({e}); stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let _ = std::fs::remove_file(&json);
    assert_eq!(out.status.code(), Some(0), "a defect survived\n{stdout}");
    let report: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["schema_version"], 1, "{text}");
    assert_eq!(report["runner_version"], env!("CARGO_PKG_VERSION"));
    let rows = report["defects"].as_array().unwrap();
    assert_eq!(rows.len(), FAST.len(), "{text}");
    for (case, row) in FAST.iter().zip(rows) {
        assert_eq!(row["defect"], case.defect);
        assert_eq!(row["fate"], "KILLED", "{text}");
        assert_eq!(row["expected"], case.check);
        let by: Vec<&str> = row["caught_by"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        if case.alone {
            assert_eq!(by, [case.check], "{}: {text}", case.defect);
        } else {
            assert!(by.contains(&case.check), "{}: {text}", case.defect);
        }
        let said = row["said"].as_array().unwrap();
        assert!(
            said.iter().any(|s| s.as_str().unwrap().contains(case.says)),
            "{}: the failure does not say {:?}: {said:?}",
            case.defect,
            case.says
        );
    }
    // The table a person reads says it too.
    for case in FAST {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(case.defect))
            .unwrap_or_else(|| panic!("no row for {}\n{stdout}", case.defect));
        assert!(line.contains("KILLED"), "{line}");
    }
    assert_eq!(report["survived"], 0);
}
