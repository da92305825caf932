//! The human oops, line by line.
//!
//! Every line of a stack-fault report has a type here: the guest prints it
//! through `Display` (no heap, `core::fmt`), and the runner reads it back
//! with `Line::parse`, then holds each value against the `GUARD-HIT`
//! record and its own ground truth. One definition for both sides, so what
//! a person reads cannot drift from what is checked. The shapes follow
//! Linux's oops (`BUG: TASK stack guard page was hit at ...`, `RIP:
//! 0008:...`, ` [<...>] func+0x1d/0x30`) where Linux has a line.

use crate::guard::{Area, AreaOwner, Frame, GuardHit, Regs, Sym};
use crate::kinds::{Context, Evidence, HitKind, ObjectKind, StackKind, Via};
use core::fmt;

const PAGE: u64 = 4096;

/// The inverse of `StackKind::linux_name_of`.
fn stack_from_name(name: &str) -> Option<Option<StackKind>> {
    if name == StackKind::linux_name_of(None) {
        return Some(None);
    }
    StackKind::ALL
        .iter()
        .find(|k| k.linux_name() == name)
        .map(|&k| Some(k))
}

/// An x86 exception vector as the SDM abbreviates it (`#PF`), or `IRQ n`.
pub struct Vector(pub u8);

const MNEMONICS: [&str; 32] = [
    "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "#CSO", "#TS", "#NP", "#SS",
    "#GP", "#PF", "#15", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "#22", "#23", "#24", "#25",
    "#26", "#27", "#HV", "#VC", "#SX", "#31",
];

impl fmt::Display for Vector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match MNEMONICS.get(self.0 as usize) {
            Some(m) => f.write_str(m),
            None => write!(f, "IRQ {}", self.0),
        }
    }
}

impl Vector {
    pub fn parse(s: &str) -> Option<u8> {
        if let Some(i) = MNEMONICS.iter().position(|&m| m == s) {
            return Some(i as u8);
        }
        let n: u8 = dec(s.strip_prefix("IRQ ")?)?;
        (n >= 32).then_some(n)
    }
}

/// The general-purpose registers, three to a line, in Linux's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegLine {
    RaxRbxRcx,
    RdxRsiRdi,
    RbpR08R09,
    R10R11R12,
    R13R14R15,
}

impl RegLine {
    pub const ALL: [RegLine; 5] = [
        RegLine::RaxRbxRcx,
        RegLine::RdxRsiRdi,
        RegLine::RbpR08R09,
        RegLine::R10R11R12,
        RegLine::R13R14R15,
    ];

    pub const fn names(self) -> [&'static str; 3] {
        match self {
            RegLine::RaxRbxRcx => ["RAX", "RBX", "RCX"],
            RegLine::RdxRsiRdi => ["RDX", "RSI", "RDI"],
            RegLine::RbpR08R09 => ["RBP", "R08", "R09"],
            RegLine::R10R11R12 => ["R10", "R11", "R12"],
            RegLine::R13R14R15 => ["R13", "R14", "R15"],
        }
    }

    /// This line's three values out of a record's registers.
    pub fn of(self, r: &crate::guard::Regs) -> [u64; 3] {
        let v = match self {
            RegLine::RaxRbxRcx => [r.rax, r.rbx, r.rcx],
            RegLine::RdxRsiRdi => [r.rdx, r.rsi, r.rdi],
            RegLine::RbpR08R09 => [r.rbp, r.r8, r.r9],
            RegLine::R10R11R12 => [r.r10, r.r11, r.r12],
            RegLine::R13R14R15 => [r.r13, r.r14, r.r15],
        };
        v.map(|h| h.get())
    }
}

/// One line of a stack-fault oops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// `BUG: TASK stack guard page was hit at ADDR (stack is LO..HI)`.
    GuardBug {
        stack: Option<StackKind>,
        addr: u64,
        lo: u64,
        hi: u64,
    },
    /// `BUG: unable to handle page fault for address: ADDR` (a stack fault
    /// that is in no guard of its stack).
    PageFaultBug { addr: u64 },
    /// `Oops: stack guard page: overflow by N bytes below the stack, on CPU
    /// c, task t 'comm'` (`kind` is overflow or underflow).
    GuardOops {
        kind: HitKind,
        bytes: u64,
        cpu: u32,
        task: u64,
        comm: &'a str,
    },
    /// `Oops: stack fault outside the guard pages of the TASK stack LO..HI
    /// (guard jumped?), on CPU c, task t 'comm'`.
    OutsideOops {
        stack: Option<StackKind>,
        lo: u64,
        hi: u64,
        cpu: u32,
        task: u64,
        comm: &'a str,
    },
    /// `  ADDR is in the guard page above the TASK stack of task 2 (LO..HI)`:
    /// whose the fault address is, when it is not this stack's.
    AreaNote { addr: u64, area: Area<'a> },
    /// `CPU: c APIC: a PID: p Comm: comm via #DF (IST stack) context task`.
    Cpu {
        cpu: u32,
        lapic: u32,
        pid: u64,
        comm: &'a str,
        via: Via,
        context: Context,
    },
    /// `RIP: 0008:ADDR sym+0xoff/0xsize` (or `?`); the symbol is the last
    /// word, as on a `Call Trace` line.
    Rip {
        cs: u64,
        rip: u64,
        sym: Option<Sym<'a>>,
    },
    /// `RSP: 0010:ADDR EFLAGS: 00000286`.
    Rsp { ss: u64, rsp: u64, rflags: u64 },
    /// `RAX: ... RBX: ... RCX: ...` and the four lines after it.
    Regs { line: RegLine, values: [u64; 3] },
    /// `CR2: ADDR CR3: ADDR error code: 0x0`.
    Cr { cr2: u64, cr3: u64, error_code: u64 },
    /// `Guard: LO..HI (n pages)`.
    Guard { lo: u64, hi: u64, pages: u64 },
    /// `Evidence: RSP ADDR (n bytes above the stack bottom) leaves no room
    /// for an exception frame; ...`: when the interrupted RSP decided a
    /// double fault (alone: CR2 was stale; or beside CR2). CR2 alone says
    /// nothing more than the `BUG:` line.
    Evidence {
        evidence: Evidence,
        rsp: u64,
        room: Room,
        /// The stale CR2 (`evidence` is `rsp` only).
        cr2: u64,
    },
    /// `Recursion depth: n`.
    Depth(u64),
    /// `Stack use: N frames x B bytes = T bytes, P % of the stack, in NAME`:
    /// the function whose frames on the Call Trace add up to the most
    /// (`top_consumer`), with its share of the faulting stack.
    StackUse {
        frames: u32,
        bytes: u32,
        total: u64,
        percent: u64,
        name: &'a str,
    },
    /// `Call Trace:`.
    CallTrace,
    /// ` [<ADDR>] sym+0xoff/0xsize`: one frame; `trap`: the address an
    /// exception interrupted, not a return address (` [<ADDR>] (interrupted
    /// by #PF) sym+...`). The symbol is the line's last word, as Linux's
    /// `decode_stacktrace.sh` reads it.
    Frame {
        addr: u64,
        sym: Option<Sym<'a>>,
        trap: Option<u8>,
        /// `NB ` after the address: the frame's bytes (`guard::Frame::size`).
        size: Option<u32>,
    },
    /// ` ... the frame above, N times in a row` (N >= 2): a recursion's run
    /// of one return address, folded. A line of its own, with no address
    /// and no `sym+0x../0x..`, so that tools reading frames pass it by.
    Repeat(u32),
    /// ` ... (more frames)`: the walk kept no more.
    More,
    /// `---[ end trace ]---`.
    End,
}

