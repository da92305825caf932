//! COM1 output for the loader's own messages, and the failure exit: a boot
//! that cannot continue says why and leaves QEMU through isa-debug-exit so the
//! runner sees a failure instead of a hang.
use crate::cpu;
use core::fmt::{self, Write};

const COM1: u16 = 0x3f8;
const DEBUG_EXIT: u16 = 0xf4;
/// QEMU exits with (value << 1) | 1 = 255: distinct from every guest verdict.
const LOADER_FAILURE: u32 = 0x7f;

pub fn init() {
    cpu::outb(COM1 + 1, 0x00); // no interrupts: we poll
    cpu::outb(COM1 + 3, 0x80); // DLAB to set the divisor
    cpu::outb(COM1, 0x01); // 115200 baud
    cpu::outb(COM1 + 1, 0x00);
    cpu::outb(COM1 + 3, 0x03); // 8N1
    cpu::outb(COM1 + 2, 0xc7); // FIFO on, cleared
    cpu::outb(COM1 + 4, 0x03); // DTR + RTS
}

pub struct Com1;

impl Write for Com1 {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                put(b'\r');
            }
            put(b);
        }
        Ok(())
    }
}

fn put(b: u8) {
    // Bounded so that a missing UART (LSR reads 0xff or 0) cannot hang the boot.
    for _ in 0..100_000 {
        if cpu::inb(COM1 + 5) & 0x20 != 0 {
            break;
        }
    }
    cpu::outb(COM1, b);
}

#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = writeln!($crate::serial::Com1, $($arg)*);
    }};
}

/// Reports a fatal boot error and ends the QEMU run with the loader's
/// failure code.
pub fn fail(args: fmt::Arguments) -> ! {
    let _ = Com1.write_fmt(format_args!("loader: error: {args}\n"));
    cpu::outl(DEBUG_EXIT, LOADER_FAILURE);
    cpu::halt_forever()
}

#[macro_export]
macro_rules! fail {
    ($($arg:tt)*) => { $crate::serial::fail(format_args!($($arg)*)) };
}
