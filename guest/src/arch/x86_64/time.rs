//! Clocks: the PIT as the one reference of known frequency, the TSC for
//! cheap, fine-grained measurements once calibrated against it.
use core::sync::atomic::{AtomicU64, Ordering};
use x86_64::instructions::port::Port;

const PIT_HZ: u64 = 1_193_182;

static TSC_PER_US_X1000: AtomicU64 = AtomicU64::new(0);

/// Busy-wait `us` microseconds on PIT channel 0, polling its counter (no
/// interrupt, no speaker gate: that works on `microvm` too, which has no
/// port 0x61). Interrupts from the PIT are masked (the bootloader masks the
/// legacy PIC and IOAPIC), so reprogramming channel 0 disturbs nothing.
pub fn pit_wait_us(us: u64) {
    let mut cmd = Port::<u8>::new(0x43);
    let mut ch0 = Port::<u8>::new(0x40);
    let target = PIT_HZ * us / 1_000_000;
    // SAFETY: the PIT's command and channel-0 ports; mode 2 (rate generator)
    // with reload 0 (= 65536) counts down forever, which we only read.
    unsafe {
        cmd.write(0b0011_0100);
        ch0.write(0);
        ch0.write(0);
    }
    let read = || -> u16 {
        let mut cmd = Port::<u8>::new(0x43);
        let mut ch0 = Port::<u8>::new(0x40);
        // SAFETY: latch command for channel 0, then the two data bytes.
        unsafe {
            cmd.write(0);
            let lo = ch0.read();
            let hi = ch0.read();
            u16::from_le_bytes([lo, hi])
        }
    };
    let mut last = read();
    let mut elapsed = 0u64;
    while elapsed < target {
        let now = read();
        elapsed += u64::from(last.wrapping_sub(now));
        last = now;
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

/// Calibrate the TSC and the LAPIC timer against the PIT over one window
/// of `us` microseconds.
pub fn calibrate(us: u64) {
    let mut cycles = 0;
    super::lapic::calibrate(us, || {
        let start = tsc();
        pit_wait_us(us);
        cycles = tsc() - start;
    });
    let rate = kcore::clock::Rate::measured(cycles, us);
    TSC_PER_US_X1000.store(rate.per_us_x1000(), Ordering::Relaxed);
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
        r => kcore::clock::Rate::from_per_us_x1000(r).cycles_to_ns(cycles),
    }
}

/// Nanoseconds since an arbitrary origin, from the TSC.
pub fn now_ns() -> u64 {
    cycles_to_ns(tsc())
}
