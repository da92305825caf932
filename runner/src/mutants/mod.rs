//! `runner mutants [NAME...]` (`make mutants`): the mutation suite. Each
//! deliberate defect of `defects::DEFECTS` is built into a guest of its own
//! and booted on the scenarios the catalogue names for it; it is KILLED only
//! if its scenario, which the normal guest passes in the same run, fails,
//! and fails by what the catalogue says must catch it (the named check of
//! the runner, or the guest's own `not ok`). Anything else is a check that
//! was never shown to work, so it SURVIVES and the run fails.
//!
//! The normal guest boots each distinct plan once (most oops defects share
//! `stack.*`), before any defect: a baseline that already fails makes the
//! defect's result say nothing, and is reported as that, not as a kill.

mod output;
mod verdict;

use output::{table, write_json, Document, Row};
use verdict::passed;
pub use verdict::{caught_name, decide, Fate, Seen};

use crate::cli::{Accel, Options};
use crate::defects::{Defect, DEFECTS};
use crate::fatal::Fatal;
use crate::record::{BootRecord, Mode};
use crate::select;
use crate::session;
use crate::status;
use abi::Scenario;
use std::time::Instant;

/// What to boot for one defect: its scenarios, at one CPU count.
#[derive(Clone, Debug)]
struct Plan {
    scenarios: Vec<&'static Scenario>,
    smp: u32,
}

/// Two plans that boot the same scenarios at the same CPU count share the
/// normal guest's boots.
impl PartialEq for Plan {
    fn eq(&self, other: &Plan) -> bool {
        let names = |p: &Plan| p.scenarios.iter().map(|s| s.name).collect::<Vec<_>>();
        self.smp == other.smp && names(self) == names(other)
    }
}

/// The catalogue's `run` patterns (its `scenario` alone if there are none),
/// at `--smp`, the defect's own CPU count, or the first CPU count `runner
/// test` gives the scenario.
fn plan(d: &Defect, options: &Options) -> Result<Plan, Fatal> {
    let patterns: Vec<String> = match d.run {
        [] => vec![d.scenario.to_string()],
        run => run.iter().map(|p| p.to_string()).collect(),
    };
    let broken =
        |why: String| Fatal::setup(format!("defect {}: {why} (runner/src/defects.rs)", d.name));
    let scenarios = select::by_patterns(abi::SCENARIOS, &patterns).map_err(broken)?;
    let decisive = abi::scenario::find(d.scenario)
        .ok_or_else(|| broken(format!("no scenario {}", d.scenario)))?;
    if !scenarios.iter().any(|s| s.name == decisive.name) {
        return Err(broken(format!(
            "its run patterns do not boot {}",
            d.scenario
        )));
    }
    let smp = options
        .smp
        .or(d.smp)
        .unwrap_or_else(|| decisive.test_smp.first().copied().unwrap_or(1));
    Ok(Plan { scenarios, smp })
}

/// The defects `names` asks for (all if none), in catalogue order.
fn chosen(names: &[String]) -> Result<Vec<&'static Defect>, Fatal> {
    if let Some(bad) = names.iter().find(|n| crate::defects::find(n).is_none()) {
        let valid: Vec<&str> = DEFECTS.iter().map(|d| d.name).collect();
        return Err(Fatal::usage(format!(
            "no defect named `{bad}`; valid names: {}",
            valid.join(", ")
        )));
    }
    Ok(DEFECTS
        .iter()
        .filter(|d| names.is_empty() || names.iter().any(|n| n == d.name))
        .collect())
}

