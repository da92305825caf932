//! Was a stack scenario's fault caught, and was it told well? Pure: the
//! guest's stack lines (`lines`) and a symbolizer in, a verdict out.
//!
//! Every claim in a `GUARD-HIT` is held against something the fault handler
//! did not write: the `STACK-ALLOC` the scenario announced before it
//! overflowed (bounds, guard size, CPU, task), the fault address (which
//! guard it really lies in), and the guest ELF (which functions the
//! backtrace addresses really are in). Each check that fails is named.

use super::lines::{Alloc, Events, Hit};
use super::{functions_near, return_addresses, Check, Failure, FaultVerdict};
use crate::symbols::Symbolize;
use abi::guard::{GuardExpect, Verdict};
use abi::kinds::StackKind;
use abi::{Outcome, Scenario};

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
        let failed: Vec<&str> = self.failures.iter().map(|f| f.check.name()).collect();
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

/// Linux's names for the stack kinds (`BUG: TASK stack guard page ...`);
/// a stack the guest could not name is `UNKNOWN`, as Linux says.
pub fn linux_kind(kind: Option<StackKind>) -> &'static str {
    kind.map_or("UNKNOWN", StackKind::linux_name)
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
    for (i, hit) in hits.iter().enumerate() {
        let alloc = pair(hit, &allocs);
        let (truth, mut found) = judge_hit(hit, alloc, expect, symbols, recovered);
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

/// The announcement a hit is about: the one whose guard the fault is in,
/// else the same task's, else the first.
fn pair<'r, 'a>(hit: &Hit, allocs: &[&'r Alloc<'a>]) -> Option<&'r Alloc<'a>> {
    allocs
        .iter()
        .find(|a| truth(hit.fault_addr.0, a) != Verdict::GuardJumped)
        .or_else(|| {
            allocs
                .iter()
                .find(|a| a.task_id == hit.task_id && a.cpu == hit.cpu)
        })
        .or_else(|| allocs.first())
        .copied()
}

fn guard_below(a: &Alloc) -> std::ops::Range<u64> {
    a.lo.0.saturating_sub(a.guard_below * PAGE)..a.lo.0
}

fn guard_above(a: &Alloc) -> std::ops::Range<u64> {
    a.hi.0..a.hi.0.saturating_add(a.guard_above * PAGE)
}

/// Where `addr` is, by the announced allocation alone.
fn truth(addr: u64, a: &Alloc) -> Verdict {
    if guard_below(a).contains(&addr) {
        Verdict::Overflow
    } else if guard_above(a).contains(&addr) {
        Verdict::Underflow
    } else {
        Verdict::GuardJumped
    }
}

fn jump_distance(addr: u64, a: &Alloc) -> Option<String> {
    let below = guard_below(a);
    let above = guard_above(a);
    if addr < below.start {
        Some(format!(
            "fault at {addr:#x}, {} bytes below the guard",
            below.start - addr
        ))
    } else if addr >= above.end {
        Some(format!(
            "fault at {addr:#x}, {} bytes above the guard",
            addr - above.end + 1
        ))
    } else if (a.lo.0..a.hi.0).contains(&addr) {
        Some(format!("fault at {addr:#x}, inside the stack itself"))
    } else {
        None
    }
}

fn judge_hit(
    hit: &Hit,
    alloc: Option<&Alloc>,
    expect: &GuardExpect,
    symbols: Option<&dyn Symbolize>,
    recovered: Option<bool>,
) -> (Verdict, Vec<Failure>) {
    let mut out = Vec::new();
    let mut fail = |check: Check, detail: String| out.push(Failure { check, detail });
    let reported_guard = hit.guard_lo.0..hit.guard_hi.0;
    let truth = match alloc {
        Some(a) => truth(hit.fault_addr.0, a),
        None => {
            fail(
                Check::Announced,
                "no STACK-ALLOC announced the stack: nothing to hold the report against".into(),
            );
            match Verdict::of_claim(hit.kind) {
                v @ (Verdict::Overflow | Verdict::Underflow)
                    if reported_guard.contains(&hit.fault_addr.0) =>
                {
                    v
                }
                _ => Verdict::GuardJumped,
            }
        }
    };
    if Verdict::of_claim(hit.kind) != truth {
        fail(
            Check::Kind,
            format!(
                "reported `{}`, but the fault at {:#x} is {}",
                hit.kind,
                hit.fault_addr.0,
                match truth {
                    Verdict::Overflow => "in the guard below the stack",
                    Verdict::Underflow => "in the guard above the stack",
                    _ => "in no guard of the announced stack",
                }
            ),
        );
    }
    if matches!(truth, Verdict::Overflow | Verdict::Underflow) {
        if !reported_guard.contains(&hit.fault_addr.0) {
            fail(
                Check::FaultInGuard,
                format!(
                    "fault {:#x} outside the reported guard {:#x}..{:#x}",
                    hit.fault_addr.0, hit.guard_lo.0, hit.guard_hi.0
                ),
            );
        }
        let (touches, pages) = if truth == Verdict::Overflow {
            (
                hit.guard_hi.0 == hit.stack_lo.0,
                alloc.map_or(0, |a| a.guard_below),
            )
        } else {
            (
                hit.guard_lo.0 == hit.stack_hi.0,
                alloc.map_or(0, |a| a.guard_above),
            )
        };
        let size = hit.guard_hi.0.wrapping_sub(hit.guard_lo.0);
        if !touches || (alloc.is_some() && size != pages * PAGE) {
            fail(
                Check::GuardAdjacent,
                format!(
                    "guard {:#x}..{:#x} is not the {pages} page(s) {} the stack {:#x}..{:#x}",
                    hit.guard_lo.0,
                    hit.guard_hi.0,
                    if truth == Verdict::Overflow {
                        "right below"
                    } else {
                        "right above"
                    },
                    hit.stack_lo.0,
                    hit.stack_hi.0
                ),
            );
        }
    }
    if let Some(a) = alloc {
        if (hit.stack_lo.0, hit.stack_hi.0) != (a.lo.0, a.hi.0) {
            fail(
                Check::Bounds,
                format!(
                    "reported stack {:#x}..{:#x}, announced {:#x}..{:#x}",
                    hit.stack_lo.0, hit.stack_hi.0, a.lo.0, a.hi.0
                ),
            );
        }
        if hit.cpu != a.cpu {
            fail(
                Check::Cpu,
                format!(
                    "reported CPU {}, the stack was running on CPU {}",
                    hit.cpu, a.cpu
                ),
            );
        }
        if hit.task_id != a.task_id {
            fail(
                Check::Task,
                format!(
                    "reported task {} '{}', announced task {} '{}'",
                    hit.task_id, hit.task_name, a.task_id, a.task_name
                ),
            );
        }
    }
    if hit.stack_kind != Some(expect.stack_kind) {
        fail(
            Check::StackKind,
            format!(
                "reported a {} stack, expected {}",
                linux_kind(hit.stack_kind),
                expect.stack_kind.linux_name()
            ),
        );
    }
    if let Some(want) = expect.backtrace_fn {
        match symbols {
            None => fail(
                Check::Backtrace,
                "no guest ELF to symbolize the backtrace with".into(),
            ),
            Some(symbols) => {
                let names = functions_near(symbols, hit.rip.0, &return_addresses(&hit.backtrace));
                if !names.iter().any(|n| n.contains(want)) {
                    let shown = if names.is_empty() {
                        "no known function".to_string()
                    } else {
                        names.join(", ")
                    };
                    fail(
                        Check::Backtrace,
                        format!("no `{want}` in the backtrace: {shown}"),
                    );
                }
            }
        }
    }
    if expect.recursion && truth == Verdict::Overflow {
        let a = alloc.map(|a| (a.frame_bytes, a.hi.0 - a.lo.0));
        match (hit.depth, a) {
            (None, _) => fail(Check::Depth, "no recursion depth reported".into()),
            (_, Some((0, _))) => fail(Check::Depth, "no frame size announced".into()),
            (Some(d), Some((frame, size))) => {
                let used = d.saturating_mul(frame);
                // The stack holds more than the recursion (the task's entry
                // frames), and the last frame is cut short by the guard.
                if used * 100 < size * 50 || used * 100 > size * 110 {
                    fail(
                        Check::Depth,
                        format!(
                            "depth {d} × {frame} bytes = {used} bytes, implausible for a {size}-byte stack"
                        ),
                    );
                }
            }
            (Some(_), None) => {}
        }
    }
    if let Some(want) = recovered {
        if hit.recovered != want && truth != Verdict::NotCaught {
            fail(
                Check::Recovered,
                format!(
                    "recovered: {}, but the scenario {}",
                    hit.recovered,
                    if want {
                        "expects the task killed and the boot to go on"
                    } else {
                        "cannot recover"
                    }
                ),
            );
        }
    }
    (truth, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::lines::{parse, tests as lines};
    use crate::symbols::tests::Fake;
    use std::collections::HashMap;

    fn scenario(name: &str) -> &'static Scenario {
        abi::scenario::find(name).unwrap()
    }

    fn symbols() -> Fake {
        let mut m = HashMap::new();
        m.insert(
            0xffffffff8002435a,
            vec!["guest::scenarios::stack::stack_recurse"],
        );
        m.insert(
            0xffffffff800243af,
            vec!["guest::scenarios::stack::stack_recurse"],
        );
        m.insert(
            0xffffffff8002445f,
            vec!["guest::scenarios::stack::recurse_to_death"],
        );
        Fake(m)
    }

    fn judge_log(name: &str, log: &str, smp: u32) -> StackVerdict {
        let s = scenario(name);
        let fake = symbols();
        judge(s, &s.guard.unwrap(), smp, &parse(log), &[], Some(&fake))
    }

    fn recursion(hit: &str) -> StackVerdict {
        judge_log(
            "stack.recursion",
            &format!(
                "KTAP version 1\n{}\n{hit}\nok 1 stack.recursion\n",
                lines::ALLOC
            ),
            1,
        )
    }

    fn failed(v: &StackVerdict) -> Vec<&'static str> {
        v.failures.iter().map(|f| f.check.name()).collect()
    }

    #[test]
    fn a_good_report_passes_every_check() {
        let v = recursion(lines::HIT);
        assert_eq!(v.failures, []);
        assert_eq!(v.observed, Verdict::Overflow);
        assert!(v.as_expected());
        assert_eq!(
            v.describe(),
            "caught with good diagnostics (overflow, TASK stack, depth 53)"
        );
    }

    /// Each tampered field must be caught by its own check, and only by it.
    #[test]
    fn each_tampered_field_names_its_check() {
        let cases: &[(&str, &str, &[&str])] = &[
            // bounds: the stack is claimed one page higher
            (
                "\"stack_lo\":\"0xffffc9000001f000\",\"stack_hi\":\"0xffffc90000023000\"",
                "\"stack_lo\":\"0xffffc90000020000\",\"stack_hi\":\"0xffffc90000024000\"",
                &["guard-adjacent", "bounds"],
            ),
            // the guard is reported somewhere the fault is not
            (
                "\"guard_lo\":\"0xffffc9000001e000\",\"guard_hi\":\"0xffffc9000001f000\"",
                "\"guard_lo\":\"0xffffc9000001d000\",\"guard_hi\":\"0xffffc9000001e000\"",
                &["fault-in-guard", "guard-adjacent"],
            ),
            ("\"cpu\":0", "\"cpu\":2", &["cpu"]),
            ("\"task_id\":3", "\"task_id\":4", &["task"]),
            (
                "\"stack_kind\":\"task\"",
                "\"stack_kind\":\"irq\"",
                &["stack-kind"],
            ),
            ("\"depth\":53", "\"depth\":12", &["depth"]),
            ("\"depth\":53", "\"depth\":200", &["depth"]),
            ("\"depth\":53", "\"depth\":null", &["depth"]),
            ("\"kind\":\"overflow\"", "\"kind\":\"underflow\"", &["kind"]),
            ("\"recovered\":true", "\"recovered\":false", &["recovered"]),
            // a backtrace through functions that are not the recursion
            (
                "\"rip\":\"0xffffffff8002435a\"",
                "\"rip\":\"0xffffffff80000000\"",
                &[],
            ),
        ];
        for (from, to, want) in cases {
            assert!(lines::HIT.contains(from), "{from}");
            let v = recursion(&lines::HIT.replace(from, to));
            assert_eq!(failed(&v), *want, "{to}: {:?}", v.failures);
            assert_eq!(v.observed, Verdict::Overflow);
            assert_eq!(v.as_expected(), want.is_empty(), "{to}");
            if !want.is_empty() {
                assert!(
                    v.describe().starts_with("caught, diagnostics wrong"),
                    "{}",
                    v.describe()
                );
                assert!(v.describe().contains(want[0]), "{}", v.describe());
            }
        }
    }

    #[test]
    fn the_backtrace_is_checked_against_the_elf_not_the_guest() {
        let hit = lines::HIT
            .replace(
                "\"rip\":\"0xffffffff8002435a\"",
                "\"rip\":\"0xffffffff80000000\"",
            )
            .replace("0xffffffff800243b0", "0xffffffff80024460");
        let v = recursion(&hit);
        assert_eq!(failed(&v), ["backtrace"]);
        assert!(
            v.failures[0].detail.contains("recurse_to_death"),
            "{:?}",
            v.failures
        );
        // Without an ELF the check cannot pass.
        let s = scenario("stack.recursion");
        let log = format!("{}\n{}\n", lines::ALLOC, lines::HIT);
        let v = judge(s, &s.guard.unwrap(), 1, &parse(&log), &[], None);
        assert_eq!(failed(&v), ["backtrace"]);
    }

    #[test]
    fn a_fault_outside_the_announced_guard_is_a_jumped_guard() {
        // The guest calls a far fault an overflow, with a guard made up to fit.
        let hit = lines::HIT
            .replace("0xffffc9000001ef48", "0xffffc9000001cf48")
            .replace(
                "\"guard_lo\":\"0xffffc9000001e000\",\"guard_hi\":\"0xffffc9000001f000\"",
                "\"guard_lo\":\"0xffffc9000001c000\",\"guard_hi\":\"0xffffc9000001f000\"",
            );
        let v = recursion(&hit);
        assert_eq!(v.observed, Verdict::GuardJumped);
        assert!(failed(&v).contains(&"kind"));
        assert!(!v.as_expected());
        assert!(
            v.describe().starts_with(
                "GUARD JUMPED (fault at 0xffffc9000001cf48, 4280 bytes below the guard)"
            ),
            "{}",
            v.describe()
        );

        // probe_skip: reported honestly as not-guard, which is what it expects.
        let alloc = lines::ALLOC.replace("stack.recursion", "stack.probe_skip");
        let hit = lines::HIT
            .replace("stack.recursion", "stack.probe_skip")
            .replace("0xffffc9000001ef48", "0xffffc9000001dbf8")
            .replace("\"kind\":\"overflow\"", "\"kind\":\"not-guard\"")
            .replace(
                "\"guard_lo\":\"0xffffc9000001e000\",\"guard_hi\":\"0xffffc9000001f000\"",
                "\"guard_lo\":\"0x0\",\"guard_hi\":\"0x0\"",
            );
        let v = judge_log("stack.probe_skip", &format!("{alloc}\n{hit}\n"), 1);
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
        let alloc = lines::ALLOC.replace(
            "\"guard_below\":1,\"guard_above\":1",
            "\"guard_below\":0,\"guard_above\":0",
        );
        let hit = lines::HIT
            .replace("0xffffc9000001ef48", "0xffffc8ffffffffd8")
            .replace("\"kind\":\"overflow\"", "\"kind\":\"not-guard\"");
        let v = judge_log("stack.recursion", &format!("{alloc}\n{hit}\n"), 1);
        assert_eq!(v.observed, Verdict::GuardJumped);
        assert!(!v.as_expected());
        // Even if the guest claims overflow in a guard it made up.
        let hit = lines::HIT.replace("0xffffc9000001ef48", "0xffffc9000001eff0");
        let v = judge_log("stack.recursion", &format!("{alloc}\n{hit}\n"), 1);
        assert_eq!(v.observed, Verdict::GuardJumped);
        assert_eq!(failed(&v), ["kind"]);
        // And with no report at all (a reset or a hang), nothing was caught.
        let v = judge_log("stack.recursion", &format!("{alloc}\n"), 1);
        assert_eq!(v.observed, Verdict::NotCaught);
        assert_eq!(v.describe(), "NOT CAUGHT (expected overflow)");
    }

    #[test]
    fn expected_non_catches() {
        let alloc = r#"STACK-ALLOC {"scenario":"stack.direct_legacy","stack_kind":"task","lo":"0xffff8000004b0000","hi":"0xffff8000004b4000","guard_below":0,"guard_above":0,"cpu":0,"task_id":8,"task_name":"legacy","frame_bytes":0}"#;
        let v = judge_log(
            "stack.direct_legacy",
            &format!("{alloc}\n{}\n", lines::CORRUPTION),
            1,
        );
        assert!(v.as_expected());
        assert_eq!(
            v.describe(),
            "not caught, as expected; found afterwards: thread_info flags 0xa5a5a5a5a5a5a5a5 instead of 0x0"
        );
        let v = judge_log("stack.df_overflow", "", 1);
        assert!(v.as_expected());
    }

    #[test]
    fn hit_counts_and_unreadable_lines() {
        // Two reports where one is expected.
        let v = recursion(&format!("{}\n{}", lines::HIT, lines::HIT));
        assert_eq!(failed(&v), ["hits"]);
        // One per CPU: four allocations, four hits on four CPUs.
        let mut log = String::new();
        for cpu in 0..4u64 {
            let base = 0xffffc90000100000u64 + cpu * 0x10000;
            let alloc = lines::ALLOC
                .replace("stack.recursion", "stack.all_cpus")
                .replace("0xffffc9000001f000", &format!("{:#x}", base))
                .replace("0xffffc90000023000", &format!("{:#x}", base + 0x4000))
                .replace("\"cpu\":0", &format!("\"cpu\":{cpu}"))
                .replace("\"task_id\":3", &format!("\"task_id\":{}", 10 + cpu));
            let hit = lines::HIT
                .replace("stack.recursion", "stack.all_cpus")
                .replace("0xffffc9000001f000", &format!("{:#x}", base))
                .replace("0xffffc90000023000", &format!("{:#x}", base + 0x4000))
                .replace("0xffffc9000001e000", &format!("{:#x}", base - 0x1000))
                .replace("0xffffc9000001ef48", &format!("{:#x}", base - 0xb8))
                .replace("\"cpu\":0", &format!("\"cpu\":{cpu}"))
                .replace("\"task_id\":3", &format!("\"task_id\":{}", 10 + cpu));
            log = format!("{alloc}\n{log}{hit}\n");
        }
        let v = judge_log("stack.all_cpus", &log, 4);
        assert_eq!(v.failures, [], "{log}");
        assert_eq!(
            v.describe(),
            "caught with good diagnostics (overflow, TASK stack, depth 53, 4 hits)"
        );
        let v = judge_log("stack.all_cpus", &log, 8);
        assert_eq!(failed(&v), ["hits"]);

        let cut = &lines::HIT[..200];
        let v = recursion(&format!("{}\n{cut}", lines::HIT));
        assert_eq!(failed(&v), ["readable"]);
    }

    #[test]
    fn suppressed_hits_are_counted() {
        let s = scenario("stack.repeat");
        let log = format!(
            "{}\n{}\n",
            lines::ALLOC.replace("stack.recursion", "stack.repeat"),
            lines::HIT.replace("stack.recursion", "stack.repeat")
        );
        let fake = symbols();
        let diags = vec!["guard hits suppressed: 999".to_string()];
        let v = judge(s, &s.guard.unwrap(), 1, &parse(&log), &diags, Some(&fake));
        assert!(v.as_expected(), "{:?}", v.failures);
        assert!(
            v.describe().ends_with("depth 53, 1000 hits)"),
            "{}",
            v.describe()
        );
    }
}
