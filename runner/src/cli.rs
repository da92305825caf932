//! The command line, as clap sees it.

use crate::boot::capture::Limits;
use crate::status;
use abi::kinds::{FreeMode, Strategy};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "runner",
    version,
    about = "Builds the testbed guest, boots it in QEMU and judges each scenario from its KTAP report",
    after_help = status::HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub options: Options,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Every scenario with its expected outcome and summary.
    List,
    /// Build the guest and the direct-boot loader.
    Build,
    /// Boot the scenarios matching PATTERN (exact names or globs with `*`, `?`); default: the default set.
    Run {
        #[arg(value_name = "PATTERN")]
        patterns: Vec<String>,
        /// Start QEMU halted with its GDB stub on a free local port, print the
        /// `gdb` command that attaches (the guest ELF with DWARF, a breakpoint
        /// on the guard-hit report), and wait: the boot has no deadline.
        #[arg(long)]
        gdb: bool,
    },
    /// Run the default scenarios at each of their CPU counts and compare every outcome with what it should be.
    Test {
        /// Include the negative controls, each expected to fail in its own way
        /// (scenarios that are merely off by default, like benchmarks, stay out).
        #[arg(long)]
        all: bool,
    },
    /// Boot stack scenarios and show each diagnostic for a person: the oops,
    /// the trace with file:line, a map of the stack area (default: a chosen set).
    Demo {
        #[arg(value_name = "PATTERN")]
        patterns: Vec<String>,
    },
    /// Boot `boot.conformance` on every available boot path and compare the boot facts side by side.
    CompareBoot,
    /// The mutation suite: build each deliberate guest defect (runner/src/defects.rs),
    /// boot the scenarios that must catch it beside the normal guest, and require the
    /// verdict to flip; exits nonzero if any defect survives.
    Mutants {
        /// Defects to run (default: the whole catalogue).
        #[arg(value_name = "NAME")]
        names: Vec<String>,
    },
    /// The guest's functions by static stack frame size, largest first, with
    /// file:line (like Linux's scripts/checkstack.pl): each prologue decoded
    /// and held against the ELF's call-frame information. Frames larger than
    /// the guard gap are flagged: they can step over a guard page, so only
    /// their stack probes make the guard catch them.
    Checkstack {
        /// Show the N largest frames.
        #[arg(long, value_name = "N", default_value_t = 20,
              value_parser = clap::value_parser!(u32).range(1..))]
        top: u32,
        /// Every function: all the sized ones, then those without a static
        /// size (entry stubs, assembly without CFI) with the reason.
        #[arg(long, conflicts_with = "top")]
        all: bool,
        /// Flag frames larger than BYTES (default: one 4 KiB guard page).
        #[arg(long, value_name = "BYTES", default_value_t = 4096,
              value_parser = clap::value_parser!(u64).range(1..))]
        guard_gap: u64,
        /// Read this guest ELF (it needs its CFI; DWARF gives file:line)
        /// instead of building the guest.
        #[arg(long, value_name = "FILE")]
        elf: Option<PathBuf>,
    },
    /// Boot-to-exit wall time of `boot.smoke` on each available boot path, against a trivial PVH guest (the loader with no guest).
    Bench {
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
        runs: u32,
    },
}

