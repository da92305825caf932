//! A microsecond clock for the bounded waits of AP start-up: the TSC,
//! calibrated once against PIT channel 2 over one millisecond.
use crate::cpu;

const PIT_HZ: u64 = 1_193_182;
/// Used when the PIT does not answer (e.g. `-M microvm,pit=off`): only the
/// timeouts of failure paths depend on it.
const FALLBACK_TICKS_PER_US: u64 = 3000;

pub struct Clock {
    ticks_per_us: u64,
}

impl Clock {
    pub fn calibrate() -> Clock {
        let count = PIT_HZ / 1000;
        let gate = cpu::inb(0x61);
        cpu::outb(0x61, (gate & !0x02) | 0x01); // gate on, speaker off
        cpu::outb(0x43, 0xb0); // channel 2, lo/hi byte, mode 0
        cpu::outb(0x42, count as u8);
        cpu::outb(0x42, (count >> 8) as u8);
        let start = cpu::rdtsc();
        let mut end = start;
        // Mode 0 raises OUT2 (bit 5 of port 0x61) at terminal count. The
        // bound keeps a missing PIT from stalling the boot.
        while cpu::inb(0x61) & 0x20 == 0 && end - start < 100_000_000 {
            end = cpu::rdtsc();
        }
        let ticks_per_us = (end - start) / 1000;
        Clock {
            ticks_per_us: if ticks_per_us < 100 {
                FALLBACK_TICKS_PER_US
            } else {
                ticks_per_us
            },
        }
    }

    pub fn now_us(&self) -> u64 {
        cpu::rdtsc() / self.ticks_per_us
    }

    /// Polls `done` until it holds or `timeout_us` passes; returns whether it held.
    pub fn wait_until(&self, timeout_us: u64, mut done: impl FnMut() -> bool) -> bool {
        let deadline = self.now_us() + timeout_us;
        loop {
            if done() {
                return true;
            }
            if self.now_us() >= deadline {
                return false;
            }
            core::hint::spin_loop();
        }
    }
}
