//! What a caught task held, what the kill path decided, and the proof that
//! the machine recovered: the records behind `recovered: true`.
//!
//! `TASK-STATE` (`TaskState`): printed with every caught fault's oops. The
//! task's preemption and RCU nesting, its interrupt state, every lock and
//! section on its held-lock stack (name, file:line where taken), and the
//! exit policy's decision: kill (after resetting what it names) or stop
//! ("caught, cannot recover", and why).
//!
//! `RECOVERY` (`Recovery`): after every kill, what the guest found once the
//! CPU had moved on: its `preempt_count`, interrupts left in service at the
//! LAPIC, what the dead task still held, the tick on that CPU, and a grace
//! period that began after the kill and completed. `RECOVERY-TALLY`
//! (`RecoveryTally`): per scenario, kills and how many were proven, so the
//! reports a storm suppresses are still accounted for.
//!
//! `EXPECT`: what each atomic-context scenario's `TASK-STATE` must say.

use crate::named_enum;
use crate::record::Record;
use serde::{Deserialize, Serialize};

/// Entries a `TASK-STATE` names (the guest's held-lock stack depth).
pub const MAX_HELD: usize = 8;

named_enum! {
    /// What a held-lock entry stands for.
    pub enum HeldKind {
        /// A spin lock with interrupts off (`spin_lock_irqsave`: `IrqLock`).
        IrqLock = "irq-lock",
        /// A spin lock that leaves interrupts alone (`SpinLock`).
        SpinLock = "spin-lock",
        /// An interrupts-off section without a lock (`local_irq_save`).
        IrqsOff = "irqs-off",
        Preempt = "preempt",
        RcuRead = "rcu-read",
        /// A batch of RCU callbacks being run.
        RcuCallbacks = "rcu-callbacks",
    }
}

named_enum! {
    /// The exit policy's answer.
    pub enum Decision {
        /// The task is killed; the machine goes on.
        Kill = "kill",
        /// Caught, cannot recover: the machine stops.
        Stop = "stop",
    }
}

named_enum! {
    /// Why the machine had to stop instead of killing the task.
    pub enum StopKind {
        /// Linux: "Aiee, killing interrupt handler!".
        InInterrupt = "in-interrupt",
        /// Linux: "Attempted to kill the idle task!".
        IdleTask = "idle-task",
        /// The fault hit the held-lock bookkeeping mid-update.
        HeldStateUnreadable = "held-state-unreadable",
        /// An acquisition could not be recorded.
        HeldStateIncomplete = "held-state-incomplete",
        LockHeld = "lock-held",
        RcuCallbacks = "rcu-callbacks",
        IrqsOffSection = "irqs-off-section",
        /// The CPU's preempt_count is more than the task's sections explain.
        PreemptUnexplained = "preempt-unexplained",
        /// A stack the task does not own (IRQ, exception, boot stacks).
        NotTaskStack = "not-task-stack",
    }
}

/// One entry of the held-lock stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldLock<'a> {
    pub kind: HeldKind,
    pub name: &'a str,
    /// Where it was taken (`#[track_caller]`).
    pub file: &'a str,
    pub line: u32,
}

/// The faulting task's state and the exit policy's decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskState<'a> {
    pub scenario: &'a str,
    pub cpu: u32,
    pub task_id: u64,
    pub task_name: &'a str,
    /// The CPU's `preempt_count` at the fault.
    pub preempt_count: u32,
    /// The task's own nesting, by kind.
    pub preempt: u32,
    pub rcu: u32,
    pub rcu_callbacks: u32,
    /// Interrupts-off nesting: sections plus locks taken with interrupts off.
    pub irq_nesting: u32,
    /// RFLAGS.IF of the interrupted context.
    pub irqs_enabled: bool,
    /// Locks held, of any type.
    pub locks: u32,
    #[serde(borrow)]
    pub held: heapless::Vec<HeldLock<'a>, MAX_HELD>,
    /// Entries past the stack's depth: counted, not named.
    pub lost: u32,
    pub decision: Decision,
    pub stop: Option<StopKind>,
    /// The entry that decided a stop, if one did (also in `held`).
    pub stopped_by: Option<HeldLock<'a>>,
    /// What the kill path reset (Linux's "note: ... exited with ...").
    pub reset_preempt: u32,
    pub reset_rcu: u32,
    pub reset_irqs: bool,
}