#[derive(Args, Debug, Clone)]
pub struct Options {
    /// CPUs to give QEMU (run: default 1; test: default each scenario's own list;
    /// mutants: the first of the decisive scenario's list).
    #[arg(long, global = true, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub smp: Option<u32>,
    #[arg(long, global = true, value_enum, default_value_t = Accel::Tcg)]
    pub accel: Accel,
    /// Seconds a boot may go without a KTAP result (from its start, then from
    /// each result) before it is killed and reported as a timeout (default
    /// 120 under TCG, 1800 under KVM, whose nested, paravirtual form here
    /// traps every privileged instruction); the Limine paths get their
    /// firmware's start-up time on top: 10 s BIOS, 30 s UEFI.
    #[arg(long, global = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: Option<u64>,
    /// How the guest is loaded; Limine paths need LIMINE_DIR or `make limine`.
    #[arg(long, global = true, value_enum, default_value_t = BootPath::Direct)]
    pub boot: BootPath,
    /// Stream each boot's serial output live, prefixed with the boot's name.
    #[arg(long, global = true)]
    pub verbose: bool,
    /// Print each boot's QEMU command line, ready to paste into a shell.
    #[arg(long, global = true)]
    pub print_qemu: bool,
    /// Also write machine-readable results to FILE.
    #[arg(long, global = true, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Also append a Markdown step summary (the results table, each
    /// failure's reason and oops excerpt) to FILE, e.g. "$GITHUB_STEP_SUMMARY".
    #[arg(long, global = true, value_name = "FILE")]
    pub github_summary: Option<PathBuf>,
    /// Print one GitHub Actions `::error file=…,line=…::` annotation per
    /// failed result, at the guest source line its fault was symbolized to.
    #[arg(long, global = true)]
    pub github_annotations: bool,
    /// Use the guest and loader already built instead of running cargo.
    #[arg(long, global = true)]
    pub no_build: bool,
    /// Also write JUnit XML (one testsuite per boot) to FILE, for CI dashboards.
    #[arg(long, global = true, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Also write the run as one KTAP document (a subtest per boot, the
    /// runner's verdict per scenario) to FILE, for `kunit.py parse`.
    #[arg(long, global = true, value_name = "FILE")]
    pub ktap: Option<PathBuf>,
    /// Guard pages on each side of every vmapped stack (guest default 1; 0 disables
    /// them, and then the overflow scenarios must come out as not caught).
    #[arg(long, global = true, value_name = "N", value_parser = guest_number(abi::config::guard_pages))]
    pub guard_pages: Option<u64>,
    /// The share of its stack, in percent, a task must use to be reported
    /// as a near miss when it exits (guest default 90; 100 reports none).
    #[arg(long, global = true, value_name = "PERCENT", value_parser = guest_number(abi::config::near_miss_percent))]
    pub near_miss_percent: Option<u64>,
    /// Task stack size in bytes, whole pages up to 1 MiB (guest default
    /// 16384, Linux's THREAD_SIZE).
    #[arg(long, global = true, value_name = "BYTES", value_parser = guest_number(abi::config::stack_size))]
    pub stack_size: Option<u64>,
    /// How the guest allocates task stacks (guest default vmap-cached): direct
    /// (pre-4.8: contiguous, no guard pages, thread_info at the bottom), vmap
    /// (vmalloc'ed with guard pages), vmap-cached (plus Linux's per-CPU cache
    /// of two free stacks).
    #[arg(long, global = true, value_name = "NAME", value_parser = strategy_parser())]
    pub stack_strategy: Option<Strategy>,
    /// When a dead task's stack is freed (guest default exit): exit (as soon as
    /// the dead task has been switched away from, 4.9+), rcu or legacy (with
    /// the task struct after a grace period, pre-4.8), rcu-cache (an RCU
    /// callback that tries the per-CPU cache first, 5.18+).
    #[arg(long, global = true, value_name = "MODE", value_parser = free_mode_parser())]
    pub stack_free: Option<FreeMode>,
    /// Bytes of serial output one boot may send; past it the boot is a
    /// flood and QEMU is killed (the log keeps what came before).
    #[arg(long, global = true, value_name = "BYTES", default_value_t = Limits::DEFAULT.boot,
          value_parser = clap::value_parser!(u64).range(4096..))]
    pub serial_limit: u64,
    /// Bytes of one serial line kept; a longer one keeps its head and tail
    /// around a note of what was cut.
    #[arg(long, global = true, value_name = "BYTES", default_value_t = Limits::DEFAULT.line as u64,
          value_parser = clap::value_parser!(u64).range(256..))]
    pub line_limit: u64,
    /// Debug mode: task structs in vmalloc pages of their own, unmapped when
    /// freed, so a use after free faults and is reported with the task's history.
    #[arg(long, global = true)]
    pub debug_task_structs: bool,
    /// Run the soak loops at full size (core.leak's 100 000 spawn/exit
    /// cycles, life.stress's 10 000 tasks, core.spawn_join's 10 000) instead
    /// of the tenth that makes the same checks in the default suite
    #[arg(long, global = true)]
    pub soak: bool,
    /// Test only: boot a guest built with this deliberate defect
    /// (runner/src/defects.rs), to prove a verdict check fails.
    #[arg(long, global = true, hide = true, value_name = "NAME", value_parser = defect_parser())]
    pub defect: Option<&'static crate::defects::Defect>,
    /// Boots run side by side, counted in vCPUs: a boot with `--smp 4`
    /// takes 4 (or all N, if N is fewer); default: this machine's CPUs.
    #[arg(long, short = 'j', global = true, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub jobs: Option<u32>,
    /// Set by `run --gdb`: the GDB stub's port (not a flag of every command).
    #[arg(skip)]
    pub gdb_port: Option<u16>,
}

