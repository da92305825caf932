//! The three kinds of reference to an address space (Jann Horn, 2020).
//!
//! - `mm_users` (`mmget`/`mmput`): users of the mappings. The last one
//!   tears them down (`exit_mmap`), which sleeps.
//! - `mm_count` (`mmgrab`/`mmdrop`): users of the page-table root, e.g. a
//!   CPU running a kernel thread on a borrowed mm (lazy TLB). All of
//!   `mm_users` together hold one. The last one frees the page tables, which
//!   takes `pgd_lock` and so cannot run from atomic or RCU-callback context:
//!   there it must be punted to a worker (`mmdrop_async`).
//! - struct-only (`get_struct`/`put_struct`): users that need only the
//!   `mm_struct` itself (compare a pointer, read a field such as the
//!   `user_ns` for `__ptrace_may_access`). All of `mm_count` together hold
//!   one. The last one frees the struct, synchronously, from any context;
//!   that is the point of the third count: a reader dropping it from an
//!   RCU callback no longer forces a deferral.
//!
//! Each drop returns what the caller must do *now*; finishing that step
//! includes dropping the reference its level held on the next one (as
//! `__mmput` ends in `mmdrop`), see [`DropOutcome`]. Nothing here frees
//! anything itself.

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::refcount::{Refcount, RefcountEvent};

/// Where a drop runs: decides whether sleeping work may happen inline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Context {
    /// May sleep: a task in the kernel, a worker thread.
    Process,
    /// Interrupts or preemption off, spinlock held: may not sleep.
    Atomic,
    /// An RCU callback, run from softirq/IRQ context: may not sleep.
    RcuCallback,
}

impl Context {
    pub fn may_sleep(self) -> bool {
        self == Context::Process
    }
}

/// Work that cannot be done in the caller's context: hand the mm to a
/// worker, which does it in [`Context::Process`] (with the same follow-up
/// as the synchronous [`DropOutcome`] of the same name).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Deferred {
    /// `mmput_async`: the last `mm_users` went in atomic context.
    TearDownMappings,
    /// `mmdrop_async`: the last `mm_count` went in atomic/RCU context.
    FreePageTables,
}

/// What a drop leaves for the caller to do, now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[must_use = "a last reference went: its teardown is now the caller's job"]
pub enum DropOutcome {
    /// Other references remain.
    Nothing,
    /// Last `mm_users`: unmap everything (`exit_mmap`), then
    /// [`MmRefs::drop_count`] for the `mm_count` the users held.
    TearDownMappings,
    /// Last `mm_count`: free the page tables (`__mmdrop`), then
    /// [`MmRefs::put_struct`] for the struct reference `mm_count` held.
    FreePageTables,
    /// Last reference of any kind: free the struct.
    FreeStruct,
    /// As the variant named, but on a worker, because this context may not
    /// sleep. The caller must not touch the mm beyond queueing it.
    Defer(Deferred),
}

/// The mm's three counts. Initially one `mm_users` reference (the
/// creator's), which holds the one `mm_count`, which holds the one struct
/// reference.
pub struct MmRefs {
    users: Refcount,
    count: Refcount,
    structs: Refcount,
}

impl MmRefs {
    pub const fn new() -> Self {
        MmRefs {
            users: Refcount::new(1),
            count: Refcount::new(1),
            structs: Refcount::new(1),
        }
    }

    /// `mmget`: another user of the mappings; the caller holds one already.
    pub fn get_users(&self) -> Result<(), RefcountEvent> {
        self.users.inc()
    }

    /// `mmget_not_zero`: the mappings, if they are still there (from a
    /// struct-only or `mm_count` reference, or under RCU).
    pub fn get_users_not_zero(&self) -> Result<bool, RefcountEvent> {
        self.users.inc_not_zero()
    }

    /// `mmput` (or, in a context that may not sleep, `mmput_async`).
    pub fn put_users(&self, ctx: Context) -> Result<DropOutcome, RefcountEvent> {
        Ok(match self.users.dec_and_test()? {
            false => DropOutcome::Nothing,
            // exit_mmap sleeps (it takes mmap_lock, frees pages).
            true if ctx.may_sleep() => DropOutcome::TearDownMappings,
            true => DropOutcome::Defer(Deferred::TearDownMappings),
        })
    }

