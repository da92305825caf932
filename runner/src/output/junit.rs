//! `--junit FILE`: the results as JUnit XML, the format CI dashboards
//! (GitHub Actions reporters, GitLab, Jenkins) read. One `<testsuite>` per
//! boot, one `<testcase>` per scenario, with `<failure>` carrying the same
//! reasons the human summary gives and `<skipped>` for KTAP skips.
//!
//! A near miss (`report::usage`) is a warning, not a failure: a
//! `near-miss` property of the boot's suite named after its testcase
//! (junit-10.xsd allows properties on a suite only, none in a testcase),
//! and the same `warning:` line the summary prints in that testcase's
//! `<system-err>`.

use crate::fatal::Fatal;
use crate::output::summary;
use crate::record::{BootRecord, Mode, Skipped};
use std::fmt::Write;
use std::path::Path;

pub fn write(
    path: &Path,
    mode: Mode,
    records: &[BootRecord],
    skipped: &[Skipped],
) -> Result<(), Fatal> {
    super::write_file(path, &render(mode, records, skipped))
}

pub fn render(mode: Mode, records: &[BootRecord], skipped: &[Skipped]) -> String {
    let totals = summary::totals_with_skipped(mode, records, skipped);
    let seconds: f64 = records.iter().map(|r| r.duration.as_secs_f64()).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        // Jenkins' junit-10.xsd allows no `skipped` here: each suite says it.
        "<testsuites name=\"runner {}\" tests=\"{}\" failures=\"{}\" errors=\"0\" time=\"{seconds:.3}\">",
        mode_name(mode),
        totals.passed + totals.failed + totals.skipped + totals.todo,
        totals.failed,
    );
    for record in records {
        suite(&mut out, mode, record);
    }
    // Boots this machine could not do (no Limine here) are skipped, not hidden.
    for skip in skipped {
        let _ = writeln!(
            out,
            "  <testsuite name=\"skipped-{}-smp{}\" tests=\"{n}\" failures=\"0\" errors=\"0\" skipped=\"{n}\" time=\"0\">",
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
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{seconds:.3}\">",
        escape(&record.boot.name),
        marks.len(),
        count(summary::Mark::Failed),
        count(summary::Mark::Skipped) + count(summary::Mark::Todo)
    );
    let mut properties = format!(
        "<property name=\"smp\" value=\"{}\"/><property name=\"outcome\" value=\"{}\"/><property name=\"serial_log\" value=\"{}\"/>",
        record.boot.smp,
        record.verdict.outcome.as_str(),
        escape(&record.serial_log.display().to_string())
    );
    for result in &record.results {
        for n in result.near_misses() {
            let _ = write!(
                properties,
                "<property name=\"near-miss: {}\" value=\"{}\"/>",
                escape(&case_name(record, result)),
                escape(&n.warning())
            );
        }
    }
    let _ = writeln!(out, "    <properties>{properties}</properties>");
    // Each case its own time, so that a consumer adding them up gets the
    // boot's: the guest's measure where it gave one, the rest of the boot
    // to the first case without one (the one that ended the boot), 0 to
    // any after it, which it never reached.
    let own: Vec<Option<f64>> = record
        .results
        .iter()
        .map(|r| r.own_time().map(|t| t.as_secs_f64()))
        .collect();
    let rest = (seconds - own.iter().flatten().sum::<f64>()).max(0.0);
    let mut rest_given = false;
    for ((result, mark), own) in record.results.iter().zip(marks).zip(own) {
        let seconds = own.unwrap_or_else(|| {
            if std::mem::replace(&mut rest_given, true) {
                0.0
            } else {
                rest
            }
        });
        let name = result.scenario.name;
        let class = name.split('.').next().unwrap_or(name);
        let _ = write!(
            out,
            "    <testcase classname=\"{}\" name=\"{}\" time=\"{seconds:.3}\"",
            escape(class),
            escape(&case_name(record, result)),
        );
        let guard = result.fault().map(|g| g.describe());
        let warnings: Vec<String> = result
            .near_misses()
            .iter()
            .map(|n| format!("warning: {}", n.warning()))
            .collect();
        let system_err = if warnings.is_empty() {
            String::new()
        } else {
            format!(
                "\n      <system-err>{}</system-err>",
                escape(&warnings.join("\n"))
            )
        };
        match mark {
            summary::Mark::Passed => match guard {
                Some(g) => {
                    let _ = writeln!(
                        out,
                        ">\n      <system-out>{}</system-out>{system_err}\n    </testcase>",
                        escape(&g)
                    );
                }
                None if warnings.is_empty() => out.push_str("/>\n"),
                None => {
                    let _ = writeln!(out, ">{system_err}\n    </testcase>");
                }
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
                    ">\n      <failure message=\"{}\" type=\"{}\">{}</failure>{system_err}\n    </testcase>",
                    escape(&message),
                    escape(kind),
                    escape(&body.join("\n"))
                );
            }
        }
    }
    out.push_str("  </testsuite>\n");
}

