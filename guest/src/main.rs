//! The testbed guest: a small Limine-protocol kernel.
//!
//! Boot path: `boot` reads what the boot loader handed over (Limine
//! requests), `arch::x86_64` owns the CPU and its devices, `mm` owns memory
//! (frames, page tables, heap, the vmalloc area and kernel stacks), `task`
//! runs kernel threads, `scenarios` runs what the command line asked for and
//! reports it as KTAP on COM1, and the verdict leaves through isa-debug-exit.
//!
//! Layers, lowest first; a module names only its own layer and those below
//! (`tests/layers.rs` enforces it, and lists the few crossings with their
//! reasons): `arch`; `sync`; `console`; `mm`; `task` and `rcu`; `lkdtm`;
//! `oops`; `boot` and `ktap`; `scenarios`. Where arch must call
//! up (a tick for the scheduler, a fault for the oops code, a test vector
//! for lkdtm), the layer above registers its handler here, in
//! `kernel_main`, before the first interrupt. `unsafe` lives in `arch` and
//! `mm` only; every module above them forbids it.
#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

// First, so its macros are visible in every module below.
#[macro_use]
#[forbid(unsafe_code)]
mod console;
mod arch;
#[deny(unsafe_code)] // forbid, but for the Limine requests' `#[link_section]`
mod boot;
#[forbid(unsafe_code)]
mod ktap;
#[forbid(unsafe_code)]
mod lkdtm;
mod mm;
#[forbid(unsafe_code)]
mod oops;
#[forbid(unsafe_code)]
mod rcu;
#[forbid(unsafe_code)]
mod scenarios;
#[forbid(unsafe_code)]
mod sync;
#[forbid(unsafe_code)]
mod task;

use abi::timeline::Stage;
use arch::x86_64::{interrupts, time};
use boot::cpu as bringup;
use x86_64::VirtAddr;

/// Called by `arch::x86_64::entry` (by symbol) on the boot CPU, on the stack
/// the boot loader gave us (ending at `stack_top`), with interrupts off.
#[no_mangle]
extern "C" fn kernel_main(stack_top: u64) -> ! {
    let mut timeline = boot::timeline::Timeline::start();
    time::open_boot_window();
    let stack_top = VirtAddr::new(stack_top);
    arch::x86_64::percpu::early_init();
    register_upcalls();
    console::init();
    let boot = boot::BootInfo::collect();
    mm::init(boot.hhdm_offset, boot.memory_map);
    timeline.end(Stage::Memory);
    configure(boot.cmdline);
    timeline.end(Stage::Config);

    bringup::init_cpu(0, arch::x86_64::cpu::apic_id());
    timeline.end(Stage::Cpu);
    // The TSC against the PIT (over the boot so far, if a 500 µs window
    // agrees; else in 1 ms windows), then the LAPIC timer against the TSC.
    time::calibrate(500, 1000);
    timeline.end(Stage::Clock);
    task::adopt_boot_flow("init", false, stack_top - boot::BOOT_STACK_SIZE, stack_top);
    task::create_idle().expect("no memory for the boot CPU's idle task");
    timeline.end(Stage::Tasks);
    bringup::start_tick();
    timeline.end(Stage::Tick);
    if let Some(mp) = boot.mp {
        boot::mp::start_aps(mp);
    }
    timeline.end(Stage::Aps);
    rcu::init(arch::x86_64::percpu::online());
    interrupts::enable();
    task::recovery::start();
    task::usage::init();
    timeline.end(Stage::Ready);
    timeline.report();

    // SAFETY: the scenarios use the license as `License::grant` requires:
    // each sabotage is on a stack the scenario announced or on its own
    // bytes, and is the fault the testbed exists to catch.
    let license = unsafe { arch::x86_64::sabotage::License::grant() };
    let exit = scenarios::run_requested(&boot, license);
    arch::x86_64::cpu::exit(exit)
}

/// What arch calls up to: installed before anything can fault or interrupt
/// (an unhandled fault before this panics with its rip).
fn register_upcalls() {
    interrupts::register(interrupts::Handlers {
        tick: task::timer_tick,
        shootdown: mm::tlb::handle_shootdown,
        test: lkdtm::test_vector,
        preempt: task::preempt_from_irq,
    });
    oops::register();
}

/// Apply the stack settings the runner passed on the command line, then
/// echo what is in force (`GUEST-CONFIG`). A value that does not parse, or
/// that `abi::config` does not accept, is reported and ignored, never
/// half-applied; the echo shows the runner what was kept.
fn configure(cmdline: &str) {
    use abi::cmdline::{
        value, GUARD_PAGES, STACK_FREE, STACK_NEAR_MISS, STACK_SIZE, STACK_STRATEGY, TASK_STRUCTS,
        WORKLOAD,
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
    if let Some(v) = value(cmdline, STACK_NEAR_MISS) {
        match v.parse::<u64>().ok().map(config::near_miss_percent) {
            Some(Ok(n)) => task::usage::set_near_miss_percent(n),
            Some(Err(refused)) => kprintln!(
                "config: {STACK_NEAR_MISS}={v}: {refused}; keeping {}",
                task::usage::near_miss_percent()
            ),
            None => kprintln!(
                "config: {STACK_NEAR_MISS}={v} is not a number; keeping {}",
                task::usage::near_miss_percent()
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
        near_miss_percent: task::usage::near_miss_percent(),
    });
}