    /// `mmgrab`: keep the page-table root; the caller holds some reference
    /// that keeps `mm_count` above zero.
    pub fn grab(&self) -> Result<(), RefcountEvent> {
        self.count.inc()
    }

    /// `mmdrop` (or `mmdrop_async` where it may not sleep).
    pub fn drop_count(&self, ctx: Context) -> Result<DropOutcome, RefcountEvent> {
        Ok(match self.count.dec_and_test()? {
            false => DropOutcome::Nothing,
            // Freeing the pgd takes pgd_lock (x86), not irq-safe.
            true if ctx.may_sleep() => DropOutcome::FreePageTables,
            true => DropOutcome::Defer(Deferred::FreePageTables),
        })
    }

    /// Keep just the struct; the caller holds some reference to the mm.
    pub fn get_struct(&self) -> Result<(), RefcountEvent> {
        self.structs.inc()
    }

    /// Drop a struct-only reference. Freeing the struct is a plain slab
    /// free, fine in any context, so it is never deferred: `ctx` is taken
    /// only so every drop reads the same at the call site.
    pub fn put_struct(&self, _ctx: Context) -> Result<DropOutcome, RefcountEvent> {
        Ok(match self.structs.dec_and_test()? {
            false => DropOutcome::Nothing,
            true => DropOutcome::FreeStruct,
        })
    }

    pub fn users(&self) -> u32 {
        self.users.get()
    }

    pub fn count(&self) -> u32 {
        self.count.get()
    }

    pub fn struct_refs(&self) -> u32 {
        self.structs.get()
    }
}

impl Default for MmRefs {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MmRefs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MmRefs")
            .field("users", &self.users)
            .field("count", &self.count)
            .field("structs", &self.structs)
            .finish()
    }
}

/// Drops that did something, by kind: the synchronous/deferred split the
/// seed is about. One per system (a `static`), fed every outcome.
#[derive(Default)]
pub struct MmStats {
    teardowns: AtomicU64,
    teardowns_deferred: AtomicU64,
    page_table_frees: AtomicU64,
    page_table_frees_deferred: AtomicU64,
    struct_frees: AtomicU64,
}

/// A snapshot of [`MmStats`]; `*_deferred` counts are included in neither
/// synchronous count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MmCounts {
    pub teardowns: u64,
    pub teardowns_deferred: u64,
    pub page_table_frees: u64,
    pub page_table_frees_deferred: u64,
    pub struct_frees: u64,
}

impl MmStats {
    pub const fn new() -> Self {
        MmStats {
            teardowns: AtomicU64::new(0),
            teardowns_deferred: AtomicU64::new(0),
            page_table_frees: AtomicU64::new(0),
            page_table_frees_deferred: AtomicU64::new(0),
            struct_frees: AtomicU64::new(0),
        }
    }

