//! Deciding how a boot ended from what QEMU left behind: its exit status, the
//! serial log and its stderr. Pure, so every class is tested without QEMU.

use crate::boot::process::Ended;
use abi::{GuestExit, Outcome};
use ktap::Report;

/// How many serial lines a hang or reset shows: enough to see where it stopped.
const TAIL_LINES: usize = 10;

pub struct Evidence<'a> {
    pub ended: &'a Ended,
    pub serial: &'a str,
    pub stderr: &'a str,
    /// The scenarios asked for, in order.
    pub requested: &'a [&'a str],
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub outcome: Outcome,
    /// One line a person reads first.
    pub reason: String,
    pub panic: Option<PanicRecord>,
    /// Why the report is not to be trusted (the KTAP problems and the contradictions).
    pub problems: Vec<String>,
    /// Supporting lines: the serial tail of a hang, QEMU's stderr...
    pub detail: Vec<String>,
    pub report: Report,
}

/// `PANIC cpu=<n> <file>:<line> <message>`, as the guest's panic handler prints it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PanicRecord {
    pub cpu: Option<u32>,
    pub location: String,
    pub message: String,
}

pub fn classify(evidence: &Evidence) -> Verdict {
    let report = ktap::parse(evidence.serial);
    let tail = tail(evidence.serial);
    let mut verdict = Verdict {
        outcome: Outcome::Malformed,
        reason: String::new(),
        panic: None,
        problems: Vec::new(),
        detail: Vec::new(),
        report,
    };
    match evidence.ended {
        Ended::SpawnFailed(why) => {
            verdict.outcome = Outcome::QemuFailed;
            verdict.reason = format!("QEMU did not run: {why}");
        }
        Ended::TimedOut(after) => {
            verdict.outcome = Outcome::Timeout;
            verdict.reason = format!(
                "no exit and no KTAP result for {}s; QEMU killed",
                after.as_secs_f64()
            );
            verdict.detail = tail;
        }
        Ended::Flooded(limit) => {
            verdict.outcome = Outcome::Flood;
            verdict.reason = format!(
                "the serial output passed its budget of {limit} bytes (--serial-limit); QEMU killed"
            );
            verdict.detail = tail;
        }
        Ended::Stopped(why) => {
            verdict.outcome = Outcome::QemuFailed;
            verdict.reason = format!(
                "QEMU stopped the guest for good ({why}); QEMU killed. KVM could not go on \
                 at the instruction in the register dump below: if --accel tcg runs it, this \
                 host's KVM is the cause"
            );
            verdict.detail = lines(evidence.stderr);
        }
        Ended::Signalled(signal) => {
            verdict.outcome = Outcome::QemuFailed;
            verdict.reason = format!("QEMU was killed by signal {signal}");
            verdict.detail = lines(evidence.stderr);
        }
        Ended::Exited(0) => {
            verdict.outcome = Outcome::Reset;
            verdict.reason = "the machine reset without an exit code (a triple fault?)".to_string();
            verdict.detail = tail;
        }
        Ended::Exited(status) => match GuestExit::from_qemu_status(*status) {
            Some(exit @ (GuestExit::Pass | GuestExit::Fail)) => {
                judge_report(&mut verdict, exit, evidence.requested);
                if verdict.outcome == Outcome::Malformed {
                    verdict.detail = tail;
                }
            }
            Some(GuestExit::Panic) => {
                verdict.outcome = Outcome::Panic;
                verdict.panic = panic_record(evidence.serial);
                verdict.reason = match &verdict.panic {
                    Some(p) => format!(
                        "panic on cpu {} at {}: {}",
                        cpu(p.cpu),
                        p.location,
                        p.message
                    ),
                    None => {
                        "the guest exited with its panic code but printed no PANIC record".into()
                    }
                };
                verdict.detail = tail;
            }
            Some(GuestExit::CaughtFatal) => {
                verdict.outcome = Outcome::CaughtFatal;
                verdict.reason =
                    "a fault was caught and reported; the guest could not go on".into();
                verdict.detail = tail;
            }
            Some(GuestExit::CaughtUnrecoverable) => {
                verdict.outcome = Outcome::CaughtUnrecoverable;
                verdict.reason = match unrecoverable_reason(evidence.serial) {
                    Some(why) => format!("caught, cannot recover: {why}"),
                    None => "caught, cannot recover (the guest did not say why)".into(),
                };
                verdict.detail = tail;
            }
            Some(GuestExit::LoaderError) => {
                verdict.outcome = Outcome::LoaderError;
                verdict.reason = "the loader refused to start the guest".into();
                verdict.detail = tail;
            }
            // 1 is QEMU's own error; 126 and 127 are a shell's (a QEMU
            // that is a wrapper script could not run what it wraps): none
            // is a code a guest wrote, however odd.
            None if *status == 1 || *status % 2 == 0 || matches!(*status, 126 | 127) => {
                verdict.outcome = Outcome::QemuFailed;
                let first = lines(evidence.stderr).into_iter().next();
                let what = match *status {
                    126 => " (a shell's: a command it could not execute)",
                    127 => " (a shell's: a command not found)",
                    _ => "",
                };
                verdict.reason = format!(
                    "QEMU failed (status {status}{what}): {}",
                    first.as_deref().unwrap_or("no message on its stderr")
                );
                verdict.detail = lines(evidence.stderr);
            }
            None => {
                verdict.outcome = Outcome::Malformed;
                verdict.reason = format!(
                    "QEMU status {status}: the guest wrote exit code {:#x}, which means nothing",
                    status >> 1
                );
                verdict.detail = tail;
            }
        },
    }
    verdict
}

