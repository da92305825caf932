//! The boot memory map, checked against what Limine's PROTOCOL.md promises.
//!
//! The frame allocator trusts the map: a usable entry that overlaps ACPI
//! tables or the kernel image would hand that memory out as free, and the
//! damage would surface much later, far from its cause. So the promises are
//! checked once, up front, and every broken one is named:
//!
//! - usable and bootloader-reclaimable entries are 4096-byte aligned, base
//!   and length;
//! - they overlap no other entry;
//! - nothing between 0 and 0x1000 is usable;
//! - entries are sorted by base.
//!
//! The check compares every pair: maps are tens of entries, and a pairwise
//! check does not rely on the sortedness it is also checking.
use alloc::vec::Vec;

/// Limine's memory map entry types (PROTOCOL.md, "Memory Map Feature").
pub mod kind {
    pub const USABLE: u64 = 0;
    pub const RESERVED: u64 = 1;
    pub const ACPI_RECLAIMABLE: u64 = 2;
    pub const ACPI_NVS: u64 = 3;
    pub const BAD_MEMORY: u64 = 4;
    pub const BOOTLOADER_RECLAIMABLE: u64 = 5;
    pub const EXECUTABLE_AND_MODULES: u64 = 6;
    pub const FRAMEBUFFER: u64 = 7;

    pub fn name(kind: u64) -> &'static str {
        match kind {
            USABLE => "usable",
            RESERVED => "reserved",
            ACPI_RECLAIMABLE => "acpi-reclaimable",
            ACPI_NVS => "acpi-nvs",
            BAD_MEMORY => "bad",
            BOOTLOADER_RECLAIMABLE => "bootloader-reclaimable",
            EXECUTABLE_AND_MODULES => "executable-and-modules",
            FRAMEBUFFER => "framebuffer",
            _ => "unknown",
        }
    }

    /// The kinds the protocol makes alignment and no-overlap promises about.
    pub fn is_strict(kind: u64) -> bool {
        kind == USABLE || kind == BOOTLOADER_RECLAIMABLE
    }
}

const PAGE: u64 = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub base: u64,
    pub length: u64,
    pub kind: u64,
}

impl Entry {
    pub const fn new(base: u64, length: u64, kind: u64) -> Self {
        Entry { base, length, kind }
    }

    /// One past the last byte. Saturates: an entry running past the end of
    /// the address space is still compared sensibly.
    pub fn end(&self) -> u64 {
        self.base.saturating_add(self.length)
    }

    fn overlaps(&self, other: &Entry) -> bool {
        self.base < other.end() && other.base < self.end()
    }
}

impl From<(u64, u64, u64)> for Entry {
    fn from((base, length, kind): (u64, u64, u64)) -> Self {
        Entry::new(base, length, kind)
    }
}

/// Each broken promise, by entry index into the map as given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemmapReport {
    pub sorted: bool,
    /// Strict entries whose base or length is not 4096-byte aligned.
    pub misaligned_strict: Vec<usize>,
    /// `(i, j)`, `i < j`, where entries i and j overlap and at least one of
    /// them is strict.
    pub overlaps_with_strict: Vec<(usize, usize)>,
    /// Usable entries reaching below 0x1000.
    pub usable_below_4k: Vec<usize>,
    pub usable_bytes: u64,
    /// Bootloader-reclaimable bytes: usable once the boot data is dropped.
    pub reclaimable_bytes: u64,
}

impl MemmapReport {
    /// Every promise kept.
    pub fn is_clean(&self) -> bool {
        self.sorted
            && self.misaligned_strict.is_empty()
            && self.overlaps_with_strict.is_empty()
            && self.usable_below_4k.is_empty()
    }
}

