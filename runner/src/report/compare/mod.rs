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
//!
//! In three parts: the facts and flags (here), the rules that raise the
//! flags (`rules`), and the side-by-side table (`render`).

mod render;
mod rules;

pub use render::table;
pub use rules::judge;

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
    pub(super) fn get(&self, key: &str) -> Option<&str> {
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

/// Every key, in the order it first appears.
pub(super) fn keys(columns: &[Column]) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for (k, _) in columns.iter().flat_map(|c| &c.facts) {
        if !keys.contains(k) {
            keys.push(k.clone());
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flag_names_its_fact_its_path_and_why() {
        let on_path = Flag {
            key: "cpus".into(),
            label: Some("limine-bios".into()),
            why: "the MP response must list every CPU the MADT enables".into(),
        };
        assert_eq!(
            on_path.to_string(),
            "cpus on limine-bios: the MP response must list every CPU the MADT enables"
        );
        let between = Flag {
            label: None,
            why: "differs between paths".into(),
            ..on_path
        };
        assert_eq!(between.to_string(), "cpus: differs between paths");
    }

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
