//! The guest's records, read out of a serial log: `STACK-ALLOC` (the
//! ground truth a scenario announces before it overflows), `GUARD-HIT` (the
//! fault handler's claims), `STACK-CORRUPTION` (damage found after the
//! fact) and `CPU-MAP` (which LAPIC each CPU is), from `abi::guard`;
//! `STACK-DUMP` (the faulting stack's words), from `abi::stackdump`;
//! `UAF-ARMED` and `UAF-HIT`, the same pair for a use after free, from
//! `abi::uaf`; `BENCH-CELL`, from `abi::bench`. The types are the guest's
//! own, so the reader cannot drift from the writer. The log's lines are
//! kept too, for the human oops around each record.
//!
//! The lines may sit anywhere in the log, interleaved with KTAP and the
//! human oops, and a line from another CPU may be glued in front of one;
//! so each is found by its prefix anywhere in the line.

use abi::bench::BenchCell;
use abi::guard::{CpuMap, GuardHit, StackAlloc, StackCorruption};
use abi::stackdump::StackDump;
use abi::uaf::{UafArmed, UafHit};
use abi::Record;
use serde::Deserialize;
use std::ops::Deref;

/// A record and the log line it was read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen<T> {
    /// 0-based line number in the serial log.
    pub line: usize,
    pub record: T,
}

impl<T> Deref for Seen<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.record
    }
}

pub type Alloc<'a> = Seen<StackAlloc<'a>>;
pub type Hit<'a> = Seen<GuardHit<'a>>;
pub type Corruption<'a> = Seen<StackCorruption<'a>>;
pub type Armed<'a> = Seen<UafArmed<'a>>;
pub type UseAfterFree<'a> = Seen<UafHit<'a>>;
pub type Bench<'a> = Seen<BenchCell<'a>>;
pub type Dump<'a> = Seen<StackDump<'a>>;
pub type Cpus = Seen<CpuMap>;

/// Everything a log said about faults, in log order, borrowing its text.
#[derive(Clone, Debug, Default)]
pub struct Events<'a> {
    pub allocs: Vec<Alloc<'a>>,
    pub hits: Vec<Hit<'a>>,
    pub corruptions: Vec<Corruption<'a>>,
    pub uaf_armed: Vec<Armed<'a>>,
    pub uaf_hits: Vec<UseAfterFree<'a>>,
    pub bench: Vec<Bench<'a>>,
    pub dumps: Vec<Dump<'a>>,
    pub cpu_maps: Vec<Cpus>,
    /// Every line of the log, trailing whitespace cut (`Seen::line` indexes it).
    pub lines: Vec<&'a str>,
    /// Lines that carry a record's prefix but do not parse as it: a report
    /// the guest tried to give and garbled (line number, text).
    pub unreadable: Vec<(usize, &'a str)>,
}

impl<'a> Events<'a> {
    pub fn allocs_of<'s>(&'s self, scenario: &'s str) -> impl Iterator<Item = &'s Alloc<'a>> {
        self.allocs.iter().filter(move |a| a.scenario == scenario)
    }

    pub fn hits_of<'s>(&'s self, scenario: &'s str) -> impl Iterator<Item = &'s Hit<'a>> {
        self.hits.iter().filter(move |h| h.scenario == scenario)
    }

    pub fn corruptions_of<'s>(
        &'s self,
        scenario: &'s str,
    ) -> impl Iterator<Item = &'s Corruption<'a>> {
        self.corruptions
            .iter()
            .filter(move |c| c.scenario == scenario)
    }

    pub fn uaf_armed_of<'s>(&'s self, scenario: &'s str) -> impl Iterator<Item = &'s Armed<'a>> {
        self.uaf_armed
            .iter()
            .filter(move |a| a.scenario == scenario)
    }

    pub fn uaf_hits_of<'s>(
        &'s self,
        scenario: &'s str,
    ) -> impl Iterator<Item = &'s UseAfterFree<'a>> {
        self.uaf_hits.iter().filter(move |h| h.scenario == scenario)
    }

    /// Garbled lines that still name `scenario` (a cut-off line keeps its start).
    pub fn unreadable_of<'s>(&'s self, scenario: &'s str) -> impl Iterator<Item = &'a str> + 's {
        let needle = format!("\"scenario\":\"{scenario}\"");
        self.unreadable
            .iter()
            .filter(move |(_, l)| l.contains(&needle))
            .map(|&(_, l)| l)
    }
}

