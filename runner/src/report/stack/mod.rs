//! Was a stack scenario's fault caught, and was it told well? Pure: the
//! guest's stack lines (`lines`) and a symbolizer in, a verdict out.
//!
//! Every claim in a `GUARD-HIT` is held against something the fault handler
//! did not write: the `STACK-ALLOC` the scenario announced before it
//! overflowed (bounds, guard size, CPU, task, and so the bytes past the
//! stack), the fault address (which guard it really lies in), the boot's
//! CPU map (which LAPIC the hardware said took the fault), and the guest
//! ELF (which functions the backtrace addresses really are in, and their
//! `symbol+offset`). The human oops is read back line by line and held
//! against the record (`oops`), and the first hit's dumped stack is
//! unwound by the runner itself and held against the guest's trace
//! (`trace`). Each check that fails is named.

//!
//! In three parts: the verdict and the checks across a scenario's hits
//! (here), where each fault really is (`truth`), and each hit's claims held
//! against that truth and the announcement, one concern per function
//! (`checks`).

mod checks;
mod truth;

use super::lines::{Alloc, Cpus, Events, Hit};
use super::{Check, Failure, FaultVerdict};
use crate::symbols::Symbolize;
use abi::guard::{GuardExpect, Verdict};
use abi::kinds::StackKind;
use abi::{Outcome, Scenario};
use checks::judge_hit;
use truth::{jump_distance, pair};

const PAGE: u64 = 4096;

/// The four answers a person wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Category {
    Good,
    DiagnosticsWrong,
    NotCaught,
    GuardJumped,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackVerdict {
    pub expected: Verdict,
    /// Where the fault really was, by the announced allocation.
    pub observed: Verdict,
    pub failures: Vec<Failure>,
    /// GUARD-HIT lines read, and hits the guest counted but did not print.
    pub hits: usize,
    pub suppressed: u64,
    pub stack_kind: Option<StackKind>,
    pub depth: Option<u64>,
    /// For a jumped guard: how far the fault was from the nearest guard.
    pub jumped: Option<String>,
    /// Damage found afterwards (`STACK-CORRUPTION`), as sentences.
    pub corruption: Vec<String>,
}

impl FaultVerdict for StackVerdict {
    fn as_expected(&self) -> bool {
        StackVerdict::as_expected(self)
    }
    fn describe(&self) -> String {
        StackVerdict::describe(self)
    }
    fn category_str(&self) -> &'static str {
        StackVerdict::category_str(self)
    }
    fn failures(&self) -> &[Failure] {
        &self.failures
    }
}

impl StackVerdict {
    pub fn as_expected(&self) -> bool {
        self.observed == self.expected && self.failures.is_empty()
    }

    pub fn category(&self) -> Category {
        match self.observed {
            Verdict::Overflow | Verdict::Underflow if self.failures.is_empty() => Category::Good,
            Verdict::Overflow | Verdict::Underflow => Category::DiagnosticsWrong,
            Verdict::NotCaught => Category::NotCaught,
            Verdict::GuardJumped => Category::GuardJumped,
        }
    }

    pub fn category_str(&self) -> &'static str {
        match self.category() {
            Category::Good => "caught-good",
            Category::DiagnosticsWrong => "caught-diagnostics-wrong",
            Category::NotCaught => "not-caught",
            Category::GuardJumped => "guard-jumped",
        }
    }

    /// One phrase for the summary line.
    pub fn describe(&self) -> String {
        let mut facts = vec![self.observed.as_str().to_string()];
        if let Some(k) = self.stack_kind {
            facts.push(format!("{} stack", k.linux_name()));
        }
        if let Some(d) = self.depth {
            facts.push(format!("depth {d}"));
        }
        if self.suppressed > 0 {
            facts.push(format!("{} hits", self.hits as u64 + self.suppressed));
        } else if self.hits > 1 {
            facts.push(format!("{} hits", self.hits));
        }
        let expected = if self.observed == self.expected {
            String::new()
        } else {
            format!(" (expected {})", self.expected.as_str())
        };
        let mut failed: Vec<&str> = Vec::new();
        for f in &self.failures {
            if !failed.contains(&f.check.name()) {
                failed.push(f.check.name());
            }
        }
        let failed = if failed.is_empty() {
            String::new()
        } else {
            format!("; wrong: {}", failed.join(", "))
        };
        match self.category() {
            Category::Good => format!(
                "caught with good diagnostics ({}){expected}",
                facts.join(", ")
            ),
            Category::DiagnosticsWrong => format!(
                "caught, diagnostics wrong ({}){expected}{failed}",
                facts[..2.min(facts.len())].join(", ")
            ),
            Category::NotCaught => {
                let after = match self.corruption.first() {
                    Some(c) => format!("; found afterwards: {c}"),
                    None => String::new(),
                };
                let label = match (expected.is_empty(), self.failures.is_empty()) {
                    (true, true) => "not caught, as expected",
                    // What would make it so is missing (`evidence`).
                    (true, false) => "not caught, unproven",
                    (false, _) => "NOT CAUGHT",
                };
                format!("{label}{expected}{after}{failed}")
            }
            Category::GuardJumped => {
                let label = if expected.is_empty() {
                    "guard jumped, as expected"
                } else {
                    "GUARD JUMPED"
                };
                let how = self
                    .jumped
                    .as_ref()
                    .map(|j| format!(" ({j})"))
                    .unwrap_or_default();
                format!("{label}{how}{expected}{failed}")
            }
        }
    }
}

