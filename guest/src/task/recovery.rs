//! Killing a task that overflowed, and proving afterwards that the kernel
//! is whole again.
//!
//! Linux does not go on after a stack overflow (its #DF handler panics);
//! we kill the task and carry on, so the claim "recovered" needs a witness
//! the kill path cannot fake. `make_task_dead` is the kill path's part:
//! the resets the exit policy allowed (`oops::held`), as Linux's
//! `make_task_dead()` makes them, and a note of where the proof starts.
//! When the CPU has switched away from the dead task, `switched_away`
//! takes the facts that are true at once or never: the CPU's
//! `preempt_count`, interrupts still in service at its LAPIC, and what the
//! dead task's held-lock stack still holds (a lock on it is a lock nobody
//! will ever release). A worker then waits for what takes time: that
//! CPU's tick advancing twice (interrupts really arrive there again) and a
//! grace period that began after the kill completing (the CPU reports
//! quiescent states again). Each proof is a `RECOVERY` record; each
//! scenario that killed ends with a `RECOVERY-TALLY` and a check that
//! every kill was proven.
use super::{Task, WaitQueue};
use crate::arch::x86_64::{lapic, percpu, time};
use crate::rcu;
use crate::sync::{lockdep, IrqLock};
use abi::held::{Recovery, RecoveryTally};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use kcore::lockdep::Fixups;

/// Where a kill's proof starts.
#[derive(Clone, Copy, Debug)]
struct Kill {
    task_id: u64,
    number: u64,
    cpu: usize,
    /// That CPU's ticks, and grace periods started, at the kill.
    ticks: u64,
    gp_seq: u64,
    at_ns: u64,
    scenario: &'static str,
    /// Reports were rate-limited: print the proof only if it fails.
    quiet: bool,
}

/// Per CPU, the kill just made there, until the CPU has switched away
/// from the dead task (kept here, not in every task struct).
static KILLED: [IrqLock<Option<Kill>>; percpu::MAX_CPUS] =
    [const { IrqLock::new(None).named("recovery_killed") }; percpu::MAX_CPUS];

/// What `switched_away` found, waiting for the worker.
#[derive(Clone, Copy, Debug)]
struct Pending {
    task_id: u64,
    kill: Kill,
    preempt_count: u32,
    in_service: u32,
    held_left: u32,
    locks_left: u32,
    incomplete: bool,
}

impl Pending {
    /// The facts `switched_away` could take at once all hold.
    fn immediate_ok(&self) -> bool {
        self.preempt_count == 0
            && self.in_service == 0
            && self.held_left == 0
            && self.locks_left == 0
            && !self.incomplete
    }
}

/// Kills waiting for their proof: a fixed ring, so proving allocates
/// nothing (the leak checks of the scenarios that kill stay exact).
const QUEUE: usize = 256;
static PENDING: IrqLock<heapless::Deque<Pending, QUEUE>> =
    IrqLock::new(heapless::Deque::new()).named("recovery_pending");

/// Per CPU, the rate-limited kills whose immediate facts held, folded into
/// one: a storm kills far faster (tens per millisecond under TCG) than a
/// proof can wait for two ticks, and the tick and grace period that come
/// after the latest kill on a CPU come after every earlier one too.
#[derive(Clone, Copy, Debug)]
struct Folded {
    kills: u64,
    latest: Pending,
}

static FOLDED: IrqLock<[Option<Folded>; percpu::MAX_CPUS]> =
    IrqLock::new([None; percpu::MAX_CPUS]).named("recovery_folded");
static WORK: WaitQueue = WaitQueue::new();
/// The worker sleeps here between ticks.
static TICK: WaitQueue = WaitQueue::new();
static TICK_SLEEPING: AtomicBool = AtomicBool::new(false);
static TICKS_ANYWHERE: AtomicU64 = AtomicU64::new(0);

static KILLS: AtomicU64 = AtomicU64::new(0);
/// Proofs finished (proven or not), and how many did not hold.
static DONE: AtomicU64 = AtomicU64::new(0);
static UNPROVEN: AtomicU64 = AtomicU64::new(0);
/// The running scenario's share (reset by `end_of_scenario`).
static SCENARIO_KILLS: AtomicU64 = AtomicU64::new(0);
static SCENARIO_PROVEN: AtomicU64 = AtomicU64::new(0);

