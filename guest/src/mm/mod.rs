//! Memory: physical frames, the kernel page tables, the heap, the vmalloc
//! area with its guard pages, kernel stacks, and TLB shootdown.
//!
//! Bring-up order matters: the HHDM offset first (everything reaches memory
//! through it), then frames (they need nothing), then the heap (it needs
//! frames and page tables), then the vmalloc area (its registry lives on the
//! heap).
//!
//! One crossing goes up a layer, to `task`: an address space's deferred
//! teardown runs in a worker task (`address_space`, which also names the
//! task that broke `might_sleep`). Tasks in turn take their stacks from here.
pub mod address_space;
pub mod frames;
pub mod guarded;
pub mod heap;
pub mod hhdm;
pub mod layout;
pub mod paging;
pub mod stack;
pub mod tlb;
pub mod vmalloc;

use limine::memory_map::Entry;

/// Bring memory up from what the boot loader handed over: the direct map's
/// offset and the memory map (`boot::BootInfo`, read by `kernel_main`).
pub fn init(hhdm_offset: Option<u64>, memory_map: Option<&'static [&'static Entry]>) {
    let offset = hhdm_offset.expect("the bootloader gave no HHDM response");
    hhdm::set_offset(offset);
    let map = memory_map.expect("the bootloader gave no memory map");
    frames::init(map);
    heap::init();
    vmalloc::init();
}

/// Every allocator's counters at one instant: what leak checks compare.
///
/// Two things that grow and stay are left out on purpose, because they are
/// not leaks: page-table pages (the kernel keeps them once created, as
/// Linux keeps vmalloc-area page tables) and the heap's own size, bytes and
/// the frames behind them (containers that have grown, a heap extended a
/// chunk at a time when a burst of task structs waiting for their grace
/// period fragmented it); the heap is compared by its number of live
/// allocations instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Frames in use, page-table pages and the heap's backing excluded.
    pub frames_used: usize,
    pub vmalloc: vmalloc::Counters,
    pub heap_allocations: u64,
}

pub fn snapshot() -> Snapshot {
    // Lazily freed vmalloc ranges still hold frames, quarantined ones
    // address space: settle both first.
    vmalloc::release_quarantine();
    vmalloc::purge();
    Snapshot {
        frames_used: frames::counters().used_frames
            - paging::table_frames()
            - heap::counters().size_bytes / 4096,
        vmalloc: vmalloc::counters(),
        heap_allocations: heap::counters().live_allocations,
    }
}
