//! Clocks: the PIT as the one reference of known frequency, the TSC for
//! cheap, fine-grained measurements once calibrated against it.
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use kcore::clock::{self, Sample};
use x86_64::instructions::port::Port;

const PIT_HZ: u64 = 1_193_182;

static TSC_PER_US_X1000: AtomicU64 = AtomicU64::new(0);

/// PIT channel 0 as a running count of its ticks. It counts down from
/// 65536 forever (mode 2, reload 0), which we only read: polled, with no
/// interrupt and no speaker gate, so it works on `microvm` too, which has
/// no port 0x61. Interrupts from the PIT are masked (the bootloader masks
/// the legacy PIC and IOAPIC), so reprogramming channel 0 disturbs nothing.
struct Pit(clock::Unwrap16);

impl Pit {
    fn start() -> Self {
        let mut cmd = Port::<u8>::new(0x43);
        let mut ch0 = Port::<u8>::new(0x40);
        // SAFETY: the PIT's command and channel-0 ports: mode 2 with
        // reload 0, nothing else.
        unsafe {
            cmd.write(0b0011_0100);
            ch0.write(0);
            ch0.write(0);
        }
        Self(clock::Unwrap16::new(Self::latch()))
    }

    fn latch() -> u16 {
        let mut cmd = Port::<u8>::new(0x43);
        let mut ch0 = Port::<u8>::new(0x40);
        // SAFETY: latch command for channel 0, then its two data bytes.
        unsafe {
            cmd.write(0);
            let lo = ch0.read();
            let hi = ch0.read();
            u16::from_le_bytes([lo, hi])
        }
    }

    /// Ticks since `start`, if polled at least once a period (55 ms).
    fn ticks(&mut self) -> u64 {
        self.0.advance(Self::latch())
    }
}

/// Busy-wait `us` microseconds on the PIT.
pub fn pit_wait_us(us: u64) {
    let mut pit = Pit::start();
    let target = PIT_HZ * us / 1_000_000;
    while pit.ticks() < target {
        core::hint::spin_loop();
    }
}

/// A TSC read ordered after everything before it (lfence; rdtsc), as for
/// benchmarks: the measured code cannot leak out of the interval.
pub fn tsc() -> u64 {
    // SAFETY: lfence and rdtsc have no memory effects; TSC exists on x86_64.
    unsafe {
        core::arch::x86_64::_mm_lfence();
        core::arch::x86_64::_rdtsc()
    }
}

/// One read of another clock, bracketed by the TSC.
fn bracketed(read: impl FnOnce() -> u64) -> Sample {
    let before = tsc();
    let ticks = read();
    Sample {
        before,
        after: tsc(),
        ticks,
    }
}

/// How the TSC calibration went (see `kcore::clock` for why it takes
/// several windows): windows taken, whether enough agreed, and the length
/// of the boot window when one window confirmed it (else 0).
static WINDOWS: AtomicU64 = AtomicU64::new(0);
static AGREED: AtomicBool = AtomicBool::new(false);
static BOOT_WINDOW_US: AtomicU64 = AtomicU64::new(0);

/// The PIT window the boot runs inside (`open_boot_window`) and its start.
static BOOT_WINDOW: spin::Mutex<Option<(Pit, Sample)>> = spin::Mutex::new(None);

/// Open a calibration window that the boot's first stages run inside, so
/// that the TSC's calibration waits for one short window only (see
/// `kcore::clock::calibrate_confirming`).
pub fn open_boot_window() {
    let mut pit = Pit::start();
    let start = clock::narrowest((0..clock::READS_PER_END).map(|_| bracketed(|| pit.ticks())));
    *BOOT_WINDOW.lock() = start.map(|s| (pit, s));
}

/// Calibrate the TSC against the PIT: the boot window if one window of
/// `confirm_us` agrees with it, else windows of `window_us` until enough
/// agree; then the LAPIC timer against the TSC over `confirm_us`.
pub fn calibrate(confirm_us: u64, window_us: u64) {
    let boot = BOOT_WINDOW.lock().take().and_then(|(mut pit, start)| {
        let end = clock::narrowest((0..clock::READS_PER_END).map(|_| bracketed(|| pit.ticks())))?;
        let us = end.ticks.saturating_sub(start.ticks) * 1_000_000 / PIT_HZ;
        Some((clock::rate_over(start, end, PIT_HZ)?, us))
    });
    let mut us = confirm_us;
    let c = clock::calibrate_confirming(boot.map(|(rate, _)| rate), || {
        let mut pit = Pit::start();
        let ticks = PIT_HZ * core::mem::replace(&mut us, window_us) / 1_000_000;
        clock::window(|| bracketed(|| pit.ticks()), ticks, PIT_HZ)
    })
    .expect("the PIT does not count: there is no clock to calibrate the TSC against");
    TSC_PER_US_X1000.store(c.rate.per_us_x1000(), Ordering::Relaxed);
    WINDOWS.store(c.windows as u64, Ordering::Relaxed);
    AGREED.store(c.agreed, Ordering::Relaxed);
    if c.confirmed_long {
        BOOT_WINDOW_US.store(boot.map_or(0, |(_, us)| us), Ordering::Relaxed);
    }
    let us = confirm_us;
    super::lapic::calibrate(|elapsed| {
        let mut end_of =
            || clock::narrowest((0..clock::READS_PER_END).map(|_| bracketed(&mut *elapsed)));
        let start = end_of().expect("READS_PER_END > 0");
        let until = start.after + c.rate.per_us_x1000() * us / 1000;
        while tsc() < until {
            core::hint::spin_loop();
        }
        let end = end_of().expect("READS_PER_END > 0");
        clock::ticks_per_ms(c.rate, start, end)
    });
}

/// PIT windows the TSC calibration took, whether enough of them agreed
/// (else the rate is their median), and the boot window's length in µs if
/// the rate is that window's (else 0).
pub fn calibration_windows() -> (u64, bool, u64) {
    (
        WINDOWS.load(Ordering::Relaxed),
        AGREED.load(Ordering::Relaxed),
        BOOT_WINDOW_US.load(Ordering::Relaxed),
    )
}

/// TSC cycles per microsecond, times 1000.
pub fn tsc_per_us_x1000() -> u64 {
    TSC_PER_US_X1000.load(Ordering::Relaxed)
}

/// `cycles` of the TSC in nanoseconds (0 before calibration). The TSC may
/// be far from zero (under KVM it is the host's): see `kcore::clock`.
pub fn cycles_to_ns(cycles: u64) -> u64 {
    match tsc_per_us_x1000() {
        0 => 0,
        r => clock::Rate::from_per_us_x1000(r).cycles_to_ns(cycles),
    }
}

/// Nanoseconds since an arbitrary origin, from the TSC.
pub fn now_ns() -> u64 {
    cycles_to_ns(tsc())
}