impl Record for TaskState<'_> {
    const PREFIX: &'static str = "TASK-STATE ";
    fn scenario(&self) -> &str {
        self.scenario
    }
}

/// What the guest found after one kill, once the CPU had moved on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recovery<'a> {
    pub scenario: &'a str,
    pub task_id: u64,
    pub cpu: u32,
    /// Kills since boot, this one included.
    pub kill: u64,
    /// The CPU's `preempt_count` at its first switch after the kill.
    pub preempt_count: u32,
    /// Interrupt vectors still in service at the LAPIC then.
    pub in_service: u32,
    /// Entries the dead task's held-lock stack still has (locks, sections),
    /// and whether some of its acquisitions went unrecorded.
    pub held_left: u32,
    pub locks_left: u32,
    pub incomplete: bool,
    /// That CPU's tick count at the kill and when the proof was taken.
    pub ticks_at_kill: u64,
    pub ticks_after: u64,
    /// Grace periods started at the kill, and completed when the proof was
    /// taken: `gp_completed > gp_at_kill` means one that began after the
    /// kill has ended.
    pub gp_at_kill: u64,
    pub gp_completed: u64,
    /// Guest time from the kill to the proof.
    pub waited_us: u64,
}

impl Recovery<'_> {
    /// Every claim holds: what the runner requires of a kill.
    pub fn proven(&self) -> bool {
        self.failures().next().is_none()
    }

    /// The claims that do not hold, as short phrases.
    pub fn failures(&self) -> impl Iterator<Item = &'static str> + '_ {
        [
            (self.preempt_count != 0, "preempt_count not back to 0"),
            (self.in_service != 0, "an interrupt left in service"),
            (self.locks_left != 0, "the dead task still owns a lock"),
            (
                self.held_left != 0 || self.incomplete,
                "the dead task's held-lock stack is not empty",
            ),
            (
                self.ticks_after < self.ticks_at_kill + 2,
                "the tick did not advance on that CPU",
            ),
            (
                self.gp_completed <= self.gp_at_kill,
                "no grace period begun after the kill completed",
            ),
        ]
        .into_iter()
        .filter(|(bad, _)| *bad)
        .map(|(_, what)| what)
    }
}

impl Record for Recovery<'_> {
    const PREFIX: &'static str = "RECOVERY ";
    fn scenario(&self) -> &str {
        self.scenario
    }
}

/// Kills made while a scenario ran, and how many were proven.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryTally<'a> {
    pub scenario: &'a str,
    pub kills: u64,
    pub proven: u64,
    /// Kills whose proof was still pending when the scenario ended.
    pub pending: u64,
}

impl Record for RecoveryTally<'_> {
    const PREFIX: &'static str = "RECOVERY-TALLY ";
    fn scenario(&self) -> &str {
        self.scenario
    }
}

/// What an atomic-context scenario's `TASK-STATE` must say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AtomicExpect {
    pub scenario: &'static str,
    pub decision: Decision,
    /// For a stop: why, and the name of the entry that decided.
    pub stop: Option<StopKind>,
    pub stopped_by: Option<&'static str>,
    /// For a kill: what must have been reset.
    pub reset_preempt: u32,
    pub reset_rcu: u32,
    pub reset_irqs: bool,
}

const fn killed(scenario: &'static str, preempt: u32, rcu: u32, irqs: bool) -> AtomicExpect {
    AtomicExpect {
        scenario,
        decision: Decision::Kill,
        stop: None,
        stopped_by: None,
        reset_preempt: preempt,
        reset_rcu: rcu,
        reset_irqs: irqs,
    }
}

const fn stopped(scenario: &'static str, why: StopKind, by: &'static str) -> AtomicExpect {
    AtomicExpect {
        scenario,
        decision: Decision::Stop,
        stop: Some(why),
        stopped_by: Some(by),
        reset_preempt: 0,
        reset_rcu: 0,
        reset_irqs: false,
    }
}

/// The lock the lock-holding scenarios take, by name.
pub const VICTIM_LOCK: &str = "victim_lock";

