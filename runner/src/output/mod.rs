//! What a run tells a person or a CI system: the console summary
//! (`summary`), `--json` and `--junit`.

pub mod json;
pub mod junit;
pub mod summary;
