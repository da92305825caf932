//! Address spaces and their three kinds of reference (Jann Horn, Nov 2020,
//! `seeds/jannh-2020-11-mm-refcounts.txt`).
//!
//! An `mm` is kept alive for three reasons: its mappings (`mm_users`), its
//! page-table root (`mm_count`, e.g. lazy TLB), or just the struct (ptrace
//! comparing a pointer after exit). Freeing the root takes `pgd_lock` and so
//! may not happen from atomic or RCU-callback context: there the last
//! `mmdrop` has to punt the work to a worker (`mmdrop_async`). Jann's point
//! is that readers who need only the struct should not pay that: dropping a
//! struct-only reference frees synchronously anywhere. `kcore::mm_refs`
//! decides every step (host-tested); this module owns the real resources
//! (a PGD, page tables, mapped pages), carries the steps out, checks that
//! the sleeping ones run where sleeping is allowed, and runs the worker.
use super::{frames, hhdm, paging};
use crate::arch::x86_64::percpu;
use crate::sync::IrqLock;
use crate::task::{self, WaitQueue};
use alloc::boxed::Box;
use alloc::collections::VecDeque;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use kcore::mm_refs::{Context, Deferred, DropOutcome, MmCounts, MmRefs, MmStats};
use kcore::refcount::RefcountEvent;
use spin::Once;
use x86_64::structures::paging::mapper::CleanUp;
use x86_64::structures::paging::{
    FrameAllocator, FrameDeallocator, Mapper, OffsetPageTable, Page, PageTable, PageTableFlags,
    PhysFrame, Size4KiB,
};
use x86_64::VirtAddr;

/// Where an mm's pages are mapped in its user half.
const USER_BASE: u64 = 0x0000_4000_0000;
const USER_TOP: u64 = 0x0000_7fff_ffff_ffff;

static STATS: MmStats = MmStats::new();
/// Mm structs allocated and not yet freed.
static LIVE: AtomicU64 = AtomicU64::new(0);
/// `might_sleep` complaints: sleeping work found running in atomic context.
static INVALID_CONTEXT: AtomicU64 = AtomicU64::new(0);
/// refcount_t events on any mm count (misuse; contained by saturation).
static EVENTS: AtomicU64 = AtomicU64::new(0);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

struct MmStruct {
    refs: MmRefs,
    id: u64,
    /// `None` once `__mmdrop` has freed it.
    pgd: IrqLock<Option<PhysFrame>>,
    /// Pages mapped at `USER_BASE..`, until `exit_mmap`.
    mapped: AtomicUsize,
}

/// The one pointer to an mm's storage. Not `Clone`: every live `MmPtr`
/// stands for one counted reference (held by a handle, a queued work item,
/// or the drop chain in progress), and `free_struct` consumes the last.
struct MmPtr(NonNull<MmStruct>);

// SAFETY: `MmStruct` is `Sync` (atomics and an `IrqLock`); whether the
// pointee is alive depends on the references counted in `MmRefs`, which the
// holder of an `MmPtr` owns wherever it runs, not on the thread.
unsafe impl Send for MmPtr {}
// SAFETY: as for `Send`: shared access only reads through `&MmStruct`.
unsafe impl Sync for MmPtr {}

impl MmPtr {
    fn get(&self) -> &MmStruct {
        // SAFETY: this `MmPtr` stands for a counted reference, so
        // `structs` >= 1 and the struct is not freed (`free_struct` runs
        // only when it reaches zero, and consumes the last `MmPtr`).
        unsafe { self.0.as_ref() }
    }
}

/// An `mm_users` reference: the mappings, page tables and struct stay
/// (what `task->mm` holds). Dropping it is `mmput` in process context.
pub struct Mm(MmPtr);

/// An `mm_count` reference (`mmgrab`): the page-table root and the struct
/// stay, the mappings may go. Dropping it is `mmdrop` in process context.
pub struct MmGrab(MmPtr);

/// A struct-only reference: the struct stays, nothing else. Dropping it is
/// `mm_put_struct`, never deferred.
pub struct MmStructRef(MmPtr);

#[derive(Debug)]
pub enum MmError {
    NoMemory,
}