pub fn check<I>(entries: I) -> MemmapReport
where
    I: IntoIterator,
    I::Item: Into<Entry>,
{
    let entries: Vec<Entry> = entries.into_iter().map(Into::into).collect();
    let mut report = MemmapReport {
        sorted: entries.windows(2).all(|w| w[0].base <= w[1].base),
        ..MemmapReport::default()
    };
    for (i, e) in entries.iter().enumerate() {
        let strict = kind::is_strict(e.kind);
        if strict && !(e.base.is_multiple_of(PAGE) && e.length.is_multiple_of(PAGE)) {
            report.misaligned_strict.push(i);
        }
        if e.kind == kind::USABLE && e.length != 0 && e.base < PAGE {
            report.usable_below_4k.push(i);
        }
        for (j, other) in entries.iter().enumerate().skip(i + 1) {
            if (strict || kind::is_strict(other.kind)) && e.overlaps(other) {
                report.overlaps_with_strict.push((i, j));
            }
        }
        match e.kind {
            kind::USABLE => report.usable_bytes = report.usable_bytes.saturating_add(e.length),
            kind::BOOTLOADER_RECLAIMABLE => {
                report.reclaimable_bytes = report.reclaimable_bytes.saturating_add(e.length)
            }
            _ => {}
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::kind::*;
    use super::*;

    /// Roughly what QEMU's q35 with 256 MiB gives Limine.
    fn qemu_map() -> Vec<(u64, u64, u64)> {
        vec![
            (0x1000, 0x4f000, USABLE),
            (0x50000, 0x4f000, BOOTLOADER_RECLAIMABLE),
            (0x9fc00, 0x400, RESERVED),
            (0xf0000, 0x10000, RESERVED),
            (0x10_0000, 0xeef_0000, USABLE),
            (0xeff_0000, 0x2_0000, ACPI_RECLAIMABLE),
            (0xf00_0000, 0x10_0000, EXECUTABLE_AND_MODULES),
            (0xfd00_0000, 0x30_0000, FRAMEBUFFER),
        ]
    }

    #[test]
    fn a_real_looking_map_is_clean() {
        let r = check(qemu_map());
        assert!(r.is_clean(), "{r:?}");
        assert_eq!(r.usable_bytes, 0x4f000 + 0xeef_0000);
        assert_eq!(r.reclaimable_bytes, 0x4f000);
    }

    #[test]
    fn non_strict_entries_may_be_unaligned_and_overlap_each_other() {
        let r = check([(0x9fc00, 0x400, RESERVED), (0x9fe00, 0x1000, ACPI_NVS)]);
        assert!(r.is_clean(), "{r:?}");
    }

    #[test]
    fn each_broken_promise_is_named() {
        let mut map = qemu_map();
        map[1].1 += 0xc10; // misaligned length, and now overlaps entry 2
        map.swap(6, 7); // unsorted
        map[0] = (0, 0x50000, USABLE); // page zero usable
        let r = check(map);
        assert!(!r.sorted);
        assert_eq!(r.misaligned_strict, [1]);
        assert_eq!(r.overlaps_with_strict, [(1, 2)]);
        assert_eq!(r.usable_below_4k, [0]);
        assert!(!r.is_clean());
    }

    #[test]
    fn every_kind_has_its_own_name_as_the_boot_log_prints_it() {
        let names: Vec<&str> = (0..=8).map(kind::name).collect();
        assert_eq!(
            names,
            [
                "usable",
                "reserved",
                "acpi-reclaimable",
                "acpi-nvs",
                "bad",
                "bootloader-reclaimable",
                "executable-and-modules",
                "framebuffer",
                "unknown",
            ]
        );
    }

    #[test]
    fn any_one_broken_promise_makes_the_map_unclean() {
        let clean = check(qemu_map());
        let broken: [fn(&mut MemmapReport); 4] = [
            |r| r.sorted = false,
            |r| r.misaligned_strict.push(1),
            |r| r.overlaps_with_strict.push((1, 2)),
            |r| r.usable_below_4k.push(0),
        ];
        for (i, break_one) in broken.iter().enumerate() {
            let mut r = clean.clone();
            break_one(&mut r);
            assert!(!r.is_clean(), "promise {i} broken alone: {r:?}");
        }
    }

    #[test]
    fn overlap_found_even_when_unsorted_and_far_apart() {
        let r = check([
            (0x10_0000, 0x10_0000, USABLE),
            (0x30_0000, 0x1000, RESERVED),
            (0x10_8000, 0x1000, RESERVED),
        ]);
        assert_eq!(r.overlaps_with_strict, [(0, 2)]);
        assert!(!r.sorted);
    }

    #[test]
    fn touching_is_not_overlapping_and_empty_entries_overlap_nothing() {
        let r = check([
            (0x1000, 0x1000, USABLE),
            (0x2000, 0x1000, USABLE),
            (0x2000, 0, RESERVED),
            (0x3000, 0, USABLE),
        ]);
        assert!(r.is_clean(), "{r:?}");
    }

    #[test]
    fn extreme_entries_do_not_wrap() {
        let r = check([
            (0x1000, u64::MAX, USABLE),
            (u64::MAX - 0xfff, 0x1000, RESERVED),
        ]);
        assert_eq!(r.overlaps_with_strict, [(0, 1)]);
        assert_eq!(r.misaligned_strict, [0]);
        assert_eq!(r.usable_bytes, u64::MAX);
    }

    #[test]
    fn kind_names() {
        assert_eq!(name(USABLE), "usable");
        assert_eq!(name(FRAMEBUFFER), "framebuffer");
        assert_eq!(name(42), "unknown");
    }
}
