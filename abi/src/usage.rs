//! How deep every task's stack was ever used, and the tasks that came
//! close to overflowing it without doing so: what Linux's
//! `CONFIG_DEBUG_STACK_USAGE` tells in one line at exit ("greatest stack
//! depth: N bytes left"), with the call chain that went deepest.
//!
//! `STACK-USAGE` (`StackUsage`): at the end of each scenario, every task
//! that exited during it (killed ones too) and how many bytes of its stack
//! it used, ids ascending, in runs: `[first task id, tasks, bytes used]`
//! for tasks of consecutive ids that used the same, at most `USAGE_CHUNK`
//! runs a record. "Used" is the high-water mark: bytes from the top of the
//! stack to the deepest word ever written (stacks start zeroed). Runs, not
//! a pair per task: the tasks of a loop mostly use the same few figures
//! (`core.leak`'s 31 536 tasks, 10 of them), and a pair each was 430 KB of
//! serial output, a second of `core.leak`'s time under TCG; runs are 15 KB.
//!
//! `NEAR-MISS` (`NearMiss`): at the exit of a task that was not killed
//! and used more than the configured share of its stack (`cmdline::
//! STACK_NEAR_MISS`, default `NEAR_MISS_DEFAULT` %): the stack, the
//! figures, and the chain of frame records the deepest excursion left in
//! the part of the stack no longer in use, innermost first, each frame
//! named as the oops names a return address.
//!
//! `EXPECT`: what the usage scenarios' records must show.

use crate::guard::Frame;
use crate::record::{Hex, Record};
use serde::{Deserialize, Serialize};

/// Runs one `STACK-USAGE` record carries (24 bytes each on the guest's
/// stack while it is written, about 20 in the line).
pub const USAGE_CHUNK: usize = 128;

/// Frames a `NEAR-MISS` keeps of the deepest chain, runs folded.
pub const MAX_CHAIN: usize = 16;

/// The share of its stack, in percent, above which a task that exits is a
/// near miss, unless the command line says otherwise.
pub const NEAR_MISS_DEFAULT: u64 = 90;

/// One chunk of a scenario's exited tasks and how deep each used its stack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackUsage<'a> {
    pub scenario: &'a str,
    /// The task stacks' size, bytes (set once, at boot).
    pub stack_size: u64,
    /// Tasks the scenario saw exit, in all its records.
    pub total: u64,
    /// Tasks in the records before this one.
    pub from: u64,
    /// `[first task id, tasks, bytes used]`: tasks `first..first + tasks`
    /// each used that many bytes; ascending, never overlapping.
    pub runs: heapless::Vec<[u64; 3], USAGE_CHUNK>,
    /// Exits the guest had no room to record (its heap was exhausted).
    pub dropped: u64,
}

impl StackUsage<'_> {
    /// Every task of the record with its figure, `(task id, bytes used)`.
    pub fn tasks(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.runs.iter().flat_map(|&[first, n, used]| {
            (first..first.saturating_add(n)).map(move |id| (id, used))
        })
    }

    /// How many tasks the record's runs hold.
    pub fn count(&self) -> u64 {
        self.runs.iter().map(|r| r[1]).sum()
    }
}

impl Record for StackUsage<'_> {
    const PREFIX: &'static str = "STACK-USAGE ";
    fn scenario(&self) -> &str {
        self.scenario
    }
}

/// One frame of a near miss's deepest chain: a frame record, or a run of
/// records with one return address (a recursion), folded as the oops
/// folds it (`frame.repeat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainFrame<'a> {
    /// Where the record lies in the stack (the frame's rbp then); of a
    /// run, its innermost record's.
    pub at: Hex,
    /// Its return address, named by the call as a backtrace names it, and
    /// how many records in a row return there.
    #[serde(borrow)]
    pub frame: Frame<'a>,
}

/// A task that used more than the threshold of its stack and exited
/// normally.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NearMiss<'a> {
    pub scenario: &'a str,
    pub task_id: u64,
    pub task_name: &'a str,
    pub cpu: u32,
    /// The stack, `[lo, hi)`.
    pub lo: Hex,
    pub hi: Hex,
    /// Bytes from `hi` to the deepest word ever written.
    pub used: u64,
    /// The share of the stack (percent) a task must exceed to be reported.
    pub threshold_percent: u64,
    /// The chain the deepest excursion left, innermost first.
    #[serde(borrow)]
    pub chain: heapless::Vec<ChainFrame<'a>, MAX_CHAIN>,
    /// The chain went on past what the guest walks or keeps.
    pub truncated: bool,
}

impl NearMiss<'_> {
    /// The stack's size in bytes.
    pub fn size(&self) -> u64 {
        self.hi.get().saturating_sub(self.lo.get())
    }
}

impl Record for NearMiss<'_> {
    const PREFIX: &'static str = "NEAR-MISS ";
    fn scenario(&self) -> &str {
        self.scenario
    }
}

/// Whether `used` bytes of a `size`-byte stack are more than `percent` %
/// of it: the one rule the guest reports by and the runner judges by.
pub const fn is_near_miss(used: u64, size: u64, percent: u64) -> bool {
    used as u128 * 100 > size as u128 * percent as u128
}

