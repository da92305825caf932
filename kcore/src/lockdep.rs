//! What a task holds, and whether killing it leaves the kernel whole: a
//! minimal lockdep, and the exit policy built on it.
//!
//! Every lock type the guest has, every interrupts-off section, every
//! `preempt_disable` and `rcu_read_lock`, and a running batch of RCU
//! callbacks push an entry on the task's [`Held`] stack (kind, which lock,
//! its name, where it was taken) and pop it when released. Like lockdep's
//! `held_locks` in `task_struct`, the stack is the task's own, so an oops
//! can say "1 lock held by task 7 'x': #0 tasklist_lock, acquired at
//! guest/src/task/lifetime.rs:80" instead of leaving a reader to guess.
//!
//! [`exit_verdict`] (`exit_policy`, re-exported here) is the policy the
//! kill path applies to it, grounded in
//! Linux's `make_task_dead()`: never kill in interrupt context ("Aiee,
//! killing interrupt handler!") or the idle task; preemption or RCU nesting
//! alone and interrupts left disabled are noted and reset ("exited with
//! preempt_count N", "exited with irqs disabled"). Linux then goes on even
//! when a lock is held (lockdep only warns); we stop instead, because
//! nothing can ever release a dead task's lock, and an interrupts-off
//! section or an RCU callback batch cut short leaves shared data half
//! changed just the same.

use core::fmt;
use core::panic::Location;

/// Entries kept per task; deeper nesting is still counted (`lost`), only
/// not named. Small: every task carries its stack, and the guest's
/// deepest real nesting is four.
pub use crate::exit_policy::{exit_verdict, ExitContext, ExitVerdict, Fixups, StopReason};

pub const MAX_HELD: usize = 8;

/// What an entry stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HeldKind {
    /// A spin lock taken with interrupts off (Linux's `spin_lock_irqsave`).
    IrqLock,
    /// A spin lock that leaves interrupts as they are.
    SpinLock,
    /// An interrupts-off section with no lock (`local_irq_save`).
    IrqsOff,
    /// `preempt_disable()`.
    Preempt,
    /// `rcu_read_lock()` (classic RCU: preemption off too).
    RcuRead,
    /// A batch of RCU callbacks being run (Linux runs them in softirq).
    RcuCallbacks,
}

impl HeldKind {
    pub const ALL: [HeldKind; 6] = [
        HeldKind::IrqLock,
        HeldKind::SpinLock,
        HeldKind::IrqsOff,
        HeldKind::Preempt,
        HeldKind::RcuRead,
        HeldKind::RcuCallbacks,
    ];

    /// A lock someone else may need: only its holder can release it.
    pub fn is_lock(self) -> bool {
        matches!(self, HeldKind::IrqLock | HeldKind::SpinLock)
    }

    /// Counted in the CPU's `preempt_count` (and so blocks quiescent states).
    pub fn disables_preemption(self) -> bool {
        matches!(
            self,
            HeldKind::Preempt | HeldKind::RcuRead | HeldKind::RcuCallbacks
        )
    }

    /// Keeps interrupts off on this CPU while held.
    pub fn disables_irqs(self) -> bool {
        matches!(self, HeldKind::IrqLock | HeldKind::IrqsOff)
    }
}

/// One thing held: what, which one (a lock's address; 0 for sections),
/// its name (lockdep's class name; a lock nobody named goes by the file
/// that defines it) and where it was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldEntry {
    pub kind: HeldKind,
    pub id: usize,
    pub name: &'static str,
    pub site: &'static Location<'static>,
}

impl fmt::Display for HeldEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// Nesting depth per kind, exact even past [`MAX_HELD`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Depths {
    pub irq_locks: u32,
    pub spin_locks: u32,
    pub irqs_off: u32,
    pub preempt: u32,
    pub rcu: u32,
    pub callbacks: u32,
}

impl Depths {
    fn slot(&mut self, kind: HeldKind) -> &mut u32 {
        match kind {
            HeldKind::IrqLock => &mut self.irq_locks,
            HeldKind::SpinLock => &mut self.spin_locks,
            HeldKind::IrqsOff => &mut self.irqs_off,
            HeldKind::Preempt => &mut self.preempt,
            HeldKind::RcuRead => &mut self.rcu,
            HeldKind::RcuCallbacks => &mut self.callbacks,
        }
    }

