//! Running the scenarios the command line names, and reporting them as KTAP.
//!
//! Each scenario is a function that records checks; a scenario passes when
//! none of its checks failed. Names and expectations come from `abi`, which
//! the runner reads too.
mod atomic;
mod bench;
mod boot;
mod conformance;
mod kernel;
mod life;
mod life_mech;
mod life_mm;
mod selftest;
mod stack;
mod usage;
pub mod workload;

use crate::arch::x86_64::sabotage::License;
use crate::boot::BootInfo;
use crate::{ktap, mm};
use abi::GuestExit;
use core::fmt;

type ScenarioFn = fn(&BootInfo, &mut Checks);

/// Implementations by name. A name in `abi::SCENARIOS` missing here is
/// reported as `not ok` with the reason, never silently skipped.
const IMPLEMENTED: &[(&str, ScenarioFn)] = &[
    ("boot.smoke", boot::smoke),
    ("boot.conformance", conformance::conformance),
    ("core.spawn_join", kernel::spawn_join),
    ("core.preempt", kernel::preempt),
    ("core.leak", kernel::leak),
    ("core.shootdown", kernel::shootdown),
    ("core.current", kernel::current),
    ("core.guard_layout", kernel::guard_layout),
    ("bench.spawn", bench::spawn),
    ("bench.fork_heavy", bench::fork_heavy),
    ("stack.recursion", stack::recursion),
    ("stack.large_frame", stack::large_frame),
    ("stack.probe_skip", stack::probe_skip),
    ("stack.underflow", stack::underflow),
    ("stack.exception", stack::exception),
    ("stack.direct_legacy", stack::direct_legacy),
    ("stack.ap", stack::ap),
    ("stack.all_cpus", stack::all_cpus),
    ("stack.irqs_off", stack::irqs_off),
    ("stack.repeat", stack::repeat),
    ("stack.nmi_in_df", stack::nmi_in_df),
    ("stack.irq_frame", stack::irq_frame),
    ("stack.irq_entry", stack::irq_entry),
    ("stack.irq_exit", stack::irq_exit),
    ("stack.irq", stack::irq),
    ("stack.df_overflow", stack::df_overflow),
    ("life.rcu_reader", life::rcu_reader),
    ("life.stack_before_gp", life::stack_before_gp),
    ("life.refcount", life::refcount),
    ("life.mm_refs", life_mm::mm_refs),
    ("life.uaf", life::uaf),
    ("life.stress", life::stress),
    ("selftest.hang", selftest::hang),
    ("selftest.triple_fault", selftest::triple_fault),
    ("selftest.panic", selftest::panic),
    ("selftest.bad_ktap", selftest::bad_ktap),
    ("selftest.fail", selftest::fail),
    ("stack.in_rcu", atomic::in_rcu),
    ("stack.preempt_off", atomic::preempt_off),
    ("stack.nested_atomic", atomic::nested_atomic),
    ("stack.lock_held", atomic::lock_held),
    ("stack.irqlock_held", atomic::irqlock_held),
    ("stack.irqs_section", atomic::irqs_section),
    ("stack.rcu_callback", atomic::rcu_callback),
    (
        "stack.rcu_callback_preempted",
        atomic::rcu_callback_preempted,
    ),
    ("life.rcu_gp", life_mech::rcu_gp),
    ("life.rcu_sync", life_mech::rcu_sync),
    ("stack.near_miss", usage::near_miss),
    ("stack.half_used", usage::half_used),
    ("life.stack_cache", life_mech::stack_cache),
    ("life.rcu_stall", life_mech::rcu_stall),
];

/// The checks of one scenario, printed as KTAP diagnostics as they happen.
pub struct Checks {
    scenario: &'static str,
    failed: usize,
    skipped: Option<&'static str>,
}

