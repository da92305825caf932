//! The panic handler: one structured line the runner can parse, then exit.
//!
//! `PANIC cpu=<apic id> <file>:<line> <message>` — one line, so a truncated
//! serial log either has it whole or not at all.
use crate::arch::x86_64::cpu;
use abi::GuestExit;
use core::panic::PanicInfo;

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    let (file, line) = info.location().map_or(("?", 0), |l| (l.file(), l.line()));
    crate::console::print_panicking(format_args!(
        "\nPANIC cpu={} {}:{} {}\n",
        cpu::apic_id(),
        file,
        line,
        info.message()
    ));
    cpu::exit(GuestExit::Panic)
}
