//! The kernel page tables (the ones in CR3, shared by every CPU), reached
//! through the HHDM: lookups, and 4 KiB map/unmap for the vmalloc area and
//! the heap.
//!
//! One lock serialises every change. Unmapping only edits the tables; the
//! caller must shoot the TLBs down (`tlb::shootdown`) before it frees or
//! reuses the frames, because other CPUs may still cache the translation.
use super::{frames, hhdm};
use crate::sync::IrqLock;
use core::sync::atomic::{AtomicUsize, Ordering};
use x86_64::registers::control::Cr3;
use x86_64::structures::paging::mapper::{MapToError, UnmapError};
use x86_64::structures::paging::page_table::PageTableEntry;
use x86_64::structures::paging::{
    FrameAllocator, Mapper, OffsetPageTable, Page, PageTable, PageTableFlags, PhysFrame, Size4KiB,
};
use x86_64::{PhysAddr, VirtAddr};

static LOCK: IrqLock<()> = IrqLock::new(()).named("init_mm.page_table_lock");

/// What one virtual address maps to, with the permissions that are in force
/// (the AND of every level's writable bit, the OR of every level's NX bit).
#[derive(Clone, Copy, Debug)]
pub struct Mapping {
    pub phys: PhysAddr,
    pub writable: bool,
    pub executable: bool,
}

/// The active page tables as an `OffsetPageTable`.
///
/// The caller must hold `LOCK` if it changes anything.
fn tables() -> OffsetPageTable<'static> {
    let offset = hhdm::offset().expect("page tables used before the HHDM offset is known");
    let (root, _) = Cr3::read();
    let root_virt = hhdm::phys_to_virt(root.start_address()).expect("HHDM offset unknown");
    // SAFETY: CR3 holds the active PML4 and the HHDM maps every page-table
    // frame; all changes go through `LOCK`, so this mutable view never races
    // with another writer (readers only walk).
    unsafe {
        OffsetPageTable::new(
            &mut *root_virt.as_mut_ptr::<PageTable>(),
            VirtAddr::new(offset),
        )
    }
}

/// Walk the four levels by hand, so the permissions reported are the ones
/// the MMU enforces, not just the leaf's.
pub fn translate(virt: VirtAddr) -> Option<Mapping> {
    let (root, _) = Cr3::read();
    let mut table_phys = root.start_address();
    let mut writable = true;
    let mut nx = false;
    let indices = [
        virt.p4_index(),
        virt.p3_index(),
        virt.p2_index(),
        virt.p1_index(),
    ];
    for (level, index) in indices.into_iter().enumerate() {
        let table = hhdm::phys_to_virt(table_phys)?;
        // SAFETY: `table` is a page-table frame (the root, or one named by a
        // present non-leaf entry) mapped by the HHDM; we read one entry.
        let table: &PageTable = unsafe { &*table.as_ptr::<PageTable>() };
        let entry: &PageTableEntry = &table[index];
        let flags = entry.flags();
        if !flags.contains(PageTableFlags::PRESENT) {
            return None;
        }
        writable &= flags.contains(PageTableFlags::WRITABLE);
        nx |= flags.contains(PageTableFlags::NO_EXECUTE);
        let leaf = level == 3 || (level > 0 && flags.contains(PageTableFlags::HUGE_PAGE));
        if leaf {
            let page_bits = [39, 30, 21, 12][level];
            let offset = virt.as_u64() & ((1u64 << page_bits) - 1);
            return Some(Mapping {
                phys: entry.addr() + offset,
                writable,
                executable: !nx,
            });
        }
        table_phys = entry.addr();
    }
    None
}

struct Frames;

/// Page-table pages we created; they are never freed (an emptied table
/// stays, ready for the next mapping there).
static TABLE_FRAMES: AtomicUsize = AtomicUsize::new(0);

pub fn table_frames() -> usize {
    TABLE_FRAMES.load(Ordering::Relaxed)
}

// SAFETY: hands out frames the frame allocator owns exclusively and has
// marked used; they are zeroed by the mapper before use as page tables.
unsafe impl FrameAllocator<Size4KiB> for Frames {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        let f = frames::alloc();
        if f.is_some() {
            TABLE_FRAMES.fetch_add(1, Ordering::Relaxed);
        }
        f
    }
}

#[derive(Debug)]
pub enum MapError {
    OutOfFrames,
    AlreadyMapped,
}

/// Map one 4 KiB page, flushing only the local TLB (a new mapping cannot be
/// stale anywhere).
pub fn map(page: VirtAddr, frame: PhysFrame, flags: PageTableFlags) -> Result<(), MapError> {
    let _guard = LOCK.lock();
    let page = Page::<Size4KiB>::containing_address(page);
    let mut tables = tables();
    // SAFETY: the frame was allocated for this mapping by the caller and is
    // mapped nowhere else writable; the page lies in a range `mm` reserved
    // for itself (vmalloc area, heap), so no existing Rust reference aliases
    // the new mapping.
    match unsafe { tables.map_to(page, frame, flags | PageTableFlags::PRESENT, &mut Frames) } {
        Ok(flush) => {
            flush.flush();
            Ok(())
        }
        Err(MapToError::FrameAllocationFailed) => Err(MapError::OutOfFrames),
        Err(_) => Err(MapError::AlreadyMapped),
    }
}

/// Unmap one 4 KiB page and return its frame. TLBs are NOT flushed: the
/// caller batches a `tlb::shootdown` over the whole range first.
pub fn unmap(page: VirtAddr) -> Option<PhysFrame> {
    let _guard = LOCK.lock();
    let page = Page::<Size4KiB>::containing_address(page);
    match tables().unmap(page) {
        Ok((frame, flush)) => {
            flush.ignore();
            Some(frame)
        }
        Err(UnmapError::PageNotMapped) => None,
        Err(e) => panic!("unmap of {:#x}: {e:?}", page.start_address().as_u64()),
    }
}

/// `pgd_alloc`: the top-level table of a new address space, its user half
/// empty and its kernel half pointing at the kernel's own lower tables, as
/// every x86 PGD does. The copy is made under `LOCK`, this kernel's
/// `pgd_lock`, so a kernel entry being created meanwhile is copied whole or
/// not at all.
pub fn pgd_alloc() -> Option<PhysFrame> {
    let frame = frames::alloc()?;
    let _guard = LOCK.lock();
    let (kernel_root, _) = Cr3::read();
    let src = hhdm::phys_to_virt(kernel_root.start_address()).expect("HHDM offset unknown");
    let dst = hhdm::phys_to_virt(frame.start_address()).expect("HHDM offset unknown");
    // SAFETY: `frame` was just allocated, so this is its only reference;
    // `src` is the active PML4, mapped by the HHDM, only read here while
    // `LOCK` keeps every writer out. The two frames differ.
    unsafe {
        let src = &*src.as_ptr::<PageTable>();
        let dst = &mut *dst.as_mut_ptr::<PageTable>();
        dst.zero();
        for i in 256..512 {
            dst[i] = src[i].clone();
        }
    }
    Some(frame)
}

/// `pgd_free`: give back a root made by `pgd_alloc`. Only the root: its
/// kernel half is the kernel's, its user half must already be torn down.
/// Linux unlinks the PGD from `pgd_list` here under `pgd_lock`, a lock not
/// safe against interrupts: that is why the last `mmdrop` may not run in
/// atomic or RCU-callback context. `LOCK` stands for it.
pub fn pgd_free(root: PhysFrame) {
    let _guard = LOCK.lock();
    frames::free(root);
}
