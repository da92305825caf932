//! Where the workspace and its build output live, and building the two
//! bare-metal crates the runner boots.

use crate::boot::process;
use crate::fatal::Fatal;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;

pub const TARGET: &str = "x86_64-unknown-none";

/// The two images a boot needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Artifacts {
    pub guest: PathBuf,
    pub loader: PathBuf,
}

pub fn root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Cargo's target directory: `CARGO_TARGET_DIR` (relative to the current
/// directory, as cargo reads it) or the workspace's `target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => std::env::current_dir()
            .map(|cwd| cwd.join(&dir))
            .unwrap_or_else(|_| PathBuf::from(dir)),
        _ => root().join("target"),
    }
}

fn cargo() -> PathBuf {
    std::env::var_os("CARGO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("cargo"))
}

/// The environment variable that builds the guest with a deliberate defect
/// (`--cfg defect="NAME"`, see guest/Cargo.toml for the names), so a test
/// can show a check failing end to end. Minimal on purpose: a runner option
/// for defect builds is coming; this is its stand-in.
pub const DEFECT_ENV: &str = "TESTBED_DEFECT";

/// Extra cargo arguments for a defect build: the cfg (added to the
/// target's rustflags, which cargo merges with .cargo/config.toml's), and
/// a target directory of its own so the normal guest is not rebuilt.
fn defect_args() -> Result<Vec<String>, Fatal> {
    let Some(name) = std::env::var_os(DEFECT_ENV) else {
        return Ok(Vec::new());
    };
    let name = name.to_string_lossy().into_owned();
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(Fatal::setup(format!(
            "{DEFECT_ENV}={name:?} is not a defect name (lowercase letters, digits and _; see guest/Cargo.toml)"
        )));
    }
    // A misspelt name would build a sound guest whose passing run proves
    // nothing: accept only the names the guest declares.
    let manifest = std::fs::read_to_string(root().join("guest/Cargo.toml")).unwrap_or_default();
    let declared = manifest
        .lines()
        .find(|l| l.contains("cfg(defect, values("))
        .unwrap_or("");
    if !declared.contains(&format!("\"{name}\"")) {
        return Err(Fatal::setup(format!(
            "{DEFECT_ENV}={name:?}: the guest declares no such defect (see the check-cfg list in guest/Cargo.toml)"
        )));
    }
    eprintln!("runner: building the guest with defect {name:?} ({DEFECT_ENV})");
    let dir = target_dir().join("defect").join(&name);
    Ok(vec![
        "--config".into(),
        format!("target.{TARGET}.rustflags=[\"--cfg\", \"defect=\\\"{name}\\\"\"]"),
        "--target-dir".into(),
        dir.to_string_lossy().into_owned(),
    ])
}

pub fn build() -> Result<Artifacts, Fatal> {
    let mut command = Command::new(cargo());
    command
        .current_dir(root())
        .args([
            "build",
            "-p",
            "guest",
            "-p",
            "loader",
            "--release",
            "--target",
            TARGET,
        ])
        .arg("--message-format=json-render-diagnostics")
        .args(defect_args()?)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    process::die_with_parent(&mut command, libc::SIGTERM);
    let mut child = command.spawn().map_err(|e| {
        Fatal::setup(format!(
            "cannot run cargo ({e}): install Rust with rustup, or set CARGO"
        ))
    })?;
    // Cargo's human messages pass through; we only look for the one we can explain.
    let stderr = child.stderr.take().map(|stderr| {
        thread::spawn(move || {
            let mut missing_target = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                missing_target |= line.contains("target may not be installed");
                eprintln!("{line}");
            }
            missing_target
        })
    });
    let mut messages = String::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            messages.push_str(&line);
            messages.push('\n');
        }
    }
    let status = child
        .wait()
        .map_err(|e| Fatal::setup(format!("waiting for cargo: {e}")))?;
    let missing_target = stderr.and_then(|t| t.join().ok()).unwrap_or(false);
    if !status.success() {
        let hint = if missing_target {
            format!(
                "the {TARGET} target is missing: run `make deps` (or `rustup target add {TARGET}`)"
            )
        } else {
            "fix the errors above, then run again".to_string()
        };
        return Err(Fatal::setup(format!(
            "building guest and loader failed ({status}): {hint}"
        )));
    }
    artifacts_from_messages(&messages)
        .map_err(Fatal::setup)
        .and_then(with_symbol_table)
}

/// Boot a copy of the guest with its `.ksyms` table filled in (`symbols::embed`),
/// so its oops can name functions; cargo's own output stays as cargo left it.
fn with_symbol_table(artifacts: Artifacts) -> Result<Artifacts, Fatal> {
    let guest = crate::symbols::embed(&artifacts.guest)
        .map_err(|e| Fatal::setup(format!("cannot embed the guest's symbol table: {e}")))?;
    Ok(Artifacts { guest, ..artifacts })
}

/// The images as a previous build left them (`--no-build`).
pub fn prebuilt() -> Result<Artifacts, Fatal> {
    let dir = target_dir().join(TARGET).join("release");
    let artifacts = Artifacts {
        guest: dir.join("guest"),
        loader: dir.join("loader"),
    };
    for path in [&artifacts.guest, &artifacts.loader] {
        if !path.is_file() {
            return Err(Fatal::setup(format!(
                "{} is not built: run `cargo run -p runner -- build` or drop --no-build",
                path.display()
            )));
        }
    }
    with_symbol_table(artifacts)
}

/// The executables of the `guest` and `loader` binaries, from cargo's JSON
/// messages, so that CARGO_TARGET_DIR and `build.target-dir` need no guessing.
pub fn artifacts_from_messages(messages: &str) -> Result<Artifacts, String> {
    let mut guest = None;
    let mut loader = None;
    for line in messages.lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(executable) = message["executable"].as_str() else {
            continue;
        };
        match message["target"]["name"].as_str() {
            Some("guest") => guest = Some(PathBuf::from(executable)),
            Some("loader") => loader = Some(PathBuf::from(executable)),
            _ => {}
        }
    }
    match (guest, loader) {
        (Some(guest), Some(loader)) => Ok(Artifacts { guest, loader }),
        (guest, _) => Err(format!(
            "cargo built no `{}` executable; does its crate have a binary target?",
            if guest.is_none() { "guest" } else { "loader" }
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_executables_out_of_cargo_messages() {
        let messages = r#"
{"reason":"compiler-artifact","target":{"name":"abi","kind":["lib"]},"executable":null}
not json at all
{"reason":"compiler-artifact","target":{"name":"loader","kind":["bin"]},"executable":"/t/x86_64-unknown-none/release/loader"}
{"reason":"compiler-message","target":{"name":"guest"},"executable":"/nope"}
{"reason":"compiler-artifact","target":{"name":"guest","kind":["bin"]},"executable":"/t/x86_64-unknown-none/release/guest"}
{"reason":"build-finished","success":true}
"#;
        assert_eq!(
            artifacts_from_messages(messages),
            Ok(Artifacts {
                guest: "/t/x86_64-unknown-none/release/guest".into(),
                loader: "/t/x86_64-unknown-none/release/loader".into(),
            })
        );
        let err = artifacts_from_messages("{\"reason\":\"build-finished\"}").unwrap_err();
        assert!(err.contains("guest"));
    }
}
