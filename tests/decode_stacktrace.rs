//! The guest's oops, as Linux's own tool reads it: a real boot's `RIP:`
//! line and `Call Trace` go through `scripts/decode_stacktrace.sh` with the
//! booted guest ELF, and every one must come out as `file:line`.
//!
//! The script is Linux's, not ours: point `DECODE_STACKTRACE` at a copy
//! (`DECODE_STACKTRACE=/path/to/linux/scripts/decode_stacktrace.sh cargo
//! test --release -p runner --test decode_stacktrace`). Without it the test
//! says so and passes. It needs `nm` and `addr2line` (binutils).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const SKIP: &str =
    "skipped: set DECODE_STACKTRACE=/path/to/decode_stacktrace.sh (Linux's scripts/decode_stacktrace.sh)";

fn script() -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var_os("DECODE_STACKTRACE")?);
    path.is_file().then_some(path)
}

/// Boot `scenarios`; the guest ELF that booted and the serial log.
fn boot(scenarios: &[&str]) -> (PathBuf, String) {
    let json = std::env::temp_dir().join(format!("runner-decode-{}.json", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_runner"))
        .arg("run")
        .args(scenarios)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("the runner starts");
    let text = std::fs::read_to_string(&json).expect("the runner wrote --json");
    let _ = std::fs::remove_file(&json);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v: Value = serde_json::from_str(&text).unwrap();
    let elf = PathBuf::from(v["images"]["guest"].as_str().expect("images.guest"));
    let log = v["boots"][0]["serial_log"].as_str().expect("a serial log");
    (
        elf,
        std::fs::read_to_string(log).expect("the serial log reads"),
    )
}

/// Every oops of the log, `BUG:` to `---[ end trace ]---`.
fn oopses(log: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in log.lines() {
        inside |= line.starts_with("BUG:");
        if inside {
            out.push(line);
        }
        inside &= line != "---[ end trace ]---";
    }
    out
}

/// What the ELF's own line table says of `addr` (binutils' `addr2line`):
/// `None` when it has no line for it (a return address past the end of
/// its function: `task_entry`, whose last instruction is its call).
fn elf_line(elf: &Path, addr: &str) -> Option<String> {
    let out = Command::new("addr2line")
        .arg("-e")
        .arg(elf)
        .arg(addr)
        .output()
        .expect("addr2line runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next()?.to_string();
    (!first.ends_with(":?") && !first.ends_with(":0") && !first.starts_with("??")).then_some(first)
}

/// `path:N` with a line number.
fn is_file_line(loc: &str) -> bool {
    loc.rsplit_once(':').is_some_and(|(path, line)| {
        !path.is_empty() && !path.starts_with("??") && line.parse::<u32>().is_ok_and(|n| n > 0)
    })
}

#[test]
fn linux_decode_stacktrace_reads_every_frame() {
    let Some(script) = script() else {
        println!("{SKIP}");
        return;
    };
    // A recursion (its run folded) and a fault inside the #PF handler (a
    // trap frame, assembly entry code).
    let (elf, log) = boot(&["stack.recursion", "stack.exception"]);
    let input = oopses(&log);
    assert!(
        input.iter().any(|l| l.starts_with(" ... the frame above")),
        "no folded run in\n{}",
        input.join("\n")
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut child = Command::new("bash")
        .arg(&script)
        .arg(&elf)
        .arg(root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash runs the script");
    let text = format!("{}\n", input.join("\n"));
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let output = String::from_utf8_lossy(&out.stdout).into_owned();
    let decoded: Vec<&str> = output.lines().collect();
    assert_eq!(
        decoded.len(),
        input.len(),
        "one line out per line in\nstderr:\n{}\n{output}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (mut frames, mut with_line) = (0, 0);
    let mut wrong = Vec::new();
    for (line, got) in input.iter().zip(&decoded) {
        let frame = line.starts_with(" [<");
        if !frame && !line.starts_with("RIP: ") {
            // Everything else, the folded runs included, passes unchanged
            // (the script's `read` drops leading blanks).
            if got.trim() != line.trim() {
                wrong.push(format!("changed: `{line}`\n     to: `{got}`"));
            }
            continue;
        }
        frames += 1;
        // The address the line is about, for the ELF's own answer.
        let addr = if frame {
            &line[3..19]
        } else {
            &line["RIP: 0008:".len().min(line.len())..][..16]
        };
        // The symbol is the line's last word; the script swaps its
        // `+0xoff/0xsize` for ` (file:line ...)` once `nm` found the name.
        let sym = line.rsplit(' ').next().unwrap();
        let name = sym.split_once("+0x").map_or(sym, |(n, _)| n);
        // Newer scripts end the line with `$symbol $module`: a space when
        // there is no module.
        let Some(locs) = got
            .trim_end()
            .strip_suffix(')')
            .and_then(|g| g.rsplit_once(&format!("{name} (")))
            .map(|(_, l)| l)
        else {
            wrong.push(format!("not decoded: `{line}`\n         to: `{got}`"));
            continue;
        };
        // `addr2line -i`: the inline chain, innermost first.
        let first = locs.split(' ').next().unwrap_or("");
        match elf_line(&elf, addr) {
            Some(_) if is_file_line(first) => with_line += 1,
            Some(want) => wrong.push(format!(
                "no file:line: `{got}` (the ELF has `{want}` for {addr})"
            )),
            // The script cannot know more than the ELF does.
            None => {}
        }
    }
    assert!(wrong.is_empty(), "{}\n\n{output}", wrong.join("\n"));
    // Both oopses, whole; a return address past its function's end
    // (`task_entry`'s, one in each oops) is all the ELF has no line for.
    assert!(
        frames >= 10 && with_line >= frames - 2,
        "{with_line} of {frames} with a line\n{output}"
    );
    for (what, want) in [
        ("RIP: ", "guest/src/scenarios/stack.rs:"),
        (
            " guest::scenarios::stack::stack_recurse ",
            "guest/src/scenarios/stack.rs:",
        ),
        (" guest::lkdtm::handler_recurse ", "guest/src/lkdtm.rs:"),
        // The assembly entry code (`arch/x86_64/asm_lines.rs`).
        (" trap_common ", "guest/src/arch/x86_64/trap.rs:"),
        (
            " task_entry_trampoline ",
            "guest/src/arch/x86_64/context.rs:",
        ),
    ] {
        assert!(
            decoded
                .iter()
                // Newer scripts drop the indent with the `[<address>]`.
                .any(|l| l.trim_start().starts_with(what.trim_start()) && l.contains(want)),
            "no `{what}...{want}N` in\n{output}"
        );
    }
}
