//! The records the guest prints about stack faults, and what each stack
//! scenario is expected to show. The runner checks the guest's claims
//! against the ground truth the guest announces before it overflows.
//!
//! `STACK-ALLOC` (`StackAlloc`): before overflowing, a scenario names the
//! stack it is about to overflow (bounds, guards, CPU, task, frame size).
//! `GUARD-HIT` (`GuardHit`): the fault handler's report, every fact its
//! human oops states (`crate::oops` has the lines themselves).
//! `STACK-CORRUPTION` (`StackCorruption`): damage found after the fact,
//! where no hardware caught anything (a stack without guard pages).
//! `CPU-MAP` (`CpuMap`): which LAPIC each CPU index belongs to, as the boot
//! loader listed them, so the LAPIC id the hardware reports at a fault can
//! witness the CPU a report names.

use crate::kinds::{Context, Evidence, HitKind, ObjectKind, StackKind, Via};
use crate::record::{Hex, Record};
use core::fmt;
use serde::{Deserialize, Serialize};

/// Frames a backtrace keeps; deeper chains are cut (`truncated`).
pub const MAX_FRAMES: usize = 64;

/// The guest's data symbol holding two code addresses in `irq_common`:
/// where its trap frame is complete, and where its call of the exit path
/// (the preemption point) returns. A frame returning there is an entry
/// frame whose handler has returned: code above it runs in the
/// interrupted task's context, which the runner's context check must know.
pub const IRQ_COMMON_FRAMED: &str = "irq_common_framed";

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
    /// The LAPIC id read from the hardware as the announcement was made: a
    /// witness for `cpu` that does not come from the per-CPU data.
    pub lapic_id: u32,
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
    /// The demangled name, as a person reads it (`guest::a::b`).
    pub name: &'a str,
    /// The name as the ELF's symbol table spells it (`nm`: `_ZN5guest1a1b17h…E`),
    /// when that differs from `name`: what tools that look symbols up by
    /// name (Linux's `decode_stacktrace.sh`) need.
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    pub link: Option<&'a str>,
    /// Bytes past the symbol's start.
    pub off: Hex,
    /// The symbol's size (0: a label without one).
    pub size: Hex,
}

impl fmt::Display for Sym<'_> {
    /// `name+0xoff/0xsize`, as Linux prints a symbol (no `/size` for a
    /// label that has none); a mangled name goes last, `name
    /// link+0xoff/0xsize`, as the one word a tool reading the line takes
    /// for the symbol (the demangled one may have spaces).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(link) = self.link {
            write!(f, "{} {link}", self.name)?;
        } else {
            f.write_str(self.name)?;
        }
        write!(f, "+{:#x}", self.off.get())?;
        if self.size.get() != 0 {
            write!(f, "/{:#x}", self.size.get())?;
        }
        Ok(())
    }
}

impl<'a> Sym<'a> {
    /// The inverse of `Display`.
    pub fn parse(s: &'a str) -> Option<Sym<'a>> {
        let (name, rest) = s.rsplit_once("+0x")?;
        let (off, size) = match rest.split_once("/0x") {
            Some((off, size)) => (off, Some(size)),
            None => (rest, None),
        };
        let hex = |t: &str| {
            (!t.is_empty() && t.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| u64::from_str_radix(t, 16).ok())
                .flatten()
        };
        let size = match size {
            Some(t) => hex(t).filter(|&s| s != 0)?,
            None => 0,
        };
        let (name, link) = match name.rsplit_once(' ') {
            Some((name, link)) if is_link_name(link) => (name, Some(link)),
            _ => (name, None),
        };
        (!name.is_empty()).then_some(Sym {
            name,
            link,
            off: Hex(hex(off)?),
            size: Hex(size),
        })
    }
}

/// Whether `s` is a mangled Rust name (legacy `_ZN…E`, with LLVM's
/// `.llvm.N` suffix when it has one, or v0 `_R…`): one word of identifier
/// characters with the lengths' digits in it, which no demangled path's
/// last word is.
pub fn is_link_name(s: &str) -> bool {
    let mangled = s.starts_with("_ZN") || s.starts_with("_R");
    mangled
        && s.bytes().any(|b| b.is_ascii_digit())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'$'))
}

/// One frame of a backtrace, with the guest's name for it: a return
/// address, or (`trap`) the address an exception interrupted, found in the
/// trap frame the walk crossed. A recursion's run of one return address is
/// one `Frame` with `repeat` > 1, as the oops folds it into one line and
/// a count (` ... the frame above, 53 times in a row`): the same facts,
/// without 53 copies of one name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame<'a> {
    pub addr: Hex,
    /// `None`: the guest's table has no symbol for it.
    #[serde(borrow)]
    pub sym: Option<Sym<'a>>,
    /// The vector of the exception that interrupted `addr` (not a return
    /// address: the instruction itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trap: Option<u8>,
    /// How many times this frame repeats in a row (never 0; a trap frame
    /// is always 1).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub repeat: u32,
    /// The bytes of stack the function `addr` returns into occupies: from
    /// the frame-pointer chain, its saved rbp minus the one below it (its
    /// callee's), so its static frame from its CFA down to its rsp at the
    /// call. `None` where the chain does not show it: an entry frame, an
    /// interrupted instruction, the outermost frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u32>,
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