/// A testcase's name: the scenario, its CPUs, a boot path other than direct.
fn case_name(record: &BootRecord, result: &crate::report::judge::ScenarioResult) -> String {
    format!(
        "{} smp={}{}",
        result.scenario.name,
        record.boot.smp,
        match record.boot.path {
            crate::cli::BootPath::Direct => String::new(),
            other => format!(" [{}]", other.as_str()),
        }
    )
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
    use crate::boot::process::Ended;
    use crate::output::summary::tests::record;
    use abi::GuestExit;

    /// What Jenkins' junit-10.xsd (jenkinsci/xunit-plugin) allows on each
    /// element, and requires: checked here on every element we write (the
    /// schema itself was also run over real output with `xmlschema`, see
    /// README).
    fn allowed(element: &str) -> (&'static [&'static str], &'static [&'static str]) {
        match element {
            "testsuites" => (
                &["name", "time", "tests", "failures", "disabled", "errors"],
                &[],
            ),
            "testsuite" => (
                &[
                    "name",
                    "tests",
                    "failures",
                    "errors",
                    "time",
                    "disabled",
                    "skipped",
                    "skips",
                    "timestamp",
                    "hostname",
                    "id",
                    "package",
                    "assertions",
                    "file",
                    "skip",
                    "log",
                    "url",
                ],
                &["tests"],
            ),
            "testcase" => (
                &[
                    "name",
                    "assertions",
                    "time",
                    "timestamp",
                    "classname",
                    "status",
                    "class",
                    "file",
                    "line",
                    "log",
                    "group",
                    "url",
                ],
                &["name"],
            ),
            "properties" | "system-out" | "system-err" => (&[], &[]),
            "property" => (&["name", "value"], &["name", "value"]),
            "failure" | "error" | "skipped" => (&["type", "message"], &[]),
            other => panic!("<{other}> is not in junit-10.xsd"),
        }
    }

    fn children(parent: &str) -> &'static [&'static str] {
        match parent {
            "testsuites" => &["testsuite"],
            "testsuite" => &[
                "testsuite",
                "properties",
                "testcase",
                "system-out",
                "system-err",
            ],
            "testcase" => &["skipped", "error", "failure", "system-out", "system-err"],
            "properties" => &["property"],
            _ => &[],
        }
    }

    fn check(node: roxmltree::Node) {
        let name = node.tag_name().name();
        let (may, must) = allowed(name);
        for a in node.attributes() {
            assert!(
                may.contains(&a.name()),
                "<{name} {}=...> is not allowed",
                a.name()
            );
        }
        for m in must {
            assert!(node.has_attribute(*m), "<{name}> needs {m}");
        }
        for child in node.children().filter(|c| c.is_element()) {
            let c = child.tag_name().name();
            assert!(children(name).contains(&c), "<{c}> inside <{name}>");
            check(child);
        }
    }

    fn time(node: roxmltree::Node) -> f64 {
        node.attribute("time").unwrap().parse().unwrap()
    }

    #[test]
    fn jenkins_schema_holds_and_case_times_add_up_to_the_boot() {
        let shared = record(
            &["boot.smoke", "core.leak", "core.preempt"],
            Ended::Exited(GuestExit::Fail.qemu_status()),
            "KTAP version 1\n1..3\n# time: 12.345 ms\nok 1 boot.smoke\n# leaked 3 frames\n# time: 100.000 ms\nnot ok 2 core.leak\n# time: 0.007 ms\nok 3 core.preempt # SKIP one cpu\n",
        );
        // A boot that stopped in its second scenario: the rest of its
        // 210 ms is that one's, the third was never reached.
        let stopped = record(
            &["boot.smoke", "selftest.hang", "core.leak"],
            Ended::TimedOut(std::time::Duration::from_secs(3)),
            "KTAP version 1\n1..3\n# time: 10.000 ms\nok 1 boot.smoke\n# spinning\n",
        );
        let text = render(Mode::Run, &[shared, stopped], &[]);
        let doc = roxmltree::Document::parse(&text).expect("well-formed XML");
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "testsuites");
        check(root);
        let suites: Vec<_> = root.children().filter(|c| c.is_element()).collect();
        assert_eq!(suites.len(), 2);
        let cases = |s: &roxmltree::Node| -> Vec<f64> {
            s.children()
                .filter(|c| c.has_tag_name("testcase"))
                .map(|c| time(c))
                .collect()
        };
        assert_eq!(cases(&suites[0]), [0.012, 0.1, 0.0]);
        assert_eq!(cases(&suites[1]), [0.01, 0.2, 0.0]);
        // Cases never add up to more than their boot (the rest is QEMU's
        // start and the guest's); where one ended the boot, to exactly it.
        let sums: Vec<f64> = suites.iter().map(|s| cases(s).iter().sum()).collect();
        assert!(sums[0] <= time(suites[0]), "{sums:?}");
        assert!((sums[1] - time(suites[1])).abs() < 0.002, "{sums:?}");
    }

    #[test]
    fn a_near_miss_is_a_suite_property_and_its_testcases_warning() {
        let text = render(
            Mode::Test,
            &[crate::output::summary::tests::usage_record()],
            &[],
        );
        let doc = roxmltree::Document::parse(&text).expect("well-formed XML");
        check(doc.root_element());
        let warning = "near miss: task 4 'near-miss' used 15.2 KiB of 16 KiB (95 %), deepest in guest::scenarios::usage::near_miss_recurse";
        let property = doc
            .descendants()
            .find(|n| {
                n.has_tag_name("property")
                    && n.attribute("name") == Some("near-miss: stack.near_miss smp=4")
            })
            .expect("a near-miss property");
        assert_eq!(property.attribute("value"), Some(warning));
        let case = |name: &str| {
            doc.descendants()
                .find(|n| n.has_tag_name("testcase") && n.attribute("name") == Some(name))
                .unwrap()
        };
        let err = case("stack.near_miss smp=4")
            .children()
            .find(|c| c.has_tag_name("system-err"))
            .expect("the warning in system-err");
        assert_eq!(err.text(), Some(&*format!("warning: {warning}")));
        assert!(!case("stack.half_used smp=4")
            .children()
            .any(|c| c.has_tag_name("system-err")));
        assert_eq!(
            doc.descendants()
                .filter(|n| n.has_tag_name("property"))
                .count(),
            4
        );
    }

    #[test]
    fn escaping_keeps_xml_well_formed() {
        assert_eq!(
            escape("a<b & \"c\" 'd'>\x1b[0m\u{0}\n"),
            "a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;?[0m?\n"
        );
    }
}
