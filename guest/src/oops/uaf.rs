//! Use after free of a debug-placed object (`mm::guarded`): the page fault
//! on its unmapped pages, told the way KFENCE tells it, plus what the
//! task-struct case needs: the dead task's history (who created, reaped
//! and freed it, and when), since the struct itself is gone.
use super::classify::stack_at;
use super::report::{write_regs, write_trace};
use super::symbols::{frames, sym};
use super::{backtrace, scenario, Action};
use crate::arch::x86_64::percpu;
use crate::arch::x86_64::trap::TrapFrame;
use crate::mm::guarded;
use crate::task::history;
use abi::kinds::{Access, ObjectKind};
use abi::uaf::{HistoryEntry, UafArmed, UafHit};
use abi::Hex;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// What a scenario checks after provoking one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UafReport {
    /// Reports so far, all CPUs.
    pub count: u64,
    /// The owner id of the object in the last one (a task id for
    /// task structs).
    pub last_owner: u64,
    /// The last one could print the owner's history.
    pub last_had_history: bool,
}

static COUNT: AtomicU64 = AtomicU64::new(0);
static LAST_OWNER: AtomicU64 = AtomicU64::new(0);
static LAST_HISTORY: AtomicBool = AtomicBool::new(false);

pub fn uaf_reports() -> UafReport {
    UafReport {
        count: COUNT.load(Ordering::Acquire),
        last_owner: LAST_OWNER.load(Ordering::Acquire),
        last_had_history: LAST_HISTORY.load(Ordering::Acquire),
    }
}

/// Announce, before touching it, the freed object at `addr` that task
/// `reader` is about to read: the ground truth the runner holds the report
/// against. False if nothing freed and debug-placed is there.
pub fn announce_uaf(addr: u64, reader: &str) -> bool {
    let Some(obj) = guarded::freed_object_at(addr) else {
        return false;
    };
    crate::console::record(&UafArmed {
        scenario: scenario(),
        object: obj.what,
        owner: obj.id,
        base: Hex(obj.base),
        bytes: obj.bytes,
        addr: Hex(addr),
        reader,
    });
    true
}

/// Report the fault if `cr2` is inside a freed debug-placed object; `None`
/// otherwise. A task touching freed memory is killed; anywhere else the
/// machine stops (an interrupt handler cannot be given up alone).
pub fn use_after_free(frame: &TrapFrame, cr2: u64) -> Option<Action> {
    let obj = guarded::freed_object_at(cr2)?;
    let cpu = percpu::this();
    let (task_id, comm) =
        crate::task::with_current(|t| (t.id, t.name_bytes())).unwrap_or((0, ([0; 16], 0)));
    let comm = core::str::from_utf8(&comm.0[..comm.1]).unwrap_or("?");
    let access = if frame.error_code & 2 != 0 {
        Access::Write
    } else {
        Access::Read
    };
    let action = if cpu.in_irq() {
        Action::Fatal
    } else {
        Action::Kill("use after free")
    };
    let action = super::held::decide(frame, action);
    let history = (obj.what == ObjectKind::TaskStruct)
        .then(|| history::of(obj.id))
        .flatten();
    let (lo, hi) = stack_at(cpu.stack_top().as_u64().saturating_sub(1))
        .map_or((frame.rbp, frame.rbp + 16), |(a, _)| (a.base, a.top()));
    let bt = backtrace::walk_fault(frame, lo.min(frame.rbp), hi.max(frame.rbp + 16));
    let now = crate::arch::x86_64::time::now_ns();

    COUNT.fetch_add(1, Ordering::AcqRel);
    LAST_OWNER.store(obj.id, Ordering::Release);
    LAST_HISTORY.store(history.is_some(), Ordering::Release);
    crate::console::report(|w| {
        let _ = (|| -> core::fmt::Result {
            writeln!(
                w,
                "BUG: KFENCE: use-after-free {access} in {}",
                Known(sym(frame.rip))
            )?;
            writeln!(
                w,
                "Use-after-free {access} at 0x{cr2:016x} (in {} {}, offset {:#x} of {} bytes at {:016x}, freed and unmapped)",
                obj.what, obj.id, obj.offset, obj.bytes, obj.base
            )?;
            writeln!(w, "CPU: {} PID: {task_id} Comm: {comm}", cpu.id)?;
            match history {
                Some(h) => {
                    writeln!(
                        w,
                        "History of task {} '{}' (seconds before this fault):",
                        obj.id,
                        h.name()
                    )?;
                    for e in h.entries() {
                        let ago = now.saturating_sub(e.ns);
                        writeln!(
                            w,
                            "  -{}.{:06} CPU {}: {}",
                            ago / 1_000_000_000,
                            ago / 1000 % 1_000_000,
                            e.cpu,
                            e.event
                        )?;
                    }
                }
                None => writeln!(w, "No history kept for owner {}", obj.id)?,
            }
            write_regs(w, frame)?;
            write_trace(w, &bt)?;
            Ok(())
        })();
        let mut told = heapless::Vec::new();
        for e in history.iter().flat_map(|h| h.entries()) {
            let _ = told.push(HistoryEntry {
                event: e.event.kind(),
                cpu: e.cpu as u32,
                ago_ns: now.saturating_sub(e.ns),
            });
        }
        w.record(&UafHit {
            scenario: scenario(),
            object: obj.what,
            owner: obj.id,
            object_base: Hex(obj.base),
            fault_addr: Hex(cr2),
            access,
            cpu: cpu.id as u32,
            task_id,
            task_name: comm,
            rip: Hex(frame.rip),
            backtrace: frames(&bt),
            history: told,
            recovered: action != Action::Fatal,
        });
    });
    Some(action)
}

/// A symbol, or `?`.
struct Known(Option<abi::guard::Sym<'static>>);

impl core::fmt::Display for Known {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match &self.0 {
            Some(s) => write!(f, "{s}"),
            None => f.write_str("?"),
        }
    }
}
