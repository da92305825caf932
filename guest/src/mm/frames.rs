//! Physical frames: a bitmap allocator over the usable memory the boot
//! loader reported, the first thing `mm` brings up (it needs no heap; its
//! bitmap lives in frames it carves for itself).
use super::hhdm;
use crate::sync::IrqLock;
use kcore::frames::FrameBitmap;
use limine::memory_map::{Entry, EntryType};
use x86_64::structures::paging::{PhysFrame, Size4KiB};
use x86_64::PhysAddr;

pub const FRAME_SIZE: u64 = 4096;

static FRAMES: IrqLock<Option<FrameBitmap<'static>>> = IrqLock::new(None).named("frames");

/// Free/used/total frame counts, for leak checks.
pub use kcore::frames::FrameCounters as Counters;

/// Build the allocator from the memory map's usable entries. Bootloader-
/// reclaimable memory stays out until the boot data in it (responses, AP
/// parking, page tables we still run on) is no longer needed.
pub fn init(map: &[&Entry]) {
    let usable = || map.iter().filter(|e| e.entry_type == EntryType::USABLE);
    let top = usable()
        .map(|e| e.base + e.length)
        .max()
        .expect("no usable memory");
    let n_frames = (top / FRAME_SIZE) as usize;
    let words = kcore::frames::bitmap_words_for(n_frames);
    let bytes = (words * 8) as u64;
    let storage_frames = bytes.div_ceil(FRAME_SIZE);
    let home = usable()
        .find(|e| e.base >= 1 << 20 && e.length >= storage_frames * FRAME_SIZE)
        .expect("no usable region can hold the frame bitmap");
    let storage = hhdm::phys_words_mut(PhysAddr::new(home.base), words);
    let mut bitmap = FrameBitmap::new(storage, 0, n_frames);
    for e in usable() {
        let start = if e.base == home.base {
            e.base + storage_frames * FRAME_SIZE
        } else {
            e.base
        };
        bitmap.add_free_range(start, e.base + e.length);
    }
    *FRAMES.lock() = Some(bitmap);
}

fn with<R>(f: impl FnOnce(&mut FrameBitmap<'static>) -> R) -> R {
    f(FRAMES
        .lock()
        .as_mut()
        .expect("frame allocator used before mm::init"))
}

pub fn alloc() -> Option<PhysFrame> {
    with(|b| b.alloc()).map(|a| PhysFrame::containing_address(PhysAddr::new(a)))
}

/// `n` physically contiguous frames whose first is aligned to `align` frames.
pub fn alloc_contiguous(n: usize, align: usize) -> Option<PhysAddr> {
    with(|b| b.alloc_contiguous(n, align)).map(PhysAddr::new)
}

pub fn free(frame: PhysFrame<Size4KiB>) {
    with(|b| b.free(frame.start_address().as_u64()))
        .expect("freeing a frame that is not allocated");
}

pub fn free_contiguous(start: PhysAddr, n: usize) {
    with(|b| b.free_contiguous(start.as_u64(), n)).expect("freeing frames that are not allocated");
}

pub fn counters() -> Counters {
    with(|b| b.counters())
}