/// Where the interrupted RSP was, relative to the faulting stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Room {
    /// `n bytes above the stack bottom` (less than an exception frame).
    AboveBottom(u64),
    /// `n bytes below the stack bottom` (already past it).
    BelowBottom(u64),
    /// `n bytes above the stack top`.
    AboveTop(u64),
}

impl Room {
    pub fn of(rsp: u64, lo: u64, hi: u64) -> Room {
        if rsp < lo {
            Room::BelowBottom(lo - rsp)
        } else if rsp >= hi {
            Room::AboveTop(rsp - hi)
        } else {
            Room::AboveBottom(rsp - lo)
        }
    }
}

impl fmt::Display for Room {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Room::AboveBottom(n) => write!(f, "{n} bytes above the stack bottom"),
            Room::BelowBottom(n) => write!(f, "{n} bytes below the stack bottom"),
            Room::AboveTop(n) => write!(f, "{n} bytes above the stack top"),
        }
    }
}

impl Room {
    fn parse(s: &str) -> Option<Room> {
        let (n, place) = s.split_once(" bytes ")?;
        let n = dec(n)?;
        match place {
            "above the stack bottom" => Some(Room::AboveBottom(n)),
            "below the stack bottom" => Some(Room::BelowBottom(n)),
            "above the stack top" => Some(Room::AboveTop(n)),
            _ => None,
        }
    }
}

const NO_ROOM: &str = " leaves no room for an exception frame";
const STACK_USE: &str = "Stack use: ";
/// After a frame's byte count on its `Call Trace` line (`304B`).
const FRAME_BYTES: &str = "B";
const REPEAT: &str = " ... the frame above, ";
const IN_A_ROW: &str = " times in a row";

/// A symbol or `?`.
struct MaybeSym<'s, 'a>(&'s Option<Sym<'a>>);

impl fmt::Display for MaybeSym<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(s) => write!(f, "{s}"),
            None => f.write_str("?"),
        }
    }
}

fn parse_sym(s: &str) -> Option<Option<Sym<'_>>> {
    if s == "?" {
        Some(None)
    } else {
        Sym::parse(s).map(Some)
    }
}

impl fmt::Display for AreaOwner<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AreaOwner::Stack {
                kind: StackKind::Task,
                id,
            } => write!(f, "the TASK stack of task {id}"),
            AreaOwner::Stack { kind, id } => {
                write!(f, "the {} stack of CPU {id}", kind.linux_name())
            }
            AreaOwner::Named(name) => write!(f, "the vmalloc area '{name}'"),
            AreaOwner::LazyFree => f.write_str("a freed range awaiting its TLB flush"),
            AreaOwner::Object { what, id } => write!(f, "{what} {id}"),
            AreaOwner::Freed { what, id } => write!(f, "freed {what} {id}"),
        }
    }
}

impl<'a> AreaOwner<'a> {
    pub fn parse(s: &'a str) -> Option<AreaOwner<'a>> {
        if s == "a freed range awaiting its TLB flush" {
            return Some(AreaOwner::LazyFree);
        }
        if let Some(name) = s
            .strip_prefix("the vmalloc area '")
            .and_then(|r| r.strip_suffix('\''))
        {
            return Some(AreaOwner::Named(name));
        }
        if let Some(rest) = s.strip_prefix("the ") {
            let (kind, id) = rest.split_once(" stack of ")?;
            let kind = stack_from_name(kind)??;
            let id = match kind {
                StackKind::Task => id.strip_prefix("task ")?,
                _ => id.strip_prefix("CPU ")?,
            };
            return Some(AreaOwner::Stack { kind, id: dec(id)? });
        }
        let (freed, rest) = match s.strip_prefix("freed ") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (what, id) = rest.split_once(' ')?;
        let what = ObjectKind::from_name(what)?;
        let id = dec(id)?;
        Some(if freed {
            AreaOwner::Freed { what, id }
        } else {
            AreaOwner::Object { what, id }
        })
    }
}

/// Where `addr` is relative to an allocation's mapped range.
fn relation(addr: u64, area: &Area) -> &'static str {
    if addr < area.lo.get() {
        "in the guard page below"
    } else if addr >= area.hi.get() {
        "in the guard page above"
    } else {
        "inside"
    }
}

