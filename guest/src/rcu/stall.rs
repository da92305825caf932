//! The stall detector: a grace period that waits too long on a CPU gets
//! one warning naming the CPU and what it is doing (interrupts off, or just
//! not reporting), judged in that CPU's own ticks and NMI answers
//! (`kcore::rcu_stall`), never in wall time.
use super::{NOTED, STATE};
use crate::arch::x86_64::{exceptions, lapic, percpu, time};
use core::fmt::Write;
use core::sync::atomic::{AtomicU64, Ordering};
use kcore::rcu_stall::{self, CpuStall, Policy, Progress};

/// When the grace period in progress started, and the last one a stall
/// warning was printed for.
pub(super) static GP_STARTED_NS: AtomicU64 = AtomicU64::new(0);
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

pub(super) fn policy() -> Policy {
    Policy {
        stall_ticks: STALL_TICKS.load(Ordering::Acquire),
        ..rcu_stall::DEFAULT
    }
}

pub(super) fn progress(p: &percpu::PerCpu) -> Progress {
    Progress {
        ticks: p.ticks(),
        nmis: exceptions::nmis_answered(p.id).0,
    }
}

pub(super) fn progress_at_start(cpu: usize) -> Progress {
    Progress {
        ticks: GP_START_TICKS[cpu].load(Ordering::Acquire),
        nmis: GP_START_NMIS[cpu].load(Ordering::Acquire),
    }
}

/// A grace period began: where each CPU's own clock stands.
pub(super) fn note_gp_start() {
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
pub(super) static MAX_GP_WALL_NS: AtomicU64 = AtomicU64::new(0);
pub(super) static MAX_QS_OWN_TICKS: AtomicU64 = AtomicU64::new(0);

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
pub(super) fn check_stall(seq: u64) {
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
