//! Where the workspace and its build output live, and building the two
//! bare-metal crates the runner boots.

use crate::boot::process;
use crate::defects::Defect;
use crate::fatal::Fatal;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::thread;

pub const TARGET: &str = "x86_64-unknown-none";

/// The two images a boot needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Artifacts {
    /// The guest ELF with everything: what the runner reads symbols,
    /// DWARF and CFI from (and `--gdb` gives the debugger).
    pub guest: PathBuf,
    pub loader: PathBuf,
}

impl Artifacts {
    /// What QEMU boots: `guest` without its debug sections, beside it
    /// (`boot::image`; made with the symbol table, pinned with the guest).
    pub fn image(&self) -> PathBuf {
        crate::boot::image::path_of(&self.guest)
    }
}

pub fn root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Cargo's target directory, resolved once: `CARGO_TARGET_DIR` (relative
/// to the directory the runner was started in, as cargo reads it there) or
/// the workspace's `target`. Builds, ISOs and run directories all go here,
/// and the build is told the same absolute path: cargo runs in the
/// workspace root, where a relative one would name another directory.
pub fn target_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        resolve_target_dir(
            std::env::var_os("CARGO_TARGET_DIR").as_deref(),
            std::env::current_dir().ok().as_deref(),
        )
    })
    .clone()
}

fn resolve_target_dir(env: Option<&std::ffi::OsStr>, cwd: Option<&Path>) -> PathBuf {
    match (env.filter(|d| !d.is_empty()), cwd) {
        (Some(dir), Some(cwd)) => cwd.join(dir),
        (Some(dir), None) => PathBuf::from(dir),
        (None, _) => root().join("target"),
    }
}

/// Whether the user named the target directory (else cargo's own
/// configuration, `build.target-dir` included, decides).
fn target_dir_is_set() -> bool {
    std::env::var_os("CARGO_TARGET_DIR").is_some_and(|d| !d.is_empty())
}

fn cargo_program() -> PathBuf {
    std::env::var_os("CARGO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("cargo"))
}

/// Build the guest and the loader (`cargo build`), or, with `defect`, the
/// loader as usual and a guest with that deliberate defect compiled in
/// (`cargo rustc ... -- --cfg defect="NAME"`, into `defects::target_dir()`,
/// copied to a directory of its own so each defect's guest stays apart).
pub fn build(defect: Option<&Defect>) -> Result<Artifacts, Fatal> {
    let artifacts = match defect {
        None => {
            let messages = cargo(&["build", "-p", "guest", "-p", "loader"], &[])?;
            artifacts_from_messages(&messages).map_err(Fatal::setup)?
        }
        Some(d) => {
            let mut messages = cargo(&["build", "-p", "loader"], &[])?;
            let dir = crate::defects::target_dir();
            // Every defect builds into one target directory, so two runners
            // building different defects at once would copy each other's
            // guest: the build and its copy hold a lock of their own, which
            // cargo's lock (released before the copy) does not give.
            let _lock = lock(&dir)?;
            let cfg = format!("defect=\"{}\"", d.name);
            messages.push_str(&cargo(
                &["rustc", "-p", "guest", "--bin", "guest", "--target-dir"],
                &[
                    dir.as_os_str(),
                    "--".as_ref(),
                    "--cfg".as_ref(),
                    cfg.as_ref(),
                ],
            )?);
            let built = artifacts_from_messages(&messages).map_err(Fatal::setup)?;
            Artifacts {
                guest: keep_defect_guest(&built.guest, d)?,
                ..built
            }
        }
    };
    with_symbol_table(artifacts)
}

/// An exclusive lock on `DIR/.build-lock`, held until dropped.
fn lock(dir: &Path) -> Result<std::fs::File, Fatal> {
    let path = dir.join(".build-lock");
    std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::File::create(&path))
        .and_then(|f| f.lock().map(|_| f))
        .map_err(|e| Fatal::setup(format!("cannot lock {}: {e}", path.display())))
}

/// `target/defect/NAME/guest`: a copy of the guest cargo just built with
/// defect `d`.
fn keep_defect_guest(built: &Path, d: &Defect) -> Result<PathBuf, Fatal> {
    let dir = crate::defects::target_dir().join(d.name);
    let kept = dir.join("guest");
    std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::copy(built, &kept))
        .map_err(|e| {
            Fatal::setup(format!(
                "cannot keep the {} guest at {}: {e}",
                d.name,
                kept.display()
            ))
        })?;
    Ok(kept)
}

