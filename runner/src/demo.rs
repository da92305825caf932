//! `runner demo` (`make demo`): boot a few stack scenarios and show each
//! diagnostic the way a person wants to read it: the guest's oops as it
//! printed it, the runner's own unwind of the dumped stack (DWARF CFI, with
//! file:line from the ELF's line tables) beside it, whether the two agree,
//! and a picture of the stack area with the hit marked.

use crate::cli::Options;
use crate::fatal::Fatal;
use crate::record::Mode;
use crate::report;
use crate::report::lines::{self, Alloc, Hit};
use crate::select;
use crate::session;
use crate::symbols::Symbols;

/// What `make demo` shows when no pattern is given.
pub const DEFAULT: &[&str] = &[
    "stack.recursion",
    "stack.underflow",
    "stack.probe_skip",
    "stack.exception",
    "stack.irq",
];

const PAGE: u64 = 4096;

/// Boot the scenarios matching `patterns` (default: `DEFAULT`) and print
/// each one's diagnostics. Returns the run's status, like `runner run`.
pub fn execute(patterns: &[String], options: &Options) -> Result<i32, Fatal> {
    let patterns: Vec<String> = if patterns.is_empty() {
        DEFAULT.iter().map(|s| s.to_string()).collect()
    } else {
        patterns.to_vec()
    };
    let chosen = select::by_patterns(abi::SCENARIOS, &patterns).map_err(Fatal::usage)?;
    let smp = options.smp.unwrap_or(1);
    let wanted: Vec<(&'static abi::Scenario, u32)> = chosen.into_iter().map(|s| (s, smp)).collect();
    let boots = select::boots(options.boot, &wanted);
    let setup = session::setup(options, &[options.boot])?;
    let records = session::boot_all(Mode::Run, &setup, boots, options)?;
    for record in &records {
        let serial = std::fs::read(&record.serial_log).unwrap_or_default();
        let serial = String::from_utf8_lossy(&serial);
        for result in &record.results {
            let verdict = result.guard.as_ref().map(|g| g.describe());
            println!();
            for line in render(
                result.scenario.name,
                verdict.as_deref(),
                &serial,
                setup.symbols.as_ref(),
            ) {
                println!("{line}");
            }
            match write_svg(result.scenario.name, &serial) {
                Ok(Some(path)) => println!("picture: {}", path.display()),
                Ok(None) => {}
                Err(e) => eprintln!("runner: warning: {e}"),
            }
        }
    }
    println!();
    println!("serial logs: {}", setup.run_dir.display());
    Ok(session::exit_status(Mode::Run, &records))
}
const WIDTH: usize = 44;

/// `<target>/demo/SCENARIO.svg`: the stack area with the first hit's
/// frames to scale (`stack_map`); `None` for a scenario with no hit or no
/// announced stack.
fn write_svg(scenario: &str, serial: &str) -> Result<Option<std::path::PathBuf>, String> {
    let events = lines::parse(serial);
    let Some(hit) = events.hits_of(scenario).next() else {
        return Ok(None);
    };
    let Some(alloc) = events
        .allocs_of(scenario)
        .find(|a| a.task_id == hit.task_id && a.cpu == hit.cpu)
        .or_else(|| events.allocs_of(scenario).next())
    else {
        return Ok(None);
    };
    let dir = crate::workspace::target_dir().join("demo");
    let path = dir.join(format!("{scenario}.svg"));
    let svg = crate::stack_map::svg(alloc, hit, &crate::stack_map::bands(hit));
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&path, svg))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(Some(path))
}

