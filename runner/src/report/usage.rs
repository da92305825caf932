//! How deep each task's stack went, and which tasks came close to its end:
//! the guest's `STACK-USAGE` and `NEAR-MISS` records (`abi::usage`) read
//! out of a boot's log (`parse`), gathered per scenario for the outputs
//! (`of_scenario`: every task's figure, each near miss with its deepest
//! chain named from the ELF), a boot's figures binned (`histogram`), and,
//! for the usage scenarios, held against what they must show (`judge`,
//! `abi::usage::EXPECT`). Pure: records and a symbolizer in.
//!
//! The ground truth is the scenario's own announcement of its task's
//! stack (`STACK-ALLOC`), made before it went deep, and the ELF: the
//! function the deepest chain's innermost return address lies in is the
//! runner's own answer, never the name the guest printed beside it.

use super::lines::{read, read_lines, Events, Seen};
use super::{Check, Failure, FaultVerdict};
use crate::symbols::Symbolize;
use abi::usage::{is_near_miss, NearMiss, NearMissExpect, StackUsage, UsageExpect};

/// The usage records of one boot.
#[derive(Clone, Debug, Default)]
pub struct Records<'a> {
    pub usages: Vec<Seen<StackUsage<'a>>>,
    pub near_misses: Vec<Seen<NearMiss<'a>>>,
    /// Lines with one of these prefixes that do not parse.
    pub unreadable: Vec<(usize, &'a str)>,
}

pub fn parse(serial: &str) -> Records<'_> {
    let mut r = Records::default();
    r.unreadable = read_lines(serial, |line, i| {
        read(line, i, &mut r.usages).or_else(|| read(line, i, &mut r.near_misses))
    });
    r
}

/// One frame of a near miss's deepest chain (a run of records with one
/// return address folded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainEntry {
    /// Where the (innermost) record lies in the stack.
    pub at: u64,
    /// Its return address, and how many records in a row return there.
    pub addr: u64,
    pub repeat: u32,
    /// The function of the call it returns to, from the ELF (the
    /// innermost of its inline chain); `None` without symbols.
    pub function: Option<String>,
    /// The name the guest gave it.
    pub guest_name: Option<String>,
}

/// A near miss, as the outputs tell it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NearMissReport {
    pub task_id: u64,
    pub task_name: String,
    pub cpu: u32,
    pub lo: u64,
    pub hi: u64,
    pub used: u64,
    pub threshold_percent: u64,
    /// Innermost first.
    pub chain: Vec<ChainEntry>,
    pub truncated: bool,
}

impl NearMissReport {
    fn of(r: &NearMiss, symbols: Option<&dyn Symbolize>) -> NearMissReport {
        NearMissReport {
            task_id: r.task_id,
            task_name: r.task_name.to_string(),
            cpu: r.cpu,
            lo: r.lo.get(),
            hi: r.hi.get(),
            used: r.used,
            threshold_percent: r.threshold_percent,
            chain: r
                .chain
                .iter()
                .map(|c| ChainEntry {
                    at: c.at.get(),
                    addr: c.frame.addr.get(),
                    repeat: c.frame.repeat,
                    function: symbols
                        .and_then(|s| called_from(s, c.frame.addr.get()).first().cloned()),
                    guest_name: c.frame.sym.map(|s| s.name.to_string()),
                })
                .collect(),
            truncated: r.truncated,
        }
    }

    pub fn size(&self) -> u64 {
        self.hi.saturating_sub(self.lo)
    }

    /// Where the deepest excursion was: the innermost frame's function (by
    /// the ELF, else by the guest's name).
    pub fn deepest(&self) -> Option<&str> {
        let first = self.chain.first()?;
        first.function.as_deref().or(first.guest_name.as_deref())
    }

    /// The summary's warning (without its `warning: ` mark).
    pub fn warning(&self) -> String {
        format!(
            "near miss: task {} '{}' used {} of {} ({} %){}",
            self.task_id,
            self.task_name,
            kib(self.used),
            kib(self.size()),
            percent(self.used, self.size()),
            match self.deepest() {
                Some(f) => format!(", deepest in {f}"),
                None => ", no call chain left to tell where".to_string(),
            }
        )
    }
}

