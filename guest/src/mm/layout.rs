//! Where the linker put the kernel image (symbols from `guest/linker.ld`).
use x86_64::VirtAddr;

extern "C" {
    static __kernel_start: u8;
    static __text_start: u8;
    static __rodata_start: u8;
    static __data_start: u8;
}

/// The start of each part of the image: text (RX), rodata (R), data+bss (RW).
#[derive(Clone, Copy, Debug)]
pub struct ImageLayout {
    pub start: VirtAddr,
    pub text: VirtAddr,
    pub rodata: VirtAddr,
    pub data: VirtAddr,
}

pub fn image() -> ImageLayout {
    // Only the addresses of these symbols are taken, never their contents.
    ImageLayout {
        start: VirtAddr::from_ptr(&raw const __kernel_start),
        text: VirtAddr::from_ptr(&raw const __text_start),
        rodata: VirtAddr::from_ptr(&raw const __rodata_start),
        data: VirtAddr::from_ptr(&raw const __data_start),
    }
}

/// Room for the symbol table; the runner fills it in after the link.
#[used]
#[link_section = ".ksyms"]
static KSYMS: [u8; abi::ksyms::SECTION_SIZE] = [0; abi::ksyms::SECTION_SIZE];

/// The embedded symbol table, if the runner filled it in.
pub fn symbols() -> Option<abi::ksyms::Table<'static>> {
    // The compiler believes KSYMS is all zeros (its initializer); hide the
    // pointer from it so reads see what the runner wrote into the file.
    let p = core::hint::black_box((&raw const KSYMS).cast::<u8>());
    // SAFETY: `p` points at KSYMS, SECTION_SIZE immutable bytes in the
    // kernel image, mapped read-only for the kernel's lifetime.
    let bytes = unsafe { core::slice::from_raw_parts(p, abi::ksyms::SECTION_SIZE) };
    abi::ksyms::Table::new(bytes)
}
