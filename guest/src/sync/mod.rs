//! Locks for data that interrupt handlers or the scheduler also touch.
//!
//! `IrqLock` is Linux's `spin_lock_irqsave`: interrupts are off while it is
//! held, so the holder can neither be preempted (the tick cannot fire) nor
//! deadlock against an interrupt handler on its own CPU wanting the same lock.
use core::ops::{Deref, DerefMut};
use spin::{Mutex, MutexGuard};

pub struct IrqLock<T> {
    inner: Mutex<T>,
}

pub struct IrqGuard<'a, T> {
    guard: Option<MutexGuard<'a, T>>,
    were_enabled: bool,
}

impl<T> IrqLock<T> {
    pub const fn new(value: T) -> Self {
        IrqLock {
            inner: Mutex::new(value),
        }
    }

    pub fn lock(&self) -> IrqGuard<'_, T> {
        let were_enabled = x86_64::instructions::interrupts::are_enabled();
        x86_64::instructions::interrupts::disable();
        IrqGuard {
            guard: Some(self.inner.lock()),
            were_enabled,
        }
    }

    /// For paths that must not wait (fault reporting): `None` if held.
    pub fn try_lock(&self) -> Option<IrqGuard<'_, T>> {
        let were_enabled = x86_64::instructions::interrupts::are_enabled();
        x86_64::instructions::interrupts::disable();
        match self.inner.try_lock() {
            Some(g) => Some(IrqGuard {
                guard: Some(g),
                were_enabled,
            }),
            None => {
                if were_enabled {
                    x86_64::instructions::interrupts::enable();
                }
                None
            }
        }
    }
}

impl<T> Deref for IrqGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.guard.as_ref().expect("guard present until drop")
    }
}

impl<T> DerefMut for IrqGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.guard.as_mut().expect("guard present until drop")
    }
}

impl<T> Drop for IrqGuard<'_, T> {
    fn drop(&mut self) {
        // Release the lock before interrupts can come back.
        self.guard.take();
        if self.were_enabled {
            x86_64::instructions::interrupts::enable();
        }
    }
}