/// Every frame of a folded backtrace, each once: `(addr, trap)`.
pub fn unfold<'f>(frames: &'f [Frame<'_>]) -> impl Iterator<Item = (u64, Option<u8>)> + 'f {
    frames
        .iter()
        .flat_map(|f| core::iter::repeat_n((f.addr.get(), f.trap), f.repeat as usize))
}

/// The interrupted context's registers, as the oops prints them (RIP and
/// RSP have fields of their own in `GuardHit`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Regs {
    pub rax: Hex,
    pub rbx: Hex,
    pub rcx: Hex,
    pub rdx: Hex,
    pub rsi: Hex,
    pub rdi: Hex,
    pub rbp: Hex,
    pub r8: Hex,
    pub r9: Hex,
    pub r10: Hex,
    pub r11: Hex,
    pub r12: Hex,
    pub r13: Hex,
    pub r14: Hex,
    pub r15: Hex,
    pub cs: Hex,
    pub ss: Hex,
    pub rflags: Hex,
}

/// Who a vmalloc range belongs to, as the guest's ownership registry says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AreaOwner<'a> {
    /// A stack; `id` is the task for task stacks, the CPU for per-CPU ones.
    Stack { kind: StackKind, id: u64 },
    /// Anything else, by its user's name.
    Named(&'a str),
    /// Freed, waiting for the batched TLB shootdown.
    LazyFree,
    /// A debug-placed object, and its owner's id.
    Object { what: ObjectKind, id: u64 },
    /// A debug-placed object after its free (quarantined).
    Freed { what: ObjectKind, id: u64 },
}

/// A vmalloc allocation a fault address lies in or guards: the mapped
/// range `[lo, hi)` and its owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Area<'a> {
    pub lo: Hex,
    pub hi: Hex,
    #[serde(borrow)]
    pub owner: AreaOwner<'a>,
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
    /// The LAPIC id read from the hardware in the fault handler: a witness
    /// for `cpu`, which comes from the per-CPU data.
    pub lapic_id: u32,
    pub rip: Hex,
    #[serde(borrow)]
    pub rip_sym: Option<Sym<'a>>,
    pub rsp: Hex,
    pub regs: Regs,
    pub error_code: Hex,
    pub cr2: Hex,
    pub cr3: Hex,
    /// For a fault in no guard of the faulting stack: the allocation the
    /// address lies in or guards, if any.
    #[serde(borrow)]
    pub area: Option<Area<'a>>,
    /// The frames, innermost first, runs folded as the oops folds them
    /// (`unfold` gives every frame).
    #[serde(borrow)]
    pub backtrace: heapless::Vec<Frame<'a>, MAX_FRAMES>,
    /// The chain went on past `MAX_FRAMES`.
    pub truncated: bool,
    /// The recursion depth a crash point reached (`None`: no recursion).
    pub depth: Option<u64>,
    /// The stack pointer of the frame that recorded `depth`: the runner
    /// finds that frame in its own unwind and counts the recursion's frames
    /// from it outward, which must be exactly `depth + 1`.
    pub depth_sp: Option<Hex>,
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

/// The CPUs of this boot: `lapic_ids[i]` is the LAPIC id of CPU index `i`,
/// as the boot loader's MP response listed it (the index the guest gave
/// that CPU when it brought it up).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuMap {
    pub lapic_ids: heapless::Vec<u32, MAX_CPUS>,
}

/// CPUs a `CpuMap` can list (the guest's own bound).
pub const MAX_CPUS: usize = 64;

