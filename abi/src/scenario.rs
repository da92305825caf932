//! The scenario catalog: every scenario the guest can run, and what the runner
//! should expect from it.
//!
//! One table serves both sides: the guest dispatches on `name`, the runner
//! validates user patterns against it (without booting), groups scenarios into
//! boots and compares each outcome with `expect`.

use crate::guard::{GuardExpect, Verdict};
use crate::kinds::{Access, ObjectKind, StackKind};
use crate::uaf::UafExpect;

/// How one boot ended, as the runner classifies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The guest reported every test `ok` and exited with `GuestExit::Pass`.
    Pass,
    /// The report is complete and some test is `not ok`.
    Fail,
    /// The guest panicked (a `PANIC` record and `GuestExit::Panic`).
    Panic,
    /// A fault was caught and explained, but the guest had to stop.
    CaughtFatal,
    /// A fault in a task was caught, but the task held something the kernel
    /// needs, so it could not be killed: the guest stopped ("caught, cannot
    /// recover"), saying why.
    CaughtUnrecoverable,
    /// QEMU ended without a guest exit code under `-no-reboot`: a reset, in
    /// practice a triple fault.
    Reset,
    /// The runner's deadline passed; QEMU was killed.
    Timeout,
    /// QEMU itself could not start (bad option, missing firmware...).
    QemuFailed,
    /// The serial report is missing, truncated or inconsistent with the exit code.
    Malformed,
    /// The direct-boot loader refused to start the guest.
    LoaderError,
    /// The serial line carried more than the runner's budget (a guest or
    /// QEMU flooding it); QEMU was killed.
    Flood,
}

impl Outcome {
    /// Every outcome, for tests that must cover them all.
    pub const ALL: [Outcome; 11] = [
        Outcome::Pass,
        Outcome::Fail,
        Outcome::Panic,
        Outcome::CaughtFatal,
        Outcome::CaughtUnrecoverable,
        Outcome::Reset,
        Outcome::Timeout,
        Outcome::QemuFailed,
        Outcome::Malformed,
        Outcome::LoaderError,
        Outcome::Flood,
    ];

    /// A short lowercase name used in summaries, JSON and test assertions.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Panic => "panic",
            Outcome::CaughtFatal => "caught-fatal",
            Outcome::CaughtUnrecoverable => "caught-unrecoverable",
            Outcome::Reset => "reset",
            Outcome::Timeout => "timeout",
            Outcome::QemuFailed => "qemu-failed",
            Outcome::Malformed => "malformed",
            Outcome::LoaderError => "loader-error",
            Outcome::Flood => "flood",
        }
    }
}

/// When the guest may answer a scenario with `ok ... # SKIP`: anywhere else
/// a skip is a failure, so a guest cannot skip its way past a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipAllowed {
    Never,
    /// The scenario needs this many CPUs; with fewer it has nothing to do.
    BelowCpus(u32),
}

impl SkipAllowed {
    /// Whether a skip at `cpus` CPUs is one the catalog allows.
    pub const fn allows(self, cpus: u32) -> bool {
        match self {
            SkipAllowed::Never => false,
            SkipAllowed::BelowCpus(n) => cpus < n,
        }
    }
}

/// One scenario the guest knows how to run.
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    /// Dotted name, `area.what` (`boot.smoke`).
    pub name: &'static str,
    /// One line for `runner list`.
    pub summary: &'static str,
    /// The outcome that counts as the scenario behaving correctly. Negative
    /// controls expect a failure class: that is how the runner proves it can
    /// tell failures apart.
    pub expect: Outcome,
    /// Needs a boot of its own: it ends the machine (hang, reset, panic) or
    /// spoils the report for whatever runs beside it.
    pub isolated: bool,
    /// Part of the default set (`runner run` without patterns, `make run`).
    pub default: bool,
    /// The CPU counts `runner test` boots it with.
    pub test_smp: &'static [u32],
    /// For stack scenarios: how the fault must come out and be explained.
    pub guard: Option<GuardExpect>,
    /// For use-after-free scenarios: what the report must say.
    pub uaf: Option<UafExpect>,
    /// When a guest SKIP is an answer, not a failure.
    pub skip: SkipAllowed,
}

const fn check(name: &'static str, summary: &'static str, test_smp: &'static [u32]) -> Scenario {
    Scenario {
        name,
        summary,
        expect: Outcome::Pass,
        isolated: false,
        default: true,
        test_smp,
        guard: None,
        uaf: None,
        skip: SkipAllowed::Never,
    }
}

/// A negative control: a scenario built to fail in one particular way.
const fn control(name: &'static str, summary: &'static str, expect: Outcome) -> Scenario {
    Scenario {
        name,
        summary,
        expect,
        isolated: true,
        default: false,
        test_smp: &[1],
        guard: None,
        uaf: None,
        skip: SkipAllowed::Never,
    }
}

