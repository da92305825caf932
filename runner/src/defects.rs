//! Deliberate defects in the guest, for proving that the verdicts move when
//! what they judge is wrong: `runner --defect NAME` builds a guest with that
//! one defect compiled in and boots it like any other.
//!
//! A defect is a `#[cfg(defect = "NAME")]` in the guest's source, a small,
//! plausible bug. The runner alone sets it, passing `--cfg defect="NAME"` to
//! the guest crate only (`cargo rustc`), into a target directory of its own
//! (`target/defect/`), so a normal build can never contain one: no feature,
//! no environment variable, no stale artifact can turn one on. The guest's
//! `Cargo.toml` declares the names (`check-cfg`), and a test below keeps
//! that list, this catalogue and the source in step.
//!
//! `tests/defects.rs` boots each one under `runner run 'stack.*'` and
//! requires the run to fail with a message naming the wrong line: the
//! mutation suite (issue 14) extends this catalogue.

use crate::report::Check;

/// One deliberate defect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Defect {
    pub name: &'static str,
    /// What the bug is, in the guest.
    pub what: &'static str,
    /// The verdict check that must catch it.
    pub check: Check,
}

pub const DEFECTS: &[Defect] = &[
    Defect {
        name: "ksyms-off-by-one",
        what: "the symbol table lookup lands one entry low (an off-by-one in its binary search) and names the function before the right one",
        check: Check::Symbol,
    },
    Defect {
        name: "trace-skip-innermost",
        what: "the frame-pointer walk starts one frame up and loses the innermost frame",
        check: Check::Unwind,
    },
    Defect {
        name: "trace-first-only",
        what: "the walk's rising-chain test is written the wrong way round: only the first frame is kept",
        check: Check::Unwind,
    },
    Defect {
        name: "bytes-into-guard",
        what: "the overflow's byte count is measured into the guard page from its bottom, not below the stack",
        check: Check::Bytes,
    },
];

pub fn find(name: &str) -> Option<&'static Defect> {
    DEFECTS.iter().find(|d| d.name == name)
}

/// Where defect builds go: apart from the normal build, so neither ever
/// boots the other's guest.
pub fn target_dir() -> std::path::PathBuf {
    crate::workspace::target_dir().join("defect")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn sources(dir: &Path, out: &mut String) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push_str(&std::fs::read_to_string(&path).unwrap());
            }
        }
    }

    #[test]
    fn the_catalogue_the_guests_check_cfg_and_its_source_agree() {
        let root = crate::workspace::root();
        let manifest = std::fs::read_to_string(root.join("guest/Cargo.toml")).unwrap();
        let line = manifest
            .lines()
            .find(|l| l.contains("cfg(defect, values("))
            .expect("guest/Cargo.toml declares the defect cfg");
        let declared: Vec<&str> = line.split('"').skip(1).step_by(2).collect();
        let names: Vec<&str> = DEFECTS.iter().map(|d| d.name).collect();
        assert_eq!(declared, names);
        let mut src = String::new();
        sources(&root.join("guest/src"), &mut src);
        for d in DEFECTS {
            assert!(
                src.contains(&format!("defect = \"{}\"", d.name)),
                "{} is in no #[cfg] of the guest",
                d.name
            );
        }
        assert_eq!(find("trace-first-only").unwrap().check, Check::Unwind);
        assert!(find("no-such-defect").is_none());
    }
}
