//! The boot plan: which scenarios to boot, on which paths, and how they
//! share boots (`run_plan`, `test_plan`). Decided before anything is built,
//! so a typo costs nothing.

use crate::boot::media;
use crate::cli::{BootPath, Options};
use crate::fatal::Fatal;
use crate::glob;
use crate::record::Skipped;
use crate::session::CONFORMANCE;
use abi::{Scenario, SCENARIOS};

/// `runner run PATTERN...`: the scenarios matched, on the chosen path, at
/// `--smp` (default 1).
pub fn run_plan(patterns: &[String], options: &Options) -> Result<Vec<Boot>, Fatal> {
    let chosen = by_patterns(SCENARIOS, patterns).map_err(Fatal::usage)?;
    let smp = options.smp.unwrap_or(1);
    let wanted: Vec<(&'static Scenario, u32)> = chosen.into_iter().map(|s| (s, smp)).collect();
    Ok(boots(options.boot, &wanted))
}

/// `runner test [--all]`: the default scenarios (with `--all`, the
/// negative controls too) at each of their CPU counts (or `--smp`), and on
/// the direct path also the Limine boots, or why this machine skips them.
pub fn test_plan(all: bool, options: &Options) -> Result<(Vec<Boot>, Vec<Skipped>), Fatal> {
    let wanted: Vec<(&'static Scenario, u32)> = SCENARIOS
        .iter()
        .filter(|s| s.default || (all && s.expect != abi::Outcome::Pass))
        .flat_map(|s| match options.smp {
            Some(smp) => vec![(s, smp)],
            None => s.test_smp.iter().map(|&n| (s, n)).collect(),
        })
        .collect();
    let mut boots = boots_on(options.boot, &wanted);
    let skipped = match options.boot {
        BootPath::Direct => add_limine_boots(&mut boots, options)?,
        _ => Vec::new(),
    };
    name_boots(&mut boots);
    Ok((boots, skipped))
}

/// Scenarios matching any pattern, in catalog order; the default set if there
/// are no patterns. Err names the first pattern that matched nothing.
pub fn by_patterns(
    catalog: &'static [Scenario],
    patterns: &[String],
) -> Result<Vec<&'static Scenario>, String> {
    if patterns.is_empty() {
        return Ok(catalog.iter().filter(|s| s.default).collect());
    }
    if let Some(bad) = patterns
        .iter()
        .find(|p| !catalog.iter().any(|s| glob::matches(p, s.name)))
    {
        let names: Vec<&str> = catalog.iter().map(|s| s.name).collect();
        let what = if glob::is_pattern(bad) {
            "matches"
        } else {
            "is named"
        };
        return Err(format!(
            "no scenario {what} `{bad}`; valid names: {}",
            names.join(", ")
        ));
    }
    Ok(catalog
        .iter()
        .filter(|s| patterns.iter().any(|p| glob::matches(p, s.name)))
        .collect())
}

/// One QEMU boot: the scenarios it runs, in order, at one CPU count.
#[derive(Clone, Debug)]
pub struct Boot {
    /// Unique within a run; names the serial log.
    pub name: String,
    pub scenarios: Vec<&'static Scenario>,
    pub smp: u32,
    pub path: BootPath,
}

impl Boot {
    pub fn names(&self) -> Vec<&'static str> {
        self.scenarios.iter().map(|s| s.name).collect()
    }
}

