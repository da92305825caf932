//! The runner under bad input and faults (issue 13): a QEMU, a loader or a
//! guest that misbehaves, options out of range, a closed stdout. Each test
//! drives the real runner binary with `tests/fake-qemu.sh` standing in for
//! QEMU, so nothing here boots a guest: what the guest would have printed
//! is written by the test, and the runner must judge it as the real thing.

#[path = "results_schema.rs"]
mod results_schema;

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
        if let Some(document) = &run.json {
            results_schema::check(document);
        }
        run
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The guest's echo of the configuration it runs with by default.
const ECHO: &str = r#"GUEST-CONFIG {"stack_strategy":"vmap-cached","stack_size":16384,"guard_pages":1,"stack_free":"exit","task_structs":"heap","workload":"check"}"#;

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

    // A #DF-stack overflow must reset the machine: a guest that goes on to
    // say ok has not done it, however well its not-caught is witnessed.
    let alloc = df_alloc();
    let damage = r#"STACK-CORRUPTION {"scenario":"stack.df_overflow","what":"canary","expected":"0x0","found":"0x1","lo":"0xffffc90000007000","hi":"0xffffc9000000b000","task_id":1}"#;
    fake.serial(
        "stack.df_overflow",
        &format!("{ECHO}\nKTAP version 1\n1..1\n{alloc}\n{damage}\nok 1 stack.df_overflow\n"),
    );
    let run = fake.run(&["run", "stack.df_overflow"]);
    assert!(
        run.stdout.contains("FAIL stack.df_overflow")
            && run.stdout.contains("not caught, as expected"),
        "{}",
        run.show()
    );
    assert_eq!(run.status, Some(1), "{}", run.show());
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
    let alloc = df_alloc();
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
    let junit = fake.path("out.xml");
    let mut command = fake.command(&["run", "stack.recursion", "--stack-size", "8192"]);
    command.arg("--junit").arg(&junit);
    let run = fake.finish(command.output().unwrap());
    assert_eq!(run.status, Some(1), "{}", run.show());
    let objections = result(run.json(), "stack.recursion")["objections"].to_string();
    assert!(
        objections.contains("asked for --stack-size 8192, the guest ran with 16384"),
        "{objections}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("evidence: asked for --stack-size 8192"),
        "{xml}"
    );
    // No echo at all: nothing shows the guest ran.
    fake.serial("boot.smoke", "KTAP version 1\n1..1\nok 1 boot.smoke\n");
    let mut command = fake.command(&["run", "boot.smoke"]);
    command.arg("--junit").arg(&junit);
    let run = fake.finish(command.output().unwrap());
    assert_eq!(run.status, Some(1), "{}", run.show());
    assert!(
        run.stdout.contains("echoed no configuration"),
        "{}",
        run.show()
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("type=\"unproven\""), "{xml}");
}

// Item 5: bounded capture.

/// Run the runner and return it with its peak resident set (KiB): the
/// runner's own, or a child's it waited for (the fake QEMU's), whichever is
/// larger; not the other tests' (`wait4` on this one child).
#[expect(
    clippy::zombie_processes,
    reason = "reaped by wait4, which also gives its rusage"
)]
fn run_measured(fake: &Fake, args: &[&str]) -> (Run, i64) {
    use std::os::unix::process::ExitStatusExt;
    let mut child = fake
        .command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let mut status = 0;
    // SAFETY: waits for the child this test spawned; both out-pointers are locals.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    let output = std::process::Output {
        status: std::process::ExitStatus::from_raw(status),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    };
    (fake.finish(output), usage.ru_maxrss)
}

