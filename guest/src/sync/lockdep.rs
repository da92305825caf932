//! The running task's held-lock stack: where every lock type and atomic
//! section records itself (`kcore::lockdep` is the bookkeeping).
//!
//! Each task owns a `TaskHeld`; the CPU running it points at it (`HELD`,
//! which the context switch in `arch::x86_64::current` keeps pointing at the
//! running task's, so lockdep needs no task type). Interrupt and exception
//! handlers record on the task they interrupted, as Linux's lockdep does:
//! their entries come and go before the task runs again. Records are made
//! with interrupts off and with a try-lock: the only other party that can
//! find the stack busy is a fault on this same CPU that arrived in the
//! middle of recording, and then the record is counted as missed rather
//! than waited for (which would never end). A missed record makes the
//! stack untrustworthy, and the exit policy stops rather than kill on it.
use crate::arch::x86_64::current::HeldSlots;
use core::panic::Location;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use kcore::lockdep::{Held, HeldEntry, HeldKind};
use spin::Mutex;

/// Every CPU's running task's held-lock stack, set by the context switch.
pub static HELD: HeldSlots<TaskHeld> = HeldSlots::new();

/// One task's held-lock stack.
pub struct TaskHeld {
    held: Mutex<Held>,
    /// Records that could not be made (see the module comment).
    missed: AtomicU32,
}

impl Default for TaskHeld {
    fn default() -> Self {
        TaskHeld::new()
    }
}

impl TaskHeld {
    pub const fn new() -> TaskHeld {
        TaskHeld {
            held: Mutex::new(Held::new()),
            missed: AtomicU32::new(0),
        }
    }

    /// A copy, or `None` if it is being changed right now (by this CPU,
    /// underneath a fault handler).
    pub fn snapshot(&self) -> Option<Held> {
        self.held.try_lock().map(|h| h.clone())
    }

    /// Change it, if it is not being changed already.
    pub fn with<R>(&self, f: impl FnOnce(&mut Held) -> R) -> Option<R> {
        self.held.try_lock().map(|mut h| f(&mut h))
    }

    pub fn missed(&self) -> u32 {
        self.missed.load(Ordering::Acquire)
    }

    fn addr(&self) -> usize {
        self as *const TaskHeld as usize
    }
}

/// Where an acquisition was recorded, so that its release is recorded in
/// the same place (0: not recorded, e.g. early boot before any task).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token(usize);

impl Token {
    pub const NONE: Token = Token(0);
}

/// Releases recorded on another task than their acquisition (a lock held
/// across a context switch), and releases that matched nothing held.
static CROSSED: AtomicU64 = AtomicU64::new(0);
static UNBALANCED: AtomicU64 = AtomicU64::new(0);

pub fn crossed() -> u64 {
    CROSSED.load(Ordering::Relaxed)
}

pub fn unbalanced() -> u64 {
    UNBALANCED.load(Ordering::Relaxed)
}

/// Record that the running task took `kind` (`id` names the lock). Every
/// caller records with interrupts off (inside its lock or section), so the
/// record is made on the task it is about; with them on, a switch in the
/// middle would only cost a missed record (see the module doc), never
/// memory safety.
pub fn acquired(
    kind: HeldKind,
    id: usize,
    name: &'static str,
    site: &'static Location<'static>,
) -> Token {
    // A deliberate defect (`runner --defect lockdep-acquire-unrecorded`):
    // spin locks taken without a record, as if only the irq-saving kinds
    // needed one.
    if cfg!(defect = "lockdep-acquire-unrecorded") && kind == HeldKind::SpinLock {
        return Token::NONE;
    }
    HELD.with(|h| {
        let entry = HeldEntry {
            kind,
            id,
            name,
            site,
        };
        match h.with(|held| held.acquire(entry)) {
            Some(()) => Token(h.addr()),
            None => {
                h.missed.fetch_add(1, Ordering::AcqRel);
                Token::NONE
            }
        }
    })
    .unwrap_or(Token::NONE)
}

/// Record that what `token` recorded was released (with interrupts off,
/// as `acquired`).
pub fn released(token: Token, kind: HeldKind, id: usize) {
    if token == Token::NONE {
        return;
    }
    HELD.with(|h| {
        if h.addr() != token.0 {
            CROSSED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // A deliberate defect (`runner --defect lockdep-release-unrecorded`):
        // the release of a lock never taken off the stack.
        if cfg!(defect = "lockdep-release-unrecorded")
            && matches!(kind, HeldKind::SpinLock | HeldKind::IrqLock)
        {
            return;
        }
        match h.with(|held| held.release(kind, id)) {
            Some(Ok(())) => {}
            Some(Err(_)) => {
                UNBALANCED.fetch_add(1, Ordering::Relaxed);
            }
            // The entry stays, so the task looks as if it still held it:
            // the policy errs towards stopping.
            None => {
                h.missed.fetch_add(1, Ordering::AcqRel);
            }
        }
    });
}

/// Record a section (preemption off, RCU read side, interrupts off, a
/// callback batch) entered at `site`. Interrupts are turned off around the
/// record.
pub fn enter(kind: HeldKind, name: &'static str, site: &'static Location<'static>) -> Token {
    x86_64::instructions::interrupts::without_interrupts(|| acquired(kind, 0, name, site))
}

pub fn exit(token: Token, kind: HeldKind) {
    x86_64::instructions::interrupts::without_interrupts(|| released(token, kind, 0));
}

/// The running task's stack, copied, and its missed-record count: `None`
/// with no task, or while the stack is being changed underneath us.
pub fn current() -> Option<(Option<Held>, u32)> {
    HELD.with(|h| (h.snapshot(), h.missed()))
}

/// The kill path's reset of the running task's preemption and RCU
/// sections; returns how deep each was.
pub fn reset_current_preemption() -> Option<(u32, u32)> {
    HELD.with(|h| h.with(|held| held.reset_preemption()))
        .flatten()
}
