//! The Limine boot protocol's identifiers and response layouts, as
//! PROTOCOL.md defines them. Every pointer field holds an HHDM address.
//!
//! Written from PROTOCOL.md on its own, not shared with the guest's
//! `limine` crate or `kcore::memmap` (whose memory-map kinds repeat
//! `memmap_type` here): the loader is a second implementation of the
//! protocol, held against real Limine by `runner compare-boot`, and one
//! table shared by both sides would let one wrong number pass on both.

pub const HHDM_OFFSET: u64 = 0xffff_8000_0000_0000;

pub const COMMON_MAGIC: [u64; 2] = [0xc7b1_dd30_df4c_8b88, 0x0a82_e883_a194_f07b];
pub const BASE_REVISION_MAGIC: [u64; 2] = [0xf956_2b2d_5c95_a6c8, 0x6a7b_3849_4453_6bdc];
pub const REQUESTS_START_MARKER: [u64; 4] = [
    0xf6b8_f4b3_9de7_d1ae,
    0xfab9_1a69_40fc_b9cf,
    0x785c_6ed0_15d3_e316,
    0x181e_920a_7852_b9d9,
];
pub const REQUESTS_END_MARKER: [u64; 2] = [0xadc0_e053_1bb1_0d03, 0x9572_709f_3176_4c62];

/// The base revision whose behaviour this loader implements.
pub const SUPPORTED_BASE_REVISION: u64 = 2;

/// The last two words of each request ID this loader answers.
pub mod id {
    pub const BOOTLOADER_INFO: [u64; 2] = [0xf550_38d8_e2a1_202f, 0x2794_26fc_f5f5_9740];
    pub const FIRMWARE_TYPE: [u64; 2] = [0x8c2f_75d9_0bef_28a8, 0x7045_a468_8eac_00c3];
    pub const STACK_SIZE: [u64; 2] = [0x224e_f046_0a8e_8926, 0xe1cb_0fc2_5f46_ea3d];
    pub const HHDM: [u64; 2] = [0x48dc_f1cb_8ad2_b852, 0x6398_4e95_9a98_244b];
    pub const MP: [u64; 2] = [0x95a6_7b81_9a1b_857e, 0xa0b6_1b72_3b6a_73e0];
    pub const MEMMAP: [u64; 2] = [0x67cf_3d9d_378a_806f, 0xe304_acdf_c50c_3c62];
    pub const ENTRY_POINT: [u64; 2] = [0x13d8_6c03_5a1c_d3e1, 0x2b0c_aa89_d8f3_026a];
    pub const KERNEL_FILE: [u64; 2] = [0xad97_e90e_83f1_ed67, 0x31eb_5d1c_5ff2_3b69];
    pub const EXECUTABLE_CMDLINE: [u64; 2] = [0x4b16_1536_e598_651e, 0xb390_ad4a_2f1f_303a];
    pub const RSDP: [u64; 2] = [0xc5e7_7b6b_397e_7b43, 0x2763_7845_accd_cf3c];
    pub const KERNEL_ADDRESS: [u64; 2] = [0x71ba_7686_3cc5_5f63, 0xb264_4a48_c516_a487];
}

pub mod memmap_type {
    pub const USABLE: u64 = 0;
    pub const RESERVED: u64 = 1;
    pub const ACPI_RECLAIMABLE: u64 = 2;
    pub const ACPI_NVS: u64 = 3;
    pub const BAD_MEMORY: u64 = 4;
    pub const BOOTLOADER_RECLAIMABLE: u64 = 5;
    pub const KERNEL_AND_MODULES: u64 = 6;
}

/// The common head of every request.
#[repr(C)]
pub struct RequestHeader {
    pub id: [u64; 4],
    pub revision: u64,
    pub response: u64,
}

#[repr(C)]
pub struct StackSizeRequest {
    pub header: RequestHeader,
    pub stack_size: u64,
}

#[repr(C)]
pub struct EntryPointRequest {
    pub header: RequestHeader,
    pub entry: u64,
}

/// The responses that carry nothing but their revision (stack size, entry point).
#[repr(C)]
pub struct BareResponse {
    pub revision: u64,
}

#[repr(C)]
pub struct BootloaderInfoResponse {
    pub revision: u64,
    pub name: u64,
    pub version: u64,
}

#[repr(C)]
pub struct FirmwareTypeResponse {
    pub revision: u64,
    pub firmware_type: u64,
}

pub const FIRMWARE_TYPE_X86_BIOS: u64 = 0;

#[repr(C)]
pub struct HhdmResponse {
    pub revision: u64,
    pub offset: u64,
}

#[repr(C)]
pub struct MemmapEntry {
    pub base: u64,
    pub length: u64,
    pub kind: u64,
}

#[repr(C)]
pub struct MemmapResponse {
    pub revision: u64,
    pub entry_count: u64,
    pub entries: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Uuid {
    pub a: u32,
    pub b: u16,
    pub c: u16,
    pub d: [u8; 8],
}

#[repr(C)]
pub struct File {
    pub revision: u64,
    pub address: u64,
    pub size: u64,
    pub path: u64,
    pub cmdline: u64,
    pub media_type: u32,
    pub unused: u32,
    pub tftp_ip: u32,
    pub tftp_port: u32,
    pub partition_index: u32,
    pub mbr_disk_id: u32,
    pub gpt_disk_uuid: Uuid,
    pub gpt_part_uuid: Uuid,
    pub part_uuid: Uuid,
}

pub const MEDIA_TYPE_GENERIC: u32 = 0;

#[repr(C)]
pub struct KernelFileResponse {
    pub revision: u64,
    pub kernel_file: u64,
}

#[repr(C)]
pub struct ExecutableCmdlineResponse {
    pub revision: u64,
    pub cmdline: u64,
}

#[repr(C)]
pub struct RsdpResponse {
    pub revision: u64,
    pub address: u64,
}

#[repr(C)]
pub struct KernelAddressResponse {
    pub revision: u64,
    pub physical_base: u64,
    pub virtual_base: u64,
}

#[repr(C)]
pub struct MpInfo {
    pub processor_id: u32,
    pub lapic_id: u32,
    pub reserved: u64,
    /// Written atomically by the guest to release a parked AP.
    pub goto_address: u64,
    pub extra_argument: u64,
}

/// Byte offset of `goto_address`, which the AP parking loop polls.
pub const MP_INFO_GOTO_OFFSET: usize = core::mem::offset_of!(MpInfo, goto_address);

#[repr(C)]
pub struct MpResponse {
    pub revision: u64,
    pub flags: u32,
    pub bsp_lapic_id: u32,
    pub cpu_count: u64,
    pub cpus: u64,
}

/// The GDT the protocol prescribes at entry: null, 16-bit code/data, 32-bit
/// code/data, 64-bit code (selector 0x28) and data (0x30).
#[unsafe(no_mangle)]
pub static HANDOFF_GDT: [u64; 7] = [
    0,
    0x0000_9a00_0000_ffff,
    0x0000_9200_0000_ffff,
    0x00cf_9a00_0000_ffff,
    0x00cf_9200_0000_ffff,
    0x0020_9a00_0000_0000,
    0x0000_9200_0000_0000,
];
