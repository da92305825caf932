//! The vmalloc area: virtually contiguous, page-backed allocations with
//! unmapped guard pages around each, in a range of their own (Linux's
//! VMALLOC_START..VMALLOC_END).
//!
//! The range bookkeeping and the "whose guard page is this address in?"
//! lookup are `kcore::vmalloc` (host-tested); this module backs ranges with
//! frames and page-table entries. Guard pages are simply never mapped: a
//! stack that runs off its end faults there instead of corrupting the
//! neighbour, which is the whole point of CONFIG_VMAP_STACK.
use super::{frames, paging, tlb};
use crate::sync::IrqLock;
use abi::kinds::ObjectKind;
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use kcore::vmalloc::{Allocation, Guards, Lookup, VmArea};
use x86_64::structures::paging::{PageTableFlags, PhysFrame};
use x86_64::VirtAddr;

/// Linux x86_64's VMALLOC_START, so addresses in our oopses read familiar.
pub const VMALLOC_START: u64 = 0xffff_c900_0000_0000;
pub const VMALLOC_END: u64 = VMALLOC_START + (64 << 30);
const PAGE: u64 = 4096;

/// Who an allocation belongs to, for the ownership lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// A kernel stack; `id` is the task id for task stacks, the CPU index
    /// for per-CPU stacks.
    Stack {
        kind: super::stack::StackKind,
        id: u64,
    },
    /// Anything else, named by its user.
    Named(&'static str),
    /// Freed, waiting for the batched TLB shootdown (see `vfree`).
    LazyFree,
    /// A debug-placed object (`mm::guarded`): `what`, and its owner's id.
    Object { what: ObjectKind, id: u64 },
    /// A debug-placed object after its free: unmapped on every CPU, the
    /// range kept reserved (quarantined) so a stale pointer faults and the
    /// fault can name what was there.
    Freed { what: ObjectKind, id: u64 },
}

pub type VmAllocation = Allocation<Owner>;
pub use kcore::vmalloc::Counters;

static AREA: IrqLock<Option<VmArea<Owner>>> = IrqLock::new(None).named("vmap_area_lock");

#[derive(Debug)]
pub enum VmallocError {
    NoAddressSpace,
    OutOfFrames,
    NotAllocated,
}

pub fn init() {
    *AREA.lock() = Some(VmArea::new(VMALLOC_START, VMALLOC_END));
}

fn with<R>(f: impl FnOnce(&mut VmArea<Owner>) -> R) -> R {
    f(AREA.lock().as_mut().expect("vmalloc used before mm::init"))
}

/// Reserve `pages` pages plus guards and map the pages writable, no-execute.
pub fn vmalloc(pages: usize, guards: Guards, owner: Owner) -> Result<VmAllocation, VmallocError> {
    match try_vmalloc(pages, guards, owner) {
        // Lazily freed ranges hold address space and frames: give them back
        // and try once more before failing.
        Err(_) if purge() + release_quarantine() > 0 => try_vmalloc(pages, guards, owner),
        r => r,
    }
}

fn try_vmalloc(pages: usize, guards: Guards, owner: Owner) -> Result<VmAllocation, VmallocError> {
    let a =
        with(|area| area.alloc(pages, guards, owner)).map_err(|_| VmallocError::NoAddressSpace)?;
    let flags = PageTableFlags::WRITABLE | PageTableFlags::NO_EXECUTE | PageTableFlags::GLOBAL;
    #[cfg(not(defect = "guard-mapped"))]
    let mapped = 0..pages as u64;
    // A deliberate defect (`runner --defect guard-mapped`): an inclusive
    // range, one page too many, and the first page above the allocation
    // (its upper guard) is mapped and backed.
    #[cfg(defect = "guard-mapped")]
    let mapped = 0..=pages as u64;
    for i in mapped {
        let page = VirtAddr::new(a.base + i * PAGE);
        let mapped = frames::alloc()
            .ok_or(VmallocError::OutOfFrames)
            .and_then(|frame| {
                paging::map(page, frame, flags).map_err(|_| {
                    frames::free(frame);
                    VmallocError::OutOfFrames
                })
            });
        if let Err(e) = mapped {
            let frames = unmap(a.base, i as usize);
            tlb::shootdown(VirtAddr::new(a.base), VirtAddr::new(a.base + i * PAGE));
            frames.into_iter().for_each(frames::free);
            let _ = with(|area| area.free(a.base));
            return Err(e);
        }
    }
    Ok(a)
}

fn unmap(base: u64, pages: usize) -> Vec<PhysFrame> {
    (0..pages as u64)
        .filter_map(|i| paging::unmap(VirtAddr::new(base + i * PAGE)))
        .collect()
}

/// Freed ranges whose TLB entries may still live on other CPUs: unmapped,
/// but their frames and addresses are not reusable until a shootdown.
struct Lazy {
    bases: Vec<u64>,
    frames: Vec<PhysFrame>,
}

static LAZY: IrqLock<Lazy> = IrqLock::new(Lazy {
    bases: Vec::new(),
    frames: Vec::new(),
})
.named("vmap_purge_lock");

/// Like Linux's `lazy_max_pages()`: how much may wait for one batched
/// shootdown. Each shootdown interrupts every CPU, so paying for one per
/// freed stack would make task exit cost scale with the CPU count.
const LAZY_MAX_PAGES: usize = (8 << 20) / PAGE as usize;

