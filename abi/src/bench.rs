//! The record `bench.*` prints per measured cell (`BENCH-CELL`): one stack
//! strategy under one free mode, its cost per task and the per-CPU stack
//! cache's hits. The runner builds its tables and ratios from these.

use crate::kinds::{BenchFamily, FreeMode, Strategy};
use crate::record::Record;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BenchCell<'a> {
    pub scenario: &'a str,
    pub family: BenchFamily,
    pub strategy: Strategy,
    pub free: FreeMode,
    /// Samples taken.
    pub samples: u64,
    /// CPUs the tasks ran on (`fork_heavy`).
    pub cpus: Option<u64>,
    /// RCU grace periods those tasks' stacks waited on (`fork_heavy`).
    pub grace_periods: Option<u64>,
    pub median_cycles: u64,
    pub p90_cycles: u64,
    pub mean_cycles: u64,
    pub median_ns: u64,
    pub p90_ns: u64,
    pub cache_hits: u64,
    pub cache_lookups: u64,
}

impl Record for BenchCell<'_> {
    const PREFIX: &'static str = "BENCH-CELL ";
    fn scenario(&self) -> &str {
        self.scenario
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::round_trip;

    #[test]
    fn a_cell_round_trips() {
        let mut buf = [0u8; 1024];
        let mut cell = BenchCell {
            scenario: "bench.fork_heavy",
            family: BenchFamily::ForkHeavy,
            strategy: Strategy::VmapCached,
            free: FreeMode::RcuCache,
            samples: 10_000,
            cpus: Some(4),
            grace_periods: Some(31),
            median_cycles: 66_500,
            p90_cycles: 90_000,
            mean_cycles: 120_000,
            median_ns: 27_000,
            p90_ns: 36_000,
            cache_hits: 270,
            cache_lookups: 10_000,
        };
        round_trip(&cell, &mut buf);
        cell.cpus = None;
        cell.grace_periods = None;
        round_trip(&cell, &mut buf);
    }
}
