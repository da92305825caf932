//! Real Limine: where its binary release is, and the configuration it reads.
//!
//! Nothing of Limine lives in this repository. Its binaries come from a
//! binary release directory: `LIMINE_DIR`, or the cache `make limine` fills
//! with the pinned release. The configuration is the top-level `limine.cfg`
//! (Limine 7.x syntax); Limine 8.x and later read `limine.conf`, whose syntax
//! differs, so both are written from the same entries and one ISO boots
//! under either.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The release `make limine` fetches (a tag of Limine's repository; the
/// Makefile's LIMINE_TAG must say the same).
pub const PINNED: &str = "v8.2.0-binary";

/// What the ISO needs from a release.
pub const FILES: [&str; 4] = [
    "limine-bios.sys",
    "limine-bios-cd.bin",
    "limine-uefi-cd.bin",
    "BOOTX64.EFI",
];

/// A directory holding a Limine binary release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Release {
    pub dir: PathBuf,
}

impl Release {
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// Where `make limine` puts the pinned release.
pub fn cache_dir(root: &Path) -> PathBuf {
    root.join(".cache").join("limine").join(PINNED)
}

/// How to get Limine, for every message that needs to say it.
pub fn how_to_get() -> String {
    format!(
        "set LIMINE_DIR to a Limine binary release (7.x or later), or run `make limine` \
         (fetches {PINNED} into .cache/limine)"
    )
}

/// `LIMINE_DIR`, else the `make limine` cache under the workspace.
pub fn find() -> Result<Release, String> {
    find_in(
        std::env::var_os("LIMINE_DIR").as_deref(),
        &cache_dir(&crate::workspace::root()),
    )
}

/// `find` without the environment: one line saying what is wrong and how
/// to get Limine when neither place has a release.
pub fn find_in(limine_dir: Option<&OsStr>, cache: &Path) -> Result<Release, String> {
    let missing = |dir: &Path| FILES.iter().find(|f| !dir.join(f).is_file()).copied();
    match limine_dir.filter(|d| !d.is_empty()) {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            match missing(&dir) {
                None => Ok(Release { dir }),
                Some(file) => Err(format!(
                    "LIMINE_DIR={} is not a Limine binary release (no {file}): {}",
                    dir.display(),
                    how_to_get()
                )),
            }
        }
        None if missing(cache).is_none() => Ok(Release {
            dir: cache.to_path_buf(),
        }),
        None => Err(format!("Limine not found: {}", how_to_get())),
    }
}

/// A Limine configuration in the 7.x model: global options, then entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub globals: Vec<(String, String)>,
    pub entries: Vec<Entry>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    /// 1 for `:name`, 2 for a sub-entry `::name`...
    pub depth: usize,
    pub options: Vec<(String, String)>,
}

impl Entry {
    fn get(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    fn is_limine(&self) -> bool {
        self.get("PROTOCOL")
            .is_some_and(|p| p.eq_ignore_ascii_case("limine"))
    }
}

impl Config {
    /// Parse 7.x syntax: `KEY=value`, `:entry`, `# comment`, blank lines.
    pub fn parse(text: &str) -> Result<Config, String> {
        let mut config = Config {
            globals: Vec::new(),
            entries: Vec::new(),
        };
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(rest) = line.strip_prefix(':') {
                let name = rest.trim_start_matches(':');
                let depth = 1 + rest.len() - name.len();
                config.entries.push(Entry {
                    name: name.trim().to_string(),
                    depth,
                    options: Vec::new(),
                });
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(format!(
                    "line {}: expected `KEY=value`, `:entry` or `# comment`, got {line:?}",
                    i + 1
                ));
            };
            let option = (key.trim().to_string(), value.trim().to_string());
            match config.entries.last_mut() {
                Some(entry) => entry.options.push(option),
                None => config.globals.push(option),
            }
        }
        if !config.entries.iter().any(Entry::is_limine) {
            return Err("no entry with PROTOCOL=limine".to_string());
        }
        Ok(config)
    }

    fn first_limine(&self) -> &Entry {
        // `parse` refuses a config without one.
        self.entries
            .iter()
            .find(|e| e.is_limine())
            .expect("a limine entry")
    }

    /// Where the ISO must hold the guest: the first limine entry's
    /// KERNEL_PATH, which must be a `boot:///` path.
    pub fn guest_path(&self) -> Result<String, String> {
        let entry = self.first_limine();
        let path = entry
            .get("KERNEL_PATH")
            .ok_or_else(|| format!("entry `{}` has no KERNEL_PATH", entry.name))?;
        path.strip_prefix("boot:///")
            .filter(|p| !p.is_empty() && !p.split('/').any(|c| c.is_empty() || c == ".."))
            .map(str::to_string)
            .ok_or_else(|| {
                format!(
                    "KERNEL_PATH={path} in entry `{}`: the runner puts the guest on the boot \
                     medium, so it must be a boot:/// path like boot:///boot/guest",
                    entry.name
                )
            })
    }