/// A stack scenario that recovers (the offending task is killed) and so
/// can share a boot with others.
const fn stack(
    name: &'static str,
    summary: &'static str,
    test_smp: &'static [u32],
    guard: GuardExpect,
) -> Scenario {
    Scenario {
        name,
        summary,
        expect: Outcome::Pass,
        isolated: false,
        default: true,
        test_smp,
        guard: Some(guard),
        uaf: None,
        skip: SkipAllowed::Never,
    }
}

/// A stack scenario that ends the machine: it needs a boot of its own.
const fn stack_fatal(
    name: &'static str,
    summary: &'static str,
    expect: Outcome,
    guard: GuardExpect,
) -> Scenario {
    Scenario {
        name,
        summary,
        expect,
        isolated: true,
        default: true,
        test_smp: &[1],
        guard: Some(guard),
        uaf: None,
        skip: SkipAllowed::Never,
    }
}

/// A stack scenario whose task holds something the kernel needs when it
/// overflows: caught, and the machine must stop rather than kill it.
const fn stack_unrecoverable(
    name: &'static str,
    summary: &'static str,
    guard: GuardExpect,
) -> Scenario {
    Scenario {
        expect: Outcome::CaughtUnrecoverable,
        ..stack_fatal(name, summary, Outcome::CaughtUnrecoverable, guard)
    }
}

/// A use after free that is caught and contained (the reader is killed).
const fn uaf(name: &'static str, summary: &'static str, expect: UafExpect) -> Scenario {
    Scenario {
        uaf: Some(expect),
        ..check(name, summary, &[1, 4])
    }
}

const fn caught(
    verdict: Verdict,
    stack_kind: StackKind,
    backtrace_fn: Option<&'static str>,
) -> GuardExpect {
    GuardExpect {
        verdict,
        stack_kind,
        backtrace_fn,
        hits: 1,
        recursion: false,
    }
}

const fn recursion(backtrace_fn: &'static str) -> GuardExpect {
    GuardExpect {
        verdict: Verdict::Overflow,
        stack_kind: StackKind::Task,
        backtrace_fn: Some(backtrace_fn),
        hits: 1,
        recursion: true,
    }
}

