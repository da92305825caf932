//! `stack.*`: overflow the kernel's stacks in every way a kernel can, and
//! check that each guard-page hit is caught and explained.
//!
//! Every scenario first announces the stack it is about to overflow
//! (`STACK-ALLOC`), so the runner can hold the fault report against ground
//! truth; the guest checks what it can see itself (the task was killed with
//! the right status, the report counted a hit of the right kind).
use super::Checks;
use crate::arch::x86_64::exceptions;
use crate::arch::x86_64::interrupts::{self, TEST_VECTOR};
use crate::arch::x86_64::percpu::{self, IST_DOUBLE_FAULT, IST_NMI, MAX_CPUS};
use crate::arch::x86_64::{cpu, probe, sabotage, time};
use crate::boot::BootInfo;
use crate::lkdtm;
use crate::mm::stack::{self, StackKind, Strategy, EXCEPTION_STACK, IRQ_STACK};
use crate::oops::{self, HitKind};
use crate::sync::preempt;
use crate::task::{self, ExitStatus};
use alloc::vec::Vec;
use core::hint::black_box;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

pub(super) const KILLED: ExitStatus = ExitStatus::Killed("stack overflow");

/// rsp at recursion depths 0 and 1, per CPU: the frame size, measured.
static RSP_AT: [[AtomicU64; 2]; MAX_CPUS] = [const { [const { AtomicU64::new(0) }; 2] }; MAX_CPUS];

/// Unbounded recursion with a frame the optimizer cannot shrink: the
/// function the backtrace of a recursion overflow must show.
#[inline(never)]
pub(super) fn stack_recurse(depth: u64, limit: u64) -> u64 {
    let mut frame = [0xa5u8; 256];
    black_box(&mut frame);
    let cpu = percpu::this().id;
    let sp = cpu::stack_pointer();
    if depth < 2 {
        RSP_AT[cpu][depth as usize].store(sp, Ordering::Relaxed);
    }
    // A deliberate defect (`runner --defect depth-off-by-one`): the depth
    // of the call about to be made, recorded before that call has a frame.
    #[cfg(defect = "depth-off-by-one")]
    let told = depth + 1;
    #[cfg(not(defect = "depth-off-by-one"))]
    let told = depth;
    lkdtm::set_depth(cpu, told, sp);
    if depth >= limit {
        return 0;
    }
    stack_recurse(depth + 1, limit) + u64::from(frame[depth as usize % 256])
}

/// The size of one `stack_recurse` frame, measured with a two-level run.
pub(super) fn recursion_frame_bytes() -> u64 {
    stack_recurse(0, 1);
    let cpu = percpu::this().id;
    RSP_AT[cpu][0].load(Ordering::Relaxed) - RSP_AT[cpu][1].load(Ordering::Relaxed)
}

/// Announce the running task's own stack.
pub(super) fn announce_own_stack(frame_bytes: u64) {
    let (lo, hi) = task::current().stack_bounds();
    oops::announce_stack(
        StackKind::Task,
        lo.as_u64(),
        hi.as_u64(),
        stack::guard_pages(),
        frame_bytes,
    );
}

/// The body of every recursion task: announce, then recurse until the
/// guard page stops it.
pub(super) fn recurse_to_death() -> u64 {
    let fb = recursion_frame_bytes();
    announce_own_stack(fb);
    stack_recurse(0, u64::MAX)
}

/// Run `body` as a task on `cpu` and check it was killed by a guard hit
/// of kind `want`.
pub(super) fn expect_killed(
    c: &mut Checks,
    cpu: usize,
    name: &str,
    want: HitKind,
    body: fn() -> u64,
) -> bool {
    let hits = oops::hits();
    let status = match task::spawn_on(cpu, name, body) {
        Ok(h) => h.join(),
        Err(e) => {
            c.check(false, format_args!("spawn {name}: {e:?}"));
            return false;
        }
    };
    let a = c.check(status == KILLED, format_args!("task {name}: {status}"));
    let b = c.check(
        oops::hits() > hits,
        format_args!("the fault was reported ({} reports)", oops::hits() - hits),
    );
    let kind = oops::last_kind(cpu);
    let d = c.check(
        kind == Some(want),
        format_args!("reported as {kind:?} (expected {want:?})"),
    );
    a && b && d
}

pub fn recursion(_: &BootInfo, c: &mut Checks) {
    expect_killed(
        c,
        percpu::this().id,
        "recurse",
        HitKind::Overflow,
        recurse_to_death,
    );
}

