//! End to end: every outcome class the runner knows, produced by a real QEMU
//! boot of a scenario built to end that way, and read back from `--json`.

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};

struct Run {
    status: Option<i32>,
    stdout: String,
    stderr: String,
    json: Option<Value>,
}

fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("runner-outcomes-{}-{name}", std::process::id()))
}

fn runner(name: &str, args: &[&str], configure: impl FnOnce(&mut Command)) -> Run {
    let json = scratch(&format!("{name}.json"));
    let _ = std::fs::remove_file(&json);
    let mut command = Command::new(env!("CARGO_BIN_EXE_runner"));
    command.args(args).arg("--json").arg(&json);
    configure(&mut command);
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().expect("the runner binary starts");
    let run = Run {
        status: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        json: std::fs::read_to_string(&json)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok()),
    };
    let _ = std::fs::remove_file(&json);
    run
}

/// Boot `args` and return the only boot's JSON record, after checking its class.
fn boot(name: &str, args: &[&str], outcome: &str) -> Value {
    let run = runner(name, args, |_| {});
    let json = run.json.unwrap_or_else(|| {
        panic!(
            "no JSON from `runner {}` (status {:?})\nstdout:\n{}\nstderr:\n{}",
            args.join(" "),
            run.status,
            run.stdout,
            run.stderr
        )
    });
    let boots = json["boots"].as_array().expect("a boots array");
    assert_eq!(boots.len(), 1, "{json:#}");
    let boot = boots[0].clone();
    assert_eq!(
        boot["outcome"],
        outcome,
        "runner {}:\n{json:#}\nstdout:\n{}",
        args.join(" "),
        run.stdout
    );
    let serial = boot["serial_log"].as_str().expect("a serial log path");
    assert!(
        std::path::Path::new(serial).is_file(),
        "{serial} was not kept"
    );
    boot
}

#[test]
fn hang_is_a_timeout() {
    let boot = boot(
        "hang",
        &["run", "selftest.hang", "--timeout", "3"],
        "timeout",
    );
    assert!(boot["exit_status"].is_null());
    let seconds = boot["duration_s"].as_f64().unwrap();
    assert!((3.0..10.0).contains(&seconds), "killed after {seconds}s");
}

#[test]
fn triple_fault_is_a_reset() {
    let boot = boot("triple", &["run", "selftest.triple_fault"], "reset");
    assert_eq!(boot["exit_status"], 0);
}

#[test]
fn panic_is_a_panic_with_its_message() {
    let boot = boot("panic", &["run", "selftest.panic"], "panic");
    let message = boot["panic"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("selftest.panic: deliberate panic"),
        "{boot:#}"
    );
}

#[test]
fn broken_plan_is_malformed() {
    let boot = boot("bad_ktap", &["run", "selftest.bad_ktap"], "malformed");
    assert!(!boot["problems"].as_array().unwrap().is_empty(), "{boot:#}");
}

#[test]
fn not_ok_is_a_failure() {
    let boot = boot("fail", &["run", "selftest.fail"], "fail");
    assert_eq!(boot["results"][0]["outcome"], "fail");
}

#[test]
fn smoke_passes_on_four_cpus() {
    let boot = boot("smoke", &["run", "boot.smoke", "--smp", "4"], "pass");
    assert_eq!(boot["smp"], 4);
    assert_eq!(boot["results"][0]["outcome"], "pass");
}

#[test]
fn unknown_scenario_is_a_usage_error_before_anything_runs() {
    let target = scratch("target");
    let _ = std::fs::remove_dir_all(&target);
    let run = runner("unknown", &["run", "no.such.scenario"], |c| {
        c.env("CARGO_TARGET_DIR", &target);
    });
    assert_eq!(run.status, Some(2), "{}", run.stderr);
    let error: Vec<&str> = run.stderr.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(error.len(), 1, "one line: {error:?}");
    assert!(error[0].contains("no.such.scenario"), "{}", error[0]);
    for name in abi::SCENARIOS.iter().map(|s| s.name) {
        assert!(error[0].contains(name), "{name} not listed: {}", error[0]);
    }
    assert!(!target.join("runs").exists(), "a run directory was created");
    assert!(run.json.is_none());
    let _ = std::fs::remove_dir_all(&target);
}