/// Every function a return address's call lies in, innermost first (the
/// call is the byte before the address).
fn called_from(symbols: &dyn Symbolize, ret: u64) -> Vec<String> {
    symbols.functions(ret.saturating_sub(1))
}

/// `15.2 KiB`, `16 KiB`, `512 B`.
pub fn kib(bytes: u64) -> String {
    match bytes {
        b if b < 1024 => format!("{b} B"),
        b if b % 1024 == 0 => format!("{} KiB", b / 1024),
        b => format!("{:.1} KiB", b as f64 / 1024.0),
    }
}

/// `used` as a whole percentage of `size`, rounded down (95 % means at
/// least 95).
pub fn percent(used: u64, size: u64) -> u64 {
    (used as u128 * 100 / (size as u128).max(1)) as u64
}

/// What one scenario's usage records said.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScenarioUsage {
    /// The task stacks' size the guest gave.
    pub stack_size: u64,
    /// `(task id, bytes used)` of every task that exited, ids ascending.
    pub tasks: Vec<(u64, u64)>,
    /// How many the guest said it recorded, and how many it could not.
    pub counted: u64,
    pub dropped: u64,
    /// Every record arrived, each where the one before left off.
    pub records_whole: bool,
    pub near_misses: Vec<NearMissReport>,
}

impl ScenarioUsage {
    /// The records account for every exit of the scenario.
    pub fn complete(&self) -> bool {
        self.records_whole && self.dropped == 0 && self.tasks.len() as u64 == self.counted
    }

    /// Task `id`'s figure.
    pub fn used_by(&self, id: u64) -> Option<u64> {
        let i = self.tasks.binary_search_by_key(&id, |t| t.0).ok()?;
        Some(self.tasks[i].1)
    }
}

/// A scenario's usage records gathered, if it printed any.
pub fn of_scenario(
    scenario: &str,
    records: &Records,
    symbols: Option<&dyn Symbolize>,
) -> Option<ScenarioUsage> {
    let usages: Vec<&StackUsage> = records
        .usages
        .iter()
        .filter(|u| u.scenario == scenario)
        .map(|u| &u.record)
        .collect();
    let misses: Vec<&NearMiss> = records
        .near_misses
        .iter()
        .filter(|n| n.scenario == scenario)
        .map(|n| &n.record)
        .collect();
    if usages.is_empty() && misses.is_empty() {
        return None;
    }
    let mut u = ScenarioUsage {
        stack_size: usages.first().map_or(0, |r| r.stack_size),
        counted: usages.last().map_or(0, |r| r.total),
        dropped: usages.iter().map(|r| r.dropped).max().unwrap_or(0),
        records_whole: !usages.is_empty(),
        ..ScenarioUsage::default()
    };
    for r in &usages {
        u.records_whole &= r.from == u.tasks.len() as u64 && r.total == u.counted;
        u.tasks.extend(r.tasks());
    }
    u.tasks.sort_unstable();
    u.near_misses = misses
        .iter()
        .map(|r| NearMissReport::of(r, symbols))
        .collect();
    Some(u)
}

/// A boot's figures, binned by the share of the stack used.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BootUsage {
    pub stack_size: u64,
    pub tasks: u64,
    /// Tasks by tenths of the stack used: `[0, 10) %`, ..., `[90, 100] %`.
    pub buckets: [u64; 10],
    /// The task that went deepest: (scenario, task id, bytes used).
    pub deepest: Option<(&'static str, u64, u64)>,
    pub near_misses: usize,
}

/// The histogram of a boot's scenarios' figures.
pub fn histogram<'r>(
    scenarios: impl IntoIterator<Item = (&'static str, &'r ScenarioUsage)>,
) -> BootUsage {
    let mut b = BootUsage::default();
    for (name, u) in scenarios {
        b.stack_size = b.stack_size.max(u.stack_size);
        b.near_misses += u.near_misses.len();
        for &(id, used) in &u.tasks {
            b.tasks += 1;
            let bucket = (percent(used, u.stack_size) / 10).min(9);
            b.buckets[bucket as usize] += 1;
            if b.deepest.is_none_or(|(_, _, most)| used > most) {
                b.deepest = Some((name, id, used));
            }
        }
    }
    b
}