/// One frame far bigger than the guard gap; the compiler's inline stack
/// probes touch each page on the way down, so the guard page is hit first.
#[inline(never)]
fn stack_large_frame(i: usize) -> u8 {
    let mut big = [0u8; 64 * 1024];
    black_box(&mut big);
    big[i % big.len()]
}

pub fn large_frame(_: &BootInfo, c: &mut Checks) {
    expect_killed(
        c,
        percpu::this().id,
        "large-frame",
        HitKind::Overflow,
        || {
            announce_own_stack(0);
            u64::from(stack_large_frame(7))
        },
    );
}

pub fn probe_skip(_: &BootInfo, c: &mut Checks) {
    expect_killed(
        c,
        percpu::this().id,
        "probe-skip",
        HitKind::NotGuard,
        || {
            announce_own_stack(0);
            let (lo, _) = task::current().stack_bounds();
            // What a frame bigger than the guard does without probes: rsp lands
            // beyond the guard page in one step and the first push lands there.
            // One page past our guard is the neighbour's guard (or a hole):
            // unmapped, so the jump is caught there rather than scribbling on a
            // live stack.
            let beyond = lo.as_u64() - stack::guard_pages() as u64 * 4096 - 1024;
            sabotage::push_at(super::license(), beyond)
        },
    );
}

pub fn underflow(_: &BootInfo, c: &mut Checks) {
    expect_killed(
        c,
        percpu::this().id,
        "underflow",
        HitKind::Underflow,
        || {
            announce_own_stack(0);
            let (_, hi) = task::current().stack_bounds();
            sabotage::push_at(super::license(), hi.as_u64() + 64)
        },
    );
}

pub fn exception(_: &BootInfo, c: &mut Checks) {
    expect_killed(
        c,
        percpu::this().id,
        "pf-recurse",
        HitKind::Overflow,
        || {
            announce_own_stack(0);
            lkdtm::PF_RECURSE.store(true, Ordering::Release);
            // The null page is never mapped: this faults, and the armed
            // page-fault handler recurses on this task's stack.
            u64::from(sabotage::touch(0x10))
        },
    );
}

pub fn irqs_off(_: &BootInfo, c: &mut Checks) {
    expect_killed(c, percpu::this().id, "irqs-off", HitKind::Overflow, || {
        interrupts::disable();
        recurse_to_death()
    });
    c.check(
        x86_64::instructions::interrupts::are_enabled(),
        format_args!("interrupts are back on for the joiner"),
    );
}

pub fn ap(_: &BootInfo, c: &mut Checks) {
    if percpu::online() < 2 {
        c.skip("needs at least 2 CPUs");
        return;
    }
    static STOP: AtomicBool = AtomicBool::new(false);
    static WORK: AtomicU64 = AtomicU64::new(0);
    STOP.store(false, Ordering::Release);
    WORK.store(0, Ordering::Release);
    let worker = task::spawn_on(0, "cpu0-worker", || {
        while !STOP.load(Ordering::Acquire) {
            WORK.fetch_add(1, Ordering::Relaxed);
            task::yield_now();
        }
        0
    });
    let before = WORK.load(Ordering::Acquire);
    expect_killed(c, 1, "recurse-ap", HitKind::Overflow, recurse_to_death);
    let t0 = time::now_ns();
    while time::now_ns() - t0 < 20_000_000 {
        task::yield_now();
    }
    let after = WORK.load(Ordering::Acquire);
    STOP.store(true, Ordering::Release);
    if let Ok(w) = worker {
        w.join();
    }
    c.check(
        after > before,
        format_args!("CPU 0 kept working: {} iterations", after - before),
    );
}

pub fn all_cpus(_: &BootInfo, c: &mut Checks) {
    static ARRIVED: AtomicUsize = AtomicUsize::new(0);
    let n = percpu::online();
    ARRIVED.store(0, Ordering::Release);
    let hits = oops::hits();
    let handles: Vec<_> = (0..n)
        .filter_map(|cpu| {
            task::spawn_on(cpu, "recurse-all", || {
                let fb = recursion_frame_bytes();
                announce_own_stack(fb);
                // Overflow together: wait for every CPU's task first.
                ARRIVED.fetch_add(1, Ordering::AcqRel);
                while ARRIVED.load(Ordering::Acquire) < percpu::online() {
                    core::hint::spin_loop();
                }
                stack_recurse(0, u64::MAX)
            })
            .ok()
        })
        .collect();
    c.check(
        handles.len() == n,
        format_args!("{n} overflowing tasks, one per CPU"),
    );
    let killed = handles
        .into_iter()
        .map(|h| h.join())
        .filter(|s| *s == KILLED)
        .count();
    c.check(
        killed == n,
        format_args!("{killed} of {n} killed by a guard hit"),
    );
    c.check(
        oops::hits() - hits == n as u64,
        format_args!("{} reports for {n} overflows", oops::hits() - hits),
    );
    for cpu in 0..n {
        c.check(
            oops::last_kind(cpu) == Some(HitKind::Overflow),
            format_args!("CPU {cpu} reported an overflow"),
        );
    }
}

