//! The records the guest prints about stack faults, and what each stack
//! scenario is expected to show. The runner checks the guest's claims
//! against the ground truth the guest announces before it overflows.
//!
//! `STACK-ALLOC` (`StackAlloc`): before overflowing, a scenario names the
//! stack it is about to overflow (bounds, guards, CPU, task, frame size).
//! `GUARD-HIT` (`GuardHit`): the fault handler's report, every fact its
//! human oops states. `STACK-CORRUPTION` (`StackCorruption`): damage found
//! after the fact, where no hardware caught anything (a stack without guard
//! pages).

use crate::kinds::{Context, Evidence, HitKind, StackKind, Via};
use crate::record::{Hex, Record};
use serde::{Deserialize, Serialize};

/// Frames a backtrace keeps; deeper chains are cut (`truncated`).
pub const MAX_FRAMES: usize = 64;

/// A scenario's announcement of the stack it is about to overflow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackAlloc<'a> {
    pub scenario: &'a str,
    pub stack_kind: StackKind,
    pub lo: Hex,
    pub hi: Hex,
    /// Guard pages below and above the stack.
    pub guard_below: u64,
    pub guard_above: u64,
    pub cpu: u32,
    pub task_id: u64,
    pub task_name: &'a str,
    /// The recursion's frame size, measured (0: no recursion).
    pub frame_bytes: u64,
}

impl Record for StackAlloc<'_> {
    const PREFIX: &'static str = "STACK-ALLOC ";
    fn scenario(&self) -> &str {
        self.scenario
    }
}

/// A code address as the guest's own symbol table names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sym<'a> {
    pub name: &'a str,
    /// Bytes past the symbol's start.
    pub off: Hex,
}

/// One return address of a backtrace, with the guest's name for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame<'a> {
    pub addr: Hex,
    /// `None`: the guest's table has no symbol at or below it.
    #[serde(borrow)]
    pub sym: Option<Sym<'a>>,
}

/// The fault handler's report of one stack fault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardHit<'a> {
    pub scenario: &'a str,
    /// The guest's claim: where the fault is relative to the faulting stack.
    pub kind: HitKind,
    /// `None`: the CPU was on no stack the guest allocated.
    pub stack_kind: Option<StackKind>,
    pub stack_lo: Hex,
    pub stack_hi: Hex,
    /// The guard page range the fault is in (both 0 for `not-guard`).
    pub guard_lo: Hex,
    pub guard_hi: Hex,
    /// How far past the stack the fault is ("overflow by N bytes below the
    /// stack"; for an underflow, counted from the top inclusive); 0 for
    /// `not-guard`.
    pub bytes: u64,
    /// The address the fault is judged by.
    pub fault_addr: Hex,
    pub via: Via,
    pub cpu: u32,
    pub task_id: u64,
    pub task_name: &'a str,
    pub rip: Hex,
    #[serde(borrow)]
    pub rip_sym: Option<Sym<'a>>,
    pub rsp: Hex,
    pub error_code: Hex,
    pub cr2: Hex,
    /// Return addresses, innermost first (not collapsed: the oops folds a
    /// recursion into one line, the record keeps every frame).
    #[serde(borrow)]
    pub backtrace: heapless::Vec<Frame<'a>, MAX_FRAMES>,
    /// The chain went on past `MAX_FRAMES`.
    pub truncated: bool,
    /// The recursion depth a crash point reached (`None`: no recursion).
    pub depth: Option<u64>,
    pub context: Context,
    /// The task was killed and the machine goes on.
    pub recovered: bool,
    /// What decided the guard hit (`None` for `not-guard`): with `rsp`,
    /// `fault_addr` is the first push that could not be made, not CR2.
    pub evidence: Option<Evidence>,
}

impl Record for GuardHit<'_> {
    const PREFIX: &'static str = "GUARD-HIT ";
    fn scenario(&self) -> &str {
        self.scenario
    }
}

/// Damage no hardware caught, found afterwards.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackCorruption<'a> {
    pub scenario: &'a str,
    /// What was damaged (`thread_info flags`).
    pub what: &'a str,
    pub expected: Hex,
    pub found: Hex,
    pub lo: Hex,
    pub hi: Hex,
    pub task_id: u64,
}

impl Record for StackCorruption<'_> {
    const PREFIX: &'static str = "STACK-CORRUPTION ";
    fn scenario(&self) -> &str {
        self.scenario
    }
}

/// How a stack scenario's fault must come out for it to count as behaving.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Caught in the guard page below the stack, with good diagnostics.
    Overflow,
    /// Caught in the guard page above the stack.
    Underflow,
    /// Nothing caught it (no guard, or the machine died first).
    NotCaught,
    /// A fault, but not in the announced stack's guard: the access jumped
    /// over the guard (a frame without stack probes).
    GuardJumped,
}