fn defect_parser() -> impl clap::builder::TypedValueParser<Value = &'static crate::defects::Defect>
{
    use clap::builder::TypedValueParser;
    let names = crate::defects::DEFECTS.iter().map(|d| d.name);
    clap::builder::PossibleValuesParser::new(names).map(|word: String| {
        crate::defects::find(&word).expect("clap accepted only the listed names")
    })
}

impl Options {
    /// What clap cannot check: refused before anything is built or booted,
    /// with one line saying what to do.
    pub fn validate(&self) -> Result<(), String> {
        for (flag, path) in [
            ("--json", &self.json),
            ("--junit", &self.junit),
            ("--ktap", &self.ktap),
            ("--github-summary", &self.github_summary),
        ] {
            if let Some(path) = path {
                writable(path).map_err(|why| format!("{flag} {}: {why}", path.display()))?;
            }
        }
        Ok(())
    }

    /// What of a boot's serial output is kept.
    pub fn limits(&self) -> Limits {
        Limits {
            line: usize::try_from(self.line_limit).unwrap_or(usize::MAX),
            boot: self.serial_limit,
        }
    }

    /// The configuration these options ask the guest for: what its echo
    /// must show.
    pub fn requested(&self) -> crate::report::evidence::Requested {
        crate::report::evidence::Requested {
            stack_strategy: self.stack_strategy,
            stack_size: self.stack_size,
            guard_pages: self.guard_pages,
            near_miss_percent: self.near_miss_percent,
            stack_free: self.stack_free,
            task_structs: self
                .debug_task_structs
                .then_some(abi::config::TaskStructs::Vmalloc),
            workload: self.soak.then_some(abi::config::Workload::Soak),
        }
    }

    /// How many vCPUs' worth of boots may run at once (`--jobs`).
    pub fn jobs(&self) -> u32 {
        self.jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32))
    }

    /// The boot deadline in seconds: `--timeout`, or the accelerator's default.
    pub fn timeout_secs(&self) -> u64 {
        self.timeout.unwrap_or(match self.accel {
            Accel::Tcg => 120,
            Accel::Kvm => 1800,
        })
    }

    /// The guest command-line words the stack options ask for (`abi::cmdline`);
    /// an option not given is left to the guest's default.
    pub fn guest_args(&self) -> Vec<String> {
        let mut words = Vec::new();
        if let Some(n) = self.guard_pages {
            words.push(format!("{}={n}", abi::cmdline::GUARD_PAGES));
        }
        if let Some(n) = self.near_miss_percent {
            words.push(format!("{}={n}", abi::cmdline::STACK_NEAR_MISS));
        }
        if let Some(n) = self.stack_size {
            words.push(format!("{}={n}", abi::cmdline::STACK_SIZE));
        }
        if let Some(s) = self.stack_strategy {
            words.push(format!("{}={}", abi::cmdline::STACK_STRATEGY, s.as_str()));
        }
        if let Some(m) = self.stack_free {
            words.push(format!("{}={}", abi::cmdline::STACK_FREE, m.as_str()));
        }
        if self.debug_task_structs {
            words.push(format!(
                "{}={}",
                abi::cmdline::TASK_STRUCTS,
                abi::config::TaskStructs::Vmalloc
            ));
        }
        if self.soak {
            words.push(format!(
                "{}={}",
                abi::cmdline::WORKLOAD,
                abi::config::Workload::Soak
            ));
        }
        words
    }
}

/// A clap error as the runner's one line: clap's message and its tips,
/// without the usage block (`runner --help` has it).
pub fn one_line(error: &clap::Error) -> String {
    let text = error.render().to_string();
    let mut parts = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(message) = line.strip_prefix("error: ") {
            parts.push(message.to_string());
        } else if let Some(tip) = line.strip_prefix("tip: ") {
            parts.push(format!("({tip})"));
        } else if line.starts_with("Usage:") {
            break;
        }
    }
    if parts.is_empty() {
        parts.push(text.trim().replace('\n', " "));
    }
    format!("{}; see `runner --help`", parts.join(" "))
}

