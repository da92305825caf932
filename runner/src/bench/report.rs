//! What `bench` measured, for machines and for eyes: `bench.json` and the
//! `stacks.svg` chart under `<target>/bench/`.

use super::rows::{self, Row};
use super::svg;
use serde::{Serialize, Serializer};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Everything one `bench` run measured. Steps that did not run (or failed)
/// stay empty or `None`, so a report of a failed run shows how far it got.
/// The version of `bench.json`'s shape (its own).
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Serialize)]
pub struct Report {
    pub schema_version: u32,
    pub runner_version: &'static str,
    /// UTC, ISO 8601, when the run started.
    pub date: String,
    pub accel: String,
    /// The CPU count of the boot-time and `bench.spawn` boots.
    pub smp: u32,
    /// False when a step failed; `error` then says which and why.
    pub complete: bool,
    pub error: Option<String>,
    /// Serial logs of every boot.
    pub run_dir: Option<PathBuf>,
    pub boot: BootTimes,
    pub stack_suite: Option<StackSuite>,
    pub test_suite: Option<super::suite::TestSuite>,
    pub spawn: Option<Costs>,
    pub fork_heavy: Option<Costs>,
}

#[derive(Debug, Default, Serialize)]
pub struct BootTimes {
    pub scenario: &'static str,
    pub runs: u32,
    pub paths: Vec<PathTimes>,
    /// Boot paths this machine cannot take, with the reason.
    pub not_measured: Vec<String>,
    /// The direct path's loader alone: the cheapest boot QEMU can do.
    pub baseline: Option<Times>,
    /// The direct path's median over the baseline's.
    pub ratio_vs_baseline: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct PathTimes {
    pub path: &'static str,
    #[serde(flatten)]
    pub times: Times,
    pub ratio_vs_direct: f64,
    /// The guest's start-up stages, median ms each, then the rest of the
    /// wall time (`bench::timeline`).
    pub stages: Vec<super::timeline::StageMs>,
}

/// Whole-process wall times of QEMU, boot to exit.
#[derive(Debug, Serialize)]
pub struct Times {
    pub median_ms: f64,
    pub p90_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub runs: usize,
}

#[derive(Debug, Serialize)]
pub struct StackSuite {
    pub scenarios: usize,
    pub boots: usize,
    pub wall_s: f64,
}

/// One `bench.*` scenario's rows, each with the figures derived from it.
#[derive(Debug, Serialize)]
pub struct Costs {
    pub scenario: &'static str,
    /// The CPUs the tasks ran on (not the boot's CPU count for
    /// `bench.spawn`, which pins everything to one).
    pub cpus: u32,
    #[serde(serialize_with = "rows_with_derived")]
    pub rows: Vec<Row>,
}

#[derive(Serialize)]
struct DerivedRow<'a> {
    #[serde(flatten)]
    row: &'a Row,
    ratio_vs_direct: f64,
    /// 0..=1; null for strategies without a cache.
    cache_hit_rate: Option<f64>,
    tasks_per_grace_period: Option<f64>,
}

fn rows_with_derived<S: Serializer>(rows: &[Row], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(rows.iter().map(|row| DerivedRow {
        row,
        ratio_vs_direct: rows::ratio_vs_direct(row, rows),
        cache_hit_rate: rows::hit_rate(row),
        tasks_per_grace_period: rows::tasks_per_grace_period(row),
    }))
}

impl Report {
    pub fn new(accel: String, smp: u32, runs: u32) -> Report {
        Report {
            schema_version: SCHEMA_VERSION,
            runner_version: crate::output::RUNNER_VERSION,
            date: iso_date(SystemTime::now()),
            accel,
            smp,
            complete: false,
            error: None,
            run_dir: None,
            boot: BootTimes {
                scenario: crate::bench::SCENARIO,
                runs,
                ..BootTimes::default()
            },
            stack_suite: None,
            test_suite: None,
            spawn: None,
            fork_heavy: None,
        }
    }

    /// Nothing booted yet: writing this would only overwrite an older,
    /// useful report with an empty one.
    pub fn is_empty(&self) -> bool {
        self.boot.paths.is_empty() && self.boot.baseline.is_none()
    }
}

impl From<&crate::bench::Stats> for Times {
    fn from(s: &crate::bench::Stats) -> Times {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        Times {
            median_ms: ms(s.median),
            p90_ms: ms(s.p90),
            min_ms: ms(s.min),
            max_ms: ms(s.max),
            runs: s.runs,
        }
    }
}

