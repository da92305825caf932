//! What a boot said and what it means. `classify` turns QEMU's exit and the
//! KTAP report into one verdict for the boot; `judge` gives each scenario
//! its result, and `evidence` what that result needs to be believed;
//! `lines` reads the guest's machine-readable fault lines; and `stack` and
//! `uaf` hold each caught fault's report against the ground truth the
//! guest announced beforehand and against the guest ELF; `usage` reads how
//! deep every task's stack went and the near misses, and judges the
//! scenarios made to show them.

pub mod classify;
pub mod compare;
pub mod decided_by;
pub mod evidence;
#[cfg(test)]
pub mod fixture;
pub mod judge;
pub mod lines;
pub mod oops;
pub mod recovery;
pub mod stack;
pub mod trace;
pub mod uaf;
pub mod usage;

use crate::symbols::{Symbolize, Symbols};
use serde::Serialize;

/// One thing a good diagnostic gets right.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    /// The scenario announced what it was about to break.
    Announced,
    /// Every report line for the scenario parses.
    Readable,
    /// `kind` (overflow/underflow/not-guard) says where the fault really is.
    Kind,
    /// The fault address lies in the reported guard range.
    FaultInGuard,
    /// The reported guard touches the reported stack and is as big as announced.
    GuardAdjacent,
    /// The reported stack bounds are the announced allocation.
    Bounds,
    Cpu,
    Task,
    /// The stack kind is the one the scenario overflows.
    StackKind,
    /// The backtrace (symbolized from the ELF) contains the expected function.
    Backtrace,
    /// depth × frame size is about the stack size, and the unwound stack
    /// holds as many frames of the recursing function as the depth says.
    Depth,
    /// As many reports as the scenario makes, all alike.
    Hits,
    /// `recovered` matches whether the scenario's boot can go on.
    Recovered,
    /// The bytes past the stack are the distance of the fault from the
    /// announced stack.
    Bytes,
    /// Every line of the human oops reads as the record renders it.
    OopsLine,
    /// Every `symbol+offset` the oops prints is the ELF symbol table's.
    Symbol,
    /// The guest's trace is the frame-pointer view of the runner's own
    /// unwind of the dumped stack, which ends where the stack does.
    Unwind,
    /// The context (task, exception, IRQ) is what the unwound stack shows.
    Context,
    /// Each frame's size on the Call Trace is its function's static frame
    /// (its prologue, from the ELF), and the recursing function's is the
    /// frame size the scenario measured.
    FrameSize,
    /// The LAPIC id read from the hardware at the fault (and at the
    /// announcement) is the one the boot listed for the CPU named.
    Lapic,
    /// Use after free: the object kind and owner are the announced ones.
    Object,
    /// Use after free: the fault is the announced address inside the announced object.
    FaultInObject,
    /// Use after free: read or write, as the scenario does.
    Access,
    /// Use after free: the owner's history tells its whole life, in an order
    /// the lifetime rules allow, oldest first.
    History,
    /// "Not caught" was seen to happen: damage found afterwards, the
    /// guest's own `not ok`, or the machine stopping (`evidence`).
    Witnessed,
    /// What decided the guard hit (CR2, or the interrupted RSP when CR2 is
    /// stale) is backed by the report's registers and the announced stack.
    DecidedBy,
    /// What the task held, and the exit policy's decision on it, are told
    /// (`TASK-STATE`) and fit each other and the scenario.
    TaskState,
    /// Stack usage: a task that went past the threshold is told as a near
    /// miss (`NEAR-MISS`, once, over the threshold, its announced stack),
    /// and one that did not is not.
    NearMiss,
    /// Stack usage: the near miss's deepest chain begins in the used part
    /// of the stack, at a return address the ELF places in the function
    /// the scenario recursed in.
    DeepestChain,
    /// Stack usage: the task's `STACK-USAGE` figure is there, whole, the
    /// share the scenario took it to, and the near miss's figure.
    StackUsage,
}

