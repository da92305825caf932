//! Negative controls: each breaks the run in one known way, so the runner's
//! classification of that failure is proven by a real QEMU boot.
use super::Checks;
use crate::arch::x86_64::cpu;
use crate::boot::BootInfo;
use abi::GuestExit;

pub fn hang(_: &BootInfo, c: &mut Checks) {
    c.info(format_args!(
        "spinning with interrupts off; only the runner's timeout ends this"
    ));
    cpu::spin_forever()
}

pub fn triple_fault(_: &BootInfo, c: &mut Checks) {
    c.info(format_args!(
        "loading an empty IDT and raising #BP: #GP, #DF, then shutdown"
    ));
    cpu::triple_fault()
}

pub fn panic(_: &BootInfo, _: &mut Checks) {
    panic!("selftest.panic: deliberate panic");
}

/// Exits with `Pass` before printing its result line: the plan promised one
/// more result than the report holds.
pub fn bad_ktap(_: &BootInfo, c: &mut Checks) {
    c.info(format_args!(
        "exiting before this test's result line: the plan is not kept"
    ));
    cpu::exit(GuestExit::Pass)
}

pub fn fail(_: &BootInfo, c: &mut Checks) {
    c.check(false, format_args!("a check that is built to fail"));
}