/// Group (scenario, CPU count) pairs into boots on `path` (see `boots_on`),
/// named.
pub fn boots(path: BootPath, wanted: &[(&'static Scenario, u32)]) -> Vec<Boot> {
    let mut boots = boots_on(path, wanted);
    name_boots(&mut boots);
    boots
}

/// Group (scenario, CPU count) pairs into boots: everything that is not
/// `isolated` shares one boot per CPU count; each isolated one boots alone.
/// Unnamed: `name_boots` names a whole plan once it is assembled.
pub fn boots_on(path: BootPath, wanted: &[(&'static Scenario, u32)]) -> Vec<Boot> {
    let mut boots: Vec<Boot> = Vec::new();
    let mut shared_at: Vec<(u32, usize)> = Vec::new();
    for &(scenario, smp) in wanted {
        let shared = shared_at.iter().find(|(s, _)| *s == smp).map(|(_, i)| *i);
        match shared {
            Some(i) if !scenario.isolated => boots[i].scenarios.push(scenario),
            _ => {
                if !scenario.isolated {
                    shared_at.push((smp, boots.len()));
                }
                boots.push(Boot {
                    name: String::new(),
                    scenarios: vec![scenario],
                    smp,
                    path,
                });
            }
        }
    }
    boots
}

/// `NN-<shared|scenario>-smpN[-path]`: unique within the plan, so it can
/// name the serial log.
pub fn name_boots(boots: &mut [Boot]) {
    for (i, boot) in boots.iter_mut().enumerate() {
        let what = if boot.scenarios[0].isolated {
            boot.scenarios[0].name
        } else {
            "shared"
        };
        boot.name = format!("{:02}-{what}-smp{}", i + 1, boot.smp);
        if boot.path != BootPath::Direct {
            boot.name += &format!("-{}", boot.path.as_str());
        }
    }
}

/// What `runner test` boots through real Limine besides the default run:
/// the boot scenarios, on each Limine path, at each of their CPU counts.
pub const LIMINE_TEST_SCENARIOS: [&str; 2] = ["boot.smoke", CONFORMANCE];

/// Add the Limine boots of a test run, or, where this machine cannot boot
/// a path, say why they are skipped. A `LIMINE_DIR` that is set asks for
/// them: then a path that cannot boot is an error, not a skip.
fn add_limine_boots(boots: &mut Vec<Boot>, options: &Options) -> Result<Vec<Skipped>, Fatal> {
    let asked = std::env::var_os("LIMINE_DIR").is_some_and(|d| !d.is_empty());
    let wanted: Vec<(&'static abi::Scenario, u32)> = LIMINE_TEST_SCENARIOS
        .iter()
        .filter_map(|name| abi::scenario::find(name))
        .flat_map(|s| match options.smp {
            Some(smp) => vec![(s, smp)],
            None => s.test_smp.iter().map(|&n| (s, n)).collect(),
        })
        .collect();
    let mut skipped = Vec::new();
    for path in [BootPath::LimineBios, BootPath::LimineUefi] {
        match media::check(path) {
            Ok(()) => boots.extend(boots_on(path, &wanted)),
            Err(reason) if asked => {
                return Err(Fatal::setup(format!(
                    "{reason} (LIMINE_DIR is set, so `test` boots {} through Limine; unset it to skip those boots)",
                    path.as_str()
                )))
            }
            Err(reason) => {
                for boot in boots_on(path, &wanted) {
                    skipped.push(Skipped {
                        path,
                        scenarios: boot.scenarios,
                        smp: boot.smp,
                        reason: reason.clone(),
                    });
                }
            }
        }
    }
    Ok(skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi::Outcome;

    const fn s(name: &'static str, isolated: bool, default: bool) -> Scenario {
        Scenario {
            name,
            summary: "",
            expect: Outcome::Pass,
            isolated,
            default,
            test_smp: &[1, 4],
            guard: None,
            uaf: None,
            skip: abi::scenario::SkipAllowed::Never,
        }
    }

    static CATALOG: [Scenario; 4] = [
        s("boot.smoke", false, true),
        s("core.leak", false, true),
        s("bench.spawn", false, false),
        s("selftest.hang", true, false),
    ];

    fn names(v: &[&Scenario]) -> Vec<&'static str> {
        v.iter().map(|s| s.name).collect()
    }

    #[test]
    fn patterns_select_in_catalog_order() {
        let none: Vec<String> = vec![];
        assert_eq!(
            names(&by_patterns(&CATALOG, &none).unwrap()),
            ["boot.smoke", "core.leak"]
        );
        let p = vec![
            "selftest.*".to_string(),
            "boot.smoke".to_string(),
            "*".to_string(),
        ];
        assert_eq!(names(&by_patterns(&CATALOG, &p).unwrap()).len(), 4);
        let p = vec!["core.leak".to_string(), "boot.?moke".to_string()];
        assert_eq!(
            names(&by_patterns(&CATALOG, &p).unwrap()),
            ["boot.smoke", "core.leak"]
        );
    }

    #[test]
    fn unknown_name_lists_valid_ones() {
        let err = by_patterns(&CATALOG, &["boot.smoke".into(), "no.such".into()]).unwrap_err();
        assert!(err.contains("`no.such`"), "{err}");
        assert!(
            err.contains("boot.smoke, core.leak, bench.spawn, selftest.hang"),
            "{err}"
        );
        assert!(!err.contains('\n'));
        assert!(by_patterns(&CATALOG, &["zz*".into()])
            .unwrap_err()
            .contains("matches"));
    }

    #[test]
    fn shared_boots_per_cpu_count_and_isolated_alone() {
        let [a, b, _, h] = &CATALOG;
        let plan = boots(
            BootPath::Direct,
            &[(a, 1), (h, 1), (b, 1), (a, 4), (h, 1), (b, 4)],
        );
        let summary: Vec<(String, Vec<&str>, u32)> = plan
            .iter()
            .map(|b| (b.name.clone(), b.names(), b.smp))
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "01-shared-smp1".to_string(),
                    vec!["boot.smoke", "core.leak"],
                    1
                ),
                (
                    "02-selftest.hang-smp1".to_string(),
                    vec!["selftest.hang"],
                    1
                ),
                (
                    "03-shared-smp4".to_string(),
                    vec!["boot.smoke", "core.leak"],
                    4
                ),
                (
                    "04-selftest.hang-smp1".to_string(),
                    vec!["selftest.hang"],
                    1
                ),
            ]
        );
    }

    #[test]
    fn boots_on_other_paths_carry_the_path_in_their_name() {
        let [a, b, _, _] = &CATALOG;
        let mut plan = boots_on(BootPath::Direct, &[(a, 1)]);
        plan.extend(boots_on(BootPath::LimineUefi, &[(a, 4), (b, 4)]));
        name_boots(&mut plan);
        let names: Vec<&str> = plan.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["01-shared-smp1", "02-shared-smp4-limine-uefi"]);
        assert_eq!(plan[1].names(), ["boot.smoke", "core.leak"]);
        assert_eq!(plan[1].path, BootPath::LimineUefi);
    }
}
