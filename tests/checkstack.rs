//! `runner checkstack` on the real guest ELF: the static frame size it
//! reads from `stack_recurse`'s prologue must be the frame the guest
//! measures at run time (rsp at recursion depth 0 minus rsp at depth 1,
//! `recursion_frame_bytes` in guest/src/scenarios/stack.rs), which a boot
//! of `stack.recursion` announces as `frame_bytes` in its `STACK-ALLOC`
//! record. Nothing here knows the number.

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};

fn runner(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(args)
        .output()
        .expect("the runner starts")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Boot `stack.recursion`: the guest ELF that booted, and the frame size
/// the guest measured.
fn measured_recursion() -> (PathBuf, u64) {
    let json = std::env::temp_dir().join(format!("runner-checkstack-{}.json", std::process::id()));
    let out = runner(&["run", "stack.recursion", "--json", json.to_str().unwrap()]);
    let doc = std::fs::read_to_string(&json).expect("the runner wrote --json");
    let _ = std::fs::remove_file(&json);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let v: Value = serde_json::from_str(&doc).unwrap();
    let elf = PathBuf::from(v["images"]["guest"].as_str().expect("images.guest"));
    let log = v["boots"][0]["serial_log"].as_str().expect("a serial log");
    let serial = std::fs::read_to_string(log).expect("the serial log reads");
    let alloc: Value = serial
        .lines()
        .filter_map(|l| Some(l[l.find("STACK-ALLOC ")? + "STACK-ALLOC ".len()..].to_string()))
        .filter_map(|j| serde_json::from_str::<Value>(&j).ok())
        .find(|a| a["scenario"] == "stack.recursion")
        .unwrap_or_else(|| panic!("no STACK-ALLOC record for stack.recursion in {log}"));
    let bytes = alloc["frame_bytes"].as_u64().expect("frame_bytes");
    assert!(bytes > 256, "stack_recurse keeps a 256-byte array: {alloc}");
    (elf, bytes)
}

/// The table's rows: (address, bytes, kind, function, the whole line);
/// bytes `None` for a function without a static size.
fn rows(stdout: &str) -> Vec<(u64, Option<u64>, String, String, String)> {
    stdout
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let address = u64::from_str_radix(words.next()?, 16).ok()?;
            let bytes = words.next()?;
            let bytes = if bytes == "-" {
                None
            } else {
                Some(bytes.parse().ok()?)
            };
            let kind = words.next()?.to_string();
            let function = words.next()?.to_string();
            Some((address, bytes, kind, function, line.to_string()))
        })
        .collect()
}

#[test]
fn stack_recurse_has_the_frame_the_guest_measures() {
    let (elf, measured) = measured_recursion();
    let out = runner(&["checkstack", "--all", "--elf", elf.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let rows = rows(&stdout);
    let named = |name: &str| {
        let found: Vec<_> = rows.iter().filter(|r| r.3 == name).collect();
        assert_eq!(found.len(), 1, "{name}: {found:?}");
        found[0].clone()
    };
    let recurse = named("guest::scenarios::stack::stack_recurse");
    assert_eq!(
        recurse.1,
        Some(measured),
        "checkstack's static frame of stack_recurse against the guest's measured frame_bytes:\n{}",
        recurse.4
    );
    assert_eq!(recurse.2, "fp", "{}", recurse.4);
    assert!(
        recurse.4.contains("guest/src/scenarios/stack.rs:"),
        "{}",
        recurse.4
    );
    // The 64 KiB frame is over the guard gap, and probed.
    let large = named("guest::scenarios::stack::stack_large_frame");
    assert!(large.1.is_some_and(|b| b > 64 * 1024), "{}", large.4);
    assert!(
        large.4.ends_with("> guard gap, probed (loop)"),
        "{}",
        large.4
    );
    // Every frame over the guard gap relies on its probes: none may lack them.
    assert!(
        stdout.contains("of them without stack probes") && !stdout.contains("NOT PROBED"),
        "{stdout}"
    );
    // The assembly is said to be what it is, not sized.
    assert!(named("trap_common").4.contains("entry stub"));
    assert!(named("context_switch")
        .4
        .contains("no call-frame information"));
    assert!(named("task_entry_trampoline").4.contains("outermost"));
    // The whole table, largest first.
    let sized: Vec<u64> = rows.iter().filter_map(|r| r.1).collect();
    assert!(sized.windows(2).all(|w| w[0] >= w[1]));
    // What QEMU booted, `guest.boot`, has no .debug_frame: refused, not
    // printed as a table of functions without CFI.
    let out = runner(&[
        "checkstack",
        "--elf",
        elf.with_extension("boot").to_str().unwrap(),
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(10), "{stderr}");
    assert!(stderr.contains("no call-frame information"), "{stderr}");
}

#[test]
fn the_top_of_the_built_guest() {
    // No --elf: the guest is built (or found up to date) as `runner run` does.
    let out = runner(&["checkstack", "--top", "3", "--guard-gap", "1000000"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let rows = rows(&stdout);
    assert_eq!(rows.len(), 3, "{stdout}");
    assert!(rows.windows(2).all(|w| w[0].1 >= w[1].1), "{stdout}");
    assert!(
        stdout.contains("0 frames larger than the guard gap (1000000 bytes)"),
        "{stdout}"
    );
}

#[test]
fn bad_input_is_one_line_and_nonzero() {
    let missing = std::env::temp_dir().join("runner-checkstack-no-such-elf");
    let not_elf = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    for (args, status, says) in [
        (
            vec!["checkstack", "--elf", missing.to_str().unwrap()],
            10,
            "no such file",
        ),
        (vec!["checkstack", "--elf", not_elf], 10, "not an ELF"),
        (
            vec!["checkstack", "--elf", env!("CARGO_MANIFEST_DIR")],
            10,
            "not a file",
        ),
        (vec!["checkstack", "--top", "0"], 2, "--top"),
        (vec!["checkstack", "--guard-gap", "lots"], 2, "--guard-gap"),
    ] {
        let out = runner(&args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(status), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("runner: error: ") && stderr.contains(says),
            "{args:?}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}
