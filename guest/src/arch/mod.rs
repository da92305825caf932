//! Everything that talks to the CPU or platform devices directly.
pub mod x86_64;
