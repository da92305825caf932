//! The console: formatted output to COM1, one writer at a time.
//!
//! Every CPU prints through one lock, with interrupts off while it is held,
//! so that lines never interleave. A fault or panic that finds its own CPU
//! holding it (it faulted while printing), or a holder silent for a minute,
//! prints through a spare console instead (`SPARES`, each with its own
//! handle on the port and its own buffer), so a CPU that faulted while
//! printing still gets its last words out without anyone's lock being
//! broken: the two writers can only interleave bytes on the wire. The records the runner
//! reads (`abi::Record`) are encoded in a buffer that lives under the same
//! lock: fault handlers must not allocate, and a record of a full backtrace
//! is too big for the exception stacks it is written from.
use crate::arch::x86_64::serial::Serial;
use crate::sync::{IrqGuard, IrqLock};
use abi::Record;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicUsize, Ordering};

/// Room for the longest record (`abi::record::BUFFER`).
const RECORD_BUFFER: usize = abi::record::BUFFER;

pub struct Console {
    serial: Option<Serial>,
    record: [u8; RECORD_BUFFER],
}

// An `IrqLock`, as Linux's console and log-buffer locks are taken with
// interrupts off: the holder can be neither preempted nor interrupted on its
// own CPU, so the only code that can find the console held by its own CPU
// is a fault or NMI taken while printing, which must not wait for it.
static CONSOLE: IrqLock<Console> = IrqLock::new(Console::new()).named("console_lock");

/// Where a report goes when `CONSOLE` cannot be had (see the module doc):
/// two, for a fault inside the report of a fault while printing.
static SPARES: [IrqLock<Console>; 2] =
    [const { IrqLock::new(Console::new()).named("console_spare") }; 2];

impl Console {
    const fn new() -> Console {
        Console {
            serial: None,
            record: [0; RECORD_BUFFER],
        }
    }
}

pub fn init() {
    for spare in &SPARES {
        spare.lock().serial = Serial::com1();
    }
    CONSOLE.lock().serial = Serial::com1();
}

pub fn print(args: fmt::Arguments) {
    let mut held = Locked::new(CONSOLE.lock());
    let _ = held.write_fmt(args);
}

/// Print one record on a line of its own.
pub fn record<R: Record>(r: &R) {
    report(|w| w.record(r))
}

/// A writer that holds the console for a whole multi-line report, so that
/// another CPU's lines cannot land in the middle of an oops.
pub struct Locked<'a> {
    guard: IrqGuard<'a, Console>,
    /// Holds `CONSOLE` (not a spare): `OWNER` says so until the drop.
    main: bool,
}

/// The CPU holding the console (`NOBODY`, or one before the per-CPU
/// blocks exist): a fault handler that finds the console locked by its own
/// CPU knows the holder will never let go.
static OWNER: AtomicUsize = AtomicUsize::new(NOBODY);
const NOBODY: usize = usize::MAX;
const EARLY: usize = usize::MAX - 1;

fn this_cpu() -> usize {
    crate::arch::x86_64::percpu::try_this().map_or(EARLY, |p| p.id)
}

impl<'a> Locked<'a> {
    fn new(guard: IrqGuard<'a, Console>) -> Self {
        OWNER.store(this_cpu(), Ordering::Relaxed);
        Locked { guard, main: true }
    }
    fn spare(guard: IrqGuard<'a, Console>) -> Self {
        Locked { guard, main: false }
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        if self.main {
            OWNER.store(NOBODY, Ordering::Relaxed);
        }
    }
}

impl Write for Locked<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        match self.guard.serial.as_mut() {
            Some(serial) => serial.write_str(s),
            None => Ok(()),
        }
    }
}

impl Locked<'_> {
    /// `PREFIX{json}` and a newline. A record too long for the buffer still
    /// gets a line naming its scenario, which the runner cannot read as the
    /// record: the loss shows as a failed check, not as silence.
    pub fn record<R: Record>(&mut self, r: &R) {
        let Console { serial, record } = &mut *self.guard;
        let Some(serial) = serial.as_mut() else {
            return;
        };
        let _ = match abi::record::encode(r, record) {
            Ok(line) => writeln!(serial, "{line}"),
            Err(_) => writeln!(serial, "{}", abi::record::too_long_line(r)),
        };
    }
}

/// Run `f` with a console held. From fault handlers: if this CPU holds
/// the console (it faulted while printing), write through a spare at once,
/// a line interleaved with the cut-off one beats a silent hang. Another
/// CPU's hold is waited for, however long its report takes: where every
/// port write traps to a hypervisor (nested KVM) an oops takes a second to
/// print, and two writers at once garble both reports (`stack.all_cpus`,
/// every CPU at once). Only a holder silent for a minute of TSC time (at
/// 1 GHz or more) is presumed dead. (Should this CPU hold the spares as well,
/// three faults deep in printing, this waits for good.)
pub fn report<R>(f: impl FnOnce(&mut Locked) -> R) -> R {
    const DEAD_HOLDER_CYCLES: u64 = 60_000_000_000;
    let me = this_cpu();
    let start = crate::arch::x86_64::time::tsc();
    loop {
        if let Some(g) = CONSOLE.try_lock() {
            return f(&mut Locked::new(g));
        }
        let holder = OWNER.load(Ordering::Relaxed);
        let waited = crate::arch::x86_64::time::tsc().wrapping_sub(start);
        if (holder == me && me != EARLY) || waited > DEAD_HOLDER_CYCLES {
            if let Some(g) = SPARES.iter().find_map(|s| s.try_lock()) {
                return f(&mut Locked::spare(g));
            }
        }
        core::hint::spin_loop();
    }
}

/// Print from the panic path: a panic inside `print` finds the console held
/// by its own CPU, and must still be told.
pub fn print_panicking(args: fmt::Arguments) {
    report(|w| {
        let _ = w.write_fmt(args);
    })
}

macro_rules! kprintln {
    () => { $crate::console::print(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::console::print(format_args!("{}\n", format_args!($($arg)*))) };
}
