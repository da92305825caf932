//! The runner under bad input and faults (issue 13): a QEMU, a loader or a
//! guest that misbehaves, options out of range, a closed stdout. Each test
//! drives the real runner binary with `tests/fake-qemu.sh` standing in for
//! QEMU, so nothing here boots a guest: what the guest would have printed
//! is written by the test, and the runner must judge it as the real thing.

use serde_json::Value;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

struct Run {
    status: Option<i32>,
    stdout: String,
    stderr: String,
    json: Option<Value>,
}

impl Run {
    fn show(&self) -> String {
        format!(
            "status {:?}\nstdout:\n{}\nstderr:\n{}",
            self.status, self.stdout, self.stderr
        )
    }

    fn json(&self) -> &Value {
        self.json
            .as_ref()
            .unwrap_or_else(|| panic!("no JSON\n{}", self.show()))
    }

    /// The stderr lines that are not the runner's progress.
    fn errors(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| {
                !l.is_empty() && !l.starts_with("runner: boot ") && !l.starts_with("runner:   ")
            })
            .collect()
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A scratch directory and the fake QEMU's instructions for one test.
struct Fake {
    dir: PathBuf,
    env: Vec<(String, OsString)>,
}

impl Fake {
    fn new(test: &str) -> Fake {
        let dir =
            std::env::temp_dir().join(format!("runner-hostile-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Fake {
            dir,
            env: vec![("QEMU".into(), root().join("tests/fake-qemu.sh").into())],
        }
    }

    fn env(&mut self, key: &str, value: impl Into<OsString>) -> &mut Fake {
        self.env.push((key.into(), value.into()));
        self
    }

    /// What the "guest" prints in a boot whose first scenario is `first`.
    fn serial(&mut self, first: &str, text: &str) -> &mut Fake {
        std::fs::write(self.dir.join(format!("{first}.serial")), text).unwrap();
        let pattern = self.dir.join("@.serial");
        self.env("FAKE_SERIAL", pattern)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The runner with `args`, and `--json` into the scratch directory.
    fn command(&self, args: &[&str]) -> Command {
        self.command_with_json(args, &self.path("out.json"))
    }

    fn command_with_json(&self, args: &[&str], json: &Path) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_runner"));
        command
            .args(args)
            .arg("--json")
            .arg(json)
            .env_remove("LIMINE_DIR")
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            command.env(k, v);
        }
        command
    }

    fn run(&self, args: &[&str]) -> Run {
        self.finish(self.command(args).output().expect("the runner starts"))
    }

    fn finish(&self, output: std::process::Output) -> Run {
        let json = self.path("out.json");
        let run = Run {
            status: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            json: std::fs::read_to_string(&json)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok()),
        };
        let _ = std::fs::remove_file(json);
        run
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The guest's echo of the configuration it runs with by default.
const ECHO: &str = r#"GUEST-CONFIG {"stack_strategy":"vmap-cached","stack_size":16384,"guard_pages":1,"stack_free":"exit","task_structs":"heap"}"#;

/// A report that says every scenario passed, as the guest prints it.
fn all_ok(names: &[&str]) -> String {
    let mut text = format!("{ECHO}\nKTAP version 1\n1..{}\n", names.len());
    for (i, name) in names.iter().enumerate() {
        text += &format!("ok {} {name}\n", i + 1);
    }
    text
}

/// QEMU's exit status after the guest wrote `code` to isa-debug-exit.
fn exited(code: abi::GuestExit) -> String {
    code.qemu_status().to_string()
}

fn result<'a>(json: &'a Value, scenario: &str) -> &'a Value {
    json["boots"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|b| b["results"].as_array().into_iter().flatten())
        .find(|r| r["scenario"] == scenario)
        .unwrap_or_else(|| panic!("no result for {scenario}: {json:#}"))
}

fn no_panic(run: &Run) {
    assert!(
        !run.stderr.contains("panicked"),
        "the runner panicked\n{}",
        run.show()
    );
}

// Item 2: one exit status, from the marks the summary prints.

#[test]
fn a_fault_scenario_that_ends_wrong_fails_the_exit_status_too() {
    // An IRQ-stack overflow must stop the machine; a guest that says ok has
    // not done what the scenario is for, and `run` marks it FAIL.
    let mut fake = Fake::new("irq_ok");
    fake.serial("stack.irq", &all_ok(&["stack.irq"]))
        .env("FAKE_STATUS", exited(abi::GuestExit::Pass));
    let run = fake.run(&["run", "stack.irq"]);
    no_panic(&run);
    assert!(run.stdout.contains("FAIL stack.irq"), "{}", run.show());
    assert_eq!(run.status, Some(1), "{}", run.show());
    assert_eq!(run.json()["exit_status"], 1);
}

// Item 4: no panics on any input.

