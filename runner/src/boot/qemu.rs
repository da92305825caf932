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
    /// The Limine paths: the ISO holding guest, Limine and config.
    pub iso: Option<&'a Path>,
    /// limine-uefi: OVMF's code and this boot's own copy of its variables.
    pub firmware: Option<(&'a Path, &'a Path)>,
    pub scenarios: &'a [&'a str],
    pub smp: u32,
    pub accel: Accel,
    /// More `key=value` words for the guest (the stack options, `abi::cmdline`).
    pub cmdline_extra: &'a [String],
    /// `run --gdb`: QEMU's GDB stub on this local port, every CPU held
    /// before its first instruction until the debugger says `continue`.
    pub gdb: Option<u16>,
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
pub fn guest_cmdline(scenarios: &[&str], smp: u32, extra: &[String]) -> String {
    let mut line = format!(
        "{}={} {}={smp}",
        abi::cmdline::SCENARIOS,
        scenarios.join(","),
        abi::cmdline::EXPECT_CPUS
    );
    for word in extra {
        line.push(' ');
        line.push_str(word);
    }
    line
}

pub fn invocation(program: &Path, boot: &Boot) -> Invocation {
    let mut args = match boot.path {
        BootPath::Direct => direct(boot),
        BootPath::LimineBios | BootPath::LimineUefi => limine(boot),
    };
    if let Some(port) = boot.gdb {
        args.extend(["-S".to_string(), "-gdb".to_string(), gdb_stub(port)]);
    }
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
        guest_cmdline(boot.scenarios, boot.smp, boot.cmdline_extra),
    ]);
    args
}

/// Real Limine from a CD on q35: SeaBIOS boots it through El Torito, or
/// OVMF (given as pflash) through the EFI boot image. The command line is in
/// the ISO's config.
fn limine(boot: &Boot) -> Vec<String> {
    let mut args = vec!["-M".to_string(), "q35".to_string()];
    args.extend(accel(boot.accel));
    args.extend(common(boot.smp));
    if let Some((code, vars)) = boot.firmware {
        args.extend([
            "-drive".to_string(),
            format!("if=pflash,format=raw,readonly=on,file={}", code.display()),
            "-drive".to_string(),
            format!("if=pflash,format=raw,file={}", vars.display()),
        ]);
    }
    if let Some(iso) = boot.iso {
        args.extend(["-cdrom".to_string(), iso.display().to_string()]);
    }
    args
}

fn accel(accel: Accel) -> Vec<String> {
    match accel {
        Accel::Tcg => vec!["-cpu".into(), "max".into()],
        // Without IA32_ARCH_CAPABILITIES: nested KVM here (and on hosted CI
        // runners like it) refuses QEMU's write of that MSR, and QEMU 7.2
        // aborts at start-up ("failed to set MSR 0x10a"). The guest never
        // reads it.
        Accel::Kvm => vec![
            "-enable-kvm".into(),
            "-cpu".into(),
            "host,-arch-capabilities".into(),
        ],
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

/// The stub's address, local only: a debugger can rewrite the guest.
pub fn gdb_stub(port: u16) -> String {
    format!("tcp:127.0.0.1:{port}")
}

pub fn shell_quote(arg: &str) -> String {
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
            iso: None,
            firmware: None,
            scenarios: &["boot.smoke", "core.leak"],
            smp: 4,
            accel: Accel::Tcg,
            cmdline_extra: &[],
            gdb: None,
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
        assert!(line.contains("-enable-kvm -cpu host,-arch-capabilities"));
        let held = Boot {
            gdb: Some(40123),
            ..boot
        };
        let line = invocation(Path::new("q"), &held).shell_line();
        assert!(line.ends_with(" -S -gdb tcp:127.0.0.1:40123"), "{line}");
    }

    #[test]
    fn limine_boot_commands() {
        let bios = Boot {
            path: BootPath::LimineBios,
            loader: Path::new("/t/loader"),
            guest: Some(Path::new("/t/guest")),
            iso: Some(Path::new("/t/a.iso")),
            firmware: None,
            scenarios: &["boot.smoke"],
            smp: 2,
            accel: Accel::Tcg,
            cmdline_extra: &[],
            gdb: None,
        };
        let line = invocation(Path::new("q"), &bios).shell_line();
        assert!(
            line.starts_with("q -M q35 -cpu max -m 256M -smp 2 "),
            "{line}"
        );
        assert!(line.ends_with(" -cdrom /t/a.iso"), "{line}");
        assert!(!line.contains("pflash") && !line.contains("-kernel") && !line.contains("-append"));
        let uefi = Boot {
            path: BootPath::LimineUefi,
            firmware: Some((Path::new("/o/CODE.fd"), Path::new("/r/vars.fd"))),
            ..bios
        };
        let line = invocation(Path::new("q"), &uefi).shell_line();
        assert!(
            line.contains(
                "-drive if=pflash,format=raw,readonly=on,file=/o/CODE.fd \
                 -drive if=pflash,format=raw,file=/r/vars.fd -cdrom /t/a.iso"
            ),
            "{line}"
        );
    }

    #[test]
    fn quoting_survives_a_shell() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a$b"), "'a$b'");
    }

    #[test]
    fn cmdline_reads_back_through_abi() {
        let line = guest_cmdline(&["a.b", "c.d"], 2, &["guard_pages=0".to_string()]);
        assert_eq!(
            abi::cmdline::scenarios(&line).collect::<Vec<_>>(),
            ["a.b", "c.d"]
        );
        assert_eq!(
            abi::cmdline::value(&line, abi::cmdline::EXPECT_CPUS),
            Some("2")
        );
        assert_eq!(
            abi::cmdline::value(&line, abi::cmdline::GUARD_PAGES),
            Some("0")
        );
    }
}
