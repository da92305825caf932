//! Is a grace period stalled, or is a vCPU just not being run?
//!
//! A grace period waits for every CPU to pass a quiescent state. Measured
//! in wall time, a CPU that owes one looks stalled whenever the host does
//! not run its vCPU thread for a while (CI machines are loaded; a 2 s
//! detector fired on a starved vCPU here). So the age that counts is the
//! CPU's own: how many of its own ticks it has taken since the grace period
//! began while still owing the quiescent state. A CPU spinning with
//! preemption off keeps taking ticks and ages; a starved vCPU takes none
//! and does not. A CPU spinning with interrupts off takes no ticks either,
//! but it does answer NMIs (which interrupts-off does not block) at once,
//! where a starved vCPU answers none until it runs again: so other CPUs
//! probe a CPU whose tick has stopped with an NMI now and then, and each
//! answer counts for the ticks the probe period would have brought. A CPU
//! that shows no sign of running at all for a long wall-time stretch
//! (minutes of starvation do not happen; a dead CPU does) is reported too.
//! This is the judgement alone, plain data in and out; the guest's RCU
//! feeds it counters.

/// A CPU's evidence of running: its tick count, and the NMIs it answered
/// with interrupts off and no tick taken since the NMI before (a stuck CPU
/// answers every probe so; one the host only did not run answers at most
/// one, then takes its pending tick).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Progress {
    pub ticks: u64,
    pub nmis: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Policy {
    /// Own ticks (or their NMI equivalent) owing a quiescent state that
    /// make a stall.
    pub stall_ticks: u64,
    /// Ticks one answered NMI stands for (the probe period, in ticks).
    pub nmi_weight: u64,
    /// Wall time with no sign of running at all after which the CPU is
    /// reported as unresponsive.
    pub unresponsive_ns: u64,
}

/// 250 Hz: 500 own ticks are 2 s of that CPU's own time (Linux's default
/// is 21 s; grace periods here last a few ms); one NMI probe per 100 ms; a
/// minute without a sign of life.
pub const DEFAULT: Policy = Policy {
    stall_ticks: 500,
    nmi_weight: 25,
    unresponsive_ns: 60_000_000_000,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CpuStall {
    /// Not (yet) a stall: the CPU may only be slow to be run.
    No,
    /// It keeps taking its tick but passes no quiescent state (preemption
    /// off: a read-side section or `preempt_disable` that does not end).
    Ticking { own_ticks: u64 },
    /// It takes no tick but answers NMIs: interrupts off.
    IrqsOff { nmis: u64 },
    /// No tick and no NMI answered for `unresponsive_ns`.
    Unresponsive,
}

impl CpuStall {
    pub fn is_stall(self) -> bool {
        self != CpuStall::No
    }
}

/// The CPU's own age in ticks since `start`.
pub fn own_age(start: Progress, now: Progress, p: &Policy) -> u64 {
    let ticks = now.ticks.saturating_sub(start.ticks);
    let nmis = now.nmis.saturating_sub(start.nmis);
    ticks.saturating_add(nmis.saturating_mul(p.nmi_weight))
}

/// Judge one CPU that still owes the grace period begun `wall_ns` ago
/// (when it was at `start`) a quiescent state.
pub fn judge(start: Progress, now: Progress, wall_ns: u64, p: &Policy) -> CpuStall {
    let ticks = now.ticks.saturating_sub(start.ticks);
    let nmis = now.nmis.saturating_sub(start.nmis);
    if ticks >= p.stall_ticks {
        CpuStall::Ticking { own_ticks: ticks }
    } else if own_age(start, now, p) >= p.stall_ticks {
        CpuStall::IrqsOff { nmis }
    } else if ticks == 0 && nmis == 0 && wall_ns >= p.unresponsive_ns {
        CpuStall::Unresponsive
    } else {
        CpuStall::No
    }
}

/// Whether to probe a CPU that owes the quiescent state with an NMI: its
/// tick has not moved since the last probe (or since the grace period
/// began), so either it runs with interrupts off or it is not being run.
pub fn should_probe(ticks_at_last_probe: u64, now: Progress) -> bool {
    now.ticks == ticks_at_last_probe
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Policy = Policy {
        stall_ticks: 100,
        nmi_weight: 25,
        unresponsive_ns: 10_000_000_000,
    };

    fn at(ticks: u64, nmis: u64) -> Progress {
        Progress { ticks, nmis }
    }

    #[test]
    fn a_starved_vcpu_is_no_stall_however_long_the_wall_clock() {
        let start = at(1000, 5);
        assert_eq!(judge(start, start, 9_999_999_999, &P), CpuStall::No);
        // It ran a little: a few ticks, one NMI answered late.
        assert_eq!(judge(start, at(1003, 6), 9_000_000_000, &P), CpuStall::No);
    }

    #[test]
    fn own_ticks_and_nmi_answers_make_the_stall() {
        let start = at(1000, 5);
        assert_eq!(judge(start, at(1099, 5), 0, &P), CpuStall::No);
        assert_eq!(
            judge(start, at(1100, 5), 0, &P),
            CpuStall::Ticking { own_ticks: 100 }
        );
        assert_eq!(
            judge(start, at(1000, 9), 0, &P),
            CpuStall::IrqsOff { nmis: 4 }
        );
        assert_eq!(
            judge(start, start, 10_000_000_000, &P),
            CpuStall::Unresponsive
        );
        assert!(should_probe(1000, start) && !should_probe(999, start));
    }

    #[test]
    fn only_no_is_no_stall() {
        assert!(!CpuStall::No.is_stall());
        for stall in [
            CpuStall::Ticking { own_ticks: 100 },
            CpuStall::IrqsOff { nmis: 4 },
            CpuStall::Unresponsive,
        ] {
            assert!(stall.is_stall(), "{stall:?}");
        }
    }
}
