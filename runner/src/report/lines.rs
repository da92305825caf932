//! The guest's machine-readable fault lines, read out of a serial log:
//! `STACK-ALLOC` (the ground truth a scenario announces before it
//! overflows), `GUARD-HIT` (the fault handler's claims) and
//! `STACK-CORRUPTION` (damage found after the fact), from `abi::guard`;
//! `UAF-ARMED` and `UAF-HIT`, the same pair for a use after free, from
//! `abi::uaf`.
//!
//! The lines may sit anywhere in the log, interleaved with KTAP and the
//! human oops, and a line from another CPU may be glued in front of one;
//! so each is found by its prefix anywhere in the line.

use abi::guard::{ALLOC_PREFIX, CORRUPTION_PREFIX, HIT_PREFIX};
use abi::uaf::{ARMED_PREFIX as UAF_ARMED_PREFIX, HIT_PREFIX as UAF_HIT_PREFIX};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

/// A scenario's announcement of the stack it is about to overflow.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Alloc {
    #[serde(skip)]
    pub line: usize,
    pub scenario: String,
    pub stack_kind: String,
    #[serde(deserialize_with = "hex")]
    pub lo: u64,
    #[serde(deserialize_with = "hex")]
    pub hi: u64,
    pub guard_below: u64,
    pub guard_above: u64,
    pub cpu: u64,
    pub task_id: u64,
    pub task_name: String,
    pub frame_bytes: u64,
}

/// The fault handler's report of one hit.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Hit {
    #[serde(skip)]
    pub line: usize,
    pub scenario: String,
    /// `overflow`, `underflow` or `not-guard`: the guest's claim.
    pub kind: String,
    pub stack_kind: String,
    #[serde(deserialize_with = "hex")]
    pub stack_lo: u64,
    #[serde(deserialize_with = "hex")]
    pub stack_hi: u64,
    #[serde(deserialize_with = "hex")]
    pub guard_lo: u64,
    #[serde(deserialize_with = "hex")]
    pub guard_hi: u64,
    #[serde(deserialize_with = "hex")]
    pub fault_addr: u64,
    pub cpu: u64,
    pub task_id: u64,
    pub task_name: String,
    #[serde(deserialize_with = "hex")]
    pub rip: u64,
    #[serde(deserialize_with = "hex")]
    pub rsp: u64,
    #[serde(deserialize_with = "hex")]
    pub error_code: u64,
    #[serde(deserialize_with = "hex")]
    pub cr2: u64,
    #[serde(deserialize_with = "hex_list")]
    pub backtrace: Vec<u64>,
    pub depth: Option<u64>,
    pub context: String,
    pub recovered: bool,
}

/// Damage no hardware caught, found afterwards.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Corruption {
    #[serde(skip)]
    pub line: usize,
    pub scenario: String,
    pub what: String,
    #[serde(deserialize_with = "hex")]
    pub expected: u64,
    #[serde(deserialize_with = "hex")]
    pub found: u64,
    #[serde(deserialize_with = "hex")]
    pub lo: u64,
    #[serde(deserialize_with = "hex")]
    pub hi: u64,
    pub task_id: u64,
}

/// A scenario's announcement of the freed object it is about to touch.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct UafArmed {
    #[serde(skip)]
    pub line: usize,
    pub scenario: String,
    pub object: String,
    pub owner: u64,
    #[serde(deserialize_with = "hex")]
    pub base: u64,
    pub bytes: u64,
    /// The address the reader will touch.
    #[serde(deserialize_with = "hex")]
    pub addr: u64,
    /// The name of the task that will touch it.
    pub reader: String,
}

/// The page-fault handler's report of a use after free.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct UafHit {
    #[serde(skip)]
    pub line: usize,
    pub scenario: String,
    pub object: String,
    pub owner: u64,
    #[serde(deserialize_with = "hex")]
    pub object_base: u64,
    #[serde(deserialize_with = "hex")]
    pub fault_addr: u64,
    pub access: String,
    pub cpu: u64,
    pub task_id: u64,
    pub task_name: String,
    #[serde(deserialize_with = "hex")]
    pub rip: u64,
    #[serde(deserialize_with = "hex_list")]
    pub backtrace: Vec<u64>,
    /// The owner's history, oldest first; empty if none was kept.
    pub history: Vec<HistoryEntry>,
    pub recovered: bool,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct HistoryEntry {
    /// One of `abi::uaf::task_event`.
    pub event: String,
    pub cpu: u64,
    /// How long before the fault.
    pub ago_ns: u64,
}

/// Everything a log said about faults, in log order.
#[derive(Clone, Debug, Default)]
pub struct Events {
    pub allocs: Vec<Alloc>,
    pub hits: Vec<Hit>,
    pub corruptions: Vec<Corruption>,
    pub uaf_armed: Vec<UafArmed>,
    pub uaf_hits: Vec<UafHit>,
    /// Lines that carry one of the prefixes but do not parse: a report the
    /// guest tried to give and garbled (line number, text).
    pub unreadable: Vec<(usize, String)>,
}

