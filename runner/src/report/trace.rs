//! The guest's call trace against the runner's own unwind of the same
//! stack: the `STACK-DUMP` that follows a scenario's first `GUARD-HIT`,
//! walked from the trap frame's registers with the ELF's call-frame
//! information (`crate::unwind`).
//!
//! What the unwind proves: the frames really on the stack, in order, with
//! nothing the guest dropped or made up, ending where a task's stack ends
//! (its entry trampoline, whose CFI marks the outermost frame) or, on the
//! IRQ stack, where the entry switched stacks. The guest's frame-pointer
//! walk must see exactly the frames of that unwind a frame-pointer walk can
//! see (`unwind::frame_pointer_view`). From the same unwind: how many
//! frames a recursion left (against `Recursion depth:`), and whether an
//! exception entry lies between the fault and the task entry (against the
//! `CPU:` line's context).

use super::lines::{Alloc, Dump, Events, Hit};
use super::oops::{elf_sym, elf_text};
use super::{Check, Failure};
use crate::symbols::Symbolize;
use crate::unwind::{self, End, Kind, Memory, Registers, Unwind};
use abi::kinds::{Context, StackKind};

/// How far from the fault a recursion's first frame may be: the fault
/// frame, its callee's, an interrupt's entry code.
const RECURSION_START_WITHIN: usize = 4;

/// The dump printed with `hit`: the `STACK-DUMP` chunks of its scenario
/// right after it (the guest prints them under the same console lock),
/// before any later `GUARD-HIT`. `None` if there are none; `Err` if they do
/// not make one contiguous dump up to the top of the announced stack
/// `alloc`.
pub fn dump_of(
    events: &Events,
    hit: &Hit,
    alloc: Option<&Alloc>,
) -> Option<Result<Memory, String>> {
    let next_hit = events
        .hits
        .iter()
        .map(|h| h.line)
        .find(|&l| l > hit.line)
        .unwrap_or(usize::MAX);
    let chunks: Vec<&Dump> = events
        .dumps
        .iter()
        .filter(|d| d.line > hit.line && d.line < next_hit)
        .filter(|d| d.scenario == hit.scenario)
        .collect();
    let first = chunks.first()?;
    Some(assemble(&chunks, first, hit, alloc))
}

fn assemble(
    chunks: &[&Dump],
    first: &Dump,
    hit: &Hit,
    alloc: Option<&Alloc>,
) -> Result<Memory, String> {
    let (lo, hi) = (first.lo.get(), first.hi.get());
    if let Some(a) = alloc {
        let (want_lo, want_hi) = abi::stackdump::bounds(a.lo.get(), a.hi.get(), hit.rsp.get());
        if (lo, hi) != (want_lo, want_hi) {
            return Err(format!(
                "the dump covers {lo:#x}..{hi:#x}, not {want_lo:#x}..{want_hi:#x} (from rsp, or the announced stack's bottom, to its top)"
            ));
        }
    }
    let mut memory = Memory {
        lo,
        words: Vec::new(),
    };
    for c in chunks {
        if (c.lo.get(), c.hi.get()) != (lo, hi) || c.at.get() != memory.hi() {
            return Err(format!(
                "a chunk at {:#x} where the dump should go on at {:#x}",
                c.at.get(),
                memory.hi()
            ));
        }
        for w in c.words.iter() {
            memory
                .words
                .push(w.map_err(|_| "a chunk's words do not read".to_string())?);
        }
    }
    if memory.hi() != hi {
        return Err(format!(
            "the dump stops at {:#x}, short of the stack's top {hi:#x}",
            memory.hi()
        ));
    }
    Ok(memory)
}