impl Record for CpuMap {
    const PREFIX: &'static str = "CPU-MAP ";
    fn scenario(&self) -> &str {
        // A boot fact, no scenario's.
        "boot"
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
                link: (i % 3 == 0)
                    .then_some("_ZN5guest9scenarios5stack13stack_recurse17h43d4084c97e73a78E"),
                off: Hex(0x89),
                size: Hex(0xd0),
            });
            backtrace
                .push(Frame {
                    addr: Hex(0xffffffff8002b679 + i as u64),
                    sym,
                    trap: (i == 4).then_some(14),
                    repeat: if i == 0 { 53 } else { 1 },
                    size: (i != 4).then_some(304),
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
            lapic_id: 0,
            task_id: 3,
            task_name: "recurse",
            rip: Hex(0xffffffff8002b61a),
            rip_sym: Some(Sym {
                name: "guest::scenarios::stack::stack_recurse",
                link: Some("_ZN5guest9scenarios5stack13stack_recurse17h43d4084c97e73a78E"),
                off: Hex(0x2a),
                size: Hex(0xd0),
            }),
            rsp: Hex(0xffffc9000001ef40),
            regs: Regs {
                rax: Hex(0xffffc800000004c0),
                rbx: Hex(0x35),
                rbp: Hex(0xffffc9000001f070),
                r15: Hex(u64::MAX),
                cs: Hex(8),
                ss: Hex(0x10),
                rflags: Hex(0x286),
                ..Regs::default()
            },
            error_code: Hex(0),
            cr2: Hex(0xffffc9000001ef38),
            cr3: Hex(0xf6ab000),
            area: None,
            backtrace,
            truncated: frames == MAX_FRAMES,
            depth: Some(52),
            depth_sp: Some(Hex(0xffffc9000001f060)),
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
        odd.depth_sp = None;
        odd.kind = HitKind::NotGuard;
        for owner in [
            AreaOwner::Stack {
                kind: StackKind::Task,
                id: 2,
            },
            AreaOwner::Named("heap"),
            AreaOwner::LazyFree,
            AreaOwner::Object {
                what: ObjectKind::TaskStruct,
                id: 6,
            },
            AreaOwner::Freed {
                what: ObjectKind::TaskStruct,
                id: 6,
            },
        ] {
            odd.area = Some(Area {
                lo: Hex(0xffffc90000019000),
                hi: Hex(0xffffc9000001d000),
                owner,
            });
            round_trip(&odd, &mut buf);
        }
        round_trip(
            &CpuMap {
                lapic_ids: heapless::Vec::from_slice(&[0, 1, 2, 3]).unwrap(),
            },
            &mut buf,
        );
        round_trip(
            &StackAlloc {
                scenario: "stack.recursion",
                stack_kind: StackKind::Task,
                lo: Hex(0xffffc9000001f000),
                hi: Hex(0xffffc90000023000),
                guard_below: 1,
                guard_above: 1,
                cpu: 3,
                lapic_id: 3,
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
        // The guest writes records through a `record::BUFFER`; the longest
        // GUARD-HIT (every frame named, every name long, both spellings)
        // must fit with room to spare.
        let mut buf = [0u8; crate::record::BUFFER];
        let mut long = hit(MAX_FRAMES);
        let name = "<guest::console::Locked as core::fmt::Write>::write_str::{{closure}}";
        let link = "_ZN78_$LT$guest..console..Locked$u20$as$u20$core..fmt..Write$GT$9write_str28_$u7b$$u7b$closure$u7d$$u7d$17h0123456789abcdefE";
        for f in long.backtrace.iter_mut() {
            f.sym = Some(Sym {
                name,
                link: Some(link),
                off: Hex(0xffff),
                size: Hex(0xffff),
            });
        }
        let line = round_trip(&long, &mut buf);
        assert!(
            line.len() < crate::record::BUFFER * 3 / 4,
            "{} bytes",
            line.len()
        );
    }

    #[test]
    fn symbols_read_back_as_linux_prints_them() {
        let cases = [
            (
                "stack_recurse+0x89/0xd0",
                Some(("stack_recurse", 0x89, 0xd0)),
            ),
            ("trap_common+0x20", Some(("trap_common", 0x20, 0))),
            ("<a as b>::c+0x0/0x10", Some(("<a as b>::c", 0, 0x10))),
            ("x+0x1+0x2", Some(("x+0x1", 2, 0))),
            // A mangled last word is the ELF's spelling; any other is part
            // of the demangled name.
            (
                "a::b _ZN1a1b17h0123456789abcdefE+0x1/0x2",
                Some(("a::b", 1, 2)),
            ),
            ("a::b _RNvCs1a_1b+0x1/0x2", Some(("a::b", 1, 2))),
            (
                "a::b _ZN1a1b17h0123456789abcdefE.llvm.6126408893584338086+0x2e/0x1c2",
                Some(("a::b", 0x2e, 0x1c2)),
            ),
            ("<a as b> c+0x1/0x2", Some(("<a as b> c", 1, 2))),
            ("a _ZNE+0x1/0x2", Some(("a _ZNE", 1, 2))),
            ("?", None),
            ("+0x1", None),
            ("x+0x", None),
            ("x+0x1/0x", None),
            ("x+0x1/0x0", None),
            ("x+0xg", None),
        ];
        for (text, want) in cases {
            let got = Sym::parse(text).map(|s| (s.name, s.off.get(), s.size.get()));
            assert_eq!(got, want, "{text}");
            let link = Sym::parse(text).and_then(|s| s.link);
            assert_eq!(
                link.is_some(),
                text.contains(" _ZN1") || text.contains(" _R"),
                "{text}"
            );
            if let Some(s) = Sym::parse(text) {
                assert_eq!(std::format!("{s}"), text);
            }
        }
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
