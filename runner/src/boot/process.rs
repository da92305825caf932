//! Child processes that must not outlive the runner, and running QEMU under
//! a deadline while its serial output is saved (and shown) line by line.
//!
//! Every child the runner starts (QEMU, cargo) leads a process group of its
//! own, so that ending it ends what it started too: the grandchildren of a
//! QEMU that is a wrapper script, the rustc processes under cargo. A child
//! stays in the registry until it is reaped, so an interrupt can always
//! reach it and say where its partial serial log is.

use crate::boot::capture::{Cutter, Limits, Results};
use crate::status;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A live child and what an interrupt needs to know about it.
struct Live {
    child: Child,
    /// How it is asked to stop: SIGKILL for QEMU (nothing to save), SIGINT
    /// for cargo (what Ctrl-C in a terminal sends it), then SIGKILL.
    stop: libc::c_int,
    /// The serial log it is writing, to name after an interrupt.
    serial_log: Option<PathBuf>,
}

static LIVE: Mutex<Vec<Live>> = Mutex::new(Vec::new());

/// How long a child asked to stop with SIGINT gets before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Ctrl-C, SIGTERM and SIGHUP end every live child with its process group,
/// say where the partial serial logs are, then exit 130.
pub fn kill_children_on_interrupt() {
    let installed = ctrlc::set_handler(|| {
        let mut live = lock(&LIVE);
        let logs: Vec<String> = live
            .iter()
            .filter_map(|l| l.serial_log.as_ref())
            .map(|p| p.display().to_string())
            .collect();
        for l in live.iter_mut() {
            stop(l);
        }
        if logs.is_empty() {
            eprintln!("runner: interrupted");
        } else {
            eprintln!(
                "runner: interrupted; the partial serial log is {}",
                logs.join(", ")
            );
        }
        std::process::exit(status::INTERRUPTED);
    });
    if let Err(e) = installed {
        eprintln!(
            "runner: warning: cannot handle Ctrl-C ({e}); QEMU may outlive an interrupted run"
        );
    }
}

/// End a live child's whole process group and reap the child.
fn stop(l: &mut Live) {
    let group = l.child.id() as libc::pid_t;
    if l.stop != libc::SIGKILL {
        // SAFETY: signals a process group the runner created; no memory is touched.
        unsafe { libc::killpg(group, l.stop) };
        let until = Instant::now() + STOP_GRACE;
        while Instant::now() < until && matches!(l.child.try_wait(), Ok(None)) {
            thread::sleep(Duration::from_millis(10));
        }
    }
    kill_group(group);
    let _ = l.child.wait();
}