pub fn repeat(_: &BootInfo, c: &mut Checks) {
    let n = super::workload::scaled(1000);
    super::workload::note(c, 1000, n);
    // A few overflows first, quietly: buffers that grow to a steady size on
    // the kill path (run queues, RCU callback lists) are not leaks, and run
    // alone this scenario would otherwise see them grow inside its window.
    oops::set_quiet(true);
    for _ in 0..8 {
        if let Ok(h) = task::spawn("recurse-warm", recurse_to_death) {
            h.join();
        }
    }
    oops::set_quiet(false);
    super::workload::settle();
    let before = super::counters_now();
    let hits = oops::hits();
    let cut_short = crate::oops::IRQS_CUT_SHORT.load(Ordering::Acquire);
    let deferred = task::PREEMPT_DEFERRED.load(Ordering::Relaxed);
    let mut killed = 0;
    for i in 0..n {
        // One full report is enough to read; the rest are counted.
        if i == 1 {
            oops::set_quiet(true);
        }
        if let Ok(h) = task::spawn("recurse-rep", recurse_to_death) {
            killed += u64::from(h.join() == KILLED);
        }
    }
    let suppressed = oops::set_quiet(false);
    c.info(format_args!("guard hits suppressed: {suppressed}"));
    // A tick that lands as the stack runs out faults in its own delivery
    // (`stack.irq_frame` provokes it on purpose); here it is luck.
    c.info(format_args!(
        "interrupts that arrived with no room for their frame: {}",
        crate::oops::IRQS_CUT_SHORT.load(Ordering::Acquire) - cut_short
    ));
    // And one that lands with a little room left does not switch there.
    c.info(format_args!(
        "preemptions put off for want of stack: {}",
        task::PREEMPT_DEFERRED.load(Ordering::Relaxed) - deferred
    ));
    c.check(
        killed == n,
        format_args!("{killed} of {n} overflows killed their task"),
    );
    c.check(
        oops::hits() - hits == n,
        format_args!("{} of {n} overflows caught", oops::hits() - hits),
    );
    c.check(
        super::workload::settle(),
        format_args!("every killed task reaped"),
    );
    c.back_to_baseline(
        &before,
        true,
        format_args!("frame, vmalloc and heap counters back to baseline"),
    );
}

/// An interrupt arrives when the stack has no room for its frame. The
/// CPU's push faults into the guard; that fault cannot be delivered on the
/// same stack either, so it becomes a #DF. The interrupt was already in
/// service at the LAPIC when its delivery failed: unless the kill path
/// ends it, the tick never comes again on this CPU.
pub fn irq_frame(_: &BootInfo, c: &mut Checks) {
    let cpu = percpu::this().id;
    let cut_short = crate::oops::IRQS_CUT_SHORT.load(Ordering::Acquire);
    expect_killed(c, cpu, "irq-frame", HitKind::Overflow, || {
        // An interrupt frame is 5 words; it is the CPU's push, not ours.
        announce_own_stack(40);
        let (lo, _) = task::current().stack_bounds();
        sabotage::wait_for_irq_at(super::license(), lo.as_u64())
    });
    let ended = crate::oops::IRQS_CUT_SHORT.load(Ordering::Acquire) - cut_short;
    c.check(
        ended >= 1,
        format_args!("{ended} interrupt(s) cut short by the fault, ended at the kill"),
    );
    check_tick(c, cpu);
}

