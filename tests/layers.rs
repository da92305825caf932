//! The guest's layers, enforced: a module may name only modules of its own
//! layer or below, and `unsafe` is denied above arch and mm.
//!
//! The order is the one `guest/src/main.rs` documents: the CPU at the bottom,
//! then locks and the console, memory, tasks and RCU, the test hooks, the
//! fault reports, and the scenarios on top. An upcall from a lower layer (a
//! trap handler reaching the scheduler or the oops code) goes through a
//! registration the higher layer makes at init, never through an import.
//! The crossings that remain are listed in `CROSSINGS`, each with the reason,
//! and the same sentence stands in the lower module's doc.
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// Top-level guest modules, lowest layer first; modules in one layer may
/// name each other.
const LAYERS: &[&[&str]] = &[
    &["arch"],
    &["sync"],
    &["console"],
    &["mm"],
    &["task", "rcu"],
    &["lkdtm"],
    &["oops"],
    &["boot", "ktap"],
    &["scenarios"],
];

/// Imports that go up a layer on purpose: (from, to, why). Each reason is
/// also written in `from`'s module doc.
const CROSSINGS: &[(&str, &str, &str)] = &[
    (
        "arch",
        "mm",
        "the LAPIC's registers and the ACPI tables are reached through mm's direct map",
    ),
    (
        "mm",
        "task",
        "an address space's deferred teardown runs in a worker task",
    ),
];

/// Modules of one layer that name each other: (a, b, why), the reason in
/// `a`'s module doc.
const MUTUAL: &[(&str, &str, &str)] = &[(
    "rcu",
    "task",
    "RCU and `task` are one layer and name each other, on purpose",
)];

/// Modules above arch and mm that only deny unsafe code, because one file
/// of theirs must allow what the lint flags; each such file may contain no
/// `unsafe` keyword, only the attribute the lint counts.
const DENY_WITH_ALLOW: &[(&str, &str, &str)] = &[("boot", "boot/requests.rs", "#[link_section")];

/// Modules above arch and mm: every one must deny unsafe code.
fn must_deny_unsafe(module: &str) -> bool {
    !matches!(module, "arch" | "mm")
}

fn guest_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest/src")
}

/// A module's `//!` doc as one line of words, and the file it is in.
fn module_doc(src: &Path, module: &str) -> (PathBuf, String) {
    let dir = src.join(module);
    let file = if dir.is_dir() {
        dir.join("mod.rs")
    } else {
        src.join(format!("{module}.rs"))
    };
    let text = fs::read_to_string(&file)
        .expect("read the module doc")
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("//!"))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ");
    (file, text)
}

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read guest/src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`arch` for
/// `arch/x86_64/trap.rs`), or `None` for the crate root.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "main").then(|| name.to_string())
}

/// Every top-level module named by a `crate::` path in `code` (comments
/// stripped), including each of `crate::{a, b::c}`.
fn named_modules(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in code.lines() {
        let line = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let head = item.trim().split("::").next().unwrap_or("");
                    if !head.is_empty() {
                        out.insert(head.to_string());
                    }
                }
            } else {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                out.insert(rest[..end].to_string());
            }
        }
    }
    out
}

/// Every import that goes up a layer and is not a listed crossing, as
/// "file: module -> module".
fn upward_imports(src: &Path) -> Vec<String> {
    scan(src, true).0
}

/// Every (from, to) pair that goes up a layer, listed crossings included.
fn upward_imports_ignoring_crossings(src: &Path) -> Vec<(String, String)> {
    scan(src, false).1
}

fn scan(src: &Path, honour_crossings: bool) -> (Vec<String>, Vec<(String, String)>) {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut bad = Vec::new();
    let mut pairs = Vec::new();
    for file in files {
        let Some(from) = module_of(src, &file) else {
            continue;
        };
        let from_rank = rank(&from)
            .unwrap_or_else(|| panic!("{}: module `{from}` is in no layer", file.display()));
        let code = fs::read_to_string(&file).expect("read a guest source file");
        for to in named_modules(&code) {
            let Some(to_rank) = rank(&to) else {
                // Not a module (a function of the crate root, say): the root
                // is above every layer, so naming it is going up.
                bad.push(format!(
                    "{}: {from} -> crate::{to} (the crate root)",
                    file.display()
                ));
                continue;
            };
            if to_rank > from_rank {
                pairs.push((from.clone(), to.clone()));
            }
            let allowed = to_rank <= from_rank
                || (honour_crossings && CROSSINGS.iter().any(|(f, t, _)| *f == from && *t == to));
            if !allowed {
                bad.push(format!("{}: {from} -> {to}", file.display()));
            }
        }
    }
    (bad, pairs)
}

#[test]
fn no_guest_module_imports_a_higher_layer() {
    let bad = upward_imports(&guest_src());
    assert!(
        bad.is_empty(),
        "imports that go up a layer (see LAYERS in tests/layers.rs; an upcall goes \
         through a registration, or the crossing is listed in CROSSINGS with its reason):\n{}",
        bad.join("\n")
    );
}