impl Mm {
    /// `mm_alloc` and the first `mmap`: a PGD, and `pages` zeroed pages
    /// mapped in the user half (with the page tables that takes).
    pub fn new(pages: usize) -> Result<Mm, MmError> {
        might_sleep("mm_alloc");
        start_worker()?;
        let pgd = paging::pgd_alloc().ok_or(MmError::NoMemory)?;
        let mm = Box::new(MmStruct {
            refs: MmRefs::new(),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            pgd: IrqLock::new(Some(pgd)).named("mm->pgd"),
            mapped: AtomicUsize::new(0),
        });
        LIVE.fetch_add(1, Ordering::AcqRel);
        let mm = Mm(MmPtr(NonNull::from(Box::leak(mm))));
        for i in 0..pages {
            if !map_zeroed(mm.0.get(), VirtAddr::new(USER_BASE + i as u64 * 4096)) {
                // The whole exit chain gives back what was mapped so far.
                drop(mm);
                return Err(MmError::NoMemory);
            }
        }
        Ok(mm)
    }

    /// `mmget`: another user of the mappings.
    pub fn mmget(&self) -> Mm {
        if let Err(e) = self.0.get().refs.get_users() {
            report(&self.0, "mm_users", e);
        }
        Mm(MmPtr(self.0 .0))
    }

    /// `mmput` (`mmput_async` where `ctx` may not sleep).
    pub fn mmput(self, ctx: Context) {
        let p = MmPtr(self.0 .0);
        core::mem::forget(self);
        let outcome = p.get().refs.put_users(ctx);
        carry_out(p, outcome, ctx);
    }

    pub fn mmgrab(&self) -> MmGrab {
        grab(&self.0)
    }
    pub fn get_struct(&self) -> MmStructRef {
        get_struct(&self.0)
    }
    pub fn info(&self) -> MmInfo {
        info(&self.0)
    }
}

impl Drop for Mm {
    fn drop(&mut self) {
        Mm(MmPtr(self.0 .0)).mmput(Context::Process);
    }
}

impl MmGrab {
    /// `mmdrop` (`mmdrop_async` where `ctx` may not sleep).
    pub fn mmdrop(self, ctx: Context) {
        let p = MmPtr(self.0 .0);
        core::mem::forget(self);
        #[cfg(not(defect = "mmdrop-not-deferred"))]
        let outcome = p.get().refs.drop_count(ctx);
        // A deliberate defect (`runner --defect mmdrop-not-deferred`): the
        // drop judged as if from process context, so the last `mm_count`
        // dropped where sleeping is forbidden frees the page tables there
        // instead of deferring it to the worker.
        #[cfg(defect = "mmdrop-not-deferred")]
        let outcome = p.get().refs.drop_count(Context::Process);
        carry_out(p, outcome, ctx);
    }

    pub fn info(&self) -> MmInfo {
        info(&self.0)
    }
}

impl Drop for MmGrab {
    fn drop(&mut self) {
        MmGrab(MmPtr(self.0 .0)).mmdrop(Context::Process);
    }
}

impl MmStructRef {
    /// Drop the struct-only reference: the last one frees the struct, here
    /// and now, whatever `ctx` is.
    pub fn put(self, ctx: Context) {
        let p = MmPtr(self.0 .0);
        core::mem::forget(self);
        let outcome = p.get().refs.put_struct(ctx);
        carry_out(p, outcome, ctx);
    }

    /// `mmget_not_zero`: the mappings, if they are still there.
    pub fn mmget_not_zero(&self) -> Option<Mm> {
        get_users_not_zero(&self.0)
    }
    pub fn info(&self) -> MmInfo {
        info(&self.0)
    }
}

impl Drop for MmStructRef {
    fn drop(&mut self) {
        MmStructRef(MmPtr(self.0 .0)).put(Context::Process);
    }
}

fn grab(p: &MmPtr) -> MmGrab {
    if let Err(e) = p.get().refs.grab() {
        report(p, "mm_count", e);
    }
    MmGrab(MmPtr(p.0))
}

fn get_struct(p: &MmPtr) -> MmStructRef {
    if let Err(e) = p.get().refs.get_struct() {
        report(p, "struct", e);
    }
    MmStructRef(MmPtr(p.0))
}

fn get_users_not_zero(p: &MmPtr) -> Option<Mm> {
    match p.get().refs.get_users_not_zero() {
        Ok(true) => Some(Mm(MmPtr(p.0))),
        Ok(false) => None,
        Err(e) => {
            report(p, "mm_users", e);
            None
        }
    }
}

