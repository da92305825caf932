//! `--junit FILE`: the results as JUnit XML, the format CI dashboards
//! (GitHub Actions reporters, GitLab, Jenkins) read. One `<testsuite>` per
//! boot, one `<testcase>` per scenario, with `<failure>` carrying the same
//! reasons the human summary gives and `<skipped>` for KTAP skips.

use crate::fatal::Fatal;
use crate::output::summary;
use crate::session::{BootRecord, Mode, Skipped};
use std::fmt::Write;
use std::path::Path;

pub fn write(
    path: &Path,
    mode: Mode,
    records: &[BootRecord],
    skipped: &[Skipped],
) -> Result<(), Fatal> {
    std::fs::write(path, render(mode, records, skipped))
        .map_err(|e| Fatal::setup(format!("cannot write {}: {e}", path.display())))
}

pub fn render(mode: Mode, records: &[BootRecord], skipped: &[Skipped]) -> String {
    let totals = summary::totals_with_skipped(mode, records, skipped);
    let seconds: f64 = records.iter().map(|r| r.duration.as_secs_f64()).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"runner {}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{seconds:.3}\">",
        mode_name(mode),
        totals.passed + totals.failed + totals.skipped + totals.todo,
        totals.failed,
        totals.skipped + totals.todo
    );
    for record in records {
        suite(&mut out, mode, record);
    }
    // Boots this machine could not do (no Limine here) are skipped, not hidden.
    for skip in skipped {
        let _ = writeln!(
            out,
            "  <testsuite name=\"skipped-{}-smp{}\" tests=\"{n}\" failures=\"0\" skipped=\"{n}\" time=\"0\">",
            skip.path.as_str(),
            skip.smp,
            n = skip.scenarios.len()
        );
        for s in &skip.scenarios {
            let class = s.name.split('.').next().unwrap_or(s.name);
            let _ = writeln!(
                out,
                "    <testcase classname=\"{}\" name=\"{} smp={} [{}]\" time=\"0\">\n      <skipped message=\"{}\"/>\n    </testcase>",
                escape(class),
                escape(s.name),
                skip.smp,
                skip.path.as_str(),
                escape(&skip.reason)
            );
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Run => "run",
        Mode::Test => "test",
    }
}

fn suite(out: &mut String, mode: Mode, record: &BootRecord) {
    let marks: Vec<summary::Mark> = record
        .results
        .iter()
        .map(|r| summary::mark(mode, r))
        .collect();
    let count = |m: summary::Mark| marks.iter().filter(|&&x| x == m).count();
    let seconds = record.duration.as_secs_f64();
    let _ = writeln!(
        out,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{seconds:.3}\">",
        escape(&record.boot.name),
        marks.len(),
        count(summary::Mark::Failed),
        count(summary::Mark::Skipped) + count(summary::Mark::Todo)
    );
    let _ = writeln!(
        out,
        "    <properties><property name=\"smp\" value=\"{}\"/><property name=\"outcome\" value=\"{}\"/><property name=\"serial_log\" value=\"{}\"/></properties>",
        record.boot.smp,
        record.verdict.outcome.as_str(),
        escape(&record.serial_log.display().to_string())
    );
    for (result, mark) in record.results.iter().zip(marks) {
        let name = result.scenario.name;
        let class = name.split('.').next().unwrap_or(name);
        let _ = write!(
            out,
            "    <testcase classname=\"{}\" name=\"{} smp={}{}\" time=\"{seconds:.3}\"",
            escape(class),
            escape(name),
            record.boot.smp,
            match record.boot.path {
                crate::cli::BootPath::Direct => String::new(),
                other => format!(" [{}]", other.as_str()),
            }
        );
        let guard = result.fault().map(|g| g.describe());
        match mark {
            summary::Mark::Passed => match guard {
                Some(g) => {
                    let _ = writeln!(
                        out,
                        ">\n      <system-out>{}</system-out>\n    </testcase>",
                        escape(&g)
                    );
                }
                None => out.push_str("/>\n"),
            },
            summary::Mark::Skipped => {
                let _ = writeln!(
                    out,
                    ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                    escape(&summary::skip_reason(record, result).unwrap_or_default())
                );
            }
            // JUnit has no expected failure; a skip that says so is closest.
            summary::Mark::Todo => {
                let _ = writeln!(
                    out,
                    ">\n      <skipped message=\"not ok, TODO: {}\"/>\n    </testcase>",
                    escape(result.todo.as_deref().unwrap_or_default())
                );
            }
            summary::Mark::Failed => {
                let message = summary::failure_reason(mode, record, result);
                let kind = match result.fault() {
                    Some(g) if !g.as_expected() => g.category_str(),
                    _ if !result.believed() && summary::outcome_is_fine(mode, result) => "unproven",
                    _ => result.outcome.as_str(),
                };
                let mut body: Vec<String> = result
                    .diagnostics
                    .iter()
                    .map(|d| format!("# {d}"))
                    .collect();
                if let Some(g) = result.fault() {
                    body.extend(
                        g.failures()
                            .iter()
                            .map(|f| format!("{}: {}", f.check.name(), f.detail)),
                    );
                }
                body.extend(result.objections.iter().map(|o| format!("evidence: {o}")));
                body.push(format!("serial log: {}", record.serial_log.display()));
                let _ = writeln!(
                    out,
                    ">\n      <failure message=\"{}\" type=\"{}\">{}</failure>\n    </testcase>",
                    escape(&message),
                    escape(kind),
                    escape(&body.join("\n"))
                );
            }
        }
    }
    out.push_str("  </testsuite>\n");
}

/// XML 1.0 text and attribute escaping; characters XML 1.0 cannot carry at
/// all (most C0 controls, which a crashing guest's serial may hold) become `?`.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_keeps_xml_well_formed() {
        assert_eq!(
            escape("a<b & \"c\" 'd'>\x1b[0m\u{0}\n"),
            "a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;?[0m?\n"
        );
    }
}
