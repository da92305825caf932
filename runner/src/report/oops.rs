//! The human oops of a stack fault, read back line by line (`abi::oops`)
//! and held against the `GUARD-HIT` it comes with and against the ELF.
//!
//! The guest prints the oops from the record (`abi::oops::render`), so
//! every line must read exactly as the record renders: a line garbled,
//! cut, missing or not an oops line at all is caught here, naming it. What
//! the lines say is then held against ground truth: every `symbol+offset`
//! (the `RIP:` line and each `Call Trace` line) against the ELF's own
//! symbol table, here; the addresses, the byte count, the CPU and the
//! trace against the announcement, the hardware and the runner's unwind,
//! in `stack` and `trace`.

use super::{Check, Failure};
use crate::symbols::{SymbolAt, Symbolize};
use abi::guard::{Frame, GuardHit, Sym};
use abi::oops::Line;

/// How many mismatched lines one report names before it stops listing.
const SHOWN: usize = 3;

/// The oops block of the `GUARD-HIT` at `hit_line`: from its `BUG:` line
/// (the last one after the previous report) to the line before the record.
/// `None` if no `BUG:` line opens one.
pub fn block<'a>(lines: &[&'a str], hit_line: usize) -> Option<Vec<(usize, &'a str)>> {
    let end = hit_line.min(lines.len());
    // A report never spans another's record or a KTAP result.
    let boundary = |l: &&str| {
        l.contains("GUARD-HIT ")
            || l.contains("STACK-DUMP ")
            || l.starts_with("ok ")
            || l.starts_with("not ok ")
    };
    let after = lines[..end].iter().rposition(boundary).map_or(0, |i| i + 1);
    let start = after
        + lines[after..end]
            .iter()
            .position(|l| l.starts_with("BUG:"))?;
    Some((start..end).map(|i| (i, lines[i])).collect())
}

/// A line as a person would point at it.
pub fn label(line: &Line) -> &'static str {
    match line {
        Line::GuardBug { .. } | Line::PageFaultBug { .. } => "the `BUG:` line",
        Line::GuardOops { .. } | Line::OutsideOops { .. } => "the `Oops:` line",
        Line::AreaNote { .. } => "the line naming the fault address's owner",
        Line::Cpu { .. } => "the `CPU:` line",
        Line::Rip { .. } => "the `RIP:` line",
        Line::Rsp { .. } => "the `RSP:` line",
        Line::Regs { .. } => "a register line",
        Line::Cr { .. } => "the `CR2:` line",
        Line::Guard { .. } => "the `Guard:` line",
        Line::Depth(_) => "the `Recursion depth:` line",
        Line::StackUse { .. } => "the `Stack use:` line",
        Line::Evidence { .. } => "the `Evidence:` line",
        Line::CallTrace => "the `Call Trace:` line",
        Line::Frame { .. } => "a `Call Trace` line",
        Line::Repeat(_) => "a `... the frame above, N times in a row` line",
        Line::More => "the `... (more frames)` line",
        Line::End => "the `---[ end trace ]---` line",
    }
}

/// Every line of the oops must be what the record renders, in order.
pub fn check_lines(block: Option<&[(usize, &str)]>, hit: &GuardHit) -> Vec<Failure> {
    let fail = |detail: String| Failure {
        check: Check::OopsLine,
        detail,
    };
    let Some(block) = block else {
        return vec![fail(
            "no oops before the GUARD-HIT: no `BUG:` line opens one".into(),
        )];
    };
    let mut expected = Vec::new();
    let _ = abi::oops::render(hit, &mut |l| {
        expected.push(l);
        Ok(())
    });
    let mut out = Vec::new();
    for (k, want) in expected.iter().enumerate() {
        let Some(&(n, text)) = block.get(k) else {
            out.push(fail(format!(
                "the oops ends after {} lines; {} is missing: `{want}`",
                block.len(),
                label(want)
            )));
            break;
        };
        let got = Line::parse(text);
        if got.as_ref() != Some(want) {
            let what = match got {
                Some(_) => format!("{} (log line {})", label(want), n + 1),
                None => format!("log line {}, which is no oops line,", n + 1),
            };
            out.push(fail(format!(
                "{what} reads `{}`; the GUARD-HIT says `{want}`",
                text.trim_end()
            )));
        }
    }
    for &(n, text) in block.iter().skip(expected.len()) {
        out.push(fail(format!(
            "log line {} `{}` follows the end of the oops the GUARD-HIT states",
            n + 1,
            text.trim_end()
        )));
    }
    if out.len() > SHOWN {
        let more = out.len() - SHOWN;
        out.truncate(SHOWN);
        out.push(fail(format!("and {more} more oops line(s) like these")));
    }
    out
}