/// What a reference holder may look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmInfo {
    pub id: u64,
    pub users: u32,
    pub count: u32,
    pub struct_refs: u32,
    pub mapped_pages: usize,
    pub has_pgd: bool,
}

fn info(p: &MmPtr) -> MmInfo {
    let mm = p.get();
    MmInfo {
        id: mm.id,
        users: mm.refs.users(),
        count: mm.refs.count(),
        struct_refs: mm.refs.struct_refs(),
        mapped_pages: mm.mapped.load(Ordering::Acquire),
        has_pgd: mm.pgd.lock().is_some(),
    }
}

fn report(p: &MmPtr, which: &str, e: RefcountEvent) {
    EVENTS.fetch_add(1, Ordering::AcqRel);
    kprintln!("refcount_t: {e} ({which} of mm {})", p.get().id);
}

/// Do what a drop left to its caller, as `DropOutcome` says, following the
/// chain down (each level ends by dropping the reference it held on the
/// next) until nothing is left or the rest is queued for the worker.
fn carry_out(p: MmPtr, outcome: Result<DropOutcome, RefcountEvent>, ctx: Context) {
    let outcome = match outcome {
        Ok(o) => o,
        // The count is now saturated: a leak, never a second free.
        Err(e) => return report(&p, "a reference", e),
    };
    STATS.record(outcome);
    match outcome {
        DropOutcome::Nothing => {}
        DropOutcome::TearDownMappings => {
            exit_mmap(&p);
            let next = p.get().refs.drop_count(ctx);
            carry_out(p, next, ctx);
        }
        DropOutcome::FreePageTables => {
            mmdrop_free(&p);
            let next = p.get().refs.put_struct(ctx);
            carry_out(p, next, ctx);
        }
        DropOutcome::FreeStruct => free_struct(p),
        DropOutcome::Defer(what) => queue_work(p, what),
    }
}

/// Linux's `might_sleep()`: sleeping work must not run with interrupts or
/// preemption off. Reported loudly and counted, then the work goes on (as
/// in Linux): the counter is what the scenarios hold against zero.
fn might_sleep(what: &str) -> bool {
    let cpu = percpu::this();
    let irqs = x86_64::instructions::interrupts::are_enabled();
    let preempt = cpu.preempt_count();
    let ok = irqs && preempt == 0 && !cpu.in_irq();
    if !ok {
        INVALID_CONTEXT.fetch_add(1, Ordering::AcqRel);
        kprintln!("BUG: sleeping function called from invalid context at {what}");
        crate::task::with_current(|t| {
            kprintln!(
                "in_atomic(): {}, irqs_disabled(): {}, pid: {}, name: {}",
                u8::from(preempt != 0 || cpu.in_irq()),
                u8::from(!irqs),
                t.id,
                t.name()
            )
        });
    }
    ok
}

/// `exit_mmap`: unmap every page and free it, then the page tables under
/// the user half. The root stays: it is `mm_count`'s.
fn exit_mmap(p: &MmPtr) {
    might_sleep("exit_mmap");
    let mm = p.get();
    let pgd = mm.pgd.lock();
    let Some(root) = *pgd else {
        return;
    };
    let mut tables = user_tables(root);
    let n = mm.mapped.swap(0, Ordering::AcqRel);
    for i in 0..n {
        let page = Page::<Size4KiB>::containing_address(VirtAddr::new(USER_BASE + i as u64 * 4096));
        match tables.unmap(page) {
            // Never loaded into CR3: no TLB anywhere holds it.
            Ok((frame, flush)) => {
                flush.ignore();
                frames::free(frame);
            }
            Err(e) => kprintln!("exit_mmap: mm {} page {i}: {e:?}", mm.id),
        }
    }
    let user_half = Page::range_inclusive(
        Page::containing_address(VirtAddr::new(0)),
        Page::containing_address(VirtAddr::new(USER_TOP)),
    );
    // SAFETY: the user half's tables were made for this mm alone (by
    // `map_zeroed`) and are referenced by no other table; the kernel half,
    // shared with every address space, is outside the range.
    unsafe { tables.clean_up_addr_range(user_half, &mut UserTableFrames) };
}

/// `__mmdrop`: free the page-table root. Takes `pgd_lock` in Linux, so it
/// must run where sleeping is allowed.
fn mmdrop_free(p: &MmPtr) {
    might_sleep("__mmdrop");
    let root = p.get().pgd.lock().take();
    if let Some(root) = root {
        paging::pgd_free(root);
    }
}

