//! Deliberate defects in the guest, for proving that the verdicts move when
//! what they judge is wrong: `runner --defect NAME` builds a guest with that
//! one defect compiled in and boots it like any other.
//!
//! A defect is a `#[cfg(defect = "NAME")]` in the guest's source, a small,
//! plausible bug. The runner alone sets it, passing `--cfg defect="NAME"` to
//! the guest crate only (`cargo rustc`), into a target directory of its own
//! (`target/defect/`), so a normal build can never contain one: no feature,
//! no environment variable, no stale artifact can turn one on. The guest's
//! `Cargo.toml` declares the names (`check-cfg`), and a test below keeps
//! that list, this catalogue and the source in step.
//!
//! `runner mutants` (`make mutants`, `mutants.rs`) boots each one and
//! requires its `scenario` to fail by what `caught` names, where the normal
//! guest passes; `tests/defects.rs` does it for a fast subset in `make test`.

use crate::report::Check;

/// One deliberate defect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Defect {
    pub name: &'static str,
    /// What the bug is, in the guest.
    pub what: &'static str,
    /// The scenarios to boot (patterns, as `runner run` takes them).
    pub run: &'static [&'static str],
    /// The scenario whose verdict must flip.
    pub scenario: &'static str,
    /// What must catch it.
    pub caught: Caught,
    /// The case it breaks exists only under KVM (`--accel kvm`).
    pub kvm_only: bool,
    /// The CPUs its scenario needs to show the defect, where that is not
    /// the first count `runner test` boots it at (a shootdown that skips
    /// the other CPUs shows only where there are others).
    pub smp: Option<u32>,
}

/// What a defect must make fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caught {
    /// A check of the runner's verdict on the scenario's fault report.
    Check(Check),
    /// The guest's own test of the mechanism (`not ok`).
    Guest,
}

/// A defect in how a stack fault is told: `stack.recursion`'s oops.
const fn oops(name: &'static str, what: &'static str, check: Check) -> Defect {
    Defect {
        name,
        what,
        run: &["stack.*"],
        scenario: "stack.recursion",
        caught: Caught::Check(check),
        kvm_only: false,
        smp: None,
    }
}

/// A defect in a mechanism its own scenario tests.
const fn mechanism(
    name: &'static str,
    what: &'static str,
    scenario: &'static str,
    caught: Caught,
) -> Defect {
    Defect {
        name,
        what,
        run: &[],
        scenario,
        caught,
        kvm_only: false,
        smp: None,
    }
}

