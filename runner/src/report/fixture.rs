//! Real captured reports, and the guest ELF's answers about them, for the
//! verdict tests: every check is shown to fail on a real report tampered
//! the way a guest defect would tamper it, and only that check.
//!
//! `testdata/*.serial` are serial logs of real boots (`runner run
//! 'stack.*'`, and `stack.all_cpus` at `--smp 4`, trimmed to a few
//! scenarios); `testdata/elf.json` holds what the runner asked of that
//! boot's guest ELF while judging them (symbols, text, call-frame rows),
//! recorded so the tests need no 9 MB ELF. Regenerate both together, from
//! one build:
//!
//! ```sh
//! GUEST_ELF=target/x86_64-unknown-none/release/guest.ksyms \
//!   cargo test --release -p runner capture_fixture -- --ignored
//! ```
//! after copying fresh logs into `testdata/` (see `capture_fixture`). The
//! logs predate `depth_sp`: in the four hits that carry a dump it was added
//! by hand, as the guest records it (the stack pointer of the frame that
//! recorded the depth, which is its callee's CFA in the unwind).

use crate::report::lines;
use crate::report::stack::{self, StackVerdict};
use crate::symbols::{SymbolAt, Symbolize};
use crate::unwind::{CallFrames, Row};
use abi::guard::GuardHit;
use abi::stackdump::{StackDump, Words, CHUNK_WORDS};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::BTreeMap;

pub const STACK: &str = include_str!("testdata/stack.serial");
pub const IRQ: &str = include_str!("testdata/stack-irq.serial");
pub const ALL_CPUS: &str = include_str!("testdata/stack-all-cpus.serial");
const ELF: &str = include_str!("testdata/elf.json");

/// The ELF's answers, as recorded.
#[derive(Default, Serialize, Deserialize)]
pub struct Answers {
    symbols: BTreeMap<u64, Option<SymbolAt>>,
    functions: BTreeMap<u64, Vec<String>>,
    text: Vec<(u64, u64)>,
    rows: BTreeMap<u64, Option<Row>>,
}

impl Answers {
    pub fn load() -> Answers {
        serde_json::from_str(ELF).expect("testdata/elf.json reads")
    }
}

impl Symbolize for Answers {
    fn functions(&self, addr: u64) -> Vec<String> {
        self.functions.get(&addr).cloned().unwrap_or_default()
    }
    fn symbol(&self, addr: u64) -> Option<SymbolAt> {
        self.symbols.get(&addr).cloned().flatten()
    }
    fn in_text(&self, addr: u64) -> bool {
        self.text.iter().any(|&(lo, hi)| (lo..hi).contains(&addr))
    }
    fn call_frames(&self) -> Option<&dyn CallFrames> {
        Some(self)
    }
}

impl CallFrames for Answers {
    fn row(&self, pc: u64) -> Option<Row> {
        self.rows.get(&pc).cloned().flatten()
    }
}

/// Asks a real ELF and writes down every answer.
pub struct Recorder<'s> {
    pub inner: &'s dyn Symbolize,
    pub answers: RefCell<Answers>,
}

impl Symbolize for Recorder<'_> {
    fn functions(&self, addr: u64) -> Vec<String> {
        let f = self.inner.functions(addr);
        self.answers.borrow_mut().functions.insert(addr, f.clone());
        f
    }
    fn symbol(&self, addr: u64) -> Option<SymbolAt> {
        let s = self.inner.symbol(addr);
        self.answers.borrow_mut().symbols.insert(addr, s.clone());
        s
    }
    fn in_text(&self, addr: u64) -> bool {
        self.inner.in_text(addr)
    }
    fn call_frames(&self) -> Option<&dyn CallFrames> {
        Some(self)
    }
}

impl CallFrames for Recorder<'_> {
    fn row(&self, pc: u64) -> Option<Row> {
        let r = self.inner.call_frames().and_then(|c| c.row(pc));
        self.answers.borrow_mut().rows.insert(pc, r.clone());
        r
    }
}

/// Judge `scenario` in `log` with `symbols`, as the runner does.
pub fn judge(scenario: &str, log: &str, smp: u32, symbols: &dyn Symbolize) -> StackVerdict {
    let s = abi::scenario::find(scenario).expect("a scenario");
    let diags: Vec<String> = log
        .lines()
        .filter_map(|l| l.strip_prefix("# ").map(str::to_string))
        .collect();
    stack::judge(
        s,
        &s.guard.unwrap(),
        smp,
        &lines::parse(log),
        &diags,
        Some(symbols),
    )
}

thread_local! {
    static WORDS: RefCell<Vec<Option<u64>>> = const { RefCell::new(Vec::new()) };
}

fn read_word(addr: u64) -> Option<u64> {
    WORDS.with(|w| {
        let w = w.borrow();
        let lo = w.first().copied().flatten().unwrap_or(0);
        // Word 0 holds the dump's base (see `Log::dump`).
        w.get(((addr - lo) / 8) as usize + 1).copied().flatten()
    })
}

/// A serial log to tamper with, line by line.
#[derive(Clone)]
pub struct Log(pub Vec<String>);

impl Log {
    pub fn of(text: &str) -> Log {
        Log(text.lines().map(str::to_string).collect())
    }

    pub fn text(&self) -> String {
        self.0.join("\n") + "\n"
    }

    /// The line number of `scenario`'s `n`th GUARD-HIT.
    fn hit_line(&self, scenario: &str, n: usize) -> usize {
        let needle = format!("GUARD-HIT {{\"scenario\":\"{scenario}\"");
        self.0
            .iter()
            .enumerate()
            .filter(|(_, l)| l.starts_with(&needle))
            .nth(n)
            .unwrap_or_else(|| panic!("no GUARD-HIT {n} of {scenario}"))
            .0
    }

