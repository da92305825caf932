//! `stack.near_miss`, `stack.half_used`: a task goes deep into its stack,
//! comes back and exits by itself, and the exit tells how deep it went
//! (`task::usage`): past the near-miss threshold the first time, halfway
//! the second, so that "no near miss" is said of a task that did use its
//! stack, not of one that never went anywhere.
//!
//! Each task announces its own stack first (`STACK-ALLOC`, with the
//! measured frame size), the ground truth the runner holds the `NEAR-MISS`
//! and `STACK-USAGE` records against. The depth is worked out on the task
//! itself from its stack pointer and the frame size, so the share holds for
//! any `--stack-size`.
use super::Checks;
use crate::arch::x86_64::cpu;
use crate::boot::BootInfo;
use crate::mm::stack::{self, StackKind};
use crate::sync::irq;
use crate::{oops, task};
use core::hint::black_box;
use core::sync::atomic::{AtomicU64, Ordering};

/// rsp at recursion depths 0 and 1: the frame size, measured.
static RSP_AT: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];

/// The recursion the near miss must be blamed on: a function of its own,
/// so the runner can tell its frames from `stack_recurse`'s.
#[inline(never)]
fn near_miss_recurse(depth: u64, limit: u64) -> u64 {
    let mut frame = [0xa5u8; 128];
    black_box(&mut frame);
    if depth < 2 {
        RSP_AT[depth as usize].store(cpu::stack_pointer(), Ordering::Relaxed);
    }
    if depth >= limit {
        return 0;
    }
    near_miss_recurse(depth + 1, limit) + u64::from(frame[depth as usize % 128])
}

/// The bytes one `near_miss_recurse` frame takes, from a two-level run.
fn frame_bytes() -> u64 {
    near_miss_recurse(0, 1);
    RSP_AT[0].load(Ordering::Relaxed) - RSP_AT[1].load(Ordering::Relaxed)
}

/// On the task: announce the stack, then recurse until about `percent` %
/// of it has been used, and return the depth reached.
fn go_deep(percent: u64) -> u64 {
    let fb = frame_bytes();
    let (lo, hi) = task::current().stack_bounds();
    let (lo, hi) = (lo.as_u64(), hi.as_u64());
    oops::announce_stack(StackKind::Task, lo, hi, stack::guard_pages(), fb);
    let target = (hi - lo) * percent / 100;
    // Interrupts off: an interrupt arriving at the deepest point would
    // push its frame below the recursion's, and the deepest chain would
    // begin in the entry code, not in the function the scenario is about.
    irq::without(|| {
        // Frames 0..=depth below this point, the nearest whole number of
        // them to the target.
        let here = hi - cpu::stack_pointer();
        let depth = (target.saturating_sub(here) + fb / 2) / fb.max(1);
        let depth = depth.saturating_sub(1);
        black_box(near_miss_recurse(0, depth));
        depth
    })
}

/// Run `body` as a task named `name` and check it exited by itself.
fn expect_exit(c: &mut Checks, name: &str, percent: u64, body: fn() -> u64) {
    let status = match task::spawn(name, body) {
        Ok(h) => h.join(),
        Err(e) => {
            c.check(false, format_args!("spawn {name}: {e:?}"));
            return;
        }
    };
    let depth = match status {
        task::ExitStatus::Exited(d) => Some(d),
        task::ExitStatus::Killed(_) => None,
    };
    c.check(
        depth.is_some(),
        format_args!("task {name} went to ~{percent} % of its stack and came back: {status}"),
    );
    if let Some(d) = depth {
        c.info(format_args!("{} frames of near_miss_recurse", d + 1));
    }
}

pub fn near_miss(_: &BootInfo, c: &mut Checks) {
    expect_exit(c, "near-miss", 95, || go_deep(95));
}

pub fn half_used(_: &BootInfo, c: &mut Checks) {
    expect_exit(c, "half-used", 50, || go_deep(50));
}
