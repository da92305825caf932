//! The page tables handed to the guest: its segments with their ELF
//! permissions, the HHDM, and (only until handoff) an identity map of the
//! first 4 GiB for the loader itself and the AP trampoline.
use crate::elf::{Image, PF_W, PF_X};
use crate::memmap::{align_down, align_up, Map, Region, PAGE};
use crate::protocol::memmap_type::{BAD_MEMORY, BOOTLOADER_RECLAIMABLE, RESERVED};
use crate::protocol::HHDM_OFFSET;

const PRESENT: u64 = 1;
const WRITABLE: u64 = 1 << 1;
const HUGE: u64 = 1 << 7;
const NO_EXECUTE: u64 = 1 << 63;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
const TWO_MIB: u64 = 2 << 20;
const FOUR_GIB: u64 = 1 << 32;

pub struct PageTables {
    pub pml4: u64,
    nx: bool,
}

fn table(phys: u64) -> *mut u64 {
    phys as usize as *mut u64
}

impl PageTables {
    pub fn new(map: &mut Map, nx: bool) -> Self {
        PageTables {
            pml4: new_table(map),
            nx,
        }
    }

    /// Returns the table the entry at `level` (4 = PML4) indexes for `virt`,
    /// creating the path down to it.
    fn walk(&self, map: &mut Map, virt: u64, leaf_level: u32) -> *mut u64 {
        let mut t = self.pml4;
        for level in (leaf_level + 1..=4).rev() {
            let idx = ((virt >> (12 + 9 * (level - 1))) & 0x1ff) as usize;
            // SAFETY: `t` is a page-table page this struct allocated below 4 GiB
            // (identity-mapped while the loader runs); `idx` < 512.
            let entry = unsafe { table(t).add(idx) };
            // SAFETY: as above.
            let e = unsafe { entry.read() };
            if e & PRESENT == 0 {
                let next = new_table(map);
                // SAFETY: as above.
                unsafe { entry.write(next | PRESENT | WRITABLE) };
                t = next;
            } else {
                if e & HUGE != 0 {
                    crate::fail!("mapping {virt:#x} would split a large page");
                }
                t = e & ADDR_MASK;
            }
        }
        table(t)
    }

    fn map_page(&self, map: &mut Map, virt: u64, phys: u64, flags: u64, level: u32) {
        let idx = ((virt >> (12 + 9 * (level - 1))) & 0x1ff) as usize;
        let t = self.walk(map, virt, level);
        // SAFETY: `walk` returned a live table page; `idx` < 512.
        let entry = unsafe { t.add(idx) };
        // SAFETY: as above.
        let old = unsafe { entry.read() };
        let mut flags = flags;
        if old & PRESENT != 0 {
            // Two segments sharing a page: grant the union of their rights.
            let writable = (flags | old) & WRITABLE;
            let no_execute = flags & old & NO_EXECUTE;
            flags = (flags & !(WRITABLE | NO_EXECUTE)) | writable | no_execute;
        }
        let huge = if level == 2 { HUGE } else { 0 };
        // SAFETY: as above.
        unsafe { entry.write(phys | flags | huge | PRESENT) };
    }

    /// Maps `[phys, phys + len)` at `virt` read/write/execute, using 2 MiB
    /// pages where both sides allow.
    fn map_range(&self, map: &mut Map, virt: u64, phys: u64, len: u64) {
        let mut off = 0;
        while off < len {
            let (v, p) = (virt + off, phys + off);
            if v % TWO_MIB == 0 && p % TWO_MIB == 0 && len - off >= TWO_MIB {
                self.map_page(map, v, p, WRITABLE, 2);
                off += TWO_MIB;
            } else {
                self.map_page(map, v, p, WRITABLE, 1);
                off += PAGE;
            }
        }
    }

    pub fn map_kernel(&self, map: &mut Map, image: &Image) {
        for seg in image.segments() {
            let mut flags = 0;
            if seg.flags & PF_W != 0 {
                flags |= WRITABLE;
            }
            if seg.flags & PF_X == 0 && self.nx {
                flags |= NO_EXECUTE;
            }
            let start = align_down(seg.vaddr, PAGE);
            let end = align_up(seg.vaddr + seg.memsz, PAGE);
            for v in (start..end).step_by(PAGE as usize) {
                self.map_page(map, v, image.phys_of(v), flags, 1);
            }
        }
    }

    /// The HHDM: all of the first 4 GiB, plus every region above it that is
    /// not reserved or bad memory (base revision 1 and 2 rules).
    pub fn map_hhdm(&self, map: &mut Map, firmware_regions: &[Region]) {
        self.map_range(map, HHDM_OFFSET, 0, FOUR_GIB);
        for r in firmware_regions {
            if r.end <= FOUR_GIB || r.kind == RESERVED || r.kind == BAD_MEMORY {
                continue;
            }
            let base = align_down(r.base.max(FOUR_GIB), PAGE);
            let end = align_up(r.end, PAGE);
            self.map_range(map, HHDM_OFFSET + base, base, end - base);
        }
    }

    /// Points the lowest 512 GiB of virtual space at the HHDM's tables, so
    /// the loader keeps running identity-mapped on these tables until
    /// handoff, when the entry is cleared again.
    pub fn add_identity(&self) {
        // SAFETY: the PML4 page is ours; entries 0 and 256 exist (256 was
        // filled by `map_hhdm`).
        unsafe { table(self.pml4).write(table(self.pml4).add(256).read()) };
    }

    /// Physical address of PML4 entry 0, which the handoff clears.
    pub fn identity_slot(&self) -> u64 {
        self.pml4
    }
}

fn new_table(map: &mut Map) -> u64 {
    let page = map.alloc(PAGE, PAGE, BOOTLOADER_RECLAIMABLE);
    // SAFETY: freshly allocated page below 4 GiB, identity-mapped, unused.
    unsafe { core::ptr::write_bytes(table(page), 0, 512) };
    page
}
