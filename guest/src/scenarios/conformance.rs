//! `boot.conformance`: the boot facts this guest sees, one `# fact key=value`
//! line each, so the runner can hold the direct loader and real Limine side by
//! side (`runner compare-boot`). It judges nothing itself: which differences
//! the protocol allows is the runner's call, made in one tested place.
//!
//! Values carry no spaces; lists are comma-separated; yes/no for booleans.
use super::Checks;
use crate::arch::x86_64::{acpi, cpu};
use crate::boot::{self, BootInfo};
use crate::mm::{frames, hhdm, layout, paging};
use core::fmt;
use kcore::memmap;
use limine::memory_map::EntryType;
use x86_64::VirtAddr;

pub fn conformance(boot: &BootInfo, c: &mut Checks) {
    let fact = |key: &str, value: fmt::Arguments| c.info(format_args!("fact {key}={value}"));
    let yes = |b: bool| if b { "yes" } else { "no" };

    let (name, version) = boot.bootloader.unwrap_or(("none", "none"));
    fact("bootloader.name", format_args!("{}", NoSpaces(name)));
    fact("bootloader.version", format_args!("{}", NoSpaces(version)));
    fact(
        "base_revision",
        format_args!(
            "{}",
            if boot.base_revision_supported {
                "supported"
            } else {
                "unsupported"
            }
        ),
    );
    fact(
        "response.bootloader_info",
        format_args!("{}", yes(boot.bootloader.is_some())),
    );
    fact(
        "response.hhdm",
        format_args!("{}", yes(boot.hhdm_offset.is_some())),
    );
    fact(
        "response.memmap",
        format_args!("{}", yes(boot.memory_map.is_some())),
    );
    fact(
        "response.executable_address",
        format_args!("{}", yes(boot.executable_address.is_some())),
    );
    fact(
        "response.rsdp",
        format_args!("{}", yes(boot.rsdp_address.is_some())),
    );
    fact(
        "response.stack_size",
        format_args!("{}", yes(boot.stack_size_granted)),
    );
    fact("response.mp", format_args!("{}", yes(boot.mp.is_some())));
    fact(
        "response.cmdline",
        format_args!("{}", yes(boot.cmdline_source != "none")),
    );
    fact("cmdline.source", format_args!("{}", boot.cmdline_source));
    fact(
        "cmdline.scenarios",
        format_args!(
            "{}",
            abi::cmdline::value(boot.cmdline, abi::cmdline::SCENARIOS).unwrap_or("none")
        ),
    );

    // The HHDM: its offset, and whether it reaches RAM nobody else owns.
    if let Some(offset) = boot.hhdm_offset {
        fact("hhdm.offset", format_args!("{offset:#x}"));
        let reaches = frames::alloc().map(|f| {
            let ok = hhdm::probe_rw(f.start_address());
            frames::free(f);
            ok
        });
        fact(
            "hhdm.reaches_ram",
            format_args!("{}", yes(reaches == Some(true))),
        );
    }

    // The memory map, through the same promise checks boot.smoke makes.
    if let Some(map) = boot.memory_map {
        let entries = || {
            map.iter().map(|e| {
                memmap::Entry::new(e.base, e.length, crate::boot::memmap_kind(e.entry_type))
            })
        };
        let r = memmap::check(entries());
        fact("memmap.entries", format_args!("{}", map.len()));
        fact("memmap.usable_bytes", format_args!("{}", r.usable_bytes));
        fact("memmap.kinds", format_args!("{}", Kinds(map)));
        fact("memmap.sorted", format_args!("{}", yes(r.sorted)));
        fact(
            "memmap.overlaps",
            format_args!("{}", r.overlaps_with_strict.len()),
        );
        fact(
            "memmap.misaligned",
            format_args!("{}", r.misaligned_strict.len()),
        );
        fact(
            "memmap.usable_below_4k",
            format_args!("{}", r.usable_below_4k.len()),
        );
    }

    // Where the executable is, and how each part of it is mapped.
    if let Some((phys_base, virt_base)) = boot.executable_address {
        let image = layout::image();
        fact("exec.phys_base", format_args!("{phys_base:#x}"));
        fact("exec.virt_base", format_args!("{virt_base:#x}"));
        fact(
            "exec.link_base",
            format_args!("{:#x}", image.start.as_u64()),
        );
        let mut placed = true;
        for (name, addr) in [
            ("exec.text", image.text),
            ("exec.rodata", image.rodata),
            ("exec.data", image.data),
        ] {
            match paging::translate(addr) {
                Some(m) => {
                    placed &= m.phys.as_u64() == phys_base + (addr - image.start);
                    let w = if m.writable { "w" } else { "-" };
                    let x = if m.executable { "x" } else { "-" };
                    fact(name, format_args!("r{w}{x}"));
                }
                None => {
                    placed = false;
                    fact(name, format_args!("unmapped"));
                }
            }
        }
        fact("exec.phys_contiguous", format_args!("{}", yes(placed)));
        let in_entry = boot.memory_map.is_some_and(|m| {
            m.iter().any(|e| {
                e.entry_type == EntryType::EXECUTABLE_AND_MODULES
                    && e.base <= phys_base
                    && phys_base < e.base + e.length
            })
        });
        fact(
            "exec.in_executable_entry",
            format_args!("{}", yes(in_entry)),
        );
    }

    // ACPI: whether the RSDP is there and leads to a valid MADT.
    if let Some(rsdp) = boot.rsdp_address.and_then(hhdm::to_phys) {
        fact("rsdp.phys", format_args!("{:#x}", rsdp.as_u64()));
        match acpi::madt_summary(rsdp) {
            Ok(m) => {
                fact("rsdp.valid", format_args!("yes"));
                fact("madt.enabled_cpus", format_args!("{}", m.enabled_cpus));
            }
            Err(_) => fact("rsdp.valid", format_args!("no")),
        }
    }

    // CPUs: how many, which LAPIC ids, and whether every AP arrived.
    fact("cpus", format_args!("{}", boot.cpu_count()));
    fact("cpu.running_lapic_id", format_args!("{}", cpu::apic_id()));
    if let Some(mp) = boot.mp {
        fact("cpu.bsp_lapic_id", format_args!("{}", mp.bsp_lapic_id()));
        let ids = mp.cpus().iter().map(|c| c.lapic_id);
        fact("cpu.lapic_ids", format_args!("{}", Commas(ids)));
        fact("cpu.aps_online", format_args!("{}", boot::mp::online_aps()));
    }

    // The boot stack: requested size, whether the request was answered, and
    // whether the stack lives where the protocol puts it.
    fact("stack.requested", format_args!("{}", boot::BOOT_STACK_SIZE));
    let rsp = cpu::stack_pointer();
    let stack_phys = paging::translate(VirtAddr::new(rsp)).map(|m| m.phys.as_u64());
    let in_reclaimable = stack_phys.is_some_and(|phys| {
        boot.memory_map.is_some_and(|m| {
            m.iter().any(|e| {
                e.entry_type == EntryType::BOOTLOADER_RECLAIMABLE
                    && e.base <= phys
                    && phys < e.base + e.length
            })
        })
    });
    fact(
        "stack.in_reclaimable",
        format_args!("{}", yes(in_reclaimable)),
    );
}

/// `usable:2,reserved:7,...`: how many entries of each type, in protocol order.
struct Kinds(&'static [&'static limine::memory_map::Entry]);

impl fmt::Display for Kinds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for kind in (0..8).chain([u64::MAX]) {
            let n = self
                .0
                .iter()
                .filter(|e| crate::boot::memmap_kind(e.entry_type) == kind)
                .count();
            if n > 0 {
                let sep = if first { "" } else { "," };
                write!(f, "{sep}{}:{n}", memmap::kind::name(kind))?;
                first = false;
            }
        }
        Ok(())
    }
}

/// Items separated by commas, without allocating.
struct Commas<I>(I);

impl<I: Iterator<Item = u32> + Clone> fmt::Display for Commas<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, id) in self.0.clone().enumerate() {
            write!(f, "{}{id}", if i == 0 { "" } else { "," })?;
        }
        Ok(())
    }
}

/// A bootloader-supplied string with spaces turned into underscores, so a
/// value never spills into the next field.
struct NoSpaces<'a>(&'a str);

impl fmt::Display for NoSpaces<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for ch in self.0.chars() {
            let ch = if ch.is_whitespace() { '_' } else { ch };
            fmt::Write::write_char(f, ch)?;
        }
        Ok(())
    }
}