/// Atomic-context scenarios and what their `TASK-STATE` must say. Every
/// other killed task must have held nothing (all resets 0).
pub const EXPECT: &[AtomicExpect] = &[
    killed("stack.irqs_off", 0, 0, true),
    // Inside the page-fault handler, which runs with interrupts off.
    killed("stack.exception", 0, 0, true),
    killed("stack.in_rcu", 0, 1, false),
    killed("stack.preempt_off", 1, 0, false),
    killed("stack.nested_atomic", 2, 2, false),
    stopped("stack.lock_held", StopKind::LockHeld, VICTIM_LOCK),
    stopped("stack.irqlock_held", StopKind::LockHeld, VICTIM_LOCK),
    stopped("stack.irqs_section", StopKind::IrqsOffSection, "irqs_off"),
    stopped(
        "stack.rcu_callback",
        StopKind::RcuCallbacks,
        "rcu_callbacks",
    ),
    stopped(
        "stack.rcu_callback_preempted",
        StopKind::RcuCallbacks,
        "rcu_callbacks",
    ),
];

/// The expectation for `scenario`, if it is an atomic-context one.
pub fn expect(scenario: &str) -> Option<&'static AtomicExpect> {
    EXPECT.iter().find(|e| e.scenario == scenario)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::round_trip;

    #[test]
    fn the_records_round_trip() {
        let mut buf = [0u8; 8192];
        let lock = HeldLock {
            kind: HeldKind::SpinLock,
            name: VICTIM_LOCK,
            file: "guest/src/scenarios/atomic.rs",
            line: 42,
        };
        let mut held = heapless::Vec::new();
        for &kind in HeldKind::ALL.iter().chain(&HeldKind::ALL[..2]) {
            held.push(HeldLock { kind, ..lock }).unwrap();
        }
        let state = TaskState {
            scenario: "stack.lock_held",
            cpu: 0,
            task_id: 7,
            task_name: "x",
            preempt_count: 1,
            preempt: 0,
            rcu: 1,
            rcu_callbacks: 0,
            irq_nesting: 0,
            irqs_enabled: true,
            locks: 1,
            held,
            lost: 0,
            decision: Decision::Stop,
            stop: Some(StopKind::LockHeld),
            stopped_by: Some(lock),
            reset_preempt: 0,
            reset_rcu: 0,
            reset_irqs: false,
        };
        round_trip(&state, &mut buf);
        let killed = TaskState {
            held: heapless::Vec::new(),
            decision: Decision::Kill,
            stop: None,
            stopped_by: None,
            reset_rcu: 1,
            ..state.clone()
        };
        round_trip(&killed, &mut buf);
        let r = Recovery {
            scenario: "stack.recursion",
            task_id: 3,
            cpu: 0,
            kill: 1,
            preempt_count: 0,
            in_service: 0,
            held_left: 0,
            locks_left: 0,
            incomplete: false,
            ticks_at_kill: 100,
            ticks_after: 103,
            gp_at_kill: 7,
            gp_completed: 8,
            waited_us: 9000,
        };
        round_trip(&r, &mut buf);
        assert!(r.proven());
        round_trip(
            &RecoveryTally {
                scenario: "stack.repeat",
                kills: 1000,
                proven: 1000,
                pending: 0,
            },
            &mut buf,
        );
    }

    #[test]
    fn every_claim_of_a_recovery_can_fail() {
        let good = Recovery {
            scenario: "s",
            task_id: 3,
            cpu: 0,
            kill: 1,
            preempt_count: 0,
            in_service: 0,
            held_left: 0,
            locks_left: 0,
            incomplete: false,
            ticks_at_kill: 100,
            ticks_after: 102,
            gp_at_kill: 7,
            gp_completed: 8,
            waited_us: 1,
        };
        assert!(good.proven());
        let bad = [
            Recovery {
                preempt_count: 1,
                ..good.clone()
            },
            Recovery {
                in_service: 1,
                ..good.clone()
            },
            Recovery {
                locks_left: 1,
                held_left: 1,
                ..good.clone()
            },
            Recovery {
                incomplete: true,
                ..good.clone()
            },
            Recovery {
                ticks_after: 101,
                ..good.clone()
            },
            Recovery {
                gp_completed: 7,
                ..good.clone()
            },
        ];
        for b in &bad {
            assert!(!b.proven(), "{b:?}");
        }
    }

    #[test]
    fn expectations_name_known_scenarios_once() {
        for (i, e) in EXPECT.iter().enumerate() {
            assert!(EXPECT[..i].iter().all(|o| o.scenario != e.scenario));
            assert_eq!(e.decision == Decision::Stop, e.stop.is_some());
            assert!(
                crate::scenario::find(e.scenario).is_some(),
                "{} is not in the catalog",
                e.scenario
            );
        }
    }
}