/// The verdict on a usage scenario: did its records show what it did?
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageVerdict {
    pub expect: NearMissExpect,
    pub failures: Vec<Failure>,
    /// The announced task, its figure and stack size.
    pub task: Option<u64>,
    pub used: Option<u64>,
    pub size: Option<u64>,
    /// `NEAR-MISS` records for the task.
    pub reported: usize,
    /// The runner's name for where the deepest chain begins.
    pub deepest: Option<String>,
}

impl FaultVerdict for UsageVerdict {
    fn as_expected(&self) -> bool {
        self.failures.is_empty()
    }

    fn describe(&self) -> String {
        let figure = match (self.used, self.size) {
            (Some(used), Some(size)) => {
                format!("{} of {} ({} %)", kib(used), kib(size), percent(used, size))
            }
            _ => "no figure".to_string(),
        };
        let task = self.task.map_or("?".to_string(), |t| t.to_string());
        let what = match (self.expect, self.reported) {
            (NearMissExpect::Reported { .. }, 1..) => format!(
                "near miss reported: task {task} used {figure}{}",
                self.deepest
                    .as_ref()
                    .map_or(String::new(), |f| format!(", deepest in {f}"))
            ),
            (NearMissExpect::Reported { .. }, 0) => {
                format!("no near miss reported: task {task} used {figure}")
            }
            (NearMissExpect::NotReported, 0) => {
                format!("no near miss: task {task} used {figure}")
            }
            (NearMissExpect::NotReported, n) => {
                format!("{n} near miss(es) reported: task {task} used {figure}")
            }
        };
        let failed: Vec<&str> = self.failures.iter().map(|f| f.check.name()).collect();
        if failed.is_empty() {
            what
        } else {
            format!(
                "stack usage told wrong ({what}); wrong: {}",
                failed.join(", ")
            )
        }
    }

    fn category_str(&self) -> &'static str {
        if self.failures.is_empty() {
            "usage-good"
        } else {
            "usage-wrong"
        }
    }

    fn failures(&self) -> &[Failure] {
        &self.failures
    }
}