/// The demo text for one scenario of one boot's serial log.
pub fn render(
    scenario: &str,
    verdict: Option<&str>,
    serial: &str,
    symbols: Option<&Symbols>,
) -> Vec<String> {
    let events = lines::parse(serial);
    let lines: Vec<&str> = serial.lines().collect();
    let mut out = vec![format!("━━━ {scenario} ━━━")];
    if let Some(v) = verdict {
        out.push(format!("runner's verdict: {v}"));
    }
    let allocs: Vec<&Alloc> = events.allocs_of(scenario).collect();
    let hits: Vec<&Hit> = events.hits_of(scenario).collect();
    if hits.is_empty() {
        out.push("no GUARD-HIT: nothing caught the fault".into());
        for c in events.corruptions_of(scenario) {
            out.push(format!(
                "found afterwards: {} is {:#x}, expected {:#x} (stack {:#x}..{:#x})",
                c.what, c.found.0, c.expected.0, c.lo.0, c.hi.0
            ));
        }
        if let Some(a) = allocs.first() {
            out.push(String::new());
            out.extend(picture(a, None));
        }
        return out;
    }
    // The first report tells the story; the others are alike (suppressed
    // storms and one-per-CPU runs say how many there were).
    let hit = hits[0];
    if hits.len() > 1 {
        out.push(format!("{} reports; the first:", hits.len()));
    }
    out.push(String::new());
    out.push("── the guest's oops ──".into());
    out.extend(oops(&lines, hit.line).iter().map(|l| format!("  {l}")));
    let alloc = allocs
        .iter()
        .find(|a| a.task_id == hit.task_id && a.cpu == hit.cpu)
        .or(allocs.first());
    out.push(String::new());
    out.push("── unwound by the runner from the dumped stack (DWARF CFI, file:line) ──".into());
    match symbols {
        Some(symbols) => out.extend(unwound(&events, hit, alloc.copied(), symbols)),
        None => out.push("  (no guest ELF to read)".into()),
    }
    out.push(String::new());
    out.push("── the stack area ──".into());
    match alloc {
        Some(a) => out.extend(picture(a, Some(hit))),
        None => out.push("  (the scenario announced no stack)".into()),
    }
    out
}

/// The oops lines the guest printed before the GUARD-HIT at `hit_line`:
/// back to the `BUG:` line that opens it.
pub fn oops<'a>(lines: &[&'a str], hit_line: usize) -> Vec<&'a str> {
    crate::report::oops::block(lines, hit_line)
        .unwrap_or_default()
        .into_iter()
        .map(|(_, l)| l.trim_end())
        .collect()
}

/// The runner's unwind of the hit's dumped stack, frame by frame with
/// file:line (a recursion folded), then whether the guest's trace agrees.
fn unwound(
    events: &lines::Events,
    hit: &Hit,
    alloc: Option<&Alloc>,
    symbols: &Symbols,
) -> Vec<String> {
    use crate::unwind::Kind;
    let Some(dump) = report::trace::dump_of(events, hit, alloc) else {
        return vec![
            "  (no STACK-DUMP with this report: only a scenario's first hit has one)".into(),
        ];
    };
    let kind = alloc.map(|a| a.stack_kind).or(hit.stack_kind);
    let judged = report::trace::judge(hit, kind, dump, symbols);
    let mut out = Vec::new();
    if let Some(u) = &judged.unwind {
        let seen = crate::unwind::frame_pointer_view(&u.frames);
        let mut i = 0;
        while i < u.frames.len() {
            let f = u.frames[i];
            let run = u.frames[i..]
                .iter()
                .take_while(|g| g.pc == f.pc && g.kind == f.kind)
                .count();
            let label = match f.kind {
                Kind::Fault => "RIP",
                Kind::Interrupted => "trap",
                Kind::Return => "",
            };
            let mut notes = String::new();
            if run > 1 {
                notes.push_str(&format!(" (x{run})"));
            }
            if f.kind == Kind::Interrupted {
                notes.push_str(" (interrupted)");
            }
            if i > 0 && !seen.iter().any(|s| s.pc == f.pc && s.kind == f.kind) {
                notes.push_str(" (not visible to frame pointers)");
            }
            out.extend(frame_lines(symbols, label, f.pc, f.lookup_pc(), &notes));
            i += run;
        }
        out.push(format!("  ends: {}", match &u.end {
            crate::unwind::End::Outermost => "the task's outermost frame (its entry trampoline)".to_string(),
            crate::unwind::End::LeftStack { addr } => format!("the next frame is off this stack ({addr:#x}): the interrupted context"),
            crate::unwind::End::NoCfi { pc } => format!("no call-frame information for {pc:#x}"),
            crate::unwind::End::Broken(why) => why.clone(),
        }));
    }
    let mine: Vec<_> = judged
        .failures
        .iter()
        .filter(|f| {
            matches!(
                f.check,
                report::Check::Unwind | report::Check::Depth | report::Check::Context
            )
        })
        .collect();
    if mine.is_empty() {
        out.push(format!(
            "  the guest's Call Trace: the same {} frame(s), in the same order{}",
            abi::guard::unfold(&hit.backtrace).count(),
            hit.depth
                .map_or(String::new(), |d| format!("; depth {d} fits the frames"))
        ));
    } else {
        for f in mine {
            out.push(format!("  ✗ {}: {}", f.check.name(), f.detail));
        }
    }
    out
}

