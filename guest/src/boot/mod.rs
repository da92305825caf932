//! What the boot loader handed over, through the Limine boot protocol.
//!
//! The requests live in `.requests`, between the start and end markers, as
//! base revision 2 requires; the bootloader fills in each `response` pointer
//! before jumping to us. Revision 2 is the newest both Limine 7.x and 8.x
//! accept, and the one our direct-boot loader implements.
pub mod cpu;
pub mod mp;
mod requests;
pub mod timeline;

use requests::*;

use limine::memory_map::Entry;
use limine::response::MpResponse;

/// The stack size we ask for, for the BSP and every AP (Limine's default is
/// 64 KiB; asking proves the request is honoured).
pub const BOOT_STACK_SIZE: u64 = 128 * 1024;

/// Everything the rest of the kernel needs from the boot protocol, read once.
/// A `None` means the bootloader gave no response to that request.
pub struct BootInfo {
    /// Whether the bootloader accepted our base revision (it zeroes the tag's
    /// third word when it does).
    pub base_revision_supported: bool,
    pub loaded_revision: Option<u64>,
    pub bootloader: Option<(&'static str, &'static str)>,
    pub hhdm_offset: Option<u64>,
    pub memory_map: Option<&'static [&'static Entry]>,
    /// (physical base, virtual base) of this kernel image.
    pub executable_address: Option<(u64, u64)>,
    /// As the response carries it: HHDM-virtual under revision 2.
    pub rsdp_address: Option<u64>,
    pub stack_size_granted: bool,
    pub mp: Option<&'static MpResponse>,
    pub cmdline: &'static str,
    /// Where `cmdline` came from: the dedicated request (newer Limine) or the
    /// executable-file response (Limine 7.x/8.x).
    pub cmdline_source: &'static str,
}

impl BootInfo {
    pub fn collect() -> BootInfo {
        let (cmdline, cmdline_source) = cmdline();
        BootInfo {
            base_revision_supported: BASE_REVISION.is_supported(),
            loaded_revision: BASE_REVISION.loaded_revision(),
            bootloader: BOOTLOADER_INFO
                .get_response()
                .map(|r| (r.name(), r.version())),
            hhdm_offset: HHDM.get_response().map(|r| r.offset()),
            memory_map: MEMORY_MAP.get_response().map(|r| r.entries()),
            executable_address: EXECUTABLE_ADDRESS
                .get_response()
                .map(|r| (r.physical_base(), r.virtual_base())),
            rsdp_address: RSDP.get_response().map(|r| r.address() as u64),
            stack_size_granted: STACK_SIZE.get_response().is_some(),
            mp: MP.get_response(),
            cmdline,
            cmdline_source,
        }
    }

    /// The number of CPUs the bootloader started (1 without an MP response).
    pub fn cpu_count(&self) -> usize {
        self.mp.map_or(1, |mp| mp.cpus().len())
    }
}

fn cmdline() -> (&'static str, &'static str) {
    if let Some(r) = EXECUTABLE_CMDLINE.get_response() {
        if let Ok(s) = r.cmdline().to_str() {
            return (s, "executable-cmdline");
        }
    }
    if let Some(r) = EXECUTABLE_FILE.get_response() {
        if let Ok(s) = r.file().string().to_str() {
            return (s, "executable-file");
        }
    }
    ("", "none")
}

/// The protocol's number for a memory-map entry type (the limine crate's
/// constants are the protocol's numbers in order).
pub fn memmap_kind(t: limine::memory_map::EntryType) -> u64 {
    use limine::memory_map::EntryType;
    const KINDS: [EntryType; 8] = [
        EntryType::USABLE,
        EntryType::RESERVED,
        EntryType::ACPI_RECLAIMABLE,
        EntryType::ACPI_NVS,
        EntryType::BAD_MEMORY,
        EntryType::BOOTLOADER_RECLAIMABLE,
        EntryType::EXECUTABLE_AND_MODULES,
        EntryType::FRAMEBUFFER,
    ];
    KINDS
        .iter()
        .position(|k| *k == t)
        .map_or(u64::MAX, |k| k as u64)
}
