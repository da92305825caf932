//! The records the guest prints about a use after free of a debug-placed
//! object (a task struct under `task_structs=vmalloc`), and what the runner
//! holds them against.
//!
//! `UAF-ARMED` (`UafArmed`): before touching a freed object, a scenario
//! names it (kind, owner, where its pages were, who will touch it): the
//! ground truth. `UAF-HIT` (`UafHit`): the page-fault handler's report,
//! with the owner's history, oldest first.

use crate::guard::{Frame, MAX_FRAMES};
use crate::kinds::{Access, ObjectKind, TaskEvent};
use crate::record::{Hex, Record};
use serde::{Deserialize, Serialize};

/// History entries kept per task.
pub const MAX_HISTORY: usize = 8;

/// A scenario's announcement of the freed object it is about to touch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UafArmed<'a> {
    pub scenario: &'a str,
    pub object: ObjectKind,
    pub owner: u64,
    pub base: Hex,
    pub bytes: u64,
    /// The address the reader will touch.
    pub addr: Hex,
    /// The name of the task that will touch it.
    pub reader: &'a str,
}

impl Record for UafArmed<'_> {
    const PREFIX: &'static str = "UAF-ARMED ";
    fn scenario(&self) -> &str {
        self.scenario
    }
}

/// One event of the owner's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub event: TaskEvent,
    pub cpu: u32,
    /// How long before the fault.
    pub ago_ns: u64,
}

/// The page-fault handler's report of a use after free.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UafHit<'a> {
    pub scenario: &'a str,
    pub object: ObjectKind,
    pub owner: u64,
    pub object_base: Hex,
    pub fault_addr: Hex,
    pub access: Access,
    pub cpu: u32,
    pub task_id: u64,
    pub task_name: &'a str,
    pub rip: Hex,
    #[serde(borrow)]
    pub backtrace: heapless::Vec<Frame<'a>, MAX_FRAMES>,
    /// The owner's history, oldest first; empty if none was kept.
    pub history: heapless::Vec<HistoryEntry, MAX_HISTORY>,
    pub recovered: bool,
}

impl Record for UafHit<'_> {
    const PREFIX: &'static str = "UAF-HIT ";
    fn scenario(&self) -> &str {
        self.scenario
    }
}

/// What the runner checks for one use-after-free scenario.
#[derive(Clone, Copy, Debug)]
pub struct UafExpect {
    /// The kind of object touched.
    pub object: ObjectKind,
    pub access: Access,
    /// A function name (substring) the faulting RIP must symbolize to.
    pub rip_fn: Option<&'static str>,
}

/// The events a use-after-free report of a task struct must tell.
pub const REQUIRED_HISTORY: &[TaskEvent] = TaskEvent::ALL;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::Sym;
    use crate::record::tests::round_trip;

    #[test]
    fn both_records_round_trip() {
        let mut buf = [0u8; 16384];
        round_trip(
            &UafArmed {
                scenario: "life.uaf",
                object: ObjectKind::TaskStruct,
                owner: 6,
                base: Hex(0xffffc9000006d000),
                bytes: 4096,
                addr: Hex(0xffffc9000006d010),
                reader: "stale-reader",
            },
            &mut buf,
        );
        let mut history = heapless::Vec::new();
        for (i, &event) in TaskEvent::ALL.iter().enumerate() {
            history
                .push(HistoryEntry {
                    event,
                    cpu: i as u32 % 4,
                    ago_ns: 15_000_000 - i as u64 * 1000,
                })
                .unwrap();
        }
        let mut backtrace = heapless::Vec::new();
        backtrace
            .push(Frame {
                addr: Hex(0xffffffff800255ac),
                sym: Some(Sym {
                    name: "guest::scenarios::life::stale_task_read",
                    link: None,
                    off: Hex(4),
                    size: Hex(0x20),
                }),
                trap: None,
                repeat: 1,
                size: None,
            })
            .unwrap();
        let hit = UafHit {
            scenario: "life.uaf",
            object: ObjectKind::TaskStruct,
            owner: 6,
            object_base: Hex(0xffffc9000006d000),
            fault_addr: Hex(0xffffc9000006d010),
            access: Access::Read,
            cpu: 0,
            task_id: 7,
            task_name: "stale-reader",
            rip: Hex(0xffffffff8000f934),
            backtrace,
            history,
            recovered: true,
        };
        round_trip(&hit, &mut buf);
        let mut empty = hit.clone();
        empty.history.clear();
        empty.backtrace.clear();
        round_trip(&empty, &mut buf);
    }
}
