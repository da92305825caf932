//! QEMU's fw_cfg interface (I/O ports 0x510/0x511), the fallback source for
//! the memory map and the initrd when hvm_start_info lacks them.
use crate::cpu;
use crate::memmap::E820Entry;

const SELECTOR: u16 = 0x510;
const DATA: u16 = 0x511;
const SIGNATURE: u16 = 0x0000;
const INITRD_ADDR: u16 = 0x000a;
const INITRD_SIZE: u16 = 0x000b;
const FILE_DIR: u16 = 0x0019;

fn select(key: u16) {
    cpu::outw(SELECTOR, key);
}

fn read_bytes(buf: &mut [u8]) {
    for b in buf {
        *b = cpu::inb(DATA);
    }
}

fn read_u32_le() -> u32 {
    let mut b = [0; 4];
    read_bytes(&mut b);
    u32::from_le_bytes(b)
}

fn present() -> bool {
    select(SIGNATURE);
    let mut sig = [0; 4];
    read_bytes(&mut sig);
    &sig == b"QEMU"
}

/// The initrd QEMU placed in guest memory, as (physical address, size).
pub fn initrd() -> Option<(u64, u64)> {
    if !present() {
        return None;
    }
    select(INITRD_ADDR);
    let addr = read_u32_le();
    select(INITRD_SIZE);
    let size = read_u32_le();
    (addr != 0 && size != 0).then_some((u64::from(addr), u64::from(size)))
}

/// Reads the `etc/e820` file into `out`, returning the number of entries.
pub fn e820(out: &mut [E820Entry]) -> usize {
    if !present() {
        return 0;
    }
    select(FILE_DIR);
    let mut count = [0; 4];
    read_bytes(&mut count);
    let count = u32::from_be_bytes(count);
    let mut found = None;
    for _ in 0..count {
        let mut entry = [0u8; 64];
        read_bytes(&mut entry);
        let size = u32::from_be_bytes([entry[0], entry[1], entry[2], entry[3]]);
        let key = u16::from_be_bytes([entry[4], entry[5]]);
        let name = &entry[8..];
        let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
        if name == b"etc/e820" {
            found = Some((key, size as usize));
        }
    }
    let Some((key, size)) = found else { return 0 };
    select(key);
    let mut n = 0;
    // QEMU's packed struct e820_entry: u64 address, u64 length, u32 type.
    for _ in 0..size / 20 {
        let mut raw = [0u8; 20];
        read_bytes(&mut raw);
        if n < out.len() {
            out[n] = E820Entry {
                base: u64::from_le_bytes(raw[0..8].try_into().unwrap_or([0; 8])),
                len: u64::from_le_bytes(raw[8..16].try_into().unwrap_or([0; 8])),
                kind: u32::from_le_bytes(raw[16..20].try_into().unwrap_or([0; 4])),
            };
            n += 1;
        }
    }
    n
}