/// How long a proof may wait for the tick and a grace period (guest
/// time). Generous: a vCPU the host starves takes no ticks meanwhile.
const PROOF_WAIT_NS: u64 = 20_000_000_000;

pub const WORKER_NAME: &str = "kworker/recovery";

/// Start the worker (once, after the scheduler runs, before any scenario).
pub fn start() {
    WORK.reserve(1);
    TICK.reserve(1);
    if super::spawn_daemon(WORKER_NAME, worker).is_err() {
        kprintln!("recovery: no memory for {WORKER_NAME}: kills will go unproven");
    }
}

/// Linux's `make_task_dead()` before `do_exit()`: make the resets the exit
/// policy allowed and remember where the proof starts. In the fault
/// handler, on the dying task, interrupts off.
pub fn make_task_dead(fixups: Fixups, scenario: &'static str, quiet: bool) {
    let cpu = percpu::this();
    if fixups.preempt + fixups.rcu > 0 && !cfg!(defect = "no-preempt-reset") {
        // The policy killed only because the CPU's count is exactly the
        // task's own sections: nothing else is reset with them.
        cpu.reset_preempt_count();
        lockdep::reset_current_preemption();
    }
    let number = KILLS.fetch_add(1, Ordering::AcqRel) + 1;
    SCENARIO_KILLS.fetch_add(1, Ordering::AcqRel);
    let kill = Kill {
        task_id: super::current_id(),
        number,
        cpu: cpu.id,
        ticks: cpu.ticks(),
        gp_seq: rcu::gp_seq(),
        at_ns: time::now_ns(),
        scenario,
        quiet,
    };
    *KILLED[cpu.id].lock() = Some(kill);
}

/// From `finish_switch`: `prev` is dead, and this CPU has left it.
pub(super) fn switched_away(prev: &Task) {
    let cpu = percpu::this();
    let kill = {
        let mut k = KILLED[cpu.id].lock();
        match *k {
            Some(kill) if kill.task_id == prev.id => k.take(),
            _ => None,
        }
    };
    let Some(kill) = kill else {
        return;
    };
    let (held_left, locks_left, incomplete) = match prev.held().snapshot() {
        Some(h) => (
            h.named() as u32 + h.lost(),
            h.depths().locks(),
            prev.held().missed() > 0,
        ),
        None => (0, 0, true),
    };
    let p = Pending {
        task_id: prev.id,
        kill,
        preempt_count: cpu.preempt_count(),
        in_service: lapic::in_service_count(),
        held_left,
        locks_left,
        incomplete,
    };
    if p.kill.quiet && p.immediate_ok() {
        let mut folded = FOLDED.lock();
        let f = &mut folded[cpu.id];
        *f = Some(Folded {
            kills: f.map_or(0, |f| f.kills) + 1,
            latest: p,
        });
        drop(folded);
        WORK.wake_all();
        return;
    }
    if PENDING.lock().push_back(p).is_err() {
        // More kills in flight than the ring holds: this one goes unproven,
        // and says so.
        DONE.fetch_add(1, Ordering::AcqRel);
        UNPROVEN.fetch_add(1, Ordering::AcqRel);
        return;
    }
    WORK.wake_all();
}

/// From every CPU's tick: wake the worker if it waits for one.
pub fn tick() {
    TICKS_ANYWHERE.fetch_add(1, Ordering::Relaxed);
    if TICK_SLEEPING.load(Ordering::Acquire) {
        TICK.wake_all();
    }
}

fn sleep_one_tick() {
    let seen = TICKS_ANYWHERE.load(Ordering::Acquire);
    TICK_SLEEPING.store(true, Ordering::Release);
    TICK.wait_until(|| TICKS_ANYWHERE.load(Ordering::Acquire) != seen);
    TICK_SLEEPING.store(false, Ordering::Release);
}

fn ticks_of(cpu: usize) -> u64 {
    percpu::get(cpu).map_or(0, |p| p.ticks())
}

fn ticked(p: &Pending) -> bool {
    ticks_of(p.kill.cpu) >= p.kill.ticks + 2
}

