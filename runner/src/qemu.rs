//! The QEMU command line for each boot path: the one place that knows which
//! machine, firmware and images a path needs.

use crate::cli::{Accel, BootPath};
use crate::fatal::Fatal;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

const DEFAULT_QEMU: &str = "qemu-system-x86_64";

/// What one boot asks of QEMU, whatever the path.
pub struct Boot<'a> {
    pub path: BootPath,
    pub loader: &'a Path,
    /// `None` boots the loader alone, which must then fail with `LoaderError`
    /// (the bench's baseline).
    pub guest: Option<&'a Path>,
    pub scenarios: &'a [&'a str],
    pub smp: u32,
    pub accel: Accel,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

impl Invocation {
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        command
    }

    /// The command line as a person would paste it into a shell.
    pub fn shell_line(&self) -> String {
        std::iter::once(self.program.as_os_str())
            .chain(self.args.iter().map(OsString::as_os_str))
            .map(|a| shell_quote(&a.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The QEMU binary: `$QEMU` or qemu-system-x86_64 on PATH.
pub fn program() -> Result<PathBuf, Fatal> {
    let name = std::env::var_os("QEMU")
        .filter(|q| !q.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_QEMU));
    let found = if name.components().count() > 1 {
        name.is_file().then(|| name.clone())
    } else {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(&name))
                .find(|candidate| candidate.is_file())
        })
    };
    found.ok_or_else(|| {
        Fatal::setup(format!(
            "{} not found: run `make deps` (or install qemu-system-x86)",
            name.display()
        ))
    })
}

/// The guest's command line (see `abi::cmdline`).
pub fn guest_cmdline(scenarios: &[&str], smp: u32) -> String {
    format!(
        "{}={} {}={smp}",
        abi::cmdline::SCENARIOS,
        scenarios.join(","),
        abi::cmdline::EXPECT_CPUS
    )
}

pub fn invocation(program: &Path, boot: &Boot) -> Invocation {
    let args = match boot.path {
        BootPath::Direct => direct(boot),
    };
    Invocation {
        program: program.to_path_buf(),
        args: args.into_iter().map(OsString::from).collect(),
    }
}

/// The loader as a PVH kernel on microvm, the guest ELF as its initrd: no
/// firmware to run, so a boot costs tens of milliseconds.
fn direct(boot: &Boot) -> Vec<String> {
    let mut args = vec!["-M".to_string(), "microvm".to_string()];
    args.extend(accel(boot.accel));
    args.extend(common(boot.smp));
    args.extend(["-kernel".to_string(), boot.loader.display().to_string()]);
    if let Some(guest) = boot.guest {
        args.extend(["-initrd".to_string(), guest.display().to_string()]);
    }
    args.extend([
        "-append".to_string(),
        guest_cmdline(boot.scenarios, boot.smp),
    ]);
    args
}

fn accel(accel: Accel) -> Vec<String> {
    match accel {
        Accel::Tcg => vec!["-cpu".into(), "max".into()],
        Accel::Kvm => vec!["-enable-kvm".into(), "-cpu".into(), "host".into()],
    }
}

/// What every path shares: memory, CPUs, no reboot (a triple fault must end
/// QEMU with status 0), serial on stdout, and the exit device.
fn common(smp: u32) -> Vec<String> {
    [
        "-m",
        "256M",
        "-smp",
        &smp.to_string(),
        "-no-reboot",
        "-display",
        "none",
        "-nodefaults",
        "-monitor",
        "none",
        "-serial",
        "stdio",
        "-device",
        &format!(
            "isa-debug-exit,iobase={:#x},iosize=0x04",
            abi::exit::ISA_DEBUG_EXIT_PORT
        ),
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

fn shell_quote(arg: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./=,:@%+".contains(c);
    if !arg.is_empty() && arg.chars().all(safe) {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_boot_command() {
        let boot = Boot {
            path: BootPath::Direct,
            loader: Path::new("/t/loader"),
            guest: Some(Path::new("/t/my guest")),
            scenarios: &["boot.smoke", "core.leak"],
            smp: 4,
            accel: Accel::Tcg,
        };
        let inv = invocation(Path::new("/usr/bin/qemu-system-x86_64"), &boot);
        assert_eq!(
            inv.shell_line(),
            "/usr/bin/qemu-system-x86_64 -M microvm -cpu max -m 256M -smp 4 -no-reboot \
             -display none -nodefaults -monitor none -serial stdio \
             -device isa-debug-exit,iobase=0xf4,iosize=0x04 -kernel /t/loader \
             -initrd '/t/my guest' -append 'scenarios=boot.smoke,core.leak expect_cpus=4'"
        );
        let bare = Boot {
            guest: None,
            accel: Accel::Kvm,
            ..boot
        };
        let line = invocation(Path::new("q"), &bare).shell_line();
        assert!(!line.contains("-initrd"));
        assert!(line.contains("-enable-kvm -cpu host"));
    }

    #[test]
    fn quoting_survives_a_shell() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a$b"), "'a$b'");
    }

    #[test]
    fn cmdline_reads_back_through_abi() {
        let line = guest_cmdline(&["a.b", "c.d"], 2);
        assert_eq!(
            abi::cmdline::scenarios(&line).collect::<Vec<_>>(),
            ["a.b", "c.d"]
        );
        assert_eq!(
            abi::cmdline::value(&line, abi::cmdline::EXPECT_CPUS),
            Some("2")
        );
    }
}
