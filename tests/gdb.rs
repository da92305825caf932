//! End to end: `runner run stack.recursion --gdb` holds QEMU for a debugger,
//! and the `gdb` command it prints, run as printed, stops at the guard-hit
//! report with a backtrace that goes through the trap frame into the
//! recursion, the trap frame's assembly at its file:line; after
//! `continue` the runner judges the boot as usual.
//! Skipped, saying so, where gdb is not installed (`make deps` installs it).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The runner builds the guest before it prints the command.
const BUILD_AND_START: Duration = Duration::from_secs(900);
const SESSION: Duration = Duration::from_secs(300);

fn gdb_installed() -> bool {
    Command::new("gdb")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Wait for `child` at most `limit`; end it after that, with SIGTERM, so
/// that a runner takes its QEMU (held for a debugger, it has no deadline).
fn wait_or_kill(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let end = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= end {
            terminate(child);
            panic!("{what} did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn terminate(child: &mut Child) {
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
}

#[test]
fn gdb_stops_at_the_fault_and_bt_shows_the_recursion() {
    if !gdb_installed() {
        eprintln!("skipped: gdb is not installed (make deps installs it)");
        return;
    }
    let mut runner = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["run", "stack.recursion", "--gdb"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the runner starts");
    let (tx, rx) = mpsc::channel();
    let stderr = runner.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let end = Instant::now() + BUILD_AND_START;
    let command = loop {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.starts_with("gdb ") => break line,
            Ok(line) => seen.push(line),
            Err(_) => {
                terminate(&mut runner);
                panic!(
                    "no gdb command printed; stderr so far:\n{}",
                    seen.join("\n")
                );
            }
        }
    };
    // As printed (it is a shell line), then two more commands for the test.
    let mut gdb = Command::new("sh")
        .arg("-c")
        .arg(format!("exec {command} -batch -ex 'bt 16' -ex continue"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sh starts");
    wait_or_kill(&mut gdb, SESSION, "gdb");
    let out = gdb.wait_with_output().unwrap();
    let session =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let status = wait_or_kill(&mut runner, SESSION, "the runner");
    let verdicts = runner.wait_with_output().unwrap();
    let verdicts = String::from_utf8_lossy(&verdicts.stdout).into_owned();

    assert!(
        session.contains("Breakpoint 1, "),
        "gdb never stopped at the report:\n{session}"
    );
    let frames: Vec<&str> = session.lines().filter(|l| l.starts_with('#')).collect();
    let report = frames
        .iter()
        .position(|f| f.contains("guest::oops::stack_fault"));
    let entry = frames.iter().position(|f| f.contains("trap_common"));
    let recursion = frames
        .iter()
        .filter(|f| f.contains("guest::scenarios::stack::stack_recurse"))
        .count();
    assert!(
        matches!((report, entry), (Some(r), Some(e)) if r < e) && recursion >= 4,
        "bt does not go from the report through the trap frame into the recursion:\n{session}"
    );
    assert!(
        frames.iter().position(|f| f.contains("stack_recurse")) > entry,
        "{session}"
    );
    // The entry code has a line table of its own (`arch/x86_64/asm_lines.rs`).
    assert!(
        entry.is_some_and(|e| frames[e].contains(" at guest/src/arch/x86_64/trap.rs:")),
        "the trap_common frame has no file:line:\n{session}"
    );
    assert!(
        status.success() && verdicts.contains("PASS stack.recursion"),
        "after the session the boot was not judged a pass ({status}):\n{verdicts}"
    );
}