/// An interrupt arrives with room on the stack for the CPU's frame and the
/// stub's two words, but not for the registers the entry code saves: the
/// fault is on a push in `irq_common`, with IF cleared by the gate. The
/// task is killed as for any overflow (its interrupts were on: the
/// interrupt came in), the interrupt is ended, and the entry code's
/// call-frame information lets the runner unwind through the half-built
/// frame into the task.
pub fn irq_entry(_: &BootInfo, c: &mut Checks) {
    let cpu = percpu::this().id;
    let cut_short = crate::oops::IRQS_CUT_SHORT.load(Ordering::Acquire);
    expect_killed(c, cpu, "irq-entry", HitKind::Overflow, || {
        // The CPU's 5 words, the stub's error code and vector, `push rax`:
        // `push rbx` is the one that faults.
        const ROOM: u64 = (5 + 2 + 1) * 8;
        announce_own_stack(ROOM);
        let (lo, _) = task::current().stack_bounds();
        sabotage::wait_for_irq_at(super::license(), lo.as_u64() + ROOM)
    });
    // Under TCG the interrupt is in service at the LAPIC when the kill
    // path runs; nested KVM here (PVM) delivers it so that it is not, and
    // the count is 0. Either way the witness is the tick: an interrupt
    // left in service would block it on this CPU for good.
    let ended = crate::oops::IRQS_CUT_SHORT.load(Ordering::Acquire) - cut_short;
    c.info(format_args!(
        "{ended} interrupt(s) in service at the kill, ended there"
    ));
    check_tick(c, cpu);
}

/// An interrupt arrives with room for its whole frame (the CPU's 5 words,
/// the stub's 2, the 15 registers `irq_common` saves) and no more: its
/// handler runs on the IRQ stack, and back on the task's stack the entry
/// code's call of `irq_exit_entry` cannot push its return address. The
/// fault is in entry code with IF cleared by the gate, past the register
/// saves; the report must still read the task's own state (interrupts on)
/// from the complete frame, or the kill would "reset" interrupts the task
/// never disabled. Seen under KVM in `stack.all_cpus`, where interrupts
/// land inside the recursion; here it is provoked.
pub fn irq_exit(_: &BootInfo, c: &mut Checks) {
    let cpu = percpu::this().id;
    expect_killed(c, cpu, "irq-exit", HitKind::Overflow, || {
        const ROOM: u64 = (5 + 2 + 15) * 8;
        announce_own_stack(ROOM);
        let (lo, _) = task::current().stack_bounds();
        sabotage::wait_for_irq_at(super::license(), lo.as_u64() + ROOM)
    });
    check_tick(c, cpu);
}

/// Milliseconds until this CPU has taken two timer ticks, preemption off
/// so they are all one CPU's; `TICKS_NEVER` if they do not come within
/// 10 s. A tick blocked for good (an interrupt left in service, the EOI
/// forgotten) never comes; a vCPU the host starves takes them late (one
/// tick in 40 ms was seen under nested KVM beside two CPU hogs), so the
/// check waits for the ticks rather than counting them over a fixed span.
pub(super) fn two_ticks_ms() -> u64 {
    let pinned = preempt::disable();
    let cpu = pinned.cpu();
    let before = cpu.ticks();
    let start = time::now_ns();
    while cpu.ticks() - before < 2 {
        if time::now_ns() - start > 10_000_000_000 {
            return TICKS_NEVER;
        }
        core::hint::spin_loop();
    }
    (time::now_ns() - start) / 1_000_000
}

pub(super) const TICKS_NEVER: u64 = u64::MAX;

/// The check that the tick still runs on `cpu` after a kill there.
pub(super) fn check_tick(c: &mut Checks, cpu: usize) {
    let _ = match task::spawn_on(cpu, "tick-watch", two_ticks_ms).map(|h| h.join()) {
        Ok(ExitStatus::Exited(ms)) if ms != TICKS_NEVER => c.check(
            true,
            format_args!("the tick still runs on CPU {cpu}: two ticks in {ms} ms"),
        ),
        other => c.check(
            false,
            format_args!("the tick still runs on CPU {cpu}: no two ticks in 10 s ({other:?})"),
        ),
    };
}

pub fn nmi_in_df(_: &BootInfo, c: &mut Checks) {
    let cpu = percpu::this();
    let nmis = exceptions::NMI_COUNT.load(Ordering::Acquire);
    lkdtm::NMI_IN_DF.store(true, Ordering::Release);
    expect_killed(
        c,
        cpu.id,
        "recurse-nmi",
        HitKind::Overflow,
        recurse_to_death,
    );
    lkdtm::NMI_IN_DF.store(false, Ordering::Release);
    let got = exceptions::NMI_COUNT.load(Ordering::Acquire) - nmis;
    c.check(
        got >= 1,
        format_args!("{got} NMI taken while the #DF handler ran"),
    );
    let top = cpu.ist_top(IST_NMI).as_u64();
    let at = exceptions::last_nmi_frame(cpu.id);
    c.check(
        at < top && at >= top - EXCEPTION_STACK as u64,
        format_args!(
            "the NMI ran on the NMI IST stack (frame at {at:#x}, stack {:#x}..{top:#x})",
            top - EXCEPTION_STACK as u64
        ),
    );
}