/// One frame's lines: its symbol, file:line, and what was inlined into it.
fn frame_lines(symbols: &Symbols, label: &str, addr: u64, lookup: u64, notes: &str) -> Vec<String> {
    let frames = symbols.frames(lookup);
    if frames.is_empty() {
        return vec![format!("  {label:>4} {addr:016x} ?{notes}")];
    }
    let mut out = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        let name = if i == 0 {
            // Named as the oops names it (a return address by its call,
            // with its own offset), when the symbol is this function.
            let sym = report::oops::elf_sym(symbols, addr, lookup != addr);
            Some(report::oops::elf_text(&sym))
                .filter(|s| sym.is_some() && s.starts_with(f.function.as_str()))
                .unwrap_or_else(|| f.function.clone())
        } else {
            format!("(inlined into the next) {}", f.function)
        };
        let at = f
            .location
            .as_ref()
            .map(|l| format!(" at {l}"))
            .unwrap_or_default();
        let (label, notes) = if i == 0 { (label, notes) } else { ("", "") };
        out.push(format!("  {label:>4} {addr:016x} {name}{at}{notes}"));
    }
    out
}

/// An ASCII map of the announced stack and its guard pages, high addresses
/// on top (stacks grow down), with the fault address marked.
pub fn picture(a: &Alloc, hit: Option<&Hit>) -> Vec<String> {
    let below = a.lo.0.saturating_sub(a.guard_below * PAGE);
    let above = a.hi.0 + a.guard_above * PAGE;
    let fault = hit.map(|h| h.fault_addr.0);
    let rule = format!("+{}+", "-".repeat(WIDTH));
    let boxed = |text: &str| format!("|{text:<WIDTH$}|");
    let addr_line = |addr: u64, tail: &str| format!("  {addr:016x} {rule}{tail}");
    let body = |text: &str| format!("  {:16} {}", "", boxed(text));
    let mark = |addr: u64| {
        format!(
            "  {addr:016x} {}  <-- hit here (cr2)",
            boxed(&format!("  X {}", describe_fault(a, addr)))
        )
    };
    let mut out = Vec::new();
    let marked = std::cell::Cell::new(false);
    let mark_if = |out: &mut Vec<String>, lo: u64, hi: u64| {
        if let Some(f) = fault {
            if !marked.get() && (lo..hi).contains(&f) {
                out.push(mark(f));
                marked.set(true);
            }
        }
    };
    // Beyond the upper guard (an underflow that jumped it).
    if let Some(f) = fault.filter(|&f| f >= above) {
        out.push(mark(f));
        out.push(body("  ... (not this stack's)"));
        marked.set(true);
    }
    out.push(addr_line(above, ""));
    if a.guard_above > 0 {
        out.push(body(&format!(
            " guard page above ({} page, unmapped)",
            a.guard_above
        )));
        mark_if(&mut out, a.hi.0, above);
    }
    out.push(addr_line(a.hi.0, "  <- stack top (hi)"));
    out.push(body(&format!(
        " {} stack, {} KiB",
        a.stack_kind.linux_name(),
        (a.hi.0 - a.lo.0) / 1024
    )));
    out.push(body(&format!(
        "   task {} '{}', CPU {}",
        a.task_id, a.task_name, a.cpu
    )));
    if let Some(h) = hit {
        if (a.lo.0..a.hi.0).contains(&h.rsp.0) || h.rsp.0 == a.lo.0 {
            out.push(body(&format!("   rsp {:#x}", h.rsp.0)));
        }
    }
    out.push(body("   grows down ↓"));
    // The hit's frames, top down, where their sizes place them.
    if let Some(h) = hit {
        for b in crate::stack_map::bands(h).iter().rev() {
            if b.lo >= a.lo.0.saturating_sub(a.guard_below * PAGE) && b.hi <= a.hi.0 {
                out.push(format!(
                    "  {:016x} {}",
                    b.hi,
                    boxed(
                        &format!("   ▔ {}", b.label())
                            .chars()
                            .take(WIDTH)
                            .collect::<String>()
                    )
                ));
            }
        }
    }
    mark_if(&mut out, a.lo.0, a.hi.0);
    out.push(addr_line(a.lo.0, "  <- stack bottom (lo)"));
    if a.guard_below > 0 {
        out.push(body(&format!(
            " guard page below ({} page, unmapped)",
            a.guard_below
        )));
        mark_if(&mut out, below, a.lo.0);
        out.push(addr_line(below, ""));
    } else {
        out.push(body(" no guard page: whatever lies below"));
    }
    if let Some(f) = fault.filter(|_| !marked.get()) {
        out.push(body("  ... (not this stack's)"));
        out.push(mark(f));
    }
    out
}

