//! The console: formatted output to COM1, one writer at a time.
//!
//! Every CPU prints through one lock so that lines never interleave; the
//! panic path may steal the lock (see `force_unlock`) so a CPU that panicked
//! while printing still gets its last words out.
use crate::arch::x86_64::serial::Serial;
use core::fmt::{self, Write};
use spin::Mutex;

static CONSOLE: Mutex<Option<Serial>> = Mutex::new(None);

pub fn init() {
    *CONSOLE.lock() = Serial::com1();
}

pub fn print(args: fmt::Arguments) {
    if let Some(serial) = CONSOLE.lock().as_mut() {
        let _ = serial.write_fmt(args);
    }
}

/// For the panic path only: a panic inside `print` would otherwise deadlock
/// the report that explains it.
pub fn force_unlock() {
    if CONSOLE.is_locked() {
        crate::arch::x86_64::cpu::force_unlock(&CONSOLE);
    }
}

macro_rules! kprintln {
    () => { $crate::console::print(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::console::print(format_args!("{}\n", format_args!($($arg)*))) };
}
