//! What arch needs of a kernel stack, as a promise the memory layer makes.
//!
//! The CPU writes to a stack behind the compiler's back (an exception frame
//! on an IST stack, a new task's first frame), so arch may use a stack only
//! where someone vouches for it: the memory layer, which allocated it with
//! its guard pages, implements this trait for its stack type.

use x86_64::VirtAddr;

/// A stack arch may write to.
///
/// # Safety
/// `[bottom(), top())` is mapped and writable, `top()` is 16-byte aligned
/// and at least 64 bytes above `bottom()`, both stay the same for the value's
/// life, and the memory is used by nothing but the code running on this
/// stack while the value lives (for a `&'static` one: for good).
pub unsafe trait KernelStack {
    fn bottom(&self) -> VirtAddr;
    fn top(&self) -> VirtAddr;
}