pub fn execute(names: &[String], options: &Options) -> Result<i32, Fatal> {
    if options.defect.is_some() {
        return Err(Fatal::usage(
            "mutants builds each defect itself: drop --defect (name defects as arguments)",
        ));
    }
    if options.junit.is_some() {
        return Err(Fatal::usage(
            "mutants writes no JUnit: drop --junit (--json has every result)",
        ));
    }
    if options.github_summary.is_some() || options.github_annotations {
        return Err(Fatal::usage(
            "mutants writes no GitHub summary or annotations: drop --github-* (--json has every result)",
        ));
    }
    let mut planned = Vec::new();
    for d in chosen(names)? {
        planned.push((d, plan(d, options)?));
    }
    let started = Instant::now();
    let (baseline, baseline_dir) = boot_baseline(&planned, options)?;
    let baseline_s = started.elapsed().as_secs_f64();
    let mut rows = Vec::new();
    let mut fine = true;
    for (d, p) in &planned {
        let (fate, row) = try_defect(d, p, &baseline, options);
        eprintln!("runner:   {} {}", d.name, fate.as_str());
        fine &= fate.fine();
        rows.push(row);
    }
    let code = if fine {
        status::OK
    } else {
        status::TEST_FAILURE
    };
    let count = |fate: &str| rows.iter().filter(|r| r.fate == fate).count();
    let document = Document {
        schema_version: output::SCHEMA_VERSION,
        runner_version: crate::output::RUNNER_VERSION,
        command: "mutants",
        accel: match options.accel {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        },
        baseline_s,
        baseline_run_dir: baseline_dir,
        defects: &rows,
        killed: count("KILLED"),
        survived: count("SURVIVED"),
        skipped: count("SKIPPED"),
        exit_status: code,
    };
    // The file first: the console may be a pipe that is already closed.
    let written = match &options.json {
        Some(path) => write_json(path, &document),
        None => Ok(()),
    };
    for line in table(&rows) {
        println!("{line}");
    }
    println!(
        "mutants: {} killed, {} survived, {} skipped, {} without a baseline (normal guest: {:.1}s, {})",
        document.killed,
        document.survived,
        document.skipped,
        count("NO BASELINE"),
        baseline_s,
        document.baseline_run_dir
    );
    written?;
    Ok(code)
}

/// Whether this run can boot the case `d` breaks.
fn runs_here(d: &Defect, options: &Options) -> bool {
    !d.kvm_only || options.accel == Accel::Kvm
}

/// The normal guest's boots of one plan.
type Baseline<'p> = (&'p Plan, Vec<BootRecord>);

/// The normal guest on each distinct plan, once: the records of each, and
/// the run directory.
fn boot_baseline<'p>(
    planned: &'p [(&'static Defect, Plan)],
    options: &Options,
) -> Result<(Vec<Baseline<'p>>, String), Fatal> {
    let mut plans: Vec<&Plan> = Vec::new();
    for (_, p) in planned.iter().filter(|(d, _)| runs_here(d, options)) {
        if !plans.contains(&p) {
            plans.push(p);
        }
    }
    eprintln!(
        "runner: mutants: the normal guest first ({} plan(s))",
        plans.len()
    );
    let setup = session::setup(options, &[options.boot])?;
    let mut baseline = Vec::new();
    for (i, p) in plans.into_iter().enumerate() {
        let boots = baseline_boots(i, p, options);
        let records = session::boot_all(Mode::Test, &setup, boots, options)?;
        baseline.push((p, records));
    }
    Ok((baseline, setup.run_dir.display().to_string()))
}

