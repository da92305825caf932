//! `runner run SCENARIO --gdb`: stop a scenario at its fault and look.
//!
//! QEMU starts with every CPU held before its first instruction and its GDB
//! stub on a free local port; the runner prints the one `gdb` command that
//! attaches with the guest ELF's DWARF and a breakpoint on the guard-hit
//! report, then boots and judges as `run` does, with no deadline. At the
//! breakpoint, `bt` goes through the trap frame (the entry stubs' CFI
//! describes it) into the task that overflowed.
//!
//! The breakpoint is a hardware one: before the guest has paged itself in,
//! the report's address is not mapped, so a software breakpoint cannot be
//! written there under KVM (TCG would not mind).

use crate::cli::Options;
use crate::fatal::Fatal;
use crate::record::Mode;
use crate::session;
use crate::symbols::Symbols;
use std::path::Path;

/// Where every stack fault the guest explains is decided (`oops::stack_fault`,
/// called from the #PF and #DF handlers), as DWARF and gdb spell it.
pub const GUARD_HIT_REPORT: &str = "guest::oops::stack_fault";

pub fn execute(patterns: &[String], options: &Options) -> Result<i32, Fatal> {
    let boots = crate::select::run_plan(patterns, options)?;
    if boots.len() != 1 {
        return Err(Fatal::usage(format!(
            "--gdb debugs one boot, and these scenarios need {}: name scenarios that share one \
             (e.g. one scenario)",
            boots.len()
        )));
    }
    let setup = session::setup(options, &[boots[0].path])?;
    let symbols = setup
        .symbols
        .as_ref()
        .ok_or_else(|| Fatal::setup("--gdb: the guest ELF's symbols cannot be read"))?;
    check_breakpoint(symbols)?;
    let port = free_port()?;
    let options = Options {
        gdb_port: Some(port),
        ..options.clone()
    };
    eprintln!(
        "runner: QEMU waits for GDB on 127.0.0.1:{port}, before the first instruction; \
         in another terminal:"
    );
    eprintln!("{}", command(&setup.artifacts.guest, port));
    eprintln!(
        "runner: at the breakpoint `bt` shows the overflowed task through the trap frame; \
         `continue` lets the guest report; no deadline until QEMU ends"
    );
    session::execute_with(Mode::Run, &setup, boots, Vec::new(), &options)
}

/// The command a person pastes: the run's own guest copy (the one QEMU
/// boots, with DWARF), attached, the breakpoint set, the guest started.
pub fn command(guest: &Path, port: u16) -> String {
    let quote = crate::boot::qemu::shell_quote;
    [
        "gdb".to_string(),
        "-q".to_string(),
        quote(&guest.display().to_string()),
        "-ex".to_string(),
        quote(&format!("target remote 127.0.0.1:{port}")),
        "-ex".to_string(),
        quote(&format!("hbreak {GUARD_HIT_REPORT}")),
        "-ex".to_string(),
        "continue".to_string(),
    ]
    .join(" ")
}

/// A breakpoint on a renamed function would never stop: say so up front.
fn check_breakpoint(symbols: &Symbols) -> Result<(), Fatal> {
    match symbols.address_of(GUARD_HIT_REPORT) {
        Some(_) => Ok(()),
        None => Err(Fatal::setup(format!(
            "--gdb: the guest has no function `{GUARD_HIT_REPORT}` to break on: \
             update GUARD_HIT_REPORT in runner/src/gdb.rs"
        ))),
    }
}

/// A port nobody listens on now; QEMU binds it a moment later.
fn free_port() -> Result<u16, Fatal> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Fatal::setup(format!("--gdb: no free local port for the stub: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_attaches_breaks_and_goes() {
        assert_eq!(
            command(Path::new("/r/images/guest"), 40123),
            "gdb -q /r/images/guest -ex 'target remote 127.0.0.1:40123' \
             -ex 'hbreak guest::oops::stack_fault' -ex continue"
        );
    }

    #[test]
    fn a_free_port_is_not_zero() {
        assert_ne!(free_port().unwrap(), 0);
    }
}