/// `symbol+offset` as the ELF names `addr` (a return address by its call,
/// `addr - 1`, with the offset of `addr`, as Linux's `%pB` does).
pub fn elf_sym(symbols: &dyn Symbolize, addr: u64, is_return: bool) -> Option<(SymbolAt, u64)> {
    let lookup = if is_return {
        addr.checked_sub(1)?
    } else {
        addr
    };
    let s = symbols.symbol(lookup)?;
    let off = addr - s.base;
    Some((s, off))
}

/// The ELF's name for an address, as the oops would print it.
pub fn elf_text(truth: &Option<(SymbolAt, u64)>) -> String {
    match truth {
        Some((s, off)) => {
            let name = s.names.first().map_or("?", String::as_str);
            let link = s.links.first().map(String::as_str).filter(|&l| l != name);
            Sym {
                name,
                link,
                off: (*off).into(),
                size: s.size.into(),
            }
            .to_string()
        }
        None => "no symbol".into(),
    }
}

fn sym_text(sym: &Option<Sym>) -> String {
    sym.map_or("?".into(), |s| s.to_string())
}

/// Whether the guest's `sym` for `addr` is the ELF's `truth`.
fn agrees(sym: &Option<Sym>, truth: &Option<(SymbolAt, u64)>) -> bool {
    match (sym, truth) {
        (None, None) => true,
        (Some(s), Some((t, off))) => {
            // The ELF's spelling, when printed, of the same symbol: a tool
            // looking it up with `nm` must land where the name says.
            let link_ok = s.link.is_none_or(|l| {
                t.names
                    .iter()
                    .zip(&t.links)
                    .any(|(n, link)| n == s.name && link == l)
            });
            t.names.iter().any(|n| n == s.name)
                && link_ok
                && s.off.get() == *off
                && s.size.get() == t.size
        }
        _ => false,
    }
}

/// Every `symbol+offset` the oops prints, against the ELF's symbol table.
/// A `?` for an address inside the guest's own text is wrong: the guest
/// could not name its own code.
pub fn check_symbols(hit: &GuardHit, symbols: &dyn Symbolize) -> Vec<Failure> {
    let mut out = Vec::new();
    let mut judge = |what: String, addr: u64, sym: &Option<Sym>, is_return: bool| {
        let truth = elf_sym(symbols, addr, is_return);
        if agrees(sym, &truth) {
            return;
        }
        let detail = match (sym, &truth) {
            (None, Some(_)) => format!(
                "{what} prints `?` for {addr:#x}, inside the guest's own text; the ELF says `{}`",
                elf_text(&truth)
            ),
            (None, None) => unreachable!("agrees"),
            (Some(_), None) if symbols.in_text(addr) => format!(
                "{what} names {addr:#x} `{}`, but no symbol of the ELF contains it",
                sym_text(sym)
            ),
            (Some(_), None) => format!(
                "{what} names {addr:#x} `{}`, an address outside the guest's text",
                sym_text(sym)
            ),
            (Some(_), Some(_)) => format!(
                "{what} names {addr:#x} `{}`; the ELF says `{}`",
                sym_text(sym),
                elf_text(&truth)
            ),
        };
        out.push(Failure {
            check: Check::Symbol,
            detail,
        });
    };
    judge("the `RIP:` line".into(), hit.rip.get(), &hit.rip_sym, false);
    for (k, f) in hit.backtrace.iter().enumerate() {
        let shown = trace_line(f);
        judge(
            format!("Call Trace line {} `{shown}`", k + 1),
            f.addr.get(),
            &f.sym,
            f.trap.is_none(),
        );
    }
    if out.len() > SHOWN {
        let more = out.len() - SHOWN;
        out.truncate(SHOWN);
        out.push(Failure {
            check: Check::Symbol,
            detail: format!("and {more} more wrongly named address(es)"),
        });
    }
    out
}

