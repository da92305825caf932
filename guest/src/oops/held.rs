//! What the caught task held, and whether it may be killed: the exit
//! policy (`kcore::lockdep::exit_verdict`) applied to the task's held-lock
//! stack at the fault, and the lines that tell it.
//!
//! `decide` runs in the fault handler before the report is written, so the
//! report's `recovered` says what will really happen; `report` prints the
//! task's state (Linux's `note: ... exited with preempt_count N`, lockdep's
//! `N locks held by ...` list) and its `TASK-STATE` record, right after the
//! oops, from the kill path.
use super::Action;
use crate::arch::x86_64::percpu::{self, MAX_CPUS};
use crate::arch::x86_64::trap::{self, TrapFrame};
use crate::sync::lockdep;
use abi::held::{Decision, HeldLock, StopKind, TaskState};
use core::fmt::Write;
use core::sync::atomic::Ordering;
use kcore::lockdep::{
    exit_verdict, ExitContext, ExitVerdict, Fixups, Held, HeldEntry, HeldKind, StopReason,
};
use spin::Mutex;

const IF: u64 = 1 << 9;

/// What the handler found and decided about the task it interrupted.
#[derive(Clone)]
pub struct Decided {
    pub cpu: usize,
    pub task_id: u64,
    comm: ([u8; 16], usize),
    /// The held-lock stack as it was (before any reset); `None` if it was
    /// being changed when the fault hit.
    held: Option<Held>,
    pub cx: ExitContext,
    pub verdict: ExitVerdict,
    /// The stack was not the task's own (the handler had already said
    /// Fatal): not the exit policy's stop, the old "caught, fatal".
    not_task_stack: bool,
    quiet: bool,
}

impl Decided {
    pub fn fixups(&self) -> Option<Fixups> {
        match self.verdict {
            ExitVerdict::Kill(f) => Some(f),
            ExitVerdict::Stop(_) => None,
        }
    }

    /// The exit policy refused a kill the handler would have made.
    pub fn policy_stop(&self) -> Option<StopReason> {
        match self.verdict {
            ExitVerdict::Stop(r) if !self.not_task_stack => Some(r),
            _ => None,
        }
    }

    /// Reports were rate-limited when it was made.
    pub fn quiet(&self) -> bool {
        self.quiet
    }

    fn comm(&self) -> &str {
        core::str::from_utf8(&self.comm.0[..self.comm.1]).unwrap_or("?")
    }
}

/// The last decision per CPU, from `decide` to the kill path.
static DECIDED: [Mutex<Option<Decided>>; MAX_CPUS] = [const { Mutex::new(None) }; MAX_CPUS];

/// Apply the exit policy to a kill the fault handler `proposed`: `Kill`
/// stays a kill only if the task holds nothing the kernel needs; else the
/// machine stops (`Fatal`, with the reason kept for the kill path).
pub fn decide(frame: &TrapFrame, proposed: Action) -> Action {
    let cpu = percpu::this();
    let (task_id, comm, idle) = crate::task::with_current(|t| (t.id, t.name_bytes(), t.is_idle()))
        .unwrap_or((0, ([0; 16], 0), false));
    let (held, missed) = lockdep::current().unwrap_or((None, 0));
    let cx = ExitContext {
        in_interrupt: cpu.in_irq(),
        idle,
        readable: held.is_some(),
        incomplete: missed > 0,
        // In a device interrupt's entry code IF is the gate's doing, not
        // the task's: the task's own is in the frame the CPU pushed.
        irqs_enabled: trap::half_built(frame).map_or(frame.rflags, |h| h.rflags) & IF != 0,
        cpu_preempt_count: cpu.preempt_count(),
    };
    let not_task_stack = proposed == Action::Fatal;
    let verdict = match (&held, proposed) {
        (_, Action::Fatal) => ExitVerdict::Stop(if cx.in_interrupt {
            StopReason::InInterrupt
        } else {
            StopReason::Unreadable
        }),
        (Some(h), Action::Kill(_)) => exit_verdict(h, &cx),
        (None, Action::Kill(_)) => exit_verdict(&Held::new(), &cx),
    };
    // The defect "a kill path that never looks at what the task held".
    let verdict = match (verdict, &held) {
        (ExitVerdict::Stop(_), Some(h))
            if cfg!(defect = "kill-ignores-locks") && !not_task_stack =>
        {
            ExitVerdict::Kill(Fixups {
                preempt: h.depths().preempt,
                rcu: h.depths().rcu,
                irqs_disabled: !cx.irqs_enabled,
            })
        }
        (v, _) => v,
    };
    let action = match verdict {
        ExitVerdict::Kill(_) => proposed,
        ExitVerdict::Stop(_) => Action::Fatal,
    };
    // A try-lock: a fault inside this handler on this CPU (it holds the
    // slot) must not wait for itself; the kill path then decides anew.
    let Some(mut slot) = DECIDED[cpu.id].try_lock() else {
        return action;
    };
    *slot = Some(Decided {
        cpu: cpu.id,
        task_id,
        comm,
        held,
        cx,
        verdict,
        not_task_stack,
        quiet: super::QUIET.load(Ordering::Acquire),
    });
    action
}

/// The scenario running now (for the kill path's records).
pub fn scenario() -> &'static str {
    super::scenario()
}

/// This CPU's decision, taken (the kill path acts on it once).
pub fn take() -> Option<Decided> {
    DECIDED[percpu::this().id].try_lock()?.take()
}

