//! `stacks.svg`: median cycles per task as grouped bars, one group per free
//! mode, one bar per stack strategy, one panel per `bench.*` scenario.
//! Hand-written SVG: a chart this size does not justify a plotting crate.

use super::rows::{self, Row};
use abi::kinds::{FreeMode, Strategy};

/// One scenario's rows under a title; no rows draws "not measured".
pub struct Panel<'a> {
    pub title: String,
    pub rows: &'a [Row],
}

const STRATEGIES: [(Strategy, &str); 3] = [
    (Strategy::Direct, "#4c72b0"),
    (Strategy::Vmap, "#dd8452"),
    (Strategy::VmapCached, "#55a868"),
];
const PANEL_W: f64 = 460.0;
const HEIGHT: f64 = 410.0;
const PLOT_TOP: f64 = 110.0;
const PLOT_BOTTOM: f64 = 370.0;
/// Room left of each plot for the tick labels.
const AXIS_W: f64 = 60.0;

pub fn chart(date: &str, panels: &[Panel]) -> String {
    let width = 20.0 + PANEL_W * panels.len() as f64;
    let mut svg = vec![
        format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{HEIGHT}" viewBox="0 0 {width} {HEIGHT}" font-family="sans-serif" font-size="12" style="background:#fff">"#
        ),
        text(
            width / 2.0,
            24.0,
            "middle",
            16,
            &format!("Cost per task by stack strategy and free mode (median TSC cycles, {date})"),
        ),
    ];
    svg.extend(legend(width / 2.0 - 250.0, 44.0));
    for (i, panel) in panels.iter().enumerate() {
        svg.extend(draw_panel(10.0 + PANEL_W * i as f64, panel));
    }
    svg.push("</svg>".to_string());
    svg.join("\n") + "\n"
}

/// Swatches are paths, not rects, so every `<rect>` in the chart is a bar.
fn legend(x: f64, y: f64) -> Vec<String> {
    let mut out = Vec::new();
    for (i, (strategy, colour)) in STRATEGIES.iter().enumerate() {
        let sx = x + 110.0 * i as f64;
        out.push(format!(
            r#"<path d="M{sx:.1} {y:.1}h12v12h-12z" fill="{colour}"/>"#
        ));
        out.push(text(sx + 16.0, y + 10.0, "start", 12, strategy.as_str()));
    }
    let note = "% over vmap-cached: stack-cache hit rate";
    out.push(text(x + 340.0, y + 10.0, "start", 11, note));
    out
}

fn draw_panel(x0: f64, panel: &Panel) -> Vec<String> {
    let (left, right) = (x0 + AXIS_W, x0 + PANEL_W - 20.0);
    let mut out = vec![text((left + right) / 2.0, 88.0, "middle", 14, &panel.title)];
    if panel.rows.is_empty() {
        let middle = (PLOT_TOP + PLOT_BOTTOM) / 2.0;
        out.push(text(
            (left + right) / 2.0,
            middle,
            "middle",
            14,
            "not measured",
        ));
        return out;
    }
    let max = panel.rows.iter().map(|r| r.median_cycles).max();
    let (step, top) = ticks(max.unwrap_or(0));
    out.extend(axis(left, right, step, top));
    let group_w = (right - left) / FreeMode::ALL.len() as f64;
    for (g, &free) in FreeMode::ALL.iter().enumerate() {
        out.extend(group(
            left + group_w * g as f64,
            group_w,
            top,
            free,
            panel.rows,
        ));
    }
    out
}

fn y_of(cycles: f64, top: f64) -> f64 {
    PLOT_BOTTOM - (PLOT_BOTTOM - PLOT_TOP) * cycles / top
}

/// Gridlines with their labels, and the vertical axis.
fn axis(left: f64, right: f64, step: f64, top: f64) -> Vec<String> {
    let mut out = Vec::new();
    for k in 0..=(top / step).round() as u32 {
        let v = step * f64::from(k);
        let y = y_of(v, top);
        out.push(format!(
            r##"<line x1="{left:.1}" y1="{y:.1}" x2="{right:.1}" y2="{y:.1}" stroke="#ddd"/>"##
        ));
        out.push(text(left - 6.0, y + 4.0, "end", 11, &short(v)));
    }
    out.push(format!(
        r##"<line x1="{left:.1}" y1="{PLOT_TOP:.1}" x2="{left:.1}" y2="{PLOT_BOTTOM:.1}" stroke="#333"/>"##
    ));
    out
}

