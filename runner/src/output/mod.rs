//! What a run tells a person or a CI system: the console summary
//! (`summary`), `--json`, `--junit` and `--ktap`; `term`, the lines
//! themselves.

pub mod json;
pub mod junit;
pub mod ktap;
pub mod summary;
pub mod term;
