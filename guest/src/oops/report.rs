//! Printing a stack fault: the human oops, line by line through the
//! shapes in `abi::oops` (which the runner parses back), the `GUARD-HIT`
//! record with every fact the oops states, and, for the first hit of a
//! scenario, the raw stack for the runner's own unwinder.
use super::backtrace::Backtrace;
use super::classify::Fault;
use super::symbols::{frames, sym};
use crate::arch::x86_64::trap::TrapFrame;
use crate::console::Locked;
use abi::guard::{GuardHit, Regs};
use abi::kinds::{Context, Via};
use abi::oops::Line;
use abi::stackdump::{StackDump, Words, CHUNK_WORDS};
use abi::Hex;
use core::fmt::Write;

/// Everything one report says.
pub struct Report<'a> {
    pub scenario: &'static str,
    pub fault: &'a Fault,
    pub frame: &'a TrapFrame,
    pub cr2: u64,
    pub cr3: u64,
    pub via: Via,
    pub cpu: u32,
    pub lapic_id: u32,
    pub task_id: u64,
    pub comm: &'a str,
    pub context: Context,
    pub depth: u64,
    /// The stack pointer of the frame that recorded `depth`.
    pub depth_sp: u64,
    pub trace: &'a Backtrace,
    pub recovered: bool,
    /// Whether to print the faulting stack's words too (`STACK-DUMP`):
    /// asked with the console held, so that the first report *printed*
    /// for a scenario is the one that carries them.
    pub dump: &'a dyn Fn() -> bool,
}

/// The interrupted context's registers as the record carries them.
pub fn regs(f: &TrapFrame) -> Regs {
    Regs {
        rax: Hex(f.rax),
        rbx: Hex(f.rbx),
        rcx: Hex(f.rcx),
        rdx: Hex(f.rdx),
        rsi: Hex(f.rsi),
        rdi: Hex(f.rdi),
        rbp: Hex(f.rbp),
        r8: Hex(f.r8),
        r9: Hex(f.r9),
        r10: Hex(f.r10),
        r11: Hex(f.r11),
        r12: Hex(f.r12),
        r13: Hex(f.r13),
        r14: Hex(f.r14),
        r15: Hex(f.r15),
        cs: Hex(f.cs),
        ss: Hex(f.ss),
        rflags: Hex(f.rflags),
    }
}

/// Print the lines `render`-style functions produce, one per line.
fn lines<'a>(w: &mut impl Write) -> impl FnMut(Line<'a>) -> core::fmt::Result + '_ {
    move |l| writeln!(w, "{l}")
}

/// Where the CPU was, by symbol, and every register: the `RIP:`, `RSP:`
/// and general-purpose register lines.
pub fn write_regs(w: &mut impl Write, frame: &TrapFrame) -> core::fmt::Result {
    abi::oops::regs_lines(
        frame.rip,
        sym(frame.rip),
        frame.rsp,
        &regs(frame),
        &mut lines(w),
    )
}

/// The call trace and the end marker, a recursion collapsed into one line
/// with a count.
pub fn write_trace(w: &mut impl Write, bt: &Backtrace) -> core::fmt::Result {
    abi::oops::trace_lines(&frames(bt), bt.truncated, &mut lines(w))
}

/// The words of the faulting stack, in chunks of one record each.
fn write_dump(w: &mut Locked, r: &Report, lo: u64, hi: u64) {
    let (from, to) = abi::stackdump::bounds(lo, hi, r.frame.rsp);
    let mut at = from;
    while at < to {
        let len = ((to - at) / 8).min(CHUNK_WORDS as u64) as usize;
        w.record(&StackDump {
            scenario: r.scenario,
            cpu: r.cpu,
            lo: Hex(from),
            hi: Hex(to),
            at: Hex(at),
            words: Words::Memory {
                at,
                len,
                read: crate::arch::x86_64::probe::read_u64,
            },
        });
        at += len as u64 * 8;
    }
}

/// Print the whole report, holding the console throughout: the oops is
/// the record's own lines (`abi::oops::render`), so it states exactly
/// what the record does.
pub fn print(r: &Report) {
    let f = r.fault;
    let (lo, hi) = f.stack.map_or((0, 0), |(a, _)| (a.base, a.top()));
    let hit = GuardHit {
        scenario: r.scenario,
        kind: f.kind,
        stack_kind: f.stack.map(|(_, k)| k),
        stack_lo: Hex(lo),
        #[cfg(not(defect = "bounds-inclusive-top"))]
        stack_hi: Hex(hi),
        // A deliberate defect (`runner --defect bounds-inclusive-top`): the
        // stack's end told as its last byte, an inclusive bound where the
        // record's ranges are half-open.
        #[cfg(defect = "bounds-inclusive-top")]
        stack_hi: Hex(hi.saturating_sub(1)),
        guard_lo: Hex(f.guard.0),
        guard_hi: Hex(f.guard.1),
        bytes: f.bytes,
        #[cfg(not(defect = "fault-addr-page"))]
        fault_addr: Hex(f.fault_addr),
        // A deliberate defect (`runner --defect fault-addr-page`): the
        // fault's page told instead of its address, as a page-table walk
        // would think of it.
        #[cfg(defect = "fault-addr-page")]
        fault_addr: Hex(f.fault_addr & !0xfff),
        via: r.via,
        cpu: r.cpu,
        lapic_id: r.lapic_id,
        task_id: r.task_id,
        task_name: r.comm,
        rip: Hex(r.frame.rip),
        rip_sym: sym(r.frame.rip),
        rsp: Hex(r.frame.rsp),
        regs: regs(r.frame),
        error_code: Hex(r.frame.error_code),
        cr2: Hex(r.cr2),
        cr3: Hex(r.cr3),
        area: f.area,
        backtrace: frames(r.trace),
        truncated: r.trace.truncated,
        depth: (r.depth > 0).then_some(r.depth),
        depth_sp: (r.depth > 0).then_some(Hex(r.depth_sp)),
        context: r.context,
        recovered: r.recovered,
        evidence: f.evidence,
    };
    crate::console::report(|w| {
        let _ = abi::oops::render(&hit, &mut lines(w));
        w.record(&hit);
        if hi > lo && (r.dump)() {
            write_dump(w, r, lo, hi);
        }
    });
}
