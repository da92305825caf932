//! The guest's `BENCH-CELL` records (`bench.spawn`, `bench.fork_heavy`):
//! one row per stack strategy and free mode, the figures the runner derives
//! from them, and the console table.

use crate::report::lines;
use abi::kinds::{BenchFamily, FreeMode, Strategy};
use serde::Serialize;

/// One cell, as the guest measured it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    pub strategy: Strategy,
    pub free: FreeMode,
    pub median_cycles: u64,
    pub p90_cycles: u64,
    pub mean_cycles: u64,
    pub median_ns: u64,
    pub p90_ns: u64,
    pub cache_hits: u64,
    pub cache_lookups: u64,
    /// Tasks timed (or stacks allocated, for `stack_alloc`).
    pub samples: u64,
    /// `bench.fork_heavy`: CPUs the tasks ran on.
    pub cpus: Option<u64>,
    /// `bench.fork_heavy`: RCU grace periods those tasks' stacks waited on.
    pub grace_periods: Option<u64>,
}

/// The rows of `family` in `serial`. A record that does not parse (a
/// guest cut off mid-write) is no row: it must not become a row of zeros.
pub fn parse(family: BenchFamily, serial: &str) -> Vec<Row> {
    lines::parse(serial)
        .bench
        .iter()
        .filter(|c| c.family == family)
        .map(|c| Row {
            strategy: c.strategy,
            free: c.free,
            median_cycles: c.median_cycles,
            p90_cycles: c.p90_cycles,
            mean_cycles: c.mean_cycles,
            median_ns: c.median_ns,
            p90_ns: c.p90_ns,
            cache_hits: c.cache_hits,
            cache_lookups: c.cache_lookups,
            samples: c.samples,
            cpus: c.cpus,
            grace_periods: c.grace_periods,
        })
        .collect()
}

/// Median cycles against `direct` with the same free mode in the same boot,
/// so the mode's own cost cancels out; 1.0 without a `direct` row.
pub fn ratio_vs_direct(row: &Row, rows: &[Row]) -> f64 {
    let direct = rows
        .iter()
        .find(|d| d.strategy == Strategy::Direct && d.free == row.free)
        .map_or(row.median_cycles, |d| d.median_cycles);
    row.median_cycles as f64 / direct.max(1) as f64
}

/// Stack-cache hits per lookup, 0..=1; `None` for strategies that never
/// look in the cache.
pub fn hit_rate(row: &Row) -> Option<f64> {
    (row.cache_lookups > 0).then(|| row.cache_hits as f64 / row.cache_lookups as f64)
}

/// The hit rate to one decimal, rounded down from the integer counts, so
/// 9999 hits of 10000 read 99.9%, not a perfect 100.0%.
pub fn hit_percent(row: &Row) -> Option<String> {
    if row.cache_lookups == 0 {
        return None;
    }
    let tenths = u128::from(row.cache_hits) * 1000 / u128::from(row.cache_lookups);
    Some(format!("{}.{}%", tenths / 10, tenths % 10))
}

/// How many tasks' stacks each grace period released at once: the burst
/// size the per-CPU cache has to absorb.
pub fn tasks_per_grace_period(row: &Row) -> Option<f64> {
    match row.grace_periods {
        Some(gps) if gps > 0 => Some(row.samples as f64 / gps as f64),
        _ => None,
    }
}

/// The rows as the console table; `fork_heavy` adds the CPU count and the
/// tasks per grace period.
pub fn print_table(title: &str, rows: &[Row], fork_heavy: bool) {
    println!("{title}");
    let (cpus, per_gp) = if fork_heavy {
        (format!(" {:>4}", "cpus"), format!(" {:>12}", "tasks/GP"))
    } else {
        (String::new(), String::new())
    };
    println!(
        "  {:<12} {:<10}{cpus} {:>14} {:>11} {:>11} {:>11} {:>7} {:>10}{per_gp}",
        "strategy",
        "free",
        "median cycles",
        "median ns",
        "p90 cycles",
        "mean cycles",
        "ratio",
        "cache hit"
    );
    for r in rows {
        let (cpus, per_gp) = if fork_heavy {
            (
                format!(" {:>4}", r.cpus.map_or("-".into(), |c| c.to_string())),
                format!(" {:>12}", one_decimal(tasks_per_grace_period(r))),
            )
        } else {
            (String::new(), String::new())
        };
        println!(
            "  {:<12} {:<10}{cpus} {:>14} {:>11} {:>11} {:>11} {:>6.2}x {:>10}{per_gp}",
            r.strategy.as_str(),
            r.free.as_str(),
            r.median_cycles,
            r.median_ns,
            r.p90_cycles,
            r.mean_cycles,
            ratio_vs_direct(r, rows),
            hit_percent(r).as_deref().unwrap_or("-"),
        );
    }
}

