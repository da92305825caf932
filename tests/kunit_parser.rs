//! The runner's KTAP, as Linux's own parser reads it: one run's `--ktap
//! FILE` and its `--verbose` log both go through
//! `tools/testing/kunit/kunit_parser.py`, called as `kunit.py parse FILE`
//! calls it, and both must come out with no crashed test, no parse error
//! and the counts of the runner's own summary.
//!
//! The parser is Linux's, not ours: point `KUNIT_PARSER_DIR` at the
//! directory holding `kunit_parser.py` and `kunit_printer.py`
//! (`KUNIT_PARSER_DIR=/path/to/linux/tools/testing/kunit cargo test
//! --release -p runner --test kunit_parser`). Without it the test says so
//! and passes. It needs `python3`.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const SKIP: &str =
    "skipped: set KUNIT_PARSER_DIR=/path/to/linux/tools/testing/kunit (the directory of Linux's kunit_parser.py)";

fn parser_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("KUNIT_PARSER_DIR")?);
    dir.join("kunit_parser.py").is_file().then_some(dir)
}

/// What `kunit.py parse FILE` does with FILE (`parse_tests`): its lines to
/// `parse_run_tests`, then the summary line; and the counts, for the test.
/// Parsers before `kunit_printer.py` (Linux 6.1) took no printer.
const DRIVER: &str = r#"
import inspect, json, sys
sys.path.insert(0, sys.argv[1])
import kunit_parser
with open(sys.argv[2], 'r', errors='backslashreplace') as f:
    lines = f.read().splitlines()
if 'printer' in inspect.signature(kunit_parser.parse_run_tests).parameters:
    from kunit_printer import stdout
    test = kunit_parser.parse_run_tests(lines, stdout)
    kunit_parser.print_summary_line(test, stdout)
else:
    test = kunit_parser.parse_run_tests(lines)
c = test.counts
print('COUNTS ' + json.dumps({'status': test.status.name, 'passed': c.passed,
    'failed': c.failed, 'crashed': c.crashed, 'skipped': c.skipped, 'errors': c.errors}))
"#;

/// kunit_parser.py over `file`: what it printed, and its counts.
fn parse(dir: &Path, file: &Path) -> (String, Value) {
    let out = Command::new("python3")
        .arg("-c")
        .arg(DRIVER)
        .arg(dir)
        .arg(file)
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let counts = text
        .lines()
        .find_map(|l| l.strip_prefix("COUNTS "))
        .and_then(|c| serde_json::from_str(c).ok())
        .unwrap_or_else(|| {
            panic!(
                "kunit_parser.py over {} gave no counts ({}):\n{text}\n{}",
                file.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        });
    (text, counts)
}

/// The summary's last line, as the runner prints it (`output::summary`).
fn summary_line(totals: &Value) -> String {
    let n = |k: &str| totals[k].as_u64().unwrap();
    let mut line = format!("{} passed, {} failed", n("passed"), n("failed"));
    if n("skipped") > 0 {
        line += &format!(", {} skipped", n("skipped"));
    }
    if n("todo") > 0 {
        line += &format!(", {} todo", n("todo"));
    }
    line
}

#[test]
fn linux_kunit_parser_reads_the_ktap_file_and_the_verbose_log() {
    let Some(dir) = parser_dir() else {
        println!("{SKIP}");
        return;
    };
    let scratch =
        |ext: &str| std::env::temp_dir().join(format!("runner-kunit-{}.{ext}", std::process::id()));
    let (ktap, json, log) = (scratch("ktap"), scratch("json"), scratch("log"));
    // A pass, a skip (one CPU is too few for life.rcu_reader), a boot that
    // stops the machine as it should (stack.irq), a failure
    // (selftest.fail): three boots.
    let scenarios = [
        "boot.smoke",
        "stack.recursion",
        "life.rcu_reader",
        "stack.irq",
        "selftest.fail",
    ];
    let out = Command::new(env!("CARGO_BIN_EXE_runner"))
        .arg("run")
        .args(scenarios)
        .arg("--verbose")
        .arg("--ktap")
        .arg(&ktap)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("the runner starts");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    std::fs::write(&log, &stdout).unwrap();
    let document: Value = serde_json::from_str(
        &std::fs::read_to_string(&json).unwrap_or_else(|e| panic!("no --json ({e}):\n{stdout}")),
    )
    .unwrap();
    let totals = &document["totals"];
    let n = |k: &str| totals[k].as_u64().unwrap();
    assert!(
        document["boots"].as_array().unwrap().len() == 3
            && n("passed") >= 3
            && n("failed") >= 1
            && n("skipped") >= 1,
        "not the run this test is about: {totals}\n{stdout}"
    );
    // The console's summary is the same count.
    let summary = summary_line(totals);
    assert!(
        stdout.lines().any(|l| l == summary),
        "no `{summary}` in\n{stdout}"
    );

    for file in [&ktap, &log] {
        let (text, counts) = parse(&dir, file);
        let what = format!("kunit_parser.py over {}:\n{text}", file.display());
        assert_eq!(counts["crashed"], 0, "{what}");
        assert_eq!(counts["errors"], 0, "{what}");
        assert!(
            !text.contains("[CRASHED]") && !text.contains("[ERROR]"),
            "{what}"
        );
        assert_eq!(counts["passed"], n("passed"), "{what}");
        assert_eq!(counts["failed"], n("failed"), "{what}");
        // KUnit has no TODO: the runner writes one as a SKIP.
        assert_eq!(counts["skipped"], n("skipped") + n("todo"), "{what}");
        for name in scenarios {
            assert!(
                text.contains(&format!("] {name}")),
                "no test `{name}` in {what}"
            );
        }
    }
    for f in [&ktap, &json, &log] {
        let _ = std::fs::remove_file(f);
    }
}