impl Check {
    pub fn name(self) -> &'static str {
        match self {
            Check::Announced => "announced",
            Check::Readable => "readable",
            Check::Kind => "kind",
            Check::FaultInGuard => "fault-in-guard",
            Check::GuardAdjacent => "guard-adjacent",
            Check::Bounds => "bounds",
            Check::Cpu => "cpu",
            Check::Task => "task",
            Check::StackKind => "stack-kind",
            Check::Backtrace => "backtrace",
            Check::Depth => "depth",
            Check::Hits => "hits",
            Check::Recovered => "recovered",
            Check::Bytes => "bytes",
            Check::OopsLine => "oops-line",
            Check::Symbol => "symbol",
            Check::Unwind => "unwind",
            Check::Context => "context",
            Check::FrameSize => "frame-size",
            Check::Lapic => "lapic",
            Check::Object => "object",
            Check::FaultInObject => "fault-in-object",
            Check::Access => "access",
            Check::History => "history",
            Check::Witnessed => "witnessed",
            Check::TaskState => "task-state",
            Check::DecidedBy => "decided-by",
            Check::NearMiss => "near-miss",
            Check::DeepestChain => "deepest-chain",
            Check::StackUsage => "stack-usage",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub check: Check,
    pub detail: String,
}

/// What the summary, JUnit and the exit status need from any fault verdict.
pub trait FaultVerdict {
    /// Caught as the scenario expects, and every check passed.
    fn as_expected(&self) -> bool;
    /// One phrase for the summary line.
    fn describe(&self) -> String;
    /// A short class name (`caught-good`, `not-caught`...).
    fn category_str(&self) -> &'static str;
    fn failures(&self) -> &[Failure];
}

/// A record's backtrace as bare return addresses, every frame once.
pub fn return_addresses(frames: &[abi::guard::Frame]) -> Vec<u64> {
    abi::guard::unfold(frames).map(|(a, _)| a).collect()
}

/// Every function the faulting RIP and the backtrace lie in, without repeats,
/// innermost first.
pub fn functions_near(symbols: &dyn Symbolize, rip: u64, backtrace: &[u64]) -> Vec<String> {
    // Return addresses point after the call: look up the call itself.
    let addrs = std::iter::once(rip).chain(backtrace.iter().map(|a| a.saturating_sub(1)));
    let mut names: Vec<String> = Vec::new();
    for addr in addrs {
        for name in symbols.functions(addr) {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

/// Give every fault scenario of a boot its verdicts, from the boot's serial log.
pub fn attach(
    results: &mut [judge::ScenarioResult],
    serial: &str,
    smp: u32,
    symbols: Option<&Symbols>,
) {
    let events = lines::parse(serial);
    let held = recovery::parse(serial);
    let usage = usage::parse(serial);
    let elf = symbols;
    let symbols = symbols.map(|s| s as &dyn Symbolize);
    for r in results.iter_mut() {
        r.usage = usage::of_scenario(r.scenario.name, &usage, symbols);
        // A skipped scenario (stack.ap on one CPU) broke nothing.
        if r.skipped {
            continue;
        }
        if let Some(expect) = &r.scenario.guard {
            r.guard = Some(stack::judge(
                r.scenario,
                expect,
                smp,
                &events,
                &r.diagnostics,
                symbols,
            ));
        }
        if let Some(expect) = &r.scenario.uaf {
            r.uaf = Some(uaf::judge(r.scenario, expect, &events, symbols));
        }
        if let Some(expect) = abi::usage::expect(r.scenario.name) {
            r.usage_verdict = Some(usage::judge(
                expect,
                &events,
                &usage,
                r.usage.as_ref(),
                symbols,
            ));
        }
        recovery_hook(r, &events, &held);
        r.site = site(r.scenario.name, &events, elf);
    }
}

/// How many lines of the oops a fault site keeps: the `BUG:` line, the
/// `Oops:` line and the registers up to the start of the trace.
const OOPS_LINES: usize = 8;

/// Where the scenario's first caught fault (a guard hit, else a use after
/// free) was: its code by DWARF, the opening of its oops as printed.
fn site(
    scenario: &str,
    events: &lines::Events,
    symbols: Option<&Symbols>,
) -> Option<judge::FaultSite> {
    let (rip, trace, oops) = match events.hits_of(scenario).next() {
        Some(hit) => (
            hit.rip.0,
            return_addresses(&hit.backtrace),
            oops::block(&events.lines, hit.line)
                .unwrap_or_default()
                .into_iter()
                .take(OOPS_LINES)
                .map(|(_, l)| l.to_string())
                .collect(),
        ),
        None => {
            let hit = events.uaf_hits_of(scenario).next()?;
            (hit.rip.0, return_addresses(&hit.backtrace), Vec::new())
        }
    };
    // Return addresses point after the call: look up the call itself.
    let addrs = std::iter::once(rip).chain(trace.iter().map(|a| a.saturating_sub(1)));
    let location = symbols.and_then(|s| {
        addrs
            .flat_map(|a| s.frames(a))
            .filter_map(|f| f.location)
            .find(|l| !l.starts_with('/'))
    });
    Some(judge::FaultSite { location, oops })
}

/// Every fault report's claim about its task, held against the recovery
/// records (`recovery`), and its claim of what decided the hit
/// (`decided_by`): the failures join the fault's verdict.
fn recovery_hook(r: &mut judge::ScenarioResult, events: &lines::Events, held: &recovery::Records) {
    let name = r.scenario.name;
    if let Some(g) = r.guard.as_mut() {
        let claims: Vec<_> = events
            .hits_of(name)
            .map(|h| recovery::Claim {
                task_id: h.task_id,
                recovered: h.recovered,
            })
            .collect();
        let found = recovery::judge(r.scenario, &claims, g.suppressed, held);
        g.failures.extend(found);
        g.failures.extend(decided_by::judge(name, events));
    }
    if let Some(u) = r.uaf.as_mut() {
        let claims: Vec<_> = events
            .uaf_hits_of(name)
            .map(|h| recovery::Claim {
                task_id: h.task_id,
                recovered: h.recovered,
            })
            .collect();
        u.failures
            .extend(recovery::judge(r.scenario, &claims, 0, held));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi::guard::Verdict;

    fn result_of(name: &str, skipped: bool) -> judge::ScenarioResult {
        let scenario = abi::scenario::find(name).expect("in the catalog");
        judge::ScenarioResult {
            scenario,
            outcome: scenario.expect,
            skipped,
            diagnostics: Vec::new(),
            ended_the_boot: false,
            guard: None,
            uaf: None,
            todo: None,
            objections: Vec::new(),
            site: None,
            usage: None,
            usage_verdict: None,
        }
    }

    fn checks(failures: &[Failure]) -> Vec<&'static str> {
        failures.iter().map(|f| f.check.name()).collect()
    }

    // What the captured boot (older than the recovery records) lacks for
    // stack.recursion's recovered kill of task 3.
    const RECURSION_RECOVERED: &str = concat!(
        r#"TASK-STATE {"scenario":"stack.recursion","cpu":0,"task_id":3,"task_name":"recurse","preempt_count":0,"preempt":0,"rcu":0,"rcu_callbacks":0,"irq_nesting":0,"irqs_enabled":true,"locks":0,"held":[],"lost":0,"decision":"kill","stop":null,"stopped_by":null,"reset_preempt":0,"reset_rcu":0,"reset_irqs":false}"#,
        "\n",
        r#"RECOVERY {"scenario":"stack.recursion","task_id":3,"cpu":0,"kill":1,"preempt_count":0,"in_service":0,"held_left":0,"locks_left":0,"incomplete":false,"ticks_at_kill":5,"ticks_after":7,"gp_at_kill":2,"gp_completed":3,"waited_us":3427}"#,
        "\n",
        r#"RECOVERY-TALLY {"scenario":"stack.recursion","kills":1,"proven":1,"pending":0}"#,
        "\n",
    );

    #[test]
    fn attach_judges_each_fault_scenario_and_holds_it_to_the_recovery_records() {
        let boot = || {
            vec![
                result_of("stack.recursion", false),
                result_of("stack.underflow", true),
                result_of("boot.smoke", false),
            ]
        };
        let serial = format!("{}{RECURSION_RECOVERED}", fixture::STACK);
        let mut results = boot();
        attach(&mut results, &serial, 1, None);
        let g = results[0].guard.as_ref().expect("a stack verdict");
        assert_eq!((g.observed, g.hits), (Verdict::Overflow, 1));
        assert!(results[0].uaf.is_none());
        // No ELF was given: only the checks that need it fail.
        assert!(
            checks(&g.failures).iter().all(|c| *c == "backtrace"),
            "{:?}",
            g.failures
        );
        assert!(
            results[1].guard.is_none(),
            "a skipped scenario broke nothing"
        );
        assert!(results[2].guard.is_none() && results[2].uaf.is_none());

        // Without its recovery records, the claim `recovered: true` is unproven.
        let mut results = boot();
        attach(&mut results, fixture::STACK, 1, None);
        let failed = checks(&results[0].guard.as_ref().unwrap().failures);
        assert!(failed.contains(&"task-state"), "{failed:?}");
        assert!(failed.contains(&"recovered"), "{failed:?}");

        // What decided the hit is held to the record too.
        let tampered = fixture::Log::of(&serial)
            .hit("stack.recursion", |h| h["cr2"] = "0x1000".into())
            .text();
        let mut results = boot();
        attach(&mut results, &tampered, 1, None);
        let failed = checks(&results[0].guard.as_ref().unwrap().failures);
        assert!(failed.contains(&"decided-by"), "{failed:?}");
    }

    #[test]
    fn attach_judges_a_use_after_free_and_its_recovery() {
        let serial = format!(
            "{}\nBUG: KFENCE\n{}\nok 1 life.uaf\n",
            lines::tests::UAF_ARMED,
            lines::tests::UAF_HIT
        );
        let mut results = vec![result_of("life.uaf", false)];
        attach(&mut results, &serial, 1, None);
        let u = results[0].uaf.as_ref().expect("a use-after-free verdict");
        assert!(u.caught && results[0].guard.is_none());
        // The hit claims task 7 recovered; nothing in this log proves it.
        let failed = checks(&u.failures);
        assert!(failed.contains(&"task-state"), "{failed:?}");
        assert!(failed.contains(&"recovered"), "{failed:?}");
    }
}
