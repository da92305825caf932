//! The boot's stages, each stamped with the TSC as it ends, and printed as
//! one `BOOT-TIMELINE` record (`abi::timeline`) before the first scenario:
//! `make bench` shows where a boot's time goes. The stamps are raw cycles
//! until the clock is calibrated; they are converted only when printed.

use crate::arch::x86_64::time;
use abi::timeline::{BootTimeline, Stage};

pub struct Timeline {
    cycles: [u64; Stage::ALL.len()],
}

impl Timeline {
    /// Stamp `Stage::Entry`: the first thing the kernel does.
    pub fn start() -> Self {
        let mut t = Timeline {
            cycles: [0; Stage::ALL.len()],
        };
        t.end(Stage::Entry);
        t
    }

    pub fn end(&mut self, stage: Stage) {
        self.cycles[stage.index()] = time::tsc();
    }

    /// Print the record; needs the calibrated clock.
    pub fn report(&self) {
        let us = |stage: Stage| time::cycles_to_ns(self.cycles[stage.index()]) / 1000;
        crate::console::record(&BootTimeline::from_stages(us));
    }
}
