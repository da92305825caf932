//! Recognising one line of KTAP on its own, without context.

use crate::report::Directive;

#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    Version(u32),
    Plan(usize),
    Result {
        number: usize,
        name: &'a str,
        ok: bool,
        directive: Option<Directive>,
    },
    Diagnostic(&'a str),
    /// Indented: a subtest's line, kept whole.
    Nested(&'a str),
    Blank,
    Unknown,
}

pub fn classify(line: &str) -> Line<'_> {
    if line.trim().is_empty() {
        return Line::Blank;
    }
    if line.starts_with([' ', '\t']) {
        return Line::Nested(line);
    }
    if let Some(text) = line.strip_prefix('#') {
        return Line::Diagnostic(text.strip_prefix(' ').unwrap_or(text));
    }
    version(line)
        .map(Line::Version)
        .or_else(|| plan(line).map(Line::Plan))
        .or_else(|| result(line))
        .unwrap_or(Line::Unknown)
}

fn version(line: &str) -> Option<u32> {
    // kunit.py accepts TAP 13/14 headers too; so do we.
    let rest = line
        .strip_prefix("KTAP version ")
        .or_else(|| line.strip_prefix("TAP version "))?;
    rest.trim_end().parse().ok()
}

fn plan(line: &str) -> Option<usize> {
    let rest = line.strip_prefix("1..")?;
    // `1..0 # SKIP reason` is a valid (empty) plan.
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let (digits, tail) = rest.split_at(end);
    let tail = tail.trim_start();
    if !tail.is_empty() && !tail.starts_with('#') {
        return None;
    }
    digits.parse().ok()
}

fn result(line: &str) -> Option<Line<'_>> {
    let (ok, rest) = if let Some(rest) = line.strip_prefix("ok ") {
        (true, rest)
    } else if let Some(rest) = line.strip_prefix("not ok ") {
        (false, rest)
    } else {
        return None;
    };
    let rest = rest.trim_start();
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let (digits, tail) = rest.split_at(end);
    let number = digits.parse().ok()?;
    if !tail.is_empty() && !tail.starts_with([' ', '\t']) {
        return None;
    }
    let tail = tail.trim_start();
    let tail = tail.strip_prefix("- ").unwrap_or(tail);
    let (name, directive) = split_directive(tail);
    Some(Line::Result {
        number,
        name: name.trim(),
        ok,
        directive,
    })
}

/// `name # SKIP reason` → (`name`, Skip(`reason`)). A `#` that does not start
/// a known directive stays part of the name.
fn split_directive(text: &str) -> (&str, Option<Directive>) {
    for (at, _) in text.match_indices('#') {
        let after = text[at + 1..].trim_start();
        let keyword = after.get(..4).unwrap_or("");
        let reason_start = after.get(4..).unwrap_or("");
        if !(reason_start.is_empty() || reason_start.starts_with([' ', '\t'])) {
            continue;
        }
        let reason = reason_start.trim().to_string();
        let directive = if keyword.eq_ignore_ascii_case("SKIP") {
            Directive::Skip(reason)
        } else if keyword.eq_ignore_ascii_case("TODO") {
            Directive::Todo(reason)
        } else {
            continue;
        };
        return (&text[..at], Some(directive));
    }
    (text, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(number: usize, name: &str, ok: bool, directive: Option<Directive>) -> Line<'_> {
        Line::Result {
            number,
            name,
            ok,
            directive,
        }
    }

    #[test]
    fn recognises_each_kind() {
        assert_eq!(classify("KTAP version 1"), Line::Version(1));
        assert_eq!(classify("TAP version 14"), Line::Version(14));
        assert_eq!(classify("1..7"), Line::Plan(7));
        assert_eq!(classify("1..0 # SKIP nothing"), Line::Plan(0));
        assert_eq!(
            classify("ok 1 boot.smoke"),
            res(1, "boot.smoke", true, None)
        );
        assert_eq!(classify("not ok 12 - x y"), res(12, "x y", false, None));
        assert_eq!(classify("ok 3"), res(3, "", true, None));
        assert_eq!(
            classify("ok 2 t # SKIP no smp"),
            res(2, "t", true, Some(Directive::Skip("no smp".into())))
        );
        assert_eq!(
            classify("not ok 2 t #todo"),
            res(2, "t", false, Some(Directive::Todo(String::new())))
        );
        assert_eq!(classify("ok 2 a#b # x"), res(2, "a#b # x", true, None));
        assert_eq!(classify("# hello"), Line::Diagnostic("hello"));
        assert_eq!(classify("#"), Line::Diagnostic(""));
        assert_eq!(classify("    ok 1 sub"), Line::Nested("    ok 1 sub"));
        assert_eq!(classify("  \t "), Line::Blank);
    }

    #[test]
    fn rejects_lookalikes() {
        for line in [
            "ok",
            "ok x",
            "ok 1x name",
            "not ok",
            "okay 1 x",
            "ok 99999999999999999999999999 x",
            "KTAP version one",
            "1..",
            "1..3x",
            "2..3",
            "PANIC cpu=0 src/main.rs:1 boom",
        ] {
            assert_eq!(classify(line), Line::Unknown, "{line:?}");
        }
    }
}