    pub fn of(&self, kind: HeldKind) -> u32 {
        let mut d = *self;
        *d.slot(kind)
    }

    /// Locks held, of any type.
    pub fn locks(&self) -> u32 {
        self.irq_locks + self.spin_locks
    }

    /// What this task adds to its CPU's `preempt_count`.
    pub fn preempt_count(&self) -> u32 {
        self.preempt + self.rcu + self.callbacks
    }

    /// Interrupts-off nesting: sections and the locks that imply one.
    pub fn irq_nesting(&self) -> u32 {
        self.irq_locks + self.irqs_off
    }

    pub fn is_empty(&self) -> bool {
        *self == Depths::default()
    }
}

/// A release that matches nothing held: lockdep's "bad unlock balance".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotHeld {
    pub kind: HeldKind,
    pub id: usize,
}

/// One task's held-lock stack, innermost last.
#[derive(Clone, Debug)]
pub struct Held {
    entries: [Option<HeldEntry>; MAX_HELD],
    len: usize,
    /// Entries pushed while the stack was full: counted in `depths`, not named.
    lost: u32,
    depths: Depths,
    /// Releases that matched nothing.
    unbalanced: u32,
}

impl Default for Held {
    fn default() -> Self {
        Held::new()
    }
}

impl Held {
    pub const fn new() -> Held {
        Held {
            entries: [None; MAX_HELD],
            len: 0,
            lost: 0,
            depths: Depths {
                irq_locks: 0,
                spin_locks: 0,
                irqs_off: 0,
                preempt: 0,
                rcu: 0,
                callbacks: 0,
            },
            unbalanced: 0,
        }
    }

    /// `entry` was taken (innermost now).
    pub fn acquire(&mut self, entry: HeldEntry) {
        *self.depths.slot(entry.kind) += 1;
        if self.len < MAX_HELD {
            self.entries[self.len] = Some(entry);
            self.len += 1;
        } else {
            self.lost += 1;
        }
    }

    /// The innermost entry of `kind` with `id` was released. Locks may be
    /// released out of order (lockdep allows it too), so the match is
    /// searched for from the top; one that was never named (the stack was
    /// full when it was taken) is taken to be one of the lost ones.
    pub fn release(&mut self, kind: HeldKind, id: usize) -> Result<(), NotHeld> {
        let found = self.entries[..self.len]
            .iter()
            .rposition(|e| e.is_some_and(|e| e.kind == kind && e.id == id));
        match found {
            Some(i) => {
                self.entries.copy_within(i + 1..self.len, i);
                self.len -= 1;
                self.entries[self.len] = None;
            }
            None if self.lost > 0 && self.depths.of(kind) > 0 => self.lost -= 1,
            None => {
                self.unbalanced += 1;
                return Err(NotHeld { kind, id });
            }
        }
        *self.depths.slot(kind) -= 1;
        Ok(())
    }

