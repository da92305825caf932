//! Where a boot's time goes before its first scenario (`BOOT-TIMELINE`).
//!
//! The guest reads the TSC at the end of each stage of its start and prints
//! one record just before the scenarios run. Each figure is microseconds
//! since the TSC's zero, which QEMU sets at the CPU's reset: so `entry`,
//! the first, is what QEMU's firmware and the boot loader took to hand over
//! (the direct loader's few instructions, or SeaBIOS/OVMF and Limine), and
//! each later one adds the guest's own stage. `make bench` prints them per
//! boot path beside the boot's wall time, the rest of which is QEMU's own
//! start-up and exit.

use crate::record::Record;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootTimeline {
    /// `kernel_main` entered: the loader's hand-off.
    pub entry_us: u64,
    /// The boot information read and the memory manager up (frames,
    /// paging, heap, vmalloc).
    pub memory_us: u64,
    /// The command line applied and echoed (`GUEST-CONFIG`).
    pub config_us: u64,
    /// The boot CPU's tables (GDT, IDT, TSS) and its LAPIC.
    pub cpu_us: u64,
    /// The TSC calibrated against the PIT, the LAPIC timer against the TSC.
    pub clock_us: u64,
    /// The boot flow adopted as the init task, the idle task made.
    pub tasks_us: u64,
    /// The tick started.
    pub tick_us: u64,
    /// The other CPUs started and online.
    pub aps_us: u64,
    /// RCU, interrupts on, the recovery worker: the first scenario is next.
    pub ready_us: u64,
}

crate::named_enum! {
    /// The stages, in boot order: the guest stamps them by these, the
    /// record carries them as fields (`make bench` prints these names).
    pub enum Stage {
        Entry = "entry",
        Memory = "memory",
        Config = "config",
        Cpu = "cpu",
        Clock = "clock",
        Tasks = "tasks",
        Tick = "tick",
        Aps = "aps",
        Ready = "ready",
    }
}

impl BootTimeline {
    /// The record of stages that ended at `us(stage)`.
    pub fn from_stages(us: impl Fn(Stage) -> u64) -> Self {
        let mut t = BootTimeline::default();
        for &stage in Stage::ALL {
            *t.field(stage) = us(stage);
        }
        t
    }

    fn field(&mut self, stage: Stage) -> &mut u64 {
        match stage {
            Stage::Entry => &mut self.entry_us,
            Stage::Memory => &mut self.memory_us,
            Stage::Config => &mut self.config_us,
            Stage::Cpu => &mut self.cpu_us,
            Stage::Clock => &mut self.clock_us,
            Stage::Tasks => &mut self.tasks_us,
            Stage::Tick => &mut self.tick_us,
            Stage::Aps => &mut self.aps_us,
            Stage::Ready => &mut self.ready_us,
        }
    }

    /// Each stage with the time it ended at, in boot order.
    pub fn stages(&self) -> [(&'static str, u64); 9] {
        let mut copy = self.clone();
        core::array::from_fn(|i| {
            let s = Stage::ALL[i];
            (s.as_str(), *copy.field(s))
        })
    }

    /// Each stage with its own length (the first: from the TSC's zero).
    pub fn lengths(&self) -> [(&'static str, u64); 9] {
        let mut out = self.stages();
        let mut before = 0;
        for (_, t) in out.iter_mut() {
            let end = *t;
            *t = end.saturating_sub(before);
            before = end;
        }
        out
    }
}

impl Record for BootTimeline {
    const PREFIX: &'static str = "BOOT-TIMELINE ";
    /// About the whole boot, no one scenario.
    fn scenario(&self) -> &str {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::round_trip_owned;

    #[test]
    fn a_timeline_round_trips_and_its_stages_add_up() {
        let t = BootTimeline {
            entry_us: 900,
            memory_us: 4_000,
            config_us: 4_100,
            cpu_us: 4_300,
            clock_us: 9_400,
            tasks_us: 9_500,
            tick_us: 9_600,
            aps_us: 9_600,
            ready_us: 10_000,
        };
        let line = round_trip_owned(&t);
        let ends = [900, 4_000, 4_100, 4_300, 9_400, 9_500, 9_600, 9_600, 10_000];
        let rebuilt =
            BootTimeline::from_stages(|s| ends[Stage::ALL.iter().position(|&x| x == s).unwrap()]);
        assert_eq!(rebuilt, t);
        assert!(
            line.starts_with("BOOT-TIMELINE {\"entry_us\":900,"),
            "{line}"
        );
        let lengths = t.lengths();
        assert_eq!(lengths[0], ("entry", 900));
        assert_eq!(lengths[4], ("clock", 5_100));
        assert_eq!(lengths[7], ("aps", 0));
        assert_eq!(lengths.iter().map(|(_, us)| us).sum::<u64>(), t.ready_us);
    }
}