/// Hold a usage scenario's records against its announcement and the ELF.
pub fn judge(
    expect: &UsageExpect,
    events: &Events,
    records: &Records,
    usage: Option<&ScenarioUsage>,
    symbols: Option<&dyn Symbolize>,
) -> UsageVerdict {
    let name = expect.scenario;
    let mut out = Vec::new();
    let mut fail = |check: Check, detail: String| out.push(Failure { check, detail });
    let needle = format!("\"scenario\":\"{name}\"");
    for (_, line) in records
        .unreadable
        .iter()
        .filter(|(_, l)| l.contains(&needle))
    {
        let shown: String = line.chars().take(120).collect();
        fail(
            Check::Readable,
            format!("a usage record does not parse: {shown}"),
        );
    }
    let mut v = UsageVerdict {
        expect: expect.near_miss,
        failures: Vec::new(),
        task: None,
        used: None,
        size: None,
        reported: 0,
        deepest: None,
    };
    let Some(alloc) = events.allocs_of(name).last() else {
        fail(
            Check::Announced,
            "no STACK-ALLOC announced the task's stack: nothing to hold the figures against".into(),
        );
        v.failures = out;
        return v;
    };
    let (id, lo, hi) = (alloc.task_id, alloc.lo.get(), alloc.hi.get());
    let size = hi.saturating_sub(lo);
    v.task = Some(id);
    v.size = Some(size);
    // The task's figure in STACK-USAGE: there, whole, in range.
    let used = usage.and_then(|u| u.used_by(id));
    v.used = used;
    match (usage, used) {
        (None, _) => fail(
            Check::StackUsage,
            "no STACK-USAGE record: the scenario's exits are not told".into(),
        ),
        (Some(u), None) => fail(
            Check::StackUsage,
            format!(
                "STACK-USAGE has no figure for task {id} '{}' ({} tasks told)",
                alloc.task_name,
                u.tasks.len()
            ),
        ),
        (Some(u), Some(used)) => {
            let (want_lo, want_hi) = expect.used_percent;
            let got = percent(used, size);
            if !(want_lo..=want_hi).contains(&got) || used > size {
                fail(
                    Check::StackUsage,
                    format!(
                        "task {id} used {used} of its {size} bytes ({got} %), but the scenario takes it to {want_lo}-{want_hi} %"
                    ),
                );
            }
            if u.stack_size != size {
                fail(
                    Check::StackUsage,
                    format!(
                        "STACK-USAGE says stacks of {} bytes, the announced one is {size}",
                        u.stack_size
                    ),
                );
            }
            if !u.complete() {
                fail(
                    Check::StackUsage,
                    format!(
                        "the records tell {} of the {} exits the guest counted ({} it could not record)",
                        u.tasks.len(),
                        u.counted,
                        u.dropped
                    ),
                );
            }
        }
    }
    let mine: Vec<&NearMiss> = records
        .near_misses
        .iter()
        .filter(|n| n.scenario == name && n.task_id == id)
        .map(|n| &n.record)
        .collect();
    v.reported = mine.len();
    match (expect.near_miss, mine.as_slice()) {
        (NearMissExpect::NotReported, []) => {}
        (NearMissExpect::NotReported, [n, ..]) => fail(
            Check::NearMiss,
            format!(
                "task {id} was told as a near miss ({} NEAR-MISS, used {} of {} bytes), but it went to ~{} % of its stack",
                mine.len(),
                n.used,
                n.size(),
                expect.used_percent.1
            ),
        ),
        (NearMissExpect::Reported { .. }, []) => fail(
            Check::NearMiss,
            match used {
                Some(used) => format!(
                    "no NEAR-MISS for task {id} '{}', which used {used} of its {size} bytes ({} %)",
                    alloc.task_name,
                    percent(used, size)
                ),
                None => format!("no NEAR-MISS for task {id} '{}'", alloc.task_name),
            },
        ),
        (NearMissExpect::Reported { .. }, [_, _, ..]) => fail(
            Check::NearMiss,
            format!("{} NEAR-MISS records for task {id}, one exit", mine.len()),
        ),
        (NearMissExpect::Reported { function }, [n]) => {
            if (n.lo.get(), n.hi.get()) != (lo, hi) {
                fail(
                    Check::NearMiss,
                    format!(
                        "NEAR-MISS names the stack {:#x}..{:#x}, announced {lo:#x}..{hi:#x}",
                        n.lo.get(),
                        n.hi.get()
                    ),
                );
            }
            if !is_near_miss(n.used, size, n.threshold_percent) || n.used > size {
                fail(
                    Check::NearMiss,
                    format!(
                        "NEAR-MISS says {} of {size} bytes used ({} %), which is not over its threshold of {} % (or is past the stack)",
                        n.used,
                        percent(n.used, size),
                        n.threshold_percent
                    ),
                );
            }
            if let Some(used) = used.filter(|&u| u != n.used) {
                fail(
                    Check::StackUsage,
                    format!(
                        "STACK-USAGE says task {id} used {used} bytes, its NEAR-MISS {}",
                        n.used
                    ),
                );
            }
            let found = judge_chain(n, function, symbols);
            v.deepest = found.1;
            for f in found.0 {
                fail(Check::DeepestChain, f);
            }
        }
    }
    v.failures = out;
    v
}