#[test]
fn every_listed_crossing_is_used_and_explained_in_the_lower_module() {
    let src = guest_src();
    for (from, to, why) in CROSSINGS {
        let (doc, doc_lines) = module_doc(&src, from);
        let used = upward_imports_ignoring_crossings(&src)
            .iter()
            .any(|(f, t)| f == from && t == to);
        assert!(
            used,
            "CROSSINGS lists {from} -> {to}, which no file makes: remove it"
        );
        assert!(
            doc_lines.contains(why),
            "{}'s module doc must say why it names {to}: \"{why}\"",
            doc.display()
        );
    }
}

/// Every pair of modules that name each other is either a listed upward
/// crossing (one direction) or listed in `MUTUAL`, with its reason in the
/// first module's doc.
#[test]
fn every_mutual_import_is_named_and_explained() {
    let src = guest_src();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges = BTreeSet::new();
    for file in files {
        let Some(from) = module_of(&src, &file) else {
            continue;
        };
        let code = fs::read_to_string(&file).expect("read a guest source file");
        for to in named_modules(&code) {
            if to != from && rank(&to).is_some() {
                edges.insert((from.clone(), to));
            }
        }
    }
    for (a, b) in &edges {
        if a > b || !edges.contains(&(b.clone(), a.clone())) {
            continue;
        }
        let crossing = CROSSINGS
            .iter()
            .any(|(f, t, _)| (f == a && t == b) || (f == b && t == a));
        let mutual = MUTUAL
            .iter()
            .find(|(x, y, _)| (x == a && y == b) || (x == b && y == a));
        assert!(
            crossing || mutual.is_some(),
            "{a} and {b} name each other: list them in MUTUAL with the reason, or break the cycle"
        );
        if let Some((x, _, why)) = mutual {
            let (doc, text) = module_doc(&src, x);
            assert!(
                text.contains(why),
                "{}'s doc must say: \"{why}\"",
                doc.display()
            );
        }
    }
}

#[test]
fn every_module_above_arch_and_mm_denies_unsafe_code() {
    let root = fs::read_to_string(guest_src().join("main.rs")).expect("read main.rs");
    let lines: Vec<&str> = root.lines().map(str::trim).collect();
    for layer in LAYERS {
        for module in layer.iter().filter(|m| must_deny_unsafe(m)) {
            let decl = format!("mod {module};");
            let i = lines
                .iter()
                .position(|l| l.ends_with(&decl))
                .unwrap_or_else(|| panic!("main.rs declares no `{decl}`"));
            let attrs = lines[..i]
                .iter()
                .rev()
                .take_while(|l| l.starts_with("#[") || l.starts_with("//"));
            let has =
                |attr: &str| lines[i].contains(attr) || attrs.clone().any(|a| a.contains(attr));
            let exception = DENY_WITH_ALLOW.iter().find(|(m, _, _)| m == module);
            match exception {
                None => assert!(
                    has("#[forbid(unsafe_code)]"),
                    "main.rs: `{decl}` must carry #[forbid(unsafe_code)]: only arch and mm may \
                     use unsafe"
                ),
                Some(_) => assert!(
                    has("#[deny(unsafe_code)]"),
                    "main.rs: `{decl}` must carry #[deny(unsafe_code)]"
                ),
            }
        }
    }
    // Where a module only denies, the one file that allows holds nothing
    // unsafe but the attribute the lint counts, and nothing else allows.
    let mut files = Vec::new();
    rust_files(&guest_src(), &mut files);
    for file in files {
        let rel = file
            .strip_prefix(guest_src())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let text = fs::read_to_string(&file).expect("read a guest source file");
        if !text.contains("allow(unsafe_code)") {
            continue;
        }
        let (_, _, attr) = DENY_WITH_ALLOW
            .iter()
            .find(|(_, f, _)| *f == rel)
            .unwrap_or_else(|| panic!("{rel} allows unsafe code: only DENY_WITH_ALLOW files may"));
        assert!(
            text.contains(attr),
            "{rel} allows unsafe code but has no {attr}"
        );
        let code: String = text
            .lines()
            .map(|l| l.split("//").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(!code.contains("unsafe "), "{rel} may hold no unsafe code");
    }
}

#[test]
fn the_check_sees_an_upward_import_in_every_form() {
    let found = named_modules(
        "use crate::task::Task;\n\
         use crate::{oops, mm::stack};\n\
         let x = crate::lkdtm::fire(); // crate::boot is a comment\n",
    );
    let want: BTreeSet<String> = ["task", "oops", "mm", "lkdtm"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(found, want);
}

/// The runner's commands (`session` and the subcommands) sit on top: what
/// reports and records results never names them, so the outputs are written
/// from plain run records (`record.rs`), not from the session that made them.
#[test]
fn runner_outputs_and_reports_name_no_command() {
    const COMMANDS: &[&str] = &["session", "mutants", "bench", "demo", "compare_boot"];
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    for dir in ["output", "report", "boot"] {
        rust_files(&src.join(dir), &mut files);
    }
    files.push(src.join("record.rs"));
    let mut bad = Vec::new();
    for file in files {
        let code = fs::read_to_string(&file).expect("read a runner source file");
        for to in named_modules(&code) {
            if COMMANDS.contains(&to.as_str()) {
                bad.push(format!("{}: names crate::{to}", file.display()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "lower runner modules naming a command:\n{}",
        bad.join("\n")
    );
}