pub fn to_json(report: &Report) -> String {
    // Only plain data with string keys: encoding cannot fail.
    serde_json::to_string_pretty(report).unwrap_or_default() + "\n"
}

/// Write `bench.json` and `stacks.svg` into `dir`; their paths.
pub fn write(report: &Report, dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let json = dir.join("bench.json");
    let svg = dir.join("stacks.svg");
    let panels = [
        panel("bench.spawn", report.spawn.as_ref()),
        panel("bench.fork_heavy", report.fork_heavy.as_ref()),
    ];
    for (path, text) in [
        (&json, to_json(report)),
        (&svg, svg::chart(&report.date, &panels)),
    ] {
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok((json, svg))
}

fn panel<'a>(scenario: &str, costs: Option<&'a Costs>) -> svg::Panel<'a> {
    match costs {
        Some(c) => svg::Panel {
            title: format!(
                "{} on {} CPU{}",
                c.scenario,
                c.cpus,
                if c.cpus == 1 { "" } else { "s" }
            ),
            rows: &c.rows,
        },
        None => svg::Panel {
            title: format!("{scenario}: not measured"),
            rows: &[],
        },
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` without a date crate: days since the epoch to a
/// proleptic Gregorian date (Howard Hinnant's `civil_from_days`).
pub fn iso_date(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::Stats;

    #[test]
    fn dates_are_utc_iso() {
        let at = |s| iso_date(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_795_306_313), "2026-11-22T00:11:53Z");
    }

    #[test]
    fn json_round_trips_with_the_expected_keys() {
        let mut report = Report::new("tcg".into(), 1, 3);
        let ms = |m| Duration::from_millis(m);
        let stats = Stats {
            median: ms(80),
            p90: ms(90),
            min: ms(70),
            max: ms(95),
            runs: 3,
        };
        report.boot.paths.push(PathTimes {
            path: "direct",
            times: Times::from(&stats),
            ratio_vs_direct: 1.0,
            stages: Vec::new(),
        });
        report.fork_heavy = Some(Costs {
            scenario: "bench.fork_heavy",
            cpus: 4,
            rows: rows::fixture(abi::kinds::BenchFamily::ForkHeavy),
        });
        let v: serde_json::Value = serde_json::from_str(&to_json(&report)).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        assert_eq!(v["schema_version"], SCHEMA_VERSION);
        assert_eq!(v["runner_version"], env!("CARGO_PKG_VERSION"));
        for key in [
            "date",
            "accel",
            "smp",
            "complete",
            "error",
            "run_dir",
            "boot",
            "stack_suite",
            "test_suite",
            "spawn",
            "fork_heavy",
        ] {
            assert!(keys.contains(&key), "{key} missing from {keys:?}");
        }
        assert_eq!(v["boot"]["paths"][0]["path"], "direct");
        assert_eq!(v["boot"]["paths"][0]["min_ms"], 70.0);
        assert_eq!(v["boot"]["baseline"], serde_json::Value::Null);
        assert_eq!(v["spawn"], serde_json::Value::Null);
        let rows = &v["fork_heavy"]["rows"];
        assert_eq!(rows.as_array().unwrap().len(), 9);
        // vmap-cached, rcu: 3001 cycles against direct's 1001.
        let row = &rows[7];
        assert_eq!(
            (&row["strategy"], &row["free"]),
            (&"vmap-cached".into(), &"rcu".into())
        );
        assert_eq!(row["cpus"], 4);
        assert!((row["ratio_vs_direct"].as_f64().unwrap() - 3001.0 / 1001.0).abs() < 1e-9);
        assert_eq!(row["cache_hit_rate"], 0.91);
        assert!((row["tasks_per_grace_period"].as_f64().unwrap() - 40000.0 / 310.0).abs() < 1e-9);
        assert_eq!(rows[0]["tasks_per_grace_period"], serde_json::Value::Null);
        assert_eq!(rows[0]["cache_hit_rate"], serde_json::Value::Null);
    }

    #[test]
    fn both_files_are_written() {
        let dir = std::env::temp_dir().join(format!("bench-report-{}", std::process::id()));
        let mut report = Report::new("tcg".into(), 1, 3);
        report.spawn = Some(Costs {
            scenario: "bench.spawn",
            cpus: 1,
            rows: rows::fixture(abi::kinds::BenchFamily::Spawn),
        });
        let (json, svg) = write(&report, &dir).unwrap();
        assert!(std::fs::read_to_string(json)
            .unwrap()
            .contains("\"bench.spawn\""));
        assert!(std::fs::read_to_string(svg).unwrap().starts_with("<svg"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
