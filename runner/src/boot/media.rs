//! What a boot path needs besides QEMU: for the Limine paths, an ISO holding
//! the guest, Limine and its configuration (built with xorriso, cached by
//! content hash), and for UEFI, OVMF with a per-boot copy of its variables.

use crate::boot::limine::{self, Config, Release};
use crate::cli::BootPath;
use crate::fatal::Fatal;
use crate::workspace;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// OVMF's code and variable-store template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Firmware {
    pub code: PathBuf,
    pub vars: PathBuf,
}

/// Debian's `ovmf` package: the 4M images on current releases, the 2M ones
/// on older ones.
const OVMF: [(&str, &str); 2] = [
    (
        "/usr/share/OVMF/OVMF_CODE_4M.fd",
        "/usr/share/OVMF/OVMF_VARS_4M.fd",
    ),
    (
        "/usr/share/OVMF/OVMF_CODE.fd",
        "/usr/share/OVMF/OVMF_VARS.fd",
    ),
];

pub fn ovmf() -> Result<Firmware, String> {
    OVMF.iter()
        .map(|(code, vars)| Firmware {
            code: code.into(),
            vars: vars.into(),
        })
        .find(|f| f.code.is_file() && f.vars.is_file())
        .ok_or_else(|| {
            "OVMF not found in /usr/share/OVMF: run `make deps` (or install ovmf)".to_string()
        })
}

pub fn xorriso() -> Result<PathBuf, String> {
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("xorriso"))
                .find(|candidate| candidate.is_file())
        })
        .ok_or_else(|| "xorriso not found: run `make deps` (or install xorriso)".to_string())
}

/// Everything a path needs, found; or one line saying what is missing and
/// how to get it.
pub fn check(path: BootPath) -> Result<(), String> {
    match path {
        BootPath::Direct => Ok(()),
        BootPath::LimineBios => limine::find().and(xorriso()).map(drop),
        BootPath::LimineUefi => limine::find().and(xorriso()).and(ovmf()).map(drop),
    }
}

/// The Limine side of a run, found once.
pub struct Media {
    limine: Option<LimineKit>,
    firmware: Option<Firmware>,
}

struct LimineKit {
    release: Release,
    xorriso: PathBuf,
    config: Config,
    guest_path: String,
}

/// What one boot gets: nothing for direct, an ISO (and OVMF) for Limine.
#[derive(Clone, Debug, Default)]
pub struct Prepared {
    pub iso: Option<PathBuf>,
    pub firmware: Option<(PathBuf, PathBuf)>,
}

impl Media {
    /// Find what the paths of this run need; a missing piece ends the run.
    pub fn find(paths: &[BootPath]) -> Result<Media, Fatal> {
        let limine = if paths.iter().any(|p| *p != BootPath::Direct) {
            let release = limine::find().map_err(Fatal::setup)?;
            let xorriso = xorriso().map_err(Fatal::setup)?;
            let cfg = workspace::root().join("limine.cfg");
            let text = std::fs::read_to_string(&cfg)
                .map_err(|e| Fatal::setup(format!("cannot read {}: {e}", cfg.display())))?;
            let bad = |e: String| Fatal::setup(format!("{}: {e}", cfg.display()));
            let config = Config::parse(&text).map_err(bad)?;
            let guest_path = config.guest_path().map_err(bad)?;
            Some(LimineKit {
                release,
                xorriso,
                config,
                guest_path,
            })
        } else {
            None
        };
        let firmware = if paths.contains(&BootPath::LimineUefi) {
            Some(ovmf().map_err(Fatal::setup)?)
        } else {
            None
        };
        Ok(Media { limine, firmware })
    }

    /// Copy the Limine files the ISOs are made of into `dir` and make them
    /// from there, so every boot of a run gets the same Limine whatever
    /// happens to the release directory meanwhile.
    pub fn pin(&mut self, dir: &Path) -> Result<(), Fatal> {
        let Some(kit) = &mut self.limine else {
            return Ok(());
        };
        std::fs::create_dir_all(dir)
            .map_err(|e| Fatal::setup(format!("cannot create {}: {e}", dir.display())))?;
        for name in limine::FILES {
            workspace::copy(&kit.release.file(name), &dir.join(name))?;
        }
        kit.release = Release {
            dir: dir.to_path_buf(),
        };
        Ok(())
    }

