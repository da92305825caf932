//! An mm's own page tables: mapping anonymous pages into its user half,
//! and tearing the half down at `exit_mmap`. The caller holds the mm's
//! `pgd` lock throughout (passing the root it guards).
use super::{MmStruct, USER_BASE, USER_TOP};
use crate::mm::{frames, hhdm};
use core::sync::atomic::Ordering;
use x86_64::structures::paging::mapper::CleanUp;
use x86_64::structures::paging::{
    FrameAllocator, FrameDeallocator, Mapper, OffsetPageTable, Page, PageTable, PageTableFlags,
    PhysFrame, Size4KiB,
};
use x86_64::VirtAddr;

/// Unmap the first `n` pages of the user half and free them, then the
/// page tables under the half (`exit_mmap`'s work; `id` names the mm in
/// what it prints).
pub(super) fn unmap_user_half(root: PhysFrame, n: usize, id: u64) {
    let mut tables = user_tables(root);
    for i in 0..n {
        let page = Page::<Size4KiB>::containing_address(VirtAddr::new(USER_BASE + i as u64 * 4096));
        match tables.unmap(page) {
            // Never loaded into CR3: no TLB anywhere holds it.
            Ok((frame, flush)) => {
                flush.ignore();
                frames::free(frame);
            }
            Err(e) => kprintln!("exit_mmap: mm {id} page {i}: {e:?}"),
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
pub(super) fn map_zeroed(mm: &MmStruct, at: VirtAddr) -> bool {
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