    /// The same configuration with every limine entry's command line set to
    /// `cmdline` (replacing CMDLINE or KERNEL_CMDLINE, or adding CMDLINE).
    pub fn with_cmdline(&self, cmdline: &str) -> Config {
        let mut config = self.clone();
        for entry in config.entries.iter_mut().filter(|e| e.is_limine()) {
            let is_cmdline = |k: &str| {
                k.eq_ignore_ascii_case("CMDLINE") || k.eq_ignore_ascii_case("KERNEL_CMDLINE")
            };
            match entry.options.iter().position(|(k, _)| is_cmdline(k)) {
                Some(i) => {
                    entry.options[i].1 = cmdline.to_string();
                    let mut seen = 0;
                    entry.options.retain(|(k, _)| {
                        seen += usize::from(is_cmdline(k));
                        !is_cmdline(k) || seen == 1
                    });
                }
                None => entry
                    .options
                    .push(("CMDLINE".to_string(), cmdline.to_string())),
            }
        }
        config
    }

    /// `limine.cfg`, as Limine 7.x reads it.
    pub fn render_v7(&self) -> String {
        let mut out = String::from("# Written by the runner from limine.cfg.\n");
        for (k, v) in &self.globals {
            let _ = writeln!(out, "{k}={v}");
        }
        for entry in &self.entries {
            let _ = writeln!(out, "\n{}{}", ":".repeat(entry.depth), entry.name);
            for (k, v) in &entry.options {
                let _ = writeln!(out, "    {k}={v}");
            }
        }
        out
    }

    /// `limine.conf`, as Limine 8.x and later read it: `key: value`,
    /// `/entry`, and resource URIs as `boot():/path`. KERNEL_PATH is written
    /// under both its 8.x name and the later `path`; each version ignores
    /// the key it does not know.
    pub fn render_v8(&self) -> String {
        let mut out = String::from("# Written by the runner from limine.cfg.\n");
        for (k, v) in &self.globals {
            let _ = writeln!(out, "{}: {v}", k.to_ascii_lowercase());
        }
        for entry in &self.entries {
            let _ = writeln!(out, "\n{}{}", "/".repeat(entry.depth), entry.name);
            for (k, v) in &entry.options {
                let key = k.to_ascii_lowercase();
                let value = if key.ends_with("path") {
                    uri_v8(v)
                } else {
                    v.clone()
                };
                match key.as_str() {
                    "kernel_path" => {
                        let _ = writeln!(out, "    path: {value}");
                        let _ = writeln!(out, "    kernel_path: {value}");
                    }
                    "kernel_cmdline" | "cmdline" => {
                        let _ = writeln!(out, "    cmdline: {value}");
                    }
                    _ => {
                        let _ = writeln!(out, "    {key}: {value}");
                    }
                }
            }
        }
        out
    }
}

