//! What a run tells a person or a CI system: the console summary
//! (`summary`), `--json`, `--junit`, `--ktap` and GitHub Actions' step
//! summary and annotations (`github`); `term`, the lines
//! themselves.

pub mod github;
pub mod json;
pub mod junit;
pub mod ktap;
pub mod summary;
pub mod term;

use crate::fatal::Fatal;

/// The runner's version, in every JSON document it writes (`--json`,
/// `mutants --json`, `bench.json`) beside that document's `schema_version`.
pub const RUNNER_VERSION: &str = env!("CARGO_PKG_VERSION");
use std::path::Path;

/// Write one output file; a failure is the run's setup error, named.
pub fn write_file(path: &Path, text: &str) -> Result<(), Fatal> {
    std::fs::write(path, text)
        .map_err(|e| Fatal::setup(format!("cannot write {}: {e}", path.display())))
}
