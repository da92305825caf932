//! The responses, and all they point to, as statics in the loader image:
//! that image is reported as bootloader-reclaimable, as the protocol asks of
//! response memory, and every pointer handed out is its HHDM alias.
use crate::cell::Static;
use crate::elf::Image;
use crate::memmap::Map;
use crate::protocol::*;
use crate::pvh::CMDLINE_MAX;
use crate::requests::{request, respond, Requests};

const MAX_MEMMAP: usize = 256;
const NAME: &[u8] = b"testbed-direct\0";
const VERSION: &[u8] = concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes();
const KERNEL_PATH: &[u8] = b"/guest\0";

static CMDLINE: Static<[u8; CMDLINE_MAX]> = Static::new([0; CMDLINE_MAX]);

struct All {
    bootloader_info: BootloaderInfoResponse,
    firmware_type: FirmwareTypeResponse,
    stack_size: BareResponse,
    entry_point: BareResponse,
    hhdm: HhdmResponse,
    memmap: MemmapResponse,
    memmap_entries: [MemmapEntry; MAX_MEMMAP],
    memmap_ptrs: [u64; MAX_MEMMAP],
    kernel_file: KernelFileResponse,
    file: File,
    cmdline: ExecutableCmdlineResponse,
    rsdp: RsdpResponse,
    kernel_address: KernelAddressResponse,
    mp: MpResponse,
}

const NO_UUID: Uuid = Uuid {
    a: 0,
    b: 0,
    c: 0,
    d: [0; 8],
};

static ALL: Static<All> = Static::new(All {
    bootloader_info: BootloaderInfoResponse {
        revision: 0,
        name: 0,
        version: 0,
    },
    firmware_type: FirmwareTypeResponse {
        revision: 0,
        firmware_type: FIRMWARE_TYPE_X86_BIOS,
    },
    stack_size: BareResponse { revision: 0 },
    entry_point: BareResponse { revision: 0 },
    hhdm: HhdmResponse {
        revision: 0,
        offset: HHDM_OFFSET,
    },
    memmap: MemmapResponse {
        revision: 0,
        entry_count: 0,
        entries: 0,
    },
    memmap_entries: [const {
        MemmapEntry {
            base: 0,
            length: 0,
            kind: 0,
        }
    }; MAX_MEMMAP],
    memmap_ptrs: [0; MAX_MEMMAP],
    kernel_file: KernelFileResponse {
        revision: 0,
        kernel_file: 0,
    },
    file: File {
        revision: 0,
        address: 0,
        size: 0,
        path: 0,
        cmdline: 0,
        media_type: MEDIA_TYPE_GENERIC,
        unused: 0,
        tftp_ip: 0,
        tftp_port: 0,
        partition_index: 0,
        mbr_disk_id: 0,
        gpt_disk_uuid: NO_UUID,
        gpt_part_uuid: NO_UUID,
        part_uuid: NO_UUID,
    },
    cmdline: ExecutableCmdlineResponse {
        revision: 0,
        cmdline: 0,
    },
    rsdp: RsdpResponse {
        revision: 0,
        address: 0,
    },
    kernel_address: KernelAddressResponse {
        revision: 0,
        physical_base: 0,
        virtual_base: 0,
    },
    mp: MpResponse {
        revision: 0,
        flags: 0,
        bsp_lapic_id: 0,
        cpu_count: 0,
        cpus: 0,
    },
});

/// The buffer the command line is copied into; it is also what the
/// responses point at.
pub fn cmdline_buffer() -> &'static mut [u8; CMDLINE_MAX] {
    // SAFETY: called once, before anything else refers to the buffer.
    unsafe { &mut *CMDLINE.get() }
}

fn hhdm<T: ?Sized>(p: *const T) -> u64 {
    HHDM_OFFSET + p as *const u8 as u64
}

pub struct Mp {
    pub bsp_lapic_id: u32,
    pub cpu_count: u64,
    pub cpus: u64,
}

pub struct Inputs<'a> {
    pub reqs: &'a Requests,
    pub image: &'a Image,
    pub module: u64,
    pub module_size: u64,
    pub rsdp: Option<u64>,
    pub mp: Option<Mp>,
    pub map: &'a Map,
}

/// Answers every request the loader supports and returns the entry point
/// (the Entry Point request's, else the ELF's). Must run after the last
/// allocation, since it reports the memory map.
pub fn fill(i: &Inputs) -> u64 {
    // SAFETY: single-threaded, and no response has been handed out yet.
    let all = unsafe { &mut *ALL.get() };
    let r = i.reqs;
    let mut entry = i.image.entry;
    let cmdline = hhdm(CMDLINE.get());

    if let Some(q) = r.bootloader_info {
        all.bootloader_info.name = hhdm(NAME.as_ptr());
        all.bootloader_info.version = hhdm(VERSION.as_ptr());
        respond(q, hhdm(&all.bootloader_info));
    }
    if let Some(q) = r.firmware_type {
        respond(q, hhdm(&all.firmware_type));
    }
    if let Some(q) = r.stack_size {
        respond(q, hhdm(&all.stack_size));
    }
    if let Some(q) = r.entry_point {
        // SAFETY: the ID matched the entry point request.
        let e = unsafe { request::<EntryPointRequest>(q) }.entry;
        if e != 0 {
            entry = e;
            respond(q, hhdm(&all.entry_point));
        }
    }
    if let Some(q) = r.hhdm {
        respond(q, hhdm(&all.hhdm));
    }
    if let Some(q) = r.kernel_file {
        all.file.address = HHDM_OFFSET + i.module;
        all.file.size = i.module_size;
        all.file.path = hhdm(KERNEL_PATH.as_ptr());
        all.file.cmdline = cmdline;
        all.kernel_file.kernel_file = hhdm(&all.file);
        respond(q, hhdm(&all.kernel_file));
    }
    if let Some(q) = r.executable_cmdline {
        all.cmdline.cmdline = cmdline;
        respond(q, hhdm(&all.cmdline));
    }
    if let (Some(q), Some(rsdp)) = (r.rsdp, i.rsdp) {
        all.rsdp.address = HHDM_OFFSET + rsdp;
        respond(q, hhdm(&all.rsdp));
    }
    if let Some(q) = r.kernel_address {
        all.kernel_address.physical_base = i.image.phys_base;
        all.kernel_address.virtual_base = i.image.virt_base;
        respond(q, hhdm(&all.kernel_address));
    }
    if let (Some(q), Some(mp)) = (r.mp, &i.mp) {
        all.mp.bsp_lapic_id = mp.bsp_lapic_id;
        all.mp.cpu_count = mp.cpu_count;
        all.mp.cpus = mp.cpus;
        respond(q, hhdm(&all.mp));
    }
    if let Some(q) = r.memmap {
        let regions = i.map.regions();
        if regions.len() > MAX_MEMMAP {
            crate::fail!(
                "memory map has {} entries, more than {MAX_MEMMAP}",
                regions.len()
            );
        }
        for (n, reg) in regions.iter().enumerate() {
            all.memmap_entries[n] = MemmapEntry {
                base: reg.base,
                length: reg.end - reg.base,
                kind: reg.kind,
            };
            all.memmap_ptrs[n] = hhdm(&all.memmap_entries[n]);
        }
        all.memmap.entry_count = regions.len() as u64;
        all.memmap.entries = hhdm(all.memmap_ptrs.as_ptr());
        respond(q, hhdm(&all.memmap));
    }
    entry
}