/// Run `cargo SUBCOMMAND ARGS --release --target x86_64-unknown-none
/// --message-format=json-render-diagnostics TAIL...` in the workspace and
/// return its JSON messages.
fn cargo(args: &[&str], tail: &[&std::ffi::OsStr]) -> Result<String, Fatal> {
    let mut command = Command::new(cargo_program());
    let (head, rest) = args.split_at(1);
    command
        .current_dir(root())
        .args(head)
        .args(["--release", "--target", TARGET])
        .arg("--message-format=json-render-diagnostics")
        .args(rest)
        .args(tail)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if target_dir_is_set() {
        command.env("CARGO_TARGET_DIR", target_dir());
    }
    process::die_with_parent(&mut command, libc::SIGTERM);
    // In a process group of its own, which an interrupt stops as Ctrl-C
    // would (SIGINT to every process in it): no rustc is left behind.
    let (child, stdout, stderr) =
        process::spawn_group(&mut command, libc::SIGINT, None).map_err(|e| {
            Fatal::setup(format!(
                "cannot run cargo ({e}): install Rust with rustup, or set CARGO"
            ))
        })?;
    // Cargo's human messages pass through; we only look for the one we can explain.
    let stderr = stderr.map(|stderr| {
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
    if let Some(stdout) = stdout {
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
    Ok(messages)
}

/// Boot a copy of the guest with its `.ksyms` table filled in (`symbols::embed`),
/// so its oops can name functions; cargo's own output stays as cargo left it.
fn with_symbol_table(artifacts: Artifacts) -> Result<Artifacts, Fatal> {
    let guest = crate::symbols::embed(&artifacts.guest)
        .map_err(|e| Fatal::setup(format!("cannot embed the guest's symbol table: {e}")))?;
    crate::boot::image::write_beside(&guest)
        .map_err(|e| Fatal::setup(format!("cannot make the guest's boot image: {e}")))?;
    Ok(Artifacts { guest, ..artifacts })
}

/// The run's own copies of `artifacts`, in `dir`: every boot of the run
/// boots these, and the verdicts read their symbols from the same bytes,
/// whatever rebuilds the originals meanwhile. The guest image is
/// hard-linked (`symbols::embed` only ever replaces it by rename, so the
/// linked bytes never change); the loader, cargo's, is copied.
pub fn pin(artifacts: &Artifacts, dir: &Path) -> Result<Artifacts, Fatal> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Fatal::setup(format!("cannot create {}: {e}", dir.display())))?;
    let pinned = Artifacts {
        guest: dir.join("guest"),
        loader: dir.join("loader"),
    };
    link_or_copy(&artifacts.guest, &pinned.guest)?;
    link_or_copy(&artifacts.image(), &pinned.image())?;
    copy(&artifacts.loader, &pinned.loader)?;
    Ok(pinned)
}

/// A hard link where the filesystem allows one, else a copy.
pub fn link_or_copy(from: &Path, to: &Path) -> Result<(), Fatal> {
    std::fs::hard_link(from, to).or_else(|_| copy(from, to))
}

pub fn copy(from: &Path, to: &Path) -> Result<(), Fatal> {
    std::fs::copy(from, to).map(drop).map_err(|e| {
        Fatal::setup(format!(
            "cannot copy {} to {}: {e}",
            from.display(),
            to.display()
        ))
    })
}

/// The images as a previous build left them (`--no-build`), the guest
/// with `defect` if one is asked for.
pub fn prebuilt(defect: Option<&Defect>) -> Result<Artifacts, Fatal> {
    let dir = target_dir().join(TARGET).join("release");
    let artifacts = Artifacts {
        guest: match defect {
            Some(d) => crate::defects::target_dir().join(d.name).join("guest"),
            None => dir.join("guest"),
        },
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
    fn a_relative_target_dir_is_the_callers() {
        let cwd = Path::new("/home/u/work/sub");
        assert_eq!(
            resolve_target_dir(Some("t".as_ref()), Some(cwd)),
            Path::new("/home/u/work/sub/t")
        );
        assert_eq!(
            resolve_target_dir(Some("/abs".as_ref()), Some(cwd)),
            Path::new("/abs")
        );
        assert_eq!(
            resolve_target_dir(Some("".as_ref()), Some(cwd)),
            root().join("target")
        );
        assert_eq!(resolve_target_dir(None, Some(cwd)), root().join("target"));
    }

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
