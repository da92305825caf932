//! TLB maintenance: local invalidation, and shootdown IPIs to every other
//! CPU when a mapping goes away.
//!
//! All CPUs share the kernel page tables, but each caches translations in
//! its own TLB; after an unmap, another CPU could keep using a stale entry
//! to reach a frame that has already been reused. So the unmapping CPU
//! publishes the range, interrupts every other online CPU, and waits until
//! each has invalidated it before the frames are freed.
use crate::arch::x86_64::{interrupts, lapic, percpu};
use crate::sync::SpinLock;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use x86_64::instructions::tlb;
use x86_64::VirtAddr;

/// The request being served: (generation, start, end). Generation 0 = none.
static REQUEST: SpinLock<()> = SpinLock::new(()).named("tlb_shootdown");
static GENERATION: AtomicU64 = AtomicU64::new(0);
static START: AtomicU64 = AtomicU64::new(0);
static END: AtomicU64 = AtomicU64::new(0);
static PENDING: AtomicUsize = AtomicUsize::new(0);
/// Per CPU: the last generation this CPU has served.
static SEEN: [AtomicU64; percpu::MAX_CPUS] = [const { AtomicU64::new(0) }; percpu::MAX_CPUS];

/// Shootdowns sent and pages they covered, for the reports.
pub static SHOOTDOWNS: AtomicU64 = AtomicU64::new(0);

fn flush_range(start: u64, end: u64) {
    // Past 32 pages a full flush is cheaper than page-by-page invlpg.
    if (end - start) / 4096 > 32 {
        tlb::flush_all();
    } else {
        let mut a = start;
        while a < end {
            tlb::flush(VirtAddr::new(a));
            a += 4096;
        }
    }
}

/// Serve a pending shootdown, if this CPU has not yet. Called from the IPI
/// handler and by CPUs spinning for the request lock (which may have
/// interrupts off and so cannot take the IPI).
pub fn handle_shootdown() {
    if !percpu::ready() {
        return;
    }
    let me = percpu::this().id;
    let generation = GENERATION.load(Ordering::Acquire);
    if generation != 0 && SEEN[me].swap(generation, Ordering::AcqRel) != generation {
        flush_range(START.load(Ordering::Acquire), END.load(Ordering::Acquire));
        PENDING.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Invalidate `[start, end)` on this CPU and on every other online CPU,
/// returning once all of them have.
pub fn shootdown(start: VirtAddr, end: VirtAddr) {
    flush_range(start.as_u64(), end.as_u64());
    let others = percpu::online().saturating_sub(1);
    // A deliberate defect (`runner --defect shootdown-local-only`): the
    // range flushed on this CPU only, no IPI to the others.
    if others == 0 || cfg!(defect = "shootdown-local-only") {
        return;
    }
    let _guard = loop {
        if let Some(g) = REQUEST.try_lock() {
            break g;
        }
        handle_shootdown();
        core::hint::spin_loop();
    };
    START.store(start.as_u64(), Ordering::Release);
    END.store(end.as_u64(), Ordering::Release);
    PENDING.store(others, Ordering::Release);
    let generation = GENERATION.fetch_add(1, Ordering::AcqRel) + 1;
    SEEN[percpu::this().id].store(generation, Ordering::Release);
    lapic::send_ipi_all_but_self(lapic::Delivery::Fixed(interrupts::TLB_SHOOTDOWN_VECTOR));
    while PENDING.load(Ordering::Acquire) != 0 {
        core::hint::spin_loop();
    }
    SHOOTDOWNS.fetch_add(1, Ordering::Relaxed);
}
