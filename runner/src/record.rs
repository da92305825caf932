//! What a run did, boot by boot: the records the summary, `--json` and
//! `--junit` are written from. Plain data, so that the outputs depend on it
//! and not on the session that fills it in.
use crate::boot::qemu::Invocation;
use crate::cli::BootPath;
use crate::report::classify::Verdict;
use crate::report::judge::ScenarioResult;
use crate::select::Boot;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Report what happened.
    Run,
    /// Report whether each scenario did what it should (negative controls fail on purpose).
    Test,
}

pub struct BootRecord {
    pub boot: Boot,
    pub invocation: Invocation,
    pub exit_status: Option<i32>,
    pub duration: Duration,
    pub serial_log: PathBuf,
    /// Serial lines longer than `--line-limit`, kept cut.
    pub cut_lines: u64,
    pub verdict: Verdict,
    pub results: Vec<ScenarioResult>,
}

/// Boots the plan wanted but this machine cannot do (no Limine here), each
/// reported as SKIP with the reason.
pub struct Skipped {
    pub path: BootPath,
    pub scenarios: Vec<&'static abi::Scenario>,
    pub smp: u32,
    pub reason: String,
}
