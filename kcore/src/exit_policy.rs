//! The exit policy: whether killing a task leaves the kernel whole, judged
//! from what it holds (`lockdep::Held`) and where it faulted. Grounded in
//! Linux's `make_task_dead()`; see `lockdep`'s module doc for the rules.
use crate::lockdep::{Held, HeldEntry, HeldKind};
use core::fmt;

/// What the kill path knows besides the held-lock stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitContext {
    /// The fault came from an interrupt handler (or its stack).
    pub in_interrupt: bool,
    /// The task is a CPU's idle task (or the boot flow that became one).
    pub idle: bool,
    /// Whether the held-lock stack could be read: `false` when the fault hit
    /// the bookkeeping itself, mid-update.
    pub readable: bool,
    /// Some acquisition on this task could not be recorded (the fault came
    /// in the middle of recording another).
    pub incomplete: bool,
    /// Interrupts were enabled in the interrupted context (RFLAGS.IF).
    pub irqs_enabled: bool,
    /// The CPU's `preempt_count` at the fault.
    pub cpu_preempt_count: u32,
}

/// Why the machine must stop instead of killing the task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// Linux: "Aiee, killing interrupt handler!".
    InInterrupt,
    /// Linux: "Attempted to kill the idle task!".
    IdleTask,
    /// The held-lock stack was being changed when the fault hit.
    Unreadable,
    /// Some of what the task holds was never recorded.
    Incomplete,
    /// A lock nobody else can ever release.
    LockHeld(HeldEntry),
    /// RCU callbacks taken off the queue and not all run (their memory and
    /// `rcu_barrier`'s count would be lost).
    RcuCallbacks(HeldEntry),
    /// An interrupts-off section: whatever it guards is half changed.
    IrqsOffSection(HeldEntry),
    /// The CPU's `preempt_count` is more than the task's own sections
    /// explain: someone else's section would be reset with it.
    PreemptUnexplained { cpu: u32, task: u32 },
}

impl StopReason {
    /// A short class name for records (`lock-held`...).
    pub fn as_str(&self) -> &'static str {
        match self {
            StopReason::InInterrupt => "in-interrupt",
            StopReason::IdleTask => "idle-task",
            StopReason::Unreadable => "held-state-unreadable",
            StopReason::Incomplete => "held-state-incomplete",
            StopReason::LockHeld(_) => "lock-held",
            StopReason::RcuCallbacks(_) => "rcu-callbacks",
            StopReason::IrqsOffSection(_) => "irqs-off-section",
            StopReason::PreemptUnexplained { .. } => "preempt-unexplained",
        }
    }

    /// The entry that decided, if one did.
    pub fn entry(&self) -> Option<HeldEntry> {
        match *self {
            StopReason::LockHeld(e)
            | StopReason::RcuCallbacks(e)
            | StopReason::IrqsOffSection(e) => Some(e),
            _ => None,
        }
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::InInterrupt => f.write_str("the fault is in interrupt context"),
            StopReason::IdleTask => f.write_str("the task is a CPU's idle task"),
            StopReason::Unreadable => {
                f.write_str("the fault hit the held-lock bookkeeping while it changed")
            }
            StopReason::Incomplete => {
                f.write_str("an acquisition by this task could not be recorded")
            }
            StopReason::LockHeld(e) => write!(
                f,
                "{e} held (acquired at {}), which nobody else could ever release",
                e.site
            ),
            StopReason::RcuCallbacks(e) => write!(
                f,
                "RCU callbacks running (from {}): the rest of the batch would be lost",
                e.site
            ),
            StopReason::IrqsOffSection(e) => write!(
                f,
                "inside an interrupts-off section entered at {}: what it guards is half changed",
                e.site
            ),
            StopReason::PreemptUnexplained { cpu, task } => write!(
                f,
                "preempt_count {cpu} on the CPU, but the task's own sections account for {task}"
            ),
        }
    }
}

/// What the kill path resets, and says it reset (Linux's "note:" lines).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Fixups {
    /// `preempt_disable` nesting dropped.
    pub preempt: u32,
    /// RCU read-side nesting dropped.
    pub rcu: u32,
    /// Interrupts were off (not in any tracked section) and are turned back on.
    pub irqs_disabled: bool,
}

impl Fixups {
    pub fn is_empty(&self) -> bool {
        *self == Fixups::default()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitVerdict {
    /// Kill the task, after these resets.
    Kill(Fixups),
    /// Stop the machine: caught, cannot recover.
    Stop(StopReason),
}

/// The exit policy: may the task be killed, and what must be reset first?
pub fn exit_verdict(held: &Held, cx: &ExitContext) -> ExitVerdict {
    if cx.in_interrupt {
        return ExitVerdict::Stop(StopReason::InInterrupt);
    }
    if cx.idle {
        return ExitVerdict::Stop(StopReason::IdleTask);
    }
    if !cx.readable {
        return ExitVerdict::Stop(StopReason::Unreadable);
    }
    if cx.incomplete || held.lost() > 0 && !lost_are_sections(held) {
        return ExitVerdict::Stop(StopReason::Incomplete);
    }
    if let Some(e) = held.blocking() {
        return ExitVerdict::Stop(match e.kind {
            HeldKind::RcuCallbacks => StopReason::RcuCallbacks(e),
            HeldKind::IrqsOff => StopReason::IrqsOffSection(e),
            _ => StopReason::LockHeld(e),
        });
    }
    let d = held.depths();
    if cx.cpu_preempt_count != d.preempt_count() {
        return ExitVerdict::Stop(StopReason::PreemptUnexplained {
            cpu: cx.cpu_preempt_count,
            task: d.preempt_count(),
        });
    }
    ExitVerdict::Kill(Fixups {
        preempt: d.preempt,
        rcu: d.rcu,
        irqs_disabled: !cx.irqs_enabled,
    })
}

/// Unnamed entries can only be preemption or RCU sections when every other
/// kind counted is also named.
fn lost_are_sections(held: &Held) -> bool {
    let d = held.depths();
    let named_others = held
        .entries()
        .filter(|e| !matches!(e.kind, HeldKind::Preempt | HeldKind::RcuRead))
        .count() as u32;
    d.locks() + d.irqs_off + d.callbacks == named_others
}
