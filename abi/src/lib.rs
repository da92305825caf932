//! The contract between the guest and the runner.
//!
//! Both sides link this crate, so a scenario name, an exit code or a command
//! line key means the same thing on either side of the isa-debug-exit port.
//! It is `no_std` data and small pure functions: nothing here touches hardware.
#![no_std]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod cmdline;
pub mod exit;
pub mod guard;
pub mod ksyms;
pub mod scenario;
pub mod uaf;

pub use exit::GuestExit;
pub use scenario::{Outcome, Scenario, SCENARIOS};
