//! Bringing up the application processors the bootloader parked for us.
//!
//! Limine starts every CPU and parks it spinning on its `goto_address`; an
//! atomic write of a function pointer releases it onto its own stack with a
//! pointer to its `limine_mp_info` in RDI. We pass each AP its dense CPU
//! index in the free `extra` word. The AP first proves it arrived by
//! recording its own APIC id (read with CPUID, not copied from the info
//! block), then sets up its per-CPU state and becomes that CPU's idle task.
use super::cpu as bringup;
use crate::arch::x86_64::{cpu, percpu};
use crate::task;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use limine::mp::Cpu;
use limine::response::MpResponse;
use x86_64::VirtAddr;

/// Marks a report as written by the AP itself.
const ARRIVED: u64 = 1 << 63;

static REPORTED: [AtomicU64; percpu::MAX_CPUS] = [const { AtomicU64::new(0) }; percpu::MAX_CPUS];
static ONLINE_APS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn ap_entry(info: &Cpu) -> ! {
    percpu::early_init();
    let id = info.extra.load(Ordering::Acquire) as usize;
    REPORTED[id].store(ARRIVED | u64::from(cpu::apic_id()), Ordering::Release);
    // The bootloader's AP stack: we are a few bytes below its top.
    let top = VirtAddr::new(cpu::stack_pointer()).align_up(4096u64);
    bringup::init_cpu(id, info.lapic_id);
    task::adopt_boot_flow("swapper", true, top - super::BOOT_STACK_SIZE, top);
    bringup::start_tick();
    ONLINE_APS.fetch_add(1, Ordering::AcqRel);
    task::idle_loop()
}

/// One AP as seen after bring-up.
pub struct ApReport {
    pub lapic_id: u32,
    /// The APIC id the AP read on itself; `None` if it never arrived.
    pub reported_apic_id: Option<u32>,
}

fn aps(mp: &MpResponse) -> impl Iterator<Item = &&Cpu> {
    let bsp = mp.bsp_lapic_id();
    mp.cpus().iter().filter(move |c| c.lapic_id != bsp)
}

/// The LAPIC id of each CPU index, as the boot loader listed the CPUs:
/// index 0 is the BSP, then the APs in the order `start_aps` numbers them.
/// The ground truth a fault report's hardware-read LAPIC id is held
/// against (`oops::announce_cpus`).
pub fn lapic_ids(mp: &MpResponse) -> impl Iterator<Item = u32> + '_ {
    core::iter::once(mp.bsp_lapic_id())
        .chain(aps(mp).map(|c| c.lapic_id))
        .take(percpu::MAX_CPUS)
}

/// Release every AP and wait (bounded) until all of them are online.
/// Returns how many came up.
pub fn start_aps(mp: &MpResponse) -> usize {
    let mut expected = 0;
    for (i, ap) in aps(mp).enumerate() {
        if i + 1 >= percpu::MAX_CPUS {
            break;
        }
        ap.extra.store(i as u64 + 1, Ordering::Release);
        ap.goto_address.write(ap_entry);
        expected += 1;
    }
    // A spin budget generous for TCG (APs are parked in long mode and
    // arrive within microseconds) still ends a boot whose AP never comes.
    for _ in 0..200_000_000u64 {
        if ONLINE_APS.load(Ordering::Acquire) >= expected {
            break;
        }
        core::hint::spin_loop();
    }
    ONLINE_APS.load(Ordering::Acquire)
}

/// What each AP reported, for the checks.
pub fn reports(mp: &MpResponse) -> impl Iterator<Item = ApReport> + '_ {
    aps(mp).enumerate().map(|(i, c)| {
        let r = REPORTED.get(i + 1).map_or(0, |r| r.load(Ordering::Acquire));
        ApReport {
            lapic_id: c.lapic_id,
            reported_apic_id: (r & ARRIVED != 0).then_some(r as u32),
        }
    })
}

/// APs that completed bring-up.
pub fn online_aps() -> usize {
    ONLINE_APS.load(Ordering::Acquire)
}