/// The chain's innermost record: in the used part of the stack, its return
/// address (named by the ELF) in `function`. Failures and the runner's name.
fn judge_chain(
    n: &NearMiss,
    function: &str,
    symbols: Option<&dyn Symbolize>,
) -> (Vec<String>, Option<String>) {
    let mut out = Vec::new();
    let Some(first) = n.chain.first() else {
        out.push(format!(
            "NEAR-MISS for task {} carries no call chain: where the stack went is not told",
            n.task_id
        ));
        return (out, None);
    };
    let (at, ret) = (first.at.get(), first.frame.addr.get());
    let (lo, hi) = (n.lo.get(), n.hi.get());
    if !(lo..hi).contains(&at) || hi - at > n.used {
        out.push(format!(
            "the deepest frame record is at {at:#x}, {} bytes below the top, outside the {} bytes the task is said to have used",
            hi.saturating_sub(at),
            n.used
        ));
    }
    let Some(symbols) = symbols else {
        out.push("no guest ELF to name the deepest chain's return address with".into());
        return (out, None);
    };
    let names = called_from(symbols, ret);
    if !names.iter().any(|f| f.contains(function)) {
        out.push(format!(
            "the deepest chain's innermost return address {ret:#x} is in {}, by the ELF; expected {function}",
            if names.is_empty() {
                "no function".to_string()
            } else {
                names.join(" < ")
            }
        ));
    }
    (out, names.into_iter().next())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::symbols::tests::Fake;
    use std::collections::HashMap;

    /// A real boot of stack.near_miss and stack.half_used.
    const LOG: &str = include_str!("testdata/usage.serial");
    const INNERMOST: u64 = 0xffffffff8001d290;

    fn symbols() -> Fake {
        let mut m = HashMap::new();
        m.insert(
            INNERMOST - 1,
            vec!["guest::scenarios::usage::near_miss_recurse"],
        );
        Fake(m)
    }

    fn verdict(log: &str, name: &str, symbols: Option<&dyn Symbolize>) -> UsageVerdict {
        let events = super::super::lines::parse(log);
        let records = parse(log);
        let usage = of_scenario(name, &records, symbols);
        judge(
            abi::usage::expect(name).unwrap(),
            &events,
            &records,
            usage.as_ref(),
            symbols,
        )
    }

    fn failed(v: &UsageVerdict) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = v.failures.iter().map(|f| f.check.name()).collect();
        names.dedup();
        names
    }

    #[test]
    fn a_real_boot_passes_both_scenarios() {
        let s = symbols();
        let near = verdict(LOG, "stack.near_miss", Some(&s));
        assert_eq!(near.failures, []);
        assert_eq!(
            near.describe(),
            "near miss reported: task 4 used 15.2 KiB of 16 KiB (95 %), deepest in guest::scenarios::usage::near_miss_recurse"
        );
        let half = verdict(LOG, "stack.half_used", Some(&s));
        assert_eq!(half.failures, []);
        assert_eq!(
            half.describe(),
            "no near miss: task 5 used 8.0 KiB of 16 KiB (50 %)"
        );
        let records = parse(LOG);
        let u = of_scenario("stack.near_miss", &records, Some(&s)).unwrap();
        assert_eq!(u.tasks, [(4, 15584)]);
        assert!(u.complete());
        assert_eq!(
            u.near_misses[0].warning(),
            "near miss: task 4 'near-miss' used 15.2 KiB of 16 KiB (95 %), deepest in guest::scenarios::usage::near_miss_recurse"
        );
        assert!(of_scenario("boot.smoke", &records, None).is_none());
    }

    /// Each way the records can be wrong fails its own check, and only it.
    #[test]
    fn each_tampered_record_names_its_check() {
        let s = symbols();
        let cases: &[(&str, &str, &str, &[&str])] = &[
            // The measure taken from the stack pointer at exit, not the
            // deepest word: no near miss at all.
            (
                "stack.near_miss",
                "NEAR-MISS {",
                "NEAR-MISX {",
                &["near-miss"],
            ),
            (
                "stack.near_miss",
                "\"threshold_percent\":90",
                "\"threshold_percent\":96",
                &["near-miss"],
            ),
            (
                "stack.near_miss",
                "\"used\":15584,\"threshold_percent\":90",
                "\"used\":15500,\"threshold_percent\":90",
                &["stack-usage"],
            ),
            (
                "stack.near_miss",
                "\"hi\":\"0xffffc90000029000\",\"used\"",
                "\"hi\":\"0xffffc9000002a000\",\"used\"",
                &["near-miss", "deepest-chain"],
            ),
            // The chain begins elsewhere than the recursion (the live
            // frames of the exit path, say): its name is the guest's word.
            (
                "stack.near_miss",
                "\"addr\":\"0xffffffff8001d290\"",
                "\"addr\":\"0xffffffff8001d2a0\"",
                &["deepest-chain"],
            ),
            (
                "stack.near_miss",
                "\"runs\":[[4,1,15584]]",
                "\"runs\":[[4,1,1948]]",
                &["stack-usage"],
            ),
            (
                "stack.near_miss",
                "\"runs\":[[4,1,15584]]",
                "\"runs\":[[3,1,15584]]",
                &["stack-usage"],
            ),
            (
                "stack.half_used",
                "\"runs\":[[5,1,8224]]",
                "\"runs\":[[5,1,1028]]",
                &["stack-usage"],
            ),
            (
                "stack.half_used",
                "\"total\":1,\"from\":0,\"runs\":[[5,1,8224]]",
                "\"total\":2,\"from\":0,\"runs\":[[5,1,8224]]",
                &["stack-usage"],
            ),
            (
                "stack.half_used",
                "\"runs\":[[5,1,8224]]",
                "\"runs\":[[5,\"x\",8224]]",
                &["readable", "stack-usage"],
            ),
            (
                "stack.half_used",
                "STACK-ALLOC {\"scenario\":\"stack.half_used\"",
                "STACK-ALLOC {\"scenario\":\"stack.other\"",
                &["announced"],
            ),
        ];
        for &(scenario, from, to, want) in cases {
            assert!(LOG.contains(from), "{from}");
            let log = LOG.replace(from, to);
            let v = verdict(&log, scenario, Some(&s));
            assert_eq!(failed(&v), want, "{from} -> {to}: {:?}", v.failures);
        }
        // The innermost record said to lie above the used part.
        let log = LOG.replace(
            "\"chain\":[{\"at\":\"0xffffc900000253b0\"",
            "\"chain\":[{\"at\":\"0xffffc90000025000\"",
        );
        let v = verdict(&log, "stack.near_miss", Some(&s));
        assert_eq!(failed(&v), ["deepest-chain"], "{:?}", v.failures);
        // A near miss where the scenario takes the task halfway.
        let miss = LOG
            .lines()
            .find(|l| l.starts_with("NEAR-MISS"))
            .unwrap()
            .replace("stack.near_miss", "stack.half_used")
            .replace("\"task_id\":4", "\"task_id\":5");
        let log = LOG.replace(
            "ok 2 stack.half_used",
            &format!("{miss}\nok 2 stack.half_used"),
        );
        let v = verdict(&log, "stack.half_used", Some(&s));
        assert_eq!(failed(&v), ["near-miss"], "{:?}", v.failures);
        // Without the ELF, the chain cannot be named.
        let v = verdict(LOG, "stack.near_miss", None);
        assert_eq!(failed(&v), ["deepest-chain"]);
        let v = verdict(
            &LOG.replace("NEAR-MISS {", "X {"),
            "stack.near_miss",
            Some(&s),
        );
        assert!(
            v.describe()
                .starts_with("stack usage told wrong (no near miss reported: task 4 used 15.2 KiB"),
            "{}",
            v.describe()
        );
        assert!(!v.as_expected() && v.category_str() == "usage-wrong");
    }

    #[test]
    fn figures_bin_by_tenths_and_the_deepest_is_kept() {
        let a = ScenarioUsage {
            stack_size: 16384,
            tasks: vec![(1, 0), (2, 1638), (3, 1639), (4, 16384)],
            counted: 4,
            records_whole: true,
            ..ScenarioUsage::default()
        };
        let b = ScenarioUsage {
            tasks: vec![(9, 15000)],
            counted: 1,
            ..a.clone()
        };
        let h = histogram([("x.a", &a), ("x.b", &b)]);
        assert_eq!(h.tasks, 5);
        assert_eq!(h.buckets, [2, 1, 0, 0, 0, 0, 0, 0, 0, 2]);
        assert_eq!(h.deepest, Some(("x.a", 4, 16384)));
        assert_eq!(kib(512), "512 B");
        assert_eq!(kib(16384), "16 KiB");
        assert_eq!(kib(15584), "15.2 KiB");
        assert_eq!(percent(1, 0), 100);
    }
}
