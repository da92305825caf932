//! How deep every task's stack went, measured when it exits (Linux's
//! `CONFIG_DEBUG_STACK_USAGE`), and the tasks that came close to its end.
//!
//! At every exit, killed or not, before the last switch away from the
//! task: its stack's high-water mark (`Stack::high_water`, a scan from the
//! bottom for the first word ever written) goes into a table kept for the
//! boot, and at the end of each scenario the entries made during it are
//! printed as `STACK-USAGE` records and dropped (`end_of_scenario`). A
//! task that exited by itself with more than the threshold of its stack
//! used (`abi::usage::is_near_miss`) is a near miss: a `NEAR-MISS` record
//! at once, with the chain of frame records its deepest excursion left
//! below the live part of the stack (`Stack::deepest_chain`), each return
//! address named from the embedded symbol table as the oops names one.
//! A killed task used its stack up by definition; it is only counted.
//!
//! It stays on in every boot, so it has to be cheap: one scan of the
//! unused part of a 16 KiB stack and one push per exit (what it costs is
//! measured in README, "High-water marks and near misses").
use super::{ExitStatus, Task};
use crate::arch::x86_64::percpu;
use crate::mm;
use crate::sync::IrqLock;
use abi::guard::{Frame, Sym};
use abi::usage::{ChainFrame, NearMiss, StackUsage, MAX_CHAIN, USAGE_CHUNK};
use abi::Hex;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

/// Frame records a near miss's chain is walked for (16 bytes each, on the
/// exit path's stack), before its runs are folded into `MAX_CHAIN` frames.
const CHAIN_RECORDS: usize = 128;

/// `(task id, bytes used)` of every exit since the last scenario ended.
/// Its allocation is made at boot and kept (`init`): a scenario's leak
/// check sees it grow by reallocation, never appear.
static TABLE: IrqLock<Vec<(u64, u64)>> = IrqLock::new(Vec::new()).named("stack_usage");
/// Exits the table had no room for.
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// The threshold, percent of the stack.
static NEAR_MISS_PERCENT: AtomicU64 = AtomicU64::new(abi::usage::NEAR_MISS_DEFAULT);
/// The running scenario, for the records (set by the scenario runner).
static SCENARIO: IrqLock<&'static str> = IrqLock::new("").named("usage_scenario");

/// Room for the table before any scenario runs.
pub fn init() {
    TABLE.lock().reserve(1024);
}

pub fn near_miss_percent() -> u64 {
    NEAR_MISS_PERCENT.load(Ordering::Relaxed)
}

/// The share of its stack (percent, as `abi::config::near_miss_percent`
/// accepts it) an exiting task must have used to be a near miss.
pub fn set_near_miss_percent(percent: u64) {
    NEAR_MISS_PERCENT.store(percent, Ordering::Relaxed);
}

/// A scenario begins: the records from here on are its.
pub fn begin_scenario(name: &'static str) {
    *SCENARIO.lock() = name;
}

/// From `exit`, on the dying task (interrupts off), before the last switch.
pub(super) fn at_exit(task: &Task, status: ExitStatus) {
    let Some((used, size)) = task.with_stack(|s| (s.high_water(), s.size() as u64)) else {
        // A boot stack the loader gave: nothing of ours to measure.
        return;
    };
    // A deliberate defect (`runner --defect usage-in-words`): the table
    // keeps the used part in words, the unit the scan steps in.
    #[cfg(defect = "usage-in-words")]
    let recorded = used / 8;
    #[cfg(not(defect = "usage-in-words"))]
    let recorded = used;
    record(task.id, recorded);
    let killed = matches!(status, ExitStatus::Killed(_));
    if !killed && abi::usage::is_near_miss(used, size, near_miss_percent()) {
        report_near_miss(task, used, size);
    }
}