    /// The ISO (built unless cached) and firmware for one boot.
    pub fn prepare(
        &self,
        path: BootPath,
        guest: &Path,
        cmdline: &str,
        run_dir: &Path,
        boot_name: &str,
    ) -> Result<Prepared, Fatal> {
        if path == BootPath::Direct {
            return Ok(Prepared::default());
        }
        let kit = self
            .limine
            .as_ref()
            .ok_or_else(|| Fatal::setup(format!("{} was not set up", path.as_str())))?;
        let iso = build_iso(kit, guest, cmdline)?;
        let firmware = match (path, &self.firmware) {
            (BootPath::LimineUefi, Some(fw)) => {
                // OVMF writes its variables; each boot gets a fresh copy.
                let vars = run_dir.join(format!("{boot_name}.ovmf-vars.fd"));
                std::fs::copy(&fw.vars, &vars).map_err(|e| {
                    Fatal::setup(format!(
                        "cannot copy {} to {}: {e}",
                        fw.vars.display(),
                        vars.display()
                    ))
                })?;
                Some((fw.code.clone(), vars))
            }
            (BootPath::LimineUefi, None) => {
                return Err(Fatal::setup("OVMF was not set up".to_string()))
            }
            _ => None,
        };
        Ok(Prepared {
            iso: Some(iso),
            firmware,
        })
    }
}

/// The files of the ISO, by their path in it.
fn iso_contents(kit: &LimineKit, guest: &Path, cmdline: &str) -> Vec<(String, Content)> {
    let config = kit.config.with_cmdline(cmdline);
    let from_release = |name: &str| Content::File(kit.release.file(name));
    vec![
        (kit.guest_path.clone(), Content::File(guest.to_path_buf())),
        (
            "boot/limine/limine-bios.sys".into(),
            from_release("limine-bios.sys"),
        ),
        (
            "boot/limine/limine-bios-cd.bin".into(),
            from_release("limine-bios-cd.bin"),
        ),
        (
            "boot/limine/limine-uefi-cd.bin".into(),
            from_release("limine-uefi-cd.bin"),
        ),
        ("EFI/BOOT/BOOTX64.EFI".into(), from_release("BOOTX64.EFI")),
        (
            "boot/limine/limine.cfg".into(),
            Content::Text(config.render_v7()),
        ),
        (
            "boot/limine/limine.conf".into(),
            Content::Text(config.render_v8()),
        ),
    ]
}

enum Content {
    File(PathBuf),
    Text(String),
}

/// How the ISO is made; part of the cache key, so changing it rebuilds.
const XORRISO_ARGS: &[&str] = &[
    "-as",
    "mkisofs",
    "-R",
    "-r",
    "-J",
    "-b",
    "boot/limine/limine-bios-cd.bin",
    "-no-emul-boot",
    "-boot-load-size",
    "4",
    "-boot-info-table",
    "-hfsplus",
    "-apm-block-size",
    "2048",
    "--efi-boot",
    "boot/limine/limine-uefi-cd.bin",
    "-efi-boot-part",
    "--efi-boot-image",
    "--protective-msdos-label",
];

