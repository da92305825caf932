//! Read-copy-update, the classic non-preemptible kind.
//!
//! A reader disables preemption (`read_lock`), so a CPU that context
//! switches, idles, or takes a tick outside a read-side section has passed a
//! quiescent state: it holds no reference obtained under an earlier
//! `read_lock`. A grace period ends once every CPU has passed one; callbacks
//! queued with `call_rcu` before it began then run, in a batch, on the CPU
//! that queued them. The grace-period bookkeeping is `kcore::rcu`
//! (host-tested); this module feeds it quiescent states and runs callbacks.
//!
//! As in Linux, a context switch only *notes* its quiescent state in a
//! per-CPU word (`rcu_qs()`); the scheduler tick reports it to the
//! grace-period machinery (`rcu_sched_clock_irq()`). That keeps the global
//! lock off the switch path, and it makes a grace period last a tick or two
//! (4-8 ms at 250 Hz) however fast tasks come and go, so a fork-heavy load
//! queues many frees per grace period: the condition under which the LWN
//! seed found the stack cache useless with RCU-deferred freeing.
use crate::arch::x86_64::{exceptions, lapic, percpu, time};
use crate::sync::preempt::PreemptGuard;
use crate::sync::IrqLock;
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt::Write;
use core::panic::Location;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use kcore::lockdep::HeldKind;
use kcore::rcu::Rcu;
use kcore::rcu_stall::{self, CpuStall, Policy, Progress};

type Callback = Box<dyn FnOnce() + Send>;

static STATE: IrqLock<Option<Rcu<Callback>>> = IrqLock::new(None).named("rcu_state");

/// Start RCU once every CPU that will take part is online.
pub fn init(cpus: usize) {
    *STATE.lock() = Some(Rcu::new(cpus));
}

/// `gp_seq()` and `completed()`, readable without the lock: a switch notes
/// its quiescent state against the first, the tick skips the lock when the
/// two are equal (no grace period to report to).
static GP_SEQ: AtomicU64 = AtomicU64::new(0);
static COMPLETED: AtomicU64 = AtomicU64::new(0);
/// Per CPU: `GP_SEQ` when it last passed a quiescent state at a switch or
/// in the idle loop, not yet reported.
static NOTED: [AtomicU64; percpu::MAX_CPUS] = [const { AtomicU64::new(0) }; percpu::MAX_CPUS];
/// Per CPU: a grace period ended with callbacks of this CPU's ready.
static READY: [AtomicBool; percpu::MAX_CPUS] = [const { AtomicBool::new(false) }; percpu::MAX_CPUS];

fn with<R>(f: impl FnOnce(&mut Rcu<Callback>) -> R) -> Option<R> {
    with_state(STATE.lock().as_mut(), f)
}

/// Run `f` on the state, then publish what changed to the lock-free side.
fn with_state<R>(
    state: Option<&mut Rcu<Callback>>,
    f: impl FnOnce(&mut Rcu<Callback>) -> R,
) -> Option<R> {
    let r = state?;
    let completed = r.completed();
    let out = f(r);
    if r.completed() != completed {
        for (cpu, ready) in READY.iter().enumerate().take(r.n_cpus()) {
            if r.has_done(cpu) {
                ready.store(true, Ordering::Release);
            }
        }
        COMPLETED.store(r.completed(), Ordering::Release);
    }
    if r.completed() != completed {
        let wall = time::now_ns().saturating_sub(GP_STARTED_NS.load(Ordering::Acquire));
        MAX_GP_WALL_NS.fetch_max(wall, Ordering::AcqRel);
    }
    if GP_SEQ.swap(r.gp_seq(), Ordering::AcqRel) != r.gp_seq() {
        note_gp_start();
    }
    Some(out)
}

/// When the grace period in progress started, and the last one a stall
/// warning was printed for.
static GP_STARTED_NS: AtomicU64 = AtomicU64::new(0);
static STALL_WARNED: AtomicU64 = AtomicU64::new(0);