/// Whether a usage scenario's task must be told as a near miss.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NearMissExpect {
    /// Exactly one `NEAR-MISS` for the task, its deepest chain's innermost
    /// return address in `function` (a substring of the name the ELF gives).
    Reported { function: &'static str },
    /// None for the task.
    NotReported,
}

/// What a usage scenario's records must show about the task it announces
/// (its `STACK-ALLOC`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsageExpect {
    pub scenario: &'static str,
    pub near_miss: NearMissExpect,
    /// The share of its stack (percent, inclusive) the task's
    /// `STACK-USAGE` figure must lie in, so that "not reported" is not
    /// said of a task that never went deep.
    pub used_percent: (u64, u64),
}

/// The usage scenarios, calibrated for the default threshold (any from 61
/// to 94 % gives the same verdicts).
pub const EXPECT: &[UsageExpect] = &[
    UsageExpect {
        scenario: "stack.near_miss",
        near_miss: NearMissExpect::Reported {
            function: "near_miss_recurse",
        },
        used_percent: (91, 99),
    },
    UsageExpect {
        scenario: "stack.half_used",
        near_miss: NearMissExpect::NotReported,
        used_percent: (40, 60),
    },
];

/// The expectation for `scenario`, if it is a usage scenario.
pub fn expect(scenario: &str) -> Option<&'static UsageExpect> {
    EXPECT.iter().find(|e| e.scenario == scenario)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::Sym;
    use crate::record::tests::round_trip;
    extern crate std;

    fn near_miss(frames: usize) -> NearMiss<'static> {
        let mut chain = heapless::Vec::new();
        for i in 0..frames {
            chain
                .push(ChainFrame {
                    at: Hex(0xffffc90000025100 + 0x90 * i as u64),
                    frame: Frame {
                        addr: Hex(0xffffffff8002c071),
                        sym: (i % 2 == 0).then_some(Sym {
                            name: "guest::scenarios::usage::near_miss_recurse",
                            link: Some(
                                "_ZN5guest9scenarios5usage17near_miss_recurse17h0123456789abcdefE",
                            ),
                            off: Hex(0x71),
                            size: Hex(0xc0),
                        }),
                        trap: None,
                        repeat: if i == 0 { 70 } else { 1 },
                        size: None,
                    },
                })
                .unwrap();
        }
        NearMiss {
            scenario: "stack.near_miss",
            task_id: 7,
            task_name: "near-miss",
            cpu: 0,
            lo: Hex(0xffffc90000025000),
            hi: Hex(0xffffc90000029000),
            used: 15_560,
            threshold_percent: 90,
            chain,
            truncated: frames == MAX_CHAIN,
        }
    }

    #[test]
    fn the_records_round_trip_and_fit_the_guests_buffer() {
        let mut buf = [0u8; crate::record::BUFFER];
        for frames in [0, 1, MAX_CHAIN] {
            round_trip(&near_miss(frames), &mut buf);
        }
        let mut runs = heapless::Vec::new();
        for i in 0..USAGE_CHUNK as u64 {
            runs.push([1_000_000 + 1_000 * i, 999, 16_384 - i]).unwrap();
        }
        let usage = StackUsage {
            scenario: "core.leak",
            stack_size: 16_384,
            total: 1_000_000,
            from: 31_536,
            runs,
            dropped: 0,
        };
        let line = round_trip(&usage, &mut buf);
        assert!(line.contains("\"runs\":[[1000000,999,16384],[1001000,999,16383],"));
        assert!(line.len() < crate::record::BUFFER / 4, "{}", line.len());
        assert_eq!(usage.count(), 999 * USAGE_CHUNK as u64);
        let tasks: std::vec::Vec<(u64, u64)> = usage.tasks().take(1001).collect();
        assert_eq!(tasks[998], (1_000_998, 16_384));
        assert_eq!(tasks[999], (1_001_000, 16_383));
        let empty = StackUsage {
            runs: heapless::Vec::new(),
            total: 0,
            from: 0,
            ..usage
        };
        round_trip(&empty, &mut buf);
        assert_eq!(empty.tasks().count(), 0);
    }

    #[test]
    fn the_threshold_is_strictly_more_than_the_share() {
        assert!(!is_near_miss(14_745, 16_384, 90));
        assert!(is_near_miss(14_746, 16_384, 90));
        assert!(!is_near_miss(16_384, 16_384, 100));
        assert!(is_near_miss(1, 16_384, 0));
        assert!(!is_near_miss(0, 0, 0));
        assert!(is_near_miss(u64::MAX, u64::MAX, 99));
    }

    #[test]
    fn every_usage_scenario_is_in_the_catalog_and_its_range_is_sane() {
        for e in EXPECT {
            assert!(
                crate::scenario::find(e.scenario).is_some(),
                "{}",
                e.scenario
            );
            let (lo, hi) = e.used_percent;
            assert!(lo <= hi && hi <= 100, "{}", e.scenario);
            let reported = matches!(e.near_miss, NearMissExpect::Reported { .. });
            // A figure in range is on the expected side of the default.
            assert_eq!(reported, lo > NEAR_MISS_DEFAULT, "{}", e.scenario);
            assert_eq!(reported, hi > NEAR_MISS_DEFAULT, "{}", e.scenario);
        }
        assert!(expect("stack.recursion").is_none());
    }
}
