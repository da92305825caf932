//! Boot facts side by side: what `boot.conformance` saw on each boot path,
//! and which of it the Limine protocol does not allow.
//!
//! Pure: facts in, flags and a table out. Two kinds of flag:
//! - on one path, a fact the protocol (or the guest's use of it) rules out:
//!   a missing response the guest relies on, overlapping memory-map entries,
//!   a kernel mapping with the wrong permissions...;
//! - across paths, a fact that differs where it must not: the direct loader
//!   must give the guest what real Limine gives it. Facts that legitimately
//!   differ (the loader's name, physical placement, the exact map layout)
//!   are listed in `MAY_DIFFER`, shown and never flagged.

/// `key=value` pairs in the order the guest printed them.
pub type Facts = Vec<(String, String)>;

/// The facts in a scenario's diagnostics (`fact key=value` lines; the KTAP
/// parser has already taken the `# ` off).
pub fn parse(diagnostics: &[String]) -> Facts {
    diagnostics
        .iter()
        .filter_map(|d| d.strip_prefix("fact "))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// One boot path's facts.
#[derive(Clone, Debug)]
pub struct Column {
    pub label: String,
    pub facts: Facts,
}

impl Column {
    fn get(&self, key: &str) -> Option<&str> {
        self.facts
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flag {
    pub key: String,
    /// The path it concerns; `None` for a difference between paths.
    pub label: Option<String>,
    pub why: String,
}

impl std::fmt::Display for Flag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.label {
            Some(label) => write!(f, "{} on {label}: {}", self.key, self.why),
            None => write!(f, "{}: {}", self.key, self.why),
        }
    }
}

/// Facts that may differ between paths, and why that is allowed.
pub const MAY_DIFFER: &[(&str, &str)] = &[
    ("bootloader.name", "each loader names itself"),
    ("bootloader.version", "each loader names itself"),
    (
        "cmdline.source",
        "Limine 7.x/8.x answer with the executable-file response, newer loaders with executable-cmdline",
    ),
    ("cmdline.scenarios", "each boot runs its own list of scenarios"),
    ("memmap.entries", "the map's layout is the firmware's"),
    ("memmap.kinds", "the map's layout is the firmware's"),
    (
        "memmap.usable_bytes",
        "firmware and loader keep different amounts of RAM",
    ),
    ("exec.phys_base", "physical placement is the loader's choice"),
    ("rsdp.phys", "the firmware places the ACPI tables"),
];

enum Want {
    /// The value must be this.
    Is(&'static str),
    /// The value must equal another fact of the same path.
    Same(&'static str),
    /// The value must contain this.
    Has(&'static str),
}

/// What every path must show, whatever the others do.
const REQUIRED: &[(&str, Want, &str)] = &[
    (
        "base_revision",
        Want::Is("supported"),
        "the guest asks for base revision 2",
    ),
    (
        "response.hhdm",
        Want::Is("yes"),
        "missing response the guest relies on",
    ),
    (
        "response.memmap",
        Want::Is("yes"),
        "missing response the guest relies on",
    ),
    (
        "response.executable_address",
        Want::Is("yes"),
        "missing response the guest relies on",
    ),
    (
        "response.rsdp",
        Want::Is("yes"),
        "missing response the guest relies on",
    ),
    (
        "response.stack_size",
        Want::Is("yes"),
        "missing response the guest relies on",
    ),
    (
        "response.cmdline",
        Want::Is("yes"),
        "the scenarios reach the guest through the command line",
    ),
    (
        "cmdline.scenarios",
        Want::Has("boot.conformance"),
        "the command line the runner wrote must reach the guest",
    ),
    (
        "hhdm.reaches_ram",
        Want::Is("yes"),
        "the HHDM must map all of RAM",
    ),
    (
        "memmap.sorted",
        Want::Is("yes"),
        "memory-map entries must be sorted by base",
    ),
    (
        "memmap.overlaps",
        Want::Is("0"),
        "overlapping memory-map entries (usable/reclaimable must overlap nothing)",
    ),
    (
        "memmap.misaligned",
        Want::Is("0"),
        "usable/reclaimable entries must be page aligned",
    ),
    (
        "memmap.usable_below_4k",
        Want::Is("0"),
        "nothing below 0x1000 may be usable",
    ),
    (
        "memmap.kinds",
        Want::Has("usable:"),
        "no usable memory in the map",
    ),
    (
        "memmap.kinds",
        Want::Has("executable-and-modules:"),
        "the kernel image has no executable-and-modules entry",
    ),
    (
        "memmap.kinds",
        Want::Has("bootloader-reclaimable:"),
        "no bootloader-reclaimable entry (where the boot stack lives)",
    ),
    (
        "exec.virt_base",
        Want::Same("exec.link_base"),
        "the kernel must run at its link address",
    ),
    (
        "exec.text",
        Want::Is("r-x"),
        "kernel mapping with wrong permissions (text must be r-x)",
    ),
    (
        "exec.rodata",
        Want::Is("r--"),
        "kernel mapping with wrong permissions (rodata must be r--)",
    ),
    (
        "exec.data",
        Want::Is("rw-"),
        "kernel mapping with wrong permissions (data must be rw-)",
    ),
    (
        "exec.phys_contiguous",
        Want::Is("yes"),
        "each segment must map to physical base + its offset",
    ),
    (
        "exec.in_executable_entry",
        Want::Is("yes"),
        "the kernel image must lie in an executable-and-modules entry",
    ),
    (
        "rsdp.valid",
        Want::Is("yes"),
        "the RSDP must lead to valid ACPI tables",
    ),
    (
        "cpus",
        Want::Same("madt.enabled_cpus"),
        "the MP response must list every CPU the MADT enables",
    ),
    (
        "cpu.bsp_lapic_id",
        Want::Same("cpu.running_lapic_id"),
        "the BSP the MP response names must be the CPU running the kernel",
    ),
    (
        "stack.in_reclaimable",
        Want::Is("yes"),
        "the boot stack must be in bootloader-reclaimable memory",
    ),
];

/// Every flag, per path first, then between paths.
pub fn judge(columns: &[Column]) -> Vec<Flag> {
    let mut flags = Vec::new();
    for column in columns {
        let mut flag = |key: &str, why: String| {
            flags.push(Flag {
                key: key.to_string(),
                label: Some(column.label.clone()),
                why,
            })
        };
        if column.facts.is_empty() {
            flag("facts", "no `fact` lines: did boot.conformance run?".into());
            continue;
        }
        for (key, want, why) in REQUIRED {
            let Some(value) = column.get(key) else {
                flag(key, format!("not reported: {why}"));
                continue;
            };
            let (ok, expected) = match want {
                Want::Is(v) => (value == *v, (*v).to_string()),
                Want::Same(other) => {
                    let o = column.get(other).unwrap_or("-");
                    (value == o, format!("{other}={o}"))
                }
                Want::Has(part) => (value.contains(part), format!("containing {part}")),
            };
            if !ok {
                flag(key, format!("{why} (got {value}, want {expected})"));
            }
        }
        let cpus = column.get("cpus").and_then(|c| c.parse::<u64>().ok());
        if cpus.is_some_and(|n| n > 1) {
            if column.get("response.mp") != Some("yes") {
                flag(
                    "response.mp",
                    "missing response the guest relies on (more than one CPU)".into(),
                );
            }
            let online = column.get("cpu.aps_online").and_then(|c| c.parse().ok());
            let want = cpus.map(|n| n - 1);
            if online != want {
                flag(
                    "cpu.aps_online",
                    format!(
                        "every AP must reach goto_address (got {}, want {})",
                        column.get("cpu.aps_online").unwrap_or("-"),
                        want.unwrap_or(0)
                    ),
                );
            }
        }
    }
    if columns.len() > 1 {
        for key in keys(columns) {
            if may_differ(&key).is_some() || flags.iter().any(|f| f.key == key) {
                continue;
            }
            if !agree(columns, &key) {
                let values: Vec<String> = columns
                    .iter()
                    .map(|c| format!("{}={}", c.label, c.get(&key).unwrap_or("-")))
                    .collect();
                flags.push(Flag {
                    key,
                    label: None,
                    why: format!(
                        "differs between paths ({}): the direct loader must give what Limine gives",
                        values.join(", ")
                    ),
                });
            }
        }
    }
    flags
}

fn may_differ(key: &str) -> Option<&'static str> {
    MAY_DIFFER.iter().find(|(k, _)| *k == key).map(|(_, w)| *w)
}

fn agree(columns: &[Column], key: &str) -> bool {
    let first = columns[0].get(key);
    columns.iter().all(|c| c.get(key) == first)
}

/// Every key, in the order it first appears.
fn keys(columns: &[Column]) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for (k, _) in columns.iter().flat_map(|c| &c.facts) {
        if !keys.contains(k) {
            keys.push(k.clone());
        }
    }
    keys
}

/// The side-by-side table: one row per fact, one column per path, and a
/// mark: `!!` flagged, `~` differs as allowed, blank when all agree.
pub fn table(columns: &[Column], flags: &[Flag]) -> Vec<String> {
    let keys = keys(columns);
    let mut rows: Vec<Vec<String>> = vec![std::iter::once("fact".to_string())
        .chain(columns.iter().map(|c| c.label.clone()))
        .chain(std::iter::once(String::new()))
        .collect()];
    for key in &keys {
        let mark = if flags.iter().any(|f| &f.key == key) {
            "!!"
        } else if !agree(columns, key) {
            "~"
        } else {
            ""
        };
        rows.push(
            std::iter::once(key.clone())
                .chain(
                    columns
                        .iter()
                        .map(|c| c.get(key).unwrap_or("-").to_string()),
                )
                .chain(std::iter::once(mark.to_string()))
                .collect(),
        );
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            r.iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the direct loader printed on 4 CPUs, trimmed to the facts.
    const DIRECT: &str = "\
fact bootloader.name=testbed-direct
fact bootloader.version=0.1.0
fact base_revision=supported
fact response.bootloader_info=yes
fact response.hhdm=yes
fact response.memmap=yes
fact response.executable_address=yes
fact response.rsdp=yes
fact response.stack_size=yes
fact response.mp=yes
fact response.cmdline=yes
fact cmdline.source=executable-cmdline
fact cmdline.scenarios=boot.conformance
fact hhdm.offset=0xffff800000000000
fact hhdm.reaches_ram=yes
fact memmap.entries=11
fact memmap.usable_bytes=260472832
fact memmap.kinds=usable:3,reserved:2,acpi-nvs:1,bootloader-reclaimable:4,executable-and-modules:1
fact memmap.sorted=yes
fact memmap.overlaps=0
fact memmap.misaligned=0
fact memmap.usable_below_4k=0
fact exec.phys_base=0xf97b000
fact exec.virt_base=0xffffffff80000000
fact exec.link_base=0xffffffff80000000
fact exec.text=r-x
fact exec.rodata=r--
fact exec.data=rw-
fact exec.phys_contiguous=yes
fact exec.in_executable_entry=yes
fact rsdp.phys=0xf34d0
fact rsdp.valid=yes
fact madt.enabled_cpus=4
fact cpus=4
fact cpu.running_lapic_id=0
fact cpu.bsp_lapic_id=0
fact cpu.lapic_ids=0,1,2,3
fact cpu.aps_online=3
fact stack.requested=131072
fact stack.in_reclaimable=yes";

    fn column(label: &str, edit: &[(&str, Option<&str>)]) -> Column {
        let lines: Vec<String> = DIRECT
            .lines()
            .map(str::to_string)
            .chain(std::iter::once("ok: not a fact".to_string()))
            .collect();
        let mut facts = parse(&lines);
        for (key, value) in edit {
            match value {
                Some(v) => match facts.iter_mut().find(|(k, _)| k == key) {
                    Some(slot) => slot.1 = v.to_string(),
                    None => facts.push((key.to_string(), v.to_string())),
                },
                None => facts.retain(|(k, _)| k != key),
            }
        }
        Column {
            label: label.to_string(),
            facts,
        }
    }

    /// Limine 8.2.0 under OVMF, as far as it legitimately differs.
    fn limine() -> Column {
        column(
            "limine-uefi",
            &[
                ("bootloader.name", Some("Limine")),
                ("bootloader.version", Some("8.2.0")),
                ("cmdline.source", Some("executable-file")),
                ("memmap.entries", Some("31")),
                ("memmap.usable_bytes", Some("231000000")),
                ("memmap.kinds", Some("usable:9,reserved:8,acpi-reclaimable:1,acpi-nvs:2,bootloader-reclaimable:8,executable-and-modules:1")),
                ("exec.phys_base", Some("0x9b0a000")),
                ("rsdp.phys", Some("0xf77d014")),
                ("cmdline.scenarios", Some("boot.smoke,boot.conformance")),
            ],
        )
    }

    fn keys_of(flags: &[Flag]) -> Vec<(&str, Option<&str>)> {
        flags
            .iter()
            .map(|f| (f.key.as_str(), f.label.as_deref()))
            .collect()
    }

    #[test]
    fn facts_parse_from_diagnostics_only() {
        let facts = parse(&[
            "fact a.b=1".into(),
            "ok: fact x=y".into(),
            "fact c=d=e".into(),
            "fact nonsense".into(),
        ]);
        assert_eq!(
            facts,
            [("a.b".into(), "1".into()), ("c".into(), "d=e".into())]
        );
    }

    #[test]
    fn legitimate_differences_are_shown_not_flagged() {
        let columns = [column("direct", &[]), limine()];
        let flags = judge(&columns);
        assert_eq!(flags, []);
        let table = table(&columns, &flags);
        let row = |key: &str| {
            table
                .iter()
                .find(|l| l.starts_with(&format!("{key} ")))
                .cloned()
                .unwrap()
        };
        assert!(row("bootloader.name").contains("testbed-direct"));
        assert!(row("bootloader.name").contains("Limine"));
        assert!(row("bootloader.name").ends_with('~'));
        assert!(row("hhdm.offset").ends_with("0xffff800000000000"));
        assert!(table[0].starts_with("fact") && table[0].contains("direct  "));
    }

    #[test]
    fn an_injected_difference_is_flagged() {
        let direct = column("direct", &[("hhdm.offset", Some("0xffff900000000000"))]);
        let flags = judge(&[direct.clone(), limine()]);
        assert_eq!(keys_of(&flags), [("hhdm.offset", None)]);
        assert!(
            flags[0].why.contains("direct=0xffff900000000000"),
            "{}",
            flags[0]
        );
        let table = table(&[direct, limine()], &flags);
        assert!(table
            .iter()
            .any(|l| l.starts_with("hhdm.offset") && l.ends_with("!!")));
        // A response only one path gives is a difference too.
        let direct = column("direct", &[("response.bootloader_info", Some("no"))]);
        assert_eq!(
            keys_of(&judge(&[direct, limine()])),
            [("response.bootloader_info", None)]
        );
        // And so is a fact one path does not report at all.
        let direct = column("direct", &[("cpu.lapic_ids", None)]);
        assert_eq!(
            keys_of(&judge(&[direct, limine()])),
            [("cpu.lapic_ids", None)]
        );
    }

    #[test]
    fn protocol_violations_are_flagged_on_the_path_that_has_them() {
        let cases: &[(&str, &str, &str)] = &[
            ("response.hhdm", "no", "missing response"),
            ("memmap.overlaps", "2", "overlapping"),
            ("exec.data", "rwx", "wrong permissions"),
            ("exec.text", "rwx", "wrong permissions"),
            ("exec.virt_base", "0xffffffff80200000", "link address"),
            (
                "memmap.kinds",
                "usable:3,bootloader-reclaimable:1",
                "executable-and-modules",
            ),
            ("cpu.aps_online", "2", "goto_address"),
            ("response.mp", "no", "more than one CPU"),
            ("cpus", "3", "MADT"),
            ("cmdline.scenarios", "none", "command line"),
        ];
        for (key, bad, why) in cases {
            let broken = column("direct", &[(key, Some(bad))]);
            let flags = judge(&[broken.clone(), limine()]);
            let here: Vec<&Flag> = flags.iter().filter(|f| f.key == *key).collect();
            assert_eq!(here.len(), 1, "{key}={bad}: {flags:?}");
            assert_eq!(here[0].label.as_deref(), Some("direct"), "{key}");
            assert!(here[0].why.contains(why), "{key}: {}", here[0].why);
            // Alone, with nothing to compare against, it is still flagged.
            assert!(judge(&[broken]).iter().any(|f| f.key == *key), "{key}");
        }
        let missing = column("limine-bios", &[("rsdp.valid", None)]);
        let flags = judge(&[missing]);
        assert_eq!(keys_of(&flags), [("rsdp.valid", Some("limine-bios"))]);
        assert!(flags[0].why.starts_with("not reported"));
        let empty = Column {
            label: "x".into(),
            facts: vec![],
        };
        assert_eq!(keys_of(&judge(&[empty])), [("facts", Some("x"))]);
    }

    #[test]
    fn a_good_single_path_has_no_flags() {
        assert_eq!(judge(&[column("direct", &[])]), []);
        let one_cpu = column(
            "direct",
            &[
                ("cpus", Some("1")),
                ("madt.enabled_cpus", Some("1")),
                ("response.mp", Some("no")),
                ("cpu.aps_online", None),
                ("cpu.lapic_ids", None),
            ],
        );
        assert_eq!(judge(&[one_cpu]), []);
    }
}