/// Build and boot one defect and decide its fate.
fn try_defect(
    d: &'static Defect,
    p: &Plan,
    baseline: &[Baseline],
    options: &Options,
) -> (Fate, Row) {
    let started = Instant::now();
    let mut run_dir = None;
    let mut seen = None;
    let fate = if !runs_here(d, options) {
        Fate::Skipped("the case it breaks exists only under KVM: run with --accel kvm".into())
    } else {
        eprintln!("runner: mutants: defect {}", d.name);
        let normal = baseline.iter().find(|(b, _)| *b == p).map_or_else(
            || Err("no baseline boot".into()),
            |(_, r)| passed(r, d.scenario),
        );
        let got = boot_defect(d, p, options).and_then(|(dir, records)| {
            run_dir = Some(dir);
            records
                .iter()
                .find_map(|r| {
                    let result = r.results.iter().find(|s| s.scenario.name == d.scenario)?;
                    Some(Seen::of(r, result, d.caught))
                })
                .ok_or_else(|| format!("{} got no result", d.scenario))
        });
        let fate = decide(d.caught, normal, got.as_ref().map_err(Clone::clone));
        seen = got.ok();
        fate
    };
    let row = Row {
        defect: d.name,
        what: d.what,
        scenarios: p.scenarios.iter().map(|s| s.name).collect(),
        smp: p.smp,
        scenario: d.scenario,
        expected: caught_name(d.caught),
        fate: fate.as_str(),
        why: fate.why().map(str::to_string),
        caught_by: seen.as_ref().map(Seen::caught_by).unwrap_or_default(),
        said: seen.map(|s| s.said).unwrap_or_default(),
        duration_s: started.elapsed().as_secs_f64(),
        run_dir,
    };
    (fate, row)
}

/// The normal guest's boots of plan `i`. Every plan boots in one run
/// directory, so each plan's boots are named apart (`planN-`): else the
/// second plan's serial log would overwrite the first's.
fn baseline_boots(i: usize, p: &Plan, options: &Options) -> Vec<select::Boot> {
    let mut boots = boots(p, options);
    for boot in &mut boots {
        boot.name = format!("plan{}-{}", i + 1, boot.name);
    }
    boots
}

