//! A parser for KTAP version 1, the test report format Linux KUnit prints.
//!
//! The input is a serial log, so KTAP arrives mixed with boot messages, oops
//! reports and garbage bytes. The parser therefore never fails: it keeps what
//! it does not understand as unknown lines and records what is wrong with the
//! report as [`Problem`]s, so the caller can tell a truncated run from a
//! complete one instead of trusting whatever results happened to arrive.
//!
//! ```
//! let report = ktap::parse("boot: hello\nKTAP version 1\n1..2\n# log\nok 1 a\nnot ok 2 b # TODO later\n");
//! assert!(report.is_complete());
//! assert_eq!(report.results[0].diagnostics, ["log"]);
//! assert_eq!(report.unknown_lines, ["boot: hello"]);
//! ```

mod line;
mod parse;
mod report;

pub use parse::{parse, parse_bytes};
pub use report::{Directive, Problem, Report, TestResult};