/// `boot:///boot/guest` (7.x) → `boot():/boot/guest` (8.x); `hdd://1:2/x`
/// → `hdd(1:2):/x`. Anything that is not a URI is left alone.
fn uri_v8(value: &str) -> String {
    let Some((resource, rest)) = value.split_once("://") else {
        return value.to_string();
    };
    let (root, path) = rest.split_once('/').unwrap_or((rest, ""));
    format!("{resource}({root}):/{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = "\
# comment
TIMEOUT=0
SERIAL=yes

:testbed
    PROTOCOL=limine
    KERNEL_PATH=boot:///boot/guest
    CMDLINE=scenarios=boot.smoke
";

    #[test]
    fn the_makefile_fetches_the_pinned_release() {
        let makefile = std::fs::read_to_string(crate::workspace::root().join("Makefile")).unwrap();
        let tag = makefile
            .lines()
            .find_map(|l| l.strip_prefix("LIMINE_TAG"))
            .and_then(|l| l.split(":=").nth(1))
            .map(str::trim);
        assert_eq!(
            tag,
            Some(PINNED),
            "Makefile LIMINE_TAG and limine::PINNED differ"
        );
    }

    #[test]
    fn the_repository_config_parses() {
        let text = std::fs::read_to_string(crate::workspace::root().join("limine.cfg")).unwrap();
        let config = Config::parse(&text).unwrap();
        assert_eq!(config.guest_path().unwrap(), "boot/guest");
    }

    #[test]
    fn one_config_two_syntaxes_same_cmdline() {
        let config = Config::parse(CFG)
            .unwrap()
            .with_cmdline("scenarios=a.b,c.d expect_cpus=4");
        assert_eq!(config.guest_path().unwrap(), "boot/guest");
        let v7 = config.render_v7();
        assert!(v7.contains("TIMEOUT=0\nSERIAL=yes\n\n:testbed\n"), "{v7}");
        assert!(v7.contains("    KERNEL_PATH=boot:///boot/guest\n"), "{v7}");
        assert!(
            v7.contains("    CMDLINE=scenarios=a.b,c.d expect_cpus=4\n"),
            "{v7}"
        );
        assert!(!v7.contains("boot.smoke"), "{v7}");
        let v8 = config.render_v8();
        assert!(v8.contains("timeout: 0\nserial: yes\n\n/testbed\n"), "{v8}");
        assert!(v8.contains("    protocol: limine\n"), "{v8}");
        assert!(v8.contains("    kernel_path: boot():/boot/guest\n"), "{v8}");
        assert!(v8.contains("    path: boot():/boot/guest\n"), "{v8}");
        assert!(
            v8.contains("    cmdline: scenarios=a.b,c.d expect_cpus=4\n"),
            "{v8}"
        );
        // What 7.x wrote reads back as the same configuration.
        assert_eq!(Config::parse(&v7).unwrap(), config);
    }

    #[test]
    fn cmdline_is_replaced_once_or_added() {
        let two = "TIMEOUT=0\n:a\nPROTOCOL=limine\nKERNEL_PATH=boot:///g\nKERNEL_CMDLINE=x\nCMDLINE=y\n:other\nPROTOCOL=linux\n";
        let config = Config::parse(two).unwrap().with_cmdline("z");
        assert_eq!(
            config.entries[0].options,
            [
                ("PROTOCOL".to_string(), "limine".to_string()),
                ("KERNEL_PATH".to_string(), "boot:///g".to_string()),
                ("KERNEL_CMDLINE".to_string(), "z".to_string()),
            ]
        );
        assert!(config.entries[1].options.iter().all(|(_, v)| v != "z"));
        let none = Config::parse(":a\nPROTOCOL=limine\n")
            .unwrap()
            .with_cmdline("z");
        assert_eq!(none.entries[0].get("cmdline"), Some("z"));
    }

    #[test]
    fn bad_configs_are_named() {
        assert!(Config::parse("TIMEOUT=0\n:a\nPROTOCOL=linux\n")
            .unwrap_err()
            .contains("PROTOCOL=limine"));
        assert!(Config::parse(":a\nPROTOCOL=limine\nbogus line\n")
            .unwrap_err()
            .contains("line 3"));
        let elsewhere = Config::parse(":a\nPROTOCOL=limine\nKERNEL_PATH=hdd://1:1/k\n").unwrap();
        assert!(elsewhere.guest_path().unwrap_err().contains("boot:///"));
        let escape = Config::parse(":a\nPROTOCOL=limine\nKERNEL_PATH=boot:///../k\n").unwrap();
        assert!(escape.guest_path().is_err());
        let missing = Config::parse(":a\nPROTOCOL=limine\n").unwrap();
        assert!(missing.guest_path().unwrap_err().contains("KERNEL_PATH"));
    }

    #[test]
    fn uris_and_sub_entries_translate() {
        assert_eq!(uri_v8("boot:///boot/guest"), "boot():/boot/guest");
        assert_eq!(uri_v8("hdd://1:2/k"), "hdd(1:2):/k");
        assert_eq!(uri_v8("plain"), "plain");
        let config = Config::parse(":a\n::b\nPROTOCOL=limine\nMODULE_PATH=boot:///m\n").unwrap();
        assert_eq!(config.entries[1].depth, 2);
        assert!(config.render_v8().contains("\n//b\n"));
        assert!(config.render_v8().contains("module_path: boot():/m"));
        assert!(config.render_v7().contains("\n::b\n"));
    }

    #[test]
    fn release_from_limine_dir_or_cache_or_a_way_to_get_one() {
        let base = std::env::temp_dir().join(format!("runner-limine-{}", std::process::id()));
        let release = base.join("release");
        let empty = base.join("empty");
        std::fs::create_dir_all(&release).unwrap();
        std::fs::create_dir_all(&empty).unwrap();
        for f in FILES {
            std::fs::write(release.join(f), b"x").unwrap();
        }
        let found = find_in(Some(release.as_os_str()), &empty).unwrap();
        assert_eq!(found.dir, release);
        assert_eq!(find_in(None, &release).unwrap().dir, release);
        assert_eq!(
            find_in(Some(OsStr::new("")), &release).unwrap().dir,
            release
        );
        let bad = find_in(Some(empty.as_os_str()), &release).unwrap_err();
        assert!(
            bad.contains("LIMINE_DIR=") && bad.contains("limine-bios.sys"),
            "{bad}"
        );
        let none = find_in(None, &empty).unwrap_err();
        for e in [&bad, &none] {
            assert!(e.contains("LIMINE_DIR") && e.contains("make limine"), "{e}");
            assert!(!e.contains('\n'));
        }
        let _ = std::fs::remove_dir_all(&base);
    }
}