/// Whether a results file can be written at `path` at the end of the run:
/// its directory exists, and it is not a directory itself.
fn writable(path: &std::path::Path) -> Result<(), String> {
    if path.is_dir() {
        return Err("is a directory: name a file".into());
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    if !dir.is_dir() {
        return Err(format!(
            "no directory {} to write it in: create it or name another file",
            dir.display()
        ));
    }
    Ok(())
}

/// A clap parser for a number the guest takes only in the range
/// `abi::config` gives (`accept`), so a value it would ignore is refused
/// before anything boots.
fn guest_number(
    accept: fn(u64) -> Result<u64, abi::config::Refused>,
) -> impl clap::builder::TypedValueParser<Value = u64> {
    move |word: &str| -> Result<u64, String> {
        let n: u64 = word
            .parse()
            .map_err(|_| format!("{word} is not a number"))?;
        accept(n).map_err(|refused| refused.to_string())
    }
}

/// A clap parser for one of the contract's named enums: its values are the
/// names `abi::kinds` spells, `read` turns the accepted word into the value.
fn named<T: Copy + Send + Sync + 'static>(
    all: &'static [T],
    name: fn(T) -> &'static str,
    aliases: &'static [(&'static str, &'static str)],
    read: fn(&str) -> Option<T>,
) -> impl clap::builder::TypedValueParser<Value = T> {
    let values = all.iter().map(move |&v| {
        let n = name(v);
        let value = clap::builder::PossibleValue::new(n);
        aliases
            .iter()
            .filter(|(_, to)| *to == n)
            .fold(value, |value, (alias, _)| value.alias(alias))
    });
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(values)
        .map(move |word: String| read(&word).expect("clap accepted only the listed names"))
}

fn strategy_parser() -> impl clap::builder::TypedValueParser<Value = Strategy> {
    named(Strategy::ALL, Strategy::as_str, &[], Strategy::from_name)
}

fn free_mode_parser() -> impl clap::builder::TypedValueParser<Value = FreeMode> {
    named(
        FreeMode::ALL,
        FreeMode::as_str,
        &[("legacy", "rcu")],
        FreeMode::from_cmdline,
    )
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Tcg,
    /// Adds `-enable-kvm -cpu host`; needs /dev/kvm.
    Kvm,
}

/// How the guest gets loaded; each path owns its QEMU command in `qemu`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootPath {
    /// The in-tree loader as a PVH kernel on QEMU's microvm, the guest as its initrd.
    Direct,
    /// Real Limine from an ISO, SeaBIOS on q35.
    LimineBios,
    /// Real Limine from an ISO, OVMF (UEFI) on q35.
    LimineUefi,
}

impl BootPath {
    pub const ALL: [BootPath; 3] = [BootPath::Direct, BootPath::LimineBios, BootPath::LimineUefi];