#[test]
fn a_timeout_past_the_end_of_time_does_not_panic() {
    let mut fake = Fake::new("timeout_max");
    fake.serial("boot.smoke", &all_ok(&["boot.smoke"]))
        .env("FAKE_STATUS", exited(abi::GuestExit::Pass));
    for timeout in ["9223372036854775807", "18446744073709551615"] {
        let run = fake.run(&["run", "boot.smoke", "--timeout", timeout]);
        no_panic(&run);
        assert_eq!(run.status, Some(0), "--timeout {timeout}\n{}", run.show());
    }
}

#[test]
fn a_closed_stdout_loses_no_results() {
    let mut fake = Fake::new("epipe");
    fake.serial("boot.smoke", &all_ok(&["boot.smoke"]))
        .env("FAKE_STATUS", exited(abi::GuestExit::Pass));
    let junit = fake.path("out.xml");
    let mut command = fake.command(&["run", "boot.smoke", "--print-qemu", "--verbose"]);
    command
        .arg("--junit")
        .arg(&junit)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    // `runner ... | true`: the reader is gone before the runner writes.
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let run = fake.finish(output);
    no_panic(&run);
    assert_eq!(run.status, Some(0), "{}", run.show());
    assert_eq!(run.json()["boots"][0]["outcome"], "pass");
    let xml = std::fs::read_to_string(&junit).expect("the JUnit file was written");
    assert!(xml.contains("boot.smoke"), "{xml}");
}

#[test]
fn an_unwritable_json_path_is_refused_before_booting() {
    let fake = Fake::new("bad_json");
    let log = fake.path("qemu.log");
    let mut fake = fake;
    fake.env("FAKE_LOG", &log);
    let mut command =
        fake.command_with_json(&["run", "boot.smoke"], &fake.path("no/such/dir/out.json"));
    let run = fake.finish(command.output().unwrap());
    no_panic(&run);
    assert_eq!(run.status, Some(2), "{}", run.show());
    let errors = run.errors();
    assert_eq!(errors.len(), 1, "one line: {errors:?}");
    assert!(errors[0].contains("no/such/dir"), "{}", errors[0]);
    assert!(!log.exists(), "QEMU was started");
}

#[test]
fn results_are_kept_when_the_json_cannot_be_written_at_the_end() {
    let mut fake = Fake::new("json_gone");
    fake.serial("boot.smoke", &all_ok(&["boot.smoke"]))
        .env("FAKE_STATUS", exited(abi::GuestExit::Pass));
    let dir = fake.path("vanishing");
    std::fs::create_dir_all(&dir).unwrap();
    // The directory is there when the run starts and gone when it ends.
    fake.env("FAKE_HOOK", format!("rm -rf '{}'", dir.display()));
    let mut command = fake.command_with_json(&["run", "boot.smoke"], &dir.join("out.json"));
    let run = fake.finish(command.output().unwrap());
    no_panic(&run);
    assert!(run.stdout.contains("PASS boot.smoke"), "{}", run.show());
    assert_eq!(run.status, Some(10), "{}", run.show());
    assert!(run.stderr.contains("cannot write"), "{}", run.show());
}

// Item 1: every verdict needs its evidence.

#[test]
fn a_qemu_that_prints_nothing_passes_nothing() {
    // Exit 0 with an empty serial line is what a reset looks like, and what
    // a loader that died before the guest ran looks like too.
    // A caught-fatal exit code with nothing printed is no better.
    let mut fake = Fake::new("silent");
    for (scenario, status, outcome) in [
        ("stack.df_overflow", "0".to_string(), "reset"),
        (
            "stack.irq",
            exited(abi::GuestExit::CaughtFatal),
            "caught-fatal",
        ),
    ] {
        fake.env("FAKE_STATUS", status);
        let run = fake.run(&["run", scenario]);
        no_panic(&run);
        assert_ne!(run.status, Some(0), "{scenario}\n{}", run.show());
        let r = result(run.json(), scenario);
        assert_eq!(r["outcome"], outcome, "{r:#}");
        assert_eq!(r["as_expected"], false, "{r:#}");
        let objections = r["objections"].to_string();
        assert!(objections.contains("no KTAP header"), "{r:#}");
        assert!(
            run.stdout.contains(&format!("FAIL {scenario}")),
            "{}",
            run.show()
        );
    }
    // With the header, the echo and the announcement, the same reset is
    // what stack.df_overflow is for.
    fake.env("FAKE_STATUS", "0");
    let alloc = r#"STACK-ALLOC {"scenario":"stack.df_overflow","stack_kind":"exception-df","lo":"0xffffc90000007000","hi":"0xffffc9000000b000","guard_below":1,"guard_above":1,"cpu":0,"task_id":1,"task_name":"init","frame_bytes":0}"#;
    fake.serial(
        "stack.df_overflow",
        &format!("{ECHO}\nKTAP version 1\n1..1\n{alloc}\n"),
    );
    let run = fake.run(&["run", "stack.df_overflow"]);
    assert_eq!(run.status, Some(0), "{}", run.show());
    assert!(
        run.stdout.contains("PASS stack.df_overflow"),
        "{}",
        run.show()
    );
}