/// The scenario's verdict. `smp` resolves `hits: 0` (one per CPU);
/// `diagnostics` are its KTAP `# ` lines (for the suppressed-hit count).
pub fn judge(
    scenario: &Scenario,
    expect: &GuardExpect,
    smp: u32,
    events: &Events,
    diagnostics: &[String],
    symbols: Option<&dyn Symbolize>,
) -> StackVerdict {
    let allocs: Vec<&Alloc> = events.allocs_of(scenario.name).collect();
    let hits: Vec<&Hit> = events.hits_of(scenario.name).collect();
    let mut failures = Vec::new();
    for line in events.unreadable_of(scenario.name) {
        let shown: String = line.chars().take(120).collect();
        failures.push(Failure {
            check: Check::Readable,
            detail: format!("a stack line does not parse: {shown}"),
        });
    }
    // A scenario whose boot goes on wants the task killed; one that stops
    // the machine must say it did not recover.
    let recovered = match scenario.expect {
        Outcome::Pass => Some(true),
        Outcome::CaughtFatal => Some(false),
        _ => None,
    };
    let mut observed = Verdict::NotCaught;
    let mut jumped = None;
    let cpus = events.cpu_maps.first();
    for alloc in &allocs {
        if let Some(f) = lapic(cpus, "the STACK-ALLOC", alloc.cpu, alloc.lapic_id, smp) {
            failures.push(f);
        }
    }
    for (i, hit) in hits.iter().enumerate() {
        let alloc = pair(hit, &allocs);
        let (truth, mut found) = judge_hit(hit, alloc, expect, symbols, recovered);
        let block = super::oops::block(&events.lines, hit.line);
        found.extend(super::oops::check_lines(block.as_deref(), hit));
        found.extend(lapic(cpus, "the `CPU:` line", hit.cpu, hit.lapic_id, smp));
        if let Some(symbols) = symbols {
            found.extend(super::oops::check_symbols(hit, symbols));
            // The first hit of a scenario comes with its stack's words.
            match super::trace::dump_of(events, hit, alloc) {
                Some(dump) => {
                    let kind = alloc.map(|a| a.stack_kind).or(hit.stack_kind);
                    found.extend(super::trace::judge(hit, kind, dump, symbols).failures)
                }
                None if i == 0 && hit.stack_hi.get() > hit.stack_lo.get() => found.push(Failure {
                    check: Check::Unwind,
                    detail: "no STACK-DUMP after the scenario's first GUARD-HIT: nothing to unwind"
                        .into(),
                }),
                None => {}
            }
        }
        if hits.len() > 1 {
            for f in &mut found {
                f.detail = format!("hit {} (cpu {}): {}", i + 1, hit.cpu, f.detail);
            }
        }
        if i == 0 {
            observed = truth;
            jumped = alloc.and_then(|a| jump_distance(hit.fault_addr.0, a));
        } else if truth != observed {
            found.push(Failure {
                check: Check::Hits,
                detail: format!(
                    "hit {} is {}, hit 1 {}",
                    i + 1,
                    truth.as_str(),
                    observed.as_str()
                ),
            });
        }
        failures.extend(found);
    }
    if hits.is_empty() && expect.verdict != Verdict::NotCaught {
        // Nothing to judge is itself the failure: the machine died (a
        // triple fault) or the handler never reported, where a report was due.
        failures.push(Failure {
            check: Check::Hits,
            detail: format!(
                "no GUARD-HIT report, expected {} ({})",
                if expect.hits == 0 { smp } else { expect.hits },
                expect.verdict.as_str()
            ),
        });
    }
    if !hits.is_empty() {
        let want = if expect.hits == 0 {
            smp as usize
        } else {
            expect.hits as usize
        };
        if hits.len() != want {
            failures.push(Failure {
                check: Check::Hits,
                detail: format!("{} GUARD-HIT report(s), expected {want}", hits.len()),
            });
        } else if expect.hits == 0 {
            let mut cpus: Vec<u32> = hits.iter().map(|h| h.cpu).collect();
            cpus.sort_unstable();
            cpus.dedup();
            if cpus.len() != want {
                failures.push(Failure {
                    check: Check::Hits,
                    detail: format!("hits on CPUs {cpus:?}, expected one on each of {want}"),
                });
            }
        }
    }
    let first = hits.first();
    StackVerdict {
        expected: expect.verdict,
        observed,
        failures,
        hits: hits.len(),
        suppressed: super::lines::suppressed(diagnostics.iter().map(String::as_str)),
        stack_kind: first.and_then(|h| h.stack_kind),
        depth: first.and_then(|h| h.depth),
        jumped,
        corruption: events
            .corruptions_of(scenario.name)
            .map(|c| format!("{} {:#x} instead of {:#x}", c.what, c.found.0, c.expected.0))
            .collect(),
    }
}