#[test]
fn a_flood_without_newlines_is_stopped_and_bounded() {
    let mut fake = Fake::new("flood");
    let serial = format!("{ECHO}\nKTAP version 1\n1..1\n");
    // 4 GB of 'x' with no newline: without a budget the runner would
    // hold all of it (the issue saw 1.3 GB in 3 s).
    fake.serial("boot.smoke", &serial)
        .env("FAKE_FLOOD", "4000000000")
        .env("FAKE_STATUS", exited(abi::GuestExit::Pass));
    let started = std::time::Instant::now();
    let (run, rss) = run_measured(&fake, &["run", "boot.smoke", "--serial-limit", "4000000"]);
    let took = started.elapsed();
    no_panic(&run);
    assert_eq!(run.status, Some(11), "{}", run.show());
    let boot = &run.json()["boots"][0];
    assert_eq!(boot["outcome"], "flood", "{boot:#}");
    assert!(took.as_secs() < 60, "took {took:?}");
    let log = std::fs::metadata(boot["serial_log"].as_str().unwrap()).unwrap();
    assert!(log.len() < 200_000, "the log kept {} bytes", log.len());
    let text = std::fs::read_to_string(boot["serial_log"].as_str().unwrap()).unwrap();
    assert!(text.starts_with(ECHO), "the head is kept");
    assert!(
        text.contains("line cut at 65536 bytes"),
        "the cut is marked"
    );
    assert!(text.contains("QEMU killed"), "the end is marked");
    assert!(
        run.stdout.len() < 10_000,
        "{} bytes on stdout",
        run.stdout.len()
    );
    assert!(rss < 200 * 1024, "the runner grew to {rss} KiB");
}

#[test]
fn a_long_line_is_cut_but_the_report_around_it_stands() {
    let mut fake = Fake::new("long_line");
    let serial = format!(
        "{ECHO}\nKTAP version 1\n1..1\n# {}\nok 1 boot.smoke\n",
        "y".repeat(5_000_000)
    );
    fake.serial("boot.smoke", &serial)
        .env("FAKE_STATUS", exited(abi::GuestExit::Pass));
    let run = fake.run(&["run", "boot.smoke", "--verbose"]);
    assert_eq!(
        run.status,
        Some(0),
        "{}",
        &run.show()[..2000.min(run.show().len())]
    );
    let boot = &run.json()["boots"][0];
    assert_eq!(boot["cut_lines"], 1, "{boot:#}");
    assert!(
        run.json().to_string().len() < 200_000,
        "the line went into --json whole"
    );
    assert!(
        run.stdout.len() < 200_000,
        "the line went to the console whole"
    );
    assert!(run
        .stderr
        .contains("1 serial line(s) longer than 65536 bytes were cut"));
}

// Item 10: the smaller ones.

fn alive(pid: i32) -> bool {
    // A zombie waiting for init to reap it is as good as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            !stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

fn pid_in(file: &Path) -> i32 {
    std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_wrapper_script_leaves_no_grandchild() {
    for (how, extra) in [("exit", vec![]), ("timeout", vec!["--timeout", "1"])] {
        let mut fake = Fake::new(&format!("wrapper_{how}"));
        let child = fake.path("grandchild.pid");
        fake.serial("boot.smoke", &all_ok(&["boot.smoke"]))
            .env("FAKE_CHILD", &child)
            .env("FAKE_STATUS", exited(abi::GuestExit::Pass));
        if how == "timeout" {
            fake.env("FAKE_SLEEP", "60");
        }
        let started = std::time::Instant::now();
        let mut args = vec!["run", "boot.smoke"];
        args.extend(extra);
        let run = fake.run(&args);
        // The grandchild holds the serial pipe open; QEMU's end must not
        // wait for the deadline because of it.
        assert!(
            started.elapsed().as_secs() < 20,
            "{how}: took {:?}",
            started.elapsed()
        );
        let pid = pid_in(&child);
        let gone = (0..50).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(20));
            !alive(pid)
        });
        if !gone {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        assert!(
            gone,
            "{how}: the wrapper's child {pid} outlived the run\n{}",
            run.show()
        );
        let outcome = if how == "exit" { "pass" } else { "timeout" };
        assert_eq!(run.json()["boots"][0]["outcome"], outcome, "{}", run.show());
    }
}

