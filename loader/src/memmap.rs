//! The physical memory map: built from the firmware's E820 entries, carved as
//! the loader places things, and reported in Limine's types.
//!
//! Regions never overlap: a carve replaces whatever it covers. That makes the
//! protocol's guarantees (usable and bootloader-reclaimable entries aligned
//! and disjoint from every other entry) hold by construction.
use crate::protocol::memmap_type::*;

#[derive(Clone, Copy, Default)]
pub struct E820Entry {
    pub base: u64,
    pub len: u64,
    pub kind: u32,
}

#[derive(Clone, Copy, Default)]
pub struct Region {
    pub base: u64,
    pub end: u64,
    pub kind: u64,
}

const MAX_REGIONS: usize = 256;
pub const PAGE: u64 = 4096;
const FOUR_GIB: u64 = 1 << 32;
/// Allocations stay above the real-mode area (kept for the AP trampoline and
/// firmware leftovers) and below 4 GiB (what the entry stub identity-maps).
const ALLOC_FLOOR: u64 = 0x10_0000;

#[derive(Clone)]
pub struct Map {
    regions: [Region; MAX_REGIONS],
    len: usize,
}

fn limine_type(e820: u32) -> u64 {
    match e820 {
        1 => USABLE,
        3 => ACPI_RECLAIMABLE,
        4 => ACPI_NVS,
        5 => BAD_MEMORY,
        _ => RESERVED,
    }
}

pub const fn align_up(x: u64, a: u64) -> u64 {
    (x + a - 1) & !(a - 1)
}

pub const fn align_down(x: u64, a: u64) -> u64 {
    x & !(a - 1)
}

impl Map {
    pub const fn new() -> Self {
        Map {
            regions: [Region {
                base: 0,
                end: 0,
                kind: 0,
            }; MAX_REGIONS],
            len: 0,
        }
    }

    pub fn from_e820(entries: &[E820Entry]) -> Self {
        let mut map = Map::new();
        // Usable first, then everything else carved over it, so a reserved
        // entry overlapping RAM wins, as firmware intends.
        for e in entries.iter().filter(|e| limine_type(e.kind) == USABLE) {
            let base = align_up(e.base, PAGE);
            let end = align_down(e.base.saturating_add(e.len), PAGE);
            if end > base {
                map.carve(base, end, Some(USABLE));
            }
        }
        for kind in [ACPI_RECLAIMABLE, ACPI_NVS, RESERVED, BAD_MEMORY] {
            for e in entries
                .iter()
                .filter(|e| limine_type(e.kind) == kind && e.len > 0)
            {
                map.carve(e.base, e.base.saturating_add(e.len), Some(kind));
            }
        }
        // The protocol never reports the first page as usable.
        map.carve(0, PAGE, None);
        map
    }

    pub fn regions(&self) -> &[Region] {
        &self.regions[..self.len]
    }

    pub fn overlaps_usable(&self, base: u64, end: u64) -> bool {
        self.regions()
            .iter()
            .any(|r| r.kind == USABLE && r.base < end && base < r.end)
    }

    /// Whether `[base, end)` lies entirely inside one usable region.
    pub fn is_usable(&self, base: u64, end: u64) -> bool {
        self.regions()
            .iter()
            .any(|r| r.kind == USABLE && r.base <= base && end <= r.end)
    }

    /// Makes `[base, end)` of type `kind` (or a hole for `None`), splitting
    /// whatever it overlaps.
    pub fn carve(&mut self, base: u64, end: u64, kind: Option<u64>) {
        let mut out = [Region::default(); MAX_REGIONS];
        let mut n = 0;
        let mut push = |r: Region| {
            if r.end > r.base {
                if n == MAX_REGIONS {
                    crate::fail!("memory map has more than {MAX_REGIONS} regions");
                }
                out[n] = r;
                n += 1;
            }
        };
        for r in self.regions() {
            if r.end <= base || end <= r.base {
                push(*r);
            } else {
                push(Region {
                    base: r.base,
                    end: base,
                    kind: r.kind,
                });
                push(Region {
                    base: end,
                    end: r.end,
                    kind: r.kind,
                });
            }
        }
        if let Some(kind) = kind {
            push(Region { base, end, kind });
        }
        out[..n].sort_unstable_by_key(|r| r.base);
        // Merge neighbours of one type so the report stays short.
        let mut merged = 0;
        for i in 0..n {
            if merged > 0
                && out[merged - 1].kind == out[i].kind
                && out[merged - 1].end == out[i].base
            {
                out[merged - 1].end = out[i].end;
            } else {
                out[merged] = out[i];
                merged += 1;
            }
        }
        self.regions = out;
        self.len = merged;
    }

    /// Takes `size` bytes aligned to `align` from the highest usable memory
    /// below 4 GiB and marks them `kind`. Returns the physical base.
    pub fn alloc(&mut self, size: u64, align: u64, kind: u64) -> u64 {
        let size = align_up(size, PAGE);
        let align = align.max(PAGE);
        let mut best = None;
        for r in self.regions() {
            if r.kind != USABLE || r.end <= ALLOC_FLOOR || r.base >= FOUR_GIB {
                continue;
            }
            let top = r.end.min(FOUR_GIB);
            if top < size {
                continue;
            }
            let base = align_down(top - size, align);
            if base >= r.base.max(ALLOC_FLOOR) && best.is_none_or(|b| base > b) {
                best = Some(base);
            }
        }
        let Some(base) = best else {
            crate::fail!("out of memory: cannot allocate {size:#x} bytes below 4 GiB");
        };
        self.carve(base, base + size, Some(kind));
        base
    }
}
