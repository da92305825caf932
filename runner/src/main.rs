//! The testbed's host side: builds the guest, boots it in QEMU, judges each
//! scenario from the KTAP report and QEMU's exit status. See `runner --help`.

/// The crate's `println!` and `eprintln!`: std's panic on a closed stream
/// (EPIPE from `runner ... | head`); these make it go quiet instead
/// (`output::term`). Defined before the modules, so every one of them uses
/// these, not std's.
macro_rules! println {
    () => {
        $crate::output::term::out(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::output::term::out(format_args!($($arg)*))
    };
}

macro_rules! eprintln {
    () => {
        $crate::output::term::err(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::output::term::err(format_args!($($arg)*))
    };
}

mod bench;
mod boot;
mod checkstack;
mod cli;
mod compare_boot;
mod defects;
mod demo;
mod fatal;
mod frames;
mod gdb;
mod glob;
mod mutants;
mod output;
mod record;
mod report;
mod select;
mod session;
mod stack_map;
mod status;
mod symbols;
mod unwind;
mod workspace;

use abi::SCENARIOS;
use clap::Parser;
use cli::{Cli, Command, Options};
use fatal::Fatal;
use record::Mode;

fn main() {
    boot::process::kill_children_on_interrupt();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help, --version, and `runner` alone (the help, on stderr).
        Err(e)
            if !e.use_stderr()
                || e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand =>
        {
            e.exit()
        }
        Err(e) => {
            eprintln!("runner: error: {}", cli::one_line(&e));
            std::process::exit(status::USAGE);
        }
    };
    let code = match dispatch(cli.command, &cli.options) {
        Ok(code) => code,
        Err(fatal) => {
            eprintln!("runner: error: {fatal}");
            fatal.status
        }
    };
    std::process::exit(code);
}

fn dispatch(command: Command, options: &Options) -> Result<i32, Fatal> {
    options.validate().map_err(Fatal::usage)?;
    match command {
        Command::List => {
            list();
            Ok(status::OK)
        }
        Command::Build => {
            let artifacts = workspace::build(options.defect)?;
            println!("guest:  {}", artifacts.guest.display());
            println!("loader: {}", artifacts.loader.display());
            Ok(status::OK)
        }
        Command::Run {
            patterns,
            gdb: true,
        } => gdb::execute(&patterns, options),
        Command::Run {
            patterns,
            gdb: false,
        } => session::execute(
            Mode::Run,
            select::run_plan(&patterns, options)?,
            Vec::new(),
            options,
        ),
        Command::Test { all } => {
            let (boots, skipped) = select::test_plan(all, options)?;
            session::execute(Mode::Test, boots, skipped, options)
        }
        Command::CompareBoot => compare_boot::execute(options),
        Command::Demo { patterns } => demo::execute(&patterns, options),
        Command::Bench { runs } => bench::execute(runs, options),
        Command::Mutants { names } => mutants::execute(&names, options),
        Command::Checkstack {
            top,
            all,
            guard_gap,
            elf,
        } => checkstack::execute(
            &checkstack::Args {
                top: (!all).then_some(top as usize),
                guard_gap,
                elf,
            },
            options,
        ),
    }
}

fn list() {
    let width = SCENARIOS.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for s in SCENARIOS {
        let tags = match (s.default, s.isolated) {
            (true, _) => "",
            (false, true) => " [control, own boot]",
            (false, false) => " [on request]",
        };
        println!(
            "{:width$}  expect {:<12} {}{tags}",
            s.name,
            s.expect.as_str(),
            s.summary
        );
    }
}