pub const DEFECTS: &[Defect] = &[
    oops(
        "ksyms-off-by-one",
        "the symbol table lookup lands one entry low (an off-by-one in its binary search) and names the function before the right one",
        Check::Symbol,
    ),
    oops(
        "trace-skip-innermost",
        "the frame-pointer walk starts one frame up and loses the innermost frame",
        Check::Unwind,
    ),
    oops(
        "trace-first-only",
        "the walk's rising-chain test is written the wrong way round: only the first frame is kept",
        Check::Unwind,
    ),
    oops(
        "bytes-into-guard",
        "the overflow's byte count is measured into the guard page from its bottom, not below the stack",
        Check::Bytes,
    ),
    Defect {
        name: "exit-call-unframed",
        what: "a fault in irq_common past its register saves (the call of irq_exit_entry) is read as the gate's state, interrupts off, not the task's",
        run: &[],
        scenario: "stack.irq_exit",
        caught: Caught::Check(Check::TaskState),
        kvm_only: false,
        smp: None,
    },
    oops(
        "depth-off-by-one",
        "the recursion records the depth of the call it is about to make, before that call has a frame: one more than the frames below it",
        Check::Depth,
    ),
    mechanism(
        "gp-early",
        "the tick reports a quiescent state from inside a read-side section: grace periods end under readers",
        "life.rcu_gp",
        Caught::Guest,
    ),
    mechanism(
        "sync-no-wait",
        "synchronize_rcu() returns at once, without waiting for a grace period",
        "life.rcu_sync",
        Caught::Guest,
    ),
    mechanism(
        "cache-never-taken",
        "the per-CPU stack cache is refilled at exit but never taken from",
        "life.stack_cache",
        Caught::Guest,
    ),
    mechanism(
        "no-preempt-reset",
        "the kill path does not reset the dead task's preempt_count",
        "stack.in_rcu",
        Caught::Check(Check::Recovered),
    ),
    mechanism(
        "kill-ignores-locks",
        "the kill path never looks at what the task held, and kills a lock holder",
        "stack.lock_held",
        Caught::Check(Check::TaskState),
    ),
    mechanism(
        "stall-blind",
        "the RCU stall detector never reports",
        "life.rcu_stall",
        Caught::Guest,
    ),
    Defect {
        kvm_only: true,
        ..mechanism(
            "cr2-only",
            "the #DF classification ignores the interrupted RSP and trusts a stale CR2",
            "stack.irq_frame",
            Caught::Check(Check::Kind),
        )
    },
    mechanism(
        "guard-mapped",
        "vmalloc maps one page too many (an inclusive range): every allocation's upper guard page is mapped",
        "core.guard_layout",
        Caught::Guest,
    ),
    mechanism(
        "df-no-ist",
        "the #DF gate has no IST stack: its frame cannot be pushed on the stack that overflowed, and the CPU triple-faults",
        "stack.recursion",
        Caught::Check(Check::Hits),
    ),
    mechanism(
        "underflow-guard-below",
        "the underflow arm of the classification, copied from the overflow arm, reports the guard below the stack",
        "stack.underflow",
        Caught::Check(Check::FaultInGuard),
    ),
    oops(
        "bounds-inclusive-top",
        "the report's stack end is its last byte (an inclusive bound) instead of one past it",
        Check::Bounds,
    ),
    mechanism(
        "fault-addr-page",
        "the report's fault address is the faulting page, not the address",
        "stack.recursion",
        Caught::Check(Check::DecidedBy),
    ),
    mechanism(
        "cache-never-put",
        "a dead task's stack is freed at once, never put into the per-CPU cache",
        "life.stack_cache",
        Caught::Guest,
    ),
    mechanism(
        "cached-stack-not-cleared",
        "a stack taken from the per-CPU cache is handed out as its last task left it, not zeroed",
        "life.stack_cache",
        Caught::Guest,
    ),
    mechanism(
        "exit-stack-leak",
        "a dead task's stack is taken from it at exit and forgotten, neither cached nor freed",
        "stack.repeat",
        Caught::Guest,
    ),
    Defect {
        smp: Some(4),
        ..mechanism(
        "rcu-callbacks-reversed",
        "a batch of ready RCU callbacks runs newest first",
        "life.rcu_sync",
        Caught::Guest,
    )
    },
    Defect {
        smp: Some(4),
        ..mechanism(
        "current-boot-cpu",
        "current_id() reads the boot CPU's current task, not this CPU's",
        "core.current",
        Caught::Guest,
    )
    },
    mechanism(
        "rsp0-stale",
        "the context switch does not update TSS.rsp0, which goes on naming a stack the CPU has left",
        "stack.probe_skip",
        Caught::Check(Check::Bounds),
    ),
    mechanism(
        "kill-no-eoi",
        "the kill path sends no EOI for the interrupt the fault cut short",
        "stack.irq_frame",
        Caught::Check(Check::Recovered),
    ),
    mechanism(
        "lockdep-release-unrecorded",
        "the release of a lock (spin or irq-safe) is not taken off the held-lock stack",
        "stack.recursion",
        Caught::Check(Check::Recovered),
    ),
    mechanism(
        "lockdep-acquire-unrecorded",
        "a spin lock is taken without a record on the held-lock stack",
        "stack.lock_held",
        Caught::Check(Check::TaskState),
    ),
    mechanism(
        "recovery-record-failures-only",
        "the post-kill proof prints its RECOVERY record only when it failed: the guest says every kill was proven, with no witness",
        "stack.recursion",
        Caught::Check(Check::Recovered),
    ),
    Defect {
        smp: Some(4),
        ..mechanism(
        "shootdown-local-only",
        "a TLB shootdown flushes only the calling CPU: no IPI to the others",
        "core.shootdown",
        Caught::Guest,
    )
    },
    mechanism(
        "mmdrop-not-deferred",
        "mmdrop judges every drop as if from process context: the page tables are freed where sleeping is forbidden instead of deferred",
        "life.mm_refs",
        Caught::Guest,
    ),
    mechanism(
        "context-ignores-exception",
        "a fault inside an exception handler is told as plain task context",
        "stack.exception",
        Caught::Check(Check::Context),
    ),
    mechanism(
        "recovered-before-policy",
        "the report's `recovered` is taken from the decision before the exit policy looked at what the task held",
        "stack.lock_held",
        Caught::Check(Check::TaskState),
    ),
    mechanism(
        "df-ist-not-restored",
        "the #DF handler leaves its IST slot pointing at the guard: the CPU's next #DF cannot be delivered",
        "stack.repeat",
        Caught::Check(Check::Hits),
    ),
    mechanism(
        "held-not-switched",
        "the context switch leaves the CPU's held-lock stack pointing at the outgoing task",
        "core.current",
        Caught::Guest,
    ),
    mechanism(
        "saturated-put-frees",
        "put_task_struct frees on a refcount_t event: a saturated count reaches a free",
        "life.refcount",
        Caught::Guest,
    ),
    mechanism(
        "irq-exit-not-crossed",
        "the frame-pointer walk crosses the exception entry's frame but not irq_common's exit path: a fault under a preemption loses the function the interrupt preempted",
        "stack.rcu_callback_preempted",
        Caught::Check(Check::Unwind),
    ),
    mechanism(
        "high-water-from-rsp",
        "a task's high-water mark is taken from its stack pointer at exit, not from the deepest word ever written: the deep excursion that returned is not seen",
        "stack.near_miss",
        Caught::Check(Check::NearMiss),
    ),
    mechanism(
        "chain-from-frame-pointer",
        "the near miss's chain is walked from the frame pointer at exit, the exit path's live frames, not from the deepest word the stack holds",
        "stack.near_miss",
        Caught::Check(Check::DeepestChain),
    ),
    mechanism(
        "usage-in-words",
        "the per-task table keeps a stack's used part in words, the unit the scan steps in, not bytes",
        "stack.half_used",
        Caught::Check(Check::StackUsage),
    ),
    oops(
        "frame-size-misreported",
        "the trace's innermost frame size counts its return address twice: 8 bytes more than the frame occupies",
        Check::FrameSize,
    ),
];