#[test]
fn a_wrapper_that_cannot_find_qemu_says_so() {
    let mut fake = Fake::new("exit127");
    fake.env(
        "FAKE_STDERR",
        "qemu-wrapper: line 3: qemu-system-x86_64-real: command not found",
    )
    .env("FAKE_STATUS", "127");
    let run = fake.run(&["run", "boot.smoke"]);
    assert_eq!(run.status, Some(9), "{}", run.show());
    let boot = &run.json()["boots"][0];
    assert_eq!(boot["outcome"], "qemu-failed", "{boot:#}");
    let reason = boot["reason"].as_str().unwrap();
    assert!(reason.contains("command not found"), "{reason}");
    assert!(!reason.contains("guest wrote"), "{reason}");
}

#[test]
fn a_kvm_internal_error_ends_the_boot_at_once_with_its_dump() {
    // QEMU prints the error and pauses the VM for good, without exiting:
    // as it did here for OVMF under nested KVM, for 1830 s a boot.
    let mut fake = Fake::new("kvmerror");
    fake.env(
        "FAKE_STDERR",
        "KVM internal error. Suberror: 1\nemulation failure\nEIP=fffced45 EFL=00000046",
    )
    .env("FAKE_SLEEP", "300");
    let start = std::time::Instant::now();
    let run = fake.run(&["run", "boot.smoke", "--timeout", "200"]);
    let took = start.elapsed();
    assert!(
        took < std::time::Duration::from_secs(30),
        "{took:?}: {}",
        run.show()
    );
    assert_eq!(run.status, Some(9), "{}", run.show());
    let boot = &run.json()["boots"][0];
    assert_eq!(boot["outcome"], "qemu-failed", "{boot:#}");
    let reason = boot["reason"].as_str().unwrap();
    assert!(
        reason.contains("KVM internal error. Suberror: 1"),
        "{reason}"
    );
    assert!(
        run.stdout.contains("EIP=fffced45"),
        "the dump is shown: {}",
        run.show()
    );
}

#[test]
fn a_wrong_limine_dir_is_an_error_under_test_and_an_unset_one_a_skip() {
    let mut fake = Fake::new("limine_dir");
    let log = fake.path("qemu.log");
    let wrong = fake.path("not-limine");
    fake.env("FAKE_LOG", &log).env("LIMINE_DIR", wrong);
    let run = fake.run(&["test"]);
    assert_eq!(run.status, Some(10), "{}", run.show());
    let errors = run.errors();
    assert_eq!(errors.len(), 1, "one line: {errors:?}");
    assert!(errors[0].contains("LIMINE_DIR"), "{}", errors[0]);
    assert!(!log.exists(), "QEMU was started");
    // Unset: the Limine boots are skipped, saying how to get Limine.
    let fake = Fake::new("limine_unset");
    let mut command = fake.command(&["test"]);
    command.env_remove("LIMINE_DIR");
    let run = fake.finish(command.output().unwrap());
    let cache = root().join(".cache/limine");
    if !cache.exists() {
        assert!(
            run.stdout.contains("SKIP boot.smoke smp=1 [limine-bios]"),
            "{}",
            run.show()
        );
        assert!(!run.stderr.contains("error"), "{}", run.show());
    }
}