/// Recurse until the next frame would reach below `lo`, then spill what
/// that frame would have written down to `lo`: the overflow a stack with no
/// guard page silently absorbs, stopped before it leaves the stack.
#[inline(never)]
fn recurse_to_bottom(lo: u64, frame_bytes: u64) -> u64 {
    let mut frame = [0xa5u8; 256];
    black_box(&mut frame);
    let rsp = cpu::stack_pointer();
    if rsp - 2 * frame_bytes < lo {
        let mut a = lo;
        while a + 128 < rsp {
            probe::write_u8(super::license(), a, 0xa5);
            a += 1;
        }
        return 0;
    }
    recurse_to_bottom(lo, frame_bytes) + u64::from(frame[(rsp % 256) as usize])
}

pub fn direct_legacy(_: &BootInfo, c: &mut Checks) {
    let original = stack::strategy();
    stack::set_strategy(Strategy::Direct);
    static FOUND: AtomicU64 = AtomicU64::new(0);
    let hits = oops::hits();
    let h = task::spawn_on(percpu::this().id, "legacy", || {
        let me = task::current();
        let (lo, hi) = me.stack_bounds();
        oops::announce_stack(StackKind::Task, lo.as_u64(), hi.as_u64(), 0, 0);
        let fb = recursion_frame_bytes();
        recurse_to_bottom(lo.as_u64(), fb);
        // Found afterwards, by looking: no fault was raised.
        let info = me.with_stack(|s| s.legacy()).flatten();
        let flags = info.map_or(0, |i| i.flags);
        FOUND.store(flags, Ordering::Release);
        if flags != 0 {
            oops::report_corruption(
                "thread_info flags",
                0,
                flags,
                lo.as_u64(),
                hi.as_u64(),
                me.id,
            );
        }
        0
    });
    stack::set_strategy(original);
    match h {
        Ok(h) => {
            let st = h.join();
            c.check(
                st == ExitStatus::Exited(0),
                format_args!("the task survived its overflow: {st}"),
            );
        }
        Err(e) => {
            c.check(false, format_args!("spawn: {e:?}"));
            return;
        }
    }
    let flags = FOUND.load(Ordering::Acquire);
    c.check(
        flags != 0,
        format_args!("thread_info flags silently corrupted to {flags:#x}"),
    );
    c.check(
        oops::hits() == hits,
        format_args!("no hardware fault was raised (not caught)"),
    );
}

pub fn irq(_: &BootInfo, c: &mut Checks) {
    let cpu = percpu::this();
    let top = cpu.irq_stack_top().as_u64();
    oops::announce_stack(
        StackKind::Irq,
        top - IRQ_STACK as u64,
        top,
        stack::guard_pages(),
        0,
    );
    c.info(format_args!(
        "raising a self-IPI whose handler recurses on the IRQ stack"
    ));
    lkdtm::IRQ_RECURSE.store(true, Ordering::Release);
    interrupts::raise_self(TEST_VECTOR);
    // Not reached: an IRQ-stack overflow stops the machine.
    let t0 = time::now_ns();
    while time::now_ns() - t0 < 100_000_000 {
        core::hint::spin_loop();
    }
    c.check(false, format_args!("the IRQ-stack overflow was not caught"));
}

pub fn df_overflow(_: &BootInfo, c: &mut Checks) {
    let cpu = percpu::this();
    let top = cpu.ist_top(IST_DOUBLE_FAULT).as_u64();
    oops::announce_stack(
        StackKind::DoubleFault,
        top - EXCEPTION_STACK as u64,
        top,
        stack::guard_pages(),
        0,
    );
    c.info(format_args!(
        "overflowing a task so the armed #DF handler recurses on its IST stack"
    ));
    lkdtm::DF_RECURSE.store(true, Ordering::Release);
    let st = task::spawn("recurse-df", || stack_recurse(0, u64::MAX)).map(|h| h.join());
    c.check(
        false,
        format_args!("the machine survived a #DF stack overflow: {st:?}"),
    );
}
