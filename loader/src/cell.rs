//! Static storage the single-threaded loader fills in place. Responses must
//! live inside the loader image (it is reported as bootloader-reclaimable), so
//! they are statics rather than allocations.
use core::cell::UnsafeCell;

pub struct Static<T>(UnsafeCell<T>);

// SAFETY: only the BSP touches these before handoff; APs only read the
// `limine_mp_info` words they are given, and the guest owns them afterwards.
unsafe impl<T> Sync for Static<T> {}

impl<T> Static<T> {
    pub const fn new(value: T) -> Self {
        Self(UnsafeCell::new(value))
    }

    pub fn get(&self) -> *mut T {
        self.0.get()
    }
}