/// A Pass or Fail exit is only believed if the report backs it up.
fn judge_report(verdict: &mut Verdict, exit: GuestExit, requested: &[&str]) {
    let report = &verdict.report;
    let mut problems: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
    let names: Vec<&str> = report.results.iter().map(|r| r.name.as_str()).collect();
    // A cut-short report is already a problem; only a wrong name is news then.
    let mismatch = if report.is_complete() {
        names != requested
    } else {
        !requested.starts_with(&names)
    };
    if report.version.is_some() && mismatch {
        problems.push(format!(
            "results for [{}] but [{}] were requested",
            names.join(", "),
            requested.join(", ")
        ));
    }
    let failures = report.failures().count();
    match exit {
        GuestExit::Pass if failures > 0 => problems.push(format!(
            "the guest exited with Pass but {failures} result(s) are `not ok`"
        )),
        GuestExit::Fail if failures == 0 && !report.results.is_empty() => {
            problems.push("the guest exited with Fail but every result is `ok`".to_string())
        }
        _ => {}
    }
    if !problems.is_empty() {
        verdict.outcome = Outcome::Malformed;
        verdict.reason = format!("the KTAP report cannot be trusted: {}", problems[0]);
        verdict.problems = problems;
    } else if exit == GuestExit::Pass {
        verdict.outcome = Outcome::Pass;
        verdict.reason = format!("{} of {} ok", names.len(), names.len());
    } else {
        verdict.outcome = Outcome::Fail;
        verdict.reason = format!("{failures} of {} not ok", names.len());
    }
}

/// The guest's own line for why a caught task could not be killed.
fn unrecoverable_reason(serial: &str) -> Option<String> {
    const MARK: &str = "caught, cannot recover: ";
    let line = serial.lines().rev().find(|l| l.contains(MARK))?;
    Some(line[line.find(MARK)? + MARK.len()..].trim_end().to_string())
}

fn cpu(cpu: Option<u32>) -> String {
    cpu.map_or_else(|| "?".to_string(), |c| c.to_string())
}

/// The last PANIC record in the log (a panic while panicking prints twice;
/// the last one is what stopped the machine).
pub fn panic_record(serial: &str) -> Option<PanicRecord> {
    let line = serial.lines().rev().find(|l| l.contains("PANIC cpu="))?;
    let record = &line[line.find("PANIC cpu=")? + "PANIC cpu=".len()..];
    let (cpu, rest) = record.split_once(' ').unwrap_or((record, ""));
    let (location, message) = rest.split_once(' ').unwrap_or((rest, ""));
    Some(PanicRecord {
        cpu: cpu.parse().ok(),
        location: location.to_string(),
        message: message.trim_end().to_string(),
    })
}

fn tail(serial: &str) -> Vec<String> {
    let all = lines(serial);
    all[all.len().saturating_sub(TAIL_LINES)..].to_vec()
}