/// `target/limine-iso/<hash>.iso`, where the hash covers every byte that
/// goes in (guest, Limine files, both configs with the command line) and
/// the xorriso recipe. Built in a private staging directory and renamed into
/// place, so concurrent runners never see half an ISO.
fn build_iso(kit: &LimineKit, guest: &Path, cmdline: &str) -> Result<PathBuf, Fatal> {
    let contents = iso_contents(kit, guest, cmdline);
    let mut loaded = Vec::with_capacity(contents.len());
    for (name, content) in contents {
        let bytes = match content {
            Content::Text(text) => text.into_bytes(),
            Content::File(path) => std::fs::read(&path)
                .map_err(|e| Fatal::setup(format!("cannot read {}: {e}", path.display())))?,
        };
        loaded.push((name, bytes));
    }
    let key = content_hash(
        XORRISO_ARGS
            .iter()
            .map(|a| ("xorriso", a.as_bytes()))
            .chain(loaded.iter().map(|(n, b)| (n.as_str(), b.as_slice()))),
    );
    let dir = workspace::target_dir().join("limine-iso");
    let iso = dir.join(format!("{key:032x}.iso"));
    if iso.is_file() {
        return Ok(iso);
    }
    let staging = dir.join(format!("{key:032x}.{}.tmp", std::process::id()));
    let io = |what: &str, path: &Path, e: std::io::Error| {
        Fatal::setup(format!("cannot {what} {}: {e}", path.display()))
    };
    let root = staging.join("root");
    for (name, bytes) in &loaded {
        let path = root.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io("create", parent, e))?;
        }
        std::fs::write(&path, bytes).map_err(|e| io("write", &path, e))?;
    }
    let partial = staging.join("out.iso");
    let output = Command::new(&kit.xorriso)
        .args(XORRISO_ARGS)
        .arg(&root)
        .arg("-o")
        .arg(&partial)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Fatal::setup(format!("cannot run {}: {e}", kit.xorriso.display())))?;
    let result = if output.status.success() {
        std::fs::rename(&partial, &iso).map_err(|e| io("move the ISO to", &iso, e))
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
        Err(Fatal::setup(format!(
            "xorriso failed ({}) building {}: {}",
            output.status,
            iso.display(),
            last.unwrap_or("no message")
        )))
    };
    let _ = std::fs::remove_dir_all(&staging);
    result?;
    prune(&dir, KEEP_ISOS);
    Ok(iso)
}

/// ISOs kept in the cache: every scenario list and CPU count has its own,
/// and each guest rebuild makes new ones.
const KEEP_ISOS: usize = 64;

/// Drop the least recently built ISOs beyond `keep` (best effort).
fn prune(dir: &Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut isos: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "iso"))
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .collect();
    if isos.len() <= keep {
        return;
    }
    isos.sort();
    for (_, path) in &isos[..isos.len() - keep] {
        let _ = std::fs::remove_file(path);
    }
}

/// FNV-1a, 128 bits, over (name, length, bytes) of each part: a cache key,
/// not a defence against anyone.
fn content_hash<'a>(parts: impl Iterator<Item = (&'a str, &'a [u8])>) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013b;
    let mut h = OFFSET;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u128::from(b);
            h = h.wrapping_mul(PRIME);
        }
    };
    for (name, bytes) in parts {
        eat(&(name.len() as u64).to_le_bytes());
        eat(name.as_bytes());
        eat(&(bytes.len() as u64).to_le_bytes());
        eat(bytes);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_sees_every_byte_and_every_boundary() {
        let h = |parts: &[(&str, &[u8])]| content_hash(parts.iter().copied());
        let base = h(&[("a", b"xy"), ("b", b"z")]);
        assert_eq!(base, h(&[("a", b"xy"), ("b", b"z")]));
        assert_ne!(base, h(&[("a", b"x"), ("b", b"yz")]));
        assert_ne!(base, h(&[("a", b"xy"), ("b", b"Z")]));
        assert_ne!(base, h(&[("c", b"xy"), ("b", b"z")]));
        assert_ne!(base, h(&[("a", b"xy")]));
    }

    #[test]
    fn the_cache_keeps_the_newest_isos() {
        let dir = std::env::temp_dir().join(format!("runner-prune-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..5 {
            std::fs::write(dir.join(format!("{i}.iso")), b"").unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::fs::write(dir.join("other.txt"), b"").unwrap();
        prune(&dir, 2);
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["3.iso", "4.iso", "other.txt"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn missing_tools_say_how_to_get_them() {
        assert!(check(BootPath::Direct).is_ok());
        if let Err(e) = ovmf() {
            assert!(e.contains("make deps"), "{e}");
        }
    }
}