/// One free mode's bars, a strategy missing from `rows` leaving a gap.
fn group(x: f64, width: f64, top: f64, free: FreeMode, rows: &[Row]) -> Vec<String> {
    let bar_w = width / (STRATEGIES.len() as f64 + 1.0);
    let x = x + bar_w / 2.0;
    let mut out = vec![text(
        x + bar_w * 1.5,
        PLOT_BOTTOM + 18.0,
        "middle",
        12,
        free.as_str(),
    )];
    for (i, (strategy, colour)) in STRATEGIES.iter().enumerate() {
        let Some(row) = rows
            .iter()
            .find(|r| r.strategy == *strategy && r.free == free)
        else {
            continue;
        };
        let (bx, y) = (x + bar_w * i as f64, y_of(row.median_cycles as f64, top));
        out.push(format!(
            r#"<rect x="{bx:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{colour}"><title>{strategy}, free={}: {} cycles</title></rect>"#,
            bar_w - 2.0,
            PLOT_BOTTOM - y,
            escape(free.as_str()),
            row.median_cycles
        ));
        if *strategy == Strategy::VmapCached {
            let hit = rows::hit_percent(row).unwrap_or_else(|| "-".into());
            out.push(text(bx + bar_w / 2.0 - 1.0, y - 4.0, "middle", 10, &hit));
        }
    }
    out
}

/// A tick step of 1, 2 or 5 times a power of ten giving at most five
/// intervals, and the axis top: the first tick at or above `max`.
fn ticks(max: u64) -> (f64, f64) {
    let max = max.max(1) as f64;
    // Cycles are whole: no fractional ticks.
    let magnitude = 10f64.powf((max / 5.0).log10().floor()).max(1.0);
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| max / s <= 5.0)
        .unwrap_or(10.0 * magnitude);
    (step, (max / step).ceil() * step)
}

/// 120000 as `120k`, 2500000 as `2.5M`.
fn short(v: f64) -> String {
    let (scaled, unit) = match v {
        v if v >= 1e6 => (v / 1e6, "M"),
        v if v >= 1e3 => (v / 1e3, "k"),
        v => (v, ""),
    };
    let digits = format!("{scaled:.1}");
    format!("{}{unit}", digits.strip_suffix(".0").unwrap_or(&digits))
}

fn text(x: f64, y: f64, anchor: &str, size: u32, what: &str) -> String {
    format!(
        r#"<text x="{x:.1}" y="{y:.1}" text-anchor="{anchor}" font-size="{size}">{}</text>"#,
        escape(what)
    )
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_bar_per_row_with_hit_rates_over_the_cached_ones() {
        let spawn = rows::fixture(abi::kinds::BenchFamily::Spawn);
        let fork = rows::fixture(abi::kinds::BenchFamily::ForkHeavy);
        let svg = chart(
            "2026-11-22T00:11:53Z",
            &[
                Panel {
                    title: "bench.spawn on 1 CPU".into(),
                    rows: &spawn,
                },
                Panel {
                    title: "bench.fork_heavy on 4 CPUs".into(),
                    rows: &fork[..8],
                },
            ],
        );
        assert!(svg.starts_with("<svg "), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<rect").count(), 9 + 8);
        assert_eq!(svg.matches("<rect").count(), svg.matches("</rect>").count());
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
        // vmap-cached hits 90, 91, 92 of 100 in the fixture.
        for hit in [">90.0%<", ">91.0%<"] {
            assert_eq!(svg.matches(hit).count(), 2, "{hit}");
        }
        assert_eq!(svg.matches(">92.0%<").count(), 1, "the dropped row's");
        assert!(svg.contains(">bench.fork_heavy on 4 CPUs<"));
        assert!(svg.contains(">rcu-cache<") && svg.contains(">vmap-cached<"));
    }

    #[test]
    fn an_unmeasured_panel_says_so() {
        let svg = chart(
            "d",
            &[Panel {
                title: "a<b".into(),
                rows: &[],
            }],
        );
        assert!(svg.contains(">not measured<") && svg.contains(">a&lt;b<"));
        assert!(!svg.contains("<rect") && !svg.contains("<line"), "no axis");
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(ticks(81_234), (20_000.0, 100_000.0));
        assert_eq!(ticks(3003), (1000.0, 4000.0));
        assert_eq!(ticks(0), (1.0, 1.0));
        assert_eq!(short(120_000.0), "120k");
        assert_eq!(short(2_500_000.0), "2.5M");
        assert_eq!(short(0.0), "0");
    }
}
