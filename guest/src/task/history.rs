//! What happened to a task, kept outside the task struct, so that it can
//! still be told once the struct is gone: a use-after-free report names
//! the dead task and its last moments (KFENCE keeps its alloc and free
//! stacks in metadata beside the object for the same reason).
//!
//! Recorded only while task structs are debug-placed (`lifetime`), so the
//! normal paths pay one load. A fixed table indexed by task id, not a heap
//! map: recording happens in the scheduler's switch path, reading in the
//! page-fault handler, and neither should allocate.
use crate::arch::x86_64::{percpu, time};
use crate::sync::IrqLock;
use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

#[derive(Clone, Copy, Debug)]
pub enum Event {
    Created {
        by: u64,
    },
    Exited(super::ExitStatus),
    /// The dead task was switched away from; `stack` says what happened to
    /// its stack then, per the free mode.
    SwitchedAway {
        stack: &'static str,
    },
    Reaped {
        by: u64,
    },
    /// `rcu_users` reached zero: `delayed_put_task_struct` queued.
    RcuQueued,
    /// `usage` reached zero: the struct is dead (poisoned, then freed).
    StructFreed,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Event::Created { by } => write!(f, "created by task {by}"),
            Event::Exited(status) => write!(f, "{status}"),
            Event::SwitchedAway { stack } => write!(f, "switched away from; stack {stack}"),
            Event::Reaped { by } => write!(f, "reaped by task {by}; rcu_users dropped"),
            Event::RcuQueued => f.write_str("last rcu_users: delayed_put_task_struct queued"),
            Event::StructFreed => {
                f.write_str("last usage put after the grace period: struct freed")
            }
        }
    }
}

impl Event {
    /// The event as the machine-readable report names it.
    pub fn kind(&self) -> abi::kinds::TaskEvent {
        use abi::kinds::TaskEvent;
        match self {
            Event::Created { .. } => TaskEvent::Created,
            Event::Exited(_) => TaskEvent::Exited,
            Event::SwitchedAway { .. } => TaskEvent::SwitchedAway,
            Event::Reaped { .. } => TaskEvent::Reaped,
            Event::RcuQueued => TaskEvent::RcuQueued,
            Event::StructFreed => TaskEvent::StructFreed,
        }
    }
}

/// One entry: when (ns since boot), where, what.
#[derive(Clone, Copy)]
pub struct Entry {
    pub ns: u64,
    pub cpu: usize,
    pub event: Event,
}

const EVENTS: usize = abi::uaf::MAX_HISTORY;
/// Tasks remembered: the last this many ids.
const TASKS: usize = 512;

#[derive(Clone, Copy)]
pub struct History {
    id: u64,
    pub name: [u8; 16],
    entries: [Option<Entry>; EVENTS],
}

impl History {
    const EMPTY: History = History {
        id: 0,
        name: [0; 16],
        entries: [None; EVENTS],
    };

    pub fn name(&self) -> &str {
        let n = self.name.iter().position(|&b| b == 0).unwrap_or(16);
        core::str::from_utf8(&self.name[..n]).unwrap_or("?")
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().flatten()
    }
}

static ON: AtomicBool = AtomicBool::new(false);
/// Task `id` lives in slot `id % TASKS` until a later id takes it.
static HISTORIES: IrqLock<[History; TASKS]> =
    IrqLock::new([History::EMPTY; TASKS]).named("task_history");

pub(super) fn set_enabled(on: bool) {
    ON.store(on, Ordering::Release);
}

fn slot(id: u64) -> usize {
    (id % TASKS as u64) as usize
}

/// Start remembering task `id`.
pub(super) fn begin(id: u64, name: [u8; 16], by: u64) {
    if !ON.load(Ordering::Acquire) {
        return;
    }
    HISTORIES.lock()[slot(id)] = History {
        id,
        name,
        entries: [None; EVENTS],
    };
    record(id, Event::Created { by });
}

/// Note `event` for task `id`, if it is remembered (the last slot is
/// overwritten once full: the end of a life matters most).
pub(super) fn record(id: u64, event: Event) {
    if !ON.load(Ordering::Acquire) {
        return;
    }
    let mut all = HISTORIES.lock();
    // Timed under the lock, so entries are in time order across CPUs too.
    let entry = Entry {
        ns: time::now_ns(),
        cpu: percpu::this().id,
        event,
    };
    let h = &mut all[slot(id)];
    if h.id == id {
        let free = h.entries.iter().position(Option::is_none);
        h.entries[free.unwrap_or(EVENTS - 1)] = Some(entry);
    }
}

/// Task `id`'s history, for a fault report: `None` if it is not remembered
/// or the table is busy (the fault may have hit while this CPU held it).
pub fn of(id: u64) -> Option<History> {
    for _ in 0..100_000u32 {
        if let Some(h) = HISTORIES.try_lock() {
            let h = h[slot(id)];
            return (h.id == id).then_some(h);
        }
        core::hint::spin_loop();
    }
    None
}