#[test]
fn a_forged_ok_is_not_a_silent_corruption() {
    let mut fake = Fake::new("forged_ok");
    fake.serial("stack.direct_legacy", &all_ok(&["stack.direct_legacy"]))
        .env("FAKE_STATUS", exited(abi::GuestExit::Pass));
    let run = fake.run(&["run", "stack.direct_legacy"]);
    assert_eq!(run.status, Some(1), "{}", run.show());
    let guard = &result(run.json(), "stack.direct_legacy")["guard"];
    let failed: Vec<&str> = guard["failed_checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["check"].as_str())
        .collect();
    assert_eq!(failed, ["announced", "witnessed"], "{guard:#}");
    assert!(
        run.stdout.contains("not caught, unproven"),
        "{}",
        run.show()
    );
}

#[test]
fn a_skip_counts_only_where_the_catalog_allows_it() {
    let skip = |name: &str| {
        format!("{ECHO}\nKTAP version 1\n1..1\nok 1 {name} # SKIP needs at least 2 CPUs\n")
    };
    let mut fake = Fake::new("skip");
    fake.serial("stack.recursion", &skip("stack.recursion"))
        .serial("stack.ap", &skip("stack.ap"))
        .env("FAKE_STATUS", exited(abi::GuestExit::Pass));
    let run = fake.run(&["run", "stack.recursion"]);
    assert_eq!(run.status, Some(1), "{}", run.show());
    assert!(
        run.stdout.contains("FAIL stack.recursion"),
        "{}",
        run.show()
    );
    assert!(
        run.stdout.contains("never allows it a skip"),
        "{}",
        run.show()
    );
    // stack.ap needs two CPUs: on one, a skip is its answer; on four, not.
    let run = fake.run(&["run", "stack.ap", "--smp", "1"]);
    assert_eq!(run.status, Some(0), "{}", run.show());
    assert!(run.stdout.contains("SKIP stack.ap smp=1"), "{}", run.show());
    let run = fake.run(&["run", "stack.ap", "--smp", "4"]);
    assert_eq!(run.status, Some(1), "{}", run.show());
    assert!(run.stdout.contains("only below 2 CPUs"), "{}", run.show());
}

#[test]
fn a_todo_is_shown_as_one() {
    let mut fake = Fake::new("todo");
    let serial = format!("{ECHO}\nKTAP version 1\n1..1\nnot ok 1 boot.smoke # TODO known bad\n");
    fake.serial("boot.smoke", &serial)
        .env("FAKE_STATUS", exited(abi::GuestExit::Pass));
    let run = fake.run(&["run", "boot.smoke"]);
    assert!(
        run.stdout.contains("TODO boot.smoke smp=1") && run.stdout.contains("# TODO known bad"),
        "{}",
        run.show()
    );
    assert!(!run.stdout.contains("PASS boot.smoke"), "{}", run.show());
    assert!(
        run.stdout.contains("0 passed, 0 failed, 1 todo"),
        "{}",
        run.show()
    );
    assert_eq!(result(run.json(), "boot.smoke")["todo"], "known bad");
    assert_eq!(run.status, Some(0), "{}", run.show());
}

// Item 3: the guest runs with what was asked, or the run says so.

#[test]
fn values_the_guest_would_ignore_are_refused_before_booting() {
    let mut fake = Fake::new("ranges");
    let log = fake.path("qemu.log");
    fake.env("FAKE_LOG", &log);
    for args in [
        ["--stack-size", "99999999999999"],
        ["--stack-size", "5000"],
        ["--guard-pages", "1000000"],
    ] {
        let run = fake.run(&["run", "stack.recursion", args[0], args[1]]);
        assert_eq!(run.status, Some(2), "{args:?}\n{}", run.show());
        let errors = run.errors();
        assert_eq!(errors.len(), 1, "one line: {errors:?}");
        assert!(
            errors[0].contains(args[0]) && errors[0].contains("the guest accepts"),
            "{}",
            errors[0]
        );
        assert!(run.json.is_none());
    }
    assert!(!log.exists(), "QEMU was started");
}

#[test]
fn a_guest_that_ran_with_another_configuration_fails_the_run() {
    let mut fake = Fake::new("echo");
    fake.serial("stack.recursion", &all_ok(&["stack.recursion"]))
        .env("FAKE_STATUS", exited(abi::GuestExit::Pass));
    let run = fake.run(&["run", "stack.recursion", "--stack-size", "8192"]);
    assert_eq!(run.status, Some(1), "{}", run.show());
    let objections = result(run.json(), "stack.recursion")["objections"].to_string();
    assert!(
        objections.contains("asked for --stack-size 8192, the guest ran with 16384"),
        "{objections}"
    );
    // No echo at all: nothing shows the guest ran.
    fake.serial("boot.smoke", "KTAP version 1\n1..1\nok 1 boot.smoke\n");
    let run = fake.run(&["run", "boot.smoke"]);
    assert_eq!(run.status, Some(1), "{}", run.show());
    assert!(
        run.stdout.contains("echoed no configuration"),
        "{}",
        run.show()
    );
}
