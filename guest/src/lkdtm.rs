//! Crash points, like Linux's LKDTM: the stack scenarios arm one, and the
//! handler it sits in misbehaves on purpose (recursing until its stack
//! overflows). The handlers call in here; disarmed, each hook costs a load.
use crate::arch::x86_64::percpu::MAX_CPUS;
use core::hint::black_box;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Recurse inside the next page-fault handler (`stack.exception`).
pub static PF_RECURSE: AtomicBool = AtomicBool::new(false);
/// Recurse inside the next test-vector IRQ handler (`stack.irq`).
pub static IRQ_RECURSE: AtomicBool = AtomicBool::new(false);
/// Recurse inside the next #DF handler (`stack.df_overflow`).
pub static DF_RECURSE: AtomicBool = AtomicBool::new(false);
/// Raise an NMI on this CPU from inside the next #DF handler
/// (`stack.nmi_in_df`).
pub static NMI_IN_DF: AtomicBool = AtomicBool::new(false);

/// How deep the current recursion on each CPU has gone, for the report,
/// and the stack pointer of the frame that said so: with it the runner
/// finds that frame in its own unwind and checks the depth exactly, not
/// within the frame or two that the innermost, half-built one blurs.
static DEPTH: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static DEPTH_SP: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// The recursion on `cpu` is `depth` calls deep in the frame at `sp`.
pub fn set_depth(cpu: usize, depth: u64, sp: u64) {
    DEPTH[cpu].store(depth, Ordering::Relaxed);
    DEPTH_SP[cpu].store(sp, Ordering::Relaxed);
}

/// No recursion on `cpu`.
pub fn reset_depth(cpu: usize) {
    set_depth(cpu, 0, 0);
}

/// The depth recorded on `cpu`, and the stack pointer of its frame.
pub fn depth(cpu: usize) -> (u64, u64) {
    (
        DEPTH[cpu].load(Ordering::Relaxed),
        DEPTH_SP[cpu].load(Ordering::Relaxed),
    )
}

/// Disarm and report whether `point` was armed.
pub fn fire(point: &AtomicBool) -> bool {
    point.swap(false, Ordering::AcqRel)
}

/// A frame of a few hundred bytes that the optimizer cannot remove, calling
/// itself until the stack runs out. Used by every handler crash point.
#[inline(never)]
#[allow(unconditional_recursion)] // the point: only the guard page ends it
fn handler_recurse(cpu: usize, depth: u64) -> u64 {
    let mut frame = [0u8; 512];
    black_box(&mut frame);
    set_depth(cpu, depth, crate::arch::x86_64::cpu::stack_pointer());
    handler_recurse(cpu, depth + 1) + u64::from(frame[depth as usize % 512])
}

#[inline(never)]
pub fn pf_handler_recurse(cpu: usize) -> u64 {
    // Not a tail call (this frame must stay in the backtrace), and a body
    // of its own, so the three entry points cannot be folded into one
    // address, which would blur which handler the backtrace shows. The
    // `+ 1` alone does not do it: `handler_recurse` never returns, so the
    // compiler drops the addition; the constant made opaque stays.
    black_box(1u8);
    black_box(handler_recurse(cpu, 0)) + 1
}

/// Raise an NMI on this CPU (LAPIC `lapic_id`) and wait, bounded, until it
/// has been taken: the `NMI_IN_DF` crash point, from inside the #DF handler.
pub fn nmi_here(lapic_id: u32) {
    use crate::arch::x86_64::{exceptions, lapic};
    let before = exceptions::NMI_COUNT.load(Ordering::Acquire);
    lapic::send_ipi(lapic_id, lapic::Delivery::Nmi);
    for _ in 0..10_000_000u32 {
        if exceptions::NMI_COUNT.load(Ordering::Acquire) != before {
            break;
        }
        core::hint::spin_loop();
    }
}

/// The test vector's handler (`TEST_VECTOR`, registered with arch): the
/// IRQ crash point, if armed.
pub fn test_vector() {
    if fire(&IRQ_RECURSE) {
        irq_recurse(crate::arch::x86_64::percpu::this().id);
    }
}

#[inline(never)]
pub fn irq_recurse(cpu: usize) -> u64 {
    // Not a tail call (this frame must stay in the backtrace), and a body
    // of its own, so the three entry points cannot be folded into one
    // address, which would blur which handler the backtrace shows. The
    // `+ 2` alone does not do it: `handler_recurse` never returns, so the
    // compiler drops the addition; the constant made opaque stays.
    black_box(2u8);
    black_box(handler_recurse(cpu, 0)) + 2
}

#[inline(never)]
pub fn df_recurse(cpu: usize) -> u64 {
    // Not a tail call (this frame must stay in the backtrace), and a body
    // of its own, so the three entry points cannot be folded into one
    // address, which would blur which handler the backtrace shows. The
    // `+ 3` alone does not do it: `handler_recurse` never returns, so the
    // compiler drops the addition; the constant made opaque stays.
    black_box(3u8);
    black_box(handler_recurse(cpu, 0)) + 3
}