/// Every scenario, in the order `runner list` shows them.
pub const SCENARIOS: &[Scenario] = &[
    check(
        "boot.smoke",
        "the boot protocol gave a sane world: memory map, HHDM, executable address, RSDP, all CPUs",
        &[1, 4],
    ),
    check(
        "boot.conformance",
        "the boot facts the guest sees, as `# fact key=value` lines for `runner compare-boot`",
        &[4],
    ),
    check(
        "core.spawn_join",
        "10 000 tasks spread over all CPUs, all joined, every result checked",
        &[1, 4],
    ),
    check(
        "core.preempt",
        "CPU-bound tasks that never yield all make progress (timer preemption)",
        &[1, 4],
    ),
    check(
        "core.leak",
        "100 000 spawn/exit cycles per stack strategy; frame, vmalloc and heap counters return to baseline",
        &[1, 4],
    ),
    check(
        "core.shootdown",
        "a page unmapped on one CPU faults when touched on every other (TLB shootdown)",
        &[1, 4],
    ),
    check(
        "core.current",
        "current() is right on every CPU after thousands of migrations, and the held-lock stack follows it",
        &[1, 4],
    ),
    check(
        "core.guard_layout",
        "every stack of every kind has its guard pages unmapped (page-table walk)",
        &[1, 4],
    ),
    Scenario {
        name: "bench.spawn",
        summary: "spawn + run-empty + exit + join cost per stack strategy (TSC cycles)",
        expect: Outcome::Pass,
        isolated: false,
        default: false,
        test_smp: &[1],
        guard: None,
        uaf: None,
        skip: SkipAllowed::Never,
    },
    Scenario {
        name: "bench.fork_heavy",
        summary: "many short tasks per grace period on all CPUs: cost per task and stack-cache hit rate per free mode",
        expect: Outcome::Pass,
        isolated: false,
        default: false,
        test_smp: &[4],
        guard: None,
        uaf: None,
        skip: SkipAllowed::Never,
    },
    stack(
        "stack.recursion",
        "unbounded recursion on a vmapped task stack: caught, overflow, task killed",
        &[1],
        recursion("stack_recurse"),
    ),
    stack(
        "stack.large_frame",
        "one frame bigger than the guard gap: stack probes make it fault in the guard page",
        &[1],
        caught(Verdict::Overflow, StackKind::Task, Some("stack_large_frame")),
    ),
    stack(
        "stack.probe_skip",
        "rsp moved below the guard without probes, then used: the guard is jumped",
        &[1],
        caught(Verdict::GuardJumped, StackKind::Task, None),
    ),
    stack(
        "stack.underflow",
        "rsp pushed above the stack top, then used: caught, underflow",
        &[1],
        caught(Verdict::Underflow, StackKind::Task, None),
    ),
    stack(
        "stack.exception",
        "recursion inside the #PF handler: caught on the #DF IST stack",
        &[1],
        caught(Verdict::Overflow, StackKind::Task, Some("pf_handler_recurse")),
    ),
    stack(
        "stack.direct_legacy",
        "overflow of a direct (pre-4.8) stack: the thread_info block is silently corrupted",
        &[1],
        caught(Verdict::NotCaught, StackKind::Task, None),
    ),
    Scenario {
        skip: SkipAllowed::BelowCpus(2),
        ..stack(
            "stack.ap",
            "overflow on CPU 1 while CPU 0 keeps working",
            &[4],
            recursion("stack_recurse"),
        )
    },
    stack(
        "stack.all_cpus",
        "simultaneous overflow on every CPU: every one caught",
        &[4],
        GuardExpect {
            verdict: Verdict::Overflow,
            stack_kind: StackKind::Task,
            backtrace_fn: Some("stack_recurse"),
            hits: 0,
            recursion: true,
        },
    ),
    stack(
        "stack.irqs_off",
        "overflow with interrupts disabled: caught",
        &[1],
        recursion("stack_recurse"),
    ),
    stack(
        "stack.repeat",
        "1000 overflows in one boot: all caught, memory counters back to baseline",
        &[1],
        recursion("stack_recurse"),
    ),
    stack(
        "stack.irq_frame",
        "an interrupt arrives with no room on the stack for its frame: #DF kills the task, the interrupt it cut short is ended, the tick goes on",
        &[1, 4],
        caught(Verdict::Overflow, StackKind::Task, None),
    ),
    stack(
        "stack.irq_entry",
        "an interrupt finds room for the CPU's frame but not for the registers its entry code saves: the fault is in irq_common, the task is killed with its interrupts on, and the trace goes through the half-built frame",
        &[1],
        caught(Verdict::Overflow, StackKind::Task, None),
    ),
    stack(
        "stack.irq_exit",
        "an interrupt's whole frame fits, its handler runs on the IRQ stack, and the entry code's call of irq_exit_entry, back on the task's stack, has no room for its return address: the task is killed with its interrupts on",
        &[1],
        caught(Verdict::Overflow, StackKind::Task, None),
    ),
    stack(
        "stack.nmi_in_df",
        "an NMI arrives while the #DF handler runs: handled on the NMI IST stack, report intact",
        &[1],
        recursion("stack_recurse"),
    ),
    stack_fatal(
        "stack.irq",
        "overflow while on the per-CPU IRQ stack: caught, IRQ stack named, fatal",
        Outcome::CaughtFatal,
        caught(Verdict::Overflow, StackKind::Irq, Some("irq_recurse")),
    ),
    stack_fatal(
        "stack.df_overflow",
        "overflow of the #DF IST stack itself: the CPU triple-faults, nothing catches it",
        Outcome::Reset,
        caught(Verdict::NotCaught, StackKind::DoubleFault, None),
    ),
    Scenario {
        skip: SkipAllowed::BelowCpus(2),
        ..check(
            "life.rcu_reader",
            "a reader holding a task across its exit sees a valid task until the grace period ends",
            &[4],
        )
    },
    check(
        "life.stack_before_gp",
        "the stack is back in the per-CPU cache before the grace period ends; the task struct after",
        &[1],
    ),
    check(
        "life.refcount",
        "increment from zero, underflow and overflow are reported and contained, never a use after free",
        &[1],
    ),
    check(
        "life.mm_refs",
        "drops from RCU callbacks are deferred exactly when the root goes, never when only the struct-only ref goes",
        &[1, 4],
    ),
    uaf(
        "life.uaf",
        "a deliberate use after free of a task struct is caught, reported with the task's history, and contained",
        UafExpect {
            object: ObjectKind::TaskStruct,
            access: Access::Read,
            rip_fn: Some("stale_task_read"),
        },
    ),
    check(
        "life.stress",
        "10 000 tasks created and reaped on all CPUs while readers traverse the task list; counters back to baseline",
        &[1, 4],
    ),
    control(
        "selftest.hang",
        "spins forever with interrupts off: the runner must report a timeout",
        Outcome::Timeout,
    ),
    control(
        "selftest.triple_fault",
        "loads an empty IDT and faults: the runner must report a reset",
        Outcome::Reset,
    ),
    control(
        "selftest.panic",
        "panics with a known message: the runner must report a panic",
        Outcome::Panic,
    ),
    control(
        "selftest.bad_ktap",
        "prints a KTAP plan it does not keep: the runner must report a malformed report",
        Outcome::Malformed,
    ),
    control(
        "selftest.fail",
        "reports `not ok`: the runner must report a failure",
        Outcome::Fail,
    ),
    stack(
        "stack.in_rcu",
        "overflow inside an RCU read-side section: the task is killed, its RCU nesting reset and noted, grace periods go on",
        &[1, 4],
        recursion("stack_recurse"),
    ),
    stack(
        "stack.preempt_off",
        "overflow under preempt_disable: the task is killed, preempt_count reset and noted, the CPU schedules again",
        &[1],
        recursion("stack_recurse"),
    ),
    stack(
        "stack.nested_atomic",
        "overflow two preempt_disable and two rcu_read_lock deep: all four named, reset and noted",
        &[1],
        recursion("stack_recurse"),
    ),
    stack_unrecoverable(
        "stack.lock_held",
        "overflow while holding a spin lock another task then waits for: caught, cannot recover (the lock is named), no hang",
        recursion("stack_recurse"),
    ),
    stack_unrecoverable(
        "stack.irqlock_held",
        "overflow while holding an IrqLock (spin_lock_irqsave): caught, cannot recover, the lock named",
        recursion("stack_recurse"),
    ),
    stack_unrecoverable(
        "stack.irqs_section",
        "overflow inside an interrupts-off section (local_irq_save): caught, cannot recover",
        recursion("stack_recurse"),
    ),
    stack_unrecoverable(
        "stack.rcu_callback",
        "overflow inside an RCU callback: caught, cannot recover (the rest of the batch would be lost)",
        recursion("stack_recurse"),
    ),
    stack_unrecoverable(
        "stack.rcu_callback_preempted",
        "the same, the callback run where the timer preempts a spinning task at interrupt exit: the trace crosses irq_common's exit frame into the spin, and the context is still the task's",
        recursion("stack_recurse"),
    ),
    check(
        "life.rcu_gp",
        "long read sections on every CPU sample the grace-period state: no grace period that began inside one ends inside it, and the objects they read (held by RCU alone) stay valid",
        &[4],
    ),
    Scenario {
        skip: SkipAllowed::BelowCpus(2),
        ..check(
        "life.rcu_sync",
        "synchronize_rcu returns only after a reader that began before it has ended and a full grace period begun after the call; no callback runs before its grace period",
        &[4],
    )
    },
    check(
        "stack.near_miss",
        "a task recurses through ~95 % of its stack, returns and exits: reported as a near miss, its deepest chain in near_miss_recurse",
        &[1],
    ),
    check(
        "stack.half_used",
        "the same to ~50 % of its stack: its high-water mark is told, and it is no near miss",
        &[1],
    ),
    check(
        "life.stack_cache",
        "a stack put in the per-CPU cache at exit is the one the next task on that CPU gets: same range, the hit counter rising",
        &[1],
    ),
    Scenario {
        skip: SkipAllowed::BelowCpus(2),
        ..check(
        "life.rcu_stall",
        "a grace period held up with preemption off, then interrupts off, raises one stall warning each, naming the CPU and how it is stuck",
        &[4],
    )
    },
];

