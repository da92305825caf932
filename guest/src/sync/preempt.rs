//! Preemption off on this CPU, proven by a type (the idea of Asterinas
//! OSTD's `DisabledPreemptGuard`): while a `PreemptGuard` lives, the task
//! cannot be switched away or migrated, so per-CPU data it reaches through
//! the guard stays this CPU's, and the CPU passes no RCU quiescent state.
//!
//! The CPU's `preempt_count` is the one the scheduler and RCU read; each
//! guard is also an entry on the task's held-lock stack (kind, where it was
//! taken), so a fault inside one is reported with it and the kill path
//! knows what to reset.
use super::lockdep::{self, Token};
use crate::arch::x86_64::percpu::{self, PerCpu};
use core::marker::PhantomData;
use core::panic::Location;
use kcore::lockdep::HeldKind;

/// Preemption is off on `cpu()` until this is dropped. Not `Send`: it
/// belongs to the CPU that made it.
pub struct PreemptGuard {
    cpu: &'static PerCpu,
    token: Token,
    kind: HeldKind,
    _not_send: PhantomData<*const ()>,
}

impl PreemptGuard {
    /// The CPU preemption is off on: the one running this code, for as long
    /// as the guard lives.
    pub fn cpu(&self) -> &'static PerCpu {
        self.cpu
    }

    /// A section of `kind` (`Preempt`, `RcuRead` or `RcuCallbacks`).
    pub(crate) fn enter(
        kind: HeldKind,
        name: &'static str,
        site: &'static Location<'static>,
    ) -> Self {
        let cpu = percpu::this();
        cpu.preempt_disable();
        PreemptGuard {
            cpu,
            token: lockdep::enter(kind, name, site),
            kind,
            _not_send: PhantomData,
        }
    }
}

impl Drop for PreemptGuard {
    fn drop(&mut self) {
        lockdep::exit(self.token, self.kind);
        self.cpu.preempt_enable();
    }
}

/// Linux's `preempt_disable()`, as a guard.
#[track_caller]
pub fn disable() -> PreemptGuard {
    PreemptGuard::enter(HeldKind::Preempt, "preempt_disable", Location::caller())
}