impl fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Line::GuardBug { stack, addr, lo, hi } => write!(
                f,
                "BUG: {} stack guard page was hit at {addr:016x} (stack is {lo:016x}..{hi:016x})",
                StackKind::linux_name_of(stack)
            ),
            Line::PageFaultBug { addr } => {
                write!(f, "BUG: unable to handle page fault for address: {addr:016x}")
            }
            Line::GuardOops {
                kind,
                bytes,
                cpu,
                task,
                comm,
            } => {
                let side = if kind == HitKind::Underflow {
                    "above"
                } else {
                    "below"
                };
                write!(
                    f,
                    "Oops: stack guard page: {kind} by {bytes} bytes {side} the stack, on CPU {cpu}, task {task} '{comm}'"
                )
            }
            Line::OutsideOops {
                stack,
                lo,
                hi,
                cpu,
                task,
                comm,
            } => write!(
                f,
                "Oops: stack fault outside the guard pages of the {} stack {lo:016x}..{hi:016x} (guard jumped?), on CPU {cpu}, task {task} '{comm}'",
                StackKind::linux_name_of(stack)
            ),
            Line::AreaNote { addr, area } => write!(
                f,
                "  {addr:016x} is {} {} ({:016x}..{:016x})",
                relation(addr, &area),
                area.owner,
                area.lo.get(),
                area.hi.get()
            ),
            Line::Cpu {
                cpu,
                lapic,
                pid,
                comm,
                via,
                context,
            } => write!(
                f,
                "CPU: {cpu} APIC: {lapic} PID: {pid} Comm: {comm} via {} context {context}",
                via.oops_name()
            ),
            Line::Rip { cs, rip, ref sym } => {
                write!(f, "RIP: {cs:04x}:{rip:016x} {}", MaybeSym(sym))
            }
            Line::Rsp { ss, rsp, rflags } => {
                write!(f, "RSP: {ss:04x}:{rsp:016x} EFLAGS: {rflags:08x}")
            }
            Line::Regs { line, values } => {
                let n = line.names();
                write!(
                    f,
                    "{}: {:016x} {}: {:016x} {}: {:016x}",
                    n[0], values[0], n[1], values[1], n[2], values[2]
                )
            }
            Line::Cr {
                cr2,
                cr3,
                error_code,
            } => write!(f, "CR2: {cr2:016x} CR3: {cr3:016x} error code: {error_code:#x}"),
            Line::Guard { lo, hi, pages } => write!(
                f,
                "Guard: {lo:016x}..{hi:016x} ({pages} page{})",
                if pages == 1 { "" } else { "s" }
            ),
            Line::Evidence {
                evidence: Evidence::Both,
                rsp,
                room,
                ..
            } => write!(
                f,
                "Evidence: CR2 in the guard, and RSP {rsp:016x} ({room}){NO_ROOM}"
            ),
            Line::Evidence {
                rsp, room, cr2, ..
            } => write!(
                f,
                "Evidence: RSP {rsp:016x} ({room}){NO_ROOM}; CR2 {cr2:016x} lies in no guard of this stack (stale)"
            ),
            Line::Depth(d) => write!(f, "Recursion depth: {d}"),
            Line::StackUse {
                frames,
                bytes,
                total,
                percent,
                name,
            } => write!(
                f,
                "{STACK_USE}{frames} frame{} x {bytes} bytes = {total} bytes, {percent} % of the stack, in {name}",
                if frames == 1 { "" } else { "s" }
            ),
            Line::CallTrace => f.write_str("Call Trace:"),
            Line::Frame {
                addr,
                ref sym,
                trap,
                size,
            } => {
                write!(f, " [<{addr:016x}>] ")?;
                if let Some(n) = size {
                    write!(f, "{n}{FRAME_BYTES} ")?;
                }
                if let Some(v) = trap {
                    write!(f, "(interrupted by {}) ", Vector(v))?;
                }
                write!(f, "{}", MaybeSym(sym))
            }
            Line::Repeat(n) => write!(f, "{REPEAT}{n}{IN_A_ROW}"),
            Line::More => f.write_str(" ... (more frames)"),
            Line::End => f.write_str("---[ end trace ]---"),
        }
    }
}

/// 16 hex digits exactly, as the oops prints addresses.
fn addr16(s: &str) -> Option<u64> {
    (s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u64::from_str_radix(s, 16).ok())
        .flatten()
}

/// `n` hex digits exactly (`0008`, `00000286`).
fn hex_n(s: &str, n: usize) -> Option<u64> {
    (s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u64::from_str_radix(s, 16).ok())
        .flatten()
}

/// A decimal number, no sign, no leading zeros.
fn dec<T: core::str::FromStr>(s: &str) -> Option<T> {
    let ok =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    ok.then(|| s.parse().ok()).flatten()
}

/// `LO..HI` as two 16-digit addresses.
fn range(s: &str) -> Option<(u64, u64)> {
    let (lo, hi) = s.split_once("..")?;
    Some((addr16(lo)?, addr16(hi)?))
}

/// `, on CPU c, task t 'comm'` at the end of an `Oops:` line.
fn cpu_task(s: &str) -> Option<(u32, u64, &str)> {
    let rest = s.strip_prefix(", on CPU ")?;
    let (cpu, rest) = rest.split_once(", task ")?;
    let (task, comm) = rest.split_once(" '")?;
    let comm = comm.strip_suffix('\'')?;
    Some((dec(cpu)?, dec(task)?, comm))
}

