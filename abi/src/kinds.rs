//! The names both sides use for the same things: stack kinds, what a fault
//! hit, the context it hit in, task-stack strategies and free modes, the
//! events of a task's life. Each is one enum with one spelling per value
//! (`named_enum!`), used by the guest's records and command line and by the
//! runner's options, verdicts and reports.

use crate::named_enum;

named_enum! {
    /// The stacks a CPU runs on, as the records name them.
    pub enum StackKind {
        Task = "task",
        Irq = "irq",
        DoubleFault = "exception-df",
        Nmi = "nmi",
        MachineCheck = "mc",
    }
}

impl StackKind {
    /// The names Linux's oops uses (`BUG: TASK stack guard page was hit`).
    pub const fn linux_name(self) -> &'static str {
        match self {
            StackKind::Task => "TASK",
            StackKind::Irq => "IRQ",
            StackKind::DoubleFault => "#DF",
            StackKind::Nmi => "NMI",
            StackKind::MachineCheck => "#MC",
        }
    }

    /// Linux's name of a stack that may be unknown (`UNKNOWN` for none), as
    /// the oops prints it and the runner reads it back.
    pub fn linux_name_of(kind: Option<StackKind>) -> &'static str {
        kind.map_or("UNKNOWN", StackKind::linux_name)
    }
}

named_enum! {
    /// Where a stack fault's address lies, relative to the faulting stack.
    pub enum HitKind {
        /// In the guard page below the stack.
        Overflow = "overflow",
        /// In the guard page above the stack.
        Underflow = "underflow",
        /// In no guard page of the faulting stack (the guard was jumped, or
        /// the stack has none).
        NotGuard = "not-guard",
    }
}

named_enum! {
    /// What the CPU was doing when the stack fault hit.
    pub enum Context {
        Task = "task",
        Irq = "irq",
        /// Inside an exception handler (a fault within a fault).
        Exception = "exception",
    }
}

named_enum! {
    /// Which handler took the fault.
    pub enum Via {
        PageFault = "page-fault",
        /// The page fault could not be delivered on the faulting stack.
        DoubleFault = "double-fault",
    }
}

impl Via {
    /// As the oops's `CPU:` line says it.
    pub const fn oops_name(self) -> &'static str {
        match self {
            Via::PageFault => "#PF",
            Via::DoubleFault => "#DF (IST stack)",
        }
    }
}

named_enum! {
    /// What decided that a stack fault hit a guard page (`kcore::stack_hit`).
    pub enum Evidence {
        /// CR2, the faulting address, lies in the stack's guard.
        Cr2 = "cr2",
        /// The interrupted RSP left no room for an exception frame (Linux's
        /// `exc_double_fault` rule); CR2 did not say so (stale under some
        /// hypervisors).
        Rsp = "rsp",
        /// Both say the same.
        Both = "cr2+rsp",
    }
}

named_enum! {
    /// Where task stacks come from.
    pub enum Strategy {
        /// Contiguous frames from the direct map, `thread_info` at the bottom,
        /// no guard (pre-4.8).
        Direct = "direct",
        /// The vmalloc area with guard pages (`CONFIG_VMAP_STACK`).
        Vmap = "vmap",
        /// vmalloc plus a per-CPU cache of two free stacks (4.9+).
        VmapCached = "vmap-cached",
    }
}

named_enum! {
    /// When a dead task's stack is freed.
    pub enum FreeMode {
        /// As soon as the CPU has switched away from the dead task (4.9+).
        Exit = "exit",
        /// With the task struct, after an RCU grace period (pre-4.8).
        Rcu = "rcu",
        /// From an RCU callback that first tries the per-CPU cache (5.18+).
        RcuCache = "rcu-cache",
    }
}

impl FreeMode {
    /// As the command line may spell it: `legacy` is the pre-4.8 name of `rcu`.
    pub fn from_cmdline(s: &str) -> Option<FreeMode> {
        match s {
            "legacy" => Some(FreeMode::Rcu),
            s => FreeMode::from_name(s),
        }
    }
}

named_enum! {
    /// A memory access.
    pub enum Access {
        Read = "read",
        Write = "write",
    }
}

