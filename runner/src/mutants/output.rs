//! The suite's results for people (the table) and machines (`--json`).
use crate::fatal::Fatal;
use serde::Serialize;

/// One row of the table and the JSON.
#[derive(Serialize)]
pub(super) struct Row {
    pub(super) defect: &'static str,
    pub(super) what: &'static str,
    pub(super) scenarios: Vec<&'static str>,
    pub(super) smp: u32,
    /// The scenario whose verdict must flip, and what must flip it.
    pub(super) scenario: &'static str,
    pub(super) expected: &'static str,
    pub(super) fate: &'static str,
    pub(super) why: Option<String>,
    pub(super) caught_by: Vec<String>,
    /// What caught it said (or why the scenario failed at all).
    pub(super) said: Vec<String>,
    pub(super) duration_s: f64,
    pub(super) run_dir: Option<String>,
}

/// The version of the `mutants --json` document's shape (its own, not
/// the `run`/`test` results').
pub(super) const SCHEMA_VERSION: u32 = 1;

#[derive(Serialize)]
pub(super) struct Document<'a> {
    pub(super) schema_version: u32,
    pub(super) runner_version: &'static str,
    pub(super) command: &'static str,
    pub(super) accel: &'static str,
    pub(super) baseline_s: f64,
    pub(super) baseline_run_dir: String,
    pub(super) defects: &'a [Row],
    pub(super) killed: usize,
    pub(super) survived: usize,
    pub(super) skipped: usize,
    pub(super) exit_status: i32,
}

pub(super) fn table(rows: &[Row]) -> Vec<String> {
    let header = ["defect", "scenarios", "result", "caught by", "time"];
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            let scenarios = match r.scenarios.as_slice() {
                [one] => format!("{one} smp={}", r.smp),
                many => format!("{} ({} scenarios) smp={}", r.scenario, many.len(), r.smp),
            };
            let result = match &r.why {
                Some(why) => format!("{}: {why}", r.fate),
                None => r.fate.to_string(),
            };
            let by = if r.caught_by.is_empty() {
                "-".to_string()
            } else {
                r.caught_by.join(", ")
            };
            [
                r.defect.to_string(),
                scenarios,
                result,
                by,
                format!("{:.1}s", r.duration_s),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |row: [&str; 5]| {
        let mut text = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                text += cell;
            } else {
                text += &format!("{cell:w$}  ");
            }
        }
        text.trim_end().to_string()
    };
    let mut out = vec![line(header)];
    out.extend(cells.iter().map(|c| line(c.each_ref().map(String::as_str))));
    out
}

pub(super) fn write_json(path: &std::path::Path, document: &Document) -> Result<(), Fatal> {
    let text = serde_json::to_string_pretty(document)
        .map_err(|e| Fatal::setup(format!("cannot encode the results: {e}")))?;
    std::fs::write(path, text + "\n")
        .map_err(|e| Fatal::setup(format!("cannot write {}: {e}", path.display())))
}
