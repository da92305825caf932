//! The higher-half direct map: all physical memory the boot loader mapped,
//! at `phys + offset`.
use core::sync::atomic::{AtomicU64, Ordering};
use x86_64::{PhysAddr, VirtAddr};

/// Zero until `set_offset`: a zero offset would alias the (unmapped) lower
/// half, so every accessor below refuses to run without it.
static OFFSET: AtomicU64 = AtomicU64::new(0);

pub fn set_offset(offset: u64) {
    OFFSET.store(offset, Ordering::Relaxed);
}

pub fn offset() -> Option<u64> {
    match OFFSET.load(Ordering::Relaxed) {
        0 => None,
        o => Some(o),
    }
}

pub fn phys_to_virt(phys: PhysAddr) -> Option<VirtAddr> {
    Some(VirtAddr::new(offset()?.checked_add(phys.as_u64())?))
}

/// Accept either form of an address a Limine response may carry: HHDM
/// virtual (base revisions up to 2) or physical (revision 3's RSDP).
pub fn to_phys(addr: u64) -> Option<PhysAddr> {
    let off = offset()?;
    Some(PhysAddr::new(if addr >= off { addr - off } else { addr }))
}

/// Write a pattern through the HHDM into the usable frame at `phys`, read it
/// back, and restore the old contents: does the direct map really reach RAM?
///
/// The caller promises that `phys` is a usable frame nobody owns yet (at boot,
/// before any allocator runs, every usable frame is such a frame).
pub fn probe_rw(phys: PhysAddr) -> bool {
    let Some(virt) = phys_to_virt(phys) else {
        return false;
    };
    let p = virt.as_mut_ptr::<u64>();
    const PATTERN: u64 = 0x5a5a_c3c3_0f0f_9669;
    // SAFETY: `phys` is usable RAM that nothing else owns (caller's promise),
    // the HHDM maps it writable, and the pointer is 8-byte aligned because
    // usable entries are page aligned. Volatile keeps the compiler from
    // answering the read from the write.
    unsafe {
        let old = p.read_volatile();
        p.write_volatile(PATTERN);
        let seen = p.read_volatile();
        p.write_volatile(!PATTERN);
        let seen_inverse = p.read_volatile();
        p.write_volatile(old);
        seen == PATTERN && seen_inverse == !PATTERN
    }
}

/// `len` words at physical `phys`, through the HHDM, for memory `mm` has
/// just taken for itself (the frame bitmap): usable RAM that no allocator
/// hands out and nothing else references.
pub(super) fn phys_words_mut(phys: PhysAddr, len: usize) -> &'static mut [u64] {
    let virt = phys_to_virt(phys).expect("HHDM offset unknown");
    assert!(virt.is_aligned(8u64));
    // SAFETY: the range is usable RAM mapped by the HHDM, withheld from every
    // allocator (the caller's contract), so this is its only reference; any
    // bit pattern is a valid u64.
    unsafe { core::slice::from_raw_parts_mut(virt.as_mut_ptr::<u64>(), len) }
}
