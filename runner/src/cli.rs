//! The command line, as clap sees it.

use crate::status;
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
    },
    /// Run the default scenarios at each of their CPU counts and compare every outcome with what it should be.
    Test {
        /// Include the negative controls, each expected to fail in its own way
        /// (scenarios that are merely off by default, like benchmarks, stay out).
        #[arg(long)]
        all: bool,
    },
    /// Boot-to-exit wall time of `boot.smoke` against a trivial PVH guest (the loader with no guest).
    Bench {
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
        runs: u32,
    },
}

#[derive(Args, Debug, Clone)]
pub struct Options {
    /// CPUs to give QEMU (run: default 1; test: default each scenario's own list).
    #[arg(long, global = true, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub smp: Option<u32>,
    #[arg(long, global = true, value_enum, default_value_t = Accel::Tcg)]
    pub accel: Accel,
    /// Seconds before a boot is killed and reported as a timeout.
    #[arg(long, global = true, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
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
    /// Use the guest and loader already built instead of running cargo.
    #[arg(long, global = true)]
    pub no_build: bool,
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
}

impl BootPath {
    pub fn as_str(self) -> &'static str {
        match self {
            BootPath::Direct => "direct",
        }
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
        assert_eq!(cli.options.timeout, 3);
        assert!(matches!(cli.command, Command::Run { ref patterns } if patterns == &["boot.*"]));
    }
}