pub fn find(name: &str) -> Option<&'static Defect> {
    DEFECTS.iter().find(|d| d.name == name)
}

/// Where defect builds go: apart from the normal build, so neither ever
/// boots the other's guest.
pub fn target_dir() -> std::path::PathBuf {
    crate::workspace::target_dir().join("defect")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn sources(dir: &Path, out: &mut String) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push_str(&std::fs::read_to_string(&path).unwrap());
            }
        }
    }

    #[test]
    fn the_catalogue_the_guests_check_cfg_and_its_source_agree() {
        let root = crate::workspace::root();
        let manifest = std::fs::read_to_string(root.join("guest/Cargo.toml")).unwrap();
        let line = manifest
            .lines()
            .find(|l| l.contains("cfg(defect, values("))
            .expect("guest/Cargo.toml declares the defect cfg");
        let declared: Vec<&str> = line.split('"').skip(1).step_by(2).collect();
        let names: Vec<&str> = DEFECTS.iter().map(|d| d.name).collect();
        assert_eq!(declared, names);
        let mut src = String::new();
        sources(&root.join("guest/src"), &mut src);
        for d in DEFECTS {
            assert!(
                src.contains(&format!("defect = \"{}\"", d.name)),
                "{} is in no #[cfg] of the guest",
                d.name
            );
        }
        assert_eq!(
            find("trace-first-only").unwrap().caught,
            Caught::Check(Check::Unwind)
        );
        for d in DEFECTS {
            assert!(
                abi::scenario::find(d.scenario).is_some(),
                "{}: no scenario {}",
                d.name,
                d.scenario
            );
        }
        assert!(find("no-such-defect").is_none());
    }
}
