//! One `GUARD-HIT`'s claims, each held against what the fault handler did
//! not write: where the fault really is (`truth`), the `STACK-ALLOC` the
//! scenario announced, the scenario's expectation and the guest ELF. One
//! function per claim; each adds the failures it finds.
use super::truth::truth_of;
use super::PAGE;
use crate::report::lines::{Alloc, Hit};
use crate::report::{functions_near, return_addresses, Check, Failure};
use crate::symbols::Symbolize;
use abi::guard::{GuardExpect, Verdict};

type Failures = Vec<Failure>;

fn fail(out: &mut Failures, check: Check, detail: String) {
    out.push(Failure { check, detail });
}

/// Judge one hit: the fault's real place, and every claim that failed.
pub(super) fn judge_hit(
    hit: &Hit,
    alloc: Option<&Alloc>,
    expect: &GuardExpect,
    symbols: Option<&dyn Symbolize>,
    recovered: Option<bool>,
) -> (Verdict, Failures) {
    let mut out = Vec::new();
    let (truth, by_rsp) = real_place(hit, alloc, &mut out);
    kind(hit, truth, by_rsp, &mut out);
    if matches!(truth, Verdict::Overflow | Verdict::Underflow) {
        guard(hit, alloc, truth, &mut out);
        if let Some(a) = alloc {
            bytes(hit, a, truth, &mut out);
        }
    }
    if let Some(a) = alloc {
        announced(hit, a, &mut out);
    }
    stack_kind(hit, expect, &mut out);
    if let Some(want) = expect.backtrace_fn {
        backtrace(hit, want, symbols, &mut out);
    }
    if expect.recursion && truth == Verdict::Overflow {
        depth(hit, alloc, &mut out);
        recursion_frame(hit, alloc, &mut out);
    }
    if let Some(want) = recovered {
        if truth != Verdict::NotCaught {
            recovery(hit, want, &mut out);
        }
    }
    (truth, out)
}

/// Where the fault is: by the announced stack, or, with none announced, by
/// the reported guard alone (and that is itself a failure).
fn real_place(hit: &Hit, alloc: Option<&Alloc>, out: &mut Failures) -> (Verdict, bool) {
    match alloc {
        Some(a) => truth_of(hit, a),
        None => {
            fail(
                out,
                Check::Announced,
                "no STACK-ALLOC announced the stack: nothing to hold the report against".into(),
            );
            let reported_guard = hit.guard_lo.0..hit.guard_hi.0;
            let v = match Verdict::of_claim(hit.kind) {
                v @ (Verdict::Overflow | Verdict::Underflow)
                    if reported_guard.contains(&hit.fault_addr.0) =>
                {
                    v
                }
                _ => Verdict::GuardJumped,
            };
            (v, false)
        }
    }
}

/// The kind the report claims (overflow, underflow, jumped).
fn kind(hit: &Hit, truth: Verdict, by_rsp: bool, out: &mut Failures) {
    if Verdict::of_claim(hit.kind) == truth {
        return;
    }
    let place = match truth {
        Verdict::Overflow if by_rsp => {
            "in no guard, but the interrupted RSP leaves no room for an exception frame above the announced stack's bottom: an overflow"
        }
        Verdict::Overflow => "in the guard below the stack",
        Verdict::Underflow => "in the guard above the stack",
        _ => "in no guard of the announced stack",
    };
    fail(
        out,
        Check::Kind,
        format!(
            "reported `{}`, but the fault at {:#x} is {place}",
            hit.kind, hit.fault_addr.0
        ),
    );
}

/// The reported guard: holds the fault, and is the announced number of
/// pages right against the stack on the side that was hit.
fn guard(hit: &Hit, alloc: Option<&Alloc>, truth: Verdict, out: &mut Failures) {
    if !(hit.guard_lo.0..hit.guard_hi.0).contains(&hit.fault_addr.0) {
        fail(
            out,
            Check::FaultInGuard,
            format!(
                "fault {:#x} outside the reported guard {:#x}..{:#x}",
                hit.fault_addr.0, hit.guard_lo.0, hit.guard_hi.0
            ),
        );
    }
    let below = truth == Verdict::Overflow;
    let (touches, pages) = if below {
        (
            hit.guard_hi.0 == hit.stack_lo.0,
            alloc.map_or(0, |a| a.guard_below),
        )
    } else {
        (
            hit.guard_lo.0 == hit.stack_hi.0,
            alloc.map_or(0, |a| a.guard_above),
        )
    };
    let size = hit.guard_hi.0.wrapping_sub(hit.guard_lo.0);
    if !touches || (alloc.is_some() && size != pages * PAGE) {
        fail(
            out,
            Check::GuardAdjacent,
            format!(
                "guard {:#x}..{:#x} is not the {pages} page(s) {} the stack {:#x}..{:#x}",
                hit.guard_lo.0,
                hit.guard_hi.0,
                if below { "right below" } else { "right above" },
                hit.stack_lo.0,
                hit.stack_hi.0
            ),
        );
    }
}