impl Events {
    pub fn allocs_of<'a>(&'a self, scenario: &'a str) -> impl Iterator<Item = &'a Alloc> + 'a {
        self.allocs.iter().filter(move |a| a.scenario == scenario)
    }

    pub fn hits_of<'a>(&'a self, scenario: &'a str) -> impl Iterator<Item = &'a Hit> + 'a {
        self.hits.iter().filter(move |h| h.scenario == scenario)
    }

    pub fn corruptions_of<'a>(
        &'a self,
        scenario: &'a str,
    ) -> impl Iterator<Item = &'a Corruption> + 'a {
        self.corruptions
            .iter()
            .filter(move |c| c.scenario == scenario)
    }

    pub fn uaf_armed_of<'a>(&'a self, scenario: &'a str) -> impl Iterator<Item = &'a UafArmed> {
        self.uaf_armed
            .iter()
            .filter(move |a| a.scenario == scenario)
    }

    pub fn uaf_hits_of<'a>(&'a self, scenario: &'a str) -> impl Iterator<Item = &'a UafHit> {
        self.uaf_hits.iter().filter(move |h| h.scenario == scenario)
    }

    /// Garbled lines that still name `scenario` (a cut-off line keeps its start).
    pub fn unreadable_of<'a>(&'a self, scenario: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let needle = format!("\"scenario\":\"{scenario}\"");
        self.unreadable
            .iter()
            .filter(move |(_, l)| l.contains(&needle))
            .map(|(_, l)| l.as_str())
    }
}

pub fn parse(serial: &str) -> Events {
    let mut e = Events::default();
    for (i, raw) in serial.lines().enumerate() {
        let line = raw.trim_end();
        let read_ok = if let Some(json) = after(line, HIT_PREFIX) {
            read(json, i, &mut e.hits)
        } else if let Some(json) = after(line, ALLOC_PREFIX) {
            read(json, i, &mut e.allocs)
        } else if let Some(json) = after(line, CORRUPTION_PREFIX) {
            read(json, i, &mut e.corruptions)
        } else if let Some(json) = after(line, UAF_HIT_PREFIX) {
            read(json, i, &mut e.uaf_hits)
        } else if let Some(json) = after(line, UAF_ARMED_PREFIX) {
            read(json, i, &mut e.uaf_armed)
        } else {
            continue;
        };
        if !read_ok {
            e.unreadable.push((i, line.to_string()));
        }
    }
    e
}

/// A line's record, knowing which log line it came from.
trait Numbered {
    fn set_line(&mut self, line: usize);
}

macro_rules! numbered {
    ($($t:ty),*) => {
        $(impl Numbered for $t {
            fn set_line(&mut self, line: usize) {
                self.line = line;
            }
        })*
    };
}
numbered!(Alloc, Hit, Corruption, UafArmed, UafHit);

/// Parse `json` as a `T` from log line `i` into `into`; false if it does not parse.
fn read<T: DeserializeOwned + Numbered>(json: &str, i: usize, into: &mut Vec<T>) -> bool {
    match serde_json::from_str::<T>(json) {
        Ok(mut t) => {
            t.set_line(i);
            into.push(t);
            true
        }
        Err(_) => false,
    }
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

/// The JSON after `prefix`, which must start a JSON object.
fn after<'a>(line: &'a str, prefix: &str) -> Option<&'a str> {
    let at = line.find(prefix)?;
    let rest = &line[at + prefix.len()..];
    rest.starts_with('{').then_some(rest)
}

pub fn parse_hex(s: &str) -> Option<u64> {
    let digits = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
    u64::from_str_radix(digits, 16).ok()
}

fn hex<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let s = String::deserialize(d)?;
    parse_hex(&s).ok_or_else(|| serde::de::Error::custom(format!("not a hex address: {s:?}")))
}