pub fn parse(serial: &str) -> Events<'_> {
    let mut e = Events::default();
    for (i, raw) in serial.lines().enumerate() {
        let line = raw.trim_end();
        e.lines.push(line);
        let read_ok = read(line, i, &mut e.dumps)
            .or_else(|| read(line, i, &mut e.hits))
            .or_else(|| read(line, i, &mut e.allocs))
            .or_else(|| read(line, i, &mut e.cpu_maps))
            .or_else(|| read(line, i, &mut e.corruptions))
            .or_else(|| read(line, i, &mut e.uaf_hits))
            .or_else(|| read(line, i, &mut e.uaf_armed))
            .or_else(|| read(line, i, &mut e.bench));
        if read_ok == Some(false) {
            e.unreadable.push((i, line));
        }
    }
    e
}

/// Offer each line of `serial` (trailing whitespace trimmed) and its
/// number to `read`, which answers as [`read`] does; the lines it found
/// carrying a record that does not parse.
pub fn read_lines<'a>(
    serial: &'a str,
    mut read: impl FnMut(&'a str, usize) -> Option<bool>,
) -> Vec<(usize, &'a str)> {
    let mut unreadable = Vec::new();
    for (i, raw) in serial.lines().enumerate() {
        let line = raw.trim_end();
        if read(line, i) == Some(false) {
            unreadable.push((i, line));
        }
    }
    unreadable
}

/// Record `T` from log line `i` into `into`: `None` if the line carries no
/// such record, `Some(false)` if it carries one that does not parse.
/// Every record reader of the report uses it (`usage`, `recovery`).
pub fn read<'a, T: Record + Deserialize<'a>>(
    line: &'a str,
    i: usize,
    into: &mut Vec<Seen<T>>,
) -> Option<bool> {
    let json = abi::record::json_in::<T>(line)?;
    Some(match serde_json::from_str::<T>(json) {
        Ok(record) => {
            into.push(Seen { line: i, record });
            true
        }
        Err(_) => false,
    })
}