/// "overflow by N bytes": N is how far the fault lies past the announced
/// stack.
fn bytes(hit: &Hit, a: &Alloc, truth: Verdict, out: &mut Failures) {
    let (want, side) = if truth == Verdict::Overflow {
        (a.lo.0.saturating_sub(hit.fault_addr.0), "below")
    } else {
        (hit.fault_addr.0.saturating_sub(a.hi.0) + 1, "above")
    };
    if hit.bytes != want {
        fail(
            out,
            Check::Bytes,
            format!(
                "the `Oops:` line says {} by {} bytes, but the fault at {:#x} is {want} bytes {side} the announced stack {:#x}..{:#x}",
                hit.kind, hit.bytes, hit.fault_addr.0, a.lo.0, a.hi.0
            ),
        );
    }
}

/// The stack's bounds, CPU and task, as the scenario announced them.
fn announced(hit: &Hit, a: &Alloc, out: &mut Failures) {
    if (hit.stack_lo.0, hit.stack_hi.0) != (a.lo.0, a.hi.0) {
        fail(
            out,
            Check::Bounds,
            format!(
                "reported stack {:#x}..{:#x}, announced {:#x}..{:#x}",
                hit.stack_lo.0, hit.stack_hi.0, a.lo.0, a.hi.0
            ),
        );
    }
    if hit.cpu != a.cpu {
        fail(
            out,
            Check::Cpu,
            format!(
                "reported CPU {}, the stack was running on CPU {}",
                hit.cpu, a.cpu
            ),
        );
    }
    if (hit.task_id, hit.task_name) != (a.task_id, a.task_name) {
        fail(
            out,
            Check::Task,
            format!(
                "reported task {} '{}', announced task {} '{}'",
                hit.task_id, hit.task_name, a.task_id, a.task_name
            ),
        );
    }
}

/// The kind of stack (task, IRQ, ...) the scenario overflows.
fn stack_kind(hit: &Hit, expect: &GuardExpect, out: &mut Failures) {
    if hit.stack_kind != Some(expect.stack_kind) {
        fail(
            out,
            Check::StackKind,
            format!(
                "reported a {} stack, expected {}",
                abi::kinds::StackKind::linux_name_of(hit.stack_kind),
                expect.stack_kind.linux_name()
            ),
        );
    }
}

/// The function the scenario recurses in is among those the backtrace's
/// addresses really fall in (by the guest ELF, not the guest's names).
fn backtrace(hit: &Hit, want: &str, symbols: Option<&dyn Symbolize>, out: &mut Failures) {
    let Some(symbols) = symbols else {
        fail(
            out,
            Check::Backtrace,
            "no guest ELF to symbolize the backtrace with".into(),
        );
        return;
    };
    let names = functions_near(symbols, hit.rip.0, &return_addresses(&hit.backtrace));
    if !names.iter().any(|n| n.contains(want)) {
        let shown = if names.is_empty() {
            "no known function".to_string()
        } else {
            names.join(", ")
        };
        fail(
            out,
            Check::Backtrace,
            format!("no `{want}` in the backtrace: {shown}"),
        );
    }
}

/// The recursion depth, times the announced frame size, fills about the
/// stack (the exact frame-by-frame check is `trace`'s).
fn depth(hit: &Hit, alloc: Option<&Alloc>, out: &mut Failures) {
    let a = alloc.map(|a| (a.frame_bytes, a.hi.0 - a.lo.0));
    match (hit.depth, a) {
        (None, _) => fail(out, Check::Depth, "no recursion depth reported".into()),
        (_, Some((0, _))) => fail(out, Check::Depth, "no frame size announced".into()),
        (Some(d), Some((frame, size))) => {
            let used = d.saturating_mul(frame);
            // The stack holds more than the recursion (the task's entry
            // frames), and the last frame is cut short by the guard.
            if used * 100 < size * 50 || used * 100 > size * 110 {
                fail(
                    out,
                    Check::Depth,
                    format!(
                        "depth {d} × {frame} bytes = {used} bytes, implausible for a {size}-byte stack"
                    ),
                );
            }
        }
        (Some(_), None) => {}
    }
}

/// The recursing function's frame on the Call Trace (its longest run) is
/// the frame size the scenario measured when it announced the stack.
fn recursion_frame(hit: &Hit, alloc: Option<&Alloc>, out: &mut Failures) {
    let Some(measured) = alloc.map(|a| a.frame_bytes).filter(|&b| b > 0) else {
        return;
    };
    // A report with no sizes at all is from a guest before they existed
    // (the captured fixtures); one that sizes some frames must size this.
    if hit.backtrace.iter().all(|f| f.size.is_none()) {
        return;
    }
    let run = hit
        .backtrace
        .iter()
        .filter(|f| f.repeat > 1)
        .max_by_key(|f| f.repeat);
    match run.map(|f| (f.size, f.repeat)) {
        Some((Some(shown), _)) if u64::from(shown) == measured => {}
        Some((shown, n)) => fail(
            out,
            Check::FrameSize,
            format!(
                "the recursion's frame ({n} in a row) is shown as {}, but the scenario measured {measured} bytes",
                shown.map_or("no size".to_string(), |s| format!("{s} bytes"))
            ),
        ),
        None => {}
    }
}

/// `recovered` says what the scenario expects: the task killed and the
/// boot going on, or the machine stopped.
fn recovery(hit: &Hit, want: bool, out: &mut Failures) {
    if hit.recovered != want {
        fail(
            out,
            Check::Recovered,
            format!(
                "recovered: {}, but the scenario {}",
                hit.recovered,
                if want {
                    "expects the task killed and the boot to go on"
                } else {
                    "cannot recover"
                }
            ),
        );
    }
}