/// The first `n` pending kills and the folded ones have what the proof
/// waits for.
fn ready(n: usize, folded: &[Option<Folded>], gp_target: u64) -> bool {
    rcu::completed() >= gp_target
        && PENDING.lock().iter().take(n).all(ticked)
        && folded.iter().flatten().all(|f| ticked(&f.latest))
}

fn worker() -> ! {
    loop {
        WORK.wait_until(|| !PENDING.lock().is_empty() || FOLDED.lock().iter().any(Option::is_some));
        let n = PENDING.lock().len();
        let folded = core::mem::replace(&mut *FOLDED.lock(), [None; percpu::MAX_CPUS]);
        // A grace period that starts after every one of these kills (one
        // starts for this request even with no callbacks queued).
        let target = rcu::request_grace_period();
        let start = time::now_ns();
        while !ready(n, &folded, target) && time::now_ns() - start < PROOF_WAIT_NS {
            sleep_one_tick();
        }
        for _ in 0..n {
            let Some(p) = PENDING.lock().pop_front() else {
                break;
            };
            prove(&p, 1);
        }
        for f in folded.iter().flatten() {
            prove(&f.latest, f.kills);
        }
    }
}

/// Prove `p`, standing for `kills` kills (the folded ones share its proof).
fn prove(p: &Pending, kills: u64) {
    let r = Recovery {
        scenario: p.kill.scenario,
        task_id: p.task_id,
        cpu: p.kill.cpu as u32,
        kill: p.kill.number,
        preempt_count: p.preempt_count,
        in_service: p.in_service,
        held_left: p.held_left,
        locks_left: p.locks_left,
        incomplete: p.incomplete,
        ticks_at_kill: p.kill.ticks,
        ticks_after: ticks_of(p.kill.cpu),
        gp_at_kill: p.kill.gp_seq,
        gp_completed: rcu::completed(),
        waited_us: time::now_ns().saturating_sub(p.kill.at_ns) / 1000,
    };
    let proven = r.proven();
    if !proven {
        UNPROVEN.fetch_add(kills, Ordering::AcqRel);
        crate::console::report(|w| {
            let _ = core::fmt::Write::write_fmt(
                w,
                format_args!(
                    "recovery: kill {} of task {} on CPU {} NOT proven:",
                    r.kill, r.task_id, r.cpu
                ),
            );
            for f in r.failures() {
                let _ = core::fmt::Write::write_fmt(w, format_args!(" {f};"));
            }
            let _ = core::fmt::Write::write_str(w, "\n");
        });
    } else {
        SCENARIO_PROVEN.fetch_add(kills, Ordering::AcqRel);
    }
    // A deliberate defect (`runner --defect recovery-record-failures-only`):
    // the record printed only for a proof that failed, as if a proven kill
    // needed no witness: the guest's tally still says every kill was proven.
    let print = if cfg!(defect = "recovery-record-failures-only") {
        !proven
    } else {
        !p.kill.quiet || !proven
    };
    if print {
        crate::console::record(&r);
    }
    DONE.fetch_add(kills, Ordering::AcqRel);
}

/// Kills since boot whose proof has not finished.
pub fn in_flight() -> u64 {
    KILLS.load(Ordering::Acquire) - DONE.load(Ordering::Acquire)
}

/// After a scenario: wait (bounded) for the proofs of its kills, print
/// its tally and reset it. Returns (kills, proven, pending); (0, 0, 0) for
/// a scenario that killed nothing.
pub fn end_of_scenario(scenario: &'static str) -> (u64, u64, u64) {
    let kills = SCENARIO_KILLS.load(Ordering::Acquire);
    if kills == 0 {
        return (0, 0, 0);
    }
    let target = KILLS.load(Ordering::Acquire);
    let start = time::now_ns();
    while DONE.load(Ordering::Acquire) < target
        && time::now_ns() - start < PROOF_WAIT_NS + 5_000_000_000
    {
        super::yield_now();
    }
    let proven = SCENARIO_PROVEN.swap(0, Ordering::AcqRel);
    SCENARIO_KILLS.store(0, Ordering::Release);
    let pending = in_flight();
    crate::console::record(&RecoveryTally {
        scenario,
        kills,
        proven,
        pending,
    });
    (kills, proven, pending)
}
