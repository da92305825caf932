//! The COM1 16550 UART: the only output the runner reads.
use core::fmt;
use uart_16550::{Config, Uart16550};

const COM1: u16 = 0x3f8;

/// COM1, initialised once by `console::init`.
pub struct Serial(Uart16550<uart_16550::backend::PioBackend>);

impl Serial {
    pub fn com1() -> Option<Serial> {
        // SAFETY: COM1 is the legacy PC serial port at 0x3f8 on every machine
        // we boot (QEMU q35 and microvm with isa-serial). Each console (the
        // main one and its spares) owns one handle, behind its own lock; a
        // port holds no memory, so two handles can only interleave bytes.
        let mut uart = unsafe { Uart16550::new_port(COM1) }.ok()?;
        uart.init(Config::default()).ok()?;
        Some(Serial(uart))
    }
}

impl fmt::Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.send_bytes_exact(s.as_bytes());
        Ok(())
    }
}