fn one_decimal(value: Option<f64>) -> String {
    value.map_or("-".to_string(), |v| format!("{v:.1}"))
}

/// Nine rows, strategy-major as the guest prints them: median cycles
/// 1000 × (strategy index + 1) + free mode index, vmap-cached hitting 90,
/// 91, 92 of 100, grace periods 310 × free mode index (none for `exit`).
#[cfg(test)]
pub fn fixture(family: BenchFamily) -> Vec<Row> {
    let mut serial = String::new();
    for (s, &strategy) in Strategy::ALL.iter().enumerate() {
        for (f, &free) in FreeMode::ALL.iter().enumerate() {
            let (cache_hits, cache_lookups) = if strategy == Strategy::VmapCached {
                (90 + f as u64, 100)
            } else {
                (0, 0)
            };
            let cell = abi::bench::BenchCell {
                scenario: "bench.fork_heavy",
                family,
                strategy,
                free,
                samples: 40000,
                cpus: Some(4),
                grace_periods: Some(310 * f as u64),
                median_cycles: 1000 * (s as u64 + 1) + f as u64,
                p90_cycles: 9,
                mean_cycles: 12,
                median_ns: 1,
                p90_ns: 2,
                cache_hits,
                cache_lookups,
            };
            let mut buf = [0u8; 1024];
            serial += abi::record::encode(&cell, &mut buf).unwrap();
            serial += "\n";
        }
    }
    parse(family, &serial)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_of_one_family_parse_and_garbage_is_skipped() {
        let rows = fixture(BenchFamily::ForkHeavy);
        assert_eq!(rows.len(), 9);
        let r = &rows[8];
        assert_eq!(
            (r.strategy, r.free, r.median_cycles),
            (Strategy::VmapCached, FreeMode::RcuCache, 3002)
        );
        let mut buf = [0u8; 1024];
        let cell = abi::bench::BenchCell {
            scenario: "bench.spawn",
            family: BenchFamily::Spawn,
            strategy: Strategy::Vmap,
            free: FreeMode::Rcu,
            samples: 10,
            cpus: None,
            grace_periods: None,
            median_cycles: 5,
            p90_cycles: 7,
            mean_cycles: 6,
            median_ns: 2,
            p90_ns: 3,
            cache_hits: 1,
            cache_lookups: 4,
        };
        let line = abi::record::encode(&cell, &mut buf).unwrap().to_string();
        let cut = &line[..line.len() - 20];
        let serial = format!("noise\n{line}\r\n{cut}\n# {line}\n");
        let rows = parse(BenchFamily::Spawn, &serial);
        assert_eq!(rows.len(), 2, "the cut record is no row");
        assert_eq!((rows[0].cache_lookups, rows[0].p90_ns), (4, 3));
        assert_eq!(tasks_per_grace_period(&rows[0]), None);
        assert!(parse(BenchFamily::ForkHeavy, &serial).is_empty());
    }

    #[test]
    fn derived_figures() {
        let base = fixture(BenchFamily::ForkHeavy).remove(0);
        let row = |strategy, free, cycles, gps| Row {
            median_cycles: cycles,
            grace_periods: gps,
            strategy,
            free,
            cache_hits: 123,
            cache_lookups: 40000,
            ..base.clone()
        };
        let rows = [
            row(Strategy::Direct, FreeMode::Rcu, 100, Some(0)),
            row(Strategy::Direct, FreeMode::Exit, 50, Some(310)),
            row(Strategy::Vmap, FreeMode::Rcu, 250, None),
        ];
        assert_eq!(ratio_vs_direct(&rows[2], &rows), 2.5);
        assert_eq!(
            ratio_vs_direct(&row(Strategy::Vmap, FreeMode::RcuCache, 7, None), &rows),
            1.0
        );
        assert_eq!(tasks_per_grace_period(&rows[0]), None);
        assert_eq!(tasks_per_grace_period(&rows[2]), None);
        let per_gp = tasks_per_grace_period(&rows[1]).unwrap();
        assert!((per_gp - 40000.0 / 310.0).abs() < 1e-9);
        assert_eq!(hit_rate(&rows[0]), Some(123.0 / 40000.0));
        assert_eq!(
            hit_rate(&Row {
                cache_lookups: 0,
                ..rows[0].clone()
            }),
            None
        );
        assert_eq!(one_decimal(Some(129.03)), "129.0");
        assert_eq!(one_decimal(None), "-");
        let hits = |cache_hits, cache_lookups| {
            hit_percent(&Row {
                cache_hits,
                cache_lookups,
                ..rows[0].clone()
            })
        };
        assert_eq!(hits(9999, 10000).as_deref(), Some("99.9%"));
        assert_eq!(hits(10000, 10000).as_deref(), Some("100.0%"));
        assert_eq!(hits(57, 100).as_deref(), Some("57.0%"));
        assert_eq!(hits(0, 0), None);
    }
}