// The stall detector judges a grace period's age in each waiting CPU's own
// ticks and NMI answers, not in wall time (`kcore::rcu_stall`): a vCPU the
// host does not run is slow, not stalled.

/// Per CPU: its progress when the grace period in progress began, and its
/// tick count when it was last probed with an NMI.
static GP_START_TICKS: [AtomicU64; percpu::MAX_CPUS] =
    [const { AtomicU64::new(0) }; percpu::MAX_CPUS];
static GP_START_NMIS: [AtomicU64; percpu::MAX_CPUS] =
    [const { AtomicU64::new(0) }; percpu::MAX_CPUS];
static PROBED_AT_TICKS: [AtomicU64; percpu::MAX_CPUS] =
    [const { AtomicU64::new(0) }; percpu::MAX_CPUS];
static LAST_PROBE_NS: AtomicU64 = AtomicU64::new(0);
/// Probe CPUs whose tick stopped once a grace period is this old, and at
/// most this often (the NMI weight, 25 ticks, is this period at 250 Hz).
const PROBE_AFTER_NS: u64 = 200_000_000;
const PROBE_EVERY_NS: u64 = 100_000_000;
static STALL_TICKS: AtomicU64 = AtomicU64::new(rcu_stall::DEFAULT.stall_ticks);

/// What the stall detector counts: own ticks since `start` make a stall
/// (scenarios lower it to provoke one quickly; 0 restores the default).
pub fn set_stall_ticks(ticks: u64) {
    let t = if ticks == 0 {
        rcu_stall::DEFAULT.stall_ticks
    } else {
        ticks
    };
    STALL_TICKS.store(t, Ordering::Release);
}

fn policy() -> Policy {
    Policy {
        stall_ticks: STALL_TICKS.load(Ordering::Acquire),
        ..rcu_stall::DEFAULT
    }
}

fn progress(p: &percpu::PerCpu) -> Progress {
    Progress {
        ticks: p.ticks(),
        nmis: exceptions::nmis_answered(p.id).0,
    }
}

fn progress_at_start(cpu: usize) -> Progress {
    Progress {
        ticks: GP_START_TICKS[cpu].load(Ordering::Acquire),
        nmis: GP_START_NMIS[cpu].load(Ordering::Acquire),
    }
}

/// A grace period began: where each CPU's own clock stands.
fn note_gp_start() {
    GP_STARTED_NS.store(time::now_ns(), Ordering::Release);
    for p in percpu::all() {
        let now = progress(p);
        GP_START_TICKS[p.id].store(now.ticks, Ordering::Release);
        GP_START_NMIS[p.id].store(now.nmis, Ordering::Release);
        PROBED_AT_TICKS[p.id].store(now.ticks, Ordering::Release);
    }
}

/// Longest grace period in wall time, and the most own ticks a CPU had
/// taken when it reported its quiescent state, since `reset_gp_ages`: what
/// a wall-clock detector and this one would each have seen.
static MAX_GP_WALL_NS: AtomicU64 = AtomicU64::new(0);
static MAX_QS_OWN_TICKS: AtomicU64 = AtomicU64::new(0);

pub fn reset_gp_ages() {
    MAX_GP_WALL_NS.store(0, Ordering::Release);
    MAX_QS_OWN_TICKS.store(0, Ordering::Release);
}

/// (longest grace period in ms of wall time, most own ticks a CPU owed one).
pub fn gp_ages() -> (u64, u64) {
    (
        MAX_GP_WALL_NS.load(Ordering::Acquire) / 1_000_000,
        MAX_QS_OWN_TICKS.load(Ordering::Acquire),
    )
}

/// The CPUs the last stall warning named: stuck with preemption off
/// (taking ticks), with interrupts off (answering only NMIs), or showing no
/// sign of running.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StallMasks {
    pub ticking: u64,
    pub irqs_off: u64,
    pub unresponsive: u64,
}

