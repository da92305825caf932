//! Finding the guest's requests in its loaded image: 8-byte aligned, between
//! the last start marker and the first end marker when present (base revision
//! 2 makes honouring them mandatory).
use crate::elf::Image;
use crate::protocol::{
    id, RequestHeader, BASE_REVISION_MAGIC, COMMON_MAGIC, REQUESTS_END_MARKER,
    REQUESTS_START_MARKER, SUPPORTED_BASE_REVISION,
};

/// Physical addresses of the requests the loader answers.
#[derive(Default)]
pub struct Requests {
    pub bootloader_info: Option<u64>,
    pub firmware_type: Option<u64>,
    pub stack_size: Option<u64>,
    pub hhdm: Option<u64>,
    pub mp: Option<u64>,
    pub memmap: Option<u64>,
    pub entry_point: Option<u64>,
    pub kernel_file: Option<u64>,
    pub executable_cmdline: Option<u64>,
    pub rsdp: Option<u64>,
    pub kernel_address: Option<u64>,
}

const MAX_REQUESTS: usize = 64;

fn words(image: &Image) -> &'static mut [u64] {
    // SAFETY: the loaded image is `size` bytes (a page multiple) at
    // `phys_base`, identity-mapped, and only the loader touches it until handoff.
    unsafe {
        core::slice::from_raw_parts_mut(
            image.phys_base as usize as *mut u64,
            image.size as usize / 8,
        )
    }
}

/// Whether `pattern` is at `w[i..]`. The first word is compared on its own
/// because nearly every position fails there: the whole-slice compare is a
/// `bcmp` call, and scanning the guest's data for the start marker with one
/// call per word took 2 ms of the boot under TCG.
fn starts_with(w: &[u64], i: usize, pattern: &[u64]) -> bool {
    w.get(i) == pattern.first()
        && w.len() >= i + pattern.len()
        && w[i..i + pattern.len()] == *pattern
}

/// Applies the base revision tag and collects the requests. Fails the boot
/// on what the protocol says a bootloader must refuse.
pub fn scan(image: &Image) -> Requests {
    let w = words(image);
    let start = (0..w.len())
        .rev()
        .find(|&i| starts_with(w, i, &REQUESTS_START_MARKER))
        .map_or(0, |i| i + REQUESTS_START_MARKER.len());
    let end = (start..w.len())
        .find(|&i| starts_with(w, i, &REQUESTS_END_MARKER))
        .unwrap_or(w.len());
    let w = &mut w[..end];

    let mut revision_seen = false;
    let mut found = Requests::default();
    let mut seen_ids = [[0u64; 2]; MAX_REQUESTS];
    let mut seen = 0;
    let mut i = start;
    while i < w.len() {
        if starts_with(w, i, &BASE_REVISION_MAGIC) && i + 2 < w.len() {
            let requested = w[i + 2];
            if requested < SUPPORTED_BASE_REVISION {
                crate::fail!(
                    "guest asks for base revision {requested}; this loader implements only revision {SUPPORTED_BASE_REVISION}"
                );
            }
            if requested == SUPPORTED_BASE_REVISION {
                w[i + 2] = 0;
            }
            // A newer revision is left unchanged: the guest then knows it was
            // booted with revision 2 behaviour.
            revision_seen = true;
            i += 3;
            continue;
        }
        if starts_with(w, i, &COMMON_MAGIC) && i + 3 < w.len() {
            let rid = [w[i + 2], w[i + 3]];
            if seen_ids[..seen].contains(&rid) {
                crate::fail!(
                    "guest has two requests with ID {:#x}, {:#x}",
                    rid[0],
                    rid[1]
                );
            }
            if seen < MAX_REQUESTS {
                seen_ids[seen] = rid;
                seen += 1;
            }
            let at = Some(image.phys_base + i as u64 * 8);
            match rid {
                id::BOOTLOADER_INFO => found.bootloader_info = at,
                id::FIRMWARE_TYPE => found.firmware_type = at,
                id::STACK_SIZE => found.stack_size = at,
                id::HHDM => found.hhdm = at,
                id::MP => found.mp = at,
                id::MEMMAP => found.memmap = at,
                id::ENTRY_POINT => found.entry_point = at,
                id::KERNEL_FILE => found.kernel_file = at,
                id::EXECUTABLE_CMDLINE => found.executable_cmdline = at,
                id::RSDP => found.rsdp = at,
                id::KERNEL_ADDRESS => found.kernel_address = at,
                _ => {}
            }
            i += 4;
            continue;
        }
        i += 1;
    }
    if !revision_seen {
        crate::fail!(
            "guest has no base revision tag (revision 0); this loader implements only revision 2"
        );
    }
    found
}

/// Reads a request found by `scan` as type `T`.
///
/// # Safety
/// `T` must be the request layout that matches the ID at `phys`.
pub unsafe fn request<T>(phys: u64) -> &'static mut T {
    // SAFETY: `phys` is an 8-byte aligned request inside the loaded image
    // (identity-mapped), and the caller matched `T` to its ID.
    unsafe { &mut *(phys as usize as *mut T) }
}

/// Points the request at `phys` to its response (an HHDM address).
pub fn respond(phys: u64, response_hhdm: u64) {
    // SAFETY: every request starts with `RequestHeader`.
    let header: &mut RequestHeader = unsafe { request(phys) };
    header.response = response_hhdm;
}