/// The last reference of any kind: free the struct itself. A plain heap
/// free, fine in any context.
fn free_struct(p: MmPtr) {
    LIVE.fetch_sub(1, Ordering::AcqRel);
    // SAFETY: every count reached zero, so `p` was the last `MmPtr`; the
    // allocation came from `Box::leak` in `Mm::new` and is dropped once.
    drop(unsafe { Box::from_raw(p.0.as_ptr()) });
}

/// The mm's own page tables, through the HHDM. The caller holds `pgd`'s
/// lock (passing its contents): nobody else walks or edits them meanwhile.
fn user_tables(root: PhysFrame) -> OffsetPageTable<'static> {
    let offset = hhdm::offset().expect("HHDM offset unknown");
    let virt = hhdm::phys_to_virt(root.start_address()).expect("HHDM offset unknown");
    // SAFETY: `root` is this mm's PGD, a frame it owns and the HHDM maps;
    // the caller's lock on `pgd` makes this the only view of it.
    unsafe { OffsetPageTable::new(&mut *virt.as_mut_ptr::<PageTable>(), VirtAddr::new(offset)) }
}

/// Map one zeroed page (anonymous memory) at `at` in `mm`'s user half.
fn map_zeroed(mm: &MmStruct, at: VirtAddr) -> bool {
    let pgd = mm.pgd.lock();
    let Some(root) = *pgd else {
        return false;
    };
    let Some(frame) = frames::alloc() else {
        return false;
    };
    let virt = hhdm::phys_to_virt(frame.start_address()).expect("HHDM offset unknown");
    // SAFETY: the frame was just allocated: nothing else references it, and
    // the HHDM maps it writable.
    unsafe { core::ptr::write_bytes(virt.as_mut_ptr::<u8>(), 0, 4096) };
    let flags = PageTableFlags::PRESENT
        | PageTableFlags::WRITABLE
        | PageTableFlags::USER_ACCESSIBLE
        | PageTableFlags::NO_EXECUTE;
    let page = Page::<Size4KiB>::containing_address(at);
    // SAFETY: `frame` is fresh and mapped nowhere else; this address space
    // is never loaded into CR3, so no Rust reference can alias the mapping.
    match unsafe { user_tables(root).map_to(page, frame, flags, &mut UserTableFrames) } {
        Ok(flush) => {
            flush.ignore();
            mm.mapped.fetch_add(1, Ordering::AcqRel);
            true
        }
        Err(_) => {
            frames::free(frame);
            false
        }
    }
}

/// Page-table frames for an mm's user half: plain frames, counted as used
/// memory (unlike the kernel's own tables, these come and go with the mm).
struct UserTableFrames;

// SAFETY: hands out frames the frame allocator has just marked used; the
// mapper zeroes a new table before linking it.
unsafe impl FrameAllocator<Size4KiB> for UserTableFrames {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        frames::alloc()
    }
}

impl FrameDeallocator<Size4KiB> for UserTableFrames {
    unsafe fn deallocate_frame(&mut self, frame: PhysFrame<Size4KiB>) {
        frames::free(frame);
    }
}

// ---- mmput_async / mmdrop_async: the worker ----------------------------

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
fn start_worker() -> Result<u64, MmError> {
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
fn queue_work(mm: MmPtr, what: Deferred) {
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
            let ctx = Context::Process;
            match what {
                Deferred::TearDownMappings => {
                    exit_mmap(&mm);
                    let next = mm.get().refs.drop_count(ctx);
                    carry_out(mm, next, ctx);
                }
                Deferred::FreePageTables => {
                    mmdrop_free(&mm);
                    let next = mm.get().refs.put_struct(ctx);
                    carry_out(mm, next, ctx);
                }
            }
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

/// Synchronous vs deferred drops, every mm so far.
pub fn stats() -> MmCounts {
    STATS.snapshot()
}

/// Mm structs not yet freed.
pub fn live() -> u64 {
    LIVE.load(Ordering::Acquire)
}

/// How often sleeping mm work ran where it may not sleep.
pub fn invalid_context_bugs() -> u64 {
    INVALID_CONTEXT.load(Ordering::Acquire)
}

pub fn refcount_events() -> u64 {
    EVENTS.load(Ordering::Acquire)
}
