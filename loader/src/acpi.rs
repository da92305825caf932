//! Just enough ACPI to find the RSDP and read the MADT's CPUs and I/O APICs.
const FOUR_GIB: u64 = 1 << 32;
pub const MAX_CPUS: usize = 256;
const MAX_IOAPICS: usize = 8;

fn bytes(phys: u64, len: usize) -> &'static [u8] {
    // SAFETY: callers only pass firmware table ranges below 4 GiB, which the
    // entry stub identity-mapped; firmware tables are never written by us.
    unsafe { core::slice::from_raw_parts(phys as usize as *const u8, len) }
}

fn checksum_ok(b: &[u8]) -> bool {
    b.iter().fold(0u8, |s, &x| s.wrapping_add(x)) == 0
}

fn valid_rsdp(phys: u64) -> bool {
    let b = bytes(phys, 20);
    if &b[..8] != b"RSD PTR " || !checksum_ok(b) {
        return false;
    }
    if b[15] >= 2 {
        let len = u32_at(bytes(phys, 24), 20);
        return (36..=4096).contains(&len) && checksum_ok(bytes(phys, len as usize));
    }
    true
}

/// The RSDP: the PVH hint if valid, else the BIOS search areas (first KiB of
/// the EBDA, then 0xE0000-0xFFFFF).
pub fn find_rsdp(hint: u64) -> Option<u64> {
    if hint != 0 && hint < FOUR_GIB && valid_rsdp(hint) {
        return Some(hint);
    }
    let ebda = u64::from(u16::from_le_bytes([bytes(0x40e, 2)[0], bytes(0x40e, 2)[1]])) << 4;
    let ebda_area = (0x8_0000..0xa_0000)
        .contains(&ebda)
        .then_some((ebda, ebda + 1024));
    ebda_area
        .into_iter()
        .chain(core::iter::once((0xe_0000, 0x10_0000)))
        .flat_map(|(lo, hi)| (lo..hi).step_by(16))
        .find(|&p| valid_rsdp(p))
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn table(phys: u64) -> Option<&'static [u8]> {
    if phys == 0 || phys + 36 > FOUR_GIB {
        return None;
    }
    let len = u32_at(bytes(phys, 36), 4) as u64;
    if len < 36 || phys + len > FOUR_GIB {
        return None;
    }
    let t = bytes(phys, len as usize);
    checksum_ok(t).then_some(t)
}

fn find_table(rsdp: u64, signature: &[u8; 4]) -> Option<&'static [u8]> {
    let r = bytes(rsdp, 36);
    let xsdt = if r[15] >= 2 {
        u64::from(u32_at(r, 24)) | (u64::from(u32_at(r, 28)) << 32)
    } else {
        0
    };
    let (root, width) = match table(xsdt) {
        Some(t) => (t, 8),
        None => (table(u64::from(u32_at(r, 16)))?, 4),
    };
    root[36..].chunks_exact(width).find_map(|c| {
        let mut addr = [0u8; 8];
        addr[..width].copy_from_slice(c);
        let t = table(u64::from_le_bytes(addr))?;
        (&t[..4] == signature).then_some(t)
    })
}

#[derive(Clone, Copy, Default)]
pub struct Cpu {
    pub processor_id: u32,
    pub lapic_id: u32,
}

pub struct Madt {
    pub cpus: [Cpu; MAX_CPUS],
    pub cpu_count: usize,
    pub ioapics: [u64; MAX_IOAPICS],
    pub ioapic_count: usize,
}

/// Enabled processor local APICs (in MADT order) and I/O APIC addresses.
pub fn madt(rsdp: u64) -> Option<Madt> {
    let t = find_table(rsdp, b"APIC")?;
    let mut m = Madt {
        cpus: [Cpu::default(); MAX_CPUS],
        cpu_count: 0,
        ioapics: [0; MAX_IOAPICS],
        ioapic_count: 0,
    };
    let mut off = 44;
    while off + 2 <= t.len() {
        let (kind, len) = (t[off], t[off + 1] as usize);
        if len < 2 || off + len > t.len() {
            break;
        }
        let e = &t[off..off + len];
        match kind {
            // Processor local APIC: only enabled ones; we run in xAPIC mode,
            // so x2APIC entries (type 9) are not ours to start.
            0 if len >= 8 && u32_at(e, 4) & 1 != 0 && m.cpu_count < MAX_CPUS => {
                m.cpus[m.cpu_count] = Cpu {
                    processor_id: u32::from(e[2]),
                    lapic_id: u32::from(e[3]),
                };
                m.cpu_count += 1;
            }
            1 if len >= 12 && m.ioapic_count < MAX_IOAPICS => {
                m.ioapics[m.ioapic_count] = u64::from(u32_at(e, 4));
                m.ioapic_count += 1;
            }
            _ => {}
        }
        off += len;
    }
    Some(m)
}
