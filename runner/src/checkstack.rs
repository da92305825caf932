//! `runner checkstack`: the guest's functions by static stack frame size,
//! largest first, like Linux's `scripts/checkstack.pl`, each with its
//! demangled name and file:line. The sizes are `frames`' (each prologue
//! decoded and held against the CFI), not a pattern match on `objdump`
//! output. A frame larger than the guard gap can step over the guard
//! page: the guard catches it only if its prologue probes each page on
//! the way down, so those are flagged, probed or not.

use crate::cli::Options;
use crate::fatal::Fatal;
use crate::frames::{Probes, Size, StaticFrame, StaticFrames, Unsized};
use crate::status;
use crate::symbols::{Symbolize, Symbols};
use crate::workspace;
use std::path::PathBuf;

pub struct Args {
    /// The N largest; `None`: every function, the unsized ones too.
    pub top: Option<usize>,
    pub guard_gap: u64,
    /// Read this ELF instead of building the guest.
    pub elf: Option<PathBuf>,
}

/// One function as the table shows it.
pub struct Entry {
    pub name: String,
    /// Other names at the same address (folded functions).
    pub aliases: usize,
    pub location: Option<String>,
    pub frame: StaticFrame,
}

pub fn execute(args: &Args, options: &Options) -> Result<i32, Fatal> {
    let elf = match &args.elf {
        Some(path) if !path.is_file() => {
            return Err(Fatal::setup(format!(
                "--elf {}: {}: name the guest ELF (target/x86_64-unknown-none/release/guest), or drop --elf to build it",
                path.display(),
                if path.exists() { "not a file" } else { "no such file" }
            )))
        }
        Some(path) => path.clone(),
        None if options.no_build => workspace::prebuilt(options.defect)?.guest,
        None => workspace::build(options.defect)?.guest,
    };
    let frames = StaticFrames::load(&elf).map_err(Fatal::setup)?;
    // Assembly aside, every function of the guest has CFI: without it for
    // most, this is not the ELF to read (`guest.boot` has no .debug_frame).
    let without = frames
        .all()
        .iter()
        .filter(|f| f.size == Size::Unsized(Unsized::NoCfi))
        .count();
    if 2 * without > frames.all().len() {
        return Err(Fatal::setup(format!(
            "{}: {without} of {} functions have no call-frame information (.debug_frame): name the ELF with its debug sections (the guest, not guest.boot)",
            elf.display(),
            frames.all().len()
        )));
    }
    let symbols = Symbols::load(&elf).map_err(Fatal::setup)?;
    let entries = entries(&frames, &symbols);
    println!("{}", elf.display());
    for line in render(&entries, args.top, args.guard_gap) {
        println!("{line}");
    }
    Ok(status::OK)
}

/// Every function of `frames`, named.
pub fn entries(frames: &StaticFrames, symbols: &Symbols) -> Vec<Entry> {
    frames
        .all()
        .iter()
        .map(|f| {
            let names = Symbolize::symbol(symbols, f.start)
                .filter(|s| s.base == f.start)
                .map(|s| s.names)
                .unwrap_or_default();
            let location = symbols.frames(f.start).pop().and_then(|fr| fr.location);
            Entry {
                name: names
                    .first()
                    .cloned()
                    .unwrap_or_else(|| format!("{:#x}", f.start)),
                aliases: names.len().saturating_sub(1),
                location,
                frame: f.clone(),
            }
        })
        .collect()
}

/// What kind of frame a sized one is: `fp` (frame pointer), `nofp` (an
/// rsp-based CFA throughout), `none` (no frame set up: the return address
/// alone; a leaf or a tail-calling thunk).
fn kind(f: &StaticFrame) -> &'static str {
    match &f.size {
        Size::Known(p) if p.frame_pointer => "fp",
        Size::Known(p) if p.bytes == 8 && p.pushes.is_empty() => "none",
        Size::Known(_) => "nofp",
        Size::Unsized(_) => "-",
    }
}

