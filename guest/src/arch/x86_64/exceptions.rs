//! CPU exceptions: the fixups we expect, and an oops for everything else.
//!
//! Issue-5's guard-page diagnostics hook in here (`page_fault`,
//! `double_fault`); until then an unexpected exception prints the register
//! dump and ends the boot through the panic path.
use super::percpu;
use super::trap::TrapFrame;
use core::sync::atomic::{AtomicU64, Ordering};
use x86_64::registers::control::{Cr2, Cr3};

/// NMIs taken, on all CPUs.
pub static NMI_COUNT: AtomicU64 = AtomicU64::new(0);

const NAMES: [&str; 32] = [
    "divide error",
    "debug",
    "NMI",
    "breakpoint",
    "overflow",
    "bound range",
    "invalid opcode",
    "device not available",
    "double fault",
    "coprocessor overrun",
    "invalid TSS",
    "segment not present",
    "stack segment",
    "general protection",
    "page fault",
    "reserved",
    "x87 FP",
    "alignment check",
    "machine check",
    "SIMD FP",
    "virtualization",
    "control protection",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "hypervisor injection",
    "VMM communication",
    "security",
    "reserved",
];

pub fn dispatch(frame: &mut TrapFrame) {
    match frame.vector {
        2 => {
            NMI_COUNT.fetch_add(1, Ordering::Relaxed);
        }
        14 => page_fault(frame),
        v => oops(frame, NAMES[v as usize & 31]),
    }
}

fn page_fault(frame: &mut TrapFrame) {
    if let Some(fixup) = super::probe::fixup_for(frame.rip) {
        frame.rip = fixup;
        return;
    }
    let addr = Cr2::read_raw();
    kprintln!("BUG: unable to handle page fault for address: {addr:016x}");
    kprintln!(
        "#PF: {} {} access in {} mode",
        if frame.error_code & 1 != 0 {
            "protection violation on"
        } else {
            "not-present page,"
        },
        if frame.error_code & 16 != 0 {
            "instruction fetch"
        } else if frame.error_code & 2 != 0 {
            "write"
        } else {
            "read"
        },
        if frame.error_code & 4 != 0 {
            "user"
        } else {
            "kernel"
        },
    );
    oops(frame, "page fault")
}

/// Print the oops and stop the machine through the panic path.
fn oops(frame: &TrapFrame, what: &str) -> ! {
    let cpu = if percpu::ready() {
        percpu::this().id as i64
    } else {
        -1
    };
    kprintln!("Oops: {what}: {:04x} [#1] SMP", frame.error_code);
    kprintln!("CPU: {cpu}");
    kprintln!("{frame}");
    kprintln!(
        "CR2: {:016x} CR3: {:016x}",
        Cr2::read_raw(),
        Cr3::read().0.start_address().as_u64()
    );
    panic!("unhandled {what} at rip {:#x}", frame.rip);
}
