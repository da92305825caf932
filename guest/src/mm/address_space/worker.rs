//! `mmput_async` / `mmdrop_async`: the worker task that runs the steps a
//! drop in atomic or RCU-callback context may not (mm's one crossing into
//! `task`: the worker is a task, and `flush_work` sleeps on a wait queue).
use super::{might_sleep, sleeping_step, MmError, MmPtr};
use crate::arch::x86_64::percpu;
use crate::sync::IrqLock;
use crate::task::{self, WaitQueue};
use alloc::collections::VecDeque;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use kcore::mm_refs::{Context, Deferred};
use spin::Once;

struct Work {
    mm: MmPtr,
    what: Deferred,
}

/// Queued work, oldest first. Its buffer keeps its capacity once grown.
static WORK: IrqLock<VecDeque<Work>> = IrqLock::new(VecDeque::new()).named("mmdrop_async");
/// The worker sleeps here until `WORK` is not empty.
static WORK_WAIT: WaitQueue = WaitQueue::new();
/// `flush_work` callers sleep here until the worker has caught up.
static DRAINED: WaitQueue = WaitQueue::new();
static WORKER: Once<u64> = Once::new();

static QUEUED: AtomicU64 = AtomicU64::new(0);
static RAN: AtomicU64 = AtomicU64::new(0);
static RAN_IN_PROCESS_CONTEXT: AtomicU64 = AtomicU64::new(0);
static WORKER_CPU: AtomicUsize = AtomicUsize::new(usize::MAX);

pub const WORKER_NAME: &str = "kworker/mm";

/// Before the first mm exists, so that no drop, in whatever context, ever
/// has to create the worker.
pub(super) fn start_worker() -> Result<u64, MmError> {
    WORKER
        .try_call_once(|| {
            // Room for the worker and a few flushers: waiting allocates nothing.
            WORK_WAIT.reserve(1);
            DRAINED.reserve(4);
            task::spawn_daemon(WORKER_NAME, worker).map_err(|_| MmError::NoMemory)
        })
        .copied()
}

/// Queue deferred work: from any context (interrupts off, an RCU callback),
/// since it only takes `IrqLock`s and wakes a task.
pub(super) fn queue_work(mm: MmPtr, what: Deferred) {
    {
        let mut q = WORK.lock();
        q.push_back(Work { mm, what });
        QUEUED.fetch_add(1, Ordering::AcqRel);
    }
    WORK_WAIT.wake_all();
}

fn worker() -> ! {
    loop {
        WORK_WAIT.wait_until(|| !WORK.lock().is_empty());
        loop {
            let item = WORK.lock().pop_front();
            let Some(Work { mm, what }) = item else {
                break;
            };
            let on_worker = WORKER.get().is_some_and(|&id| id == task::current_id());
            if might_sleep("the mm worker") && on_worker {
                RAN_IN_PROCESS_CONTEXT.fetch_add(1, Ordering::AcqRel);
            }
            WORKER_CPU.store(percpu::this().id, Ordering::Relaxed);
            // The step the drop could not do, then the rest of its chain,
            // all in process context.
            sleeping_step(mm, what, Context::Process);
            RAN.fetch_add(1, Ordering::AcqRel);
            DRAINED.wake_all();
        }
    }
}

/// `flush_work`: wait until everything queued before this call has run.
/// From process context (it sleeps).
pub fn flush_work() {
    let target = QUEUED.load(Ordering::Acquire);
    DRAINED.wait_until(|| RAN.load(Ordering::Acquire) >= target);
}

/// The worker's side of the deferred drops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerCounts {
    /// Task id of the worker (0 before the first mm).
    pub task: u64,
    /// The CPU it last ran an item on.
    pub cpu: Option<usize>,
    pub queued: u64,
    pub ran: u64,
    /// Items it ran on the worker task, with interrupts and preemption on.
    pub ran_in_process_context: u64,
}

pub fn worker_counts() -> WorkerCounts {
    WorkerCounts {
        task: WORKER.get().copied().unwrap_or(0),
        cpu: Some(WORKER_CPU.load(Ordering::Relaxed)).filter(|&c| c != usize::MAX),
        queued: QUEUED.load(Ordering::Acquire),
        ran: RAN.load(Ordering::Acquire),
        ran_in_process_context: RAN_IN_PROCESS_CONTEXT.load(Ordering::Acquire),
    }
}
