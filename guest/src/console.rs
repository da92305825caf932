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

/// A writer that holds the console for a whole multi-line report, so that
/// another CPU's lines cannot land in the middle of an oops.
pub struct Locked<'a>(spin::MutexGuard<'a, Option<Serial>>);

impl Write for Locked<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        match self.0.as_mut() {
            Some(serial) => serial.write_str(s),
            None => Ok(()),
        }
    }
}

/// Run `f` with the console held. From fault handlers: if the console stays
/// locked for long (this CPU faulted while printing), take it anyway — a
/// garbled line beats a silent hang.
pub fn report<R>(f: impl FnOnce(&mut Locked) -> R) -> R {
    for _ in 0..10_000_000u32 {
        if let Some(g) = CONSOLE.try_lock() {
            return f(&mut Locked(g));
        }
        core::hint::spin_loop();
    }
    force_unlock();
    f(&mut Locked(CONSOLE.lock()))
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
