//! Walking the frame-pointer chain of a faulted context.
//!
//! The guest is built with frame pointers, so each frame holds the caller's
//! rbp at [rbp] and the return address at [rbp + 8]. Every read goes
//! through `probe::read_u64`: a chain that leaves mapped memory ends the
//! trace instead of faulting inside the fault handler.
//!
//! A handler called from the exception entry returns to `trap_return`, and
//! right above that return address lies the `TrapFrame` of the code the
//! exception interrupted. Like Linux's unwinder at an entry frame, the walk
//! crosses it: it records the interrupted RIP (marked with the vector: it
//! is not a return address) and goes on from the interrupted rbp, so the
//! function that took the exception is not silently left out. The same
//! holds for `irq_common`'s exit path, where a device interrupt preempts:
//! its call of the preemption point returns right below the frame too.
//! (Without that crossing, the walk went from the preemption straight to
//! the interrupted function's caller, and the interrupted function was
//! missing from the trace: a flake of `stack.rcu_callback` whenever the
//! tick, not a yield, ran the callback.)
use crate::arch::x86_64::probe;
use crate::arch::x86_64::trap::{
    half_built, irq_exit_return_address, trap_return_address, TrapFrame,
};
use core::mem::{offset_of, size_of};

pub const MAX_FRAMES: usize = abi::guard::MAX_FRAMES;

/// One frame: a return address, or the address an exception interrupted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Frame {
    pub addr: u64,
    /// `Some(vector)`: `addr` is the interrupted instruction.
    pub trap: Option<u8>,
    /// The bytes of the frame of the function `addr` returns into: the
    /// saved rbp at its callee's frame record minus that record's address
    /// (`abi::guard::Frame::size`). `None` for a trap crossing's two
    /// frames and for the outermost frame, whose ends the chain does not show.
    pub size: Option<u32>,
}

pub struct Backtrace {
    frames: [Frame; MAX_FRAMES],
    len: usize,
    /// More frames existed than were kept.
    pub truncated: bool,
}

impl Backtrace {
    pub fn frames(&self) -> &[Frame] {
        &self.frames[..self.len]
    }

    /// Keep `f`; false (and `truncated`) if there is no room.
    fn push(&mut self, f: Frame) -> bool {
        if self.len == MAX_FRAMES {
            self.truncated = true;
            return false;
        }
        self.frames[self.len] = f;
        self.len += 1;
        true
    }
}

/// The interrupted rip, rbp and vector of the trap frame at `at`.
fn trap_frame(at: u64) -> Option<(u64, u64, u8)> {
    let rip = probe::read_u64(at + offset_of!(TrapFrame, rip) as u64)?;
    let rbp = probe::read_u64(at + offset_of!(TrapFrame, rbp) as u64)?;
    let vector = probe::read_u64(at + offset_of!(TrapFrame, vector) as u64)?;
    Some((rip, rbp, vector as u8))
}

/// The trace of a faulted context: the frame-pointer walk from its rbp,
/// keeping to `[lo, hi)`. A fault in a device interrupt's entry code,
/// before the frame was complete, first names the instruction that
/// interrupt interrupted (`trap::half_built`): rbp is still that code's,
/// but its own rip would otherwise be left out.
pub fn walk_fault(frame: &TrapFrame, lo: u64, hi: u64) -> Backtrace {
    let mut bt = Backtrace {
        frames: [Frame::default(); MAX_FRAMES],
        len: 0,
        truncated: false,
    };
    if let Some(h) = half_built(frame) {
        bt.push(Frame {
            addr: h.rip,
            trap: Some(h.vector.unwrap_or(0)),
            size: None,
        });
    }
    walk_into(bt, frame.rbp, lo, hi)
}

/// Collect the frames starting from `rbp`, keeping to `[lo, hi)` (the
/// stack the chain should live on) and to strictly rising frames.
fn walk_into(mut bt: Backtrace, rbp: u64, lo: u64, hi: u64) -> Backtrace {
    // A deliberate defect (`runner --defect`): the walk starts one frame
    // up, as a walker written to skip its own frame would, and so loses the
    // innermost frame of the faulted context.
    #[cfg(defect = "trace-skip-innermost")]
    let rbp = probe::read_u64(rbp).unwrap_or(0);
    let mut rbp = rbp;
    let trap_return = trap_return_address();
    // A deliberate defect (`runner --defect irq-exit-not-crossed`): only
    // the exception entry's frame is crossed, as before the preemption
    // point's was.
    #[cfg(not(defect = "irq-exit-not-crossed"))]
    let irq_exit_return = irq_exit_return_address();
    #[cfg(defect = "irq-exit-not-crossed")]
    let irq_exit_return = trap_return;
    while rbp >= lo && rbp.saturating_add(16) <= hi {
        let (Some(mut next), Some(ret)) = (probe::read_u64(rbp), probe::read_u64(rbp + 8)) else {
            break;
        };
        let frame_at = rbp + 16;
        let crosses = ret == trap_return || ret == irq_exit_return;
        // The caller's frame spans from this record's end to its own
        // record's: the saved rbp is that record. Across a trap frame, or
        // where the chain ends, nothing says where the caller's frame ends.
        let size = (!crosses && next > rbp)
            .then(|| u32::try_from(next - rbp).ok())
            .flatten();
        // A deliberate defect (`runner --defect frame-size-misreported`):
        // the innermost frame's size counts its return address twice.
        #[cfg(defect = "frame-size-misreported")]
        let size = size.map(|s| if bt.len == 0 { s + 8 } else { s });
        if ret == 0
            || !bt.push(Frame {
                addr: ret,
                trap: None,
                size,
            })
        {
            break;
        }
        if crosses && frame_at + size_of::<TrapFrame>() as u64 <= hi {
            let Some((rip, interrupted_rbp, vector)) = trap_frame(frame_at) else {
                break;
            };
            if !bt.push(Frame {
                addr: rip,
                trap: Some(vector),
                size: None,
            }) {
                break;
            }
            next = interrupted_rbp;
        }
        // The chain must run up the stack; anything else is a corrupt or
        // looping chain. (A deliberate defect writes the test the wrong way
        // round, so the walk stops after the first frame.)
        #[cfg(not(defect = "trace-first-only"))]
        let ends = next <= rbp;
        #[cfg(defect = "trace-first-only")]
        let ends = next >= rbp;
        if ends {
            break;
        }
        rbp = next;
    }
    bt
}
