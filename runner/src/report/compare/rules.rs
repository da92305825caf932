//! The rules: what the Limine protocol rules out on one path, and what may
//! differ between paths.
use super::{keys, Column, Flag};

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

pub(super) fn agree(columns: &[Column], key: &str) -> bool {
    let first = columns[0].get(key);
    columns.iter().all(|c| c.get(key) == first)
}