fn describe_fault(a: &Alloc, addr: u64) -> String {
    if addr < a.lo.0 {
        format!("{} bytes below the stack", a.lo.0 - addr)
    } else if addr >= a.hi.0 {
        format!("{} bytes above the stack", addr - a.hi.0 + 1)
    } else {
        "inside the stack".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::lines::{parse, tests as lines};

    #[test]
    fn the_picture_marks_the_hit_where_it_is() {
        let log = format!("{}\n{}\n", lines::alloc(), lines::hit());
        let e = parse(&log);
        let pic = picture(&e.allocs[0], Some(&e.hits[0]));
        let text = pic.join("\n");
        let hit = pic
            .iter()
            .position(|l| l.ends_with("<-- hit here (cr2)"))
            .unwrap();
        let lo = pic.iter().position(|l| l.contains("stack bottom")).unwrap();
        let end = pic
            .iter()
            .position(|l| l.contains("ffffc9000001e000"))
            .unwrap();
        assert!(lo < hit && hit < end, "{text}");
        assert!(
            pic[hit].contains("ffffc9000001ef48") && pic[hit].contains("184 bytes below"),
            "{text}"
        );
        assert!(
            text.contains("ffffc90000024000") && text.contains("TASK stack, 16 KiB"),
            "{text}"
        );
        // Every box line has the same width.
        let widths: Vec<usize> = pic
            .iter()
            .map(|l| l.find("|").map_or(0, |_| l.chars().count()))
            .collect();
        assert!(
            widths.iter().filter(|&&w| w > 0).all(|&w| w >= WIDTH),
            "{text}"
        );

        // A jumped guard is marked below the guard, outside the box.
        let far = lines::hit().replace("0xffffc9000001ef48", "0xffffc9000001dbf8");
        let log = format!("{}\n{far}\n", lines::alloc());
        let e = parse(&log);
        let pic = picture(&e.allocs[0], Some(&e.hits[0]));
        assert!(
            pic.last().unwrap().contains("ffffc9000001dbf8"),
            "{}",
            pic.join("\n")
        );
        // An underflow is marked in the upper guard.
        let up = lines::hit().replace("0xffffc9000001ef48", "0xffffc90000023038");
        let log = format!("{}\n{up}\n", lines::alloc());
        let e = parse(&log);
        let pic = picture(&e.allocs[0], Some(&e.hits[0]));
        let hit = pic
            .iter()
            .position(|l| l.ends_with("<-- hit here (cr2)"))
            .unwrap();
        let top = pic.iter().position(|l| l.contains("stack top")).unwrap();
        assert!(
            hit < top && pic[hit].contains("57 bytes above"),
            "{}",
            pic.join("\n")
        );
    }

    #[test]
    fn the_oops_is_cut_from_its_bug_line() {
        let log = "ok 1 x\nBUG: old\nok 2 y\nBUG: TASK stack guard page was hit\nOops: ...\n# diag\nCall Trace:\nGUARD-HIT {}\n";
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(
            oops(&lines, 7),
            [
                "BUG: TASK stack guard page was hit",
                "Oops: ...",
                "# diag",
                "Call Trace:"
            ]
        );
        // Never back past another report's record.
        let log = "BUG: a\nGUARD-HIT {}\nSTACK-DUMP {}\nCall Trace:\nGUARD-HIT {}\n";
        let lines: Vec<&str> = log.lines().collect();
        assert!(oops(&lines, 4).is_empty());
    }
}
