//! The configuration a guest runs with, as both sides see it.
//!
//! The runner passes the stack knobs on the command line (`cmdline`); the
//! ranges the guest accepts for them are here, once: the runner refuses a
//! value outside them before anything boots, and the guest ignores one if
//! it gets it anyway (a hand-written command line). After applying them the
//! guest echoes what it actually uses (`GUEST-CONFIG`, before the KTAP
//! header), so a run is never reported as testing what it did not.

use crate::kinds::{FreeMode, Strategy};
use crate::named_enum;
use crate::record::Record;
use core::fmt;
use serde::{Deserialize, Serialize};

/// Task-stack sizes the guest accepts: whole pages, one page to 1 MiB.
pub const STACK_SIZE_MIN: u64 = 4096;
pub const STACK_SIZE_MAX: u64 = 1 << 20;
pub const STACK_SIZE_ALIGN: u64 = 4096;

/// Guard pages on each side of a stack the guest accepts (0 turns them off).
pub const GUARD_PAGES_MAX: u64 = 64;

/// A value the guest would not use, and what it accepts instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    pub accepted: &'static str,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the guest accepts {}", self.accepted)
    }
}

/// `bytes` as a task-stack size, if the guest accepts it.
pub fn stack_size(bytes: u64) -> Result<u64, Refused> {
    let ok = (STACK_SIZE_MIN..=STACK_SIZE_MAX).contains(&bytes)
        && bytes.is_multiple_of(STACK_SIZE_ALIGN);
    ok.then_some(bytes).ok_or(Refused {
        accepted: "4096..=1048576 bytes, a multiple of 4096",
    })
}

/// `n` as a guard-page count, if the guest accepts it.
pub fn guard_pages(n: u64) -> Result<u64, Refused> {
    (n <= GUARD_PAGES_MAX).then_some(n).ok_or(Refused {
        accepted: "0..=64 guard pages",
    })
}

/// `percent` as the near-miss threshold, if the guest accepts it (100: a
/// task would have to use more than all of its stack, so none is reported).
pub fn near_miss_percent(percent: u64) -> Result<u64, Refused> {
    (1..=100)
        .contains(&percent)
        .then_some(percent)
        .ok_or(Refused {
            accepted: "1..=100 percent",
        })
}

named_enum! {
    /// Where task structs live (`cmdline::TASK_STRUCTS`).
    pub enum TaskStructs {
        /// The kernel heap (the default).
        Heap = "heap",
        /// A vmalloc page each, unmapped when freed: a use after free faults.
        Vmalloc = "vmalloc",
    }
}

named_enum! {
    /// How much work the soak scenarios do (`cmdline::WORKLOAD`): the
    /// loops whose cost is repetition rather than a check (`core.leak`'s
    /// spawn/exit cycles, `life.stress`'s tasks, `core.spawn_join`).
    pub enum Workload {
        /// A tenth of the full count (the default): every check is made, on
        /// enough iterations that one leaked object per cycle still shows,
        /// and the suite's time goes on verdicts.
        Check = "check",
        /// The full count (`make soak`, `runner test --soak`).
        Soak = "soak",
    }
}

/// What the guest echoes at boot: the configuration it runs with, after
/// the command line was applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestConfig {
    pub stack_strategy: Strategy,
    pub stack_size: u64,
    pub guard_pages: u64,
    pub stack_free: FreeMode,
    pub task_structs: TaskStructs,
    pub workload: Workload,
    /// The share of its stack (percent) above which an exiting task is a
    /// near miss (`usage`). Logs older than the field read as the default.
    #[serde(default = "near_miss_default")]
    pub near_miss_percent: u64,
}

fn near_miss_default() -> u64 {
    crate::usage::NEAR_MISS_DEFAULT
}

impl Record for GuestConfig {
    const PREFIX: &'static str = "GUEST-CONFIG ";
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
    fn the_config_round_trips() {
        let config = GuestConfig {
            stack_strategy: Strategy::VmapCached,
            stack_size: 16384,
            guard_pages: 1,
            stack_free: FreeMode::RcuCache,
            task_structs: TaskStructs::Vmalloc,
            workload: Workload::Soak,
            near_miss_percent: 75,
        };
        let line = round_trip_owned(&config);
        assert!(
            line.starts_with("GUEST-CONFIG {\"stack_strategy\":\"vmap-cached\","),
            "{line}"
        );
    }

    #[test]
    fn ranges_are_whole_pages_and_bounded() {
        for ok in [4096, 8192, 16384, 1 << 20] {
            assert_eq!(stack_size(ok), Ok(ok));
        }
        for bad in [0, 4095, 5000, (1 << 20) + 4096, u64::MAX] {
            assert!(stack_size(bad).is_err(), "{bad}");
        }
        assert_eq!(guard_pages(0), Ok(0));
        assert_eq!(guard_pages(64), Ok(64));
        assert!(guard_pages(65).is_err());
        assert!(guard_pages(1_000_000).is_err());
        assert_eq!(near_miss_percent(90), Ok(90));
        assert_eq!(near_miss_percent(100), Ok(100));
        assert!(near_miss_percent(0).is_err());
        assert!(near_miss_percent(101).is_err());
    }

    #[test]
    fn an_echo_from_before_the_threshold_reads_as_the_default() {
        let old = r#"{"stack_strategy":"vmap-cached","stack_size":16384,"guard_pages":1,"stack_free":"exit","task_structs":"heap","workload":"check"}"#;
        let config: GuestConfig = serde_json::from_str(old).unwrap();
        assert_eq!(config.near_miss_percent, crate::usage::NEAR_MISS_DEFAULT);
    }
}
