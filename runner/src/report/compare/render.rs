//! The facts of every path side by side, flagged.
use super::rules::agree;
use super::{keys, Column, Flag};

/// The side-by-side table: one row per fact, one column per path, and a
/// mark: `!!` flagged, `~` differs as allowed, blank when all agree.
pub fn table(columns: &[Column], flags: &[Flag]) -> Vec<String> {
    let keys = keys(columns);
    let mut rows: Vec<Vec<String>> = vec![std::iter::once("fact".to_string())
        .chain(columns.iter().map(|c| c.label.clone()))
        .chain(std::iter::once(String::new()))
        .collect()];
    for key in &keys {
        let mark = if flags.iter().any(|f| &f.key == key) {
            "!!"
        } else if !agree(columns, key) {
            "~"
        } else {
            ""
        };
        rows.push(
            std::iter::once(key.clone())
                .chain(
                    columns
                        .iter()
                        .map(|c| c.get(key).unwrap_or("-").to_string()),
                )
                .chain(std::iter::once(mark.to_string()))
                .collect(),
        );
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            r.iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        })
        .collect()
}