    /// Named entries, outermost first.
    pub fn entries(&self) -> impl Iterator<Item = &HeldEntry> + '_ {
        self.entries[..self.len].iter().flatten()
    }

    /// How many entries are named (`entries().count()`).
    pub fn named(&self) -> usize {
        self.len
    }

    pub fn depths(&self) -> Depths {
        self.depths
    }

    pub fn lost(&self) -> u32 {
        self.lost
    }

    pub fn unbalanced(&self) -> u32 {
        self.unbalanced
    }

    /// The first (outermost) entry that [`exit_verdict`] refuses to kill
    /// with, by the policy's order: a lock, then an RCU callback batch,
    /// then an interrupts-off section.
    pub fn blocking(&self) -> Option<HeldEntry> {
        let first = |pred: fn(HeldKind) -> bool| self.entries().find(|e| pred(e.kind)).copied();
        first(HeldKind::is_lock)
            .or_else(|| first(|k| k == HeldKind::RcuCallbacks))
            .or_else(|| first(|k| k == HeldKind::IrqsOff))
    }

    /// The kill path's reset: drop the preemption and RCU read-side entries
    /// (a dead task leaves no section behind), returning how deep each was.
    /// Nothing else is touched: the policy kills only when nothing else is
    /// held.
    pub fn reset_preemption(&mut self) -> (u32, u32) {
        let (preempt, rcu) = (self.depths.preempt, self.depths.rcu);
        let mut kept = 0;
        for i in 0..self.len {
            let e = self.entries[i];
            if e.is_some_and(|e| !matches!(e.kind, HeldKind::Preempt | HeldKind::RcuRead)) {
                self.entries[kept] = e;
                kept += 1;
            }
        }
        for slot in &mut self.entries[kept..self.len] {
            *slot = None;
        }
        self.len = kept;
        self.depths.preempt = 0;
        self.depths.rcu = 0;
        // Lost entries were all of these kinds if nothing else is counted
        // beyond what is named; otherwise keep the count (the policy stops).
        let named_others = self.entries().count() as u32;
        let others = self.depths.locks() + self.depths.irqs_off + self.depths.callbacks;
        if others == named_others {
            self.lost = 0;
        }
        (preempt, rcu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn entry(kind: HeldKind, id: usize, name: &'static str) -> HeldEntry {
        HeldEntry {
            kind,
            id,
            name,
            site: Location::caller(),
        }
    }

    fn cx() -> ExitContext {
        ExitContext {
            in_interrupt: false,
            idle: false,
            readable: true,
            incomplete: false,
            irqs_enabled: true,
            cpu_preempt_count: 0,
        }
    }

    #[test]
    fn out_of_order_release_and_bad_unlock_balance() {
        let mut h = Held::new();
        h.acquire(entry(HeldKind::IrqLock, 1, "a"));
        h.acquire(entry(HeldKind::SpinLock, 2, "b"));
        assert_eq!(h.release(HeldKind::IrqLock, 1), Ok(()));
        let names: Vec<_> = h.entries().map(|e| e.name).collect();
        assert_eq!(names, ["b"]);
        assert_eq!(
            h.release(HeldKind::IrqLock, 1),
            Err(NotHeld {
                kind: HeldKind::IrqLock,
                id: 1
            })
        );
        assert_eq!(h.unbalanced(), 1);
        assert_eq!(h.depths().spin_locks, 1);
    }

    #[test]
    fn preemption_alone_is_reset_and_noted() {
        let mut h = Held::new();
        h.acquire(entry(HeldKind::RcuRead, 0, "rcu_read_lock"));
        h.acquire(entry(HeldKind::Preempt, 0, "preempt_disable"));
        let v = exit_verdict(
            &h,
            &ExitContext {
                cpu_preempt_count: 2,
                irqs_enabled: false,
                ..cx()
            },
        );
        assert_eq!(
            v,
            ExitVerdict::Kill(Fixups {
                preempt: 1,
                rcu: 1,
                irqs_disabled: true
            })
        );
        assert_eq!(h.reset_preemption(), (1, 1));
        assert!(h.depths().is_empty() && h.named() == 0);
    }

    #[test]
    fn a_lock_stops_the_machine_and_is_named() {
        let mut h = Held::new();
        h.acquire(entry(HeldKind::RcuRead, 0, "rcu_read_lock"));
        h.acquire(entry(HeldKind::SpinLock, 9, "victim_lock"));
        let v = exit_verdict(
            &h,
            &ExitContext {
                cpu_preempt_count: 1,
                ..cx()
            },
        );
        match v {
            ExitVerdict::Stop(StopReason::LockHeld(e)) => assert_eq!(e.name, "victim_lock"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn linux_refusals_come_first() {
        let h = Held::new();
        let stop = |cx: ExitContext| match exit_verdict(&h, &cx) {
            ExitVerdict::Stop(r) => Some(r),
            ExitVerdict::Kill(_) => None,
        };
        assert_eq!(
            stop(ExitContext {
                in_interrupt: true,
                idle: true,
                ..cx()
            }),
            Some(StopReason::InInterrupt)
        );
        assert_eq!(
            stop(ExitContext { idle: true, ..cx() }),
            Some(StopReason::IdleTask)
        );
        assert_eq!(
            stop(ExitContext {
                readable: false,
                ..cx()
            }),
            Some(StopReason::Unreadable)
        );
        assert_eq!(
            stop(ExitContext {
                cpu_preempt_count: 1,
                ..cx()
            }),
            Some(StopReason::PreemptUnexplained { cpu: 1, task: 0 })
        );
        assert_eq!(stop(cx()), None);
    }

    #[test]
    fn past_the_stack_depth_is_still_counted() {
        let mut h = Held::new();
        for _ in 0..MAX_HELD + 3 {
            h.acquire(entry(HeldKind::RcuRead, 0, "rcu_read_lock"));
        }
        assert_eq!((h.named(), h.lost()), (MAX_HELD, 3));
        assert_eq!(h.depths().rcu, MAX_HELD as u32 + 3);
        let v = exit_verdict(
            &h,
            &ExitContext {
                cpu_preempt_count: MAX_HELD as u32 + 3,
                ..cx()
            },
        );
        assert!(matches!(v, ExitVerdict::Kill(f) if f.rcu == MAX_HELD as u32 + 3));
        for _ in 0..MAX_HELD + 3 {
            h.release(HeldKind::RcuRead, 0).unwrap();
        }
        assert!(h.depths().is_empty() && h.lost() == 0);
    }

    fn verdict(kinds: &[HeldKind], cx: ExitContext) -> ExitVerdict {
        let mut h = Held::new();
        for (i, &k) in kinds.iter().enumerate() {
            h.acquire(entry(k, i + 1, "x"));
        }
        exit_verdict(&h, &cx)
    }

    /// Each kind the policy refuses to kill with, named as that, and the
    /// order it names them in: a lock first, then callbacks, then a section.
    #[test]
    fn every_blocking_kind_stops_as_itself() {
        let preempt_of =
            |kinds: &[HeldKind]| kinds.iter().filter(|k| k.disables_preemption()).count() as u32;
        let stop = |kinds: &[HeldKind]| match verdict(
            kinds,
            ExitContext {
                cpu_preempt_count: preempt_of(kinds),
                ..cx()
            },
        ) {
            ExitVerdict::Stop(r) => r.as_str(),
            ExitVerdict::Kill(_) => "kill",
        };
        use HeldKind::*;
        assert_eq!(stop(&[IrqLock]), "lock-held");
        assert_eq!(stop(&[SpinLock]), "lock-held");
        assert_eq!(stop(&[RcuCallbacks]), "rcu-callbacks");
        assert_eq!(stop(&[IrqsOff]), "irqs-off-section");
        assert_eq!(stop(&[Preempt, RcuRead]), "kill");
        assert_eq!(stop(&[IrqsOff, RcuCallbacks, SpinLock]), "lock-held");
        assert_eq!(stop(&[IrqsOff, RcuCallbacks]), "rcu-callbacks");
        let mut h = Held::new();
        h.acquire(entry(IrqsOff, 1, "section"));
        h.acquire(entry(SpinLock, 2, "inner"));
        h.acquire(entry(IrqLock, 3, "innermost"));
        assert_eq!(h.blocking().map(|e| e.name), Some("inner"));
        match exit_verdict(&h, &cx()) {
            ExitVerdict::Stop(r) => {
                assert_eq!(r.entry().map(|e| e.id), Some(2));
                assert!(r.to_string().starts_with("inner held (acquired at "), "{r}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn what_could_not_be_recorded_stops_the_machine() {
        assert_eq!(
            verdict(
                &[],
                ExitContext {
                    incomplete: true,
                    ..cx()
                }
            ),
            ExitVerdict::Stop(StopReason::Incomplete)
        );
        // Past the stack's depth: unnamed sections are fine, an unnamed lock is not.
        let mut h = Held::new();
        for i in 0..MAX_HELD {
            h.acquire(entry(HeldKind::Preempt, i, "p"));
        }
        h.acquire(entry(HeldKind::SpinLock, 99, "lost_lock"));
        assert_eq!((h.named(), h.lost()), (MAX_HELD, 1));
        let cx_full = ExitContext {
            cpu_preempt_count: MAX_HELD as u32,
            ..cx()
        };
        assert_eq!(
            exit_verdict(&h, &cx_full),
            ExitVerdict::Stop(StopReason::Incomplete)
        );
        assert_eq!(h.release(HeldKind::SpinLock, 99), Ok(()));
        assert_eq!(h.lost(), 0);
        assert!(
            matches!(exit_verdict(&h, &cx_full), ExitVerdict::Kill(f) if f.preempt == MAX_HELD as u32)
        );
    }

    #[test]
    fn the_reset_drops_sections_and_keeps_the_rest() {
        let mut h = Held::new();
        h.acquire(entry(HeldKind::Preempt, 0, "p"));
        h.acquire(entry(HeldKind::SpinLock, 5, "kept"));
        h.acquire(entry(HeldKind::RcuRead, 0, "r"));
        h.acquire(entry(HeldKind::RcuRead, 0, "r"));
        assert_eq!(h.reset_preemption(), (1, 2));
        let left: Vec<_> = h.entries().map(|e| (e.kind, e.name)).collect();
        assert_eq!(left, [(HeldKind::SpinLock, "kept")]);
        assert_eq!(h.named(), 1);
        assert_eq!(h.depths().preempt_count(), 0);
        assert_eq!(h.depths().locks(), 1);
        // Lost entries: forgotten only when everything else counted is named.
        let mut h = Held::new();
        h.acquire(entry(HeldKind::SpinLock, 5, "kept"));
        for _ in 0..MAX_HELD {
            h.acquire(entry(HeldKind::RcuRead, 0, "r"));
        }
        assert_eq!(h.lost(), 1);
        h.reset_preemption();
        assert_eq!((h.lost(), h.named()), (0, 1));
        let mut h = Held::new();
        for _ in 0..MAX_HELD {
            h.acquire(entry(HeldKind::RcuRead, 0, "r"));
        }
        h.acquire(entry(HeldKind::IrqsOff, 0, "lost_section"));
        h.reset_preemption();
        assert_eq!((h.lost(), h.named(), h.depths().irqs_off), (1, 0, 1));
    }

    /// A lock, an RCU callback batch and an interrupts-off section, all
    /// named, with preemption entries lost past the stack's depth: every
    /// kind that counts is accounted for, so the stop names the lock rather
    /// than an incomplete record, and the reset forgets the lost entries.
    #[test]
    fn lost_sections_beside_one_of_each_named_kind() {
        let mut h = Held::new();
        h.acquire(entry(HeldKind::SpinLock, 1, "lock"));
        h.acquire(entry(HeldKind::RcuCallbacks, 0, "callbacks"));
        h.acquire(entry(HeldKind::IrqsOff, 0, "section"));
        for _ in 3..=MAX_HELD {
            h.acquire(entry(HeldKind::Preempt, 0, "p"));
        }
        assert_eq!((h.named(), h.lost()), (MAX_HELD, 1));
        let cx_full = ExitContext {
            cpu_preempt_count: h.depths().preempt_count(),
            ..cx()
        };
        assert!(
            matches!(exit_verdict(&h, &cx_full), ExitVerdict::Stop(StopReason::LockHeld(e)) if e.name == "lock")
        );
        assert_eq!(h.reset_preemption(), ((MAX_HELD - 2) as u32, 0));
        assert_eq!((h.lost(), h.named()), (0, 3));
    }

    #[test]
    fn depths_and_kinds_add_up() {
        use HeldKind::*;
        let mut h = Held::new();
        for (i, k) in HeldKind::ALL.iter().enumerate() {
            for _ in 0..=i {
                h.acquire(entry(*k, i, "k"));
            }
        }
        let d = h.depths();
        assert_eq!(
            (
                d.irq_locks,
                d.spin_locks,
                d.irqs_off,
                d.preempt,
                d.rcu,
                d.callbacks
            ),
            (1, 2, 3, 4, 5, 6)
        );
        for (i, k) in HeldKind::ALL.iter().enumerate() {
            assert_eq!(d.of(*k), i as u32 + 1);
        }
        assert_eq!(d.locks(), 3);
        assert_eq!(d.preempt_count(), 4 + 5 + 6);
        assert_eq!(d.irq_nesting(), 1 + 3);
        assert!(!d.is_empty() && Depths::default().is_empty());
        let locks: Vec<_> = HeldKind::ALL.iter().filter(|k| k.is_lock()).collect();
        assert_eq!(locks, [&IrqLock, &SpinLock]);
        let preempt: Vec<_> = HeldKind::ALL
            .iter()
            .filter(|k| k.disables_preemption())
            .collect();
        assert_eq!(preempt, [&Preempt, &RcuRead, &RcuCallbacks]);
        let irqs: Vec<_> = HeldKind::ALL.iter().filter(|k| k.disables_irqs()).collect();
        assert_eq!(irqs, [&IrqLock, &IrqsOff]);
        assert!(Fixups::default().is_empty());
        assert!(!Fixups {
            irqs_disabled: true,
            ..Fixups::default()
        }
        .is_empty());
    }

    #[test]
    fn every_stop_reason_has_its_name_and_its_sentence() {
        let e = entry(HeldKind::RcuCallbacks, 0, "cb");
        let cases = [
            (
                StopReason::InInterrupt,
                "in-interrupt",
                "interrupt context",
                false,
            ),
            (StopReason::IdleTask, "idle-task", "idle task", false),
            (
                StopReason::Unreadable,
                "held-state-unreadable",
                "bookkeeping",
                false,
            ),
            (
                StopReason::Incomplete,
                "held-state-incomplete",
                "could not be recorded",
                false,
            ),
            (
                StopReason::LockHeld(e),
                "lock-held",
                "nobody else could ever release",
                true,
            ),
            (
                StopReason::RcuCallbacks(e),
                "rcu-callbacks",
                "RCU callbacks running",
                true,
            ),
            (
                StopReason::IrqsOffSection(e),
                "irqs-off-section",
                "interrupts-off section",
                true,
            ),
            (
                StopReason::PreemptUnexplained { cpu: 3, task: 1 },
                "preempt-unexplained",
                "preempt_count 3 on the CPU, but the task's own sections account for 1",
                false,
            ),
        ];
        for (r, name, says, has_entry) in cases {
            assert_eq!(r.as_str(), name);
            assert!(r.to_string().contains(says), "{r}");
            assert_eq!(r.entry().is_some(), has_entry, "{name}");
        }
        assert_eq!(e.to_string(), "cb");
    }

    /// A release matches by kind and lock, both; an unnamed (lost) entry
    /// only absorbs a release of a kind that is counted.
    #[test]
    fn a_release_matches_kind_and_lock_and_only_counted_lost_entries() {
        let mut h = Held::new();
        h.acquire(entry(HeldKind::SpinLock, 1, "a"));
        h.acquire(entry(HeldKind::IrqLock, 2, "b"));
        assert!(h.release(HeldKind::SpinLock, 2).is_err());
        assert!(h.release(HeldKind::IrqLock, 1).is_err());
        assert_eq!(h.named(), 2);
        assert_eq!(h.unbalanced(), 2);
        // A spin lock counted but with another id: not lost, so unbalanced.
        assert!(h.release(HeldKind::SpinLock, 3).is_err());
        assert_eq!((h.unbalanced(), h.depths().spin_locks), (3, 1));
        let mut h = Held::new();
        for _ in 0..=MAX_HELD {
            h.acquire(entry(HeldKind::Preempt, 0, "p"));
        }
        assert_eq!(h.lost(), 1);
        // A kind with no count cannot be one of the lost entries.
        assert!(h.release(HeldKind::SpinLock, 9).is_err());
        assert_eq!((h.lost(), h.unbalanced()), (1, 1));
        assert_eq!(h.release(HeldKind::Preempt, 0), Ok(()));
        assert_eq!((h.lost(), h.named()), (1, MAX_HELD - 1));
    }
}