/// `guard hits suppressed: N` lines the guest prints instead of the 2nd..Nth
/// report of a storm (as a KTAP diagnostic or bare); their sum.
pub fn suppressed<'a>(lines: impl IntoIterator<Item = &'a str>) -> u64 {
    const MARK: &str = "guard hits suppressed: ";
    lines
        .into_iter()
        .filter_map(|l| {
            let rest = &l[l.find(MARK)? + MARK.len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u64>().ok()
        })
        .sum()
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A real log's lines (stack.recursion at smp=1, `fixture::STACK`).
    pub fn alloc() -> &'static str {
        first("STACK-ALLOC ")
    }
    pub fn hit() -> &'static str {
        first("GUARD-HIT ")
    }
    fn first(prefix: &str) -> &'static str {
        crate::report::fixture::STACK
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap()
    }
    pub const CORRUPTION: &str = r#"STACK-CORRUPTION {"scenario":"stack.direct_legacy","what":"thread_info flags","expected":"0x0","found":"0xa5a5a5a5a5a5a5a5","lo":"0xffff8000004b0000","hi":"0xffff8000004b4000","task_id":8}"#;

    /// A real log's use-after-free pair (life.uaf at smp=4).
    pub const UAF_ARMED: &str = r#"UAF-ARMED {"scenario":"life.uaf","object":"task_struct","owner":6,"base":"0xffffc9000006d000","bytes":4096,"addr":"0xffffc9000006d010","reader":"stale-reader"}"#;
    pub const UAF_HIT: &str = r#"UAF-HIT {"scenario":"life.uaf","object":"task_struct","owner":6,"object_base":"0xffffc9000006d000","fault_addr":"0xffffc9000006d010","access":"read","cpu":0,"task_id":7,"task_name":"stale-reader","rip":"0xffffffff8000f934","backtrace":[{"addr":"0xffffffff800255ac","sym":{"name":"guest::x","off":"0x1","size":"0x10"}},{"addr":"0xffffffff800263ec","sym":{"name":"guest::x","off":"0x1","size":"0x10"}},{"addr":"0xffffffff800373b9","sym":{"name":"guest::x","off":"0x1","size":"0x10"}},{"addr":"0xffffffff80034cb2","sym":{"name":"guest::x","off":"0x1","size":"0x10"}}],"history":[{"event":"created","cpu":0,"ago_ns":15658627},{"event":"exited","cpu":0,"ago_ns":14501037},{"event":"switched-away","cpu":0,"ago_ns":14400552},{"event":"reaped","cpu":0,"ago_ns":13978818},{"event":"rcu-queued","cpu":0,"ago_ns":13922960},{"event":"struct-freed","cpu":0,"ago_ns":6981559}],"recovered":true}"#;

    #[test]
    fn reads_the_use_after_free_pair() {
        let log = format!("# ok: x\n{UAF_ARMED}\nBUG: KFENCE: ...\n{UAF_HIT}\nok 1 life.uaf\n");
        let e = parse(&log);
        assert_eq!(e.uaf_armed.len(), 1);
        assert_eq!(
            (e.uaf_armed[0].addr.0, e.uaf_armed[0].line),
            (0xffffc9000006d010, 1)
        );
        let h = &e.uaf_hits[0];
        assert_eq!((h.owner, h.line, h.history.len()), (6, 3, 6));
        assert_eq!(h.history[5].event, abi::kinds::TaskEvent::StructFreed);
        assert_eq!(e.uaf_hits_of("life.uaf").count(), 1);
        let cut = &UAF_HIT[..UAF_HIT.len() - 40];
        assert_eq!(parse(cut).unreadable_of("life.uaf").count(), 1);
    }

    #[test]
    fn reads_the_records_anywhere_in_a_log() {
        let (alloc, hit) = (alloc(), hit());
        let log = format!(
            "KTAP version 1\n1..1\nCPU-MAP {{\"lapic_ids\":[0,1]}}\n{alloc}\r\nBUG: ...\ngarbage from cpu 1{hit}\n{CORRUPTION}\n# guard hits suppressed: 999\nok 1 stack.recursion\n"
        );
        let e = parse(&log);
        assert_eq!(e.allocs.len(), 1);
        assert_eq!(e.allocs[0].lo.0, 0xffffc9000001f000);
        assert_eq!(e.allocs[0].line, 3);
        assert_eq!(e.hits.len(), 1);
        let h = &e.hits[0];
        assert_eq!(
            (h.fault_addr.0, h.depth, h.recovered),
            (0xffffc9000001ef48, Some(52), true)
        );
        assert_eq!(abi::guard::unfold(&h.backtrace).count(), 57);
        assert_eq!(h.backtrace[0].repeat, 53);
        assert_eq!(e.corruptions[0].found.0, 0xa5a5a5a5a5a5a5a5);
        assert_eq!(e.cpu_maps[0].lapic_ids, [0, 1]);
        assert!(e.unreadable.is_empty());
        assert_eq!(e.hits_of("stack.recursion").count(), 1);
        assert_eq!(e.hits_of("stack.other").count(), 0);
        assert_eq!(suppressed(log.lines()), 999);
        assert_eq!(e.lines[4], "BUG: ...");
        // The real log's dump: four chunks after the hit.
        let e = parse(crate::report::fixture::STACK);
        let dumps: Vec<_> = e
            .dumps
            .iter()
            .filter(|d| d.scenario == "stack.recursion")
            .collect();
        assert_eq!(dumps.len(), 4);
        assert!(dumps.iter().all(|d| d.line > e.hits[0].line));
    }

    #[test]
    fn garbled_lines_are_kept_not_dropped() {
        let hit = hit();
        let cut = &hit[..hit.len() - 30];
        let null_depth = hit.replace("\"depth\":52", "\"depth\":null");
        let rip = format!("\"rip\":\"{:#x}\"", parse(hit).hits[0].rip.0);
        let bad_hex = hit.replace(&rip, "\"rip\":\"ffff\"");
        let bad_dump = crate::report::fixture::STACK
            .lines()
            .find(|l| l.starts_with("STACK-DUMP "))
            .unwrap()
            .replacen("0*11", "0*1", 1);
        let log = format!("{cut}\n{null_depth}\n{bad_hex}\n{bad_dump}\n");
        let e = parse(&log);
        assert_eq!(e.hits.len(), 1);
        assert_eq!(e.hits[0].depth, None);
        assert_eq!(e.unreadable.len(), 3);
        assert_eq!(e.unreadable_of("stack.recursion").count(), 3);
        assert_eq!(e.unreadable_of("stack.irq").count(), 0);
    }
}