    /// Change the first GUARD-HIT of `scenario` the way a guest that
    /// computed it so would print it: the record, and the oops rendered
    /// from it, as the guest renders it.
    pub fn hit(mut self, scenario: &str, f: impl FnOnce(&mut serde_json::Value)) -> Log {
        let at = self.hit_line(scenario, 0);
        let json = abi::record::json_in::<GuardHit>(&self.0[at])
            .unwrap()
            .to_string();
        let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
        f(&mut value);
        let json = serde_json::to_string(&value).unwrap();
        let hit: GuardHit = serde_json::from_str(&json).expect("the tampered record still reads");
        let mut oops = Vec::new();
        abi::oops::render(&hit, &mut |l| {
            oops.push(l.to_string());
            Ok(())
        })
        .unwrap();
        let refs: Vec<&str> = self.0.iter().map(String::as_str).collect();
        let block = super::oops::block(&refs, at).expect("an oops before the hit");
        let start = block[0].0;
        let record = format!("GUARD-HIT {json}");
        self.0.splice(start..=at, oops.into_iter().chain([record]));
        self
    }

    /// Replace `from` with `to` in the oops lines of `scenario`'s first hit
    /// only (a garbled line).
    pub fn oops_text(mut self, scenario: &str, from: &str, to: &str) -> Log {
        let at = self.hit_line(scenario, 0);
        let refs: Vec<&str> = self.0.iter().map(String::as_str).collect();
        let block = super::oops::block(&refs, at).unwrap();
        let n = block
            .iter()
            .find(|(_, l)| l.contains(from))
            .unwrap_or_else(|| panic!("no oops line with {from:?}"))
            .0;
        self.0[n] = self.0[n].replacen(from, to, 1);
        self
    }

    /// Change the words of `scenario`'s dumped stack.
    pub fn dump(mut self, scenario: &str, f: impl FnOnce(u64, &mut Vec<Option<u64>>)) -> Log {
        let text = self.text();
        let events = lines::parse(&text);
        let chunks: Vec<(usize, StackDump)> = events
            .dumps
            .iter()
            .filter(|d| d.scenario == scenario)
            .map(|d| (d.line, d.record.clone()))
            .collect();
        let first = &chunks[0].1;
        let lo = first.lo.get();
        let mut words: Vec<Option<u64>> = Vec::new();
        for (_, c) in &chunks {
            words.extend(c.words.iter().map(|w| w.unwrap()));
        }
        f(lo, &mut words);
        WORDS.with(|w| {
            *w.borrow_mut() = std::iter::once(Some(lo))
                .chain(words.iter().copied())
                .collect()
        });
        let mut out = Vec::new();
        for (i, part) in words.chunks(CHUNK_WORDS).enumerate() {
            let at = lo + (i * CHUNK_WORDS * 8) as u64;
            let dump = StackDump {
                at: at.into(),
                words: Words::Memory {
                    at,
                    len: part.len(),
                    read: read_word,
                },
                ..first.clone()
            };
            out.push(format!(
                "STACK-DUMP {}",
                serde_json::to_string(&dump).unwrap()
            ));
        }
        let (from, to) = (chunks[0].0, chunks.last().unwrap().0);
        self.0.splice(from..=to, out);
        self
    }

    /// Drop every line for which `f` says so.
    pub fn without(mut self, f: impl Fn(&str) -> bool) -> Log {
        self.0.retain(|l| !f(l));
        self
    }
}

/// The names of the checks a verdict failed.
pub fn failed(v: &StackVerdict) -> Vec<&'static str> {
    v.failures.iter().map(|f| f.check.name()).collect()
}

/// Where each scenario of the captured logs lives, and at what `--smp`.
pub const CAPTURED: &[(&str, &str, u32)] = &[
    ("stack.recursion", STACK, 1),
    ("stack.probe_skip", STACK, 1),
    ("stack.underflow", STACK, 1),
    ("stack.exception", STACK, 1),
    ("stack.direct_legacy", STACK, 1),
    ("stack.irq", IRQ, 1),
    ("stack.all_cpus", ALL_CPUS, 4),
];

#[test]
fn every_captured_report_passes_every_check() {
    let elf = Answers::load();
    for &(name, log, smp) in CAPTURED {
        let v = judge(name, log, smp, &elf);
        assert_eq!(v.failures, [], "{name}");
        assert!(v.as_expected(), "{name}: {}", v.describe());
    }
}

#[test]
#[ignore = "regenerates testdata/elf.json from a real guest ELF: set GUEST_ELF"]
fn capture_fixture() {
    let path = std::env::var("GUEST_ELF").expect("GUEST_ELF: the guest.ksyms the logs came from");
    let symbols = crate::symbols::Symbols::load(std::path::Path::new(&path)).unwrap();
    let recorder = Recorder {
        inner: &symbols,
        answers: RefCell::default(),
    };
    for &(name, log, smp) in CAPTURED {
        let v = judge(name, log, smp, &recorder);
        assert_eq!(v.failures, [], "{name}: the captured log must pass");
    }
    let mut answers = recorder.answers.into_inner();
    let data = std::fs::read(&path).unwrap();
    let file = object::File::parse(&*data).unwrap();
    use object::{Object, ObjectSection};
    answers.text = file
        .sections()
        .filter(|s| s.kind() == object::SectionKind::Text)
        .map(|s| (s.address(), s.address() + s.size()))
        .collect();
    let out = concat!(env!("CARGO_MANIFEST_DIR"), "/src/report/testdata/elf.json");
    std::fs::write(out, serde_json::to_string_pretty(&answers).unwrap()).unwrap();
}