static LAST_STALL: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];

pub fn last_stall() -> StallMasks {
    StallMasks {
        ticking: LAST_STALL[0].load(Ordering::Acquire),
        irqs_off: LAST_STALL[1].load(Ordering::Acquire),
        unresponsive: LAST_STALL[2].load(Ordering::Acquire),
    }
}

/// NMI every CPU (but this one) whose tick has not moved since the last
/// probe: if it runs with interrupts off, it answers; if the host is not
/// running it, it does not, and gains no age.
fn probe(now: u64) {
    let last = LAST_PROBE_NS.load(Ordering::Acquire);
    if now.saturating_sub(last) < PROBE_EVERY_NS
        || LAST_PROBE_NS
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
    {
        return;
    }
    let me = percpu::this().id;
    for p in percpu::all().filter(|p| p.id != me) {
        let at = progress(p);
        if rcu_stall::should_probe(PROBED_AT_TICKS[p.id].load(Ordering::Acquire), at) {
            lapic::send_ipi(p.lapic_id, lapic::Delivery::Nmi);
        }
        PROBED_AT_TICKS[p.id].store(at.ticks, Ordering::Release);
    }
}

/// Linux's RCU CPU stall warning: a grace period some CPU has owed a
/// quiescent state for `stall_ticks` of its own ticks is reported once,
/// naming the CPUs it waits for and how each is stuck.
fn check_stall(seq: u64) {
    if STALL_WARNED.load(Ordering::Acquire) == seq || cfg!(defect = "stall-blind") {
        return;
    }
    let now = time::now_ns();
    let wall = now.saturating_sub(GP_STARTED_NS.load(Ordering::Acquire));
    if wall >= PROBE_AFTER_NS {
        probe(now);
    }
    let policy = policy();
    // A CPU that keeps taking its tick and has noted a quiescent state for
    // this grace period, or has `preempt_count` 0, passes one at each tick:
    // only the report is late (the tick's try-lock found the state busy,
    // its holder's vCPU not being run), however many ticks go by. (One that
    // takes no tick cannot report what it noted: that stays a stall.)
    let verdict = |p: &percpu::PerCpu| {
        let v = rcu_stall::judge(progress_at_start(p.id), progress(p), wall, &policy);
        let passed = matches!(v, CpuStall::Ticking { .. })
            && (NOTED[p.id].load(Ordering::Acquire) == seq || p.preempt_count() == 0);
        if passed {
            CpuStall::No
        } else {
            v
        }
    };
    // Without the lock: does any CPU look stalled at all?
    if !percpu::all().any(|p| verdict(p).is_stall()) {
        return;
    }
    let Some(g) = STATE.try_lock() else {
        return;
    };
    let Some(r) = g.as_ref() else {
        return;
    };
    if r.gp_seq() != seq || !r.gp_in_progress() {
        return;
    }
    let stalled = || {
        percpu::all()
            .filter(|p| r.needs_qs(p.id))
            .map(|p| (p, verdict(p)))
            .filter(|(_, v)| v.is_stall())
    };
    if stalled().next().is_none() || STALL_WARNED.swap(seq, Ordering::AcqRel) == seq {
        return;
    }
    let mut masks = StallMasks::default();
    for (p, v) in stalled() {
        let bit = 1u64 << p.id;
        match v {
            CpuStall::Ticking { .. } => masks.ticking |= bit,
            CpuStall::IrqsOff { .. } => masks.irqs_off |= bit,
            _ => masks.unresponsive |= bit,
        }
    }
    LAST_STALL[0].store(masks.ticking, Ordering::Release);
    LAST_STALL[1].store(masks.irqs_off, Ordering::Release);
    LAST_STALL[2].store(masks.unresponsive, Ordering::Release);
    // Counted only once the masks are out: whoever sees the count go up
    // (a staller waiting for its warning) reads this warning's masks. The
    // other way round, a host that paused this vCPU between the two left
    // `life.rcu_stall` reading all-zero masks (1 run in 20 beside two CPU
    // hogs).
    STALLS.fetch_add(1, Ordering::AcqRel);
    crate::console::report(|w| {
        let _ = writeln!(
            w,
            "rcu: INFO: rcu_sched detected stalls on CPUs (grace period {seq}, {} ms of wall time):",
            wall / 1_000_000
        );
        for (p, v) in stalled() {
            let start = progress_at_start(p.id);
            let at = progress(p);
            let (_, rip, irqs_on) = exceptions::nmis_answered(p.id);
            let _ = match v {
                CpuStall::Ticking { own_ticks } => writeln!(
                    w,
                    "rcu:   CPU {}: no quiescent state for {own_ticks} of its own ticks (preempt_count {}; last switch noted in grace period {})",
                    p.id,
                    p.preempt_count(),
                    NOTED[p.id].load(Ordering::Acquire)
                ),
                CpuStall::IrqsOff { nmis } => {
                    let found = crate::mm::layout::symbols().and_then(|t| t.lookup(rip));
                    let (sym, off) = found.map_or(("?", 0), |f| (f.name, f.offset));
                    writeln!(
                        w,
                        "rcu:   CPU {}: interrupts {}: {} ticks but {nmis} NMIs answered since the grace period began, the last at RIP {rip:016x} {sym}+{off:#x}",
                        p.id,
                        if irqs_on { "on" } else { "off" },
                        at.ticks - start.ticks
                    )
                }
                _ => writeln!(
                    w,
                    "rcu:   CPU {}: no tick and no NMI answered since the grace period began: unresponsive",
                    p.id
                ),
            };
        }
    });
}

