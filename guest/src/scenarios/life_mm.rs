//! `life.mm_refs`: Jann Horn's three kinds of mm reference, in the guest.
//!
//! Dropping the page-table root (`mm_count`) from an RCU callback must be
//! punted to a worker (`mmdrop_async`), because freeing page tables may
//! sleep; dropping a struct-only reference frees right there. The checks
//! prove both, with the worker's own counts and `might_sleep` watching.
use super::Checks;
use crate::arch::x86_64::percpu;
use crate::boot::BootInfo;
use crate::mm::address_space::{self, Mm};
use crate::rcu;
use crate::sync::irq;
use alloc::format;
use alloc::string::String;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use kcore::mm_refs::Context::{Atomic, Process, RcuCallback};
use kcore::mm_refs::MmCounts;

/// What an RCU callback saw right after dropping its mm reference, there
/// and then (the scenario reads it after the grace period).
struct Seen {
    ran: AtomicBool,
    struct_freed: AtomicBool,
    deferred: AtomicU64,
    irqs_on: AtomicBool,
    preempt: AtomicU64,
    cpu: AtomicU64,
}

impl Seen {
    const fn new() -> Seen {
        Seen {
            ran: AtomicBool::new(false),
            struct_freed: AtomicBool::new(false),
            deferred: AtomicU64::new(0),
            irqs_on: AtomicBool::new(false),
            preempt: AtomicU64::new(0),
            cpu: AtomicU64::new(0),
        }
    }

    fn note(&self, drop: impl FnOnce()) {
        let (s0, live0) = (address_space::stats(), address_space::live());
        drop();
        let (s1, live1) = (address_space::stats(), address_space::live());
        let freed = live1 < live0 && s1.struct_frees > s0.struct_frees;
        self.struct_freed.store(freed, Ordering::Relaxed);
        self.deferred
            .store(deferred(&s1) - deferred(&s0), Ordering::Relaxed);
        let irqs_on = x86_64::instructions::interrupts::are_enabled();
        self.irqs_on.store(irqs_on, Ordering::Relaxed);
        let cpu = percpu::this();
        self.preempt
            .store(cpu.preempt_count().into(), Ordering::Relaxed);
        self.cpu.store(cpu.id as u64, Ordering::Relaxed);
        self.ran.store(true, Ordering::Release);
    }

    fn ran(&self) -> bool {
        self.ran.load(Ordering::Acquire)
    }

    /// The callback ran where sleeping was allowed: then a synchronous
    /// page-table free there would go unreported, and (c) proves less.
    fn could_sleep(&self) -> bool {
        self.irqs_on.load(Ordering::Relaxed) && self.preempt.load(Ordering::Relaxed) == 0
    }

    fn context(&self) -> String {
        format!(
            "CPU {}, interrupts {}, preempt_count {}",
            self.cpu.load(Ordering::Relaxed),
            if self.irqs_on.load(Ordering::Relaxed) {
                "on"
            } else {
                "off"
            },
            self.preempt.load(Ordering::Relaxed)
        )
    }
}

fn deferred(s: &MmCounts) -> u64 {
    s.teardowns_deferred + s.page_table_frees_deferred
}

fn new_mm(c: &mut Checks, pages: usize) -> Option<Mm> {
    match Mm::new(pages) {
        Ok(mm) => Some(mm),
        Err(e) => {
            c.check(false, format_args!("mm_alloc: {e:?}"));
            None
        }
    }
}

/// Wait out every callback queued so far and the work they queued.
fn quiesce_mm() {
    rcu::synchronize_rcu();
    rcu::rcu_barrier();
    address_space::flush_work();
}

