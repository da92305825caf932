//! What a run tells a person or a CI system: the console summary
//! (`summary`), `--json` and `--junit`; `term`, the lines themselves.

pub mod json;
pub mod junit;
pub mod summary;
pub mod term;