/// The note after a sized frame: over the gap and how it is probed, or
/// realigned.
fn note(f: &StaticFrame, gap: u64) -> String {
    let Size::Known(p) = &f.size else {
        return String::new();
    };
    let mut parts = Vec::new();
    if p.bytes > gap {
        parts.push(match p.probes {
            Probes::None => "> guard gap, NOT PROBED: can step over the guard".to_string(),
            Probes::Unrolled(n) => format!("> guard gap, probed ({n} page{})", plural(n as u64)),
            Probes::Loop => "> guard gap, probed (loop)".to_string(),
            Probes::Call => "> guard gap, probed (__rust_probestack)".to_string(),
        });
    }
    if let Some(align) = p.realign {
        parts.push(format!("realigned to {align}: at most"));
    }
    parts.join("; ")
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

const NAME_WIDTH: usize = 64;

/// The table: the `top` largest sized frames (or every function), then a
/// summary of what was over the gap and what has no static size.
pub fn render(entries: &[Entry], top: Option<usize>, gap: u64) -> Vec<String> {
    let mut sized: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.frame.bytes().is_some())
        .collect();
    sized.sort_by(|a, b| {
        b.frame
            .bytes()
            .cmp(&a.frame.bytes())
            .then_with(|| a.name.cmp(&b.name))
            .then_with(|| a.frame.start.cmp(&b.frame.start))
    });
    let nosize: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.frame.bytes().is_none())
        .collect();
    let shown: Vec<&Entry> = match top {
        Some(n) => sized.iter().copied().take(n).collect(),
        None => sized.iter().chain(nosize.iter()).copied().collect(),
    };
    let label = |e: &Entry| match e.aliases {
        0 => e.name.clone(),
        n => format!("{} (+{n} alias{})", e.name, if n == 1 { "" } else { "es" }),
    };
    let width = shown
        .iter()
        .map(|e| label(e).chars().count())
        .max()
        .unwrap_or(8)
        .clamp(8, NAME_WIDTH);
    let mut out = vec![format!(
        "{:<16}  {:>7}  {:<4}  {:<width$}  location",
        "address", "bytes", "kind", "function"
    )];
    for e in &shown {
        let bytes = e.frame.bytes().map_or("-".into(), |b| b.to_string());
        let tail = match &e.frame.size {
            Size::Known(_) => note(&e.frame, gap),
            Size::Unsized(why) => why.describe(),
        };
        let line = format!(
            "{:016x}  {bytes:>7}  {:<4}  {:<width$}  {}{}{tail}",
            e.frame.start,
            kind(&e.frame),
            label(e),
            e.location.as_deref().unwrap_or("?"),
            if tail.is_empty() { "" } else { "  " },
        );
        out.push(line.trim_end().to_string());
    }
    let over: Vec<&&Entry> = sized
        .iter()
        .filter(|e| e.frame.bytes().is_some_and(|b| b > gap))
        .collect();
    let unprobed = over
        .iter()
        .filter(|e| matches!(&e.frame.size, Size::Known(p) if p.probes == Probes::None))
        .count();
    out.push(format!(
        "{} functions, {} sized; {} frame{} larger than the guard gap ({gap} bytes), {} of them without stack probes",
        entries.len(),
        sized.len(),
        over.len(),
        plural(over.len() as u64),
        unprobed
    ));
    let count = |want: fn(&Unsized) -> bool| {
        nosize
            .iter()
            .filter(|e| matches!(&e.frame.size, Size::Unsized(u) if want(u)))
            .count()
    };
    if !nosize.is_empty() {
        out.push(format!(
            "not sized: {} entry stubs (CFA loaded from memory), {} outermost, {} without CFI (assembly), {} unreadable{}",
            count(|u| *u == Unsized::Entry),
            count(|u| *u == Unsized::Outermost),
            count(|u| *u == Unsized::NoCfi),
            count(|u| matches!(u, Unsized::Unreadable(_))),
            if top.is_some() { "; --all lists them" } else { "" }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::Prologue;

    fn sized(name: &str, bytes: u64, probes: Probes) -> Entry {
        Entry {
            name: name.into(),
            aliases: 0,
            location: Some(format!("guest/src/{name}.rs:1")),
            frame: StaticFrame {
                start: bytes,
                end: bytes + 1,
                size: Size::Known(Prologue {
                    bytes,
                    setup: 0,
                    body: 0,
                    pushes: vec![(6, -16)],
                    adjust: bytes - 16,
                    frame_pointer: true,
                    probes,
                    realign: None,
                }),
            },
        }
    }

    fn table() -> Vec<Entry> {
        vec![
            sized("small", 32, Probes::None),
            sized("huge", 65560, Probes::Loop),
            sized("big", 8280, Probes::None),
            sized("page", 4096, Probes::None),
            Entry {
                name: "trap_common".into(),
                aliases: 0,
                location: None,
                frame: StaticFrame {
                    start: 1,
                    end: 2,
                    size: Size::Unsized(Unsized::Entry),
                },
            },
        ]
    }

    #[test]
    fn largest_first_with_the_guard_gap_flagged() {
        let out = render(&table(), Some(3), 4096);
        assert_eq!(out.len(), 1 + 3 + 2, "{out:#?}");
        assert!(
            out[1].starts_with("0000000000010018    65560  fp    huge "),
            "{}",
            out[1]
        );
        assert!(out[1].ends_with("> guard gap, probed (loop)"), "{}", out[1]);
        assert!(
            out[2].contains("big") && out[2].contains("NOT PROBED"),
            "{}",
            out[2]
        );
        // Exactly one page is not over a one-page gap.
        assert!(
            out[3].contains("page") && !out[3].contains("guard gap"),
            "{}",
            out[3]
        );
        assert!(
            out[4].starts_with("5 functions, 4 sized; 2 frames larger"),
            "{}",
            out[4]
        );
        assert!(
            out[4].ends_with("1 of them without stack probes"),
            "{}",
            out[4]
        );
        assert!(out[5].contains("1 entry stubs") && out[5].ends_with("--all lists them"));
    }

    #[test]
    fn all_lists_the_unsized_with_their_reason() {
        let out = render(&table(), None, 65536);
        assert_eq!(out.len(), 1 + 5 + 2);
        assert!(out[5].contains("trap_common") && out[5].contains("CFA is loaded from memory"));
        assert!(
            out[5].starts_with("0000000000000001        -  -     trap_common"),
            "{}",
            out[5]
        );
        assert!(out[6].contains("1 frame larger than the guard gap (65536 bytes), 0 of them"));
        assert!(!out[7].contains("--all"));
    }
}
