//! `runner test`'s cost: the default suite booted as `runner test` boots it
//! (same plan, same checks), its wall time, and the scenarios that cost the
//! most by their own time (the guest's TSC, `# time:`), so a slow scenario
//! is seen as itself, not as its boot.

use crate::cli::Options;
use crate::fatal::Fatal;
use crate::record::{BootRecord, Mode};
use crate::session::{self, Setup};
use crate::status;
use serde::Serialize;
use std::time::Instant;

/// How many of the slowest scenarios `bench` lists.
const SLOWEST: usize = 10;

#[derive(Debug, Serialize)]
pub struct TestSuite {
    pub boots: usize,
    pub results: usize,
    /// Wall time of all the boots, one after another, as `runner test`.
    pub wall_s: f64,
    /// The slowest scenarios by their own time, slowest first.
    pub slowest: Vec<ScenarioCost>,
}

#[derive(Debug, PartialEq, Serialize)]
pub struct ScenarioCost {
    pub scenario: &'static str,
    pub smp: u32,
    pub boot_path: &'static str,
    pub own_ms: f64,
}

pub fn measure(setup: &Setup, options: &Options) -> Result<TestSuite, Fatal> {
    let (boots, _skipped) = crate::select::test_plan(false, options)?;
    let start = Instant::now();
    let records = session::boot_all(Mode::Test, setup, boots, options)?;
    let wall_s = start.elapsed().as_secs_f64();
    if session::exit_status(Mode::Test, &records) != status::OK {
        return Err(Fatal {
            status: status::TEST_FAILURE,
            message: "the test suite did not pass: its time is not a benchmark \
                      (run `runner test` to see why)"
                .into(),
        });
    }
    let suite = TestSuite {
        boots: records.len(),
        results: records.iter().map(|r| r.results.len()).sum(),
        wall_s,
        slowest: slowest(&records, SLOWEST),
    };
    println!(
        "runner test ({} boots, {} results): {:.2} s wall; slowest scenarios by their own time:",
        suite.boots, suite.results, suite.wall_s
    );
    for c in &suite.slowest {
        println!(
            "  {:>9.1} ms  {} smp={} [{}]",
            c.own_ms, c.scenario, c.smp, c.boot_path
        );
    }
    Ok(suite)
}

fn slowest(records: &[BootRecord], n: usize) -> Vec<ScenarioCost> {
    let mut costs: Vec<ScenarioCost> = records
        .iter()
        .flat_map(|r| {
            r.results.iter().filter_map(move |res| {
                Some(ScenarioCost {
                    scenario: res.scenario.name,
                    smp: r.boot.smp,
                    boot_path: r.boot.path.as_str(),
                    own_ms: res.own_time()?.as_secs_f64() * 1e3,
                })
            })
        })
        .collect();
    costs.sort_by(|a, b| b.own_ms.total_cmp(&a.own_ms));
    costs.truncate(n);
    costs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::process::Ended;
    use crate::output::summary::tests::record;
    use abi::GuestExit;

    #[test]
    fn the_slowest_by_their_own_time_first_and_untimed_left_out() {
        let boot = record(
            &["boot.smoke", "core.leak", "core.preempt"],
            Ended::Exited(GuestExit::Pass.qemu_status()),
            "KTAP version 1\n1..3\n# time: 1.500 ms\nok 1 boot.smoke\n\
             # time: 250.000 ms\nok 2 core.leak\nok 3 core.preempt\n",
        );
        let costs = slowest(&[boot], 10);
        let names: Vec<(&str, f64)> = costs.iter().map(|c| (c.scenario, c.own_ms)).collect();
        assert_eq!(names, [("core.leak", 250.0), ("boot.smoke", 1.5)]);
        assert_eq!((costs[0].smp, costs[0].boot_path), (4, "direct"));
        let boot = record(
            &["boot.smoke", "core.leak"],
            Ended::Exited(GuestExit::Pass.qemu_status()),
            "KTAP version 1\n1..2\n# time: 1.500 ms\nok 1 boot.smoke\n# time: 2.000 ms\nok 2 core.leak\n",
        );
        assert_eq!(slowest(&[boot], 1)[0].scenario, "core.leak");
    }
}