/// The trap frame's registers, as the record gives them.
pub fn registers(hit: &Hit) -> Registers {
    let r = &hit.regs;
    let mut regs = Registers::default();
    let values = [
        r.rax, r.rdx, r.rcx, r.rbx, r.rsi, r.rdi, r.rbp, hit.rsp, r.r8, r.r9, r.r10, r.r11, r.r12,
        r.r13, r.r14, r.r15, hit.rip,
    ];
    for (i, v) in values.iter().enumerate() {
        regs.set(i as u16, Some(v.get()));
    }
    regs
}

/// What the unwind of one hit's stack showed, and what disagrees with it.
pub struct Judged {
    pub unwind: Option<Unwind>,
    pub failures: Vec<Failure>,
}

/// A line of the unwind as the trace would print it (with the ELF's names).
fn unwind_line(symbols: &dyn Symbolize, pc: u64, kind: Kind, repeat: usize) -> String {
    let name = elf_text(&elf_sym(symbols, pc, kind == Kind::Return));
    let mut s = format!("[<{pc:016x}>] {name}");
    if kind == Kind::Interrupted {
        s = format!("[<{pc:016x}>] (interrupted) {name}");
    }
    if repeat > 1 {
        s.push_str(&format!(" ({repeat} times in a row)"));
    }
    s
}

/// Runs of equal (address, interrupted?) entries, as the trace folds them.
fn runs(items: &[(u64, bool)]) -> Vec<((u64, bool), usize)> {
    let mut out: Vec<((u64, bool), usize)> = Vec::new();
    for &it in items {
        match out.last_mut() {
            Some((last, n)) if *last == it && !it.1 => *n += 1,
            _ => out.push((it, 1)),
        }
    }
    out
}

fn why(end: &End) -> String {
    match end {
        End::Outermost => "at the task's outermost frame".into(),
        End::LeftStack { addr } => {
            format!("where the next frame lies off the dumped stack ({addr:#x})")
        }
        End::NoCfi { pc } => format!("at {pc:#x}, which no call-frame information covers"),
        End::Broken(why) => format!("because {why}"),
    }
}

