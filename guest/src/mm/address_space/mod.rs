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
mod tables;
mod worker;

pub use worker::{flush_work, worker_counts, WORKER_NAME};

use super::paging;
use crate::arch::x86_64::percpu;
use crate::sync::IrqLock;
use alloc::boxed::Box;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use kcore::mm_refs::{Context, Deferred, DropOutcome, MmCounts, MmRefs, MmStats};
use kcore::refcount::RefcountEvent;
use tables::map_zeroed;
use worker::{queue_work, start_worker};
use x86_64::structures::paging::PhysFrame;
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
        DropOutcome::TearDownMappings => sleeping_step(p, Deferred::TearDownMappings, ctx),
        DropOutcome::FreePageTables => sleeping_step(p, Deferred::FreePageTables, ctx),
        DropOutcome::FreeStruct => free_struct(p),
        DropOutcome::Defer(what) => queue_work(p, what),
    }
}

/// One of the steps that may sleep (here, where that is allowed, or on the
/// worker), then the rest of the chain.
fn sleeping_step(p: MmPtr, step: Deferred, ctx: Context) {
    let next = match step {
        Deferred::TearDownMappings => {
            exit_mmap(&p);
            p.get().refs.drop_count(ctx)
        }
        Deferred::FreePageTables => {
            mmdrop_free(&p);
            p.get().refs.put_struct(ctx)
        }
    };
    carry_out(p, next, ctx);
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
    if let Some(root) = *pgd {
        let n = mm.mapped.swap(0, Ordering::AcqRel);
        tables::unmap_user_half(root, n, mm.id);
    }
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