named_enum! {
    /// Objects that can be debug-placed and so caught when used after free.
    pub enum ObjectKind {
        TaskStruct = "task_struct",
    }
}

named_enum! {
    /// A task's life as its history tells it.
    pub enum TaskEvent {
        Created = "created",
        /// Exited or killed.
        Exited = "exited",
        /// The dead task was switched away from (its stack released, queued
        /// or kept, per the free mode).
        SwitchedAway = "switched-away",
        /// Reaped by its parent: the parent's `rcu_users` dropped.
        Reaped = "reaped",
        /// The last `rcu_users` went: `delayed_put_task_struct` queued.
        RcuQueued = "rcu-queued",
        /// The last `usage` went, after the grace period: the struct freed.
        StructFreed = "struct-freed",
    }
}

impl TaskEvent {
    /// What must happen before what, in any task's life: a history that
    /// breaks one of these tells a lifetime bug (a struct freed before its
    /// grace period was even queued, a task reaped before it exited).
    pub const ORDER: &'static [(TaskEvent, TaskEvent)] = &[
        (TaskEvent::Created, TaskEvent::Exited),
        (TaskEvent::Exited, TaskEvent::SwitchedAway),
        (TaskEvent::Exited, TaskEvent::Reaped),
        (TaskEvent::Reaped, TaskEvent::RcuQueued),
        (TaskEvent::RcuQueued, TaskEvent::StructFreed),
        (TaskEvent::SwitchedAway, TaskEvent::StructFreed),
    ];
}

named_enum! {
    /// The cost tables `bench.*` measures.
    pub enum BenchFamily {
        /// One task at a time on one CPU.
        Spawn = "spawn",
        /// Every CPU creating short tasks back to back.
        ForkHeavy = "fork_heavy",
        /// The stack allocator alone, no task on the stack.
        StackAlloc = "stack_alloc",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;

    #[test]
    fn every_name_reads_back_and_serializes_as_itself() {
        fn check<T>(all: &[T], as_str: fn(T) -> &'static str, from: fn(&str) -> Option<T>)
        where
            T: Copy + PartialEq + core::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
        {
            for (i, &v) in all.iter().enumerate() {
                let name = as_str(v);
                assert_eq!(from(name), Some(v));
                assert!(all[..i].iter().all(|&o| as_str(o) != name), "{name} twice");
                let json = serde_json::to_string(&v).unwrap();
                assert_eq!(json, std::format!("\"{name}\""));
                assert_eq!(serde_json::from_str::<T>(&json).unwrap(), v);
            }
            assert_eq!(from("no-such-name"), None);
            assert!(serde_json::from_str::<T>("\"no-such-name\"").is_err());
        }
        check(StackKind::ALL, StackKind::as_str, StackKind::from_name);
        check(HitKind::ALL, HitKind::as_str, HitKind::from_name);
        check(Context::ALL, Context::as_str, Context::from_name);
        check(Via::ALL, Via::as_str, Via::from_name);
        check(Strategy::ALL, Strategy::as_str, Strategy::from_name);
        check(FreeMode::ALL, FreeMode::as_str, FreeMode::from_name);
        check(Access::ALL, Access::as_str, Access::from_name);
        check(ObjectKind::ALL, ObjectKind::as_str, ObjectKind::from_name);
        check(TaskEvent::ALL, TaskEvent::as_str, TaskEvent::from_name);
        check(
            BenchFamily::ALL,
            BenchFamily::as_str,
            BenchFamily::from_name,
        );
        assert_eq!(FreeMode::from_cmdline("legacy"), Some(FreeMode::Rcu));
    }

    #[test]
    fn the_lifetime_order_is_a_partial_order_over_every_event() {
        for &(a, b) in TaskEvent::ORDER {
            assert_ne!(a, b);
            assert!(!TaskEvent::ORDER.contains(&(b, a)), "{a} and {b} both ways");
        }
        for &e in TaskEvent::ALL {
            assert!(TaskEvent::ORDER.iter().any(|&(a, b)| a == e || b == e));
        }
    }
}
