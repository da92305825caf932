//! x86_64: entry, CPU tables (GDT/TSS/IDT), trap entry, the local APIC and
//! clocks, context switching, serial port, ACPI table access.
// First, so its macros are visible in the modules with assembly below.
#[macro_use]
mod asm_lines;
pub mod acpi;
pub mod context;
pub mod cpu;
pub mod current;
pub mod entry;
pub mod exceptions;
pub mod idt;
pub mod interrupts;
pub mod lapic;
pub mod percpu;
pub mod probe;
pub mod sabotage;
pub mod serial;
pub mod stack;
pub mod time;
pub mod trap;