/// Hold `hit`'s trace, depth and context against the unwind of `dump`, a
/// stack of kind `stack` (the announced kind, not the one the hit claims).
pub fn judge(
    hit: &Hit,
    stack: Option<StackKind>,
    dump: Result<Memory, String>,
    symbols: &dyn Symbolize,
) -> Judged {
    let mut failures = Vec::new();
    let mut fail = |check: Check, detail: String| failures.push(Failure { check, detail });
    let memory = match dump {
        Ok(m) => m,
        Err(e) => {
            fail(
                Check::Unwind,
                format!("the STACK-DUMP cannot be unwound: {e}"),
            );
            return Judged {
                unwind: None,
                failures,
            };
        }
    };
    let Some(cfi) = symbols.call_frames() else {
        fail(
            Check::Unwind,
            "the guest ELF has no call-frame information to unwind with".into(),
        );
        return Judged {
            unwind: None,
            failures,
        };
    };
    let u = unwind::unwind(cfi, &memory, registers(hit));

    // Where it must end.
    let on_irq_stack = stack == Some(StackKind::Irq);
    let last = u.frames.last().copied();
    let last_text = last.map_or(String::new(), |f| {
        format!(" after `{}`", unwind_line(symbols, f.pc, f.kind, 1))
    });
    let ended_well = match &u.end {
        End::Outermost => !on_irq_stack,
        End::LeftStack { .. } => on_irq_stack,
        _ => false,
    };
    if !ended_well {
        let want = if on_irq_stack {
            "the IRQ entry's switch from the interrupted stack"
        } else {
            "the task's entry trampoline"
        };
        fail(
            Check::Unwind,
            format!(
                "the unwind of the dumped stack stopped {}{last_text}, not at {want}",
                why(&u.end)
            ),
        );
    }

    // Frame by frame, as the folded Call Trace lines read.
    let seen = unwind::frame_pointer_view(&u.frames);
    let expected: Vec<(u64, bool)> = seen
        .iter()
        .map(|f| (f.pc, f.kind == Kind::Interrupted))
        .collect();
    let guest: Vec<(u64, bool)> = abi::guard::unfold(&hit.backtrace)
        .map(|(a, trap)| (a, trap.is_some()))
        .collect();
    // A trace cut at the guest's limit must agree as far as it goes, and
    // the stack must really have gone on.
    let cut = if hit.truncated {
        guest.len().min(expected.len())
    } else {
        expected.len()
    };
    let (want, got) = (runs(&expected[..cut]), runs(&guest));
    // The guest's k-th line, named as it named that address.
    let guest_line = |k: usize| {
        let ((addr, _), n) = got[k];
        let like = hit.backtrace.iter().find(|f| f.addr.get() == addr);
        let f = abi::guard::Frame {
            addr: addr.into(),
            sym: like.and_then(|f| f.sym),
            trap: like.and_then(|f| f.trap),
            repeat: n as u32,
            size: like.and_then(|f| f.size),
        };
        super::oops::trace_line(&f)
    };
    let unwind_at = |k: usize| {
        let ((pc, interrupted), n) = want[k];
        let kind = if interrupted {
            Kind::Interrupted
        } else {
            Kind::Return
        };
        unwind_line(symbols, pc, kind, n)
    };
    if let Some(k) = (0..want.len().min(got.len())).find(|&k| want[k] != got[k]) {
        fail(
            Check::Unwind,
            format!(
                "Call Trace line {}: the guest prints `{}`, the unwind of the dumped stack gives `{}`",
                k + 1,
                guest_line(k),
                unwind_at(k)
            ),
        );
    } else if got.len() < want.len() {
        let k = got.len();
        let more = match want.len() - k - 1 {
            0 => String::new(),
            n => format!(" and {n} more line(s)"),
        };
        fail(
            Check::Unwind,
            format!(
                "the guest's Call Trace ends after line {k}; the unwind of the dumped stack goes on with `{}`{more}",
                unwind_at(k)
            ),
        );
    } else if got.len() > want.len() {
        let k = want.len();
        fail(
            Check::Unwind,
            format!(
                "Call Trace line {} `{}` is not on the stack: the unwind ended after {k} line(s) {}",
                k + 1,
                guest_line(k),
                why(&u.end)
            ),
        );
    } else if hit.truncated && expected.len() <= guest.len() {
        fail(
            Check::Unwind,
            format!(
                "the trace says `... (more frames)`, but the unwind has only {} frame(s)",
                expected.len()
            ),
        );
    }

    // The recursion's depth, from the frames of the recursing function.
    if let Some(d) = hit.depth {
        let base = |f: &unwind::Frame| {
            elf_sym(symbols, f.pc, f.kind == Kind::Return).map(|(s, _)| (s.base, s.names))
        };
        // The recursion starts at the first frame whose caller is the same
        // function: the fault frame itself, or a frame or two up when the
        // fault came in a callee (`memset` filling the frame) or in the
        // entry code of an interrupt that arrived there.
        let bases: Vec<_> = u.frames.iter().map(base).collect();
        let start = (0..bases.len().saturating_sub(1).min(RECURSION_START_WITHIN))
            .find(|&i| bases[i].is_some() && bases[i] == bases[i + 1]);
        let recursing = match start {
            Some(i) => bases[i].clone(),
            None => u.frames.get(1).and_then(base),
        };
        // Frames of the recursing function `b` from frame `i` outward.
        let run_from = |i: usize, b: &u64| {
            bases[i..]
                .iter()
                .take_while(|x| x.as_ref().is_some_and(|(x, _)| x == b))
                .count() as u64
        };
        let r = match (&recursing, start) {
            (Some((b, _)), Some(i)) => run_from(i, b),
            _ => 0,
        };
        let name = recursing
            .as_ref()
            .and_then(|(_, n)| n.first().cloned())
            .unwrap_or_else(|| "?".into());
        let said = format!("`Recursion depth: {d}`");
        // The frame that recorded the depth, found by its stack pointer: a
        // frame spans from its callee's CFA (the trap's rsp, innermost) up
        // to its own. Its run of the recursing function, from it outward,
        // is depths d, d-1, ..., 0: exactly d + 1 frames. (Counting from
        // the innermost frame instead cannot be exact: it may or may not
        // have recorded itself before the guard stopped it.)
        let holder = hit.depth_sp.map(|sp| {
            let sp = sp.get();
            let mut below = hit.rsp.get();
            let at = u.frames.iter().position(|f| {
                let within = sp >= below && f.cfa.is_some_and(|cfa| sp < cfa);
                below = f.cfa.unwrap_or(u64::MAX);
                within
            });
            (sp, at)
        });
        let problem = match (holder, &recursing) {
            _ if r < 2 => Some(format!(
                "{said}, but the unwound stack holds {r} frame(s) of `{name}`: no recursion"
            )),
            (None, _) => Some(format!(
                "{said} comes without the stack pointer of the frame that recorded it"
            )),
            (Some((sp, None)), _) => Some(format!(
                "{said} was recorded at sp {sp:#x}, in none of the unwound frames"
            )),
            (Some((sp, Some(i))), Some((b, _))) => {
                let outward = run_from(i, b);
                (outward != d + 1).then(|| {
                    format!(
                        "{said}, but the frame that recorded it (sp {sp:#x}, frame #{i}) has {outward} frame(s) of `{name}` from it outward: depth {}",
                        outward.saturating_sub(1)
                    )
                })
            }
            (Some(_), None) => None,
        };
        if let Some(problem) = problem {
            fail(Check::Depth, problem);
        }
    }

    // Each frame's size: the difference of two frame pointers the guest
    // read, against the function's prologue as the ELF has it.
    let mut sized = 0;
    for (i, f) in hit.backtrace.iter().enumerate() {
        let (Some(shown), Some(want)) = (f.size, symbols.frame_bytes(f.addr.get())) else {
            continue;
        };
        sized += 1;
        if u64::from(shown) != want {
            fail(
                Check::FrameSize,
                format!(
                    "frame #{i} (`{}`) is shown as {shown} bytes, but its prologue makes its frame {want}",
                    unwind_line(symbols, f.addr.get(), Kind::Return, 1)
                ),
            );
        }
    }
    if sized == 0 && hit.backtrace.iter().any(|f| f.size.is_some()) && symbols.frame_sizes_read() {
        fail(
            Check::FrameSize,
            "no frame size on the Call Trace could be held against the ELF's prologues".into(),
        );
    }

    // The context: an entry frame between the fault and the task entry
    // means the fault hit inside an exception handler. The faulting frame
    // itself being entry code (a push of an interrupt's half-built frame)
    // does not: no handler ran, the context is still the interrupted one.
    // Nor does `irq_common` returning into its exit path: its handler has
    // returned, and a preemption from there (`schedule`, and the RCU
    // callbacks a switch runs) is the interrupted task's, as Linux's
    // `preempt_schedule_irq` is.
    let preempting = |f: &unwind::Frame| Some(f.pc) == symbols.irq_exit_return();
    let shown = if on_irq_stack {
        Context::Irq
    } else if u.frames.iter().skip(1).any(|f| f.entry && !preempting(f)) {
        Context::Exception
    } else {
        Context::Task
    };
    if ended_well && hit.context != shown {
        fail(
            Check::Context,
            format!(
                "the `CPU:` line says context {}, but the unwound stack shows {} ({})",
                hit.context,
                shown,
                match shown {
                    Context::Irq => "the IRQ stack",
                    Context::Exception => "an exception entry frame below the fault",
                    Context::Task => "no entry frame between the fault and the task entry",
                }
            ),
        );
    }
    Judged {
        unwind: Some(u),
        failures,
    }
}
