//! Walking the frame-pointer chain of a faulted context.
//!
//! The guest is built with frame pointers, so each frame holds the caller's
//! rbp at [rbp] and the return address at [rbp + 8]. Every read goes
//! through `probe::read_u64`: a chain that leaves mapped memory ends the
//! trace instead of faulting inside the fault handler.
use crate::arch::x86_64::probe;

pub const MAX_FRAMES: usize = 64;

pub struct Backtrace {
    pub frames: [u64; MAX_FRAMES],
    pub len: usize,
    /// More frames existed than were kept.
    pub truncated: bool,
}

impl Backtrace {
    pub fn addrs(&self) -> &[u64] {
        &self.frames[..self.len]
    }
}

/// Collect return addresses starting from `rbp`, keeping to `[lo, hi)`
/// (the stack the chain should live on) and to strictly rising frames.
pub fn walk(mut rbp: u64, lo: u64, hi: u64) -> Backtrace {
    let mut bt = Backtrace {
        frames: [0; MAX_FRAMES],
        len: 0,
        truncated: false,
    };
    while rbp >= lo && rbp.saturating_add(16) <= hi {
        let (Some(next), Some(ret)) = (probe::read_u64(rbp), probe::read_u64(rbp + 8)) else {
            break;
        };
        if ret == 0 {
            break;
        }
        if bt.len == MAX_FRAMES {
            bt.truncated = true;
            break;
        }
        bt.frames[bt.len] = ret;
        bt.len += 1;
        if next <= rbp {
            break;
        }
        rbp = next;
    }
    bt
}
