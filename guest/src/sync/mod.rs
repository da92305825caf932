//! Locks and atomic sections, each recorded on the running task's held-lock
//! stack (`lockdep`), so that a fault report can say what the task held and
//! the kill path can refuse to kill a task that holds something the rest
//! of the kernel needs.
//!
//! - `IrqLock` is Linux's `spin_lock_irqsave`: interrupts are off while it is
//!   held, so the holder can neither be preempted (the tick cannot fire) nor
//!   deadlock against an interrupt handler on its own CPU wanting the same
//!   lock.
//! - `SpinLock` is a plain spin lock (interrupts untouched), for data no
//!   interrupt handler takes.
//! - `preempt` has the preemption-off guard; interrupts-off sections are
//!   `irq::without`, RCU read-side sections
//!   `rcu::read_lock`: all recorded the same way.
//!
//! Every acquisition records its call site (`#[track_caller]`), and every
//! lock its name (`named`), or else the file that defines it
//! (`Location::caller()` of the `const fn new`, the way lockdep names a
//! lock class by where it was initialised).
pub mod irq;
pub mod lockdep;
pub mod preempt;

use core::ops::{Deref, DerefMut};
use core::panic::Location;
use kcore::lockdep::HeldKind;
use spin::{Mutex, MutexGuard};

pub use lockdep::TaskHeld;

/// A lock's name, for the held-lock report.
#[derive(Clone, Copy)]
struct Class {
    name: &'static str,
}

impl Class {
    #[track_caller]
    const fn here() -> Class {
        Class {
            name: Location::caller().file(),
        }
    }
}

pub struct IrqLock<T> {
    inner: Mutex<T>,
    class: Class,
}

pub struct IrqGuard<'a, T> {
    guard: Option<MutexGuard<'a, T>>,
    were_enabled: bool,
    token: lockdep::Token,
    id: usize,
}

impl<T> IrqLock<T> {
    #[track_caller]
    pub const fn new(value: T) -> Self {
        IrqLock {
            inner: Mutex::new(value),
            class: Class::here(),
        }
    }

    /// The name the held-lock report gives this lock.
    pub const fn named(mut self, name: &'static str) -> Self {
        self.class.name = name;
        self
    }

    fn id(&self) -> usize {
        self as *const Self as usize
    }

    #[track_caller]
    pub fn lock(&self) -> IrqGuard<'_, T> {
        let site = Location::caller();
        let were_enabled = x86_64::instructions::interrupts::are_enabled();
        x86_64::instructions::interrupts::disable();
        let guard = self.inner.lock();
        IrqGuard {
            guard: Some(guard),
            were_enabled,
            token: self.record(site),
            id: self.id(),
        }
    }

    /// For paths that must not wait (fault reporting): `None` if held.
    #[track_caller]
    pub fn try_lock(&self) -> Option<IrqGuard<'_, T>> {
        let site = Location::caller();
        let were_enabled = x86_64::instructions::interrupts::are_enabled();
        x86_64::instructions::interrupts::disable();
        match self.inner.try_lock() {
            Some(g) => Some(IrqGuard {
                guard: Some(g),
                were_enabled,
                token: self.record(site),
                id: self.id(),
            }),
            None => {
                if were_enabled {
                    x86_64::instructions::interrupts::enable();
                }
                None
            }
        }
    }

    /// Interrupts are off here: the record cannot be interleaved with an
    /// interrupt handler's own.
    fn record(&self, site: &'static Location<'static>) -> lockdep::Token {
        lockdep::acquired(HeldKind::IrqLock, self.id(), self.class.name, site)
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
        lockdep::released(self.token, HeldKind::IrqLock, self.id);
        if self.were_enabled {
            x86_64::instructions::interrupts::enable();
        }
    }
}

/// A spin lock that leaves interrupts as they are: only for data no
/// interrupt handler touches (else a handler on the holder's CPU spins on
/// it forever).
pub struct SpinLock<T> {
    inner: Mutex<T>,
    class: Class,
}

pub struct SpinGuard<'a, T> {
    guard: Option<MutexGuard<'a, T>>,
    token: lockdep::Token,
    id: usize,
}

impl<T> SpinLock<T> {
    #[track_caller]
    pub const fn new(value: T) -> Self {
        SpinLock {
            inner: Mutex::new(value),
            class: Class::here(),
        }
    }

    pub const fn named(mut self, name: &'static str) -> Self {
        self.class.name = name;
        self
    }

    fn id(&self) -> usize {
        self as *const Self as usize
    }

    #[track_caller]
    pub fn lock(&self) -> SpinGuard<'_, T> {
        let site = Location::caller();
        let guard = self.inner.lock();
        SpinGuard {
            guard: Some(guard),
            token: self.record(site),
            id: self.id(),
        }
    }

    #[track_caller]
    pub fn try_lock(&self) -> Option<SpinGuard<'_, T>> {
        let site = Location::caller();
        let guard = self.inner.try_lock()?;
        Some(SpinGuard {
            guard: Some(guard),
            token: self.record(site),
            id: self.id(),
        })
    }

    fn record(&self, site: &'static Location<'static>) -> lockdep::Token {
        // Interrupts may be on: record with them off, so an interrupt
        // handler's own records cannot interleave with this one.
        x86_64::instructions::interrupts::without_interrupts(|| {
            lockdep::acquired(HeldKind::SpinLock, self.id(), self.class.name, site)
        })
    }
}

impl<T> Deref for SpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.guard.as_ref().expect("guard present until drop")
    }
}

impl<T> DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.guard.as_mut().expect("guard present until drop")
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    fn drop(&mut self) {
        self.guard.take();
        let (token, id) = (self.token, self.id);
        x86_64::instructions::interrupts::without_interrupts(|| {
            lockdep::released(token, HeldKind::SpinLock, id)
        });
    }
}