impl Verdict {
    pub const fn as_str(self) -> &'static str {
        match self {
            Verdict::Overflow => "overflow",
            Verdict::Underflow => "underflow",
            Verdict::NotCaught => "not-caught",
            Verdict::GuardJumped => "guard-jumped",
        }
    }

    /// The verdict a correct report of this kind asks for.
    pub const fn of_claim(kind: HitKind) -> Verdict {
        match kind {
            HitKind::Overflow => Verdict::Overflow,
            HitKind::Underflow => Verdict::Underflow,
            HitKind::NotGuard => Verdict::GuardJumped,
        }
    }
}

/// What the runner checks for one stack scenario.
#[derive(Clone, Copy, Debug)]
pub struct GuardExpect {
    pub verdict: Verdict,
    /// The kind of stack that overflows.
    pub stack_kind: StackKind,
    /// A function name (substring) the backtrace must contain.
    pub backtrace_fn: Option<&'static str>,
    /// How many guard hits one run produces (`stack.all_cpus`: one per CPU,
    /// given as 0 = "one per CPU").
    pub hits: u32,
    /// Recursion: the reported depth must fit the stack and frame size.
    pub recursion: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::round_trip;

    fn hit(frames: usize) -> GuardHit<'static> {
        let mut backtrace = heapless::Vec::new();
        for i in 0..frames {
            let sym = (i % 3 != 2).then_some(Sym {
                name: "guest::scenarios::stack::stack_recurse",
                off: Hex(0x89),
            });
            backtrace
                .push(Frame {
                    addr: Hex(0xffffffff8002b679 + i as u64),
                    sym,
                })
                .unwrap();
        }
        GuardHit {
            scenario: "stack.recursion",
            kind: HitKind::Overflow,
            stack_kind: Some(StackKind::Task),
            stack_lo: Hex(0xffffc9000001f000),
            stack_hi: Hex(0xffffc90000023000),
            guard_lo: Hex(0xffffc9000001e000),
            guard_hi: Hex(0xffffc9000001f000),
            bytes: 200,
            fault_addr: Hex(0xffffc9000001ef38),
            via: Via::DoubleFault,
            cpu: 0,
            task_id: 3,
            task_name: "recurse",
            rip: Hex(0xffffffff8002b61a),
            rip_sym: Some(Sym {
                name: "guest::scenarios::stack::stack_recurse",
                off: Hex(0x2a),
            }),
            rsp: Hex(0xffffc9000001ef40),
            error_code: Hex(0),
            cr2: Hex(0xffffc9000001ef38),
            backtrace,
            truncated: frames == MAX_FRAMES,
            depth: Some(52),
            context: Context::Task,
            recovered: true,
            evidence: Some(Evidence::Both),
        }
    }

    #[test]
    fn every_stack_record_round_trips() {
        let mut buf = [0u8; 16384];
        for frames in [0, 1, 5, MAX_FRAMES] {
            round_trip(&hit(frames), &mut buf);
        }
        let mut odd = hit(3);
        odd.stack_kind = None;
        odd.rip_sym = None;
        odd.depth = None;
        odd.kind = HitKind::NotGuard;
        round_trip(&odd, &mut buf);
        round_trip(
            &StackAlloc {
                scenario: "stack.recursion",
                stack_kind: StackKind::Task,
                lo: Hex(0xffffc9000001f000),
                hi: Hex(0xffffc90000023000),
                guard_below: 1,
                guard_above: 1,
                cpu: 3,
                task_id: 3,
                task_name: "recurse",
                frame_bytes: 304,
            },
            &mut buf,
        );
        round_trip(
            &StackCorruption {
                scenario: "stack.direct_legacy",
                what: "thread_info flags",
                expected: Hex(0),
                found: Hex(0xa5a5a5a5a5a5a5a5),
                lo: Hex(0xffff8000004b0000),
                hi: Hex(0xffff8000004b4000),
                task_id: 8,
            },
            &mut buf,
        );
    }

    #[test]
    fn a_full_backtrace_fits_the_guests_buffer() {
        // The guest writes records through a 16 KiB buffer; the longest
        // GUARD-HIT (every frame named) must fit with room to spare.
        let mut buf = [0u8; 16384];
        let line = round_trip(&hit(MAX_FRAMES), &mut buf);
        assert!(line.len() < 8192, "{} bytes", line.len());
    }

    #[test]
    fn more_frames_than_the_guest_keeps_do_not_read() {
        let mut buf = [0u8; 16384];
        let line = crate::record::encode(&hit(MAX_FRAMES), &mut buf).unwrap();
        let first = line.find("{\"addr\"").unwrap();
        let end = line[first..].find('}').unwrap() + 2 + first;
        let extra = &line[first..end];
        let json = line[GuardHit::PREFIX.len()..].replacen(
            "\"backtrace\":[",
            &std::format!("\"backtrace\":[{extra},"),
            1,
        );
        assert!(serde_json::from_str::<GuardHit>(&json).is_err());
    }

    extern crate std;
}
