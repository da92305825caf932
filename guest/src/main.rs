//! The testbed guest: a small Limine-protocol kernel.
//!
//! Boot path: `boot` reads what the boot loader handed over (Limine
//! requests), `arch::x86_64` owns the CPU and its devices, `mm` owns memory
//! (frames, page tables, heap, the vmalloc area and kernel stacks), `task`
//! runs kernel threads, `scenarios` runs what the command line asked for and
//! reports it as KTAP on COM1, and the verdict leaves through isa-debug-exit.
//! `unsafe` lives in `arch` and `mm` only; everything above them is safe Rust.
#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

// First, so its macros are visible in every module below.
#[macro_use]
mod console;
mod arch;
mod boot;
mod ktap;
mod lkdtm;
mod mm;
mod oops;
mod panic;
mod rcu;
mod scenarios;
mod sync;
mod task;

use abi::GuestExit;
use arch::x86_64::{bringup, interrupts, time};
use x86_64::VirtAddr;

/// Called by `arch::x86_64::entry` on the boot CPU, on the stack the boot
/// loader gave us (ending at `stack_top`), with interrupts off.
fn kernel_main(stack_top: VirtAddr) -> ! {
    arch::x86_64::percpu::early_init();
    console::init();
    let boot = boot::BootInfo::collect();
    mm::init(&boot);
    configure(boot.cmdline);

    bringup::init_cpu(0, arch::x86_64::cpu::apic_id());
    // The TSC against the PIT, then the LAPIC timer against the TSC.
    time::calibrate(1000);
    task::adopt_boot_flow("init", false, stack_top);
    task::create_idle().expect("no memory for the boot CPU's idle task");
    bringup::start_tick();
    if let Some(mp) = boot.mp {
        boot::mp::start_aps(mp);
    }
    rcu::init(arch::x86_64::percpu::online());
    interrupts::enable();
    task::recovery::start();

    let exit = scenarios::run_requested(&boot);
    arch::x86_64::cpu::exit(exit)
}

/// Apply the stack settings the runner passed on the command line, then
/// echo what is in force (`GUEST-CONFIG`). A value that does not parse, or
/// that `abi::config` does not accept, is reported and ignored, never
/// half-applied; the echo shows the runner what was kept.
fn configure(cmdline: &str) {
    use abi::cmdline::{
        value, GUARD_PAGES, STACK_FREE, STACK_SIZE, STACK_STRATEGY, TASK_STRUCTS, WORKLOAD,
    };
    use abi::config::{self, GuestConfig, TaskStructs, Workload};
    use mm::stack;
    if let Some(v) = value(cmdline, STACK_STRATEGY) {
        match stack::Strategy::from_name(v) {
            Some(s) => stack::set_strategy(s),
            None => kprintln!(
                "config: unknown {STACK_STRATEGY}={v}, keeping {}",
                stack::strategy()
            ),
        }
    }
    if let Some(v) = value(cmdline, STACK_SIZE) {
        match v.parse::<u64>().ok().map(config::stack_size) {
            Some(Ok(n)) => stack::set_task_stack_size(n as usize),
            Some(Err(refused)) => kprintln!(
                "config: {STACK_SIZE}={v}: {refused}; keeping {}",
                stack::task_stack_size()
            ),
            None => kprintln!(
                "config: {STACK_SIZE}={v} is not a number; keeping {}",
                stack::task_stack_size()
            ),
        }
    }
    if let Some(v) = value(cmdline, STACK_FREE) {
        match task::FreeMode::from_cmdline(v) {
            Some(m) => task::set_free_mode(m),
            None => kprintln!(
                "config: unknown {STACK_FREE}={v}, keeping {}",
                task::free_mode()
            ),
        }
    }
    if let Some(v) = value(cmdline, TASK_STRUCTS) {
        match TaskStructs::from_name(v) {
            Some(TaskStructs::Vmalloc) => task::set_debug_placement(true),
            Some(TaskStructs::Heap) => {}
            None => kprintln!("config: unknown {TASK_STRUCTS}={v} (heap or vmalloc), keeping heap"),
        }
    }
    if let Some(v) = value(cmdline, GUARD_PAGES) {
        match v.parse::<u64>().ok().map(config::guard_pages) {
            Some(Ok(n)) => stack::set_guard_pages(n as usize),
            Some(Err(refused)) => kprintln!(
                "config: {GUARD_PAGES}={v}: {refused}; keeping {}",
                stack::guard_pages()
            ),
            None => kprintln!(
                "config: {GUARD_PAGES}={v} is not a number; keeping {}",
                stack::guard_pages()
            ),
        }
    }
    if let Some(v) = value(cmdline, WORKLOAD) {
        match Workload::from_name(v) {
            Some(w) => scenarios::workload::set(w),
            None => kprintln!(
                "config: unknown {WORKLOAD}={v} (check or soak), keeping {}",
                scenarios::workload::get()
            ),
        }
    }
    console::record(&GuestConfig {
        stack_strategy: stack::strategy(),
        stack_size: stack::task_stack_size() as u64,
        guard_pages: stack::guard_pages() as u64,
        stack_free: task::free_mode(),
        task_structs: if task::debug_placement() {
            TaskStructs::Vmalloc
        } else {
            TaskStructs::Heap
        },
        workload: scenarios::workload::get(),
    });
}

/// The verdict for a KTAP report: `Pass` only if every result was `ok`.
const fn verdict(all_ok: bool) -> GuestExit {
    if all_ok {
        GuestExit::Pass
    } else {
        GuestExit::Fail
    }
}
