//! Debug placement: objects whose use after free must fault (the idea of
//! KFENCE and DEBUG_PAGEALLOC, for one kind of object on request).
//!
//! A placed object gets pages of its own in the vmalloc area, between guard
//! pages. Freeing it unmaps the pages on every CPU at once and keeps the
//! range reserved for a while (`vmalloc::vfree_quarantined`), so a stale
//! pointer faults instead of reading a reused object, and the fault handler
//! can say whose object it was. Everything else keeps using the heap: the
//! global allocator asks `take_armed` on each allocation (one load when
//! nothing is armed) and `owns` on each free.
use super::vmalloc::{self, Owner, VMALLOC_END, VMALLOC_START};
use crate::arch::x86_64::percpu;
use crate::sync::irq;
use crate::sync::SpinLock;
use abi::kinds::ObjectKind;
use core::alloc::Layout;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use kcore::vmalloc::{Guards, Lookup};
use x86_64::VirtAddr;

const PAGE: usize = 4096;

/// What the next allocation on a CPU is for: set by `place`, consumed by
/// the first allocation inside it.
#[derive(Clone, Copy)]
struct Tag {
    what: ObjectKind,
    id: u64,
}

/// CPUs with an armed placement: lets every other allocation skip the
/// per-CPU lookup.
static ARMED_CPUS: AtomicUsize = AtomicUsize::new(0);
static ARMED: [SpinLock<Option<Tag>>; percpu::MAX_CPUS] =
    [const { SpinLock::new(None).named("kfence_armed") }; percpu::MAX_CPUS];
/// Placed objects allocated and freed; placements that fell back to the
/// heap because the vmalloc area had no room.
static PLACED: AtomicU64 = AtomicU64::new(0);
static FREED: AtomicU64 = AtomicU64::new(0);
static FALLBACKS: AtomicU64 = AtomicU64::new(0);

/// Run `make` with its first heap allocation placed in guarded pages,
/// owned by (`what`, `id`). Interrupts are off meanwhile, so an interrupt
/// handler's allocation cannot take the placement. A placement that could
/// not be made falls back to the heap and is counted (`counters`).
pub fn place<T>(what: ObjectKind, id: u64, make: impl FnOnce() -> T) -> T {
    irq::without(|| {
        let cpu = percpu::this().id;
        *ARMED[cpu].lock() = Some(Tag { what, id });
        ARMED_CPUS.fetch_add(1, Ordering::AcqRel);
        let made = make();
        ARMED_CPUS.fetch_sub(1, Ordering::AcqRel);
        // `make` allocated nothing: disarm, or the next allocation here
        // would take a tag meant for someone else.
        ARMED[cpu].lock().take();
        made
    })
}

/// For the global allocator: the placement armed on this CPU, if any. It is
/// disarmed first, so the vmalloc bookkeeping's own allocations go to the
/// heap.
pub(super) fn take_armed(layout: Layout) -> Option<*mut u8> {
    if ARMED_CPUS.load(Ordering::Acquire) == 0 || !percpu::ready() {
        return None;
    }
    let tag = ARMED[percpu::this().id].lock().take()?;
    if layout.align() > PAGE {
        FALLBACKS.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    let owner = Owner::Object {
        what: tag.what,
        id: tag.id,
    };
    match vmalloc::vmalloc(layout.size().div_ceil(PAGE).max(1), Guards::both(1), owner) {
        Ok(a) => {
            PLACED.fetch_add(1, Ordering::Relaxed);
            Some(a.base as *mut u8)
        }
        Err(_) => {
            FALLBACKS.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// For the global allocator: `ptr` is a placed object (only they live in
/// the vmalloc area among heap pointers).
pub(super) fn owns(ptr: *mut u8) -> bool {
    (VMALLOC_START..VMALLOC_END).contains(&(ptr as u64))
}

/// For the global allocator: free a placed object into the quarantine.
pub(super) fn free(ptr: *mut u8) {
    let retire = |owner| match owner {
        Owner::Object { what, id } => Some(Owner::Freed { what, id }),
        _ => None,
    };
    vmalloc::vfree_quarantined(VirtAddr::new(ptr as u64), retire)
        .unwrap_or_else(|e| panic!("freeing {ptr:p}: not a live placed object ({e:?})"));
    FREED.fetch_add(1, Ordering::Relaxed);
}

/// A freed placed object an address falls in.
#[derive(Clone, Copy, Debug)]
pub struct FreedObject {
    pub what: ObjectKind,
    pub id: u64,
    pub base: u64,
    pub offset: u64,
    pub bytes: u64,
}

/// Which freed object `addr` is in, if any (for the page-fault handler; a
/// `None` when the registry is busy).
pub fn freed_object_at(addr: u64) -> Option<FreedObject> {
    match vmalloc::lookup(VirtAddr::new(addr))? {
        Lookup::Mapped { alloc, offset } => match alloc.owner {
            Owner::Freed { what, id } => Some(FreedObject {
                what,
                id,
                base: alloc.base,
                offset,
                bytes: alloc.size(),
            }),
            _ => None,
        },
        _ => None,
    }
}

/// `addr` is inside a live placed object.
pub fn is_placed(addr: u64) -> bool {
    matches!(
        vmalloc::lookup(VirtAddr::new(addr)),
        Some(Lookup::Mapped { alloc, .. }) if matches!(alloc.owner, Owner::Object { .. })
    )
}

/// (placed, freed, fell back to the heap), since boot.
pub fn counters() -> (u64, u64, u64) {
    (
        PLACED.load(Ordering::Relaxed),
        FREED.load(Ordering::Relaxed),
        FALLBACKS.load(Ordering::Relaxed),
    )
}