/// A trace line's text without its leading space, and its count when the
/// next line folds a run into it.
pub fn trace_line(f: &Frame) -> String {
    let mut s = Line::Frame {
        addr: f.addr.get(),
        sym: f.sym,
        trap: f.trap,
        size: f.size,
    }
    .to_string()
    .trim_start()
    .to_string();
    if f.repeat > 1 {
        s.push_str(&format!(" ({} times in a row)", f.repeat));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixture::{self, Answers, Log};

    /// The first report's failures from `check` (stack.recursion in `fixture::STACK`).
    fn first_report(
        log: &Log,
        check: impl Fn(Option<&[(usize, &str)]>, &GuardHit) -> Vec<Failure>,
    ) -> Vec<String> {
        let text = log.text();
        let events = crate::report::lines::parse(&text);
        let hit = &events.hits[0];
        let b = block(&events.lines, hit.line);
        check(b.as_deref(), hit)
            .into_iter()
            .map(|f| f.detail)
            .collect()
    }

    #[test]
    fn at_most_three_wrong_lines_are_shown_then_counted() {
        let garbled = |n: usize| {
            let mut log = Log::of(fixture::STACK);
            for reg in ["RAX:", "RDX:", "RBP:", "R10:", "R13:"].into_iter().take(n) {
                log = log.oops_text("stack.recursion", reg, "???");
            }
            first_report(&log, check_lines)
        };
        assert_eq!(garbled(0), Vec::<String>::new());
        assert_eq!(garbled(3).len(), 3, "{:#?}", garbled(3));
        let five = garbled(5);
        assert_eq!(five.len(), 4, "{five:#?}");
        assert_eq!(five[3], "and 2 more oops line(s) like these");
    }

    #[test]
    fn at_most_three_wrong_symbols_are_shown_then_counted() {
        let elf = Answers::load();
        let misnamed = |n: usize| {
            let log = Log::of(fixture::STACK).hit("stack.recursion", |v| {
                let frames = v["backtrace"].as_array_mut().unwrap();
                for f in frames.iter_mut().take(n) {
                    f["sym"]["name"] = serde_json::json!("guest::elsewhere");
                }
            });
            first_report(&log, |_, hit| check_symbols(hit, &elf))
        };
        assert_eq!(misnamed(0), Vec::<String>::new());
        assert_eq!(misnamed(3).len(), 3, "{:#?}", misnamed(3));
        let five = misnamed(5);
        assert_eq!(five.len(), 4, "{five:#?}");
        assert_eq!(five[3], "and 2 more wrongly named address(es)");
    }

    /// `?` is right where the ELF has no symbol either, and only there.
    #[test]
    fn a_question_mark_is_right_only_where_the_elf_knows_nothing() {
        let elf = Answers::load();
        let unnamed = |addr: &str| {
            let addr = addr.to_string();
            let log = Log::of(fixture::STACK).hit("stack.recursion", move |v| {
                v["backtrace"][0]["addr"] = serde_json::json!(addr);
                v["backtrace"][0]["sym"] = serde_json::Value::Null;
            });
            first_report(&log, |_, hit| check_symbols(hit, &elf))
        };
        assert_eq!(unnamed("0x10"), Vec::<String>::new());
        let known = fixture::STACK
            .lines()
            .find_map(|l| l.strip_prefix("GUARD-HIT "))
            .and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok())
            .map(|v| v["backtrace"][0]["addr"].as_str().unwrap().to_string())
            .unwrap();
        let d = unnamed(&known);
        assert_eq!(d.len(), 1, "{d:#?}");
        assert!(d[0].contains("prints `?`"), "{d:#?}");

        // A name for an address no symbol holds: in the text, or outside it.
        let named = |addr: u64| {
            let log = Log::of(fixture::STACK).hit("stack.recursion", move |v| {
                v["backtrace"][0]["addr"] = serde_json::json!(format!("{addr:#x}"));
            });
            first_report(&log, |_, hit| check_symbols(hit, &elf))
        };
        let known = u64::from_str_radix(known.trim_start_matches("0x"), 16).unwrap();
        let d = named(known + 1);
        assert_eq!(d.len(), 1, "{d:#?}");
        assert!(
            d[0].contains("but no symbol of the ELF contains it"),
            "{d:#?}"
        );
        let d = named(0x10);
        assert_eq!(d.len(), 1, "{d:#?}");
        assert!(
            d[0].contains("an address outside the guest's text"),
            "{d:#?}"
        );
    }
}