impl<'a> Line<'a> {
    /// The line `s` as one of the oops's lines, if it is one (trailing
    /// whitespace, such as a `\r`, is ignored).
    pub fn parse(s: &'a str) -> Option<Line<'a>> {
        let s = s.trim_end();
        if let Some(rest) = s.strip_prefix("BUG: ") {
            if let Some(addr) = rest.strip_prefix("unable to handle page fault for address: ") {
                return Some(Line::PageFaultBug {
                    addr: addr16(addr)?,
                });
            }
            let (stack, rest) = rest.split_once(" stack guard page was hit at ")?;
            let (addr, rest) = rest.split_once(" (stack is ")?;
            let (lo, hi) = range(rest.strip_suffix(')')?)?;
            return Some(Line::GuardBug {
                stack: stack_from_name(stack)?,
                addr: addr16(addr)?,
                lo,
                hi,
            });
        }
        if let Some(rest) = s.strip_prefix("Oops: stack guard page: ") {
            let (kind, rest) = rest.split_once(" by ")?;
            let kind = HitKind::from_name(kind).filter(|&k| k != HitKind::NotGuard)?;
            let (bytes, rest) = rest.split_once(" bytes ")?;
            let side = if kind == HitKind::Underflow {
                "above the stack"
            } else {
                "below the stack"
            };
            let (cpu, task, comm) = cpu_task(rest.strip_prefix(side)?)?;
            return Some(Line::GuardOops {
                kind,
                bytes: dec(bytes)?,
                cpu,
                task,
                comm,
            });
        }
        if let Some(rest) = s.strip_prefix("Oops: stack fault outside the guard pages of the ") {
            let (stack, rest) = rest.split_once(" stack ")?;
            let (r, rest) = rest.split_once(" (guard jumped?)")?;
            let (lo, hi) = range(r)?;
            let (cpu, task, comm) = cpu_task(rest)?;
            return Some(Line::OutsideOops {
                stack: stack_from_name(stack)?,
                lo,
                hi,
                cpu,
                task,
                comm,
            });
        }
        if let Some(rest) = s.strip_prefix("  ") {
            let (addr, rest) = rest.split_once(" is ")?;
            let addr = addr16(addr)?;
            let (rest, r) = rest.rsplit_once(" (")?;
            let (lo, hi) = range(r.strip_suffix(')')?)?;
            let (rel, owner) = [
                "in the guard page below ",
                "in the guard page above ",
                "inside ",
            ]
            .iter()
            .find_map(|p| Some((*p, rest.strip_prefix(p)?)))?;
            let area = Area {
                lo: lo.into(),
                hi: hi.into(),
                owner: AreaOwner::parse(owner)?,
            };
            return (relation(addr, &area) == rel.trim_end())
                .then_some(Line::AreaNote { addr, area });
        }
        if let Some(rest) = s.strip_prefix("CPU: ") {
            let (cpu, rest) = rest.split_once(" APIC: ")?;
            let (lapic, rest) = rest.split_once(" PID: ")?;
            let (pid, rest) = rest.split_once(" Comm: ")?;
            let (rest, context) = rest.rsplit_once(" context ")?;
            let (comm, via) = rest.rsplit_once(" via ")?;
            return Some(Line::Cpu {
                cpu: dec(cpu)?,
                lapic: dec(lapic)?,
                pid: dec(pid)?,
                comm,
                via: *Via::ALL.iter().find(|v| v.oops_name() == via)?,
                context: Context::from_name(context)?,
            });
        }
        if let Some(rest) = s.strip_prefix("RIP: ") {
            let (cs, rest) = rest.split_once(':')?;
            let (rip, sym) = rest.split_once(' ')?;
            return Some(Line::Rip {
                cs: hex_n(cs, 4)?,
                rip: addr16(rip)?,
                sym: parse_sym(sym)?,
            });
        }
        if let Some(rest) = s.strip_prefix("RSP: ") {
            let (ss, rest) = rest.split_once(':')?;
            let (rsp, flags) = rest.split_once(" EFLAGS: ")?;
            return Some(Line::Rsp {
                ss: hex_n(ss, 4)?,
                rsp: addr16(rsp)?,
                rflags: hex_n(flags, 8)?,
            });
        }
        for line in RegLine::ALL {
            let n = line.names();
            let Some(rest) = s.strip_prefix(n[0]).and_then(|r| r.strip_prefix(": ")) else {
                continue;
            };
            let (a, rest) = rest.split_once(' ')?;
            let rest = rest.strip_prefix(n[1])?.strip_prefix(": ")?;
            let (b, rest) = rest.split_once(' ')?;
            let c = rest.strip_prefix(n[2])?.strip_prefix(": ")?;
            return Some(Line::Regs {
                line,
                values: [addr16(a)?, addr16(b)?, addr16(c)?],
            });
        }
        if let Some(rest) = s.strip_prefix("CR2: ") {
            let (cr2, rest) = rest.split_once(" CR3: ")?;
            let (cr3, ec) = rest.split_once(" error code: ")?;
            return Some(Line::Cr {
                cr2: addr16(cr2)?,
                cr3: addr16(cr3)?,
                error_code: crate::record::parse_hex(ec)?,
            });
        }
        if let Some(rest) = s.strip_prefix("Guard: ") {
            let (r, rest) = rest.split_once(" (")?;
            let (lo, hi) = range(r)?;
            let pages = rest
                .strip_suffix(" pages)")
                .or_else(|| rest.strip_suffix(" page)").filter(|&p| p == "1"))?;
            let pages: u64 = dec(pages)?;
            return (pages != 1 || rest.ends_with(" page)")).then_some(Line::Guard {
                lo,
                hi,
                pages,
            });
        }
        if let Some(rest) = s.strip_prefix("Evidence: ") {
            let (evidence, rest) = match rest.strip_prefix("CR2 in the guard, and RSP ") {
                Some(rest) => (Evidence::Both, rest),
                None => (Evidence::Rsp, rest.strip_prefix("RSP ")?),
            };
            let (rsp, rest) = rest.split_once(" (")?;
            let (room, rest) = rest.split_once(')')?;
            let rest = rest.strip_prefix(NO_ROOM)?;
            let cr2 = match evidence {
                Evidence::Both if rest.is_empty() => 0,
                Evidence::Rsp => addr16(
                    rest.strip_prefix("; CR2 ")?
                        .strip_suffix(" lies in no guard of this stack (stale)")?,
                )?,
                _ => return None,
            };
            return Some(Line::Evidence {
                evidence,
                rsp: addr16(rsp)?,
                room: Room::parse(room)?,
                cr2,
            });
        }
        if let Some(r) = s.strip_prefix(STACK_USE) {
            let (frames, r) = r
                .split_once(" frames x ")
                .filter(|(n, _)| *n != "1")
                .or_else(|| r.split_once(" frame x ").filter(|(n, _)| *n == "1"))?;
            let (bytes, r) = r.split_once(" bytes = ")?;
            let (total, r) = r.split_once(" bytes, ")?;
            let (percent, name) = r.split_once(" % of the stack, in ")?;
            return Some(Line::StackUse {
                frames: dec(frames)?,
                bytes: dec(bytes)?,
                total: dec(total)?,
                percent: dec(percent)?,
                name: (!name.is_empty()).then_some(name)?,
            });
        }
        if let Some(d) = s.strip_prefix("Recursion depth: ") {
            return Some(Line::Depth(dec(d)?));
        }
        match s {
            "Call Trace:" => return Some(Line::CallTrace),
            " ... (more frames)" => return Some(Line::More),
            "---[ end trace ]---" => return Some(Line::End),
            _ => {}
        }
        if let Some(n) = s
            .strip_prefix(REPEAT)
            .and_then(|r| r.strip_suffix(IN_A_ROW))
        {
            return dec(n).filter(|&n| n >= 2).map(Line::Repeat);
        }
        if let Some(rest) = s.strip_prefix(" [<") {
            let (addr, mut rest) = rest.split_once(">] ")?;
            let mut size = None;
            if let Some((n, r)) = rest.split_once(' ') {
                if let Some(n) = n.strip_suffix(FRAME_BYTES).and_then(dec::<u32>) {
                    size = Some(n);
                    rest = r;
                }
            }
            let mut trap = None;
            if let Some(r) = rest.strip_prefix("(interrupted by ") {
                let (v, r) = r.split_once(") ")?;
                trap = Some(Vector::parse(v)?);
                rest = r;
            }
            return Some(Line::Frame {
                addr: addr16(addr)?,
                sym: parse_sym(rest)?,
                trap,
                size,
            });
        }
        None
    }
}

/// The number of whole pages in `lo..hi`, as the `Guard:` line counts them.
pub const fn pages(lo: u64, hi: u64) -> u64 {
    hi.saturating_sub(lo) / PAGE
}

/// The `RIP:`, `RSP:` and register lines of an interrupted context.
pub fn regs_lines<'a>(
    rip: u64,
    rip_sym: Option<Sym<'a>>,
    rsp: u64,
    regs: &Regs,
    out: &mut impl FnMut(Line<'a>) -> fmt::Result,
) -> fmt::Result {
    out(Line::Rip {
        cs: regs.cs.get(),
        rip,
        sym: rip_sym,
    })?;
    out(Line::Rsp {
        ss: regs.ss.get(),
        rsp,
        rflags: regs.rflags.get(),
    })?;
    for line in RegLine::ALL {
        out(Line::Regs {
            line,
            values: line.of(regs),
        })?;
    }
    Ok(())
}

/// The `Call Trace:` block of a backtrace (its runs already folded: one
/// frame line, then a count line), the cut-off marker, the end marker.
pub fn trace_lines<'a>(
    frames: &[Frame<'a>],
    truncated: bool,
    out: &mut impl FnMut(Line<'a>) -> fmt::Result,
) -> fmt::Result {
    out(Line::CallTrace)?;
    for f in frames {
        out(Line::Frame {
            addr: f.addr.get(),
            sym: f.sym,
            trap: f.trap,
            size: f.size,
        })?;
        if f.repeat > 1 {
            out(Line::Repeat(f.repeat))?;
        }
    }
    if truncated {
        out(Line::More)?;
    }
    out(Line::End)
}

/// Every line of the oops a `GUARD-HIT` states, in the order the guest
/// prints them: what the guest writes, and what the runner expects to read.
pub fn render<'a>(
    hit: &GuardHit<'a>,
    out: &mut impl FnMut(Line<'a>) -> fmt::Result,
) -> fmt::Result {
    let (stack, addr) = (hit.stack_kind, hit.fault_addr.get());
    let (lo, hi) = (hit.stack_lo.get(), hit.stack_hi.get());
    let (cpu, task, comm) = (hit.cpu, hit.task_id, hit.task_name);
    match hit.kind {
        HitKind::Overflow | HitKind::Underflow => {
            out(Line::GuardBug {
                stack,
                addr,
                lo,
                hi,
            })?;
            out(Line::GuardOops {
                kind: hit.kind,
                bytes: hit.bytes,
                cpu,
                task,
                comm,
            })?;
        }
        HitKind::NotGuard => {
            out(Line::PageFaultBug { addr })?;
            out(Line::OutsideOops {
                stack,
                lo,
                hi,
                cpu,
                task,
                comm,
            })?;
            if let Some(area) = hit.area {
                out(Line::AreaNote { addr, area })?;
            }
        }
    }
    out(Line::Cpu {
        cpu,
        lapic: hit.lapic_id,
        pid: task,
        comm,
        via: hit.via,
        context: hit.context,
    })?;
    regs_lines(hit.rip.get(), hit.rip_sym, hit.rsp.get(), &hit.regs, out)?;
    out(Line::Cr {
        cr2: hit.cr2.get(),
        cr3: hit.cr3.get(),
        error_code: hit.error_code.get(),
    })?;
    let (glo, ghi) = (hit.guard_lo.get(), hit.guard_hi.get());
    if ghi > glo {
        out(Line::Guard {
            lo: glo,
            hi: ghi,
            pages: pages(glo, ghi),
        })?;
    }
    if let Some(evidence @ (Evidence::Rsp | Evidence::Both)) = hit.evidence {
        let rsp = hit.rsp.get();
        out(Line::Evidence {
            evidence,
            rsp,
            room: Room::of(rsp, lo, hi),
            cr2: match evidence {
                Evidence::Rsp => hit.cr2.get(),
                _ => 0,
            },
        })?;
    }
    if let Some(d) = hit.depth {
        out(Line::Depth(d))?;
    }
    if let Some(line) = top_consumer(&hit.backtrace, hit.stack_hi.get() - hit.stack_lo.get()) {
        out(line)?;
    }
    trace_lines(&hit.backtrace, hit.truncated, out)
}

/// The `Stack use:` line: of the frames with a size, the function whose
/// frames add up to the most (a recursion's run, or one big frame), its
/// frame count, its frame size (the largest, if its frames differ), their
/// total and its share of a stack of `stack_bytes`. `None` without sizes,
/// or when it used less than a quarter of the stack: then the trace does
/// not show where the stack went (a fault in one frame too big to finish,
/// whose own size no frame record holds).
pub fn top_consumer<'a>(frames: &[Frame<'a>], stack_bytes: u64) -> Option<Line<'a>> {
    let mut best: Option<(&'a str, u32, u32, u64)> = None;
    for f in frames {
        let (Some(sym), Some(size)) = (f.sym, f.size) else {
            continue;
        };
        let (mut count, mut largest, mut total) = (0u32, 0u32, 0u64);
        for g in frames
            .iter()
            .filter(|g| g.sym.map(|s| s.name) == Some(sym.name))
        {
            if let Some(s) = g.size {
                count += g.repeat;
                largest = largest.max(s);
                total += u64::from(s) * u64::from(g.repeat);
            }
        }
        if best.is_none_or(|b| total > b.3) {
            best = Some((sym.name, count, largest.max(size), total));
        }
    }
    let (name, frames, bytes, total) = best?;
    if total * 4 < stack_bytes {
        return None;
    }
    Some(Line::StackUse {
        frames,
        bytes,
        total,
        percent: total * 100 / stack_bytes.max(1),
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Hex;
    use proptest::prelude::*;
    extern crate std;
    use std::string::{String, ToString};

    fn text(line: &Line) -> String {
        std::format!("{line}")
    }

    /// Lines from a real oops (stack.recursion and stack.probe_skip), as
    /// the guest printed them before this module existed, plus what it adds.
    #[test]
    fn real_lines_read_as_what_they_say() {
        let cases: &[(&str, Line)] = &[
            (
                "BUG: TASK stack guard page was hit at ffffc9000001ef48 (stack is ffffc9000001f000..ffffc90000023000)",
                Line::GuardBug {
                    stack: Some(StackKind::Task),
                    addr: 0xffffc9000001ef48,
                    lo: 0xffffc9000001f000,
                    hi: 0xffffc90000023000,
                },
            ),
            (
                "Oops: stack guard page: overflow by 184 bytes below the stack, on CPU 0, task 3 'recurse'",
                Line::GuardOops {
                    kind: HitKind::Overflow,
                    bytes: 184,
                    cpu: 0,
                    task: 3,
                    comm: "recurse",
                },
            ),
            (
                "Oops: stack guard page: underflow by 57 bytes above the stack, on CPU 0, task 6 'underflow'",
                Line::GuardOops {
                    kind: HitKind::Underflow,
                    bytes: 57,
                    cpu: 0,
                    task: 6,
                    comm: "underflow",
                },
            ),
            (
                "Oops: stack fault outside the guard pages of the TASK stack ffffc9000001f000..ffffc90000023000 (guard jumped?), on CPU 0, task 5 'probe-skip'",
                Line::OutsideOops {
                    stack: Some(StackKind::Task),
                    lo: 0xffffc9000001f000,
                    hi: 0xffffc90000023000,
                    cpu: 0,
                    task: 5,
                    comm: "probe-skip",
                },
            ),
            (
                "  ffffc9000001dbf8 is in the guard page above the TASK stack of task 2 (ffffc90000019000..ffffc9000001d000)",
                Line::AreaNote {
                    addr: 0xffffc9000001dbf8,
                    area: Area {
                        lo: Hex(0xffffc90000019000),
                        hi: Hex(0xffffc9000001d000),
                        owner: AreaOwner::Stack {
                            kind: StackKind::Task,
                            id: 2,
                        },
                    },
                },
            ),
            (
                "CPU: 0 APIC: 0 PID: 3 Comm: recurse via #DF (IST stack) context task",
                Line::Cpu {
                    cpu: 0,
                    lapic: 0,
                    pid: 3,
                    comm: "recurse",
                    via: Via::DoubleFault,
                    context: Context::Task,
                },
            ),
            (
                "RIP: 0008:ffffffff8002937a guest::scenarios::stack::stack_recurse+0x2a/0xd0",
                Line::Rip {
                    cs: 8,
                    rip: 0xffffffff8002937a,
                    sym: Some(Sym {
                        name: "guest::scenarios::stack::stack_recurse",
                        link: None,
                        off: Hex(0x2a),
                        size: Hex(0xd0),
                    }),
                },
            ),
            (
                "RSP: 0010:ffffc9000001ef50 EFLAGS: 00000286",
                Line::Rsp {
                    ss: 0x10,
                    rsp: 0xffffc9000001ef50,
                    rflags: 0x286,
                },
            ),
            (
                "RAX: ffffc800000004c0 RBX: 0000000000000035 RCX: 0000000000000000",
                Line::Regs {
                    line: RegLine::RaxRbxRcx,
                    values: [0xffffc800000004c0, 0x35, 0],
                },
            ),
            (
                "R13: 0000000000000000 R14: ffffffffffffffff R15: ffffc9000001ef50",
                Line::Regs {
                    line: RegLine::R13R14R15,
                    values: [0, u64::MAX, 0xffffc9000001ef50],
                },
            ),
            (
                "CR2: ffffc9000001ef48 CR3: 000000000f6ab000 error code: 0x0",
                Line::Cr {
                    cr2: 0xffffc9000001ef48,
                    cr3: 0xf6ab000,
                    error_code: 0,
                },
            ),
            (
                "Guard: ffffc9000001e000..ffffc9000001f000 (1 page)",
                Line::Guard {
                    lo: 0xffffc9000001e000,
                    hi: 0xffffc9000001f000,
                    pages: 1,
                },
            ),
            ("Recursion depth: 52", Line::Depth(52)),
            (
                "Stack use: 53 frames x 304 bytes = 16112 bytes, 98 % of the stack, in guest::scenarios::stack::stack_recurse",
                Line::StackUse {
                    frames: 53,
                    bytes: 304,
                    total: 16112,
                    percent: 98,
                    name: "guest::scenarios::stack::stack_recurse",
                },
            ),
            (
                "Evidence: RSP ffffc90000006ff0 (16 bytes below the stack bottom) leaves no room for an exception frame; CR2 0000000000000000 lies in no guard of this stack (stale)",
                Line::Evidence {
                    evidence: Evidence::Rsp,
                    rsp: 0xffffc90000006ff0,
                    room: Room::BelowBottom(16),
                    cr2: 0,
                },
            ),
            (
                "Evidence: CR2 in the guard, and RSP ffffc90000007008 (8 bytes above the stack bottom) leaves no room for an exception frame",
                Line::Evidence {
                    evidence: Evidence::Both,
                    rsp: 0xffffc90000007008,
                    room: Room::AboveBottom(8),
                    cr2: 0,
                },
            ),
            ("Call Trace:", Line::CallTrace),
            (
                " [<ffffffff8002c071>] guest::scenarios::stack::stack_recurse _ZN5guest9scenarios5stack13stack_recurse17h43d4084c97e73a78E+0x91/0xee",
                Line::Frame {
                    addr: 0xffffffff8002c071,
                    sym: Some(Sym {
                        name: "guest::scenarios::stack::stack_recurse",
                        link: Some("_ZN5guest9scenarios5stack13stack_recurse17h43d4084c97e73a78E"),
                        off: Hex(0x91),
                        size: Hex(0xee),
                    }),
                    trap: None,
                    size: None,
                },
            ),
            (" ... the frame above, 53 times in a row", Line::Repeat(53)),
            (
                " [<ffffffff800293d9>] guest::scenarios::stack::stack_recurse+0x89/0xd0",
                Line::Frame {
                    addr: 0xffffffff800293d9,
                    sym: Some(Sym {
                        name: "guest::scenarios::stack::stack_recurse",
                        link: None,
                        off: Hex(0x89),
                        size: Hex(0xd0),
                    }),
                    trap: None,
                    size: None,
                },
            ),
            (
                " [<ffffffff80026940>] (interrupted by #PF) core::ops::function::FnOnce::call_once+0x40/0x50",
                Line::Frame {
                    addr: 0xffffffff80026940,
                    sym: Some(Sym {
                        name: "core::ops::function::FnOnce::call_once",
                        link: None,
                        off: Hex(0x40),
                        size: Hex(0x50),
                    }),
                    trap: Some(14),
                    size: None,
                },
            ),
            (
                " [<ffffffff8003a306>] task_entry_trampoline+0x7",
                Line::Frame {
                    addr: 0xffffffff8003a306,
                    sym: Some(Sym {
                        name: "task_entry_trampoline",
                        link: None,
                        off: Hex(7),
                        size: Hex(0),
                    }),
                    trap: None,
                    size: None,
                },
            ),
            (
                " [<ffffffff8003a306>] ?",
                Line::Frame {
                    addr: 0xffffffff8003a306,
                    sym: None,
                    trap: None,
                    size: None,
                },
            ),
            (" ... the frame above, 2 times in a row", Line::Repeat(2)),
            (" ... (more frames)", Line::More),
            ("---[ end trace ]---", Line::End),
        ];
        for (s, want) in cases {
            assert_eq!(Line::parse(s), Some(*want), "{s}");
            assert_eq!(text(want), *s);
        }
    }

    #[test]
    fn near_misses_are_not_lines() {
        for s in [
            "BUG: TASK stack guard page was hit at ffffc9000001ef4 (stack is ffffc9000001f000..ffffc90000023000)",
            "BUG: FOO stack guard page was hit at ffffc9000001ef48 (stack is ffffc9000001f000..ffffc90000023000)",
            "Oops: stack guard page: overflow by 184 bytes above the stack, on CPU 0, task 3 'recurse'",
            "Oops: stack guard page: not-guard by 1 bytes below the stack, on CPU 0, task 3 'x'",
            "Oops: stack guard page: overflow by 0184 bytes below the stack, on CPU 0, task 3 'recurse'",
            "Oops: stack guard page: overflow by -1 bytes below the stack, on CPU 0, task 3 'recurse'",
            "  ffffc9000001dbf8 is inside the TASK stack of task 2 (ffffc90000019000..ffffc9000001d000)",
            "CPU: 0 APIC: 0 PID: 3 Comm: recurse via #XX context task",
            "RIP: 0008:ffffffff8002937a stack_recurse",
            "Guard: ffffc9000001e000..ffffc9000001f000 (1 pages)",
            "Guard: ffffc9000001e000..ffffc9000001f000 (2 page)",
            " [<ffffffff800293d9>] x+0x1 (x53)",
            " [<ffffffff800293d9>] x+0x1 (interrupted by #PF)",
            " [<ffffffff800293d9>] (interrupted by #ZZ) x+0x1",
            " ... the frame above, 1 times in a row",
            " ... the frame above, 053 times in a row",
            "Recursion depth: ",
            "Evidence: CR2 in the guard, and RSP ffffc90000007008 (8 bytes above the stack bottom) leaves no room for an exception frame; CR2 0000000000000000 lies in no guard of this stack (stale)",
            "Evidence: RSP ffffc90000006ff0 (16 bytes beside the stack) leaves no room for an exception frame; CR2 0000000000000000 lies in no guard of this stack (stale)",
            "# ok: task recurse: killed: stack overflow",
            "",
        ] {
            assert_eq!(Line::parse(s), None, "{s}");
        }
        assert_eq!(
            Line::parse("Call Trace:\r"),
            Some(Line::CallTrace),
            "a serial line ending"
        );
    }

    fn name() -> impl Strategy<Value = String> {
        // Names as the guest prints them: demangled Rust paths, spaces,
        // angle brackets, closures, even a stray `+0x`.
        "[a-zA-Z_<>:{} ]{1,20}(\\+0x[0-9a-f]{1,3})?"
            .prop_filter("not empty", |s| !s.trim().is_empty())
    }

    fn comm() -> impl Strategy<Value = String> {
        "[a-z][a-z0-9 '_-]{0,14}"
    }

    /// Mangled names as `nm` prints them, legacy and v0.
    fn link() -> impl Strategy<Value = Option<String>> {
        proptest::option::of("_ZN[0-9][a-z]{1,8}17h[0-9a-f]{16}E|_RNvCs[0-9][A-Za-z0-9_]{0,20}")
    }

    fn sym() -> impl Strategy<Value = Option<(String, Option<String>, u64, u64)>> {
        proptest::option::of((
            name(),
            link(),
            any::<u64>(),
            any::<u32>().prop_map(u64::from),
        ))
    }

    fn stack() -> impl Strategy<Value = Option<StackKind>> {
        proptest::option::of(proptest::sample::select(StackKind::ALL))
    }

    fn owner() -> impl Strategy<Value = (u8, String, u64)> {
        (0u8..6, "[a-z][a-z _-]{0,10}", any::<u64>())
    }

    fn make_owner(o: &(u8, String, u64)) -> AreaOwner<'_> {
        match o.0 {
            0 => AreaOwner::Stack {
                kind: StackKind::Task,
                id: o.2,
            },
            1 => AreaOwner::Stack {
                kind: StackKind::Irq,
                id: o.2,
            },
            2 => AreaOwner::Named(&o.1),
            3 => AreaOwner::LazyFree,
            4 => AreaOwner::Object {
                what: ObjectKind::TaskStruct,
                id: o.2,
            },
            _ => AreaOwner::Freed {
                what: ObjectKind::TaskStruct,
                id: o.2,
            },
        }
    }

    fn check(line: Line) {
        let s = text(&line);
        assert_eq!(Line::parse(&s), Some(line), "{s}");
    }

    proptest! {
        #[test]
        fn every_line_reads_back_as_written(
            (a, b, c) in (any::<u64>(), any::<u64>(), any::<u64>()),
            (n32, m32) in (any::<u32>(), any::<u32>()),
            stack in stack(),
            comm in comm(),
            sym in sym(),
            o in owner(),
            via in proptest::sample::select(Via::ALL),
            context in proptest::sample::select(Context::ALL),
            kind in proptest::sample::select(&[HitKind::Overflow, HitKind::Underflow][..]),
            repeat in 2u32..1000,
            trap in proptest::option::of(any::<u8>()),
        ) {
            let sym = sym.as_ref().map(|(n, link, off, size)| Sym { name: n, link: link.as_deref(), off: Hex(*off), size: Hex(*size) });
            check(Line::GuardBug { stack, addr: a, lo: b, hi: c });
            check(Line::PageFaultBug { addr: a });
            check(Line::GuardOops { kind, bytes: a, cpu: n32, task: b, comm: &comm });
            check(Line::OutsideOops { stack, lo: a, hi: b, cpu: n32, task: c, comm: &comm });
            check(Line::AreaNote { addr: a, area: Area { lo: Hex(b), hi: Hex(c), owner: make_owner(&o) } });
            check(Line::Cpu { cpu: n32, lapic: m32, pid: a, comm: &comm, via, context });
            check(Line::Rip { cs: a & 0xffff, rip: b, sym });
            check(Line::Rsp { ss: a & 0xffff, rsp: b, rflags: c & 0xffff_ffff });
            for line in RegLine::ALL {
                check(Line::Regs { line, values: [a, b, c] });
            }
            check(Line::Cr { cr2: a, cr3: b, error_code: c });
            check(Line::Guard { lo: a, hi: b, pages: c });
            check(Line::Depth(a));
            for frames in [1, repeat] {
                check(Line::StackUse { frames, bytes: c as u32, total: a, percent: b, name: "f" });
            }
            for room in [Room::AboveBottom(b), Room::BelowBottom(b), Room::AboveTop(b)] {
                check(Line::Evidence { evidence: Evidence::Rsp, rsp: a, room, cr2: c });
                check(Line::Evidence { evidence: Evidence::Both, rsp: a, room, cr2: 0 });
            }
            check(Line::Frame { addr: a, sym, trap, size: None });
            check(Line::Frame { addr: a, sym, trap, size: Some(c as u32) });
            check(Line::Repeat(repeat));
        }
    }

    #[test]
    fn vectors_have_one_name_each() {
        for v in 0..=255u8 {
            let s = Vector(v).to_string();
            assert_eq!(Vector::parse(&s), Some(v), "{s}");
        }
        assert_eq!(Vector(14).to_string(), "#PF");
        assert_eq!(Vector(8).to_string(), "#DF");
        assert_eq!(Vector(0xef).to_string(), "IRQ 239");
        assert_eq!(Vector::parse("IRQ 3"), None);
    }
}
