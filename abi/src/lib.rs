//! The contract between the guest and the runner.
//!
//! Both sides link this crate, so a scenario name, an exit code, a command
//! line key or a record the guest prints means the same thing on either
//! side of the serial line and the isa-debug-exit port. It is `no_std` data
//! and small pure functions: nothing here touches hardware or allocates.
#![no_std]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod bench;
pub mod cmdline;
pub mod config;
pub mod exit;
pub mod guard;
pub mod held;
pub mod kinds;
pub mod ksyms;
pub mod oops;
#[macro_use]
pub mod record;
pub mod scenario;
pub mod stackdump;
pub mod timeline;
pub mod timing;
pub mod uaf;
pub mod usage;

pub use exit::GuestExit;
pub use record::{Hex, Record};
pub use scenario::{Outcome, Scenario, SCENARIOS};
