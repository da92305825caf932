//! Where a boot's time goes: the guest's `BOOT-TIMELINE` stages
//! (`abi::timeline`), the median of each over a path's runs, beside the rest
//! of the wall time (QEMU's own start-up, the scenario, the exit).

use abi::timeline::{BootTimeline, Stage};
use serde::Serialize;
use std::time::Duration;

/// One stage's median length on one path.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StageMs {
    pub stage: &'static str,
    pub median_ms: f64,
}

/// The median of each stage's own length over `runs` (the stages, not
/// their ends, so one slow stage does not shift the rest), then the wall
/// time left over, from `wall`'s median.
pub fn medians(runs: &[BootTimeline], wall: Duration) -> Vec<StageMs> {
    if runs.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<StageMs> = Stage::ALL
        .iter()
        .enumerate()
        .map(|(i, stage)| StageMs {
            stage: stage.as_str(),
            median_ms: median(runs.iter().map(|t| t.lengths()[i].1).collect()) as f64 / 1e3,
        })
        .collect();
    let ready = median(runs.iter().map(|t| t.ready_us).collect()) as f64 / 1e3;
    out.push(StageMs {
        stage: REST,
        median_ms: (wall.as_secs_f64() * 1e3 - ready).max(0.0),
    });
    out
}

/// The row for what the guest did not stamp.
pub const REST: &str = "rest";

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// The table `bench` prints: a row per stage, a column per path.
pub fn table(columns: &[(&str, &[StageMs])]) -> Vec<String> {
    let mut lines = vec![format!(
        "{:<8}{}",
        "stage",
        columns
            .iter()
            .map(|(path, _)| format!("{path:>13}"))
            .collect::<String>()
    )];
    let rows = columns.iter().map(|(_, s)| s.len()).max().unwrap_or(0);
    for row in 0..rows {
        let name = columns
            .iter()
            .find_map(|(_, s)| s.get(row))
            .map_or("", |s| s.stage);
        let cells: String = columns
            .iter()
            .map(|(_, s)| match s.get(row) {
                Some(s) => format!("{:>10.1} ms", s.median_ms),
                None => format!("{:>13}", "-"),
            })
            .collect();
        lines.push(format!("{name:<8}{cells}"));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeline(entry: u64, clock: u64) -> BootTimeline {
        BootTimeline::from_stages(|s| match s {
            Stage::Entry => entry,
            Stage::Memory | Stage::Config | Stage::Cpu => entry + 1_000,
            _ => entry + 1_000 + clock,
        })
    }

    #[test]
    fn each_stage_is_its_own_median_and_the_rest_is_the_wall_left() {
        let runs = [
            timeline(2_000, 5_000),
            timeline(9_000, 4_000),
            timeline(3_000, 6_000),
        ];
        let m = medians(&runs, Duration::from_millis(40));
        let get = |name: &str| m.iter().find(|s| s.stage == name).unwrap().median_ms;
        assert_eq!(get("entry"), 3.0);
        assert_eq!(get("memory"), 1.0);
        assert_eq!(get("clock"), 5.0);
        assert_eq!(get("tick"), 0.0);
        // ready: 8 000, 14 000, 10 000 µs: median 10 ms of the 40.
        assert_eq!(get(REST), 30.0);
        assert_eq!(m.len(), Stage::ALL.len() + 1);
        assert!(medians(&[], Duration::ZERO).is_empty());
    }

    #[test]
    fn the_table_has_a_row_per_stage_and_a_column_per_path() {
        let direct = medians(&[timeline(2_000, 5_000)], Duration::from_millis(40));
        let lines = table(&[("direct", &direct), ("limine-bios", &[])]);
        assert_eq!(lines.len(), 1 + direct.len());
        assert_eq!(lines[0], "stage          direct  limine-bios");
        assert_eq!(lines[1], "entry          2.0 ms            -");
        assert!(lines.last().unwrap().starts_with("rest          32.0 ms"));
    }
}