pub fn mm_refs(_: &BootInfo, c: &mut Checks) {
    const PAGES: usize = 4;
    static B: Seen = Seen::new();
    static C: Seen = Seen::new();
    // Warm-up: the worker starts with the first mm, and the work queue, the
    // wait queues and the RCU lists grow to a steady size; none is a leak.
    for _ in 0..2 {
        if let Ok(mm) = Mm::new(PAGES) {
            let (grab, sref) = (mm.mmgrab(), mm.get_struct());
            mm.mmput(Process);
            rcu::call_rcu(move || {
                grab.mmdrop(RcuCallback);
                sref.put(RcuCallback);
            });
        }
        if let Ok(mm) = Mm::new(PAGES) {
            irq::without(|| mm.mmput(Atomic));
        }
        quiesce_mm();
    }
    c.check(
        super::workload::settle(),
        format_args!("quiet before the run"),
    );
    let baseline = super::counters_now();
    let (start, w_start, live0) = (
        address_space::stats(),
        address_space::worker_counts(),
        address_space::live(),
    );
    let (bugs0, events0) = (
        address_space::invalid_context_bugs(),
        address_space::refcount_events(),
    );

    // (a) The whole exit chain in process context.
    let s0 = address_space::stats();
    if let Some(mm) = new_mm(c, PAGES) {
        let i = mm.info();
        c.check(
            i.mapped_pages == PAGES && i.has_pgd && (i.users, i.count, i.struct_refs) == (1, 1, 1),
            format_args!("a new mm: {PAGES} pages mapped under its own PGD, one reference of each kind ({i:?})"),
        );
        mm.mmget().mmput(Process);
        mm.mmput(Process);
        let s = address_space::stats();
        c.check(
            s.teardowns == s0.teardowns + 1
                && s.page_table_frees == s0.page_table_frees + 1
                && s.struct_frees == s0.struct_frees + 1
                && deferred(&s) == deferred(&s0)
                && address_space::live() == live0,
            format_args!("exit in process context: mappings, page tables and struct freed synchronously, nothing deferred"),
        );
    }

    // (b) Jann's case with the third count: a struct-only reference held
    // past exit and dropped from an RCU callback.
    let (s0, w0) = (address_space::stats(), address_space::worker_counts());
    if let Some(mm) = new_mm(c, PAGES) {
        let sref = mm.get_struct();
        mm.mmput(Process);
        let i = sref.info();
        c.check(
            (i.users, i.count, i.mapped_pages, i.has_pgd) == (0, 0, 0, false)
                && address_space::live() == live0 + 1,
            format_args!("after exit a struct-only reference keeps just the struct (mm {}: no mappings, no PGD)", i.id),
        );
        rcu::call_rcu(move || B.note(|| sref.put(RcuCallback)));
        quiesce_mm();
        c.check(
            B.ran() && B.struct_freed.load(Ordering::Relaxed) && B.deferred.load(Ordering::Relaxed) == 0,
            format_args!("struct-only reference dropped from an RCU callback: freed right there, nothing deferred"),
        );
        let (s, w) = (address_space::stats(), address_space::worker_counts());
        c.check(
            deferred(&s) == deferred(&s0)
                && w.queued == w0.queued
                && address_space::live() == live0,
            format_args!(
                "the worker was not involved (queued {} -> {})",
                w0.queued, w.queued
            ),
        );
    }

    // (c) The same with an mm_count reference: the root goes, so the free
    // must be punted to the worker (mmdrop_async).
    let (s0, w0) = (address_space::stats(), address_space::worker_counts());
    if let Some(mm) = new_mm(c, PAGES) {
        let grab = mm.mmgrab();
        mm.mmput(Process);
        let i = grab.info();
        c.check(
            (i.users, i.count, i.mapped_pages, i.has_pgd) == (0, 1, 0, true),
            format_args!(
                "after exit an mm_count reference keeps the PGD but not the mappings (mm {})",
                i.id
            ),
        );
        rcu::call_rcu(move || C.note(|| grab.mmdrop(RcuCallback)));
        quiesce_mm();
        let (s, w) = (address_space::stats(), address_space::worker_counts());
        c.check(
            C.ran() && C.deferred.load(Ordering::Relaxed) == 1
                && s.page_table_frees_deferred == s0.page_table_frees_deferred + 1
                && s.page_table_frees == s0.page_table_frees,
            format_args!("mm_count dropped from an RCU callback: the page-table free was deferred (mmdrop_async), not done in the callback"),
        );
        c.check(
            w.ran == w0.ran + 1 && w.ran_in_process_context == w0.ran_in_process_context + 1,
            format_args!(
                "the worker ran it in process context ({} item, {} in process context)",
                w.ran - w0.ran,
                w.ran_in_process_context - w0.ran_in_process_context
            ),
        );
        c.check(
            s.struct_frees == s0.struct_frees + 1 && address_space::live() == live0,
            format_args!("then freed the struct"),
        );
        c.check(
            !B.could_sleep() && !C.could_sleep(),
            format_args!(
                "both callbacks ran where sleeping is not allowed ({}; {})",
                B.context(),
                C.context()
            ),
        );
    }

    // (d) The last mm_users dropped with interrupts off: mmput_async.
    let (s0, w0) = (address_space::stats(), address_space::worker_counts());
    if let Some(mm) = new_mm(c, PAGES) {
        irq::without(|| mm.mmput(Atomic));
        let s = address_space::stats();
        c.check(
            s.teardowns_deferred == s0.teardowns_deferred + 1 && s.teardowns == s0.teardowns,
            format_args!("last mm_users dropped with interrupts off: the teardown was deferred (mmput_async)"),
        );
        address_space::flush_work();
        let (s, w) = (address_space::stats(), address_space::worker_counts());
        c.check(
            w.ran == w0.ran + 1
                && w.ran_in_process_context == w0.ran_in_process_context + 1
                && s.page_table_frees == s0.page_table_frees + 1
                && s.struct_frees == s0.struct_frees + 1
                && address_space::live() == live0,
            format_args!("the worker tore the mappings down, then freed page tables and struct, in process context"),
        );
    }

    // (e) After exit the mappings cannot be had back.
    if let Some(mm) = new_mm(c, PAGES) {
        let sref = mm.get_struct();
        let before = sref.mmget_not_zero();
        let got_before = before.is_some();
        if let Some(u) = before {
            u.mmput(Process);
        }
        mm.mmput(Process);
        let after = sref.mmget_not_zero();
        c.check(
            got_before && after.is_none() && sref.info().users == 0,
            format_args!("mmget_not_zero succeeds before exit and fails after it"),
        );
        if let Some(u) = after {
            u.mmput(Process);
        }
        sref.put(Process);
    }

    c.check(
        address_space::invalid_context_bugs() == bugs0,
        format_args!("no sleeping mm work ran in atomic context"),
    );
    // The check above means something only if the detector fires: claim
    // process context with interrupts off, as a buggy caller would.
    if let Some(mm) = new_mm(c, PAGES) {
        c.info(format_args!(
            "deliberately: the last mmput claims process context with interrupts off"
        ));
        irq::without(|| mm.mmput(Process));
        let bugs = address_space::invalid_context_bugs() - bugs0;
        c.check(
            bugs == 2,
            format_args!("and might_sleep reports exit_mmap and __mmdrop ({bugs} reports)"),
        );
    }

    // (f) Everything given back.
    quiesce_mm();
    c.check(
        super::workload::settle(),
        format_args!("quiet after the run"),
    );
    c.back_to_baseline(
        &baseline,
        address_space::live() == live0,
        format_args!(
            "frame, vmalloc and heap counters back to baseline, no mm left ({} live)",
            address_space::live()
        ),
    );
    c.check(
        address_space::refcount_events() == events0,
        format_args!("no refcount_t event on any mm count"),
    );
    let (s, w) = (address_space::stats(), address_space::worker_counts());
    c.info(format_args!(
        "drops done synchronously: {} teardowns, {} page-table frees, {} struct frees",
        s.teardowns - start.teardowns,
        s.page_table_frees - start.page_table_frees,
        s.struct_frees - start.struct_frees
    ));
    c.info(format_args!(
        "drops deferred: {} teardowns (mmput_async), {} page-table frees (mmdrop_async)",
        s.teardowns_deferred - start.teardowns_deferred,
        s.page_table_frees_deferred - start.page_table_frees_deferred
    ));
    c.info(format_args!(
        "worker '{}' (task {}, last on CPU {}): {} queued, {} run, {} of them in process context",
        address_space::WORKER_NAME,
        w.task,
        w.cpu.map_or(-1, |c| c as i64),
        w.queued - w_start.queued,
        w.ran - w_start.ran,
        w.ran_in_process_context - w_start.ran_in_process_context
    ));
}
