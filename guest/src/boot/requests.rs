//! The Limine requests, where the boot loader looks for them.
//!
//! The only code above arch and mm that the `unsafe_code` lint flags, for
//! `#[link_section]`: the boot loader finds the requests by scanning for
//! them between the start and end markers, so each must be placed in that
//! section. Nothing here dereferences anything; `BootInfo` reads the
//! responses through the `limine` crate's safe accessors.
#![allow(unsafe_code)]

use super::BOOT_STACK_SIZE;
use limine::request::{
    BootloaderInfoRequest, ExecutableAddressRequest, ExecutableCmdlineRequest,
    ExecutableFileRequest, HhdmRequest, MemoryMapRequest, MpRequest, RequestsEndMarker,
    RequestsStartMarker, RsdpRequest, StackSizeRequest,
};
use limine::BaseRevision;

#[used]
#[link_section = ".requests_start_marker"]
pub(super) static START_MARKER: RequestsStartMarker = RequestsStartMarker::new();

#[used]
#[link_section = ".requests"]
pub(super) static BASE_REVISION: BaseRevision = BaseRevision::with_revision(2);

#[used]
#[link_section = ".requests"]
pub(super) static BOOTLOADER_INFO: BootloaderInfoRequest = BootloaderInfoRequest::new();

#[used]
#[link_section = ".requests"]
pub(super) static HHDM: HhdmRequest = HhdmRequest::new();

#[used]
#[link_section = ".requests"]
pub(super) static MEMORY_MAP: MemoryMapRequest = MemoryMapRequest::new();

#[used]
#[link_section = ".requests"]
pub(super) static EXECUTABLE_ADDRESS: ExecutableAddressRequest = ExecutableAddressRequest::new();

#[used]
#[link_section = ".requests"]
pub(super) static EXECUTABLE_FILE: ExecutableFileRequest = ExecutableFileRequest::new();

#[used]
#[link_section = ".requests"]
pub(super) static EXECUTABLE_CMDLINE: ExecutableCmdlineRequest = ExecutableCmdlineRequest::new();

#[used]
#[link_section = ".requests"]
pub(super) static RSDP: RsdpRequest = RsdpRequest::new();

#[used]
#[link_section = ".requests"]
pub(super) static STACK_SIZE: StackSizeRequest = StackSizeRequest::new().with_size(BOOT_STACK_SIZE);

#[used]
#[link_section = ".requests"]
pub(super) static MP: MpRequest = MpRequest::new();

#[used]
#[link_section = ".requests_end_marker"]
pub(super) static END_MARKER: RequestsEndMarker = RequestsEndMarker::new();