    pub fn as_str(self) -> &'static str {
        match self {
            BootPath::Direct => "direct",
            BootPath::LimineBios => "limine-bios",
            BootPath::LimineUefi => "limine-uefi",
        }
    }

    /// Firmware start-up time added to every deadline: measured under TCG,
    /// SeaBIOS + Limine take ~1 s and OVMF + Limine ~6 s before the guest runs.
    pub fn firmware_allowance(self) -> std::time::Duration {
        std::time::Duration::from_secs(match self {
            BootPath::Direct => 0,
            BootPath::LimineBios => 10,
            BootPath::LimineUefi => 30,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn options_go_after_the_subcommand() {
        let cli = Cli::parse_from(["runner", "run", "boot.*", "--smp", "4", "--timeout", "3"]);
        assert_eq!(cli.options.smp, Some(4));
        assert_eq!(cli.options.timeout_secs(), 3);
        assert!(
            matches!(cli.command, Command::Run { ref patterns, gdb: false } if patterns == &["boot.*"])
        );
        assert_eq!(cli.options.boot, BootPath::Direct);
    }

    #[test]
    fn usage_errors_are_one_line() {
        for args in [
            &["runner", "runnn"][..],
            &["runner", "run", "--smp", "0"],
            &["runner", "run", "--timeout", "x"],
            &["runner", "run", "--stack-free", "never"],
            &["runner", "run", "--json"],
        ] {
            let error = Cli::try_parse_from(args).unwrap_err();
            let line = one_line(&error);
            assert!(!line.contains('\n'), "{args:?}: {line}");
            assert!(!line.starts_with("error"), "{args:?}: {line}");
            assert!(line.ends_with("; see `runner --help`"), "{args:?}: {line}");
        }
        let error = Cli::try_parse_from(["runner", "runn"]).unwrap_err();
        assert!(one_line(&error).contains("'run'"), "{}", one_line(&error));
    }

    #[test]
    fn boot_paths_by_name() {
        for path in BootPath::ALL {
            let cli = Cli::parse_from(["runner", "run", "--boot", path.as_str()]);
            assert_eq!(cli.options.boot, path);
        }
        assert!(Cli::try_parse_from(["runner", "run", "--boot", "grub"]).is_err());
        let cli = Cli::parse_from(["runner", "compare-boot", "--smp", "2"]);
        assert!(matches!(cli.command, Command::CompareBoot));
    }

    #[test]
    fn checkstack_flags() {
        let cli = Cli::parse_from(["runner", "checkstack"]);
        assert!(matches!(
            cli.command,
            Command::Checkstack {
                top: 20,
                all: false,
                guard_gap: 4096,
                elf: None
            }
        ));
        let cli = Cli::parse_from([
            "runner",
            "checkstack",
            "--all",
            "--guard-gap",
            "8192",
            "--elf",
            "g",
        ]);
        assert!(matches!(
            cli.command,
            Command::Checkstack {
                all: true,
                guard_gap: 8192,
                elf: Some(_),
                ..
            }
        ));
        for bad in [
            &["runner", "checkstack", "--top", "0"][..],
            &["runner", "checkstack", "--top", "3", "--all"],
            &["runner", "checkstack", "--guard-gap", "-1"],
            &["runner", "checkstack", "--elf"],
        ] {
            let error = Cli::try_parse_from(bad).unwrap_err();
            assert!(!one_line(&error).contains('\n'), "{bad:?}");
        }
    }

    #[test]
    fn stack_options_become_guest_cmdline_words() {
        let cli = Cli::parse_from(["runner", "run", "x.y"]);
        assert!(cli.options.guest_args().is_empty());
        let cli = Cli::parse_from([
            "runner",
            "test",
            "--guard-pages",
            "0",
            "--stack-size",
            "8192",
            "--stack-strategy",
            "vmap-cached",
            "--stack-free",
            "rcu-cache",
            "--debug-task-structs",
            "--near-miss-percent",
            "75",
        ]);
        let line = cli.options.guest_args().join(" ");
        use abi::cmdline::{
            value, GUARD_PAGES, STACK_FREE, STACK_NEAR_MISS, STACK_SIZE, STACK_STRATEGY,
            TASK_STRUCTS,
        };
        assert_eq!(value(&line, STACK_NEAR_MISS), Some("75"));
        assert_eq!(cli.options.requested().near_miss_percent, Some(75));
        assert_eq!(value(&line, STACK_FREE), Some("rcu-cache"));
        assert_eq!(value(&line, TASK_STRUCTS), Some("vmalloc"));
        assert_eq!(value(&line, GUARD_PAGES), Some("0"));
        assert_eq!(value(&line, STACK_SIZE), Some("8192"));
        assert_eq!(value(&line, STACK_STRATEGY), Some("vmap-cached"));
    }

    #[test]
    fn stack_knobs_take_exactly_the_contracts_names() {
        for &s in Strategy::ALL {
            let cli = Cli::parse_from(["runner", "run", "--stack-strategy", s.as_str()]);
            assert_eq!(cli.options.stack_strategy, Some(s));
        }
        for &m in FreeMode::ALL {
            let cli = Cli::parse_from(["runner", "run", "--stack-free", m.as_str()]);
            assert_eq!(cli.options.stack_free, Some(m));
        }
        let cli = Cli::parse_from(["runner", "run", "--stack-free", "legacy"]);
        assert_eq!(cli.options.stack_free, Some(FreeMode::Rcu));
        for bad in [
            ["--stack-free", "never"],
            ["--stack-strategy", "heap"],
            ["--near-miss-percent", "0"],
            ["--near-miss-percent", "101"],
        ] {
            assert!(Cli::try_parse_from(["runner", "run", bad[0], bad[1]]).is_err());
        }
    }
}