fn boots(p: &Plan, options: &Options) -> Vec<select::Boot> {
    let wanted: Vec<(&'static Scenario, u32)> = p.scenarios.iter().map(|&s| (s, p.smp)).collect();
    select::boots(options.boot, &wanted)
}

/// Build the defect's guest and boot its plan: the run directory and the
/// records, or why it could not.
fn boot_defect(
    d: &'static Defect,
    p: &Plan,
    options: &Options,
) -> Result<(String, Vec<BootRecord>), String> {
    let options = Options {
        defect: Some(d),
        ..options.clone()
    };
    let setup = session::setup(&options, &[options.boot]).map_err(|f| f.to_string())?;
    let records = session::boot_all(Mode::Test, &setup, boots(p, &options), &options)
        .map_err(|f| f.to_string())?;
    Ok((setup.run_dir.display().to_string(), records))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defects::Caught;
    use crate::output::summary::Mark;
    use crate::report::Check;
    use abi::Outcome;

    fn seen(mark: Mark, outcome: Outcome, checks: &[Check]) -> Seen {
        Seen {
            mark,
            outcome,
            expect: Outcome::Pass,
            failed_checks: checks.to_vec(),
            objections: 0,
            wrong_verdict: None,
            said: Vec::new(),
        }
    }

    const SYMBOL: Caught = Caught::Check(Check::Symbol);

    #[test]
    fn killed_only_by_what_must_catch_it() {
        let by_symbol = seen(Mark::Failed, Outcome::Pass, &[Check::Symbol]);
        assert_eq!(decide(SYMBOL, Ok(()), Ok(&by_symbol)), Fate::Killed);
        let by_guest = seen(Mark::Failed, Outcome::Fail, &[]);
        assert_eq!(decide(Caught::Guest, Ok(()), Ok(&by_guest)), Fate::Killed);
        // The guest failing it is not the runner's check failing it.
        assert_eq!(
            decide(SYMBOL, Ok(()), Ok(&by_guest)),
            Fate::Survived("failed, but by not-ok, not symbol".into())
        );
        let by_unwind = seen(Mark::Failed, Outcome::Pass, &[Check::Unwind]);
        assert_eq!(
            decide(SYMBOL, Ok(()), Ok(&by_unwind)),
            Fate::Survived("failed, but by unwind, not symbol".into())
        );
        assert_eq!(
            decide(Caught::Guest, Ok(()), Ok(&by_unwind)),
            Fate::Survived("failed, but by unwind, not not-ok".into())
        );
        // A fault of the wrong class with every check passing (cr2-only
        // under KVM: guard jumped, and the `kind` check agrees with it).
        let jumped = Seen {
            wrong_verdict: Some("guard-jumped"),
            ..seen(Mark::Failed, Outcome::Fail, &[])
        };
        assert_eq!(
            decide(Caught::Check(Check::Kind), Ok(()), Ok(&jumped)),
            Fate::Survived("failed, but by not-ok, verdict=guard-jumped, not kind".into())
        );
    }

    #[test]
    fn a_defect_that_passes_or_never_boots_survives() {
        let pass = seen(Mark::Passed, Outcome::Pass, &[]);
        assert_eq!(
            decide(SYMBOL, Ok(()), Ok(&pass)),
            Fate::Survived("passed".into())
        );
        let skip = seen(Mark::Skipped, Outcome::Pass, &[]);
        assert!(matches!(
            decide(Caught::Guest, Ok(()), Ok(&skip)),
            Fate::Survived(_)
        ));
        let hung = seen(Mark::Failed, Outcome::Timeout, &[]);
        assert_eq!(
            decide(Caught::Guest, Ok(()), Ok(&hung)),
            Fate::Survived("did not boot through: ended in timeout, expected pass".into())
        );
        assert_eq!(
            decide(SYMBOL, Ok(()), Err("building failed".into())),
            Fate::Survived("did not boot: building failed".into())
        );
        for fate in [
            decide(SYMBOL, Ok(()), Ok(&pass)),
            decide(SYMBOL, Ok(()), Ok(&hung)),
        ] {
            assert!(!fate.fine(), "{fate:?}");
        }
    }

    #[test]
    fn a_failing_baseline_makes_the_result_meaningless() {
        let by_symbol = seen(Mark::Failed, Outcome::Pass, &[Check::Symbol]);
        let fate = decide(SYMBOL, Err("normal fails".into()), Ok(&by_symbol));
        assert_eq!(fate, Fate::NoBaseline("normal fails".into()));
        assert!(!fate.fine());
        assert!(Fate::Skipped("kvm".into()).fine() && Fate::Killed.fine());
    }

    #[test]
    fn every_catalogued_defect_has_a_plan_booting_its_scenario() {
        let options = <crate::cli::Cli as clap::Parser>::parse_from(["runner", "mutants"]).options;
        for d in DEFECTS {
            let p = plan(d, &options).unwrap_or_else(|e| panic!("{e}"));
            assert!(
                p.scenarios.iter().any(|s| s.name == d.scenario),
                "{}",
                d.name
            );
        }
        assert_eq!(
            plan(crate::defects::find("gp-early").unwrap(), &options)
                .unwrap()
                .smp,
            4
        );
    }

    #[test]
    fn the_baselines_boots_never_share_a_serial_log() {
        let options = <crate::cli::Cli as clap::Parser>::parse_from(["runner", "mutants"]).options;
        let mut plans: Vec<Plan> = Vec::new();
        for d in DEFECTS {
            let p = plan(d, &options).unwrap();
            if !plans.contains(&p) {
                plans.push(p);
            }
        }
        assert!(plans.len() > 1);
        let mut names: Vec<String> = plans
            .iter()
            .enumerate()
            .flat_map(|(i, p)| baseline_boots(i, p, &options))
            .map(|b| b.name)
            .collect();
        let all = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all, "{names:?}");
    }

    #[test]
    fn unknown_defect_names_are_refused_listing_the_valid_ones() {
        let err = chosen(&["ksyms-off-by-one".into(), "nope".into()]).unwrap_err();
        assert_eq!(err.status, status::USAGE);
        assert!(err.message.contains("`nope`") && err.message.contains("gp-early"));
        assert!(!err.message.contains('\n'));
        assert_eq!(chosen(&[]).unwrap().len(), DEFECTS.len());
        let two = chosen(&["gp-early".into(), "ksyms-off-by-one".into()]).unwrap();
        assert_eq!(two[0].name, "ksyms-off-by-one", "catalogue order");
    }
}