fn record(id: u64, used: u64) {
    let mut table = TABLE.lock();
    if table.try_reserve(1).is_ok() {
        table.push((id, used));
    } else {
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Whether `v` is an address in the kernel's code.
fn is_text(v: u64) -> bool {
    let image = mm::layout::image();
    (image.text.as_u64()..image.rodata.as_u64()).contains(&v)
}

/// A return address as the oops names one (`oops::symbols::return_sym`,
/// which this layer cannot call): by the call before it, with its own
/// offset.
fn return_sym(addr: u64) -> Option<Sym<'static>> {
    let found = mm::layout::symbols()?.lookup(addr.checked_sub(1)?)?;
    Some(Sym {
        name: found.name,
        link: found.link,
        off: Hex(found.offset + 1),
        size: Hex(found.size),
    })
}

/// The `NEAR-MISS` record, and a line for a person. Out of line: its frame
/// (the record and the chain) is paid only by a near miss.
#[inline(never)]
fn report_near_miss(task: &Task, used: u64, size: u64) {
    let Some((chain, lo, hi)) = task.with_stack(|s| {
        (
            s.deepest_chain::<CHAIN_RECORDS>(is_text),
            s.bottom().as_u64(),
            s.top().as_u64(),
        )
    }) else {
        return;
    };
    // Runs of one return address folded, as the oops folds a recursion.
    let mut frames: heapless::Vec<ChainFrame<'static>, MAX_CHAIN> = heapless::Vec::new();
    let mut truncated = chain.truncated;
    for r in chain.records() {
        if let Some(last) = frames.last_mut().filter(|l| l.frame.addr.get() == r.ret) {
            last.frame.repeat += 1;
            continue;
        }
        let frame = ChainFrame {
            at: Hex(r.at as u64),
            frame: Frame {
                addr: Hex(r.ret),
                sym: return_sym(r.ret),
                trap: None,
                repeat: 1,
                // A stale chain's record sizes are its own concern: the
                // chain gives each record's address (`at`).
                size: None,
            },
        };
        if frames.push(frame).is_err() {
            truncated = true;
            break;
        }
    }
    let percent = near_miss_percent();
    kprintln!(
        "stack: task {} '{}' used {used} of {size} bytes of its stack ({} %, more than {percent} %): a near miss, {} bytes left",
        task.id,
        task.name(),
        used * 100 / size.max(1),
        size - used.min(size),
    );
    let scenario = *SCENARIO.lock();
    crate::console::record(&NearMiss {
        scenario,
        task_id: task.id,
        task_name: task.name(),
        cpu: percpu::this().id as u32,
        lo: Hex(lo),
        hi: Hex(hi),
        used,
        threshold_percent: percent,
        chain: frames,
        truncated,
    });
}

/// A scenario ended: every exit recorded since the last one, ids sorted
/// and folded into runs (`abi::usage::StackUsage`), as `STACK-USAGE`
/// records of at most `USAGE_CHUNK` runs (one, empty, if none exited),
/// then dropped from the table. Tasks that exit while this prints (a
/// detached one finishing late) are the next scenario's.
pub fn end_of_scenario(scenario: &'static str) {
    let total = {
        let mut table = TABLE.lock();
        let n = table.len();
        table[..n].sort_unstable();
        n
    };
    let dropped = DROPPED.swap(0, Ordering::Relaxed);
    let stack_size = mm::stack::task_stack_size() as u64;
    let mut at = 0;
    loop {
        let from = at;
        let mut runs: heapless::Vec<[u64; 3], USAGE_CHUNK> = heapless::Vec::new();
        {
            // Copy under the lock, print outside it: exits on other CPUs
            // must not wait for the serial line.
            let table = TABLE.lock();
            while let Some(&(id, used)) = table[..total].get(at) {
                match runs.last_mut() {
                    Some([first, n, u]) if *u == used && *first + *n == id => *n += 1,
                    _ => {
                        if runs.push([id, 1, used]).is_err() {
                            break;
                        }
                    }
                }
                at += 1;
            }
        }
        crate::console::record(&StackUsage {
            scenario,
            stack_size,
            total: total as u64,
            from: from as u64,
            runs,
            dropped,
        });
        if at >= total {
            break;
        }
    }
    TABLE.lock().drain(..total);
}