/// Stall warnings printed since boot.
static STALLS: AtomicU64 = AtomicU64::new(0);

pub fn stalls() -> u64 {
    STALLS.load(Ordering::Acquire)
}

/// A read-side critical section: no quiescent state on this CPU until it
/// is dropped, so whatever it found under RCU stays allocated. Classic RCU:
/// it is a preemption-off section (the guard proves it), recorded on the
/// task's held-lock stack as `rcu_read_lock`.
pub struct ReadGuard {
    _preempt: PreemptGuard,
}

#[track_caller]
pub fn read_lock() -> ReadGuard {
    ReadGuard {
        _preempt: PreemptGuard::enter(HeldKind::RcuRead, "rcu_read_lock", Location::caller()),
    }
}

/// Run `f` after a grace period, on this CPU.
pub fn call_rcu(f: impl FnOnce() + Send + 'static) {
    let cpu = percpu::this().id;
    let queued = with(|r| r.call_rcu(cpu, Box::new(f)));
    assert!(queued.is_some(), "call_rcu before rcu::init");
}

/// Callbacks taken from the queue whose run has not finished.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// This CPU passed a quiescent state (the scheduler and the idle loop call
/// this): note it for the tick to report, and run whatever callbacks of
/// this CPU's a finished grace period made ready.
pub fn quiescent_state_and_run() {
    let cpu = percpu::this();
    if cpu.preempt_count() != 0 {
        return;
    }
    NOTED[cpu.id].store(GP_SEQ.load(Ordering::Acquire), Ordering::Release);
    if !READY[cpu.id].swap(false, Ordering::AcqRel) {
        return;
    }
    let done = with(|r| {
        let done: Vec<Callback> = r.take_done(cpu.id).collect();
        // Counted under the lock, so `rcu_barrier` never sees a batch that
        // is neither queued nor counted as running.
        IN_FLIGHT.fetch_add(done.len(), Ordering::AcqRel);
        done
    })
    .unwrap_or_default();
    // Preemption off around each, as in softirq, where Linux runs them:
    // `might_sleep` must see that nothing may sleep here even when a task
    // with interrupts on runs them (`synchronize_rcu`, `rcu_barrier`).
    // Each is recorded as an RCU callback section: a task caught inside
    // one cannot be killed, or the rest of the batch (and `rcu_barrier`'s
    // count of it) would be lost.
    #[cfg(not(defect = "rcu-callbacks-reversed"))]
    let batch = done.into_iter();
    // A deliberate defect (`runner --defect rcu-callbacks-reversed`): the
    // batch run from its end, as `while let Some(cb) = done.pop()` does:
    // the newest callback first.
    #[cfg(defect = "rcu-callbacks-reversed")]
    let batch = done.into_iter().rev();
    for cb in batch {
        let section =
            PreemptGuard::enter(HeldKind::RcuCallbacks, "rcu_callbacks", Location::caller());
        cb();
        drop(section);
        IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
    }
}