fn hex_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| {
            parse_hex(s)
                .ok_or_else(|| serde::de::Error::custom(format!("not a hex address: {s:?}")))
        })
        .collect()
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A real log's lines (stack.recursion at smp=1), for the verdict tests too.
    pub const ALLOC: &str = r#"STACK-ALLOC {"scenario":"stack.recursion","stack_kind":"task","lo":"0xffffc9000001f000","hi":"0xffffc90000023000","guard_below":1,"guard_above":1,"cpu":0,"task_id":3,"task_name":"recurse","frame_bytes":304}"#;
    pub const HIT: &str = r#"GUARD-HIT {"scenario":"stack.recursion","kind":"overflow","stack_kind":"task","stack_lo":"0xffffc9000001f000","stack_hi":"0xffffc90000023000","guard_lo":"0xffffc9000001e000","guard_hi":"0xffffc9000001f000","fault_addr":"0xffffc9000001ef48","cpu":0,"task_id":3,"task_name":"recurse","rip":"0xffffffff8002435a","rsp":"0xffffc9000001ef50","error_code":"0x0","cr2":"0xffffc9000001ef48","backtrace":["0xffffffff800243b0","0xffffffff800243b0","0xffffffff80024460"],"depth":53,"context":"task","recovered":true}"#;
    pub const CORRUPTION: &str = r#"STACK-CORRUPTION {"scenario":"stack.direct_legacy","what":"thread_info flags","expected":"0x0","found":"0xa5a5a5a5a5a5a5a5","lo":"0xffff8000004b0000","hi":"0xffff8000004b4000","task_id":8}"#;

    /// A real log's use-after-free pair (life.uaf at smp=4).
    pub const UAF_ARMED: &str = r#"UAF-ARMED {"scenario":"life.uaf","object":"task_struct","owner":6,"base":"0xffffc9000006d000","bytes":4096,"addr":"0xffffc9000006d010","reader":"stale-reader"}"#;
    pub const UAF_HIT: &str = r#"UAF-HIT {"scenario":"life.uaf","object":"task_struct","owner":6,"object_base":"0xffffc9000006d000","fault_addr":"0xffffc9000006d010","access":"read","cpu":0,"task_id":7,"task_name":"stale-reader","rip":"0xffffffff8000f934","backtrace":["0xffffffff800255ac","0xffffffff800263ec","0xffffffff800373b9","0xffffffff80034cb2"],"history":[{"event":"created","cpu":0,"ago_ns":15658627},{"event":"exited","cpu":0,"ago_ns":14501037},{"event":"switched-away","cpu":0,"ago_ns":14400552},{"event":"reaped","cpu":0,"ago_ns":13978818},{"event":"rcu-queued","cpu":0,"ago_ns":13922960},{"event":"struct-freed","cpu":0,"ago_ns":6981559}],"recovered":true}"#;

    #[test]
    fn reads_the_use_after_free_pair() {
        let e = parse(&format!(
            "# ok: x\n{UAF_ARMED}\nBUG: KFENCE: ...\n{UAF_HIT}\nok 1 life.uaf\n"
        ));
        assert_eq!(e.uaf_armed.len(), 1);
        assert_eq!(
            (e.uaf_armed[0].addr, e.uaf_armed[0].line),
            (0xffffc9000006d010, 1)
        );
        let h = &e.uaf_hits[0];
        assert_eq!((h.owner, h.line, h.history.len()), (6, 3, 6));
        assert_eq!(h.history[5].event, "struct-freed");
        assert_eq!(e.uaf_hits_of("life.uaf").count(), 1);
        let cut = &UAF_HIT[..UAF_HIT.len() - 40];
        assert_eq!(parse(cut).unreadable_of("life.uaf").count(), 1);
    }

    #[test]
    fn reads_the_three_lines_anywhere_in_a_log() {
        let log = format!(
            "KTAP version 1\n1..1\n{ALLOC}\r\nBUG: ...\ngarbage from cpu 1{HIT}\n{CORRUPTION}\n# guard hits suppressed: 999\nok 1 stack.recursion\n"
        );
        let e = parse(&log);
        assert_eq!(e.allocs.len(), 1);
        assert_eq!(e.allocs[0].lo, 0xffffc9000001f000);
        assert_eq!(e.allocs[0].line, 2);
        assert_eq!(e.hits.len(), 1);
        let h = &e.hits[0];
        assert_eq!(
            (h.fault_addr, h.depth, h.recovered),
            (0xffffc9000001ef48, Some(53), true)
        );
        assert_eq!(h.backtrace.len(), 3);
        assert_eq!(e.corruptions[0].found, 0xa5a5a5a5a5a5a5a5);
        assert!(e.unreadable.is_empty());
        assert_eq!(e.hits_of("stack.recursion").count(), 1);
        assert_eq!(e.hits_of("stack.other").count(), 0);
        assert_eq!(suppressed(log.lines()), 999);
    }

    #[test]
    fn garbled_lines_are_kept_not_dropped() {
        let cut = &HIT[..HIT.len() - 30];
        let null_depth = HIT.replace("\"depth\":53", "\"depth\":null");
        let bad_hex = HIT.replace("\"rip\":\"0xffffffff8002435a\"", "\"rip\":\"ffff\"");
        let e = parse(&format!("{cut}\n{null_depth}\n{bad_hex}\n"));
        assert_eq!(e.hits.len(), 1);
        assert_eq!(e.hits[0].depth, None);
        assert_eq!(e.unreadable.len(), 2);
        assert_eq!(e.unreadable_of("stack.recursion").count(), 2);
        assert_eq!(e.unreadable_of("stack.irq").count(), 0);
    }
}
