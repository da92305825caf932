//! End to end: the assembly entry code has line numbers. A return into
//! `trap_common` (the trap frame under a fault in the #PF handler,
//! `stack.exception`) and into `task_entry_trampoline` (every task's
//! outermost frame) are told with the `.rs` file and the line their `call`
//! is written on, by the runner's own unwind (`runner demo`: the
//! `addr2line` crate over the guest's DWARF) and, where binutils is
//! installed, by `addr2line` itself, what decode_stacktrace.sh runs. The
//! rows are `guest/src/arch/x86_64/asm_lines.rs`'s; without them both
//! frames have no line.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root, which the guest's source paths are relative to.
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// `runner demo` of `scenarios` (one boot): its output and the guest ELF
/// that booted.
fn demo(scenarios: &[&str]) -> (String, PathBuf) {
    let out = Command::new(env!("CARGO_BIN_EXE_runner"))
        .arg("demo")
        .args(scenarios)
        .output()
        .expect("the runner starts");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "runner demo: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let run = stdout
        .lines()
        .find_map(|l| l.strip_prefix("serial logs: "))
        .expect("demo names its run directory");
    let elf = Path::new(run).join("images").join("guest");
    (stdout, elf)
}

/// The runner's unwound frames (not the guest's own Call Trace): each
/// line's address, its symbol+offset, and `path:line` if it has one.
fn unwound(demo: &str) -> Vec<(u64, String, Option<String>)> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in demo.lines() {
        if line.starts_with("──") || line.starts_with("━━━") {
            inside = line.contains("unwound by the runner");
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        // `  [RIP|trap] ADDR NAME [at PATH:LINE] [notes]`
        let Some(at) = words.iter().position(|w| w.len() == 16) else {
            continue;
        };
        let (Some(addr), Some(name)) = (u64::from_str_radix(words[at], 16).ok(), words.get(at + 1))
        else {
            continue;
        };
        if inside {
            let location = words
                .windows(2)
                .find(|w| w[0] == "at")
                .map(|w| w[1].to_string());
            out.push((addr, name.to_string(), location));
        }
    }
    out
}

/// Line `n` (1-based) of the repository file `path`.
fn source_line(path: &str, n: usize) -> String {
    let text = std::fs::read_to_string(root().join(path))
        .unwrap_or_else(|e| panic!("{path}: {e} (not a file of this repository?)"));
    text.lines().nth(n - 1).unwrap_or_default().to_string()
}

/// binutils' answer for `addr`, if binutils is installed.
fn binutils_addr2line(elf: &Path, addr: u64) -> Option<String> {
    let out = Command::new("addr2line")
        .arg("-e")
        .arg(elf)
        .arg(format!("{addr:x}"))
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    Some(text.lines().next().unwrap_or_default().to_string())
}

#[test]
fn assembly_frames_have_the_file_and_line_of_their_call() {
    let (out, elf) = demo(&["stack.recursion", "stack.exception"]);
    let frames = unwound(&out);
    let mut seen = 0;
    // Each entry routine, the file it is written in and the instruction
    // its return address follows (the unwinder looks a return address up
    // one byte back, in the call).
    for (name, file, call) in [
        (
            "trap_common+",
            "guest/src/arch/x86_64/trap.rs",
            "call {exception}",
        ),
        (
            "task_entry_trampoline+",
            "guest/src/arch/x86_64/context.rs",
            "call r12",
        ),
    ] {
        let matching: Vec<_> = frames.iter().filter(|f| f.1.starts_with(name)).collect();
        assert!(!matching.is_empty(), "no `{name}` frame unwound in\n{out}");
        for (addr, symbol, location) in matching {
            let Some(location) = location else {
                panic!("`{symbol}` ({addr:#x}) has no file:line in the runner's unwind:\n{out}");
            };
            let (path, line) = location.rsplit_once(':').unwrap();
            assert_eq!(path, file, "`{symbol}` at {location}");
            let n: usize = line.parse().expect("a line number");
            let text = source_line(path, n);
            assert!(
                text.contains(call),
                "`{symbol}` at {location}, which is `{}`, not the `{call}` it returns from",
                text.trim()
            );
            // binutils reads the same rows (decode_stacktrace.sh runs it).
            if let Some(theirs) = binutils_addr2line(&elf, addr - 1) {
                assert_eq!(
                    theirs,
                    *location,
                    "addr2line -e {} {:x}",
                    elf.display(),
                    addr - 1
                );
            }
            seen += 1;
        }
    }
    // stack.recursion's trampoline, stack.exception's trap frame and its
    // trampoline.
    assert!(seen >= 3, "{seen} assembly frames in\n{out}");
}