/// Start the runner, wait until `ready` exists, send it SIGINT, and return the run.
fn interrupt(fake: &Fake, args: &[&str], ready: &Path) -> Run {
    let mut command = fake.command(args);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = command.spawn().unwrap();
    let started = std::time::Instant::now();
    while !ready.exists() {
        assert!(
            started.elapsed().as_secs() < 120,
            "{} never appeared",
            ready.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    // SAFETY: signals the runner this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    fake.finish(child.wait_with_output().unwrap())
}

#[test]
fn ctrl_c_says_where_the_partial_serial_log_is() {
    let mut fake = Fake::new("ctrl_c");
    let log = fake.path("qemu.log");
    fake.serial("boot.smoke", &format!("{ECHO}\nKTAP version 1\n1..1\n"))
        .env("FAKE_LOG", &log)
        .env("FAKE_SLEEP", "60");
    let run = interrupt(&fake, &["run", "boot.smoke"], &log);
    assert_eq!(run.status, Some(130), "{}", run.show());
    let line = run
        .stderr
        .lines()
        .find(|l| l.contains("interrupted"))
        .unwrap_or_else(|| panic!("{}", run.show()));
    let path = line
        .split("the partial serial log is ")
        .nth(1)
        .unwrap_or_else(|| panic!("{line}"));
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(text.contains("KTAP version 1"), "{text}");
}

#[test]
fn an_interrupted_build_leaves_no_compiler_behind() {
    let mut fake = Fake::new("build_sigint");
    let rustc = fake.path("rustc.pid");
    fake.env("CARGO", root().join("tests/fake-cargo.sh"))
        .env("FAKE_CARGO_CHILD", &rustc);
    let run = interrupt(&fake, &["run", "boot.smoke"], &rustc);
    assert_eq!(run.status, Some(130), "{}", run.show());
    let pid = pid_in(&rustc);
    let gone = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        !alive(pid)
    });
    if !gone {
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    assert!(
        gone,
        "the build's child {pid} outlived the interrupted runner"
    );
}

// Items 6 and 7: one set of images per run, one target directory.

/// The directory a real `runner build` leaves the guest and loader in.
fn built() -> PathBuf {
    let output = Command::new(env!("CARGO_BIN_EXE_runner"))
        .arg("build")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let guest = stdout
        .lines()
        .find_map(|l| l.strip_prefix("guest:"))
        .unwrap_or_else(|| {
            panic!(
                "`runner build` said:\n{stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    PathBuf::from(guest.trim()).parent().unwrap().to_path_buf()
}

/// (boot, image path, checksum) for every image each boot was given, from FAKE_LOG.
fn images_booted(log: &Path) -> Vec<(u32, String, String)> {
    let text = std::fs::read_to_string(log).unwrap();
    let mut out = Vec::new();
    for line in text.lines() {
        let mut words = line.split(' ');
        let boot: u32 = words
            .next()
            .unwrap()
            .trim_start_matches("boot=")
            .parse()
            .unwrap();
        for word in words.filter(|w| w.starts_with('/')) {
            let (path, sum) = word.rsplit_once('=').unwrap();
            out.push((boot, path.to_string(), sum.to_string()));
        }
    }
    out
}

#[test]
fn every_boot_of_a_run_boots_the_images_it_started_with() {
    let mut fake = Fake::new("pinned");
    let release = fake.path("target/x86_64-unknown-none/release");
    std::fs::create_dir_all(&release).unwrap();
    let from = built();
    for name in ["guest", "loader"] {
        std::fs::copy(from.join(name), release.join(name)).unwrap();
    }
    let log = fake.path("qemu.log");
    // During the first boot the images are rebuilt, the way a build does
    // it: the guest with its symbols and its boot image replaced by rename
    // (`symbols::embed`, `boot::image`), the loader rewritten in place.
    let hook = format!(
        r#"if [ "$FAKE_BOOT" = 1 ]; then cd '{}' && for f in guest.ksyms guest.boot; do cp $f new && echo rebuilt >>new && mv new $f; done && echo rebuilt >>loader; fi"#,
        release.display()
    );
    fake.env("CARGO_TARGET_DIR", fake.path("target"))
        .env("FAKE_LOG", &log)
        .env("FAKE_HOOK", hook)
        .serial("selftest.fail", &all_ok(&["selftest.fail"]))
        .serial("selftest.panic", &all_ok(&["selftest.panic"]))
        .env("FAKE_STATUS", exited(abi::GuestExit::Pass));
    let run = fake.run(&["run", "selftest.fail", "selftest.panic", "--no-build"]);
    no_panic(&run);
    let json = run.json();
    let run_dir = json["run_dir"].as_str().unwrap();
    let booted = images_booted(&log);
    assert_eq!(booted.iter().filter(|b| b.0 == 1).count(), 2, "{booted:?}");
    for (boot, path, sum) in &booted {
        assert!(
            path.starts_with(run_dir),
            "boot {boot} booted {path}, outside {run_dir}"
        );
        let first = booted.iter().find(|b| b.0 == 1 && &b.1 == path).unwrap();
        assert_eq!(sum, &first.2, "boot {boot} booted another {path}");
    }
    // What QEMU booted is the guest's boot image, beside the guest the
    // verdicts read.
    assert_eq!(
        format!("{}.boot", json["images"]["guest"].as_str().unwrap()),
        booted
            .iter()
            .find(|b| b.1.ends_with("/guest.boot"))
            .unwrap()
            .1
    );
}

#[test]
fn a_relative_cargo_target_dir_is_read_from_where_the_runner_ran() {
    let mut fake = Fake::new("target_dir");
    let sub = fake.path("sub");
    std::fs::create_dir_all(&sub).unwrap();
    let cargo_log = fake.path("cargo.log");
    fake.env("CARGO", root().join("tests/fake-cargo.sh"))
        .env("FAKE_CARGO_LOG", &cargo_log)
        .env("FAKE_CARGO_FROM", built())
        .env("CARGO_TARGET_DIR", "rel-target")
        .serial("boot.smoke", &all_ok(&["boot.smoke"]))
        .env("FAKE_STATUS", exited(abi::GuestExit::Pass));
    let mut command = fake.command(&["run", "boot.smoke"]);
    command.current_dir(&sub);
    let run = fake.finish(command.output().unwrap());
    assert_eq!(run.status, Some(0), "{}", run.show());
    let want = sub.join("rel-target");
    let built_in = std::fs::read_to_string(&cargo_log).unwrap();
    assert!(
        built_in
            .trim_end()
            .ends_with(&format!("target={}", want.display())),
        "the build went to {built_in}, not {}",
        want.display()
    );
    let run_dir = run.json()["run_dir"].as_str().unwrap();
    assert!(run_dir.starts_with(want.to_str().unwrap()), "{run_dir}");
}

#[test]
fn a_slow_boot_that_keeps_reporting_is_not_a_timeout() {
    // Four results 1.5 s apart under a 2 s timeout: slow (a loaded host),
    // not hung. A 3 s silence is a hang.
    let names = ["boot.smoke", "core.preempt", "core.leak", "core.current"];
    for (gap, outcome) in [("1.5", "pass"), ("3", "timeout")] {
        let mut fake = Fake::new(&format!("slow_{outcome}"));
        let mut hook = format!("echo '{ECHO}'; echo 'KTAP version 1'; echo '1..4'; ");
        for (i, name) in names.iter().enumerate() {
            hook += &format!("sleep {gap}; echo 'ok {} {name}'; ", i + 1);
        }
        fake.env("FAKE_HOOK", hook)
            .env("FAKE_STATUS", exited(abi::GuestExit::Pass));
        let mut args = vec!["run"];
        args.extend(names);
        args.extend(["--timeout", "2"]);
        let run = fake.run(&args);
        assert_eq!(
            run.json()["boots"][0]["outcome"],
            outcome,
            "gap {gap}\n{}",
            run.show()
        );
    }
}

/// The announcement of stack.df_overflow's #DF stack, written by the same
/// type the guest writes it with (so a new field cannot leave it stale),
/// after the CPU map its LAPIC id is checked against.
fn df_alloc() -> String {
    use abi::guard::StackAlloc;
    use abi::kinds::StackKind;
    use abi::record::{encode, Hex};
    let alloc = StackAlloc {
        scenario: "stack.df_overflow",
        stack_kind: StackKind::DoubleFault,
        lo: Hex(0xffff_c900_0000_7000),
        hi: Hex(0xffff_c900_0000_b000),
        guard_below: 1,
        guard_above: 1,
        cpu: 0,
        lapic_id: 0,
        task_id: 1,
        task_name: "init",
        frame_bytes: 0,
    };
    let mut buf = [0u8; 512];
    let line = encode(&alloc, &mut buf).unwrap();
    format!("CPU-MAP {{\"lapic_ids\":[0]}}\n{line}")
}