    /// Count `outcome`. Feed it every drop's, the worker's too (its
    /// `drop_count`/`put_struct` after deferred work); the deferred work
    /// itself is counted once, as deferred, when it was queued.
    pub fn record(&self, outcome: DropOutcome) {
        let c = match outcome {
            DropOutcome::Nothing => return,
            DropOutcome::TearDownMappings => &self.teardowns,
            DropOutcome::FreePageTables => &self.page_table_frees,
            DropOutcome::FreeStruct => &self.struct_frees,
            DropOutcome::Defer(Deferred::TearDownMappings) => &self.teardowns_deferred,
            DropOutcome::Defer(Deferred::FreePageTables) => &self.page_table_frees_deferred,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> MmCounts {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MmCounts {
            teardowns: r(&self.teardowns),
            teardowns_deferred: r(&self.teardowns_deferred),
            page_table_frees: r(&self.page_table_frees),
            page_table_frees_deferred: r(&self.page_table_frees_deferred),
            struct_frees: r(&self.struct_frees),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Context::*;
    use super::DropOutcome::*;
    use super::*;

    /// The whole chain in process context: every step synchronous.
    #[test]
    fn exit_in_process_context() {
        let mm = MmRefs::new();
        assert_eq!(mm.put_users(Process), Ok(TearDownMappings));
        assert_eq!(mm.drop_count(Process), Ok(FreePageTables));
        assert_eq!(mm.put_struct(Process), Ok(FreeStruct));
    }

    /// Jann's case: ptrace keeps the mm after exit_mmap; the reference it
    /// drops from an RCU callback. With mm_count that is a deferral...
    #[test]
    fn mm_count_from_rcu_is_deferred() {
        let mm = MmRefs::new();
        mm.grab().unwrap();
        assert_eq!(mm.put_users(Process), Ok(TearDownMappings));
        assert_eq!(mm.drop_count(Process), Ok(Nothing));
        assert_eq!(
            mm.drop_count(RcuCallback),
            Ok(Defer(Deferred::FreePageTables))
        );
        // The worker:
        assert_eq!(mm.put_struct(Process), Ok(FreeStruct));
    }

    /// ... and with the struct-only reference it is not.
    #[test]
    fn struct_ref_from_rcu_is_synchronous() {
        let mm = MmRefs::new();
        mm.get_struct().unwrap();
        assert_eq!(mm.put_users(Process), Ok(TearDownMappings));
        assert_eq!(mm.drop_count(Process), Ok(FreePageTables));
        assert_eq!(mm.put_struct(Process), Ok(Nothing));
        assert_eq!(mm.put_struct(RcuCallback), Ok(FreeStruct));
        let mm = MmRefs::new();
        mm.get_struct().unwrap();
        assert_eq!(mm.put_users(Process), Ok(TearDownMappings));
        assert_eq!(mm.drop_count(Process), Ok(FreePageTables));
        assert_eq!(mm.put_struct(Atomic), Ok(Nothing));
        assert_eq!(mm.put_struct(Atomic), Ok(FreeStruct));
    }

    #[test]
    fn last_user_in_atomic_context_is_mmput_async() {
        let mm = MmRefs::new();
        assert_eq!(mm.put_users(Atomic), Ok(Defer(Deferred::TearDownMappings)));
        assert_eq!(mm.drop_count(Process), Ok(FreePageTables));
    }

    #[test]
    fn mmget_not_zero_after_exit_fails() {
        let mm = MmRefs::new();
        mm.get_struct().unwrap();
        assert_eq!(mm.get_users_not_zero(), Ok(true));
        assert_eq!(mm.put_users(Process), Ok(Nothing));
        assert_eq!(mm.put_users(Process), Ok(TearDownMappings));
        assert_eq!(mm.get_users_not_zero(), Ok(false));
        assert_eq!(mm.users(), 0);
    }

    #[test]
    fn misuse_is_reported_and_contained() {
        let mm = MmRefs::new();
        assert_eq!(mm.put_users(Process), Ok(TearDownMappings));
        assert_eq!(mm.put_users(Process), Err(RefcountEvent::Underflow));
        assert_eq!(mm.get_users(), Err(RefcountEvent::Saturated));
        assert_eq!(mm.drop_count(Process), Ok(FreePageTables));
        assert_eq!(mm.grab(), Err(RefcountEvent::AddOnZero));
        // The count is pinned: nothing frees the page tables twice.
        assert_eq!(mm.drop_count(Process), Err(RefcountEvent::Saturated));
        assert_eq!(mm.put_struct(Process), Ok(FreeStruct));
        assert_eq!(mm.put_struct(Process), Err(RefcountEvent::Underflow));
        assert!(format!("{mm:?}").contains("saturated"));
    }

    #[test]
    fn stats_split_sync_and_deferred() {
        static STATS: MmStats = MmStats::new();
        for o in [
            TearDownMappings,
            Defer(Deferred::TearDownMappings),
            FreePageTables,
            Defer(Deferred::FreePageTables),
            Defer(Deferred::FreePageTables),
            FreeStruct,
            Nothing,
        ] {
            STATS.record(o);
        }
        assert_eq!(
            STATS.snapshot(),
            MmCounts {
                teardowns: 1,
                teardowns_deferred: 1,
                page_table_frees: 1,
                page_table_frees_deferred: 2,
                struct_frees: 1,
            }
        );
        assert!(Process.may_sleep() && !Atomic.may_sleep() && !RcuCallback.may_sleep());
    }
}
