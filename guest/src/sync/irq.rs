//! Interrupts-off sections, recorded like locks.

/// Run `f` with interrupts off on this CPU, restoring the previous state
/// (Linux's `local_irq_save`). The section is recorded on the running
/// task's held-lock stack: a task caught inside one cannot be killed, since
/// whatever the section guards may be half changed.
#[track_caller]
pub fn without<R>(f: impl FnOnce() -> R) -> R {
    let site = core::panic::Location::caller();
    x86_64::instructions::interrupts::without_interrupts(|| {
        let kind = kcore::lockdep::HeldKind::IrqsOff;
        let token = super::lockdep::acquired(kind, 0, "irqs_off", site);
        let r = f();
        super::lockdep::released(token, kind, 0);
        r
    })
}
