//! Child processes that must not outlive the runner, and running QEMU under
//! a deadline while its serial output is saved (and shown) line by line.

use crate::status;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Children to kill if we are interrupted. A child stays here until reaped,
/// so the signal handler can always reach it.
static LIVE: Mutex<Vec<Child>> = Mutex::new(Vec::new());

/// Ctrl-C, SIGTERM and SIGHUP kill every live child, then exit 130.
pub fn kill_children_on_interrupt() {
    let installed = ctrlc::set_handler(|| {
        let mut live = lock(&LIVE);
        for child in live.iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        eprintln!("runner: interrupted");
        std::process::exit(status::INTERRUPTED);
    });
    if let Err(e) = installed {
        eprintln!(
            "runner: warning: cannot handle Ctrl-C ({e}); QEMU may outlive an interrupted run"
        );
    }
}

/// Have the kernel send `signal` to the child if the runner dies for any
/// reason, even one no handler sees (SIGKILL, a crash).
pub fn die_with_parent(command: &mut Command, signal: libc::c_int) {
    // SAFETY: the closure runs in the forked child before exec and only makes
    // one async-signal-safe system call, touching no memory of the parent.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong, 0, 0, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// How long the output pipes may stay open after QEMU has ended.
const PIPE_GRACE: Duration = Duration::from_secs(1);

/// How the process ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    /// Killed by a signal the runner did not send.
    Signalled(i32),
    TimedOut(Duration),
    SpawnFailed(String),
}

pub struct Capture {
    pub ended: Ended,
    pub serial: Vec<u8>,
    pub stderr: String,
    /// From spawn to exit (or kill): the wall time of the whole QEMU process.
    pub duration: Duration,
}

/// Run `command` with stdout as the serial line, saved to `serial_log` and,
/// with `live`, printed as it arrives behind that prefix.
pub fn run_captured(
    mut command: Command,
    timeout: Duration,
    serial_log: &Path,
    live: Option<&str>,
) -> Capture {
    let failed = |why: String| Capture {
        ended: Ended::SpawnFailed(why),
        serial: Vec::new(),
        stderr: String::new(),
        duration: Duration::ZERO,
    };
    let mut log = match File::create(serial_log) {
        Ok(file) => file,
        Err(e) => return failed(format!("cannot create {}: {e}", serial_log.display())),
    };
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    die_with_parent(&mut command, libc::SIGKILL);

    let start = Instant::now();
    let (pid, stdout, stderr) = {
        // Held across spawn so an interrupt cannot slip between spawn and registration.
        let mut live_children = lock(&LIVE);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => return failed(e.to_string()),
        };
        let pipes = (child.id(), child.stdout.take(), child.stderr.take());
        live_children.push(child);
        pipes
    };

    let serial = Arc::new(Mutex::new(Vec::new()));
    let (eof_tx, eof_rx) = mpsc::channel();
    if let Some(stdout) = stdout {
        let serial = Arc::clone(&serial);
        let prefix = live.map(str::to_string);
        thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = Vec::new();
            while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                let _ = log.write_all(&line);
                if let Some(prefix) = &prefix {
                    let text = String::from_utf8_lossy(&line);
                    println!("{prefix} {}", text.trim_end_matches(['\n', '\r']));
                }
                lock(&serial).append(&mut line);
            }
            let _ = eof_tx.send(());
        });
    }
    let (stderr_tx, stderr_rx) = mpsc::channel();
    if let Some(mut stderr) = stderr {
        thread::spawn(move || {
            let mut text = Vec::new();
            let _ = stderr.read_to_end(&mut text);
            let _ = stderr_tx.send(String::from_utf8_lossy(&text).into_owned());
        });
    }

    // A deadline past the end of time (`--timeout` near u64::MAX) is none.
    let deadline = start.checked_add(timeout);
    let before_deadline = || deadline.is_none_or(|d| Instant::now() < d);
    // QEMU closes the serial pipe as it exits: wait for that without polling.
    let mut eof = match deadline {
        Some(d) => eof_rx.recv_timeout(d.saturating_duration_since(Instant::now())),
        None => eof_rx
            .recv()
            .map_err(|_| mpsc::RecvTimeoutError::Disconnected),
    }
    .is_ok();
    let ended = loop {
        match try_wait(pid) {
            Some(Ok(Some(status))) => break exit_of(status),
            Some(Ok(None)) if before_deadline() => thread::sleep(Duration::from_micros(200)),
            Some(Ok(None)) => {
                kill(pid);
                break Ended::TimedOut(timeout);
            }
            Some(Err(e)) => break Ended::SpawnFailed(format!("waiting for QEMU: {e}")),
            None => break Ended::SpawnFailed("QEMU vanished from the child registry".into()),
        }
    };
    let duration = start.elapsed();
    forget(pid);
    // Whatever inherited the pipes (nothing, for QEMU) must not hold us up.
    if !eof {
        eof = eof_rx.recv_timeout(PIPE_GRACE).is_ok();
    }
    let stderr = stderr_rx.recv_timeout(PIPE_GRACE).unwrap_or_default();
    let mut serial = std::mem::take(&mut *lock(&serial));
    if !eof {
        serial.extend_from_slice(
            b"\n[runner: serial output still open after QEMU ended; cut here]\n",
        );
    }
    Capture {
        ended,
        serial,
        stderr,
        duration,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn with_child<R>(pid: u32, f: impl FnOnce(&mut Child) -> R) -> Option<R> {
    let mut live = lock(&LIVE);
    live.iter_mut().find(|c| c.id() == pid).map(f)
}

fn try_wait(pid: u32) -> Option<std::io::Result<Option<std::process::ExitStatus>>> {
    with_child(pid, |c| c.try_wait())
}

fn kill(pid: u32) {
    with_child(pid, |c| {
        let _ = c.kill();
        let _ = c.wait();
    });
}

fn forget(pid: u32) {
    let mut live = lock(&LIVE);
    live.retain(|c| c.id() != pid);
}

fn exit_of(status: std::process::ExitStatus) -> Ended {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => Ended::Exited(code),
        (None, Some(signal)) => Ended::Signalled(signal),
        (None, None) => Ended::SpawnFailed(format!("QEMU ended oddly: {status}")),
    }
}