fn kind(k: HeldKind) -> abi::held::HeldKind {
    use abi::held::HeldKind as A;
    match k {
        HeldKind::IrqLock => A::IrqLock,
        HeldKind::SpinLock => A::SpinLock,
        HeldKind::IrqsOff => A::IrqsOff,
        HeldKind::Preempt => A::Preempt,
        HeldKind::RcuRead => A::RcuRead,
        HeldKind::RcuCallbacks => A::RcuCallbacks,
    }
}

fn stop_kind(r: &StopReason) -> StopKind {
    match r {
        StopReason::InInterrupt => StopKind::InInterrupt,
        StopReason::IdleTask => StopKind::IdleTask,
        StopReason::Unreadable => StopKind::HeldStateUnreadable,
        StopReason::Incomplete => StopKind::HeldStateIncomplete,
        StopReason::LockHeld(_) => StopKind::LockHeld,
        StopReason::RcuCallbacks(_) => StopKind::RcuCallbacks,
        StopReason::IrqsOffSection(_) => StopKind::IrqsOffSection,
        StopReason::PreemptUnexplained { .. } => StopKind::PreemptUnexplained,
    }
}

fn record_entry(e: &HeldEntry) -> HeldLock<'static> {
    HeldLock {
        kind: kind(e.kind),
        name: e.name,
        file: e.site.file(),
        line: e.site.line(),
    }
}

/// Print what the task held and what was decided, after the oops (both
/// suppressed, like the oops, while reports are rate-limited).
pub fn report(d: &Decided) {
    if d.quiet {
        return;
    }
    crate::console::report(|w| {
        let _ = write_lines(w, d);
        let held = d.held.as_ref();
        let depths = held.map(|h| h.depths()).unwrap_or_default();
        let mut entries = heapless::Vec::new();
        for e in held.into_iter().flat_map(|h| h.entries()) {
            let _ = entries.push(record_entry(e));
        }
        let (stop, stopped_by) = match &d.verdict {
            ExitVerdict::Stop(_) if d.not_task_stack => (
                Some(if d.cx.in_interrupt {
                    StopKind::InInterrupt
                } else {
                    StopKind::NotTaskStack
                }),
                None,
            ),
            ExitVerdict::Stop(r) => (Some(stop_kind(r)), r.entry().map(|e| record_entry(&e))),
            ExitVerdict::Kill(_) => (None, None),
        };
        let fix = d.fixups().unwrap_or_default();
        w.record(&TaskState {
            scenario: super::scenario(),
            cpu: d.cpu as u32,
            task_id: d.task_id,
            task_name: d.comm(),
            preempt_count: d.cx.cpu_preempt_count,
            preempt: depths.preempt,
            rcu: depths.rcu,
            rcu_callbacks: depths.callbacks,
            irq_nesting: depths.irq_nesting(),
            irqs_enabled: d.cx.irqs_enabled,
            locks: depths.locks(),
            held: entries,
            lost: held.map_or(0, |h| h.lost()),
            decision: match d.verdict {
                ExitVerdict::Kill(_) => Decision::Kill,
                ExitVerdict::Stop(_) => Decision::Stop,
            },
            stop,
            stopped_by,
            reset_preempt: fix.preempt,
            reset_rcu: fix.rcu,
            reset_irqs: fix.irqs_disabled,
        });
    });
}

fn write_lines(w: &mut impl Write, d: &Decided) -> core::fmt::Result {
    let comm = d.comm();
    let id = d.task_id;
    let Some(held) = &d.held else {
        return writeln!(
            w,
            "held: task {id} '{comm}': its held-lock stack was being changed when the fault hit"
        );
    };
    let depths = held.depths();
    writeln!(
        w,
        "held: preempt_count {} (preempt_disable {}, rcu_read_lock {}, rcu callbacks {}), interrupts {} ({} irqs-off nesting)",
        d.cx.cpu_preempt_count,
        depths.preempt,
        depths.rcu,
        depths.callbacks,
        if d.cx.irqs_enabled { "on" } else { "off" },
        depths.irq_nesting()
    )?;
    let n = held.named() + held.lost() as usize;
    if n == 0 {
        writeln!(w, "no locks held by task {id} '{comm}'")?;
    } else {
        writeln!(
            w,
            "{n} lock{} held by task {id} '{comm}':",
            if n == 1 { "" } else { "s" }
        )?;
        for (i, e) in held.entries().enumerate() {
            let verb = if e.kind.is_lock() {
                "acquired"
            } else {
                "entered"
            };
            writeln!(w, " #{i}: {e} ({}), {verb} at {}", kind(e.kind), e.site)?;
        }
        if held.lost() > 0 {
            writeln!(w, " ... and {} more, not named", held.lost())?;
        }
    }
    match &d.verdict {
        ExitVerdict::Kill(f) => {
            // Linux's make_task_dead() wording.
            if f.irqs_disabled {
                writeln!(w, "note: {comm}[{id}] exited with irqs disabled")?;
            }
            if f.preempt + f.rcu > 0 {
                writeln!(
                    w,
                    "note: {comm}[{id}] exited with preempt_count {}",
                    f.preempt + f.rcu
                )?;
            }
            Ok(())
        }
        ExitVerdict::Stop(_) if d.not_task_stack => Ok(()),
        ExitVerdict::Stop(r) => writeln!(w, "caught, cannot recover: {r}"),
    }
}