impl Checks {
    /// The scenario these checks belong to (records name it).
    pub fn scenario(&self) -> &'static str {
        self.scenario
    }

    /// Record one check; prints `# ok: ...` or `# FAIL: ...`.
    pub fn check(&mut self, ok: bool, what: fmt::Arguments) -> bool {
        ktap::diag(format_args!("{} {what}", if ok { "ok:" } else { "FAIL:" }));
        if !ok {
            self.failed += 1;
        }
        ok
    }

    /// The scenario cannot run in this configuration (e.g. too few CPUs).
    pub fn skip(&mut self, reason: &'static str) {
        self.skipped = Some(reason);
    }

    /// A fact worth seeing in the report, not a check.
    pub fn info(&self, what: fmt::Arguments) {
        ktap::diag(what);
    }

    /// The leak check: every allocator's counters (`counters_now`) equal
    /// `before`; on a mismatch both snapshots are printed.
    pub fn back_to_baseline(
        &mut self,
        before: &mm::Snapshot,
        ok_too: bool,
        what: fmt::Arguments,
    ) -> bool {
        let after = counters_now();
        if after != *before {
            self.info(format_args!("before {before:?}"));
            self.info(format_args!("after  {after:?}"));
        }
        self.check(after == *before && ok_too, what)
    }
}

/// Every allocator's counters, per-CPU stack caches drained first: cached
/// stacks are not leaks, but they are not baseline either.
pub fn counters_now() -> mm::Snapshot {
    mm::stack::drain_caches();
    mm::snapshot()
}

/// Every task the scenario's faults killed must have been proven
/// recovered (`task::recovery`): the guest's own check, beside the
/// runner's reading of the `RECOVERY` records.
fn recovery_proven(c: &mut Checks) {
    let (kills, proven, pending) = crate::task::recovery::end_of_scenario(c.scenario);
    if kills > 0 {
        c.check(
            proven == kills,
            format_args!(
                "recovery proven after {proven} of {kills} kills ({pending} still pending)"
            ),
        );
    }
}

/// Run the scenarios named on the command line, in order, and return the
/// exit code for the whole report.
/// The scenarios' permission to corrupt memory on purpose, granted by
/// `kernel_main` (`arch::x86_64::sabotage::License`).
static LICENSE: spin::Once<License> = spin::Once::new();

fn license() -> &'static License {
    LICENSE
        .get()
        .expect("the scenarios run only after kernel_main granted their license")
}

pub fn run_requested(boot: &BootInfo, license: License) -> GuestExit {
    LICENSE.call_once(|| license);
    let names = || abi::cmdline::scenarios(boot.cmdline);
    ktap::header(names().count());
    match boot.mp {
        Some(mp) => crate::oops::announce_cpus(crate::boot::mp::lapic_ids(mp)),
        None => crate::oops::announce_cpus(core::iter::once(crate::arch::x86_64::cpu::apic_id())),
    }
    if names().count() == 0 {
        ktap::diag(format_args!(
            "no scenarios requested: pass `{}=name,...` on the command line (got {:?})",
            abi::cmdline::SCENARIOS,
            boot.cmdline
        ));
    }
    let mut all_ok = true;
    for (i, name) in names().enumerate() {
        let number = i + 1;
        let Some(&(scenario, run)) = IMPLEMENTED.iter().find(|(n, _)| *n == name) else {
            let why = if abi::scenario::find(name).is_some() {
                "listed in the catalog but not implemented by this guest"
            } else {
                "unknown scenario"
            };
            ktap::diag(format_args!("FAIL: {name}: {why}"));
            ktap::result(number, name, false);
            all_ok = false;
            continue;
        };
        crate::oops::set_scenario(name);
        crate::task::usage::begin_scenario(scenario);
        let mut checks = Checks {
            scenario,
            failed: 0,
            skipped: None,
        };
        let start = crate::arch::x86_64::time::now_ns();
        run(boot, &mut checks);
        recovery_proven(&mut checks);
        crate::task::usage::end_of_scenario(scenario);
        let took = crate::arch::x86_64::time::now_ns().saturating_sub(start);
        ktap::diag(format_args!("{}", abi::timing::ScenarioTime::from_ns(took)));
        let ok = checks.failed == 0;
        match checks.skipped {
            Some(reason) if ok => ktap::skip(number, name, reason),
            _ => ktap::result(number, name, ok),
        }
        all_ok &= ok;
    }
    verdict(all_ok)
}

/// The verdict for a KTAP report: `Pass` only if every result was `ok`.
const fn verdict(all_ok: bool) -> GuestExit {
    if all_ok {
        GuestExit::Pass
    } else {
        GuestExit::Fail
    }
}
