//! The lines the guest prints about a use after free of a debug-placed
//! object (a task struct under `task_structs=vmalloc`), and what the runner
//! holds them against.
//!
//! `UAF-ARMED {json}`: before touching a freed object, a scenario names it
//! (kind, owner, where its pages were, who will touch it): the ground truth.
//! `UAF-HIT {json}`: the page-fault handler's report, with the owner's
//! history as a list of `{"event","cpu","ago_ns"}` entries, oldest first.

pub const ARMED_PREFIX: &str = "UAF-ARMED ";
pub const HIT_PREFIX: &str = "UAF-HIT ";

/// What the runner checks for one use-after-free scenario.
#[derive(Clone, Copy, Debug)]
pub struct UafExpect {
    /// The kind of object touched (`task_struct`).
    pub object: &'static str,
    /// `read` or `write`.
    pub access: &'static str,
    /// A function name (substring) the faulting RIP must symbolize to.
    pub rip_fn: Option<&'static str>,
}

/// A task's life as its history tells it (`event` in a history entry).
pub mod task_event {
    pub const CREATED: &str = "created";
    /// Exited or killed.
    pub const EXITED: &str = "exited";
    /// The dead task was switched away from (its stack released, queued or
    /// kept, per the free mode).
    pub const SWITCHED_AWAY: &str = "switched-away";
    /// Reaped by its parent: the parent's `rcu_users` dropped.
    pub const REAPED: &str = "reaped";
    /// The last `rcu_users` went: `delayed_put_task_struct` queued.
    pub const RCU_QUEUED: &str = "rcu-queued";
    /// The last `usage` went, after the grace period: the struct freed.
    pub const STRUCT_FREED: &str = "struct-freed";

    /// What must happen before what, in any task's life: a history that
    /// breaks one of these tells a lifetime bug (a struct freed before its
    /// grace period was even queued, a task reaped before it exited).
    pub const ORDER: &[(&str, &str)] = &[
        (CREATED, EXITED),
        (EXITED, SWITCHED_AWAY),
        (EXITED, REAPED),
        (REAPED, RCU_QUEUED),
        (RCU_QUEUED, STRUCT_FREED),
        (SWITCHED_AWAY, STRUCT_FREED),
    ];

    /// The events a use-after-free report of a task struct must tell.
    pub const REQUIRED: &[&str] = &[
        CREATED,
        EXITED,
        SWITCHED_AWAY,
        REAPED,
        RCU_QUEUED,
        STRUCT_FREED,
    ];
}
