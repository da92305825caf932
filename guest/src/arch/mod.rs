//! Everything that talks to the CPU or platform devices directly: the
//! bottom layer, which names none of the layers above but one crossing:
//! the LAPIC's registers and the ACPI tables are reached through mm's direct
//! map (`mm::hhdm`, an offset that mm sets from the boot loader's answer).
//! The scheduler, the fault reports and the test hooks register the
//! handlers arch calls up to (`interrupts::register`,
//! `exceptions::register`); `current` holds each CPU's task for a type arch
//! knows only as `current::Switchable`.
pub mod x86_64;
