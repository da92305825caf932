//! What a boot said and what it means. `classify` turns QEMU's exit and the
//! KTAP report into one verdict for the boot; `judge` gives each scenario
//! its result; `lines` reads the guest's machine-readable fault lines, and
//! `stack` holds each stack scenario's lines against the ground truth the
//! guest announced and the guest ELF.

pub mod classify;
pub mod judge;
pub mod lines;
pub mod stack;