/// From the tick: report this CPU's quiescent state, either the tick's own
/// (it interrupted code outside any read-side section) or one a switch
/// noted during the grace period in progress. Callbacks stay queued; they
/// run at the next switch or idle, not in interrupt context.
pub fn tick() {
    let cpu = percpu::this();
    let seq = GP_SEQ.load(Ordering::Acquire);
    if seq == COMPLETED.load(Ordering::Acquire) {
        return;
    }
    check_stall(seq);
    // The defect "a grace period that ends early": the tick reports a
    // quiescent state even from inside a read-side section.
    let now = cpu.preempt_count() == 0 || cfg!(defect = "gp-early");
    let noted = NOTED[cpu.id].load(Ordering::Acquire);
    if !now && noted != seq {
        return;
    }
    // Another CPU may hold the lock with this one's tick pending: try
    // again at the next tick rather than spin in interrupt context.
    if let Some(mut g) = STATE.try_lock() {
        let reported = with_state(g.as_mut(), |r| {
            let owed = r.needs_qs(cpu.id);
            if now {
                r.quiescent_state(cpu.id);
                owed
            } else {
                r.noted_quiescent_state(cpu.id, noted)
            }
        });
        if reported == Some(true) {
            let age = rcu_stall::own_age(progress_at_start(cpu.id), progress(cpu), &policy());
            MAX_QS_OWN_TICKS.fetch_max(age, Ordering::AcqRel);
        }
    }
}

/// Wait until every callback queued (on any CPU) before this call has run.
pub fn rcu_barrier() {
    let Some(cookie) = with(|r| r.barrier_cookie()) else {
        return;
    };
    while !with(|r| r.barrier_done(cookie)).unwrap_or(true)
        || IN_FLIGHT.load(Ordering::Acquire) != 0
    {
        crate::task::yield_now();
        quiescent_state_and_run();
    }
}

/// Wait for a full grace period (yielding: each switch is a quiescent state
/// for this CPU).
pub fn synchronize_rcu() {
    let Some(target) = with(|r| r.wait_target()) else {
        return;
    };
    // The defect "a synchronize_rcu() that does not wait".
    if cfg!(defect = "sync-no-wait") {
        return;
    }
    while !with(|r| r.poll(target)).unwrap_or(true) {
        crate::task::yield_now();
        quiescent_state_and_run();
    }
}

/// Grace periods started so far (the number of the one in progress, if
/// any), read without the lock.
pub fn gp_seq() -> u64 {
    GP_SEQ.load(Ordering::Acquire)
}

/// Grace periods completed so far, read without the lock.
pub fn completed() -> u64 {
    COMPLETED.load(Ordering::Acquire)
}

/// Ask for a grace period that starts after this call (one starts even
/// with no callbacks queued); it has ended once `completed()` reaches the
/// value returned. `u64::MAX` before `init`.
pub fn request_grace_period() -> u64 {
    with(|r| r.wait_target()).unwrap_or(u64::MAX)
}

pub fn counters() -> Option<kcore::rcu::Counters> {
    with(|r| r.counters())
}
