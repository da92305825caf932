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

/// A report that says every scenario passed, as the guest prints it.
fn all_ok(names: &[&str]) -> String {
    let mut text = format!("KTAP version 1\n1..{}\n", names.len());
    for (i, name) in names.iter().enumerate() {
        text += &format!("ok {} {name}\n", i + 1);
    }
    text
}

/// QEMU's exit status after the guest wrote `code` to isa-debug-exit.
fn exited(code: abi::GuestExit) -> String {
    code.qemu_status().to_string()
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
