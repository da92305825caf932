//! Properties the runner relies on: garbage never panics, a well-formed report
//! reads back exactly, and a cut-short report is never taken as complete.

use ktap::{parse, parse_bytes, Directive, Report, TestResult};
use proptest::prelude::*;

fn directive() -> impl Strategy<Value = Option<Directive>> {
    let reason = "([a-z0-9]([a-z0-9 ]{0,10}[a-z0-9])?)?";
    prop_oneof![
        3 => Just(None),
        1 => reason.prop_map(|r| Some(Directive::Skip(r))),
        1 => reason.prop_map(|r| Some(Directive::Todo(r))),
    ]
}

fn result() -> impl Strategy<Value = (String, bool, Option<Directive>, Vec<String>)> {
    (
        "[a-z][a-z0-9_.]{0,12}( [a-z0-9_.]{1,8}){0,2}",
        any::<bool>(),
        directive(),
        // Diagnostic text is anything printable on one line.
        prop::collection::vec("[ -~]{0,30}", 0..4),
    )
}

/// A generated report: its KTAP text and what parsing it must give.
fn report() -> impl Strategy<Value = (String, Report)> {
    (
        prop::collection::vec("[ -~&&[^#]][ -~]{0,20}", 0..3),
        prop::collection::vec(result(), 0..8),
    )
        .prop_map(|(preamble, results)| {
            let preamble: Vec<String> = preamble
                .into_iter()
                .filter(|l| {
                    !l.trim().is_empty()
                        && !l.starts_with("KTAP version ")
                        && !l.starts_with("TAP version ")
                })
                .map(|l| format!("boot: {l}"))
                .collect();
            let mut text: String = preamble.iter().map(|l| format!("{l}\n")).collect();
            text += &format!("KTAP version 1\n1..{}\n", results.len());
            let mut expected = Report {
                version: Some(1),
                plan: Some(results.len()),
                unknown_lines: preamble,
                ..Report::default()
            };
            for (i, (name, ok, directive, diagnostics)) in results.into_iter().enumerate() {
                for d in &diagnostics {
                    text += &format!("# {d}\n");
                }
                text += &format!("{} {} {name}", if ok { "ok" } else { "not ok" }, i + 1);
                match &directive {
                    Some(Directive::Skip(r)) => text += &format!(" # SKIP {r}"),
                    Some(Directive::Todo(r)) => text += &format!(" # TODO {r}"),
                    None => {}
                }
                text += "\n";
                expected.results.push(TestResult {
                    number: i + 1,
                    name,
                    ok,
                    directive,
                    diagnostics,
                });
            }
            (text, expected)
        })
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in ".{0,400}") {
        let _ = parse(&text);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = parse_bytes(&bytes);
    }

    #[test]
    fn ktap_shaped_noise_never_panics(
        lines in prop::collection::vec(
            prop_oneof![
                Just("KTAP version 1".to_string()),
                "1\\.\\.[0-9]{0,25}( #.{0,5})?",
                "(not )?ok {0,2}[0-9]{0,25}( -)?( .{0,10})?( # ?(SKIP|TODO|skip|x).{0,5})?",
                "[ \t]{0,3}#.{0,10}",
                ".{0,20}",
            ],
            0..30,
        )
    ) {
        let _ = parse(&lines.join("\n"));
    }

    #[test]
    fn well_formed_reports_read_back_exactly((text, expected) in report()) {
        let parsed = parse(&text);
        prop_assert!(parsed.is_complete(), "{:?}\n{}", parsed.problems, text);
        prop_assert_eq!(parsed, expected);
    }

    #[test]
    fn truncation_is_never_complete((text, _) in report(), cut in any::<prop::sample::Index>()) {
        let lines: Vec<&str> = text.lines().collect();
        let kept = cut.index(lines.len());
        prop_assume!(kept < lines.len());
        let truncated = lines[..kept].join("\n");
        let parsed = parse(&truncated);
        prop_assert!(!parsed.is_complete(), "cut at {} of\n{}", kept, text);
    }
}
