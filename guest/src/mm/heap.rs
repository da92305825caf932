//! The kernel heap: `linked_list_allocator` over a virtual range of its
//! own, grown a chunk of freshly mapped frames at a time.
use super::{frames, paging};
use crate::sync::IrqLock;
use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};
use linked_list_allocator::Heap;
use x86_64::structures::paging::PageTableFlags;
use x86_64::VirtAddr;

/// Where the heap lives: below the vmalloc area, like Linux's direct-mapped
/// kmalloc memory sits apart from vmalloc space.
pub const HEAP_START: u64 = 0xffff_c800_0000_0000;
pub const HEAP_MAX: u64 = 4 << 30;
const INITIAL: u64 = 1 << 20;
const GROW_MIN: u64 = 1 << 20;

struct KernelHeap {
    heap: IrqLock<Heap>,
}

#[global_allocator]
static ALLOCATOR: KernelHeap = KernelHeap {
    heap: IrqLock::new(Heap::empty()).named("heap"),
};

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static FREES: AtomicU64 = AtomicU64::new(0);

/// Heap counters for leak checks: bytes in use and live allocations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counters {
    pub used_bytes: usize,
    pub size_bytes: usize,
    pub live_allocations: u64,
}

pub fn counters() -> Counters {
    let h = ALLOCATOR.heap.lock();
    Counters {
        used_bytes: h.used(),
        size_bytes: h.size(),
        live_allocations: ALLOCATIONS.load(Ordering::Relaxed) - FREES.load(Ordering::Relaxed),
    }
}

/// Map `bytes` more of heap at `at`. Returns false when out of frames or
/// address space.
fn map_more(at: u64, bytes: u64) -> bool {
    if at + bytes > HEAP_START + HEAP_MAX {
        return false;
    }
    let mut page = at;
    while page < at + bytes {
        let Some(frame) = frames::alloc() else {
            return false;
        };
        let flags = PageTableFlags::WRITABLE | PageTableFlags::NO_EXECUTE | PageTableFlags::GLOBAL;
        if paging::map(VirtAddr::new(page), frame, flags).is_err() {
            frames::free(frame);
            return false;
        }
        page += 4096;
    }
    true
}

pub fn init() {
    assert!(
        map_more(HEAP_START, INITIAL),
        "cannot map the initial kernel heap"
    );
    // SAFETY: [HEAP_START, +INITIAL) was just mapped writable and belongs
    // to the heap alone.
    unsafe {
        ALLOCATOR
            .heap
            .lock()
            .init(HEAP_START as *mut u8, INITIAL as usize)
    };
}

// SAFETY: allocation and deallocation are serialised by the mutex, and the
// heap only hands out memory inside ranges mapped for it; a placed object
// (`guarded`) is a fresh vmalloc mapping of at least `layout.size()` bytes,
// page-aligned (placement falls back to the heap for larger alignments).
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if let Some(placed) = super::guarded::take_armed(layout) {
            return placed;
        }
        let mut heap = self.heap.lock();
        let ptr = match heap.allocate_first_fit(layout) {
            Ok(p) => p.as_ptr(),
            Err(()) => {
                let grow = (layout.size() as u64 + layout.align() as u64 + 4096)
                    .max(GROW_MIN)
                    .next_multiple_of(4096);
                let top = heap.top() as u64;
                if !map_more(top, grow) {
                    return core::ptr::null_mut();
                }
                // SAFETY: the pages right above the heap's top were just
                // mapped for it.
                unsafe { heap.extend(grow as usize) };
                heap.allocate_first_fit(layout)
                    .map_or(core::ptr::null_mut(), |p| p.as_ptr())
            }
        };
        if !ptr.is_null() {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // Placed objects are vmalloc allocations, not counted as heap ones.
        if super::guarded::owns(ptr) {
            super::guarded::free(ptr);
            return;
        }
        FREES.fetch_add(1, Ordering::Relaxed);
        // SAFETY: GlobalAlloc's contract: `ptr` came from `alloc` with `layout`.
        unsafe {
            self.heap
                .lock()
                .deallocate(NonNull::new_unchecked(ptr), layout)
        }
    }
}