/// Characters of a serial or stderr line a verdict quotes: the whole line
/// is in the log.
const SHOWN_CHARS: usize = 300;

fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .map(|l| match l.char_indices().nth(SHOWN_CHARS) {
            Some((at, _)) => format!("{} [...]", &l[..at]),
            None => l.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn verdict(ended: Ended, serial: &str, requested: &[&str]) -> Verdict {
        classify(&Evidence {
            ended: &ended,
            serial,
            stderr: "qemu-system-x86_64: -foo: invalid option\n",
            requested,
        })
    }

    fn exit(e: GuestExit) -> Ended {
        Ended::Exited(e.qemu_status())
    }

    const GOOD: &str = "loader: ok\nKTAP version 1\n1..2\nok 1 a.b\n# log\nok 2 c.d\n";

    #[test]
    fn pass_needs_a_complete_all_ok_report_for_what_was_asked() {
        let v = verdict(exit(GuestExit::Pass), GOOD, &["a.b", "c.d"]);
        assert_eq!(v.outcome, Outcome::Pass, "{v:?}");
        assert_eq!(v.report.results[1].diagnostics, ["log"]);
        assert!(v.detail.is_empty(), "a believed report needs no tail");

        for requested in [&["a.b"][..], &["a.b", "c.d", "e.f"], &["c.d", "a.b"]] {
            let v = verdict(exit(GuestExit::Pass), GOOD, requested);
            assert_eq!(v.outcome, Outcome::Malformed);
            assert!(v.reason.contains("requested"), "{}", v.reason);
        }

        let truncated = "KTAP version 1\n1..3\nok 1 a.b\nok 2 c.d\n";
        let v = verdict(exit(GuestExit::Pass), truncated, &["a.b", "c.d", "e.f"]);
        assert_eq!(v.outcome, Outcome::Malformed);
        assert_eq!(v.problems, ["truncated: 2 of 3 planned results"]);
        let wrong = "KTAP version 1\n1..3\nok 1 a.b\nok 2 x.y\n";
        let v = verdict(exit(GuestExit::Pass), wrong, &["a.b", "c.d", "e.f"]);
        assert!(v.problems[1].contains("[a.b, x.y]"), "{:?}", v.problems);

        let v = verdict(exit(GuestExit::Pass), truncated, &["a.b", "c.d", "e.f"]);
        assert_eq!(v.detail.last().map(String::as_str), Some("ok 2 c.d"));

        let failed = "KTAP version 1\n1..1\nnot ok 1 a.b\n";
        assert_eq!(
            verdict(exit(GuestExit::Pass), failed, &["a.b"]).outcome,
            Outcome::Malformed
        );
        assert_eq!(
            verdict(exit(GuestExit::Pass), "", &["a.b"]).outcome,
            Outcome::Malformed
        );
        let skipped = "KTAP version 1\n1..1\nok 1 a.b # SKIP one cpu\n";
        assert_eq!(
            verdict(exit(GuestExit::Pass), skipped, &["a.b"]).outcome,
            Outcome::Pass
        );
    }

    #[test]
    fn fail_needs_a_not_ok() {
        let failed = "KTAP version 1\n1..2\n# why\nnot ok 1 a.b\nok 2 c.d\n";
        let v = verdict(exit(GuestExit::Fail), failed, &["a.b", "c.d"]);
        assert_eq!(v.outcome, Outcome::Fail);
        assert_eq!(v.reason, "1 of 2 not ok");
        let v = verdict(exit(GuestExit::Fail), GOOD, &["a.b", "c.d"]);
        assert_eq!(v.outcome, Outcome::Malformed);
        assert!(v.reason.contains("every result is `ok`"));
        let todo = "KTAP version 1\n1..1\nnot ok 1 a.b # TODO later\n";
        assert_eq!(
            verdict(exit(GuestExit::Fail), todo, &["a.b"]).outcome,
            Outcome::Malformed
        );
    }

    #[test]
    fn panic_record_is_extracted() {
        let serial = "KTAP version 1\n1..1\n\nPANIC cpu=3 guest/src/scenarios/selftest.rs:42 selftest.panic: deliberate panic\n";
        let v = verdict(exit(GuestExit::Panic), serial, &["selftest.panic"]);
        assert_eq!(v.outcome, Outcome::Panic);
        let p = v.panic.unwrap();
        assert_eq!(p.cpu, Some(3));
        assert_eq!(p.location, "guest/src/scenarios/selftest.rs:42");
        assert_eq!(p.message, "selftest.panic: deliberate panic");
        assert_eq!(
            v.reason,
            "panic on cpu 3 at guest/src/scenarios/selftest.rs:42: selftest.panic: deliberate panic"
        );
        let v = verdict(exit(GuestExit::Panic), "PANIC cpu=? a.rs:1 x\n", &["x.y"]);
        assert_eq!(v.reason, "panic on cpu ? at a.rs:1: x");

        let v = verdict(exit(GuestExit::Panic), "garbage", &["x.y"]);
        assert_eq!((v.outcome, v.panic), (Outcome::Panic, None));
        assert_eq!(panic_record("\x00junkPANIC cpu=x").unwrap().cpu, None);
    }

    #[test]
    fn machine_level_endings() {
        let serial: String = (0..30).map(|i| format!("line {i}\n")).collect();
        let v = verdict(Ended::TimedOut(Duration::from_secs(3)), &serial, &["s.h"]);
        assert_eq!(v.outcome, Outcome::Timeout);
        assert_eq!(v.detail.len(), TAIL_LINES);
        assert_eq!(v.detail.last().unwrap(), "line 29");

        assert_eq!(
            verdict(Ended::Exited(0), &serial, &["s.t"]).outcome,
            Outcome::Reset
        );
        let v = verdict(Ended::Exited(1), "", &["a.b"]);
        assert_eq!(v.outcome, Outcome::QemuFailed);
        assert!(v.reason.contains("invalid option"), "{}", v.reason);
        let v = verdict(Ended::SpawnFailed("No such file".into()), "", &["a.b"]);
        assert_eq!(v.outcome, Outcome::QemuFailed);
        assert_eq!(
            verdict(Ended::Signalled(9), "", &["a"]).outcome,
            Outcome::QemuFailed
        );
        assert_eq!(
            verdict(exit(GuestExit::CaughtFatal), "", &["a"]).outcome,
            Outcome::CaughtFatal
        );
        let serial = "x\nstack.irqs_off: caught, cannot recover: irqs were off \nend\n";
        let v = verdict(exit(GuestExit::CaughtUnrecoverable), serial, &["a"]);
        assert_eq!(v.outcome, Outcome::CaughtUnrecoverable);
        assert_eq!(v.reason, "caught, cannot recover: irqs were off");
        let v = verdict(exit(GuestExit::CaughtUnrecoverable), "x\n", &["a"]);
        assert_eq!(
            v.reason,
            "caught, cannot recover (the guest did not say why)"
        );
        assert_eq!(
            verdict(exit(GuestExit::LoaderError), "", &["a"]).outcome,
            Outcome::LoaderError
        );
        // An odd status no exit code maps to: the guest wrote something meaningless.
        assert_eq!(
            verdict(Ended::Exited(3), "", &["a"]).outcome,
            Outcome::Malformed
        );
        // A wrapper script's shell could not find or run QEMU.
        for (status, said) in [(126, "could not execute"), (127, "not found")] {
            let v = verdict(Ended::Exited(status), "", &["a"]);
            assert_eq!(v.outcome, Outcome::QemuFailed, "{status}");
            assert!(v.reason.contains("invalid option"), "{}", v.reason);
            assert!(v.reason.contains(said), "{}", v.reason);
        }
        // A guest's code always has the low bit set: an even status is QEMU's.
        for status in [2, 4, 256] {
            let v = verdict(Ended::Exited(status), "", &["a"]);
            assert_eq!(v.outcome, Outcome::QemuFailed, "{status}");
            assert!(!v.reason.contains("a shell's"), "{}", v.reason);
        }
        let v = verdict(Ended::Flooded(1000), "xxxx", &["a"]);
        assert_eq!(v.outcome, Outcome::Flood);
        assert!(v.reason.contains("1000 bytes"), "{}", v.reason);
        let long = "y".repeat(100_000);
        let v = verdict(Ended::TimedOut(Duration::from_secs(1)), &long, &["a"]);
        assert!(v.detail[0].len() < 400, "a detail line is quoted whole");
    }
}
