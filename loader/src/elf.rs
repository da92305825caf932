//! Validating the guest ELF and loading its PT_LOAD segments into one
//! physically contiguous block, as the protocol guarantees the kernel.
use crate::memmap::{align_down, align_up, Map, PAGE};
use crate::protocol::memmap_type::KERNEL_AND_MODULES;

const PT_LOAD: u32 = 1;
const ET_EXEC: u16 = 2;
const EM_X86_64: u16 = 62;
pub const PF_X: u32 = 1;
pub const PF_W: u32 = 2;
/// The protocol refuses lower-half kernels.
const MIN_KERNEL_VADDR: u64 = 0xffff_ffff_8000_0000;
const MAX_SEGMENTS: usize = 16;

#[derive(Clone, Copy, Default)]
pub struct Segment {
    pub vaddr: u64,
    pub memsz: u64,
    pub flags: u32,
}

pub struct Image {
    pub entry: u64,
    /// Page-aligned virtual start of the lowest segment.
    pub virt_base: u64,
    pub phys_base: u64,
    /// Bytes from `virt_base` to the page-aligned end of the highest segment.
    pub size: u64,
    pub segments: [Segment; MAX_SEGMENTS],
    pub segment_count: usize,
}

impl Image {
    pub fn segments(&self) -> &[Segment] {
        &self.segments[..self.segment_count]
    }

    pub fn phys_of(&self, vaddr: u64) -> u64 {
        self.phys_base + (vaddr - self.virt_base)
    }
}

fn u16_at(f: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([f[off], f[off + 1]])
}

fn u32_at(f: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([f[off], f[off + 1], f[off + 2], f[off + 3]])
}

fn u64_at(f: &[u8], off: usize) -> u64 {
    u64::from(u32_at(f, off)) | (u64::from(u32_at(f, off + 4)) << 32)
}

struct Phdr {
    kind: u32,
    flags: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
    memsz: u64,
}

fn phdrs(file: &[u8]) -> impl Iterator<Item = Phdr> + '_ {
    let phoff = u64_at(file, 0x20) as usize;
    let phentsize = u16_at(file, 0x36) as usize;
    let phnum = u16_at(file, 0x38) as usize;
    (0..phnum).map(move |i| {
        let p = phoff + i * phentsize;
        Phdr {
            kind: u32_at(file, p),
            flags: u32_at(file, p + 4),
            offset: u64_at(file, p + 8),
            vaddr: u64_at(file, p + 16),
            filesz: u64_at(file, p + 32),
            memsz: u64_at(file, p + 40),
        }
    })
}

fn validate(file: &[u8]) {
    if file.len() < 64 || &file[..4] != b"\x7fELF" {
        crate::fail!("guest is not an ELF file (bad magic)");
    }
    if file[4] != 2 || file[5] != 1 {
        crate::fail!("guest ELF is not 64-bit little-endian");
    }
    if u16_at(file, 0x12) != EM_X86_64 {
        crate::fail!(
            "guest ELF is not for x86_64 (e_machine {})",
            u16_at(file, 0x12)
        );
    }
    if u16_at(file, 0x10) != ET_EXEC {
        crate::fail!("guest ELF is not ET_EXEC (e_type {})", u16_at(file, 0x10));
    }
    let phoff = u64_at(file, 0x20);
    let phentsize = u64::from(u16_at(file, 0x36));
    let phnum = u64::from(u16_at(file, 0x38));
    if phentsize < 56 || phoff.saturating_add(phentsize * phnum) > file.len() as u64 {
        crate::fail!("guest ELF program headers lie outside the file");
    }
}

/// Validates `file` and loads it, taking its memory from `map`.
pub fn load(file: &[u8], map: &mut Map) -> Image {
    validate(file);
    let mut lo = u64::MAX;
    let mut hi = 0;
    let mut segments = [Segment::default(); MAX_SEGMENTS];
    let mut count = 0;
    for ph in phdrs(file).filter(|p| p.kind == PT_LOAD && p.memsz > 0) {
        if ph.filesz > ph.memsz || ph.offset.saturating_add(ph.filesz) > file.len() as u64 {
            crate::fail!("guest ELF segment at {:#x} has bad sizes", ph.vaddr);
        }
        if ph.vaddr < MIN_KERNEL_VADDR || ph.vaddr.checked_add(ph.memsz).is_none() {
            crate::fail!(
                "guest ELF segment at {:#x} is below {MIN_KERNEL_VADDR:#x}",
                ph.vaddr
            );
        }
        if count == MAX_SEGMENTS {
            crate::fail!("guest ELF has more than {MAX_SEGMENTS} PT_LOAD segments");
        }
        segments[count] = Segment {
            vaddr: ph.vaddr,
            memsz: ph.memsz,
            flags: ph.flags,
        };
        count += 1;
        lo = lo.min(align_down(ph.vaddr, PAGE));
        hi = hi.max(align_up(ph.vaddr + ph.memsz, PAGE));
    }
    if count == 0 {
        crate::fail!("guest ELF has no PT_LOAD segment");
    }
    let size = hi - lo;
    let phys_base = map.alloc(size, PAGE, KERNEL_AND_MODULES);
    let image = Image {
        entry: u64_at(file, 0x18),
        virt_base: lo,
        phys_base,
        size,
        segments,
        segment_count: count,
    };
    // SAFETY: `alloc` just reserved [phys_base, phys_base + size) below 4 GiB,
    // which the entry stub identity-mapped; nothing else refers to it.
    let dst =
        unsafe { core::slice::from_raw_parts_mut(phys_base as usize as *mut u8, size as usize) };
    // Each byte is written once: the file's bytes copied, only the rest
    // (bss, the gaps between segments) zeroed. Under TCG, zeroing the whole
    // image first cost as much again as the copy.
    let mut parts = [(0usize, 0usize, 0usize); MAX_SEGMENTS];
    for (part, ph) in parts
        .iter_mut()
        .zip(phdrs(file).filter(|p| p.kind == PT_LOAD && p.memsz > 0))
    {
        *part = (
            (ph.vaddr - lo) as usize,
            ph.offset as usize,
            ph.filesz as usize,
        );
    }
    let parts = &mut parts[..count];
    parts.sort_unstable_by_key(|&(at, _, _)| at);
    let mut zeroed_to = 0;
    for &(at, offset, len) in parts.iter() {
        if at > zeroed_to {
            dst[zeroed_to..at].fill(0);
        }
        dst[at..at + len].copy_from_slice(&file[offset..offset + len]);
        zeroed_to = zeroed_to.max(at + len);
    }
    dst[zeroed_to..].fill(0);
    image
}