/// Free the allocation whose first mapped page is `base`. The pages are
/// unmapped now (so this CPU faults on them at once), but the frames and
/// the address range are released in batches, after one TLB shootdown for
/// the lot (Linux's lazy vunmap).
pub fn vfree(base: VirtAddr) -> Result<(), VmallocError> {
    let a = match with(|area| area.lookup(base.as_u64())) {
        Lookup::Mapped { alloc, offset: 0 } if alloc.owner != Owner::LazyFree => alloc,
        _ => return Err(VmallocError::NotAllocated),
    };
    let frames = unmap(a.base, a.pages);
    for i in 0..a.pages as u64 {
        x86_64::instructions::tlb::flush(VirtAddr::new(a.base + i * PAGE));
    }
    let _ = with(|area| area.set_owner(a.base, Owner::LazyFree));
    let backlog = {
        let mut lazy = LAZY.lock();
        lazy.bases.push(a.base);
        lazy.frames.extend(frames);
        lazy.frames.len()
    };
    if backlog >= LAZY_MAX_PAGES {
        purge();
    }
    Ok(())
}

/// Ranges of freed debug objects, oldest first (see `vfree_quarantined`).
static QUARANTINE: IrqLock<VecDeque<u64>> =
    IrqLock::new(VecDeque::new()).named("vmalloc_quarantine");

/// How many freed objects stay reserved. Like KFENCE's pool, bounded: a use
/// after free is caught while its object is among the last this many freed.
const QUARANTINE_MAX: usize = 256;

/// Free a debug object: unmap it, flush this CPU's TLB, and keep the range
/// reserved, owned by what `retire` makes of its live owner (`None`: not
/// an object this may free), until it leaves the quarantine. As in KFENCE, no
/// IPI here (frees come with interrupts off): another CPU may keep a stale
/// translation until the next batched shootdown, so its frames join the
/// lazy list and are reused only after that shootdown, never while a stale
/// entry could still reach them.
pub fn vfree_quarantined(
    base: VirtAddr,
    retire: impl FnOnce(Owner) -> Option<Owner>,
) -> Result<(), VmallocError> {
    let (a, owner) = match with(|area| area.lookup(base.as_u64())) {
        Lookup::Mapped { alloc, offset: 0 } => match retire(alloc.owner) {
            Some(owner) => (alloc, owner),
            None => return Err(VmallocError::NotAllocated),
        },
        _ => return Err(VmallocError::NotAllocated),
    };
    let frames = unmap(a.base, a.pages);
    for i in 0..a.pages as u64 {
        x86_64::instructions::tlb::flush(VirtAddr::new(a.base + i * PAGE));
    }
    let _ = with(|area| area.set_owner(a.base, owner));
    let expired = {
        let mut q = QUARANTINE.lock();
        q.push_back(a.base);
        (q.len() > QUARANTINE_MAX).then(|| q.pop_front()).flatten()
    };
    let backlog = {
        let mut lazy = LAZY.lock();
        lazy.frames.extend(frames);
        // An expired range is reusable only after the shootdown, like any
        // lazily freed one: a stale entry elsewhere may still name it.
        lazy.bases.extend(expired);
        lazy.frames.len()
    };
    if backlog >= LAZY_MAX_PAGES {
        purge();
    }
    Ok(())
}

/// Give every quarantined range back, through the lazy list and one
/// shootdown: when address space runs out, and before counters are
/// compared. Returns how many ranges were released.
pub fn release_quarantine() -> usize {
    let all = core::mem::take(&mut *QUARANTINE.lock());
    if all.is_empty() {
        return 0;
    }
    LAZY.lock().bases.extend(all);
    purge()
}

/// Flush every CPU's TLB of all lazily freed ranges, then release their
/// frames and addresses. Returns how many ranges were released. Called
/// when the backlog is full, when memory runs out, and before anyone
/// compares counters (`vm_unmap_aliases()` in Linux).
pub fn purge() -> usize {
    let (bases, frames) = {
        let mut lazy = LAZY.lock();
        (
            core::mem::take(&mut lazy.bases),
            core::mem::take(&mut lazy.frames),
        )
    };
    if bases.is_empty() && frames.is_empty() {
        return 0;
    }
    tlb::shootdown(VirtAddr::new(VMALLOC_START), VirtAddr::new(VMALLOC_END));
    frames.into_iter().for_each(frames::free);
    for &b in &bases {
        let _ = with(|area| area.free(b));
    }
    bases.len()
}

/// Hand an allocation to a new owner (a cached stack reused by a new task).
pub fn set_owner(base: VirtAddr, owner: Owner) -> Result<(), VmallocError> {
    with(|area| area.set_owner(base.as_u64(), owner)).map_err(|_| VmallocError::NotAllocated)
}

/// Which allocation, or whose guard page, `addr` is in. For fault reports:
/// returns `None` rather than waiting if the area is locked (the fault may
/// have hit while this CPU held the lock).
pub fn lookup(addr: VirtAddr) -> Option<Lookup<Owner>> {
    // Another CPU holding the lock holds it briefly (several CPUs may be
    // reporting faults at once): wait a bounded while, then give up.
    for _ in 0..1_000_000u32 {
        if let Some(g) = AREA.try_lock() {
            return g.as_ref().map(|area| area.lookup(addr.as_u64()));
        }
        core::hint::spin_loop();
    }
    None
}

/// The area's counters. Lazily freed ranges still count until `purge`.
pub fn counters() -> Counters {
    with(|area| area.counters())
}

/// Visit every live allocation (page-table audits).
pub fn for_each(mut f: impl FnMut(&VmAllocation)) {
    with(|area| area.iter().for_each(&mut f))
}