/// The second witness for "CPU n": the LAPIC id the hardware gave at the
/// moment, against the one the boot listed for CPU n.
fn lapic(cpus: Option<&Cpus>, what: &str, cpu: u32, lapic_id: u32, smp: u32) -> Option<Failure> {
    let fail = |detail: String| {
        Some(Failure {
            check: Check::Lapic,
            detail,
        })
    };
    let Some(map) = cpus else {
        return fail(format!(
            "no CPU-MAP in the log: nothing witnesses that {what}'s CPU {cpu} is the CPU that ran it"
        ));
    };
    let ids = &map.lapic_ids;
    let mut distinct = ids.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    if ids.len() != smp as usize || distinct.len() != ids.len() {
        return fail(format!(
            "the boot's CPU-MAP lists LAPIC ids {ids:?}: not {smp} distinct CPUs"
        ));
    }
    match ids.get(cpu as usize) {
        Some(&id) if id == lapic_id => None,
        Some(&id) => fail(format!(
            "{what} names CPU {cpu}, but the hardware said LAPIC {lapic_id} took it, and the boot listed CPU {cpu} as LAPIC {id}"
        )),
        None => fail(format!(
            "{what} names CPU {cpu}, which the boot's CPU-MAP does not list"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixture::{self, failed, Answers, Log};
    use abi::guard::GuardHit;
    use serde_json::{json, Value};

    fn elf() -> Answers {
        Answers::load()
    }

    fn judge_log(name: &str, log: &Log, smp: u32) -> StackVerdict {
        fixture::judge(name, &log.text(), smp, &elf())
    }

    fn recursion(log: Log) -> StackVerdict {
        judge_log("stack.recursion", &log, 1)
    }

    fn real() -> Log {
        Log::of(fixture::STACK)
    }

    /// Failed check names, each once, in order.
    fn names(v: &StackVerdict) -> Vec<&'static str> {
        let mut out = failed(v);
        out.dedup();
        out
    }

    fn set(field: &'static str, value: Value) -> impl FnOnce(&mut Value) {
        move |v| v[field] = value
    }

    #[test]
    fn a_good_report_passes_every_check() {
        let v = recursion(real());
        assert_eq!(v.failures, []);
        assert_eq!(v.observed, Verdict::Overflow);
        assert!(v.as_expected());
        assert_eq!(
            v.describe(),
            "caught with good diagnostics (overflow, TASK stack, depth 52)"
        );
        // What the summary and JUnit see, through the trait.
        let f: &dyn FaultVerdict = &v;
        assert!(f.as_expected() && f.failures().is_empty());
        assert_eq!(f.category_str(), "caught-good");
        assert_eq!(f.describe(), v.describe());
    }

    /// Each field changed as a guest that got it wrong would print it (the
    /// record, and the oops rendered from it) must be caught by its own
    /// check, and only by it.
    #[test]
    fn each_tampered_field_names_its_check() {
        type Tamper = Box<dyn FnOnce(&mut Value)>;
        let frames = |f: fn(&mut Vec<Value>)| -> Tamper {
            Box::new(move |v: &mut Value| f(v["backtrace"].as_array_mut().unwrap()))
        };
        let cases: Vec<(&str, Tamper, &[&str])> = vec![
            (
                "the stack claimed one page higher",
                Box::new(|v: &mut Value| {
                    v["stack_lo"] = json!("0xffffc90000020000");
                    v["stack_hi"] = json!("0xffffc90000024000");
                }),
                &["guard-adjacent", "bounds"],
            ),
            (
                "a guard where the fault is not",
                Box::new(|v: &mut Value| {
                    v["guard_lo"] = json!("0xffffc9000001d000");
                    v["guard_hi"] = json!("0xffffc9000001e000");
                }),
                &["fault-in-guard", "guard-adjacent"],
            ),
            (
                "another CPU",
                Box::new(set("cpu", json!(2))),
                &["cpu", "lapic"],
            ),
            (
                "another LAPIC",
                Box::new(set("lapic_id", json!(1))),
                &["lapic"],
            ),
            (
                "another task",
                Box::new(set("task_id", json!(4))),
                &["task"],
            ),
            (
                "the task's name cut short",
                Box::new(set("task_name", json!("recurs"))),
                &["task"],
            ),
            (
                "another stack kind",
                Box::new(set("stack_kind", json!("irq"))),
                &["stack-kind"],
            ),
            (
                "a shallow depth",
                Box::new(set("depth", json!(12))),
                &["depth"],
            ),
            (
                "a deep depth",
                Box::new(set("depth", json!(200))),
                &["depth"],
            ),
            ("no depth", Box::new(set("depth", Value::Null)), &["depth"]),
            (
                "depth off by two",
                Box::new(set("depth", json!(54))),
                &["depth"],
            ),
            (
                "the other guard",
                Box::new(set("kind", json!("underflow"))),
                &["kind"],
            ),
            (
                "not recovered",
                Box::new(set("recovered", json!(false))),
                &["recovered"],
            ),
            (
                "bytes counted into the guard",
                Box::new(set("bytes", json!(4096 - 184))),
                &["bytes"],
            ),
            (
                "exception context",
                Box::new(set("context", json!("exception"))),
                &["context"],
            ),
            (
                "RIP named after another function",
                Box::new(|v: &mut Value| {
                    v["rip_sym"]["name"] = json!("guest::scenarios::stack::recurse_to_death")
                }),
                &["symbol"],
            ),
            (
                "RIP at a wrong offset",
                Box::new(|v: &mut Value| v["rip_sym"]["off"] = json!("0x2b")),
                &["symbol"],
            ),
            (
                "a frame the guest cannot name",
                frames(|f| f[3]["sym"] = Value::Null),
                &["symbol"],
            ),
            (
                "the innermost frame lost",
                frames(|f| f[0]["repeat"] = json!(52)),
                &["unwind"],
            ),
            (
                "the outermost frame lost",
                frames(|f| {
                    f.pop();
                }),
                &["unwind"],
            ),
            (
                "only the first frame kept",
                frames(|f| {
                    f.truncate(1);
                    f[0]["repeat"] = json!(1);
                }),
                &["unwind"],
            ),
            (
                "a frame made up",
                frames(|f| {
                    let extra = f[2].clone();
                    f.insert(2, extra);
                }),
                &["unwind"],
            ),
            (
                "the recursion's frame size misreported",
                frames(|f| {
                    f[0]["size"] = json!(296);
                    f[1]["size"] = json!(64);
                }),
                &["frame-size"],
            ),
        ];
        for (what, tamper, want) in cases {
            let v = recursion(real().hit("stack.recursion", tamper));
            assert_eq!(names(&v), want, "{what}: {:#?}", v.failures);
            assert_eq!(v.observed, Verdict::Overflow, "{what}");
            assert!(!v.as_expected(), "{what}");
            assert!(
                v.describe().starts_with("caught, diagnostics wrong"),
                "{what}: {}",
                v.describe()
            );
            assert!(v.describe().contains(want[0]), "{}", v.describe());
            assert_eq!(v.category_str(), "caught-diagnostics-wrong", "{what}");
        }
    }

    /// The captured recursion's record.
    fn captured() -> GuardHit<'static> {
        let e = crate::report::lines::parse(fixture::STACK);
        e.hits[0].record.clone()
    }

    /// What the failures say: the wrong line, and both values.
    #[test]
    fn failures_name_the_line_and_both_values() {
        let hit = captured();
        let (rip, ret, last) = (
            hit.rip.0,
            hit.backtrace[0].addr.0,
            hit.backtrace.last().unwrap().addr.0,
        );
        let detail = |log: Log| recursion(log).failures[0].detail.clone();
        let d = detail(real().hit("stack.recursion", set("bytes", json!(3912))));
        assert!(
            d.contains("`Oops:` line says overflow by 3912 bytes")
                && d.contains("is 184 bytes below"),
            "{d}"
        );
        let d = detail(real().hit("stack.recursion", |v| {
            v["rip_sym"]["name"] = json!("guest::scenarios::stack::recurse_to_death")
        }));
        assert!(
            d.contains(&format!("the `RIP:` line names {rip:#x} `guest::scenarios::stack::recurse_to_death+0x2a/0xe6`"))
                && d.contains("the ELF says `guest::scenarios::stack::stack_recurse+0x2a/0xe6`"),
            "{d}"
        );
        let d = detail(real().hit("stack.recursion", |v| {
            v["backtrace"][0]["repeat"] = json!(52)
        }));
        assert!(
            d.contains(&format!("Call Trace line 1: the guest prints `[<{ret:016x}>] guest::scenarios::stack::stack_recurse+0x89/0xe6 (52 times in a row)`"))
                && d.contains(&format!("gives `[<{ret:016x}>] guest::scenarios::stack::stack_recurse+0x89/0xe6 (53 times in a row)`")),
            "{d}"
        );
        let d = detail(real().hit("stack.recursion", |v| {
            let f = v["backtrace"].as_array_mut().unwrap();
            f.truncate(1);
            f[0]["repeat"] = json!(1);
        }));
        assert!(
            d.contains(&format!("Call Trace line 1: the guest prints `[<{ret:016x}>] guest::scenarios::stack::stack_recurse+0x89/0xe6`, the unwind")),
            "{d}"
        );
        let d = detail(real().hit("stack.recursion", |v| {
            v["backtrace"].as_array_mut().unwrap().pop();
        }));
        assert!(
            d.contains(&format!("the guest's Call Trace ends after line 4; the unwind of the dumped stack goes on with `[<{last:016x}>] task_entry_trampoline+0x7`")),
            "{d}"
        );
        let d = detail(real().hit("stack.recursion", set("lapic_id", json!(1))));
        assert!(
            d.contains("the `CPU:` line names CPU 0, but the hardware said LAPIC 1 took it, and the boot listed CPU 0 as LAPIC 0"),
            "{d}"
        );
    }

    /// The oops lines themselves: a line garbled, or gone, is caught by
    /// `oops-line` alone (the record is right).
    #[test]
    fn each_garbled_oops_line_is_named() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "overflow by 184 bytes",
                "overflow by 4280 bytes",
                "the `Oops:` line (log line",
            ),
            ("CPU: 0 APIC: 0", "CPU: 1 APIC: 0", "the `CPU:` line"),
            (
                "guest::scenarios::stack::stack_recurse+0x2a/0xe6",
                "?",
                "the `RIP:` line",
            ),
            (
                "stack_recurse+0x89/0xe6",
                "stack_recurse+0x89/0xe7",
                "a `Call Trace` line",
            ),
            (
                "53 times in a row",
                "52 times in a row",
                "a `... the frame above, N times in a row` line",
            ),
            (
                "Recursion depth: 52",
                "Recursion depth: 5",
                "the `Recursion depth:` line",
            ),
            ("(1 page)", "(2 pages)", "the `Guard:` line"),
            (
                "RBP: ffffc9000001f070",
                "RBP: ffffc9000001f078",
                "a register line",
            ),
            ("Call Trace:", "Call trace:", "which is no oops line"),
        ];
        for (from, to, named) in cases {
            let v = recursion(real().oops_text("stack.recursion", from, to));
            assert_eq!(names(&v), ["oops-line"], "{to}: {:#?}", v.failures);
            assert!(v.failures[0].detail.contains(named), "{:?}", v.failures);
            assert!(v.failures[0].detail.contains(to), "{:?}", v.failures);
        }
        // A line gone, and none at all.
        let v = recursion(real().without(|l| l.starts_with("Guard: ")));
        assert_eq!(names(&v), ["oops-line"]);
        let v = recursion(real().without(|l| l.starts_with("BUG: ")));
        assert_eq!(names(&v), ["oops-line"]);
        assert!(
            v.failures[0].detail.contains("no `BUG:` line"),
            "{:?}",
            v.failures
        );
    }

    /// The dumped stack is the unwinder's ground truth: damage to it (or no
    /// dump at all) fails the unwind, and nothing else.
    #[test]
    fn a_damaged_or_missing_dump_fails_the_unwind_only() {
        // The trampoline's return address, pointed elsewhere.
        let hit = captured();
        let (trampoline, elsewhere) = (hit.backtrace[4].addr.0, hit.backtrace[1].addr.0);
        let v = recursion(real().dump("stack.recursion", |lo, w| {
            let top = (hit.stack_hi.0 - lo) / 8;
            let at = (1..8)
                .map(|k| top as usize - k)
                .find(|&i| w[i] == Some(trampoline))
                .expect("the trampoline's return address near the top");
            w[at] = Some(elsewhere);
        }));
        assert_eq!(names(&v), ["unwind"], "{:#?}", v.failures);
        // Each failure says how the unwind stopped, and where.
        assert!(
            v.failures[0].detail.starts_with(
                "the unwind of the dumped stack stopped because the CFA 0x10 at 0xffffffff80016a50 is not above"
            ),
            "{:#?}",
            v.failures
        );
        // A word unreadable where the unwinder needs it.
        let v = recursion(real().dump("stack.recursion", |_, w| {
            let n = w.len();
            for x in &mut w[n - 8..] {
                *x = None;
            }
        }));
        assert_eq!(names(&v), ["unwind"], "{:#?}", v.failures);
        let left = "where the next frame lies off the dumped stack (0xffffc90000022fe8)";
        assert!(
            v.failures.len() == 2
                && v.failures[0]
                    .detail
                    .contains(&format!("stopped {left} after"))
                && v.failures[1]
                    .detail
                    .ends_with(&format!("ended after 3 line(s) {left}")),
            "{:#?}",
            v.failures
        );
        // A chunk missing, then the whole dump.
        let log = real();
        let first_dump = log
            .0
            .iter()
            .position(|l| l.starts_with("STACK-DUMP "))
            .unwrap();
        let mut cut = log.clone();
        cut.0.remove(first_dump + 1);
        let v = recursion(cut);
        assert_eq!(names(&v), ["unwind"], "{:#?}", v.failures);
        // A chunk in its place, but of a dump with other bounds.
        let mut mixed = log.clone();
        mixed.0[first_dump + 1] = mixed.0[first_dump + 1].replacen(
            "\"hi\":\"0xffffc90000023000\"",
            "\"hi\":\"0xffffc90000024000\"",
            1,
        );
        assert_ne!(mixed.0, log.0);
        let v = recursion(mixed);
        assert_eq!(names(&v), ["unwind"], "{:#?}", v.failures);
        assert!(
            v.failures[0]
                .detail
                .contains("a chunk at 0xffffc90000020000"),
            "{:?}",
            v.failures
        );
        let v = recursion(real().without(|l| l.starts_with("STACK-DUMP ")));
        assert_eq!(names(&v), ["unwind"]);
        assert!(
            v.failures[0].detail.contains("no STACK-DUMP"),
            "{:?}",
            v.failures
        );
    }

    #[test]
    fn the_cpu_map_witnesses_the_announcement_too() {
        let v = recursion(Log::of(&fixture::STACK.replacen(
            "\"cpu\":0,\"lapic_id\":0,\"task_id\":3",
            "\"cpu\":0,\"lapic_id\":5,\"task_id\":3",
            1,
        )));
        assert_eq!(names(&v), ["lapic"], "{:#?}", v.failures);
        assert!(
            v.failures[0].detail.contains("the STACK-ALLOC names CPU 0"),
            "{:?}",
            v.failures
        );
        let v = recursion(real().without(|l| l.starts_with("CPU-MAP ")));
        assert_eq!(names(&v), ["lapic"]);
        assert!(
            v.failures[0].detail.contains("no CPU-MAP"),
            "{:?}",
            v.failures
        );
    }

    #[test]
    fn every_odd_context_agrees_with_its_unwind() {
        // The captured #PF-handler recursion, IRQ-stack recursion, underflow
        // and jumped guard: a trace through a trap frame, a trace that ends
        // at the IRQ entry, a trace from an rsp moved by hand.
        for &(name, log, smp) in fixture::CAPTURED {
            let v = judge_log(name, &Log::of(log), smp);
            assert_eq!(v.failures, [], "{name}");
        }
        // The #PF handler's report says it was in an exception: a context
        // of `task` is contradicted by the trap frame on the stack.
        let v = judge_log(
            "stack.exception",
            &Log::of(fixture::STACK).hit("stack.exception", set("context", json!("task"))),
            1,
        );
        assert_eq!(names(&v), ["context"], "{:#?}", v.failures);
        // Dropping the interrupted frame the walk crosses (what the walker
        // did before it read trap frames) is caught.
        let v = judge_log(
            "stack.exception",
            &Log::of(fixture::STACK).hit("stack.exception", |v| {
                let f = v["backtrace"].as_array_mut().unwrap();
                let at = f.iter().position(|x| x.get("trap").is_some()).unwrap();
                f.remove(at);
            }),
            1,
        );
        assert_eq!(names(&v), ["unwind"], "{:#?}", v.failures);
        // The IRQ stack's trace must end where the entry switched stacks.
        let v = judge_log(
            "stack.irq",
            &Log::of(fixture::IRQ).hit("stack.irq", |v| {
                v["backtrace"].as_array_mut().unwrap().pop();
            }),
            1,
        );
        assert_eq!(names(&v), ["unwind"], "{:#?}", v.failures);
    }

    #[test]
    fn the_backtrace_needs_the_elf() {
        let s = abi::scenario::find("stack.recursion").unwrap();
        let log = real().text();
        let v = judge(
            s,
            &s.guard.unwrap(),
            1,
            &crate::report::lines::parse(&log),
            &[],
            None,
        );
        assert_eq!(failed(&v), ["backtrace"]);
    }

    #[test]
    fn a_double_fault_with_no_room_left_is_an_overflow_whatever_the_address() {
        // The `cr2-only` defect under nested KVM: CR2 stale (0), the guest
        // trusts it and says not-guard; RSP at the stack's bottom says
        // overflow, and the runner believes RSP.
        let v = recursion(real().hit("stack.recursion", |v| {
            v["kind"] = json!("not-guard");
            v["fault_addr"] = json!("0x0");
            v["cr2"] = json!("0x0");
            v["rsp"] = v["stack_lo"].clone();
        }));
        assert_eq!(v.observed, Verdict::Overflow, "{:#?}", v.failures);
        assert!(names(&v).contains(&"kind"), "{:#?}", v.failures);
        assert!(
            v.failures
                .iter()
                .any(|f| f.detail.contains("leaves no room for an exception frame")),
            "{:#?}",
            v.failures
        );
        // The same address with RSP well inside the stack: no overflow.
        let v = recursion(real().hit("stack.recursion", |v| {
            v["kind"] = json!("not-guard");
            v["fault_addr"] = json!("0x0");
            v["cr2"] = json!("0x0");
            v["rsp"] = v["stack_hi"].clone();
        }));
        assert_eq!(v.observed, Verdict::GuardJumped, "{:#?}", v.failures);
    }

    #[test]
    fn a_fault_outside_the_announced_guard_is_a_jumped_guard() {
        // The guest calls a far fault an overflow, with a guard made up to fit.
        let v = recursion(real().hit("stack.recursion", |v| {
            v["fault_addr"] = json!("0xffffc9000001cf48");
            v["cr2"] = json!("0xffffc9000001cf48");
            v["rsp"] = json!("0xffffc9000001cf50");
            v["guard_lo"] = json!("0xffffc9000001c000");
        }));
        assert_eq!(v.observed, Verdict::GuardJumped);
        assert_eq!(names(&v), ["kind"], "{:#?}", v.failures);
        assert!(!v.as_expected());
        assert_eq!(v.category_str(), "guard-jumped");
        assert!(
            v.describe().starts_with(
                "GUARD JUMPED (fault at 0xffffc9000001cf48, 4280 bytes below the guard)"
            ),
            "{}",
            v.describe()
        );
        // probe_skip: reported honestly as not-guard, which is what it expects.
        let v = judge_log("stack.probe_skip", &real(), 1);
        assert_eq!(
            (v.observed, v.failures.clone()),
            (Verdict::GuardJumped, vec![])
        );
        assert!(v.as_expected());
        assert!(
            v.describe().starts_with("guard jumped, as expected"),
            "{}",
            v.describe()
        );
    }

    #[test]
    fn no_guard_pages_is_never_caught() {
        // --guard-pages 0: the announced stack has no guard, the fault lands
        // far below it, the guest says not-guard.
        let no_guard = Log::of(&fixture::STACK.replacen(
            "\"guard_below\":1,\"guard_above\":1",
            "\"guard_below\":0,\"guard_above\":0",
            1,
        ));
        let v = recursion(no_guard.clone().hit("stack.recursion", |v| {
            v["fault_addr"] = json!("0xffffc8ffffffffd8");
            v["cr2"] = json!("0xffffc8ffffffffd8");
            v["kind"] = json!("not-guard");
            v["guard_lo"] = json!("0x0");
            v["guard_hi"] = json!("0x0");
            v["bytes"] = json!(0);
        }));
        assert_eq!(v.observed, Verdict::GuardJumped);
        assert!(!v.as_expected());
        // Even if the guest claims overflow in a guard it made up.
        let v = recursion(no_guard.clone());
        assert_eq!(v.observed, Verdict::GuardJumped);
        assert_eq!(names(&v), ["kind"], "{:#?}", v.failures);
        // And with no report at all (a reset or a hang), nothing was caught.
        let v = recursion(
            no_guard.without(|l| !l.starts_with("STACK-ALLOC ") && !l.starts_with("CPU-MAP ")),
        );
        assert_eq!(v.observed, Verdict::NotCaught);
        assert_eq!(v.describe(), "NOT CAUGHT (expected overflow); wrong: hits");
        assert_eq!(
            v.failures[0].detail,
            "no GUARD-HIT report, expected 1 (overflow)"
        );
        assert_eq!(v.category_str(), "not-caught");
    }

    #[test]
    fn expected_non_catches() {
        let v = judge_log("stack.direct_legacy", &real(), 1);
        assert!(v.as_expected(), "{:?}", v.failures);
        assert_eq!(
            v.describe(),
            "not caught, as expected; found afterwards: thread_info flags 0xa5a5a5a5a5a5a5a5 instead of 0x0"
        );
        let v = judge_log("stack.df_overflow", &Log::of(""), 1);
        assert!(v.as_expected());
    }

    #[test]
    fn hit_counts_and_unreadable_lines() {
        // Two reports where one is expected (the same oops twice).
        let log = real();
        let hit = log
            .0
            .iter()
            .position(|l| l.starts_with("GUARD-HIT "))
            .unwrap();
        let bug = log.0.iter().position(|l| l.starts_with("BUG: ")).unwrap();
        let after = hit
            + 1
            + log.0[hit + 1..]
                .iter()
                .take_while(|l| l.starts_with("STACK-DUMP "))
                .count();
        let mut twice = log.clone();
        let again: Vec<String> = log.0[bug..=hit].to_vec();
        twice.0.splice(after..after, again);
        assert_eq!(names(&recursion(twice)), ["hits"]);
        // One per CPU: four announcements, four hits on four CPUs (real, smp 4).
        let all = Log::of(fixture::ALL_CPUS);
        let v = judge_log("stack.all_cpus", &all, 4);
        assert_eq!(v.failures, []);
        assert_eq!(
            v.describe(),
            "caught with good diagnostics (overflow, TASK stack, depth 52, 4 hits)"
        );
        let v = judge_log("stack.all_cpus", &all, 8);
        assert_eq!(names(&v), ["lapic", "hits"], "{:#?}", v.failures);
        // A report cut short is unreadable, and says so.
        let mut cut = real();
        let line = cut.0[hit].clone();
        cut.0.push(line[..200].to_string());
        assert_eq!(names(&recursion(cut)), ["readable"]);
    }

    #[test]
    fn suppressed_hits_are_counted() {
        let log = Log::of(
            &fixture::STACK
                .replace(
                    "\"scenario\":\"stack.recursion\"",
                    "\"scenario\":\"stack.repeat\"",
                )
                .replace(
                    "ok 1 stack.recursion",
                    "# guard hits suppressed: 999\nok 1 stack.repeat",
                ),
        );
        let v = judge_log("stack.repeat", &log, 1);
        assert!(v.as_expected(), "{:?}", v.failures);
        assert!(
            v.describe().ends_with("depth 52, 1000 hits)"),
            "{}",
            v.describe()
        );
    }

    #[test]
    fn a_stack_the_guest_could_not_name_is_unknown_as_linux_says() {
        assert_eq!(StackKind::linux_name_of(None), "UNKNOWN");
        assert_eq!(StackKind::linux_name_of(Some(StackKind::Task)), "TASK");
        assert_eq!(StackKind::linux_name_of(Some(StackKind::Irq)), "IRQ");
    }

    /// A scenario that stops the machine must say its task did not recover;
    /// one whose boot goes on, that it did.
    #[test]
    fn recovered_must_fit_whether_the_boot_goes_on() {
        let recursion = abi::scenario::find("stack.recursion").unwrap();
        let fatal: &'static Scenario = Box::leak(Box::new(Scenario {
            expect: Outcome::CaughtFatal,
            ..*recursion
        }));
        let judged = |s: &Scenario, log: &Log| {
            let text = log.text();
            let events = crate::report::lines::parse(&text);
            let elf = elf();
            judge(s, &s.guard.unwrap(), 1, &events, &[], Some(&elf))
        };
        let kept = real();
        let killed = real().hit("stack.recursion", set("recovered", json!(false)));
        assert_eq!(names(&judged(recursion, &kept)), [] as [&str; 0]);
        assert_eq!(names(&judged(recursion, &killed)), ["recovered"]);
        assert_eq!(names(&judged(fatal, &kept)), ["recovered"]);
        assert_eq!(names(&judged(fatal, &killed)), [] as [&str; 0]);
    }

    /// With several hits, each failure says which hit and CPU it is about;
    /// with one, there is nothing to tell apart.
    #[test]
    fn one_hit_per_cpu_and_each_failure_names_its_hit() {
        let all = Log::of(fixture::ALL_CPUS);
        let v = judge_log(
            "stack.all_cpus",
            &all.clone().hit("stack.all_cpus", set("bytes", json!(3912))),
            4,
        );
        assert!(!v.failures.is_empty());
        for f in &v.failures {
            assert!(f.detail.starts_with("hit 1 (cpu 0): "), "{}", f.detail);
        }
        let d = recursion(real().hit("stack.recursion", set("bytes", json!(3912))));
        assert!(!d.failures.is_empty());
        for f in &d.failures {
            assert!(!f.detail.starts_with("hit "), "{}", f.detail);
        }
        // Four hits, but two on CPU 1 and none on CPU 0.
        let v = judge_log(
            "stack.all_cpus",
            &all.hit("stack.all_cpus", set("cpu", json!(1))),
            4,
        );
        assert!(
            v.failures.iter().any(|f| f.check == Check::Hits
                && f.detail == "hits on CPUs [1, 2, 3], expected one on each of 4"),
            "{:#?}",
            v.failures
        );
    }

    /// A hit that names no stack (bounds 0..0) has nothing to dump, so a
    /// missing STACK-DUMP is no unwind failure of its own.
    #[test]
    fn no_dump_is_owed_for_a_hit_with_no_stack() {
        let no_dump = real().without(|l| l.starts_with("STACK-DUMP "));
        assert!(names(&recursion(no_dump.clone())).contains(&"unwind"));
        let v = recursion(no_dump.hit("stack.recursion", |v| {
            v["stack_lo"] = json!("0x0");
            v["stack_hi"] = json!("0x0");
        }));
        assert!(!names(&v).contains(&"unwind"), "{:#?}", v.failures);
        assert!(names(&v).contains(&"bounds"), "{:#?}", v.failures);
    }

    /// A fault in no announced guard is measured from the faulting task's
    /// own stack, not from another task's announced before it.
    #[test]
    fn a_jumped_guard_is_measured_from_the_tasks_own_stack() {
        let alloc = crate::report::lines::tests::alloc();
        let decoy = alloc
            .replace("\"task_id\":3", "\"task_id\":99")
            .replace("0xffffc9000001f000", "0xffffc9000011f000")
            .replace("0xffffc90000023000", "0xffffc90000123000");
        let mut log = real();
        let at = log.0.iter().position(|l| l == alloc).unwrap();
        log.0.insert(at, decoy);
        let v = recursion(log.hit("stack.recursion", |v| {
            v["fault_addr"] = json!("0xffffc9000001cf48");
            v["cr2"] = json!("0xffffc9000001cf48");
            v["rsp"] = json!("0xffffc9000001cf50");
            v["guard_lo"] = json!("0xffffc9000001c000");
        }));
        assert_eq!(v.observed, Verdict::GuardJumped);
        assert_eq!(names(&v), ["kind"], "{:#?}", v.failures);
        assert!(
            v.describe().starts_with(
                "GUARD JUMPED (fault at 0xffffc9000001cf48, 4280 bytes below the guard)"
            ),
            "{}",
            v.describe()
        );
    }

    /// The guard above ends where its last page does: one byte past it is
    /// a jumped guard, the byte before an underflow.
    #[test]
    fn the_guard_above_is_exactly_its_pages() {
        let at = |addr: &str| {
            let (addr, bytes) = (addr.to_string(), json!(57));
            judge_log(
                "stack.underflow",
                &real().hit("stack.underflow", move |v| {
                    v["fault_addr"] = json!(addr);
                    v["cr2"] = json!(addr);
                    v["bytes"] = bytes;
                }),
                1,
            )
        };
        assert_eq!(at("0xffffc90000023fff").observed, Verdict::Underflow);
        let past = at("0xffffc90000024000");
        assert_eq!(past.observed, Verdict::GuardJumped);
        assert_eq!(
            past.jumped.as_deref(),
            Some("fault at 0xffffc90000024000, 1 bytes above the guard")
        );
    }

    /// With no guard below, a fault on the stack's lowest byte is inside
    /// the stack, not "0 bytes below the guard".
    #[test]
    fn a_fault_on_a_guardless_stacks_lowest_byte_is_inside_it() {
        let no_guard = Log::of(&fixture::STACK.replacen(
            "\"guard_below\":1,\"guard_above\":1",
            "\"guard_below\":0,\"guard_above\":0",
            1,
        ));
        let v = recursion(no_guard.hit("stack.recursion", |v| {
            v["fault_addr"] = json!("0xffffc9000001f000");
            v["cr2"] = json!("0xffffc9000001f000");
            v["kind"] = json!("not-guard");
            v["guard_lo"] = json!("0x0");
            v["guard_hi"] = json!("0x0");
            v["bytes"] = json!(0);
        }));
        assert_eq!(v.observed, Verdict::GuardJumped);
        assert_eq!(
            v.jumped.as_deref(),
            Some("fault at 0xffffc9000001f000, inside the stack itself")
        );
    }

    /// Unannounced, a hit's own claim stands only if its fault is in the
    /// guard it reports.
    #[test]
    fn unannounced_the_claim_must_at_least_fit_itself() {
        let unannounced = real().without(|l| l.starts_with("STACK-ALLOC "));
        let v = recursion(unannounced.clone());
        assert_eq!(v.observed, Verdict::Overflow);
        assert!(names(&v).contains(&"announced"), "{:#?}", v.failures);
        assert!(!names(&v).contains(&"kind"), "{:#?}", v.failures);
        let v = recursion(unannounced.hit("stack.recursion", |v| {
            v["guard_lo"] = json!("0xffffc9000001c000");
            v["guard_hi"] = json!("0xffffc9000001d000");
        }));
        assert_eq!(v.observed, Verdict::GuardJumped);
        assert!(names(&v).contains(&"kind"), "{:#?}", v.failures);
    }

    /// Without the ELF there is no unwind to count frames against, so
    /// depth x frame size must at least be about the stack's size.
    #[test]
    fn without_the_elf_the_depth_must_still_be_plausible() {
        let s = abi::scenario::find("stack.recursion").unwrap();
        let depth = |d: u64| {
            let text = real().hit("stack.recursion", set("depth", json!(d))).text();
            let events = crate::report::lines::parse(&text);
            let v = judge(s, &s.guard.unwrap(), 1, &events, &[], None);
            names(&v).contains(&"depth")
        };
        // 52 x 304 bytes of a 16 KiB stack is the captured 96%.
        assert!(!depth(52));
        assert!(!depth(28), "just over half");
        assert!(depth(26), "under half the stack");
        assert!(!depth(59), "just under 110%");
        assert!(depth(60), "over 110%");
        // Exactly half (32 frames of 256 bytes) is still plausible.
        let half =
            Log::of(&fixture::STACK.replacen("\"frame_bytes\":304", "\"frame_bytes\":256", 1))
                .hit("stack.recursion", set("depth", json!(32)))
                .text();
        let events = crate::report::lines::parse(&half);
        let v = judge(s, &s.guard.unwrap(), 1, &events, &[], None);
        assert!(!names(&v).contains(&"depth"), "{:#?}", v.failures);
    }

    /// A line that ends the previous report is never the start of the
    /// next oops, even when it begins like one (a `BUG:` line another
    /// report's record was glued onto).
    #[test]
    fn the_oops_starts_after_the_previous_report() {
        let mut log = real();
        let hit = log
            .0
            .iter()
            .position(|l| l.starts_with("GUARD-HIT {\"scenario\":\"stack.probe_skip\""))
            .unwrap();
        let bug = (0..hit)
            .rev()
            .find(|&i| log.0[i].starts_with("BUG:"))
            .unwrap();
        log.0
            .insert(bug, "BUG: cut short GUARD-HIT {\"scen".to_string());
        let v = judge_log("stack.probe_skip", &log, 1);
        assert_eq!(v.failures, [], "{:#?}", v.failures);
    }

    /// The guest's trace against the unwind at its ends: lines missing are
    /// counted, a `... (more frames)` needs more frames, and a depth needs
    /// at least two frames of a recursing function.
    #[test]
    fn the_trace_is_held_to_the_unwind_at_its_ends() {
        let v = recursion(real().hit("stack.recursion", |v| {
            let f = v["backtrace"].as_array_mut().unwrap();
            f.pop();
            f.pop();
        }));
        assert_eq!(names(&v), ["unwind"], "{:#?}", v.failures);
        assert!(
            v.failures[0].detail.ends_with(" and 1 more line(s)"),
            "{:#?}",
            v.failures
        );

        let v = recursion(real().hit("stack.recursion", set("truncated", json!(true))));
        assert_eq!(names(&v), ["unwind"], "{:#?}", v.failures);
        assert!(
            v.failures[0]
                .detail
                .contains("says `... (more frames)`, but the unwind has only"),
            "{:#?}",
            v.failures
        );
        // Cut at the guest's limit, short of the unwind: as it should be.
        let v = recursion(real().hit("stack.recursion", |v| {
            v["backtrace"].as_array_mut().unwrap().pop();
            v["truncated"] = json!(true);
        }));
        assert_eq!(v.failures, [], "{:#?}", v.failures);

        // One frame of the innermost function is no recursion, whatever depth says.
        let v = judge_log(
            "stack.exception",
            &real().hit("stack.exception", set("depth", json!(0))),
            1,
        );
        assert_eq!(names(&v), ["depth"], "{:#?}", v.failures);

        // The unwind holds 54 frames of the recursion, and the one that
        // recorded the captured 52 is the second: 53 frames from it
        // outward. Off by one either way, that frame says otherwise; 53 is
        // right only from the innermost frame (had it recorded itself).
        for depth in [51, 53] {
            let v = recursion(real().hit("stack.recursion", set("depth", json!(depth))));
            assert_eq!(names(&v), ["depth"], "{depth}: {:#?}", v.failures);
            assert!(
                v.failures[0]
                    .detail
                    .contains("(sp 0xffffc9000001f080, frame #1) has 53 frame(s)"),
                "{:#?}",
                v.failures
            );
        }
        let v = recursion(real().hit("stack.recursion", |v| {
            v["depth"] = json!(53);
            v["depth_sp"] = v["rsp"].clone();
        }));
        assert_eq!(v.failures, [], "{:#?}", v.failures);
        // The frame above the recorder (304 bytes up), below the fault's rsp, no
        // stack pointer at all: each is named.
        for (sp, says) in [
            (json!("0xffffc9000001f1b0"), "frame #2) has 52 frame(s)"),
            (json!("0xffffc9000001ef00"), "in none of the unwound frames"),
            (Value::Null, "without the stack pointer"),
        ] {
            let v = recursion(real().hit("stack.recursion", set("depth_sp", sp.clone())));
            assert_eq!(names(&v), ["depth"], "{sp}: {:#?}", v.failures);
            assert!(
                v.failures[0].detail.contains(says),
                "{sp}: {:#?}",
                v.failures
            );
        }

        // A recursion two frames deep: the second return into the
        // recursing function pointed at its caller instead. From the frame
        // that recorded it, the second, that is depth 0, and nothing else.
        let hit = captured();
        let (recurse, caller) = (hit.backtrace[0].addr.0, hit.backtrace[1].addr.0);
        let two_deep = real().dump("stack.recursion", |_, w| {
            let second = w
                .iter()
                .enumerate()
                .filter(|(_, x)| **x == Some(recurse))
                .nth(1)
                .expect("two returns into the recursion")
                .0;
            w[second] = Some(caller);
        });
        for (depth, ok) in [(0, true), (1, false), (2, false)] {
            let v = recursion(
                two_deep
                    .clone()
                    .hit("stack.recursion", set("depth", json!(depth))),
            );
            let depth_failures: Vec<&str> = v
                .failures
                .iter()
                .filter(|f| f.check == Check::Depth && f.detail.starts_with("`Recursion depth"))
                .map(|f| f.detail.as_str())
                .collect();
            assert_eq!(
                depth_failures.is_empty(),
                ok,
                "depth {depth}: {depth_failures:#?}"
            );
        }
    }
}
