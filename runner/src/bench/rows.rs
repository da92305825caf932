//! The guest's `# bench <family> key=value ...` lines (`bench.spawn`,
//! `bench.fork_heavy`): one row per stack strategy and free mode, the
//! figures the runner derives from them, and the console table.

use serde::Serialize;

/// One `# bench <family> ...` line. The fields every family prints are
/// required; the ones only some print are `None` where absent.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    pub strategy: String,
    pub free: String,
    pub median_cycles: u64,
    pub p90_cycles: u64,
    /// Absent from lines printed before the guest reported it.
    pub mean_cycles: Option<u64>,
    pub median_ns: u64,
    pub p90_ns: Option<u64>,
    pub cache_hits: u64,
    pub cache_lookups: u64,
    /// `bench.spawn`: tasks timed one after another.
    pub iterations: Option<u64>,
    /// `bench.fork_heavy`: CPUs the tasks ran on.
    pub cpus: Option<u64>,
    /// `bench.fork_heavy`: tasks spawned in all.
    pub tasks: Option<u64>,
    /// `bench.fork_heavy`: RCU grace periods those tasks' stacks waited on.
    pub grace_periods: Option<u64>,
}

/// Rows of `# bench <family> ` lines in `serial`. A line missing a required
/// field, or with a value that is not a number, is skipped: a half-printed
/// line (a guest cut off mid-write) must not become a row of zeros.
pub fn parse(family: &str, serial: &str) -> Vec<Row> {
    let prefix = format!("# bench {family} ");
    serial
        .lines()
        .filter_map(|line| parse_line(line.trim().strip_prefix(prefix.as_str())?))
        .collect()
}

fn parse_line(fields: &str) -> Option<Row> {
    let text = |key: &str| {
        fields
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
    };
    let num = |key: &str| text(key)?.parse::<u64>().ok();
    // Outer None: present but not a number (malformed); inner: absent.
    let optional = |key: &str| match text(key) {
        None => Some(None),
        Some(v) => v.parse::<u64>().ok().map(Some),
    };
    Some(Row {
        strategy: text("strategy")?.to_string(),
        // Lines from before free modes existed freed at exit.
        free: text("free").unwrap_or("exit").to_string(),
        median_cycles: num("median_cycles")?,
        p90_cycles: num("p90_cycles")?,
        mean_cycles: optional("mean_cycles")?,
        median_ns: num("median_ns")?,
        p90_ns: optional("p90_ns")?,
        cache_hits: num("cache_hits")?,
        cache_lookups: num("cache_lookups")?,
        iterations: optional("iterations")?,
        cpus: optional("cpus")?,
        tasks: optional("tasks")?,
        grace_periods: optional("grace_periods")?,
    })
}

/// Median cycles against `direct` with the same free mode in the same boot,
/// so the mode's own cost cancels out; 1.0 without a `direct` row.
pub fn ratio_vs_direct(row: &Row, rows: &[Row]) -> f64 {
    let direct = rows
        .iter()
        .find(|d| d.strategy == "direct" && d.free == row.free)
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
    match (row.tasks, row.grace_periods) {
        (Some(tasks), Some(gps)) if gps > 0 => Some(tasks as f64 / gps as f64),
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
            r.strategy,
            r.free,
            r.median_cycles,
            r.median_ns,
            r.p90_cycles,
            r.mean_cycles.map_or("-".into(), |m| m.to_string()),
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
pub fn fixture(family: &str) -> Vec<Row> {
    let mut serial = String::new();
    for (s, strategy) in ["direct", "vmap", "vmap-cached"].iter().enumerate() {
        for (f, free) in ["exit", "rcu", "rcu-cache"].iter().enumerate() {
            let (hits, lookups) = if *strategy == "vmap-cached" {
                (90 + f, 100)
            } else {
                (0, 0)
            };
            serial += &format!(
                "# bench {family} strategy={strategy} free={free} cpus=4 tasks=40000 \
                 median_cycles={} p90_cycles=9 median_ns=1 p90_ns=2 cache_hits={hits} \
                 cache_lookups={lookups} grace_periods={}\n",
                1000 * (s + 1) + f,
                310 * f
            );
        }
    }
    parse(family, &serial)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPAWN: &str = "# bench spawn strategy=vmap free=rcu iterations=10 median_cycles=5 p90_cycles=7 median_ns=2 p90_ns=3 cache_hits=1 cache_lookups=4";
    const FORK: &str = "# bench fork_heavy strategy=vmap-cached free=rcu-cache cpus=4 tasks=40000 median_cycles=81234 p90_cycles=120000 mean_cycles=95000 median_ns=27000 p90_ns=40000 cache_hits=123 cache_lookups=40000 grace_periods=310";

    #[test]
    fn spawn_lines_parse_and_garbage_is_skipped() {
        let serial = format!("noise\n{SPAWN}\r\n# bench spawn strategy=vmap median_cycles=x\n");
        let rows = parse("spawn", &serial);
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(
            (r.strategy.as_str(), r.free.as_str(), r.median_cycles),
            ("vmap", "rcu", 5)
        );
        assert_eq!(
            (r.cache_lookups, r.p90_ns, r.iterations),
            (4, Some(3), Some(10))
        );
        assert_eq!((r.cpus, r.tasks, r.grace_periods), (None, None, None));
        assert_eq!(r.mean_cycles, None, "a line from before the mean");
        assert_eq!(tasks_per_grace_period(r), None);
    }

    #[test]
    fn fork_heavy_lines_parse_with_their_extra_fields() {
        let serial = format!("{SPAWN}\n{FORK}\n");
        let rows = parse("fork_heavy", &serial);
        assert_eq!(rows.len(), 1, "the spawn line is another family");
        let r = &rows[0];
        assert_eq!(
            (
                r.strategy.as_str(),
                r.free.as_str(),
                r.median_cycles,
                r.p90_cycles
            ),
            ("vmap-cached", "rcu-cache", 81234, 120000)
        );
        assert_eq!((r.median_ns, r.p90_ns), (27000, Some(40000)));
        assert_eq!(r.mean_cycles, Some(95000));
        assert_eq!((r.cache_hits, r.cache_lookups), (123, 40000));
        assert_eq!(
            (r.cpus, r.tasks, r.grace_periods, r.iterations),
            (Some(4), Some(40000), Some(310), None)
        );
        assert_eq!(parse("spawn", &serial).len(), 1);
    }

    #[test]
    fn malformed_fork_heavy_lines_are_skipped() {
        let serial = [
            // Cut off before the cycle counts.
            "# bench fork_heavy strategy=vmap free=rcu cpus=4 tasks=40000",
            // An optional field present but not a number.
            &FORK.replace("cpus=4", "cpus=four"),
            // Another family whose name starts the same way.
            &FORK.replace("fork_heavy", "fork_heavyish"),
            FORK,
        ]
        .join("\n");
        let rows = parse("fork_heavy", &serial);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].cpus, Some(4));
    }

    #[test]
    fn derived_figures() {
        let row = |strategy: &str, free: &str, cycles, gps| Row {
            median_cycles: cycles,
            grace_periods: gps,
            strategy: strategy.into(),
            free: free.into(),
            ..parse("fork_heavy", FORK).remove(0)
        };
        let rows = [
            row("direct", "rcu", 100, Some(0)),
            row("direct", "exit", 50, Some(310)),
            row("vmap", "rcu", 250, None),
        ];
        assert_eq!(ratio_vs_direct(&rows[2], &rows), 2.5);
        assert_eq!(ratio_vs_direct(&row("vmap", "nope", 7, None), &rows), 1.0);
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