/// Look a scenario up by its exact name.
pub fn find(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_dotted_and_cmdline_safe() {
        for (i, s) in SCENARIOS.iter().enumerate() {
            assert!(s.name.contains('.'), "{} is not area.what", s.name);
            assert!(
                s.name.bytes().all(|b| b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || b == b'.'
                    || b == b'_'),
                "{} would not survive the command line",
                s.name
            );
            assert!(
                SCENARIOS[..i].iter().all(|o| o.name != s.name),
                "duplicate {}",
                s.name
            );
            assert!(!s.test_smp.is_empty());
            assert_eq!(find(s.name).map(|f| f.name), Some(s.name));
        }
    }

    #[test]
    fn a_scenario_that_may_skip_is_tested_where_it_must_not() {
        for s in SCENARIOS {
            for &cpus in s.test_smp {
                assert!(!s.skip.allows(cpus), "{} may skip at smp={cpus}", s.name);
            }
        }
        assert!(find("stack.ap").unwrap().skip.allows(1));
        assert!(!find("stack.recursion").unwrap().skip.allows(1));
    }

    #[test]
    fn negative_controls_stay_out_of_the_default_set() {
        for s in SCENARIOS {
            if s.expect != Outcome::Pass {
                assert!(s.isolated, "{} would spoil a shared boot", s.name);
                // Fatal stack scenarios are what the testbed is for; the
                // runner's self-tests are not.
                assert!(
                    s.guard.is_some() || !s.default,
                    "{} is a self-test in the default set",
                    s.name
                );
            }
        }
    }
}