/// SIGKILL to a process group the runner created (its leader's pid).
fn kill_group(group: libc::pid_t) {
    // SAFETY: as above; ESRCH (the group is gone) is fine.
    unsafe { libc::killpg(group, libc::SIGKILL) };
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

/// A child leading its own process group, in the registry until reaped.
pub struct Group {
    pid: u32,
}

/// Start `command` as the leader of a new process group, registered so an
/// interrupt stops it (with `stop`) and everything it started.
pub fn spawn_group(
    command: &mut Command,
    stop: libc::c_int,
    serial_log: Option<&Path>,
) -> std::io::Result<(Group, Option<ChildStdout>, Option<ChildStderr>)> {
    command.process_group(0);
    // Held across spawn so an interrupt cannot slip between spawn and registration.
    let mut live = lock(&LIVE);
    let mut child = command.spawn()?;
    let pipes = (child.stdout.take(), child.stderr.take());
    let pid = child.id();
    live.push(Live {
        child,
        stop,
        serial_log: serial_log.map(Path::to_path_buf),
    });
    Ok((Group { pid }, pipes.0, pipes.1))
}

impl Group {
    /// Whether the leader has ended, without reaping it: while it is an
    /// unreaped zombie its group id cannot be reused, so `kill` is safe.
    pub fn has_ended(&self) -> std::io::Result<bool> {
        // SAFETY: waitid writes only into `info`, a local the kernel fills;
        // WNOWAIT leaves the child to be reaped by `wait`.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                self.pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if r == -1 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the kernel filled si_pid (0 while nothing has ended).
        Ok(unsafe { info.si_pid() } != 0)
    }

    /// SIGKILL the whole group (what the leader left behind, or all of it).
    pub fn kill(&self) {
        kill_group(self.pid as libc::pid_t);
    }

    /// Reap the leader (blocking) and leave the registry.
    pub fn wait(self) -> std::io::Result<ExitStatus> {
        loop {
            let done = with_child(self.pid, |c| c.try_wait()).unwrap_or_else(|| {
                Err(std::io::Error::other(
                    "the child vanished from the registry",
                ))
            })?;
            if let Some(status) = done {
                return Ok(status);
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let mut live = lock(&LIVE);
        if let Some(i) = live.iter().position(|l| l.child.id() == self.pid) {
            let mut l = live.swap_remove(i);
            if matches!(l.child.try_wait(), Ok(None)) {
                kill_group(self.pid as libc::pid_t);
                let _ = l.child.wait();
            }
        }
    }
}

/// How long the output pipes may stay open after QEMU has ended.
const PIPE_GRACE: Duration = Duration::from_secs(1);

/// How long QEMU may go on printing after it said it stopped the guest.
const DUMP_GRACE: Duration = Duration::from_millis(250);

/// QEMU's stderr kept (its head): enough for any error QEMU prints.
const STDERR_LIMIT: usize = 64 * 1024;

/// How the process ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    /// Killed by a signal the runner did not send.
    Signalled(i32),
    TimedOut(Duration),
    /// QEMU said on stderr that the guest can never run on (its first such
    /// line here); killed, without waiting for the deadline.
    Stopped(String),
    /// The serial output passed its budget of this many bytes; killed.
    Flooded(u64),
    SpawnFailed(String),
}

pub struct Capture {
    pub ended: Ended,
    pub serial: Vec<u8>,
    pub stderr: String,
    /// From spawn to exit (or kill): the wall time of the whole QEMU process.
    pub duration: Duration,
    /// Serial lines cut to the line limit.
    pub cut_lines: u64,
}

/// What the stdout and stderr readers tell the waiting thread.
enum Serial {
    Eof,
    Flooded,
    /// A KTAP result line: the deadline starts again.
    Progress,
    /// QEMU's stderr says the guest is stopped for good.
    Stopped(String),
}

/// A line of QEMU's stderr after which the guest never runs again. On a
/// KVM exit it cannot handle, QEMU prints the error and a register dump and
/// pauses the VM (`RUN_STATE_INTERNAL_ERROR`) without exiting: this host's
/// nested KVM does that on the first x87 instruction of OVMF's start-up
/// code, and the boot used to sit out its whole 1800 s deadline.
fn stopped_for_good(line: &str) -> Option<String> {
    let line = line.trim_end();
    ["KVM internal error", "KVM: entry failed"]
        .iter()
        .any(|start| line.starts_with(start))
        .then(|| line.to_string())
}

/// Run `command` with stdout as the serial line, saved to `serial_log` and,
/// with `live`, printed as it arrives behind that prefix; what is kept of
/// it is bounded by `limits`. The boot is killed as a timeout when it goes
/// `timeout` without a KTAP result line (from its start, then from each):
/// on a loaded host a boot gets slower, not a verdict it did not earn.
pub fn run_captured(
    mut command: Command,
    timeout: Duration,
    serial_log: &Path,
    live: Option<&str>,
    limits: Limits,
) -> Capture {
    let failed = |why: String| Capture {
        ended: Ended::SpawnFailed(why),
        serial: Vec::new(),
        stderr: String::new(),
        duration: Duration::ZERO,
        cut_lines: 0,
    };
    let log = match File::create(serial_log) {
        Ok(file) => file,
        Err(e) => return failed(format!("cannot create {}: {e}", serial_log.display())),
    };
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    die_with_parent(&mut command, libc::SIGKILL);

    let start = Instant::now();
    let (group, stdout, stderr) = match spawn_group(&mut command, libc::SIGKILL, Some(serial_log)) {
        Ok(spawned) => spawned,
        Err(e) => return failed(e.to_string()),
    };

    let serial = Arc::new(Mutex::new((Vec::new(), 0u64)));
    let (serial_tx, serial_rx) = mpsc::channel();
    let serial_tx_for_stderr = serial_tx.clone();
    if let Some(stdout) = stdout {
        let serial = Arc::clone(&serial);
        let prefix = live.map(str::to_string);
        thread::spawn(move || read_serial(stdout, log, prefix, limits, &serial, &serial_tx));
    }
    let (stderr_tx, stderr_rx) = mpsc::channel();
    if let Some(stderr) = stderr {
        let news = serial_tx_for_stderr;
        thread::spawn(move || {
            let mut head = Vec::new();
            let mut lines = BufReader::new(stderr.take(STDERR_LIMIT as u64));
            let mut line = Vec::new();
            while matches!(lines.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                if let Some(why) = stopped_for_good(&String::from_utf8_lossy(&line)) {
                    let _ = news.send(Serial::Stopped(why));
                }
                head.append(&mut line);
            }
            let _ = stderr_tx.send(String::from_utf8_lossy(&head).into_owned());
        });
    }

    // A deadline past the end of time (`--timeout` near u64::MAX) is none.
    let mut deadline = start.checked_add(timeout);
    let mut eof = false;
    let ended = loop {
        match group.has_ended() {
            Ok(true) => break None,
            Ok(false) => {}
            Err(e) => break Some(Ended::SpawnFailed(format!("waiting for QEMU: {e}"))),
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break Some(Ended::TimedOut(timeout));
        }
        if eof {
            // QEMU closed the serial line as it exits: it is about to end.
            thread::sleep(Duration::from_micros(200));
            continue;
        }
        // Without the serial line's end, look at the process now and then:
        // a wrapper's leftover child may hold the pipe after QEMU is gone.
        let wait = deadline.map_or(Duration::from_millis(10), |d| {
            d.saturating_duration_since(Instant::now())
                .min(Duration::from_millis(10))
        });
        match serial_rx.recv_timeout(wait) {
            Ok(Serial::Progress) => deadline = Instant::now().checked_add(timeout),
            Ok(Serial::Flooded) => break Some(Ended::Flooded(limits.boot)),
            Ok(Serial::Stopped(why)) => {
                // The register dump follows the error line: let it come.
                thread::sleep(DUMP_GRACE);
                break Some(Ended::Stopped(why));
            }
            Ok(Serial::Eof) | Err(mpsc::RecvTimeoutError::Disconnected) => eof = true,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    };
    // The leader has ended or must: either way nothing it started may stay.
    group.kill();
    let duration = start.elapsed();
    let ended = match (ended, group.wait()) {
        (Some(ended), _) => ended,
        (None, Ok(status)) => exit_of(status),
        (None, Err(e)) => Ended::SpawnFailed(format!("waiting for QEMU: {e}")),
    };
    if !eof && !matches!(ended, Ended::Flooded(_)) {
        let until = Instant::now() + PIPE_GRACE;
        while let Ok(news) = serial_rx.recv_timeout(until.saturating_duration_since(Instant::now()))
        {
            if matches!(news, Serial::Eof) {
                eof = true;
                break;
            }
        }
    }
    let stderr = stderr_rx.recv_timeout(PIPE_GRACE).unwrap_or_default();
    let (mut serial, cut_lines) = std::mem::take(&mut *lock(&serial));
    let note = match ended {
        Ended::Flooded(limit) => Some(format!(
            "\n[runner: the serial output passed its budget of {limit} bytes after {:.1}s; QEMU killed]\n",
            duration.as_secs_f64()
        )),
        _ if !eof => {
            Some("\n[runner: serial output still open after QEMU ended; cut here]\n".to_string())
        }
        _ => None,
    };
    // The log on disk says it too: it is what a person opens.
    if let Some(note) = note {
        serial.extend_from_slice(note.as_bytes());
        let _ = std::fs::OpenOptions::new()
            .append(true)
            .open(serial_log)
            .and_then(|mut f| f.write_all(note.as_bytes()));
    }
    Capture {
        ended,
        serial,
        stderr,
        duration,
        cut_lines,
    }
}

/// The stdout reader: cut to the limits, saved to the log, kept for the
/// verdict, and shown live; says when the line ends or floods.
fn read_serial(
    mut stdout: ChildStdout,
    mut log: File,
    prefix: Option<String>,
    limits: Limits,
    serial: &Mutex<(Vec<u8>, u64)>,
    tell: &mpsc::Sender<Serial>,
) {
    let mut cutter = Cutter::new(limits);
    let mut results = Results::default();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut kept = Vec::new();
    // The live view prints whole lines; a partial one waits here (bounded
    // by the line limit, as everything kept is).
    let mut partial: Vec<u8> = Vec::new();
    let mut flush = |kept: &mut Vec<u8>, partial: &mut Vec<u8>, cutter: &Cutter| {
        let _ = log.write_all(kept);
        if let Some(prefix) = &prefix {
            partial.extend_from_slice(kept);
            let complete = partial
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            for line in partial[..complete]
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
            {
                let text = String::from_utf8_lossy(line);
                println!("{prefix} {}", text.trim_end_matches('\r'));
            }
            partial.drain(..complete);
        }
        let mut held = lock(serial);
        held.0.append(kept);
        held.1 = cutter.cut_lines;
    };
    loop {
        let n = match stdout.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        cutter.feed(&chunk[..n], &mut kept);
        if results.feed(&kept) > 0 {
            let _ = tell.send(Serial::Progress);
        }
        flush(&mut kept, &mut partial, &cutter);
        if cutter.flooded() {
            let _ = tell.send(Serial::Flooded);
            return;
        }
    }
    cutter.finish(&mut kept);
    flush(&mut kept, &mut partial, &cutter);
    if let (Some(prefix), false) = (&prefix, partial.is_empty()) {
        println!("{prefix} {}", String::from_utf8_lossy(&partial));
    }
    let _ = tell.send(Serial::Eof);
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn with_child<R>(pid: u32, f: impl FnOnce(&mut Child) -> R) -> Option<R> {
    let mut live = lock(&LIVE);
    live.iter_mut()
        .find(|l| l.child.id() == pid)
        .map(|l| f(&mut l.child))
}

fn exit_of(status: ExitStatus) -> Ended {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => Ended::Exited(code),
        (None, Some(signal)) => Ended::Signalled(signal),
        (None, None) => Ended::SpawnFailed(format!("QEMU ended oddly: {status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::stopped_for_good;

    #[test]
    fn kvm_errors_that_pause_the_vm_stop_the_boot_and_nothing_else_does() {
        // What QEMU 7.2 printed here when OVMF started under nested KVM.
        let line = "KVM internal error. Suberror: 1\n";
        assert_eq!(
            stopped_for_good(line).as_deref(),
            Some("KVM internal error. Suberror: 1")
        );
        assert!(stopped_for_good("KVM: entry failed, hardware error 0x80000021").is_some());
        for harmless in [
            "qemu-system-x86_64: warning: host doesn't support requested feature",
            "emulation failure",
            "  KVM internal error quoted later in a line",
        ] {
            assert_eq!(stopped_for_good(harmless), None, "{harmless}");
        }
    }
}
